//! Hybrid logical clock: 48 bits of Unix milliseconds and a 16-bit counter in one u64.
//!
//! Times from one node only grow, and a node that hears a time from the future moves
//! its clock past it, so causally later writes compare later even with skewed wall
//! clocks. A remote time too far ahead of our wall clock is refused instead of
//! adopted: one node with a broken clock must not drag the formation into the future.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const COUNTER_BITS: u32 = 16;
const COUNTER_MASK: u64 = (1 << COUNTER_BITS) - 1;
/// Largest physical part (48 bits of milliseconds: until the year 10889).
const MAX_MS: u64 = (1 << 48) - 1;

/// How far ahead of our wall clock a remote time may be.
pub const MAX_SKEW: Duration = Duration::from_secs(60);

/// The physical part (Unix milliseconds) of an HLC time.
pub fn physical_ms(hlc: u64) -> u64 {
    hlc >> COUNTER_BITS
}

fn pack(ms: u64, counter: u64) -> u64 {
    (ms.min(MAX_MS) << COUNTER_BITS) | (counter & COUNTER_MASK)
}

pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("remote clock is {ahead_ms} ms ahead of ours (at most {} s allowed)", MAX_SKEW.as_secs())]
pub struct SkewError {
    pub ahead_ms: u64,
}

/// The clock's state, a plain value owned by the data core (the wall time comes in as
/// an argument, so it is tested without waiting).
#[derive(Debug, Default)]
pub struct Hlc {
    last: u64,
}

impl Hlc {
    /// A new time for a local event at wall time `wall` (Unix ms).
    pub fn now_at(&mut self, wall: u64) -> u64 {
        let candidate = pack(wall, 0);
        // Same millisecond (or a wall clock that went back): count up. A counter that
        // overflows carries into the millisecond part, which is still monotonic.
        self.last = if candidate > self.last {
            candidate
        } else {
            self.last + 1
        };
        self.last
    }

    /// Takes in a time heard from a peer; refuses one too far ahead of `wall`.
    pub fn observe_at(&mut self, remote: u64, wall: u64) -> Result<(), SkewError> {
        let ahead = physical_ms(remote).saturating_sub(wall);
        if ahead > MAX_SKEW.as_millis() as u64 {
            return Err(SkewError { ahead_ms: ahead });
        }
        self.last = self.last.max(remote);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_within_a_millisecond_and_when_the_clock_goes_back() {
        let mut c = Hlc::default();
        let a = c.now_at(1000);
        let b = c.now_at(1000);
        let d = c.now_at(900);
        assert!(a < b && b < d);
        assert_eq!(physical_ms(a), 1000);
        assert_eq!(b & COUNTER_MASK, 1);
        assert_eq!(physical_ms(d), 1000);
        let e = c.now_at(2000);
        assert_eq!(e, pack(2000, 0));
    }

    #[test]
    fn observing_moves_past_remote_times() {
        let mut c = Hlc::default();
        c.now_at(1000);
        let remote = pack(5000, 7);
        c.observe_at(remote, 1000).unwrap();
        let next = c.now_at(1000);
        assert!(next > remote);
        // An older remote time changes nothing.
        c.observe_at(pack(10, 0), 1000).unwrap();
        assert!(c.now_at(1000) > next);
    }

    #[test]
    fn refuses_times_far_in_the_future() {
        let mut c = Hlc::default();
        let wall = 1_000_000;
        let far = pack(wall + MAX_SKEW.as_millis() as u64 + 1, 0);
        assert!(c.observe_at(far, wall).is_err());
        assert!(c.now_at(wall) < far);
        let near = pack(wall + MAX_SKEW.as_millis() as u64, 0);
        assert!(c.observe_at(near, wall).is_ok());
    }
}

//! Exponential backoff with jitter for redials.
//!
//! The n-th retry waits `min(MAX, BASE * 2^n)` scaled by a random factor in [0.5, 1.0]
//! ("equal jitter"): peers that lost each other at the same moment do not redial in
//! lock-step, and a peer is never retried sooner than half the nominal delay.

use std::time::Duration;

use rand::Rng;

/// First retry delay.
pub const BASE: Duration = Duration::from_millis(250);
/// Longest delay between retries of a peer that is still known.
pub const MAX: Duration = Duration::from_secs(30);
/// Delay before a peer that failed the formation check is tried again.
pub const REJECTED: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Number of consecutive failures recorded.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = nominal(self.failures);
        self.failures = self.failures.saturating_add(1);
        jitter(nominal, rand::rng().random_range(0.5..=1.0))
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The delay before jitter after `failures` failures.
pub fn nominal(failures: u32) -> Duration {
    let factor = 1u64 << failures.min(20);
    BASE.saturating_mul(u32::try_from(factor).unwrap_or(u32::MAX))
        .min(MAX)
}

fn jitter(d: Duration, factor: f64) -> Duration {
    d.mul_f64(factor.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        assert_eq!(nominal(0), Duration::from_millis(250));
        assert_eq!(nominal(1), Duration::from_millis(500));
        assert_eq!(nominal(4), Duration::from_secs(4));
        assert_eq!(nominal(7), MAX);
        assert_eq!(nominal(u32::MAX), MAX);
    }

    #[test]
    fn jittered_delays_stay_in_bounds() {
        let mut b = Backoff::default();
        for n in 0..40 {
            let d = b.next_delay();
            let nom = nominal(n);
            assert!(d >= nom / 2 && d <= nom, "{n}: {d:?} vs {nom:?}");
        }
        assert_eq!(b.failures(), 40);
        b.reset();
        assert_eq!(b.failures(), 0);
    }
}

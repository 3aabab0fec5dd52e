//! Rate limits: a token bucket, for how often something may happen, and a rate-limited
//! log, for limits that a hostile network can hit thousands of times a second (the
//! first hit is logged at once, later ones at most once per interval, with the number
//! of hits suppressed in between).
//!
//! Both are plain values driven by the caller's clock (`now`), so they are unit-tested
//! without sleeping and fit inside the pure state machines.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: u32,
    refill_every: Duration,
    tokens: u32,
    last_refill: Instant,
}

impl TokenBucket {
    /// At most `capacity` at once, then one more per `refill_every`: over a minute at
    /// most `capacity + 60 s / refill_every`.
    pub fn new(capacity: u32, refill_every: Duration, now: Instant) -> Self {
        TokenBucket {
            capacity,
            refill_every,
            tokens: capacity,
            last_refill: now,
        }
    }

    /// `rate` per second, in bursts of at most one second's worth.
    pub fn per_second(rate: u32, now: Instant) -> Self {
        let rate = rate.max(1);
        TokenBucket::new(rate, Duration::from_secs(1) / rate, now)
    }

    /// Whole tokens there are now.
    pub fn available(&mut self, now: Instant) -> u32 {
        self.refill(now);
        self.tokens
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last_refill);
        let n =
            (elapsed.as_nanos() / self.refill_every.as_nanos().max(1)).min(u32::MAX as u128) as u32;
        if n > 0 {
            self.tokens = (self.tokens + n).min(self.capacity);
            self.last_refill += self.refill_every * n;
            if self.tokens == self.capacity {
                self.last_refill = now;
            }
        }
    }

    /// Takes a token, or says when the next one will be there.
    pub fn take(&mut self, now: Instant) -> Result<(), Instant> {
        self.refill(now);
        if self.tokens > 0 {
            self.tokens -= 1;
            Ok(())
        } else {
            Err(self.last_refill + self.refill_every)
        }
    }
}

/// Interval between two log lines about one limit.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// One per limit. Not thread-safe: keep it where the limit is checked (an actor's
/// state, a loop's local).
#[derive(Debug)]
pub struct RateLog {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Default for RateLog {
    fn default() -> Self {
        RateLog::new(DEFAULT_INTERVAL)
    }
}

impl RateLog {
    pub fn new(every: Duration) -> Self {
        RateLog {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Records a hit. `Some(n)` if it should be logged now, `n` being the hits
    /// suppressed since the last line; `None` if it is counted and suppressed.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < self.every)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_events_per_minute() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, Duration::from_secs(6), t0);
        // Someone asks every 100 ms for a minute.
        let mut granted = 0;
        for i in 0..600 {
            if b.take(t0 + Duration::from_millis(100 * i)).is_ok() {
                granted += 1;
            }
        }
        assert!(granted <= 3 + 10, "{granted}");
        assert!(granted >= 10, "{granted}");
    }

    #[test]
    fn says_when_next_token_comes() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1, Duration::from_secs(6), t0);
        assert!(b.take(t0).is_ok());
        let next = b.take(t0 + Duration::from_secs(1)).unwrap_err();
        assert_eq!(next, t0 + Duration::from_secs(6));
        assert!(b.take(next).is_ok());
    }

    #[test]
    fn per_second_limits_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::per_second(10, t0);
        let burst = (0..100).filter(|_| b.take(t0).is_ok()).count();
        assert_eq!(burst, 10, "one second's worth at once");
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(b.available(t1), 5);
        let more = (0..100).filter(|_| b.take(t1).is_ok()).count();
        assert_eq!(more, 5);
    }

    #[test]
    fn logs_once_per_interval_and_counts_the_rest() {
        let mut r = RateLog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(r.hit(t0), Some(0));
        for i in 1..=99 {
            assert_eq!(r.hit(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(r.hit(t0 + Duration::from_secs(11)), Some(99));
        assert_eq!(r.hit(t0 + Duration::from_secs(12)), None);
    }
}

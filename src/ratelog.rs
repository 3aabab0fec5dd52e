//! Rate-limited logging for limits that a hostile network can hit thousands of times a
//! second: the first hit is logged at once, later ones at most once per interval, with
//! the number of hits suppressed in between.

use std::time::{Duration, Instant};

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

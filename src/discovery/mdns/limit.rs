//! A token bucket: bounds how often something happens per minute.

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

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last_refill);
        let n = (elapsed.as_millis() / self.refill_every.as_millis().max(1)) as u32;
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
}

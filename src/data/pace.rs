//! Pacing for `--link-rate` (issue 26): a token bucket over what a link's writers hand
//! to QUIC, so that the data plane stays within a radio's share. Pure: the link asks
//! [`Pacer::wait`] before it takes a frame and calls [`Pacer::spend`] after.
//!
//! The cap counts bytes on the wire as closely as the stream API allows: the frame's
//! bytes plus, for each QUIC packet the frame fills, [`PACKET_OVERHEAD`] bytes of
//! headers (Ethernet 14, IPv4 20, UDP 8, QUIC short header about 13 with an 8-byte
//! connection id and packet number, AEAD tag 16, STREAM frame header about 8; an IPv6
//! path adds 20 more). A paced link writes one frame at a time, so a small frame
//! usually travels in a packet of its own and the estimate is close; ACKs for the
//! peer's data and keep-alives are not counted.

use std::time::{Duration, Instant};

/// Estimated header bytes per QUIC packet, Ethernet included (see the module doc).
pub const PACKET_OVERHEAD: u64 = 80;
/// Stream bytes a QUIC packet carries at the usual 1,280-1,500 byte path MTU.
pub const PACKET_PAYLOAD: u64 = 1200;
/// The bucket holds at most this long a run of the rate (and at least one packet):
/// a short burst goes out at once, a flood is spread.
const BURST: Duration = Duration::from_millis(50);

/// What a frame of `len` bytes costs on the wire.
pub fn wire_cost(len: usize) -> u64 {
    let len = len as u64;
    len + len.div_ceil(PACKET_PAYLOAD).max(1) * PACKET_OVERHEAD
}

#[derive(Debug, Clone)]
pub struct Pacer {
    /// Bytes per second.
    rate: f64,
    /// Bytes that may go now; negative after a frame larger than what was there.
    tokens: f64,
    burst: f64,
    last: Instant,
}

impl Pacer {
    /// A pacer for `bits_per_second` (at least 1), full at `now`.
    pub fn new(bits_per_second: u64, now: Instant) -> Self {
        let rate = bits_per_second.max(1) as f64 / 8.0;
        let burst = (rate * BURST.as_secs_f64()).max((PACKET_PAYLOAD + PACKET_OVERHEAD) as f64);
        Pacer {
            rate,
            tokens: burst,
            burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = now;
    }

    /// How long until a frame may go (zero: now).
    pub fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Counts a frame of `len` bytes handed to QUIC at `now`.
    pub fn spend(&mut self, len: usize, now: Instant) {
        self.refill(now);
        self.tokens -= wire_cost(len) as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cost_counts_a_packet_header_per_packet_started() {
        assert_eq!(wire_cost(0), PACKET_OVERHEAD);
        assert_eq!(wire_cost(100), 100 + PACKET_OVERHEAD);
        assert_eq!(wire_cost(1200), 1200 + PACKET_OVERHEAD);
        assert_eq!(wire_cost(1201), 1201 + 2 * PACKET_OVERHEAD);
    }

    #[test]
    fn a_flood_is_held_to_the_rate_after_the_burst() {
        let t0 = Instant::now();
        // 64 kbit/s = 8,000 bytes/s; the burst is one packet (50 ms are only 400 bytes).
        let mut p = Pacer::new(64_000, t0);
        let mut now = t0;
        let mut sent = 0u64;
        // Simulate ten seconds of a writer that always has a 1,000-byte frame waiting.
        while now < t0 + Duration::from_secs(10) {
            let w = p.wait(now);
            if w.is_zero() {
                p.spend(1000, now);
                sent += wire_cost(1000);
            } else {
                now += w;
            }
        }
        // 10 s x 8,000 B/s, plus the first burst and at most one frame of debt.
        let most = 80_000 + 1280 + wire_cost(1000);
        assert!(sent <= most && sent >= 80_000, "{sent}");
        // Idle time refills up to the burst only.
        let later = now + Duration::from_secs(60);
        assert!(p.wait(later).is_zero());
        p.spend(1200, later);
        p.spend(1200, later);
        let w = p.wait(later);
        // Two packets (2 x 1,280 B) from a 1,280 B bucket: 1,280 B of debt = 160 ms.
        assert_eq!(w.as_millis(), 160);
    }
}

//! Answering "who are you?" on `--discovery-port`.
//!
//! One task, one UDP socket. Each valid request gets one signed answer; anything else
//! is dropped without a reply. Answers are never larger than requests and are rate
//! limited, so the port can be neither an amplifier nor a way to burn our CPU on
//! signatures.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use iroh::SecretKey;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::wire;

/// Answers per second in steady state, and the burst allowed above it. A formation of
/// 1000 sidecars at a 30 s interval asks about 33 times per second.
const ANSWERS_PER_SEC: f64 = 500.0;
const BURST: f64 = 500.0;

/// Counters of the responder, for logs and tests.
#[derive(Debug, Default)]
pub struct ResponderStats {
    pub answered: AtomicU64,
    pub malformed: AtomicU64,
    pub rate_limited: AtomicU64,
}

/// A token bucket: `allow` is true while the average rate stays under the limit.
#[derive(Debug)]
pub struct RateLimit {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl RateLimit {
    pub fn new(rate: f64, burst: f64) -> Self {
        RateLimit {
            tokens: burst,
            rate,
            burst,
            last: Instant::now(),
        }
    }

    pub fn allow_at(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Binds the handshake socket. Separate from [`serve`] so that a taken port fails the
/// start of the sidecar instead of a background task.
pub async fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    UdpSocket::bind(addr).await
}

/// Answers requests until `shutdown` fires.
pub async fn serve(
    socket: UdpSocket,
    secret: SecretKey,
    app_id: String,
    iroh_port: u16,
    stats: Arc<ResponderStats>,
    shutdown: CancellationToken,
) {
    let mut limit = RateLimit::new(ANSWERS_PER_SEC, BURST);
    // One byte more than a request, to tell "too long" from "exactly right".
    let mut buf = [0u8; wire::REQUEST_LEN + 1];
    let mut last_warning: Option<Instant> = None;
    loop {
        let (n, from) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // Transient (for example ICMP feedback); never spin on it.
                    debug!(error = %e, "handshake socket receive error");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let nonce = match wire::decode_request(&buf[..n]) {
            Ok(nonce) => nonce,
            Err(e) => {
                stats.malformed.fetch_add(1, Ordering::Relaxed);
                debug!(%from, error = %e, "ignored a datagram on the discovery port");
                continue;
            }
        };
        if !limit.allow_at(Instant::now()) {
            stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                warn!(%from, "handshake requests above {ANSWERS_PER_SEC}/s; dropping some");
                last_warning = Some(Instant::now());
            }
            continue;
        }
        let answer = match wire::encode_answer(&secret, &nonce, &app_id, iroh_port) {
            Ok(a) => a,
            Err(e) => {
                // Cannot happen with a validated app id and a bound port; say so loudly.
                warn!(error = %e, "cannot build a handshake answer");
                continue;
            }
        };
        match socket.send_to(&answer, from).await {
            Ok(_) => {
                stats.answered.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => debug!(%from, error = %e, "cannot send a handshake answer"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_bursts_then_refills() {
        let start = Instant::now();
        let mut l = RateLimit::new(10.0, 5.0);
        l.last = start;
        let allowed = (0..20).filter(|_| l.allow_at(start)).count();
        assert_eq!(allowed, 5);
        // Half a second later, five more tokens.
        let later = start + Duration::from_millis(500);
        let allowed = (0..20).filter(|_| l.allow_at(later)).count();
        assert_eq!(allowed, 5);
        // Never more than the burst, however long the pause.
        let much_later = later + Duration::from_secs(3600);
        let allowed = (0..20).filter(|_| l.allow_at(much_later)).count();
        assert_eq!(allowed, 5);
    }
}

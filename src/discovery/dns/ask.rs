//! Asking one address "who are you?".
//!
//! One fresh socket and one fresh nonce per question. The request is sent up to
//! [`SENDS`] times (UDP may drop it) within [`HANDSHAKE_TIMEOUT`]; the first answer that
//! verifies wins. Answers that do not verify are remembered, so that an address that
//! only ever sends forged or replayed answers is reported as such rather than as silent.

use std::{net::SocketAddr, time::Duration};

use tokio::{net::UdpSocket, time::Instant};

use super::wire::{self, Identity, Nonce, WireError};

/// How long one question may take, all resends included.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(1500);
/// How often the request is sent.
const SENDS: u32 = 3;
/// Receive buffer: larger than any valid answer, so an oversized datagram is seen as
/// oversized rather than silently truncated into something that parses.
const RECV_BUF: usize = 512;

/// What one question gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Verified(Identity),
    /// Nothing that verified came back; the last invalid answer says why.
    Rejected {
        from: SocketAddr,
        error: WireError,
    },
    /// No answer at all.
    NoAnswer,
    /// The question could not even be sent (no route, no socket).
    Unreachable(String),
}

/// Asks `target` with a fresh random nonce.
pub async fn ask(target: SocketAddr) -> Outcome {
    ask_with(target, rand::random(), HANDSHAKE_TIMEOUT).await
}

/// Asks `target` with the given nonce (tests use fixed nonces).
pub async fn ask_with(target: SocketAddr, nonce: Nonce, timeout: Duration) -> Outcome {
    let local: SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    // Not connected on purpose: a sidecar bound to 0.0.0.0 on a multi-homed host may
    // answer from another of its addresses. The nonce and signature authenticate the
    // answer, not its source address.
    let socket = match UdpSocket::bind(local).await {
        Ok(s) => s,
        Err(e) => return Outcome::Unreachable(format!("cannot open a UDP socket: {e}")),
    };
    let request = wire::encode_request(&nonce);
    let deadline = Instant::now() + timeout;
    let step = timeout / SENDS;
    let mut sent = 0;
    let mut next_send = Instant::now();
    let mut rejected: Option<(SocketAddr, WireError)> = None;
    let mut buf = [0u8; RECV_BUF];
    loop {
        if sent < SENDS && Instant::now() >= next_send {
            if let Err(e) = socket.send_to(&request, target).await {
                if sent == 0 {
                    return Outcome::Unreachable(e.to_string());
                }
            }
            sent += 1;
            next_send += step;
        }
        let wake = if sent < SENDS {
            next_send.min(deadline)
        } else {
            deadline
        };
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => match wire::verify_answer(&buf[..n], &nonce) {
                    Ok(identity) => return Outcome::Verified(identity),
                    Err(error) => rejected = Some((from, error)),
                },
                // ICMP errors surface here on some systems; keep waiting for the
                // remaining sends rather than giving up on the first (and do not spin).
                Err(_) => tokio::time::sleep_until(wake).await,
            },
            _ = tokio::time::sleep_until(wake) => {}
        }
        if Instant::now() >= deadline {
            return match rejected {
                Some((from, error)) => Outcome::Rejected { from, error },
                None => Outcome::NoAnswer,
            };
        }
    }
}

//! The liveness probe: an 8-byte echo on a tagged stream of the authenticated
//! connection. Only the peer itself can answer it, unlike a beacon.
//!
//! On a lossy link one echo is not enough: QUIC resends a lost packet only after its
//! probe timeout, which doubles each time, so a 3 s window holds two or three tries,
//! and at 20 % loss each way all of them fail now and then (a live peer closed as
//! unresponsive: tests/radio.rs saw it). So the probe opens a fresh echo stream every
//! round trip and a half until one answers: each is sent at once, not after a backoff.
//! On a LAN the first answer comes long before the second try would.

use std::time::Duration;

use futures::{stream::FuturesUnordered, StreamExt};
use iroh::endpoint::{Connection, ReadError, ReadExactError, WriteError};
use tokio::sync::mpsc;
use tracing::debug;

use crate::node::streams::{tag, InboundStream};

const NONCE_LEN: usize = 8;
/// How long the answer to an echo may take at the responder's side (reading the nonce).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds of the time between two tries of one probe (one and a half round trips).
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the connection is gone: {0}")]
    Lost(String),
}

/// What came back. Anything the peer sends proves that it runs: an echo, but also a
/// reset of the stream (a sidecar from before probes resets streams with a tag it does
/// not know), so older peers are never closed as unresponsive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Echo,
    Refused,
}

/// Tries echoes until one answers or `timeout` passes.
pub async fn probe(conn: &Connection, timeout: Duration) -> Result<Answer, ProbeError> {
    let start = conn.stats();
    let (sent, received) = (start.udp_tx.datagrams, start.udp_rx.datagrams);
    let every = retry_interval(crate::node::path::rtt(conn));
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut retry = tokio::time::interval(every);
    let mut tries = FuturesUnordered::new();
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = retry.tick() => tries.push(echo(conn)),
            // A try ends only with an answer or with the connection.
            Some(r) = tries.next() => return r,
        }
    }
    // No echo, but the peer's QUIC stack sent something (at least an ACK of a try):
    // the process runs, only slowly (a loaded host). Closing it would be a false
    // departure.
    if conn.stats().udp_rx.datagrams > received {
        return Ok(Answer::Refused);
    }
    let path = crate::node::path::stats(conn);
    debug!(
        tries = tries.len(),
        every_ms = every.as_millis() as u64,
        datagrams_sent = conn.stats().udp_tx.datagrams.saturating_sub(sent),
        rtt_ms = path.as_ref().map(|p| p.rtt.as_millis() as u64),
        cwnd = path.as_ref().map(|p| p.cwnd),
        lost_packets = path.as_ref().map(|p| p.lost_packets),
        "no answer to any try of the probe, and nothing else came back"
    );
    Err(ProbeError::Timeout(timeout))
}

/// One and a half round trips between tries, within bounds; half a second if the RTT
/// is unknown. A try costs one small packet each way, so at 35 % loss a 3 s probe
/// sends about ten (tests/radio.rs at 35 %: seven tries all lost now and then).
fn retry_interval(rtt: Option<Duration>) -> Duration {
    rtt.map_or(Duration::from_millis(500), |r| {
        (r * 3 / 2).clamp(RETRY_MIN, RETRY_MAX)
    })
}

/// One echo: the tag and a nonce in one write, then the nonce back.
async fn echo(conn: &Connection) -> Result<Answer, ProbeError> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| ProbeError::Lost(e.to_string()))?;
    let nonce: [u8; NONCE_LEN] = rand::random();
    let mut msg = [0u8; 1 + NONCE_LEN];
    msg[0] = tag::PING;
    msg[1..].copy_from_slice(&nonce);
    match send.write_all(&msg).await {
        Ok(()) => {}
        Err(WriteError::Stopped(_)) => return Ok(Answer::Refused),
        Err(e) => return Err(ProbeError::Lost(e.to_string())),
    }
    let _ = send.finish();
    let mut echo = [0u8; NONCE_LEN];
    match recv.read_exact(&mut echo).await {
        Ok(()) if echo == nonce => Ok(Answer::Echo),
        // Garbage or a short answer still came from the peer.
        Ok(()) | Err(ReadExactError::FinishedEarly(_)) => Ok(Answer::Refused),
        Err(ReadExactError::ReadError(ReadError::Reset(_))) => Ok(Answer::Refused),
        Err(e) => Err(ProbeError::Lost(e.to_string())),
    }
}

/// Answers probes until the registry drops the channel. Each answer runs in its own
/// task, so one slow peer does not hold up the others.
pub async fn respond(mut rx: mpsc::Receiver<InboundStream>) {
    while let Some(mut s) = rx.recv().await {
        tokio::spawn(async move {
            let mut nonce = [0u8; NONCE_LEN];
            let read = tokio::time::timeout(ANSWER_TIMEOUT, s.recv.read_exact(&mut nonce)).await;
            if !matches!(read, Ok(Ok(()))) {
                return debug!(peer = %s.peer, "liveness probe stream ended early");
            }
            if s.send.write_all(&nonce).await.is_ok() {
                let _ = s.send.finish();
            }
        });
    }
}

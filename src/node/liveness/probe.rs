//! The liveness probe: an 8-byte echo on a tagged stream of the authenticated
//! connection. Only the peer itself can answer it, unlike a beacon.

use std::time::Duration;

use iroh::endpoint::{Connection, ReadError, ReadExactError, WriteError};
use tokio::sync::mpsc;
use tracing::debug;

use crate::node::streams::{tag, InboundStream};

const NONCE_LEN: usize = 8;
/// How long the answer to an echo may take at the responder's side (reading the nonce).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Sends the tag and a nonce in one write and waits for the echo.
pub async fn probe(conn: &Connection, timeout: Duration) -> Result<Answer, ProbeError> {
    let exchange = async {
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
    };
    let received = conn.stats().udp_rx.datagrams;
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        // The echo is late, but the peer's QUIC stack sent something (at least the ACK
        // of the probe): the process runs, only slowly (a loaded host). Closing it
        // would be a false departure.
        Err(_) if conn.stats().udp_rx.datagrams > received => Ok(Answer::Refused),
        Err(_) => Err(ProbeError::Timeout(timeout)),
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

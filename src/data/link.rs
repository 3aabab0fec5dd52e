//! One data link per peer connection: a bounded queue of encoded frames and the task
//! that writes them on this side's long-lived stream; and the reading of the peer's
//! stream, frame by frame.
//!
//! Sends never wait: when a peer's queue is full the frame is dropped and counted, so
//! a slow or stalled peer never holds up the node or the other peers. Anti-entropy
//! repeats what was dropped at its next round; live messages are at most once anyway.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use iroh::endpoint::{Connection, RecvStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::wire::{self, Frame, Id, Limits, WireError};
use crate::{
    node::streams::{self, tag},
    ratelimit::TokenBucket,
};

/// Frames queued per peer before new ones are dropped.
pub const QUEUE: usize = 2048;

pub type Encoded = Arc<Vec<u8>>;

/// What we know of a peer across its connections.
#[derive(Debug)]
pub struct PeerState {
    /// The peer's announced data neighbours.
    pub neighbours: Mutex<HashSet<Id>>,
    pub msgs_in: AtomicU64,
    pub msgs_out: AtomicU64,
    pub dropped: AtomicU64,
    /// `--max-peer-rate`: messages taken from this peer.
    rate: Mutex<TokenBucket>,
}

impl PeerState {
    pub fn new(max_rate: u32) -> Self {
        PeerState {
            neighbours: Mutex::default(),
            msgs_in: AtomicU64::new(0),
            msgs_out: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            rate: Mutex::new(TokenBucket::per_second(max_rate, Instant::now())),
        }
    }

    /// Whether one more message from this peer is within its rate.
    pub fn take_token(&self) -> bool {
        self.rate
            .lock()
            .map(|mut b| b.take(Instant::now()).is_ok())
            .unwrap_or(false)
    }
}

/// The sending side of a link.
pub struct Link {
    pub conn_id: usize,
    tx: mpsc::Sender<Encoded>,
    pub state: Arc<PeerState>,
}

impl Link {
    /// Queues a frame; false (and counted) when the queue is full or the link gone.
    pub fn send(&self, frame: &Encoded) -> bool {
        if self.tx.try_send(frame.clone()).is_ok() {
            true
        } else {
            self.state.dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    pub fn send_msg(&self, frame: &Encoded) -> bool {
        let ok = self.send(frame);
        if ok {
            self.state.msgs_out.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

/// A link for `conn` and the future that writes its frames; the future ends when the
/// link is dropped from the table, the connection closes or `stop` fires.
pub fn open(
    conn: Connection,
    state: Arc<PeerState>,
    stop: CancellationToken,
) -> (Link, impl std::future::Future<Output = ()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let link = Link {
        conn_id: conn.stable_id(),
        tx,
        state,
    };
    (link, write_frames(conn, rx, stop))
}

async fn write_frames(conn: Connection, mut rx: mpsc::Receiver<Encoded>, stop: CancellationToken) {
    let peer = conn.remote_id();
    let mut send = match streams::open(&conn, tag::DATA).await {
        Ok((send, _recv)) => send,
        Err(e) => {
            debug!(%peer, error = %e, "cannot open the data stream");
            return;
        }
    };
    loop {
        let frame = tokio::select! {
            f = rx.recv() => f,
            _ = stop.cancelled() => None,
            _ = conn.closed() => None,
        };
        let Some(frame) = frame else { break };
        if let Err(e) = send.write_all(&frame).await {
            debug!(%peer, error = %e, "data stream write failed");
            return;
        }
    }
    let _ = send.finish();
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("stream ended")]
    Ended,
    #[error("read failed: {0}")]
    Read(String),
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// Reads the next frame; `Ended` at a clean end of the stream.
pub async fn read_frame(recv: &mut RecvStream, limits: &Limits) -> Result<Frame, ReadError> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(iroh::endpoint::ReadExactError::FinishedEarly(0)) => return Err(ReadError::Ended),
        Err(e) => return Err(ReadError::Read(e.to_string())),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > limits.max_frame() {
        return Err(WireError::TooLarge(len, limits.max_frame()).into());
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| ReadError::Read(e.to_string()))?;
    Ok(wire::decode(&body, limits)?)
}

//! One data link per peer connection: a bounded queue of encoded frames and the task
//! that writes them on this side's long-lived stream; and the reading of the peer's
//! stream, frame by frame.
//!
//! Sends never wait: when a peer's queue is full the frame is dropped and counted, so
//! a slow or stalled peer never holds up the node or the other peers. Anti-entropy
//! repeats what was dropped at its next round; live messages are at most once anyway.
//! The queue always takes [`QUEUE_MIN_FRAMES`] frames, and more small ones while it
//! holds less than [`QUEUE_BYTES`] (up to [`QUEUE`] frames): 2,048 frames alone made a
//! burst of small messages overflow early (a fifth of a 20,000-message PublishStream
//! of 1 KiB was dropped in the pubsub benchmark), while a byte bound alone dropped
//! bursts of large messages that 2,048 frames had absorbed.
//!
//! Both directions work in batches, because per-frame costs dominated at high rates
//! (each QUIC stream call locks the connection and wakes its driver): the writer takes
//! every frame queued at the time (up to [`WRITE_BATCH`]) and hands them to the stream
//! in one call, without copying; the reader takes whatever the stream has and cuts as
//! many frames from it as it holds. A lone frame still goes out at once: nothing
//! waits for a batch to fill.

use std::sync::{
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    Arc,
};

use bytes::{Bytes, BytesMut};
use iroh::endpoint::{Connection, RecvStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::wire::{self, Frame, FrameLimits, WireError, WireVersion};
use crate::node::streams::{self, tag};

/// Frames a peer's queue always takes.
pub const QUEUE_MIN_FRAMES: usize = 2048;
/// Beyond [`QUEUE_MIN_FRAMES`], frames are taken while the queue holds fewer bytes.
pub const QUEUE_BYTES: usize = 8 * 1024 * 1024;
/// Most frames queued per peer, whatever their size.
pub const QUEUE: usize = 16_384;
/// Most frames handed to the stream in one write.
pub const WRITE_BATCH: usize = 256;
/// Most chunks taken from the stream in one read. A chunk is what one QUIC packet
/// carried (about 1.2-1.4 KB), so one 64 KiB message is some 50 chunks: taking them one
/// call at a time locked the connection once per packet.
const READ_CHUNKS: usize = 64;

/// An encoded frame (length prefix included), shared by every link it goes to.
pub type Encoded = Bytes;

/// A peer's message counters across its connections (its neighbours and rate are the
/// core's business).
#[derive(Debug, Default)]
pub struct PeerTraffic {
    pub msgs_in: AtomicU64,
    pub msgs_out: AtomicU64,
    pub dropped: AtomicU64,
}

/// The sending side of a data link.
pub struct DataLink {
    pub conn_id: usize,
    tx: mpsc::Sender<Encoded>,
    /// Bytes in the queue, shared with the writer.
    queued: Arc<AtomicUsize>,
    pub traffic: Arc<PeerTraffic>,
    /// The peer said it reads frames of version 2 (its hello stream came); until then
    /// it gets version 1, which every version reads.
    v2: AtomicBool,
}

/// The writer's end of a link's queue.
struct Queue {
    rx: mpsc::Receiver<Encoded>,
    queued: Arc<AtomicUsize>,
}

impl Queue {
    /// Waits for a frame, then takes the others already queued (up to a batch);
    /// 0 when the link is gone.
    async fn take(&mut self, batch: &mut Vec<Encoded>) -> usize {
        self.rx.recv_many(batch, WRITE_BATCH).await
    }

    /// The frames taken are out of the queue's bound (the writer holds them now).
    fn written(&self, batch: &[Encoded]) {
        let bytes = batch.iter().map(Bytes::len).sum();
        self.queued.fetch_sub(bytes, Ordering::Relaxed);
    }
}

fn queue(conn_id: usize, traffic: Arc<PeerTraffic>) -> (DataLink, Queue) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let queued = Arc::new(AtomicUsize::new(0));
    let link = DataLink {
        conn_id,
        tx,
        queued: queued.clone(),
        traffic,
        v2: AtomicBool::new(false),
    };
    (link, Queue { rx, queued })
}

impl DataLink {
    /// The frame version to encode for this peer.
    pub fn version(&self) -> WireVersion {
        if self.v2.load(Ordering::Relaxed) {
            WireVersion::V2
        } else {
            WireVersion::V1
        }
    }

    /// The peer speaks `version`, as we do.
    pub fn speaks(&self, version: WireVersion) {
        self.v2.store(version == WireVersion::V2, Ordering::Relaxed);
    }

    /// Queues a frame; false (and counted) when the queue is full or the link gone.
    pub fn send(&self, frame: &Encoded) -> bool {
        let len = frame.len();
        // Reserve first, so that concurrent senders cannot overshoot the bound together.
        let before = self.queued.fetch_add(len, Ordering::Relaxed);
        let frames = QUEUE - self.tx.capacity();
        let fits = frames < QUEUE_MIN_FRAMES || before + len <= QUEUE_BYTES;
        if fits && self.tx.try_send(frame.clone()).is_ok() {
            return true;
        }
        self.queued.fetch_sub(len, Ordering::Relaxed);
        self.traffic.dropped.fetch_add(1, Ordering::Relaxed);
        false
    }

    pub fn send_msg(&self, frame: &Encoded) -> bool {
        let ok = self.send(frame);
        if ok {
            self.traffic.msgs_out.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

/// A link for `conn` and the future that writes its frames; the future ends when the
/// link is dropped from the table, the connection closes or `stop` fires. Speaking
/// `ours` = V2, the future first says hello: an empty stream with the tag
/// [`tag::DATA_V2`], which tells the peer we read frames of version 2 (a version that
/// does not know the tag resets the stream and carries on).
pub fn open(
    conn: Connection,
    traffic: Arc<PeerTraffic>,
    ours: WireVersion,
    stop: CancellationToken,
) -> (DataLink, impl std::future::Future<Output = ()>) {
    let (link, q) = queue(conn.stable_id(), traffic);
    (link, write_frames(conn, q, ours, stop))
}

async fn say_hello(conn: &Connection) {
    match streams::open(conn, tag::DATA_V2).await {
        Ok((mut send, _recv)) => {
            let _ = send.finish();
        }
        Err(e) => debug!(peer = %conn.remote_id(), error = %e, "cannot say the data hello"),
    }
}

async fn write_frames(conn: Connection, mut q: Queue, ours: WireVersion, stop: CancellationToken) {
    let peer = conn.remote_id();
    if ours == WireVersion::V2 {
        say_hello(&conn).await;
    }
    let mut send = match streams::open(&conn, tag::DATA).await {
        Ok((send, _recv)) => send,
        Err(e) => {
            debug!(%peer, error = %e, "cannot open the data stream");
            return;
        }
    };
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        // recv_many waits for one frame, then takes the others already queued.
        let n = tokio::select! {
            n = q.take(&mut batch) => n,
            _ = stop.cancelled() => 0,
            _ = conn.closed() => 0,
        };
        if n == 0 {
            break;
        }
        q.written(&batch);
        if let Err(e) = send.write_all_chunks(&mut batch).await {
            debug!(%peer, error = %e, "data stream write failed");
            return;
        }
        batch.clear();
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

/// The peer's stream and what was read from it but not cut into frames yet (at most
/// one frame plus one read: a length above the limit is refused before its body).
pub struct FrameReader {
    recv: RecvStream,
    buf: BytesMut,
    chunks: Vec<Bytes>,
}

impl FrameReader {
    pub fn new(recv: RecvStream) -> Self {
        FrameReader {
            recv,
            buf: BytesMut::new(),
            chunks: vec![Bytes::new(); READ_CHUNKS],
        }
    }

    /// Stops the peer's stream (after a protocol error).
    pub fn stop(&mut self, code: u32) {
        let _ = self.recv.stop(iroh::endpoint::VarInt::from_u32(code));
    }

    /// Reads the next frame; `Ended` at a clean end of the stream.
    pub async fn next(&mut self, limits: &FrameLimits) -> Result<Frame, ReadError> {
        loop {
            if let Some(body) = cut_frame(&mut self.buf, limits.max_frame())? {
                return Ok(wire::decode(&body, limits)?);
            }
            match self.recv.read_many_chunks(&mut self.chunks).await {
                Ok(Some(n)) => {
                    for c in &mut self.chunks[..n] {
                        self.buf.extend_from_slice(c);
                        // Drops our hold on the packet's buffer now, not at the next read.
                        *c = Bytes::new();
                    }
                }
                Ok(None) if self.buf.is_empty() => return Err(ReadError::Ended),
                Ok(None) => return Err(ReadError::Read("the stream ended inside a frame".into())),
                Err(e) => return Err(ReadError::Read(e.to_string())),
            }
        }
    }
}

/// The body of the first whole frame in `buf`, taken out of it; `None` while the frame
/// is incomplete. A length above `max` is an error before any of its body is read.
fn cut_frame(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, WireError> {
    let Some(len) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len > max {
        return Err(WireError::TooLarge(len, max));
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(4 + len);
    Ok(Some(frame.split_off(4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_queue_is_bounded_in_frames_and_bytes() {
        let state = || Arc::new(PeerTraffic::default());
        // Clones of one buffer: the test itself holds 1 MiB.
        let mib = Bytes::from(vec![0u8; 1024 * 1024]);
        let small = Bytes::from_static(b"0123");
        // Large frames: QUEUE_MIN_FRAMES of them, whatever their size.
        let (link, mut q) = queue(1, state());
        let taken = (0..QUEUE_MIN_FRAMES + 5)
            .filter(|_| link.send(&mib))
            .count();
        assert_eq!(taken, QUEUE_MIN_FRAMES);
        assert_eq!(link.traffic.dropped.load(Ordering::Relaxed), 5);
        // What the writer takes makes room again.
        let mut batch = vec![];
        assert_eq!(q.take(&mut batch).await, WRITE_BATCH);
        q.written(&batch);
        assert!(link.send(&mib));
        // Small frames: up to QUEUE of them.
        let (link, _q) = queue(2, state());
        let taken = (0..QUEUE + 5).filter(|_| link.send(&small)).count();
        assert_eq!(taken, QUEUE);
        // Beyond QUEUE_MIN_FRAMES, only while the bytes stay under QUEUE_BYTES.
        let (link, _q) = queue(3, state());
        assert!((0..QUEUE_MIN_FRAMES).all(|_| link.send(&small)));
        let more = (0..10).filter(|_| link.send(&mib)).count();
        assert_eq!(
            more,
            (QUEUE_BYTES - QUEUE_MIN_FRAMES * small.len()) / mib.len()
        );
    }

    #[test]
    fn frames_are_cut_from_any_split_of_the_stream() {
        let limits = FrameLimits {
            max_message_bytes: 1024,
        };
        let frames: Vec<Frame> = (0..5u8)
            .map(|i| Frame::Neighbours(vec![[i; 32]; i as usize]))
            .collect();
        let stream: Vec<u8> = frames
            .iter()
            .flat_map(|f| wire::encode(f, WireVersion::V1).unwrap())
            .collect();
        // Fed one byte at a time, then all at once: the same frames come out.
        for step in [1, stream.len()] {
            let mut buf = BytesMut::new();
            let mut got = vec![];
            for piece in stream.chunks(step) {
                buf.extend_from_slice(piece);
                while let Some(body) = cut_frame(&mut buf, limits.max_frame()).unwrap() {
                    got.push(wire::decode(&body, &limits).unwrap());
                }
            }
            assert_eq!(got, frames);
            assert!(buf.is_empty());
        }
        let mut huge = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        assert!(matches!(
            cut_frame(&mut huge, limits.max_frame()),
            Err(WireError::TooLarge(..))
        ));
    }
}

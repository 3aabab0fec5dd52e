//! One data link per peer connection: a queue of encoded frames with a lane per
//! priority class ([`queue`](super::queue)), the writers that hand them to QUIC, one
//! stream per class; and the reading of the peer's streams, frame by frame.
//!
//! Sends never wait: when a link's queue is full the frame is dropped and counted (or
//! an older frame of a lower class is, see [`ClassQueue`]), so a slow or stalled peer
//! never holds up the node or the other peers. Anti-entropy repeats what was dropped
//! at its next round; live messages are at most once anyway. The bound: 2,048 frames
//! alone made a burst of small messages overflow early (a fifth of a 20,000-message
//! PublishStream of 1 KiB was dropped in the pubsub benchmark), while a byte bound
//! alone dropped bursts of large messages that 2,048 frames had absorbed.
//!
//! Each class has its own QUIC stream, opened when its first frame goes, with a
//! stream priority that follows the class: QUIC fills each packet from the highest
//! priority stream with data, so an urgent frame overtakes the bulk bytes already
//! handed to QUIC, not only those still queued here. A receiver reads every data
//! stream of a connection alike, so the frames need no change and a node of the
//! previous version reads the three streams as it read one.
//!
//! With `--link-rate`, the writers pace what they hand to QUIC ([`Pacer`]): one frame
//! at a time, the highest class first.
//!
//! Both directions work in batches, because per-frame costs dominated at high rates
//! (each QUIC stream call locks the connection and wakes its driver): an unpaced
//! writer takes every frame of its class queued at the time (up to [`WRITE_BATCH`])
//! and hands them to the stream in one call, without copying; the reader takes
//! whatever the stream has and cuts as many frames from it as it holds. A lone frame
//! still goes out at once: nothing waits for a batch to fill.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use iroh::endpoint::{Connection, RecvStream, SendStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{
    class::{Class, Tag},
    pace::Pacer,
    queue::{ClassQueue, ClassStats, Pushed},
    wire::{self, Frame, FrameLimits, WireError, WireVersion},
};
use crate::node::streams::{self, tag};

/// Most frames handed to the stream in one write.
pub const WRITE_BATCH: usize = 256;
/// How long a paced writer waits while a higher class has frames (its writer takes
/// them at once; this only spaces the checks).
const YIELD: Duration = Duration::from_millis(2);
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

/// A link's counters per class (since the link came up) and its cap.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkStats {
    /// Indexed by [`Class::index`].
    pub classes: [ClassStats; 3],
    /// `--link-rate` in bits per second; 0 = none.
    pub rate_cap: u64,
}

/// What the link's queue and writers share.
struct Shared {
    queue: Mutex<ClassQueue>,
    /// Poked when a class's lane gets a frame.
    ready: [Notify; 3],
    pacer: Option<Mutex<Pacer>>,
    rate_cap: u64,
}

/// What a writer does next.
enum Next {
    Write,
    Idle,
    Wait(Duration),
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, ClassQueue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the next frames of class `c` into `batch`: up to a batch when unpaced; one
    /// when paced, and only when the bucket allows and no higher class waits.
    fn next(&self, c: Class, batch: &mut Vec<Encoded>) -> Next {
        let mut q = self.queue();
        let Some(pacer) = &self.pacer else {
            return match q.take(c, WRITE_BATCH, batch) {
                0 => Next::Idle,
                _ => Next::Write,
            };
        };
        let Some(len) = q.next_len(c) else {
            return Next::Idle;
        };
        if q.waiting_above(c) {
            return Next::Wait(YIELD);
        }
        let mut p = pacer.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let wait = p.wait(now);
        if !wait.is_zero() {
            return Next::Wait(wait);
        }
        q.take(c, 1, batch);
        p.spend(len, now);
        Next::Write
    }
}

/// The sending side of a data link.
pub struct DataLink {
    pub conn_id: usize,
    shared: Arc<Shared>,
    pub traffic: Arc<PeerTraffic>,
    /// Ends the writers when the link leaves the table.
    gone: CancellationToken,
    /// The peer said it reads frames of version 2 (its hello stream came); until then
    /// it gets version 1, which every version reads.
    v2: AtomicBool,
}

impl Drop for DataLink {
    fn drop(&mut self) {
        self.gone.cancel();
    }
}

fn link(
    conn_id: usize,
    traffic: Arc<PeerTraffic>,
    rate_cap: u64,
    gone: CancellationToken,
) -> DataLink {
    let shared = Shared {
        queue: Mutex::default(),
        ready: Default::default(),
        pacer: (rate_cap > 0).then(|| Mutex::new(Pacer::new(rate_cap, Instant::now()))),
        rate_cap,
    };
    DataLink {
        conn_id,
        shared: Arc::new(shared),
        traffic,
        gone,
        v2: AtomicBool::new(false),
    }
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

    /// Queues a frame; false (and counted) when it was dropped or the link is gone.
    pub fn send(&self, frame: &Encoded, tag: Tag) -> bool {
        let pushed = self.shared.queue().push(frame, tag);
        match pushed {
            Pushed::Queued { evicted } => {
                if evicted > 0 {
                    self.traffic
                        .dropped
                        .fetch_add(evicted as u64, Ordering::Relaxed);
                }
                self.shared.ready[tag.class.index()].notify_one();
                true
            }
            Pushed::Replaced => true,
            Pushed::Dropped => {
                self.traffic.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    pub fn send_msg(&self, frame: &Encoded, tag: Tag) -> bool {
        let ok = self.send(frame, tag);
        if ok {
            self.traffic.msgs_out.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    pub fn stats(&self) -> LinkStats {
        let q = self.shared.queue();
        LinkStats {
            classes: Class::ALL.map(|c| q.stats(c)),
            rate_cap: self.shared.rate_cap,
        }
    }
}

/// A link for `conn` and the future that writes its frames; the future ends when the
/// link is dropped from the table, the connection closes, a stream breaks or `stop`
/// fires. `rate_cap` is `--link-rate` (0 = none). Speaking `ours` = V2, the future
/// first says hello: an empty stream with the tag [`tag::DATA_V2`], which tells the
/// peer we read frames of version 2 (a version that does not know the tag resets the
/// stream and carries on).
pub fn open(
    conn: Connection,
    traffic: Arc<PeerTraffic>,
    ours: WireVersion,
    stop: CancellationToken,
    rate_cap: u64,
) -> (DataLink, impl std::future::Future<Output = ()>) {
    let l = link(conn.stable_id(), traffic, rate_cap, stop);
    let (shared, gone) = (l.shared.clone(), l.gone.clone());
    let writers = async move {
        if ours == WireVersion::V2 {
            say_hello(&conn).await;
        }
        // A task per class: in one task, each wake-up of one writer would poll all
        // three (and each poll of `conn.closed()` locks the connection).
        let mut tasks = tokio::task::JoinSet::new();
        for c in Class::ALL {
            tasks.spawn(write_class(conn.clone(), shared.clone(), c, gone.clone()));
        }
        // The first writer to end ends the link; dropping the set aborts the others.
        let _ = tasks.join_next().await;
    };
    (l, writers)
}

async fn say_hello(conn: &Connection) {
    match streams::open(conn, tag::DATA_V2).await {
        Ok((mut send, _recv)) => {
            let _ = send.finish();
        }
        Err(e) => debug!(peer = %conn.remote_id(), error = %e, "cannot say the data hello"),
    }
}

/// Writes one class's frames on its own stream, opened at its first frame.
async fn write_class(conn: Connection, shared: Arc<Shared>, class: Class, stop: CancellationToken) {
    let peer = conn.remote_id();
    let mut send: Option<SendStream> = None;
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        let go_on = match shared.next(class, &mut batch) {
            Next::Write => true,
            Next::Idle => until(shared.ready[class.index()].notified(), &stop, &conn).await,
            Next::Wait(d) => until(tokio::time::sleep(d), &stop, &conn).await,
        };
        if !go_on {
            break;
        }
        if batch.is_empty() {
            continue;
        }
        let s = match &mut send {
            Some(s) => s,
            None => match streams::open(&conn, tag::DATA).await {
                Ok((s, _recv)) => {
                    let _ = s.set_priority(class.stream_priority());
                    send.insert(s)
                }
                Err(e) => {
                    debug!(%peer, %class, error = %e, "cannot open a data stream");
                    return;
                }
            },
        };
        if let Err(e) = s.write_all_chunks(&mut batch).await {
            debug!(%peer, %class, error = %e, "data stream write failed");
            return;
        }
        batch.clear();
    }
    if let Some(mut s) = send {
        let _ = s.finish();
    }
}

/// Waits for `f`; false when the link ends first.
async fn until(f: impl std::future::Future, stop: &CancellationToken, conn: &Connection) -> bool {
    tokio::select! {
        _ = f => true,
        _ = stop.cancelled() => false,
        _ = conn.closed() => false,
    }
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

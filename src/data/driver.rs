//! The data plane's driver: the I/O around the pure [`DataCore`]. It owns the links
//! (a queue and a writer task per connection), reads the peers' streams, delivers to
//! the local subscribers and writes the disk, by carrying out the actions the core
//! returns; it decides nothing itself. Its task wakes for new connections and
//! streams, the sync tick and the core's next deadline.
//!
//! The hot paths stay as short as before the split: a publish takes the core once
//! (rate, sequence, clock, retained store), encodes its message once and queues the
//! shared buffer on every link; a reader hands each frame to the core and carries out
//! what comes back with an action list that lives inline on its stack.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, RwLock,
    },
    time::Duration,
};

use iroh::endpoint::Connection;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{
    apps::AppBuckets,
    class::{Class, LinkSettings, Tag},
    core::{Actions, DataAction, DataCore, DataInput, Local, Now, Published},
    disk::Disk,
    hlc::wall_ms,
    link::{self, DataLink, Encoded, PeerTraffic},
    subs::Subs,
    wire::{self, Frame, FrameLimits, Id, Message, WireVersion},
};
use crate::node::streams::InboundStream;

/// How long a reply waits for our link to the peer (steps of 50 ms, 2 s in all).
const LINK_WAIT_STEPS: u32 = 40;
const LINK_WAIT_STEP: Duration = Duration::from_millis(50);

/// The data plane's counters, read by `Stats`.
#[derive(Debug, Default)]
pub struct DataCounters {
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub published: AtomicU64,
    pub delivered: AtomicU64,
    pub dropped: AtomicU64,
    pub rejected: AtomicU64,
    /// Refused for their origin (also counted in `rejected`).
    pub forged: AtomicU64,
    /// Taken from a third node without a signature (`--origin-check permissive`).
    pub unsigned: AtomicU64,
    /// Messages of ours signed.
    pub signed: AtomicU64,
}

pub struct DataDriver {
    // Lock order: `core`, then `links`, then `traffic`. No code holds two of them at
    // once today (each is held for one call, never across an await); a change that
    // must, takes them in this order. `Subs`, `Disk` and `AppBuckets` lock inside
    // their own calls, which never run under these.
    /// The decisions; held for one `handle` or `publish` call.
    pub(super) core: Mutex<DataCore>,
    /// The link per peer, read on every publish and forward.
    links: RwLock<HashMap<Id, Arc<DataLink>>>,
    /// Message counters per peer, kept across its connections.
    traffic: Mutex<HashMap<Id, Arc<PeerTraffic>>>,
    pub(super) subs: Subs,
    pub(super) disk: Disk,
    pub(super) counters: DataCounters,
    /// Per-app publish rates, checked before the core's host-wide one.
    pub(super) app_buckets: AppBuckets,
    /// The core's host-wide publish rate, for the check and the error (without the
    /// core's lock).
    pub(super) publish_rate: u32,
    pub(super) limits: FrameLimits,
    pub(super) sync_interval: Duration,
    /// Priority classes, latest-value topics and the rate cap of every link.
    pub(super) link_settings: LinkSettings,
    pub(super) stop: CancellationToken,
    /// Poked when the core's next deadline moved earlier.
    rearm: Notify,
    /// The frame version we speak: V2, or V1 to stand in for an older node in tests.
    pub(super) wire: WireVersion,
    /// Connections whose peer said it speaks version 2 before our link on them was up.
    v2_early: Mutex<HashSet<usize>>,
}

pub fn encode(frame: &Frame, version: WireVersion) -> Option<Encoded> {
    logged(wire::encode(frame, version))
}

/// A frame encoded for each version its links speak, each at most once.
struct Encodings<'a> {
    frame: &'a Frame,
    v1: Option<Option<Encoded>>,
    v2: Option<Option<Encoded>>,
}

impl<'a> Encodings<'a> {
    fn new(frame: &'a Frame) -> Self {
        Encodings {
            frame,
            v1: None,
            v2: None,
        }
    }

    fn get(&mut self, version: WireVersion) -> Option<&Encoded> {
        // Frames without messages encode alike on both versions.
        let version = match self.frame {
            Frame::Msg(_) | Frame::Entries(_) => version,
            _ => WireVersion::V1,
        };
        let slot = match version {
            WireVersion::V1 => &mut self.v1,
            WireVersion::V2 => &mut self.v2,
        };
        slot.get_or_insert_with(|| encode(self.frame, version))
            .as_ref()
    }
}

/// An encoding, or nothing with the reason logged (a frame we built ourselves that
/// does not encode is a bug, not the peer's fault).
fn logged(r: Result<Vec<u8>, wire::WireError>) -> Option<Encoded> {
    r.map(Into::into)
        .map_err(|e| warn!(error = %e, "cannot encode a data frame"))
        .ok()
}

impl DataDriver {
    pub fn new(
        core: DataCore,
        disk: Disk,
        app_buckets: AppBuckets,
        limits: FrameLimits,
        sync_interval: Duration,
        link_settings: LinkSettings,
    ) -> Self {
        DataDriver {
            publish_rate: core.rates().publish,
            core: Mutex::new(core),
            links: RwLock::default(),
            traffic: Mutex::default(),
            subs: Subs::default(),
            disk,
            counters: DataCounters::default(),
            app_buckets,
            limits,
            sync_interval,
            link_settings,
            stop: CancellationToken::new(),
            rearm: Notify::new(),
            wire: WireVersion::V2,
            v2_early: Mutex::default(),
        }
    }

    /// The core; a panic inside it must not stop the data plane for good.
    pub(super) fn core(&self) -> MutexGuard<'_, DataCore> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An app's message through the core, then out (in `class` when the app chose
    /// one): `None` when over the host's rate.
    pub async fn publish(&self, l: Local, class: Option<Class>) -> Option<Published> {
        let mut out = Actions::new();
        let p = self.core().publish(l, Now::current(), &mut out)?;
        self.counters.published.fetch_add(1, Ordering::Relaxed);
        self.execute(&mut out, class).await;
        Some(p)
    }

    /// One input through the core, then its actions.
    async fn step(&self, input: DataInput) {
        let mut out = Actions::new();
        self.core().handle(input, Now::current(), &mut out);
        self.execute(&mut out, None).await;
    }

    /// Carries out the core's actions in order (a disk write waits when the writer's
    /// queue is full, which slows the sender down instead of losing the change).
    /// `class` is a local publisher's choice for its message.
    async fn execute(&self, out: &mut Actions, class: Option<Class>) {
        for a in out.drain(..) {
            match a {
                DataAction::Send { to, frame } => self.send(&to, &frame),
                // Ours under subscribe rights (then `class` is the app's choice), or
                // another node's (then `class` is None).
                DataAction::Forward { to, msg } => self.forward(&to, msg, class),
                DataAction::Broadcast(m) => self.broadcast(&m, class),
                DataAction::Deliver(m) => {
                    let n = self.subs.deliver(&m);
                    self.counters.delivered.fetch_add(n, Ordering::Relaxed);
                }
                DataAction::Store(m) => self.disk.put(m).await,
                DataAction::Unstore(g) => self.disk.delete(g).await,
                DataAction::Lease(end) => self.disk.lease(end).await,
                DataAction::Reject => {
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                }
                DataAction::Forged => {
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    self.counters.forged.fetch_add(1, Ordering::Relaxed);
                }
                DataAction::Unsigned => {
                    self.counters.unsigned.fetch_add(1, Ordering::Relaxed);
                }
                DataAction::Signed => {
                    self.counters.signed.fetch_add(1, Ordering::Relaxed);
                }
                DataAction::Rearm => self.rearm.notify_one(),
            }
        }
    }

    fn send(&self, to: &[Id], frame: &Frame) {
        let mut enc = Encodings::new(frame);
        let tag = self.link_settings.policy.frame_tag(frame);
        let Ok(links) = self.links.read() else { return };
        for l in to.iter().filter_map(|id| links.get(id)) {
            if let Some(f) = enc.get(l.version()) {
                l.send(f, tag);
            }
        }
    }

    fn forward(&self, to: &[Id], msg: Message, class: Option<Class>) {
        let tag = self.link_settings.policy.tag(&msg.topic, &msg.key, class);
        let frame = Frame::Msg(msg);
        let mut enc = Encodings::new(&frame);
        let Ok(links) = self.links.read() else { return };
        for l in to.iter().filter_map(|id| links.get(id)) {
            if let Some(f) = enc.get(l.version()) {
                self.send_msg(l, f, tag);
            }
        }
    }

    /// A message of ours to every peer, encoded once per version, without copying it.
    fn broadcast(&self, m: &Message, class: Option<Class>) {
        let Ok(links) = self.links.read() else { return };
        let tag = self.link_settings.policy.tag(&m.topic, &m.key, class);
        let mut enc: [Option<Option<Encoded>>; 2] = [None, None];
        for l in links.values() {
            let v = l.version();
            let slot = &mut enc[v as usize];
            let f = slot.get_or_insert_with(|| logged(wire::encode_msg(m, v)));
            if let Some(f) = f {
                self.send_msg(l, f, tag);
            }
        }
    }

    fn send_msg(&self, l: &DataLink, f: &Encoded, tag: Tag) {
        if l.send_msg(f, tag) {
            self.counters.messages_out.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn traffic(&self, peer: &Id) -> Arc<PeerTraffic> {
        let mut t = self.traffic.lock().unwrap_or_else(|e| e.into_inner());
        t.entry(*peer).or_default().clone()
    }

    pub(super) fn traffic_of(&self, peer: &Id) -> Option<Arc<PeerTraffic>> {
        self.traffic.lock().ok()?.get(peer).cloned()
    }

    pub(super) fn link(&self, peer: &Id) -> Option<Arc<DataLink>> {
        self.links.read().ok()?.get(peer).cloned()
    }

    /// A new authenticated connection: its link replaces an older one to that peer.
    pub async fn add_link(self: &Arc<Self>, conn: Connection) {
        let peer = *conn.remote_id().as_bytes();
        // The same connection can be announced twice at start (listed, then
        // announced); a second link on it would end the first one's entry.
        if self
            .link(&peer)
            .is_some_and(|l| l.conn_id == conn.stable_id())
        {
            return;
        }
        let (link, writer) = link::open(
            conn,
            self.traffic(&peer),
            self.wire,
            self.stop.child_token(),
            self.link_settings.rate_cap,
        );
        let conn_id = link.conn_id;
        if self.v2_early_take(conn_id) {
            link.speaks(WireVersion::V2);
        }
        if let Ok(mut l) = self.links.write() {
            l.insert(peer, Arc::new(link));
        }
        debug!(peer = %hex::encode(&peer[..5]), "data link up");
        let me = self.clone();
        tokio::spawn(async move {
            writer.await;
            me.remove_link(&peer, conn_id).await;
        });
        self.step(DataInput::LinkUp(peer)).await;
    }

    fn v2_early_take(&self, conn_id: usize) -> bool {
        let mut early = self.v2_early.lock().unwrap_or_else(|e| e.into_inner());
        early.remove(&conn_id)
    }

    /// A peer's hello on a connection: it reads frames of version 2 (when we speak
    /// them too). Our link on it may still be starting.
    pub fn hello(&self, s: InboundStream) {
        let conn_id = s.conn.stable_id();
        let peer = *s.peer.as_bytes();
        match self.link(&peer) {
            Some(l) if l.conn_id == conn_id => l.speaks(self.wire),
            _ => {
                let mut early = self.v2_early.lock().unwrap_or_else(|e| e.into_inner());
                early.insert(conn_id);
            }
        }
        debug!(peer = %hex::encode(&peer[..5]), "data link speaks frames of version 2");
    }

    async fn remove_link(&self, peer: &Id, conn_id: usize) {
        let removed = match self.links.write() {
            Ok(mut l) if l.get(peer).is_some_and(|k| k.conn_id == conn_id) => {
                l.remove(peer).is_some()
            }
            _ => false,
        };
        self.v2_early_take(conn_id);
        if removed {
            debug!(peer = %hex::encode(&peer[..5]), "data link down");
            self.step(DataInput::LinkDown(*peer)).await;
        }
    }

    /// The link to a peer whose frames we are reading: our side of a new connection
    /// may still be starting (the two are announced separately).
    async fn link_soon(&self, peer: &Id) -> Option<Arc<DataLink>> {
        for _ in 0..LINK_WAIT_STEPS {
            if let Some(l) = self.link(peer) {
                return Some(l);
            }
            tokio::time::sleep(LINK_WAIT_STEP).await;
        }
        None
    }

    /// Reads one inbound data stream until it ends or breaks the protocol.
    pub async fn read_stream(self: Arc<Self>, s: InboundStream) {
        let InboundStream {
            peer,
            mut send,
            recv,
            ..
        } = s;
        // The other direction uses its own stream.
        let _ = send.finish();
        let id = *peer.as_bytes();
        let traffic = self.traffic(&id);
        let mut reader = link::FrameReader::new(recv);
        let mut out = Actions::new();
        loop {
            let frame = tokio::select! {
                f = reader.next(&self.limits) => f,
                _ = self.stop.cancelled() => return,
            };
            match frame {
                Ok(f) => self.on_frame(id, &traffic, f, &mut out).await,
                Err(link::ReadError::Ended) => return,
                Err(link::ReadError::Read(e)) => {
                    debug!(%peer, error = %e, "data stream closed");
                    return;
                }
                Err(link::ReadError::Wire(e)) => {
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    warn!(%peer, error = %e, "bad data frame; closing the data stream");
                    reader.stop(2);
                    return;
                }
            }
        }
    }

    /// One frame from a peer; `out` is the reader's action list, reused.
    pub(super) async fn on_frame(
        &self,
        from: Id,
        traffic: &PeerTraffic,
        frame: Frame,
        out: &mut Actions,
    ) {
        match &frame {
            Frame::Msg(_) => {
                traffic.msgs_in.fetch_add(1, Ordering::Relaxed);
                self.counters.messages_in.fetch_add(1, Ordering::Relaxed);
            }
            // The answer goes on our link, which may still be starting.
            Frame::Digest(_) | Frame::Versions { .. } if self.link_soon(&from).await.is_none() => {
                return
            }
            _ => {}
        }
        self.core()
            .handle(DataInput::Frame { from, frame }, Now::current(), out);
        self.execute(out, None).await;
    }

    /// The driver's task: new connections, new streams, the sync tick and the core's
    /// next deadline (an expiry), until `stop`.
    pub async fn run(
        self: Arc<Self>,
        mut conns: mpsc::Receiver<Connection>,
        mut inbound: mpsc::Receiver<InboundStream>,
        mut hellos: mpsc::Receiver<InboundStream>,
    ) {
        let mut tick = tokio::time::interval(self.sync_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let wait = self.until_deadline();
            tokio::select! {
                _ = self.stop.cancelled() => break,
                Some(c) = conns.recv() => self.add_link(c).await,
                Some(s) = inbound.recv() => {
                    tokio::spawn(self.clone().read_stream(s));
                }
                Some(s) = hellos.recv() => self.hello(s),
                _ = tick.tick() => self.step(DataInput::SyncTick).await,
                _ = sleep_for(wait) => self.step(DataInput::Deadline).await,
                _ = self.rearm.notified() => {}
            }
        }
    }

    /// How long until the core's next deadline, at most a sync interval (the tick
    /// wakes the task by then anyway); `None` without one.
    fn until_deadline(&self) -> Option<Duration> {
        let ms = self.core().next_deadline()?;
        Some(Duration::from_millis(ms.saturating_sub(wall_ms())).min(self.sync_interval))
    }
}

async fn sleep_for(wait: Option<Duration>) {
    match wait {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

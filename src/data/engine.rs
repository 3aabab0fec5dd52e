//! The data plane's shared state and its live path: links to peers, publishing,
//! receiving, forwarding and local delivery.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};

use iroh::endpoint::Connection;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    disk::{Disk, SEQ_LEASE},
    hlc::{wall_ms, Hlc},
    link::{self, Encoded, Link, PeerState},
    route::{forward_targets, Seen},
    store::{Applied, Retained},
    subs::Subs,
    wire::{self, Frame, Id, Limits, Message, MAX_HOPS},
};
use crate::{node::streams::InboundStream, ratelimit::TokenBucket};

#[derive(Debug, Default)]
pub struct Counters {
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub published: AtomicU64,
    pub delivered: AtomicU64,
    pub dropped: AtomicU64,
    pub rejected: AtomicU64,
}

pub struct Shared {
    pub me: Id,
    pub limits: Limits,
    pub sync_interval: Duration,
    pub max_publish_rate: u32,
    pub app_buckets: super::apps::AppBuckets,
    pub max_peer_rate: u32,
    pub publish_bucket: Mutex<TokenBucket>,
    pub hlc: Hlc,
    pub next_seq: AtomicU64,
    /// Sequence numbers below this are reserved on disk.
    pub lease_end: AtomicU64,
    pub retained: Mutex<Retained>,
    pub disk: Disk,
    pub subs: Subs,
    pub links: RwLock<HashMap<Id, Arc<Link>>>,
    pub peers: Mutex<HashMap<Id, Arc<PeerState>>>,
    pub seen: Mutex<Seen>,
    pub counters: Counters,
    pub stop: CancellationToken,
    /// What each peer last got from our anti-entropy (see sync.rs).
    pub synced: Mutex<HashMap<Id, super::sync::Sent>>,
}

pub fn encode(frame: &Frame) -> Option<Encoded> {
    logged(wire::encode(frame))
}

/// A message from this node, encoded without copying it.
fn encode_msg(m: &Message) -> Option<Encoded> {
    logged(wire::encode_msg(m))
}

/// An encoding, or nothing with the reason logged (a frame we built ourselves that
/// does not encode is a bug, not the peer's fault).
fn logged(r: Result<Vec<u8>, wire::WireError>) -> Option<Encoded> {
    r.map(Into::into)
        .map_err(|e| warn!(error = %e, "cannot encode a data frame"))
        .ok()
}

impl Shared {
    pub fn take_publish_token(&self) -> bool {
        self.publish_bucket
            .lock()
            .map(|mut b| b.take(Instant::now()).is_ok())
            .unwrap_or(false)
    }

    pub fn peer_state(&self, peer: &Id) -> Arc<PeerState> {
        let mut p = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        p.entry(*peer)
            .or_insert_with(|| Arc::new(PeerState::new(self.max_peer_rate)))
            .clone()
    }

    pub fn link(&self, peer: &Id) -> Option<Arc<Link>> {
        self.links.read().ok()?.get(peer).cloned()
    }

    fn all_links(&self) -> Vec<(Id, Arc<Link>)> {
        self.links
            .read()
            .map(|l| l.iter().map(|(k, v)| (*k, v.clone())).collect())
            .unwrap_or_default()
    }

    /// A new authenticated connection: its link replaces an older one to that peer.
    pub fn add_link(self: &Arc<Self>, conn: Connection) {
        let peer = *conn.remote_id().as_bytes();
        // The same connection can be announced twice at start (listed, then
        // announced); a second link on it would end the first one's entry.
        if self
            .link(&peer)
            .is_some_and(|l| l.conn_id == conn.stable_id())
        {
            return;
        }
        let (link, writer) = link::open(conn, self.peer_state(&peer), self.stop.child_token());
        let conn_id = link.conn_id;
        if let Ok(mut l) = self.links.write() {
            l.insert(peer, Arc::new(link));
        }
        debug!(peer = %hex::encode(&peer[..5]), "data link up");
        let me = self.clone();
        tokio::spawn(async move {
            writer.await;
            me.remove_link(&peer, conn_id);
        });
        self.announce_neighbours();
        self.send_digest(&peer);
    }

    fn remove_link(&self, peer: &Id, conn_id: usize) {
        let removed = match self.links.write() {
            Ok(mut l) if l.get(peer).is_some_and(|k| k.conn_id == conn_id) => {
                l.remove(peer).is_some()
            }
            _ => false,
        };
        if removed {
            if let Ok(mut n) = self.peer_state(peer).neighbours.lock() {
                n.clear();
            }
            if let Ok(mut s) = self.synced.lock() {
                s.remove(peer);
            }
            debug!(peer = %hex::encode(&peer[..5]), "data link down");
            self.announce_neighbours();
        }
    }

    /// Tells every peer our current neighbour set.
    fn announce_neighbours(&self) {
        let links = self.all_links();
        let ids = links.iter().map(|(id, _)| *id).collect();
        if let Some(f) = encode(&Frame::Neighbours(ids)) {
            for (_, l) in links {
                l.send(&f);
            }
        }
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
        let state = self.peer_state(&id);
        let mut reader = link::FrameReader::new(recv);
        loop {
            let frame = tokio::select! {
                f = reader.next(&self.limits) => f,
                _ = self.stop.cancelled() => return,
            };
            match frame {
                Ok(f) => self.on_frame(&id, &state, f).await,
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

    async fn on_frame(&self, from: &Id, state: &PeerState, f: Frame) {
        match f {
            Frame::Neighbours(ids) => {
                if let Ok(mut n) = state.neighbours.lock() {
                    *n = ids.into_iter().collect();
                }
            }
            Frame::Msg(m) => {
                state.msgs_in.fetch_add(1, Ordering::Relaxed);
                self.counters.messages_in.fetch_add(1, Ordering::Relaxed);
                if !state.take_token() {
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                self.on_msg(from, state, m).await;
            }
            Frame::Digest(d) => self.on_digest(from, &d).await,
            Frame::Versions { buckets, versions } => {
                self.on_versions(from, &buckets, &versions).await
            }
            Frame::Entries(ms) => self.on_entries(ms).await,
            Frame::Root(r) => self.on_root(from, r),
        }
    }

    pub(super) async fn on_msg(&self, from: &Id, state: &PeerState, m: Message) {
        if m.publisher == self.me {
            return;
        }
        if let Err(e) = self.hlc.observe(m.hlc) {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            debug!(peer = %hex::encode(&from[..5]), error = %e, "message refused");
            return;
        }
        let fresh = self
            .seen
            .lock()
            .map(|mut s| s.accept(&m.publisher, m.seq))
            .unwrap_or(false);
        if !fresh {
            return;
        }
        if m.hops < MAX_HOPS {
            self.forward(from, state, &m);
        }
        let m = Arc::new(m);
        if m.retain {
            self.retain((*m).clone()).await;
        }
        self.deliver(&m);
    }

    fn forward(&self, from: &Id, from_state: &PeerState, m: &Message) {
        // Decided under the locks rather than on copies: this runs for every message,
        // and on a full mesh it finds no target at all.
        let targets: Vec<Arc<Link>> = {
            let (Ok(links), Ok(n)) = (self.links.read(), from_state.neighbours.lock()) else {
                return;
            };
            forward_targets(links.keys(), from, &n, &m.publisher)
                .iter()
                .filter_map(|id| links.get(id).cloned())
                .collect()
        };
        if targets.is_empty() {
            return;
        }
        let mut fwd = m.clone();
        fwd.hops += 1;
        if let Some(f) = encode(&Frame::Msg(fwd)) {
            for l in &targets {
                self.send_msg(l, &f);
            }
        }
    }

    fn send_msg(&self, l: &Link, f: &Encoded) {
        if l.send_msg(f) {
            self.counters.messages_out.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends a message from this node to every peer.
    pub fn broadcast(&self, m: &Message) {
        let links = self.all_links();
        if links.is_empty() {
            return;
        }
        if let Some(f) = encode_msg(m) {
            for (_, l) in links {
                self.send_msg(&l, &f);
            }
        }
    }

    /// Merges a retained entry into memory and disk; true if it was newer.
    pub async fn retain(&self, m: Message) -> bool {
        let applied = match self.retained.lock() {
            Ok(mut r) => r.apply(m.clone(), wall_ms()),
            Err(_) => return false,
        };
        match applied {
            Applied::Stored { evicted } => {
                self.disk.put(m).await;
                if !evicted.is_empty() {
                    info!(
                        entries = evicted.len(),
                        "retained store full; evicted the oldest entries"
                    );
                }
                for g in evicted {
                    self.disk.delete(g).await;
                }
                true
            }
            Applied::TooLarge => {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                false
            }
            Applied::Stale | Applied::Expired => false,
        }
    }

    /// Takes the next sequence number, renewing the reservation on disk halfway
    /// through, so a restart never reuses a number peers have seen.
    pub async fn take_seq(&self) -> u64 {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        self.reserve_past(seq).await;
        seq
    }

    pub async fn reserve_past(&self, seq: u64) {
        let end = self.lease_end.load(Ordering::Relaxed);
        if seq + SEQ_LEASE / 2 < end {
            return;
        }
        let new_end = seq + SEQ_LEASE;
        if self
            .lease_end
            .compare_exchange(end, new_end, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.disk.lease(new_end).await;
        }
    }

    /// Hands a message to the local subscribers. A tombstone goes too: an app that
    /// follows a topic must learn that a key was deleted (it arrives marked deleted).
    pub fn deliver(&self, m: &Arc<Message>) {
        let n = self.subs.deliver(m);
        self.counters.delivered.fetch_add(n, Ordering::Relaxed);
    }

    /// Sends each peer our digest, after dropping what expired.
    pub async fn sync_round(&self) {
        let gone = match self.retained.lock() {
            Ok(mut r) => r.expire(wall_ms()),
            Err(_) => return,
        };
        for g in gone {
            self.disk.delete(g).await;
        }
        for (id, _) in self.all_links() {
            self.sync_with(&id, Instant::now());
        }
    }
}

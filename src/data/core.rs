//! The data plane's decisions, as a pure state machine.
//!
//! [`DataCore`] holds what the data plane knows: the retained store, the last sequence
//! number taken from each publisher, our data links and each peer's announced
//! neighbours, what each peer last got from our anti-entropy, the clock, our sequence
//! numbers and the publish and per-peer rates. [`DataCore::handle`] takes one
//! [`DataInput`] (a link up or down, a frame from a peer, the sync tick, the expiry
//! deadline) and the time, and appends the [`DataAction`]s for the driver
//! (`driver.rs`) to carry out: queue a frame on links, deliver to local subscribers,
//! write to or delete from the disk. [`DataCore::publish`] does the same for an app's
//! message. There are no sockets, disk, tasks or tokio here, so every transition is
//! unit-tested in-process (`core/tests`).
//!
//! Time enters only through [`Now`]. [`DataCore::next_deadline`] is when the next
//! retained entry expires: the driver sleeps until that or its sync tick, whichever
//! comes first, instead of dropping expired entries only on the tick.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Arc,
    time::Instant,
};

use smallvec::SmallVec;
use tracing::{debug, info};

use super::{
    disk::SEQ_LEASE,
    hlc::{wall_ms, Hlc},
    origin::{self, OriginCheck, Provenance, Verdict},
    route::{forward_targets, Seen},
    store::{Applied, Gone, Retained},
    sync::{root_of, Sent},
    system::{Admission, Gate},
    wire::{Frame, Id, Message, Signed, MAX_HOPS},
};
use crate::ratelimit::{RateLog, TokenBucket};

/// The actions of one input, inline: a message's few actions cost no allocation.
pub type Actions = SmallVec<[DataAction; 4]>;

/// The time of an input: monotonic for rates and anti-entropy, wall (Unix ms) for the
/// clock and the retained entries' expiry.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub at: Instant,
    pub wall_ms: u64,
}

impl Now {
    pub fn current() -> Self {
        Now {
            at: Instant::now(),
            wall_ms: wall_ms(),
        }
    }
}

/// What happens to the data plane.
// A frame is the common input and lives on the reader's stack for one call: boxing it
// would cost an allocation per message to save a move of some 200 bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum DataInput {
    /// A data link to the peer is up (it may replace an older one).
    LinkUp(Id),
    /// The peer's data link ended and no newer one replaced it.
    LinkDown(Id),
    /// A frame read from the peer's stream.
    Frame { from: Id, frame: Frame },
    /// The anti-entropy tick (`--data-sync-interval`).
    SyncTick,
    /// [`DataCore::next_deadline`] passed.
    Deadline,
}

/// What the driver must do, in order.
#[derive(Debug, PartialEq)]
pub enum DataAction {
    /// Queue a control frame on the links to these peers (a peer without one is
    /// skipped).
    Send { to: Vec<Id>, frame: Frame },
    /// Queue a message on the links to these peers: another node's that we forward,
    /// or ours when only some peers may have it (subscribe rights).
    Forward { to: Vec<Id>, msg: Message },
    /// Queue a message of ours on every link.
    Broadcast(Arc<Message>),
    /// Hand a message to the matching local subscribers (tombstones too).
    Deliver(Arc<Message>),
    /// Write a retained entry to disk.
    Store(Message),
    /// Delete a retained entry's version from disk.
    Unstore(Gone),
    /// Reserve on disk the sequence numbers below this; wait for it before the
    /// actions that follow.
    Lease(u64),
    /// Count a refused message (peer rate, clock too far ahead, too large to keep).
    Reject,
    /// Count a message refused for its origin: from a third node, and not signed by
    /// its publisher (also counted as refused).
    Forged,
    /// Count a message from a third node taken without a signature (permissive).
    Unsigned,
    /// Count a message we signed.
    Signed,
    /// [`DataCore::next_deadline`] moved earlier.
    Rearm,
}

/// An app's message, already checked (topic, key, size, TTL) by the handle.
#[derive(Debug, Clone, Default)]
pub struct Local {
    pub topic: String,
    pub key: String,
    pub payload: bytes::Bytes,
    pub retain: bool,
    pub ttl_ms: u64,
    pub tombstone: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub seq: u64,
    pub hlc: u64,
}

/// The rates the core enforces.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// Messages per second the local apps may publish together.
    pub publish: u32,
    /// Messages per second taken from one peer.
    pub peer: u32,
}

/// What the core knows of one peer, across its connections.
#[derive(Debug)]
struct Peer {
    /// Its announced data neighbours (they got what it sent: no need to forward).
    neighbours: HashSet<Id>,
    /// `--max-peer-rate`: messages taken from it.
    rate: TokenBucket,
}

#[derive(Debug)]
pub struct DataCore {
    me: Id,
    rates: Rates,
    hlc: Hlc,
    /// Our next sequence number, and the end of its reservation on disk.
    next_seq: u64,
    lease_end: u64,
    publish_bucket: TokenBucket,
    retained: Retained,
    seen: Seen,
    /// The peers we hold a data link to: whom we forward to and sync with.
    links: BTreeSet<Id>,
    peers: HashMap<Id, Peer>,
    /// What each linked peer last got from our anti-entropy.
    synced: HashMap<Id, Sent>,
    /// What may arrive on the system topics (`_peat/`), and from whom.
    gate: Gate,
    /// Refusals for topic rights, logged at most every 10 s.
    rights_log: RateLog,
    /// Signing ours and checking others' origins (`origin.rs`).
    provenance: Provenance,
}

impl DataCore {
    /// A core over the entries read back from disk; `first_seq` is already reserved.
    pub fn new(
        me: Id,
        rates: Rates,
        max_retained_bytes: u64,
        loaded: Vec<Message>,
        first_seq: u64,
        now: Now,
    ) -> Self {
        let mut retained = Retained::new(max_retained_bytes);
        let mut hlc = Hlc::default();
        for m in loaded {
            let _ = hlc.observe_at(m.hlc, now.wall_ms);
            retained.apply(m, now.wall_ms);
        }
        DataCore {
            me,
            rates,
            hlc,
            next_seq: first_seq,
            lease_end: first_seq + SEQ_LEASE,
            publish_bucket: TokenBucket::per_second(rates.publish, now.at),
            retained,
            seen: Seen::default(),
            links: BTreeSet::new(),
            peers: HashMap::new(),
            synced: HashMap::new(),
            gate: Gate::default(),
            rights_log: RateLog::default(),
            provenance: Provenance::default(),
        }
    }

    /// Signs with `key` (our endpoint key: we publish as its public key), and takes
    /// messages from third nodes as `origins` says.
    pub fn with_signer(mut self, key: iroh::SecretKey, origins: OriginCheck) -> Self {
        self.me = *key.public().as_bytes();
        // Our own entries from a version that did not sign: signed now, so that
        // anti-entropy can serve them to strict nodes.
        self.retained
            .sign_unsigned_of(&self.me, |m| origin::sign(&key, m));
        self.provenance = Provenance::new(key, origins);
        self
    }

    /// Admits entries on system topics that `gate` admits (by default: none).
    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.gate = gate;
        self
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    pub fn set_gate(&mut self, gate: Gate) {
        self.gate = gate;
    }

    pub fn retained(&self) -> &Retained {
        &self.retained
    }

    pub fn rates(&self) -> Rates {
        self.rates
    }

    /// The peers we have a link to, each with the neighbour set it last announced.
    pub fn neighbours(&self) -> impl Iterator<Item = (&Id, Option<&HashSet<Id>>)> {
        self.links
            .iter()
            .map(|id| (id, self.peers.get(id).map(|p| &p.neighbours)))
    }

    /// When the next retained entry expires (Unix ms): the driver sends
    /// [`DataInput::Deadline`] then.
    pub fn next_deadline(&self) -> Option<u64> {
        self.retained.next_expiry()
    }

    /// Our next sequence number (a test sets it to reach the lease's renewal).
    #[cfg(test)]
    pub fn set_next_seq(&mut self, seq: u64) {
        self.next_seq = seq;
    }

    pub fn handle(&mut self, input: DataInput, now: Now, out: &mut Actions) {
        match input {
            DataInput::LinkUp(peer) => self.link_up(peer, now, out),
            DataInput::LinkDown(peer) => self.link_down(&peer, out),
            DataInput::Frame { from, frame } => self.on_frame(from, frame, now, out),
            DataInput::SyncTick => {
                self.expire(now, out);
                self.sync_round(now, out);
            }
            DataInput::Deadline => self.expire(now, out),
        }
    }

    /// An app's message: `None` when the host is over `--max-publish-rate`.
    pub fn publish(&mut self, l: Local, now: Now, out: &mut Actions) -> Option<Published> {
        self.publish_bucket.take(now.at).ok()?;
        let seq = self.take_seq(out);
        let mut m = Arc::new(Message {
            publisher: self.me,
            seq,
            hlc: self.hlc.now_at(now.wall_ms),
            hops: 0,
            topic: l.topic,
            key: l.key,
            payload: l.payload,
            retain: l.retain,
            ttl_ms: l.ttl_ms,
            tombstone: l.tombstone,
            sig: None,
        });
        if self.provenance.sign_if_it_may_travel(&mut m) {
            out.push(DataAction::Signed);
        }
        let published = Published { seq, hlc: m.hlc };
        self.send_ours(&m, out);
        if m.retain {
            self.retain(&m, now, out);
        }
        out.push(DataAction::Deliver(m));
        Some(published)
    }

    /// A message of ours to every peer that may have it: to every link, or, with an
    /// authority, to the peers whose certificates let them subscribe to its topic (by
    /// name, so that a link the core has not heard of yet gets nothing).
    fn send_ours(&self, m: &Arc<Message>, out: &mut Actions) {
        if !self.gate.limits_sending() {
            out.push(DataAction::Broadcast(m.clone()));
            return;
        }
        let to: Vec<Id> = self
            .links
            .iter()
            .filter(|id| self.gate.may_send(id, &m.topic))
            .copied()
            .collect();
        if !to.is_empty() {
            let msg = Message::clone(m);
            out.push(DataAction::Forward { to, msg });
        }
    }

    /// Whether a peer may forward our live messages, after links or announcements
    /// changed.
    fn update_forwardable(&mut self) {
        let announced = self
            .links
            .iter()
            .map(|id| self.peers.get(id).map(|p| &p.neighbours));
        let may = origin::may_be_forwarded(&self.me, &self.links, announced);
        self.provenance.set_forwardable(may);
    }

    /// Takes the next sequence number, renewing the reservation on disk halfway
    /// through, so a restart never reuses a number peers have seen.
    fn take_seq(&mut self, out: &mut Actions) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.reserve_past(seq, out);
        seq
    }

    fn reserve_past(&mut self, seq: u64, out: &mut Actions) {
        if seq + SEQ_LEASE / 2 < self.lease_end {
            return;
        }
        self.lease_end = seq + SEQ_LEASE;
        out.push(DataAction::Lease(self.lease_end));
    }

    fn peer(&mut self, id: Id, now: Now) -> &mut Peer {
        let rate = self.rates.peer;
        self.peers.entry(id).or_insert_with(|| Peer {
            neighbours: HashSet::new(),
            rate: TokenBucket::per_second(rate, now.at),
        })
    }

    fn link_up(&mut self, peer: Id, now: Now, out: &mut Actions) {
        self.links.insert(peer);
        self.update_forwardable();
        self.announce(out);
        self.send_digest(peer, now, out);
    }

    fn link_down(&mut self, peer: &Id, out: &mut Actions) {
        if !self.links.remove(peer) {
            return;
        }
        if let Some(p) = self.peers.get_mut(peer) {
            p.neighbours.clear();
        }
        self.synced.remove(peer);
        self.update_forwardable();
        self.announce(out);
    }

    /// Tells every peer our current neighbour set.
    fn announce(&self, out: &mut Actions) {
        if self.links.is_empty() {
            return;
        }
        let ids: Vec<Id> = self.links.iter().copied().collect();
        out.push(DataAction::Send {
            to: ids.clone(),
            frame: Frame::Neighbours(ids),
        });
    }

    fn on_frame(&mut self, from: Id, frame: Frame, now: Now, out: &mut Actions) {
        match frame {
            Frame::Neighbours(ids) => {
                self.peer(from, now).neighbours = ids.into_iter().collect();
                self.update_forwardable();
            }
            Frame::Msg(m) => {
                if self.peer(from, now).rate.take(now.at).is_err() {
                    out.push(DataAction::Reject);
                    return;
                }
                self.on_msg(from, m, now, out);
            }
            Frame::Digest(d) => self.on_digest(from, &d, out),
            Frame::Versions { buckets, versions } => {
                self.on_versions(from, &buckets, &versions, out)
            }
            Frame::Entries(ms) => self.on_entries(from, ms, now, out),
            // `wire::decode` hands these on as Msg and Entries already.
            Frame::Msg2(s) => self.on_frame(from, Frame::Msg(s.into_message()), now, out),
            Frame::Entries2(ss) => {
                let ms = ss.into_iter().map(Signed::into_message).collect();
                self.on_entries(from, ms, now, out)
            }
            Frame::Root(theirs) => {
                if root_of(&self.retained.digest()) != theirs {
                    self.send_digest(from, now, out);
                }
            }
        }
    }

    /// A live message: dropped if ours, from a clock too far ahead or already seen;
    /// else forwarded where the sender did not reach, kept if retained, delivered.
    fn on_msg(&mut self, from: Id, m: Message, now: Now, out: &mut Actions) {
        if m.publisher == self.me {
            return;
        }
        if !self.gate_passes(&from, &m, now, out) || !self.origin_passes(&from, &m, now, out) {
            return;
        }
        if let Err(e) = self.hlc.observe_at(m.hlc, now.wall_ms) {
            out.push(DataAction::Reject);
            debug!(peer = %hex::encode(&from[..5]), error = %e, "message refused");
            return;
        }
        if !self.seen.accept(&m.publisher, m.seq) {
            return;
        }
        if m.hops < MAX_HOPS {
            self.forward(&from, &m, out);
        }
        if m.retain {
            self.retain(&m, now, out);
        }
        out.push(DataAction::Deliver(Arc::new(m)));
    }

    fn forward(&self, from: &Id, m: &Message, out: &mut Actions) {
        let to = match self.peers.get(from) {
            Some(p) => forward_targets(self.links.iter(), from, &p.neighbours, &m.publisher),
            None => forward_targets(self.links.iter(), from, &HashSet::new(), &m.publisher),
        };
        let to: Vec<Id> = to
            .into_iter()
            .filter(|id| self.gate.may_send(id, &m.topic))
            .collect();
        if to.is_empty() {
            return;
        }
        let mut msg = m.clone();
        msg.hops += 1;
        out.push(DataAction::Forward { to, msg });
    }

    /// Whether `m`, sent by `from`, passes the gate; a refusal is counted (`rejected`)
    /// and, for a member publishing outside its rights, logged at a bounded rate.
    fn gate_passes(&mut self, from: &Id, m: &Message, now: Now, out: &mut Actions) -> bool {
        let admission = self.gate.admits(m);
        if admission == Admission::Admit {
            return true;
        }
        out.push(DataAction::Reject);
        let peer = hex::encode(&from[..5]);
        if admission == Admission::OutsideRights {
            if let Some(suppressed) = self.rights_log.hit(now.at) {
                info!(%peer, topic = %m.topic, suppressed, "message refused: the publisher's member certificate does not allow this topic");
            }
        } else {
            debug!(%peer, topic = %m.topic, ?admission, "message refused");
        }
        false
    }

    fn origin_passes(&mut self, from: &Id, m: &Message, now: Now, out: &mut Actions) -> bool {
        match self.provenance.judge(from, m, now.at) {
            Verdict::Proven => true,
            Verdict::Unsigned => {
                out.push(DataAction::Unsigned);
                true
            }
            Verdict::Refused => {
                out.push(DataAction::Forged);
                false
            }
        }
    }

    /// Merges a retained entry; true if it was newer (then it goes to disk).
    fn retain(&mut self, m: &Message, now: Now, out: &mut Actions) -> bool {
        let before = self.retained.next_expiry();
        match self.retained.apply(m.clone(), now.wall_ms) {
            Applied::Stored { evicted } => {
                out.push(DataAction::Store(m.clone()));
                if !evicted.is_empty() {
                    info!(
                        entries = evicted.len(),
                        "retained store full; evicted the oldest entries"
                    );
                }
                out.extend(evicted.into_iter().map(DataAction::Unstore));
                let after = self.retained.next_expiry();
                if after.is_some_and(|a| before.is_none_or(|b| a < b)) {
                    out.push(DataAction::Rearm);
                }
                true
            }
            Applied::TooLarge => {
                out.push(DataAction::Reject);
                false
            }
            Applied::Signed => {
                // The same version, now with its signature: kept, not news.
                out.push(DataAction::Store(m.clone()));
                false
            }
            Applied::Stale | Applied::Expired => false,
        }
    }

    /// Retained entries pushed by anti-entropy: kept if newer, and delivered if new to
    /// us (a live copy may have come first).
    fn on_entries(&mut self, from: Id, entries: Vec<Message>, now: Now, out: &mut Actions) {
        for m in entries {
            // A copy of what we hold (the second peer's answer to the same digest) is
            // dropped before its signature costs a check.
            if self.retained.holds(&m) {
                continue;
            }
            if !self.gate_passes(&from, &m, now, out) || !self.origin_passes(&from, &m, now, out) {
                continue;
            }
            if self.hlc.observe_at(m.hlc, now.wall_ms).is_err() {
                out.push(DataAction::Reject);
                continue;
            }
            if m.publisher == self.me && m.seq >= self.next_seq {
                // Our own entry from a lost past (a wiped store): skip our sequence past it.
                self.next_seq = m.seq + 1;
                self.reserve_past(m.seq + 1, out);
            }
            if self.retain(&m, now, out) {
                let fresh = self.seen.accept(&m.publisher, m.seq);
                if fresh && m.publisher != self.me {
                    out.push(DataAction::Deliver(Arc::new(m)));
                }
            }
        }
    }

    /// Drops what expired by now.
    fn expire(&mut self, now: Now, out: &mut Actions) {
        out.extend(
            self.retained
                .expire(now.wall_ms)
                .into_iter()
                .map(DataAction::Unstore),
        );
    }
}

mod anti_entropy;
#[cfg(test)]
mod tests;

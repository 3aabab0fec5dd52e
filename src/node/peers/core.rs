//! The peer manager's decisions, as a pure state machine.
//!
//! [`Core::handle`] takes one [`Input`] (a discovery event, a request, a finished dial,
//! a connection that came in or ended, a tick) and the time, updates the table and
//! returns the [`Action`]s for the driver to carry out: dial, close, watch a
//! connection, emit an event, answer a caller. It does no I/O and spawns nothing, so
//! every transition is unit-tested in-process (see `tests.rs`). Time only enters
//! through `now`; [`Core::next_deadline`] tells the driver when to tick next, instead
//! of a timer per peer.
//!
//! The rest of the core lives beside this file by concept: `schedule.rs` (whom to dial
//! and when), `links.rs` (connections coming and going), `dups.rs` (two connections
//! to one peer).

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use iroh::{endpoint::ConnectionError, EndpointId};
use tracing::{debug, info, warn};

use super::{
    dead::DeadAddrs,
    evict::eviction_victim,
    fair::Ranges,
    row::{ConnId, Link, NewConn, Peer, Ticket},
    rules::{first_dial_delay, DialTimeouts, LinkRtt, API_PEER_TTL},
    types::{Counters, DialError, Limits, RequestError},
};
use crate::{
    events::{DiscoveryEvent, PeerEventKind, Source},
    node::formation::{CloseCode, FormationError},
    node::PeerHost,
    ratelimit::{RateLog, TokenBucket},
    trust::Refusal,
};

/// How often the driver ticks while a due dial waits for a slot, a token or room.
pub(super) const BLOCKED_TICK: Duration = Duration::from_millis(100);

/// What happens to the manager.
#[derive(Debug)]
pub(super) enum Input {
    /// A source found or lost a peer: the event as the source sent it.
    Discovery(DiscoveryEvent),
    /// ConnectPeer: answered when the dial ends (at once if connected).
    Connect {
        id: EndpointId,
        hosts: Vec<PeerHost>,
        ticket: Ticket,
    },
    /// DisconnectPeer: answered at once.
    Disconnect { id: EndpointId, ticket: Ticket },
    /// ForgetPeer: answered at once.
    Forget { id: EndpointId, ticket: Ticket },
    /// `id`'s member certificate no longer holds (revoked, or ended): close what we
    /// hold to it.
    Void { id: EndpointId, refusal: Refusal },
    /// A ConnectPeer caller gave up: its ticket no longer pins the row.
    Abandoned { ticket: Ticket },
    /// A dial ended; on success the driver holds the connection under the id.
    DialDone {
        id: EndpointId,
        result: Result<NewConn, DialError>,
    },
    /// An incoming connection passed the formation check.
    Incoming { id: EndpointId, conn: NewConn },
    /// An incoming connection from `id` failed the formation check.
    IncomingFailed {
        id: EndpointId,
        error: FormationError,
    },
    /// A watched connection ended.
    Closed {
        id: EndpointId,
        conn: ConnId,
        reason: ConnectionError,
    },
    /// Time passed: dial what is due.
    Tick,
    /// Close every connection and answer every caller.
    Shutdown,
}

/// What the driver must do.
#[derive(Debug, PartialEq)]
pub(super) enum Action {
    /// Resolve `hosts`, connect to `addrs`, run the formation check, and report
    /// [`Input::DialDone`], within `timeout`.
    Dial {
        id: EndpointId,
        addrs: Vec<SocketAddr>,
        hosts: Vec<PeerHost>,
        timeout: DialTimeouts,
    },
    /// Close a connection (the driver forgets it).
    Close { conn: ConnId, code: CloseCode },
    /// Close a connection after `after` unless it ends before (`--max-peers`).
    CloseAfter {
        conn: ConnId,
        code: CloseCode,
        after: Duration,
    },
    /// Route the peer's streams on an installed connection and report
    /// [`Input::Closed`] when it ends. `announce`: tell the protocols (gossip, data,
    /// liveness) of it; not for a standby (see `dups.rs`).
    Watch {
        id: EndpointId,
        conn: ConnId,
        announce: bool,
    },
    /// A watched standby became the live connection: tell the protocols of it.
    Announce { id: EndpointId, conn: ConnId },
    /// Broadcast a peer event.
    Emit {
        id: EndpointId,
        kind: PeerEventKind,
        detail: String,
    },
    /// Answer a caller.
    Answer { ticket: Ticket, answer: Answer },
}

/// An answer to a ConnectPeer or DisconnectPeer caller.
#[derive(Debug)]
pub(super) enum Answer {
    /// Connected; the driver sends the row's snapshot.
    Connected(EndpointId),
    /// Done (DisconnectPeer).
    Done,
    Failed(RequestError),
}

impl PartialEq for Answer {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Answer::Connected(a), Answer::Connected(b)) => a == b,
            (Answer::Done, Answer::Done) => true,
            (Answer::Failed(a), Answer::Failed(b)) => a.to_string() == b.to_string(),
            _ => false,
        }
    }
}

/// One rate-limited log per limit the manager enforces.
#[derive(Debug, Default)]
pub(super) struct LimitLogs {
    pub table_full: RateLog,
    pub evicted: RateLog,
    pub concurrent: RateLog,
    pub budget: RateLog,
    pub over_capacity: RateLog,
}

pub(super) struct Core {
    pub(super) me: EndpointId,
    pub(super) limits: Limits,
    pub(super) peers: HashMap<EndpointId, Peer>,
    pub(super) counters: Arc<Counters>,
    pub(super) dials_in_flight: usize,
    pub(super) dial_budget: TokenBucket,
    pub(super) dead: DeadAddrs,
    /// Addresses that dials in flight are trying, with the number of such dials.
    pub(super) in_flight_addrs: HashMap<SocketAddr, u32>,
    pub(super) logs: LimitLogs,
    /// Round trips seen on this node's connections: how slow its links are.
    pub(super) link_rtt: LinkRtt,
    /// The turns and shares of address ranges among unproven peers.
    pub(super) ranges: Ranges,
    /// Actions decided by the input being handled.
    pub(super) out: Vec<Action>,
}

impl Core {
    pub fn new(me: EndpointId, limits: Limits, counters: Arc<Counters>, now: Instant) -> Self {
        let dial_budget = TokenBucket::per_second(limits.max_dials_per_sec, now);
        Core {
            me,
            limits,
            peers: HashMap::new(),
            counters,
            dials_in_flight: 0,
            dial_budget,
            dead: DeadAddrs::default(),
            in_flight_addrs: HashMap::new(),
            logs: LimitLogs::default(),
            link_rtt: LinkRtt::default(),
            ranges: Ranges::default(),
            out: Vec::new(),
        }
    }

    /// Adds a `--peer` entry before the manager starts.
    pub fn add_static(&mut self, id: EndpointId, host: PeerHost, now: Instant) {
        if id == self.me {
            warn!(peer = %id, "ignoring --peer entry with this sidecar's own endpoint id");
            return;
        }
        let peer = self.peers.entry(id).or_insert_with(|| Peer::new(now));
        peer.add_source(Source::Static);
        peer.add_host(host);
    }

    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        match input {
            Input::Discovery(DiscoveryEvent::Found {
                id,
                addrs,
                source,
                unaware,
            }) => self.on_found(id, addrs, source, unaware, now),
            Input::Discovery(DiscoveryEvent::Lost { id, source }) => self.on_lost(id, source),
            Input::Connect { id, hosts, ticket } => self.on_connect(id, hosts, ticket, now),
            Input::Disconnect { id, ticket } => self.on_disconnect(id, ticket),
            Input::Forget { id, ticket } => self.on_forget(id, ticket),
            Input::Void { id, refusal } => self.on_void(id, refusal, now),
            Input::Abandoned { ticket } => self.on_abandoned(ticket),
            Input::DialDone { id, result } => self.on_dial_done(id, result, now),
            Input::Incoming { id, conn } => self.install(id, conn, false, now),
            Input::IncomingFailed { id, error } => self.on_incoming_failed(id, error, now),
            Input::Closed { id, conn, reason } => self.on_closed(id, conn, &reason, now),
            Input::Tick => {
                self.expire(now);
                self.expire_standbys(now);
                self.dial_due(now);
            }
            Input::Shutdown => self.shutdown(),
        }
        std::mem::take(&mut self.out)
    }

    /// When the driver must send the next [`Input::Tick`]: the earliest retry time,
    /// or soon if a due dial is held back by a limit. None: nothing is waiting.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let retry = self.peers.values().filter_map(|p| p.retry_at()).min();
        let retry = retry.map(|t| if t <= now { now + BLOCKED_TICK } else { t });
        // A row past its expiry that a dial or a caller still holds expires at a later
        // tick: never a deadline in the past, which would spin the driver.
        let expiry = self.peers.values().filter_map(|p| p.expires_at).min();
        let expiry = expiry.map(|t| t.max(now + BLOCKED_TICK));
        let standby = self.standby_deadline().map(|t| t.max(now));
        retry.into_iter().chain(expiry).chain(standby).min()
    }

    pub(super) fn emit(&mut self, id: EndpointId, kind: PeerEventKind, detail: impl Into<String>) {
        self.out.push(Action::Emit {
            id,
            kind,
            detail: detail.into(),
        });
    }

    pub(super) fn answer(&mut self, ticket: Ticket, answer: Answer) {
        self.out.push(Action::Answer { ticket, answer });
    }

    pub(super) fn close(&mut self, conn: ConnId, code: CloseCode) {
        self.out.push(Action::Close { conn, code });
    }

    /// Makes room for one more peer; see [`eviction_victim`]. `proven`: the newcomer
    /// has shown it is real (an inbound connection, ConnectPeer); a record nobody
    /// vouched for never takes a proven peer's place. False if nothing can be evicted.
    pub(super) fn make_room(&mut self, proven: bool, now: Instant) -> bool {
        if self.peers.len() < self.limits.max_known_peers {
            return true;
        }
        let Some(id) = eviction_victim(&self.peers, &self.dead, proven, now) else {
            return false;
        };
        self.peers.remove(&id);
        Counters::inc(&self.counters.peers_evicted);
        debug!(peer = %id, "peer table full: evicted");
        self.emit(id, PeerEventKind::Removed, "evicted: peer table full");
        if let Some(suppressed) = self.logs.evicted.hit(now) {
            warn!(
                peer = %id,
                max_known_peers = self.limits.max_known_peers,
                evicted_total = self.counters.peers_evicted.load(Ordering::Relaxed),
                suppressed,
                "peer table full: evicted an unconnected entry (a flood of announcements?)"
            );
        }
        true
    }

    /// The row for `id`, made (evicting another if the table is full) if absent.
    /// `proven`: as for [`Core::make_room`].
    pub(super) fn row_or_make(
        &mut self,
        id: EndpointId,
        proven: bool,
        now: Instant,
    ) -> Option<&mut Peer> {
        if !self.peers.contains_key(&id) {
            if !self.make_room(proven, now) {
                return None;
            }
            self.peers.insert(id, Peer::new(now));
        }
        self.peers.get_mut(&id)
    }

    pub(super) fn warn_full(&mut self, now: Instant) {
        if let Some(suppressed) = self.logs.table_full.hit(now) {
            warn!(
                max_known_peers = self.limits.max_known_peers,
                suppressed,
                "peer table full and every entry is connected or configured; ignoring newly discovered peers (raise --max-known-peers)"
            );
        }
    }

    fn on_found(
        &mut self,
        id: EndpointId,
        addrs: BTreeSet<SocketAddr>,
        source: Source,
        unaware: bool,
        now: Instant,
    ) {
        if id == self.me {
            Counters::inc(&self.counters.self_discoveries_ignored);
            return;
        }
        let me = self.me;
        let known = self.peers.contains_key(&id);
        let Some(peer) = self.row_or_make(id, false, now) else {
            self.warn_full(now);
            return;
        };
        let new_source = peer.add_source(source);
        let gone = peer.note_source_addrs(source, &addrs);
        let remote = peer.live().and_then(|l| l.remote);
        let moved = remote.is_some_and(|r| gone.contains(&r)) && !addrs.is_empty();
        if !gone.is_empty() {
            let gone = crate::logfmt::list(&gone);
            info!(peer = %id, %source, %gone, "peer no longer announces these addresses; dropped");
        }
        let new_addrs = peer.add_addrs(addrs);
        let new_info = new_source || new_addrs;
        let at_once = peer.configured() || unaware;
        if new_source {
            let addrs = crate::logfmt::list(&peer.addrs);
            info!(peer = %id, %source, %addrs, "peer found");
        }
        match peer.link {
            // Found again: an earlier DisconnectPeer no longer holds.
            Link::Paused if new_info => {
                peer.link = Link::Idle {
                    retry_at: now + first_dial_delay(&me, &id, at_once),
                }
            }
            // New information: try now instead of waiting out the backoff; for a known
            // row never later than planned (a second mDNS resolution, with the IPv6
            // address, must not restart the larger id's tie-break).
            Link::Idle { retry_at } if new_info && peer.dial.is_none() => {
                let soon = now + first_dial_delay(&me, &id, at_once);
                peer.link = Link::Idle {
                    retry_at: if known { retry_at.min(soon) } else { soon },
                }
            }
            _ => {}
        }
        if new_source {
            self.emit(id, PeerEventKind::Found, format!("source {source}"));
        }
        if moved {
            self.follow_move(id, now);
        }
        // Not this peer's dial alone: the best due peer gets the slot and the token
        // (during a flood, the next record is most likely another fake).
        self.dial_due(now);
    }

    fn on_lost(&mut self, id: EndpointId, source: Source) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if !peer.sources.remove(&source) {
            return;
        }
        let connected = peer.is_connected();
        info!(peer = %id, %source, connected, "peer lost by {source}");
        self.emit(id, PeerEventKind::Lost, format!("source {source}"));
        self.remove_if_orphan(id);
    }

    /// A peer that no source knows and that is not connected has nothing left to say.
    pub(super) fn remove_if_orphan(&mut self, id: EndpointId) {
        if self.peers.get(&id).is_some_and(|p| p.orphan()) {
            self.peers.remove(&id);
            debug!(peer = %id, "peer removed from the table: no source knows it");
            self.emit(id, PeerEventKind::Removed, "no source knows it");
        }
    }

    fn on_connect(&mut self, id: EndpointId, hosts: Vec<PeerHost>, ticket: Ticket, now: Instant) {
        if id == self.me {
            return self.answer(ticket, Answer::Failed(RequestError::SelfConnect));
        }
        if !self.peers.contains_key(&id) && hosts.is_empty() {
            return self.answer(ticket, Answer::Failed(RequestError::NoAddress(id)));
        }
        let full = self.limits.max_known_peers;
        let Some(peer) = self.row_or_make(id, true, now) else {
            return self.answer(ticket, Answer::Failed(RequestError::TableFull(full)));
        };
        peer.add_source(Source::Api);
        if !peer.ever_connected {
            peer.expires_at = Some(now + API_PEER_TTL);
        }
        for h in hosts {
            peer.add_host(h);
        }
        if peer.is_connected() {
            return self.answer(ticket, Answer::Connected(id));
        }
        // An operator asked: try now, also a paused or rejected peer (the key may have
        // been fixed).
        peer.link = Link::Idle { retry_at: now };
        peer.tickets.push(ticket);
        self.try_dial(id, now);
    }

    fn on_disconnect(&mut self, id: EndpointId, ticket: Ticket) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return self.answer(ticket, Answer::Failed(RequestError::NotFound(id)));
        };
        let live = peer.live().copied();
        peer.link = Link::Paused;
        if let Some(live) = live {
            self.close(live.conn, CloseCode::Disconnect);
            Counters::inc(&self.counters.connections_closed);
        }
        self.close_standby(id, CloseCode::Disconnect);
        info!(peer = %id, "disconnected by request; no redial until the peer is found or connected again");
        self.emit(id, PeerEventKind::Disconnected, "disconnected by request");
        self.answer(ticket, Answer::Done);
    }

    /// A peer's certificate no longer holds: its connections close with the reason's
    /// code, so its log says why. Revoked: it waits out a rejection's backoff, and the
    /// formation check refuses it from now on, whoever dials. Ended: a live connection
    /// closes and is redialled at once, so a certificate renewed in time gets straight
    /// back in and one that was not is refused by the check.
    fn on_void(&mut self, id: EndpointId, refusal: Refusal, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let live = peer.live().copied();
        if refusal == Refusal::Revoked {
            peer.link = Link::Rejected {
                retry_at: now + crate::node::backoff::REJECTED,
            };
        } else if live.is_some() {
            peer.link = Link::Idle { retry_at: now };
        } else {
            return;
        }
        let code = CloseCode::of_refusal(refusal);
        if let Some(live) = live {
            self.close(live.conn, code);
            Counters::inc(&self.counters.connections_closed);
        }
        self.close_standby(id, code);
        let reason = refusal.describe();
        warn!(peer = %id, connected = live.is_some(), reason, "member certificate no longer valid: connections closed");
        self.emit(id, PeerEventKind::Rejected, reason);
    }

    /// ForgetPeer: the row goes (a configured `--peer` stays), its connection is
    /// closed as by DisconnectPeer, and nothing redials it until a source finds it
    /// again.
    fn on_forget(&mut self, id: EndpointId, ticket: Ticket) {
        let Some(peer) = self.peers.get(&id) else {
            return self.answer(ticket, Answer::Failed(RequestError::NotFound(id)));
        };
        if peer.sources.contains(&Source::Static) {
            return self.answer(ticket, Answer::Failed(RequestError::Configured(id)));
        }
        self.remove(id, "forgotten by request");
        info!(peer = %id, "forgotten by request");
        self.answer(ticket, Answer::Done);
    }

    /// Drops the rows that only ConnectPeer knew and that never connected within
    /// [`API_PEER_TTL`].
    fn expire(&mut self, now: Instant) {
        let expired: Vec<EndpointId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.expired(now))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            info!(peer = %id, ttl_secs = API_PEER_TTL.as_secs(), "ConnectPeer target never connected; forgetting it");
            self.remove(id, "expired: never connected after ConnectPeer");
        }
    }

    /// Removes a row whatever its state: closes its connection, releases its dial's
    /// addresses (the dial's own end is counted when it reports) and fails its callers.
    fn remove(&mut self, id: EndpointId, why: &str) {
        self.close_standby(id, CloseCode::Disconnect);
        let Some(peer) = self.peers.remove(&id) else {
            return;
        };
        if let Some(live) = peer.live() {
            self.close(live.conn, CloseCode::Disconnect);
            Counters::inc(&self.counters.connections_closed);
        }
        if let Some(range) = peer.fair_slot {
            self.ranges.untried_ended(range);
        }
        self.release_addrs(peer.dial.unwrap_or_default());
        for t in peer.tickets {
            self.answer(t, Answer::Failed(RequestError::Forgotten(id)));
        }
        self.emit(id, PeerEventKind::Removed, why);
    }

    fn on_abandoned(&mut self, ticket: Ticket) {
        for p in self.peers.values_mut() {
            p.tickets.retain(|t| *t != ticket);
        }
    }

    fn shutdown(&mut self) {
        let mut n = 0;
        let mut closes = Vec::new();
        let mut tickets = Vec::new();
        for peer in self.peers.values_mut() {
            if let Some(live) = peer.live() {
                closes.push(live.conn);
                n += 1;
            }
            closes.extend(peer.standby.take().map(|s| s.conn.conn));
            tickets.append(&mut peer.tickets);
        }
        for conn in closes {
            self.close(conn, CloseCode::Shutdown);
        }
        for t in tickets {
            self.answer(t, Answer::Failed(RequestError::ShuttingDown));
        }
        info!(connections = n, "closed all peer connections");
    }
}

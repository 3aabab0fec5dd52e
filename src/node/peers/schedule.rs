//! Whom the core dials, when, and what a finished dial changes.
//!
//! Dials are bounded three ways: `--max-concurrent-dials` in flight, a token bucket of
//! `--max-dials-per-sec`, and under `--max-peers` a dial target (see
//! [`dial_target`]). When dials are scarce (a flood of discovered peers), proven peers
//! go first and unproven ones take turns by address range (see [`Core::dial_order`]):
//! a burst of unreachable fakes cannot starve a real peer found at the same time.

use std::{
    collections::hash_map::Entry,
    time::{Duration, Instant},
};

use iroh::EndpointId;
use tracing::{debug, info, warn};

use super::{
    core::{Action, Answer, Core},
    fair::{range_of, range_share, Range},
    row::{Link, NewConn, Peer},
    rules::dial_target,
    types::{Counters, DialError, RequestError},
};
use crate::{events::PeerEventKind, node::backoff, node::formation::CloseCode};

/// A due peer's place in the dial order; see [`Core::dial_order`].
type DialKey = (u8, u8, Option<Instant>, u32, std::cmp::Reverse<Instant>);

/// What [`Core::held_back`] needs to know of a peer.
#[derive(Clone, Copy)]
struct DialCase {
    configured: bool,
    proven: bool,
    rank: u8,
    range: Option<Range>,
}

/// After closing a connection whose peer moved, how long before the redial: iroh
/// must have dropped the closed connection's path first (see [`Core::follow_move`]).
const MOVE_REDIAL_DELAY: Duration = Duration::from_millis(100);

impl Core {
    pub(super) fn connected_count(&self) -> usize {
        self.peers.values().filter(|p| p.is_connected()).count()
    }

    pub(super) fn at_capacity(&self) -> bool {
        self.limits.max_peers > 0 && self.connected_count() >= self.limits.max_peers
    }

    /// Whether a discovered (not configured) peer may be dialled now; see
    /// [`dial_target`]. Dials in flight count too: otherwise a node with few
    /// connections would start a dial to every due peer in one tick, and all of them
    /// would succeed.
    fn may_dial_discovered(&self) -> bool {
        self.limits.max_peers == 0
            || self.connected_count() + self.dials_in_flight < dial_target(self.limits.max_peers)
    }

    /// Starts dials for every peer whose time has come, best first: see
    /// [`Core::dial_order`].
    pub(super) fn dial_due(&mut self, now: Instant) {
        // Cheap when nothing can start (a flood calls this for every record).
        if self.dials_in_flight >= self.limits.max_concurrent_dials
            || self.dial_budget.available(now) == 0
        {
            return;
        }
        let mut due: Vec<(DialKey, EndpointId)> = self
            .peers
            .iter()
            .filter_map(|(id, p)| Some((self.dial_order(p, p.due_since(now)?, now), *id)))
            .collect();
        due.sort_unstable();
        for (_, id) in due {
            if self.dials_in_flight >= self.limits.max_concurrent_dials
                || self.dial_budget.available(now) == 0
            {
                break;
            }
            self.try_dial(id, now);
        }
    }

    /// A due peer's place in the dial order, smallest first:
    ///
    /// 1. proof ([`Peer::tier`]): peers an operator named, then peers that connected
    ///    once, then records nobody vouched for;
    /// 2. how likely a spoof ([`Core::rank`]): a peer at an untried address before
    ///    one whose addresses a dial is trying, before a suspect (every address dead);
    /// 3. among unproven peers, the turn of their address range ([`super::fair`]):
    ///    the range served longest ago (or never) first, so a real peer at its own
    ///    address does not queue behind thousands of fakes from one range;
    /// 4. fewest failures, then the newest: after a flood the table is full of
    ///    untried entries, and the oldest are the ones eviction takes anyway.
    fn dial_order(&self, p: &Peer, due: Instant, now: Instant) -> DialKey {
        let tier = p.tier();
        let turn = if tier == 2 {
            self.ranges.last_served(range_of(&p.addrs))
        } else {
            None
        };
        (
            tier,
            self.rank(p, now),
            turn,
            p.backoff.failures(),
            std::cmp::Reverse(due),
        )
    }

    /// How likely a peer is a spoof, for the dial order: 0 for a peer with an address
    /// nobody tried yet (or a configured or once-connected one), 1 for a doubtful peer
    /// whose addresses a dial is trying right now (whether they are dead is about to be
    /// known), 2 for a suspect (every address dead).
    fn rank(&self, p: &Peer, now: Instant) -> u8 {
        if p.suspect(&self.dead, now) {
            2
        } else if p.doubtful()
            && p.addrs
                .iter()
                .all(|a| self.dead.contains(a, now) || self.in_flight_addrs.contains_key(a))
        {
            1
        } else {
            0
        }
    }

    /// Whether a limit holds back a dial to this peer now; logs the limit it hit.
    fn held_back(&mut self, p: DialCase, now: Instant) -> bool {
        if self.dials_in_flight >= self.limits.max_concurrent_dials {
            if let Some(suppressed) = self.logs.concurrent.hit(now) {
                info!(
                    max_concurrent_dials = self.limits.max_concurrent_dials,
                    suppressed,
                    "--max-concurrent-dials reached; further dials wait for a free slot"
                );
            }
            return true;
        }
        if !p.configured && !self.may_dial_discovered() {
            return true; // a slot may free up
        }
        // Likely a spoof: keep the last token, and the last dial slot, for a peer at an
        // untried address. During a flood every slot can be held by a dial to a fake
        // that only ends at its timeout, and a real peer found meanwhile would wait.
        if p.rank > 0
            && (self.dial_budget.available(now) < 2
                || (self.limits.max_concurrent_dials > 1
                    && self.dials_in_flight + 1 >= self.limits.max_concurrent_dials))
        {
            return true;
        }
        // Fakes at fresh addresses in one range: they leave a slot for another range
        // (and for proven peers, which this does not bound).
        if !p.proven
            && p.rank == 0
            && self.ranges.untried(p.range) >= range_share(self.limits.max_concurrent_dials)
        {
            return true;
        }
        if self.dial_budget.take(now).is_err() {
            if let Some(suppressed) = self.logs.budget.hit(now) {
                info!(
                    max_dials_per_sec = self.limits.max_dials_per_sec,
                    suppressed, "--max-dials-per-sec reached; further dials wait"
                );
            }
            return true;
        }
        false
    }

    /// A connected peer moved: its connection's address is gone from its own
    /// announcement, so the connection sits on a dead path until the idle timeout.
    /// Close it and dial the new addresses at once. Not a dial beside the old
    /// connection: iroh sends a new connection's handshake over the selected path of
    /// an existing one (the dead address), and only picks among all known addresses
    /// once the last connection to the peer is gone. The short delay lets iroh see it
    /// gone. The peer keeps its half until our dial arrives and replaces it (the newer
    /// connection wins, see [`super::rules::survivor`]) or its idle timeout.
    pub(super) fn follow_move(&mut self, id: EndpointId, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(live) = peer.live().copied() else {
            return;
        };
        peer.link = Link::Idle {
            retry_at: now + MOVE_REDIAL_DELAY,
        };
        let why = "the peer moved to another address";
        peer.last_error = Some(why.to_string());
        info!(peer = %id, "peer's address moved; reconnecting to its new addresses");
        Counters::inc(&self.counters.connections_closed);
        self.close(live.conn, CloseCode::Duplicate);
        self.close_standby(id, CloseCode::Duplicate);
        self.emit(id, PeerEventKind::Disconnected, why);
    }

    /// Dials `id` if it is due and no limit holds it back; otherwise the next tick
    /// tries again.
    pub(super) fn try_dial(&mut self, id: EndpointId, now: Instant) {
        let Some(p) = self.peers.get(&id) else { return };
        if p.due_since(now).is_none() || (p.addrs.is_empty() && p.hosts.is_empty()) {
            return;
        }
        let case = DialCase {
            configured: p.configured(),
            proven: p.proven(),
            rank: self.rank(p, now),
            range: range_of(&p.addrs),
        };
        if self.held_back(case, now) {
            return;
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if let (false, Some(range)) = (case.proven, case.range) {
            let untried = case.rank == 0;
            self.ranges.started(range, untried, now);
            peer.fair_slot = untried.then_some(range);
        }
        let addrs: Vec<_> = peer.addrs.iter().copied().collect();
        for a in &addrs {
            *self.in_flight_addrs.entry(*a).or_default() += 1;
        }
        peer.dial = Some(addrs.clone());
        self.dials_in_flight += 1;
        Counters::inc(&self.counters.dials_started);
        debug!(peer = %id, addrs = %crate::logfmt::list(&addrs), "dialling");
        let action = Action::Dial {
            id,
            hosts: peer.hosts.iter().cloned().collect(),
            timeout: peer.dial_timeouts(self.link_rtt.get()),
            addrs,
        };
        let detail = format!("{} addresses", peer.addrs.len());
        self.out.push(action);
        self.emit(id, PeerEventKind::Connecting, detail);
    }

    /// A connected peer at one of `addrs`: who answered a dial that expected another.
    fn known_at(&self, addrs: &[std::net::SocketAddr]) -> Option<EndpointId> {
        let ips: Vec<_> = addrs.iter().map(|a| (a.ip(), a.port())).collect();
        self.peers
            .iter()
            .filter(|(_, p)| p.is_connected())
            .find(|(_, p)| {
                let remote = p.live().and_then(|l| l.remote);
                p.addrs
                    .iter()
                    .chain(remote.as_ref())
                    .any(|a| ips.contains(&(a.ip(), a.port())))
            })
            .map(|(id, _)| *id)
    }

    /// The addresses a dial no longer tries.
    pub(super) fn release_addrs(&mut self, addrs: Vec<std::net::SocketAddr>) {
        for a in addrs {
            if let Entry::Occupied(mut e) = self.in_flight_addrs.entry(a) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
    }

    pub(super) fn on_dial_done(
        &mut self,
        id: EndpointId,
        result: Result<NewConn, DialError>,
        now: Instant,
    ) {
        self.dials_in_flight = self.dials_in_flight.saturating_sub(1);
        let Some(peer) = self.peers.get_mut(&id) else {
            if let Ok(conn) = result {
                // Removed while dialling: nobody wants this connection.
                self.close(conn.id, CloseCode::Shutdown);
            }
            return;
        };
        let dialed = peer.dial.take();
        if let Some(range) = peer.fair_slot.take() {
            self.ranges.untried_ended(range);
        }
        self.release_addrs(dialed.unwrap_or_default());
        match result {
            Ok(conn) => self.install(id, conn, true, now),
            Err(e) => self.on_dial_failed(id, e, now),
        }
        // A freed slot may let a waiting dial go.
        self.dial_due(now);
    }

    fn on_dial_failed(&mut self, id: EndpointId, mut e: DialError, now: Instant) {
        Counters::inc(&self.counters.dials_failed);
        Counters::inc(&self.counters.dial_failures[e.reason()]);
        if let DialError::OtherIdentity { addrs, known, .. } = &mut e {
            *known = self.known_at(addrs);
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.is_connected() {
            // The peer's own dial won meanwhile: this failure says nothing.
            debug!(peer = %id, error = %e, "dial failed, but the peer is connected");
            return;
        }
        if e.is_unreachable() && !peer.ever_connected && !peer.configured() {
            for a in &peer.addrs {
                self.dead.insert(*a, now);
            }
        }
        let rejection = e.is_rejection();
        let delay = if rejection {
            Counters::inc(&self.counters.handshakes_rejected);
            backoff::REJECTED
        } else {
            peer.backoff.next_delay()
        };
        peer.last_error = Some(e.to_string());
        peer.link = match (peer.link, rejection) {
            (Link::Paused, _) => Link::Paused,
            (_, true) => Link::Rejected {
                retry_at: now + delay,
            },
            (_, false) => Link::Idle {
                retry_at: now + delay,
            },
        };
        let tickets = std::mem::take(&mut peer.tickets);
        for t in tickets {
            self.answer(t, Answer::Failed(RequestError::DialFailed(e.clone())));
        }
        let retry_in = crate::logfmt::secs(delay);
        if rejection {
            warn!(peer = %id, reason = %e, %retry_in, "peer rejected: not of our formation");
            self.emit(id, PeerEventKind::Rejected, e.to_string());
        } else {
            info!(peer = %id, error = %e, %retry_in, "dial failed");
            self.emit(id, PeerEventKind::Disconnected, format!("dial failed: {e}"));
        }
        self.remove_if_orphan(id);
    }
}

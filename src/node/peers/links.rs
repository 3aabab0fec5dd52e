//! Connections coming and going: installing an authenticated connection (settling
//! duplicates and `--max-peers`), a failed incoming check, and a connection's end.

use std::time::Instant;

use iroh::{endpoint::ConnectionError, EndpointId};
use tracing::{debug, info, warn};

use super::{
    core::{Action, Answer, Core},
    row::{ConnId, Link, Live, NewConn},
    rules::{describe_close, CloseKind, OVER_CAPACITY_GRACE, PEER_LEFT_DELAY},
    types::Counters,
};
use crate::{
    events::{PeerEventKind, Source},
    node::{
        backoff,
        formation::{CloseCode, FormationError},
    },
};

impl Core {
    /// Records an authenticated connection, settling duplicates.
    pub(super) fn install(&mut self, id: EndpointId, new: NewConn, outbound: bool, now: Instant) {
        let conn = new.id;
        if let Some(rtt) = new.rtt {
            self.link_rtt.sample(rtt);
        }
        let row = self.peers.get(&id);
        let configured = row.is_some_and(|p| p.configured());
        let has_live = row.is_some_and(|p| p.is_connected());
        if !has_live && !configured && self.at_capacity() {
            self.over_capacity(id, conn, now);
        }
        let Some(peer) = self.row_or_make(id, true, now) else {
            self.warn_full(now);
            self.close(conn, CloseCode::OverCapacity);
            return;
        };
        let old = peer.live().copied();
        // Counted before the duplicate check: a duplicate that is closed at once was
        // still opened, so that opened - closed always equals the live connections.
        Counters::inc(&self.counters.connections_opened);
        let live = Live {
            conn,
            outbound,
            since: now,
            remote: new.remote,
        };
        if let Some(old) = old {
            if !self.settle_duplicate(id, old, live, now) {
                return;
            }
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        peer.link = Link::Connected(live);
        // "inbound": what we know of a peer that only its own dial told us of.
        if outbound {
            peer.sources.remove(&Source::Inbound);
        } else if peer.sources.is_empty() {
            peer.sources.insert(Source::Inbound);
        }
        peer.expires_at = None;
        peer.backoff.reset();
        peer.last_error = None;
        peer.ever_connected = true;
        let tickets = std::mem::take(&mut peer.tickets);
        // Its addresses are alive after all (it may have been down at the first dial).
        let addrs: Vec<_> = peer.addrs.iter().copied().collect();
        for a in &addrs {
            self.dead.remove(a);
        }
        for t in tickets {
            self.answer(t, Answer::Connected(id));
        }
        let direction = if outbound { "outbound" } else { "inbound" };
        self.emit(id, PeerEventKind::Connected, direction);
        self.out.push(Action::Watch {
            id,
            conn,
            announce: true,
        });
    }

    /// Beyond `--max-peers`: not refused outright, since the peer may have named us as
    /// its only --peer, and without one exchange it would learn nobody else. It gets
    /// the connection for [`OVER_CAPACITY_GRACE`] (its gossip exchange runs at once),
    /// then it is closed with OverCapacity and the peer dials others.
    fn over_capacity(&mut self, id: EndpointId, conn: ConnId, now: Instant) {
        self.out.push(Action::CloseAfter {
            conn,
            code: CloseCode::OverCapacity,
            after: OVER_CAPACITY_GRACE,
        });
        if let Some(suppressed) = self.logs.over_capacity.hit(now) {
            info!(
                peer = %id,
                max_peers = self.limits.max_peers,
                grace_secs = OVER_CAPACITY_GRACE.as_secs(),
                suppressed,
                "--max-peers reached: connection kept for one exchange, then closed"
            );
        }
    }

    pub(super) fn on_incoming_failed(
        &mut self,
        id: EndpointId,
        error: FormationError,
        now: Instant,
    ) {
        Counters::inc(&self.counters.incoming_refused);
        // Unknown peers are not added: a stranger must not be able to fill the table.
        let rejection = error.is_rejection();
        if rejection {
            Counters::inc(&self.counters.handshakes_rejected);
            warn!(peer = %id, reason = %error, "refused incoming connection: not of our formation");
        } else {
            debug!(peer = %id, reason = %error, "incoming formation check failed");
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        peer.last_error = Some(error.to_string());
        if !rejection || peer.is_connected() {
            return;
        }
        if let Link::Idle { .. } = peer.link {
            peer.link = Link::Rejected {
                retry_at: now + backoff::REJECTED,
            };
        }
        self.emit(id, PeerEventKind::Rejected, error.to_string());
    }

    pub(super) fn on_closed(
        &mut self,
        id: EndpointId,
        conn: ConnId,
        reason: &ConnectionError,
        now: Instant,
    ) {
        if self.standby_settles(id, conn, reason) {
            return;
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.live().map(|l| l.conn) != Some(conn) {
            return; // a duplicate we closed, or one replaced already
        }
        Counters::inc(&self.counters.connections_closed);
        peer.sources.remove(&Source::Inbound);
        let (why, kind) = describe_close(reason);
        peer.link = match kind {
            // The peer's operator asked to disconnect: respect it on this side too.
            CloseKind::PeerDisconnected => Link::Paused,
            CloseKind::Rejected => Link::Rejected {
                retry_at: now + backoff::REJECTED,
            },
            CloseKind::PeerLeft => Link::Idle {
                retry_at: now + peer.backoff.next_delay().max(PEER_LEFT_DELAY),
            },
            CloseKind::Full => Link::Idle {
                retry_at: now + backoff::MAX,
            },
            // Lost, or closed here for capacity: dial again later.
            CloseKind::Lost | CloseKind::LocalDisconnect => Link::Idle {
                retry_at: now + peer.backoff.next_delay(),
            },
        };
        peer.last_error = Some(why.clone());
        info!(peer = %id, reason = %why, "peer disconnected");
        // Whatever ended the live connection (a timeout, the peer leaving) is no
        // duplicate's settlement: the spare one goes too.
        self.close_standby(id, CloseCode::Duplicate);
        self.emit(id, PeerEventKind::Disconnected, why);
        if kind == CloseKind::PeerLeft {
            self.on_left(id);
        }
        self.remove_if_orphan(id);
    }

    /// The peer closed its connection because it is shutting down. Said over the
    /// authenticated connection, so unlike an mDNS goodbye only the peer itself can say
    /// it: the sources whose records a leaving peer withdraws (mDNS) forget it now
    /// instead of a second later, when their own goodbye handling catches up.
    fn on_left(&mut self, id: EndpointId) {
        self.emit(id, PeerEventKind::Left, "the peer is shutting down");
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let gone: Vec<_> = peer
            .sources
            .iter()
            .copied()
            .filter(|s| s.withdrawn_on_departure())
            .collect();
        for source in &gone {
            peer.sources.remove(source);
        }
        for source in gone {
            info!(peer = %id, %source, "peer lost by {source}: it left");
            self.emit(id, PeerEventKind::Lost, format!("source {source}"));
        }
    }
}

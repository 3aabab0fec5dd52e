//! Two connections to one peer: which one survives, and the standby that the side that
//! does not settle keeps until the peer has settled.
//!
//! Both sides of a simultaneous dial end up with the same two connections, but each
//! completes them at its own moments: on a lossy link seconds apart. A rule that both
//! sides apply to their own timings ([`survivor`] alone) can then pick different
//! survivors, each side closes the other's, and the pair is disconnected until a
//! redial. So only one side settles a duplicate in opposite directions, the smaller id
//! ([`settles_duplicates`]): it closes the loser with [`CloseCode::Duplicate`]. The
//! other side keeps both, the one [`survivor`] predicts live and the other as the
//! [`Standby`]; when the peer closes one of them it keeps the other, without a
//! Disconnected in between. A standby that nobody settles is closed after
//! [`STANDBY_GRACE`].
//!
//! Duplicates in the same direction are settled by the side that sees them (the newer
//! wins): the dialler only dials while it has no live connection, so it sees only one.

use std::time::Instant;

use iroh::{endpoint::ConnectionError, EndpointId};
use tracing::{debug, info};

use super::{
    core::{Action, Core},
    row::{ConnId, Link, Live, Standby},
    rules::{promotes_standby, settles_duplicates, survivor, STANDBY_GRACE},
    types::Counters,
};
use crate::node::formation::CloseCode;

impl Core {
    /// A new connection `new` to `id`, which has the live connection `old`. Returns
    /// true if `new` becomes the live one (the caller installs it); otherwise `new` is
    /// closed or kept as the standby.
    pub(super) fn settle_duplicate(
        &mut self,
        id: EndpointId,
        old: Live,
        new: Live,
        now: Instant,
    ) -> bool {
        let standby = self.peers.get(&id).and_then(|p| p.standby);
        if standby.is_some_and(|s| s.conn.outbound == new.outbound) {
            // The dialler of the standby dialled again: it gave that one up.
            self.close_standby(id, CloseCode::Duplicate);
            Counters::inc(&self.counters.duplicates_closed);
        }
        let age = now.saturating_duration_since(old.since);
        let keep_new = survivor(&self.me, &id, old.outbound, new.outbound, age);
        let age_ms = age.as_millis() as u64;
        let opposite = old.outbound != new.outbound;
        if opposite && !settles_duplicates(&self.me, &id) {
            let (live, spare) = if keep_new { (new, old) } else { (old, new) };
            debug!(
                peer = %id, outbound = new.outbound, age_ms, live_outbound = live.outbound,
                "duplicate connection: both kept until the peer closes one"
            );
            if let Some(peer) = self.peers.get_mut(&id) {
                peer.standby = Some(Standby {
                    conn: spare,
                    until: now + STANDBY_GRACE,
                });
            }
            if !keep_new {
                // Routed (the peer may use it), not announced to the protocols.
                self.out.push(Action::Watch {
                    id,
                    conn: new.conn,
                    announce: false,
                });
            }
            return keep_new;
        }
        debug!(peer = %id, outbound = new.outbound, age_ms, keep_new, "duplicate connection");
        Counters::inc(&self.counters.duplicates_closed);
        Counters::inc(&self.counters.connections_closed);
        let loser = if keep_new { old.conn } else { new.conn };
        self.close(loser, CloseCode::Duplicate);
        keep_new
    }

    /// A watched connection of `id` ended: true if that settled a duplicate (the
    /// standby ended, or the live one ended and the standby took over), so that the
    /// peer stays connected.
    pub(super) fn standby_settles(
        &mut self,
        id: EndpointId,
        conn: ConnId,
        reason: &ConnectionError,
    ) -> bool {
        let Some(peer) = self.peers.get_mut(&id) else {
            return false;
        };
        let Some(standby) = peer.standby else {
            return false;
        };
        if standby.conn.conn == conn {
            peer.standby = None;
            Counters::inc(&self.counters.connections_closed);
            debug!(peer = %id, %reason, "standby connection closed: the peer kept the live one");
            return true;
        }
        let is_live = peer.live().is_some_and(|l| l.conn == conn);
        if !is_live || !promotes_standby(reason) {
            return false;
        }
        peer.standby = None;
        peer.link = Link::Connected(standby.conn);
        Counters::inc(&self.counters.connections_closed);
        info!(
            peer = %id, outbound = standby.conn.outbound, %reason,
            "the peer kept our other connection to it; using that one"
        );
        self.out.push(Action::Announce {
            id,
            conn: standby.conn.conn,
        });
        true
    }

    /// Closes the standby of `id`, if it has one.
    pub(super) fn close_standby(&mut self, id: EndpointId, code: CloseCode) {
        let Some(standby) = self.peers.get_mut(&id).and_then(|p| p.standby.take()) else {
            return;
        };
        Counters::inc(&self.counters.connections_closed);
        self.close(standby.conn.conn, code);
    }

    /// Closes the standbys that the peer did not settle within [`STANDBY_GRACE`].
    pub(super) fn expire_standbys(&mut self, now: Instant) {
        let due: Vec<EndpointId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.standby.is_some_and(|s| s.until <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            info!(
                peer = %id, grace_secs = STANDBY_GRACE.as_secs(),
                "the peer did not settle a duplicate connection; closing the spare one"
            );
            Counters::inc(&self.counters.duplicates_closed);
            self.close_standby(id, CloseCode::Duplicate);
        }
    }

    /// The earliest time a standby is due to be closed.
    pub(super) fn standby_deadline(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|p| p.standby.map(|s| s.until))
            .min()
    }
}

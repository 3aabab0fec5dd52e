//! Which connected peers have gone quiet: the pure part of liveness.
//!
//! A peer is *heard* when a beacon with its id prefix arrives from the address its
//! connection uses (the caller checks that) or a probe of it is answered. A peer not heard for `suspect_after` is due for a probe; a failed probe
//! makes it dead unless it was heard while the probe ran (a beacon that was only late).
//! Beacons are unauthenticated, so they can only postpone a probe; only the probe, on
//! the authenticated connection, decides.

use std::{collections::HashMap, time::Duration, time::Instant};

use iroh::EndpointId;

use super::wire::{prefix_of, Prefix};

/// Identifies one connection to a peer (iroh's `stable_id`), so that the end of a
/// replaced connection does not drop the watch on its successor.
pub type ConnKey = usize;

#[derive(Debug)]
struct Watched {
    conn: ConnKey,
    prefix: Prefix,
    last_heard: Instant,
    probing: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Alive,
    Dead,
    /// The connection ended or was replaced while the probe ran.
    Gone,
}

/// Tracks how long each connected peer has been silent (no beacon, no probe answer).
#[derive(Debug)]
pub struct SilenceTracker {
    suspect_after: Duration,
    peers: HashMap<EndpointId, Watched>,
}

impl SilenceTracker {
    pub fn new(suspect_after: Duration) -> Self {
        SilenceTracker {
            suspect_after,
            peers: HashMap::new(),
        }
    }

    /// A new (or replacing) connection: it counts as heard now.
    pub fn add(&mut self, id: EndpointId, conn: ConnKey, now: Instant) {
        let w = Watched {
            conn,
            prefix: prefix_of(&id),
            last_heard: now,
            probing: false,
        };
        self.peers.insert(id, w);
    }

    /// The connection ended; ignored if it was replaced already.
    pub fn remove(&mut self, id: &EndpointId, conn: ConnKey) {
        if self.peers.get(id).is_some_and(|w| w.conn == conn) {
            self.peers.remove(id);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Connected peers whose id starts with `prefix` (normally one).
    pub fn matching(&self, prefix: &Prefix) -> Vec<(EndpointId, ConnKey)> {
        self.peers
            .iter()
            .filter(|(_, w)| &w.prefix == prefix)
            .map(|(id, w)| (*id, w.conn))
            .collect()
    }

    /// The peer was heard from (a beacon that matches its connection).
    pub fn heard(&mut self, id: &EndpointId, now: Instant) {
        if let Some(w) = self.peers.get_mut(id) {
            w.last_heard = w.last_heard.max(now);
        }
    }

    /// Peers to probe now, with their connection; each is marked as being probed.
    pub fn due(&mut self, now: Instant) -> Vec<(EndpointId, ConnKey)> {
        let after = self.suspect_after;
        self.peers
            .iter_mut()
            .filter(|(_, w)| !w.probing && now.saturating_duration_since(w.last_heard) >= after)
            .map(|(id, w)| {
                w.probing = true;
                (*id, w.conn)
            })
            .collect()
    }

    /// The outcome of a probe that started at `started`.
    pub fn probed(
        &mut self,
        id: &EndpointId,
        conn: ConnKey,
        answered: bool,
        started: Instant,
        now: Instant,
    ) -> Verdict {
        let Some(w) = self.peers.get_mut(id).filter(|w| w.conn == conn) else {
            return Verdict::Gone;
        };
        w.probing = false;
        if answered {
            w.last_heard = w.last_heard.max(now);
            return Verdict::Alive;
        }
        if w.last_heard > started {
            return Verdict::Alive;
        }
        self.peers.remove(id);
        Verdict::Dead
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUSPECT: Duration = Duration::from_secs(4);

    fn id() -> EndpointId {
        iroh::SecretKey::generate().public()
    }

    #[test]
    fn a_peer_whose_beacons_arrive_is_never_probed() {
        let mut t = SilenceTracker::new(SUSPECT);
        let (a, t0) = (id(), Instant::now());
        t.add(a, 1, t0);
        for s in 1..20 {
            let now = t0 + Duration::from_secs(2 * s);
            assert_eq!(t.matching(&prefix_of(&a)), vec![(a, 1)]);
            t.heard(&a, now);
            assert!(t.due(now).is_empty(), "probed at {s}");
        }
    }

    #[test]
    fn a_silent_peer_is_probed_once_and_dead_when_the_probe_fails() {
        let mut t = SilenceTracker::new(SUSPECT);
        let (a, t0) = (id(), Instant::now());
        t.add(a, 1, t0);
        assert!(t.due(t0 + Duration::from_secs(3)).is_empty());
        let start = t0 + SUSPECT;
        assert_eq!(t.due(start), vec![(a, 1)]);
        // Being probed: not due again while the probe runs.
        assert!(t.due(start + Duration::from_secs(1)).is_empty());
        let end = start + Duration::from_secs(3);
        assert_eq!(t.probed(&a, 1, false, start, end), Verdict::Dead);
        assert!(t.is_empty());
    }

    #[test]
    fn an_answered_probe_or_a_late_beacon_keeps_the_peer() {
        let mut t = SilenceTracker::new(SUSPECT);
        let (a, b, t0) = (id(), id(), Instant::now());
        t.add(a, 1, t0);
        t.add(b, 2, t0);
        let start = t0 + SUSPECT;
        assert_eq!(t.due(start).len(), 2);
        let end = start + Duration::from_secs(2);
        assert_eq!(t.probed(&a, 1, true, start, end), Verdict::Alive);
        // b's probe failed, but its beacon came in while the probe ran.
        t.heard(&b, start + Duration::from_secs(1));
        assert_eq!(t.probed(&b, 2, false, start, end), Verdict::Alive);
        // Both count as heard again: not due until another SUSPECT passes.
        assert!(t.due(end + Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn a_replaced_connection_keeps_its_watch() {
        let mut t = SilenceTracker::new(SUSPECT);
        let (a, t0) = (id(), Instant::now());
        t.add(a, 1, t0);
        let start = t0 + SUSPECT;
        assert_eq!(t.due(start), vec![(a, 1)]);
        t.add(a, 2, start);
        t.remove(&a, 1);
        assert!(
            !t.is_empty(),
            "the old connection's end dropped the new one"
        );
        assert_eq!(t.probed(&a, 1, false, start, start), Verdict::Gone);
        assert_eq!(t.due(start + SUSPECT), vec![(a, 2)]);
        t.remove(&a, 2);
        assert!(t.is_empty());
    }

    #[test]
    fn a_beacon_of_a_stranger_touches_nobody() {
        let mut t = SilenceTracker::new(SUSPECT);
        let (a, t0) = (id(), Instant::now());
        t.add(a, 1, t0);
        assert!(t.matching(&prefix_of(&id())).is_empty());
        assert_eq!(t.due(t0 + SUSPECT).len(), 1);
    }
}

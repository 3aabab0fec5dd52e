//! What the dns source knows about each address in the DNS answer, and the found/lost
//! events that follow from a new answer and from handshake outcomes.
//!
//! Kept free of I/O so that the rules can be tested on their own:
//! - an address that leaves the DNS answer makes its peer lost (for dns only), unless
//!   another address in the answer still leads to the same peer;
//! - a verified answer from the same app id makes the peer found at the resolved IP and
//!   the announced iroh port; a changed identity at an address loses the old one;
//! - an answer from another app id is skipped and counted; our own id marks the
//!   address as ours and it is not asked again;
//! - silence or an invalid answer changes nothing already known (the QUIC connection,
//!   not the handshake, decides whether a peer is alive) and is logged once per
//!   address until the address answers again.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
};

use iroh::EndpointId;
use tracing::{debug, info, warn};

use super::{
    ask::Outcome,
    resolve::Resolution,
    wire::{Identity, WireError},
};
use crate::events::{DiscoveryEvent, Source};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Known {
    /// Not answered yet (or only silence and invalid answers so far).
    Unknown,
    /// A verified peer of our formation, reachable at `iroh`.
    Peer { id: EndpointId, iroh: SocketAddr },
    /// This sidecar itself.
    Own,
    /// A sidecar of another formation.
    OtherApp { id: EndpointId, app_id: String },
}

#[derive(Debug, Clone)]
struct Target {
    known: Known,
    /// A "does not answer" or "rejected" line was logged and not yet cleared by an
    /// answer: log once, not every round.
    silence_logged: bool,
    rejection_logged: bool,
}

impl Target {
    fn new() -> Self {
        Target {
            known: Known::Unknown,
            silence_logged: false,
            rejection_logged: false,
        }
    }
}

/// Tracks the addresses of the DNS answer: what each one's handshake said, and so
/// which peers the dns source has found.
#[derive(Debug)]
pub struct AnswerTracker {
    me: EndpointId,
    app_id: String,
    /// Our own handshake address, never asked.
    own: Option<SocketAddr>,
    targets: BTreeMap<SocketAddr, Target>,
    /// Handshake answers from another app id, since start.
    pub other_app_skipped: u64,
    /// Answers that failed verification, since start.
    pub rejected: u64,
}

impl AnswerTracker {
    pub fn new(me: EndpointId, app_id: String, own: Option<SocketAddr>) -> Self {
        AnswerTracker {
            me,
            app_id,
            own,
            targets: BTreeMap::new(),
            other_app_skipped: 0,
            rejected: 0,
        }
    }

    /// Takes a new DNS answer. Addresses of a family whose lookup failed are kept
    /// (a flaky DNS server must not make peers look lost). Returns the lost events.
    pub fn update(&mut self, res: &Resolution) -> Vec<DiscoveryEvent> {
        let keep = |a: &SocketAddr| {
            res.targets.contains(a)
                || (a.is_ipv4() && res.v4_failed)
                || (a.is_ipv6() && res.v6_failed)
        };
        let gone: Vec<SocketAddr> = self.targets.keys().filter(|a| !keep(a)).copied().collect();
        let mut events = vec![];
        for addr in gone {
            let Some(t) = self.targets.remove(&addr) else {
                continue;
            };
            info!(target_addr = %addr, "address left the DNS answer");
            if let Known::Peer { id, .. } = t.known {
                events.extend(self.after_change(id));
            }
        }
        for addr in &res.targets {
            if Some(*addr) == self.own {
                continue;
            }
            if !self.targets.contains_key(addr) {
                debug!(target_addr = %addr, "new address in the DNS answer");
                self.targets.insert(*addr, Target::new());
            }
        }
        events
    }

    /// The addresses to ask this round: every address in the answer but our own. Known
    /// peers are asked again so that an address taken over by another sidecar (a pod
    /// restarted with a new key on a reused IP) is noticed.
    pub fn to_ask(&self) -> Vec<SocketAddr> {
        self.targets
            .iter()
            .filter(|(_, t)| t.known != Known::Own)
            .map(|(a, _)| *a)
            .collect()
    }

    /// Records the outcome of asking `addr`; returns found/lost events.
    pub fn apply(&mut self, addr: SocketAddr, outcome: Outcome) -> Vec<DiscoveryEvent> {
        let Some(t) = self.targets.get_mut(&addr) else {
            // Left the answer while we were asking.
            return vec![];
        };
        match outcome {
            Outcome::Verified(identity) => self.on_verified(addr, &identity),
            Outcome::NoAnswer => {
                note_silence(addr, t, "no answer");
                vec![]
            }
            Outcome::Unreachable(why) => {
                note_silence(addr, t, &why);
                vec![]
            }
            Outcome::Rejected { from, error } => {
                self.rejected += 1;
                note_rejection(addr, t, from, &error);
                vec![]
            }
        }
    }

    /// A verified answer: what the address is now, and the events if that changed.
    fn on_verified(&mut self, addr: SocketAddr, identity: &Identity) -> Vec<DiscoveryEvent> {
        let new = self.classify(addr, identity);
        if matches!(new, Known::OtherApp { .. }) {
            self.other_app_skipped += 1;
        }
        let skipped_total = self.other_app_skipped;
        let Some(t) = self.targets.get_mut(&addr) else {
            return vec![];
        };
        if t.silence_logged || t.rejection_logged {
            info!(target_addr = %addr, endpoint_id = %identity.endpoint_id, "address answers the discovery handshake now");
            t.silence_logged = false;
            t.rejection_logged = false;
        }
        log_first_sight(addr, &t.known, &new, skipped_total);
        let old = std::mem::replace(&mut t.known, new.clone());
        if old == new {
            return vec![];
        }
        self.events_for_change(addr, old, new)
    }

    /// What a verified identity at `addr` is to us.
    fn classify(&self, addr: SocketAddr, identity: &Identity) -> Known {
        if identity.endpoint_id == self.me {
            Known::Own
        } else if identity.app_id != self.app_id {
            Known::OtherApp {
                id: identity.endpoint_id,
                app_id: identity.app_id.clone(),
            }
        } else {
            Known::Peer {
                id: identity.endpoint_id,
                iroh: SocketAddr::new(addr.ip(), identity.iroh_port),
            }
        }
    }

    /// The address changed from `old` to `new`: the peer that was there may be lost,
    /// the one there now is found (again, with all its addresses).
    fn events_for_change(&self, addr: SocketAddr, old: Known, new: Known) -> Vec<DiscoveryEvent> {
        let peer_id = |k: &Known| match k {
            Known::Peer { id, .. } => Some(*id),
            _ => None,
        };
        let (old_id, new_id) = (peer_id(&old), peer_id(&new));
        let mut events = vec![];
        if let Some(o) = old_id.filter(|o| Some(*o) != new_id) {
            events.extend(self.after_change(o));
        }
        if let Known::Peer { id, iroh } = new {
            if old_id != Some(id) {
                info!(target_addr = %addr, peer = %id, %iroh, "verified a peer of this formation through dns");
            }
            events.extend(self.after_change(id));
        }
        events
    }

    /// The event that describes `id` now: found at all its addresses, or lost.
    fn after_change(&self, id: EndpointId) -> Vec<DiscoveryEvent> {
        let addrs: BTreeSet<SocketAddr> = self
            .targets
            .values()
            .filter_map(|t| match t.known {
                Known::Peer { id: p, iroh } if p == id => Some(iroh),
                _ => None,
            })
            .collect();
        if addrs.is_empty() {
            vec![DiscoveryEvent::Lost {
                id,
                source: Source::Dns,
            }]
        } else {
            vec![DiscoveryEvent::Found {
                id,
                addrs,
                source: Source::Dns,
                unaware: false,
            }]
        }
    }
}

/// No answer, or the question could not be sent: warn once for an address that never
/// answered, else only at debug level.
fn note_silence(addr: SocketAddr, t: &mut Target, why: &str) {
    if !t.silence_logged && t.known == Known::Unknown {
        warn!(
            target_addr = %addr,
            reason = %why,
            "address in the DNS answer does not answer the discovery handshake: \
             not a peat-sidecar in dns mode, not started yet, or the discovery \
             port is blocked; retrying every interval (logged once)"
        );
        t.silence_logged = true;
    } else {
        debug!(target_addr = %addr, reason = %why, "no handshake answer");
    }
}

/// An answer that failed verification: warn once per address.
fn note_rejection(addr: SocketAddr, t: &mut Target, from: SocketAddr, error: &WireError) {
    if !t.rejection_logged {
        warn!(
            target_addr = %addr,
            %from,
            %error,
            "rejected a discovery handshake answer: not connecting to what it \
             claims (logged once per address)"
        );
        t.rejection_logged = true;
    } else {
        debug!(target_addr = %addr, %from, %error, "rejected a handshake answer");
    }
}

/// Logs an address that turned out to be another formation's sidecar or our own.
fn log_first_sight(addr: SocketAddr, old: &Known, new: &Known, skipped_total: u64) {
    if old == new {
        return;
    }
    match new {
        Known::OtherApp { id, app_id } => info!(
            target_addr = %addr,
            peer = %id,
            other_app_id = %app_id,
            skipped_total,
            "skipping a sidecar of another app id"
        ),
        Known::Own => {
            debug!(target_addr = %addr, "this address is this sidecar itself; not asking it again")
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::dns::{resolve::Resolution, wire::Identity};
    use iroh::SecretKey;

    fn id(n: u8) -> EndpointId {
        SecretKey::from_bytes(&[n; 32]).public()
    }

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 9471))
    }

    fn res(addrs: &[SocketAddr]) -> Resolution {
        Resolution {
            targets: addrs.iter().copied().collect(),
            ..Default::default()
        }
    }

    fn verified(n: u8, app: &str, port: u16) -> Outcome {
        Outcome::Verified(Identity {
            endpoint_id: id(n),
            app_id: app.into(),
            iroh_port: port,
        })
    }

    fn found(n: u8, addrs: &[SocketAddr]) -> DiscoveryEvent {
        DiscoveryEvent::Found {
            id: id(n),
            addrs: addrs.iter().copied().collect(),
            source: Source::Dns,
            unaware: false,
        }
    }

    fn lost(n: u8) -> DiscoveryEvent {
        DiscoveryEvent::Lost {
            id: id(n),
            source: Source::Dns,
        }
    }

    fn iroh(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], port))
    }

    #[test]
    fn found_then_lost_when_the_address_leaves() {
        let mut t = AnswerTracker::new(id(0), "peat".into(), Some(addr(1)));
        assert!(t.update(&res(&[addr(1), addr(2)])).is_empty());
        // Our own address is never asked.
        assert_eq!(t.to_ask(), vec![addr(2)]);
        assert_eq!(
            t.apply(addr(2), verified(2, "peat", 9470)),
            vec![found(2, &[iroh(2, 9470)])]
        );
        // Asking again with the same result says nothing new.
        assert!(t.apply(addr(2), verified(2, "peat", 9470)).is_empty());
        // Silence does not lose a known peer.
        assert!(t.apply(addr(2), Outcome::NoAnswer).is_empty());
        assert_eq!(t.update(&res(&[addr(1)])), vec![lost(2)]);
        assert!(t.to_ask().is_empty());
    }

    #[test]
    fn failed_lookups_keep_their_family() {
        let mut t = AnswerTracker::new(id(0), "peat".into(), None);
        t.update(&res(&[addr(2)]));
        t.apply(addr(2), verified(2, "peat", 9470));
        let failed = Resolution {
            v4_failed: true,
            ..Default::default()
        };
        assert!(t.update(&failed).is_empty());
        assert_eq!(t.to_ask(), vec![addr(2)]);
        // AAAA failing does not keep IPv4 addresses that left the answer.
        let v6_failed = Resolution {
            v6_failed: true,
            ..Default::default()
        };
        assert_eq!(t.update(&v6_failed), vec![lost(2)]);
    }

    #[test]
    fn two_addresses_one_peer() {
        let mut t = AnswerTracker::new(id(0), "peat".into(), None);
        let v6 = SocketAddr::from(([0xfd00, 0, 0, 0, 0, 0, 0, 2], 9471));
        t.update(&res(&[addr(2), v6]));
        t.apply(addr(2), verified(2, "peat", 9470));
        let both = t.apply(v6, verified(2, "peat", 9470));
        assert_eq!(
            both,
            vec![found(2, &[iroh(2, 9470), SocketAddr::new(v6.ip(), 9470)])]
        );
        // One address leaves: still found at the other, not lost.
        assert_eq!(
            t.update(&res(&[v6])),
            vec![found(2, &[SocketAddr::new(v6.ip(), 9470)])]
        );
        assert_eq!(t.update(&res(&[])), vec![lost(2)]);
    }

    #[test]
    fn other_app_and_own_id_are_skipped() {
        let mut t = AnswerTracker::new(id(0), "peat".into(), None);
        t.update(&res(&[addr(2), addr(3)]));
        assert!(t.apply(addr(2), verified(2, "other", 9470)).is_empty());
        assert!(t.apply(addr(2), verified(2, "other", 9470)).is_empty());
        assert_eq!(t.other_app_skipped, 2);
        // Our own id: the address is ours and is not asked again.
        assert!(t.apply(addr(3), verified(0, "peat", 9470)).is_empty());
        assert_eq!(t.to_ask(), vec![addr(2)]);
        assert!(t.update(&res(&[])).is_empty());
    }

    #[test]
    fn identity_change_at_an_address() {
        let mut t = AnswerTracker::new(id(0), "peat".into(), None);
        t.update(&res(&[addr(2)]));
        t.apply(addr(2), verified(2, "peat", 9470));
        // A new pod with a new key on the same IP.
        assert_eq!(
            t.apply(addr(2), verified(5, "peat", 9470)),
            vec![lost(2), found(5, &[iroh(2, 9470)])]
        );
        // Same peer, new iroh port: found again with the new address.
        assert_eq!(
            t.apply(addr(2), verified(5, "peat", 9555)),
            vec![found(5, &[iroh(2, 9555)])]
        );
    }

    #[test]
    fn rejections_and_silence_change_nothing() {
        let mut t = AnswerTracker::new(id(0), "peat".into(), None);
        t.update(&res(&[addr(2)]));
        for _ in 0..3 {
            assert!(t.apply(addr(2), Outcome::NoAnswer).is_empty());
            assert!(t
                .apply(
                    addr(2),
                    Outcome::Rejected {
                        from: addr(2),
                        error: crate::discovery::dns::wire::WireError::BadSignature
                    }
                )
                .is_empty());
        }
        assert_eq!(t.rejected, 3);
        assert_eq!(t.to_ask(), vec![addr(2)]);
        // Outcomes for addresses no longer in the answer are ignored.
        assert!(t.apply(addr(9), verified(9, "peat", 1)).is_empty());
    }
}

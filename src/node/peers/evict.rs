//! Which entry goes when the peer table is full.
//!
//! Never evicted: connected peers, peers being dialled or awaited by a ConnectPeer
//! call, and static peers; and to make room for a record nobody vouched for (a
//! discovery of a new id), no proven peer either ([`Peer::proven`]: it connected once,
//! or an operator named it), so a flood of spoofed records cannot push out a real
//! peer that is between two connections. Among the rest, proven peers go last (only a
//! proven newcomer reaches them; API-added ones last of all); rejected ones go first,
//! then suspects (every address dead), then peers that failed, then those that
//! never connected. Among equals so far, one whose addresses all appear in other
//! entries too goes before one with an address of its own: a flood of spoofed
//! announcements reuses the few addresses it has, so dropping such an entry loses no
//! address the dialler still has to try, while a real peer at its own address, found
//! among thousands of fakes, stays until it has been dialled (with oldest-first alone
//! it was the first to go, before its dial came up). Oldest first among equals.

use std::{collections::HashMap, net::SocketAddr, time::Instant};

use iroh::EndpointId;

use super::{
    dead::DeadAddrs,
    row::{Link, Peer},
};
use crate::events::Source;

/// The entry to evict, if any may go. `proven`: whether the newcomer that needs the
/// room has shown it is real (an authenticated connection, ConnectPeer).
pub(super) fn eviction_victim(
    peers: &HashMap<EndpointId, Peer>,
    dead: &DeadAddrs,
    proven: bool,
    now: Instant,
) -> Option<EndpointId> {
    let mut claims: HashMap<&SocketAddr, u32> = HashMap::with_capacity(peers.len());
    for p in peers.values() {
        for a in &p.addrs {
            *claims.entry(a).or_default() += 1;
        }
    }
    let shared = |p: &Peer| {
        !p.addrs.is_empty()
            && p.addrs
                .iter()
                .all(|a| claims.get(a).is_some_and(|n| *n > 1))
    };
    peers
        .iter()
        .filter(|(_, p)| {
            !p.is_connected()
                && p.dial.is_none()
                && p.tickets.is_empty()
                && !p.sources.contains(&Source::Static)
                && (proven || !p.proven())
        })
        .min_by_key(|(_, p)| {
            (
                p.proven(),
                p.sources.contains(&Source::Api),
                !matches!(p.link, Link::Rejected { .. }),
                !p.suspect(dead, now),
                p.backoff.failures() == 0,
                p.ever_connected,
                !shared(p),
                p.first_seen,
            )
        })
        .map(|(id, _)| *id)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use iroh::SecretKey;

    use super::*;
    use crate::node::peers::rules::{DIAL_TIMEOUT, FIRST_DIAL_TIMEOUT};
    const FAST: Option<std::time::Duration> = None;

    #[test]
    fn a_peer_is_suspect_only_if_every_address_is_dead_and_it_never_connected() {
        let now = Instant::now();
        let dead_a = SocketAddr::from(([10, 77, 0, 200], 9470));
        let live_a = SocketAddr::from(([10, 77, 0, 3], 9470));
        let mut d = DeadAddrs::default();
        d.insert(dead_a, now);
        let mut p = Peer::new(now);
        p.sources.insert(Source::Mdns);
        p.addrs.insert(dead_a);
        assert!(p.suspect(&d, now));
        assert_eq!(p.dial_timeouts(FAST).answer, FIRST_DIAL_TIMEOUT);
        p.addrs.insert(live_a);
        assert!(!p.suspect(&d, now), "one untried address is enough");
        p.addrs.remove(&live_a);
        p.ever_connected = true;
        assert!(!p.suspect(&d, now), "a peer that connected once is real");
        assert_eq!(p.dial_timeouts(FAST).answer, DIAL_TIMEOUT);
        let mut s = Peer::new(now);
        s.sources.insert(Source::Static);
        s.addrs.insert(dead_a);
        assert!(!s.suspect(&d, now), "configured peers are never suspects");
        assert_eq!(s.dial_timeouts(FAST).answer, DIAL_TIMEOUT);
    }

    #[test]
    fn eviction_keeps_a_peer_at_its_own_address_over_fakes_sharing_theirs() {
        let t0 = Instant::now();
        let fake_a = SocketAddr::from(([198, 18, 0, 100], 9470));
        let real_a = SocketAddr::from(([10, 77, 0, 3], 9470));
        let peer = |at: Duration, a: SocketAddr| {
            let mut p = Peer::new(t0 + at);
            p.sources.insert(Source::Mdns);
            p.addrs.insert(a);
            p
        };
        let real = SecretKey::generate().public();
        let mut peers = HashMap::new();
        // The real peer is the oldest entry; two newer fakes share one address.
        peers.insert(real, peer(Duration::ZERO, real_a));
        let f1 = SecretKey::generate().public();
        let f2 = SecretKey::generate().public();
        peers.insert(f1, peer(Duration::from_millis(10), fake_a));
        peers.insert(f2, peer(Duration::from_millis(20), fake_a));
        let dead = DeadAddrs::default();
        assert_eq!(
            eviction_victim(&peers, &dead, false, t0),
            Some(f1),
            "oldest fake goes first"
        );
        peers.remove(&f1);
        // Now the fake has its address to itself too: oldest first again.
        assert_eq!(eviction_victim(&peers, &dead, false, t0), Some(real));
        // A fake at a dead address goes before anyone.
        let mut dead = DeadAddrs::default();
        dead.insert(fake_a, t0);
        assert_eq!(eviction_victim(&peers, &dead, false, t0), Some(f2));
    }
}

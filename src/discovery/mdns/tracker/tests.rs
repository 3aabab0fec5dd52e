//! The tracker's rules, one test per path.

use super::*;
use iroh::SecretKey;

const PORT: u16 = 9470;
const OWN: &str = "own._peat-sidecar._udp.local.";

fn id(n: u8) -> EndpointId {
    SecretKey::from_bytes(&[n; 32]).public()
}

fn name(n: usize) -> String {
    format!("peer{n}._peat-sidecar._udp.local.")
}

fn tracker(t0: Instant) -> RecordTracker {
    let scope = BindScope::from_bound(&[
        "[::]:9470".parse().unwrap(),
        "0.0.0.0:9470".parse().unwrap(),
    ]);
    RecordTracker::new(id(0), "app".into(), OWN.into(), scope, 0, t0)
}

/// A record of peer `n` under `name`, from app `app`, with these addresses.
fn rec(fullname: &str, n: u8, app: &str, ips: &[&str]) -> Resolved {
    Resolved {
        fullname: fullname.into(),
        txt: Ok(PeerTxt {
            app_id: app.into(),
            endpoint_id: id(n),
        }),
        addrs: ips.iter().map(|ip| (ip.parse().unwrap(), 0)).collect(),
        port: PORT,
    }
}

/// Peer `n` of our app under `peer<n>`, at 10.0.0.n.
fn peer(n: u8) -> Resolved {
    rec(&name(n.into()), n, "app", &[&format!("10.0.0.{n}")])
}

/// A tracker that resolved these peers at the start.
fn knowing(peers: &[u8]) -> (Instant, RecordTracker) {
    let t0 = Instant::now();
    let mut t = tracker(t0);
    for n in peers {
        t.on_resolved(peer(*n), t0);
    }
    (t0, t)
}

fn found(n: u8, ips: &[&str], unaware: bool) -> DiscoveryEvent {
    DiscoveryEvent::Found {
        id: id(n),
        addrs: ips
            .iter()
            .map(|ip| SocketAddr::new(ip.parse().unwrap(), PORT))
            .collect(),
        source: Source::Mdns,
        unaware,
    }
}

fn lost(n: u8) -> DiscoveryEvent {
    DiscoveryEvent::Lost {
        id: id(n),
        source: Source::Mdns,
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn each_resolution_replaces_the_addresses_of_its_record() {
    let (t0, mut t) = knowing(&[]);
    let v4 = t.on_resolved(peer(1), t0);
    assert_eq!(v4, vec![found(1, &["10.0.0.1"], true)]);
    let both = t.on_resolved(rec(&name(1), 1, "app", &["10.0.0.1", "fd00::1"]), t0);
    assert_eq!(both, vec![found(1, &["10.0.0.1", "fd00::1"], true)]);
    let again = t.on_resolved(rec(&name(1), 1, "app", &["fd00::1", "10.0.0.1"]), t0);
    assert!(again.is_empty(), "a repeat says nothing new: {again:?}");
    // Renumbered: the old address is gone from the peer's new announcement.
    let moved = t.on_resolved(rec(&name(1), 1, "app", &["10.0.0.9", "fd00::1"]), t0);
    assert_eq!(moved, vec![found(1, &["10.0.0.9", "fd00::1"], true)]);
    assert_eq!(t.records(), 1);
}

#[test]
fn found_is_unaware_only_until_our_record_went_out() {
    let (t0, mut t) = knowing(&[]);
    t.on_announced("someone-else._peat-sidecar._udp.local.");
    let ev = t.on_resolved(peer(1), t0);
    assert_eq!(ev, vec![found(1, &["10.0.0.1"], true)]);
    t.on_announced(OWN);
    let ev = t.on_resolved(peer(2), t0);
    assert_eq!(ev, vec![found(2, &["10.0.0.2"], false)]);
}

#[test]
fn other_app_ids_malformed_and_undialable_records_are_skipped() {
    let (t0, mut t) = knowing(&[]);
    assert!(t
        .on_resolved(rec(&name(1), 1, "other", &["10.0.0.1"]), t0)
        .is_empty());
    let mut bad = peer(2);
    bad.txt = Err(TxtError::IdHex);
    assert!(t.on_resolved(bad, t0).is_empty());
    // A link-local address without an interface index cannot be dialled.
    assert!(t
        .on_resolved(rec(&name(3), 3, "app", &["fe80::3"]), t0)
        .is_empty());
    assert_eq!(t.records(), 0);
    let s = t.stats();
    assert_eq!((s.other_app_records, s.malformed), (1, 1));
    // Hints are not counted: the browse resolves the same record.
    assert!(t
        .on_hint(rec(&name(1), 1, "other", &["10.0.0.1"]), t0)
        .is_empty());
    assert_eq!(t.stats().other_app_records, 1);
}

#[test]
fn our_own_record_is_skipped_by_name_and_by_id() {
    let (t0, mut t) = knowing(&[]);
    assert!(t
        .on_resolved(rec(OWN, 1, "app", &["10.0.0.1"]), t0)
        .is_empty());
    let renamed = rec("own (2)._peat-sidecar._udp.local.", 0, "app", &["10.0.0.9"]);
    assert!(t.on_resolved(renamed, t0).is_empty());
    let upper = rec(&OWN.to_uppercase(), 1, "app", &["10.0.0.1"]);
    assert!(t.on_hint(upper, t0).is_empty());
    assert_eq!(t.records(), 0);
}

#[test]
fn a_goodbye_is_lost_only_when_no_other_record_names_the_peer() {
    let (t0, mut t) = knowing(&[1]);
    t.on_resolved(rec(&name(2), 1, "app", &["10.0.0.2"]), t0);
    assert!(
        t.on_removed(&name(1)).is_empty(),
        "still announced as peer2"
    );
    assert_eq!(t.on_removed(&name(2)), vec![lost(1)]);
    assert!(t.on_removed(&name(2)).is_empty(), "unknown by now");
}

#[test]
fn a_name_that_changes_identity_loses_the_old_one() {
    let (t0, mut t) = knowing(&[1]);
    let ev = t.on_resolved(rec(&name(1), 2, "app", &["10.0.0.1"]), t0);
    assert_eq!(ev, vec![lost(1), found(2, &["10.0.0.1"], true)]);
}

#[test]
fn when_full_the_record_resolved_longest_ago_goes() {
    let (t0, mut t) = knowing(&[]);
    for i in 0..MIN_TRACKED_RECORDS {
        t.on_resolved(
            rec(&name(i), 1 + (i % 200) as u8, "app", &["10.0.0.1"]),
            t0 + secs(i as u64),
        );
    }
    assert_eq!(t.next_deadline(), None);
    // peer0 is refreshed, so peer1 is now the oldest.
    let late = t0 + secs(100);
    t.on_resolved(rec(&name(0), 1, "app", &["10.0.0.1"]), late);
    t.on_resolved(rec(&name(999), 250, "app", &["10.0.0.9"]), late);
    assert_eq!(t.records(), MIN_TRACKED_RECORDS);
    assert_eq!(t.stats().evicted, 1);
    assert!(t.on_removed(&name(1)).is_empty(), "peer1 was evicted");
    assert_eq!(t.on_removed(&name(0)), vec![lost(1)], "peer0 was kept");
    // Browse afresh once evictions stop for a while.
    assert_eq!(t.next_deadline(), Some(late + REBROWSE_AFTER_FLOOD));
    assert!(!t.take_rebrowse(late + secs(9)));
    assert!(t.take_rebrowse(late + REBROWSE_AFTER_FLOOD));
    assert!(!t.take_rebrowse(late + secs(60)), "once");
}

#[test]
fn a_flood_of_new_records_asks_for_a_cache_purge() {
    let (t0, mut t) = knowing(&[]);
    for i in 0..MIN_TRACKED_RECORDS * CACHE_PURGE_FACTOR {
        t.on_resolved(rec(&name(i), 1 + (i % 200) as u8, "app", &["10.0.0.1"]), t0);
    }
    assert!(
        !t.wants_purge(t0 + secs(29)),
        "not twice within the interval"
    );
    assert!(t.wants_purge(t0 + CACHE_PURGE_MIN_INTERVAL));
    t.browsed_afresh(t0 + CACHE_PURGE_MIN_INTERVAL);
    assert!(!t.wants_purge(t0 + secs(600)));
    assert_eq!(t.stats().cache_purges, 1);
    // What the peer manager was told is forgotten: a record resolved again is found again.
    let last = MIN_TRACKED_RECORDS * CACHE_PURGE_FACTOR - 1;
    let n = 1 + (last % 200) as u8;
    let ev = t.on_resolved(rec(&name(last), n, "app", &["10.0.0.1"]), t0 + secs(31));
    assert_eq!(ev, vec![found(n, &["10.0.0.1"], true)]);
}

#[test]
fn a_hint_is_found_at_once_and_lost_unless_the_browse_confirms_it() {
    let (t0, mut t) = knowing(&[]);
    let ev = t.on_hint(peer(1), t0);
    assert_eq!(ev, vec![found(1, &["10.0.0.1"], true)]);
    let ev = t.on_hint(peer(2), t0 + secs(1));
    assert_eq!(ev, vec![found(2, &["10.0.0.2"], true)]);
    assert!(t.on_hint(peer(1), t0).is_empty(), "known");
    assert_eq!(t.next_deadline(), Some(t0 + oneshot::HINT_TTL));
    // The browse confirms peer2 (a repeat: nothing new to say).
    assert!(t.on_resolved(peer(2), t0 + secs(2)).is_empty());
    assert!(t.on_tick(t0 + secs(9)).is_empty());
    assert_eq!(t.on_tick(t0 + oneshot::HINT_TTL), vec![lost(1)]);
    assert_eq!(
        t.next_deadline(),
        None,
        "peer2 lives with mdns-sd's record now"
    );
    assert!(t.on_tick(t0 + secs(60)).is_empty());
    assert_eq!(t.records(), 1);
}

#[test]
fn a_departed_peer_is_not_lost_again_by_its_goodbye() {
    let (t0, mut t) = knowing(&[1]);
    assert_eq!(t.on_left(id(1), t0), 1);
    assert_eq!(t.on_left(id(1), t0), 0, "marked already");
    assert_eq!(t.next_deadline(), Some(t0 + DEPARTED_RECHECK));
    assert!(
        t.on_removed(&name(1)).is_empty(),
        "the peer manager dropped the source"
    );
    assert!(t.on_tick(t0 + DEPARTED_RECHECK).is_empty());
    assert_eq!(t.records(), 0);
}

#[test]
fn a_departed_record_still_held_after_the_recheck_is_found_again() {
    let (t0, mut t) = knowing(&[]);
    t.on_announced(OWN);
    t.on_resolved(peer(1), t0);
    t.on_resolved(peer(2), t0);
    assert_eq!(t.on_left(id(1), t0 + secs(1)), 1);
    assert!(t.on_tick(t0 + secs(5)).is_empty());
    let ev = t.on_tick(t0 + secs(1) + DEPARTED_RECHECK);
    assert_eq!(ev, vec![found(1, &["10.0.0.1"], false)]);
    assert_eq!(t.next_deadline(), None);
    // Peer 2 leaves and its record is announced again before the re-check: found at
    // once, although its addresses did not change.
    t.on_left(id(2), t0 + secs(10));
    let ev = t.on_resolved(peer(2), t0 + secs(11));
    assert_eq!(ev, vec![found(2, &["10.0.0.2"], false)]);
    assert!(t.on_tick(t0 + secs(60)).is_empty(), "no second report");
}

#[test]
fn a_departed_peer_known_only_from_a_hint_is_dropped() {
    let (t0, mut t) = knowing(&[]);
    t.on_hint(peer(1), t0);
    assert_eq!(t.on_left(id(1), t0), 1);
    assert_eq!(t.records(), 0);
    assert_eq!(t.next_deadline(), None);
    assert!(t.on_tick(t0 + secs(60)).is_empty());
}

#[test]
fn records_of_other_app_ids_are_counted_while_they_live() {
    let (t0, mut t) = knowing(&[]);
    t.on_resolved(rec(&name(1), 1, "other", &["10.0.0.1"]), t0);
    t.on_resolved(rec(&name(2), 2, "other", &["10.0.0.2"]), t0);
    t.on_resolved(rec(&name(1), 1, "other", &["10.0.0.1"]), t0);
    assert_eq!(t.other_app_records(), 2);
    assert!(t.on_removed(&name(2)).is_empty(), "not ours: no Lost");
    assert_eq!(t.other_app_records(), 1);
    // The node fixed its app id: now it is ours, and found.
    let ev = t.on_resolved(rec(&name(1), 1, "app", &["10.0.0.1"]), t0);
    assert_eq!(ev.len(), 1);
    assert_eq!(t.other_app_records(), 0);
}

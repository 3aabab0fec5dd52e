//! Whom the core dials and when: tie-break, dedup, backoff, limits, floods.

use std::time::Duration;

use iroh::SecretKey;

use super::*;

#[test]
fn the_smaller_id_dials_at_once_and_the_larger_after_the_tie_break() {
    let v = ids(2);
    let (small, large) = (v[0], v[1]);
    let mut r = Rig::new(small, limits());
    let acts = r.found(large, addr(2), Source::Mdns);
    assert_eq!(dials(&acts), vec![large]);
    assert_eq!(
        emitted(&acts),
        vec![PeerEventKind::Found, PeerEventKind::Connecting]
    );

    let mut r = Rig::new(large, limits());
    assert!(dials(&r.found(small, addr(1), Source::Mdns)).is_empty());
    assert_eq!(r.core.next_deadline(r.now), Some(r.now + TIE_BREAK_DELAY));
    let (before, due) = (
        TIE_BREAK_DELAY.as_secs_f64() - 0.1,
        TIE_BREAK_DELAY.as_secs_f64(),
    );
    assert!(dials(&r.at(before).feed(Input::Tick)).is_empty());
    assert_eq!(dials(&r.at(due).feed(Input::Tick)), vec![small]);
}

#[test]
fn news_during_the_tie_break_do_not_postpone_the_dial() {
    // mDNS resolves a peer twice (IPv4 first, then with IPv6): the second, with a new
    // address, must not restart the larger id's wait.
    let v = ids(2);
    let (small, large) = (v[0], v[1]);
    let mut r = Rig::new(large, limits());
    let due = r.now + TIE_BREAK_DELAY;
    assert!(dials(&r.found(small, addr(1), Source::Mdns)).is_empty());
    let half = TIE_BREAK_DELAY.as_secs_f64() / 2.0;
    assert!(dials(&r.at(half).found(small, addr(3), Source::Mdns)).is_empty());
    assert_eq!(r.core.next_deadline(r.now), Some(due));
    // After a failure, news still cuts the backoff short, down to the tie-break.
    let t = TIE_BREAK_DELAY.as_secs_f64();
    assert_eq!(dials(&r.at(t).feed(Input::Tick)), vec![small]);
    for _ in 0..5 {
        r.dial_err(small, timeout()); // each failure doubles the backoff
    }
    let retry = r.core.peers[&small]
        .retry_at()
        .expect("a retry is scheduled");
    assert!(
        retry > r.now + TIE_BREAK_DELAY,
        "backoff {:?}",
        retry - r.now
    );
    r.found(small, addr(4), Source::Mdns);
    let after_news = r.core.peers[&small].retry_at();
    assert_eq!(after_news, Some(r.now + TIE_BREAK_DELAY));
}

#[test]
fn a_peer_that_cannot_know_us_yet_is_dialled_at_once_by_either_side() {
    let v = ids(2);
    let mut r = Rig::new(v[1], limits());
    let acts = r.found_as(v[0], addr(1), Source::Mdns, true);
    assert_eq!(dials(&acts), vec![v[0]]);
}

#[test]
fn one_dial_in_flight_per_peer_whatever_discovery_repeats() {
    let v = ids(2);
    let mut r = Rig::new(v[0], limits());
    assert_eq!(dials(&r.found(v[1], addr(2), Source::Mdns)).len(), 1);
    assert!(dials(&r.found(v[1], addr(2), Source::Mdns)).is_empty());
    assert!(dials(&r.found(v[1], addr(3), Source::Gossip)).is_empty());
    assert!(dials(&r.at(5.0).feed(Input::Tick)).is_empty());
    assert_eq!(r.state(v[1]), Some(PeerState::Connecting));
    assert_eq!(r.counter(|c| &c.dials_started), 1);
}

#[test]
fn failures_back_off_with_growing_delays_and_rejections_wait_a_minute() {
    let v = ids(2);
    let mut r = Rig::new(v[0], limits());
    r.found(v[1], addr(2), Source::Mdns);
    let mut last = Duration::ZERO;
    let mut t = 0.0;
    for n in 0..6 {
        r.at(t).dial_err(v[1], timeout());
        let due = r.core.peers[&v[1]]
            .retry_at()
            .expect("a retry is scheduled");
        let wait = due - r.now;
        // Equal jitter: at least half the nominal delay, which doubles every time.
        assert!(
            wait >= backoff::BASE * 2u32.pow(n) / 2,
            "failure {n}: {wait:?}"
        );
        assert!(
            n < 2 || wait > last / 2,
            "failure {n}: {wait:?} after {last:?}"
        );
        last = wait;
        t = (due - r.t0).as_secs_f64();
        assert_eq!(dials(&r.at(t).feed(Input::Tick)), vec![v[1]]);
    }
    let rejected = DialError::Formation(FormationError::KeyMismatch);
    let acts = r.at(t + 0.1).dial_err(v[1], rejected);
    assert_eq!(emitted(&acts), vec![PeerEventKind::Rejected]);
    assert_eq!(r.state(v[1]), Some(PeerState::Rejected));
    assert!(dials(&r.at(t + 59.0).feed(Input::Tick)).is_empty());
    assert_eq!(dials(&r.at(t + 60.2).feed(Input::Tick)), vec![v[1]]);
}

#[test]
fn max_peers_dials_half_and_keeps_extra_inbound_for_one_exchange() {
    let v = ids(8);
    let mut r = Rig::new(
        v[0],
        Limits {
            max_peers: 4,
            ..limits()
        },
    );
    let mut dialled = Vec::new();
    for (i, id) in v[1..].iter().enumerate() {
        dialled.extend(dials(&r.found_as(
            *id,
            addr(i as u16 + 2),
            Source::Mdns,
            true,
        )));
    }
    assert_eq!(dialled.len(), 2, "dial target is half of --max-peers");
    for id in &dialled {
        r.dial_ok(*id);
    }
    let inbound: Vec<_> = v[1..]
        .iter()
        .filter(|id| !dialled.contains(id))
        .copied()
        .collect();
    r.incoming(inbound[0]);
    r.incoming(inbound[1]);
    assert_eq!(r.core.connected_count(), 4);
    let (extra, acts) = r.incoming(inbound[2]);
    assert!(acts.contains(&Action::CloseAfter {
        conn: extra,
        code: CloseCode::OverCapacity,
        after: OVER_CAPACITY_GRACE
    }));
    assert!(
        dials(&r.at(10.0).feed(Input::Tick)).is_empty(),
        "at capacity: no dials"
    );
    // A configured peer is dialled regardless.
    let acts = r.connect(inbound[3], Some(addr(50)), 3);
    assert_eq!(dials(&acts), vec![inbound[3]]);
}

#[test]
fn concurrent_dials_are_bounded_and_a_finished_dial_frees_a_slot() {
    let v = ids(20);
    let mut r = Rig::new(
        v[0],
        Limits {
            max_concurrent_dials: 4,
            ..limits()
        },
    );
    let mut started = Vec::new();
    // Each in a range of its own: one range never takes every slot (see fair.rs).
    for (i, id) in v[1..].iter().enumerate() {
        started.extend(dials(&r.found_as(
            *id,
            addr((i as u16 + 2) * 256 + 1),
            Source::Mdns,
            true,
        )));
    }
    assert_eq!(started.len(), 4);
    assert_eq!(r.core.next_deadline(r.now), Some(r.now + BLOCKED_TICK));
    let acts = r.at(0.5).dial_err(started[0], timeout());
    assert_eq!(
        dials(&acts).len(),
        1,
        "the freed slot goes to a waiting peer at once"
    );
}

#[test]
fn the_dial_rate_is_bounded_by_the_token_bucket() {
    let v = ids(30);
    let mut r = Rig::new(
        v[0],
        Limits {
            max_dials_per_sec: 5,
            ..limits()
        },
    );
    let mut n = 0;
    for (i, id) in v[1..].iter().enumerate() {
        n += dials(&r.found_as(*id, addr(i as u16 + 2), Source::Mdns, true)).len();
    }
    assert_eq!(n, 5, "one second's worth at once");
    assert_eq!(dials(&r.at(0.2).feed(Input::Tick)).len(), 1);
    assert_eq!(dials(&r.at(1.2).feed(Input::Tick)).len(), 5);
}

#[test]
fn a_flood_of_found_events_fills_the_table_and_evicts_only_unconnected_fakes() {
    let real = key(200);
    let stat = key(201);
    let mut r = Rig::new(
        key(250),
        Limits {
            max_known_peers: 16,
            max_concurrent_dials: 4,
            ..limits()
        },
    );
    r.core.add_static(stat, PeerHost::Addr(addr(900)), r.now);
    r.found(real, addr(901), Source::Mdns);
    r.dial_ok(real);
    // 500 fakes at three shared addresses.
    for n in 0..500u32 {
        let fake = SecretKey::from_bytes(&[
            (n % 251) as u8,
            (n / 251) as u8 + 1,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
        ])
        .public();
        r.at(n as f64 * 0.01)
            .found(fake, addr(1000 + (n % 3) as u16), Source::Mdns);
        assert!(r.core.peers.len() <= 16);
    }
    assert!(
        r.core.peers.contains_key(&real),
        "connected peers are never evicted"
    );
    assert!(
        r.core.peers.contains_key(&stat),
        "static peers are never evicted"
    );
    assert!(r.counter(|c| &c.peers_evicted) >= 480);
    assert!(r.core.dials_in_flight <= 4);
}

#[test]
fn a_dial_that_ends_after_its_peer_was_removed_is_closed() {
    let v = ids(2);
    let mut r = Rig::new(v[0], limits());
    r.found(v[1], addr(2), Source::Mdns);
    r.core.peers.remove(&v[1]);
    let (c, acts) = r.dial_ok(v[1]);
    assert_eq!(closes(&acts), vec![(c, CloseCode::Shutdown)]);
    assert_eq!(r.core.dials_in_flight, 0);
}

#[test]
fn our_own_id_is_counted_and_ignored() {
    let me = key(1);
    let mut r = Rig::new(me, limits());
    assert!(r.found(me, addr(1), Source::Mdns).is_empty());
    assert!(r.core.peers.is_empty());
    assert_eq!(r.counter(|c| &c.self_discoveries_ignored), 1);
}

#[test]
fn dead_addresses_sink_fakes_behind_a_real_peer_at_a_fresh_address() {
    let mut r = Rig::new(
        key(250),
        Limits {
            max_concurrent_dials: 2,
            max_dials_per_sec: 100,
            ..limits()
        },
    );
    let fakes: Vec<_> = (1..=6).map(key).collect();
    for f in &fakes {
        r.found_as(*f, addr(66), Source::Mdns, true);
    }
    // The first fake dial times out: its address is now dead.
    let first = r
        .core
        .peers
        .iter()
        .find(|(_, p)| p.dial.is_some())
        .map(|(id, _)| *id);
    let acts = r
        .at(2.0)
        .dial_err(first.expect("a dial is in flight"), timeout());
    let real = key(200);
    let acts2 = r.at(2.1).found_as(real, addr(3), Source::Mdns, true);
    let next: Vec<_> = dials(&acts).into_iter().chain(dials(&acts2)).collect();
    assert!(
        next.contains(&real),
        "the real peer is dialled before the fakes: {next:?}"
    );
}

#[test]
fn the_next_deadline_is_the_earliest_retry() {
    let v = ids(3);
    let mut r = Rig::new(v[0], limits());
    assert_eq!(r.core.next_deadline(r.now), None);
    r.found(v[1], addr(2), Source::Mdns);
    r.dial_err(v[1], timeout());
    let due = r.core.peers[&v[1]].retry_at().unwrap();
    assert_eq!(r.core.next_deadline(r.now), Some(due));
}

#[test]
fn a_first_dial_waits_for_an_answer_as_long_as_the_links_are_slow() {
    use crate::node::peers::rules::{ANSWER_RTTS, DIAL_TIMEOUT};
    let v = ids(4);
    let mut r = Rig::new(v[0], limits());
    // No connection yet: the short wait that bounds fake announcements.
    let acts = r.found(v[1], addr(2), Source::Mdns);
    let t = dial_timeouts(&acts);
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0].1.answer, t[0].1.total),
        (FIRST_DIAL_TIMEOUT, DIAL_TIMEOUT)
    );
    // Connections over a radio link measured 300 ms round trips in their handshakes.
    r.rtt = Some(Duration::from_millis(300));
    r.at(0.5).dial_ok(v[1]);
    r.at(0.6).incoming(v[3]);
    let acts = r.at(0.7).found(v[2], addr(3), Source::Mdns);
    let t = dial_timeouts(&acts);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].1.answer, Duration::from_millis(300) * ANSWER_RTTS);
    // A first dial whose answer timed out is tried again with the whole timeout.
    r.at(5.5).dial_err(v[2], timeout());
    let acts = r.at(20.0).feed(Input::Tick);
    let t = dial_timeouts(&acts);
    assert_eq!(t.len(), 1, "{acts:?}");
    assert_eq!(t[0].1.answer, DIAL_TIMEOUT);
}

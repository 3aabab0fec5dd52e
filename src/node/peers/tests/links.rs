//! Connections, requests and departures: install, duplicates, closes, DisconnectPeer,
//! ConnectPeer, shutdown.

use std::collections::BTreeSet;

use iroh::endpoint::ConnectionError;

use super::*;

#[test]
fn a_successful_dial_installs_watches_and_resets_the_backoff() {
    let v = ids(2);
    let mut r = Rig::new(v[0], limits());
    r.found(v[1], addr(2), Source::Mdns);
    r.at(0.1).dial_err(v[1], timeout());
    assert_eq!(r.core.peers[&v[1]].backoff.failures(), 1);
    let acts = r.at(5.0).feed(Input::Tick);
    assert_eq!(dials(&acts), vec![v[1]]);
    let (c, acts) = r.dial_ok(v[1]);
    assert!(acts.contains(&Action::Watch {
        id: v[1],
        conn: c,
        announce: true
    }));
    assert_eq!(emitted(&acts), vec![PeerEventKind::Connected]);
    assert_eq!(r.state(v[1]), Some(PeerState::Connected));
    assert_eq!(r.core.peers[&v[1]].backoff.failures(), 0);
    assert_eq!(
        r.core.next_deadline(r.now),
        None,
        "nothing waits while connected"
    );
}

#[test]
fn disconnect_pauses_redials_until_the_peer_is_found_with_something_new() {
    let v = ids(2);
    let mut r = Rig::new(v[0], limits());
    r.found(v[1], addr(2), Source::Mdns);
    let (c, _) = r.dial_ok(v[1]);
    let acts = r.feed(Input::Disconnect {
        id: v[1],
        ticket: 7,
    });
    assert_eq!(closes(&acts), vec![(c, CloseCode::Disconnect)]);
    assert_eq!(answers(&acts), vec![&Answer::Done]);
    assert!(
        r.core.peers[&v[1]]
            .info(&v[1], Default::default(), r.now)
            .paused
    );
    assert_eq!(r.state(v[1]), Some(PeerState::Backoff));
    // Its watcher reports the close: nothing changes, nothing is redialled.
    let reason = ConnectionError::LocallyClosed;
    r.feed(Input::Closed {
        id: v[1],
        conn: c,
        reason,
    });
    assert!(dials(&r.at(100.0).feed(Input::Tick)).is_empty());
    // The same record again is not news; a new address is.
    assert!(dials(&r.found(v[1], addr(2), Source::Mdns)).is_empty());
    assert_eq!(dials(&r.found(v[1], addr(3), Source::Mdns)), vec![v[1]]);
}

#[test]
fn a_peer_that_disconnected_us_is_not_redialled_either() {
    let v = ids(2);
    let mut r = Rig::new(v[0], limits());
    r.found(v[1], addr(2), Source::Mdns);
    let (c, _) = r.dial_ok(v[1]);
    r.closed_by_peer(v[1], c, CloseCode::Disconnect);
    assert_eq!(r.core.peers[&v[1]].link, Link::Paused);
    assert!(dials(&r.at(100.0).feed(Input::Tick)).is_empty());
    // It may connect to us again, which ends the pause.
    r.incoming(v[1]);
    assert_eq!(r.state(v[1]), Some(PeerState::Connected));
}

#[test]
fn a_disconnect_of_an_unknown_peer_is_refused() {
    let mut r = Rig::new(key(1), limits());
    let acts = r.feed(Input::Disconnect {
        id: key(2),
        ticket: 1,
    });
    assert_eq!(
        answers(&acts),
        vec![&Answer::Failed(RequestError::NotFound(key(2)))]
    );
}

#[test]
fn simultaneous_dials_keep_the_one_dialled_by_the_smaller_id_on_both_sides() {
    let v = ids(2);
    for me in [0, 1] {
        let (mine, theirs) = (v[me], v[1 - me]);
        let mut r = Rig::new(mine, limits());
        r.found_as(theirs, addr(2), Source::Mdns, true);
        let (out, _) = r.dial_ok(theirs);
        let (inc, acts) = r.at(0.5).incoming(theirs);
        let kept = if mine == v[0] { out } else { inc };
        let dropped = if kept == out { inc } else { out };
        assert_eq!(r.core.peers[&theirs].live().map(|l| l.conn), Some(kept));
        // Only the smaller id closes the other; the larger keeps it until then.
        let standby = r.core.peers[&theirs].standby.map(|s| s.conn.conn);
        if mine == v[0] {
            assert_eq!(closes(&acts), vec![(dropped, CloseCode::Duplicate)]);
            assert_eq!(r.counter(|c| &c.duplicates_closed), 1);
            assert_eq!(standby, None);
        } else {
            assert!(closes(&acts).is_empty(), "{acts:?}");
            assert_eq!(standby, Some(dropped));
        }
    }
}

#[test]
fn a_stale_connection_gives_way_to_the_peers_redial() {
    let v = ids(2);
    let mut r = Rig::new(v[0], limits());
    r.found(v[1], addr(2), Source::Mdns);
    let (old, _) = r.dial_ok(v[1]);
    let (new, acts) = r.at(60.0).incoming(v[1]);
    assert_eq!(closes(&acts), vec![(old, CloseCode::Duplicate)]);
    assert_eq!(r.core.peers[&v[1]].live().map(|l| l.conn), Some(new));
    // The old connection's end is then no news.
    let acts = r.closed_by_peer(v[1], old, CloseCode::Duplicate);
    assert!(emitted(&acts).is_empty());
    assert_eq!(r.state(v[1]), Some(PeerState::Connected));
}

#[test]
fn a_lost_peer_stays_while_connected_and_goes_when_no_source_knows_it() {
    let v = ids(3);
    let mut r = Rig::new(v[0], limits());
    r.found(v[1], addr(2), Source::Mdns);
    r.found(v[1], addr(2), Source::Gossip);
    let (c, _) = r.dial_ok(v[1]);
    r.feed(Input::Discovery(DiscoveryEvent::Lost {
        id: v[1],
        source: Source::Mdns,
    }));
    r.feed(Input::Discovery(DiscoveryEvent::Lost {
        id: v[1],
        source: Source::Gossip,
    }));
    assert_eq!(
        r.state(v[1]),
        Some(PeerState::Connected),
        "the connection decides"
    );
    let acts = r.feed(Input::Closed {
        id: v[1],
        conn: c,
        reason: ConnectionError::TimedOut,
    });
    assert_eq!(
        emitted(&acts),
        vec![PeerEventKind::Disconnected, PeerEventKind::Removed]
    );
    assert!(r.state(v[1]).is_none());
    // An unconnected peer goes with its last source.
    r.found(v[2], addr(3), Source::Dns);
    r.dial_err(v[2], timeout());
    r.feed(Input::Discovery(DiscoveryEvent::Lost {
        id: v[2],
        source: Source::Dns,
    }));
    assert!(r.state(v[2]).is_none());
}

#[test]
fn a_peer_that_shuts_down_leaves_mdns_at_once_and_is_redialled_no_sooner_than_2s() {
    let v = ids(2);
    let mut r = Rig::new(v[0], limits());
    r.found(v[1], addr(2), Source::Mdns);
    r.found(v[1], addr(2), Source::Gossip);
    let (c, _) = r.dial_ok(v[1]);
    let acts = r.closed_by_peer(v[1], c, CloseCode::Shutdown);
    assert_eq!(
        emitted(&acts),
        vec![
            PeerEventKind::Disconnected,
            PeerEventKind::Left,
            PeerEventKind::Lost
        ]
    );
    let p = &r.core.peers[&v[1]];
    assert_eq!(
        p.sources,
        BTreeSet::from([Source::Gossip]),
        "gossip rows are others' words"
    );
    assert!(p.retry_at().is_some_and(|t| t >= r.now + PEER_LEFT_DELAY));
    // Known by mDNS only: it leaves the table.
    let mut r = Rig::new(v[0], limits());
    r.found(v[1], addr(2), Source::Mdns);
    let (c, _) = r.dial_ok(v[1]);
    let acts = r.closed_by_peer(v[1], c, CloseCode::Shutdown);
    assert_eq!(emitted(&acts).last(), Some(&PeerEventKind::Removed));
}

#[test]
fn a_peer_at_its_limit_is_retried_only_after_the_longest_backoff() {
    let v = ids(2);
    let mut r = Rig::new(v[0], limits());
    r.found(v[1], addr(2), Source::Mdns);
    let (c, _) = r.dial_ok(v[1]);
    r.closed_by_peer(v[1], c, CloseCode::OverCapacity);
    assert_eq!(r.core.peers[&v[1]].retry_at(), Some(r.now + backoff::MAX));
}

#[test]
fn connect_requests_are_answered_when_the_dial_ends() {
    let v = ids(3);
    let mut r = Rig::new(v[0], limits());
    let acts = r.connect(v[0], None, 1);
    assert_eq!(
        answers(&acts),
        vec![&Answer::Failed(RequestError::SelfConnect)]
    );
    let acts = r.connect(v[1], None, 2);
    assert_eq!(
        answers(&acts),
        vec![&Answer::Failed(RequestError::NoAddress(v[1]))]
    );

    let acts = r.connect(v[1], Some(addr(2)), 3);
    assert_eq!(dials(&acts), vec![v[1]]);
    assert!(answers(&acts).is_empty());
    let (_, acts) = r.dial_ok(v[1]);
    assert_eq!(answers(&acts), vec![&Answer::Connected(v[1])]);
    // Already connected: at once.
    let acts = r.connect(v[1], None, 4);
    assert_eq!(answers(&acts), vec![&Answer::Connected(v[1])]);

    // A rejected peer is tried at once when an operator asks, and the failure answers.
    r.connect(v[2], Some(addr(3)), 5);
    let acts = r.dial_err(v[2], DialError::Formation(FormationError::KeyMismatch));
    assert!(matches!(
        answers(&acts)[..],
        [Answer::Failed(RequestError::DialFailed(_))]
    ));
    let acts = r.at(1.0).connect(v[2], None, 6);
    assert_eq!(dials(&acts), vec![v[2]]);
}

#[test]
fn an_abandoned_request_no_longer_pins_the_row() {
    let v = ids(2);
    let mut r = Rig::new(v[0], limits());
    r.connect(v[1], Some(addr(2)), 9);
    r.feed(Input::Abandoned { ticket: 9 });
    assert!(r.core.peers[&v[1]].tickets.is_empty());
}

#[test]
fn a_failed_incoming_check_marks_a_known_peer_rejected_and_ignores_strangers() {
    let v = ids(3);
    let mut r = Rig::new(v[0], limits());
    r.found(v[1], addr(2), Source::Mdns);
    r.dial_err(v[1], timeout());
    let acts = r.feed(Input::IncomingFailed {
        id: v[1],
        error: FormationError::AppIdMismatch {
            ours: "a".into(),
            theirs: "b".into(),
        },
    });
    assert_eq!(emitted(&acts), vec![PeerEventKind::Rejected]);
    assert_eq!(r.state(v[1]), Some(PeerState::Rejected));
    r.feed(Input::IncomingFailed {
        id: v[2],
        error: FormationError::KeyMismatch,
    });
    assert!(r.state(v[2]).is_none(), "strangers cannot fill the table");
    assert_eq!(r.counter(|c| &c.incoming_refused), 2);
}

#[test]
fn shutdown_closes_every_connection_and_answers_every_caller() {
    let v = ids(4);
    let mut r = Rig::new(v[0], limits());
    let mut conns = Vec::new();
    for id in &v[1..3] {
        r.found_as(*id, addr(2), Source::Mdns, true);
        conns.push(r.dial_ok(*id).0);
    }
    r.connect(v[3], Some(addr(4)), 5);
    let acts = r.feed(Input::Shutdown);
    let mut closed = closes(&acts);
    closed.sort_by_key(|(c, _)| *c);
    assert_eq!(
        closed,
        conns
            .iter()
            .map(|c| (*c, CloseCode::Shutdown))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        answers(&acts),
        vec![&Answer::Failed(RequestError::ShuttingDown)]
    );
}

#[test]
fn a_peer_that_dialled_us_shows_its_address_and_the_source_inbound_while_connected() {
    let v = ids(2);
    let mut r = Rig::new(v[0], limits());
    let (c, _) = r.incoming(v[1]);
    let info = r.core.peers[&v[1]].info(&v[1], Default::default(), r.now);
    assert_eq!(info.sources, vec![Source::Inbound]);
    assert_eq!(info.addrs, vec!["10.77.9.9:40000".to_string()]);
    // Gone with its connection: nothing else knew it.
    let acts = r.feed(Input::Closed {
        id: v[1],
        conn: c,
        reason: ConnectionError::TimedOut,
    });
    assert_eq!(emitted(&acts).last(), Some(&PeerEventKind::Removed));
    assert!(r.state(v[1]).is_none());
}

#[test]
fn forget_removes_a_peer_until_a_source_finds_it_again_but_keeps_static_peers() {
    let v = ids(3);
    let mut r = Rig::new(v[0], limits());
    r.found(v[1], addr(2), Source::Mdns);
    let (c, _) = r.dial_ok(v[1]);
    let acts = r.feed(Input::Forget {
        id: v[1],
        ticket: 1,
    });
    assert_eq!(closes(&acts), vec![(c, CloseCode::Disconnect)]);
    assert_eq!(answers(&acts), vec![&Answer::Done]);
    assert!(r.state(v[1]).is_none());
    assert!(dials(&r.at(100.0).feed(Input::Tick)).is_empty());
    assert_eq!(dials(&r.found(v[1], addr(2), Source::Mdns)), vec![v[1]]);

    r.core.add_static(v[2], PeerHost::Addr(addr(3)), r.now);
    let acts = r.feed(Input::Forget {
        id: v[2],
        ticket: 2,
    });
    assert_eq!(
        answers(&acts),
        vec![&Answer::Failed(RequestError::Configured(v[2]))]
    );
    let acts = r.feed(Input::Forget {
        id: key(99),
        ticket: 3,
    });
    assert_eq!(
        answers(&acts),
        vec![&Answer::Failed(RequestError::NotFound(key(99)))]
    );
}

#[test]
fn forgetting_a_peer_mid_dial_releases_its_addresses_and_closes_the_late_connection() {
    let v = ids(2);
    let mut r = Rig::new(v[0], limits());
    r.connect(v[1], Some(addr(2)), 1);
    let acts = r.feed(Input::Forget {
        id: v[1],
        ticket: 2,
    });
    assert_eq!(
        answers(&acts),
        vec![
            &Answer::Failed(RequestError::Forgotten(v[1])),
            &Answer::Done
        ]
    );
    assert!(r.core.in_flight_addrs.is_empty());
    let (c, acts) = r.dial_ok(v[1]);
    assert_eq!(closes(&acts), vec![(c, CloseCode::Shutdown)]);
    assert_eq!(r.core.dials_in_flight, 0);
}

#[test]
fn a_connect_target_that_never_connects_expires() {
    let v = ids(3);
    let mut r = Rig::new(v[0], limits());
    r.connect(v[1], Some(addr(2)), 1);
    r.dial_err(v[1], timeout());
    // One that connected once stays.
    r.connect(v[2], Some(addr(3)), 2);
    let (c, _) = r.dial_ok(v[2]);
    r.feed(Input::Closed {
        id: v[2],
        conn: c,
        reason: ConnectionError::TimedOut,
    });
    let ttl = API_PEER_TTL.as_secs_f64();
    assert!(r.core.next_deadline(r.now).is_some());
    // Redialled until then (a dial in flight holds the row until it ends).
    for id in dials(&r.at(ttl - 1.0).feed(Input::Tick)) {
        r.dial_err(id, timeout());
    }
    assert!(r.state(v[1]).is_some());
    let acts = r.at(ttl + 0.1).feed(Input::Tick);
    assert!(emitted(&acts).contains(&PeerEventKind::Removed));
    assert!(r.state(v[1]).is_none());
    assert!(r.state(v[2]).is_some());
}

#[test]
fn inbound_is_a_source_only_while_nothing_else_knows_the_peer() {
    let v = ids(3);
    let mut r = Rig::new(v[0], limits());
    r.found(v[1], addr(2), Source::Gossip);
    r.incoming(v[1]);
    assert_eq!(
        r.core.peers[&v[1]].sources,
        BTreeSet::from([Source::Gossip])
    );
    r.incoming(v[2]);
    assert_eq!(
        r.core.peers[&v[2]].sources,
        BTreeSet::from([Source::Inbound])
    );
    r.found(v[2], addr(3), Source::Mdns);
    assert_eq!(r.core.peers[&v[2]].sources, BTreeSet::from([Source::Mdns]));
}

#[test]
fn a_row_held_past_its_expiry_never_gives_a_deadline_in_the_past() {
    let v = ids(2);
    let mut r = Rig::new(v[0], limits());
    r.connect(v[1], Some(addr(2)), 1);
    // The dial is still in flight when the TTL passes: the row stays, and the driver
    // is asked back soon, not at once and for ever.
    let later = API_PEER_TTL.as_secs_f64() + 5.0;
    r.at(later).feed(Input::Tick);
    assert!(r.state(v[1]).is_some());
    let next = r.core.next_deadline(r.now).expect("a deadline");
    assert!(next >= r.now + BLOCKED_TICK, "{:?}", next - r.now);
}

#[test]
fn a_revoked_peer_is_closed_and_left_alone_an_ended_one_is_redialled_at_once() {
    let v = ids(3);
    let mut r = Rig::new(v[0], limits());
    r.found(v[1], addr(2), Source::Mdns);
    r.found(v[2], addr(3), Source::Mdns);
    let (c1, _) = r.dial_ok(v[1]);
    let (c2, _) = r.dial_ok(v[2]);
    let acts = r.feed(Input::Void {
        id: v[1],
        refusal: crate::trust::Refusal::Revoked,
    });
    assert_eq!(closes(&acts), vec![(c1, CloseCode::CertRevoked)]);
    assert_eq!(r.state(v[1]), Some(PeerState::Rejected));
    let acts = r.feed(Input::Void {
        id: v[2],
        refusal: crate::trust::Refusal::Expired,
    });
    assert_eq!(closes(&acts), vec![(c2, CloseCode::CertExpired)]);
    let redials = dials(&r.at(0.2).feed(Input::Tick));
    assert!(redials.contains(&v[2]), "the check decides: {redials:?}");
    assert!(!redials.contains(&v[1]), "revoked: no redial");
    // An ended certificate of a peer not connected: nothing to do.
    assert!(r
        .feed(Input::Void {
            id: v[1],
            refusal: crate::trust::Refusal::Expired,
        })
        .is_empty());
}

//! Addresses that move: a source that reports whole sets (mDNS) replaces what it said
//! before, and a connected peer whose connection's address went is reconnected.

use super::*;

fn found_set(r: &mut Rig, id: EndpointId, addrs: &[SocketAddr], source: Source) -> Vec<Action> {
    r.feed(Input::Discovery(DiscoveryEvent::Found {
        id,
        addrs: addrs.iter().copied().collect(),
        source,
        unaware: true,
    }))
}

/// Peer `v[1]` found by mDNS at `a` and connected by our dial, on a path to `a`.
fn connected_at(a: SocketAddr) -> (Rig, Vec<EndpointId>, ConnId) {
    let v = ids(2);
    let mut r = Rig::new(v[0], limits());
    let acts = found_set(&mut r, v[1], &[a], Source::Mdns);
    assert_eq!(dials(&acts), vec![v[1]]);
    let conn = r.conn();
    r.feed(Input::DialDone {
        id: v[1],
        result: Ok(NewConn {
            id: conn,
            remote: Some(a),
            rtt: None,
        }),
    });
    assert_eq!(r.state(v[1]), Some(PeerState::Connected));
    (r, v, conn)
}

fn addrs_of(r: &Rig, id: EndpointId) -> Vec<SocketAddr> {
    r.core.peers[&id].addrs.iter().copied().collect()
}

#[test]
fn an_mdns_set_replaces_the_one_before_but_keeps_what_others_know() {
    let v = ids(3);
    let mut r = Rig::new(v[0], limits());
    found_set(&mut r, v[1], &[addr(1), addr(2)], Source::Mdns);
    found_set(&mut r, v[1], &[addr(2)], Source::Gossip);
    found_set(&mut r, v[1], &[addr(3)], Source::Mdns);
    // addr(1) was mDNS's only: gone. addr(2) gossip also knows: kept.
    assert_eq!(addrs_of(&r, v[1]), vec![addr(2), addr(3)]);
    // Gossip does not report whole sets: its Found only adds.
    found_set(&mut r, v[1], &[addr(4)], Source::Gossip);
    assert_eq!(addrs_of(&r, v[1]), vec![addr(2), addr(3), addr(4)]);

    // An address an operator gave stays whatever mDNS says.
    r.core.add_static(v[2], PeerHost::Addr(addr(7)), r.now);
    found_set(&mut r, v[2], &[addr(7), addr(8)], Source::Mdns);
    found_set(&mut r, v[2], &[addr(8)], Source::Mdns);
    assert_eq!(addrs_of(&r, v[2]), vec![addr(7), addr(8)]);
}

#[test]
fn a_connected_peer_that_moved_is_closed_and_dialled_at_its_new_address() {
    let (mut r, v, conn) = connected_at(addr(1));
    r.at(10.0);
    let acts = found_set(&mut r, v[1], &[addr(201)], Source::Mdns);
    assert_eq!(closes(&acts), vec![(conn, CloseCode::Duplicate)]);
    assert_eq!(emitted(&acts), vec![PeerEventKind::Disconnected]);
    assert!(dials(&acts).is_empty(), "not beside the old connection");
    assert_eq!(addrs_of(&r, v[1]), vec![addr(201)]);
    // The old connection's end, when the driver reports it, changes nothing.
    r.closed_by_peer(v[1], conn, CloseCode::Duplicate);
    // The redial comes a moment later, to the new address only.
    r.at(10.0 + 0.1);
    let acts = r.feed(Input::Tick);
    let to: Vec<_> = acts
        .iter()
        .filter_map(|a| match a {
            Action::Dial { addrs, .. } => Some(addrs.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(to, vec![vec![addr(201)]]);
    let (_, acts) = r.dial_ok(v[1]);
    assert_eq!(emitted(&acts), vec![PeerEventKind::Connected]);
    assert_eq!(r.state(v[1]), Some(PeerState::Connected));
}

#[test]
fn a_new_address_beside_the_live_one_is_no_move() {
    let (mut r, v, _) = connected_at(addr(1));
    r.at(10.0);
    let acts = found_set(&mut r, v[1], &[addr(1), addr(2)], Source::Mdns);
    assert!(closes(&acts).is_empty(), "{acts:?}");
    assert!(dials(&acts).is_empty(), "{acts:?}");
    // Nor is the loss of an address the connection does not use.
    let acts = found_set(&mut r, v[1], &[addr(1)], Source::Mdns);
    assert!(closes(&acts).is_empty(), "{acts:?}");
    assert_eq!(r.state(v[1]), Some(PeerState::Connected));
}

use std::time::Duration;

use super::*;

/// A readable 64-hex id: `n` repeated.
fn id(n: char) -> String {
    std::iter::repeat_n(n, 64).collect()
}

fn peer(n: char, state: pb::PeerState) -> pb::Peer {
    pb::Peer {
        endpoint_id: id(n),
        state: state as i32,
        sources: vec!["mdns".into()],
        addrs: vec![format!("10.77.0.{}:9470", n as u8)],
        ..Default::default()
    }
}

fn snapshot(peers: Vec<pb::Peer>) -> Snapshot {
    Snapshot {
        status: pb::GetStatusResponse {
            endpoint_id: id('a'),
            app_id: "test".into(),
            shared_key: true,
            ..Default::default()
        },
        peers,
        iroh: vec![],
    }
}

fn nb(list: &[(char, &[char])]) -> Neighbours {
    list.iter()
        .map(|(p, n)| (id(*p), n.iter().map(|x| id(*x)).collect()))
        .collect()
}

#[test]
fn full_mesh_has_no_bridge_and_no_remote() {
    use pb::PeerState::Connected;
    let snap = snapshot(vec![peer('b', Connected), peer('c', Connected)]);
    let s = build(
        &snap,
        &nb(&[('b', &['a', 'c']), ('c', &['a', 'b'])]),
        &HashMap::new(),
        vec![],
    );
    assert!(!s.me.bridge);
    assert!(s.peers.iter().all(|p| !p.bridge && p.state == "connected"));
    assert!(s.remote.is_empty());
    assert_eq!(s.edges, vec![[id('b'), id('c')]]);
    let j = serde_json::to_value(&s).unwrap();
    // The page reads these names; a shared key shows only as "set".
    assert_eq!(j["me"]["shared_key"], true);
    assert_eq!(j["peers"][0]["tx_bps"], 0.0);
    assert!(!j.to_string().contains("secret"));
}

#[test]
fn the_node_beyond_a_bridge_is_remote_and_the_bridge_is_marked() {
    use pb::PeerState::{Backoff, Connected};
    // a - b - c, a also knows d (down). b announces a and c.
    let snap = snapshot(vec![peer('b', Connected), peer('d', Backoff)]);
    let s = build(&snap, &nb(&[('b', &['a', 'c'])]), &HashMap::new(), vec![]);
    assert_eq!(
        s.remote,
        vec![Remote {
            id: id('c'),
            via: vec![id('b')]
        }]
    );
    let b = s.peers.iter().find(|p| p.id == id('b')).unwrap();
    assert!(b.bridge);
    assert_eq!(b.neighbours.as_deref(), Some(&[id('a'), id('c')][..]));
    let d = s.peers.iter().find(|p| p.id == id('d')).unwrap();
    assert_eq!(
        (d.state, d.bridge, d.neighbours.is_none()),
        ("backoff", false, true)
    );
    assert!(!s.me.bridge, "a links only b");
    assert_eq!(s.edges, vec![[id('b'), id('c')]]);
}

#[test]
fn this_node_is_a_bridge_when_its_peers_do_not_link() {
    use pb::PeerState::Connected;
    let snap = snapshot(vec![peer('b', Connected), peer('c', Connected)]);
    let s = build(
        &snap,
        &nb(&[('b', &['a']), ('c', &['a'])]),
        &HashMap::new(),
        vec![],
    );
    assert!(s.me.bridge);
    assert!(s.remote.is_empty() && s.edges.is_empty());
}

#[test]
fn rates_come_from_two_samples_and_survive_a_new_connection() {
    let mut r = Rates::default();
    let t0 = Instant::now();
    let mut p = peer('b', pb::PeerState::Connected);
    p.bytes_sent = Some(1000);
    p.bytes_received = Some(500);
    p.messages_in = 10;
    let first = r.update(std::slice::from_ref(&p), t0);
    assert_eq!(
        first[&id('b')],
        LinkRate::default(),
        "one sample: no rate yet"
    );
    p.bytes_sent = Some(3000);
    p.bytes_received = Some(1500);
    p.messages_in = 30;
    let got = r.update(std::slice::from_ref(&p), t0 + Duration::from_secs(2));
    let b = got[&id('b')];
    assert_eq!((b.tx_bps, b.rx_bps, b.msgs_in_ps), (1000.0, 500.0, 10.0));
    // A reconnect starts the counters again: count from zero, never negative.
    p.bytes_sent = Some(400);
    let got = r.update(std::slice::from_ref(&p), t0 + Duration::from_secs(4));
    assert_eq!(got[&id('b')].tx_bps, 200.0);
}

#[test]
fn loss_is_measured_over_the_recent_window_else_over_the_connection() {
    let mut r = Rates::default();
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let mut p = peer('b', pb::PeerState::Connected);
    let mut loss = |p: &pb::Peer, t| r.update(std::slice::from_ref(p), t)[&id('b')].loss_pct;
    assert_eq!(loss(&p, at(0)), None, "not connected: no figure");
    // Over the connection's life: 5 of 100 lost.
    (p.packets_sent, p.packets_lost) = (Some(100), Some(5));
    assert_eq!(loss(&p, at(1)), Some(5.0));
    // 100 more sent, 20 more lost: 20 % in the window (not 12.5 % over the life).
    (p.packets_sent, p.packets_lost) = (Some(200), Some(25));
    assert_eq!(loss(&p, at(2)), Some(20.0));
    // Nothing sent for the window's length: the connection's figure again.
    let quiet = 2 + LOSS_WINDOW.as_secs();
    assert_eq!(loss(&p, at(quiet - 1)), Some(20.0), "still in the window");
    assert_eq!(loss(&p, at(quiet)), Some(12.5));
    // A new connection counts afresh; loss never shows above 100 %.
    (p.packets_sent, p.packets_lost) = (Some(10), Some(0));
    assert_eq!(loss(&p, at(quiet + 1)), Some(0.0));
    (p.packets_sent, p.packets_lost) = (Some(11), Some(4));
    assert_eq!(loss(&p, at(quiet + 2)), Some(100.0));
}

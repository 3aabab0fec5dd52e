//! Radio links, end to end: sidecars on a lossy, slow channel (tests/common/radio.rs,
//! a userspace hub, since this kernel has no netem). Needs root.
//!
//! Namespace prefixes `la` (the rig itself) and `lb` (the lossy mesh).

mod common;

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use common::{
    radio::{in_netns, Link, RadioLan},
    wait_full_mesh, Opts, Sidecar,
};

const IROH_PORT: u16 = 9470;

/// The rig does what it says: a third of the frames lost, the rest late by the delay,
/// and changing the link while it runs takes effect.
#[test]
fn the_hub_drops_and_delays_frames() {
    if common::skip::without_root("network namespaces") {
        return;
    }
    let lan = RadioLan::new("la", 2, Link::CLEAN);
    let port = 7777;
    let b_addr = SocketAddr::from((lan.addr(1), port));
    let rx = in_netns(lan.ns(1), || UdpSocket::bind(b_addr)).expect("bind in la-1");
    let tx = in_netns(lan.ns(0), || UdpSocket::bind((lan.addr(0), 0))).expect("bind in la-0");
    rx.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // Clean first, so that ARP is done before the loss starts.
    tx.send_to(b"warm", b_addr).unwrap();
    let mut buf = [0u8; 64];
    rx.recv(&mut buf).expect("a clean hub delivers");

    lan.set_link(Link::new(0.3, 50, 10));
    let sent = 200;
    let t0 = Instant::now();
    for i in 0u32..sent {
        let at = t0.elapsed().as_micros() as u64;
        let mut msg = i.to_be_bytes().to_vec();
        msg.extend_from_slice(&at.to_be_bytes());
        tx.send_to(&msg, b_addr).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let (mut got, mut min_delay) = (0u32, Duration::MAX);
    while let Ok(n) = rx.recv(&mut buf) {
        assert_eq!(n, 12);
        let at = u64::from_be_bytes(buf[4..12].try_into().unwrap());
        let delay = t0.elapsed() - Duration::from_micros(at);
        min_delay = min_delay.min(delay);
        got += 1;
    }
    let s = lan.stats();
    eprintln!("sent {sent}, received {got}, least delay {min_delay:?}, ports {s:?}");
    // 30 % loss of 200: 140 expected, standard deviation 6.5.
    assert!(
        (105..=175).contains(&got),
        "{got} of {sent} arrived at 30 % loss"
    );
    assert!(
        min_delay >= Duration::from_millis(39),
        "a frame arrived after {min_delay:?}, before the 50 ± 10 ms delay"
    );
    assert!(s[1].dropped >= 25, "the hub counts its drops: {s:?}");
    assert!(s[0].sent_frames > u64::from(sent), "{s:?}");
}

fn mdns_opts(lan: &RadioLan, i: usize) -> Opts {
    Opts {
        app_id: "radio".into(),
        netns: Some(lan.ns(i).to_string()),
        bind: Some(SocketAddr::from(([0, 0, 0, 0], IROH_PORT))),
        extra: vec!["--discovery-mode".into(), "mdns".into()],
        ..Opts::default()
    }
}

/// What a log says when a live peer was taken for gone.
const FALSE_DEPARTURE: [&str; 3] = [
    "the peer shut down",
    "mdns: peer is shutting down",
    "mdns: peer said goodbye or its record expired",
];

fn false_departures(nodes: &[Sidecar]) -> Vec<String> {
    nodes
        .iter()
        .flat_map(|n| {
            n.log()
                .lines()
                .filter(|l| FALSE_DEPARTURE.iter().any(|p| l.contains(p)))
                .map(|l| format!("{}: {l}", n.name))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Five nodes on a channel that loses a fifth of the frames, 100 ± 50 ms each way:
/// they mesh, and nobody takes a live peer for one that left (a dial given up by the
/// QUIC library closes with code 0, which once read as the sidecar's shutdown). Then
/// the mesh holds for a while.
#[tokio::test(flavor = "multi_thread")]
async fn a_lossy_channel_meshes_without_false_departures() {
    if common::skip::without_root("network namespaces") {
        return;
    }
    let lan = RadioLan::new("lb", 5, Link::new(0.2, 100, 50));
    let t0 = Instant::now();
    let mut nodes = vec![];
    for i in 0..lan.len() {
        nodes.push(Sidecar::start(&format!("n{i}"), mdns_opts(&lan, i)).await);
    }
    let refs: Vec<&Sidecar> = nodes.iter().collect();
    let took = wait_full_mesh(&refs, Duration::from_secs(90)).await;
    let total = lan.total();
    eprintln!(
        "full mesh after {took:?} (nodes started over {:?}); hub: {total:?}",
        t0.elapsed() - took.unwrap_or_default()
    );
    assert!(took.is_some(), "no full mesh within 90 s at 20 % loss");
    assert!(
        total.dropped > 0,
        "the channel lost nothing; the test tests nothing"
    );

    // Hold: every node stays connected to every other one.
    let hold = Instant::now();
    while hold.elapsed() < Duration::from_secs(20) {
        for n in &nodes {
            let c = n.connected().await;
            assert_eq!(
                c.len(),
                nodes.len() - 1,
                "{} lost a peer after {:?} of the hold: {c:?}",
                n.name,
                hold.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let bad = false_departures(&nodes);
    assert!(
        bad.is_empty(),
        "live peers taken for gone:\n{}",
        bad.join("\n")
    );
}

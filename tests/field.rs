//! Field defects of issue 24, as a user meets them: what a node emits where it was told
//! to stay silent, and a mistyped app id. Real sidecars in network namespaces
//! (tests/common/netns.rs); needs root. Frames are counted by the kernel on each
//! interface (tests/common/egress.rs).

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{egress::EgressCounter, netns::Lan, wait_full_mesh, wait_until, Opts, Sidecar};

const IROH_PORT: u16 = 9470;
/// Short beacon interval: a few rounds pass quickly.
const BEACON_MS: &str = "500";

fn opts(lan: &Lan, i: usize, app_id: &str, extra: &[&str]) -> Opts {
    let mut o = common::lan_mdns_opts(lan, i, app_id);
    o.extra
        .extend(["--beacon-interval-ms", BEACON_MS].map(String::from));
    o.extra.extend(extra.iter().map(|s| s.to_string()));
    o
}

/// Two hosts on two segments (eth0, eth1), mDNS and so beacons limited to eth0: many
/// beacons go out on eth0, none on eth1.
#[tokio::test(flavor = "multi_thread")]
async fn beacons_go_only_where_mdns_interfaces_allow() {
    if common::skip::without_root("network namespaces")
        || common::skip::without_program("nft", "apt-get install nftables")
    {
        return;
    }
    let mut lan = Lan::new("fe1", 2);
    let seg1 = lan.add_segment();
    lan.attach_now(0, seg1);
    lan.attach(1, seg1);
    let counters: Vec<[EgressCounter; 2]> = (0..2)
        .map(|i| ["eth0", "eth1"].map(|dev| EgressCounter::install(lan.ns(i), dev, IROH_PORT)))
        .collect();
    let only_eth0 = ["--mdns-interfaces", "eth0"];
    let a = Sidecar::start("node0", opts(&lan, 0, "test", &only_eth0)).await;
    let b = Sidecar::start("node1", opts(&lan, 1, "test", &only_eth0)).await;
    wait_full_mesh(&[&a, &b], Duration::from_secs(20))
        .await
        .expect("the two hosts connect over eth0");
    // Enough rounds that each would have hit eth1 too (every round covered every
    // multicast interface before this fix).
    let rounds = wait_until(Duration::from_secs(30), || async {
        counters.iter().all(|c| c[0].read().beacon_packets >= 6)
    })
    .await;
    for (i, c) in counters.iter().enumerate() {
        let (eth0, eth1) = (c[0].read(), c[1].read());
        eprintln!(
            "host {i}: eth0 {eth0}, {} beacons; eth1 {eth1}, {} beacons",
            eth0.beacon_packets, eth1.beacon_packets
        );
        assert!(
            rounds.is_some(),
            "host {i} sent too few beacons on eth0: {eth0}"
        );
        assert_eq!(
            eth1.beacon_packets, 0,
            "host {i} beaconed on eth1, which is not selected"
        );
        assert_eq!(eth1.mdns, 0, "host {i} sent mDNS on eth1");
    }
}

/// Bound to its eth0 address on both hosts, a node sends no beacon and no QUIC on eth1
/// (iroh learns no eth1 address to try). mDNS is not limited by `--bind`: only
/// `--mdns-interfaces` keeps it off eth1 (docs/OPERATIONS.md, "Emission control").
#[tokio::test(flavor = "multi_thread")]
async fn a_node_bound_to_one_address_keeps_other_links_silent() {
    if common::skip::without_root("network namespaces")
        || common::skip::without_program("nft", "apt-get install nftables")
    {
        return;
    }
    let mut lan = Lan::new("fe4", 2);
    let seg1 = lan.add_segment();
    lan.attach_now(0, seg1);
    lan.attach(1, seg1);
    let counters: Vec<[EgressCounter; 2]> = (0..2)
        .map(|i| ["eth0", "eth1"].map(|dev| EgressCounter::install(lan.ns(i), dev, IROH_PORT)))
        .collect();
    let mut nodes = vec![];
    for i in 0..2 {
        let mut o = opts(&lan, i, "test", &[]);
        o.bind = Some(SocketAddr::from((lan.addr(i, 0), IROH_PORT)));
        nodes.push(Sidecar::start(&format!("node{i}"), o).await);
    }
    wait_full_mesh(&[&nodes[0], &nodes[1]], Duration::from_secs(20))
        .await
        .expect("the two hosts connect over eth0");
    let rounds = wait_until(Duration::from_secs(30), || async {
        counters.iter().all(|c| c[0].read().beacon_packets >= 6)
    })
    .await;
    for (i, c) in counters.iter().enumerate() {
        let (eth0, eth1) = (c[0].read(), c[1].read());
        eprintln!("host {i} bound to eth0's address: eth0 {eth0}; eth1 {eth1}");
        assert!(
            rounds.is_some(),
            "host {i}: too few beacons on eth0: {eth0}"
        );
        assert_eq!(
            (eth1.beacon_packets, eth1.quic),
            (0, 0),
            "host {i} sent beacons or QUIC on eth1: {eth1}"
        );
    }
}

/// A sidecar in host 0's namespace as in the README's one-host example.
async fn on_loopback(lan: &Lan, i: u16) -> Sidecar {
    let mut o = opts(
        lan,
        0,
        "test",
        &["--mdns-loopback", "--mdns-interfaces", "lo"],
    );
    o.bind = Some(SocketAddr::from(([127, 0, 0, 1], IROH_PORT + 10 + i)));
    Sidecar::start(&format!("node{i}"), o).await
}

/// The README's one-host example in a namespace: sidecars bound to loopback with mDNS on
/// `lo` connect, and not one beacon leaves through the host's eth0.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_bound_to_loopback_sends_no_beacons_off_the_host() {
    if common::skip::without_root("network namespaces")
        || common::skip::without_program("nft", "apt-get install nftables")
    {
        return;
    }
    let lan = Lan::new("fe2", 1);
    let eth0 = EgressCounter::install(lan.ns(0), "eth0", IROH_PORT);
    let a = on_loopback(&lan, 0).await;
    let b = on_loopback(&lan, 1).await;
    wait_full_mesh(&[&a, &b], Duration::from_secs(20))
        .await
        .expect("the two sidecars connect over loopback");
    // Connected peers: before this fix a beacon went out of eth0 every interval. Wait
    // for several intervals; nothing may have left.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let sent = eth0.read();
    eprintln!("eth0 while bound to loopback: {sent}");
    assert_eq!(sent.beacon_packets, 0, "a beacon left the host: {sent}");
    assert_eq!(sent.mdns, 0, "mDNS left the host: {sent}");
    for s in [&a, &b] {
        assert!(
            s.log()
                .contains("bound to loopback only: no liveness beacons"),
            "{}",
            s.log()
        );
    }
}

/// Two nodes on one LAN whose app ids differ by a typo: each says so once in its log at
/// INFO, and `status` counts the other formation's record.
#[tokio::test(flavor = "multi_thread")]
async fn a_mistyped_app_id_is_reported_in_the_log_and_status() {
    if common::skip::without_root("network namespaces") {
        return;
    }
    let lan = Lan::new("fe3", 2);
    let mut info = opts(&lan, 0, "fleet", &[]);
    info.env.push(("RUST_LOG".into(), "info".into()));
    let a = Sidecar::start("node0", info.clone()).await;
    let b = Sidecar::start(
        "node1",
        Opts {
            app_id: "flet".into(),
            netns: Some(lan.ns(1).into()),
            ..info
        },
    )
    .await;
    let counted = wait_until(Duration::from_secs(20), || async {
        let mut all = true;
        for s in [&a, &b] {
            let c = s.status().await.counters.unwrap_or_default();
            all &= c.mdns_other_app_records == 1;
        }
        all
    })
    .await;
    assert!(
        counted.is_some(),
        "status does not count the other formation's record"
    );
    for (s, other) in [(&a, "flet"), (&b, "fleet")] {
        let log = s.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("another formation is on this network"))
            .collect();
        assert_eq!(lines.len(), 1, "one line per other app id:\n{log}");
        eprintln!("{}: {}", s.name, lines[0]);
        assert!(lines[0].contains(" INFO "), "{}", lines[0]);
        assert!(
            lines[0].contains(&format!("other_app_id={other}")),
            "{}",
            lines[0]
        );
        assert!(s.connected().await.is_empty());
        let (ok, out, err) = s.cli(&["status"]);
        assert!(ok, "{err}");
        eprintln!("{}: status:\n{out}", s.name);
        assert!(
            out.contains("other app ids   1 mDNS records of other formations"),
            "{out}"
        );
    }
}

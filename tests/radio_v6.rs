//! Radio-style LANs, end to end: IPv6 link-local-only links, scoped addresses, and a
//! node whose address moves. Real sidecars in network namespaces (tests/common/netns.rs);
//! needs root. Namespace prefixes `va`..`vd`, one per test.

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::{
    netns::{ns_exec, sh, Lan},
    wait_full_mesh, wait_until, Opts, Sidecar,
};

const IROH_PORT: u16 = 9470;

/// Strips host `i`'s IPv4 address: eth0 keeps only the kernel's fe80:: address.
fn link_local_only(lan: &Lan, i: usize) {
    let addr = format!("{}/24", lan.addr(i, 0));
    sh(&["ip", "-n", lan.ns(i), "addr", "del", &addr, "dev", "eth0"]);
}

/// Host `i`'s link-local address on eth0, once DAD is done.
fn fe80_of(lan: &Lan, i: usize) -> String {
    let out = ns_exec(
        lan.ns(i),
        &[
            "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!text.contains("tentative"), "DAD still running: {text}");
    text.split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no fe80 address on eth0 of {}: {text}", lan.ns(i)))
        .to_string()
}

/// The index of eth0 in host `i`'s namespace.
fn eth0_index(lan: &Lan, i: usize) -> String {
    let out = ns_exec(lan.ns(i), &["cat", "/sys/class/net/eth0/ifindex"]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn v6_opts(lan: &Lan, i: usize, extra: &[&str]) -> Opts {
    Opts {
        netns: Some(lan.ns(i).to_string()),
        bind: Some(SocketAddr::from(([0u16; 8], IROH_PORT))),
        extra: extra.iter().map(|s| s.to_string()).collect(),
        ..Opts::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_link_local_only_nodes_mesh_over_mdns() {
    if common::skip::without_root("network namespaces") {
        return;
    }
    let lan = Lan::new("va", 3);
    for i in 0..3 {
        link_local_only(&lan, i);
    }
    let t0 = Instant::now();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let opts = v6_opts(&lan, i, &["--discovery-mode", "mdns"]);
        nodes.push(Sidecar::start(&format!("node{i}"), opts).await);
    }
    let started = t0.elapsed();
    let refs: Vec<&Sidecar> = nodes.iter().collect();
    let took = wait_full_mesh(&refs, Duration::from_secs(20)).await;
    let took = took.unwrap_or_else(|| {
        panic!(
            "no full mesh over fe80:: within 20 s: {:?}",
            futures_peers(&refs)
        )
    });
    println!(
        "fe80-only trio: full mesh {:.2} s after the last start ({:.2} s to start all three)",
        took.as_secs_f64(),
        started.as_secs_f64()
    );
    // The table shows each link-local address with its interface.
    let want = format!("[{}%eth0]:{IROH_PORT}", fe80_of(&lan, 1));
    let scoped = wait_until(Duration::from_secs(10), || async {
        nodes[0]
            .peer(&nodes[1].id)
            .await
            .is_some_and(|p| p.addrs.contains(&want))
    })
    .await;
    assert!(
        scoped.is_some(),
        "node0 does not list {want} for node1: {:?}",
        nodes[0].peer(&nodes[1].id).await
    );
}

/// The peers tables, for a failure message.
fn futures_peers(nodes: &[&Sidecar]) -> Vec<String> {
    nodes
        .iter()
        .map(|n| {
            let (_, out, _) = n.cli(&["peers"]);
            format!("{}:\n{out}", n.name)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn scoped_static_peer_and_connect_reach_a_link_local_node() {
    if common::skip::without_root("network namespaces") {
        return;
    }
    let lan = Lan::new("vb", 3);
    for i in 0..3 {
        link_local_only(&lan, i);
    }
    let target = Sidecar::start("target", v6_opts(&lan, 0, &[])).await;
    let ll = fe80_of(&lan, 0);
    // By interface name in --peer.
    let spec = format!("{}@[{ll}%eth0]:{IROH_PORT}", target.id);
    let mut by_name = v6_opts(&lan, 1, &[]);
    by_name.peers = vec![spec];
    let a = Sidecar::start("by-name", by_name).await;
    // By interface index through `peat-sidecar connect`.
    let b = Sidecar::start("by-index", v6_opts(&lan, 2, &[])).await;
    let idx = eth0_index(&lan, 2);
    let arg = format!("{}@[{ll}%{idx}]:{IROH_PORT}", target.id);
    let (ok, out, err) = b.cli(&["connect", &arg]);
    assert!(ok, "connect {arg} failed: {out}{err}\n{}", target.log());

    let took = wait_full_mesh(&[&target, &a], Duration::from_secs(15)).await;
    assert!(took.is_some(), "--peer with %eth0 never connected");
    assert!(b.connected().await.contains(&target.id));
    let want = format!("[{ll}%eth0]:{IROH_PORT}");
    for (who, n) in [("by-name", &a), ("by-index", &b)] {
        let p = n.peer(&target.id).await.expect("listed");
        assert!(
            p.addrs.contains(&want),
            "{who} shows {:?}, not {want}",
            p.addrs
        );
    }
    let (_, table, _) = a.cli(&["peers"]);
    assert!(
        table.contains(&want),
        "`peers` does not show {want}:\n{table}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renumbered_node_is_followed_to_its_new_address() {
    if common::skip::without_root("network namespaces") {
        return;
    }
    let lan = Lan::new("vc", 3);
    let mut nodes = Vec::new();
    for i in 0..3 {
        let opts = Opts {
            netns: Some(lan.ns(i).to_string()),
            bind: Some(SocketAddr::from(([0, 0, 0, 0], IROH_PORT))),
            extra: vec!["--discovery-mode".into(), "mdns".into()],
            ..Opts::default()
        };
        nodes.push(Sidecar::start(&format!("node{i}"), opts).await);
    }
    let refs: Vec<&Sidecar> = nodes.iter().collect();
    wait_full_mesh(&refs, Duration::from_secs(15))
        .await
        .expect("full mesh before the renumber");
    let old = format!("{}:{IROH_PORT}", lan.addr(0, 0));
    let new_ip = "10.77.0.201";
    let new = format!("{new_ip}:{IROH_PORT}");
    let moved = &nodes[0].id;

    // Renumber node 0: the new address first, then the old one goes (as DHCP does).
    // Without promote_secondaries, deleting the primary address would take the new
    // (secondary) one of the same subnet with it.
    let ns = lan.ns(0);
    sh(&[
        "ip",
        "netns",
        "exec",
        ns,
        "sysctl",
        "-qw",
        "net.ipv4.conf.eth0.promote_secondaries=1",
    ]);
    sh(&[
        "ip",
        "-n",
        ns,
        "addr",
        "add",
        &format!("{new_ip}/24"),
        "dev",
        "eth0",
    ]);
    let old_cidr = format!("{}/24", lan.addr(0, 0));
    sh(&["ip", "-n", ns, "addr", "del", &old_cidr, "dev", "eth0"]);
    let followed = wait_until(Duration::from_secs(30), || async {
        for n in &nodes[1..] {
            let Some(p) = n.peer(moved).await else {
                return false;
            };
            let connected = n.connected().await.contains(moved);
            if !connected || !p.addrs.contains(&new) || p.addrs.contains(&old) {
                return false;
            }
        }
        true
    })
    .await;
    let rows: Vec<_> = futures_peers(&refs);
    let took = followed.unwrap_or_else(|| {
        panic!("the others did not follow node0 from {old} to {new} within 30 s: {rows:?}")
    });
    println!(
        "renumber: both peers connected to {new}, {old} gone from their tables, after {:.2} s",
        took.as_secs_f64()
    );
    // And traffic really flows on the new address: still connected a few keep-alives on.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for n in &nodes[1..] {
        assert!(
            n.connected().await.contains(moved),
            "{} lost node0 after the renumber: {:?}",
            n.name,
            n.peer(moved).await
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dual_stack_node_meshes_with_an_ipv4_only_and_an_ipv6_only_node() {
    if common::skip::without_root("network namespaces") {
        return;
    }
    // Node 0 binds both families; node 1 has IPv4 only (bound to it), node 2 only its
    // fe80:: address. Node 0 must announce and dial both; 1 and 2 cannot talk.
    let lan = Lan::new("vd", 3);
    link_local_only(&lan, 2);
    let mdns = ["--discovery-mode", "mdns"];
    let mut dual = v6_opts(&lan, 0, &mdns);
    dual.extra
        .extend(["--bind".into(), format!("0.0.0.0:{IROH_PORT}")]);
    let dual = Sidecar::start("dual", dual).await;
    let mut v4 = v6_opts(&lan, 1, &mdns);
    v4.bind = Some(SocketAddr::from(([0, 0, 0, 0], IROH_PORT)));
    let v4 = Sidecar::start("v4-only", v4).await;
    let v6 = Sidecar::start("v6-only", v6_opts(&lan, 2, &mdns)).await;
    // The v6-only node may dial first; its inbound connection carries no scope (iroh
    // drops it), so wait until the dual-stack node's own mDNS browse has found it too.
    let both = wait_until(Duration::from_secs(20), || async {
        let c = dual.connected().await;
        let scoped = dual
            .peer(&v6.id)
            .await
            .is_some_and(|p| p.addrs.iter().any(|a| a.contains("%eth0]")));
        c.contains(&v4.id) && c.contains(&v6.id) && scoped
    })
    .await;
    assert!(
        both.is_some(),
        "the dual-stack node did not reach both: {:?}",
        futures_peers(&[&dual, &v4, &v6])
    );
    let status = dual.status().await;
    assert_eq!(status.bound_addrs.len(), 2, "{:?}", status.bound_addrs);
    let p4 = dual.peer(&v4.id).await.expect("listed");
    assert!(
        p4.addrs.iter().any(|a| a.starts_with("10.77.0.2:")),
        "{p4:?}"
    );
    let p6 = dual.peer(&v6.id).await.expect("listed");
    assert!(p6.addrs.iter().any(|a| a.contains("%eth0]")), "{p6:?}");
    // No common family: these two never connect (the dual-stack node is no relay).
    assert!(!v4.connected().await.contains(&v6.id));
}

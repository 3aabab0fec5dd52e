//! Discovery mode gossip between real sidecar processes on loopback.
//!
//! Every sidecar here is started with `--discovery-mode gossip` and a 1 s interval, and
//! knows at most one other sidecar from `--peer`; gossip must do the rest.

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::{
    gossip::{chain, full_mesh, gossip_opts, sources, INTERVAL_SECS, OTHER_KEY},
    wait_until, Opts, Sidecar,
};
use peat_sidecar::api::pb;

/// The tests of this file start up to 20 sidecars each; on a 2-core machine running two
/// of them at once makes both slow for no gain. Each test holds this lock.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Seconds since midnight (UTC) of the first (or last) log line containing `what`.
/// Lines start with an RFC 3339 time: `2026-11-24T15:26:14.137217Z ...`.
fn log_time(log: &str, what: &str, first: bool) -> Option<f64> {
    let secs = |l: &str| -> Option<f64> {
        let t = l.get(11..26)?;
        let h: f64 = t.get(0..2)?.parse().ok()?;
        let m: f64 = t.get(3..5)?.parse().ok()?;
        let s: f64 = t.get(6..)?.parse().ok()?;
        Some(h * 3600.0 + m * 60.0 + s)
    };
    let mut lines = log.lines().filter(|l| l.contains(what)).filter_map(secs);
    if first {
        lines.next()
    } else {
        lines.next_back()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_of_20_converges_to_a_full_mesh() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let t0 = Instant::now();
    let nodes = chain(20, &[], None).await;
    let started = t0.elapsed();
    let refs: Vec<&Sidecar> = nodes.iter().collect();
    // Gossip's own job first: every node knows every other one (connecting is the
    // peer manager's).
    let known = wait_until(Duration::from_secs(90), || async {
        for n in &nodes {
            if n.peers().await.len() < 19 {
                return false;
            }
        }
        true
    })
    .await
    .expect("every node learns all 19 others within 90 s");
    let took = full_mesh(&refs, Duration::from_secs(90))
        .await
        .expect("20 chained sidecars reach a full mesh within 90 s")
        + known;
    let total = t0.elapsed();
    // The polls above are slow on a busy machine (20 API calls each); the sidecars' own
    // logs tell when the last peer was found and connected.
    let start = log_time(&nodes[0].log(), "gossip peer exchange started", true);
    let found = nodes
        .iter()
        .filter_map(|n| log_time(&n.log(), "source=gossip", false))
        .fold(0.0, f64::max);
    let connected = nodes
        .iter()
        .filter_map(|n| log_time(&n.log(), "peer connected", false))
        .fold(0.0, f64::max);
    let start = start.expect("node 0 logged its start");
    let rounds = ((found - start) / INTERVAL_SECS as f64).ceil().max(1.0);
    println!(
        "gossip chain of 20: all started after {:.1}s. From the logs: the last peer was \
         found {:.1}s after the last node started (<= {rounds} exchange rounds of \
         {INTERVAL_SECS}s), the last connection made {:.1}s after it. Polled: all known \
         {:.1}s, full mesh {:.1}s after the last start ({:.1}s after the first).",
        started.as_secs_f64(),
        found - start,
        connected - start,
        known.as_secs_f64(),
        took.as_secs_f64(),
        total.as_secs_f64()
    );
    // Combined sources: node i knows node i+1 from --peer and from gossip, and every
    // other node from gossip.
    for (i, n) in nodes.iter().enumerate() {
        let peers = n.peers().await;
        assert_eq!(peers.len(), 19, "{} knows {} peers", n.name, peers.len());
        for p in &peers {
            let s = sources(p);
            assert!(
                s.contains("gossip"),
                "{}: {} has sources {s:?}",
                n.name,
                p.endpoint_id
            );
            if i + 1 < nodes.len() && p.endpoint_id == nodes[i + 1].id {
                assert!(s.contains("static"), "{}: next has sources {s:?}", n.name);
            }
        }
    }
    // The CLI shows both sources in `peers --json`.
    let (ok, out, err) = nodes[0].cli(&["peers", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let next = v
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["endpoint_id"] == nodes[1].id.as_str())
        .expect("node 1 listed");
    let listed: Vec<&str> = next["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    assert!(
        listed.contains(&"static") && listed.contains(&"gossip"),
        "{next}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_leaves_ages_out_of_every_table() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // TTL 4 s: a silent entry is forgotten 4 s after its last heartbeat (or after its
    // connection died, for the peers that were connected to it).
    let extra = ["--gossip-ttl", "4"];
    let mut leaver = Sidecar::start("leaver", gossip_opts(vec![], &extra)).await;
    // The last node of the chain names the leaver as --peer: there it must stay (as a
    // static peer) when gossip loses it; everywhere else it must go.
    let nodes = chain(5, &extra, Some(leaver.peer_spec())).await;
    let mut all: Vec<&Sidecar> = nodes.iter().collect();
    all.push(&leaver);
    full_mesh(&all, Duration::from_secs(60))
        .await
        .expect("mesh of 6");
    let last = &nodes[4];
    let row = last.peer(&leaver.id).await.expect("leaver known");
    assert_eq!(
        sources(&row),
        ["gossip", "static"].map(String::from).into(),
        "found by both"
    );

    leaver.kill9();
    let t = Instant::now();
    let gone = wait_until(Duration::from_secs(60), || async {
        for n in &nodes[..4] {
            if n.peer(&leaver.id).await.is_some() {
                return false;
            }
        }
        last.peer(&leaver.id)
            .await
            .is_some_and(|p| sources(&p) == ["static".to_string()].into())
    })
    .await;
    let Some(took) = gone else {
        for n in &nodes {
            eprintln!("{}: {:?}", n.name, n.peer(&leaver.id).await);
        }
        panic!("the leaver did not age out of every table within 60 s")
    };
    println!(
        "gossip: a killed node aged out of 4 tables (and lost its gossip source in the 5th) \
         {:.1}s after it died",
        took.as_secs_f64()
    );
    // One source losing it did not drop it where another source still has it.
    let row = last.peer(&leaver.id).await.expect("static peer kept");
    assert_ne!(row.state, pb::PeerState::Connected as i32);
    assert!(t.elapsed() >= Duration::from_secs(4), "not before the TTL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_with_the_wrong_key_never_gets_a_table() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let b = Sidecar::start("b", gossip_opts(vec![], &[])).await;
    let a = Sidecar::start("a", gossip_opts(vec![b.peer_spec()], &[])).await;
    full_mesh(&[&a, &b], Duration::from_secs(30))
        .await
        .expect("a and b connect");
    let mut opts = gossip_opts(vec![a.peer_spec()], &[]);
    opts.shared_key = Some(OTHER_KEY.into());
    let intruder = Sidecar::start("intruder", opts).await;
    // Let several rounds pass, then check that nothing leaked either way.
    let rejected = wait_until(Duration::from_secs(20), || async {
        intruder
            .peer(&a.id)
            .await
            .is_some_and(|p| p.state == pb::PeerState::Rejected as i32)
    })
    .await;
    assert!(rejected.is_some(), "the intruder is rejected by a");
    tokio::time::sleep(Duration::from_secs(5 * INTERVAL_SECS)).await;
    let known: Vec<String> = intruder
        .peers()
        .await
        .into_iter()
        .map(|p| p.endpoint_id)
        .collect();
    assert_eq!(known, vec![a.id.clone()], "the intruder learned nothing");
    assert!(!intruder.log().contains("gossip table received"));
    assert!(
        b.peer(&intruder.id).await.is_none(),
        "b never heard of the intruder"
    );
    assert!(a.connected().await == vec![b.id.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_peers_keeps_a_chain_of_12_far_from_a_full_mesh() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // --max-peers 4: each node dials discovered peers only while it has fewer than 2
    // connections; the chain's own links already give most nodes 2.
    let nodes = chain(12, &["--max-peers", "4", "--gossip-ttl", "30"], None).await;
    let know_all = wait_until(Duration::from_secs(90), || async {
        for n in &nodes {
            if n.peers().await.len() < 11 {
                return false;
            }
        }
        true
    })
    .await
    .expect("every node learns all 11 others through gossip");
    // Connections beyond the limit live for one exchange (10 s) before they are closed,
    // so a count may briefly exceed 4 (+1 for the node's own --peer link); it never
    // comes near the 11 of a full mesh.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let mut links = 0;
    let mut most = 0;
    for n in &nodes {
        let c = n.connected().await.len();
        assert!(c <= 2 * 4 + 1, "{} has {c} connections", n.name);
        most = most.max(c);
        links += c;
    }
    println!(
        "gossip with --max-peers 4: 12 nodes all know each other after {:.1}s over {} \
         connections, at most {most} per node (a full mesh has 66, 11 per node)",
        know_all.as_secs_f64(),
        links / 2
    );
    assert!(links / 2 < 66 / 2, "{} connections", links / 2);
}

/// Runs a command in a namespace; it must succeed.
fn in_ns(ns: &str, args: &[&str]) {
    let out = common::netns::ns_exec(ns, args);
    assert!(
        out.status.success(),
        "{ns}: {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test LAN: segment 0 holds hosts 0, 1, 2; segment 1 holds hosts 3, 4; host 0 is
/// on both and routes between them. mDNS does not cross from one segment to the other,
/// so hosts 1 and 3 can only learn of each other through gossip via host 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mdns_and_gossip_join_two_lan_segments_through_a_bridge_node() {
    if common::skip::without_root("network namespaces") {
        return;
    }
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut lan = common::netns::Lan::new("pg1", 3);
    let seg1 = lan.add_segment();
    lan.attach(0, seg1);
    let h3 = lan.add_host(seg1);
    let h4 = lan.add_host(seg1);
    in_ns(lan.ns(0), &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let via0 = lan.addr(0, 0).to_string();
    let via1 = lan.addr(0, seg1).to_string();
    for i in [1, 2] {
        in_ns(
            lan.ns(i),
            &["ip", "route", "add", "10.77.1.0/24", "via", &via0],
        );
    }
    for i in [h3, h4] {
        in_ns(
            lan.ns(i),
            &["ip", "route", "add", "10.77.0.0/24", "via", &via1],
        );
    }

    let mut nodes = Vec::new();
    for i in 0..lan.len() {
        let opts = Opts {
            netns: Some(lan.ns(i).to_string()),
            bind: Some(SocketAddr::from(([0, 0, 0, 0], 9470))),
            ..gossip_opts(vec![], &["--discovery-mode", "mdns,gossip"])
        };
        nodes.push(Sidecar::start(&format!("lan{i}"), opts).await);
    }
    let refs: Vec<&Sidecar> = nodes.iter().collect();
    let took = full_mesh(&refs, Duration::from_secs(60))
        .await
        .expect("5 sidecars on two segments reach a full mesh through the bridge node");
    println!(
        "mdns,gossip on two LAN segments: full mesh of 5 {:.1}s after the last start",
        took.as_secs_f64()
    );
    // Across the segments only gossip could have told them; within a segment mDNS did,
    // and gossip too.
    let p = nodes[1]
        .peer(&nodes[h3].id)
        .await
        .expect("host 1 knows host 3");
    assert_eq!(sources(&p), ["gossip".to_string()].into(), "{p:?}");
    assert!(p.addrs.iter().any(|a| a.starts_with("10.77.1.")), "{p:?}");
    // A node may hold a later node's connection (inbound, no source yet) before its
    // browse resolves that node's announcement: wait for mDNS rather than look once.
    for (a, b) in [(1, 2), (0, h4)] {
        let found = wait_until(Duration::from_secs(15), || {
            nodes[a].lists_with_source(&nodes[b].id, "mdns")
        })
        .await;
        let p = nodes[a].peer(&nodes[b].id).await;
        assert!(
            found.is_some(),
            "host {a} resolved host {b} through mDNS: {p:?}"
        );
    }
}

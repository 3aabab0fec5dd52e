//! Discovery mode mdns, end to end: real sidecars in network namespaces joined by a
//! bridge (tests/common/netns.rs), no `--peer` anywhere. Needs root.
//!
//! Each test has its own namespace prefix (`pm1`..`pm9`) so that tests can run in
//! parallel with each other and with other suites.

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::{netns::Lan, wait_full_mesh, wait_until, Opts, Sidecar};

const IROH_PORT: u16 = 9470;

use common::lan_mdns_opts as mdns_opts;

async fn start(lan: &Lan, i: usize, app_id: &str) -> Sidecar {
    Sidecar::start(&format!("node{i}"), mdns_opts(lan, i, app_id)).await
}

/// Waits until every node lists every other one with source mdns (a full mesh can be
/// complete before that: an inbound connection may come before our own resolution).
async fn wait_mdns_everywhere(nodes: &[&Sidecar], timeout: Duration) -> Option<Duration> {
    wait_until(timeout, || async {
        for n in nodes {
            for m in nodes {
                if m.id != n.id && !n.lists_with_source(&m.id, "mdns").await {
                    return false;
                }
            }
        }
        true
    })
    .await
}

/// Three sidecars in a full mesh, each of which resolved the others by mDNS.
async fn settled_trio(prefix: &str) -> (Lan, Sidecar, Sidecar, Sidecar) {
    let lan = Lan::new(prefix, 3);
    let a = start(&lan, 0, "test").await;
    let b = start(&lan, 1, "test").await;
    let c = start(&lan, 2, "test").await;
    wait_full_mesh(&[&a, &b, &c], Duration::from_secs(15))
        .await
        .expect("full mesh");
    wait_mdns_everywhere(&[&a, &b, &c], Duration::from_secs(10))
        .await
        .expect("every node resolved every other one");
    (lan, a, b, c)
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_form_a_full_mesh_and_a_late_joiner_joins() {
    if common::skip::without_root("network namespaces") {
        return;
    }
    let mut lan = Lan::new("pm1", 3);
    let a = start(&lan, 0, "test").await;
    let b = start(&lan, 1, "test").await;
    let c = start(&lan, 2, "test").await;
    let took = wait_full_mesh(&[&a, &b, &c], Duration::from_secs(15))
        .await
        .expect("3 sidecars with --discovery-mode mdns and no --peer form a full mesh");
    eprintln!("full mesh of 3 after {took:?}");
    wait_mdns_everywhere(&[&a, &b, &c], Duration::from_secs(10))
        .await
        .expect("every node resolved every other one");
    for n in [&a, &b, &c] {
        for p in n.peers().await {
            assert!(p.sources.contains(&"mdns".to_string()), "{p:?}");
            // Only the LAN address is announced: never loopback, never IPv6 (iroh is
            // bound to IPv4 only).
            for addr in &p.addrs {
                assert!(
                    addr.starts_with("10.77.0."),
                    "unexpected address {addr} in {p:?}"
                );
            }
        }
    }

    let d_idx = lan.add_host(0);
    let started = Instant::now();
    let d = start(&lan, d_idx, "test").await;
    let took = wait_full_mesh(&[&a, &b, &c, &d], Duration::from_secs(15))
        .await
        .expect("a node started later joins the mesh");
    eprintln!(
        "late joiner in the full mesh {took:?} after its API answered ({:?} after spawn)",
        started.elapsed()
    );
    // The settled peers answered the joiner's first query before its own announcement
    // went out: those finds are marked as "the peer cannot know us yet", which lets the
    // joiner dial at once whatever the ids (no tie-break wait).
    assert!(
        d.log().contains("unaware=true"),
        "the joiner found no peer before its own announcement; log:\n{}",
        d.log()
    );
    // Every settled peer answered the joiner's one-shot legacy query (unicast, at once,
    // not subject to the once-a-second multicast limit).
    let log = d.log();
    for p in [&a, &b, &c] {
        assert!(
            log.lines()
                .any(|l| l.contains("answer to the one-shot query") && l.contains(&p.id)),
            "{} did not answer the one-shot query; joiner's log:\n{log}",
            p.name
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_leaves_the_others_lists_within_2s() {
    if common::skip::without_root("network namespaces") {
        return;
    }
    // Both survivors must know c by mdns first, or its absence below would prove nothing.
    let (_lan, a, b, mut c) = settled_trio("pm2").await;
    let cid = c.id.clone();
    let t0 = Instant::now();
    let st = c.stop().expect("c was running");
    assert!(
        st.success(),
        "SIGTERM exit status {st:?}; log:\n{}",
        c.log()
    );
    // The bound counts from the signal, so the time stop() took is deducted.
    let left = Duration::from_secs(2).saturating_sub(t0.elapsed());
    let took = wait_until(left, || async {
        !a.lists_with_source(&cid, "mdns").await && !b.lists_with_source(&cid, "mdns").await
    })
    .await;
    let Some(took) = took else {
        panic!(
            "the stopped node is still discovered 2 s after SIGTERM: a={:?} b={:?}",
            a.peer(&cid).await,
            b.peer(&cid).await
        );
    };
    let since_signal = t0.elapsed();
    eprintln!(
        "stopped node left both lists {since_signal:?} after SIGTERM ({took:?} after it exited)"
    );
    assert!(
        since_signal <= Duration::from_millis(2100),
        "{since_signal:?}"
    );
    assert!(c.log().contains("goodbye sent"), "{}", c.log());
    // Forgotten when it closed its connection "shutting down", not a second after its
    // goodbye (mdns-sd keeps a goodbye's record for that second, RFC 6762 10.1).
    for n in [&a, &b] {
        assert!(
            n.log().contains("peer is shutting down; forgetting it now"),
            "{}",
            n.log()
        );
    }
    // The survivors keep their own connection.
    assert_eq!(a.connected().await, vec![b.id.clone()]);
}

/// The others forget a node that shuts down as soon as it closes its connections. When
/// it comes back within the second mdns-sd keeps a goodbye's record (a restart: same
/// identity, same port), it announces the very record they still hold and mdns-sd
/// reports nothing new; they must still list it by mDNS again, not only through its
/// inbound connection (else they would never redial it by themselves). Whether a
/// restart here takes more or less than that second varies: both ways must work.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_restarted_at_once_is_listed_by_mdns_again() {
    if common::skip::without_root("network namespaces") {
        return;
    }
    let (_lan, a, b, mut c) = settled_trio("pmr").await;
    c.restart().await;
    let back = wait_until(Duration::from_secs(20), || async {
        for n in [&a, &b] {
            let connected = n.connected().await.contains(&c.id);
            if !connected || !n.lists_with_source(&c.id, "mdns").await {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        back.is_some(),
        "after a restart: a lists c as {:?}, b as {:?}\na's log:\n{}",
        a.peer(&c.id).await,
        b.peer(&c.id).await,
        a.log()
    );
    eprintln!("restarted node connected and listed by mDNS again after {back:?}");
}

/// A device that crashed and came back with a new identity (its data dir wiped, or a
/// spare unit given the same address) while the others still hold the dead identity's
/// record and redial it: the newcomer must not be mistaken for the dead one, and joins
/// in the normal time.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_identity_on_a_killed_nodes_address_joins() {
    if common::skip::without_root("network namespaces") {
        return;
    }
    let (lan, a, b, mut c) = settled_trio("pm8").await;
    let old = c.id.clone();
    c.kill9();
    // Let the survivors notice and start redialling the dead identity, whose mDNS
    // record lives on until its TTL.
    wait_until(Duration::from_secs(20), || async {
        !a.connected().await.contains(&old) && !b.connected().await.contains(&old)
    })
    .await
    .expect("the survivors notice the crash");
    let c2 = start(&lan, 2, "test").await;
    assert_ne!(c2.id, old, "a fresh data dir has a fresh identity");
    let took = wait_full_mesh(&[&a, &b, &c2], Duration::from_secs(15)).await;
    let Some(took) = took else {
        panic!(
            "the new identity on the dead node's address did not join within 15 s: \
             a knows it as {:?}, b as {:?}; it knows a as {:?}, b as {:?}\nits log:\n{}",
            a.peer(&c2.id).await,
            b.peer(&c2.id).await,
            c2.peer(&a.id).await,
            c2.peer(&b.id).await,
            c2.log()
        );
    };
    eprintln!("new identity on the killed node's address in full mesh after {took:?}");
    // The dead identity is never recorded as connected again.
    for n in [&a, &b] {
        assert!(
            !n.connected().await.contains(&old),
            "{:?}",
            n.peer(&old).await
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn another_app_id_is_seen_but_never_connected() {
    if common::skip::without_root("network namespaces") {
        return;
    }
    let lan = Lan::new("pm4", 3);
    let a = start(&lan, 0, "alpha").await;
    let b = start(&lan, 1, "alpha").await;
    let x = start(&lan, 2, "beta").await;
    wait_full_mesh(&[&a, &b], Duration::from_secs(15))
        .await
        .expect("same formation connects");
    let seen = wait_until(Duration::from_secs(10), || async {
        a.log().contains("skipping a record of another formation") && a.log().contains(&x.id)
    })
    .await;
    assert!(
        seen.is_some(),
        "alpha never saw beta's record; log:\n{}",
        a.log()
    );
    // Give a wrong dial every chance to happen, then check nobody crossed over.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for n in [&a, &b] {
        assert!(n.peer(&x.id).await.is_none(), "{:?}", n.peers().await);
    }
    assert!(x.peers().await.is_empty(), "{:?}", x.peers().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn interop_with_python_zeroconf() {
    if common::skip::without_root("network namespaces") {
        return;
    }
    let lan = Lan::new("pm5", 2);
    let a = start(&lan, 0, "test").await;

    // An identity that the zeroconf side announces as if it were a sidecar, plus a
    // record with a broken TXT that we must ignore without harm.
    let key_dir = tempfile::tempdir().unwrap();
    let fake_id = common::endpoint_id(key_dir.path());
    let zc_addr = lan.addr(1, 0).to_string();
    let zc = common::interop::zeroconf_peer(
        lan.ns(1),
        &zc_addr,
        &[
            (
                "zeroconf-peer",
                IROH_PORT,
                format!("v=1,app_id=test,endpoint_id={fake_id}"),
            ),
            (
                "zeroconf-broken",
                IROH_PORT,
                "v=1,app_id=test,endpoint_id=nothex".into(),
            ),
        ],
    );

    // 1. zeroconf sees our service with its TXT record.
    let mine = wait_until(Duration::from_secs(15), || async {
        zc.lines()
            .iter()
            .any(|l| l["txt"]["endpoint_id"] == a.id.as_str() && l["txt"]["app_id"] == "test")
    })
    .await;
    assert!(
        mine.is_some(),
        "python-zeroconf did not resolve our service; its output:\n{:?}\nstderr:\n{}\nsidecar log:\n{}",
        zc.lines(),
        zc.stderr(),
        a.log()
    );
    let rec = zc
        .lines()
        .into_iter()
        .find(|l| l["txt"]["endpoint_id"] == a.id.as_str())
        .unwrap();
    assert_eq!(rec["txt"]["v"], "1", "{rec}");
    assert_eq!(rec["port"], IROH_PORT, "{rec}");
    assert_eq!(
        rec["addresses"],
        serde_json::json!([lan.addr(0, 0).to_string()]),
        "{rec}"
    );
    let name = rec["name"].as_str().unwrap();
    assert!(
        name.starts_with("peat-") && name.ends_with("._peat-sidecar._udp.local."),
        "{name}"
    );

    // 2. The record zeroconf publishes shows up as a found peer.
    let found = wait_until(Duration::from_secs(10), || {
        a.lists_with_source(&fake_id, "mdns")
    })
    .await;
    assert!(
        found.is_some(),
        "zeroconf's record not in ListPeers; log:\n{}",
        a.log()
    );
    let p = a.peer(&fake_id).await.unwrap();
    assert_eq!(p.addrs, vec![format!("{zc_addr}:{IROH_PORT}")], "{p:?}");

    // 3. The broken record was logged and ignored, and the sidecar still answers.
    assert!(
        wait_until(Duration::from_secs(5), || async {
            a.log().contains("malformed TXT record")
        })
        .await
        .is_some(),
        "{}",
        a.log()
    );
    assert_eq!(a.peers().await.len(), 1, "{:?}", a.peers().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn loopback_option_lets_sidecars_on_one_host_find_each_other() {
    if common::skip::without_root("network namespaces") {
        return;
    }
    // Two sidecars in ONE namespace, told to use loopback only (a glob that also
    // denies eth0), bound to 127.0.0.1 on different ports.
    let lan = Lan::new("pm6", 1);
    let opts = |port: u16| Opts {
        netns: Some(lan.ns(0).to_string()),
        bind: Some(SocketAddr::from(([127, 0, 0, 1], port))),
        extra: [
            "--discovery-mode",
            "mdns",
            "--mdns-loopback",
            "--mdns-interfaces",
            "l*,!eth*",
        ]
        .map(String::from)
        .to_vec(),
        ..Opts::default()
    };
    let a = Sidecar::start("lo-a", opts(9470)).await;
    let b = Sidecar::start("lo-b", opts(9480)).await;
    let both = wait_until(Duration::from_secs(15), || async {
        a.lists_with_source(&b.id, "mdns").await && b.lists_with_source(&a.id, "mdns").await
    })
    .await;
    assert!(
        both.is_some(),
        "a={:?} b={:?}",
        a.peers().await,
        b.peers().await
    );
    wait_full_mesh(&[&a, &b], Duration::from_secs(10))
        .await
        .expect("two sidecars on one host connect over loopback");
    let p = a.peer(&b.id).await.unwrap();
    assert_eq!(p.addrs, vec!["127.0.0.1:9480".to_string()], "{p:?}");

    // Without --mdns-loopback a third one stays alone.
    let mut alone = opts(9490);
    alone.extra.retain(|x| x != "--mdns-loopback");
    let c = Sidecar::start("lo-c", alone).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(c.peers().await.is_empty(), "{:?}", c.peers().await);
    assert!(a.peer(&c.id).await.is_none());
}

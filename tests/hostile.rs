//! Hostile networks, end to end in the test LAN (tests/common/netns.rs): a flood of
//! spoofed mDNS announcements and an impostor that announces a real peer's endpoint id
//! at its own address. The attacker is python-zeroconf (tests/interop/spoof_flood.py)
//! in its own namespace. Needs root.
//!
//! Namespace prefixes `ph1`, `ph2`, ... one per test.

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::{interop::PyScript, netns::Lan, rss_kb, wait_until, Opts, Sidecar};

/// One flood at a time: two floods on a 2-core machine lose the real nodes' own mDNS
/// traffic, which is not what these tests are about.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const IROH_PORT: u16 = 9470;
const APP: &str = "hostile";

fn mdns_opts(lan: &Lan, i: usize, extra: &[&str]) -> Opts {
    let mut e = vec!["--discovery-mode".to_string(), "mdns".to_string()];
    e.extend(extra.iter().map(|s| s.to_string()));
    Opts {
        app_id: APP.into(),
        netns: Some(lan.ns(i).to_string()),
        bind: Some(SocketAddr::from(([0, 0, 0, 0], IROH_PORT))),
        extra: e,
        ..Opts::default()
    }
}

/// The attacker: tests/interop/spoof_flood.py in namespace `ns`.
fn attacker(ns: &str, args: &[&str]) -> PyScript {
    let mut argv = vec!["--app-id".to_string(), APP.to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    PyScript::start(ns, "zeroconf, cryptography", "spoof_flood.py", &argv)
}

/// Where the fake instances point: 198.18.0.0/15 (RFC 2544, benchmarking), off the
/// test LAN's 10.77.0.0/24. A dial to an on-link address that nobody owns makes the
/// kernel resolve it with ARP, and a flood of them fills the neighbour table, which is
/// one table for all namespaces (gc_thresh3 1024 by default) and starves the other
/// tests' hosts. Off-link, with an `unreachable` route in every host (the namespaces have
/// no default route anyway), a dial fails at once without a neighbour entry.
const FAKE_NET: &str = "198.18.0";
const FAKE_ROUTE: &str = "198.18.0.0/15";

/// A LAN of `n` hosts in which the fakes' addresses are unreachable.
fn lan_without_route_to_fakes(prefix: &str, n: usize) -> Lan {
    let lan = Lan::new(prefix, n);
    lan.add_route_everywhere(&["unreachable", FAKE_ROUTE]);
    lan
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

async fn dials_started(s: &Sidecar) -> u64 {
    s.status().await.counters.unwrap_or_default().dials_started
}

const MAX_KNOWN: usize = 256;
const DIALS_PER_SEC: u64 = 20;
const CONNECT_BOUND_SECS: u64 = 60;

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_10000_spoofed_announcements_is_survived() {
    let _serial = ONE_AT_A_TIME.lock().await;
    if common::skip::without_root("network namespaces") {
        return;
    }
    // Host 0: the victim. Host 1: the attacker. Host 2: a real peer, started mid-flood.
    let lan = lan_without_route_to_fakes("ph1", 3);
    let max_known = MAX_KNOWN.to_string();
    // Many dials may be in flight, so that --max-dials-per-sec, not the concurrency
    // cap, is what bounds the dial rate here.
    let a = Sidecar::start(
        "victim",
        mdns_opts(
            &lan,
            0,
            &[
                "--max-known-peers",
                &max_known,
                "--max-concurrent-dials",
                "1000",
            ],
        ),
    )
    .await;
    let pid = a.pid().expect("victim runs");
    let rss_before = rss_kb(pid);

    // Fake instances point into 198.18.0.100-250: off the LAN, unreachable, so every
    // dial to them fails (see FAKE_NET).
    let attacker = attacker(
        lan.ns(1),
        &[
            "--count", "10000", "--subnet", FAKE_NET, "--first", "100", "--last", "250",
        ],
    );
    attacker.wait_for("ready", Duration::from_secs(20)).await;
    // Let the flood get going, then measure the dial rate over a window.
    wait_until(Duration::from_secs(30), || async {
        attacker
            .lines()
            .iter()
            .filter_map(|l| l.get("published").and_then(|v| v.as_u64()))
            .max()
            .unwrap_or(0)
            >= 2000
    })
    .await
    .expect("the attacker publishes");

    let b_started = Instant::now();
    let b = Sidecar::start(
        "real-peer",
        mdns_opts(&lan, 2, &["--max-known-peers", &max_known]),
    )
    .await;

    let w0 = Instant::now();
    let d0 = dials_started(&a).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let d1 = dials_started(&a).await;
    let window = w0.elapsed().as_secs_f64();
    let dials = d1 - d0;
    // A token bucket of rate r holds at most r tokens: r per second plus one burst.
    let allowed = (DIALS_PER_SEC as f64 * window).ceil() as u64 + DIALS_PER_SEC;
    eprintln!("dials started: {dials} in {window:.1} s (allowed {allowed})");
    assert!(
        dials <= allowed,
        "{dials} dials in {window:.1} s exceed --max-dials-per-sec {DIALS_PER_SEC} + burst"
    );
    assert!(dials > 0, "the flood made the victim dial nothing at all?");

    // During the flood the real peer competes with thousands of fakes for dial slots
    // and table entries: it may get in, but nothing guarantees it (docs/SECURITY.md).
    let during = wait_until(Duration::from_secs(20), || async {
        a.connected().await.contains(&b.id) && b.connected().await.contains(&a.id)
    })
    .await;
    eprintln!(
        "real peer connected during the flood: {during:?} (started {:?} ago)",
        b_started.elapsed()
    );

    let done = attacker.wait_for("done", Duration::from_secs(120)).await;
    eprintln!("attacker: {done}");
    // The attacker vanishes without goodbyes: its records stay in caches until their
    // TTL. Once the flood has passed the real peer must connect, within a generous
    // functional bound.
    let flood_over = Instant::now();
    drop(attacker);
    let took = wait_until(Duration::from_secs(CONNECT_BOUND_SECS), || async {
        a.connected().await.contains(&b.id) && b.connected().await.contains(&a.id)
    })
    .await;
    let Some(_) = took else {
        panic!(
            "the real peer did not connect within {CONNECT_BOUND_SECS} s after the flood; \
             victim knows it as {:?}",
            a.peer(&b.id).await
        );
    };
    eprintln!(
        "real peer connected {:?} after the flood ended",
        flood_over.elapsed()
    );
    // Give the victim time to digest the tail of the flood.
    tokio::time::sleep(Duration::from_secs(5)).await;

    assert!(alive(pid), "the victim died; log:\n{}", a.log());
    // mdns-sd's own record cache has no cap; the mdns source empties it once far more
    // new records came in than the table can hold (at most every 30 s).
    let purged = wait_until(Duration::from_secs(40), || async {
        let log = a.log();
        log.contains("emptying the mDNS cache") || log.contains("browsing afresh")
    })
    .await;
    assert!(purged.is_some(), "no mDNS cache purge after the flood");
    assert!(
        !a.log().contains("no more mDNS discovery"),
        "the flood stopped mDNS discovery"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = a.status().await;
    let c = st.counters.unwrap_or_default();
    let rss_after = rss_kb(pid);
    eprintln!(
        "after the flood: known_peers {} (cap {MAX_KNOWN}), peers_evicted {}, dials_started {}, \
         dials_failed {}, live_tasks {}, VmRSS {} kB -> {} kB",
        st.known_peers,
        c.peers_evicted,
        c.dials_started,
        c.dials_failed,
        c.live_tasks,
        rss_before,
        rss_after
    );
    assert!(
        st.known_peers as usize <= MAX_KNOWN,
        "peer table over its cap: {}",
        st.known_peers
    );
    assert!(
        a.peers().await.len() <= MAX_KNOWN,
        "ListPeers longer than the cap"
    );
    assert!(
        c.peers_evicted > 0,
        "10000 fake peers and a table of {MAX_KNOWN} must evict"
    );
    assert!(
        rss_after < 200 * 1024,
        "victim VmRSS {rss_after} kB is over the 200 MB bound"
    );
    // Still connected to the real peer, still answering.
    assert!(
        a.connected().await.contains(&b.id),
        "{:?}",
        a.peer(&b.id).await
    );
}

/// Lines of `log` that say `peer connected` for `id`.
fn connected_lines<'a>(log: &'a str, id: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains("peer connected") && l.contains(id))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_impostor_announcing_a_real_peers_id_is_never_connected_as_that_peer() {
    let _serial = ONE_AT_A_TIME.lock().await;
    if common::skip::without_root("network namespaces") {
        return;
    }
    // Host 0: the victim. Host 1: the attacker: a sidecar of the same app id (so a real
    // QUIC/TLS endpoint answers on its address, but with its own key) plus a
    // python-zeroconf record that claims the real peer's endpoint id at that address.
    // Host 2: the real peer, started only after the victim has tried the impostor.
    let lan = Lan::new("ph2", 3);
    let a = Sidecar::start("victim", mdns_opts(&lan, 0, &[])).await;
    let impostor = Sidecar::start(
        "impostor",
        Opts {
            app_id: APP.into(),
            netns: Some(lan.ns(1).to_string()),
            bind: Some(SocketAddr::from(([0, 0, 0, 0], IROH_PORT))),
            ..Opts::default()
        },
    )
    .await;
    // The real peer's identity exists before it runs, so the attacker can claim it.
    let b_dir = tempfile::tempdir().unwrap();
    let b_id = common::endpoint_id(b_dir.path());
    let attacker_addr = lan.addr(1, 0).to_string();
    let attacker = attacker(
        lan.ns(1),
        &[
            "--impostor",
            &b_id,
            "--addr",
            &attacker_addr,
            "--port",
            &IROH_PORT.to_string(),
        ],
    );
    attacker.wait_for("done", Duration::from_secs(20)).await;

    // The victim finds the claimed id and dials the attacker's address: the TLS
    // handshake proves another key, so the dial fails.
    let tried = wait_until(Duration::from_secs(20), || async {
        a.peer(&b_id).await.is_some_and(|p| p.failures > 0)
    })
    .await;
    let p = a.peer(&b_id).await;
    assert!(
        tried.is_some(),
        "the victim never tried (and failed) the impostor's address: {p:?}\n{}",
        a.log()
    );
    let p = p.unwrap_or_default();
    eprintln!(
        "impostor record: state {}, addrs {:?}, last error: {}",
        p.state, p.addrs, p.last_error
    );
    assert!(
        p.addrs.iter().any(|x| x.starts_with(&attacker_addr)),
        "{p:?}"
    );
    assert_ne!(
        p.state,
        peat_sidecar::api::pb::PeerState::Connected as i32,
        "{p:?}"
    );
    assert!(
        a.connected().await.is_empty(),
        "connected to something: {:?}",
        a.peers().await
    );
    assert!(
        impostor.connected().await.is_empty(),
        "the impostor got a connection: {:?}",
        impostor.peers().await
    );

    // Now the real peer comes up, announcing the same id at its real address.
    let b = Sidecar::start_in("real-peer", b_dir.path(), mdns_opts(&lan, 2, &[])).await;
    assert_eq!(b.id, b_id);
    let took = wait_until(Duration::from_secs(30), || async {
        a.connected().await.contains(&b_id) && b.connected().await.contains(&a.id)
    })
    .await;
    assert!(
        took.is_some(),
        "the real peer did not connect while the impostor record exists: {:?}",
        a.peer(&b_id).await
    );
    eprintln!("real peer connected {took:?} after it started");
    // Keep watching for a while: the live connection to the real peer's id is never
    // to the attacker's address, and the impostor never gets a connection.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let real_addr = lan.addr(2, 0).to_string();
    let log = a.log();
    let lines = connected_lines(&log, &b_id);
    assert!(
        !lines.is_empty(),
        "no `peer connected` line for the real peer"
    );
    for l in &lines {
        eprintln!("{l}");
        // Inbound or outbound, the connection's address is the real peer's.
        assert!(
            !l.contains(&format!("{attacker_addr}:")) && l.contains(&format!("{real_addr}:")),
            "the real peer's id connected over another address than {real_addr}: {l}"
        );
    }
    assert!(a.connected().await.contains(&b_id));
    assert!(
        impostor.connected().await.is_empty(),
        "the impostor got a connection: {:?}",
        impostor.peers().await
    );
    assert!(
        !impostor.log().contains("peer connected"),
        "{}",
        impostor.log()
    );
}

/// Highest `published` figure the attacker has printed so far.
fn published(attacker: &PyScript) -> u64 {
    attacker
        .lines()
        .iter()
        .filter_map(|l| l.get("published").and_then(|v| v.as_u64()))
        .max()
        .unwrap_or(0)
}

/// How long a real peer that starts while the flood goes on may take to connect.
const DURING_FLOOD_BOUND_SECS: u64 = 20;

// This used to fail in about half the runs (debug build, shared 2-core machine), for two
// reasons. (1) Neither side's mDNS source reported the other's record: the receive
// buffer of mdns-sd's socket overflowed (UDP RcvbufErrors in the hosts' namespaces,
// thousands per run), because the unoptimised mdns-sd took in only ~40 datagrams/s and
// every query for our type makes the attacker answer with its whole fake registry at
// once. (2) When the records did arrive, both peer tables evicted the real peer (oldest
// first) before its dial came up behind the fakes. The fixes: mdns-sd optimised in dev
// builds too (Cargo.toml); two more announcements in a new node's first 11 s, between
// its own browse queries; an eviction order that keeps a peer at an address of its own
// over fakes that share theirs; and a dial slot kept free for peers at untried
// addresses (docs/SECURITY.md has the figures).
#[tokio::test(flavor = "multi_thread")]
async fn a_real_peer_connects_while_a_spoof_flood_goes_on() {
    let _serial = ONE_AT_A_TIME.lock().await;
    if common::skip::without_root("network namespaces") {
        return;
    }
    // Host 0: the victim, with the default dial limits and a small table. Host 1: the
    // attacker, announcing fakes at a steady few hundred per second for over a minute.
    // Host 2: a real peer, started once the flood is under way; it must connect while
    // the flood still goes on.
    let lan = lan_without_route_to_fakes("ph3", 3);
    let max_known = MAX_KNOWN.to_string();
    let a = Sidecar::start(
        "victim",
        mdns_opts(&lan, 0, &["--max-known-peers", &max_known]),
    )
    .await;
    let pid = a.pid().expect("victim runs");
    let attacker = attacker(
        lan.ns(1),
        &[
            "--count", "40000", "--burst", "40", "--pause", "0.1", "--subnet", FAKE_NET, "--first",
            "100", "--last", "250",
        ],
    );
    attacker.wait_for("ready", Duration::from_secs(20)).await;
    wait_until(Duration::from_secs(60), || async {
        published(&attacker) >= 3000
    })
    .await
    .expect("the attacker publishes");
    // The victim's table is full of fakes by now.
    let known = a.status().await.known_peers;
    eprintln!(
        "flood under way: {} published, victim knows {known}",
        published(&attacker)
    );

    let d0 = dials_started(&a).await;
    let w0 = Instant::now();
    let pub0 = published(&attacker);
    let b = Sidecar::start(
        "real-peer",
        mdns_opts(&lan, 2, &["--max-known-peers", &max_known]),
    )
    .await;
    let took = wait_until(Duration::from_secs(DURING_FLOOD_BOUND_SECS), || async {
        a.connected().await.contains(&b.id) && b.connected().await.contains(&a.id)
    })
    .await;
    let pub1 = published(&attacker);
    let flood_on = !attacker.lines().iter().any(|l| l.get("done").is_some());
    let window = w0.elapsed().as_secs_f64();
    let dials = dials_started(&a).await - d0;
    let st = a.status().await;
    eprintln!(
        "real peer connected during the flood: {took:?} after it started; the attacker \
         published {} more meanwhile (still flooding: {flood_on}); victim: {dials} dials \
         in {window:.1} s, known_peers {}, evicted {}",
        pub1 - pub0,
        st.known_peers,
        st.counters.unwrap_or_default().peers_evicted
    );
    let Some(_) = took else {
        panic!(
            "the real peer did not connect within {DURING_FLOOD_BOUND_SECS} s during the \
             flood; victim knows it as {:?}; real peer knows the victim as {:?}",
            a.peer(&b.id).await,
            b.peer(&a.id).await
        );
    };
    // How it went on each side (found, dialled, connected), for the record.
    for (side, s) in [("victim", &a), ("real peer", &b)] {
        let other = if side == "victim" { &b.id } else { &a.id };
        for l in s.log().lines().filter(|l| {
            l.contains(other.as_str())
                && (l.contains("peer found") || l.contains("dialling") || l.contains("connected"))
        }) {
            eprintln!("{side}: {}", &l[..l.len().min(200)]);
        }
    }
    // The attacker reports a count after each burst (every 0.1 s), so a connection
    // quicker than that may see no new count: "not done" is what says the flood was on.
    assert!(
        flood_on,
        "the flood was over before the real peer connected: the test proves nothing"
    );
    // The bounds held meanwhile.
    let allowed = (DIALS_PER_SEC as f64 * window).ceil() as u64 + DIALS_PER_SEC;
    assert!(
        dials <= allowed,
        "{dials} dials in {window:.1} s (allowed {allowed})"
    );
    assert!(st.known_peers as usize <= MAX_KNOWN, "{}", st.known_peers);
    assert!(alive(pid), "the victim died");
    // And the connection holds while the flood goes on.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        a.connected().await.contains(&b.id),
        "{:?}",
        a.peer(&b.id).await
    );
    assert!(
        published(&attacker) > pub1,
        "the attacker stopped publishing: the connection was not held under a flood"
    );
}

//! Idle traffic and failure detection with the default liveness settings (beacons and
//! probes, quiet QUIC connections), end to end: four sidecars in network namespaces on
//! one bridge, meshed by mDNS.
//!
//! - Idle for a minute, every byte each node sends on its eth0 (counted by the kernel
//!   with nft, Ethernet headers included) stays within the 4 KB per node per minute
//!   budget of docs/OPERATIONS.md "Radio links". With the old 1 s keep-alive a node
//!   here sends about 16 KB a minute, and with probes instead of beacons about 20 KB,
//!   so the budget fails if beacons stop working.
//! - kill -9 of one node: the others close its connection (liveness, not the 360 s
//!   QUIC idle timeout) within a generous bound; the goal (10 s p95) is measured by
//!   the bench (`--only idle`).
//! - SIGTERM of another: the others see it leave at once (its close frame).

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::{
    egress::{EgressCounter, Sent},
    netns::Lan,
    poll, wait_full_mesh, Opts, Sidecar,
};

const IROH_PORT: u16 = 9470;
const N: usize = 4;
/// Per node per minute, all frames (docs/OPERATIONS.md "Radio links").
const BUDGET: u64 = 4096;
const WINDOW: Duration = Duration::from_secs(60);
/// Start-up announcements (mDNS probes, first beacons) pass before the window.
const SETTLE: Duration = Duration::from_secs(8);

async fn start(lan: &Lan, i: usize) -> Sidecar {
    let opts = Opts {
        netns: Some(lan.ns(i).to_string()),
        bind: Some(SocketAddr::from(([0, 0, 0, 0], IROH_PORT))),
        extra: vec!["--discovery-mode".into(), "mdns".into()],
        ..Opts::default()
    };
    Sidecar::start(&format!("node{i}"), opts).await
}

/// How long until none of `watchers` lists `gone` as connected, polled every 100 ms.
async fn until_dropped(watchers: &[&Sidecar], gone: &str, bound: Duration) -> Option<Duration> {
    poll(bound, Duration::from_millis(100), || async {
        for w in watchers {
            if w.connected().await.iter().any(|c| c == gone) {
                return false;
            }
        }
        true
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_mesh_stays_within_budget_and_notices_crashes_and_leaves() {
    if common::skip::without_root("network namespaces") {
        return;
    }
    let lan = Lan::new("ia", N);
    let mut nodes = Vec::new();
    for i in 0..N {
        nodes.push(start(&lan, i).await);
    }
    let refs: Vec<&Sidecar> = nodes.iter().collect();
    wait_full_mesh(&refs, Duration::from_secs(20))
        .await
        .expect("4 sidecars with mdns form a full mesh");

    // Idle budget.
    let counters: Vec<EgressCounter> = (0..N)
        .map(|i| EgressCounter::install(lan.ns(i), "eth0", IROH_PORT))
        .collect();
    tokio::time::sleep(SETTLE).await;
    let before: Vec<Sent> = counters.iter().map(EgressCounter::read).collect();
    let t0 = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let secs = t0.elapsed().as_secs_f64();
    let per_min: Vec<Sent> = counters
        .iter()
        .zip(&before)
        .map(|(c, b)| c.read().minus(b).per_minute(secs))
        .collect();
    for (i, s) in per_min.iter().enumerate() {
        eprintln!("node{i} idle, per minute: {s}");
    }
    for (i, s) in per_min.iter().enumerate() {
        assert!(s.beacon > 0, "node{i} sent no beacon: {s}");
        assert!(
            s.total <= BUDGET,
            "node{i} sent {} B/min idle, over the {BUDGET} B budget: {s}; log:\n{}",
            s.total,
            nodes[i].log()
        );
    }
    // Still a full mesh: quiet connections are not lost connections.
    wait_full_mesh(&refs, Duration::from_secs(1))
        .await
        .expect("the mesh survives a quiet minute");
    drop(refs);

    // kill -9: found by the missing beacons and an unanswered probe.
    let killed = nodes[3].id.clone();
    let t_kill = Instant::now();
    nodes[3].kill9();
    let took = until_dropped(
        &[&nodes[0], &nodes[1], &nodes[2]],
        &killed,
        Duration::from_secs(20),
    )
    .await;
    eprintln!("kill -9 noticed by all three after {took:?}");
    let took = took.unwrap_or_else(|| {
        panic!(
            "a killed node is still connected 20 s later; node0 log:\n{}",
            nodes[0].log()
        )
    });
    assert!(took <= Duration::from_secs(20) && t_kill.elapsed() >= took);
    for n in &nodes[..3] {
        assert!(n.log().contains("peer unresponsive"), "{}", n.log());
    }

    // SIGTERM: the close frame says so at once.
    let left = nodes[2].id.clone();
    let t_stop = Instant::now();
    // Only the signal: stop() waits for the exit, and the close frames go out before.
    common::signal(nodes[2].pid().expect("node2 runs"), "TERM");
    let took = until_dropped(&[&nodes[0], &nodes[1]], &left, Duration::from_secs(3)).await;
    let exit = nodes[2].stop().expect("node2 was running");
    eprintln!(
        "SIGTERM noticed by both after {took:?}; node2 exited ({exit}) {:?} after the signal",
        t_stop.elapsed()
    );
    assert!(
        took.is_some(),
        "a stopped node is still connected 3 s after SIGTERM"
    );
    for n in &nodes[..2] {
        assert!(n.log().contains("the peer shut down"), "{}", n.log());
    }
}

//! Benchmark: how fast mdns discovery works on a LAN of 10 sidecars in network
//! namespaces. Not part of the normal test run (it is `#[ignore]`d); run it with
//!
//!     cargo test --release --test bench_mdns -- --ignored --nocapture
//!
//! (as root). It prints p50/p95 of:
//! - join: a new sidecar (fresh identity) spawned into a LAN of 9 until it is
//!   connected to all 9 and all 9 to it;
//! - leave (mdns): SIGTERM of that sidecar until none of the 9 lists it with source
//!   mdns any more (its goodbye arrived);
//! - leave (table): until none of the 9 has it in its peer table at all.
//!
//! Results are recorded in docs/BENCHMARKS.md ("mDNS discovery").

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::{netns::Lan, wait_until, Opts, Sidecar};

const ROUNDS: usize = 10;
const N: usize = 10;

fn opts(lan: &Lan, i: usize) -> Opts {
    Opts {
        app_id: "bench".into(),
        netns: Some(lan.ns(i).to_string()),
        bind: Some(SocketAddr::from(([0, 0, 0, 0], 9470))),
        extra: vec!["--discovery-mode".into(), "mdns".into()],
        env: vec![("RUST_LOG".into(), "info".into())],
        ..Opts::default()
    }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx]
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with --ignored --nocapture as root"]
async fn mdns_join_and_leave() {
    let lan = Lan::new("pm8", N);
    let mut nodes = Vec::new();
    for i in 0..N - 1 {
        nodes.push(Sidecar::start(&format!("b{i}"), opts(&lan, i)).await);
    }
    let refs: Vec<&Sidecar> = nodes.iter().collect();
    common::wait_full_mesh(&refs, Duration::from_secs(60))
        .await
        .expect("initial mesh of 9");

    let (mut joins, mut leaves, mut gone) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..ROUNDS {
        let t0 = Instant::now();
        let mut j = Sidecar::start(&format!("joiner{r}"), opts(&lan, N - 1)).await;
        let mut all: Vec<&Sidecar> = nodes.iter().collect();
        all.push(&j);
        common::wait_full_mesh(&all, Duration::from_secs(60))
            .await
            .expect("joiner meshed");
        joins.push(t0.elapsed());

        let id = j.id.clone();
        let t1 = Instant::now();
        j.stop();
        wait_until(Duration::from_secs(60), || async {
            for n in &nodes {
                if n.peer(&id)
                    .await
                    .is_some_and(|p| p.sources.iter().any(|s| s == "mdns"))
                {
                    return false;
                }
            }
            true
        })
        .await
        .expect("goodbye seen everywhere");
        leaves.push(t1.elapsed());
        wait_until(Duration::from_secs(60), || async {
            for n in &nodes {
                if n.peer(&id).await.is_some() {
                    return false;
                }
            }
            true
        })
        .await
        .expect("left every table");
        gone.push(t1.elapsed());
    }
    eprintln!(
        "mdns, {N} nodes, {ROUNDS} rounds: join (spawn -> full mesh) p50 {:?} p95 {:?}; leave (SIGTERM -> mdns source gone everywhere) p50 {:?} p95 {:?}; SIGTERM -> out of every peer table p50 {:?} p95 {:?}",
        pct(&mut joins, 0.5),
        pct(&mut joins, 0.95),
        pct(&mut leaves, 0.5),
        pct(&mut leaves, 0.95),
        pct(&mut gone, 0.5),
        pct(&mut gone, 0.95)
    );
}

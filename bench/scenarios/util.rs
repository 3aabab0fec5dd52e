//! Helpers shared by the scenarios: sidecar options on the test LAN, polling, and
//! reading times out of sidecar logs.

use std::{
    net::SocketAddr,
    time::{Duration, Instant, SystemTime},
};

use crate::common::{netns::Lan, wait_until, Opts, Sidecar};

/// The iroh port every sidecar uses inside its own namespace.
pub const IROH_PORT: u16 = 9470;

/// Options for a sidecar in mdns mode on host `i` of `lan`.
pub fn mdns_opts(lan: &Lan, i: usize) -> Opts {
    mdns_opts_in(lan.ns(i))
}

/// Options for a sidecar in mdns mode in namespace `ns` (any kind of test LAN).
pub fn mdns_opts_in(ns: &str) -> Opts {
    Opts {
        app_id: "bench".into(),
        netns: Some(ns.to_string()),
        bind: Some(SocketAddr::from(([0, 0, 0, 0], IROH_PORT))),
        extra: vec!["--discovery-mode".into(), "mdns".into()],
        // Debug lines carry the per-peer steps (dialling, connected) that the join
        // breakdown reads from the log; they cost little at this rate. BENCH_RUST_LOG
        // replaces the filter to chase a problem (`...,mdns_sd=debug`); the filter
        // must keep `peat_sidecar=debug`, which the scenarios read.
        env: vec![(
            "RUST_LOG".into(),
            std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "info,peat_sidecar=debug".into()),
        )],
        ..Opts::default()
    }
}

/// Starts sidecars on hosts `hosts` one after another (each waits until its API is up).
pub async fn start_on(lan: &Lan, hosts: std::ops::Range<usize>, tag: &str) -> Vec<Sidecar> {
    let mut v = Vec::new();
    for i in hosts {
        v.push(Sidecar::start(&format!("{tag}{i}"), mdns_opts(lan, i)).await);
    }
    v
}

/// The one polling loop, shared with the tests.
pub use crate::common::poll;

/// Whether `node` lists every id in `ids` as connected.
pub async fn connected_to_all(node: &Sidecar, ids: &[String]) -> bool {
    let c = node.connected().await;
    ids.iter().all(|id| c.contains(id))
}

/// Waits until every node is connected to every other one; polls every 200 ms (the
/// check itself costs N API calls, which on a 2-core host slows what it measures).
pub async fn full_mesh(nodes: &[&Sidecar], timeout: Duration) -> Option<Duration> {
    wait_until(timeout, || async {
        for n in nodes {
            let c = n.connected().await;
            if nodes.iter().any(|m| m.id != n.id && !c.contains(&m.id)) {
                return false;
            }
        }
        true
    })
    .await
}

/// Unix time in milliseconds of an `Instant` in the past.
pub fn unix_ms_of(t: Instant) -> f64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    (now.saturating_sub(t.elapsed())).as_secs_f64() * 1000.0
}

/// Unix times (ms) of the log lines that contain every one of `needles`, in order.
/// Lines start with an RFC 3339 UTC time: `2026-11-24T15:26:14.137217Z ...`.
pub fn log_times(log: &str, needles: &[&str]) -> Vec<f64> {
    log.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| rfc3339_ms(l.get(..27)?))
        .collect()
}

/// Parses `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC) into unix milliseconds.
fn rfc3339_ms(s: &str) -> Option<f64> {
    let s = s.trim_end_matches('Z');
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, mi) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    let sec: f64 = t.next()?.trim_end_matches('Z').parse().ok()?;
    // Days since 1970-01-01 (civil-from-days inverse, H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days as f64 * 86_400.0) + h * 3600.0 + mi * 60.0 + sec) * 1000.0)
}

/// Seconds as f64.
pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// [`full_mesh`], or an error that says how far from a mesh it got: the number of
/// missing links and, for a few of them, the state and last error the node shows.
pub async fn mesh_or_err(nodes: &[&Sidecar], timeout: Duration) -> anyhow::Result<Duration> {
    if let Some(t) = full_mesh(nodes, timeout).await {
        return Ok(t);
    }
    let (mut missing, mut examples) = (0, Vec::new());
    for n in nodes {
        let peers = n.peers().await;
        for m in nodes.iter().filter(|m| m.id != n.id) {
            let p = peers.iter().find(|p| p.endpoint_id == m.id);
            let connected =
                p.is_some_and(|p| p.state == peat_sidecar::api::pb::PeerState::Connected as i32);
            if !connected {
                missing += 1;
                if examples.len() < 3 {
                    examples.push(match p {
                        Some(p) => format!(
                            "{} -> {}: state {} sources {:?} failures {} last error `{}`",
                            n.name, m.name, p.state, p.sources, p.failures, p.last_error
                        ),
                        None => format!("{} -> {}: unknown", n.name, m.name),
                    });
                }
            }
        }
    }
    anyhow::bail!(
        "{} nodes: no full mesh after {timeout:?}; {missing} of {} directed links missing, e.g. {}",
        nodes.len(),
        nodes.len() * (nodes.len() - 1),
        examples.join("; ")
    )
}

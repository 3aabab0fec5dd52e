//! `traffic`: steady-state mDNS traffic per node per minute, for peat-sidecar (mode
//! mdns), avahi (daemon publishing one service + a running browse, see avahi.rs) and
//! iroh's lookup (bench/iroh_lookup.rs), on the same LAN shape at each N.
//!
//! Per subject and N: a fresh LAN of N namespaces, all nodes started, wait until each
//! knows all others (full mesh / all resolved), then a settle time for the start-up
//! announcements to pass, then tcpdump on the bridge (UDP 5353) for the window. Every
//! multicast frame crosses the bridge once, so the capture holds each packet once.
//! peat-sidecar (LAN `bt`) and avahi (LAN `ba`) run at the same time; iroh then reuses
//! `bt`.
//!
//! mdns-sd refreshes each peer's records about every 96 s, so the full window (180 s)
//! must be longer than that or it misses the per-peer part that grows with N².

use std::{net::SocketAddr, time::Duration};

use anyhow::{anyhow, Context};

use super::{
    avahi::{wait_all_resolved, AvahiNode},
    iroh_node::{add_multicast_routes, wait_mesh, IrohNode},
    pcap::{Capture, Counts},
    Ctx,
};
use crate::{
    common::{netns::Lan, wait_full_mesh, Opts, Sidecar},
    report::Measurement,
};

const PORT: u16 = 7800;

#[derive(Clone, Copy)]
struct Plan {
    n: usize,
    settle: Duration,
    window: Duration,
}

struct Sample {
    subject: &'static str,
    n: usize,
    counts: Counts,
    window: Duration,
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Measurement>> {
    let (settle, window) = if ctx.args.quick {
        (Duration::from_secs(3), Duration::from_secs(20))
    } else {
        (Duration::from_secs(20), Duration::from_secs(180))
    };
    let mut out = vec![];
    for n in ctx.sizes(&[3], &[3, 10, 20]) {
        // Nodes start one after another and each browse backs off 1, 2, 4 ... 64 s from
        // its own start: at larger N the window must start later to miss that phase.
        let settle = if ctx.args.quick {
            settle
        } else {
            settle + Duration::from_secs(5 * n as u64)
        };
        let plan = Plan { n, settle, window };
        // In a full run one size failing must not throw away the others' figures: it
        // becomes a row without samples that says why.
        match point(plan).await {
            Ok(ms) => out.extend(ms),
            // The quick run (CI) checks that the harness works: there, fail.
            Err(e) if ctx.args.quick => return Err(e),
            Err(e) => out.push(
                Measurement::new(
                    "traffic",
                    "all",
                    "packets_per_node_min",
                    n,
                    "packets/min",
                    vec![],
                )
                .note(format!("FAILED: {e:#}")),
            ),
        }
    }
    Ok(out)
}

async fn point(plan: Plan) -> anyhow::Result<Vec<Measurement>> {
    let n = plan.n;
    eprintln!(
        "traffic N={n}: peat-sidecar and avahi ({}s window each), then iroh",
        plan.window.as_secs()
    );
    let peat = tokio::spawn(peat(plan));
    let avahi = tokio::spawn(avahi(plan));
    // Both are awaited before either error is raised, so that nothing is left
    // running when the scenario returns.
    let (peat, avahi) = (peat.await, avahi.await);
    let peat = peat.map_err(|e| anyhow!("peat-sidecar run: {e}"))??;
    let avahi = avahi.map_err(|e| anyhow!("avahi run: {e}"))??;
    let iroh = iroh(plan).await?;
    Ok([peat, avahi, iroh].iter().flat_map(measurements).collect())
}

fn measurements(s: &Sample) -> Vec<Measurement> {
    let per_node_min = |x: u64| x as f64 / s.n as f64 / (s.window.as_secs_f64() / 60.0);
    let c = s.counts;
    let pct = |x: u64| {
        if c.packets == 0 {
            0.0
        } else {
            100.0 * x as f64 / c.packets as f64
        }
    };
    let note = format!(
        "{:.0}s window; {:.0}% IPv6, {:.0}% queries",
        s.window.as_secs_f64(),
        pct(c.v6_packets),
        pct(c.queries)
    );
    vec![
        Measurement::new(
            "traffic",
            s.subject,
            "packets_per_node_min",
            s.n,
            "packets/min",
            vec![per_node_min(c.packets)],
        )
        .note(note.clone()),
        Measurement::new(
            "traffic",
            s.subject,
            "bytes_per_node_min",
            s.n,
            "bytes/min",
            vec![per_node_min(c.bytes)],
        )
        .note(note),
    ]
}

async fn capture(switch_ns: String, plan: Plan) -> anyhow::Result<(Counts, Duration)> {
    tokio::time::sleep(plan.settle).await;
    let cap = Capture::start(&switch_ns).await?;
    tokio::time::sleep(plan.window).await;
    cap.finish().await
}

fn switch(prefix: &str) -> String {
    format!("{prefix}-sw")
}

async fn peat(plan: Plan) -> anyhow::Result<Sample> {
    let lan = Lan::new("bt", plan.n);
    let mut nodes = vec![];
    for i in 0..plan.n {
        let opts = Opts {
            app_id: "bench".into(),
            netns: Some(lan.ns(i).to_string()),
            bind: Some(SocketAddr::from(([0, 0, 0, 0], PORT))),
            extra: vec!["--discovery-mode".into(), "mdns".into()],
            ..Opts::default()
        };
        nodes.push(Sidecar::start(&format!("traffic{i}"), opts).await);
    }
    let refs: Vec<&Sidecar> = nodes.iter().collect();
    let timeout = Duration::from_secs(30 + 3 * plan.n as u64);
    wait_full_mesh(&refs, timeout).await.with_context(|| {
        format!(
            "peat-sidecar: no full mesh of {} within {timeout:?}",
            plan.n
        )
    })?;
    sample("peat-sidecar", "bt", plan).await
}

/// Captures the traffic of the LAN with this prefix as one sample of `subject`.
async fn sample(subject: &'static str, prefix: &str, plan: Plan) -> anyhow::Result<Sample> {
    let (counts, window) = capture(switch(prefix), plan).await?;
    Ok(Sample {
        subject,
        n: plan.n,
        counts,
        window,
    })
}

async fn avahi(plan: Plan) -> anyhow::Result<Sample> {
    let lan = Lan::new("ba", plan.n);
    let mut nodes = vec![];
    for i in 0..plan.n {
        nodes.push(AvahiNode::start(lan.ns(i), i, PORT)?);
    }
    wait_all_resolved(&nodes, Duration::from_secs(30 + 3 * plan.n as u64)).await?;
    sample("avahi", "ba", plan).await
}

async fn iroh(plan: Plan) -> anyhow::Result<Sample> {
    let lan = Lan::new("bt", plan.n);
    add_multicast_routes(&lan);
    let mut nodes = vec![];
    for i in 0..plan.n {
        nodes.push(IrohNode::start(lan.ns(i), PORT).await?);
    }
    let timeout = Duration::from_secs(30 + 3 * plan.n as u64);
    if !wait_mesh(&nodes, timeout).await {
        anyhow::bail!("iroh-lookup: no full mesh of {} within {timeout:?}", plan.n);
    }
    sample("iroh-mdns", "bt", plan).await
}

//! `idle` (prefix `ib`): what an idle full mesh sends and how fast it notices a crash
//! and a leave, with the default liveness (beacons + probes, quiet QUIC connections)
//! and, side by side, the settings before beacons (`--keep-alive-ms 1000
//! --idle-timeout-ms 5000 --beacon-interval-ms 0`).
//!
//! Per variant: a LAN of N, full mesh by mDNS, a settle time, then every node's eth0
//! egress counted by nft (netdev egress hook: every frame with its Ethernet header,
//! split into QUIC / mDNS / beacon / other by UDP port) over the window. Then rounds of
//! kill -9 of one node (time until no survivor lists it as connected; the node is
//! started again and the mesh awaited before the next round) and rounds of SIGTERM
//! (the same, for a clean leave).

use std::time::{Duration, Instant};

use crate::{
    common::{
        egress::{EgressCounter, Sent},
        netns::Lan,
        Opts, Sidecar,
    },
    report::Measurement,
    scenarios::{
        util::{self, mdns_opts, mesh_or_err, poll, secs, IROH_PORT},
        Ctx,
    },
};

struct Variant {
    subject: &'static str,
    flags: &'static [&'static str],
}

const VARIANTS: &[Variant] = &[
    Variant {
        subject: "peat-sidecar",
        flags: &[],
    },
    Variant {
        subject: "peat-sidecar-keepalive-1s",
        flags: &[
            "--keep-alive-ms",
            "1000",
            "--idle-timeout-ms",
            "5000",
            "--beacon-interval-ms",
            "0",
        ],
    },
];

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Measurement>> {
    let (settle, window) = if ctx.args.quick {
        (Duration::from_secs(5), Duration::from_secs(20))
    } else {
        (Duration::from_secs(15), Duration::from_secs(60))
    };
    let mut out = Vec::new();
    for n in ctx.sizes(&[4], &[10]) {
        anyhow::ensure!(n >= 3, "idle needs N >= 3");
        for v in VARIANTS {
            let plan = Plan {
                n,
                settle,
                window,
                kills: ctx.rounds(1, 6),
                leaves: ctx.rounds(1, 3),
            };
            out.extend(variant(v, &plan).await?);
        }
    }
    Ok(out)
}

struct Plan {
    n: usize,
    settle: Duration,
    window: Duration,
    kills: usize,
    leaves: usize,
}

fn opts(lan: &Lan, i: usize, v: &Variant) -> Opts {
    let mut o = mdns_opts(lan, i);
    o.extra.extend(v.flags.iter().map(|f| f.to_string()));
    o
}

async fn variant(v: &Variant, plan: &Plan) -> anyhow::Result<Vec<Measurement>> {
    let n = plan.n;
    let lan = Lan::new("ib", n);
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(Sidecar::start(&format!("i{i}"), opts(&lan, i, v)).await);
    }
    mesh_or_err(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(60)).await?;
    let sent = idle_bytes(&lan, plan).await;
    let m = |metric: &str, unit: &str, samples: Vec<f64>| {
        Measurement::new("idle", v.subject, metric, n, unit, samples)
    };
    let per = |f: fn(&Sent) -> u64| sent.iter().map(|s| f(s) as f64).collect::<Vec<_>>();
    let window = format!(
        "{} s window after {} s settle",
        plan.window.as_secs(),
        plan.settle.as_secs()
    );
    let mut out = vec![
        m("bytes_per_node_min", "bytes/min", per(|s| s.total)).note(window),
        m("packets_per_node_min", "packets/min", per(|s| s.packets)),
        m("quic_bytes_per_node_min", "bytes/min", per(|s| s.quic)),
        m("mdns_bytes_per_node_min", "bytes/min", per(|s| s.mdns)),
        m("beacon_bytes_per_node_min", "bytes/min", per(|s| s.beacon)),
        m("other_bytes_per_node_min", "bytes/min", per(|s| s.other())),
    ];
    let (kills, missed) = detections(&mut nodes, plan.kills, Ending::Kill).await?;
    out.push(m("kill9_noticed_s", "s", kills).note(missed));
    let (leaves, missed) = detections(&mut nodes, plan.leaves, Ending::Term).await?;
    out.push(m("sigterm_noticed_s", "s", leaves).note(missed));
    Ok(out)
}

/// Bytes each node sends per minute, idle.
async fn idle_bytes(lan: &Lan, plan: &Plan) -> Vec<Sent> {
    let counters: Vec<EgressCounter> = (0..plan.n)
        .map(|i| EgressCounter::install(lan.ns(i), "eth0", IROH_PORT))
        .collect();
    tokio::time::sleep(plan.settle).await;
    let before: Vec<Sent> = counters.iter().map(EgressCounter::read).collect();
    let t0 = Instant::now();
    tokio::time::sleep(plan.window).await;
    let s = t0.elapsed().as_secs_f64();
    counters
        .iter()
        .zip(&before)
        .map(|(c, b)| c.read().minus(b).per_minute(s))
        .collect()
}

#[derive(Clone, Copy)]
enum Ending {
    Kill,
    Term,
}

/// Rounds of ending the last node: seconds until no survivor lists it as connected.
/// Bounded at 60 s; a round that hits the bound is counted in the note, not the samples.
async fn detections(
    nodes: &mut [Sidecar],
    rounds: usize,
    how: Ending,
) -> anyhow::Result<(Vec<f64>, String)> {
    let (mut samples, mut missed) = (Vec::new(), 0);
    for _ in 0..rounds {
        let (victim, survivors) = nodes.split_last_mut().expect("N >= 3");
        let gone = victim.id.clone();
        let t0 = Instant::now();
        match how {
            Ending::Kill => victim.kill9(),
            // Only the signal: stop() would wait for the exit, and the peers see the
            // close frames before that.
            Ending::Term => crate::common::signal(victim.pid().expect("running"), "TERM"),
        }
        let took = poll(
            Duration::from_secs(60),
            Duration::from_millis(50),
            || async {
                for s in survivors.iter() {
                    if s.connected().await.contains(&gone) {
                        return false;
                    }
                }
                true
            },
        )
        .await;
        match took {
            Some(_) => samples.push(secs(t0.elapsed())),
            None => missed += 1,
        }
        if let Ending::Term = how {
            victim.stop();
        }
        victim.respawn_after_kill().await;
        let all: Vec<&Sidecar> = nodes.iter().collect();
        util::mesh_or_err(&all, Duration::from_secs(60)).await?;
    }
    let note = if missed > 0 {
        format!("{missed} of {rounds} rounds not noticed within 60 s")
    } else {
        String::new()
    };
    Ok((samples, note))
}

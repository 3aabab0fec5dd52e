//! `gossip` (prefix bg, though it needs no namespaces: the chain runs on loopback like
//! tests/gossip.rs): N sidecars in mode gossip, each given only the next one as
//! `--peer`, until they close into a full mesh. Timed from the moment the whole chain
//! runs; "rounds" is that time in discovery intervals.

use std::time::{Duration, Instant};

use crate::{
    common::{Opts, Sidecar},
    report::Measurement,
    scenarios::{util, Ctx},
};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// Gossip interval (seconds), as in tests/gossip.rs.
const INTERVAL: u64 = 1;

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Measurement>> {
    let mut out = vec![];
    for n in ctx.sizes(&[5], &[30]) {
        let rounds = ctx.rounds(1, 3);
        let (mut time, mut ivals, mut startup) = (vec![], vec![], vec![]);
        for _ in 0..rounds {
            let (t, s) = chain(n).await?;
            time.push(t);
            ivals.push((t / INTERVAL as f64).ceil());
            startup.push(s);
        }
        let s50 = crate::report::percentile(&startup, 0.5);
        let note = format!(
            "{rounds} rounds; chain on loopback, --discovery-interval {INTERVAL}; timed from \
             the last node's start (starting the chain took {s50:.1} s, links formed meanwhile)"
        );
        out.push(
            Measurement::new("gossip", "peat-sidecar", "chain_mesh_s", n, "s", time)
                .note(note.clone()),
        );
        out.push(
            Measurement::new(
                "gossip",
                "peat-sidecar",
                "chain_mesh_rounds",
                n,
                "rounds",
                ivals,
            )
            .note(note),
        );
    }
    Ok(out)
}

/// Starts the chain from its end (so every `--peer` target exists); returns (seconds
/// from the last start to a full mesh, seconds the starting took).
async fn chain(n: usize) -> anyhow::Result<(f64, f64)> {
    let t0 = Instant::now();
    let mut nodes: Vec<Sidecar> = Vec::with_capacity(n);
    for i in (0..n).rev() {
        let peers = nodes.last().map(|s| s.peer_spec()).into_iter().collect();
        let opts = Opts {
            shared_key: Some(KEY.into()),
            peers,
            extra: ["--discovery-mode", "gossip", "--discovery-interval"]
                .iter()
                .map(|s| s.to_string())
                .chain([INTERVAL.to_string()])
                .collect(),
            ..Opts::default()
        };
        nodes.push(Sidecar::start(&format!("g{i}"), opts).await);
    }
    let started = t0.elapsed().as_secs_f64();
    let refs: Vec<&Sidecar> = nodes.iter().collect();
    let t = util::mesh_or_err(&refs, Duration::from_secs(180)).await?;
    Ok((t.as_secs_f64(), started))
}

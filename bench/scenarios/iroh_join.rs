//! `iroh-join`: the sidecar's join measurement (scenario `join`), through the
//! alternative a user would reach for: iroh with iroh-mdns-address-lookup
//! (bench/iroh_lookup.rs). N-1 nodes run in full mesh; each round starts a new node and
//! times from its spawn until it is connected to all N-1 and they all to it (times are
//! taken from the nodes' own event lines, not from polling). The newcomer then leaves
//! by SIGTERM (it closes its endpoint) before the next round.
//!
//! Also: SIGKILL of a newcomer until every peer sees the connection closed (iroh's
//! default idle timeout decides it).

use std::{collections::BTreeSet, time::Duration};

use anyhow::bail;

use super::{
    iroh_node::{add_multicast_routes, unix_ms, wait_mesh, IrohNode},
    Ctx,
};
use crate::{common::netns::Lan, report::Measurement};

const PREFIX: &str = "bx";
const PORT: u16 = 7700;
/// Per round: generous bounds, they only stop a hung run.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
const KILL_TIMEOUT: Duration = Duration::from_secs(90);

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Measurement>> {
    let mut out = vec![];
    for n in ctx.sizes(&[3], &[3, 10, 30, 50]) {
        if n < 2 {
            bail!("iroh-join needs N >= 2");
        }
        let rounds = if n <= 10 {
            ctx.rounds(3, 10)
        } else {
            ctx.rounds(2, 3)
        };
        let kills = if n <= 10 { ctx.rounds(1, 5).min(5) } else { 0 };
        // In a full run one size failing must not throw away the others' figures: it
        // becomes a row without samples that says why.
        match measure(n, rounds, kills).await {
            Ok(ms) => out.extend(ms),
            // The quick run (CI) checks that the harness works: there, fail.
            Err(e) if ctx.args.quick => return Err(e),
            Err(e) => out.push(
                Measurement::new("iroh-join", "iroh-mdns", "join_s", n, "s", vec![])
                    .note(format!("FAILED: {e:#}")),
            ),
        }
    }
    Ok(out)
}

async fn measure(n: usize, rounds: usize, kills: usize) -> anyhow::Result<Vec<Measurement>> {
    let lan = Lan::new(PREFIX, n);
    add_multicast_routes(&lan);
    let mut stable = vec![];
    let t_first = unix_ms();
    for i in 0..n - 1 {
        stable.push(IrohNode::start(lan.ns(i), PORT).await?);
    }
    // How long the N-1 took to close into a full mesh, from the first spawn (they are
    // started one after the other). Without it the joins are still measured: they
    // only need the newcomer and each peer to connect.
    let mesh_timeout = Duration::from_secs(60 + 3 * n as u64);
    let mesh = if wait_mesh(&stable, mesh_timeout).await {
        let ids: BTreeSet<String> = stable.iter().map(|s| s.id.clone()).collect();
        let t = stable
            .iter()
            .filter_map(|s| {
                let others = ids.iter().filter(|i| **i != s.id).cloned().collect();
                s.connected_to_all_at(&others, t_first)
            })
            .max()
            .unwrap_or(t_first);
        Measurement::new(
            "iroh-join",
            "iroh-mdns",
            "mesh_s",
            n - 1,
            "s",
            vec![(t - t_first) as f64 / 1000.0],
        )
        .note("N-1 nodes started one after another, until full mesh")
    } else {
        let missing: usize = stable
            .iter()
            .map(|s| {
                let c = s.connected();
                stable
                    .iter()
                    .filter(|m| m.id != s.id && !c.contains(&m.id))
                    .count()
            })
            .sum();
        Measurement::new("iroh-join", "iroh-mdns", "mesh_s", n - 1, "s", vec![]).note(format!(
            "no full mesh within {}s: {missing} of {} directed links missing",
            mesh_timeout.as_secs(),
            (n - 1) * (n - 2)
        ))
    };

    let ids: BTreeSet<String> = stable.iter().map(|s| s.id.clone()).collect();
    let newcomer_ns = lan.ns(n - 1).to_string();

    let (mut joins, mut closes) = (vec![], vec![]);
    let mut timeouts = 0;
    for round in 0..rounds + kills {
        let mut node = IrohNode::start(&newcomer_ns, PORT).await?;
        let t0 = node.spawned_ms;
        let mut done = None;
        let deadline = std::time::Instant::now() + JOIN_TIMEOUT;
        while done.is_none() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mine = node.connected_to_all_at(&ids, t0);
            let theirs: Option<Vec<u128>> = stable
                .iter()
                .map(|s| s.connected_to_all_at(&BTreeSet::from([node.id.clone()]), t0))
                .collect();
            if let (Some(m), Some(th)) = (mine, theirs) {
                done = Some(th.into_iter().chain([m]).max().unwrap_or(m));
            }
        }
        let Some(t_done) = done else {
            timeouts += 1;
            eprintln!("iroh-join N={n} round {round}: no full join within {JOIN_TIMEOUT:?}");
            node.stop().await;
            continue;
        };
        if round < rounds {
            joins.push((t_done - t0) as f64 / 1000.0);
            node.stop().await;
            wait_dropped(&stable, &node.id, Duration::from_secs(10)).await;
        } else {
            let t_kill = unix_ms();
            node.kill9();
            match wait_dropped(&stable, &node.id, KILL_TIMEOUT).await {
                true => {
                    let last = stable
                        .iter()
                        .filter_map(|s| s.lost_at(&node.id, t_kill))
                        .max()
                        .unwrap_or(t_kill);
                    closes.push((last - t_kill) as f64 / 1000.0);
                }
                false => eprintln!(
                    "iroh-join N={n}: peers still hold the killed node after {KILL_TIMEOUT:?}"
                ),
            }
        }
    }
    let note = if timeouts > 0 {
        format!(
            "{timeouts} round(s) timed out after {}s",
            JOIN_TIMEOUT.as_secs()
        )
    } else {
        String::new()
    };
    let mut ms = vec![
        mesh,
        Measurement::new("iroh-join", "iroh-mdns", "join_s", n, "s", joins).note(note),
    ];
    if kills > 0 {
        ms.push(
            Measurement::new("iroh-join", "iroh-mdns", "sigkill_closed_s", n, "s", closes)
                .note("iroh default idle timeout"),
        );
    }
    Ok(ms)
}

/// Waits until no stable node lists `id` as connected.
async fn wait_dropped(stable: &[IrohNode], id: &str, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if stable.iter().all(|s| !s.connected().contains(id)) {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

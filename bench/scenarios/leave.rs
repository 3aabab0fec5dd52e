//! `leave` (prefix bl): a sidecar leaving a LAN of N-1 peers.
//! - SIGTERM until no peer lists it with source mdns (its goodbye arrived), and until it
//!   is out of every peer table;
//! - SIGKILL (no goodbye) until no peer lists it as connected any more.
//!
//! The peers are polled one after another every 50 ms; one pass over 9 peers takes a
//! few ms in a release build, which bounds the resolution.

use std::time::{Duration, Instant};

use crate::{
    common::{netns::Lan, Sidecar},
    report::Measurement,
    scenarios::{
        util::{self, connected_to_all, mdns_opts, poll, secs},
        Ctx,
    },
};

const SUBJECT: &str = "peat-sidecar";

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Measurement>> {
    let mut out = Vec::new();
    for n in ctx.sizes(&[3], &[10]) {
        anyhow::ensure!(n >= 2, "leave needs N >= 2");
        out.extend(leave(n, ctx.rounds(3, 10)).await?);
    }
    Ok(out)
}

/// Starts a fresh sidecar on host `host` and waits until every peer is connected to it
/// and lists it with source mdns. The newcomer dials the peers itself as soon as its
/// one-shot query is answered, so a peer can hold the connection before its own browse
/// resolved the newcomer; a leave measured from then would time nothing (the entry has
/// no mdns source to lose).
async fn newcomer(lan: &Lan, host: usize, nodes: &[Sidecar], tag: &str) -> anyhow::Result<Sidecar> {
    let s = Sidecar::start(tag, mdns_opts(lan, host)).await;
    let me = [s.id.clone()];
    poll(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            for p in nodes {
                if !connected_to_all(p, &me).await || !p.lists_with_source(&me[0], "mdns").await {
                    return false;
                }
            }
            true
        },
    )
    .await
    .ok_or_else(|| {
        anyhow::anyhow!("{tag} was not connected to and resolved by every peer in 30 s")
    })?;
    Ok(s)
}

async fn leave(n: usize, rounds: usize) -> anyhow::Result<Vec<Measurement>> {
    let mut lan = Lan::new("bl", n);
    let nodes = util::start_on(&lan, 0..n - 1, "p").await;
    let refs: Vec<&Sidecar> = nodes.iter().collect();
    util::mesh_or_err(&refs, Duration::from_secs(120)).await?;

    let limit = Duration::from_secs(150);
    let every = Duration::from_millis(50);
    let (mut goodbye, mut gone, mut crash, mut missed) = (vec![], vec![], vec![], 0);
    for r in 0..rounds {
        // SIGTERM.
        let mut s = newcomer(&lan, n - 1, &nodes, &format!("term{r}")).await?;
        let id = s.id.clone();
        let t0 = Instant::now();
        // stop() returns once the process exited (it sends its goodbye and pauses
        // ~200 ms first); the polls below start from there, so add that time.
        s.stop();
        let exited = t0.elapsed();
        let no_mdns = poll(limit, every, || async {
            for p in &nodes {
                if p.lists_with_source(&id, "mdns").await {
                    return false;
                }
            }
            true
        })
        .await;
        let no_entry = poll(limit, every, || async {
            for p in &nodes {
                if p.peer(&id).await.is_some() {
                    return false;
                }
            }
            true
        })
        .await;
        let gone_at = t0.elapsed();
        match (no_mdns, no_entry) {
            (Some(g), Some(_)) => {
                goodbye.push(secs(exited + g));
                gone.push(secs(gone_at));
            }
            _ => missed += 1,
        }

        // SIGKILL. Each victim gets a host of its own: the killed node's record lives
        // on in the peers until its TTL (120 s), and a new identity on the same
        // address while the peers still redial the old one is a different scenario
        // (tested in tests/mdns.rs, a_new_identity_on_a_killed_nodes_address_joins).
        let host = lan.add_host(0);
        let mut s = newcomer(&lan, host, &nodes, &format!("kill{r}")).await?;
        let id = s.id.clone();
        let t0 = Instant::now();
        s.kill9();
        let closed = poll(limit, every, || async {
            for p in &nodes {
                if p.connected().await.contains(&id) {
                    return false;
                }
            }
            true
        })
        .await;
        match closed {
            Some(_) => crash.push(secs(t0.elapsed())),
            None => missed += 1,
        }
        // The killed node's record lives on in the peers until its TTL; it is a
        // different identity from the next round's, so it does not interfere.
    }
    let note = |what: &str| {
        let mut s = format!("{rounds} rounds, N-1 = {} peers; {what}", n - 1);
        if missed > 0 {
            s += &format!("; {missed} waits ran out ({} s)", limit.as_secs());
        }
        s
    };
    Ok(vec![
        Measurement::new("leave", SUBJECT, "sigterm_mdns_gone_s", n, "s", goodbye)
            .note(note("SIGTERM -> no peer lists source mdns (goodbye)")),
        Measurement::new("leave", SUBJECT, "sigterm_table_gone_s", n, "s", gone)
            .note(note("SIGTERM -> out of every peer table")),
        Measurement::new("leave", SUBJECT, "sigkill_closed_s", n, "s", crash)
            .note(note("SIGKILL -> no peer lists it connected")),
    ])
}

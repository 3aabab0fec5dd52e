//! `join` (prefix bj): a new sidecar (fresh identity) started into a LAN of N-1 until it
//! is connected to all N-1 and they to it; and a whole LAN of N started at once until
//! it is a full mesh.
//!
//! The join is timed from the spawn of `peat-sidecar run` to the last `peer connected`
//! log line (microsecond timestamps) of the joiner for each peer and of each peer for
//! the joiner; the API is polled only to know when to look. Its phases are read
//! from the logs: API ready, the joiner's own finds (answers to its query), and the
//! peers' finds of the joiner (its announcement).

use std::time::{Duration, Instant};

use crate::{
    common::{netns::Lan, Sidecar},
    report::Measurement,
    scenarios::{
        util::{self, connected_to_all, log_times, mdns_opts, poll, secs, unix_ms_of},
        Ctx,
    },
};

const SUBJECT: &str = "peat-sidecar";

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Measurement>> {
    let mut out = Vec::new();
    for n in ctx.sizes(&[3], &[3, 10, 30, 50]) {
        anyhow::ensure!(n >= 2, "join needs N >= 2");
        // At least 10 rounds for the small N; larger LANs take minutes per setup and
        // their rounds are few (the note says how many).
        let rounds = if n <= 10 {
            ctx.rounds(3, 10)
        } else {
            ctx.rounds(3, 5)
        };
        // A size that fails keeps the others' figures: it is reported as a point
        // without samples whose note says why.
        match join(n, rounds).await {
            Ok(m) => out.extend(m),
            Err(e) => out.push(failed("join_s", n, &e)),
        }
        // Three rounds at every N: with the neighbour table raised (bench/neigh.rs) a
        // 50-node round takes under a minute.
        match mesh(n, ctx.rounds(1, 3)).await {
            Ok(m) => out.extend(m),
            Err(e) => out.push(failed("full_mesh_s", n, &e)),
        }
    }
    Ok(out)
}

fn failed(metric: &str, n: usize, e: &anyhow::Error) -> Measurement {
    eprintln!("join, N = {n}, {metric}: FAILED: {e:#}");
    Measurement::new("join", SUBJECT, metric, n, "s", vec![]).note(format!("FAILED: {e:#}"))
}

async fn join(n: usize, rounds: usize) -> anyhow::Result<Vec<Measurement>> {
    let lan = Lan::new("bj", n);
    let nodes = util::start_on(&lan, 0..n - 1, "p").await;
    let refs: Vec<&Sidecar> = nodes.iter().collect();
    util::mesh_or_err(&refs, Duration::from_secs(120)).await?;
    let ids: Vec<String> = nodes.iter().map(|s| s.id.clone()).collect();

    let (mut join, mut ready, mut own_found, mut seen, mut timeouts) =
        (vec![], vec![], vec![], vec![], 0);
    for r in 0..rounds {
        // A settled LAN: mdns-sd multicasts a record at most once a second (RFC 6762
        // §6), so a query right after the peers' own announcements (or the previous
        // joiner's queries) would be answered only at their next one.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut j = Sidecar::start(&format!("joiner{r}"), mdns_opts(&lan, n - 1)).await;
        let spawn_ms = unix_ms_of(j.spawned);
        ready.push(secs(j.spawned.elapsed()));
        let polled = poll(Duration::from_secs(30), Duration::from_millis(20), || {
            connected_to_all(&j, &ids)
        })
        .await;
        let joiner_done_ms = unix_ms_of(Instant::now());
        let peers_done = poll(
            Duration::from_secs(30),
            Duration::from_millis(50),
            || async {
                nodes
                    .iter()
                    .all(|p| !log_times(&p.log(), &["peer connected", &j.id]).is_empty())
            },
        )
        .await;
        if polled.is_none() || peers_done.is_none() {
            timeouts += 1;
        } else {
            // Both sides from the logs: the joiner's `peer connected` line for each
            // peer, and each peer's line for the joiner.
            let jlog = j.log();
            let mut joiner_ms: f64 = 0.0;
            for id in &ids {
                match log_times(&jlog, &["peer connected", id]).first() {
                    Some(t) => joiner_ms = joiner_ms.max(*t),
                    // Not logged (cannot happen while the line exists): fall back
                    // to the moment the poll saw it.
                    None => joiner_ms = joiner_ms.max(joiner_done_ms),
                }
            }
            let mut last_peer_ms: f64 = 0.0;
            let mut last_seen_ms: f64 = 0.0;
            for p in &nodes {
                let log = p.log();
                if let Some(t) = log_times(&log, &["peer connected", &j.id]).first() {
                    last_peer_ms = last_peer_ms.max(*t);
                }
                if let Some(t) = log_times(&log, &["peer found", &j.id]).first() {
                    last_seen_ms = last_seen_ms.max(*t);
                }
            }
            join.push((joiner_ms.max(last_peer_ms) - spawn_ms) / 1000.0);
            if last_seen_ms > 0.0 {
                seen.push((last_seen_ms - spawn_ms) / 1000.0);
            }
            let finds = log_times(&j.log(), &["peer found"]);
            if finds.len() >= n - 1 {
                own_found.push((finds[n - 2] - spawn_ms) / 1000.0);
            }
        }
        if std::env::var_os("BENCH_SHOW_LOGS").is_some() {
            eprintln!("--- joiner {r} log ---\n{}", j.log());
            eprintln!("--- peer 0 log ---\n{}", nodes[0].log());
        }
        let id = j.id.clone();
        j.stop();
        // The next round starts once the leaver is out of every table, so that the
        // peers are idle again.
        poll(
            Duration::from_secs(15),
            Duration::from_millis(200),
            || async {
                for p in &nodes {
                    if p.peer(&id).await.is_some() {
                        return false;
                    }
                }
                true
            },
        )
        .await;
    }
    let note = |extra: &str| {
        let mut s = format!("{} rounds", rounds);
        if timeouts > 0 {
            s += &format!(", {timeouts} timed out (30 s)");
        }
        if !extra.is_empty() {
            s += &format!("; {extra}");
        }
        s
    };
    Ok(vec![
        Measurement::new("join", SUBJECT, "join_s", n, "s", join)
            .note(note("spawn -> connected to all N-1 and they to it")),
        Measurement::new("join", SUBJECT, "api_ready_s", n, "s", ready)
            .note(note("spawn -> API answers")),
        Measurement::new("join", SUBJECT, "joiner_found_all_s", n, "s", own_found)
            .note(note("spawn -> joiner's own mDNS found N-1 peers")),
        Measurement::new("join", SUBJECT, "peers_found_joiner_s", n, "s", seen)
            .note(note("spawn -> all N-1 peers found the joiner")),
    ])
}

/// A whole LAN of N started at once (each process spawned without waiting for the
/// previous one's API) until it is a full mesh.
async fn mesh(n: usize, rounds: usize) -> anyhow::Result<Vec<Measurement>> {
    let lan = Lan::new("bj", n);
    let mut samples = vec![];
    let mut spread = vec![];
    let (mut found_all, mut connected_all, mut dial_failures) = (vec![], vec![], vec![]);
    for _ in 0..rounds {
        let names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
        let starts = names
            .iter()
            .enumerate()
            .map(|(i, name)| Sidecar::start(name, mdns_opts(&lan, i)));
        let nodes: Vec<Sidecar> = futures::future::join_all(starts).await;
        let first = nodes.iter().map(|s| s.spawned).min().expect("n >= 2");
        let last = nodes.iter().map(|s| s.spawned).max().expect("n >= 2");
        spread.push(secs(last.duration_since(first)));
        let refs: Vec<&Sidecar> = nodes.iter().collect();
        util::mesh_or_err(&refs, Duration::from_secs(120)).await?;
        samples.push(secs(first.elapsed()));
        // Where the time went, from the logs: every node had found every other by
        // mDNS, every link was up (the poll above adds up to its interval), and how
        // many dials failed on the way.
        let first_ms = unix_ms_of(first);
        let (mut found, mut connected, mut failures) = (0.0f64, 0.0f64, 0usize);
        for node in &nodes {
            let log = node.log();
            failures += log_times(&log, &["dial failed"]).len();
            for other in nodes.iter().filter(|o| o.id != node.id) {
                if let Some(t) = log_times(&log, &["peer found", &other.id, "source=mdns"]).first()
                {
                    found = found.max(*t);
                }
                if let Some(t) = log_times(&log, &["peer connected", &other.id]).first() {
                    connected = connected.max(*t);
                }
            }
        }
        found_all.push((found - first_ms) / 1000.0);
        connected_all.push((connected - first_ms) / 1000.0);
        dial_failures.push(failures as f64);
        if std::env::var_os("BENCH_SHOW_LOGS").is_some() {
            eprintln!("--- mesh node 0 log ---\n{}", nodes[0].log());
            // Why dials failed, over all nodes: the text after `error=` up to `retry_in`.
            let mut why = std::collections::BTreeMap::<String, usize>::new();
            for node in &nodes {
                for l in node.log().lines().filter(|l| l.contains("dial failed")) {
                    let e = l.split("error=").nth(1).unwrap_or("?");
                    let e = e.split(" retry_in").next().unwrap_or(e);
                    *why.entry(e.chars().take(120).collect()).or_default() += 1;
                }
            }
            eprintln!("--- mesh dial failures by error ---\n{why:#?}");
        }
        drop(nodes);
        // Killed peers linger in nobody's table: every round's nodes are new.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let spread = crate::report::percentile(&spread, 0.5);
    let breakdown = |metric: &str, unit: &str, v: Vec<f64>, what: &str| {
        Measurement::new("join", SUBJECT, metric, n, unit, v)
            .note(format!("{rounds} rounds, N started at once; {what}"))
    };
    Ok(vec![
        breakdown(
            "mesh_found_all_s",
            "s",
            found_all,
            "first spawn -> every node found every other by mDNS (logs)",
        ),
        breakdown(
            "mesh_connected_all_s",
            "s",
            connected_all,
            "first spawn -> last `peer connected` of any node (logs)",
        ),
        breakdown(
            "mesh_dial_failures",
            "dials",
            dial_failures,
            "failed dials over all nodes until the mesh formed",
        ),
        Measurement::new("join", SUBJECT, "full_mesh_s", n, "s", samples).note(format!(
            "{rounds} rounds; first spawn -> every node connected to every other (polled \
         every 100 ms); spawns spread over {spread:.2} s"
        )),
    ])
}

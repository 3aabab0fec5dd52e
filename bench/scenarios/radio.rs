//! `radio` (prefixes lc, ld, le): sidecars on an emulated radio channel
//! (tests/common/radio.rs: a userspace hub with per-port loss and delay, tbf for
//! bandwidth).
//! - lossy mesh: N = 5 started at once on a channel with 30 % loss per port and
//!   100 ± 50 ms one-way delay, until full mesh; and the live peers taken for gone on
//!   the way (log lines "the peer shut down" or an mDNS goodbye/forget);
//! - lossy idle: N = 5 at 10 % loss, 100 ± 50 ms, meshed, then idle for 10 minutes:
//!   disconnects and false departures;
//! - thin link: N = 10, every node's sending limited to 64 kbit/s (tbf), until full
//!   mesh, then idle for 10 minutes: whether it stays meshed, and what discovery and
//!   liveness send (every frame a node sends, counted at the hub) as a share of 64 kbit/s.
//!
//! `--quick` keeps CI short: one lossy round at N = 5, 15 s idle holds, a thin link of 3.
//! `RADIO_BASELINE_BIN=PATH` runs the lossy mesh rounds with that binary too (subject
//! `baseline`), alternating with this build, for figures side by side in one run.
//! `RADIO_PARTS=mesh` (or `idle`, `thin`, comma separated) runs only those parts.
//! `RADIO_KEEP_LOGS=DIR` keeps the nodes' logs of the lossy mesh rounds there.

use std::time::{Duration, Instant};

use crate::{
    common::{
        radio::{Link, RadioLan},
        Opts, Sidecar,
    },
    report::Measurement,
    scenarios::{
        util::{self, secs},
        Ctx,
    },
};

const SUBJECT: &str = "peat-sidecar";

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Measurement>> {
    let quick = ctx.args.quick;
    let hold = Duration::from_secs(if quick { 15 } else { 600 });
    let baseline = std::env::var_os("RADIO_BASELINE_BIN").map(std::path::PathBuf::from);
    let parts = Parts::from_env();
    let mut out = vec![];
    if parts.mesh {
        out.extend(lossy_mesh(ctx.rounds(1, 10), None).await?);
        if let Some(bin) = baseline {
            out.extend(lossy_mesh(ctx.rounds(1, 10), Some(bin)).await?);
        }
    }
    if parts.idle {
        out.extend(lossy_idle(hold).await?);
    }
    if parts.thin {
        out.extend(thin(if quick { 3 } else { 10 }, hold).await?);
    }
    Ok(out)
}

/// Which parts run: `RADIO_PARTS=mesh,idle,thin` (any of them; default all). The
/// lossy mesh alone takes a minute or two; with the two 10-minute holds, about 25.
struct Parts {
    mesh: bool,
    idle: bool,
    thin: bool,
}

impl Parts {
    fn from_env() -> Parts {
        let var = std::env::var("RADIO_PARTS").unwrap_or_default();
        let has = |p: &str| var.is_empty() || var.split(',').any(|x| x.trim() == p);
        Parts {
            mesh: has("mesh"),
            idle: has("idle"),
            thin: has("thin"),
        }
    }
}

fn opts(lan: &RadioLan, i: usize, bin: Option<&std::path::Path>) -> Opts {
    Opts {
        bin: bin.map(|b| b.to_path_buf()),
        ..util::mdns_opts_in(lan.ns(i))
    }
}

/// Log lines that say a peer left or was forgotten: while every node runs, each one
/// is a false departure.
const DEPARTURE: [&str; 3] = [
    "the peer shut down",
    "mdns: peer is shutting down",
    "mdns: peer said goodbye or its record expired",
];

/// Log lines of all nodes that contain any of `needles`.
fn count_lines(nodes: &[Sidecar], needles: &[&str]) -> usize {
    count_matching(nodes, |l| needles.iter().any(|p| l.contains(p)))
}

fn count_matching(nodes: &[Sidecar], pred: impl Fn(&str) -> bool) -> usize {
    nodes
        .iter()
        .map(|n| n.log().lines().filter(|l| pred(l)).count())
        .sum()
}

/// All of a LAN's sidecars, spawned without waiting for each other's API.
async fn start_all(
    lan: &RadioLan,
    tag: &str,
    bin: Option<&std::path::Path>,
) -> (Vec<Sidecar>, Instant) {
    let names: Vec<String> = (0..lan.len()).map(|i| format!("{tag}{i}")).collect();
    let starts = names
        .iter()
        .enumerate()
        .map(|(i, name)| Sidecar::start(name, opts(lan, i, bin)));
    let nodes: Vec<Sidecar> = futures::future::join_all(starts).await;
    let first = nodes.iter().map(|s| s.spawned).min().expect("n >= 1");
    (nodes, first)
}

async fn lossy_mesh(
    rounds: usize,
    bin: Option<std::path::PathBuf>,
) -> anyhow::Result<Vec<Measurement>> {
    let n = 5;
    let subject = if bin.is_some() { "baseline" } else { SUBJECT };
    let lan = RadioLan::new("lc", n, Link::new(0.3, 100, 50));
    let (mut mesh, mut false_dep, mut timeouts, mut failures) = (vec![], vec![], vec![], vec![]);
    for r in 0..rounds {
        let (nodes, first) = start_all(&lan, &format!("r{r}n"), bin.as_deref()).await;
        let refs: Vec<&Sidecar> = nodes.iter().collect();
        util::mesh_or_err(&refs, Duration::from_secs(120)).await?;
        mesh.push(secs(first.elapsed()));
        false_dep.push(count_lines(&nodes, &DEPARTURE) as f64);
        failures.push(count_lines(&nodes, &["dial failed"]) as f64);
        let timed_out = |l: &str| {
            l.contains("dial failed") && (l.contains("timed out") || l.contains("did not finish"))
        };
        timeouts.push(count_matching(&nodes, timed_out) as f64);
        eprintln!(
            "radio: round {r}: full mesh after {:.2} s, hub {:?}; log lines: {}",
            mesh[r],
            lan.total(),
            breakdown(&nodes)
        );
        keep_logs(&nodes, subject, r);
        // Stopped before the next round: their departures must not count.
        drop(nodes);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let m = |metric: &str, unit: &str, v: Vec<f64>, what: &str| {
        Measurement::new("radio", subject, metric, n, unit, v).note(format!(
            "{rounds} rounds, N started at once, 30 % loss per port, 100 ± 50 ms one way; {what}"
        ))
    };
    Ok(vec![
        m(
            "lossy30_mesh_s",
            "s",
            mesh,
            "first spawn -> full mesh (goal: p50 < 5 s)",
        ),
        m(
            "lossy30_false_departures",
            "lines",
            false_dep,
            "live peers logged as gone, per round (goal: 0)",
        ),
        m(
            "lossy30_dial_failures",
            "dials",
            failures,
            "failed dials per round, all nodes",
        ),
        m(
            "lossy30_dial_timeouts",
            "dials",
            timeouts,
            "of which timed out",
        ),
    ])
}

/// `RADIO_KEEP_LOGS=DIR` keeps every node's log of every lossy round as
/// `DIR/SUBJECT-rROUND-NAME.log`, for reading where a round's time went.
fn keep_logs(nodes: &[Sidecar], subject: &str, round: usize) {
    let Some(dir) = std::env::var_os("RADIO_KEEP_LOGS").map(std::path::PathBuf::from) else {
        return;
    };
    for n in nodes {
        let path = dir.join(format!("{subject}-r{round}-{}.log", n.name));
        if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, n.log()))
        {
            eprintln!("radio: cannot keep {}: {e}", path.display());
        }
    }
}

/// Where a lossy round's time went, as counts of telling log lines over all nodes.
fn breakdown(nodes: &[Sidecar]) -> String {
    const WHAT: [(&str, &str); 7] = [
        ("answer timeouts", "timed out after"),
        ("stalled dials", "handshake did not finish"),
        ("check timeouts", "formation check did not finish"),
        ("lost in check", "during the formation check"),
        ("duplicates", "duplicate connection"),
        ("standby promoted", "the peer kept our other connection"),
        ("disconnects", "peer disconnected"),
    ];
    WHAT.iter()
        .map(|(name, needle)| format!("{name} {}", count_lines(nodes, &[needle])))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every node stays connected to every other one for `hold`: returns the number of
/// polls (every 2 s) at which some link was missing.
async fn hold_mesh(nodes: &[Sidecar], hold: Duration) -> usize {
    let t0 = Instant::now();
    let mut gaps = 0;
    while t0.elapsed() < hold {
        for n in nodes {
            if n.connected().await.len() + 1 < nodes.len() {
                gaps += 1;
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    gaps
}

async fn lossy_idle(hold: Duration) -> anyhow::Result<Vec<Measurement>> {
    let n = 5;
    let lan = RadioLan::new("ld", n, Link::new(0.1, 100, 50));
    let (nodes, _) = start_all(&lan, "i", None).await;
    let refs: Vec<&Sidecar> = nodes.iter().collect();
    util::mesh_or_err(&refs, Duration::from_secs(120)).await?;
    let before = count_lines(&nodes, &["peer disconnected"]);
    let gaps = hold_mesh(&nodes, hold).await;
    let disconnects = count_lines(&nodes, &["peer disconnected"]) - before;
    let false_dep = count_lines(&nodes, &DEPARTURE);
    let what = format!(
        "10 % loss, 100 ± 50 ms, idle {} s after full mesh",
        hold.as_secs()
    );
    let m = |metric: &str, unit: &str, v: f64, goal: &str| {
        Measurement::new("radio", SUBJECT, metric, n, unit, vec![v]).note(format!("{what}; {goal}"))
    };
    Ok(vec![
        m(
            "lossy10_idle_disconnects",
            "lines",
            disconnects as f64,
            "`peer disconnected`, all nodes (goal: 0)",
        ),
        m(
            "lossy10_idle_false_departures",
            "lines",
            false_dep as f64,
            "live peers logged as gone (goal: 0)",
        ),
        m(
            "lossy10_idle_mesh_gaps",
            "polls",
            gaps as f64,
            "polls every 2 s that found a link missing (goal: 0)",
        ),
    ])
}

/// Kilobits per second of a byte count over `d`.
fn kbit_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 * 8.0 / 1000.0 / d.as_secs_f64()
}

async fn thin(n: usize, hold: Duration) -> anyhow::Result<Vec<Measurement>> {
    const RATE_KBIT: u32 = 64;
    let lan = RadioLan::new("le", n, Link::CLEAN);
    lan.limit_rate(RATE_KBIT);
    let (nodes, first) = start_all(&lan, "t", None).await;
    let refs: Vec<&Sidecar> = nodes.iter().collect();
    util::mesh_or_err(&refs, Duration::from_secs(300)).await?;
    let mesh = secs(first.elapsed());
    let before = lan.stats();
    let t0 = Instant::now();
    let gaps = hold_mesh(&nodes, hold).await;
    let took = t0.elapsed();
    let after = lan.stats();
    let share: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| 100.0 * kbit_s(a.sent_bytes - b.sent_bytes, took) / f64::from(RATE_KBIT))
        .collect();
    let what = format!(
        "every node sends at most {RATE_KBIT} kbit/s (tbf), no loss; idle {} s after full mesh",
        hold.as_secs()
    );
    let m = |metric: &str, unit: &str, v: Vec<f64>, goal: &str| {
        Measurement::new("radio", SUBJECT, metric, n, unit, v).note(format!("{what}; {goal}"))
    };
    Ok(vec![
        m("thin64_mesh_s", "s", vec![mesh], "first spawn -> full mesh"),
        m(
            "thin64_idle_mesh_gaps",
            "polls",
            vec![gaps as f64],
            "polls every 2 s that found a link missing (goal: 0)",
        ),
        m(
            "thin64_idle_link_share",
            "%",
            share,
            "per node: every frame it sent while idle, share of its 64 kbit/s (goal: < 5 %)",
        ),
    ])
}

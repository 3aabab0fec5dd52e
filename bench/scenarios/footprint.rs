//! `footprint` (prefix bf): idle RSS and CPU per sidecar in a meshed LAN of N, sampled
//! from /proc over a window; and the stripped binary size per architecture.
//!
//! Binary sizes come from what packaging/build.sh left in dist/ or
//! target/<triple>/release/; the bench never starts the cross build. Without those,
//! it reports the host binary it runs (and says which profile that is).

use std::{path::PathBuf, time::Duration};

use crate::{
    common::{netns::Lan, Sidecar, BIN},
    report::Measurement,
    scenarios::{util, Ctx},
};

const SUBJECT: &str = "peat-sidecar";

/// The targets packaging/build.sh builds, with the short names it gives them in dist/.
const TARGETS: &[(&str, &str)] = &[
    ("x86_64-unknown-linux-musl", "x86_64-linux-musl"),
    ("aarch64-unknown-linux-musl", "aarch64-linux-musl"),
    ("armv7-unknown-linux-gnueabihf", "armv7-linux-gnueabihf"),
];

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Measurement>> {
    let mut out = sizes();
    let window = if ctx.args.quick {
        Duration::from_secs(15)
    } else {
        Duration::from_secs(300)
    };
    for n in ctx.sizes(&[3], &[10]) {
        out.extend(idle(n, window).await?);
    }
    Ok(out)
}

/// Resident set size of `pid` in MB, from /proc/PID/status.
fn rss_mb(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// utime + stime of `pid` in clock ticks, from /proc/PID/stat.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its ')'.
    let rest = s.get(s.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat are 12 and 13 after the ')'.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn threads(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.count())
}

async fn idle(n: usize, window: Duration) -> anyhow::Result<Vec<Measurement>> {
    let lan = Lan::new("bf", n);
    let nodes = util::start_on(&lan, 0..n, "f").await;
    let refs: Vec<&Sidecar> = nodes.iter().collect();
    util::mesh_or_err(&refs, Duration::from_secs(120)).await?;
    // `ip netns exec` execs the sidecar, so the child's pid is the sidecar's.
    let pids: Vec<u32> = nodes.iter().filter_map(|s| s.pid()).collect();
    anyhow::ensure!(pids.len() == n, "a sidecar has no pid");
    let tick = 100.0; // USER_HZ on Linux
    let before: Vec<u64> = pids.iter().filter_map(|p| cpu_ticks(*p)).collect();
    let mut peak = vec![0.0f64; n];
    let start = std::time::Instant::now();
    while start.elapsed() < window {
        for (i, p) in pids.iter().enumerate() {
            peak[i] = peak[i].max(rss_mb(*p).unwrap_or(0.0));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let after: Vec<u64> = pids.iter().filter_map(|p| cpu_ticks(*p)).collect();
    anyhow::ensure!(
        before.len() == n && after.len() == n,
        "a sidecar exited during the idle window"
    );
    let rss: Vec<f64> = pids.iter().filter_map(|p| rss_mb(*p)).collect();
    let cpu: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a - b) as f64 / tick / secs * 100.0)
        .collect();
    let thr: Vec<f64> = pids
        .iter()
        .filter_map(|p| threads(*p).map(|t| t as f64))
        .collect();
    let w = window.as_secs();
    let build = build_of(BIN);
    Ok(vec![
        Measurement::new("footprint", SUBJECT, "idle_rss_mb", n, "MB", rss).note(format!(
            "per node, after {w} s idle in a full mesh; {build}"
        )),
        Measurement::new("footprint", SUBJECT, "peak_rss_mb", n, "MB", peak).note(format!(
            "per node, highest sample (1 s) in the window; {build}"
        )),
        Measurement::new("footprint", SUBJECT, "idle_cpu_pct", n, "%", cpu)
            .note(format!("per node, of one core, over {w} s; {build}")),
        Measurement::new("footprint", SUBJECT, "threads", n, "threads", thr)
            .note(format!("per node; {build}")),
    ])
}

/// "release build" or "debug build", from the path cargo gave the binary.
fn build_of(bin: &str) -> &'static str {
    if bin.contains("/release/") {
        "release build"
    } else {
        "debug build (figures of a release build differ)"
    }
}

fn size_mb(p: &PathBuf) -> Option<f64> {
    Some(std::fs::metadata(p).ok()?.len() as f64 / 1e6)
}

/// Stripped sizes per architecture, from dist/ or target/<triple>/release/.
fn sizes() -> Vec<Measurement> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dist = std::env::var_os("DIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("dist"));
    let mut out = vec![];
    for (triple, short) in TARGETS {
        let in_dist = std::fs::read_dir(&dist).ok().and_then(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
                p.file_name()
                    .and_then(|f| f.to_str())
                    .is_some_and(|f| f.starts_with("peat-sidecar-") && f.ends_with(short))
            })
        });
        let in_target = root
            .join("target")
            .join(triple)
            .join("release/peat-sidecar");
        let found = in_dist.or(Some(in_target).filter(|p| p.exists()));
        if let Some(p) = found {
            if let Some(mb) = size_mb(&p) {
                out.push(
                    Measurement::new(
                        "footprint",
                        SUBJECT,
                        &format!("binary_mb_{short}"),
                        0,
                        "MB",
                        vec![mb],
                    )
                    .note(format!("{} (release profile strips)", p.display())),
                );
            }
        }
    }
    if out.is_empty() {
        let host = PathBuf::from(BIN);
        if let Some(mb) = size_mb(&host) {
            out.push(
                Measurement::new("footprint", SUBJECT, "binary_mb_host", 0, "MB", vec![mb]).note(
                    format!(
                        "no cross builds in dist/ or target/<triple>/release (packaging/build.sh \
                         makes them); host binary {} ({}, {})",
                        host.display(),
                        std::env::consts::ARCH,
                        build_of(BIN)
                    ),
                ),
            );
        }
    }
    out
}

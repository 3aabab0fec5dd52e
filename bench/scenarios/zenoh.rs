//! The Zenoh half of `pubsub`: Python Zenoh peers (bench/zenoh_pubsub.py, PyPI
//! `eclipse-zenoh`) doing what pubsub.rs does through peat-sidecar, on a LAN of the
//! same shape (prefix `dwz`): latency at 100 msg/s to N-1 subscribers, and throughput
//! between two hosts at 1 KiB and 64 KiB.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::Ctx;
use crate::{
    common::{interop::PyScript, netns::Lan},
    report::{percentile, Measurement},
};

const S: &str = "pubsub";

fn script() -> String {
    format!("{}/bench/zenoh_pubsub.py", env!("CARGO_MANIFEST_DIR"))
}

/// Waits for a line with `key` from every script, without panicking (a failure here
/// must not cost the scenario its peat-sidecar figures).
async fn all_printed(scripts: &[&PyScript], key: &str, timeout: Duration) -> anyhow::Result<()> {
    let t0 = Instant::now();
    while scripts.iter().any(|s| s.has(key).is_none()) {
        if t0.elapsed() > timeout {
            let stuck = scripts.iter().find(|s| s.has(key).is_none());
            bail!(
                "zenoh: no `{key}` within {timeout:?}; stderr: {}",
                stuck.map(|s| s.stderr()).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// One run: subscribers on hosts 1.., a publisher on host 0; returns each subscriber's
/// result line and the publisher's.
async fn run_once(
    lan: &Lan,
    subs: usize,
    topic: &str,
    pub_args: &[String],
    count: usize,
    samples: bool,
) -> anyhow::Result<(Vec<serde_json::Value>, serde_json::Value)> {
    let mut sargs: Vec<String> = [
        "sub",
        "--key",
        &format!("{topic}/**"),
        "--count",
        &count.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if samples {
        sargs.push("--samples".into());
    }
    let ss: Vec<PyScript> = (1..=subs)
        .map(|i| PyScript::start_file(lan.ns(i), "zenoh", &script(), &sargs))
        .collect();
    let refs: Vec<&PyScript> = ss.iter().collect();
    all_printed(&refs, "ready", Duration::from_secs(30)).await?;
    let dir = tempfile::tempdir()?;
    let go = dir.path().join("go");
    let mut pargs: Vec<String> = [
        "pub",
        "--key",
        &format!("{topic}/x"),
        "--count",
        &count.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    pargs.extend(pub_args.iter().cloned());
    pargs.extend(["--go".to_string(), go.display().to_string()]);
    let p = PyScript::start_file(lan.ns(0), "zenoh", &script(), &pargs);
    all_printed(&refs, "warm", Duration::from_secs(60)).await?;
    std::fs::write(&go, b"go").context("write the go file")?;
    all_printed(&refs, "lat_ms", Duration::from_secs(300)).await?;
    all_printed(&[&p], "end_ns", Duration::from_secs(30)).await?;
    let results = ss.iter().filter_map(|s| s.has("lat_ms")).collect();
    Ok((results, p.has("end_ns").unwrap_or_default()))
}

pub async fn run(ctx: &Ctx, n: usize, msgs: usize) -> anyhow::Result<Vec<Measurement>> {
    let lan = Lan::new("dwz", n);
    lan.add_route_everywhere(&["224.0.0.0/4", "dev", "eth0"]);
    let mut out = vec![];

    let rate = ["--size", "1024", "--rate", "100"].map(String::from);
    let (subs, _) = run_once(&lan, n - 1, "lat", &rate, msgs, true).await?;
    let samples: Vec<f64> = subs
        .iter()
        .flat_map(|r| r["lat_ms"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_f64())
        .collect();
    let note = format!(
        "p99 {:.3} ms; {} of {} delivered; Python clients",
        percentile(&samples, 0.99),
        samples.len(),
        msgs * (n - 1)
    );
    out.push(Measurement::new(S, "zenoh", "latency_ms", n, "ms", samples).note(note));

    for (size, m) in super::pubsub::throughput_plan(ctx) {
        let (mut rates, mut mbs, mut notes) = (vec![], vec![], vec![]);
        for _ in 0..ctx.rounds(1, 3) {
            let args = ["--size".to_string(), size.to_string()];
            let (subs, p) = run_once(&lan, 1, "tp", &args, m, false).await?;
            let r = &subs[0];
            let got = r["count"].as_u64().unwrap_or(0);
            let secs = r["last_ns"]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(p["start_ns"].as_u64().unwrap_or(0)) as f64
                / 1e9;
            rates.push(got as f64 / secs);
            mbs.push(got as f64 * size as f64 / secs / 1e6);
            notes.push(format!("{got}/{m}"));
        }
        let note = format!(
            "{m} x {size} B per run, delivered {}; Python clients",
            notes.join(", ")
        );
        let k = size / 1024;
        out.push(
            Measurement::new(S, "zenoh", &format!("msgs_per_s_{k}k"), 2, "msg/s", rates)
                .note(note.clone()),
        );
        out.push(
            Measurement::new(S, "zenoh", &format!("mb_per_s_{k}k"), 2, "MB/s", mbs).note(note),
        );
    }
    Ok(out)
}

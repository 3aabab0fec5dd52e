//! `pubsub`: the data plane through the gRPC API, as an app sees it, side by side with
//! Zenoh peers (bench/zenoh_pubsub.py) on the same kind of namespace LAN.
//!
//! - latency: publish -> delivery on every other node, 1 KiB at 100 msg/s, N nodes in
//!   a full mesh with a subscriber on each of the N-1 others; while it runs, the bytes
//!   every node sends (eth0 tx counters) give the bytes on the wire per publish, after
//!   subtracting the idle rate measured just before;
//! - throughput: one PublishStream of M messages (1 KiB, then 64 KiB) from node 0, one
//!   subscriber on node 1; from the first send to the last delivery;
//! - retained sync: 10,000 keys of 100 B, then a new node starts: time from its spawn
//!   (and from its first connection) until it holds all of them;
//! - bridge hop: A and B on segment 0, C on segment 1 through B; the same messages'
//!   latency on B (direct) and on C (one hop more).
//!
//! The timestamps are in the payloads (unix ns, one clock for every namespace), so a
//! latency includes the Publish call and the delivery stream, as an app would see.
//! Subscribers and publishers are Rust (tonic) clients in this process; Zenoh's are
//! Python (its own client library) -- that difference is named in docs/PERFORMANCE.md.
//! Namespace prefixes `dwl`, `dwt`, `dwr`, `dwh` (and `dwz` for Zenoh).
//!
//! `BENCH_OLD_BIN=PATH` (a peat-sidecar built from an older commit) runs the latency,
//! throughput and bridge parts once more with that binary, right after the current
//! one's, as the subject `peat-sidecar-old`: the comparison with the old code in one
//! run that a change to the data plane needs (docs/PERFORMANCE.md). Several, as
//! `LABEL=PATH,LABEL=PATH`, run as `peat-sidecar-LABEL` each. `PUBSUB_CERTS=1` adds
//! this build with member certificates on every node (`peat-sidecar-certs`).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context};
use peat_sidecar::api::pb::{self, delivery::Kind};

use super::{
    subjects::Subject,
    util::{mdns_opts, mesh_or_err, start_on},
    zenoh, Ctx,
};
use crate::{
    common::{
        data::{data_stats, msg, wait_subscribers},
        netns::Lan,
        poll, Sidecar,
    },
    report::{percentile, Measurement},
};

const S: &str = "pubsub";

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Measurement>> {
    let mut out = vec![];
    let n = ctx.sizes(&[3], &[10])[0];
    let msgs = ctx.rounds(200, 1000);
    let part = parts();
    let subjects = Subject::all(n.max(3))?;
    for sub in &subjects {
        if part("latency") {
            out.extend(latency_and_wire(sub, n, msgs).await?);
        }
        if part("throughput") {
            out.extend(throughput(sub, ctx).await?);
        }
    }
    if part("sync") {
        out.extend(retained_sync(ctx).await?);
    }
    for sub in &subjects {
        if part("bridge") {
            out.extend(bridge_hop(sub, msgs).await?);
        }
    }
    if !part("zenoh") {
        return Ok(out);
    }
    match zenoh::run(ctx, n, msgs).await {
        Ok(ms) => out.extend(ms),
        // Zenoh is the anchor, not the subject: without it the figures above still stand.
        Err(e) => out.push(
            Measurement::new(S, "zenoh", "latency_ms", n, "ms", vec![])
                .note(format!("FAILED: {e:#}")),
        ),
    }
    Ok(out)
}

/// Which parts run: `PUBSUB_PARTS=latency,throughput,sync,bridge,zenoh` (any of them;
/// default all), for runs that look at one figure.
fn parts() -> impl Fn(&str) -> bool {
    let var = std::env::var("PUBSUB_PARTS").unwrap_or_default();
    move |p: &str| var.is_empty() || var.split(',').any(|x| x.trim() == p)
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A payload of `size` bytes (at least 16) that starts with the send time.
fn stamped(size: usize) -> Vec<u8> {
    let mut v = vec![0x61u8; size.max(16)];
    v[..8].copy_from_slice(&now_ns().to_le_bytes());
    v
}

/// A subscription read by a task that records each message's latency from the time in
/// its payload, and the delivery counts.
struct Recorder {
    lat_ms: Arc<Mutex<Vec<f64>>>,
    count: Arc<AtomicU64>,
    missed: Arc<AtomicU64>,
    /// Unix ns of the last delivery.
    last_ns: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start(s: &Sidecar, pattern: &str) -> anyhow::Result<Recorder> {
        let mut c = s.client().await?;
        let mut stream = c
            .subscribe(pb::SubscribeRequest {
                pattern: pattern.into(),
                retained: false,
            })
            .await?
            .into_inner();
        let lat: Arc<Mutex<Vec<f64>>> = Arc::default();
        let (count, missed, last): (Arc<AtomicU64>, Arc<AtomicU64>, Arc<AtomicU64>) =
            Default::default();
        let (lat_ms, count_r, missed_r, last_ns) =
            (lat.clone(), count.clone(), missed.clone(), last.clone());
        let task = tokio::spawn(async move {
            while let Ok(Some(d)) = stream.message().await {
                let now = now_ns();
                match d.kind {
                    Some(Kind::Message(m)) => {
                        if let Some(t) = m.payload.get(..8) {
                            let sent = u64::from_le_bytes(t.try_into().unwrap_or_default());
                            lat.lock()
                                .unwrap()
                                .push(now.saturating_sub(sent) as f64 / 1e6);
                        }
                        count.fetch_add(1, Ordering::Relaxed);
                        last.store(now, Ordering::Relaxed);
                    }
                    Some(Kind::Missed(n)) => {
                        missed.fetch_add(n, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        });
        Ok(Recorder {
            lat_ms,
            count: count_r,
            missed: missed_r,
            last_ns,
            task,
        })
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn reset(&self) {
        self.lat_ms.lock().unwrap().clear();
        self.count.store(0, Ordering::Relaxed);
        self.missed.store(0, Ordering::Relaxed);
    }

    fn samples(&self) -> Vec<f64> {
        self.lat_ms.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Subscribes `pattern` on each node and publishes on `from` until every subscriber got
/// a message (data links come up a moment after the connections); then resets them.
async fn recorders(from: &Sidecar, on: &[&Sidecar], topic: &str) -> anyhow::Result<Vec<Recorder>> {
    let mut rs = vec![];
    for s in on {
        rs.push(Recorder::start(s, &format!("{topic}/**")).await?);
        wait_subscribers(s, 1, Duration::from_secs(10)).await;
    }
    let mut c = from.client().await?;
    let t0 = Instant::now();
    while rs.iter().any(|r| r.count() == 0) {
        if t0.elapsed() > Duration::from_secs(30) {
            bail!(
                "warm-up: a subscriber got nothing from {} within 30 s",
                from.name
            );
        }
        c.publish(msg(&format!("{topic}/warm"), "", stamped(16), false))
            .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    rs.iter().for_each(Recorder::reset);
    Ok(rs)
}

/// Publishes `count` stamped messages of `size` bytes at `rate` per second, one
/// Publish call each (what a periodic app does).
async fn paced(
    from: &Sidecar,
    topic: &str,
    size: usize,
    rate: u64,
    count: usize,
) -> anyhow::Result<()> {
    let mut c = from.client().await?;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    for _ in 0..count {
        tick.tick().await;
        c.publish(msg(topic, "", stamped(size), false)).await?;
    }
    Ok(())
}

/// Waits until every recorder has `count` messages, or nothing moved for 5 s.
async fn settle(rs: &[Recorder], count: u64) {
    let mut last = (0, Instant::now());
    loop {
        let total: u64 = rs.iter().map(Recorder::count).sum();
        if rs.iter().all(|r| r.count() >= count) {
            return;
        }
        if total != last.0 {
            last = (total, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(5) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Bytes sent by `eth0` of every host of the LAN, summed.
fn tx_bytes(lan: &Lan, n: usize) -> anyhow::Result<u64> {
    let mut sum = 0;
    for i in 0..n {
        let out = std::process::Command::new("ip")
            .args(["-n", lan.ns(i), "-s", "-j", "link", "show", "eth0"])
            .output()
            .context("ip -s link")?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        sum += v[0]["stats64"]["tx"]["bytes"]
            .as_u64()
            .context("no stats64.tx.bytes in `ip -s -j link`")?;
    }
    Ok(sum)
}

fn lat_note(samples: &[f64], expected: usize, missed: u64) -> String {
    format!(
        "p99 {:.3} ms; {} of {expected} delivered, {missed} missed",
        percentile(samples, 0.99),
        samples.len()
    )
}

async fn latency_and_wire(
    sub: &Subject,
    n: usize,
    msgs: usize,
) -> anyhow::Result<Vec<Measurement>> {
    let lan = Lan::new("dwl", n);
    let nodes = sub.start_on(&lan, 0..n, "ps").await;
    let refs: Vec<&Sidecar> = nodes.iter().collect();
    mesh_or_err(&refs, Duration::from_secs(30 + 3 * n as u64)).await?;
    let rs = recorders(&nodes[0], &refs[1..], "lat").await?;

    // The idle rate (keep-alives, mDNS) over 5 s, to subtract.
    let (b0, t0) = (tx_bytes(&lan, n)?, Instant::now());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_per_s = (tx_bytes(&lan, n)? - b0) as f64 / t0.elapsed().as_secs_f64();

    let (b1, t1) = (tx_bytes(&lan, n)?, Instant::now());
    paced(&nodes[0], "lat/x", 1024, 100, msgs).await?;
    settle(&rs, msgs as u64).await;
    let wire = (tx_bytes(&lan, n)? - b1) as f64 - idle_per_s * t1.elapsed().as_secs_f64();

    let samples: Vec<f64> = rs.iter().flat_map(Recorder::samples).collect();
    let missed = rs.iter().map(|r| r.missed.load(Ordering::Relaxed)).sum();
    let note = lat_note(&samples, msgs * (n - 1), missed);
    let per_publish = wire / msgs as f64;
    Ok(vec![
        Measurement::new(S, &sub.name, "latency_ms", n, "ms", samples).note(note),
        Measurement::new(
            S,
            &sub.name,
            "wire_bytes_per_publish",
            n,
            "bytes",
            vec![per_publish],
        )
        .note(format!(
            "1 KiB payload to {} subscribers: {:.2} x {} KiB; idle {:.0} B/s subtracted",
            n - 1,
            per_publish / (1024.0 * (n - 1) as f64),
            n - 1,
            idle_per_s
        )),
    ])
}

/// (message size, messages per run) of the throughput runs, the same for Zenoh. The
/// 1 KiB runs were 20,000 messages until December 2026: some 0.1 s, so short that
/// start-up moved Zenoh's figure between 163k and 316k msg/s from run to run.
/// `PUBSUB_TP_MSGS` sets the 1 KiB count (a profile wants a longer run).
pub fn throughput_plan(ctx: &Ctx) -> [(usize, usize); 2] {
    let small = std::env::var("PUBSUB_TP_MSGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ctx.rounds(2_000, 100_000));
    [(1024, small), (65_536, ctx.rounds(200, 2_000))]
}

async fn throughput(sub: &Subject, ctx: &Ctx) -> anyhow::Result<Vec<Measurement>> {
    let lan = Lan::new("dwt", 2);
    // The rate bounds (100,000 msg/s by default, in bursts of one second's worth) would
    // cap a run longer than a second: what is measured is the data plane, not a policy.
    let mut nodes = vec![];
    for i in 0..2 {
        let mut o = sub.opts(&lan, i);
        for flag in [
            "--max-publish-rate",
            "--max-app-publish-rate",
            "--max-peer-rate",
        ] {
            o.extra.extend([flag.to_string(), "10000000".to_string()]);
        }
        nodes.push(sub.start(&format!("tp{i}"), i, o).await);
    }
    mesh_or_err(&[&nodes[0], &nodes[1]], Duration::from_secs(30)).await?;
    let rs = recorders(&nodes[0], &[&nodes[1]], "tp").await?;
    let mut out = vec![];
    for (size, m) in throughput_plan(ctx) {
        let (mut rates, mut mbs, mut notes) = (vec![], vec![], vec![]);
        for _ in 0..ctx.rounds(1, 3) {
            rs[0].reset();
            // Connected before the clock starts, as Zenoh's session is opened before
            // its publisher takes its start time.
            let mut c = nodes[0].client().await?;
            let t0 = now_ns();
            let reqs = (0..m).map(move |_| msg("tp/x", "", stamped(size), false));
            c.publish_stream(tokio_stream::iter(reqs)).await?;
            settle(&rs, m as u64).await;
            let got = rs[0].count();
            let secs = (rs[0].last_ns.load(Ordering::Relaxed).saturating_sub(t0)) as f64 / 1e9;
            rates.push(got as f64 / secs);
            mbs.push(got as f64 * size as f64 / secs / 1e6);
            notes.push(format!(
                "{got}/{m} delivered, {} missed",
                rs[0].missed.load(Ordering::Relaxed)
            ));
        }
        let note = format!("{m} x {size} B per run; {}", notes.join("; "));
        out.push(
            Measurement::new(
                S,
                &sub.name,
                &format!("msgs_per_s_{}k", size / 1024),
                2,
                "msg/s",
                rates,
            )
            .note(note.clone()),
        );
        out.push(
            Measurement::new(
                S,
                &sub.name,
                &format!("mb_per_s_{}k", size / 1024),
                2,
                "MB/s",
                mbs,
            )
            .note(note),
        );
    }
    Ok(out)
}

async fn retained_sync(ctx: &Ctx) -> anyhow::Result<Vec<Measurement>> {
    let keys = 10_000u64;
    let mut lan = Lan::new("dwr", 2);
    let nodes = start_on(&lan, 0..2, "rs").await;
    mesh_or_err(&[&nodes[0], &nodes[1]], Duration::from_secs(30)).await?;
    let reqs = (0..keys).map(|i| {
        msg(
            &format!("sync/{}", i % 100),
            &format!("k{i}"),
            vec![0x62; 100],
            true,
        )
    });
    let mut c = nodes[0].client().await?;
    c.publish_stream(tokio_stream::iter(reqs)).await?;
    let n1 = &nodes[1];
    let held = || async move { data_stats(n1).await.retained_entries >= keys };
    if poll(Duration::from_secs(60), Duration::from_millis(100), held)
        .await
        .is_none()
    {
        bail!("node 1 does not hold {keys} retained entries after 60 s");
    }
    let host = lan.add_host(0);
    let (mut from_spawn, mut from_conn) = (vec![], vec![]);
    for round in 0..ctx.rounds(1, 3) {
        let j = Sidecar::start(&format!("joiner{round}"), mdns_opts(&lan, host)).await;
        let spawned = j.spawned;
        let connected = std::cell::Cell::new(None);
        let (jr, cr) = (&j, &connected);
        let done = poll(
            Duration::from_secs(60),
            Duration::from_millis(20),
            || async move {
                if cr.get().is_none() && !jr.connected().await.is_empty() {
                    cr.set(Some(Instant::now()));
                }
                data_stats(jr).await.retained_entries >= keys
            },
        )
        .await;
        if done.is_none() {
            bail!(
                "the joiner holds {} of {keys} after 60 s",
                data_stats(&j).await.retained_entries
            );
        }
        let end = Instant::now();
        from_spawn.push((end - spawned).as_secs_f64());
        if let Some(c) = connected.get() {
            from_conn.push((end - c).as_secs_f64());
        }
    }
    Ok(vec![
        Measurement::new(S, "peat-sidecar", "retained_sync_10k_s", 3, "s", from_spawn)
            .note("10,000 keys of 100 B; from the joiner's spawn (discovery and connect included)"),
        Measurement::new(
            S,
            "peat-sidecar",
            "retained_sync_10k_conn_s",
            3,
            "s",
            from_conn,
        )
        .note("from the joiner's first connection"),
    ])
}

async fn bridge_hop(sub: &Subject, msgs: usize) -> anyhow::Result<Vec<Measurement>> {
    let mut lan = Lan::new("dwh", 2);
    let seg1 = lan.add_segment();
    lan.attach(1, seg1);
    let ci = lan.add_host(seg1);
    let nodes = sub.start_on(&lan, 0..ci + 1, "hop").await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    mesh_or_err(&[a, b], Duration::from_secs(30)).await?;
    mesh_or_err(&[b, c], Duration::from_secs(30)).await?;
    let rs = recorders(a, &[b, c], "hop").await?;
    paced(a, "hop/x", 1024, 100, msgs).await?;
    settle(&rs, msgs as u64).await;
    let (direct, bridged) = (rs[0].samples(), rs[1].samples());
    let added = percentile(&bridged, 0.5) - percentile(&direct, 0.5);
    let miss = |r: &Recorder| r.missed.load(Ordering::Relaxed);
    Ok(vec![
        Measurement::new(S, &sub.name, "latency_direct_ms", 3, "ms", direct.clone())
            .note(lat_note(&direct, msgs, miss(&rs[0]))),
        Measurement::new(S, &sub.name, "latency_one_hop_ms", 3, "ms", bridged.clone()).note(
            format!(
                "{}; the hop adds {added:.3} ms at p50",
                lat_note(&bridged, msgs, miss(&rs[1]))
            ),
        ),
    ])
}

//! `thin`: urgent messages under a bulk flood on a 64 kbit/s link (issue 26).
//!
//! Two nodes; node 0's eth0 shaped with tbf (`rate 64kbit burst 4kb latency 400ms`).
//! A publisher on node 0 offers 1 KiB bulk messages at ten times the link's rate
//! (80 per second, one PublishStream per 100 ms), and an urgent message every 500 ms
//! with the send time in its payload; a subscriber on node 1 takes each urgent
//! message's latency. After the last urgent message, 20 s for stragglers. Subjects,
//! each on a fresh LAN in the same run:
//!
//! - `classes`: `--priority bulk/**=bulk --priority urgent/**=urgent` on node 0;
//! - `no-classes`: the same traffic with no priorities (everything normal), as before
//!   issue 26;
//! - `classes+link-rate`: as `classes`, with `--link-rate 56000` on node 0 (below the
//!   shaper, so the sidecar, not tbf, decides what waits).
//!
//! Metrics: urgent latency (ms; p50/p99 in the report), urgent messages lost, bulk
//! messages delivered and dropped at node 0. Namespace prefix `btl`.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::bail;
use peat_sidecar::api::pb::{self, delivery::Kind};

use super::{pubsub::now_ns, util::mdns_opts, util::mesh_or_err, Ctx};
use crate::{
    common::{
        data::{data_stats, msg, wait_subscribers},
        netns::{ns_exec, Lan},
        Sidecar,
    },
    report::Measurement,
};

const S: &str = "thin";
/// Bulk messages per 100 ms: 8 KiB, ten times 64 kbit/s.
const BULK_PER_TICK: usize = 8;
const STRAGGLERS: Duration = Duration::from_secs(20);

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Measurement>> {
    let urgent = ctx.rounds(10, 60);
    let mut out = vec![];
    let classes = [
        "--priority",
        "bulk/**=bulk",
        "--priority",
        "urgent/**=urgent",
    ];
    let rate = ["--link-rate", "56000"];
    let subjects: [(&str, Vec<&str>); 3] = [
        ("classes", classes.to_vec()),
        ("no-classes", vec![]),
        ("classes+link-rate", [&classes[..], &rate[..]].concat()),
    ];
    for (subject, flags) in subjects {
        out.extend(one(subject, &flags, urgent).await?);
    }
    Ok(out)
}

async fn one(subject: &str, flags: &[&str], urgent: usize) -> anyhow::Result<Vec<Measurement>> {
    let lan = Lan::new("btl", 2);
    let mut o = mdns_opts(&lan, 0);
    o.extra.extend(flags.iter().map(|f| f.to_string()));
    let a = Sidecar::start("thin0", o).await;
    let b = Sidecar::start("thin1", mdns_opts(&lan, 1)).await;
    mesh_or_err(&[&a, &b], Duration::from_secs(30)).await?;
    let lat = Arc::new(Mutex::new(Vec::new()));
    let mut c = b.client().await?;
    let mut stream = c
        .subscribe(pb::SubscribeRequest {
            pattern: "**".into(),
            retained: false,
        })
        .await?
        .into_inner();
    wait_subscribers(&b, 1, Duration::from_secs(10)).await;
    let (sink, bulk_got) = (lat.clone(), Arc::new(Mutex::new(0u64)));
    let bulk_sink = bulk_got.clone();
    let reader = tokio::spawn(async move {
        while let Ok(Some(d)) = stream.message().await {
            let Some(Kind::Message(m)) = d.kind else {
                continue;
            };
            if m.topic.starts_with("urgent/") && m.payload.len() >= 8 {
                let sent = u64::from_le_bytes(m.payload[..8].try_into().unwrap_or_default());
                let ms = now_ns().saturating_sub(sent) as f64 / 1e6;
                sink.lock().unwrap().push(ms);
            } else if m.topic.starts_with("bulk/") {
                *bulk_sink.lock().unwrap() += 1;
            }
        }
    });
    // The data link first (a live message through), then the shaper.
    let mut pa = a.client().await?;
    let mut warm = false;
    for _ in 0..50 {
        pa.publish(msg(
            "urgent/warm",
            "",
            now_ns().to_le_bytes().to_vec(),
            false,
        ))
        .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        if !lat.lock().unwrap().is_empty() {
            warm = true;
            break;
        }
    }
    if !warm {
        bail!("{subject}: no message from node 0 reached node 1");
    }
    lat.lock().unwrap().clear();
    let tbf = ns_exec(
        lan.ns(0),
        &[
            "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", "64kbit", "burst",
            "4kb", "latency", "400ms",
        ],
    );
    if !tbf.status.success() {
        bail!("tbf: {}", String::from_utf8_lossy(&tbf.stderr));
    }
    let flood = tokio::spawn(flood(a.client().await?));
    for i in 0..urgent {
        let mut p = now_ns().to_le_bytes().to_vec();
        p.extend_from_slice(&[b'u'; 24]);
        pa.publish(msg(&format!("urgent/{i}"), "", p, false))
            .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    flood.abort();
    tokio::time::sleep(STRAGGLERS).await;
    reader.abort();
    let lat = lat.lock().unwrap().clone();
    let lost = urgent.saturating_sub(lat.len()) as f64;
    let dropped = data_stats(&a).await.dropped as f64;
    let bulk = *bulk_got.lock().unwrap() as f64;
    let note = format!("64 kbit/s tbf, bulk 1 KiB at 80/s, urgent every 500 ms x {urgent}");
    Ok(vec![
        Measurement::new(S, subject, "urgent_latency_ms", 2, "ms", lat).note(note),
        Measurement::new(S, subject, "urgent_lost", 2, "msgs", vec![lost]),
        Measurement::new(S, subject, "bulk_delivered", 2, "msgs", vec![bulk]),
        Measurement::new(S, subject, "sender_dropped", 2, "msgs", vec![dropped]),
    ])
}

/// Bulk at ten times the link's rate until aborted.
async fn flood(
    mut c: pb::sidecar_client::SidecarClient<tonic::transport::Channel>,
) -> anyhow::Result<()> {
    let mut n = 0u64;
    loop {
        let batch: Vec<_> = (0..BULK_PER_TICK)
            .map(|_| {
                n += 1;
                msg(&format!("bulk/{}", n % 10), "", vec![b'b'; 1024], false)
            })
            .collect();
        c.publish_stream(tokio_stream::iter(batch)).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

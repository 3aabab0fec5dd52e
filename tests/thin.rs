//! Thin links (issue 26) end to end: two sidecars in network namespaces, the sender's
//! egress shaped to 64 kbit/s with tbf. A bulk publisher floods the link; urgent
//! messages sent every 500 ms all arrive while bulk ones are dropped; a latest-value
//! topic delivers its last value. Asserts delivery and order, never times. Needs root.

mod common;

use std::time::Duration;

use common::{
    data::{data_stats, msg, open_subscription, publish, publish_stream, Drained, Got},
    netns::{ns_exec, Lan},
    wait_full_mesh, wait_until, Sidecar,
};
use peat_sidecar::api::pb;

const ALERTS: usize = 20;
const BULK: usize = 20_000;
const TRACK_VALUES: usize = 200;

fn messages(d: &Drained, prefix: &str) -> Vec<pb::DataMessage> {
    d.got
        .lock()
        .unwrap()
        .iter()
        .filter_map(|g| match g {
            Got::Msg(m) if m.topic.starts_with(prefix) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn shape(ns: &str) {
    let out = ns_exec(
        ns,
        &[
            "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", "64kbit", "burst",
            "4kb", "latency", "400ms",
        ],
    );
    assert!(
        out.status.success(),
        "tbf on {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Without a cap (QUIC stream priorities alone), then with `--link-rate` below the
/// shaper (the sidecar paces); one after the other, as two floods at once on a small
/// machine would starve the nodes' own mDNS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_messages_cross_a_flooded_64_kbit_link() {
    if common::skip::without_root("network namespaces") {
        return;
    }
    flooded_link("th", &[]).await;
    flooded_link("ti", &["--link-rate", "48000"]).await;
}

async fn flooded_link(prefix: &str, extra: &[&str]) {
    let lan = Lan::new(prefix, 2);
    let mut o = common::lan_mdns_opts(&lan, 0, "thin");
    o.extra.extend(
        [
            "--priority",
            "bulk/**=bulk",
            "--priority",
            "alert/**=urgent",
            "--latest-value",
            "track/*",
        ]
        .map(String::from),
    );
    o.extra.extend(extra.iter().map(|f| f.to_string()));
    let a = Sidecar::start("node0", o).await;
    let b = Sidecar::start("node1", common::lan_mdns_opts(&lan, 1, "thin")).await;
    wait_full_mesh(&[&a, &b], Duration::from_secs(20))
        .await
        .expect("the two nodes connect");
    let got = Drained::start(open_subscription(&b, "**", false).await);
    // A live message through first: the data link is up.
    let up = wait_until(Duration::from_secs(30), || async {
        publish(&a, msg("warm", "", "w", false)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        !messages(&got, "warm").is_empty()
    })
    .await;
    assert!(up.is_some(), "no live message from node0 reached node1");

    shape(lan.ns(0));
    // The flood: far more 1 KiB bulk messages than the link carries in the test's time.
    let flood = (0..BULK)
        .map(|i| msg(&format!("bulk/{}", i % 10), "", vec![b'x'; 1024], false))
        .collect();
    let sent = publish_stream(&a, flood).await;
    assert_eq!(sent.published, BULK as u64);
    // A latest-value track, then urgent alerts every 500 ms: half by the topic's
    // --priority default, half by the publisher's own choice on an unlisted topic.
    for v in 0..TRACK_VALUES {
        publish(&a, msg("track/blue", "pos", v.to_string(), false)).await;
    }
    for i in 0..ALERTS {
        let mut m = msg(&format!("alert/{i}"), "", "alert", false);
        if i % 2 == 1 {
            m.topic = format!("ops/alert{i}");
            m.priority = pb::Priority::Urgent as i32;
        }
        publish(&a, m).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let all_alerts = wait_until(Duration::from_secs(60), || async {
        messages(&got, "alert/").len() + messages(&got, "ops/alert").len() >= ALERTS
    })
    .await;
    let bulk_got = messages(&got, "bulk/").len();
    let stats = data_stats(&a).await;
    assert!(
        all_alerts.is_some(),
        "urgent messages lost: {} of {ALERTS} arrived ({bulk_got} bulk arrived; node0 {stats:?})",
        messages(&got, "alert/").len() + messages(&got, "ops/alert").len()
    );
    assert!(
        stats.dropped > 0,
        "the flood of {BULK} bulk messages dropped none: {stats:?}"
    );
    assert!(bulk_got < BULK, "all {BULK} bulk messages arrived");
    // The track's last value arrives, and values arrive in order (replacement keeps
    // the place, never the order of a key's values).
    let last = (TRACK_VALUES - 1).to_string();
    let track = wait_until(Duration::from_secs(120), || async {
        messages(&got, "track/")
            .last()
            .is_some_and(|m| m.payload == last.as_bytes())
    })
    .await;
    let link = a
        .peers()
        .await
        .into_iter()
        .map(|p| p.link_classes)
        .collect::<Vec<_>>();
    let values: Vec<usize> = messages(&got, "track/")
        .iter()
        .filter_map(|m| std::str::from_utf8(&m.payload).ok()?.parse().ok())
        .collect();
    assert!(
        track.is_some(),
        "the track's last value never arrived: {values:?}; node0 link: {link:?}"
    );
    assert!(values.windows(2).all(|w| w[0] < w[1]), "{values:?}");
    // What node0 shows per class (peers --json `link`): bulk dropped, urgent never.
    let classes = &link[0];
    let of = |name: &str| classes.iter().find(|c| c.class == name).cloned();
    let (urgent, bulk) = (of("urgent").expect("urgent"), of("bulk").expect("bulk"));
    assert!(bulk.dropped > 0, "{classes:?}");
    assert_eq!(urgent.dropped, 0, "{classes:?}");
    assert!(urgent.sent_frames >= ALERTS as u64 / 2, "{classes:?}");
    let cap = a.peers().await[0].link_rate_cap;
    let want = extra.get(1).map_or(0, |r| r.parse().unwrap());
    assert_eq!(cap, Some(want));
    eprintln!(
        "alerts {ALERTS}/{ALERTS}; bulk {bulk_got}/{BULK} arrived, node0 dropped {}; track values {} of {TRACK_VALUES}",
        stats.dropped,
        values.len()
    );
}

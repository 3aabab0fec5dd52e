//! The data plane end to end: real sidecars in network namespaces (tests/common/netns.rs)
//! found by mDNS, driven through the gRPC API (tests/common/data.rs) and the CLI.
//! Needs root.
//!
//! Each test has its own namespace prefix (`dt`, `du`, `dv`, `dw`). To keep the CI
//! cost small, `one_lan` runs several checks in turn on one LAN of four hosts.

mod common;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use common::{
    data::{
        data_stats, get, json_payload, msg, names_publisher, open_subscription, publish,
        publish_stream, wait_subscribers, CliSub, Drained, Got,
    },
    netns::Lan,
    wait_full_mesh, wait_until, Sidecar,
};
use peat_sidecar::api::pb;

use common::lan_mdns_opts as opts;

async fn start(lan: &Lan, i: usize, app_id: &str) -> Sidecar {
    Sidecar::start(&format!("node{i}"), opts(lan, i, app_id)).await
}

/// Publishes on `from` every 300 ms (topic `warm/<n>`) until `arrived` says the message
/// got through: a formation connection can exist a moment before its data link does,
/// and live messages only reach the peers that are linked now.
async fn warm_up<F: Fn() -> bool>(from: &Sidecar, what: &str, arrived: F) {
    let t0 = Instant::now();
    let mut n = 0u32;
    while !arrived() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{what}: no live message got through within 30 s"
        );
        publish(from, msg(&format!("warm/{n}"), "", "warm", false)).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!("{what}: data path up after {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lan() {
    if common::skip::without_root("network namespaces") {
        return;
    }
    let lan = Lan::new("dt", 4);
    let a = start(&lan, 0, "test").await;
    let b = start(&lan, 1, "test").await;
    let c = start(&lan, 2, "test").await;
    // `other` also checks the per-app publish rate (it has no peers to disturb).
    let mut other_opts = opts(&lan, 3, "other");
    other_opts
        .extra
        .extend(["--max-app-publish-rate".into(), APP_RATE.to_string()]);
    let other = Sidecar::start("node3", other_opts).await;
    wait_full_mesh(&[&a, &b, &c], Duration::from_secs(20))
        .await
        .expect("the three nodes of app `test` form a full mesh");

    fan_out_and_app_isolation(&a, &b, &c, &other).await;
    conflict_converges(&[&a, &b, &c]).await;
    slow_subscriber_does_not_stall_another(&a, &b).await;
    bad_input_is_refused(&a).await;
    a_noisy_app_leaves_room_for_others(&other).await;
}

const APP_RATE: u32 = 50;

/// With `--max-app-publish-rate`, this test process (one app on the Unix socket) is
/// refused past its rate, naming its pid and the flag, while another process (the CLI)
/// still publishes at once.
async fn a_noisy_app_leaves_room_for_others(s: &Sidecar) {
    let mut c = s.client().await.expect("API reachable");
    let burst: Vec<_> = (0..APP_RATE * 4)
        .map(|i| msg("noisy", "", format!("{i}"), false))
        .collect();
    let e = c
        .publish_stream(tokio_stream::iter(burst))
        .await
        .expect_err("a burst of 4 x --max-app-publish-rate from one app");
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
    let pid = format!("pid {}", std::process::id());
    assert!(
        e.message().contains("--max-app-publish-rate") && e.message().contains(&pid),
        "the refusal does not name the flag and {pid}: {e}"
    );
    let (ok, out, err) = s.cli(&["publish", "quiet", "still here"]);
    assert!(ok, "another app was refused too: {out}{err}");
}

/// A publish on a reaches the CLI subscribers on b and c, once each and in order; the
/// node of another app id on the same LAN receives nothing.
async fn fan_out_and_app_isolation(a: &Sidecar, b: &Sidecar, c: &Sidecar, other: &Sidecar) {
    let sub_b = CliSub::start(b, "**", &[]);
    let sub_c = CliSub::start(c, "**", &[]);
    let sub_other = CliSub::start(other, "**", &[]);
    for s in [b, c, other] {
        wait_subscribers(s, 1, Duration::from_secs(10)).await;
    }
    let warm = |s: &CliSub| {
        s.lines()
            .iter()
            .any(|l| l["topic"].as_str().is_some_and(|t| t.starts_with("warm/")))
    };
    warm_up(a, "a -> b, c", || warm(&sub_b) && warm(&sub_c)).await;

    let (ok, out, err) = a.cli(&["publish", "tracks/blue-2", "hello", "--key", "k1"]);
    assert!(ok, "publish failed: {out}{err}");
    assert!(out.starts_with("published seq="), "publish printed {out:?}");
    let n = 20;
    let seqs: Vec<_> = (0..n)
        .map(|i| msg("tracks/seq", "", format!("{i}"), false))
        .collect();
    let r = publish_stream(a, seqs).await;
    assert_eq!(r.published, n as u64);

    for (name, sub) in [("b", &sub_b), ("c", &sub_c)] {
        let got = wait_until(Duration::from_secs(20), || async {
            sub.on_topic("tracks/blue-2").len() == 1 && sub.on_topic("tracks/seq").len() >= n
        })
        .await;
        assert!(
            got.is_some(),
            "subscriber on {name} got {:?}; stderr {}",
            sub.lines(),
            sub.stderr()
        );
    }
    // Late duplicates would show up now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (name, sub) in [("b", &sub_b), ("c", &sub_c)] {
        let hello = sub.on_topic("tracks/blue-2");
        assert_eq!(hello.len(), 1, "{name}: {hello:?}");
        let h = &hello[0];
        assert_eq!(h["key"], "k1", "{name}: {h}");
        assert_eq!(json_payload(h), b"hello", "{name}: {h}");
        assert_eq!(h["text"], "hello", "{name}: {h}");
        assert_eq!(h["retained"], false, "{name}: {h}");
        let p = h["publisher"].as_str().unwrap_or_default();
        assert!(
            names_publisher(p, &a.id),
            "{name}: publisher {p} is not a {}",
            a.id
        );

        let seq = sub.on_topic("tracks/seq");
        let payloads: Vec<String> = seq
            .iter()
            .map(|l| String::from_utf8(json_payload(l)).unwrap())
            .collect();
        let want: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        assert_eq!(payloads, want, "{name}: at most once, in publish order");
        let nums: Vec<u64> = seq.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
        assert!(nums.windows(2).all(|w| w[0] < w[1]), "{name}: seq {nums:?}");
    }
    delete_reaches_subscribers(a, c, &[("b", &sub_b), ("c", &sub_c)]).await;
    let leaked = sub_other.lines();
    assert!(leaked.is_empty(), "app `other` received {leaked:?}");
    let st = data_stats(other).await;
    assert_eq!(st.messages_in, 0, "app `other` counted messages in: {st:?}");
}

/// `peat-sidecar delete` on a removes a retained value from `get` on c, and the live
/// subscribers see the delete as one message marked `deleted`, with no payload.
async fn delete_reaches_subscribers(a: &Sidecar, c: &Sidecar, subs: &[(&str, &CliSub)]) {
    let (ok, out, err) = a.cli(&["publish", "state/door", "open", "--key", "k2", "--retain"]);
    assert!(ok, "publish failed: {out}{err}");
    let held = wait_until(Duration::from_secs(20), || async {
        get(c, "state/door").await.len() == 1
    })
    .await;
    assert!(held.is_some(), "c never held the retained state/door");

    let (ok, out, err) = a.cli(&["delete", "state/door", "--key", "k2"]);
    assert!(ok, "delete failed: {out}{err}");
    assert!(out.starts_with("deleted seq="), "delete printed {out:?}");
    let gone = wait_until(Duration::from_secs(20), || async {
        get(c, "state/door").await.is_empty()
    })
    .await;
    assert!(
        gone.is_some(),
        "c still returns state/door after the delete"
    );
    for (name, sub) in subs {
        let seen = wait_until(Duration::from_secs(20), || async {
            sub.on_topic("state/door").len() == 2
        })
        .await;
        let lines = sub.on_topic("state/door");
        assert!(seen.is_some(), "{name}: state/door lines {lines:?}");
        assert_eq!(lines[0]["deleted"], false, "{name}: {}", lines[0]);
        let d = &lines[1];
        assert_eq!(d["deleted"], true, "{name}: {d}");
        assert_eq!(d["key"], "k2", "{name}: {d}");
        assert!(
            json_payload(d).is_empty(),
            "{name}: a delete carries no payload: {d}"
        );
    }
}

/// The same key retained on two nodes at once ends with the same value everywhere:
/// the one with the larger (hlc, publisher id).
async fn conflict_converges(nodes: &[&Sidecar]) {
    let (x, y) = (nodes[1], nodes[2]);
    let mut want = BTreeMap::new();
    for round in 0..5 {
        let topic = format!("conflict/{round}");
        let (rx, ry) = tokio::join!(
            publish(x, msg(&topic, "k", format!("from {}", x.name), true)),
            publish(y, msg(&topic, "k", format!("from {}", y.name), true)),
        );
        let winner = std::cmp::max((rx.hlc, x.id.clone()), (ry.hlc, y.id.clone()));
        want.insert(topic, winner);
    }
    let converged = wait_until(Duration::from_secs(20), || async {
        for n in nodes {
            for (topic, (hlc, id)) in &want {
                let e = get(n, topic).await;
                if e.len() != 1 || e[0].hlc != *hlc || &e[0].publisher != id {
                    return false;
                }
            }
        }
        true
    })
    .await;
    if converged.is_none() {
        let mut seen = vec![];
        for n in nodes {
            seen.push((n.name.clone(), get(n, "conflict/**").await));
        }
        panic!("no convergence to {want:?} within 20 s; retained: {seen:#?}");
    }
    for n in nodes {
        for e in get(n, "conflict/**").await {
            let name = if e.publisher == x.id {
                &x.name
            } else {
                &y.name
            };
            assert_eq!(e.payload, format!("from {name}").into_bytes());
            assert!(e.retained, "{e:?}");
            assert_eq!(e.key, "k");
        }
    }
}

/// One subscription on b that is never read, another one that is: the read one keeps
/// up with every batch while the other one reads nothing, and the unread one, once
/// read, reports what it missed (drop-oldest), never more than was published.
async fn slow_subscriber_does_not_stall_another(a: &Sidecar, b: &Sidecar) {
    let before = data_stats(b).await;
    let slow = open_subscription(b, "bulk/**", false).await;
    let fast = Drained::subscribe(b, "bulk/**", false).await;
    wait_subscribers(b, before.subscribers + 2, Duration::from_secs(10)).await;

    // 3,000 x 4 KiB: about twice what the unread subscription's queue (1,024 messages)
    // plus the HTTP/2 windows and socket buffers on the way hold (~1,550 seen here).
    let payload = vec![0x5a_u8; 4096];
    let (batch, batches) = (200, 15);
    let mut total = 0usize;
    let t0 = Instant::now();
    for _ in 0..batches {
        let reqs = (0..batch)
            .map(|i| {
                msg(
                    &format!("bulk/{}", (total + i) % 7),
                    "",
                    payload.clone(),
                    false,
                )
            })
            .collect();
        publish_stream(a, reqs).await;
        total += batch;
        let caught_up = wait_until(Duration::from_secs(30), || async {
            fast.messages().len() >= total
        })
        .await;
        assert!(
            caught_up.is_some(),
            "the read subscriber has {} of {total} while another one on the same node \
             reads nothing (missed {})",
            fast.messages().len(),
            fast.missed()
        );
    }
    eprintln!("{total} messages of 4 KiB in {:?}", t0.elapsed());
    assert_eq!(fast.missed(), 0, "the read subscriber missed messages");
    assert_eq!(fast.messages().len(), total);
    let seqs: Vec<u64> = fast.messages().iter().map(|m| m.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "fast: not in order");

    // Now read the slow one: what it gets plus what it is told it missed is what was
    // published, and a missed notice is among it.
    let slow = Drained::start(slow);
    let done = wait_until(Duration::from_secs(30), || async {
        slow.messages().len() as u64 + slow.missed() >= total as u64
    })
    .await;
    let all = slow.all();
    assert!(
        done.is_some(),
        "slow subscriber: {} messages + {} missed of {total}",
        slow.messages().len(),
        slow.missed()
    );
    assert!(
        all.iter().any(|g| matches!(g, Got::Missed(n) if *n > 0)),
        "no missed notice"
    );
    assert_eq!(slow.messages().len() as u64 + slow.missed(), total as u64);
    let seqs: Vec<u64> = slow.messages().iter().map(|m| m.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "slow: not in order");
    eprintln!(
        "slow subscriber: {} delivered, {} missed",
        slow.messages().len(),
        slow.missed()
    );
    let st = data_stats(b).await;
    assert!(
        st.dropped >= before.dropped + slow.missed(),
        "b's drop counter does not count what the slow subscriber missed: {st:?}"
    );
}

/// Invalid topics and patterns are refused with a message that says what is wrong.
async fn bad_input_is_refused(a: &Sidecar) {
    for topic in ["tracks//x", "tracks/*", "tracks/**", "/lead", ""] {
        let (ok, out, err) = a.cli(&["publish", topic, "x"]);
        assert!(!ok, "publish {topic:?} succeeded: {out}");
        assert!(
            err.to_lowercase().contains("topic"),
            "publish {topic:?}: the error does not name the topic: {err}"
        );
    }
    for pattern in ["a//b", ""] {
        let (ok, out, err) = a.cli(&["subscribe", pattern, "--timeout", "5"]);
        assert!(!ok, "subscribe {pattern:?} succeeded: {out}");
        assert!(
            err.to_lowercase().contains("pattern") || err.to_lowercase().contains("topic"),
            "subscribe {pattern:?}: {err}"
        );
    }
    let mut c = a.client().await.unwrap();
    let e = c
        .publish(msg("tracks/x", "", vec![0u8; 300_000], false))
        .await
        .expect_err("a payload over --max-message-bytes");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("max-message-bytes"), "{e}");
    let e = c
        .publish(msg("tracks/*", "", "x", false))
        .await
        .expect_err("a wildcard topic");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
}

/// A on segment 0, C on segment 1, B on both and no route between them: B carries
/// live messages both ways and retained state from A to C.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_node_carries_messages_across_segments() {
    if common::skip::without_root("network namespaces") {
        return;
    }
    let mut lan = Lan::new("du", 2);
    let seg1 = lan.add_segment();
    lan.attach(1, seg1);
    let ci = lan.add_host(seg1);
    let a = start(&lan, 0, "test").await;
    let b = start(&lan, 1, "test").await;
    let c = start(&lan, ci, "test").await;
    wait_full_mesh(&[&a, &b], Duration::from_secs(20))
        .await
        .expect("a and b connect on segment 0");
    wait_full_mesh(&[&b, &c], Duration::from_secs(20))
        .await
        .expect("b and c connect on segment 1");
    assert!(
        !a.connected().await.contains(&c.id),
        "a reached c directly: this test needs them apart"
    );

    let on_c = Drained::subscribe(&c, "**", false).await;
    let on_a = Drained::subscribe(&a, "**", false).await;
    wait_subscribers(&c, 1, Duration::from_secs(10)).await;
    wait_subscribers(&a, 1, Duration::from_secs(10)).await;
    // Each side's subscription also gets its own node's messages: count the far side's.
    let from =
        |m: &pb::DataMessage, n: &Sidecar| m.topic.starts_with("warm/") && m.publisher == n.id;
    warm_up(&a, "a -> c", || on_c.messages().iter().any(|m| from(m, &a))).await;
    warm_up(&c, "c -> a", || on_a.messages().iter().any(|m| from(m, &c))).await;

    let sent = publish(&a, msg("over/bridge", "x", "via b", false)).await;
    let back = publish(&c, msg("back/bridge", "", "via b too", false)).await;
    let arrived = wait_until(Duration::from_secs(10), || async {
        on_c.count_topic("over/bridge") == 1 && on_a.count_topic("back/bridge") == 1
    })
    .await;
    assert!(
        arrived.is_some(),
        "c got {:?}; a got {:?}",
        on_c.messages(),
        on_a.messages()
    );
    let m = on_c
        .messages()
        .into_iter()
        .find(|m| m.topic == "over/bridge")
        .unwrap();
    assert_eq!(
        (m.seq, m.hlc, m.publisher.as_str()),
        (sent.seq, sent.hlc, a.id.as_str())
    );
    assert_eq!(m.payload, &b"via b"[..]);
    let m = on_a
        .messages()
        .into_iter()
        .find(|m| m.topic == "back/bridge")
        .unwrap();
    assert_eq!((m.seq, m.publisher.as_str()), (back.seq, c.id.as_str()));

    let r = publish(&a, msg("state/a", "mode", "bridged", true)).await;
    let got = wait_until(Duration::from_secs(20), || async {
        get(&c, "state/*").await.iter().any(|e| e.hlc == r.hlc)
    })
    .await;
    assert!(got.is_some(), "get on c: {:?}", get(&c, "**").await);
    let e = get(&c, "state/a").await;
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(
        (e[0].key.as_str(), &e[0].payload[..]),
        ("mode", b"bridged".as_slice())
    );
    assert_eq!(e[0].publisher, a.id);
    assert!(e[0].retained);
    // No duplicates of the live messages (b must not send one back and forth).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(on_c.count_topic("over/bridge"), 1);
    assert_eq!(on_a.count_topic("back/bridge"), 1);
}

/// 1,000 retained keys published on one node reach a fourth node that starts later,
/// by anti-entropy; a deleted key stays deleted there; restarted with its peers gone,
/// that node still returns all of it from its store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_gets_retained_state_and_keeps_it_over_a_restart() {
    if common::skip::without_root("network namespaces") {
        return;
    }
    let mut lan = Lan::new("dv", 3);
    let mut nodes = [
        start(&lan, 0, "test").await,
        start(&lan, 1, "test").await,
        start(&lan, 2, "test").await,
    ];
    let refs: Vec<&Sidecar> = nodes.iter().collect();
    wait_full_mesh(&refs, Duration::from_secs(20))
        .await
        .expect("full mesh of 3");

    let n = 1000usize;
    let topic = |i: usize| format!("fleet/unit-{}", i % 50);
    let want: BTreeMap<(String, String), bytes::Bytes> = (0..n)
        .map(|i| {
            (
                (topic(i), format!("k{i}")),
                bytes::Bytes::from(format!("value {i}")),
            )
        })
        .collect();
    let reqs = want
        .iter()
        .map(|((t, k), v)| msg(t, k, v.clone(), true))
        .collect();
    let r = publish_stream(&nodes[0], reqs).await;
    assert_eq!(r.published, n as u64);
    // One more key, deleted again: the joiner must get the tombstone, not the value.
    publish(&nodes[0], msg("fleet/gone", "", "soon deleted", true)).await;
    let mut cl = nodes[0].client().await.unwrap();
    cl.delete(pb::DeleteRequest {
        topic: "fleet/gone".into(),
        key: String::new(),
    })
    .await
    .expect("Delete");

    let as_map = |entries: Vec<pb::DataMessage>| -> BTreeMap<(String, String), bytes::Bytes> {
        entries
            .into_iter()
            .map(|e| ((e.topic, e.key), e.payload))
            .collect()
    };
    for s in &nodes[1..] {
        let ok = wait_until(Duration::from_secs(30), || async {
            as_map(get(s, "fleet/**").await) == want
        })
        .await;
        assert!(
            ok.is_some(),
            "{} has {} entries",
            s.name,
            get(s, "fleet/**").await.len()
        );
    }

    let di = lan.add_host(0);
    let d = start(&lan, di, "test").await;
    let took = wait_until(Duration::from_secs(60), || async {
        get(&d, "fleet/**").await.len() >= n
    })
    .await;
    let entries = get(&d, "fleet/**").await;
    assert!(
        took.is_some(),
        "the joiner has {} of {n} entries after 60 s",
        entries.len()
    );
    eprintln!("late joiner got {n} retained entries {took:?} after its API answered");
    assert!(entries
        .iter()
        .all(|e| e.retained && e.publisher == nodes[0].id));
    assert_eq!(as_map(entries), want, "the joiner's retained state differs");
    assert!(
        get(&d, "fleet/gone").await.is_empty(),
        "a deleted key came back"
    );
    let st = data_stats(&d).await;
    // Live entries only: the tombstone of fleet/gone is counted in retained_tombstones.
    assert!(st.retained_entries >= n as u64, "{st:?}");

    for s in nodes.iter_mut() {
        s.stop();
    }
    let mut d = d;
    d.restart().await;
    assert!(d.connected().await.is_empty(), "the peers were stopped");
    let entries = get(&d, "fleet/**").await;
    assert_eq!(entries.len(), n, "after a restart alone");
    assert_eq!(as_map(entries), want);
}

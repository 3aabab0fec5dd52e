//! Signed origins end to end, on loopback (no root): real sidecars in a line A - B - C
//! joined by `--peer` only, so that B forwards between A and C and serves each the
//! other's retained entries by anti-entropy.
//!
//! - A rogue member (tests/common/rogue.rs) joins B and sends messages as A: unsigned,
//!   signed with its own key, a retained value and a delete for A's key, and replays of
//!   A's signed messages. None reaches C or B's store; A's own traffic keeps flowing.
//! - A formation upgraded one node at a time: a node standing in for the version before
//!   signed origins (`PEAT_SIDECAR_TEST_DATA_WIRE=1`, debug builds only) keeps
//!   exchanging live and retained messages with new ones across a new bridge.

mod common;

use std::time::{Duration, Instant};

use common::{
    data::{data_stats, get, msg, publish, wait_subscribers, Drained},
    rogue::Rogue,
    wait_until, Opts, Sidecar,
};
use peat_sidecar::{
    api::pb,
    data::wire::{Frame, Message},
};

fn peered(to: &Sidecar) -> Opts {
    Opts {
        peers: vec![to.peer_spec()],
        ..Opts::default()
    }
}

async fn connected(a: &Sidecar, b: &Sidecar) {
    let linked = wait_until(Duration::from_secs(20), || async {
        a.connected().await.contains(&b.id)
    })
    .await;
    assert!(linked.is_some(), "{} never connected to {}", a.name, b.name);
}

/// Publishes `warm/N` on `from` every 300 ms until `to`'s subscription has one: the
/// data links of a new connection come up a moment after it.
async fn warm_up(from: &Sidecar, to: &Drained) {
    let t0 = Instant::now();
    for n in 0.. {
        let got = to
            .messages()
            .iter()
            .any(|m| m.topic.starts_with("warm/") && m.publisher == from.id);
        if got {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no data path from {}",
            from.name
        );
        publish(from, msg(&format!("warm/{n}"), "", "warm", false)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn payloads(d: &Drained, topic: &str) -> Vec<String> {
    d.messages()
        .iter()
        .filter(|m| m.topic == topic)
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect()
}

async fn value_of(s: &Sidecar, topic: &str) -> Vec<(String, String)> {
    get(s, topic)
        .await
        .into_iter()
        .map(|e| {
            (
                String::from_utf8_lossy(&e.payload).into_owned(),
                e.publisher,
            )
        })
        .collect()
}

/// `m` again, claiming a later write of `publisher`, with `payload`.
fn as_other(m: &Message, seq: u64, payload: &'static str) -> Message {
    let mut f = m.clone();
    f.seq = seq;
    f.hlc += 1 << 16;
    f.payload = bytes::Bytes::from_static(payload.as_bytes());
    f.sig = None;
    f.hops = 0;
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_member_cannot_pass_messages_off_as_another_members() {
    let b = Sidecar::start("b", Opts::default()).await;
    let a = Sidecar::start("a", peered(&b)).await;
    let c = Sidecar::start("c", peered(&b)).await;
    connected(&b, &a).await;
    connected(&b, &c).await;
    let on_c = Drained::subscribe(&c, "**", false).await;
    wait_subscribers(&c, 1, Duration::from_secs(10)).await;
    warm_up(&a, &on_c).await;

    let mut rogue = Rogue::join(&b, "test").await;
    let rogue_id = hex::encode(rogue.id());
    let joined = wait_until(Duration::from_secs(10), || async {
        b.connected().await.contains(&rogue_id)
    })
    .await;
    assert!(joined.is_some(), "b never listed the rogue");
    // A's messages after the rogue joined: B forwards them to it as well.
    let heard = wait_until(Duration::from_secs(20), || async {
        publish(&a, msg("news/1", "", "honest", false)).await;
        publish(&a, msg("state/a", "mode", "v1", true)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        rogue.heard_on("news/1").is_some() && rogue.heard_on("state/a").is_some()
    })
    .await;
    assert!(heard.is_some(), "the rogue heard nothing of a through b");
    let live = rogue.heard_on("news/1").unwrap();
    let old_state = rogue.heard_on("state/a").unwrap();
    assert!(
        live.sig.is_some() && old_state.sig.is_some(),
        "a did not sign what b forwards"
    );
    let v2_hlc = publish(&a, msg("state/a", "mode", "v2", true)).await.hlc;
    let v2 = wait_until(Duration::from_secs(20), || async {
        value_of(&c, "state/a").await == [("v2".to_string(), a.id.clone())]
    })
    .await;
    assert!(v2.is_some(), "c has {:?}", value_of(&c, "state/a").await);
    let forged_before = data_stats(&b).await.forged;

    // As A: unsigned; signed with the rogue's key; a retained value; a delete.
    let mut attempts = vec![
        Frame::Msg(as_other(&live, 1_000_000, "forged")),
        Frame::Msg({
            let mut m = as_other(&live, 1_000_001, "forged");
            rogue.sign(&mut m);
            m
        }),
        // Newer than A's value, so that it would win if it were taken.
        Frame::Entries(vec![Message {
            hlc: v2_hlc + (1 << 16),
            ..as_other(&old_state, 1_000_002, "forged")
        }]),
    ];
    let mut delete = as_other(&old_state, 1_000_003, "");
    delete.hlc = v2_hlc + (2 << 16);
    delete.tombstone = true;
    rogue.sign(&mut delete);
    attempts.push(Frame::Entries(vec![delete]));
    // Replays of A's own signed messages: the live one, and the superseded value.
    attempts.push(Frame::Msg(live.clone()));
    attempts.push(Frame::Msg(old_state.clone()));
    attempts.push(Frame::Entries(vec![old_state.clone()]));
    for f in &attempts {
        rogue.send(f).await;
    }
    // Honest traffic still flows, and arrives after the rogue's frames.
    let after = wait_until(Duration::from_secs(20), || async {
        publish(&a, msg("news/after", "", "honest", false)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        !payloads(&on_c, "news/after").is_empty()
    })
    .await;
    assert!(after.is_some(), "a's messages stopped reaching c");
    tokio::time::sleep(Duration::from_secs(1)).await;

    let forged_on_c: Vec<pb::DataMessage> = on_c
        .messages()
        .into_iter()
        .filter(|m| m.payload == b"forged"[..] || m.deleted)
        .collect();
    assert!(forged_on_c.is_empty(), "c delivered {forged_on_c:?}");
    assert_eq!(
        payloads(&on_c, "news/1").len(),
        1,
        "the replay was delivered again"
    );
    for s in [&b, &c] {
        assert_eq!(
            value_of(s, "state/a").await,
            [("v2".to_string(), a.id.clone())],
            "{}'s retained value",
            s.name
        );
    }
    let stats = data_stats(&b).await;
    eprintln!("b: {stats:?}");
    assert!(
        stats.forged >= forged_before + 4,
        "b counted {} forged, {} before",
        stats.forged,
        forged_before
    );
    assert!(b
        .log()
        .contains("message refused: not signed by its publisher"));
    assert_eq!(data_stats(&c).await.forged, 0, "something forged reached c");
    rogue.close();
}

fn old_version(opts: Opts) -> Opts {
    Opts {
        env: vec![("PEAT_SIDECAR_TEST_DATA_WIRE".into(), "1".into())],
        ..opts
    }
}

fn with(opts: Opts, args: &[&str]) -> Opts {
    Opts {
        extra: args.iter().map(|s| s.to_string()).collect(),
        ..opts
    }
}

/// A (the version before signed origins) - B (new) - C (new, permissive while the
/// formation is upgraded), and D (new, strict) beside C: live and retained messages
/// cross B both ways between the old and the new version; D refuses, as it should,
/// what reaches it unsigned through B, and takes what C signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_formation_upgraded_one_node_at_a_time_keeps_carrying_messages() {
    let b = Sidecar::start("b", Opts::default()).await;
    let a = Sidecar::start("a", old_version(peered(&b))).await;
    let c = Sidecar::start("c", with(peered(&b), &["--origin-check", "permissive"])).await;
    let d = Sidecar::start("d", peered(&b)).await;
    for n in [&a, &c, &d] {
        connected(&b, n).await;
    }
    let on_a = Drained::subscribe(&a, "**", false).await;
    let on_c = Drained::subscribe(&c, "**", false).await;
    let on_d = Drained::subscribe(&d, "**", false).await;
    for s in [&a, &c, &d] {
        wait_subscribers(s, 1, Duration::from_secs(10)).await;
    }
    warm_up(&a, &on_c).await;
    warm_up(&c, &on_a).await;
    warm_up(&c, &on_d).await;

    publish(&a, msg("up/old", "", "from the old version", false)).await;
    publish(&a, msg("state/old", "", "old", true)).await;
    publish(&c, msg("up/new", "", "from the new version", false)).await;
    publish(&c, msg("state/new", "", "new", true)).await;
    let crossed = wait_until(Duration::from_secs(30), || async {
        payloads(&on_c, "up/old").len() == 1
            && payloads(&on_a, "up/new").len() == 1
            && payloads(&on_d, "up/new").len() == 1
            && value_of(&c, "state/old").await.len() == 1
            && value_of(&a, "state/new").await.len() == 1
            && value_of(&d, "state/new").await.len() == 1
    })
    .await;
    assert!(
        crossed.is_some(),
        "c: {:?} {:?}; a: {:?} {:?}; d: {:?}",
        payloads(&on_c, "up/old"),
        value_of(&c, "state/old").await,
        payloads(&on_a, "up/new"),
        value_of(&a, "state/new").await,
        payloads(&on_d, "up/new"),
    );
    // D is strict: A's messages reach it through B unsigned, and are refused.
    assert!(payloads(&on_d, "up/old").is_empty());
    assert!(value_of(&d, "state/old").await.is_empty());
    assert!(data_stats(&d).await.forged > 0);
    assert!(data_stats(&c).await.unsigned > 0);
    for s in [&a, &b, &c, &d] {
        assert!(
            !s.log().contains("bad data frame"),
            "{}:\n{}",
            s.name,
            s.log()
        );
    }
}

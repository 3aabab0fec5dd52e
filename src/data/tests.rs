//! The handle's behaviour on one node without peers: publish, subscribe, get,
//! delete, bounds, and what survives a restart.

use super::{core::Actions, wire::Frame, *};

fn cfg(dir: &std::path::Path) -> DataConfig {
    DataConfig {
        data_dir: dir.to_path_buf(),
        max_message_bytes: 1024,
        max_retained_bytes: 1 << 20,
        sync_interval: Duration::from_secs(10),
        max_publish_rate: 1000,
        max_app_publish_rate: 10_000,
        max_peer_rate: 1000,
        links: LinkSettings::default(),
        origin_check: origin::OriginCheck::Strict,
    }
}

fn plane(c: &DataConfig) -> DataPlane {
    DataPlane {
        driver: open_driver(
            c,
            &iroh::SecretKey::from_bytes(&[9; 32]),
            system::Gate::default(),
        )
        .unwrap(),
        trust: None,
    }
}

fn publish(topic: &str, payload: &str, retain: bool) -> Publish {
    Publish {
        topic: topic.into(),
        payload: payload.as_bytes().to_vec().into(),
        retain,
        ..Default::default()
    }
}

#[tokio::test]
async fn publish_subscribe_get_delete() {
    let dir = tempfile::tempdir().unwrap();
    let d = plane(&cfg(dir.path()));
    let mut sub = d.subscribe("t/*").unwrap();
    let a = d.publish(publish("t/a", "1", true)).await.unwrap();
    let b = d.publish(publish("t/b", "2", false)).await.unwrap();
    d.publish(publish("other", "3", true)).await.unwrap();
    assert!(b.seq > a.seq && b.hlc > a.hlc);
    for want in ["1", "2"] {
        match sub.next().await {
            Some(Event::Message(m)) => assert_eq!(m.payload, want.as_bytes()),
            other => panic!("{other:?}"),
        }
    }
    let got = d.get("t/**").unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].topic, "t/a");
    d.delete(App::default(), "t/a", "").await.unwrap();
    assert!(d.get("t/**").unwrap().is_empty());
    // The subscriber learns of the delete: no payload, marked deleted.
    let m = next_message(&mut sub).await;
    assert_eq!((m.topic.as_str(), m.tombstone), ("t/a", true));
    assert!(m.payload.is_empty());
    let s = d.stats();
    assert_eq!((s.published, s.delivered, s.subscribers), (4, 3, 1));
    // "other" is the one live entry; the tombstone is counted apart.
    assert_eq!(
        (s.retained_entries, s.retained_tombstones, s.topics),
        (1, 1, 1)
    );
    d.driver.disk.close().await;
}

/// The next event of a subscription, which must be a message. The timeout only keeps
/// a broken delivery from hanging the test.
async fn next_message(sub: &mut Subscription) -> Arc<Message> {
    match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
        Ok(Some(Event::Message(m))) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

fn remote(seq: u64, key: &str, payload: &str, tombstone: bool) -> Message {
    Message {
        publisher: [5; 32],
        seq,
        // Now, plus the sequence number so that each write is newer.
        hlc: (hlc::wall_ms() << 16) + seq,
        hops: 0,
        topic: "t/a".into(),
        key: key.into(),
        payload: payload.as_bytes().to_vec().into(),
        retain: true,
        ttl_ms: 0,
        tombstone,
        sig: None,
    }
}

/// A Delete from another node reaches the local subscribers marked deleted, whether it
/// comes live or by anti-entropy, and leaves nothing for Get.
#[tokio::test]
async fn a_remote_delete_reaches_live_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let d = plane(&cfg(dir.path()));
    let peer = [5u8; 32];
    let traffic = d.driver.traffic(&peer);
    let mut sub = d.subscribe("t/**").unwrap();
    let mut out = Actions::new();
    let frames = [
        Frame::Msg(remote(1, "k1", "v", false)),
        Frame::Msg(remote(2, "k1", "", true)),
        Frame::Entries(vec![remote(3, "k2", "w", false), remote(4, "k2", "", true)]),
    ];
    for f in frames {
        d.driver.on_frame(peer, &traffic, f, &mut out).await;
    }
    let got: Vec<(String, String, bool)> = [
        next_message(&mut sub).await,
        next_message(&mut sub).await,
        next_message(&mut sub).await,
        next_message(&mut sub).await,
    ]
    .iter()
    .map(|m| {
        let p = String::from_utf8(m.payload.to_vec()).unwrap();
        (m.key.clone(), p, m.tombstone)
    })
    .collect();
    let want = [
        ("k1", "v", false),
        ("k1", "", true),
        ("k2", "w", false),
        ("k2", "", true),
    ]
    .map(|(k, p, t)| (k.to_string(), p.to_string(), t));
    assert_eq!(got, want);
    assert!(d.get("t/**").unwrap().is_empty());
    let s = d.stats();
    assert_eq!(
        (s.retained_entries, s.retained_tombstones, s.topics),
        (0, 2, 0)
    );
    d.driver.disk.close().await;
}

#[tokio::test]
async fn bounds_are_errors_that_say_what() {
    let dir = tempfile::tempdir().unwrap();
    let d = plane(&cfg(dir.path()));
    let too_big = Publish {
        topic: "t".into(),
        payload: vec![0; 1025].into(),
        ..Default::default()
    };
    let e = d.publish(too_big).await.unwrap_err().to_string();
    assert!(e.contains("--max-message-bytes"), "{e}");
    assert!(matches!(
        d.publish(publish("a/*", "", false)).await,
        Err(DataError::Topic(_))
    ));
    assert!(matches!(d.subscribe("**/a"), Err(DataError::Pattern(_))));
    // A pattern's error calls it a pattern, not a topic.
    let e = d.subscribe("a//*").err().map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some(
            "invalid pattern: the pattern has an empty segment (a leading, trailing or double '/')"
        )
    );
    let mut limited = 0;
    for _ in 0..1100 {
        if let Err(DataError::Rate(1000)) = d.publish(publish("r", "", false)).await {
            limited += 1;
        }
    }
    assert!(limited >= 50, "{limited} of 1100 refused");
}

#[tokio::test]
async fn a_noisy_app_leaves_room_for_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.max_app_publish_rate = 10;
    let d = plane(&c);
    let as_app = |pid, topic: &str| Publish {
        app: App::Process { pid, uid: 1000 },
        ..publish(topic, "", false)
    };
    for _ in 0..10 {
        d.publish(as_app(7, "noisy")).await.unwrap();
    }
    let e = d.publish(as_app(7, "noisy")).await.unwrap_err();
    assert!(matches!(e, DataError::AppRate(_, 10)), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("pid 7") && text.contains("--max-app-publish-rate"),
        "{text}"
    );
    d.publish(as_app(8, "quiet")).await.unwrap();
    let e = d
        .delete(App::Process { pid: 7, uid: 1000 }, "noisy", "")
        .await;
    assert!(
        matches!(e, Err(DataError::AppRate(..))),
        "a delete counts too: {e:?}"
    );
    assert_eq!(d.stats().rejected, 2);
}

#[tokio::test]
async fn retained_state_and_sequence_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let d = plane(&c);
    let mut ttl = publish("t/ttl", "gone soon", true);
    ttl.ttl_secs = 3600;
    d.publish(ttl).await.unwrap();
    let last = d.publish(publish("t/a", "kept", true)).await.unwrap();
    d.driver.disk.close().await;
    drop(d);
    let again = plane(&c);
    let got = again.get("t/*").unwrap();
    assert_eq!(got.len(), 2);
    assert!(got.iter().any(|m| m.payload == b"kept"[..]));
    let next = again.publish(publish("t/b", "", false)).await.unwrap();
    assert!(next.seq > last.seq && next.hlc > last.hlc);
    again.driver.disk.close().await;
}

#[tokio::test]
async fn the_sequence_reservation_is_renewed_halfway() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let d = plane(&c);
    // Past half of the first reservation [1, 1 + SEQ_LEASE).
    d.driver.core().set_next_seq(disk::SEQ_LEASE);
    let p = d.publish(publish("t", "", false)).await.unwrap();
    assert_eq!(p.seq, disk::SEQ_LEASE);
    d.driver.disk.close().await;
    drop(d);
    let again = plane(&c);
    let next = again.publish(publish("t", "", false)).await.unwrap();
    assert!(next.seq > p.seq + disk::SEQ_LEASE / 2, "{}", next.seq);
    again.driver.disk.close().await;
}

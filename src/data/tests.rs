//! The handle's behaviour on one node without peers: publish, subscribe, get,
//! delete, bounds, and what survives a restart.

use super::*;

fn cfg(dir: &std::path::Path) -> DataConfig {
    DataConfig {
        data_dir: dir.to_path_buf(),
        max_message_bytes: 1024,
        max_retained_bytes: 1 << 20,
        sync_interval: Duration::from_secs(10),
        max_publish_rate: 1000,
        max_peer_rate: 1000,
    }
}

fn plane(c: &DataConfig) -> DataPlane {
    DataPlane {
        shared: open(c, [9; 32]).unwrap(),
    }
}

fn publish(topic: &str, payload: &str, retain: bool) -> Publish {
    Publish {
        topic: topic.into(),
        payload: payload.as_bytes().to_vec(),
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
    d.delete("t/a", "").await.unwrap();
    assert!(d.get("t/**").unwrap().is_empty());
    let s = d.stats();
    assert_eq!((s.published, s.delivered, s.subscribers), (4, 2, 1));
    // The tombstone and "other" are still entries.
    assert_eq!(s.retained_entries, 2);
}

#[tokio::test]
async fn bounds_are_errors_that_say_what() {
    let dir = tempfile::tempdir().unwrap();
    let d = plane(&cfg(dir.path()));
    let too_big = Publish {
        topic: "t".into(),
        payload: vec![0; 1025],
        ..Default::default()
    };
    let e = d.publish(too_big).await.unwrap_err().to_string();
    assert!(e.contains("--max-message-bytes"), "{e}");
    assert!(matches!(
        d.publish(publish("a/*", "", false)).await,
        Err(DataError::Topic(_))
    ));
    assert!(matches!(d.subscribe("**/a"), Err(DataError::Pattern(_))));
    let mut limited = 0;
    for _ in 0..1100 {
        if let Err(DataError::Rate(1000)) = d.publish(publish("r", "", false)).await {
            limited += 1;
        }
    }
    assert!(limited >= 50, "{limited} of 1100 refused");
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
    d.shared.disk.close().await;
    drop(d);
    let again = plane(&c);
    let got = again.get("t/*").unwrap();
    assert_eq!(got.len(), 2);
    assert!(got.iter().any(|m| m.payload == b"kept"));
    let next = again.publish(publish("t/b", "", false)).await.unwrap();
    assert!(next.seq > last.seq && next.hlc > last.hlc);
    again.shared.disk.close().await;
}

#[tokio::test]
async fn the_sequence_reservation_is_renewed_halfway() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let d = plane(&c);
    // Past half of the first reservation [1, 1 + SEQ_LEASE).
    d.shared.next_seq.store(disk::SEQ_LEASE, Ordering::Relaxed);
    let p = d.publish(publish("t", "", false)).await.unwrap();
    assert_eq!(p.seq, disk::SEQ_LEASE);
    d.shared.disk.close().await;
    drop(d);
    let again = plane(&c);
    let next = again.publish(publish("t", "", false)).await.unwrap();
    assert!(next.seq > p.seq + disk::SEQ_LEASE / 2, "{}", next.seq);
    again.shared.disk.close().await;
}

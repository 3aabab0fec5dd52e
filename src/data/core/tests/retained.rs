//! Retained entries: last writer wins, tombstones, eviction, expiry at the deadline,
//! our own entries from a lost past.

use super::*;

#[test]
fn a_retained_message_is_stored_then_delivered() {
    let mut h = Harness::new();
    let a = h.msg(1, retained(1, 1, "t"), 0);
    assert!(matches!(
        a.as_slice(),
        [DataAction::Store(_), DataAction::Deliver(_)]
    ));
    assert_eq!(h.live_topics(0), ["t"]);
}

#[test]
fn a_live_message_is_not_stored() {
    let mut h = Harness::new();
    let a = h.msg(1, msg(1, 1, "t"), 0);
    assert!(stored(&a).is_empty());
    assert!(h.live_topics(0).is_empty());
}

#[test]
fn an_older_version_is_delivered_live_but_not_stored() {
    let mut h = Harness::new();
    h.msg(1, retained(1, 10, "t"), 0);
    // Another publisher's write from before: new to us, but it loses.
    let a = h.msg(2, retained(2, 5, "t"), 1);
    assert_eq!((stored(&a).len(), delivered(&a)), (0, vec![(2, 5)]));
    let kept = h
        .core
        .retained()
        .matching(&Pattern::parse("t").unwrap(), WALL);
    assert_eq!(kept[0].publisher, id(1));
}

#[test]
fn a_clock_tie_is_broken_by_the_publisher_id() {
    let mut h = Harness::new();
    let at = |p: u8| {
        let mut m = retained(p, 1, "t");
        m.hlc = (WALL << 16) + 7;
        m
    };
    let (two, one, three) = (at(2), at(1), at(3));
    assert_eq!(stored(&h.frame(2, Frame::Entries(vec![two]), 0)), ["t"]);
    assert!(stored(&h.frame(1, Frame::Entries(vec![one]), 0)).is_empty());
    assert_eq!(stored(&h.frame(3, Frame::Entries(vec![three]), 0)), ["t"]);
    let kept = h
        .core
        .retained()
        .matching(&Pattern::parse("t").unwrap(), WALL);
    assert_eq!(kept[0].publisher, id(3));
}

#[test]
fn a_tombstone_is_stored_and_delivered_marked_deleted() {
    let mut h = Harness::new();
    h.msg(1, retained(1, 1, "t"), 0);
    let mut del = retained(1, 2, "t");
    del.tombstone = true;
    del.payload = bytes::Bytes::new();
    let a = h.msg(1, del, 1);
    assert_eq!(stored(&a), ["t"]);
    match a.last() {
        Some(DataAction::Deliver(m)) => assert!(m.tombstone && m.payload.is_empty()),
        other => panic!("{other:?}"),
    }
    assert!(h.live_topics(1).is_empty());
    assert_eq!(
        (h.core.retained().live(), h.core.retained().tombstones()),
        (0, 1)
    );
}

#[test]
fn an_entry_larger_than_the_store_is_refused_but_delivered() {
    let mut h = Harness::with(
        Rates {
            publish: 1000,
            peer: 1000,
        },
        200,
    );
    let mut big = retained(1, 1, "t");
    big.payload = vec![0u8; 500].into();
    let a = h.msg(1, big, 0);
    assert_eq!(
        (rejects(&a), stored(&a).len(), delivered(&a).len()),
        (1, 0, 1)
    );
}

#[test]
fn a_full_store_evicts_the_oldest_and_deletes_it_on_disk() {
    let one = crate::data::store::entry_size(&retained(1, 1, "t1"));
    let mut h = Harness::with(
        Rates {
            publish: 1000,
            peer: 1000,
        },
        one * 2,
    );
    h.msg(1, retained(1, 1, "t1"), 0);
    h.msg(1, retained(1, 2, "t2"), 0);
    let a = h.msg(1, retained(1, 3, "t3"), 0);
    assert_eq!(
        (stored(&a), unstored(&a)),
        (vec!["t3".into()], vec!["t1".into()])
    );
    // The evicted version pushed back by a peer is not taken again.
    let back = h.frame(2, Frame::Entries(vec![retained(1, 1, "t1")]), 1);
    assert!(back.is_empty());
}

#[test]
fn the_next_deadline_is_the_earliest_expiry() {
    let mut h = Harness::new();
    assert_eq!(h.core.next_deadline(), None);
    let mut long = retained(1, 0, "long");
    long.ttl_ms = 5000;
    let mut short = retained(1, 1, "short");
    short.ttl_ms = 2000;
    h.msg(1, long, 0);
    h.msg(1, short, 0);
    assert_eq!(h.core.next_deadline(), Some(WALL + 1 + 2000));
}

#[test]
fn an_entry_expires_at_its_deadline_not_before() {
    let mut h = Harness::new();
    let mut a = retained(1, 0, "a");
    a.ttl_ms = 1000;
    let mut b = retained(1, 1, "b");
    b.ttl_ms = 3000;
    h.msg(1, a, 0);
    h.msg(1, b, 0);
    assert!(h.handle(DataInput::Deadline, 999).is_empty());
    assert_eq!(unstored(&h.handle(DataInput::Deadline, 1000)), ["a"]);
    assert_eq!(h.core.next_deadline(), Some(WALL + 1 + 3000));
    assert_eq!(h.live_topics(1000), ["b"]);
    assert_eq!(unstored(&h.handle(DataInput::Deadline, 3001)), ["b"]);
    assert_eq!(h.core.next_deadline(), None);
}

#[test]
fn an_earlier_deadline_rearms_the_driver_and_a_later_one_does_not() {
    let mut h = Harness::new();
    let rearms = |a: &[DataAction]| a.iter().filter(|a| **a == DataAction::Rearm).count();
    let mut first = retained(1, 1, "a");
    first.ttl_ms = 5000;
    assert_eq!(rearms(&h.msg(1, first, 0)), 1);
    let mut later = retained(1, 2, "b");
    later.ttl_ms = 9000;
    assert_eq!(rearms(&h.msg(1, later, 0)), 0);
    let mut sooner = retained(1, 3, "c");
    sooner.ttl_ms = 100;
    assert_eq!(rearms(&h.msg(1, sooner, 0)), 1);
    assert_eq!(rearms(&h.msg(1, retained(1, 4, "d"), 0)), 0);
}

#[test]
fn a_tombstone_expires_after_its_lifetime() {
    let mut h = Harness::new();
    let mut del = retained(1, 0, "t");
    del.tombstone = true;
    h.msg(1, del, 0);
    assert_eq!(h.core.next_deadline(), Some(WALL + TOMBSTONE_TTL_MS));
    assert_eq!(
        unstored(&h.handle(DataInput::Deadline, TOMBSTONE_TTL_MS)),
        ["t"]
    );
    assert_eq!(h.core.retained().tombstones(), 0);
}

#[test]
fn the_sync_tick_drops_what_expired_too() {
    let mut h = Harness::new();
    let mut a = retained(1, 0, "a");
    a.ttl_ms = 10;
    h.msg(1, a, 0);
    assert_eq!(unstored(&h.handle(DataInput::SyncTick, 10_000)), ["a"]);
}

#[test]
fn an_entry_expired_on_arrival_is_neither_stored_nor_delivered() {
    let mut h = Harness::new();
    let mut a = retained(1, 0, "a");
    a.ttl_ms = 10;
    let got = h.frame(2, Frame::Entries(vec![a]), 500);
    assert!(got.is_empty(), "{got:?}");
}

#[test]
fn our_own_entry_from_a_lost_past_skips_our_sequence_past_it() {
    let mut h = Harness::new();
    let mine = retained(ME[0], 500, "t");
    let a = h.frame(1, Frame::Entries(vec![mine]), 0);
    // Stored, but not delivered: it is ours.
    assert_eq!((stored(&a).len(), delivered(&a).len()), (1, 0));
    assert_eq!(h.publish(local("u", false), 1).0.unwrap().seq, 501);
}

#[test]
fn our_own_entry_far_past_the_lease_renews_it() {
    let mut h = Harness::new();
    let mut mine = retained(ME[0], 3 * SEQ_LEASE, "t");
    mine.hlc = WALL << 16;
    let a = h.frame(1, Frame::Entries(vec![mine]), 0);
    assert_eq!(a[0], DataAction::Lease(3 * SEQ_LEASE + 1 + SEQ_LEASE));
    assert_eq!(
        h.publish(local("u", false), 1).0.unwrap().seq,
        3 * SEQ_LEASE + 1
    );
}

#[test]
fn an_entry_after_its_live_copy_is_not_delivered_twice() {
    let mut h = Harness::new();
    h.msg(1, retained(1, 1, "t"), 0);
    assert!(h
        .frame(2, Frame::Entries(vec![retained(1, 1, "t")]), 1)
        .is_empty());
    // A newer entry by sync is delivered once, and its live copy after is dropped.
    let a = h.frame(2, Frame::Entries(vec![retained(1, 2, "t")]), 2);
    assert_eq!(delivered(&a), [(1, 2)]);
    assert!(h.msg(1, retained(1, 2, "t"), 3).is_empty());
}

#[test]
fn a_retained_publish_is_stored_between_broadcast_and_delivery() {
    let mut h = Harness::new();
    let (_, a) = h.publish(local("t", true), 0);
    assert!(matches!(
        a.as_slice(),
        [
            DataAction::Broadcast(_),
            DataAction::Store(_),
            DataAction::Deliver(_)
        ]
    ));
    assert_eq!(h.live_topics(0), ["t"]);
}

#[test]
fn loaded_entries_are_kept_and_move_the_clock() {
    let base = Instant::now();
    let now = Now {
        at: base,
        wall_ms: WALL,
    };
    let mut old = retained(ME[0], 1, "t");
    old.hlc = (WALL + 20_000) << 16;
    let loaded_hlc = old.hlc;
    let rates = Rates {
        publish: 10,
        peer: 10,
    };
    let mut core = DataCore::new(ME, rates, 1 << 20, vec![old], 7, now);
    assert_eq!(core.retained().live(), 1);
    let mut out = Actions::new();
    let p = core.publish(local("u", false), now, &mut out).unwrap();
    assert_eq!(p.seq, 7);
    assert!(p.hlc > loaded_hlc);
}

//! Live messages: dedup, forwarding, the hop limit, rates, publishing.

use super::*;

#[test]
fn a_new_message_is_delivered_once() {
    let mut h = Harness::new();
    h.links(&[1]);
    let a = h.msg(1, msg(1, 5, "t"), 0);
    assert_eq!(delivered(&a), [(1, 5)]);
    assert!(
        h.msg(1, msg(1, 5, "t"), 1).is_empty(),
        "a duplicate is dropped"
    );
}

#[test]
fn a_late_message_is_taken_once_and_one_older_than_the_window_dropped() {
    // Links send by priority class: a later urgent message may overtake this one.
    let mut h = Harness::new();
    h.msg(1, msg(1, 5000, "t"), 0);
    assert_eq!(delivered(&h.msg(1, msg(1, 4999, "t"), 1)), [(1, 4999)]);
    assert!(h.msg(1, msg(1, 4999, "t"), 1).is_empty());
    let too_old = 5000 - crate::data::route::SEEN_WINDOW;
    assert!(h.msg(1, msg(1, too_old, "t"), 1).is_empty());
    assert_eq!(delivered(&h.msg(1, msg(1, 5001, "t"), 2)), [(1, 5001)]);
}

#[test]
fn our_own_message_coming_back_is_dropped() {
    let mut h = Harness::new();
    h.links(&[1, 2]);
    assert!(h.msg(1, msg(ME[0], 1, "t"), 0).is_empty());
}

#[test]
fn a_clock_too_far_ahead_is_refused_and_not_marked_seen() {
    let mut h = Harness::new();
    let mut far = msg(1, 5, "t");
    far.hlc = (WALL + 61_000) << 16;
    let a = h.msg(1, far, 0);
    assert_eq!((rejects(&a), delivered(&a).len()), (1, 0));
    // The same sequence number with a sane clock is still new.
    assert_eq!(delivered(&h.msg(1, msg(1, 5, "t"), 1)), [(1, 5)]);
}

#[test]
fn a_full_mesh_does_not_forward() {
    let mut h = Harness::new();
    h.links(&[1, 2, 3]);
    h.frame(1, Frame::Neighbours(vec![ME, id(2), id(3)]), 0);
    let a = h.msg(1, msg(1, 1, "t"), 1);
    assert!(forwards(&a).is_empty());
    assert_eq!(delivered(&a), [(1, 1)]);
}

#[test]
fn a_bridge_forwards_to_the_other_side_with_one_more_hop() {
    // 1 - ME - 3: 1's only neighbour is us.
    let mut h = Harness::new();
    h.links(&[1, 3]);
    h.frame(1, Frame::Neighbours(vec![ME]), 0);
    let a = h.msg(1, msg(1, 1, "t"), 1);
    assert_eq!(forwards(&a), [(vec![3], 1)]);
    // Forwarded before it is delivered.
    assert!(matches!(a.last(), Some(DataAction::Deliver(_))));
}

#[test]
fn a_forward_shares_the_payload_buffer() {
    let mut h = Harness::new();
    h.links(&[1, 3]);
    let m = msg(1, 1, "t");
    let ptr = m.payload.as_ptr();
    let a = h.msg(1, m, 0);
    let fwd = a.iter().find_map(|a| match a {
        DataAction::Forward { msg, .. } => Some(msg),
        _ => None,
    });
    assert_eq!(fwd.map(|m| m.payload.as_ptr()), Some(ptr));
}

#[test]
fn nothing_goes_back_to_the_publisher_or_the_sender() {
    let mut h = Harness::new();
    h.links(&[1, 2]);
    // From 2, published by 1, 2 announced nobody: still neither 1 nor 2.
    let a = h.msg(2, msg(1, 1, "t"), 0);
    assert!(forwards(&a).is_empty());
}

#[test]
fn a_sender_that_announced_nothing_gets_forwarded_to_all_others() {
    let mut h = Harness::new();
    h.links(&[1, 2, 3]);
    let a = h.msg(1, msg(1, 1, "t"), 0);
    assert_eq!(forwards(&a), [(vec![2, 3], 1)]);
}

#[test]
fn the_hop_limit_ends_forwarding_but_not_delivery() {
    let mut h = Harness::new();
    h.links(&[1, 3]);
    let mut m = msg(1, 1, "t");
    m.hops = MAX_HOPS;
    let a = h.msg(1, m, 0);
    assert!(forwards(&a).is_empty());
    assert_eq!(delivered(&a), [(1, 1)]);
    let mut m = msg(1, 2, "t");
    m.hops = MAX_HOPS - 1;
    assert_eq!(forwards(&h.msg(1, m, 1)), [(vec![3], MAX_HOPS)]);
}

#[test]
fn a_copy_from_a_second_path_is_neither_forwarded_nor_delivered() {
    let mut h = Harness::new();
    h.links(&[1, 2, 3]);
    h.msg(1, msg(1, 1, "t"), 0);
    assert!(h.msg(2, msg(1, 1, "t"), 1).is_empty());
}

#[test]
fn a_neighbour_announcement_changes_the_forwarding() {
    let mut h = Harness::new();
    h.links(&[1, 3]);
    h.frame(1, Frame::Neighbours(vec![ME, id(3)]), 0);
    assert!(forwards(&h.msg(1, msg(1, 1, "t"), 1)).is_empty());
    // 1 lost its link to 3: we are the bridge now.
    h.frame(1, Frame::Neighbours(vec![ME]), 2);
    assert_eq!(forwards(&h.msg(1, msg(1, 2, "t"), 3)), [(vec![3], 1)]);
}

#[test]
fn a_peer_over_its_rate_is_refused_and_the_others_are_not() {
    let mut h = Harness::with(
        Rates {
            publish: 1000,
            peer: 2,
        },
        1 << 20,
    );
    assert_eq!(delivered(&h.msg(1, msg(1, 1, "t"), 0)).len(), 1);
    assert_eq!(delivered(&h.msg(1, msg(1, 2, "t"), 0)).len(), 1);
    let a = h.msg(1, msg(1, 3, "t"), 0);
    assert_eq!((rejects(&a), delivered(&a).len()), (1, 0));
    assert_eq!(delivered(&h.msg(2, msg(2, 1, "t"), 0)).len(), 1);
    // A second later its bucket has refilled; the refused number was not marked seen.
    assert_eq!(delivered(&h.msg(1, msg(1, 3, "t"), 1000)), [(1, 3)]);
}

#[test]
fn a_publish_goes_out_once_and_to_the_local_subscribers_as_one_message() {
    let mut h = Harness::new();
    let (p, a) = h.publish(local("t", false), 0);
    let p = p.unwrap();
    assert_eq!(a.len(), 2);
    match (&a[0], &a[1]) {
        (DataAction::Broadcast(b), DataAction::Deliver(d)) => {
            assert!(Arc::ptr_eq(b, d));
            assert_eq!((b.publisher, b.seq, b.hlc, b.hops), (ME, p.seq, p.hlc, 0));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn publishes_take_growing_sequence_numbers_and_clocks() {
    let mut h = Harness::new();
    let a = h.publish(local("t", false), 0).0.unwrap();
    let b = h.publish(local("t", false), 0).0.unwrap();
    assert_eq!((a.seq, b.seq), (1, 2));
    assert!(b.hlc > a.hlc);
    assert_eq!(crate::data::hlc::physical_ms(a.hlc), WALL);
}

#[test]
fn publishing_over_the_host_rate_is_refused_without_taking_a_number() {
    let mut h = Harness::with(
        Rates {
            publish: 2,
            peer: 1000,
        },
        1 << 20,
    );
    h.publish(local("t", false), 0).0.unwrap();
    h.publish(local("t", false), 0).0.unwrap();
    let (p, a) = h.publish(local("t", false), 0);
    assert!(p.is_none() && a.is_empty());
    assert_eq!(h.publish(local("t", false), 1000).0.unwrap().seq, 3);
}

#[test]
fn a_publish_past_half_the_lease_renews_it_first() {
    let mut h = Harness::new();
    h.core.set_next_seq(1 + SEQ_LEASE / 2);
    let (p, a) = h.publish(local("t", false), 0);
    let seq = p.unwrap().seq;
    assert_eq!(a[0], DataAction::Lease(seq + SEQ_LEASE));
    assert!(matches!(a[1], DataAction::Broadcast(_)));
    // Renewed once, not on every publish after.
    let (_, a) = h.publish(local("t", false), 0);
    assert!(!a.iter().any(|a| matches!(a, DataAction::Lease(_))));
}

#[test]
fn the_clock_moves_past_a_remote_time() {
    let mut h = Harness::new();
    let mut m = msg(1, 1, "t");
    m.hlc = (WALL + 30_000) << 16;
    let remote = m.hlc;
    h.msg(1, m, 0);
    let p = h.publish(local("t", false), 0).0.unwrap();
    assert!(p.hlc > remote);
}

#[test]
fn junk_on_a_system_topic_is_refused_live_and_by_anti_entropy() {
    // The default gate has no authority: nothing on `_peat/` verifies.
    let mut h = Harness::new();
    h.links(&[1, 2]);
    let live = h.msg(1, retained(1, 5, "_peat/revocations"), 0);
    assert_eq!((rejects(&live), live.len()), (1, 1), "{live:?}");
    let pushed = h.frame(
        1,
        Frame::Entries(vec![retained(1, 6, "_peat/revocations")]),
        1,
    );
    assert_eq!((rejects(&pushed), stored(&pushed).len()), (1, 0));
    assert!(h.live_topics(2).is_empty());
    // App topics pass.
    assert_eq!(delivered(&h.msg(1, msg(1, 7, "t"), 2)), [(1, 7)]);
}

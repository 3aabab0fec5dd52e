//! Links coming and going, neighbour announcements, and anti-entropy: digest and root
//! due, versions and entries answered, two cores converging.

use super::*;

fn digest_of(h: &Harness) -> Vec<u64> {
    h.core.retained().digest()
}

#[test]
fn a_link_up_announces_our_neighbours_and_sends_our_digest() {
    let mut h = Harness::new();
    let a = h.handle(DataInput::LinkUp(id(1)), 0);
    let s = sends(&a);
    assert_eq!(s.len(), 2);
    assert_eq!(s[0], (vec![1], &Frame::Neighbours(vec![id(1)])));
    assert_eq!(s[1], (vec![1], &Frame::Digest(digest_of(&h))));
}

#[test]
fn a_second_link_is_announced_to_both_peers() {
    let mut h = Harness::new();
    h.links(&[1]);
    let a = h.handle(DataInput::LinkUp(id(2)), 0);
    assert_eq!(
        sends(&a)[0],
        (vec![1, 2], &Frame::Neighbours(vec![id(1), id(2)]))
    );
}

#[test]
fn a_link_down_is_announced_to_the_others() {
    let mut h = Harness::new();
    h.links(&[1, 2]);
    let a = h.handle(DataInput::LinkDown(id(1)), 0);
    assert_eq!(sends(&a), [(vec![2], &Frame::Neighbours(vec![id(2)]))]);
    // The last link going says nothing to nobody; an unknown one changes nothing.
    assert!(h.handle(DataInput::LinkDown(id(2)), 0).is_empty());
    assert!(h.handle(DataInput::LinkDown(id(7)), 0).is_empty());
}

#[test]
fn a_link_down_forgets_what_the_peer_announced() {
    let mut h = Harness::new();
    h.links(&[1, 3]);
    h.frame(1, Frame::Neighbours(vec![ME, id(3)]), 0);
    assert!(forwards(&h.msg(1, msg(1, 1, "t"), 0)).is_empty());
    h.handle(DataInput::LinkDown(id(1)), 0);
    h.links(&[1]);
    // Its old set no longer spares 3: until it announces again, 3 gets forwards.
    assert_eq!(forwards(&h.msg(1, msg(1, 2, "t"), 1)), [(vec![3], 1)]);
}

#[test]
fn nothing_is_forwarded_to_a_peer_without_a_link() {
    let mut h = Harness::new();
    h.links(&[1]);
    // 5 announces itself, but we hold no link to it.
    h.frame(5, Frame::Neighbours(vec![ME]), 0);
    assert!(forwards(&h.msg(1, msg(1, 1, "t"), 0)).is_empty());
}

#[test]
fn an_unchanged_digest_is_not_sent_again() {
    let mut h = Harness::new();
    h.links(&[1]);
    assert!(h.handle(DataInput::SyncTick, 10_000).is_empty());
}

#[test]
fn a_changed_digest_is_due_at_the_next_tick() {
    let mut h = Harness::new();
    h.links(&[1, 2]);
    h.publish(local("t", true), 1);
    let a = h.handle(DataInput::SyncTick, 10_000);
    let d = Frame::Digest(digest_of(&h));
    assert_eq!(sends(&a), [(vec![1], &d), (vec![2], &d)]);
    assert!(h.handle(DataInput::SyncTick, 20_000).is_empty());
}

#[test]
fn the_root_hash_is_due_after_a_long_quiet() {
    let mut h = Harness::new();
    h.links(&[1]);
    let quiet = ROOT_EVERY.as_millis() as u64;
    assert!(h.handle(DataInput::SyncTick, quiet - 1).is_empty());
    let a = h.handle(DataInput::SyncTick, quiet);
    let root = crate::data::sync::root_of(&digest_of(&h));
    assert_eq!(sends(&a), [(vec![1], &Frame::Root(root))]);
    assert!(h.handle(DataInput::SyncTick, quiet + 10_000).is_empty());
}

#[test]
fn a_different_root_is_answered_with_our_digest_and_the_same_with_nothing() {
    let mut h = Harness::new();
    h.links(&[1]);
    let ours = crate::data::sync::root_of(&digest_of(&h));
    assert!(h.frame(1, Frame::Root(ours), 0).is_empty());
    let a = h.frame(1, Frame::Root(ours ^ 1), 0);
    assert_eq!(sends(&a), [(vec![1], &Frame::Digest(digest_of(&h)))]);
}

#[test]
fn a_digest_that_differs_is_answered_with_our_versions_there() {
    let mut h = Harness::new();
    h.msg(2, retained(2, 1, "t"), 0);
    assert!(h.frame(1, Frame::Digest(digest_of(&h)), 0).is_empty());
    let a = h.frame(1, Frame::Digest(vec![0; 256]), 0);
    let s = sends(&a);
    assert_eq!(s.len(), 1);
    match &s[0] {
        (to, Frame::Versions { buckets, versions }) => {
            assert_eq!(*to, vec![1u8]);
            assert_eq!(buckets.len(), 1);
            assert_eq!(versions[0].topic, "t");
            assert_eq!(versions[0].publisher, id(2));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn versions_are_answered_with_what_is_newer_or_missing_on_their_side() {
    let mut h = Harness::new();
    h.msg(2, retained(2, 5, "newer"), 0);
    h.msg(2, retained(2, 6, "missing"), 0);
    h.msg(2, retained(2, 7, "same"), 0);
    let v = |topic: &str, seq: u64| Version {
        topic: topic.into(),
        key: String::new(),
        hlc: (WALL + seq) << 16,
        publisher: id(2),
    };
    let buckets: Vec<u8> = (0..=255).collect();
    let theirs = vec![v("newer", 1), v("same", 7)];
    let a = h.frame(
        1,
        Frame::Versions {
            buckets,
            versions: theirs,
        },
        0,
    );
    let mut topics: Vec<String> = sends(&a)
        .iter()
        .flat_map(|(_, f)| match f {
            Frame::Entries(ms) => ms.iter().map(|m| m.topic.clone()).collect(),
            _ => vec![],
        })
        .collect();
    topics.sort();
    assert_eq!(topics, ["missing", "newer"]);
}

#[test]
fn a_link_down_stops_the_rounds_to_that_peer() {
    let mut h = Harness::new();
    h.links(&[1, 2]);
    h.handle(DataInput::LinkDown(id(1)), 0);
    h.publish(local("t", true), 1);
    let a = h.handle(DataInput::SyncTick, 10_000);
    assert_eq!(
        sends(&a)
            .iter()
            .map(|(to, _)| to.clone())
            .collect::<Vec<_>>(),
        [vec![2]]
    );
}

/// Passes every frame one core sends to `to` into the other, until both are quiet.
fn exchange(a: &mut Harness, b: &mut Harness, a_id: u8, b_id: u8) {
    let mut to_b: Vec<Frame> = vec![];
    let mut to_a: Vec<Frame> = vec![];
    let pick = |actions: Vec<DataAction>, dst: u8, q: &mut Vec<Frame>| {
        for act in actions {
            if let DataAction::Send { to, frame } = act {
                if to.contains(&id(dst)) {
                    q.push(frame);
                }
            }
        }
    };
    pick(a.handle(DataInput::LinkUp(id(b_id)), 0), b_id, &mut to_b);
    pick(b.handle(DataInput::LinkUp(id(a_id)), 0), a_id, &mut to_a);
    for _ in 0..10 {
        if to_a.is_empty() && to_b.is_empty() {
            return;
        }
        for f in std::mem::take(&mut to_b) {
            pick(b.frame(a_id, f, 1), a_id, &mut to_a);
        }
        for f in std::mem::take(&mut to_a) {
            pick(a.frame(b_id, f, 1), b_id, &mut to_b);
        }
    }
    panic!("the exchange did not end");
}

#[test]
fn two_cores_converge_after_a_link_comes_up() {
    let mut a = Harness::new();
    let mut b = Harness::new();
    for i in 0..30 {
        a.msg(7, retained(7, 1 + i, &format!("a/{i}")), 0);
        b.msg(8, retained(8, 1 + i, &format!("b/{i}")), 0);
    }
    // A write to a shared key on both sides: the later one wins everywhere.
    a.msg(7, retained(7, 100, "shared"), 0);
    b.msg(8, retained(8, 200, "shared"), 0);
    exchange(&mut a, &mut b, 1, 2);
    assert_eq!(digest_of(&a), digest_of(&b));
    assert_eq!(a.core.retained().live(), 61);
    let shared = a
        .core
        .retained()
        .matching(&Pattern::parse("shared").unwrap(), WALL);
    assert_eq!(shared[0].publisher, id(8));
}

//! Signed origins: what we sign, and what we take from whom.

use iroh::SecretKey;

use super::*;
use crate::data::origin::{sign, OriginCheck};

/// A core that signs with a key of its own and checks origins strictly (its id is the
/// key's, not [`ME`]).
fn strict() -> Harness {
    let mut h = Harness::new();
    let core = std::mem::replace(&mut h.core, Harness::new().core);
    h.core = core.with_signer(SecretKey::generate(), OriginCheck::Strict);
    h
}

fn me(h: &Harness) -> Id {
    h.core.me
}

/// A publisher with a real key, and a message of it signed or not.
struct Publisher(SecretKey);

impl Publisher {
    fn new() -> Self {
        Publisher(SecretKey::generate())
    }

    fn id(&self) -> Id {
        *self.0.public().as_bytes()
    }

    fn msg(&self, seq: u64, retain: bool, signed: bool) -> Message {
        let mut m = msg(0, seq, "t");
        m.publisher = self.id();
        m.retain = retain;
        if signed {
            m.sig = Some(sign(&self.0, &m));
        }
        m
    }
}

fn count(actions: &[DataAction], what: fn(&DataAction) -> bool) -> usize {
    actions.iter().filter(|a| what(a)).count()
}

fn forged(a: &[DataAction]) -> usize {
    count(a, |a| matches!(a, DataAction::Forged))
}

fn delivered_n(a: &[DataAction]) -> usize {
    count(a, |a| matches!(a, DataAction::Deliver(_)))
}

fn broadcast_signed(a: &[DataAction]) -> Option<bool> {
    a.iter().find_map(|a| match a {
        DataAction::Broadcast(m) => Some(m.sig.is_some()),
        _ => None,
    })
}

#[test]
fn retained_messages_are_always_signed_and_verify() {
    let mut h = strict();
    h.links(&[1]);
    let (_, a) = h.publish(local("t", true), 0);
    let Some(DataAction::Broadcast(m)) = a.iter().find(|a| matches!(a, DataAction::Broadcast(_)))
    else {
        panic!("no broadcast: {a:?}")
    };
    let sig = m.sig.expect("a retained message is signed");
    assert!(crate::data::origin::verify(m, &sig));
    assert_eq!(count(&a, |a| matches!(a, DataAction::Signed)), 1);
    assert!(stored(&a).contains(&"t".to_string()));
}

#[test]
fn live_messages_are_signed_only_while_a_peer_may_forward_them() {
    let mut h = strict();
    h.links(&[1, 2]);
    // Peers that announced nothing yet may forward to anyone.
    assert_eq!(
        broadcast_signed(&h.publish(local("t", false), 0).1),
        Some(true)
    );
    let me = me(&h);
    h.frame(1, Frame::Neighbours(vec![me, id(2)]), 0);
    h.frame(2, Frame::Neighbours(vec![me, id(1)]), 0);
    assert_eq!(
        broadcast_signed(&h.publish(local("t", false), 1).1),
        Some(false)
    );
    // Peer 2 now reaches node 3, which we do not: it would forward to it.
    h.frame(2, Frame::Neighbours(vec![me, id(1), id(3)]), 2);
    assert_eq!(
        broadcast_signed(&h.publish(local("t", false), 3).1),
        Some(true)
    );
    // Once we link to 3 too, the mesh is full again.
    h.links(&[3]);
    h.frame(3, Frame::Neighbours(vec![me, id(1), id(2)]), 4);
    assert_eq!(
        broadcast_signed(&h.publish(local("t", false), 5).1),
        Some(false)
    );
}

#[test]
fn straight_from_the_publisher_no_signature_is_needed() {
    let mut h = strict();
    let p = Publisher::new();
    let mut out = Actions::new();
    let from = p.id();
    h.core.handle(
        DataInput::Frame {
            from,
            frame: Frame::Msg(p.msg(1, false, false)),
        },
        h.now(0),
        &mut out,
    );
    assert_eq!((delivered_n(&out), forged(&out)), (1, 0));
}

#[test]
fn from_a_third_node_only_a_good_signature_passes() {
    let mut h = strict();
    let p = Publisher::new();
    let a = h.msg(2, p.msg(1, false, false), 0);
    assert_eq!((delivered_n(&a), forged(&a), rejects(&a)), (0, 1, 0));
    let mut bad = p.msg(2, false, true);
    bad.payload = bytes::Bytes::from_static(b"changed on the way");
    let a = h.msg(2, bad, 1);
    assert_eq!((delivered_n(&a), forged(&a)), (0, 1));
    // Signed by someone else with the publisher's id on it.
    let rogue = Publisher::new();
    let mut forged_id = rogue.msg(3, false, false);
    forged_id.publisher = p.id();
    forged_id.sig = Some(sign(&rogue.0, &forged_id));
    assert_eq!(forged(&h.msg(2, forged_id, 2)), 1);
    let a = h.msg(2, p.msg(4, false, true), 3);
    assert_eq!((delivered_n(&a), forged(&a)), (1, 0));
}

#[test]
fn a_replayed_signed_message_is_dropped() {
    let mut h = strict();
    let p = Publisher::new();
    let m = p.msg(7, false, true);
    assert_eq!(delivered_n(&h.msg(2, m.clone(), 0)), 1);
    assert!(h.msg(3, m.clone(), 1).is_empty());
    // An older message we never had may still be new to us; its replay is not.
    let older = p.msg(6, false, true);
    h.msg(3, older.clone(), 2);
    assert!(h.msg(2, older, 3).is_empty());
}

#[test]
fn entries_from_a_third_node_need_the_publishers_signature() {
    let mut h = strict();
    let p = Publisher::new();
    let a = h.frame(2, Frame::Entries(vec![p.msg(1, true, false)]), 0);
    assert_eq!((stored(&a).len(), forged(&a)), (0, 1));
    let a = h.frame(2, Frame::Entries(vec![p.msg(1, true, true)]), 1);
    assert_eq!((stored(&a).len(), delivered_n(&a), forged(&a)), (1, 1, 0));
    // A signed delete of it replayed after a newer value is stale.
    let mut newer = p.msg(3, true, true);
    newer.hlc += 10;
    newer.sig = Some(sign(&p.0, &newer));
    h.frame(2, Frame::Entries(vec![newer]), 2);
    let mut old_delete = p.msg(2, true, false);
    old_delete.tombstone = true;
    old_delete.payload = bytes::Bytes::new();
    old_delete.sig = Some(sign(&p.0, &old_delete));
    let a = h.frame(3, Frame::Entries(vec![old_delete]), 3);
    assert!(stored(&a).is_empty());
    assert_eq!(h.live_topics(3), ["t"]);
}

#[test]
fn permissive_takes_unsigned_but_never_a_bad_signature() {
    let mut h = Harness::new();
    let core = std::mem::replace(&mut h.core, Harness::new().core);
    h.core = core.with_signer(SecretKey::generate(), OriginCheck::Permissive);
    let p = Publisher::new();
    let a = h.msg(2, p.msg(1, false, false), 0);
    let unsigned = count(&a, |a| matches!(a, DataAction::Unsigned));
    assert_eq!((delivered_n(&a), unsigned), (1, 1));
    let mut bad = p.msg(2, false, true);
    bad.seq = 3;
    assert_eq!(forged(&h.msg(2, bad, 1)), 1);
}

#[test]
fn a_signature_arriving_for_an_unsigned_copy_is_kept_not_delivered_again() {
    let mut h = Harness::new();
    let p = Publisher::new();
    let unsigned = p.msg(1, true, false);
    let a = h.frame(2, Frame::Entries(vec![unsigned]), 0);
    assert_eq!(delivered_n(&a), 1);
    let a = h.frame(3, Frame::Entries(vec![p.msg(1, true, true)]), 1);
    assert_eq!((stored(&a).len(), delivered_n(&a)), (1, 0));
    let key = ("t".to_string(), String::new());
    assert!(h.core.retained().get(&key).unwrap().sig.is_some());
}

#[test]
fn our_unsigned_entries_from_an_older_version_are_signed_at_start() {
    let key = SecretKey::generate();
    let mine = *key.public().as_bytes();
    let mut m = retained(0, 1, "t");
    m.publisher = mine;
    let now = Harness::new().now(0);
    let rates = Rates {
        publish: 10,
        peer: 10,
    };
    let core =
        DataCore::new(mine, rates, 1 << 20, vec![m], 2, now).with_signer(key, OriginCheck::Strict);
    let k = ("t".to_string(), String::new());
    let e = core.retained().get(&k).unwrap();
    assert!(crate::data::origin::verify(e, &e.sig.unwrap()));
}

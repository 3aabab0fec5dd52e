//! Signed origins: who published a message, proven to nodes that did not get it from
//! the publisher itself.
//!
//! A message that arrives straight from its publisher rides a connection whose TLS key
//! is the publisher's endpoint id, so the link proves the origin. Anything else (a
//! message forwarded across a bridge, a retained entry or a delete pushed by
//! anti-entropy from a third node) carries the publisher's Ed25519 signature, made with
//! its endpoint key (iroh's `SecretKey::sign`, no cryptography of our own), over every
//! field but the hop count, which forwarders raise.
//!
//! Signing costs some 20 µs per message, so a publisher signs only what may travel
//! beyond its own links: every retained message (anti-entropy serves it from any node),
//! and live messages while a peer of ours announces a neighbour we are not linked to
//! (it would forward them). On a full mesh nobody forwards and live messages go
//! unsigned. Replays need no state of their own: a live message at or below the
//! publisher's last sequence number is dropped as a duplicate, and a retained entry no
//! newer than the stored version is stale.

use std::{
    collections::{BTreeSet, HashSet},
    sync::Arc,
    time::Instant,
};

use iroh::{PublicKey, SecretKey, Signature};
use serde::Serialize;
use tracing::info;

use super::wire::{Id, Message, Sig};
use crate::ratelimit::RateLog;

/// Bound into every signed message: a signature made for something else (a member
/// certificate, a revocation) never passes for a message.
const CONTEXT: &[u8] = b"peat-sidecar/message/1";

/// Whether a message that did not come from its publisher must carry its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OriginCheck {
    /// Unsigned messages from a third node are refused (counted as rejected).
    #[default]
    Strict,
    /// Unsigned messages from a third node are taken (counted as unsigned): only while
    /// a formation is upgraded from a version that did not sign. A signature that is
    /// present and wrong is refused in both modes.
    Permissive,
}

impl std::fmt::Display for OriginCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OriginCheck::Strict => "strict",
            OriginCheck::Permissive => "permissive",
        })
    }
}

/// What the receiver makes of a message's origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// From its publisher, or signed by it.
    Proven,
    /// From a third node without a signature, taken in permissive mode.
    Unsigned,
    /// From a third node without a signature in strict mode, or with a bad signature.
    Refused,
}

/// The fields a signature covers, borrowed: everything but the hop count and the
/// signature itself.
#[derive(Serialize)]
struct Signed<'a> {
    context: &'a [u8],
    publisher: &'a Id,
    seq: u64,
    hlc: u64,
    topic: &'a str,
    key: &'a str,
    payload: &'a [u8],
    retain: bool,
    ttl_ms: u64,
    tombstone: bool,
}

fn signed_bytes(m: &Message) -> Vec<u8> {
    let s = Signed {
        context: CONTEXT,
        publisher: &m.publisher,
        seq: m.seq,
        hlc: m.hlc,
        topic: &m.topic,
        key: &m.key,
        payload: &m.payload,
        retain: m.retain,
        ttl_ms: m.ttl_ms,
        tombstone: m.tombstone,
    };
    // Encoding borrowed strings, bytes and integers into a Vec cannot fail.
    postcard::to_stdvec(&s).unwrap_or_default()
}

/// The publisher's signature over `m`.
pub fn sign(key: &SecretKey, m: &Message) -> Sig {
    key.sign(&signed_bytes(m)).to_bytes()
}

/// Whether `sig` is `m`'s publisher's signature over it.
pub fn verify(m: &Message, sig: &Sig) -> bool {
    let Ok(publisher) = PublicKey::from_bytes(&m.publisher) else {
        return false;
    };
    publisher
        .verify(&signed_bytes(m), &Signature::from_bytes(sig))
        .is_ok()
}

/// The receiver's judgement of `m`, which arrived from `from`. Straight from its
/// publisher the link proves the origin, but a retained message's signature is checked
/// all the same when it has one: it is stored and served to others later, and a bad one
/// would be refused by each of them at every round of anti-entropy.
pub fn judge(from: &Id, m: &Message, mode: OriginCheck) -> Verdict {
    if *from == m.publisher {
        return match &m.sig {
            Some(sig) if m.retain && !verify(m, sig) => Verdict::Refused,
            _ => Verdict::Proven,
        };
    }
    match (&m.sig, mode) {
        (Some(sig), _) if verify(m, sig) => Verdict::Proven,
        (Some(_), _) | (None, OriginCheck::Strict) => Verdict::Refused,
        (None, OriginCheck::Permissive) => Verdict::Unsigned,
    }
}

/// The core's part in signed origins: our key, the mode, and whether our live messages
/// may be forwarded now. The default (a core without a key: unit tests of its other
/// transitions) signs and checks nothing, as versions before signed origins.
#[derive(Debug)]
pub struct Provenance {
    /// Without one (unit tests of other parts) nothing is signed.
    key: Option<SecretKey>,
    mode: OriginCheck,
    forwardable: bool,
    /// Refusals, logged at most every 10 s.
    log: RateLog,
}

impl Default for Provenance {
    fn default() -> Self {
        Provenance {
            key: None,
            mode: OriginCheck::Permissive,
            forwardable: false,
            log: RateLog::default(),
        }
    }
}

impl Provenance {
    pub fn new(key: SecretKey, mode: OriginCheck) -> Self {
        Provenance {
            key: Some(key),
            mode,
            forwardable: false,
            log: RateLog::default(),
        }
    }

    pub fn set_forwardable(&mut self, may: bool) {
        self.forwardable = may;
    }

    /// Signs a message of ours that a third node may hand on: every retained one (any
    /// node serves it by anti-entropy), a live one while a peer may forward it. True if
    /// it signed.
    pub fn sign_if_it_may_travel(&self, m: &mut Arc<Message>) -> bool {
        let Some(key) = &self.key else { return false };
        if !(m.retain || self.forwardable) {
            return false;
        }
        let sig = sign(key, m);
        Arc::make_mut(m).sig = Some(sig);
        true
    }

    /// What to make of `m`, from `from`; a refusal is logged at a bounded rate.
    pub fn judge(&mut self, from: &Id, m: &Message, now: Instant) -> Verdict {
        if self.key.is_none() {
            return Verdict::Proven;
        }
        let verdict = judge(from, m, self.mode);
        if verdict == Verdict::Refused {
            if let Some(suppressed) = self.log.hit(now) {
                info!(
                    peer = %hex::encode(&from[..5]),
                    publisher = %hex::encode(&m.publisher[..5]),
                    topic = %m.topic,
                    signed = m.sig.is_some(),
                    suppressed,
                    "message refused: not signed by its publisher"
                );
            }
        }
        verdict
    }
}

/// Whether a live message of ours may be forwarded by a peer: some peer announced a
/// neighbour that is neither us nor one of our links (a peer that announced nothing yet
/// may forward to anyone).
pub fn may_be_forwarded<'a>(
    me: &Id,
    links: &BTreeSet<Id>,
    announced: impl Iterator<Item = Option<&'a HashSet<Id>>>,
) -> bool {
    announced.into_iter().any(|n| match n {
        None => true,
        Some(n) => n.iter().any(|x| x != me && !links.contains(x)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(key: &SecretKey) -> Message {
        let mut m = super::super::wire::tests::msg();
        m.publisher = *key.public().as_bytes();
        m
    }

    #[test]
    fn a_signature_covers_every_field_but_the_hops() {
        let k = SecretKey::generate();
        let m = msg(&k);
        let sig = sign(&k, &m);
        assert!(verify(&m, &sig));
        let mut hopped = m.clone();
        hopped.hops = 3;
        assert!(verify(&hopped, &sig));
        let changes: [fn(&mut Message); 9] = [
            |m| m.publisher[0] ^= 1,
            |m| m.seq += 1,
            |m| m.hlc += 1,
            |m| m.topic.push('x'),
            |m| m.key.push('x'),
            |m| m.payload = bytes::Bytes::from_static(b"other"),
            |m| m.retain = !m.retain,
            |m| m.ttl_ms += 1,
            |m| m.tombstone = !m.tombstone,
        ];
        for change in changes {
            let mut forged = m.clone();
            change(&mut forged);
            assert!(!verify(&forged, &sig), "{forged:?}");
        }
    }

    #[test]
    fn another_key_cannot_sign_for_a_publisher() {
        let honest = SecretKey::generate();
        let rogue = SecretKey::generate();
        let m = msg(&honest);
        assert!(!verify(&m, &sign(&rogue, &m)));
    }

    #[test]
    fn the_receiver_asks_a_signature_only_of_third_nodes() {
        let k = SecretKey::generate();
        let mut m = msg(&k);
        let third = [9u8; 32];
        assert_eq!(
            judge(&m.publisher, &m, OriginCheck::Strict),
            Verdict::Proven
        );
        assert_eq!(judge(&third, &m, OriginCheck::Strict), Verdict::Refused);
        assert_eq!(
            judge(&third, &m, OriginCheck::Permissive),
            Verdict::Unsigned
        );
        m.sig = Some(sign(&k, &m));
        assert_eq!(judge(&third, &m, OriginCheck::Strict), Verdict::Proven);
        // Straight from the publisher, a retained message's bad signature is refused
        // (it would be stored and served on); a live one's does not matter.
        let mut bad = m.clone();
        bad.sig = Some([1; 64]);
        bad.retain = true;
        assert_eq!(
            judge(&bad.publisher, &bad, OriginCheck::Strict),
            Verdict::Refused
        );
        bad.retain = false;
        assert_eq!(
            judge(&bad.publisher, &bad, OriginCheck::Strict),
            Verdict::Proven
        );
        m.payload = bytes::Bytes::from_static(b"forged");
        for mode in [OriginCheck::Strict, OriginCheck::Permissive] {
            assert_eq!(judge(&third, &m, mode), Verdict::Refused);
        }
    }

    #[test]
    fn a_full_mesh_forwards_nothing() {
        let (me, a, b, c) = ([0u8; 32], [1u8; 32], [2u8; 32], [3u8; 32]);
        let links: BTreeSet<Id> = [a, b].into();
        let of_a: HashSet<Id> = [me, b].into();
        let of_b: HashSet<Id> = [me, a].into();
        assert!(!may_be_forwarded(
            &me,
            &links,
            [Some(&of_a), Some(&of_b)].into_iter()
        ));
        let bridge: HashSet<Id> = [me, c].into();
        assert!(may_be_forwarded(
            &me,
            &links,
            [Some(&of_a), Some(&bridge)].into_iter()
        ));
        assert!(may_be_forwarded(
            &me,
            &links,
            [Some(&of_a), None].into_iter()
        ));
    }
}

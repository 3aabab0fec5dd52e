//! The data protocol on the wire: length-prefixed postcard frames on one long-lived
//! stream per direction of each authenticated connection (stream tag
//! [`crate::node::streams::tag::DATA`]).
//!
//! A frame is a u32 big-endian length, then the postcard encoding of [`Frame`]. Every
//! field is bounded and checked by [`Frame::check`] on receipt, before anything is
//! stored or forwarded; a frame that fails closes the stream.

use serde::{Deserialize, Serialize};

use super::topic::{check_key, check_topic, TopicError};

/// Most hops a message travels from its publisher.
pub const MAX_HOPS: u8 = 8;
/// Number of digest buckets (the first byte of an entry's key hash).
pub const BUCKETS: usize = 256;
/// Most endpoint ids in a neighbour announcement.
pub const MAX_NEIGHBOURS: usize = 1024;
/// Most items in one Versions or Entries frame.
pub const MAX_ITEMS: usize = 16_384;
/// Longest TTL accepted (ten years).
pub const MAX_TTL_MS: u64 = 10 * 365 * 24 * 3600 * 1000;
/// Room for everything of a frame besides payloads.
pub const FRAME_OVERHEAD: usize = 64 * 1024;

pub type Id = [u8; 32];
/// An Ed25519 signature (`origin.rs`).
pub type Sig = [u8; 64];

/// The frame format a link speaks: version 1 carries no signatures; version 2 adds
/// [`Frame::Msg2`] and [`Frame::Entries2`], and a node uses it only toward a peer that
/// said it speaks it (`driver.rs`, stream tag [`crate::node::streams::tag::DATA_V2`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireVersion {
    V1,
    V2,
}

/// One published message, as it travels and as it is retained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub publisher: Id,
    pub seq: u64,
    pub hlc: u64,
    /// Links travelled so far (0 from the publisher).
    pub hops: u8,
    pub topic: String,
    /// Empty = no key.
    pub key: String,
    pub payload: bytes::Bytes,
    pub retain: bool,
    /// 0 = no TTL. The entry expires at the HLC's physical time plus this, the same
    /// instant on every node.
    pub ttl_ms: u64,
    /// A delete: retained, no payload, expires after the tombstone lifetime.
    pub tombstone: bool,
    /// The publisher's signature (`origin.rs`), when it made one. Not part of this
    /// struct's encoding, so frames of version 1 and the disk rows of older versions
    /// keep their bytes; it travels in [`Signed`].
    #[serde(skip)]
    pub sig: Option<Sig>,
}

/// A message and its signature, as frames of version 2 carry them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    pub msg: Message,
    #[serde(with = "serde_bytes")]
    pub sig: Option<Sig>,
}

impl Signed {
    pub fn into_message(self) -> Message {
        let mut m = self.msg;
        m.sig = self.sig;
        m
    }
}

/// An entry's version, for anti-entropy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub topic: String,
    pub key: String,
    pub hlc: u64,
    pub publisher: Id,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// The sender's data peers; re-sent on change. Drives the forwarding rule.
    Neighbours(Vec<Id>),
    /// A live message.
    Msg(Message),
    /// Hash of each retained bucket (exactly [`BUCKETS`]).
    Digest(Vec<u64>),
    /// The sender's versions in the listed buckets (those whose hashes differ).
    Versions {
        buckets: Vec<u8>,
        versions: Vec<Version>,
    },
    /// Retained entries the sender has newer than, or missing from, the receiver's
    /// versions.
    Entries(Vec<Message>),
    /// A hash of the sender's whole digest: the cheap periodic check between peers
    /// whose digests have not changed; a receiver whose own differs answers with its
    /// Digest.
    Root(u64),
    /// Version 2: a live message with its publisher's signature, if it made one.
    /// [`decode`] hands it on as [`Frame::Msg`] with the signature in it.
    Msg2(Signed),
    /// Version 2: [`Frame::Entries`] with signatures; decoded as [`Frame::Entries`].
    Entries2(Vec<Signed>),
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame of {0} bytes is larger than the {1}-byte limit")]
    TooLarge(usize, usize),
    #[error("undecodable frame: {0}")]
    Decode(#[from] postcard::Error),
    #[error("bad topic or key: {0}")]
    Topic(#[from] TopicError),
    #[error("payload of {0} bytes is larger than --max-message-bytes ({1})")]
    Payload(usize, usize),
    #[error("{0}")]
    Field(&'static str),
}

/// Limits a receiver applies to frames.
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    pub max_message_bytes: usize,
}

impl FrameLimits {
    pub fn max_frame(&self) -> usize {
        self.max_message_bytes + FRAME_OVERHEAD
    }
}

impl Message {
    pub fn check(&self, limits: &FrameLimits) -> Result<(), WireError> {
        check_topic(&self.topic)?;
        check_key(&self.key)?;
        if self.payload.len() > limits.max_message_bytes {
            return Err(WireError::Payload(
                self.payload.len(),
                limits.max_message_bytes,
            ));
        }
        if self.hops > MAX_HOPS {
            return Err(WireError::Field("hop count above the limit"));
        }
        if self.ttl_ms > MAX_TTL_MS {
            return Err(WireError::Field("ttl above ten years"));
        }
        if self.tombstone && (!self.retain || !self.payload.is_empty()) {
            return Err(WireError::Field("a tombstone must be retained and empty"));
        }
        if self.seq == 0 {
            return Err(WireError::Field("sequence number 0"));
        }
        Ok(())
    }
}

impl Frame {
    pub fn check(&self, limits: &FrameLimits) -> Result<(), WireError> {
        let too_many = |n: usize| {
            if n > MAX_ITEMS {
                Err(WireError::Field("too many items in a frame"))
            } else {
                Ok(())
            }
        };
        match self {
            Frame::Neighbours(ids) if ids.len() > MAX_NEIGHBOURS => {
                Err(WireError::Field("too many neighbours"))
            }
            Frame::Neighbours(_) => Ok(()),
            Frame::Msg(m) | Frame::Msg2(Signed { msg: m, .. }) => m.check(limits),
            Frame::Digest(d) if d.len() != BUCKETS => Err(WireError::Field("digest size")),
            Frame::Digest(_) | Frame::Root(_) => Ok(()),
            Frame::Versions { buckets, versions } => {
                too_many(buckets.len())?;
                too_many(versions.len())?;
                for v in versions {
                    check_topic(&v.topic)?;
                    check_key(&v.key)?;
                }
                Ok(())
            }
            Frame::Entries2(ss) => {
                too_many(ss.len())?;
                ss.iter().try_for_each(|s| s.msg.check_entry(limits))
            }
            Frame::Entries(ms) => {
                too_many(ms.len())?;
                ms.iter().try_for_each(|m| m.check_entry(limits))
            }
        }
    }
}

impl Message {
    /// A retained entry pushed by anti-entropy.
    fn check_entry(&self, limits: &FrameLimits) -> Result<(), WireError> {
        self.check(limits)?;
        if !self.retain {
            return Err(WireError::Field("a non-retained entry"));
        }
        Ok(())
    }
}

/// The frame with its length prefix, for a link of `version`: on version 2, messages
/// go as [`Frame::Msg2`] and [`Frame::Entries2`] with their signatures; on version 1,
/// as before, without.
pub fn encode(frame: &Frame, version: WireVersion) -> Result<Vec<u8>, WireError> {
    match (frame, version) {
        (Frame::Msg(m), _) => encode_msg(m, version),
        (Frame::Entries(ms), WireVersion::V2) => {
            let signed: Vec<SignedRef> = ms.iter().map(SignedRef::of).collect();
            let hint = ms.iter().map(msg_size_hint).sum::<usize>() + 64 * ms.len();
            prefixed(&Variant(ENTRIES2, "Entries2", &signed), hint)
        }
        _ => prefixed(frame, 64),
    }
}

/// `Frame::Msg(m)` with its length prefix, from a borrowed message: the same bytes as
/// [`encode`] gives, without the copy of the payload that building the frame takes
/// (a publish is encoded once for all peers, but a 64 KiB copy is still 64 KiB).
pub fn encode_msg(m: &Message, version: WireVersion) -> Result<Vec<u8>, WireError> {
    match version {
        WireVersion::V1 => prefixed(&Variant(MSG, "Msg", m), msg_size_hint(m)),
        WireVersion::V2 => prefixed(
            &Variant(MSG2, "Msg2", &SignedRef::of(m)),
            msg_size_hint(m) + 66,
        ),
    }
}

/// serde numbers an enum's variants by position (the test
/// `a_borrowed_msg_encodes_like_the_frame` holds these to [`Frame`]'s order).
const MSG: u32 = 1;
const MSG2: u32 = 6;
const ENTRIES2: u32 = 7;

/// One variant of [`Frame`] from borrowed parts.
struct Variant<'a, T: ?Sized>(u32, &'static str, &'a T);

impl<T: Serialize + ?Sized> Serialize for Variant<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_variant("Frame", self.0, self.1, self.2)
    }
}

/// [`Signed`], borrowed.
#[derive(Serialize)]
struct SignedRef<'a> {
    msg: &'a Message,
    #[serde(with = "serde_bytes")]
    sig: &'a Option<Sig>,
}

impl<'a> SignedRef<'a> {
    fn of(m: &'a Message) -> Self {
        SignedRef {
            msg: m,
            sig: &m.sig,
        }
    }
}

/// Room for a message's frame, so that encoding it allocates once.
fn msg_size_hint(m: &Message) -> usize {
    4 + m.payload.len() + m.topic.len() + m.key.len() + 96
}

fn prefixed<T: Serialize + ?Sized>(v: &T, capacity: usize) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(&[0u8; 4]);
    // to_io, not to_extend: to_extend feeds a byte string to the Vec one byte at a time
    // (a profile of 1 KiB publishes at 190k msg/s found 12 % of the sender there);
    // to_io hands it over in one write_all, a memcpy.
    let mut out = postcard::to_io(v, out)?;
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// Decodes and checks a frame body (without its length prefix).
pub fn decode(body: &[u8], limits: &FrameLimits) -> Result<Frame, WireError> {
    if body.len() > limits.max_frame() {
        return Err(WireError::TooLarge(body.len(), limits.max_frame()));
    }
    let frame: Frame = postcard::from_bytes(body)?;
    frame.check(limits)?;
    Ok(match frame {
        Frame::Msg2(s) => Frame::Msg(s.into_message()),
        Frame::Entries2(ss) => Frame::Entries(ss.into_iter().map(Signed::into_message).collect()),
        f => f,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const L: FrameLimits = FrameLimits {
        max_message_bytes: 1024,
    };

    pub(crate) fn msg() -> Message {
        Message {
            publisher: [7; 32],
            seq: 1,
            hlc: 42 << 16,
            hops: 0,
            topic: "a/b".into(),
            key: "k".into(),
            payload: bytes::Bytes::from_static(b"hello"),
            retain: true,
            ttl_ms: 0,
            tombstone: false,
            sig: None,
        }
    }

    fn roundtrip(f: &Frame) -> Result<Frame, WireError> {
        roundtrip_as(f, WireVersion::V1)
    }

    fn roundtrip_as(f: &Frame, v: WireVersion) -> Result<Frame, WireError> {
        let bytes = encode(f, v).unwrap();
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 4);
        decode(&bytes[4..], &L)
    }

    #[test]
    fn frames_roundtrip() {
        for f in [
            Frame::Msg(msg()),
            Frame::Neighbours(vec![[1; 32], [2; 32]]),
            Frame::Digest(vec![9; BUCKETS]),
            Frame::Versions {
                buckets: vec![1, 2],
                versions: vec![Version {
                    topic: "a".into(),
                    key: String::new(),
                    hlc: 1,
                    publisher: [3; 32],
                }],
            },
            Frame::Entries(vec![msg()]),
        ] {
            assert_eq!(roundtrip(&f).unwrap(), f);
        }
    }

    #[test]
    fn a_borrowed_msg_encodes_like_the_frame() {
        let mut big = msg();
        big.payload = (0..70_000u32).map(|i| i as u8).collect();
        big.retain = false;
        for m in [msg(), big] {
            let bytes = encode_msg(&m, WireVersion::V1).unwrap();
            assert_eq!(bytes, prefixed(&Frame::Msg(m.clone()), 0).unwrap());
            let limits = FrameLimits {
                max_message_bytes: 100_000,
            };
            assert_eq!(decode(&bytes[4..], &limits).unwrap(), Frame::Msg(m));
        }
    }

    /// The payload's encoding is the one that peers and the disk store already hold
    /// (it was `Vec<u8>` with serde_bytes before it became `Bytes`): one byte string,
    /// its varint length and then its bytes, ending the message's fields before the
    /// three after it.
    #[test]
    fn a_payload_is_its_length_then_its_bytes() {
        let mut m = msg();
        m.payload = bytes::Bytes::from(vec![7u8; 200]);
        let enc = postcard::to_stdvec(&m).unwrap();
        // retain (1 byte), ttl_ms 0 (1 byte), tombstone (1 byte) follow the payload.
        let payload_at = enc.len() - 3 - 200 - 2;
        assert_eq!(&enc[payload_at..payload_at + 2], &[0xc8, 0x01]); // varint 200
        assert!(enc[payload_at + 2..enc.len() - 3].iter().all(|b| *b == 7));
    }

    /// Version 2 carries signatures (and their absence); version 1 the same bytes as
    /// before signatures existed, which an older node decodes.
    #[test]
    fn signatures_travel_on_version_2_only() {
        let mut signed = msg();
        signed.sig = Some([5; 64]);
        let unsigned = msg();
        for m in [&signed, &unsigned] {
            let v2 = encode_msg(m, WireVersion::V2).unwrap();
            let expect = Frame::Msg2(Signed {
                msg: m.clone(),
                sig: m.sig,
            });
            assert_eq!(v2, prefixed(&expect, 0).unwrap());
            assert_eq!(decode(&v2[4..], &L).unwrap(), Frame::Msg(m.clone()));
            let entries = Frame::Entries(vec![m.clone(), signed.clone()]);
            assert_eq!(roundtrip_as(&entries, WireVersion::V2).unwrap(), entries);
        }
        let v1 = encode_msg(&signed, WireVersion::V1).unwrap();
        assert_eq!(v1, encode_msg(&unsigned, WireVersion::V1).unwrap());
        assert_eq!(decode(&v1[4..], &L).unwrap(), Frame::Msg(unsigned.clone()));
        let entries = Frame::Entries(vec![signed]);
        assert_eq!(
            roundtrip_as(&entries, WireVersion::V1).unwrap(),
            Frame::Entries(vec![unsigned])
        );
    }

    #[test]
    fn a_signature_of_another_length_is_refused() {
        let mut body = postcard::to_stdvec(&Frame::Msg2(Signed {
            msg: msg(),
            sig: Some([5; 64]),
        }))
        .unwrap();
        // The signature is the last field: its length varint (64) then its bytes.
        let at = body.len() - 65;
        assert_eq!(body[at], 64);
        body[at] = 63;
        body.pop();
        assert!(decode(&body, &L).is_err());
    }

    #[test]
    fn bad_fields_are_refused() {
        let bad = |f: fn(&mut Message)| {
            let mut m = msg();
            f(&mut m);
            roundtrip(&Frame::Msg(m)).is_err()
        };
        assert!(bad(|m| m.topic = "a/*".into()));
        assert!(bad(|m| m.topic = String::new()));
        assert!(bad(|m| m.key = "\n".into()));
        assert!(bad(|m| m.payload = vec![0; 1025].into()));
        assert!(bad(|m| m.hops = MAX_HOPS + 1));
        assert!(bad(|m| m.seq = 0));
        assert!(bad(|m| m.ttl_ms = MAX_TTL_MS + 1));
        assert!(bad(|m| m.tombstone = true));
        assert!(roundtrip(&Frame::Digest(vec![0; 3])).is_err());
        let mut m = msg();
        m.retain = false;
        assert!(roundtrip(&Frame::Entries(vec![m])).is_err());
        assert!(decode(&[0xff, 0xff, 0xff], &L).is_err());
        assert!(matches!(
            decode(&vec![0; L.max_frame() + 1], &L),
            Err(WireError::TooLarge(..))
        ));
    }
}

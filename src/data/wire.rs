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
            Frame::Msg(m) => m.check(limits),
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
            Frame::Entries(ms) => {
                too_many(ms.len())?;
                for m in ms {
                    m.check(limits)?;
                    if !m.retain {
                        return Err(WireError::Field("a non-retained entry"));
                    }
                }
                Ok(())
            }
        }
    }
}

/// The frame with its length prefix.
pub fn encode(frame: &Frame) -> Result<Vec<u8>, WireError> {
    let hint = match frame {
        Frame::Msg(m) => msg_size_hint(m),
        _ => 64,
    };
    prefixed(frame, hint)
}

/// `Frame::Msg(m)` with its length prefix, from a borrowed message: the same bytes as
/// [`encode`] gives, without the copy of the payload that building the frame takes
/// (a publish is encoded once for all peers, but a 64 KiB copy is still 64 KiB).
pub fn encode_msg(m: &Message) -> Result<Vec<u8>, WireError> {
    prefixed(&MsgFrame(m), msg_size_hint(m))
}

/// Serializes as `Frame::Msg` does: serde numbers an enum's variants by position, and
/// `Msg` is the second (the test `a_borrowed_msg_encodes_like_the_frame` holds that).
struct MsgFrame<'a>(&'a Message);

impl Serialize for MsgFrame<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_variant("Frame", 1, "Msg", self.0)
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
    Ok(frame)
}

#[cfg(test)]
mod tests {
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
        }
    }

    fn roundtrip(f: &Frame) -> Result<Frame, WireError> {
        let bytes = encode(f).unwrap();
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
            let bytes = encode_msg(&m).unwrap();
            assert_eq!(bytes, encode(&Frame::Msg(m.clone())).unwrap());
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

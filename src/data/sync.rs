//! Anti-entropy for the retained state. Each side sends its digest (a hash per
//! bucket) when a link comes up; the receiver answers with its versions in the buckets
//! that differ; the digest's sender then pushes the entries that are newer on its side
//! or missing on the other. Both sides do this, so each gets what it lacks.
//!
//! Every `--data-sync-interval` a node sends its digest again, but only to the peers
//! that have not seen its current one: a node whose state did not change sends nothing,
//! because on a radio channel an idle formation must stay quiet (a 2 KiB digest per
//! peer every 10 s was more than the whole idle budget of issue 16). A change on either
//! side reaches the other through the changed side's next round. As a safety net for
//! a lost frame, a peer that got nothing for [`ROOT_EVERY`] gets the 8-byte hash of
//! the whole digest, and answers with its full digest if its own differs.
//!
//! The decisions themselves are the data core's (`core.rs`); this file holds the pure
//! pieces it uses: when a peer is due, the root hash, and how replies are cut into
//! frames.

use std::time::{Duration, Instant};

use super::{
    store::bucket_of,
    wire::{Message, Version, MAX_ITEMS},
};

/// Soft size of one Versions or Entries frame.
const CHUNK_BYTES: usize = 256 * 1024;
/// The longest a link goes without any anti-entropy frame.
pub const ROOT_EVERY: Duration = Duration::from_secs(600);

/// The digest a peer last got from us, and when it last got anything.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    root: u64,
    at: Instant,
}

impl Sent {
    pub fn new(root: u64, at: Instant) -> Self {
        Sent { root, at }
    }
}

/// What a sync round sends a peer.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    Digest,
    Root,
    Nothing,
}

pub fn due(sent: Option<&Sent>, root: u64, now: Instant) -> Due {
    match sent {
        None => Due::Digest,
        Some(s) if s.root != root => Due::Digest,
        Some(s) if now.saturating_duration_since(s.at) >= ROOT_EVERY => Due::Root,
        Some(_) => Due::Nothing,
    }
}

/// One hash of the whole digest (FNV-1a over the bucket hashes).
pub fn root_of(digest: &[u64]) -> u64 {
    digest.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn version_size(v: &Version) -> usize {
    v.topic.len() + v.key.len() + 48
}

/// Versions grouped by bucket into frames of about [`CHUNK_BYTES`]; a frame lists the
/// buckets whose versions it holds in full (an oversized bucket is split, which at
/// worst makes the peer push a few entries we have).
pub fn versions_chunks(diff: &[u8], versions: Vec<Version>) -> Vec<(Vec<u8>, Vec<Version>)> {
    let mut by_bucket: Vec<Vec<Version>> = vec![Vec::new(); 256];
    for v in versions {
        by_bucket[bucket_of(&v.topic, &v.key) as usize].push(v);
    }
    let mut out: Vec<(Vec<u8>, Vec<Version>)> = Vec::new();
    let mut cur = (Vec::new(), Vec::new());
    let mut size = 0;
    for b in diff {
        let vs = std::mem::take(&mut by_bucket[*b as usize]);
        let bytes: usize = vs.iter().map(version_size).sum();
        if !cur.0.is_empty() && (size + bytes > CHUNK_BYTES || cur.1.len() + vs.len() > MAX_ITEMS) {
            out.push(std::mem::take(&mut cur));
            size = 0;
        }
        cur.0.push(*b);
        size += bytes;
        for v in vs {
            if cur.1.len() >= MAX_ITEMS {
                out.push((vec![*b], std::mem::take(&mut cur.1)));
            }
            cur.1.push(v);
        }
    }
    if !cur.0.is_empty() {
        out.push(cur);
    }
    out
}

/// Bytes an entry takes in a frame besides its topic, key and payload, at most: the
/// publisher id (32), numbers as varints (seq, HLC, TTL: up to 10 each), lengths,
/// flags, and in frames of version 2 the signature's presence byte.
const ENTRY_FIELDS: usize = 80;
/// A signature in a frame of version 2: its length, then 64 bytes.
const ENTRY_SIG: usize = 65;
/// Soft size of one Entries frame: below the 64 KiB a receiver allows beyond
/// `--max-message-bytes` ([`super::wire::FRAME_OVERHEAD`]), so that a frame of many small entries
/// fits whatever the receiver's setting (a lone entry larger than this goes alone), and
/// so that a bulk frame on a thin link is short.
const ENTRY_CHUNK_BYTES: usize = 48 * 1024;

pub fn entry_chunks(entries: Vec<Message>) -> Vec<Vec<Message>> {
    let mut out = Vec::new();
    let mut cur: Vec<Message> = Vec::new();
    let mut size = 0;
    for m in entries {
        let sig = if m.sig.is_some() { ENTRY_SIG } else { 0 };
        let s = m.topic.len() + m.key.len() + m.payload.len() + ENTRY_FIELDS + sig;
        if !cur.is_empty() && (size + s > ENTRY_CHUNK_BYTES || cur.len() >= MAX_ITEMS) {
            out.push(std::mem::take(&mut cur));
            size = 0;
        }
        size += s;
        cur.push(m);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(topic: &str) -> Version {
        Version {
            topic: topic.into(),
            key: String::new(),
            hlc: 1,
            publisher: [0; 32],
        }
    }

    #[test]
    fn a_round_sends_only_what_the_peer_has_not_seen() {
        let t0 = Instant::now();
        let sent = Sent { root: 7, at: t0 };
        assert_eq!(due(None, 7, t0), Due::Digest);
        assert_eq!(due(Some(&sent), 8, t0), Due::Digest);
        assert_eq!(
            due(Some(&sent), 7, t0 + Duration::from_secs(10)),
            Due::Nothing
        );
        assert_eq!(due(Some(&sent), 7, t0 + ROOT_EVERY), Due::Root);
    }

    #[test]
    fn the_root_hash_changes_with_any_bucket() {
        let a = vec![0u64; 256];
        let mut b = a.clone();
        b[200] = 1;
        assert_ne!(root_of(&a), root_of(&b));
        assert_eq!(root_of(&a), root_of(&a.clone()));
    }

    #[test]
    fn versions_are_grouped_by_whole_buckets() {
        let vs: Vec<Version> = (0..5000)
            .map(|i| v(&format!("t/{i}/{}", "x".repeat(100))))
            .collect();
        let mut diff: Vec<u8> = vs.iter().map(|v| bucket_of(&v.topic, &v.key)).collect();
        diff.sort();
        diff.dedup();
        let chunks = versions_chunks(&diff, vs);
        assert!(chunks.len() > 1);
        let mut total = 0;
        for (buckets, versions) in &chunks {
            total += versions.len();
            for v in versions {
                assert!(buckets.contains(&bucket_of(&v.topic, &v.key)));
            }
        }
        assert_eq!(total, 5000);
        let all: usize = chunks.iter().map(|c| c.0.len()).sum();
        assert_eq!(all, diff.len());
    }

    #[test]
    fn entries_are_split_by_size() {
        let m = Message {
            publisher: [0; 32],
            seq: 1,
            hlc: 1,
            hops: 0,
            topic: "a".into(),
            key: String::new(),
            payload: vec![0; 100 * 1024].into(),
            retain: true,
            ttl_ms: 0,
            tombstone: false,
            sig: None,
        };
        let chunks = entry_chunks(vec![m.clone(), m.clone(), m.clone(), m]);
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            [1, 1, 1, 1]
        );
    }

    /// 10,000 small signed entries (a retained sync) go in frames that every receiver
    /// takes, on either frame version, whatever its --max-message-bytes: each under the
    /// 64 KiB allowed beyond it. (With signatures the old estimate made frames of
    /// 330 KB, which a receiver with the default limit refused.)
    #[test]
    fn a_sync_of_small_signed_entries_fits_any_receiver() {
        use crate::data::wire::{encode, Frame, WireVersion, FRAME_OVERHEAD};
        let entries: Vec<Message> = (0..10_000u64)
            .map(|i| Message {
                publisher: [7; 32],
                seq: u64::MAX - i,
                hlc: u64::MAX - i,
                hops: 0,
                topic: format!("t/{i}"),
                key: String::new(),
                payload: vec![0; 100].into(),
                retain: true,
                ttl_ms: u64::MAX >> 20,
                tombstone: false,
                sig: Some([9; 64]),
            })
            .collect();
        let chunks = entry_chunks(entries);
        assert!(chunks.len() > 1);
        for c in chunks {
            for v in [WireVersion::V1, WireVersion::V2] {
                let bytes = encode(&Frame::Entries(c.clone()), v).unwrap();
                assert!(bytes.len() - 4 <= FRAME_OVERHEAD, "{} bytes", bytes.len());
            }
        }
    }
}

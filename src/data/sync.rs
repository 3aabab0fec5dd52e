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

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use super::{
    engine::{encode, Shared},
    link::Link,
    store::{bucket_of, differing},
    wire::{Frame, Id, Message, Version, MAX_ITEMS},
};

/// How long a reply waits for our link to the peer (steps of 50 ms, 2 s in all).
const LINK_WAIT_STEPS: u32 = 40;
const LINK_WAIT_STEP: Duration = Duration::from_millis(50);
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

/// What a sync round sends a peer.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    Digest,
    Root,
    Nothing,
}

fn due(sent: Option<&Sent>, root: u64, now: Instant) -> Due {
    match sent {
        None => Due::Digest,
        Some(s) if s.root != root => Due::Digest,
        Some(s) if now.saturating_duration_since(s.at) >= ROOT_EVERY => Due::Root,
        Some(_) => Due::Nothing,
    }
}

/// One hash of the whole digest (FNV-1a over the bucket hashes).
fn root_of(digest: &[u64]) -> u64 {
    digest.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Shared {
    fn digest(&self) -> Option<Vec<u64>> {
        self.retained.lock().ok().map(|r| r.digest())
    }

    fn note_sent(&self, peer: &Id, root: u64, now: Instant) {
        if let Ok(mut s) = self.synced.lock() {
            s.insert(*peer, Sent { root, at: now });
        }
    }

    pub fn send_digest(&self, peer: &Id) {
        let Some(d) = self.digest() else { return };
        self.note_sent(peer, root_of(&d), Instant::now());
        if let (Some(l), Some(f)) = (self.link(peer), encode(&Frame::Digest(d))) {
            l.send(&f);
        }
    }

    /// A sync round's share for one peer: the digest if the peer has not seen our
    /// current one, the root hash if it got nothing for a long time, else nothing.
    pub fn sync_with(&self, peer: &Id, now: Instant) {
        let Some(d) = self.digest() else { return };
        let root = root_of(&d);
        let sent = self.synced.lock().ok().and_then(|s| s.get(peer).copied());
        match due(sent.as_ref(), root, now) {
            Due::Digest => self.send_digest(peer),
            Due::Root => {
                self.note_sent(peer, root, now);
                if let (Some(l), Some(f)) = (self.link(peer), encode(&Frame::Root(root))) {
                    l.send(&f);
                }
            }
            Due::Nothing => {}
        }
    }

    /// A peer's root hash: if ours differs, it gets our full digest, which starts a
    /// normal exchange.
    pub fn on_root(&self, from: &Id, theirs: u64) {
        let ours = self.digest().map(|d| root_of(&d));
        if ours.is_some_and(|r| r != theirs) {
            self.send_digest(from);
        }
    }

    /// The link to a peer whose frames we are reading: our side of a new connection
    /// may still be starting (the two are announced separately).
    async fn link_soon(&self, peer: &Id) -> Option<Arc<Link>> {
        for _ in 0..LINK_WAIT_STEPS {
            if let Some(l) = self.link(peer) {
                return Some(l);
            }
            tokio::time::sleep(LINK_WAIT_STEP).await;
        }
        None
    }

    pub async fn on_digest(&self, from: &Id, theirs: &[u64]) {
        let Some(link) = self.link_soon(from).await else {
            return;
        };
        let (diff, versions) = match self.retained.lock() {
            Ok(r) => {
                let diff = differing(&r.digest(), theirs);
                let v = r.versions(&diff);
                (diff, v)
            }
            Err(_) => return,
        };
        if diff.is_empty() {
            return;
        }
        for (buckets, versions) in versions_chunks(&diff, versions) {
            if let Some(f) = encode(&Frame::Versions { buckets, versions }) {
                link.send(&f);
            }
        }
    }

    pub async fn on_versions(&self, from: &Id, buckets: &[u8], theirs: &[Version]) {
        let Some(link) = self.link_soon(from).await else {
            return;
        };
        let push = match self.retained.lock() {
            Ok(r) => r.to_push(buckets, theirs),
            Err(_) => return,
        };
        for chunk in entry_chunks(push) {
            if let Some(f) = encode(&Frame::Entries(chunk)) {
                link.send(&f);
            }
        }
    }

    pub async fn on_entries(&self, entries: Vec<Message>) {
        for m in entries {
            if self.hlc.observe(m.hlc).is_err() {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if m.publisher == self.me && m.seq >= self.next_seq.load(Ordering::Relaxed) {
                // Our own entry from a lost past (a wiped store): skip our sequence past it.
                self.next_seq.fetch_max(m.seq + 1, Ordering::Relaxed);
                self.reserve_past(m.seq + 1).await;
            }
            if self.retain(m.clone()).await {
                let fresh = self
                    .seen
                    .lock()
                    .map(|mut s| s.accept(&m.publisher, m.seq))
                    .unwrap_or(false);
                if fresh && m.publisher != self.me {
                    self.deliver(&Arc::new(m));
                }
            }
        }
    }
}

fn version_size(v: &Version) -> usize {
    v.topic.len() + v.key.len() + 48
}

/// Versions grouped by bucket into frames of about [`CHUNK_BYTES`]; a frame lists the
/// buckets whose versions it holds in full (an oversized bucket is split, which at
/// worst makes the peer push a few entries we have).
fn versions_chunks(diff: &[u8], versions: Vec<Version>) -> Vec<(Vec<u8>, Vec<Version>)> {
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

fn entry_chunks(entries: Vec<Message>) -> Vec<Vec<Message>> {
    let mut out = Vec::new();
    let mut cur: Vec<Message> = Vec::new();
    let mut size = 0;
    for m in entries {
        let s = m.topic.len() + m.key.len() + m.payload.len() + 64;
        if !cur.is_empty() && (size + s > CHUNK_BYTES || cur.len() >= MAX_ITEMS) {
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
        };
        let chunks = entry_chunks(vec![m.clone(), m.clone(), m.clone(), m]);
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2]);
    }
}

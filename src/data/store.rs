//! The retained state in memory: the latest message per (topic, key), last writer wins
//! by (HLC, publisher id), with the digest that anti-entropy compares.
//!
//! The disk copy ([`super::disk`]) follows every change; this map answers reads.
//! Eviction rule, when the entries exceed `--max-retained-bytes`: expired entries go
//! first, then the entries with the oldest HLC (least recently written anywhere),
//! until the total fits. An evicted version is not taken back from peers
//! (the eviction watermark), so anti-entropy does not fetch it again and again.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest as _, Sha256};

use super::{
    hlc::physical_ms,
    topic::Pattern,
    wire::{Id, Message, Sig, Version, BUCKETS},
};

/// How long a delete's tombstone lives: long enough to reach nodes that were away.
pub const TOMBSTONE_TTL_MS: u64 = 24 * 3600 * 1000;
/// Bytes counted per entry besides topic, key and payload.
const ENTRY_OVERHEAD: u64 = 96;

pub type EntryKey = (String, String);
/// An entry that left the store, with the version that left (HLC, publisher).
pub type Gone = (EntryKey, u64, Id);

/// When an entry expires (Unix ms), or `None` for never.
pub fn expires_ms(m: &Message) -> Option<u64> {
    let base = physical_ms(m.hlc);
    if m.tombstone {
        Some(base + TOMBSTONE_TTL_MS)
    } else if m.ttl_ms > 0 {
        Some(base + m.ttl_ms)
    } else {
        None
    }
}

pub fn entry_size(m: &Message) -> u64 {
    (m.topic.len() + m.key.len() + m.payload.len()) as u64 + ENTRY_OVERHEAD
}

/// Whether version a wins over version b.
pub fn newer(a: (u64, &Id), b: (u64, &Id)) -> bool {
    a > b
}

pub fn bucket_of(topic: &str, key: &str) -> u8 {
    let mut h = Sha256::new();
    h.update(topic.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    h.finalize()[0]
}

fn version_hash(m: &Message) -> u64 {
    let mut h = Sha256::new();
    h.update(m.topic.as_bytes());
    h.update([0]);
    h.update(m.key.as_bytes());
    h.update([0]);
    h.update(m.hlc.to_be_bytes());
    h.update(m.publisher);
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// Stored; these entries were evicted to make room.
    Stored {
        evicted: Vec<Gone>,
    },
    /// We have it or something newer (or it was evicted before).
    Stale,
    /// We had this version without its publisher's signature, and took the signature.
    Signed,
    Expired,
    /// Larger than the whole store may hold.
    TooLarge,
}

#[derive(Debug)]
pub struct Retained {
    map: BTreeMap<EntryKey, Message>,
    bytes: u64,
    /// Entries that are tombstones (deletions kept so that they spread).
    tombstones: usize,
    max_bytes: u64,
    /// XOR of the version hashes of the entries in each bucket.
    buckets: Vec<u64>,
    /// Versions at or below this (HLC) that we lack were evicted: not taken back.
    evicted_below: u64,
    /// The entries that expire, by when (Unix ms): the next deadline is the first.
    expiries: BTreeSet<(u64, EntryKey)>,
}

impl Retained {
    pub fn new(max_bytes: u64) -> Self {
        Retained {
            map: BTreeMap::new(),
            bytes: 0,
            tombstones: 0,
            max_bytes,
            buckets: vec![0; BUCKETS],
            evicted_below: 0,
            expiries: BTreeSet::new(),
        }
    }

    /// Every entry, tombstones included.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Entries that hold a value (what an app can read).
    pub fn live(&self) -> usize {
        self.map.len() - self.tombstones
    }

    pub fn tombstones(&self) -> usize {
        self.tombstones
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Topics with at least one live entry (a topic whose keys were all deleted is gone
    /// for the apps, even while its tombstones are kept).
    pub fn topics(&self) -> usize {
        let mut n = 0;
        let mut last: Option<&str> = None;
        for ((t, _), m) in &self.map {
            if !m.tombstone && last != Some(t.as_str()) {
                n += 1;
                last = Some(t);
            }
        }
        n
    }

    /// The listed buckets as a lookup table.
    fn bucket_set(buckets: &[u8]) -> [bool; BUCKETS] {
        let mut want = [false; BUCKETS];
        for b in buckets {
            want[*b as usize] = true;
        }
        want
    }

    #[cfg(test)]
    pub fn get(&self, k: &EntryKey) -> Option<&Message> {
        self.map.get(k)
    }

    /// Merges one entry (hops are not kept). `now` is Unix ms.
    pub fn apply(&mut self, mut m: Message, now: u64) -> Applied {
        m.hops = 0;
        if expires_ms(&m).is_some_and(|e| e <= now) {
            return Applied::Expired;
        }
        if entry_size(&m) > self.max_bytes {
            return Applied::TooLarge;
        }
        let k = (m.topic.clone(), m.key.clone());
        match self.map.get_mut(&k) {
            Some(old) if old.hlc == m.hlc && old.publisher == m.publisher => {
                if old.sig.is_none() && m.sig.is_some() {
                    old.sig = m.sig;
                    return Applied::Signed;
                }
                return Applied::Stale;
            }
            Some(old) if !newer((m.hlc, &m.publisher), (old.hlc, &old.publisher)) => {
                return Applied::Stale
            }
            None if m.hlc <= self.evicted_below => return Applied::Stale,
            _ => {}
        }
        self.remove(&k);
        self.bytes += entry_size(&m);
        self.tombstones += usize::from(m.tombstone);
        self.buckets[bucket_of(&m.topic, &m.key) as usize] ^= version_hash(&m);
        if let Some(e) = expires_ms(&m) {
            self.expiries.insert((e, k.clone()));
        }
        self.map.insert(k.clone(), m);
        let evicted = self.evict(now, &k);
        Applied::Stored { evicted }
    }

    fn remove(&mut self, k: &EntryKey) -> Option<Message> {
        let old = self.map.remove(k)?;
        self.bytes -= entry_size(&old);
        self.tombstones -= usize::from(old.tombstone);
        self.buckets[bucket_of(&old.topic, &old.key) as usize] ^= version_hash(&old);
        if let Some(e) = expires_ms(&old) {
            self.expiries.remove(&(e, k.clone()));
        }
        Some(old)
    }

    /// Makes room after an insert, sparing the entry just written.
    fn evict(&mut self, now: u64, keep: &EntryKey) -> Vec<Gone> {
        if self.bytes <= self.max_bytes {
            return Vec::new();
        }
        let mut gone = self.expire(now);
        if self.bytes <= self.max_bytes {
            return gone;
        }
        let mut by_age: Vec<(u64, EntryKey)> = self
            .map
            .iter()
            .filter(|(k, _)| *k != keep)
            .map(|(k, m)| (m.hlc, k.clone()))
            .collect();
        by_age.sort_unstable();
        for (hlc, k) in by_age {
            if self.bytes <= self.max_bytes {
                break;
            }
            if let Some(old) = self.remove(&k) {
                self.evicted_below = self.evicted_below.max(hlc);
                gone.push((k, old.hlc, old.publisher));
            }
        }
        gone
    }

    /// Whether applying `m` would change nothing: we hold its version or a newer one
    /// (with a signature whenever `m` has one).
    pub fn holds(&self, m: &Message) -> bool {
        let k = (m.topic.clone(), m.key.clone());
        self.map.get(&k).is_some_and(|old| {
            let same = old.hlc == m.hlc && old.publisher == m.publisher;
            newer((old.hlc, &old.publisher), (m.hlc, &m.publisher))
                || (same && (old.sig.is_some() || m.sig.is_none()))
        })
    }

    /// Signs `publisher`'s entries that have no signature (ours, from a version that
    /// did not sign).
    pub fn sign_unsigned_of(&mut self, publisher: &Id, sign: impl Fn(&Message) -> Sig) {
        for m in self.map.values_mut() {
            if m.publisher == *publisher && m.sig.is_none() {
                m.sig = Some(sign(m));
            }
        }
    }

    /// Drops expired entries (TTL passed, tombstones aged out); returns their keys.
    pub fn expire(&mut self, now: u64) -> Vec<Gone> {
        let mut gone = Vec::new();
        while self.expiries.first().is_some_and(|(e, _)| *e <= now) {
            let Some((_, k)) = self.expiries.pop_first() else {
                break;
            };
            if let Some(m) = self.remove(&k) {
                gone.push((k, m.hlc, m.publisher));
            }
        }
        gone
    }

    /// When the next entry expires (Unix ms), if any does.
    pub fn next_expiry(&self) -> Option<u64> {
        self.expiries.first().map(|(e, _)| *e)
    }

    /// Live entries (no tombstones, not expired) whose topic matches.
    pub fn matching(&self, p: &Pattern, now: u64) -> Vec<Message> {
        self.map
            .values()
            .filter(|m| !m.tombstone && p.matches(&m.topic))
            .filter(|m| expires_ms(m).is_none_or(|e| e > now))
            .cloned()
            .collect()
    }

    pub fn digest(&self) -> Vec<u64> {
        self.buckets.clone()
    }

    /// Our versions in the given buckets.
    pub fn versions(&self, buckets: &[u8]) -> Vec<Version> {
        let want = Self::bucket_set(buckets);
        self.map
            .values()
            .filter(|m| want[bucket_of(&m.topic, &m.key) as usize])
            .map(|m| Version {
                topic: m.topic.clone(),
                key: m.key.clone(),
                hlc: m.hlc,
                publisher: m.publisher,
            })
            .collect()
    }

    /// Our entries in the given buckets that are newer than a peer's versions there,
    /// or that the peer lacks.
    pub fn to_push(&self, buckets: &[u8], theirs: &[Version]) -> Vec<Message> {
        let known: std::collections::HashMap<(&str, &str), (u64, &Id)> = theirs
            .iter()
            .map(|v| ((v.topic.as_str(), v.key.as_str()), (v.hlc, &v.publisher)))
            .collect();
        let want = Self::bucket_set(buckets);
        self.map
            .values()
            .filter(|m| want[bucket_of(&m.topic, &m.key) as usize])
            .filter(|m| {
                known
                    .get(&(m.topic.as_str(), m.key.as_str()))
                    .is_none_or(|v| newer((m.hlc, &m.publisher), *v))
            })
            .cloned()
            .collect()
    }
}

/// Buckets whose hashes differ.
pub fn differing(ours: &[u64], theirs: &[u64]) -> Vec<u8> {
    ours.iter()
        .zip(theirs)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i as u8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    fn m(topic: &str, hlc_ms: u64, publisher: u8, payload: &str) -> Message {
        Message {
            publisher: [publisher; 32],
            seq: 1,
            hlc: hlc_ms << 16,
            hops: 3,
            topic: topic.into(),
            key: String::new(),
            payload: payload.as_bytes().to_vec().into(),
            retain: true,
            ttl_ms: 0,
            tombstone: false,
            sig: None,
        }
    }

    fn value(r: &Retained, topic: &str) -> Option<String> {
        r.get(&(topic.into(), String::new()))
            .map(|m| String::from_utf8(m.payload.to_vec()).unwrap())
    }

    /// What anti-entropy may skip before checking a signature: our version or an older
    /// one, unless it brings the signature that our copy lacks.
    #[test]
    fn held_versions_and_signatures() {
        let mut r = Retained::new(1 << 20);
        r.apply(m("a", 10, 1, "x"), NOW);
        assert!(r.holds(&m("a", 10, 1, "x")));
        assert!(r.holds(&m("a", 9, 1, "old")));
        assert!(!r.holds(&m("a", 11, 1, "new")));
        assert!(!r.holds(&m("b", 10, 1, "x")));
        let mut signed = m("a", 10, 1, "x");
        signed.sig = Some([1; 64]);
        assert!(!r.holds(&signed), "our copy is unsigned");
        assert_eq!(r.apply(signed.clone(), NOW), Applied::Signed);
        assert!(r.holds(&signed) && r.holds(&m("a", 10, 1, "x")));
    }

    #[test]
    fn last_writer_wins_by_clock_then_publisher() {
        let mut r = Retained::new(1 << 20);
        assert!(matches!(
            r.apply(m("a", 10, 1, "x"), NOW),
            Applied::Stored { .. }
        ));
        assert_eq!(r.apply(m("a", 9, 9, "old"), NOW), Applied::Stale);
        assert!(matches!(
            r.apply(m("a", 10, 2, "y"), NOW),
            Applied::Stored { .. }
        ));
        assert_eq!(r.apply(m("a", 10, 1, "x"), NOW), Applied::Stale);
        assert_eq!(value(&r, "a").as_deref(), Some("y"));
        assert_eq!(r.get(&("a".into(), String::new())).unwrap().hops, 0);
        // Any order of the same writes gives the same state and digest.
        let mut other = Retained::new(1 << 20);
        other.apply(m("a", 10, 2, "y"), NOW);
        other.apply(m("a", 10, 1, "x"), NOW);
        assert_eq!(r.digest(), other.digest());
        assert_eq!(r.bytes(), other.bytes());
    }

    #[test]
    fn ttl_and_tombstones_expire() {
        let mut r = Retained::new(1 << 20);
        let mut t = m("a", NOW, 1, "x");
        t.ttl_ms = 500;
        r.apply(t.clone(), NOW);
        assert_eq!(r.matching(&Pattern::parse("**").unwrap(), NOW).len(), 1);
        assert!(r
            .matching(&Pattern::parse("**").unwrap(), NOW + 500)
            .is_empty());
        assert_eq!(r.expire(NOW + 500).len(), 1);
        assert_eq!(r.len(), 0);
        assert_eq!(r.bytes(), 0);
        assert_eq!(r.apply(t, NOW + 600), Applied::Expired);
        let mut del = m("b", NOW, 1, "");
        del.tombstone = true;
        r.apply(m("b", NOW - 1, 1, "v"), NOW);
        r.apply(del, NOW);
        assert!(r.matching(&Pattern::parse("b").unwrap(), NOW).is_empty());
        assert_eq!(r.len(), 1);
        assert_eq!(r.expire(NOW + TOMBSTONE_TTL_MS).len(), 1);
        assert_eq!(r.digest(), vec![0; BUCKETS]);
    }

    #[test]
    fn tombstones_are_counted_apart_from_live_entries() {
        let mut r = Retained::new(1 << 20);
        r.apply(m("a", 10, 1, "x"), NOW);
        r.apply(m("b", 10, 1, "y"), NOW);
        let mut del = m("a", 11, 1, "");
        del.tombstone = true;
        r.apply(del.clone(), NOW);
        assert_eq!(
            (r.len(), r.live(), r.tombstones(), r.topics()),
            (2, 1, 1, 1)
        );
        // A value written after the delete brings the topic back.
        r.apply(m("a", 12, 2, "z"), NOW);
        assert_eq!((r.live(), r.tombstones(), r.topics()), (2, 0, 2));
        // A tombstone that ages out leaves no count behind.
        del.hlc = 20 << 16;
        r.apply(del, NOW);
        assert_eq!((r.live(), r.tombstones()), (1, 1));
        assert_eq!(r.expire(NOW + TOMBSTONE_TTL_MS).len(), 1);
        assert_eq!(
            (r.len(), r.live(), r.tombstones(), r.topics()),
            (1, 1, 0, 1)
        );
    }

    #[test]
    fn eviction_drops_oldest_and_does_not_take_them_back() {
        let one = entry_size(&m("t0", 1, 1, "xxxxxxxxxx"));
        let mut r = Retained::new(one * 3);
        for i in 0..5u64 {
            r.apply(m(&format!("t{i}"), 100 + i, 1, "xxxxxxxxxx"), NOW);
        }
        assert_eq!(r.len(), 3);
        assert!(r.bytes() <= one * 3);
        assert!(value(&r, "t0").is_none() && value(&r, "t1").is_none());
        assert!(value(&r, "t4").is_some());
        // A peer pushing the evicted version back is refused; a newer one is taken.
        assert_eq!(r.apply(m("t0", 100, 1, "xxxxxxxxxx"), NOW), Applied::Stale);
        assert!(matches!(
            r.apply(m("t0", 200, 1, "xxxxxxxxxx"), NOW),
            Applied::Stored { .. }
        ));
        assert_eq!(
            r.apply(m("big", NOW, 1, &"x".repeat(1000)), NOW),
            Applied::TooLarge
        );
    }

    #[test]
    fn anti_entropy_converges() {
        let mut a = Retained::new(1 << 20);
        let mut b = Retained::new(1 << 20);
        for i in 0..100u64 {
            a.apply(m(&format!("k{i}"), 10 + i, 1, "a"), NOW);
        }
        for i in 50..150u64 {
            b.apply(m(&format!("k{i}"), 20 + i, 2, "b"), NOW);
        }
        let diff = differing(&a.digest(), &b.digest());
        assert!(!diff.is_empty());
        // Each side answers the other's digest with its versions of the differing
        // buckets; the digest's sender pushes what is newer on its side.
        let to_b = a.to_push(&diff, &b.versions(&diff));
        let to_a = b.to_push(&diff, &a.versions(&diff));
        assert_eq!((to_b.len(), to_a.len()), (50, 100));
        for e in to_b {
            b.apply(e, NOW);
        }
        for e in to_a {
            a.apply(e, NOW);
        }
        assert_eq!(a.digest(), b.digest());
        assert!(differing(&a.digest(), &b.digest()).is_empty());
        assert_eq!(a.len(), 150);
        assert_eq!(value(&a, "k60").as_deref(), Some("b"));
        assert_eq!(value(&b, "k10").as_deref(), Some("a"));
    }
}

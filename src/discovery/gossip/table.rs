//! The gossip table: what this node knows of the formation, and how fresh it is.
//!
//! Freshness follows the heartbeat scheme of gossip failure detectors: each node stamps
//! its own entry with a version that only it raises (once per round), and relays copy
//! that version unchanged. A row is *refreshed* when a higher version arrives, or, for a
//! peer this node is connected to, by the live connection itself. A row nobody refreshed
//! for the TTL is expired: it is reported lost, is no longer sent to anyone, and stays
//! as a tombstone for one more TTL so that a slower relay's old copy cannot revive it.
//! Only a version newer than the tombstone's (the peer came back) does.
//!
//! Live rows and tombstones are bounded separately, each by `max_entries`. Tombstones
//! once gave way to new rows when the table was full; then a burst of junk that filled
//! the table could circulate for ever: each node evicted the junk's tombstones for the
//! next new entry, took the junk back from a relay whose copy had not yet expired, with
//! a fresh TTL, and passed it on again (a simulation of 4 nodes kept it alive in about
//! one run in 400; `tests/gossip.rs` `bogus_entries...` saw it once in about ten).
//!
//! The table is pure: time comes in as an argument, so the tests control the clock.

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use iroh::EndpointId;

use super::wire::{Entry, MAX_ADDRS_PER_ENTRY};

/// What the peer manager must hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Found {
        id: EndpointId,
        addrs: Vec<SocketAddr>,
    },
    Lost {
        id: EndpointId,
    },
}

/// What one merge did, for logs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MergeStats {
    /// Entries never seen before (or back after expiring).
    pub new: usize,
    /// Entries with a newer version than ours.
    pub refreshed: usize,
    /// Entries dropped: no dialable address, or the table is full.
    pub dropped: usize,
    /// Entries dropped because the table is full.
    pub full: usize,
}

#[derive(Debug, Clone)]
struct Row {
    version: u64,
    /// Addresses with the time they were last reported, most recent kept when full.
    addrs: Vec<(SocketAddr, Instant)>,
    refreshed: Instant,
    expired_at: Option<Instant>,
}

impl Row {
    /// Newer news of this peer: its version and addresses; a tombstone comes back to life.
    fn take_newer(
        &mut self,
        e: &Entry,
        now: Instant,
        live: &mut usize,
        stats: &mut MergeStats,
    ) -> Option<Change> {
        let revived = self.expired_at.take().is_some();
        *live += usize::from(revived);
        self.version = e.version;
        self.refreshed = now;
        let added = self.add_addrs(&e.addrs, now);
        if revived {
            stats.new += 1;
        } else {
            stats.refreshed += 1;
        }
        ((revived || added) && !self.addrs.is_empty()).then(|| self.found(e.id))
    }

    fn found(&self, id: EndpointId) -> Change {
        Change::Found {
            id,
            addrs: self.addr_list(),
        }
    }

    fn addr_list(&self) -> Vec<SocketAddr> {
        let mut v = self.addrs.clone();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.into_iter().map(|(a, _)| a).collect()
    }

    /// Adds or re-stamps addresses; true if one was new. When full, the address
    /// reported least recently makes room.
    fn add_addrs(&mut self, addrs: &[SocketAddr], now: Instant) -> bool {
        let mut added = false;
        for &a in addrs.iter().take(MAX_ADDRS_PER_ENTRY) {
            if let Some(slot) = self.addrs.iter_mut().find(|(x, _)| *x == a) {
                slot.1 = now;
                continue;
            }
            if self.addrs.len() >= MAX_ADDRS_PER_ENTRY {
                if let Some(oldest) = self
                    .addrs
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, (_, t))| *t)
                    .map(|(i, _)| i)
                {
                    self.addrs.swap_remove(oldest);
                }
            }
            self.addrs.push((a, now));
            added = true;
        }
        added
    }
}

pub struct Table {
    me: EndpointId,
    ttl: Duration,
    max_entries: usize,
    rows: HashMap<EndpointId, Row>,
}

impl Table {
    pub fn new(me: EndpointId, ttl: Duration, max_entries: usize) -> Self {
        Table {
            me,
            ttl,
            max_entries: max_entries.max(1),
            rows: HashMap::new(),
        }
    }

    /// Rows that are not expired.
    pub fn live(&self) -> usize {
        self.rows
            .values()
            .filter(|r| r.expired_at.is_none())
            .count()
    }

    /// Every row, tombstones included (each bounded by `max_entries`).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn is_live(&self, id: &EndpointId) -> bool {
        self.rows.get(id).is_some_and(|r| r.expired_at.is_none())
    }

    /// Makes room for one live row, given how many are live: false if `max_entries` are.
    /// Tombstones have a bound of their own; at it, the oldest one goes.
    fn make_room(&mut self, live: usize) -> bool {
        if live >= self.max_entries {
            return false;
        }
        if self.rows.len() - live < self.max_entries {
            return true;
        }
        let victim = self
            .rows
            .iter()
            .filter_map(|(id, r)| r.expired_at.map(|t| (t, *id)))
            .min()
            .map(|(_, id)| id);
        match victim {
            Some(id) => {
                self.rows.remove(&id);
                true
            }
            None => false,
        }
    }

    /// Merges entries received from a peer.
    pub fn merge(&mut self, entries: Vec<Entry>, now: Instant) -> (Vec<Change>, MergeStats) {
        let mut changes = Vec::new();
        let mut stats = MergeStats::default();
        let mut live = self.live();
        for e in entries {
            if e.id == self.me {
                continue;
            }
            let change = match self.rows.get_mut(&e.id) {
                Some(row) if e.version > row.version => {
                    if row.expired_at.is_some() && live >= self.max_entries {
                        stats.dropped += 1;
                        stats.full += 1;
                        None
                    } else {
                        row.take_newer(&e, now, &mut live, &mut stats)
                    }
                }
                Some(row) if e.version == row.version && row.expired_at.is_none() => {
                    // Same news through another relay, which may know other addresses.
                    row.add_addrs(&e.addrs, now).then(|| row.found(e.id))
                }
                Some(_) => None, // older news, or news of a peer we gave up on
                None => self.insert(&e, now, &mut live, &mut stats),
            };
            changes.extend(change);
        }
        (changes, stats)
    }

    /// News of a peer without a row: a new row, if it has an address and there is room.
    fn insert(
        &mut self,
        e: &Entry,
        now: Instant,
        live: &mut usize,
        stats: &mut MergeStats,
    ) -> Option<Change> {
        if e.addrs.is_empty() {
            // Nobody could dial it; not worth a row.
            stats.dropped += 1;
            return None;
        }
        if !self.make_room(*live) {
            stats.dropped += 1;
            stats.full += 1;
            return None;
        }
        *live += 1;
        let mut row = Row {
            version: e.version,
            addrs: Vec::new(),
            refreshed: now,
            expired_at: None,
        };
        row.add_addrs(&e.addrs, now);
        let change = row.found(e.id);
        self.rows.insert(e.id, row);
        stats.new += 1;
        Some(change)
    }

    /// A live connection to `id` confirms it: its row does not age while connected.
    /// `observed` is the address the connection runs on, which the peer itself may not
    /// know (it is bound to 0.0.0.0, or behind NAT).
    pub fn confirm(
        &mut self,
        id: EndpointId,
        observed: Option<SocketAddr>,
        now: Instant,
    ) -> Option<Change> {
        let row = self.rows.get_mut(&id)?;
        if row.expired_at.is_some() {
            return None;
        }
        row.refreshed = now;
        let added = observed.is_some_and(|a| row.add_addrs(&[a], now));
        added.then(|| Change::Found {
            id,
            addrs: row.addr_list(),
        })
    }

    /// Expires rows nobody refreshed for the TTL and forgets old tombstones.
    pub fn expire(&mut self, now: Instant) -> Vec<Change> {
        let ttl = self.ttl;
        let mut changes = Vec::new();
        self.rows.retain(|id, row| match row.expired_at {
            Some(t) => now.saturating_duration_since(t) <= ttl,
            None => {
                if now.saturating_duration_since(row.refreshed) > ttl {
                    row.expired_at = Some(now);
                    changes.push(Change::Lost { id: *id });
                }
                true
            }
        });
        changes
    }

    /// The live rows, most recently refreshed first: what this node spreads. Rows a
    /// peer already has at the same or a newer version (`skip`) are left out.
    pub fn snapshot(&self, skip: Option<&HashMap<EndpointId, u64>>) -> Vec<Entry> {
        let mut rows: Vec<(&EndpointId, &Row)> = self
            .rows
            .iter()
            .filter(|(_, r)| r.expired_at.is_none())
            .filter(|(id, r)| skip.and_then(|s| s.get(*id)).is_none_or(|v| *v < r.version))
            .collect();
        rows.sort_by(|a, b| b.1.refreshed.cmp(&a.1.refreshed).then(a.0.cmp(b.0)));
        rows.into_iter()
            .map(|(id, r)| Entry {
                id: *id,
                version: r.version,
                addrs: r.addr_list(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iroh::SecretKey;

    const TTL: Duration = Duration::from_secs(10);

    fn id() -> EndpointId {
        SecretKey::generate().public()
    }

    fn addr(n: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], n))
    }

    fn entry(id: EndpointId, version: u64, addrs: &[SocketAddr]) -> Entry {
        Entry {
            id,
            version,
            addrs: addrs.to_vec(),
        }
    }

    #[test]
    fn new_entries_are_found_once_and_self_is_ignored() {
        let me = id();
        let mut t = Table::new(me, TTL, 100);
        let now = Instant::now();
        let a = id();
        let (c, s) = t.merge(vec![entry(a, 1, &[addr(1)]), entry(me, 9, &[addr(2)])], now);
        assert_eq!(
            c,
            vec![Change::Found {
                id: a,
                addrs: vec![addr(1)]
            }]
        );
        assert_eq!(s.new, 1);
        // The same news again changes nothing.
        let (c, _) = t.merge(vec![entry(a, 1, &[addr(1)])], now);
        assert!(c.is_empty());
        // A newer version refreshes silently unless it brings an address.
        let (c, s) = t.merge(vec![entry(a, 2, &[addr(1)])], now);
        assert!(c.is_empty());
        assert_eq!(s.refreshed, 1);
        let (c, _) = t.merge(vec![entry(a, 2, &[addr(3)])], now);
        assert_eq!(c.len(), 1);
        assert_eq!(t.snapshot(None)[0].addrs.len(), 2);
    }

    #[test]
    fn entries_without_addresses_are_not_kept() {
        let mut t = Table::new(id(), TTL, 100);
        let (c, s) = t.merge(vec![entry(id(), 1, &[])], Instant::now());
        assert!(c.is_empty());
        assert_eq!(s.dropped, 1);
        assert!(t.is_empty());
    }

    #[test]
    fn unrefreshed_entries_age_out_and_stop_spreading() {
        let mut t = Table::new(id(), TTL, 100);
        let t0 = Instant::now();
        let (a, b) = (id(), id());
        t.merge(vec![entry(a, 1, &[addr(1)]), entry(b, 1, &[addr(2)])], t0);
        // b keeps sending heartbeats, a falls silent.
        for s in 1..=10 {
            t.merge(
                vec![entry(b, 1 + s, &[addr(2)])],
                t0 + Duration::from_secs(s),
            );
            assert!(t.expire(t0 + Duration::from_secs(s)).is_empty());
        }
        let lost = t.expire(t0 + Duration::from_secs(11));
        assert_eq!(lost, vec![Change::Lost { id: a }]);
        let spread: Vec<EndpointId> = t.snapshot(None).iter().map(|e| e.id).collect();
        assert_eq!(spread, vec![b]);
        // A relay's old copy does not bring it back; the peer's own newer one does.
        let later = t0 + Duration::from_secs(12);
        assert!(t.merge(vec![entry(a, 1, &[addr(1)])], later).0.is_empty());
        assert!(!t.is_live(&a));
        let (c, s) = t.merge(vec![entry(a, 50, &[addr(1)])], later);
        assert_eq!(c.len(), 1);
        assert_eq!(s.new, 1);
        assert!(t.is_live(&a));
        // Tombstones are forgotten after another TTL.
        t.expire(t0 + Duration::from_secs(30));
        t.expire(t0 + Duration::from_secs(45));
        assert!(t.is_empty());
    }

    #[test]
    fn a_live_connection_confirms_and_adds_the_observed_address() {
        let mut t = Table::new(id(), TTL, 100);
        let t0 = Instant::now();
        let a = id();
        assert!(t.confirm(a, Some(addr(9)), t0).is_none(), "no row yet");
        t.merge(vec![entry(a, 1, &[addr(1)])], t0);
        let c = t.confirm(a, Some(addr(9)), t0 + Duration::from_secs(9));
        assert!(matches!(c, Some(Change::Found { addrs, .. }) if addrs.len() == 2));
        assert!(t.expire(t0 + Duration::from_secs(15)).is_empty());
        assert_eq!(t.expire(t0 + Duration::from_secs(20)).len(), 1);
    }

    #[test]
    fn the_table_is_bounded_and_tombstones_make_room_first() {
        let mut t = Table::new(id(), TTL, 3);
        let t0 = Instant::now();
        let ids: Vec<EndpointId> = (0..5).map(|_| id()).collect();
        let (_, s) = t.merge(ids.iter().map(|i| entry(*i, 1, &[addr(1)])).collect(), t0);
        assert_eq!((s.new, s.full), (3, 2));
        assert_eq!(t.len(), 3);
        // Once they expire, newcomers take the tombstones' places.
        t.expire(t0 + Duration::from_secs(11));
        let (_, s) = t.merge(
            vec![entry(ids[3], 1, &[addr(1)]), entry(ids[4], 1, &[addr(1)])],
            t0 + Duration::from_secs(12),
        );
        assert_eq!(s.new, 2);
        assert_eq!(t.live(), 2);
        // One tombstone made room: they are bounded by `max_entries` too.
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn a_new_row_does_not_evict_the_tombstone_that_keeps_junk_out() {
        let mut t = Table::new(id(), TTL, 4);
        let t0 = Instant::now();
        let real = id();
        let junk: Vec<EndpointId> = (0..3).map(|_| id()).collect();
        let mut first = vec![entry(real, 1, &[addr(1)])];
        first.extend(junk.iter().map(|j| entry(*j, 1, &[addr(2)])));
        t.merge(first, t0);
        // The real peer stays connected; nobody refreshes the junk.
        let later = t0 + Duration::from_secs(11);
        t.confirm(real, None, later);
        assert_eq!(t.expire(later).len(), 3);
        // A new peer arrives while the table holds 4 rows...
        let (_, s) = t.merge(vec![entry(id(), 1, &[addr(3)])], later);
        assert_eq!(s.new, 1);
        // ...and a relay's copy of the junk, not yet expired there, comes back: it stays
        // out, instead of taking an evicted tombstone's place with a fresh TTL.
        let (changes, s) = t.merge(
            junk.iter().map(|j| entry(*j, 1, &[addr(2)])).collect(),
            later + Duration::from_secs(1),
        );
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!((s.new, t.live()), (0, 2));
    }

    #[test]
    fn addresses_per_row_are_bounded_and_recent_ones_win() {
        let mut t = Table::new(id(), TTL, 10);
        let t0 = Instant::now();
        let a = id();
        for p in 1..=20u16 {
            t.merge(
                vec![entry(a, 1, &[addr(p)])],
                t0 + Duration::from_millis(u64::from(p)),
            );
        }
        let snap = t.snapshot(None);
        assert_eq!(snap[0].addrs.len(), MAX_ADDRS_PER_ENTRY);
        assert_eq!(snap[0].addrs[0], addr(20));
        assert!(!snap[0].addrs.contains(&addr(1)));
    }

    #[test]
    fn snapshot_skips_what_the_asker_has() {
        let mut t = Table::new(id(), TTL, 10);
        let now = Instant::now();
        let (a, b) = (id(), id());
        t.merge(vec![entry(a, 5, &[addr(1)]), entry(b, 5, &[addr(2)])], now);
        let asker: HashMap<EndpointId, u64> = [(a, 5), (b, 4)].into_iter().collect();
        let s = t.snapshot(Some(&asker));
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].id, b);
    }
}

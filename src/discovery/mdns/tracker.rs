//! The mDNS records we know and the found/lost events that follow from them. No I/O:
//! the driver feeds it what mdns-sd and the one-shot query report, with the time, and
//! sends the events it returns.
//!
//! - Records are kept by full name, at most `max(--max-known-peers, 64)`; when full,
//!   the one resolved longest ago goes (`make_room`), and the browse is restarted once
//!   the flood has calmed down.
//! - A resolution carries every address mdns-sd holds for the record (it resolves from
//!   its cache, which drops an address one second after the peer announces a new set:
//!   the cache-flush bit). So the record's addresses are replaced, and `Found` is sent
//!   again whenever the set changes: after a renumber the peer manager hears the new
//!   address and drops the old one (a record resolves twice at first, IPv4 and then
//!   with IPv6; the second set holds the first).
//! - Our own record (by name or endpoint id), records of another app id (counted, each
//!   other app id logged at INFO once per [`super::others::RELOG_AFTER`]: a mistyped
//!   `--app-id` must not fail silently) and malformed TXT records (counted, logged at a
//!   bounded rate) are skipped.
//! - A peer is `Lost` when its last record goes (goodbye or expiry); one announced
//!   under two names stays while either lives.
//! - A record known only from the one-shot query is forgotten after
//!   [`oneshot::HINT_TTL`] unless the browse confirms it.
//! - A peer that said it is shutting down has its records marked departed: the peer
//!   manager drops its mdns source by itself, so no `Lost` here, and the goodbye that
//!   follows is only bookkeeping. A departed record still held [`DEPARTED_RECHECK`]
//!   later was announced again (the peer restarted): `Found` again.

use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use iroh::EndpointId;
use tracing::{debug, info, warn};

use super::{
    oneshot,
    others::{Notice, OtherFormations},
    scope::{dialable_addrs, BindScope},
    txt::{self, PeerTxt, TxtError, SERVICE_TYPE},
};
use crate::events::{DiscoveryEvent, Source};
use crate::ratelimit::RateLog;

/// Fewest resolved records tracked, whatever `--max-known-peers` says.
const MIN_TRACKED_RECORDS: usize = 64;
/// How long after a peer said it is shutting down we look whether mdns-sd still holds
/// its record. Its goodbye makes mdns-sd drop it one second later (RFC 6762 10.1); a
/// record still there well after that was announced again: the peer restarted.
pub const DEPARTED_RECHECK: Duration = Duration::from_secs(5);
/// mdns-sd caches every record it hears until its TTL runs out (PTR records of
/// python-zeroconf live 75 min), with no cap: a flood of fake instances would grow it
/// without bound. Stopping the browse empties its cache of our type; we restart the
/// browse when this many times the bound of new records arrived since the last restart...
const CACHE_PURGE_FACTOR: usize = 4;
/// ...but at most once per this interval, so that real peers are re-queried calmly.
const CACHE_PURGE_MIN_INTERVAL: Duration = Duration::from_secs(30);
/// After records had to be forgotten, browse afresh once no record was evicted for
/// this long: the flood has passed, and real peers that were crowded out are found again.
pub const REBROWSE_AFTER_FLOOD: Duration = Duration::from_secs(10);

/// A service instance as the browse or a one-shot answer described it.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub fullname: String,
    pub txt: Result<PeerTxt, TxtError>,
    /// Addresses with the index of the interface they came in on (0: none).
    pub addrs: Vec<(IpAddr, u32)>,
    pub port: u16,
}

impl Resolved {
    pub fn from_hint(h: &oneshot::Hint) -> Self {
        Resolved {
            fullname: h.fullname.clone(),
            txt: txt::parse_txt(h.txt.iter().map(|(k, v)| (k.as_str(), v.as_deref()))),
            addrs: h.addrs.clone(),
            port: h.port,
        }
    }
}

/// Counts since start, for the last log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub other_app_records: u64,
    pub malformed: u64,
    pub evicted: u64,
    pub cache_purges: u64,
}

#[derive(Debug)]
struct Record {
    id: EndpointId,
    addrs: BTreeSet<SocketAddr>,
    /// When the record was last resolved: the oldest goes first when the map is full.
    seen: Instant,
}

/// Tracks the mDNS records of our service type and the peers they announce.
#[derive(Debug)]
pub struct RecordTracker {
    me: EndpointId,
    app_id: String,
    own_name: String,
    scope: BindScope,
    max: usize,
    records: HashMap<String, Record>,
    /// Records known only from a hint, with when to forget them.
    hinted: HashMap<String, Instant>,
    /// Records of peers that said they are shutting down, with when to re-check them.
    departed: HashMap<String, Instant>,
    /// Whether our own record went out yet. Until then no peer can have resolved us,
    /// so what we find cannot be dialling us (`Found::unaware`).
    announced: bool,
    /// Records resolved for the first time since the last browse restart.
    new_since_purge: usize,
    last_purge: Instant,
    /// When to browse afresh after evictions (pushed back while they go on).
    rebrowse_at: Option<Instant>,
    stats: Stats,
    evict_log: RateLog,
    malformed_log: RateLog,
    /// Records of other app ids, and which of those were reported.
    others: OtherFormations,
}

impl RecordTracker {
    pub fn new(
        me: EndpointId,
        app_id: String,
        own_name: String,
        scope: BindScope,
        max_known_peers: usize,
        now: Instant,
    ) -> Self {
        RecordTracker {
            me,
            app_id,
            own_name,
            scope,
            max: max_known_peers.max(MIN_TRACKED_RECORDS),
            records: HashMap::new(),
            hinted: HashMap::new(),
            departed: HashMap::new(),
            announced: false,
            new_since_purge: 0,
            last_purge: now,
            rebrowse_at: None,
            stats: Stats::default(),
            evict_log: RateLog::default(),
            malformed_log: RateLog::default(),
            others: OtherFormations::default(),
        }
    }

    /// Records tracked now (a gauge for GetStatus).
    pub fn records(&self) -> usize {
        self.records.len()
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Records of other app ids held now (a gauge for GetStatus).
    pub fn other_app_records(&self) -> usize {
        self.others.records()
    }

    /// mdns-sd announced `name` on some interface.
    pub fn on_announced(&mut self, name: &str) {
        if name == self.own_name {
            self.announced = true;
        }
    }

    /// When [`RecordTracker::on_tick`] (or [`RecordTracker::take_rebrowse`]) has work next.
    pub fn next_deadline(&self) -> Option<Instant> {
        let hints = self.hinted.values().min();
        let departed = self.departed.values().min();
        [hints.copied(), departed.copied(), self.rebrowse_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// A `ServiceResolved` from the browse.
    pub fn on_resolved(&mut self, r: Resolved, now: Instant) -> Vec<DiscoveryEvent> {
        if r.fullname == self.own_name {
            return vec![];
        }
        // Confirmed by the browse: from now on it lives and dies with mdns-sd's record.
        self.hinted.remove(&r.fullname);
        // Resolved again after its peer said it was leaving: it is back.
        let back = self.departed.remove(&r.fullname).is_some();
        let Some((id, addrs)) = self.admit(&r, true, now) else {
            return vec![];
        };
        self.others.removed(&r.fullname);
        if !self.records.contains_key(&r.fullname) {
            self.make_room(now);
            self.new_since_purge += 1;
        }
        let mut events = vec![];
        let rec = self.records.entry(r.fullname.clone()).or_insert(Record {
            id,
            addrs: BTreeSet::new(),
            seen: now,
        });
        rec.seen = now;
        let replaced = (rec.id != id).then_some(rec.id);
        if replaced.is_some() {
            // The same name now carries another id (a reinstalled node): start over.
            rec.id = id;
            rec.addrs.clear();
        }
        let changed = rec.addrs != addrs;
        rec.addrs = addrs;
        let found = (changed || back).then(|| (rec.id, rec.addrs.clone()));
        if let Some(old) = replaced.filter(|old| !self.names(*old)) {
            events.push(DiscoveryEvent::Lost {
                id: old,
                source: Source::Mdns,
            });
        }
        if let Some((id, addrs)) = found {
            let unaware = !self.announced;
            info!(peer = %id, addrs = %crate::logfmt::list(&addrs), record = %r.fullname, unaware, "mdns: found peer");
            events.push(self.found(id, addrs, unaware));
        }
        events
    }

    /// An answer to the one-shot query: reported as found at once (it passes the same
    /// checks as a browse result), and forgotten after [`oneshot::HINT_TTL`] unless the
    /// browse resolves it meanwhile.
    pub fn on_hint(&mut self, r: Resolved, now: Instant) -> Vec<DiscoveryEvent> {
        if r.fullname.eq_ignore_ascii_case(&self.own_name)
            || self.records.contains_key(&r.fullname)
            || self.hinted.len() >= self.max
        {
            return vec![];
        }
        let Some((id, addrs)) = self.admit(&r, false, now) else {
            return vec![];
        };
        self.make_room(now);
        let record = Record {
            id,
            addrs: addrs.clone(),
            seen: now,
        };
        self.records.insert(r.fullname.clone(), record);
        self.hinted
            .insert(r.fullname.clone(), now + oneshot::HINT_TTL);
        let unaware = !self.announced;
        info!(peer = %id, addrs = %crate::logfmt::list(&addrs), record = %r.fullname, unaware, "mdns: found peer (answer to the one-shot query)");
        vec![self.found(id, addrs, unaware)]
    }

    /// A `ServiceRemoved`: the record's goodbye, or its TTL ran out.
    pub fn on_removed(&mut self, name: &str) -> Vec<DiscoveryEvent> {
        self.hinted.remove(name);
        self.others.removed(name);
        if self.departed.remove(name).is_some() {
            // Its peer left already; the peer manager dropped the source then.
            self.records.remove(name);
            debug!(record = %name, "mdns: goodbye of a peer that had left already");
            return vec![];
        }
        let Some(id) = self.forget(name) else {
            return vec![];
        };
        info!(peer = %id, record = %name, "mdns: peer said goodbye or its record expired");
        vec![DiscoveryEvent::Lost {
            id,
            source: Source::Mdns,
        }]
    }

    /// The peer closed its connections saying it is shutting down (authenticated, unlike
    /// its mDNS goodbye). The peer manager drops its mdns source itself; here its records
    /// are marked departed. Returns how many records were marked or dropped.
    pub fn on_left(&mut self, id: EndpointId, now: Instant) -> usize {
        let names: Vec<String> = self
            .records
            .iter()
            .filter(|(n, r)| r.id == id && !self.departed.contains_key(*n))
            .map(|(n, _)| n.clone())
            .collect();
        for name in &names {
            if self.hinted.remove(name).is_some() {
                // Known from the one-shot answer only: mdns-sd holds nothing to drop.
                self.records.remove(name);
            } else {
                self.departed.insert(name.clone(), now + DEPARTED_RECHECK);
            }
        }
        names.len()
    }

    /// Hints the browse did not confirm in time are lost; departed records still held
    /// after the re-check are found again.
    pub fn on_tick(&mut self, now: Instant) -> Vec<DiscoveryEvent> {
        let mut events = vec![];
        for name in take_due(&mut self.hinted, now) {
            let Some(id) = self.forget(&name) else {
                continue;
            };
            info!(peer = %id, record = %name, "mdns: a peer only the one-shot query reported was not confirmed by the browse; forgetting it");
            events.push(DiscoveryEvent::Lost {
                id,
                source: Source::Mdns,
            });
        }
        for name in take_due(&mut self.departed, now) {
            let Some(rec) = self.records.get(&name) else {
                continue;
            };
            info!(peer = %rec.id, record = %name, "mdns: a peer that shut down is announced again");
            let (id, addrs) = (rec.id, rec.addrs.clone());
            events.push(self.found(id, addrs, false));
        }
        events
    }

    /// Whether the browse should be restarted now because evictions stopped a while ago
    /// (then it is not due again until the next eviction).
    pub fn take_rebrowse(&mut self, now: Instant) -> bool {
        let due = self.rebrowse_at.is_some_and(|at| at <= now);
        if due {
            self.rebrowse_at = None;
        }
        due
    }

    /// Whether so many new records came in since the last browse restart (a flood of
    /// announcements) that mdns-sd's cache of our type should be emptied now.
    pub fn wants_purge(&self, now: Instant) -> bool {
        self.new_since_purge >= self.max * CACHE_PURGE_FACTOR
            && now.saturating_duration_since(self.last_purge) >= CACHE_PURGE_MIN_INTERVAL
    }

    /// The driver restarted the browse. The peer manager may have evicted peers we still
    /// track: forget what we told it, so that every record resolved again is reported
    /// found again.
    pub fn browsed_afresh(&mut self, now: Instant) {
        self.new_since_purge = 0;
        self.last_purge = now;
        self.stats.cache_purges += 1;
        self.others.clear_records();
        for rec in self.records.values_mut() {
            rec.addrs.clear();
        }
    }

    fn found(&self, id: EndpointId, addrs: BTreeSet<SocketAddr>, unaware: bool) -> DiscoveryEvent {
        DiscoveryEvent::Found {
            id,
            addrs,
            source: Source::Mdns,
            unaware,
        }
    }

    /// The checks every record passes, from the browse or a one-shot answer: a valid
    /// TXT record, not ours, of our app id, with an address we can dial. Rejections are
    /// counted and logged for browse results only (`counted`): a one-shot answer's
    /// record is resolved by the browse too, and would otherwise be counted twice.
    fn admit(
        &mut self,
        r: &Resolved,
        counted: bool,
        now: Instant,
    ) -> Option<(EndpointId, BTreeSet<SocketAddr>)> {
        let peer = match &r.txt {
            Ok(p) => p,
            Err(e) if counted => {
                self.stats.malformed += 1;
                self.warn_malformed(&r.fullname, e, now);
                return None;
            }
            Err(e) => {
                debug!(record = %r.fullname, error = %e, "mdns: one-shot answer with a malformed TXT record");
                return None;
            }
        };
        if peer.endpoint_id == self.me {
            return None; // our own record under an old or renamed name
        }
        if peer.app_id != self.app_id {
            if counted {
                self.stats.other_app_records += 1;
                debug!(
                    peer = %peer.endpoint_id, app_id = %peer.app_id, record = %r.fullname,
                    skipped_total = self.stats.other_app_records,
                    "mdns: skipping a record of another formation (app_id differs)"
                );
                let notice = self.others.seen(&r.fullname, &peer.app_id, now);
                self.report_other(notice, &r.fullname, peer);
            }
            return None;
        }
        let addrs = dialable_addrs(r.addrs.iter().copied(), r.port, &self.scope);
        if addrs.is_empty() {
            if counted {
                debug!(peer = %peer.endpoint_id, record = %r.fullname, "mdns: record has no address we can dial yet");
            }
            return None;
        }
        Some((peer.endpoint_id, addrs))
    }

    /// Makes room for one more record: the one resolved longest ago goes (no `Lost`:
    /// the peer manager bounds its own table).
    fn make_room(&mut self, now: Instant) {
        if self.records.len() < self.max {
            return;
        }
        let Some(victim) = self
            .records
            .iter()
            .min_by_key(|(_, r)| r.seen)
            .map(|(n, _)| n.clone())
        else {
            return;
        };
        self.records.remove(&victim);
        self.hinted.remove(&victim);
        self.departed.remove(&victim);
        self.stats.evicted += 1;
        self.rebrowse_at = Some(now + REBROWSE_AFTER_FLOOD);
        if let Some(suppressed) = self.evict_log.hit(now) {
            warn!(
                max = self.max,
                evicted_total = self.stats.evicted,
                suppressed_since_last = suppressed,
                "mdns: too many {SERVICE_TYPE} records; forgetting the oldest (raise --max-known-peers if this LAN is really that big)"
            );
        }
    }

    /// Drops a record; returns its peer if no other record names that peer.
    fn forget(&mut self, name: &str) -> Option<EndpointId> {
        let rec = self.records.remove(name)?;
        (!self.names(rec.id)).then_some(rec.id)
    }

    /// Whether some record still names this peer.
    fn names(&self, id: EndpointId) -> bool {
        self.records.values().any(|r| r.id == id)
    }

    /// One INFO line per other formation (see [`super::others`]): both sides of a mistyped
    /// app id otherwise only say "no peers known".
    fn report_other(&self, notice: Option<Notice>, fullname: &str, peer: &PeerTxt) {
        match notice {
            None => {}
            Some(Notice::Formation { app_id, records }) => {
                // Names are attacker-chosen: cut them before logging.
                let name: String = fullname.chars().take(80).collect();
                info!(
                    other_app_id = %app_id, app_id = %self.app_id, peer = %peer.endpoint_id,
                    record = %name, records,
                    "mdns: another formation is on this network (its app id differs from ours); \
                     its nodes are not dialled. If this node belongs to it, fix --app-id"
                );
            }
            Some(Notice::Many { suppressed }) => info!(
                app_id = %self.app_id, other_records = self.others.records(),
                suppressed_since_last = suppressed,
                "mdns: records of many other formations (app ids) on this network; not dialled"
            ),
        }
    }

    fn warn_malformed(&mut self, fullname: &str, e: &TxtError, now: Instant) {
        let Some(suppressed) = self.malformed_log.hit(now) else {
            return;
        };
        // Names are attacker-chosen: cut them before logging.
        let name: String = fullname.chars().take(80).collect();
        warn!(
            record = %name, error = %e,
            suppressed_since_last = suppressed,
            "mdns: ignoring a {SERVICE_TYPE} record with a malformed TXT record"
        );
    }
}

/// Removes and returns the names whose time has come.
fn take_due(map: &mut HashMap<String, Instant>, now: Instant) -> Vec<String> {
    let due: Vec<String> = map
        .iter()
        .filter(|(_, at)| **at <= now)
        .map(|(n, _)| n.clone())
        .collect();
    for n in &due {
        map.remove(n);
    }
    due
}

#[cfg(test)]
mod tests;

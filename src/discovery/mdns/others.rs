//! Records of other formations (another app id) on this LAN. They are never dialled,
//! but an operator who mistyped `--app-id` must see why nobody is found: each other app
//! id is reported once (again after [`RELOG_AFTER`] while it is still seen), and the
//! records are counted for `status`. Everything here is bounded: app ids and record
//! names are chosen by whoever sends the record.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::ratelimit::RateLog;

/// How long before an app id already reported is reported again.
pub const RELOG_AFTER: Duration = Duration::from_secs(600);
/// Records of other app ids counted at most (the gauge stops there).
const MAX_RECORDS: usize = 256;
/// App ids remembered as reported; beyond that a summary line, rate-limited.
const MAX_APP_IDS: usize = 64;
/// Interval of the summary line when more app ids than [`MAX_APP_IDS`] show up.
const MANY_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// What to log about a record of another formation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// First sight of this app id (or the first in [`RELOG_AFTER`]); `records`: the
    /// records of that app id held now.
    Formation { app_id: String, records: usize },
    /// Too many other app ids to report each; `suppressed` since the last summary.
    Many { suppressed: u64 },
}

#[derive(Debug)]
pub struct OtherFormations {
    /// Full record name -> its app id.
    records: HashMap<String, String>,
    /// App id -> when it was last reported.
    reported: HashMap<String, Instant>,
    many_log: RateLog,
}

impl Default for OtherFormations {
    fn default() -> Self {
        OtherFormations {
            records: HashMap::new(),
            reported: HashMap::new(),
            many_log: RateLog::new(MANY_LOG_INTERVAL),
        }
    }
}

impl OtherFormations {
    /// A record of another app id was resolved. Returns what to log, if anything.
    pub fn seen(&mut self, fullname: &str, app_id: &str, now: Instant) -> Option<Notice> {
        if self.records.len() < MAX_RECORDS || self.records.contains_key(fullname) {
            self.records
                .insert(fullname.to_string(), app_id.to_string());
        }
        let due = |at: &Instant| now.saturating_duration_since(*at) >= RELOG_AFTER;
        if self.reported.get(app_id).is_some_and(|at| !due(at)) {
            return None;
        }
        if !self.reported.contains_key(app_id) && self.reported.len() >= MAX_APP_IDS {
            self.reported.retain(|_, at| !due(at));
            if self.reported.len() >= MAX_APP_IDS {
                return self
                    .many_log
                    .hit(now)
                    .map(|suppressed| Notice::Many { suppressed });
            }
        }
        self.reported.insert(app_id.to_string(), now);
        let records = self.records.values().filter(|a| *a == app_id).count();
        Some(Notice::Formation {
            app_id: app_id.to_string(),
            records,
        })
    }

    /// The record went (goodbye, expiry) or now carries our app id.
    pub fn removed(&mut self, fullname: &str) {
        self.records.remove(fullname);
    }

    /// The browse restarts: every record still there is resolved again.
    pub fn clear_records(&mut self) {
        self.records.clear();
    }

    /// Records of other app ids held now (a gauge for `status`).
    pub fn records(&self) -> usize {
        self.records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn formation(app_id: &str, records: usize) -> Option<Notice> {
        Some(Notice::Formation {
            app_id: app_id.into(),
            records,
        })
    }

    #[test]
    fn each_other_app_id_is_reported_once_per_interval() {
        let t0 = Instant::now();
        let mut o = OtherFormations::default();
        assert_eq!(o.seen("a._p", "demo", t0), formation("demo", 1));
        // Re-resolutions and more nodes of the same formation stay quiet.
        assert_eq!(o.seen("a._p", "demo", t0 + Duration::from_secs(1)), None);
        assert_eq!(o.seen("b._p", "demo", t0 + Duration::from_secs(2)), None);
        assert_eq!(o.seen("c._p", "other", t0), formation("other", 1));
        assert_eq!(o.records(), 3);
        let later = t0 + RELOG_AFTER;
        assert_eq!(o.seen("a._p", "demo", later), formation("demo", 2));
    }

    #[test]
    fn records_are_counted_while_they_live() {
        let t0 = Instant::now();
        let mut o = OtherFormations::default();
        o.seen("a._p", "demo", t0);
        o.seen("b._p", "demo", t0);
        o.removed("a._p");
        o.removed("never-seen._p");
        assert_eq!(o.records(), 1);
        o.clear_records();
        assert_eq!(o.records(), 0);
        // The browse restart does not make the formation news again.
        assert_eq!(o.seen("b._p", "demo", t0), None);
    }

    #[test]
    fn a_flood_of_app_ids_is_bounded() {
        let t0 = Instant::now();
        let mut o = OtherFormations::default();
        let mut formations = 0;
        let mut many = vec![];
        for n in 0..2000 {
            match o.seen(&format!("r{n}._p"), &format!("app{n}"), t0) {
                Some(Notice::Formation { .. }) => formations += 1,
                Some(Notice::Many { suppressed }) => many.push(suppressed),
                None => {}
            }
        }
        assert_eq!(formations, MAX_APP_IDS);
        assert_eq!(many, vec![0], "one summary line, then silence");
        assert_eq!(o.records(), MAX_RECORDS);
        assert!(o.reported.len() <= MAX_APP_IDS);
        // Once the reported ones are old, new app ids are reported again.
        let later = t0 + RELOG_AFTER;
        assert_eq!(o.seen("x._p", "fresh", later), formation("fresh", 0));
    }
}

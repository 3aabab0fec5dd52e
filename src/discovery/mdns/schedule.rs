//! When the driver has to act on the mdns-sd daemon by itself: announce our record
//! again, re-apply the interface selection after a watcher change (within a token
//! bucket), restore the daemon's slow interface check after a fast one, and query again
//! shortly after an interface appeared. No I/O: one [`Schedule::next_deadline`], and
//! [`Schedule::take_due`] says what is due.

use std::time::{Duration, Instant};

use tracing::debug;

use crate::ratelimit::TokenBucket;

/// Watcher-driven re-applications of the interface selection allowed at once...
pub const TRIGGER_BURST: u32 = 3;
/// ...and then one per this interval (so at most 3 + 10 per minute).
pub const TRIGGER_REFILL: Duration = Duration::from_secs(6);
/// After a fast interface check was asked for, the slow one is restored this much later.
const RESTORE_CHECK_AFTER: Duration = Duration::from_millis(1500);
/// Our records are announced again this often (plus up to [`REANNOUNCE_JITTER`]).
/// mdns-sd asks every peer for its SRV and address records at 80% of their 120 s TTL
/// (96 s after it last heard them), and every node asks for every peer: N(N-1) queries
/// per cycle, each answered. Announcing our own records before that resets the timers of
/// all peers at once: one announcement (and its resend) per node per cycle, so the
/// steady-state traffic per node no longer grows with N.
const REANNOUNCE_EVERY: Duration = Duration::from_secs(75);
const REANNOUNCE_JITTER: Duration = Duration::from_secs(10);
/// Extra announcements after start (each one is mdns-sd's announcement plus its resend
/// a second later), on top of mdns-sd's own two right after probing. During a flood of
/// spoofed announcements the peers' receive buffers overflow in bursts: every query for
/// our type (our own browse queries go out at about 0, 1, 3, 7 and 15 s) makes the
/// flooder answer with its whole fake registry at once, and whatever arrives meanwhile
/// is dropped by the kernel. Announcing again between those queries gives peers more
/// chances to hear a new node; RFC 6762 8.3 allows up to eight announcements.
const STARTUP_REANNOUNCE: [Duration; 2] = [Duration::from_secs(5), Duration::from_secs(11)];
/// A new interface (or address) gets a browse query from mdns-sd at once; we ask again
/// this much later. A peer that multicast its record less than a second before the
/// first query does not answer it (RFC 6762 §6 rate limit), and without a second query
/// it would be found only at its next announcement or our next scheduled query
/// (seconds to minutes away) while the connection waited for the tie-break.
const REQUERY_AFTER_NEW_INTERFACE: Duration = Duration::from_millis(1100);
/// Extra queries allowed at once when interfaces flap, then one per [`REQUERY_REFILL`].
const REQUERY_BURST: u32 = 2;
const REQUERY_REFILL: Duration = Duration::from_secs(10);

/// Something the driver must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Register our service again (an announcement, no new probe).
    Reannounce,
    /// Make mdns-sd re-apply its interface selection; with `fast_ip_check`, also make
    /// its next interface check come in a second (it notices removals only then).
    Reapply { fast_ip_check: bool },
    /// Put the daemon's interface check back to its slow interval.
    RestoreIpCheck,
    /// Send a browse query again.
    Requery,
}

#[derive(Debug)]
pub struct Schedule {
    started: Instant,
    reannounce_at: Instant,
    /// How many of [`STARTUP_REANNOUNCE`] are scheduled or done.
    startup_announces: usize,
    trigger: TokenBucket,
    /// A re-apply the bucket deferred.
    pending_trigger: Option<Instant>,
    /// An interface or address went away since the last re-apply.
    pending_removal: bool,
    restore_check_at: Option<Instant>,
    /// When to query again after an interface became usable or gained an address.
    requery_at: Option<Instant>,
    /// Bounds those extra queries when interfaces flap.
    requery: TokenBucket,
}

impl Schedule {
    pub fn new(now: Instant) -> Self {
        Schedule {
            started: now,
            reannounce_at: now + STARTUP_REANNOUNCE[0],
            startup_announces: 1,
            trigger: TokenBucket::new(TRIGGER_BURST, TRIGGER_REFILL, now),
            pending_trigger: None,
            pending_removal: false,
            restore_check_at: None,
            requery_at: None,
            requery: TokenBucket::new(REQUERY_BURST, REQUERY_REFILL, now),
        }
    }

    /// The earliest time something is due (there is always a next announcement).
    pub fn next_deadline(&self) -> Instant {
        [self.pending_trigger, self.restore_check_at, self.requery_at]
            .into_iter()
            .flatten()
            .fold(self.reannounce_at, Instant::min)
    }

    /// The eligible interfaces changed. `removal`: an interface or address went away;
    /// `gained`: one came. Returns the re-apply to do now, if the bucket allows it
    /// (else it is deferred to when it does).
    pub fn interfaces_changed(&mut self, removal: bool, gained: bool, now: Instant) -> Option<Job> {
        self.pending_removal |= removal;
        if gained {
            // Counted from the latest change: the re-apply sends the first query.
            self.requery_at = Some(now + REQUERY_AFTER_NEW_INTERFACE);
        }
        self.reapply(now)
    }

    /// What is due at `now`, in no particular order. `jitter` (0..1) spreads the next
    /// periodic announcement.
    pub fn take_due(&mut self, now: Instant, jitter: f64) -> Vec<Job> {
        let mut jobs = vec![];
        if self.reannounce_at <= now {
            self.reannounce_at = match STARTUP_REANNOUNCE.get(self.startup_announces) {
                Some(d) => self.started + *d,
                None => now + REANNOUNCE_EVERY + REANNOUNCE_JITTER.mul_f64(jitter.clamp(0.0, 1.0)),
            };
            self.startup_announces = self.startup_announces.saturating_add(1);
            jobs.push(Job::Reannounce);
        }
        if take_if_due(&mut self.pending_trigger, now) {
            jobs.extend(self.reapply(now));
        }
        if take_if_due(&mut self.restore_check_at, now) {
            // The fast check has dropped the vanished address from our record by now.
            // Peers still hold it (nothing withdraws one address; it would live out its
            // 120 s TTL): an announcement of what is left, with the cache-flush bit,
            // makes them drop it within a second. After a renumber that is what moves
            // their connections (the peer manager follows a connected peer's move).
            jobs.push(Job::RestoreIpCheck);
            jobs.push(Job::Reannounce);
        }
        if take_if_due(&mut self.requery_at, now) {
            if self.requery.take(now).is_ok() {
                jobs.push(Job::Requery);
            } else {
                debug!("mdns: interfaces change often; no extra query this time");
            }
        }
        jobs
    }

    fn reapply(&mut self, now: Instant) -> Option<Job> {
        match self.trigger.take(now) {
            Ok(()) => {
                let fast_ip_check = std::mem::take(&mut self.pending_removal);
                if fast_ip_check {
                    self.restore_check_at = Some(now + RESTORE_CHECK_AFTER);
                }
                Some(Job::Reapply { fast_ip_check })
            }
            Err(at) => {
                debug!("mdns: interface changes too frequent; next re-announce deferred");
                self.pending_trigger = Some(self.pending_trigger.map_or(at, |p| p.min(at)));
                None
            }
        }
    }
}

/// Clears `at` and says true if it was due.
fn take_if_due(at: &mut Option<Instant>, now: Instant) -> bool {
    let due = at.is_some_and(|t| t <= now);
    if due {
        *at = None;
    }
    due
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn announces_at_5_and_11_s_then_every_75_to_85_s() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        assert_eq!(s.next_deadline(), t0 + secs(5.0));
        assert!(s.take_due(t0 + secs(4.9), 0.5).is_empty());
        assert_eq!(s.take_due(t0 + secs(5.0), 0.5), vec![Job::Reannounce]);
        assert_eq!(s.next_deadline(), t0 + secs(11.0));
        // Late wake-ups do not shift the startup announcements.
        assert_eq!(s.take_due(t0 + secs(11.3), 0.5), vec![Job::Reannounce]);
        assert_eq!(s.next_deadline(), t0 + secs(11.3 + 80.0));
        let t = s.next_deadline();
        assert_eq!(s.take_due(t, 1.0), vec![Job::Reannounce]);
        assert_eq!(s.next_deadline(), t + secs(85.0));
    }

    #[test]
    fn reapplies_are_bounded_and_deferred_ones_come_later() {
        let start = Instant::now();
        let mut s = Schedule::new(start);
        // After the startup announcements, so that only the re-applies are due.
        s.take_due(start + secs(5.0), 0.0);
        s.take_due(start + secs(11.0), 0.0);
        let t0 = start + secs(12.0);
        let now = Some(Job::Reapply {
            fast_ip_check: false,
        });
        for _ in 0..TRIGGER_BURST {
            assert_eq!(s.interfaces_changed(false, false, t0), now);
        }
        assert_eq!(s.interfaces_changed(false, false, t0), None, "bucket empty");
        assert_eq!(s.interfaces_changed(true, false, t0), None);
        let refill = t0 + TRIGGER_REFILL;
        assert_eq!(s.next_deadline(), refill);
        // The deferred one carries the removal seen meanwhile.
        let fast = Job::Reapply {
            fast_ip_check: true,
        };
        assert_eq!(s.take_due(refill, 0.0), vec![fast]);
        let restore = refill + RESTORE_CHECK_AFTER;
        assert_eq!(s.next_deadline(), restore);
        assert_eq!(
            s.take_due(restore, 0.0),
            vec![Job::RestoreIpCheck, Job::Reannounce],
            "a removal is withdrawn from peers' caches by announcing what is left"
        );
        assert_eq!(s.next_deadline(), start + secs(11.0 + 75.0));
    }

    #[test]
    fn a_new_interface_is_queried_again_within_a_bound() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        let mut queries = 0;
        // An interface that comes back every 2 s for 20 s.
        for i in 0..10 {
            let t = t0 + secs(2.0 * i as f64);
            s.interfaces_changed(false, true, t);
            let due = t + REQUERY_AFTER_NEW_INTERFACE;
            assert!(s.next_deadline() <= due);
            let jobs = s.take_due(due, 0.0);
            queries += jobs.iter().filter(|j| **j == Job::Requery).count();
        }
        assert_eq!(queries, 3, "two at once, then one per 10 s");
    }
}

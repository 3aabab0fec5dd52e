//! Per-app publish limits: one token bucket per local app, so that one noisy app
//! cannot take the whole of `--max-publish-rate` from the others.
//!
//! An app is what the API can tell apart without trusting the caller: the peer process
//! of a Unix-socket connection (its pid, from the kernel), or the remote address and
//! port of a TCP connection. An app that opens several TCP connections gets a bucket
//! on each; over a Unix socket (the packaged default) all of a process's connections
//! share one.

use std::{collections::HashMap, fmt, net::SocketAddr, sync::Mutex, time::Instant};

use crate::ratelimit::TokenBucket;

/// Most buckets kept. Past it, idle buckets (full again) are dropped first; if every
/// one is busy the new app shares the overflow bucket, so a flood of short connections
/// costs bounded memory and still cannot exceed the global rate.
const MAX_APPS: usize = 1024;

/// Who published, as the API sees the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum App {
    /// A process on the Unix socket, by the pid the kernel reports for the peer.
    Process { pid: i32, uid: u32 },
    /// A TCP connection, by its remote address.
    Tcp(SocketAddr),
    /// The caller could not be told apart (no connection info): one shared bucket.
    #[default]
    Unknown,
}

impl fmt::Display for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            App::Process { pid, uid } => write!(f, "pid {pid} (uid {uid})"),
            App::Tcp(a) => write!(f, "tcp {a}"),
            App::Unknown => f.write_str("an unidentified client"),
        }
    }
}

#[derive(Debug)]
pub struct AppBuckets {
    rate: u32,
    buckets: Mutex<HashMap<App, TokenBucket>>,
    overflow: Mutex<TokenBucket>,
}

impl AppBuckets {
    pub fn new(rate: u32, now: Instant) -> Self {
        AppBuckets {
            rate,
            buckets: Mutex::new(HashMap::new()),
            overflow: Mutex::new(TokenBucket::per_second(rate, now)),
        }
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Takes one of `app`'s tokens; false when the app is over its rate.
    pub fn take(&self, app: App, now: Instant) -> bool {
        let rate = self.rate;
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(&app) && map.len() >= MAX_APPS {
            map.retain(|_, b| b.available(now) < rate);
            if map.len() >= MAX_APPS {
                drop(map);
                let mut o = self.overflow.lock().unwrap_or_else(|e| e.into_inner());
                return o.take(now).is_ok();
            }
        }
        map.entry(app)
            .or_insert_with(|| TokenBucket::per_second(rate, now))
            .take(now)
            .is_ok()
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn tcp(port: u16) -> App {
        App::Tcp(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn each_app_has_its_own_bucket() {
        let t0 = Instant::now();
        let b = AppBuckets::new(3, t0);
        let noisy = App::Process { pid: 10, uid: 0 };
        let quiet = App::Process { pid: 11, uid: 0 };
        assert!((0..3).all(|_| b.take(noisy, t0)));
        assert!(!b.take(noisy, t0), "the noisy app is over its rate");
        assert!(b.take(quiet, t0), "another app still publishes");
        assert!(
            b.take(noisy, t0 + Duration::from_secs(1)),
            "refilled a second later"
        );
    }

    #[test]
    fn idle_buckets_make_room_and_busy_ones_share_the_overflow() {
        let t0 = Instant::now();
        let b = AppBuckets::new(2, t0);
        for p in 0..MAX_APPS as u16 {
            assert!(b.take(tcp(p), t0));
        }
        // Every bucket is busy (one token used): the next app goes to the overflow.
        let late = tcp(60_000);
        assert!(b.take(late, t0));
        assert!(b.take(late, t0));
        assert!(!b.take(late, t0), "the overflow bucket has a rate too");
        assert_eq!(b.tracked(), MAX_APPS);
        // A second later they are all full (idle) again and are dropped for a new one.
        let t1 = t0 + Duration::from_secs(1);
        assert!(b.take(tcp(60_001), t1));
        assert_eq!(b.tracked(), 1);
    }
}

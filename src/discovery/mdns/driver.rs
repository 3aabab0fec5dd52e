//! The task that talks to the mdns-sd daemon: it owns the daemon, its browse and
//! monitor channels, the interface subscription, the one-shot answers and the peer
//! events, hands what they report to the [`RecordTracker`], sends the tracker's events to the
//! peer manager and carries out the [`Schedule`]'s jobs. One timer: it sleeps until the
//! earlier of the tracker's and the schedule's next deadline.

use std::time::{Duration, Instant};

use mdns_sd::{
    DaemonEvent, ResolvedService, ServiceDaemon, ServiceEvent, ServiceInfo, UnregisterStatus,
};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    interfaces::Interfaces,
    oneshot,
    schedule::{Job, Schedule},
    scope::scoped,
    tracker::{RecordTracker, Resolved},
    txt::{self, SERVICE_TYPE},
};
use crate::discovery::EventSink;
use crate::events::{DiscoveryEvent, PeerEvent, PeerEventKind};
use crate::node::peers::PeerManagerHandle;
use crate::platform::iface::IfaceChange;
use crate::ratelimit::TokenBucket;

/// mdns-sd's own interface re-check, a safety net behind the watcher (seconds).
pub const DAEMON_IP_CHECK_SECS: u32 = 30;
/// After an interface or address went away, mdns-sd re-checks this soon.
const FAST_IP_CHECK_SECS: u32 = 1;
/// Pause between unregister (goodbye + one resend at 120 ms) and shutdown.
const GOODBYE_PAUSE: Duration = Duration::from_millis(200);
/// A lost browse subscription is renewed at most this often (after a burst of 3).
pub const RENEW_BURST: u32 = 3;
pub const RENEW_REFILL: Duration = Duration::from_secs(10);

/// Whether the loop goes on after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Go,
    /// Shutdown, or the peer manager is gone: say goodbye and stop.
    Stop,
    /// The daemon is gone: nothing left to say goodbye with.
    Dead,
}

pub struct Driver {
    pub(super) daemon: ServiceDaemon,
    /// Our service as first registered (mdns-sd fills in the addresses at each register).
    pub(super) info: ServiceInfo,
    pub(super) browse: mdns_sd::Receiver<ServiceEvent>,
    /// `None` once the daemon closed it.
    pub(super) monitor: Option<mdns_sd::Receiver<DaemonEvent>>,
    pub(super) ifaces: Interfaces,
    pub(super) tracker: RecordTracker,
    pub(super) schedule: Schedule,
    /// Answers to the one-shot query at start; `None` once it is done.
    pub(super) hints: Option<mpsc::Receiver<oneshot::Hint>>,
    /// The peer manager's events (for `Left`); `None` once it is gone.
    pub(super) peer_events: Option<broadcast::Receiver<PeerEvent>>,
    pub(super) events: EventSink,
    pub(super) peers: PeerManagerHandle,
    pub(super) shutdown: CancellationToken,
    /// Bounds how often a lost browse subscription is renewed.
    pub(super) renew: TokenBucket,
}

impl Driver {
    pub async fn run(mut self) {
        let shutdown = self.shutdown.clone();
        let flow = loop {
            let deadline = self.schedule.next_deadline();
            let deadline = self
                .tracker
                .next_deadline()
                .map_or(deadline, |t| t.min(deadline));
            let flow = tokio::select! {
                _ = shutdown.cancelled() => Flow::Stop,
                ev = self.browse.recv_async() => match ev {
                    Ok(ev) => self.on_browse(ev).await,
                    // mdns-sd ends a subscription whose channel is full (1000 events): a
                    // flood can do that. Renew it, within a bound.
                    Err(_) => self.renew_browse().await,
                },
                ev = recv_monitor(&mut self.monitor) => self.on_daemon_event(ev),
                changes = self.ifaces.next() => self.on_interfaces(changes).await,
                hint = recv_opt(&mut self.hints) => self.on_hint(hint).await,
                ev = recv_peer_event(&mut self.peer_events) => self.on_peer_event(ev),
                _ = tokio::time::sleep_until(deadline.into()) => self.on_deadline().await,
            };
            if flow != Flow::Go {
                break flow;
            }
        };
        match flow {
            Flow::Dead => {
                warn!("mdns: the mDNS daemon stopped unexpectedly; no more mDNS discovery")
            }
            _ => self.goodbye().await,
        }
    }

    /// Sends the tracker's events; `Stop` once the peer manager is gone.
    async fn emit(&self, events: Vec<DiscoveryEvent>) -> Flow {
        for ev in events {
            if !self.events.send(ev).await {
                return Flow::Stop;
            }
        }
        Flow::Go
    }

    async fn on_browse(&mut self, ev: ServiceEvent) -> Flow {
        let flow = self.on_service_event(ev).await;
        // A gauge for GetStatus: a churn or flood test sees whether the map of records
        // stays bounded.
        let counters = &self.peers.counters;
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        counters
            .mdns_records
            .store(self.tracker.records() as u64, relaxed);
        // Shown by `status`: records of other app ids explain "no peers known".
        counters
            .mdns_other_app_records
            .store(self.tracker.other_app_records() as u64, relaxed);
        let now = Instant::now();
        if flow == Flow::Go && self.tracker.wants_purge(now) {
            warn!(
                tracked = self.tracker.records(),
                "mdns: unusually many {SERVICE_TYPE} records (a flood of announcements?); \
                 emptying the mDNS cache and browsing afresh"
            );
            self.browse_afresh(now);
        }
        flow
    }

    async fn on_service_event(&mut self, ev: ServiceEvent) -> Flow {
        let events = match ev {
            ServiceEvent::ServiceResolved(rs) => {
                self.tracker.on_resolved(resolved(&rs), Instant::now())
            }
            ServiceEvent::ServiceRemoved(_, name) => self.tracker.on_removed(&name),
            _ => return Flow::Go,
        };
        self.emit(events).await
    }

    fn on_daemon_event(&mut self, ev: Option<DaemonEvent>) -> Flow {
        match ev {
            None => self.monitor = None,
            Some(DaemonEvent::Error(e)) => warn!(error = %e, "mdns: daemon error"),
            Some(DaemonEvent::NameChange(c)) => warn!(
                original = %c.original, new = %c.new_name,
                "mdns: name conflict on the link; the daemon renamed our record"
            ),
            Some(DaemonEvent::Announce(name, intf)) => {
                self.tracker.on_announced(&name);
                debug!(record = %name, interface = %intf, "mdns: announced")
            }
            Some(DaemonEvent::IpAdd(ip)) => debug!(%ip, "mdns: daemon uses a new address"),
            Some(DaemonEvent::IpDel(ip)) => debug!(%ip, "mdns: daemon dropped an address"),
            Some(_) => {}
        }
        Flow::Go
    }

    async fn on_interfaces(&mut self, changes: Option<Vec<IfaceChange>>) -> Flow {
        let Some(changes) = changes else {
            return Flow::Go; // the watcher is gone; mdns-sd's own check remains
        };
        let change = self.ifaces.apply(&changes);
        if change.relevant {
            let now = Instant::now();
            if let Some(job) = self
                .schedule
                .interfaces_changed(change.removal, change.gained, now)
            {
                return self.run_job(job).await;
            }
        }
        Flow::Go
    }

    async fn on_hint(&mut self, hint: Option<oneshot::Hint>) -> Flow {
        let Some(h) = hint else {
            self.hints = None;
            return Flow::Go;
        };
        let events = self
            .tracker
            .on_hint(Resolved::from_hint(&h), Instant::now());
        self.emit(events).await
    }

    /// A peer that closes its connections because it is shutting down: the peer
    /// manager drops its mdns source by itself; its records are marked departed here.
    fn on_peer_event(&mut self, ev: Result<PeerEvent, broadcast::error::RecvError>) -> Flow {
        match ev {
            Ok(ev) if ev.kind == PeerEventKind::Left => {
                if self.tracker.on_left(ev.endpoint_id, Instant::now()) > 0 {
                    info!(peer = %ev.endpoint_id, "mdns: peer is shutting down; forgetting it now, not a second after its goodbye");
                }
            }
            // A missed departure only means waiting for mdns-sd's goodbye.
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => self.peer_events = None,
        }
        Flow::Go
    }

    async fn on_deadline(&mut self) -> Flow {
        let now = Instant::now();
        for job in self.schedule.take_due(now, rand::random::<f64>()) {
            let flow = self.run_job(job).await;
            if flow != Flow::Go {
                return flow;
            }
        }
        if self.tracker.take_rebrowse(now) {
            info!(
                tracked = self.tracker.records(),
                "mdns: the flood of records has calmed down; browsing afresh to find peers it crowded out"
            );
            self.browse_afresh(now);
        }
        let events = self.tracker.on_tick(now);
        self.emit(events).await
    }

    async fn run_job(&mut self, job: Job) -> Flow {
        match job {
            Job::Reannounce => {
                // Registering the same service again announces it (no new probe: the
                // name is ours already), with mdns-sd's resend a second later.
                if let Err(e) = self.daemon.register(self.info.clone()) {
                    debug!(error = %e, "mdns: re-announce failed");
                }
            }
            Job::Reapply { fast_ip_check } => {
                // Toggling this option is the one daemon command that re-applies the
                // interface selection immediately without adding a selection entry
                // (enable_interface would grow the daemon's list on every change). On
                // Linux it changes nothing else: it concerns macOS awdl/llw links.
                let _ = self.daemon.include_apple_p2p(true);
                let _ = self.daemon.include_apple_p2p(false);
                if fast_ip_check {
                    // Vanished interfaces and addresses are only noticed by the
                    // daemon's own check: make the next one come in 1 s.
                    let _ = self.daemon.set_ip_check_interval(FAST_IP_CHECK_SECS);
                }
            }
            Job::RestoreIpCheck => {
                let _ = self.daemon.set_ip_check_interval(DAEMON_IP_CHECK_SECS);
            }
            Job::Requery => return self.requery().await,
        }
        Flow::Go
    }

    /// Restarts the browse, which empties mdns-sd's cache of our type; real peers
    /// answer the new browse's query.
    fn browse_afresh(&mut self, now: Instant) {
        self.tracker.browsed_afresh(now);
        let _ = self.daemon.stop_browse(SERVICE_TYPE);
        match self.daemon.browse(SERVICE_TYPE) {
            Ok(b) => self.browse = b,
            Err(e) => warn!(error = %e, "mdns: cannot browse afresh"),
        }
    }

    /// Sends a browse query now (with known answers, so peers already resolved stay
    /// quiet) by browsing again: mdns-sd replaces the subscription, reports the cached
    /// peers again (repeats, ignored) and restarts its query schedule. Events already
    /// queued on the old subscription are handled first.
    async fn requery(&mut self) -> Flow {
        let new = match self.daemon.browse(SERVICE_TYPE) {
            Ok(b) => b,
            Err(e) => {
                debug!(error = %e, "mdns: cannot query again");
                return self.renew_browse().await;
            }
        };
        debug!("mdns: querying again after an interface change");
        let old = std::mem::replace(&mut self.browse, new);
        while let Ok(ev) = old.try_recv() {
            if self.on_service_event(ev).await != Flow::Go {
                return Flow::Stop;
            }
        }
        Flow::Go
    }

    /// Browses again after the subscription was dropped, within the bucket's bound.
    async fn renew_browse(&mut self) -> Flow {
        while let Err(at) = self.renew.take(Instant::now()) {
            tokio::select! {
                _ = self.shutdown.cancelled() => return Flow::Stop,
                _ = tokio::time::sleep_until(at.into()) => {}
            }
        }
        warn!(
            "mdns: the browse subscription fell behind and was dropped (a flood?); browsing again"
        );
        let _ = self.daemon.stop_browse(SERVICE_TYPE);
        match self.daemon.browse(SERVICE_TYPE) {
            Ok(b) => {
                self.browse = b;
                Flow::Go
            }
            Err(_) => Flow::Dead,
        }
    }

    /// Unregister (goodbye packets, resent once after 120 ms), pause, shut down.
    async fn goodbye(&mut self) {
        if let Ok(rx) = self.daemon.unregister(self.info.get_fullname()) {
            match tokio::time::timeout(Duration::from_millis(500), rx.recv_async()).await {
                Ok(Ok(UnregisterStatus::OK)) => debug!("mdns: goodbye sent"),
                other => debug!(result = ?other, "mdns: unregister did not confirm"),
            }
        }
        tokio::time::sleep(GOODBYE_PAUSE).await;
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = tokio::time::timeout(Duration::from_millis(500), rx.recv_async()).await;
        }
        let s = self.tracker.stats();
        info!(
            other_app_records = s.other_app_records,
            malformed_records = s.malformed,
            tracked_records_evicted = s.evicted,
            cache_purges = s.cache_purges,
            "mdns: stopped"
        );
    }
}

/// A browse result as the tracker takes it.
fn resolved(rs: &ResolvedService) -> Resolved {
    let props = rs.get_properties();
    Resolved {
        fullname: rs.get_fullname().to_string(),
        txt: txt::parse_txt(props.iter().map(|p| (p.key(), p.val()))),
        addrs: rs.get_addresses().iter().map(scoped).collect(),
        port: rs.get_port(),
    }
}

/// The next message of a channel that may be gone (then: pending for ever).
async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_monitor(rx: &mut Option<mdns_sd::Receiver<DaemonEvent>>) -> Option<DaemonEvent> {
    match rx {
        Some(rx) => rx.recv_async().await.ok(),
        None => std::future::pending().await,
    }
}

async fn recv_peer_event(
    rx: &mut Option<broadcast::Receiver<PeerEvent>>,
) -> Result<PeerEvent, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

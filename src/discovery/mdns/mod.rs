//! Discovery mode `mdns`: DNS-SD over multicast DNS on the local links.
//!
//! We announce `_peat-sidecar._udp.local.` (SRV port = the iroh UDP port, TXT `v`,
//! `app_id`, `endpoint_id`) and browse the same type. The mDNS protocol itself is
//! mdns-sd's (its own thread; we talk to it through channels). What this module adds:
//!
//! - **Which interfaces.** mdns-sd would use every interface, loopback included. We
//!   give it a predicate that reads the set of interfaces our [`iface`] watcher found
//!   eligible (up, running, multicast, not point-to-point, `--mdns-interfaces`,
//!   `--mdns-loopback`), and only the address family iroh is bound to.
//! - **Which addresses.** mdns-sd announces on each interface only the service
//!   addresses in that interface's subnet. IPv6 link-local addresses share fe80::/64
//!   on every link, so they would leak across interfaces; and without a scope they
//!   cannot be dialled anyway. We therefore never announce IPv6 link-local addresses.
//!   If iroh is bound to one address, only that address is announced.
//! - **Speed.** mdns-sd re-reads the interfaces on a timer. The watcher tells us within
//!   ~200 ms (settle) of a kernel change, and we make mdns-sd re-apply its interface
//!   selection at once: a new interface gets an announcement and a browse query there.
//! - **No announce storm.** Those re-applications go through a token bucket: at most
//!   [`TRIGGER_BURST`] at once and one per [`TRIGGER_REFILL`] after that.
//!
//! - **A fast first look.** At start, one legacy-unicast query ([`oneshot`]) that every
//!   responder answers at once, which the RFC's once-per-second multicast limit can
//!   otherwise delay by a second.
//!
//! Browsing turns resolved records into `Found` (addresses merged per record) and
//! goodbyes / expired records into `Lost`. Records of another app id are counted and
//! skipped; malformed TXT records are skipped with a rate-limited warning.

pub mod oneshot;
pub mod txt;

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::{IpAddr, SocketAddr, SocketAddrV6},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use iroh::EndpointId;
use mdns_sd::{
    DaemonEvent, IfKind, IfPredicate, ResolvedService, ScopedIp, ServiceDaemon, ServiceEvent,
    ServiceInfo, UnregisterStatus,
};
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, info, warn};

use crate::events::{PeerEvent, PeerEventKind};

use self::txt::SERVICE_TYPE;
use super::{
    iface::{InterfaceFilter, InterfaceWatcher, Snapshot, Subscription},
    SourceContext,
};
use crate::events::Source;
use crate::ratelimit::TokenBucket;
use crate::settings::MdnsSettings;

/// Watcher-driven re-applications of the interface selection allowed at once...
pub const TRIGGER_BURST: u32 = 3;
/// ...and then one per this interval (so at most 3 + 10 per minute).
pub const TRIGGER_REFILL: Duration = Duration::from_secs(6);
/// mdns-sd's own interface re-check, a safety net behind the watcher (seconds).
const DAEMON_IP_CHECK_SECS: u32 = 30;
/// After an interface or address went away, mdns-sd re-checks this soon.
const FAST_IP_CHECK_SECS: u32 = 1;
/// Pause between unregister (goodbye + one resend at 120 ms) and shutdown.
const GOODBYE_PAUSE: Duration = Duration::from_millis(200);
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
/// How long after a peer said it is shutting down we look whether mdns-sd still holds
/// its record. Its goodbye makes mdns-sd drop it one second later (RFC 6762 10.1); a
/// record still there well after that was announced again: the peer restarted.
const DEPARTED_RECHECK: Duration = Duration::from_secs(5);
/// Fewest resolved records tracked, whatever `--max-known-peers` says.
const MIN_TRACKED_RECORDS: usize = 64;
/// mdns-sd caches every record it hears until its TTL runs out (PTR records of
/// python-zeroconf live 75 min), with no cap: a flood of fake instances would grow it
/// without bound. Stopping the browse empties its cache of our type; we restart the
/// browse when this many new records arrived since the last restart...
const CACHE_PURGE_FACTOR: usize = 4;
/// ...but at most once per this interval, so that real peers are re-queried calmly.
const CACHE_PURGE_MIN_INTERVAL: Duration = Duration::from_secs(30);
/// A new interface (or address) gets a browse query from mdns-sd at once; we ask again
/// this much later. A peer that multicast its record less than a second before the
/// first query does not answer it (RFC 6762 §6 rate limit), and without a second query
/// it would be found only at its next announcement or our next scheduled query
/// (seconds to minutes away) while the connection waited for the tie-break.
const REQUERY_AFTER_NEW_INTERFACE: Duration = Duration::from_millis(1100);
/// After records had to be forgotten, browse afresh once no new record came in for this
/// long: the flood has passed, and real peers that were crowded out are found again.
const REBROWSE_AFTER_FLOOD: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum MdnsError {
    #[error(transparent)]
    Iface(#[from] super::iface::IfaceError),
    #[error("cannot start the mDNS daemon (is UDP port 5353 usable?): {0}")]
    Daemon(#[source] mdns_sd::Error),
    #[error("cannot build the mDNS service record: {0}")]
    Record(#[source] mdns_sd::Error),
}

/// Which addresses we may use, from the sockets iroh is bound to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BindScope {
    pub v4: bool,
    pub v6: bool,
    /// iroh is bound to these specific addresses only.
    pub only: Vec<IpAddr>,
}

impl BindScope {
    pub fn from_bound(bound: &[SocketAddr]) -> Self {
        let mut s = BindScope::default();
        for a in bound {
            match a.ip() {
                IpAddr::V4(_) => s.v4 = true,
                IpAddr::V6(_) => s.v6 = true,
            }
            if !a.ip().is_unspecified() {
                s.only.push(a.ip());
            }
        }
        // An unspecified bind of one family next to a specific one: treat as open.
        if bound.iter().any(|a| a.ip().is_unspecified()) {
            s.only.clear();
        }
        s
    }

    /// May mDNS packets go out over this interface address's family?
    pub fn transport_ok(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(_) => self.v4,
            IpAddr::V6(_) => self.v6,
        }
    }

    /// May this address be announced in our A/AAAA records?
    pub fn announce_ok(&self, ip: IpAddr) -> bool {
        self.transport_ok(ip)
            && !is_v6_link_local(ip)
            && (self.only.is_empty() || self.only.contains(&ip))
    }

    /// May we hand this peer address to the dialer? (A v6 address is useless to an
    /// endpoint bound to IPv4 only.)
    pub fn dial_ok(&self, ip: IpAddr) -> bool {
        self.transport_ok(ip)
    }
}

fn is_v6_link_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// Socket addresses of a resolved peer that our endpoint can dial, from (address,
/// index of the interface it was heard on). IPv6 link-local ones are kept only with
/// that scope.
pub fn dialable_addrs(
    addrs: impl IntoIterator<Item = (IpAddr, u32)>,
    port: u16,
    scope: &BindScope,
) -> BTreeSet<SocketAddr> {
    let mut out = BTreeSet::new();
    for (ip, if_index) in addrs {
        if !scope.dial_ok(ip) || ip.is_unspecified() || ip.is_multicast() {
            continue;
        }
        match ip {
            IpAddr::V6(ip6) if is_v6_link_local(ip) => {
                if if_index != 0 {
                    out.insert(SocketAddr::V6(SocketAddrV6::new(ip6, port, 0, if_index)));
                }
            }
            _ => {
                out.insert(SocketAddr::new(ip, port));
            }
        }
    }
    out
}

fn scoped(a: &ScopedIp) -> (IpAddr, u32) {
    match a {
        ScopedIp::V6(v6) => (IpAddr::V6(*v6.addr()), v6.scope_id().index),
        other => (other.to_ip_addr(), 0),
    }
}

/// Starts the mode: watcher, daemon, registration, browse. Returns the task to run.
pub async fn start(
    ctx: SourceContext,
    settings: MdnsSettings,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, MdnsError> {
    let filter = settings.filter.clone();
    let watcher = InterfaceWatcher::spawn(ctx.shutdown.child_token())?;
    let sub = watcher.subscribe();
    let scope = BindScope::from_bound(&ctx.bound_addrs);
    let eligible = Arc::new(RwLock::new(eligible_names(&filter, sub.current())));
    info!(
        interfaces = ?eligible.read().map(|s| s.iter().cloned().collect::<Vec<_>>()).unwrap_or_default(),
        ipv4 = scope.v4, ipv6 = scope.v6,
        "mdns: starting on these interfaces"
    );

    let daemon = ServiceDaemon::new().map_err(MdnsError::Daemon)?;
    // Everything that is not eligible is disabled. The predicate reads the shared set,
    // so later watcher updates only need a re-apply, not a new selection entry.
    let (names, sc) = (eligible.clone(), scope.clone());
    let usable = move |name: &str, ip: IpAddr| {
        sc.transport_ok(ip) && names.read().map(|s| s.contains(name)).unwrap_or(false)
    };
    let usable = Arc::new(usable);
    let u = usable.clone();
    daemon
        .disable_interface(IfKind::Predicate(IfPredicate::new(move |i| {
            !u(&i.name, i.ip())
        })))
        .map_err(MdnsError::Daemon)?;
    daemon
        .set_ip_check_interval(DAEMON_IP_CHECK_SECS)
        .map_err(MdnsError::Daemon)?;

    let instance = txt::instance_name(&ctx.endpoint_id);
    let props = txt::txt_properties(&ctx.app_id, &ctx.endpoint_id);
    let mut info = ServiceInfo::new(
        SERVICE_TYPE,
        &instance,
        &txt::host_name(&ctx.endpoint_id),
        "",
        ctx.iroh_port,
        &props[..],
    )
    .map_err(MdnsError::Record)?
    .enable_addr_auto();
    let (u, sc) = (usable.clone(), scope.clone());
    info.set_interfaces(vec![IfKind::Predicate(IfPredicate::new(move |i| {
        u(&i.name, i.ip()) && sc.announce_ok(i.ip())
    }))]);
    let fullname = info.get_fullname().to_string();
    let monitor = daemon.monitor().map_err(MdnsError::Daemon)?;
    daemon.register(info.clone()).map_err(MdnsError::Daemon)?;
    let browse = daemon.browse(SERVICE_TYPE).map_err(MdnsError::Daemon)?;
    info!(instance = %fullname, port = ctx.iroh_port, app_id = %ctx.app_id, "mdns: announcing and browsing {SERVICE_TYPE}");
    let targets = oneshot_targets(&filter, &scope, sub.current());
    let (hint_tx, hints) = mpsc::channel(64);
    debug!(?targets, "mdns: one-shot legacy query");
    tokio::spawn(oneshot::ask(targets, hint_tx));

    let now = Instant::now();
    let ctx_max_tracked = settings.max_known_peers.max(MIN_TRACKED_RECORDS);
    let peer_events = ctx.peers.subscribe();
    let mut task = Task {
        ctx,
        daemon,
        info,
        reannounce_at: now + STARTUP_REANNOUNCE[0],
        started: now,
        startup_announces: 1,
        fullname,
        announced: false,
        filter,
        scope,
        eligible,
        sub,
        _watcher: watcher,
        trigger: TokenBucket::new(TRIGGER_BURST, TRIGGER_REFILL, now),
        pending_trigger: None,
        pending_removal: false,
        restore_check_at: None,
        requery_at: None,
        requery: TokenBucket::new(2, Duration::from_secs(10), now),
        peers: HashMap::new(),
        max_tracked: ctx_max_tracked,
        tracked_evicted: 0,
        evict_log: TokenBucket::new(3, Duration::from_secs(20), now),
        evict_suppressed: 0,
        new_since_purge: 0,
        last_purge: now,
        cache_purges: 0,
        rebrowse: TokenBucket::new(3, Duration::from_secs(10), now),
        rebrowse_at: None,
        other_app_records: 0,
        malformed: 0,
        malformed_log: TokenBucket::new(5, Duration::from_secs(12), now),
        malformed_suppressed: 0,
        hints: Some(hints),
        hinted: HashMap::new(),
        peer_events: Some(peer_events),
        departed: HashMap::new(),
    };
    Ok(async move { task.run(browse, monitor).await })
}

/// Where the one-shot query goes: each eligible interface's IPv4 addresses, and its
/// index for IPv6, in the families iroh is bound to.
fn oneshot_targets(
    filter: &InterfaceFilter,
    scope: &BindScope,
    snap: &Snapshot,
) -> Vec<oneshot::Target> {
    let mut out = Vec::new();
    for i in snap.values().filter(|i| filter.eligible(i)) {
        if scope.v4 {
            out.extend(i.addrs.iter().filter_map(|a| match a.ip {
                // Our own announced addresses: with `--bind IP` only that one.
                IpAddr::V4(v4) if scope.announce_ok(a.ip) => Some(oneshot::Target::V4(v4)),
                _ => None,
            }));
        }
        if scope.v6 && i.addrs.iter().any(|a| a.ip.is_ipv6()) {
            out.push(oneshot::Target::V6 { index: i.index });
        }
    }
    out
}

fn eligible_names(filter: &InterfaceFilter, snap: &Snapshot) -> HashSet<String> {
    snap.values()
        .filter(|i| filter.eligible(i))
        .map(|i| i.name.clone())
        .collect()
}

/// Where a record came from: mdns-sd's browse, or an answer to our one-shot query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Browse,
    OneShot,
}

struct PeerRecord {
    id: EndpointId,
    addrs: BTreeSet<SocketAddr>,
    /// When the record was last resolved: the oldest goes first when the map is full.
    seen: Instant,
}

struct Task {
    ctx: SourceContext,
    daemon: ServiceDaemon,
    /// Our service as first registered (mdns-sd fills in the addresses at each register).
    info: ServiceInfo,
    reannounce_at: Instant,
    started: Instant,
    /// How many of [`STARTUP_REANNOUNCE`] are scheduled or done.
    startup_announces: usize,
    fullname: String,
    /// Whether the daemon has announced our record yet (on any interface). Until then
    /// no peer can have resolved us, so what we find cannot be dialling us.
    announced: bool,
    filter: InterfaceFilter,
    scope: BindScope,
    eligible: Arc<RwLock<HashSet<String>>>,
    sub: Subscription,
    _watcher: InterfaceWatcher,
    trigger: TokenBucket,
    pending_trigger: Option<Instant>,
    pending_removal: bool,
    restore_check_at: Option<Instant>,
    /// When to query again after an interface became usable or gained an address.
    requery_at: Option<Instant>,
    /// Bounds those extra queries when interfaces flap.
    requery: TokenBucket,
    /// Resolved records by full name, at most `max_tracked`.
    peers: HashMap<String, PeerRecord>,
    max_tracked: usize,
    tracked_evicted: u64,
    evict_log: TokenBucket,
    evict_suppressed: u64,
    /// Records resolved for the first time since the last cache purge.
    new_since_purge: usize,
    last_purge: Instant,
    cache_purges: u64,
    /// Bounds how often a lost browse subscription is renewed.
    rebrowse: TokenBucket,
    /// When to browse afresh after a flood (pushed back while records keep coming).
    rebrowse_at: Option<Instant>,
    other_app_records: u64,
    malformed: u64,
    malformed_log: TokenBucket,
    malformed_suppressed: u64,
    /// Answers to the one-shot query at start; `None` once it is done.
    hints: Option<mpsc::Receiver<oneshot::Hint>>,
    /// Records known only from a hint, with when to forget them unless the browse
    /// resolves them first.
    hinted: HashMap<String, Instant>,
    /// The peer manager's events: a peer that closes its connections because it is
    /// shutting down is forgotten at once, not when mdns-sd drops its record a second
    /// after its goodbye. `None` once the peer manager is gone.
    peer_events: Option<broadcast::Receiver<PeerEvent>>,
    /// Records of such peers, reported lost already, with when to look whether mdns-sd
    /// still holds them (see [`DEPARTED_RECHECK`]).
    departed: HashMap<String, Instant>,
}

fn next_reannounce(now: Instant) -> Instant {
    now + REANNOUNCE_EVERY + REANNOUNCE_JITTER.mul_f64(rand::random::<f64>())
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_event(
    rx: &mut Option<broadcast::Receiver<PeerEvent>>,
) -> Result<PeerEvent, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
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

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

impl Task {
    async fn run(
        &mut self,
        mut browse: mdns_sd::Receiver<ServiceEvent>,
        monitor: mdns_sd::Receiver<DaemonEvent>,
    ) {
        let shutdown = self.ctx.shutdown.clone();
        let mut watcher_alive = true;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = browse.recv_async() => match ev {
                    Ok(ev) => {
                        let go_on = self.on_service_event(ev).await;
                        // A gauge for GetStatus: a churn or flood test sees whether the
                        // map of records stays bounded.
                        self.ctx.peers.counters.mdns_records.store(
                            self.peers.len() as u64,
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        if !go_on {
                            break;
                        }
                        if let Some(b) = self.maybe_purge_cache() {
                            browse = b;
                        }
                    }
                    Err(_) => {
                        // mdns-sd ends a subscription whose channel is full (1000
                        // events): a flood can do that. Renew it, within a bound.
                        match self.renew_browse().await {
                            Some(b) => browse = b,
                            None => {
                                warn!("mdns: the mDNS daemon stopped unexpectedly; no more mDNS discovery");
                                return;
                            }
                        }
                    }
                },
                ev = monitor.recv_async() => {
                    if let Ok(ev) = ev { self.on_daemon_event(ev) }
                }
                changes = self.sub.next(), if watcher_alive => match changes {
                    Some(changes) => self.on_interfaces(changes),
                    None => watcher_alive = false,
                },
                _ = sleep_opt(self.pending_trigger) => {
                    self.pending_trigger = None;
                    self.request_reapply();
                }
                _ = sleep_opt(self.rebrowse_at) => {
                    self.rebrowse_at = None;
                    info!(
                        tracked = self.peers.len(),
                        "mdns: the flood of records has calmed down; browsing afresh to find peers it crowded out"
                    );
                    if let Some(b) = self.browse_afresh() {
                        browse = b;
                    }
                }
                _ = sleep_opt(Some(self.reannounce_at)) => {
                    self.reannounce_at = match STARTUP_REANNOUNCE.get(self.startup_announces) {
                        Some(d) => self.started + *d,
                        None => next_reannounce(Instant::now()),
                    };
                    self.startup_announces = self.startup_announces.saturating_add(1);
                    // Registering the same service again announces it (no new probe:
                    // the name is ours already), with mdns-sd's resend a second later.
                    if let Err(e) = self.daemon.register(self.info.clone()) {
                        debug!(error = %e, "mdns: re-announce failed");
                    }
                }
                _ = sleep_opt(self.requery_at) => {
                    self.requery_at = None;
                    if let Some(b) = self.requery(browse).await {
                        browse = b;
                    } else {
                        warn!("mdns: the mDNS daemon stopped unexpectedly; no more mDNS discovery");
                        return;
                    }
                }
                _ = sleep_opt(self.restore_check_at) => {
                    self.restore_check_at = None;
                    let _ = self.daemon.set_ip_check_interval(DAEMON_IP_CHECK_SECS);
                }
                hint = recv_opt(&mut self.hints) => match hint {
                    Some(h) => {
                        if !self.on_hint(h).await {
                            break;
                        }
                    }
                    None => self.hints = None,
                },
                _ = sleep_opt(self.hinted.values().min().copied()) => {
                    if !self.expire_hints().await {
                        break;
                    }
                }
                ev = recv_event(&mut self.peer_events) => match ev {
                    Ok(ev) if ev.kind == PeerEventKind::Left => {
                        if !self.on_left(ev.endpoint_id).await {
                            break;
                        }
                    }
                    // A missed departure only means waiting for mdns-sd, as before.
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => self.peer_events = None,
                },
                _ = sleep_opt(self.departed.values().min().copied()) => {
                    if !self.recheck_departed().await {
                        break;
                    }
                }
            }
        }
        self.goodbye().await;
    }

    /// Unregister (goodbye packets, resent once after 120 ms), pause, shut down.
    async fn goodbye(&mut self) {
        if let Ok(rx) = self.daemon.unregister(&self.fullname) {
            match tokio::time::timeout(Duration::from_millis(500), rx.recv_async()).await {
                Ok(Ok(UnregisterStatus::OK)) => debug!("mdns: goodbye sent"),
                other => debug!(result = ?other, "mdns: unregister did not confirm"),
            }
        }
        tokio::time::sleep(GOODBYE_PAUSE).await;
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = tokio::time::timeout(Duration::from_millis(500), rx.recv_async()).await;
        }
        info!(
            other_app_records = self.other_app_records,
            malformed_records = self.malformed,
            tracked_records_evicted = self.tracked_evicted,
            cache_purges = self.cache_purges,
            "mdns: stopped"
        );
    }

    /// Empties mdns-sd's record cache of our type (by restarting the browse) once many
    /// new records came in since the last time; returns the new subscription.
    fn maybe_purge_cache(&mut self) -> Option<mdns_sd::Receiver<ServiceEvent>> {
        let now = Instant::now();
        if self.new_since_purge < self.max_tracked * CACHE_PURGE_FACTOR
            || now.duration_since(self.last_purge) < CACHE_PURGE_MIN_INTERVAL
        {
            return None;
        }
        warn!(
            new_records = self.new_since_purge,
            tracked = self.peers.len(),
            "mdns: unusually many {SERVICE_TYPE} records (a flood of announcements?); \
             emptying the mDNS cache and browsing afresh"
        );
        self.browse_afresh()
    }

    /// Restarts the browse, which empties mdns-sd's cache of our type; real peers
    /// answer the new browse's query.
    fn browse_afresh(&mut self) -> Option<mdns_sd::Receiver<ServiceEvent>> {
        self.new_since_purge = 0;
        self.last_purge = Instant::now();
        self.cache_purges += 1;
        // The peer manager may have evicted peers we still track: forget what we told
        // it, so that every record resolved again is reported as found again.
        for rec in self.peers.values_mut() {
            rec.addrs.clear();
        }
        let _ = self.daemon.stop_browse(SERVICE_TYPE);
        match self.daemon.browse(SERVICE_TYPE) {
            Ok(b) => Some(b),
            Err(e) => {
                warn!(error = %e, "mdns: cannot browse afresh");
                None
            }
        }
    }

    /// Sends a browse query now (with known answers, so peers already resolved stay
    /// quiet) by browsing again: mdns-sd replaces the subscription, reports the cached
    /// peers again (repeats, ignored) and restarts its query schedule. Events already
    /// queued on the old subscription are handled first. None if the daemon is gone.
    async fn requery(
        &mut self,
        old: mdns_sd::Receiver<ServiceEvent>,
    ) -> Option<mdns_sd::Receiver<ServiceEvent>> {
        if self.requery.take(Instant::now()).is_err() {
            debug!("mdns: interfaces change often; no extra query this time");
            return Some(old);
        }
        let new = match self.daemon.browse(SERVICE_TYPE) {
            Ok(b) => b,
            Err(e) => {
                debug!(error = %e, "mdns: cannot query again");
                return self.renew_browse().await;
            }
        };
        debug!("mdns: querying again after an interface change");
        while let Ok(ev) = old.try_recv() {
            if !self.on_service_event(ev).await {
                break;
            }
        }
        Some(new)
    }

    async fn renew_browse(&mut self) -> Option<mdns_sd::Receiver<ServiceEvent>> {
        loop {
            match self.rebrowse.take(Instant::now()) {
                Ok(()) => break,
                Err(at) => {
                    tokio::select! {
                        _ = self.ctx.shutdown.cancelled() => return None,
                        _ = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {}
                    }
                }
            }
        }
        warn!(
            "mdns: the browse subscription fell behind and was dropped (a flood?); browsing again"
        );
        let _ = self.daemon.stop_browse(SERVICE_TYPE);
        self.daemon.browse(SERVICE_TYPE).ok()
    }

    /// Makes room in the record map for one more: the record resolved longest ago goes.
    fn make_room(&mut self) {
        if self.peers.len() < self.max_tracked {
            return;
        }
        let Some(victim) = self
            .peers
            .iter()
            .min_by_key(|(_, r)| r.seen)
            .map(|(n, _)| n.clone())
        else {
            return;
        };
        self.peers.remove(&victim);
        self.tracked_evicted += 1;
        self.rebrowse_at = Some(Instant::now() + REBROWSE_AFTER_FLOOD);
        if self.evict_log.take(Instant::now()).is_ok() {
            warn!(
                max = self.max_tracked,
                evicted_total = self.tracked_evicted,
                suppressed_since_last = self.evict_suppressed,
                "mdns: too many {SERVICE_TYPE} records; forgetting the oldest (raise --max-known-peers if this LAN is really that big)"
            );
            self.evict_suppressed = 0;
        } else {
            self.evict_suppressed += 1;
        }
    }

    fn on_interfaces(&mut self, changes: Vec<super::iface::IfaceChange>) {
        use super::iface::IfaceChange;
        let new = eligible_names(&self.filter, self.sub.current());
        let Ok(mut cur) = self.eligible.write() else {
            return;
        };
        let mut relevant = false;
        let mut removal = false;
        let mut gained = false;
        for c in &changes {
            let name = c.name();
            let was = cur.contains(name);
            let is = new.contains(name);
            if !was && !is {
                continue;
            }
            relevant = true;
            match c {
                IfaceChange::Removed(_) => removal = true,
                IfaceChange::Changed { old, new: n } => {
                    if was && (!is || !old.addrs.is_subset(&n.addrs)) {
                        removal = true;
                    }
                    gained |= is && (!was || !n.addrs.is_subset(&old.addrs));
                }
                IfaceChange::Added(_) => gained |= is,
            }
            match (was, is) {
                (false, true) => info!(
                    interface = name,
                    "mdns: interface usable; announcing and querying there"
                ),
                (true, false) => info!(
                    interface = name,
                    "mdns: interface no longer usable; withdrawing from it"
                ),
                _ => debug!(
                    interface = name,
                    "mdns: interface addresses changed; re-announcing"
                ),
            }
        }
        *cur = new;
        drop(cur);
        if relevant {
            self.pending_removal |= removal;
            self.request_reapply();
        }
        if gained {
            // Counted from the latest change: the reapply above sends the first query.
            self.requery_at = Some(Instant::now() + REQUERY_AFTER_NEW_INTERFACE);
        }
    }

    /// Makes mdns-sd re-read the interfaces now (announce + query on new ones, drop
    /// deselected ones), within the token bucket's bound.
    fn request_reapply(&mut self) {
        let now = Instant::now();
        match self.trigger.take(now) {
            Ok(()) => {
                // Toggling this option is the one daemon command that re-applies the
                // interface selection immediately without adding a selection entry
                // (enable_interface would grow the daemon's list on every change).
                // On Linux it changes nothing else: it concerns macOS awdl/llw links.
                let _ = self.daemon.include_apple_p2p(true);
                let _ = self.daemon.include_apple_p2p(false);
                if std::mem::take(&mut self.pending_removal) {
                    // Vanished interfaces and addresses are only noticed by the
                    // daemon's own check: make the next one come in 1 s.
                    let _ = self.daemon.set_ip_check_interval(FAST_IP_CHECK_SECS);
                    self.restore_check_at = Some(now + Duration::from_millis(1500));
                }
            }
            Err(at) => {
                debug!("mdns: interface changes too frequent; next re-announce deferred");
                self.pending_trigger = Some(self.pending_trigger.map_or(at, |p| p.min(at)));
            }
        }
    }

    fn on_daemon_event(&mut self, ev: DaemonEvent) {
        match ev {
            DaemonEvent::Error(e) => warn!(error = %e, "mdns: daemon error"),
            DaemonEvent::NameChange(c) => warn!(
                original = %c.original, new = %c.new_name,
                "mdns: name conflict on the link; the daemon renamed our record"
            ),
            DaemonEvent::Announce(name, intf) => {
                if name == self.fullname {
                    self.announced = true;
                }
                debug!(record = %name, interface = %intf, "mdns: announced")
            }
            DaemonEvent::IpAdd(ip) => debug!(%ip, "mdns: daemon uses a new address"),
            DaemonEvent::IpDel(ip) => debug!(%ip, "mdns: daemon dropped an address"),
            _ => {}
        }
    }

    /// Returns false when the peer manager is gone.
    async fn on_service_event(&mut self, ev: ServiceEvent) -> bool {
        match ev {
            ServiceEvent::ServiceResolved(rs) => self.on_resolved(*rs).await,
            ServiceEvent::ServiceRemoved(_, fullname) => {
                if self.departed.remove(&fullname).is_some() {
                    // Reported lost when the peer said it was shutting down.
                    self.peers.remove(&fullname);
                    debug!(record = %fullname, "mdns: goodbye of a peer that had left already");
                    return true;
                }
                let Some(id) = self.forget(&fullname) else {
                    return true;
                };
                info!(peer = %id, record = %fullname, "mdns: peer said goodbye or its record expired");
                self.ctx.events.lost(id, Source::Mdns).await
            }
            _ => true,
        }
    }

    async fn on_resolved(&mut self, rs: ResolvedService) -> bool {
        let fullname = rs.get_fullname().to_string();
        if fullname == self.fullname {
            return true;
        }
        // Confirmed by the browse: from now on it lives and dies with mdns-sd's record.
        self.hinted.remove(&fullname);
        // Resolved again after its peer said it was leaving: it is back.
        let back = self.departed.remove(&fullname).is_some();
        let props = rs.get_properties();
        let parsed = txt::parse_txt(props.iter().map(|p| (p.key(), p.val())));
        let addrs = rs.get_addresses().iter().map(scoped);
        let Some((peer_id, addrs)) =
            self.admit(&fullname, parsed, addrs, rs.get_port(), Via::Browse)
        else {
            return true;
        };
        if !self.peers.contains_key(&fullname) {
            self.make_room();
            self.new_since_purge += 1;
        }
        let now = Instant::now();
        let rec = self.peers.entry(fullname.clone()).or_insert(PeerRecord {
            id: peer_id,
            addrs: BTreeSet::new(),
            seen: now,
        });
        rec.seen = now;
        if rec.id != peer_id {
            // The same name now carries another id (a reinstalled node): start over.
            let old = rec.id;
            rec.id = peer_id;
            rec.addrs.clear();
            if !self.ctx.events.lost(old, Source::Mdns).await {
                return false;
            }
        }
        let Some(rec) = self.peers.get_mut(&fullname) else {
            return true;
        };
        let before = rec.addrs.len();
        rec.addrs.extend(addrs);
        if rec.addrs.len() == before && before > 0 && !back {
            return true; // a repeat: nothing new for the peer manager
        }
        let unaware = !self.announced;
        info!(peer = %rec.id, addrs = ?rec.addrs, record = %fullname, unaware, "mdns: found peer");
        let (id, addrs) = (rec.id, rec.addrs.clone());
        self.ctx
            .events
            .found_as(id, addrs, Source::Mdns, unaware)
            .await
    }

    /// An answer to the one-shot query: reported as found at once (it passes the same
    /// checks as a browse result), and forgotten after [`oneshot::HINT_TTL`] unless the
    /// browse resolves it meanwhile. Returns false when the peer manager is gone.
    async fn on_hint(&mut self, h: oneshot::Hint) -> bool {
        if h.fullname.eq_ignore_ascii_case(&self.fullname)
            || self.peers.contains_key(&h.fullname)
            || self.hinted.len() >= self.max_tracked
        {
            return true;
        }
        let parsed = txt::parse_txt(h.txt.iter().map(|(k, v)| (k.as_str(), v.as_deref())));
        let addrs = h.addrs.iter().copied();
        let Some((peer_id, addrs)) = self.admit(&h.fullname, parsed, addrs, h.port, Via::OneShot)
        else {
            return true;
        };
        self.make_room();
        let now = Instant::now();
        self.peers.insert(
            h.fullname.clone(),
            PeerRecord {
                id: peer_id,
                addrs: addrs.clone(),
                seen: now,
            },
        );
        self.hinted
            .insert(h.fullname.clone(), now + oneshot::HINT_TTL);
        let unaware = !self.announced;
        info!(peer = %peer_id, addrs = ?addrs, record = %h.fullname, unaware, "mdns: found peer (answer to the one-shot query)");
        self.ctx
            .events
            .found_as(peer_id, addrs, Source::Mdns, unaware)
            .await
    }

    /// The checks every record passes, from the browse or a one-shot answer: a valid
    /// TXT record, not ours, of our app id, with an address we can dial. Returns the
    /// peer's id and those addresses. Rejections are counted and logged for browse
    /// results only: a one-shot answer's record is resolved by the browse too, and
    /// would otherwise be counted twice.
    fn admit(
        &mut self,
        fullname: &str,
        parsed: Result<txt::PeerTxt, txt::TxtError>,
        addrs: impl IntoIterator<Item = (IpAddr, u32)>,
        port: u16,
        via: Via,
    ) -> Option<(EndpointId, BTreeSet<SocketAddr>)> {
        let counted = via == Via::Browse;
        let peer = match parsed {
            Ok(p) => p,
            Err(e) if counted => {
                self.malformed += 1;
                self.warn_malformed(fullname, &e);
                return None;
            }
            Err(e) => {
                debug!(record = %fullname, error = %e, "mdns: one-shot answer with a malformed TXT record");
                return None;
            }
        };
        if peer.endpoint_id == self.ctx.endpoint_id {
            return None; // our own record under an old or renamed name
        }
        if peer.app_id != self.ctx.app_id {
            if counted {
                self.other_app_records += 1;
                debug!(
                    peer = %peer.endpoint_id, app_id = %peer.app_id, record = %fullname,
                    skipped_total = self.other_app_records,
                    "mdns: skipping a record of another formation (app_id differs)"
                );
            }
            return None;
        }
        let addrs = dialable_addrs(addrs, port, &self.scope);
        if addrs.is_empty() {
            if counted {
                debug!(peer = %peer.endpoint_id, record = %fullname, "mdns: record has no address we can dial yet");
            }
            return None;
        }
        Some((peer.endpoint_id, addrs))
    }

    /// Forgets hinted records the browse has not confirmed in time (a peer that
    /// answered and then vanished). Returns false when the peer manager is gone.
    async fn expire_hints(&mut self) -> bool {
        for name in take_due(&mut self.hinted, Instant::now()) {
            let Some(id) = self.forget(&name) else {
                continue;
            };
            info!(peer = %id, record = %name, "mdns: a peer only the one-shot query reported was not confirmed by the browse; forgetting it");
            if !self.ctx.events.lost(id, Source::Mdns).await {
                return false;
            }
        }
        true
    }

    /// Drops a record; returns its peer if no other record of ours names that peer
    /// (one announced under two names is gone only when both are).
    fn forget(&mut self, name: &str) -> Option<EndpointId> {
        let rec = self.peers.remove(name)?;
        (!self.peers.values().any(|r| r.id == rec.id)).then_some(rec.id)
    }

    /// A peer closed its connections because it is shutting down. That close is
    /// authenticated (only the peer can send it), unlike its mDNS goodbye, which it sent
    /// just before and which mdns-sd acts on a second later: report the peer lost now.
    /// Returns false when the peer manager is gone.
    async fn on_left(&mut self, id: EndpointId) -> bool {
        let names: Vec<String> = self
            .peers
            .iter()
            .filter(|(n, r)| r.id == id && !self.departed.contains_key(*n))
            .map(|(n, _)| n.clone())
            .collect();
        if names.is_empty() {
            return true;
        }
        let recheck = Instant::now() + DEPARTED_RECHECK;
        for name in names {
            if self.hinted.remove(&name).is_some() {
                // Known from the one-shot answer only: mdns-sd holds nothing to drop.
                self.peers.remove(&name);
            } else {
                self.departed.insert(name, recheck);
            }
        }
        info!(peer = %id, "mdns: peer is shutting down; forgetting it now, not a second after its goodbye");
        self.ctx.events.lost(id, Source::Mdns).await
    }

    /// A departed peer's record that mdns-sd still holds was announced again after the
    /// goodbye (the peer restarted at once): report it found again. Returns false when
    /// the peer manager is gone.
    async fn recheck_departed(&mut self) -> bool {
        for name in take_due(&mut self.departed, Instant::now()) {
            let Some(rec) = self.peers.get(&name) else {
                continue;
            };
            info!(peer = %rec.id, record = %name, "mdns: a peer that shut down is announced again");
            let (id, addrs) = (rec.id, rec.addrs.clone());
            if !self.ctx.events.found(id, addrs, Source::Mdns).await {
                return false;
            }
        }
        true
    }

    fn warn_malformed(&mut self, fullname: &str, e: &txt::TxtError) {
        // Names are attacker-chosen: cut them before logging.
        let name: String = fullname.chars().take(80).collect();
        if self.malformed_log.take(Instant::now()).is_ok() {
            warn!(
                record = %name, error = %e,
                suppressed_since_last = self.malformed_suppressed,
                "mdns: ignoring a {SERVICE_TYPE} record with a malformed TXT record"
            );
            self.malformed_suppressed = 0;
        } else {
            self.malformed_suppressed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bind_scope_from_sockets() {
        let any4 = BindScope::from_bound(&[sa("0.0.0.0:9470")]);
        assert!(any4.v4 && !any4.v6 && any4.only.is_empty());
        assert!(any4.announce_ok("10.0.0.1".parse().unwrap()));
        assert!(!any4.announce_ok("fd00::1".parse().unwrap()));
        let one = BindScope::from_bound(&[sa("10.0.0.1:9470")]);
        assert!(one.announce_ok("10.0.0.1".parse().unwrap()));
        assert!(!one.announce_ok("10.0.0.2".parse().unwrap()));
        let any6 = BindScope::from_bound(&[sa("[::]:9470")]);
        assert!(any6.announce_ok("fd00::1".parse().unwrap()));
        assert!(
            !any6.announce_ok("fe80::1".parse().unwrap()),
            "link-local never announced"
        );
        assert!(any6.transport_ok("fe80::1".parse().unwrap()));
    }

    #[test]
    fn dialable_addrs_keep_family_and_scope() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let all = [
            (ip("10.0.0.2"), 4),
            (ip("fe80::2"), 4),
            (ip("fd00::2"), 4),
            (ip("fe80::3"), 0),
        ];
        let s4 = BindScope::from_bound(&[sa("0.0.0.0:1")]);
        assert_eq!(
            dialable_addrs(all, 9470, &s4),
            [sa("10.0.0.2:9470")].into_iter().collect()
        );
        let s6 = BindScope::from_bound(&[sa("[::]:1")]);
        let got = dialable_addrs(all, 9470, &s6);
        assert!(got.contains(&sa("[fd00::2]:9470")));
        assert!(got.contains(&SocketAddr::V6(SocketAddrV6::new(
            "fe80::2".parse().unwrap(),
            9470,
            0,
            4
        ))));
        assert_eq!(
            got.len(),
            2,
            "a link-local address without scope is dropped"
        );
    }
}

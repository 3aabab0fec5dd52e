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
//!   addresses in that interface's subnet. IPv6 link-local addresses are announced
//!   too (an fe80-only LAN has nothing else); receivers give each one the scope of the
//!   interface the record came in on (see [`scope`]). If iroh is bound to one
//!   address, only that address is announced.
//! - **Speed.** mdns-sd re-reads the interfaces on a timer. The watcher tells us within
//!   ~200 ms (settle) of a kernel change, and we make mdns-sd re-apply its interface
//!   selection at once: a new interface gets an announcement and a browse query there.
//! - **No announce storm.** Those re-applications go through a token bucket: at most
//!   [`schedule::TRIGGER_BURST`] at once and one per [`schedule::TRIGGER_REFILL`] after that.
//!
//! - **A fast first look.** At start, one legacy-unicast query ([`oneshot`]) that every
//!   responder answers at once, which the RFC's once-per-second multicast limit can
//!   otherwise delay by a second.
//!
//! Browsing turns resolved records into `Found` (addresses merged per record) and
//! goodbyes / expired records into `Lost`. Records of another app id are counted and
//! skipped; malformed TXT records are skipped with a rate-limited warning.
//!
//! Modules: [`scope`] (which addresses we announce and dial), [`interfaces`] (the
//! eligible set the daemon reads), [`gaps`] (interfaces without a bound family), [`tracker`] (the records we know and the found/lost
//! rules, pure), [`schedule`] (the driver's own timers, pure), [`driver`] (the task
//! that talks to mdns-sd), [`oneshot`] and [`txt`]. This file starts it all, and is
//! the one place that reads the settings.

mod daemon_metrics;
pub mod driver;
pub mod gaps;
pub mod interfaces;
pub mod oneshot;
pub mod others;
pub mod schedule;
pub mod scope;
pub mod tracker;
pub mod txt;

use std::{net::IpAddr, time::Instant};

use mdns_sd::{IfKind, IfPredicate, ServiceDaemon, ServiceInfo};
use tokio::sync::mpsc;
use tracing::{debug, info};

use self::{
    driver::{Driver, DAEMON_IP_CHECK_SECS, RENEW_BURST, RENEW_REFILL},
    interfaces::Interfaces,
    schedule::Schedule,
    scope::BindScope,
    tracker::RecordTracker,
    txt::SERVICE_TYPE,
};
use super::MdnsSettings;
use super::SourceContext;
use crate::ratelimit::TokenBucket;

#[derive(Debug, thiserror::Error)]
pub enum MdnsError {
    #[error(transparent)]
    Iface(#[from] crate::platform::iface::IfaceError),
    #[error("cannot start the mDNS daemon (is UDP port 5353 usable?): {0}")]
    Daemon(#[source] mdns_sd::Error),
    #[error("cannot build the mDNS service record: {0}")]
    Record(#[source] mdns_sd::Error),
}

/// Starts the mode: watcher, daemon, registration, browse, one-shot query. Returns the
/// task to run.
pub async fn start(
    ctx: SourceContext,
    settings: MdnsSettings,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, MdnsError> {
    // Every setting this mode reads, in one place (checked in `crate::settings`).
    let filter = settings.filter.clone();
    let max_known_peers = settings.max_known_peers;

    let scope = BindScope::from_bound(&ctx.bound_addrs);
    let ifaces = Interfaces::start(filter, scope.clone(), ctx.shutdown.child_token())?;
    info!(
        interfaces = %crate::logfmt::list(ifaces.names()), ipv4 = scope.v4, ipv6 = scope.v6,
        "mdns: starting on these interfaces"
    );
    let daemon = new_daemon(&ifaces, &scope)?;
    let info = service_info(&ctx, &ifaces, &scope)?;
    let fullname = info.get_fullname().to_string();
    let monitor = daemon.monitor().map_err(MdnsError::Daemon)?;
    daemon.register(info.clone()).map_err(MdnsError::Daemon)?;
    let browse = daemon.browse(SERVICE_TYPE).map_err(MdnsError::Daemon)?;
    info!(instance = %fullname, port = ctx.iroh_port, app_id = %ctx.app_id, "mdns: announcing and browsing {SERVICE_TYPE}");
    let targets = ifaces.oneshot_targets(&scope);
    let (hint_tx, hints) = mpsc::channel(64);
    debug!(?targets, "mdns: one-shot legacy query");
    tokio::spawn(oneshot::ask(targets, hint_tx));

    tokio::spawn(daemon_metrics::poll(
        daemon.clone(),
        ctx.peers.counters.clone(),
        ctx.shutdown.clone(),
    ));
    let now = Instant::now();
    let tracker = RecordTracker::new(
        ctx.endpoint_id,
        ctx.app_id.clone(),
        fullname,
        scope,
        max_known_peers,
        now,
    );
    let driver = Driver {
        daemon,
        info,
        browse,
        monitor: Some(monitor),
        ifaces,
        tracker,
        schedule: Schedule::new(now),
        hints: Some(hints),
        peer_events: Some(ctx.peers.subscribe()),
        events: ctx.events(),
        peers: ctx.peers,
        shutdown: ctx.shutdown,
        renew: TokenBucket::new(RENEW_BURST, RENEW_REFILL, now),
    };
    Ok(driver.run())
}

/// The daemon, with everything that is not eligible disabled. The predicate reads the
/// shared set, so later watcher updates only need a re-apply, not a new selection entry.
fn new_daemon(ifaces: &Interfaces, scope: &BindScope) -> Result<ServiceDaemon, MdnsError> {
    let daemon = ServiceDaemon::new().map_err(MdnsError::Daemon)?;
    let usable = ifaces.usable(scope);
    daemon
        .disable_interface(IfKind::Predicate(IfPredicate::new(move |i| {
            !usable(&i.name, i.ip())
        })))
        .map_err(MdnsError::Daemon)?;
    daemon
        .set_ip_check_interval(DAEMON_IP_CHECK_SECS)
        .map_err(MdnsError::Daemon)?;
    Ok(daemon)
}

/// Our service record, announced only on usable interfaces with announceable addresses.
fn service_info(
    ctx: &SourceContext,
    ifaces: &Interfaces,
    scope: &BindScope,
) -> Result<ServiceInfo, MdnsError> {
    let props = txt::txt_properties(&ctx.app_id, &ctx.endpoint_id);
    let mut info = ServiceInfo::new(
        SERVICE_TYPE,
        &txt::instance_name(&ctx.endpoint_id),
        &txt::host_name(&ctx.endpoint_id),
        "",
        ctx.iroh_port,
        &props[..],
    )
    .map_err(MdnsError::Record)?
    .enable_addr_auto();
    let (usable, scope) = (ifaces.usable(scope), scope.clone());
    let announce = move |name: &str, ip: IpAddr| usable(name, ip) && scope.announce_ok(ip);
    info.set_interfaces(vec![IfKind::Predicate(IfPredicate::new(move |i| {
        announce(&i.name, i.ip())
    }))]);
    Ok(info)
}

//! Interface watcher: which network interfaces this host has, and when that changes.
//!
//! The kernel tells us about link and address changes through rtnetlink multicast
//! groups. Those messages are used only as a trigger: after a burst has settled (or
//! after a cap, so an endless stream of changes cannot postpone the update forever) the
//! watcher reads a full snapshot with `getifaddrs(3)` and publishes it. A slow safety
//! poll catches anything the trigger missed (for example a netlink buffer overrun).
//! Reading a snapshot instead of decoding each netlink message keeps one source of
//! truth and makes the result independent of message ordering.
//!
//! The node (liveness beacons), the discovery sources and `netchange` use it:
//! [`InterfaceWatcher::spawn`] and then [`Subscription::next`], which returns the [`IfaceChange`]s since the last call.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Quiet time after the last kernel message before a snapshot is taken.
pub const SETTLE: Duration = Duration::from_millis(200);
/// Longest a snapshot is put off by a continuous stream of kernel messages.
pub const SETTLE_CAP: Duration = Duration::from_secs(1);
/// Safety poll while netlink works.
pub const SAFETY_POLL: Duration = Duration::from_secs(30);
/// Poll interval when the netlink socket cannot be opened (seccomp, odd kernels).
pub const FALLBACK_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum IfaceError {
    #[error("cannot list the network interfaces (getifaddrs): {0}")]
    List(#[source] nix::Error),
}

/// An entry of `--mdns-interfaces` that is not a name or glob.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error(
        "`{0}` is not an interface name such as eth0 or a glob such as wlan* (1-64 characters)"
    )]
    Shape(String),
    #[error("`{entry}` is not a valid interface glob")]
    Glob {
        entry: String,
        #[source]
        cause: glob::PatternError,
    },
}

/// The interface flags that decide whether discovery may use an interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfFlags {
    pub up: bool,
    pub running: bool,
    pub multicast: bool,
    pub loopback: bool,
    pub point_to_point: bool,
}

/// An address on an interface with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfAddr {
    pub ip: IpAddr,
    pub prefix_len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub name: String,
    pub index: u32,
    pub flags: IfFlags,
    pub addrs: BTreeSet<IfAddr>,
}

/// All interfaces, by name.
pub type Snapshot = BTreeMap<String, InterfaceInfo>;

/// One difference between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfaceChange {
    Added(InterfaceInfo),
    /// Flags, index or addresses changed.
    Changed {
        old: InterfaceInfo,
        new: InterfaceInfo,
    },
    Removed(InterfaceInfo),
}

impl IfaceChange {
    pub fn name(&self) -> &str {
        match self {
            IfaceChange::Added(i) | IfaceChange::Removed(i) => &i.name,
            IfaceChange::Changed { new, .. } => &new.name,
        }
    }
}

/// What changed from `old` to `new`, in name order.
pub fn diff(old: &Snapshot, new: &Snapshot) -> Vec<IfaceChange> {
    let mut out = Vec::new();
    for (name, n) in new {
        match old.get(name) {
            None => out.push(IfaceChange::Added(n.clone())),
            Some(o) if o != n => out.push(IfaceChange::Changed {
                old: o.clone(),
                new: n.clone(),
            }),
            Some(_) => {}
        }
    }
    for (name, o) in old {
        if !new.contains_key(name) {
            out.push(IfaceChange::Removed(o.clone()));
        }
    }
    out.sort_by(|a, b| a.name().cmp(b.name()));
    out
}

/// Reads the interfaces of this network namespace.
pub fn snapshot() -> Result<Snapshot, IfaceError> {
    use nix::net::if_::InterfaceFlags as F;
    let mut snap = Snapshot::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(IfaceError::List)? {
        let f = ifa.flags;
        let entry = snap
            .entry(ifa.interface_name.clone())
            .or_insert_with(|| InterfaceInfo {
                index: nix::net::if_::if_nametoindex(ifa.interface_name.as_str()).unwrap_or(0),
                name: ifa.interface_name.clone(),
                flags: IfFlags {
                    up: f.contains(F::IFF_UP),
                    running: f.contains(F::IFF_RUNNING),
                    multicast: f.contains(F::IFF_MULTICAST),
                    loopback: f.contains(F::IFF_LOOPBACK),
                    point_to_point: f.contains(F::IFF_POINTOPOINT),
                },
                addrs: BTreeSet::new(),
            });
        let (Some(addr), netmask) = (ifa.address, ifa.netmask) else {
            continue;
        };
        let mask_ip = |m: Option<nix::sys::socket::SockaddrStorage>| -> Option<IpAddr> {
            let m = m?;
            if let Some(v4) = m.as_sockaddr_in() {
                return Some(IpAddr::V4(v4.ip()));
            }
            m.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
        };
        let ip = if let Some(v4) = addr.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue; // AF_PACKET entries carry the flags only
        };
        let prefix_len = match mask_ip(netmask) {
            Some(IpAddr::V4(m)) => u32::from(m).count_ones() as u8,
            Some(IpAddr::V6(m)) => u128::from(m).count_ones() as u8,
            None => 0,
        };
        entry.addrs.insert(IfAddr { ip, prefix_len });
    }
    Ok(snap)
}

/// Which interfaces a discovery mode may use: `--mdns-interfaces` globs plus the
/// loopback switch.
#[derive(Debug, Clone, Default)]
pub struct InterfaceFilter {
    allow: Vec<glob::Pattern>,
    deny: Vec<glob::Pattern>,
    loopback: bool,
}

impl InterfaceFilter {
    /// `entries` are names or globs (`wlan*`, `eth[01]`); a leading `!` denies. Deny wins
    /// over allow; with no allow entry every interface not denied is allowed.
    pub fn parse(entries: &[String], loopback: bool) -> Result<Self, PatternError> {
        let mut f = InterfaceFilter {
            loopback,
            ..Default::default()
        };
        for raw in entries {
            let e = raw.trim();
            if e.is_empty() {
                continue;
            }
            let (deny, pat) = match e.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, e),
            };
            if pat.is_empty() || pat.len() > 64 {
                return Err(PatternError::Shape(raw.clone()));
            }
            let p = glob::Pattern::new(pat).map_err(|cause| PatternError::Glob {
                entry: raw.clone(),
                cause,
            })?;
            if deny {
                f.deny.push(p);
            } else {
                f.allow.push(p);
            }
        }
        Ok(f)
    }

    /// The allow entries that match no eligible interface of `snap`: a typo, an
    /// interface that is not there yet, or a loopback one without the loopback switch.
    pub fn unmatched<'a>(&'a self, snap: &'a Snapshot) -> impl Iterator<Item = &'a str> + 'a {
        self.allow
            .iter()
            .filter(|p| {
                !snap
                    .values()
                    .any(|i| p.matches(&i.name) && self.eligible(i))
            })
            .map(|p| p.as_str())
    }

    /// Does `pattern` name a loopback interface of `snap` that the loopback switch
    /// (off) keeps out?
    pub fn needs_loopback(&self, pattern: &str, snap: &Snapshot) -> bool {
        !self.loopback
            && glob::Pattern::new(pattern).is_ok_and(|p| {
                snap.values()
                    .any(|i| i.flags.loopback && p.matches(&i.name))
            })
    }

    pub fn name_allowed(&self, name: &str) -> bool {
        if self.deny.iter().any(|p| p.matches(name)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|p| p.matches(name))
    }

    /// Up, running, multicast-capable, not point-to-point, loopback only when asked
    /// for, and allowed by name. A loopback interface named explicitly is allowed too.
    pub fn eligible(&self, i: &InterfaceInfo) -> bool {
        let f = i.flags;
        if !(f.up && f.running) || f.point_to_point {
            return false;
        }
        if f.loopback {
            // Linux's `lo` has no IFF_MULTICAST flag yet multicast works on it.
            return self.loopback && self.name_allowed(&i.name);
        }
        f.multicast && self.name_allowed(&i.name)
    }
}

/// Groups kernel messages into one snapshot: fires [`SETTLE`] after the last message,
/// but never later than [`SETTLE_CAP`] after the first one of the burst.
#[derive(Debug, Clone)]
pub struct Debouncer {
    settle: Duration,
    cap: Duration,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Debouncer {
    pub fn new(settle: Duration, cap: Duration) -> Self {
        Debouncer {
            settle,
            cap,
            first: None,
            last: None,
        }
    }

    pub fn event(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When to take the snapshot, if a burst is pending.
    pub fn deadline(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        Some((last + self.settle).min(first + self.cap))
    }

    /// Takes the pending burst if its deadline has passed.
    pub fn fire(&mut self, now: Instant) -> bool {
        match self.deadline() {
            Some(d) if d <= now => {
                self.first = None;
                self.last = None;
                true
            }
            _ => false,
        }
    }
}

/// A running watcher. Dropping it does not stop the task; cancel the token given to
/// [`InterfaceWatcher::spawn`].
#[derive(Clone)]
pub struct InterfaceWatcher {
    rx: watch::Receiver<Arc<Snapshot>>,
}

/// One consumer's view: remembers the last snapshot it saw, so it gets every change
/// even if it was slow to look (it gets the sum of the changes, not each step).
pub struct Subscription {
    rx: watch::Receiver<Arc<Snapshot>>,
    seen: Arc<Snapshot>,
}

impl Subscription {
    /// The snapshot this subscription has seen last.
    pub fn current(&self) -> &Arc<Snapshot> {
        &self.seen
    }

    /// Waits for the next change; returns None when the watcher has stopped.
    pub async fn next(&mut self) -> Option<Vec<IfaceChange>> {
        loop {
            self.rx.changed().await.ok()?;
            let new = self.rx.borrow_and_update().clone();
            let changes = diff(&self.seen, &new);
            self.seen = new;
            if !changes.is_empty() {
                return Some(changes);
            }
        }
    }
}

impl InterfaceWatcher {
    /// Takes a first snapshot (so callers start with the real state) and starts the
    /// task that follows the kernel.
    pub fn spawn(shutdown: CancellationToken) -> Result<Self, IfaceError> {
        let first = Arc::new(snapshot()?);
        let (tx, rx) = watch::channel(first);
        let netlink = match open_netlink() {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, "cannot subscribe to kernel interface changes (netlink); polling every {FALLBACK_POLL:?} instead");
                None
            }
        };
        tokio::spawn(watch_loop(tx, netlink, shutdown));
        Ok(InterfaceWatcher { rx })
    }

    pub fn subscribe(&self) -> Subscription {
        let mut rx = self.rx.clone();
        let seen = rx.borrow_and_update().clone();
        Subscription { rx, seen }
    }
}

fn open_netlink() -> std::io::Result<netlink_sys::TokioSocket> {
    use netlink_sys::{protocols::NETLINK_ROUTE, AsyncSocket, SocketAddr};
    // RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR (linux/rtnetlink.h).
    const GROUPS: u32 = 0x1 | 0x10 | 0x100;
    let mut sock = netlink_sys::TokioSocket::new(NETLINK_ROUTE)?;
    sock.socket_mut().bind(&SocketAddr::new(0, GROUPS))?;
    Ok(sock)
}

async fn watch_loop(
    tx: watch::Sender<Arc<Snapshot>>,
    netlink: Option<netlink_sys::TokioSocket>,
    shutdown: CancellationToken,
) {
    let mut trigger = Trigger::new(netlink).await;
    loop {
        let take = tokio::select! {
            _ = shutdown.cancelled() => break,
            take = trigger.next() => take,
        };
        if take && !publish(&tx) {
            break;
        }
    }
}

/// What makes the watcher look again: netlink messages (debounced), or the poll.
struct Trigger {
    netlink: Option<netlink_sys::TokioSocket>,
    buf: Vec<u8>,
    debounce: Debouncer,
    poll: tokio::time::Interval,
}

impl Trigger {
    async fn new(netlink: Option<netlink_sys::TokioSocket>) -> Self {
        let poll_every = if netlink.is_some() {
            SAFETY_POLL
        } else {
            FALLBACK_POLL
        };
        let mut poll = tokio::time::interval(poll_every);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await;
        Trigger {
            netlink,
            buf: Vec::with_capacity(64 * 1024),
            debounce: Debouncer::new(SETTLE, SETTLE_CAP),
            poll,
        }
    }

    /// Waits for the next event: true when a snapshot is due now.
    async fn next(&mut self) -> bool {
        let deadline = self.debounce.deadline().map(tokio::time::Instant::from_std);
        tokio::select! {
            r = recv(self.netlink.as_mut(), &mut self.buf) => {
                self.on_netlink(r);
                false
            }
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                let fired = self.debounce.fire(Instant::now());
                tracing::trace!(fired, "debounce deadline");
                fired
            }
            _ = self.poll.tick() => true,
        }
    }

    fn on_netlink(&mut self, r: std::io::Result<()>) {
        match r {
            // The content does not matter: any message means "look again".
            Ok(()) => {
                tracing::trace!(bytes = self.buf.len(), "netlink message");
                self.debounce.event(Instant::now())
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                // Overrun: we missed messages, which is exactly when to look.
                self.debounce.event(Instant::now());
            }
            Err(e) => {
                warn!(error = %e, "netlink socket failed; polling every {FALLBACK_POLL:?} instead");
                self.netlink = None;
                self.poll = tokio::time::interval(FALLBACK_POLL);
            }
        }
    }
}

/// The next netlink message (into `buf`); never, without a socket.
async fn recv(
    netlink: Option<&mut netlink_sys::TokioSocket>,
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    use netlink_sys::AsyncSocketExt;
    match netlink {
        Some(s) => {
            buf.clear();
            s.recv(buf).await
        }
        None => std::future::pending().await,
    }
}

/// Reads a snapshot and publishes it if it differs from the last; false when nobody
/// listens any more.
fn publish(tx: &watch::Sender<Arc<Snapshot>>) -> bool {
    match snapshot() {
        Ok(snap) => {
            let changes = diff(&tx.borrow(), &snap);
            if changes.is_empty() {
                return true;
            }
            for c in &changes {
                log_change(c);
            }
            if tx.send(Arc::new(snap)).is_err() {
                debug!("no interface subscribers left; watcher stops");
                return false;
            }
        }
        Err(e) => warn!(error = %e, "interface snapshot failed"),
    }
    true
}

fn log_change(c: &IfaceChange) {
    let addrs = |i: &InterfaceInfo| -> Vec<String> {
        i.addrs
            .iter()
            .map(|a| format!("{}/{}", a.ip, a.prefix_len))
            .collect()
    };
    match c {
        IfaceChange::Added(i) => {
            info!(interface = %i.name, flags = ?i.flags, addrs = ?addrs(i), "interface appeared")
        }
        IfaceChange::Changed { new, .. } => {
            info!(interface = %new.name, flags = ?new.flags, addrs = ?addrs(new), "interface changed")
        }
        IfaceChange::Removed(i) => info!(interface = %i.name, "interface went away"),
    }
}

#[cfg(test)]
mod tests;

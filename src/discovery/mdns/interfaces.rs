//! Which interfaces mdns-sd may use: the set the interface watcher finds eligible
//! (`--mdns-interfaces`, `--mdns-loopback`, up/running/multicast), shared with the
//! daemon's selection predicate, and what a watcher change means for the driver.

use std::{
    collections::HashSet,
    net::IpAddr,
    sync::{Arc, RwLock},
};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::{gaps::GapLog, oneshot, scope::BindScope};
use crate::platform::iface::{
    IfaceChange, IfaceError, InterfaceFilter, InterfaceWatcher, Snapshot, Subscription,
};

/// What a watcher change means for mdns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Change {
    /// An eligible interface appeared, went or changed: re-apply the selection.
    pub relevant: bool,
    /// An interface or address we used went away.
    pub removal: bool,
    /// An interface became eligible or an eligible one gained an address.
    pub gained: bool,
}

pub struct Interfaces {
    filter: InterfaceFilter,
    /// Names of the eligible interfaces; the daemon's predicate reads it.
    eligible: Arc<RwLock<HashSet<String>>>,
    sub: Subscription,
    /// Kept so that the watcher runs as long as we do.
    _watcher: InterfaceWatcher,
    /// False once the watcher is gone.
    alive: bool,
    /// Warns about interfaces without an address of a bound family.
    gaps: GapLog,
    scope: BindScope,
}

impl Interfaces {
    pub fn start(
        filter: InterfaceFilter,
        scope: BindScope,
        shutdown: CancellationToken,
    ) -> Result<Self, IfaceError> {
        let watcher = InterfaceWatcher::spawn(shutdown)?;
        let sub = watcher.subscribe();
        let eligible = Arc::new(RwLock::new(eligible_names(&filter, sub.current())));
        let mut me = Interfaces {
            filter,
            eligible,
            sub,
            _watcher: watcher,
            alive: true,
            gaps: GapLog::default(),
            scope,
        };
        me.check_gaps();
        Ok(me)
    }

    fn check_gaps(&mut self) {
        let snap = self.sub.current();
        let eligible = snap.values().filter(|i| self.filter.eligible(i));
        self.gaps.check(eligible, &self.scope);
    }

    /// The eligible interface names now, sorted (for the log).
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .eligible
            .read()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// May mDNS go out over this interface address? For the daemon's predicates: it
    /// reads the shared set, so later changes need only a re-apply.
    pub fn usable(&self, scope: &BindScope) -> impl Fn(&str, IpAddr) -> bool + Send + Sync {
        let (names, scope) = (self.eligible.clone(), scope.clone());
        move |name: &str, ip: IpAddr| {
            scope.transport_ok(ip) && names.read().map(|s| s.contains(name)).unwrap_or(false)
        }
    }

    /// Where the one-shot query goes: each eligible interface's IPv4 addresses, and its
    /// index for IPv6, in the families iroh is bound to.
    pub fn oneshot_targets(&self, scope: &BindScope) -> Vec<oneshot::Target> {
        let mut out = Vec::new();
        for i in self
            .sub
            .current()
            .values()
            .filter(|i| self.filter.eligible(i))
        {
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

    /// The next watcher change; pending for ever once the watcher is gone.
    pub async fn next(&mut self) -> Option<Vec<IfaceChange>> {
        if !self.alive {
            return std::future::pending().await;
        }
        let changes = self.sub.next().await;
        self.alive = changes.is_some();
        changes
    }

    /// Takes a watcher change: updates the eligible set and says what it means.
    pub fn apply(&mut self, changes: &[IfaceChange]) -> Change {
        let new = eligible_names(&self.filter, self.sub.current());
        let Ok(mut cur) = self.eligible.write() else {
            return Change::default();
        };
        let mut out = Change::default();
        for c in changes {
            let name = c.name();
            let (was, is) = (cur.contains(name), new.contains(name));
            if !was && !is {
                continue;
            }
            out.relevant = true;
            match c {
                IfaceChange::Removed(_) => out.removal = true,
                IfaceChange::Changed { old, new: n } => {
                    if was && (!is || !old.addrs.is_subset(&n.addrs)) {
                        out.removal = true;
                    }
                    out.gained |= is && (!was || !n.addrs.is_subset(&old.addrs));
                }
                IfaceChange::Added(_) => out.gained |= is,
            }
            log_change(name, was, is);
        }
        *cur = new;
        drop(cur);
        if out.relevant {
            self.check_gaps();
        }
        out
    }
}

fn log_change(name: &str, was: bool, is: bool) {
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

fn eligible_names(filter: &InterfaceFilter, snap: &Snapshot) -> HashSet<String> {
    snap.values()
        .filter(|i| filter.eligible(i))
        .map(|i| i.name.clone())
        .collect()
}

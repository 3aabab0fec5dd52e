//! Tells iroh at once when this host's addresses change. iroh watches the network
//! itself, but on its own schedule; after a renumber every QUIC path on the old
//! address is dead, and the sooner iroh pings its paths and advertises the new
//! address to its peers (QUIC address discovery), the sooner the connections move.
//! The trigger is the interface watcher the discovery modes use (netlink, settled).

use iroh::Endpoint;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::platform::iface::{IfaceChange, InterfaceWatcher};

/// Starts the task; it ends with `shutdown`. Without an interface watcher (netlink and
/// getifaddrs both refused) iroh's own detection remains.
pub fn spawn(endpoint: Endpoint, shutdown: CancellationToken) {
    let watcher = match InterfaceWatcher::spawn(shutdown.child_token()) {
        Ok(w) => w,
        Err(e) => {
            warn!(error = %e, "cannot watch the interfaces; address changes are left to iroh's own detection");
            return;
        }
    };
    let mut sub = watcher.subscribe();
    tokio::spawn(async move {
        let _watcher = watcher;
        loop {
            let changes = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = sub.next() => c,
            };
            let Some(changes) = changes else { return };
            if changes.iter().any(moves_addresses) {
                debug!(changes = changes.len(), "interfaces changed; telling iroh");
                endpoint.network_change().await;
            }
        }
    });
}

/// A change that can move a path: an address or a whole interface came or went.
fn moves_addresses(c: &IfaceChange) -> bool {
    match c {
        IfaceChange::Added(i) | IfaceChange::Removed(i) => !i.addrs.is_empty(),
        IfaceChange::Changed { old, new } => old.addrs != new.addrs || old.flags != new.flags,
    }
}

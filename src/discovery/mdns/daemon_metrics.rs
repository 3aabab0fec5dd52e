//! mdns-sd's own counters (announcements, responses, cache refreshes, cached records)
//! copied into the node's counters every few seconds, for `status --json` and
//! `/metrics`. Asking costs one message to mdns-sd's thread, nothing on the wire.

use std::{sync::Arc, time::Duration};

use mdns_sd::ServiceDaemon;
use tokio_util::sync::CancellationToken;

use crate::node::peers::Counters;

/// How often mdns-sd is asked.
const EVERY: Duration = Duration::from_secs(10);

pub(super) async fn poll(daemon: ServiceDaemon, counters: Arc<Counters>, stop: CancellationToken) {
    loop {
        let Ok(rx) = daemon.get_metrics() else {
            return; // the daemon has stopped
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            got = rx.recv_async() => {
                let Ok(metrics) = got else { return };
                if let Ok(mut m) = counters.mdns_daemon.lock() {
                    m.clear();
                    m.extend(metrics);
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

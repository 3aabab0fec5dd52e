//! Closes connections when the peer's member certificate ends: the formation check
//! only looks at a certificate when a connection starts, and a device's certificate
//! is short-lived on purpose (a lost device stays useful only until it ends).
//!
//! One task per node with an authority, one deadline: the earliest end among the
//! certificates of the peers checked (the trust store records them), waking at least
//! every [`MAX_WAIT`] because the wall clock may jump (radios boot with a wrong
//! clock and set it later) and a new peer may bring an earlier end.

use std::{sync::Arc, time::Duration};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::peers::PeerManagerHandle;
use crate::trust::{store::TrustStore, unix_now, Refusal};

/// Longest sleep between two looks at the clock.
const MAX_WAIT: Duration = Duration::from_secs(5);

pub(super) fn spawn(
    trust: Arc<TrustStore>,
    peers: PeerManagerHandle,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let now = unix_now();
            for id in trust.take_ended(now) {
                peers.void(id, Refusal::Expired).await;
            }
            let wait = trust
                .next_peer_end()
                .map_or(MAX_WAIT, |end| wait_for(end, now));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    })
}

/// How long to sleep until `end` (Unix seconds) from `now`, within [`MAX_WAIT`].
fn wait_for(end: u64, now: u64) -> Duration {
    Duration::from_secs(end.saturating_sub(now)).min(MAX_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_the_end_but_looks_at_the_clock_again_soon() {
        assert_eq!(wait_for(100, 98), Duration::from_secs(2));
        assert_eq!(wait_for(100, 100), Duration::ZERO);
        assert_eq!(wait_for(100, 200), Duration::ZERO, "already over");
        assert_eq!(wait_for(10_000, 0), MAX_WAIT);
    }
}

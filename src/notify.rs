//! systemd service notifications (`Type=notify`): READY=1, STATUS=, WATCHDOG=1 and
//! STOPPING=1 on the socket in `NOTIFY_SOCKET`. Without that variable (not started by
//! systemd, or `Type=` other than notify) every call here does nothing.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::api::{
    pb,
    server::{SidecarService, Snapshot},
};

/// How often STATUS= is refreshed when no watchdog asks for more often.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// The one-line STATUS= summary that `systemctl status` shows.
pub fn status_line(s: &pb::GetStatusResponse) -> String {
    let modes = if s.discovery_modes.is_empty() {
        "none".to_string()
    } else {
        s.discovery_modes.join(",")
    };
    format!(
        "{} of {} known peers connected; discovery: {modes}",
        s.connected_peers, s.known_peers
    )
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        // systemd then times the start out or restarts us: say why in the journal.
        warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// READY=1, sent once the API and the metrics listener are bound and the peer manager
/// has answered a snapshot: clients that connect from now on are served.
pub async fn ready(service: &SidecarService) {
    let snap = service.snapshot().await;
    send(&[
        NotifyState::Ready,
        NotifyState::Status(&status_line(&snap.status)),
    ]);
}

/// STOPPING=1, at the start of the shutdown.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

/// Refreshes STATUS= every 5 s and, under `WatchdogSec=`, sends WATCHDOG=1 with it
/// (at least every half interval), but only after the peer manager answered a snapshot
/// in time: a wedged manager stops the pings and systemd restarts the service. Runs
/// until the API stops, so a slow shutdown is not mistaken for a hang. None without
/// NOTIFY_SOCKET.
pub fn spawn(service: SidecarService, shutdown: CancellationToken) -> Option<JoinHandle<()>> {
    std::env::var_os("NOTIFY_SOCKET")?;
    let watchdog = sd_notify::watchdog_enabled();
    let every = watchdog.map_or(STATUS_EVERY, |w| (w / 2).min(STATUS_EVERY));
    debug!(?watchdog, ?every, "systemd notifications on");
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match tokio::time::timeout(every, service.snapshot()).await {
                Ok(snap) => ping(&snap, watchdog.is_some()),
                Err(_) => warn!(
                    waited = ?every,
                    "the peer manager did not answer a status snapshot; no watchdog ping"
                ),
            }
        }
    }))
}

fn ping(snap: &Snapshot, watchdog: bool) {
    let line = status_line(&snap.status);
    if watchdog {
        send(&[NotifyState::Watchdog, NotifyState::Status(&line)]);
    } else {
        send(&[NotifyState::Status(&line)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_names_peers_and_modes() {
        let mut s = pb::GetStatusResponse {
            connected_peers: 2,
            known_peers: 3,
            discovery_modes: vec!["mdns".into(), "gossip".into()],
            ..Default::default()
        };
        assert_eq!(
            status_line(&s),
            "2 of 3 known peers connected; discovery: mdns,gossip"
        );
        s.discovery_modes.clear();
        assert!(status_line(&s).ends_with("discovery: none"));
    }
}

//! Liveness of connected peers without QUIC keep-alives.
//!
//! QUIC keep-alives cost a ping and an ACK per connection and interval, so a full mesh
//! pays N² on a shared channel. Instead each node multicasts one small *beacon* per
//! [`Config::beacon_interval`] on each multicast interface the operator selected
//! (`--mdns-interfaces`, in the bound families; see [`select`]; cost per node constant
//! in N), and probes a connected peer on its authenticated connection only when nothing
//! was heard from it for [`MISSED_BEACONS`] intervals. A probe that is not answered
//! within [`PROBE_TIMEOUT`] closes the connection with
//! [`CloseCode::Unresponsive`]; the peer manager then redials as after any loss.
//!
//! Peers whose beacons do not reach us (routed subnets, gossip, Kubernetes, several
//! sidecars on one host over loopback) are never heard from by beacon, so they are
//! probed every `MISSED_BEACONS` intervals: the same detection time, at the cost of one
//! small stream exchange per interval and connection.
//!
//! A forged beacon cannot end a connection: at worst it postpones the probe of a peer
//! that is really gone, for as long as the forger keeps sending.

mod probe;
pub mod select;
mod socket;
mod tracker;
mod wire;

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use iroh::{
    endpoint::{Connection, ConnectionError},
    EndpointId,
};
use tokio::{sync::mpsc, task::JoinHandle, time::MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::platform::iface::InterfaceFilter;

use super::{
    formation::CloseCode,
    peers::{Command, PeerManagerHandle},
};
use select::Selection;
use socket::BeaconSockets;
use tracker::{ConnKey, SilenceTracker, Verdict};
use wire::Beacon;

/// UDP port of the beacons (next to 9470 iroh and 9471 the dns mode's handshake).
pub const BEACON_PORT: u16 = 9472;
/// Intervals without a beacon after which a connected peer is probed.
pub const MISSED_BEACONS: u32 = 2;
/// How long a probe waits for its echo. Covers a few retransmissions on a slow link.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct Config {
    /// None: no beacons and no probes; QUIC keep-alives and the idle timeout alone
    /// decide (the behaviour before beacons).
    pub beacon_interval: Option<Duration>,
    pub port: u16,
    /// The interfaces beacons may use: the daemon passes mDNS's filter
    /// (`--mdns-interfaces`, `--mdns-loopback`), so one order silences both.
    pub interfaces: InterfaceFilter,
}

/// Starts the probe responder (always: peers with beacons on probe us) and, unless
/// beacons are off, the beacon and probe task. `bound`: the endpoint's sockets, whose
/// families and addresses the beacons keep to.
pub fn spawn(
    cfg: Config,
    bound: &[SocketAddr],
    me: EndpointId,
    peers: &PeerManagerHandle,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let streams = &peers.streams;
    let mut tasks = vec![tokio::spawn(probe::respond(
        streams.register(super::streams::tag::PING),
    ))];
    let Some(interval) = cfg.beacon_interval else {
        return tasks;
    };
    let selection = Selection::new(cfg.interfaces, bound);
    let sockets = if selection.loopback_only() {
        info!(bound = %crate::logfmt::list(bound), "bound to loopback only: no liveness beacons (nothing leaves this host); connected peers are probed every {:?} instead", interval * MISSED_BEACONS);
        None
    } else {
        match BeaconSockets::open(cfg.port) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, "no liveness beacons: connected peers are probed every {:?} instead", interval * MISSED_BEACONS);
                None
            }
        }
    };
    let task = Task {
        me,
        interval,
        sockets,
        selection,
        tracker: SilenceTracker::new(interval * MISSED_BEACONS),
        conns: HashMap::new(),
        seq: 0,
        manager: peers.sender(),
    };
    tasks.push(tokio::spawn(task.run(streams.connections(), shutdown)));
    tasks
}

enum Event {
    Closed(EndpointId, ConnKey),
    Probed {
        id: EndpointId,
        conn: ConnKey,
        answered: bool,
        started: Instant,
    },
}

struct Task {
    me: EndpointId,
    interval: Duration,
    sockets: Option<BeaconSockets>,
    selection: Selection,
    tracker: SilenceTracker,
    conns: HashMap<EndpointId, Connection>,
    seq: u32,
    manager: mpsc::Sender<Command>,
}

impl Task {
    async fn run(mut self, mut new_conns: mpsc::Receiver<Connection>, shutdown: CancellationToken) {
        let (tx, mut events) = mpsc::channel(256);
        // Beacons of different nodes drift apart rather than collide on the channel.
        let offset = self.interval.mul_f64(rand::random::<f64>());
        let mut beacon =
            tokio::time::interval_at(tokio::time::Instant::now() + offset, self.interval);
        beacon.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut check = tokio::time::interval(self.interval / 4);
        check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut buf4 = [0u8; 64];
        let mut buf6 = [0u8; 64];
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(conn) = new_conns.recv() => self.watch(conn, &tx),
                Some(ev) = events.recv() => self.on_event(ev),
                _ = beacon.tick() => self.send_beacons().await,
                _ = check.tick() => self.probe_due(&tx),
                Some((n, from)) = recv(self.sockets.as_ref().and_then(|s| s.v4.as_ref()), &mut buf4) => self.on_datagram(&buf4[..n], from),
                Some((n, from)) = recv(self.sockets.as_ref().and_then(|s| s.v6.as_ref()), &mut buf6) => self.on_datagram(&buf6[..n], from),
            }
        }
    }

    fn watch(&mut self, conn: Connection, tx: &mpsc::Sender<Event>) {
        let (id, key) = (conn.remote_id(), conn.stable_id());
        self.tracker.add(id, key, Instant::now());
        // The weak handle's future does not keep the connection alive.
        let closed = conn.weak_handle().closed();
        self.conns.insert(id, conn);
        let tx = tx.clone();
        tokio::spawn(async move {
            closed.await;
            let _ = tx.send(Event::Closed(id, key)).await;
        });
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Closed(id, key) => {
                self.tracker.remove(&id, key);
                if self.conns.get(&id).is_some_and(|c| c.stable_id() == key) {
                    self.conns.remove(&id);
                }
            }
            Event::Probed {
                id,
                conn,
                answered,
                started,
            } => {
                let verdict = self
                    .tracker
                    .probed(&id, conn, answered, started, Instant::now());
                if verdict != Verdict::Dead {
                    return;
                }
                let silent = started.elapsed() + self.interval * MISSED_BEACONS;
                info!(peer = %id, silent_secs = silent.as_secs_f32(), "peer unresponsive: no beacon and no answer to a probe; closing its connection");
                if let Some(c) = self.conns.remove(&id).filter(|c| c.stable_id() == conn) {
                    // Locally closed would read "closed locally" in the peer's row;
                    // for the manager this is a timeout like the QUIC one. It is told
                    // before the close, on the channel the connection's own watcher
                    // reports to, so that report comes second and is ignored as
                    // stale (the other order was a race: tests/daemon.rs saw both).
                    let closed = Command::Closed {
                        id,
                        conn_id: conn,
                        reason: ConnectionError::TimedOut,
                    };
                    if self.manager.try_send(closed).is_err() {
                        debug!(peer = %id, "peer manager busy; it learns of the close from the connection");
                    }
                    let code = CloseCode::Unresponsive;
                    c.close(code.varint(), code.reason());
                }
            }
        }
    }

    fn probe_due(&mut self, tx: &mpsc::Sender<Event>) {
        let now = Instant::now();
        for (id, key) in self.tracker.due(now) {
            let Some(conn) = self.conns.get(&id).cloned() else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let result = probe::probe(&conn, PROBE_TIMEOUT).await;
                match &result {
                    Err(e) => debug!(peer = %id, error = %e, "liveness probe failed"),
                    Ok(probe::Answer::Refused) => {
                        debug!(peer = %id, "liveness probe refused: the peer runs, without probes")
                    }
                    Ok(probe::Answer::Echo) => {}
                }
                let ev = Event::Probed {
                    id,
                    conn: key,
                    answered: result.is_ok(),
                    started: now,
                };
                let _ = tx.send(ev).await;
            });
        }
    }

    /// A beacon counts only if it comes from the address the peer's connection uses:
    /// after a renumbering the process is alive but the connection's path is dead,
    /// and the probe that follows finds that out (and the redial moves to the new
    /// address). It also means a forger must spoof the peer's address.
    fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        let Some(b) = Beacon::decode(bytes).filter(|b| b.prefix != wire::prefix_of(&self.me))
        else {
            return; // not a beacon, or our own looped back
        };
        let now = Instant::now();
        for (id, key) in self.tracker.matching(&b.prefix) {
            let Some(conn) = self.conns.get(&id).filter(|c| c.stable_id() == key) else {
                continue;
            };
            let path_ip = super::path::remote_addr(conn).map(|a| a.ip());
            if path_ip.is_some_and(|ip| same_host(ip, from.ip())) {
                self.tracker.heard(&id, now);
            }
        }
    }

    /// One beacon out of each selected interface, only while connected to someone:
    /// a node without peers has nobody to tell that it is alive.
    async fn send_beacons(&mut self) {
        let Some(sockets) = self.sockets.as_mut() else {
            return;
        };
        if self.tracker.is_empty() {
            return;
        }
        let snap = match crate::platform::iface::snapshot() {
            Ok(s) => s,
            Err(e) => return debug!(error = %e, "cannot list interfaces for beacons"),
        };
        sockets.join(&snap, &self.selection);
        self.seq = self.seq.wrapping_add(1);
        let bytes = Beacon {
            prefix: wire::prefix_of(&self.me),
            seq: self.seq,
        }
        .encode();
        for i in snap.values() {
            let Some(via) = self.selection.via(i) else {
                continue;
            };
            if let Err(e) = sockets.send(via, &bytes).await {
                debug!(iface = %i.name, error = %e, "beacon not sent");
            }
        }
    }
}

/// Reads one datagram, or waits forever if there is no socket (a select! branch that
/// never fires).
async fn recv(sock: Option<&tokio::net::UdpSocket>, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await.ok(),
        None => std::future::pending().await,
    }
}

/// The same address, whether written as IPv4 or IPv4-mapped IPv6.
fn same_host(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

//! The node: identity, iroh endpoint, formation check and peer manager.
//!
//! [`Node::start`] binds the endpoint, starts the peer manager and the accept loop, and
//! returns a handle; [`Node::shutdown`] closes every connection with a reason and then
//! the endpoint.

pub mod backoff;
pub mod endpoint;
pub mod formation;
pub mod handshake;
pub mod identity;
pub mod keyfile;
pub mod liveness;
pub mod path;
pub mod peers;
pub mod streams;

use std::{net::SocketAddr, sync::Arc, time::Instant};

use iroh::{Endpoint, EndpointId, SecretKey};
use tokio::{sync::Semaphore, task::JoinHandle};
use tracing::{debug, info, warn};

use crate::config::{PeerSpec, SharedKey};
use formation::Formation;
use peers::{Command, GaugeGuard, Limits, PeerManager, PeerManagerHandle, TaskGuard};

/// What the node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub secret_key: SecretKey,
    /// One address, or one per family (dual stack).
    pub bind: Vec<SocketAddr>,
    pub app_id: String,
    pub shared_key: Option<SharedKey>,
    pub static_peers: Vec<PeerSpec>,
    pub limits: Limits,
    pub liveness: endpoint::Liveness,
    pub beacons: liveness::Config,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Endpoint(#[from] endpoint::EndpointError),
}

/// A running node.
pub struct Node {
    endpoint: Endpoint,
    peers: PeerManagerHandle,
    formation: Formation,
    started: Instant,
    manager: JoinHandle<()>,
    acceptor: JoinHandle<()>,
    liveness: Vec<JoinHandle<()>>,
    stop_liveness: tokio_util::sync::CancellationToken,
}

impl Node {
    pub async fn start(cfg: NodeConfig) -> Result<Node, NodeError> {
        let endpoint = endpoint::bind(cfg.secret_key.clone(), &cfg.bind, cfg.liveness).await?;
        let formation = Formation::new(cfg.app_id.clone(), cfg.shared_key.as_ref());
        let (mut manager, peers) =
            PeerManager::new(endpoint.clone(), formation.clone(), cfg.limits.clone());
        for spec in &cfg.static_peers {
            manager.add_static(spec.id, spec.host.clone());
        }
        info!(
            endpoint_id = %endpoint.id(),
            bound = %crate::logfmt::list(endpoint.bound_sockets()),
            app_id = %cfg.app_id,
            shared_key = formation.has_shared_key(),
            static_peers = cfg.static_peers.len(),
            "iroh endpoint ready"
        );
        if !formation.has_shared_key() {
            warn!("no shared key: any host that knows the app id can join this formation (set --shared-key-file)");
        }
        let stop_liveness = tokio_util::sync::CancellationToken::new();
        let liveness = liveness::spawn(cfg.beacons, endpoint.id(), &peers, stop_liveness.clone());
        let manager = tokio::spawn(manager.run());
        let acceptor = tokio::spawn(accept_loop(
            endpoint.clone(),
            formation.clone(),
            peers.clone(),
            cfg.limits.max_pending_handshakes,
        ));
        Ok(Node {
            endpoint,
            peers,
            formation,
            started: Instant::now(),
            manager,
            acceptor,
            liveness,
            stop_liveness,
        })
    }

    pub fn id(&self) -> EndpointId {
        self.endpoint.id()
    }

    pub fn secret_key(&self) -> SecretKey {
        self.endpoint.secret_key().clone()
    }

    pub fn app_id(&self) -> &str {
        self.formation.app_id()
    }

    pub fn has_shared_key(&self) -> bool {
        self.formation.has_shared_key()
    }

    /// The endpoint, for what must reach iroh directly (network changes).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn bound_addrs(&self) -> Vec<SocketAddr> {
        self.endpoint.bound_sockets()
    }

    pub fn peers(&self) -> &PeerManagerHandle {
        &self.peers
    }

    /// iroh's own endpoint counters (shared: they keep counting after the clone).
    pub fn endpoint_metrics(&self) -> iroh::metrics::EndpointMetrics {
        self.endpoint.metrics().clone()
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Closes every connection with [`formation::CloseCode::Shutdown`], then the endpoint.
    pub async fn shutdown(self) {
        // Probes stop first: a peer that is slow to answer now must not be closed as
        // unresponsive instead of being told that we shut down.
        self.stop_liveness.cancel();
        for t in &self.liveness {
            t.abort();
        }
        self.peers.shutdown().await;
        self.acceptor.abort();
        let _ = self.manager.await;
        // close() waits until the close frames are sent (bounded by iroh).
        if tokio::time::timeout(std::time::Duration::from_secs(3), self.endpoint.close())
            .await
            .is_err()
        {
            warn!("endpoint did not close within 3 s");
        }
    }
}

/// Accepts connections and runs the formation check on each in its own task. At most
/// `max_pending` checks run at once; beyond that, new connections are refused before
/// the handshake, so a flood of connection attempts cannot exhaust memory.
async fn accept_loop(
    endpoint: Endpoint,
    formation: Formation,
    peers: PeerManagerHandle,
    max_pending: usize,
) {
    let pending = Arc::new(Semaphore::new(max_pending));
    let tx = peers.sender();
    let me = endpoint.id();
    let mut full_log = crate::ratelimit::RateLog::default();
    while let Some(incoming) = endpoint.accept().await {
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            peers
                .counters
                .incoming_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(suppressed) = full_log.hit(Instant::now()) {
                warn!(
                    max_pending,
                    suppressed,
                    "too many pending handshakes; refusing incoming connections (raise --max-pending-handshakes if real peers are refused)"
                );
            }
            incoming.refuse();
            continue;
        };
        let formation = formation.clone();
        let tx = tx.clone();
        let counters = peers.counters.clone();
        let guard = TaskGuard::new(&peers.counters);
        let pending_gauge = GaugeGuard::new(&peers.counters, |c| &c.handshakes_pending);
        tokio::spawn(async move {
            let _held = (guard, pending_gauge, permit);
            check_incoming(incoming, &formation, me, &tx, &counters).await;
        });
    }
}

/// TLS, ALPN and the formation check of one incoming connection; the result goes to the
/// peer manager (a connection that fails before the formation check is only logged).
async fn check_incoming(
    incoming: iroh::endpoint::Incoming,
    formation: &Formation,
    me: EndpointId,
    tx: &tokio::sync::mpsc::Sender<Command>,
    counters: &peers::Counters,
) {
    let accepting = match incoming.accept() {
        Ok(a) => a,
        Err(e) => {
            debug!(error = %e, "incoming connection failed before the handshake");
            return;
        }
    };
    let conn = match tokio::time::timeout(formation::HANDSHAKE_TIMEOUT, accepting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return debug!(error = %e, "incoming TLS handshake failed"),
        Err(_) => return debug!("incoming TLS handshake timed out"),
    };
    if !formation::ALPNS.contains(&conn.alpn()) {
        conn.close(formation::CloseCode::Protocol.varint(), b"unknown ALPN");
        return;
    }
    let id = conn.remote_id();
    let result = handshake::authenticate(&conn, formation, me, handshake::Side::Acceptor).await;
    peers::Counters::inc(&counters.incoming_handshakes[peers::handshake_outcome(&result)]);
    match result {
        Ok(()) => {
            let _ = tx.send(Command::Incoming { conn }).await;
        }
        Err(error) => {
            let code = error.close_code();
            conn.close(code.varint(), code.reason());
            let _ = tx.send(Command::IncomingFailed { id, error }).await;
        }
    }
}

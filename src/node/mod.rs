//! The node: identity, iroh endpoint, formation check and peer manager.
//!
//! [`Node::start`] binds the endpoint, starts the peer manager and the accept loop, and
//! returns a handle; [`Node::shutdown`] closes every connection with a reason and then
//! the endpoint.

pub mod backoff;
pub mod endpoint;
mod expiry;
pub mod formation;
pub mod handshake;
pub mod identity;
pub mod keyfile;
pub mod liveness;
pub mod path;
pub mod peers;
pub mod streams;
pub mod values;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use iroh::{Endpoint, EndpointId, SecretKey};
use tokio::{sync::Semaphore, task::JoinHandle};
use tracing::{debug, info, warn};

use formation::Formation;
use peers::{Command, GaugeGuard, Limits, PeerManager, PeerManagerHandle, TaskGuard};
pub use values::{PeerHost, PeerSpec, SharedKey, DEFAULT_IROH_PORT, MAX_APP_ID_LEN};

/// What the node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub secret_key: SecretKey,
    /// One address, or one per family (dual stack).
    pub bind: Vec<SocketAddr>,
    pub app_id: String,
    pub shared_key: Option<SharedKey>,
    /// Further keys accepted from peers while the formation changes its key.
    pub accepted_keys: Vec<SharedKey>,
    pub static_peers: Vec<PeerSpec>,
    pub limits: Limits,
    pub liveness: endpoint::Liveness,
    pub beacons: liveness::Config,
    /// Member certificates, if the formation has an authority.
    pub trust: Option<crate::trust::store::TrustConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Endpoint(#[from] endpoint::EndpointError),
    #[error("{}: {cause}", path.display())]
    Trust {
        path: std::path::PathBuf,
        cause: crate::trust::store::FileError,
    },
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
        let mut formation = Formation::new(cfg.app_id.clone(), cfg.shared_key.as_ref())
            .with_accepted(&cfg.accepted_keys);
        if let Some(t) = &cfg.trust {
            let store = crate::trust::store::TrustStore::load(t, endpoint.id())
                .map_err(|(path, cause)| NodeError::Trust { path, cause })?;
            formation = formation.with_trust(Arc::new(store));
        }
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
            certificates = formation.requires_cert(),
            static_peers = cfg.static_peers.len(),
            "iroh endpoint ready"
        );
        if !formation.has_shared_key() {
            warn!("no shared key: any host that knows the app id can join this formation (set --shared-key-file)");
        }
        let stop_liveness = tokio_util::sync::CancellationToken::new();
        let mut liveness = liveness::spawn(
            cfg.beacons,
            &endpoint.bound_sockets(),
            endpoint.id(),
            &peers,
            stop_liveness.clone(),
        );
        // Certificate ends are a liveness of their own: stopped with the beacons.
        if let Some(t) = formation.trust() {
            liveness.push(expiry::spawn(t, peers.clone(), stop_liveness.clone()));
        }
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

    /// The member certificates and revocations in use, if the formation has an authority.
    pub fn trust(&self) -> Option<Arc<crate::trust::store::TrustStore>> {
        self.formation.trust()
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
        let rtts: Vec<_> = (self.peers.connections().await.iter())
            .filter_map(|(_, c)| path::rtt(c))
            .collect();
        self.peers.shutdown().await;
        self.acceptor.abort();
        let _ = self.manager.await;
        let wait = close_wait(&rtts);
        // iroh cuts its own wait for draining connections at `wait` and then stops its
        // tasks; the outer bound only guards against a close that hangs elsewhere.
        let close = self.endpoint.close_within(wait);
        let bound = wait + Duration::from_secs(2);
        if tokio::time::timeout(bound, close).await.is_err() {
            warn!("endpoint did not close within {bound:?}");
        }
    }
}

/// Bounds on how long the endpoint may take to close at shutdown.
const MIN_CLOSE_WAIT: Duration = Duration::from_millis(200);
const MAX_CLOSE_WAIT: Duration = Duration::from_secs(3);

/// How long to let the endpoint close: the closing period of the slowest established
/// connection (three probe timeouts, RFC 9000 10.2), in which a lost close frame is
/// sent again when the peer's next packet arrives. iroh's close also waits for the
/// handshakes that were aborted, to peers that are gone: their probe timers have
/// backed off, and waiting for them held the exit 1-3 s for nobody's benefit.
fn close_wait(rtts: &[Duration]) -> Duration {
    let worst = rtts.iter().copied().max().unwrap_or_default();
    // A probe timeout is about rtt + 4 x rttvar + the peer's ack delay (25 ms); a
    // variance of half the rtt gives 3 x rtt.
    let pto = worst * 3 + Duration::from_millis(25);
    (pto * 3).clamp(MIN_CLOSE_WAIT, MAX_CLOSE_WAIT)
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
    if let Err(e) = &result {
        counters.count_refusal(e);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_wait_follows_the_slowest_established_connection() {
        let ms = Duration::from_millis;
        assert_eq!(close_wait(&[]), MIN_CLOSE_WAIT, "no connection: the floor");
        assert_eq!(close_wait(&[ms(1), ms(5)]), MIN_CLOSE_WAIT, "a LAN");
        // A radio link of 300 ms: 3 x (3 x 300 + 25) ms.
        assert_eq!(close_wait(&[ms(2), ms(300)]), ms(2775));
        assert_eq!(close_wait(&[ms(2000)]), MAX_CLOSE_WAIT, "capped");
    }
}

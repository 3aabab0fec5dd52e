//! What the peer manager shows and answers: the API-facing types (a row's state and
//! snapshot, request errors), its limits, and its counters.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use iroh::EndpointId;
use serde::Serialize;

use crate::{events::Source, node::formation::FormationError};

/// A peer's state, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    /// Known, not connected, and a dial is due.
    Discovered,
    /// A dial is in flight.
    Connecting,
    /// Connected and past the formation check.
    Connected,
    /// Not connected; waiting for the backoff to pass (or, after DisconnectPeer, to be
    /// found again).
    Backoff,
    /// Failed the formation check; retried only after a long backoff.
    Rejected,
}

impl PeerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Discovered => "discovered",
            PeerState::Connecting => "connecting",
            PeerState::Connected => "connected",
            PeerState::Backoff => "backoff",
            PeerState::Rejected => "rejected",
        }
    }
}

/// A snapshot of one table row.
#[derive(Debug, Clone, Serialize)]
pub struct PeerInfo {
    pub endpoint_id: String,
    pub state: PeerState,
    pub sources: Vec<Source>,
    pub addrs: Vec<String>,
    pub rtt_ms: Option<f64>,
    pub last_error: Option<String>,
    /// Whether this side dialled the live connection.
    pub outbound: Option<bool>,
    /// Whether auto-reconnect is paused by DisconnectPeer.
    pub paused: bool,
    pub failures: u32,
    pub connected_for_secs: Option<u64>,
    pub next_retry_ms: Option<u64>,
    /// UDP bytes sent and received on the live connection.
    pub bytes_sent: Option<u64>,
    pub bytes_received: Option<u64>,
    /// QUIC packets sent on the live connection and those declared lost (MTU probes
    /// left out: a lost probe only says the path's MTU is smaller, not that it loses).
    pub packets_sent: Option<u64>,
    pub packets_lost: Option<u64>,
}

/// Why a ConnectPeer or DisconnectPeer request failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    #[error("that is this sidecar's own endpoint id")]
    SelfConnect,
    #[error("peer {0} is not known; give its address as ENDPOINT_ID@HOST:PORT")]
    NoAddress(EndpointId),
    #[error("peer {0} is not known")]
    NotFound(EndpointId),
    #[error(transparent)]
    DialFailed(DialError),
    #[error("peer {0} is a --peer entry; remove it from the configuration to forget it")]
    Configured(EndpointId),
    #[error("peer {0} was forgotten by request")]
    Forgotten(EndpointId),
    #[error("the peer table is full ({0} peers); raise --max-known-peers")]
    TableFull(usize),
    #[error("the sidecar is shutting down")]
    ShuttingDown,
}

/// Why a dial failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    #[error("no address to dial")]
    NoAddress,
    #[error("cannot resolve {host}: {message}")]
    Resolve { host: String, message: String },
    /// The QUIC connect failed; the text is iroh's error chain on one line (iroh's
    /// error types are not `Clone`, and a dial result is answered to several callers).
    #[error("QUIC connect failed: {0}")]
    Connect(String),
    /// Nobody answered within the dial's answer timeout (or the whole dial took too
    /// long before an answer).
    #[error("timed out after {:.1}s", .0.as_secs_f64())]
    Timeout(Duration),
    /// The peer answered, but the handshake and formation check did not finish in
    /// time: a slow or lossy link, not a spoofed address.
    #[error("the peer answered, but the handshake did not finish within {:.1}s", .0.as_secs_f64())]
    Stalled(Duration),
    /// TLS proved that the node at the address is not `expected` (the certificate is
    /// the endpoint id). `known`: the peer this sidecar knows at that address, if any.
    #[error("the node at {} has another endpoint id than {expected}{}; check the id (`peat-sidecar peers` lists the ids this sidecar knows)", crate::logfmt::list(.addrs), .known.map(|k| format!(" (it is {k})")).unwrap_or_default())]
    OtherIdentity {
        expected: EndpointId,
        addrs: Vec<std::net::SocketAddr>,
        known: Option<EndpointId>,
    },
    #[error(transparent)]
    Formation(#[from] FormationError),
}

impl DialError {
    pub fn is_rejection(&self) -> bool {
        matches!(self, DialError::Formation(f) if f.is_rejection())
    }

    /// Nobody answered at the addresses: what a spoofed announcement looks like.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, DialError::Timeout(_) | DialError::Connect(_))
    }

    /// Its index in [`DIAL_FAILURE_REASONS`].
    pub fn reason(&self) -> usize {
        match self {
            DialError::Timeout(_) | DialError::Stalled(_) => 0,
            DialError::Connect(_) => 1,
            _ if self.is_rejection() => 2,
            DialError::OtherIdentity { .. } => 3,
            _ => 4,
        }
    }
}

/// Why dials failed, as the metrics' `reason` label says it.
pub const DIAL_FAILURE_REASONS: [&str; 5] = [
    "timeout",
    "unreachable",
    "rejected",
    "other_identity",
    "other",
];

/// How the formation checks of incoming connections ended.
pub const HANDSHAKE_OUTCOMES: [&str; 4] = ["ok", "rejected", "timeout", "error"];

/// Index in [`HANDSHAKE_OUTCOMES`] of a check's result.
pub fn handshake_outcome(result: &Result<(), FormationError>) -> usize {
    match result {
        Ok(()) => 0,
        Err(e) if e.is_rejection() => 1,
        Err(FormationError::Timeout(_)) => 2,
        Err(_) => 3,
    }
}

/// Limits of the manager, from the command line.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_peers: usize,
    pub max_known_peers: usize,
    pub max_concurrent_dials: usize,
    /// Dials started per second at most, averaged; bursts of this size are allowed.
    pub max_dials_per_sec: u32,
    /// Formation checks of incoming connections running at once (the acceptor's).
    pub max_pending_handshakes: usize,
}

/// Counters for GetStatus: they show leaks (connections or tasks that never end).
#[derive(Debug, Default)]
pub struct Counters {
    pub dials_started: AtomicU64,
    pub dials_failed: AtomicU64,
    pub connections_opened: AtomicU64,
    pub connections_closed: AtomicU64,
    pub handshakes_rejected: AtomicU64,
    pub incoming_refused: AtomicU64,
    pub duplicates_closed: AtomicU64,
    pub self_discoveries_ignored: AtomicU64,
    pub peers_evicted: AtomicU64,
    /// Tasks that the node spawned and that are still running (dials, handshakes,
    /// connection watchers).
    pub live_tasks: AtomicU64,
    /// Dials in flight (a gauge).
    pub dials_in_flight: AtomicU64,
    /// Incoming connections in their TLS or formation handshake (a gauge).
    pub handshakes_pending: AtomicU64,
    /// Records the mdns source tracks (a gauge; 0 without mdns).
    pub mdns_records: AtomicU64,
    /// Records of other app ids (other formations) the mdns source sees (a gauge).
    pub mdns_other_app_records: AtomicU64,
    /// Installed connections whose QUIC connection has not ended yet (a gauge): equal
    /// to the connected peers in the table unless a connection leaks.
    pub connections_live: AtomicU64,
    /// Failed dials by [`DIAL_FAILURE_REASONS`].
    pub dial_failures: [AtomicU64; 5],
    /// Incoming formation checks by [`HANDSHAKE_OUTCOMES`].
    pub incoming_handshakes: [AtomicU64; 4],
    /// Peers' member certificates this node refused, by [`crate::trust::REFUSAL_REASONS`].
    pub cert_refusals: [AtomicU64; 7],
    /// Gossip rounds run (0 without gossip).
    pub gossip_rounds: AtomicU64,
    /// DNS resolution rounds run (0 without dns).
    pub dns_rounds: AtomicU64,
    /// mdns-sd's own counters by name, as it last reported them (empty without mdns).
    pub mdns_daemon: std::sync::Mutex<std::collections::BTreeMap<String, i64>>,
}

impl Counters {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a peer's certificate that this node's check refused.
    pub(crate) fn count_refusal(&self, error: &FormationError) {
        if let FormationError::Certificate(e) = error {
            Self::inc(&self.cert_refusals[e.refusal().index()]);
        }
    }
}

/// Decrements `live_tasks` when a spawned task ends, however it ends.
pub(crate) struct TaskGuard(Arc<Counters>);

impl TaskGuard {
    pub(crate) fn new(c: &Arc<Counters>) -> Self {
        c.live_tasks.fetch_add(1, Ordering::Relaxed);
        TaskGuard(c.clone())
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.live_tasks.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Holds one unit of a gauge in [`Counters`] while it lives.
pub(crate) struct GaugeGuard {
    counters: Arc<Counters>,
    gauge: fn(&Counters) -> &AtomicU64,
}

impl GaugeGuard {
    pub(crate) fn new(c: &Arc<Counters>, gauge: fn(&Counters) -> &AtomicU64) -> Self {
        gauge(c).fetch_add(1, Ordering::Relaxed);
        GaugeGuard {
            counters: c.clone(),
            gauge,
        }
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        (self.gauge)(&self.counters).fetch_sub(1, Ordering::Relaxed);
    }
}

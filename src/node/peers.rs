//! The peer manager: the one place that decides whom to dial.
//!
//! It is an actor (one task owning the peer table) fed by a command channel. Its inputs
//! are static peers, the ConnectPeer/DisconnectPeer RPCs, discovery events, finished
//! dials, authenticated incoming connections and closed connections. It
//!
//! - keeps one connection per peer and one dial in flight per peer;
//! - settles simultaneous dials deterministically (see [`survivor`]);
//! - dials in parallel, up to `--max-concurrent-dials`, and never dials itself;
//! - redials every known peer after a loss, with exponential backoff and jitter;
//! - keeps a bounded table of peers with state, sources, addresses, last error, RTT.
//!
//! Dials and handshakes run in their own tasks and report back through the channel, so
//! the table is never locked and a slow peer never blocks the others.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use iroh::{
    endpoint::{Connection, ConnectionError},
    Endpoint, EndpointAddr, EndpointId,
};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, info, warn};

use super::{
    backoff::{self, Backoff},
    formation::{CloseCode, Formation, FormationError, ALPN, HANDSHAKE_TIMEOUT},
    streams::StreamRegistry,
};
use crate::{
    config::PeerHost,
    events::{DiscoveryEvent, PeerEvent, PeerEventKind, Source},
    ratelimit::{RateLog, TokenBucket},
};

/// Most addresses kept per peer; discovery sources may report more.
pub const MAX_ADDRS_PER_PEER: usize = 16;
/// How long a dial may take, QUIC and formation check together.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(8);
/// How long the first dial of a discovered peer that never connected may take. On a
/// LAN the handshake takes milliseconds; a flood of fake announcements at unreachable
/// addresses would otherwise hold every dial slot for [`DIAL_TIMEOUT`]. A slow real
/// peer gets the full timeout from its second dial on.
pub const FIRST_DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Addresses remembered as dead (a first dial there timed out or was refused), at most.
pub const MAX_DEAD_ADDRS: usize = 4096;
/// How long an address is remembered as dead.
pub const DEAD_ADDR_TTL: Duration = Duration::from_secs(600);
/// Two connections to one peer made within this window count as a simultaneous dial.
pub const RACE_WINDOW: Duration = Duration::from_secs(3);
/// How often the manager looks for peers whose backoff has passed.
const TICK: Duration = Duration::from_millis(100);

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
    /// Installed connections whose QUIC connection has not ended yet (a gauge): equal
    /// to the connected peers in the table unless a connection leaks.
    pub connections_live: AtomicU64,
}

impl Counters {
    fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
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

/// Why a ConnectPeer or DisconnectPeer request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    #[error("that is this sidecar's own endpoint id")]
    SelfConnect,
    #[error("peer {0} is not known; give its address as ENDPOINT_ID@HOST:PORT")]
    NoAddress(EndpointId),
    #[error("peer {0} is not known")]
    NotFound(EndpointId),
    #[error("{0}")]
    DialFailed(String),
    #[error("the peer table is full ({0} peers); raise --max-known-peers")]
    TableFull(usize),
    #[error("the sidecar is shutting down")]
    ShuttingDown,
}

/// Why a dial failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DialError {
    #[error("no address to dial")]
    NoAddress,
    #[error("cannot resolve {host}: {message}")]
    Resolve { host: String, message: String },
    #[error("QUIC connect failed: {0}")]
    Connect(String),
    #[error("timed out after {}s", .0.as_secs())]
    Timeout(Duration),
    #[error(transparent)]
    Formation(#[from] FormationError),
}

impl DialError {
    fn is_rejection(&self) -> bool {
        matches!(self, DialError::Formation(f) if f.is_rejection())
    }
}

/// Commands to the manager.
pub enum Command {
    Discovery(DiscoveryEvent),
    Connect {
        id: EndpointId,
        hosts: Vec<PeerHost>,
        reply: oneshot::Sender<Result<PeerInfo, RequestError>>,
    },
    Disconnect {
        id: EndpointId,
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
    List {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    Connections {
        reply: oneshot::Sender<Vec<(EndpointId, Connection)>>,
    },
    DialDone {
        id: EndpointId,
        result: Result<Connection, DialError>,
    },
    Incoming {
        conn: Connection,
    },
    IncomingFailed {
        id: EndpointId,
        error: FormationError,
    },
    Closed {
        id: EndpointId,
        conn_id: usize,
        reason: ConnectionError,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// A live connection and how it came about.
struct Live {
    conn: Connection,
    outbound: bool,
    since: Instant,
}

struct Peer {
    sources: BTreeSet<Source>,
    /// Addresses learned from discovery or from resolved hosts.
    addrs: BTreeSet<SocketAddr>,
    /// Host names (static peers, ConnectPeer) resolved before each dial.
    hosts: BTreeSet<PeerHost>,
    live: Option<Live>,
    dialing: bool,
    rejected: bool,
    /// Set by DisconnectPeer: no redial until the peer is found or connected again.
    paused: bool,
    backoff: Backoff,
    retry_at: Option<Instant>,
    last_error: Option<String>,
    first_seen: Instant,
    /// Whether this peer ever passed the formation check here: real, not a spoof.
    ever_connected: bool,
    /// The addresses of the dial in flight (see `PeerManager::in_flight_addrs`).
    dialed: Vec<SocketAddr>,
    waiters: Vec<oneshot::Sender<Result<PeerInfo, RequestError>>>,
}

impl Peer {
    fn new(now: Instant) -> Self {
        Peer {
            sources: BTreeSet::new(),
            addrs: BTreeSet::new(),
            hosts: BTreeSet::new(),
            live: None,
            dialing: false,
            rejected: false,
            paused: false,
            backoff: Backoff::default(),
            retry_at: Some(now),
            last_error: None,
            first_seen: now,
            ever_connected: false,
            dialed: Vec::new(),
            waiters: Vec::new(),
        }
    }

    fn state(&self) -> PeerState {
        if self.live.is_some() {
            PeerState::Connected
        } else if self.dialing {
            PeerState::Connecting
        } else if self.rejected {
            PeerState::Rejected
        } else if self.paused || self.retry_at.is_some_and(|t| t > Instant::now()) {
            PeerState::Backoff
        } else {
            PeerState::Discovered
        }
    }

    fn info(&self, id: &EndpointId, now: Instant) -> PeerInfo {
        let rtt_ms = self
            .live
            .as_ref()
            .and_then(|l| rtt(&l.conn))
            .map(|d| d.as_secs_f64() * 1000.0);
        let mut addrs: Vec<String> = self.addrs.iter().map(|a| a.to_string()).collect();
        for h in &self.hosts {
            if let PeerHost::Name { .. } = h {
                addrs.push(h.to_string());
            }
        }
        PeerInfo {
            endpoint_id: id.to_string(),
            state: self.state(),
            sources: self.sources.iter().copied().collect(),
            addrs,
            rtt_ms,
            last_error: self.last_error.clone(),
            outbound: self.live.as_ref().map(|l| l.outbound),
            paused: self.paused,
            failures: self.backoff.failures(),
            connected_for_secs: self
                .live
                .as_ref()
                .map(|l| now.duration_since(l.since).as_secs()),
            next_retry_ms: match (&self.live, self.dialing, self.paused, self.retry_at) {
                (None, false, false, Some(t)) => {
                    Some(t.saturating_duration_since(now).as_millis() as u64)
                }
                _ => None,
            },
        }
    }

    /// When a dial became due, if one is due now: not connected, not being dialled, not
    /// paused by DisconnectPeer, and its retry time has come.
    fn due_since(&self, now: Instant) -> Option<Instant> {
        let t = self.retry_at?;
        (self.live.is_none() && !self.dialing && !self.paused && t <= now).then_some(t)
    }

    /// Peers an operator named are kept and redialled whatever discovery says.
    fn configured(&self) -> bool {
        self.sources.iter().any(|s| s.is_configured())
    }

    /// A discovered peer that never connected and whose every address is known dead:
    /// most likely a spoofed announcement. Dialled last and evicted first.
    fn suspect(&self, dead: &DeadAddrs) -> bool {
        self.doubtful() && self.addrs.iter().all(|a| dead.contains(a))
    }

    /// Discovered, never connected: what a spoofed announcement looks like.
    fn doubtful(&self) -> bool {
        !self.ever_connected && !self.configured() && !self.addrs.is_empty()
    }

    /// The dial timeout: short for a first try at a discovered, never-connected peer.
    fn dial_timeout(&self) -> Duration {
        if self.ever_connected || self.configured() || self.backoff.failures() > 0 {
            DIAL_TIMEOUT
        } else {
            FIRST_DIAL_TIMEOUT
        }
    }
}

/// Addresses where a first dial to a never-connected peer found nobody. A flood of
/// spoofed announcements reuses addresses (a LAN has few), so after one dead dial per
/// address every further fake at that address sinks behind a peer at a fresh address:
/// a real peer that appears during the flood is dialled next, not after thousands of
/// fakes. Bounded ([`MAX_DEAD_ADDRS`], oldest dropped) and forgotten after
/// [`DEAD_ADDR_TTL`] or as soon as a connection over the address succeeds.
#[derive(Debug, Default)]
struct DeadAddrs(HashMap<SocketAddr, Instant>);

impl DeadAddrs {
    fn contains(&self, a: &SocketAddr) -> bool {
        self.0.get(a).is_some_and(|t| t.elapsed() < DEAD_ADDR_TTL)
    }

    fn insert(&mut self, a: SocketAddr, now: Instant) {
        if self.0.len() >= MAX_DEAD_ADDRS && !self.0.contains_key(&a) {
            self.0.retain(|_, t| now.duration_since(*t) < DEAD_ADDR_TTL);
            if self.0.len() >= MAX_DEAD_ADDRS {
                if let Some(oldest) = self.0.iter().min_by_key(|(_, t)| **t).map(|(a, _)| *a) {
                    self.0.remove(&oldest);
                }
            }
        }
        self.0.insert(a, now);
    }

    fn remove(&mut self, a: &SocketAddr) {
        self.0.remove(a);
    }
}

/// Which entry goes when the peer table is full. Never evicted: connected peers, peers
/// being dialled or awaited by a ConnectPeer call, and static peers. Among the rest,
/// API-added peers go last, rejected ones first; then suspects (every address dead),
/// then peers that failed, then those that never connected. Among equals so far, one
/// whose addresses all appear in other entries too goes before one with an address of
/// its own: a flood of spoofed announcements reuses the few addresses it has, so
/// dropping such an entry loses no address the dialler still has to try, while a real
/// peer at its own address, found among thousands of fakes, stays until it has been
/// dialled (with oldest-first alone it was the first to go, before its dial came up).
/// Oldest first among equals.
fn eviction_victim(peers: &HashMap<EndpointId, Peer>, dead: &DeadAddrs) -> Option<EndpointId> {
    let mut claims: HashMap<&SocketAddr, u32> = HashMap::with_capacity(peers.len());
    for p in peers.values() {
        for a in &p.addrs {
            *claims.entry(a).or_default() += 1;
        }
    }
    let shared = |p: &Peer| {
        !p.addrs.is_empty()
            && p.addrs
                .iter()
                .all(|a| claims.get(a).is_some_and(|n| *n > 1))
    };
    peers
        .iter()
        .filter(|(_, p)| {
            p.live.is_none()
                && !p.dialing
                // A ConnectPeer caller that gave up no longer pins the entry.
                && p.waiters.iter().all(|w| w.is_closed())
                && !p.sources.contains(&Source::Static)
        })
        .min_by_key(|(_, p)| {
            (
                p.sources.contains(&Source::Api),
                p.state() != PeerState::Rejected,
                !p.suspect(dead),
                p.backoff.failures() == 0,
                p.ever_connected,
                !shared(p),
                p.first_seen,
            )
        })
        .map(|(id, _)| *id)
}

/// RTT of the connection's selected path.
fn rtt(conn: &Connection) -> Option<Duration> {
    let paths = conn.paths();
    let selected = paths.into_iter().find(|p| p.is_selected())?;
    conn.rtt(selected.id())
}

/// Which of two connections to one peer survives. Both sides evaluate this with the
/// same inputs and so keep the same connection:
/// - made within [`RACE_WINDOW`] of each other (a simultaneous dial): the one dialled
///   by the smaller endpoint id;
/// - otherwise the newer one: a peer only dials when it has no live connection, so the
///   older one is stale (the peer restarted, or its half died unnoticed).
///
/// Returns true if the new connection should replace the old one.
pub fn survivor(
    me: &EndpointId,
    peer: &EndpointId,
    old_outbound: bool,
    new_outbound: bool,
    age_of_old: Duration,
) -> bool {
    if age_of_old > RACE_WINDOW || old_outbound == new_outbound {
        return true;
    }
    let dialer = |outbound: bool| if outbound { me } else { peer };
    dialer(new_outbound).as_bytes() < dialer(old_outbound).as_bytes()
}

/// How many connections a node opens itself to discovered peers under `--max-peers N`:
/// half of N (at least 1). The other half is left for peers that dial in, so a node that
/// joins late still finds peers with room, while every node dialling at most N/2 keeps
/// the formation at about (nodes x N/2) connections instead of nodes^2/2. Configured
/// peers (`--peer`, ConnectPeer) are dialled regardless, and a connection beyond N is
/// closed with [`CloseCode::OverCapacity`] unless it is to a configured peer.
pub fn dial_target(max_peers: usize) -> usize {
    max_peers.div_ceil(2).max(1)
}

/// How long a connection beyond `--max-peers` is kept before it is closed with
/// [`CloseCode::OverCapacity`]: long enough for one gossip exchange.
pub const OVER_CAPACITY_GRACE: Duration = Duration::from_secs(10);

/// How long the larger endpoint id waits before dialling a peer that discovery just
/// reported. Discovery is mostly symmetric (gossip, mDNS and DNS tell both sides about
/// each other at about the same moment), and two simultaneous dials cost two handshakes
/// of which one is thrown away; on a loaded host the loser can time out and push the
/// pair into backoff. Letting the smaller id go first avoids most such races; if it
/// never dials (it did not discover us), the larger one dials after this delay.
pub const TIE_BREAK_DELAY: Duration = Duration::from_secs(2);

/// Delay before the first dial of a newly discovered peer; see [`TIE_BREAK_DELAY`].
/// `at_once` (a configured peer, or one that cannot have found us yet, such as the
/// answers to a joining node's first mDNS query) skips the delay: there is no
/// simultaneous dial to avoid, and waiting would make every join take as long as the
/// peers need to hear our announcement (probing and announcing take ~1 s).
pub fn first_dial_delay(me: &EndpointId, peer: &EndpointId, at_once: bool) -> Duration {
    if at_once || me.as_bytes() < peer.as_bytes() {
        Duration::ZERO
    } else {
        TIE_BREAK_DELAY
    }
}

/// Cheap, cloneable handle to the manager.
#[derive(Clone)]
pub struct PeerManagerHandle {
    tx: mpsc::Sender<Command>,
    events: broadcast::Sender<PeerEvent>,
    pub counters: Arc<Counters>,
    /// Protocols that run on authenticated connections register here.
    pub streams: StreamRegistry,
}

impl PeerManagerHandle {
    pub(crate) fn sender(&self) -> mpsc::Sender<Command> {
        self.tx.clone()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<PeerEvent> {
        self.events.subscribe()
    }

    pub async fn list(&self) -> Vec<PeerInfo> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::List { reply }).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// The live, authenticated connections. Gossip exchanges tables over these.
    pub async fn connections(&self) -> Vec<(EndpointId, Connection)> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Connections { reply }).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// The live, authenticated connection to one peer, if any.
    pub async fn connection(&self, peer: EndpointId) -> Option<Connection> {
        self.connections()
            .await
            .into_iter()
            .find(|(id, _)| *id == peer)
            .map(|(_, c)| c)
    }

    pub async fn connect(
        &self,
        id: EndpointId,
        hosts: Vec<PeerHost>,
    ) -> Result<PeerInfo, RequestError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Connect { id, hosts, reply })
            .await
            .map_err(|_| RequestError::ShuttingDown)?;
        rx.await.map_err(|_| RequestError::ShuttingDown)?
    }

    pub async fn disconnect(&self, id: EndpointId) -> Result<(), RequestError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Disconnect { id, reply })
            .await
            .map_err(|_| RequestError::ShuttingDown)?;
        rx.await.map_err(|_| RequestError::ShuttingDown)?
    }

    /// Closes every connection with [`CloseCode::Shutdown`] and stops the manager.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown { reply }).await.is_ok() {
            let _ = rx.await;
        }
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

/// One rate-limited log per limit the manager enforces.
#[derive(Debug, Default)]
struct LimitLogs {
    table_full: RateLog,
    evicted: RateLog,
    concurrent: RateLog,
    budget: RateLog,
    over_capacity: RateLog,
}

pub struct PeerManager {
    me: EndpointId,
    endpoint: Endpoint,
    formation: Formation,
    limits: Limits,
    peers: HashMap<EndpointId, Peer>,
    rx: mpsc::Receiver<Command>,
    tx: mpsc::WeakSender<Command>,
    events: broadcast::Sender<PeerEvent>,
    counters: Arc<Counters>,
    streams: StreamRegistry,
    dials_in_flight: usize,
    dial_budget: TokenBucket,
    dead_addrs: DeadAddrs,
    /// Addresses that dials in flight are trying, with the number of such dials.
    in_flight_addrs: HashMap<SocketAddr, u32>,
    /// Rate-limited logs, one per limit.
    logs: LimitLogs,
}

impl PeerManager {
    pub fn new(
        endpoint: Endpoint,
        formation: Formation,
        limits: Limits,
    ) -> (Self, PeerManagerHandle) {
        let (tx, rx) = mpsc::channel(1024);
        let (events, _) = broadcast::channel(1024);
        let counters = Arc::new(Counters::default());
        let streams = StreamRegistry::default();
        let dial_budget = TokenBucket::per_second(limits.max_dials_per_sec, Instant::now());
        let handle = PeerManagerHandle {
            tx: tx.clone(),
            events: events.clone(),
            counters: counters.clone(),
            streams: streams.clone(),
        };
        let mgr = PeerManager {
            me: endpoint.id(),
            endpoint,
            formation,
            limits,
            peers: HashMap::new(),
            rx,
            tx: tx.downgrade(),
            events,
            counters,
            streams,
            dials_in_flight: 0,
            dial_budget,
            dead_addrs: DeadAddrs::default(),
            in_flight_addrs: HashMap::new(),
            logs: LimitLogs::default(),
        };
        (mgr, handle)
    }

    /// Adds `--peer` entries before the manager starts.
    pub fn add_static(&mut self, id: EndpointId, host: PeerHost) {
        if id == self.me {
            warn!(peer = %id, "ignoring --peer entry with this sidecar's own endpoint id");
            return;
        }
        let now = Instant::now();
        let peer = self.peers.entry(id).or_insert_with(|| Peer::new(now));
        peer.sources.insert(Source::Static);
        if let PeerHost::Addr(a) = host {
            peer.addrs.insert(a);
        }
        peer.hosts.insert(host);
    }

    /// Runs until [`Command::Shutdown`].
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = self.rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    if let Command::Shutdown { reply } = cmd {
                        self.shutdown();
                        let _ = reply.send(());
                        break;
                    }
                    self.handle(cmd);
                }
                _ = tick.tick() => self.dial_due(),
            }
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Discovery(DiscoveryEvent::Found {
                id,
                addrs,
                source,
                unaware,
            }) => self.on_found(id, addrs, source, unaware),
            Command::Discovery(DiscoveryEvent::Lost { id, source }) => self.on_lost(id, source),
            Command::Connect { id, hosts, reply } => self.on_connect(id, hosts, reply),
            Command::Disconnect { id, reply } => {
                let _ = reply.send(self.on_disconnect(id));
            }
            Command::List { reply } => {
                let now = Instant::now();
                let mut list: Vec<PeerInfo> =
                    self.peers.iter().map(|(id, p)| p.info(id, now)).collect();
                list.sort_by(|a, b| a.endpoint_id.cmp(&b.endpoint_id));
                let _ = reply.send(list);
            }
            Command::Connections { reply } => {
                let conns = self
                    .peers
                    .iter()
                    .filter_map(|(id, p)| p.live.as_ref().map(|l| (*id, l.conn.clone())))
                    .collect();
                let _ = reply.send(conns);
            }
            Command::DialDone { id, result } => self.on_dial_done(id, result),
            Command::Incoming { conn } => {
                let id = conn.remote_id();
                self.install(id, conn, false);
            }
            Command::IncomingFailed { id, error } => self.on_incoming_failed(id, error),
            Command::Closed {
                id,
                conn_id,
                reason,
            } => self.on_closed(id, conn_id, reason),
            Command::Shutdown { .. } => unreachable!("handled in run"),
        }
    }

    fn emit(&self, id: &EndpointId, kind: PeerEventKind, detail: impl Into<String>) {
        // No subscriber is fine: the send error only says nobody is watching.
        let _ = self.events.send(PeerEvent::now(*id, kind, detail));
    }

    fn connected_count(&self) -> usize {
        self.peers.values().filter(|p| p.live.is_some()).count()
    }

    fn at_capacity(&self) -> bool {
        self.limits.max_peers > 0 && self.connected_count() >= self.limits.max_peers
    }

    /// Whether a discovered (not configured) peer may be dialled now; see [`dial_target`].
    ///
    /// Dials in flight count too: otherwise a node with few connections would start a
    /// dial to every due peer in one tick, and all of them would succeed.
    fn may_dial_discovered(&self) -> bool {
        self.limits.max_peers == 0
            || self.connected_count() + self.dials_in_flight < dial_target(self.limits.max_peers)
    }

    /// Makes room for one more peer; see [`eviction_victim`]. False if nothing can be
    /// evicted.
    fn make_room(&mut self) -> bool {
        if self.peers.len() < self.limits.max_known_peers {
            return true;
        }
        let victim = eviction_victim(&self.peers, &self.dead_addrs);
        match victim {
            Some(id) => {
                self.peers.remove(&id);
                Counters::inc(&self.counters.peers_evicted);
                debug!(peer = %id, "peer table full: evicted");
                self.emit(&id, PeerEventKind::Removed, "evicted: peer table full");
                if let Some(suppressed) = self.logs.evicted.hit(Instant::now()) {
                    warn!(
                        peer = %id,
                        max_known_peers = self.limits.max_known_peers,
                        evicted_total = self.counters.peers_evicted.load(Ordering::Relaxed),
                        suppressed,
                        "peer table full: evicted an unconnected entry (a flood of announcements?)"
                    );
                }
                true
            }
            None => false,
        }
    }

    fn warn_full(&mut self) {
        if let Some(suppressed) = self.logs.table_full.hit(Instant::now()) {
            warn!(
                max_known_peers = self.limits.max_known_peers,
                suppressed,
                "peer table full and every entry is connected or configured; ignoring newly discovered peers (raise --max-known-peers)"
            );
        }
    }

    fn on_found(
        &mut self,
        id: EndpointId,
        addrs: BTreeSet<SocketAddr>,
        source: Source,
        unaware: bool,
    ) {
        if id == self.me {
            Counters::inc(&self.counters.self_discoveries_ignored);
            return;
        }
        let now = Instant::now();
        if !self.peers.contains_key(&id) {
            if !self.make_room() {
                self.warn_full();
                return;
            }
            self.peers.insert(id, Peer::new(now));
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let new_source = peer.sources.insert(source);
        let before = peer.addrs.len();
        for a in addrs {
            if peer.addrs.len() >= MAX_ADDRS_PER_PEER {
                break;
            }
            peer.addrs.insert(a);
        }
        let new_addrs = peer.addrs.len() > before;
        if new_source {
            info!(peer = %id, %source, addrs = ?peer.addrs, "peer found");
            self.emit(&id, PeerEventKind::Found, format!("source {source}"));
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        // Found again: an earlier DisconnectPeer no longer holds.
        peer.paused = false;
        if peer.live.is_none() && !peer.dialing && !peer.rejected && (new_source || new_addrs) {
            // New information: try now instead of waiting out the backoff.
            let delay = first_dial_delay(&self.me, &id, peer.configured() || unaware);
            peer.retry_at = Some(now + delay);
        }
        self.try_dial(id);
    }

    fn on_lost(&mut self, id: EndpointId, source: Source) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if !peer.sources.remove(&source) {
            return;
        }
        info!(peer = %id, %source, connected = peer.live.is_some(), "peer lost by {source}");
        self.emit(&id, PeerEventKind::Lost, format!("source {source}"));
        self.remove_if_orphan(id);
    }

    /// A peer that no source knows and that is not connected has nothing left to say.
    fn remove_if_orphan(&mut self, id: EndpointId) {
        let orphan = self.peers.get(&id).is_some_and(|p| {
            p.sources.is_empty()
                && p.live.is_none()
                && !p.dialing
                && p.waiters.iter().all(|w| w.is_closed())
        });
        if orphan {
            self.peers.remove(&id);
            debug!(peer = %id, "peer removed from the table: no source knows it");
            self.emit(&id, PeerEventKind::Removed, "no source knows it");
        }
    }

    fn on_connect(
        &mut self,
        id: EndpointId,
        hosts: Vec<PeerHost>,
        reply: oneshot::Sender<Result<PeerInfo, RequestError>>,
    ) {
        if id == self.me {
            let _ = reply.send(Err(RequestError::SelfConnect));
            return;
        }
        let now = Instant::now();
        if !self.peers.contains_key(&id) {
            if hosts.is_empty() {
                let _ = reply.send(Err(RequestError::NoAddress(id)));
                return;
            }
            if !self.make_room() {
                let _ = reply.send(Err(RequestError::TableFull(self.limits.max_known_peers)));
                return;
            }
            self.peers.insert(id, Peer::new(now));
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        peer.sources.insert(Source::Api);
        for h in hosts {
            if let PeerHost::Addr(a) = &h {
                if peer.addrs.len() < MAX_ADDRS_PER_PEER {
                    peer.addrs.insert(*a);
                }
            }
            peer.hosts.insert(h);
        }
        peer.paused = false;
        if let Some(_live) = &peer.live {
            let info = peer.info(&id, now);
            let _ = reply.send(Ok(info));
            return;
        }
        // An operator asked: try now, also a rejected peer (the key may have been fixed).
        peer.rejected = false;
        peer.retry_at = Some(now);
        peer.waiters.push(reply);
        self.try_dial(id);
    }

    fn on_disconnect(&mut self, id: EndpointId) -> Result<(), RequestError> {
        let peer = self.peers.get_mut(&id).ok_or(RequestError::NotFound(id))?;
        peer.paused = true;
        peer.retry_at = None;
        if let Some(live) = peer.live.take() {
            let code = CloseCode::Disconnect;
            live.conn.close(code.varint(), code.reason());
            Counters::inc(&self.counters.connections_closed);
        }
        info!(peer = %id, "disconnected by request; no redial until the peer is found or connected again");
        self.emit(&id, PeerEventKind::Disconnected, "disconnected by request");
        Ok(())
    }

    /// Starts dials for every peer whose time has come.
    ///
    /// When dials are scarce (a flood of discovered peers), peers an operator configured
    /// go first, then those that failed least often, then the longest waiting: a burst of
    /// unreachable fakes cannot starve a real peer that was found at the same time.
    fn dial_due(&mut self) {
        let now = Instant::now();
        let mut due: Vec<(bool, u8, u32, Instant, EndpointId)> = self
            .peers
            .iter()
            .filter_map(|(id, p)| {
                let t = p.due_since(now)?;
                Some((!p.configured(), self.rank(p), p.backoff.failures(), t, *id))
            })
            .collect();
        // Dial slots go first to configured peers, then to peers that failed least: a
        // flood of unreachable addresses (a bogus gossip table) sinks to the back after
        // one failure each and cannot starve the real peers. Among equals the newest
        // goes first: after a flood of fake announcements the table is full of untried
        // entries, and a real peer found again (mdns re-browses) must not wait behind
        // all of them; the oldest are the ones eviction takes anyway. Suspects (every
        // address dead, see [`DeadAddrs`]) come after all others: a real peer at a
        // fresh address goes first even while new fakes keep arriving.
        due.sort_unstable_by_key(|&(c, s, f, t, id)| (c, s, f, std::cmp::Reverse(t), id));
        for (_, _, _, _, id) in due {
            if self.dials_in_flight >= self.limits.max_concurrent_dials {
                break;
            }
            self.try_dial(id);
        }
    }

    /// How likely a peer is a spoof, for the dial order: 0 for a peer with an address
    /// nobody tried yet (or a configured or once-connected one), 1 for a doubtful peer
    /// whose addresses a dial is trying right now (whether they are dead is about to be
    /// known), 2 for a suspect (every address dead).
    fn rank(&self, p: &Peer) -> u8 {
        if p.suspect(&self.dead_addrs) {
            2
        } else if p.doubtful()
            && p.addrs
                .iter()
                .all(|a| self.dead_addrs.contains(a) || self.in_flight_addrs.contains_key(a))
        {
            1
        } else {
            0
        }
    }

    fn try_dial(&mut self, id: EndpointId) {
        if self.dials_in_flight >= self.limits.max_concurrent_dials {
            if let Some(suppressed) = self.logs.concurrent.hit(Instant::now()) {
                info!(
                    max_concurrent_dials = self.limits.max_concurrent_dials,
                    suppressed,
                    "--max-concurrent-dials reached; further dials wait for a free slot"
                );
            }
            return; // the tick retries once a slot frees up
        }
        let may_dial_discovered = self.may_dial_discovered();
        let now = Instant::now();
        let rank = match self.peers.get(&id) {
            Some(p) => self.rank(p),
            None => return,
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.due_since(now).is_none() {
            return;
        }
        if !may_dial_discovered && !peer.configured() {
            // Wait: a slot may free up. Checked again at the next tick.
            return;
        }
        if peer.addrs.is_empty() && peer.hosts.is_empty() {
            return;
        }
        if rank > 0 && self.dial_budget.available(now) < 2 {
            // Likely a spoof: keep the last token for a peer at an untried address (the
            // tick retries, in rank order).
            return;
        }
        if rank > 0
            && self.limits.max_concurrent_dials > 1
            && self.dials_in_flight + 1 >= self.limits.max_concurrent_dials
        {
            // Likewise the last dial slot: during a flood every slot can be held by a
            // dial to a fake that only ends at its timeout, and a real peer found
            // meanwhile would wait for one to expire.
            return;
        }
        if self.dial_budget.take(now).is_err() {
            if let Some(suppressed) = self.logs.budget.hit(now) {
                info!(
                    max_dials_per_sec = self.limits.max_dials_per_sec,
                    suppressed, "--max-dials-per-sec reached; further dials wait"
                );
            }
            return; // over --max-dials-per-sec; the tick retries
        }
        let timeout = peer.dial_timeout();
        peer.dialing = true;
        peer.retry_at = None;
        self.dials_in_flight += 1;
        for a in &peer.addrs {
            *self.in_flight_addrs.entry(*a).or_default() += 1;
        }
        peer.dialed = peer.addrs.iter().copied().collect();
        Counters::inc(&self.counters.dials_started);
        let addrs: Vec<SocketAddr> = peer.addrs.iter().copied().collect();
        let hosts: Vec<PeerHost> = peer.hosts.iter().cloned().collect();
        debug!(peer = %id, ?addrs, "dialling");
        self.emit(
            &id,
            PeerEventKind::Connecting,
            format!("{} addresses", addrs.len()),
        );
        let endpoint = self.endpoint.clone();
        let formation = self.formation.clone();
        let tx = self.tx.clone();
        let guard = TaskGuard::new(&self.counters);
        let in_flight = GaugeGuard::new(&self.counters, |c| &c.dials_in_flight);
        tokio::spawn(async move {
            let _guard = guard;
            let _in_flight = in_flight;
            let result =
                match tokio::time::timeout(timeout, dial(&endpoint, &formation, id, addrs, hosts))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(DialError::Timeout(timeout)),
                };
            if let Some(tx) = tx.upgrade() {
                let _ = tx.send(Command::DialDone { id, result }).await;
            }
        });
    }

    fn on_dial_done(&mut self, id: EndpointId, result: Result<Connection, DialError>) {
        self.dials_in_flight = self.dials_in_flight.saturating_sub(1);
        let Some(peer) = self.peers.get_mut(&id) else {
            if let Ok(conn) = result {
                // Removed while dialling (evicted): nobody wants this connection.
                conn.close(CloseCode::Shutdown.varint(), b"peer forgotten");
            }
            return;
        };
        peer.dialing = false;
        for a in std::mem::take(&mut peer.dialed) {
            if let std::collections::hash_map::Entry::Occupied(mut e) =
                self.in_flight_addrs.entry(a)
            {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
        match result {
            Ok(conn) => self.install(id, conn, true),
            Err(e) => {
                Counters::inc(&self.counters.dials_failed);
                if matches!(e, DialError::Timeout(_) | DialError::Connect(_))
                    && !peer.ever_connected
                    && !peer.configured()
                {
                    let now = Instant::now();
                    for a in &peer.addrs {
                        self.dead_addrs.insert(*a, now);
                    }
                }
                let rejection = e.is_rejection();
                let delay = if rejection {
                    peer.rejected = true;
                    Counters::inc(&self.counters.handshakes_rejected);
                    backoff::REJECTED
                } else {
                    peer.backoff.next_delay()
                };
                let msg = e.to_string();
                peer.last_error = Some(msg.clone());
                if !peer.paused {
                    peer.retry_at = Some(Instant::now() + delay);
                }
                for w in peer.waiters.drain(..) {
                    let _ = w.send(Err(RequestError::DialFailed(msg.clone())));
                }
                if rejection {
                    warn!(peer = %id, reason = %msg, retry_in = ?delay, "peer rejected: not of our formation");
                    self.emit(&id, PeerEventKind::Rejected, msg);
                } else {
                    info!(peer = %id, error = %msg, retry_in = ?delay, "dial failed");
                    self.emit(
                        &id,
                        PeerEventKind::Disconnected,
                        format!("dial failed: {msg}"),
                    );
                }
                self.remove_if_orphan(id);
            }
        }
    }

    fn on_incoming_failed(&mut self, id: EndpointId, error: FormationError) {
        Counters::inc(&self.counters.incoming_refused);
        // Unknown peers are not added: a stranger must not be able to fill the table.
        let level_warn = error.is_rejection();
        if level_warn {
            Counters::inc(&self.counters.handshakes_rejected);
            warn!(peer = %id, reason = %error, "refused incoming connection: not of our formation");
        } else {
            debug!(peer = %id, reason = %error, "incoming formation check failed");
        }
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.last_error = Some(error.to_string());
            if level_warn && peer.live.is_none() {
                peer.rejected = true;
                if !peer.dialing && !peer.paused {
                    peer.retry_at = Some(Instant::now() + backoff::REJECTED);
                }
                self.emit(&id, PeerEventKind::Rejected, error.to_string());
            }
        }
    }

    /// Records an authenticated connection, settling duplicates.
    fn install(&mut self, id: EndpointId, conn: Connection, outbound: bool) {
        let now = Instant::now();
        let known = self.peers.contains_key(&id);
        let configured = self.peers.get(&id).is_some_and(|p| p.configured());
        let has_live = self.peers.get(&id).is_some_and(|p| p.live.is_some());
        let over_capacity = !has_live && !configured && self.at_capacity();
        if over_capacity {
            // Not refused outright: the peer may have named us as its only --peer, and
            // without one exchange it would learn nobody else. It gets the connection
            // for OVER_CAPACITY_GRACE (its gossip exchange runs at once), then it is
            // closed with OverCapacity and the peer dials others.
            let closing = conn.clone();
            let guard = TaskGuard::new(&self.counters);
            tokio::spawn(async move {
                let _guard = guard;
                tokio::select! {
                    _ = tokio::time::sleep(OVER_CAPACITY_GRACE) => {
                        let code = CloseCode::OverCapacity;
                        closing.close(code.varint(), code.reason());
                    }
                    _ = closing.closed() => {}
                }
            });
            if let Some(suppressed) = self.logs.over_capacity.hit(now) {
                info!(
                    peer = %id,
                    max_peers = self.limits.max_peers,
                    grace_secs = OVER_CAPACITY_GRACE.as_secs(),
                    suppressed,
                    "--max-peers reached: connection kept for one exchange, then closed"
                );
            }
        }
        if !known {
            if !self.make_room() {
                self.warn_full();
                conn.close(
                    CloseCode::OverCapacity.varint(),
                    CloseCode::OverCapacity.reason(),
                );
                return;
            }
            self.peers.insert(id, Peer::new(now));
        }
        let me = self.me;
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        // Counted before the duplicate check: a duplicate that is closed at once was
        // still opened, so that opened - closed always equals the live connections.
        Counters::inc(&self.counters.connections_opened);
        if let Some(old) = &peer.live {
            let replace = survivor(
                &me,
                &id,
                old.outbound,
                outbound,
                now.duration_since(old.since),
            );
            Counters::inc(&self.counters.duplicates_closed);
            Counters::inc(&self.counters.connections_closed);
            let code = CloseCode::Duplicate;
            if replace {
                debug!(peer = %id, outbound, "duplicate connection: keeping the new one");
                old.conn.close(code.varint(), code.reason());
            } else {
                debug!(peer = %id, outbound, "duplicate connection: keeping the old one");
                conn.close(code.varint(), code.reason());
                return;
            }
        }
        let conn_id = conn.stable_id();
        peer.live = Some(Live {
            conn: conn.clone(),
            outbound,
            since: now,
        });
        peer.rejected = false;
        peer.paused = false;
        peer.retry_at = None;
        peer.backoff.reset();
        peer.last_error = None;
        peer.ever_connected = true;
        // Its addresses are alive after all (it may have been down at the first dial).
        for a in &peer.addrs {
            self.dead_addrs.remove(a);
        }
        let info = peer.info(&id, now);
        for w in peer.waiters.drain(..) {
            let _ = w.send(Ok(info.clone()));
        }
        let addr = conn
            .paths()
            .into_iter()
            .find(|p| p.is_selected())
            .map(|p| format!("{:?}", p.remote_addr()));
        info!(peer = %id, outbound, addr = addr.as_deref().unwrap_or("?"), "peer connected");
        self.emit(
            &id,
            PeerEventKind::Connected,
            if outbound { "outbound" } else { "inbound" },
        );

        // Watch the connection: when it ends, for whatever reason, the manager hears.
        // Meanwhile route the streams the peer opens to the protocols that want them.
        let tx = self.tx.clone();
        let guard = TaskGuard::new(&self.counters);
        let live = GaugeGuard::new(&self.counters, |c| &c.connections_live);
        let streams = self.streams.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let _live = live;
            let router = streams.route(conn.clone());
            let reason = tokio::select! {
                reason = conn.closed() => reason,
                _ = router => conn.closed().await,
            };
            if let Some(tx) = tx.upgrade() {
                let _ = tx
                    .send(Command::Closed {
                        id,
                        conn_id,
                        reason,
                    })
                    .await;
            }
        });
    }

    fn on_closed(&mut self, id: EndpointId, conn_id: usize, reason: ConnectionError) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let current = peer
            .live
            .as_ref()
            .is_some_and(|l| l.conn.stable_id() == conn_id);
        if !current {
            return; // a duplicate we closed, or one replaced already
        }
        peer.live = None;
        Counters::inc(&self.counters.connections_closed);
        let (why, kind) = describe_close(&reason);
        let left = matches!(kind, CloseKind::PeerLeft);
        match kind {
            CloseKind::PeerDisconnected => {
                // The peer's operator asked to disconnect: respect it on this side too.
                peer.paused = true;
                peer.retry_at = None;
            }
            CloseKind::LocalDisconnect => {
                // Closed here for capacity: dial again later, when there may be room.
                if !peer.paused {
                    peer.retry_at = Some(Instant::now() + peer.backoff.next_delay());
                }
            }
            CloseKind::Rejected => {
                peer.rejected = true;
                peer.retry_at = Some(Instant::now() + backoff::REJECTED);
            }
            CloseKind::Lost => {
                if !peer.paused {
                    peer.retry_at = Some(Instant::now() + peer.backoff.next_delay());
                }
            }
            CloseKind::PeerLeft => {
                if !peer.paused {
                    let delay = peer.backoff.next_delay().max(PEER_LEFT_DELAY);
                    peer.retry_at = Some(Instant::now() + delay);
                }
            }
            CloseKind::Full => {
                if !peer.paused {
                    peer.retry_at = Some(Instant::now() + backoff::MAX);
                }
            }
        }
        peer.last_error = Some(why.clone());
        info!(peer = %id, reason = %why, "peer disconnected");
        self.emit(&id, PeerEventKind::Disconnected, why);
        if left {
            // Said over the authenticated connection, so unlike an mDNS goodbye only
            // the peer itself can say it: discovery sources may forget it at once.
            self.emit(&id, PeerEventKind::Left, "the peer is shutting down");
        }
        self.remove_if_orphan(id);
    }

    fn shutdown(&mut self) {
        let code = CloseCode::Shutdown;
        let mut n = 0;
        for peer in self.peers.values_mut() {
            if let Some(live) = peer.live.take() {
                live.conn.close(code.varint(), code.reason());
                n += 1;
            }
            for w in peer.waiters.drain(..) {
                let _ = w.send(Err(RequestError::ShuttingDown));
            }
        }
        info!(connections = n, "closed all peer connections");
    }
}

/// How long to wait before redialling a peer that closed with "shutdown". It is leaving
/// on purpose: its sources usually forget it within this time (mDNS at once, on the
/// `left` event; others on their goodbye), which removes it, instead of a redial that
/// can only fail and keeps the entry alive until the dial times out. A peer that
/// restarts is still redialled.
pub const PEER_LEFT_DELAY: Duration = Duration::from_secs(2);

enum CloseKind {
    /// The peer shut down: redial after [`PEER_LEFT_DELAY`] at the earliest.
    PeerLeft,
    /// Gone without a word (timeout, reset): redial with backoff.
    Lost,
    /// The peer is at its --max-peers: try again only after the longest backoff.
    Full,
    PeerDisconnected,
    LocalDisconnect,
    Rejected,
}

fn describe_close(reason: &ConnectionError) -> (String, CloseKind) {
    match reason {
        ConnectionError::ApplicationClosed(close) => {
            let code = CloseCode::from_code(close.error_code.into_inner());
            match code {
                Some(CloseCode::Shutdown) => ("the peer shut down".into(), CloseKind::PeerLeft),
                Some(CloseCode::Disconnect) => (
                    "the peer disconnected us by request".into(),
                    CloseKind::PeerDisconnected,
                ),
                Some(CloseCode::Duplicate) => ("closed as a duplicate".into(), CloseKind::Lost),
                Some(CloseCode::OverCapacity) => (
                    "the peer's connection limit is reached".into(),
                    CloseKind::Full,
                ),
                Some(c) if c.is_rejection() => (
                    format!(
                        "the peer rejected us: {}",
                        String::from_utf8_lossy(c.reason())
                    ),
                    CloseKind::Rejected,
                ),
                Some(c) => (
                    String::from_utf8_lossy(c.reason()).into_owned(),
                    CloseKind::Lost,
                ),
                None => (
                    format!("closed by the peer with unknown code {}", close.error_code),
                    CloseKind::Lost,
                ),
            }
        }
        ConnectionError::TimedOut => (
            "timed out: no packets within the idle timeout".into(),
            CloseKind::Lost,
        ),
        ConnectionError::Reset => ("reset by the peer (it restarted)".into(), CloseKind::Lost),
        ConnectionError::LocallyClosed => ("closed locally".into(), CloseKind::LocalDisconnect),
        other => (other.to_string(), CloseKind::Lost),
    }
}

/// Resolves the peer's host names, connects and runs the dialer's side of the check.
async fn dial(
    endpoint: &Endpoint,
    formation: &Formation,
    id: EndpointId,
    mut addrs: Vec<SocketAddr>,
    hosts: Vec<PeerHost>,
) -> Result<Connection, DialError> {
    for host in hosts {
        if let PeerHost::Name { host, port } = host {
            let lookup = tokio::net::lookup_host((host.clone(), port)).await;
            match lookup {
                Ok(resolved) => addrs.extend(resolved),
                Err(e) if addrs.is_empty() => {
                    return Err(DialError::Resolve {
                        host,
                        message: e.to_string(),
                    })
                }
                Err(e) => {
                    debug!(%host, error = %e, "cannot resolve host; trying the other addresses")
                }
            }
        }
    }
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(DialError::NoAddress);
    }
    let mut target = EndpointAddr::new(id);
    for a in addrs {
        target = target.with_ip_addr(a);
    }
    let conn = endpoint
        .connect(target, ALPN)
        .await
        .map_err(|e| DialError::Connect(error_chain(&e)))?;
    match authenticate_outbound(&conn, formation, endpoint.id(), id).await {
        Ok(()) => Ok(conn),
        Err(e) => {
            let code = e.close_code();
            conn.close(code.varint(), code.reason());
            Err(DialError::Formation(e))
        }
    }
}

async fn authenticate_outbound(
    conn: &Connection,
    formation: &Formation,
    me: EndpointId,
    peer: EndpointId,
) -> Result<(), FormationError> {
    within_handshake_timeout(conn, async {
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| FormationError::Io(e.to_string()))?;
        formation.dial(&mut recv, &mut send, me, peer).await?;
        let _ = send.finish();
        Ok(())
    })
    .await
}

/// Runs the acceptor's side of the check on a freshly accepted connection.
pub async fn authenticate_inbound(
    conn: &Connection,
    formation: &Formation,
    me: EndpointId,
) -> Result<(), FormationError> {
    let peer = conn.remote_id();
    within_handshake_timeout(conn, async {
        let (mut send, mut recv) = conn
            .accept_bi()
            .await
            .map_err(|e| FormationError::Io(e.to_string()))?;
        formation.accept(&mut recv, &mut send, me, peer).await?;
        let _ = send.finish();
        Ok(())
    })
    .await
}

/// Either side of the check, bounded by [`HANDSHAKE_TIMEOUT`], its error refined by
/// how the peer closed the connection.
async fn within_handshake_timeout(
    conn: &Connection,
    check: impl std::future::Future<Output = Result<(), FormationError>>,
) -> Result<(), FormationError> {
    let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, check)
        .await
        .unwrap_or(Err(FormationError::Timeout));
    result.map_err(|e| refine_with_close(conn, e))
}

/// An I/O failure during the check often means the peer closed the connection with a
/// rejection code: report that instead of "stream reset".
fn refine_with_close(conn: &Connection, e: FormationError) -> FormationError {
    if !matches!(e, FormationError::Io(_)) {
        return e;
    }
    match conn.close_reason() {
        Some(ConnectionError::ApplicationClosed(close)) => {
            CloseCode::from_code(close.error_code.into_inner())
                .and_then(FormationError::from_peer_close)
                .unwrap_or(e)
        }
        _ => e,
    }
}

/// The error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let t = src.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = src.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use iroh::SecretKey;

    #[test]
    fn survivor_is_the_same_on_both_sides() {
        let a = SecretKey::generate().public();
        let b = SecretKey::generate().public();
        let young = Duration::from_millis(10);
        // a holds an outbound conn (a dialled) and receives b's dial; b holds its
        // outbound and receives a's. Both must keep the conn dialled by min(a, b).
        let a_keeps_new = survivor(&a, &b, true, false, young);
        let b_keeps_new = survivor(&b, &a, true, false, young);
        let smaller_is_a = a.as_bytes() < b.as_bytes();
        // On a, "new" is b's dial; keep it iff b is smaller.
        assert_eq!(a_keeps_new, !smaller_is_a);
        // On b, "new" is a's dial; keep it iff a is smaller.
        assert_eq!(b_keeps_new, smaller_is_a);
    }

    #[test]
    fn dead_addresses_are_bounded_and_forgettable() {
        let mut d = DeadAddrs::default();
        let t0 = Instant::now();
        for i in 0..(MAX_DEAD_ADDRS + 10) {
            let a = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 9470));
            d.insert(a, t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(d.0.len(), MAX_DEAD_ADDRS);
        // The oldest went first.
        assert!(!d.contains(&SocketAddr::from(([10, 0, 0, 0], 9470))));
        let last = SocketAddr::from(([10, 0, 16, 9], 9470));
        assert!(d.contains(&last));
        d.remove(&last);
        assert!(!d.contains(&last));
    }

    #[test]
    fn a_peer_is_suspect_only_if_every_address_is_dead_and_it_never_connected() {
        let now = Instant::now();
        let dead_a = SocketAddr::from(([10, 77, 0, 200], 9470));
        let live_a = SocketAddr::from(([10, 77, 0, 3], 9470));
        let mut d = DeadAddrs::default();
        d.insert(dead_a, now);
        let mut p = Peer::new(now);
        p.sources.insert(Source::Mdns);
        p.addrs.insert(dead_a);
        assert!(p.suspect(&d));
        assert_eq!(p.dial_timeout(), FIRST_DIAL_TIMEOUT);
        p.addrs.insert(live_a);
        assert!(!p.suspect(&d), "one untried address is enough");
        p.addrs.remove(&live_a);
        p.ever_connected = true;
        assert!(!p.suspect(&d), "a peer that connected once is real");
        assert_eq!(p.dial_timeout(), DIAL_TIMEOUT);
        let mut s = Peer::new(now);
        s.sources.insert(Source::Static);
        s.addrs.insert(dead_a);
        assert!(!s.suspect(&d), "configured peers are never suspects");
        assert_eq!(s.dial_timeout(), DIAL_TIMEOUT);
    }

    #[test]
    fn eviction_keeps_a_peer_at_its_own_address_over_fakes_sharing_theirs() {
        let t0 = Instant::now();
        let fake_a = SocketAddr::from(([198, 18, 0, 100], 9470));
        let real_a = SocketAddr::from(([10, 77, 0, 3], 9470));
        let peer = |at: Duration, a: SocketAddr| {
            let mut p = Peer::new(t0 + at);
            p.sources.insert(Source::Mdns);
            p.addrs.insert(a);
            p
        };
        let real = SecretKey::generate().public();
        let mut peers = HashMap::new();
        // The real peer is the oldest entry; two newer fakes share one address.
        peers.insert(real, peer(Duration::ZERO, real_a));
        let f1 = SecretKey::generate().public();
        let f2 = SecretKey::generate().public();
        peers.insert(f1, peer(Duration::from_millis(10), fake_a));
        peers.insert(f2, peer(Duration::from_millis(20), fake_a));
        let dead = DeadAddrs::default();
        assert_eq!(
            eviction_victim(&peers, &dead),
            Some(f1),
            "oldest fake goes first"
        );
        peers.remove(&f1);
        // Now the fake has its address to itself too: oldest first again.
        assert_eq!(eviction_victim(&peers, &dead), Some(real));
        // A fake at a dead address goes before anyone.
        let mut dead = DeadAddrs::default();
        dead.insert(fake_a, t0);
        assert_eq!(eviction_victim(&peers, &dead), Some(f2));
    }

    #[test]
    fn stale_connection_loses_to_a_new_one() {
        let a = SecretKey::generate().public();
        let b = SecretKey::generate().public();
        assert!(survivor(&a, &b, true, false, Duration::from_secs(60)));
        assert!(survivor(&a, &b, false, true, Duration::from_secs(60)));
        // Same direction twice: the newer is the peer's redial.
        assert!(survivor(&a, &b, false, false, Duration::from_millis(1)));
    }

    #[test]
    fn only_the_larger_id_defers_its_first_dial() {
        let a = SecretKey::generate().public();
        let b = SecretKey::generate().public();
        let (small, large) = if a.as_bytes() < b.as_bytes() {
            (a, b)
        } else {
            (b, a)
        };
        assert_eq!(first_dial_delay(&small, &large, false), Duration::ZERO);
        assert_eq!(first_dial_delay(&large, &small, false), TIE_BREAK_DELAY);
        assert_eq!(first_dial_delay(&large, &small, true), Duration::ZERO);
    }

    #[test]
    fn dial_target_leaves_room_for_inbound() {
        assert_eq!(dial_target(1), 1);
        assert_eq!(dial_target(2), 1);
        assert_eq!(dial_target(7), 4);
        assert_eq!(dial_target(8), 4);
        // 200 nodes with --max-peers 8 dial at most 200 * 4 connections, not 200^2 / 2.
        assert!(200 * dial_target(8) < 200 * 199 / 2);
    }

    #[test]
    fn close_codes_are_classified() {
        use iroh::endpoint::ApplicationClose;
        let close = |c: CloseCode| {
            ConnectionError::ApplicationClosed(ApplicationClose {
                error_code: c.varint(),
                reason: c.reason().to_vec().into(),
            })
        };
        assert!(matches!(
            describe_close(&close(CloseCode::KeyMismatch)).1,
            CloseKind::Rejected
        ));
        assert!(matches!(
            describe_close(&close(CloseCode::Disconnect)).1,
            CloseKind::PeerDisconnected
        ));
        assert!(matches!(
            describe_close(&close(CloseCode::Shutdown)).1,
            CloseKind::PeerLeft
        ));
        assert!(matches!(
            describe_close(&ConnectionError::TimedOut).1,
            CloseKind::Lost
        ));
        assert!(matches!(
            describe_close(&close(CloseCode::OverCapacity)).1,
            CloseKind::Full
        ));
    }
}

//! Discovery mode `gossip`: peers exchange their tables of known peers.
//!
//! A sidecar that knows one member of the formation comes to know all of them. The
//! exchange runs only on connections that passed the formation check (the stream
//! router in `crate::node::streams` exists only on those), so a host of another
//! formation, or without the shared key, never gives or gets a table.
//!
//! - On every new connection, and every `--discovery-interval` seconds with up to
//!   `--gossip-fanout` connected peers picked at random, this node opens a gossip
//!   stream, sends its table and reads the peer's answer (push-pull). The answer leaves
//!   out what the asker already has at the same version, so it is a delta.
//! - Every round this node raises the version of its own entry: the heartbeat that
//!   keeps it alive in everyone's table ([`table`] explains ageing).
//! - New entries become `Found` (source gossip); the peer manager dials them with its
//!   backoff. Entries that age out become `Lost` and are no longer spread.
//!
//! Bounds: `--gossip-max-entries` rows, `--gossip-max-message-bytes` per message in
//! both directions, [`wire::MAX_ADDRS_PER_ENTRY`] addresses per row, a few exchanges
//! at a time each with a timeout. See docs/DESIGN.md "Gossip".

pub mod table;
pub mod wire;

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use iroh::{endpoint::Connection, EndpointId};
use rand::seq::SliceRandom;
use tokio::{sync::Semaphore, task::JoinSet};
use tracing::{debug, info, warn};

use super::SourceContext;
use crate::{
    events::{unix_ms_now, Source},
    node::streams::{self, tag, InboundStream},
    ratelimit::RateLog,
};
use table::{Change, Table};

/// Most exchanges this node runs at once in each direction; more inbound streams wait
/// in the router's queue (and are dropped when it is full).
const MAX_EXCHANGES: usize = 8;
/// How long one exchange may take, both messages included.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Stream error code of a refused gossip message.
const REFUSED: iroh::endpoint::VarInt = iroh::endpoint::VarInt::from_u32(2);
/// How often rows are checked for ageing.
const EXPIRE_TICK: Duration = Duration::from_secs(1);

/// Settings of the gossip mode, checked by `crate::settings`.
pub use super::GossipSettings as Settings;

/// State shared by the round loop and the exchange tasks.
struct GossipState {
    me: EndpointId,
    settings: Settings,
    /// Addresses this node announces for itself (the bound ones that others can dial;
    /// peers add the address they see our connection come from).
    own_addrs: Vec<SocketAddr>,
    /// Our heartbeat: the version of our own entry.
    own_version: Mutex<u64>,
    table: Mutex<Table>,
    ctx: SourceContext,
    /// Rate limits of the warnings a misbehaving member could repeat every exchange.
    full_log: Mutex<RateLog>,
    refused_log: Mutex<RateLog>,
}

#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    #[error("cannot open a gossip stream: {0}")]
    Open(std::io::Error),
    #[error("write failed: {0}")]
    Write(String),
    #[error("message larger than --gossip-max-message-bytes ({0} bytes)")]
    TooLarge(usize),
    #[error("read failed: {0}")]
    Read(String),
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    #[error("timed out after {}s", EXCHANGE_TIMEOUT.as_secs())]
    Timeout,
}

/// The address a connection runs on, as this side sees it.
fn observed_addr(conn: &Connection) -> Option<SocketAddr> {
    crate::node::path::remote_addr(conn)
}

fn is_loopback(a: &SocketAddr) -> bool {
    match a.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

impl GossipState {
    /// Raises our heartbeat: strictly increasing, and above any version we sent before
    /// a restart as long as the clock did not go back.
    fn beat(&self) {
        if let Ok(mut v) = self.own_version.lock() {
            *v = (*v + 1).max(unix_ms_now());
        }
    }

    fn own_entry(&self) -> wire::Entry {
        wire::Entry {
            id: self.me,
            version: self.own_version.lock().map(|v| *v).unwrap_or_default(),
            addrs: self.own_addrs.clone(),
        }
    }

    /// Our entry first, then the table, freshest first, within the size bound.
    /// Loopback addresses are only useful to a peer on this host, so they go only to
    /// peers that reach us over loopback.
    fn outgoing(&self, to: Option<SocketAddr>, skip: Option<&HashMap<EndpointId, u64>>) -> Vec<u8> {
        let mut entries = vec![self.own_entry()];
        if let Ok(t) = self.table.lock() {
            entries.extend(t.snapshot(skip));
        }
        if !to.is_some_and(|a| is_loopback(&a)) {
            for e in &mut entries {
                e.addrs.retain(|a| !is_loopback(a));
            }
        }
        let (bytes, n) = wire::encode(&entries, self.settings.max_message_bytes);
        if n < entries.len() {
            debug!(
                sent = n,
                known = entries.len(),
                max_bytes = self.settings.max_message_bytes,
                "gossip message truncated to --gossip-max-message-bytes; freshest entries sent"
            );
        }
        bytes
    }

    /// Merges a peer's message and tells the peer manager what changed.
    async fn absorb(&self, from: EndpointId, observed: Option<SocketAddr>, mut d: wire::Decoded) {
        // The sender's own entry may carry no address (it is bound to 0.0.0.0): the
        // address we see it on is the best we have.
        if let Some(a) = observed.filter(wire::dialable) {
            if let Some(e) = d.entries.iter_mut().find(|e| e.id == from) {
                if !e.addrs.contains(&a) && e.addrs.len() < wire::MAX_ADDRS_PER_ENTRY {
                    e.addrs.push(a);
                }
            }
        }
        let received = d.entries.len();
        let now = Instant::now();
        let (mut changes, stats) = match self.table.lock() {
            Ok(mut t) => t.merge(d.entries, now),
            Err(_) => return,
        };
        if let Some(c) = self
            .table
            .lock()
            .ok()
            .and_then(|mut t| t.confirm(from, observed, now))
        {
            changes.push(c);
        }
        if stats.full > 0 {
            if let Some(suppressed) = hit(&self.full_log) {
                warn!(
                    peer = %from,
                    dropped = stats.full,
                    max_entries = self.settings.max_entries,
                    suppressed,
                    "gossip table full; ignoring new entries (raise --gossip-max-entries)"
                );
            }
        }
        debug!(
            peer = %from,
            received,
            malformed = d.dropped,
            new = stats.new,
            refreshed = stats.refreshed,
            unusable = stats.dropped,
            "gossip table received"
        );
        self.report(changes, Some(from)).await;
    }

    async fn report(&self, changes: Vec<Change>, from: Option<EndpointId>) {
        for c in changes {
            let ok = match c {
                Change::Found { id, addrs } => {
                    debug!(peer = %id, via = ?from, ?addrs, "gossip: peer known");
                    self.ctx.events().found(id, addrs, Source::Gossip).await
                }
                Change::Lost { id } => {
                    info!(peer = %id, ttl_secs = self.settings.ttl.as_secs(), "gossip: no news of peer within the TTL; forgetting it");
                    self.ctx.events().lost(id, Source::Gossip).await
                }
            };
            if !ok {
                return;
            }
        }
    }

    /// Our side of an exchange we start: send, then read the answer.
    async fn exchange(&self, peer: EndpointId, conn: Connection) -> Result<(), ExchangeError> {
        let observed = observed_addr(&conn);
        let (mut send, mut recv) = streams::open(&conn, tag::GOSSIP)
            .await
            .map_err(ExchangeError::Open)?;
        let msg = self.outgoing(observed, None);
        send.write_all(&msg)
            .await
            .map_err(|e| ExchangeError::Write(e.to_string()))?;
        let _ = send.finish();
        let answer = read_message(&mut recv, self.settings.max_message_bytes).await?;
        let decoded = wire::decode(&answer, self.settings.max_entries)?;
        self.absorb(peer, observed, decoded).await;
        Ok(())
    }

    /// The other side: read the asker's table, answer with what it lacks.
    async fn respond(&self, s: InboundStream) -> Result<(), ExchangeError> {
        let InboundStream {
            peer,
            conn,
            mut send,
            mut recv,
        } = s;
        let result = self.answer(peer, &conn, &mut send, &mut recv).await;
        if result.is_err() {
            // Say "refused" instead of the empty answer that dropping the stream
            // would send, and stop the peer from sending the rest of a huge table.
            let _ = send.reset(REFUSED);
            let _ = recv.stop(REFUSED);
        }
        result
    }

    async fn answer(
        &self,
        peer: EndpointId,
        conn: &Connection,
        send: &mut iroh::endpoint::SendStream,
        recv: &mut iroh::endpoint::RecvStream,
    ) -> Result<(), ExchangeError> {
        let request = read_message(recv, self.settings.max_message_bytes).await?;
        let decoded = wire::decode(&request, self.settings.max_entries)?;
        let has: HashMap<EndpointId, u64> =
            decoded.entries.iter().map(|e| (e.id, e.version)).collect();
        let observed = observed_addr(conn);
        let answer = self.outgoing(observed, Some(&has));
        self.absorb(peer, observed, decoded).await;
        send.write_all(&answer)
            .await
            .map_err(|e| ExchangeError::Write(e.to_string()))?;
        let _ = send.finish();
        Ok(())
    }

    /// Live connections confirm their peers' rows (see [`Table::confirm`]).
    async fn confirm_connected(&self, conns: &[(EndpointId, Connection)]) {
        let now = Instant::now();
        let changes: Vec<Change> = match self.table.lock() {
            Ok(mut t) => conns
                .iter()
                .filter_map(|(id, c)| t.confirm(*id, observed_addr(c), now))
                .collect(),
            Err(_) => return,
        };
        self.report(changes, None).await;
    }
}

async fn read_message(
    recv: &mut iroh::endpoint::RecvStream,
    max: usize,
) -> Result<Vec<u8>, ExchangeError> {
    match recv.read_to_end(max).await {
        Ok(b) => Ok(b),
        Err(iroh::endpoint::ReadToEndError::TooLong) => Err(ExchangeError::TooLarge(max)),
        Err(e) => Err(ExchangeError::Read(e.to_string())),
    }
}

/// Checks the settings and registers the gossip protocol; the returned future is the
/// mode's task.
pub fn start(
    ctx: SourceContext,
    settings: Settings,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let inbound = ctx.peers.streams.register(tag::GOSSIP);
    let connected = ctx.peers.streams.connections();
    let own_addrs: Vec<SocketAddr> = ctx
        .bound_addrs
        .iter()
        .filter(|a| wire::dialable(a))
        .copied()
        .collect();
    info!(
        interval_secs = settings.interval.as_secs(),
        ttl_secs = settings.ttl.as_secs(),
        max_entries = settings.max_entries,
        max_message_bytes = settings.max_message_bytes,
        fanout = settings.fanout,
        announced = %crate::logfmt::list(&own_addrs),
        "gossip peer exchange started"
    );
    let shared = Arc::new(GossipState {
        me: ctx.endpoint_id,
        table: Mutex::new(Table::new(
            ctx.endpoint_id,
            settings.ttl,
            settings.max_entries,
        )),
        settings,
        own_addrs,
        own_version: Mutex::new(unix_ms_now()),
        ctx,
        full_log: Mutex::new(RateLog::default()),
        refused_log: Mutex::new(RateLog::default()),
    });
    run(shared, inbound, connected)
}

async fn run(
    shared: Arc<GossipState>,
    mut inbound: tokio::sync::mpsc::Receiver<InboundStream>,
    mut connected: tokio::sync::mpsc::Receiver<Connection>,
) {
    let shutdown = shared.ctx.shutdown.clone();
    let mut rounds = round_timer(shared.settings.interval);
    let mut expire = tokio::time::interval(EXPIRE_TICK);
    let mut round: u64 = 0;
    let mut ex = Exchanges::new(shared.clone());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = rounds.tick() => {
                round += 1;
                ex.round(round).await;
            }
            _ = expire.tick() => shared.expire().await,
            s = inbound.recv() => {
                let Some(s) = s else { break };
                ex.respond(s);
            }
            conn = connected.recv() => {
                let Some(conn) = conn else { break };
                // A new connection: exchange at once instead of waiting a round.
                ex.exchange(conn.remote_id(), conn);
            }
            Some(_) = ex.tasks.join_next(), if !ex.tasks.is_empty() => {}
        }
    }
    ex.tasks.abort_all();
    debug!("gossip stopped");
}

/// The round timer. It starts at a random point of the interval so that nodes started
/// together do not gossip in lock-step.
fn round_timer(interval: Duration) -> tokio::time::Interval {
    let first = interval.mul_f64(rand::random_range(0.0..1.0));
    let mut rounds = tokio::time::interval_at(tokio::time::Instant::now() + first, interval);
    rounds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    rounds
}

/// The exchanges in flight, each a task, at most [`MAX_EXCHANGES`] each way.
struct Exchanges {
    shared: Arc<GossipState>,
    tasks: JoinSet<()>,
    outbound_slots: Arc<Semaphore>,
    inbound_slots: Arc<Semaphore>,
}

impl Exchanges {
    fn new(shared: Arc<GossipState>) -> Self {
        Exchanges {
            shared,
            tasks: JoinSet::new(),
            outbound_slots: Arc::new(Semaphore::new(MAX_EXCHANGES)),
            inbound_slots: Arc::new(Semaphore::new(MAX_EXCHANGES)),
        }
    }

    /// One round: a heartbeat, then an exchange with `fanout` connected peers at random.
    async fn round(&mut self, round: u64) {
        let shared = &self.shared;
        crate::node::peers::Counters::inc(&shared.ctx.peers.counters.gossip_rounds);
        shared.beat();
        let mut conns = shared.ctx.peers.connections().await;
        shared.confirm_connected(&conns).await;
        conns.shuffle(&mut rand::rng());
        let (live, rows) = shared
            .table
            .lock()
            .map(|t| (t.live(), t.len()))
            .unwrap_or_default();
        debug!(
            round,
            connected = conns.len(),
            known = live,
            rows,
            "gossip round"
        );
        for (peer, conn) in conns.into_iter().take(shared.settings.fanout) {
            self.exchange(peer, conn);
        }
    }

    /// Starts an exchange that we open, unless all outbound slots are taken.
    fn exchange(&mut self, peer: EndpointId, conn: Connection) {
        let Ok(permit) = self.outbound_slots.clone().try_acquire_owned() else {
            debug!(peer = %peer, "gossip: exchanges busy; skipping this peer this round");
            return;
        };
        let shared = self.shared.clone();
        self.tasks.spawn(async move {
            let _permit = permit;
            shared.timed(peer, shared.exchange(peer, conn)).await;
        });
    }

    /// Answers an exchange a peer opened, unless all inbound slots are taken.
    fn respond(&mut self, s: InboundStream) {
        let Ok(permit) = self.inbound_slots.clone().try_acquire_owned() else {
            debug!(peer = %s.peer, "gossip: too many exchanges at once; dropping one");
            return;
        };
        let shared = self.shared.clone();
        self.tasks.spawn(async move {
            let _permit = permit;
            let peer = s.peer;
            shared.timed(peer, shared.respond(s)).await;
        });
    }
}

/// Records a hit on a rate-limited warning: `Some(suppressed)` if it is to be logged now.
fn hit(log: &Mutex<RateLog>) -> Option<u64> {
    log.lock().ok()?.hit(Instant::now())
}

impl GossipState {
    /// Runs one exchange with its time limit, and logs how it failed.
    async fn timed(
        &self,
        peer: EndpointId,
        exchange: impl std::future::Future<Output = Result<(), ExchangeError>>,
    ) {
        match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.log_failure(peer, &e),
            Err(_) => self.log_failure(peer, &ExchangeError::Timeout),
        }
    }

    /// Drops the rows that aged out and reports what that changed.
    async fn expire(&self) {
        let changes = self
            .table
            .lock()
            .map(|mut t| t.expire(Instant::now()))
            .unwrap_or_default();
        if !changes.is_empty() {
            self.report(changes, None).await;
        }
    }

    fn log_failure(&self, peer: EndpointId, e: &ExchangeError) {
        match e {
            // A member sending what we cannot read is worth an operator's attention,
            // but not once per exchange.
            ExchangeError::TooLarge(_) | ExchangeError::Wire(_) => {
                if let Some(suppressed) = hit(&self.refused_log) {
                    warn!(peer = %peer, error = %e, suppressed, "gossip: refused a peer's table")
                }
            }
            _ => debug!(peer = %peer, error = %e, "gossip exchange failed"),
        }
    }
}

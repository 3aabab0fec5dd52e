//! The data plane: apps publish messages on topics, subscribe with patterns and share
//! retained state (latest value per topic and key) across the formation.
//!
//! Messages travel on the formation's authenticated connections, one stream per
//! direction per connection (see [`wire`]). [`DataPlane`] is the cheap handle the API
//! uses; [`start`] wires it to the node's stream registry.

mod apps;
mod disk;
mod engine;
mod hlc;
mod link;
mod route;
mod store;
mod subs;
mod sync;
mod topic;
pub mod wire;

use std::{
    path::PathBuf,
    sync::{atomic::Ordering, Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use self::{
    apps::App,
    hlc::physical_ms,
    store::expires_ms,
    subs::{Event, Subscription},
    topic::{Pattern, TopicError},
    wire::Message,
};
use self::{
    engine::{Counters, Shared},
    store::Retained,
    wire::{Id, Limits, MAX_TTL_MS},
};
use crate::{
    node::{peers::PeerManagerHandle, streams::tag},
    ratelimit::TokenBucket,
};

pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 262_144;
pub const DEFAULT_MAX_RETAINED_BYTES: u64 = 64 * 1024 * 1024;
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct DataConfig {
    pub data_dir: PathBuf,
    pub max_message_bytes: usize,
    pub max_retained_bytes: u64,
    pub sync_interval: Duration,
    /// Messages per second the local apps may publish together.
    pub max_publish_rate: u32,
    /// Messages per second one local app may publish (see [`App`]).
    pub max_app_publish_rate: u32,
    /// Messages per second taken from one peer.
    pub max_peer_rate: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("invalid topic: {0}")]
    Topic(TopicError),
    // TopicError speaks of "the topic"; here it is a pattern.
    #[error("invalid pattern: {}", .0.to_string().replacen("the topic", "the pattern", 1))]
    Pattern(TopicError),
    #[error("invalid key: {0}")]
    Key(TopicError),
    #[error("the payload is {0} bytes; --max-message-bytes allows at most {1}")]
    TooLarge(usize, usize),
    #[error("ttl of {0} s is longer than ten years")]
    Ttl(u64),
    #[error("publishing faster than --max-publish-rate ({0} messages/s)")]
    Rate(u32),
    #[error("{0} publishes faster than --max-app-publish-rate ({1} messages/s)")]
    AppRate(App, u32),
    #[error("the data plane is shutting down")]
    Stopped,
}

/// One publish from an app.
#[derive(Debug, Clone, Default)]
pub struct Publish {
    pub topic: String,
    pub key: String,
    pub payload: bytes::Bytes,
    pub retain: bool,
    pub ttl_secs: u64,
    /// Who asks: each app has its own share of the publish rate.
    pub app: App,
}

#[derive(Debug, Clone, Copy)]
pub struct Published {
    pub seq: u64,
    pub hlc: u64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Topics with a live retained entry.
    pub topics: u64,
    /// Live retained entries (deletions not counted).
    pub retained_entries: u64,
    /// Deletions kept so that they spread (they expire after 24 h).
    pub retained_tombstones: u64,
    /// Both, as `--max-retained-bytes` counts them.
    pub retained_bytes: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub published: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub subscribers: u64,
    pub rejected: u64,
}

/// Per-peer message counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerStats {
    pub messages_in: u64,
    pub messages_out: u64,
}

#[derive(Clone)]
pub struct DataPlane {
    shared: Arc<Shared>,
}

/// The running data plane's tasks.
pub struct DataTasks {
    task: JoinHandle<()>,
    shared: Arc<Shared>,
}

/// Opens the retained store and starts serving data links on the node's authenticated
/// connections.
pub async fn start(
    cfg: DataConfig,
    me: iroh::EndpointId,
    peers: &PeerManagerHandle,
) -> Result<(DataPlane, DataTasks), disk::DiskError> {
    let shared = open(&cfg, *me.as_bytes())?;
    let inbound = peers.streams.register(tag::DATA);
    let conns = peers.streams.connections();
    for (_, c) in peers.connections().await {
        shared.add_link(c);
    }
    let task = tokio::spawn(run(shared.clone(), conns, inbound));
    Ok((
        DataPlane {
            shared: shared.clone(),
        },
        DataTasks { task, shared },
    ))
}

/// The shared state, with the retained store read back from disk.
fn open(cfg: &DataConfig, me: Id) -> Result<Arc<Shared>, disk::DiskError> {
    let loaded = disk::open(&cfg.data_dir)?;
    let mut retained = Retained::new(cfg.max_retained_bytes);
    let now = hlc::wall_ms();
    let clock = hlc::Hlc::default();
    for m in loaded.entries {
        let _ = clock.observe(m.hlc);
        retained.apply(m, now);
    }
    info!(
        entries = retained.live(),
        tombstones = retained.tombstones(),
        bytes = retained.bytes(),
        "retained store loaded"
    );
    Ok(Arc::new(Shared {
        me,
        limits: Limits {
            max_message_bytes: cfg.max_message_bytes,
        },
        sync_interval: cfg.sync_interval,
        max_publish_rate: cfg.max_publish_rate,
        max_peer_rate: cfg.max_peer_rate,
        publish_bucket: Mutex::new(TokenBucket::per_second(
            cfg.max_publish_rate,
            Instant::now(),
        )),
        app_buckets: apps::AppBuckets::new(cfg.max_app_publish_rate, Instant::now()),
        hlc: clock,
        next_seq: loaded.first_seq.into(),
        lease_end: (loaded.first_seq + disk::SEQ_LEASE).into(),
        retained: Mutex::new(retained),
        disk: loaded.disk,
        subs: Default::default(),
        links: RwLock::new(Default::default()),
        peers: Mutex::new(Default::default()),
        seen: Mutex::new(Default::default()),
        counters: Counters::default(),
        synced: Mutex::new(Default::default()),
        stop: CancellationToken::new(),
    }))
}

async fn run(
    shared: Arc<Shared>,
    mut conns: tokio::sync::mpsc::Receiver<iroh::endpoint::Connection>,
    mut inbound: tokio::sync::mpsc::Receiver<crate::node::streams::InboundStream>,
) {
    let mut tick = tokio::time::interval(shared.sync_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shared.stop.cancelled() => break,
            Some(c) = conns.recv() => shared.add_link(c),
            Some(s) = inbound.recv() => {
                tokio::spawn(shared.clone().read_stream(s));
            }
            _ = tick.tick() => shared.sync_round().await,
        }
    }
}

impl DataTasks {
    /// Stops the links, ends every subscription and flushes the store.
    pub async fn shutdown(self) {
        self.shared.stop.cancel();
        let _ = self.task.await;
        self.shared.subs.close();
        self.shared.disk.close().await;
    }
}

impl DataPlane {
    pub fn max_message_bytes(&self) -> usize {
        self.shared.limits.max_message_bytes
    }

    pub async fn publish(&self, p: Publish) -> Result<Published, DataError> {
        topic::check_topic(&p.topic).map_err(DataError::Topic)?;
        self.send(p, false).await
    }

    /// Deletes a retained entry formation-wide: a tombstone that expires.
    pub async fn delete(&self, app: App, topic: &str, key: &str) -> Result<Published, DataError> {
        topic::check_topic(topic).map_err(DataError::Topic)?;
        let p = Publish {
            topic: topic.to_string(),
            key: key.to_string(),
            retain: true,
            app,
            ..Default::default()
        };
        self.send(p, true).await
    }

    async fn send(&self, p: Publish, tombstone: bool) -> Result<Published, DataError> {
        let s = &self.shared;
        if s.stop.is_cancelled() {
            return Err(DataError::Stopped);
        }
        topic::check_key(&p.key).map_err(DataError::Key)?;
        if p.payload.len() > s.limits.max_message_bytes {
            return Err(DataError::TooLarge(
                p.payload.len(),
                s.limits.max_message_bytes,
            ));
        }
        let ttl_ms = p.ttl_secs.saturating_mul(1000);
        if ttl_ms > MAX_TTL_MS {
            return Err(DataError::Ttl(p.ttl_secs));
        }
        // An app rate at or above the host's can never bind first: skip its lock.
        if s.app_buckets.rate() < s.max_publish_rate && !s.app_buckets.take(p.app, Instant::now()) {
            s.counters.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(DataError::AppRate(p.app, s.app_buckets.rate()));
        }
        if !s.take_publish_token() {
            s.counters.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(DataError::Rate(s.max_publish_rate));
        }
        let m = Message {
            publisher: s.me,
            seq: s.take_seq().await,
            hlc: s.hlc.now(),
            hops: 0,
            topic: p.topic,
            key: p.key,
            payload: p.payload,
            retain: p.retain,
            ttl_ms,
            tombstone,
        };
        let out = Published {
            seq: m.seq,
            hlc: m.hlc,
        };
        s.counters.published.fetch_add(1, Ordering::Relaxed);
        s.broadcast(&m);
        let m = Arc::new(m);
        if m.retain {
            s.retain((*m).clone()).await;
        }
        s.deliver(&m);
        Ok(out)
    }

    /// A live subscription; messages published from now on that match.
    pub fn subscribe(&self, pattern: &str) -> Result<Subscription, DataError> {
        let p = Pattern::parse(pattern).map_err(DataError::Pattern)?;
        Ok(self.shared.subs.add(p))
    }

    /// Retained entries whose topic matches (no tombstones, nothing expired).
    pub fn get(&self, pattern: &str) -> Result<Vec<Message>, DataError> {
        let p = Pattern::parse(pattern).map_err(DataError::Pattern)?;
        Ok(self.get_parsed(&p))
    }

    pub fn get_parsed(&self, p: &Pattern) -> Vec<Message> {
        self.shared
            .retained
            .lock()
            .map(|r| r.matching(p, hlc::wall_ms()))
            .unwrap_or_default()
    }

    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        let c = &s.counters;
        let (topics, entries, tombstones, bytes) = s
            .retained
            .lock()
            .map(|r| {
                (
                    r.topics() as u64,
                    r.live() as u64,
                    r.tombstones() as u64,
                    r.bytes(),
                )
            })
            .unwrap_or_default();
        Stats {
            topics,
            retained_entries: entries,
            retained_tombstones: tombstones,
            retained_bytes: bytes,
            messages_in: c.messages_in.load(Ordering::Relaxed),
            messages_out: c.messages_out.load(Ordering::Relaxed),
            published: c.published.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            subscribers: s.subs.count() as u64,
            rejected: c.rejected.load(Ordering::Relaxed),
        }
    }

    /// Counts a message a subscriber missed (its queue overflowed).
    pub fn count_missed(&self, n: u64) {
        self.shared.counters.dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub fn peer_stats(&self, peer: &iroh::EndpointId) -> PeerStats {
        let p = self
            .shared
            .peers
            .lock()
            .ok()
            .and_then(|p| p.get(peer.as_bytes()).cloned());
        p.map(|p| PeerStats {
            messages_in: p.msgs_in.load(Ordering::Relaxed),
            messages_out: p.msgs_out.load(Ordering::Relaxed),
        })
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;

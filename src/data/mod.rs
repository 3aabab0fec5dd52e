//! The data plane: apps publish messages on topics, subscribe with patterns and share
//! retained state (latest value per topic and key) across the formation.
//!
//! Messages travel on the formation's authenticated connections, one stream per
//! direction per connection (see [`wire`]). [`DataPlane`] is the cheap handle the API
//! uses; [`start`] wires it to the node's stream registry.

mod apps;
pub mod class;
mod core;
mod disk;
mod driver;
mod hlc;
mod link;
pub mod members;
pub mod origin;
mod pace;
mod queue;
mod route;
mod store;
mod subs;
mod sync;
pub mod system;
mod topic;
pub mod wire;

use std::{
    path::PathBuf,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use tokio::task::JoinHandle;
use tracing::info;

pub use self::{
    apps::App,
    class::{Class, LinkPolicy, LinkSettings},
    core::Published,
    hlc::physical_ms,
    link::LinkStats,
    queue::ClassStats,
    store::expires_ms,
    subs::{Event, Subscription},
    topic::{Pattern, TopicError},
    wire::Message,
};
use self::{
    core::{DataCore, Local, Now, Rates},
    driver::DataDriver,
    wire::{FrameLimits, Id, MAX_TTL_MS},
};
use crate::{
    node::{peers::PeerManagerHandle, streams::tag},
    trust::{store::TrustStore, AuthorityKey, Revocation},
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
    /// Priority classes, latest-value topics and `--link-rate` (issue 26).
    pub links: LinkSettings,
    /// Whether messages from third nodes must carry their publisher's signature.
    pub origin_check: origin::OriginCheck,
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
    #[error("topic {0} is the sidecar's own (under `_peat/`): apps may read it but not publish or delete on it")]
    Reserved(String),
    #[error("this node's member certificate does not allow publishing on {topic}; it allows {}", allowed_text(.allowed))]
    NotPermitted { topic: String, allowed: Vec<String> },
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
    /// The class on the links; `None`: the `--priority` default of the topic.
    pub priority: Option<Class>,
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
    /// Refused because a third node sent them without their publisher's signature, or
    /// with a bad one (also in `rejected`).
    pub forged: u64,
    /// Taken from a third node without a signature (`--origin-check permissive`).
    pub unsigned: u64,
    /// Messages this node signed (retained ones, and live ones a peer may forward).
    pub signed: u64,
}

/// Per-peer message counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerStats {
    pub messages_in: u64,
    pub messages_out: u64,
}

#[derive(Clone)]
pub struct DataPlane {
    driver: Arc<DataDriver>,
    /// With an authority: our certificate's rights bound what the local apps publish.
    trust: Option<Arc<TrustStore>>,
}

/// The running data plane's tasks.
pub struct DataTasks {
    task: JoinHandle<()>,
    driver: Arc<DataDriver>,
    /// With an authority: applies the revocations the formation spreads, and keeps
    /// the member directory.
    system: Vec<JoinHandle<()>>,
}

/// Opens the retained store and starts serving data links on the node's authenticated
/// connections.
/// The data plane read back from disk, not yet serving: the daemon takes the
/// revocations it holds before the node makes its first connection.
pub struct Opened {
    driver: Arc<DataDriver>,
}

/// Opens the retained store; `key` is the node's endpoint key (it signs what we
/// publish), `authority` the formation's, if it has one (what the system topics admit
/// depends on it).
pub fn open(
    cfg: &DataConfig,
    key: &iroh::SecretKey,
    authority: Option<AuthorityKey>,
) -> Result<Opened, disk::DiskError> {
    let driver = open_driver(cfg, key, system::Gate::new(authority))?;
    Ok(Opened { driver })
}

impl Opened {
    /// The revocations the retained store holds (verified again).
    pub fn revocations(&self) -> Vec<Revocation> {
        let core = self.driver.core();
        let Ok(all) = Pattern::parse(system::REVOCATIONS) else {
            return Vec::new();
        };
        let entries = core.retained().matching(&all, hlc::wall_ms());
        entries
            .iter()
            .filter_map(|m| core.gate().revocation(m).ok())
            .collect()
    }

    /// Starts serving data links on the node's authenticated connections, and, with an
    /// authority, applying the revocations the formation spreads.
    pub async fn start(
        self,
        peers: &PeerManagerHandle,
        trust: Option<Arc<TrustStore>>,
    ) -> (DataPlane, DataTasks) {
        start_driver(self.driver, peers, trust).await
    }
}

async fn start_driver(
    driver: Arc<DataDriver>,
    peers: &PeerManagerHandle,
    trust: Option<Arc<TrustStore>>,
) -> (DataPlane, DataTasks) {
    let inbound = peers.streams.register(tag::DATA);
    // A stand-in for an older version (tests) does not know the hello's tag, so the
    // router resets the hellos as an older version's would.
    let hellos = match driver.wire {
        wire::WireVersion::V2 => peers.streams.register(tag::DATA_V2),
        wire::WireVersion::V1 => tokio::sync::mpsc::channel(1).1,
    };
    let conns = peers.streams.connections();
    for (_, c) in peers.connections().await {
        driver.add_link(c).await;
    }
    let task = tokio::spawn(driver.clone().run(conns, inbound, hellos));
    let plane = DataPlane {
        driver: driver.clone(),
        trust: trust.clone(),
    };
    if let Some(t) = &trust {
        let mut core = driver.core();
        let gate = core.gate().clone().with_revocations(t.clone());
        core.set_gate(gate);
    }
    let mut system = Vec::new();
    if let Some(t) = trust {
        let stop = driver.stop.child_token();
        let revocations = system::watch_revocations(plane.clone(), t.clone(), peers.clone(), stop);
        system.push(tokio::spawn(revocations));
        let stop = driver.stop.child_token();
        system.push(tokio::spawn(members::watch_members(plane.clone(), t, stop)));
    }
    (
        plane,
        DataTasks {
            task,
            driver,
            system,
        },
    )
}

/// The core over the retained store read back from disk, and its driver.
fn open_driver(
    cfg: &DataConfig,
    key: &iroh::SecretKey,
    gate: system::Gate,
) -> Result<Arc<DataDriver>, disk::DiskError> {
    let loaded = disk::open(&cfg.data_dir)?;
    let now = Now::current();
    let rates = Rates {
        publish: cfg.max_publish_rate,
        peer: cfg.max_peer_rate,
    };
    let wire = wire_for_tests();
    // An older version neither signed nor asked for signatures.
    let origins = match wire {
        wire::WireVersion::V2 => cfg.origin_check,
        wire::WireVersion::V1 => origin::OriginCheck::Permissive,
    };
    let core = DataCore::new(
        *key.public().as_bytes(),
        rates,
        cfg.max_retained_bytes,
        loaded.entries,
        loaded.first_seq,
        now,
    )
    .with_gate(gate)
    .with_signer(key.clone(), origins);
    let r = core.retained();
    info!(
        entries = r.live(),
        tombstones = r.tombstones(),
        bytes = r.bytes(),
        "retained store loaded"
    );
    let mut driver = DataDriver::new(
        core,
        loaded.disk,
        apps::AppBuckets::new(cfg.max_app_publish_rate, now.at),
        FrameLimits {
            max_message_bytes: cfg.max_message_bytes,
        },
        cfg.sync_interval,
        cfg.links.clone(),
    );
    driver.wire = wire;
    Ok(Arc::new(driver))
}

/// Debug builds only: `PEAT_SIDECAR_TEST_DATA_WIRE=1` makes this node stand in for a
/// version before signed origins (frames of version 1 only, no hello, nothing signed,
/// unsigned messages taken), so that the end-to-end tests can run a formation upgraded
/// one node at a time (tests/origins.rs). Release builds never read the variable.
#[cfg(debug_assertions)]
fn wire_for_tests() -> wire::WireVersion {
    match std::env::var("PEAT_SIDECAR_TEST_DATA_WIRE").as_deref() {
        Ok("1") => wire::WireVersion::V1,
        _ => wire::WireVersion::V2,
    }
}

#[cfg(not(debug_assertions))]
fn wire_for_tests() -> wire::WireVersion {
    wire::WireVersion::V2
}

fn allowed_text(allowed: &[String]) -> String {
    if allowed.is_empty() {
        "no topic".into()
    } else {
        allowed.join(", ")
    }
}

/// Debug builds only: `PEAT_SIDECAR_TEST_IGNORE_RIGHTS=1` lets the local apps publish
/// outside the node's certificate rights, so that the end-to-end tests can check that
/// peers refuse what it sends (tests/trust.rs). Release builds never read the variable.
#[cfg(debug_assertions)]
fn rogue_for_tests() -> bool {
    std::env::var_os("PEAT_SIDECAR_TEST_IGNORE_RIGHTS").is_some()
}

#[cfg(not(debug_assertions))]
fn rogue_for_tests() -> bool {
    false
}

/// A topic an app may publish or delete on: valid, and not a system topic.
fn check_app_topic(t: &str) -> Result<(), DataError> {
    topic::check_topic(t).map_err(DataError::Topic)?;
    if system::is_reserved(t) {
        return Err(DataError::Reserved(t.to_string()));
    }
    Ok(())
}

impl DataTasks {
    /// Stops the links, ends every subscription and flushes the store.
    pub async fn shutdown(self) {
        self.driver.stop.cancel();
        let _ = self.task.await;
        for t in self.system {
            let _ = t.await;
        }
        self.driver.subs.close();
        self.driver.disk.close().await;
    }
}

impl DataPlane {
    pub fn max_message_bytes(&self) -> usize {
        self.driver.limits.max_message_bytes
    }

    pub async fn publish(&self, p: Publish) -> Result<Published, DataError> {
        check_app_topic(&p.topic)?;
        self.check_rights(&p.topic)?;
        self.send(p, false).await
    }

    /// Deletes a retained entry formation-wide: a tombstone that expires.
    pub async fn delete(&self, app: App, topic: &str, key: &str) -> Result<Published, DataError> {
        check_app_topic(topic)?;
        self.check_rights(topic)?;
        let p = Publish {
            topic: topic.to_string(),
            key: key.to_string(),
            retain: true,
            app,
            ..Default::default()
        };
        self.send(p, true).await
    }

    /// With an authority, the topic must match a publish pattern of our certificate.
    fn check_rights(&self, topic: &str) -> Result<(), DataError> {
        let Some(t) = &self.trust else {
            return Ok(());
        };
        if rogue_for_tests() {
            return Ok(());
        }
        let allowed = t.own_publish_rights();
        if system::allows(&allowed, topic) {
            return Ok(());
        }
        Err(DataError::NotPermitted {
            topic: topic.to_string(),
            allowed,
        })
    }

    async fn send(&self, p: Publish, tombstone: bool) -> Result<Published, DataError> {
        let d = &self.driver;
        if d.stop.is_cancelled() {
            return Err(DataError::Stopped);
        }
        topic::check_key(&p.key).map_err(DataError::Key)?;
        if p.payload.len() > d.limits.max_message_bytes {
            return Err(DataError::TooLarge(
                p.payload.len(),
                d.limits.max_message_bytes,
            ));
        }
        let ttl_ms = p.ttl_secs.saturating_mul(1000);
        if ttl_ms > MAX_TTL_MS {
            return Err(DataError::Ttl(p.ttl_secs));
        }
        let host_rate = d.publish_rate;
        // An app rate at or above the host's can never bind first: skip its lock.
        if d.app_buckets.rate() < host_rate && !d.app_buckets.take(p.app, Instant::now()) {
            d.counters.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(DataError::AppRate(p.app, d.app_buckets.rate()));
        }
        let class = p.priority;
        let local = Local {
            topic: p.topic,
            key: p.key,
            payload: p.payload,
            retain: p.retain,
            ttl_ms,
            tombstone,
        };
        d.publish(local, class).await.ok_or_else(|| {
            d.counters.rejected.fetch_add(1, Ordering::Relaxed);
            DataError::Rate(host_rate)
        })
    }

    /// A live subscription; messages published from now on that match.
    pub fn subscribe(&self, pattern: &str) -> Result<Subscription, DataError> {
        let p = Pattern::parse(pattern).map_err(DataError::Pattern)?;
        Ok(self.driver.subs.add(p))
    }

    /// Retained entries whose topic matches (no tombstones, nothing expired).
    pub fn get(&self, pattern: &str) -> Result<Vec<Message>, DataError> {
        let p = Pattern::parse(pattern).map_err(DataError::Pattern)?;
        Ok(self.get_parsed(&p))
    }

    pub fn get_parsed(&self, p: &Pattern) -> Vec<Message> {
        self.driver.core().retained().matching(p, hlc::wall_ms())
    }

    pub fn stats(&self) -> Stats {
        let d = &self.driver;
        let c = &d.counters;
        let (topics, entries, tombstones, bytes) = {
            let core = d.core();
            let r = core.retained();
            (
                r.topics() as u64,
                r.live() as u64,
                r.tombstones() as u64,
                r.bytes(),
            )
        };
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
            subscribers: d.subs.count() as u64,
            rejected: c.rejected.load(Ordering::Relaxed),
            forged: c.forged.load(Ordering::Relaxed),
            unsigned: c.unsigned.load(Ordering::Relaxed),
            signed: c.signed.load(Ordering::Relaxed),
        }
    }

    /// Counts a message a subscriber missed (its queue overflowed).
    pub fn count_missed(&self, n: u64) {
        self.driver.counters.dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub fn peer_stats(&self, peer: &iroh::EndpointId) -> PeerStats {
        self.driver
            .traffic_of(peer.as_bytes())
            .map(|p| PeerStats {
                messages_in: p.msgs_in.load(Ordering::Relaxed),
                messages_out: p.msgs_out.load(Ordering::Relaxed),
            })
            .unwrap_or_default()
    }

    /// The counters per class of the data link to `peer`, if one is up.
    pub fn link_stats(&self, peer: &iroh::EndpointId) -> Option<LinkStats> {
        self.driver.link(peer.as_bytes()).map(|l| l.stats())
    }

    /// The peers with a data link now, each with the neighbour set it last announced
    /// (see [`route`]): the operator's page (src/api/web) draws the nodes beyond a
    /// bridge from it. Ids that are not valid keys are left out.
    pub fn neighbours(&self) -> Vec<(iroh::EndpointId, Vec<iroh::EndpointId>)> {
        let key = |id: &Id| iroh::EndpointId::from_bytes(id).ok();
        let core = self.driver.core();
        core.neighbours()
            .filter_map(|(peer, announced)| {
                let announced = announced
                    .map(|n| n.iter().filter_map(key).collect())
                    .unwrap_or_default();
                Some((key(peer)?, announced))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;

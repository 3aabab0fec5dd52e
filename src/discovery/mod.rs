//! Discovery sources.
//!
//! A source finds peers and reports them to the peer manager as [`DiscoveryEvent`]s:
//! "found" (with the addresses it learned) and "lost". No source dials: deciding whom
//! to connect to, deduplicating and retrying belong to the peer manager alone
//! (`crate::node::peers`). A peer known through several sources is lost only when the
//! last of them loses it, and a connected peer stays connected while its connection
//! lives, whatever discovery says.
//!
//! Each mode runs as one task started by [`spawn_sources`]. On shutdown the task's
//! [`CancellationToken`] fires and the task gets a moment to say goodbye (mDNS sends
//! its goodbye packets) before the endpoint closes.

use std::{net::SocketAddr, time::Duration};

use iroh::{EndpointId, SecretKey};
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

pub use crate::events::{DiscoveryEvent, Source};

pub mod dns;
pub mod gossip;
pub mod mdns;
pub mod settings;

pub use settings::{
    DiscoveryMode, DiscoverySettings, DnsSettings, GossipSettings, MdnsSettings, Modes,
    UnmatchedPattern,
};

/// Handle through which a source reports events.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: mpsc::Sender<crate::node::peers::Command>,
}

impl EventSink {
    pub(crate) fn new(tx: mpsc::Sender<crate::node::peers::Command>) -> Self {
        EventSink { tx }
    }

    /// Sends an event; waits if the peer manager is busy. Returns false once the peer
    /// manager has stopped, which means the node is shutting down.
    pub async fn send(&self, event: DiscoveryEvent) -> bool {
        self.tx
            .send(crate::node::peers::Command::Discovery(event))
            .await
            .is_ok()
    }

    pub async fn found(
        &self,
        id: EndpointId,
        addrs: impl IntoIterator<Item = SocketAddr>,
        source: Source,
    ) -> bool {
        self.found_as(id, addrs, source, false).await
    }

    /// [`EventSink::found`], saying whether the peer can have found us yet (see
    /// [`DiscoveryEvent::Found`]'s `unaware`).
    pub async fn found_as(
        &self,
        id: EndpointId,
        addrs: impl IntoIterator<Item = SocketAddr>,
        source: Source,
        unaware: bool,
    ) -> bool {
        self.send(DiscoveryEvent::Found {
            id,
            addrs: addrs.into_iter().collect(),
            source,
            unaware,
        })
        .await
    }

    pub async fn lost(&self, id: EndpointId, source: Source) -> bool {
        self.send(DiscoveryEvent::Lost { id, source }).await
    }
}

/// Everything a discovery source may need from the node. Each source's own settings
/// come separately (`crate::settings`), so a source sees only what it uses.
#[derive(Clone)]
pub struct SourceContext {
    /// This node's identity; dns mode signs its handshake answers with it.
    pub secret_key: SecretKey,
    pub endpoint_id: EndpointId,
    pub app_id: String,
    /// The UDP port the iroh endpoint is bound to (announced by mdns and dns).
    pub iroh_port: u16,
    /// The UDP sockets the iroh endpoint is bound to.
    pub bound_addrs: Vec<SocketAddr>,
    /// Handle on the peer manager: found/lost go in through [`SourceContext::events`];
    /// gossip also reads its connections and stream registry.
    pub peers: crate::node::peers::PeerManagerHandle,
    pub shutdown: CancellationToken,
}

impl SourceContext {
    /// Where the source reports found and lost peers.
    pub fn events(&self) -> EventSink {
        EventSink::new(self.peers.discovery_sender())
    }
}

/// A mode that could not start; the cause is kept.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("mdns")]
    Mdns(#[source] mdns::MdnsError),
    #[error("dns")]
    Dns(#[source] dns::DnsError),
}

/// The modes this build implements; `daemon::run` refuses the others before binding.
pub const BUILT_MODES: &[DiscoveryMode] = &[
    DiscoveryMode::Mdns,
    DiscoveryMode::Dns,
    DiscoveryMode::Gossip,
];

/// How long sources get to say goodbye on shutdown.
pub const GOODBYE_GRACE: Duration = Duration::from_secs(2);

/// Starts one task per mode. Fails if a mode cannot start (for example its port is
/// taken), so that a misconfigured sidecar stops instead of silently finding no one.
pub async fn spawn_sources(
    settings: &DiscoverySettings,
    ctx: SourceContext,
) -> Result<JoinSet<()>, DiscoveryError> {
    let mut set = JoinSet::new();
    if let Some(s) = &settings.mdns {
        let start = mdns::start(ctx.clone(), s.clone());
        start_in(&mut set, DiscoveryMode::Mdns, start, DiscoveryError::Mdns).await?;
    }
    if let Some(s) = &settings.dns {
        let start = dns::start(ctx.clone(), s.clone());
        start_in(&mut set, DiscoveryMode::Dns, start, DiscoveryError::Dns).await?;
    }
    if let Some(s) = &settings.gossip {
        let span = tracing::info_span!("discovery", mode = %DiscoveryMode::Gossip);
        spawn_in(&mut set, span, gossip::start(ctx.clone(), s.clone()));
    }
    if !settings.modes.0.is_empty() {
        info!(modes = %settings.modes, "discovery started");
    }
    Ok(set)
}

/// Waits for the sources to finish their goodbyes, at most [`GOODBYE_GRACE`].
pub async fn join_sources(mut set: JoinSet<()>) {
    let all = async { while set.join_next().await.is_some() {} };
    if tokio::time::timeout(GOODBYE_GRACE, all).await.is_err() {
        warn!("discovery sources did not stop within {GOODBYE_GRACE:?}; aborting them");
        set.abort_all();
    }
}

/// Runs a mode's start inside its span and spawns the task it returns.
async fn start_in<T, E>(
    set: &mut JoinSet<()>,
    mode: DiscoveryMode,
    start: impl std::future::Future<Output = Result<T, E>>,
    wrap: fn(E) -> DiscoveryError,
) -> Result<(), DiscoveryError>
where
    T: std::future::Future<Output = ()> + Send + 'static,
{
    let span = tracing::info_span!("discovery", mode = %mode);
    let task = start.instrument(span.clone()).await.map_err(wrap)?;
    spawn_in(set, span, task);
    Ok(())
}

fn spawn_in<F>(set: &mut JoinSet<()>, span: tracing::Span, fut: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    set.spawn(fut.instrument(span));
}

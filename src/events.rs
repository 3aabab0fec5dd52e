//! What the node and the discovery sources tell each other.
//!
//! Discovery sources report [`DiscoveryEvent`]s ("found", "lost") to the peer manager;
//! the peer manager broadcasts [`PeerEvent`]s (connected, disconnected, left, ...) to
//! the API and to the sources that care. Both sides import this module, and the node
//! imports nothing from `discovery`: the dependency runs one way (CI checks it with
//! `scripts/check-layers.py`).

use std::{collections::BTreeSet, fmt, net::SocketAddr, time::SystemTime};

use iroh::EndpointId;
use serde::Serialize;

/// Where the peer manager learned of a peer. The order is the display order.
///
/// `Static` and `Api` are not discovery: they are the operator's own words, kept here
/// because a table row lists all of its sources together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `--peer` / `PEAT_SIDECAR_PEERS`.
    Static,
    /// The ConnectPeer RPC.
    Api,
    Mdns,
    Dns,
    Gossip,
    /// The peer dialled us and no other source knows it; held while that connection
    /// lives.
    Inbound,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Static => "static",
            Source::Api => "api",
            Source::Mdns => "mdns",
            Source::Dns => "dns",
            Source::Gossip => "gossip",
            Source::Inbound => "inbound",
        }
    }

    /// Sources an operator configured by hand: always dialled, never evicted.
    pub fn is_configured(self) -> bool {
        matches!(self, Source::Static | Source::Api)
    }

    /// Sources whose record of a peer the peer itself withdraws when it shuts down
    /// (an mDNS goodbye): the peer manager drops them as soon as the peer's
    /// authenticated "shutting down" close arrives, which is sooner and cannot be
    /// forged. DNS answers and gossip rows are other nodes' words and stay.
    pub fn withdrawn_on_departure(self) -> bool {
        matches!(self, Source::Mdns)
    }

    /// Sources whose every `Found` carries the peer's whole current address set, as
    /// the peer announces it itself (mDNS): an address missing from the latest one is
    /// gone (renumbered), and the peer manager drops it.
    pub fn reports_whole_set(self) -> bool {
        matches!(self, Source::Mdns)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a discovery source tells the peer manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryEvent {
    /// A peer of our formation (as far as the source can tell) is reachable at `addrs`.
    /// Sent again when the addresses change; repeats are cheap.
    Found {
        id: EndpointId,
        addrs: BTreeSet<SocketAddr>,
        source: Source,
        /// The peer cannot have found us yet: we learned of it before our own record
        /// went out (mDNS: an answer to our first query, while our announcement was
        /// still pending). No simultaneous dial is possible, so the peer manager dials
        /// at once instead of leaving the first move to the smaller id.
        unaware: bool,
    },
    /// The source no longer sees the peer (goodbye, expired record, left the DNS answer).
    Lost { id: EndpointId, source: Source },
}

/// What happened to a peer, for WatchPeers and logs.
#[derive(Debug, Clone)]
pub struct PeerEvent {
    pub endpoint_id: EndpointId,
    pub kind: PeerEventKind,
    pub detail: String,
    pub unix_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerEventKind {
    Found,
    Lost,
    Connecting,
    Connected,
    Disconnected,
    /// The peer closed its connection because it is shutting down (after Disconnected).
    Left,
    Rejected,
    Removed,
}

impl PeerEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerEventKind::Found => "found",
            PeerEventKind::Lost => "lost",
            PeerEventKind::Connecting => "connecting",
            PeerEventKind::Connected => "connected",
            PeerEventKind::Disconnected => "disconnected",
            PeerEventKind::Left => "left",
            PeerEventKind::Rejected => "rejected",
            PeerEventKind::Removed => "removed",
        }
    }
}

impl PeerEvent {
    /// An event stamped with the wall-clock time (for `watch`; the peer manager keeps
    /// its own monotonic clock for decisions).
    pub fn now(endpoint_id: EndpointId, kind: PeerEventKind, detail: impl Into<String>) -> Self {
        PeerEvent {
            endpoint_id,
            kind,
            detail: detail.into(),
            unix_ms: unix_ms_now(),
        }
    }
}

/// The wall clock now, in milliseconds since the Unix epoch.
pub fn unix_ms_now() -> u64 {
    unix_ms(SystemTime::now())
}

/// Milliseconds since the Unix epoch; 0 for a clock set before 1970.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

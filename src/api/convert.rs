//! Conversions between the peer manager's types and the protobuf messages.

use serde_json::{json, Value};

use super::pb;
use crate::{
    data::Class,
    events::PeerEvent,
    node::peers::{PeerInfo, PeerState},
};

impl From<PeerState> for pb::PeerState {
    fn from(s: PeerState) -> Self {
        match s {
            PeerState::Discovered => pb::PeerState::Discovered,
            PeerState::Connecting => pb::PeerState::Connecting,
            PeerState::Connected => pb::PeerState::Connected,
            PeerState::Backoff => pb::PeerState::Backoff,
            PeerState::Rejected => pb::PeerState::Rejected,
        }
    }
}

/// The state name used by `peers --json`: `connected`, `backoff`, ...
pub fn state_name(s: i32) -> &'static str {
    match pb::PeerState::try_from(s).unwrap_or(pb::PeerState::Unspecified) {
        pb::PeerState::Unspecified => "unknown",
        pb::PeerState::Discovered => "discovered",
        pb::PeerState::Connecting => "connecting",
        pb::PeerState::Connected => "connected",
        pb::PeerState::Backoff => "backoff",
        pb::PeerState::Rejected => "rejected",
    }
}

impl From<PeerInfo> for pb::Peer {
    fn from(p: PeerInfo) -> Self {
        pb::Peer {
            endpoint_id: p.endpoint_id,
            state: pb::PeerState::from(p.state) as i32,
            sources: p.sources.iter().map(|s| s.as_str().to_string()).collect(),
            addrs: p.addrs,
            rtt_ms: p.rtt_ms,
            last_error: p.last_error.unwrap_or_default(),
            outbound: p.outbound,
            paused: p.paused,
            failures: p.failures,
            bytes_sent: p.bytes_sent,
            bytes_received: p.bytes_received,
            packets_sent: p.packets_sent,
            packets_lost: p.packets_lost,
            // Filled in by the server from the data plane's per-peer counters.
            messages_in: 0,
            messages_out: 0,
            link_classes: Vec::new(),
            link_rate_cap: None,
        }
    }
}

impl From<PeerEvent> for pb::PeerEvent {
    fn from(e: PeerEvent) -> Self {
        pb::PeerEvent {
            endpoint_id: e.endpoint_id.to_string(),
            kind: e.kind.as_str().to_string(),
            detail: e.detail,
            unix_ms: e.unix_ms,
        }
    }
}

/// Packets lost on the peer's connection since it opened, in percent of those sent;
/// None while not connected or before the first packet.
pub fn loss_pct(p: &pb::Peer) -> Option<f64> {
    let (sent, lost) = (p.packets_sent?, p.packets_lost?);
    (sent > 0).then(|| (100.0 * lost as f64 / sent as f64).min(100.0))
}

/// The data plane's counters as JSON, as `status --json` and the operator's page
/// (`/api/state`) both show them.
pub fn data_stats_json(d: &pb::DataStats) -> Value {
    json!({
        "topics": d.topics,
        "retained_entries": d.retained_entries,
        "retained_tombstones": d.retained_tombstones,
        "retained_bytes": d.retained_bytes,
        "messages_in": d.messages_in,
        "messages_out": d.messages_out,
        "published": d.published,
        "delivered": d.delivered,
        "dropped": d.dropped,
        "subscribers": d.subscribers,
        "rejected": d.rejected,
        "forged": d.forged,
        "unsigned": d.unsigned,
        "signed": d.signed,
    })
}

pub fn priority(c: Class) -> pb::Priority {
    match c {
        Class::Urgent => pb::Priority::Urgent,
        Class::Normal => pb::Priority::Normal,
        Class::Bulk => pb::Priority::Bulk,
    }
}

/// A request's class; `None` for the default and for values this version does not
/// know (a newer client's class falls back to the topic's default).
pub fn class(p: i32) -> Option<Class> {
    match pb::Priority::try_from(p).ok()? {
        pb::Priority::Default => None,
        pb::Priority::Urgent => Some(Class::Urgent),
        pb::Priority::Normal => Some(Class::Normal),
        pb::Priority::Bulk => Some(Class::Bulk),
    }
}

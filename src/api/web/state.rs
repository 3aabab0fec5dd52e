//! The page's JSON state: one pure function of a [`Snapshot`] (what `status` and
//! `peers` answer), the data plane's neighbour announcements and the measured rates,
//! so that what the page draws is what the API says.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Instant,
};

use serde::Serialize;
use serde_json::{json, Value};

use crate::api::{convert::state_name, pb, server::Snapshot};

/// One node's announced data neighbours, as hex endpoint ids.
pub type Neighbours = Vec<(String, Vec<String>)>;

#[derive(Debug, Serialize)]
pub struct State {
    pub unix_ms: u64,
    pub me: Me,
    pub peers: Vec<PeerRow>,
    /// Nodes this one has no row for, known from a peer's neighbour announcement:
    /// the nodes beyond a bridge.
    pub remote: Vec<Remote>,
    /// Data links between two other nodes, as one of them announced it.
    pub edges: Vec<[String; 2]>,
    pub topics: Vec<TopicRow>,
    pub data: Option<Value>,
    pub counters: Value,
}

#[derive(Debug, Serialize)]
pub struct Me {
    pub id: String,
    pub app_id: String,
    pub version: String,
    pub uptime_secs: u64,
    pub discovery_modes: Vec<String>,
    pub bound_addrs: Vec<String>,
    pub connected_peers: u32,
    pub known_peers: u32,
    /// Whether the formation needs a shared key (never the key itself).
    pub shared_key: bool,
    /// This node links peers that do not link each other.
    pub bridge: bool,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct PeerRow {
    pub id: String,
    /// connected, connecting, backoff, discovered, rejected.
    pub state: &'static str,
    pub sources: Vec<String>,
    pub addrs: Vec<String>,
    pub rtt_ms: Option<f64>,
    pub last_error: String,
    pub outbound: Option<bool>,
    pub paused: bool,
    pub failures: u32,
    pub bytes_sent: Option<u64>,
    pub bytes_received: Option<u64>,
    #[serde(flatten)]
    pub rate: LinkRate,
    pub messages_in: u64,
    pub messages_out: u64,
    /// Its announced data neighbours; None without a data link.
    pub neighbours: Option<Vec<String>>,
    /// It announces a neighbour that this node has no link to: traffic to that node
    /// goes through it.
    pub bridge: bool,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Remote {
    pub id: String,
    /// The peers that announced it.
    pub via: Vec<String>,
}

#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct TopicRow {
    pub topic: String,
    /// Messages per second through this node (published here or received), smoothed.
    pub rate: f64,
    /// Messages seen since the page's meter started.
    pub total: u64,
    pub last_unix_ms: u64,
}

/// Bytes and messages per second on one link, from two samples.
#[derive(Debug, Serialize, Clone, Copy, Default, PartialEq)]
pub struct LinkRate {
    pub tx_bps: f64,
    pub rx_bps: f64,
    pub msgs_in_ps: f64,
    pub msgs_out_ps: f64,
}

/// The previous sample of every peer's counters.
#[derive(Debug, Default)]
pub struct Rates {
    prev: HashMap<String, [u64; 4]>,
    at: Option<Instant>,
}

impl Rates {
    /// Rates since the last call; zero on the first and for a new peer. A counter that
    /// went down (a new connection) counts from zero.
    pub fn update(&mut self, peers: &[pb::Peer], now: Instant) -> HashMap<String, LinkRate> {
        let secs = self
            .at
            .map(|t| now.saturating_duration_since(t).as_secs_f64())
            .filter(|s| *s > 0.0);
        let mut out = HashMap::new();
        let mut next = HashMap::new();
        for p in peers {
            let cur = [
                p.bytes_sent.unwrap_or(0),
                p.bytes_received.unwrap_or(0),
                p.messages_in,
                p.messages_out,
            ];
            if let (Some(secs), Some(old)) = (secs, self.prev.get(&p.endpoint_id)) {
                let per_s = |i: usize| {
                    let d = if cur[i] >= old[i] {
                        cur[i] - old[i]
                    } else {
                        cur[i]
                    };
                    d as f64 / secs
                };
                out.insert(
                    p.endpoint_id.clone(),
                    LinkRate {
                        tx_bps: per_s(0),
                        rx_bps: per_s(1),
                        msgs_in_ps: per_s(2),
                        msgs_out_ps: per_s(3),
                    },
                );
            }
            next.insert(p.endpoint_id.clone(), cur);
        }
        self.prev = next;
        self.at = Some(now);
        out
    }
}

/// The page's state from one snapshot.
pub fn build(
    snap: &Snapshot,
    neighbours: &Neighbours,
    rates: &HashMap<String, LinkRate>,
    topics: Vec<TopicRow>,
) -> State {
    let st = &snap.status;
    let me = st.endpoint_id.clone();
    let announced: HashMap<&str, &Vec<String>> =
        neighbours.iter().map(|(p, n)| (p.as_str(), n)).collect();
    let connected: BTreeSet<&str> = snap
        .peers
        .iter()
        .filter(|p| p.state == pb::PeerState::Connected as i32)
        .map(|p| p.endpoint_id.as_str())
        .collect();
    let beyond = |n: &str| n != me && !connected.contains(n);
    let peers = snap
        .peers
        .iter()
        .map(|p| {
            let nb = announced.get(p.endpoint_id.as_str()).map(|n| {
                let mut n = (*n).clone();
                n.sort();
                n
            });
            PeerRow {
                bridge: nb.as_ref().is_some_and(|n| n.iter().any(|n| beyond(n))),
                id: p.endpoint_id.clone(),
                state: state_name(p.state),
                sources: p.sources.clone(),
                addrs: p.addrs.clone(),
                rtt_ms: p.rtt_ms,
                last_error: p.last_error.clone(),
                outbound: p.outbound,
                paused: p.paused,
                failures: p.failures,
                bytes_sent: p.bytes_sent,
                bytes_received: p.bytes_received,
                rate: rates.get(&p.endpoint_id).copied().unwrap_or_default(),
                messages_in: p.messages_in,
                messages_out: p.messages_out,
                neighbours: nb,
            }
        })
        .collect();
    let (remote, edges) = graph(&me, &snap.peers, neighbours);
    State {
        unix_ms: crate::events::unix_ms_now(),
        me: Me {
            id: me.clone(),
            app_id: st.app_id.clone(),
            version: st.version.clone(),
            uptime_secs: st.uptime_secs,
            discovery_modes: st.discovery_modes.clone(),
            bound_addrs: st.bound_addrs.clone(),
            connected_peers: st.connected_peers,
            known_peers: st.known_peers,
            shared_key: st.shared_key,
            bridge: i_bridge(&connected, &announced),
        },
        peers,
        remote,
        edges,
        topics,
        data: st.data.as_ref().map(data_json),
        counters: st
            .counters
            .as_ref()
            .map(counters_json)
            .unwrap_or(Value::Null),
    }
}

/// Whether two of this node's linked peers do not link each other (as far as their
/// announcements say: a peer without a data link yet says nothing).
fn i_bridge(connected: &BTreeSet<&str>, announced: &HashMap<&str, &Vec<String>>) -> bool {
    announced.iter().any(|(p, n)| {
        connected.contains(p)
            && connected
                .iter()
                .any(|q| q != p && !n.iter().any(|x| x.as_str() == *q))
    })
}

/// The nodes beyond this node's peers, and the announced links between other nodes.
fn graph(me: &str, peers: &[pb::Peer], neighbours: &Neighbours) -> (Vec<Remote>, Vec<[String; 2]>) {
    let known: BTreeSet<&str> = peers.iter().map(|p| p.endpoint_id.as_str()).collect();
    let mut remote: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut edges = BTreeSet::new();
    for (p, ns) in neighbours {
        for n in ns {
            if n == me || n == p {
                continue;
            }
            if !known.contains(n.as_str()) {
                remote.entry(n.as_str()).or_default().push(p.clone());
            }
            let (a, b) = if p < n { (p, n) } else { (n, p) };
            edges.insert([a.clone(), b.clone()]);
        }
    }
    let remote = remote
        .into_iter()
        .map(|(id, mut via)| {
            via.sort();
            Remote {
                id: id.to_string(),
                via,
            }
        })
        .collect();
    (remote, edges.into_iter().collect())
}

fn data_json(d: &pb::DataStats) -> Value {
    json!({
        "topics": d.topics,
        "retained_entries": d.retained_entries,
        "retained_bytes": d.retained_bytes,
        "messages_in": d.messages_in,
        "messages_out": d.messages_out,
        "published": d.published,
        "delivered": d.delivered,
        "dropped": d.dropped,
        "subscribers": d.subscribers,
        "rejected": d.rejected,
    })
}

fn counters_json(c: &pb::Counters) -> Value {
    json!({
        "dials_started": c.dials_started,
        "dials_failed": c.dials_failed,
        "connections_opened": c.connections_opened,
        "connections_closed": c.connections_closed,
        "handshakes_rejected": c.handshakes_rejected,
        "incoming_refused": c.incoming_refused,
        "duplicates_closed": c.duplicates_closed,
    })
}

#[cfg(test)]
mod tests;

//! The page's JSON state: one pure function of a [`Snapshot`] (what `status` and
//! `peers` answer), the data plane's neighbour announcements and the measured rates,
//! so that what the page draws is what the API says.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    time::{Duration, Instant},
};

use serde::Serialize;
use serde_json::{json, Value};

use crate::api::{
    convert::{data_stats_json, loss_pct, state_name},
    pb,
    server::Snapshot,
};

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
    pub packets_sent: Option<u64>,
    pub packets_lost: Option<u64>,
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

/// Bytes and messages per second on one link, from two samples, and its loss.
#[derive(Debug, Serialize, Clone, Copy, Default, PartialEq)]
pub struct LinkRate {
    pub tx_bps: f64,
    pub rx_bps: f64,
    pub msgs_in_ps: f64,
    pub msgs_out_ps: f64,
    /// Packets declared lost, in percent of those sent: over the last [`LOSS_WINDOW`]
    /// when packets were sent in it, else over the connection's life; None without a
    /// connection or before its first packet.
    pub loss_pct: Option<f64>,
}

/// How far back a link's loss is measured: long enough to hold a few packets on a quiet
/// link, short enough that a link going bad shows within seconds.
pub const LOSS_WINDOW: Duration = Duration::from_secs(10);

/// A sample this close to the last one gives its rates again: a page that opens just
/// after a tick would otherwise see rates over a few milliseconds, often zero.
const MIN_SAMPLE: Duration = Duration::from_millis(500);

/// The last sample of one peer's counters.
#[derive(Debug)]
struct Track {
    at: Instant,
    counters: [u64; 4],
    rate: LinkRate,
    /// (when, packets sent, packets lost), oldest first: the newest sample at least
    /// [`LOSS_WINDOW`] old, then the younger ones.
    packets: VecDeque<(Instant, u64, u64)>,
}

/// The previous samples of every peer's counters.
#[derive(Debug, Default)]
pub struct Rates {
    prev: HashMap<String, Track>,
}

impl Rates {
    /// Rates since the last call, for every peer: zero on the first call and for a new
    /// peer. A counter that went down (a new connection) counts from zero.
    pub fn update(&mut self, peers: &[pb::Peer], now: Instant) -> HashMap<String, LinkRate> {
        let mut out = HashMap::new();
        let mut next = HashMap::new();
        for p in peers {
            let cur = [
                p.bytes_sent.unwrap_or(0),
                p.bytes_received.unwrap_or(0),
                p.messages_in,
                p.messages_out,
            ];
            let mut track = self.prev.remove(&p.endpoint_id).unwrap_or(Track {
                at: now,
                counters: cur,
                rate: LinkRate::default(),
                packets: VecDeque::new(),
            });
            if now.saturating_duration_since(track.at) < MIN_SAMPLE && track.at != now {
                out.insert(p.endpoint_id.clone(), track.rate);
                next.insert(p.endpoint_id.clone(), track);
                continue;
            }
            let loss_pct = track.loss(p, now);
            let secs = now.saturating_duration_since(track.at).as_secs_f64();
            let per_s = |i: usize| {
                let (new, old) = (cur[i], track.counters[i]);
                let d = if new >= old { new - old } else { new };
                if secs > 0.0 {
                    d as f64 / secs
                } else {
                    0.0
                }
            };
            let rate = LinkRate {
                tx_bps: per_s(0),
                rx_bps: per_s(1),
                msgs_in_ps: per_s(2),
                msgs_out_ps: per_s(3),
                loss_pct,
            };
            (track.at, track.counters, track.rate) = (now, cur, rate);
            out.insert(p.endpoint_id.clone(), rate);
            next.insert(p.endpoint_id.clone(), track);
        }
        self.prev = next;
        out
    }
}

impl Track {
    /// Records the packet counters and answers [`LinkRate::loss_pct`].
    fn loss(&mut self, p: &pb::Peer, now: Instant) -> Option<f64> {
        let (Some(sent), Some(lost)) = (p.packets_sent, p.packets_lost) else {
            self.packets.clear();
            return None;
        };
        // Fewer than before: a new connection, or a path closed; measure afresh.
        if self
            .packets
            .back()
            .is_some_and(|&(_, s, l)| sent < s || lost < l)
        {
            self.packets.clear();
        }
        self.packets.push_back((now, sent, lost));
        while self
            .packets
            .get(1)
            .is_some_and(|&(t, ..)| now.saturating_duration_since(t) >= LOSS_WINDOW)
        {
            self.packets.pop_front();
        }
        let &(_, s0, l0) = self.packets.front()?;
        // Packets sent before the window may be declared lost in it: at most 100 %.
        let pct = |l: u64, s: u64| (s > 0).then(|| (100.0 * l as f64 / s as f64).min(100.0));
        pct(lost - l0, sent - s0).or_else(|| loss_pct(p))
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
                packets_sent: p.packets_sent,
                packets_lost: p.packets_lost,
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
        data: st.data.as_ref().map(data_stats_json),
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

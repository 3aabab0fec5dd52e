//! One row of the peer table: what we know of a peer (sources, addresses, host names)
//! and where it stands (its [`Link`], a dial in flight, backoff, errors).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    time::{Duration, Instant},
};

use iroh::EndpointId;

use super::{
    dead::DeadAddrs,
    fair::Range,
    rules::{dial_timeouts, DialTimeouts, MAX_ADDRS_PER_PEER},
    types::{PeerInfo, PeerState},
};
use crate::{events::Source, node::backoff::Backoff, node::PeerHost};

/// A connection as the core knows it: the driver holds the connection itself under
/// this id (QUIC's stable id), so the core stays free of I/O objects.
pub(super) type ConnId = usize;

/// A connection handed to the core: its id, the peer's address on its path and the
/// round-trip time measured in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NewConn {
    pub id: ConnId,
    pub remote: Option<SocketAddr>,
    pub rtt: Option<Duration>,
}

/// What the live connection's selected path says now (see [`crate::node::path`]).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct PathNow {
    pub rtt: Option<Duration>,
    pub remote: Option<SocketAddr>,
}

/// A caller waiting for an answer (ConnectPeer, DisconnectPeer); the driver holds its
/// reply channel under this number.
pub(super) type Ticket = u64;

/// A live connection and how it came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Live {
    pub conn: ConnId,
    pub outbound: bool,
    pub since: Instant,
    /// The peer's address on the connection's path, as the driver saw it.
    pub remote: Option<SocketAddr>,
}

/// A second connection to a peer, kept beside the live one until the peer settles
/// which of the two survives (see [`super::rules::settles_duplicates`]). Its streams
/// are routed, since the peer may use it; the protocols only learn of it if it takes
/// over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Standby {
    pub conn: Live,
    /// Closed then if the peer has not settled by itself.
    pub until: Instant,
}

/// Where a peer stands. A dial in flight is kept beside it ([`Peer::dial`]): it can
/// still be running when the peer's own dial reaches us first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Link {
    /// Not connected; the next dial is due at `retry_at`.
    Idle {
        retry_at: Instant,
    },
    /// Not connected and not redialled (DisconnectPeer here or on the peer) until the
    /// peer is found again or connects.
    Paused,
    /// Failed the formation check; tried again at `retry_at`.
    Rejected {
        retry_at: Instant,
    },
    Connected(Live),
}

#[derive(Debug)]
pub(super) struct Peer {
    pub sources: BTreeSet<Source>,
    /// Addresses learned from discovery or given as IP addresses.
    pub addrs: BTreeSet<SocketAddr>,
    /// The addresses each discovery source gave: the latest set of a source that
    /// reports whole sets ([`Source::reports_whole_set`]), all of them for the others.
    pub by_source: BTreeMap<Source, BTreeSet<SocketAddr>>,
    /// Host names (static peers, ConnectPeer) resolved before each dial.
    pub hosts: BTreeSet<PeerHost>,
    pub link: Link,
    /// A second connection, only beside a [`Link::Connected`].
    pub standby: Option<Standby>,
    /// The addresses of the dial in flight, if one is.
    pub dial: Option<Vec<SocketAddr>>,
    pub backoff: Backoff,
    pub last_error: Option<String>,
    pub first_seen: Instant,
    /// Whether this peer ever passed the formation check here: real, not a spoof.
    pub ever_connected: bool,
    /// ConnectPeer callers waiting for the dial in flight.
    pub tickets: Vec<Ticket>,
    /// When a row that only ConnectPeer knows, and that never connected, is dropped
    /// (see [`super::rules::API_PEER_TTL`]).
    pub expires_at: Option<Instant>,
    /// The address range whose share of untried dials the dial in flight holds (see
    /// [`super::fair`]); given back when the dial ends.
    pub fair_slot: Option<Range>,
}

impl Peer {
    pub fn new(now: Instant) -> Self {
        Peer {
            sources: BTreeSet::new(),
            addrs: BTreeSet::new(),
            by_source: BTreeMap::new(),
            hosts: BTreeSet::new(),
            link: Link::Idle { retry_at: now },
            standby: None,
            dial: None,
            backoff: Backoff::default(),
            last_error: None,
            first_seen: now,
            ever_connected: false,
            tickets: Vec::new(),
            expires_at: None,
            fair_slot: None,
        }
    }

    pub fn live(&self) -> Option<&Live> {
        match &self.link {
            Link::Connected(l) => Some(l),
            _ => None,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.live().is_some()
    }

    pub fn state(&self, now: Instant) -> PeerState {
        match self.link {
            Link::Connected(_) => PeerState::Connected,
            _ if self.dial.is_some() => PeerState::Connecting,
            Link::Rejected { .. } => PeerState::Rejected,
            Link::Paused => PeerState::Backoff,
            Link::Idle { retry_at } if retry_at > now => PeerState::Backoff,
            Link::Idle { .. } => PeerState::Discovered,
        }
    }

    /// When the next dial is due, if the peer waits for one.
    pub fn retry_at(&self) -> Option<Instant> {
        match self.link {
            Link::Idle { retry_at } | Link::Rejected { retry_at } if self.dial.is_none() => {
                Some(retry_at)
            }
            _ => None,
        }
    }

    /// When a dial became due, if one is due now.
    pub fn due_since(&self, now: Instant) -> Option<Instant> {
        self.retry_at().filter(|t| *t <= now)
    }

    /// Adds addresses up to [`MAX_ADDRS_PER_PEER`]; true if any was new.
    pub fn add_addrs(&mut self, addrs: impl IntoIterator<Item = SocketAddr>) -> bool {
        let before = self.addrs.len();
        for a in addrs {
            if self.addrs.len() >= MAX_ADDRS_PER_PEER {
                break;
            }
            self.addrs.insert(a);
        }
        self.addrs.len() > before
    }

    /// Notes what a source said. A source that reports whole sets
    /// ([`Source::reports_whole_set`]) replaces its set: the addresses it gave before
    /// and no longer gives are dropped, unless another source gave them too or an
    /// operator configured them (`--peer`, ConnectPeer with an IP). Returns those.
    pub fn note_source_addrs(
        &mut self,
        source: Source,
        addrs: &BTreeSet<SocketAddr>,
    ) -> Vec<SocketAddr> {
        if !source.reports_whole_set() {
            // Bounded like the row's own addresses.
            let set = self.by_source.entry(source).or_default();
            for a in addrs {
                if set.len() >= MAX_ADDRS_PER_PEER {
                    break;
                }
                set.insert(*a);
            }
            return Vec::new();
        }
        let before = self.by_source.insert(source, addrs.clone());
        let mut gone = Vec::new();
        for a in before.unwrap_or_default().difference(addrs) {
            let configured = self.hosts.contains(&PeerHost::Addr(*a));
            let elsewhere = self
                .by_source
                .iter()
                .any(|(s, set)| *s != source && set.contains(a));
            if !configured && !elsewhere && self.addrs.remove(a) {
                gone.push(*a);
            }
        }
        gone
    }

    /// Records a source; "inbound" gives way to any real one. True if it was new.
    pub fn add_source(&mut self, source: Source) -> bool {
        if source != Source::Inbound {
            self.sources.remove(&Source::Inbound);
        }
        self.sources.insert(source)
    }

    /// Adds a configured host: an IP address is dialled as it is, a name is resolved.
    pub fn add_host(&mut self, host: PeerHost) {
        if let PeerHost::Addr(a) = &host {
            self.add_addrs([*a]);
        }
        self.hosts.insert(host);
    }

    /// Peers an operator named are kept and redialled whatever discovery says.
    pub fn configured(&self) -> bool {
        self.sources.iter().any(|s| s.is_configured())
    }

    /// Whether the row has expired: only ConnectPeer knows it, it never connected, and
    /// nobody waits for it.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
            && !self.ever_connected
            && self.dial.is_none()
            && self.tickets.is_empty()
            && self.sources.iter().all(|s| *s == Source::Api)
    }

    /// Whether anything but a connection keeps this row: a source or a waiting caller.
    pub fn orphan(&self) -> bool {
        self.sources.is_empty()
            && !self.is_connected()
            && self.dial.is_none()
            && self.tickets.is_empty()
    }

    /// A discovered peer that never connected and whose every address is known dead:
    /// most likely a spoofed announcement. Dialled last and evicted first.
    pub fn suspect(&self, dead: &DeadAddrs, now: Instant) -> bool {
        self.doubtful() && self.addrs.iter().all(|a| dead.contains(a, now))
    }

    /// Whether the peer has shown it is real, for the dial order and eviction: 0 an
    /// operator named it (`--peer`, ConnectPeer), 1 it passed the formation check here
    /// once (a dial of ours or its own inbound connection), 2 nobody vouched for it (a
    /// record that any host on the LAN can forge).
    pub fn tier(&self) -> u8 {
        if self.configured() {
            0
        } else if self.ever_connected {
            1
        } else {
            2
        }
    }

    /// Proven: an operator named it or it connected once. Records nobody vouched for
    /// never evict it and never dial before it.
    pub fn proven(&self) -> bool {
        self.tier() < 2
    }

    /// Discovered, never connected: what a spoofed announcement looks like.
    pub fn doubtful(&self) -> bool {
        !self.ever_connected && !self.configured() && !self.addrs.is_empty()
    }

    /// The dial's deadlines: a short wait for the answer on a first try at a
    /// discovered, never-connected peer, longer on a slow link (`link_rtt`).
    pub fn dial_timeouts(&self, link_rtt: Option<Duration>) -> DialTimeouts {
        let first = !(self.ever_connected || self.configured() || self.backoff.failures() > 0);
        dial_timeouts(first, link_rtt)
    }

    /// The API's view of this row; `path` (RTT, the peer's address on the selected
    /// path now) comes from the live connection, which only the driver holds. Without
    /// it, the address the connection started on is shown.
    pub fn info(&self, id: &EndpointId, path: PathNow, now: Instant) -> PeerInfo {
        let live = self.live();
        let mut addrs: Vec<String> = self.addrs.iter().map(crate::scoped::display).collect();
        // A peer that dialled us may be known by nothing else: show where it is. The
        // path moves with the peer's address (renumbering); show where it is now.
        let remote = path.remote.or(live.and_then(|l| l.remote));
        if let Some(remote) = remote.filter(|_| live.is_some()) {
            if !self.addrs.contains(&remote) {
                addrs.push(crate::scoped::display(&remote));
            }
        }
        for h in &self.hosts {
            if let PeerHost::Name { .. } = h {
                addrs.push(h.to_string());
            }
        }
        PeerInfo {
            endpoint_id: id.to_string(),
            state: self.state(now),
            sources: self.sources.iter().copied().collect(),
            addrs,
            rtt_ms: path.rtt.map(|d| d.as_secs_f64() * 1000.0),
            last_error: self.last_error.clone(),
            outbound: live.map(|l| l.outbound),
            paused: self.link == Link::Paused,
            failures: self.backoff.failures(),
            connected_for_secs: live.map(|l| now.saturating_duration_since(l.since).as_secs()),
            next_retry_ms: self
                .retry_at()
                .map(|t| t.saturating_duration_since(now).as_millis() as u64),
            bytes_sent: None,
            bytes_received: None,
            packets_sent: None,
            packets_lost: None,
        }
    }
}

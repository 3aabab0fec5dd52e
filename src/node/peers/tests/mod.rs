//! In-process tests of the core's transitions: no sockets, no tasks, no root. Each
//! test feeds inputs at chosen times and checks the actions and the table. This file
//! holds the rig; `dialing.rs` tests whom the core dials and when, `links.rs` what
//! connections, requests and departures do, `dups.rs` two connections to one peer,
//! `moves.rs` addresses that change, `flood.rs` proven peers and address ranges under a
//! flood of records nobody vouched for.

mod dialing;
mod dups;
mod flood;
mod links;
mod moves;

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use iroh::{endpoint::ConnectionError, EndpointId, SecretKey};

use super::{
    core::{Action, Answer, Core, Input, BLOCKED_TICK},
    row::{ConnId, Link, NewConn},
    rules::{
        DialTimeouts, API_PEER_TTL, FIRST_DIAL_TIMEOUT, OVER_CAPACITY_GRACE, PEER_LEFT_DELAY,
        TIE_BREAK_DELAY,
    },
    types::{Counters, DialError, Limits, PeerState, RequestError},
};
use crate::{
    events::{DiscoveryEvent, PeerEventKind, Source},
    node::PeerHost,
    node::{
        backoff,
        formation::{CloseCode, FormationError},
    },
};

pub(super) fn key(n: u8) -> EndpointId {
    SecretKey::from_bytes(&[n; 32]).public()
}

/// Ids sorted by their bytes: `ids(k)[0]` is the smallest.
pub(super) fn ids(k: u8) -> Vec<EndpointId> {
    let mut v: Vec<EndpointId> = (1..=k).map(key).collect();
    v.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    v
}

pub(super) fn addr(n: u16) -> SocketAddr {
    SocketAddr::from(([10, 77, (n >> 8) as u8, n as u8], 9470))
}

pub(super) fn limits() -> Limits {
    Limits {
        max_peers: 0,
        max_known_peers: 1024,
        max_concurrent_dials: 32,
        max_dials_per_sec: 1000,
        max_pending_handshakes: 64,
    }
}

pub(super) struct Rig {
    pub core: Core,
    pub t0: Instant,
    pub now: Instant,
    /// The handshake RTT the next connections report.
    pub rtt: Option<Duration>,
    next_conn: ConnId,
}

impl Rig {
    pub fn new(me: EndpointId, limits: Limits) -> Rig {
        let t0 = Instant::now();
        Rig {
            core: Core::new(me, limits, Arc::new(Counters::default()), t0),
            t0,
            now: t0,
            rtt: None,
            next_conn: 100,
        }
    }

    pub fn at(&mut self, secs: f64) -> &mut Self {
        self.now = self.t0 + Duration::from_secs_f64(secs);
        self
    }

    pub fn feed(&mut self, input: Input) -> Vec<Action> {
        self.core.handle(input, self.now)
    }

    pub fn found(&mut self, id: EndpointId, a: SocketAddr, source: Source) -> Vec<Action> {
        self.found_as(id, a, source, false)
    }

    pub fn found_as(
        &mut self,
        id: EndpointId,
        a: SocketAddr,
        src: Source,
        unaware: bool,
    ) -> Vec<Action> {
        let addrs = BTreeSet::from([a]);
        self.feed(Input::Discovery(DiscoveryEvent::Found {
            id,
            addrs,
            source: src,
            unaware,
        }))
    }

    /// ConnectPeer, with one address or none.
    pub fn connect(&mut self, id: EndpointId, at: Option<SocketAddr>, ticket: u64) -> Vec<Action> {
        let hosts = at.map(PeerHost::Addr).into_iter().collect();
        self.feed(Input::Connect { id, hosts, ticket })
    }

    pub fn conn(&mut self) -> ConnId {
        self.next_conn += 1;
        self.next_conn
    }

    /// A dial to `id` succeeds; returns the connection's id.
    pub fn dial_ok(&mut self, id: EndpointId) -> (ConnId, Vec<Action>) {
        let c = self.conn();
        let conn = NewConn {
            id: c,
            remote: None,
            rtt: self.rtt,
        };
        let acts = self.feed(Input::DialDone {
            id,
            result: Ok(conn),
        });
        (c, acts)
    }

    pub fn dial_err(&mut self, id: EndpointId, e: DialError) -> Vec<Action> {
        self.feed(Input::DialDone { id, result: Err(e) })
    }

    pub fn incoming(&mut self, id: EndpointId) -> (ConnId, Vec<Action>) {
        let c = self.conn();
        let remote = Some(SocketAddr::from(([10, 77, 9, 9], 40000)));
        let rtt = self.rtt;
        let conn = NewConn { id: c, remote, rtt };
        let acts = self.feed(Input::Incoming { id, conn });
        (c, acts)
    }

    pub fn closed_by_peer(&mut self, id: EndpointId, conn: ConnId, code: CloseCode) -> Vec<Action> {
        let reason = ConnectionError::ApplicationClosed(iroh::endpoint::ApplicationClose {
            error_code: code.varint(),
            reason: code.reason().to_vec().into(),
        });
        self.feed(Input::Closed { id, conn, reason })
    }

    pub fn state(&self, id: EndpointId) -> Option<PeerState> {
        self.core.peers.get(&id).map(|p| p.state(self.now))
    }

    pub fn counter(&self, f: fn(&Counters) -> &std::sync::atomic::AtomicU64) -> u64 {
        f(&self.core.counters).load(Ordering::Relaxed)
    }
}

pub(super) fn dials(acts: &[Action]) -> Vec<EndpointId> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Dial { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

/// The deadlines of the dials among `acts`, by peer.
pub(super) fn dial_timeouts(acts: &[Action]) -> Vec<(EndpointId, DialTimeouts)> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Dial { id, timeout, .. } => Some((*id, *timeout)),
            _ => None,
        })
        .collect()
}

pub(super) fn closes(acts: &[Action]) -> Vec<(ConnId, CloseCode)> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Close { conn, code } => Some((*conn, *code)),
            _ => None,
        })
        .collect()
}

pub(super) fn emitted(acts: &[Action]) -> Vec<PeerEventKind> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Emit { kind, .. } => Some(*kind),
            _ => None,
        })
        .collect()
}

pub(super) fn answers(acts: &[Action]) -> Vec<&Answer> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Answer { answer, .. } => Some(answer),
            _ => None,
        })
        .collect()
}

pub(super) fn timeout() -> DialError {
    DialError::Timeout(FIRST_DIAL_TIMEOUT)
}

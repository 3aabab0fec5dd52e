//! In-process tests of the core's transitions: no sockets, no tasks, no root. Each
//! test feeds inputs at chosen times and checks the actions and the table.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use iroh::{endpoint::ConnectionError, EndpointId, SecretKey};

use super::{
    core::{Action, Answer, Core, Input, BLOCKED_TICK},
    row::{ConnId, Link},
    rules::{FIRST_DIAL_TIMEOUT, OVER_CAPACITY_GRACE, PEER_LEFT_DELAY, TIE_BREAK_DELAY},
    types::{Counters, DialError, Limits, PeerState, RequestError},
};
use crate::{
    config::PeerHost,
    events::{PeerEventKind, Source},
    node::{
        backoff,
        formation::{CloseCode, FormationError},
    },
};

fn key(n: u8) -> EndpointId {
    SecretKey::from_bytes(&[n; 32]).public()
}

/// Ids sorted by their bytes: `ids(k)[0]` is the smallest.
fn ids(k: u8) -> Vec<EndpointId> {
    let mut v: Vec<EndpointId> = (1..=k).map(key).collect();
    v.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    v
}

fn addr(n: u16) -> SocketAddr {
    SocketAddr::from(([10, 77, (n >> 8) as u8, n as u8], 9470))
}

fn limits() -> Limits {
    Limits {
        max_peers: 0,
        max_known_peers: 1024,
        max_concurrent_dials: 32,
        max_dials_per_sec: 1000,
        max_pending_handshakes: 64,
    }
}

struct Rig {
    core: Core,
    t0: Instant,
    now: Instant,
    next_conn: ConnId,
}

impl Rig {
    fn new(me: EndpointId, limits: Limits) -> Rig {
        let t0 = Instant::now();
        Rig {
            core: Core::new(me, limits, Arc::new(Counters::default()), t0),
            t0,
            now: t0,
            next_conn: 100,
        }
    }

    fn at(&mut self, secs: f64) -> &mut Self {
        self.now = self.t0 + Duration::from_secs_f64(secs);
        self
    }

    fn feed(&mut self, input: Input) -> Vec<Action> {
        self.core.handle(input, self.now)
    }

    fn found(&mut self, id: EndpointId, a: SocketAddr, source: Source) -> Vec<Action> {
        self.found_as(id, a, source, false)
    }

    fn found_as(
        &mut self,
        id: EndpointId,
        a: SocketAddr,
        src: Source,
        unaware: bool,
    ) -> Vec<Action> {
        let addrs = BTreeSet::from([a]);
        self.feed(Input::Found {
            id,
            addrs,
            source: src,
            unaware,
        })
    }

    fn conn(&mut self) -> ConnId {
        self.next_conn += 1;
        self.next_conn
    }

    /// A dial to `id` succeeds; returns the connection's id.
    fn dial_ok(&mut self, id: EndpointId) -> (ConnId, Vec<Action>) {
        let c = self.conn();
        let acts = self.feed(Input::DialDone { id, result: Ok(c) });
        (c, acts)
    }

    fn dial_err(&mut self, id: EndpointId, e: DialError) -> Vec<Action> {
        self.feed(Input::DialDone { id, result: Err(e) })
    }

    fn incoming(&mut self, id: EndpointId) -> (ConnId, Vec<Action>) {
        let c = self.conn();
        let acts = self.feed(Input::Incoming { id, conn: c });
        (c, acts)
    }

    fn closed_by_peer(&mut self, id: EndpointId, conn: ConnId, code: CloseCode) -> Vec<Action> {
        let reason = ConnectionError::ApplicationClosed(iroh::endpoint::ApplicationClose {
            error_code: code.varint(),
            reason: code.reason().to_vec().into(),
        });
        self.feed(Input::Closed { id, conn, reason })
    }

    fn state(&self, id: EndpointId) -> Option<PeerState> {
        self.core.peers.get(&id).map(|p| p.state(self.now))
    }

    fn counter(&self, f: fn(&Counters) -> &std::sync::atomic::AtomicU64) -> u64 {
        f(&self.core.counters).load(Ordering::Relaxed)
    }
}

fn dials(acts: &[Action]) -> Vec<EndpointId> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Dial { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

fn closes(acts: &[Action]) -> Vec<(ConnId, CloseCode)> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Close { conn, code } => Some((*conn, *code)),
            _ => None,
        })
        .collect()
}

fn emitted(acts: &[Action]) -> Vec<PeerEventKind> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Emit { kind, .. } => Some(*kind),
            _ => None,
        })
        .collect()
}

fn answers(acts: &[Action]) -> Vec<&Answer> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Answer { answer, .. } => Some(answer),
            _ => None,
        })
        .collect()
}

fn timeout() -> DialError {
    DialError::Timeout(FIRST_DIAL_TIMEOUT)
}

#[test]
fn the_smaller_id_dials_at_once_and_the_larger_after_the_tie_break() {
    let v = ids(2);
    let (small, large) = (v[0], v[1]);
    let mut r = Rig::new(small, limits());
    let acts = r.found(large, addr(2), Source::Mdns);
    assert_eq!(dials(&acts), vec![large]);
    assert_eq!(
        emitted(&acts),
        vec![PeerEventKind::Found, PeerEventKind::Connecting]
    );

    let mut r = Rig::new(large, limits());
    assert!(dials(&r.found(small, addr(1), Source::Mdns)).is_empty());
    assert_eq!(r.core.next_deadline(r.now), Some(r.now + TIE_BREAK_DELAY));
    assert!(dials(&r.at(1.9).feed(Input::Tick)).is_empty());
    assert_eq!(dials(&r.at(2.0).feed(Input::Tick)), vec![small]);
}

#[test]
fn a_peer_that_cannot_know_us_yet_is_dialled_at_once_by_either_side() {
    let v = ids(2);
    let mut r = Rig::new(v[1], limits());
    let acts = r.found_as(v[0], addr(1), Source::Mdns, true);
    assert_eq!(dials(&acts), vec![v[0]]);
}

#[test]
fn one_dial_in_flight_per_peer_whatever_discovery_repeats() {
    let v = ids(2);
    let mut r = Rig::new(v[0], limits());
    assert_eq!(dials(&r.found(v[1], addr(2), Source::Mdns)).len(), 1);
    assert!(dials(&r.found(v[1], addr(2), Source::Mdns)).is_empty());
    assert!(dials(&r.found(v[1], addr(3), Source::Gossip)).is_empty());
    assert!(dials(&r.at(5.0).feed(Input::Tick)).is_empty());
    assert_eq!(r.state(v[1]), Some(PeerState::Connecting));
    assert_eq!(r.counter(|c| &c.dials_started), 1);
}

#[test]
fn a_successful_dial_installs_watches_and_resets_the_backoff() {
    let v = ids(2);
    let mut r = Rig::new(v[0], limits());
    r.found(v[1], addr(2), Source::Mdns);
    r.at(0.1).dial_err(v[1], timeout());
    assert_eq!(r.core.peers[&v[1]].backoff.failures(), 1);
    let acts = r.at(5.0).feed(Input::Tick);
    assert_eq!(dials(&acts), vec![v[1]]);
    let (c, acts) = r.dial_ok(v[1]);
    assert!(acts.contains(&Action::Watch { id: v[1], conn: c }));
    assert_eq!(emitted(&acts), vec![PeerEventKind::Connected]);
    assert_eq!(r.state(v[1]), Some(PeerState::Connected));
    assert_eq!(r.core.peers[&v[1]].backoff.failures(), 0);
    assert_eq!(
        r.core.next_deadline(r.now),
        None,
        "nothing waits while connected"
    );
}

#[test]
fn failures_back_off_with_growing_delays_and_rejections_wait_a_minute() {
    let v = ids(2);
    let mut r = Rig::new(v[0], limits());
    r.found(v[1], addr(2), Source::Mdns);
    let mut last = Duration::ZERO;
    let mut t = 0.0;
    for n in 0..6 {
        r.at(t).dial_err(v[1], timeout());
        let due = r.core.peers[&v[1]]
            .retry_at()
            .expect("a retry is scheduled");
        let wait = due - r.now;
        // Equal jitter: at least half the nominal delay, which doubles every time.
        assert!(
            wait >= backoff::BASE * 2u32.pow(n) / 2,
            "failure {n}: {wait:?}"
        );
        assert!(
            n < 2 || wait > last / 2,
            "failure {n}: {wait:?} after {last:?}"
        );
        last = wait;
        t = (due - r.t0).as_secs_f64();
        assert_eq!(dials(&r.at(t).feed(Input::Tick)), vec![v[1]]);
    }
    let rejected = DialError::Formation(FormationError::KeyMismatch);
    let acts = r.at(t + 0.1).dial_err(v[1], rejected);
    assert_eq!(emitted(&acts), vec![PeerEventKind::Rejected]);
    assert_eq!(r.state(v[1]), Some(PeerState::Rejected));
    assert!(dials(&r.at(t + 59.0).feed(Input::Tick)).is_empty());
    assert_eq!(dials(&r.at(t + 60.2).feed(Input::Tick)), vec![v[1]]);
}

#[test]
fn disconnect_pauses_redials_until_the_peer_is_found_with_something_new() {
    let v = ids(2);
    let mut r = Rig::new(v[0], limits());
    r.found(v[1], addr(2), Source::Mdns);
    let (c, _) = r.dial_ok(v[1]);
    let acts = r.feed(Input::Disconnect {
        id: v[1],
        ticket: 7,
    });
    assert_eq!(closes(&acts), vec![(c, CloseCode::Disconnect)]);
    assert_eq!(answers(&acts), vec![&Answer::Done]);
    assert!(r.core.peers[&v[1]].info(&v[1], None, r.now).paused);
    assert_eq!(r.state(v[1]), Some(PeerState::Backoff));
    // Its watcher reports the close: nothing changes, nothing is redialled.
    let reason = ConnectionError::LocallyClosed;
    r.feed(Input::Closed {
        id: v[1],
        conn: c,
        reason,
    });
    assert!(dials(&r.at(100.0).feed(Input::Tick)).is_empty());
    // The same record again is not news; a new address is.
    assert!(dials(&r.found(v[1], addr(2), Source::Mdns)).is_empty());
    assert_eq!(dials(&r.found(v[1], addr(3), Source::Mdns)), vec![v[1]]);
}

#[test]
fn a_peer_that_disconnected_us_is_not_redialled_either() {
    let v = ids(2);
    let mut r = Rig::new(v[0], limits());
    r.found(v[1], addr(2), Source::Mdns);
    let (c, _) = r.dial_ok(v[1]);
    r.closed_by_peer(v[1], c, CloseCode::Disconnect);
    assert_eq!(r.core.peers[&v[1]].link, Link::Paused);
    assert!(dials(&r.at(100.0).feed(Input::Tick)).is_empty());
    // It may connect to us again, which ends the pause.
    r.incoming(v[1]);
    assert_eq!(r.state(v[1]), Some(PeerState::Connected));
}

#[test]
fn a_disconnect_of_an_unknown_peer_is_refused() {
    let mut r = Rig::new(key(1), limits());
    let acts = r.feed(Input::Disconnect {
        id: key(2),
        ticket: 1,
    });
    assert_eq!(
        answers(&acts),
        vec![&Answer::Failed(RequestError::NotFound(key(2)))]
    );
}

#[test]
fn simultaneous_dials_keep_the_one_dialled_by_the_smaller_id_on_both_sides() {
    let v = ids(2);
    for me in [0, 1] {
        let (mine, theirs) = (v[me], v[1 - me]);
        let mut r = Rig::new(mine, limits());
        r.found_as(theirs, addr(2), Source::Mdns, true);
        let (out, _) = r.dial_ok(theirs);
        let (inc, acts) = r.at(0.5).incoming(theirs);
        let kept = if mine == v[0] { out } else { inc };
        let dropped = if kept == out { inc } else { out };
        assert_eq!(closes(&acts), vec![(dropped, CloseCode::Duplicate)]);
        assert_eq!(r.core.peers[&theirs].live().map(|l| l.conn), Some(kept));
        assert_eq!(r.counter(|c| &c.duplicates_closed), 1);
    }
}

#[test]
fn a_stale_connection_gives_way_to_the_peers_redial() {
    let v = ids(2);
    let mut r = Rig::new(v[0], limits());
    r.found(v[1], addr(2), Source::Mdns);
    let (old, _) = r.dial_ok(v[1]);
    let (new, acts) = r.at(60.0).incoming(v[1]);
    assert_eq!(closes(&acts), vec![(old, CloseCode::Duplicate)]);
    assert_eq!(r.core.peers[&v[1]].live().map(|l| l.conn), Some(new));
    // The old connection's end is then no news.
    let acts = r.closed_by_peer(v[1], old, CloseCode::Duplicate);
    assert!(emitted(&acts).is_empty());
    assert_eq!(r.state(v[1]), Some(PeerState::Connected));
}

#[test]
fn a_lost_peer_stays_while_connected_and_goes_when_no_source_knows_it() {
    let v = ids(3);
    let mut r = Rig::new(v[0], limits());
    r.found(v[1], addr(2), Source::Mdns);
    r.found(v[1], addr(2), Source::Gossip);
    let (c, _) = r.dial_ok(v[1]);
    r.feed(Input::Lost {
        id: v[1],
        source: Source::Mdns,
    });
    r.feed(Input::Lost {
        id: v[1],
        source: Source::Gossip,
    });
    assert_eq!(
        r.state(v[1]),
        Some(PeerState::Connected),
        "the connection decides"
    );
    let acts = r.feed(Input::Closed {
        id: v[1],
        conn: c,
        reason: ConnectionError::TimedOut,
    });
    assert_eq!(
        emitted(&acts),
        vec![PeerEventKind::Disconnected, PeerEventKind::Removed]
    );
    assert!(r.state(v[1]).is_none());
    // An unconnected peer goes with its last source.
    r.found(v[2], addr(3), Source::Dns);
    r.dial_err(v[2], timeout());
    r.feed(Input::Lost {
        id: v[2],
        source: Source::Dns,
    });
    assert!(r.state(v[2]).is_none());
}

#[test]
fn a_peer_that_shuts_down_leaves_mdns_at_once_and_is_redialled_no_sooner_than_2s() {
    let v = ids(2);
    let mut r = Rig::new(v[0], limits());
    r.found(v[1], addr(2), Source::Mdns);
    r.found(v[1], addr(2), Source::Gossip);
    let (c, _) = r.dial_ok(v[1]);
    let acts = r.closed_by_peer(v[1], c, CloseCode::Shutdown);
    assert_eq!(
        emitted(&acts),
        vec![
            PeerEventKind::Disconnected,
            PeerEventKind::Left,
            PeerEventKind::Lost
        ]
    );
    let p = &r.core.peers[&v[1]];
    assert_eq!(
        p.sources,
        BTreeSet::from([Source::Gossip]),
        "gossip rows are others' words"
    );
    assert!(p.retry_at().is_some_and(|t| t >= r.now + PEER_LEFT_DELAY));
    // Known by mDNS only: it leaves the table.
    let mut r = Rig::new(v[0], limits());
    r.found(v[1], addr(2), Source::Mdns);
    let (c, _) = r.dial_ok(v[1]);
    let acts = r.closed_by_peer(v[1], c, CloseCode::Shutdown);
    assert_eq!(emitted(&acts).last(), Some(&PeerEventKind::Removed));
}

#[test]
fn a_peer_at_its_limit_is_retried_only_after_the_longest_backoff() {
    let v = ids(2);
    let mut r = Rig::new(v[0], limits());
    r.found(v[1], addr(2), Source::Mdns);
    let (c, _) = r.dial_ok(v[1]);
    r.closed_by_peer(v[1], c, CloseCode::OverCapacity);
    assert_eq!(r.core.peers[&v[1]].retry_at(), Some(r.now + backoff::MAX));
}

#[test]
fn max_peers_dials_half_and_keeps_extra_inbound_for_one_exchange() {
    let v = ids(8);
    let mut r = Rig::new(
        v[0],
        Limits {
            max_peers: 4,
            ..limits()
        },
    );
    let mut dialled = Vec::new();
    for (i, id) in v[1..].iter().enumerate() {
        dialled.extend(dials(&r.found_as(
            *id,
            addr(i as u16 + 2),
            Source::Mdns,
            true,
        )));
    }
    assert_eq!(dialled.len(), 2, "dial target is half of --max-peers");
    for id in &dialled {
        r.dial_ok(*id);
    }
    let inbound: Vec<_> = v[1..]
        .iter()
        .filter(|id| !dialled.contains(id))
        .copied()
        .collect();
    r.incoming(inbound[0]);
    r.incoming(inbound[1]);
    assert_eq!(r.core.connected_count(), 4);
    let (extra, acts) = r.incoming(inbound[2]);
    assert!(acts.contains(&Action::CloseAfter {
        conn: extra,
        code: CloseCode::OverCapacity,
        after: OVER_CAPACITY_GRACE
    }));
    assert!(
        dials(&r.at(10.0).feed(Input::Tick)).is_empty(),
        "at capacity: no dials"
    );
    // A configured peer is dialled regardless.
    let acts = r.feed(Input::Connect {
        id: inbound[3],
        hosts: vec![PeerHost::Addr(addr(50))],
        ticket: 3,
    });
    assert_eq!(dials(&acts), vec![inbound[3]]);
}

#[test]
fn concurrent_dials_are_bounded_and_a_finished_dial_frees_a_slot() {
    let v = ids(20);
    let mut r = Rig::new(
        v[0],
        Limits {
            max_concurrent_dials: 4,
            ..limits()
        },
    );
    let mut started = Vec::new();
    for (i, id) in v[1..].iter().enumerate() {
        started.extend(dials(&r.found_as(
            *id,
            addr(i as u16 + 2),
            Source::Mdns,
            true,
        )));
    }
    assert_eq!(started.len(), 4);
    assert_eq!(r.core.next_deadline(r.now), Some(r.now + BLOCKED_TICK));
    let acts = r.at(0.5).dial_err(started[0], timeout());
    assert_eq!(
        dials(&acts).len(),
        1,
        "the freed slot goes to a waiting peer at once"
    );
}

#[test]
fn the_dial_rate_is_bounded_by_the_token_bucket() {
    let v = ids(30);
    let mut r = Rig::new(
        v[0],
        Limits {
            max_dials_per_sec: 5,
            ..limits()
        },
    );
    let mut n = 0;
    for (i, id) in v[1..].iter().enumerate() {
        n += dials(&r.found_as(*id, addr(i as u16 + 2), Source::Mdns, true)).len();
    }
    assert_eq!(n, 5, "one second's worth at once");
    assert_eq!(dials(&r.at(0.2).feed(Input::Tick)).len(), 1);
    assert_eq!(dials(&r.at(1.2).feed(Input::Tick)).len(), 5);
}

#[test]
fn a_flood_of_found_events_fills_the_table_and_evicts_only_unconnected_fakes() {
    let real = key(200);
    let stat = key(201);
    let mut r = Rig::new(
        key(250),
        Limits {
            max_known_peers: 16,
            max_concurrent_dials: 4,
            ..limits()
        },
    );
    r.core.add_static(stat, PeerHost::Addr(addr(900)), r.now);
    r.found(real, addr(901), Source::Mdns);
    r.dial_ok(real);
    // 500 fakes at three shared addresses.
    for n in 0..500u32 {
        let fake = SecretKey::from_bytes(&[
            (n % 251) as u8,
            (n / 251) as u8 + 1,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
        ])
        .public();
        r.at(n as f64 * 0.01)
            .found(fake, addr(1000 + (n % 3) as u16), Source::Mdns);
        assert!(r.core.peers.len() <= 16);
    }
    assert!(
        r.core.peers.contains_key(&real),
        "connected peers are never evicted"
    );
    assert!(
        r.core.peers.contains_key(&stat),
        "static peers are never evicted"
    );
    assert!(r.counter(|c| &c.peers_evicted) >= 480);
    assert!(r.core.dials_in_flight <= 4);
}

#[test]
fn connect_requests_are_answered_when_the_dial_ends() {
    let v = ids(3);
    let mut r = Rig::new(v[0], limits());
    let acts = r.feed(Input::Connect {
        id: v[0],
        hosts: vec![],
        ticket: 1,
    });
    assert_eq!(
        answers(&acts),
        vec![&Answer::Failed(RequestError::SelfConnect)]
    );
    let acts = r.feed(Input::Connect {
        id: v[1],
        hosts: vec![],
        ticket: 2,
    });
    assert_eq!(
        answers(&acts),
        vec![&Answer::Failed(RequestError::NoAddress(v[1]))]
    );

    let host = PeerHost::Addr(addr(2));
    let acts = r.feed(Input::Connect {
        id: v[1],
        hosts: vec![host.clone()],
        ticket: 3,
    });
    assert_eq!(dials(&acts), vec![v[1]]);
    assert!(answers(&acts).is_empty());
    let (_, acts) = r.dial_ok(v[1]);
    assert_eq!(answers(&acts), vec![&Answer::Connected(v[1])]);
    // Already connected: at once.
    let acts = r.feed(Input::Connect {
        id: v[1],
        hosts: vec![],
        ticket: 4,
    });
    assert_eq!(answers(&acts), vec![&Answer::Connected(v[1])]);

    // A rejected peer is tried at once when an operator asks, and the failure answers.
    r.feed(Input::Connect {
        id: v[2],
        hosts: vec![PeerHost::Addr(addr(3))],
        ticket: 5,
    });
    let acts = r.dial_err(v[2], DialError::Formation(FormationError::KeyMismatch));
    assert!(matches!(
        answers(&acts)[..],
        [Answer::Failed(RequestError::DialFailed(_))]
    ));
    let acts = r.at(1.0).feed(Input::Connect {
        id: v[2],
        hosts: vec![],
        ticket: 6,
    });
    assert_eq!(dials(&acts), vec![v[2]]);
}

#[test]
fn an_abandoned_request_no_longer_pins_the_row() {
    let v = ids(2);
    let mut r = Rig::new(v[0], limits());
    r.feed(Input::Connect {
        id: v[1],
        hosts: vec![PeerHost::Addr(addr(2))],
        ticket: 9,
    });
    r.feed(Input::Abandoned { ticket: 9 });
    assert!(r.core.peers[&v[1]].tickets.is_empty());
}

#[test]
fn a_failed_incoming_check_marks_a_known_peer_rejected_and_ignores_strangers() {
    let v = ids(3);
    let mut r = Rig::new(v[0], limits());
    r.found(v[1], addr(2), Source::Mdns);
    r.dial_err(v[1], timeout());
    let acts = r.feed(Input::IncomingFailed {
        id: v[1],
        error: FormationError::AppIdMismatch {
            ours: "a".into(),
            theirs: "b".into(),
        },
    });
    assert_eq!(emitted(&acts), vec![PeerEventKind::Rejected]);
    assert_eq!(r.state(v[1]), Some(PeerState::Rejected));
    r.feed(Input::IncomingFailed {
        id: v[2],
        error: FormationError::KeyMismatch,
    });
    assert!(r.state(v[2]).is_none(), "strangers cannot fill the table");
    assert_eq!(r.counter(|c| &c.incoming_refused), 2);
}

#[test]
fn a_dial_that_ends_after_its_peer_was_removed_is_closed() {
    let v = ids(2);
    let mut r = Rig::new(v[0], limits());
    r.found(v[1], addr(2), Source::Mdns);
    r.core.peers.remove(&v[1]);
    let (c, acts) = r.dial_ok(v[1]);
    assert_eq!(closes(&acts), vec![(c, CloseCode::Shutdown)]);
    assert_eq!(r.core.dials_in_flight, 0);
}

#[test]
fn our_own_id_is_counted_and_ignored() {
    let me = key(1);
    let mut r = Rig::new(me, limits());
    assert!(r.found(me, addr(1), Source::Mdns).is_empty());
    assert!(r.core.peers.is_empty());
    assert_eq!(r.counter(|c| &c.self_discoveries_ignored), 1);
}

#[test]
fn shutdown_closes_every_connection_and_answers_every_caller() {
    let v = ids(4);
    let mut r = Rig::new(v[0], limits());
    let mut conns = Vec::new();
    for id in &v[1..3] {
        r.found_as(*id, addr(2), Source::Mdns, true);
        conns.push(r.dial_ok(*id).0);
    }
    r.feed(Input::Connect {
        id: v[3],
        hosts: vec![PeerHost::Addr(addr(4))],
        ticket: 5,
    });
    let acts = r.feed(Input::Shutdown);
    let mut closed = closes(&acts);
    closed.sort_by_key(|(c, _)| *c);
    assert_eq!(
        closed,
        conns
            .iter()
            .map(|c| (*c, CloseCode::Shutdown))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        answers(&acts),
        vec![&Answer::Failed(RequestError::ShuttingDown)]
    );
}

#[test]
fn dead_addresses_sink_fakes_behind_a_real_peer_at_a_fresh_address() {
    let mut r = Rig::new(
        key(250),
        Limits {
            max_concurrent_dials: 2,
            max_dials_per_sec: 100,
            ..limits()
        },
    );
    let fakes: Vec<_> = (1..=6).map(key).collect();
    for f in &fakes {
        r.found_as(*f, addr(66), Source::Mdns, true);
    }
    // The first fake dial times out: its address is now dead.
    let first = r
        .core
        .peers
        .iter()
        .find(|(_, p)| p.dial.is_some())
        .map(|(id, _)| *id);
    let acts = r
        .at(2.0)
        .dial_err(first.expect("a dial is in flight"), timeout());
    let real = key(200);
    let acts2 = r.at(2.1).found_as(real, addr(3), Source::Mdns, true);
    let next: Vec<_> = dials(&acts).into_iter().chain(dials(&acts2)).collect();
    assert!(
        next.contains(&real),
        "the real peer is dialled before the fakes: {next:?}"
    );
}

#[test]
fn the_next_deadline_is_the_earliest_retry() {
    let v = ids(3);
    let mut r = Rig::new(v[0], limits());
    assert_eq!(r.core.next_deadline(r.now), None);
    r.found(v[1], addr(2), Source::Mdns);
    r.dial_err(v[1], timeout());
    let due = r.core.peers[&v[1]].retry_at().unwrap();
    assert_eq!(r.core.next_deadline(r.now), Some(due));
}

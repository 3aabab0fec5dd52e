//! Two connections to one peer, seen from both sides: the smaller id settles, the
//! larger keeps both until it has; restarts; the standby's grace.

use iroh::endpoint::{ApplicationClose, ConnectionError};

use super::*;
use crate::node::peers::rules::{RACE_WINDOW, STANDBY_GRACE};

fn peer_close(code: CloseCode) -> ConnectionError {
    ConnectionError::ApplicationClosed(ApplicationClose {
        error_code: code.varint(),
        reason: code.reason().to_vec().into(),
    })
}

fn live_conn(r: &Rig, id: EndpointId) -> Option<ConnId> {
    r.core.peers.get(&id).and_then(|p| p.live()).map(|l| l.conn)
}

fn standby_conn(r: &Rig, id: EndpointId) -> Option<ConnId> {
    r.core
        .peers
        .get(&id)
        .and_then(|p| p.standby)
        .map(|s| s.conn.conn)
}

/// Installs connection `c` on `r` (a dial of ours if `outbound`, else the peer's).
fn install(r: &mut Rig, peer: EndpointId, c: ConnId, outbound: bool) -> Vec<Action> {
    let conn = NewConn {
        id: c,
        remote: None,
        rtt: None,
    };
    if outbound {
        r.feed(Input::DialDone {
            id: peer,
            result: Ok(conn),
        })
    } else {
        r.feed(Input::Incoming { id: peer, conn })
    }
}

/// The larger id `v[1]` with conn 1 (the smaller id's dial) live since t0; the returned
/// actions are those of installing its own dial, conn 2, a second later.
fn larger_with_a_second_conn(v: &[EndpointId]) -> (Rig, Vec<Action>) {
    let mut r = Rig::new(v[1], limits());
    r.found_as(v[0], addr(1), Source::Mdns, true);
    install(&mut r, v[0], 1, false);
    let acts = install(r.at(1.0), v[0], 2, true);
    (r, acts)
}

/// Both ends of a simultaneous dial, with their actions carried between them: a close
/// on one side reaches the other at once (or when it installs that connection, if it
/// has not yet), and each side's own watcher reports its local closes.
struct Pair {
    sides: [Rig; 2],
    ids: [EndpointId; 2],
    installed: [Vec<ConnId>; 2],
    /// Connections a side closed before the other side installed them.
    closed_early: [Vec<(ConnId, CloseCode)>; 2],
    events: [Vec<PeerEventKind>; 2],
}

impl Pair {
    fn new() -> Pair {
        let v = ids(2);
        let mut sides = [Rig::new(v[0], limits()), Rig::new(v[1], limits())];
        sides[0].found_as(v[1], addr(2), Source::Mdns, true);
        sides[1].found_as(v[0], addr(1), Source::Mdns, true);
        Pair {
            sides,
            ids: [v[0], v[1]],
            installed: [vec![], vec![]],
            closed_early: [vec![], vec![]],
            events: [vec![], vec![]],
        }
    }

    /// Side `s` completes connection `c` at `secs`; `dialler` is the side that dialled it.
    fn install(&mut self, s: usize, c: ConnId, dialler: usize, secs: f64) {
        let peer = self.ids[1 - s];
        self.sides[s].at(secs);
        let acts = install(&mut self.sides[s], peer, c, dialler == s);
        self.installed[s].push(c);
        self.carry(s, acts);
        let early = std::mem::take(&mut self.closed_early[s]);
        for (conn, code) in early {
            if conn == c {
                self.closed_here(s, c, peer_close(code));
            } else {
                self.closed_early[s].push((conn, code));
            }
        }
    }

    fn closed_here(&mut self, s: usize, conn: ConnId, reason: ConnectionError) {
        let id = self.ids[1 - s];
        let acts = self.sides[s].feed(Input::Closed { id, conn, reason });
        self.carry(s, acts);
    }

    /// Carries out side `s`'s actions: its closes reach the peer.
    fn carry(&mut self, s: usize, acts: Vec<Action>) {
        self.events[s].extend(emitted(&acts));
        for (conn, code) in closes(&acts) {
            self.closed_here(s, conn, ConnectionError::LocallyClosed);
            if self.installed[1 - s].contains(&conn) {
                self.closed_here(1 - s, conn, peer_close(code));
            } else {
                self.closed_early[1 - s].push((conn, code));
            }
        }
    }

    fn tick(&mut self, secs: f64) {
        for s in 0..2 {
            self.sides[s].at(secs);
            let acts = self.sides[s].feed(Input::Tick);
            self.carry(s, acts);
        }
    }

    fn live(&self, s: usize) -> Option<ConnId> {
        live_conn(&self.sides[s], self.ids[1 - s])
    }
}

/// Every timing of a simultaneous dial that the protocol allows: each side's accept
/// completes before the dialler's (the acceptor sends the last message), and a dial
/// lasts less than [`rules::DIAL_TIMEOUT`] and starts only while its dialler has no
/// connection. Both sides must end on the same connection, with no Disconnected in
/// between and no standby left. (Each side deciding by its own clock, with a 3 s
/// window, closed each other's survivor here: the CI flake of tests/radio.rs.)

#[test]
fn both_sides_keep_the_same_connection_whatever_the_timings() {
    let grid = [0.0, 0.5, 2.0, 4.0, 7.5, 9.0, 12.0];
    let dial = crate::node::peers::rules::DIAL_TIMEOUT.as_secs_f64();
    let (c_small, c_large) = (1, 2);
    let mut cases = 0;
    for &s_out in &grid {
        for &s_in in &grid {
            for &l_in in &grid {
                for &l_out in &grid {
                    // Acceptors first; a dial ends within its timeout of the moment
                    // its dialler got the other connection (it started before).
                    let possible = l_in <= s_out
                        && s_in <= l_out
                        && l_out - l_in < dial
                        && s_out - s_in < dial;
                    if !possible {
                        continue;
                    }
                    cases += 1;
                    let mut p = Pair::new();
                    // At equal times the acceptor goes first (a stable sort).
                    let mut steps = [
                        (l_in, 1, c_small, 0),
                        (s_in, 0, c_large, 1),
                        (s_out, 0, c_small, 0),
                        (l_out, 1, c_large, 1),
                    ];
                    steps.sort_by(|a, b| a.0.total_cmp(&b.0));
                    for (t, side, c, dialler) in steps {
                        p.install(side, c, dialler, t);
                    }
                    let timing =
                        format!("small: out {s_out} in {s_in}; large: in {l_in} out {l_out}");
                    p.tick(12.0 + STANDBY_GRACE.as_secs_f64() + 1.0);
                    assert!(p.live(0).is_some(), "{timing}: small side not connected");
                    assert_eq!(p.live(0), p.live(1), "{timing}: different survivors");
                    assert_eq!(p.live(0), Some(c_small), "{timing}: the smaller id's dial");
                    for s in 0..2 {
                        assert!(
                            !p.events[s].contains(&PeerEventKind::Disconnected),
                            "{timing}: side {s} saw {:?}",
                            p.events[s]
                        );
                        assert_eq!(standby_conn(&p.sides[s], p.ids[1 - s]), None, "{timing}");
                    }
                }
            }
        }
    }
    assert!(cases > 100, "only {cases} timings tried");
}

/// The case that made the flake: the larger id completes its own dial long after it
/// accepted the smaller id's, so by its clock the two are no race and the newer wins.
/// It keeps both, uses the newer, and when the smaller id closes that one as the
/// duplicate, it switches to the other without a Disconnected and tells the protocols.
#[test]
fn the_larger_id_switches_to_the_connection_the_smaller_id_kept() {
    let v = ids(2);
    let mut r = Rig::new(v[1], limits());
    r.found_as(v[0], addr(1), Source::Mdns, true);
    install(&mut r, v[0], 1, false);
    let secs = RACE_WINDOW.as_secs_f64() + 1.0;
    let acts = install(r.at(secs), v[0], 2, true);
    assert!(
        closes(&acts).is_empty(),
        "the larger id closes nothing: {acts:?}"
    );
    assert!(acts.contains(&Action::Watch {
        id: v[0],
        conn: 2,
        announce: true
    }));
    assert_eq!(
        (live_conn(&r, v[0]), standby_conn(&r, v[0])),
        (Some(2), Some(1))
    );
    let acts = r.closed_by_peer(v[0], 2, CloseCode::Duplicate);
    assert_eq!(emitted(&acts), vec![], "no Disconnected: {acts:?}");
    assert_eq!(acts, vec![Action::Announce { id: v[0], conn: 1 }]);
    assert_eq!(
        (live_conn(&r, v[0]), standby_conn(&r, v[0])),
        (Some(1), None)
    );
    assert_eq!(r.state(v[0]), Some(PeerState::Connected));
    // opened - closed is what is open.
    assert_eq!(r.counter(|c| &c.connections_opened), 2);
    assert_eq!(r.counter(|c| &c.connections_closed), 1);
}

/// The same switch when the smaller id closes the live one because its own formation
/// check on it timed out (it gave up that dial on a lossy link after the larger id had
/// finished the check): the peer is there and uses the other connection.
#[test]
fn a_peer_that_gave_up_the_live_one_in_its_check_keeps_the_standby() {
    let v = ids(2);
    let mut r = Rig::new(v[1], limits());
    r.found_as(v[0], addr(1), Source::Mdns, true);
    install(&mut r, v[0], 1, true);
    let secs = RACE_WINDOW.as_secs_f64() + 1.0;
    install(r.at(secs), v[0], 2, false);
    assert_eq!(
        (live_conn(&r, v[0]), standby_conn(&r, v[0])),
        (Some(2), Some(1))
    );
    let acts = r.closed_by_peer(v[0], 2, CloseCode::Timeout);
    assert_eq!(emitted(&acts), vec![], "no Disconnected: {acts:?}");
    assert_eq!(acts, vec![Action::Announce { id: v[0], conn: 1 }]);
    assert_eq!(r.state(v[0]), Some(PeerState::Connected));
}

/// A reset of the live one: the peer forgot it (its close was lost on the way), and
/// the standby takes over; if the peer restarted instead, the standby's own reset
/// follows and only then is the peer disconnected.
#[test]
fn a_reset_live_connection_hands_over_to_the_standby() {
    let v = ids(2);
    let (mut r, _) = larger_with_a_second_conn(&v);
    let acts = r.feed(Input::Closed {
        id: v[0],
        conn: 1,
        reason: ConnectionError::Reset,
    });
    assert_eq!(emitted(&acts), vec![], "no Disconnected: {acts:?}");
    assert_eq!(acts, vec![Action::Announce { id: v[0], conn: 2 }]);
    assert_eq!(
        (live_conn(&r, v[0]), standby_conn(&r, v[0])),
        (Some(2), None)
    );
    let acts = r.feed(Input::Closed {
        id: v[0],
        conn: 2,
        reason: ConnectionError::Reset,
    });
    assert_eq!(emitted(&acts), vec![PeerEventKind::Disconnected]);
}

/// Within the window the larger id guesses the smaller id's choice: the new one is the
/// standby, watched (the peer may use it) but not announced; the peer's close of it is
/// no news.
#[test]
fn a_standby_is_watched_unannounced_and_its_close_is_no_news() {
    let v = ids(2);
    let (mut r, acts) = larger_with_a_second_conn(&v);
    assert_eq!(
        acts,
        vec![Action::Watch {
            id: v[0],
            conn: 2,
            announce: false
        }]
    );
    assert_eq!(
        (live_conn(&r, v[0]), standby_conn(&r, v[0])),
        (Some(1), Some(2))
    );
    let acts = r.closed_by_peer(v[0], 2, CloseCode::Duplicate);
    assert!(acts.is_empty(), "{acts:?}");
    assert_eq!(
        (live_conn(&r, v[0]), standby_conn(&r, v[0])),
        (Some(1), None)
    );
    assert_eq!(
        r.core.next_deadline(r.now),
        None,
        "no grace left to wait for"
    );
}

#[test]
fn a_standby_nobody_settles_is_closed_after_the_grace() {
    let v = ids(2);
    let (mut r, _) = larger_with_a_second_conn(&v);
    let grace = 1.0 + STANDBY_GRACE.as_secs_f64();
    assert_eq!(
        r.core.next_deadline(r.now),
        Some(r.t0 + Duration::from_secs_f64(grace))
    );
    assert!(closes(&r.at(grace - 0.1).feed(Input::Tick)).is_empty());
    let acts = r.at(grace).feed(Input::Tick);
    assert_eq!(closes(&acts), vec![(2, CloseCode::Duplicate)]);
    assert!(emitted(&acts).is_empty());
    assert_eq!(r.state(v[0]), Some(PeerState::Connected));
    assert_eq!(r.counter(|c| &c.duplicates_closed), 1);
}

/// The live connection ends in a way that says nothing of the peer's choice (a
/// timeout: the peer may be gone): Disconnected, and the standby goes too.
#[test]
fn a_lost_live_connection_takes_the_standby_with_it() {
    let v = ids(2);
    let (mut r, _) = larger_with_a_second_conn(&v);
    let acts = r.feed(Input::Closed {
        id: v[0],
        conn: 1,
        reason: ConnectionError::TimedOut,
    });
    assert_eq!(emitted(&acts), vec![PeerEventKind::Disconnected]);
    assert_eq!(closes(&acts), vec![(2, CloseCode::Duplicate)]);
    assert!(!r.core.peers[&v[0]].is_connected());
    assert_eq!(standby_conn(&r, v[0]), None);
    // DisconnectPeer closes both as well.
    let (mut r, _) = larger_with_a_second_conn(&v);
    let acts = r.feed(Input::Disconnect {
        id: v[0],
        ticket: 1,
    });
    let mut closed = closes(&acts);
    closed.sort_by_key(|(c, _)| *c);
    assert_eq!(
        closed,
        vec![(1, CloseCode::Disconnect), (2, CloseCode::Disconnect)]
    );
}

/// The peer restarted (same identity) and dialled in while our connection to it is
/// stale; its new connection must win on whichever side settles.
#[test]
fn a_restarted_peer_s_new_connection_wins_on_both_sides() {
    let v = ids(2);
    let late = RACE_WINDOW.as_secs_f64() + 50.0;
    for (me, peer) in [(v[1], v[0]), (v[0], v[1])] {
        for old_outbound in [true, false] {
            let mut r = Rig::new(me, limits());
            r.found_as(peer, addr(1), Source::Mdns, true);
            install(&mut r, peer, 1, old_outbound);
            let acts = install(r.at(late), peer, 2, false);
            let case = format!("settles: {}, old outbound: {old_outbound}", me == v[0]);
            assert_eq!(live_conn(&r, peer), Some(2), "{case}");
            assert!(!emitted(&acts).contains(&PeerEventKind::Disconnected));
            // The old one is closed now, or after the grace (the restarted peer does
            // not know it, so nobody else will).
            let acts = r.at(late + STANDBY_GRACE.as_secs_f64()).feed(Input::Tick);
            let closed_now = r.counter(|c| &c.connections_closed);
            assert_eq!(closed_now, 1, "{case}: {acts:?}");
            assert_eq!(standby_conn(&r, peer), None, "{case}");
            assert_eq!(live_conn(&r, peer), Some(2), "{case}");
        }
    }
}

/// Two connections in the same direction: the dialler gave up the older one; the side
/// that sees both closes it at once, whoever settles opposite ones.
#[test]
fn a_redial_in_the_same_direction_replaces_the_older_at_once() {
    let v = ids(2);
    for (me, peer) in [(v[1], v[0]), (v[0], v[1])] {
        let mut r = Rig::new(me, limits());
        r.found_as(peer, addr(1), Source::Mdns, true);
        install(&mut r, peer, 1, false);
        let acts = install(r.at(0.5), peer, 2, false);
        assert_eq!(closes(&acts), vec![(1, CloseCode::Duplicate)]);
        assert_eq!(
            (live_conn(&r, peer), standby_conn(&r, peer)),
            (Some(2), None)
        );
    }
    // A standby in the direction the peer dials again goes too.
    let mut r = Rig::new(v[1], limits());
    r.found_as(v[0], addr(1), Source::Mdns, true);
    install(&mut r, v[0], 1, false);
    install(r.at(0.5), v[0], 2, true);
    assert_eq!(standby_conn(&r, v[0]), Some(2));
    let acts = install(r.at(1.0), v[0], 3, true);
    assert_eq!(closes(&acts), vec![(2, CloseCode::Duplicate)]);
    assert_eq!(
        (live_conn(&r, v[0]), standby_conn(&r, v[0])),
        (Some(1), Some(3))
    );
}

//! A flood of records nobody vouched for: proven peers dial first and keep their rows,
//! and one address range cannot take every dial or every turn.

use std::collections::BTreeMap;

use super::*;

/// The `n`th fake's id. Ids repeat after [`FAKE_IDS`] (making a key costs a scalar
/// multiplication, slow in a debug build); far more than a table holds, so a repeated
/// id was evicted long before and arrives as a new record.
fn fake(n: u32) -> EndpointId {
    static POOL: std::sync::OnceLock<Vec<EndpointId>> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        (0..FAKE_IDS)
            .map(|i| {
                let mut b = [9u8; 32];
                b[..4].copy_from_slice(&i.to_be_bytes());
                SecretKey::from_bytes(&b).public()
            })
            .collect()
    });
    pool[(n % FAKE_IDS) as usize]
}

const FAKE_IDS: u32 = 2048;

/// The `n`th fake's address: all in 198.18.0.0/24, each one untried (its own port), as
/// an attacker that varies its addresses announces them.
fn fake_addr(n: u32) -> SocketAddr {
    SocketAddr::from((
        [198, 18, 0, (n % 250 + 1) as u8],
        10_000 + (n % 50_000) as u16,
    ))
}

fn flood_limits(max_known_peers: usize) -> Limits {
    Limits {
        max_known_peers,
        max_concurrent_dials: 32,
        max_dials_per_sec: 20,
        ..limits()
    }
}

/// A victim under a flood: new fakes at a steady rate, a tick every 100 ms as the
/// driver sends them under load, and every dial but those to peers in `up` finds
/// nobody and fails after the first dial's wait for an answer.
struct Flood {
    rig: Rig,
    next_fake: u32,
    /// Dials started, in order, with the time.
    dialled: Vec<(f64, EndpointId)>,
    /// Dials in flight that fail at the given time.
    failing: BTreeMap<EndpointId, f64>,
    /// Real peers whose dials are left in flight for the test to finish.
    up: Vec<EndpointId>,
}

impl Flood {
    fn new(limits: Limits) -> Flood {
        Flood {
            rig: Rig::new(key(250), limits),
            next_fake: 0,
            dialled: Vec::new(),
            failing: BTreeMap::new(),
            up: Vec::new(),
        }
    }

    fn note(&mut self, t: f64, acts: &[Action]) {
        for id in dials(acts) {
            self.dialled.push((t, id));
            if !self.up.contains(&id) {
                self.failing
                    .insert(id, t + FIRST_DIAL_TIMEOUT.as_secs_f64());
            }
        }
    }

    /// Runs from `from` to `until` seconds with `rate` new fakes a second.
    fn run(&mut self, from: f64, until: f64, rate: f64) {
        let step = 1.0 / rate;
        let mut t = from;
        let mut next_tick = from;
        while t < until {
            let due: Vec<EndpointId> = self
                .failing
                .iter()
                .filter(|(_, at)| **at <= t)
                .map(|(id, _)| *id)
                .collect();
            for id in due {
                self.failing.remove(&id);
                let acts = self.rig.at(t).dial_err(id, timeout());
                self.note(t, &acts);
            }
            let n = self.next_fake;
            self.next_fake += 1;
            let acts = self.rig.at(t).found(fake(n), fake_addr(n), Source::Mdns);
            self.note(t, &acts);
            if t >= next_tick {
                let acts = self.rig.at(t).feed(Input::Tick);
                self.note(t, &acts);
                next_tick += BLOCKED_TICK.as_secs_f64();
            }
            t += step;
        }
    }

    fn found(&mut self, t: f64, id: EndpointId, a: SocketAddr) {
        let acts = self.rig.at(t).found(id, a, Source::Mdns);
        self.note(t, &acts);
    }

    /// The first peer dialled at or after `t`.
    fn first_dial_from(&self, t: f64) -> Option<EndpointId> {
        self.dialled.iter().find(|(at, _)| *at >= t).map(|d| d.1)
    }
}

#[test]
fn a_real_peer_found_during_a_flood_from_one_range_is_dialled_next() {
    // 400 fakes a second at untried addresses, 20 dial tokens a second: the fakes
    // alone would take every token for ever.
    let real = key(200);
    let mut f = Flood::new(flood_limits(256));
    f.up.push(real);
    f.run(0.0, 3.0, 400.0);
    assert_eq!(f.rig.core.peers.len(), 256, "the table is full of fakes");
    assert!(f.rig.counter(|c| &c.peers_evicted) > 800);
    f.found(3.0, real, addr(3));
    // Due at once, or after the tie-break if its id is the smaller.
    let due = (f.rig.core.peers[&real].retry_at())
        .map_or(3.0, |t| t.duration_since(f.rig.t0).as_secs_f64());
    f.run(3.0, 4.0, 400.0);
    assert_eq!(
        f.first_dial_from(due),
        Some(real),
        "the real peer, at an address of its own range, is the next dial once due"
    );
    assert!(f.rig.core.peers.contains_key(&real), "it is being dialled");
    // It answers: proven from now on.
    let (_, acts) = f.rig.dial_ok(real);
    assert!(emitted(&acts).contains(&PeerEventKind::Connected));
}

#[test]
fn records_nobody_vouched_for_never_evict_a_proven_peer_and_dial_after_it() {
    // Two proven peers, neither connected nor being dialled when the flood comes: one
    // that connected once and is lost now (its redials find nobody for a while), one
    // that an operator asked for with ConnectPeer and that did not answer yet.
    let known = key(200);
    let asked = key(201);
    let mut f = Flood::new(Limits {
        max_concurrent_dials: 4,
        ..flood_limits(16)
    });
    f.found(0.0, known, addr(3));
    let (c, _) = f.rig.dial_ok(known);
    f.rig.feed(Input::Closed {
        id: known,
        conn: c,
        reason: ConnectionError::TimedOut,
    });
    let acts = f.rig.connect(asked, Some(addr(4)), 7);
    f.note(0.0, &acts);
    f.run(0.0, 20.0, 400.0);
    let evicted = f.rig.counter(|c| &c.peers_evicted);
    assert!(evicted > 5000, "{evicted} evicted");
    for (id, what) in [(known, "connected once"), (asked, "ConnectPeer")] {
        let p = f.rig.core.peers.get(&id);
        assert!(p.is_some(), "the {what} peer was evicted by fakes");
        assert!(p.is_some_and(|p| p.backoff.failures() > 0));
    }
    // Each time the lost peer's redial came due, it went before every fake.
    let dials_of_known: Vec<f64> = (f.dialled.iter())
        .filter(|d| d.1 == known)
        .map(|d| d.0)
        .collect();
    assert!(dials_of_known.len() >= 3, "{dials_of_known:?}");
    let mut t = 20.0;
    for _ in 0..3 {
        if f.rig.core.peers[&known].dial.is_some() {
            f.run(t, t + 2.5, 400.0);
            t += 2.5;
        }
        let due = (f.rig.core.peers[&known].retry_at())
            .expect("the lost peer waits for a redial")
            .duration_since(f.rig.t0)
            .as_secs_f64();
        let mut until = due.max(t) + 1.0;
        f.run(t, until, 400.0);
        // Every slot may be taken by fakes when it comes due (the backoff's jitter
        // decides): it then goes when the first of them frees, at most one first
        // dial's wait later.
        let latest = due + FIRST_DIAL_TIMEOUT.as_secs_f64() + 1.0;
        while f.first_dial_from(due).is_none() && until < latest {
            f.run(until, until + 0.5, 400.0);
            until += 0.5;
        }
        let first = f.first_dial_from(due);
        assert!(
            first == Some(known) || first == Some(asked),
            "a fake went first: {first:?}"
        );
        t = until;
    }
}

#[test]
fn one_address_range_leaves_a_dial_slot_for_another() {
    let mut r = Rig::new(
        key(250),
        Limits {
            max_concurrent_dials: 4,
            max_dials_per_sec: 100,
            ..limits()
        },
    );
    let mut started = 0;
    for n in 0..10 {
        started += dials(&r.found_as(fake(n), fake_addr(n), Source::Mdns, true)).len();
    }
    assert_eq!(started, 3, "one range takes all slots but one");
    assert_eq!(r.core.dials_in_flight, 3);
    let real = key(200);
    let acts = r.found_as(real, addr(3), Source::Mdns, true);
    assert_eq!(dials(&acts), vec![real], "another range gets the last slot");
    // A proven peer is not bound by the ranges: after a fake's dial ends it takes the
    // slot before the fakes waiting in line.
    let (c, _) = r.dial_ok(real);
    let _ = r.feed(Input::Closed {
        id: real,
        conn: c,
        reason: ConnectionError::TimedOut,
    });
    let retry = r.core.peers[&real].retry_at().expect("a redial is planned");
    r.now = retry;
    let first_fake = r
        .core
        .peers
        .iter()
        .find(|(_, p)| p.dial.is_some())
        .map(|(id, _)| *id)
        .expect("fakes are being dialled");
    let acts = r.dial_err(first_fake, timeout());
    assert_eq!(dials(&acts).first(), Some(&real));
}

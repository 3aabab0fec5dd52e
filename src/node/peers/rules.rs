//! The peer manager's rules as plain functions and constants: which of two
//! connections survives, how long the first dial waits, how many peers a node dials
//! itself, and what a connection's close means for redialling. Both sides of a
//! connection evaluate these with the same inputs and so agree without talking.

use std::time::Duration;

use iroh::{endpoint::ConnectionError, EndpointId};

use crate::node::formation::CloseCode;

/// Most addresses kept per peer; discovery sources may report more.
pub const MAX_ADDRS_PER_PEER: usize = 16;
/// How long a dial may take, QUIC and formation check together.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(8);
/// How long the first dial of a discovered peer that never connected waits for the
/// peer's first answer in the QUIC handshake, on a fast link. On a LAN that takes
/// milliseconds; a flood of fake announcements at unreachable addresses would otherwise
/// hold every dial slot for [`DIAL_TIMEOUT`]. A peer that answered is real (something
/// speaks QUIC with our protocol there) and gets the rest of [`DIAL_TIMEOUT`]; a slow
/// link gets a longer wait for the answer, see [`dial_timeouts`].
pub const FIRST_DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// On a slow link, a first dial waits this many link round trips for the answer (when
/// that is longer than [`FIRST_DIAL_TIMEOUT`]). QUIC resends a lost Initial after
/// about 1 s, then 2 s, then 4 s (its first probe timeout assumes a 333 ms round trip
/// and doubles); at 30 % loss and 300 ms round trips, 16 round trips (4.8 s) cover
/// three attempts, where 2 s covered two, and cut about one handshake in four.
pub const ANSWER_RTTS: u32 = 16;

/// The deadlines of one dial, from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DialTimeouts {
    /// Until the peer's first answer in the QUIC handshake. Nothing answers at a
    /// spoofed address, so this is what bounds the cost of fake announcements.
    pub answer: Duration,
    /// For everything: name resolution, QUIC handshake and formation check.
    pub total: Duration,
}

/// The deadlines of a dial. `first`: a discovered peer that never connected and never
/// failed (what a fake announcement looks like). `link_rtt`: the round-trip time seen
/// on this node's connections (see `LinkRtt`), if there are any.
pub fn dial_timeouts(first: bool, link_rtt: Option<Duration>) -> DialTimeouts {
    let answer = if first {
        let by_rtt = link_rtt.map_or(Duration::ZERO, |r| r.saturating_mul(ANSWER_RTTS));
        by_rtt.clamp(FIRST_DIAL_TIMEOUT, DIAL_TIMEOUT)
    } else {
        DIAL_TIMEOUT
    };
    DialTimeouts {
        answer,
        total: DIAL_TIMEOUT,
    }
}

/// The round-trip time of this node's links, smoothed over the connections it made or
/// accepted (each one's RTT at the end of its handshake). One bad sample moves it by a
/// quarter; a link that becomes fast again brings it down as fast.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkRtt(Option<Duration>);

impl LinkRtt {
    pub fn sample(&mut self, rtt: Duration) {
        self.0 = Some(match self.0 {
            None => rtt,
            Some(old) => (old * 3 + rtt) / 4,
        });
    }

    pub fn get(&self) -> Option<Duration> {
        self.0
    }
}
/// Addresses remembered as dead (a first dial there timed out or was refused), at most.
pub const MAX_DEAD_ADDRS: usize = 4096;
/// How long an address is remembered as dead.
pub const DEAD_ADDR_TTL: Duration = Duration::from_secs(600);
/// How long a row that only ConnectPeer knows, and that never connected, is kept and
/// redialled: a typo or a peer that is gone for good must not be dialled for ever.
pub const API_PEER_TTL: Duration = Duration::from_secs(600);
/// Two connections to one peer made within this window count as a simultaneous dial.
/// Longer than a dial can take ([`DIAL_TIMEOUT`]): a peer only dials while it has no
/// live connection to us, so a connection of its that arrives later than a dial can
/// last after ours cannot be part of the same race; it means the peer lost ours
/// (it restarted).
pub const RACE_WINDOW: Duration = Duration::from_secs(10);
/// How long the side that does not settle duplicates ([`settles_duplicates`]) keeps a
/// second connection to a peer as a standby, waiting for the peer to close one of the
/// two. The peer settles when it has both, at the latest a dial's time
/// ([`DIAL_TIMEOUT`]) after we do; a standby still there after this is one the peer
/// never completed (its dial gave up), or its close was lost.
pub const STANDBY_GRACE: Duration = Duration::from_secs(15);

/// Whether this side settles duplicate connections to `peer` that run in opposite
/// directions (a simultaneous dial): the smaller endpoint id does, alone, and closes
/// the loser; the other side keeps both until then. Two sides that each decide by
/// their own clock can disagree (their connections complete seconds apart on a lossy
/// link, so one sees a race and the other a stale connection) and close each other's
/// survivor; one decider cannot disagree with itself.
pub fn settles_duplicates(me: &EndpointId, peer: &EndpointId) -> bool {
    me.as_bytes() < peer.as_bytes()
}

/// Which of two connections to one peer survives:
/// - in the same direction: the newer (the dialler only dials when it has no live
///   connection, so it gave up the older one);
/// - in opposite directions, made within [`RACE_WINDOW`] of each other (a
///   simultaneous dial): the one dialled by the smaller endpoint id. The smaller id
///   settles such duplicates ([`settles_duplicates`]), and its own dial completes only
///   after the peer accepted it, so the peer surely holds the survivor when the
///   loser's close arrives;
/// - otherwise the newer one: the older one is stale (the peer restarted, or its half
///   died unnoticed).
///
/// The side that does not settle uses the same rule only to guess which one to use
/// until the peer has settled.
///
/// Returns true if the new connection should replace the old one.
pub fn survivor(
    me: &EndpointId,
    peer: &EndpointId,
    old_outbound: bool,
    new_outbound: bool,
    age_of_old: Duration,
) -> bool {
    if age_of_old > RACE_WINDOW || old_outbound == new_outbound {
        return true;
    }
    let dialer = |outbound: bool| if outbound { me } else { peer };
    dialer(new_outbound).as_bytes() < dialer(old_outbound).as_bytes()
}

/// Whether a standby connection takes over when the live one ends like this: the peer
/// closed the live one as a duplicate (it kept the standby), its formation check on it
/// timed out (on a lossy link the peer gave that dial up, seconds after this side
/// finished its own check: tests/radio.rs saw it at 35 % loss), or its QUIC stack
/// dropped it (a dial it gave up). All say the peer is there. So does a reset, more
/// often than not: the peer closed the live one and its close was lost, so the next
/// packet on it met a peer that had forgotten it (tests/radio.rs at 35 % loss). If the
/// peer restarted instead, the standby is as dead; the protocols' first packet on it
/// meets the same reset within a round trip, and then the peer is disconnected. Only
/// a timeout of our own says the peer may be gone, and the standby with it.
pub fn promotes_standby(reason: &ConnectionError) -> bool {
    match reason {
        ConnectionError::Reset => true,
        ConnectionError::ApplicationClosed(close) => {
            let code = close.error_code.into_inner();
            code == 0
                || matches!(
                    CloseCode::from_code(code),
                    Some(CloseCode::Duplicate | CloseCode::Timeout)
                )
        }
        _ => false,
    }
}

/// How many connections a node opens itself to discovered peers under `--max-peers N`:
/// half of N (at least 1). The other half is left for peers that dial in, so a node that
/// joins late still finds peers with room, while every node dialling at most N/2 keeps
/// the formation at about (nodes x N/2) connections instead of nodes^2/2. Configured
/// peers (`--peer`, ConnectPeer) are dialled regardless, and a connection beyond N is
/// closed with [`CloseCode::OverCapacity`] unless it is to a configured peer.
pub fn dial_target(max_peers: usize) -> usize {
    max_peers.div_ceil(2).max(1)
}

/// How long a connection beyond `--max-peers` is kept before it is closed with
/// [`CloseCode::OverCapacity`]: long enough for one gossip exchange.
pub const OVER_CAPACITY_GRACE: Duration = Duration::from_secs(10);

/// How long the larger endpoint id waits before dialling a peer that discovery just
/// reported. Discovery is mostly symmetric (gossip, mDNS and DNS tell both sides about
/// each other at about the same moment), and two simultaneous dials cost two handshakes
/// of which one is thrown away. Letting the smaller id go first avoids most such races
/// on a LAN, where its dial takes milliseconds; if it never dials (it did not discover
/// us), the larger one dials after this delay.
///
/// Short, not the 2 s it was: a simultaneous dial no longer costs more than the spare
/// handshake (only the smaller id settles it, see [`settles_duplicates`], so neither
/// side loses the pair), while on a lossy radio link the wait was paid in full by every
/// pair whose smaller id heard the other's announcement late (mDNS under 30 % loss:
/// seconds) or whose dial needed QUIC's resends; there the larger id's dial is a second
/// chance that runs beside the first.
pub const TIE_BREAK_DELAY: Duration = Duration::from_millis(500);

/// Delay before the first dial of a newly discovered peer; see [`TIE_BREAK_DELAY`].
/// `at_once` (a configured peer, or one that cannot have found us yet, such as the
/// answers to a joining node's first mDNS query) skips the delay: there is no
/// simultaneous dial to avoid, and waiting would make every join take as long as the
/// peers need to hear our announcement (probing and announcing take ~1 s).
pub fn first_dial_delay(me: &EndpointId, peer: &EndpointId, at_once: bool) -> Duration {
    if at_once || me.as_bytes() < peer.as_bytes() {
        Duration::ZERO
    } else {
        TIE_BREAK_DELAY
    }
}

/// How long to wait before redialling a peer that closed with "shutdown". It is leaving
/// on purpose: its sources usually forget it within this time (mDNS at once, on the
/// `left` event; others on their goodbye), which removes it, instead of a redial that
/// can only fail and keeps the entry alive until the dial times out. A peer that
/// restarts is still redialled.
pub const PEER_LEFT_DELAY: Duration = Duration::from_secs(2);

/// What a connection's end means for the peer's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseKind {
    /// The peer shut down: redial after [`PEER_LEFT_DELAY`] at the earliest.
    PeerLeft,
    /// Gone without a word (timeout, reset): redial with backoff.
    Lost,
    /// The peer is at its --max-peers: try again only after the longest backoff.
    Full,
    PeerDisconnected,
    LocalDisconnect,
    Rejected,
}

/// Why a connection ended, in words for logs and `watch`, and what it means.
pub fn describe_close(reason: &ConnectionError) -> (String, CloseKind) {
    match reason {
        ConnectionError::ApplicationClosed(close) => {
            let code = CloseCode::from_code(close.error_code.into_inner());
            match code {
                Some(CloseCode::Shutdown) => ("the peer shut down".into(), CloseKind::PeerLeft),
                Some(CloseCode::Disconnect) => (
                    "the peer disconnected us by request".into(),
                    CloseKind::PeerDisconnected,
                ),
                Some(CloseCode::Duplicate) => ("closed as a duplicate".into(), CloseKind::Lost),
                Some(CloseCode::OverCapacity) => (
                    "the peer's connection limit is reached".into(),
                    CloseKind::Full,
                ),
                Some(c) if c.is_rejection() => (
                    format!(
                        "the peer rejected us: {}",
                        String::from_utf8_lossy(c.reason())
                    ),
                    CloseKind::Rejected,
                ),
                Some(c) => (
                    String::from_utf8_lossy(c.reason()).into_owned(),
                    CloseKind::Lost,
                ),
                None if close.error_code.into_inner() == 0 => (
                    "dropped by the peer's QUIC stack without a reason (a dial it gave up?)".into(),
                    CloseKind::Lost,
                ),
                None => (
                    format!("closed by the peer with unknown code {}", close.error_code),
                    CloseKind::Lost,
                ),
            }
        }
        ConnectionError::TimedOut => (
            "timed out: no answer to a liveness probe or within the QUIC idle timeout".into(),
            CloseKind::Lost,
        ),
        ConnectionError::Reset => ("reset by the peer (it restarted)".into(), CloseKind::Lost),
        ConnectionError::LocallyClosed => ("closed locally".into(), CloseKind::LocalDisconnect),
        other => (other.to_string(), CloseKind::Lost),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iroh::SecretKey;

    #[test]
    fn a_first_dial_waits_longer_for_an_answer_on_a_slow_link() {
        let ms = Duration::from_millis;
        // Unknown link, or a LAN: the short wait that bounds fake announcements.
        assert_eq!(dial_timeouts(true, None).answer, FIRST_DIAL_TIMEOUT);
        assert_eq!(dial_timeouts(true, Some(ms(1))).answer, FIRST_DIAL_TIMEOUT);
        // A radio link with 300 ms round trips: 16 of them.
        assert_eq!(dial_timeouts(true, Some(ms(300))).answer, ms(4800));
        // Never beyond the whole dial's timeout.
        assert_eq!(dial_timeouts(true, Some(ms(5000))).answer, DIAL_TIMEOUT);
        // Not a first dial: no separate wait for the answer.
        let later = dial_timeouts(false, Some(ms(1)));
        assert_eq!((later.answer, later.total), (DIAL_TIMEOUT, DIAL_TIMEOUT));
        assert_eq!(dial_timeouts(true, None).total, DIAL_TIMEOUT);
    }

    #[test]
    fn the_link_rtt_follows_the_samples_smoothly() {
        let ms = Duration::from_millis;
        let mut r = LinkRtt::default();
        assert_eq!(r.get(), None);
        r.sample(ms(200));
        assert_eq!(r.get(), Some(ms(200)));
        r.sample(ms(600));
        assert_eq!(r.get(), Some(ms(300)));
        for _ in 0..20 {
            r.sample(ms(1));
        }
        assert!(r.get().unwrap() < ms(2), "{:?}", r.get());
    }

    #[test]
    fn survivor_is_the_same_on_both_sides() {
        let a = SecretKey::generate().public();
        let b = SecretKey::generate().public();
        let young = Duration::from_millis(10);
        // a holds an outbound conn (a dialled) and receives b's dial; b holds its
        // outbound and receives a's. Both must keep the conn dialled by min(a, b).
        let a_keeps_new = survivor(&a, &b, true, false, young);
        let b_keeps_new = survivor(&b, &a, true, false, young);
        let smaller_is_a = a.as_bytes() < b.as_bytes();
        // On a, "new" is b's dial; keep it iff b is smaller.
        assert_eq!(a_keeps_new, !smaller_is_a);
        // On b, "new" is a's dial; keep it iff a is smaller.
        assert_eq!(b_keeps_new, smaller_is_a);
    }

    #[test]
    fn stale_connection_loses_to_a_new_one() {
        let a = SecretKey::generate().public();
        let b = SecretKey::generate().public();
        assert!(survivor(&a, &b, true, false, Duration::from_secs(60)));
        assert!(survivor(&a, &b, false, true, Duration::from_secs(60)));
        // Same direction twice: the newer is the peer's redial.
        assert!(survivor(&a, &b, false, false, Duration::from_millis(1)));
    }

    #[test]
    fn only_the_larger_id_defers_its_first_dial() {
        let a = SecretKey::generate().public();
        let b = SecretKey::generate().public();
        let (small, large) = if a.as_bytes() < b.as_bytes() {
            (a, b)
        } else {
            (b, a)
        };
        assert_eq!(first_dial_delay(&small, &large, false), Duration::ZERO);
        assert_eq!(first_dial_delay(&large, &small, false), TIE_BREAK_DELAY);
        assert_eq!(first_dial_delay(&large, &small, true), Duration::ZERO);
    }

    #[test]
    fn dial_target_leaves_room_for_inbound() {
        assert_eq!(dial_target(1), 1);
        assert_eq!(dial_target(2), 1);
        assert_eq!(dial_target(7), 4);
        assert_eq!(dial_target(8), 4);
        // 200 nodes with --max-peers 8 dial at most 200 * 4 connections, not 200^2 / 2.
        assert!(200 * dial_target(8) < 200 * 199 / 2);
    }

    #[test]
    fn close_codes_are_classified() {
        use iroh::endpoint::ApplicationClose;
        let close = |c: CloseCode| {
            ConnectionError::ApplicationClosed(ApplicationClose {
                error_code: c.varint(),
                reason: c.reason().to_vec().into(),
            })
        };
        assert!(matches!(
            describe_close(&close(CloseCode::KeyMismatch)).1,
            CloseKind::Rejected
        ));
        assert!(matches!(
            describe_close(&close(CloseCode::Disconnect)).1,
            CloseKind::PeerDisconnected
        ));
        assert!(matches!(
            describe_close(&close(CloseCode::Shutdown)).1,
            CloseKind::PeerLeft
        ));
        assert!(matches!(
            describe_close(&ConnectionError::TimedOut).1,
            CloseKind::Lost
        ));
        assert!(matches!(
            describe_close(&close(CloseCode::OverCapacity)).1,
            CloseKind::Full
        ));
    }

    #[test]
    fn a_dropped_connection_never_reads_as_a_departure() {
        // noq closes a connection dropped without a close with application code 0.
        let dropped = ConnectionError::ApplicationClosed(iroh::endpoint::ApplicationClose {
            error_code: iroh::endpoint::VarInt::from_u32(0),
            reason: Vec::new().into(),
        });
        assert_eq!(describe_close(&dropped).1, CloseKind::Lost);
        assert_ne!(CloseCode::Shutdown.varint().into_inner(), 0);
    }
}

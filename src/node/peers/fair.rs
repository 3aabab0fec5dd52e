//! Fair shares of the dials for peers nobody has vouched for, by address range.
//!
//! A flood of spoofed records arrives from one attacker, and its fake addresses, chosen
//! by the attacker, mostly fall in few address ranges. A real peer's first record looks
//! the same as a fake (an mDNS record with the right app id), but it comes from its own
//! address. So among unproven peers the dialler takes address ranges in turn: the range
//! served longest ago (or never) goes first, whatever the number of records in each, and
//! one range may hold at most all dial slots but one with dials to untried addresses.
//! A range is the IPv4 /24 or the IPv6 /64 of a peer's smallest address (IPv4 first).
//!
//! This does not help against a forger that picks every fake's address in another range
//! or inside the real peers' own range; there the dead-address memory
//! ([`super::dead`]) and the order by proof ([`super::row::Peer::tier`]) still hold.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

/// Most ranges remembered; beyond it, those not served for [`RANGE_MEMORY`] are
/// forgotten (and if that is not enough, all).
const MAX_RANGES: usize = 4096;
/// How long a range's last dial is remembered for the turn order.
const RANGE_MEMORY: Duration = Duration::from_secs(60);

/// An address range: an IPv4 /24 or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Range {
    V4([u8; 3]),
    V6([u8; 8]),
}

/// The range of a peer's addresses: that of the smallest (IPv4 sorts first). None
/// without an address (a peer known by host name only).
pub(super) fn range_of<'a>(addrs: impl IntoIterator<Item = &'a SocketAddr>) -> Option<Range> {
    addrs
        .into_iter()
        .map(|a| match a.ip().to_canonical() {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                Range::V4([o[0], o[1], o[2]])
            }
            IpAddr::V6(v6) => {
                let mut p = [0u8; 8];
                p.copy_from_slice(&v6.octets()[..8]);
                Range::V6(p)
            }
        })
        .min()
}

/// When each range was last served, and its dials to untried addresses in flight.
#[derive(Debug, Default)]
pub(super) struct Ranges {
    served: HashMap<Range, Instant>,
    untried_in_flight: HashMap<Range, u32>,
}

impl Ranges {
    /// When a dial to an unproven peer in `r` last started; None: never (or long ago).
    pub(super) fn last_served(&self, r: Option<Range>) -> Option<Instant> {
        r.and_then(|r| self.served.get(&r).copied())
    }

    /// Dials to untried addresses in `r` now in flight.
    pub(super) fn untried(&self, r: Option<Range>) -> u32 {
        r.and_then(|r| self.untried_in_flight.get(&r).copied())
            .unwrap_or(0)
    }

    /// A dial to an unproven peer in `r` starts; `untried`: to an untried address.
    pub(super) fn started(&mut self, r: Range, untried: bool, now: Instant) {
        if self.served.len() >= MAX_RANGES && !self.served.contains_key(&r) {
            self.served
                .retain(|_, t| now.saturating_duration_since(*t) < RANGE_MEMORY);
            if self.served.len() >= MAX_RANGES {
                self.served.clear();
            }
        }
        self.served.insert(r, now);
        if untried {
            *self.untried_in_flight.entry(r).or_default() += 1;
        }
    }

    /// A dial counted by [`Ranges::started`] as untried ended.
    pub(super) fn untried_ended(&mut self, r: Range) {
        if let Some(n) = self.untried_in_flight.get_mut(&r) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.untried_in_flight.remove(&r);
            }
        }
    }
}

/// How many dials to untried addresses one range may hold: all slots but one, so that
/// another range, or a proven peer, always finds one.
pub(super) fn range_share(max_concurrent_dials: usize) -> u32 {
    max_concurrent_dials.saturating_sub(1).max(1) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_a_slash_24_or_a_slash_64_and_ipv4_goes_first() {
        let a = SocketAddr::from(([10, 77, 0, 3], 9470));
        let b = SocketAddr::from(([10, 77, 0, 200], 1));
        let c = SocketAddr::from(([10, 77, 1, 3], 9470));
        assert_eq!(range_of([&a]), range_of([&b]));
        assert_ne!(range_of([&a]), range_of([&c]));
        let v6: SocketAddr = "[fe80::1:2:3:4]:9470".parse().unwrap();
        let v6b: SocketAddr = "[fe80::9:9:9:9]:9470".parse().unwrap();
        assert_eq!(range_of([&v6]), range_of([&v6b]));
        assert_eq!(range_of([&v6, &a]), range_of([&a]));
        assert_eq!(range_of(std::iter::empty::<&SocketAddr>()), None);
    }

    #[test]
    fn untried_dials_are_counted_per_range_and_memory_is_bounded() {
        let now = Instant::now();
        let mut r = Ranges::default();
        let x = Range::V4([198, 18, 0]);
        r.started(x, true, now);
        r.started(x, false, now);
        assert_eq!(r.untried(Some(x)), 1);
        assert_eq!(r.last_served(Some(x)), Some(now));
        r.untried_ended(x);
        assert_eq!(r.untried(Some(x)), 0);
        for i in 0..(MAX_RANGES as u32 + 10) {
            let b = i.to_be_bytes();
            r.started(Range::V4([b[1], b[2], b[3]]), false, now);
        }
        assert!(r.served.len() <= MAX_RANGES);
        assert_eq!(range_share(32), 31);
        assert_eq!(range_share(1), 1);
    }
}

//! Addresses where a first dial to a never-connected peer found nobody.
//!
//! A flood of spoofed announcements reuses addresses (a LAN has few), so after one dead
//! dial per address every further fake at that address sinks behind a peer at a fresh
//! address: a real peer that appears during the flood is dialled next, not after
//! thousands of fakes. Bounded ([`MAX_DEAD_ADDRS`], oldest dropped) and forgotten after
//! [`DEAD_ADDR_TTL`] or as soon as a connection over the address succeeds.

use std::{collections::HashMap, net::SocketAddr, time::Instant};

use super::rules::{DEAD_ADDR_TTL, MAX_DEAD_ADDRS};

#[derive(Debug, Default)]
pub(super) struct DeadAddrs(HashMap<SocketAddr, Instant>);

impl DeadAddrs {
    pub(super) fn contains(&self, a: &SocketAddr, now: Instant) -> bool {
        self.0
            .get(a)
            .is_some_and(|t| now.saturating_duration_since(*t) < DEAD_ADDR_TTL)
    }

    pub(super) fn insert(&mut self, a: SocketAddr, now: Instant) {
        if self.0.len() >= MAX_DEAD_ADDRS && !self.0.contains_key(&a) {
            self.0
                .retain(|_, t| now.saturating_duration_since(*t) < DEAD_ADDR_TTL);
            if self.0.len() >= MAX_DEAD_ADDRS {
                if let Some(oldest) = self.0.iter().min_by_key(|(_, t)| **t).map(|(a, _)| *a) {
                    self.0.remove(&oldest);
                }
            }
        }
        self.0.insert(a, now);
    }

    pub(super) fn remove(&mut self, a: &SocketAddr) {
        self.0.remove(a);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn dead_addresses_are_bounded_and_forgettable() {
        let mut d = DeadAddrs::default();
        let t0 = Instant::now();
        for i in 0..(MAX_DEAD_ADDRS + 10) {
            let a = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 9470));
            d.insert(a, t0 + Duration::from_millis(i as u64));
        }
        let now = t0 + Duration::from_secs(5);
        assert_eq!(d.0.len(), MAX_DEAD_ADDRS);
        // The oldest went first.
        assert!(!d.contains(&SocketAddr::from(([10, 0, 0, 0], 9470)), now));
        let last = SocketAddr::from(([10, 0, 16, 9], 9470));
        assert!(d.contains(&last, now));
        d.remove(&last);
        assert!(!d.contains(&last, now));
    }

    #[test]
    fn dead_addresses_are_forgotten_after_their_ttl() {
        let mut d = DeadAddrs::default();
        let t0 = Instant::now();
        let a = SocketAddr::from(([10, 0, 0, 1], 9470));
        d.insert(a, t0);
        assert!(d.contains(&a, t0 + DEAD_ADDR_TTL - Duration::from_secs(1)));
        assert!(!d.contains(&a, t0 + DEAD_ADDR_TTL));
    }
}

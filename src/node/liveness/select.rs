//! Where beacons may go out: the operator's interface selection (`--mdns-interfaces`
//! with `--mdns-loopback`, the same filter mDNS uses), in the IP families and on the
//! addresses iroh is bound to. Radio silence on an interface is an order: an interface
//! the selection leaves out gets no beacon and no group join (a join sends an IGMP or
//! MLD report). A node bound to loopback only sends nothing off the host.
//!
//! Loopback itself never carries beacons: sidecars on one host are probed on their
//! connections instead, which costs nothing on a wire.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::platform::iface::{InterfaceFilter, InterfaceInfo};

use super::socket::Via;

/// The interfaces and families beacons may use, from the filter and the bound sockets.
#[derive(Debug, Clone)]
pub struct Selection {
    filter: InterfaceFilter,
    v4: bool,
    v6: bool,
    /// iroh is bound to these addresses only (empty: to the unspecified address).
    only: Vec<IpAddr>,
}

impl Selection {
    pub fn new(filter: InterfaceFilter, bound: &[SocketAddr]) -> Self {
        let mut s = Selection {
            filter,
            v4: false,
            v6: false,
            only: vec![],
        };
        for a in bound {
            match a.ip() {
                IpAddr::V4(_) => s.v4 = true,
                IpAddr::V6(_) => s.v6 = true,
            }
            s.only.push(a.ip());
        }
        // One unspecified bind opens its family on every interface (as for mDNS).
        if bound.iter().any(|a| a.ip().is_unspecified()) {
            s.only.clear();
        }
        s
    }

    /// Bound to loopback addresses only: beacons could never reach a peer whose
    /// connection they would vouch for, so none are sent and no socket is opened.
    pub fn loopback_only(&self) -> bool {
        !self.only.is_empty() && self.only.iter().all(|ip| ip.is_loopback())
    }

    /// May beacons use this interface at all? Up, running, multicast, not loopback,
    /// selected by the filter.
    pub fn allows(&self, i: &InterfaceInfo) -> bool {
        let f = i.flags;
        f.up && f.running && f.multicast && !f.loopback && i.index != 0 && self.filter.eligible(i)
    }

    /// The IPv4 address a beacon leaves from on this interface, if the endpoint is
    /// bound to IPv4 there.
    pub fn v4_on(&self, i: &InterfaceInfo) -> Option<Ipv4Addr> {
        if !self.v4 || !self.allows(i) {
            return None;
        }
        i.addrs.iter().find_map(|a| match a.ip {
            IpAddr::V4(v4) if self.only.is_empty() || self.only.contains(&a.ip) => Some(v4),
            _ => None,
        })
    }

    /// Whether the endpoint is bound to IPv6 on this interface.
    pub fn v6_on(&self, i: &InterfaceInfo) -> bool {
        self.v6
            && self.allows(i)
            && i.addrs
                .iter()
                .any(|a| a.ip.is_ipv6() && (self.only.is_empty() || self.only.contains(&a.ip)))
    }

    /// How one beacon goes out on this interface: IPv4 where the endpoint has an IPv4
    /// address there, else IPv6 (link-local-only LANs). Sending both would double the
    /// bytes for no gain.
    pub fn via(&self, i: &InterfaceInfo) -> Option<Via> {
        match self.v4_on(i) {
            Some(v4) => Some(Via::V4(v4)),
            None if self.v6_on(i) => Some(Via::V6(i.index)),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::iface::{IfAddr, IfFlags};

    fn iface(name: &str, index: u32, addrs: &[&str]) -> InterfaceInfo {
        InterfaceInfo {
            name: name.into(),
            index,
            flags: IfFlags {
                up: true,
                running: true,
                multicast: true,
                loopback: name == "lo",
                point_to_point: false,
            },
            addrs: addrs
                .iter()
                .map(|a| IfAddr {
                    ip: a.parse().unwrap(),
                    prefix_len: 24,
                })
                .collect(),
        }
    }

    fn sel(filter: &[&str], loopback: bool, bound: &[&str]) -> Selection {
        let entries: Vec<String> = filter.iter().map(|s| s.to_string()).collect();
        let bound: Vec<SocketAddr> = bound.iter().map(|s| s.parse().unwrap()).collect();
        Selection::new(InterfaceFilter::parse(&entries, loopback).unwrap(), &bound)
    }

    fn v4(s: &str) -> Via {
        Via::V4(s.parse().unwrap())
    }

    #[test]
    fn only_interfaces_the_filter_selects_carry_beacons() {
        let eth0 = iface("eth0", 2, &["10.0.0.2", "fe80::2"]);
        let eth1 = iface("eth1", 3, &["10.1.0.2", "fe80::3"]);
        let s = sel(&["eth0"], false, &["0.0.0.0:9470"]);
        assert_eq!(s.via(&eth0), Some(v4("10.0.0.2")));
        assert_eq!(s.via(&eth1), None, "eth1 is not selected: radio silence");
        assert!(
            s.v4_on(&eth1).is_none() && !s.v6_on(&eth1),
            "no group join there"
        );
        let deny = sel(&["!eth1"], false, &["0.0.0.0:9470"]);
        assert!(deny.via(&eth0).is_some() && deny.via(&eth1).is_none());
        let all = sel(&[], false, &["0.0.0.0:9470"]);
        assert!(all.via(&eth0).is_some() && all.via(&eth1).is_some());
    }

    #[test]
    fn beacons_use_the_bound_family_and_address() {
        let eth0 = iface("eth0", 2, &["10.0.0.2", "fe80::2"]);
        let v6only = sel(&[], false, &["[::]:9470"]);
        assert_eq!(v6only.via(&eth0), Some(Via::V6(2)));
        assert!(
            v6only.v4_on(&eth0).is_none(),
            "no IPv4 join when bound to IPv6"
        );
        let v4only = sel(&[], false, &["0.0.0.0:9470"]);
        assert!(!v4only.v6_on(&eth0), "no IPv6 join when bound to IPv4");
        let v4_ll_only = iface("eth1", 3, &["fe80::3"]);
        assert_eq!(v4only.via(&v4_ll_only), None);
        let one = sel(&[], false, &["10.1.0.2:9470"]);
        assert_eq!(one.via(&eth0), None, "bound to another interface's address");
        let eth1 = iface("eth1", 3, &["10.1.0.2", "10.1.0.9"]);
        assert_eq!(
            one.via(&eth1),
            Some(v4("10.1.0.2")),
            "from the bound address"
        );
    }

    #[test]
    fn a_node_bound_to_loopback_sends_nothing_off_the_host() {
        let lo = iface("lo", 1, &["127.0.0.1", "::1"]);
        let eth0 = iface("eth0", 2, &["10.0.0.2"]);
        let s = sel(&["lo"], true, &["127.0.0.1:0"]);
        assert!(s.loopback_only());
        assert_eq!(s.via(&eth0), None);
        assert_eq!(s.via(&lo), None, "loopback never carries beacons");
        // Even with every interface allowed, the loopback bind keeps beacons home.
        assert_eq!(sel(&[], false, &["127.0.0.1:0"]).via(&eth0), None);
        assert!(!sel(&[], false, &["0.0.0.0:0"]).loopback_only());
        assert!(sel(&[], false, &["[::1]:0"]).loopback_only());
    }

    #[test]
    fn down_and_non_multicast_interfaces_carry_no_beacons() {
        let s = sel(&[], false, &["0.0.0.0:9470"]);
        let mut down = iface("eth0", 2, &["10.0.0.2"]);
        down.flags.running = false;
        assert_eq!(s.via(&down), None);
        let mut nomc = iface("eth0", 2, &["10.0.0.2"]);
        nomc.flags.multicast = false;
        assert_eq!(s.via(&nomc), None);
    }
}

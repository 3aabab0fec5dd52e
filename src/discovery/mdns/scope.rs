//! Address scope rules: which addresses we announce, which peer addresses we may dial,
//! from the sockets iroh is bound to. IPv6 link-local addresses are announced (on a
//! LAN with nothing else they are all there is) and are dialled only with the index of
//! the interface they were heard on: the same fe80::/64 is on every link, so the
//! address alone does not say where it is.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr, SocketAddrV6},
};

use mdns_sd::ScopedIp;

/// Which addresses we may use, from the sockets iroh is bound to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BindScope {
    pub v4: bool,
    pub v6: bool,
    /// iroh is bound to these specific addresses only.
    pub only: Vec<IpAddr>,
}

impl BindScope {
    pub fn from_bound(bound: &[SocketAddr]) -> Self {
        let mut s = BindScope::default();
        for a in bound {
            match a.ip() {
                IpAddr::V4(_) => s.v4 = true,
                IpAddr::V6(_) => s.v6 = true,
            }
            if !a.ip().is_unspecified() {
                s.only.push(a.ip());
            }
        }
        // An unspecified bind of one family next to a specific one: treat as open.
        if bound.iter().any(|a| a.ip().is_unspecified()) {
            s.only.clear();
        }
        s
    }

    /// May mDNS packets go out over this interface address's family?
    pub fn transport_ok(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(_) => self.v4,
            IpAddr::V6(_) => self.v6,
        }
    }

    /// May this address be announced in our A/AAAA records? mdns-sd sends a
    /// link-local address on every interface (its subnet test cannot tell links
    /// apart), so a host on two links also announces the other link's fe80 address; a
    /// receiver dials it with its own interface's scope, that path fails, and the
    /// right one wins. Harmless, and the price of meshing on fe80-only LANs.
    pub fn announce_ok(&self, ip: IpAddr) -> bool {
        self.transport_ok(ip) && (self.only.is_empty() || self.only.contains(&ip))
    }

    /// May we hand this peer address to the dialer? (A v6 address is useless to an
    /// endpoint bound to IPv4 only.)
    pub fn dial_ok(&self, ip: IpAddr) -> bool {
        self.transport_ok(ip)
    }
}

pub use crate::scoped::is_v6_link_local;

/// Socket addresses of a resolved peer that our endpoint can dial, from (address,
/// index of the interface it was heard on). IPv6 link-local ones are kept only with
/// that scope.
pub fn dialable_addrs(
    addrs: impl IntoIterator<Item = (IpAddr, u32)>,
    port: u16,
    scope: &BindScope,
) -> BTreeSet<SocketAddr> {
    let mut out = BTreeSet::new();
    for (ip, if_index) in addrs {
        if !scope.dial_ok(ip) || ip.is_unspecified() || ip.is_multicast() {
            continue;
        }
        match ip {
            IpAddr::V6(ip6) if is_v6_link_local(ip) => {
                if if_index != 0 {
                    out.insert(SocketAddr::V6(SocketAddrV6::new(ip6, port, 0, if_index)));
                }
            }
            _ => {
                out.insert(SocketAddr::new(ip, port));
            }
        }
    }
    out
}

/// An mdns-sd address as (address, interface index; 0 when it has none).
pub fn scoped(a: &ScopedIp) -> (IpAddr, u32) {
    match a {
        ScopedIp::V6(v6) => (IpAddr::V6(*v6.addr()), v6.scope_id().index),
        other => (other.to_ip_addr(), 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bind_scope_from_sockets() {
        let any4 = BindScope::from_bound(&[sa("0.0.0.0:9470")]);
        assert!(any4.v4 && !any4.v6 && any4.only.is_empty());
        assert!(any4.announce_ok("10.0.0.1".parse().unwrap()));
        assert!(!any4.announce_ok("fd00::1".parse().unwrap()));
        let one = BindScope::from_bound(&[sa("10.0.0.1:9470")]);
        assert!(one.announce_ok("10.0.0.1".parse().unwrap()));
        assert!(!one.announce_ok("10.0.0.2".parse().unwrap()));
        let any6 = BindScope::from_bound(&[sa("[::]:9470")]);
        assert!(any6.announce_ok("fd00::1".parse().unwrap()));
        assert!(
            any6.announce_ok("fe80::1".parse().unwrap()),
            "link-local is announced: on an fe80-only LAN it is all there is"
        );
        assert!(!any4.announce_ok("fe80::1".parse().unwrap()));
        assert!(any6.transport_ok("fe80::1".parse().unwrap()));
    }

    #[test]
    fn dialable_addrs_keep_family_and_scope() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let all = [
            (ip("10.0.0.2"), 4),
            (ip("fe80::2"), 4),
            (ip("fd00::2"), 4),
            (ip("fe80::3"), 0),
        ];
        let s4 = BindScope::from_bound(&[sa("0.0.0.0:1")]);
        assert_eq!(
            dialable_addrs(all, 9470, &s4),
            [sa("10.0.0.2:9470")].into_iter().collect()
        );
        let s6 = BindScope::from_bound(&[sa("[::]:1")]);
        let got = dialable_addrs(all, 9470, &s6);
        assert!(got.contains(&sa("[fd00::2]:9470")));
        assert!(got.contains(&SocketAddr::V6(SocketAddrV6::new(
            "fe80::2".parse().unwrap(),
            9470,
            0,
            4
        ))));
        assert_eq!(
            got.len(),
            2,
            "a link-local address without scope is dropped"
        );
    }
}

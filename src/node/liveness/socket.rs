//! The beacon sockets: one per IP family on a fixed port, joined to the beacon group on
//! every multicast interface, sending on each of them in turn.
//!
//! One family per interface when sending: IPv4 where the interface has an IPv4
//! address, else IPv6 (link-local-only LANs). Sending both would double the beacon
//! bytes for no gain. Receiving listens on both groups.

use std::{
    collections::HashSet,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tracing::debug;

use crate::platform::iface::{InterfaceInfo, Snapshot};

/// Administratively scoped (RFC 2365), sent with TTL 1: never leaves the link.
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(239, 255, 80, 71);
/// Link-local scope.
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0x7065, 0x6174);

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("cannot open the beacon socket on UDP {port} ({family}): {source}")]
    Open {
        port: u16,
        family: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Where a beacon goes out on one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    V4(Ipv4Addr),
    V6(u32),
}

pub struct BeaconSockets {
    pub v4: Option<UdpSocket>,
    pub v6: Option<UdpSocket>,
    port: u16,
    joined: HashSet<(u32, bool)>,
}

fn open(domain: Domain, port: u16) -> io::Result<UdpSocket> {
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    // Several sidecars on one host share the port; each gets every beacon.
    s.set_reuse_address(true)?;
    let addr: SocketAddr = if domain == Domain::IPV6 {
        s.set_only_v6(true)?;
        s.set_multicast_hops_v6(1)?;
        SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0).into()
    } else {
        s.set_multicast_ttl_v4(1)?;
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into()
    };
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

/// Interfaces beacons use: up, running, multicast, not loopback (sidecars on one host
/// fall back to probes, which cost nothing on a wire).
pub fn eligible(i: &InterfaceInfo) -> bool {
    let f = i.flags;
    f.up && f.running && f.multicast && !f.loopback && i.index != 0
}

/// The family a beacon uses on this interface, if any.
pub fn via(i: &InterfaceInfo) -> Option<Via> {
    match first_v4(i) {
        Some(v4) => Some(Via::V4(v4)),
        None if i.addrs.iter().any(|a| a.ip.is_ipv6()) => Some(Via::V6(i.index)),
        None => None,
    }
}

impl BeaconSockets {
    /// Opens what it can; fails only if neither family opens.
    pub fn open(port: u16) -> Result<Self, SocketError> {
        let v4 = open(Domain::IPV4, port);
        let v6 = open(Domain::IPV6, port);
        if let (Err(source), Err(_)) = (&v4, &v6) {
            return Err(SocketError::Open {
                port,
                family: "IPv4 and IPv6",
                source: io::Error::new(source.kind(), source.to_string()),
            });
        }
        for (family, r) in [("IPv4", v4.as_ref().err()), ("IPv6", v6.as_ref().err())] {
            if let Some(e) = r {
                debug!(family, error = %e, "beacon socket not opened for this family");
            }
        }
        Ok(BeaconSockets {
            v4: v4.ok(),
            v6: v6.ok(),
            port,
            joined: HashSet::new(),
        })
    }

    /// Joins the groups on interfaces new since the last call; forgets vanished ones,
    /// so that one coming back is joined again.
    pub fn join(&mut self, snap: &Snapshot) {
        let live: HashSet<(u32, bool)> = snap
            .values()
            .filter(|i| eligible(i))
            .flat_map(|i| [(i.index, true), (i.index, false)])
            .collect();
        self.joined.retain(|k| live.contains(k));
        for i in snap.values().filter(|i| eligible(i)) {
            if let (Some(s), Some(a)) = (&self.v4, first_v4(i)) {
                if !self.joined.contains(&(i.index, true))
                    && joined(s.join_multicast_v4(GROUP_V4, a))
                {
                    self.joined.insert((i.index, true));
                }
            }
            if let Some(s) = &self.v6 {
                let has_v6 = i.addrs.iter().any(|a| a.ip.is_ipv6());
                if has_v6
                    && !self.joined.contains(&(i.index, false))
                    && joined(s.join_multicast_v6(&GROUP_V6, i.index))
                {
                    self.joined.insert((i.index, false));
                }
            }
        }
    }

    /// Sends one beacon out of one interface.
    pub async fn send(&self, via: Via, bytes: &[u8]) -> io::Result<()> {
        match via {
            Via::V4(addr) => {
                let s = self.v4.as_ref().ok_or_else(no_socket)?;
                socket2::SockRef::from(s).set_multicast_if_v4(&addr)?;
                s.send_to(bytes, SocketAddrV4::new(GROUP_V4, self.port))
                    .await?;
            }
            Via::V6(index) => {
                let s = self.v6.as_ref().ok_or_else(no_socket)?;
                socket2::SockRef::from(s).set_multicast_if_v6(index)?;
                let to = SocketAddrV6::new(GROUP_V6, self.port, 0, index);
                s.send_to(bytes, to).await?;
            }
        }
        Ok(())
    }
}

fn first_v4(i: &InterfaceInfo) -> Option<Ipv4Addr> {
    i.addrs.iter().find_map(|a| match a.ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    })
}

/// A join that the kernel reports as done already counts as joined.
fn joined(r: io::Result<()>) -> bool {
    match r {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => true,
        Err(e) => {
            debug!(error = %e, "cannot join the beacon group on an interface");
            false
        }
    }
}

fn no_socket() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "no socket for this family")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::iface::{IfAddr, IfFlags};

    fn iface(addrs: &[&str]) -> InterfaceInfo {
        InterfaceInfo {
            name: "eth0".into(),
            index: 2,
            flags: IfFlags {
                up: true,
                running: true,
                multicast: true,
                loopback: false,
                point_to_point: false,
            },
            addrs: addrs
                .iter()
                .map(|a| IfAddr {
                    ip: a.parse().unwrap(),
                    prefix_len: 64,
                })
                .collect(),
        }
    }

    #[test]
    fn ipv4_is_preferred_and_ipv6_serves_link_local_only_lans() {
        let dual = iface(&["fe80::1", "10.0.0.2"]);
        assert_eq!(via(&dual), Some(Via::V4("10.0.0.2".parse().unwrap())));
        assert_eq!(via(&iface(&["fe80::1"])), Some(Via::V6(2)));
        assert_eq!(via(&iface(&[])), None);
    }

    #[test]
    fn loopback_and_down_interfaces_carry_no_beacons() {
        let mut lo = iface(&["127.0.0.1"]);
        lo.flags.loopback = true;
        assert!(!eligible(&lo));
        let mut down = iface(&["10.0.0.2"]);
        down.flags.running = false;
        assert!(!eligible(&down));
        assert!(eligible(&iface(&["10.0.0.2"])));
    }
}

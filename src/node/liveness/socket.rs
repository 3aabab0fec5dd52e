//! The beacon sockets: one per IP family on a fixed port, joined to the beacon group on
//! the interfaces the [`Selection`] allows, sending on each of them in turn (one family
//! per interface, see [`Selection::via`]). Receiving listens on both groups.

use std::{
    collections::HashSet,
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tracing::debug;

use super::select::Selection;
use crate::platform::iface::Snapshot;

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

    /// Joins the groups on selected interfaces new since the last call, in the bound
    /// families only; forgets vanished or deselected ones, so that one coming back is
    /// joined again. (A join sends a membership report: none where we must be silent.)
    pub fn join(&mut self, snap: &Snapshot, sel: &Selection) {
        let live: HashSet<(u32, bool)> = snap
            .values()
            .flat_map(|i| {
                let v4 = sel.v4_on(i).map(|_| (i.index, true));
                let v6 = sel.v6_on(i).then_some((i.index, false));
                [v4, v6]
            })
            .flatten()
            .collect();
        self.joined.retain(|k| live.contains(k));
        for i in snap.values() {
            if let (Some(s), Some(a)) = (&self.v4, sel.v4_on(i)) {
                if !self.joined.contains(&(i.index, true))
                    && joined(s.join_multicast_v4(GROUP_V4, a))
                {
                    self.joined.insert((i.index, true));
                }
            }
            if let Some(s) = &self.v6 {
                if sel.v6_on(i)
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

//! What a connection's selected network path says: the peer's address as this side
//! sees it, and the round-trip time. iroh keeps several paths per connection; the
//! selected one carries the traffic.

use std::{net::SocketAddr, time::Duration};

use iroh::endpoint::Connection;

/// The peer's address on the selected path, if it is an IP path.
pub fn remote_addr(conn: &Connection) -> Option<SocketAddr> {
    let paths = conn.paths();
    let path = paths.into_iter().find(|p| p.is_selected())?;
    match path.remote_addr() {
        iroh::TransportAddr::Ip(a) => Some(*a),
        _ => None,
    }
}

/// RTT of the selected path.
pub fn rtt(conn: &Connection) -> Option<Duration> {
    let paths = conn.paths();
    let path = paths.into_iter().find(|p| p.is_selected())?;
    conn.rtt(path.id())
}

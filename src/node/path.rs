//! What a connection's selected network path says: the peer's address as this side
//! sees it, the round-trip time and the path's statistics. iroh keeps several paths per
//! connection; the selected one carries the traffic.

use std::{net::SocketAddr, time::Duration};

use iroh::endpoint::{Connection, Path, PathStats};

/// `f` of the selected path, if there is one. A path borrows the connection's snapshot
/// of its paths, so it is lent to `f` rather than returned.
fn selected<T>(conn: &Connection, f: impl FnOnce(&Path<'_>) -> Option<T>) -> Option<T> {
    let paths = conn.paths();
    let path = paths.iter().find(|p| p.is_selected())?;
    f(&path)
}

/// The peer's address on the selected path, if it is an IP path.
pub fn remote_addr(conn: &Connection) -> Option<SocketAddr> {
    selected(conn, |p| match p.remote_addr() {
        iroh::TransportAddr::Ip(a) => Some(*a),
        _ => None,
    })
}

/// RTT of the selected path.
pub fn rtt(conn: &Connection) -> Option<Duration> {
    selected(conn, |p| conn.rtt(p.id()))
}

/// Statistics of the selected path (congestion window, lost packets, ...).
pub fn stats(conn: &Connection) -> Option<PathStats> {
    selected(conn, |p| Some(p.stats()))
}

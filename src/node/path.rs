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

/// QUIC packets sent and lost on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packets {
    pub sent: u64,
    pub lost: u64,
}

/// Packets sent and declared lost on the connection's open paths, PLPMTUD probes left
/// out: a probe larger than the path's MTU is lost by design, and would show as loss
/// on a clean link with a small MTU. `None` without an open path.
pub fn packets(conn: &Connection) -> Option<Packets> {
    let paths = conn.paths();
    let mut sum: Option<Packets> = None;
    for p in paths.iter() {
        let s = p.stats();
        let acc = sum.get_or_insert(Packets { sent: 0, lost: 0 });
        acc.sent += s.sent_packets.saturating_sub(s.sent_plpmtud_probes);
        acc.lost += s.lost_packets.saturating_sub(s.lost_plpmtud_probes);
    }
    sum
}

/// Statistics of the selected path (congestion window, lost packets, ...).
pub fn stats(conn: &Connection) -> Option<PathStats> {
    selected(conn, |p| Some(p.stats()))
}

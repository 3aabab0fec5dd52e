//! Runs the formation check ([`super::formation`]) on a QUIC connection: the first
//! bidirectional stream, bounded by [`check_timeout`] of the connection's round trip,
//! with an I/O failure refined
//! by how the peer closed the connection. One function for both sides.

use iroh::{
    endpoint::{Connection, ConnectionError},
    EndpointId,
};

use super::formation::{check_timeout, CloseCode, Formation, FormationError};

/// Which side of the check this node plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// We dialled: we open the stream and speak first.
    Dialer,
    /// We accepted: we wait for the peer's stream.
    Acceptor,
}

/// Runs this side of the check on `conn`, whose peer is the TLS-authenticated
/// `conn.remote_id()`.
pub async fn authenticate(
    conn: &Connection,
    formation: &Formation,
    me: EndpointId,
    side: Side,
) -> Result<(), FormationError> {
    let peer = conn.remote_id();
    let check = async {
        let (mut send, mut recv) = match side {
            Side::Dialer => conn.open_bi().await,
            Side::Acceptor => conn.accept_bi().await,
        }
        .map_err(|e| FormationError::Io(e.to_string()))?;
        match side {
            Side::Dialer => formation.dial(&mut recv, &mut send, me, peer).await?,
            Side::Acceptor => formation.accept(&mut recv, &mut send, me, peer).await?,
        }
        let _ = send.finish();
        Ok(())
    };
    let limit = check_timeout(super::path::rtt(conn));
    let result = tokio::time::timeout(limit, check)
        .await
        .unwrap_or(Err(FormationError::Timeout(limit)));
    result.map_err(|e| refine_with_close(conn, e))
}

/// An I/O failure during the check often means the peer closed the connection with a
/// rejection code: report that instead of "stream reset".
fn refine_with_close(conn: &Connection, e: FormationError) -> FormationError {
    if !matches!(e, FormationError::Io(_)) {
        return e;
    }
    match conn.close_reason() {
        Some(ConnectionError::ApplicationClosed(close)) => {
            CloseCode::from_code(close.error_code.into_inner())
                .and_then(FormationError::from_peer_close)
                .unwrap_or(e)
        }
        _ => e,
    }
}

//! Runs the formation check ([`super::formation`]) on a QUIC connection: the first
//! bidirectional stream, in the version the ALPN chose, bounded by [`check_timeout`]
//! of the connection's round trip, with an I/O failure refined by how the peer closed
//! the connection. One function for both sides.

use std::time::Duration;

use bytes::Bytes;
use iroh::{
    endpoint::{ConnectOptions, Connection, ConnectionError},
    EndpointId,
};

use super::formation::{
    check_timeout, Binding, CloseCode, Formation, FormationError, ALPN, ALPN_V2, ALPN_V3,
    EXPORTER_LABEL,
};
use crate::trust::TrustError;

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
    let version = conn.alpn();
    if formation.requires_cert() && version != ALPN_V3 {
        // An older version carries no certificate: refuse at once, with the reason.
        return Err(FormationError::Certificate(TrustError::Missing));
    }
    let check = async {
        let (mut send, mut recv) = match side {
            Side::Dialer => conn.open_bi().await,
            Side::Acceptor => conn.accept_bi().await,
        }
        .map_err(|e| FormationError::Io(e.to_string()))?;
        let (ids, io) = ((me, peer), (&mut recv, &mut send));
        match (side, binding(conn)?) {
            (Side::Dialer, None) => formation.dial(io.0, io.1, me, peer).await?,
            (Side::Acceptor, None) => formation.accept(io.0, io.1, me, peer).await?,
            (Side::Dialer, Some(b)) if version == ALPN_V3 => {
                formation.dial_v3(io.0, io.1, ids, &b).await?
            }
            (Side::Acceptor, Some(b)) if version == ALPN_V3 => {
                formation.accept_v3(io.0, io.1, ids, &b).await?
            }
            (Side::Dialer, Some(b)) => formation.dial_v2(io.0, io.1, ids, &b).await?,
            (Side::Acceptor, Some(b)) => formation.accept_v2(io.0, io.1, ids, &b).await?,
        }
        let _ = send.finish();
        Ok(())
    };
    let limit = check_timeout(super::path::rtt(conn));
    let result = tokio::select! {
        r = tokio::time::timeout(limit, check) => r.unwrap_or(Err(FormationError::Timeout(limit))),
        never = nudge(conn) => match never {},
    };
    if result.is_ok() && side == Side::Acceptor {
        // Our last message may be lost too: keep it detectable a little longer.
        let conn = conn.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(NUDGE_AFTER, nudge(&conn)).await;
        });
    }
    result.map_err(|e| refine_with_close(conn, e))
}

/// While the check runs, a one-byte QUIC datagram this often (both sides; nobody reads
/// them). Why: the check is a few small messages, and QUIC finds a lost packet either
/// from the acknowledgement of a later one (after 9/8 of a round trip) or, when nothing
/// later was sent, only at its probe timeout (about three round trips, doubling with
/// every further loss). On a lossy radio link those timeouts made a check take seconds;
/// with a later packet always in flight, a loss costs about one round trip. On a LAN
/// the check is over before the first one is due.
const NUDGE_EVERY: Duration = Duration::from_millis(100);
/// How long the acceptor goes on after its last message: the dialer still has to
/// receive it.
const NUDGE_AFTER: Duration = Duration::from_secs(1);

/// Sends a datagram every [`NUDGE_EVERY`]; never returns. Stops sending if the
/// connection cannot take one (closed, or a peer without datagram support).
async fn nudge(conn: &Connection) -> std::convert::Infallible {
    let mut tick = tokio::time::interval(NUDGE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate: the message itself goes now
    loop {
        tick.tick().await;
        if conn.send_datagram(Bytes::from_static(&[0])).is_err() {
            return std::future::pending().await;
        }
    }
}

/// The connection's TLS binding if it runs the check of version 2 or 3 (negotiated by
/// ALPN, see [`super::formation::ALPN_V2`]); `None` for version 1.
fn binding(conn: &Connection) -> Result<Option<Binding>, FormationError> {
    if conn.alpn() != ALPN_V2 && conn.alpn() != ALPN_V3 {
        return Ok(None);
    }
    let mut b: Binding = [0; 32];
    conn.export_keying_material(&mut b, EXPORTER_LABEL, b"")
        .map_err(|_| FormationError::Protocol("cannot export TLS keying material"))?;
    Ok(Some(b))
}

/// What a dial offers, preferred first (the acceptor picks the first of its own list
/// that is offered): with an authority, version 3 of the check and the older ones
/// too, so that an older peer is refused with a reason rather than by TLS; without
/// one, version 2, and version 1 for peers that do not have it.
pub fn connect_alpns(formation: &Formation) -> (&'static [u8], ConnectOptions) {
    if formation.requires_cert() {
        let older = vec![ALPN_V2.to_vec(), ALPN.to_vec()];
        (ALPN_V3, ConnectOptions::new().with_additional_alpns(older))
    } else {
        (ALPN_V2, connect_options())
    }
}

/// What a dial without an authority offers: version 2, and version 1.
pub fn connect_options() -> ConnectOptions {
    ConnectOptions::new().with_additional_alpns(vec![ALPN.to_vec()])
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use iroh::{EndpointAddr, SecretKey};

    use super::*;
    use crate::{
        node::SharedKey,
        node::{
            endpoint::{self, Liveness},
            formation::{Rejection, ALPNS},
        },
    };

    type Outcome = (
        Vec<u8>,
        Result<(), FormationError>,
        Result<(), FormationError>,
    );

    /// A dial as `peers::dial` makes it (version 2 offered, version 1 too) to an acceptor
    /// that accepts `acceptor_alpns`; both sides run their check over loopback.
    async fn check(acceptor_alpns: &[&[u8]], fd: Formation, fa: Formation) -> Outcome {
        let live = Liveness {
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10),
        };
        let local: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let (kd, ka) = (SecretKey::generate(), SecretKey::generate());
        let (idd, ida) = (kd.public(), ka.public());
        let acc = endpoint::bind_alpns(ka, &[local], live, acceptor_alpns)
            .await
            .expect("bind acceptor");
        let dia = endpoint::bind(kd, &[local], live)
            .await
            .expect("bind dialer");
        let target = EndpointAddr::new(ida).with_ip_addr(acc.bound_sockets()[0]);
        let accepting = tokio::spawn(async move {
            let conn = acc
                .accept()
                .await
                .expect("incoming")
                .await
                .expect("handshake");
            let r = authenticate(&conn, &fa, ida, Side::Acceptor).await;
            if let Err(e) = &r {
                let code = e.close_code();
                conn.close(code.varint(), code.reason());
            }
            // Keep the connection until the dialer has read what it needs.
            tokio::time::sleep(Duration::from_millis(300)).await;
            (r, acc)
        });
        let conn = dia
            .connect_with_opts(target, ALPN_V2, connect_options())
            .await
            .expect("connect")
            .await
            .expect("handshake");
        let alpn = conn.alpn().to_vec();
        let d = authenticate(&conn, &fd, idd, Side::Dialer).await;
        let (a, _acc) = accepting.await.expect("acceptor task");
        (alpn, d, a)
    }

    fn keyed(b: u8) -> Formation {
        Formation::new("peat", Some(&SharedKey([b; 32])))
    }

    #[tokio::test]
    async fn new_nodes_run_version_2_and_fall_back_to_version_1_for_old_ones() {
        let (alpn, d, a) = check(&ALPNS, keyed(1), keyed(1)).await;
        assert_eq!(alpn, ALPN_V2);
        assert_eq!((d, a), (Ok(()), Ok(())));
        // An acceptor that knows only version 1 (a node older than version 2).
        let (alpn, d, a) = check(&[ALPN], keyed(1), keyed(1)).await;
        assert_eq!(alpn, ALPN);
        assert_eq!((d, a), (Ok(()), Ok(())));
    }

    #[tokio::test]
    async fn a_wrong_key_in_version_2_is_refused_and_the_dialer_told_why() {
        let (alpn, d, a) = check(&ALPNS, keyed(1), keyed(2)).await;
        assert_eq!(alpn, ALPN_V2);
        assert_eq!(a, Err(FormationError::KeyMismatch));
        assert_eq!(
            d,
            Err(FormationError::RejectedByPeer(Rejection::KeyMismatch))
        );
    }

    /// A node with key ring `keys` (the first dials).
    fn ring(keys: &[u8]) -> Formation {
        let ring: Vec<SharedKey> = keys.iter().map(|b| SharedKey([*b; 32])).collect();
        Formation::new("peat", ring.first()).with_accepted(&ring[1..])
    }

    #[tokio::test]
    async fn a_key_change_installs_uses_and_removes_without_a_refusal() {
        // Every pair a rolling change meets: (dialer, acceptor), install before use.
        let pairs: [(&[u8], &[u8]); 5] = [
            (&[1], &[1, 2]),    // the acceptor installed the new key
            (&[1, 2], &[1]),    // the dialer installed it
            (&[2, 1], &[1, 2]), // the dialer uses it, the acceptor not yet
            (&[1, 2], &[2, 1]), // and the other way round
            (&[2], &[2, 1]),    // the dialer removed the old key
        ];
        for (dk, ak) in pairs {
            for alpns in [&ALPNS[..], &[ALPN][..]] {
                let (alpn, d, a) = check(alpns, ring(dk), ring(ak)).await;
                assert_eq!((d, a), (Ok(()), Ok(())), "{dk:?} -> {ak:?} over {alpn:?}");
            }
        }
        // A key used before the acceptor installed it is refused (version 2 proves one
        // key in one round trip); version 1's acceptor proves first, and the dialer
        // answers with the key that matched.
        let (_, d, a) = check(&ALPNS, ring(&[2, 1]), ring(&[1])).await;
        assert_eq!(a, Err(FormationError::KeyMismatch));
        assert!(d.is_err());
        let (_, d, a) = check(&[ALPN], ring(&[2, 1]), ring(&[1])).await;
        assert_eq!((d, a), (Ok(()), Ok(())));
        // No common key: refused.
        let (_, d, a) = check(&ALPNS, ring(&[3]), ring(&[1, 2])).await;
        assert!(d.is_err() && a.is_err(), "{d:?} {a:?}");
    }
}

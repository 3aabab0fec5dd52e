//! The iroh endpoint: offline by default, one UDP socket on a fixed port. Its QUIC
//! keep-alives are a backstop: crashes are found by the beacons and probes of
//! [`super::liveness`], so by default connections stay quiet for minutes.

use std::{net::SocketAddr, time::Duration};

use iroh::{
    endpoint::{presets, QuicTransportConfig},
    Endpoint, SecretKey,
};

use super::formation::ALPNS;

/// The round trip QUIC assumes before it measured one. It sets when a lost handshake
/// packet is resent: with QUIC's 333 ms default the first resend comes after about 1 s
/// and the next after 3 s, so on a lossy radio link a handshake whose first packet was
/// lost missed the 2 s first-dial deadline. With 100 ms the resends come after 0.3,
/// 0.9 and 2.1 s; a link slower than that costs a few spurious resends of the first
/// flight, and the measured round trip takes over after the first answer.
const INITIAL_RTT: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("cannot use {addr} as the UDP bind address: {message}")]
    BadBind { addr: SocketAddr, message: String },
    #[error("cannot bind UDP {addr}: {message}. {hint}")]
    Bind {
        addr: SocketAddr,
        message: String,
        hint: &'static str,
        /// Another socket holds the address (main exits 2 for it, as for a setting).
        in_use: bool,
    },
    #[error("invalid idle timeout {0:?}")]
    IdleTimeout(Duration),
}

/// Timing of liveness checks.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    pub keep_alive: Duration,
    pub idle_timeout: Duration,
}

/// Binds the endpoint, one socket per address (one per family at most: a dual-stack
/// node gives two). `presets::Minimal` gives the crypto provider only: no relay, no
/// DNS or pkarr lookups, so nothing leaves the LAN that we did not ask for.
pub async fn bind(
    secret_key: SecretKey,
    addrs: &[SocketAddr],
    live: Liveness,
) -> Result<Endpoint, EndpointError> {
    bind_alpns(secret_key, addrs, live, &ALPNS).await
}

/// [`bind`] accepting only `alpns` (tests play older nodes with it).
pub(crate) async fn bind_alpns(
    secret_key: SecretKey,
    addrs: &[SocketAddr],
    live: Liveness,
    alpns: &[&[u8]],
) -> Result<Endpoint, EndpointError> {
    let idle = live
        .idle_timeout
        .try_into()
        .map_err(|_| EndpointError::IdleTimeout(live.idle_timeout))?;
    let transport = QuicTransportConfig::builder()
        .keep_alive_interval(live.keep_alive)
        .max_idle_timeout(Some(idle))
        .initial_rtt(INITIAL_RTT)
        // iroh's own setters cap these at 5 s / 15 s (for relay and holepunched
        // paths); a direct path would then ping every 5 s. vendor/README.md.
        .path_timers_unclamped(Some(live.keep_alive), Some(live.idle_timeout))
        .build();
    let mut builder = Endpoint::builder(presets::Minimal)
        .secret_key(secret_key)
        .alpns(alpns.iter().map(|a| a.to_vec()).collect())
        .transport_config(transport)
        // The builder binds 0.0.0.0:0 and [::]:0 by default; we want exactly our
        // sockets, on the documented port.
        .clear_ip_transports();
    for &addr in addrs {
        builder = builder
            .bind_addr(addr)
            .map_err(|e| EndpointError::BadBind {
                addr,
                message: e.to_string(),
            })?;
    }
    let addr = addrs
        .first()
        .copied()
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    builder.bind().await.map_err(|e| {
        let mut message = e.to_string();
        let mut kind = None;
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            message = format!("{message}: {s}");
            kind = kind.or(s.downcast_ref::<std::io::Error>().map(|io| io.kind()));
            src = s.source();
        }
        EndpointError::Bind {
            addr,
            message,
            hint: bind_hint(kind),
            in_use: kind == Some(std::io::ErrorKind::AddrInUse),
        }
    })
}

/// What to do about a failed bind, by its cause.
fn bind_hint(kind: Option<std::io::ErrorKind>) -> &'static str {
    use std::io::ErrorKind as K;
    match kind {
        Some(K::AddrNotAvailable) => "The address is not on this host: use one of its addresses, or 0.0.0.0 / [::] for all (--bind, PEAT_SIDECAR_BIND)",
        Some(K::PermissionDenied) => "Ports below 1024 need CAP_NET_BIND_SERVICE: choose another port with --bind (PEAT_SIDECAR_BIND)",
        _ => "Is another peat-sidecar running? Choose another port with --bind (PEAT_SIDECAR_BIND)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> Liveness {
        Liveness {
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn an_address_not_on_this_host_is_named_as_such() {
        // TEST-NET-3, never on a host: the kernel refuses the bind, nothing is sent.
        let addr: SocketAddr = "203.0.113.77:0".parse().unwrap();
        let err = bind(SecretKey::generate(), &[addr], live())
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("not on this host"), "{msg}");
        assert!(!msg.contains("another peat-sidecar"), "{msg}");
    }

    #[tokio::test]
    async fn a_port_in_use_suggests_another_sidecar() {
        let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = busy.local_addr().unwrap();
        let err = bind(SecretKey::generate(), &[addr], live())
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("another peat-sidecar"), "{msg}");
    }
}

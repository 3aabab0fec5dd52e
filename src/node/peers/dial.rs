//! The I/O of one dial, run in its own task by the driver: resolve the peer's host
//! names, connect over QUIC, and run the dialer's side of the formation check, within
//! the deadlines the core gave ([`DialTimeouts`]): one until the peer first answers in
//! the QUIC handshake, one for everything.

use std::{future::Future, net::SocketAddr};

use iroh::{endpoint::Connection, Endpoint, EndpointAddr, EndpointId};
use tokio::time::{timeout_at, Instant};
use tracing::debug;

use super::{rules::DialTimeouts, types::DialError};
use crate::{
    node::PeerHost,
    node::{
        formation::Formation,
        handshake::{self, Side},
    },
};

/// Resolves the peer's host names, connects and runs the dialer's side of the check.
pub(super) async fn dial(
    endpoint: &Endpoint,
    formation: &Formation,
    id: EndpointId,
    mut addrs: Vec<SocketAddr>,
    hosts: Vec<PeerHost>,
    timeouts: DialTimeouts,
) -> Result<Connection, DialError> {
    let start = Instant::now();
    let (answer_by, done_by) = (start + timeouts.answer, start + timeouts.total);
    let unanswered = || DialError::Timeout(start.elapsed());
    timeout_at(answer_by, resolve(hosts, &mut addrs))
        .await
        .map_err(|_| unanswered())??;
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(DialError::NoAddress);
    }
    let target = addrs
        .iter()
        .fold(EndpointAddr::new(id), |t, a| t.with_ip_addr(*a));
    let (alpn, options) = handshake::connect_alpns(formation);
    let mut connecting = timeout_at(answer_by, endpoint.connect_with_opts(target, alpn, options))
        .await
        .map_err(|_| unanswered())?
        .map_err(|e| connect_error(id, &addrs, &e))?;
    // Something that speaks QUIC with our protocol answered: a real node, perhaps on
    // a slow link. From here only the whole dial's deadline applies.
    timeout_at(answer_by, connecting.handshake_data())
        .await
        .map_err(|_| unanswered())?
        .map_err(|e| connect_error(id, &addrs, &e))?;
    debug!(peer = %id, after_ms = start.elapsed().as_millis() as u64, "the peer answered the dial");
    let stalled = || DialError::Stalled(start.elapsed());
    let conn = within(done_by, connecting, stalled)
        .await?
        .map_err(|e| connect_error(id, &addrs, &e))?;
    let check = handshake::authenticate(&conn, formation, endpoint.id(), Side::Dialer);
    match within(done_by, check, stalled).await? {
        Ok(()) => Ok(conn),
        Err(e) => {
            let code = e.close_code();
            conn.close(code.varint(), code.reason());
            Err(DialError::Formation(e))
        }
    }
}

/// `fut` until `deadline`, else the error `late` makes.
async fn within<T>(
    deadline: Instant,
    fut: impl Future<Output = T>,
    late: impl Fn() -> DialError,
) -> Result<T, DialError> {
    timeout_at(deadline, fut).await.map_err(|_| late())
}

/// Resolves host names into `addrs`. A failure is an error only while nothing else is
/// there to dial (nothing given, nothing resolved so far); otherwise the other
/// addresses are tried.
async fn resolve(hosts: Vec<PeerHost>, addrs: &mut Vec<SocketAddr>) -> Result<(), DialError> {
    for host in hosts {
        let PeerHost::Name { host, port } = host else {
            continue;
        };
        match tokio::net::lookup_host((host.clone(), port)).await {
            Ok(resolved) => addrs.extend(resolved),
            Err(e) if addrs.is_empty() => {
                return Err(DialError::Resolve {
                    host,
                    message: e.to_string(),
                })
            }
            Err(e) => debug!(%host, error = %e, "cannot resolve host; trying the other addresses"),
        }
    }
    Ok(())
}

/// A failed QUIC connect. rustls says "invalid peer certificate: UnknownIssuer" when the
/// node that answered has another key than the id we dialled: say that in words.
fn connect_error(id: EndpointId, addrs: &[SocketAddr], e: &dyn std::error::Error) -> DialError {
    let chain = error_chain(e);
    if chain.contains("UnknownIssuer") {
        DialError::OtherIdentity {
            expected: id,
            addrs: addrs.to_vec(),
            known: None,
        }
    } else {
        DialError::Connect(chain)
    }
}

/// The error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let t = src.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = src.source();
    }
    s
}

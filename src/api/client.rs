//! The command-line client: `status`, `peers`, `connect`, `disconnect`, `watch`.
//!
//! It prints tables for people and JSON (`--json`) for scripts. When no sidecar
//! answers, it prints one line naming the address it tried and exits non-zero.

use std::time::Duration;

use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tonic::transport::{Channel, Endpoint, Uri};

use super::{convert::state_name, pb, pb::sidecar_client::SidecarClient};
use crate::config::{ClientArgs, ConnectArgs, DisconnectArgs, ListenAddr};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no peat-sidecar answers at {0} (is `peat-sidecar run` running? set --api or PEAT_SIDECAR_API)")]
    Unreachable(String),
    #[error("{0}")]
    Rpc(String),
}

fn rpc_error(s: tonic::Status) -> ClientError {
    let code = match s.code() {
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::NotFound => "not found",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::DeadlineExceeded => "timed out",
        tonic::Code::ResourceExhausted => "limit reached",
        _ => "error",
    };
    ClientError::Rpc(format!("{code}: {}", s.message()))
}

pub async fn connect(api: &ListenAddr) -> Result<SidecarClient<Channel>, ClientError> {
    let unreachable = || ClientError::Unreachable(api.to_string());
    let channel = match api {
        ListenAddr::Tcp(addr) => Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|_| unreachable())?
            .connect_timeout(Duration::from_secs(3))
            .connect()
            .await
            .map_err(|_| unreachable())?,
        ListenAddr::Unix(path) => {
            let path = path.clone();
            // The URI is ignored: the connector always opens the socket.
            Endpoint::from_static("http://[::]:50051")
                .connect_timeout(Duration::from_secs(3))
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                }))
                .await
                .map_err(|_| unreachable())?
        }
    };
    Ok(SidecarClient::new(channel))
}

/// A transport failure on the first call also means nobody answers.
fn call_error(api: &ListenAddr, s: tonic::Status) -> ClientError {
    if s.code() == tonic::Code::Unavailable && s.message().contains("transport") {
        ClientError::Unreachable(api.to_string())
    } else {
        rpc_error(s)
    }
}

pub async fn status(args: &ClientArgs) -> Result<(), ClientError> {
    let mut c = connect(&args.api).await?;
    let s = c
        .get_status(pb::GetStatusRequest {})
        .await
        .map_err(|e| call_error(&args.api, e))?
        .into_inner();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status_json(&s)).unwrap_or_default()
        );
        return Ok(());
    }
    let modes = if s.discovery_modes.is_empty() {
        "none".to_string()
    } else {
        s.discovery_modes.join(",")
    };
    println!("endpoint id     {}", s.endpoint_id);
    println!(
        "app id          {}{}",
        s.app_id,
        if s.shared_key {
            " (shared key)"
        } else {
            " (no shared key)"
        }
    );
    println!("discovery       {modes}");
    println!(
        "peers           {} connected, {} known",
        s.connected_peers, s.known_peers
    );
    println!("iroh bound      {}", s.bound_addrs.join(", "));
    println!("api             {}", s.listen);
    println!("version         {}, up {}s", s.version, s.uptime_secs);
    Ok(())
}

fn status_json(s: &pb::GetStatusResponse) -> Value {
    let c = s.counters.unwrap_or_default();
    json!({
        "endpoint_id": s.endpoint_id,
        "app_id": s.app_id,
        "discovery_modes": s.discovery_modes,
        "listen": s.listen,
        "bound_addrs": s.bound_addrs,
        "connected_peers": s.connected_peers,
        "known_peers": s.known_peers,
        "version": s.version,
        "uptime_secs": s.uptime_secs,
        "shared_key": s.shared_key,
        "counters": {
            "dials_started": c.dials_started,
            "dials_failed": c.dials_failed,
            "connections_opened": c.connections_opened,
            "connections_closed": c.connections_closed,
            "handshakes_rejected": c.handshakes_rejected,
            "incoming_refused": c.incoming_refused,
            "duplicates_closed": c.duplicates_closed,
            "peers_evicted": c.peers_evicted,
            "live_tasks": c.live_tasks,
            "dials_in_flight": c.dials_in_flight,
            "handshakes_pending": c.handshakes_pending,
            "mdns_records": c.mdns_records,
            "runtime_tasks": c.runtime_tasks,
            "connections_live": c.connections_live,
        },
    })
}

pub fn peer_json(p: &pb::Peer) -> Value {
    json!({
        "endpoint_id": p.endpoint_id,
        "state": state_name(p.state),
        "sources": p.sources,
        "addrs": p.addrs,
        "rtt_ms": p.rtt_ms,
        "last_error": if p.last_error.is_empty() { Value::Null } else { Value::String(p.last_error.clone()) },
        "outbound": p.outbound,
        "paused": p.paused,
        "failures": p.failures,
    })
}

pub async fn peers(args: &ClientArgs) -> Result<(), ClientError> {
    let mut c = connect(&args.api).await?;
    let list = c
        .list_peers(pb::ListPeersRequest {})
        .await
        .map_err(|e| call_error(&args.api, e))?
        .into_inner()
        .peers;
    if args.json {
        let v: Vec<Value> = list.iter().map(peer_json).collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    if list.is_empty() {
        println!("no peers known");
        return Ok(());
    }
    println!(
        "{:<16} {:<11} {:<14} {:>8}  {:<24} LAST ERROR",
        "ENDPOINT", "STATE", "SOURCES", "RTT", "ADDRESSES"
    );
    for p in &list {
        let rtt = p
            .rtt_ms
            .map(|r| format!("{r:.1}ms"))
            .unwrap_or_else(|| "-".into());
        let short: String = p.endpoint_id.chars().take(16).collect();
        println!(
            "{:<16} {:<11} {:<14} {:>8}  {:<24} {}",
            short,
            state_name(p.state),
            p.sources.join(","),
            rtt,
            p.addrs.first().cloned().unwrap_or_default()
                + if p.addrs.len() > 1 { " +" } else { "" },
            p.last_error
        );
    }
    Ok(())
}

pub async fn connect_peer(args: &ConnectArgs) -> Result<(), ClientError> {
    let mut c = connect(&args.client.api).await?;
    let req = pb::ConnectPeerRequest {
        endpoint_id: args.peer.id.to_string(),
        addresses: args.peer.host.iter().map(|h| h.to_string()).collect(),
        timeout_ms: u32::try_from(args.timeout.saturating_mul(1000)).unwrap_or(u32::MAX),
    };
    let peer = c
        .connect_peer(req)
        .await
        .map_err(|e| call_error(&args.client.api, e))?
        .into_inner()
        .peer
        .unwrap_or_default();
    if args.client.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&peer_json(&peer)).unwrap_or_default()
        );
    } else {
        let rtt = peer
            .rtt_ms
            .map(|r| format!(", rtt {r:.1} ms"))
            .unwrap_or_default();
        println!("connected to {}{rtt}", peer.endpoint_id);
    }
    Ok(())
}

pub async fn disconnect_peer(args: &DisconnectArgs) -> Result<(), ClientError> {
    let mut c = connect(&args.client.api).await?;
    c.disconnect_peer(pb::DisconnectPeerRequest {
        endpoint_id: args.endpoint_id.to_string(),
    })
    .await
    .map_err(|e| call_error(&args.client.api, e))?;
    if args.client.json {
        println!(
            "{}",
            json!({"endpoint_id": args.endpoint_id.to_string(), "disconnected": true})
        );
    } else {
        println!(
            "disconnected {}; it is redialled only once found or connected again",
            args.endpoint_id
        );
    }
    Ok(())
}

pub async fn watch(args: &ClientArgs) -> Result<(), ClientError> {
    let mut c = connect(&args.api).await?;
    let mut stream = c
        .watch_peers(pb::WatchPeersRequest {})
        .await
        .map_err(|e| call_error(&args.api, e))?
        .into_inner();
    loop {
        match stream.message().await {
            Ok(Some(ev)) => {
                if args.json {
                    println!(
                        "{}",
                        json!({"endpoint_id": ev.endpoint_id, "kind": ev.kind, "detail": ev.detail, "unix_ms": ev.unix_ms})
                    );
                } else {
                    println!("{:<13} {} {}", ev.kind, ev.endpoint_id, ev.detail);
                }
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(rpc_error(e)),
        }
    }
}

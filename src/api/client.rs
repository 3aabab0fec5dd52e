//! The command-line client: `status`, `peers`, `connect`, `disconnect`, `watch`.
//!
//! It prints tables for people and JSON (`--json`) for scripts. When no sidecar
//! answers, it prints one line naming the address it tried and exits non-zero.

use std::time::Duration;

use serde_json::{json, Value};
use tonic::transport::Channel;

pub use super::channel::ClientError;
use super::{
    channel::Target,
    convert::state_name,
    idprefix::PeerRef,
    output::{human_duration, timestamp},
    pb,
    pb::sidecar_client::SidecarClient,
    server::{DEFAULT_CONNECT_WAIT, SHUTDOWN_EVENT},
};
use crate::{
    config::{ClientArgs, ConnectArgs, DisconnectArgs, RevokeFileArgs},
    outln,
};

/// Margin over ConnectPeer's own wait for its answer to arrive.
const ANSWER_MARGIN: Duration = Duration::from_secs(5);

async fn open(args: &ClientArgs) -> Result<(SidecarClient<Channel>, Target), ClientError> {
    let target = Target::new(&args.api, args.timeout);
    Ok((target.connect().await?, target))
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

pub async fn status(args: &ClientArgs) -> Result<(), ClientError> {
    let (mut c, t) = open(args).await?;
    let s = t.call(c.get_status(pb::GetStatusRequest {})).await?;
    if args.json {
        outln!("{}", pretty(&status_json(&s)))?;
        return Ok(());
    }
    let modes = if s.discovery_modes.is_empty() {
        "none".to_string()
    } else {
        s.discovery_modes.join(",")
    };
    let key = if s.shared_key {
        "shared key"
    } else {
        "no shared key"
    };
    outln!("endpoint id     {}", s.endpoint_id)?;
    outln!("app id          {} ({key})", s.app_id)?;
    outln!("discovery       {modes}")?;
    outln!(
        "peers           {} connected, {} known",
        s.connected_peers,
        s.known_peers
    )?;
    let others = s.counters.as_ref().map_or(0, |c| c.mdns_other_app_records);
    if others > 0 {
        // The usual reason for "0 known" on a LAN full of sidecars: a mistyped app id.
        outln!("other app ids   {others} mDNS records of other formations, not dialled (see the log; check --app-id)")?;
    }
    outln!("iroh bound      {}", s.bound_addrs.join(", "))?;
    outln!("api             {}", s.listen)?;
    outln!(
        "version         {}, up {}",
        s.version,
        human_duration(s.uptime_secs)
    )?;
    print_counters(&s.counters.clone().unwrap_or_default())?;
    super::client_data::print_stats(&s.data.unwrap_or_default())
}

/// The counters of `status --json`, as a table for people.
fn print_counters(c: &pb::Counters) -> Result<(), ClientError> {
    let rows = [
        (
            "dials",
            format!(
                "{} started, {} failed, {} in flight",
                c.dials_started, c.dials_failed, c.dials_in_flight
            ),
        ),
        (
            "connections",
            format!(
                "{} opened, {} closed, {} live, {} duplicates closed",
                c.connections_opened, c.connections_closed, c.connections_live, c.duplicates_closed
            ),
        ),
        (
            "handshakes",
            format!(
                "{} rejected, {} pending, {} incoming refused",
                c.handshakes_rejected, c.handshakes_pending, c.incoming_refused
            ),
        ),
        ("certificates", refusals(&c.certificate_refusals)),
        ("peers evicted", c.peers_evicted.to_string()),
        (
            "mdns records",
            format!(
                "{} tracked, {} of other app ids",
                c.mdns_records, c.mdns_other_app_records
            ),
        ),
        (
            "tasks",
            format!("{} live, {} in the runtime", c.live_tasks, c.runtime_tasks),
        ),
    ];
    for (name, value) in rows {
        outln!("{name:<15} {value}")?;
    }
    Ok(())
}

/// `3 refused (expired 2, revoked 1)`, or `0 refused`.
fn refusals(by_reason: &std::collections::HashMap<String, u64>) -> String {
    let mut parts: Vec<_> = by_reason.iter().filter(|(_, n)| **n > 0).collect();
    parts.sort();
    let total: u64 = parts.iter().map(|(_, n)| **n).sum();
    if parts.is_empty() {
        return "0 refused".into();
    }
    let list: Vec<String> = parts.iter().map(|(r, n)| format!("{r} {n}")).collect();
    format!("{total} refused ({})", list.join(", "))
}

fn status_json(s: &pb::GetStatusResponse) -> Value {
    let c = s.counters.clone().unwrap_or_default();
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
            "mdns_other_app_records": c.mdns_other_app_records,
            "runtime_tasks": c.runtime_tasks,
            "connections_live": c.connections_live,
            "dial_failures": c.dial_failures,
            "incoming_handshakes": c.incoming_handshakes,
            "certificate_refusals": c.certificate_refusals,
            "gossip_rounds": c.gossip_rounds,
            "dns_rounds": c.dns_rounds,
            "mdns_daemon": c.mdns_daemon,
        },
        "data": super::convert::data_stats_json(&s.data.unwrap_or_default()),
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
        "bytes_sent": p.bytes_sent,
        "bytes_received": p.bytes_received,
        "packets_sent": p.packets_sent,
        "packets_lost": p.packets_lost,
        "messages_in": p.messages_in,
        "messages_out": p.messages_out,
        "link": link_json(p),
    })
}

/// The data link's classes and cap; null without a link.
fn link_json(p: &pb::Peer) -> Value {
    let Some(cap) = p.link_rate_cap else {
        return Value::Null;
    };
    let classes: serde_json::Map<String, Value> = p
        .link_classes
        .iter()
        .map(|c| {
            let v = json!({
                "sent_frames": c.sent_frames,
                "sent_bytes": c.sent_bytes,
                "queued_frames": c.queued_frames,
                "queued_bytes": c.queued_bytes,
                "dropped": c.dropped,
                "replaced": c.replaced,
            });
            (c.class.clone(), v)
        })
        .collect();
    json!({ "rate_cap_bps": cap, "classes": classes })
}

pub async fn peers(args: &ClientArgs) -> Result<(), ClientError> {
    let (mut c, t) = open(args).await?;
    let list = t.call(c.list_peers(pb::ListPeersRequest {})).await?.peers;
    if args.json {
        let v: Vec<Value> = list.iter().map(peer_json).collect();
        outln!("{}", pretty(&Value::Array(v)))?;
        return Ok(());
    }
    if list.is_empty() {
        outln!("no peers known")?;
        return Ok(());
    }
    outln!(
        "{:<16} {:<11} {:<14} {:>8} {:>6}  {:<24} LAST ERROR",
        "ENDPOINT",
        "STATE",
        "SOURCES",
        "RTT",
        "LOSS",
        "ADDRESSES"
    )?;
    for p in &list {
        let rtt = p
            .rtt_ms
            .map(|r| format!("{r:.1}ms"))
            .unwrap_or_else(|| "-".into());
        let loss = super::convert::loss_pct(p)
            .map(|l| format!("{l:.1}%"))
            .unwrap_or_else(|| "-".into());
        let short: String = p.endpoint_id.chars().take(16).collect();
        outln!(
            "{:<16} {:<11} {:<14} {:>8} {:>6}  {:<24} {}",
            short,
            state_name(p.state),
            p.sources.join(","),
            rtt,
            loss,
            p.addrs.first().cloned().unwrap_or_default()
                + if p.addrs.len() > 1 { " +" } else { "" },
            p.last_error
        )?;
    }
    Ok(())
}

/// The whole id for `id`: a prefix is looked up among the peers the sidecar knows.
async fn resolve(
    c: &mut SidecarClient<Channel>,
    t: &Target,
    id: &PeerRef,
) -> Result<String, ClientError> {
    if id.is_full() {
        return Ok(id.to_string());
    }
    let list = t.call(c.list_peers(pb::ListPeersRequest {})).await?.peers;
    Ok(id.resolve(&list)?)
}

pub async fn connect_peer(args: &ConnectArgs) -> Result<(), ClientError> {
    let (mut c, t) = open(&args.client).await?;
    let wait = args
        .client
        .timeout
        .map_or(DEFAULT_CONNECT_WAIT, Duration::from_secs);
    let req = pb::ConnectPeerRequest {
        endpoint_id: resolve(&mut c, &t, &args.peer.id).await?,
        addresses: args.peer.host.iter().cloned().collect(),
        timeout_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
    };
    let peer = t
        .call_within(wait + ANSWER_MARGIN, c.connect_peer(req))
        .await?
        .peer
        .unwrap_or_default();
    if args.client.json {
        outln!("{}", pretty(&peer_json(&peer)))?;
    } else {
        let rtt = peer
            .rtt_ms
            .map(|r| format!(", rtt {r:.1} ms"))
            .unwrap_or_default();
        outln!("connected to {}{rtt}", peer.endpoint_id)?;
    }
    Ok(())
}

pub async fn disconnect_peer(args: &DisconnectArgs) -> Result<(), ClientError> {
    let (mut c, t) = open(&args.client).await?;
    let id = resolve(&mut c, &t, &args.endpoint_id).await?;
    t.call(c.disconnect_peer(pb::DisconnectPeerRequest {
        endpoint_id: id.clone(),
    }))
    .await?;
    let text = format!("disconnected {id}; it is redialled only once found or connected again");
    done(args.client.json, &id, "disconnected", &text)
}

pub async fn forget_peer(args: &DisconnectArgs) -> Result<(), ClientError> {
    let (mut c, t) = open(&args.client).await?;
    let id = resolve(&mut c, &t, &args.endpoint_id).await?;
    t.call(c.forget_peer(pb::ForgetPeerRequest {
        endpoint_id: id.clone(),
    }))
    .await?;
    let text = format!("forgot {id}; it is dialled again only once a discovery source finds it");
    done(args.client.json, &id, "forgotten", &text)
}

/// The one line a request on one peer prints: `{"endpoint_id": ID, WHAT: true}` or text.
fn done(json: bool, id: &str, what: &str, text: &str) -> Result<(), ClientError> {
    if json {
        outln!("{}", json!({"endpoint_id": id, what: true}))?;
    } else {
        outln!("{text}")?;
    }
    Ok(())
}

/// `revoke FILE`: hands a revocation file's text to the sidecar, which checks it.
pub async fn revoke(args: &RevokeFileArgs) -> Result<(), ClientError> {
    let text = crate::trust::store::read_text(&args.file).map_err(|cause| ClientError::File {
        path: args.file.clone(),
        cause,
    })?;
    let (mut c, t) = open(&args.client).await?;
    let r = t
        .call(c.revoke(pb::RevokeRequest { revocation: text }))
        .await?;
    let id = &r.endpoint_id;
    if args.client.json {
        outln!(
            "{}",
            json!({"endpoint_id": id, "revoked": true, "already_known": r.already_known})
        )?;
    } else if r.already_known {
        outln!("{id} was already revoked here; the revocation spreads to the formation")?;
    } else {
        outln!(
            "revoked {id}: its connections are closed, and the revocation spreads to every node"
        )?;
    }
    Ok(())
}

/// Streams events until the sidecar ends the stream. Only opening the stream has a
/// deadline: events may be minutes apart.
pub async fn watch(args: &ClientArgs) -> Result<(), ClientError> {
    let (mut c, t) = open(args).await?;
    let mut stream = t.call(c.watch_peers(pb::WatchPeersRequest {})).await?;
    loop {
        match stream.message().await {
            Ok(Some(ev)) => {
                let last = ev.kind == SHUTDOWN_EVENT;
                if args.json {
                    outln!(
                        "{}",
                        json!({"endpoint_id": ev.endpoint_id, "kind": ev.kind, "detail": ev.detail, "unix_ms": ev.unix_ms})
                    )?;
                } else if !last {
                    outln!(
                        "{} {:<13} {} {}",
                        timestamp(ev.unix_ms),
                        ev.kind,
                        ev.endpoint_id,
                        ev.detail
                    )?;
                }
                if last {
                    note(&format!("{}: {}", t.api, ev.detail));
                    return Ok(());
                }
            }
            Ok(None) => {
                note(&format!("{}: the sidecar ended the stream", t.api));
                return Ok(());
            }
            Err(e) => return Err(t.error(e)),
        }
    }
}

/// A line on stderr; a closed stderr is no reason to fail.
fn note(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{msg}");
}

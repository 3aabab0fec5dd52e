//! `/metrics`: the API's status and peer snapshots in the OpenMetrics text format, on
//! `--metrics-listen`.
//!
//! Every scrape builds a fresh registry from one [`Snapshot`], so the metrics say
//! exactly what `status` and `peers` say and a forgotten peer leaves no stale series.

use std::{collections::HashSet, convert::Infallible, net::SocketAddr, sync::atomic::AtomicU64};

use http_body_util::Full;
use hyper::{body::Bytes, header, server::conn::http1, service::service_fn, Method, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::Gauge,
    },
    registry::Registry,
};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    convert::state_name,
    pb,
    server::{SidecarService, Snapshot},
};

/// Every metric name starts with this.
const PREFIX: &str = "peat_sidecar";
/// The peer states, all exported (zeros included) so that alert rules always find them.
const STATES: [pb::PeerState; 5] = [
    pb::PeerState::Discovered,
    pb::PeerState::Connecting,
    pb::PeerState::Connected,
    pb::PeerState::Backoff,
    pb::PeerState::Rejected,
];
/// The discovery sources a peer can come from.
const SOURCES: [&str; 6] = ["static", "api", "mdns", "dns", "gossip", "inbound"];
/// Hex characters of the endpoint id in the `peer` label (as `peat-sidecar peers`).
const SHORT_ID: usize = 16;
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic Prometheus text format, for clients that do not ask for OpenMetrics
/// (curl, `promtool check metrics`, Prometheus before 2.5).
const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen for metrics on {addr}: {cause}. Is another process using it? Choose another with --metrics-listen (PEAT_SIDECAR_METRICS_LISTEN)")]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
}

/// Binds the metrics listener; a failure stops the start, like a bad `--listen`.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|cause| MetricsError::Bind { addr, cause })
}

/// Serves `/metrics` until `shutdown` fires; open scrape connections are dropped then.
pub async fn serve(listener: TcpListener, service: SidecarService, shutdown: CancellationToken) {
    info!(addr = %crate::logfmt::opt(listener.local_addr().ok()), "metrics listening");
    let mut conns = JoinSet::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends pass; do not spin on them.
                    warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = service.clone();
        conns.spawn(async move {
            let handler = service_fn(move |req| respond(service.clone(), req));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), handler)
                .await
            {
                debug!(error = %e, "metrics: connection ended with an error");
            }
        });
    }
}

async fn respond(
    service: SidecarService,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let reply = |status, ctype, body: String| {
        let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        if let Ok(v) = header::HeaderValue::from_str(ctype) {
            resp.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        Ok(resp)
    };
    if req.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "text/plain", "try /metrics\n".into());
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET /metrics\n".into(),
        );
    }
    let openmetrics = req.headers().get_all(header::ACCEPT).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.contains("application/openmetrics-text"))
    });
    match render(&service.snapshot().await) {
        Ok(text) if openmetrics => reply(StatusCode::OK, OPENMETRICS, text),
        Ok(text) => reply(StatusCode::OK, CLASSIC, to_classic(&text)),
        Err(e) => {
            warn!(error = %e, "metrics: encoding failed");
            reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                "encoding failed\n".into(),
            )
        }
    }
}

/// The OpenMetrics text of one snapshot.
pub fn render(snap: &Snapshot) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix(PREFIX);
    register_node(&mut registry, &snap.status);
    if let Some(c) = &snap.status.counters {
        register_counters(&mut registry, c);
    }
    if let Some(d) = &snap.status.data {
        super::metrics_data::register(&mut registry, d);
    }
    register_peers(&mut registry, &snap.peers);
    super::metrics_data::register_links(&mut registry, &snap.peers);
    super::metrics_iroh::register(&mut registry, &snap.iroh);
    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

/// OpenMetrics text down to the classic format: a counter's HELP and TYPE lines name
/// the `_total` series (OpenMetrics names the family without it), and no `# EOF`.
/// Only what this module's registry produces is handled (counters and gauges).
pub fn to_classic(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{p}{name}{suffix} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

pub(super) fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let g = Gauge::<i64>::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    registry.register(name, help, g);
}

pub(super) fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    registry.register(name, help, ConstCounter::new(value));
}

fn info(registry: &mut Registry, name: &str, help: &str, labels: Labels) {
    let family = Family::<Labels, Gauge>::default();
    family.get_or_create(&labels).set(1);
    registry.register(name, help, family);
}

fn register_node(r: &mut Registry, s: &pb::GetStatusResponse) {
    // Gauges set to 1 rather than OpenMetrics `info`: promtool and the classic text
    // parser (Prometheus before 3.0) reject the `info` type.
    let build: Labels = vec![
        ("version", s.version.clone()),
        ("arch", std::env::consts::ARCH.to_string()),
        ("os", std::env::consts::OS.to_string()),
        ("target", env!("PEAT_BUILD_TARGET").to_string()),
        ("commit", env!("PEAT_BUILD_COMMIT").to_string()),
    ];
    info(
        r,
        "build_info",
        "Version and platform of this binary",
        build,
    );
    let node: Labels = vec![
        ("endpoint_id", s.endpoint_id.clone()),
        ("app_id", s.app_id.clone()),
        ("shared_key", s.shared_key.to_string()),
    ];
    info(
        r,
        "node_info",
        "Identity and formation of this sidecar",
        node,
    );
    let modes = Family::<Labels, Gauge>::default();
    for m in &s.discovery_modes {
        modes.get_or_create(&vec![("mode", m.clone())]).set(1);
    }
    r.register("discovery_mode", "1 for each discovery mode enabled", modes);
    gauge(
        r,
        "uptime_seconds",
        "Seconds since the daemon started",
        s.uptime_secs,
    );
    gauge(
        r,
        "connected_peers",
        "Peers connected now",
        s.connected_peers.into(),
    );
    gauge(
        r,
        "known_peers",
        "Peers in the peer table",
        s.known_peers.into(),
    );
}

/// The peer manager's counters: name, help, value.
fn manager_counters(c: &pb::Counters) -> Vec<(&'static str, &'static str, u64)> {
    vec![
        ("dials_started", "Outgoing dials started", c.dials_started),
        ("dials_failed", "Outgoing dials that failed", c.dials_failed),
        (
            "connections_opened",
            "Connections that passed the formation check",
            c.connections_opened,
        ),
        (
            "connections_closed",
            "Connections closed",
            c.connections_closed,
        ),
        (
            "handshakes_rejected",
            "Connections refused by the formation check",
            c.handshakes_rejected,
        ),
        (
            "incoming_refused",
            "Incoming connections refused before the handshake (limits)",
            c.incoming_refused,
        ),
        (
            "duplicates_closed",
            "Duplicate connections to one peer closed",
            c.duplicates_closed,
        ),
        (
            "peers_evicted",
            "Peers dropped from the full peer table",
            c.peers_evicted,
        ),
    ]
}

/// The peer manager's gauges (leak indicators among them): name, help, value.
fn manager_gauges(c: &pb::Counters) -> Vec<(&'static str, &'static str, u64)> {
    vec![
        ("live_tasks", "Tasks the peer manager runs", c.live_tasks),
        (
            "dials_in_flight",
            "Outgoing dials not finished yet",
            c.dials_in_flight,
        ),
        (
            "handshakes_pending",
            "Incoming connections still in their handshake",
            c.handshakes_pending,
        ),
        (
            "mdns_records",
            "mDNS records tracked by the mdns source",
            c.mdns_records,
        ),
        (
            "mdns_other_app_records",
            "mDNS records of other app ids (other formations), not dialled",
            c.mdns_other_app_records,
        ),
        (
            "runtime_tasks",
            "Tasks alive in the async runtime",
            c.runtime_tasks,
        ),
        (
            "connections_live",
            "Connections the peer table holds",
            c.connections_live,
        ),
    ]
}

fn register_counters(r: &mut Registry, c: &pb::Counters) {
    for (name, help, v) in manager_counters(c) {
        counter(r, name, help, v);
    }
    for (name, help, v) in manager_gauges(c) {
        gauge(r, name, help, v);
    }
    let rounds = [
        (
            "gossip_rounds",
            "Gossip exchange rounds run",
            c.gossip_rounds,
        ),
        ("dns_rounds", "DNS resolution rounds run", c.dns_rounds),
    ];
    for (name, help, v) in rounds {
        counter(r, name, help, v);
    }
    register_mdns_daemon(r, &c.mdns_daemon);
    labelled_counters(
        r,
        "dial_failures",
        "Failed dials by reason",
        "reason",
        &c.dial_failures,
    );
    labelled_counters(
        r,
        "incoming_handshakes",
        "Formation checks of incoming connections by outcome",
        "outcome",
        &c.incoming_handshakes,
    );
    labelled_counters(
        r,
        "certificate_refusals",
        "Peers' member certificates refused, by reason",
        "reason",
        &c.certificate_refusals,
    );
}

/// mdns-sd's own counters, by its names for them.
fn register_mdns_daemon(r: &mut Registry, values: &std::collections::HashMap<String, i64>) {
    let daemon = Family::<Labels, Gauge>::default();
    let mut sorted: Vec<_> = values.iter().collect();
    sorted.sort();
    for (name, v) in sorted {
        daemon
            .get_or_create(&vec![("counter", name.clone())])
            .set(*v);
    }
    r.register(
        "mdns_daemon",
        "mdns-sd's own counters and cache sizes by name (respond, register, browse, cache-refresh-*, cached-*)",
        daemon,
    );
}

/// One counter family from a map of label value -> count (sorted, so scrapes diff well).
fn labelled_counters(
    r: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: &std::collections::HashMap<String, u64>,
) {
    let family = Family::<Labels, Counter>::default();
    let mut sorted: Vec<_> = values.iter().collect();
    sorted.sort();
    for (value, n) in sorted {
        family
            .get_or_create(&vec![(label, value.clone())])
            .inc_by(*n);
    }
    r.register(name, help, family);
}

fn register_peers(r: &mut Registry, peers: &[pb::Peer]) {
    let by_state = Family::<Labels, Gauge>::default();
    for s in STATES {
        by_state
            .get_or_create(&vec![("state", state_name(s as i32).to_string())])
            .set(0);
    }
    let by_source = Family::<Labels, Gauge>::default();
    for s in SOURCES {
        by_source
            .get_or_create(&vec![("source", s.to_string())])
            .set(0);
    }
    let rtt = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let failures = Family::<Labels, Gauge>::default();
    let sent = Family::<Labels, Counter>::default();
    let received = Family::<Labels, Counter>::default();
    for p in peers {
        by_state
            .get_or_create(&vec![("state", state_name(p.state).to_string())])
            .inc();
        for s in &p.sources {
            by_source.get_or_create(&vec![("source", s.clone())]).inc();
        }
        let peer: Labels = vec![("peer", p.endpoint_id.chars().take(SHORT_ID).collect())];
        if let Some(ms) = p.rtt_ms {
            rtt.get_or_create(&peer).set(ms / 1000.0);
        }
        failures.get_or_create(&peer).set(p.failures.into());
        if let (Some(tx), Some(rx)) = (p.bytes_sent, p.bytes_received) {
            sent.get_or_create(&peer).inc_by(tx);
            received.get_or_create(&peer).inc_by(rx);
        }
    }
    r.register("peers", "Peers in the peer table by state", by_state);
    r.register(
        "peers_by_source",
        "Peers in the peer table by the source that found them (a peer may have several)",
        by_source,
    );
    r.register(
        "peer_rtt_seconds",
        "Round-trip time to each connected peer",
        rtt,
    );
    r.register(
        "peer_failures",
        "Consecutive failed connection attempts per peer",
        failures,
    );
    r.register(
        "peer_sent_bytes",
        "UDP bytes sent on the connection to each connected peer",
        sent,
    );
    r.register(
        "peer_received_bytes",
        "UDP bytes received on the connection from each connected peer",
        received,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str, state: pb::PeerState, sources: &[&str], rtt: Option<f64>) -> pb::Peer {
        pb::Peer {
            endpoint_id: id.repeat(64),
            state: state as i32,
            sources: sources.iter().map(|s| s.to_string()).collect(),
            rtt_ms: rtt,
            ..Default::default()
        }
    }

    fn sample() -> Snapshot {
        Snapshot {
            status: pb::GetStatusResponse {
                endpoint_id: "ab".repeat(32),
                app_id: "peat".into(),
                discovery_modes: vec!["mdns".into()],
                version: "0.1.0".into(),
                connected_peers: 1,
                known_peers: 2,
                counters: Some(pb::Counters {
                    dials_started: 7,
                    mdns_records: 3,
                    ..Default::default()
                }),
                ..Default::default()
            },
            peers: vec![
                peer(
                    "a",
                    pb::PeerState::Connected,
                    &["mdns", "static"],
                    Some(2.5),
                ),
                peer("b", pb::PeerState::Backoff, &["mdns"], None),
            ],
            iroh: vec![super::super::metrics_iroh::IrohSample {
                name: "socket_recv_datagrams".into(),
                help: "Number of QUIC datagrams received.",
                value: super::super::metrics_iroh::IrohValue::Counter(42),
            }],
        }
    }

    #[test]
    fn counters_gauges_and_labels() {
        let text = render(&sample()).unwrap();
        for line in [
            "# TYPE peat_sidecar_dials_started counter",
            "peat_sidecar_dials_started_total 7",
            "peat_sidecar_iroh_socket_recv_datagrams_total 42",
            "# TYPE peat_sidecar_mdns_records gauge",
            "peat_sidecar_mdns_records 3",
            "peat_sidecar_peers{state=\"connected\"} 1",
            "peat_sidecar_peers{state=\"backoff\"} 1",
            "peat_sidecar_peers{state=\"rejected\"} 0",
            "peat_sidecar_peers_by_source{source=\"mdns\"} 2",
            "peat_sidecar_peers_by_source{source=\"dns\"} 0",
            "peat_sidecar_peer_rtt_seconds{peer=\"aaaaaaaaaaaaaaaa\"} 0.0025",
            "peat_sidecar_discovery_mode{mode=\"mdns\"} 1",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
        assert!(text.contains("peat_sidecar_build_info{version=\"0.1.0\""));
        let classic = to_classic(&text);
        for line in [
            "# HELP peat_sidecar_dials_started_total Outgoing dials started.",
            "# TYPE peat_sidecar_dials_started_total counter",
            "peat_sidecar_dials_started_total 7",
            "peat_sidecar_iroh_socket_recv_datagrams_total 42",
            "# TYPE peat_sidecar_mdns_records gauge",
        ] {
            assert!(
                classic.lines().any(|l| l == line),
                "no `{line}` in\n{classic}"
            );
        }
        assert!(!classic.contains("# EOF"));
        // Only connected peers have an RTT.
        assert!(!text.contains("peer_rtt_seconds{peer=\"bbbb"));
    }
}

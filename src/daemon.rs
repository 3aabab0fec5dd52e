//! `peat-sidecar run`: starts the node, the discovery sources and the API, then waits
//! for SIGINT or SIGTERM and shuts down in the reverse order.

use std::time::Instant;

use anyhow::Context;
use iroh::SecretKey;
use tokio::{
    signal::unix::{signal, SignalKind},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    api::{
        metrics,
        server::{self, ApiServer, SidecarService, StatusInfo},
    },
    config::{LogFormat, RunArgs},
    discovery::{self, SourceContext},
    node::{identity, Node, NodeConfig},
    notify,
    settings::{Host, Settings},
};

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    // Everything that can be wrong with the settings is checked before binding anything.
    let host = Host::current()?;
    let settings = Settings::check(&args, &host)?;
    log_settings(&settings, &host);
    // Held until the process ends: a second daemon on this data dir would be a second
    // host with the same identity.
    let _data_dir_lock = identity::lock_data_dir(&settings.data_dir)?;
    let secret_key = identity::load_or_create(&settings.data_dir)?;
    let api = &settings.api;
    let api_listener =
        server::bind(&api.listen, api.socket_mode, api.socket_group.as_deref()).await?;
    let metrics_listener = match settings.api.metrics_listen {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };
    let web_listener = match settings.web.listen {
        Some(addr) => Some(crate::api::web::bind(addr).await?),
        None => None,
    };

    // The data plane opens first: the revocations it holds are in force before the
    // node makes or takes its first connection.
    let authority = settings.node.trust.as_ref().map(|t| t.authority);
    let opened = crate::data::open(&settings.data, &secret_key, authority)
        .context("the data plane could not start")?;
    let node = start_node(&settings, secret_key.clone(), opened.revocations()).await?;
    let (data, data_tasks) = opened.start(node.peers(), node.trust()).await;
    let shutdown = CancellationToken::new();
    crate::netchange::spawn(node.endpoint().clone(), shutdown.child_token());
    let sources = match start_sources(&settings, &node, secret_key, &shutdown).await {
        Ok(s) => s,
        Err(e) => {
            data_tasks.shutdown().await;
            node.shutdown().await;
            return Err(e).context("discovery could not start");
        }
    };

    let service = SidecarService::new(node.peers().clone(), status_info(&settings, &node))
        .with_data(data)
        .with_trust(node.trust());
    let stop = service.stop_token();
    let api_server = ApiServer::spawn(api_listener, service.clone());
    let metrics_task =
        metrics_listener.map(|l| tokio::spawn(metrics::serve(l, service.clone(), stop.clone())));
    let web_task = web_listener.map(|l| {
        let events = node.peers().subscribe();
        tokio::spawn(crate::api::web::serve(
            l,
            service.clone(),
            events,
            stop.clone(),
        ))
    });
    notify::ready(&service).await;
    let notify_task = notify::spawn(service, stop);
    info!(endpoint_id = %node.id(), listen = %api.listen, "peat-sidecar running");

    let signal_name = wait_for_signal().await?;
    info!(signal = signal_name, "shutting down");
    notify::stopping();
    // Goodbyes first, while the endpoint still works; then the connections.
    shutdown.cancel();
    discovery::join_sources(sources).await;
    data_tasks.shutdown().await;
    node.shutdown().await;
    api_server.shutdown().await;
    for task in [metrics_task, web_task, notify_task].into_iter().flatten() {
        let _ = task.await;
    }
    info!("stopped");
    Ok(())
}

async fn start_node(
    settings: &Settings,
    secret_key: SecretKey,
    learned: Vec<crate::trust::Revocation>,
) -> anyhow::Result<Node> {
    let mut n = settings.node.clone();
    if let Some(t) = &mut n.trust {
        t.learned = learned;
    }
    Ok(Node::start(NodeConfig {
        secret_key,
        bind: n.bind,
        app_id: n.app_id,
        shared_key: n.shared_key,
        accepted_keys: n.accepted_keys,
        static_peers: n.static_peers,
        limits: n.limits,
        liveness: n.liveness,
        beacons: n.beacons,
        trust: n.trust,
    })
    .await?)
}

async fn start_sources(
    settings: &Settings,
    node: &Node,
    secret_key: SecretKey,
    shutdown: &CancellationToken,
) -> Result<JoinSet<()>, discovery::DiscoveryError> {
    let bound_addrs = node.bound_addrs();
    let ctx = SourceContext {
        secret_key,
        endpoint_id: node.id(),
        app_id: node.app_id().to_string(),
        iroh_port: bound_addrs
            .first()
            .map(|a| a.port())
            .unwrap_or(crate::config::DEFAULT_IROH_PORT),
        bound_addrs,
        peers: node.peers().clone(),
        shutdown: shutdown.child_token(),
    };
    discovery::spawn_sources(&settings.discovery, ctx).await
}

fn status_info(settings: &Settings, node: &Node) -> StatusInfo {
    StatusInfo {
        endpoint_id: node.id(),
        app_id: node.app_id().to_string(),
        discovery_modes: settings
            .discovery
            .modes
            .0
            .iter()
            .map(|m| m.to_string())
            .collect(),
        listen: settings.api.listen.to_string(),
        bound_addrs: node.bound_addrs().iter().map(|a| a.to_string()).collect(),
        shared_key: node.has_shared_key(),
        started: Instant::now(),
        iroh: node.endpoint_metrics(),
    }
}

/// One line with the settings in effect, and a warning for each that looks wrong but
/// can still work (an interface that may appear later).
fn log_settings(s: &Settings, host: &Host) {
    let live = s.node.liveness;
    info!(
        bind = %crate::logfmt::list(&s.node.bind),
        app_id = %s.node.app_id,
        discovery = %s.discovery.modes,
        keep_alive_ms = live.keep_alive.as_millis() as u64,
        idle_timeout_ms = live.idle_timeout.as_millis() as u64,
        beacon_interval_ms = s.node.beacons.beacon_interval.map_or(0, |d| d.as_millis() as u64),
        "settings checked"
    );
    if s.node.beacons.beacon_interval.is_none()
        && live.idle_timeout > std::time::Duration::from_secs(30)
    {
        warn!(
            idle_timeout_ms = live.idle_timeout.as_millis() as u64,
            "beacons are off (--beacon-interval-ms 0): a crashed peer is noticed only after the idle timeout; lower --keep-alive-ms and --idle-timeout-ms (for example 1000 and 5000)"
        );
    }
    if let Some(w) = s.web.exposure_warning() {
        warn!("{w}");
    }
    if let crate::config::ListenAddr::Tcp(addr) = &s.api.listen {
        if !addr.ip().is_loopback() {
            warn!(
                listen = %s.api.listen,
                "the gRPC API on {addr} has no authentication: every host that reaches this port can publish, read the retained data and connect or disconnect peers. Restrict it: --listen tcp://127.0.0.1:{} (this host only), --listen unix:///run/peat-sidecar/api.sock with --socket-group (apps of one group), or a firewall rule for port {}",
                addr.port(),
                addr.port()
            );
        }
    }
    if let Some(mdns) = &s.discovery.mdns {
        for u in mdns.unmatched(&host.interfaces) {
            warn!(pattern = %u.pattern, eligible = %u.eligible.join(","), "{u}");
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

//! `peat-sidecar run`: starts the node, the discovery sources and the API, then waits
//! for SIGINT or SIGTERM and shuts down in the reverse order.

use std::{sync::Arc, time::Instant};

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{
    api::{
        metrics,
        server::{self, SidecarService, StatusInfo},
    },
    config::{LogFormat, RunArgs},
    discovery::{self, EventSink, SourceContext},
    node::{endpoint::Liveness, identity, peers::Limits, Node, NodeConfig},
    notify,
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
    let modes = args.modes()?;
    check_built(&modes)?;
    let shared_key = args.load_shared_key()?;
    let secret_key = identity::load_or_create(&args.data_dir)?;
    let api = server::bind(&args.listen, args.socket_mode, args.socket_group.as_deref()).await?;
    let metrics_listener = match args.metrics_listen {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };

    let node = Node::start(NodeConfig {
        secret_key: secret_key.clone(),
        bind: args.bind,
        app_id: args.app_id.clone(),
        shared_key,
        static_peers: args.peers.clone(),
        limits: Limits {
            max_peers: args.max_peers,
            max_known_peers: args.max_known_peers.max(1),
            max_concurrent_dials: args.max_concurrent_dials.max(1),
            max_dials_per_sec: args.max_dials_per_sec,
            max_pending_handshakes: args.max_pending_handshakes as usize,
        },
        liveness: Liveness {
            keep_alive: args.keep_alive(),
            idle_timeout: args.idle_timeout(),
        },
    })
    .await?;

    let shutdown = CancellationToken::new();
    let bound_addrs = node.bound_addrs();
    let ctx = SourceContext {
        secret_key,
        endpoint_id: node.id(),
        app_id: node.app_id().to_string(),
        iroh_port: bound_addrs
            .first()
            .map(|a| a.port())
            .unwrap_or(args.bind.port()),
        bound_addrs: bound_addrs.clone(),
        args: Arc::new(args.clone()),
        events: EventSink::new(node.peers().sender()),
        peers: node.peers().clone(),
        shutdown: shutdown.child_token(),
    };
    let sources = match discovery::spawn_sources(&modes, ctx).await {
        Ok(s) => s,
        Err(e) => {
            node.shutdown().await;
            return Err(e).context("discovery could not start");
        }
    };

    let service = SidecarService::new(
        node.peers().clone(),
        StatusInfo {
            endpoint_id: node.id(),
            app_id: node.app_id().to_string(),
            discovery_modes: modes.iter().map(|m| m.to_string()).collect(),
            listen: args.listen.to_string(),
            bound_addrs: bound_addrs.iter().map(|a| a.to_string()).collect(),
            shared_key: node.has_shared_key(),
            started: Instant::now(),
        },
    );
    let api_stop = CancellationToken::new();
    let api_task = tokio::spawn(server::serve_logged(api, service.clone(), api_stop.clone()));
    let metrics_task = metrics_listener
        .map(|l| tokio::spawn(metrics::serve(l, service.clone(), api_stop.clone())));
    notify::ready(&service).await;
    let notify_task = notify::spawn(service, api_stop.clone());
    info!(endpoint_id = %node.id(), listen = %args.listen, "peat-sidecar running");

    let signal_name = wait_for_signal().await?;
    info!(signal = signal_name, "shutting down");
    notify::stopping();
    // Goodbyes first, while the endpoint still works; then the connections.
    shutdown.cancel();
    discovery::join_sources(sources).await;
    node.shutdown().await;
    api_stop.cancel();
    let _ = api_task.await;
    for task in [metrics_task, notify_task].into_iter().flatten() {
        let _ = task.await;
    }
    info!("stopped");
    Ok(())
}

/// A mode that this build does not implement stops the start, instead of silently
/// finding no one.
fn check_built(modes: &[crate::config::DiscoveryMode]) -> Result<(), crate::config::ConfigError> {
    for m in modes {
        if !discovery::BUILT_MODES.contains(m) {
            let available: Vec<&str> = std::iter::once("none")
                .chain(discovery::BUILT_MODES.iter().map(|b| b.as_str()))
                .collect();
            return Err(crate::config::ConfigError::ModeNotBuilt(
                *m,
                env!("CARGO_PKG_VERSION"),
                available.join(", "),
            ));
        }
    }
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

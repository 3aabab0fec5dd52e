//! Discovery mode `dns`: peers are the addresses behind a DNS name (a Kubernetes
//! headless Service), identified by a signed handshake.
//!
//! At start and then every `--discovery-interval` (minus up to 20 % jitter, so that
//! sidecars started together do not ask in lockstep and a new record is seen within one
//! interval) the source resolves `--discovery-service`, asks every address "who are
//! you?" on the handshake port, and reports verified peers of the same app id to the
//! peer manager. Each sidecar in dns mode answers that question on
//! `--discovery-port` (UDP, bound to the IP of `--bind`).
//!
//! Modules: [`wire`] (message format, signing and verification), [`resolve`] (DNS),
//! [`ask`] (one question), [`responder`] (the answering side), [`tracker`] (what is
//! known per address, and the found/lost rules).

pub mod ask;
pub mod resolve;
pub mod responder;
pub mod tracker;
pub mod wire;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use rand::Rng;
use tracing::{debug, info, warn};

use super::{DiscoveryError, EventSink, SourceContext};
use crate::config::DiscoveryMode;
use resolve::{Query, Resolver};
use responder::ResponderStats;
use tracker::Tracker;

/// Most handshakes in flight at once.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 32;
/// Largest share of the interval taken off as jitter.
const JITTER: f64 = 0.2;

fn failed(message: String) -> DiscoveryError {
    DiscoveryError::Failed {
        mode: DiscoveryMode::Dns,
        message,
    }
}

/// Checks the settings, builds the resolver and binds the handshake port; returns the
/// source's task. Errors here stop the sidecar's start.
pub async fn start(
    ctx: SourceContext,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, DiscoveryError> {
    let args = ctx.args.clone();
    let service = args.discovery_service.clone().ok_or_else(|| {
        failed("--discovery-service NAME (PEAT_SIDECAR_DISCOVERY_SERVICE) is required".into())
    })?;
    let query = Query::parse(&service, args.discovery_port).map_err(|e| failed(e.to_string()))?;
    let resolver = Resolver::new(args.dns_server.as_deref()).map_err(|e| failed(e.to_string()))?;
    let bind = SocketAddr::new(args.bind.ip(), args.discovery_port);
    let socket = responder::bind(bind).await.map_err(|e| {
        failed(format!(
            "cannot bind UDP {bind} for the discovery handshake: {e}. Is another peat-sidecar \
             running? Choose another port with --discovery-port (PEAT_SIDECAR_DISCOVERY_PORT)"
        ))
    })?;
    // Our own handshake address is skipped without asking when it is a specific IP;
    // with 0.0.0.0 the first answer carrying our own id marks it.
    let own = (!bind.ip().is_unspecified()).then_some(bind);
    info!(
        name = %service,
        kind = if matches!(query, Query::Srv { .. }) { "SRV" } else { "A/AAAA" },
        handshake = %bind,
        interval_s = args.discovery_interval.0,
        dns_server = args.dns_server.as_deref().unwrap_or("/etc/resolv.conf"),
        "dns discovery ready"
    );
    let stats = Arc::new(ResponderStats::default());
    let responder = responder::serve(
        socket,
        ctx.secret_key.clone(),
        ctx.app_id.clone(),
        ctx.iroh_port,
        stats,
        ctx.shutdown.clone(),
    );
    let tracker = Tracker::new(ctx.endpoint_id, ctx.app_id.clone(), own);
    let interval = args.discovery_interval.duration();
    Ok(async move {
        let rounds = run_rounds(
            resolver,
            query,
            tracker,
            interval,
            ctx.events.clone(),
            ctx.shutdown.clone(),
        );
        tokio::join!(responder, rounds);
        debug!("dns discovery stopped");
    })
}

/// The next round starts this long after the previous one started.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(1.0 - rand::rng().random_range(0.0..JITTER))
}

async fn run_rounds(
    resolver: Resolver,
    query: Query,
    mut tracker: Tracker,
    interval: Duration,
    events: EventSink,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut dns_failing = false;
    loop {
        let started = Instant::now();
        let round = round(&resolver, &query, &mut tracker, &events, &mut dns_failing);
        let keep_going = tokio::select! {
            _ = shutdown.cancelled() => return,
            ok = round => ok,
        };
        if !keep_going {
            // The peer manager stopped: the node is shutting down.
            return;
        }
        let next = started + jittered(interval);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(next.into()) => {}
        }
    }
}

/// One round: resolve, ask, report. Returns false once the peer manager is gone.
async fn round(
    resolver: &Resolver,
    query: &Query,
    tracker: &mut Tracker,
    events: &EventSink,
    dns_failing: &mut bool,
) -> bool {
    match resolver.resolve(query).await {
        Ok(res) if !res.failed_entirely() => {
            if *dns_failing {
                info!(name = %query.name(), "DNS answers again");
                *dns_failing = false;
            }
            if res.truncated {
                warn!(name = %query.name(), max = resolve::MAX_TARGETS, "DNS answer has more addresses than dns discovery follows; ignoring the rest");
            }
            debug!(name = %query.name(), addresses = res.targets.len(), "resolved");
            for e in tracker.update(&res) {
                if !events.send(e).await {
                    return false;
                }
            }
        }
        other => {
            let why = match other {
                Ok(_) => "neither the A nor the AAAA lookup got an answer".to_string(),
                Err(e) => e.to_string(),
            };
            // Keep what we know: an unreachable DNS server says nothing about peers.
            if !*dns_failing {
                warn!(name = %query.name(), error = %why, "DNS lookup failed; keeping the known peers and retrying every interval (logged once until it recovers)");
                *dns_failing = true;
            } else {
                debug!(name = %query.name(), error = %why, "DNS lookup failed again");
            }
        }
    }
    let targets = tracker.to_ask();
    let mut answers = futures::stream::iter(targets)
        .map(|t| async move { (t, ask::ask(t).await) })
        .buffer_unordered(MAX_CONCURRENT_HANDSHAKES);
    while let Some((target, outcome)) = answers.next().await {
        for e in tracker.apply(target, outcome) {
            if !events.send(e).await {
                return false;
            }
        }
    }
    true
}

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

use super::DnsSettings;
use super::{EventSink, SourceContext};
use resolve::{Query, Resolver};
use responder::ResponderStats;
use tracker::AnswerTracker;

/// Most handshakes in flight at once.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 32;
/// Largest share of the interval taken off as jitter.
const JITTER: f64 = 0.2;

/// Why the dns mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot set up the DNS resolver")]
    Resolver(#[source] resolve::ResolveError),
    #[error("cannot bind UDP {addr} for the discovery handshake; is another program using it? Choose another port with {port_name}")]
    Bind {
        addr: SocketAddr,
        port_name: String,
        #[source]
        cause: std::io::Error,
    },
}

/// Builds the resolver and binds the handshake port (the settings are already
/// checked); returns the source's task. Errors here stop the sidecar's start.
pub async fn start(
    ctx: SourceContext,
    settings: DnsSettings,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, DnsError> {
    let server = settings.server.map(|a| a.to_string());
    let resolver = Resolver::new(server.as_deref()).map_err(DnsError::Resolver)?;
    let bind = settings.handshake_bind;
    let socket = responder::bind(bind)
        .await
        .map_err(|cause| DnsError::Bind {
            addr: bind,
            port_name: settings.port_name.clone(),
            cause,
        })?;
    // Our own handshake address is skipped without asking when it is a specific IP;
    // with 0.0.0.0 the first answer carrying our own id marks it.
    let own = (!bind.ip().is_unspecified()).then_some(bind);
    let query = settings.query;
    info!(
        name = %settings.service,
        kind = if matches!(query, Query::Srv { .. }) { "SRV" } else { "A/AAAA" },
        handshake = %bind,
        interval_s = settings.interval.as_secs(),
        dns_server = server.as_deref().unwrap_or("/etc/resolv.conf"),
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
    let tracker = AnswerTracker::new(ctx.endpoint_id, ctx.app_id.clone(), own);
    let interval = settings.interval;
    Ok(async move {
        let rounds = run_rounds(resolver, query, tracker, interval, ctx.clone());
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
    mut tracker: AnswerTracker,
    interval: Duration,
    ctx: SourceContext,
) {
    let (events, shutdown) = (ctx.events(), ctx.shutdown.clone());
    let mut dns_failing = false;
    loop {
        let started = Instant::now();
        crate::node::peers::Counters::inc(&ctx.peers.counters.dns_rounds);
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
    tracker: &mut AnswerTracker,
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

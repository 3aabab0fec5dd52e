//! The alternative a user would reach for instead of peat-sidecar: an iroh 1.x endpoint
//! with iroh's own LAN lookup (`iroh-mdns-address-lookup`), wired the way its docs
//! show, that dials every peer the lookup reports and accepts every connection.
//! Bench-only (an `[[example]]`, never in the .deb); the harness (bench/scenarios/
//! iroh_join.rs, traffic.rs) runs one per network namespace.
//!
//! It prints JSON lines on stdout, each with `t` (unix time in ms), so that the harness
//! times events where they happened rather than when it polled:
//! - `{"t":..,"id":"<hex>"}` once the endpoint is bound;
//! - `{"t":..,"discovered":"<hex>"}` the first time the lookup reports a peer;
//! - `{"t":..,"connected":["<hex>",..]}` whenever the set of peers with at least one
//!   open connection changes.
//!
//! SIGTERM closes the endpoint (peers see the connections close at once); SIGKILL
//! leaves them to iroh's idle timeout.
//!
//! iroh's defaults are kept on purpose (transport config, lookup cadence): this is the
//! baseline as a user gets it, not a tuned one.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use iroh::{
    endpoint::{presets, Connection},
    Endpoint, EndpointId, SecretKey,
};
use iroh_mdns_address_lookup::{DiscoveryEvent, MdnsAddressLookup};

const ALPN: &[u8] = b"peat-bench/iroh-lookup/0";

#[derive(Parser, Debug)]
#[command(about = "iroh endpoint with iroh-mdns-address-lookup that dials every peer found")]
struct Args {
    /// UDP address of the endpoint.
    #[arg(long, default_value = "0.0.0.0:0")]
    bind: SocketAddr,
}

/// Open connections per peer: both sides dial when they find each other, so a pair may
/// hold two connections; the peer counts as connected while any is open.
#[derive(Default)]
struct State {
    conns: HashMap<EndpointId, usize>,
    dialing: HashSet<EndpointId>,
    discovered: HashSet<EndpointId>,
}

type Shared = Arc<Mutex<State>>;

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn emit(v: serde_json::Value) {
    // stdout is line-buffered, so each line reaches the file as it is printed.
    println!("{v}");
}

fn emit_connected(st: &State) {
    let ids: BTreeSet<String> = st
        .conns
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(id, _)| id.to_string())
        .collect();
    emit(serde_json::json!({ "t": now_ms(), "connected": ids }));
}

/// Holds `conn` until it closes, keeping the per-peer count and reporting changes.
fn hold(state: Shared, conn: Connection) {
    let peer = conn.remote_id();
    {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        let n = st.conns.entry(peer).or_default();
        *n += 1;
        if *n == 1 {
            emit_connected(&st);
        }
    }
    tokio::spawn(async move {
        let reason = conn.closed().await;
        tracing::debug!(%peer, %reason, "connection closed");
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = st.conns.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.conns.remove(&peer);
                emit_connected(&st);
            }
        }
    });
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    // The lookup is built before the endpoint (it needs the id) so that we keep a
    // handle to subscribe to its events; the endpoint gets a clone and publishes our
    // addresses through it.
    let secret = SecretKey::generate();
    let me = secret.public();
    let lookup = MdnsAddressLookup::builder()
        .build(me)
        .context("start the mDNS lookup")?;
    let mut events = lookup.subscribe().await;
    let ep = Endpoint::builder(presets::Minimal)
        .secret_key(secret)
        .alpns(vec![ALPN.to_vec()])
        .clear_ip_transports()
        .bind_addr(args.bind)
        .context("bind address")?
        .address_lookup(lookup.clone())
        .bind()
        .await
        .context("bind the endpoint")?;
    emit(serde_json::json!({ "t": now_ms(), "id": me.to_string() }));

    let state: Shared = Arc::default();

    let accept_state = state.clone();
    let accept_ep = ep.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accept_ep.accept().await {
            let state = accept_state.clone();
            tokio::spawn(async move {
                let accepting = match incoming.accept() {
                    Ok(a) => a,
                    Err(e) => return tracing::debug!(%e, "refused incoming"),
                };
                match accepting.await {
                    Ok(conn) => hold(state, conn),
                    Err(e) => tracing::debug!(%e, "incoming handshake failed"),
                }
            });
        }
    });

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    loop {
        let ev = tokio::select! {
            ev = events.next() => ev,
            // A user's program closes its endpoint on the way out, so that its peers
            // see the connections close at once rather than after the idle timeout.
            _ = term.recv() => None,
        };
        let Some(ev) = ev else {
            break;
        };
        let DiscoveryEvent::Discovered { endpoint_info, .. } = ev else {
            continue;
        };
        let peer = endpoint_info.endpoint_id;
        if peer == me {
            continue;
        }
        {
            let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
            if st.discovered.insert(peer) {
                emit(serde_json::json!({ "t": now_ms(), "discovered": peer.to_string() }));
            }
            // Every report of a peer we are not connected to is a chance to dial it: the
            // lookup repeats them, which gives retries for free.
            if st.conns.get(&peer).is_some_and(|n| *n > 0) || !st.dialing.insert(peer) {
                continue;
            }
        }
        let (ep, state) = (ep.clone(), state.clone());
        tokio::spawn(async move {
            let res = ep.connect(endpoint_info.into_endpoint_addr(), ALPN).await;
            state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .dialing
                .remove(&peer);
            match res {
                Ok(conn) => hold(state, conn),
                Err(e) => tracing::debug!(%peer, %e, "dial failed"),
            }
        });
    }
    ep.close().await;
    Ok(())
}

//! Helpers of the gossip tests (tests/gossip.rs, tests/gossip_bogus.rs): sidecars in
//! `--discovery-mode gossip` with a 1 s interval and one shared key.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use peat_sidecar::api::pb;

use super::{Opts, Sidecar};

pub const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
pub const OTHER_KEY: &str = "HxwdHhsZGhgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";
pub const INTERVAL_SECS: u64 = 1;

pub fn gossip_opts(peers: Vec<String>, extra: &[&str]) -> Opts {
    let mut args: Vec<String> = ["--discovery-mode", "gossip", "--discovery-interval", "1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    Opts {
        shared_key: Some(KEY.into()),
        peers,
        extra: args,
        ..Opts::default()
    }
}

/// Starts `n` sidecars, each given only the next one as `--peer` (the last one gets
/// `last_peer`, if any). Started from the end so that every `--peer` target exists.
pub async fn chain(n: usize, extra: &[&str], last_peer: Option<String>) -> Vec<Sidecar> {
    let mut nodes: Vec<Sidecar> = Vec::with_capacity(n);
    for i in (0..n).rev() {
        let next = match nodes.last() {
            Some(s) => Some(s.peer_spec()),
            None => last_peer.clone(),
        };
        let s = Sidecar::start(
            &format!("g{i}"),
            gossip_opts(next.into_iter().collect(), extra),
        )
        .await;
        nodes.push(s);
    }
    nodes.reverse();
    nodes
}

/// Polls (every 500 ms, to spare the two cores) until every node is connected to every
/// other one.
pub async fn full_mesh(nodes: &[&Sidecar], timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    loop {
        let mut missing = 0;
        for n in nodes {
            let c = n.connected().await;
            missing += nodes
                .iter()
                .filter(|m| m.id != n.id && !c.contains(&m.id))
                .count();
        }
        if missing == 0 {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            eprintln!("still {missing} missing links");
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub fn sources(p: &pb::Peer) -> BTreeSet<String> {
    p.sources.iter().cloned().collect()
}

pub fn pb_state(s: i32) -> &'static str {
    peat_sidecar::api::convert::state_name(s)
}

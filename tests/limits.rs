//! Limits against floods (issue 3): connects to unreachable peers and silent
//! connections that hold handshakes stay bounded, and real peers still get in.

mod common;

use std::time::Duration;

use common::{wait_full_mesh, wait_until, Opts, Sidecar};
use peat_sidecar::api::pb;

fn opts_with_peers(peers: Vec<String>) -> Opts {
    Opts {
        peers,
        ..Opts::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_flood_to_unreachable_peers_is_bounded() {
    let a = Sidecar::start(
        "a",
        Opts {
            extra: vec!["--max-known-peers".into(), "64".into()],
            ..Opts::default()
        },
    )
    .await;
    // 300 concurrent ConnectPeer calls, random ids, ports where nobody listens.
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..300u32 {
        let mut c = a.client().await.unwrap();
        let id = iroh::SecretKey::generate().public().to_string();
        calls.spawn(async move {
            c.connect_peer(pb::ConnectPeerRequest {
                endpoint_id: id,
                addresses: vec![format!("127.0.0.1:{}", 1 + i % 3)],
                timeout_ms: 300,
            })
            .await
        });
    }
    let mut codes = std::collections::BTreeMap::new();
    while let Some(r) = calls.join_next().await {
        let e = r.unwrap().expect_err("no fake peer can connect");
        *codes.entry(format!("{:?}", e.code())).or_insert(0) += 1;
    }
    eprintln!("flood answers: {codes:?}");
    for code in codes.keys() {
        assert!(
            ["DeadlineExceeded", "Unavailable", "ResourceExhausted"].contains(&code.as_str()),
            "{codes:?}"
        );
    }
    assert!(
        codes.contains_key("ResourceExhausted"),
        "the table limit was never hit: {codes:?}"
    );
    let st = a.status().await;
    assert!(
        st.known_peers <= 64,
        "table grew past its bound: {}",
        st.known_peers
    );
    let c = st.counters.unwrap();
    // Dials are rate-limited (default 20/s) and capped at 32 in flight.
    assert!(c.live_tasks <= 32 + 8, "{c:?}");
    // The sidecar still works: a real peer connects. Entries that a ConnectPeer call
    // still awaits are never evicted, and a caller that gave up is noticed within a
    // second (the driver's abandon check), so right after the flood the table can still
    // be all protected: the real peer is refused (connection limit) and, like any
    // refused peer, tries again.
    let b = Sidecar::start("b", Opts::default()).await;
    let mut last = String::new();
    let connected = wait_until(Duration::from_secs(10), || {
        let (ok, out, err) = b.cli(&["connect", &a.peer_spec()]);
        last = format!("{out} {err}");
        async move { ok }
    })
    .await;
    assert!(connected.is_some(), "a real peer never got in: {last}");
}

/// Connections that pass QUIC but never send the formation frame each hold a pending
/// handshake for up to 5 s: beyond `--max-pending-handshakes`, new ones are refused
/// before the handshake, and real peers get in again once the silent ones time out.
#[tokio::test(flavor = "multi_thread")]
async fn silent_connections_beyond_max_pending_handshakes_are_refused() {
    use peat_sidecar::node::{endpoint, formation::ALPN};
    const MAX: usize = 2;
    const SILENT: usize = 6;
    let a = Sidecar::start(
        "a",
        Opts {
            extra: vec!["--max-pending-handshakes".into(), MAX.to_string()],
            ..Opts::default()
        },
    )
    .await;
    let target = iroh::EndpointAddr::new(a.id.parse().unwrap()).with_ip_addr(a.bind);
    let live = endpoint::Liveness {
        keep_alive: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(10),
    };
    // One after another, so that the first MAX surely hold their slots when the rest
    // arrive; each stays open and silent.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..SILENT {
        let ep = endpoint::bind(
            iroh::SecretKey::generate(),
            &["127.0.0.1:0".parse().unwrap()],
            live,
        )
        .await
        .unwrap();
        match tokio::time::timeout(Duration::from_secs(5), ep.connect(target.clone(), ALPN)).await {
            Ok(Ok(conn)) => held.push((ep, conn)),
            _ => refused += 1,
        }
    }
    let st = a.status().await;
    let c = st.counters.unwrap_or_default();
    eprintln!(
        "{} silent connections held, {refused} refused; sidecar: incoming_refused {}, \
         handshakes_pending {}",
        held.len(),
        c.incoming_refused,
        c.handshakes_pending
    );
    assert!(c.handshakes_pending as usize <= MAX, "{c:?}");
    assert!(
        c.incoming_refused as usize >= SILENT - MAX,
        "expected at least {} refusals: {c:?}",
        SILENT - MAX
    );
    assert!(
        a.log().contains("too many pending handshakes"),
        "{}",
        a.log()
    );
    // The silent ones time out of the formation check (5 s); a real peer gets in.
    let b = Sidecar::start("b", opts_with_peers(vec![a.peer_spec()])).await;
    wait_full_mesh(&[&a, &b], Duration::from_secs(20))
        .await
        .expect("a real peer connects once the silent connections time out");
    assert!(
        a.status()
            .await
            .counters
            .unwrap_or_default()
            .handshakes_pending as usize
            <= MAX
    );
    drop(held);
}

//! End-to-end tests of the daemon (issue 3): real `peat-sidecar` processes on loopback,
//! static peers, the API and CLI, restarts, formation checks and liveness.

mod common;

use std::time::{Duration, Instant};

use common::{free_port, wait_full_mesh, wait_until, Opts, Sidecar, BIN};
use peat_sidecar::api::pb;

const KEY_A: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="; // 32 x 0x01
const KEY_B: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="; // 32 x 0x02

fn opts_with_peers(peers: Vec<String>) -> Opts {
    Opts {
        peers,
        ..Opts::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_static_peers_form_a_full_mesh() {
    let a = Sidecar::start("a", Opts::default()).await;
    let b = Sidecar::start("b", opts_with_peers(vec![a.peer_spec()])).await;
    // c knows only b; a and c meet because a is told about c... no: static peers only.
    let c = Sidecar::start("c", opts_with_peers(vec![a.peer_spec(), b.peer_spec()])).await;
    let took = wait_full_mesh(&[&a, &b, &c], Duration::from_secs(15))
        .await
        .expect("full mesh of three within 15 s");
    eprintln!("full mesh of 3 after {took:?}");

    // One connection per pair, whoever dialled: each side sees exactly two peers.
    for n in [&a, &b, &c] {
        let peers = n.peers().await;
        assert_eq!(peers.len(), 2, "{}: {peers:?}", n.name);
        for p in &peers {
            assert!(p.rtt_ms.is_some(), "connected peer without RTT: {p:?}");
            assert!(p.last_error.is_empty(), "{p:?}");
        }
    }
    // c dialled a and b statically; the table says so.
    let pa = c.peer(&a.id).await.unwrap();
    assert_eq!(pa.sources, vec!["static".to_string()]);
    assert_eq!(pa.addrs, vec![a.bind.to_string()]);

    let st = c.status().await;
    assert_eq!(st.connected_peers, 2);
    assert_eq!(st.app_id, "test");
    assert!(st.discovery_modes.is_empty());
    assert_eq!(st.bound_addrs, vec![c.bind.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_dials_settle_on_one_connection() {
    // Both know each other statically, so both dial at once.
    let pa = free_port();
    let pb_ = free_port();
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let id_a = common::endpoint_id(dir_a.path());
    let id_b = common::endpoint_id(dir_b.path());
    let bind_a = format!("127.0.0.1:{pa}").parse().unwrap();
    let bind_b = format!("127.0.0.1:{pb_}").parse().unwrap();
    let a = Sidecar::start_in(
        "a",
        dir_a.path(),
        Opts {
            bind: Some(bind_a),
            peers: vec![format!("{id_b}@{bind_b}")],
            ..Opts::default()
        },
    )
    .await;
    let b = Sidecar::start_in(
        "b",
        dir_b.path(),
        Opts {
            bind: Some(bind_b),
            peers: vec![format!("{id_a}@{bind_a}")],
            ..Opts::default()
        },
    )
    .await;
    wait_full_mesh(&[&a, &b], Duration::from_secs(10))
        .await
        .expect("connected");
    // Let any duplicate settle, then both sides must agree on the surviving direction.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let on_a = a.peer(&b.id).await.unwrap();
    let on_b = b.peer(&a.id).await.unwrap();
    assert_eq!(on_a.state, pb::PeerState::Connected as i32);
    assert_eq!(on_b.state, pb::PeerState::Connected as i32);
    assert_ne!(on_a.outbound, on_b.outbound, "a: {on_a:?}, b: {on_b:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_disconnect_through_the_cli() {
    let a = Sidecar::start("a", Opts::default()).await;
    let b = Sidecar::start("b", Opts::default()).await;

    let (ok, out, err) = a.cli(&["connect", &b.peer_spec()]);
    assert!(ok, "connect failed: {out} {err}");
    assert!(out.contains(&format!("connected to {}", b.id)), "{out}");
    let p = a.peer(&b.id).await.unwrap();
    assert_eq!(p.sources, vec!["api".to_string()]);

    // JSON forms carry the documented keys.
    let (ok, out, _) = a.cli(&["peers", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let row = &v.as_array().unwrap()[0];
    for key in [
        "endpoint_id",
        "state",
        "sources",
        "addrs",
        "rtt_ms",
        "last_error",
    ] {
        assert!(row.get(key).is_some(), "peers --json lacks {key}: {row}");
    }
    assert_eq!(row["state"], "connected");
    let (ok, out, _) = a.cli(&["status", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for key in [
        "endpoint_id",
        "app_id",
        "discovery_modes",
        "listen",
        "bound_addrs",
        "connected_peers",
        "version",
    ] {
        assert!(v.get(key).is_some(), "status --json lacks {key}: {v}");
    }
    assert_eq!(v["connected_peers"], 1);
    assert_eq!(v["endpoint_id"], a.id.as_str());

    // Disconnect: both sides drop the connection and neither redials.
    let (ok, out, err) = a.cli(&["disconnect", &b.id]);
    assert!(ok, "disconnect failed: {out} {err}");
    wait_until(Duration::from_secs(5), || async {
        b.connected().await.is_empty()
    })
    .await
    .expect("b sees the disconnect");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        a.connected().await.is_empty(),
        "a redialled after DisconnectPeer"
    );
    assert!(
        b.connected().await.is_empty(),
        "b redialled after being disconnected"
    );
    let p = a.peer(&b.id).await.unwrap();
    assert!(p.paused);
    assert_eq!(p.state, pb::PeerState::Backoff as i32);

    // Connecting again by id alone works: the sidecar remembers the address.
    let (ok, out, err) = a.cli(&["connect", &b.id]);
    assert!(ok, "reconnect by id failed: {out} {err}");
    assert_eq!(a.connected().await, vec![b.id.clone()]);

    // Errors: unknown peer, malformed id.
    let unknown = "0".repeat(63) + "1";
    let (ok, _, err) = a.cli(&["disconnect", &unknown]);
    assert!(!ok);
    // 0...01 is not an Ed25519 key: refused as such (issue 15), or unknown to the sidecar.
    assert!(
        err.contains("not found") || err.contains("not a valid endpoint id (not a public key)"),
        "{err}"
    );
    let (ok, _, err) = a.cli(&["connect", "nothex@127.0.0.1:1"]);
    assert!(!ok);
    assert!(err.contains("not an endpoint id"), "{err}");
    let (ok, _, err) = a.cli(&["connect", &format!("{}@127.0.0.1", b.id)]);
    assert!(!ok);
    assert!(err.contains("no port"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_have_the_right_codes() {
    let a = Sidecar::start("a", Opts::default()).await;
    let mut c = a.client().await.unwrap();
    let e = c
        .connect_peer(pb::ConnectPeerRequest {
            endpoint_id: "xyz".into(),
            addresses: vec![],
            timeout_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("not an endpoint id"),
        "{}",
        e.message()
    );

    let e = c
        .connect_peer(pb::ConnectPeerRequest {
            endpoint_id: "x".repeat(10_000),
            addresses: vec![],
            timeout_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    // Past the API's message limit (2 x --max-message-bytes + 64 KiB, room for a
    // PublishStream batch) tonic refuses before our code runs.
    let e = c
        .connect_peer(pb::ConnectPeerRequest {
            endpoint_id: "x".repeat(700_000),
            addresses: vec![],
            timeout_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::OutOfRange);

    let e = c
        .connect_peer(pb::ConnectPeerRequest {
            endpoint_id: a.id.clone(),
            addresses: vec!["127.0.0.1:1".into()],
            timeout_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());

    let other = common::endpoint_id(tempfile::tempdir().unwrap().path());
    let e = c
        .disconnect_peer(pb::DisconnectPeerRequest {
            endpoint_id: other.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    let e = c
        .connect_peer(pb::ConnectPeerRequest {
            endpoint_id: other.clone(),
            addresses: vec!["not an address".into()],
            timeout_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    // Nobody listens there: the dial fails (UNAVAILABLE) or outlives the wait.
    let dead = free_port();
    let e = c
        .connect_peer(pb::ConnectPeerRequest {
            endpoint_id: other.clone(),
            addresses: vec![format!("127.0.0.1:{dead}")],
            timeout_ms: 1500,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
        ),
        "{e:?}"
    );
    // ... and the peer is kept, backing off, with the error recorded.
    let p = a.peer(&other).await.expect("kept in the table");
    assert_eq!(p.sources, vec!["api".to_string()]);

    // Health service answers for probes.
    let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", a.api_port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
    let r = h
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_peer_events() {
    let a = Sidecar::start("a", Opts::default()).await;
    let b = Sidecar::start("b", Opts::default()).await;
    let mut c = a.client().await.unwrap();
    let mut stream = c
        .watch_peers(pb::WatchPeersRequest {})
        .await
        .unwrap()
        .into_inner();
    let (ok, _, err) = a.cli(&["connect", &b.peer_spec()]);
    assert!(ok, "{err}");
    let mut kinds = vec![];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !kinds.contains(&"connected".to_string()) && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
            Ok(Ok(Some(ev))) => {
                assert_eq!(ev.endpoint_id, b.id);
                kinds.push(ev.kind);
            }
            other => panic!("stream ended: {other:?}"),
        }
    }
    assert!(kinds.contains(&"connecting".to_string()), "{kinds:?}");
    assert!(kinds.contains(&"connected".to_string()), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_the_id_and_peers_reconnect() {
    let mut a = Sidecar::start("a", Opts::default()).await;
    let b = Sidecar::start("b", opts_with_peers(vec![a.peer_spec()])).await;
    wait_full_mesh(&[&a, &b], Duration::from_secs(10))
        .await
        .expect("connected");
    let id_before = a.id.clone();
    let st = a.stop().expect("a was running");
    assert!(st.success(), "SIGTERM exit status {st:?}");
    assert!(a.log().contains("closed all peer connections"));
    wait_until(Duration::from_secs(5), || async {
        b.connected().await.is_empty()
    })
    .await
    .expect("b sees a leave");
    let p = b.peer(&a.id).await.unwrap();
    assert!(p.last_error.contains("shut down"), "{p:?}");

    a.respawn_after_kill().await;
    assert_eq!(a.status().await.endpoint_id, id_before);
    let took = wait_full_mesh(&[&a, &b], Duration::from_secs(40))
        .await
        .expect("b reconnects to the restarted a");
    eprintln!("reconnected {took:?} after restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_is_noticed_within_10s_and_the_peer_comes_back() {
    let mut a = Sidecar::start("a", Opts::default()).await;
    let b = Sidecar::start("b", opts_with_peers(vec![a.peer_spec()])).await;
    wait_full_mesh(&[&a, &b], Duration::from_secs(10))
        .await
        .expect("connected");
    a.kill9();
    let noticed = wait_until(Duration::from_secs(10), || async {
        b.connected().await.is_empty()
    })
    .await
    .expect("kill -9 noticed within 10 s");
    eprintln!("kill -9 noticed after {noticed:?}");
    let p = b.peer(&a.id).await.unwrap();
    assert!(p.last_error.contains("timed out"), "{p:?}");
    assert_ne!(p.state, pb::PeerState::Connected as i32);

    a.respawn_after_kill().await;
    wait_full_mesh(&[&a, &b], Duration::from_secs(40))
        .await
        .expect("reconnected after restart");
    let st = b.status().await.counters.unwrap();
    assert!(st.connections_opened >= 2, "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_or_app_id_is_refused_both_ways() {
    let keyed = |k: &str| Opts {
        shared_key: Some(k.to_string()),
        ..Opts::default()
    };
    let a = Sidecar::start("a", keyed(KEY_A)).await;
    let good = Sidecar::start("good", keyed(KEY_A)).await;
    let bad_key = Sidecar::start("badkey", keyed(KEY_B)).await;
    let no_key = Sidecar::start("nokey", Opts::default()).await;
    let other_app = Sidecar::start(
        "otherapp",
        Opts {
            app_id: "other".into(),
            shared_key: Some(KEY_A.into()),
            ..Opts::default()
        },
    )
    .await;

    // a dials everyone: only `good` passes.
    for n in [&good, &bad_key, &no_key, &other_app] {
        let _ = a.cli(&["connect", &n.peer_spec(), "--timeout", "5"]);
    }
    // ... and everyone dials a.
    for n in [&good, &bad_key, &no_key, &other_app] {
        let _ = n.cli(&["connect", &a.peer_spec(), "--timeout", "5"]);
    }
    wait_until(Duration::from_secs(10), || async {
        a.connected().await == vec![good.id.clone()]
    })
    .await
    .expect("a is connected to exactly the good peer");
    for n in [&bad_key, &no_key, &other_app] {
        let p = a.peer(&n.id).await.expect("a keeps the api peer");
        assert_eq!(p.state, pb::PeerState::Rejected as i32, "{}: {p:?}", n.name);
        assert!(!p.last_error.is_empty());
        let q = n.peer(&a.id).await.expect("the outsider keeps a");
        assert_eq!(q.state, pb::PeerState::Rejected as i32, "{}: {q:?}", n.name);
        assert!(n.connected().await.is_empty(), "{} got connected", n.name);
    }
    let p = a.peer(&other_app.id).await.unwrap();
    assert!(p.last_error.contains("app id"), "{p:?}");
    let p = a.peer(&bad_key.id).await.unwrap();
    assert!(p.last_error.contains("key"), "{p:?}");
    assert!(a
        .log()
        .contains("refused incoming connection: not of our formation"));
    let st = a.status().await.counters.unwrap();
    assert!(st.handshakes_rejected >= 3, "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_api() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    // A stale socket file from a crashed run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let data = dir.path().join("data");
    let mut child = std::process::Command::new(BIN)
        .args(["run", "--bind", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(&data)
        .arg("--listen")
        .arg(format!("unix://{}", sock.display()))
        .args(["--socket-mode", "0640", "--socket-group", "daemon"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let api = format!("unix://{}", sock.display());
    let ok = wait_until(Duration::from_secs(10), || async {
        std::process::Command::new(BIN)
            .args(["status", "--api", &api])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
    .await;
    assert!(ok.is_some(), "status over the Unix socket");
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    let daemon_gid = nix::unistd::Group::from_name("daemon")
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    assert_eq!(meta.gid(), daemon_gid, "socket group");
    common::signal(child.id(), "TERM");
    let st = child.wait().unwrap();
    assert!(st.success());
    assert!(!sock.exists(), "socket file removed on exit");
}

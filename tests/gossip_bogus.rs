//! Gossip from a member that speaks it badly: a real node of the formation (the
//! library's, in this test process) whose gossip streams the test writes by hand, against
//! real sidecar processes on loopback.

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::{
    free_port,
    gossip::{chain, full_mesh, gossip_opts, pb_state, KEY},
    wait_until, Sidecar,
};

/// Like tests/gossip.rs: one test of many sidecars at a time on a 2-core machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Mirror of the wire format (src/discovery/gossip/wire.rs), so that the test can send
/// what a correct encoder never would.
mod fake {
    use serde::{Deserialize, Serialize};
    use std::net::SocketAddr;

    #[derive(Serialize, Deserialize)]
    pub struct Message {
        pub proto: u8,
        pub entries: Vec<Entry>,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Entry {
        pub id: [u8; 32],
        pub version: u64,
        pub addrs: Vec<SocketAddr>,
    }
}

/// A member of the formation that speaks gossip badly: a real node (the library's, in
/// this process) whose gossip streams the test writes by hand.
async fn fake_member(peer: &Sidecar) -> (peat_sidecar::node::Node, iroh::endpoint::Connection) {
    use base64::Engine;
    use peat_sidecar::{
        config::{PeerHost, PeerSpec, SharedKey},
        node::{endpoint::Liveness, peers::Limits, Node, NodeConfig},
    };
    let key: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .unwrap()
        .try_into()
        .unwrap();
    let node = Node::start(NodeConfig {
        secret_key: iroh::SecretKey::generate(),
        bind: vec![SocketAddr::from(([127, 0, 0, 1], free_port()))],
        app_id: peer.opts.app_id.clone(),
        shared_key: Some(SharedKey(key)),
        static_peers: vec![PeerSpec {
            id: peer.id.parse().unwrap(),
            host: PeerHost::Addr(peer.bind),
        }],
        limits: Limits {
            max_peers: 0,
            max_known_peers: 16,
            max_concurrent_dials: 4,
            max_dials_per_sec: 20,
            max_pending_handshakes: 64,
        },
        liveness: Liveness {
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
        },
        beacons: peat_sidecar::node::liveness::Config {
            beacon_interval: None,
            port: peat_sidecar::node::liveness::BEACON_PORT,
            interfaces: Default::default(),
        },
        trust: None,
        accepted_keys: vec![],
    })
    .await
    .unwrap();
    let target: iroh::EndpointId = peer.id.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((_, c)) = node
            .peers()
            .connections()
            .await
            .into_iter()
            .find(|(id, _)| *id == target)
        {
            return (node, c);
        }
        assert!(Instant::now() < deadline, "fake member could not connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends one gossip message and returns the answer (None if the peer refused it).
async fn send_table(conn: &iroh::endpoint::Connection, bytes: &[u8]) -> Option<Vec<u8>> {
    use peat_sidecar::node::streams::{open, tag};
    let (mut send, mut recv) = open(conn, tag::GOSSIP).await.ok()?;
    send.write_all(bytes).await.ok()?;
    let _ = send.finish();
    tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(1 << 20))
        .await
        .ok()?
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_entries_are_bounded_and_do_not_stall_the_others() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let extra = [
        "--gossip-ttl",
        "6",
        "--gossip-max-entries",
        "40",
        "--gossip-max-message-bytes",
        "65536",
    ];
    let nodes = chain(3, &extra, None).await;
    let refs: Vec<&Sidecar> = nodes.iter().collect();
    full_mesh(&refs, Duration::from_secs(60))
        .await
        .expect("mesh of 3");
    let (fake, conn) = fake_member(&nodes[0]).await;

    // 1. Junk that fits in a message: a malformed id, an address nobody listens on,
    //    an undialable address, and more valid-looking entries than the table holds.
    let bad_id = (0u8..=255)
        .map(|b| [b; 32])
        .find(|b| iroh::EndpointId::from_bytes(b).is_err())
        .unwrap();
    let dead_port = free_port(); // nothing listens there
    let unreachable = iroh::SecretKey::generate().public();
    let mut entries = vec![
        fake::Entry {
            id: bad_id,
            version: 1,
            addrs: vec![SocketAddr::from(([127, 0, 0, 1], dead_port))],
        },
        fake::Entry {
            id: *unreachable.as_bytes(),
            version: 1,
            addrs: vec![SocketAddr::from(([127, 0, 0, 1], dead_port))],
        },
        fake::Entry {
            id: *iroh::SecretKey::generate().public().as_bytes(),
            version: 1,
            addrs: vec![SocketAddr::from(([0, 0, 0, 0], 9))],
        },
    ];
    for _ in 0..200 {
        entries.push(fake::Entry {
            id: *iroh::SecretKey::generate().public().as_bytes(),
            version: 1,
            addrs: vec![SocketAddr::from(([127, 0, 0, 1], dead_port))],
        });
    }
    let msg = postcard::to_stdvec(&fake::Message { proto: 1, entries }).unwrap();
    assert!(msg.len() < 65536);
    let answer = send_table(&conn, &msg)
        .await
        .expect("a table that fits gets an answer");
    let answer: fake::Message = postcard::from_bytes(&answer).expect("the answer decodes");
    let node0: iroh::EndpointId = nodes[0].id.parse().unwrap();
    assert!(
        answer.entries.iter().any(|e| e.id == *node0.as_bytes()),
        "the answer holds node 0's own entry"
    );

    // 2. A table larger than --gossip-max-message-bytes: refused whole.
    let mut huge = Vec::new();
    for _ in 0..5000 {
        huge.push(fake::Entry {
            id: *iroh::SecretKey::generate().public().as_bytes(),
            version: 1,
            addrs: vec![SocketAddr::from(([127, 0, 0, 1], dead_port))],
        });
    }
    let huge_bytes = postcard::to_stdvec(&fake::Message {
        proto: 1,
        entries: huge,
    })
    .unwrap();
    assert!(huge_bytes.len() > 65536);
    assert!(
        send_table(&conn, &huge_bytes).await.is_none(),
        "a huge table gets no answer"
    );

    // 3. The others are not stalled: a newcomer still joins everyone, while the
    //    junk is being dialled and spread.
    let t = Instant::now();
    let newcomer =
        Sidecar::start("newcomer", gossip_opts(vec![nodes[2].peer_spec()], &extra)).await;
    let mut all = refs.clone();
    all.push(&newcomer);
    let joined = full_mesh(&all, Duration::from_secs(60))
        .await
        .expect("a newcomer joins all 3 despite the junk");
    println!(
        "gossip: a newcomer joined 3 nodes {:.1}s after its start ({:.1}s of waiting) while \
         junk entries were being dialled",
        t.elapsed().as_secs_f64(),
        joined.as_secs_f64()
    );

    // Bounded: no node tracks more than the table bound, plus the real nodes and the fake.
    for n in &all {
        let count = n.peers().await.len();
        assert!(count <= 40 + 4 + 1, "{} tracks {count} peers", n.name);
    }
    let log = nodes[0].log();
    assert!(log.contains("malformed=1"), "the malformed id was counted");
    assert!(
        log.contains("refused a peer's table"),
        "the huge table was refused"
    );
    assert!(log.contains("gossip table full"), "the table bound was hit");
    // Unreachable entries were handed to the peer manager, which dialled them (rate
    // limited, with backoff) without holding anyone else up. Which ones is not fixed:
    // the table is bounded, so a given junk entry may be evicted before its turn.
    // A discovered peer may wait for the dial tie-break (0.5 s) and junk is dialled
    // after peers with untried addresses, while the newcomer can join within a second:
    // wait for the dial rather than look once.
    let unreachable = unreachable.to_string();
    let dead = format!("127.0.0.1:{dead_port}");
    let dialled = wait_until(Duration::from_secs(30), || async {
        nodes[0]
            .log()
            .lines()
            .any(|l| l.contains("dialling") && (l.contains(&unreachable) || l.contains(&dead)))
    })
    .await;
    assert!(
        dialled.is_some(),
        "no unreachable entry was dialled in 30 s"
    );

    // 4. Nobody refreshes the junk: it ages out of every table, the real nodes stay.
    //    Usually within ~15 s (TTL 6 s, plus dials of junk that must time out first);
    //    the bound is generous for a loaded 2-core CI machine.
    let aged = wait_until(Duration::from_secs(120), || async {
        for n in &all {
            if n.peers().await.len() > 4 {
                return false;
            }
        }
        true
    })
    .await;
    if aged.is_none() {
        for n in &all {
            for p in n.peers().await {
                eprintln!(
                    "{} still has {} {:?} {:?} {:?} err={}",
                    n.name,
                    &p.endpoint_id[..12],
                    pb_state(p.state),
                    p.sources,
                    p.addrs,
                    p.last_error
                );
            }
        }
    }
    assert!(aged.is_some(), "junk aged out");
    for n in &all {
        assert_eq!(
            n.connected().await.len(),
            3 + usize::from(n.id == nodes[0].id)
        );
    }
    fake.shutdown().await;
}

//! Changing a formation's shared key without downtime (issue 25), on real sidecars on
//! loopback: the operator's three steps (install the new key, use it, remove the old
//! one), each a rolling restart one node at a time, with the formation meshed after
//! every restart; then a node that still has only the old key is refused.

mod common;

use std::{path::Path, time::Duration};

use common::{wait_full_mesh, wait_until, Opts, Sidecar};

const OLD: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const NEW: &str = "HxwdHhsZGhgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";

async fn mesh(nodes: &[Sidecar]) -> Option<Duration> {
    let refs: Vec<&Sidecar> = nodes.iter().collect();
    wait_full_mesh(&refs, Duration::from_secs(30)).await
}

fn write_ring(path: &Path, keys: &[&str]) {
    let text: String = keys.iter().map(|k| format!("{k}\n")).collect();
    std::fs::write(path, format!("# first key dials, all are accepted\n{text}")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_key_change_keeps_the_mesh_and_then_refuses_the_old_key() {
    let tmp = tempfile::tempdir().unwrap();
    let keys: Vec<_> = (0..3).map(|i| tmp.path().join(format!("k{i}"))).collect();
    for k in &keys {
        write_ring(k, &[OLD]);
    }
    let mut nodes: Vec<Sidecar> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let o = Opts {
            peers: nodes.iter().map(|n| n.peer_spec()).collect(),
            extra: vec!["--shared-key-file".into(), k.display().to_string()],
            ..Opts::default()
        };
        nodes.push(Sidecar::start(&format!("n{i}"), o).await);
    }
    mesh(&nodes)
        .await
        .expect("the formation meshes with the old key");
    for (step, ring) in [("install", [OLD, NEW]), ("use", [NEW, OLD])] {
        for i in 0..nodes.len() {
            write_ring(&keys[i], &ring);
            nodes[i].restart().await;
            mesh(&nodes)
                .await
                .unwrap_or_else(|| panic!("{step}: no full mesh after restarting n{i}"));
        }
    }
    for i in 0..nodes.len() {
        write_ring(&keys[i], &[NEW]);
        nodes[i].restart().await;
        mesh(&nodes)
            .await
            .unwrap_or_else(|| panic!("remove: no full mesh after restarting n{i}"));
    }
    for n in &nodes {
        let refused = n.log().lines().any(|l| l.contains("shared key mismatch"));
        assert!(
            !refused,
            "{} refused a peer during the change:\n{}",
            n.name,
            n.log()
        );
    }
    // A node that missed the change is refused.
    let old_key = tmp.path().join("stale");
    write_ring(&old_key, &[OLD]);
    let stale = Sidecar::start(
        "stale",
        Opts {
            peers: vec![nodes[0].peer_spec()],
            extra: vec!["--shared-key-file".into(), old_key.display().to_string()],
            ..Opts::default()
        },
    )
    .await;
    let told = wait_until(Duration::from_secs(30), || async {
        stale.log().contains("shared key mismatch")
    })
    .await;
    assert!(
        told.is_some(),
        "the stale node was not refused:\n{}",
        stale.log()
    );
    assert!(!nodes[0].connected().await.contains(&stale.id));
}

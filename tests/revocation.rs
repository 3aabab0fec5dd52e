//! Revocation that reaches every node (issue 25), end to end on real sidecars in
//! network namespaces: two segments joined by a bridge node, a revocation handed to a
//! node of one segment, the revoked node on the other. Also the local side of topic
//! rights: an app may publish only where its node's certificate allows.
//!
//! Run under the shared lock:
//! `flock /tmp/peat-netns.lock cargo test --test revocation`.

mod common;

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use common::{
    endpoint_id,
    netns::Lan,
    trust::{authority, cut_off, issue, ok, s, wait_log},
    wait_full_mesh, Opts, Sidecar,
};

/// A node's options: every address on port 9470, its peers given by `--peer`, its
/// certificate, and the authority's key.
fn opts(lan: &Lan, i: usize, peers: &[String], key: &Path, cert: &Path) -> Opts {
    let mut o = Opts {
        netns: Some(lan.ns(i).to_string()),
        bind: Some(SocketAddr::from(([0, 0, 0, 0], 9470))),
        peers: peers.to_vec(),
        ..Opts::default()
    };
    o.extra = ["--authority-key", s(key), "--member-cert", s(cert)]
        .iter()
        .map(|a| a.to_string())
        .collect();
    o
}

fn spec(id: &str, addr: Ipv4Addr) -> String {
    format!("{id}@{addr}:9470")
}

/// Segment 0: A and the bridge B. Segment 1: B, C and the victim V; D joins segment 1
/// after the revocation. The revocation is handed to A, which never reached V.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_handed_to_one_node_reaches_both_segments_and_outlives_restarts() {
    if common::skip::without_root("network namespaces") {
        return;
    }
    let mut lan = Lan::new("rv", 2);
    let seg1 = lan.add_segment();
    let b1 = lan.attach(1, seg1);
    let (ci, vi, di) = (lan.add_host(seg1), lan.add_host(seg1), lan.add_host(seg1));
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let auth = authority(t, "auth");
    let key = auth.join("authority.pub");
    let names = ["a", "b", "c", "v", "d"];
    let dirs: Vec<PathBuf> = names.iter().map(|n| t.join(n)).collect();
    let ids: Vec<String> = dirs.iter().map(|d| endpoint_id(d)).collect();
    let certs: Vec<PathBuf> = (0..names.len())
        .map(|i| {
            issue(
                &auth,
                &ids[i],
                names[i],
                "1d",
                &t.join(format!("{}.cert", names[i])),
            )
        })
        .collect();
    let (a_addr, b0) = (lan.addr(0, 0), lan.addr(1, 0));
    let (c_addr, v_addr) = (lan.addr(ci, seg1), lan.addr(vi, seg1));
    let [a_id, b_id, c_id, v_id] = [0, 1, 2, 3].map(|i| ids[i].as_str());
    let peers: [Vec<String>; 5] = [
        vec![spec(b_id, b0)],
        vec![spec(a_id, a_addr), spec(c_id, c_addr), spec(v_id, v_addr)],
        vec![spec(b_id, b1), spec(v_id, v_addr)],
        vec![spec(b_id, b1), spec(c_id, c_addr)],
        vec![spec(b_id, b1), spec(c_id, c_addr), spec(v_id, v_addr)],
    ];
    let hosts = [0, 1, ci, vi, di];
    let start = |i: usize| {
        let o = opts(&lan, hosts[i], &peers[i], &key, &certs[i]);
        Sidecar::start_in(names[i], &dirs[i], o)
    };
    let a = start(0).await;
    let b = start(1).await;
    let mut c = start(2).await;
    let v = start(3).await;
    wait_full_mesh(&[&a, &b], Duration::from_secs(30))
        .await
        .expect("a and b mesh on segment 0");
    wait_full_mesh(&[&b, &c, &v], Duration::from_secs(30))
        .await
        .expect("b, c and v mesh on segment 1");
    assert!(
        !a.connected().await.contains(&v_id.to_string()),
        "a reached v directly"
    );

    let revoked = t.join("v.revoked");
    ok(&[
        "authority",
        "revoke",
        "--authority",
        s(&auth),
        v_id,
        "--out",
        s(&revoked),
    ]);
    let (okay, out, err) = a.cli(&["revoke", s(&revoked)]);
    assert!(okay && out.contains("revoked"), "revoke: {out} {err}");
    // Both segments cut the victim off; the bridge carried the revocation to C.
    for n in [&b, &c] {
        assert!(
            cut_off(n, v_id, Duration::from_secs(30)).await,
            "{} still connected to the revoked node:\n{}",
            n.name,
            n.log()
        );
        assert!(wait_log(n, &["revocation learned", v_id], Duration::from_secs(5)).await);
    }
    assert!(
        wait_log(&v, &["member certificate revoked"], Duration::from_secs(10)).await,
        "the revoked node's log does not say why it was cut off:\n{}",
        v.log()
    );
    // Honest links stay up.
    wait_full_mesh(&[&b, &c], Duration::from_secs(10))
        .await
        .expect("b and c stay connected");
    // A second hand-over of the same revocation is known.
    let (okay, out, _) = b.cli(&["revoke", s(&revoked)]);
    assert!(okay && out.contains("already revoked"), "{out}");

    // D was off when the revocation spread: anti-entropy brings it, and D drops V.
    let d = start(4).await;
    wait_full_mesh(&[&c, &d], Duration::from_secs(30))
        .await
        .expect("d joins segment 1");
    assert!(
        wait_log(&d, &["revocation learned", v_id], Duration::from_secs(40)).await,
        "d never learned the revocation:\n{}",
        d.log()
    );
    assert!(cut_off(&d, v_id, Duration::from_secs(10)).await, "d kept v");

    // C restarts without any revocation file: the revocation is on disk, in force
    // before C's first connection, so V is refused from the start.
    c.restart().await;
    wait_full_mesh(&[&b, &c], Duration::from_secs(30))
        .await
        .expect("c reconnects to b after its restart");
    assert!(
        wait_log(
            &c,
            &["member certificate refused", v_id],
            Duration::from_secs(20)
        )
        .await,
        "c, restarted, did not refuse v:\n{}",
        c.log()
    );
    assert!(!c.connected().await.contains(&v_id.to_string()));
    let ok_line = c
        .log()
        .lines()
        .any(|l| l.contains("peer connected") && l.contains(v_id));
    assert!(!ok_line, "c connected to v after its restart:\n{}", c.log());

    // An app may read the system topic but not write it.
    let (okay, out, _) = c.cli(&["get", "_peat/revocations"]);
    assert!(okay && out.contains(v_id), "{out}");
    let (okay, _, err) = c.cli(&["publish", "_peat/revocations", "x", "--retain"]);
    assert!(!okay && err.contains("_peat/"), "{err}");
    let (okay, _, err) = c.cli(&["delete", "_peat/revocations", "--key", v_id]);
    assert!(!okay && err.contains("_peat/"), "{err}");

    // Topic rights: the certificates allow `tracks/**` only.
    let (okay, _, err) = c.cli(&["publish", "tracks/c", "here"]);
    assert!(okay, "{err}");
    let (okay, _, err) = c.cli(&["publish", "orders/c", "here"]);
    assert!(
        !okay && err.contains("does not allow") && err.contains("tracks/**"),
        "{err}"
    );
}

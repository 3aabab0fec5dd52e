//! Member certificates while connections are up (issue 25), on real sidecars in
//! network namespaces: a connection closes when the peer's certificate ends (and a
//! renewed one gets straight back in), and a member publishing outside its topic
//! rights is refused by the node that receives it.
//!
//! Run under the shared lock: `flock /tmp/peat-netns.lock cargo test --test trust_live`.

mod common;

use std::{path::PathBuf, time::Duration};

use common::{
    netns::Lan,
    trust::{cut_off, enrol, issue, node_opts, s, wait_log, Enrolment},
    wait_full_mesh, wait_until, Sidecar,
};

/// Certificates end while their connections are up: A closes them at the end. B's
/// certificate file was renewed in time, so A's redial gets B straight back in; C's
/// was not, so C stays out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closes_when_the_certificate_ends_and_a_renewed_one_gets_back_in() {
    if common::skip::without_root("network namespaces") {
        return;
    }
    let lan = Lan::new("tb", 3);
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let Enrolment {
        auth,
        key,
        dirs,
        ids,
    } = enrol(t, 3);
    let spec = |i: usize| format!("{}@{}:9470", ids[i], lan.addr(i, 0));
    let validity = ["1d", "20s", "20s"];
    let certs: Vec<PathBuf> = (0..3)
        .map(|i| {
            let file = t.join(format!("n{i}.cert"));
            issue(&auth, &ids[i], &format!("n{i}"), validity[i], &file)
        })
        .collect();
    let peers = [vec![spec(1), spec(2)], vec![spec(0)], vec![spec(0)]];
    let mut nodes = Vec::new();
    for i in 0..3 {
        let flags = [
            "--authority-key",
            s(&key),
            "--member-cert",
            s(&certs[i]),
            "--cert-clock-skew",
            "1s",
        ];
        let o = node_opts(&lan, i, &peers[i], &flags);
        nodes.push(Sidecar::start_in(&format!("n{i}"), &dirs[i], o).await);
    }
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    wait_full_mesh(&[a, b], Duration::from_secs(30))
        .await
        .expect("a and b connect");
    wait_full_mesh(&[a, c], Duration::from_secs(30))
        .await
        .expect("a and c connect");
    // B renews before its certificate ends; the file is read at B's next connection.
    issue(&auth, &ids[1], "n1", "1d", &certs[1]);

    // C's certificate ends: A closes the connection, says why, and C is refused.
    assert!(
        wait_log(
            a,
            &["member certificate no longer valid", &ids[2]],
            Duration::from_secs(60)
        )
        .await,
        "a did not close c's connection at the certificate's end:\n{}",
        a.log()
    );
    assert!(cut_off(a, &ids[2], Duration::from_secs(10)).await);
    assert!(
        wait_log(c, &["member certificate expired"], Duration::from_secs(10)).await,
        "c's log does not say why:\n{}",
        c.log()
    );
    // B's old certificate ended too: closed, redialled, back in with the renewed one.
    assert!(
        wait_log(
            a,
            &["member certificate no longer valid", &ids[1]],
            Duration::from_secs(20)
        )
        .await,
        "a did not close b's connection at its old certificate's end:\n{}",
        a.log()
    );
    wait_full_mesh(&[a, b], Duration::from_secs(30))
        .await
        .expect("b is back in with its renewed certificate, without an operator");
    assert!(
        b.log().contains("member certificate reloaded"),
        "{}",
        b.log()
    );
    assert!(!a.connected().await.contains(&ids[2]), "c came back");
}

/// Topic rights, enforced by the receiver: A's certificate allows `tracks/**` only, and
/// A (a test build told to ignore its own rights) publishes elsewhere too. B delivers,
/// stores and forwards only what A may publish, counts the rest and says so in its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_publishing_outside_its_rights_is_refused_by_its_peers() {
    use common::data::{msg, publish, wait_subscribers, Drained};
    if common::skip::without_root("network namespaces") {
        return;
    }
    let lan = Lan::new("tc", 2);
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let Enrolment {
        auth,
        key,
        dirs,
        ids,
    } = enrol(t, 2);
    let spec = |i: usize| format!("{}@{}:9470", ids[i], lan.addr(i, 0));
    let mut nodes = Vec::new();
    for i in 0..2 {
        let cert = issue(
            &auth,
            &ids[i],
            &format!("n{i}"),
            "1d",
            &t.join(format!("n{i}.cert")),
        );
        let flags = ["--authority-key", s(&key), "--member-cert", s(&cert)];
        let mut o = node_opts(&lan, i, &[spec(1 - i)], &flags);
        if i == 0 {
            o.env
                .push(("PEAT_SIDECAR_TEST_IGNORE_RIGHTS".into(), "1".into()));
        }
        nodes.push(Sidecar::start_in(&format!("n{i}"), &dirs[i], o).await);
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    wait_full_mesh(&[a, b], Duration::from_secs(30))
        .await
        .expect("a and b connect");
    let on_b = Drained::subscribe(b, "**", false).await;
    wait_subscribers(b, 1, Duration::from_secs(10)).await;
    // Allowed traffic flows (and proves the data link is up).
    assert!(
        wait_until(Duration::from_secs(30), || async {
            publish(a, msg("tracks/a", "", "ok", false)).await;
            on_b.count_topic("tracks/a") > 0
        })
        .await
        .is_some(),
        "allowed traffic never arrived"
    );
    let rejected_before = b.status().await.data.map_or(0, |d| d.rejected);
    publish(a, msg("orders/a", "", "not allowed", false)).await;
    publish(a, msg("orders/b", "k", "not allowed", true)).await;
    publish(a, msg("tracks/b", "", "ok", false)).await;
    assert!(wait_until(Duration::from_secs(20), || async {
        on_b.count_topic("tracks/b") > 0
    })
    .await
    .is_some());
    assert_eq!(
        on_b.count_topic("orders/a") + on_b.count_topic("orders/b"),
        0
    );
    let (okay, out, _) = b.cli(&["get", "orders/**"]);
    assert!(okay && !out.contains("not allowed"), "stored: {out}");
    let rejected = b.status().await.data.map_or(0, |d| d.rejected);
    assert!(
        rejected >= rejected_before + 2,
        "{rejected_before} -> {rejected}"
    );
    assert!(
        wait_log(
            b,
            &["does not allow this topic", "orders/"],
            Duration::from_secs(5)
        )
        .await,
        "{}",
        b.log()
    );
}

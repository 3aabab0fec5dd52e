//! Member certificates (issue 25) end to end: the `authority` commands, the start
//! errors (exit 2, before anything binds), and real sidecars in network namespaces
//! where enrolled nodes mesh and nodes without a valid certificate are refused, with
//! the reason in both logs and in the refusing node's counters.
//!
//! Run the namespace test under the shared lock:
//! `flock /tmp/peat-netns.lock cargo test --test trust -- --test-threads=2`.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    endpoint_id, free_port,
    netns::Lan,
    trust::{authority, issue, node_opts, ok, run, s, wait_log},
    wait_full_mesh, wait_until, Sidecar, BIN,
};
use peat_sidecar::api::pb;

/// `peat-sidecar run` with trust flags on loopback; a start must be refused. Returns
/// (exit code, stderr).
fn refused(data_dir: &Path, args: &[&str]) -> (i32, String) {
    let bind = format!("127.0.0.1:{}", free_port());
    let listen = format!("tcp://127.0.0.1:{}", free_port());
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--data-dir",
            s(data_dir),
            "--bind",
            &bind,
            "--listen",
            &listen,
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{args:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    (out.status.code().unwrap_or(-1), err)
}

/// Exit 2, one line, nothing started; returns the message.
fn start_error(data_dir: &Path, args: &[&str]) -> String {
    let (code, err) = refused(data_dir, args);
    assert_eq!(code, 2, "{args:?}: {err}");
    assert!(!err.contains(" INFO "), "logged before refusing: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn authority_commands_write_what_a_device_needs_and_bad_files_stop_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let auth = authority(t, "auth");
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&auth.join("authority.key")), 0o600);
    assert_eq!(mode(&auth), 0o700);
    // An authority is never overwritten.
    let (code, _, err) = run(&["authority", "init", "--out", s(&auth)]);
    assert_ne!(code, 0);
    assert!(err.contains("never overwritten"), "{err}");

    let node = t.join("node");
    let id = endpoint_id(&node);
    let cert = issue(&auth, &id, "radio-7", "30d", &t.join("node.cert"));
    let text = std::fs::read_to_string(&cert).unwrap();
    assert!(text.contains("# name:        radio-7"), "{text}");
    assert!(
        text.contains("-----BEGIN PEAT MEMBER CERTIFICATE-----"),
        "{text}"
    );
    assert!(text.contains("# publish:     tracks/**"), "{text}");
    // Serials count up.
    issue(&auth, &id, "radio-7", "30d", &t.join("again.cert"));
    let again = std::fs::read_to_string(t.join("again.cert")).unwrap();
    assert!(again.contains("# serial:      2"), "{again}");
    let rev = t.join("node.revoked");
    let out = ok(&[
        "authority",
        "revoke",
        "--authority",
        s(&auth),
        &id,
        "--out",
        s(&rev),
    ]);
    assert!(out.contains("2 certificate(s)"), "{out}");
    // A bad pattern is refused at issue time.
    let (code, _, err) = run(&[
        "authority",
        "issue",
        "--authority",
        s(&auth),
        "--endpoint-id",
        &id,
        "--name",
        "x",
        "--publish",
        "a/**/b",
        "--out",
        s(&t.join("x.cert")),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("--publish `a/**/b`"), "{err}");

    let pubkey = auth.join("authority.pub");
    let key = s(&pubkey);
    // The secret key in place of the public one.
    let err = start_error(
        &node,
        &[
            "--authority-key",
            s(&auth.join("authority.key")),
            "--member-cert",
            s(&cert),
        ],
    );
    assert!(
        err.contains("--authority-key") && err.contains("SECRET key"),
        "{err}"
    );
    // A file that is not a key at all.
    let err = start_error(
        &node,
        &["--authority-key", s(&cert), "--member-cert", s(&cert)],
    );
    assert!(
        err.contains(&format!("--authority-key {}", s(&cert)))
            && err.contains("does not hold an authority public key"),
        "{err}"
    );
    // A certificate file that is not a certificate.
    let junk = t.join("junk.cert");
    std::fs::write(&junk, "hello\n").unwrap();
    let err = start_error(&node, &["--authority-key", key, "--member-cert", s(&junk)]);
    assert!(
        err.contains(&format!("--member-cert {}", s(&junk)))
            && err.contains("not a usable member certificate"),
        "{err}"
    );
    // A certificate for another node.
    let other = t.join("other");
    let other_cert = issue(&auth, &endpoint_id(&other), "o", "1d", &t.join("o.cert"));
    let err = start_error(
        &node,
        &["--authority-key", key, "--member-cert", s(&other_cert)],
    );
    assert!(
        err.contains("--member-cert") && err.contains(&format!("but this node is {id}")),
        "{err}"
    );
    // A certificate of another authority.
    let auth2 = authority(t, "auth2");
    let foreign = issue(&auth2, &id, "radio-7", "1d", &t.join("foreign.cert"));
    let err = start_error(
        &node,
        &["--authority-key", key, "--member-cert", s(&foreign)],
    );
    assert!(
        err.contains("not signed by the authority of --authority-key")
            && err.contains("another authority"),
        "{err}"
    );
    // A revocation of another authority, and one that is not a revocation.
    let rev2 = t.join("r2.revoked");
    ok(&[
        "authority",
        "revoke",
        "--authority",
        s(&auth2),
        &id,
        "--out",
        s(&rev2),
    ]);
    let err = start_error(
        &node,
        &[
            "--authority-key",
            key,
            "--member-cert",
            s(&cert),
            "--revocation",
            s(&rev2),
        ],
    );
    assert!(err.contains(&format!("--revocation {}", s(&rev2))), "{err}");
    let err = start_error(
        &node,
        &[
            "--authority-key",
            key,
            "--member-cert",
            s(&cert),
            "--revocation",
            s(&cert),
        ],
    );
    assert!(err.contains("not a usable revocation"), "{err}");
    // Named by the variable when it came from one.
    let (code, err) = {
        let bind = format!("127.0.0.1:{}", free_port());
        let out = Command::new(BIN)
            .args(["run", "--data-dir", s(&node), "--bind", &bind])
            .env("PEAT_SIDECAR_AUTHORITY_KEY", key)
            .env("PEAT_SIDECAR_MEMBER_CERT", s(&junk))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("PEAT_SIDECAR_MEMBER_CERT"), "{err}");
    // One flag without the other is a usage error.
    let (code, err) = refused(&node, &["--authority-key", key]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--member-cert"), "{err}");
    // No identity yet: no certificate can be for it.
    let err = start_error(
        &t.join("fresh"),
        &["--authority-key", key, "--member-cert", s(&cert)],
    );
    assert!(err.contains("peat-sidecar id"), "{err}");
    assert!(!t.join("fresh").join("secret.key").exists());
}

fn refusals(st: &pb::GetStatusResponse, reason: &str) -> u64 {
    st.counters
        .as_ref()
        .and_then(|c| c.certificate_refusals.get(reason).copied())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolled_nodes_mesh_and_each_kind_of_bad_certificate_is_refused() {
    let lan = Lan::new("ta", 8);
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let auth = authority(t, "auth");
    let rogue_auth = authority(t, "rogue-auth");
    let key = auth.join("authority.pub");
    // Data dirs and ids first: certificates and the revocation name them.
    let dirs: Vec<PathBuf> = (0..8).map(|i| t.join(format!("n{i}"))).collect();
    let ids: Vec<String> = dirs.iter().map(|d| endpoint_id(d)).collect();
    let spec = |i: usize| format!("{}@{}:9470", ids[i], lan.addr(i, 0));
    let honest_peers: Vec<String> = (0..3).map(spec).collect();
    let cert = |i: usize, auth: &Path, valid: &str, file: &str| {
        issue(auth, &ids[i], &format!("n{i}"), valid, &t.join(file))
    };
    let revoked = t.join("n7.revoked");
    ok(&[
        "authority",
        "revoke",
        "--authority",
        s(&auth),
        &ids[7],
        "--out",
        s(&revoked),
    ]);
    // Honest nodes allow 5 s of clock skew, so that a certificate valid for 1 s is
    // expired by the time the rogues start.
    let honest_flags = |i: usize| {
        let c = cert(i, &auth, "1d", &format!("n{i}.cert"));
        vec![
            "--authority-key".to_string(),
            s(&key).to_string(),
            "--member-cert".into(),
            s(&c).to_string(),
            "--cert-clock-skew".into(),
            "5s".into(),
            "--revocation".into(),
            s(&revoked).to_string(),
        ]
    };
    let mut honest = Vec::new();
    for i in 0..3 {
        let flags = honest_flags(i);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let peers: Vec<String> = honest_peers
            .iter()
            .filter(|p| !p.starts_with(&ids[i]))
            .cloned()
            .collect();
        honest.push(
            Sidecar::start_in(
                &format!("n{i}"),
                &dirs[i],
                node_opts(&lan, i, &peers, &flags),
            )
            .await,
        );
    }
    let refs: Vec<&Sidecar> = honest.iter().collect();
    wait_full_mesh(&refs, Duration::from_secs(30))
        .await
        .expect("the three enrolled nodes mesh");

    // The rogues, each dialling every honest node.
    let expired = cert(4, &auth, "1s", "n4.cert");
    // A certificate of node 0, presented by node 5.
    let stolen = cert(0, &auth, "1d", "stolen.cert");
    let foreign = cert(6, &rogue_auth, "1d", "n6.cert");
    let revoked_cert = cert(7, &auth, "1d", "n7.cert");
    tokio::time::sleep(Duration::from_secs(7)).await; // node 4's certificate expires
    let k = s(&key);
    let rogue_key = rogue_auth.join("authority.pub");
    let rogues: [(usize, Vec<&str>, &str, &str); 5] = [
        (3, vec![], "missing", "no member certificate"),
        (
            4,
            vec!["--authority-key", k, "--member-cert", s(&expired)],
            "expired",
            "member certificate expired",
        ),
        (
            5,
            vec!["--authority-key", k, "--member-cert", s(&stolen)],
            "other_endpoint",
            "member certificate for another endpoint id",
        ),
        (
            6,
            vec![
                "--authority-key",
                s(&rogue_key),
                "--member-cert",
                s(&foreign),
            ],
            "other_authority",
            "member certificate from another authority",
        ),
        (
            7,
            vec!["--authority-key", k, "--member-cert", s(&revoked_cert)],
            "revoked",
            "member certificate revoked",
        ),
    ];
    let mut started = Vec::new();
    for (i, flags, reason, said) in &rogues {
        let mut o = node_opts(&lan, *i, &honest_peers, flags);
        if *i == 5 {
            o.env
                .push(("PEAT_SIDECAR_TEST_ROGUE_CERT".into(), "1".into()));
        }
        let node = Sidecar::start_in(&format!("n{i}"), &dirs[*i], o).await;
        started.push((node, *reason, *said));
    }
    let honest_says = [
        ("missing", "no member certificate"),
        ("expired", "expired at"),
        ("other_endpoint", "is for endpoint id"),
        ("other_authority", "signed by another authority"),
        ("revoked", "is revoked"),
    ];
    for (node, reason, said) in &started {
        // The refused node's log names the reason its peers gave, and its table shows
        // them rejected.
        assert!(
            wait_log(node, &["peer rejected", said], Duration::from_secs(30)).await,
            "{}: no `{said}` refusal in its log:\n{}",
            node.name,
            node.log()
        );
        let peers = node.peers().await;
        for h in &honest {
            assert!(
                !node.connected().await.contains(&h.id),
                "{} connected to {}",
                node.name,
                h.name
            );
        }
        assert!(
            peers
                .iter()
                .any(|p| p.state == pb::PeerState::Rejected as i32 && p.last_error.contains(said)),
            "{}: {peers:?}",
            node.name
        );
        // The refusing side's log names it too.
        let (_, detail) = honest_says.iter().find(|(r, _)| r == reason).unwrap();
        let mut seen = false;
        for h in &honest {
            seen |= wait_log(
                h,
                &[&node.id, "member certificate refused", detail],
                Duration::from_secs(5),
            )
            .await;
        }
        assert!(
            seen,
            "no honest node logged refusing {} ({reason})",
            node.name
        );
        let total: u64 = {
            let mut n = 0;
            for h in &honest {
                n += refusals(&h.status().await, reason);
            }
            n
        };
        assert!(total >= 1, "{reason}: not counted");
    }
    // The honest mesh is intact and lists no rogue as connected.
    for h in &honest {
        let c = h.connected().await;
        assert_eq!(c.len(), 2, "{}: {c:?}", h.name);
    }
    let (okay, out, _) = honest[0].cli(&["status"]);
    assert!(
        okay && out.contains("certificates") && out.contains("refused"),
        "{out}"
    );

    // Node 4 gets a fresh certificate in place of its expired one: no restart, and an
    // operator's connect goes through.
    let (node4, _, _) = &started[1];
    issue(&auth, &ids[4], "n4", "1d", &expired);
    let (okay, out, err) = node4.cli(&["connect", &honest_peers[0]]);
    assert!(okay, "connect after renewal: {out} {err}\n{}", node4.log());
    assert!(node4.log().contains("member certificate reloaded"));
    assert!(
        wait_until(Duration::from_secs(20), || async {
            honest[0].connected().await.contains(&ids[4])
        })
        .await
        .is_some(),
        "node 4 not connected after its certificate was renewed"
    );
}

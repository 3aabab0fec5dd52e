//! The command line without a running daemon: bad input gives a clear error, a client
//! with no sidecar says where it looked, `id` is stable.

mod common;

use common::{free_port, BIN};

fn run_expect_failure(args: &[&str]) -> String {
    let out = std::process::Command::new(BIN).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    err
}

#[test]
fn bad_input_gives_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();

    let err = run_expect_failure(&["run", "--data-dir", d, "--peer", "nothex@1.2.3.4:5"]);
    assert!(err.contains("not an endpoint id"), "{err}");
    let err = run_expect_failure(&["run", "--data-dir", d, "--listen", "http://x"]);
    assert!(err.contains("tcp://HOST:PORT"), "{err}");
    let err = run_expect_failure(&["run", "--data-dir", d, "--discovery-mode", "carrier-pigeon"]);
    assert!(err.contains("mdns") && err.contains("gossip"), "{err}");
    let err = run_expect_failure(&["run", "--data-dir", d, "--discovery-interval", "0"]);
    assert!(err.contains("above 0"), "{err}");
    let err = run_expect_failure(&["run", "--data-dir", d, "--app-id", ""]);
    assert!(err.contains("must not be empty"), "{err}");

    // A corrupt key file stops the start and is not replaced.
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("secret.key"), b"garbage").unwrap();
    let err = run_expect_failure(&["id", "--data-dir", bad.to_str().unwrap()]);
    assert!(
        err.contains("secret.key") && err.contains("32 bytes"),
        "{err}"
    );
    assert_eq!(std::fs::read(bad.join("secret.key")).unwrap(), b"garbage");

    // A data dir that cannot be created.
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let err = run_expect_failure(&["run", "--data-dir", file.join("sub").to_str().unwrap()]);
    assert!(err.contains("data dir"), "{err}");

    // A UDP port already in use.
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let err = run_expect_failure(&[
        "run",
        "--data-dir",
        d,
        "--bind",
        &format!("127.0.0.1:{port}"),
        "--listen",
        &format!("tcp://127.0.0.1:{}", free_port()),
    ]);
    assert!(
        err.contains("cannot bind UDP") && err.contains("--bind"),
        "{err}"
    );

    // An API port already in use.
    let busy_tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = run_expect_failure(&[
        "run",
        "--data-dir",
        d,
        "--bind",
        &format!("127.0.0.1:{}", free_port()),
        "--listen",
        &format!("tcp://{}", busy_tcp.local_addr().unwrap()),
    ]);
    assert!(
        err.contains("cannot listen") && err.contains("--listen"),
        "{err}"
    );

    // A socket path that cannot be written.
    let err = run_expect_failure(&[
        "run",
        "--data-dir",
        d,
        "--bind",
        &format!("127.0.0.1:{}", free_port()),
        "--listen",
        "unix:///nonexistent-dir/peat/api.sock",
    ]);
    assert!(err.contains("cannot create the API socket"), "{err}");

    // A mode that is not built says so instead of silently doing nothing.
    let unbuilt: Vec<&str> = ["mdns", "dns", "gossip"]
        .into_iter()
        .filter(|m| {
            !peat_sidecar::discovery::BUILT_MODES
                .iter()
                .any(|b| b.as_str() == *m)
        })
        .collect();
    for m in unbuilt {
        let mut args = vec!["run", "--data-dir", d, "--discovery-mode", m];
        let port = format!("127.0.0.1:{}", free_port());
        let listen = format!("tcp://127.0.0.1:{}", free_port());
        args.extend([
            "--bind",
            &port,
            "--listen",
            &listen,
            "--discovery-service",
            "x.local",
        ]);
        let err = run_expect_failure(&args);
        assert!(err.contains("not available in this build"), "{m}: {err}");
    }
}

#[test]
fn client_without_sidecar_says_where_it_looked() {
    let port = free_port();
    let api = format!("tcp://127.0.0.1:{port}");
    for cmd in ["status", "peers"] {
        let out = std::process::Command::new(BIN)
            .args([cmd, "--api", &api])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(&api), "{err}");
    }
}

#[test]
fn id_is_stable_and_hex() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::endpoint_id(dir.path());
    let b = common::endpoint_id(dir.path());
    assert_eq!(a, b);
    assert_eq!(a.len(), 64);
    assert!(a
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
}

/// `run --help` groups its options under headings; `-h` gives one line per option and
/// leaves the details to `--help`.
#[test]
fn run_help_is_grouped_and_h_is_the_short_form() {
    let help = |flag: &str| {
        let out = std::process::Command::new(BIN)
            .args(["run", flag])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let (short, long) = (help("-h"), help("--help"));
    let headings = [
        "Identity and API:",
        "Discovery:",
        "mDNS:",
        "Liveness and QUIC timers:",
        "Data plane:",
        "Limits:",
        "Operations:",
    ];
    for text in [&short, &long] {
        let at: Vec<usize> = headings
            .iter()
            .map(|h| text.find(h).unwrap_or_else(|| panic!("no {h}:\n{text}")))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "order: {text}");
    }
    // Under its heading, not in the flat list.
    let discovery = &long[long.find("Discovery:").unwrap()..long.find("mDNS:").unwrap()];
    assert!(discovery.contains("--discovery-mode") && discovery.contains("--gossip-ttl"));
    assert!(long.contains("Prefer --shared-key-file"), "{long}");
    assert!(!short.contains("Prefer --shared-key-file"), "{short}");
    assert!(
        short.lines().count() * 3 < long.lines().count() * 2,
        "-h {} lines, --help {}",
        short.lines().count(),
        long.lines().count()
    );
}

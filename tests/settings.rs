//! End-to-end checks of the settings (issues 14 and 15): the real binary refuses a bad
//! value before it binds anything, exits with code 2 and names the flag or the
//! `PEAT_SIDECAR_*` variable the user set; an address another process holds exits 2 as
//! well. Nothing here reaches the network: every run is refused before the endpoint is
//! bound, or binds loopback only (the API on 0.0.0.0 of the warning test aside, which
//! no one is told about and which lives for a moment).

mod common;

use std::{
    process::{Command, Stdio},
    str::FromStr,
    time::{Duration, Instant},
};

use clap::CommandFactory;
use common::{free_port, BIN};

const ID: &str = "ae58ff8833241ac82d6ff7611046ed67b5072d142c588d0063e942d9a75502b6";

/// Runs `peat-sidecar run ARGS` with `env` on loopback ports and a fresh data dir;
/// returns its exit code and stderr. A daemon that starts instead of refusing is killed
/// and the test fails.
fn refused(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let bind = format!("127.0.0.1:{}", free_port());
    let listen = format!("tcp://127.0.0.1:{}", free_port());
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--data-dir", dir.path().to_str().unwrap()]);
    if !args.contains(&"--bind") {
        cmd.args(["--bind", &bind]);
    }
    if !args.contains(&"--listen") {
        cmd.args(["--listen", &listen]);
    }
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{args:?} {env:?} started instead of refusing:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    (out.status.code().unwrap_or(-1), err)
}

/// Refused with exit code 2 and a one-line message; returns the message.
fn usage_error(args: &[&str], env: &[(&str, &str)]) -> String {
    let (code, err) = refused(args, env);
    assert_eq!(code, 2, "{args:?} {env:?}: {err}");
    // Nothing was started: no identity key, no log line.
    assert!(!err.contains(" INFO "), "{err}");
    err
}

#[test]
fn idle_timeout_shorter_than_three_keep_alives_is_refused() {
    let err = usage_error(&["--idle-timeout-ms", "800"], &[]);
    assert!(err.contains("--idle-timeout-ms 800 ms"), "{err}");
    assert!(err.contains("--keep-alive-ms"), "{err}");
    let err = usage_error(
        &["--idle-timeout-ms", "2500", "--keep-alive-ms", "1000"],
        &[],
    );
    assert!(err.contains("--idle-timeout-ms 2500 ms"), "{err}");
    assert!(err.contains("--keep-alive-ms 1000 ms"), "{err}");
}

#[test]
fn errors_name_the_variable_the_user_set() {
    // A cross-flag check of ours.
    let err = usage_error(&[], &[("PEAT_SIDECAR_IDLE_TIMEOUT_MS", "2000")]);
    assert!(
        err.contains("PEAT_SIDECAR_IDLE_TIMEOUT_MS 2000 ms"),
        "{err}"
    );
    assert!(!err.contains("--idle-timeout-ms"), "{err}");
    // A single value that clap refuses.
    let err = usage_error(&[], &[("PEAT_SIDECAR_IDLE_TIMEOUT_MS", "10")]);
    assert!(err.contains("PEAT_SIDECAR_IDLE_TIMEOUT_MS"), "{err}");
    assert!(!err.contains("--idle-timeout-ms"), "{err}");
    // The same value on the command line is named by its flag.
    let err = usage_error(&["--idle-timeout-ms", "10"], &[]);
    assert!(err.contains("--idle-timeout-ms"), "{err}");
    let err = usage_error(
        &[],
        &[
            ("PEAT_SIDECAR_GOSSIP_TTL", "10"),
            ("PEAT_SIDECAR_DISCOVERY_MODE", "gossip"),
        ],
    );
    assert!(err.contains("PEAT_SIDECAR_GOSSIP_TTL 10s"), "{err}");
}

#[test]
fn settings_errors_exit_2_before_anything_is_bound() {
    let err = usage_error(&["--discovery-mode", "none,mdns"], &[]);
    assert!(err.contains("cannot be combined"), "{err}");
    let err = usage_error(&["--discovery-mode", "dns"], &[]);
    assert!(err.contains("--discovery-service"), "{err}");
    let err = usage_error(
        &["--discovery-mode", "dns", "--discovery-service", "a..b"],
        &[],
    );
    assert!(err.contains("not a valid DNS name"), "{err}");
    let err = usage_error(
        &["--discovery-mode", "mdns", "--mdns-interfaces", "wlan["],
        &[],
    );
    assert!(
        err.contains("--mdns-interfaces") && err.contains("wlan["),
        "{err}"
    );
}

#[test]
fn boolean_variables_accept_what_systemd_accepts() {
    // The idle-timeout refusal proves the boolean was accepted first.
    for v in [
        "1", "0", "yes", "No", "ON", "off", "true", "False", "y", "n",
    ] {
        let err = usage_error(
            &["--idle-timeout-ms", "800"],
            &[("PEAT_SIDECAR_MDNS_LOOPBACK", v)],
        );
        assert!(err.contains("--idle-timeout-ms 800"), "{v}: {err}");
    }
    let err = usage_error(&[], &[("PEAT_SIDECAR_MDNS_LOOPBACK", "maybe")]);
    assert!(err.contains("PEAT_SIDECAR_MDNS_LOOPBACK"), "{err}");
}

#[test]
fn empty_variables_count_as_unset() {
    let run = peat_sidecar::config::Cli::command();
    let run = run.find_subcommand("run").expect("run subcommand");
    let vars: Vec<String> = run
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    assert!(vars.len() > 20, "{vars:?}");
    let env: Vec<(&str, &str)> = vars.iter().map(|v| (v.as_str(), "")).collect();
    // Every one empty at once, and the only complaint is the flag we got wrong.
    let err = usage_error(&["--idle-timeout-ms", "800"], &env);
    assert!(err.contains("--idle-timeout-ms 800"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn hex_that_is_not_a_public_key_says_so() {
    let not_a_key = (0u8..=255)
        .map(|b| hex::encode([b; 32]))
        .find(|s| iroh::EndpointId::from_str(s).is_err())
        .unwrap();
    let peer = format!("{not_a_key}@127.0.0.1:9");
    let err = usage_error(&["--peer", &peer], &[]);
    assert!(
        err.contains("not a valid endpoint id (not a public key)"),
        "{err}"
    );
    assert!(!err.contains("expected 64 hex"), "{err}");
}

#[test]
fn bind_address_not_on_this_host_says_so() {
    // TEST-NET-3: documentation only, never configured on a host.
    let err = usage_error(&["--bind", "203.0.113.77:9470"], &[]);
    assert!(err.contains("203.0.113.77 is not on this host"), "{err}");
    assert!(!err.contains("another peat-sidecar"), "{err}");
}

#[test]
fn ipv6_peer_with_ipv4_bind_is_refused() {
    let peer = format!("{ID}@[::1]:9470");
    let err = usage_error(&["--peer", &peer], &[]);
    assert!(err.contains("address family does not match"), "{err}");
    assert!(err.contains("--peer") && err.contains("--bind"), "{err}");
}

#[test]
fn bad_shared_key_suggests_a_new_file_not_the_same_one() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("shared.key");
    std::fs::write(&key, b"not a key").unwrap();
    let path = key.to_str().unwrap();
    let err = usage_error(&["--shared-key-file", path], &[]);
    assert!(err.contains("32 bytes"), "{err}");
    assert!(!err.trim_end().ends_with(&format!("> {path}")), "{err}");
    assert!(err.contains(&format!("> {path}.new")), "{err}");
}

#[test]
fn a_missing_key_file_names_the_os_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("absent.key");
    let err = usage_error(&["--shared-key-file", key.to_str().unwrap()], &[]);
    assert_eq!(
        err.trim(),
        format!(
            "error: cannot read the shared key file {} (--shared-key-file): No such file or directory (os error 2)",
            key.display()
        )
    );
}

#[test]
fn addresses_in_use_exit_2_naming_the_setting() {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = format!("tcp://127.0.0.1:{}", tcp.local_addr().unwrap().port());
    let (code, err) = refused(&["--listen", &listen], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("in use"), "{err}");
    assert!(err.contains("--listen"), "{err}");

    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = format!("tcp://{}", tcp.local_addr().unwrap());
    let (code, err) = refused(&["--metrics-listen", &metrics], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--metrics-listen"), "{err}");

    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let bind = udp.local_addr().unwrap().to_string();
    let (code, err) = refused(&["--bind", &bind], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--bind"), "{err}");
}

/// The API has no authentication: one on a non-loopback address is started, with a
/// warning that says how to restrict it; one on loopback gets no such warning.
#[test]
fn an_api_open_to_the_network_is_warned_about() {
    let started = |listen: &str| -> String {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut child = Command::new(BIN)
            .args(["run", "--data-dir", dir.path().to_str().unwrap()])
            .args(["--bind", &format!("127.0.0.1:{}", free_port())])
            .args(["--listen", listen])
            .env("PEAT_SIDECAR_LOG_FORMAT", "text")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let text = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("peat-sidecar running") || Instant::now() > deadline {
                break text;
            }
            assert!(child.try_wait().unwrap().is_none(), "it exited:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        };
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(text.contains("peat-sidecar running"), "{text}");
        text
    };
    let port = free_port();
    let log = started(&format!("tcp://0.0.0.0:{port}"));
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("no authentication"))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(
        warning.contains("--listen tcp://127.0.0.1:")
            && warning.contains("unix://")
            && warning.contains("firewall"),
        "{warning}"
    );
    let log = started(&format!("tcp://127.0.0.1:{}", free_port()));
    assert!(!log.contains("no authentication"), "{log}");
}

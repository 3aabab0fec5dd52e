//! Every check of `Settings::check`, against a made-up host.

use std::collections::BTreeSet;

use super::*;
use crate::{
    config::Command,
    platform::iface::{IfAddr, IfFlags, InterfaceInfo},
};

const ID: &str = "ae58ff8833241ac82d6ff7611046ed67b5072d142c588d0063e942d9a75502b6";

fn args(extra: &[&str]) -> RunArgs {
    let argv = ["peat-sidecar", "run"].iter().chain(extra);
    match parse_cli(argv).unwrap().command {
        Command::Run(a) => *a,
        _ => unreachable!("run"),
    }
}

fn iface(name: &str, loopback: bool, addrs: &[&str]) -> (String, InterfaceInfo) {
    let addrs: BTreeSet<IfAddr> = addrs
        .iter()
        .map(|a| IfAddr {
            ip: a.parse().unwrap(),
            prefix_len: 24,
        })
        .collect();
    let flags = IfFlags {
        up: true,
        running: true,
        multicast: !loopback,
        loopback,
        point_to_point: false,
    };
    let info = InterfaceInfo {
        name: name.into(),
        index: 1,
        flags,
        addrs,
    };
    (name.into(), info)
}

/// A host with `lo` (127.0.0.1, ::1) and `eth0` (10.0.0.1, fd00::1).
fn host() -> Host {
    Host {
        interfaces: [
            iface("lo", true, &["127.0.0.1", "::1"]),
            iface("eth0", false, &["10.0.0.1", "fd00::1"]),
        ]
        .into_iter()
        .collect(),
    }
}

fn check(extra: &[&str]) -> Result<Settings, SettingsError> {
    Settings::check(&args(extra), &host())
}

fn err(extra: &[&str]) -> String {
    let e = check(extra).expect_err("should be refused");
    assert_eq!(e.exit_code(), 2, "{e}");
    e.to_string()
}

#[test]
fn defaults_pass_and_carry_the_values() {
    let s = check(&[]).unwrap();
    assert_eq!(s.node.bind.len(), 1);
    assert_eq!(s.node.bind[0].port(), crate::config::DEFAULT_IROH_PORT);
    assert!(s.node.bind[0].ip().is_unspecified() && s.node.bind[0].is_ipv4());
    assert_eq!(s.node.liveness.keep_alive, Duration::from_secs(120));
    assert_eq!(s.node.liveness.idle_timeout, Duration::from_secs(360));
    assert_eq!(
        s.node.beacons.beacon_interval,
        Some(Duration::from_millis(2000))
    );
    assert!(s.discovery.modes.0.is_empty());
    assert_eq!(s.discovery.modes.to_string(), "none");
    assert!(s.discovery.mdns.is_none() && s.discovery.dns.is_none());
    assert!(s.discovery.gossip.is_none());
    assert!(s.node.shared_key.is_none());
    // Zero would stop every dial: clamped to one.
    let s = check(&["--max-known-peers", "0", "--max-concurrent-dials", "0"]).unwrap();
    assert_eq!(s.node.limits.max_known_peers, 1);
    assert_eq!(s.node.limits.max_concurrent_dials, 1);
}

#[test]
fn idle_timeout_below_the_floor_is_refused_naming_both_flags() {
    let e = err(&["--idle-timeout-ms", "800", "--keep-alive-ms", "200"]);
    assert!(e.contains("--idle-timeout-ms 800 ms"), "{e}");
    assert!(
        e.contains("--keep-alive-ms") && e.contains("1000 ms"),
        "{e}"
    );
    check(&["--idle-timeout-ms", "1000", "--keep-alive-ms", "300"]).unwrap();
}

#[test]
fn idle_timeout_below_three_keep_alives_is_refused_naming_both_flags() {
    let e = err(&["--idle-timeout-ms", "2999", "--keep-alive-ms", "1000"]);
    assert!(e.contains("--idle-timeout-ms 2999 ms"), "{e}");
    assert!(e.contains("--keep-alive-ms 1000 ms"), "{e}");
    assert!(e.contains("at least 3000 ms"), "{e}");
    // The default idle timeout (360 s) against a longer keep-alive.
    let e = err(&["--keep-alive-ms", "200000"]);
    assert!(e.contains("at least 600000 ms"), "{e}");
    check(&["--idle-timeout-ms", "3000", "--keep-alive-ms", "1000"]).unwrap();
    // The pre-beacon settings still pass.
    check(&[
        "--idle-timeout-ms",
        "5000",
        "--keep-alive-ms",
        "1000",
        "--beacon-interval-ms",
        "0",
    ])
    .unwrap();
}

#[test]
fn a_beacon_interval_below_the_floor_is_refused_and_zero_turns_beacons_off() {
    let e = err(&["--beacon-interval-ms", "100"]);
    assert!(e.contains("--beacon-interval-ms 100 ms"), "{e}");
    assert!(e.contains("250 ms"), "{e}");
    let s = check(&["--beacon-interval-ms", "0"]).unwrap();
    assert_eq!(s.node.beacons.beacon_interval, None);
    let s = check(&["--beacon-interval-ms", "250"]).unwrap();
    assert_eq!(
        s.node.beacons.beacon_interval,
        Some(Duration::from_millis(250))
    );
}

#[test]
fn errors_name_the_variable_a_value_came_from() {
    let mut a = args(&["--idle-timeout-ms", "2000"]);
    a.origins
        .set_env("idle_timeout_ms", "PEAT_SIDECAR_IDLE_TIMEOUT_MS");
    let e = Settings::check(&a, &host()).unwrap_err().to_string();
    assert!(e.contains("PEAT_SIDECAR_IDLE_TIMEOUT_MS 2000 ms"), "{e}");
    assert!(!e.contains("--idle-timeout-ms"), "{e}");
    // The other flag kept its default and is named as a flag.
    assert!(e.contains("--keep-alive-ms"), "{e}");
}

#[test]
fn modes_are_folded_and_checked() {
    let s = check(&["--discovery-mode", "gossip,mdns,gossip"]).unwrap();
    assert_eq!(
        s.discovery.modes.0,
        vec![DiscoveryMode::Mdns, DiscoveryMode::Gossip]
    );
    assert_eq!(s.discovery.modes.to_string(), "mdns,gossip");
    assert!(s.discovery.mdns.is_some() && s.discovery.gossip.is_some());
    assert!(s.discovery.dns.is_none());
    let e = err(&["--discovery-mode", "none,mdns"]);
    assert!(
        e.contains("--discovery-mode") && e.contains("none,mdns"),
        "{e}"
    );
    let e = err(&["--discovery-mode", "dns"]);
    assert!(e.contains("--discovery-service"), "{e}");
}

#[test]
fn gossip_ttl_must_cover_three_rounds() {
    let s = check(&["--discovery-mode", "gossip", "--discovery-interval", "5"]).unwrap();
    let g = s.discovery.gossip.unwrap();
    assert_eq!(g.ttl, Duration::from_secs(100), "20 rounds by default");
    assert_eq!(g.interval, Duration::from_secs(5));
    let e = err(&["--discovery-mode", "gossip", "--gossip-ttl", "89"]);
    assert!(e.contains("--gossip-ttl 89s"), "{e}");
    assert!(
        e.contains("--discovery-interval 30s") && e.contains("90s"),
        "{e}"
    );
    check(&["--discovery-mode", "gossip", "--gossip-ttl", "90"]).unwrap();
    // Without gossip the TTL is not used, so not checked (as before).
    check(&["--gossip-ttl", "1"]).unwrap();
}

#[test]
fn mdns_interface_globs_are_compiled_here() {
    let e = check(&["--discovery-mode", "mdns", "--mdns-interfaces", "wlan["]).unwrap_err();
    assert!(matches!(e, SettingsError::InterfacePattern { .. }), "{e}");
    let chain = format!("{:#}", anyhow::Error::from(e));
    assert!(
        chain.contains("--mdns-interfaces") && chain.contains("wlan["),
        "{chain}"
    );
    let s = check(&[
        "--discovery-mode",
        "mdns",
        "--mdns-interfaces",
        "eth*,!eth9",
    ])
    .unwrap();
    let m = s.discovery.mdns.unwrap();
    assert!(m.filter.name_allowed("eth0") && !m.filter.name_allowed("eth9"));
    assert_eq!(m.max_known_peers, 1024);
}

#[test]
fn an_interface_pattern_that_matches_nothing_is_reported() {
    let h = host();
    let s = check(&[
        "--discovery-mode",
        "mdns",
        "--mdns-interfaces",
        "lo,eth0,wlan*",
    ])
    .unwrap();
    let u = s.discovery.mdns.unwrap().unmatched(&h.interfaces);
    assert_eq!(u.len(), 2, "{u:?}");
    assert_eq!(u[0].pattern, "lo");
    assert_eq!(u[0].needs_loopback.as_deref(), Some("--mdns-loopback"));
    assert_eq!(u[0].eligible, vec!["eth0".to_string()]);
    let line = u[0].to_string();
    assert!(
        line.contains("`lo`") && line.contains("add --mdns-loopback"),
        "{line}"
    );
    assert!(line.contains("eligible now: eth0"), "{line}");
    assert_eq!(u[1].pattern, "wlan*");
    assert!(u[1].needs_loopback.is_none());
    let s = check(&[
        "--discovery-mode",
        "mdns",
        "--mdns-interfaces",
        "lo",
        "--mdns-loopback",
    ]);
    assert!(s
        .unwrap()
        .discovery
        .mdns
        .unwrap()
        .unmatched(&h.interfaces)
        .is_empty());
    // No allow list: nothing to report.
    let s = check(&["--discovery-mode", "mdns"]).unwrap();
    assert!(s
        .discovery
        .mdns
        .unwrap()
        .unmatched(&h.interfaces)
        .is_empty());
}

#[test]
fn dns_settings_are_checked() {
    let base = ["--discovery-mode", "dns", "--discovery-service"];
    let s = check(&[&base[..], &["peat.test", "--dns-server", "127.0.0.1:5353"]].concat()).unwrap();
    let d = s.discovery.dns.unwrap();
    assert_eq!(d.server, Some("127.0.0.1:5353".parse().unwrap()));
    assert_eq!(d.handshake_bind, "0.0.0.0:9471".parse().unwrap());
    assert_eq!(d.port_name, "--discovery-port");
    let e = err(&[&base[..], &["a..b"]].concat());
    assert!(e.contains("--discovery-service `a..b`"), "{e}");
    let e = err(&[&base[..], &["peat.test", "--dns-server", "dns.example"]].concat());
    assert!(e.contains("--dns-server `dns.example`"), "{e}");
    let e = err(&[&base[..], &["peat.test", "--discovery-port", "9470"]].concat());
    assert!(
        e.contains("--discovery-port 9470") && e.contains("--bind"),
        "{e}"
    );
}

#[test]
fn bind_must_be_an_address_of_this_host() {
    for ok in [
        "0.0.0.0:1",
        "[::]:1",
        "127.0.0.1:1",
        "127.0.0.9:1",
        "10.0.0.1:1",
        "[fd00::1]:1",
    ] {
        check(&["--bind", ok]).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    let e = err(&["--bind", "10.9.9.9:9470"]);
    assert!(e.contains("10.9.9.9 is not on this host"), "{e}");
    assert!(
        e.contains("10.0.0.1") && !e.contains("another peat-sidecar"),
        "{e}"
    );
}

#[test]
fn dual_stack_bind_takes_one_address_per_family_on_one_port() {
    let s = check(&["--bind", "0.0.0.0:9470,[::]:9470"]).unwrap();
    assert_eq!(s.node.bind.len(), 2);
    check(&["--bind", "[::]:9470", "--bind", "0.0.0.0:9470"]).unwrap();
    let e = err(&["--bind", "0.0.0.0:9470,127.0.0.1:9470"]);
    assert!(e.contains("same family") && e.contains("--bind"), "{e}");
    let e = err(&["--bind", "0.0.0.0:9470,[::]:9480"]);
    assert!(e.contains("different ports"), "{e}");
    let e = err(&["--bind", "0.0.0.0:1,[::]:1,[::1]:1"]);
    assert!(e.contains("more than two"), "{e}");
    // A v6 peer is fine once IPv6 is bound too.
    check(&[
        "--peer",
        &format!("{ID}@[fd00::2]:9470"),
        "--bind",
        "0.0.0.0:9470,[::]:9470",
    ])
    .unwrap();
}

#[test]
fn an_ipv6_peer_with_an_ipv4_bind_is_refused() {
    let v6 = format!("{ID}@[fd00::2]:9470");
    let e = err(&["--peer", &v6]);
    assert!(e.contains("address family does not match"), "{e}");
    assert!(
        e.contains("--peer") && e.contains("--bind 0.0.0.0:9470"),
        "{e}"
    );
    check(&["--peer", &v6, "--bind", "[::]:9470"]).unwrap();
    check(&["--peer", &format!("{ID}@10.0.0.2:9470")]).unwrap();
    // A host name may resolve to either family: checked at dial time.
    check(&["--peer", &format!("{ID}@node-2.lan:9470")]).unwrap();
}

#[test]
fn shared_key_file_is_read_and_checked_here() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let e = check(&["--shared-key-file", missing.to_str().unwrap()]).unwrap_err();
    assert!(matches!(e, SettingsError::SharedKeyRead { .. }), "{e}");

    let bad = dir.path().join("shared.key");
    std::fs::write(&bad, b"garbage").unwrap();
    std::fs::write(dir.path().join("shared.key.new"), b"taken").unwrap();
    let e = err(&["--shared-key-file", bad.to_str().unwrap()]);
    let path = bad.display().to_string();
    assert!(e.contains("must hold 32 bytes"), "{e}");
    // The suggested command must not overwrite the user's file (nor another one).
    assert!(
        !e.contains(&format!("> {path}\n")) && !e.ends_with(&format!("> {path}")),
        "{e}"
    );
    assert!(e.ends_with(&format!("> {path}.new2")), "{e}");

    std::fs::write(&bad, [7u8; 32]).unwrap();
    let s = check(&["--shared-key-file", bad.to_str().unwrap()]).unwrap();
    assert_eq!(s.node.shared_key.unwrap().0, [7u8; 32]);
}

#[test]
fn a_host_that_cannot_be_read_is_not_a_usage_error() {
    let e = SettingsError::Host(IfaceError::List(nix::Error::EACCES));
    assert_eq!(e.exit_code(), 1);
}

#[test]
fn data_plane_limits() {
    let s = check(&[]).unwrap();
    assert_eq!(s.data.max_message_bytes, 262_144);
    assert_eq!(s.data.max_retained_bytes, 64 * 1024 * 1024);
    assert_eq!(s.data.sync_interval, Duration::from_secs(10));
    let e = err(&[
        "--max-retained-bytes",
        "2048",
        "--max-message-bytes",
        "4096",
    ]);
    assert!(e.contains("--max-retained-bytes 2048"), "{e}");
    assert!(e.contains("--max-message-bytes 4096"), "{e}");
    let mut a = args(&["--max-retained-bytes", "2048"]);
    a.origins
        .set_env("max_retained_bytes", "PEAT_SIDECAR_MAX_RETAINED_BYTES");
    let e = Settings::check(&a, &host()).unwrap_err().to_string();
    assert!(e.starts_with("PEAT_SIDECAR_MAX_RETAINED_BYTES 2048"), "{e}");
    assert!(parse_cli(["peat-sidecar", "run", "--max-message-bytes", "0"]).is_err());
}

#[test]
fn worker_threads_default_to_one_and_are_bounded() {
    assert_eq!(args(&[]).worker_threads, 1);
    assert_eq!(args(&["--worker-threads", "4"]).worker_threads, 4);
    for bad in ["0", "65"] {
        assert!(parse_cli(["peat-sidecar", "run", "--worker-threads", bad]).is_err());
    }
}

#[test]
fn a_missing_key_file_names_the_os_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.key");
    let e = check(&["--shared-key-file", missing.to_str().unwrap()]).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    // As main prints it: the error and its causes.
    let shown = format!("{:#}", anyhow::Error::from(e));
    assert!(
        shown.starts_with("cannot read the shared key file") && shown.contains("--shared-key-file"),
        "{shown}"
    );
    assert_eq!(shown.matches("os error 2").count(), 1, "{shown}");
}

#[test]
fn ttl_without_retain_is_refused_as_a_usage_error() {
    let e = parse_cli(["peat-sidecar", "publish", "t", "v", "--ttl", "5"]).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    let text = e.to_string();
    assert!(text.contains("--ttl needs --retain"), "{text}");
    assert!(
        text.contains("peat-sidecar publish"),
        "usage of publish: {text}"
    );
    assert!(parse_cli([
        "peat-sidecar",
        "publish",
        "t",
        "v",
        "--ttl",
        "5",
        "--retain"
    ])
    .is_ok());
}

#[test]
fn link_priorities_latest_value_topics_and_the_rate_cap_are_checked() {
    use crate::data::Class;
    let s = check(&[
        "--priority",
        "alerts/**=urgent",
        "--priority",
        "logs/*=bulk,a=b=normal",
        "--latest-value",
        "tracks/*",
        "--link-rate",
        "64000",
    ])
    .unwrap();
    let p = &s.data.links.policy;
    assert_eq!(p.class_of("alerts/x/y"), Class::Urgent);
    assert_eq!(p.class_of("logs/a"), Class::Bulk);
    assert_eq!(p.class_of("other"), Class::Normal);
    assert_eq!(p.priorities.len(), 3);
    assert_eq!(p.latest_value.len(), 1);
    assert_eq!(s.data.links.rate_cap, 64_000);
    assert_eq!(check(&[]).unwrap().data.links.rate_cap, 0);
    let e = err(&["--priority", "alerts/**=fast"]);
    assert!(e.contains("--priority `alerts/**=fast`"), "{e}");
    assert!(e.contains("use urgent, normal or bulk"), "{e}");
    let e = err(&["--priority", "alerts"]);
    assert!(e.contains("not PATTERN=CLASS"), "{e}");
    let e = err(&["--latest-value", "a/**/b"]);
    assert!(e.contains("--latest-value `a/**/b`"), "{e}");
    let mut a = args(&["--priority", "x=slow"]);
    a.origins.set_env("priority", "PEAT_SIDECAR_PRIORITY");
    let e = Settings::check(&a, &host()).unwrap_err().to_string();
    assert!(e.starts_with("PEAT_SIDECAR_PRIORITY `x=slow`"), "{e}");
}

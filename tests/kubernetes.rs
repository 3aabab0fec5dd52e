//! The Kubernetes manifests (packaging/kubernetes/) as they configure the daemon: their
//! settings work against a real DNS server (dnsmasq on loopback, as tests/dns.rs), and
//! the DaemonSet agrees with the image on the command.

mod common;

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use common::{dnsmasq::Dnsmasq, free_port, free_port_on, wait_until, Opts, Sidecar};

/// Slack on top of one discovery interval for scheduling on a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(2);

/// This test's own loopback addresses (block 7 of 127.77.0.0/16, as in tests/dns.rs).
fn ip(block: u8, n: u8) -> IpAddr {
    IpAddr::from([127, 77, block, n])
}

/// The environment of the container in packaging/kubernetes/daemonset.yaml, read from
/// the manifest itself (`- name: X` followed by `value: Y`).
fn manifest_env() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/kubernetes/daemonset.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut env = vec![];
    for pair in lines.windows(2) {
        if let (Some(name), Some(value)) = (
            pair[0].strip_prefix("- name: "),
            pair[1].strip_prefix("value: "),
        ) {
            if name.starts_with("PEAT_SIDECAR_") || name == "RUST_LOG" {
                env.push((name.to_string(), value.trim_matches('"').to_string()));
            }
        }
    }
    env
}

/// Two sidecars configured with the Kubernetes manifest's settings (the discovery name
/// with its trailing dot, the interval, the API on 0.0.0.0, the key file) find each
/// other through "the cluster DNS". Only what must differ on a shared test host is
/// overridden: addresses, ports, paths and the DNS server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_manifest_settings_work() {
    if common::skip::without_program("dnsmasq", "apt-get install dnsmasq-base") {
        return;
    }
    let env = manifest_env();
    let get = |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{k} not in the manifest"))
    };
    let service = get("PEAT_SIDECAR_DISCOVERY_SERVICE");
    assert_eq!(get("PEAT_SIDECAR_DISCOVERY_MODE"), "dns");
    assert_eq!(get("PEAT_SIDECAR_LISTEN"), "tcp://0.0.0.0:50051");
    let interval: u64 = get("PEAT_SIDECAR_DISCOVERY_INTERVAL").parse().unwrap();

    let (a_ip, b_ip) = (ip(7, 11), ip(7, 12));
    let dport = free_port_on(&[a_ip, b_ip]);
    let dns = Dnsmasq::start(&[]);
    dns.set(service.trim_end_matches('.'), &[a_ip, b_ip]);
    let keydir = tempfile::tempdir().unwrap();
    let key = keydir.path().join("shared.key");
    std::fs::write(&key, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").unwrap();

    let start = |name: &'static str, addr: IpAddr| {
        let mut env = env.clone();
        for (k, v) in [
            ("PEAT_SIDECAR_DISCOVERY_PORT", dport.to_string()),
            ("PEAT_SIDECAR_SHARED_KEY_FILE", key.display().to_string()),
            ("PEAT_SIDECAR_DNS_SERVER", dns.server()),
            ("PEAT_SIDECAR_LOG_FORMAT", "text".to_string()),
        ] {
            env.retain(|(n, _)| n != k);
            env.push((k.to_string(), v));
        }
        // --bind, --listen (loopback) and --data-dir come from the harness as flags,
        // which take precedence over the manifest's environment.
        Sidecar::start(
            name,
            Opts {
                app_id: get("PEAT_SIDECAR_APP_ID"),
                bind: Some(SocketAddr::new(addr, free_port())),
                env,
                ..Default::default()
            },
        )
    };
    let a = start("a", a_ip).await;
    let b = start("b", b_ip).await;
    let st = a.status().await;
    assert_eq!(st.discovery_modes, vec!["dns".to_string()]);
    assert!(
        st.shared_key,
        "the key file from the manifest's variable was not used"
    );
    let ok = wait_until(
        Duration::from_secs(interval) + SLACK + Duration::from_secs(5),
        || async {
            a.lists_with_source(&b.id, "dns").await
                && b.lists_with_source(&a.id, "dns").await
                && a.connected().await.contains(&b.id)
        },
    )
    .await;
    assert!(
        ok.is_some(),
        "sidecars with the manifest's settings did not find each other"
    );
}

/// The image's entrypoint already says `run`; the DaemonSet must not say it again (the
/// container would exit with "unexpected argument 'run'").
#[test]
fn kubernetes_manifest_and_image_agree_on_the_command() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let containerfile = std::fs::read_to_string(root.join("packaging/oci/Containerfile")).unwrap();
    let entrypoint = containerfile
        .lines()
        .find(|l| l.starts_with("ENTRYPOINT"))
        .expect("Containerfile has an ENTRYPOINT");
    assert!(entrypoint.contains("\"run\""), "{entrypoint}");
    let manifest =
        std::fs::read_to_string(root.join("packaging/kubernetes/daemonset.yaml")).unwrap();
    for line in manifest.lines().map(str::trim) {
        let is_arg_list = line.starts_with("args:") || line.starts_with("command:");
        assert!(
            !(is_arg_list && line.contains("run")),
            "daemonset.yaml repeats the entrypoint's `run`: {line}"
        );
    }
}

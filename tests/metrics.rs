//! `/metrics` (issue 18) checked by real parts on loopback: `promtool check metrics`
//! on a scrape, and a Prometheus server that scrapes a running sidecar and answers a
//! query for its connected peers. Needs `promtool` and `prometheus` (Debian package
//! `prometheus`, listed in scripts/apt-packages.txt).

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{free_port, wait_until, Opts, Sidecar};

/// The example alert rules that docs/OPERATIONS.md points to.
const ALERTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/packaging/prometheus/peat-sidecar-alerts.yml"
);
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/packaging/grafana/peat-sidecar-dashboard.json"
);

/// The PromQL of every panel of the Grafana dashboard, with Grafana's variables set
/// as "all instances" and a 1-minute rate window would set them.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(DASHBOARD).expect("the dashboard JSON is readable");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dash["panels"].as_array().expect("the dashboard has panels");
    panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .map(|e| {
            e.replace("$__rate_interval", "1m")
                .replace("$instance", ".*")
        })
        .collect()
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A plain HTTP/1.0 GET on loopback: (status code, body).
fn http_get(port: u16, path: &str, accept: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{accept}\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

fn with_metrics(port: u16, peers: Vec<String>) -> Opts {
    Opts {
        peers,
        extra: vec!["--metrics-listen".into(), format!("tcp://127.0.0.1:{port}")],
        ..Opts::default()
    }
}

/// Kills the Prometheus server when the test ends, failed or not.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target_port: u16) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("peat-prometheus-")
            .tempdir()
            .unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files: ['{ALERTS}']\n\
                 scrape_configs:\n  - job_name: sidecar\n    static_configs:\n      \
                 - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot run `prometheus`: install the Debian package prometheus");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("log")).unwrap_or_default()
    }

    /// The `data` of an HTTP API answer.
    fn api(&self, path: &str) -> Option<serde_json::Value> {
        let (code, body) = http_get(self.port, &format!("/api/v1/{path}"), None).ok()?;
        if code != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        Some(v["data"].clone())
    }

    /// The value of an instant query's single result, if there is one.
    fn query(&self, encoded_query: &str) -> Option<String> {
        let data = self.api(&format!("query?query={encoded_query}"))?;
        let result = data["result"].as_array()?;
        let [one] = result.as_slice() else {
            return None;
        };
        one["value"][1].as_str().map(str::to_string)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn promtool_check(text: &str, dir: &Path) -> (bool, String) {
    let file = dir.join("scrape.txt");
    std::fs::write(&file, text).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", file.display()))
        .output()
        .expect("cannot run promtool: install the Debian package prometheus");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_connected_peers() {
    if common::skip::without_program("promtool", "apt-get install prometheus")
        || common::skip::without_program("prometheus", "apt-get install prometheus")
    {
        return;
    }
    let (port_a, port_b) = (free_port(), free_port());
    let a = Sidecar::start("ma", with_metrics(port_a, vec![])).await;
    let b = Sidecar::start("mb", with_metrics(port_b, vec![a.peer_spec()])).await;
    wait_until(Duration::from_secs(15), || async {
        a.status().await.connected_peers == 1 && b.status().await.connected_peers == 1
    })
    .await
    .expect("a and b connected within 15 s");

    // The classic text format (no Accept header, as curl) passes promtool's lint.
    let (code, text) = http_get(port_a, "/metrics", None).unwrap();
    assert_eq!(code, 200, "{text}");
    assert!(
        text.contains("peat_sidecar_peers{state=\"connected\"} 1"),
        "{text}"
    );
    let (ok, said) = promtool_check(&text, &a.dir);
    assert!(ok, "promtool check metrics failed: {said}\n{text}");
    // a was dialled by b: one incoming check passed; per-peer bytes; build info.
    for want in [
        "peat_sidecar_incoming_handshakes_total{outcome=\"ok\"} 1",
        "peat_sidecar_dial_failures_total{reason=\"timeout\"} 0",
        "peat_sidecar_peers_by_source{source=\"inbound\"} 1",
        "peat_sidecar_peer_sent_bytes_total{peer=",
        "peat_sidecar_peer_received_bytes_total{peer=",
        "commit=",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    // iroh's own counters: the connection to b went over IPv4 loopback.
    let sent_v4 = text
        .lines()
        .find_map(|l| l.strip_prefix("peat_sidecar_iroh_socket_send_ipv4_total "))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(
        sent_v4.is_some_and(|v| v > 0.0),
        "iroh's socket_send_ipv4 missing or zero:\n{text}"
    );
    // OpenMetrics on request, as Prometheus asks for it.
    let (_, om) = http_get(port_a, "/metrics", Some("application/openmetrics-text")).unwrap();
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert_eq!(http_get(port_a, "/nothing", None).unwrap().0, 404);

    let prom = Prometheus::start(port_a);
    // peat_sidecar_peers{state="connected"}
    let q = "peat_sidecar_peers%7Bstate%3D%22connected%22%7D";
    let found = wait_until(Duration::from_secs(60), || async {
        prom.query(q).as_deref() == Some("1")
    })
    .await;
    assert!(
        found.is_some(),
        "Prometheus did not report 1 connected peer within 60 s; last answer {:?}\n{}",
        prom.query(q),
        prom.log()
    );
    // The dial counter arrives as a counter with its _total series.
    assert!(prom.query("peat_sidecar_dials_started_total").is_some());

    // Every query of the Grafana dashboard runs and finds series in a real scrape.
    let queries = dashboard_queries();
    assert!(queries.len() >= 10, "{queries:?}");
    for q in &queries {
        let path = format!("query?query={}", url_encode(q));
        let has_series = || {
            prom.api(&path)
                .is_some_and(|d| d["result"].as_array().is_some_and(|r| !r.is_empty()))
        };
        let found = wait_until(Duration::from_secs(30), || async { has_series() }).await;
        assert!(
            found.is_some(),
            "dashboard query {q} finds no series: {:?}",
            prom.api(&path)
        );
    }

    // The example alert rules load and evaluate without error...
    let rules_ok = || {
        let rules: Vec<serde_json::Value> = prom
            .api("rules")
            .and_then(|d| d["groups"][0]["rules"].as_array().cloned())
            .unwrap_or_default();
        rules.len() == 4 && rules.iter().all(|r| r["health"] == "ok")
    };
    let evaluated = wait_until(Duration::from_secs(30), || async { rules_ok() }).await;
    assert!(evaluated.is_some(), "{:?}", prom.api("rules"));
    // ...and the peer-count alert notices b going away.
    drop(b);
    let pending = wait_until(Duration::from_secs(60), || async {
        prom.api("alerts").is_some_and(|d| {
            d["alerts"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x["labels"]["alertname"] == "PeatSidecarPeersDropped")
            })
        })
    })
    .await;
    assert!(
        pending.is_some(),
        "no PeatSidecarPeersDropped: {:?}",
        prom.api("alerts")
    );
}

#[test]
fn example_alert_rules_pass_promtool() {
    if common::skip::without_program("promtool", "apt-get install prometheus") {
        return;
    }
    let out = Command::new("promtool")
        .args(["check", "rules", ALERTS])
        .output()
        .expect("cannot run promtool: install the Debian package prometheus");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_port_in_use_stops_the_start() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::BIN)
        .args(["run", "--data-dir"])
        .arg(dir.path())
        .args(["--bind", "127.0.0.1:0", "--listen"])
        .arg(format!("tcp://127.0.0.1:{}", free_port()))
        .arg("--metrics-listen")
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--metrics-listen"), "{stderr}");
}

#[test]
fn bad_metrics_address_is_refused_with_an_example() {
    let out = Command::new(common::BIN)
        .args(["run", "--metrics-listen", "localhost:9464"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("tcp://127.0.0.1:9464"), "{stderr}");
}

/// mdns-sd's own counters reach `/metrics` (mdns on loopback only: nothing leaves the
/// host).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mdns_daemon_counters_are_exported() {
    let port = free_port();
    let mut opts = with_metrics(port, vec![]);
    opts.app_id = "metrics-mdns".into();
    opts.extra.extend(
        [
            "--discovery-mode",
            "mdns",
            "--mdns-loopback",
            "--mdns-interfaces",
            "lo",
        ]
        .map(String::from),
    );
    let _a = Sidecar::start("mm", opts).await;
    let found = wait_until(Duration::from_secs(15), || async {
        http_get(port, "/metrics", None)
            .is_ok_and(|(_, t)| t.contains("peat_sidecar_mdns_daemon{counter=\"register\"}"))
    })
    .await;
    let (_, text) = http_get(port, "/metrics", None).unwrap();
    assert!(found.is_some(), "no mdns-sd counters:\n{text}");
}

//! The operator's page (`--web-listen`) in a real browser: headless Chromium, driven
//! through the DevTools protocol by tests/web/browser.py, against real sidecars in
//! network namespaces found by mDNS. What is checked is what the page draws (the
//! graph's SVG, the tables), read from the DOM. Needs root and chromium.
//!
//! Namespace prefixes: `wb`, `wc`, `wd`, `we`.

mod common;

use std::time::{Duration, Instant};

use common::{
    data::{msg, publish},
    interop::PyScript,
    lan_mdns_opts,
    netns::{ns_exec, Lan},
    radio::{Link, RadioLan},
    wait_full_mesh, wait_until, Opts, Sidecar,
};
use serde_json::Value;

/// Where the page listens, on the namespace's own loopback.
const WEB: &str = "127.0.0.1:8470";
/// Liveness budget (docs/OPERATIONS.md: a crash is noticed 5-7.5 s later, 10 s at
/// worst) plus the page's 2 s, plus room for a loaded machine.
const DOWN_WITHIN: Duration = Duration::from_secs(15);

/// Skips (fails under CI) without root or chromium.
fn skipped() -> bool {
    common::skip::without_root("network namespaces")
        || common::skip::without_program("chromium", "apt-get install chromium")
}

async fn start(lan: &Lan, i: usize, web: Option<&str>) -> Sidecar {
    let mut o = lan_mdns_opts(lan, i, "test");
    if let Some(addr) = web {
        o.extra.extend(["--web-listen".into(), addr.into()]);
    }
    Sidecar::start(&format!("node{i}"), o).await
}

/// The browser, with the page open, in namespace `ns`.
struct Page {
    script: PyScript,
    control: tempfile::TempDir,
}

impl Page {
    fn open(ns: &str) -> Page {
        let ok = std::process::Command::new("sh")
            .args(["-c", "command -v chromium"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(ok, "these tests need chromium (scripts/apt-packages.txt)");
        let control = tempfile::tempdir().unwrap();
        let path = format!("{}/tests/web/browser.py", env!("CARGO_MANIFEST_DIR"));
        let script = PyScript::start_file(
            ns,
            "json",
            &path,
            &[
                format!("http://{WEB}/"),
                control.path().display().to_string(),
            ],
        );
        Page { script, control }
    }

    /// The latest view the browser reported.
    fn view(&self) -> Value {
        self.script
            .lines()
            .into_iter()
            .rev()
            .find_map(|l| l.get("view").cloned())
            .unwrap_or_default()
    }

    /// Waits until `check` holds for the drawn view; fails with the last view.
    async fn wait(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Duration {
        let t = wait_until(timeout, || async { check(&self.view()) }).await;
        t.unwrap_or_else(|| {
            panic!(
                "the page did not show {what} within {timeout:?}; last view:\n{:#}\nbrowser stderr:\n{}",
                self.view(),
                self.script.stderr()
            )
        })
    }

    async fn screenshot(&self, path: &std::path::Path) {
        std::fs::write(self.control.path().join("shot"), path.display().to_string()).unwrap();
        self.script
            .wait_for("screenshot", Duration::from_secs(20))
            .await;
    }
}

fn node<'a>(v: &'a Value, id: &str) -> Option<&'a Value> {
    v["nodes"].as_array()?.iter().find(|n| n["id"] == id)
}

/// The state of the drawn link between `a` and `b`, either way round.
fn link(v: &Value, a: &str, b: &str) -> Option<String> {
    v["links"].as_array()?.iter().find_map(|l| {
        let ends = (l["a"].as_str()?, l["b"].as_str()?);
        (ends == (a, b) || ends == (b, a)).then(|| l["state"].as_str().unwrap_or("").to_string())
    })
}

/// The label drawn on the link from this node to `peer`, as the page shows it
/// ("2.1 ms · 0% loss · 1.4kB/s").
fn label(v: &Value, peer: &str) -> String {
    v["labels"][peer].as_str().unwrap_or("").to_string()
}

/// The bytes per second a link label shows ("1.4kB/s" is 1400), if it shows any.
fn label_bps(label: &str) -> Option<f64> {
    let part = label.split(" · ").find_map(|p| p.strip_suffix("B/s"))?;
    let (num, mul) = match part.chars().last()? {
        'k' => (&part[..part.len() - 1], 1e3),
        'M' => (&part[..part.len() - 1], 1e6),
        _ => (part, 1.0),
    };
    num.parse::<f64>().ok().map(|n| n * mul)
}

/// The rate the topics table shows for `topic`, in messages per second.
fn topic_rate(v: &Value, topic: &str) -> Option<f64> {
    v["topics"]
        .as_array()?
        .iter()
        .find(|t| t["topic"] == topic)
        .and_then(|t| t["rate"].as_str()?.parse().ok())
}

/// Whether the link to `peer` shows traffic and a loss figure, in its label and its
/// row of the peer table.
fn link_shows_traffic(v: &Value, peer: &str) -> bool {
    let l = label(v, peer);
    let row_loss = v["rows"].as_array().and_then(|r| {
        r.iter()
            .find(|r| r["id"] == peer)
            .and_then(|r| r["loss"].as_str())
    });
    label_bps(&l).is_some_and(|b| b > 0.0)
        && l.contains("% loss")
        && row_loss.is_some_and(|x| x.ends_with('%'))
}

/// Publishes on `node` every 100 ms until `done` is set (at most 600 messages).
async fn keep_publishing(node: &Sidecar, topic: &str, done: &std::sync::atomic::AtomicBool) {
    for i in 0..600 {
        if done.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        publish(node, msg(topic, "", format!("{i}"), false)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `curl` inside the namespace: (HTTP status, body).
fn curl(ns: &str, args: &[&str]) -> (u16, String) {
    let mut argv = vec!["curl", "-s", "-m", "5", "-w", "\n%{http_code}"];
    argv.extend_from_slice(args);
    let out = ns_exec(ns, &argv);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Three nodes: the page on a shows a, b, c and their links, the peer table, a topic
/// and a retained entry; after kill -9 of c its link turns down within the liveness
/// budget and the log says so. The JSON endpoints answer GET only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_then_a_kill() {
    if skipped() {
        return;
    }
    let lan = Lan::new("wb", 3);
    let a = start(&lan, 0, Some(WEB)).await;
    let b = start(&lan, 1, None).await;
    let mut c = start(&lan, 2, None).await;
    wait_full_mesh(&[&a, &b, &c], Duration::from_secs(30))
        .await
        .expect("three nodes form a full mesh");
    publish(&a, msg("config/site", "mode", "patrol", true)).await;

    let page = Page::open(lan.ns(0));
    let (aid, bid, cid) = (a.id.clone(), b.id.clone(), c.id.clone());
    let took = page
        .wait(
            "three nodes and their links",
            Duration::from_secs(30),
            |v| {
                node(v, &aid).is_some_and(|n| n["kind"] == "me")
                    && [&bid, &cid].iter().all(|p| {
                        node(v, p).is_some_and(|n| n["kind"] == "peer")
                            && link(v, &aid, p).as_deref() == Some("connected")
                    })
                    && link(v, &bid, &cid).as_deref() == Some("announced")
                    && v["rows"].as_array().is_some_and(|r| r.len() == 2)
                    && v["live"] == "live"
                    && v["retained"] == 1
            },
        )
        .await;
    eprintln!("page drawn {took:?} after the browser started");

    // While messages flow (published on b, metered on a), the page shows the topic
    // with a rate, and the link a-b with bytes per second and its loss. Before any
    // traffic neither shows, so this fails if the page draws zeros.
    assert!(topic_rate(&page.view(), "tracks/blue").is_none());
    let done = std::sync::atomic::AtomicBool::new(false);
    let bid2 = bid.clone();
    let shown = async {
        let v = page
            .wait(
                "tracks/blue with a rate, traffic and loss on the link to b",
                Duration::from_secs(30),
                |v| {
                    topic_rate(v, "tracks/blue").is_some_and(|r| r > 0.0)
                        && link_shows_traffic(v, &bid2)
                },
            )
            .await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        v
    };
    let (took, ()) = tokio::join!(shown, keep_publishing(&b, "tracks/blue", &done));
    let v = page.view();
    eprintln!(
        "rates drawn {took:?} after the first message: link to b \"{}\", tracks/blue {:?} msg/s",
        label(&v, &bid),
        topic_rate(&v, "tracks/blue")
    );

    // `peers` shows the loss too, and `peers --json` the packet counts it comes from.
    let (ok, table, err) = a.cli(&["peers"]);
    assert!(ok, "{err}");
    let row = table.lines().find(|l| l.starts_with(&bid[..16]));
    assert!(
        table.contains("LOSS") && row.is_some_and(|r| r.contains('%')),
        "no loss in `peers`:\n{table}"
    );
    let (_, out, _) = a.cli(&["peers", "--json"]);
    let list: Value = serde_json::from_str(&out).expect("peers --json");
    let b_row = list
        .as_array()
        .and_then(|l| l.iter().find(|p| p["endpoint_id"] == bid.as_str()));
    assert!(
        b_row.is_some_and(|p| p["packets_sent"].as_u64() > Some(0) && p["packets_lost"].is_u64()),
        "{out}"
    );

    endpoints(lan.ns(0), &a);

    let killed = Instant::now();
    c.kill9();
    let cid2 = cid.clone();
    page.wait("c's link down", DOWN_WITHIN, |v| {
        link(v, &aid, &cid2).is_some_and(|s| s != "connected")
    })
    .await;
    let down = killed.elapsed();
    eprintln!("c's link drawn down {down:?} after kill -9");
    page.wait(
        "the disconnect in the event log",
        Duration::from_secs(5),
        |v| {
            v["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|k| k == "disconnected"))
        },
    )
    .await;
    assert_eq!(link(&page.view(), &aid, &bid).as_deref(), Some("connected"));
}

/// The JSON endpoints, as a script would use them.
fn endpoints(ns: &str, a: &Sidecar) {
    let url = format!("http://{WEB}");
    let (code, body) = curl(ns, &[&format!("{url}/api/state")]);
    assert_eq!(code, 200, "{body}");
    let st: Value = serde_json::from_str(&body).expect("state is JSON");
    assert_eq!(st["me"]["id"], a.id.as_str());
    assert_eq!(st["peers"].as_array().map(Vec::len), Some(2));
    let (code, body) = curl(ns, &[&format!("{url}/api/retained?pattern=config%2F%2A")]);
    assert_eq!(code, 200, "{body}");
    let r: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (r["total"].as_u64(), &r["entries"][0]["value"]),
        (Some(1), &Value::from("patrol"))
    );
    let (code, body) = curl(ns, &[&format!("{url}/api/retained?pattern=a%2F%2A%2A%2Fb")]);
    assert_eq!(code, 400, "a bad pattern: {body}");
    let (code, _) = curl(ns, &["-X", "POST", &format!("{url}/api/state")]);
    assert_eq!(code, 405, "the page is read-only");
    let (code, _) = curl(ns, &["-H", "Host: attacker.example", &format!("{url}/")]);
    assert_eq!(
        code, 403,
        "a foreign Host header (DNS rebinding) is refused"
    );
    let (code, body) = curl(ns, &["-N", "-m", "2", &format!("{url}/api/events")]);
    assert!(
        body.contains("event: log") && body.contains("event: state"),
        "{code}: {body}"
    );
}

/// a on segment 0, c on segment 1, b on both: a's page shows c behind b, and b as a
/// bridge. b's page listens on its LAN address, which is allowed with a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_far_node_appears_behind_the_bridge() {
    if skipped() {
        return;
    }
    let mut lan = Lan::new("wc", 2);
    let seg1 = lan.add_segment();
    lan.attach(1, seg1);
    let ci = lan.add_host(seg1);
    let a = start(&lan, 0, Some(WEB)).await;
    let b_web = format!("{}:8470", lan.addr(1, 0));
    let b = start(&lan, 1, Some(&b_web)).await;
    let c = start(&lan, ci, None).await;
    wait_full_mesh(&[&a, &b], Duration::from_secs(30))
        .await
        .expect("a and b connect on segment 0");
    wait_full_mesh(&[&b, &c], Duration::from_secs(30))
        .await
        .expect("b and c connect on segment 1");
    assert!(!a.connected().await.contains(&c.id), "a reached c directly");
    assert!(
        b.log().contains("is not a loopback address"),
        "no warning for --web-listen {b_web}:\n{}",
        b.log()
    );

    let page = Page::open(lan.ns(0));
    let (aid, bid, cid) = (a.id.clone(), b.id.clone(), c.id.clone());
    page.wait("c behind the bridge b", Duration::from_secs(30), |v| {
        node(v, &cid).is_some_and(|n| n["kind"] == "remote")
            && node(v, &bid).is_some_and(|n| n["bridge"] == true)
            && node(v, &aid).is_some_and(|n| n["bridge"] == false)
            && link(v, &aid, &bid).as_deref() == Some("connected")
            && link(v, &bid, &cid).as_deref() == Some("announced")
            && link(v, &aid, &cid).is_none()
    })
    .await;
}

/// Five nodes, one behind a bridge, with traffic: a screenshot of the page for
/// docs/web-page.png. By hand: `PEAT_WEB_SCREENSHOT=docs/web-page.png flock
/// /tmp/peat-netns.lock cargo test --test web -- --ignored screenshot`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "makes the docs' screenshot; run by hand"]
async fn screenshot() {
    if skipped() {
        return;
    }
    let out = std::env::var("PEAT_WEB_SCREENSHOT").unwrap_or_else(|_| "web-page.png".into());
    let out = std::path::absolute(out).unwrap();
    let mut lan = Lan::new("wd", 4);
    let seg1 = lan.add_segment();
    lan.attach(3, seg1);
    let ei = lan.add_host(seg1);
    let mut nodes = vec![start(&lan, 0, Some(WEB)).await];
    for i in [1, 2, 3, ei] {
        nodes.push(start(&lan, i, None).await);
    }
    let seg0: Vec<&Sidecar> = nodes[..4].iter().collect();
    wait_full_mesh(&seg0, Duration::from_secs(40))
        .await
        .expect("segment 0 mesh");
    wait_full_mesh(&[&nodes[3], &nodes[4]], Duration::from_secs(40))
        .await
        .expect("the bridge reaches e");
    publish(&nodes[0], msg("config/site", "mode", "patrol", true)).await;
    publish(&nodes[4], msg("status/e", "battery", "81%", true)).await;
    let page = Page::open(lan.ns(0));
    let eid = nodes[4].id.clone();
    let peers: Vec<String> = nodes[1..4].iter().map(|n| n.id.clone()).collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    let traffic = async {
        for round in 0..400 {
            if done.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            for (i, n) in nodes.iter().enumerate() {
                publish(
                    n,
                    msg(&format!("tracks/node{i}"), "", format!("{round}"), false),
                )
                .await;
            }
            if round % 4 == 0 {
                publish(&nodes[2], msg("chat/ops", "", "check", false)).await;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    };
    // Shot once the page draws what flows: every link with bytes per second and loss,
    // every topic with a rate (the first screenshot caught the page's first state, with
    // 0 B/s and no topics).
    let shoot = async {
        page.wait("five nodes with traffic", Duration::from_secs(60), |v| {
            node(v, &eid).is_some()
                && v["nodes"].as_array().map(Vec::len) == Some(5)
                && peers.iter().all(|p| link_shows_traffic(v, p))
                && (0..5)
                    .all(|i| topic_rate(v, &format!("tracks/node{i}")).is_some_and(|r| r > 0.0))
        })
        .await;
        page.screenshot(&out).await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    tokio::join!(traffic, shoot);
    eprintln!("screenshot in {}", out.display());
}

/// Two nodes on a radio channel that loses frames: a's page shows the link's loss, not
/// 0 %, while messages flow (the channel is clean until the nodes have connected, so
/// that the test waits on the page rather than on the mesh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_link_shows_its_loss() {
    if skipped() {
        return;
    }
    let lan = RadioLan::new("we", 2, Link::CLEAN);
    let opts = |i: usize, web: bool| Opts {
        app_id: "test".into(),
        netns: Some(lan.ns(i).to_string()),
        bind: Some(std::net::SocketAddr::from(([0, 0, 0, 0], 9470))),
        extra: ["--discovery-mode", "mdns"]
            .into_iter()
            .chain(web.then_some(["--web-listen", WEB]).into_iter().flatten())
            .map(String::from)
            .collect(),
        ..Opts::default()
    };
    let a = Sidecar::start("node0", opts(0, true)).await;
    let b = Sidecar::start("node1", opts(1, false)).await;
    wait_full_mesh(&[&a, &b], Duration::from_secs(30))
        .await
        .expect("a and b connect on the clean channel");
    let page = Page::open(lan.ns(0));
    lan.set_link(Link::new(0.2, 5, 0));

    let done = std::sync::atomic::AtomicBool::new(false);
    let bid = b.id.clone();
    let lossy = |v: &Value| {
        let l = label(v, &bid);
        let pct = l
            .split(" · ")
            .find_map(|p| p.strip_suffix("% loss"))
            .and_then(|p| p.parse::<f64>().ok());
        pct.is_some_and(|p| p >= 3.0) && label_bps(&l).is_some_and(|b| b > 0.0)
    };
    let shown = async {
        let took = page
            .wait("loss on the link to b", Duration::from_secs(60), lossy)
            .await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        took
    };
    let (took, ()) = tokio::join!(shown, keep_publishing(&a, "tracks/lossy", &done));
    let total = lan.total();
    eprintln!(
        "loss drawn {took:?} after the channel turned lossy: \"{}\"; hub: {total:?}",
        label(&page.view(), &bid)
    );
    assert!(total.dropped > 0, "the channel lost nothing");
}

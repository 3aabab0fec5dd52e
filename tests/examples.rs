//! docs/examples/python, as the README runs it: across two hosts (network namespaces,
//! root), and its error handling on one (no root).

mod common;

use std::{process::Command, time::Duration};

use common::{
    data::wait_subscribers,
    free_port,
    interop::{self, PyScript},
    netns::Lan,
    wait_full_mesh, wait_until, Opts, Sidecar,
};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples/python");

/// Runs `EXAMPLES/<file>` with the test Python (`python_args` first, such as `-S`);
/// returns its exit code and stderr. The generated stubs go to a temporary directory,
/// not into the checkout.
fn run_example(python_args: &[&str], file: &str, args: &[&str]) -> (Option<i32>, String) {
    let stubs = tempfile::tempdir().unwrap();
    let out = Command::new(interop::python())
        .args(python_args)
        .arg(format!("{EXAMPLES}/{file}"))
        .args(args)
        .env("PEAT_SIDECAR_STUBS", stubs.path())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One line, the expected start, no traceback.
fn one_clean_line(err: &str, starts: &str) {
    assert!(!err.contains("Traceback"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.starts_with(starts),
        "expected `{starts}...`, got: {err}"
    );
}

/// Both examples fail as the CLI does: one line with the gRPC status and the sidecar's
/// message, exit 1; no sidecar, or a value the sidecar refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_report_failed_calls_in_one_line() {
    if common::skip::unless(interop::missing_imports("grpc, grpc_tools").as_deref()) {
        return;
    }
    let nobody = format!("tcp://127.0.0.1:{}", free_port());
    let (code, err) = run_example(&[], "publish.py", &["--api", &nobody, "--topic", "t"]);
    assert_eq!(code, Some(1), "{err}");
    one_clean_line(&err, "publish failed: UNAVAILABLE: ");
    let (code, err) = run_example(&[], "listen.py", &["--api", &nobody]);
    assert_eq!(code, Some(1), "{err}");
    one_clean_line(&err, "subscribe failed: UNAVAILABLE: ");

    let s = Sidecar::start("a", Opts::default()).await;
    let (code, err) = run_example(&[], "publish.py", &["--api", &s.api(), "--topic", "a//b"]);
    assert_eq!(code, Some(1), "{err}");
    one_clean_line(
        &err,
        "publish failed: INVALID_ARGUMENT: invalid topic: the topic has an empty segment",
    );
    let (code, err) = run_example(&[], "listen.py", &["--api", &s.api(), "--pattern", "a//*"]);
    assert_eq!(code, Some(1), "{err}");
    one_clean_line(
        &err,
        "subscribe failed: INVALID_ARGUMENT: invalid pattern: the pattern has an empty segment",
    );
}

/// Without grpcio (`python3 -S`: no site-packages) both say what to install.
#[test]
fn the_examples_without_grpcio_say_what_to_install() {
    if common::skip::without_program("python3", "apt-get install python3") {
        return;
    }
    for (file, args) in [("publish.py", &["--topic", "t"][..]), ("listen.py", &[])] {
        let (code, err) = run_example(&["-S"], file, args);
        assert_eq!(code, Some(1), "{file}: {err}");
        assert!(!err.contains("Traceback"), "{file}: {err}");
        assert!(
            err.contains("needs the Python packages grpcio and grpcio-tools")
                && err.contains("pip install grpcio grpcio-tools"),
            "{file}: {err}"
        );
    }
}

async fn start(lan: &Lan, i: usize, app_id: &str) -> Sidecar {
    Sidecar::start(&format!("node{i}"), common::lan_mdns_opts(lan, i, app_id)).await
}

/// docs/examples/python: the listener on one host receives what the publisher on
/// another host sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_example_across_two_hosts() {
    if common::skip::without_root("network namespaces") {
        return;
    }
    let lan = Lan::new("dw", 2);
    let a = start(&lan, 0, "test").await;
    let b = start(&lan, 1, "test").await;
    wait_full_mesh(&[&a, &b], Duration::from_secs(20))
        .await
        .expect("two nodes connect");
    let example = EXAMPLES.to_string();
    let listener = PyScript::start_file(
        lan.ns(1),
        "grpc, grpc_tools",
        &format!("{example}/listen.py"),
        &[
            "--api".into(),
            b.api(),
            "--pattern".into(),
            "demo/**".into(),
            "--json".into(),
        ],
    );
    listener
        .wait_for("subscribed", Duration::from_secs(60))
        .await;
    wait_subscribers(&b, 1, Duration::from_secs(10)).await;
    // The publisher runs on a warm-up topic until the listener saw one of those (the
    // data link may follow the connection by a moment); then one run on the real
    // topic must deliver its five messages, once each and in order.
    let got_one = wait_until(Duration::from_secs(60), || async {
        let out = run_publisher(&lan, &a, &example, "demo/warm");
        assert!(
            out.status.success(),
            "publish.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        listener.has("topic").is_some()
    })
    .await;
    assert!(
        got_one.is_some(),
        "listener printed: {:?}\n{}",
        listener.lines(),
        listener.stderr()
    );
    let out = run_publisher(&lan, &a, &example, "demo/greetings");
    assert!(
        out.status.success(),
        "publish.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let greetings = || -> Vec<serde_json::Value> {
        listener
            .lines()
            .into_iter()
            .filter(|l| l["topic"] == "demo/greetings")
            .collect()
    };
    let all = wait_until(Duration::from_secs(20), || async { greetings().len() >= 5 }).await;
    assert!(all.is_some(), "listener: {:?}", listener.lines());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = greetings();
    assert_eq!(got.len(), 5, "{got:?}");
    for (i, l) in got.iter().enumerate() {
        assert_eq!(l["text"], format!("hello {i}"), "{l}");
        assert_eq!(l["publisher"], a.id.as_str(), "{l}");
    }
}

fn run_publisher(lan: &Lan, a: &Sidecar, example: &str, topic: &str) -> std::process::Output {
    std::process::Command::new("ip")
        .args(["netns", "exec", lan.ns(0)])
        .arg(common::interop::python())
        .arg(format!("{example}/publish.py"))
        .args(["--api", &a.api(), "--topic", topic, "--count", "5"])
        .output()
        .expect("run publish.py")
}

//! The client commands' errors name what to change (issue 30): a payload over any
//! limit names --max-message-bytes with its real value, `--ttl` takes positive
//! seconds and needs `--retain`, a bad pattern is called a pattern. One sidecar on
//! loopback.

mod common;

use std::{
    io::Write,
    process::{Command, Output, Stdio},
};

use common::{Opts, Sidecar, BIN};

/// `peat-sidecar publish ARGS --api API`, with `stdin` on its standard input.
fn publish_stdin(api: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .arg("publish")
        .args(args)
        .args(["--api", api])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // The client may refuse before it reads everything: a broken pipe is fine.
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_payload_over_the_limit_names_max_message_bytes() {
    let s = Sidecar::start("a", Opts::default()).await;
    // 300 KB: over --max-message-bytes (256 KiB) but within what gRPC decodes; 1 MB
    // and 4 MB: beyond the gRPC layer's own limit (twice that plus room).
    for size in [300_000usize, 1_048_576, 4_000_000] {
        let out = publish_stdin(&s.api(), &["big/one", "-"], &vec![b'x'; size]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{size}: {err}");
        assert_eq!(
            err.trim(),
            format!(
                "error: invalid argument: the payload is {size} bytes; --max-message-bytes allows at most 262144"
            ),
        );
    }
    let out = publish_stdin(&s.api(), &["big/one", "-"], &vec![b'x'; 262_144]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ttl_takes_positive_seconds_and_needs_retain() {
    // Both are refused before any connection: no sidecar is needed.
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(["publish", "t", "v", "--api", "tcp://127.0.0.1:9"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--retain", "--ttl", "-1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("invalid value '-1' for '--ttl <SECS>'") && err.contains("1 or more seconds"),
        "{err}"
    );
    assert!(!err.contains("'-- -1'"), "{err}");

    let out = run(&["--ttl", "5"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--ttl needs --retain"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_pattern_is_called_a_pattern() {
    let s = Sidecar::start("a", Opts::default()).await;
    for cmd in ["get", "subscribe"] {
        let (ok, _, err) = s.cli(&[cmd, "tracks//*"]);
        assert!(!ok);
        assert!(
            err.contains("invalid pattern: the pattern has an empty segment"),
            "{cmd}: {err}"
        );
    }
    let (ok, _, err) = s.cli(&["publish", "tracks//a", "v"]);
    assert!(!ok);
    assert!(
        err.contains("invalid topic: the topic has an empty segment"),
        "{err}"
    );
}

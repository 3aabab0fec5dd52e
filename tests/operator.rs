//! What an operator touches every day, with the real binary on loopback: shutdown with
//! clients attached, one identity per data dir, a client that never panics nor hangs,
//! key files that are not files, short ids, and the API's answers to odd requests.

mod common;

use std::{
    io::{Read, Write},
    net::TcpListener,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use common::{free_port, signal, wait_until, Opts, Sidecar, BIN};
use peat_sidecar::api::pb;

/// Generous bound for anything that must end "at once": a hang shows as this.
const PROMPT: Duration = Duration::from_secs(10);

/// Waits for `child` at most `limit`; kills it after that. Returns the status and
/// whether it ended by itself.
fn wait_bounded(child: &mut Child, limit: Duration) -> (ExitStatus, bool) {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return (st, true);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            return (child.wait().unwrap(), false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`wait_bounded`] for a child whose stderr is piped (and small); adds that stderr.
fn finish(child: &mut Child) -> (ExitStatus, bool, String) {
    let (st, by_itself) = wait_bounded(child, PROMPT);
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (st, by_itself, err)
}

/// Runs the binary with `args`, stdout and stderr captured, killed after [`PROMPT`].
/// Returns (ended by itself, exit code, stderr, time taken).
fn run_bounded(args: &[&str]) -> (bool, Option<i32>, String, Duration) {
    let start = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let (st, by_itself) = wait_bounded(&mut child, PROMPT);
    (
        by_itself,
        st.code(),
        reader.join().unwrap(),
        start.elapsed(),
    )
}

fn spawn_watch(api: &str) -> Child {
    Command::new(BIN)
        .args(["watch", "--api", api])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_watch_streams_and_the_daemon_promptly() {
    let mut s = Sidecar::start("term", Opts::default()).await;
    let mut reading = spawn_watch(&s.api());
    // A client that never reads again must not hold the daemon either.
    let mut frozen = spawn_watch(&s.api());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(frozen.id(), "STOP");

    let start = Instant::now();
    let st = s.stop().expect("the daemon was running");
    let took = start.elapsed();
    signal(frozen.id(), "CONT");
    assert!(
        st.success() && took < Duration::from_secs(5),
        "daemon exit {st} after {took:?} (SIGTERM with watch clients attached)"
    );

    let (st, by_itself, err) = finish(&mut reading);
    assert!(by_itself && st.success(), "watch: {st}, stderr: {err}");
    assert!(err.contains("shutting down"), "watch said: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let _ = frozen.kill();
    let _ = frozen.wait();
}

#[test]
fn racing_id_commands_on_a_fresh_dir_print_the_id_on_disk() {
    for round in 0..30 {
        let dir = tempfile::tempdir().unwrap();
        let pair: Vec<Child> = (0..2)
            .map(|_| {
                Command::new(BIN)
                    .arg("id")
                    .arg("--data-dir")
                    .arg(dir.path())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let ids: Vec<String> = pair
            .into_iter()
            .map(|c| {
                let out = c.wait_with_output().unwrap();
                assert!(
                    out.status.success(),
                    "round {round}: id failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8(out.stdout).unwrap().trim().to_string()
            })
            .collect();
        let on_disk = common::endpoint_id(dir.path());
        assert!(
            ids.iter().all(|id| *id == on_disk),
            "round {round}: printed {ids:?}, on disk {on_disk}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_one_data_dir_fails_naming_the_first() {
    let s = Sidecar::start("lock", Opts::default()).await;
    let bind = format!("127.0.0.1:{}", free_port());
    let listen = format!("tcp://127.0.0.1:{}", free_port());
    let dir = s.dir.display().to_string();
    let (by_itself, code, err, _) = run_bounded(&[
        "run",
        "--data-dir",
        &dir,
        "--bind",
        &bind,
        "--listen",
        &listen,
    ]);
    let pid = s.pid().unwrap();
    assert!(by_itself && code == Some(1), "second run: {code:?} {err}");
    assert!(err.contains(&format!("pid {pid}")), "{err}");
}

/// Every client command, its stdout closed before it writes: no panic, no message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_client_commands_quietly() {
    let s = Sidecar::start("pipe", Opts::default()).await;
    let api = s.api();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().display().to_string();
    let commands: [Vec<&str>; 5] = [
        vec!["peers", "--api", &api],
        vec!["peers", "--json", "--api", &api],
        vec!["status", "--api", &api],
        vec!["status", "--json", "--api", &api],
        vec!["id", "--data-dir", &data_dir],
    ];
    for args in commands {
        let mut child = Command::new(BIN)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let (st, by_itself, err) = finish(&mut child);
        assert!(
            by_itself && st.code() == Some(0) && err.is_empty(),
            "{args:?}: {st}, stderr: {err}"
        );
    }
}

#[test]
fn a_silent_listener_times_out_naming_the_address() {
    // The kernel accepts the connection; nobody ever answers on it.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("tcp://{}", silent.local_addr().unwrap());
    // The default deadline first: a client without one hangs here for ever.
    let (by_itself, code, err, took) = run_bounded(&["status", "--api", &addr]);
    assert!(
        by_itself && code == Some(1),
        "{code:?} after {took:?}: {err}"
    );
    let (by_itself, code, err, took) = run_bounded(&["status", "--api", &addr, "--timeout", "1"]);
    assert!(
        by_itself && code == Some(1),
        "{code:?} after {took:?}: {err}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        err.contains(&addr) && err.contains("did not answer"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_daemon_times_out() {
    let s = Sidecar::start("stopped", Opts::default()).await;
    let pid = s.pid().unwrap();
    signal(pid, "STOP");
    let (by_itself, code, err, took) = run_bounded(&["status", "--api", &s.api()]);
    signal(pid, "CONT");
    assert!(
        by_itself && code == Some(1),
        "{code:?} after {took:?}: {err}"
    );
    assert!(err.contains(&s.api()), "{err}");
}

#[test]
fn a_server_that_is_not_grpc_is_named_as_such_once() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("tcp://{}", l.local_addr().unwrap());
    // An HTTP/1 server: reads the request and answers 400, keeping the connection
    // (a close could reach the client before the answer is parsed).
    std::thread::spawn(move || {
        let mut open = vec![];
        for mut c in l.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            open.push(c);
        }
    });
    let (by_itself, code, err, _) = run_bounded(&["status", "--api", &addr]);
    assert!(by_itself && code == Some(1), "{code:?}: {err}");
    assert!(
        err.contains(&format!("{addr} does not speak gRPC")),
        "{err}"
    );
    assert_eq!(err.matches("error").count(), 1, "{err}");
}

fn run_with_key_file(dir: &Path, key_file: &str) -> (bool, Option<i32>, String, Duration) {
    let bind = format!("127.0.0.1:{}", free_port());
    let listen = format!("tcp://127.0.0.1:{}", free_port());
    let data = dir.join("data").display().to_string();
    let mut args = vec![
        "run",
        "--data-dir",
        &data,
        "--bind",
        &bind,
        "--listen",
        &listen,
    ];
    if !key_file.is_empty() {
        args.extend(["--shared-key-file", key_file]);
    }
    run_bounded(&args)
}

#[test]
fn key_files_that_are_not_files_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let fifo = fifo.display().to_string();
    for (file, what) in [("/dev/zero", "character device"), (&fifo, "FIFO")] {
        let (by_itself, code, err, took) = run_with_key_file(dir.path(), file);
        // A bad --shared-key-file is a bad setting: exit 2, like every other.
        assert!(
            by_itself && code == Some(2),
            "{file}: {code:?} {took:?} {err}"
        );
        assert!(err.contains(file) && err.contains(what), "{err}");
    }
    // The identity key itself.
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("data/secret.key")).unwrap();
    let (by_itself, code, err, _) = run_with_key_file(dir.path(), "");
    assert!(by_itself && code == Some(1), "{code:?} {err}");
    assert!(
        err.contains("secret.key") && err.contains("character device"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_ids_name_peers_in_every_command() {
    let b = Sidecar::start("idb", Opts::default()).await;
    let a = Sidecar::start(
        "ida",
        Opts {
            peers: vec![b.peer_spec()],
            ..Opts::default()
        },
    )
    .await;
    assert!(
        common::wait_until(PROMPT, || async { a.connected().await.contains(&b.id) })
            .await
            .is_some(),
        "a never connected to b"
    );
    // As the peers table shows it.
    let short = &b.id[..16];
    let (ok, out, err) = a.cli(&["disconnect", short]);
    assert!(ok && out.contains(&b.id), "disconnect {short}: {out} {err}");
    let (ok, out, err) = a.cli(&["connect", &b.id[..8]]);
    assert!(
        ok && out.contains(&b.id),
        "connect {}: {out} {err}",
        &b.id[..8]
    );

    let unknown = if b.id.starts_with("00") {
        "ffffffff"
    } else {
        "00000000"
    };
    let (ok, _, err) = a.cli(&["disconnect", unknown]);
    assert!(
        !ok && err.contains("no peer known") && err.contains(unknown),
        "{err}"
    );
    let (ok, _, err) = a.cli(&["disconnect", &b.id[..7]]);
    assert!(!ok && err.contains("at least 8"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_watch_tables_are_for_people() {
    let s = Sidecar::start("tables", Opts::default()).await;
    let (ok, out, err) = s.cli(&["status"]);
    assert!(ok, "{err}");
    for row in [
        "dials",
        "connections",
        "handshakes",
        "peers evicted",
        "tasks",
    ] {
        assert!(out.contains(row), "no {row} in:\n{out}");
    }
    let up = out.lines().find(|l| l.starts_with("version")).unwrap();
    assert!(up.trim_end().ends_with('s') && !up.contains("s,"), "{up}");
}

mod grpc {
    //! The API's answers to requests that are not what a peat-sidecar client sends.
    use super::*;
    use tonic::{
        codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
        Status,
    };

    /// Sends and receives raw bytes, to put junk on the wire.
    #[derive(Default)]
    struct Raw;
    struct RawEnc;
    struct RawDec;

    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = RawEnc;
        type Decoder = RawDec;
        fn encoder(&mut self) -> RawEnc {
            RawEnc
        }
        fn decoder(&mut self) -> RawDec {
            RawDec
        }
    }

    impl Encoder for RawEnc {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
            use prost::bytes::BufMut;
            buf.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for RawDec {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            use prost::bytes::Buf;
            let v = buf.chunk().to_vec();
            buf.advance(v.len());
            Ok(Some(v))
        }
    }

    async fn channel(s: &Sidecar) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", s.api_port))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn junk_is_invalid_argument_and_reflection_speaks_v1alpha() {
        let s = Sidecar::start("junk", Opts::default()).await;
        let mut g = tonic::client::Grpc::new(channel(&s).await);
        g.ready().await.unwrap();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/peat.sidecar.v1.Sidecar/DisconnectPeer",
        );
        // Field 1, wire type 2, a length far beyond the message.
        let junk = vec![0x0a, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3];
        let err = g
            .unary(tonic::Request::new(junk), path, Raw)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

        use tonic_reflection::pb::v1alpha::{
            server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
            ServerReflectionRequest,
        };
        let mut r = ServerReflectionClient::new(channel(&s).await);
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = r
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .expect("v1alpha reflection is served")
            .into_inner();
        let first = answers.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
            panic!("{first:?}")
        };
        assert!(
            list.service
                .iter()
                .any(|s| s.name == "peat.sidecar.v1.Sidecar"),
            "{list:?}"
        );
    }
}

/// Issue 15, defect 6: ConnectPeer to ids that do not exist left entries redialled for
/// ever. `forget` removes them (by a short prefix too), and a --peer entry stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_removes_peers_that_connect_peer_left_behind() {
    let b = Sidecar::start("fgb", Opts::default()).await;
    let a = Sidecar::start(
        "fga",
        Opts {
            peers: vec![b.peer_spec()],
            ..Opts::default()
        },
    )
    .await;
    let ghosts: Vec<String> = (0..5)
        .map(|_| iroh::SecretKey::generate().public().to_string())
        .collect();
    for g in &ghosts {
        // Port 9 on loopback: nobody answers, the dial fails, the entry stays.
        let _ = a.cli(&["connect", &format!("{g}@127.0.0.1:9"), "--timeout", "1"]);
    }
    assert!(a.peers().await.len() >= 6, "{:?}", a.peers().await);
    for g in &ghosts {
        let (ok, out, err) = a.cli(&["forget", &g[..12]]);
        assert!(ok, "forget {g}: {out} {err}");
        assert!(out.contains("forgot"), "{out}");
    }
    let left: Vec<String> = a.peers().await.into_iter().map(|p| p.endpoint_id).collect();
    assert_eq!(left, vec![b.id.clone()], "only the --peer entry is left");
    let (ok, _, err) = a.cli(&["forget", &b.id]);
    assert!(!ok && err.contains("--peer entry"), "{err}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        a.peers().await.len(),
        1,
        "a forgotten peer was dialled again"
    );
}

/// Issue 15, defect 8: a peer that dialled us showed `addrs: []` and `sources: []`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_peer_shows_its_address_and_the_source_inbound() {
    let b = Sidecar::start("inb", Opts::default()).await;
    let a = Sidecar::start(
        "ina",
        Opts {
            peers: vec![b.peer_spec()],
            ..Opts::default()
        },
    )
    .await;
    let seen = wait_until(Duration::from_secs(10), || async {
        b.peer(&a.id)
            .await
            .is_some_and(|p| p.state == pb::PeerState::Connected as i32)
    })
    .await;
    assert!(seen.is_some(), "a never connected to b");
    let p = b.peer(&a.id).await.unwrap();
    assert_eq!(p.sources, vec!["inbound".to_string()]);
    assert_eq!(p.addrs.len(), 1, "{:?}", p.addrs);
    assert!(p.addrs[0].starts_with("127.0.0.1:"), "{:?}", p.addrs);
}

/// Issue 15: a dial to the right address with the wrong id said "invalid peer
/// certificate: UnknownIssuer".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_id_at_a_known_address_is_named() {
    let b = Sidecar::start("wib", Opts::default()).await;
    let a = Sidecar::start(
        "wia",
        Opts {
            peers: vec![b.peer_spec()],
            ..Opts::default()
        },
    )
    .await;
    let connected = wait_until(Duration::from_secs(10), || async {
        a.connected().await == vec![b.id.clone()]
    })
    .await;
    assert!(connected.is_some(), "a never connected to b");
    let other = iroh::SecretKey::generate().public().to_string();
    let target = format!("{other}@{}", b.bind);
    let (ok, out, err) = a.cli(&["connect", &target, "--timeout", "5"]);
    assert!(!ok, "{out}");
    assert!(err.contains("has another endpoint id than"), "{err}");
    assert!(
        err.contains(&b.id),
        "the id known at that address is named: {err}"
    );
    assert!(!err.contains("UnknownIssuer"), "{err}");
}

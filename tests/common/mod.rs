//! Test harness: real `peat-sidecar` processes, driven through their gRPC API.
//!
//! [`Sidecar::start`] runs the binary that cargo built for this test run, with its own
//! data dir, a free UDP port and a free API port on loopback (or inside a network
//! namespace, see `netns`). Dropping a `Sidecar` kills its process, so a failed test
//! leaves nothing running.
#![allow(dead_code)]

pub mod data;
pub mod dnsmasq;
pub mod egress;
pub mod gossip;
pub mod interop;
pub mod netns;
pub mod radio;
pub mod rogue;
pub mod skip;
pub mod trust;

/// Options of a sidecar in namespace `i` of `lan` on the default iroh port, finding its
/// peers by mDNS.
pub fn lan_mdns_opts(lan: &netns::Lan, i: usize, app_id: &str) -> Opts {
    Opts {
        app_id: app_id.into(),
        netns: Some(lan.ns(i).to_string()),
        bind: Some(SocketAddr::from(([0, 0, 0, 0], 9470))),
        extra: vec!["--discovery-mode".into(), "mdns".into()],
        ..Opts::default()
    }
}

use std::{
    net::{SocketAddr, TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU16, Ordering},
    time::{Duration, Instant},
};

use peat_sidecar::api::pb::{self, sidecar_client::SidecarClient};
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_peat-sidecar");

/// A port nobody uses right now, for UDP and TCP alike. Ports are handed out from a
/// per-process counter so that parallel tests do not race for the same one.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    if NEXT.load(Ordering::Relaxed) == 0 {
        let base = 20_000 + (std::process::id() % 2000) as u16 * 10;
        let _ = NEXT.compare_exchange(0, base, Ordering::Relaxed, Ordering::Relaxed);
    }
    loop {
        let p = NEXT.fetch_add(1, Ordering::Relaxed);
        if p > 60_000 {
            NEXT.store(20_000, Ordering::Relaxed);
            continue;
        }
        let udp = UdpSocket::bind(("127.0.0.1", p)).is_ok();
        let tcp = TcpListener::bind(("127.0.0.1", p)).is_ok();
        if udp && tcp {
            return p;
        }
    }
}

/// A port that is free for UDP on every given address (dns mode binds its handshake
/// port on each sidecar's own loopback address).
pub fn free_port_on(ips: &[std::net::IpAddr]) -> u16 {
    loop {
        let p = free_port();
        if ips.iter().all(|ip| UdpSocket::bind((*ip, p)).is_ok()) {
            return p;
        }
    }
}

/// How to start a sidecar.
#[derive(Clone, Debug)]
pub struct Opts {
    pub app_id: String,
    pub shared_key: Option<String>,
    pub peers: Vec<String>,
    pub extra: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Bind address of the iroh endpoint; default 127.0.0.1:<free port>.
    pub bind: Option<SocketAddr>,
    /// Network namespace to run in (`ip netns exec NS ...`).
    pub netns: Option<String>,
    /// Run the binary through this wrapper (for example `qemu-aarch64 -L ...`).
    pub wrapper: Vec<String>,
    pub bin: Option<PathBuf>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            app_id: "test".into(),
            shared_key: None,
            peers: vec![],
            extra: vec![],
            env: vec![],
            bind: None,
            netns: None,
            wrapper: vec![],
            bin: None,
        }
    }
}

pub struct Sidecar {
    pub name: String,
    pub id: String,
    pub dir: PathBuf,
    pub bind: SocketAddr,
    pub api_port: u16,
    pub opts: Opts,
    /// When the process was last spawned (benchmarks time from here, not from
    /// `start`, which first runs `peat-sidecar id`).
    pub spawned: Instant,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
}

impl Sidecar {
    /// Starts a sidecar in a fresh data dir.
    pub async fn start(name: &str, opts: Opts) -> Sidecar {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("peat-{name}-"))
            .tempdir()
            .unwrap();
        let dir = tmp.path().to_path_buf();
        let mut s = Sidecar::start_in(name, &dir, opts).await;
        s._tmp = Some(tmp);
        s
    }

    /// Starts a sidecar with a given data dir (to test restarts).
    pub async fn start_in(name: &str, dir: &Path, opts: Opts) -> Sidecar {
        let bind = opts
            .bind
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], free_port())));
        let api_port = free_port();
        let id = endpoint_id(dir);
        let mut s = Sidecar {
            name: name.to_string(),
            id,
            dir: dir.to_path_buf(),
            bind,
            api_port,
            opts,
            spawned: Instant::now(),
            child: None,
            _tmp: None,
        };
        s.spawn();
        s.wait_ready().await;
        s
    }

    /// A sidecar in a network namespace listens on a Unix socket in its data dir: its
    /// 127.0.0.1 is the namespace's own loopback, which the test process cannot reach,
    /// while a socket file is reachable from every namespace.
    pub fn api_socket(&self) -> Option<PathBuf> {
        self.opts.netns.as_ref().map(|_| self.dir.join("api.sock"))
    }

    pub fn api(&self) -> String {
        match self.api_socket() {
            Some(p) => format!("unix://{}", p.display()),
            None => format!("tcp://127.0.0.1:{}", self.api_port),
        }
    }

    /// `ENDPOINT_ID@HOST:PORT` for other sidecars' `--peer`.
    pub fn peer_spec(&self) -> String {
        format!("{}@{}", self.id, self.bind)
    }

    fn command(&self) -> Command {
        let bin = self.opts.bin.clone().unwrap_or_else(|| PathBuf::from(BIN));
        let mut argv: Vec<String> = vec![];
        if let Some(ns) = &self.opts.netns {
            argv.extend(["ip", "netns", "exec", ns].map(String::from));
        }
        argv.extend(self.opts.wrapper.iter().cloned());
        argv.push(bin.display().to_string());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        cmd
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("sidecar.log")).unwrap();
        let mut cmd = self.command();
        cmd.arg("run")
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--bind")
            .arg(self.bind.to_string())
            .arg("--listen")
            .arg(self.api())
            .arg("--app-id")
            .arg(&self.opts.app_id);
        if let Some(k) = &self.opts.shared_key {
            cmd.arg("--shared-key").arg(k);
        }
        for p in &self.opts.peers {
            cmd.arg("--peer").arg(p);
        }
        cmd.args(&self.opts.extra);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info,peat_sidecar=debug");
        }
        // After the default: a scenario's own filter (BENCH_RUST_LOG) must win.
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.spawned = Instant::now();
        self.child = Some(cmd.spawn().expect("start peat-sidecar"));
    }

    /// Waits until the API answers GetStatus.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{} exited during start ({st}); log:\n{}",
                    self.name,
                    self.log()
                );
            }
            if let Ok(mut c) = self.client().await {
                if let Ok(s) = c.get_status(pb::GetStatusRequest {}).await {
                    assert_eq!(s.into_inner().endpoint_id, self.id);
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not answer on its API within 20 s; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn client(&self) -> Result<SidecarClient<Channel>, tonic::transport::Error> {
        if let Some(path) = self.api_socket() {
            // The URI is ignored: the connector always opens the socket.
            let ch = tonic::transport::Endpoint::from_static("http://[::]:50051")
                .connect_timeout(Duration::from_secs(2))
                .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                }))
                .await?;
            return Ok(SidecarClient::new(ch));
        }
        let ch =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", self.api_port))
                .unwrap()
                .connect_timeout(Duration::from_secs(2))
                .connect()
                .await?;
        Ok(SidecarClient::new(ch))
    }

    pub async fn status(&self) -> pb::GetStatusResponse {
        let mut c = self.client().await.expect("API reachable");
        c.get_status(pb::GetStatusRequest {})
            .await
            .expect("GetStatus")
            .into_inner()
    }

    pub async fn peers(&self) -> Vec<pb::Peer> {
        let mut c = self.client().await.expect("API reachable");
        c.list_peers(pb::ListPeersRequest {})
            .await
            .expect("ListPeers")
            .into_inner()
            .peers
    }

    /// Ids of the peers in state connected.
    pub async fn connected(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .peers()
            .await
            .into_iter()
            .filter(|p| p.state == pb::PeerState::Connected as i32)
            .map(|p| p.endpoint_id)
            .collect();
        v.sort();
        v
    }

    pub async fn peer(&self, id: &str) -> Option<pb::Peer> {
        self.peers().await.into_iter().find(|p| p.endpoint_id == id)
    }

    /// Whether this sidecar lists `id` with `source` (mdns, dns, gossip, ...) among the
    /// ways it knows that peer.
    pub async fn lists_with_source(&self, id: &str, source: &str) -> bool {
        self.peer(id)
            .await
            .is_some_and(|p| p.sources.iter().any(|s| s == source))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGTERM, then wait for the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the peer vanishes without a word.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again with the same data dir and ports.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn();
        self.wait_ready().await;
    }

    pub async fn respawn_after_kill(&mut self) {
        self.spawn();
        self.wait_ready().await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sidecar.log")).unwrap_or_default()
    }

    /// Runs the CLI client against this sidecar; returns (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(BIN)
            .args(args)
            .arg("--api")
            .arg(self.api())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- log of {} ({}) -----\n{}",
                self.name,
                self.id,
                self.log()
            );
        }
    }
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// `peat-sidecar id --data-dir DIR`.
pub fn endpoint_id(dir: &Path) -> String {
    let out = Command::new(BIN)
        .arg("id")
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "id failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Polls `check` every 100 ms until it returns true or `timeout` passes; returns the
/// time it took, or None.
pub async fn wait_until<F, Fut>(timeout: Duration, check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    poll(timeout, Duration::from_millis(100), check).await
}

/// Polls `check` every `every` until it returns true or `timeout` passes; returns the
/// time it took, or None. The benchmarks poll faster than the tests' 100 ms.
pub async fn poll<F, Fut>(timeout: Duration, every: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// Resident memory of a process in kB (VmRSS in /proc/PID/status); 0 if it is gone.
pub fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Waits until every sidecar is connected to every other one.
pub async fn wait_full_mesh(nodes: &[&Sidecar], timeout: Duration) -> Option<Duration> {
    wait_until(timeout, || async {
        for n in nodes {
            let c = n.connected().await;
            for m in nodes {
                if m.id != n.id && !c.contains(&m.id) {
                    return false;
                }
            }
        }
        true
    })
    .await
}

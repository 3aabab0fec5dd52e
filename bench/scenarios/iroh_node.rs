//! Runs the comparison node (bench/iroh_lookup.rs, the `iroh-lookup` example) in a
//! namespace and reads what it reports.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::common::netns::Lan;

/// Path of the `iroh-lookup` example built with the same profile as this harness.
/// `cargo bench`/`cargo test --bench` do not build examples, so it is built here once
/// (a no-op when it is fresh).
pub fn bin() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    if let Some(p) = BIN.get() {
        return Ok(p.clone());
    }
    // target/<profile>/deps/discovery-<hash>
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("where is the target dir?")?
        .to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--example", "iroh-lookup"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env(
            "CARGO_TARGET_DIR",
            profile_dir.parent().unwrap_or(&profile_dir),
        );
    if release {
        cmd.arg("--release");
    }
    // cargo gives this process the package's CARGO_PKG_* and friends; build scripts
    // (ring's, through cc) watch some of them, so passing them on would make the inner
    // build rebuild ring and iroh, and the next outer build rebuild them again.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_",
        ]
        .iter()
        .any(|p| k.starts_with(p))
            || k == "OUT_DIR"
        {
            cmd.env_remove(&*k);
        }
    }
    eprintln!(
        "building the iroh-lookup example ({})",
        if release { "release" } else { "debug" }
    );
    let st = cmd
        .status()
        .context("run cargo build --example iroh-lookup")?;
    if !st.success() {
        bail!("cargo build --example iroh-lookup failed ({st})");
    }
    let p = profile_dir.join("examples/iroh-lookup");
    if !p.exists() {
        bail!("{} not found after the build", p.display());
    }
    Ok(BIN.get_or_init(|| p).clone())
}

/// swarm-discovery does not pin the outgoing interface of its multicast socket: without
/// a route for 224.0.0.0/4 the namespace has no way out for it (docs in NOTES).
pub fn add_multicast_routes(lan: &Lan) {
    lan.add_route_everywhere(&["224.0.0.0/4", "dev", "eth0"]);
}

/// A `connected` line: (unix ms, peers connected from then on).
type Connected = (u128, BTreeSet<String>);

pub struct IrohNode {
    pub id: String,
    /// Unix ms when the harness spawned the process.
    pub spawned_ms: u128,
    child: Option<Child>,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

impl IrohNode {
    /// Starts a node in namespace `ns` on UDP port `port` and waits for its id line.
    pub async fn start(ns: &str, port: u16) -> anyhow::Result<IrohNode> {
        let dir = tempfile::Builder::new()
            .prefix("peat-bench-iroh-")
            .tempdir()?;
        let out = dir.path().join("out.jsonl");
        let err = dir.path().join("err.log");
        let bin = bin()?;
        let spawned_ms = unix_ms();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(&bin)
            .args(["--bind", &format!("0.0.0.0:{port}")])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(&err)?)
            .spawn()
            .context("start iroh-lookup")?;
        let mut node = IrohNode {
            id: String::new(),
            spawned_ms,
            child: Some(child),
            out,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(id) = node
                .lines()
                .iter()
                .find_map(|l| l.get("id")?.as_str().map(String::from))
            {
                node.id = id;
                return Ok(node);
            }
            if let Some(st) = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "iroh-lookup in {ns} exited at start ({st}): {}",
                    std::fs::read_to_string(&err).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("iroh-lookup in {ns} printed no id within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn events(&self) -> Vec<Connected> {
        self.lines()
            .into_iter()
            .filter_map(|l| {
                let t = l.get("t")?.as_u64()? as u128;
                let c = l.get("connected")?.as_array()?;
                Some((
                    t,
                    c.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect(),
                ))
            })
            .collect()
    }

    /// The peers it is connected to now (its last report).
    pub fn connected(&self) -> BTreeSet<String> {
        self.events().pop().map(|(_, s)| s).unwrap_or_default()
    }

    /// First time at or after `since` when its connected set held all of `ids`.
    pub fn connected_to_all_at(&self, ids: &BTreeSet<String>, since: u128) -> Option<u128> {
        self.events()
            .into_iter()
            .find(|(t, s)| *t >= since && ids.is_subset(s))
            .map(|(t, _)| t)
    }

    /// First time at or after `since` when `id` was no longer in its connected set.
    pub fn lost_at(&self, id: &str, since: u128) -> Option<u128> {
        self.events()
            .into_iter()
            .find(|(t, s)| *t >= since && !s.contains(id))
            .map(|(t, _)| t)
    }

    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            crate::common::signal(c.id(), sig);
        }
    }

    /// SIGTERM (the node closes its endpoint) and wait for the exit.
    pub async fn stop(&mut self) {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(c) = self.child.as_mut() {
            if c.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill9();
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for IrohNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Waits until every node is connected to every other one; returns false on timeout.
pub async fn wait_mesh(nodes: &[IrohNode], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let all = nodes.iter().all(|n| {
            let c = n.connected();
            nodes.iter().all(|m| m.id == n.id || c.contains(&m.id))
        });
        if all {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

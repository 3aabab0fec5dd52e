//! avahi as the comparison for steady-state traffic: per namespace an avahi-daemon
//! publishing one `_peat-sidecar._udp` service (a static service file, same TXT keys and
//! sizes as the sidecar's record), and an `avahi-browse` of that type that stays running,
//! which is what keeps a list of peers fresh, like the sidecar's browse.
//!
//! Several avahi daemons on one machine: each runs with its own mount namespace
//! (`unshare -m`) holding a tmpfs on /run (pid file, dbus socket), its own system
//! dbus-daemon there (avahi-browse talks to the daemon over dbus), and its own services
//! directory bind-mounted over /etc/avahi/services. The host's /run and /etc are not
//! touched. Config is Debian's default plus a unique host name, pinned to eth0.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

const SCRIPT: &str = r#"set -e
D=$1
mount -t tmpfs none /run
mkdir -p /run/dbus /run/avahi-daemon
mount --bind "$D/services" /etc/avahi/services
dbus-daemon --system --nofork --nopidfile > "$D/dbus.log" 2>&1 &
for i in $(seq 200); do [ -S /run/dbus/system_bus_socket ] && break; sleep 0.05; done
avahi-daemon -f "$D/avahi.conf" --no-chroot --no-drop-root --no-rlimits > "$D/avahi.log" 2>&1 &
for i in $(seq 400); do grep -q "Server startup complete" "$D/avahi.log" && break; sleep 0.05; done
exec avahi-browse -r -p -k _peat-sidecar._udp > "$D/browse.out" 2> "$D/browse.err"
"#;

pub struct AvahiNode {
    ns: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl AvahiNode {
    /// Starts dbus, avahi-daemon and avahi-browse in namespace `ns` (host `i`).
    pub fn start(ns: &str, i: usize, port: u16) -> anyhow::Result<AvahiNode> {
        for tool in ["avahi-daemon", "avahi-browse", "dbus-daemon"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !found {
                bail!(
                    "{tool} not found (scripts/apt-packages.txt: avahi-daemon, avahi-utils, dbus)"
                );
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("peat-bench-avahi-")
            .tempdir()?;
        let d = dir.path();
        std::fs::create_dir(d.join("services"))?;
        std::fs::write(
            d.join("avahi.conf"),
            format!(
                "[server]\nhost-name={ns}\nuse-ipv4=yes\nuse-ipv6=yes\nallow-interfaces=eth0\n\
                 ratelimit-interval-usec=1000000\nratelimit-burst=1000\n\
                 [wide-area]\nenable-wide-area=yes\n\
                 [publish]\npublish-hinfo=no\npublish-workstation=no\n"
            ),
        )?;
        // A 64-hex-digit id like a real endpoint id, so the record has the same size.
        let id = format!("{:064x}", 0xbe_0000 + i);
        std::fs::write(
            d.join("services/peat.service"),
            format!(
                "<?xml version=\"1.0\" standalone='no'?>\n\
                 <!DOCTYPE service-group SYSTEM \"avahi-service.dtd\">\n\
                 <service-group><name>node{i}</name><service>\
                 <type>_peat-sidecar._udp</type><port>{port}</port>\
                 <txt-record>v=1</txt-record><txt-record>app_id=bench</txt-record>\
                 <txt-record>endpoint_id={id}</txt-record></service></service-group>\n"
            ),
        )?;
        std::fs::write(d.join("node.sh"), SCRIPT)?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "unshare", "-m", "sh"])
            .arg(d.join("node.sh"))
            .arg(d)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("sh.err"))?)
            .spawn()
            .context("start avahi in a namespace")?;
        Ok(AvahiNode {
            ns: ns.to_string(),
            child: Some(child),
            dir,
        })
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    /// Service names avahi-browse has resolved over IPv4 (own one included).
    pub fn resolved(&self) -> BTreeSet<String> {
        std::fs::read_to_string(self.path("browse.out"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(';').collect();
                (f.first() == Some(&"=") && f.get(2) == Some(&"IPv4"))
                    .then(|| f.get(3).map(|s| s.to_string()))
                    .flatten()
            })
            .collect()
    }

    pub fn logs(&self) -> String {
        ["sh.err", "avahi.log", "browse.err", "dbus.log"]
            .iter()
            .map(|f| {
                format!(
                    "--- {f}\n{}",
                    std::fs::read_to_string(self.path(f)).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Drop for AvahiNode {
    /// Every process in the namespace is ours (dbus-daemon, avahi-daemon, avahi-browse
    /// and whatever dbus started): stop each by pid before the namespace goes.
    fn drop(&mut self) {
        let pids = Command::new("ip")
            .args(["netns", "pids", &self.ns])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for pid in pids.split_whitespace() {
            if let Ok(pid) = pid.parse::<u32>() {
                crate::common::signal(pid, "KILL");
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until every node's browser resolved all `n` services.
pub async fn wait_all_resolved(nodes: &[AvahiNode], timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if nodes.iter().all(|a| a.resolved().len() >= nodes.len()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let worst = nodes
                .iter()
                .min_by_key(|a| a.resolved().len())
                .map(|a| a.logs())
                .unwrap_or_default();
            bail!("avahi-browse did not resolve all {} services within {timeout:?}; logs of the slowest:\n{worst}", nodes.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

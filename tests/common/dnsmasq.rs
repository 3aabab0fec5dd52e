//! dnsmasq (Debian's dnsmasq-base) serving names from a hosts file on 127.0.0.1 and a
//! free port: the real DNS server behind dns mode's tests (tests/dns.rs) and benchmark
//! (bench/scenarios/dns.rs). Answers carry TTL 0, so nothing between the sidecar and
//! dnsmasq may cache them, and a change of the hosts file is live once [`Dnsmasq::set`]
//! returns.
//!
//! The `try_` methods return errors for the benchmark, which reports them; the others
//! panic with dnsmasq's log, as a test should.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{free_port, signal};

pub struct Dnsmasq {
    child: Child,
    port: u16,
    hosts: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// Starts dnsmasq with `extra` flags (say `--srv-host=...`) and no names yet.
    pub fn start(extra: &[String]) -> Dnsmasq {
        Dnsmasq::try_start(extra).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_start(extra: &[String]) -> Result<Dnsmasq, String> {
        let bin = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or(
                "dnsmasq is not installed: apt-get install dnsmasq-base (scripts/apt-packages.txt)",
            )?;
        let dir = tempfile::Builder::new()
            .prefix("peat-dnsmasq-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "").map_err(|e| format!("{}: {e}", hosts.display()))?;
        let log = dir.path().join("dnsmasq.log");
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let port = free_port();
        let child = Command::new(bin)
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--pid-file=",
                "--user=root",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--log-queries",
                "--log-facility=-",
                // Answers from the hosts file carry TTL 0 (dnsmasq's default local-ttl):
                // nothing between us and dnsmasq may cache them.
                "--local-ttl=0",
                // Authoritative for these: unknown names get NXDOMAIN, not REFUSED.
                "--local=/test/",
                "--local=/cluster.local/",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--addn-hosts={}", hosts.display()))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("start dnsmasq: {e}"))?;
        let d = Dnsmasq {
            child,
            port,
            hosts,
            log,
            _dir: dir,
        };
        d.try_wait_log("started", 1)?;
        Ok(d)
    }

    /// `IP:PORT` for `--dns-server`.
    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (10 s at most) until `needle` occurs `count` times in the log.
    pub fn try_wait_log(&self, needle: &str, count: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.matches(needle).count() >= count {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("dnsmasq: no `{needle}` in its log:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Serves `name` with exactly these addresses; returns once dnsmasq re-read them.
    pub fn set(&self, name: &str, addrs: &[IpAddr]) {
        self.try_set(name, addrs).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_set(&self, name: &str, addrs: &[IpAddr]) -> Result<(), String> {
        let reads = self.log().matches("read ").count();
        let text: String = addrs.iter().map(|a| format!("{a} {name}\n")).collect();
        std::fs::write(&self.hosts, text).map_err(|e| format!("{}: {e}", self.hosts.display()))?;
        signal(self.child.id(), "HUP");
        self.try_wait_log("read ", reads + 1)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- dnsmasq log -----\n{}", self.log());
        }
    }
}

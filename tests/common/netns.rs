//! Network namespaces as test hosts: the "test LAN".
//!
//! [`Lan::new`] creates N namespaces `PREFIX-0 .. PREFIX-(N-1)`, each with `lo` up and
//! an `eth0` that is one end of a veth pair whose other end (`h<i>s0`) sits in a bridge
//! `br0`. The bridges live in one more namespace, the "switch" `PREFIX-sw`, not in the
//! host namespace: there, Docker's `FORWARD DROP` policy together with br_netfilter
//! (`bridge-nf-call-iptables = 1`) would silently drop the bridged multicast, and
//! nothing in the host namespace is touched at all. The bridges have multicast snooping
//! off so that mDNS reaches every port at once, and no address of their own. Host `i`
//! gets `10.77.0.(i+1)/24`.
//!
//! More segments (bridges) give multi-subnet setups: [`Lan::add_segment`] creates
//! `br<s>` with subnet `10.77.<s>.0/24`, [`Lan::attach`] gives a host an `eth<s>` on it
//! (also while a sidecar runs there), [`Lan::add_host`] adds a namespace.
//!
//! Cleanup: `Drop` deletes the namespaces (which deletes the bridges and veths in them),
//! and `new` first sweeps namespaces left with the same prefix by an interrupted run,
//! killing any process still inside. Prefixes must be unique per test and per helper
//! (namespace names are machine-wide), 1-5 letters or digits.
//!
//! Needs root (CAP_NET_ADMIN). A test that builds a LAN starts with
//! `if common::skip::without_root("network namespaces") { return; }` (tests/common/skip.rs:
//! skipped with one line for a normal user, a failure under CI); [`require_root`] is the
//! backstop that fails with a clear message.

use std::{
    net::Ipv4Addr,
    process::{Command, Output},
    time::Duration,
};

/// Checks a namespace prefix (1-5 letters or digits, as names are machine-wide) and
/// clears what an interrupted run left under it; needs root.
pub fn claim_prefix(prefix: &str) {
    require_root();
    assert!(
        !prefix.is_empty()
            && prefix.len() <= 5
            && prefix.chars().all(|c| c.is_ascii_alphanumeric()),
        "netns prefix `{prefix}` must be 1-5 letters or digits"
    );
    sweep(prefix);
}

/// The prefix a test asked for, or the one `PEAT_TEST_NETNS_MAP` (`lb=xb,la=xa`) puts
/// in its place. Namespace names are machine-wide and `claim_prefix` sweeps what it
/// finds: two runs of one test at once on one machine (helpers sharing it) need
/// different names, or the second kills the first's sidecars.
pub fn mapped_prefix(prefix: &str) -> String {
    let map = std::env::var("PEAT_TEST_NETNS_MAP").unwrap_or_default();
    map.split(',')
        .filter_map(|pair| pair.split_once('='))
        .find(|(from, _)| from.trim() == prefix)
        .map_or_else(|| prefix.to_string(), |(_, to)| to.trim().to_string())
}

/// Fails the test unless it runs as root, saying why.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test builds a LAN of network namespaces and needs root (CAP_NET_ADMIN); \
         run it as root, as CI does (scripts/test.sh)"
    );
}

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e} (is iproute2 installed?)"))
}

/// Runs a command that must succeed.
pub fn sh(args: &[&str]) {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command whose failure does not matter (cleanup).
fn sh_quiet(args: &[&str]) {
    let _ = run(args);
}

/// Runs a command inside namespace `ns` and returns its output.
pub fn ns_exec(ns: &str, args: &[&str]) -> Output {
    let mut argv = vec!["ip", "netns", "exec", ns];
    argv.extend_from_slice(args);
    run(&argv)
}

pub struct Lan {
    prefix: String,
    /// Namespace names, by host index.
    hosts: Vec<String>,
    /// The namespace that holds the bridges.
    switch: String,
    /// Number of segments (bridges) created.
    segments: usize,
}

impl Lan {
    /// N hosts on segment 0.
    pub fn new(prefix: &str, n: usize) -> Lan {
        let prefix = &mapped_prefix(prefix);
        claim_prefix(prefix);
        let switch = format!("{prefix}-sw");
        sh(&["ip", "netns", "add", &switch]);
        let mut lan = Lan {
            prefix: prefix.to_string(),
            hosts: vec![],
            switch,
            segments: 0,
        };
        sh(&["ip", "-n", &lan.switch, "link", "set", "lo", "up"]);
        lan.add_segment();
        for _ in 0..n {
            lan.add_host_no_wait(0);
        }
        lan.settle();
        lan
    }

    /// Adds `ip route add ROUTE...` in every host's namespace (the namespaces go with
    /// the LAN, and their routes with them).
    pub fn add_route_everywhere(&self, route: &[&str]) {
        for ns in &self.hosts {
            let mut args = vec!["ip", "-n", ns.as_str(), "route", "add"];
            args.extend_from_slice(route);
            sh(&args);
        }
    }

    /// Namespace name of host `i`.
    pub fn ns(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Address of host `i` on segment `seg`.
    pub fn addr(&self, i: usize, seg: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, seg as u8, i as u8 + 1)
    }

    /// Creates another bridge (segment `s`, subnet 10.77.s.0/24); returns `s`.
    pub fn add_segment(&mut self) -> usize {
        let s = self.segments;
        let br = format!("br{s}");
        let sw = self.switch.as_str();
        sh(&[
            "ip",
            "-n",
            sw,
            "link",
            "add",
            &br,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        sh(&["ip", "-n", sw, "link", "set", &br, "up"]);
        self.segments += 1;
        s
    }

    /// Adds a namespace attached to segment `seg` only; returns its host index.
    pub fn add_host(&mut self, seg: usize) -> usize {
        let i = self.add_host_no_wait(seg);
        self.settle();
        i
    }

    fn add_host_no_wait(&mut self, seg: usize) -> usize {
        let i = self.hosts.len();
        let ns = format!("{}-{i}", self.prefix);
        sh(&["ip", "netns", "add", &ns]);
        self.hosts.push(ns.clone());
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        self.attach_now(i, seg);
        i
    }

    /// Gives host `i` an interface `eth<seg>` on segment `seg`, with address
    /// 10.77.seg.(i+1)/24; returns that address. Works while a sidecar runs there.
    pub fn attach(&mut self, i: usize, seg: usize) -> Ipv4Addr {
        let a = self.attach_now(i, seg);
        self.settle();
        a
    }

    /// Like [`Lan::attach`] but returns at once, while IPv6 DAD still runs: for tests
    /// that time how fast a new address is picked up.
    pub fn attach_now(&mut self, i: usize, seg: usize) -> Ipv4Addr {
        let ns = self.hosts[i].clone();
        let port = format!("h{i}s{seg}");
        let inner = format!("eth{seg}");
        let br = format!("br{seg}");
        let sw = self.switch.as_str();
        sh(&[
            "ip", "-n", sw, "link", "add", &port, "type", "veth", "peer", "name", &inner, "netns",
            &ns,
        ]);
        sh(&["ip", "-n", sw, "link", "set", &port, "master", &br]);
        sh(&["ip", "-n", sw, "link", "set", &port, "up"]);
        let addr = self.addr(i, seg);
        sh(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            &inner,
        ]);
        sh(&["ip", "-n", &ns, "link", "set", &inner, "up"]);
        addr
    }

    /// Takes host `i`'s `eth<seg>` down.
    pub fn link_down(&self, i: usize, seg: usize) {
        sh(&[
            "ip",
            "-n",
            self.ns(i),
            "link",
            "set",
            &format!("eth{seg}"),
            "down",
        ]);
    }

    /// Waits for IPv6 duplicate address detection on new links (~2 s) so that no test
    /// races a tentative address or a link that is still coming up.
    fn settle(&self) {
        std::thread::sleep(Duration::from_millis(2000));
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting a namespace deletes its interfaces, and a veth goes with its peer.
        for ns in self.hosts.iter().chain([&self.switch]) {
            sh_quiet(&["ip", "netns", "del", ns]);
        }
    }
}

/// Removes namespaces `PREFIX-<n>` and `PREFIX-sw` that an interrupted run left behind,
/// killing processes still inside them. Only exact matches of this prefix are touched.
pub fn sweep(prefix: &str) {
    let ours = |name: &str| -> bool {
        name.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('-'))
            .is_some_and(|r| r == "sw" || (!r.is_empty() && r.chars().all(|c| c.is_ascii_digit())))
    };
    let out = run(&["ip", "netns", "list"]);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if ours(name) {
            // A killed test's sidecars keep running in a namespace without a name;
            // kill them by pid so nothing talks there any more.
            let pids = run(&["ip", "netns", "pids", name]);
            for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                sh_quiet(&["kill", "-9", pid]);
            }
            sh_quiet(&["ip", "netns", "del", name]);
        }
    }
}

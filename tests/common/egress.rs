//! What a namespace really sends on one interface, counted by the kernel: an nft
//! table in the netdev family with an egress hook on the device, so every frame counts
//! (ARP and ND too) with its Ethernet header, split by UDP port into QUIC (the
//! sidecar's bound port), mDNS (5353), liveness beacons (9472) and the rest.
//!
//! Our own counters would miss what the kernel and the libraries send on their own.

use super::netns::ns_exec;

pub const MDNS_PORT: u16 = 5353;
pub const BEACON_PORT: u16 = 9472;

/// Bytes (with Ethernet headers) and packets sent since the counter was installed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub total: u64,
    pub packets: u64,
    pub quic: u64,
    pub mdns: u64,
    pub beacon: u64,
    /// Beacon frames (the others count bytes).
    pub beacon_packets: u64,
}

impl Sent {
    /// ARP, ND and anything not on the three ports.
    pub fn other(&self) -> u64 {
        self.total
            .saturating_sub(self.quic + self.mdns + self.beacon)
    }

    pub fn minus(&self, earlier: &Sent) -> Sent {
        Sent {
            total: self.total - earlier.total,
            packets: self.packets - earlier.packets,
            quic: self.quic - earlier.quic,
            mdns: self.mdns - earlier.mdns,
            beacon: self.beacon - earlier.beacon,
            beacon_packets: self.beacon_packets - earlier.beacon_packets,
        }
    }

    /// Scales a count over `secs` seconds to one minute.
    pub fn per_minute(&self, secs: f64) -> Sent {
        let f = |v: u64| (v as f64 * 60.0 / secs).round() as u64;
        Sent {
            total: f(self.total),
            packets: f(self.packets),
            quic: f(self.quic),
            mdns: f(self.mdns),
            beacon: f(self.beacon),
            beacon_packets: f(self.beacon_packets),
        }
    }
}

impl std::fmt::Display for Sent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} B in {} packets (quic {} B, mdns {} B, beacon {} B, other {} B)",
            self.total,
            self.packets,
            self.quic,
            self.mdns,
            self.beacon,
            self.other()
        )
    }
}

pub struct EgressCounter {
    ns: String,
    table: String,
}

fn nft(ns: &str, args: &[&str]) -> String {
    let mut argv = vec!["nft"];
    argv.extend_from_slice(args);
    let out = ns_exec(ns, &argv);
    assert!(
        out.status.success(),
        "nft {args:?} in {ns} failed: {} (is nftables installed?)",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl EgressCounter {
    /// Counts what namespace `ns` sends on `dev`; `quic_port` is the sidecar's
    /// `--bind` port. One table per device (several devices of one namespace can be
    /// counted at once); the table goes with the namespace.
    pub fn install(ns: &str, dev: &str, quic_port: u16) -> EgressCounter {
        let table = format!("egress_{dev}");
        let _ = ns_exec(ns, &["nft", "delete", "table", "netdev", table.as_str()]);
        nft(ns, &["add", "table", "netdev", table.as_str()]);
        let hook = format!("{{ type filter hook egress device \"{dev}\" priority 0; }}");
        nft(
            ns,
            &["add", "chain", "netdev", table.as_str(), "out", &hook],
        );
        let rules = [
            format!("udp sport {quic_port} counter comment \"quic\""),
            format!("udp dport {MDNS_PORT} counter comment \"mdns\""),
            format!("udp dport {BEACON_PORT} counter comment \"beacon\""),
            "counter comment \"total\"".to_string(),
        ];
        for r in &rules {
            let mut args = vec!["add", "rule", "netdev", table.as_str(), "out"];
            args.extend(r.split(' '));
            nft(ns, &args);
        }
        EgressCounter {
            ns: ns.to_string(),
            table,
        }
    }

    pub fn read(&self) -> Sent {
        let listing = nft(
            &self.ns,
            &["list", "chain", "netdev", self.table.as_str(), "out"],
        );
        let mut s = Sent::default();
        for line in listing.lines() {
            let Some((packets, bytes)) = counter(line) else {
                continue;
            };
            if line.contains("\"quic\"") {
                s.quic = bytes;
            } else if line.contains("\"mdns\"") {
                s.mdns = bytes;
            } else if line.contains("\"beacon\"") {
                s.beacon = bytes;
                s.beacon_packets = packets;
            } else if line.contains("\"total\"") {
                s.total = bytes;
                s.packets = packets;
            }
        }
        s
    }
}

/// `... counter packets P bytes B ...` -> (P, B).
fn counter(line: &str) -> Option<(u64, u64)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = |key: &str| {
        let i = words.iter().position(|w| *w == key)?;
        words.get(i + 1)?.parse::<u64>().ok()
    };
    Some((at("packets")?, at("bytes")?))
}

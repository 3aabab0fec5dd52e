//! What the discovery sources are given: the modes on the command line and, per mode,
//! only the settings its source reads. `settings` fills these from the flags after its
//! checks; a source never sees the command line.

use std::{fmt, net::SocketAddr, time::Duration};

use clap::ValueEnum;

use super::dns::resolve::Query;
use crate::platform::iface::{InterfaceFilter, Snapshot};

/// A discovery mode as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum DiscoveryMode {
    None,
    Mdns,
    Dns,
    Gossip,
}

impl DiscoveryMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DiscoveryMode::None => "none",
            DiscoveryMode::Mdns => "mdns",
            DiscoveryMode::Dns => "dns",
            DiscoveryMode::Gossip => "gossip",
        }
    }
}

impl fmt::Display for DiscoveryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The discovery modes in effect, with the settings of each.
#[derive(Debug, Clone)]
pub struct DiscoverySettings {
    /// `none` removed, duplicates folded, in a fixed order.
    pub modes: Modes,
    pub mdns: Option<MdnsSettings>,
    pub dns: Option<DnsSettings>,
    pub gossip: Option<GossipSettings>,
}

/// A list of modes that prints as the user writes it: `mdns,gossip` (or `none`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Modes(pub Vec<DiscoveryMode>);

impl fmt::Display for Modes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<&str> = self.0.iter().map(|m| m.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

/// Settings of the mdns mode.
#[derive(Debug, Clone)]
pub struct MdnsSettings {
    /// `--mdns-interfaces` compiled, with `--mdns-loopback`.
    pub filter: InterfaceFilter,
    /// `--max-known-peers`: also bounds the records mdns tracks.
    pub max_known_peers: usize,
    /// The name the user set the interfaces by, for warnings.
    pub interfaces_name: String,
    pub loopback_name: String,
}

/// Settings of the dns mode.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// `--discovery-service` as given, and what to ask DNS for.
    pub service: String,
    pub query: Query,
    /// `--dns-server`, or the system resolver.
    pub server: Option<SocketAddr>,
    /// Where the identity handshake is answered: the IP of `--bind`, `--discovery-port`.
    pub handshake_bind: SocketAddr,
    /// The name the user set the handshake port by, for a bind error.
    pub port_name: String,
    pub interval: Duration,
}

/// Settings of the gossip mode.
#[derive(Debug, Clone)]
pub struct GossipSettings {
    pub interval: Duration,
    pub ttl: Duration,
    pub max_entries: usize,
    pub max_message_bytes: usize,
    pub fanout: usize,
}

/// A `--mdns-interfaces` entry that matches no interface mdns may use right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmatchedPattern {
    pub name: String,
    pub pattern: String,
    /// It names a loopback interface, which needs the loopback switch.
    pub needs_loopback: Option<String>,
    /// The interfaces mdns would use now.
    pub eligible: Vec<String>,
}

impl fmt::Display for UnmatchedPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} entry `{}` matches no interface mdns can use",
            self.name, self.pattern
        )?;
        if let Some(switch) = &self.needs_loopback {
            write!(f, " (it is a loopback interface: add {switch})")?;
        }
        if self.eligible.is_empty() {
            f.write_str("; no interface is eligible now")
        } else {
            write!(f, "; eligible now: {}", self.eligible.join(", "))
        }
    }
}

impl MdnsSettings {
    /// The allow entries that match nothing mdns may use on this host now.
    pub fn unmatched(&self, snap: &Snapshot) -> Vec<UnmatchedPattern> {
        let eligible: Vec<String> = snap
            .values()
            .filter(|i| self.filter.eligible(i))
            .map(|i| i.name.clone())
            .collect();
        self.filter
            .unmatched(snap)
            .map(|p| UnmatchedPattern {
                name: self.interfaces_name.clone(),
                pattern: p.to_string(),
                needs_loopback: self
                    .filter
                    .needs_loopback(p, snap)
                    .then(|| self.loopback_name.clone()),
                eligible: eligible.clone(),
            })
            .collect()
    }
}

//! Checked settings of the discovery modes: which modes, and one struct per mode that
//! holds only what that mode's source reads.

use std::{fmt, net::SocketAddr, time::Duration};

use super::SettingsError;
use crate::{
    config::{DiscoveryMode, RunArgs},
    discovery::{
        dns::resolve::{self, Query},
        iface::{InterfaceFilter, Snapshot},
        BUILT_MODES,
    },
};

/// `--gossip-ttl` when not set, in rounds of `--discovery-interval`: generous, because
/// news of a peer may need several rounds to cross a formation that is not a full mesh
/// (under `--max-peers`) or whose hosts are busy, and a too-short TTL makes live peers
/// flap between lost and found.
pub const DEFAULT_TTL_ROUNDS: u32 = 20;
/// A gossip entry must survive this many rounds without a heartbeat.
const MIN_TTL_ROUNDS: u32 = 3;

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

impl DiscoverySettings {
    pub fn from_args(args: &RunArgs) -> Result<Self, SettingsError> {
        let modes = modes(args)?;
        let on = |m| modes.0.contains(&m);
        Ok(DiscoverySettings {
            mdns: on(DiscoveryMode::Mdns).then(|| mdns(args)).transpose()?,
            dns: on(DiscoveryMode::Dns).then(|| dns(args)).transpose()?,
            gossip: on(DiscoveryMode::Gossip)
                .then(|| gossip(args))
                .transpose()?,
            modes,
        })
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

fn modes(args: &RunArgs) -> Result<Modes, SettingsError> {
    let name = |id: &str| args.origins.name(id);
    let mut modes: Vec<DiscoveryMode> = args.discovery_mode.clone();
    modes.sort();
    modes.dedup();
    if modes.len() > 1 && modes.contains(&DiscoveryMode::None) {
        return Err(SettingsError::NoneCombined {
            name: name("discovery_mode"),
            got: Modes(modes).to_string(),
        });
    }
    modes.retain(|m| *m != DiscoveryMode::None);
    if modes.contains(&DiscoveryMode::Dns) && args.discovery_service.is_none() {
        return Err(SettingsError::DnsWithoutService {
            name: name("discovery_mode"),
        });
    }
    if let Some(&m) = modes.iter().find(|m| !BUILT_MODES.contains(m)) {
        let available: Vec<&str> = std::iter::once("none")
            .chain(BUILT_MODES.iter().map(|b| b.as_str()))
            .collect();
        return Err(SettingsError::ModeNotBuilt {
            mode: m,
            version: env!("CARGO_PKG_VERSION"),
            available: available.join(", "),
        });
    }
    Ok(Modes(modes))
}

fn mdns(args: &RunArgs) -> Result<MdnsSettings, SettingsError> {
    let interfaces_name = args.origins.name("mdns_interfaces");
    let filter =
        InterfaceFilter::parse(&args.mdns_interfaces, args.mdns_loopback).map_err(|cause| {
            SettingsError::InterfacePattern {
                name: interfaces_name.clone(),
                cause,
            }
        })?;
    Ok(MdnsSettings {
        filter,
        max_known_peers: args.max_known_peers,
        interfaces_name,
        loopback_name: args.origins.name("mdns_loopback"),
    })
}

fn dns(args: &RunArgs) -> Result<DnsSettings, SettingsError> {
    let name = |id: &str| args.origins.name(id);
    let service = args.discovery_service.clone().unwrap_or_default();
    let query =
        Query::parse(&service, args.discovery_port).map_err(|_| SettingsError::ServiceName {
            name: name("discovery_service"),
            value: service.clone(),
        })?;
    let server = args
        .dns_server
        .as_deref()
        .map(|s| {
            resolve::parse_server(s).map_err(|_| SettingsError::DnsServer {
                name: name("dns_server"),
                value: s.to_string(),
            })
        })
        .transpose()?;
    // The handshake answers on the first --bind address's IP (two share one port).
    let bind = args
        .bind
        .first()
        .copied()
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    if args.discovery_port == bind.port() {
        return Err(SettingsError::PortClash {
            port_name: name("discovery_port"),
            bind_name: name("bind"),
            port: args.discovery_port,
        });
    }
    Ok(DnsSettings {
        service,
        query,
        server,
        handshake_bind: SocketAddr::new(bind.ip(), args.discovery_port),
        port_name: name("discovery_port"),
        interval: args.discovery_interval.duration(),
    })
}

fn gossip(args: &RunArgs) -> Result<GossipSettings, SettingsError> {
    let interval = args.discovery_interval.duration();
    let ttl = args
        .gossip_ttl
        .map(|s| s.duration())
        .unwrap_or(interval * DEFAULT_TTL_ROUNDS);
    if ttl < interval * MIN_TTL_ROUNDS {
        return Err(SettingsError::GossipTtl {
            ttl_name: args.origins.name("gossip_ttl"),
            ttl_s: ttl.as_secs(),
            interval_name: args.origins.name("discovery_interval"),
            interval_s: interval.as_secs(),
            min_s: (interval * MIN_TTL_ROUNDS).as_secs(),
        });
    }
    Ok(GossipSettings {
        interval,
        ttl,
        max_entries: args.gossip_max_entries,
        max_message_bytes: args.gossip_max_message_bytes,
        fanout: usize::from(args.gossip_fanout),
    })
}

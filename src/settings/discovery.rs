//! Checked settings of the discovery modes: which modes, and one struct per mode that
//! holds only what that mode's source reads.

use std::net::SocketAddr;

use super::SettingsError;
use crate::{
    config::RunArgs,
    discovery::{
        dns::resolve::{self, Query},
        DiscoveryMode, DiscoverySettings, DnsSettings, GossipSettings, MdnsSettings, Modes,
        BUILT_MODES,
    },
    platform::iface::InterfaceFilter,
};

/// `--gossip-ttl` when not set, in rounds of `--discovery-interval`: generous, because
/// news of a peer may need several rounds to cross a formation that is not a full mesh
/// (under `--max-peers`) or whose hosts are busy, and a too-short TTL makes live peers
/// flap between lost and found.
pub const DEFAULT_TTL_ROUNDS: u32 = 20;
/// A gossip entry must survive this many rounds without a heartbeat.
const MIN_TTL_ROUNDS: u32 = 3;

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

/// `--mdns-interfaces` with `--mdns-loopback`: where mDNS and the liveness beacons may
/// go (checked in every mode, since the beacons use it in every mode).
pub fn interface_filter(args: &RunArgs) -> Result<InterfaceFilter, SettingsError> {
    InterfaceFilter::parse(&args.mdns_interfaces, args.mdns_loopback).map_err(|cause| {
        SettingsError::InterfacePattern {
            name: args.origins.name("mdns_interfaces"),
            cause,
        }
    })
}

fn mdns(args: &RunArgs) -> Result<MdnsSettings, SettingsError> {
    Ok(MdnsSettings {
        filter: interface_filter(args)?,
        max_known_peers: args.max_known_peers,
        interfaces_name: args.origins.name("mdns_interfaces"),
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

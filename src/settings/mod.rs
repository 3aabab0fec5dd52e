//! Checked settings: [`Settings::from_args`] turns the flags of `peat-sidecar run` into
//! one settings struct per module (node, API, each discovery mode), with every check
//! that involves several flags, a file or this host. `daemon::run` calls it before the
//! identity is read and before any socket is bound, so a bad value stops the start at
//! once; `main` exits with code 2 for a [`SettingsError`], as clap does for its own.
//!
//! Errors name what the user set: the flag, or the `PEAT_SIDECAR_*` variable when the
//! value came from the environment ([`Origins`]).

pub mod data;
pub mod discovery;
pub mod origin;
pub mod trust;
pub mod web;

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

pub use crate::config::Origins;
pub use crate::discovery::{DiscoverySettings, DnsSettings, GossipSettings, MdnsSettings, Modes};
pub use origin::parse_cli;

use crate::{
    config::{ListenAddr, LogFormat, RunArgs},
    discovery::DiscoveryMode,
    node::{endpoint::Liveness, liveness, peers::Limits, PeerHost, PeerSpec, SharedKey},
    platform::iface::{self, IfaceError, PatternError, Snapshot},
};

/// A QUIC idle timeout must span this many keep-alives: one or two lost in a row must
/// not end the connection.
pub const KEEP_ALIVES_PER_IDLE_TIMEOUT: u32 = 3;
/// Below this idle timeout a busy LAN's round trips and retransmissions end live links.
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_millis(1000);
/// Shorter beacon intervals would probe peers whose beacon is merely queued.
pub const MIN_BEACON_INTERVAL: Duration = Duration::from_millis(250);

/// A setting that cannot work, named as the user set it.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{name}: `none` cannot be combined with other modes (got {got})")]
    NoneCombined { name: String, got: String },
    #[error("{name} dns needs --discovery-service NAME (PEAT_SIDECAR_DISCOVERY_SERVICE), for example peat-sidecar-headless.peat-system.svc.cluster.local")]
    DnsWithoutService { name: String },
    #[error("discovery mode `{mode}` is not available in this build of peat-sidecar {version}; available modes: {available}")]
    ModeNotBuilt {
        mode: DiscoveryMode,
        version: &'static str,
        available: String,
    },
    #[error("cannot read the shared key file {} ({name})", path.display())]
    SharedKeyRead {
        name: String,
        path: PathBuf,
        #[source]
        cause: crate::node::keyfile::KeyFileError,
    },
    #[error("the shared key file {} ({name}) must hold 32 bytes, raw or as base64, or a key ring of up to 8 base64 keys, one per line (found {len} bytes that are neither). Put the formation's key in it, or make a new key in a new file: head -c 32 /dev/urandom | base64 > {}", path.display(), suggestion.display())]
    SharedKeyFormat {
        name: String,
        path: PathBuf,
        len: usize,
        suggestion: PathBuf,
    },
    #[error("{idle_name} {idle_ms} ms is less than {KEEP_ALIVES_PER_IDLE_TIMEOUT} keep-alives of {keep_name} {keep_ms} ms: the link would drop whenever one keep-alive is late. Raise {idle_name} to at least {min_ms} ms or lower {keep_name}")]
    IdleBelowKeepAlives {
        idle_name: String,
        idle_ms: u64,
        keep_name: String,
        keep_ms: u64,
        min_ms: u64,
    },
    #[error("{idle_name} {idle_ms} ms is below {} ms: a LAN round trip plus a retransmission would end live links. Use at least {} ms (and at least {KEEP_ALIVES_PER_IDLE_TIMEOUT} x {keep_name})", MIN_IDLE_TIMEOUT.as_millis(), MIN_IDLE_TIMEOUT.as_millis())]
    IdleTooShort {
        idle_name: String,
        idle_ms: u64,
        keep_name: String,
    },
    #[error("{name} {ms} ms is below {} ms: peers would be probed whenever one beacon is late. Use 0 (off) or at least {}", MIN_BEACON_INTERVAL.as_millis(), MIN_BEACON_INTERVAL.as_millis())]
    BeaconTooShort { name: String, ms: u64 },
    #[error("{ttl_name} {ttl_s}s is shorter than three rounds of {interval_name} {interval_s}s: entries would age out between heartbeats. Use at least {min_s}s, or a shorter {interval_name}")]
    GossipTtl {
        ttl_name: String,
        ttl_s: u64,
        interval_name: String,
        interval_s: u64,
        min_s: u64,
    },
    #[error("{name}: bad interface entry")]
    InterfacePattern {
        name: String,
        #[source]
        cause: PatternError,
    },
    #[error("{name} `{value}` is not a valid DNS name (for example peat-sidecar-headless.peat-system.svc.cluster.local or _peat._udp.example.org)")]
    ServiceName { name: String, value: String },
    #[error("{name} `{value}` is not IP or IP:PORT (for example 10.96.0.10 or 127.0.0.1:5353)")]
    DnsServer { name: String, value: String },
    #[error("{port_name} {port} is also the port of {bind_name}: the dns handshake and the iroh endpoint need a UDP port each. Choose another {port_name}")]
    PortClash {
        port_name: String,
        bind_name: String,
        port: u16,
    },
    #[error("{bind_name} {bind}: the address {} is not on this host (its addresses: {local}). Use one of them, or 0.0.0.0 / [::] for all", bind.ip())]
    BindNotLocal {
        bind_name: String,
        bind: SocketAddr,
        local: String,
    },
    #[error("{bind_name} {given}: {problem}. Give one address, or two of different families on the same port for a dual-stack node: 0.0.0.0:9470,[::]:9470")]
    BindSet {
        bind_name: String,
        given: String,
        problem: &'static str,
    },
    #[error("{peer_name} {peer}: an IPv6 address cannot be reached from {bind_name} {bind}, an IPv4 socket (the address family does not match). Bind to [::]:{} too ({bind_name} {bind},[::]:{}) or give the peer's IPv4 address", bind.port(), bind.port())]
    PeerFamily {
        peer_name: String,
        peer: String,
        bind_name: String,
        bind: SocketAddr,
    },
    #[error("{retained_name} {retained} is smaller than one largest message: {message_name} {message} plus 1024 bytes. Raise {retained_name} or lower {message_name}")]
    RetainedBelowMessage {
        retained_name: String,
        retained: u64,
        message_name: String,
        message: u64,
    },
    #[error("{name} {}: {problem}", path.display())]
    Trust {
        name: String,
        path: PathBuf,
        problem: String,
    },
    #[error("{name}: {problem}")]
    TrustKey { name: String, problem: String },
    #[error("cannot check the settings against this host's interfaces")]
    Host(#[source] IfaceError),
    #[error("{name} `{value}`: {problem}. Example: {example}")]
    LinkPolicy {
        name: String,
        value: String,
        problem: String,
        example: &'static str,
    },
}

impl SettingsError {
    /// The process exit code: 2 for a value the user must change, as clap's usage
    /// errors; 1 when the host could not be inspected.
    pub fn exit_code(&self) -> u8 {
        match self {
            SettingsError::Host(_) => 1,
            _ => 2,
        }
    }
}

/// Everything `peat-sidecar run` needs, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    pub node: NodeSettings,
    pub api: ApiSettings,
    pub discovery: DiscoverySettings,
    pub data: crate::data::DataConfig,
    pub web: web::WebSettings,
}

/// The node: endpoint, formation, static peers, limits.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// One address, or one per family (dual stack), on one port.
    pub bind: Vec<SocketAddr>,
    pub app_id: String,
    /// The key this node dials with.
    pub shared_key: Option<SharedKey>,
    /// The other keys of the ring, accepted from peers (a key change under way).
    pub accepted_keys: Vec<SharedKey>,
    pub static_peers: Vec<PeerSpec>,
    pub limits: Limits,
    pub liveness: Liveness,
    pub beacons: liveness::Config,
    /// Member certificates (`--authority-key`), if any.
    pub trust: Option<crate::trust::store::TrustConfig>,
}

/// The gRPC API's listener.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub listen: ListenAddr,
    pub socket_mode: u32,
    pub socket_group: Option<String>,
    /// `--metrics-listen`: where `/metrics` is served, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// What the checks need to know about this host.
#[derive(Debug, Clone, Default)]
pub struct Host {
    pub interfaces: Snapshot,
}

impl Host {
    pub fn current() -> Result<Host, SettingsError> {
        Ok(Host {
            interfaces: iface::snapshot().map_err(SettingsError::Host)?,
        })
    }

    fn has_ip(&self, ip: IpAddr) -> bool {
        self.addrs().any(|a| a == ip)
    }

    fn addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.interfaces
            .values()
            .flat_map(|i| i.addrs.iter().map(|a| a.ip))
    }
}

impl Settings {
    /// Checks `args` against this host.
    pub fn from_args(args: &RunArgs) -> Result<Settings, SettingsError> {
        Settings::check(args, &Host::current()?)
    }

    /// Checks `args` against `host`; no I/O but reading the shared key file.
    pub fn check(args: &RunArgs, host: &Host) -> Result<Settings, SettingsError> {
        Ok(Settings {
            data_dir: args.data_dir.clone(),
            log_format: args.log_format,
            node: node(args, host)?,
            api: ApiSettings {
                listen: args.listen.clone(),
                socket_mode: args.socket_mode,
                socket_group: args.socket_group.clone(),
                metrics_listen: args.metrics_listen,
            },
            discovery: DiscoverySettings::from_args(args)?,
            data: data::from_args(args)?,
            web: web::WebSettings::from_args(args),
        })
    }
}

fn node(args: &RunArgs, host: &Host) -> Result<NodeSettings, SettingsError> {
    check_bind_set(args)?;
    for bind in &args.bind {
        check_bind(args, *bind, host)?;
    }
    check_peer_families(args)?;
    let mut ring = load_shared_key(args)?.unwrap_or_default().into_iter();
    Ok(NodeSettings {
        bind: args.bind.clone(),
        app_id: args.app_id.clone(),
        shared_key: ring.next(),
        accepted_keys: ring.collect(),
        static_peers: args.peers.clone(),
        limits: Limits {
            max_peers: args.max_peers,
            max_known_peers: args.max_known_peers.max(1),
            max_concurrent_dials: args.max_concurrent_dials.max(1),
            max_dials_per_sec: args.max_dials_per_sec,
            max_pending_handshakes: args.max_pending_handshakes as usize,
        },
        liveness: quic_liveness(args)?,
        beacons: beacons(args)?,
        trust: trust::from_args(args)?,
    })
}

fn beacons(args: &RunArgs) -> Result<liveness::Config, SettingsError> {
    let ms = args.beacon_interval_ms;
    if ms > 0 && u128::from(ms) < MIN_BEACON_INTERVAL.as_millis() {
        let name = args.origins.name("beacon_interval_ms");
        return Err(SettingsError::BeaconTooShort { name, ms });
    }
    Ok(liveness::Config {
        beacon_interval: (ms > 0).then(|| Duration::from_millis(ms)),
        port: liveness::BEACON_PORT,
        // One interface selection for everything this node multicasts: where mDNS may
        // not go, beacons may not either.
        interfaces: discovery::interface_filter(args)?,
    })
}

fn quic_liveness(args: &RunArgs) -> Result<Liveness, SettingsError> {
    let (idle_ms, keep_ms) = (args.idle_timeout_ms, args.keep_alive_ms);
    let idle_name = args.origins.name("idle_timeout_ms");
    let keep_name = args.origins.name("keep_alive_ms");
    if u128::from(idle_ms) < MIN_IDLE_TIMEOUT.as_millis() {
        return Err(SettingsError::IdleTooShort {
            idle_name,
            idle_ms,
            keep_name,
        });
    }
    let min_ms = keep_ms * u64::from(KEEP_ALIVES_PER_IDLE_TIMEOUT);
    if idle_ms < min_ms {
        return Err(SettingsError::IdleBelowKeepAlives {
            idle_name,
            idle_ms,
            keep_name,
            keep_ms,
            min_ms,
        });
    }
    Ok(Liveness {
        keep_alive: Duration::from_millis(keep_ms),
        idle_timeout: Duration::from_millis(idle_ms),
    })
}

/// `--bind`: one address, or two of different families on one port (mDNS announces
/// one port; iroh takes one socket per family).
fn check_bind_set(args: &RunArgs) -> Result<(), SettingsError> {
    let problem = match args.bind.as_slice() {
        [] => Some("no address"),
        [_] => None,
        [a, b] if a.is_ipv4() == b.is_ipv4() => Some("two addresses of the same family"),
        [a, b] if a.port() != b.port() => Some("the two addresses have different ports"),
        [_, _] => None,
        _ => Some("more than two addresses"),
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(SettingsError::BindSet {
            bind_name: args.origins.name("bind"),
            given: crate::logfmt::list(&args.bind),
            problem,
        }),
    }
}

/// A specific `--bind` address must be one of this host's: the kernel refuses others,
/// and the bind error would otherwise suggest a port clash.
fn check_bind(args: &RunArgs, bind: SocketAddr, host: &Host) -> Result<(), SettingsError> {
    let ip = bind.ip();
    // Linux answers on the whole of 127.0.0.0/8, not just the address lo carries.
    let loopback_v4 = matches!(ip, IpAddr::V4(v4) if v4.is_loopback());
    if ip.is_unspecified() || loopback_v4 || host.has_ip(ip) {
        return Ok(());
    }
    let mut local: Vec<String> = host.addrs().map(|a| a.to_string()).collect();
    local.sort();
    local.dedup();
    Err(SettingsError::BindNotLocal {
        bind_name: args.origins.name("bind"),
        bind,
        local: local.join(", "),
    })
}

/// iroh binds one socket per family `--bind` names: an IPv6 static peer behind an
/// IPv4-only bind can never be dialled (host names are resolved later and cannot be
/// checked here).
fn check_peer_families(args: &RunArgs) -> Result<(), SettingsError> {
    let Some(bind) = args.bind.first().copied() else {
        return Ok(());
    };
    if args.bind.iter().any(|b| b.is_ipv6()) {
        return Ok(());
    }
    let v6 = args
        .peers
        .iter()
        .find(|p| matches!(p.host, PeerHost::Addr(a) if a.is_ipv6()));
    match v6 {
        None => Ok(()),
        Some(p) => Err(SettingsError::PeerFamily {
            peer_name: args.origins.name("peers"),
            peer: p.to_string(),
            bind_name: args.origins.name("bind"),
            bind,
        }),
    }
}

/// The shared key from `--shared-key` or `--shared-key-file`, if any.
fn load_shared_key(args: &RunArgs) -> Result<Option<Vec<SharedKey>>, SettingsError> {
    if let Some(key) = &args.shared_key {
        return Ok(Some(vec![key.clone()]));
    }
    let Some(path) = &args.shared_key_file else {
        return Ok(None);
    };
    let name = args.origins.name("shared_key_file");
    // Bounded: a device or a FIFO named here must not fill memory or hang the start.
    let raw = crate::node::keyfile::read_small(path, SharedKey::MAX_FILE_LEN).map_err(|cause| {
        SettingsError::SharedKeyRead {
            name: name.clone(),
            path: path.clone(),
            cause,
        }
    })?;
    SharedKey::ring_from_file_bytes(&raw)
        .map(Some)
        .ok_or_else(|| SettingsError::SharedKeyFormat {
            name,
            path: path.clone(),
            len: raw.len(),
            suggestion: new_file_next_to(path),
        })
}

/// A file name next to `path` that does not exist yet, so that the suggested command
/// cannot overwrite the user's file.
fn new_file_next_to(path: &Path) -> PathBuf {
    let base = path.as_os_str().to_owned();
    (1..100)
        .map(|n| {
            let mut p = base.clone();
            p.push(if n == 1 {
                ".new".to_string()
            } else {
                format!(".new{n}")
            });
            PathBuf::from(p)
        })
        .find(|p| !p.exists())
        .unwrap_or_else(|| PathBuf::from("/tmp/peat-shared.key"))
}

#[cfg(test)]
mod tests;

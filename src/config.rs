//! The command line: flags, their `PEAT_SIDECAR_*` variables and the parsers of single
//! values.
//!
//! Every flag of `peat-sidecar run` has a `PEAT_SIDECAR_*` environment variable so that
//! the systemd unit, the container image and the Kubernetes manifests can configure the
//! daemon without a command line. Checks that involve several flags, files or the host
//! live in [`crate::settings`], which turns [`RunArgs`] into checked settings before
//! anything is bound; [`crate::settings::parse_cli`] is the entry point.

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use iroh::EndpointId;

use crate::api::idprefix::PeerRef;

/// UDP port of the iroh endpoint unless `--bind` says otherwise.
pub const DEFAULT_IROH_PORT: u16 = 9470;
/// Port of the dns mode's identity handshake.
pub const DEFAULT_DISCOVERY_PORT: u16 = 9471;
/// Where the gRPC API listens, and where the client looks for it.
pub const DEFAULT_API: &str = "tcp://127.0.0.1:50051";
/// The formation a sidecar joins when it is not told otherwise.
pub const DEFAULT_APP_ID: &str = "peat";
/// Longest app id accepted; it travels in handshakes and mDNS TXT records.
pub const MAX_APP_ID_LEN: usize = 64;

#[derive(Debug, Parser)]
#[command(
    name = "peat-sidecar",
    version,
    about = "Joins the applications on this host to a Peat formation mesh over iroh QUIC",
    long_about = "Joins the applications on this host to a Peat formation mesh over iroh QUIC.\n\n\
        `peat-sidecar run` starts the daemon. The other subcommands are its client: they talk \
        to a running daemon's gRPC API (see --api)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar daemon.
    Run(Box<RunArgs>),
    /// Show the running sidecar's identity, formation and counters.
    Status(ClientArgs),
    /// List every peer the sidecar knows, connected or not.
    Peers(ClientArgs),
    /// Ask the sidecar to connect to a peer: ENDPOINT_ID@HOST:PORT.
    Connect(ConnectArgs),
    /// Close the connection to a peer and stop reconnecting until it is found again.
    Disconnect(DisconnectArgs),
    /// Remove a peer from the table: close its connection and do not redial it until a
    /// discovery source finds it again (a --peer entry cannot be forgotten).
    Forget(DisconnectArgs),
    /// Stream peer events (found, connected, disconnected, ...) until interrupted.
    Watch(ClientArgs),
    /// Print this host's endpoint id, creating the identity key if it is absent.
    Id(IdArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Settings of `peat-sidecar run`.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// UDP address of the iroh QUIC endpoint.
    #[arg(long, env = "PEAT_SIDECAR_BIND", default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_IROH_PORT)))]
    pub bind: SocketAddr,

    /// Directory that holds the identity key (`secret.key`, mode 0600).
    #[arg(
        long,
        env = "PEAT_SIDECAR_DATA_DIR",
        default_value = "/var/lib/peat-sidecar"
    )]
    pub data_dir: PathBuf,

    /// Formation name. Only peers with the same app id are connected.
    #[arg(long, env = "PEAT_SIDECAR_APP_ID", default_value = DEFAULT_APP_ID, value_parser = parse_app_id)]
    pub app_id: String,

    /// File holding the formation's shared key: 32 bytes, raw or base64.
    #[arg(
        long,
        env = "PEAT_SIDECAR_SHARED_KEY_FILE",
        conflicts_with = "shared_key"
    )]
    pub shared_key_file: Option<PathBuf>,

    /// The formation's shared key as base64 of 32 bytes (prefer --shared-key-file:
    /// environment variables show up in /proc).
    #[arg(long, env = "PEAT_SIDECAR_SHARED_KEY", hide_env_values = true, value_parser = parse_shared_key)]
    pub shared_key: Option<SharedKey>,

    /// Static peers, ENDPOINT_ID@HOST:PORT, comma-separated or repeated. Host names are
    /// resolved before each dial.
    #[arg(long = "peer", env = "PEAT_SIDECAR_PEERS", value_delimiter = ',', value_parser = parse_peer_spec)]
    pub peers: Vec<PeerSpec>,

    /// Discovery modes, comma-separated: none, mdns, dns, gossip.
    #[arg(
        long,
        env = "PEAT_SIDECAR_DISCOVERY_MODE",
        value_delimiter = ',',
        default_value = "none"
    )]
    pub discovery_mode: Vec<DiscoveryMode>,

    /// Name that dns mode resolves: a headless Service name (A/AAAA) or an SRV name
    /// (_service._proto.name).
    #[arg(long, env = "PEAT_SIDECAR_DISCOVERY_SERVICE")]
    pub discovery_service: Option<String>,

    /// Seconds between discovery rounds (dns resolution, gossip exchange).
    #[arg(long, env = "PEAT_SIDECAR_DISCOVERY_INTERVAL", default_value = "30", value_parser = parse_interval)]
    pub discovery_interval: Seconds,

    /// Port (UDP) of the dns mode's identity handshake, answered on the IP of --bind
    /// and asked on every address the DNS name resolves to (SRV records may give others).
    #[arg(long, env = "PEAT_SIDECAR_DISCOVERY_PORT", default_value_t = DEFAULT_DISCOVERY_PORT)]
    pub discovery_port: u16,

    /// DNS server for dns mode (IP or IP:PORT) instead of /etc/resolv.conf.
    #[arg(long, env = "PEAT_SIDECAR_DNS_SERVER")]
    pub dns_server: Option<String>,

    /// Interfaces mdns may use: comma-separated names or globs; a leading `!` denies
    /// (for example `wlan*,!wlan9`). Default: every multicast-capable interface.
    #[arg(long, env = "PEAT_SIDECAR_MDNS_INTERFACES", value_delimiter = ',')]
    pub mdns_interfaces: Vec<String>,

    /// Also announce and browse on loopback, for several sidecars on one host. The
    /// variable takes 1/0, yes/no, on/off, true/false.
    #[arg(long, env = "PEAT_SIDECAR_MDNS_LOOPBACK", value_parser = clap::builder::BoolishValueParser::new())]
    pub mdns_loopback: bool,

    /// Gossip: seconds after which an entry that no one refreshed is forgotten and its
    /// peer reported lost. Must cover the rounds news needs to cross the formation.
    /// Default: 20 x --discovery-interval.
    #[arg(long, env = "PEAT_SIDECAR_GOSSIP_TTL", value_parser = parse_interval)]
    pub gossip_ttl: Option<Seconds>,

    /// Gossip: most entries kept in the table that gossip spreads; new entries beyond
    /// it are ignored until old ones age out.
    #[arg(long, env = "PEAT_SIDECAR_GOSSIP_MAX_ENTRIES", default_value_t = 1024, value_parser = parse_gossip_max_entries)]
    pub gossip_max_entries: usize,

    /// Gossip: largest table message sent or accepted, in bytes (1024-16777216). Larger
    /// incoming messages are refused whole; outgoing ones carry the freshest entries.
    #[arg(long, env = "PEAT_SIDECAR_GOSSIP_MAX_MESSAGE_BYTES", default_value_t = 262_144, value_parser = parse_gossip_max_message)]
    pub gossip_max_message_bytes: usize,

    /// Gossip: connected peers this node exchanges tables with each round (besides
    /// every new connection).
    #[arg(long, env = "PEAT_SIDECAR_GOSSIP_FANOUT", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub gossip_fanout: u16,

    /// Most connections kept open; 0 means no limit.
    #[arg(long, env = "PEAT_SIDECAR_MAX_PEERS", default_value_t = 0)]
    pub max_peers: usize,

    /// Most peers tracked in the peer table (discovered, backing off or connected).
    /// Peers beyond it are dropped, oldest unconnected first.
    #[arg(long, env = "PEAT_SIDECAR_MAX_KNOWN_PEERS", default_value_t = 1024)]
    pub max_known_peers: usize,

    /// Most dials in flight at once.
    #[arg(long, env = "PEAT_SIDECAR_MAX_CONCURRENT_DIALS", default_value_t = 32)]
    pub max_concurrent_dials: usize,

    /// Most dials started per second (a token bucket: bursts up to this many). Bounds
    /// the traffic a flood of fake announcements can make this node send.
    #[arg(long, env = "PEAT_SIDECAR_MAX_DIALS_PER_SEC", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_dials_per_sec: u32,

    /// Most formation checks of incoming connections running at once; beyond it, new
    /// connections are refused before the handshake, so that a flood of connection
    /// attempts cannot exhaust memory.
    #[arg(long, env = "PEAT_SIDECAR_MAX_PENDING_HANDSHAKES", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_pending_handshakes: u32,

    /// Where the gRPC API listens: tcp://HOST:PORT or unix:///PATH.
    #[arg(long, env = "PEAT_SIDECAR_LISTEN", default_value = DEFAULT_API, value_parser = parse_listen)]
    pub listen: ListenAddr,

    /// Serve Prometheus/OpenMetrics metrics on http://ADDR/metrics, for example
    /// tcp://127.0.0.1:9464. Off unless given.
    #[arg(long, env = "PEAT_SIDECAR_METRICS_LISTEN", value_parser = parse_metrics_listen)]
    pub metrics_listen: Option<SocketAddr>,

    /// Permission bits of the API's Unix socket (octal).
    #[arg(long, env = "PEAT_SIDECAR_SOCKET_MODE", default_value = "0660", value_parser = parse_mode)]
    pub socket_mode: u32,

    /// Group that owns the API's Unix socket (name or numeric gid), so that apps in
    /// that group can use the API. Default: the daemon's group.
    #[arg(long, env = "PEAT_SIDECAR_SOCKET_GROUP")]
    pub socket_group: Option<String>,

    /// QUIC keep-alive interval in milliseconds.
    #[arg(long, env = "PEAT_SIDECAR_KEEP_ALIVE_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=30_000))]
    pub keep_alive_ms: u64,

    /// QUIC idle timeout in milliseconds: a peer silent for this long counts as gone.
    /// At least 1000 and at least three --keep-alive-ms.
    #[arg(long, env = "PEAT_SIDECAR_IDLE_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(500..=120_000))]
    pub idle_timeout_ms: u64,

    /// Log format; the level comes from RUST_LOG (default `info`).
    #[arg(long, env = "PEAT_SIDECAR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Which values came from the environment (filled by `settings::parse_cli`).
    #[arg(skip)]
    pub origins: crate::settings::Origins,
}

/// Settings shared by the client subcommands.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// Address of the sidecar's gRPC API: tcp://HOST:PORT or unix:///PATH.
    #[arg(long, env = "PEAT_SIDECAR_API", default_value = DEFAULT_API, value_parser = parse_listen)]
    pub api: ListenAddr,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Seconds to wait for the sidecar: for the connection and for each request
    /// (default 5). `connect` waits this long for the peer (default 10); `watch` only
    /// for the connection.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: Option<u64>,
}

#[derive(Debug, Args, Clone)]
pub struct ConnectArgs {
    /// The peer: ENDPOINT_ID@HOST:PORT (or just ENDPOINT_ID if the sidecar already knows
    /// its addresses; then a unique prefix of 8 or more hex characters will do).
    #[arg(value_parser = parse_connect_target)]
    pub peer: ConnectTarget,

    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args, Clone)]
pub struct DisconnectArgs {
    /// Endpoint id of the peer: 64 hex characters, or a unique prefix of 8 or more.
    #[arg(value_name = "ID")]
    pub endpoint_id: PeerRef,

    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args, Clone)]
pub struct IdArgs {
    /// Directory that holds the identity key.
    #[arg(
        long,
        env = "PEAT_SIDECAR_DATA_DIR",
        default_value = "/var/lib/peat-sidecar"
    )]
    pub data_dir: PathBuf,
}

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

/// A whole number of seconds above zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub u64);

impl Seconds {
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

fn parse_interval(s: &str) -> Result<Seconds, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("must be above 0 seconds".into()),
        Ok(n) if n > 86_400 => Err("must be at most 86400 seconds (one day)".into()),
        Ok(n) => Ok(Seconds(n)),
        Err(_) => Err(format!("`{s}` is not a whole number of seconds")),
    }
}

fn parse_gossip_max_entries(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{s}` is not a number of entries from 1 to 1000000"
        )),
    }
}

fn parse_gossip_max_message(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1024..=16 << 20).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{s}` is not a size in bytes from 1024 to 16777216 (16 MiB)"
        )),
    }
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.trim().trim_start_matches("0o");
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("`{s}` is not an octal file mode such as 0660"))
}

fn parse_app_id(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("the app id must not be empty".into());
    }
    if s.len() > MAX_APP_ID_LEN {
        return Err(format!(
            "the app id is {} bytes; at most {MAX_APP_ID_LEN} are allowed",
            s.len()
        ));
    }
    if !s.chars().all(|c| c.is_ascii_graphic()) {
        return Err("the app id may hold printable ASCII characters only, no spaces".into());
    }
    Ok(s.to_string())
}

/// The formation's 32-byte shared key. Its `Debug` hides the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedKey(pub [u8; 32]);

impl fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedKey(..)")
    }
}

impl SharedKey {
    /// Largest shared key file read: base64 of 32 bytes is 44 characters; the rest is
    /// room for line ends and spaces.
    pub const MAX_FILE_LEN: usize = 128;

    /// A key file holds either the 32 raw bytes or their base64 (a trailing newline is
    /// fine): `head -c 32 /dev/urandom > key` and `... | base64 > key` both work.
    pub fn from_file_bytes(raw: &[u8]) -> Option<Self> {
        if let Ok(bytes) = <[u8; 32]>::try_from(raw) {
            return Some(SharedKey(bytes));
        }
        let text = std::str::from_utf8(raw).ok()?;
        parse_shared_key(text.trim()).ok()
    }
}

fn parse_shared_key(s: &str) -> Result<SharedKey, String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|_| {
            "the shared key must be base64 of 32 bytes (head -c 32 /dev/urandom | base64)"
                .to_string()
        })?;
    let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        format!(
            "the shared key must be 32 bytes, found {}; create one with: head -c 32 /dev/urandom | base64",
            bytes.len()
        )
    })?;
    Ok(SharedKey(arr))
}

/// Parses an endpoint id: 64 hex characters (or iroh's 52-character base32).
pub fn parse_endpoint_id(s: &str) -> Result<EndpointId, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("the endpoint id is empty; expected 64 hex characters".into());
    }
    if s.len() > 128 {
        return Err(format!(
            "the endpoint id is {} characters long; expected 64 hex characters",
            s.len()
        ));
    }
    EndpointId::from_str(s).map_err(|_| {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            // Right shape, but not a point on the curve: not a typo in the length.
            format!("`{s}` is not a valid endpoint id (not a public key); copy it again from `peat-sidecar id` on that host")
        } else {
            format!("`{s}` is not an endpoint id: expected 64 hex characters, as printed by `peat-sidecar id`")
        }
    })
}

/// Where a peer can be reached: a socket address, or a host name to resolve before a dial.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerHost {
    Addr(SocketAddr),
    Name { host: String, port: u16 },
}

impl fmt::Display for PeerHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerHost::Addr(a) => write!(f, "{a}"),
            PeerHost::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl FromStr for PeerHost {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(PeerHost::Addr(addr));
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(|| {
            format!(
                "`{s}` has no port; expected HOST:PORT, for example 10.0.0.2:{DEFAULT_IROH_PORT}"
            )
        })?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("`{port}` in `{s}` is not a port number (1-65535)"))?;
        if port == 0 {
            return Err(format!("port 0 in `{s}` cannot be dialled"));
        }
        if host.is_empty() || host.len() > 253 || host.contains(['[', ']', ' ', '/', '@']) {
            return Err(format!("`{host}` is not a host name or IP address"));
        }
        Ok(PeerHost::Name {
            host: host.to_string(),
            port,
        })
    }
}

/// A static peer: `ENDPOINT_ID@HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    pub id: EndpointId,
    pub host: PeerHost,
}

impl fmt::Display for PeerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.host)
    }
}

pub fn parse_peer_spec(s: &str) -> Result<PeerSpec, String> {
    let s = s.trim();
    let (id, host) = s.split_once('@').ok_or_else(|| {
        format!("`{s}` is not ENDPOINT_ID@HOST:PORT (the endpoint id comes from `peat-sidecar id` on that host)")
    })?;
    Ok(PeerSpec {
        id: parse_endpoint_id(id)?,
        host: host.parse()?,
    })
}

/// The argument of `peat-sidecar connect`: an id with or without an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTarget {
    pub id: PeerRef,
    pub host: Option<PeerHost>,
}

fn parse_connect_target(s: &str) -> Result<ConnectTarget, String> {
    match s.trim().split_once('@') {
        Some((id, host)) => Ok(ConnectTarget {
            id: id.parse()?,
            host: Some(host.parse()?),
        }),
        None => Ok(ConnectTarget {
            id: s.parse()?,
            host: None,
        }),
    }
}

/// Where the gRPC API listens or is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "tcp://{a}"),
            ListenAddr::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

pub fn parse_listen(s: &str) -> Result<ListenAddr, String> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("tcp://") {
        return rest
            .parse::<SocketAddr>()
            .map(ListenAddr::Tcp)
            .map_err(|_| {
                format!("`{rest}` is not IP:PORT; expected for example tcp://127.0.0.1:50051")
            });
    }
    if let Some(path) = s.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(format!(
                "`{s}` needs an absolute path: unix:///run/peat-sidecar/api.sock"
            ));
        }
        return Ok(ListenAddr::Unix(PathBuf::from(path)));
    }
    Err(format!(
        "`{s}` is neither tcp://HOST:PORT nor unix:///PATH (for example {DEFAULT_API} or unix:///run/peat-sidecar/api.sock)"
    ))
}

/// `tcp://IP:PORT` (as --listen) or plain `IP:PORT`.
fn parse_metrics_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let addr = s.strip_prefix("tcp://").unwrap_or(s);
    addr.parse().map_err(|_| {
        format!("`{s}` is not tcp://IP:PORT; expected for example tcp://127.0.0.1:9464")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "ae58ff8833241ac82d6ff7611046ed67b5072d142c588d0063e942d9a75502b6";

    #[test]
    fn peer_spec_with_ip_and_name() {
        let p = parse_peer_spec(&format!("{ID}@127.0.0.1:9470")).unwrap();
        assert_eq!(p.host, PeerHost::Addr("127.0.0.1:9470".parse().unwrap()));
        assert_eq!(p.to_string(), format!("{ID}@127.0.0.1:9470"));
        let p = parse_peer_spec(&format!("{ID}@node-2.lan:9470")).unwrap();
        assert_eq!(
            p.host,
            PeerHost::Name {
                host: "node-2.lan".into(),
                port: 9470
            }
        );
        let p = parse_peer_spec(&format!("{ID}@[::1]:9470")).unwrap();
        assert_eq!(p.host, PeerHost::Addr("[::1]:9470".parse().unwrap()));
    }

    #[test]
    fn peer_spec_errors_say_what_is_wrong() {
        assert!(parse_peer_spec("127.0.0.1:9470")
            .unwrap_err()
            .contains("ENDPOINT_ID@HOST:PORT"));
        assert!(parse_peer_spec("abc@127.0.0.1:1")
            .unwrap_err()
            .contains("not an endpoint id"));
        assert!(parse_peer_spec(&format!("{ID}@host"))
            .unwrap_err()
            .contains("no port"));
        assert!(parse_peer_spec(&format!("{ID}@host:99999"))
            .unwrap_err()
            .contains("not a port"));
        assert!(parse_peer_spec(&format!("{ID}@host:0"))
            .unwrap_err()
            .contains("port 0"));
        assert!(parse_peer_spec(&format!("{ID}@:80")).is_err());
        let huge = "a".repeat(10_000);
        assert!(parse_peer_spec(&format!("{huge}@h:1")).is_err());
    }

    #[test]
    fn listen_forms() {
        assert_eq!(
            parse_listen("tcp://127.0.0.1:50051").unwrap(),
            ListenAddr::Tcp("127.0.0.1:50051".parse().unwrap())
        );
        assert_eq!(
            parse_listen("unix:///run/x.sock").unwrap(),
            ListenAddr::Unix("/run/x.sock".into())
        );
        assert!(parse_listen("unix://relative").is_err());
        assert!(parse_listen("http://x").is_err());
        assert!(parse_listen("tcp://localhost").is_err());
    }

    #[test]
    fn shared_key_raw_and_base64() {
        let raw = [7u8; 32];
        assert_eq!(SharedKey::from_file_bytes(&raw).unwrap().0, raw);
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw) + "\n";
        assert_eq!(SharedKey::from_file_bytes(b64.as_bytes()).unwrap().0, raw);
        assert!(SharedKey::from_file_bytes(b"short").is_none());
        assert!(parse_shared_key("AAAA").unwrap_err().contains("32 bytes"));
    }

    #[test]
    fn modes_and_intervals_parse() {
        let err = Cli::try_parse_from(["peat-sidecar", "run", "--discovery-mode", "bonjour"])
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("mdns") && msg.contains("gossip"), "{msg}");

        let err =
            Cli::try_parse_from(["peat-sidecar", "run", "--discovery-interval", "0"]).unwrap_err();
        assert!(err.to_string().contains("above 0"));
    }

    #[test]
    fn hex_that_is_not_a_key_says_so() {
        // About half of all 32-byte strings are not an Ed25519 point.
        let not_a_key = (0u8..=255)
            .map(|b| hex::encode([b; 32]))
            .find(|s| EndpointId::from_str(s).is_err())
            .expect("some byte pattern is not a public key");
        let err = parse_endpoint_id(&not_a_key).unwrap_err();
        assert!(
            err.contains("not a valid endpoint id (not a public key)"),
            "{err}"
        );
        assert!(!err.contains("expected 64 hex"), "{err}");
        assert!(parse_endpoint_id("abc").unwrap_err().contains("64 hex"));
    }

    #[test]
    fn app_id_rules() {
        assert!(parse_app_id("").is_err());
        assert!(parse_app_id("has space").is_err());
        assert!(parse_app_id(&"x".repeat(65)).is_err());
        assert_eq!(parse_app_id("peat-alpha").unwrap(), "peat-alpha");
    }

    #[test]
    fn socket_mode() {
        assert_eq!(parse_mode("0660").unwrap(), 0o660);
        assert_eq!(parse_mode("600").unwrap(), 0o600);
        assert!(parse_mode("999").is_err());
    }
}

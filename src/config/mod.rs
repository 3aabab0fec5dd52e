//! The command line: flags, their `PEAT_SIDECAR_*` variables and the parsers of single
//! values.
//!
//! Every flag of `peat-sidecar run` has a `PEAT_SIDECAR_*` environment variable so that
//! the systemd unit, the container image and the Kubernetes manifests can configure the
//! daemon without a command line. Checks that involve several flags, files or the host
//! live in [`crate::settings`], which turns [`RunArgs`] into checked settings before
//! anything is bound; [`crate::settings::parse_cli`] is the entry point.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{data::Class, discovery::DiscoveryMode};

mod origins;
mod trust;
mod values;
mod web;

pub use origins::Origins;
pub use trust::*;
pub use values::*;
pub use web::WebArgs;

/// `--bind` unless set: every IPv4 address, on [`DEFAULT_IROH_PORT`].
pub const DEFAULT_BIND: &str = "0.0.0.0:9470";
/// Port of the dns mode's identity handshake.
pub const DEFAULT_DISCOVERY_PORT: u16 = 9471;
/// Where the gRPC API listens, and where the client looks for it.
pub const DEFAULT_API: &str = "tcp://127.0.0.1:50051";
/// The formation a sidecar joins when it is not told otherwise.
pub const DEFAULT_APP_ID: &str = "peat";

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
    /// Publish one message on a topic (VALUE `-` reads standard input).
    Publish(PublishArgs),
    /// Print the messages on topics matching PATTERN until interrupted (`*` matches
    /// one segment, `**` any rest).
    Subscribe(SubscribeArgs),
    /// Print the retained entries whose topic matches PATTERN.
    Get(GetArgs),
    /// Delete the retained value of a topic and key formation-wide (subscribers see
    /// `<deleted>`).
    Delete(DeleteArgs),
    /// Create a formation authority, and issue and revoke member certificates (on the
    /// authority's machine, not on the devices).
    Authority(AuthorityArgs),
    /// Hand a revocation (from `authority revoke`) to the running sidecar: it closes its
    /// connections to the revoked node and spreads the revocation to every node.
    Revoke(RevokeFileArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Settings of `peat-sidecar run`.
///
/// The fields are in the order of `run --help`: each `help_heading` group together.
/// `-h` prints each option's first line, `--help` all of it.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Directory that holds the identity key (`secret.key`, mode 0600) and the
    /// retained data.
    #[arg(
        long,
        value_name = "DIR",
        env = "PEAT_SIDECAR_DATA_DIR",
        default_value = "/var/lib/peat-sidecar",
        help_heading = "Identity and API"
    )]
    pub data_dir: PathBuf,

    /// Formation name: only peers with the same app id are connected.
    #[arg(long, value_name = "ID", env = "PEAT_SIDECAR_APP_ID", default_value = DEFAULT_APP_ID, value_parser = parse_app_id, help_heading = "Identity and API")]
    pub app_id: String,

    /// File holding the formation's shared key: 32 bytes, raw or base64.
    #[arg(
        long,
        value_name = "FILE",
        env = "PEAT_SIDECAR_SHARED_KEY_FILE",
        conflicts_with = "shared_key",
        help_heading = "Identity and API"
    )]
    pub shared_key_file: Option<PathBuf>,

    /// The formation's shared key as base64 of 32 bytes.
    ///
    /// Prefer --shared-key-file: environment variables show up in /proc.
    #[arg(long, value_name = "KEY", env = "PEAT_SIDECAR_SHARED_KEY", hide_env_values = true, value_parser = parse_shared_key, help_heading = "Identity and API")]
    pub shared_key: Option<SharedKey>,

    /// UDP address of the iroh QUIC endpoint.
    ///
    /// Two, one per family, for a dual-stack node: `0.0.0.0:9470,[::]:9470` (same port;
    /// repeat the flag or separate with commas).
    #[arg(long, value_name = "ADDR", env = "PEAT_SIDECAR_BIND", value_delimiter = ',', default_value = DEFAULT_BIND, help_heading = "Identity and API")]
    pub bind: Vec<SocketAddr>,

    /// Where the gRPC API listens: tcp://HOST:PORT or unix:///PATH.
    ///
    /// The API has no authentication: keep it on loopback or a Unix socket (see
    /// --socket-mode, --socket-group), or firewall the port.
    #[arg(long, value_name = "ADDR", env = "PEAT_SIDECAR_LISTEN", default_value = DEFAULT_API, value_parser = parse_listen, help_heading = "Identity and API")]
    pub listen: ListenAddr,

    /// Permission bits of the API's Unix socket (octal).
    #[arg(long, value_name = "MODE", env = "PEAT_SIDECAR_SOCKET_MODE", default_value = "0660", value_parser = parse_mode, help_heading = "Identity and API")]
    pub socket_mode: u32,

    /// Group that owns the API's Unix socket (name or numeric gid).
    ///
    /// Apps in that group can use the API. Default: the daemon's group.
    #[arg(
        long,
        value_name = "GROUP",
        env = "PEAT_SIDECAR_SOCKET_GROUP",
        help_heading = "Identity and API"
    )]
    pub socket_group: Option<String>,

    /// Static peers, ENDPOINT_ID@HOST:PORT, comma-separated or repeated.
    ///
    /// Host names are resolved before each dial; a link-local IPv6 address names its
    /// interface: ID@[fe80::1%eth0]:9470 or %2.
    #[arg(long = "peer", value_name = "ID@HOST:PORT", env = "PEAT_SIDECAR_PEERS", value_delimiter = ',', value_parser = parse_peer_spec, help_heading = "Discovery")]
    pub peers: Vec<PeerSpec>,

    /// Discovery modes, comma-separated: none, mdns, dns, gossip.
    #[arg(
        long,
        value_name = "MODES",
        env = "PEAT_SIDECAR_DISCOVERY_MODE",
        value_delimiter = ',',
        default_value = "none",
        help_heading = "Discovery"
    )]
    pub discovery_mode: Vec<DiscoveryMode>,

    /// Name that dns mode resolves.
    ///
    /// A headless Service name (A/AAAA) or an SRV name (_service._proto.name).
    #[arg(
        long,
        value_name = "NAME",
        env = "PEAT_SIDECAR_DISCOVERY_SERVICE",
        help_heading = "Discovery"
    )]
    pub discovery_service: Option<String>,

    /// Seconds between discovery rounds (dns resolution, gossip exchange).
    #[arg(long, value_name = "SECS", env = "PEAT_SIDECAR_DISCOVERY_INTERVAL", default_value = "30", value_parser = parse_interval, help_heading = "Discovery")]
    pub discovery_interval: Seconds,

    /// Port (UDP) of the dns mode's identity handshake.
    ///
    /// Answered on the IP of --bind and asked on every address the DNS name resolves to
    /// (SRV records may give others).
    #[arg(long, value_name = "PORT", env = "PEAT_SIDECAR_DISCOVERY_PORT", default_value_t = DEFAULT_DISCOVERY_PORT, help_heading = "Discovery")]
    pub discovery_port: u16,

    /// DNS server for dns mode (IP or IP:PORT) instead of /etc/resolv.conf.
    #[arg(
        long,
        value_name = "ADDR",
        env = "PEAT_SIDECAR_DNS_SERVER",
        help_heading = "Discovery"
    )]
    pub dns_server: Option<String>,

    /// Gossip: seconds after which an entry no one refreshed is forgotten.
    ///
    /// Its peer is then reported lost. Must cover the rounds news needs to cross the
    /// formation. Default: 20 x --discovery-interval.
    #[arg(long, value_name = "SECS", env = "PEAT_SIDECAR_GOSSIP_TTL", value_parser = parse_interval, help_heading = "Discovery")]
    pub gossip_ttl: Option<Seconds>,

    /// Gossip: most entries kept in the table that gossip spreads.
    ///
    /// New entries beyond it are ignored until old ones age out.
    #[arg(long, value_name = "N", env = "PEAT_SIDECAR_GOSSIP_MAX_ENTRIES", default_value_t = 1024, value_parser = parse_gossip_max_entries, help_heading = "Discovery")]
    pub gossip_max_entries: usize,

    /// Gossip: largest table message sent or accepted, in bytes (1024-16777216).
    ///
    /// Larger incoming messages are refused whole; outgoing ones carry the freshest
    /// entries.
    #[arg(long, value_name = "BYTES", env = "PEAT_SIDECAR_GOSSIP_MAX_MESSAGE_BYTES", default_value_t = 262_144, value_parser = parse_gossip_max_message, help_heading = "Discovery")]
    pub gossip_max_message_bytes: usize,

    /// Gossip: connected peers this node exchanges tables with each round.
    ///
    /// Besides every new connection, which always gets one.
    #[arg(long, value_name = "N", env = "PEAT_SIDECAR_GOSSIP_FANOUT", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64), help_heading = "Discovery")]
    pub gossip_fanout: u16,

    /// Interfaces mdns may use: comma-separated names or globs, `!` denies.
    ///
    /// For example `wlan*,!wlan9`. Default: every multicast-capable interface.
    #[arg(
        long,
        value_name = "NAMES",
        env = "PEAT_SIDECAR_MDNS_INTERFACES",
        value_delimiter = ',',
        help_heading = "mDNS"
    )]
    pub mdns_interfaces: Vec<String>,

    /// Also announce and browse on loopback, for several sidecars on one host.
    ///
    /// The variable takes 1/0, yes/no, on/off, true/false.
    #[arg(long, env = "PEAT_SIDECAR_MDNS_LOOPBACK", value_parser = clap::builder::BoolishValueParser::new(), help_heading = "mDNS")]
    pub mdns_loopback: bool,

    /// Interval of the liveness beacon in milliseconds; 0 turns beacons off.
    ///
    /// One small UDP multicast per node on UDP 9472. A connected peer silent for two
    /// intervals is probed on its connection and closed if it does not answer. 0 turns
    /// beacons and probes off: then only --keep-alive-ms / --idle-timeout-ms notice a
    /// crash.
    #[arg(long, value_name = "MS", env = "PEAT_SIDECAR_BEACON_INTERVAL_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(0..=60_000), help_heading = "Liveness and QUIC timers")]
    pub beacon_interval_ms: u64,

    /// QUIC keep-alive interval in milliseconds.
    ///
    /// A backstop: crashes are found by beacons and probes (--beacon-interval-ms), so
    /// connections stay quiet by default.
    #[arg(long, value_name = "MS", env = "PEAT_SIDECAR_KEEP_ALIVE_MS", default_value_t = 120_000, value_parser = clap::value_parser!(u64).range(100..=600_000), help_heading = "Liveness and QUIC timers")]
    pub keep_alive_ms: u64,

    /// QUIC idle timeout in milliseconds: a peer silent this long counts as gone.
    ///
    /// At least 1000 and at least three --keep-alive-ms.
    #[arg(long, value_name = "MS", env = "PEAT_SIDECAR_IDLE_TIMEOUT_MS", default_value_t = 360_000, value_parser = clap::value_parser!(u64).range(500..=1_800_000), help_heading = "Liveness and QUIC timers")]
    pub idle_timeout_ms: u64,

    /// Largest message payload accepted from apps and peers, in bytes (1-16777216).
    #[arg(long, value_name = "BYTES", env = "PEAT_SIDECAR_MAX_MESSAGE_BYTES", default_value_t = 262_144, value_parser = clap::value_parser!(u64).range(1..=16_777_216), help_heading = "Data plane")]
    pub max_message_bytes: u64,

    /// Most bytes of retained entries kept (memory and disk).
    ///
    /// Beyond it expired entries go first, then the oldest written. At least
    /// --max-message-bytes plus 1024.
    #[arg(long, value_name = "BYTES", env = "PEAT_SIDECAR_MAX_RETAINED_BYTES", default_value_t = 64 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..), help_heading = "Data plane")]
    pub max_retained_bytes: u64,

    /// Seconds between anti-entropy rounds.
    ///
    /// A round sends the retained-state digest only to peers that have not seen the
    /// current one, so an idle formation stays quiet.
    #[arg(long, value_name = "SECS", env = "PEAT_SIDECAR_DATA_SYNC_INTERVAL", default_value = "10", value_parser = parse_interval, help_heading = "Data plane")]
    pub data_sync_interval: Seconds,

    /// Most messages per second the local apps may publish together.
    ///
    /// A token bucket, bursts up to one second's worth; beyond it Publish answers
    /// RESOURCE_EXHAUSTED.
    #[arg(long, value_name = "N", env = "PEAT_SIDECAR_MAX_PUBLISH_RATE", default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000), help_heading = "Data plane")]
    pub max_publish_rate: u32,

    /// Most messages per second one local app may publish.
    ///
    /// An app is a process on the Unix socket, or one TCP connection. Set it below
    /// --max-publish-rate so that one noisy app leaves room for the others. Beyond it
    /// Publish answers RESOURCE_EXHAUSTED.
    #[arg(long, value_name = "N", env = "PEAT_SIDECAR_MAX_APP_PUBLISH_RATE", default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000), help_heading = "Data plane")]
    pub max_app_publish_rate: u32,

    /// Most messages per second taken from one peer.
    ///
    /// A token bucket; the excess is dropped and counted as rejected.
    #[arg(long, value_name = "N", env = "PEAT_SIDECAR_MAX_PEER_RATE", default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000), help_heading = "Data plane")]
    pub max_peer_rate: u32,

    /// A topic pattern's priority class on the links: PATTERN=CLASS (repeatable).
    ///
    /// CLASS is urgent, normal or bulk; the first pattern a topic matches names the
    /// class of its messages, published here or forwarded, unless the publisher names
    /// one. Others are normal. A link sends the highest class first; a full link queue
    /// drops bulk first. Example: --priority 'alerts/**=urgent' --priority 'logs/**=bulk'.
    #[arg(
        long = "priority",
        value_name = "PATTERN=CLASS",
        env = "PEAT_SIDECAR_PRIORITY",
        value_delimiter = ',',
        help_heading = "Data plane"
    )]
    pub priority: Vec<String>,

    /// Topics whose links carry only the newest message per key (repeatable).
    ///
    /// A message still queued on a link for the same topic and key is replaced by the
    /// newer one, so a congested link carries fresh state, not a backlog.
    #[arg(
        long = "latest-value",
        value_name = "PATTERN",
        env = "PEAT_SIDECAR_LATEST_VALUE",
        value_delimiter = ',',
        help_heading = "Data plane"
    )]
    pub latest_value: Vec<String>,

    /// Most bits per second the data plane sends on each peer link; 0 means no cap.
    ///
    /// Paces frames plus an estimate of the packet headers (docs/DESIGN.md, "Thin
    /// links"). Set it to this node's share of a radio's rate.
    #[arg(
        long,
        value_name = "BITS_PER_SECOND",
        env = "PEAT_SIDECAR_LINK_RATE",
        default_value_t = 0,
        help_heading = "Data plane"
    )]
    pub link_rate: u64,
    /// Messages that come from a node other than their publisher (forwarded across a
    /// bridge, or retained entries from anti-entropy) must carry the publisher's
    /// signature: strict refuses unsigned ones, permissive takes them.
    ///
    /// Use permissive only while a bridged formation is upgraded from a version that
    /// did not sign (see docs/OPERATIONS.md); a wrong signature is refused in both.
    #[arg(long, value_name = "MODE", env = "PEAT_SIDECAR_ORIGIN_CHECK", value_enum, default_value_t = crate::data::origin::OriginCheck::Strict, help_heading = "Data plane")]
    pub origin_check: crate::data::origin::OriginCheck,

    /// Most connections kept open; 0 means no limit.
    #[arg(
        long,
        value_name = "N",
        env = "PEAT_SIDECAR_MAX_PEERS",
        default_value_t = 0,
        help_heading = "Limits"
    )]
    pub max_peers: usize,

    /// Most peers tracked in the peer table (discovered, backing off or connected).
    ///
    /// Peers beyond it are dropped, oldest unconnected first.
    #[arg(
        long,
        value_name = "N",
        env = "PEAT_SIDECAR_MAX_KNOWN_PEERS",
        default_value_t = 1024,
        help_heading = "Limits"
    )]
    pub max_known_peers: usize,

    /// Most dials in flight at once.
    #[arg(
        long,
        value_name = "N",
        env = "PEAT_SIDECAR_MAX_CONCURRENT_DIALS",
        default_value_t = 32,
        help_heading = "Limits"
    )]
    pub max_concurrent_dials: usize,

    /// Most dials started per second.
    ///
    /// A token bucket: bursts up to this many. Bounds the traffic a flood of fake
    /// announcements can make this node send.
    #[arg(long, value_name = "N", env = "PEAT_SIDECAR_MAX_DIALS_PER_SEC", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000), help_heading = "Limits")]
    pub max_dials_per_sec: u32,

    /// Most formation checks of incoming connections running at once.
    ///
    /// Beyond it, new connections are refused before the handshake, so that a flood of
    /// connection attempts cannot exhaust memory.
    #[arg(long, value_name = "N", env = "PEAT_SIDECAR_MAX_PENDING_HANDSHAKES", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096), help_heading = "Limits")]
    pub max_pending_handshakes: u32,

    /// Serve Prometheus/OpenMetrics metrics on http://ADDR/metrics.
    ///
    /// For example tcp://127.0.0.1:9464. Off unless given.
    #[arg(long, value_name = "ADDR", env = "PEAT_SIDECAR_METRICS_LISTEN", value_parser = parse_metrics_listen, help_heading = "Operations")]
    pub metrics_listen: Option<SocketAddr>,

    /// Threads that run the sidecar's tasks (QUIC, gRPC API, data plane), 1-64.
    ///
    /// One thread hands each message from task to task without waking another thread,
    /// which measured faster than one per core on a 2-core host (docs/PERFORMANCE.md);
    /// more can help a host that moves many large messages to many subscribers at once.
    #[arg(long, value_name = "N", env = "PEAT_SIDECAR_WORKER_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64), help_heading = "Operations")]
    pub worker_threads: u16,

    /// Log format; the level comes from RUST_LOG (default `info`).
    #[arg(long, value_name = "FORMAT", env = "PEAT_SIDECAR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, help_heading = "Operations")]
    pub log_format: LogFormat,

    /// Member certificates (`--authority-key`, `--member-cert`, ...).
    #[command(flatten)]
    pub trust: TrustArgs,

    /// The operator's page (`--web-listen`).
    #[command(flatten)]
    pub web: WebArgs,

    /// Which values came from the environment (filled by `settings::parse_cli`).
    #[arg(skip)]
    pub origins: Origins,
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

#[derive(Debug, Args, Clone)]
pub struct PublishArgs {
    /// Topic: `/`-separated segments, for example tracks/blue-2.
    pub topic: String,

    /// The payload; `-` reads it from standard input; none publishes an empty payload.
    pub value: Option<String>,

    /// Key within the topic (retained state keeps the latest value per topic and key).
    #[arg(long)]
    pub key: Option<String>,

    /// Keep the value formation-wide as the topic and key's retained state.
    #[arg(long)]
    pub retain: bool,

    /// Seconds after which the retained value is dropped everywhere; needs --retain.
    ///
    /// Only retained values expire: a live message is delivered once and never stored,
    /// so --ttl without --retain is refused. Without --ttl a retained value stays until
    /// it is replaced or deleted.
    #[arg(long, value_name = "SECS", allow_negative_numbers = true, value_parser = parse_ttl)]
    pub ttl: Option<u64>,

    /// The message's class on every link: urgent, normal or bulk.
    ///
    /// A link sends the highest class waiting first, and a full link queue drops bulk
    /// messages first. Without it, the sidecar's --priority default for the topic.
    #[arg(long, value_name = "CLASS")]
    pub priority: Option<Class>,

    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args, Clone)]
pub struct SubscribeArgs {
    /// Topic pattern: `*` matches one segment, a last `**` any rest.
    pub pattern: String,

    /// First print the retained entries that match, then live messages.
    #[arg(long)]
    pub retained: bool,

    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args, Clone)]
pub struct DeleteArgs {
    /// Topic of the retained value, for example tracks/blue-2.
    pub topic: String,

    /// Key within the topic (none: the topic's value without a key).
    #[arg(long)]
    pub key: Option<String>,

    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args, Clone)]
pub struct GetArgs {
    /// Topic pattern: `*` matches one segment, a last `**` any rest.
    pub pattern: String,

    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args, Clone)]
pub struct RevokeFileArgs {
    /// The revocation file, as `peat-sidecar authority revoke` wrote it.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    #[command(flatten)]
    pub client: ClientArgs,
}

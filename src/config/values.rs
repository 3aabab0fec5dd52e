//! The value types of the command line (intervals, keys, peers, listen addresses) and
//! their parsers, which clap calls one value at a time.

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use iroh::EndpointId;

use super::{DEFAULT_API, DEFAULT_IROH_PORT, MAX_APP_ID_LEN};
use crate::api::idprefix::PeerRef;

/// A whole number of seconds above zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub u64);

impl Seconds {
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

pub(crate) fn parse_interval(s: &str) -> Result<Seconds, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("must be above 0 seconds".into()),
        Ok(n) if n > 86_400 => Err("must be at most 86400 seconds (one day)".into()),
        Ok(n) => Ok(Seconds(n)),
        Err(_) => Err(format!("`{s}` is not a whole number of seconds")),
    }
}

/// `publish --ttl`: whole seconds from 1 to ten years (the wire's bound); negative
/// numbers reach this parser (`allow_negative_numbers`) so that they get this message
/// rather than clap's advice to write `-- -1`.
pub(crate) fn parse_ttl(s: &str) -> Result<u64, String> {
    const MAX: u64 = crate::data::wire::MAX_TTL_MS / 1000;
    match s.trim().parse::<i128>() {
        Ok(n) if n >= 1 && n <= i128::from(MAX) => Ok(n as u64),
        Ok(n) if n < 1 => Err(format!(
            "the ttl is {n} s; it must be 1 or more seconds (leave --ttl out for a value that never expires)"
        )),
        Ok(_) => Err(format!("must be at most {MAX} seconds (ten years)")),
        Err(_) => Err(format!("`{s}` is not a whole number of seconds")),
    }
}

pub(crate) fn parse_gossip_max_entries(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{s}` is not a number of entries from 1 to 1000000"
        )),
    }
}

pub(crate) fn parse_gossip_max_message(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1024..=16 << 20).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{s}` is not a size in bytes from 1024 to 16777216 (16 MiB)"
        )),
    }
}

pub(crate) fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.trim().trim_start_matches("0o");
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("`{s}` is not an octal file mode such as 0660"))
}

pub(crate) fn parse_app_id(s: &str) -> Result<String, String> {
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

pub(crate) fn parse_shared_key(s: &str) -> Result<SharedKey, String> {
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
            PeerHost::Addr(a) => f.write_str(&crate::scoped::display(a)),
            PeerHost::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl FromStr for PeerHost {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(addr) = s.parse::<SocketAddr>() {
            crate::scoped::check_scope(&addr)?;
            return Ok(PeerHost::Addr(addr));
        }
        if let Some(addr) = crate::scoped::parse_named_zone(s) {
            let addr = addr?;
            crate::scoped::check_scope(&addr)?;
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

/// The argument of `peat-sidecar connect`: an id with or without an address. The
/// address is checked here and sent as written: the sidecar parses it again, and an
/// interface name in it (`[fe80::1%eth0]:9470`) is the sidecar host's, not ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTarget {
    pub id: PeerRef,
    pub host: Option<String>,
}

pub(crate) fn parse_connect_target(s: &str) -> Result<ConnectTarget, String> {
    match s.trim().split_once('@') {
        Some((id, host)) => Ok(ConnectTarget {
            id: id.parse()?,
            host: Some(check_connect_host(host.trim())?),
        }),
        None => Ok(ConnectTarget {
            id: s.parse()?,
            host: None,
        }),
    }
}

fn check_connect_host(host: &str) -> Result<String, String> {
    match crate::scoped::split_named_zone(host) {
        Some(parts) => parts.map(|_| host.to_string()),
        None => host.parse::<PeerHost>().map(|_| host.to_string()),
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
pub(crate) fn parse_metrics_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let addr = s.strip_prefix("tcp://").unwrap_or(s);
    addr.parse().map_err(|_| {
        format!("`{s}` is not tcp://IP:PORT; expected for example tcp://127.0.0.1:9464")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cli;
    use clap::Parser;

    const ID: &str = "ae58ff8833241ac82d6ff7611046ed67b5072d142c588d0063e942d9a75502b6";

    #[test]
    fn ttl_takes_whole_positive_seconds_and_names_the_problem() {
        assert_eq!(parse_ttl("5"), Ok(5));
        assert_eq!(parse_ttl("315360000"), Ok(315_360_000));
        let e = parse_ttl("-1").unwrap_err();
        assert!(
            e.contains("1 or more seconds") && !e.contains("-- -1"),
            "{e}"
        );
        assert!(parse_ttl("0").unwrap_err().contains("1 or more"));
        assert!(parse_ttl("315360001").unwrap_err().contains("ten years"));
        assert!(parse_ttl("1.5").unwrap_err().contains("whole number"));
    }

    #[test]
    fn publish_ttl_is_parsed_as_a_value() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["peat-sidecar", "publish", "t"].iter().chain(args))
        };
        let e = parse(&["--retain", "--ttl", "-1"]).unwrap_err().to_string();
        assert!(
            e.contains("--ttl") && e.contains("1 or more seconds"),
            "{e}"
        );
        assert!(!e.contains("'-- -1'"), "{e}");
        assert!(parse(&["--retain", "--ttl", "5"]).is_ok());
    }

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
    fn peer_spec_with_scoped_link_local() {
        let p = parse_peer_spec(&format!("{ID}@[fe80::1%2]:9470")).unwrap();
        assert_eq!(p.host, PeerHost::Addr("[fe80::1%2]:9470".parse().unwrap()));
        let lo = crate::scoped::zone_index("lo").unwrap();
        let p = parse_peer_spec(&format!("{ID}@[fe80::1%lo]:9470")).unwrap();
        let want = std::net::SocketAddrV6::new("fe80::1".parse().unwrap(), 9470, 0, lo);
        assert_eq!(p.host, PeerHost::Addr(SocketAddr::V6(want)));
        assert_eq!(p.to_string(), format!("{ID}@[fe80::1%lo]:9470"));
        let e = parse_peer_spec(&format!("{ID}@[fe80::1%nosuch0]:9470")).unwrap_err();
        assert!(e.contains("no such interface"), "{e}");
        let e = parse_peer_spec(&format!("{ID}@[fd00::1%lo]:9470")).unwrap_err();
        assert!(e.contains("link-local"), "{e}");
        let t = parse_connect_target(&format!("{ID}@[fe80::1%nosuch0]:9470")).unwrap();
        assert_eq!(t.host.as_deref(), Some("[fe80::1%nosuch0]:9470"));
        assert!(parse_connect_target(&format!("{ID}@[fd00::1%2]:9470")).is_err());
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

//! The value types of the command line (intervals, keys, peers, listen addresses) and
//! their parsers, which clap calls one value at a time.

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use iroh::EndpointId;

use super::DEFAULT_API;
pub(crate) use crate::node::values::parse_shared_key;
pub use crate::node::values::{
    parse_endpoint_id, parse_peer_spec, PeerHost, PeerSpec, SharedKey, DEFAULT_IROH_PORT,
    MAX_APP_ID_LEN,
};

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

/// Shortest prefix accepted: 8 hex characters leave 1 in 4 billion odds of a clash.
pub const MIN_PREFIX: usize = 8;

/// An id given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerRef {
    Full(EndpointId),
    /// Lowercase hex, [`MIN_PREFIX`] to 63 characters.
    Prefix(String),
}

impl fmt::Display for PeerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerRef::Full(id) => write!(f, "{id}"),
            PeerRef::Prefix(p) => f.write_str(p),
        }
    }
}

impl FromStr for PeerRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let hex = !t.is_empty() && t.chars().all(|c| c.is_ascii_hexdigit());
        match t.len() {
            n if hex && n < MIN_PREFIX => Err(format!(
                "`{t}` is too short: give at least {MIN_PREFIX} hex characters of the endpoint id (as in `peat-sidecar peers`) or all 64"
            )),
            n if hex && n < 64 => Ok(PeerRef::Prefix(t.to_ascii_lowercase())),
            _ => parse_endpoint_id(t).map(PeerRef::Full),
        }
    }
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

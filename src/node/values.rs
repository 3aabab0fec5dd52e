//! The node's value types as the command line and the API give them (the formation's
//! shared key, endpoint ids, peers and their addresses) with their parsers. They live
//! here, beside their user, so that `config` and `api` import them from the node and the
//! node imports nothing from either.

use std::{fmt, net::SocketAddr, str::FromStr};

use iroh::EndpointId;

/// UDP port of the iroh endpoint unless `--bind` says otherwise.
pub const DEFAULT_IROH_PORT: u16 = 9470;
/// Longest app id (`--app-id`), in bytes; the formation check and both discovery wires
/// bound it the same way.
pub const MAX_APP_ID_LEN: usize = 64;

/// The formation's 32-byte shared key. Its `Debug` hides the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedKey(pub [u8; 32]);

impl fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedKey(..)")
    }
}

impl SharedKey {
    /// Largest shared key file read: base64 of 32 bytes is 44 characters a line, and a
    /// key ring has a few (see [`SharedKey::ring_from_file_bytes`]).
    pub const MAX_FILE_LEN: usize = 1024;
    /// Most keys in a key ring file.
    pub const MAX_RING: usize = 8;

    /// A key file holds either the 32 raw bytes or their base64 (a trailing newline is
    /// fine): `head -c 32 /dev/urandom > key` and `... | base64 > key` both work.
    pub fn from_file_bytes(raw: &[u8]) -> Option<Self> {
        if let Ok(bytes) = <[u8; 32]>::try_from(raw) {
            return Some(SharedKey(bytes));
        }
        let text = std::str::from_utf8(raw).ok()?;
        parse_shared_key(text.trim()).ok()
    }

    /// A key ring file: the 32 raw bytes, or one base64 key per line (blank lines and
    /// `#` comments skipped). The first key is the one this node dials with; every key
    /// is accepted from peers, so that a formation can change its key without downtime
    /// (docs/OPERATIONS.md, "Rotate the shared key"). `None` if any line is not a key,
    /// or there are none, or more than [`SharedKey::MAX_RING`].
    pub fn ring_from_file_bytes(raw: &[u8]) -> Option<Vec<Self>> {
        if let Some(k) = Self::from_file_bytes(raw) {
            return Some(vec![k]);
        }
        let text = std::str::from_utf8(raw).ok()?;
        let ring: Vec<Self> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| parse_shared_key(l).ok())
            .collect::<Option<_>>()?;
        (!ring.is_empty() && ring.len() <= Self::MAX_RING).then_some(ring)
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
    fn a_key_ring_is_one_base64_key_a_line_the_first_dials() {
        use base64::Engine;
        let b64 = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
        let text = format!("# new key, in use\n{}\n\n{}\n", b64(2), b64(1));
        let ring = SharedKey::ring_from_file_bytes(text.as_bytes()).unwrap();
        assert_eq!(ring, [SharedKey([2; 32]), SharedKey([1; 32])]);
        // One key, raw: a ring of one.
        assert_eq!(SharedKey::ring_from_file_bytes(&[5; 32]).unwrap().len(), 1);
        let junk = format!("{}\nnot a key\n", b64(1));
        assert!(SharedKey::ring_from_file_bytes(junk.as_bytes()).is_none());
        assert!(SharedKey::ring_from_file_bytes(b"# only a comment\n").is_none());
        let nine: String = (0..9).map(|b| b64(b) + "\n").collect();
        assert!(SharedKey::ring_from_file_bytes(nine.as_bytes()).is_none());
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
}

//! Endpoint ids as operators type them: the whole id, or a unique prefix of at least
//! [`MIN_PREFIX`] hex characters (the peers table shows 16), resolved through ListPeers.

use std::{fmt, str::FromStr};

use iroh::EndpointId;

use super::pb;
use crate::config::parse_endpoint_id;

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

#[derive(Debug, thiserror::Error)]
pub enum IdError {
    #[error("no peer known to the sidecar has an id starting with {0} (`peat-sidecar peers` lists them; give the whole id for a peer it does not know yet)")]
    NoMatch(String),
    #[error("{prefix} matches {} peers: {}; give more characters", .matches.len(), .matches.join(", "))]
    Ambiguous {
        prefix: String,
        matches: Vec<String>,
    },
}

impl PeerRef {
    /// The whole id: `self` if it is one, else the one known peer whose id starts with
    /// the prefix.
    pub fn resolve(&self, peers: &[pb::Peer]) -> Result<String, IdError> {
        let prefix = match self {
            PeerRef::Full(id) => return Ok(id.to_string()),
            PeerRef::Prefix(p) => p,
        };
        let mut matches: Vec<String> = peers
            .iter()
            .filter(|p| p.endpoint_id.starts_with(prefix.as_str()))
            .map(|p| p.endpoint_id.clone())
            .collect();
        match matches.len() {
            0 => Err(IdError::NoMatch(prefix.clone())),
            1 => Ok(matches.remove(0)),
            _ => Err(IdError::Ambiguous {
                prefix: prefix.clone(),
                matches,
            }),
        }
    }

    pub fn is_full(&self) -> bool {
        matches!(self, PeerRef::Full(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "ae58ff8833241ac82d6ff7611046ed67b5072d142c588d0063e942d9a75502b6";

    fn peer(id: &str) -> pb::Peer {
        pb::Peer {
            endpoint_id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn forms() {
        assert!(matches!(ID.parse::<PeerRef>(), Ok(PeerRef::Full(_))));
        assert_eq!(
            "AE58FF88".parse::<PeerRef>().unwrap(),
            PeerRef::Prefix("ae58ff88".into())
        );
        assert!("ae58ff8"
            .parse::<PeerRef>()
            .unwrap_err()
            .contains("at least 8"));
        assert!("not-hex!".parse::<PeerRef>().is_err());
    }

    #[test]
    fn resolves_unique_prefix_only() {
        let other = format!("ae58ff88ff{}", &ID[10..]);
        let peers = [peer(ID), peer(&other)];
        let r: PeerRef = ID[..16].parse().unwrap();
        assert_eq!(r.resolve(&peers).unwrap(), ID);
        let r: PeerRef = ID[..8].parse().unwrap();
        let err = r.resolve(&peers).unwrap_err().to_string();
        assert!(err.contains(ID) && err.contains(&other), "{err}");
        let r: PeerRef = "0123456789".parse().unwrap();
        assert!(matches!(r.resolve(&peers), Err(IdError::NoMatch(_))));
    }
}

//! Endpoint ids as operators type them: the whole id, or a unique prefix of at least
//! [`MIN_PREFIX`] hex characters (the peers table shows 16), resolved through ListPeers.

use super::pb;
pub use crate::config::{PeerRef, MIN_PREFIX};

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

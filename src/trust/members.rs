//! The member directory: the publish rights of members this node is not connected to,
//! learned from the certificates the formation spreads (the data plane's system topic
//! `_peat/members`). With signed origins a relayed message's publisher is proven, and
//! with this its rights can be checked too, where before only a message straight from
//! its publisher could be.

use std::{collections::HashMap, sync::Arc, time::Duration};

use super::MemberCert;

/// Most members remembered: a certificate beyond it is not learned (its holder's
/// relayed messages go unchecked for rights, as before the directory, and its direct
/// neighbours still check them).
pub const MAX_MEMBERS: usize = 65_536;

#[derive(Debug)]
struct Member {
    /// Unix seconds from which the certificate no longer counts (skew included).
    end: u64,
    serial: u64,
    publish: Arc<Vec<String>>,
}

#[derive(Debug, Default)]
pub struct Members {
    by_id: HashMap<[u8; 32], Member>,
}

impl Members {
    /// Records `cert` (already verified: signature, shape) if it is valid at `now` and
    /// not older than the one held for its member. True if it changed what is held.
    pub fn learn(&mut self, cert: &MemberCert, now: u64, skew: Duration) -> bool {
        if cert.check_time(now, skew).is_err() {
            return false;
        }
        let id = *cert.endpoint_id.as_bytes();
        if self.by_id.get(&id).is_some_and(|m| m.serial >= cert.serial) {
            return false;
        }
        if !self.by_id.contains_key(&id) && self.by_id.len() >= MAX_MEMBERS {
            self.by_id.retain(|_, m| m.end > now);
            if self.by_id.len() >= MAX_MEMBERS {
                return false;
            }
        }
        let m = Member {
            end: cert.not_after.saturating_add(skew.as_secs() + 1),
            serial: cert.serial,
            publish: Arc::new(cert.publish.clone()),
        };
        self.by_id.insert(id, m);
        true
    }

    /// The publish patterns of `id`'s certificate, if one is held and still counts.
    pub fn publish_rights(&self, id: &[u8; 32], now: u64) -> Option<Arc<Vec<String>>> {
        self.by_id
            .get(id)
            .filter(|m| m.end > now)
            .map(|m| m.publish.clone())
    }
}

#[cfg(test)]
mod tests {
    use iroh::SecretKey;

    use super::*;
    use crate::trust::KeyId;

    fn cert(serial: u64, publish: &str, not_after: u64) -> MemberCert {
        MemberCert {
            endpoint_id: SecretKey::from_bytes(&[4; 32]).public(),
            name: "n".into(),
            publish: vec![publish.into()],
            subscribe: vec![],
            not_before: 0,
            not_after,
            serial,
            authority: KeyId([0; 8]),
        }
    }

    const SKEW: Duration = Duration::from_secs(10);

    #[test]
    fn a_newer_certificate_replaces_an_older_one_never_the_reverse() {
        let mut m = Members::default();
        let c2 = cert(2, "b/**", 1000);
        let id = *c2.endpoint_id.as_bytes();
        assert!(m.learn(&c2, 100, SKEW));
        assert!(!m.learn(&cert(1, "a/**", 1000), 100, SKEW));
        assert_eq!(*m.publish_rights(&id, 100).unwrap(), ["b/**"]);
        assert!(m.learn(&cert(3, "c/**", 1000), 100, SKEW));
        assert_eq!(*m.publish_rights(&id, 100).unwrap(), ["c/**"]);
    }

    #[test]
    fn an_ended_certificate_is_neither_learned_nor_used() {
        let mut m = Members::default();
        assert!(!m.learn(&cert(1, "a/**", 50), 100, SKEW));
        let c = cert(2, "a/**", 1000);
        assert!(m.learn(&c, 100, SKEW));
        let id = *c.endpoint_id.as_bytes();
        assert!(m.publish_rights(&id, 1010).is_some());
        assert!(m.publish_rights(&id, 1011).is_none());
    }
}

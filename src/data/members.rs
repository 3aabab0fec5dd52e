//! The member directory on the data plane: each node publishes its own member
//! certificate as a retained entry of [`MEMBERS`], keyed by its endpoint id, and learns
//! everyone else's into its trust store (`trust/members.rs`). The data plane carries it
//! where retained state goes: to every node, across bridges, and by anti-entropy to
//! nodes that were away. So a node can check a message relayed by another against its
//! publisher's rights, not only one that came straight from its publisher.
//!
//! An entry is admitted only if the authority signed its certificate, the certificate
//! names the entry's key, and the entry's publisher is that member (its signature, as
//! every retained entry's, is checked by `origin.rs`): nobody else can publish, replace
//! or delete a member's entry. It expires when the certificate ends.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{DataPlane, Event, Message, Publish};
use crate::trust::{store::TrustStore, unix_now, AuthorityKey, MemberCert, TrustError};

/// Members' certificates, keyed by endpoint id (hex), each published by its member.
pub const MEMBERS: &str = "_peat/members";
/// How often a node looks whether its certificate file changed (then it publishes the
/// new one; connections pick it up at once, see `trust/store.rs`).
const OWN_CHECK: Duration = Duration::from_secs(30);

/// The certificate `m` carries, if `m` is a valid entry of [`MEMBERS`].
pub fn verify_entry(m: &Message, authority: &AuthorityKey) -> Result<MemberCert, TrustError> {
    if m.topic != MEMBERS || !m.retain || m.tombstone {
        return Err(TrustError::Malformed("not a member entry"));
    }
    let cert = MemberCert::decode_verified(&m.payload, authority)?;
    if m.key != cert.endpoint_id.to_string() || m.publisher != *cert.endpoint_id.as_bytes() {
        return Err(TrustError::Malformed("member entry of another node"));
    }
    Ok(cert)
}

/// The entry for our certificate `bytes`, which ends at `not_after`.
fn own_entry(trust: &TrustStore, bytes: Vec<u8>, not_after: u64) -> Publish {
    let ttl_secs = not_after.saturating_sub(unix_now()).max(60);
    Publish {
        topic: MEMBERS.to_string(),
        key: trust.me().to_string(),
        payload: bytes.into(),
        retain: true,
        ttl_secs: ttl_secs.min(super::wire::MAX_TTL_MS / 1000),
        ..Default::default()
    }
}

/// Publishes our certificate when it is not in the retained store as it is now.
async fn publish_own(data: &DataPlane, trust: &TrustStore) {
    let bytes = trust.own_cert();
    let key = trust.me().to_string();
    let held = data.get(MEMBERS).unwrap_or_default();
    if held.iter().any(|m| m.key == key && m.payload == bytes) {
        return;
    }
    let entry = own_entry(trust, bytes, trust.own_cert_end());
    match data.send(entry, false).await {
        Ok(_) => info!("our member certificate published to the formation's directory"),
        Err(e) => warn!(error = %e, "could not publish our member certificate"),
    }
}

fn learn_all(data: &DataPlane, trust: &TrustStore, authority: &AuthorityKey) {
    for m in data.get(MEMBERS).unwrap_or_default() {
        learn(trust, authority, &m);
    }
}

fn learn(trust: &TrustStore, authority: &AuthorityKey, m: &Message) {
    match verify_entry(m, authority) {
        Ok(cert) => {
            if trust.learn_member(&cert) {
                debug!(member = %cert.endpoint_id, name = %cert.name, serial = cert.serial, "member certificate learned");
            }
        }
        Err(e) => debug!(error = %e, "entry on the members topic ignored"),
    }
}

/// Publishes our certificate (again whenever its file changes) and learns every
/// member's, until `stop`.
pub async fn watch_members(data: DataPlane, trust: Arc<TrustStore>, stop: CancellationToken) {
    let authority = *trust.authority();
    // Subscribe before reading the store, so that nothing falls between the two.
    let Ok(mut sub) = data.subscribe(MEMBERS) else {
        return;
    };
    publish_own(&data, &trust).await;
    learn_all(&data, &trust, &authority);
    let mut check = tokio::time::interval(OWN_CHECK);
    check.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = check.tick() => publish_own(&data, &trust).await,
            e = sub.next() => match e {
                Some(Event::Message(m)) => learn(&trust, &authority, &m),
                // Missed entries are in the retained store: read it again.
                Some(Event::Missed(_)) => learn_all(&data, &trust, &authority),
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use iroh::SecretKey;

    use super::*;

    /// A certificate for `member` signed by `authority`, and its entry.
    fn entry(authority: &SecretKey, member: &SecretKey) -> Message {
        let cert = MemberCert {
            endpoint_id: member.public(),
            name: "m".into(),
            publish: vec!["tracks/**".into()],
            subscribe: vec![],
            not_before: 0,
            not_after: u64::from(u32::MAX),
            serial: 1,
            authority: AuthorityKey(authority.public()).id(),
        };
        Message {
            publisher: *member.public().as_bytes(),
            seq: 1,
            hlc: 1,
            hops: 0,
            topic: MEMBERS.into(),
            key: member.public().to_string(),
            payload: cert.sign(authority).into(),
            retain: true,
            ttl_ms: 0,
            tombstone: false,
            sig: None,
        }
    }

    #[test]
    fn only_a_members_own_verified_certificate_is_an_entry() {
        let (authority, member) = (SecretKey::generate(), SecretKey::generate());
        let key = AuthorityKey(authority.public());
        let good = entry(&authority, &member);
        let cert = verify_entry(&good, &key).unwrap();
        assert_eq!(cert.endpoint_id, member.public());
        let mut by_other = good.clone();
        by_other.publisher = [9; 32];
        assert!(
            verify_entry(&by_other, &key).is_err(),
            "published by another node"
        );
        let mut other_key = good.clone();
        other_key.key = SecretKey::generate().public().to_string();
        assert!(verify_entry(&other_key, &key).is_err(), "under another key");
        let mut delete = good.clone();
        (delete.tombstone, delete.payload) = (true, bytes::Bytes::new());
        assert!(verify_entry(&delete, &key).is_err(), "a delete");
        let foreign = entry(&SecretKey::generate(), &member);
        assert!(verify_entry(&foreign, &key).is_err(), "another authority");
        let mut live = good;
        live.retain = false;
        assert!(verify_entry(&live, &key).is_err(), "not retained");
    }
}

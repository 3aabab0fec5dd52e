//! Topics the sidecar itself uses, under `_peat/`. Apps may read them but never
//! publish or delete on them, and the data core takes an entry on one from the
//! network only if [`Gate`] admits it, so that a member cannot fill them with junk or
//! overwrite a valid entry.
//!
//! [`MEMBERS`] (`members.rs`) carries each member's certificate, published by the
//! member itself, so that every node knows the rights of publishers it is not
//! connected to.
//!
//! [`REVOCATIONS`]: each key is a revoked endpoint id; the payload is the
//! authority's signed revocation, exactly as `authority revoke` wrote it (binary). The
//! data plane already carries retained state everywhere it must go: live to every
//! connected node, across bridge nodes, by anti-entropy to nodes that were cut off, and
//! on disk across restarts. An entry's TTL ends when the revocation may be pruned
//! (the last expiry of the certificates it voids).

use std::sync::Arc;

use iroh::EndpointId;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    members::{self, MEMBERS},
    wire::Id,
    DataPlane, Event, Message, Pattern, Publish, Published,
};
use crate::{
    node::peers::PeerManagerHandle,
    trust::{store::TrustStore, unix_now, AuthorityKey, Refusal, Revocation, TrustError},
};

/// The prefix of every system topic.
pub const PREFIX: &str = "_peat/";
/// Revocations by the formation's authority, keyed by the endpoint id they void.
pub const REVOCATIONS: &str = "_peat/revocations";

/// Whether apps are kept off `topic`.
pub fn is_reserved(topic: &str) -> bool {
    topic.starts_with(PREFIX) || topic == PREFIX.trim_end_matches('/')
}

/// What the data core admits from the network: nothing from a revoked publisher, and
/// on system topics only what verifies.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    /// Without an authority, nothing on a system topic is admitted.
    authority: Option<AuthorityKey>,
    /// The revocations in force, once the node runs.
    trust: Option<Arc<TrustStore>>,
}

impl Gate {
    pub fn new(authority: Option<AuthorityKey>) -> Self {
        Gate {
            authority,
            trust: None,
        }
    }

    /// Also refuses what revoked publishers wrote, by `trust`'s revocations.
    pub fn with_revocations(mut self, trust: Arc<TrustStore>) -> Self {
        self.trust = Some(trust);
        self
    }

    /// Whether the core may deliver, store and forward `m`, whoever sent it.
    /// On [`REVOCATIONS`]: a retained, verified revocation under its own key, whoever
    /// relays it (the authority's signature is what counts); on [`MEMBERS`], a verified
    /// certificate its own member published. On an app topic: unless its publisher is
    /// revoked or publishes outside the rights of its certificate, where this node
    /// knows it (a peer's from the formation check, another member's from the
    /// directory). Who the publisher is, the link proves or its signature does
    /// (`origin.rs`, checked after this).
    pub fn admits(&self, m: &Message) -> Admission {
        if is_reserved(&m.topic) {
            let verified = match m.topic.as_str() {
                MEMBERS => self.member(m).is_ok(),
                _ => self.revocation(m).is_ok(),
            };
            return match verified {
                true => Admission::Admit,
                false => Admission::SystemTopic,
            };
        }
        let Some(t) = &self.trust else {
            return Admission::Admit;
        };
        if t.is_revoked_now(&m.publisher) {
            return Admission::Revoked;
        }
        match t.publish_rights(&m.publisher) {
            Some(rights) if !allows(&rights, &m.topic) => Admission::OutsideRights,
            _ => Admission::Admit,
        }
    }

    /// Whether a message on `topic` may go to the peer `to`: on a system topic always
    /// (every node needs them); with an authority, only within the subscribe patterns
    /// of the certificate `to` presented in the formation check.
    pub fn may_send(&self, to: &Id, topic: &str) -> bool {
        let Some(t) = &self.trust else { return true };
        if is_reserved(topic) {
            return true;
        }
        t.peer_subscribe_rights(to)
            .is_none_or(|rights| allows(&rights, topic))
    }

    /// Whether [`Gate::may_send`] can refuse anything (with an authority only).
    pub fn limits_sending(&self) -> bool {
        self.trust.is_some()
    }

    /// The certificate a [`MEMBERS`] entry carries, checked as [`Gate::admits`] does.
    pub fn member(&self, m: &Message) -> Result<crate::trust::MemberCert, TrustError> {
        let authority = self
            .authority
            .as_ref()
            .ok_or(TrustError::Malformed("no authority on this node"))?;
        members::verify_entry(m, authority)
    }

    /// The revocation `m` carries, checked as [`Gate::admits`] does.
    pub fn revocation(&self, m: &Message) -> Result<Revocation, TrustError> {
        let authority = self
            .authority
            .as_ref()
            .ok_or(TrustError::Malformed("no authority on this node"))?;
        if m.topic != REVOCATIONS || !m.retain || m.tombstone {
            return Err(TrustError::Malformed("not a revocation entry"));
        }
        let r = Revocation::decode_verified(&m.payload, authority)?;
        if m.key != r.endpoint_id.to_string() {
            return Err(TrustError::Malformed("revocation under another key"));
        }
        Ok(r)
    }
}

/// What [`Gate::admits`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admit,
    /// On a system topic, and not a verified entry.
    SystemTopic,
    /// Its publisher's certificates are revoked.
    Revoked,
    /// On a topic its publisher's certificate does not let it publish.
    OutsideRights,
}

/// Whether one of the topic `patterns` matches `topic`; a pattern that does not parse
/// matches nothing.
pub fn allows(patterns: &[String], topic: &str) -> bool {
    // `**` (every topic) is the common grant: no parse per message for it.
    patterns
        .iter()
        .any(|p| p == "**" || Pattern::parse(p).is_ok_and(|p| p.matches(topic)))
}

/// The retained entry that spreads `r` (its signed bytes are `bytes`).
pub fn revocation_entry(r: &Revocation, bytes: Vec<u8>, now_secs: u64) -> Publish {
    let ttl_secs = match r.prune_after {
        u64::MAX => 0,
        // Already prunable: kept a day, so that nodes that still hold the certificate
        // learn of it (a TTL of 0 would keep it for ever).
        t => t.saturating_sub(now_secs).max(86_400),
    };
    Publish {
        topic: REVOCATIONS.to_string(),
        key: r.endpoint_id.to_string(),
        payload: bytes.into(),
        retain: true,
        ttl_secs: ttl_secs.min(super::wire::MAX_TTL_MS / 1000),
        // A revoked node must lose its links before it can do more harm.
        priority: Some(super::Class::Urgent),
        ..Default::default()
    }
}

/// Why a revocation handed to this node was not spread.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("this node has no authority (--authority-key): it cannot check a revocation")]
    NoAuthority,
    #[error("the revocation does not verify: {0}")]
    Invalid(#[from] TrustError),
    #[error(transparent)]
    Data(#[from] super::DataError),
}

impl DataPlane {
    /// Spreads a signed revocation (binary) through the formation, and applies it here
    /// first: the revoked node's connections close at once. Returns whom it voids and
    /// whether this node already held it.
    pub async fn revoke(
        &self,
        trust: &TrustStore,
        peers: &PeerManagerHandle,
        bytes: Vec<u8>,
    ) -> Result<(EndpointId, bool), RevokeError> {
        let r = Revocation::decode_verified(&bytes, trust.authority())?;
        let id = r.endpoint_id;
        let new = apply(trust, peers, r.clone()).await;
        self.spread(&r, bytes).await?;
        Ok((id, !new))
    }

    /// Publishes the entry for `r`, unless the retained store holds one already.
    async fn spread(
        &self,
        r: &Revocation,
        bytes: Vec<u8>,
    ) -> Result<Option<Published>, RevokeError> {
        let key = r.endpoint_id.to_string();
        if self.get(REVOCATIONS)?.iter().any(|m| m.key == key) {
            return Ok(None);
        }
        let p = revocation_entry(r, bytes, unix_now());
        Ok(Some(self.send(p, false).await?))
    }
}

/// Makes `r` count here: refused from now on, connections closed. True if new.
async fn apply(trust: &TrustStore, peers: &PeerManagerHandle, r: Revocation) -> bool {
    let id = r.endpoint_id;
    if !trust.learn(r) {
        return false;
    }
    info!(revoked = %id, "revocation learned; closing connections to the revoked node");
    peers.void(id, Refusal::Revoked).await;
    true
}

/// Applies every revocation the formation spreads, and spreads those of the node's
/// `--revocation` files. Runs until `stop`.
pub async fn watch_revocations(
    data: DataPlane,
    trust: Arc<TrustStore>,
    peers: PeerManagerHandle,
    stop: CancellationToken,
) {
    let gate = Gate::new(Some(*trust.authority()));
    // Subscribe before reading the store, so that nothing falls between the two.
    let Ok(mut sub) = data.subscribe(REVOCATIONS) else {
        return;
    };
    let stored = data.get(REVOCATIONS).unwrap_or_default();
    let held = stored.len();
    for m in &stored {
        if let Ok(r) = gate.revocation(m) {
            apply(&trust, &peers, r).await;
        }
    }
    for (bytes, r) in trust.file_revocations() {
        if let Err(e) = data.spread(&r, bytes).await {
            warn!(revoked = %r.endpoint_id, error = %e, "could not spread the revocation of a --revocation file");
        }
    }
    debug!(held, "revocations from the retained store applied");
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = sub.next() => e,
        };
        match event {
            Some(Event::Message(m)) => match gate.revocation(&m) {
                Ok(r) => {
                    apply(&trust, &peers, r).await;
                }
                Err(e) => debug!(error = %e, "entry on the revocations topic ignored"),
            },
            // Missed entries are in the retained store: read it again.
            Some(Event::Missed(_)) => {
                for m in data.get(REVOCATIONS).unwrap_or_default() {
                    if let Ok(r) = gate.revocation(&m) {
                        apply(&trust, &peers, r).await;
                    }
                }
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use iroh::SecretKey;

    use super::*;

    fn revocation(authority: &SecretKey, of: EndpointId) -> (Revocation, Vec<u8>) {
        let r = Revocation {
            endpoint_id: of,
            issued_at: 1,
            prune_after: u64::MAX,
            authority: AuthorityKey(authority.public()).id(),
        };
        let bytes = r.sign(authority);
        (r, bytes)
    }

    fn entry(p: Publish) -> Message {
        Message {
            publisher: [7; 32],
            seq: 1,
            hlc: 1,
            hops: 1,
            topic: p.topic,
            key: p.key,
            payload: p.payload,
            retain: p.retain,
            ttl_ms: p.ttl_secs * 1000,
            tombstone: false,
            sig: None,
        }
    }

    fn ok(gate: &Gate, m: &Message) -> bool {
        gate.admits(m) == Admission::Admit
    }

    #[test]
    fn reserved_topics() {
        assert!(is_reserved("_peat/revocations"));
        assert!(is_reserved("_peat"));
        assert!(!is_reserved("_peatx/a"));
        assert!(!is_reserved("tracks/_peat"));
    }

    #[test]
    fn only_a_verified_revocation_under_its_own_key_is_admitted() {
        let authority = SecretKey::generate();
        let gate = Gate::new(Some(AuthorityKey(authority.public())));
        let victim = SecretKey::generate().public();
        let (r, bytes) = revocation(&authority, victim);
        let good = entry(revocation_entry(&r, bytes.clone(), 0));
        assert_eq!(gate.revocation(&good), Ok(r.clone()));
        assert!(ok(&gate, &good));
        // Relayed by anyone: the signature is what counts.
        assert!(ok(
            &gate,
            &Message {
                publisher: [9; 32],
                ..good.clone()
            }
        ));
        let mut other_key = good.clone();
        other_key.key = SecretKey::generate().public().to_string();
        assert!(!ok(&gate, &other_key), "under another endpoint's key");
        let mut tombstone = good.clone();
        (tombstone.tombstone, tombstone.payload) = (true, bytes::Bytes::new());
        assert!(!ok(&gate, &tombstone), "a delete");
        let mut live = good.clone();
        live.retain = false;
        assert!(!ok(&gate, &live), "not retained");
        let mut flipped = good.clone();
        let mut junk = bytes.clone();
        junk[10] ^= 1;
        flipped.payload = junk.into();
        assert!(!ok(&gate, &flipped), "altered");
        let (_, foreign) = revocation(&SecretKey::generate(), victim);
        let mut forged = good.clone();
        forged.payload = foreign.into();
        assert!(!ok(&gate, &forged), "another authority");
        let mut elsewhere = good.clone();
        elsewhere.topic = "_peat/other".into();
        assert!(!ok(&gate, &elsewhere), "another system topic");
        // Without an authority nothing on a system topic passes; app topics do.
        assert!(!ok(&Gate::default(), &good));
        let mut app = good;
        app.topic = "tracks/a".into();
        assert!(ok(&Gate::default(), &app));
    }

    #[test]
    fn the_entry_expires_when_the_revocation_may_be_pruned() {
        let authority = SecretKey::generate();
        let (mut r, bytes) = revocation(&authority, SecretKey::generate().public());
        assert_eq!(
            revocation_entry(&r, bytes.clone(), 1000).ttl_secs,
            0,
            "for ever"
        );
        r.prune_after = 1000 + 30 * 86_400;
        assert_eq!(
            revocation_entry(&r, bytes.clone(), 1000).ttl_secs,
            30 * 86_400
        );
        r.prune_after = 10;
        assert_eq!(
            revocation_entry(&r, bytes, 1000).ttl_secs,
            86_400,
            "a day at least"
        );
    }
}

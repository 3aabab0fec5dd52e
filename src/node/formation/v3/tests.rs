//! Version 3 over an in-memory pipe: certificates checked both ways.

use std::{sync::Arc, time::Duration};

use iroh::SecretKey;

use super::*;
use crate::{
    node::formation::Rejection,
    trust::{
        armor,
        store::{TrustConfig, TrustStore},
        unix_now, AuthorityKey, MemberCert, TrustError, CERT_LABEL,
    },
};

type Outcome = (Result<(), FormationError>, Result<(), FormationError>);

struct Authority {
    secret: SecretKey,
    dir: tempfile::TempDir,
}

impl Authority {
    fn new() -> Self {
        Authority {
            secret: SecretKey::generate(),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn key(&self) -> AuthorityKey {
        AuthorityKey(self.secret.public())
    }

    /// A certificate for `id` valid from `from` to `to` seconds around now.
    fn cert(&self, id: EndpointId, from: i64, to: i64) -> Vec<u8> {
        let now = unix_now() as i64;
        MemberCert {
            endpoint_id: id,
            name: "n".into(),
            publish: vec!["**".into()],
            subscribe: vec!["**".into()],
            not_before: (now + from) as u64,
            not_after: (now + to) as u64,
            serial: 1,
            authority: self.key().id(),
        }
        .sign(&self.secret)
    }

    /// A formation that presents `cert` (made for `holder`) and checks peers against
    /// `checker`'s key.
    fn formation(&self, checker: &Authority, holder: EndpointId, cert: &[u8]) -> Formation {
        let path = self
            .dir
            .path()
            .join(format!("{}.cert", rand::random::<u64>()));
        std::fs::write(&path, armor(CERT_LABEL, cert)).expect("write cert");
        let cfg = TrustConfig {
            authority: checker.key(),
            cert_path: path,
            skew: Duration::from_secs(600),
            revocation_paths: vec![],
            learned: vec![],
        };
        // The store checks its own file against its authority: a certificate of
        // another authority is loaded with the issuer's key (the peer then refuses it).
        let mut cfg_issuer = cfg.clone();
        cfg_issuer.authority = self.key();
        let store = TrustStore::load(&cfg, holder)
            .or_else(|_| TrustStore::load(&cfg_issuer, holder))
            .expect("store");
        Formation::new("peat", None).with_trust(Arc::new(store))
    }
}

async fn run(d: (Formation, EndpointId), a: (Formation, EndpointId)) -> Outcome {
    let (dialer, did) = d;
    let (acceptor, aid) = a;
    let (dial_io, acc_io) = tokio::io::duplex(8192);
    let (mut dr, mut dw) = tokio::io::split(dial_io);
    let (mut ar, mut aw) = tokio::io::split(acc_io);
    let b = [9; 32];
    let acc = tokio::spawn(async move {
        let r = acceptor.accept_v3(&mut ar, &mut aw, (aid, did), &b).await;
        drop((ar, aw));
        r
    });
    let dr_res = dialer.dial_v3(&mut dr, &mut dw, (did, aid), &b).await;
    drop((dr, dw));
    (dr_res, acc.await.expect("acceptor task"))
}

fn id() -> EndpointId {
    SecretKey::generate().public()
}

fn refused(r: &Result<(), FormationError>) -> Option<crate::trust::Refusal> {
    match r {
        Err(FormationError::Certificate(e)) => Some(e.refusal()),
        _ => None,
    }
}

#[tokio::test]
async fn enrolled_nodes_pass_and_each_refusal_names_its_reason() {
    let auth = Authority::new();
    let (x, y) = (id(), id());
    let good = |n| auth.formation(&auth, n, &auth.cert(n, -10, 3600));
    assert_eq!(run((good(x), x), (good(y), y)).await, (Ok(()), Ok(())));

    // Expired beyond the skew: the acceptor refuses the dialer.
    let expired = auth.formation(&auth, x, &auth.cert(x, -7200, -3600));
    let (_, a) = run((expired, x), (good(y), y)).await;
    assert_eq!(refused(&a), Some(crate::trust::Refusal::Expired), "{a:?}");
    // Not yet valid: the dialer refuses the acceptor.
    let early = auth.formation(&auth, y, &auth.cert(y, 3600, 7200));
    let (d, _) = run((good(x), x), (early, y)).await;
    assert_eq!(
        refused(&d),
        Some(crate::trust::Refusal::NotYetValid),
        "{d:?}"
    );
    // Expired but within the skew passes.
    let late = auth.formation(&auth, x, &auth.cert(x, -7200, -300));
    assert_eq!(run((late, x), (good(y), y)).await, (Ok(()), Ok(())));
    // A certificate of another node, presented by x.
    let z = id();
    let stolen = auth.formation(&auth, z, &auth.cert(z, -10, 3600));
    let (_, a) = run((stolen, x), (good(y), y)).await;
    assert!(
        matches!(a, Err(FormationError::Certificate(TrustError::OtherEndpoint { cert_for, expected })) if cert_for == z && expected == x),
        "{a:?}"
    );
    // Another authority's certificate.
    let other = Authority::new();
    let foreign = other.formation(&auth, x, &other.cert(x, -10, 3600));
    let (_, a) = run((foreign, x), (good(y), y)).await;
    assert_eq!(
        refused(&a),
        Some(crate::trust::Refusal::OtherAuthority),
        "{a:?}"
    );
}

#[tokio::test]
async fn a_node_without_an_authority_presents_nothing_and_is_refused() {
    let auth = Authority::new();
    let (x, y) = (id(), id());
    let plain = || Formation::new("peat", None);
    let (_, a) = run(
        (plain(), x),
        (auth.formation(&auth, y, &auth.cert(y, -10, 3600)), y),
    )
    .await;
    assert_eq!(a, Err(FormationError::Certificate(TrustError::Missing)));
    // The other way round the dialer refuses; the plain acceptor checks nothing.
    let (d, a) = run(
        (auth.formation(&auth, x, &auth.cert(x, -10, 3600)), x),
        (plain(), y),
    )
    .await;
    assert_eq!(d, Err(FormationError::Certificate(TrustError::Missing)));
    assert_eq!(a, Ok(()));
    // Two plain nodes in version 3 pass as in version 2.
    assert_eq!(run((plain(), x), (plain(), y)).await, (Ok(()), Ok(())));
}

#[test]
fn certificate_close_codes_round_trip_to_rejections() {
    use crate::trust::Refusal::*;
    for r in [
        Missing,
        Expired,
        NotYetValid,
        OtherEndpoint,
        OtherAuthority,
        Revoked,
        Invalid,
    ] {
        let code = super::super::CloseCode::of_refusal(r);
        assert!(code.is_rejection());
        assert_eq!(
            super::super::CloseCode::from_code(code as u32 as u64),
            Some(code)
        );
        assert_eq!(
            FormationError::from_peer_close(code),
            Some(FormationError::RejectedByPeer(Rejection::Certificate(r)))
        );
        let e = FormationError::RejectedByPeer(Rejection::Certificate(r));
        assert!(e.is_rejection());
    }
}

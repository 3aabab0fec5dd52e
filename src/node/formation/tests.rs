//! Unit tests of the formation check (version 1 and the shared parts).

use iroh::EndpointId;

use super::{v1::Transcript, *};

#[test]
fn the_check_waits_longer_on_a_slow_link_within_bounds() {
    let ms = Duration::from_millis;
    assert_eq!(check_timeout(None), HANDSHAKE_TIMEOUT);
    assert_eq!(check_timeout(Some(ms(1))), HANDSHAKE_TIMEOUT);
    assert_eq!(check_timeout(Some(ms(300))), ms(7200));
    assert_eq!(check_timeout(Some(ms(5000))), MAX_CHECK_TIMEOUT);
    assert!(MAX_CHECK_TIMEOUT <= crate::node::peers::rules::DIAL_TIMEOUT);
}
use iroh::SecretKey;

fn ids() -> (EndpointId, EndpointId) {
    (
        SecretKey::generate().public(),
        SecretKey::generate().public(),
    )
}

async fn run(
    dialer: Formation,
    acceptor: Formation,
) -> (Result<(), FormationError>, Result<(), FormationError>) {
    let (d, a) = ids();
    let (dial_io, acc_io) = tokio::io::duplex(4096);
    let (mut dr, mut dw) = tokio::io::split(dial_io);
    let (mut ar, mut aw) = tokio::io::split(acc_io);
    let acc = tokio::spawn(async move {
        let r = acceptor.accept(&mut ar, &mut aw, a, d).await;
        // Mimic the connection close that follows a failure.
        drop((ar, aw));
        r
    });
    let dr_res = dialer.dial(&mut dr, &mut dw, d, a).await;
    // Both halves must go: a split duplex closes only when the whole stream drops.
    drop((dr, dw));
    (dr_res, acc.await.unwrap())
}

fn key(b: u8) -> SharedKey {
    SharedKey([b; 32])
}

#[tokio::test]
async fn same_app_and_key_pass() {
    let (d, a) = run(
        Formation::new("peat", Some(&key(1))),
        Formation::new("peat", Some(&key(1))),
    )
    .await;
    assert_eq!(d, Ok(()));
    assert_eq!(a, Ok(()));
}

#[tokio::test]
async fn same_app_without_key_pass() {
    let (d, a) = run(Formation::new("peat", None), Formation::new("peat", None)).await;
    assert_eq!((d, a), (Ok(()), Ok(())));
}

#[tokio::test]
async fn app_id_mismatch_is_seen_by_acceptor() {
    let (d, a) = run(Formation::new("alpha", None), Formation::new("bravo", None)).await;
    assert!(
        matches!(a, Err(FormationError::AppIdMismatch { .. })),
        "{a:?}"
    );
    assert!(d.is_err());
}

#[tokio::test]
async fn key_mismatch_fails_both_ways() {
    let (d, a) = run(
        Formation::new("peat", Some(&key(1))),
        Formation::new("peat", Some(&key(2))),
    )
    .await;
    assert_eq!(d, Err(FormationError::KeyMismatch));
    assert!(a.is_err());
    // A keyless dialer against a keyed acceptor fails as well.
    let (d, _a) = run(
        Formation::new("peat", None),
        Formation::new("peat", Some(&key(2))),
    )
    .await;
    assert_eq!(d, Err(FormationError::KeyMismatch));
}

#[tokio::test]
async fn proof_is_bound_to_the_endpoint_ids() {
    // The acceptor's MAC computed for one dialer does not verify for another.
    let f = Formation::new("peat", Some(&key(3)));
    let (d, a) = ids();
    let (other, _) = ids();
    let t = Transcript {
        nonce_dialer: [1; 32],
        nonce_acceptor: [2; 32],
        dialer: d,
        acceptor: a,
    };
    let tag = f.mac(ROLE_ACCEPTOR, &t);
    assert!(f.verify(ROLE_ACCEPTOR, &t, &tag));
    assert!(!f.verify(ROLE_DIALER, &t, &tag), "reflected proof accepted");
    let t2 = Transcript { dialer: other, ..t };
    assert!(!f.verify(ROLE_ACCEPTOR, &t2, &tag));
}

#[tokio::test]
async fn garbage_is_a_protocol_error() {
    let f = Formation::new("peat", None);
    let (d, a) = ids();
    let mut input: &[u8] = &[0, 5, 0xff, 0xff, 0xff, 0xff, 0xff];
    let mut out = Vec::new();
    let r = f.accept(&mut input, &mut out, a, d).await;
    assert!(matches!(r, Err(FormationError::Protocol(_))), "{r:?}");
    let mut input: &[u8] = &[0xff, 0xff];
    let r = f.accept(&mut input, &mut out, a, d).await;
    assert_eq!(
        r,
        Err(FormationError::Protocol("handshake frame too large"))
    );
    assert!(decode(&[]).is_err());
}

#[test]
fn close_codes_round_trip() {
    for c in [
        CloseCode::Shutdown,
        CloseCode::Duplicate,
        CloseCode::Disconnect,
        CloseCode::OverCapacity,
        CloseCode::AppIdMismatch,
        CloseCode::KeyMismatch,
        CloseCode::Protocol,
        CloseCode::Timeout,
    ] {
        assert_eq!(CloseCode::from_code(c as u32 as u64), Some(c));
    }
    assert_eq!(CloseCode::from_code(999), None);
}

//! Unit tests of the certificate format and its checks.

use std::time::Duration;

use iroh::SecretKey;

use super::*;

const SKEW: Duration = Duration::from_secs(600);
const T0: u64 = 1_800_000_000;

struct Auth {
    secret: SecretKey,
    key: AuthorityKey,
}

fn authority() -> Auth {
    let secret = SecretKey::generate();
    let key = AuthorityKey(secret.public());
    Auth { secret, key }
}

fn cert_for(a: &Auth, id: EndpointId) -> MemberCert {
    MemberCert {
        endpoint_id: id,
        name: "alpha".into(),
        publish: vec!["tracks/**".into()],
        subscribe: vec!["**".into()],
        not_before: T0,
        not_after: T0 + 86_400,
        serial: 7,
        authority: a.key.id(),
    }
}

fn never(_: &EndpointId) -> bool {
    false
}

fn verify(a: &Auth, bytes: &[u8], id: EndpointId, now: u64) -> Result<MemberCert, TrustError> {
    verify_cert(bytes, &a.key, id, now, SKEW, &never)
}

#[test]
fn a_certificate_round_trips_and_verifies() {
    let a = authority();
    let id = SecretKey::generate().public();
    let cert = cert_for(&a, id);
    let bytes = cert.sign(&a.secret);
    assert!(bytes.len() < 220, "compact: {} bytes", bytes.len());
    assert_eq!(&bytes[..6], b"PEAT\x01\x01");
    assert_eq!(verify(&a, &bytes, id, T0 + 10), Ok(cert.clone()));
    // Through the text form too.
    let text = armor(CERT_LABEL, &bytes);
    assert_eq!(dearmor(CERT_LABEL, &format!("# a note\n{text}")), Ok(bytes));
}

#[test]
fn a_tampered_certificate_does_not_verify() {
    let a = authority();
    let id = SecretKey::generate().public();
    let bytes = cert_for(&a, id).sign(&a.secret);
    // Flip a byte of the name, of the validity and of the signature.
    for at in [6 + 33, bytes.len() - 75, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x01;
        let r = verify(&a, &bad, id, T0 + 10);
        assert!(
            matches!(r, Err(TrustError::BadSignature | TrustError::Malformed(_))),
            "byte {at}: {r:?}"
        );
    }
    // A longer validity written over the signed one.
    let mut c = cert_for(&a, id);
    let signed = c.sign(&a.secret);
    c.not_after += 1_000_000;
    let resigned = c.sign(&SecretKey::generate());
    let mut spliced = resigned[..resigned.len() - 64].to_vec();
    spliced.extend_from_slice(&signed[signed.len() - 64..]);
    assert_eq!(
        verify(&a, &spliced, id, T0 + 10),
        Err(TrustError::BadSignature)
    );
}

#[test]
fn another_authority_is_named_as_such() {
    let (a, b) = (authority(), authority());
    let id = SecretKey::generate().public();
    let bytes = cert_for(&b, id).sign(&b.secret);
    assert_eq!(
        verify(&a, &bytes, id, T0),
        Err(TrustError::OtherAuthority {
            theirs: b.key.id(),
            ours: a.key.id()
        })
    );
    // Claiming our key id with another key's signature is a forgery, not another
    // authority.
    let mut forged = cert_for(&a, id);
    forged.serial = 8;
    let bytes = forged.sign(&b.secret);
    assert_eq!(verify(&a, &bytes, id, T0), Err(TrustError::BadSignature));
}

#[test]
fn validity_allows_the_clock_skew_and_no_more() {
    let a = authority();
    let id = SecretKey::generate().public();
    let bytes = cert_for(&a, id).sign(&a.secret);
    let end = T0 + 86_400;
    // Not yet valid: within the skew it passes, beyond it not.
    assert!(verify(&a, &bytes, id, T0 - 600).is_ok());
    assert_eq!(
        verify(&a, &bytes, id, T0 - 601),
        Err(TrustError::NotYetValid {
            not_before: T0,
            now: T0 - 601,
            skew: 600
        })
    );
    // Expired: the same on the other end.
    assert!(verify(&a, &bytes, id, end + 600).is_ok());
    let r = verify(&a, &bytes, id, end + 601);
    assert!(matches!(r, Err(TrustError::Expired { .. })), "{r:?}");
    assert_eq!(r.unwrap_err().refusal(), Refusal::Expired);
    // No skew at all.
    let r = verify_cert(&bytes, &a.key, id, end + 1, Duration::ZERO, &never);
    assert!(matches!(r, Err(TrustError::Expired { .. })), "{r:?}");
}

#[test]
fn a_certificate_for_another_endpoint_is_refused() {
    let a = authority();
    let (id, other) = (
        SecretKey::generate().public(),
        SecretKey::generate().public(),
    );
    let bytes = cert_for(&a, id).sign(&a.secret);
    assert_eq!(
        verify(&a, &bytes, other, T0),
        Err(TrustError::OtherEndpoint {
            cert_for: id,
            expected: other
        })
    );
}

#[test]
fn a_revoked_endpoint_is_refused() {
    let a = authority();
    let id = SecretKey::generate().public();
    let bytes = cert_for(&a, id).sign(&a.secret);
    let rev = Revocation {
        endpoint_id: id,
        issued_at: T0,
        prune_after: T0 + 86_400,
        authority: a.key.id(),
    };
    let rbytes = rev.sign(&a.secret);
    assert_eq!(Revocation::decode_verified(&rbytes, &a.key), Ok(rev));
    let revoked = |x: &EndpointId| *x == id;
    assert_eq!(
        verify_cert(&bytes, &a.key, id, T0, SKEW, &revoked),
        Err(TrustError::Revoked(id))
    );
}

#[test]
fn a_revocation_is_not_a_certificate_and_back() {
    let a = authority();
    let id = SecretKey::generate().public();
    let rev = Revocation {
        endpoint_id: id,
        issued_at: T0,
        prune_after: u64::MAX,
        authority: a.key.id(),
    }
    .sign(&a.secret);
    assert_eq!(
        verify(&a, &rev, id, T0),
        Err(TrustError::WrongKind {
            expected: "member certificate",
            found: "revocation"
        })
    );
    let cert = cert_for(&a, id).sign(&a.secret);
    assert!(matches!(
        Revocation::decode_verified(&cert, &a.key),
        Err(TrustError::WrongKind { .. })
    ));
}

#[test]
fn malformed_bytes_are_refused_without_panic() {
    let a = authority();
    let id = SecretKey::generate().public();
    let good = cert_for(&a, id).sign(&a.secret);
    for bad in [
        &[][..],
        b"PEAT",
        b"PEAT\x01\x01",
        &[0u8; 100][..],
        &good[..good.len() - 1],
        &good[1..],
    ] {
        let r = verify(&a, bad, id, T0);
        assert!(
            r.as_ref().unwrap_err().refusal() == Refusal::Invalid,
            "{r:?}"
        );
    }
    // Too large.
    let mut big = good.clone();
    big.resize(MAX_CERT_LEN + 1, 0);
    assert_eq!(
        verify(&a, &big, id, T0),
        Err(TrustError::Malformed("too large"))
    );
    // Trailing bytes inside the signed part, signed properly: still refused.
    let mut padded = good[..good.len() - 64].to_vec();
    padded.push(0);
    padded.extend_from_slice(&a.secret.sign(&padded).to_bytes());
    assert!(matches!(
        verify(&a, &padded, id, T0),
        Err(TrustError::Malformed(_))
    ));
    // Arbitrary bytes after a valid header.
    for seed in 0..200u32 {
        let mut junk = b"PEAT\x01\x01".to_vec();
        junk.extend((0..(seed % 150)).map(|i| (i * 31 + seed * 7) as u8));
        junk.extend_from_slice(&[0; 64]);
        assert!(verify(&a, &junk, id, T0).is_err());
    }
}

#[test]
fn a_version_from_the_future_says_so() {
    let a = authority();
    let id = SecretKey::generate().public();
    let mut bytes = cert_for(&a, id).sign(&a.secret);
    bytes[5] = 2;
    assert_eq!(
        verify(&a, &bytes, id, T0),
        Err(TrustError::FutureVersion {
            found: 2,
            supported: 1
        })
    );
    assert!(TrustError::FutureVersion {
        found: 2,
        supported: 1
    }
    .to_string()
    .contains("upgrade"));
}

#[test]
fn out_of_bounds_contents_are_refused_even_when_signed() {
    let a = authority();
    let id = SecretKey::generate().public();
    let mut c = cert_for(&a, id);
    c.name = "x".repeat(MAX_NAME_LEN + 1);
    assert!(matches!(
        verify(&a, &c.sign(&a.secret), id, T0),
        Err(TrustError::Malformed(_))
    ));
    let mut c = cert_for(&a, id);
    c.not_after = c.not_before - 1;
    assert!(matches!(
        verify(&a, &c.sign(&a.secret), id, T0),
        Err(TrustError::Malformed(_))
    ));
}

#[test]
fn authority_keys_parse_from_text_and_refuse_what_is_not_one() {
    let a = authority();
    let text = a.key.to_file_text();
    assert_eq!(AuthorityKey::parse(&text), Ok(a.key));
    assert_eq!(AuthorityKey::parse(&a.key.to_string()), Ok(a.key));
    for bad in ["", "# only a comment\n", "zz", &"ab".repeat(33), "a\nb"] {
        assert!(AuthorityKey::parse(bad).is_err(), "{bad:?}");
    }
    // A certificate file is not a key.
    let cert = armor(CERT_LABEL, &cert_for(&a, a.key.0).sign(&a.secret));
    assert!(AuthorityKey::parse(&cert).is_err());
}

#[test]
fn armour_errors_say_what_is_wrong() {
    assert_eq!(
        dearmor(CERT_LABEL, "hello"),
        Err(ArmorError::NoBegin(CERT_LABEL))
    );
    let rev = armor(REVOCATION_LABEL, b"x");
    assert!(matches!(
        dearmor(CERT_LABEL, &rev),
        Err(ArmorError::OtherLabel { .. })
    ));
    let cut = "-----BEGIN PEAT MEMBER CERTIFICATE-----\nAAAA\n";
    assert_eq!(dearmor(CERT_LABEL, cut), Err(ArmorError::NoEnd(CERT_LABEL)));
    let bad =
        "-----BEGIN PEAT MEMBER CERTIFICATE-----\n!!!!\n-----END PEAT MEMBER CERTIFICATE-----\n";
    assert_eq!(dearmor(CERT_LABEL, bad), Err(ArmorError::Base64));
}

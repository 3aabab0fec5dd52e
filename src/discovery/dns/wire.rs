//! Wire format of the dns mode's identity handshake (one UDP datagram each way).
//!
//! A DNS answer gives addresses, not identities. To learn who sits at an address, the
//! asker sends a request that carries a fresh random nonce; the sidecar there answers
//! with its endpoint id, app id and iroh port, signed with its endpoint key over that
//! nonce. The asker checks the nonce and the signature against the endpoint id in the
//! answer, so an answer can neither be replayed (old nonce) nor forged (no key).
//!
//! ```text
//! request (exactly REQUEST_LEN = 256 bytes)
//!   magic "PSDH" | version 1 | kind 1 (request) | nonce 32 | zero padding
//! answer (at most MAX_ANSWER_LEN = 201 bytes)
//!   magic "PSDH" | version 1 | kind 2 (answer) | nonce 32 | endpoint id 32
//!   | iroh port u16 BE | app id length u8 | app id | Ed25519 signature 64
//! signature over: SIGN_CONTEXT | every answer byte before the signature
//! ```
//!
//! The request is padded to be larger than any answer, so a forged source address
//! cannot turn a sidecar into a traffic amplifier. Every function here is pure and
//! total: malformed input gives a [`WireError`], never a panic.

use iroh::{EndpointId, PublicKey, SecretKey, Signature};

use crate::node::MAX_APP_ID_LEN;

pub const MAGIC: [u8; 4] = *b"PSDH";
pub const VERSION: u8 = 1;
const KIND_REQUEST: u8 = 1;
const KIND_ANSWER: u8 = 2;
pub const NONCE_LEN: usize = 32;
const HEADER_LEN: usize = 4 + 1 + 1;
const SIGNATURE_LEN: usize = 64;
/// Size of every request; answers must not be larger (anti-amplification).
pub const REQUEST_LEN: usize = 256;
/// Fixed part of an answer: header, nonce, endpoint id, port, app id length, signature.
const ANSWER_FIXED_LEN: usize = HEADER_LEN + NONCE_LEN + 32 + 2 + 1 + SIGNATURE_LEN;
pub const MAX_ANSWER_LEN: usize = ANSWER_FIXED_LEN + MAX_APP_ID_LEN;
/// Domain separation: a signature made for this handshake is worthless anywhere else,
/// and no other signature by the endpoint key can pass as a handshake answer.
pub const SIGN_CONTEXT: &[u8] = b"peat-sidecar/dns-handshake/v1\0";

const _: () = assert!(MAX_ANSWER_LEN <= REQUEST_LEN);

pub type Nonce = [u8; NONCE_LEN];

/// Who answered: what a verified answer tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub endpoint_id: EndpointId,
    pub app_id: String,
    pub iroh_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("datagram of {0} bytes has the wrong size")]
    BadLength(usize),
    #[error("not a peat-sidecar handshake (bad magic bytes)")]
    BadMagic,
    #[error("unsupported handshake version {0} (this build speaks {VERSION})")]
    UnsupportedVersion(u8),
    #[error("unexpected message kind {0}")]
    WrongKind(u8),
    #[error("the app id is empty, too long or not printable ASCII")]
    BadAppId,
    #[error("the endpoint id is not a valid Ed25519 public key")]
    BadEndpointId,
    #[error("announced iroh port 0")]
    PortZero,
    #[error("the answer is for another nonce (a replay or a late answer)")]
    NonceMismatch,
    #[error("the signature does not verify for the endpoint id the answer claims")]
    BadSignature,
}

fn check_header(buf: &[u8], kind: u8) -> Result<(), WireError> {
    let header = buf
        .get(..HEADER_LEN)
        .ok_or(WireError::BadLength(buf.len()))?;
    if header[..4] != MAGIC {
        return Err(WireError::BadMagic);
    }
    if header[4] != VERSION {
        return Err(WireError::UnsupportedVersion(header[4]));
    }
    if header[5] != kind {
        return Err(WireError::WrongKind(header[5]));
    }
    Ok(())
}

fn valid_app_id(s: &[u8]) -> bool {
    !s.is_empty() && s.len() <= MAX_APP_ID_LEN && s.iter().all(|b| b.is_ascii_graphic())
}

pub fn encode_request(nonce: &Nonce) -> [u8; REQUEST_LEN] {
    let mut buf = [0u8; REQUEST_LEN];
    buf[..4].copy_from_slice(&MAGIC);
    buf[4] = VERSION;
    buf[5] = KIND_REQUEST;
    buf[HEADER_LEN..HEADER_LEN + NONCE_LEN].copy_from_slice(nonce);
    buf
}

/// The nonce of a request. The padding is not inspected (room for later versions).
pub fn decode_request(buf: &[u8]) -> Result<Nonce, WireError> {
    // Exactly REQUEST_LEN: shorter requests would allow amplification.
    if buf.len() != REQUEST_LEN {
        return Err(WireError::BadLength(buf.len()));
    }
    check_header(buf, KIND_REQUEST)?;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&buf[HEADER_LEN..HEADER_LEN + NONCE_LEN]);
    Ok(nonce)
}

/// The bytes that get signed: the context, then the answer without its signature.
fn signed_message(unsigned_answer: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGN_CONTEXT.len() + unsigned_answer.len());
    m.extend_from_slice(SIGN_CONTEXT);
    m.extend_from_slice(unsigned_answer);
    m
}

/// Builds a signed answer to `nonce`.
pub fn encode_answer(
    secret: &SecretKey,
    nonce: &Nonce,
    app_id: &str,
    iroh_port: u16,
) -> Result<Vec<u8>, WireError> {
    if !valid_app_id(app_id.as_bytes()) {
        return Err(WireError::BadAppId);
    }
    if iroh_port == 0 {
        return Err(WireError::PortZero);
    }
    let mut buf = Vec::with_capacity(ANSWER_FIXED_LEN + app_id.len());
    buf.extend_from_slice(&MAGIC);
    buf.push(VERSION);
    buf.push(KIND_ANSWER);
    buf.extend_from_slice(nonce);
    buf.extend_from_slice(secret.public().as_bytes());
    buf.extend_from_slice(&iroh_port.to_be_bytes());
    // valid_app_id bounds the length to MAX_APP_ID_LEN (64), which fits a u8.
    buf.push(app_id.len() as u8);
    buf.extend_from_slice(app_id.as_bytes());
    let signature = secret.sign(&signed_message(&buf));
    buf.extend_from_slice(&signature.to_bytes());
    Ok(buf)
}

/// A parsed, not yet verified answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub nonce: Nonce,
    pub identity: Identity,
    signature: [u8; SIGNATURE_LEN],
    /// Length of the signed part of the datagram.
    signed_len: usize,
}

/// Parses an answer without checking nonce or signature (see [`verify_answer`]).
pub fn decode_answer(buf: &[u8]) -> Result<Answer, WireError> {
    if buf.len() < ANSWER_FIXED_LEN + 1 || buf.len() > MAX_ANSWER_LEN {
        return Err(WireError::BadLength(buf.len()));
    }
    check_header(buf, KIND_ANSWER)?;
    let mut at = HEADER_LEN;
    let mut take = |n: usize| -> Result<&[u8], WireError> {
        let s = buf.get(at..at + n).ok_or(WireError::BadLength(buf.len()))?;
        at += n;
        Ok(s)
    };
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(take(NONCE_LEN)?);
    let mut id = [0u8; 32];
    id.copy_from_slice(take(32)?);
    let port_bytes = take(2)?;
    let iroh_port = u16::from_be_bytes([port_bytes[0], port_bytes[1]]);
    let app_len = take(1)?[0] as usize;
    let app = take(app_len)?;
    if !valid_app_id(app) {
        return Err(WireError::BadAppId);
    }
    let app_id = String::from_utf8(app.to_vec()).map_err(|_| WireError::BadAppId)?;
    let signed_len = HEADER_LEN + NONCE_LEN + 32 + 2 + 1 + app_len;
    let mut signature = [0u8; SIGNATURE_LEN];
    signature.copy_from_slice(take(SIGNATURE_LEN)?);
    if at != buf.len() {
        return Err(WireError::BadLength(buf.len()));
    }
    if iroh_port == 0 {
        return Err(WireError::PortZero);
    }
    let endpoint_id = PublicKey::from_bytes(&id).map_err(|_| WireError::BadEndpointId)?;
    Ok(Answer {
        nonce,
        identity: Identity {
            endpoint_id,
            app_id,
            iroh_port,
        },
        signature,
        signed_len,
    })
}

/// Parses an answer and checks that it answers `expected_nonce` and is signed by the
/// key of the endpoint id it claims.
pub fn verify_answer(buf: &[u8], expected_nonce: &Nonce) -> Result<Identity, WireError> {
    let answer = decode_answer(buf)?;
    if &answer.nonce != expected_nonce {
        return Err(WireError::NonceMismatch);
    }
    let signature = Signature::from_bytes(&answer.signature);
    let signed = buf
        .get(..answer.signed_len)
        .ok_or(WireError::BadLength(buf.len()))?;
    answer
        .identity
        .endpoint_id
        .verify(&signed_message(signed), &signature)
        .map_err(|_| WireError::BadSignature)?;
    Ok(answer.identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn request_roundtrip_and_size() {
        let nonce = [9u8; NONCE_LEN];
        let req = encode_request(&nonce);
        assert_eq!(req.len(), REQUEST_LEN);
        assert_eq!(decode_request(&req).unwrap(), nonce);
        // Short requests are refused: they would make the answer an amplifier.
        assert_eq!(decode_request(&req[..100]), Err(WireError::BadLength(100)));
        let mut bad = req;
        bad[0] = b'X';
        assert_eq!(decode_request(&bad), Err(WireError::BadMagic));
        let mut bad = req;
        bad[4] = 2;
        assert_eq!(decode_request(&bad), Err(WireError::UnsupportedVersion(2)));
        let mut bad = req;
        bad[5] = KIND_ANSWER;
        assert_eq!(decode_request(&bad), Err(WireError::WrongKind(KIND_ANSWER)));
    }

    #[test]
    fn answer_roundtrip_verifies() {
        let k = key(1);
        let nonce = [5u8; NONCE_LEN];
        let a = encode_answer(&k, &nonce, "peat-alpha", 9470).unwrap();
        assert!(a.len() <= MAX_ANSWER_LEN);
        let id = verify_answer(&a, &nonce).unwrap();
        assert_eq!(
            id,
            Identity {
                endpoint_id: k.public(),
                app_id: "peat-alpha".into(),
                iroh_port: 9470
            }
        );
        // The longest app id still fits under the request size.
        let long = "x".repeat(MAX_APP_ID_LEN);
        let a = encode_answer(&k, &nonce, &long, 1).unwrap();
        assert_eq!(a.len(), MAX_ANSWER_LEN);
        assert_eq!(verify_answer(&a, &nonce).unwrap().app_id, long);
    }

    #[test]
    fn replayed_answer_is_rejected() {
        let k = key(1);
        let old = [1u8; NONCE_LEN];
        let fresh = [2u8; NONCE_LEN];
        let a = encode_answer(&k, &old, "peat", 9470).unwrap();
        assert_eq!(verify_answer(&a, &fresh), Err(WireError::NonceMismatch));
        // Rewriting the nonce to the fresh one breaks the signature.
        let mut patched = a.clone();
        patched[HEADER_LEN..HEADER_LEN + NONCE_LEN].copy_from_slice(&fresh);
        assert_eq!(
            verify_answer(&patched, &fresh),
            Err(WireError::BadSignature)
        );
    }

    #[test]
    fn forged_answers_are_rejected() {
        let victim = key(1);
        let forger = key(2);
        let nonce = [3u8; NONCE_LEN];
        // Signed by the forger but claiming the victim's endpoint id.
        let mut a = encode_answer(&forger, &nonce, "peat", 9470).unwrap();
        a[HEADER_LEN + NONCE_LEN..HEADER_LEN + NONCE_LEN + 32]
            .copy_from_slice(victim.public().as_bytes());
        assert_eq!(verify_answer(&a, &nonce), Err(WireError::BadSignature));
        // A genuine answer whose app id or port was changed on the way.
        let good = encode_answer(&victim, &nonce, "peat", 9470).unwrap();
        let mut changed = good.clone();
        let port_at = HEADER_LEN + NONCE_LEN + 32;
        changed[port_at] ^= 1;
        assert_eq!(
            verify_answer(&changed, &nonce),
            Err(WireError::BadSignature)
        );
        let mut changed = good.clone();
        let app_at = port_at + 3;
        changed[app_at] = b'b';
        assert_eq!(
            verify_answer(&changed, &nonce),
            Err(WireError::BadSignature)
        );
        let mut changed = good;
        let last = changed.len() - 1;
        changed[last] ^= 0x80;
        assert_eq!(
            verify_answer(&changed, &nonce),
            Err(WireError::BadSignature)
        );
        // A signature made for something else by the same key does not pass.
        let mut other = encode_answer(&victim, &nonce, "peat", 9470).unwrap();
        let sig_at = other.len() - SIGNATURE_LEN;
        let foreign = victim.sign(&other[..sig_at]); // no SIGN_CONTEXT
        other[sig_at..].copy_from_slice(&foreign.to_bytes());
        assert_eq!(verify_answer(&other, &nonce), Err(WireError::BadSignature));
    }

    #[test]
    fn encode_refuses_bad_input() {
        let k = key(1);
        let n = [0u8; NONCE_LEN];
        assert_eq!(encode_answer(&k, &n, "", 1), Err(WireError::BadAppId));
        assert_eq!(encode_answer(&k, &n, "a b", 1), Err(WireError::BadAppId));
        assert_eq!(
            encode_answer(&k, &n, &"x".repeat(MAX_APP_ID_LEN + 1), 1),
            Err(WireError::BadAppId)
        );
        assert_eq!(encode_answer(&k, &n, "peat", 0), Err(WireError::PortZero));
    }

    #[test]
    fn malformed_answers_never_panic() {
        let k = key(7);
        let nonce = [4u8; NONCE_LEN];
        let good = encode_answer(&k, &nonce, "peat", 9470).unwrap();
        // Every truncation and every single-byte change is an error, not a panic.
        for len in 0..good.len() {
            assert!(verify_answer(&good[..len], &nonce).is_err());
            assert!(decode_request(&good[..len]).is_err());
        }
        for i in 0..good.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = good.clone();
                b[i] ^= flip;
                assert!(
                    verify_answer(&b, &nonce).is_err(),
                    "byte {i} flip {flip:#x}"
                );
            }
        }
        // An app id length pointing past the end, or short of it.
        let len_at = HEADER_LEN + NONCE_LEN + 32 + 2;
        for v in [0u8, 3, 5, 200, 255] {
            let mut b = good.clone();
            b[len_at] = v;
            assert!(verify_answer(&b, &nonce).is_err());
        }
        // Extra bytes after the signature.
        let mut b = good.clone();
        b.push(0);
        assert!(verify_answer(&b, &nonce).is_err());
        // Pseudo-random garbage of every size up to a request and beyond.
        let mut x: u32 = 0x1234_5678;
        for len in 0..600 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = decode_answer(&buf);
            let _ = verify_answer(&buf, &nonce);
            let _ = decode_request(&buf);
        }
        // Garbage behind a valid header.
        let mut b = vec![0u8; MAX_ANSWER_LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4] = VERSION;
        b[5] = KIND_ANSWER;
        for v in 0..=255u8 {
            b[len_at] = v;
            let _ = verify_answer(&b, &nonce);
        }
    }
}

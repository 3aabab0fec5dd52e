//! The binary form of certificates and revocations:
//!
//! ```text
//! "PEAT" | kind (1 = member certificate, 2 = revocation) | version (1) | body | signature
//! ```
//!
//! `body` is postcard (field order below is the format), `signature` the authority's
//! 64-byte Ed25519 signature over everything before it, kind byte included, so that a
//! signature over one kind never verifies as the other.

use std::time::Duration;

use iroh::{EndpointId, PublicKey, SecretKey, Signature};
use serde::{Deserialize, Serialize};

use super::{AuthorityKey, KeyId, TrustError};

const MAGIC: &[u8; 4] = b"PEAT";
const KIND_CERT: u8 = 1;
const KIND_REVOCATION: u8 = 2;
/// The newest format version this build reads and the one it writes.
pub const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 6;
const SIG_LEN: usize = Signature::LENGTH;
/// Largest encoded certificate or revocation accepted.
pub const MAX_CERT_LEN: usize = 2048;
/// Longest member name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Most topic patterns per right (publish, subscribe).
pub const MAX_PATTERNS: usize = 32;
const MAX_PATTERN_LEN: usize = 256;

/// A member certificate: the authority says that `endpoint_id` belongs to the
/// formation under `name`, with these topic rights, from `not_before` to `not_after`
/// (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberCert {
    pub endpoint_id: EndpointId,
    pub name: String,
    /// Topic patterns the member may publish on (enforced once topic rights land).
    pub publish: Vec<String>,
    /// Topic patterns the member may receive.
    pub subscribe: Vec<String>,
    pub not_before: u64,
    pub not_after: u64,
    pub serial: u64,
    pub authority: KeyId,
}

/// The authority says that every certificate it issued for `endpoint_id` is void.
/// `prune_after`: the last `not_after` of those certificates (u64::MAX when unknown),
/// after which the revocation may be forgotten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub endpoint_id: EndpointId,
    pub issued_at: u64,
    pub prune_after: u64,
    pub authority: KeyId,
}

/// The postcard body of a certificate; field order is the format.
#[derive(Serialize, Deserialize)]
struct CertBody {
    endpoint_id: [u8; 32],
    name: String,
    publish: Vec<String>,
    subscribe: Vec<String>,
    not_before: u64,
    not_after: u64,
    serial: u64,
    authority: [u8; 8],
}

/// The postcard body of a revocation; field order is the format.
#[derive(Serialize, Deserialize)]
struct RevocationBody {
    endpoint_id: [u8; 32],
    issued_at: u64,
    prune_after: u64,
    authority: [u8; 8],
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        KIND_CERT => "member certificate",
        KIND_REVOCATION => "revocation",
        _ => "file of an unknown kind",
    }
}

/// Header, postcard body, signature.
fn seal(kind: u8, body: &impl Serialize, authority: &SecretKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[kind, FORMAT_VERSION]);
    // Encoding plain structs of integers, strings and arrays cannot fail.
    let body = postcard::to_stdvec(body).expect("postcard encodes plain structs");
    out.extend_from_slice(&body);
    let sig = authority.sign(&out);
    out.extend_from_slice(&sig.to_bytes());
    out
}

/// Checks the envelope and the signature; returns the body bytes. The authority is
/// checked first by its key id (read from the body by `key_id`) so that another
/// authority's signature reads as that, not as a forgery.
fn open<'a>(
    bytes: &'a [u8],
    kind: u8,
    authority: &AuthorityKey,
    key_id: impl Fn(&[u8]) -> Result<KeyId, TrustError>,
) -> Result<&'a [u8], TrustError> {
    if bytes.len() > MAX_CERT_LEN {
        return Err(TrustError::Malformed("too large"));
    }
    if bytes.len() < HEADER_LEN + SIG_LEN || &bytes[..4] != MAGIC {
        return Err(TrustError::Malformed(
            "not a peat-sidecar certificate or revocation",
        ));
    }
    let (found, version) = (bytes[4], bytes[5]);
    if found != kind {
        return Err(TrustError::WrongKind {
            expected: kind_name(kind),
            found: kind_name(found),
        });
    }
    if version > FORMAT_VERSION {
        return Err(TrustError::FutureVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if version == 0 {
        return Err(TrustError::Malformed("format version 0"));
    }
    let (signed, sig) = bytes.split_at(bytes.len() - SIG_LEN);
    let body = &signed[HEADER_LEN..];
    let ours = authority.id();
    let theirs = key_id(body)?;
    if theirs != ours {
        return Err(TrustError::OtherAuthority { theirs, ours });
    }
    let sig: &[u8; SIG_LEN] = sig.try_into().map_err(|_| TrustError::BadSignature)?;
    authority
        .0
        .verify(signed, &Signature::from_bytes(sig))
        .map_err(|_| TrustError::BadSignature)?;
    Ok(body)
}

/// Decodes a whole body: trailing bytes are an error, not ignored.
fn decode_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, TrustError> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((t, [])) => Ok(t),
        Ok(_) => Err(TrustError::Malformed("trailing bytes after the body")),
        Err(_) => Err(TrustError::Malformed("the body does not decode")),
    }
}

fn endpoint(bytes: &[u8; 32]) -> Result<EndpointId, TrustError> {
    PublicKey::from_bytes(bytes).map_err(|_| TrustError::Malformed("the endpoint id is not a key"))
}

impl MemberCert {
    /// The signed binary form.
    pub fn sign(&self, authority: &SecretKey) -> Vec<u8> {
        let body = CertBody {
            endpoint_id: *self.endpoint_id.as_bytes(),
            name: self.name.clone(),
            publish: self.publish.clone(),
            subscribe: self.subscribe.clone(),
            not_before: self.not_before,
            not_after: self.not_after,
            serial: self.serial,
            authority: self.authority.0,
        };
        seal(KIND_CERT, &body, authority)
    }

    /// Decodes a certificate and checks its signature by `authority` (not its time,
    /// endpoint id or revocation: see [`super::verify_cert`]).
    pub fn decode_verified(bytes: &[u8], authority: &AuthorityKey) -> Result<Self, TrustError> {
        let body = open(bytes, KIND_CERT, authority, |body| {
            Ok(KeyId(decode_body::<CertBody>(body)?.authority))
        })?;
        let b: CertBody = decode_body(body)?;
        let cert = MemberCert {
            endpoint_id: endpoint(&b.endpoint_id)?,
            name: b.name,
            publish: b.publish,
            subscribe: b.subscribe,
            not_before: b.not_before,
            not_after: b.not_after,
            serial: b.serial,
            authority: KeyId(b.authority),
        };
        cert.check_shape()?;
        Ok(cert)
    }

    /// Bounds that the authority keeps when it issues (a signed certificate outside
    /// them is refused all the same).
    pub fn check_shape(&self) -> Result<(), TrustError> {
        if self.name.len() > MAX_NAME_LEN {
            return Err(TrustError::Malformed("the name is too long"));
        }
        if self.publish.len() > MAX_PATTERNS || self.subscribe.len() > MAX_PATTERNS {
            return Err(TrustError::Malformed("too many topic patterns"));
        }
        if (self.publish.iter())
            .chain(&self.subscribe)
            .any(|p| p.len() > MAX_PATTERN_LEN)
        {
            return Err(TrustError::Malformed("a topic pattern is too long"));
        }
        if self.not_after < self.not_before {
            return Err(TrustError::Malformed("it ends before it begins"));
        }
        Ok(())
    }

    /// Valid at `now` (Unix seconds), allowing the clocks of issuer and checker to be
    /// `skew` apart in either direction.
    pub fn check_time(&self, now: u64, skew: Duration) -> Result<(), TrustError> {
        let skew = skew.as_secs();
        if now.saturating_add(skew) < self.not_before {
            return Err(TrustError::NotYetValid {
                not_before: self.not_before,
                now,
                skew,
            });
        }
        if now.saturating_sub(skew) > self.not_after {
            return Err(TrustError::Expired {
                not_after: self.not_after,
                now,
                skew,
            });
        }
        Ok(())
    }
}

impl Revocation {
    pub fn sign(&self, authority: &SecretKey) -> Vec<u8> {
        let body = RevocationBody {
            endpoint_id: *self.endpoint_id.as_bytes(),
            issued_at: self.issued_at,
            prune_after: self.prune_after,
            authority: self.authority.0,
        };
        seal(KIND_REVOCATION, &body, authority)
    }

    /// Decodes a revocation and checks its signature by `authority`.
    pub fn decode_verified(bytes: &[u8], authority: &AuthorityKey) -> Result<Self, TrustError> {
        let body = open(bytes, KIND_REVOCATION, authority, |body| {
            Ok(KeyId(decode_body::<RevocationBody>(body)?.authority))
        })?;
        let b: RevocationBody = decode_body(body)?;
        Ok(Revocation {
            endpoint_id: endpoint(&b.endpoint_id)?,
            issued_at: b.issued_at,
            prune_after: b.prune_after,
            authority: KeyId(b.authority),
        })
    }
}

//! Member certificates and revocations from an offline authority: their encoding,
//! signatures and validity (docs/SECURITY.md, "Member certificates", has the byte
//! layout). Pure logic but for [`store`], which reads the files a running node uses.
//!
//! An authority is an Ed25519 key pair kept off the devices. It signs a
//! [`MemberCert`] for each device's endpoint id, and a [`Revocation`] for a device that
//! was lost. A node started with the authority's public key presents its certificate in
//! the formation check and verifies every peer's ([`verify_cert`]). Signatures are
//! iroh's Ed25519 (ed25519-dalek, `verify_strict`): no cryptography of our own.

mod armor;
pub mod members;
pub mod store;
mod wire;

#[cfg(test)]
mod tests;

use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use iroh::{EndpointId, PublicKey};
use sha2::{Digest, Sha256};

pub use armor::{armor, dearmor, ArmorError, CERT_LABEL, REVOCATION_LABEL, SECRET_LABEL};
pub use wire::{MemberCert, Revocation, FORMAT_VERSION, MAX_CERT_LEN, MAX_NAME_LEN, MAX_PATTERNS};

/// The first 8 bytes of SHA-256 of an authority's public key: names the authority in
/// every certificate and revocation, so that one from another authority is told apart
/// from a forged one.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// The authority's public key, which every enrolled node is given.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AuthorityKey(pub PublicKey);

impl fmt::Debug for AuthorityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthorityKey({})", self.id())
    }
}

impl fmt::Display for AuthorityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0.as_bytes()))
    }
}

impl AuthorityKey {
    pub fn id(&self) -> KeyId {
        let digest = Sha256::digest(self.0.as_bytes());
        let mut id = [0; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }

    /// Parses the text of a public key file (or a flag's value): 64 hex characters;
    /// lines starting with `#` and blank lines are comments.
    pub fn parse(text: &str) -> Result<Self, TrustError> {
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let (Some(line), None) = (lines.next(), lines.next()) else {
            return Err(TrustError::Malformed(
                "expected one line of 64 hex characters (the authority's public key)",
            ));
        };
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(line, &mut bytes).map_err(|_| {
            TrustError::Malformed("expected 64 hex characters (the authority's public key)")
        })?;
        PublicKey::from_bytes(&bytes)
            .map(AuthorityKey)
            .map_err(|_| TrustError::Malformed("64 hex characters, but not an Ed25519 public key"))
    }

    /// The public key file's text: a comment line and the key.
    pub fn to_file_text(&self) -> String {
        format!(
            "# peat-sidecar authority public key (key id {}): give it to every device with --authority-key\n{self}\n",
            self.id()
        )
    }
}

/// Why a certificate or revocation is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("malformed: {0}")]
    Malformed(&'static str),
    #[error("format version {found} is newer than this build understands (up to {supported}); upgrade peat-sidecar")]
    FutureVersion { found: u8, supported: u8 },
    #[error("it is a {found}, not a {expected}")]
    WrongKind {
        expected: &'static str,
        found: &'static str,
    },
    #[error("signed by another authority (key id {theirs}; ours is {ours})")]
    OtherAuthority { theirs: KeyId, ours: KeyId },
    #[error("the authority's signature does not verify (the contents were altered)")]
    BadSignature,
    #[error("the member certificate expired at {} (now {}, clock skew allowed {}s)", time_of(.not_after), time_of(.now), .skew)]
    Expired { not_after: u64, now: u64, skew: u64 },
    #[error("the member certificate is not valid before {} (now {}, clock skew allowed {}s)", time_of(.not_before), time_of(.now), .skew)]
    NotYetValid {
        not_before: u64,
        now: u64,
        skew: u64,
    },
    #[error("the member certificate is for endpoint id {cert_for}, not {expected}")]
    OtherEndpoint {
        cert_for: EndpointId,
        expected: EndpointId,
    },
    #[error("the member certificate of {0} is revoked")]
    Revoked(EndpointId),
    #[error("no member certificate")]
    Missing,
}

/// Why a peer's certificate was refused, as counters and close codes name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    Missing,
    Expired,
    NotYetValid,
    OtherEndpoint,
    OtherAuthority,
    Revoked,
    Invalid,
}

/// Labels of [`Refusal`] for counters, in the order of [`Refusal::index`].
pub const REFUSAL_REASONS: [&str; 7] = [
    "missing",
    "expired",
    "not_yet_valid",
    "other_endpoint",
    "other_authority",
    "revoked",
    "invalid",
];

impl Refusal {
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn label(self) -> &'static str {
        REFUSAL_REASONS[self.index()]
    }

    /// In words, as the refused side is told (the close frame's reason text).
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::Missing => "no member certificate",
            Refusal::Expired => "member certificate expired",
            Refusal::NotYetValid => "member certificate not yet valid",
            Refusal::OtherEndpoint => "member certificate for another endpoint id",
            Refusal::OtherAuthority => "member certificate from another authority",
            Refusal::Revoked => "member certificate revoked",
            Refusal::Invalid => "member certificate invalid",
        }
    }
}

impl TrustError {
    pub fn refusal(&self) -> Refusal {
        match self {
            TrustError::Missing => Refusal::Missing,
            TrustError::Expired { .. } => Refusal::Expired,
            TrustError::NotYetValid { .. } => Refusal::NotYetValid,
            TrustError::OtherEndpoint { .. } => Refusal::OtherEndpoint,
            TrustError::OtherAuthority { .. } => Refusal::OtherAuthority,
            TrustError::Revoked(_) => Refusal::Revoked,
            TrustError::Malformed(_)
            | TrustError::FutureVersion { .. }
            | TrustError::WrongKind { .. }
            | TrustError::BadSignature => Refusal::Invalid,
        }
    }
}

/// Seconds since the Unix epoch by this host's clock (0 before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A Unix time as UTC text, for messages.
pub fn time(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map_or_else(
            || format!("{secs} (Unix time)"),
            |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )
}

fn time_of(secs: &u64) -> String {
    time(*secs)
}

/// Verifies a peer's certificate bytes: signed by `authority`, for `peer` (the
/// TLS-proven endpoint id), valid at `now` within `skew`, and not revoked by any of
/// `revoked` (endpoint ids of valid revocations by this authority).
pub fn verify_cert(
    bytes: &[u8],
    authority: &AuthorityKey,
    peer: EndpointId,
    now: u64,
    skew: Duration,
    revoked: &dyn Fn(&EndpointId) -> bool,
) -> Result<MemberCert, TrustError> {
    let cert = MemberCert::decode_verified(bytes, authority)?;
    if cert.endpoint_id != peer {
        return Err(TrustError::OtherEndpoint {
            cert_for: cert.endpoint_id,
            expected: peer,
        });
    }
    cert.check_time(now, skew)?;
    if revoked(&cert.endpoint_id) {
        return Err(TrustError::Revoked(cert.endpoint_id));
    }
    Ok(cert)
}

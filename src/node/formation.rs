//! The formation check: a mutual challenge-response that every connection runs, in both
//! directions, before the peer counts as connected.
//!
//! TLS already proves *who* the peer is (its endpoint id is its TLS key). This check
//! proves that the peer belongs to the same formation: the same app id and, when one is
//! configured, knowledge of the same shared key. It runs on the first bidirectional
//! stream of a connection made with [`ALPN`]:
//!
//! ```text
//! dialer                                   acceptor
//!   Hello { app_id, nonce_d }        ->
//!                                    <-    Challenge { nonce_a, mac_a }
//!   Proof { mac_d }                  ->
//!                                    <-    Welcome
//! ```
//!
//! `mac_x = HMAC-SHA256(K, label | role_x | app_id | nonce_d | nonce_a | id_d | id_a)`,
//! where K is the shared key (or, without one, a hash of the app id). Binding both
//! nonces makes a recorded answer useless; binding both endpoint ids (taken from TLS,
//! not from the messages) stops a man in the middle relaying one side's proof to a third
//! node; the role byte stops reflecting a proof back at its sender. MACs are compared
//! in constant time.
//!
//! Peers that both speak it run the same check in one round trip instead ([`v2`]),
//! chosen by ALPN; a node with an authority (`--authority-key`) runs [`v3`], which adds
//! member certificates in both directions.
//!
//! A side that sees a mismatch closes the connection with a [`CloseCode`], so the other
//! side learns why from the close frame, as a number and never by parsing text.

use std::{sync::Arc, time::Duration};

use hmac::{Hmac, Mac};
use iroh::endpoint::VarInt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{
    node::SharedKey,
    trust::{store::TrustStore, Refusal, TrustError},
};

mod v1;
mod v2;
mod v3;
pub use v2::{Binding, ALPN_V2, EXPORTER_LABEL};
pub use v3::ALPN_V3;

/// ALPN of sidecar-to-sidecar connections that run the check of version 1 (two round
/// trips), for peers older than [`ALPN_V2`].
pub const ALPN: &[u8] = b"/peat-sidecar/formation/1";
/// The ALPNs this node accepts, preferred first: TLS picks the first one that the
/// dialer offered too.
pub const ALPNS: [&[u8]; 3] = [ALPN_V3, ALPN_V2, ALPN];
/// Protocol version carried in Hello.
pub const VERSION: u16 = 1;
/// The whole check must finish within this time, or the connection is closed; longer
/// on a slow link, see [`check_timeout`].
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// On a slow link the check may take this many of the connection's round trips. Its
/// four messages take two round trips, but on a lossy radio link every lost packet
/// costs QUIC's probe timeout (about three round trips, doubling when the resend is
/// lost too): at 30 % loss and 300 ms round trips a flat 5 s cut checks that were
/// progressing, and each cost a backoff and a new handshake.
pub const CHECK_RTTS: u32 = 24;
/// Never longer than a whole dial may take (`peers::rules::DIAL_TIMEOUT`): the dialler
/// gives up then anyway.
pub const MAX_CHECK_TIMEOUT: Duration = Duration::from_secs(8);

/// How long the check may take on a connection whose handshake measured `rtt`: at
/// least [`HANDSHAKE_TIMEOUT`], [`CHECK_RTTS`] round trips on a slow link, at most
/// [`MAX_CHECK_TIMEOUT`]. Both sides compute it from their own view of the same link.
pub fn check_timeout(rtt: Option<Duration>) -> Duration {
    rtt.map_or(Duration::ZERO, |r| r.saturating_mul(CHECK_RTTS))
        .clamp(HANDSHAKE_TIMEOUT, MAX_CHECK_TIMEOUT)
}
/// Largest handshake frame accepted; real ones are about 120 bytes, 250 with a member
/// certificate (at most [`crate::trust::MAX_CERT_LEN`]).
pub const MAX_FRAME: usize = 4096;

const LABEL: &[u8] = b"peat-sidecar formation v1";
const ROLE_DIALER: u8 = b'D';
const ROLE_ACCEPTOR: u8 = b'A';

/// Application close codes of sidecar connections. Numbers are part of the wire
/// protocol: never reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum CloseCode {
    /// The sidecar is shutting down. Not 0: the QUIC library closes a connection that
    /// is dropped without a close with code 0, and that must never read as a
    /// departure (it made live peers look gone on lossy links).
    Shutdown = 4,
    /// Another connection to the same peer survived.
    Duplicate = 1,
    /// An operator asked to disconnect (DisconnectPeer).
    Disconnect = 2,
    /// The connection limit (--max-peers) is reached.
    OverCapacity = 3,
    /// The peer sent no beacon and did not answer a liveness probe (src/node/liveness).
    Unresponsive = 5,
    /// The peer belongs to another formation: different app id.
    AppIdMismatch = 0x10,
    /// The peer does not know the formation's shared key.
    KeyMismatch = 0x11,
    /// The handshake was malformed or of an unknown version.
    Protocol = 0x12,
    /// The handshake did not finish in time.
    Timeout = 0x13,
    /// The peer presented no member certificate (or speaks a version without them).
    CertMissing = 0x14,
    /// The peer's member certificate has expired (beyond the clock skew allowed).
    CertExpired = 0x15,
    /// The peer's member certificate is not valid yet (beyond the clock skew allowed).
    CertNotYetValid = 0x16,
    /// The peer's member certificate is for another endpoint id.
    CertOtherEndpoint = 0x17,
    /// The peer's member certificate is signed by another authority.
    CertOtherAuthority = 0x18,
    /// The peer's endpoint id is revoked.
    CertRevoked = 0x19,
    /// The peer's member certificate is malformed or its signature does not verify.
    CertInvalid = 0x1a,
}

impl CloseCode {
    pub fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            1 => CloseCode::Duplicate,
            2 => CloseCode::Disconnect,
            3 => CloseCode::OverCapacity,
            4 => CloseCode::Shutdown,
            5 => CloseCode::Unresponsive,
            0x10 => CloseCode::AppIdMismatch,
            0x11 => CloseCode::KeyMismatch,
            0x12 => CloseCode::Protocol,
            0x13 => CloseCode::Timeout,
            0x14 => CloseCode::CertMissing,
            0x15 => CloseCode::CertExpired,
            0x16 => CloseCode::CertNotYetValid,
            0x17 => CloseCode::CertOtherEndpoint,
            0x18 => CloseCode::CertOtherAuthority,
            0x19 => CloseCode::CertRevoked,
            0x1a => CloseCode::CertInvalid,
            _ => return None,
        })
    }

    pub fn varint(self) -> VarInt {
        VarInt::from_u32(self as u32)
    }

    /// The reason text sent in the close frame, for humans reading packet captures.
    pub fn reason(self) -> &'static [u8] {
        match self {
            CloseCode::Shutdown => b"shutdown",
            CloseCode::Duplicate => b"duplicate connection",
            CloseCode::Disconnect => b"disconnected by request",
            CloseCode::OverCapacity => b"connection limit reached",
            CloseCode::Unresponsive => b"no answer to a liveness probe",
            CloseCode::AppIdMismatch => b"app id mismatch",
            CloseCode::KeyMismatch => b"shared key mismatch",
            CloseCode::Protocol => b"formation protocol error",
            CloseCode::Timeout => b"formation check timed out",
            CloseCode::CertMissing => b"no member certificate",
            CloseCode::CertExpired => b"member certificate expired",
            CloseCode::CertNotYetValid => b"member certificate not yet valid",
            CloseCode::CertOtherEndpoint => b"member certificate for another endpoint id",
            CloseCode::CertOtherAuthority => b"member certificate from another authority",
            CloseCode::CertRevoked => b"member certificate revoked",
            CloseCode::CertInvalid => b"member certificate invalid",
        }
    }

    /// The close code that refuses a certificate for `r`.
    pub fn of_refusal(r: Refusal) -> Self {
        match r {
            Refusal::Missing => CloseCode::CertMissing,
            Refusal::Expired => CloseCode::CertExpired,
            Refusal::NotYetValid => CloseCode::CertNotYetValid,
            Refusal::OtherEndpoint => CloseCode::CertOtherEndpoint,
            Refusal::OtherAuthority => CloseCode::CertOtherAuthority,
            Refusal::Revoked => CloseCode::CertRevoked,
            Refusal::Invalid => CloseCode::CertInvalid,
        }
    }

    /// The certificate refusal this code stands for, if it is one.
    pub fn refusal(self) -> Option<Refusal> {
        Some(match self {
            CloseCode::CertMissing => Refusal::Missing,
            CloseCode::CertExpired => Refusal::Expired,
            CloseCode::CertNotYetValid => Refusal::NotYetValid,
            CloseCode::CertOtherEndpoint => Refusal::OtherEndpoint,
            CloseCode::CertOtherAuthority => Refusal::OtherAuthority,
            CloseCode::CertRevoked => Refusal::Revoked,
            CloseCode::CertInvalid => Refusal::Invalid,
            _ => return None,
        })
    }

    /// Whether this code means the peer is not (or not known to be) of our formation.
    pub fn is_rejection(self) -> bool {
        matches!(
            self,
            CloseCode::AppIdMismatch | CloseCode::KeyMismatch | CloseCode::Protocol
        ) || self.refusal().is_some()
    }
}

/// Why a formation check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormationError {
    #[error("app id mismatch: ours is `{ours}`, the peer's is `{theirs}`")]
    AppIdMismatch { ours: String, theirs: String },
    #[error("shared key mismatch: the peer's proof did not verify")]
    KeyMismatch,
    /// We refused the peer's member certificate.
    #[error("member certificate refused: {0}")]
    Certificate(TrustError),
    #[error("the peer rejected us: {0}")]
    RejectedByPeer(Rejection),
    #[error("formation protocol error: {0}")]
    Protocol(&'static str),
    /// With the limit that applied (see [`check_timeout`]).
    #[error("the formation check did not finish within {:.1}s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("the connection failed during the formation check: {0}")]
    Io(String),
}

/// A rejection as the peer stated it in its close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("app id mismatch")]
    AppIdMismatch,
    #[error("shared key mismatch")]
    KeyMismatch,
    #[error("protocol error")]
    Protocol,
    #[error("timeout")]
    Timeout,
    #[error("connection limit reached")]
    OverCapacity,
    /// The peer refused our member certificate.
    #[error("{}", .0.describe())]
    Certificate(Refusal),
}

impl FormationError {
    /// The close code we send for a failure that we detected.
    pub fn close_code(&self) -> CloseCode {
        match self {
            FormationError::AppIdMismatch { .. } => CloseCode::AppIdMismatch,
            FormationError::KeyMismatch => CloseCode::KeyMismatch,
            FormationError::Certificate(e) => CloseCode::of_refusal(e.refusal()),
            FormationError::Protocol(_) => CloseCode::Protocol,
            FormationError::Timeout(_) => CloseCode::Timeout,
            // Already closed by the peer or lost: the code is not seen by anyone.
            FormationError::RejectedByPeer(_) | FormationError::Io(_) => CloseCode::Protocol,
        }
    }

    /// Whether the peer is of another formation (as opposed to a transient failure):
    /// such a peer is marked rejected and retried only after a long backoff.
    pub fn is_rejection(&self) -> bool {
        match self {
            FormationError::AppIdMismatch { .. }
            | FormationError::KeyMismatch
            | FormationError::Certificate(_)
            | FormationError::Protocol(_) => true,
            FormationError::RejectedByPeer(r) => matches!(
                r,
                Rejection::AppIdMismatch
                    | Rejection::KeyMismatch
                    | Rejection::Protocol
                    | Rejection::Certificate(_)
            ),
            FormationError::Timeout(_) | FormationError::Io(_) => false,
        }
    }

    /// Turns a close code received from the peer into the error it stands for.
    pub fn from_peer_close(code: CloseCode) -> Option<Self> {
        let r = match code {
            CloseCode::AppIdMismatch => Rejection::AppIdMismatch,
            CloseCode::KeyMismatch => Rejection::KeyMismatch,
            CloseCode::Protocol => Rejection::Protocol,
            CloseCode::Timeout => Rejection::Timeout,
            CloseCode::OverCapacity => Rejection::OverCapacity,
            c => Rejection::Certificate(c.refusal()?),
        };
        Some(FormationError::RejectedByPeer(r))
    }
}

/// What a node needs to take part in the check.
#[derive(Clone)]
pub struct Formation {
    app_id: String,
    /// The key this node proves itself with when it dials.
    key: [u8; 32],
    /// Further keys a peer may prove itself with (a key change under way).
    accepted: Arc<[[u8; 32]]>,
    keyed: bool,
    /// With an authority: certificates are presented and required ([`v3`]).
    trust: Option<Arc<TrustStore>>,
}

impl std::fmt::Debug for Formation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Formation")
            .field("app_id", &self.app_id)
            .field("keyed", &self.keyed)
            .field("certificates", &self.trust.is_some())
            .finish()
    }
}

impl Formation {
    pub fn new(app_id: impl Into<String>, shared_key: Option<&SharedKey>) -> Self {
        let app_id = app_id.into();
        let (key, keyed) = match shared_key {
            Some(k) => (k.0, true),
            // Without a key the MAC only proves the app id, which is public: it keeps
            // formations apart by mistake, not by intent. See docs/SECURITY.md.
            None => {
                let mut h = Sha256::new();
                h.update(b"peat-sidecar no shared key");
                h.update(app_id.as_bytes());
                (h.finalize().into(), false)
            }
        };
        Formation {
            app_id,
            key,
            accepted: Arc::new([]),
            keyed,
            trust: None,
        }
    }

    /// Also accepts peers that prove one of `keys` (ignored without a shared key).
    pub fn with_accepted(mut self, keys: &[SharedKey]) -> Self {
        if self.keyed {
            self.accepted = keys.iter().map(|k| k.0).collect();
        }
        self
    }

    /// This formation under each key it accepts, ours first: a proof is checked
    /// against each in turn, and the answer is made with the one that matched, so that
    /// nodes with different dial keys but a common key in their rings connect.
    fn under_each_key(&self) -> impl Iterator<Item = Formation> + '_ {
        std::iter::once(self.clone()).chain(self.accepted.iter().map(|k| Formation {
            key: *k,
            ..self.clone()
        }))
    }

    /// Presents and requires member certificates of `trust`'s authority.
    pub fn with_trust(mut self, trust: Arc<TrustStore>) -> Self {
        self.trust = Some(trust);
        self
    }

    /// The trust material, if peers must present member certificates.
    pub fn trust(&self) -> Option<Arc<TrustStore>> {
        self.trust.clone()
    }

    /// Whether peers must present a member certificate ([`v3`]).
    pub fn requires_cert(&self) -> bool {
        self.trust.is_some()
    }

    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    pub fn has_shared_key(&self) -> bool {
        self.keyed
    }

    /// The acceptor's first test in every version: the dialer's app id is ours.
    fn check_app_id(&self, theirs: String) -> Result<(), FormationError> {
        if theirs == self.app_id {
            return Ok(());
        }
        Err(FormationError::AppIdMismatch {
            ours: self.app_id.clone(),
            theirs,
        })
    }

    /// The HMAC state over what every version's proof begins with: the version's label,
    /// the role and the app id (length-prefixed, so that no app id is a prefix of
    /// another's proof).
    fn mac_start(&self, label: &[u8], role: u8) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC accepts keys of any length");
        mac.update(label);
        mac.update(&[role]);
        mac.update(&(self.app_id.len() as u16).to_be_bytes());
        mac.update(self.app_id.as_bytes());
        mac
    }
}

/// Handshake messages. Field order and variant order are the wire format (postcard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    Hello {
        version: u16,
        app_id: String,
        nonce: [u8; 32],
    },
    Challenge {
        nonce: [u8; 32],
        mac: [u8; 32],
    },
    Proof {
        mac: [u8; 32],
    },
    Welcome,
    /// Version 2 (ALPN [`ALPN_V2`], see [`v2`]): the dialer's proof, bound to the
    /// connection's TLS session.
    Hello2 {
        app_id: String,
        mac: [u8; 32],
    },
    /// Version 2: the acceptor's proof, sent once the dialer's verified.
    Welcome2 {
        mac: [u8; 32],
    },
    /// Version 3 (ALPN [`ALPN_V3`], see [`v3`]): version 2's proof and the dialer's
    /// member certificate, if it has one.
    Hello3 {
        app_id: String,
        mac: [u8; 32],
        cert: Option<Vec<u8>>,
    },
    /// Version 3: the acceptor's proof and member certificate.
    Welcome3 {
        mac: [u8; 32],
        cert: Option<Vec<u8>>,
    },
}

/// Decodes one frame's payload. Public for the fuzz targets.
pub fn decode(payload: &[u8]) -> Result<Msg, FormationError> {
    if payload.len() > MAX_FRAME {
        return Err(FormationError::Protocol("handshake frame too large"));
    }
    match postcard::from_bytes::<Msg>(payload) {
        Ok(Msg::Hello { app_id, .. } | Msg::Hello2 { app_id, .. } | Msg::Hello3 { app_id, .. })
            if app_id.len() > crate::node::MAX_APP_ID_LEN =>
        {
            Err(FormationError::Protocol("app id too long"))
        }
        Ok(m) => Ok(m),
        Err(_) => Err(FormationError::Protocol("malformed handshake message")),
    }
}

async fn write_msg<W: AsyncWrite + Unpin>(w: &mut W, msg: &Msg) -> Result<(), FormationError> {
    let body = postcard::to_stdvec(msg).map_err(|_| FormationError::Protocol("cannot encode"))?;
    let mut frame = Vec::with_capacity(body.len() + 2);
    frame.extend_from_slice(&(body.len() as u16).to_be_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame)
        .await
        .map_err(|e| FormationError::Io(e.to_string()))?;
    w.flush()
        .await
        .map_err(|e| FormationError::Io(e.to_string()))
}

async fn read_msg<R: AsyncRead + Unpin>(r: &mut R) -> Result<Msg, FormationError> {
    let mut len = [0u8; 2];
    r.read_exact(&mut len)
        .await
        .map_err(|e| FormationError::Io(e.to_string()))?;
    let len = u16::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FormationError::Protocol("handshake frame too large"));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)
        .await
        .map_err(|e| FormationError::Io(e.to_string()))?;
    decode(&buf)
}

#[cfg(test)]
mod tests;

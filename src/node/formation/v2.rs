//! The formation check in one round trip (ALPN [`ALPN_V2`]), for connections whose
//! both sides speak it; [`super::ALPN`] (version 1, two round trips) stays for older
//! peers. The ALPN negotiated in the TLS handshake says which one runs: a dialer offers
//! both, an acceptor picks the first of its own list that the dialer offered.
//!
//! ```text
//! dialer                                   acceptor
//!   Hello2 { app_id, mac_d }         ->
//!                                    <-    Welcome2 { mac_a }
//! ```
//!
//! `mac_x = HMAC-SHA256(K, label | role_x | app_id | binding | id_d | id_a)`, where
//! `binding` is keying material exported from this connection's TLS session (RFC 8446
//! 7.5). Both sides derive the same binding and nobody else can: it plays the part of
//! version 1's two nonces (fresh for every connection, so a recorded proof is useless),
//! and binding both endpoint ids still stops a relay between two other nodes. Why:
//! version 1 spends a round trip exchanging nonces that TLS has already made; on a
//! lossy radio link every round trip is two more packets that QUIC may have to resend
//! after its probe timeout, so the check there took seconds (docs/PERFORMANCE.md).
//!
//! The acceptor answers only after the dialer's proof verified, so a dialer without the
//! key learns nothing it could test guesses against. A failure closes the connection
//! with a [`CloseCode`] as in version 1.

use hmac::{Hmac, Mac};
use iroh::EndpointId;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{read_msg, write_msg, Formation, FormationError, Msg, ROLE_ACCEPTOR, ROLE_DIALER};

/// ALPN of sidecar-to-sidecar connections that run the one-round-trip check.
pub const ALPN_V2: &[u8] = b"/peat-sidecar/formation/2";
/// The exporter label of the binding (RFC 8446 7.5).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-peat-sidecar-formation-2";
const LABEL_V2: &[u8] = b"peat-sidecar formation v2";

/// Keying material exported from the connection's TLS session: the same on both sides
/// of one connection, different on every other.
pub type Binding = [u8; 32];

impl Formation {
    fn keyed_v2(
        &self,
        role: u8,
        binding: &Binding,
        d: &EndpointId,
        a: &EndpointId,
    ) -> Hmac<Sha256> {
        self.keyed_bound(LABEL_V2, role, binding, (d, a))
    }

    /// The HMAC state over a proof bound to the TLS session: `label` (the version's),
    /// role, app id, binding, and the dialer's and acceptor's endpoint ids.
    pub(super) fn keyed_bound(
        &self,
        label: &[u8],
        role: u8,
        binding: &Binding,
        (d, a): (&EndpointId, &EndpointId),
    ) -> Hmac<Sha256> {
        let mut mac = self.mac_start(label, role);
        mac.update(binding);
        mac.update(d.as_bytes());
        mac.update(a.as_bytes());
        mac
    }

    fn mac_v2(&self, role: u8, binding: &Binding, d: &EndpointId, a: &EndpointId) -> [u8; 32] {
        self.keyed_v2(role, binding, d, a)
            .finalize()
            .into_bytes()
            .into()
    }

    fn verify_v2(
        &self,
        role: u8,
        binding: &Binding,
        d: &EndpointId,
        a: &EndpointId,
        tag: &[u8; 32],
    ) -> bool {
        // verify_slice compares in constant time.
        self.keyed_v2(role, binding, d, a).verify_slice(tag).is_ok()
    }

    /// Runs the dialer's side of version 2. `me` and `peer` are the TLS-authenticated
    /// endpoint ids, `binding` the connection's exported keying material.
    pub async fn dial_v2<R, W>(
        &self,
        recv: &mut R,
        send: &mut W,
        (me, peer): (EndpointId, EndpointId),
        binding: &Binding,
    ) -> Result<(), FormationError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let hello = Msg::Hello2 {
            app_id: self.app_id.clone(),
            mac: self.mac_v2(ROLE_DIALER, binding, &me, &peer),
        };
        write_msg(send, &hello).await?;
        match read_msg(recv).await? {
            Msg::Welcome2 { mac }
                if self
                    .under_each_key()
                    .any(|f| f.verify_v2(ROLE_ACCEPTOR, binding, &me, &peer, &mac)) =>
            {
                Ok(())
            }
            Msg::Welcome2 { .. } => Err(FormationError::KeyMismatch),
            _ => Err(FormationError::Protocol("expected Welcome2")),
        }
    }

    /// Runs the acceptor's side of version 2. `me` and `peer` are the TLS-authenticated
    /// endpoint ids, `binding` the connection's exported keying material.
    pub async fn accept_v2<R, W>(
        &self,
        recv: &mut R,
        send: &mut W,
        (me, peer): (EndpointId, EndpointId),
        binding: &Binding,
    ) -> Result<(), FormationError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let (app_id, mac) = match read_msg(recv).await? {
            Msg::Hello2 { app_id, mac } => (app_id, mac),
            _ => return Err(FormationError::Protocol("expected Hello2")),
        };
        self.check_app_id(app_id)?;
        let Some(f) = self
            .under_each_key()
            .find(|f| f.verify_v2(ROLE_DIALER, binding, &peer, &me, &mac))
        else {
            return Err(FormationError::KeyMismatch);
        };
        let welcome = Msg::Welcome2 {
            mac: f.mac_v2(ROLE_ACCEPTOR, binding, &peer, &me),
        };
        write_msg(send, &welcome).await
    }
}

#[cfg(test)]
mod tests {
    use iroh::SecretKey;

    use super::*;
    use crate::node::SharedKey;

    type Outcome = (Result<(), FormationError>, Result<(), FormationError>);

    fn ids() -> (EndpointId, EndpointId) {
        let id = || SecretKey::generate().public();
        (id(), id())
    }

    fn key(b: u8) -> SharedKey {
        SharedKey([b; 32])
    }

    /// Runs both sides over an in-memory pipe; each side gets its own binding (equal on
    /// a real connection).
    async fn run(dialer: Formation, acceptor: Formation, bd: Binding, ba: Binding) -> Outcome {
        let (d, a) = ids();
        let (dial_io, acc_io) = tokio::io::duplex(4096);
        let (mut dr, mut dw) = tokio::io::split(dial_io);
        let (mut ar, mut aw) = tokio::io::split(acc_io);
        let acc = tokio::spawn(async move {
            let r = acceptor.accept_v2(&mut ar, &mut aw, (a, d), &ba).await;
            // Mimic the connection close that follows a failure.
            drop((ar, aw));
            r
        });
        let dr_res = dialer.dial_v2(&mut dr, &mut dw, (d, a), &bd).await;
        drop((dr, dw));
        (dr_res, acc.await.expect("acceptor task"))
    }

    #[tokio::test]
    async fn same_app_and_key_pass_in_one_round_trip() {
        let f = || Formation::new("peat", Some(&key(1)));
        assert_eq!(run(f(), f(), [7; 32], [7; 32]).await, (Ok(()), Ok(())));
        let f = || Formation::new("peat", None);
        assert_eq!(run(f(), f(), [7; 32], [7; 32]).await, (Ok(()), Ok(())));
    }

    #[tokio::test]
    async fn mismatches_are_seen_by_the_acceptor_which_then_says_nothing() {
        let (d, a) = run(
            Formation::new("peat", Some(&key(1))),
            Formation::new("peat", Some(&key(2))),
            [7; 32],
            [7; 32],
        )
        .await;
        assert_eq!(a, Err(FormationError::KeyMismatch));
        // No Welcome2: the dialer only sees the stream end (on a connection, the close
        // code 0x11, which the caller turns into the rejection).
        assert!(matches!(d, Err(FormationError::Io(_))), "{d:?}");
        let (_, a) = run(
            Formation::new("alpha", None),
            Formation::new("bravo", None),
            [7; 32],
            [7; 32],
        )
        .await;
        assert!(
            matches!(a, Err(FormationError::AppIdMismatch { .. })),
            "{a:?}"
        );
    }

    #[tokio::test]
    async fn a_proof_from_another_connection_does_not_verify() {
        // Different bindings: a proof recorded on (or relayed from) another connection.
        let f = || Formation::new("peat", Some(&key(1)));
        let (_, a) = run(f(), f(), [7; 32], [8; 32]).await;
        assert_eq!(a, Err(FormationError::KeyMismatch));
    }

    #[test]
    fn proofs_are_bound_to_role_and_endpoint_ids() {
        let f = Formation::new("peat", Some(&key(3)));
        let ((d, a), (other, _)) = (ids(), ids());
        let b = [5; 32];
        let tag = f.mac_v2(ROLE_DIALER, &b, &d, &a);
        assert!(f.verify_v2(ROLE_DIALER, &b, &d, &a, &tag));
        assert!(
            !f.verify_v2(ROLE_ACCEPTOR, &b, &d, &a, &tag),
            "reflected proof accepted"
        );
        assert!(!f.verify_v2(ROLE_DIALER, &b, &other, &a, &tag));
        assert!(!f.verify_v2(ROLE_DIALER, &b, &d, &other, &tag));
    }

    #[tokio::test]
    async fn a_version_1_hello_is_a_protocol_error() {
        let f = Formation::new("peat", None);
        let (d, a) = ids();
        let mut frame = Vec::new();
        let hello = Msg::Hello {
            version: 1,
            app_id: "peat".into(),
            nonce: [0; 32],
        };
        write_msg(&mut frame, &hello).await.expect("encode");
        let mut input: &[u8] = &frame;
        let r = f
            .accept_v2(&mut input, &mut Vec::new(), (a, d), &[0; 32])
            .await;
        assert_eq!(r, Err(FormationError::Protocol("expected Hello2")));
    }
}

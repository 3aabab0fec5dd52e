//! Version 3 of the formation check (ALPN [`ALPN_V3`]): version 2's one round trip,
//! plus each side's member certificate, for formations with an authority
//! (`--authority-key`; docs/SECURITY.md, "Member certificates").
//!
//! ```text
//! dialer                                   acceptor
//!   Hello3 { app_id, mac_d, cert_d } ->
//!                                    <-    Welcome3 { mac_a, cert_a }
//! ```
//!
//! The MACs are version 2's under another label. TLS already proves each side's
//! endpoint id, so a certificate needs no binding of its own: it is only accepted for
//! the id TLS proved, and a copied certificate is useless without that id's secret key.
//! As in version 2 the acceptor answers only after the dialer's proof and certificate
//! verified. Which version runs is chosen by ALPN: a node with an authority offers and
//! prefers version 3, and refuses a peer that picks an older one (it cannot present a
//! certificate) with [`super::CloseCode::CertMissing`]; a node without one dials with
//! version 2 as before, and in version 3 sends no certificate and checks none.

use hmac::Mac;
use iroh::EndpointId;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{
    read_msg, write_msg, Binding, Formation, FormationError, Msg, ROLE_ACCEPTOR, ROLE_DIALER,
};

/// ALPN of sidecar-to-sidecar connections whose check carries member certificates.
pub const ALPN_V3: &[u8] = b"/peat-sidecar/formation/3";
const LABEL_V3: &[u8] = b"peat-sidecar formation v3";

impl Formation {
    fn mac_v3(&self, role: u8, binding: &Binding, ids: (&EndpointId, &EndpointId)) -> [u8; 32] {
        self.keyed_bound(LABEL_V3, role, binding, ids)
            .finalize()
            .into_bytes()
            .into()
    }

    fn verify_v3(
        &self,
        role: u8,
        binding: &Binding,
        ids: (&EndpointId, &EndpointId),
        tag: &[u8; 32],
    ) -> bool {
        // verify_slice compares in constant time.
        self.keyed_bound(LABEL_V3, role, binding, ids)
            .verify_slice(tag)
            .is_ok()
    }

    /// Our certificate, read again if its file changed; none without an authority.
    fn own_cert(&self) -> Option<Vec<u8>> {
        self.trust.as_ref().map(|t| t.own_cert())
    }

    /// Checks the peer's certificate if we have an authority.
    fn check_cert(&self, cert: Option<&[u8]>, peer: EndpointId) -> Result<(), FormationError> {
        match &self.trust {
            Some(t) => t
                .check_peer(cert, peer)
                .map(drop)
                .map_err(FormationError::Certificate),
            None => Ok(()),
        }
    }

    /// Runs the dialer's side of version 3. `me` and `peer` are the TLS-authenticated
    /// endpoint ids, `binding` the connection's exported keying material.
    pub async fn dial_v3<R, W>(
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
        let hello = Msg::Hello3 {
            app_id: self.app_id.clone(),
            mac: self.mac_v3(ROLE_DIALER, binding, (&me, &peer)),
            cert: self.own_cert(),
        };
        write_msg(send, &hello).await?;
        match read_msg(recv).await? {
            Msg::Welcome3 { mac, cert } => {
                let ids = (&me, &peer);
                if !self
                    .under_each_key()
                    .any(|f| f.verify_v3(ROLE_ACCEPTOR, binding, ids, &mac))
                {
                    return Err(FormationError::KeyMismatch);
                }
                self.check_cert(cert.as_deref(), peer)
            }
            _ => Err(FormationError::Protocol("expected Welcome3")),
        }
    }

    /// Runs the acceptor's side of version 3.
    pub async fn accept_v3<R, W>(
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
        let (app_id, mac, cert) = match read_msg(recv).await? {
            Msg::Hello3 { app_id, mac, cert } => (app_id, mac, cert),
            _ => return Err(FormationError::Protocol("expected Hello3")),
        };
        self.check_app_id(app_id)?;
        let Some(f) = self
            .under_each_key()
            .find(|f| f.verify_v3(ROLE_DIALER, binding, (&peer, &me), &mac))
        else {
            return Err(FormationError::KeyMismatch);
        };
        self.check_cert(cert.as_deref(), peer)?;
        let welcome = Msg::Welcome3 {
            mac: f.mac_v3(ROLE_ACCEPTOR, binding, (&peer, &me)),
            cert: self.own_cert(),
        };
        write_msg(send, &welcome).await
    }
}

#[cfg(test)]
mod tests;

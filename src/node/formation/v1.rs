//! Version 1 of the formation check (ALPN [`super::ALPN`]): two round trips with a
//! nonce from each side, for peers older than version 2 (see the module above for the
//! protocol and why each field is bound).

use hmac::{Hmac, Mac};
use iroh::EndpointId;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{
    read_msg, write_msg, Formation, FormationError, Msg, LABEL, ROLE_ACCEPTOR, ROLE_DIALER, VERSION,
};

impl Formation {
    /// The HMAC state over everything a proof binds: label, role, app id, both nonces and
    /// both endpoint ids.
    fn keyed(&self, role: u8, t: &Transcript) -> Hmac<Sha256> {
        let mut mac = self.mac_start(LABEL, role);
        mac.update(&t.nonce_dialer);
        mac.update(&t.nonce_acceptor);
        mac.update(t.dialer.as_bytes());
        mac.update(t.acceptor.as_bytes());
        mac
    }

    pub(super) fn mac(&self, role: u8, t: &Transcript) -> [u8; 32] {
        self.keyed(role, t).finalize().into_bytes().into()
    }

    pub(super) fn verify(&self, role: u8, t: &Transcript, tag: &[u8; 32]) -> bool {
        // verify_slice compares in constant time.
        self.keyed(role, t).verify_slice(tag).is_ok()
    }

    /// Runs the dialer's side. `me` and `peer` are the TLS-authenticated endpoint ids.
    pub async fn dial<R, W>(
        &self,
        recv: &mut R,
        send: &mut W,
        me: EndpointId,
        peer: EndpointId,
    ) -> Result<(), FormationError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let nonce_dialer: [u8; 32] = rand::random();
        write_msg(
            send,
            &Msg::Hello {
                version: VERSION,
                app_id: self.app_id.clone(),
                nonce: nonce_dialer,
            },
        )
        .await?;
        let (nonce_acceptor, mac_acceptor) = match read_msg(recv).await? {
            Msg::Challenge { nonce, mac } => (nonce, mac),
            _ => return Err(FormationError::Protocol("expected Challenge")),
        };
        let t = Transcript {
            nonce_dialer,
            nonce_acceptor,
            dialer: me,
            acceptor: peer,
        };
        let Some(f) = self
            .under_each_key()
            .find(|f| f.verify(ROLE_ACCEPTOR, &t, &mac_acceptor))
        else {
            return Err(FormationError::KeyMismatch);
        };
        write_msg(
            send,
            &Msg::Proof {
                mac: f.mac(ROLE_DIALER, &t),
            },
        )
        .await?;
        match read_msg(recv).await? {
            Msg::Welcome => Ok(()),
            _ => Err(FormationError::Protocol("expected Welcome")),
        }
    }

    /// Runs the acceptor's side. `me` and `peer` are the TLS-authenticated endpoint ids.
    pub async fn accept<R, W>(
        &self,
        recv: &mut R,
        send: &mut W,
        me: EndpointId,
        peer: EndpointId,
    ) -> Result<(), FormationError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let (version, app_id, nonce_dialer) = match read_msg(recv).await? {
            Msg::Hello {
                version,
                app_id,
                nonce,
            } => (version, app_id, nonce),
            _ => return Err(FormationError::Protocol("expected Hello")),
        };
        if version != VERSION {
            return Err(FormationError::Protocol(
                "unsupported formation protocol version",
            ));
        }
        self.check_app_id(app_id)?;
        let nonce_acceptor: [u8; 32] = rand::random();
        let t = Transcript {
            nonce_dialer,
            nonce_acceptor,
            dialer: peer,
            acceptor: me,
        };
        write_msg(
            send,
            &Msg::Challenge {
                nonce: nonce_acceptor,
                mac: self.mac(ROLE_ACCEPTOR, &t),
            },
        )
        .await?;
        match read_msg(recv).await? {
            Msg::Proof { mac }
                if self
                    .under_each_key()
                    .any(|f| f.verify(ROLE_DIALER, &t, &mac)) => {}
            Msg::Proof { .. } => return Err(FormationError::KeyMismatch),
            _ => return Err(FormationError::Protocol("expected Proof")),
        }
        write_msg(send, &Msg::Welcome).await?;
        Ok(())
    }
}

/// What version 1's proofs bind besides the key: both nonces and both endpoint ids.
pub(super) struct Transcript {
    pub(super) nonce_dialer: [u8; 32],
    pub(super) nonce_acceptor: [u8; 32],
    pub(super) dialer: EndpointId,
    pub(super) acceptor: EndpointId,
}

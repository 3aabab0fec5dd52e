//! Application streams on authenticated peer connections.
//!
//! After the formation check, a connection carries further bidirectional streams for
//! protocols such as gossip. The opener writes one tag byte naming the protocol; the
//! router on the other side reads it and hands the stream to whoever registered that
//! tag, together with the connection it came on. Streams with an unknown tag are reset,
//! so an older sidecar ignores protocols it does not know. Protocols that act on new
//! connections (gossip exchanges at once) subscribe with [`StreamRegistry::connections`]
//! and get each authenticated connection as its router starts.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use iroh::{
    endpoint::{Connection, RecvStream, SendStream, VarInt},
    EndpointId,
};
use tokio::sync::mpsc;
use tracing::debug;

/// Stream tags. Numbers are part of the wire protocol: never reuse one.
pub mod tag {
    /// Gossip peer-table exchange.
    pub const GOSSIP: u8 = 1;
    /// Data plane frames (`crate::data`): one long-lived stream per direction.
    pub const DATA: u8 = 2;
    /// Liveness probe: an echo (src/node/liveness/probe.rs).
    pub const PING: u8 = 3;
    /// The data plane's hello: an empty stream saying that its opener reads data
    /// frames of version 2 (`crate::data::wire`).
    pub const DATA_V2: u8 = 4;

    /// Every tag, for the check that no two protocols share one.
    pub const ALL: [u8; 4] = [GOSSIP, DATA, PING, DATA_V2];

    #[cfg(test)]
    mod tests {
        #[test]
        fn no_two_protocols_share_a_tag() {
            let mut seen = std::collections::HashSet::new();
            assert!(
                super::ALL.iter().all(|t| seen.insert(*t)),
                "{:?}",
                super::ALL
            );
        }
    }
}

/// How long the opener has to send the tag byte.
const TAG_TIMEOUT: Duration = Duration::from_secs(5);
/// Queue of inbound streams per protocol; beyond it, new streams are reset.
const QUEUE: usize = 64;

/// An inbound stream handed to a protocol.
pub struct InboundStream {
    pub peer: EndpointId,
    /// The authenticated connection the stream came on.
    pub conn: Connection,
    pub send: SendStream,
    pub recv: RecvStream,
}

#[derive(Clone, Default)]
pub struct StreamRegistry {
    handlers: Arc<RwLock<HashMap<u8, mpsc::Sender<InboundStream>>>>,
    connected: Arc<RwLock<Vec<mpsc::Sender<Connection>>>>,
}

impl StreamRegistry {
    /// Registers a protocol; later registrations of the same tag replace earlier ones.
    pub fn register(&self, tag: u8) -> mpsc::Receiver<InboundStream> {
        let (tx, rx) = mpsc::channel(QUEUE);
        if let Ok(mut h) = self.handlers.write() {
            h.insert(tag, tx);
        }
        rx
    }

    /// Every authenticated connection from now on, as its router starts. A slow
    /// subscriber misses connections rather than holding up the router.
    pub fn connections(&self) -> mpsc::Receiver<Connection> {
        let (tx, rx) = mpsc::channel(QUEUE);
        if let Ok(mut c) = self.connected.write() {
            c.push(tx);
        }
        rx
    }

    /// Hands `conn` to every [`Self::connections`] subscriber.
    pub(crate) fn announce(&self, conn: &Connection) {
        let Ok(mut subs) = self.connected.write() else {
            return;
        };
        subs.retain(|tx| !tx.is_closed());
        for tx in subs.iter() {
            if tx.try_send(conn.clone()).is_err() {
                debug!(peer = %conn.remote_id(), "connection subscriber busy; it misses one");
            }
        }
    }

    fn handler(&self, tag: u8) -> Option<mpsc::Sender<InboundStream>> {
        self.handlers.read().ok()?.get(&tag).cloned()
    }

    /// Accepts streams on `conn` until it closes, routing each by its tag. `announce`:
    /// first hand it to the [`Self::connections`] subscribers.
    pub(crate) async fn route(&self, conn: Connection, announce: bool) {
        let peer = conn.remote_id();
        if announce {
            self.announce(&conn);
        }
        while let Ok((send, mut recv)) = conn.accept_bi().await {
            let mut t = [0u8; 1];
            match tokio::time::timeout(TAG_TIMEOUT, recv.read_exact(&mut t)).await {
                Ok(Ok(_)) => {}
                _ => continue,
            }
            let delivered = match self.handler(t[0]) {
                Some(h) => h
                    .try_send(InboundStream {
                        peer,
                        conn: conn.clone(),
                        send,
                        recv,
                    })
                    .is_ok(),
                None => {
                    debug!(%peer, tag = t[0], "stream with an unknown protocol tag; resetting it");
                    let mut send = send;
                    let _ = send.reset(VarInt::from_u32(1));
                    true
                }
            };
            if !delivered {
                debug!(%peer, tag = t[0], "protocol queue full; dropping a stream");
            }
        }
    }
}

/// Opens a stream for protocol `tag` on an authenticated connection.
pub async fn open(conn: &Connection, tag: u8) -> Result<(SendStream, RecvStream), std::io::Error> {
    let (mut send, recv) = conn.open_bi().await.map_err(std::io::Error::other)?;
    send.write_all(&[tag])
        .await
        .map_err(std::io::Error::other)?;
    Ok((send, recv))
}

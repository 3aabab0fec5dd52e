//! The cheap, cloneable handle through which the API, the accept loop and the
//! discovery sources talk to the peer manager's task, and the commands it sends.

use std::sync::Arc;

use iroh::{
    endpoint::{Connection, ConnectionError},
    EndpointId,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::types::{Counters, DialError, PeerInfo, RequestError};
use crate::{
    events::{DiscoveryEvent, PeerEvent},
    node::PeerHost,
    node::{formation::FormationError, streams::StreamRegistry},
};

/// Commands to the manager's task.
pub enum Command {
    Discovery(DiscoveryEvent),
    Connect {
        id: EndpointId,
        hosts: Vec<PeerHost>,
        reply: oneshot::Sender<Result<PeerInfo, RequestError>>,
    },
    Disconnect {
        id: EndpointId,
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
    Forget {
        id: EndpointId,
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
    Void {
        id: EndpointId,
        refusal: crate::trust::Refusal,
    },
    List {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    Connections {
        reply: oneshot::Sender<Vec<(EndpointId, Connection)>>,
    },
    DialDone {
        id: EndpointId,
        result: Result<Connection, DialError>,
    },
    Incoming {
        conn: Connection,
    },
    IncomingFailed {
        id: EndpointId,
        error: FormationError,
    },
    Closed {
        id: EndpointId,
        conn_id: usize,
        reason: ConnectionError,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Cheap, cloneable handle to the manager.
#[derive(Clone)]
pub struct PeerManagerHandle {
    pub(super) tx: mpsc::Sender<Command>,
    /// Discovery's events: a channel the manager serves last (see the driver).
    pub(super) discovery_tx: mpsc::Sender<Command>,
    pub(super) events: broadcast::Sender<PeerEvent>,
    pub counters: Arc<Counters>,
    /// Protocols that run on authenticated connections register here.
    pub streams: StreamRegistry,
}

impl PeerManagerHandle {
    pub(crate) fn sender(&self) -> mpsc::Sender<Command> {
        self.tx.clone()
    }

    /// Where discovery sources send their events ([`Command::Discovery`]).
    pub(crate) fn discovery_sender(&self) -> mpsc::Sender<Command> {
        self.discovery_tx.clone()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<PeerEvent> {
        self.events.subscribe()
    }

    /// Sends a command that carries a reply channel and waits for the reply; None once
    /// the manager has stopped.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.ok()?;
        rx.await.ok()
    }

    pub async fn list(&self) -> Vec<PeerInfo> {
        self.ask(|reply| Command::List { reply })
            .await
            .unwrap_or_default()
    }

    /// The live, authenticated connections. Gossip exchanges tables over these.
    pub async fn connections(&self) -> Vec<(EndpointId, Connection)> {
        self.ask(|reply| Command::Connections { reply })
            .await
            .unwrap_or_default()
    }

    pub async fn connect(
        &self,
        id: EndpointId,
        hosts: Vec<PeerHost>,
    ) -> Result<PeerInfo, RequestError> {
        self.ask(|reply| Command::Connect { id, hosts, reply })
            .await
            .unwrap_or(Err(RequestError::ShuttingDown))
    }

    pub async fn disconnect(&self, id: EndpointId) -> Result<(), RequestError> {
        self.ask(|reply| Command::Disconnect { id, reply })
            .await
            .unwrap_or(Err(RequestError::ShuttingDown))
    }

    /// Removes a peer from the table (not a `--peer` entry); it is dialled again only
    /// when a source finds it again.
    pub async fn forget(&self, id: EndpointId) -> Result<(), RequestError> {
        self.ask(|reply| Command::Forget { id, reply })
            .await
            .unwrap_or(Err(RequestError::ShuttingDown))
    }

    /// Tells the manager that `id`'s member certificate no longer holds (revoked, or
    /// ended; the trust store already refuses it): its connections close.
    pub async fn void(&self, id: EndpointId, refusal: crate::trust::Refusal) {
        let _ = self.tx.send(Command::Void { id, refusal }).await;
    }

    /// Closes every connection with the close code *shutdown* and stops the manager.
    pub async fn shutdown(&self) {
        let _ = self.ask(|reply| Command::Shutdown { reply }).await;
    }
}

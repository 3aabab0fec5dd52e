//! The peer manager's task: owns the channels, the connections and the callers'
//! reply channels, feeds each command to the pure [`Core`] and carries out the
//! actions it returns (spawning dials and connection watchers, closing, emitting,
//! answering). It decides nothing itself.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use iroh::{endpoint::Connection, Endpoint, EndpointId};
use tokio::{
    sync::{broadcast, mpsc, oneshot},
    task::JoinSet,
};
use tracing::{debug, info};

use super::{
    core::{Action, Answer, Core, Input},
    dial::dial,
    handle::{Command, PeerManagerHandle},
    row::{ConnId, NewConn, PathNow, Ticket},
    rules::DialTimeouts,
    types::{Counters, GaugeGuard, Limits, PeerInfo, RequestError, TaskGuard},
};
use crate::{
    events::PeerEvent,
    node::PeerHost,
    node::{
        formation::{CloseCode, Formation},
        path,
        streams::StreamRegistry,
    },
};

/// How often closed reply channels (a ConnectPeer caller that gave up) are looked for
/// while any caller waits.
const ABANDON_CHECK: Duration = Duration::from_secs(1);

/// A caller's reply channel.
enum Reply {
    Connect(oneshot::Sender<Result<PeerInfo, RequestError>>),
    /// DisconnectPeer, ForgetPeer.
    Unit(oneshot::Sender<Result<(), RequestError>>),
}

impl Reply {
    fn is_closed(&self) -> bool {
        match self {
            Reply::Connect(tx) => tx.is_closed(),
            Reply::Unit(tx) => tx.is_closed(),
        }
    }
}

pub struct PeerManager {
    core: Core,
    endpoint: Endpoint,
    formation: Formation,
    rx: mpsc::Receiver<Command>,
    /// Discovery's events, on a channel of their own: served after everything else, so
    /// that a flood of records never queues an inbound connection, a finished dial or
    /// a request behind it.
    discovery_rx: mpsc::Receiver<Command>,
    tx: mpsc::WeakSender<Command>,
    events: broadcast::Sender<PeerEvent>,
    counters: Arc<Counters>,
    streams: StreamRegistry,
    conns: HashMap<ConnId, Connection>,
    replies: HashMap<Ticket, Reply>,
    next_ticket: Ticket,
    /// Dials in flight, aborted at shutdown: a handshake still running would hold the
    /// endpoint's close until it times out.
    dial_tasks: JoinSet<()>,
}

impl PeerManager {
    pub fn new(
        endpoint: Endpoint,
        formation: Formation,
        limits: Limits,
    ) -> (Self, PeerManagerHandle) {
        let (tx, rx) = mpsc::channel(1024);
        let (discovery_tx, discovery_rx) = mpsc::channel(1024);
        let (events, _) = broadcast::channel(1024);
        let counters = Arc::new(Counters::default());
        let streams = StreamRegistry::default();
        let handle = PeerManagerHandle {
            tx: tx.clone(),
            discovery_tx,
            events: events.clone(),
            counters: counters.clone(),
            streams: streams.clone(),
        };
        let core = Core::new(endpoint.id(), limits, counters.clone(), Instant::now());
        let mgr = PeerManager {
            core,
            endpoint,
            formation,
            rx,
            discovery_rx,
            tx: tx.downgrade(),
            events,
            counters,
            streams,
            conns: HashMap::new(),
            replies: HashMap::new(),
            next_ticket: 0,
            dial_tasks: JoinSet::new(),
        };
        (mgr, handle)
    }

    /// Adds `--peer` entries before the manager starts.
    pub fn add_static(&mut self, id: EndpointId, host: PeerHost) {
        self.core.add_static(id, host, Instant::now());
    }

    /// Runs until [`Command::Shutdown`].
    pub async fn run(mut self) {
        loop {
            let wake = self.next_wake();
            let sleep = async {
                match wake {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            // Biased: connections, dial results, requests and ticks before discovery.
            tokio::select! {
                biased;
                cmd = self.rx.recv() => match cmd {
                    None => break,
                    Some(Command::Shutdown { reply }) => {
                        self.feed(Input::Shutdown);
                        self.dial_tasks.abort_all();
                        let _ = reply.send(());
                        break;
                    }
                    Some(cmd) => self.on_command(cmd),
                },
                _ = sleep => self.tick(),
                Some(_) = self.dial_tasks.join_next(), if !self.dial_tasks.is_empty() => {}
                Some(cmd) = self.discovery_rx.recv() => self.on_command(cmd),
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let now = Instant::now();
        let core = self.core.next_deadline(now);
        let callers = (!self.replies.is_empty()).then(|| now + ABANDON_CHECK);
        core.into_iter().chain(callers).min()
    }

    fn tick(&mut self) {
        let gone: Vec<Ticket> = self
            .replies
            .iter()
            .filter(|(_, r)| r.is_closed())
            .map(|(t, _)| *t)
            .collect();
        for ticket in gone {
            self.replies.remove(&ticket);
            self.feed(Input::Abandoned { ticket });
        }
        self.feed(Input::Tick);
    }

    fn ticket(&mut self, reply: Reply) -> Ticket {
        self.next_ticket += 1;
        self.replies.insert(self.next_ticket, reply);
        self.next_ticket
    }

    /// Keeps a connection the core will refer to by its id.
    fn keep(&mut self, conn: Connection) -> NewConn {
        let new = NewConn {
            id: conn.stable_id(),
            remote: path::remote_addr(&conn),
            rtt: path::rtt(&conn),
        };
        self.conns.insert(new.id, conn);
        new
    }

    fn on_command(&mut self, cmd: Command) {
        let input = match cmd {
            Command::Discovery(event) => Input::Discovery(event),
            Command::Connect { id, hosts, reply } => Input::Connect {
                id,
                hosts,
                ticket: self.ticket(Reply::Connect(reply)),
            },
            Command::Disconnect { id, reply } => Input::Disconnect {
                id,
                ticket: self.ticket(Reply::Unit(reply)),
            },
            Command::Forget { id, reply } => Input::Forget {
                id,
                ticket: self.ticket(Reply::Unit(reply)),
            },
            Command::Void { id, refusal } => Input::Void { id, refusal },
            Command::List { reply } => return drop(reply.send(self.list())),
            Command::Connections { reply } => return drop(reply.send(self.connections())),
            Command::DialDone { id, result } => Input::DialDone {
                id,
                result: result.map(|c| self.keep(c)),
            },
            Command::Incoming { conn } => Input::Incoming {
                id: conn.remote_id(),
                conn: self.keep(conn),
            },
            Command::IncomingFailed { id, error } => Input::IncomingFailed { id, error },
            Command::Closed {
                id,
                conn_id,
                reason,
            } => {
                self.conns.remove(&conn_id);
                Input::Closed {
                    id,
                    conn: conn_id,
                    reason,
                }
            }
            Command::Shutdown { .. } => Input::Shutdown,
        };
        self.feed(input);
    }

    fn feed(&mut self, input: Input) {
        for action in self.core.handle(input, Instant::now()) {
            self.apply(action);
        }
    }

    fn list(&self) -> Vec<PeerInfo> {
        let now = Instant::now();
        let mut list: Vec<PeerInfo> = self
            .core
            .peers
            .iter()
            .map(|(id, p)| self.info_of(id, p, now))
            .collect();
        list.sort_by(|a, b| a.endpoint_id.cmp(&b.endpoint_id));
        list
    }

    /// A row's snapshot with what only the live connection knows: RTT and bytes.
    fn info_of(&self, id: &EndpointId, p: &super::row::Peer, now: Instant) -> PeerInfo {
        let conn = p.live().and_then(|l| self.conns.get(&l.conn));
        let path = PathNow {
            rtt: conn.and_then(path::rtt),
            remote: conn.and_then(path::remote_addr),
        };
        let mut info = p.info(id, path, now);
        if let Some(stats) = conn.map(|c| c.stats()) {
            info.bytes_sent = Some(stats.udp_tx.bytes);
            info.bytes_received = Some(stats.udp_rx.bytes);
        }
        if let Some(p) = conn.and_then(path::packets) {
            info.packets_sent = Some(p.sent);
            info.packets_lost = Some(p.lost);
        }
        info
    }

    fn connections(&self) -> Vec<(EndpointId, Connection)> {
        self.core
            .peers
            .iter()
            .filter_map(|(id, p)| Some((*id, self.conns.get(&p.live()?.conn)?.clone())))
            .collect()
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::Dial {
                id,
                addrs,
                hosts,
                timeout,
            } => self.spawn_dial(id, addrs, hosts, timeout),
            Action::Close { conn, code } => {
                if let Some(c) = self.conns.remove(&conn) {
                    c.close(code.varint(), code.reason());
                }
            }
            Action::CloseAfter { conn, code, after } => self.close_after(conn, code, after),
            Action::Watch { id, conn, announce } => self.watch(id, conn, announce),
            Action::Announce { id, conn } => {
                if let Some(c) = self.conns.get(&conn) {
                    info!(peer = %id, addr = %addr_of(c), "peer connected on the standby connection");
                    self.streams.announce(c);
                }
            }
            Action::Emit { id, kind, detail } => {
                // No subscriber is fine: the send error only says nobody is watching.
                let _ = self.events.send(PeerEvent::now(id, kind, detail));
            }
            Action::Answer { ticket, answer } => self.answer(ticket, answer),
        }
    }

    fn answer(&mut self, ticket: Ticket, answer: Answer) {
        let Some(reply) = self.replies.remove(&ticket) else {
            return;
        };
        let now = Instant::now();
        match (reply, answer) {
            (Reply::Connect(tx), Answer::Connected(id)) => {
                let info = self.core.peers.get(&id).map(|p| self.info_of(&id, p, now));
                let _ = tx.send(info.ok_or(RequestError::NotFound(id)));
            }
            (Reply::Connect(tx), Answer::Failed(e)) => drop(tx.send(Err(e))),
            (Reply::Unit(tx), Answer::Failed(e)) => drop(tx.send(Err(e))),
            (Reply::Unit(tx), _) => drop(tx.send(Ok(()))),
            (Reply::Connect(tx), Answer::Done) => drop(tx.send(Err(RequestError::ShuttingDown))),
        }
    }

    fn spawn_dial(
        &mut self,
        id: EndpointId,
        addrs: Vec<std::net::SocketAddr>,
        hosts: Vec<PeerHost>,
        timeout: DialTimeouts,
    ) {
        let endpoint = self.endpoint.clone();
        let formation = self.formation.clone();
        let tx = self.tx.clone();
        let guard = TaskGuard::new(&self.counters);
        let in_flight = GaugeGuard::new(&self.counters, |c| &c.dials_in_flight);
        let counters = self.counters.clone();
        self.dial_tasks.spawn(async move {
            let _guard = guard;
            let _in_flight = in_flight;
            let result = dial(&endpoint, &formation, id, addrs, hosts, timeout).await;
            if let Err(super::DialError::Formation(e)) = &result {
                counters.count_refusal(e);
            }
            if let Some(tx) = tx.upgrade() {
                let _ = tx.send(Command::DialDone { id, result }).await;
            }
        });
    }

    fn close_after(&self, conn: ConnId, code: CloseCode, after: Duration) {
        let Some(closing) = self.conns.get(&conn).cloned() else {
            return;
        };
        let guard = TaskGuard::new(&self.counters);
        tokio::spawn(async move {
            let _guard = guard;
            tokio::select! {
                _ = tokio::time::sleep(after) => closing.close(code.varint(), code.reason()),
                _ = closing.closed() => {}
            }
        });
    }

    /// Watches an installed connection: routes the streams the peer opens to the
    /// protocols that want them, and tells the core when the connection ends.
    /// `announce`: also hand it to the protocols that act on new connections (not for
    /// a standby, which only the peer may use until it takes over).
    fn watch(&self, id: EndpointId, conn_id: ConnId, announce: bool) {
        let Some(conn) = self.conns.get(&conn_id).cloned() else {
            return;
        };
        let addr = addr_of(&conn);
        if announce {
            let live = self.core.peers.get(&id).and_then(|p| p.live()).copied();
            let outbound = live.is_some_and(|l| l.outbound);
            info!(peer = %id, outbound, %addr, "peer connected");
        } else {
            debug!(peer = %id, %addr, "standby connection watched");
        }
        let tx = self.tx.clone();
        let guard = TaskGuard::new(&self.counters);
        let live = GaugeGuard::new(&self.counters, |c| &c.connections_live);
        let streams = self.streams.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let _live = live;
            let router = streams.route(conn.clone(), announce);
            let reason = tokio::select! {
                reason = conn.closed() => reason,
                _ = router => conn.closed().await,
            };
            if let Some(tx) = tx.upgrade() {
                let closed = Command::Closed {
                    id,
                    conn_id,
                    reason,
                };
                let _ = tx.send(closed).await;
            }
        });
    }
}

/// The peer's address on the connection's selected path, for logs.
fn addr_of(conn: &Connection) -> String {
    path::remote_addr(conn).map_or_else(|| "?".to_string(), |a| a.to_string())
}

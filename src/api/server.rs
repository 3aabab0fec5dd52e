//! The gRPC server: the Sidecar service, health and reflection, on TCP or a Unix socket.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use futures::Stream;
use iroh::EndpointId;
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::{
    wrappers::{
        errors::BroadcastStreamRecvError, BroadcastStream, TcpListenerStream, UnixListenerStream,
    },
    StreamExt,
};
use tokio_util::sync::CancellationToken;
use tonic::{transport::Server, Request, Response, Status};
use tracing::{info, warn};

use super::pb::{self, sidecar_server::SidecarServer};
use crate::{
    config::{parse_endpoint_id, ListenAddr, PeerHost},
    data::DataPlane,
    node::peers::{PeerManagerHandle, RequestError, DIAL_FAILURE_REASONS, HANDSHAKE_OUTCOMES},
    trust::store::TrustStore,
};

/// Longest request string fields accepted before parsing, against abuse.
const MAX_FIELD: usize = 1024;
/// Most addresses in one ConnectPeer.
const MAX_ADDRESSES: usize = 16;
/// Longest a ConnectPeer may wait.
const MAX_CONNECT_WAIT: Duration = Duration::from_secs(60);
/// How long ConnectPeer waits when the request does not say.
pub const DEFAULT_CONNECT_WAIT: Duration = Duration::from_secs(10);
/// How long the server waits at shutdown for clients to take the end of their streams;
/// a client that stopped reading must not hold the daemon's exit.
const DRAIN_WAIT: Duration = Duration::from_secs(1);
/// `kind` of the last event on every WatchPeers stream when the sidecar stops.
pub const SHUTDOWN_EVENT: &str = "shutdown";

/// What GetStatus reports besides the peer table.
#[derive(Debug, Clone)]
pub struct StatusInfo {
    pub endpoint_id: EndpointId,
    pub app_id: String,
    pub discovery_modes: Vec<String>,
    pub listen: String,
    pub bound_addrs: Vec<String>,
    pub shared_key: bool,
    pub started: Instant,
    /// iroh's own counters, read for /metrics.
    pub iroh: iroh::metrics::EndpointMetrics,
}

#[derive(Clone)]
pub struct SidecarService {
    peers: PeerManagerHandle,
    status: Arc<StatusInfo>,
    /// Fired at shutdown: ends every WatchPeers stream, then the server.
    stop: CancellationToken,
    /// The data plane; without it the data methods answer UNAVAILABLE.
    data: Option<DataPlane>,
    /// The formation's authority and the revocations held, if it has an authority.
    trust: Option<Arc<TrustStore>>,
}

impl SidecarService {
    pub fn new(peers: PeerManagerHandle, status: StatusInfo) -> Self {
        SidecarService {
            peers,
            status: Arc::new(status),
            stop: CancellationToken::new(),
            data: None,
            trust: None,
        }
    }

    pub fn with_data(mut self, data: DataPlane) -> Self {
        self.data = Some(data);
        self
    }

    /// Revoke needs the authority's key to check what it is handed.
    pub fn with_trust(mut self, trust: Option<Arc<TrustStore>>) -> Self {
        self.trust = trust;
        self
    }

    /// The data plane, when the daemon runs one (the operator's page reads it).
    pub fn data(&self) -> Option<&DataPlane> {
        self.data.as_ref()
    }

    /// iroh binds sockets of the families `--bind` names: an IPv6 address behind an
    /// IPv4 bind can never be dialled, and would only time out.
    fn check_family(&self, host: &PeerHost) -> Result<(), Status> {
        let PeerHost::Addr(a) = host else {
            return Ok(());
        };
        let bound: Vec<std::net::SocketAddr> = self
            .status
            .bound_addrs
            .iter()
            .filter_map(|b| b.parse().ok())
            .collect();
        if a.is_ipv6() && !bound.is_empty() && bound.iter().all(|b| b.is_ipv4()) {
            return Err(Status::invalid_argument(format!(
                "{a}: the address family does not match: this sidecar's endpoint is bound to IPv4 only ({}); give the peer's IPv4 address or run it with --bind [::]:PORT",
                self.status.bound_addrs.join(", ")
            )));
        }
        Ok(())
    }

    /// Fired at shutdown; the metrics server and the systemd notifier stop with it.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }
}

/// What GetStatus and ListPeers answer, from one read of the peer table. The metrics
/// endpoint and the systemd watchdog read the same snapshot, so they report exactly
/// what the API does and depend on nothing inside the peer manager.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub status: pb::GetStatusResponse,
    pub peers: Vec<pb::Peer>,
    pub iroh: Vec<super::metrics_iroh::IrohSample>,
}

impl SidecarService {
    pub async fn snapshot(&self) -> Snapshot {
        let mut peers: Vec<pb::Peer> = self
            .peers
            .list()
            .await
            .into_iter()
            .map(Into::into)
            .collect();
        if let Some(d) = &self.data {
            super::data::fill_peer_counters(d, &mut peers);
        }
        let connected = peers
            .iter()
            .filter(|p| p.state == pb::PeerState::Connected as i32)
            .count();
        let c = &self.peers.counters;
        let s = &self.status;
        let status = pb::GetStatusResponse {
            endpoint_id: s.endpoint_id.to_string(),
            app_id: s.app_id.clone(),
            discovery_modes: s.discovery_modes.clone(),
            listen: s.listen.clone(),
            bound_addrs: s.bound_addrs.clone(),
            connected_peers: connected as u32,
            known_peers: peers.len() as u32,
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_secs: s.started.elapsed().as_secs(),
            shared_key: s.shared_key,
            counters: Some(pb::Counters {
                dials_started: c.dials_started.load(Ordering::Relaxed),
                dials_failed: c.dials_failed.load(Ordering::Relaxed),
                connections_opened: c.connections_opened.load(Ordering::Relaxed),
                connections_closed: c.connections_closed.load(Ordering::Relaxed),
                handshakes_rejected: c.handshakes_rejected.load(Ordering::Relaxed),
                incoming_refused: c.incoming_refused.load(Ordering::Relaxed),
                duplicates_closed: c.duplicates_closed.load(Ordering::Relaxed),
                peers_evicted: c.peers_evicted.load(Ordering::Relaxed),
                live_tasks: c.live_tasks.load(Ordering::Relaxed),
                dials_in_flight: c.dials_in_flight.load(Ordering::Relaxed),
                handshakes_pending: c.handshakes_pending.load(Ordering::Relaxed),
                mdns_records: c.mdns_records.load(Ordering::Relaxed),
                mdns_other_app_records: c.mdns_other_app_records.load(Ordering::Relaxed),
                runtime_tasks: tokio::runtime::Handle::current()
                    .metrics()
                    .num_alive_tasks() as u64,
                connections_live: c.connections_live.load(Ordering::Relaxed),
                dial_failures: by_label(&DIAL_FAILURE_REASONS, &c.dial_failures),
                incoming_handshakes: by_label(&HANDSHAKE_OUTCOMES, &c.incoming_handshakes),
                certificate_refusals: by_label(&crate::trust::REFUSAL_REASONS, &c.cert_refusals),
                gossip_rounds: c.gossip_rounds.load(Ordering::Relaxed),
                dns_rounds: c.dns_rounds.load(Ordering::Relaxed),
                mdns_daemon: c
                    .mdns_daemon
                    .lock()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
                    .unwrap_or_default(),
            }),
            data: self.data.as_ref().map(super::data::stats),
        };
        Snapshot {
            status,
            peers,
            iroh: super::metrics_iroh::read(&self.status.iroh),
        }
    }
}

/// Counters kept per label, as a map for the API (zeros included).
fn by_label(
    labels: &[&str],
    values: &[std::sync::atomic::AtomicU64],
) -> std::collections::HashMap<String, u64> {
    labels
        .iter()
        .zip(values)
        .map(|(l, v)| (l.to_string(), v.load(Ordering::Relaxed)))
        .collect()
}

fn parse_id_field(s: &str) -> Result<EndpointId, Status> {
    if s.len() > MAX_FIELD {
        return Err(Status::invalid_argument(format!(
            "endpoint_id is {} bytes long; expected 64 hex characters",
            s.len()
        )));
    }
    parse_endpoint_id(s).map_err(Status::invalid_argument)
}

fn request_status(e: RequestError) -> Status {
    match e {
        RequestError::SelfConnect | RequestError::NoAddress(_) => {
            Status::invalid_argument(e.to_string())
        }
        RequestError::NotFound(_) => Status::not_found(e.to_string()),
        RequestError::DialFailed(_) => Status::unavailable(e.to_string()),
        RequestError::TableFull(_) => Status::resource_exhausted(e.to_string()),
        RequestError::Configured(_) => Status::failed_precondition(e.to_string()),
        RequestError::Forgotten(_) => Status::aborted(e.to_string()),
        RequestError::ShuttingDown => Status::unavailable(e.to_string()),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::PeerEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::sidecar_server::Sidecar for SidecarService {
    async fn get_status(
        &self,
        _req: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        Ok(Response::new(self.snapshot().await.status))
    }

    async fn connect_peer(
        &self,
        req: Request<pb::ConnectPeerRequest>,
    ) -> Result<Response<pb::ConnectPeerResponse>, Status> {
        let req = req.into_inner();
        let id = parse_id_field(&req.endpoint_id)?;
        if req.addresses.len() > MAX_ADDRESSES {
            return Err(Status::invalid_argument(format!(
                "{} addresses given; at most {MAX_ADDRESSES} are accepted",
                req.addresses.len()
            )));
        }
        let mut hosts = Vec::with_capacity(req.addresses.len());
        for a in &req.addresses {
            if a.len() > MAX_FIELD {
                return Err(Status::invalid_argument(
                    "an address is longer than 1024 bytes",
                ));
            }
            let host = a
                .parse::<PeerHost>()
                .map_err(|e| Status::invalid_argument(format!("address: {e}")))?;
            self.check_family(&host)?;
            hosts.push(host);
        }
        let wait = match req.timeout_ms {
            0 => DEFAULT_CONNECT_WAIT,
            ms => Duration::from_millis(ms.into()).min(MAX_CONNECT_WAIT),
        };
        match tokio::time::timeout(wait, self.peers.connect(id, hosts)).await {
            Ok(Ok(info)) => Ok(Response::new(pb::ConnectPeerResponse {
                peer: Some(info.into()),
            })),
            Ok(Err(e)) => Err(request_status(e)),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "not connected to {id} within {}s; the sidecar keeps trying in the background",
                wait.as_secs_f32()
            ))),
        }
    }

    async fn disconnect_peer(
        &self,
        req: Request<pb::DisconnectPeerRequest>,
    ) -> Result<Response<pb::DisconnectPeerResponse>, Status> {
        let id = parse_id_field(&req.into_inner().endpoint_id)?;
        self.peers.disconnect(id).await.map_err(request_status)?;
        Ok(Response::new(pb::DisconnectPeerResponse {}))
    }

    async fn forget_peer(
        &self,
        req: Request<pb::ForgetPeerRequest>,
    ) -> Result<Response<pb::ForgetPeerResponse>, Status> {
        let id = parse_id_field(&req.into_inner().endpoint_id)?;
        self.peers.forget(id).await.map_err(request_status)?;
        Ok(Response::new(pb::ForgetPeerResponse {}))
    }

    async fn list_peers(
        &self,
        _req: Request<pb::ListPeersRequest>,
    ) -> Result<Response<pb::ListPeersResponse>, Status> {
        let peers = self.snapshot().await.peers;
        Ok(Response::new(pb::ListPeersResponse { peers }))
    }

    type WatchPeersStream = EventStream;

    async fn watch_peers(
        &self,
        _req: Request<pb::WatchPeersRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let events = BroadcastStream::new(self.peers.subscribe()).map(|item| match item {
            Ok(ev) => Ok(ev.into()),
            Err(BroadcastStreamRecvError::Lagged(n)) => Ok(pb::PeerEvent {
                endpoint_id: String::new(),
                kind: "lagged".into(),
                detail: format!("{n} events dropped: the watcher read too slowly"),
                unix_ms: crate::events::unix_ms_now(),
            }),
        });
        // The stream must end by itself at shutdown: tonic's graceful shutdown waits
        // for every open stream, and the event sender outlives the server.
        let last = futures::stream::once(async {
            Ok(pb::PeerEvent {
                endpoint_id: String::new(),
                kind: SHUTDOWN_EVENT.into(),
                detail: "the sidecar is shutting down".into(),
                unix_ms: crate::events::unix_ms_now(),
            })
        });
        let stream =
            futures::StreamExt::take_until(events, self.stop.clone().cancelled_owned()).chain(last);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn publish(
        &self,
        req: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        super::data::publish(self.data.as_ref(), req).await
    }

    async fn publish_stream(
        &self,
        req: Request<tonic::Streaming<pb::PublishRequest>>,
    ) -> Result<Response<pb::PublishStreamResponse>, Status> {
        super::data::publish_stream(self.data.as_ref(), req).await
    }

    type SubscribeStream = super::data::DeliveryStream;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        super::data::subscribe(self.data.as_ref(), self.stop.clone(), req).await
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        super::data::get(self.data.as_ref(), req).await
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        super::data::delete(self.data.as_ref(), req).await
    }

    async fn revoke(
        &self,
        req: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        let (data, trust) = (self.data.as_ref(), self.trust.as_deref());
        super::data::revoke(data, trust, &self.peers, req).await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {cause}. Is another process using it? Choose another with --listen (PEAT_SIDECAR_LISTEN)")]
    Tcp { addr: String, cause: std::io::Error },
    #[error("cannot create the API socket {path}: {cause}. Check that the directory exists and is writable, or choose another path with --listen unix:///PATH")]
    Unix {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "--socket-group {0}: no such group (give a group name from /etc/group or a numeric gid)"
    )]
    UnknownGroup(String),
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot build the reflection service: {0}")]
    Reflection(String),
}

/// A bound API listener; binding is separate from serving so that a bad `--listen`
/// stops the start before anything else runs.
pub enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener, SocketFile),
}

/// Removes the socket file when the server stops.
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub async fn bind(
    listen: &ListenAddr,
    socket_mode: u32,
    socket_group: Option<&str>,
) -> Result<Bound, ServeError> {
    match listen {
        ListenAddr::Tcp(addr) => TcpListener::bind(addr)
            .await
            .map(Bound::Tcp)
            .map_err(|cause| ServeError::Tcp {
                addr: addr.to_string(),
                cause,
            }),
        ListenAddr::Unix(path) => {
            let gid = socket_group.map(resolve_group).transpose()?;
            bind_unix(path, socket_mode, gid)
        }
    }
}

/// A group name or a numeric gid.
fn resolve_group(group: &str) -> Result<nix::unistd::Gid, ServeError> {
    if let Ok(n) = group.parse::<u32>() {
        return Ok(nix::unistd::Gid::from_raw(n));
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid),
        _ => Err(ServeError::UnknownGroup(group.to_string())),
    }
}

fn bind_unix(path: &Path, mode: u32, gid: Option<nix::unistd::Gid>) -> Result<Bound, ServeError> {
    use std::os::unix::fs::FileTypeExt;
    let unix_err = |cause| ServeError::Unix {
        path: path.to_path_buf(),
        cause,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // A stale socket from a crashed run: only replace it if nobody answers.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(unix_err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another process is serving on this socket",
                )));
            }
            std::fs::remove_file(path).map_err(unix_err)?;
        }
        Ok(_) => {
            return Err(ServeError::NotASocket {
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(unix_err(e)),
    }
    // Create with a restrictive umask so there is no window in which others can connect.
    let listener = {
        let old = unsafe_umask(0o177);
        let r = UnixListener::bind(path);
        unsafe_umask(old);
        r.map_err(unix_err)?
    };
    if let Some(gid) = gid {
        nix::unistd::chown(path, None, Some(gid)).map_err(|e| unix_err(std::io::Error::from(e)))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(unix_err)?;
    Ok(Bound::Unix(listener, SocketFile(path.to_path_buf())))
}

/// Sets the process umask and returns the previous one.
fn unsafe_umask(mask: u32) -> u32 {
    // SAFETY: umask(2) cannot fail and touches no memory. It is process-wide; that is
    // acceptable during start-up, before other tasks create files.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// The running API server.
pub struct ApiServer {
    task: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
}

impl ApiServer {
    /// Serves in a task; a serve error after start-up is logged and the mesh keeps
    /// running without API.
    pub fn spawn(bound: Bound, service: SidecarService) -> Self {
        let stop = service.stop.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = serve(bound, service).await {
                warn!(error = %e, "gRPC API stopped");
            }
        });
        ApiServer { task, stop }
    }

    /// Ends every stream, refuses new requests, and waits at most [`DRAIN_WAIT`] for
    /// clients to take the end; then drops what is left.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if tokio::time::timeout(DRAIN_WAIT, &mut self.task)
            .await
            .is_err()
        {
            warn!(waited = ?DRAIN_WAIT, "API clients did not take the end of their streams; closing their connections");
            self.task.abort();
        }
    }
}

/// Serves until the service's stop token fires.
async fn serve(bound: Bound, service: SidecarService) -> Result<(), ServeError> {
    let shutdown = service.stop.clone();
    // Publish requests carry payloads up to --max-message-bytes.
    let decode_limit = super::data::request_limit(service.data.as_ref());
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<SidecarServer<SidecarService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    // Many clients (grpcio-reflection among them) speak only the older v1alpha.
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let router = Server::builder()
        .concurrency_limit_per_connection(64)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(SidecarServer::new(service).max_decoding_message_size(decode_limit));
    let signal = async move { shutdown.cancelled().await };
    match bound {
        Bound::Tcp(l) => {
            info!(addr = %crate::logfmt::opt(l.local_addr().ok()), "gRPC API listening");
            // Without TCP_NODELAY a delivery written while the previous one waits for
            // its (delayed) ACK sits in the kernel for up to 40 ms: every Subscribe
            // stream would pay that at moderate rates. tonic sets it only on listeners
            // it binds itself.
            let incoming = TcpListenerStream::new(l).map(|s| {
                if let Ok(s) = &s {
                    let _ = s.set_nodelay(true);
                }
                s
            });
            router
                .serve_with_incoming_shutdown(incoming, signal)
                .await?;
        }
        Bound::Unix(l, file) => {
            info!(path = %file.0.display(), "gRPC API listening on a Unix socket");
            router
                .serve_with_incoming_shutdown(UnixListenerStream::new(l), signal)
                .await?;
            drop(file);
        }
    }
    Ok(())
}

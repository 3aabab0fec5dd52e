//! The client's connection to a sidecar's API: deadlines on the connection and on each
//! request, and errors that say in words what was wrong, naming the address.

use std::{error::Error as _, future::Future, time::Duration};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use super::{idprefix::IdError, output::OutputError, pb::sidecar_client::SidecarClient};
use crate::config::ListenAddr;

/// Deadline of the connection and of each request unless `--timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no peat-sidecar answers at {0} (is `peat-sidecar run` running? set --api or PEAT_SIDECAR_API)")]
    Unreachable(String),
    #[error("the sidecar at {addr} did not answer within {secs} s (is it stopped or overloaded? --timeout SECS waits longer)")]
    TimedOut { addr: String, secs: u64 },
    #[error("{0} does not speak gRPC: is it a peat-sidecar API address? (set --api or PEAT_SIDECAR_API)")]
    NotGrpc(String),
    #[error("{0}")]
    Rpc(String),
    #[error(transparent)]
    Id(#[from] IdError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("cannot read the value from standard input: {0}")]
    Stdin(std::io::Error),
    #[error("{}: {cause}", path.display())]
    File {
        path: std::path::PathBuf,
        cause: crate::trust::store::FileError,
    },
}

/// Where the client talks to, and how long it waits.
#[derive(Debug, Clone)]
pub struct Target {
    pub api: ListenAddr,
    pub timeout: Duration,
}

impl Target {
    pub fn new(api: &ListenAddr, timeout_secs: Option<u64>) -> Self {
        Target {
            api: api.clone(),
            timeout: timeout_secs.map_or(DEFAULT_TIMEOUT, Duration::from_secs),
        }
    }

    /// Opens the connection, within the deadline.
    pub async fn connect(&self) -> Result<SidecarClient<Channel>, ClientError> {
        let channel = tokio::time::timeout(self.timeout, self.open())
            .await
            .map_err(|_| self.timed_out())?
            .map_err(|e| {
                let causes = format!("{e}: {}", chain(e.source()));
                self.transport_error(&causes)
                    .unwrap_or_else(|| ClientError::Unreachable(self.api.to_string()))
            })?;
        Ok(SidecarClient::new(channel))
    }

    async fn open(&self) -> Result<Channel, tonic::transport::Error> {
        match &self.api {
            ListenAddr::Tcp(addr) => {
                Endpoint::from_shared(format!("http://{addr}"))?
                    .connect_timeout(self.timeout)
                    .connect()
                    .await
            }
            ListenAddr::Unix(path) => {
                let path = path.clone();
                // The URI is ignored: the connector always opens the socket.
                Endpoint::from_static("http://[::]:50051")
                    .connect_timeout(self.timeout)
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(
                                tokio::net::UnixStream::connect(path).await?,
                            ))
                        }
                    }))
                    .await
            }
        }
    }

    /// Runs one request within the deadline.
    pub async fn call<T>(
        &self,
        request: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ClientError> {
        self.call_within(self.timeout, request).await
    }

    /// Runs one request that may itself wait `wait` (ConnectPeer), with a margin for
    /// the answer to arrive.
    pub async fn call_within<T>(
        &self,
        wait: Duration,
        request: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ClientError> {
        match tokio::time::timeout(wait, request).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(self.error(s)),
            Err(_) => Err(self.timed_out()),
        }
    }

    fn timed_out(&self) -> ClientError {
        ClientError::TimedOut {
            addr: self.api.to_string(),
            secs: self.timeout.as_secs(),
        }
    }

    /// What a failed request means.
    pub fn error(&self, s: tonic::Status) -> ClientError {
        let causes = format!("{}: {}", s.message(), chain(s.source()));
        self.transport_error(&causes)
            .unwrap_or_else(|| rpc_error(&s))
    }

    /// Transport failures told apart by their causes: tonic reports them all under
    /// one or two generic codes.
    fn transport_error(&self, causes: &str) -> Option<ClientError> {
        let addr = self.api.to_string();
        let has = |hints: &[&str]| hints.iter().any(|h| causes.contains(h));
        if has(&["onnection refused", "No such file"]) {
            Some(ClientError::Unreachable(addr))
        } else if has(NOT_GRPC) {
            Some(ClientError::NotGrpc(addr))
        } else if causes.contains("transport error") {
            Some(ClientError::Unreachable(addr))
        } else {
            None
        }
    }
}

/// The causes below an error, joined with ": ".
fn chain(mut source: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut out = Vec::new();
    while let Some(e) = source {
        out.push(e.to_string());
        source = e.source();
    }
    out.join(": ")
}

/// What hyper and tonic say when the other side answers, but not in gRPC. Closing the
/// connection without an answer counts: hyper reports an HTTP/1 answer as either a
/// protocol error or a closed connection, whichever of its tasks sees it first.
const NOT_GRPC: &[&str] = &[
    "connection closed",
    "broken pipe",
    "onnection reset",
    "protocol error",
    "HTTP status",
    "invalid content-type",
    "frame with invalid size",
    "received HTTP/1",
    "error trying to connect: http",
];

fn rpc_error(s: &tonic::Status) -> ClientError {
    let what = match s.code() {
        tonic::Code::InvalidArgument => "invalid argument: ",
        tonic::Code::NotFound => "not found: ",
        tonic::Code::Unavailable => "unavailable: ",
        tonic::Code::DeadlineExceeded => "timed out: ",
        tonic::Code::ResourceExhausted => "limit reached: ",
        _ => "",
    };
    ClientError::Rpc(format!("{what}{}", s.message()))
}

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
            .map_err(|_| ClientError::Unreachable(self.api.to_string()))?;
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

    /// What a failed request means. Transport failures are told apart by their
    /// causes: tonic reports them all under a generic code.
    pub fn error(&self, s: tonic::Status) -> ClientError {
        let mut causes = s.message().to_string();
        let mut source = s.source();
        while let Some(e) = source {
            causes.push_str(": ");
            causes.push_str(&e.to_string());
            source = e.source();
        }
        let addr = self.api.to_string();
        if causes.contains("onnection refused") || causes.contains("No such file") {
            ClientError::Unreachable(addr)
        } else if NOT_GRPC.iter().any(|m| causes.contains(m)) {
            ClientError::NotGrpc(addr)
        } else if s.code() == tonic::Code::Unavailable && causes.contains("transport") {
            ClientError::Unreachable(addr)
        } else {
            rpc_error(&s)
        }
    }
}

/// What hyper and tonic say when the other side answers, but not in gRPC.
const NOT_GRPC: &[&str] = &[
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

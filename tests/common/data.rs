//! The data plane through the API, for tests and benchmarks: publish (one message or a
//! client stream), get, subscribe (a tonic stream drained into a shared buffer), and a
//! `peat-sidecar subscribe --json` process whose lines are read from a file.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use peat_sidecar::api::pb::{self, delivery::Kind};
use tonic::Streaming;

use super::{wait_until, Sidecar, BIN};

/// A publish request; an empty key is "no key".
pub fn msg(
    topic: &str,
    key: &str,
    payload: impl Into<bytes::Bytes>,
    retain: bool,
) -> pb::PublishRequest {
    pb::PublishRequest {
        topic: topic.into(),
        key: key.into(),
        payload: payload.into(),
        retain,
        ttl_secs: 0,
        priority: 0,
    }
}

/// One Publish call; panics (failing the test) if the sidecar refuses it.
pub async fn publish(s: &Sidecar, req: pb::PublishRequest) -> pb::PublishResponse {
    let mut c = s.client().await.expect("API reachable");
    c.publish(req)
        .await
        .unwrap_or_else(|e| panic!("Publish on {}: {e}", s.name))
        .into_inner()
}

/// One PublishStream call carrying all of `reqs`.
pub async fn publish_stream(
    s: &Sidecar,
    reqs: Vec<pb::PublishRequest>,
) -> pb::PublishStreamResponse {
    let mut c = s.client().await.expect("API reachable");
    c.publish_stream(tokio_stream::iter(reqs))
        .await
        .unwrap_or_else(|e| panic!("PublishStream on {}: {e}", s.name))
        .into_inner()
}

/// Retained entries matching `pattern`.
pub async fn get(s: &Sidecar, pattern: &str) -> Vec<pb::DataMessage> {
    let mut c = s.client().await.expect("API reachable");
    c.get(pb::GetRequest {
        pattern: pattern.into(),
    })
    .await
    .unwrap_or_else(|e| panic!("Get on {}: {e}", s.name))
    .into_inner()
    .entries
}

/// The sidecar's data counters (GetStatus), zero if it has none.
pub async fn data_stats(s: &Sidecar) -> pb::DataStats {
    s.status().await.data.unwrap_or_default()
}

/// Waits until the sidecar counts at least `n` subscribers, so that a publish after
/// this cannot race the subscription.
pub async fn wait_subscribers(s: &Sidecar, n: u64, timeout: Duration) {
    let ok = wait_until(timeout, || async { data_stats(s).await.subscribers >= n }).await;
    assert!(
        ok.is_some(),
        "{} does not count {n} subscribers after {timeout:?}: {:?}",
        s.name,
        data_stats(s).await
    );
}

/// What a subscription delivered, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Got {
    Msg(pb::DataMessage),
    Missed(u64),
    RetainedDone,
}

/// Opens a Subscribe stream without reading it (a slow subscriber, or one to drain
/// later with [`Drained::start`]).
pub async fn open_subscription(
    s: &Sidecar,
    pattern: &str,
    retained: bool,
) -> Streaming<pb::Delivery> {
    let mut c = s.client().await.expect("API reachable");
    c.subscribe(pb::SubscribeRequest {
        pattern: pattern.into(),
        retained,
    })
    .await
    .unwrap_or_else(|e| panic!("Subscribe on {}: {e}", s.name))
    .into_inner()
}

/// A subscription read by a task as fast as it comes, into a shared buffer.
pub struct Drained {
    pub got: Arc<Mutex<Vec<Got>>>,
    task: tokio::task::JoinHandle<Option<tonic::Status>>,
}

impl Drained {
    pub fn start(mut stream: Streaming<pb::Delivery>) -> Drained {
        let got = Arc::new(Mutex::new(vec![]));
        let sink = got.clone();
        let task = tokio::spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(d)) => {
                        let g = match d.kind {
                            Some(Kind::Message(m)) => Got::Msg(m),
                            Some(Kind::Missed(n)) => Got::Missed(n),
                            Some(Kind::RetainedDone(_)) => Got::RetainedDone,
                            None => continue,
                        };
                        sink.lock().unwrap().push(g);
                    }
                    Ok(None) => return None,
                    Err(e) => return Some(e),
                }
            }
        });
        Drained { got, task }
    }

    pub async fn subscribe(s: &Sidecar, pattern: &str, retained: bool) -> Drained {
        Drained::start(open_subscription(s, pattern, retained).await)
    }

    pub fn all(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// The messages received so far (without the notices).
    pub fn messages(&self) -> Vec<pb::DataMessage> {
        self.all()
            .into_iter()
            .filter_map(|g| match g {
                Got::Msg(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    /// The sum of the `missed` notices so far.
    pub fn missed(&self) -> u64 {
        self.all()
            .iter()
            .map(|g| match g {
                Got::Missed(n) => *n,
                _ => 0,
            })
            .sum()
    }

    pub fn count_topic(&self, topic: &str) -> usize {
        self.messages().iter().filter(|m| m.topic == topic).count()
    }

    /// Whether the stream ended (and with which error).
    pub fn finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for Drained {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A `peat-sidecar subscribe PATTERN --json` process whose stdout goes to a file.
pub struct CliSub {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    _dir: tempfile::TempDir,
}

impl CliSub {
    pub fn start(s: &Sidecar, pattern: &str, extra: &[&str]) -> CliSub {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sub.out");
        let err = dir.path().join("sub.err");
        let child = Command::new(BIN)
            .args(["subscribe", pattern, "--json", "--api", &s.api()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("start peat-sidecar subscribe");
        CliSub {
            child,
            out,
            err,
            _dir: dir,
        }
    }

    /// Every line printed so far, parsed as JSON; a line that is not JSON fails the
    /// test (with --json every line must be one object).
    pub fn lines(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        // The last line may be half written: only complete lines count.
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        complete
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!("subscribe --json printed a non-JSON line {l:?}: {e}")
                })
            })
            .collect()
    }

    /// The message lines for `topic`.
    pub fn on_topic(&self, topic: &str) -> Vec<serde_json::Value> {
        self.lines()
            .into_iter()
            .filter(|l| l.get("topic").and_then(|t| t.as_str()) == Some(topic))
            .collect()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for CliSub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The payload of a `--json` line: `payload_b64` decoded.
pub fn json_payload(line: &serde_json::Value) -> Vec<u8> {
    use base64::Engine;
    let b64 = line
        .get("payload_b64")
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("no payload_b64 in {line}"));
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_else(|e| panic!("payload_b64 of {line} is not base64: {e}"))
}

/// Whether `short` (as printed: the full 64-hex id or its first 10 characters or more)
/// names endpoint `id`.
pub fn names_publisher(short: &str, id: &str) -> bool {
    short.len() >= 10 && id.starts_with(short)
}

//! The data plane's gRPC methods: Publish, PublishStream, Subscribe, Get, Delete, and
//! Revoke (which spreads on the data plane).

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tonic::{transport::server::UdsConnectInfo, Request, Response, Status};

use tokio_util::sync::CancellationToken;

use super::pb;
use crate::{
    data::{self, system::RevokeError, App, DataError, DataPlane, Event, Message, Publish},
    node::peers::PeerManagerHandle,
    trust::{dearmor, store::TrustStore, REVOCATION_LABEL},
};

pub type DeliveryStream = Pin<Box<dyn Stream<Item = Result<pb::Delivery, Status>> + Send>>;

/// Room in a request for everything besides the payload.
const REQUEST_OVERHEAD: usize = 64 * 1024;

/// Largest request the server decodes: room for twice the largest payload, so that a
/// payload somewhat over the limit gets an answer naming --max-message-bytes rather
/// than tonic's bare OUT_OF_RANGE.
pub fn request_limit(data: Option<&DataPlane>) -> usize {
    data.map_or(0, |d| d.max_message_bytes().saturating_mul(2)) + REQUEST_OVERHEAD
}

/// The service's data plane, if it runs one (the server passes it in, so this module
/// does not import the server).
fn plane(data: Option<&DataPlane>) -> Result<&DataPlane, Status> {
    data.ok_or_else(|| Status::unavailable("this sidecar runs without a data plane"))
}

fn status(e: DataError) -> Status {
    match e {
        DataError::Stopped => Status::unavailable(e.to_string()),
        DataError::Rate(_) | DataError::AppRate(..) => Status::resource_exhausted(e.to_string()),
        DataError::Reserved(_) | DataError::NotPermitted { .. } => {
            Status::permission_denied(e.to_string())
        }
        _ => Status::invalid_argument(e.to_string()),
    }
}

pub fn message(m: &Message, retained: bool) -> pb::DataMessage {
    pb::DataMessage {
        topic: m.topic.clone(),
        key: m.key.clone(),
        payload: m.payload.clone(),
        publisher: hex::encode(m.publisher),
        seq: m.seq,
        hlc: m.hlc,
        published_unix_ms: data::physical_ms(m.hlc),
        retained,
        // A tombstone's own expiry is the store's business, not the app's.
        expires_unix_ms: if m.tombstone {
            0
        } else {
            data::expires_ms(m).unwrap_or(0)
        },
        deleted: m.tombstone,
    }
}

pub fn stats(d: &DataPlane) -> pb::DataStats {
    let s = d.stats();
    pb::DataStats {
        topics: s.topics,
        retained_entries: s.retained_entries,
        retained_tombstones: s.retained_tombstones,
        forged: s.forged,
        unsigned: s.unsigned,
        signed: s.signed,
        retained_bytes: s.retained_bytes,
        messages_in: s.messages_in,
        messages_out: s.messages_out,
        published: s.published,
        delivered: s.delivered,
        dropped: s.dropped,
        subscribers: s.subscribers,
        rejected: s.rejected,
    }
}

pub fn fill_peer_counters(d: &DataPlane, peers: &mut [pb::Peer]) {
    for p in peers {
        if let Ok(id) = p.endpoint_id.parse::<iroh::EndpointId>() {
            let s = d.peer_stats(&id);
            p.messages_in = s.messages_in;
            p.messages_out = s.messages_out;
            if let Some(l) = d.link_stats(&id) {
                p.link_rate_cap = Some(l.rate_cap);
                p.link_classes = link_classes(&l);
            }
        }
    }
}

/// A link's classes, highest first (as `peers --json` lists them).
fn link_classes(l: &data::LinkStats) -> Vec<pb::LinkClass> {
    data::Class::ALL
        .iter()
        .rev()
        .map(|c| {
            let s = l.classes[c.index()];
            pb::LinkClass {
                class: c.name().to_string(),
                sent_frames: s.sent_frames,
                sent_bytes: s.sent_bytes,
                queued_frames: s.queued_frames,
                queued_bytes: s.queued_bytes,
                dropped: s.dropped,
                replaced: s.replaced,
            }
        })
        .collect()
}

/// The caller as the connection shows it: the kernel's peer credentials on a Unix
/// socket, the remote address on TCP (tonic puts both into the request's extensions).
fn app_of<T>(req: &Request<T>) -> App {
    if let Some(u) = req.extensions().get::<UdsConnectInfo>() {
        if let Some(c) = u.peer_cred {
            return App::Process {
                pid: c.pid().unwrap_or(0),
                uid: c.uid(),
            };
        }
    }
    req.remote_addr().map(App::Tcp).unwrap_or_default()
}

fn to_publish(r: pb::PublishRequest, app: App) -> Publish {
    Publish {
        app,
        topic: r.topic,
        key: r.key,
        payload: r.payload,
        retain: r.retain,
        ttl_secs: r.ttl_secs,
        priority: super::convert::class(r.priority),
    }
}

pub async fn publish(
    data: Option<&DataPlane>,
    req: Request<pb::PublishRequest>,
) -> Result<Response<pb::PublishResponse>, Status> {
    let d = plane(data)?;
    let app = app_of(&req);
    let p = d
        .publish(to_publish(req.into_inner(), app))
        .await
        .map_err(status)?;
    Ok(Response::new(pb::PublishResponse {
        seq: p.seq,
        hlc: p.hlc,
    }))
}

pub async fn publish_stream(
    data: Option<&DataPlane>,
    req: Request<tonic::Streaming<pb::PublishRequest>>,
) -> Result<Response<pb::PublishStreamResponse>, Status> {
    let d = plane(data)?;
    let app = app_of(&req);
    let mut stream = req.into_inner();
    let (mut published, mut last_seq) = (0u64, 0u64);
    while let Some(r) = stream.next().await {
        let r = r?;
        let p = d.publish(to_publish(r, app)).await.map_err(|e| {
            let s = status(e);
            Status::new(
                s.code(),
                format!("message {} of the stream: {}", published + 1, s.message()),
            )
        })?;
        published += 1;
        last_seq = p.seq;
    }
    Ok(Response::new(pb::PublishStreamResponse {
        published,
        last_seq,
    }))
}

fn delivery(kind: pb::delivery::Kind) -> Result<pb::Delivery, Status> {
    Ok(pb::Delivery { kind: Some(kind) })
}

pub async fn subscribe(
    data: Option<&DataPlane>,
    stop: CancellationToken,
    req: Request<pb::SubscribeRequest>,
) -> Result<Response<DeliveryStream>, Status> {
    let d = plane(data)?.clone();
    let req = req.into_inner();
    // Subscribed before the retained entries are read, so nothing falls in between.
    let sub = d.subscribe(&req.pattern).map_err(status)?;
    let mut first = Vec::new();
    if req.retained {
        for m in d.get_parsed(&sub.pattern) {
            first.push(delivery(pb::delivery::Kind::Message(message(&m, true))));
        }
        first.push(delivery(pb::delivery::Kind::RetainedDone(true)));
    }
    let live = futures::stream::unfold((sub, d), |(mut sub, d)| async move {
        let item = match sub.next().await? {
            Event::Message(m) => pb::delivery::Kind::Message(message(&m, false)),
            Event::Missed(n) => {
                d.count_missed(n);
                pb::delivery::Kind::Missed(n)
            }
        };
        Some((delivery(item), (sub, d)))
    });
    // Ends by itself at shutdown: tonic's graceful shutdown waits for open streams.
    let stream = futures::stream::iter(first)
        .chain(live)
        .take_until(stop.cancelled_owned());
    Ok(Response::new(Box::pin(stream)))
}

pub async fn get(
    data: Option<&DataPlane>,
    req: Request<pb::GetRequest>,
) -> Result<Response<pb::GetResponse>, Status> {
    let d = plane(data)?;
    let entries = d
        .get(&req.into_inner().pattern)
        .map_err(status)?
        .iter()
        .map(|m| message(m, true))
        .collect();
    Ok(Response::new(pb::GetResponse { entries }))
}

pub async fn delete(
    data: Option<&DataPlane>,
    req: Request<pb::DeleteRequest>,
) -> Result<Response<pb::DeleteResponse>, Status> {
    let d = plane(data)?;
    let app = app_of(&req);
    let r = req.into_inner();
    let p = d.delete(app, &r.topic, &r.key).await.map_err(status)?;
    Ok(Response::new(pb::DeleteResponse {
        seq: p.seq,
        hlc: p.hlc,
    }))
}

/// Revoke: the text of a revocation file, checked against the node's authority,
/// applied here and spread (see [`crate::data::system`]).
pub async fn revoke(
    data: Option<&DataPlane>,
    trust: Option<&TrustStore>,
    peers: &PeerManagerHandle,
    req: Request<pb::RevokeRequest>,
) -> Result<Response<pb::RevokeResponse>, Status> {
    let d = plane(data)?;
    let trust =
        trust.ok_or_else(|| Status::failed_precondition(RevokeError::NoAuthority.to_string()))?;
    let text = req.into_inner().revocation;
    let bytes = dearmor(REVOCATION_LABEL, &text)
        .map_err(|e| Status::invalid_argument(format!("not a revocation file: {e}")))?;
    match d.revoke(trust, peers, bytes).await {
        Ok((id, already_known)) => Ok(Response::new(pb::RevokeResponse {
            endpoint_id: id.to_string(),
            already_known,
        })),
        Err(RevokeError::Data(e)) => Err(status(e)),
        Err(e) => Err(Status::invalid_argument(e.to_string())),
    }
}

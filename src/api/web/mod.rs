//! `--web-listen`: the operator's page. One page served from the binary (its HTML, JS
//! and CSS are embedded: no CDN, nothing fetched beyond this node), its JSON state and
//! a stream of server-sent events that updates it. Read-only: GET only, and nothing
//! secret is shown (the state says whether a shared key is set, never the key).
//!
//! Endpoints: `/` (the page), `/api/state`, `/api/retained?pattern=P`, `/api/events`
//! (text/event-stream: `state` every second, `event` on each peer event, `log` with the
//! recent events first).

mod hub;
mod state;

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use futures::StreamExt;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::{
    body::{Bytes, Frame},
    header::{self, HeaderValue},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::{net::TcpListener, sync::broadcast, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use self::hub::Hub;
use super::server::SidecarService;
use crate::events::PeerEvent;

pub use hub::TICK;

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");
/// Most connections served at once (each open page holds one for its events).
const MAX_CONNECTIONS: usize = 64;
/// Most retained entries one `/api/retained` answer lists.
const MAX_ENTRIES: usize = 500;
/// Characters of a retained value shown.
const PREVIEW: usize = 200;
/// A comment line on idle event streams, so that proxies and tablets keep them open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

type Body = UnsyncBoxBody<Bytes, Infallible>;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("cannot listen for the web page on {addr}: {cause}. Is another process using it? Choose another with --web-listen (PEAT_SIDECAR_WEB_LISTEN)")]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
}

/// Binds the page's listener; a failure stops the start, like a bad `--listen`.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, WebError> {
    TcpListener::bind(addr)
        .await
        .map_err(|cause| WebError::Bind { addr, cause })
}

/// Serves the page until `shutdown` fires; open pages are cut off then.
pub async fn serve(
    listener: TcpListener,
    service: SidecarService,
    peer_events: broadcast::Receiver<PeerEvent>,
    shutdown: CancellationToken,
) {
    let addr = listener.local_addr().ok();
    info!(addr = %crate::logfmt::opt(addr), "web page listening");
    let hub = Hub::new(service.clone());
    let mut tasks = JoinSet::new();
    tasks.spawn(hub.clone().run(peer_events, shutdown.child_token()));
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = tasks.join_next(), if tasks.len() > 1 => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!(error = %e, "web: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if tasks.len() > MAX_CONNECTIONS {
            debug!("web: too many connections; one refused");
            continue;
        }
        let (hub, stop) = (hub.clone(), shutdown.clone());
        tasks.spawn(async move {
            let handler = service_fn(move |req| respond(hub.clone(), stop.clone(), req));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), handler)
                .await
            {
                debug!(error = %e, "web: connection ended with an error");
            }
        });
    }
}

fn reply(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Only this node's own files: no inline script, no other origin.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    r
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

async fn respond(
    hub: Arc<Hub>,
    stop: CancellationToken,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "this page is read-only: GET only\n",
        ));
    }
    if !host_allowed(req.headers().get(header::HOST)) {
        return Ok(reply(
            StatusCode::FORBIDDEN,
            TEXT,
            "open the page by IP address (http://127.0.0.1:PORT/) or localhost\n",
        ));
    }
    let query = req.uri().query().unwrap_or("");
    Ok(match req.uri().path() {
        "/" | "/index.html" => reply(StatusCode::OK, "text/html; charset=utf-8", INDEX),
        "/app.js" => reply(StatusCode::OK, "text/javascript; charset=utf-8", APP_JS),
        "/style.css" => reply(StatusCode::OK, "text/css; charset=utf-8", STYLE),
        "/api/state" => reply(StatusCode::OK, JSON, hub.state_now().await),
        "/api/retained" => retained(&hub, query),
        "/api/events" => events(hub, stop),
        _ => reply(StatusCode::NOT_FOUND, TEXT, "not found: try /\n"),
    })
}

/// Against DNS rebinding: a page of another site that resolves its own name to this
/// node's address must not read this one. Browsers send the name they resolved.
fn host_allowed(host: Option<&HeaderValue>) -> bool {
    let Some(host) = host.and_then(|h| h.to_str().ok()) else {
        // HTTP/1.0 clients (curl -0) send none; browsers always do.
        return true;
    };
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// `/api/retained?pattern=P`: the retained entries whose topic matches, as the data
/// plane's Get answers them, values cut to a preview.
fn retained(hub: &Hub, query: &str) -> Response<Body> {
    let pattern = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "pattern")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| "**".into());
    let Some(d) = hub.service.data() else {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            JSON,
            r#"{"error":"no data plane"}"#,
        );
    };
    match d.get(&pattern) {
        Ok(mut list) => {
            list.sort_by(|a, b| (&a.topic, &a.key).cmp(&(&b.topic, &b.key)));
            let total = list.len();
            let entries: Vec<_> = list.iter().take(MAX_ENTRIES).map(entry_json).collect();
            let body = json!({ "pattern": pattern, "total": total, "entries": entries });
            reply(StatusCode::OK, JSON, body.to_string())
        }
        Err(e) => reply(
            StatusCode::BAD_REQUEST,
            JSON,
            json!({ "pattern": pattern, "error": e.to_string() }).to_string(),
        ),
    }
}

fn entry_json(m: &crate::data::Message) -> serde_json::Value {
    let (value, binary) = match std::str::from_utf8(&m.payload) {
        Ok(s) => (s.chars().take(PREVIEW).collect::<String>(), false),
        Err(_) => (
            hex::encode(&m.payload[..m.payload.len().min(PREVIEW / 2)]),
            true,
        ),
    };
    json!({
        "topic": m.topic,
        "key": m.key,
        "publisher": hex::encode(m.publisher),
        "published_unix_ms": crate::data::physical_ms(m.hlc),
        "expires_unix_ms": crate::data::expires_ms(m).unwrap_or(0),
        "bytes": m.payload.len(),
        "value": value,
        "binary": binary,
    })
}

/// One server-sent event.
fn sse(event: &str, data: &str) -> Bytes {
    // JSON has no raw newline, so `data` is one line.
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// `/api/events`: the recent events, the state now, then every change until the page
/// goes away or the sidecar stops.
fn events(hub: Arc<Hub>, stop: CancellationToken) -> Response<Body> {
    let recent = serde_json::to_string(&hub.recent()).unwrap_or_else(|_| "[]".into());
    let mut state = hub.state.subscribe();
    state.mark_changed();
    let live = Live {
        state,
        events: hub.events.subscribe(),
        stop,
        _watching: hub.watch(),
    };
    let chunks = futures::stream::iter([sse("log", &recent)])
        .chain(futures::stream::unfold(live, Live::next))
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut r = Response::new(StreamBody::new(chunks).boxed_unsync());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// One page's event stream.
struct Live {
    state: tokio::sync::watch::Receiver<Arc<str>>,
    events: tokio::sync::broadcast::Receiver<hub::WebEvent>,
    stop: CancellationToken,
    _watching: hub::Watching,
}

impl Live {
    async fn next(mut self) -> Option<(Bytes, Live)> {
        use tokio::sync::broadcast::error::RecvError;
        let chunk = tokio::select! {
            _ = self.stop.cancelled() => return None,
            r = self.state.changed() => {
                r.ok()?;
                let s = self.state.borrow_and_update().clone();
                sse("state", &s)
            }
            e = self.events.recv() => match e {
                Ok(e) => sse("event", &serde_json::to_string(&e).ok()?),
                Err(RecvError::Lagged(_)) => Bytes::from_static(b": lagged\n\n"),
                Err(RecvError::Closed) => return None,
            },
            _ = tokio::time::sleep(KEEP_ALIVE) => Bytes::from_static(b": keep-alive\n\n"),
        };
        Some((chunk, self))
    }
}

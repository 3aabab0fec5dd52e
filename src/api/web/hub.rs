//! What the page is fed: the state, rebuilt every second while a page watches (every
//! few seconds otherwise, for the events counters give), the recent events, and the
//! per-topic message meter, which subscribes to `**` only while a page watches.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::state::{self, LinkRate, Neighbours, Rates, TopicRow};
use crate::{
    api::server::SidecarService,
    data::{Event, Subscription},
    events::{unix_ms_now, PeerEvent},
};

/// How often the state is rebuilt while a page watches: well within the 2 s a change
/// may take to show.
pub const TICK: Duration = Duration::from_secs(1);
/// How often counters are read for events while no page watches.
const IDLE_TICK: Duration = Duration::from_secs(5);
/// Events kept for a page that opens later.
const RECENT: usize = 200;
/// Topics the meter keeps; the least recently seen go first.
const MAX_TOPICS: usize = 500;

/// One line of the page's event log.
#[derive(Debug, Clone, Serialize)]
pub struct WebEvent {
    pub unix_ms: u64,
    /// join, leave, refusal, error, info.
    pub class: &'static str,
    pub kind: String,
    /// Endpoint id, empty when the event is about no one peer.
    pub peer: String,
    pub detail: String,
}

impl WebEvent {
    fn from_peer(e: &PeerEvent) -> WebEvent {
        use crate::events::PeerEventKind as K;
        let class = match e.kind {
            K::Connected => "join",
            K::Disconnected | K::Left | K::Removed => "leave",
            K::Rejected => "refusal",
            _ => "info",
        };
        let class = if e.detail.starts_with("dial failed") {
            "error"
        } else {
            class
        };
        WebEvent {
            unix_ms: e.unix_ms,
            class,
            kind: e.kind.as_str().to_string(),
            peer: e.endpoint_id.to_string(),
            detail: e.detail.clone(),
        }
    }

    fn counted(class: &'static str, kind: &str, detail: String) -> WebEvent {
        WebEvent {
            unix_ms: unix_ms_now(),
            class,
            kind: kind.to_string(),
            peer: String::new(),
            detail,
        }
    }
}

/// Shared by the server's connections.
pub struct Hub {
    pub service: SidecarService,
    /// The latest state as JSON.
    pub state: watch::Sender<Arc<str>>,
    pub events: broadcast::Sender<WebEvent>,
    recent: Mutex<VecDeque<WebEvent>>,
    /// The rates and loss of the last tick, for `/api/state` with no page open.
    rates: Mutex<HashMap<String, LinkRate>>,
    watchers: AtomicUsize,
    wake: tokio::sync::Notify,
}

/// Held by each live event stream; the meter runs while one exists.
pub struct Watching(Arc<Hub>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Hub {
    pub fn new(service: SidecarService) -> Arc<Hub> {
        Arc::new(Hub {
            service,
            state: watch::Sender::new(Arc::from("{}")),
            events: broadcast::Sender::new(256),
            recent: Mutex::new(VecDeque::new()),
            rates: Mutex::new(HashMap::new()),
            watchers: AtomicUsize::new(0),
            wake: tokio::sync::Notify::new(),
        })
    }

    pub fn watch(self: &Arc<Self>) -> Watching {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
        Watching(self.clone())
    }

    pub fn recent(&self) -> Vec<WebEvent> {
        self.recent
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn push(&self, e: WebEvent) {
        if let Ok(mut r) = self.recent.lock() {
            if r.len() >= RECENT {
                r.pop_front();
            }
            r.push_back(e.clone());
        }
        // No page open is fine.
        let _ = self.events.send(e);
    }

    fn watched(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) > 0
    }

    /// Runs until `stop`: relays peer events, rebuilds the state, meters topics.
    pub async fn run(
        self: Arc<Self>,
        peer_events: broadcast::Receiver<PeerEvent>,
        stop: CancellationToken,
    ) {
        let mut peer_events = peer_events;
        let mut meter = Meter::default();
        let mut rates = Rates::default();
        let mut counted = Counted::default();
        let mut next = Instant::now();
        loop {
            let metering = meter.sub.is_some();
            let sub = meter.sub.as_mut();
            tokio::select! {
                _ = stop.cancelled() => break,
                e = peer_events.recv() => match e {
                    Ok(e) => self.push(WebEvent::from_peer(&e)),
                    Err(broadcast::error::RecvError::Lagged(n)) => self.push(WebEvent::counted(
                        "error", "lagged", format!("{n} peer events were not shown: too many at once"))),
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                Some(ev) = async { sub?.next().await }, if metering => meter.count(ev),
                // A page that just opened gets a fresh state at once.
                _ = self.wake.notified() => next = Instant::now(),
                _ = tokio::time::sleep_until(next.into()) => {
                    let watched = self.watched();
                    meter.follow(watched, &self.service);
                    let snap = self.service.snapshot().await;
                    for e in counted.news(&snap) {
                        self.push(e);
                    }
                    // Sampled with no page open too, so that a page that opens shows
                    // the rates and loss of the last few seconds at once rather than
                    // zeros until its second state (the first screenshot showed 0 B/s
                    // on every link while messages flowed).
                    let now = Instant::now();
                    let r = rates.update(&snap.peers, now);
                    if watched {
                        let s = state::build(&snap, &self.neighbours(), &r, meter.rows(now));
                        if let Ok(j) = serde_json::to_string(&s) {
                            self.state.send_replace(Arc::from(j));
                        }
                    }
                    if let Ok(mut last) = self.rates.lock() {
                        *last = r;
                    }
                    next = Instant::now() + if watched { TICK } else { IDLE_TICK };
                }
            }
        }
    }

    /// The state for `/api/state`: the latest while a page watches, else one built now
    /// with the rates of the last idle tick.
    pub async fn state_now(&self) -> String {
        if self.watched() {
            let s = self.state.borrow().clone();
            if s.len() > 2 {
                return s.to_string();
            }
        }
        let snap = self.service.snapshot().await;
        let rates = self.rates.lock().map(|r| r.clone()).unwrap_or_default();
        let s = state::build(&snap, &self.neighbours(), &rates, Vec::new());
        serde_json::to_string(&s).unwrap_or_else(|_| "{}".into())
    }

    fn neighbours(&self) -> Neighbours {
        self.service
            .data()
            .map(|d| {
                d.neighbours()
                    .into_iter()
                    .map(|(p, n)| (p.to_string(), n.iter().map(|x| x.to_string()).collect()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Counters whose growth is an event: refusals and errors that no peer event names.
#[derive(Default)]
struct Counted {
    last: Option<[u64; 4]>,
}

impl Counted {
    fn news(&mut self, snap: &crate::api::server::Snapshot) -> Vec<WebEvent> {
        let c = snap.status.counters.clone().unwrap_or_default();
        let d = snap.status.data.unwrap_or_default();
        let now = [
            c.incoming_refused,
            c.handshakes_rejected,
            d.rejected,
            d.dropped,
        ];
        let Some(last) = self.last.replace(now) else {
            return Vec::new();
        };
        let grew = |i: usize| now[i].saturating_sub(last[i]);
        let mut out = Vec::new();
        if grew(0) > 0 {
            out.push(WebEvent::counted("refusal", "refused", format!(
                "{} incoming connection(s) refused before the handshake (--max-pending-handshakes or a dead peer's address)", grew(0))));
        }
        if grew(1) > 0 {
            out.push(WebEvent::counted("refusal", "rejected", format!(
                "{} incoming connection(s) failed the formation check (another app id or shared key)", grew(1))));
        }
        if grew(2) > 0 {
            out.push(WebEvent::counted(
                "error",
                "data rejected",
                format!(
                    "{} message(s) refused: over a publish or peer rate limit",
                    grew(2)
                ),
            ));
        }
        if grew(3) > 0 {
            out.push(WebEvent::counted(
                "error",
                "data dropped",
                format!(
                    "{} message(s) dropped for subscribers that read too slowly",
                    grew(3)
                ),
            ));
        }
        out
    }
}

/// Messages per topic, counted from a `**` subscription held while a page watches.
#[derive(Default)]
struct Meter {
    sub: Option<Subscription>,
    topics: HashMap<String, Count>,
    at: Option<Instant>,
}

#[derive(Default)]
struct Count {
    total: u64,
    window: u64,
    rate: f64,
    last_unix_ms: u64,
}

impl Meter {
    fn follow(&mut self, watched: bool, service: &SidecarService) {
        match (watched, self.sub.is_some(), service.data()) {
            (true, false, Some(d)) => self.sub = d.subscribe("**").ok(),
            (false, true, _) => {
                self.sub = None;
                self.topics.clear();
                self.at = None;
            }
            _ => {}
        }
    }

    fn count(&mut self, ev: Event) {
        let Event::Message(m) = ev else { return };
        if !self.topics.contains_key(&m.topic) && self.topics.len() >= MAX_TOPICS {
            let oldest = self
                .topics
                .iter()
                .min_by_key(|(_, c)| c.last_unix_ms)
                .map(|(t, _)| t.clone());
            if let Some(t) = oldest {
                self.topics.remove(&t);
            }
        }
        let c = self.topics.entry(m.topic.clone()).or_default();
        c.total += 1;
        c.window += 1;
        c.last_unix_ms = unix_ms_now();
    }

    /// The rows, busiest first; rates smoothed over a few ticks.
    fn rows(&mut self, now: Instant) -> Vec<TopicRow> {
        let secs = self
            .at
            .replace(now)
            .map(|t| now.saturating_duration_since(t).as_secs_f64())
            .filter(|s| *s > 0.0);
        let mut rows: Vec<TopicRow> = self
            .topics
            .iter_mut()
            .map(|(t, c)| {
                if let Some(s) = secs {
                    c.rate = 0.5 * c.rate + 0.5 * (c.window as f64 / s);
                }
                c.window = 0;
                TopicRow {
                    topic: t.clone(),
                    rate: (c.rate * 10.0).round() / 10.0,
                    total: c.total,
                    last_unix_ms: c.last_unix_ms,
                }
            })
            .collect();
        rows.sort_by(|a, b| b.rate.total_cmp(&a.rate).then(a.topic.cmp(&b.topic)));
        rows
    }
}

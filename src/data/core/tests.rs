//! The data core's transitions, without sockets, disk or tasks: each test feeds inputs
//! at chosen times and checks the actions and the state that follow.

use std::time::Duration;

use super::*;
use crate::data::{
    store::TOMBSTONE_TTL_MS,
    sync::ROOT_EVERY,
    topic::Pattern,
    wire::{Version, MAX_HOPS},
};

mod anti_entropy;
mod live;
mod origins;
mod retained;

const ME: Id = [9; 32];
/// The wall clock at the start of a test (Unix ms).
const WALL: u64 = 1_700_000_000_000;

fn id(n: u8) -> Id {
    [n; 32]
}

/// A core and the start of its test's time.
struct Harness {
    core: DataCore,
    base: Instant,
}

impl Harness {
    fn new() -> Self {
        Harness::with(
            Rates {
                publish: 1000,
                peer: 1000,
            },
            1 << 20,
        )
    }

    fn with(rates: Rates, max_bytes: u64) -> Self {
        let base = Instant::now();
        let now = Now {
            at: base,
            wall_ms: WALL,
        };
        Harness {
            core: DataCore::new(ME, rates, max_bytes, vec![], 1, now),
            base,
        }
    }

    /// `ms` after the start, on both clocks.
    fn now(&self, ms: u64) -> Now {
        Now {
            at: self.base + Duration::from_millis(ms),
            wall_ms: WALL + ms,
        }
    }

    fn handle(&mut self, input: DataInput, ms: u64) -> Vec<DataAction> {
        let mut out = Actions::new();
        let now = self.now(ms);
        self.core.handle(input, now, &mut out);
        out.into_vec()
    }

    fn frame(&mut self, from: u8, frame: Frame, ms: u64) -> Vec<DataAction> {
        self.handle(
            DataInput::Frame {
                from: id(from),
                frame,
            },
            ms,
        )
    }

    fn msg(&mut self, from: u8, m: Message, ms: u64) -> Vec<DataAction> {
        self.frame(from, Frame::Msg(m), ms)
    }

    /// Links up to these peers (their actions dropped).
    fn links(&mut self, peers: &[u8]) {
        for p in peers {
            self.handle(DataInput::LinkUp(id(*p)), 0);
        }
    }

    fn publish(&mut self, l: Local, ms: u64) -> (Option<Published>, Vec<DataAction>) {
        let mut out = Actions::new();
        let now = self.now(ms);
        let p = self.core.publish(l, now, &mut out);
        (p, out.into_vec())
    }

    fn live_topics(&self, ms: u64) -> Vec<String> {
        self.core
            .retained()
            .matching(&Pattern::parse("**").unwrap(), WALL + ms)
            .into_iter()
            .map(|m| m.topic)
            .collect()
    }
}

/// A message from `publisher`, written `seq` ms after the start.
fn msg(publisher: u8, seq: u64, topic: &str) -> Message {
    Message {
        publisher: id(publisher),
        seq,
        hlc: (WALL + seq) << 16,
        hops: 0,
        topic: topic.into(),
        key: String::new(),
        payload: bytes::Bytes::from(format!("{publisher}/{seq}")),
        retain: false,
        ttl_ms: 0,
        tombstone: false,
        sig: None,
    }
}

fn retained(publisher: u8, seq: u64, topic: &str) -> Message {
    Message {
        retain: true,
        ..msg(publisher, seq, topic)
    }
}

fn local(topic: &str, retain: bool) -> Local {
    Local {
        topic: topic.into(),
        payload: bytes::Bytes::from_static(b"v"),
        retain,
        ..Default::default()
    }
}

/// The messages delivered, as (publisher's first byte, seq).
fn delivered(actions: &[DataAction]) -> Vec<(u8, u64)> {
    actions
        .iter()
        .filter_map(|a| match a {
            DataAction::Deliver(m) => Some((m.publisher[0], m.seq)),
            _ => None,
        })
        .collect()
}

/// The forwards, as (targets' first bytes, hops).
fn forwards(actions: &[DataAction]) -> Vec<(Vec<u8>, u8)> {
    actions
        .iter()
        .filter_map(|a| match a {
            DataAction::Forward { to, msg } => Some((to.iter().map(|i| i[0]).collect(), msg.hops)),
            _ => None,
        })
        .collect()
}

/// The frames queued, as (targets' first bytes, frame).
fn sends(actions: &[DataAction]) -> Vec<(Vec<u8>, &Frame)> {
    actions
        .iter()
        .filter_map(|a| match a {
            DataAction::Send { to, frame } => Some((to.iter().map(|i| i[0]).collect(), frame)),
            _ => None,
        })
        .collect()
}

fn stored(actions: &[DataAction]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            DataAction::Store(m) => Some(m.topic.clone()),
            _ => None,
        })
        .collect()
}

fn unstored(actions: &[DataAction]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            DataAction::Unstore(((t, _), _, _)) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

fn rejects(actions: &[DataAction]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, DataAction::Reject))
        .count()
}

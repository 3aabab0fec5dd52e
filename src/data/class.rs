//! Priority classes and the per-topic link policy (issue 26): which class a frame goes
//! in on a link, and which topics are latest-value (a queued message for a (topic, key)
//! is replaced by a newer one).
//!
//! The class is a local decision at each node: nothing about it travels on the wire. A
//! publish may name its class; every other message (one this node forwards for
//! another) takes the class of the first `--priority` pattern its topic matches, or
//! normal. Anti-entropy and retained sync frames go as bulk, neighbour announcements as
//! urgent (the forwarding rule depends on them).

use std::{
    fmt,
    hash::{Hash, Hasher},
    str::FromStr,
};

use super::{topic::Pattern, wire::Frame};

/// A priority class, lowest first (the order is the queue's eviction order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Class {
    Bulk = 0,
    #[default]
    Normal = 1,
    Urgent = 2,
}

impl Class {
    /// Every class, lowest first.
    pub const ALL: [Class; 3] = [Class::Bulk, Class::Normal, Class::Urgent];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Class::Bulk => "bulk",
            Class::Normal => "normal",
            Class::Urgent => "urgent",
        }
    }

    /// The QUIC stream priority of the class's stream: higher goes first.
    pub fn stream_priority(self) -> i32 {
        self as i32 - 1
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a priority class; use urgent, normal or bulk")]
pub struct ClassError(pub String);

impl FromStr for Class {
    type Err = ClassError;
    fn from_str(s: &str) -> Result<Self, ClassError> {
        match s {
            "urgent" => Ok(Class::Urgent),
            "normal" => Ok(Class::Normal),
            "bulk" => Ok(Class::Bulk),
            other => Err(ClassError(other.to_string())),
        }
    }
}

/// How a frame is queued on a link: its class, and for a latest-value topic the hash of
/// its (topic, key), under which a newer message replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tag {
    pub class: Class,
    pub latest: Option<u64>,
}

impl Tag {
    pub const URGENT: Tag = Tag {
        class: Class::Urgent,
        latest: None,
    };
    pub const BULK: Tag = Tag {
        class: Class::Bulk,
        latest: None,
    };
}

/// The settings' topic policy: `--priority PATTERN=CLASS` and `--latest-value PATTERN`.
#[derive(Debug, Clone, Default)]
pub struct LinkPolicy {
    /// First match wins.
    pub priorities: Vec<(Pattern, Class)>,
    pub latest_value: Vec<Pattern>,
}

impl LinkPolicy {
    /// The tag of a message on `topic` with `key`; `class` is the publisher's own
    /// choice, when it made one (local publishes only).
    pub fn tag(&self, topic: &str, key: &str, class: Option<Class>) -> Tag {
        // The common case (no policy) stays a couple of branches.
        let class = class.unwrap_or_else(|| self.class_of(topic));
        let latest = if !self.latest_value.is_empty()
            && self.latest_value.iter().any(|p| p.matches(topic))
        {
            Some(key_hash(topic, key))
        } else {
            None
        };
        Tag { class, latest }
    }

    pub fn class_of(&self, topic: &str) -> Class {
        self.priorities
            .iter()
            .find(|(p, _)| p.matches(topic))
            .map_or(Class::Normal, |(_, c)| *c)
    }

    /// The tag of a protocol frame the core sends to some peers.
    pub fn frame_tag(&self, frame: &Frame) -> Tag {
        match frame {
            Frame::Neighbours(_) => Tag::URGENT,
            Frame::Msg(m) | Frame::Msg2(super::wire::Signed { msg: m, .. }) => {
                self.tag(&m.topic, &m.key, None)
            }
            Frame::Digest(_)
            | Frame::Versions { .. }
            | Frame::Entries(_)
            | Frame::Entries2(_)
            | Frame::Root(_) => Tag::BULK,
        }
    }
}

/// What every link of the node follows: the topic policy and `--link-rate`.
#[derive(Debug, Clone, Default)]
pub struct LinkSettings {
    pub policy: LinkPolicy,
    /// Bits per second per peer link; 0 = no cap.
    pub rate_cap: u64,
}

/// A 64-bit hash of (topic, key). Two pairs that collide would replace each other in a
/// queue: with SipHash and a handful of keys per link, a risk we accept.
fn key_hash(topic: &str, key: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    topic.hash(&mut h);
    key.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn the_first_matching_pattern_names_the_class() {
        let p = LinkPolicy {
            priorities: vec![
                (pat("alerts/**"), Class::Urgent),
                (pat("alerts/low"), Class::Bulk),
                (pat("logs/*"), Class::Bulk),
            ],
            latest_value: vec![pat("tracks/*")],
        };
        assert_eq!(p.class_of("alerts/low"), Class::Urgent);
        assert_eq!(p.class_of("logs/a"), Class::Bulk);
        assert_eq!(p.class_of("other"), Class::Normal);
        // The publisher's choice wins over the pattern.
        assert_eq!(
            p.tag("logs/a", "", Some(Class::Urgent)).class,
            Class::Urgent
        );
        let a = p.tag("tracks/1", "k", None);
        assert_eq!(a.latest, p.tag("tracks/1", "k", None).latest);
        assert!(a.latest.is_some());
        assert_ne!(a.latest, p.tag("tracks/1", "j", None).latest);
        assert_eq!(p.tag("logs/a", "k", None).latest, None);
        assert_eq!(p.frame_tag(&Frame::Neighbours(vec![])), Tag::URGENT);
        assert_eq!(p.frame_tag(&Frame::Root(1)), Tag::BULK);
        assert_eq!("bulk".parse::<Class>(), Ok(Class::Bulk));
        assert!("fast".parse::<Class>().is_err());
        assert!(Class::Urgent.stream_priority() > Class::Normal.stream_priority());
        assert!(Class::Normal.stream_priority() > Class::Bulk.stream_priority());
    }
}

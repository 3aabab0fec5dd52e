//! Topics, keys and subscription patterns.
//!
//! A topic is UTF-8 made of `/`-separated, non-empty segments (`tracks/blue-2`). A
//! pattern is a topic whose segments may also be `*` (exactly one segment) or, as the
//! last segment only, `**` (any rest, including nothing). The models are Zenoh key
//! expressions and MQTT wildcards. Bounds keep matching cheap and frames small.

use std::fmt;

/// Longest topic or pattern, in bytes.
pub const MAX_TOPIC_LEN: usize = 256;
/// Most segments in a topic or pattern.
pub const MAX_SEGMENTS: usize = 32;
/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("the topic is empty")]
    Empty,
    #[error("the topic is {0} bytes long; at most {MAX_TOPIC_LEN} are allowed")]
    TooLong(usize),
    #[error("the topic has {0} segments; at most {MAX_SEGMENTS} are allowed")]
    TooManySegments(usize),
    #[error("the topic has an empty segment (a leading, trailing or double '/')")]
    EmptySegment,
    #[error("'*' and '**' are wildcards: they are allowed in patterns, not in topics")]
    Wildcard,
    #[error("a segment mixes '*' with other characters; '*' and '**' must stand alone")]
    PartialWildcard,
    #[error("'**' may only be the last segment of a pattern")]
    InnerDoubleStar,
    #[error("the topic contains a control character")]
    Control,
    #[error("the key is {0} bytes long; at most {MAX_KEY_LEN} are allowed")]
    KeyTooLong(usize),
    #[error("the key contains a control character")]
    KeyControl,
}

/// Checks a topic as published (no wildcards).
pub fn check_topic(topic: &str) -> Result<(), TopicError> {
    for seg in segments(topic)? {
        if seg.contains('*') {
            return Err(TopicError::Wildcard);
        }
    }
    Ok(())
}

/// Checks a key; the empty key means "no key".
pub fn check_key(key: &str) -> Result<(), TopicError> {
    if key.len() > MAX_KEY_LEN {
        return Err(TopicError::KeyTooLong(key.len()));
    }
    if key.chars().any(char::is_control) {
        return Err(TopicError::KeyControl);
    }
    Ok(())
}

fn segments(s: &str) -> Result<Vec<&str>, TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong(s.len()));
    }
    if s.chars().any(char::is_control) {
        return Err(TopicError::Control);
    }
    let segs: Vec<&str> = s.split('/').collect();
    if segs.len() > MAX_SEGMENTS {
        return Err(TopicError::TooManySegments(segs.len()));
    }
    if segs.iter().any(|s| s.is_empty()) {
        return Err(TopicError::EmptySegment);
    }
    Ok(segs)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(String),
    One,
    Rest,
}

/// A parsed subscription pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    segs: Vec<Seg>,
}

impl Pattern {
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        let raw = segments(s)?;
        let last = raw.len() - 1;
        let mut segs = Vec::with_capacity(raw.len());
        for (i, seg) in raw.iter().enumerate() {
            segs.push(match *seg {
                "*" => Seg::One,
                "**" if i == last => Seg::Rest,
                "**" => return Err(TopicError::InnerDoubleStar),
                s if s.contains('*') => return Err(TopicError::PartialWildcard),
                s => Seg::Lit(s.to_string()),
            });
        }
        Ok(Pattern {
            text: s.to_string(),
            segs,
        })
    }

    /// Whether a (valid) topic matches.
    pub fn matches(&self, topic: &str) -> bool {
        let mut parts = topic.split('/');
        for seg in &self.segs {
            match seg {
                Seg::Rest => return true,
                Seg::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Seg::Lit(l) => {
                    if parts.next() != Some(l.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        Pattern::parse(p).unwrap().matches(t)
    }

    #[test]
    fn topics() {
        assert!(check_topic("tracks/blue-2").is_ok());
        assert!(check_topic("a").is_ok());
        assert_eq!(check_topic(""), Err(TopicError::Empty));
        assert_eq!(check_topic("/a"), Err(TopicError::EmptySegment));
        assert_eq!(check_topic("a/"), Err(TopicError::EmptySegment));
        assert_eq!(check_topic("a//b"), Err(TopicError::EmptySegment));
        assert_eq!(check_topic("a/*"), Err(TopicError::Wildcard));
        assert_eq!(check_topic("a/b*"), Err(TopicError::Wildcard));
        assert_eq!(check_topic("a\nb"), Err(TopicError::Control));
        assert_eq!(
            check_topic(&"a".repeat(MAX_TOPIC_LEN + 1)),
            Err(TopicError::TooLong(MAX_TOPIC_LEN + 1))
        );
        assert!(check_topic(&"a".repeat(MAX_TOPIC_LEN)).is_ok());
        let many = vec!["a"; MAX_SEGMENTS + 1].join("/");
        assert_eq!(
            check_topic(&many),
            Err(TopicError::TooManySegments(MAX_SEGMENTS + 1))
        );
    }

    #[test]
    fn keys() {
        assert!(check_key("").is_ok());
        assert!(check_key("unit-7").is_ok());
        assert_eq!(check_key("a\0"), Err(TopicError::KeyControl));
        assert!(check_key(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
    }

    #[test]
    fn patterns_parse() {
        assert!(Pattern::parse("**").is_ok());
        assert!(Pattern::parse("a/*/c").is_ok());
        assert_eq!(Pattern::parse("**/a"), Err(TopicError::InnerDoubleStar));
        assert_eq!(Pattern::parse("a/b*"), Err(TopicError::PartialWildcard));
        assert_eq!(Pattern::parse("a/***"), Err(TopicError::PartialWildcard));
        assert_eq!(Pattern::parse(""), Err(TopicError::Empty));
        assert_eq!(Pattern::parse("a/b").unwrap().to_string(), "a/b");
    }

    #[test]
    fn matching() {
        assert!(m("a/b", "a/b"));
        assert!(!m("a/b", "a/b/c"));
        assert!(!m("a/b/c", "a/b"));
        assert!(!m("a/b", "a/c"));
        assert!(m("a/*", "a/b"));
        assert!(!m("a/*", "a"));
        assert!(!m("a/*", "a/b/c"));
        assert!(m("*/b", "x/b"));
        assert!(m("a/**", "a/b/c/d"));
        assert!(m("a/**", "a"));
        assert!(m("**", "anything/at/all"));
        assert!(m("a/*/c/**", "a/x/c"));
        assert!(m("a/*/c/**", "a/x/c/d/e"));
        assert!(!m("a/*/c/**", "a/x/d"));
    }
}

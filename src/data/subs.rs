//! Local subscriptions: each has its own bounded queue (a one-receiver tokio broadcast
//! channel), so a subscriber that stops reading loses its oldest messages and is told
//! how many, while the sidecar and the other subscribers go on.

use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::{topic::Pattern, wire::Message};

/// Messages waiting per subscription before the oldest are dropped.
pub const QUEUE: usize = 1024;

/// What a subscription yields.
#[derive(Debug, Clone)]
pub enum Event {
    Message(Arc<Message>),
    /// This many messages were dropped because the subscriber read too slowly.
    Missed(u64),
}

struct Sub {
    pattern: Pattern,
    tx: broadcast::Sender<Arc<Message>>,
}

#[derive(Default)]
pub struct Subs {
    list: Mutex<Vec<Sub>>,
}

pub struct Subscription {
    rx: broadcast::Receiver<Arc<Message>>,
    pub pattern: Pattern,
}

impl Subscription {
    /// The next message or gap; `None` when the data plane stops.
    pub async fn next(&mut self) -> Option<Event> {
        match self.rx.recv().await {
            Ok(m) => Some(Event::Message(m)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Event::Missed(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl Subs {
    pub fn add(&self, pattern: Pattern) -> Subscription {
        let (tx, rx) = broadcast::channel(QUEUE);
        if let Ok(mut l) = self.list.lock() {
            l.push(Sub {
                pattern: pattern.clone(),
                tx,
            });
        }
        Subscription { rx, pattern }
    }

    /// Hands a message to every matching subscription; returns how many took it.
    /// Subscriptions whose receiver is gone are removed here.
    pub fn deliver(&self, m: &Arc<Message>) -> u64 {
        let Ok(mut l) = self.list.lock() else {
            return 0;
        };
        let mut n = 0;
        l.retain(|s| {
            if !s.pattern.matches(&m.topic) {
                return s.tx.receiver_count() > 0;
            }
            match s.tx.send(m.clone()) {
                Ok(_) => {
                    n += 1;
                    true
                }
                Err(_) => false,
            }
        });
        n
    }

    pub fn count(&self) -> usize {
        self.list
            .lock()
            .map(|l| l.iter().filter(|s| s.tx.receiver_count() > 0).count())
            .unwrap_or(0)
    }

    /// Ends every subscription.
    pub fn close(&self) {
        if let Ok(mut l) = self.list.lock() {
            l.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str, seq: u64) -> Arc<Message> {
        Arc::new(Message {
            publisher: [1; 32],
            seq,
            hlc: 1,
            hops: 0,
            topic: topic.into(),
            key: String::new(),
            payload: bytes::Bytes::new(),
            retain: false,
            ttl_ms: 0,
            tombstone: false,
            sig: None,
        })
    }

    #[tokio::test]
    async fn matching_and_drop_oldest() {
        let subs = Subs::default();
        let mut a = subs.add(Pattern::parse("a/*").unwrap());
        let mut slow = subs.add(Pattern::parse("**").unwrap());
        assert_eq!(subs.deliver(&msg("a/b", 1)), 2);
        assert_eq!(subs.deliver(&msg("c", 2)), 1);
        assert!(matches!(a.next().await, Some(Event::Message(m)) if m.seq == 1));
        for i in 0..(QUEUE as u64 + 10) {
            subs.deliver(&msg("c", 3 + i));
        }
        // The slow one lost the oldest 12 of its 1,036 and is told so; then the rest.
        assert!(matches!(slow.next().await, Some(Event::Missed(12))));
        assert!(matches!(slow.next().await, Some(Event::Message(m)) if m.seq == 13));
        drop(a);
        subs.deliver(&msg("a/x", 99));
        assert_eq!(subs.count(), 1);
        subs.close();
        while let Some(Event::Message(_)) = slow.next().await {}
    }
}

//! Which neighbours a message goes to, and which messages are new.
//!
//! Each node tells its data peers its neighbour set. The publisher sends to all its
//! neighbours; a node that gets a message first from S forwards it to its neighbours
//! except S, S's announced neighbours (S sent to those) and the publisher. On a full
//! mesh nobody forwards (N-1 transmissions per publish); across a bridge A-B-C, B
//! forwards to C. A hop limit ends loops that stale neighbour sets could cause.

use std::collections::{HashMap, HashSet, VecDeque};

use super::wire::Id;

/// Publishers whose last sequence number is remembered.
pub const MAX_PUBLISHERS: usize = 4096;

pub fn forward_targets<'a>(
    mine: impl Iterator<Item = &'a Id>,
    from: &Id,
    from_neighbours: &HashSet<Id>,
    publisher: &Id,
) -> Vec<Id> {
    mine.filter(|n| *n != from && *n != publisher && !from_neighbours.contains(*n))
        .copied()
        .collect()
}

/// Sequence numbers a publisher's messages may arrive out of order by and still be
/// taken: links send urgent frames before normal and bulk ones (issue 26), so a bulk
/// message can arrive long after a later urgent one. Older ones are dropped as seen.
pub const SEEN_WINDOW: u64 = 4096;
const WORDS: usize = (SEEN_WINDOW / 64) as usize;

/// The messages taken from each publisher: its highest sequence number and which of the
/// [`SEEN_WINDOW`] below it arrived. A message seen before, or older than the window,
/// is a duplicate and dropped (at most once per publisher, in any order within the
/// window). 512 bytes per publisher.
#[derive(Debug, Default)]
pub struct Seen {
    last: HashMap<Id, Window>,
    order: VecDeque<Id>,
}

#[derive(Debug)]
struct Window {
    last: u64,
    /// Bit `seq % SEEN_WINDOW` is set when `seq` (within the window) was taken.
    bits: Box<[u64; WORDS]>,
}

impl Window {
    fn new(seq: u64) -> Self {
        let mut w = Window {
            last: seq,
            bits: Box::new([0; WORDS]),
        };
        w.set(seq);
        w
    }

    fn bit(seq: u64) -> (usize, u64) {
        let i = seq % SEEN_WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    fn set(&mut self, seq: u64) {
        let (w, b) = Self::bit(seq);
        self.bits[w] |= b;
    }

    fn accept(&mut self, seq: u64) -> bool {
        if seq > self.last {
            if seq - self.last >= SEEN_WINDOW {
                self.bits.fill(0);
            } else {
                for s in self.last + 1..seq {
                    let (w, b) = Self::bit(s);
                    self.bits[w] &= !b;
                }
            }
            self.last = seq;
            self.set(seq);
            return true;
        }
        if self.last - seq >= SEEN_WINDOW {
            return false;
        }
        let (w, b) = Self::bit(seq);
        let fresh = self.bits[w] & b == 0;
        self.bits[w] |= b;
        fresh
    }
}

impl Seen {
    /// Whether (publisher, seq) is new; records it if so.
    pub fn accept(&mut self, publisher: &Id, seq: u64) -> bool {
        if let Some(w) = self.last.get_mut(publisher) {
            return w.accept(seq);
        }
        if self.last.len() >= MAX_PUBLISHERS {
            if let Some(old) = self.order.pop_front() {
                self.last.remove(&old);
            }
        }
        self.last.insert(*publisher, Window::new(seq));
        self.order.push_back(*publisher);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Id {
        [n; 32]
    }

    fn set(ids: &[u8]) -> HashSet<Id> {
        ids.iter().map(|n| id(*n)).collect()
    }

    #[test]
    fn full_mesh_does_not_forward() {
        // Nodes 1..=4 all connected; 2 gets from 1 (the publisher).
        let mine = [id(1), id(3), id(4)];
        let t = forward_targets(mine.iter(), &id(1), &set(&[2, 3, 4]), &id(1));
        assert!(t.is_empty());
    }

    #[test]
    fn bridge_forwards_across() {
        // A(1) - B(2) - C(3): B gets from A, whose only neighbour is B.
        let mine = [id(1), id(3)];
        assert_eq!(
            forward_targets(mine.iter(), &id(1), &set(&[2]), &id(1)),
            [id(3)]
        );
        // C gets from B; its only neighbour is B.
        assert!(forward_targets([id(2)].iter(), &id(2), &set(&[1, 3]), &id(1)).is_empty());
        // Never back to the publisher, even when S did not announce it.
        assert!(forward_targets([id(1)].iter(), &id(2), &set(&[]), &id(1)).is_empty());
    }

    #[test]
    fn seen_drops_duplicates_and_what_is_older_than_the_window() {
        let mut s = Seen::default();
        assert!(s.accept(&id(1), 5));
        assert!(!s.accept(&id(1), 5));
        // Out of order (a lower class's message, late): taken once.
        assert!(s.accept(&id(1), 4));
        assert!(!s.accept(&id(1), 4));
        assert!(s.accept(&id(1), 6));
        assert!(s.accept(&id(1), 9));
        assert!(s.accept(&id(1), 7));
        assert!(!s.accept(&id(1), 9));
        // A jump: the window moves; what fell out of it is dropped, what is in it not
        // yet seen is taken, and bits of the old window do not stick to new numbers.
        let far = 9 + SEEN_WINDOW + 1;
        assert!(s.accept(&id(1), far));
        assert!(!s.accept(&id(1), 9));
        assert!(s.accept(&id(1), far - 1));
        assert!(s.accept(&id(1), 7 + SEEN_WINDOW));
        assert!(!s.accept(&id(1), far - SEEN_WINDOW));
        assert!(s.accept(&id(2), 1));
        for n in 0..MAX_PUBLISHERS as u32 {
            let mut p = [0u8; 32];
            p[..4].copy_from_slice(&n.to_be_bytes());
            p[31] = 9;
            s.accept(&p, 1);
        }
        assert!(s.last.len() <= MAX_PUBLISHERS);
    }
}

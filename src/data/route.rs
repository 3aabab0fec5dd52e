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

/// The last sequence number taken from each publisher: a message at or below it is a
/// duplicate or out of order, and dropped (at most once, in order per publisher).
#[derive(Debug, Default)]
pub struct Seen {
    last: HashMap<Id, u64>,
    order: VecDeque<Id>,
}

impl Seen {
    /// Whether (publisher, seq) is new; records it if so.
    pub fn accept(&mut self, publisher: &Id, seq: u64) -> bool {
        match self.last.get_mut(publisher) {
            Some(last) if seq <= *last => false,
            Some(last) => {
                *last = seq;
                true
            }
            None => {
                if self.last.len() >= MAX_PUBLISHERS {
                    if let Some(old) = self.order.pop_front() {
                        self.last.remove(&old);
                    }
                }
                self.last.insert(*publisher, seq);
                self.order.push_back(*publisher);
                true
            }
        }
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
    fn seen_drops_duplicates_and_older() {
        let mut s = Seen::default();
        assert!(s.accept(&id(1), 5));
        assert!(!s.accept(&id(1), 5));
        assert!(!s.accept(&id(1), 4));
        assert!(s.accept(&id(1), 6));
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

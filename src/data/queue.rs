//! A link's queue of encoded frames, one lane per priority class (issue 26). Pure: the
//! link (src/data/link.rs) holds it under a lock and wakes its writers.
//!
//! - The writers take the highest class first (each class has its own QUIC stream, of
//!   a higher stream priority for a higher class, so a class's writer never waits
//!   behind a lower class's bytes).
//! - The bound is shared by the lanes: [`QUEUE_MIN_FRAMES`] frames always fit, more
//!   small ones while the queue holds less than [`QUEUE_BYTES`], never more than
//!   [`QUEUE`] frames. When a frame does not fit, the oldest frames of lower classes
//!   are dropped to make room (bulk first); when that cannot make room, the new frame
//!   is dropped. So urgent frames are never dropped while bulk ones are queued.
//! - A frame of a latest-value topic replaces, in place, the frame for the same
//!   (topic, key) still queued in its lane: the link carries the freshest value, in
//!   the place of the stale one.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use super::class::{Class, Tag};

/// Frames a link's queue always takes.
pub const QUEUE_MIN_FRAMES: usize = 2048;
/// Beyond [`QUEUE_MIN_FRAMES`], frames are taken while the queue holds fewer bytes.
pub const QUEUE_BYTES: usize = 8 * 1024 * 1024;
/// Most frames queued per link, whatever their size.
pub const QUEUE: usize = 16_384;

/// What became of a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued; `evicted` older frames of lower classes were dropped for it.
    Queued { evicted: usize },
    /// It took the place of the queued frame for its (topic, key).
    Replaced,
    /// No room: dropped.
    Dropped,
}

/// Counters of one class on one link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Frames and bytes waiting now.
    pub queued_frames: u64,
    pub queued_bytes: u64,
    /// Frames and bytes handed to the QUIC stream (a live message is one frame).
    pub sent_frames: u64,
    pub sent_bytes: u64,
    /// Frames dropped: refused for want of room, or evicted for a higher class.
    pub dropped: u64,
    /// Latest-value frames replaced by a newer one before they were sent.
    pub replaced: u64,
}

struct Item {
    frame: Bytes,
    latest: Option<u64>,
}

#[derive(Default)]
struct Lane {
    items: VecDeque<Item>,
    /// Sequence number of the front item; items are numbered in push order.
    base: u64,
    /// Latest-value key -> sequence number of its queued item.
    latest: HashMap<u64, u64>,
    bytes: usize,
    stats: ClassStats,
}

impl Lane {
    fn pop_front(&mut self) -> Option<Item> {
        let item = self.items.pop_front()?;
        if let Some(k) = item.latest {
            if self.latest.get(&k) == Some(&self.base) {
                self.latest.remove(&k);
            }
        }
        self.base += 1;
        self.bytes -= item.frame.len();
        Some(item)
    }

    /// Puts `frame` in the place of the queued one for `key`; false if there is none.
    fn replace(&mut self, key: u64, frame: &Bytes) -> bool {
        let Some(&seq) = self.latest.get(&key) else {
            return false;
        };
        let Some(item) = seq
            .checked_sub(self.base)
            .and_then(|i| self.items.get_mut(i as usize))
        else {
            return false;
        };
        self.bytes = self.bytes - item.frame.len() + frame.len();
        item.frame = frame.clone();
        self.stats.replaced += 1;
        true
    }
}

#[derive(Default)]
pub struct ClassQueue {
    lanes: [Lane; 3],
    frames: usize,
    bytes: usize,
}

fn fits(frames: usize, bytes: usize, len: usize) -> bool {
    frames < QUEUE && (frames < QUEUE_MIN_FRAMES || bytes + len <= QUEUE_BYTES)
}

impl ClassQueue {
    pub fn push(&mut self, frame: &Bytes, tag: Tag) -> Pushed {
        let c = tag.class.index();
        if let Some(k) = tag.latest {
            let before = self.lanes[c].bytes;
            if self.lanes[c].replace(k, frame) {
                self.bytes = self.bytes - before + self.lanes[c].bytes;
                return Pushed::Replaced;
            }
        }
        let len = frame.len();
        if !fits(self.frames, self.bytes, len) && !self.make_room(c, len) {
            self.lanes[c].stats.dropped += 1;
            return Pushed::Dropped;
        }
        let evicted = self.evict_for(c, len);
        let lane = &mut self.lanes[c];
        if let Some(k) = tag.latest {
            lane.latest.insert(k, lane.base + lane.items.len() as u64);
        }
        lane.items.push_back(Item {
            frame: frame.clone(),
            latest: tag.latest,
        });
        lane.bytes += len;
        self.frames += 1;
        self.bytes += len;
        Pushed::Queued { evicted }
    }

    /// Whether dropping every frame of the classes below `c` would make room.
    fn make_room(&self, c: usize, len: usize) -> bool {
        let (frames, bytes) = self.lanes[..c]
            .iter()
            .fold((0, 0), |(f, b), l| (f + l.items.len(), b + l.bytes));
        frames > 0 && fits(self.frames - frames, self.bytes - bytes, len)
    }

    /// Drops the oldest frames of the lowest classes below `c` until `len` fits.
    fn evict_for(&mut self, c: usize, len: usize) -> usize {
        let mut evicted = 0;
        for low in 0..c {
            while !fits(self.frames, self.bytes, len) {
                let Some(item) = self.lanes[low].pop_front() else {
                    break;
                };
                self.lanes[low].stats.dropped += 1;
                self.frames -= 1;
                self.bytes -= item.frame.len();
                evicted += 1;
            }
        }
        evicted
    }

    /// Takes up to `max` frames of class `c`, oldest first, into `out`; counted as sent.
    pub fn take(&mut self, c: Class, max: usize, out: &mut Vec<Bytes>) -> usize {
        let lane = &mut self.lanes[c.index()];
        let mut n = 0;
        while n < max {
            let Some(item) = lane.pop_front() else { break };
            lane.stats.sent_frames += 1;
            lane.stats.sent_bytes += item.frame.len() as u64;
            self.frames -= 1;
            self.bytes -= item.frame.len();
            out.push(item.frame);
            n += 1;
        }
        n
    }

    /// The size of the next frame of class `c`, if any.
    pub fn next_len(&self, c: Class) -> Option<usize> {
        self.lanes[c.index()].items.front().map(|i| i.frame.len())
    }

    /// Whether a class above `c` has frames waiting.
    pub fn waiting_above(&self, c: Class) -> bool {
        self.lanes[c.index() + 1..]
            .iter()
            .any(|l| !l.items.is_empty())
    }

    #[cfg(test)]
    pub fn frames(&self) -> usize {
        self.frames
    }

    pub fn stats(&self, c: Class) -> ClassStats {
        let l = &self.lanes[c.index()];
        ClassStats {
            queued_frames: l.items.len() as u64,
            queued_bytes: l.bytes as u64,
            ..l.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(class: Class) -> Tag {
        Tag {
            class,
            latest: None,
        }
    }

    fn frame(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn take_all(q: &mut ClassQueue, c: Class) -> Vec<Bytes> {
        let mut out = vec![];
        q.take(c, usize::MAX, &mut out);
        out
    }

    #[test]
    fn each_class_keeps_its_order_and_higher_classes_are_seen_first() {
        let mut q = ClassQueue::default();
        q.push(&frame("b1"), tag(Class::Bulk));
        q.push(&frame("n1"), tag(Class::Normal));
        q.push(&frame("b2"), tag(Class::Bulk));
        assert!(q.waiting_above(Class::Bulk));
        assert!(!q.waiting_above(Class::Normal));
        q.push(&frame("u1"), tag(Class::Urgent));
        assert!(q.waiting_above(Class::Normal));
        assert_eq!(take_all(&mut q, Class::Urgent), vec![frame("u1")]);
        assert_eq!(take_all(&mut q, Class::Normal), vec![frame("n1")]);
        assert!(!q.waiting_above(Class::Bulk));
        assert_eq!(q.next_len(Class::Bulk), Some(2));
        assert_eq!(
            take_all(&mut q, Class::Bulk),
            vec![frame("b1"), frame("b2")]
        );
        assert_eq!(q.frames(), 0);
        let s = q.stats(Class::Bulk);
        assert_eq!((s.sent_frames, s.sent_bytes, s.queued_frames), (2, 4, 0));
    }

    #[test]
    fn a_full_queue_drops_bulk_first_and_never_urgent_while_bulk_waits() {
        let mut q = ClassQueue::default();
        let big = Bytes::from(vec![0u8; 1024 * 1024]);
        // Large frames: the queue takes QUEUE_MIN_FRAMES of them.
        for _ in 0..QUEUE_MIN_FRAMES - 2 {
            assert!(matches!(
                q.push(&big, tag(Class::Bulk)),
                Pushed::Queued { .. }
            ));
        }
        q.push(&big, tag(Class::Normal));
        q.push(&big, tag(Class::Normal));
        // Full: more bulk is refused.
        assert_eq!(q.push(&big, tag(Class::Bulk)), Pushed::Dropped);
        // Urgent and normal frames push out the oldest bulk ones.
        for _ in 0..100 {
            assert_eq!(
                q.push(&big, tag(Class::Urgent)),
                Pushed::Queued { evicted: 1 }
            );
        }
        assert_eq!(
            q.push(&big, tag(Class::Normal)),
            Pushed::Queued { evicted: 1 }
        );
        assert_eq!(q.stats(Class::Bulk).dropped, 102);
        assert_eq!(q.stats(Class::Urgent).queued_frames, 100);
        assert_eq!(q.frames(), QUEUE_MIN_FRAMES);
        // The oldest bulk frames went: the remaining ones are the newest.
        let bulk = q.stats(Class::Bulk).queued_frames as usize;
        assert_eq!(bulk, QUEUE_MIN_FRAMES - 2 - 101);
        // With nothing below them, urgent frames are refused when the queue is full.
        let mut q2 = ClassQueue::default();
        for _ in 0..QUEUE_MIN_FRAMES {
            q2.push(&big, tag(Class::Urgent));
        }
        assert_eq!(q2.push(&big, tag(Class::Urgent)), Pushed::Dropped);
        assert_eq!(q2.stats(Class::Urgent).dropped, 1);
    }

    #[test]
    fn small_frames_are_bounded_in_frames_and_bytes() {
        let mut q = ClassQueue::default();
        let small = frame("0123");
        let n = (0..QUEUE + 5)
            .filter(|_| q.push(&small, tag(Class::Normal)) != Pushed::Dropped)
            .count();
        assert_eq!(n, QUEUE);
        let mut q = ClassQueue::default();
        let mib = Bytes::from(vec![0u8; 1024 * 1024]);
        for _ in 0..QUEUE_MIN_FRAMES {
            q.push(&small, tag(Class::Normal));
        }
        let more = (0..10)
            .filter(|_| q.push(&mib, tag(Class::Normal)) != Pushed::Dropped)
            .count();
        assert_eq!(
            more,
            (QUEUE_BYTES - QUEUE_MIN_FRAMES * small.len()) / mib.len()
        );
    }

    #[test]
    fn a_latest_value_frame_replaces_the_queued_one_in_its_place() {
        let mut q = ClassQueue::default();
        let lv = |k| Tag {
            class: Class::Normal,
            latest: Some(k),
        };
        q.push(&frame("a1"), lv(1));
        q.push(&frame("other"), tag(Class::Normal));
        q.push(&frame("b1"), lv(2));
        assert_eq!(q.push(&frame("a22"), lv(1)), Pushed::Replaced);
        assert_eq!(q.push(&frame("b2"), lv(2)), Pushed::Replaced);
        assert_eq!(q.frames(), 3);
        assert_eq!(q.stats(Class::Normal).queued_bytes, 3 + 5 + 2);
        assert_eq!(q.stats(Class::Normal).replaced, 2);
        let mut out = vec![];
        q.take(Class::Normal, 1, &mut out);
        assert_eq!(out, vec![frame("a22")]);
        // Once sent, the next value for the key queues anew, behind the others.
        assert!(matches!(q.push(&frame("a3"), lv(1)), Pushed::Queued { .. }));
        assert_eq!(
            take_all(&mut q, Class::Normal),
            vec![frame("other"), frame("b2"), frame("a3")]
        );
        // Another class's lane is another queue: no replacement across classes.
        q.push(
            &frame("u"),
            Tag {
                class: Class::Urgent,
                latest: Some(1),
            },
        );
        assert!(matches!(q.push(&frame("n"), lv(1)), Pushed::Queued { .. }));
    }
}

//! The bounded log-line buffer between the file followers and the hub.
//!
//! Every line the followers read is kept here until the hub acknowledges
//! it (`published` with the op id). That is what makes log delivery
//! at-least-once across reconnects: a line leaves the buffer only on its
//! ack, on a definite refusal (`bad_request`, `forbidden`, …), or when the
//! buffer is full and it is the oldest line.
//!
//! A line is either *pending* (never sent on the current connection, or
//! sent and then given back) or *in flight* (sent, reply awaited). Lines
//! are numbered in arrival order and the number doubles as the op id, so an
//! ack finds its line without a second map, and "send the oldest pending
//! line first" keeps lines in file order: after a reconnect the lines that
//! were in flight are older than the ones still pending, so they go first.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Counters of what happened to lines, for the periodic and exit logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BufferStats {
    /// Lines taken in.
    pub accepted: u64,
    /// Publish ops sent (resends included).
    pub sent: u64,
    /// Lines the hub acknowledged.
    pub acked: u64,
    /// Lines sent again: after a reconnect, or a `rate_limited` refusal.
    pub resent: u64,
    /// Oldest lines dropped because the buffer was full.
    pub dropped: u64,
    /// Lines the hub refused for good (and that were dropped).
    pub rejected: u64,
}

struct Entry {
    /// The log record, serialized once (the publish op's `data`).
    data: Arc<str>,
    in_flight: bool,
}

/// Holds at most `capacity` lines, pending and in flight together.
pub struct LogBuffer {
    capacity: usize,
    /// Every line held, by id (= arrival order).
    entries: BTreeMap<u64, Entry>,
    /// Ids of the lines to send, oldest first.
    pending: BTreeSet<u64>,
    in_flight: usize,
    next_id: u64,
    stats: BufferStats,
}

impl LogBuffer {
    /// A buffer of `capacity` lines (at least one).
    pub fn new(capacity: usize) -> LogBuffer {
        LogBuffer {
            capacity: capacity.max(1),
            entries: BTreeMap::new(),
            pending: BTreeSet::new(),
            in_flight: 0,
            // Ids start at 1: the protocol's ids are positive for log lines
            // (metrics ops use negative ids, see `publisher`).
            next_id: 1,
            stats: BufferStats::default(),
        }
    }

    /// Takes a line in. When the buffer is full the oldest line (pending or
    /// in flight) makes room; returns how many lines were dropped (0 or 1).
    pub fn push(&mut self, data: impl Into<Arc<str>>) -> u64 {
        let mut dropped = 0;
        while self.entries.len() >= self.capacity {
            let Some((id, old)) = self.entries.pop_first() else {
                break;
            };
            self.forget(id, &old);
            self.stats.dropped += 1;
            dropped += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(
            id,
            Entry {
                data: data.into(),
                in_flight: false,
            },
        );
        self.pending.insert(id);
        self.stats.accepted += 1;
        dropped
    }

    /// Marks up to `max` of the oldest pending lines in flight and returns
    /// them (id, data), oldest first.
    pub fn take(&mut self, max: usize) -> Vec<(u64, Arc<str>)> {
        let mut out = Vec::with_capacity(max.min(self.pending.len()));
        while out.len() < max {
            let Some(id) = self.pending.pop_first() else {
                break;
            };
            if let Some(e) = self.entries.get_mut(&id) {
                e.in_flight = true;
                self.in_flight += 1;
                self.stats.sent += 1;
                out.push((id, e.data.clone()));
            }
        }
        out
    }

    /// The hub accepted line `id`: forget it. False when the line is no
    /// longer held (dropped while in flight, or a duplicate reply).
    pub fn ack(&mut self, id: u64) -> bool {
        match self.entries.remove(&id) {
            Some(e) => {
                self.forget(id, &e);
                self.stats.acked += 1;
                true
            }
            None => false,
        }
    }

    /// The hub refused line `id` for now (`rate_limited`): send it again,
    /// before any younger pending line.
    pub fn retry(&mut self, id: u64) -> bool {
        match self.entries.get_mut(&id) {
            Some(e) if e.in_flight => {
                e.in_flight = false;
                self.in_flight -= 1;
                self.pending.insert(id);
                self.stats.resent += 1;
                true
            }
            _ => false,
        }
    }

    /// The hub refused line `id` for good: drop it and count it.
    pub fn reject(&mut self, id: u64) -> bool {
        match self.entries.remove(&id) {
            Some(e) => {
                self.forget(id, &e);
                self.stats.rejected += 1;
                true
            }
            None => false,
        }
    }

    /// The connection is gone: every line in flight may or may not have
    /// arrived, so all of them are sent again, in order, on the next one.
    pub fn requeue_in_flight(&mut self) -> usize {
        let mut n = 0;
        for (id, e) in self.entries.iter_mut().filter(|(_, e)| e.in_flight) {
            e.in_flight = false;
            self.pending.insert(*id);
            n += 1;
        }
        self.in_flight = 0;
        self.stats.resent += n as u64;
        n
    }

    /// Lines held (pending and in flight).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    pub fn stats(&self) -> BufferStats {
        self.stats
    }

    /// Removes a line that just left `entries` from the other indexes.
    fn forget(&mut self, id: u64, e: &Entry) {
        if e.in_flight {
            self.in_flight -= 1;
        } else {
            self.pending.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[(u64, Arc<str>)]) -> Vec<u64> {
        v.iter().map(|(id, _)| *id).collect()
    }

    fn data(v: &[(u64, Arc<str>)]) -> Vec<&str> {
        v.iter().map(|(_, d)| &**d).collect()
    }

    #[test]
    fn full_buffer_drops_the_oldest_and_counts() {
        let mut b = LogBuffer::new(3);
        for line in ["a", "b", "c"] {
            assert_eq!(b.push(line), 0);
        }
        assert_eq!(b.push("d"), 1);
        assert_eq!(b.push("e"), 1);
        assert_eq!(b.len(), 3);
        assert_eq!(data(&b.take(10)), ["c", "d", "e"]);
        let s = b.stats();
        assert_eq!((s.accepted, s.dropped, s.sent), (5, 2, 3));
    }

    #[test]
    fn dropping_a_line_in_flight_keeps_the_counts_straight() {
        let mut b = LogBuffer::new(2);
        b.push("a");
        b.push("b");
        assert_eq!(ids(&b.take(1)), [1]);
        assert_eq!(b.in_flight(), 1);
        b.push("c"); // drops "a", which was in flight
        assert_eq!(b.in_flight(), 0);
        assert!(!b.ack(1), "a late ack of a dropped line is ignored");
        assert_eq!(data(&b.take(10)), ["b", "c"]);
        assert_eq!(b.stats().acked, 0);
    }

    #[test]
    fn reconnect_resends_unacked_lines_in_order_then_the_rest() {
        let mut b = LogBuffer::new(100);
        for i in 1..=6 {
            b.push(format!("l{i}"));
        }
        assert_eq!(ids(&b.take(4)), [1, 2, 3, 4]);
        assert!(b.ack(2));
        assert!(b.ack(4));
        assert_eq!(b.requeue_in_flight(), 2);
        assert_eq!(data(&b.take(10)), ["l1", "l3", "l5", "l6"]);
        for id in [1, 3, 5, 6] {
            assert!(b.ack(id));
        }
        assert!(b.is_empty());
        let s = b.stats();
        assert_eq!((s.sent, s.acked, s.resent), (8, 6, 2));
    }

    #[test]
    fn rate_limited_lines_go_before_younger_pending_ones() {
        let mut b = LogBuffer::new(100);
        for i in 1..=4 {
            b.push(format!("l{i}"));
        }
        assert_eq!(ids(&b.take(2)), [1, 2]);
        assert!(b.retry(1));
        assert!(!b.retry(1), "only a line in flight can be retried");
        assert!(b.ack(2));
        assert_eq!(ids(&b.take(10)), [1, 3, 4]);
    }

    #[test]
    fn rejected_lines_are_dropped_and_counted() {
        let mut b = LogBuffer::new(10);
        b.push("bad");
        b.push("good");
        b.take(10);
        assert!(b.reject(1));
        assert!(b.ack(2));
        assert!(b.is_empty());
        assert_eq!(b.in_flight(), 0);
        assert_eq!(b.stats().rejected, 1);
        assert!(!b.reject(1));
    }

    #[test]
    fn take_respects_its_limit() {
        let mut b = LogBuffer::new(10);
        for i in 0..5 {
            b.push(format!("{i}"));
        }
        assert_eq!(b.take(2).len(), 2);
        assert!(b.has_pending());
        assert_eq!(b.in_flight(), 2);
        assert_eq!(b.take(0).len(), 0);
    }
}

//! A subscriber's bounded outbound queue.
//!
//! Metrics frames are conflated (one slot per team: the newest wins), logs
//! and alerts queue in order up to `capacity`; when that overflows the
//! mailbox is marked lagged and refuses everything after, so the session
//! sends what it holds, then `lagged`, then closes with 4008.
//! Pushing never waits: the hub holds a team lock while it fans out.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::hub::TeamId;
use crate::protocol::{Frame, Stream};

/// One frame on its way to one subscriber.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub team: TeamId,
    pub stream: Stream,
    pub seq: u64,
    /// The frame's `ts` (unix µs), for the delivery-lag histogram.
    pub ts: i64,
    pub frame: Frame,
}

/// Where a lagged subscriber should resume from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lagged {
    pub team: TeamId,
    pub stream: Stream,
    pub last_seq: u64,
}

/// The outcome of queueing a log or alert frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// The queue is full: the subscriber is now lagged.
    Full,
    /// The subscriber is already lagged or gone.
    Closed,
}

#[derive(Default)]
struct Inbox {
    metrics: Vec<Delivery>,
    events: VecDeque<Delivery>,
    lagged: Option<Lagged>,
    closed: bool,
    /// Metrics frames replaced before delivery (for the close span).
    conflated: u64,
}

impl Inbox {
    fn is_empty(&self) -> bool {
        self.metrics.is_empty() && self.events.is_empty() && self.lagged.is_none()
    }
}

pub struct Mailbox {
    inbox: Mutex<Inbox>,
    notify: Notify,
    capacity: usize,
}

impl Mailbox {
    pub fn new(capacity: usize) -> Mailbox {
        Mailbox {
            inbox: Mutex::new(Inbox::default()),
            notify: Notify::new(),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inbox> {
        // A panic while holding this lock leaves only plain queues behind,
        // which stay consistent; keep serving.
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a metrics frame, replacing an undelivered one of the same
    /// team. Returns whether it replaced (conflated) one, or None when the
    /// subscriber is lagged or gone (the hub then drops it).
    pub fn push_metrics(&self, d: Delivery) -> Option<bool> {
        let mut inbox = self.lock();
        if inbox.closed || inbox.lagged.is_some() {
            return None;
        }
        let was_empty = inbox.is_empty();
        let replaced = if let Some(slot) = inbox.metrics.iter_mut().find(|m| m.team == d.team) {
            *slot = d;
            inbox.conflated += 1;
            true
        } else {
            inbox.metrics.push(d);
            false
        };
        drop(inbox);
        if was_empty {
            self.notify.notify_one();
        }
        Some(replaced)
    }

    /// Queues a log or alert frame, in order.
    pub fn push_event(&self, d: Delivery) -> Push {
        let mut inbox = self.lock();
        if inbox.closed || inbox.lagged.is_some() {
            return Push::Closed;
        }
        if inbox.events.len() >= self.capacity {
            return Push::Full;
        }
        let was_empty = inbox.is_empty();
        inbox.events.push_back(d);
        drop(inbox);
        if was_empty {
            self.notify.notify_one();
        }
        Push::Queued
    }

    /// Marks the subscriber lagged; it gets nothing more.
    pub fn set_lagged(&self, lagged: Lagged) {
        let mut inbox = self.lock();
        if inbox.lagged.is_none() {
            inbox.lagged = Some(lagged);
        }
        drop(inbox);
        self.notify.notify_one();
    }

    /// Refuses everything from now on (the session is ending).
    pub fn close(&self) {
        let mut inbox = self.lock();
        inbox.closed = true;
        inbox.metrics.clear();
        inbox.events.clear();
    }

    /// Drops undelivered frames of `team` whose stream is in `streams`
    /// (after an unsubscribe).
    pub fn purge(&self, team: TeamId, streams: &[Stream]) {
        let mut inbox = self.lock();
        inbox
            .metrics
            .retain(|d| !(d.team == team && streams.contains(&d.stream)));
        inbox
            .events
            .retain(|d| !(d.team == team && streams.contains(&d.stream)));
    }

    /// Moves everything queued into `out` (metrics first, then events in
    /// order) and returns the lagged marker once it is set.
    pub fn drain(&self, out: &mut Vec<Delivery>) -> Option<Lagged> {
        let mut inbox = self.lock();
        out.append(&mut inbox.metrics);
        out.extend(inbox.events.drain(..));
        inbox.lagged
    }

    /// Metrics frames this subscriber never got because newer ones replaced them.
    pub fn conflated(&self) -> u64 {
        self.lock().conflated
    }

    /// Resolves when something was queued since the last drain.
    pub async fn ready(&self) {
        self.notify.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(team: TeamId, stream: Stream, seq: u64) -> Delivery {
        Delivery {
            team,
            stream,
            seq,
            ts: 0,
            frame: Frame::from(format!("{seq}")),
        }
    }

    #[test]
    fn metrics_conflate_per_team_and_events_overflow_to_lagged() {
        let m = Mailbox::new(2);
        assert_eq!(m.push_metrics(d(0, Stream::Metrics, 1)), Some(false));
        assert_eq!(m.push_metrics(d(0, Stream::Metrics, 2)), Some(true));
        assert_eq!(m.push_metrics(d(1, Stream::Metrics, 1)), Some(false));
        assert_eq!(m.push_event(d(0, Stream::Logs, 1)), Push::Queued);
        assert_eq!(m.push_event(d(0, Stream::Logs, 2)), Push::Queued);
        assert_eq!(m.push_event(d(0, Stream::Logs, 3)), Push::Full);
        m.set_lagged(Lagged {
            team: 0,
            stream: Stream::Logs,
            last_seq: 2,
        });
        assert_eq!(m.push_event(d(0, Stream::Logs, 4)), Push::Closed);
        let mut out = Vec::new();
        let lagged = m.drain(&mut out);
        let seqs: Vec<_> = out.iter().map(|d| (d.team, d.stream, d.seq)).collect();
        assert_eq!(
            seqs,
            vec![
                (0, Stream::Metrics, 2),
                (1, Stream::Metrics, 1),
                (0, Stream::Logs, 1),
                (0, Stream::Logs, 2)
            ]
        );
        assert_eq!(lagged.unwrap().last_seq, 2);
    }
}

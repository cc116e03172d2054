//! A subscriber's bounded outbound queue.
//!
//! Metrics frames are conflated (one slot per team: the newest wins), logs
//! and alerts queue in order up to `capacity`; when that overflows the
//! mailbox is marked lagged and refuses everything after, so the session
//! sends what it holds, then `lagged`, then closes with 4008.
//! Pushing never waits: the hub holds a team lock while it fans out.
//!
//! Two kinds of consumer drain it. SSE's session task awaits [`Mailbox::ready`]
//! and [`Mailbox::drain`]s. A WebSocket's response body polls it directly
//! ([`Mailbox::poll_take`]), so a frame goes from the hub to the socket
//! without waking the session's own task; the session queues its replies
//! with [`Mailbox::push_control`] and learns that the body is done through
//! [`Mailbox::ended`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
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

/// What a session itself writes, in order, ahead of data frames.
#[derive(Clone, Debug)]
pub enum Control {
    Text(Frame),
    Ping(Bytes),
    Pong(Bytes),
    /// The last frame: nothing is written after it.
    Close(u16, String),
}

/// Control frames queued before the session waits for the writer: the
/// session (reading a burst of ops) can outrun the writer on the same
/// thread, and a client that stops reading must push back on it.
const CONTROL_CAP: usize = 64;

/// What [`Mailbox::poll_take`] hands the writer.
#[derive(Debug, Default)]
pub struct Outgoing {
    pub control: Vec<Control>,
    pub data: Vec<Delivery>,
    pub lagged: Option<Lagged>,
}

/// The writer's view of the mailbox after a take.
#[derive(Debug, PartialEq, Eq)]
pub enum Take {
    /// Something was moved into the [`Outgoing`].
    Ready,
    /// Closed and empty: the writer is done.
    Finished,
    /// The session gave up on the connection: end it without a close frame
    /// (whatever was queued is dropped).
    Aborted,
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
    control: VecDeque<Control>,
    lagged: Option<Lagged>,
    /// The lagged marker went to the writer already.
    lagged_taken: bool,
    closed: bool,
    aborted: bool,
    /// The writer of a WebSocket, parked until something is queued.
    waker: Option<Waker>,
    /// Set when the writer is done, with the close it sent if it closed.
    ended: Option<Option<(u16, String)>>,
    /// Metrics frames replaced before delivery (for the close span).
    conflated: u64,
}

impl Inbox {
    fn is_empty(&self) -> bool {
        self.metrics.is_empty()
            && self.events.is_empty()
            && self.control.is_empty()
            && (self.lagged.is_none() || self.lagged_taken)
    }
}

pub struct Mailbox {
    inbox: Mutex<Inbox>,
    notify: Notify,
    ended: Notify,
    /// The writer took control frames (room for more).
    drained: Notify,
    capacity: usize,
    /// Frames the writer has put on the wire (control and data).
    sent: AtomicU64,
}

impl Mailbox {
    pub fn new(capacity: usize) -> Mailbox {
        Mailbox {
            inbox: Mutex::new(Inbox::default()),
            notify: Notify::new(),
            ended: Notify::new(),
            drained: Notify::new(),
            capacity,
            sent: AtomicU64::new(0),
        }
    }

    /// Wakes whoever drains: the SSE task (`ready`) or the WS writer.
    fn wake(&self, waker: Option<Waker>) {
        self.notify.notify_one();
        if let Some(w) = waker {
            w.wake();
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
        let waker = if was_empty { inbox.waker.take() } else { None };
        drop(inbox);
        if was_empty {
            self.wake(waker);
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
        let waker = if was_empty { inbox.waker.take() } else { None };
        drop(inbox);
        if was_empty {
            self.wake(waker);
        }
        Push::Queued
    }

    /// Marks the subscriber lagged; it gets nothing more.
    pub fn set_lagged(&self, lagged: Lagged) {
        let mut inbox = self.lock();
        if inbox.lagged.is_none() {
            inbox.lagged = Some(lagged);
        }
        let waker = inbox.waker.take();
        drop(inbox);
        self.wake(waker);
    }

    /// Refuses data from now on (the session is ending). Control frames
    /// already queued (a close) are still written.
    pub fn close(&self) {
        let mut inbox = self.lock();
        inbox.closed = true;
        inbox.metrics.clear();
        inbox.events.clear();
        let waker = inbox.waker.take();
        drop(inbox);
        self.wake(waker);
    }

    /// The session gives up on the connection (gone, or not answering
    /// pings): the writer drops it without a close frame.
    pub fn abort(&self) {
        let mut inbox = self.lock();
        inbox.aborted = true;
        inbox.metrics.clear();
        inbox.events.clear();
        inbox.control.clear();
        let waker = inbox.waker.take();
        drop(inbox);
        self.wake(waker);
    }

    /// Queues a frame of the session's own (a reply, an error, a ping, a
    /// close). `Full` when [`CONTROL_CAP`] of them wait for the writer (the
    /// session then awaits [`Mailbox::drained`]), `Closed` when the writer
    /// is gone.
    pub fn push_control(&self, c: Control) -> Push {
        let mut inbox = self.lock();
        if inbox.aborted || inbox.ended.is_some() {
            return Push::Closed;
        }
        if inbox.control.len() >= CONTROL_CAP {
            return Push::Full;
        }
        inbox.control.push_back(c);
        let waker = inbox.waker.take();
        drop(inbox);
        self.wake(waker);
        Push::Queued
    }

    /// Queues several control frames at once, whatever their number: a
    /// `subscribed` reply and its replay must not be split by live frames.
    pub fn push_control_all(&self, frames: impl IntoIterator<Item = Control>) -> bool {
        let mut inbox = self.lock();
        if inbox.aborted || inbox.ended.is_some() {
            return false;
        }
        inbox.control.extend(frames);
        let waker = inbox.waker.take();
        drop(inbox);
        self.wake(waker);
        true
    }

    /// Whether the session should wait for the writer before queueing.
    pub fn control_full(&self) -> bool {
        self.lock().control.len() >= CONTROL_CAP
    }

    /// Resolves when the writer next takes control frames.
    pub async fn drained(&self) {
        self.drained.notified().await
    }

    /// The writer's side: moves everything queued into `out` (control
    /// first, then metrics, then events in order, then the lagged marker
    /// once), or parks the writer until something comes.
    pub fn poll_take(&self, cx: &mut Context<'_>, out: &mut Outgoing) -> Poll<Take> {
        let mut inbox = self.lock();
        if inbox.aborted {
            return Poll::Ready(Take::Aborted);
        }
        if inbox.is_empty() {
            if inbox.closed {
                return Poll::Ready(Take::Finished);
            }
            inbox.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let took_control = !inbox.control.is_empty();
        out.control.extend(inbox.control.drain(..));
        out.data.append(&mut inbox.metrics);
        out.data.extend(inbox.events.drain(..));
        if inbox.lagged.is_some() && !inbox.lagged_taken {
            inbox.lagged_taken = true;
            out.lagged = inbox.lagged;
        }
        drop(inbox);
        if took_control {
            self.drained.notify_one();
        }
        Poll::Ready(Take::Ready)
    }

    /// The writer is done (it wrote a close, or the connection went):
    /// nothing more is queued, and [`Mailbox::ended`] resolves.
    pub fn mark_ended(&self, close: Option<(u16, String)>) {
        let mut inbox = self.lock();
        if inbox.ended.is_none() {
            inbox.ended = Some(close);
        }
        drop(inbox);
        self.ended.notify_one();
    }

    /// Resolves once the writer is done, with the close it wrote (if any).
    pub async fn ended(&self) -> Option<(u16, String)> {
        loop {
            let notified = self.ended.notified();
            if let Some(close) = self.lock().ended.clone() {
                return close;
            }
            notified.await;
        }
    }

    /// Counts frames put on the wire.
    pub fn count_sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    /// Frames put on the wire so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
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

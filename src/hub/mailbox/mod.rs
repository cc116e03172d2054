//! A subscriber's bounded outbound queue, and, for a WebSocket, the door
//! to its socket.
//!
//! Metrics frames are conflated (one slot per team: the newest wins), logs
//! and alerts queue in order up to `capacity`; when that overflows the
//! mailbox is marked lagged and refuses everything after, so the session
//! sends what it holds, then `lagged`, then closes with 4008.
//! Nothing here ever waits: the hub fans out from the ticker thread and
//! from publishers' tasks.
//!
//! Two kinds of consumer drain it. SSE's session task awaits [`Mailbox::ready`]
//! and [`Mailbox::drain`]s. A WebSocket's writer polls it
//! ([`Mailbox::poll_take`]); its session queues replies with
//! [`Mailbox::push_control_all`] (after waiting, while `CONTROL_CAP` of
//! them are queued, for [`Mailbox::drained`]), and a reply answered later
//! by a task of its own with [`Mailbox::push_late`].
//!
//! A WebSocket also lends the mailbox its socket (a [`Wire`]). Then a
//! metrics frame offered while nothing is queued, nothing is being
//! written and no reply is being prepared goes **straight to the socket**
//! from the fan-out ([`Mailbox::offer_metrics`]): one non-blocking write
//! of the frame every subscriber shares, no task woken, nothing
//! allocated. That is what a 1 Hz burst to thousands of subscribers
//! costs least as. Only when the socket pushes back (or a write is
//! already under way) is the frame queued for the writer, as before.
//! Every write to the socket happens either under this mailbox's lock
//! (the fan-out) or while the writer has marked itself `writing` (which
//! keeps the fan-out off), so bytes of two frames never interleave.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use smallvec::SmallVec;
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
    /// Part of a subscribe's replay: old by design, so not a delivery
    /// whose lag is measured.
    pub replay: bool,
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
/// session (reading a burst of ops) can outrun the writer, and a client
/// that stops reading must push back on it.
const CONTROL_CAP: usize = 64;

/// A socket the fan-out may write a text frame to directly.
pub trait Wire: Send + Sync {
    /// Writes `frame` (a text message's payload) if the socket takes it
    /// now; never waits. `encoded` caches the frame as this kind of wire
    /// puts it on the socket: the first subscriber of a fan-out builds
    /// it, every other one writes the same bytes.
    fn try_send(&self, frame: &Frame, encoded: &OnceLock<Bytes>) -> Sent;
}

/// What a [`Wire`] did with a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// All of it went out.
    All,
    /// Part of it went out; these bytes (the rest) must follow before
    /// anything else is written.
    Part(Bytes),
    /// The socket is full: nothing went out.
    Full,
    /// The socket failed: the peer is gone.
    Failed,
}

/// What became of a metrics frame offered to a subscriber.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// Written straight to the subscriber's socket.
    Written,
    /// Queued for the subscriber's writer; `true` when it replaced an
    /// undelivered frame of the same team (conflated).
    Queued(bool),
    /// The subscriber is lagged or gone: it takes nothing more.
    Refused,
    /// Not (or no longer) subscribed to this team's metrics.
    Ignored,
}

/// What [`Mailbox::poll_take`] hands the writer, in the order it goes out.
#[derive(Debug, Default)]
pub struct Outgoing {
    /// The rest of a frame the fan-out wrote part of: goes first.
    pub owed: Option<Bytes>,
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
    /// The socket, while the connection lives (WebSocket only).
    wire: Option<Arc<dyn Wire>>,
    /// The rest of a frame the fan-out wrote part of.
    owed: Option<Bytes>,
    /// The writer took a batch and is putting it on the wire.
    writing: bool,
    /// The session is preparing frames that must go before any data (a
    /// `subscribed` reply and its replay).
    held: bool,
    /// Teams whose metrics this subscriber takes, from which seq on. The
    /// fan-out works from a snapshot of the team's subscribers; this keeps
    /// a snapshot older than an unsubscribe (or than an unsubscribe and a
    /// new subscribe) from delivering after it.
    metrics_from: TeamFloors,
}

/// For each team whose metrics a subscriber takes, the first `seq` it
/// takes live (older ones reached it in its replay, or belong to an
/// earlier subscription). Inline for up to three teams: the fan-out checks
/// it once per subscriber per frame, and a pointer chase to a heap vector
/// would be a cache miss each time.
#[derive(Default)]
struct TeamFloors(SmallVec<[(TeamId, u64); 3]>);

impl TeamFloors {
    /// The first live seq of `team`, if subscribed.
    fn floor(&self, team: TeamId) -> Option<u64> {
        self.0.iter().find(|(t, _)| *t == team).map(|&(_, f)| f)
    }

    fn set(&mut self, team: TeamId, from: u64) {
        match self.0.iter_mut().find(|(t, _)| *t == team) {
            Some(slot) => slot.1 = from,
            None => self.0.push((team, from)),
        }
    }

    fn remove(&mut self, team: TeamId) {
        self.0.retain(|(t, _)| *t != team);
    }
}

impl Inbox {
    fn is_empty(&self) -> bool {
        self.metrics.is_empty()
            && self.events.is_empty()
            && self.control.is_empty()
            && self.owed.is_none()
            && (self.lagged.is_none() || self.lagged_taken)
    }

    /// Whether the writer has something to take now: while a subscribe is
    /// being prepared ([`Mailbox::hold`]) only the session's own frames
    /// go, so neither a replay nor a live frame overtakes `subscribed`.
    fn has_takeable(&self) -> bool {
        if self.held {
            !self.control.is_empty() || self.owed.is_some()
        } else {
            !self.is_empty()
        }
    }

    /// Lagged, closing or aborted: it takes no data frame any more.
    fn refuses_data(&self) -> bool {
        self.closed || self.aborted || self.lagged.is_some()
    }

    /// The socket, when the fan-out may write to it now: nothing queued,
    /// nothing on its way, nothing being prepared.
    fn direct(&self) -> Option<&Arc<dyn Wire>> {
        if self.writing || self.held || self.ended.is_some() || !self.is_empty() {
            return None;
        }
        self.wire.as_ref()
    }
}

pub struct Mailbox {
    inbox: Mutex<Inbox>,
    notify: Notify,
    /// The writer took control frames (room for more).
    drained: Notify,
    capacity: usize,
    /// Frames put on the wire (control and data, by the writer and the
    /// fan-out).
    sent: AtomicU64,
}

impl Mailbox {
    pub fn new(capacity: usize) -> Mailbox {
        Mailbox {
            inbox: Mutex::new(Inbox::default()),
            notify: Notify::new(),
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

    /// Lends the mailbox the connection's socket: from now on metrics
    /// frames may be written straight to it (see the module docs).
    pub fn attach_wire(&self, wire: Arc<dyn Wire>) {
        self.lock().wire = Some(wire);
    }

    /// This subscriber now takes `team`'s metrics frames from seq `from`
    /// on (the hub calls it under the team's lock, when it joins the
    /// subscribers: `from` is the seq after the one it replays).
    pub fn accept_metrics(&self, team: TeamId, from: u64) {
        self.lock().metrics_from.set(team, from);
    }

    /// Offers a metrics frame: written to the socket if the way is clear,
    /// else queued, replacing an undelivered one of the same team.
    /// `encoded` is shared by every subscriber of this fan-out (see
    /// [`Wire::try_send`]).
    pub fn offer_metrics(&self, d: &Delivery, encoded: &OnceLock<Bytes>) -> Offer {
        let mut inbox = self.lock();
        if inbox.refuses_data() {
            return Offer::Refused;
        }
        if inbox
            .metrics_from
            .floor(d.team)
            .is_none_or(|from| d.seq < from)
        {
            return Offer::Ignored;
        }
        if let Some(wire) = inbox.direct() {
            match wire.try_send(&d.frame, encoded) {
                Sent::All => {
                    drop(inbox);
                    self.count_sent(1);
                    return Offer::Written;
                }
                Sent::Part(rest) => {
                    // The writer finishes it when the socket has room.
                    inbox.owed = Some(rest);
                    let waker = inbox.waker.take();
                    drop(inbox);
                    self.count_sent(1);
                    self.wake(waker);
                    return Offer::Written;
                }
                Sent::Full => {}
                Sent::Failed => {
                    drop(inbox);
                    self.abort();
                    return Offer::Refused;
                }
            }
        }
        let was_empty = inbox.is_empty();
        let replaced = if let Some(slot) = inbox.metrics.iter_mut().find(|m| m.team == d.team) {
            *slot = d.clone();
            inbox.conflated += 1;
            true
        } else {
            inbox.metrics.push(d.clone());
            false
        };
        let waker = if was_empty { inbox.waker.take() } else { None };
        drop(inbox);
        if was_empty {
            self.wake(waker);
        }
        Offer::Queued(replaced)
    }

    /// Whether the subscriber still takes data (not lagged, not closing).
    pub fn takes_data(&self) -> bool {
        !self.lock().refuses_data()
    }

    /// Queues a log or alert frame, in order.
    pub fn push_event(&self, d: Delivery) -> Push {
        self.push_bounded(d, self.capacity)
    }

    /// Queues a frame of a subscribe's replay (the hub calls it under the
    /// team's lock, so live frames queue after it). A replay from history
    /// takes queue slots like any frame (`Full`: the subscriber lags and
    /// resumes from where it got to); the firing alerts (`firing: true`,
    /// at most `limits.max_firing_alerts`, no more than the queue holds)
    /// may fill the queue up to twice its size, so one subscribe's set
    /// always fits; past that (several sets in one burst) it is `Full`
    /// too, and the hub makes the subscriber lag.
    pub fn push_replay(&self, d: Delivery, firing: bool) -> Push {
        let room = if firing {
            self.capacity.saturating_mul(2)
        } else {
            self.capacity
        };
        self.push_bounded(d, room)
    }

    /// Queues the latest metrics frame of a team as a subscribe's replay:
    /// it takes the team's conflated slot, and a live frame replaces it.
    pub fn replay_metrics(&self, d: Delivery) {
        let mut inbox = self.lock();
        if inbox.refuses_data() {
            return;
        }
        let was_empty = inbox.is_empty();
        match inbox.metrics.iter_mut().find(|m| m.team == d.team) {
            Some(slot) => *slot = d,
            None => inbox.metrics.push(d),
        }
        let waker = if was_empty { inbox.waker.take() } else { None };
        drop(inbox);
        if was_empty {
            self.wake(waker);
        }
    }

    fn push_bounded(&self, d: Delivery, room: usize) -> Push {
        let mut inbox = self.lock();
        if inbox.refuses_data() {
            return Push::Closed;
        }
        if inbox.events.len() >= room {
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
        inbox.held = false;
        inbox.metrics.clear();
        inbox.events.clear();
        // The writer has the socket itself; the fan-out is done with it.
        inbox.wire = None;
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
        inbox.owed = None;
        inbox.wire = None;
        let waker = inbox.waker.take();
        drop(inbox);
        self.wake(waker);
    }

    /// Queues a frame of the session's own (a reply, an error, a ping, a
    /// close). `Full` when `CONTROL_CAP` of them wait for the writer (the
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

    /// Queues a reply that was answered later, from a task of its own (a
    /// `silence`): past `CONTROL_CAP` too (the session bounds how many
    /// there can be), and without ending a [`Mailbox::hold`]. False when
    /// the connection is gone.
    pub fn push_late(&self, c: Control) -> bool {
        let mut inbox = self.lock();
        if inbox.aborted || inbox.ended.is_some() || inbox.closed {
            return false;
        }
        inbox.control.push_back(c);
        let waker = inbox.waker.take();
        drop(inbox);
        self.wake(waker);
        true
    }

    /// Keeps the fan-out off the socket while the session prepares frames
    /// that must go first (a subscribe: call before joining the team, so
    /// no live frame can overtake the `subscribed` reply). Metrics offered
    /// meanwhile are queued. Ended by [`Mailbox::push_control_all`] or
    /// [`Mailbox::release`].
    pub fn hold(&self) {
        self.lock().held = true;
    }

    /// Ends a [`Mailbox::hold`] without queueing anything.
    pub fn release(&self) {
        let mut inbox = self.lock();
        inbox.held = false;
        let waker = (!inbox.is_empty()).then(|| inbox.waker.take()).flatten();
        drop(inbox);
        self.wake(waker);
    }

    /// Queues several control frames at once, whatever their number (a
    /// `subscribed` reply and its replay must not be split by live
    /// frames), and ends a [`Mailbox::hold`].
    pub fn push_control_all(&self, frames: impl IntoIterator<Item = Control>) -> bool {
        let mut inbox = self.lock();
        inbox.held = false;
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

    /// The writer's side: moves everything queued into `out` (what the
    /// fan-out owes first, then control, then metrics, then events in
    /// order, then the lagged marker once) and marks the writer
    /// `writing`, or parks the writer until something comes.
    pub fn poll_take(&self, cx: &mut Context<'_>, out: &mut Outgoing) -> Poll<Take> {
        let mut inbox = self.lock();
        if inbox.aborted {
            return Poll::Ready(Take::Aborted);
        }
        if !inbox.has_takeable() {
            inbox.writing = false;
            if inbox.closed && inbox.is_empty() {
                return Poll::Ready(Take::Finished);
            }
            if !inbox
                .waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                inbox.waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        inbox.writing = true;
        out.owed = inbox.owed.take();
        let took_control = !inbox.control.is_empty();
        // Taken whole: replies are rare, and an idle connection should not
        // keep the queue's allocation.
        out.control.extend(std::mem::take(&mut inbox.control));
        if inbox.held {
            drop(inbox);
            if took_control {
                self.drained.notify_one();
            }
            return Poll::Ready(Take::Ready);
        }
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
    /// nothing more is queued or written.
    pub fn mark_ended(&self, close: Option<(u16, String)>) {
        let mut inbox = self.lock();
        if inbox.ended.is_none() {
            inbox.ended = Some(close);
        }
        inbox.wire = None;
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
    /// (after an unsubscribe); for metrics, frames of the fan-out's older
    /// snapshots are refused too.
    pub fn purge(&self, team: TeamId, streams: &[Stream]) {
        let mut inbox = self.lock();
        if streams.contains(&Stream::Metrics) {
            inbox.metrics_from.remove(team);
        }
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
mod tests;

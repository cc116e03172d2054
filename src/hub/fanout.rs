//! Fan-out: one frame to every subscriber of a team's stream, never
//! waiting on any of them.
//!
//! * Metrics ([`fan_out_metrics`]) go out from the ticker thread, outside
//!   the team's lock, from a snapshot of the team's subscribers; each
//!   mailbox writes the frame straight to its socket when nothing is ahead
//!   of it, else conflates it. A burst of thousands is split over threads.
//! * Logs and alerts ([`fan_out_event`]) are queued under the team's lock,
//!   in seq order; a subscriber whose queue is full is marked lagged and
//!   leaves the team.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use std::time::Instant;

use super::broker::Stored;
use super::mailbox::{Delivery, Lagged, Mailbox, Offer, Push};
use super::topic::TeamState;
use super::TeamId;
use crate::metrics::Metrics;
use crate::protocol::{Level, Stream};
use crate::time::now_micros;

/// A log or alert frame on its way to a team's subscribers.
pub(super) struct Published<'a> {
    pub team: TeamId,
    pub stream: Stream,
    pub stored: &'a Stored,
    /// A log record's level and source, for subscribers' filters.
    pub log: Option<(Level, &'a str)>,
}

/// What an event fan-out did.
pub(super) struct EventFanout {
    /// Subscribers it was queued for.
    pub queued: usize,
    /// Subscribers that overflowed (lagged, now out of the team).
    pub lagged: u64,
    pub micros: u64,
}

/// Queues a log or alert frame for every subscriber of its stream (that
/// its filter lets through). A subscriber whose queue is full is marked
/// lagged, counted, and removed from the team; one already gone is removed.
pub(super) fn fan_out_event(st: &mut TeamState, p: &Published<'_>, m: &Metrics) -> EventFanout {
    let started = Instant::now();
    let idx = p.stream as usize;
    let mut out = EventFanout {
        queued: 0,
        lagged: 0,
        micros: 0,
    };
    let mut i = 0;
    while i < st.subscribers.len() {
        let sub = &mut st.subscribers[i];
        // A subscriber resumed from a seq this process had not read yet
        // (cluster mode) already has the frames up to it.
        let wanted = sub.has(p.stream)
            && p.stored.seq > sub.last_seq[idx]
            && match (p.log, &sub.log_filter) {
                (Some((level, source)), Some(f)) => f.matches(level, source),
                _ => true,
            };
        if !wanted {
            i += 1;
            continue;
        }
        let pushed = sub.mailbox.push_event(Delivery {
            team: p.team,
            stream: p.stream,
            seq: p.stored.seq,
            ts: p.stored.ts,
            frame: p.stored.frame.clone(),
            replay: false,
        });
        match pushed {
            Push::Queued => {
                sub.last_seq[idx] = p.stored.seq;
                out.queued += 1;
                i += 1;
            }
            Push::Full => {
                sub.mailbox.set_lagged(Lagged {
                    team: p.team,
                    stream: p.stream,
                    last_seq: sub.last_seq[idx],
                });
                m.frames_dropped
                    .with_label_values(&[p.stream.as_str(), "lagged"])
                    .inc();
                m.slow_consumer_closes.inc();
                out.lagged += 1;
                st.subscribers_mut().swap_remove(i);
            }
            Push::Closed => {
                st.subscribers_mut().swap_remove(i);
            }
        }
    }
    out.micros = started.elapsed().as_micros() as u64;
    out
}

/// Marks every subscriber of `stream` lagged at the last seq it was
/// queued, and takes it out of the team: the frames after it are gone
/// (cluster mode: trimmed before this process could read them, or lost
/// with the broker's data). Returns how many.
pub(super) fn lag_stream(st: &mut TeamState, team: TeamId, stream: Stream) -> usize {
    let idx = stream as usize;
    let before = st.subscribers.len();
    st.subscribers_mut().retain(|sub| {
        if !sub.has(stream) {
            return true;
        }
        sub.mailbox.set_lagged(Lagged {
            team,
            stream,
            last_seq: sub.last_seq[idx],
        });
        false
    });
    before - st.subscribers.len()
}

/// Subscribers a fan-out thread takes at least: below that, starting a
/// thread costs more than it saves.
pub(super) const FANOUT_CHUNK: usize = 1024;

/// What one metrics fan-out did.
#[derive(Default)]
pub(super) struct FanoutCount {
    /// Subscribers that got the frame (written or queued).
    pub fanout: u64,
    /// Written straight to the socket.
    pub written: u64,
    /// Queued in place of an undelivered older frame.
    pub conflated: u64,
    /// Lagged or closing: to be dropped from the team.
    pub refused: u64,
}

impl std::ops::AddAssign for FanoutCount {
    fn add_assign(&mut self, o: FanoutCount) {
        self.fanout += o.fanout;
        self.written += o.written;
        self.conflated += o.conflated;
        self.refused += o.refused;
    }
}

/// Offers one metrics frame to `mailboxes`, in order.
fn offer_all(
    mailboxes: &[Arc<Mailbox>],
    d: &Delivery,
    encoded: &OnceLock<Bytes>,
    lag: &prometheus::Histogram,
) -> FanoutCount {
    let mut n = FanoutCount::default();
    for mailbox in mailboxes {
        match mailbox.offer_metrics(d, encoded) {
            Offer::Written => {
                n.fanout += 1;
                n.written += 1;
                lag.observe((now_micros() - d.ts).max(0) as f64 / 1e6);
            }
            Offer::Queued(replaced) => {
                n.fanout += 1;
                n.conflated += replaced as u64;
            }
            Offer::Refused => n.refused += 1,
            Offer::Ignored => {}
        }
    }
    n
}

/// Offers one metrics frame to every mailbox, split over up to `threads`
/// threads (the caller's among them) when there are enough of them; a
/// thread that cannot be started leaves its share to the caller.
pub(super) fn fan_out_metrics(
    mailboxes: &[Arc<Mailbox>],
    d: &Delivery,
    lag: &prometheus::Histogram,
    threads: usize,
) -> FanoutCount {
    let encoded = OnceLock::new();
    let threads = threads.min(mailboxes.len() / FANOUT_CHUNK).max(1);
    if threads == 1 {
        return offer_all(mailboxes, d, &encoded, lag);
    }
    let chunk = mailboxes.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let mut parts = mailboxes.chunks(chunk);
        let mine = parts.next().unwrap_or_default();
        let mut inline = Vec::new();
        let handles: Vec<_> = parts
            .filter_map(|part| {
                let spawned = std::thread::Builder::new()
                    .name("opswire-fanout".into())
                    .spawn_scoped(scope, || offer_all(part, d, &encoded, lag));
                match spawned {
                    Ok(h) => Some(h),
                    Err(_) => {
                        inline.push(part);
                        None
                    }
                }
            })
            .collect();
        let mut total = offer_all(mine, d, &encoded, lag);
        for part in inline {
            total += offer_all(part, d, &encoded, lag);
        }
        for h in handles {
            total += h.join().unwrap_or_else(|_| {
                tracing::error!("a metrics fan-out thread panicked; its share missed this frame");
                FanoutCount::default()
            });
        }
        total
    })
}

//! A session's membership in the hub: its mailbox, what it subscribes to,
//! and the replay a subscribe queues.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::broker::Stored;
use super::mailbox::{Delivery, Lagged, Mailbox, Push};
use super::topic::Subscriber;
use super::view::{View, ViewError};
use super::{Hub, HubError, SessionId, TeamId};
use crate::protocol::{LogFilter, ResumePoint, Stream, ViewSpec};

/// What a subscribe did: which resumes succeeded, and where each log and
/// alert stream stood. The replay itself is queued in the mailbox.
#[derive(Debug, Default)]
pub struct Subscribed {
    pub recovered: BTreeMap<Stream, bool>,
    /// The seq of each subscribed log/alert stream at subscribe time:
    /// everything up to it is in the replay or was not asked for.
    pub positions: BTreeMap<Stream, u64>,
    /// The last replayed frame's seq of each stream that replayed any.
    pub replayed: BTreeMap<Stream, u64>,
    /// The team's metrics view now (normalized), when the subscribe named
    /// one.
    pub view: Option<ViewSpec>,
}

/// Dropping it unsubscribes the session everywhere.
pub struct SessionHandle {
    pub(super) hub: Hub,
    pub(super) id: SessionId,
    pub(super) mailbox: Arc<Mailbox>,
    /// Subscribed streams per team (bit set of `Stream::bit`).
    pub(super) subscriptions: BTreeMap<TeamId, u8>,
}

impl SessionHandle {
    pub fn mailbox(&self) -> &Arc<Mailbox> {
        &self.mailbox
    }

    /// Teams this session is subscribed to.
    pub fn teams(&self) -> Vec<TeamId> {
        self.subscriptions.keys().copied().collect()
    }

    fn subscription_count(&self) -> usize {
        self.subscriptions
            .values()
            .map(|b| b.count_ones() as usize)
            .sum()
    }

    /// Subscribes to `streams` of `team` (adding to what the session has)
    /// and queues the replay in the session's mailbox.
    ///
    /// Under the team lock, so nothing published concurrently is missed or
    /// doubled: the replay holds every frame up to now, and live frames
    /// queue after it. Replay order: the latest metrics frame, then logs,
    /// then alerts. Without a `resume` for alerts, the currently firing
    /// alerts are replayed; with one that cannot be honoured
    /// (`recovered:false`) too, since the client has to resync. A replay
    /// takes queue slots like live frames (see [`Mailbox::push_replay`]).
    /// A WebSocket session [`Mailbox::hold`]s its writer first, so the
    /// replay goes out after its `subscribed` reply.
    ///
    /// The team's metrics view stays what it was (`full` for a new
    /// subscription); see [`SessionHandle::subscribe_view`].
    pub fn subscribe(
        &mut self,
        team: TeamId,
        streams: &[Stream],
        resume: &BTreeMap<Stream, ResumePoint>,
        log_filter: Option<LogFilter>,
    ) -> Result<Subscribed, HubError> {
        self.subscribe_view(team, streams, resume, log_filter, None)
    }

    /// [`SessionHandle::subscribe`], and `view`, when given, replaces the
    /// team's metrics view (None keeps it: `full` for a new
    /// subscription). A changed view replays its latest frame, and no
    /// frame of the old view reaches the subscriber after it.
    pub fn subscribe_view(
        &mut self,
        team: TeamId,
        streams: &[Stream],
        resume: &BTreeMap<Stream, ResumePoint>,
        log_filter: Option<LogFilter>,
        view: Option<&ViewSpec>,
    ) -> Result<Subscribed, HubError> {
        let current = self.subscriptions.get(&team).copied().unwrap_or(0);
        let wanted = streams.iter().fold(current, |w, s| w | s.bit());
        let added = (wanted & !current).count_ones() as usize;
        let max = self.hub.shared.settings.max_subscriptions;
        if self.subscription_count() + added > max {
            return Err(HubError::TooManySubscriptions(max));
        }
        if self.hub.not_loaded() && streams.iter().any(|&s| s != Stream::Metrics) {
            return Err(HubError::Unavailable(
                "broker unavailable: this process has not loaded the teams' streams yet; retry"
                    .into(),
            ));
        }
        let view_asked = view.is_some();
        let asked = view
            .map(|v| View::new(v, &self.hub.shared.settings.views))
            .transpose()?;
        let mut out = Subscribed::default();
        let mut st = self.hub.lock(team);
        let pos = st.subscribers.iter().position(|s| s.session == self.id);
        let old_view = pos.map(|p| st.subscribers[p].view.clone());
        let mut view = asked.unwrap_or_else(|| old_view.clone().unwrap_or_default());
        if let View::Hosts(_) = view {
            let served = st.host_views(self.id);
            match served.iter().find(|v| ***v == view) {
                // Shared, compiled once: the fan-out groups by it.
                Some(same) => view = (*same).clone(),
                None if served.len() >= self.hub.shared.settings.views.max_per_team => {
                    return Err(ViewError::TooManyViews {
                        team: self.hub.team_name(team).to_owned(),
                        max: self.hub.shared.settings.views.max_per_team,
                    }
                    .into())
                }
                None => {}
            }
        }
        out.view = view_asked.then(|| view.spec());
        let metrics = Stream::Metrics.bit();
        let view_changed = old_view.is_some_and(|v| v != view);
        if wanted & metrics != 0 && (current & metrics == 0 || view_changed) {
            // The view's latest frame, then live from the frame after it;
            // a frame of the old view still on its way (an older seq) is
            // ignored by the mailbox.
            if let Some(latest) = self.hub.latest_view_frame(team, &mut st, &view) {
                self.mailbox
                    .replay_metrics(replayed(team, Stream::Metrics, latest));
            }
            self.mailbox.accept_metrics(team, st.metrics_seq + 1);
        }
        let filter = log_filter
            .clone()
            .or_else(|| pos.and_then(|p| st.subscribers[p].log_filter.clone()));
        let mut last_seq = pos.map_or([0; 3], |p| st.subscribers[p].last_seq);
        for &stream in streams {
            // Already subscribed: its frames are flowing; replaying again
            // would double them.
            if current & stream.bit() != 0 {
                continue;
            }
            if stream == Stream::Metrics {
                // Replayed above.
                continue;
            }
            let filter = filter.as_ref().filter(|_| stream == Stream::Logs);
            let firing = (stream == Stream::Alerts).then(|| st.alerts.frames());
            last_seq[stream as usize] =
                self.replay(team, stream, resume.get(&stream), filter, firing, &mut out);
        }
        match pos {
            Some(p) => {
                let sub = &mut st.subscribers_mut()[p];
                sub.streams = wanted;
                if log_filter.is_some() {
                    sub.log_filter = log_filter;
                }
                sub.last_seq = last_seq;
                sub.view = view;
            }
            None => st.subscribers_mut().push(Subscriber {
                session: self.id,
                mailbox: self.mailbox.clone(),
                streams: wanted,
                log_filter,
                last_seq,
                view,
            }),
        }
        drop(st);
        self.subscriptions.insert(team, wanted);
        Ok(out)
    }

    /// Queues the replay of one log or alert stream (called with the
    /// team's lock held): what a resume asks for, or (alerts, when there
    /// is nothing to resume) the firing set. Returns the seq the
    /// subscriber is known to have, for a later `lagged`.
    fn replay(
        &self,
        team: TeamId,
        stream: Stream,
        resume: Option<&ResumePoint>,
        filter: Option<&LogFilter>,
        firing: Option<Vec<Stored>>,
        out: &mut Subscribed,
    ) -> u64 {
        let broker = &self.hub.shared.broker;
        let head = broker.head(team, stream);
        out.positions.insert(stream, head);
        let clustered = self.hub.clustered();
        let resumed = resume.map(|r| {
            let from = (*r.epoch == *broker.epoch(team)).then_some(r.seq);
            from.and_then(|seq| {
                if clustered && seq > head {
                    // Cluster mode: the client had it from a process that
                    // read the stream further than this one has yet. It
                    // gets the frames after it as they arrive here (the
                    // fan-out skips those it already has).
                    return Some((seq, Vec::new()));
                }
                broker.since(team, stream, seq, filter).map(|f| (seq, f))
            })
        });
        match resumed {
            Some(Some((from, frames))) => {
                out.recovered.insert(stream, true);
                let mut known = from;
                for f in frames {
                    let seq = f.seq;
                    if self.mailbox.push_replay(replayed(team, stream, f), false) != Push::Queued {
                        // Full (or lagged on another stream already): it
                        // lags here, and resumes from `known`; its
                        // position says so too (an SSE `id:` must not
                        // claim what never went out).
                        self.mailbox.set_lagged(Lagged {
                            team,
                            stream,
                            last_seq: known,
                        });
                        out.positions.insert(stream, known);
                        return known;
                    }
                    known = seq;
                    out.replayed.insert(stream, seq);
                }
                if from > head {
                    out.positions.insert(stream, from);
                }
                head.max(from)
            }
            Some(None) | None => {
                if resumed.is_some() {
                    out.recovered.insert(stream, false);
                }
                for f in firing.unwrap_or_default() {
                    let seq = f.seq;
                    if self.mailbox.push_replay(replayed(team, stream, f), true) != Push::Queued {
                        // The firing set did not fit (several in one
                        // burst): never a silent loss. It lags, and its
                        // resume from 0 gets the whole history or, beyond
                        // it, the firing set again.
                        self.mailbox.set_lagged(Lagged {
                            team,
                            stream,
                            last_seq: 0,
                        });
                        out.positions.insert(stream, 0);
                        out.replayed.remove(&stream);
                        return 0;
                    }
                    out.replayed.insert(stream, seq);
                }
                head
            }
        }
    }

    /// Unsubscribes from `streams` of `team`; returns the streams that
    /// were subscribed.
    pub fn unsubscribe(&mut self, team: TeamId, streams: &[Stream]) -> Vec<Stream> {
        let Some(current) = self.subscriptions.get(&team).copied() else {
            return Vec::new();
        };
        let remaining = streams.iter().fold(current, |r, s| r & !s.bit());
        let removed: Vec<Stream> = Stream::ALL
            .into_iter()
            .filter(|s| current & s.bit() != 0 && remaining & s.bit() == 0)
            .collect();
        {
            let mut st = self.hub.lock(team);
            let subscribers = st.subscribers_mut();
            if let Some(p) = subscribers.iter().position(|s| s.session == self.id) {
                if remaining == 0 {
                    subscribers.swap_remove(p);
                } else {
                    subscribers[p].streams = remaining;
                    if remaining & Stream::Metrics.bit() == 0 {
                        // Its view no longer takes a place (nor a frame).
                        subscribers[p].view = View::Full;
                    }
                }
            }
        }
        if remaining == 0 {
            self.subscriptions.remove(&team);
        } else {
            self.subscriptions.insert(team, remaining);
        }
        self.mailbox.purge(team, &removed);
        removed
    }

    /// Streams of `team` this session is subscribed to.
    pub fn streams_of(&self, team: TeamId) -> Vec<Stream> {
        let bits = self.subscriptions.get(&team).copied().unwrap_or(0);
        Stream::ALL
            .into_iter()
            .filter(|s| bits & s.bit() != 0)
            .collect()
    }
}

/// A stored frame as part of a subscribe's replay.
fn replayed(team: TeamId, stream: Stream, f: Stored) -> Delivery {
    Delivery {
        team,
        stream,
        seq: f.seq,
        ts: f.ts,
        frame: f.frame,
        replay: true,
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        self.mailbox.close();
        for &team in self.subscriptions.keys() {
            let mut st = self.hub.lock(team);
            st.subscribers_mut().retain(|s| s.session != self.id);
        }
        self.hub.shared.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

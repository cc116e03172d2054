//! The hub: one topic per team, each with three streams (metrics, logs,
//! alerts), and the subscribers to fan them out to.
//!
//! The hub knows nothing about WebSocket or SSE. A transport opens a
//! [`SessionHandle`], subscribes it to streams, and drains its
//! [`Mailbox`]. Each frame is serialized once, and the same `Frame` (a
//! reference-counted string) is queued for every subscriber. Fan-out never
//! waits on a subscriber: a full queue makes that subscriber lagged (logs,
//! alerts) or replaces its older frame (metrics). Each team's lock is a
//! std `Mutex`, never held across an `.await`.
//!
//! # Layout
//!
//! * [`broker`]: the seam where a log or alert frame gets its `seq`, is
//!   kept for resume and read back, and where host snapshots enter a team;
//!   [`memory`] is the embedded implementation.
//! * [`alerts`]: de-duplication and the firing set of a team.
//! * `topic`: what the hub keeps per team behind its lock.
//! * `fanout`: a frame to every subscriber of a stream.
//! * `session`: a session's subscriptions and the replay of a subscribe.
//! * `mailbox`: a subscriber's bounded queue (and its socket).
//!
//! Metrics frames fan out from the ticker thread **outside** the team's
//! lock: under it the hub only builds the frame and takes the team's
//! subscriber snapshot, so a burst to thousands of sockets never holds up
//! a subscribe, an agent's update or a log publish of that team. Log and
//! alert frames, which may come many per second from a publisher's task,
//! are appended and queued under the lock, in seq order, and written by
//! each connection's own writer in batches.

pub mod alerts;
pub mod broker;
mod fanout;
mod mailbox;
pub mod memory;
mod replica;
mod session;
mod topic;
pub mod view;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

pub use broker::{
    AlertChange, Answer, Appended, Broker, BrokerError, Reloaded, Sequencer, Stored, Submission,
};
pub use mailbox::{Control, Delivery, Lagged, Mailbox, Offer, Outgoing, Push, Sent, Take, Wire};
pub use replica::{Delivered, Incoming, Pending};
pub use session::{SessionHandle, Subscribed};

use broker::{Draft, HostEntry};
use fanout::{fan_out_event, fan_out_metrics, EventFanout, Published};
use memory::MemoryBroker;
use serde_json::value::RawValue;
use topic::{Targets, TeamState};
use view::{HostStats, SummaryRow, View, ViewError, ViewLimits};

use crate::metrics::Metrics;
use crate::protocol::{
    to_frame, AlertRecord, AlertStatus, ConnectionCounts, DataFrame, Frame, HostSnapshot, Level,
    LogRecord, MetricsData, Stream, SummaryData, SUMMARY_COLUMNS,
};
use crate::telemetry::team_logs::ToTeamRecord;

/// Index of a team in the hub (config order).
pub type TeamId = usize;

/// Identifies one session (WebSocket or SSE connection) in the hub.
pub type SessionId = u64;

/// Errors of hub operations, mapped to protocol error codes by transports.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HubError {
    #[error("unknown team `{0}`")]
    UnknownTeam(String),
    #[error("subscription limit reached ({0} team streams per connection)")]
    TooManySubscriptions(usize),
    #[error("host snapshot: {0}")]
    BadSnapshot(String),
    #[error(
        "team `{team}` already has {max} hosts (limits.max_hosts_per_team); `{host}` is refused"
    )]
    TooManyHosts {
        team: String,
        host: String,
        max: usize,
    },
    /// Nothing was published: the broker is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// A batch the broker can never take whole (cluster mode).
    #[error("{0}")]
    TooLarge(String),
    /// A metrics view refused: a limit, a bad glob.
    #[error(transparent)]
    View(#[from] ViewError),
}

/// Sizes the hub is built with.
#[derive(Clone, Debug)]
pub struct HubSettings {
    pub history_logs: usize,
    pub history_alerts: usize,
    pub queue_len: usize,
    pub max_subscriptions: usize,
    /// Hosts not updated for this long drop out of metrics frames.
    pub host_stale_after: Duration,
    /// Threads a large metrics burst is split over (1: the ticker alone).
    pub fanout_threads: usize,
    /// Firing alerts kept per team; the oldest is evicted beyond it.
    pub max_firing_alerts: usize,
    /// Hosts a team holds at once; a new one beyond it is refused.
    pub max_hosts_per_team: usize,
    /// Bounds of named-hosts metrics views.
    pub views: ViewLimits,
}

#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

struct Shared {
    broker: Arc<dyn Broker>,
    /// Cluster mode: where log and alert frames get their seq.
    sequencer: OnceLock<Cluster>,
    topics: Vec<Topic>,
    index: HashMap<String, TeamId>,
    settings: HubSettings,
    next_session: AtomicU64,
    sessions: AtomicUsize,
    metrics: Arc<Metrics>,
}

/// The sequencer, and what a broker call's span says about it.
struct Cluster {
    sequencer: Arc<dyn Sequencer>,
    /// Longest wait for an answer.
    timeout: Duration,
    server: (String, u16),
}

struct Topic {
    name: String,
    state: Mutex<TeamState>,
}

/// Per-team numbers for `/api/v1/teams`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TeamSummary {
    pub name: String,
    pub subscribers: usize,
    pub hosts: Vec<String>,
}

impl Hub {
    /// A hub over the embedded, in-memory broker.
    pub fn new(teams: &[String], settings: HubSettings, metrics: Arc<Metrics>) -> Hub {
        let broker = MemoryBroker::new(teams.len(), settings.history_logs, settings.history_alerts);
        Hub::with_broker(teams, settings, metrics, Arc::new(broker))
    }

    /// A hub over `broker`, which holds `teams` in this order.
    pub fn with_broker(
        teams: &[String],
        settings: HubSettings,
        metrics: Arc<Metrics>,
        broker: Arc<dyn Broker>,
    ) -> Hub {
        let topics = teams
            .iter()
            .map(|name| Topic {
                name: name.clone(),
                state: Mutex::new(TeamState::default()),
            })
            .collect();
        let index = teams
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i))
            .collect();
        Hub {
            shared: Arc::new(Shared {
                broker,
                sequencer: OnceLock::new(),
                topics,
                index,
                settings,
                next_session: AtomicU64::new(1),
                sessions: AtomicUsize::new(0),
                metrics,
            }),
        }
    }

    /// The epoch a `welcome` announces: the first team's (every team's,
    /// with the in-memory broker; in cluster mode each team has its own,
    /// which its frames carry).
    pub fn epoch(&self) -> Arc<str> {
        self.shared.broker.epoch(0)
    }

    /// The epoch of `team`'s streams.
    pub fn epoch_of(&self, team: TeamId) -> Arc<str> {
        self.shared.broker.epoch(team)
    }

    /// The seq of the newest frame of `team`'s log or alert stream that
    /// this process holds.
    pub fn head(&self, team: TeamId, stream: Stream) -> u64 {
        self.shared.broker.head(team, stream)
    }

    /// Cluster mode: from now on `sequencer` gives log and alert frames
    /// their seqs (within `timeout`), and they reach subscribers through
    /// [`Hub::deliver`]. Set once, before serving.
    pub fn set_sequencer(
        &self,
        sequencer: Arc<dyn Sequencer>,
        timeout: Duration,
        server: (String, u16),
    ) {
        let _ = self.shared.sequencer.set(Cluster {
            sequencer,
            timeout,
            server,
        });
    }

    /// Whether the hub runs in cluster mode.
    pub fn clustered(&self) -> bool {
        self.shared.sequencer.get().is_some()
    }

    /// Cluster mode, before the first load: subscribes to logs or alerts
    /// are refused (the replica's epoch and history are not known yet).
    pub(crate) fn not_loaded(&self) -> bool {
        self.shared
            .sequencer
            .get()
            .is_some_and(|c| !c.sequencer.loaded_once())
    }

    /// Why publishing is not possible now (cluster mode, broker down).
    pub fn unavailable(&self) -> Option<String> {
        self.shared
            .sequencer
            .get()
            .and_then(|c| c.sequencer.unavailable())
    }

    pub fn team_id(&self, name: &str) -> Option<TeamId> {
        self.shared.index.get(name).copied()
    }

    pub fn team_name(&self, id: TeamId) -> &str {
        &self.shared.topics[id].name
    }

    pub fn team_names(&self) -> impl Iterator<Item = &str> {
        self.shared.topics.iter().map(|t| t.name.as_str())
    }

    /// This process's subscribers of each team, in team order.
    pub fn local_subscribers(&self) -> Vec<usize> {
        (0..self.shared.topics.len())
            .map(|t| self.lock(t).subscribers.len())
            .collect()
    }

    /// Open sessions (WebSocket and SSE).
    pub fn session_count(&self) -> usize {
        self.shared.sessions.load(Ordering::Relaxed)
    }

    fn lock(&self, team: TeamId) -> MutexGuard<'_, TeamState> {
        // Team state stays consistent across a panic in fan-out (each step
        // is a push to a queue), so a poisoned lock is still usable.
        self.shared.topics[team]
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a session; dropping the handle unsubscribes it everywhere.
    pub fn open_session(&self) -> SessionHandle {
        self.shared.sessions.fetch_add(1, Ordering::Relaxed);
        SessionHandle {
            hub: self.clone(),
            id: self.shared.next_session.fetch_add(1, Ordering::Relaxed),
            mailbox: Arc::new(Mailbox::new(self.shared.settings.queue_len)),
            subscriptions: Default::default(),
        }
    }

    /// Records the latest snapshot of a host of `team`; it is part of that
    /// team's next metrics frames until it goes stale. A team holds at
    /// most `max_hosts_per_team` hosts: every one is in every metrics
    /// frame of the team and has series of its own on /metrics.
    pub fn update_host(&self, team: TeamId, snapshot: &HostSnapshot) -> Result<(), HubError> {
        let raw = serde_json::value::to_raw_value(snapshot)
            .map_err(|e| HubError::BadSnapshot(e.to_string()))?;
        let name = &self.shared.topics[team].name;
        let shared = self
            .shared
            .sequencer
            .get()
            .map(|c| (c.sequencer.clone(), raw.clone()));
        let entry = HostEntry {
            raw,
            seen: Instant::now(),
            mounts: snapshot.disks.iter().map(|d| d.mount.clone()).collect(),
            ifaces: snapshot.network.iter().map(|n| n.iface.clone()).collect(),
            remote: false,
            stats: HostStats::of(snapshot),
        };
        let (mounts, ifaces) = (entry.mounts.clone(), entry.ifaces.clone());
        let max = self.shared.settings.max_hosts_per_team;
        let old = match self
            .shared
            .broker
            .put_host(team, &snapshot.host, entry, max)
        {
            Ok(old) => old,
            Err(BrokerError::TooManyHosts { max }) => {
                return Err(HubError::TooManyHosts {
                    team: name.clone(),
                    host: snapshot.host.clone(),
                    max,
                })
            }
            Err(e) => return Err(HubError::Unavailable(e.to_string())),
        };
        if let Some((sequencer, raw)) = shared {
            sequencer.share_host(team, &snapshot.host, &raw);
        }
        self.shared.metrics.observe_host(name, snapshot);
        // Mounts and interfaces that went away take their series with them
        // (containers churn veth interfaces).
        if let Some(old) = old {
            let gone_mounts: Vec<String> = old
                .mounts
                .into_iter()
                .filter(|m| !mounts.contains(m))
                .collect();
            let gone_ifaces: Vec<String> = old
                .ifaces
                .into_iter()
                .filter(|i| !ifaces.contains(i))
                .collect();
            if !gone_mounts.is_empty() || !gone_ifaces.is_empty() {
                self.shared
                    .metrics
                    .forget_parts(name, &snapshot.host, &gone_mounts, &gone_ifaces);
            }
        }
        Ok(())
    }

    /// Cluster mode: a host snapshot another process received, as of
    /// `seen`. Kept unless this process holds a newer one of the host; it
    /// has no series on this process's /metrics (its own process exports
    /// them).
    pub fn merge_remote_host(&self, team: TeamId, host: &str, raw: Box<RawValue>, seen: Instant) {
        let broker = &self.shared.broker;
        if broker.seen(team, host).is_some_and(|s| s >= seen) {
            return;
        }
        // Its summary's numbers, once per update (another process
        // serialized it from a `HostSnapshot`).
        let stats = serde_json::from_str::<HostSnapshot>(raw.get())
            .map(|s| HostStats::of(&s))
            .unwrap_or_default();
        let entry = HostEntry {
            raw,
            seen,
            mounts: Vec::new(),
            ifaces: Vec::new(),
            remote: true,
            stats,
        };
        let max = self.shared.settings.max_hosts_per_team;
        if let Ok(Some(old)) = broker.put_host(team, host, entry, max) {
            if !old.remote {
                // It reports to another process now, which exports it.
                let name = &self.shared.topics[team].name;
                self.shared
                    .metrics
                    .forget_host(name, host, &old.mounts, &old.ifaces);
            }
        }
    }

    /// Publishes the metrics frame of one team: every fresh host of the
    /// team and the connection counts. `ts` is the publish time (unix µs);
    /// the ticker calls this for each team at its slot of the tick.
    pub fn publish_metrics(&self, team: TeamId, ts: i64) {
        let span = publish_span(&self.shared.topics[team].name, Stream::Metrics);
        let _entered = span.enter();
        let (deliveries, targets, mut subscribers) = self.metrics_frame(team, ts, &span);
        // The fan-out, outside the lock: every subscriber of a view shares
        // its frame.
        let m = &self.shared.metrics;
        let fanout_started = Instant::now();
        let mut n = fanout::FanoutCount::default();
        for (delivery, group) in deliveries.iter().zip(targets.iter()) {
            n += fan_out_metrics(
                &group.mailboxes,
                delivery,
                &m.delivery_lag[Stream::Metrics as usize],
                self.shared.settings.fanout_threads,
            );
        }
        drop(targets);
        if n.refused > 0 {
            // Lagged on another team's stream, or closing: it gets
            // nothing more, so it no longer counts here either.
            let mut st = self.lock(team);
            st.subscribers_mut().retain(|s| s.mailbox.takes_data());
            subscribers = st.subscribers.len();
        }
        span.record("opswire.fanout_us", micros_since(fanout_started));
        span.record("opswire.fanout", n.fanout);
        span.record("opswire.conflated", n.conflated);
        span.record("opswire.written", n.written);
        let name = &self.shared.topics[team].name;
        m.active_connections
            .with_label_values(&[name])
            .set(subscribers as i64);
        m.frames_published.with_label_values(&["metrics"]).inc();
        if n.written > 0 {
            m.data_frames_out.inc_by(n.written);
            m.frames_direct.inc_by(n.written);
        }
        m.fanout
            .with_label_values(&["metrics"])
            .observe(n.fanout as f64);
        if n.conflated > 0 {
            m.frames_dropped
                .with_label_values(&["metrics", "conflated"])
                .inc_by(n.conflated);
        }
    }

    /// Under the team's lock: the team's next metrics frames (its fresh
    /// hosts; stale ones leave, with their series) — the full view's,
    /// always, and one per other view its subscribers take — the
    /// fan-out's snapshot of its subscribers grouped by view (one
    /// delivery per group, in the same order), and how many there are.
    fn metrics_frame(
        &self,
        team: TeamId,
        ts: i64,
        span: &tracing::Span,
    ) -> (Vec<Delivery>, Arc<Vec<Targets>>, usize) {
        let total = self.session_count();
        let name = &self.shared.topics[team].name;
        let trace_id = crate::telemetry::trace_id_of(span);
        let mut st = self.lock(team);
        let seq = st.metrics_seq + 1;
        let serialize = Instant::now();
        let targets = st.metrics_targets();
        let conn = ConnectionCounts {
            team: st.subscribers.len(),
            total,
        };
        let mut full = None;
        let mut views: Vec<(View, Frame)> = Vec::new();
        let stale_after = self.shared.settings.host_stale_after;
        // Before `with_hosts`: the broker's lock is held inside it.
        let epoch = self.epoch_of(team);
        let head = FrameHead {
            team: name,
            epoch: &epoch,
            seq,
            ts,
            trace_id: trace_id.as_deref(),
            connections: conn,
        };
        let gone = self
            .shared
            .broker
            .with_hosts(team, stale_after, &mut |hosts| {
                full = Some(head.frame(&View::Full, hosts));
                for g in targets.iter().filter(|g| g.view != View::Full) {
                    views.push((g.view.clone(), head.frame(&g.view, hosts)));
                }
            });
        let frame = full.unwrap_or_default();
        span.record("opswire.serialize_us", micros_since(serialize));
        span.record("opswire.seq", seq);
        span.record("messaging.message.body.size", frame.len() as u64);
        st.metrics_seq = seq;
        st.latest_metrics = Some(Stored {
            seq,
            ts,
            frame: frame.clone(),
        });
        st.view_frames = views
            .iter()
            .map(|(v, f)| {
                let stored = Stored {
                    seq,
                    ts,
                    frame: f.clone(),
                };
                (v.clone(), stored)
            })
            .collect();
        let subscribers = st.subscribers.len();
        drop(st);
        self.forget_gone(team, gone);
        let delivery = |frame: &Frame| Delivery {
            team,
            stream: Stream::Metrics,
            seq,
            ts,
            frame: frame.clone(),
            replay: false,
        };
        let deliveries = targets
            .iter()
            .map(|g| match views.iter().find(|(v, _)| *v == g.view) {
                Some((_, f)) => delivery(f),
                None => delivery(&frame),
            })
            .collect();
        (deliveries, targets, subscribers)
    }

    /// Under the team's lock (a subscribe's): the latest metrics frame of
    /// `view`, for its replay — the one this tick built, or, for a view
    /// nobody took at the last tick, built now from the team's hosts
    /// (with the last tick's seq, and kept for the next subscriber of
    /// it). None before the first tick.
    fn latest_view_frame(&self, team: TeamId, st: &mut TeamState, view: &View) -> Option<Stored> {
        if *view == View::Full {
            return st.latest_metrics.clone();
        }
        let seq = st.metrics_seq;
        if seq == 0 {
            return None;
        }
        if let Some((_, f)) = st.view_frames.iter().find(|(v, _)| v == view) {
            return Some(f.clone());
        }
        let ts = crate::time::now_micros();
        let epoch = self.epoch_of(team);
        let head = FrameHead {
            team: &self.shared.topics[team].name,
            epoch: &epoch,
            seq,
            ts,
            trace_id: None,
            connections: ConnectionCounts {
                team: st.subscribers.len(),
                total: self.session_count(),
            },
        };
        let mut frame = None;
        let stale_after = self.shared.settings.host_stale_after;
        let gone = self
            .shared
            .broker
            .with_hosts(team, stale_after, &mut |hosts| {
                frame = Some(head.frame(view, hosts))
            });
        self.forget_gone(team, gone);
        let stored = Stored {
            seq,
            ts,
            frame: frame.unwrap_or_default(),
        };
        st.view_frames.push((view.clone(), stored.clone()));
        Some(stored)
    }

    /// Hosts that went stale take their series with them (those this
    /// process exports).
    fn forget_gone(&self, team: TeamId, gone: Vec<(String, HostEntry)>) {
        let name = &self.shared.topics[team].name;
        for (host, h) in gone.into_iter().filter(|(_, h)| !h.remote) {
            self.shared
                .metrics
                .forget_host(name, &host, &h.mounts, &h.ifaces);
        }
    }

    /// Appends the next frame of a log or alert stream to the broker
    /// (serialized once, with the publish span's trace id), then queues it
    /// for the stream's subscribers; with the team's lock held, so frames
    /// reach every subscriber in seq order.
    fn append<T: serde::Serialize + ToTeamRecord>(
        &self,
        st: &mut TeamState,
        team: TeamId,
        record: Record<'_, T>,
        span: &tracing::Span,
    ) -> Result<Stored, HubError> {
        let trace_id = crate::telemetry::trace_id_of(span);
        let name = &self.shared.topics[team].name;
        let epoch = self.epoch_of(team);
        let mut serialize_us = 0;
        let mut encode = |seq: u64| {
            let started = Instant::now();
            let frame = to_frame(&DataFrame {
                kind: record.stream.frame_type(),
                team: name,
                epoch: &epoch,
                seq,
                ts: record.ts,
                trace_id: trace_id.as_deref(),
                data: record.data,
            });
            serialize_us = micros_since(started);
            frame
        };
        let (level, source) = record.log.unwrap_or((Level::Info, ""));
        let draft = Draft {
            ts: record.ts,
            level,
            source,
            encode: &mut encode,
        };
        let stored = self
            .shared
            .broker
            .append(team, record.stream, draft)
            .map_err(|e| HubError::Unavailable(e.to_string()))?;
        span.record("opswire.serialize_us", serialize_us);
        span.record("opswire.seq", stored.seq);
        if let Some(r) = record.data.team_record(name, record.ts) {
            r.traced(span).emit(stored.seq, &epoch);
        }
        let published = Published {
            team,
            stream: record.stream,
            stored: &stored,
            log: record.log,
        };
        let fanout = fan_out_event(st, &published, &self.shared.metrics);
        self.count_publish(team, record.stream, &fanout, stored.frame.len(), span);
        Ok(stored)
    }

    /// Publishes a log record to `team`; returns its seq.
    pub async fn publish_log(
        &self,
        team: TeamId,
        record: &LogRecord,
        ts: i64,
    ) -> Result<u64, HubError> {
        let seq = self.submit_log(team, record, ts).wait().await?;
        Ok(seq.unwrap_or_default())
    }

    /// Starts publishing a log record: done at once with the in-memory
    /// broker, when the broker answers in cluster mode. Publishes that
    /// one caller submits in order are appended in that order.
    pub fn submit_log(&self, team: TeamId, record: &LogRecord, ts: i64) -> Pending {
        if self.clustered() {
            return self.submit_logs(&[(team, record)], ts).remove(0);
        }
        let rec = Record {
            stream: Stream::Logs,
            ts,
            data: record,
            log: Some((record.level, &record.source)),
        };
        let span = publish_span(&self.shared.topics[team].name, Stream::Logs);
        let _entered = span.enter();
        let mut st = self.lock(team);
        Pending::Done(self.append(&mut st, team, rec, &span).map(|s| Some(s.seq)))
    }

    /// Starts publishing several log records (each to its team), in this
    /// order; in cluster mode all of them or none are queued for the
    /// broker, so a refused batch can be retried whole without doubles.
    pub fn submit_logs(&self, items: &[(TeamId, &LogRecord)], ts: i64) -> Vec<Pending> {
        let Some(cluster) = self.shared.sequencer.get() else {
            return items
                .iter()
                .map(|(team, r)| self.submit_log(*team, r, ts))
                .collect();
        };
        let prepared = items
            .iter()
            .map(|(team, r)| {
                let rec = Record {
                    stream: Stream::Logs,
                    ts,
                    data: *r,
                    log: Some((r.level, &r.source)),
                };
                self.prepare(cluster, *team, rec, None)
            })
            .collect();
        self.send(cluster, prepared)
    }

    /// Starts publishing several alert transitions (see
    /// [`Hub::submit_logs`]).
    pub fn submit_alerts(&self, items: &[(TeamId, &AlertRecord)], ts: i64) -> Vec<Pending> {
        let Some(cluster) = self.shared.sequencer.get() else {
            return items
                .iter()
                .map(|(team, r)| self.submit_alert(*team, r, ts))
                .collect();
        };
        let prepared = items
            .iter()
            .map(|(team, r)| {
                let change = AlertChange {
                    fingerprint: r.fingerprint.clone(),
                    firing: (r.status == AlertStatus::Firing)
                        .then(|| serde_json::to_string(r).unwrap_or_default()),
                    max_firing: self.shared.settings.max_firing_alerts,
                };
                let rec = Record {
                    stream: Stream::Alerts,
                    ts,
                    data: *r,
                    log: None,
                };
                self.prepare(cluster, *team, rec, Some(change))
            })
            .collect();
        self.send(cluster, prepared)
    }

    /// Publishes an alert transition to `team`. A repeat of the current
    /// state of a fingerprint (firing again with the same content, or
    /// resolved again) is dropped: Ok(None) then, else the new seq.
    /// Alerts whose `endsAt` has passed are resolved on the way.
    pub async fn publish_alert(
        &self,
        team: TeamId,
        record: &AlertRecord,
        ts: i64,
    ) -> Result<Option<u64>, HubError> {
        self.submit_alert(team, record, ts).wait().await
    }

    /// Starts publishing an alert transition (see [`Hub::submit_log`]).
    /// In cluster mode the broker de-duplicates it, against the state
    /// that every process shares.
    pub fn submit_alert(&self, team: TeamId, record: &AlertRecord, ts: i64) -> Pending {
        if self.clustered() {
            return self.submit_alerts(&[(team, record)], ts).remove(0);
        }
        let mut st = self.lock(team);
        let seq = self.publish_alert_locked(&mut st, team, record, ts);
        self.resolve_expired(&mut st, team, ts);
        Pending::Done(seq)
    }

    /// Resolves the alerts of `team` whose `endsAt` is at or before `now`
    /// (unix µs): a `resolved` frame each, as Alertmanager itself counts
    /// such an alert resolved. The ticker calls it every tick. In cluster
    /// mode every process does, and the broker keeps one resolve each.
    pub fn expire_alerts(&self, team: TeamId, now: i64) {
        if self.clustered() {
            self.expire_shared(team, now);
            return;
        }
        let mut st = self.lock(team);
        self.resolve_expired(&mut st, team, now);
    }

    fn resolve_expired(&self, st: &mut TeamState, team: TeamId, now: i64) {
        let expired = st.alerts.expired(now);
        if expired.is_empty() {
            return;
        }
        let name = &self.shared.topics[team].name;
        for mut record in expired {
            record.status = AlertStatus::Resolved;
            match self.publish_alert_locked(st, team, &record, now) {
                Ok(_) => self
                    .shared
                    .metrics
                    .alerts_expired
                    .with_label_values(&[name])
                    .inc(),
                Err(e) => {
                    // Still firing: tried again at the next tick.
                    st.alerts.check_again(now);
                    tracing::warn!(error = %e, team = %name, "an expired alert could not be resolved");
                }
            }
        }
    }

    fn publish_alert_locked(
        &self,
        st: &mut TeamState,
        team: TeamId,
        record: &AlertRecord,
        ts: i64,
    ) -> Result<Option<u64>, HubError> {
        // De-duplicated without a span: repeats are not publishes.
        if st.alerts.is_repeat(record) {
            return Ok(None);
        }
        let name = &self.shared.topics[team].name;
        let span = publish_span(name, Stream::Alerts);
        let _entered = span.enter();
        let rec = Record {
            stream: Stream::Alerts,
            ts,
            data: record,
            log: None,
        };
        let stored = self.append(st, team, rec, &span)?;
        let seq = stored.seq;
        let m = &self.shared.metrics;
        let evicted = st
            .alerts
            .record(record, stored, self.shared.settings.max_firing_alerts);
        if evicted > 0 {
            m.alerts_evicted.with_label_values(&[name]).inc_by(evicted);
        }
        m.alerts_firing
            .with_label_values(&[name])
            .set(st.alerts.len() as i64);
        Ok(Some(seq))
    }

    /// The alerts of `team` firing now, oldest first.
    pub fn firing_alerts(&self, team: TeamId) -> Vec<AlertRecord> {
        self.lock(team).alerts.records()
    }

    /// The firing alert of `team` with this fingerprint, if any.
    pub fn firing_alert(&self, team: TeamId, fingerprint: &str) -> Option<AlertRecord> {
        self.lock(team).alerts.get(fingerprint).cloned()
    }

    /// Teams with their live subscriber counts (across the cluster, in
    /// cluster mode) and fresh hosts.
    pub fn summary(&self, team: TeamId) -> TeamSummary {
        let remote = self
            .shared
            .sequencer
            .get()
            .map_or(0, |c| c.sequencer.remote_subscribers(team));
        let subscribers = self.lock(team).subscribers.len() + remote;
        TeamSummary {
            name: self.shared.topics[team].name.clone(),
            subscribers,
            hosts: self.shared.broker.host_names(team),
        }
    }

    fn count_publish(
        &self,
        team: TeamId,
        stream: Stream,
        fanout: &EventFanout,
        size: usize,
        span: &tracing::Span,
    ) {
        span.record("messaging.message.body.size", size as u64);
        span.record("opswire.fanout_us", fanout.micros);
        span.record("opswire.fanout", fanout.queued as u64);
        span.record("opswire.lagged", fanout.lagged);
        let m = &self.shared.metrics;
        m.frames_published
            .with_label_values(&[stream.as_str()])
            .inc();
        m.fanout
            .with_label_values(&[stream.as_str()])
            .observe(fanout.queued as f64);
        m.history_frames
            .with_label_values(&[&self.shared.topics[team].name, stream.as_str()])
            .set(self.shared.broker.held(team, stream) as i64);
    }
}

/// A log or alert record on its way into a stream.
struct Record<'a, T> {
    stream: Stream,
    /// Receive time, unix µs.
    ts: i64,
    data: &'a T,
    /// A log record's level and source (for filters).
    log: Option<(Level, &'a str)>,
}

/// The span of one publish: serialization, history and the fan-out. One
/// span, not a publish span with a fan-out child: spans are a per-publish
/// cost (recorded, queued, encoded, exported), and at thousands of log
/// publishes a second the second span cost more throughput than it told
/// (see docs/benchmarks.md). `opswire.serialize_us` and
/// `opswire.fanout_us` split its duration.
fn publish_span(team: &str, stream: Stream) -> tracing::Span {
    tracing::info_span!(
        "hub.publish",
        otel.name = match stream {
            Stream::Metrics => "publish metrics",
            Stream::Logs => "publish logs",
            Stream::Alerts => "publish alerts",
        },
        otel.kind = "producer",
        "messaging.system" = "opswire",
        "messaging.operation.type" = "publish",
        "messaging.destination.name" = %format_args!("{team}/{stream}"),
        "messaging.message.body.size" = tracing::field::Empty,
        "opswire.team" = team,
        "opswire.stream" = stream.as_str(),
        "opswire.seq" = tracing::field::Empty,
        "opswire.serialize_us" = tracing::field::Empty,
        "opswire.fanout_us" = tracing::field::Empty,
        "opswire.fanout" = tracing::field::Empty,
        "opswire.conflated" = tracing::field::Empty,
        "opswire.lagged" = tracing::field::Empty,
        "opswire.written" = tracing::field::Empty,
    )
}

/// What every view's frame of one metrics tick has in common.
struct FrameHead<'a> {
    team: &'a str,
    epoch: &'a str,
    seq: u64,
    ts: i64,
    trace_id: Option<&'a str>,
    connections: ConnectionCounts,
}

impl FrameHead<'_> {
    /// Serializes `view`'s frame of `hosts` (name-ordered): the one
    /// serialization every subscriber of the view shares.
    fn frame(&self, view: &View, hosts: &[broker::NamedHost<'_>]) -> Frame {
        match view {
            View::Full => {
                let raws: Vec<&RawValue> = hosts.iter().map(|(_, h)| &*h.raw).collect();
                self.data_frame(&MetricsData {
                    view: None,
                    hosts: &raws,
                    connections: self.connections,
                })
            }
            View::Hosts(set) => {
                let raws: Vec<&RawValue> = hosts
                    .iter()
                    .filter(|(name, _)| set.matches(name))
                    .map(|(_, h)| &*h.raw)
                    .collect();
                self.data_frame(&MetricsData {
                    view: Some("hosts"),
                    hosts: &raws,
                    connections: self.connections,
                })
            }
            View::Summary => {
                let rows: Vec<SummaryRow<'_>> = hosts
                    .iter()
                    .map(|(name, h)| h.stats.summary(name, self.ts))
                    .collect();
                self.data_frame(&SummaryData {
                    view: "summary",
                    columns: &SUMMARY_COLUMNS,
                    hosts: &rows,
                    connections: self.connections,
                })
            }
        }
    }
}

impl FrameHead<'_> {
    fn data_frame<T: serde::Serialize>(&self, data: &T) -> Frame {
        to_frame(&DataFrame {
            kind: Stream::Metrics.frame_type(),
            team: self.team,
            epoch: self.epoch,
            seq: self.seq,
            ts: self.ts,
            trace_id: self.trace_id,
            data,
        })
    }
}

/// Whole microseconds since `t`, for span attributes.
fn micros_since(t: Instant) -> u64 {
    t.elapsed().as_micros() as u64
}

#[cfg(test)]
mod tests;

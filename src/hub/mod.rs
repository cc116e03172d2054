//! The hub: one topic per team, each with three streams (metrics, logs,
//! alerts), their `seq`/`epoch`, the resume history, the currently firing
//! alerts, and the subscribers to fan out to.
//!
//! The hub knows nothing about WebSocket or SSE. A transport opens a
//! [`SessionHandle`], subscribes it to streams, and drains its
//! [`Mailbox`]. Each frame is serialized once, under the team's lock, and
//! the same [`Frame`] (a reference-counted string) is queued for every
//! subscriber. Fan-out never waits on a subscriber: a full queue makes that
//! subscriber lagged (logs, alerts) or replaces its older frame (metrics).
//! The lock is a std `Mutex`, never held across an `.await`.
//!
//! Metrics frames fan out from the ticker thread **outside** the team's
//! lock: under it the hub only builds the frame and takes the team's
//! subscriber snapshot (one reference-counted list, rebuilt only when the
//! membership changed), so a burst to thousands of sockets never holds up
//! a subscribe, an agent's update or a log publish of that team. Each
//! subscriber's mailbox then writes the frame straight to its socket when
//! nothing is ahead of it (see [`mailbox`]). Log and alert frames, which
//! may come many per second from a publisher's task, are queued under the
//! lock, in seq order, and written by each connection's own writer in
//! batches.

mod mailbox;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::value::RawValue;

pub use mailbox::{Control, Delivery, Lagged, Mailbox, Offer, Outgoing, Push, Sent, Take, Wire};

use crate::metrics::Metrics;
use crate::protocol::{
    to_frame, AlertRecord, AlertStatus, ConnectionCounts, DataFrame, Frame, HostSnapshot, Level,
    LogFilter, LogRecord, MetricsData, ResumePoint, Stream,
};
use crate::time::now_micros;

/// Index of a team in the hub (config order).
pub type TeamId = usize;

/// Identifies one session (WebSocket or SSE connection) in the hub.
pub type SessionId = u64;

/// Resolved alerts remembered so a repeated `resolved` is not sent twice.
const RESOLVED_MEMORY: usize = 4096;

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
}

/// Subscribers a fan-out thread takes at least: below that, starting a
/// thread costs more than it saves.
const FANOUT_CHUNK: usize = 1024;

/// What one metrics fan-out did.
#[derive(Default)]
struct FanoutCount {
    /// Subscribers that got the frame (written or queued).
    fanout: u64,
    /// Written straight to the socket.
    written: u64,
    /// Queued in place of an undelivered older frame.
    conflated: u64,
    /// Lagged or closing: to be dropped from the team.
    refused: u64,
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
fn fan_out_metrics(
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

#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

struct Shared {
    epoch: String,
    topics: Vec<Topic>,
    index: HashMap<String, TeamId>,
    settings: HubSettings,
    next_session: AtomicU64,
    sessions: AtomicUsize,
    metrics: Arc<Metrics>,
}

struct Topic {
    name: String,
    state: Mutex<TeamState>,
}

struct HistoryEntry {
    seq: u64,
    ts: i64,
    frame: Frame,
    /// Log level and source, for filtered replay (logs only).
    level: Level,
    source: Box<str>,
}

struct History {
    seq: u64,
    cap: usize,
    ring: VecDeque<HistoryEntry>,
}

impl History {
    fn new(cap: usize) -> History {
        History {
            seq: 0,
            cap,
            ring: VecDeque::with_capacity(cap.min(1024)),
        }
    }

    fn push(&mut self, entry: HistoryEntry) {
        if self.ring.len() == self.cap {
            self.ring.pop_front();
        }
        self.ring.push_back(entry);
    }

    /// Frames after `after`, or None when the history no longer holds them.
    fn since(&self, after: u64, filter: Option<&LogFilter>) -> Option<Vec<(u64, i64, Frame)>> {
        if after > self.seq {
            return None;
        }
        let oldest = self.ring.front().map_or(self.seq + 1, |e| e.seq);
        if after + 1 < oldest {
            return None;
        }
        Some(
            self.ring
                .iter()
                .filter(|e| e.seq > after)
                .filter(|e| filter.is_none_or(|f| f.matches(e.level, &e.source)))
                .map(|e| (e.seq, e.ts, e.frame.clone()))
                .collect(),
        )
    }
}

struct HostEntry {
    raw: Box<RawValue>,
    seen: Instant,
    /// Label values of its gauges, to remove them when the host goes stale.
    mounts: Vec<String>,
    ifaces: Vec<String>,
}

struct Subscriber {
    session: SessionId,
    mailbox: Arc<Mailbox>,
    streams: u8,
    log_filter: Option<LogFilter>,
    /// Last seq queued per stream (index = `Stream as usize`), for `lagged`.
    last_seq: [u64; 3],
}

impl Subscriber {
    fn has(&self, s: Stream) -> bool {
        self.streams & s.bit() != 0
    }
}

struct Firing {
    seq: u64,
    ts: i64,
    frame: Frame,
    record: AlertRecord,
    /// Its `ends_at` (unix µs): it stops firing then.
    ends_at: Option<i64>,
}

/// The alerts of a team firing now: at most `max` of them, oldest
/// evicted first; an alert whose `endsAt` passes is resolved.
#[derive(Default)]
struct FiringSet {
    by_fingerprint: HashMap<String, Firing>,
    /// Fingerprints by the seq of their frame: oldest first.
    order: BTreeMap<u64, String>,
    /// The earliest `ends_at` of the set, if any has one.
    next_expiry: Option<i64>,
}

impl FiringSet {
    fn get(&self, fp: &str) -> Option<&Firing> {
        self.by_fingerprint.get(fp)
    }

    fn len(&self) -> usize {
        self.by_fingerprint.len()
    }

    /// Adds or replaces `f`; returns how many older ones it evicted.
    fn insert(&mut self, fp: String, f: Firing, max: usize) -> u64 {
        if let Some(end) = f.ends_at {
            self.next_expiry = Some(self.next_expiry.map_or(end, |n| n.min(end)));
        }
        self.order.insert(f.seq, fp.clone());
        if let Some(old) = self.by_fingerprint.insert(fp, f) {
            self.order.remove(&old.seq);
        }
        let mut evicted = 0;
        while self.by_fingerprint.len() > max {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.by_fingerprint.remove(&oldest);
            evicted += 1;
        }
        evicted
    }

    fn remove(&mut self, fp: &str) -> bool {
        match self.by_fingerprint.remove(fp) {
            Some(old) => {
                self.order.remove(&old.seq);
                true
            }
            None => false,
        }
    }

    /// The records whose `ends_at` is at or before `now`, oldest first.
    fn expired(&mut self, now: i64) -> Vec<AlertRecord> {
        if self.next_expiry.is_none_or(|n| n > now) {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut next = None;
        for fp in self.order.values() {
            let f = &self.by_fingerprint[fp];
            match f.ends_at {
                Some(end) if end <= now => out.push(f.record.clone()),
                Some(end) => next = Some(next.map_or(end, |n: i64| n.min(end))),
                None => {}
            }
        }
        self.next_expiry = next;
        out
    }

    /// The frames of every firing alert, in seq order.
    fn frames(&self) -> impl Iterator<Item = (u64, i64, Frame)> + '_ {
        self.order.values().map(|fp| {
            let f = &self.by_fingerprint[fp];
            (f.seq, f.ts, f.frame.clone())
        })
    }
}

struct TeamState {
    metrics_seq: u64,
    latest_metrics: Option<(u64, i64, Frame)>,
    hosts: BTreeMap<String, HostEntry>,
    logs: History,
    alerts: History,
    /// Currently firing alerts.
    firing: FiringSet,
    resolved: VecDeque<String>,
    resolved_set: HashSet<String>,
    subscribers: Vec<Subscriber>,
    /// The mailboxes taking this team's metrics, as of the last publish:
    /// what the fan-out works from once the lock is released.
    metrics_targets: Arc<Vec<Arc<Mailbox>>>,
    /// `subscribers` changed since `metrics_targets` was taken.
    targets_stale: bool,
}

impl TeamState {
    /// The frames of the alerts firing now, oldest first.
    fn alerts_firing(&self) -> Vec<(u64, i64, Frame)> {
        self.firing.frames().collect()
    }

    /// The subscribers, to change: the metrics fan-out's snapshot is
    /// rebuilt at the next publish.
    fn subscribers_mut(&mut self) -> &mut Vec<Subscriber> {
        self.targets_stale = true;
        &mut self.subscribers
    }

    /// The metrics fan-out's snapshot, rebuilt if the membership changed.
    fn metrics_targets(&mut self) -> Arc<Vec<Arc<Mailbox>>> {
        if self.targets_stale {
            self.metrics_targets = Arc::new(
                self.subscribers
                    .iter()
                    .filter(|s| s.has(Stream::Metrics))
                    .map(|s| s.mailbox.clone())
                    .collect(),
            );
            self.targets_stale = false;
        }
        self.metrics_targets.clone()
    }
}

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
}

/// Per-team numbers for `/api/v1/teams`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TeamSummary {
    pub name: String,
    pub subscribers: usize,
    pub hosts: Vec<String>,
}

impl Hub {
    pub fn new(teams: &[String], settings: HubSettings, metrics: Arc<Metrics>) -> Hub {
        let topics: Vec<Topic> = teams
            .iter()
            .map(|name| Topic {
                name: name.clone(),
                state: Mutex::new(TeamState {
                    metrics_seq: 0,
                    latest_metrics: None,
                    hosts: BTreeMap::new(),
                    logs: History::new(settings.history_logs),
                    alerts: History::new(settings.history_alerts),
                    firing: FiringSet::default(),
                    resolved: VecDeque::new(),
                    resolved_set: HashSet::new(),
                    subscribers: Vec::new(),
                    metrics_targets: Arc::new(Vec::new()),
                    targets_stale: false,
                }),
            })
            .collect();
        let index = teams
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i))
            .collect();
        Hub {
            shared: Arc::new(Shared {
                epoch: new_epoch(),
                topics,
                index,
                settings,
                next_session: AtomicU64::new(1),
                sessions: AtomicUsize::new(0),
                metrics,
            }),
        }
    }

    /// The epoch of every stream of this hub (it changes on restart).
    pub fn epoch(&self) -> &str {
        &self.shared.epoch
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
            subscriptions: BTreeMap::new(),
        }
    }

    /// Records the latest snapshot of a host of `team`; it is part of that
    /// team's next metrics frames until it goes stale.
    pub fn update_host(&self, team: TeamId, snapshot: &HostSnapshot) -> Result<(), HubError> {
        let raw = serde_json::value::to_raw_value(snapshot)
            .map_err(|e| HubError::BadSnapshot(e.to_string()))?;
        let name = &self.shared.topics[team].name;
        let mounts: Vec<String> = snapshot.disks.iter().map(|d| d.mount.clone()).collect();
        let ifaces: Vec<String> = snapshot.network.iter().map(|n| n.iface.clone()).collect();
        let mut st = self.lock(team);
        // Every host is part of every metrics frame of its team and has
        // series of its own on /metrics: how many there are is bounded.
        let max = self.shared.settings.max_hosts_per_team;
        if st.hosts.len() >= max && !st.hosts.contains_key(&snapshot.host) {
            return Err(HubError::TooManyHosts {
                team: name.clone(),
                host: snapshot.host.clone(),
                max,
            });
        }
        self.shared.metrics.observe_host(name, snapshot);
        let old = st.hosts.insert(
            snapshot.host.clone(),
            HostEntry {
                raw,
                seen: Instant::now(),
                mounts: mounts.clone(),
                ifaces: ifaces.clone(),
            },
        );
        drop(st);
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
                self.shared.metrics.forget_parts(
                    &self.shared.topics[team].name,
                    &snapshot.host,
                    &gone_mounts,
                    &gone_ifaces,
                );
            }
        }
        Ok(())
    }

    /// Publishes the metrics frame of one team: every fresh host of the
    /// team and the connection counts. `ts` is the publish time (unix µs);
    /// the ticker calls this for each team at its slot of the tick.
    pub fn publish_metrics(&self, team: TeamId, ts: i64) {
        let total = self.session_count();
        let stale = self.shared.settings.host_stale_after;
        let name = &self.shared.topics[team].name;
        let m = &self.shared.metrics;
        let span = publish_span(name, Stream::Metrics);
        let _entered = span.enter();
        let trace_id = crate::telemetry::trace_id_of(&span);
        let mut st = self.lock(team);
        let now = Instant::now();
        st.hosts.retain(|host, h| {
            let fresh = now.duration_since(h.seen) <= stale;
            if !fresh {
                m.forget_host(name, host, &h.mounts, &h.ifaces);
            }
            fresh
        });
        let hosts: Vec<&RawValue> = st.hosts.values().map(|h| &*h.raw).collect();
        let seq = st.metrics_seq + 1;
        let serialize = Instant::now();
        let frame = to_frame(&DataFrame {
            kind: Stream::Metrics.frame_type(),
            team: name,
            epoch: &self.shared.epoch,
            seq,
            ts,
            trace_id: trace_id.as_deref(),
            data: &MetricsData {
                hosts: &hosts,
                connections: ConnectionCounts {
                    team: st.subscribers.len(),
                    total,
                },
            },
        });
        drop(hosts);
        let serialize_us = micros_since(serialize);
        st.metrics_seq = seq;
        st.latest_metrics = Some((seq, ts, frame.clone()));
        let targets = st.metrics_targets();
        let mut subscribers = st.subscribers.len();
        drop(st);
        // The fan-out, outside the lock: every subscriber shares `frame`.
        let fanout_started = Instant::now();
        span.record("messaging.message.body.size", frame.len() as u64);
        let delivery = Delivery {
            team,
            stream: Stream::Metrics,
            seq,
            ts,
            frame,
            replay: false,
        };
        let n = fan_out_metrics(
            &targets,
            &delivery,
            &m.delivery_lag[Stream::Metrics as usize],
            self.shared.settings.fanout_threads,
        );
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
        span.record("opswire.seq", seq);
        span.record("opswire.serialize_us", serialize_us);
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

    /// Serializes the next frame of a log or alert stream (once, with the
    /// publish span's trace id) and appends it to the stream's history.
    #[allow(clippy::too_many_arguments)]
    fn append<T: serde::Serialize>(
        &self,
        st: &mut TeamState,
        team: TeamId,
        stream: Stream,
        ts: i64,
        data: &T,
        span: &tracing::Span,
        level: Level,
        source: &str,
    ) -> (u64, Frame) {
        let trace_id = crate::telemetry::trace_id_of(span);
        let history = if stream == Stream::Logs {
            &mut st.logs
        } else {
            &mut st.alerts
        };
        let seq = history.seq + 1;
        let serialize = Instant::now();
        let frame = to_frame(&DataFrame {
            kind: stream.frame_type(),
            team: &self.shared.topics[team].name,
            epoch: &self.shared.epoch,
            seq,
            ts,
            trace_id: trace_id.as_deref(),
            data,
        });
        span.record("opswire.serialize_us", micros_since(serialize));
        span.record("opswire.seq", seq);
        history.seq = seq;
        history.push(HistoryEntry {
            seq,
            ts,
            frame: frame.clone(),
            level,
            source: source.into(),
        });
        (seq, frame)
    }

    /// Publishes a log record to `team`; returns its seq.
    pub fn publish_log(&self, team: TeamId, record: &LogRecord, ts: i64) -> u64 {
        let name = &self.shared.topics[team].name;
        let span = publish_span(name, Stream::Logs);
        let _entered = span.enter();
        let mut st = self.lock(team);
        let (seq, frame) = self.append(
            &mut st,
            team,
            Stream::Logs,
            ts,
            record,
            &span,
            record.level,
            &record.source,
        );
        let held = st.logs.ring.len();
        let fanout = self.fan_out_event(
            &mut st,
            team,
            Stream::Logs,
            seq,
            ts,
            &frame,
            Some(record),
            &span,
        );
        drop(st);
        self.count_publish(team, Stream::Logs, fanout, held);
        seq
    }

    /// Publishes an alert transition to `team`. A repeat of the current
    /// state of a fingerprint (firing again with the same content, or
    /// resolved again) is dropped: returns None then, else the new seq.
    /// Alerts whose `endsAt` has passed are resolved on the way.
    pub fn publish_alert(&self, team: TeamId, record: &AlertRecord, ts: i64) -> Option<u64> {
        let mut st = self.lock(team);
        let seq = self.publish_alert_locked(&mut st, team, record, ts);
        self.resolve_expired(&mut st, team, ts);
        seq
    }

    /// Resolves the alerts of `team` whose `endsAt` is at or before `now`
    /// (unix µs): a `resolved` frame each, as Alertmanager itself counts
    /// such an alert resolved. The ticker calls it every tick.
    pub fn expire_alerts(&self, team: TeamId, now: i64) {
        let mut st = self.lock(team);
        self.resolve_expired(&mut st, team, now);
    }

    fn resolve_expired(&self, st: &mut TeamState, team: TeamId, now: i64) {
        let expired = st.firing.expired(now);
        if expired.is_empty() {
            return;
        }
        let name = &self.shared.topics[team].name;
        self.shared
            .metrics
            .alerts_expired
            .with_label_values(&[name])
            .inc_by(expired.len() as u64);
        for mut record in expired {
            record.status = AlertStatus::Resolved;
            self.publish_alert_locked(st, team, &record, now);
        }
    }

    fn publish_alert_locked(
        &self,
        st: &mut TeamState,
        team: TeamId,
        record: &AlertRecord,
        ts: i64,
    ) -> Option<u64> {
        let name = &self.shared.topics[team].name;
        let fp = &record.fingerprint;
        match record.status {
            AlertStatus::Firing => {
                if st.firing.get(fp).is_some_and(|f| &f.record == record) {
                    return None;
                }
            }
            AlertStatus::Resolved => {
                if st.firing.get(fp).is_none() && st.resolved_set.contains(fp) {
                    return None;
                }
            }
        }
        // Deduplicated above without a span: repeats are not publishes.
        let span = publish_span(name, Stream::Alerts);
        let _entered = span.enter();
        let (seq, frame) =
            self.append(st, team, Stream::Alerts, ts, record, &span, Level::Info, "");
        let m = &self.shared.metrics;
        match record.status {
            AlertStatus::Firing => {
                if st.resolved_set.remove(fp) {
                    st.resolved.retain(|f| f != fp);
                }
                let firing = Firing {
                    seq,
                    ts,
                    frame: frame.clone(),
                    record: record.clone(),
                    ends_at: record
                        .ends_at
                        .as_deref()
                        .and_then(crate::time::parse_rfc3339_micros),
                };
                let max = self.shared.settings.max_firing_alerts;
                let evicted = st.firing.insert(fp.clone(), firing, max);
                if evicted > 0 {
                    m.alerts_evicted.with_label_values(&[name]).inc_by(evicted);
                }
            }
            AlertStatus::Resolved => {
                st.firing.remove(fp);
                if st.resolved_set.insert(fp.clone()) {
                    st.resolved.push_back(fp.clone());
                    if st.resolved.len() > RESOLVED_MEMORY {
                        if let Some(old) = st.resolved.pop_front() {
                            st.resolved_set.remove(&old);
                        }
                    }
                }
            }
        }
        m.alerts_firing
            .with_label_values(&[name])
            .set(st.firing.len() as i64);
        let held = st.alerts.ring.len();
        let fanout = self.fan_out_event(st, team, Stream::Alerts, seq, ts, &frame, None, &span);
        self.count_publish(team, Stream::Alerts, fanout, held);
        Some(seq)
    }

    /// The alerts of `team` firing now, oldest first.
    pub fn firing_alerts(&self, team: TeamId) -> Vec<AlertRecord> {
        let st = self.lock(team);
        st.firing
            .order
            .values()
            .map(|fp| st.firing.by_fingerprint[fp].record.clone())
            .collect()
    }

    /// The firing alert of `team` with this fingerprint, if any.
    pub fn firing_alert(&self, team: TeamId, fingerprint: &str) -> Option<AlertRecord> {
        self.lock(team)
            .firing
            .get(fingerprint)
            .map(|f| f.record.clone())
    }

    /// Teams with their live subscriber counts and fresh hosts.
    pub fn summary(&self, team: TeamId) -> TeamSummary {
        let st = self.lock(team);
        TeamSummary {
            name: self.shared.topics[team].name.clone(),
            subscribers: st.subscribers.len(),
            hosts: st.hosts.keys().cloned().collect(),
        }
    }

    fn count_publish(&self, team: TeamId, stream: Stream, fanout: usize, held: usize) {
        let m = &self.shared.metrics;
        m.frames_published
            .with_label_values(&[stream.as_str()])
            .inc();
        m.fanout
            .with_label_values(&[stream.as_str()])
            .observe(fanout as f64);
        m.history_frames
            .with_label_values(&[&self.shared.topics[team].name, stream.as_str()])
            .set(held as i64);
    }

    /// Queues a log or alert frame for every subscriber of the stream. A
    /// subscriber whose queue is full is marked lagged and removed.
    #[allow(clippy::too_many_arguments)]
    fn fan_out_event(
        &self,
        st: &mut TeamState,
        team: TeamId,
        stream: Stream,
        seq: u64,
        ts: i64,
        frame: &Frame,
        log: Option<&LogRecord>,
        span: &tracing::Span,
    ) -> usize {
        let started = Instant::now();
        let idx = stream as usize;
        let mut lagged = 0u64;
        let mut fanout = 0;
        let mut i = 0;
        while i < st.subscribers.len() {
            let sub = &mut st.subscribers[i];
            let wanted = sub.has(stream)
                && match (log, &sub.log_filter) {
                    (Some(rec), Some(f)) => f.matches(rec.level, &rec.source),
                    _ => true,
                };
            if !wanted {
                i += 1;
                continue;
            }
            let pushed = sub.mailbox.push_event(Delivery {
                team,
                stream,
                seq,
                ts,
                frame: frame.clone(),
                replay: false,
            });
            match pushed {
                Push::Queued => {
                    sub.last_seq[idx] = seq;
                    fanout += 1;
                    i += 1;
                }
                Push::Full => {
                    sub.mailbox.set_lagged(Lagged {
                        team,
                        stream,
                        last_seq: sub.last_seq[idx],
                    });
                    let m = &self.shared.metrics;
                    m.frames_dropped
                        .with_label_values(&[stream.as_str(), "lagged"])
                        .inc();
                    m.slow_consumer_closes.inc();
                    lagged += 1;
                    st.subscribers_mut().swap_remove(i);
                }
                Push::Closed => {
                    st.subscribers_mut().swap_remove(i);
                }
            }
        }
        span.record("messaging.message.body.size", frame.len() as u64);
        span.record("opswire.fanout_us", micros_since(started));
        span.record("opswire.fanout", fanout as u64);
        span.record("opswire.lagged", lagged);
        fanout
    }
}

/// A session's membership in the hub: its mailbox and subscriptions.
/// Dropping it unsubscribes everything.
pub struct SessionHandle {
    hub: Hub,
    id: SessionId,
    mailbox: Arc<Mailbox>,
    /// Subscribed streams per team (bit set of `Stream::bit`).
    subscriptions: BTreeMap<TeamId, u8>,
}

impl SessionHandle {
    pub fn id(&self) -> SessionId {
        self.id
    }

    pub fn mailbox(&self) -> &Arc<Mailbox> {
        &self.mailbox
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
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
    pub fn subscribe(
        &mut self,
        team: TeamId,
        streams: &[Stream],
        resume: &BTreeMap<Stream, ResumePoint>,
        log_filter: Option<LogFilter>,
    ) -> Result<Subscribed, HubError> {
        let current = self.subscriptions.get(&team).copied().unwrap_or(0);
        let mut wanted = current;
        for s in streams {
            wanted |= s.bit();
        }
        let added = (wanted & !current).count_ones() as usize;
        let max = self.hub.shared.settings.max_subscriptions;
        if self.subscription_count() + added > max {
            return Err(HubError::TooManySubscriptions(max));
        }
        let epoch = self.hub.shared.epoch.clone();
        let mut out = Subscribed::default();
        let mut st = self.hub.lock(team);
        let pos = st.subscribers.iter().position(|s| s.session == self.id);
        let filter_for_replay = log_filter
            .clone()
            .or_else(|| pos.and_then(|p| st.subscribers[p].log_filter.clone()));
        let mut last_seq = pos.map_or([0; 3], |p| st.subscribers[p].last_seq);
        let mailbox = &self.mailbox;
        for &stream in streams {
            // Already subscribed: its frames are flowing; replaying again
            // would double them.
            if current & stream.bit() != 0 {
                continue;
            }
            let delivery = |(seq, ts, frame): (u64, i64, Frame)| Delivery {
                team,
                stream,
                seq,
                ts,
                frame,
                replay: true,
            };
            let hist = match stream {
                Stream::Metrics => {
                    if let Some(latest) = st.latest_metrics.clone() {
                        mailbox.replay_metrics(delivery(latest));
                    }
                    continue;
                }
                Stream::Logs => &st.logs,
                Stream::Alerts => &st.alerts,
            };
            let filter = filter_for_replay
                .as_ref()
                .filter(|_| stream == Stream::Logs);
            out.positions.insert(stream, hist.seq);
            let replayed = resume.get(&stream).map(|r| {
                if r.epoch == epoch {
                    hist.since(r.seq, filter)
                } else {
                    None
                }
            });
            // The seq the subscriber is known to have (for `lagged`).
            let mut known = hist.seq;
            match replayed {
                Some(Some(frames)) => {
                    out.recovered.insert(stream, true);
                    known = resume[&stream].seq;
                    for f in frames {
                        let seq = f.0;
                        if mailbox.push_replay(delivery(f), false) != Push::Queued {
                            mailbox.set_lagged(Lagged {
                                team,
                                stream,
                                last_seq: known,
                            });
                            break;
                        }
                        known = seq;
                        out.replayed.insert(stream, seq);
                    }
                    if mailbox.takes_data() {
                        known = hist.seq;
                    }
                }
                Some(None) | None => {
                    if replayed.is_some() {
                        out.recovered.insert(stream, false);
                    }
                    if stream == Stream::Alerts {
                        for f in st.alerts_firing() {
                            let seq = f.0;
                            if mailbox.push_replay(delivery(f), true) == Push::Queued {
                                out.replayed.insert(stream, seq);
                            }
                        }
                    }
                }
            }
            last_seq[stream as usize] = known;
        }
        if wanted & Stream::Metrics.bit() != 0 && current & Stream::Metrics.bit() == 0 {
            // Live from the frame after the replayed one.
            self.mailbox.accept_metrics(team, st.metrics_seq + 1);
        }
        match pos {
            Some(p) => {
                let sub = &mut st.subscribers_mut()[p];
                sub.streams = wanted;
                if log_filter.is_some() {
                    sub.log_filter = log_filter;
                }
                sub.last_seq = last_seq;
            }
            None => st.subscribers_mut().push(Subscriber {
                session: self.id,
                mailbox: self.mailbox.clone(),
                streams: wanted,
                log_filter,
                last_seq,
            }),
        }
        drop(st);
        self.subscriptions.insert(team, wanted);
        Ok(out)
    }

    /// Unsubscribes from `streams` of `team`; returns the streams that
    /// were subscribed.
    pub fn unsubscribe(&mut self, team: TeamId, streams: &[Stream]) -> Vec<Stream> {
        let Some(current) = self.subscriptions.get(&team).copied() else {
            return Vec::new();
        };
        let mut remaining = current;
        for s in streams {
            remaining &= !s.bit();
        }
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

/// Whole microseconds since `t`, for span attributes.
fn micros_since(t: Instant) -> u64 {
    t.elapsed().as_micros() as u64
}

/// A short random epoch: changes with every hub (every process start).
fn new_epoch() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..8)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(queue: usize) -> Hub {
        Hub::new(
            &["a".into(), "b".into()],
            HubSettings {
                history_logs: 5,
                history_alerts: 5,
                queue_len: queue,
                max_subscriptions: 8,
                host_stale_after: Duration::from_secs(5),
                fanout_threads: 1,
                max_firing_alerts: 3,
                max_hosts_per_team: 2,
            },
            Arc::new(Metrics::new()),
        )
    }

    fn log(msg: &str) -> LogRecord {
        LogRecord {
            level: Level::Info,
            source: "src".into(),
            host: "h".into(),
            message: msg.into(),
            fields: Default::default(),
            trace_id: None,
            time: None,
        }
    }

    fn seqs(out: &[Delivery]) -> Vec<u64> {
        out.iter().map(|d| d.seq).collect()
    }

    /// What the session's mailbox holds (its replay, then live frames).
    fn queued(s: &SessionHandle) -> Vec<Delivery> {
        let mut out = Vec::new();
        s.mailbox().drain(&mut out);
        out
    }

    #[test]
    fn resume_replays_exactly_the_missed_frames() {
        let h = hub(100);
        for i in 0..4 {
            h.publish_log(0, &log(&i.to_string()), 1);
        }
        let mut s = h.open_session();
        let resume = BTreeMap::from([(
            Stream::Logs,
            ResumePoint {
                epoch: h.epoch().into(),
                seq: 2,
            },
        )]);
        let r = s.subscribe(0, &[Stream::Logs], &resume, None).unwrap();
        assert!(r.recovered[&Stream::Logs]);
        assert_eq!(seqs(&queued(&s)), vec![3, 4]);
        // Beyond the history (5 kept): not recoverable.
        for i in 0..10 {
            h.publish_log(0, &log(&i.to_string()), 1);
        }
        let mut s2 = h.open_session();
        let r = s2.subscribe(0, &[Stream::Logs], &resume, None).unwrap();
        assert!(!r.recovered[&Stream::Logs]);
        assert!(queued(&s2).is_empty());
        // A stale epoch: not recoverable.
        let stale = BTreeMap::from([(
            Stream::Logs,
            ResumePoint {
                epoch: "old".into(),
                seq: 13,
            },
        )]);
        let mut s3 = h.open_session();
        assert!(
            !s3.subscribe(0, &[Stream::Logs], &stale, None)
                .unwrap()
                .recovered[&Stream::Logs]
        );
    }

    #[test]
    fn a_large_burst_splits_over_threads_and_reaches_everyone_once() {
        let boxes: Vec<Arc<Mailbox>> = (0..2 * FANOUT_CHUNK + 7)
            .map(|i| {
                let m = Arc::new(Mailbox::new(4));
                // Every third one has left the team: not offered.
                if i % 3 != 0 {
                    m.accept_metrics(0, 1);
                }
                m
            })
            .collect();
        let d = Delivery {
            team: 0,
            stream: Stream::Metrics,
            seq: 1,
            ts: now_micros(),
            frame: Frame::from("m"),
            replay: false,
        };
        let lag = Metrics::new().delivery_lag[0].clone();
        let n = fan_out_metrics(&boxes, &d, &lag, 8);
        let taking = boxes.len() - boxes.len().div_ceil(3);
        assert_eq!(n.fanout as usize, taking);
        for (i, m) in boxes.iter().enumerate() {
            let mut out = Vec::new();
            m.drain(&mut out);
            assert_eq!(out.len(), usize::from(i % 3 != 0), "mailbox {i}");
        }
    }

    #[test]
    fn teams_are_isolated_and_overflow_lags() {
        let h = hub(2);
        let mut a = h.open_session();
        let mut b = h.open_session();
        a.subscribe(0, &[Stream::Logs], &BTreeMap::new(), None)
            .unwrap();
        b.subscribe(1, &[Stream::Logs], &BTreeMap::new(), None)
            .unwrap();
        for i in 0..3 {
            h.publish_log(0, &log(&i.to_string()), 1);
        }
        let mut out = Vec::new();
        assert!(b.mailbox().drain(&mut out).is_none());
        assert!(out.is_empty());
        let lagged = a.mailbox().drain(&mut out).unwrap();
        assert_eq!(seqs(&out), vec![1, 2]);
        assert_eq!(
            lagged,
            Lagged {
                team: 0,
                stream: Stream::Logs,
                last_seq: 2
            }
        );
    }

    #[test]
    fn alerts_dedupe_and_firing_set_is_replayed() {
        let h = hub(10);
        let mut rec = AlertRecord {
            status: AlertStatus::Firing,
            fingerprint: "f1".into(),
            alertname: "HighCpu".into(),
            severity: "critical".into(),
            labels: Default::default(),
            annotations: Default::default(),
            starts_at: "2026-11-22T10:00:00Z".into(),
            ends_at: None,
            generator_url: String::new(),
        };
        assert_eq!(h.publish_alert(0, &rec, 1), Some(1));
        assert_eq!(h.publish_alert(0, &rec, 2), None);
        let mut s = h.open_session();
        s.subscribe(0, &[Stream::Alerts], &BTreeMap::new(), None)
            .unwrap();
        assert_eq!(seqs(&queued(&s)), vec![1]);
        rec.status = AlertStatus::Resolved;
        assert_eq!(h.publish_alert(0, &rec, 3), Some(2));
        assert_eq!(h.publish_alert(0, &rec, 4), None);
        assert!(h.firing_alerts(0).is_empty());
    }

    #[test]
    fn filtered_subscribers_skip_and_unsubscribe_purges() {
        let h = hub(10);
        let mut s = h.open_session();
        let f = LogFilter {
            min_level: Some(Level::Error),
            source: None,
        };
        s.subscribe(
            0,
            &[Stream::Logs, Stream::Metrics],
            &BTreeMap::new(),
            Some(f),
        )
        .unwrap();
        h.publish_log(0, &log("info"), 1);
        let mut err = log("boom");
        err.level = Level::Error;
        h.publish_log(0, &err, 1);
        h.publish_metrics(0, 1);
        let mut out = Vec::new();
        s.mailbox().drain(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].seq, 2);
        h.publish_metrics(0, 2);
        s.unsubscribe(0, &[Stream::Metrics]);
        out.clear();
        s.mailbox().drain(&mut out);
        assert!(out.is_empty());
        assert_eq!(s.streams_of(0), vec![Stream::Logs]);
    }

    fn alert(fp: &str, ends_at: Option<&str>) -> AlertRecord {
        AlertRecord {
            status: AlertStatus::Firing,
            fingerprint: fp.into(),
            alertname: "HighCpu".into(),
            severity: "critical".into(),
            labels: Default::default(),
            annotations: Default::default(),
            starts_at: "2026-11-22T10:00:00Z".into(),
            ends_at: ends_at.map(Into::into),
            generator_url: String::new(),
        }
    }

    #[test]
    fn the_firing_set_is_capped_oldest_first_and_counted() {
        let h = hub(10);
        for i in 0..5 {
            h.publish_alert(0, &alert(&format!("f{i}"), None), 1);
        }
        // max_firing_alerts = 3: f0 and f1 were evicted.
        let fps: Vec<_> = h
            .firing_alerts(0)
            .into_iter()
            .map(|a| a.fingerprint)
            .collect();
        assert_eq!(fps, ["f2", "f3", "f4"]);
        let m = &h.shared.metrics;
        assert_eq!(m.alerts_evicted.with_label_values(&["a"]).get(), 2);
        assert_eq!(m.alerts_firing.with_label_values(&["a"]).get(), 3);
        // A new subscriber gets exactly the capped set.
        let mut s = h.open_session();
        s.subscribe(0, &[Stream::Alerts], &BTreeMap::new(), None)
            .unwrap();
        assert_eq!(seqs(&queued(&s)), vec![3, 4, 5]);
        // Re-firing with new content moves it to the newest end.
        let mut again = alert("f2", None);
        again.severity = "warning".into();
        h.publish_alert(0, &again, 2);
        h.publish_alert(0, &alert("f5", None), 3);
        let fps: Vec<_> = h
            .firing_alerts(0)
            .into_iter()
            .map(|a| a.fingerprint)
            .collect();
        assert_eq!(fps, ["f4", "f2", "f5"]);
    }

    #[test]
    fn alerts_whose_end_passed_are_resolved_with_a_frame() {
        let h = hub(10);
        let mut s = h.open_session();
        s.subscribe(0, &[Stream::Alerts], &BTreeMap::new(), None)
            .unwrap();
        let soon = "2026-11-22T10:05:00Z";
        let end = crate::time::parse_rfc3339_micros(soon).unwrap();
        h.publish_alert(0, &alert("f1", Some(soon)), end - 10);
        h.publish_alert(0, &alert("f2", None), end - 5);
        h.expire_alerts(0, end - 1);
        assert_eq!(h.firing_alerts(0).len(), 2);
        h.expire_alerts(0, end);
        let left: Vec<_> = h
            .firing_alerts(0)
            .into_iter()
            .map(|a| a.fingerprint)
            .collect();
        assert_eq!(left, ["f2"]);
        let frames = queued(&s);
        assert_eq!(seqs(&frames), vec![1, 2, 3]);
        let last: serde_json::Value = serde_json::from_str(&frames[2].frame).unwrap();
        assert_eq!(
            (&last["data"]["status"], &last["data"]["fingerprint"]),
            (&serde_json::json!("resolved"), &serde_json::json!("f1"))
        );
        assert_eq!(
            h.shared
                .metrics
                .alerts_expired
                .with_label_values(&["a"])
                .get(),
            1
        );
    }

    #[test]
    fn a_replay_takes_queue_slots_and_lags_where_it_stops() {
        // History of 5, a queue of 2: resuming from 0 queues 1 and 2,
        // then lags at 2 (the client resumes from there).
        let h = hub(2);
        for i in 0..5 {
            h.publish_log(0, &log(&i.to_string()), 1);
        }
        let mut s = h.open_session();
        let resume = BTreeMap::from([(
            Stream::Logs,
            ResumePoint {
                epoch: h.epoch().into(),
                seq: 0,
            },
        )]);
        let r = s.subscribe(0, &[Stream::Logs], &resume, None).unwrap();
        assert!(r.recovered[&Stream::Logs]);
        let mut out = Vec::new();
        let lagged = s.mailbox().drain(&mut out);
        assert_eq!(seqs(&out), vec![1, 2]);
        assert!(out.iter().all(|d| d.replay));
        assert_eq!(lagged.map(|l| l.last_seq), Some(2));
    }

    #[test]
    fn a_team_holds_a_bounded_number_of_hosts() {
        let h = hub(10);
        let snap = |host: &str| HostSnapshot {
            host: host.into(),
            source: Default::default(),
            sampled_at: 1,
            cpu: Default::default(),
            memory: Default::default(),
            disks: vec![],
            network: vec![],
            processes: 0,
            uptime_s: 0,
        };
        h.update_host(0, &snap("h1")).unwrap();
        h.update_host(0, &snap("h2")).unwrap();
        let e = h.update_host(0, &snap("h3")).unwrap_err();
        assert!(e.to_string().contains("max_hosts_per_team"), "{e}");
        // Known hosts still update; other teams have their own room.
        h.update_host(0, &snap("h1")).unwrap();
        h.update_host(1, &snap("h3")).unwrap();
        assert_eq!(h.summary(0).hosts, ["h1", "h2"]);
    }
}

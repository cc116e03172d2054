//! The broker seam: where a team's log and alert frames get their `seq`,
//! are kept for resume and read back, and where host snapshots enter a
//! team. The hub does everything else (alert state, subscribers, fan-out)
//! around it.
//!
//! [`MemoryBroker`](super::memory::MemoryBroker) is the embedded default.
//! In cluster mode (`docs/cluster.md`) a [`Sequencer`] (Redis) assigns the
//! seqs and keeps the streams that every process shares, and each
//! process's `MemoryBroker` is its replica of them: fed in seq order from
//! the shared streams ([`Broker::insert`]), it answers resumes and replays
//! from memory. The contract below is what both modes meet, so clients see
//! no difference but the reach.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use super::view::HostStats;
use super::TeamId;
use crate::protocol::{Frame, Level, LogFilter, Stream};

/// Why the broker could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The broker cannot be reached (or answered too late): nothing was
    /// stored. Publishers are told (`unavailable`, HTTP 503) and may retry.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// A batch larger than the publishes allowed in flight: it can never
    /// be taken whole.
    #[error(
        "a batch of {n} publishes is more than broker.max_in_flight ({max}); send smaller batches"
    )]
    BatchTooLarge { n: usize, max: usize },
    /// The team holds as many hosts as it may.
    #[error("team already has {max} hosts (limits.max_hosts_per_team)")]
    TooManyHosts { max: usize },
}

/// A frame to append, before it has its `seq`.
pub struct Draft<'a> {
    /// Receive time, unix µs (the frame's `ts`).
    pub ts: i64,
    /// Level and source of a log record, for filtered replay (alerts:
    /// `Info` and `""`).
    pub level: Level,
    pub source: &'a str,
    /// Serializes the frame once its `seq` is known (called exactly once
    /// per successful append).
    pub encode: &'a mut dyn FnMut(u64) -> Frame,
}

/// A frame as the broker keeps it.
#[derive(Clone, Debug)]
pub struct Stored {
    pub seq: u64,
    pub ts: i64,
    pub frame: Frame,
}

/// A log or alert frame for the [`Sequencer`], before its seq: the frame
/// is `head` + epoch + `","seq":` + seq + `tail`, assembled where the seq
/// is assigned, so it is serialized once for the whole cluster.
pub struct Submission {
    pub team: TeamId,
    pub stream: Stream,
    /// The frame's `ts` (unix µs).
    pub ts: i64,
    pub level: Level,
    pub source: String,
    /// Up to and including `"epoch":"`.
    pub head: String,
    /// From `,"ts":` to the end.
    pub tail: String,
    /// What de-duplicates an alert transition.
    pub alert: Option<AlertChange>,
    /// The team record to export once the frame has its seq (`None`:
    /// team records are not exported).
    pub export: Option<crate::telemetry::team_logs::TeamRecord>,
}

/// An alert transition, as the sequencer de-duplicates it.
pub struct AlertChange {
    pub fingerprint: String,
    /// The firing record's content (`None`: resolved); a firing alert
    /// whose content did not change is a repeat.
    pub firing: Option<String>,
    /// Firing alerts kept per team (the oldest is evicted beyond).
    pub max_firing: usize,
}

/// What the sequencer did with a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    Seq(u64),
    /// An alert that repeats the fingerprint's state: nothing appended.
    Repeat,
}

/// Where a submission's answer arrives.
pub type Answer = tokio::sync::oneshot::Receiver<Result<Appended, BrokerError>>;

/// The seq authority of a networked broker (cluster mode).
///
/// An appended frame reaches this process's subscribers the way it
/// reaches every other process's: read back from the shared stream, in
/// seq order, and handed to [`Hub::deliver`](super::Hub::deliver). The
/// answer only tells the publisher its seq.
pub trait Sequencer: Send + Sync {
    /// Queues `subs` for appending, in order, all or none: refused at
    /// once (never queued without bound) while the broker is unreachable
    /// or they would take more than the publishes allowed in flight. Each
    /// answer comes within twice the broker's timeout.
    fn submit(&self, subs: Vec<Submission>) -> Result<Vec<Answer>, BrokerError>;
    /// Shares a host's snapshot with every process (in the background;
    /// a newer snapshot of the host replaces one not yet sent).
    fn share_host(&self, team: TeamId, host: &str, raw: &RawValue);
    /// Why the broker cannot be used now, if it cannot.
    fn unavailable(&self) -> Option<String>;
    /// Whether this process has loaded the teams' streams at least once
    /// (before, its replica holds nothing a resume could be judged by).
    fn loaded_once(&self) -> bool;
    /// Subscribers of `team` on the other processes (as last reported).
    fn remote_subscribers(&self, team: TeamId) -> usize;
}

/// A host's latest snapshot, serialized once.
pub struct HostEntry {
    pub raw: Box<RawValue>,
    /// When it arrived (staleness is judged from it).
    pub seen: Instant,
    /// Label values of its gauges, to remove them when it goes.
    pub mounts: Vec<String>,
    pub ifaces: Vec<String>,
    /// Received by another process (cluster mode): no series here.
    pub remote: bool,
    /// The numbers of its summary view, taken once as it arrives.
    pub stats: HostStats,
}

/// A host as [`Broker::with_hosts`] shows it: its name and entry.
pub type NamedHost<'a> = (&'a str, &'a HostEntry);

/// The store behind every team's streams and hosts.
///
/// # Contract
///
/// Every implementation, in-memory or networked, must give clients the
/// same guarantees (`docs/protocol.md`, "Delivery guarantees"):
///
/// * **One sequence per (team, stream).** [`Broker::append`] gives the
///   frame `seq` = the stream's previous seq + 1 within the team's epoch
///   (the first is 1): never the same seq twice, never a gap, across every
///   process that shares the broker. It returns only once the frame is
///   stored; a frame it refused was not stored, and has no seq.
/// * **Order.** The hub calls `append` for one team with that team's lock
///   held and delivers what it returns in that order, so local subscribers
///   get every frame once, in seq order. In cluster mode the seq comes from
///   the [`Sequencer`], and every process (the publisher's too) delivers
///   the frames read back from the shared stream in seq order, through
///   [`Broker::insert`]: a frame it already holds is dropped, and one that
///   skips seqs (they were trimmed before it read them) lags the stream's
///   subscribers first.
/// * **History.** [`Broker::since`] returns every frame after a position
///   the history still holds, in seq order; `None` when it no longer holds
///   them (trimmed, or another epoch). History keeps at least the last
///   `history.logs` / `history.alerts` frames of each stream (a networked
///   broker may keep a few more: trimming is approximate).
/// * **Epoch.** [`Broker::epoch`] changes whenever a stream's seqs start
///   over (the history behind them was lost); it never changes while they
///   continue. A resume point of another epoch is never honoured.
/// * **Hosts.** [`Broker::put_host`] keeps the latest snapshot per (team,
///   host), at most `max` hosts per team; [`Broker::with_hosts`] shows the
///   ones seen within `stale_after`, from every process.
/// * **Unreachable.** When the broker cannot be reached, `append` and
///   `put_host` fail at once with [`BrokerError::Unavailable`]: never a
///   wait without bound, never a queue without bound. Nothing is lost that
///   was acknowledged; subscribers keep their connections.
/// * **Cheap to call under a lock**: the hub calls it synchronously, from
///   async tasks and from the ticker thread, with the team's std mutex
///   held; it answers from memory (in cluster mode, from this process's
///   replica). Nothing here waits on the network: the [`Sequencer`]'s
///   round trips happen outside every lock, bounded in time and in number.
pub trait Broker: Send + Sync {
    /// The epoch of `team`'s streams.
    fn epoch(&self, team: TeamId) -> Arc<str>;

    /// Appends a log or alert frame; see the contract.
    fn append(&self, team: TeamId, stream: Stream, draft: Draft<'_>)
        -> Result<Stored, BrokerError>;

    /// The seq of the stream's newest frame (0: none yet).
    fn head(&self, team: TeamId, stream: Stream) -> u64;

    /// Frames held in the stream's history.
    fn held(&self, team: TeamId, stream: Stream) -> usize;

    /// Frames after `after` (matching `filter`, logs only), or None when
    /// the history no longer holds them.
    fn since(
        &self,
        team: TeamId,
        stream: Stream,
        after: u64,
        filter: Option<&LogFilter>,
    ) -> Option<Vec<Stored>>;

    /// Stores `host`'s latest snapshot; returns the one it replaced.
    fn put_host(
        &self,
        team: TeamId,
        host: &str,
        entry: HostEntry,
        max: usize,
    ) -> Result<Option<HostEntry>, BrokerError>;

    /// Drops hosts not seen within `stale_after` (returned, with their
    /// names), then shows the rest to `f` (name and entry), in host-name
    /// order.
    fn with_hosts(
        &self,
        team: TeamId,
        stale_after: Duration,
        f: &mut dyn FnMut(&[NamedHost<'_>]),
    ) -> Vec<(String, HostEntry)>;

    /// The names of the team's hosts.
    fn host_names(&self, team: TeamId) -> Vec<String>;

    /// When `host`'s snapshot arrived, if the team holds one.
    fn seen(&self, team: TeamId, host: &str) -> Option<Instant>;

    /// A replica's append: a frame whose seq was assigned elsewhere, in
    /// seq order. A frame that does not follow the stream's head (the
    /// frames between were trimmed before they could be read) starts the
    /// history over from it.
    fn insert(&self, team: TeamId, stream: Stream, stored: Stored, level: Level, source: &str);

    /// A replica's reload: `team`'s streams are now `epoch`'s, at these
    /// heads (seq of the newest frame; logs, alerts), holding `frames`
    /// (oldest first). A stream whose head is `None` is kept as it is.
    fn reset(&self, team: TeamId, epoch: &str, heads: [Option<u64>; 2], frames: Vec<Reloaded>);
}

/// A frame of a reloaded history.
pub struct Reloaded {
    pub stream: Stream,
    pub stored: Stored,
    pub level: Level,
    pub source: String,
}

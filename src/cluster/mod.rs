//! Cluster mode (`docs/cluster.md`): every opswire process of a
//! deployment shares each team's streams, alert state and hosts through
//! Redis, so a client can connect to any of them, move between them, and
//! resume across restarts of all of them.
//!
//! # How
//!
//! * A publish is one script call (`scripts::PUBLISH`): de-duplicate an
//!   alert, increment the stream's seq, `XADD … MAXLEN ~ history`, keep
//!   the firing set. Its `XADD` is the notification too.
//! * Every process, the publisher's included, reads each team's streams
//!   with a blocking `XREAD` from the seq it holds (`tail`) and hands
//!   each frame to [`Hub::deliver`]: in seq order, never twice, with no
//!   gap (a read after a lost connection starts where the last ended).
//! * Each process keeps a replica of the streams' history and of the
//!   firing set (its hub's in-memory broker), loaded at start and when a
//!   team's epoch changes (`snapshot`), so a resume or a subscribe is
//!   answered from memory.
//! * Host snapshots and subscriber counts are shared every half second
//!   (`sync`); metrics frames stay per process.
//!
//! # Layout
//!
//! * `link`: the shared connection, whether it is up, and why not.
//! * `publish`: the [`Sequencer`]'s writer: publishes pipelined, bounded.
//! * `tail`: the reader of every team's streams.
//! * `sync`: hosts, subscriber counts, epochs.
//! * `snapshot`: a team's reload.
//! * `keys`, `scripts`, `reply`: key names, Lua, reading replies.

mod keys;
mod link;
mod publish;
mod reply;
mod scripts;
mod snapshot;
mod sync;
mod tail;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use link::Conn;
use redis::Script;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

pub use link::LinkError;

use crate::config::BrokerConfig;
use crate::hub::{Answer, BrokerError, Hub, Sequencer, Submission, TeamId};
use crate::metrics::Metrics;
use keys::TeamKeys;
use link::Link;
use publish::Job;

/// Publishes one pipelined round trip carries at most.
const BATCH: usize = 512;

/// How often hosts and subscriber counts are shared.
const SYNC_EVERY: Duration = Duration::from_millis(500);

/// The Redis side of cluster mode: the hub's [`Sequencer`], and the tasks
/// that keep this process's replica in step ([`RedisBroker::spawn`]).
pub struct RedisBroker {
    link: Arc<Link>,
    /// One writer per team (a slow shard of a Redis Cluster holds up its
    /// own teams only). Unbounded channels, bounded together by
    /// `max_in_flight`, which `submit` reserves before queuing.
    jobs: Vec<mpsc::UnboundedSender<Job>>,
    /// Taken by the writers when they start.
    job_rx: Mutex<Vec<mpsc::UnboundedReceiver<Job>>>,
    keys: Vec<TeamKeys>,
    nodes_key: String,
    node: String,
    /// History kept per stream: logs, alerts.
    history: [usize; 2],
    timeout: Duration,
    metrics: Arc<Metrics>,
    in_flight: AtomicUsize,
    max_in_flight: usize,
    /// Host snapshots not yet written: (team, host) → `"<seen ms> <node>
    /// <json>"` (the node: so a process skips its own when it reads them
    /// back).
    hosts: Mutex<HashMap<(TeamId, String), String>>,
    /// Subscribers per team on the other processes.
    remote: Vec<AtomicUsize>,
    /// Every team loaded since the link last came up.
    loaded: AtomicBool,
    /// Every team loaded at least once.
    loaded_once: AtomicBool,
    /// One load of a team at a time (the supervisor's and the sync's).
    loading: Vec<tokio::sync::Mutex<()>>,
    /// The highest seq answered per team and stream (logs, alerts): an
    /// answer at or below it means Redis went back in time.
    answered: Vec<[std::sync::atomic::AtomicU64; 2]>,
    /// Woken when the link is up and loaded (the tail waits for it).
    ready: Notify,
    /// Teams whose epoch looked different to a publish or a read.
    stale_epochs: Mutex<Vec<TeamId>>,
    /// Each team's epoch as last loaded.
    epochs: Vec<Mutex<Arc<str>>>,
    /// The publish script, called by its hash.
    publish: Script,
}

impl RedisBroker {
    /// The broker of `config` (its `url`, or its `cluster` seeds) for
    /// `teams` (the hub's, in its order); nothing is connected until
    /// [`RedisBroker::spawn`].
    pub fn new(
        config: &BrokerConfig,
        teams: &[String],
        history: [usize; 2],
        metrics: Arc<Metrics>,
    ) -> Result<Arc<RedisBroker>, LinkError> {
        let timeout = Duration::from_millis(config.timeout_ms);
        let (urls, cluster) = match &config.url {
            Some(url) => (vec![url.clone()], false),
            None => (config.cluster.clone(), true),
        };
        let link = Arc::new(Link::new(&urls, cluster, timeout)?);
        let (jobs, job_rx) = teams.iter().map(|_| mpsc::unbounded_channel()).unzip();
        metrics.broker.up.set(0);
        Ok(Arc::new(RedisBroker {
            link,
            jobs,
            job_rx: Mutex::new(job_rx),
            keys: teams
                .iter()
                .map(|t| TeamKeys::new(&config.prefix, t))
                .collect(),
            nodes_key: keys::nodes(&config.prefix),
            node: config.node.clone().unwrap_or_else(default_node),
            history,
            timeout,
            metrics,
            in_flight: AtomicUsize::new(0),
            max_in_flight: config.max_in_flight,
            hosts: Mutex::new(HashMap::new()),
            remote: teams.iter().map(|_| AtomicUsize::new(0)).collect(),
            loaded: AtomicBool::new(false),
            loaded_once: AtomicBool::new(false),
            loading: teams.iter().map(|_| tokio::sync::Mutex::new(())).collect(),
            answered: teams.iter().map(|_| Default::default()).collect(),
            ready: Notify::new(),
            stale_epochs: Mutex::new(Vec::new()),
            epochs: teams.iter().map(|_| Mutex::new(Arc::from(""))).collect(),
            publish: Script::new(scripts::PUBLISH),
        }))
    }

    /// The broker's host and port (for spans; never the password).
    pub fn server(&self) -> (String, u16) {
        self.link.server.clone()
    }

    /// The longest wait for one call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Starts the supervisor (connects, reconnects with backoff, loads
    /// the teams), the writer, the reader and the sync; they end with
    /// `shutdown`.
    pub fn spawn(self: &Arc<Self>, hub: Hub, shutdown: CancellationToken) {
        let writers = std::mem::take(&mut *self.job_rx.lock().unwrap_or_else(|e| e.into_inner()));
        for rx in writers {
            tokio::spawn(publish::run(self.clone(), rx, shutdown.clone()));
        }
        tokio::spawn(supervise(self.clone(), hub.clone(), shutdown.clone()));
        // One reader for every team on one Redis; one per team on a Redis
        // Cluster, where one command may name the keys of one slot only.
        let teams: Vec<TeamId> = (0..self.keys.len()).collect();
        let groups: Vec<Vec<TeamId>> = if self.link.is_cluster() {
            teams.into_iter().map(|t| vec![t]).collect()
        } else {
            vec![teams]
        };
        for group in groups {
            tokio::spawn(tail::run(
                self.clone(),
                hub.clone(),
                group,
                shutdown.clone(),
            ));
        }
        tokio::spawn(sync::run(self.clone(), hub, shutdown));
    }

    fn is_ready(&self) -> bool {
        self.link.is_up() && self.loaded.load(Ordering::Acquire)
    }

    /// Counts one round trip to Redis (`op`: publish, read, sync, ping).
    fn round_trip(&self, op: &str, took: Duration) {
        self.metrics
            .broker
            .round_trip
            .with_label_values(&[op])
            .observe(took.as_secs_f64());
    }

    /// `team`'s epoch as last loaded.
    fn epoch(&self, team: TeamId) -> Arc<str> {
        self.epochs[team]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_epoch(&self, team: TeamId, epoch: &str) {
        *self.epochs[team].lock().unwrap_or_else(|e| e.into_inner()) = Arc::from(epoch);
    }

    /// Asks the sync to reload `team` (its epoch looked different, Redis
    /// answered a seq it had answered before, or frames were trimmed
    /// before this process read them).
    fn needs_reload(&self, team: TeamId) {
        let mut stale = self.stale_epochs.lock().unwrap_or_else(|e| e.into_inner());
        if !stale.contains(&team) {
            stale.push(team);
        }
    }

    /// The team whose stream this is, and which stream (of `teams`).
    fn team_of_stream(
        &self,
        teams: &[TeamId],
    ) -> HashMap<String, (TeamId, crate::protocol::Stream)> {
        use crate::protocol::Stream;
        let mut out = HashMap::new();
        for (team, k) in teams.iter().map(|&t| (t, &self.keys[t])) {
            for s in [Stream::Logs, Stream::Alerts] {
                out.insert(k.stream(s).to_owned(), (team, s));
            }
        }
        out
    }
}

impl Sequencer for RedisBroker {
    fn submit(&self, subs: Vec<Submission>) -> Result<Vec<Answer>, BrokerError> {
        let publishes = &self.metrics.broker.publishes;
        let n = subs.len();
        if let Some(why) = self.unavailable() {
            publishes
                .with_label_values(&["unavailable"])
                .inc_by(n as u64);
            return Err(BrokerError::Unavailable(why));
        }
        // All of them or none: reserved before any is queued (the writers
        // may answer the first before the last is queued).
        let reserved = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (now + n <= self.max_in_flight).then_some(now + n)
            });
        if reserved.is_err() {
            publishes.with_label_values(&["busy"]).inc_by(n as u64);
            if n > self.max_in_flight {
                return Err(BrokerError::BatchTooLarge {
                    n,
                    max: self.max_in_flight,
                });
            }
            return Err(BrokerError::Unavailable(format!(
                "broker busy: {} publishes are waiting for it (broker.max_in_flight); retry",
                self.max_in_flight
            )));
        }
        self.metrics.broker.in_flight.add(n as i64);
        let deadline = Instant::now() + self.timeout;
        let mut answers = Vec::with_capacity(n);
        for sub in subs {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let team = sub.team;
            let job = Job {
                sub,
                answer: tx,
                deadline,
            };
            if let Err(e) = self.jobs[team].send(job) {
                // The writer has stopped (shutting down).
                publish::answer(
                    self,
                    e.0,
                    Err(BrokerError::Unavailable(
                        "broker unavailable: shutting down".into(),
                    )),
                );
            }
            answers.push(rx);
        }
        Ok(answers)
    }

    fn share_host(&self, team: TeamId, host: &str, raw: &RawValue) {
        let value = format!(
            "{} {} {}",
            crate::time::now_micros() / 1000,
            self.node,
            raw.get()
        );
        self.hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((team, host.to_owned()), value);
    }

    fn unavailable(&self) -> Option<String> {
        if let Some(why) = self.link.down_reason() {
            return Some(why);
        }
        (!self.loaded.load(Ordering::Acquire))
            .then(|| "broker unavailable: loading the teams' streams".to_owned())
    }

    fn loaded_once(&self) -> bool {
        self.loaded_once.load(Ordering::Acquire)
    }

    fn remote_subscribers(&self, team: TeamId) -> usize {
        self.remote
            .get(team)
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }
}

/// Connects, loads every team, and watches the connection (a ping a
/// second); on a loss, reconnects with backoff (100 ms doubling to 5 s).
async fn supervise(b: Arc<RedisBroker>, hub: Hub, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    let mut connected_before = false;
    loop {
        let attempt = async {
            let mut conn = b.link.open(b.timeout).await?;
            // The hot one by its hash (on every primary of a cluster); the
            // others are sent whole (`EVAL`), being rare. Not fatal: an
            // unknown hash falls back to `EVAL` (publish.rs).
            if let Err(e) = b.publish.prepare_invoke().load_async(&mut conn).await {
                tracing::debug!(error = %e, "SCRIPT LOAD failed; publishes fall back to EVAL");
            }
            snapshot::resync(&b, &hub, &mut conn, &[]).await?;
            Ok::<Conn, redis::RedisError>(conn)
        };
        let conn = tokio::select! {
            r = attempt => r,
            () = shutdown.cancelled() => return,
        };
        match conn {
            Ok(conn) => {
                b.link.set_up(conn);
                b.loaded.store(true, Ordering::Release);
                b.loaded_once.store(true, Ordering::Release);
                b.metrics.broker.up.set(1);
                if connected_before {
                    b.metrics.broker.reconnects.inc();
                }
                tracing::info!(node = %b.node, "connected to the broker; every team loaded");
                connected_before = true;
                backoff = Duration::from_millis(100);
                b.ready.notify_waiters();
                watch(&b, &shutdown).await;
                b.loaded.store(false, Ordering::Release);
                b.metrics.broker.up.set(0);
                if shutdown.is_cancelled() {
                    return;
                }
            }
            Err(e) => {
                b.link.set_down(e.to_string());
                tracing::debug!(error = %e, "broker connection attempt failed");
            }
        }
        let jitter = Duration::from_millis(rand::random::<u64>() % 100);
        tokio::select! {
            () = tokio::time::sleep(backoff + jitter) => {}
            () = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Pings the broker every second until the link breaks (or shutdown).
async fn watch(b: &RedisBroker, shutdown: &CancellationToken) {
    loop {
        tokio::select! {
            () = b.link.broke.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = shutdown.cancelled() => return,
        }
        let Some(mut conn) = b.link.get() else {
            return;
        };
        let started = Instant::now();
        // A keyed read, not PING: on a Redis Cluster PING goes to every
        // primary, and one unreachable shard would take every team down.
        let pong: redis::RedisResult<i64> = redis::cmd("EXISTS")
            .arg(&b.nodes_key)
            .query_async(&mut conn)
            .await;
        match pong {
            Ok(_) => b.round_trip("ping", started.elapsed()),
            Err(e) => {
                b.link.set_down(e.to_string());
                return;
            }
        }
    }
}

/// This process's default name: host name and pid.
fn default_node() -> String {
    format!(
        "{}-{}",
        crate::sampler::Sampler::os_host_name(),
        std::process::id()
    )
}

//! `opswire agent`: samples this host and follows log files, and publishes
//! both to a hub over one persistent WebSocket (`publish` ops, an `ingest`
//! token). See `docs/agent.md`.
//!
//! Three threads of work, so that nothing blocking runs on the async
//! runtime and a slow hub never stalls sampling or tailing:
//!
//! * the **sampler thread** owns the [`Sampler`] and puts each snapshot in
//!   a `watch` channel, which holds only the newest: that is the
//!   "newest-only" guarantee for metrics;
//! * the **tail thread** polls the [`tail::Follower`]s and pushes lines into
//!   the bounded [`buffer::LogBuffer`] (oldest dropped when full);
//! * the **publisher** (a single-threaded Tokio runtime) owns the
//!   connection: it sends snapshots and buffered lines, matches acks, and
//!   reconnects with backoff ([`publisher`]).
//!
//! SIGINT/SIGTERM: the tail thread reads its files one last time, then the
//! publisher gets [`publisher::FLUSH_TIMEOUT`] to have what is buffered
//! acknowledged, and the agent exits 0. A second signal exits at once.

pub mod backoff;
pub mod buffer;
pub mod handshake;
pub mod line;
pub mod pacer;
pub mod publisher;
pub mod tail;
mod workers;

use crate::signal::wait_for_signal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::{LogConfig, TelemetryConfig};
use crate::sampler::{Sampler, SamplerError};

use buffer::LogBuffer;
use handshake::ConnectError;
use publisher::Publisher;
use tail::{Follower, TailError};
use workers::{spawn_sampler, spawn_tailer};

/// Interval of the "agent stats" info log.
const STATS_EVERY: Duration = Duration::from_secs(60);
/// How long the shutdown waits for the tail thread's last read.
const TAIL_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// What `opswire agent` was asked to do (its flags).
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// `--hub`: `wss://HOST:PORT` or `ws://HOST:PORT` (see
    /// [`handshake::hub_url`]).
    pub hub: String,
    /// `--ca-file`: the only CA(s) a `wss://` hub's certificate may be
    /// signed by; `None`: the system's trusted roots.
    pub ca_file: Option<PathBuf>,
    /// `--token`: an `ingest` JWT.
    pub token: String,
    /// `--host`: the name this host reports; default: the OS host name.
    pub host: Option<String>,
    /// `--team`: default: the token's only team.
    pub team: Option<String>,
    /// `--tail`: files to follow.
    pub tail: Vec<PathBuf>,
    /// `--host-root`: the host's `/` as mounted in this container (its
    /// disks and processes are read under it); `None`: this process's own.
    pub host_root: Option<PathBuf>,
    /// `--tick-ms`: time between samples.
    pub tick: Duration,
    /// `--mount-timeout-ms`: how long one disk's `statvfs` may take.
    pub mount_timeout: Duration,
    /// `--buffer-lines`: log lines kept while the hub is unreachable.
    pub buffer_lines: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Config(String),
    #[error("--tail {0}")]
    Tail(#[from] TailError),
    #[error("sampler: {0}")]
    Sampler(#[from] SamplerError),
    #[error("{0}")]
    Hub(#[from] ConnectError),
    #[error("cannot start: {0}")]
    Io(#[from] std::io::Error),
}

impl AgentError {
    /// 2 for what the operator must fix (flags, token, team), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            AgentError::Config(_) | AgentError::Tail(_) | AgentError::Hub(_) => 2,
            AgentError::Sampler(_) | AgentError::Io(_) => 1,
        }
    }
}

/// State shared by the tail thread and the publisher.
pub struct Shared {
    buffer: Mutex<LogBuffer>,
    /// Signalled when lines are pushed.
    wake: Notify,
}

impl Shared {
    pub fn new(buffer_lines: usize) -> Shared {
        Shared {
            buffer: Mutex::new(LogBuffer::new(buffer_lines)),
            wake: Notify::new(),
        }
    }

    pub fn buffer(&self) -> MutexGuard<'_, LogBuffer> {
        // Poisoning means a panic elsewhere while holding the lock; every
        // buffer method leaves it consistent before it could panic, so the
        // data is still good.
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Lets a repeated warning through at most once per interval, counting
/// the ones held back.
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            held: 0,
        }
    }

    /// `Some(held back since the last one)` when this one may be logged.
    pub fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < self.every)
        {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

/// The `opswire agent` command: logs to stderr, runs, and maps the result
/// to an exit code.
pub fn main(config: AgentConfig) -> ExitCode {
    let telemetry_config = TelemetryConfig {
        service_name: "opswire-agent".into(),
        ..TelemetryConfig::default()
    };
    let telemetry = match crate::telemetry::init(&LogConfig::default(), &telemetry_config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("opswire agent: {e}");
            return ExitCode::from(1);
        }
    };
    let result = run(config);
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("opswire agent: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs the agent until SIGINT/SIGTERM (Ok) or a permanent error.
pub fn run(config: AgentConfig) -> Result<(), AgentError> {
    let url = handshake::hub_url(&config.hub).map_err(AgentError::Config)?;
    let auth = handshake::bearer(&config.token).map_err(AgentError::Config)?;
    if config.ca_file.is_some() && !url.starts_with("wss://") {
        return Err(AgentError::Config(format!(
            "--ca-file is for a wss:// hub, and --hub is {url}"
        )));
    }
    // Read now: a CA file that cannot be used is a mistake to report
    // before anything starts. (The system's roots are read only for wss://.)
    let trust = handshake::Trust::new(config.ca_file.as_deref(), url.starts_with("wss://"))
        .map_err(AgentError::Config)?;
    let tick_ms = config.tick.as_millis();
    if !(50..=60_000).contains(&tick_ms) {
        return Err(AgentError::Config(format!(
            "--tick-ms {tick_ms} is out of range 50..=60000"
        )));
    }
    let mount_ms = config.mount_timeout.as_millis();
    if !(10..=60_000).contains(&mount_ms) {
        return Err(AgentError::Config(format!(
            "--mount-timeout-ms {mount_ms} is out of range 10..=60000"
        )));
    }
    if config.buffer_lines == 0 {
        return Err(AgentError::Config(
            "--buffer-lines must be at least 1".into(),
        ));
    }
    if matches!(&config.team, Some(t) if t.is_empty()) {
        return Err(AgentError::Config("--team is empty".into()));
    }
    let host = config.host.clone().unwrap_or_else(Sampler::os_host_name);
    if host.is_empty() || host.len() > 253 {
        return Err(AgentError::Config("--host must be 1-253 characters".into()));
    }
    if let Some(root) = &config.host_root {
        // Where the sampler reads the host's mounts (sampler::mounts).
        let table = root.join("proc/1/mountinfo");
        if let Err(e) = std::fs::File::open(&table) {
            return Err(AgentError::Config(format!(
                "--host-root {}: cannot read the host's mount table {}: {e} (mount the host's / there read-only, e.g. `-v /:/host:ro,rslave`)",
                root.display(),
                table.display()
            )));
        }
    }
    // Positioned at the end of each file now, before connecting: a line
    // written once the agent is connected is never missed.
    let followers = config
        .tail
        .iter()
        .map(Follower::new)
        .collect::<Result<Vec<_>, _>>()?;
    let shared = Arc::new(Shared::new(config.buffer_lines));
    let (metrics, sampler) = spawn_sampler(
        host.clone(),
        config.host_root.clone(),
        config.tick,
        config.mount_timeout,
    )?;
    let (tailer, drained) = spawn_tailer(followers, shared.clone(), host.clone())?;
    tracing::info!(
        hub = %url,
        host = %host,
        team = config.team.as_deref().unwrap_or("(the token's)"),
        files = config.tail.len(),
        tick_ms = tick_ms as u64,
        buffer_lines = config.buffer_lines,
        "agent starting"
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let stop = CancellationToken::new();
        tokio::spawn(on_signal(stop.clone(), tailer.stopper(), drained));
        tokio::spawn(report_stats(shared.clone()));
        Publisher::new(
            url,
            auth,
            trust,
            config.team.clone(),
            shared.clone(),
            metrics,
            stop,
        )
        .run()
        .await
    });
    drop(runtime);
    tailer.join();
    sampler.join();

    let b = shared.buffer();
    let s = b.stats();
    tracing::info!(
        lines_read = s.accepted,
        acked = s.acked,
        resent = s.resent,
        dropped = s.dropped,
        rejected = s.rejected,
        undelivered = b.len(),
        "agent stopped"
    );
    if !b.is_empty() && result.is_ok() {
        tracing::warn!(
            undelivered = b.len(),
            "log lines not acknowledged by the hub before exit (they may or may not have arrived)"
        );
    }
    result.map_err(AgentError::from)
}

/// On the first SIGINT/SIGTERM: has the tail thread read its files one
/// last time, then starts the flush. A second signal exits at once.
async fn on_signal(
    stop: CancellationToken,
    tail_stop: mpsc::Sender<()>,
    drained: oneshot::Receiver<()>,
) {
    wait_for_signal().await;
    tracing::info!("signal received");
    let _ = tail_stop.send(());
    let _ = tokio::time::timeout(TAIL_DRAIN_TIMEOUT, drained).await;
    stop.cancel();
    wait_for_signal().await;
    tracing::warn!("second signal: exiting without flushing");
    std::process::exit(1);
}

/// Logs the delivery counters every [`STATS_EVERY`].
async fn report_stats(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(STATS_EVERY);
    every.tick().await;
    loop {
        every.tick().await;
        let (s, held, in_flight) = {
            let b = shared.buffer();
            (b.stats(), b.len(), b.in_flight())
        };
        tracing::info!(
            lines_read = s.accepted,
            acked = s.acked,
            resent = s.resent,
            dropped = s.dropped,
            rejected = s.rejected,
            buffered = held,
            in_flight,
            "agent stats"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_lets_one_through_per_interval_and_counts_the_rest() {
        let mut t = Throttle::new(Duration::from_secs(3600));
        assert_eq!(t.ready(), Some(0));
        assert_eq!(t.ready(), None);
        assert_eq!(t.ready(), None);
        t.last = Some(Instant::now() - Duration::from_secs(7200));
        assert_eq!(t.ready(), Some(2));
    }

    #[test]
    fn bad_flags_are_refused_before_anything_starts() {
        let base = AgentConfig {
            hub: "ws://127.0.0.1:1".into(),
            ca_file: None,
            token: "t".into(),
            host: Some("h".into()),
            team: None,
            tail: vec![],
            host_root: None,
            tick: Duration::from_millis(1000),
            mount_timeout: Duration::from_millis(1000),
            buffer_lines: 10,
        };
        let cases = [
            AgentConfig {
                hub: "ftp://x".into(),
                ..base.clone()
            },
            AgentConfig {
                ca_file: Some("/etc/hostname".into()),
                ..base.clone()
            },
            AgentConfig {
                hub: "wss://x".into(),
                ca_file: Some("/nonexistent/ca.pem".into()),
                ..base.clone()
            },
            AgentConfig {
                token: " ".into(),
                ..base.clone()
            },
            AgentConfig {
                tick: Duration::from_millis(10),
                ..base.clone()
            },
            AgentConfig {
                buffer_lines: 0,
                ..base.clone()
            },
            AgentConfig {
                mount_timeout: Duration::from_millis(5),
                ..base.clone()
            },
            AgentConfig {
                team: Some(String::new()),
                ..base.clone()
            },
            AgentConfig {
                host: Some(String::new()),
                ..base.clone()
            },
            AgentConfig {
                host_root: Some("/nonexistent-host-root".into()),
                ..base.clone()
            },
        ];
        for c in cases {
            let e = run(c).unwrap_err();
            assert!(matches!(e, AgentError::Config(_)), "{e}");
            assert_eq!(e.exit_code(), 2);
        }
    }
}

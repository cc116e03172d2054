//! The agent's two blocking threads: the sampler and the file tailer.
//! Both wait on a channel rather than sleeping, so a stop request ends
//! their wait at once.

use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::tail::{Follower, Poll};
use super::{line, AgentError, Shared, Throttle};
use crate::protocol::HostSource;
use crate::sampler::Sampler;

/// How often the tail thread looks at its files.
const TAIL_POLL: Duration = Duration::from_millis(200);
/// The first sample comes this soon (or after one tick, if shorter), so a
/// new agent shows up on dashboards quickly.
const FIRST_SAMPLE: Duration = Duration::from_millis(250);
/// Warnings about dropped lines come at most this often.
const DROP_WARN_EVERY: Duration = Duration::from_secs(10);

/// The newest snapshot, serialized; `None` until the first sample.
pub type Snapshots = watch::Receiver<Option<Arc<str>>>;

/// A thread that stops when told to (or when every sender is gone).
pub struct Worker {
    stop: mpsc::Sender<()>,
    handle: JoinHandle<()>,
}

impl Worker {
    /// A handle that asks the thread to stop.
    pub fn stopper(&self) -> mpsc::Sender<()> {
        self.stop.clone()
    }

    /// Asks the thread to stop and waits for it.
    pub fn join(self) {
        let _ = self.stop.send(());
        drop(self.stop);
        if self.handle.join().is_err() {
            tracing::error!("an agent thread panicked");
        }
    }
}

/// Waits `wait` for a stop request; true when the thread should stop
/// (asked to, or every sender is gone).
fn stop_requested(rx: &mpsc::Receiver<()>, wait: Duration) -> bool {
    !matches!(rx.recv_timeout(wait), Err(mpsc::RecvTimeoutError::Timeout))
}

/// Starts the sampler thread; fails if the sampler cannot be built. Each
/// snapshot replaces the previous one in the channel: only the newest is
/// ever sent.
pub fn spawn_sampler(
    host: String,
    host_root: Option<std::path::PathBuf>,
    tick: Duration,
    mount_timeout: Duration,
) -> Result<(Snapshots, Worker), AgentError> {
    let (tx, rx) = watch::channel(None);
    let (stop_tx, stop_rx) = mpsc::channel();
    let (init_tx, init_rx) = mpsc::sync_channel(1);
    let handle = std::thread::Builder::new()
        .name("opswire-sampler".into())
        .spawn(move || {
            let mut sampler = match Sampler::new(host, host_root) {
                Ok(s) => {
                    let _ = init_tx.send(Ok(()));
                    s.with_mount_timeout(mount_timeout, tick)
                }
                Err(e) => {
                    let _ = init_tx.send(Err(e));
                    return;
                }
            };
            let mut wait = FIRST_SAMPLE.min(tick);
            while !stop_requested(&stop_rx, wait) {
                let started = Instant::now();
                let mut snapshot = sampler.sample();
                snapshot.source = HostSource::Agent;
                // Cannot fail: numbers, strings and arrays (a NaN would
                // become `null`, not an error).
                let json = serde_json::to_string(&snapshot).expect("a snapshot serializes");
                tx.send_replace(Some(json.into()));
                wait = tick.saturating_sub(started.elapsed());
            }
        })?;
    let worker = Worker {
        stop: stop_tx,
        handle,
    };
    match init_rx.recv() {
        Ok(Ok(())) => Ok((rx, worker)),
        Ok(Err(e)) => {
            worker.join();
            Err(e.into())
        }
        Err(_) => {
            worker.join();
            Err(AgentError::Config(
                "the sampler thread died while starting".into(),
            ))
        }
    }
}

/// Starts the tail thread. The receiver fires once the thread has made
/// its last read after a stop request.
pub fn spawn_tailer(
    followers: Vec<Follower>,
    shared: Arc<Shared>,
    host: String,
) -> Result<(Worker, oneshot::Receiver<()>), AgentError> {
    let (stop_tx, stop_rx) = mpsc::channel();
    let (drained_tx, drained_rx) = oneshot::channel();
    let mut tailer = Tailer {
        failing: vec![None; followers.len()],
        followers,
        shared,
        host,
        drops: Throttle::new(DROP_WARN_EVERY),
        unreported_drops: 0,
    };
    let handle = std::thread::Builder::new()
        .name("opswire-tail".into())
        .spawn(move || {
            let mut more = false;
            loop {
                // A file with more to read is polled again at once.
                let wait = if more { Duration::ZERO } else { TAIL_POLL };
                let stopping = stop_requested(&stop_rx, wait);
                more = tailer.poll_all();
                if stopping {
                    break;
                }
            }
            let _ = drained_tx.send(());
        })?;
    let worker = Worker {
        stop: stop_tx,
        handle,
    };
    Ok((worker, drained_rx))
}

/// The tail thread's state.
struct Tailer {
    followers: Vec<Follower>,
    /// The last error of each follower, so each is logged once.
    failing: Vec<Option<String>>,
    shared: Arc<Shared>,
    host: String,
    drops: Throttle,
    unreported_drops: u64,
}

impl Tailer {
    /// Polls every file once and buffers what was read; true when some
    /// file has more to read.
    fn poll_all(&mut self) -> bool {
        let mut more = false;
        let mut lines = Vec::new();
        for i in 0..self.followers.len() {
            match self.followers[i].poll(&mut lines) {
                Ok(p) => {
                    more |= p == Poll::More;
                    if self.failing[i].take().is_some() {
                        let file = self.followers[i].path().display();
                        tracing::info!(file = %file, "tailed file readable again");
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    if self.failing[i].as_deref() != Some(msg.as_str()) {
                        tracing::warn!(error = %msg, "cannot read a tailed file; retrying");
                        self.failing[i] = Some(msg);
                    }
                }
            }
            if !lines.is_empty() {
                self.buffer(i, &mut lines);
            }
        }
        more
    }

    /// Turns the lines of follower `i` into records and buffers them.
    fn buffer(&mut self, i: usize, lines: &mut Vec<String>) {
        let source = self.followers[i].name();
        let n = lines.len();
        // Serialized outside the lock: the publisher waits on it.
        let read_at = crate::time::now_micros();
        let data: Vec<String> = lines
            .drain(..)
            .map(|l| line::log_data(&l, source, &self.host, read_at))
            .collect();
        let (dropped, total_dropped) = {
            let mut b = self.shared.buffer();
            let dropped: u64 = data.into_iter().map(|d| b.push(d)).sum();
            (dropped, b.stats().dropped)
        };
        self.shared.wake.notify_one();
        tracing::debug!(file = source, lines = n as u64, "read lines");
        if dropped == 0 {
            return;
        }
        self.unreported_drops += dropped;
        if self.drops.ready().is_some() {
            tracing::warn!(
                dropped = self.unreported_drops,
                dropped_total = total_dropped,
                "log buffer full: dropped the oldest lines (hub unreachable or too slow)"
            );
            self.unreported_drops = 0;
        }
    }
}

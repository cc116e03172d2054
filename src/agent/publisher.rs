//! The one persistent WebSocket to the hub: publish lines and snapshots,
//! read the replies, and reconnect with backoff when the connection is
//! lost (the connection itself is opened by [`super::handshake`]).
//!
//! Publish ops carry ids: a log line's id is its buffer id (positive), a
//! metrics snapshot's id is negative, so every reply finds what it is
//! about. Log lines are kept until their `published` arrives (see
//! [`super::buffer`]); snapshots are fire-and-forget, since the next tick
//! brings a newer one.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::handshake::{choose_team, connect, ConnectError, ServerFrame, Trust, Welcome, Ws};
use super::pacer::Pacer;
use super::{Shared, Throttle};

/// Publish ops awaiting their reply, at most (fewer while paced, see
/// [`super::pacer`]). Bounds what a lost connection makes the agent send
/// twice.
pub const MAX_IN_FLIGHT: usize = 256;

/// How long SIGINT/SIGTERM leaves for sending and acknowledging what is
/// buffered before the agent exits.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// A write (or flush) that makes no progress this long means a dead peer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnect backoff: full jitter under a ceiling doubling from the base.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// A connection must hold this long before the backoff starts over, so a
/// hub that accepts and at once drops the agent is not hammered.
const STABLE_AFTER: Duration = Duration::from_secs(1);
/// The hub pings every `heartbeat_s`; silence for twice that (plus slack)
/// means the connection is dead even if TCP has not noticed.
const DEFAULT_HEARTBEAT_S: u64 = 20;

/// A `publish` op. Assembled by hand so that each record, serialized once
/// when it was read, is not parsed and serialized again on every resend.
fn publish_frame(id: i64, team_json: &str, stream: &str, data: &str) -> String {
    // `team_json` and `data` are JSON serialized by serde_json.
    format!(r#"{{"op":"publish","id":{id},"team":{team_json},"stream":"{stream}","data":{data}}}"#)
}

/// How a session ended.
enum SessionEnd {
    /// Shutting down, and every line was acknowledged.
    Flushed,
    /// Shutting down, and the flush time ran out.
    Deadline,
    Lost(String),
}

/// Owns the connection and the reconnect loop.
pub struct Publisher {
    url: String,
    auth: HeaderValue,
    /// The roots a `wss://` hub's certificate is checked against.
    trust: Trust,
    /// `--team`, or the team chosen at the first welcome.
    team: Option<String>,
    shared: Arc<Shared>,
    metrics: watch::Receiver<Option<Arc<str>>>,
    metrics_open: bool,
    next_metrics_id: i64,
    metrics_errors: Throttle,
    rejected: Throttle,
    /// Kept across connections: the hub's budget does not change.
    pacer: Pacer,
    pacing_notice: Throttle,
    /// Cancelled when the agent should flush and exit.
    stop: CancellationToken,
    /// Set once `stop` fires: when the flush gives up.
    deadline: Option<Instant>,
    backoff: Backoff,
    ever_connected: bool,
    last_failure: Option<String>,
}

impl Publisher {
    pub fn new(
        url: String,
        auth: HeaderValue,
        trust: Trust,
        team: Option<String>,
        shared: Arc<Shared>,
        metrics: watch::Receiver<Option<Arc<str>>>,
        stop: CancellationToken,
    ) -> Publisher {
        Publisher {
            url,
            auth,
            trust,
            team,
            shared,
            metrics,
            metrics_open: true,
            next_metrics_id: -1,
            metrics_errors: Throttle::new(Duration::from_secs(60)),
            rejected: Throttle::new(Duration::from_secs(10)),
            pacer: Pacer::new(Instant::now()),
            pacing_notice: Throttle::new(Duration::from_secs(60)),
            stop,
            deadline: None,
            backoff: Backoff::new(BACKOFF_BASE, BACKOFF_CAP),
            ever_connected: false,
            last_failure: None,
        }
    }

    /// Runs until `stop` has fired and the buffer is flushed (or the
    /// flush time is up). Fails only on a permanent error before the first
    /// successful connection.
    pub async fn run(mut self) -> Result<(), ConnectError> {
        loop {
            if self.deadline.is_some() && self.shared.buffer().is_empty() {
                return Ok(());
            }
            let attempt = tokio::select! {
                biased;
                _ = self.stop.cancelled(), if self.deadline.is_none() => {
                    self.begin_flush();
                    continue;
                }
                _ = sleep_until(or_far(self.deadline)), if self.deadline.is_some() => {
                    return Ok(());
                }
                r = connect(&self.url, &self.auth, &self.trust) => r,
            };
            let result = match attempt {
                Ok((mut ws, welcome)) => match choose_team(self.team.as_deref(), &welcome) {
                    Ok(team) => {
                        let started = Instant::now();
                        let end = self.session(&mut ws, team, &welcome).await;
                        let requeued = self.shared.buffer().requeue_in_flight();
                        match end {
                            SessionEnd::Flushed | SessionEnd::Deadline => return Ok(()),
                            SessionEnd::Lost(reason) => {
                                tracing::warn!(
                                    %reason,
                                    unacked = requeued,
                                    "lost the connection to the hub; reconnecting"
                                );
                            }
                        }
                        if started.elapsed() >= STABLE_AFTER {
                            self.backoff.reset();
                        }
                        Ok(())
                    }
                    Err(e) => {
                        let _ = timeout(Duration::from_millis(500), ws.close(None)).await;
                        Err(ConnectError::from(e))
                    }
                },
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                if e.permanent() && !self.ever_connected {
                    return Err(e);
                }
                // Each new reason once; a repeat of the same outage is
                // not news.
                let msg = e.to_string();
                if self.last_failure.as_deref() != Some(msg.as_str()) {
                    if e.permanent() {
                        // Worked before, so the hub's setup changed (a new
                        // key, fewer teams): keep buffering, and say so loudly.
                        tracing::error!(
                            error = %msg,
                            hub = %self.url,
                            "the hub refuses the agent; retrying"
                        );
                    } else {
                        tracing::warn!(
                            error = %msg,
                            hub = %self.url,
                            "cannot connect to the hub; retrying"
                        );
                    }
                    self.last_failure = Some(msg);
                }
            }
            let delay = self.backoff.next_delay();
            tracing::debug!(
                delay_ms = delay.as_millis() as u64,
                "reconnecting after a delay"
            );
            tokio::select! {
                biased;
                _ = self.stop.cancelled(), if self.deadline.is_none() => self.begin_flush(),
                _ = sleep_until(or_far(self.deadline)), if self.deadline.is_some() => {}
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    fn begin_flush(&mut self) {
        let held = self.shared.buffer().len();
        tracing::info!(buffered = held, "stopping: flushing buffered log lines");
        self.deadline = Some(Instant::now() + FLUSH_TIMEOUT);
    }

    /// One connected session: publishes until the connection is lost or
    /// the flush is over.
    async fn session(&mut self, ws: &mut Ws, team: String, welcome: &Welcome) -> SessionEnd {
        // Cannot fail: a string serializes.
        let team_json = serde_json::to_string(&team).expect("a string serializes");
        tracing::info!(
            hub = %self.url,
            session = %welcome.session,
            team = %team,
            "connected to the hub"
        );
        self.team = Some(team);
        self.ever_connected = true;
        self.last_failure = None;
        let hb = welcome.heartbeat_s.unwrap_or(DEFAULT_HEARTBEAT_S).max(1);
        let silence = Duration::from_secs(2 * hb + 5);
        let mut last_rx = Instant::now();
        // The newest snapshot goes out at once; older ones were never kept.
        let mut metrics_due = self.metrics.borrow().is_some();
        loop {
            let window = self.pacer.window(MAX_IN_FLIGHT);
            let allowance = self.pacer.allowance(Instant::now());
            let batch = {
                let mut b = self.shared.buffer();
                let room = window.saturating_sub(b.in_flight());
                b.take(room.min(allowance))
            };
            self.pacer.spend(batch.len());
            for (id, data) in &batch {
                let id = i64::try_from(*id).unwrap_or(i64::MAX);
                let frame = publish_frame(id, &team_json, "logs", data);
                if let Err(e) = write(ws.feed(Message::text(frame))).await {
                    return SessionEnd::Lost(e);
                }
            }
            if metrics_due {
                metrics_due = false;
                let snapshot = self.metrics.borrow_and_update().clone();
                if let Some(data) = snapshot {
                    let id = self.next_metrics_id;
                    self.next_metrics_id = self.next_metrics_id.saturating_sub(1);
                    let frame = publish_frame(id, &team_json, "metrics", &data);
                    if let Err(e) = write(ws.feed(Message::text(frame))).await {
                        return SessionEnd::Lost(e);
                    }
                }
            }
            if let Err(e) = write(ws.flush()).await {
                return SessionEnd::Lost(e);
            }
            let (empty, room, pending) = {
                let b = self.shared.buffer();
                (b.is_empty(), b.in_flight() < window, b.has_pending())
            };
            if self.deadline.is_some() && empty {
                close_gracefully(ws).await;
                return SessionEnd::Flushed;
            }
            // Paced and out of tokens: wake when the next one is due.
            let now = Instant::now();
            let paced_out = self.pacer.allowance(now) == 0;
            let next_token = self.pacer.next_at(now);
            let can_send = room && !paced_out;
            tokio::select! {
                biased;
                _ = self.stop.cancelled(), if self.deadline.is_none() => self.begin_flush(),
                _ = sleep_until(or_far(self.deadline)), if self.deadline.is_some() => {
                    return SessionEnd::Deadline;
                }
                msg = ws.next() => {
                    last_rx = Instant::now();
                    if let Some(end) = self.on_message(msg) {
                        return end;
                    }
                }
                _ = self.shared.wake.notified(), if can_send => {}
                changed = self.metrics.changed(), if self.metrics_open => match changed {
                    Ok(()) => metrics_due = true,
                    // The sampler thread is gone; it logged why.
                    Err(_) => self.metrics_open = false,
                },
                _ = sleep_until(or_far(next_token)), if room && pending && paced_out => {}
                _ = sleep_until(last_rx + silence) => {
                    let secs = silence.as_secs();
                    return SessionEnd::Lost(format!("nothing from the hub for {secs} s"));
                }
            }
        }
    }

    fn on_message(&mut self, msg: Option<Result<Message, WsError>>) -> Option<SessionEnd> {
        let text = match msg {
            None => return Some(SessionEnd::Lost("the connection ended".into())),
            Some(Err(e)) => return Some(SessionEnd::Lost(e.to_string())),
            Some(Ok(Message::Close(frame))) => {
                let why = frame.map_or_else(
                    || "no close code".to_string(),
                    |f| format!("{} {}", u16::from(f.code), f.reason),
                );
                return Some(SessionEnd::Lost(format!(
                    "the hub closed the connection: {why}"
                )));
            }
            Some(Ok(Message::Text(t))) => t,
            // Pings are answered by tungstenite as it reads.
            Some(Ok(_)) => return None,
        };
        let frame = match serde_json::from_str::<ServerFrame>(&text) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(error = %e, "ignoring a frame the agent does not understand");
                return None;
            }
        };
        match frame {
            ServerFrame::Published { id: Some(id) } if id > 0 => {
                self.shared.buffer().ack(id as u64);
                self.pacer.on_ack(Instant::now());
            }
            ServerFrame::Error {
                id: Some(id),
                code,
                message,
            } if id > 0 => {
                // Refused for now, not for what it is: kept, sent again
                // (the hub's broker is down, or the hub rate limits).
                if code == "rate_limited" || code == "unavailable" {
                    self.shared.buffer().retry(id as u64);
                    if let Some(rate) = self.pacer.on_refusal(Instant::now()) {
                        let rate = rate.round() as u64;
                        if let Some(held) = self.pacing_notice.ready() {
                            tracing::warn!(
                                lines_per_s = rate,
                                cuts_since_last = held,
                                "the hub is rate limiting this agent; pacing log lines"
                            );
                        } else {
                            tracing::debug!(lines_per_s = rate, "pacing log lines");
                        }
                    }
                } else if self.shared.buffer().reject(id as u64) {
                    if let Some(suppressed) = self.rejected.ready() {
                        tracing::warn!(
                            %code,
                            %message,
                            similar_since_last = suppressed,
                            "the hub refused a log line; dropped it"
                        );
                    }
                }
            }
            ServerFrame::Error {
                id: Some(_),
                code,
                message,
            } => {
                // A snapshot refused for rate is replaced by the next tick's.
                if code != "rate_limited" {
                    if let Some(suppressed) = self.metrics_errors.ready() {
                        tracing::warn!(
                            %code,
                            %message,
                            similar_since_last = suppressed,
                            "the hub refused a metrics snapshot"
                        );
                    }
                }
            }
            ServerFrame::Error {
                id: None,
                code,
                message,
            } => tracing::warn!(%code, %message, "error from the hub"),
            ServerFrame::Lagged { stream } => {
                return Some(SessionEnd::Lost(format!(
                    "the hub reported `lagged` on {stream}"
                )));
            }
            ServerFrame::Published { .. } | ServerFrame::Welcome(_) | ServerFrame::Other => {}
        }
        None
    }
}

/// Sends a normal close and waits (briefly) for the hub's reply, so the
/// hub sees a clean close rather than a lost connection.
async fn close_gracefully(ws: &mut Ws) {
    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "agent stopping".into(),
    };
    let _ = timeout(Duration::from_millis(500), async {
        ws.close(Some(close)).await?;
        // The hub's close frame completes the handshake.
        while let Some(msg) = ws.next().await {
            if let Message::Close(_) = msg? {
                break;
            }
        }
        Ok::<(), WsError>(())
    })
    .await;
}

/// Bounds a write or flush by [`WRITE_TIMEOUT`].
async fn write(op: impl std::future::Future<Output = Result<(), WsError>>) -> Result<(), String> {
    match timeout(WRITE_TIMEOUT, op).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "a write made no progress for {} s",
            WRITE_TIMEOUT.as_secs()
        )),
    }
}

/// `at`, or a time so far away that a `select!` branch on it never fires.
fn or_far(at: Option<Instant>) -> Instant {
    at.unwrap_or_else(|| Instant::now() + Duration::from_secs(86400 * 365))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_frames_are_the_protocol_op() {
        let f = publish_frame(7, "\"pay\"", "logs", r#"{"level":"INFO","message":"m"}"#);
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["op"], "publish");
        assert_eq!(v["id"], 7);
        assert_eq!(v["team"], "pay");
        assert_eq!(v["stream"], "logs");
        assert_eq!(v["data"]["message"], "m");
    }
}

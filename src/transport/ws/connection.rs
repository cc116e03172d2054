//! One WebSocket connection on its socket: the reader and the writer
//! polled together, and the session loop between them.
//!
//! The writer (`Outbound`) writes what the session's mailbox queues. The
//! session reads ([`Inbound`]) and is a single `select!` over: shutdown,
//! the auth deadline, the token's expiry, the heartbeat and the client's
//! next frame, which it hands to the [`Session`]; it queues what the
//! session answers in the mailbox too, so it never waits on the socket,
//! and it never awaits another session. A client that stops reading is
//! cut off when it stops answering pings (or when its queue overflows).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::inbound::{Inbound, Message, ReadError};
use super::outbound::{Ended, Outbound};
use super::wire::WsWire;
use crate::hub::Control;
use crate::metrics::GaugeGuard;
use crate::protocol::{close, ErrorCode};
use crate::session::{Outcome, Session};

/// What the loop does after handling a frame.
enum Flow {
    Continue,
    Close(u16, String),
    /// The writer is done: it sent a close (lagged: 4008), or the
    /// connection went.
    Ended(Ended),
    /// The socket is gone or unwritable: drop it without a close frame.
    Abort,
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86400 * 365)
}

pub struct Connection {
    session: Session,
    started: Instant,
    /// Text and binary messages from the client.
    frames_received: u64,
    /// The client sent its close frame.
    peer_closed: bool,
    last_pong: Instant,
    /// How long a reply may wait for a client that does not read.
    write_timeout: Duration,
}

impl Connection {
    pub fn new(session: Session) -> Connection {
        let hb = session.state.config.websocket.heartbeat_s;
        Connection {
            session,
            started: Instant::now(),
            frames_received: 0,
            peer_closed: false,
            last_pong: Instant::now(),
            write_timeout: Duration::from_secs(2 * hb),
        }
    }

    pub fn name(&self) -> &str {
        &self.session.name
    }

    /// Runs the connection on `io` until it ends; `buffered` is what the
    /// client sent after its handshake, already read; `deflate`: the
    /// handshake negotiated permessage-deflate.
    pub async fn run(mut self, io: TcpStream, buffered: BytesMut, origin_ok: bool, deflate: bool) {
        // Frames go out as they are made: no Nagle delay on a burst.
        let _ = io.set_nodelay(true);
        let _compressed =
            deflate.then(|| GaugeGuard::inc(&self.session.state.metrics.compressed_ws));
        let wire = Arc::new(WsWire::new(io, deflate));
        let mailbox = self.session.mailbox().clone();
        mailbox.attach_wire(wire.clone());
        let io = wire.io();
        let mut inbound = Inbound::new(&buffered, self.session.frame_limit()).with_deflate(deflate);
        drop(buffered);
        let mut writer = Outbound::new(self.session.state.clone(), mailbox.clone(), deflate);
        let flow = {
            let session = async {
                if origin_ok {
                    self.event_loop(&mut inbound, io).await
                } else {
                    let out = self.session.close_with_error(
                        ErrorCode::Forbidden,
                        "origin not allowed (websocket.allowed_origins)",
                        close::POLICY,
                    );
                    Box::pin(self.apply(out)).await
                }
            };
            tokio::select! {
                biased;
                ended = writer.run(io) => Flow::Ended(ended),
                flow = session => flow,
            }
        };
        // Whether our close frame went out (then the close handshake is
        // finished before the socket is).
        let (code, reason, closed) = match flow {
            Flow::Close(code, reason) => {
                // The writer sends the close after what is queued; give it
                // a moment, so shutdown does not outrun it.
                let ended = if mailbox.push_control_all([Control::Close(code, reason.clone())]) {
                    tokio::time::timeout(Duration::from_secs(1), writer.run(io))
                        .await
                        .ok()
                } else {
                    None
                };
                let closed = matches!(ended, Some(Ended::Closed(..)));
                if !closed {
                    mailbox.abort();
                }
                (code.to_string(), reason, closed)
            }
            Flow::Ended(Ended::Closed(code, reason)) => (code.to_string(), reason, true),
            Flow::Abort | Flow::Continue | Flow::Ended(_) => {
                mailbox.abort();
                ("abnormal".to_string(), "connection lost".to_string(), false)
            }
        };
        // Nothing more is queued for this connection while it lingers.
        mailbox.close();
        self.record_close(&code, &reason);
        if closed && !self.peer_closed {
            linger(io, &mut inbound).await;
        }
    }

    /// The close's metric, span and log line.
    fn record_close(&self, code: &str, reason: &str) {
        let mailbox = self.session.mailbox();
        let frames_sent = mailbox.sent();
        let label = match code {
            "1000" | "1001" | "1002" | "1003" | "1007" | "1008" | "1009" | "1011" | "1012"
            | "4008" | "abnormal" => code,
            _ => "other",
        };
        self.session
            .state
            .metrics
            .disconnections_total
            .with_label_values(&[label])
            .inc();
        let duration_ms = self.started.elapsed().as_millis() as u64;
        let span = tracing::info_span!(
            "ws.close",
            otel.name = "ws close",
            "opswire.session_id" = %self.session.name,
            "websocket.close.code" = %code,
            "websocket.close.reason" = reason,
            "opswire.duration_ms" = duration_ms,
            "opswire.frames_sent" = frames_sent,
            "opswire.frames_received" = self.frames_received,
            "opswire.frames_dropped" = mailbox.conflated(),
        );
        let _ = span.set_parent(self.session.parent.clone());
        span.in_scope(|| {
            tracing::info!(
                session = %self.session.name,
                code = %code,
                reason,
                duration_ms,
                frames_sent,
                frames_received = self.frames_received,
                "websocket closed"
            );
        });
    }

    async fn event_loop(&mut self, stream: &mut Inbound, io: &TcpStream) -> Flow {
        let state = self.session.state.clone();
        let cfg = &state.config.websocket;
        let shutdown = state.shutdown.clone();
        if let Some(welcome) = self.session.welcome(None) {
            if let Flow::Abort = Box::pin(self.apply(Outcome::reply(welcome))).await {
                return Flow::Abort;
            }
        }
        // Less time to authenticate when slots are scarce.
        let busy = state.connections.busy();
        let auth_timeout = if busy {
            Duration::from_millis(cfg.auth_timeout_busy_ms)
                .min(Duration::from_secs(cfg.auth_timeout_s))
        } else {
            Duration::from_secs(cfg.auth_timeout_s)
        };
        let auth_deadline = tokio::time::Instant::now() + auth_timeout;
        let hb = Duration::from_secs(cfg.heartbeat_s);
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + hb, hb);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // A connection lives no longer than its token: clients send a
            // fresh `auth` op before `exp` to stay connected.
            let expiry = self.session.token_expiry();
            let flow = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Flow::Close(close::RESTART, "server shutting down".into()),
                _ = tokio::time::sleep_until(expiry.unwrap_or_else(far_future)), if expiry.is_some() => {
                    let out = self.session.close_with_error(ErrorCode::Unauthenticated, "token expired", close::POLICY);
                    Box::pin(self.apply(out)).await
                }
                _ = tokio::time::sleep_until(auth_deadline), if self.session.principal().is_none() => {
                    let message = if busy {
                        format!("no auth op within {} ms (the server is near its connection limit)", auth_timeout.as_millis())
                    } else {
                        format!("no auth op within {} s", auth_timeout.as_secs())
                    };
                    let out = self.session.close_with_error(ErrorCode::Unauthenticated, &message, close::POLICY);
                    Box::pin(self.apply(out)).await
                }
                _ = heartbeat.tick() => {
                    if self.last_pong.elapsed() > 2 * hb {
                        tracing::debug!(session = %self.session.name, "heartbeat timeout");
                        Flow::Abort
                    } else if self.queue(vec![Control::Ping(Bytes::new())]).await.is_ok() {
                        Flow::Continue
                    } else {
                        Flow::Abort
                    }
                }
                // Boxed: op handling is rare next to frames going out, and
                // inlining its future would make every idle session's task
                // several KiB bigger.
                msg = stream.recv(io) => Box::pin(self.on_message(msg)).await,
            };
            // An `auth` op may have raised the limit.
            stream.set_limit(self.session.frame_limit());
            if !matches!(flow, Flow::Continue) {
                return flow;
            }
        }
    }

    async fn on_message(&mut self, msg: Option<Result<Message, ReadError>>) -> Flow {
        let msg = match msg {
            None => return Flow::Abort,
            Some(Ok(msg)) => msg,
            Some(Err(e)) => return self.on_read_error(e).await,
        };
        let out = match msg {
            Message::Text(text) => {
                self.frames_received += 1;
                self.session.on_text(&text)
            }
            Message::Binary => {
                self.frames_received += 1;
                self.session.on_binary()
            }
            Message::Ping(bytes) => {
                // A sign of life even when over budget (a flood still
                // ends by its strikes); pings cost a write each, so
                // refused ones go unanswered.
                self.last_pong = Instant::now();
                if let Some(out) = self.session.charge(None, false) {
                    return self.apply(out).await;
                }
                return match self.queue(vec![Control::Pong(bytes)]).await {
                    Ok(()) => Flow::Continue,
                    Err(()) => Flow::Abort,
                };
            }
            Message::Pong => {
                // A sign of life even when over budget.
                self.last_pong = Instant::now();
                self.session.charge(None, false).unwrap_or_default()
            }
            // Parts cost a read each, whatever they carry.
            Message::Fragment => self.session.charge(None, false).unwrap_or_default(),
            Message::Close(reason) => {
                self.peer_closed = true;
                // Echo the client's code; the metric label stays bounded.
                let code = reason.as_ref().map_or(close::NORMAL, |r| u16::from(r.code));
                let text = reason.and_then(|r| r.description).unwrap_or_default();
                // Only codes RFC 6455 allows on the wire are echoed.
                let code = match code {
                    1000..=1003 | 1007..=1014 | 3000..=4999 => code,
                    _ => close::NORMAL,
                };
                return Flow::Close(code, text);
            }
        };
        self.apply(out).await
    }

    /// What the reader gave up on: an error frame that says what was
    /// wrong and the close RFC 6455 gives for it, or nothing when the
    /// peer is gone.
    async fn on_read_error(&mut self, e: ReadError) -> Flow {
        let Some(code) = e.close_code() else {
            // The peer went away without a close frame (EOF, reset).
            tracing::debug!(session = %self.session.name, error = %e, "websocket connection lost");
            return Flow::Abort;
        };
        tracing::debug!(session = %self.session.name, error = %e, code, "websocket read refused");
        let (error, message) = match &e {
            ReadError::InflatesTooLarge { max } => (
                ErrorCode::TooLarge,
                format!(
                    "compressed message inflates past {max} bytes ({})",
                    self.limit_name()
                ),
            ),
            ReadError::TooLarge { max } => (
                ErrorCode::TooLarge,
                format!("frame larger than {max} bytes ({})", self.limit_name()),
            ),
            other => (ErrorCode::BadRequest, other.to_string()),
        };
        let out = self.session.close_with_error(error, &message, code);
        self.apply(out).await
    }

    /// The setting that limits the client's frames now.
    fn limit_name(&self) -> &'static str {
        if self.session.principal().is_some() {
            "limits.max_frame_bytes"
        } else {
            "limits.max_auth_frame_bytes, before auth"
        }
    }

    /// Queues an outcome's replies, then closes if it says so.
    async fn apply(&mut self, out: Outcome) -> Flow {
        let replies: Vec<Control> = out.replies.into_iter().map(Control::Text).collect();
        // Even with nothing to send: a subscribe's hold ends here.
        if self.queue(replies).await.is_err() {
            return Flow::Abort;
        }
        match out.close {
            Some((code, reason)) => Flow::Close(code, reason),
            None => Flow::Continue,
        }
    }

    /// Queues frames for the writer (it never waits on the socket), all at
    /// once (a `subscribed` reply is never split from its replay by a live
    /// frame) and ending a hold; while the writer is behind, waits for it
    /// (at most the write timeout: two heartbeats, like a missed pong).
    /// Err when the writer is gone or the client has stopped reading.
    async fn queue(&mut self, frames: Vec<Control>) -> Result<(), ()> {
        let mailbox = self.session.mailbox().clone();
        let deadline = tokio::time::Instant::now() + self.write_timeout;
        // Only this loop waits for room; a late reply (`push_late`) may
        // go past the cap, which is bounded by the session.
        while !frames.is_empty() && mailbox.control_full() {
            if tokio::time::timeout_at(deadline, mailbox.drained())
                .await
                .is_err()
            {
                return Err(());
            }
        }
        if frames.is_empty() {
            mailbox.release();
            return Ok(());
        }
        mailbox.push_control_all(frames).then_some(()).ok_or(())
    }
}

/// After our close frame: send FIN, then wait (at most a second) for the
/// client's close frame or its FIN, and close the socket; the server
/// closes first, as RFC 6455 §7.1.1 asks, and what the client sent
/// meanwhile is read, so the close does not turn into a reset.
async fn linger(io: &TcpStream, inbound: &mut Inbound) {
    let _ = socket2::SockRef::from(io).shutdown(std::net::Shutdown::Write);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match inbound.recv(io).await {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
}

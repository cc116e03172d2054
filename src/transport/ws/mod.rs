//! The WebSocket transport.
//!
//! The handshake is an ordinary actix-web request (`GET /ws`: routing,
//! middleware, the HTTP span, auth, origin, limits). What it answers with
//! is handed to [`upgrade`], which runs outside actix-http's HTTP/1
//! dispatcher: it writes the `101` and runs the connection on the bare
//! socket, so a connection holds no HTTP buffers and no dispatcher, and
//! the hub can write metrics frames to the socket directly.
//!
//! A connection is one future with two halves polled together. The writer
//! ([`outbound::Outbound`]) writes what the session's mailbox queues. The
//! session reads ([`inbound::Inbound`]) and is a single `select!` over:
//! shutdown, the auth deadline, the token's expiry, the heartbeat and the
//! client's next message. It queues its replies in the mailbox too, so it
//! never waits on the socket, and it never awaits another session. A
//! client that stops reading is cut off when it stops answering pings (or
//! when its queue overflows).

pub mod inbound;
mod outbound;
pub mod upgrade;
mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::BoxBody;
use actix_web::http::header;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::app::{AppState, ConnectionGuard};
use crate::auth::{AuthError, Principal, Scope};
use crate::budget::{ConnectionBudget, Verdict};
use crate::hub::{Control, HubError, Mailbox, Push, SessionHandle, TeamId};
use crate::protocol::{
    close, parse_inbound, to_frame, ErrorCode, ErrorFrame, HostSnapshot, HostSource, LogRecord, Op,
    PublishOp, Reply, SilenceOp, Stream, SERVER_NAME, SUBPROTOCOL,
};
use crate::request::{http_error, origin_allowed, principal_from_request};
use crate::time::now_micros;
use crate::transport::session_name;

use inbound::{Inbound, Message, ReadError};
use outbound::{Ended, Outbound};
use tokio::net::TcpStream;
use wire::WsWire;

/// `GET /ws`: checks capacity, the `Authorization` header and origin, then
/// answers `101` with the prepared connection attached, for [`upgrade`]
/// to run on the socket.
pub async fn handler(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let m = &state.metrics;
    let name = session_name();
    // Upgrade + header auth. Runs inside the HTTP request span (which
    // continues a client `traceparent`); every later span of this
    // connection is parented here, so one trace tells its whole story
    // without a span open for the connection's lifetime.
    let handshake = tracing::info_span!(
        "ws.handshake",
        otel.name = "ws handshake",
        "network.protocol.name" = "websocket",
        "opswire.session_id" = %name,
        "opswire.auth" = Empty,
        "opswire.sub" = Empty,
        "opswire.teams" = Empty,
        "opswire.result" = Empty,
    );
    let _entered = handshake.enter();
    if state.is_draining() {
        handshake.record("opswire.result", "draining");
        return Ok(http_error(
            ErrorCode::Unavailable,
            "server is shutting down",
        ));
    }
    if req.version() != actix_web::http::Version::HTTP_11 {
        // RFC 6455 §4.1: the opening handshake is HTTP/1.1 (or later).
        handshake.record("opswire.result", "rejected_handshake");
        return Ok(http_error(
            ErrorCode::BadRequest,
            "a WebSocket upgrade needs HTTP/1.1",
        ));
    }
    let principal = match principal_from_request(&state, &req, None) {
        Ok(p) => p,
        Err(e) => {
            handshake.record("opswire.auth", "header");
            handshake.record("opswire.result", "rejected_auth");
            m.connections_total
                .with_label_values(&["rejected_auth"])
                .inc();
            return Ok(http_error(ErrorCode::Unauthenticated, e.to_string()));
        }
    };
    // A client that has yet to authenticate takes one of the slots kept
    // for such clients too: they can never crowd out authenticated ones.
    let admitted = match principal {
        Some(_) => state.connections.try_acquire(),
        None => state.connections.try_acquire_unauthenticated(),
    };
    let guard = match admitted {
        Ok(g) => g,
        Err(refused) => {
            handshake.record("opswire.result", "rejected_limit");
            m.connections_total
                .with_label_values(&["rejected_limit"])
                .inc();
            return Ok(http_error(ErrorCode::Unavailable, refused.message()));
        }
    };
    let header_auth = req.headers().contains_key(header::AUTHORIZATION);
    handshake.record(
        "opswire.auth",
        match (&principal, header_auth) {
            (Some(_), true) => "header",
            (Some(_), false) => "anonymous",
            (None, _) => "first_frame",
        },
    );
    if let Some(p) = &principal {
        handshake.record("opswire.sub", p.sub.as_str());
        handshake.record(
            "opswire.teams",
            p.visible_teams(state.hub.team_names()).join(","),
        );
    }
    let origin_ok = origin_allowed(&req, &state.config.websocket.allowed_origins);
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut response = match actix_http::ws::handshake(req.head()) {
        Ok(r) => r,
        Err(e) => {
            handshake.record("opswire.result", "rejected_handshake");
            return Ok(http_error(
                ErrorCode::BadRequest,
                format!("websocket handshake: {e}"),
            ));
        }
    };
    if req.extensions().get::<upgrade::UpgradePath>().is_none() {
        // Valid for `ws::handshake`, yet not an upgrade to HTTP/1's parser
        // (say `Upgrade: websocket, foo`): no socket to take over.
        handshake.record("opswire.result", "rejected_upgrade");
        return Ok(http_error(
            ErrorCode::BadRequest,
            "a WebSocket upgrade needs `Connection: Upgrade` and `Upgrade: websocket`",
        ));
    }
    if offers_subprotocol(&req) {
        response.insert_header((header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL));
    }
    let outcome = if origin_ok {
        "accepted"
    } else {
        "rejected_origin"
    };
    m.connections_total.with_label_values(&[outcome]).inc();
    handshake.record("opswire.result", outcome);
    let mut conn = Connection::new(state.into_inner(), name, principal, guard);
    conn.parent = handshake.context();
    tracing::debug!(session = %conn.name, user_agent, "websocket connected");
    let mut response = HttpResponse::from(response.message_body(BoxBody::new(()))?);
    response
        .extensions_mut()
        .insert(Accepted { conn, origin_ok });
    Ok(response)
}

/// A connection the `/ws` handler accepted, riding on its `101` response
/// to [`upgrade`], which runs it on the socket.
pub struct Accepted {
    conn: Connection,
    origin_ok: bool,
}

impl Accepted {
    /// Runs the connection on `io` until it ends; `buffered` is what the
    /// client sent after its handshake, already read.
    pub async fn run(self, io: TcpStream, buffered: BytesMut) {
        self.conn.run(io, buffered, self.origin_ok).await
    }
}

/// Whether the client offered opswire's subprotocol (then it is echoed).
fn offers_subprotocol(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL)
}

/// What the loop does after handling a message.
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

struct Connection {
    state: std::sync::Arc<AppState>,
    name: String,
    /// The handshake span's context: parent of every op and of the close.
    parent: opentelemetry::Context,
    started: Instant,
    frames_received: u64,
    /// The client sent its close frame.
    peer_closed: bool,
    /// The error code of the op being handled, for its span.
    op_error: Option<ErrorCode>,
    principal: Option<Principal>,
    /// The session's queue, drained by the writer.
    mailbox: Arc<Mailbox>,
    hub: SessionHandle,
    /// What the client may still send (every frame costs).
    budget: ConnectionBudget,
    /// The token's subject, whose budget every op shares with the
    /// subject's other connections (None: anonymous or not yet known).
    subject: Option<Arc<str>>,
    last_pong: Instant,
    /// How long a reply may wait for a client that does not read.
    write_timeout: Duration,
    guard: ConnectionGuard,
}

impl Connection {
    fn new(
        state: std::sync::Arc<AppState>,
        name: String,
        principal: Option<Principal>,
        guard: ConnectionGuard,
    ) -> Connection {
        let hub = state.hub.open_session();
        let budget = ConnectionBudget::new(&state.config.limits);
        let subject = principal
            .as_ref()
            .filter(|p| !p.anonymous)
            .map(|p| Arc::from(p.sub.as_str()));
        let write_timeout = Duration::from_secs(2 * state.config.websocket.heartbeat_s);
        Connection {
            state,
            name,
            parent: opentelemetry::Context::new(),
            started: Instant::now(),
            frames_received: 0,
            peer_closed: false,
            op_error: None,
            principal,
            mailbox: hub.mailbox().clone(),
            hub,
            budget,
            subject,
            last_pong: Instant::now(),
            write_timeout,
            guard,
        }
    }

    async fn run(mut self, io: TcpStream, buffered: BytesMut, origin_ok: bool) {
        // Frames go out as they are made: no Nagle delay on a burst.
        let _ = io.set_nodelay(true);
        let wire = Arc::new(WsWire(io));
        self.mailbox.attach_wire(wire.clone());
        let io = wire.io();
        let mut inbound = Inbound::new(&buffered, self.frame_limit());
        drop(buffered);
        let mut writer = Outbound::new(self.state.clone(), self.mailbox.clone());
        let flow = {
            let session = async {
                if origin_ok {
                    self.event_loop(&mut inbound, io).await
                } else {
                    Box::pin(self.close_with_error(
                        ErrorCode::Forbidden,
                        "origin not allowed (websocket.allowed_origins)",
                        close::POLICY,
                    ))
                    .await
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
                let ended = if self
                    .mailbox
                    .push_control_all([Control::Close(code, reason.clone())])
                {
                    tokio::time::timeout(Duration::from_secs(1), writer.run(io))
                        .await
                        .ok()
                } else {
                    None
                };
                let closed = matches!(ended, Some(Ended::Closed(..)));
                if !closed {
                    self.mailbox.abort();
                }
                (code.to_string(), reason, closed)
            }
            Flow::Ended(Ended::Closed(code, reason)) => (code.to_string(), reason, true),
            Flow::Abort | Flow::Continue | Flow::Ended(_) => {
                self.mailbox.abort();
                ("abnormal".to_string(), "connection lost".to_string(), false)
            }
        };
        // Nothing more is queued for this connection while it lingers.
        self.mailbox.close();
        self.record_close(&code, &reason);
        if closed && !self.peer_closed {
            linger(io, &mut inbound).await;
        }
    }

    /// The close's metric, span and log line.
    fn record_close(&self, code: &str, reason: &str) {
        let frames_sent = self.mailbox.sent();
        let label = match code {
            "1000" | "1001" | "1002" | "1003" | "1007" | "1008" | "1009" | "1011" | "1012"
            | "4008" | "abnormal" => code,
            _ => "other",
        };
        self.state
            .metrics
            .disconnections_total
            .with_label_values(&[label])
            .inc();
        let duration_ms = self.started.elapsed().as_millis() as u64;
        let span = tracing::info_span!(
            "ws.close",
            otel.name = "ws close",
            "opswire.session_id" = %self.name,
            "websocket.close.code" = %code,
            "websocket.close.reason" = reason,
            "opswire.duration_ms" = duration_ms,
            "opswire.frames_sent" = frames_sent,
            "opswire.frames_received" = self.frames_received,
            "opswire.frames_dropped" = self.hub.mailbox().conflated(),
        );
        let _ = span.set_parent(self.parent.clone());
        span.in_scope(|| {
            tracing::info!(
                session = %self.name,
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
        let cfg = self.state.config.clone();
        let shutdown = self.state.shutdown.clone();
        if self.principal.is_some() {
            if let Flow::Abort = Box::pin(self.send_welcome(None)).await {
                return Flow::Abort;
            }
        }
        // Less time to authenticate when slots are scarce.
        let busy = self.state.connections.busy();
        let auth_timeout = if busy {
            Duration::from_millis(cfg.websocket.auth_timeout_busy_ms)
                .min(Duration::from_secs(cfg.websocket.auth_timeout_s))
        } else {
            Duration::from_secs(cfg.websocket.auth_timeout_s)
        };
        let auth_deadline = tokio::time::Instant::now() + auth_timeout;
        let hb = Duration::from_secs(cfg.websocket.heartbeat_s);
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + hb, hb);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // A connection lives no longer than its token: clients send a
            // fresh `auth` op before `exp` to stay connected.
            let expiry = self.token_expiry();
            let flow = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Flow::Close(close::RESTART, "server shutting down".into()),
                _ = tokio::time::sleep_until(expiry.unwrap_or_else(far_future)), if expiry.is_some() => {
                    Box::pin(self.close_with_error(ErrorCode::Unauthenticated, "token expired", close::POLICY)).await
                }
                _ = tokio::time::sleep_until(auth_deadline), if self.principal.is_none() => {
                    let message = if busy {
                        format!("no auth op within {} ms (the server is near its connection limit)", auth_timeout.as_millis())
                    } else {
                        format!("no auth op within {} s", auth_timeout.as_secs())
                    };
                    Box::pin(self.close_with_error(ErrorCode::Unauthenticated, &message, close::POLICY)).await
                }
                _ = heartbeat.tick() => {
                    if self.last_pong.elapsed() > 2 * hb {
                        tracing::debug!(session = %self.name, "heartbeat timeout");
                        Flow::Abort
                    } else if self.queue(Control::Ping(Bytes::new())).await.is_ok() {
                        Flow::Continue
                    } else {
                        Flow::Abort
                    }
                }
                // Boxed: op handling (auth, silence via HTTP, publish) is
                // rare next to frames going out, and inlining its future
                // would make every idle session's task several KiB bigger.
                msg = stream.recv(io) => Box::pin(self.on_message(msg)).await,
            };
            // An `auth` op may have raised the limit.
            stream.set_limit(self.frame_limit());
            if !matches!(flow, Flow::Continue) {
                return flow;
            }
        }
    }

    /// The largest message the client may send now: what an `auth` op
    /// needs until it has authenticated.
    fn frame_limit(&self) -> usize {
        let l = &self.state.config.limits;
        if self.principal.is_some() {
            l.max_frame_bytes
        } else {
            l.max_auth_frame_bytes.min(l.max_frame_bytes)
        }
    }

    /// When the current token expires (None: anonymous, or no token yet).
    fn token_expiry(&self) -> Option<tokio::time::Instant> {
        let exp = self.principal.as_ref()?.exp?;
        let left = crate::auth::time_left(exp, self.state.config.auth.leeway_s);
        Some(tokio::time::Instant::now() + left)
    }

    /// Queues a frame for the writer (it never waits on the socket). Err
    /// when the writer is gone or the client has stopped reading.
    async fn send(&mut self, frame: impl Into<ByteString>) -> Result<(), ()> {
        self.queue(Control::Text(frame.into())).await
    }

    /// Queues a control frame; while the writer is behind, waits for it
    /// (at most the write timeout: two heartbeats, like a missed pong).
    async fn queue(&mut self, c: Control) -> Result<(), ()> {
        let deadline = tokio::time::Instant::now() + self.write_timeout;
        // The session is the only producer of control frames, so room
        // seen here is still there at the push.
        while self.mailbox.control_full() {
            if tokio::time::timeout_at(deadline, self.mailbox.drained())
                .await
                .is_err()
            {
                return Err(());
            }
        }
        match self.mailbox.push_control(c) {
            Push::Queued => Ok(()),
            Push::Full | Push::Closed => Err(()),
        }
    }

    async fn reply(&mut self, reply: &Reply<'_>) -> Flow {
        let frame = to_frame(reply);
        self.count_out("control");
        match self.send(frame).await {
            Ok(()) => Flow::Continue,
            Err(()) => Flow::Abort,
        }
    }

    fn count_out(&self, kind: &str) {
        self.state
            .metrics
            .messages_total
            .with_label_values(&["out", kind])
            .inc();
    }

    async fn error(&mut self, id: Option<i64>, code: ErrorCode, message: &str) -> Flow {
        self.op_error = Some(code);
        self.state
            .metrics
            .errors_total
            .with_label_values(&[code.as_str()])
            .inc();
        self.count_out("error");
        match self
            .send(to_frame(&ErrorFrame::new(id, code, message)))
            .await
        {
            Ok(()) => Flow::Continue,
            Err(()) => Flow::Abort,
        }
    }

    async fn close_with_error(&mut self, code: ErrorCode, message: &str, close_code: u16) -> Flow {
        match self.error(None, code, message).await {
            Flow::Continue => Flow::Close(close_code, message.chars().take(100).collect()),
            other => other,
        }
    }

    async fn send_welcome(&mut self, id: Option<i64>) -> Flow {
        let Some(p) = &self.principal else {
            return Flow::Continue;
        };
        let frame = to_frame(&Reply::Welcome {
            id,
            epoch: self.state.hub.epoch(),
            session: &self.name,
            teams: p.visible_teams(self.state.hub.team_names()),
            streams: Stream::ALL,
            heartbeat_s: self.state.config.websocket.heartbeat_s,
            server: SERVER_NAME,
            sub: Some(&p.sub),
            scope: p.scope.as_str(),
        });
        self.count_out("welcome");
        match self.send(frame).await {
            Ok(()) => Flow::Continue,
            Err(()) => Flow::Abort,
        }
    }

    async fn on_message(&mut self, msg: Option<Result<Message, ReadError>>) -> Flow {
        let msg = match msg {
            None => return Flow::Abort,
            Some(Ok(msg)) => msg,
            Some(Err(e)) => return self.on_read_error(e).await,
        };
        if matches!(msg, Message::Text(_) | Message::Binary) {
            self.frames_received += 1;
        }
        match msg {
            Message::Text(text) => {
                let started = Instant::now();
                let flow = self.on_text(&text).await;
                self.state
                    .metrics
                    .message_duration
                    .observe(started.elapsed().as_secs_f64());
                flow
            }
            Message::Binary => {
                if let Some(flow) = self.rate_limit(None, true).await {
                    return flow;
                }
                self.error(
                    None,
                    ErrorCode::BadRequest,
                    "binary frames are not supported: send JSON text frames",
                )
                .await
            }
            Message::Ping(bytes) => {
                // Pings cost a write each: refused ones go unanswered.
                if let Some(flow) = self.rate_limit(None, false).await {
                    return flow;
                }
                self.last_pong = Instant::now();
                if self.queue(Control::Pong(bytes)).await.is_ok() {
                    Flow::Continue
                } else {
                    Flow::Abort
                }
            }
            Message::Pong => {
                if let Some(flow) = self.rate_limit(None, false).await {
                    return flow;
                }
                self.last_pong = Instant::now();
                Flow::Continue
            }
            // Parts cost a read each, whatever they carry.
            Message::Fragment => self.rate_limit(None, false).await.unwrap_or(Flow::Continue),
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
                Flow::Close(code, text)
            }
        }
    }

    /// What the reader gave up on: an error frame that says what was
    /// wrong and the close RFC 6455 gives for it, or nothing when the
    /// peer is gone.
    async fn on_read_error(&mut self, e: ReadError) -> Flow {
        let Some(code) = e.close_code() else {
            // The peer went away without a close frame (EOF, reset).
            tracing::debug!(session = %self.name, error = %e, "websocket connection lost");
            return Flow::Abort;
        };
        tracing::debug!(session = %self.name, error = %e, code, "websocket read refused");
        let (error, message) = match &e {
            ReadError::TooLarge { max } => {
                let what = if self.principal.is_some() {
                    "limits.max_frame_bytes"
                } else {
                    "limits.max_auth_frame_bytes, before auth"
                };
                (
                    ErrorCode::TooLarge,
                    format!("frame larger than {max} bytes ({what})"),
                )
            }
            other => (ErrorCode::BadRequest, other.to_string()),
        };
        self.close_with_error(error, &message, code).await
    }

    /// Charges one frame to the connection's budget (and, for an op, to
    /// its subject's). Over budget: a `rate_limited` error for an op, no
    /// answer for anything else; refused too often within a second:
    /// close 1008.
    async fn rate_limit(&mut self, id: Option<i64>, op: bool) -> Option<Flow> {
        let scope = self.principal.as_ref().map_or(Scope::Read, |p| p.scope);
        let subject = self
            .subject
            .as_ref()
            .filter(|_| op)
            .map(|s| (&self.state.subjects, s));
        match self.budget.charge(scope, subject) {
            Verdict::Allowed => None,
            Verdict::Exceeded => Some(
                self.close_with_error(
                    ErrorCode::RateLimited,
                    "rate limit exceeded repeatedly",
                    close::POLICY,
                )
                .await,
            ),
            Verdict::Refused if op => Some(
                self.error(id, ErrorCode::RateLimited, "too many ops: slow down")
                    .await,
            ),
            Verdict::Refused => {
                self.state
                    .metrics
                    .errors_total
                    .with_label_values(&[ErrorCode::RateLimited.as_str()])
                    .inc();
                Some(Flow::Continue)
            }
        }
    }

    /// Handles one text frame inside its own span: a child of the
    /// client's `traceparent` when the op carries one, else of the
    /// handshake.
    async fn on_text(&mut self, text: &str) -> Flow {
        let inbound = parse_inbound(text);
        let op_name = inbound.op.as_ref().map_or("invalid", |op| op.name());
        let span = tracing::info_span!(
            parent: None,
            "ws.op",
            otel.name = inbound.op.as_ref().map_or("ws invalid", |op| op.span_name()),
            otel.kind = "server",
            "messaging.system" = "opswire",
            "messaging.operation.type" = "process",
            "messaging.message.body.size" = text.len() as u64,
            "opswire.op" = op_name,
            "opswire.op_id" = inbound.id,
            "opswire.session_id" = %self.name,
            "opswire.team" = Empty,
            "opswire.result" = Empty,
        );
        let continued = inbound
            .traceparent
            .as_deref()
            .is_some_and(|tp| crate::telemetry::set_remote_parent(&span, tp));
        if !continued {
            let _ = span.set_parent(self.parent.clone());
        }
        self.op_error = None;
        let flow = self.handle_op(inbound).instrument(span.clone()).await;
        span.record("opswire.result", self.op_error.map_or("ok", |c| c.as_str()));
        flow
    }

    async fn handle_op(&mut self, inbound: crate::protocol::Inbound) -> Flow {
        let id = inbound.id;
        if let Some(flow) = self.rate_limit(id, true).await {
            return flow;
        }
        let op = match inbound.op {
            Ok(op) => op,
            Err(e) => {
                self.count_in("invalid");
                return self.error(id, e.code(), &e.to_string()).await;
            }
        };
        self.count_in(op.name());
        if self.principal.is_none() && !matches!(op, Op::Auth(_) | Op::Ping) {
            return self
                .close_with_error(
                    ErrorCode::Unauthenticated,
                    "authenticate first: {\"op\":\"auth\",\"token\":\"<jwt>\"}",
                    close::POLICY,
                )
                .await;
        }
        match op {
            Op::Auth(a) => self.on_auth(id, &a.token).await,
            Op::Ping => {
                self.reply(&Reply::Pong {
                    id,
                    ts: now_micros(),
                })
                .await
            }
            Op::Subscribe(s) => {
                let team = match self.authorize(&s.team) {
                    Ok(t) => t,
                    Err((code, msg)) => return self.error(id, code, &msg).await,
                };
                let filter = s.filter.logs.clone();
                let mut streams = s.streams.clone();
                streams.sort();
                streams.dedup();
                // Neither the replay the hub queues nor a live frame may
                // reach the socket before `subscribed`: hold the writer
                // and the fan-out to this session's own frames until the
                // reply is queued.
                self.mailbox.hold();
                match self.hub.subscribe(team, &streams, &s.resume, filter) {
                    Ok(sub) => {
                        let reply = to_frame(&Reply::Subscribed {
                            id,
                            team: &s.team,
                            streams: streams.clone(),
                            recovered: sub.recovered,
                        });
                        self.count_out("control");
                        if self.mailbox.push_control_all([Control::Text(reply)]) {
                            Flow::Continue
                        } else {
                            Flow::Abort
                        }
                    }
                    Err(e) => {
                        self.mailbox.release();
                        self.error(id, ErrorCode::BadRequest, &e.to_string()).await
                    }
                }
            }
            Op::Unsubscribe(u) => {
                let team = match self.authorize(&u.team) {
                    Ok(t) => t,
                    Err((code, msg)) => return self.error(id, code, &msg).await,
                };
                let removed = self.hub.unsubscribe(team, &u.streams);
                self.reply(&Reply::Unsubscribed {
                    id,
                    team: &u.team,
                    streams: removed,
                })
                .await
            }
            Op::Publish(p) => self.on_publish(id, p).await,
            Op::Silence(s) => self.on_silence(id, s).await,
        }
    }

    /// `silence`: a member of the alert's team silences it in
    /// Alertmanager (equality matchers on all its labels).
    async fn on_silence(&mut self, id: Option<i64>, s: SilenceOp) -> Flow {
        /// Longest silence accepted from the stream: 30 days.
        const MAX_SILENCE_S: u64 = 30 * 86400;
        let team = match self.authorize(&s.team) {
            Ok(t) => t,
            Err((code, msg)) => return self.error(id, code, &msg).await,
        };
        if s.duration_s == 0 || s.duration_s > MAX_SILENCE_S {
            return self
                .error(
                    id,
                    ErrorCode::BadRequest,
                    &format!("silence: duration_s must be 1..={MAX_SILENCE_S}"),
                )
                .await;
        }
        let Some(alert) = self.state.hub.firing_alert(team, &s.fingerprint) else {
            return self
                .error(
                    id,
                    ErrorCode::NotFound,
                    &format!(
                        "no firing alert with fingerprint `{}` in team `{}`",
                        s.fingerprint, s.team
                    ),
                )
                .await;
        };
        let by = self
            .principal
            .as_ref()
            .map_or("opswire", |p| p.sub.as_str())
            .to_owned();
        let created = self
            .state
            .alertmanager
            .create_silence(&alert, Duration::from_secs(s.duration_s), &by, &s.comment)
            .await;
        match created {
            Ok(silence_id) => {
                tracing::info!(team = %s.team, fingerprint = %s.fingerprint, silence_id, "silence created");
                self.reply(&Reply::Silenced {
                    id,
                    silence_id: &silence_id,
                })
                .await
            }
            Err(e) => {
                tracing::warn!(error = %e, "silence not created");
                self.error(id, ErrorCode::Unavailable, &e.to_string()).await
            }
        }
    }

    /// `publish` (ingest tokens only, to their own teams): a host snapshot
    /// joins the team's next metrics frame; a log record is published now.
    async fn on_publish(&mut self, id: Option<i64>, p: PublishOp) -> Flow {
        let metrics = self.state.metrics.clone();
        let reject = |reason: &str| {
            metrics
                .ingest_rejected
                .with_label_values(&["ws", reason])
                .inc()
        };
        if self.principal.as_ref().map(|p| p.scope) != Some(Scope::Ingest) {
            reject("forbidden");
            return self
                .error(
                    id,
                    ErrorCode::Forbidden,
                    "publish needs a token with scope `ingest`",
                )
                .await;
        }
        let team = match self.authorize(&p.team) {
            Ok(t) => t,
            Err((code, msg)) => {
                reject("forbidden");
                return self.error(id, code, &msg).await;
            }
        };
        let hub = &self.state.hub;
        let bad = |msg: String| (ErrorCode::BadRequest, msg);
        let refused = |e: HubError| match e {
            HubError::Unavailable(m) => (ErrorCode::Unavailable, m),
            other => bad(other.to_string()),
        };
        let published: Result<Option<u64>, (ErrorCode, String)> = match p.stream {
            Stream::Metrics => serde_json::from_str::<HostSnapshot>(p.data.get())
                .map_err(|e| bad(format!("publish: metrics data: {e}")))
                .and_then(|mut snap| {
                    if snap.host.is_empty() {
                        return Err(bad("publish: metrics `host` is empty".into()));
                    }
                    snap.source = HostSource::Agent;
                    hub.update_host(team, &snap).map(|()| None).map_err(refused)
                }),
            Stream::Logs => serde_json::from_str::<LogRecord>(p.data.get())
                .map_err(|e| bad(format!("publish: log data: {e}")))
                .and_then(|rec| {
                    hub.publish_log(team, &rec, now_micros())
                        .map(Some)
                        .map_err(refused)
                }),
            Stream::Alerts => Err(bad(
                "publish: alerts arrive through the Alertmanager webhook, not publish".into(),
            )),
        };
        match published {
            Ok(seq) => {
                metrics
                    .ingest_total
                    .with_label_values(&["ws", p.stream.as_str()])
                    .inc();
                self.reply(&Reply::Published { id, seq }).await
            }
            Err((code, msg)) => {
                reject(if code == ErrorCode::Unavailable {
                    "unavailable"
                } else {
                    "invalid"
                });
                self.error(id, code, &msg).await
            }
        }
    }

    fn count_in(&self, op: &str) {
        self.state
            .metrics
            .messages_total
            .with_label_values(&["in", op])
            .inc();
    }

    /// The team check: the principal must name the team, and it must exist.
    fn authorize(&self, team: &str) -> Result<TeamId, (ErrorCode, String)> {
        let Some(p) = &self.principal else {
            return Err((ErrorCode::Unauthenticated, "not authenticated".into()));
        };
        tracing::Span::current().record("opswire.team", team);
        if !p.may_access(team) {
            return Err((
                ErrorCode::Forbidden,
                format!("not a member of team `{team}`"),
            ));
        }
        self.state
            .hub
            .team_id(team)
            .ok_or_else(|| (ErrorCode::NotFound, format!("unknown team `{team}`")))
    }

    async fn on_auth(&mut self, id: Option<i64>, token: &str) -> Flow {
        match self.state.auth.verify(token) {
            Ok(p) => {
                // Re-auth (a refreshed token) may narrow the teams: drop
                // subscriptions the new token does not cover.
                for team in self.hub.teams() {
                    if !p.may_access(self.state.hub.team_name(team)) {
                        self.hub.unsubscribe(team, &Stream::ALL);
                    }
                }
                // The budget stays (it is per connection and per scope,
                // never refilled by an `auth`); the subject's is shared.
                self.subject = (!p.anonymous).then(|| Arc::from(p.sub.as_str()));
                self.guard.authenticated();
                self.principal = Some(p);
                self.send_welcome(id).await
            }
            Err(e) => {
                let msg = match e {
                    AuthError::Missing => "missing token".to_string(),
                    other => other.to_string(),
                };
                self.close_with_error(ErrorCode::Unauthenticated, &msg, close::POLICY)
                    .await
            }
        }
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

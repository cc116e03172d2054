//! The session layer: everything a client's connection means, whatever
//! carries it (WebSocket or SSE), in the role of centrifuge's `Client`.
//!
//! * [`admission`]: who may open a connection at all (draining, the
//!   connection limits, the slots kept for clients yet to authenticate).
//! * [`Session`]: one connection's principal, hub membership and budget;
//!   the team and scope checks; the `welcome`, `lagged` and error frames.
//! * `ops`: every op (auth and re-auth, subscribe, unsubscribe, ping,
//!   publish, silence) as a handler that returns an [`Outcome`]: the
//!   frames to send and, maybe, the close to end with. Handlers never call
//!   back into a transport and never wait on the network: `silence` runs
//!   as a task of its own, and its answer is queued like any frame.
//!
//! Transports keep only what is theirs: the WebSocket handshake and socket
//! loop (`transport::ws`), SSE's event encoding (`transport::sse`).

pub mod admission;
mod ops;

use std::sync::Arc;
use std::time::Instant;

use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::app::{AppState, ConnectionGuard};
use crate::auth::{Principal, Scope};
use crate::budget::{ConnectionBudget, Verdict};
use crate::hub::{Delivery, Lagged, Mailbox, SessionHandle, TeamId};
use crate::protocol::{
    close, parse_inbound, to_frame, ErrorCode, ErrorFrame, Frame, Reply, Stream, SERVER_NAME,
};

/// What the transport does after a session handled a frame: send
/// `replies` (in order), then close with `close` if set.
#[derive(Debug, Default)]
pub struct Outcome {
    pub replies: Vec<Frame>,
    pub close: Option<(u16, String)>,
}

impl Outcome {
    /// Nothing to send, nothing to end.
    pub fn none() -> Outcome {
        Outcome::default()
    }

    /// One reply.
    pub fn reply(frame: Frame) -> Outcome {
        Outcome {
            replies: vec![frame],
            close: None,
        }
    }

    /// An error frame, then the close.
    fn closing(error: Frame, code: u16, reason: &str) -> Outcome {
        Outcome {
            replies: vec![error],
            close: Some((code, reason.chars().take(100).collect())),
        }
    }
}

/// A session name: `s-` and 10 random base-36 characters.
pub fn session_name() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut name = String::with_capacity(12);
    name.push_str("s-");
    for _ in 0..10 {
        name.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
    }
    name
}

/// One client connection.
pub struct Session {
    pub state: Arc<AppState>,
    pub name: String,
    /// The handshake span's context: parent of every op (and the close).
    pub parent: opentelemetry::Context,
    principal: Option<Principal>,
    /// Its membership in the hub; its mailbox is the outbound queue.
    pub hub: SessionHandle,
    /// What the client may still send (every frame costs).
    budget: ConnectionBudget,
    /// The token's subject, whose budget every op shares with its other
    /// connections (None: anonymous, or not yet authenticated).
    subject: Option<Arc<str>>,
    guard: ConnectionGuard,
    /// The error code of the op being handled, for its span.
    op_error: Option<ErrorCode>,
    /// `silence` calls to Alertmanager under way: at most a few, aborted
    /// when the session ends.
    silences: Vec<tokio::task::AbortHandle>,
    /// Publishes waiting on the broker (cluster mode), each a task that
    /// queues its reply; aborted with the session.
    publishes: tokio::task::JoinSet<()>,
}

impl Session {
    /// A session for an admitted connection; `principal` is None until an
    /// `auth` op (a WebSocket without a header token).
    pub fn new(
        state: Arc<AppState>,
        name: String,
        principal: Option<Principal>,
        guard: ConnectionGuard,
    ) -> Session {
        let hub = state.hub.open_session();
        let budget = ConnectionBudget::new(&state.config.limits);
        let subject = subject_of(principal.as_ref());
        Session {
            state,
            name,
            parent: opentelemetry::Context::new(),
            principal,
            hub,
            budget,
            subject,
            guard,
            op_error: None,
            silences: Default::default(),
            publishes: tokio::task::JoinSet::new(),
        }
    }

    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref()
    }

    pub fn mailbox(&self) -> &Arc<Mailbox> {
        self.hub.mailbox()
    }

    /// The largest message the client may send now: what an `auth` op
    /// needs until it has authenticated.
    pub fn frame_limit(&self) -> usize {
        let l = &self.state.config.limits;
        if self.principal.is_some() {
            l.max_frame_bytes
        } else {
            l.max_auth_frame_bytes.min(l.max_frame_bytes)
        }
    }

    /// When the current token expires (None: anonymous, or no token yet).
    pub fn token_expiry(&self) -> Option<tokio::time::Instant> {
        let exp = self.principal.as_ref()?.exp?;
        let left = crate::auth::time_left(exp, self.state.config.auth.leeway_s);
        Some(tokio::time::Instant::now() + left)
    }

    /// The `welcome` frame (`id` echoes an `auth` op's).
    pub fn welcome(&self, id: Option<i64>) -> Option<Frame> {
        let p = self.principal.as_ref()?;
        self.count_out("welcome");
        Some(to_frame(&Reply::Welcome {
            id,
            epoch: &self.state.hub.epoch(),
            session: &self.name,
            teams: p.visible_teams(self.state.hub.team_names()),
            streams: Stream::ALL,
            heartbeat_s: self.state.config.websocket.heartbeat_s,
            server: SERVER_NAME,
            sub: Some(&p.sub),
            scope: p.scope.as_str(),
        }))
    }

    /// The team check (see [`authorize`]).
    pub fn authorize(&self, team: &str) -> Result<TeamId, (ErrorCode, String)> {
        let Some(p) = &self.principal else {
            return Err((ErrorCode::Unauthenticated, "not authenticated".into()));
        };
        tracing::Span::current().record("opswire.team", team);
        authorize(&self.state, p, team)
    }

    /// Subscribes to `streams` of `team` (by name, checked): the
    /// `subscribed` reply, and what the hub did. The replay is queued in
    /// the mailbox.
    pub fn subscribe(
        &mut self,
        id: Option<i64>,
        team: &str,
        mut streams: Vec<Stream>,
        resume: &std::collections::BTreeMap<Stream, crate::protocol::ResumePoint>,
        filter: Option<crate::protocol::LogFilter>,
        view: Option<&crate::protocol::ViewSpec>,
    ) -> Result<(Frame, crate::hub::Subscribed), (ErrorCode, String)> {
        let team_id = self.authorize(team)?;
        streams.sort();
        streams.dedup();
        let sub = self
            .hub
            .subscribe_view(team_id, &streams, resume, filter, view)
            .map_err(|e| match e {
                crate::hub::HubError::Unavailable(m) => (ErrorCode::Unavailable, m),
                other => (ErrorCode::BadRequest, other.to_string()),
            })?;
        let reply = self.reply(&Reply::Subscribed {
            id,
            team,
            streams,
            recovered: sub.recovered.clone(),
            view: sub.view.as_ref(),
        });
        Ok((reply, sub))
    }

    /// An error frame, counted (and noted for the op's span).
    pub fn error(&mut self, id: Option<i64>, code: ErrorCode, message: &str) -> Frame {
        self.op_error = Some(code);
        count_error(&self.state.metrics, code);
        to_frame(&ErrorFrame::new(id, code, message))
    }

    /// An error frame, then the close that ends the connection.
    pub fn close_with_error(&mut self, code: ErrorCode, message: &str, close: u16) -> Outcome {
        Outcome::closing(self.error(None, code, message), close, message)
    }

    /// A reply frame, counted.
    fn reply(&self, reply: &Reply<'_>) -> Frame {
        self.count_out("control");
        to_frame(reply)
    }

    fn count_out(&self, kind: &str) {
        count_out(&self.state.metrics, kind);
    }

    fn count_in(&self, op: &str) {
        self.state
            .metrics
            .messages_total
            .with_label_values(&["in", op])
            .inc();
    }

    /// Charges one inbound frame to the connection's budget (and, for an
    /// op, to its subject's). None: go on. Over budget: an op gets a
    /// `rate_limited` error, anything else no answer (`Some` empty
    /// outcome: drop the frame); refused too often within a second: an
    /// error and close 1008.
    pub fn charge(&mut self, id: Option<i64>, op: bool) -> Option<Outcome> {
        let scope = self.principal.as_ref().map_or(Scope::Read, |p| p.scope);
        let subject = self
            .subject
            .as_ref()
            .filter(|_| op)
            .map(|s| (&self.state.subjects, s));
        match self.budget.charge(scope, subject) {
            Verdict::Allowed => None,
            Verdict::Exceeded => Some(self.close_with_error(
                ErrorCode::RateLimited,
                "rate limit exceeded repeatedly",
                close::POLICY,
            )),
            Verdict::Refused if op => Some(Outcome::reply(self.error(
                id,
                ErrorCode::RateLimited,
                "too many ops: slow down",
            ))),
            Verdict::Refused => {
                self.state
                    .metrics
                    .errors_total
                    .with_label_values(&[ErrorCode::RateLimited.as_str()])
                    .inc();
                Some(Outcome::none())
            }
        }
    }

    /// Handles one text message: its op, inside the op's own span (a
    /// child of the client's `traceparent` when the op carries one, else
    /// of the handshake).
    pub fn on_text(&mut self, text: &str) -> Outcome {
        let started = Instant::now();
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
        let outcome = span.in_scope(|| self.handle(inbound, &span));
        span.record("opswire.result", self.op_error.map_or("ok", |c| c.as_str()));
        self.state
            .metrics
            .message_duration
            .observe(started.elapsed().as_secs_f64());
        outcome
    }

    /// A binary message: refused (after its budget), the connection stays.
    pub fn on_binary(&mut self) -> Outcome {
        if let Some(out) = self.charge(None, true) {
            return out;
        }
        Outcome::reply(self.error(
            None,
            ErrorCode::BadRequest,
            "binary frames are not supported: send JSON text frames",
        ))
    }
}

/// The `lagged` frame for a subscriber whose queue overflowed.
pub fn lagged_frame(state: &AppState, l: &Lagged) -> Frame {
    to_frame(&Reply::Lagged {
        team: state.hub.team_name(l.team),
        stream: l.stream,
        last_seq: l.last_seq,
    })
}

/// Counts a data frame put on the wire: its delivery lag (not for a
/// replay, old by design).
pub fn delivered(state: &AppState, d: &Delivery, now_us: i64) {
    if !d.replay {
        state.metrics.observe_delivery(d.stream, d.ts, now_us);
    }
}

/// The team check, the one place it is made: the principal must name the
/// team (`forbidden`), and it must exist (`not_found`).
pub fn authorize(
    state: &AppState,
    p: &Principal,
    team: &str,
) -> Result<TeamId, (ErrorCode, String)> {
    if !p.may_access(team) {
        return Err((
            ErrorCode::Forbidden,
            format!("not a member of team `{team}`"),
        ));
    }
    state
        .hub
        .team_id(team)
        .ok_or_else(|| (ErrorCode::NotFound, format!("unknown team `{team}`")))
}

/// Counts a frame the server sends of its own (`messages_total{out,…}`).
fn count_out(m: &crate::metrics::Metrics, kind: &str) {
    m.messages_total.with_label_values(&["out", kind]).inc();
}

/// Counts an error frame (`errors_total{code}`, `messages_total{out,error}`).
fn count_error(m: &crate::metrics::Metrics, code: ErrorCode) {
    m.errors_total.with_label_values(&[code.as_str()]).inc();
    count_out(m, "error");
}

impl Drop for Session {
    fn drop(&mut self) {
        for task in &self.silences {
            task.abort();
        }
    }
}

/// The subject whose budget a principal's ops share (none for anonymous).
fn subject_of(p: Option<&Principal>) -> Option<Arc<str>> {
    p.filter(|p| !p.anonymous)
        .map(|p| Arc::from(p.sub.as_str()))
}

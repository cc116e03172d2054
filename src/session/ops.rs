//! The ops a client sends (`docs/protocol.md`, "Client → server ops"),
//! each handled to an [`Outcome`].

use std::time::Duration;

use tracing::Instrument;

use super::{subject_of, Outcome, Session};
use crate::app::AppState;
use crate::auth::{AuthError, Scope};
use crate::hub::{Control, HubError, Pending};
use crate::protocol::Frame;
use crate::protocol::{
    close, to_frame, ErrorCode, ErrorFrame, HostSnapshot, HostSource, Inbound, LogRecord, Op,
    PublishOp, Reply, SilenceOp, Stream, SubscribeOp, UnsubscribeOp,
};
use crate::time::now_micros;

/// Longest silence accepted from the stream: 30 days.
const MAX_SILENCE_S: u64 = 30 * 86400;

/// `silence` calls one connection may have waiting on Alertmanager.
const MAX_SILENCES_IN_FLIGHT: usize = 4;

/// Publishes one connection may have waiting on the broker (cluster mode).
pub const MAX_PUBLISHES_IN_FLIGHT: usize = 256;

impl Session {
    /// Dispatches one parsed op (after its budget, and after auth for
    /// everything but `auth` and `ping`).
    pub(super) fn handle(&mut self, inbound: Inbound, span: &tracing::Span) -> Outcome {
        let id = inbound.id;
        if let Some(out) = self.charge(id, true) {
            return out;
        }
        let op = match inbound.op {
            Ok(op) => op,
            Err(e) => {
                self.count_in("invalid");
                return Outcome::reply(self.error(id, e.code(), &e.to_string()));
            }
        };
        self.count_in(op.name());
        if self.principal.is_none() && !matches!(op, Op::Auth(_) | Op::Ping) {
            return self.close_with_error(
                ErrorCode::Unauthenticated,
                "authenticate first: {\"op\":\"auth\",\"token\":\"<jwt>\"}",
                close::POLICY,
            );
        }
        match op {
            Op::Auth(a) => self.on_auth(id, &a.token),
            Op::Ping => Outcome::reply(self.reply(&Reply::Pong {
                id,
                ts: now_micros(),
            })),
            Op::Subscribe(s) => self.on_subscribe(id, s),
            Op::Unsubscribe(u) => self.on_unsubscribe(id, u),
            Op::Publish(p) => self.on_publish(id, p),
            Op::Silence(s) => self.on_silence(id, s, span),
        }
    }

    /// `auth` (also re-auth, with a refreshed token). A re-auth may narrow
    /// the teams: subscriptions the new token does not cover are dropped.
    /// The budgets stay: re-auth never refills one.
    fn on_auth(&mut self, id: Option<i64>, token: &str) -> Outcome {
        match self.state.auth.verify(token) {
            Ok(p) => {
                for team in self.hub.teams() {
                    if !p.may_access(self.state.hub.team_name(team)) {
                        self.hub.unsubscribe(team, &Stream::ALL);
                    }
                }
                self.subject = subject_of(Some(&p));
                self.guard.authenticated();
                self.principal = Some(p);
                Outcome {
                    replies: self.welcome(id).into_iter().collect(),
                    close: None,
                }
            }
            Err(e) => {
                let msg = match e {
                    AuthError::Missing => "missing token".to_string(),
                    other => other.to_string(),
                };
                self.close_with_error(ErrorCode::Unauthenticated, &msg, close::POLICY)
            }
        }
    }

    /// `subscribe`: the hub queues the replay in the mailbox, held until
    /// the transport queues `subscribed` (with `push_control_all`), so
    /// neither the replay nor a live frame overtakes the reply.
    fn on_subscribe(&mut self, id: Option<i64>, s: SubscribeOp) -> Outcome {
        let mailbox = self.hub.mailbox().clone();
        mailbox.hold();
        let view = s.view.as_ref();
        match self.subscribe(id, &s.team, s.streams, &s.resume, s.filter.logs, view) {
            Ok((reply, _)) => Outcome::reply(reply),
            Err((code, msg)) => {
                mailbox.release();
                Outcome::reply(self.error(id, code, &msg))
            }
        }
    }

    fn on_unsubscribe(&mut self, id: Option<i64>, u: UnsubscribeOp) -> Outcome {
        let team = match self.authorize(&u.team) {
            Ok(t) => t,
            Err((code, msg)) => return Outcome::reply(self.error(id, code, &msg)),
        };
        let removed = self.hub.unsubscribe(team, &u.streams);
        Outcome::reply(self.reply(&Reply::Unsubscribed {
            id,
            team: &u.team,
            streams: removed,
        }))
    }

    /// `publish` (ingest tokens only, to their own teams): a host snapshot
    /// joins the team's next metrics frame; a log record is published now.
    fn on_publish(&mut self, id: Option<i64>, p: PublishOp) -> Outcome {
        let metrics = self.state.metrics.clone();
        let reject = |reason: &str| {
            metrics
                .ingest_rejected
                .with_label_values(&["ws", reason])
                .inc()
        };
        if self.principal.as_ref().map(|p| p.scope) != Some(Scope::Ingest) {
            reject("forbidden");
            let msg = "publish needs a token with scope `ingest`";
            return Outcome::reply(self.error(id, ErrorCode::Forbidden, msg));
        }
        let team = match self.authorize(&p.team) {
            Ok(t) => t,
            Err((code, msg)) => {
                reject("forbidden");
                return Outcome::reply(self.error(id, code, &msg));
            }
        };
        while self.publishes.try_join_next().is_some() {}
        if self.publishes.len() >= MAX_PUBLISHES_IN_FLIGHT {
            reject("busy");
            let msg = format!(
                "{MAX_PUBLISHES_IN_FLIGHT} publishes are already waiting for the broker: retry"
            );
            return Outcome::reply(self.error(id, ErrorCode::RateLimited, &msg));
        }
        let stream = p.stream;
        let pending = match self.publish(team, &p) {
            Ok(pending) => pending,
            Err((code, msg)) => {
                reject("invalid");
                return Outcome::reply(self.error(id, code, &msg));
            }
        };
        if pending.is_done() {
            let (frame, error) = answer_frame(&self.state, id, stream, pending.now());
            self.op_error = error.or(self.op_error);
            return Outcome::reply(frame);
        }
        // Cluster mode: the reply is queued when the broker answers; the
        // connection goes on meanwhile.
        let state = self.state.clone();
        let mailbox = self.hub.mailbox().clone();
        self.publishes.spawn(async move {
            let (frame, _) = answer_frame(&state, id, stream, pending.wait().await);
            mailbox.push_late(Control::Text(frame));
        });
        Outcome::none()
    }

    /// What a `publish` puts into the hub: its seq (logs), or None (a host
    /// snapshot, folded into the next metrics frame). Err: the op itself
    /// is wrong.
    fn publish(&self, team: usize, p: &PublishOp) -> Result<Pending, (ErrorCode, String)> {
        let hub = &self.state.hub;
        let bad = |msg: String| (ErrorCode::BadRequest, msg);
        match p.stream {
            Stream::Metrics => {
                let mut snap = serde_json::from_str::<HostSnapshot>(p.data.get())
                    .map_err(|e| bad(format!("publish: metrics data: {e}")))?;
                if snap.host.is_empty() {
                    return Err(bad("publish: metrics `host` is empty".into()));
                }
                snap.source = HostSource::Agent;
                Ok(Pending::Done(hub.update_host(team, &snap).map(|()| None)))
            }
            Stream::Logs => {
                let rec = serde_json::from_str::<LogRecord>(p.data.get())
                    .map_err(|e| bad(format!("publish: log data: {e}")))?;
                Ok(hub.submit_log(team, &rec, now_micros()))
            }
            Stream::Alerts => Err(bad(
                "publish: alerts arrive through the Alertmanager webhook, not publish".into(),
            )),
        }
    }

    /// `silence`: a member of the alert's team silences it in
    /// Alertmanager (equality matchers on all its labels). The call runs
    /// as a task of its own, inside the op's span: every other op of the
    /// connection is answered meanwhile, frames keep flowing, and the
    /// `silenced` (or error) reply is queued when Alertmanager answers
    /// (within `alertmanager.timeout_ms`).
    fn on_silence(&mut self, id: Option<i64>, s: SilenceOp, span: &tracing::Span) -> Outcome {
        let team = match self.authorize(&s.team) {
            Ok(t) => t,
            Err((code, msg)) => return Outcome::reply(self.error(id, code, &msg)),
        };
        if s.duration_s == 0 || s.duration_s > MAX_SILENCE_S {
            let msg = format!("silence: duration_s must be 1..={MAX_SILENCE_S}");
            return Outcome::reply(self.error(id, ErrorCode::BadRequest, &msg));
        }
        let Some(alert) = self.state.hub.firing_alert(team, &s.fingerprint) else {
            let msg = format!(
                "no firing alert with fingerprint `{}` in team `{}`",
                s.fingerprint, s.team
            );
            return Outcome::reply(self.error(id, ErrorCode::NotFound, &msg));
        };
        self.silences.retain(|t| !t.is_finished());
        if self.silences.len() >= MAX_SILENCES_IN_FLIGHT {
            let msg = format!(
                "{MAX_SILENCES_IN_FLIGHT} silences are already waiting for Alertmanager: retry"
            );
            return Outcome::reply(self.error(id, ErrorCode::RateLimited, &msg));
        }
        let by = self
            .principal
            .as_ref()
            .map_or("opswire", |p| p.sub.as_str())
            .to_owned();
        let state = self.state.clone();
        let mailbox = self.hub.mailbox().clone();
        let task = async move {
            let duration = Duration::from_secs(s.duration_s);
            let created = state
                .alertmanager
                .create_silence(&alert, duration, &by, &s.comment)
                .await;
            let frame = match created {
                Ok(silence_id) => {
                    tracing::info!(team = %s.team, fingerprint = %s.fingerprint, silence_id, "silence created");
                    to_frame(&Reply::Silenced {
                        id,
                        silence_id: &silence_id,
                    })
                }
                Err(e) => {
                    tracing::warn!(error = %e, "silence not created");
                    tracing::Span::current().record("opswire.result", "unavailable");
                    let code = ErrorCode::Unavailable;
                    super::count_error(&state.metrics, code);
                    to_frame(&ErrorFrame::new(id, code, e.to_string()))
                }
            };
            super::count_out(&state.metrics, "control");
            mailbox.push_late(Control::Text(frame));
        };
        // Aborted when the session ends (its `Drop`): a client cannot
        // leave calls to Alertmanager behind by reconnecting.
        let handle = tokio::spawn(task.instrument(span.clone()));
        self.silences.push(handle.abort_handle());
        Outcome::none()
    }
}

/// The reply to a `publish` once its outcome is known: `published` (with
/// the seq of a log), or the error that says why not (and its code).
fn answer_frame(
    state: &AppState,
    id: Option<i64>,
    stream: Stream,
    answer: Result<Option<u64>, HubError>,
) -> (Frame, Option<ErrorCode>) {
    let m = &state.metrics;
    match answer {
        Ok(seq) => {
            m.ingest_total
                .with_label_values(&["ws", stream.as_str()])
                .inc();
            super::count_out(m, "control");
            (to_frame(&Reply::Published { id, seq }), None)
        }
        Err(e) => {
            let (code, reason) = match e {
                HubError::Unavailable(_) => (ErrorCode::Unavailable, "unavailable"),
                _ => (ErrorCode::BadRequest, "invalid"),
            };
            m.ingest_rejected.with_label_values(&["ws", reason]).inc();
            super::count_error(m, code);
            (
                to_frame(&ErrorFrame::new(id, code, e.to_string())),
                Some(code),
            )
        }
    }
}

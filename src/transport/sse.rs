//! The SSE transport: `GET /sse?team=T&streams=metrics,logs,alerts`.
//!
//! Each event carries the frame's JSON as `data:` and its `type` as
//! `event:`. The `id:` of every event is the connection's position in each
//! of its resumable streams (`logs:<epoch>:<seq>,alerts:<epoch>:<seq>`), so
//! the `Last-Event-ID` an EventSource sends on reconnect resumes all of
//! them at once.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;

use crate::app::{AppState, ConnectionGuard};
use crate::hub::{Delivery, Mailbox, SessionHandle};
use crate::protocol::{
    to_frame, ErrorCode, Level, LogFilter, Reply, ResumePoint, Stream, SERVER_NAME,
};
use crate::request::{http_error, principal_from_request};

#[derive(Debug, Deserialize)]
pub struct SseQuery {
    team: Option<String>,
    streams: Option<String>,
    access_token: Option<String>,
    /// For clients that cannot set `Last-Event-ID`.
    last_event_id: Option<String>,
    min_level: Option<String>,
    source: Option<String>,
}

/// Parses an event id of the form `logs:<epoch>:<seq>,alerts:<epoch>:<seq>`.
/// Malformed parts are ignored (those streams are then not resumed).
pub fn parse_event_id(id: &str) -> BTreeMap<Stream, ResumePoint> {
    id.split(',')
        .filter_map(|part| {
            let mut it = part.trim().splitn(3, ':');
            let stream = Stream::parse(it.next()?)?;
            let epoch = it.next()?.to_owned();
            let seq = it.next()?.parse().ok()?;
            (stream != Stream::Metrics).then_some((stream, ResumePoint { epoch, seq }))
        })
        .collect()
}

fn encode_event_id(epoch: &str, positions: &BTreeMap<Stream, u64>) -> String {
    positions
        .iter()
        .map(|(s, seq)| format!("{s}:{epoch}:{seq}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `GET /sse`.
pub async fn handler(
    req: HttpRequest,
    query: web::Query<SseQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let m = &state.metrics;
    if state.is_draining() {
        return http_error(ErrorCode::Unavailable, "server is shutting down");
    }
    let principal = match principal_from_request(&state, &req, query.access_token.as_deref()) {
        Ok(Some(p)) => p,
        Ok(None) => {
            m.connections_total
                .with_label_values(&["rejected_auth"])
                .inc();
            return http_error(
                ErrorCode::Unauthenticated,
                "missing token (Authorization: Bearer, or ?access_token=)",
            );
        }
        Err(e) => {
            m.connections_total
                .with_label_values(&["rejected_auth"])
                .inc();
            return http_error(ErrorCode::Unauthenticated, e.to_string());
        }
    };
    let Some(team_name) = query.team.as_deref() else {
        return http_error(ErrorCode::BadRequest, "missing query parameter `team`");
    };
    if !principal.may_access(team_name) {
        return http_error(
            ErrorCode::Forbidden,
            format!("not a member of team `{team_name}`"),
        );
    }
    let Some(team) = state.hub.team_id(team_name) else {
        return http_error(ErrorCode::NotFound, format!("unknown team `{team_name}`"));
    };
    let mut streams = Vec::new();
    for s in query
        .streams
        .as_deref()
        .unwrap_or("metrics,logs,alerts")
        .split(',')
    {
        match Stream::parse(s.trim()) {
            Some(st) => streams.push(st),
            None => {
                return http_error(
                    ErrorCode::BadRequest,
                    format!("unknown stream `{s}` (expected metrics, logs, alerts)"),
                )
            }
        }
    }
    streams.sort();
    streams.dedup();
    let min_level = match query.min_level.as_deref() {
        None => None,
        Some(l) => match Level::parse(l) {
            Some(l) => Some(l),
            None => return http_error(ErrorCode::BadRequest, format!("unknown min_level `{l}`")),
        },
    };
    let filter = (min_level.is_some() || query.source.is_some()).then(|| LogFilter {
        min_level,
        source: query.source.clone(),
    });
    let last_id = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query.last_event_id.clone());
    let resume = last_id.as_deref().map(parse_event_id).unwrap_or_default();

    let guard = match state.connections.try_acquire() {
        Ok(g) => g,
        Err(refused) => {
            m.connections_total
                .with_label_values(&["rejected_limit"])
                .inc();
            return http_error(ErrorCode::Unavailable, refused.message());
        }
    };
    let mut hub = state.hub.open_session();
    let sub = match hub.subscribe(team, &streams, &resume, filter) {
        Ok(s) => s,
        Err(e) => return http_error(ErrorCode::BadRequest, e.to_string()),
    };
    m.connections_total.with_label_values(&["accepted"]).inc();
    m.sse_active.inc();

    let epoch = state.hub.epoch().to_owned();
    let mut positions: BTreeMap<Stream, u64> = BTreeMap::new();
    let mut catch_up = BTreeMap::new();
    for (&s, &now) in &sub.positions {
        // Resumed with frames to replay: start at the resume point, and
        // jump to where the hub stood once the last replayed frame is out
        // (frames a filter left out move the position too). Else start
        // where the hub stands.
        let start = match (resume.get(&s), sub.replayed.get(&s)) {
            (Some(r), Some(&last)) if sub.recovered.get(&s) == Some(&true) => {
                catch_up.insert(s, (last, now));
                r.seq
            }
            _ => now,
        };
        positions.insert(s, start);
    }
    let mut out = SseOut {
        epoch,
        positions,
        catch_up,
        pending: VecDeque::new(),
    };
    out.retry(3000);
    let session = crate::transport::session_name();
    out.control(
        "welcome",
        &to_frame(&Reply::Welcome {
            id: None,
            epoch: state.hub.epoch(),
            session: &session,
            teams: principal.visible_teams(state.hub.team_names()),
            streams: Stream::ALL,
            heartbeat_s: state.config.websocket.heartbeat_s,
            server: SERVER_NAME,
            sub: Some(&principal.sub),
            scope: principal.scope.as_str(),
        }),
    );
    out.control_with_id(
        "subscribed",
        &to_frame(&Reply::Subscribed {
            id: None,
            team: team_name,
            streams: streams.clone(),
            recovered: sub.recovered,
        }),
    );

    let hb = Duration::from_secs(state.config.websocket.heartbeat_s);
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + hb, hb);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let st = SseState {
        mailbox: hub.mailbox().clone(),
        _hub: hub,
        _guard: guard,
        _active: ActiveGauge(state.metrics.sse_active.clone()),
        state: state.clone().into_inner(),
        out,
        heartbeat,
        batch: Vec::new(),
        done: false,
        // The stream lives no longer than its token.
        expires: principal.exp.map(|exp| {
            tokio::time::Instant::now() + crate::auth::time_left(exp, state.config.auth.leeway_s)
        }),
    };
    let body = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(b) = st.out.pending.pop_front() {
                return Some((Ok::<_, Infallible>(b), st));
            }
            if st.done {
                return None;
            }
            tokio::select! {
                biased;
                _ = st.state.shutdown.cancelled() => { st.done = true; }
                                _ = tokio::time::sleep_until(st.expires.unwrap_or_else(tokio::time::Instant::now)), if st.expires.is_some() => {
                    let frame = to_frame(&crate::protocol::ErrorFrame::new(None, ErrorCode::Unauthenticated, "token expired"));
                    st.out.control("error", &frame);
                    st.done = true;
                }
                _ = st.heartbeat.tick() => st.out.pending.push_back(Bytes::from_static(b": keepalive\n\n")),
                _ = st.mailbox.ready() => {
                    let lagged = st.mailbox.drain(&mut st.batch);
                                        let now = crate::time::now_micros();
                    for d in st.batch.drain(..) {
                        st.out.data(&d);
                        if !d.replay {
                            let lag_us = (now - d.ts).max(0);
                            st.state.metrics.delivery_lag[d.stream as usize].observe(lag_us as f64 / 1e6);
                        }
                    }
                    if let Some(l) = lagged {
                        let frame = to_frame(&Reply::Lagged {
                            team: st.state.hub.team_name(l.team),
                            stream: l.stream,
                            last_seq: l.last_seq,
                        });
                        st.out.control("lagged", &frame);
                        st.done = true;
                    }
                }
            }
        }
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}

struct ActiveGauge(prometheus::IntGauge);

impl Drop for ActiveGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

struct SseState {
    mailbox: Arc<Mailbox>,
    _hub: SessionHandle,
    _guard: ConnectionGuard,
    _active: ActiveGauge,
    state: Arc<AppState>,
    out: SseOut,
    heartbeat: tokio::time::Interval,
    batch: Vec<Delivery>,
    done: bool,
    expires: Option<tokio::time::Instant>,
}

/// Encodes events and tracks the connection's stream positions.
struct SseOut {
    epoch: String,
    positions: BTreeMap<Stream, u64>,
    /// Per resumed stream: the last replayed seq, and the hub's position
    /// to take once it is out.
    catch_up: BTreeMap<Stream, (u64, u64)>,
    pending: VecDeque<Bytes>,
}

impl SseOut {
    fn retry(&mut self, ms: u64) {
        self.pending
            .push_back(Bytes::from(format!("retry: {ms}\n\n")));
    }

    fn control(&mut self, event: &str, json: &str) {
        let mut b = BytesMut::with_capacity(json.len() + 32);
        b.put_slice(b"event: ");
        b.put_slice(event.as_bytes());
        b.put_slice(b"\ndata: ");
        b.put_slice(json.as_bytes());
        b.put_slice(b"\n\n");
        self.pending.push_back(b.freeze());
    }

    /// A control event that also carries the current positions as `id:`,
    /// so a reconnect before the first data event still resumes.
    fn control_with_id(&mut self, event: &str, json: &str) {
        let id = encode_event_id(&self.epoch, &self.positions);
        let mut b = BytesMut::with_capacity(json.len() + id.len() + 32);
        if !id.is_empty() {
            b.put_slice(b"id: ");
            b.put_slice(id.as_bytes());
            b.put_slice(b"\n");
        }
        b.put_slice(b"event: ");
        b.put_slice(event.as_bytes());
        b.put_slice(b"\ndata: ");
        b.put_slice(json.as_bytes());
        b.put_slice(b"\n\n");
        self.pending.push_back(b.freeze());
    }

    fn data(&mut self, d: &Delivery) {
        if let Some(p) = self.positions.get_mut(&d.stream) {
            *p = (*p).max(d.seq);
            if let Some(&(last, now)) = self.catch_up.get(&d.stream) {
                if d.seq >= last {
                    *p = (*p).max(now);
                    self.catch_up.remove(&d.stream);
                }
            }
        }
        let id = encode_event_id(&self.epoch, &self.positions);
        let mut b = BytesMut::with_capacity(d.frame.len() + id.len() + 32);
        if !id.is_empty() {
            b.put_slice(b"id: ");
            b.put_slice(id.as_bytes());
            b.put_slice(b"\n");
        }
        b.put_slice(b"event: ");
        b.put_slice(d.stream.frame_type().as_bytes());
        b.put_slice(b"\ndata: ");
        b.put_slice(d.frame.as_bytes());
        b.put_slice(b"\n\n");
        self.pending.push_back(b.freeze());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip() {
        let positions = BTreeMap::from([(Stream::Logs, 41), (Stream::Alerts, 7)]);
        let id = encode_event_id("k3j9", &positions);
        assert_eq!(id, "logs:k3j9:41,alerts:k3j9:7");
        let parsed = parse_event_id(&id);
        assert_eq!(
            parsed[&Stream::Logs],
            ResumePoint {
                epoch: "k3j9".into(),
                seq: 41
            }
        );
        assert_eq!(parsed[&Stream::Alerts].seq, 7);
        assert!(parse_event_id("garbage").is_empty());
    }
}

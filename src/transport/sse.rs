//! The SSE transport: `GET /sse?team=T&streams=metrics,logs,alerts`.
//!
//! `view=full|summary|hosts` and `hosts=<name or glob>,…` choose the
//! metrics view (docs/protocol.md, "Views"); `hosts` alone means the
//! named-hosts view.
//!
//! Each event carries the frame's JSON as `data:` and its `type` as
//! `event:`. The `id:` of every event is the connection's position in each
//! of its resumable streams (`logs:<epoch>:<seq>,alerts:<epoch>:<seq>`), so
//! the `Last-Event-ID` an EventSource sends on reconnect resumes all of
//! them at once.
//!
//! A request that accepts gzip gets the stream as one gzip member made of
//! independently decodable pieces, with no compressor per stream
//! ([`gzip`]; `sse.gzip`).

mod gzip;

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;

use crate::app::AppState;
use crate::hub::{Delivery, Mailbox, Subscribed};
use crate::metrics::GaugeGuard;
use crate::protocol::{ErrorCode, Level, LogFilter, ResumePoint, Stream, ViewSpec};
use crate::request::encoding::{self, Coding};
use crate::request::http_error;
use crate::session::{self, admission, session_name, Session};

use gzip::Member;

#[derive(Debug, Deserialize)]
pub struct SseQuery {
    team: Option<String>,
    streams: Option<String>,
    access_token: Option<String>,
    /// For clients that cannot set `Last-Event-ID`.
    last_event_id: Option<String>,
    min_level: Option<String>,
    source: Option<String>,
    /// The metrics view: `full` (default), `summary` or `hosts`.
    view: Option<String>,
    /// The named-hosts view's names or globs, comma-separated.
    hosts: Option<String>,
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

/// What a `/sse` request asks for, from its query and headers.
struct Wanted {
    team: String,
    streams: Vec<Stream>,
    filter: Option<LogFilter>,
    resume: BTreeMap<Stream, ResumePoint>,
    view: Option<ViewSpec>,
}

/// The metrics view of `?view=` and `?hosts=`.
fn view_of(query: &SseQuery) -> Result<Option<ViewSpec>, String> {
    let hosts = query.hosts.as_deref().map(|h| {
        h.split(',')
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
    });
    match (query.view.as_deref(), hosts) {
        (None, None) => Ok(None),
        (None | Some("hosts"), Some(h)) => Ok(Some(ViewSpec::Hosts(h))),
        (Some("hosts"), None) => Err(
            "view `hosts` needs the query parameter `hosts` (names or globs, comma-separated)"
                .into(),
        ),
        (Some(v @ ("full" | "summary")), Some(_)) => Err(format!(
            "query parameter `hosts` is for view `hosts`, not `{v}`"
        )),
        (Some(v), None) => ViewSpec::from_json(serde_json::Value::String(v.to_owned()))
            .map(Some)
            .map_err(|e| format!("{e}; over SSE: view=full, view=summary or hosts=a,b*")),
        (Some(v), Some(_)) => Err(format!(
            "unknown view `{}` (expected full, summary or hosts)",
            v.chars().take(64).collect::<String>()
        )),
    }
}

impl Wanted {
    /// A refusal is a `bad_request` saying what is wrong.
    fn from_request(req: &HttpRequest, query: &SseQuery) -> Result<Wanted, String> {
        let Some(team) = query.team.clone() else {
            return Err("missing query parameter `team`".into());
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
                    return Err(format!(
                        "unknown stream `{s}` (expected metrics, logs, alerts)"
                    ))
                }
            }
        }
        let min_level = match query.min_level.as_deref() {
            None => None,
            Some(l) => match Level::parse(l) {
                Some(l) => Some(l),
                None => return Err(format!("unknown min_level `{l}`")),
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
        let view = view_of(query)?;
        Ok(Wanted {
            team,
            streams,
            filter,
            resume,
            view,
        })
    }
}

/// `GET /sse`: admission, the token (header or `?access_token=`), the
/// team check and the subscribe are the session layer's; this encodes
/// what it says as events.
pub async fn handler(
    req: HttpRequest,
    query: web::Query<SseQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(r) = admission::check_open(&state) {
        return r.response();
    }
    let principal = match admission::principal(&state, &req, query.access_token.as_deref(), true) {
        Ok(Some(p)) => p,
        Ok(None) => return http_error(ErrorCode::Unauthenticated, "missing token"),
        Err(r) => return r.response(),
    };
    let wanted = match Wanted::from_request(&req, &query) {
        Ok(w) => w,
        Err(msg) => return http_error(ErrorCode::BadRequest, msg),
    };
    if let Err((code, msg)) = session::authorize(&state, &principal, &wanted.team) {
        return http_error(code, msg);
    }
    let guard = match admission::slot(&state, true) {
        Ok(g) => g,
        Err(r) => return r.response(),
    };
    let state = state.into_inner();
    let mut session = Session::new(state.clone(), session_name(), Some(principal), guard);
    let subscribed = session.subscribe(
        None,
        &wanted.team,
        wanted.streams.clone(),
        &wanted.resume,
        wanted.filter.clone(),
        wanted.view.as_ref(),
    );
    let (subscribed, sub) = match subscribed {
        Ok(s) => s,
        Err((code, msg)) => return http_error(code, msg),
    };
    admission::count(&state, "accepted");
    let active = GaugeGuard::inc(&state.metrics.sse_active);
    let epoch = state
        .hub
        .epoch_of(team_id(&state, &wanted.team))
        .to_string();
    let gzip_on = state.config.sse.gzip;
    let gzip = gzip_on && encoding::negotiate(&req, |c| c == Coding::Gzip) == Coding::Gzip;
    let compressed = gzip.then(|| GaugeGuard::inc(&state.metrics.compressed_sse));
    let mut out = SseOut::new(epoch, &sub, &wanted.resume, gzip);
    out.retry(3000);
    if let Some(welcome) = session.welcome(None) {
        out.control("welcome", &welcome);
    }
    out.control_with_id("subscribed", &subscribed);
    let hb = Duration::from_secs(state.config.websocket.heartbeat_s);
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + hb, hb);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let st = SseState {
        mailbox: session.mailbox().clone(),
        // The stream lives no longer than its token.
        expires: session.token_expiry(),
        session,
        _active: active,
        _compressed: compressed,
        state,
        out,
        heartbeat,
        batch: Vec::new(),
        done: false,
    };
    let mut response = HttpResponse::Ok();
    response
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"));
    if gzip_on {
        // The body depends on Accept-Encoding, plain or not.
        response.insert_header((header::VARY, "Accept-Encoding"));
    }
    if gzip {
        response.insert_header((header::CONTENT_ENCODING, "gzip"));
    }
    response.streaming(futures_util::stream::unfold(st, SseState::next))
}

/// The id of a team the session layer has just checked.
fn team_id(state: &AppState, team: &str) -> crate::hub::TeamId {
    state.hub.team_id(team).unwrap_or_default()
}

struct SseState {
    mailbox: Arc<Mailbox>,
    session: Session,
    _active: GaugeGuard,
    /// The stream is gzip'ed (`opswire_compressed_connections`).
    _compressed: Option<GaugeGuard>,
    state: Arc<AppState>,
    out: SseOut,
    heartbeat: tokio::time::Interval,
    batch: Vec<Delivery>,
    done: bool,
    expires: Option<tokio::time::Instant>,
}

impl SseState {
    /// The next chunk of the body; None ends it.
    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, SseState)> {
        loop {
            if let Some(b) = self.out.pending.pop_front() {
                return Some((Ok(b), self));
            }
            if self.done {
                // The server ends the stream: a gzip member is finished.
                return self.out.finish().map(|b| (Ok(b), self));
            }
            let expiry = self.expires.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                biased;
                _ = self.state.shutdown.cancelled() => self.done = true,
                _ = tokio::time::sleep_until(expiry), if self.expires.is_some() => {
                    let frame = self.session.error(None, ErrorCode::Unauthenticated, "token expired");
                    self.out.control("error", &frame);
                    self.done = true;
                }
                _ = self.heartbeat.tick() => self.out.keepalive(),
                _ = self.mailbox.ready() => self.drain(),
            }
        }
    }

    /// Encodes what the mailbox holds; `lagged` ends the stream.
    fn drain(&mut self) {
        let lagged = self.mailbox.drain(&mut self.batch);
        let now = crate::time::now_micros();
        for d in self.batch.drain(..) {
            self.out.data(&d);
            session::delivered(&self.state, &d, now);
        }
        if let Some(l) = lagged {
            let frame = session::lagged_frame(&self.state, &l);
            self.out.control("lagged", &frame);
            self.done = true;
        }
    }
}

/// Encodes events and tracks the connection's stream positions.
struct SseOut {
    epoch: String,
    positions: BTreeMap<Stream, u64>,
    /// Per resumed stream: the last replayed seq, and the hub's position
    /// to take once it is out.
    catch_up: BTreeMap<Stream, (u64, u64)>,
    pending: VecDeque<Bytes>,
    /// The stream is one gzip member: its running CRC-32 and length, until
    /// it is finished.
    gzip: Option<Member>,
}

impl SseOut {
    /// Positions start at the resume point where frames are replayed,
    /// jumping to where the hub stood once the last replayed frame is out
    /// (frames a filter left out move the position too); else where the
    /// hub stands. With `gzip` the body starts with the gzip header.
    fn new(
        epoch: String,
        sub: &Subscribed,
        resume: &BTreeMap<Stream, ResumePoint>,
        gzip: bool,
    ) -> SseOut {
        let mut positions = BTreeMap::new();
        let mut catch_up = BTreeMap::new();
        for (&s, &now) in &sub.positions {
            let start = match (resume.get(&s), sub.replayed.get(&s)) {
                (Some(r), Some(&last)) if sub.recovered.get(&s) == Some(&true) => {
                    catch_up.insert(s, (last, now));
                    r.seq
                }
                _ => now,
            };
            positions.insert(s, start);
        }
        let mut pending = VecDeque::new();
        if gzip {
            pending.push_back(Bytes::from_static(&gzip::HEADER));
        }
        SseOut {
            epoch,
            positions,
            catch_up,
            pending,
            gzip: gzip.then(Member::default),
        }
    }

    /// Queues bytes only this stream sends (stored blocks when gzip'ed).
    fn own(&mut self, bytes: Bytes) {
        let bytes = match &mut self.gzip {
            Some(m) => {
                let mut out = BytesMut::with_capacity(bytes.len() + 5);
                m.stored(&mut out, &bytes);
                out.freeze()
            }
            None => bytes,
        };
        self.pending.push_back(bytes);
    }

    fn retry(&mut self, ms: u64) {
        self.own(Bytes::from(format!("retry: {ms}\n\n")));
    }

    fn keepalive(&mut self) {
        self.own(Bytes::from_static(b": keepalive\n\n"));
    }

    fn control(&mut self, event: &str, json: &str) {
        let mut b = BytesMut::with_capacity(json.len() + 32);
        b.put_slice(b"event: ");
        b.put_slice(event.as_bytes());
        b.put_slice(b"\ndata: ");
        b.put_slice(json.as_bytes());
        b.put_slice(b"\n\n");
        self.own(b.freeze());
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
        self.own(b.freeze());
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
        // Plain: the whole event is built here; gzip'ed: only its lines.
        let text = if self.gzip.is_some() {
            0
        } else {
            d.frame.len()
        };
        let mut prefix = BytesMut::with_capacity(text + id.len() + 32);
        if !id.is_empty() {
            prefix.put_slice(b"id: ");
            prefix.put_slice(id.as_bytes());
            prefix.put_slice(b"\n");
        }
        prefix.put_slice(b"event: ");
        prefix.put_slice(d.stream.frame_type().as_bytes());
        prefix.put_slice(b"\ndata: ");
        let event = match &mut self.gzip {
            // The frame's shared compressed bytes (or the event stored),
            // the CRC-32 folded in from the frame's own.
            Some(m) => {
                let mut out = BytesMut::new();
                m.event(&mut out, &prefix, &d.frame, b"\n\n");
                out
            }
            None => {
                prefix.put_slice(d.frame.as_bytes());
                prefix.put_slice(b"\n\n");
                prefix
            }
        };
        self.pending.push_back(event.freeze());
    }

    /// The end of a gzip'ed stream the server ends (the final block and
    /// the trailer), once; None for a plain stream or once finished.
    fn finish(&mut self) -> Option<Bytes> {
        let m = self.gzip.take()?;
        let mut out = BytesMut::with_capacity(10);
        m.finish(&mut out);
        Some(out.freeze())
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

//! `GET /sse`: the read-only Server-Sent Events transport, read over a real
//! HTTP connection with a small event-stream parser.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::helpers::*;

/// One dispatched block of an event stream (the lines up to a blank line).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub retry: Option<u64>,
}

impl SseEvent {
    /// The event type (`message` when the block names none).
    pub fn kind(&self) -> &str {
        self.event.as_deref().unwrap_or("message")
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("data of {self:?} is not JSON: {e}"))
    }
}

/// Parses one block. Lines starting with ':' are comments; a block of
/// comments only (a keepalive) yields None.
pub(crate) fn parse_block(block: &str) -> Option<SseEvent> {
    let mut ev = SseEvent::default();
    let mut data: Vec<&str> = Vec::new();
    let mut any = false;
    for line in block.lines() {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "id" => ev.id = Some(value.to_owned()),
            "event" => ev.event = Some(value.to_owned()),
            "data" => data.push(value),
            "retry" => ev.retry = value.parse().ok(),
            _ => continue,
        }
        any = true;
    }
    ev.data = data.join("\n");
    any.then_some(ev)
}

/// An open event stream. Blocks end with a blank line; opswire ends lines
/// with LF only, so a block boundary is `\n\n`.
struct SseClient {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    buf: Vec<u8>,
}

impl SseClient {
    fn new(resp: reqwest::Response) -> SseClient {
        SseClient {
            body: resp.bytes_stream().boxed(),
            buf: Vec::new(),
        }
    }

    /// The next event, or None if none comes within `wait` or the stream ends.
    async fn try_next_event(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = std::str::from_utf8(&block).expect("UTF-8 event stream");
                if let Some(ev) = parse_block(text) {
                    return Some(ev);
                }
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.buf.extend_from_slice(&chunk),
                Ok(Some(Err(e))) => panic!("event stream failed: {e}"),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    async fn next_event(&mut self) -> SseEvent {
        self.try_next_event(WAIT)
            .await
            .expect("an SSE event within the wait")
    }

    /// The next event of type `kind`, skipping others, within `WAIT`.
    async fn next_of(&mut self, kind: &str) -> SseEvent {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let ev = self
                .try_next_event(left)
                .await
                .unwrap_or_else(|| panic!("no `{kind}` event within the wait"));
            if ev.kind() == kind {
                return ev;
            }
        }
    }

    /// The next event that is not `metrics`.
    async fn next_non_metrics(&mut self) -> SseEvent {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let ev = self
                .try_next_event(left)
                .await
                .expect("a non-metrics event within the wait");
            if ev.kind() != "metrics" {
                return ev;
            }
        }
    }
}

pub(crate) fn bearer(token: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {token}"))
}

/// `GET /sse?{query}` with extra headers; the response once its head is in.
async fn sse_request(app: &TestApp, query: &str, headers: &[(&str, String)]) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(app.url(&format!("/sse?{query}")));
    for (name, value) in headers {
        req = req.header(*name, value.as_str());
    }
    tokio::time::timeout(WAIT, req.send())
        .await
        .expect("response head within the wait")
        .expect("SSE request")
}

/// Opens a stream that must be accepted and reads its preamble (`retry`,
/// `welcome`, `subscribed`). Returns the stream, `welcome` and `subscribed`.
async fn open(app: &TestApp, query: &str, headers: &[(&str, String)]) -> (SseClient, Value, Value) {
    let resp = sse_request(app, query, headers).await;
    assert_eq!(resp.status(), 200, "GET /sse?{query}");
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ctype.starts_with("text/event-stream"), "{ctype}");
    let mut sse = SseClient::new(resp);
    let first = sse.next_event().await;
    assert!(first.retry.is_some(), "first block sets retry: {first:?}");
    let welcome = sse.next_event().await;
    assert_eq!(welcome.kind(), "welcome", "{welcome:?}");
    let welcome = welcome.json();
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let subscribed = sse.next_event().await;
    assert_eq!(subscribed.kind(), "subscribed", "{subscribed:?}");
    let subscribed = subscribed.json();
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    (sse, welcome, subscribed)
}

/// Opens an alpha stream of `streams` with a header token, plus `extra` query.
async fn open_alpha(app: &TestApp, streams: &str, extra: &str) -> (SseClient, Value) {
    let query = format!("team=alpha&streams={streams}{extra}");
    let (sse, _, subscribed) = open(app, &query, &[bearer(&token(&["alpha"]))]).await;
    (sse, subscribed)
}

/// Reads the next event, which must be a `log` with `seq`; returns it.
async fn expect_log(sse: &mut SseClient, seq: u64) -> SseEvent {
    let ev = sse.next_non_metrics().await;
    assert_eq!(ev.kind(), "log", "{ev:?}");
    let f = ev.json();
    assert_eq!(f["type"], "log", "{f}");
    assert_eq!(f["seq"], seq, "{f}");
    ev
}

fn log_record(level: &str, source: &str, message: &str) -> opswire::protocol::LogRecord {
    serde_json::from_value(json!({
        "level": level, "source": source, "host": "h1", "message": message
    }))
    .unwrap()
}

/// Publishes a log of any level and source through the hub.
fn publish(app: &TestApp, level: &str, source: &str, message: &str) -> u64 {
    let id = app.state.hub.team_id("alpha").unwrap();
    let pending = app.state.hub.submit_log(
        id,
        &log_record(level, source, message),
        opswire::time::now_micros(),
    );
    pending
        .now()
        .expect("the in-memory broker takes every publish")
        .expect("a log has a seq")
}

/// An HTTP error answer: its status and JSON body (an `error` frame).
async fn error_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("JSON error body");
    assert_eq!(body["type"], "error", "{body}");
    assert!(body["message"].is_string(), "{body}");
    (status, body)
}

#[tokio::test]
async fn metrics_events_carry_only_the_teams_frames_with_increasing_seq() {
    let app = spawn_app();
    app.wait_ready().await;
    let epoch = app.epoch();
    let (mut alpha, sub) = open_alpha(&app, "metrics", "").await;
    assert_eq!(sub["team"], "alpha");
    assert_eq!(sub["streams"], json!(["metrics"]));
    let (mut beta, _, _) = open(
        &app,
        "team=beta&streams=metrics",
        &[bearer(&token(&["beta"]))],
    )
    .await;

    let mut last = 0;
    let mut hosts = Vec::new();
    for _ in 0..4 {
        let ev = alpha.next_event().await;
        assert_eq!(ev.kind(), "metrics", "{ev:?}");
        let f = ev.json();
        assert_eq!(f["type"], "metrics", "{f}");
        assert_eq!(f["team"], "alpha", "{f}");
        assert_eq!(f["epoch"], epoch.as_str(), "{f}");
        assert!(f["ts"].as_i64().unwrap() > 0, "{f}");
        let seq = f["seq"].as_u64().unwrap();
        assert!(seq > last, "seq {seq} after {last}");
        last = seq;
        for h in f["data"]["hosts"].as_array().unwrap() {
            hosts.push(h["host"].as_str().unwrap().to_owned());
        }
    }
    assert!(hosts.iter().any(|h| h == "test-host"), "{hosts:?}");

    for _ in 0..2 {
        let f = beta.next_of("metrics").await.json();
        assert_eq!(f["team"], "beta", "{f}");
        let hosts = f["data"]["hosts"].as_array().unwrap();
        assert!(
            hosts.iter().all(|h| h["host"] != "test-host"),
            "alpha's host leaked into beta: {f}"
        );
    }
}

#[tokio::test]
async fn published_logs_and_alerts_arrive_as_events_with_advancing_ids() {
    let app = spawn_app();
    let e = app.epoch();
    let (mut sse, _) = open_alpha(&app, "metrics,logs,alerts", "").await;
    let mut ws = app.subscriber("alpha", &["logs"]).await;

    for i in 1..=3u64 {
        let seq = app.publish_log("alpha", &format!("line {i}"));
        assert_eq!(seq, i);
        let ev = sse.next_of("log").await;
        let f = ev.json();
        assert_eq!(f["type"], "log", "{f}");
        assert_eq!(f["team"], "alpha", "{f}");
        assert_eq!(f["epoch"], e.as_str(), "{f}");
        assert_eq!(f["seq"], seq, "{f}");
        assert_eq!(f["data"]["message"], format!("line {i}"), "{f}");
        assert_eq!(f["data"]["level"], "INFO", "{f}");
        assert_eq!(
            ev.id.as_deref(),
            Some(&*format!("logs:{e}:{seq},alerts:{e}:0"))
        );
        // The same JSON object as the WebSocket frame.
        assert_eq!(ws.next_of_type("log").await, f);
    }

    assert_eq!(app.publish_alert("alpha", "fp-1", "firing"), Some(1));
    let ev = sse.next_of("alert").await;
    let f = ev.json();
    assert_eq!(f["type"], "alert", "{f}");
    assert_eq!(f["seq"], 1, "{f}");
    assert_eq!(f["data"]["fingerprint"], "fp-1", "{f}");
    assert_eq!(f["data"]["status"], "firing", "{f}");
    assert_eq!(ev.id.as_deref(), Some(&*format!("logs:{e}:3,alerts:{e}:1")));
}

#[tokio::test]
async fn reconnecting_with_last_event_id_replays_exactly_the_missed_frames() {
    let app = spawn_app();
    let e = app.epoch();
    let (mut sse, sub) = open_alpha(&app, "logs,alerts", "").await;
    assert!(
        sub.get("recovered").is_none_or(|r| r == &json!({})),
        "nothing to recover on a fresh stream: {sub}"
    );
    app.publish_log("alpha", "seen 1");
    app.publish_log("alpha", "seen 2");
    expect_log(&mut sse, 1).await;
    let last_id = expect_log(&mut sse, 2)
        .await
        .id
        .expect("log events carry an id");
    assert_eq!(last_id, format!("logs:{e}:2,alerts:{e}:0"));
    drop(sse);

    // Missed while disconnected:
    app.publish_log("alpha", "missed 3");
    app.publish_log("alpha", "missed 4");
    app.publish_alert("alpha", "fp-1", "firing");

    let (mut sse, _, sub) = open(
        &app,
        "team=alpha&streams=logs,alerts",
        &[
            bearer(&token(&["alpha"])),
            ("Last-Event-ID", last_id.clone()),
        ],
    )
    .await;
    assert_eq!(
        sub["recovered"],
        json!({"logs": true, "alerts": true}),
        "{sub}"
    );
    let ev = expect_log(&mut sse, 3).await;
    assert_eq!(ev.json()["data"]["message"], "missed 3");
    assert_eq!(ev.id.as_deref(), Some(&*format!("logs:{e}:3,alerts:{e}:0")));
    let ev = expect_log(&mut sse, 4).await;
    assert_eq!(ev.json()["data"]["message"], "missed 4");
    let ev = sse.next_event().await;
    assert_eq!(ev.kind(), "alert", "{ev:?}");
    assert_eq!(ev.json()["seq"], 1);
    assert_eq!(ev.id.as_deref(), Some(&*format!("logs:{e}:4,alerts:{e}:1")));
    // Then live frames, with nothing replayed twice in between.
    app.publish_log("alpha", "live 5");
    let ev = expect_log(&mut sse, 5).await;
    assert_eq!(ev.json()["data"]["message"], "live 5");
}

#[tokio::test]
async fn last_event_id_query_parameter_resumes_too() {
    let app = spawn_app();
    let e = app.epoch();
    for i in 1..=3 {
        app.publish_log("alpha", &format!("m{i}"));
    }
    let (mut sse, sub) = open_alpha(&app, "logs", &format!("&last_event_id=logs:{e}:1")).await;
    assert_eq!(sub["recovered"], json!({"logs": true}), "{sub}");
    expect_log(&mut sse, 2).await;
    let ev = expect_log(&mut sse, 3).await;
    assert_eq!(ev.id.as_deref(), Some(&*format!("logs:{e}:3")));
}

#[tokio::test]
async fn stale_epoch_or_unknown_position_is_not_recovered() {
    let app = spawn_app();
    let e = app.epoch();
    app.publish_log("alpha", "before");
    let alpha = bearer(&token(&["alpha"]));

    // An epoch of an earlier server (8 characters cannot be "stale").
    let (mut sse, _, sub) = open(
        &app,
        "team=alpha&streams=logs,alerts",
        &[
            alpha.clone(),
            ("Last-Event-ID", "logs:stale:1,alerts:stale:0".into()),
        ],
    )
    .await;
    assert_eq!(
        sub["recovered"],
        json!({"logs": false, "alerts": false}),
        "{sub}"
    );
    // Live events carry the current epoch.
    app.publish_log("alpha", "after");
    let ev = expect_log(&mut sse, 2).await;
    assert_eq!(ev.id.as_deref(), Some(&*format!("logs:{e}:2,alerts:{e}:0")));

    // The current epoch but a seq the server never reached.
    let (_, _, sub) = open(
        &app,
        "team=alpha&streams=logs",
        &[alpha, ("Last-Event-ID", format!("logs:{e}:999"))],
    )
    .await;
    assert_eq!(sub["recovered"], json!({"logs": false}), "{sub}");
}

#[tokio::test]
async fn ids_of_a_fresh_stream_start_at_the_current_position() {
    let app = spawn_app_with(|c| c.history.logs = 2);
    let e = app.epoch();
    for i in 1..=5 {
        app.publish_log("alpha", &format!("old {i}"));
    }
    let mut ws = app.subscriber("alpha", &["metrics"]).await;
    ws.next_of_type("metrics").await;
    // Once a metrics frame exists, a new stream's first event is that
    // frame, replayed on subscribe. The client has missed nothing, so its
    // id is logs 5, not logs 0.
    let (mut sse, _) = open_alpha(&app, "metrics,logs", "").await;
    let ev = sse.next_of("metrics").await;
    let id = ev.id.expect("events of a logs stream carry an id");
    assert_eq!(id, format!("logs:{e}:5"));
    drop(sse);

    // Resuming from it recovers (the history of 2 still covers "after 5").
    let (_, _, sub) = open(
        &app,
        "team=alpha&streams=metrics,logs",
        &[bearer(&token(&["alpha"])), ("Last-Event-ID", id)],
    )
    .await;
    assert_eq!(sub["recovered"], json!({"logs": true}), "{sub}");
}

#[tokio::test]
async fn missing_or_bad_credentials_are_401() {
    let app = spawn_app();
    let resp = sse_request(&app, "team=alpha&streams=logs", &[]).await;
    let (status, body) = error_of(resp).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "unauthenticated", "{body}");

    let resp = sse_request(&app, "team=alpha", &[bearer("not.a.jwt")]).await;
    let (status, body) = error_of(resp).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "unauthenticated", "{body}");

    let expired = token_with(&["alpha"], "read", -3600);
    let resp = sse_request(&app, &format!("team=alpha&access_token={expired}"), &[]).await;
    let (status, body) = error_of(resp).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "unauthenticated", "{body}");
}

#[tokio::test]
async fn access_token_query_parameter_authenticates() {
    let app = spawn_app();
    let t = token(&["alpha"]);
    let (mut sse, welcome, sub) = open(
        &app,
        &format!("team=alpha&streams=logs&access_token={t}"),
        &[],
    )
    .await;
    assert_eq!(welcome["teams"], json!(["alpha"]), "{welcome}");
    assert_eq!(sub["team"], "alpha", "{sub}");
    app.publish_log("alpha", "via query token");
    let ev = expect_log(&mut sse, 1).await;
    assert_eq!(ev.json()["data"]["message"], "via query token");
}

#[tokio::test]
async fn team_access_and_request_errors() {
    let app = spawn_app();
    let alpha = token(&["alpha"]);
    let every = token(&["*"]);
    let cases = [
        ("team=beta&streams=logs", &alpha, 403, "forbidden"),
        ("team=nope&streams=logs", &every, 404, "not_found"),
        ("team=alpha&streams=logs,bogus", &alpha, 400, "bad_request"),
        ("streams=logs", &alpha, 400, "bad_request"),
        (
            "team=alpha&streams=logs&min_level=loud",
            &alpha,
            400,
            "bad_request",
        ),
    ];
    for (query, t, status, code) in cases {
        let resp = sse_request(&app, query, &[bearer(t)]).await;
        let (got, body) = error_of(resp).await;
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "{query}: {body}"
        );
    }
}

#[tokio::test]
async fn min_level_filter_drops_lower_levels() {
    let app = spawn_app();
    let e = app.epoch();
    let (mut sse, _) = open_alpha(&app, "logs", "&min_level=error").await;
    assert_eq!(publish(&app, "info", "api", "routine"), 1);
    assert_eq!(publish(&app, "warn", "api", "hmm"), 2);
    assert_eq!(publish(&app, "error", "api", "boom"), 3);
    // Frames are delivered in order: had the info or warn log passed the
    // filter, it would come first.
    let ev = expect_log(&mut sse, 3).await;
    let f = ev.json();
    assert_eq!(f["data"]["level"], "ERROR", "{f}");
    assert_eq!(f["data"]["message"], "boom", "{f}");
    assert_eq!(ev.id.as_deref(), Some(&*format!("logs:{e}:3")));
}

#[tokio::test]
async fn source_filter_keeps_only_that_source() {
    let app = spawn_app();
    let (mut sse, _) = open_alpha(&app, "logs", "&source=checkout-api").await;
    publish(&app, "error", "search-api", "not mine");
    publish(&app, "info", "checkout-api", "mine");
    let f = expect_log(&mut sse, 2).await.json();
    assert_eq!(f["data"]["source"], "checkout-api", "{f}");
}

#[tokio::test]
async fn sse_streams_count_against_the_connection_limit() {
    let app = spawn_app_with(|c| c.limits.max_connections = Some(1));
    let (_held, _) = open_alpha(&app, "logs", "").await;
    let resp = sse_request(
        &app,
        "team=alpha&streams=logs",
        &[bearer(&token(&["alpha"]))],
    )
    .await;
    let (status, body) = error_of(resp).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
}

/// A resume whose replay overflows the queue: what went out carries ids
/// no further than the last frame sent, then `lagged` says where to resume;
/// resuming from there gets the rest, so nothing is skipped.
#[tokio::test]
async fn a_replay_that_overflows_never_claims_frames_it_did_not_send() {
    let app = spawn_app_with(|c| {
        c.limits.queue_len = 4;
        c.limits.max_firing_alerts = 4;
    });
    let e = app.epoch();
    for i in 1..=10 {
        app.publish_log("alpha", &format!("m{i}"));
    }
    let (mut sse, _) = open_alpha(&app, "logs", &format!("&last_event_id=logs:{e}:0")).await;
    let mut last_id = None;
    let lagged = loop {
        let ev = sse.next_non_metrics().await;
        match ev.kind() {
            "log" => {
                let seq = ev.json()["seq"].as_u64().unwrap();
                assert_eq!(
                    ev.id.as_deref(),
                    Some(&*format!("logs:{e}:{seq}")),
                    "{ev:?}"
                );
                last_id = ev.id.clone();
            }
            "lagged" => break ev.json(),
            other => panic!("{other}: {ev:?}"),
        }
    };
    assert_eq!(lagged["last_seq"], 4, "{lagged}");
    assert_eq!(last_id.as_deref(), Some(&*format!("logs:{e}:4")));
    // Resuming from the last id gets 5.. (the next four, then lag again).
    let (mut sse, sub) = open_alpha(&app, "logs", &format!("&last_event_id=logs:{e}:4")).await;
    assert_eq!(sub["recovered"], json!({"logs": true}));
    expect_log(&mut sse, 5).await;
}

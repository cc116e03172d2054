//! What an attacker (or a careless client) can take, before and after
//! login: memory by declared lengths, CPU by frames that cost nothing,
//! budgets by re-auth or many connections, slots without credentials,
//! connections by bodies that never finish. Each test fails on a server
//! without the bound it checks.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;
use crate::raw::{frame, header, RawWs, ServerFrame};

fn token_for(sub: &str, teams: &[&str], scope: &str) -> String {
    let claims = opswire::auth::Claims {
        sub: sub.into(),
        teams: teams.iter().map(|s| s.to_string()).collect(),
        exp: opswire::auth::now_s() + 3600,
        iat: None,
        scope: Some(scope.into()),
    };
    opswire::auth::mint(&claims, Some(SECRET), None).unwrap()
}

#[tokio::test]
async fn a_huge_declared_length_closes_1009_at_the_header_before_any_payload() {
    let app = spawn_app();
    // Authenticated: the header alone (2^62 bytes declared, none sent)
    // is answered. A reader that waited for the payload never would.
    let mut c = RawWs::authed(&app, &token(&["alpha"])).await;
    assert!(c.send(&header(0x81, 1 << 62)).await);
    let (code, texts) = c.expect_close().await;
    assert_eq!(code, 1009);
    let err = texts.last().unwrap();
    assert_eq!(err["code"], "too_large", "{err}");
    assert!(err["message"].as_str().unwrap().contains("65536"), "{err}");

    // Before auth the limit is what an `auth` op needs (8 KiB).
    let mut c = RawWs::connect(&app, "").await;
    assert!(c.send(&header(0x81, 10_000)).await);
    let (code, texts) = c.expect_close().await;
    assert_eq!(code, 1009);
    let msg = texts.last().unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(msg.contains("8192") && msg.contains("before auth"), "{msg}");

    // After auth, the same size is fine.
    let mut c = RawWs::authed(&app, &token(&["alpha"])).await;
    let op = json!({"op": "ping", "id": 5, "pad": "x".repeat(10_000)}).to_string();
    assert!(c.send(&frame(0x81, op.as_bytes())).await);
    match c.next().await {
        Some(ServerFrame::Text(v)) => assert_eq!(
            (v["type"].as_str(), v["id"].as_i64()),
            (Some("pong"), Some(5))
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn fragments_count_toward_the_limit_as_they_arrive() {
    let app = spawn_app_with(|c| c.limits.max_frame_bytes = 4096);
    let mut c = RawWs::authed(&app, &token(&["alpha"])).await;
    // 3000 bytes in a first fragment, then a continuation declaring 3000
    // more: refused at its header, with nothing of it sent.
    assert!(c.send(&frame(0x01, &[b' '; 3000])).await);
    assert!(c.send(&header(0x00, 3000)).await);
    let (code, texts) = c.expect_close().await;
    assert_eq!(code, 1009);
    assert_eq!(texts.last().unwrap()["code"], "too_large");
}

#[tokio::test]
async fn rfc_violations_get_1002_and_1007_with_an_error_saying_what() {
    let app = spawn_app();
    let cases: [(Vec<u8>, u16, &str); 4] = [
        (frame(0x81 | 0x40, b"{}"), 1002, "reserved bits"),
        (frame(0x83, b"{}"), 1002, "opcode"),
        (frame(0x09, b"x"), 1002, "control frames"),
        (frame(0x81, &[b'"', 0xff, 0xfe, b'"']), 1007, "UTF-8"),
    ];
    for (bytes, want, says) in cases {
        let mut c = RawWs::authed(&app, &token(&["alpha"])).await;
        assert!(c.send(&bytes).await);
        let (code, texts) = c.expect_close().await;
        assert_eq!(code, want, "{bytes:02x?}");
        let msg = texts.last().unwrap()["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(msg.contains(says), "{bytes:02x?}: {msg}");
    }
}

#[tokio::test]
async fn re_auth_between_scopes_never_refills_the_budget() {
    let app = spawn_app_with(|c| {
        c.limits.inbound_burst = 10;
        c.limits.inbound_rate = 5;
        c.limits.ingest_burst = 20;
        c.limits.ingest_rate = 5;
        c.limits.max_violations = 5;
    });
    let read = token(&["alpha"]);
    let ingest = token_with(&["alpha"], "ingest", 3600);
    let (mut c, _) = app.ws_auth(&read).await;
    // Alternate scopes as fast as possible: 2,000 ops against budgets of
    // 10 and 20. A bucket refilled by each `auth` would never close it.
    let mut sent = 0;
    for i in 0..2000 {
        let t = if i % 2 == 0 { &ingest } else { &read };
        let op = json!({"op": "auth", "id": i, "token": t}).to_string();
        if c.inner.send(Message::text(op)).await.is_err() {
            break;
        }
        sent += 1;
    }
    let (closed, frames) = c.expect_close().await;
    assert_eq!(closed.code, 1008, "after {sent} ops: {closed:?}");
    let welcomes = frames.iter().filter(|f| f["type"] == "welcome").count();
    assert!(welcomes <= 40, "{welcomes} welcomes on budgets of 10 + 20");
}

#[tokio::test]
async fn connections_of_one_subject_share_one_budget() {
    let app = spawn_app_with(|c| {
        c.limits.subject_inbound_burst = 20;
        c.limits.subject_inbound_rate = 1;
    });
    let alice = token_for("alice", &["alpha"], "read");
    let mut conns = Vec::new();
    for _ in 0..5 {
        conns.push(app.ws_auth(&alice).await.0);
    }
    // 5 connections × 10 pings: within each connection's budget (50),
    // but twice alice's.
    for c in &mut conns {
        for i in 0..10 {
            c.send_json(json!({"op": "ping", "id": i})).await;
        }
    }
    let mut pongs = 0;
    let mut limited = 0;
    for c in &mut conns {
        for _ in 0..10 {
            let f = c.next_frame().await;
            match (f["type"].as_str(), f["code"].as_str()) {
                (Some("pong"), _) => pongs += 1,
                (Some("error"), Some("rate_limited")) => limited += 1,
                _ => panic!("{f}"),
            }
        }
    }
    assert!(
        (20..=23).contains(&pongs),
        "{pongs} pongs for a subject budget of 20"
    );
    assert_eq!(pongs + limited, 50);
    // Another subject is not affected.
    let (mut bob, _) = app.ws_auth(&token_for("bob", &["alpha"], "read")).await;
    bob.send_json(json!({"op": "ping", "id": 1})).await;
    assert_eq!(bob.next_frame().await["type"], "pong");
}

/// Sends `frames` copies of `bytes` as fast as the socket takes them;
/// the server must close with 1008 well before the end.
async fn flood_until_closed(c: &mut RawWs, bytes: &[u8], frames: usize) {
    let batch: Vec<u8> = bytes.repeat(1000);
    let mut sent = 0;
    while sent < frames {
        if !c.send(&batch).await {
            break;
        }
        sent += 1000;
    }
    // What the server sent before it closed (it may have reset too, once
    // it stopped reading a flood: that is fine, as long as a 1008 came).
    let mut got = Vec::new();
    loop {
        match c.next().await {
            Some(ServerFrame::Close(code, _)) => {
                assert_eq!(code, 1008, "{got:?}");
                return;
            }
            Some(f) => got.push(f),
            None => panic!("no close frame after {sent} frames: {got:?}"),
        }
    }
}

#[tokio::test]
async fn floods_of_frames_that_cost_nothing_end_with_1008() {
    let app = spawn_app();
    let mut bystander = app.subscriber("alpha", &["logs"]).await;
    // Pongs nobody asked for.
    let mut c = RawWs::authed(&app, &token(&["alpha"])).await;
    flood_until_closed(&mut c, &frame(0x8a, b""), 200_000).await;
    // Endless empty continuations of a message never finished.
    let mut c = RawWs::authed(&app, &token(&["alpha"])).await;
    assert!(c.send(&frame(0x01, b"{")).await);
    flood_until_closed(&mut c, &frame(0x00, b""), 200_000).await;
    // Pings (each would cost a pong).
    let mut c = RawWs::authed(&app, &token(&["alpha"])).await;
    flood_until_closed(&mut c, &frame(0x89, b""), 200_000).await;
    app.publish_log("alpha", "still serving");
    assert_eq!(
        bystander.next_frame().await["data"]["message"],
        "still serving"
    );
}

fn webhook(alerts: Vec<Value>) -> Value {
    json!({
        "version": "4", "groupKey": "g", "truncatedAlerts": 0, "status": "firing",
        "receiver": "opswire", "groupLabels": {}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "http://am", "alerts": alerts,
    })
}

fn firing(i: usize, ends_at: &str) -> Value {
    json!({
        "status": "firing",
        "labels": {"alertname": format!("A{i}"), "team": "alpha", "severity": "warning"},
        "annotations": {}, "startsAt": "2026-11-22T10:00:00Z", "endsAt": ends_at,
        "generatorURL": "", "fingerprint": format!("fp{i:04}"),
    })
}

async fn post_webhook(app: &TestApp, body: &Value) {
    let res = reqwest::Client::new()
        .post(app.url("/api/v1/alerts/alertmanager"))
        .bearer_auth(token_with(&["*"], "ingest", 3600))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

#[tokio::test]
async fn the_firing_set_is_capped_and_a_new_subscriber_gets_only_that() {
    let app = spawn_app_with(|c| c.limits.max_firing_alerts = 5);
    let zero = "0001-01-01T00:00:00Z";
    post_webhook(&app, &webhook((0..12).map(|i| firing(i, zero)).collect())).await;
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("opswire_alerts_evicted_total{team=\"alpha\"} 7"),
        "{metrics}"
    );
    assert!(metrics.contains("opswire_alerts_firing{team=\"alpha\"} 5"));
    let mut c = app.subscriber("alpha", &["alerts"]).await;
    let mut fps = Vec::new();
    for _ in 0..5 {
        let f = c.next_non_metrics().await;
        assert_eq!(f["type"], "alert", "{f}");
        fps.push(f["data"]["fingerprint"].as_str().unwrap().to_owned());
    }
    // The newest five, oldest first; nothing else follows.
    assert_eq!(fps, ["fp0007", "fp0008", "fp0009", "fp0010", "fp0011"]);
    c.send_json(json!({"op": "ping", "id": 9})).await;
    assert_eq!(c.next_non_metrics().await["type"], "pong");
}

#[tokio::test]
async fn an_alert_whose_end_passed_leaves_the_set_with_a_resolved_frame() {
    let app = spawn_app();
    let mut c = app.subscriber("alpha", &["alerts"]).await;
    let end =
        humantime::format_rfc3339_millis(std::time::SystemTime::now() + Duration::from_millis(600))
            .to_string();
    post_webhook(&app, &webhook(vec![firing(1, &end)])).await;
    let f = c.next_non_metrics().await;
    assert_eq!(f["data"]["status"], "firing", "{f}");
    let started = Instant::now();
    let f = c.next_non_metrics().await;
    assert_eq!(
        (
            f["data"]["status"].as_str(),
            f["data"]["fingerprint"].as_str()
        ),
        (Some("resolved"), Some("fp0001")),
        "{f}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(app.state.hub.firing_alerts(0).is_empty());
    let metrics = app.metrics_text().await;
    assert!(metrics.contains("opswire_alerts_expired_total{team=\"alpha\"} 1"));
}

#[tokio::test]
async fn clients_without_credentials_cannot_hold_every_slot() {
    let app = spawn_app_with(|c| {
        c.limits.max_connections = Some(8);
        c.websocket.auth_timeout_s = 30;
        c.websocket.auth_timeout_busy_ms = 400;
    });
    // Two may wait for their `auth` op (a quarter of 8)...
    let mut waiting = vec![app.ws().await, app.ws().await];
    // ...a third is refused, saying why...
    let err = tokio_tungstenite::connect_async(app.ws_url())
        .await
        .expect_err("a third unauthenticated connection is refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(res) => {
            assert_eq!(res.status(), 503);
            let body =
                String::from_utf8_lossy(res.body().as_deref().unwrap_or_default()).into_owned();
            assert!(body.contains("waiting to authenticate"), "{body}");
        }
        other => panic!("{other}"),
    }
    // ...while clients with a token still get in.
    let mut authed = Vec::new();
    for _ in 0..4 {
        authed.push(app.ws_auth(&token(&["alpha"])).await.0);
    }
    // One that authenticates frees its waiting slot for another.
    waiting[0]
        .send_json(json!({"op": "auth", "token": token(&["alpha"])}))
        .await;
    assert_eq!(waiting[0].next_frame().await["type"], "welcome");
    let mut late = app.ws().await;
    // 7 of 8 slots taken: busy, so the newcomer has 400 ms, not 30 s.
    let started = Instant::now();
    let (closed, _) = late.expect_close().await;
    assert_eq!(closed.code, 1008);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    drop(waiting);
}

#[tokio::test]
async fn a_body_that_never_finishes_gets_408() {
    let app = spawn_app_with(|c| c.ingest.body_timeout_s = 1);
    let ingest = token_with(&["alpha"], "ingest", 3600);
    // A Content-Length with only part of the bytes.
    let mut sock = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/logs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ingest}\r\n\
         Content-Type: application/x-ndjson\r\nContent-Length: 1000\r\n\r\n{{\"level\""
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, sock.read(&mut buf))
        .await
        .expect("answered before the wait")
        .unwrap();
    let res = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(res.starts_with("HTTP/1.1 408"), "{res}");
    assert!(res.contains("\"code\":\"timeout\""), "{res}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // A chunked body trickling a byte at a time: the same.
    let mut sock = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/logs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ingest}\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let answer = tokio::time::timeout(WAIT, async {
        let mut got = Vec::new();
        loop {
            let _ = sock.write_all(b"1\r\n \r\n").await;
            tokio::select! {
                r = sock.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return String::from_utf8_lossy(&got).into_owned(),
                    Ok(n) => {
                        got.extend_from_slice(&buf[..n]);
                        if got.windows(4).any(|w| w == b"\r\n\r\n") {
                            return String::from_utf8_lossy(&got).into_owned();
                        }
                    }
                },
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    })
    .await
    .expect("answered before the wait");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn an_sse_client_that_stops_reading_loses_its_slot() {
    // Heartbeat 1 s: a peer that takes no data for 2 s is dropped.
    let app = spawn_app_with(|c| {
        c.websocket.heartbeat_s = 1;
        c.limits.queue_len = 1_000_000;
    });
    let baseline = app.state.connections.open();
    // A tiny receive window, and nothing ever read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let mut sock = socket.connect(app.addr).await.unwrap();
    let req = format!(
        "GET /sse?team=alpha&streams=logs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        token(&["alpha"])
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while app.state.connections.open() == baseline {
        assert!(Instant::now() < deadline, "the SSE stream never opened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Fill every buffer on the way.
    let pad = "x".repeat(4000);
    for _ in 0..2000 {
        app.publish_log("alpha", &pad);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.state.connections.open() > baseline {
        assert!(
            Instant::now() < deadline,
            "a stalled SSE client still holds its slot after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(sock);
}

#[tokio::test]
async fn state_changing_routes_take_the_websockets_origin_rule() {
    let mut config = test_config();
    config.auth.jwt_secret = None; // dev mode
    let app = spawn_app_with(|c| *c = config);
    let post = |origin: Option<&'static str>| {
        let mut req = reqwest::Client::new()
            .post(app.url("/api/v1/logs?team=alpha"))
            .body(r#"{"level":"info","source":"s","host":"h","message":"m"}"#);
        if let Some(o) = origin {
            req = req.header("Origin", o);
        }
        req.send()
    };
    // Another loopback origin (a dev server on :3000): refused, as the
    // WebSocket refuses it.
    let res = post(Some("http://localhost:3000")).await.unwrap();
    assert_eq!(res.status(), 403);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("origin"),
        "{body}"
    );
    // No Origin (curl, a shipper): accepted.
    assert_eq!(post(None).await.unwrap().status(), 200);
    // Reads stay open.
    let res = reqwest::Client::new()
        .get(app.url("/api/v1/info"))
        .header("Origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn an_http_1_0_upgrade_is_refused() {
    let app = spawn_app();
    let mut sock = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.0\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {}\r\n\r\n",
        token(&["alpha"])
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, sock.read_to_end(&mut out))
        .await
        .expect("answered and closed")
        .unwrap();
    let res = String::from_utf8_lossy(&out);
    assert!(
        res.starts_with("HTTP/1.0 400") || res.starts_with("HTTP/1.1 400"),
        "{res}"
    );
    assert!(res.contains("HTTP/1.1"), "{res}");
}

#[tokio::test]
async fn a_query_string_that_does_not_parse_gets_the_json_error_body() {
    let app = spawn_app();
    let res = reqwest::Client::new()
        .get(app.url("/sse?team=alpha&team=beta"))
        .bearer_auth(token(&["alpha", "beta"]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.expect("a JSON body");
    assert_eq!(body["code"], "bad_request");
    assert!(body["message"].as_str().unwrap().contains("team"), "{body}");
}

#[tokio::test]
async fn a_malformed_request_head_is_not_logged_as_a_server_error() {
    let bin = Binary::start(&[]);
    let mut sock = tokio::net::TcpStream::connect(bin.addr).await.unwrap();
    sock.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\0: \xff\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, sock.read_to_end(&mut out)).await;
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 400"));
    // Reported once, as a WARN, within the report interval.
    let deadline = Instant::now() + opswire::faults::REPORT_EVERY + WAIT;
    loop {
        let lines = bin.stderr.lock().unwrap().clone();
        assert!(
            !lines.iter().any(|l| l.contains("ERROR")),
            "logged at ERROR: {lines:#?}"
        );
        if let Some(l) = lines.iter().find(|l| l.contains("client's fault")) {
            assert!(l.contains("WARN") && l.contains("count=1"), "{l}");
            break;
        }
        assert!(Instant::now() < deadline, "never reported: {lines:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = reqwest::get(bin.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("opswire_http_client_errors_total 1"),
        "{metrics}"
    );
}

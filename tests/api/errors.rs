//! Bad input gets a clear error and the server keeps serving: malformed
//! JSON, unknown ops, binary and oversized frames, floods.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

async fn assert_alive(c: &mut WsClient) {
    c.send_json(json!({"op": "ping", "id": 99})).await;
    let p = c.next_non_metrics().await;
    assert_eq!(p["type"], "pong", "{p}");
}

#[tokio::test]
async fn malformed_frames_get_bad_request_and_the_connection_stays() {
    let app = spawn_app();
    let (mut c, _) = app.ws_auth(&token(&["alpha"])).await;
    let cases = [
        ("{not json", "invalid JSON"),
        ("[1,2]", "JSON object"),
        (r#"{"id":1}"#, "missing field `op`"),
        (
            r#"{"op":"subscribe","id":1,"streams":["logs"]}"#,
            "missing field `team`",
        ),
        (
            r#"{"op":"subscribe","id":1,"team":"alpha","streams":["nope"]}"#,
            "nope",
        ),
        (
            r#"{"op":"subscribe","id":"x","team":"alpha"}"#,
            "`id` must be an integer",
        ),
    ];
    for (frame, want) in cases {
        c.send_text(frame).await;
        let e = c.next_frame().await;
        assert_eq!(e["type"], "error", "{frame}");
        assert_eq!(e["code"], "bad_request", "{frame}");
        assert!(
            e["message"].as_str().unwrap().contains(want),
            "{frame}: {e}"
        );
    }
    c.inner.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    let e = c.next_frame().await;
    assert_eq!(e["code"], "bad_request");
    assert_alive(&mut c).await;
}

#[tokio::test]
async fn unknown_ops_echo_the_id() {
    let app = spawn_app();
    let (mut c, _) = app.ws_auth(&token(&["alpha"])).await;
    c.send_json(json!({"op": "dance", "id": 42})).await;
    let e = c.next_frame().await;
    assert_eq!(e["code"], "unknown_op");
    assert_eq!(e["id"], 42);
    assert!(e["message"].as_str().unwrap().contains("dance"));
    assert_alive(&mut c).await;
}

#[tokio::test]
async fn oversized_frames_get_too_large_and_1009_while_others_are_served() {
    let app = spawn_app_with(|c| c.limits.max_frame_bytes = 4096);
    let mut other = app.subscriber("alpha", &["logs"]).await;
    let (mut c, _) = app.ws_auth(&token(&["alpha"])).await;
    let huge = json!({"op": "ping", "pad": "x".repeat(10_000)}).to_string();
    c.send_text(&huge).await;
    let (closed, frames) = c.expect_close().await;
    assert_eq!(closed.code, 1009);
    assert_eq!(frames.last().unwrap()["code"], "too_large");
    assert!(frames.last().unwrap()["message"]
        .as_str()
        .unwrap()
        .contains("4096"));
    app.publish_log("alpha", "still serving");
    assert_eq!(other.next_frame().await["data"]["message"], "still serving");
    // Just under the limit is fine.
    let (mut c, _) = app.ws_auth(&token(&["alpha"])).await;
    c.send_json(json!({"op": "ping", "id": 1, "pad": null}))
        .await;
    assert_eq!(c.next_frame().await["type"], "pong");
}

#[tokio::test]
async fn a_flood_is_rate_limited_then_closed_and_others_are_unaffected() {
    let app = spawn_app_with(|c| {
        c.limits.inbound_rate = 10;
        c.limits.inbound_burst = 10;
        c.limits.max_violations = 5;
    });
    let mut bystander = app.subscriber("alpha", &["logs"]).await;
    let (mut flooder, _) = app.ws_auth(&token(&["alpha"])).await;
    for i in 0..200 {
        // The server may close mid-flood; stop sending then.
        if flooder
            .inner
            .send(Message::text(json!({"op": "ping", "id": i}).to_string()))
            .await
            .is_err()
        {
            break;
        }
    }
    let (closed, frames) = flooder.expect_close().await;
    assert_eq!(closed.code, 1008, "{closed:?}");
    let pongs = frames.iter().filter(|f| f["type"] == "pong").count();
    let limited = frames
        .iter()
        .filter(|f| f["type"] == "error" && f["code"] == "rate_limited")
        .count();
    assert!((10..=12).contains(&pongs), "{pongs} pongs: the burst is 10");
    assert!(limited >= 5, "{limited} rate_limited errors");
    app.publish_log("alpha", "unaffected");
    let f = bystander.next_frame().await;
    assert_eq!(f["data"]["message"], "unaffected");
    assert_alive(&mut bystander).await;
    // An ingest connection has its own, larger budget.
    let (mut agent, _) = app.ws_auth(&token_with(&["alpha"], "ingest", 60)).await;
    for i in 0..50 {
        agent.send_json(json!({"op": "ping", "id": i})).await;
    }
    for _ in 0..50 {
        assert_eq!(agent.next_frame().await["type"], "pong");
    }
    assert!(agent
        .try_next_frame(Duration::from_millis(100))
        .await
        .is_none());
}

/// A WebSocket upgrade request for `path`, with `extra` header lines.
fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Sends `request` on a fresh connection; the whole answer, up to the
/// server's close.
async fn raw_http(app: &TestApp, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    sock.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, sock.read_to_end(&mut out))
        .await
        .expect("the server answers and closes")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn handshakes_that_are_not_websocket_upgrades_get_400_naming_why() {
    let app = spawn_app();
    let auth = format!("Authorization: Bearer {}\r\n", token(&["alpha"]));
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    // A plain GET: no upgrade at all.
    let res = reqwest::Client::new()
        .get(app.url("/ws"))
        .bearer_auth(token(&["alpha"]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["code"], "bad_request");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("websocket handshake"),
        "{body}"
    );
    // `Upgrade: websocket, foo` passes a lenient handshake check, but the
    // HTTP/1 parser does not hand the socket over: refused, not hung.
    let res = raw_http(
        &app,
        &format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket, foo\r\n{key}{auth}\r\n"
        ),
    )
    .await;
    assert!(res.starts_with("HTTP/1.1 400"), "{res}");
    assert!(res.contains("a WebSocket upgrade needs"), "{res}");
    // A version the server does not speak.
    let res = raw_http(
        &app,
        &format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n{auth}\r\n"
        ),
    )
    .await;
    assert!(res.starts_with("HTTP/1.1 400"), "{res}");
    assert!(res.contains("websocket handshake"), "{res}");
    // The server keeps serving WebSockets.
    let mut c = app.subscriber("alpha", &["metrics"]).await;
    assert_alive(&mut c).await;
}

#[tokio::test]
async fn an_upgrade_request_to_another_path_gets_that_paths_answer() {
    let app = spawn_app();
    // Upgrades go to opswire's upgrade service whatever the path: it
    // answers with the route's own response, whole, and closes.
    let res = raw_http(&app, &upgrade_request("/healthz", "")).await;
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    assert!(
        res.to_ascii_lowercase().contains("connection: close"),
        "{res}"
    );
    let res = raw_http(&app, &upgrade_request("/nowhere", "")).await;
    assert!(res.starts_with("HTTP/1.1 404"), "{res}");
    // A streaming answer (SSE) on that path: delimited by the close, not
    // announced as chunked (which, after an upgrade request, it cannot be).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let req = upgrade_request(
        &format!(
            "/sse?team=alpha&streams=metrics&access_token={}",
            token(&["alpha"])
        ),
        "",
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let text = tokio::time::timeout(WAIT, async {
        loop {
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if text.contains("event: metrics") {
                return text;
            }
        }
    })
    .await
    .expect("a metrics event");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let head = text[..text.find("\r\n\r\n").unwrap()].to_ascii_lowercase();
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
}

#[tokio::test]
async fn answers_pipelined_ahead_of_an_upgrade_are_not_lost() {
    let app = spawn_app();
    // Two requests in one write: the dispatcher answers the first and
    // hands the connection over for the second before flushing.
    let res = raw_http(
        &app,
        &format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n{}",
            upgrade_request("/ws", "Authorization: Bearer nope\r\n")
        ),
    )
    .await;
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    let second = res[4..].find("HTTP/1.1 ").map(|i| &res[i + 4..]);
    assert!(
        second.is_some_and(|r| r.starts_with("HTTP/1.1 401")),
        "{res}"
    );
}

#[tokio::test]
async fn a_frame_sent_with_the_handshake_is_not_lost() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app();
    // The handshake and the first frame (auth) in one write: the server
    // reads both at once and must carry the frame over to the session.
    let op = json!({"op": "auth", "id": 7, "token": token(&["alpha"])}).to_string();
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut bytes = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .to_vec();
    assert!(op.len() < 65536);
    bytes.extend_from_slice(&[0x81, 0x80 | 126]);
    bytes.extend_from_slice(&(op.len() as u16).to_be_bytes());
    bytes.extend_from_slice(&mask);
    bytes.extend(op.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    let mut sock = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    sock.write_all(&bytes).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let welcome = tokio::time::timeout(WAIT, async {
        loop {
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some(at) = text.find("{\"type\":\"welcome\"") {
                return text[at..].to_owned();
            }
        }
    })
    .await
    .expect("welcome after the pipelined auth op");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 101"));
    assert!(welcome.contains("\"id\":7"), "{welcome}");
}

/// "No frame arrived" must mean the connection is open and quiet: waiting
/// on a connection that has ended fails instead of passing.
#[tokio::test]
#[should_panic(expected = "the connection ended while waiting for a frame")]
async fn a_quiet_wait_on_a_closed_connection_fails() {
    let app = spawn_app_with(|c| c.limits.max_frame_bytes = 4096);
    let (mut c, _) = app.ws_auth(&token(&["alpha"])).await;
    c.send_text(&"x".repeat(10_000)).await;
    let (closed, _) = c.expect_close().await;
    assert_eq!(closed.code, 1009);
    c.try_next_frame(Duration::from_millis(200)).await;
}

//! Connection lifecycle: heartbeats close silent clients, and a graceful
//! shutdown (SIGTERM in the real binary, or the shutdown token) closes
//! every client with 1012.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// Opcodes of the frames in `buf` (server frames are unmasked); returns
/// the bytes consumed.
fn opcodes(buf: &[u8], out: &mut Vec<u8>) -> usize {
    let mut i = 0;
    while i + 2 <= buf.len() {
        let op = buf[i] & 0x0f;
        let (len, hdr) = match buf[i + 1] & 0x7f {
            126 if i + 4 <= buf.len() => (u16::from_be_bytes([buf[i + 2], buf[i + 3]]) as usize, 4),
            127 if i + 10 <= buf.len() => (
                u64::from_be_bytes(buf[i + 2..i + 10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => break,
            n => (n as usize, 2),
        };
        if i + hdr + len > buf.len() {
            break;
        }
        out.push(op);
        i += hdr + len;
    }
    i
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_closes_a_client_that_stops_answering() {
    let app = spawn_app_with(|c| c.websocket.heartbeat_s = 1);
    // A responsive client (tungstenite answers pings while it reads).
    let mut alive = app.subscriber("alpha", &["metrics"]).await;
    let reader = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_millis(4500);
        while Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_millis(200), alive.inner.next()).await;
        }
        alive
    });

    // A raw client that completes the handshake and then never answers.
    let mut sock = TcpStream::connect(app.addr).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {}\r\n\r\n",
        app.addr,
        token(&["alpha"])
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let eof = loop {
        match tokio::time::timeout(Duration::from_secs(8), sock.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break false,
        }
    };
    assert!(eof, "the server never closed the silent client");
    let elapsed = started.elapsed();
    // Two missed intervals, checked on the third tick.
    assert!(
        elapsed >= Duration::from_millis(1900),
        "closed after {elapsed:?}"
    );
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(buf.starts_with(b"HTTP/1.1 101"));
    let mut ops = Vec::new();
    opcodes(&buf[head_end..], &mut ops);
    assert!(ops.contains(&0x9), "pings were sent: {ops:?}");

    let mut alive = reader.await.unwrap();
    alive.send_json(json!({"op": "ping", "id": 1})).await;
    assert_eq!(alive.next_non_metrics().await["type"], "pong");
}

#[tokio::test]
async fn shutdown_closes_every_client_with_1012() {
    let app = spawn_app();
    let mut a = app.subscriber("alpha", &["metrics"]).await;
    let mut b = app.subscriber("beta", &["logs"]).await;
    let state = app.state.clone();
    let token = app.shutdown_token();
    token.cancel();
    for c in [&mut a, &mut b] {
        let (closed, _) = c.expect_close().await;
        assert_eq!(closed.code, 1012);
    }
    assert_eq!(state.not_ready_reason().as_deref(), Some("shutting down"));
    app.stop();
}

#[tokio::test]
async fn sigterm_sends_1012_and_the_process_exits() {
    let mut bin = Binary::start(&[("RUST_LOG", "warn")]);
    let line = bin.addr;
    let url = format!("ws://{line}/ws");
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", token(&["default"])).parse().unwrap(),
    );
    let (inner, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut c = WsClient { inner };
    assert_eq!(c.next_frame().await["type"], "welcome");
    c.subscribe("default", &["metrics"]).await;
    assert_eq!(c.next_of_type("metrics").await["team"], "default");

    // SAFETY: kill(2) with a pid we own and a valid signal number.
    assert_eq!(
        unsafe { libc::kill(bin.child.id() as i32, libc::SIGTERM) },
        0
    );
    let (closed, _) = c.expect_close().await;
    assert_eq!(closed.code, 1012);
    assert!(closed.reason.contains("shutting down"));
    let status = tokio::task::spawn_blocking(move || bin.wait_exit())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
}

//! The session layer: nothing waits inside a connection. A `silence`
//! whose Alertmanager is slow leaves every other op answered at once and
//! frames flowing; its reply comes when Alertmanager answers.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// An Alertmanager API v2 that answers `POST /api/v2/silences` after
/// `delay`, as the real one does (`{"silenceID": …}`). Returns its base URL.
async fn slow_alertmanager(delay: Duration) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                // The request head and its JSON body (small: one read
                // loop until the body's Content-Length is in).
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = sock.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                tokio::time::sleep(delay).await;
                let body = r#"{"silenceID":"slow-silence-1"}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(answer.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_slow_silence_holds_up_nothing_else_on_its_connection() {
    let am = slow_alertmanager(Duration::from_secs(3)).await;
    let app = spawn_app_with(|c| {
        c.alertmanager.url = Some(am);
        c.alertmanager.timeout_ms = 10_000;
    });
    app.publish_alert("alpha", "fp-slow", "firing");
    let mut c = app.subscriber("alpha", &["logs"]).await;
    c.send_json(json!({"op": "silence", "id": 4, "team": "alpha",
                       "fingerprint": "fp-slow", "duration_s": 600}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Asked 0.3 s after the silence: answered at once, not after it.
    let asked = Instant::now();
    c.send_json(json!({"op": "ping", "id": 5})).await;
    let pong = c.next_non_metrics().await;
    assert_eq!(
        (pong["type"].as_str(), pong["id"].as_i64()),
        (Some("pong"), Some(5))
    );
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "pong after {:?}",
        asked.elapsed()
    );
    // A subscribe and live frames meanwhile, too.
    c.send_json(json!({"op": "subscribe", "id": 6, "team": "alpha", "streams": ["alerts"]}))
        .await;
    let sub = c.next_non_metrics().await;
    assert_eq!(
        (sub["type"].as_str(), sub["id"].as_i64()),
        (Some("subscribed"), Some(6))
    );
    assert_eq!(
        c.next_non_metrics().await["type"],
        "alert",
        "the firing alert's replay"
    );
    app.publish_log("alpha", "flowing");
    let f = c.next_non_metrics().await;
    assert_eq!(f["data"]["message"], "flowing", "{f}");
    assert!(asked.elapsed() < Duration::from_secs(2));
    // Then the silence's reply, when Alertmanager answers.
    let silenced = c.next_non_metrics().await;
    assert_eq!(
        (
            silenced["type"].as_str(),
            silenced["id"].as_i64(),
            silenced["silence_id"].as_str()
        ),
        (Some("silenced"), Some(4), Some("slow-silence-1")),
        "{silenced}"
    );
    assert!(asked.elapsed() >= Duration::from_millis(2500));
}

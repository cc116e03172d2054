//! Memory per idle subscriber: opens N WebSocket subscribers to a running
//! opswire (dev mode, or a token in OPSWIRE_TOKEN), subscribes each to the
//! metrics of TEAM, waits until every one has received a metrics frame, and
//! reports the server's RSS before and after from /proc/PID/status.
//!
//! `cargo run --release --example conn_memory -- PID ADDR N [TEAM]`

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("server pid");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pid: u32 = args[0].parse().expect("PID");
    let addr = &args[1];
    let n: usize = args[2].parse().expect("N");
    let team = args.get(3).cloned().unwrap_or_else(|| "default".into());
    let token = std::env::var("OPSWIRE_TOKEN").ok();

    let before = rss_kib(pid);
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
        if let Some(t) = &token {
            req.headers_mut()
                .insert("Authorization", format!("Bearer {t}").parse().unwrap());
        }
        let (mut ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("connect");
        let sub = serde_json::json!({"op":"subscribe","team":team,"streams":["metrics"]});
        ws.send(Message::text(sub.to_string())).await.unwrap();
        clients.push(ws);
    }
    // Every subscriber has its first metrics frame: all sessions are live.
    for ws in clients.iter_mut() {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("frame in time")
                .expect("open")
                .expect("ok");
            if let Message::Text(t) = msg {
                if t.contains("\"type\":\"metrics\"") {
                    break;
                }
            }
        }
    }
    // Let allocator caches settle over a couple of ticks while reading.
    let settle = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < settle {
        for ws in clients.iter_mut() {
            while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(1), ws.next()).await
            {
            }
        }
    }
    let after = rss_kib(pid);
    println!(
        "subscribers={n} rss_before={before} KiB rss_after={after} KiB per_subscriber={:.1} KiB",
        (after.saturating_sub(before)) as f64 / n as f64
    );
}

//! Fan-out throughput: N subscribers of one team's logs, one ingest
//! connection publishing M logs as fast as the server takes them; reports
//! the delivered frames per second (N × M / time until every subscriber
//! has every frame). Used to measure the cost of tracing on fan-out: run it
//! against a server with OTLP export off, then on (sampler 1.0).
//!
//! `cargo run --release --example fanout_bench -- ADDR N M [TEAM]`
//! (dev mode, or OPSWIRE_TOKEN / OPSWIRE_INGEST_TOKEN for a keyed server).

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

async fn connect(
    addr: &str,
    token: Option<&str>,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut()
            .insert("Authorization", format!("Bearer {t}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(req)
        .await
        .expect("connect")
        .0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args[0].clone();
    let n: usize = args[1].parse().expect("N");
    let m: u64 = args[2].parse().expect("M");
    let team = args.get(3).cloned().unwrap_or_else(|| "default".into());
    let read_token = std::env::var("OPSWIRE_TOKEN").ok();
    let ingest_token = std::env::var("OPSWIRE_INGEST_TOKEN").ok();

    let mut readers = Vec::with_capacity(n);
    for _ in 0..n {
        let mut ws = connect(&addr, read_token.as_deref()).await;
        let sub = serde_json::json!({"op":"subscribe","id":1,"team":team,"streams":["logs"]});
        ws.send(Message::text(sub.to_string())).await.unwrap();
        loop {
            if let Some(Ok(Message::Text(t))) = ws.next().await {
                if t.contains("\"subscribed\"") {
                    break;
                }
            }
        }
        readers.push(ws);
    }
    let started = Instant::now();
    let tasks: Vec<_> = readers
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut got = 0u64;
                while got < m {
                    match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
                        Ok(Some(Ok(Message::Text(t)))) if t.starts_with("{\"type\":\"log\"") => {
                            got += 1
                        }
                        Ok(Some(Ok(_))) => {}
                        _ => panic!("subscriber stalled at {got}/{m}"),
                    }
                }
                Instant::now()
            })
        })
        .collect();
    let agent = connect(&addr, ingest_token.as_deref()).await;
    let payload = "x".repeat(120);
    let (mut tx, mut rx) = agent.split();
    let team2 = team.clone();
    let acks = tokio::spawn(async move {
        let mut acked = 0u64;
        while acked < m {
            if let Some(Ok(Message::Text(t))) = rx.next().await {
                if t.contains("\"published\"") {
                    acked += 1;
                } else if t.contains("\"error\"") {
                    panic!("publish refused: {t}");
                }
            }
        }
    });
    for i in 0..m {
        let op = serde_json::json!({"op":"publish","id":i,"team":team2,"stream":"logs",
            "data":{"level":"info","source":"bench","host":"bench","message":format!("{i} {payload}")}});
        tx.send(Message::text(op.to_string())).await.unwrap();
    }
    acks.await.unwrap();
    let mut last = started;
    for t in tasks {
        last = last.max(t.await.unwrap());
    }
    drop(tx);
    let secs = last.duration_since(started).as_secs_f64();
    println!(
        "subscribers={n} logs={m} elapsed={secs:.3}s published/s={:.0} delivered frames/s={:.0}",
        m as f64 / secs,
        (n as u64 * m) as f64 / secs
    );
}

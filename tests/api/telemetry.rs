//! Telemetry, end to end: the real binary exports spans and log records
//! over OTLP (gRPC and HTTP) to a receiver built from the official protobuf
//! definitions; a dead collector costs clients nothing.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;
use crate::otlp_receiver::{Receiver, RecvSpan};

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const OP_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

fn otel_env<'a>(endpoint: &'a str, protocol: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "100"),
        ("OTEL_SERVICE_NAME", "opswire-test"),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
    ]
}

fn find<'a>(spans: &'a [RecvSpan], name: &str, trace: &str) -> Option<&'a RecvSpan> {
    spans.iter().find(|s| s.name == name && s.trace_id == trace)
}

/// One connect + auth + subscribe + ping + close, traced from the client's
/// `traceparent` on the upgrade.
async fn connection_story(bin: &Binary, rx: &Receiver) {
    let traceparent = format!("00-{CLIENT_TRACE}-00f067aa0ba902b7-01");
    let mut c = bin
        .ws(
            &token(&["default"]),
            &[("traceparent", traceparent.as_str())],
        )
        .await;
    c.subscribe("default", &["metrics"]).await;
    c.send_json(json!({"op": "ping", "id": 2})).await;
    assert_eq!(c.next_of_type("pong").await["id"], 2);
    c.inner
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        })))
        .await
        .unwrap();
    let want = [
        "GET /ws",
        "ws handshake",
        "ws subscribe",
        "ws ping",
        "ws close",
    ];
    let spans = rx
        .wait_for_spans(
            |s| want.iter().all(|n| find(s, n, CLIENT_TRACE).is_some()),
            Duration::from_secs(10),
        )
        .await;
    let http = find(&spans, "GET /ws", CLIENT_TRACE).unwrap();
    assert_eq!(
        http.parent_span_id, "00f067aa0ba902b7",
        "continues the client's span"
    );
    assert_eq!(http.kind, 2, "server span");
    assert_eq!(http.attr("http.request.method"), Some("GET"));
    assert_eq!(http.attr("url.path"), Some("/ws"));
    assert_eq!(http.attr("http.route"), Some("/ws"));
    assert_eq!(http.attr("http.response.status_code"), Some("101"));
    assert_eq!(http.attr("client.address"), Some("127.0.0.1"));
    assert_eq!(http.attr("network.protocol.name"), Some("http"));
    assert!(http.attr("user_agent.original").is_some());
    assert_eq!(
        http.resource.get("service.name").map(String::as_str),
        Some("opswire-test")
    );
    assert_eq!(
        http.resource
            .get("deployment.environment")
            .map(String::as_str),
        Some("test")
    );

    let hs = find(&spans, "ws handshake", CLIENT_TRACE).unwrap();
    assert_eq!(hs.parent_span_id, http.span_id);
    assert_eq!(hs.attr("opswire.auth"), Some("header"));
    assert_eq!(hs.attr("opswire.result"), Some("accepted"));
    assert_eq!(hs.attr("opswire.teams"), Some("default"));
    let session = hs.attr("opswire.session_id").unwrap();
    assert!(session.starts_with("s-"));

    let sub = find(&spans, "ws subscribe", CLIENT_TRACE).unwrap();
    assert_eq!(sub.parent_span_id, hs.span_id);
    assert_eq!(sub.attr("opswire.team"), Some("default"));
    assert_eq!(sub.attr("opswire.result"), Some("ok"));
    assert_eq!(sub.attr("opswire.session_id"), Some(session));
    let ping = find(&spans, "ws ping", CLIENT_TRACE).unwrap();
    assert_eq!(ping.attr("opswire.op_id"), Some("2"));

    let close = find(&spans, "ws close", CLIENT_TRACE).unwrap();
    assert_eq!(close.parent_span_id, hs.span_id);
    assert_eq!(close.attr("websocket.close.code"), Some("1000"));
    let sent: u64 = close.attr("opswire.frames_sent").unwrap().parse().unwrap();
    let received: u64 = close
        .attr("opswire.frames_received")
        .unwrap()
        .parse()
        .unwrap();
    assert!(sent >= 3, "welcome, subscribed, pong: {sent}");
    assert_eq!(received, 2, "subscribe and ping");
    assert!(close.attr("opswire.duration_ms").is_some());

    // The close is logged inside its span: the log record carries the trace.
    let logs = rx
        .wait_for_logs(
            |l| {
                l.iter()
                    .any(|r| r.body == "websocket closed" && r.trace_id == CLIENT_TRACE)
            },
            Duration::from_secs(10),
        )
        .await;
    let rec = logs.iter().find(|r| r.body == "websocket closed").unwrap();
    assert_eq!(rec.severity_text, "INFO");
    assert_eq!(rec.span_id, close.span_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_tells_a_connections_story_and_frames_link_to_traces() {
    let rx = Receiver::start_grpc();
    let endpoint = rx.endpoint();
    let bin = Binary::start(&otel_env(&endpoint, "grpc"));
    connection_story(&bin, &rx).await;

    // A publish op with its own traceparent: the frame carries that trace,
    // and the publish span (serialization and fan-out) is exported in it.
    let mut reader = bin.ws(&token(&["default"]), &[]).await;
    reader.subscribe("default", &["logs", "metrics"]).await;
    let mut agent = bin.ws(&token_with(&["default"], "ingest", 60), &[]).await;
    agent
        .send_json(
            json!({"op": "publish", "id": 1, "team": "default", "stream": "logs",
            "traceparent": format!("00-{OP_TRACE}-b7ad6b7169203331-01"),
            "data": {"level": "warn", "source": "agent", "message": "traced"}}),
        )
        .await;
    assert_eq!(agent.next_frame().await["type"], "published");
    let log = reader.next_of_type("log").await;
    assert_eq!(log["trace_id"], OP_TRACE);
    let spans = rx
        .wait_for_spans(
            |s| {
                ["ws publish", "publish logs"]
                    .iter()
                    .all(|n| find(s, n, OP_TRACE).is_some())
            },
            Duration::from_secs(10),
        )
        .await;
    let op = find(&spans, "ws publish", OP_TRACE).unwrap();
    assert_eq!(op.parent_span_id, "b7ad6b7169203331");
    let publish = find(&spans, "publish logs", OP_TRACE).unwrap();
    assert_eq!(publish.parent_span_id, op.span_id);
    assert_eq!(publish.attr("opswire.team"), Some("default"));
    assert_eq!(
        publish.attr("opswire.seq"),
        log["seq"].as_u64().map(|s| s.to_string()).as_deref()
    );
    assert!(publish.attr("opswire.serialize_us").is_some());
    assert!(publish.attr("opswire.fanout_us").is_some());
    assert_eq!(publish.attr("opswire.fanout"), Some("1"));
    assert_eq!(publish.attr("opswire.lagged"), Some("0"));
    assert!(publish.attr("messaging.message.body.size").is_some());
    assert!(
        !spans.iter().any(|s| s.name == "fan-out"),
        "the fan-out is part of the publish span"
    );

    // Metrics frames link to their tick's trace.
    let m = reader.next_of_type("metrics").await;
    let trace = m["trace_id"]
        .as_str()
        .expect("metrics frames carry trace_id")
        .to_owned();
    let spans = rx
        .wait_for_spans(
            |s| find(s, "publish metrics", &trace).is_some(),
            Duration::from_secs(10),
        )
        .await;
    assert!(find(&spans, "metrics tick", &trace).is_some());
    assert!(find(&spans, "sample host", &trace).is_some());
    let publish = find(&spans, "publish metrics", &trace).unwrap();
    assert!(publish.attr("opswire.fanout").is_some());
    assert!(publish.attr("opswire.written").is_some());
    assert!(publish.attr("opswire.conflated").is_some());
    let mut bin = bin;
    assert!(bin.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_export_works_too() {
    let rx = Receiver::start_http();
    let endpoint = rx.endpoint();
    let bin = Binary::start(&otel_env(&endpoint, "http/protobuf"));
    connection_story(&bin, &rx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_costs_clients_nothing_and_memory_stays_bounded() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut env = otel_env(&endpoint, "grpc");
    env.extend([
        ("OPSWIRE_LIMITS__INGEST_RATE", "1000000"),
        ("OPSWIRE_LIMITS__INGEST_BURST", "1000000"),
        ("OPSWIRE_LIMITS__QUEUE_LEN", "100000"),
    ]);
    let bin = Binary::start(&env);
    let mut reader = bin.ws(&token(&["default"]), &[]).await;
    reader.subscribe("default", &["logs", "metrics"]).await;
    // Metrics keep flowing at their normal pace.
    let first = reader.next_of_type("metrics").await["seq"]
        .as_u64()
        .unwrap();
    let second = reader.next_of_type("metrics").await["seq"]
        .as_u64()
        .unwrap();
    assert_eq!(second, first + 1);

    let mut agent = bin.ws(&token_with(&["default"], "ingest", 60), &[]).await;
    let before = bin.rss_kib();
    const BURST: u64 = 20_000;
    let pad = "x".repeat(200);
    let send = tokio::spawn(async move {
        for i in 0..BURST {
            let op = json!({"op": "publish", "team": "default", "stream": "logs",
                "data": {"level": "info", "source": "burst", "message": format!("{i} {pad}")}});
            agent
                .inner
                .send(Message::text(op.to_string()))
                .await
                .unwrap();
        }
        agent
    });
    // Every log arrives, in order, while export is failing.
    let mut want = 1;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while want <= BURST {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {want} of {BURST} logs arrived"
        );
        let f = reader.next_frame().await;
        if f["type"] == "log" {
            assert_eq!(f["seq"], want);
            want += 1;
        }
    }
    let _agent = send.await.unwrap();
    let after = bin.rss_kib();
    eprintln!("RSS over a {BURST}-log burst with a dead collector: {before} KiB → {after} KiB");
    // 20k logs × 3 spans would be ~60k spans if export queues were
    // unbounded; bounded, only the history (1000 logs) and the queues'
    // 2×2048 entries remain.
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB over the burst"
    );
    // Told once, not per failed batch.
    let warnings = bin
        .stderr
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("OTLP export failing"))
        .count();
    assert_eq!(warnings, 1, "{:?}", bin.stderr.lock().unwrap());
    let metrics = reqwest::get(bin.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failures = metrics
        .lines()
        .find(|l| l.starts_with("opswire_otlp_export_failures_total{signal=\"spans\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap();
    assert!(failures >= 1.0, "{failures}");
}

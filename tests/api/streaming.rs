//! Live streaming: metrics once per tick with increasing seq, and what a
//! new subscriber gets at once.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn metrics_arrive_about_once_per_second_with_increasing_seq() {
    let app = spawn_app_with(|c| c.sampler.tick_ms = 1000);
    let mut c = app.subscriber("alpha", &["metrics"]).await;
    let mut frames = Vec::new();
    while frames.len() < 4 {
        let f = c.next_of_type("metrics").await;
        assert_eq!(f["team"], "alpha");
        frames.push(f);
    }
    for w in frames.windows(2) {
        assert_eq!(
            w[1]["seq"].as_u64().unwrap(),
            w[0]["seq"].as_u64().unwrap() + 1
        );
        assert_eq!(w[1]["epoch"], w[0]["epoch"]);
        let dt_us = w[1]["ts"].as_i64().unwrap() - w[0]["ts"].as_i64().unwrap();
        assert!(
            (800_000..=1_200_000).contains(&dt_us),
            "frames {dt_us} µs apart"
        );
    }
    // The payload is this host's snapshot, as docs/protocol.md describes.
    let host = &frames[3]["data"]["hosts"][0];
    assert_eq!(host["host"], "test-host");
    assert_eq!(host["source"], "local");
    for key in ["sampled_at", "processes", "uptime_s"] {
        assert!(host[key].as_i64().unwrap() > 0, "{key}: {host}");
    }
    assert!(host["memory"]["total_bytes"].as_u64().unwrap() > 0);
    assert!(!host["cpu"]["cores_pct"].as_array().unwrap().is_empty());
    assert_eq!(host["cpu"]["load"].as_array().unwrap().len(), 3);
    assert!(host["disks"].is_array() && host["network"].is_array());
    assert_eq!(frames[3]["data"]["connections"]["team"], 1);
    assert!(frames[3]["data"]["connections"]["total"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn a_new_subscriber_gets_the_latest_metrics_and_firing_alerts_at_once() {
    // A long tick: anything that arrives quickly was not waiting for it.
    let app = spawn_app_with(|c| {
        c.sampler.tick_ms = 10_000;
    });
    // The first tick comes 250 ms after start; wait for it via readiness.
    app.wait_ready().await;
    app.publish_alert("alpha", "f-1", "firing");
    app.publish_alert("alpha", "f-2", "firing");
    app.publish_alert("alpha", "f-2", "resolved");
    app.publish_alert("beta", "f-beta", "firing");
    let (mut c, _) = app.ws_auth(&token(&["alpha"])).await;
    c.send_json(
        json!({"op": "subscribe", "id": 9, "team": "alpha", "streams": ["metrics", "alerts"]}),
    )
    .await;
    let started = std::time::Instant::now();
    let sub = c.next_frame().await;
    assert_eq!(sub["type"], "subscribed");
    assert_eq!(sub["id"], 9);
    let m = c.next_frame().await;
    assert_eq!(m["type"], "metrics");
    assert_eq!(m["seq"], 1);
    let a = c.next_frame().await;
    assert_eq!(a["type"], "alert");
    assert_eq!(a["data"]["fingerprint"], "f-1");
    assert_eq!(a["data"]["status"], "firing");
    assert!(started.elapsed() < Duration::from_secs(2));
    // f-2 resolved and beta's alert are not "firing now" for alpha.
    assert!(c.try_next_frame(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn logs_and_alerts_stream_live_in_seq_order() {
    let app = spawn_app();
    let mut c = app.subscriber("alpha", &["logs", "alerts"]).await;
    for i in 1..=5 {
        assert_eq!(app.publish_log("alpha", &format!("line {i}")), i);
    }
    app.publish_alert("alpha", "fp", "firing");
    for i in 1..=5u64 {
        let f = c.next_frame().await;
        assert_eq!(f["type"], "log");
        assert_eq!(f["seq"], i);
        assert_eq!(f["data"]["message"], format!("line {i}"));
        assert_eq!(f["data"]["level"], "INFO");
        assert!(f["ts"].as_i64().unwrap() > 1_700_000_000_000_000);
    }
    let a = c.next_frame().await;
    assert_eq!(a["type"], "alert");
    assert_eq!(a["seq"], 1);
    // Unsubscribing stops the stream.
    c.send_json(json!({"op": "unsubscribe", "id": 4, "team": "alpha", "streams": ["logs"]}))
        .await;
    let u = c.next_frame().await;
    assert_eq!(u["type"], "unsubscribed");
    assert_eq!(u["streams"], json!(["logs"]));
    app.publish_log("alpha", "after unsubscribe");
    app.publish_alert("alpha", "fp2", "firing");
    let next = c.next_frame().await;
    assert_eq!(next["type"], "alert", "only alerts remain: {next}");
}

#[tokio::test]
async fn log_filters_are_applied_by_the_server() {
    let app = spawn_app();
    let (mut c, _) = app.ws_auth(&token(&["alpha"])).await;
    c.send_json(
        json!({"op": "subscribe", "id": 1, "team": "alpha", "streams": ["logs"],
        "filter": {"logs": {"min_level": "warn", "source": "checkout-api"}}}),
    )
    .await;
    assert_eq!(c.next_frame().await["type"], "subscribed");
    let hub = &app.state.hub;
    let team = hub.team_id("alpha").unwrap();
    let rec = |level: &str, source: &str, msg: &str| {
        serde_json::from_value(json!({"level": level, "source": source, "message": msg})).unwrap()
    };
    hub.publish_log(team, &rec("info", "checkout-api", "too low"), 1)
        .await
        .unwrap();
    hub.publish_log(team, &rec("error", "other", "wrong source"), 2)
        .await
        .unwrap();
    hub.publish_log(team, &rec("error", "checkout-api", "wanted"), 3)
        .await
        .unwrap();
    let f = c.next_frame().await;
    assert_eq!(f["data"]["message"], "wanted");
    assert_eq!(f["seq"], 3);
}

#[tokio::test]
async fn ping_op_gets_pong_with_id() {
    let app = spawn_app();
    let (mut c, _) = app.ws_auth(&token(&["alpha"])).await;
    c.send_json(json!({"op": "ping", "id": 3})).await;
    let p = c.next_frame().await;
    assert_eq!(p["type"], "pong");
    assert_eq!(p["id"], 3);
    assert!(p["ts"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn ingest_tokens_publish_logs_and_host_snapshots_to_their_team_only() {
    let app = spawn_app();
    let mut reader = app.subscriber("beta", &["logs", "metrics"]).await;
    let (mut agent, _) = app.ws_auth(&token_with(&["beta"], "ingest", 60)).await;
    agent
        .send_json(json!({"op": "publish", "id": 5, "team": "beta", "stream": "logs",
            "data": {"level": "error", "source": "agent", "host": "beta-1", "message": "disk on fire"}}))
        .await;
    let ack = agent.next_frame().await;
    assert_eq!(ack, json!({"type": "published", "id": 5, "seq": 1}));
    let log = reader.next_of_type("log").await;
    assert_eq!(log["data"]["message"], "disk on fire");

    let snap = json!({"host": "beta-1", "sampled_at": 1, "cpu": {"usage_pct": 1.0},
        "memory": {"used_bytes": 1, "total_bytes": 2, "usage_pct": 50.0}});
    agent
        .send_json(
            json!({"op": "publish", "id": 6, "team": "beta", "stream": "metrics", "data": snap}),
        )
        .await;
    assert_eq!(agent.next_frame().await["type"], "published");
    loop {
        let m = reader.next_of_type("metrics").await;
        let hosts = m["data"]["hosts"].as_array().unwrap();
        if let Some(h) = hosts.iter().find(|h| h["host"] == "beta-1") {
            assert_eq!(h["source"], "agent");
            break;
        }
    }
    // Not to another team, and not with a read token.
    agent
        .send_json(
            json!({"op": "publish", "id": 7, "team": "alpha", "stream": "logs",
            "data": {"level": "info", "message": "x"}}),
        )
        .await;
    assert_eq!(agent.next_frame().await["code"], "forbidden");
    let (mut reader2, _) = app.ws_auth(&token(&["beta"])).await;
    reader2
        .send_json(
            json!({"op": "publish", "id": 8, "team": "beta", "stream": "logs",
            "data": {"level": "info", "message": "x"}}),
        )
        .await;
    let e = reader2.next_frame().await;
    assert_eq!(e["code"], "forbidden");
    assert!(e["message"].as_str().unwrap().contains("ingest"));
}

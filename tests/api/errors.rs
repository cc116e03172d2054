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

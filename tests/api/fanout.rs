//! The metrics fan-out writes frames straight to healthy sockets, and that
//! shortcut never reorders a connection's frames: `subscribed` (and its
//! replay) before live frames, nothing of a stream after `unsubscribed`.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn metrics_frames_go_straight_to_a_healthy_socket() {
    let app = spawn_app_with(|c| c.sampler.tick_ms = 100);
    let mut c = app.subscriber("alpha", &["metrics"]).await;
    let mut last = 0;
    for _ in 0..5 {
        let f = c.next_of_type("metrics").await;
        let seq = f["seq"].as_u64().unwrap();
        assert!(seq > last, "seq {seq} after {last}");
        last = seq;
    }
    // The replay went out with `subscribed` through the writer; the live
    // ones (at least the last four) went straight from the fan-out.
    let direct = app.state.metrics.frames_direct.get();
    assert!(direct >= 4, "{direct} frames written directly");
    let text = app.metrics_text().await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("opswire_frames_direct_total ") && !l.ends_with(" 0")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_and_unsubscribe_keep_their_order_under_a_fast_tick() {
    let app = spawn_app_with(|c| c.sampler.tick_ms = 50);
    let (mut c, _) = app.ws_auth(&token(&["alpha", "beta"])).await;
    // Beta's frames keep flowing throughout; alpha's come and go.
    c.subscribe("beta", &["metrics"]).await;
    // A beta frame: alpha (the first slot of every tick) has one too.
    c.next_of_type("metrics").await;
    let mut last_alpha = 0u64;
    for round in 0..30 {
        c.send_json(
            json!({"op": "subscribe", "id": round, "team": "alpha", "streams": ["metrics"]}),
        )
        .await;
        loop {
            let f = c.next_frame().await;
            assert_ne!(
                (f["type"].as_str(), f["team"].as_str()),
                (Some("metrics"), Some("alpha")),
                "round {round}: an alpha frame before `subscribed`: {f}"
            );
            if f["type"] == "subscribed" {
                break;
            }
        }
        // The replay of the latest frame comes right after `subscribed`.
        let replay = c.next_frame().await;
        assert_eq!(
            (replay["type"].as_str(), replay["team"].as_str()),
            (Some("metrics"), Some("alpha")),
            "round {round}: {replay}"
        );
        let seq = replay["seq"].as_u64().unwrap();
        assert!(
            seq >= last_alpha,
            "round {round}: replay {seq} after {last_alpha}"
        );
        last_alpha = seq;
        // Let a live alpha frame or two through.
        loop {
            let f = c.next_frame().await;
            if f["team"] == "alpha" {
                let seq = f["seq"].as_u64().unwrap();
                assert!(seq > last_alpha, "round {round}: {seq} after {last_alpha}");
                last_alpha = seq;
                break;
            }
        }
        c.send_json(
            json!({"op": "unsubscribe", "id": round, "team": "alpha", "streams": ["metrics"]}),
        )
        .await;
        loop {
            let f = c.next_frame().await;
            if f["type"] == "unsubscribed" {
                break;
            }
            if f["team"] == "alpha" {
                let seq = f["seq"].as_u64().unwrap();
                assert!(seq > last_alpha, "round {round}: {seq} after {last_alpha}");
                last_alpha = seq;
            }
        }
        // Nothing of alpha after `unsubscribed`, while beta goes on.
        for _ in 0..2 {
            let f = c.next_frame().await;
            assert_eq!(f["team"], "beta", "round {round}: after unsubscribed: {f}");
        }
    }
}

//! A stalled reader never delays the others, and when its log queue
//! overflows it gets what was queued, then `lagged`, then close 4008 — and
//! resumes from `last_seq` without losing a frame.

use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_reader_gets_lagged_and_4008_while_others_flow() {
    let app = spawn_app_with(|c| {
        c.limits.queue_len = 64;
        c.history.logs = 10_000;
    });
    let epoch = app.epoch();
    let mut stalled = app.subscriber("alpha", &["logs"]).await;
    let mut healthy = app.subscriber("alpha", &["logs"]).await;
    let big = "x".repeat(16 * 1024);
    let mut published = 0u64;
    // Lockstep: the healthy client receives every frame before the next is
    // published, while the stalled one reads nothing at all.
    while app.state.metrics.slow_consumer_closes.get() == 0 {
        published = app.publish_log("alpha", &big);
        assert!(published < 5_000, "the stalled reader never lagged");
        let f = healthy.next_frame().await;
        assert_eq!(
            f["seq"], published,
            "healthy reader is delayed or lost a frame"
        );
    }
    // A few more after the overflow: the healthy reader is unaffected.
    for _ in 0..10 {
        published = app.publish_log("alpha", "after");
        assert_eq!(healthy.next_frame().await["seq"], published);
    }

    // The stalled reader wakes up: an unbroken run 1..=K, lagged{K}, 4008.
    let (closed, frames) = stalled.expect_close().await;
    assert_eq!(closed.code, 4008, "{closed:?}");
    let (lagged, logs) = frames.split_last().expect("frames before the close");
    assert_eq!(lagged["type"], "lagged", "{lagged}");
    assert_eq!(lagged["team"], "alpha");
    assert_eq!(lagged["stream"], "logs");
    let seqs: Vec<u64> = logs.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
    let k = lagged["last_seq"].as_u64().unwrap();
    assert_eq!(seqs, (1..=k).collect::<Vec<_>>());
    assert!(k < published);

    // Resume from last_seq: the rest, exactly once.
    let (mut c, _) = app.ws_auth(&token(&["alpha"])).await;
    c.send_json(
        json!({"op": "subscribe", "id": 1, "team": "alpha", "streams": ["logs"],
        "resume": {"logs": {"epoch": epoch, "seq": k}}}),
    )
    .await;
    let s = c.next_frame().await;
    assert_eq!(s["recovered"]["logs"], true, "{s}");
    for want in k + 1..=published {
        assert_eq!(c.next_frame().await["seq"], want);
    }
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("opswire_slow_consumer_closes_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("websocket_disconnections_total{code=\"4008\"} 1"));
}

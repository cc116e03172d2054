//! Resume: exactly the missed log and alert frames, in order, with
//! `recovered:true`; a stale epoch or a seq beyond the history gives
//! `recovered:false`.

use serde_json::{json, Value};

use crate::helpers::*;

async fn subscribe_resume(c: &mut WsClient, resume: Value) -> Value {
    c.send_json(json!({"op": "subscribe", "id": 1, "team": "alpha",
        "streams": ["logs", "alerts"], "resume": resume}))
        .await;
    let s = c.next_frame().await;
    assert_eq!(s["type"], "subscribed", "{s}");
    s
}

#[tokio::test]
async fn resume_replays_exactly_the_missed_frames_in_order() {
    let app = spawn_app_with(|c| c.history.logs = 50);
    let epoch = app.epoch();
    let mut c = app.subscriber("alpha", &["logs", "alerts"]).await;
    for i in 1..=3 {
        app.publish_log("alpha", &format!("seen {i}"));
    }
    app.publish_alert("alpha", "a1", "firing");
    let mut last_log = 0;
    let mut last_alert = 0;
    for _ in 0..4 {
        let f = c.next_frame().await;
        match f["type"].as_str().unwrap() {
            "log" => last_log = f["seq"].as_u64().unwrap(),
            "alert" => last_alert = f["seq"].as_u64().unwrap(),
            t => panic!("{t}"),
        }
    }
    assert_eq!((last_log, last_alert), (3, 1));
    drop(c);

    // Missed while disconnected:
    for i in 4..=6 {
        app.publish_log("alpha", &format!("missed {i}"));
    }
    app.publish_alert("alpha", "a1", "resolved");
    app.publish_alert("alpha", "a2", "firing");

    let (mut c, _) = app.ws_auth(&token(&["alpha"])).await;
    let s = subscribe_resume(
        &mut c,
        json!({"logs": {"epoch": epoch, "seq": last_log}, "alerts": {"epoch": epoch, "seq": last_alert}}),
    )
    .await;
    assert_eq!(s["recovered"], json!({"logs": true, "alerts": true}));
    let mut logs = Vec::new();
    let mut alerts = Vec::new();
    while logs.len() < 3 || alerts.len() < 2 {
        let f = c.next_frame().await;
        match f["type"].as_str().unwrap() {
            "log" => logs.push((f["seq"].as_u64().unwrap(), f["data"]["message"].clone())),
            "alert" => alerts.push((f["seq"].as_u64().unwrap(), f["data"]["status"].clone())),
            t => panic!("{t}"),
        }
    }
    assert_eq!(
        logs,
        vec![
            (4, json!("missed 4")),
            (5, json!("missed 5")),
            (6, json!("missed 6"))
        ]
    );
    assert_eq!(alerts, vec![(2, json!("resolved")), (3, json!("firing"))]);
    // Nothing doubled after the replay; live frames continue the sequence.
    app.publish_log("alpha", "live 7");
    let f = c.next_frame().await;
    assert_eq!(
        (f["seq"].as_u64(), &f["data"]["message"]),
        (Some(7), &json!("live 7"))
    );
}

#[tokio::test]
async fn a_stale_epoch_or_a_trimmed_history_is_not_recovered() {
    let app = spawn_app_with(|c| c.history.logs = 5);
    for i in 1..=20 {
        app.publish_log("alpha", &format!("{i}"));
    }
    let epoch = app.epoch();
    let (mut c, _) = app.ws_auth(&token(&["alpha"])).await;
    let s = subscribe_resume(
        &mut c,
        json!({"logs": {"epoch": "not-this-one", "seq": 19}}),
    )
    .await;
    assert_eq!(s["recovered"]["logs"], false);
    let (mut c, _) = app.ws_auth(&token(&["alpha"])).await;
    let s = subscribe_resume(&mut c, json!({"logs": {"epoch": epoch, "seq": 3}})).await;
    assert_eq!(s["recovered"]["logs"], false);
    // Within the history it still works: the 5 kept are 16..=20.
    let (mut c, _) = app.ws_auth(&token(&["alpha"])).await;
    let s = subscribe_resume(&mut c, json!({"logs": {"epoch": epoch, "seq": 15}})).await;
    assert_eq!(s["recovered"]["logs"], true);
    for want in 16..=20u64 {
        assert_eq!(c.next_frame().await["seq"], want);
    }
}

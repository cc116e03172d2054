//! Team isolation: forbidden ops keep the connection; under many clients of
//! many teams no frame ever crosses teams.

use std::collections::HashMap;

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn subscribing_to_another_team_is_forbidden_and_the_connection_stays() {
    let app = spawn_app();
    let (mut c, _) = app.ws_auth(&token(&["alpha"])).await;
    c.send_json(json!({"op": "subscribe", "id": 2, "team": "beta", "streams": ["logs"]}))
        .await;
    let e = c.next_frame().await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["id"], 2);
    assert_eq!(e["code"], "forbidden");
    // Still open and still serving.
    c.subscribe("alpha", &["logs"]).await;
    app.publish_log("beta", "secret");
    app.publish_log("alpha", "mine");
    let f = c.next_frame().await;
    assert_eq!(f["team"], "alpha");
    assert_eq!(f["data"]["message"], "mine");
}

#[tokio::test]
async fn unknown_teams_are_not_found() {
    let app = spawn_app();
    let (mut c, _) = app.ws_auth(&token(&["*"])).await;
    c.send_json(json!({"op": "subscribe", "id": 3, "team": "nope", "streams": ["logs"]}))
        .await;
    let e = c.next_frame().await;
    assert_eq!(e["code"], "not_found");
    assert_eq!(e["id"], 3);
}

#[tokio::test]
async fn no_frame_crosses_teams_under_many_clients() {
    let app = spawn_app();
    let teams = ["alpha", "beta", "gamma"];
    const PER_TEAM: usize = 10;
    const LOGS: u64 = 20;
    let mut clients = Vec::new();
    for team in teams {
        for _ in 0..PER_TEAM {
            clients.push((
                team,
                app.subscriber(team, &["metrics", "logs", "alerts"]).await,
            ));
        }
    }
    // A client with every team sees all of them, each frame tagged right.
    let (mut all, _) = app.ws_auth(&token(&["*"])).await;
    for team in teams {
        all.subscribe(team, &["logs"]).await;
    }
    for i in 1..=LOGS {
        for team in teams {
            app.publish_log(team, &format!("{team} {i}"));
        }
    }
    for team in teams {
        app.publish_alert(team, &format!("fp-{team}"), "firing");
    }
    for (team, c) in clients.iter_mut() {
        let mut logs = 0;
        let mut alerts = 0;
        while logs < LOGS || alerts < 1 {
            let f = c.next_frame().await;
            assert_eq!(f["team"], *team, "a {team} client got {f}");
            match f["type"].as_str().unwrap() {
                "log" => {
                    logs += 1;
                    assert_eq!(f["seq"], logs);
                    assert!(f["data"]["message"].as_str().unwrap().starts_with(*team));
                }
                "alert" => {
                    alerts += 1;
                    assert_eq!(f["data"]["fingerprint"], format!("fp-{team}"));
                }
                "metrics" => {
                    for h in f["data"]["hosts"].as_array().unwrap() {
                        // Only alpha holds the local host.
                        assert_eq!(*team, "alpha", "{h}");
                    }
                }
                other => panic!("unexpected {other}"),
            }
        }
    }
    let mut per_team: HashMap<String, u64> = HashMap::new();
    while per_team.values().sum::<u64>() < LOGS * 3 {
        let f = all.next_frame().await;
        let team = f["team"].as_str().unwrap().to_owned();
        assert!(f["data"]["message"].as_str().unwrap().starts_with(&team));
        *per_team.entry(team).or_default() += 1;
    }
    assert_eq!(per_team.len(), 3);
}

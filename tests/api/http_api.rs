//! The plain HTTP endpoints (`/healthz`, `/readyz`, `/api/v1/teams`,
//! `/metrics`) and the checks made before a WebSocket upgrade (connection
//! limit, `Origin`).

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::*;

async fn get(app: &TestApp, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    tokio::time::timeout(WAIT, req.send())
        .await
        .expect("response within the wait")
        .expect("HTTP request")
}

async fn metrics_text(app: &TestApp) -> String {
    let resp = get(app, "/metrics", None).await;
    assert_eq!(resp.status(), 200);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    resp.text().await.unwrap()
}

/// A WebSocket handshake with a header token and an `Origin` header.
async fn ws_with_origin(app: &TestApp, origin: &str) -> WsClient {
    let mut req = app.ws_url().into_client_request().unwrap();
    let headers = req.headers_mut();
    headers.insert(
        "Authorization",
        format!("Bearer {}", token(&["alpha"])).parse().unwrap(),
    );
    headers.insert("Origin", origin.parse().unwrap());
    let (inner, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake within the wait")
        .expect("the upgrade itself succeeds");
    WsClient { inner }
}

/// Expects the server to refuse the origin: `error{forbidden}`, close 1008.
async fn expect_origin_refused(mut c: WsClient) {
    let (closed, frames) = c.expect_close().await;
    assert_eq!(closed.code, 1008, "{closed:?}");
    let err = frames
        .iter()
        .find(|f| f["type"] == "error")
        .unwrap_or_else(|| panic!("an error frame before the close: {frames:?}"));
    assert_eq!(err["code"], "forbidden", "{err}");
    assert!(
        frames.iter().all(|f| f["type"] != "welcome"),
        "a refused origin was welcomed: {frames:?}"
    );
}

#[tokio::test]
async fn healthz_is_ok() {
    let app = spawn_app();
    let resp = get(&app, "/healthz", None).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn readyz_is_ready_after_a_sample_and_not_ready_when_shutting_down() {
    let app = spawn_app();
    app.wait_ready().await;
    let client = reqwest::Client::new();
    let resp = client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(app.state.not_ready_reason(), None);

    app.shutdown_token().cancel();
    let reason = app.state.not_ready_reason();
    assert!(reason.is_some(), "ready while shutting down");
    // The server may already have closed its listener (and the pooled
    // connection): only an answer that does come must be a 503.
    if let Ok(resp) = client.get(app.url("/readyz")).send().await {
        assert_eq!(resp.status(), 503);
        let body: Value = resp.json().await.expect("JSON body");
        assert!(
            body["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{body}"
        );
    }
}

#[tokio::test]
async fn teams_lists_the_tokens_teams_with_subscribers_and_hosts() {
    let app = spawn_app();
    app.wait_ready().await;
    let _a1 = app.subscriber("alpha", &["metrics"]).await;
    let _a2 = app.subscriber("alpha", &["metrics"]).await;
    let _b = app.subscriber("beta", &["metrics"]).await;

    let resp = get(&app, "/api/v1/teams", Some(&token(&["alpha"]))).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let teams = body["teams"].as_array().expect("a teams array");
    assert_eq!(teams.len(), 1, "only the token's team: {body}");
    let alpha = &teams[0];
    assert_eq!(alpha["name"], "alpha", "{body}");
    assert_eq!(alpha["subscribers"], 2, "{body}");
    let hosts = alpha["hosts"].as_array().expect("a hosts array");
    assert!(hosts.contains(&json!("test-host")), "{body}");

    // `?access_token=` works too, and `*` sees every team, in config order.
    let all = token(&["*"]);
    let resp = get(&app, &format!("/api/v1/teams?access_token={all}"), None).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let names: Vec<&str> = body["teams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta", "gamma"]);
    assert_eq!(body["teams"][1]["subscribers"], 1, "{body}");
    assert_eq!(body["teams"][1]["hosts"], json!([]), "{body}");
}

#[tokio::test]
async fn teams_needs_a_valid_token() {
    let app = spawn_app();
    for token in [None, Some("not.a.jwt")] {
        let resp = get(&app, "/api/v1/teams", token).await;
        assert_eq!(resp.status(), 401, "token {token:?}");
        let body: Value = resp.json().await.expect("JSON error body");
        assert_eq!(body["type"], "error", "{body}");
        assert_eq!(body["code"], "unauthenticated", "{body}");
    }
}

#[tokio::test]
async fn metrics_is_prometheus_text_with_connection_metrics() {
    let app = spawn_app();
    let (_c, _) = app.ws_auth(&token(&["alpha"])).await;
    // `websocket_active_connections` has a sample per team from the first
    // tick on.
    let deadline = tokio::time::Instant::now() + WAIT;
    let text = loop {
        let text = metrics_text(&app).await;
        if text.contains("websocket_active_connections{") {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no websocket_active_connections sample:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        text.contains("# TYPE websocket_connections_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE websocket_active_connections gauge"),
        "{text}"
    );
    assert!(
        text.contains("websocket_connections_total{status=\"accepted\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("websocket_active_connections{team=\"alpha\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn connection_limit_refuses_the_handshake_with_503() {
    let app = spawn_app_with(|c| c.limits.max_connections = Some(2));
    let t = token(&["alpha"]);
    let (first, _) = app.ws_auth(&t).await;
    let (_second, _) = app.ws_auth(&t).await;

    match app.ws_header(&t).await {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503);
            if let Some(body) = resp.body() {
                let body: Value = serde_json::from_slice(body).expect("JSON error body");
                assert_eq!(body["code"], "unavailable", "{body}");
            }
        }
        Err(e) => panic!("expected an HTTP 503 refusal, got {e}"),
        Ok(_) => panic!("a third connection was accepted with max_connections = 2"),
    }
    let text = metrics_text(&app).await;
    assert!(
        text.contains("websocket_connections_total{status=\"rejected_limit\"} 1"),
        "{text}"
    );

    // Closing a connection frees its slot (once the server has seen it).
    drop(first);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match app.ws_header(&t).await {
            Ok(_) => break,
            Err(tungstenite::Error::Http(resp)) if resp.status() == 503 => {}
            Err(e) => panic!("{e}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot was never freed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn foreign_origin_is_closed_with_1008_same_origin_is_welcome() {
    let app = spawn_app();
    expect_origin_refused(ws_with_origin(&app, "http://evil.example").await).await;
    let text = metrics_text(&app).await;
    assert!(
        text.contains("websocket_connections_total{status=\"rejected_origin\"} 1"),
        "{text}"
    );

    let mut c = ws_with_origin(&app, &format!("http://{}", app.addr)).await;
    let welcome = c.next_frame().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
}

#[tokio::test]
async fn allowed_origins_admits_the_listed_origin_only() {
    let app = spawn_app_with(|c| c.websocket.allowed_origins = vec!["http://dash.example".into()]);
    let mut c = ws_with_origin(&app, "http://dash.example").await;
    let welcome = c.next_frame().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    c.subscribe("alpha", &["logs"]).await;

    expect_origin_refused(ws_with_origin(&app, "http://evil.example").await).await;
}

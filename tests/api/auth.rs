//! Authentication: header, first frame, missing / expired / badly signed
//! tokens, the auth timeout, and dev mode.

use serde_json::json;
use tokio_tungstenite::tungstenite::Error as WsError;

use crate::helpers::*;

fn http_status(e: WsError) -> u16 {
    match e {
        WsError::Http(resp) => resp.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[tokio::test]
async fn header_token_gets_welcome_with_its_teams() {
    let app = spawn_app();
    let (_c, welcome) = app.ws_auth(&token(&["alpha", "gamma"])).await;
    assert_eq!(welcome["teams"], json!(["alpha", "gamma"]));
    assert_eq!(welcome["streams"], json!(["metrics", "logs", "alerts"]));
    assert!(welcome["session"].as_str().unwrap().starts_with("s-"));
    assert_eq!(welcome["heartbeat_s"], 20);
    assert!(welcome["server"].as_str().unwrap().starts_with("opswire/"));
}

#[tokio::test]
async fn first_frame_auth_gets_welcome() {
    let app = spawn_app();
    let mut c = app.ws().await;
    // Nothing before auth: the first frame the server sends answers it.
    c.send_json(json!({"op": "auth", "id": 7, "token": token(&["beta"])}))
        .await;
    let welcome = c.next_frame().await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["id"], 7);
    assert_eq!(welcome["teams"], json!(["beta"]));
    c.subscribe("beta", &["logs"]).await;
}

#[tokio::test]
async fn bad_header_tokens_get_401_before_the_upgrade() {
    let app = spawn_app();
    let expired = token_with(&["alpha"], "read", -3600);
    let other_key = {
        let claims = opswire::auth::Claims {
            sub: "x".into(),
            teams: vec!["alpha".into()],
            exp: opswire::auth::now_s() + 60,
            iat: None,
            scope: None,
        };
        opswire::auth::mint(&claims, Some("a-different-secret-0123456789abcdef"), None).unwrap()
    };
    for bad in [expired.as_str(), other_key.as_str(), "garbage"] {
        let err = app.ws_header(bad).await.err().expect("refused");
        assert_eq!(http_status(err), 401, "token {bad}");
    }
}

#[tokio::test]
async fn bad_first_frame_tokens_get_unauthenticated_then_1008() {
    let app = spawn_app();
    let expired = token_with(&["alpha"], "read", -3600);
    for (tok, want) in [
        (expired.as_str(), "expired"),
        ("garbage", "invalid"),
        ("", "missing"),
    ] {
        let mut c = app.ws().await;
        c.send_json(json!({"op": "auth", "token": tok})).await;
        let (closed, frames) = c.expect_close().await;
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0]["type"], "error");
        assert_eq!(frames[0]["code"], "unauthenticated");
        assert!(
            frames[0]["message"].as_str().unwrap().contains(want),
            "{}",
            frames[0]
        );
        assert_eq!(closed.code, 1008);
    }
}

#[tokio::test]
async fn an_op_before_auth_is_refused() {
    let app = spawn_app();
    let mut c = app.ws().await;
    c.send_json(json!({"op": "subscribe", "team": "alpha", "streams": ["metrics"]}))
        .await;
    let (closed, frames) = c.expect_close().await;
    assert_eq!(frames[0]["code"], "unauthenticated");
    assert_eq!(closed.code, 1008);
}

#[tokio::test]
async fn silent_clients_are_closed_after_the_auth_timeout() {
    let app = spawn_app_with(|c| c.websocket.auth_timeout_s = 1);
    let mut c = app.ws().await;
    let started = std::time::Instant::now();
    let (closed, frames) = c.expect_close().await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    assert_eq!(frames[0]["code"], "unauthenticated");
    assert!(frames[0]["message"].as_str().unwrap().contains("auth"));
    assert_eq!(closed.code, 1008);
}

#[tokio::test]
async fn dev_mode_welcomes_anonymous_clients_with_every_team() {
    let app = spawn_app_with(|c| c.auth.jwt_secret = None);
    let mut c = app.ws().await;
    let welcome = c.next_frame().await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["teams"], json!(["alpha", "beta", "gamma"]));
    c.subscribe("gamma", &["metrics"]).await;
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[tokio::test]
async fn rs256_and_es256_public_keys_verify_tokens() {
    for alg in ["rs256", "es256"] {
        let app = spawn_app_with(|c| {
            c.auth.jwt_secret = None;
            c.auth.public_key_file = Some(fixture(&format!("{alg}-public.pem")));
        });
        let claims = opswire::auth::Claims {
            sub: "svc".into(),
            teams: vec!["beta".into()],
            exp: opswire::auth::now_s() + 60,
            iat: None,
            scope: None,
        };
        let pem = std::fs::read(fixture(&format!("{alg}-private.pem"))).unwrap();
        let good = opswire::auth::mint(&claims, None, Some(&pem)).unwrap();
        let (_c, welcome) = app.ws_auth(&good).await;
        assert_eq!(welcome["teams"], json!(["beta"]), "{alg}");
        // The other algorithm's key, and an HS256 token, are refused.
        let other = if alg == "rs256" { "es256" } else { "rs256" };
        let pem = std::fs::read(fixture(&format!("{other}-private.pem"))).unwrap();
        let wrong = opswire::auth::mint(&claims, None, Some(&pem)).unwrap();
        for bad in [wrong, token(&["beta"])] {
            let err = app.ws_header(&bad).await.err().expect("refused");
            assert_eq!(http_status(err), 401, "{alg}");
        }
        // No anonymous access: a key is configured.
        let mut c = app.ws().await;
        c.send_json(json!({"op": "subscribe", "team": "beta", "streams": ["logs"]}))
            .await;
        let (closed, _) = c.expect_close().await;
        assert_eq!(closed.code, 1008);
    }
}

#[tokio::test]
async fn a_connection_lives_no_longer_than_its_token_unless_refreshed() {
    let app = spawn_app();
    let (mut short, _) = app.ws_auth(&token_with(&["alpha"], "read", 2)).await;
    let (mut refreshed, _) = app.ws_auth(&token_with(&["alpha"], "read", 2)).await;
    refreshed
        .send_json(json!({"op": "auth", "id": 1, "token": token(&["alpha"])}))
        .await;
    assert_eq!(refreshed.next_frame().await["id"], 1);
    let started = std::time::Instant::now();
    let (closed, frames) = short.expect_close().await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    assert_eq!(closed.code, 1008);
    assert_eq!(frames.last().unwrap()["message"], "token expired");
    // The refreshed one is still served.
    refreshed.send_json(json!({"op": "ping", "id": 2})).await;
    assert_eq!(refreshed.next_frame().await["type"], "pong");
}

#[tokio::test]
async fn dev_mode_answers_only_requests_from_this_machine() {
    let app = spawn_app_with(|c| c.auth.jwt_secret = None);
    let client = reqwest::Client::new();
    let get = |host: &'static str, origin: Option<&'static str>| {
        let mut r = client.get(app.url("/api/v1/teams")).header("host", host);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    assert_eq!(get("localhost:8080", None).await.unwrap().status(), 200);
    assert_eq!(
        get("127.0.0.1", Some("http://127.0.0.1:8080"))
            .await
            .unwrap()
            .status(),
        200
    );
    // A DNS-rebinding page has its own host name; a cross-site page its origin.
    let r = get("evil.example:8080", None).await.unwrap();
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("loopback"));
    assert_eq!(
        get("127.0.0.1", Some("http://evil.example"))
            .await
            .unwrap()
            .status(),
        403
    );
    let r = client
        .post(app.url("/api/v1/logs"))
        .header("origin", "https://evil.example")
        .body(r#"{"level":"error","message":"injected"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

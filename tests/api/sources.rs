//! Sources: a real Alertmanager sending its webhook to opswire, silences
//! created in it from the stream, and log ingest (JSON, OTLP).

use std::process::{Child, Command};
use std::time::Duration;

use prost::Message as _;
use serde_json::{json, Value};

use crate::helpers::*;

const WEBHOOK_TOKEN: &str = "alertmanager-webhook-token-0123";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real Alertmanager (Debian's `prometheus-alertmanager`) on a free
/// loopback port, sending its webhook to `opswire_url` with a bearer token.
struct Alertmanager {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    fn start(port: u16, opswire: &str) -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            r#"
route:
  receiver: opswire
  group_by: ['alertname', 'team', 'instance']
  group_wait: 100ms
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: opswire
    webhook_configs:
      - url: {opswire}/api/v1/alerts/alertmanager
        send_resolved: true
        http_config:
          authorization:
            credentials: {WEBHOOK_TOKEN}
"#
        );
        let path = dir.path().join("alertmanager.yml");
        std::fs::write(&path, config).unwrap();
        let check = Command::new("amtool")
            .args(["check-config", path.to_str().unwrap()])
            .output()
            .expect("amtool is installed (prometheus-alertmanager)");
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stdout)
        );
        let child = spawn_alertmanager(dir.path(), &path, None, port);
        Alertmanager {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/-/ready", self.url)).await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "alertmanager never ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn post_alert(&self, labels: Value, ends_at: Option<&str>) {
        let mut alert = json!({"labels": labels, "annotations": {"summary": "test"},
            "startsAt": "2026-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph"});
        if let Some(e) = ends_at {
            alert["endsAt"] = json!(e);
        }
        let r = reqwest::Client::new()
            .post(format!("{}/api/v2/alerts", self.url))
            .json(&json!([alert]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The next alert frame, checking every frame on the way is of `team`.
async fn next_alert(c: &mut WsClient, team: &str) -> Value {
    loop {
        let f = c.next_frame().await;
        assert_eq!(f["team"], team, "a frame of another team: {f}");
        if f["type"] == "alert" {
            return f;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_alerts_reach_their_team_and_silences_reach_alertmanager() {
    let am_port = free_port();
    let app = spawn_app_with(|c| {
        c.alertmanager.webhook_token = Some(WEBHOOK_TOKEN.into());
        c.alertmanager.url = Some(format!("http://127.0.0.1:{am_port}"));
    });
    let am = Alertmanager::start(am_port, &format!("http://{}", app.addr));
    am.wait_ready().await;
    let mut alpha = app.subscriber("alpha", &["alerts"]).await;
    let mut beta = app.subscriber("beta", &["alerts"]).await;

    am.post_alert(
        json!({"alertname": "HighCpu", "team": "alpha", "severity": "critical", "instance": "a1"}),
        None,
    )
    .await;
    am.post_alert(
        json!({"alertname": "DiskFull", "team": "beta", "severity": "warning", "instance": "b1"}),
        None,
    )
    .await;
    let a = next_alert(&mut alpha, "alpha").await;
    assert_eq!(a["data"]["status"], "firing");
    assert_eq!(a["data"]["alertname"], "HighCpu");
    assert_eq!(a["data"]["severity"], "critical");
    assert_eq!(a["data"]["labels"]["instance"], "a1");
    assert_eq!(a["data"]["annotations"]["summary"], "test");
    assert_eq!(a["data"]["ends_at"], Value::Null);
    assert_eq!(a["data"]["generator_url"], "http://prometheus/graph");
    let fingerprint = a["data"]["fingerprint"].as_str().unwrap().to_owned();
    let b = next_alert(&mut beta, "beta").await;
    assert_eq!(b["data"]["alertname"], "DiskFull");

    // Resolving sends `resolved`.
    am.post_alert(
        json!({"alertname": "HighCpu", "team": "alpha", "severity": "critical", "instance": "a1"}),
        Some("2026-01-01T00:00:01Z"),
    )
    .await;
    let r = next_alert(&mut alpha, "alpha").await;
    assert_eq!(r["data"]["status"], "resolved");
    assert_eq!(r["data"]["fingerprint"], fingerprint.as_str());
    assert!(r["data"]["ends_at"].is_string());

    // A firing alert silenced from the stream.
    am.post_alert(
        json!({"alertname": "HighLoad", "team": "alpha", "severity": "warning", "instance": "a2"}),
        None,
    )
    .await;
    let z = next_alert(&mut alpha, "alpha").await;
    assert_eq!(z["data"]["alertname"], "HighLoad");
    let fp = z["data"]["fingerprint"].as_str().unwrap();
    // Not by another team, not for an unknown fingerprint.
    beta.send_json(
        json!({"op": "silence", "id": 1, "team": "alpha", "fingerprint": fp, "duration_s": 600}),
    )
    .await;
    assert_eq!(beta.next_frame().await["code"], "forbidden");
    alpha
        .send_json(json!({"op": "silence", "id": 2, "team": "alpha", "fingerprint": "nope", "duration_s": 600}))
        .await;
    assert_eq!(alpha.next_non_metrics().await["code"], "not_found");
    alpha
        .send_json(
            json!({"op": "silence", "id": 3, "team": "alpha", "fingerprint": fp,
            "duration_s": 600, "comment": "on it"}),
        )
        .await;
    let s = alpha.next_non_metrics().await;
    assert_eq!(s["type"], "silenced", "{s}");
    assert_eq!(s["id"], 3);
    let silence_id = s["silence_id"].as_str().unwrap();

    // Alertmanager lists it, with equality matchers on the alert's labels.
    let query = Command::new("amtool")
        .args([
            "silence",
            "query",
            "-o",
            "json",
            "--alertmanager.url",
            &am.url,
        ])
        .output()
        .unwrap();
    assert!(query.status.success());
    let silences: Value = serde_json::from_slice(&query.stdout).unwrap();
    let ours = silences
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == silence_id)
        .unwrap_or_else(|| panic!("silence {silence_id} not in {silences}"));
    assert_eq!(ours["comment"], "on it");
    assert_eq!(ours["createdBy"], "tester");
    let matchers = ours["matchers"].as_array().unwrap();
    assert!(matchers.iter().any(|m| m["name"] == "alertname"
        && m["value"] == "HighLoad"
        && m["isEqual"] == true
        && m["isRegex"] == false));
    assert!(matchers
        .iter()
        .any(|m| m["name"] == "instance" && m["value"] == "a2"));
    // Beta never saw an alpha alert (checked frame by frame above) and got
    // nothing after its own.
    assert!(beta
        .try_next_frame(Duration::from_millis(300))
        .await
        .is_none());
}

#[tokio::test]
async fn silence_without_a_reachable_alertmanager_is_unavailable() {
    let app =
        spawn_app_with(|c| c.alertmanager.url = Some(format!("http://127.0.0.1:{}", free_port())));
    app.publish_alert("alpha", "fp-1", "firing");
    let mut c = app.subscriber("alpha", &["alerts"]).await;
    assert_eq!(c.next_frame().await["type"], "alert");
    c.send_json(
        json!({"op": "silence", "id": 1, "team": "alpha", "fingerprint": "fp-1", "duration_s": 60}),
    )
    .await;
    let e = c.next_non_metrics().await;
    assert_eq!(e["code"], "unavailable");
    assert!(
        e["message"].as_str().unwrap().contains("unreachable"),
        "{e}"
    );
}

fn webhook_alert(team: Option<&str>, status: &str, fp: &str) -> Value {
    let mut labels = json!({"alertname": "X", "severity": "warning"});
    if let Some(t) = team {
        labels["team"] = json!(t);
    }
    json!({"status": status, "labels": labels, "annotations": {}, "startsAt": "2026-11-22T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": fp})
}

fn webhook(alerts: Vec<Value>) -> Value {
    json!({"version": "4", "groupKey": "{}", "truncatedAlerts": 0, "status": "firing",
        "receiver": "opswire", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://am", "alerts": alerts})
}

async fn post_webhook(app: &TestApp, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(app.url("/api/v1/alerts/alertmanager"))
        .json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn webhook_validates_the_whole_payload_and_routes_by_team_label() {
    let app = spawn_app_with(|c| {
        c.alertmanager.webhook_token = Some(WEBHOOK_TOKEN.into());
        c.alertmanager.default_team = Some("gamma".into());
    });
    let (s, e) = post_webhook(&app, None, &webhook(vec![])).await;
    assert_eq!((s, e["code"].as_str()), (401, Some("unauthenticated")));
    let (s, _) = post_webhook(&app, Some("wrong-token"), &webhook(vec![])).await;
    assert_eq!(s, 401);
    // A read token, or an ingest token for one team only, may not post.
    let (s, e) = post_webhook(
        &app,
        Some(&token_with(&["*"], "read", 60)),
        &webhook(vec![]),
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (403, Some("forbidden")));

    let mut bad = webhook(vec![webhook_alert(Some("alpha"), "firing", "ok-1")]);
    bad["version"] = json!("3");
    let (s, e) = post_webhook(&app, Some(WEBHOOK_TOKEN), &bad).await;
    assert_eq!(s, 400);
    assert!(e["message"].as_str().unwrap().contains("version"), "{e}");
    // One bad alert: nothing of the payload is applied.
    let bad = webhook(vec![
        webhook_alert(Some("alpha"), "firing", "ok-1"),
        webhook_alert(Some("alpha"), "burning", "bad-2"),
    ]);
    let (s, e) = post_webhook(&app, Some(WEBHOOK_TOKEN), &bad).await;
    assert_eq!(s, 400);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("alerts[1].status"),
        "{e}"
    );
    assert!(app
        .state
        .hub
        .firing_alerts(app.state.hub.team_id("alpha").unwrap())
        .is_empty());
    let (s, _) = post_webhook(&app, Some(WEBHOOK_TOKEN), &json!({"nope": 1})).await;
    assert_eq!(s, 400);

    let mut gamma = app.subscriber("gamma", &["alerts"]).await;
    let mut alpha = app.subscriber("alpha", &["alerts"]).await;
    let good = webhook(vec![
        webhook_alert(Some("alpha"), "firing", "a-1"),
        webhook_alert(None, "firing", "no-team"),
        webhook_alert(Some("nobody"), "firing", "unknown-team"),
    ]);
    let (s, body) = post_webhook(&app, Some(WEBHOOK_TOKEN), &good).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["published"], 3);
    assert_eq!(alpha.next_frame().await["data"]["fingerprint"], "a-1");
    assert_eq!(gamma.next_frame().await["data"]["fingerprint"], "no-team");
    assert_eq!(
        gamma.next_frame().await["data"]["fingerprint"],
        "unknown-team"
    );
    // Alertmanager repeats firing alerts: deduplicated.
    let (_, body) = post_webhook(&app, Some(WEBHOOK_TOKEN), &good).await;
    assert_eq!(
        (body["published"].as_u64(), body["deduplicated"].as_u64()),
        (Some(0), Some(3))
    );
    // An ingest token for every team works as the webhook's bearer too.
    let resolved = webhook(vec![webhook_alert(Some("alpha"), "resolved", "a-1")]);
    let (s, _) = post_webhook(&app, Some(&token_with(&["*"], "ingest", 60)), &resolved).await;
    assert_eq!(s, 200);
    assert_eq!(alpha.next_frame().await["data"]["status"], "resolved");
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("opswire_alerts_unrouted_total{reason=\"missing\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("opswire_alerts_unrouted_total{reason=\"unknown\"} 2"));
}

async fn post_logs(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    ct: &str,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let mut req = reqwest::Client::new()
        .post(app.url(path))
        .header("content-type", ct)
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

fn error_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap()
}

#[tokio::test]
async fn json_log_ingest_lines_and_arrays_with_clear_refusals() {
    let app = spawn_app_with(|c| {
        c.ingest.max_body_bytes = 4096;
        c.ingest.max_line_bytes = 1024;
    });
    let ingest = token_with(&["alpha"], "ingest", 60);
    let mut c = app.subscriber("alpha", &["logs"]).await;
    let lines = "{\"level\":\"warn\",\"source\":\"api\",\"host\":\"h1\",\"message\":\"one\",\"fields\":{\"k\":1}}\n\
                 {\"level\":\"error\",\"message\":\"two\",\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"ts\":\"2026-11-23T10:00:00Z\"}\n";
    let (s, body) = post_logs(
        &app,
        "/api/v1/logs",
        Some(&ingest),
        "application/x-ndjson",
        lines.into(),
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(error_of(&body)["accepted"], 2);
    let one = c.next_frame().await;
    assert_eq!(
        (
            one["data"]["message"].as_str(),
            one["data"]["level"].as_str()
        ),
        (Some("one"), Some("WARN"))
    );
    assert_eq!(one["data"]["fields"]["k"], 1);
    let two = c.next_frame().await;
    assert_eq!(two["data"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(two["data"]["time"], 1_795_428_000_000_000i64);
    let arr = json!([{"level": "info", "message": "three"}]).to_string();
    let (s, _) = post_logs(
        &app,
        "/api/v1/logs",
        Some(&ingest),
        "application/json",
        arr.clone().into(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(c.next_frame().await["data"]["message"], "three");

    // Refusals, and nothing of a refused body is published.
    let bad =
        "{\"level\":\"info\",\"message\":\"kept?\"}\n{\"level\":\"loud\",\"message\":\"x\"}\n";
    let (s, body) = post_logs(
        &app,
        "/api/v1/logs",
        Some(&ingest),
        "application/x-ndjson",
        bad.into(),
    )
    .await;
    assert_eq!(s, 400);
    let e = error_of(&body);
    assert!(e["message"].as_str().unwrap().starts_with("line 2:"), "{e}");
    assert!(e["message"].as_str().unwrap().contains("loud"), "{e}");
    let (s, body) = post_logs(
        &app,
        "/api/v1/logs",
        Some(&ingest),
        "application/json",
        vec![b' '; 5000],
    )
    .await;
    assert_eq!(
        (s, error_of(&body)["code"].as_str()),
        (413, Some("too_large"))
    );
    let (s, _) = post_logs(
        &app,
        "/api/v1/logs",
        None,
        "application/json",
        arr.clone().into(),
    )
    .await;
    assert_eq!(s, 401);
    let (s, body) = post_logs(
        &app,
        "/api/v1/logs",
        Some(&token(&["alpha"])),
        "application/json",
        arr.clone().into(),
    )
    .await;
    assert_eq!(
        (s, error_of(&body)["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (s, _) = post_logs(
        &app,
        "/api/v1/logs?team=beta",
        Some(&ingest),
        "application/json",
        arr.clone().into(),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = post_logs(
        &app,
        "/api/v1/logs?team=nope",
        Some(&token_with(&["*"], "ingest", 60)),
        "application/json",
        arr.clone().into(),
    )
    .await;
    assert_eq!(s, 404);
    let (s, body) = post_logs(
        &app,
        "/api/v1/logs",
        Some(&token_with(&["alpha", "beta"], "ingest", 60)),
        "application/json",
        arr.into(),
    )
    .await;
    assert_eq!(s, 400);
    assert!(error_of(&body)["message"]
        .as_str()
        .unwrap()
        .contains("?team="));
    app.publish_log("alpha", "marker");
    assert_eq!(
        c.next_frame().await["data"]["message"],
        "marker",
        "a refused body published something"
    );
}

fn otlp_request(
    team: &str,
    message: &str,
) -> opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    let s = |v: &str| {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        })
    };
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: s(v),
        ..Default::default()
    };
    opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    kv("opswire.team", team),
                    kv("service.name", "checkout"),
                    kv("host.name", "pay-1"),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: 1_795_428_000_000_000_000,
                    severity_number: 17,
                    severity_text: "ERROR".into(),
                    body: s(message),
                    attributes: vec![kv("order", "o-1")],
                    trace_id: vec![0x4b; 16],
                    span_id: vec![1; 8],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test]
async fn otlp_http_logs_in_protobuf_and_json() {
    let app = spawn_app();
    let ingest = token_with(&["alpha", "beta"], "ingest", 60);
    let mut c = app.subscriber("alpha", &["logs"]).await;
    let (s, body) = post_logs(
        &app,
        "/v1/logs",
        Some(&ingest),
        "application/x-protobuf",
        otlp_request("alpha", "proto").encode_to_vec(),
    )
    .await;
    assert_eq!(s, 200);
    let resp = opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse::decode(
        body.as_slice(),
    )
    .unwrap();
    assert!(resp.partial_success.is_none());
    let f = c.next_frame().await;
    assert_eq!(f["data"]["message"], "proto");
    assert_eq!(f["data"]["level"], "ERROR");
    assert_eq!(f["data"]["source"], "checkout");
    assert_eq!(f["data"]["host"], "pay-1");
    assert_eq!(f["data"]["fields"]["order"], "o-1");
    assert_eq!(f["data"]["trace_id"], "4b".repeat(16));
    assert_eq!(f["data"]["time"], 1_795_428_000_000_000i64);

    let json_body = serde_json::to_vec(&otlp_request("alpha", "json")).unwrap();
    let (s, _) = post_logs(
        &app,
        "/v1/logs",
        Some(&ingest),
        "application/json",
        json_body,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(c.next_frame().await["data"]["message"], "json");

    // The Collector's otlp_http exporter gzips by default.
    let gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&otlp_request("alpha", "gzipped").encode_to_vec())
            .unwrap();
        e.finish().unwrap()
    };
    let r = reqwest::Client::new()
        .post(app.url("/v1/logs"))
        .bearer_auth(&ingest)
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(gz)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(c.next_frame().await["data"]["message"], "gzipped");

    // A record for a team the token lacks: refused via partial success.
    let (s, body) = post_logs(
        &app,
        "/v1/logs",
        Some(&ingest),
        "application/x-protobuf",
        otlp_request("gamma", "no").encode_to_vec(),
    )
    .await;
    assert_eq!(s, 200);
    let resp = opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse::decode(
        body.as_slice(),
    )
    .unwrap();
    let partial = resp.partial_success.expect("partial success");
    assert_eq!(partial.rejected_log_records, 1);
    assert!(partial.error_message.contains("gamma"));
    let (s, body) = post_logs(
        &app,
        "/v1/logs",
        Some(&ingest),
        "application/x-protobuf",
        b"\xff\xff garbage".to_vec(),
    )
    .await;
    assert_eq!(s, 400, "{}", String::from_utf8_lossy(&body));
    let (s, _) = post_logs(
        &app,
        "/v1/logs",
        None,
        "application/x-protobuf",
        otlp_request("alpha", "x").encode_to_vec(),
    )
    .await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn the_access_log_streams_to_the_ops_team() {
    let app = spawn_app_with(|c| c.ingest.access_log_team = Some("gamma".into()));
    let mut ops = app.subscriber("gamma", &["logs"]).await;
    let r = reqwest::get(app.url("/healthz?probe=1")).await.unwrap();
    assert_eq!(r.status(), 200);
    loop {
        let f = ops.next_frame().await;
        if f["data"]["fields"]["path"] == "/healthz" {
            assert_eq!(f["data"]["source"], "opswire.access");
            assert_eq!(f["data"]["fields"]["status"], 200);
            assert!(f["data"]["message"]
                .as_str()
                .unwrap()
                .starts_with("GET /healthz 200"));
            break;
        }
    }
}

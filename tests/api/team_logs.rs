//! Team records for Loki: the real binary exports every log record and
//! alert change it accepts for a team as an OTLP log record, apart from its
//! own logs, to a receiver built from the official protobuf definitions;
//! a stuck collector drops and counts them and costs subscribers nothing.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::otlp_receiver::{Receiver, RecvLog};

const WEBHOOK_TOKEN: &str = "team-logs-webhook-token-0123456789";
const SOURCE_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Two teams, `payments` and `search`.
fn config(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("opswire.toml");
    std::fs::write(
        &path,
        "[[teams]]\nname = \"payments\"\n\n[[teams]]\nname = \"search\"\n",
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

fn env<'a>(
    endpoint: &'a str,
    config: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("OPSWIRE_CONFIG", config),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "100"),
        ("OTEL_SERVICE_NAME", "opswire-test"),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
        ("OPSWIRE_ALERTMANAGER__WEBHOOK_TOKEN", WEBHOOK_TOKEN),
    ];
    env.extend_from_slice(extra);
    env
}

fn team_records(logs: &[RecvLog]) -> Vec<&RecvLog> {
    logs.iter().filter(|l| l.scope == "opswire.teams").collect()
}

async fn post_logs(bin: &Binary, team: &str, body: &str) -> Value {
    let r = reqwest::Client::new()
        .post(bin.url(&format!("/api/v1/logs?team={team}")))
        .bearer_auth(token_with(&[team], "ingest", 60))
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn metric(bin: &Binary, series: &str) -> f64 {
    let text = reqwest::get(bin.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{series} not in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_log_and_alert_change_is_a_team_record_apart_from_opswires_own_logs() {
    let rx = Receiver::start_grpc();
    let endpoint = rx.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir);
    let mut bin = Binary::start(&env(&endpoint, &config, &[]));
    let mut payments = bin.ws(&token(&["payments"]), &[]).await;
    payments.subscribe("payments", &["logs", "alerts"]).await;

    // Two lines over HTTP ingest (one with the source's own trace and
    // time), one published on a WebSocket, one for another team.
    post_logs(
        &bin,
        "payments",
        &format!(
            "{}\n{}\n",
            json!({"level": "warn", "source": "checkout-api", "host": "pay-1",
                "message": "slow upstream", "fields": {"upstream": "bank", "ms": 812}}),
            json!({"level": "error", "source": "checkout-api", "host": "pay-2",
                "message": "card declined", "trace_id": SOURCE_TRACE,
                "time": "2026-11-23T10:00:00Z", "fields": {"opswire.team": "search"}})
        ),
    )
    .await;
    let mut agent = bin.ws(&token_with(&["payments"], "ingest", 60), &[]).await;
    agent
        .send_json(json!({"op": "publish", "id": 1, "team": "payments", "stream": "logs",
            "data": {"level": "info", "source": "agent", "host": "pay-1", "message": "from the agent"}}))
        .await;
    assert_eq!(agent.next_of_type("published").await["id"], 1);
    post_logs(
        &bin,
        "search",
        &json!({"level": "info", "message": "search line"}).to_string(),
    )
    .await;

    // An alert firing, the same notification again (a repeat: no change),
    // then resolved.
    let alert = |status: &str| {
        json!({"status": status,
            "labels": {"alertname": "DiskFull", "severity": "critical", "team": "payments", "host": "pay-1"},
            "annotations": {"summary": "disk / is 97% full"},
            "startsAt": "2026-11-22T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "", "fingerprint": "f00d"})
    };
    for status in ["firing", "firing", "resolved"] {
        let body = json!({"version": "4", "groupKey": "{}", "truncatedAlerts": 0, "status": status,
            "receiver": "opswire", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://am", "alerts": [alert(status)]});
        let r = reqwest::Client::new()
            .post(bin.url("/api/v1/alerts/alertmanager"))
            .bearer_auth(WEBHOOK_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    // The live frames, to compare with what was exported.
    let mut frames = Vec::new();
    while frames.len() < 5 {
        let f = payments.next_non_metrics().await;
        if f["type"] == "log" || f["type"] == "alert" {
            frames.push(f);
        }
    }

    rx.wait_for_logs(|l| team_records(l).len() >= 6, Duration::from_secs(10))
        .await;
    assert_eq!(
        metric(&bin, "opswire_team_log_records_total{result=\"queued\"}").await,
        6.0
    );
    assert_eq!(
        metric(&bin, "opswire_team_log_records_total{result=\"dropped\"}").await,
        0.0
    );
    // Shutdown flushes what is queued: nothing more comes after it.
    assert!(bin.terminate().success());
    let logs = rx.logs();
    let records = team_records(&logs);
    assert_eq!(records.len(), 6, "one record per change: {records:#?}");

    for r in &records {
        assert_eq!(
            r.resource.get("service.name").map(String::as_str),
            Some("opswire-teams"),
            "team records have a service of their own"
        );
        assert_eq!(
            r.resource.get("deployment.environment").map(String::as_str),
            Some("test"),
            "and opswire's other resource attributes"
        );
    }
    // opswire's own logs stay under its own service name, without team
    // records among them.
    let own: Vec<_> = logs.iter().filter(|l| l.scope != "opswire.teams").collect();
    assert!(!own.is_empty(), "opswire's own logs are still exported");
    for l in &own {
        assert_eq!(
            l.resource.get("service.name").map(String::as_str),
            Some("opswire-test")
        );
        assert!(l.attr("opswire.stream").is_none(), "{l:?}");
    }

    // Each payments frame has exactly one record: same seq, epoch, trace.
    let payments_records: Vec<_> = records
        .iter()
        .filter(|r| r.attr("opswire.team") == Some("payments"))
        .collect();
    assert_eq!(payments_records.len(), 5);
    for f in &frames {
        let stream = if f["type"] == "log" { "logs" } else { "alerts" };
        let seq = f["seq"].as_u64().unwrap().to_string();
        let r = payments_records
            .iter()
            .find(|r| {
                r.attr("opswire.stream") == Some(stream) && r.attr("opswire.seq") == Some(&seq)
            })
            .unwrap_or_else(|| panic!("no record for {f}"));
        assert_eq!(r.attr("opswire.epoch"), f["epoch"].as_str());
        let trace = f["trace_id"].as_str().expect("frames carry their trace");
        assert_eq!(r.trace_id, trace, "the record is in the publish's trace");
        assert_eq!(r.span_id.len(), 16);
    }

    let by_body = |b: &str| {
        *records
            .iter()
            .find(|r| r.body == b)
            .unwrap_or_else(|| panic!("no record {b:?} in {records:#?}"))
    };
    let slow = by_body("slow upstream");
    assert_eq!(slow.severity_text, "warn");
    assert_eq!(slow.severity_number, 13, "WARN");
    assert_eq!(slow.attr("host.name"), Some("pay-1"));
    assert_eq!(slow.attr("opswire.source"), Some("checkout-api"));
    assert_eq!(slow.attr("opswire.stream"), Some("logs"));
    let fields = slow.attr("opswire.fields").expect("fields as one map");
    assert!(
        fields.contains("upstream") && fields.contains("bank"),
        "{fields}"
    );

    let declined = by_body("card declined");
    assert_eq!(declined.severity_number, 17, "ERROR");
    assert_eq!(declined.attr("host.name"), Some("pay-2"));
    assert_eq!(declined.attr("opswire.record_trace_id"), Some(SOURCE_TRACE));
    assert_eq!(
        declined.time_unix_nano, 1_795_428_000_000_000_000,
        "the source's time is the record's time"
    );
    assert_eq!(
        declined.attr("opswire.team"),
        Some("payments"),
        "a field cannot pass for the team"
    );

    let agent_line = by_body("from the agent");
    assert_eq!(agent_line.attr("opswire.source"), Some("agent"));
    assert_eq!(agent_line.severity_text, "info");

    let search = by_body("search line");
    assert_eq!(search.attr("opswire.team"), Some("search"));
    assert!(search.attr("host.name").is_none(), "no empty host");

    let firing = by_body("DiskFull firing: disk / is 97% full");
    assert_eq!(firing.attr("opswire.stream"), Some("alerts"));
    assert_eq!(firing.severity_text, "error", "critical");
    assert_eq!(firing.attr("opswire.alert.name"), Some("DiskFull"));
    assert_eq!(firing.attr("opswire.alert.status"), Some("firing"));
    assert_eq!(firing.attr("opswire.alert.severity"), Some("critical"));
    assert_eq!(firing.attr("opswire.alert.fingerprint"), Some("f00d"));
    assert_eq!(firing.attr("host.name"), Some("pay-1"));
    let resolved = by_body("DiskFull resolved: disk / is 97% full");
    assert_eq!(resolved.severity_text, "info");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_logs_false_exports_only_opswires_own_logs() {
    let rx = Receiver::start_grpc();
    let endpoint = rx.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir);
    let mut bin = Binary::start(&env(
        &endpoint,
        &config,
        &[("OPSWIRE_TELEMETRY__TEAM_LOGS", "false")],
    ));
    let body = json!({"level": "error", "message": "not for loki"}).to_string();
    post_logs(&bin, "payments", &body).await;
    assert_eq!(
        metric(&bin, "opswire_team_log_records_total{result=\"queued\"}").await,
        0.0
    );
    // Shutdown flushes every queue: had a team record been queued, it
    // would be in the receiver now.
    assert!(bin.terminate().success());
    let logs = rx.logs();
    assert!(!logs.is_empty(), "opswire's own logs are exported");
    assert!(team_records(&logs).is_empty(), "{logs:#?}");
    assert!(!logs.iter().any(|l| l.body == "not for loki"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_collector_drops_and_counts_team_records_and_costs_subscribers_nothing() {
    // A collector that accepts connections and never answers.
    let stuck = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", stuck.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in stuck.incoming().map_while(Result::ok) {
            held.push(s);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir);
    let bin = Binary::start(&env(
        &endpoint,
        &config,
        &[
            ("OPSWIRE_TELEMETRY__EXPORT_QUEUE", "64"),
            ("OPSWIRE_LIMITS__INGEST_RATE", "1000000"),
            ("OPSWIRE_LIMITS__INGEST_BURST", "1000000"),
            ("OPSWIRE_LIMITS__SUBJECT_INGEST_RATE", "1000000"),
            ("OPSWIRE_LIMITS__SUBJECT_INGEST_BURST", "1000000"),
            ("OPSWIRE_LIMITS__QUEUE_LEN", "100000"),
        ],
    ));
    let mut reader = bin.ws(&token(&["payments"]), &[]).await;
    reader.subscribe("payments", &["logs"]).await;
    const LINES: u64 = 5_000;
    let body: String = (0..LINES)
        .map(|i| json!({"level": "info", "message": format!("line {i}")}).to_string() + "\n")
        .collect();
    for chunk in body.lines().collect::<Vec<_>>().chunks(1_000) {
        post_logs(&bin, "payments", &(chunk.join("\n") + "\n")).await;
    }
    // Every line reaches the subscriber, in order, while export is stuck.
    let mut want = 1;
    while want <= LINES {
        let f = reader.next_non_metrics().await;
        if f["type"] == "log" {
            assert_eq!(f["seq"], want);
            want += 1;
        }
    }
    let queued = metric(&bin, "opswire_team_log_records_total{result=\"queued\"}").await;
    let dropped = metric(&bin, "opswire_team_log_records_total{result=\"dropped\"}").await;
    assert_eq!(
        queued + dropped,
        LINES as f64,
        "each record queued or dropped"
    );
    assert!(
        queued <= 64.0 + 512.0 * 2.0,
        "at most the queue and the batches taken from it wait on a stuck collector: {queued}"
    );
    assert!(dropped > 0.0);
}

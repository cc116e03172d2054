//! `/metrics`: valid Prometheus text, every metric present after a little
//! traffic, and values that move the right way.

use std::collections::HashMap;

use serde_json::json;

use crate::helpers::*;

/// A strict-enough parser of the text exposition format: every sample line
/// is `name{label="value",…} value`, declared by `# TYPE` before use.
/// Returns samples keyed by `name{labels}` as written.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().expect("metric name");
            assert!(valid_name(name), "bad name in {line}");
            match kind {
                "HELP" => assert!(
                    parts.next().is_some_and(|h| !h.is_empty()),
                    "empty help: {line}"
                ),
                "TYPE" => {
                    let t = parts.next().unwrap();
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{line}"
                    );
                    types.insert(name.to_owned(), t.to_owned());
                }
                _ => panic!("unknown comment {line}"),
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(valid_name(name), "bad sample name: {line}");
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suf| {
                name.strip_suffix(suf)
                    .filter(|b| types.get(*b).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(base), "sample before its TYPE: {line}");
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                for pair in labels[1..labels.len() - 1]
                    .split("\",")
                    .filter(|p| !p.is_empty())
                {
                    let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                    assert!(valid_name(k), "bad label {k} in {line}");
                    assert!(v.starts_with('"'), "{line}");
                }
            }
        }
        samples.insert(series.to_owned(), value);
    }
    samples
}

async fn scrape(app: &TestApp) -> HashMap<String, f64> {
    let resp = reqwest::get(app.url("/metrics")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    parse(&resp.text().await.unwrap())
}

fn get(m: &HashMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_are_present_and_move_the_right_way() {
    let app = spawn_app();
    app.wait_ready().await;
    let before = scrape(&app).await;

    let mut c = app.subscriber("alpha", &["metrics", "logs"]).await;
    // Let a tick count the subscriber and deliver a frame (delivery lag).
    c.next_of_type("metrics").await;
    c.next_of_type("metrics").await;
    c.send_text("{broken").await;
    assert_eq!(c.next_of_type("error").await["code"], "bad_request");
    app.publish_log("alpha", "one");
    c.next_of_type("log").await;
    let (mut agent, _) = app.ws_auth(&token_with(&["alpha"], "ingest", 60)).await;
    agent
        .send_json(
            json!({"op": "publish", "id": 1, "team": "alpha", "stream": "logs",
            "data": {"level": "info", "message": "via ws"}}),
        )
        .await;
    assert_eq!(agent.next_frame().await["type"], "published");
    agent
        .send_json(json!({"op": "publish", "id": 2, "team": "alpha", "stream": "logs", "data": {}}))
        .await;
    assert_eq!(agent.next_frame().await["code"], "bad_request");

    let during = scrape(&app).await;
    let up = |series: &str| get(&during, series) - get(&before, series);
    assert_eq!(up("websocket_connections_total{status=\"accepted\"}"), 2.0);
    assert_eq!(
        get(&during, "websocket_active_connections{team=\"alpha\"}"),
        1.0
    );
    assert_eq!(up("websocket_errors_total{code=\"bad_request\"}"), 2.0);
    assert!(up("websocket_messages_total{direction=\"in\",type=\"subscribe\"}") >= 1.0);
    assert!(up("websocket_messages_total{direction=\"in\",type=\"invalid\"}") >= 1.0);
    assert!(up("websocket_messages_total{direction=\"out\",type=\"data\"}") >= 3.0);
    assert!(up("websocket_message_duration_seconds_count") >= 3.0);
    assert!(
        get(
            &during,
            "opswire_delivery_lag_seconds_count{stream=\"metrics\"}"
        ) >= 1.0
    );
    assert!(
        get(
            &during,
            "opswire_delivery_lag_seconds_count{stream=\"logs\"}"
        ) >= 2.0
    );
    assert!(
        get(
            &during,
            "opswire_frames_published_total{stream=\"metrics\"}"
        ) >= 2.0
    );
    assert_eq!(
        get(&during, "opswire_frames_published_total{stream=\"logs\"}"),
        2.0
    );
    assert_eq!(
        get(
            &during,
            "opswire_history_frames{stream=\"logs\",team=\"alpha\"}"
        ),
        2.0
    );
    assert!(get(&during, "opswire_fanout_subscribers_count{stream=\"logs\"}") >= 2.0);
    assert!(get(&during, "opswire_sampler_duration_seconds_count") >= 1.0);
    assert_eq!(
        get(
            &during,
            "opswire_ingest_total{source=\"ws\",stream=\"logs\"}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &during,
            "opswire_ingest_rejected_total{reason=\"invalid\",source=\"ws\"}"
        ),
        1.0
    );
    assert!(
        get(
            &during,
            "opswire_http_requests_total{route=\"/metrics\",status=\"200\"}"
        ) >= 1.0
    );
    assert!(
        get(
            &during,
            "opswire_http_request_duration_seconds_count{route=\"/ws\"}"
        ) >= 2.0
    );
    assert!(get(&during, "opswire_open_connections") >= 2.0);
    assert!(get(&during, "process_resident_memory_bytes") > 0.0);
    assert!(
        get(
            &during,
            "opswire_host_cpu_usage_percent{host=\"test-host\",team=\"alpha\"}"
        ) >= 0.0
    );
    assert!(
        during.contains_key("opswire_host_cpu_usage_percent{host=\"test-host\",team=\"alpha\"}")
    );
    assert!(
        get(
            &during,
            "opswire_host_memory_total_bytes{host=\"test-host\",team=\"alpha\"}"
        ) > 0.0
    );
    assert!(during
        .keys()
        .any(|k| k.starts_with("opswire_host_disk_total_bytes{")));
    assert!(during
        .keys()
        .any(|k| k.starts_with("opswire_host_network_receive_bytes_per_second{")));
    assert!(during.contains_key("opswire_slow_consumer_closes_total"));
    assert!(during.contains_key("opswire_otlp_export_failures_total{signal=\"spans\"}"));
    // No unbounded label values: never a session id or a raw path.
    assert!(!during
        .keys()
        .any(|k| k.contains("s-") && k.contains("session")));

    // Connections down again after close (gauges update on the next tick).
    drop(c);
    drop(agent);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let after = scrape(&app).await;
        if get(&after, "websocket_active_connections{team=\"alpha\"}") == 0.0
            && get(&after, "opswire_open_connections") == 0.0
        {
            let closed = get(&after, "websocket_disconnections_total{code=\"abnormal\"}")
                + get(&after, "websocket_disconnections_total{code=\"1000\"}");
            assert!(
                closed >= 2.0,
                "{closed}: {:?}",
                after
                    .iter()
                    .filter(|(k, _)| k.contains("disconn") || k.contains("open"))
                    .collect::<Vec<_>>()
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections never went down"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

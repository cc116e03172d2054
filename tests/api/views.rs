//! Metrics views (docs/protocol.md, "Views"): `full`, `summary` and named
//! hosts, over real WebSockets and SSE, with a fleet published the way
//! agents publish it (`publish` ops with an ingest token).

use std::collections::BTreeMap;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

const TEAM: &str = "beta";
/// The fleet: 12 hosts, so that a glob picks some and not others.
const HOSTS: [&str; 12] = [
    "db-1", "db-10", "db-2", "pay-1", "pay-2", "pay-3", "pay-4", "pay-5", "web-1", "web-2",
    "web-3", "web-4",
];
/// `sampled_at` of the first published snapshot (µs), so staleness is
/// known: two seconds before the test process first asked.
fn sampled_at() -> i64 {
    static AT: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *AT.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        now.as_micros() as i64 - 2_000_000
    })
}

/// A server whose hosts never go stale during a test, with small view
/// limits to hit.
fn app() -> TestApp {
    spawn_app_with(|c| {
        c.sampler.stale_after_ticks = 10_000;
        c.limits.max_view_patterns = 3;
        c.limits.max_view_pattern_len = 16;
        c.limits.max_host_views_per_team = 2;
    })
}

/// Host `i`'s snapshot: two disks (the second the fuller), two
/// interfaces, numbers that round exactly.
fn snapshot(i: usize) -> Value {
    let f = i as f64;
    json!({
        "host": HOSTS[i],
        "sampled_at": sampled_at() + i as i64 * 1000,
        "cpu": {"usage_pct": 10.5 + f, "cores_pct": [1.0, 2.0], "load": [0.25 + f, 1.0, 2.0]},
        "memory": {"used_bytes": 100, "total_bytes": 200, "usage_pct": 50.5,
            "swap_used_bytes": 0, "swap_total_bytes": 0},
        "disks": [
            {"mount": "/", "used_bytes": 1, "total_bytes": 4, "usage_pct": 25.0},
            {"mount": "/data", "used_bytes": 3, "total_bytes": 4, "usage_pct": 60.5 + f}
        ],
        "network": [
            {"iface": "eth0", "rx_bytes_per_s": 1000.0 + f, "tx_bytes_per_s": 10.0},
            {"iface": "eth1", "rx_bytes_per_s": 500.0, "tx_bytes_per_s": 20.0 + f}
        ],
        "processes": 42,
        "uptime_s": 7
    })
}

/// Publishes every host of the fleet as an agent does.
async fn publish_fleet(app: &TestApp) {
    let (mut agent, _) = app.ws_auth(&token_with(&[TEAM], "ingest", 3600)).await;
    for i in 0..HOSTS.len() {
        agent
            .send_json(
                json!({"op": "publish", "id": i, "team": TEAM, "stream": "metrics",
                "data": snapshot(i)}),
            )
            .await;
        let r = agent.next_non_metrics().await;
        assert_eq!(r["type"], "published", "{r}");
    }
}

async fn reader(app: &TestApp) -> WsClient {
    app.ws_auth(&token(&[TEAM])).await.0
}

/// Subscribes to the team's metrics with `view` (absent when None); the
/// `subscribed` reply.
async fn subscribe(c: &mut WsClient, view: Option<Value>) -> Value {
    let mut op = json!({"op": "subscribe", "id": 7, "team": TEAM, "streams": ["metrics"]});
    if let Some(v) = view {
        op["view"] = v;
    }
    c.send_json(op).await;
    c.next_non_metrics().await
}

/// The next metrics frame, raw (the exact bytes the server sent).
async fn next_raw_metrics(c: &mut WsClient) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let msg = tokio::time::timeout_at(deadline, c.inner.next())
            .await
            .expect("a metrics frame within the wait")
            .expect("connection open")
            .expect("frame");
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "metrics" {
                return t.to_string();
            }
        }
    }
}

/// The next metrics frame that shows the whole fleet (`want` hosts).
async fn frame_with(c: &mut WsClient, want: usize) -> (String, Value) {
    loop {
        let raw = next_raw_metrics(c).await;
        let v: Value = serde_json::from_str(&raw).unwrap();
        if v["data"]["hosts"].as_array().unwrap().len() == want {
            return (raw, v);
        }
    }
}

fn names(frame: &Value) -> Vec<String> {
    frame["data"]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        // A summary row is an array led by the name; a snapshot an object.
        .map(|h| h.get(0).unwrap_or(&h["host"]).as_str().unwrap().to_owned())
        .collect()
}

/// The names of a summary row's values (`data.columns`), in order.
const COLUMNS: [&str; 9] = [
    "host",
    "cpu",
    "mem",
    "disk",
    "rx",
    "tx",
    "load1",
    "sampled_at",
    "age_ms",
];

/// What the summary row of host `i` must say in a frame stamped `ts`.
fn expected_summary(i: usize, ts: i64) -> Value {
    let f = i as f64;
    let sampled_at = sampled_at() + i as i64 * 1000;
    json!([
        HOSTS[i],
        10.5 + f,
        50.5,
        60.5 + f,
        1500 + i as u64,
        30 + i as u64,
        0.25 + f,
        sampled_at,
        (ts - sampled_at).div_euclid(1000),
    ])
}

#[tokio::test]
async fn each_view_shows_what_it_names_and_full_is_unchanged() {
    let app = app();
    publish_fleet(&app).await;
    let mut full = reader(&app).await;
    let mut summary = reader(&app).await;
    let mut named = reader(&app).await;
    let r = subscribe(&mut full, None).await;
    assert_eq!(r["type"], "subscribed", "{r}");
    assert!(r.get("view").is_none(), "no view asked, none echoed: {r}");
    let r = subscribe(&mut summary, Some(json!("summary"))).await;
    assert_eq!(r["view"], "summary", "{r}");
    let r = subscribe(
        &mut named,
        Some(json!({"hosts": ["pay-*", "db-1", "pay-*"]})),
    )
    .await;
    assert_eq!(
        r["view"],
        json!({"hosts": ["db-1", "pay-*"]}),
        "normalized: {r}"
    );

    // Full: the whole snapshots, as before views (no `view` field).
    let (_, f) = frame_with(&mut full, HOSTS.len()).await;
    assert_eq!(f["type"], "metrics");
    assert!(f["data"].get("view").is_none(), "{}", f["data"]);
    assert_eq!(names(&f), HOSTS);
    let mut published = snapshot(3);
    published["source"] = json!("agent");
    assert_eq!(f["data"]["hosts"][3], published);
    assert!(f["data"]["connections"]["team"].as_u64().unwrap() >= 3);

    // Summary: a few numbers per host, derived from the snapshots.
    let (raw, s) = frame_with(&mut summary, HOSTS.len()).await;
    assert_eq!(s["type"], "metrics");
    assert_eq!(s["team"], TEAM);
    assert_eq!(s["data"]["view"], "summary");
    assert_eq!(s["data"]["connections"], f["data"]["connections"]);
    let ts = s["ts"].as_i64().unwrap();
    assert_eq!(s["data"]["columns"], json!(COLUMNS), "{raw}");
    for (i, h) in s["data"]["hosts"].as_array().unwrap().iter().enumerate() {
        assert_eq!(*h, expected_summary(i, ts), "host {i}");
    }
    for h in s["data"]["hosts"].as_array().unwrap() {
        // About 60 bytes besides the name (a whole snapshot: 400 and more).
        let size = h.to_string().len() - h[0].as_str().unwrap().len();
        assert!(size < 70, "{size} bytes for one host: {h} in {raw}");
    }

    // Named hosts: whole snapshots of exactly the matching hosts.
    let (_, n) = frame_with(&mut named, 6).await;
    assert_eq!(n["data"]["view"], "hosts");
    assert_eq!(
        names(&n),
        ["db-1", "pay-1", "pay-2", "pay-3", "pay-4", "pay-5"]
    );
    assert_eq!(n["data"]["hosts"][2]["disks"][1]["mount"], "/data");
}

/// Reads both clients until they hold a frame of the same seq; returns
/// the two raw frames.
async fn same_seq(a: &mut WsClient, b: &mut WsClient) -> (String, String) {
    let seq = |raw: &str| {
        serde_json::from_str::<Value>(raw).unwrap()["seq"]
            .as_u64()
            .unwrap()
    };
    let mut fa = next_raw_metrics(a).await;
    let mut fb = next_raw_metrics(b).await;
    for _ in 0..50 {
        match seq(&fa).cmp(&seq(&fb)) {
            std::cmp::Ordering::Equal => return (fa, fb),
            std::cmp::Ordering::Less => fa = next_raw_metrics(a).await,
            std::cmp::Ordering::Greater => fb = next_raw_metrics(b).await,
        }
    }
    panic!("no common seq");
}

#[tokio::test]
async fn subscribers_of_one_view_get_the_same_bytes() {
    let app = app();
    publish_fleet(&app).await;
    let mut a = reader(&app).await;
    let mut b = reader(&app).await;
    subscribe(&mut a, Some(json!("summary"))).await;
    subscribe(&mut b, Some(json!("summary"))).await;
    let (fa, fb) = same_seq(&mut a, &mut b).await;
    assert_eq!(fa, fb);
    // Same set named in another order: the same frame.
    subscribe(&mut a, Some(json!({"hosts": ["web-*", "db-2"]}))).await;
    subscribe(&mut b, Some(json!({"hosts": ["db-2", "web-*", "web-*"]}))).await;
    loop {
        let (fa, fb) = same_seq(&mut a, &mut b).await;
        let v: Value = serde_json::from_str(&fa).unwrap();
        if v["data"]["view"] == "hosts" {
            assert_eq!(fa, fb);
            assert_eq!(names(&v), ["db-2", "web-1", "web-2", "web-3", "web-4"]);
            break;
        }
    }
}

#[tokio::test]
async fn a_new_subscribe_replaces_the_view() {
    let app = app();
    publish_fleet(&app).await;
    let mut c = reader(&app).await;
    subscribe(&mut c, Some(json!("summary"))).await;
    let (_, s) = frame_with(&mut c, HOSTS.len()).await;
    assert_eq!(s["data"]["view"], "summary");
    // Adding a stream without `view` keeps the view.
    c.send_json(json!({"op": "subscribe", "id": 8, "team": TEAM, "streams": ["logs"]}))
        .await;
    let r = c.next_non_metrics().await;
    assert_eq!(r["type"], "subscribed", "{r}");
    let (_, s) = frame_with(&mut c, HOSTS.len()).await;
    assert_eq!(s["data"]["view"], "summary");
    // A view replaces it: from `subscribed` on, only the new view's
    // frames, starting with its latest (the replay).
    let r = subscribe(&mut c, Some(json!({"hosts": ["db-1"]}))).await;
    assert_eq!(r["view"], json!({"hosts": ["db-1"]}), "{r}");
    for _ in 0..3 {
        let f: Value = serde_json::from_str(&next_raw_metrics(&mut c).await).unwrap();
        assert_eq!(f["data"]["view"], "hosts", "{f}");
        assert_eq!(names(&f), ["db-1"]);
    }
    // And back to full.
    let r = subscribe(&mut c, Some(json!("full"))).await;
    assert_eq!(r["view"], "full", "{r}");
    let f: Value = serde_json::from_str(&next_raw_metrics(&mut c).await).unwrap();
    assert!(f["data"].get("view").is_none(), "{f}");
    assert_eq!(names(&f), HOSTS);
}

#[tokio::test]
async fn bad_views_are_refused_with_what_was_wrong() {
    let app = app();
    let mut c = reader(&app).await;
    for (view, says) in [
        (json!("tiny"), "unknown view `tiny`"),
        (
            json!({"hosts": ["a", "b", "c", "d"]}),
            "4 host patterns, at most 3 (limits.max_view_patterns)",
        ),
        (
            json!({"hosts": ["[a-"]}),
            "host pattern `[a-` is not a valid glob",
        ),
        (
            json!({"hosts": ["x".repeat(17)]}),
            "longer than 16 characters (limits.max_view_pattern_len)",
        ),
        (json!({"hosts": []}), "`hosts` is empty"),
        (json!({"hosts": "db-1"}), "must be an array"),
    ] {
        let r = subscribe(&mut c, Some(view.clone())).await;
        assert_eq!(r["type"], "error", "{view}: {r}");
        assert_eq!(r["id"], 7);
        assert_eq!(r["code"], "bad_request");
        let msg = r["message"].as_str().unwrap();
        assert!(msg.contains(says), "{view}: {msg}");
    }
    // Nothing was subscribed by a refused op.
    let r = subscribe(&mut c, Some(json!("summary"))).await;
    assert_eq!(r["type"], "subscribed", "{r}");

    // Two distinct sets per team here; a third is refused, a known one not.
    let mut others = Vec::new();
    for set in [json!(["pay-*"]), json!(["db-*"])] {
        let mut o = reader(&app).await;
        let r = subscribe(&mut o, Some(json!({"hosts": set}))).await;
        assert_eq!(r["type"], "subscribed", "{r}");
        others.push(o);
    }
    let r = subscribe(&mut c, Some(json!({"hosts": ["web-*"]}))).await;
    assert_eq!(r["code"], "bad_request", "{r}");
    let msg = r["message"].as_str().unwrap();
    assert!(
        msg.contains("already serves 2 distinct host views (limits.max_host_views_per_team)"),
        "{msg}"
    );
    let r = subscribe(&mut c, Some(json!({"hosts": ["db-*"]}))).await;
    assert_eq!(r["type"], "subscribed", "{r}");
    // A set whose only subscriber leaves the team's metrics frees its
    // place.
    others[0]
        .send_json(json!({"op": "unsubscribe", "id": 9, "team": TEAM, "streams": ["metrics"]}))
        .await;
    let r = others[0].next_non_metrics().await;
    assert_eq!(r["type"], "unsubscribed", "{r}");
    let r = subscribe(&mut c, Some(json!({"hosts": ["web-*"]}))).await;
    assert_eq!(
        r["type"], "subscribed",
        "a departed subscriber's set still counts: {r}"
    );
}

/// An event stream's metrics events, parsed.
struct Sse {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
}

impl Sse {
    async fn open(app: &TestApp, query: &str) -> Result<Sse, (u16, String)> {
        let t = token(&[TEAM]);
        let resp = reqwest::get(app.url(&format!(
            "/sse?team={TEAM}&streams=metrics&access_token={t}&{query}"
        )))
        .await
        .unwrap();
        if !resp.status().is_success() {
            return Err((resp.status().as_u16(), resp.text().await.unwrap()));
        }
        Ok(Sse {
            body: resp.bytes_stream().boxed(),
            buf: String::new(),
        })
    }

    /// The next event's type and data.
    async fn next_event(&mut self) -> (String, String) {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
                for line in block.lines() {
                    if let Some((k, v)) = line.split_once(':') {
                        fields.insert(k, v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if let (Some(e), Some(d)) = (fields.get("event"), fields.get("data")) {
                    return (e.to_string(), d.to_string());
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.body.next())
                .await
                .expect("an event within the wait")
                .expect("stream open")
                .expect("chunk");
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    async fn metrics_with(&mut self, want: usize) -> Value {
        loop {
            let (event, data) = self.next_event().await;
            if event == "metrics" {
                let v: Value = serde_json::from_str(&data).unwrap();
                if v["data"]["hosts"].as_array().unwrap().len() == want {
                    return v;
                }
            }
        }
    }
}

#[tokio::test]
async fn sse_takes_views_as_query_parameters() {
    let app = app();
    publish_fleet(&app).await;
    let mut summary = Sse::open(&app, "view=summary").await.unwrap();
    let s = summary.metrics_with(HOSTS.len()).await;
    assert_eq!(s["data"]["view"], "summary");
    let ts = s["ts"].as_i64().unwrap();
    assert_eq!(s["data"]["hosts"][0], expected_summary(0, ts));

    let mut named = Sse::open(&app, "hosts=db-1,web-*").await.unwrap();
    let n = named.metrics_with(5).await;
    assert_eq!(n["data"]["view"], "hosts");
    assert_eq!(names(&n), ["db-1", "web-1", "web-2", "web-3", "web-4"]);

    let mut full = Sse::open(&app, "view=full").await.unwrap();
    let f = full.metrics_with(HOSTS.len()).await;
    assert!(f["data"].get("view").is_none(), "{}", f["data"]);

    for (query, says) in [
        (
            "view=hosts",
            "view `hosts` needs the query parameter `hosts`",
        ),
        ("view=tiny", "unknown view `tiny`"),
        ("view=summary&hosts=db-1", "`hosts` is for view `hosts`"),
        ("hosts=a,b,c,d", "at most 3 (limits.max_view_patterns)"),
    ] {
        let (status, body) = Sse::open(&app, query).await.err().expect(query);
        assert_eq!(status, 400, "{query}");
        assert!(body.contains(says), "{query}: {body}");
    }
}

/// Cluster mode: each process builds its views from the hosts its hub
/// holds, its own and those the other processes shared (whose summary
/// numbers it takes from the shared snapshot).
#[tokio::test]
async fn cluster_nodes_build_views_from_every_nodes_hosts() {
    use crate::cluster::harness::{Node, Redis};
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let a = Node::start(dir.path(), "a", &redis).await;
    let b = Node::start(dir.path(), "b", &redis).await;
    let mut summary = a.bin.ws(&token(&["alpha"]), &[]).await;
    summary
        .send_json(
            json!({"op": "subscribe", "team": "alpha", "streams": ["metrics"],
            "view": "summary"}),
        )
        .await;
    assert_eq!(summary.next_non_metrics().await["type"], "subscribed");
    let mut named = b.bin.ws(&token(&["alpha"]), &[]).await;
    named
        .send_json(
            json!({"op": "subscribe", "team": "alpha", "streams": ["metrics"],
            "view": {"hosts": ["host-a"]}}),
        )
        .await;
    assert_eq!(named.next_non_metrics().await["type"], "subscribed");

    // Node a's summary shows b's host with b's numbers.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let remote = loop {
        let f = summary.next_of_type("metrics").await;
        assert_eq!(f["data"]["view"], "summary", "{f}");
        let hosts = f["data"]["hosts"].as_array().unwrap().clone();
        if let Some(h) = hosts.iter().find(|h| h[0] == "host-b") {
            break (h.clone(), f["ts"].as_i64().unwrap());
        }
        assert!(tokio::time::Instant::now() < deadline, "{f}");
    };
    let (h, ts) = remote;
    let col = |name: &str| &h[COLUMNS.iter().position(|c| *c == name).unwrap()];
    let sampled_at = col("sampled_at").as_i64().unwrap();
    assert!(sampled_at > 0, "b's numbers, not defaults: {h}");
    assert_eq!(
        col("age_ms").as_i64().unwrap(),
        (ts - sampled_at).div_euclid(1000)
    );
    assert!(col("mem").as_f64().unwrap() > 0.0, "{h}");

    // Node b's named-hosts view holds a's host only.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let f = named.next_of_type("metrics").await;
        assert_eq!(f["data"]["view"], "hosts", "{f}");
        let got = names(&f);
        assert!(got.iter().all(|n| n == "host-a"), "{got:?}");
        if got == ["host-a"] {
            assert_eq!(f["data"]["hosts"][0]["host"], "host-a");
            assert!(f["data"]["hosts"][0]["cpu"]["usage_pct"].is_number());
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{f}");
    }
}

//! When Redis or a node fails: publishers are told at once, subscribers
//! stay, nothing acknowledged is lost, and nothing is delivered twice.

use std::time::Duration;

use serde_json::json;

use super::harness::{frames, no_more, seqs, Node, Redis};
use crate::helpers::{token, token_with};

#[tokio::test]
async fn redis_killed_and_restarted_with_aof_loses_nothing_acknowledged_and_doubles_nothing() {
    let mut redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let a = Node::start(dir.path(), "a", &redis).await;
    let b = Node::start(dir.path(), "b", &redis).await;
    let mut sub = b.subscriber("alpha", &["logs", "metrics"]).await;
    let mut publisher = a.bin.ws(&token_with(&["alpha"], "ingest", 600), &[]).await;
    for i in 0..20 {
        a.log("alpha", &format!("before-{i}")).await;
    }
    assert_eq!(
        seqs(&frames(&mut sub, "logs", 20).await),
        (1..=20).collect::<Vec<u64>>()
    );

    redis.kill();
    // Publishers are told at once and clearly.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let (status, body, retry) = loop {
        let r = a.post_logs("alpha", &["while-down".into()]).await;
        if r.0 != 200 {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "still accepted");
    };
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("broker"),
        "{body}"
    );
    assert!(retry.is_some(), "503 without Retry-After");
    publisher
        .send_json(
            json!({"op": "publish", "id": 9, "team": "alpha", "stream": "logs",
            "data": {"level": "info", "message": "ws-while-down"}}),
        )
        .await;
    let r = publisher.next_non_metrics().await;
    assert_eq!(
        (r["type"].as_str(), r["code"].as_str()),
        (Some("error"), Some("unavailable")),
        "{r}"
    );
    let (s, ready) = a.readyz().await;
    assert_eq!(s, 503);
    assert!(
        ready["reason"].as_str().unwrap().contains("broker"),
        "{ready}"
    );
    // Subscribers stay, with their node's metrics.
    assert_eq!(sub.next_of_type("metrics").await["team"], "alpha");

    redis.restart();
    a.wait_ready().await;
    b.wait_ready().await;
    for i in 0..20 {
        a.log("alpha", &format!("after-{i}")).await;
    }
    // The same subscriber: the acknowledged ones, in order, once; none
    // of the refused.
    let got = frames(&mut sub, "logs", 20).await;
    assert_eq!(seqs(&got), (21..=40).collect::<Vec<u64>>());
    assert_eq!(got[0]["data"]["message"], "after-0");
    assert!(no_more(&mut sub, "logs", Duration::from_millis(300))
        .await
        .is_empty());
    // And a resume from the start finds all forty.
    let epoch = got[0]["epoch"].as_str().unwrap().to_owned();
    let mut late = a.bin.ws(&token(&["alpha"]), &[]).await;
    late.send_json(
        json!({"op": "subscribe", "id": 2, "team": "alpha", "streams": ["logs"],
        "resume": {"logs": {"epoch": epoch, "seq": 0}}}),
    )
    .await;
    let r = late.next_non_metrics().await;
    assert_eq!(r["recovered"]["logs"], true, "{r}");
    let all = frames(&mut late, "logs", 40).await;
    assert_eq!(seqs(&all), (1..=40).collect::<Vec<u64>>());
}

#[tokio::test]
async fn the_clients_of_a_node_killed_with_sigkill_resume_on_another() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let mut a = Node::start(dir.path(), "a", &redis).await;
    let b = Node::start(dir.path(), "b", &redis).await;
    let c = Node::start(dir.path(), "c", &redis).await;
    let mut sub = a.subscriber("alpha", &["logs", "alerts"]).await;
    for i in 0..10 {
        b.log("alpha", &format!("one-{i}")).await;
    }
    let got = frames(&mut sub, "logs", 10).await;
    let epoch = got[9]["epoch"].as_str().unwrap().to_owned();
    a.kill();
    for i in 0..5 {
        b.log("alpha", &format!("two-{i}")).await;
    }
    let mut moved = c.bin.ws(&token(&["alpha"]), &[]).await;
    moved
        .send_json(
            json!({"op": "subscribe", "id": 3, "team": "alpha", "streams": ["logs"],
            "resume": {"logs": {"epoch": epoch, "seq": 10}}}),
        )
        .await;
    let r = moved.next_non_metrics().await;
    assert_eq!(r["recovered"]["logs"], true, "{r}");
    let got = frames(&mut moved, "logs", 5).await;
    assert_eq!(seqs(&got), [11, 12, 13, 14, 15]);
    assert_eq!(got[4]["data"]["message"], "two-4");
}

#[tokio::test]
async fn a_node_started_while_redis_is_down_is_not_ready_and_serves_once_it_is_back() {
    let mut redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    redis.kill();
    let config = super::harness::config_file(dir.path(), "a", &redis, "");
    let bin = crate::helpers::Binary::start(&[("OPSWIRE_CONFIG", config.to_str().unwrap())]);
    let node = Node {
        bin,
        name: "a".into(),
    };
    let (s, ready) = node.readyz().await;
    assert_eq!(s, 503, "{ready}");
    assert!(
        ready["reason"].as_str().unwrap().contains("broker"),
        "{ready}"
    );
    let (s, body, _) = node.post_logs("alpha", &["early".into()]).await;
    assert_eq!(s, 503, "{body}");
    redis.restart();
    node.wait_ready().await;
    assert_eq!(node.log("alpha", "now").await, 1);
}

#[tokio::test]
async fn a_redis_that_stops_answering_gets_bounded_publishes_and_back_pressure_not_a_queue() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let a = Node::start_with(dir.path(), "a", &redis, "max_in_flight = 8", &[]).await;
    let mut sub = a.subscriber("alpha", &["logs"]).await;
    assert_eq!(a.log("alpha", "first").await, 1);
    frames(&mut sub, "logs", 1).await;

    redis.pause(true);
    // 40 publishers at once against a Redis that answers nothing: at most
    // 8 wait for it (each refused within broker.timeout_ms, 1 s here),
    // the rest are refused at once as busy.
    let started = std::time::Instant::now();
    let lines: Vec<[String; 1]> = (0..40).map(|i| [format!("stuck-{i}")]).collect();
    let posts = lines.iter().map(|l| a.post_logs("alpha", l));
    let answers = futures_util::future::join_all(posts).await;
    let waited = started.elapsed();
    let busy = answers
        .iter()
        .filter(|(s, b, _)| *s == 503 && b["message"].as_str().unwrap().contains("busy"))
        .count();
    assert!(
        answers
            .iter()
            .all(|(s, _, retry)| *s == 503 && retry.is_some()),
        "{answers:?}"
    );
    assert!(busy >= 32, "only {busy} of 40 refused as busy: {answers:?}");
    // Each waits at most 2 × timeout_ms (1 s here): unsent, then sent.
    assert!(
        waited < Duration::from_secs(5),
        "publishers waited {waited:?}"
    );
    let (s, _) = a.readyz().await;
    assert_eq!(s, 503, "not ready while the broker does not answer");

    redis.pause(false);
    a.wait_ready().await;
    // A publish refused as busy never reached Redis: never delivered. One
    // that timed out was sent, and Redis may run it when it wakes (its
    // refusal said so): delivered at most once, in order, before what
    // comes next.
    let maybe: Vec<String> = answers
        .iter()
        .zip(&lines)
        .filter(|((_, b, _), _)| {
            b["message"]
                .as_str()
                .unwrap()
                .contains("may have been stored")
        })
        .map(|(_, l)| l[0].clone())
        .collect();
    let next = a.log("alpha", "after").await;
    let got = frames(&mut sub, "logs", (next - 1) as usize).await;
    assert_eq!(seqs(&got), (2..=next).collect::<Vec<u64>>());
    let (last, before) = got.split_last().unwrap();
    assert_eq!(last["data"]["message"], "after");
    for f in before {
        let m = f["data"]["message"].as_str().unwrap().to_owned();
        assert!(
            maybe.contains(&m),
            "{m} was refused without being sent, yet delivered"
        );
    }
    assert!(no_more(&mut sub, "logs", Duration::from_millis(300))
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_keeps_what_redis_refused_and_sends_it_once_redis_is_back() {
    use std::io::Write;
    let mut redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let a = Node::start(dir.path(), "a", &redis).await;
    let mut sub = a.subscriber("alpha", &["logs"]).await;
    let log = dir.path().join("app.log");
    let append = |text: &str| {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };
    append("");
    let agent = crate::helpers::opswire_command()
        .args(["agent", "--hub", &format!("ws://{}", a.bin.addr)])
        .args(["--host", "agent-c", "--tick-ms", "200"])
        .args(["--tail", log.to_str().unwrap()])
        .env("OPSWIRE_AGENT_TOKEN", token_with(&["alpha"], "ingest", 600))
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("agent starts");
    let _agent = Reaped(agent);
    // Tailing from the end: lines count once the agent is connected.
    let mut m = a.subscriber("alpha", &["metrics"]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let f = m.next_of_type("metrics").await;
        let hosts = f["data"]["hosts"].as_array().unwrap();
        if hosts.iter().any(|h| h["host"] == "agent-c") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent never connected"
        );
    }
    drop(m);
    append("before\n");
    assert_eq!(
        frames(&mut sub, "logs", 1).await[0]["data"]["message"],
        "before"
    );

    redis.kill();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while a.readyz().await.0 == 200 {
        assert!(tokio::time::Instant::now() < deadline, "still ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lines: Vec<String> = (0..20).map(|i| format!("during {i:02}")).collect();
    append(&lines.iter().map(|l| format!("{l}\n")).collect::<String>());
    // Refused while Redis is down (`unavailable`): held by the agent.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = reqwest::get(a.bin.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let refused = m
            .lines()
            .find(|l| l.starts_with("opswire_broker_publishes_total{result=\"unavailable\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        if refused >= 20.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {refused} refused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis.restart();
    let got = frames(&mut sub, "logs", 20).await;
    let messages: Vec<&str> = got
        .iter()
        .map(|f| f["data"]["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, lines, "every line, in order, once");
    assert_eq!(seqs(&got), (2..=21).collect::<Vec<u64>>());
    assert!(no_more(&mut sub, "logs", Duration::from_millis(500))
        .await
        .is_empty());
}

/// A child process killed on drop (a failing test leaves none behind).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn rediss_with_a_password_works_and_a_wrong_password_says_why_without_echoing_it() {
    let redis = Redis::start_tls("s3cret-pw");
    let dir = tempfile::tempdir().unwrap();
    let cert = redis.cert_file();
    // The system's roots, plus this test's CA (rustls-native-certs reads
    // SSL_CERT_FILE).
    let tls = |pw: &str| format!("url = \"rediss://:{pw}@127.0.0.1:{}\"\n", redis.port);
    let env = [("SSL_CERT_FILE", cert.to_str().unwrap())];
    let start = |name: &str, pw: &str| {
        let config = super::harness::config_file(dir.path(), name, &redis, "");
        // The harness wrote a plain `url`; point it at the TLS one.
        let text = std::fs::read_to_string(&config).unwrap();
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("url = ") {
                    tls(pw)
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(&config, text).unwrap();
        let mut envs = vec![("OPSWIRE_CONFIG", config.to_str().unwrap().to_owned())];
        envs.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Node {
            bin: crate::helpers::Binary::start(&envs),
            name: name.into(),
        }
    };
    let a = start("a", "s3cret-pw");
    let b = start("b", "s3cret-pw");
    a.wait_ready().await;
    b.wait_ready().await;
    let mut sub = b.subscriber("alpha", &["logs"]).await;
    assert_eq!(a.log("alpha", "over tls").await, 1);
    assert_eq!(
        frames(&mut sub, "logs", 1).await[0]["data"]["message"],
        "over tls"
    );

    let wrong = start("c", "not-the-password");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let reason = loop {
        let (s, r) = wrong.readyz().await;
        assert_eq!(s, 503, "{r}");
        let reason = r["reason"].as_str().unwrap().to_owned();
        if reason.to_lowercase().contains("pass") || reason.to_lowercase().contains("auth") {
            break reason;
        }
        assert!(tokio::time::Instant::now() < deadline, "{reason}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!reason.contains("not-the-password"), "{reason}");
    let log = wrong.bin.stderr.lock().unwrap().join("\n");
    assert!(
        !log.contains("not-the-password"),
        "the password is in the log"
    );
}

/// The subscriber is told it lagged (and closed 4008) at `last`; a resume
/// from there answers `recovered:false`, and the next publish starts the
/// streams over at seq 1 in a new epoch.
async fn expect_start_over(a: &Node, sub: &mut crate::helpers::WsClient, last: u64, old: &str) {
    let (closed, frames) = sub.expect_close().await;
    assert_eq!(closed.code, 4008, "{frames:?}");
    let lagged = frames
        .iter()
        .find(|f| f["type"] == "lagged")
        .expect("lagged");
    assert_eq!(lagged["last_seq"].as_u64(), Some(last), "{lagged}");
    let mut back = a.bin.ws(&token(&["alpha"]), &[]).await;
    back.send_json(
        json!({"op": "subscribe", "id": 1, "team": "alpha", "streams": ["logs"],
        "resume": {"logs": {"epoch": old, "seq": last}}}),
    )
    .await;
    let r = back.next_non_metrics().await;
    assert_eq!(r["recovered"]["logs"], false, "{r}");
    assert_eq!(a.log("alpha", "anew").await, 1);
    let f = frames_of(&mut back, 1).await.remove(0);
    assert_eq!(f["data"]["message"], "anew");
    assert_ne!(f["epoch"].as_str(), Some(old), "a new epoch");
}

async fn frames_of(c: &mut crate::helpers::WsClient, n: usize) -> Vec<serde_json::Value> {
    frames(c, "logs", n).await
}

#[tokio::test]
async fn redis_that_lost_its_data_gives_every_team_a_new_epoch_and_never_a_silent_gap() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let a = Node::start(dir.path(), "a", &redis).await;
    let b = Node::start(dir.path(), "b", &redis).await;
    let mut sub = b.subscriber("alpha", &["logs"]).await;
    for i in 0..3 {
        a.log("alpha", &format!("old-{i}")).await;
    }
    let got = frames(&mut sub, "logs", 3).await;
    let old = got[0]["epoch"].as_str().unwrap().to_owned();
    assert_eq!(redis.cli(&["FLUSHALL"]).as_deref(), Some("OK"));
    expect_start_over(&a, &mut sub, 3, &old).await;
}

#[tokio::test]
async fn redis_that_went_back_in_time_under_the_same_epoch_starts_the_team_over() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let a = Node::start(dir.path(), "a", &redis).await;
    let b = Node::start(dir.path(), "b", &redis).await;
    let mut sub = b.subscriber("alpha", &["logs"]).await;
    for i in 0..5 {
        a.log("alpha", &format!("old-{i}")).await;
    }
    let got = frames(&mut sub, "logs", 5).await;
    let old = got[0]["epoch"].as_str().unwrap().to_owned();
    // As a restore from an older snapshot would leave it: the epoch is
    // there, the seq counter is behind what every process has read.
    assert_eq!(
        redis
            .cli(&["SET", "opswire:{alpha}:logs:seq", "2"])
            .as_deref(),
        Some("OK")
    );
    expect_start_over(&a, &mut sub, 5, &old).await;
}

#[tokio::test]
async fn a_batch_is_taken_whole_or_refused_whole() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let a = Node::start_with(dir.path(), "a", &redis, "max_in_flight = 8", &[]).await;
    let mut sub = a.subscriber("alpha", &["logs"]).await;
    let lines: Vec<String> = (0..20).map(|i| format!("big-{i}")).collect();
    let (s, body, _) = a.post_logs("alpha", &lines).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (413, Some("too_large")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("max_in_flight"),
        "{body}"
    );
    let small: Vec<String> = (0..5).map(|i| format!("small-{i}")).collect();
    let (s, body, _) = a.post_logs("alpha", &small).await;
    assert_eq!((s, body["last_seq"].as_u64()), (200, Some(5)), "{body}");
    let got = frames(&mut sub, "logs", 5).await;
    assert_eq!(
        got[0]["data"]["message"], "small-0",
        "nothing of the refused batch"
    );
}

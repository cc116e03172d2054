//! Delivery across nodes: order, isolation, resume, hosts, counts, HA
//! webhooks.

use std::time::Duration;

use serde_json::json;

use super::harness::{alert, frames, no_more, seqs, Node, Redis};
use crate::helpers::{token, token_with};

async fn a_log_published_on_any_node_reaches_every_nodes_subscribers_once_in_seq_order(
    redis: Redis,
) {
    let dir = tempfile::tempdir().unwrap();
    let a = Node::start(dir.path(), "a", &redis).await;
    let b = Node::start(dir.path(), "b", &redis).await;
    let c = Node::start(dir.path(), "c", &redis).await;
    let mut on_b = b.subscriber("alpha", &["logs"]).await;
    let mut on_c = c.subscriber("alpha", &["logs"]).await;
    let mut other_team = c.subscriber("beta", &["logs"]).await;

    // HTTP on a, WebSocket `publish` on b, interleaved.
    let mut publisher = b.bin.ws(&token_with(&["alpha"], "ingest", 600), &[]).await;
    for i in 0..20 {
        let seq = a.log("alpha", &format!("http-{i}")).await;
        publisher
            .send_json(
                json!({"op": "publish", "id": i + 1, "team": "alpha", "stream": "logs",
                "data": {"level": "info", "source": "ws", "message": format!("ws-{i}")}}),
            )
            .await;
        let r = publisher.next_non_metrics().await;
        assert_eq!(r["type"], "published", "{r}");
        assert_eq!(
            r["seq"].as_u64(),
            Some(seq + 1),
            "one sequence across nodes"
        );
    }
    for sub in [&mut on_b, &mut on_c] {
        let got = frames(sub, "logs", 40).await;
        assert_eq!(seqs(&got), (1..=40).collect::<Vec<u64>>());
        for (i, f) in got.iter().enumerate() {
            let want = if i % 2 == 0 {
                format!("http-{}", i / 2)
            } else {
                format!("ws-{}", i / 2)
            };
            assert_eq!(f["data"]["message"], want.as_str());
            assert_eq!(f["team"], "alpha");
        }
        assert!(no_more(sub, "logs", Duration::from_millis(300))
            .await
            .is_empty());
    }
    assert!(
        no_more(&mut other_team, "logs", Duration::from_millis(300))
            .await
            .is_empty(),
        "a team sees nothing of another's"
    );
}

async fn a_resume_moves_across_nodes_and_survives_a_restart_of_every_node(redis: Redis) {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Node::start(dir.path(), "a", &redis).await;
    let mut b = Node::start(dir.path(), "b", &redis).await;
    let mut c = Node::start(dir.path(), "c", &redis).await;

    let mut sub = a.subscriber("alpha", &["logs"]).await;
    for i in 0..3 {
        b.log("alpha", &format!("before-{i}")).await;
    }
    let seen = frames(&mut sub, "logs", 3).await;
    let epoch = seen[2]["epoch"].as_str().unwrap().to_owned();
    drop(sub);
    for i in 0..5 {
        b.log("alpha", &format!("missed-{i}")).await;
    }
    // On c: exactly the five it missed.
    let resume = |seq: u64, epoch: &str| {
        json!({"op": "subscribe", "id": 7, "team": "alpha", "streams": ["logs"],
            "resume": {"logs": {"epoch": epoch, "seq": seq}}})
    };
    let mut moved = c.bin.ws(&token(&["alpha"]), &[]).await;
    moved.send_json(resume(3, &epoch)).await;
    let r = moved.next_non_metrics().await;
    assert_eq!(r["recovered"]["logs"], true, "{r}");
    let got = frames(&mut moved, "logs", 5).await;
    assert_eq!(seqs(&got), [4, 5, 6, 7, 8]);
    assert_eq!(got[0]["data"]["message"], "missed-0");
    assert!(no_more(&mut moved, "logs", Duration::from_millis(300))
        .await
        .is_empty());
    drop(moved);

    // Every process restarts; the streams, and their epoch, stay.
    for n in [&mut a, &mut b, &mut c] {
        n.bin.terminate();
    }
    let a2 = Node::start(dir.path(), "a2", &redis).await;
    let b2 = Node::start(dir.path(), "b2", &redis).await;
    for i in 0..3 {
        a2.log("alpha", &format!("after-{i}")).await;
    }
    let mut back = b2.bin.ws(&token(&["alpha"]), &[]).await;
    back.send_json(resume(8, &epoch)).await;
    let r = back.next_non_metrics().await;
    assert_eq!(r["recovered"]["logs"], true, "{r}");
    let got = frames(&mut back, "logs", 3).await;
    assert_eq!(seqs(&got), [9, 10, 11]);
    assert_eq!(got[0]["epoch"], epoch.as_str());
    assert_eq!(got[2]["data"]["message"], "after-2");
}

async fn metrics_frames_hold_every_nodes_hosts_and_team_counts_span_the_cluster(redis: Redis) {
    let dir = tempfile::tempdir().unwrap();
    let a = Node::start(dir.path(), "a", &redis).await;
    let b = Node::start(dir.path(), "b", &redis).await;
    let _subs = [
        a.subscriber("alpha", &["logs"]).await,
        b.subscriber("alpha", &["logs"]).await,
        b.subscriber("beta", &["logs"]).await,
    ];
    let mut m = a.subscriber("alpha", &["metrics"]).await;
    // Each node samples its own host; a's frames show b's too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let f = m.next_of_type("metrics").await;
        let mut hosts: Vec<&str> = f["data"]["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["host"].as_str().unwrap())
            .collect();
        hosts.sort();
        if hosts == ["host-a", "host-b"] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "hosts: {hosts:?}");
    }
    // /api/v1/teams on either node counts both nodes' subscribers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let t = b.teams().await;
        let count = |team: &str| {
            t["teams"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["name"] == team)
                .map(|x| x["subscribers"].as_u64().unwrap())
        };
        if count("alpha") == Some(3) && count("beta") == Some(1) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn one_notification_posted_to_two_nodes_makes_one_frame_and_every_node_knows_the_firing_set(
    redis: Redis,
) {
    let dir = tempfile::tempdir().unwrap();
    let a = Node::start(dir.path(), "a", &redis).await;
    let b = Node::start(dir.path(), "b", &redis).await;
    let c = Node::start(dir.path(), "c", &redis).await;
    let mut watcher = c.subscriber("alpha", &["alerts"]).await;

    // Alertmanager's HA pair: the same notification to both, at once.
    let firing = vec![
        alert("alpha", "firing", "fp-1"),
        alert("alpha", "firing", "fp-2"),
    ];
    let (ra, rb) = tokio::join!(a.webhook(firing.clone()), b.webhook(firing.clone()));
    assert_eq!((ra.0, rb.0), (200, 200));
    assert_eq!(
        ra.1["published"].as_u64().unwrap() + rb.1["published"].as_u64().unwrap(),
        2,
        "{ra:?} {rb:?}"
    );
    let got = frames(&mut watcher, "alerts", 2).await;
    assert_eq!(seqs(&got), [1, 2]);
    assert!(no_more(&mut watcher, "alerts", Duration::from_millis(500))
        .await
        .is_empty());

    // A new subscriber, on a node that joins now, gets the firing set.
    let d = Node::start(dir.path(), "d", &redis).await;
    let mut fresh = d.bin.ws(&token(&["alpha"]), &[]).await;
    fresh.subscribe("alpha", &["alerts"]).await;
    let replay = frames(&mut fresh, "alerts", 2).await;
    let mut fps: Vec<&str> = replay
        .iter()
        .map(|f| f["data"]["fingerprint"].as_str().unwrap())
        .collect();
    fps.sort();
    assert_eq!(fps, ["fp-1", "fp-2"]);

    // Resolved through both: one frame.
    let resolved = vec![alert("alpha", "resolved", "fp-1")];
    let (ra, rb) = tokio::join!(a.webhook(resolved.clone()), b.webhook(resolved));
    assert_eq!((ra.0, rb.0), (200, 200));
    let got = frames(&mut watcher, "alerts", 1).await;
    assert_eq!(
        (
            got[0]["data"]["fingerprint"].as_str(),
            got[0]["data"]["status"].as_str()
        ),
        (Some("fp-1"), Some("resolved"))
    );
    assert!(no_more(&mut watcher, "alerts", Duration::from_millis(500))
        .await
        .is_empty());
    // And the repeats of a firing alert are dropped on every node.
    let (s, r) = c.webhook(vec![alert("alpha", "firing", "fp-2")]).await;
    assert_eq!((s, r["published"].as_u64()), (200, Some(0)));
}

#[tokio::test]
async fn processes_share_one_port_with_reuse_port() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let a = Node::start_with(
        dir.path(),
        "a",
        &redis,
        "",
        &[("OPSWIRE_REUSE_PORT", "true")],
    )
    .await;
    let bind = a.bin.addr.to_string();
    // Without the option the port is taken.
    let config = super::harness::config_file(dir.path(), "x", &redis, "");
    let taken = crate::helpers::Binary::try_start_at(
        &bind,
        &[("OPSWIRE_CONFIG", config.to_str().unwrap())],
    );
    assert!(
        taken.is_none(),
        "a second process bound the port without reuse_port"
    );
    let b = crate::helpers::Binary::try_start_at(
        &bind,
        &[
            ("OPSWIRE_CONFIG", config.to_str().unwrap()),
            ("OPSWIRE_REUSE_PORT", "true"),
        ],
    )
    .expect("a second process listens on the same port with reuse_port");
    assert_eq!(a.bin.addr, b.addr);
    // One of them goes: the port is still served, by the other.
    let mut a = a;
    a.kill();
    for _ in 0..10 {
        let mut c = b.ws(&token(&["alpha"]), &[]).await;
        c.send_json(json!({"op": "ping", "id": 1})).await;
        assert_eq!(c.next_non_metrics().await["type"], "pong");
    }
}

async fn a_frame_delivered_by_one_node_carries_the_trace_of_the_publish_made_on_another(
    redis: Redis,
) {
    use crate::otlp_receiver::Receiver;
    const TRACE: &str = "5bf92f3577b34da6a3ce929d0e0e4736";
    let rx = Receiver::start_grpc();
    let endpoint = rx.endpoint();
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "100"),
        ("OTEL_SERVICE_NAME", "opswire-cluster-test"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut a = Node::start_with(dir.path(), "a", &redis, "", &otel).await;
    let mut b = Node::start_with(dir.path(), "b", &redis, "", &otel).await;
    let mut reader = a.subscriber("alpha", &["logs"]).await;
    let mut agent = b.bin.ws(&token_with(&["alpha"], "ingest", 60), &[]).await;
    agent
        .send_json(
            json!({"op": "publish", "id": 1, "team": "alpha", "stream": "logs",
            "traceparent": format!("00-{TRACE}-b7ad6b7169203331-01"),
            "data": {"level": "warn", "source": "agent", "message": "traced"}}),
        )
        .await;
    assert_eq!(agent.next_non_metrics().await["type"], "published");
    let log = frames(&mut reader, "logs", 1).await.remove(0);
    assert_eq!(log["trace_id"], TRACE, "{log}");
    // The publish (producer) and its Redis call (client, database
    // conventions) are in that trace.
    let spans = rx
        .wait_for_spans(
            |s| {
                s.iter()
                    .any(|x| x.trace_id == TRACE && x.name == "publish logs")
                    && s.iter()
                        .any(|x| x.trace_id == TRACE && x.name.starts_with("EVALSHA"))
            },
            Duration::from_secs(10),
        )
        .await;
    let publish = spans
        .iter()
        .find(|x| x.trace_id == TRACE && x.name == "publish logs")
        .unwrap();
    let call = spans
        .iter()
        .find(|x| x.trace_id == TRACE && x.name.starts_with("EVALSHA"))
        .unwrap();
    assert_eq!((publish.kind, call.kind), (4, 3), "producer, client");
    assert_eq!(call.parent_span_id, publish.span_id);
    assert_eq!(call.attr("db.system.name"), Some("redis"));
    assert_eq!(call.attr("db.operation.name"), Some("EVALSHA"));
    assert_eq!(call.attr("server.address"), Some("127.0.0.1"));
    assert_eq!(
        call.attr("server.port"),
        Some(redis.port.to_string().as_str())
    );

    // Its team record (for Loki) is exported once, by the node that
    // published it, with the frame's position and trace. Shutdown flushes
    // both nodes' queues: nothing is still on its way after it.
    assert!(a.bin.terminate().success());
    assert!(b.bin.terminate().success());
    let records: Vec<_> = rx
        .logs()
        .into_iter()
        .filter(|l| l.scope == "opswire.teams")
        .collect();
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = &records[0];
    assert_eq!(r.body, "traced");
    assert_eq!(r.trace_id, TRACE);
    assert_eq!(r.attr("opswire.team"), Some("alpha"));
    assert_eq!(r.attr("opswire.seq"), Some(log["seq"].to_string().as_str()));
    assert_eq!(r.attr("opswire.epoch"), log["epoch"].as_str());
    assert_eq!(
        r.resource.get("service.name").map(String::as_str),
        Some("opswire-teams")
    );
}

/// Each test above against one Redis, and against a 3-shard Redis Cluster.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod one_redis {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Redis::start()).await
            })*
        }
        mod redis_cluster {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Redis::start_cluster()).await
            })*
        }
    };
}

on_both!(
    a_log_published_on_any_node_reaches_every_nodes_subscribers_once_in_seq_order,
    a_resume_moves_across_nodes_and_survives_a_restart_of_every_node,
    metrics_frames_hold_every_nodes_hosts_and_team_counts_span_the_cluster,
    one_notification_posted_to_two_nodes_makes_one_frame_and_every_node_knows_the_firing_set,
    a_frame_delivered_by_one_node_carries_the_trace_of_the_publish_made_on_another,
);

//! A randomized run: three nodes, three teams, publishes to random nodes,
//! subscribers that move between nodes with a resume. Every subscriber
//! must see exactly its team's frames: none of another team, none lost,
//! none twice, all in seq order.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::json;

use super::harness::{Node, Redis};
use crate::helpers::{token, WsClient};

/// Log frames published in all.
const TOTAL: usize = 100_000;
/// Lines per HTTP publish.
const BATCH: usize = 500;
const TEAMS: [&str; 3] = ["alpha", "beta", "gamma"];

/// One subscriber's view of its team's log stream.
struct Watcher {
    team: &'static str,
    node: usize,
    client: WsClient,
    epoch: String,
    /// The last seq seen (the next must be this + 1).
    last: u64,
    moves: usize,
}

impl Watcher {
    /// Reads what is there (up to `wait` for the first frame); checks
    /// team, order, gaps and doubles as it goes.
    async fn drain(&mut self, wait: Duration) {
        let mut wait = wait;
        while let Some(f) = self.client.try_next_frame(wait).await {
            wait = Duration::from_millis(1);
            if f["type"] != "log" {
                continue;
            }
            assert_eq!(f["team"], self.team, "a frame of another team: {f}");
            let seq = f["seq"].as_u64().unwrap();
            assert_eq!(
                seq,
                self.last + 1,
                "{} on node {}: after {} came {seq} (lost or doubled)",
                self.team,
                self.node,
                self.last
            );
            self.epoch = f["epoch"].as_str().unwrap().to_owned();
            self.last = seq;
        }
    }
}

async fn watch(node: &Node, idx: usize, team: &'static str, epoch: &str, last: u64) -> WsClient {
    let mut c = node.bin.ws(&token(&[team]), &[]).await;
    let mut op = json!({"op": "subscribe", "id": 1, "team": team, "streams": ["logs"]});
    if !epoch.is_empty() {
        op["resume"] = json!({"logs": {"epoch": epoch, "seq": last}});
    }
    c.send_json(op).await;
    let r = c.next_non_metrics().await;
    assert_eq!(r["type"], "subscribed", "{r}");
    if !epoch.is_empty() {
        assert_eq!(
            r["recovered"]["logs"], true,
            "a move to node {idx} did not recover: {r}"
        );
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_randomized_run_over_three_nodes_loses_doubles_and_leaks_nothing() {
    run(Redis::start(), TOTAL).await;
}

/// The same run against a 3-shard Redis Cluster (teams on different
/// shards).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_randomized_run_over_three_nodes_and_a_redis_cluster() {
    run(Redis::start_cluster(), TOTAL).await;
}

async fn run(redis: Redis, total: usize) {
    let seed: u64 = std::env::var("CLUSTER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("CLUSTER_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        nodes.push(Node::start(dir.path(), name, &redis).await);
    }
    let mut watchers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for team in TEAMS {
            watchers.push(Watcher {
                team,
                node: i,
                client: watch(node, i, team, "", 0).await,
                epoch: String::new(),
                last: 0,
                moves: 0,
            });
        }
    }
    let mut published: BTreeMap<&str, u64> = BTreeMap::new();
    let mut sent = 0;
    while sent < total {
        let team = TEAMS[rng.random_range(0..TEAMS.len())];
        let node = &nodes[rng.random_range(0..nodes.len())];
        let n = BATCH.min(total - sent);
        let lines: Vec<String> = (0..n).map(|i| format!("{team}-{}", sent + i)).collect();
        let (s, body, _) = node.post_logs(team, &lines).await;
        assert_eq!(s, 200, "{body}");
        let last = body["last_seq"].as_u64().unwrap();
        let count = published.entry(team).or_default();
        assert_eq!(last, *count + n as u64, "seqs of {team} are one sequence");
        *count = last;
        sent += n;
        for w in watchers.iter_mut() {
            w.drain(Duration::from_millis(1)).await;
        }
        // Now and then a subscriber moves to another node with a resume.
        if rng.random_bool(0.2) {
            let i = rng.random_range(0..watchers.len());
            let to = (watchers[i].node + rng.random_range(1..nodes.len())) % nodes.len();
            let w = &mut watchers[i];
            if !w.epoch.is_empty() {
                let fresh = watch(&nodes[to], to, w.team, &w.epoch, w.last).await;
                w.client = fresh;
                w.node = to;
                w.moves += 1;
            }
        }
    }
    for w in watchers.iter_mut() {
        let want = published[w.team];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while w.last < want {
            w.drain(Duration::from_millis(200)).await;
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} on node {}: got up to {} of {want}",
                w.team,
                w.node,
                w.last
            );
        }
        w.drain(Duration::from_millis(50)).await;
        assert_eq!(w.last, want, "{}: more frames than were published", w.team);
    }
    assert_eq!(published.values().sum::<u64>(), total as u64);
    // On a Redis Cluster the teams are spread over its shards.
    let shards = redis.keys_per_shard();
    if shards.len() > 1 {
        assert!(
            shards.iter().filter(|&&n| n > 0).count() > 1,
            "keys per shard: {shards:?}"
        );
    }
    let moves: usize = watchers.iter().map(|w| w.moves).sum();
    eprintln!("{total} frames, {} watchers, {moves} moves", watchers.len());
}

//! `opswire agent` as a real process against a real hub binary: its host
//! and tailed lines reach the team's subscribers, lines written while the
//! hub is down arrive once it is back, and a token cannot publish to a
//! team it does not name.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::helpers::*;

/// Longest a whole reconnect may take: the agent's backoff ceiling grows
/// 250 ms, 500 ms, 1 s, 2 s, 4 s… while the hub is down, and the delay
/// is drawn below it.
const RECONNECT_WAIT: Duration = Duration::from_secs(15);

/// A running `opswire agent`, killed on drop. Its stderr is collected, and
/// printed when a test fails.
pub(crate) struct Agent {
    pub(crate) child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    /// The stderr reader: done once the process has exited and the pipe
    /// is drained.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Agent {
    fn start(hub: SocketAddr, token: &str, args: &[&str]) -> Agent {
        Agent::start_url(&format!("ws://{hub}"), token, args)
    }

    /// The agent with `--hub hub` (a `wss://` URL, say).
    pub(crate) fn start_url(hub: &str, token: &str, args: &[&str]) -> Agent {
        let mut cmd = opswire_command();
        cmd.arg("agent")
            .arg("--hub")
            .arg(hub)
            .args(args)
            .env("OPSWIRE_AGENT_TOKEN", token)
            .env("RUST_LOG", "info,opswire::agent=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("agent starts");
        let (stderr, reader) = collect_stderr(&mut child);
        Agent {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    pub(crate) fn log(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until a stderr line satisfies `pred`; returns its index.
    async fn wait_log(&self, what: &str, pred: impl Fn(&str) -> bool) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(i) = self.log().iter().position(|l| pred(l)) {
                return i;
            }
            assert!(Instant::now() < deadline, "the agent never logged {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) for the process to exit, and for its stderr to be
    /// read to the end.
    pub(crate) async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                if let Some(reader) = self.reader.take() {
                    tokio::task::spawn_blocking(move || reader.join())
                        .await
                        .unwrap()
                        .unwrap();
                }
                return status;
            }
            assert!(Instant::now() < deadline, "the agent did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent stderr ---\n{}", self.log().join("\n"));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ingest_token() -> String {
    token_with(&["default"], "ingest", 3600)
}

pub(crate) fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Starts `opswire serve` on `addr` (a port a killed hub just held),
/// retrying briefly while the port is not free.
fn start_hub_at(addr: SocketAddr) -> Binary {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(hub) = Binary::try_start_at(&addr.to_string(), &[]) {
            return hub;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cannot bind {addr} again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads metrics frames until one holds `host`; returns its snapshot.
async fn wait_for_host(sub: &mut WsClient, host: &str) -> (Value, Value) {
    let deadline = Instant::now() + 2 * WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = sub
            .try_next_frame(left)
            .await
            .unwrap_or_else(|| panic!("no metrics frame with host {host}"));
        if frame["type"] != "metrics" {
            continue;
        }
        let hosts = frame["data"]["hosts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(snap) = hosts.into_iter().find(|h| h["host"] == host) {
            return (frame, snap);
        }
    }
}

/// The next `n` log frames.
async fn next_logs(sub: &mut WsClient, n: usize) -> Vec<Value> {
    let mut logs = Vec::new();
    while logs.len() < n {
        let f = sub.next_frame().await;
        if f["type"] == "log" {
            logs.push(f);
        }
    }
    logs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_publishes_its_host_and_tailed_lines_then_exits_cleanly() {
    let hub = Binary::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "written before the agent started\n");
    let mut sub = hub.ws(&token(&["default"]), &[]).await;
    sub.subscribe("default", &["metrics", "logs"]).await;

    let mut agent = Agent::start(
        hub.addr,
        &ingest_token(),
        &[
            "--host",
            "agent-test-1",
            "--tail",
            log.to_str().unwrap(),
            "--tick-ms",
            "200",
        ],
    );

    let (frame, snap) = wait_for_host(&mut sub, "agent-test-1").await;
    assert_eq!(frame["team"], "default");
    assert_eq!(snap["source"], "agent", "{snap}");
    assert!(snap["cpu"]["usage_pct"].is_number(), "{snap}");
    assert!(
        snap["memory"]["total_bytes"].as_u64().unwrap() > 0,
        "{snap}"
    );
    assert!(snap["sampled_at"].as_i64().unwrap() > 0, "{snap}");

    // The agent positions its followers before it connects, so these are
    // all new lines to it; the line written before it started is not.
    append(
        &log,
        "2026-01-02T03:04:05Z ERROR payment failed\nretrying [warn] attempt 2\nplain line\r\nlast",
    );
    append(&log, " one\n");
    let logs = next_logs(&mut sub, 4).await;
    let messages: Vec<&str> = logs
        .iter()
        .map(|f| f["data"]["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages,
        [
            "2026-01-02T03:04:05Z ERROR payment failed",
            "retrying [warn] attempt 2",
            "plain line",
            "last one",
        ]
    );
    let levels: Vec<&str> = logs
        .iter()
        .map(|f| f["data"]["level"].as_str().unwrap())
        .collect();
    assert_eq!(levels, ["ERROR", "WARN", "INFO", "INFO"]);
    for f in &logs {
        assert_eq!(f["team"], "default");
        assert_eq!(f["data"]["source"], "app.log");
        assert_eq!(f["data"]["host"], "agent-test-1");
        // When the agent read the line, at or before the hub received it.
        let time = f["data"]["time"].as_i64().expect("a read time");
        assert!(time <= f["ts"].as_i64().unwrap(), "{f}");
    }
    let seqs: Vec<u64> = logs.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");

    // SIGTERM: flush, exit 0, well within the flush time.
    // SAFETY: kill(2) on our own child with a valid signal.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGTERM) };
    let status = agent.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "{status:?}");
    let log = agent.log().join("\n");
    assert!(log.contains("agent stopped"), "{log}");
    assert!(log.contains("undelivered=0"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_written_while_the_hub_is_down_arrive_after_it_returns() {
    const N: usize = 50;
    let mut hub = Binary::start(&[]);
    let addr = hub.addr;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "");
    let agent = Agent::start(
        addr,
        &ingest_token(),
        &[
            "--host",
            "agent-test-2",
            "--tail",
            log.to_str().unwrap(),
            "--tick-ms",
            "200",
        ],
    );
    {
        let mut sub = hub.ws(&token(&["default"]), &[]).await;
        sub.subscribe("default", &["metrics", "logs"]).await;
        wait_for_host(&mut sub, "agent-test-2").await;
        append(&log, "before the outage\n");
        let f = next_logs(&mut sub, 1).await.remove(0);
        assert_eq!(f["data"]["message"], "before the outage");
    }

    // The hub dies without a goodbye.
    hub.child.kill().unwrap();
    hub.child.wait().unwrap();
    let lost = agent
        .wait_log("the lost connection", |l| {
            l.contains("lost the connection to the hub")
        })
        .await;
    let expected: Vec<String> = (0..N)
        .map(|i| format!("during the outage {i:03}"))
        .collect();
    let text: String = expected.iter().map(|l| format!("{l}\n")).collect();
    append(&log, &text);
    // Wait until the agent has read them all into its buffer, so they are
    // held while the hub is down, not read after it returns.
    let deadline = Instant::now() + WAIT;
    loop {
        let read: usize = agent.log()[lost..]
            .iter()
            .filter(|l| l.contains("read lines"))
            .filter_map(|l| {
                l.split("lines=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .sum();
        if read >= N {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent read {read} of {N} lines"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let hub = start_hub_at(addr);
    let teams: Value = reqwest::Client::new()
        .get(hub.url("/api/v1/teams"))
        .bearer_auth(token(&["default"]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let epoch = teams["epoch"].as_str().expect("an epoch").to_owned();
    // Resume from the start of the new hub's history: every line it
    // received, even before this subscriber arrived.
    let mut sub = hub.ws(&token(&["default"]), &[]).await;
    sub.send_json(json!({
        "op": "subscribe", "id": 1, "team": "default", "streams": ["logs"],
        "resume": {"logs": {"epoch": epoch, "seq": 0}}
    }))
    .await;
    let subscribed = sub.next_frame().await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    assert_eq!(subscribed["recovered"]["logs"], true, "{subscribed}");

    // At least once, in order: dedupe by message, and the first arrival
    // of each line must follow the file's order.
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + RECONNECT_WAIT;
    while seen.len() < N {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(f) = sub.try_next_frame(left).await else {
            panic!(
                "only {} of {N} lines arrived: {seen:?}\nhub stderr: {:?}",
                seen.len(),
                hub.stderr.lock().unwrap()
            );
        };
        assert_eq!(f["type"], "log", "{f}");
        assert_eq!(f["data"]["host"], "agent-test-2");
        let msg = f["data"]["message"].as_str().unwrap().to_owned();
        if msg.starts_with("during the outage") && !seen.contains(&msg) {
            seen.push(msg);
        }
    }
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_one_team_cannot_publish_to_another() {
    let hub = Binary::start(&[]);
    let mut agent = Agent::start(
        hub.addr,
        &ingest_token(),
        &["--host", "agent-test-3", "--team", "other"],
    );
    let status = agent.wait_exit(WAIT).await;
    assert!(!status.success(), "{status:?}");
    let log = agent.log().join("\n");
    assert!(
        log.contains(
            "team `other` is not one of this token's teams on the hub (it grants: default)"
        ),
        "{log}"
    );
}

/// `--host-root`: the agent in a container reports the host whose `/` is
/// mounted there: that host's mount table and disks, and its processes.
/// Here the "host" is a directory holding a Docker host's recorded mount
/// table, a `data` directory (its `/data`) and a `proc` with one process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_host_root_the_agent_reports_that_hosts_disks_and_processes() {
    let hub = Binary::start(&[]);
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("proc/1")).unwrap();
    std::fs::create_dir_all(root.path().join("data")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mountinfo/docker-host"),
        root.path().join("proc/1/mountinfo"),
    )
    .unwrap();
    let mut sub = hub.ws(&token(&["default"]), &[]).await;
    sub.subscribe("default", &["metrics"]).await;
    let _agent = Agent::start(
        hub.addr,
        &ingest_token(),
        &[
            "--host",
            "docker-host-1",
            "--host-root",
            root.path().to_str().unwrap(),
            "--tick-ms",
            "200",
        ],
    );
    let (_, snap) = wait_for_host(&mut sub, "docker-host-1").await;
    // The table's disks that exist under the root (/boot and /boot/efi do
    // not here), with the table's types; no overlay, no bind mount.
    let disks: Vec<(String, String)> = snap["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert!(d["total_bytes"].as_u64().unwrap() > 0, "{d}");
            (
                d["mount"].as_str().unwrap().to_owned(),
                d["fs_type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        disks,
        [("/".into(), "ext4".into()), ("/data".into(), "xfs".into())],
        "{snap}"
    );
    assert_eq!(snap["processes"], 1, "the host root's /proc: {snap}");

    // A host root without a mount table is refused at start (exit 2),
    // naming what is missing.
    let empty = tempfile::tempdir().unwrap();
    let mut bad = Agent::start(
        hub.addr,
        &ingest_token(),
        &["--host-root", empty.path().to_str().unwrap()],
    );
    assert_eq!(bad.wait_exit(WAIT).await.code(), Some(2));
    assert!(
        bad.log().iter().any(|l| l.contains("proc/1/mountinfo")),
        "{:?}",
        bad.log()
    );
}

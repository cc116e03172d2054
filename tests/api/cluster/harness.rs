//! Cluster mode's test bench: a real `redis-server` (Debian's) on a free
//! port in a temp dir, with AOF on, that a test can kill and restart; and
//! real `opswire` processes that share it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{token, token_with, Binary, TestCa, WsClient, WAIT};

/// A real Redis server, killed on drop.
pub struct Redis {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    /// The other shards when this is a Redis Cluster (this one is the
    /// first).
    shards: Vec<Redis>,
}

/// A free port on loopback (Redis Cluster also takes port + 10000).
fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl Redis {
    /// A 3-shard Redis Cluster of Debian's redis-server (no replicas),
    /// formed with `redis-cli --cluster create`.
    pub fn start_cluster() -> Redis {
        let mut shards: Vec<Redis> = (0..3).map(|_| Redis::spawn(true)).collect();
        let addrs: Vec<String> = shards
            .iter()
            .map(|r| format!("127.0.0.1:{}", r.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        for r in &shards {
            loop {
                let info = r.cli(&["CLUSTER", "INFO"]).unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster never ok: {info}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let mut first = shards.remove(0);
        first.shards = shards;
        first
    }

    /// Teams' keys (`opswire:{…}:…`) held by each shard (one entry for a
    /// standalone Redis).
    pub fn keys_per_shard(&self) -> Vec<usize> {
        std::iter::once(self)
            .chain(&self.shards)
            .map(|r| {
                r.cli(&["--scan", "--pattern", "opswire:{*"])
                    .map_or(0, |out| out.lines().filter(|l| !l.is_empty()).count())
            })
            .collect()
    }

    /// The `[broker]` line that points at it.
    pub fn broker_line(&self) -> String {
        if self.shards.is_empty() {
            format!("url = \"{}\"", self.url())
        } else {
            let seeds: Vec<String> = std::iter::once(self)
                .chain(&self.shards)
                .map(|r| format!("\"{}\"", r.url()))
                .collect();
            format!("cluster = [{}]", seeds.join(", "))
        }
    }

    /// A standalone Redis that speaks only TLS (a certificate for
    /// 127.0.0.1 signed by a [`TestCa`], whose PEM is `cert_file()`) and
    /// wants `password`.
    pub fn start_tls(password: &str) -> Redis {
        let mut r = Redis {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            child: None,
            shards: Vec::new(),
        };
        let d = r.dir.path();
        // A CA (what clients trust, `cert_file()`) and a certificate for
        // 127.0.0.1 that it signed (what the server presents).
        let ca = TestCa::new("opswire test CA");
        ca.issue(
            "127.0.0.1",
            &["IP:127.0.0.1"],
            &d.join("cert.pem"),
            &d.join("key.pem"),
        );
        std::fs::copy(ca.pem(), d.join("ca.pem")).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &r.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", ""])
            .arg("--tls-cert-file")
            .arg(d.join("cert.pem"))
            .arg("--tls-key-file")
            .arg(d.join("key.pem"))
            .args(["--tls-auth-clients", "no", "--requirepass", password])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        r.child = Some(child);
        let deadline = Instant::now() + WAIT;
        loop {
            let out = Command::new("redis-cli")
                .args(["--tls", "--cacert"])
                .arg(d.join("ca.pem"))
                .args([
                    "-p",
                    &r.port.to_string(),
                    "--no-auth-warning",
                    "-a",
                    password,
                    "PING",
                ])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).trim() == "PONG" {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server (TLS) never answered"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The CA that signed the certificate a TLS Redis presents.
    pub fn cert_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn spawn(cluster: bool) -> Redis {
        let mut r = Redis {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            child: None,
            shards: Vec::new(),
        };
        r.start_process(cluster);
        r
    }
    /// Starts `redis-server` (AOF on, fsync every second, no RDB) and
    /// waits until it answers.
    pub fn start() -> Redis {
        Redis::spawn(false)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// (Re)starts it on the same port and data directory.
    pub fn restart(&mut self) {
        assert!(self.shards.is_empty(), "a standalone Redis");
        self.start_process(false);
    }

    fn start_process(&mut self, cluster: bool) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = Command::new("redis-server");
        if cluster {
            cmd.args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"]);
        }
        let child = cmd
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--dir", self.dir.path().to_str().unwrap()])
            .args(["--appendonly", "yes", "--save", ""])
            .args(["--maxmemory-policy", "noeviction"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test.sh installs Debian's redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while self.cli(&["PING"]).as_deref() != Some("PONG") {
            assert!(Instant::now() < deadline, "redis-server never answered");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The AOF is loaded before PING answers; say so for the reader.
    }

    /// SIGKILL: no shutdown, no final AOF rewrite.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP (`true`) or SIGCONT: a Redis that holds connections open
    /// and answers nothing, as an overloaded or swapping one does.
    pub fn pause(&self, stopped: bool) {
        let pid = self.child.as_ref().expect("running").id() as i32;
        let sig = if stopped {
            libc::SIGSTOP
        } else {
            libc::SIGCONT
        };
        // SAFETY: kill(2) on our own child with a valid signal.
        unsafe { libc::kill(pid, sig) };
    }

    /// `redis-cli` against it; None when it does not answer.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success() && !text.starts_with("Could not connect")).then_some(text)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.pause(false);
        }
        self.kill();
    }
}

/// Three teams, `alpha` with a webhook token; each node names its own
/// sampler host (`host-<name>`).
pub fn config_file(dir: &std::path::Path, name: &str, redis: &Redis, extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let toml = format!(
        r#"
[sampler]
tick_ms = 200
host_name = "host-{name}"
team = "alpha"

[[teams]]
name = "alpha"
hosts = ["host-*"]

[[teams]]
name = "beta"
hosts = []

[[teams]]
name = "gamma"
hosts = []

[alertmanager]
webhook_token = "{WEBHOOK_TOKEN}"

[limits]
queue_len = 8192
ingest_rate = 1000000
ingest_burst = 1000000
subject_ingest_rate = 1000000
subject_ingest_burst = 1000000
inbound_rate = 100000
inbound_burst = 100000
subject_inbound_rate = 100000
subject_inbound_burst = 100000

[history]
logs = 5000
alerts = 500

[broker]
{broker}
node = "{name}"
timeout_ms = 1000
{extra}
"#,
        broker = redis.broker_line()
    );
    std::fs::write(&path, toml).unwrap();
    path
}

pub const WEBHOOK_TOKEN: &str = "cluster-webhook-token";

/// An opswire process of the cluster.
pub struct Node {
    pub bin: Binary,
    pub name: String,
}

impl Node {
    /// Starts node `name` against `redis` and waits until it is ready.
    pub async fn start(dir: &std::path::Path, name: &str, redis: &Redis) -> Node {
        Node::start_with(dir, name, redis, "", &[]).await
    }

    pub async fn start_with(
        dir: &std::path::Path,
        name: &str,
        redis: &Redis,
        extra: &str,
        envs: &[(&str, &str)],
    ) -> Node {
        let config = config_file(dir, name, redis, extra);
        let mut all = vec![("OPSWIRE_CONFIG", config.to_str().unwrap())];
        all.extend_from_slice(envs);
        let node = Node {
            bin: Binary::start(&all),
            name: name.into(),
        };
        node.wait_ready().await;
        node
    }

    pub async fn readyz(&self) -> (u16, Value) {
        let r = reqwest::get(self.bin.url("/readyz")).await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.readyz().await.0 == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "node {} never ready", self.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A subscriber of `team`'s `streams` (read token).
    pub async fn subscriber(&self, team: &str, streams: &[&str]) -> WsClient {
        let mut c = self.bin.ws(&token(&[team]), &[]).await;
        c.subscribe(team, streams).await;
        c
    }

    /// Posts log lines (`messages`) to `team` over HTTP; returns the
    /// status and the body.
    pub async fn post_logs(&self, team: &str, messages: &[String]) -> (u16, Value, Option<String>) {
        let body: String = messages
            .iter()
            .map(|m| json!({"level": "info", "source": "test", "message": m}).to_string() + "\n")
            .collect();
        let r = reqwest::Client::new()
            .post(self.bin.url(&format!("/api/v1/logs?team={team}")))
            .bearer_auth(token_with(&[team], "ingest", 600))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| {
                let log = self.bin.stderr.lock().unwrap().join("\n");
                panic!("POST to node {}: {e}\n{log}", self.name)
            });
        let status = r.status().as_u16();
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{status} with a body that is not JSON ({e}): {text}"));
        (status, body, retry)
    }

    /// Posts one log line and returns its seq.
    pub async fn log(&self, team: &str, message: &str) -> u64 {
        let (s, body, _) = self.post_logs(team, &[message.to_owned()]).await;
        assert_eq!(s, 200, "{body}");
        body["last_seq"].as_u64().unwrap()
    }

    /// Posts an Alertmanager notification.
    pub async fn webhook(&self, alerts: Vec<Value>) -> (u16, Value) {
        let body = json!({"version": "4", "groupKey": "{}", "truncatedAlerts": 0,
            "status": "firing", "receiver": "opswire", "groupLabels": {}, "commonLabels": {},
            "commonAnnotations": {}, "externalURL": "http://am", "alerts": alerts});
        let r = reqwest::Client::new()
            .post(self.bin.url("/api/v1/alerts/alertmanager"))
            .bearer_auth(WEBHOOK_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    pub async fn teams(&self) -> Value {
        reqwest::Client::new()
            .get(self.bin.url("/api/v1/teams"))
            .bearer_auth(token(&["*"]))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.bin.child.kill();
        let _ = self.bin.child.wait();
    }
}

/// An alert of Alertmanager's webhook for `team`.
pub fn alert(team: &str, status: &str, fp: &str) -> Value {
    json!({"status": status, "labels": {"alertname": "X", "severity": "warning", "team": team},
        "annotations": {}, "startsAt": "2026-11-22T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": fp})
}

/// The next `n` frames of `stream` (others skipped), each within WAIT.
pub async fn frames(c: &mut WsClient, stream: &str, n: usize) -> Vec<Value> {
    let ty = if stream == "logs" { "log" } else { "alert" };
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let f = c.next_frame().await;
        if f["type"] == ty {
            out.push(f);
        } else {
            assert!(
                f["type"] == "metrics",
                "unexpected frame while waiting for {stream}: {f}"
            );
        }
    }
    out
}

/// Frames of `stream` that arrive within `quiet` (none expected).
pub async fn no_more(c: &mut WsClient, stream: &str, quiet: Duration) -> Vec<Value> {
    let ty = if stream == "logs" { "log" } else { "alert" };
    let mut extra = Vec::new();
    let deadline = tokio::time::Instant::now() + quiet;
    while let Some(f) = c
        .try_next_frame(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        if f["type"] == ty {
            extra.push(f);
        }
    }
    extra
}

/// The seqs of `frames`.
pub fn seqs(frames: &[Value]) -> Vec<u64> {
    frames.iter().map(|f| f["seq"].as_u64().unwrap()).collect()
}

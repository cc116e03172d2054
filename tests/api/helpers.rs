//! Test harness: runs the real server (the same `Application` the binary
//! runs) on a free loopback port, on a thread of its own, and talks to it
//! with real WebSocket and HTTP clients.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use opswire::app::AppState;
use opswire::auth::{mint, now_s, Claims};
use opswire::config::{Config, TeamConfig};
use opswire::startup::Application;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "test-secret-0123456789abcdef0123456789";

/// How long any single expected event may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// Three teams; the local host (named `test-host`) belongs to `alpha`.
pub fn test_config() -> Config {
    let mut c = Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    c.auth.jwt_secret = Some(SECRET.into());
    c.teams = ["alpha", "beta", "gamma"]
        .iter()
        .map(|t| TeamConfig {
            name: t.to_string(),
            hosts: vec![format!("{t}-*")],
        })
        .collect();
    c.sampler.host_name = Some("test-host".into());
    c.sampler.team = Some("alpha".into());
    c.sampler.tick_ms = 200;
    c.workers = 2;
    c.shutdown_timeout_s = 5;
    c
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts a server with `test_config()` changed by `tweak`.
pub fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = test_config();
    tweak(&mut config);
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let app = Application::build(config).expect("app builds");
            tx.send((app.addr(), app.state().clone(), app.shutdown_token()))
                .unwrap();
            app.run_until_stopped().await.expect("server runs");
        })
    });
    let (addr, state, shutdown) = rx.recv().expect("server started");
    TestApp {
        addr,
        state,
        shutdown,
        thread: Some(thread),
    }
}

pub fn spawn_app() -> TestApp {
    spawn_app_with(|_| {})
}

pub fn token(teams: &[&str]) -> String {
    token_with(teams, "read", 3600)
}

pub fn token_with(teams: &[&str], scope: &str, ttl_s: i64) -> String {
    let claims = Claims {
        sub: "tester".into(),
        teams: teams.iter().map(|s| s.to_string()).collect(),
        exp: (now_s() as i64 + ttl_s) as u64,
        iat: None,
        scope: Some(scope.into()),
    };
    mint(&claims, Some(SECRET), None).unwrap()
}

impl TestApp {
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Connects without credentials.
    pub async fn ws(&self) -> WsClient {
        let (inner, _) = tokio_tungstenite::connect_async(self.ws_url())
            .await
            .expect("websocket connects");
        WsClient { inner }
    }

    /// Connects with `Authorization: Bearer <token>` and reads `welcome`.
    pub async fn ws_auth(&self, token: &str) -> (WsClient, Value) {
        let mut client = self
            .ws_header(token)
            .await
            .expect("websocket connects with a header token");
        let welcome = client.next_frame().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        (client, welcome)
    }

    /// Connects with a header token; the handshake's HTTP error on refusal.
    pub async fn ws_header(
        &self,
        token: &str,
    ) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
        let mut req = self.ws_url().into_client_request().unwrap();
        req.headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
        let (inner, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(WsClient { inner })
    }

    /// Connects, authenticates with a header token and subscribes.
    pub async fn subscriber(&self, team: &str, streams: &[&str]) -> WsClient {
        let (mut c, _) = self.ws_auth(&token(&[team])).await;
        c.subscribe(team, streams).await;
        c
    }

    /// Publishes a log through the hub's programmatic API.
    pub fn publish_log(&self, team: &str, message: &str) -> u64 {
        let rec = serde_json::from_value(json!({
            "level": "info", "source": "test", "host": "h1", "message": message
        }))
        .unwrap();
        let id = self.state.hub.team_id(team).expect("team exists");
        let pending = self
            .state
            .hub
            .submit_log(id, &rec, opswire::time::now_micros());
        pending
            .now()
            .expect("the in-memory broker takes every publish")
            .expect("a log has a seq")
    }

    /// Publishes an alert through the hub's programmatic API.
    pub fn publish_alert(&self, team: &str, fingerprint: &str, status: &str) -> Option<u64> {
        let rec = serde_json::from_value(json!({
            "status": status, "fingerprint": fingerprint, "alertname": "HighCpu",
            "severity": "critical", "labels": {"team": team}, "annotations": {},
            "starts_at": "2026-11-22T10:00:00Z", "ends_at": null, "generator_url": ""
        }))
        .unwrap();
        let id = self.state.hub.team_id(team).expect("team exists");
        let pending = self
            .state
            .hub
            .submit_alert(id, &rec, opswire::time::now_micros());
        pending
            .now()
            .expect("the in-memory broker takes every publish")
    }

    /// The text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    pub fn epoch(&self) -> String {
        self.state.hub.epoch().to_string()
    }

    /// Gracefully stops the server (as SIGTERM does) and waits for it.
    pub fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread");
        }
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits (polling `/readyz`) until the first sample is in.
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let r = client.get(self.url("/readyz")).send().await.unwrap();
            if r.status() == 200 {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub struct WsClient {
    pub inner: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a connection ended.
#[derive(Debug, PartialEq)]
pub struct Closed {
    pub code: u16,
    pub reason: String,
}

impl WsClient {
    pub async fn send_json(&mut self, v: Value) {
        self.inner
            .send(Message::text(v.to_string()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, s: &str) {
        self.inner.send(Message::text(s)).await.expect("send");
    }

    /// The next text frame as JSON (control frames skipped); panics on
    /// close or after `WAIT`.
    pub async fn next_frame(&mut self) -> Value {
        self.try_next_frame(WAIT)
            .await
            .expect("a frame within the wait")
    }

    /// The next text frame, or None if none comes within `wait`. A closed
    /// or failed connection panics: "no frame arrived" must mean the
    /// connection is open and quiet, not gone.
    pub async fn try_next_frame(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.inner.next()).await {
                Err(_) => return None,
                Ok(None) => panic!("the connection ended while waiting for a frame"),
                Ok(Some(msg)) => msg,
            };
            match msg {
                Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).expect("JSON frame")),
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
                Ok(Message::Close(c)) => panic!("unexpected close: {c:?}"),
                Ok(other) => panic!("unexpected message {other:?}"),
                Err(e) => panic!("the connection ended while waiting for a frame: {e}"),
            }
        }
    }

    /// The next frame whose `type` is `ty`, skipping others.
    pub async fn next_of_type(&mut self, ty: &str) -> Value {
        loop {
            let f = self.next_frame().await;
            if f["type"] == ty {
                return f;
            }
        }
    }

    /// The next frame that is not a metrics frame.
    pub async fn next_non_metrics(&mut self) -> Value {
        loop {
            let f = self.next_frame().await;
            if f["type"] != "metrics" {
                return f;
            }
        }
    }

    pub async fn subscribe(&mut self, team: &str, streams: &[&str]) -> Value {
        self.send_json(json!({"op": "subscribe", "id": 1, "team": team, "streams": streams}))
            .await;
        let r = self.next_non_metrics().await;
        assert_eq!(r["type"], "subscribed", "{r}");
        r
    }

    /// Reads until the server closes; returns the close frame's code and
    /// reason, with every text frame seen before it.
    pub async fn expect_close(&mut self) -> (Closed, Vec<Value>) {
        let mut frames = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.inner.next())
                .await
                .expect("server closes within the wait");
            match msg {
                Some(Ok(Message::Text(t))) => frames.push(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(Some(c)))) => {
                    return (
                        Closed {
                            code: u16::from(c.code),
                            reason: c.reason.to_string(),
                        },
                        frames,
                    )
                }
                Some(Ok(Message::Close(None))) => {
                    return (
                        Closed {
                            code: u16::from(CloseCode::Status),
                            reason: String::new(),
                        },
                        frames,
                    )
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("connection failed before a close frame: {e}"),
                None => panic!("connection ended without a close frame"),
            }
        }
    }
}

/// The real `opswire` binary, started as a child process on a free port.
/// Killed on drop.
pub struct Binary {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    /// stderr lines, collected by a reader thread.
    pub stderr: Arc<std::sync::Mutex<Vec<String>>>,
}

/// `opswire` with none of this process's `OPSWIRE_*` and `OTEL_*`
/// variables: the one way the tests start the binary.
pub fn opswire_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_opswire"));
    for (k, _) in std::env::vars() {
        if k.starts_with("OPSWIRE_") || k.starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Collects a child's stderr lines on a thread of their own; the thread
/// ends when the pipe does.
pub fn collect_stderr(
    child: &mut std::process::Child,
) -> (
    Arc<std::sync::Mutex<Vec<String>>>,
    std::thread::JoinHandle<()>,
) {
    use std::io::{BufRead, BufReader};
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    let err = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    (lines, reader)
}

impl Binary {
    /// Starts `opswire serve --bind 127.0.0.1:0` with `envs` (and the test
    /// secret), and waits for its listening line.
    pub fn start(envs: &[(&str, &str)]) -> Binary {
        Binary::try_start_at("127.0.0.1:0", envs).expect("binary starts and listens")
    }

    /// Starts `opswire serve --bind <bind>` with `envs` (and the test
    /// secret); None when it exits without listening (the bind failed).
    pub fn try_start_at(bind: &str, envs: &[(&str, &str)]) -> Option<Binary> {
        use std::io::{BufRead, BufReader};
        use std::process::Stdio;
        let mut cmd = opswire_command();
        cmd.args(["serve", "--bind", bind])
            .env("OPSWIRE_JWT_SECRET", SECRET)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("binary starts");
        let (stderr, _) = collect_stderr(&mut child);
        let out = child.stdout.take().unwrap();
        let mut lines = BufReader::new(out).lines();
        let addr = lines.find_map(|l| {
            let l = l.ok()?;
            l.strip_prefix("opswire listening on http://")
                .or_else(|| l.strip_prefix("opswire listening on https://"))
                .map(str::to_owned)
        });
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        };
        Some(Binary {
            child,
            addr: addr.parse().unwrap(),
            stderr,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Connects with a header token and `extra` request headers; reads `welcome`.
    pub async fn ws(&self, token: &str, extra: &[(&str, &str)]) -> WsClient {
        let mut req = format!("ws://{}/ws", self.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
        for (k, v) in extra {
            let name =
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
            req.headers_mut().insert(name, v.parse().unwrap());
        }
        let (inner, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("websocket connects");
        let mut c = WsClient { inner };
        assert_eq!(c.next_frame().await["type"], "welcome");
        c
    }

    /// Resident set size of the process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child with a valid signal.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.wait_exit()
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(std::time::Instant::now() < deadline, "did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A certificate authority for tests, made with the `openssl` command
/// (Debian's): its certificate is `pem()`, and [`TestCa::issue`] signs
/// server certificates (P-256 keys: quick to make) for the names given.
pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let ca = TestCa {
            dir: tempfile::tempdir().unwrap(),
        };
        ca.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        ca
    }

    fn openssl(&self, args: &[&str]) {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The CA's certificate (PEM): what clients trust.
    pub fn pem(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for `names` (`DNS:localhost`, `IP:127.0.0.1`) signed
    /// by this CA, with common name `cn`, and its key: PEM files written
    /// to `cert` and `key` (made beside them, then renamed into place, as
    /// a renewal does).
    pub fn issue(&self, cn: &str, names: &[&str], cert: &std::path::Path, key: &std::path::Path) {
        let stem = format!("leaf-{}", rand_suffix());
        let (k, csr, ext, crt) = (
            format!("{stem}.key"),
            format!("{stem}.csr"),
            format!("{stem}.cnf"),
            format!("{stem}.pem"),
        );
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &k,
            "-out",
            &csr,
        ]);
        std::fs::write(
            self.dir.path().join(&ext),
            format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
                names.join(",")
            ),
        )
        .unwrap();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            &format!("0x{}", rand_suffix()),
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ]);
        // Copied next to the destination, then renamed over it: a reader
        // never sees half a file.
        for (from, to) in [(&crt, cert), (&k, key)] {
            let tmp = to.with_extension("tmp");
            std::fs::copy(self.dir.path().join(from), &tmp).unwrap();
            std::fs::rename(&tmp, to).unwrap();
        }
    }
}

fn rand_suffix() -> String {
    format!("{:015x}", rand::random::<u64>() >> 4)
}

/// Starts Debian's Alertmanager on `127.0.0.1:port` with `config` (and
/// `--web.config.file=web`, for TLS), its data under `dir`, clustering off.
pub fn spawn_alertmanager(
    dir: &std::path::Path,
    config: &std::path::Path,
    web: Option<&std::path::Path>,
    port: u16,
) -> std::process::Child {
    let mut cmd = std::process::Command::new("prometheus-alertmanager");
    cmd.arg(format!("--config.file={}", config.display()));
    if let Some(web) = web {
        cmd.arg(format!("--web.config.file={}", web.display()));
    }
    cmd.arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus-alertmanager is installed")
}

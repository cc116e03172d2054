//! Smoke test of the load generator (`opswire-bench`): a small run against
//! a real server, parsed from `--json`, and one with stalled subscribers.

use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use opswire::config::{Config, TeamConfig};
use opswire::startup::Application;

const SECRET: &str = "bench-test-secret-0123456789abcdef0123";

const BENCH: &str = env!("CARGO_BIN_EXE_opswire-bench");

/// The real server (the same `Application` the binary runs), in this
/// process, on a free port: three teams, 200 ms ticks.
struct Server {
    addr: std::net::SocketAddr,
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn spawn_app() -> Server {
    let mut c = Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    c.auth.jwt_secret = Some(SECRET.into());
    c.teams = ["alpha", "beta", "gamma"]
        .iter()
        .map(|t| TeamConfig {
            name: t.to_string(),
            hosts: vec![],
        })
        .collect();
    c.sampler.host_name = Some("bench-host".into());
    c.sampler.team = Some("alpha".into());
    c.sampler.tick_ms = 200;
    c.workers = 2;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let app = Application::build(c).expect("app builds");
            tx.send((app.addr(), app.shutdown_token())).unwrap();
            app.run_until_stopped().await.expect("server runs");
        })
    });
    let (addr, stop) = rx.recv().expect("server started");
    Server { addr, stop }
}

impl Server {
    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Waits (polling `/readyz`) until the first sample is in.
    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").await.unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            if out.starts_with(b"HTTP/1.0 200") || out.starts_with(b"HTTP/1.1 200") {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn bench(app: &Server, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BENCH);
    cmd.args(["--url", &app.ws_url(), "--jwt-secret", SECRET])
        .args(["--teams", "alpha,beta,gamma", "--json", "--quiet"])
        .args(extra)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OPSWIRE_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

async fn run(mut cmd: Command) -> Value {
    let out: Output = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("the generator finishes in time")
        .expect("the generator runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "--json output ({e}): {}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[tokio::test]
async fn generator_measures_a_small_run_and_stalled_clients() {
    let app = spawn_app();
    app.wait_ready().await;
    let pid = std::process::id().to_string();
    // Both runs at once: each counts only its own subscribers.
    let clean = bench(
        &app,
        &[
            "-n",
            "50",
            "--workers",
            "2",
            "-d",
            "3",
            "--grace-ms",
            "2000",
            "--log-rate",
            "5",
            "--server-pid",
            &pid,
        ],
    );
    let stalled = bench(
        &app,
        &[
            "-n",
            "50",
            "--workers",
            "2",
            "-d",
            "2",
            "--grace-ms",
            "1000",
            "--stalled-share",
            "0.2",
        ],
    );
    let (r, s) = tokio::join!(run(clean), run(stalled));

    assert_eq!(r["config"]["workers"], 2, "{r:#}");
    assert_eq!(r["config"]["tick_ms"], 200, "tick read from /api/v1/info");
    assert_eq!(r["connect"]["connected"], 50, "{r:#}");
    assert_eq!(r["connect"]["failed"], 0, "{r:#}");
    let teams = r["teams"].as_array().unwrap();
    assert_eq!(teams.len(), 3);
    for t in teams {
        assert!(t["metrics"]["received"].as_u64().unwrap() > 0, "{t}");
        assert!(t["logs"]["received"].as_u64().unwrap() > 0, "{t}");
    }
    let h = &r["healthy"];
    assert_eq!(h["subscribers"], 50);
    assert_eq!(h["loss"], 0, "{h:#}");
    assert_eq!(h["logs"]["missing"], 0, "{h:#}");
    let lag = &h["lag_ms"]["all"];
    assert!(lag["p50"].as_f64().unwrap() > 0.0, "{lag}");
    assert!(lag["max"].as_f64().unwrap() < 3000.0, "{lag}");
    assert!(h["data_age_ms"]["count"].as_u64().unwrap() > 0, "{h:#}");
    assert!(r["publisher"]["acked"].as_u64().unwrap() > 0, "{r:#}");
    assert_eq!(r["stalled"]["subscribers"], 0);
    assert!(r["server"]["rss_kib_end"].as_u64().unwrap() > 0, "{r:#}");

    // 20 % of each team stalled (17, 17, 16 subscribers: 3 each).
    assert_eq!(s["connect"]["connected"], 50, "{s:#}");
    assert_eq!(s["stalled"]["subscribers"], 9, "{s:#}");
    assert_eq!(s["healthy"]["subscribers"], 41, "{s:#}");
    let st = &s["stalled"];
    assert_eq!(
        st["open"].as_u64().unwrap() + st["closed_by_server"].as_u64().unwrap(),
        9
    );
    assert!(s["healthy"]["lag_ms"]["all"]["count"].as_u64().unwrap() > 0);
    assert!(s["healthy"]["lag_ms"]["all"]["max"].as_f64().unwrap() < 3000.0);
}

#[tokio::test]
async fn generator_refuses_a_non_loopback_url() {
    let out = Command::new(BENCH)
        .args(["--url", "ws://192.0.2.1:8080/ws", "-n", "1"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

/// A synthetic fleet per team, read in each view, with and without
/// permessage-deflate: the generator asks for the view, inflates what the
/// server compressed, and reports the bytes that crossed the wire.
#[tokio::test]
async fn generator_reads_views_of_a_fleet_with_and_without_deflate() {
    let app = spawn_app();
    app.wait_ready().await;
    let common = [
        "-n",
        "12",
        "-d",
        "2",
        "--grace-ms",
        "1000",
        "--fleet-hosts",
        "30",
    ];
    let run_with = |extra: &[&str]| {
        let mut args = common.to_vec();
        args.extend_from_slice(extra);
        run(bench(&app, &args))
    };
    let (full, summary, hosts) = tokio::join!(
        run_with(&[]),
        run_with(&["--view", "summary", "--deflate"]),
        run_with(&["--view", "hosts:*-web-00?", "--deflate"]),
    );
    for r in [&full, &summary, &hosts] {
        assert_eq!(r["connect"]["connected"], 12, "{r:#}");
        let f = &r["fleet"];
        assert_eq!(f["hosts_per_team"], 30, "{f}");
        assert!(f["rounds"].as_u64().unwrap() >= 2, "{f}");
        assert!(f["errors"].as_object().unwrap().is_empty(), "{f}");
        assert!(f["acked"].as_u64().unwrap() >= 90, "{f}");
        for t in r["teams"].as_array().unwrap() {
            assert!(t["metrics"]["received"].as_u64().unwrap() > 0, "{t}");
        }
        assert_eq!(r["generator"]["unparsed_frames"], 0, "{r:#}");
        assert_eq!(r["healthy"]["disconnected"], 0, "{r:#}");
    }
    for (name, r) in [
        ("full", &full),
        ("summary+deflate", &summary),
        ("hosts+deflate", &hosts),
    ] {
        println!("30-host fleet, {name}: {}", r["bytes"]);
    }
    let b = |r: &Value, k: &str| r["bytes"][k].as_f64().unwrap();
    // Plain: the wire carries the JSON and a little framing.
    assert_eq!(full["bytes"]["deflate_negotiated"], 0);
    assert!(
        b(&full, "wire_per_sub_s") >= b(&full, "text_per_sub_s"),
        "{:#}",
        full["bytes"]
    );
    // Every subscriber negotiated deflate; frames arrive smaller than their
    // JSON, which the generator read inflated.
    for r in [&summary, &hosts] {
        assert_eq!(r["bytes"]["deflate_negotiated"], 12, "{:#}", r["bytes"]);
        assert!(
            b(r, "wire_per_sub_s") * 2.0 < b(r, "text_per_sub_s"),
            "{:#}",
            r["bytes"]
        );
    }
    // The views were asked for: a summary row and ten hosts are far less
    // than thirty whole snapshots.
    assert!(b(&summary, "text_per_sub_s") * 2.0 < b(&full, "text_per_sub_s"));
    assert!(b(&hosts, "text_per_sub_s") * 2.0 < b(&full, "text_per_sub_s"));
    assert_eq!(summary["config"]["view"], "summary");
}

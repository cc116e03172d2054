//! The coordinator: checks the server, spawns the workers (this same
//! executable with `--worker`), opens the measurement window on all of them
//! at once, samples the server, publishes logs if asked, and merges.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::cli::{self, Args, Plan};
use super::fleet;
use super::frame::STREAMS;
use super::ingest;
use super::procfs;
use super::report::{
    self, Extra, MachineReport, ProcessReport, PublisherReport, RunConfig, ServerReport,
};
use super::worker::{Go, WorkerMsg, WorkerResult, WorkerSpec};
use opswire::auth::{mint, now_s, Claims};

macro_rules! progress {
    ($quiet:expr, $($t:tt)*) => {
        if !$quiet {
            eprintln!("opswire-bench: {}", format_args!($($t)*));
        }
    };
}

/// Entry point of the coordinator.
pub fn main(args: Args) -> ExitCode {
    let nofile = super::worker::raise_nofile();
    let plan = match cli::plan(&args, nofile) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("opswire-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("opswire-bench: runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let deadline = Instant::now() + Duration::from_secs(plan.deadline_s);
    let quiet = args.quiet;
    match rt.block_on(async {
        tokio::select! {
            r = run(&args, &plan) => r,
            _ = tokio::time::sleep_until(deadline) => {
                Err(format!("global deadline of {} s reached", plan.deadline_s))
            }
        }
    }) {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("opswire-bench: {e}");
                        return ExitCode::from(1);
                    }
                }
            } else {
                print!("{}", report::render(&report));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            progress!(quiet, "failed: {e}");
            if quiet {
                eprintln!("opswire-bench: {e}");
            }
            ExitCode::from(1)
        }
    }
}

fn token_for(args: &Args, teams: Vec<String>, scope: &str) -> Result<Option<String>, String> {
    if let Some(t) = &args.token {
        return Ok(Some(t.clone()));
    }
    let Some(secret) = &args.jwt_secret else {
        return Ok(None);
    };
    let now = now_s();
    let claims = Claims {
        sub: "opswire-bench".into(),
        teams,
        exp: now + cli::MAX_RUN_S + 600,
        iat: Some(now),
        scope: Some(scope.into()),
    };
    mint(&claims, Some(secret), None)
        .map(Some)
        .map_err(|e| format!("minting a token: {e}"))
}

/// The token a publisher of `team` uses (logs, the synthetic fleet).
fn ingest_token(args: &Args, team: &str) -> Result<Option<String>, String> {
    match (&args.ingest_token, &args.jwt_secret) {
        (Some(t), _) => Ok(Some(t.clone())),
        (None, Some(_)) => token_for(args, vec![team.to_owned()], "ingest"),
        (None, None) => Ok(None),
    }
}

/// `GET /api/v1/info` (HTTP/1.0, so no chunking); None if it is not there.
async fn server_info(server: SocketAddr) -> Option<serde_json::Value> {
    let get = async {
        let mut s = tokio::net::TcpStream::connect(server).await.ok()?;
        s.write_all(
            format!(
                "GET /api/v1/info HTTP/1.0\r\nHost: {server}\r\nAccept: application/json\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .ok()?;
        let mut buf = Vec::new();
        s.take(1 << 20).read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text.split_once("\r\n\r\n")?;
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            return None;
        }
        serde_json::from_str(body).ok()
    };
    tokio::time::timeout(Duration::from_secs(3), get)
        .await
        .ok()
        .flatten()
}

/// Connects once and reads `welcome`: checks the URL and the credentials
/// before any worker starts, and learns the teams.
async fn probe(url: &str, token: Option<&str>) -> Result<Vec<String>, String> {
    let mut req = url
        .into_client_request()
        .map_err(|e| format!("--url: {e}"))?;
    if let Some(t) = token {
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {t}")
                .parse()
                .map_err(|_| "the token is not a valid header value".to_string())?,
        );
    }
    let go = async {
        let (mut ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: serde_json::Value = serde_json::from_str(&t)
                        .map_err(|e| format!("unexpected frame from the server: {e}"))?;
                    if v["type"] == "welcome" {
                        let _ = ws.close(None).await;
                        return Ok(v["teams"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|t| t.as_str().map(str::to_owned))
                                    .collect()
                            })
                            .unwrap_or_default());
                    }
                    if v["type"] == "error" {
                        return Err(format!("the server refused the probe: {t}"));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("probe connection failed: {e}")),
                None => return Err("the server closed the probe connection".into()),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), go)
        .await
        .map_err(|_| {
            "no welcome within 5 s (does the server need a token? use --token or --jwt-secret)"
                .to_string()
        })?
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
}

async fn spawn_worker(
    spec: &WorkerSpec,
    tx: mpsc::UnboundedSender<(usize, Option<WorkerMsg>)>,
) -> Result<Worker, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let mut child = Command::new(exe)
        .arg("--worker")
        // A worker takes nothing from the environment's auth variables:
        // its tokens come in its spec.
        .env_remove("OPSWIRE_BENCH_TOKEN")
        .env_remove("OPSWIRE_JWT_SECRET")
        .env_remove("OPSWIRE_BENCH_INGEST_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting worker {}: {e}", spec.worker))?;
    let mut stdin = child.stdin.take().ok_or("worker stdin")?;
    let stdout = child.stdout.take().ok_or("worker stdout")?;
    let mut line = serde_json::to_string(spec).map_err(|e| e.to_string())?;
    line.push('\n');
    stdin
        .write_all(line.as_bytes())
        .await
        .map_err(|e| format!("worker {}: {e}", spec.worker))?;
    let id = spec.worker;
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            match serde_json::from_str::<WorkerMsg>(&l) {
                Ok(m) => {
                    let _ = tx.send((id, Some(m)));
                }
                Err(e) => eprintln!("opswire-bench: worker {id} said something odd ({e}): {l}"),
            }
        }
        let _ = tx.send((id, None));
    });
    Ok(Worker { child, stdin })
}

/// Publishes `rate` logs per second to `team` from `start` until `end`.
async fn publish_logs(
    url: String,
    team: String,
    token: Option<String>,
    rate: f64,
    bytes: usize,
    start: Instant,
    end: Instant,
) -> PublisherReport {
    let mut rep = PublisherReport {
        rate_per_team: rate,
        ..Default::default()
    };
    let ws = match ingest::connect(&url, token.as_deref()).await {
        Ok(ws) => ws,
        Err(e) => {
            rep.errors.insert(e, 1);
            return rep;
        }
    };
    let (mut tx, mut rx) = ws.split();
    let reader = tokio::spawn(async move {
        let (mut acked, mut errors) = (0u64, BTreeMap::<String, u64>::new());
        while let Some(Ok(m)) = rx.next().await {
            if let Message::Text(t) = m {
                match ingest::answer(&t) {
                    Some(Ok(())) => acked += 1,
                    Some(Err(code)) => *errors.entry(code).or_default() += 1,
                    None => {}
                }
            }
        }
        (acked, errors)
    });
    let message = "x".repeat(bytes);
    let per = Duration::from_secs_f64(1.0 / rate);
    let mut at = start;
    let mut id = 0u64;
    while at < end {
        tokio::time::sleep_until(at).await;
        id += 1;
        let op = serde_json::json!({"op": "publish", "id": id, "team": team, "stream": "logs",
            "data": {"level": "info", "source": "opswire-bench", "host": "bench", "message": message}});
        if tx.send(Message::text(op.to_string())).await.is_err() {
            rep.errors.insert("send failed".into(), 1);
            break;
        }
        rep.sent += 1;
        at += per;
    }
    // Give the last acks a moment, then close.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = tx.close().await;
    if let Ok(Ok((acked, errors))) = tokio::time::timeout(Duration::from_secs(2), reader).await {
        rep.acked = acked;
        for (k, v) in errors {
            *rep.errors.entry(k).or_default() += v;
        }
    }
    rep
}

/// An `Instant` for a unix time in µs.
fn instant_at(unix_us: i64) -> Instant {
    let now = opswire::time::now_micros();
    let delta = Duration::from_micros(unix_us.saturating_sub(now).max(0) as u64);
    Instant::now() + delta
}

async fn run(args: &Args, plan: &Plan) -> Result<report::Report, String> {
    let quiet = args.quiet;
    let mut teams = cli::teams(args);
    let probe_token = token_for(
        args,
        if teams.is_empty() {
            vec!["*".into()]
        } else {
            teams.clone()
        },
        "read",
    )?;
    let info = server_info(plan.server).await;
    // A Socket.IO peer has no welcome to probe; its teams are given.
    let offered = if args.protocol == cli::Protocol::Socketio {
        teams.clone()
    } else {
        probe(&plan.url, probe_token.as_deref()).await?
    };
    if teams.is_empty() {
        teams = offered.clone();
        if teams.is_empty() {
            return Err("the server's welcome lists no team: give --teams".into());
        }
    } else if let Some(missing) = teams.iter().find(|t| !offered.contains(t)) {
        return Err(format!(
            "team `{missing}` is not among the server's teams for this token: {}",
            offered.join(", ")
        ));
    }
    let (tick_ms, tick_from) = match (
        args.tick_ms,
        info.as_ref().and_then(|i| i["tick_ms"].as_u64()),
    ) {
        (Some(t), _) => (t, "flag"),
        (None, Some(t)) => (t, "server"),
        (None, None) => (1000, "flag"),
    };
    let tokens: Vec<Option<String>> = teams
        .iter()
        .map(|t| token_for(args, vec![t.clone()], "read"))
        .collect::<Result<_, _>>()?;

    let server_before = sample_all(&args.server_pid).ok_or_else(|| {
        format!(
            "--server-pid {:?}: cannot read /proc for it",
            args.server_pid
        )
    })?;
    let watch_pids: Vec<u32> = plan.watch.iter().map(|(_, pid)| *pid).collect();
    if sample_all(&watch_pids).is_none() {
        return Err(format!(
            "--watch-pid {:?}: cannot read /proc for it",
            plan.watch
        ));
    }

    let n = args.subscribers;
    let w = plan.workers as u64;
    let deadline_unix_ms = opswire::time::now_micros() / 1000 + plan.deadline_s as i64 * 1000;
    let streams: Vec<String> = STREAMS
        .iter()
        .zip(plan.streams)
        .filter(|(_, on)| *on)
        .map(|(s, _)| s.to_string())
        .collect();
    progress!(
        quiet,
        "{n} subscribers → {} ({} teams, {}), {} worker(s), ramp {}/s",
        plan.url,
        teams.len(),
        if streams.is_empty() {
            "idle".to_string()
        } else {
            streams.join("+")
        },
        plan.workers,
        args.ramp_rate
    );
    let fleet = if args.fleet_hosts > 0 {
        let with_tokens = teams
            .iter()
            .map(|t| Ok((t.clone(), ingest_token(args, t)?)))
            .collect::<Result<Vec<_>, String>>()?;
        let f = fleet::Fleet::start(&plan.publish_url, with_tokens, args.fleet_hosts).await?;
        progress!(
            quiet,
            "fleet: {} hosts per team published, once a second",
            args.fleet_hosts
        );
        Some(f)
    } else {
        None
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut workers = Vec::new();
    let mut first = 0u64;
    for i in 0..plan.workers {
        // Shares differ by at most one.
        let count = n / w + u64::from((i as u64) < n % w);
        let spec = WorkerSpec {
            worker: i,
            server: plan.server,
            url: plan.url.clone(),
            teams: teams.clone(),
            tokens: tokens.clone(),
            streams: plan.streams,
            first,
            count,
            stalled_ppm: plan.stalled_ppm,
            ramp_rate: args.ramp_rate / w as f64,
            connect_timeout_ms: args.connect_timeout_s * 1000,
            deadline_unix_ms,
            source_ips: args.source_ips,
            read_buffer: args.read_buffer as usize,
            stalled_rcvbuf: args.stalled_rcvbuf,
            protocol: args.protocol,
            view: plan.view.clone(),
            deflate: args.deflate,
        };
        first += count;
        workers.push(spawn_worker(&spec, tx.clone()).await?);
    }
    drop(tx);

    // Ramp: every worker reports ready.
    let t0 = Instant::now();
    let mut ready = 0;
    let (mut connected, mut failed) = (0, 0);
    while ready < workers.len() {
        match rx.recv().await {
            Some((
                _,
                Some(WorkerMsg::Ready {
                    connected: c,
                    failed: f,
                }),
            )) => {
                ready += 1;
                connected += c;
                failed += f;
            }
            Some((id, None)) => return Err(format!("worker {id} exited during the ramp")),
            Some((id, Some(_))) => return Err(format!("worker {id}: result before go")),
            None => return Err("workers gone".into()),
        }
    }
    progress!(
        quiet,
        "ramp done in {:.1} s: {connected} connected, {failed} failed; measuring {} s",
        t0.elapsed().as_secs_f64(),
        args.duration
    );

    // The window opens a little later on every worker at once.
    let start_us = opswire::time::now_micros() + 300_000;
    let end_us = start_us + args.duration as i64 * 1_000_000;
    let go = Go {
        start_us,
        end_us,
        grace_ms: args.grace_ms,
    };
    let mut line = serde_json::to_string(&go).map_err(|e| e.to_string())?;
    line.push('\n');
    for wk in &mut workers {
        wk.stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("telling a worker to go: {e}"))?;
    }
    let (start, end) = (instant_at(start_us), instant_at(end_us));

    let publishers: Vec<_> = if args.log_rate > 0.0 {
        teams
            .iter()
            .map(|t| {
                ingest_token(args, t).map(|token| {
                    tokio::spawn(publish_logs(
                        plan.publish_url.clone(),
                        t.clone(),
                        token,
                        args.log_rate,
                        args.log_bytes as usize,
                        start,
                        end,
                    ))
                })
            })
            .collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };

    tokio::time::sleep_until(start).await;
    let server_start = sample_all(&args.server_pid);
    let watch_start = sample_all(&watch_pids);
    let machine_start = procfs::machine();
    tokio::time::sleep_until(end).await;
    let server_end = sample_all(&args.server_pid);
    let watch_end = sample_all(&watch_pids);
    let machine_end = procfs::machine();
    progress!(quiet, "window closed; collecting");

    let mut results: Vec<WorkerResult> = Vec::new();
    let collect_by = end + Duration::from_millis(args.grace_ms) + Duration::from_secs(15);
    while results.len() < workers.len() {
        match tokio::time::timeout_at(collect_by, rx.recv()).await {
            Ok(Some((_, Some(WorkerMsg::Result(r))))) => results.push(*r),
            // The end of a worker's output: fine once it has reported.
            Ok(Some((id, None))) if results.iter().any(|r| r.worker == id) => {}
            Ok(Some((id, None))) => return Err(format!("worker {id} exited without a result")),
            Ok(Some(_)) => {}
            Ok(None) => return Err("workers gone".into()),
            Err(_) => return Err("workers did not report in time".into()),
        }
    }
    results.sort_by_key(|r| r.worker);
    for wk in &mut workers {
        if tokio::time::timeout(Duration::from_secs(5), wk.child.wait())
            .await
            .is_err()
        {
            let _ = wk.child.kill().await;
        }
    }

    let mut publisher: Option<PublisherReport> = None;
    for p in publishers {
        if let Ok(r) = p.await {
            let acc = publisher.get_or_insert_with(|| PublisherReport {
                rate_per_team: r.rate_per_team,
                ..Default::default()
            });
            acc.sent += r.sent;
            acc.acked += r.acked;
            for (k, v) in r.errors {
                *acc.errors.entry(k).or_default() += v;
            }
        }
    }

    let server = match (server_start, server_end) {
        _ if args.server_pid.is_empty() => None,
        (Some(s), Some(e)) => {
            let conns = results.iter().map(|r| r.connected).sum::<u64>().max(1);
            let rss = |v: &[procfs::Sample]| v.iter().map(|x| x.rss_kib).sum::<u64>();
            let (b, s_rss, e_rss) = (rss(&server_before), rss(&s), rss(&e));
            let processes = processes(&args.server_pid, &s, &e);
            Some(ServerReport {
                pid: args.server_pid[0],
                cpu_pct: (processes.iter().map(|p| p.cpu_pct).sum::<f64>() * 10.0).round() / 10.0,
                rss_kib_before: b,
                rss_kib_start: s_rss,
                rss_kib_end: e_rss,
                rss_per_conn_kib: ((e_rss as f64 - b as f64) / conns as f64 * 100.0).round()
                    / 100.0,
                processes: if processes.len() > 1 {
                    processes
                } else {
                    Vec::new()
                },
            })
        }
        _ => {
            progress!(
                quiet,
                "a server process ({:?}) vanished during the run",
                args.server_pid
            );
            None
        }
    };
    let watched = match (watch_start, watch_end) {
        (Some(s), Some(e)) => plan
            .watch
            .iter()
            .map(|(name, _)| name.clone())
            .zip(processes(&watch_pids, &s, &e))
            .collect(),
        _ => Default::default(),
    };
    let machine = match (machine_start, machine_end) {
        (Some(a), Some(b)) => Some(MachineReport {
            cores: b.cores,
            cpu_pct: procfs::machine_pct(&a, &b),
        }),
        _ => None,
    };

    let config = RunConfig {
        url: plan.url.clone(),
        protocol: args.protocol.as_str().into(),
        subscribers: n,
        workers: plan.workers,
        teams,
        streams,
        duration_s: args.duration,
        grace_ms: args.grace_ms,
        ramp_rate: args.ramp_rate,
        stalled_share: args.stalled_share,
        log_rate: args.log_rate,
        tick_ms,
        tick_from: tick_from.into(),
        source_ips: args.source_ips,
        window_start_unix_s: start_us as f64 / 1e6,
        view: args.view.trim().to_owned(),
        deflate: args.deflate,
        fleet_hosts: args.fleet_hosts,
    };
    let fleet = match fleet {
        Some(f) => Some(f.finish().await),
        None => None,
    };
    Ok(report::build(
        config,
        &results,
        Extra {
            server,
            publisher,
            fleet,
            watched,
            machine,
        },
    ))
}

/// One sample of each of `pids` (None if any cannot be read).
fn sample_all(pids: &[u32]) -> Option<Vec<procfs::Sample>> {
    pids.iter().map(|&p| procfs::sample(Some(p))).collect()
}

/// Each process's CPU and RSS between two [`sample_all`]s.
fn processes(pids: &[u32], a: &[procfs::Sample], b: &[procfs::Sample]) -> Vec<ProcessReport> {
    pids.iter()
        .zip(a.iter().zip(b))
        .map(|(&pid, (a, b))| ProcessReport {
            pid,
            cpu_pct: procfs::cpu_pct(a, b),
            rss_kib_end: b.rss_kib,
        })
        .collect()
}

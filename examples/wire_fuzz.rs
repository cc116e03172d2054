//! Wire-level fuzzer: drives a running `opswire` with mutated WebSocket and
//! HTTP traffic from several connections for a bounded time, then checks
//! that the server survived it.
//!
//! ```sh
//! cargo build --release --locked --bin opswire --example wire_fuzz
//! target/release/examples/wire_fuzz --binary target/release/opswire --mode dev  --seconds 20 --seed 1
//! target/release/examples/wire_fuzz --binary target/release/opswire --mode auth --seconds 20 --seed 1
//! # or against a server already running (RSS and log checks need --pid/--log):
//! target/release/examples/wire_fuzz --attach 127.0.0.1:8080 --pid 1234 --log opswire.log
//! ```
//!
//! It starts the binary on a free loopback port with a temporary config
//! (three teams, small histories and ingest limits; `--mode auth` adds an
//! HS256 secret and the fuzzer mints tokens with it), capturing its stdout
//! and stderr to a log file. After a warm-up of a few normal connections
//! and requests, `--conns` connections loop over scenarios until
//! `--seconds` have passed, each connection capped at `--conn-cap-ms`
//! (`--hold-cap-ms` for slow bodies):
//!
//! * WebSocket: raw TCP handshakes (valid or mutated), then random frames:
//!   ops (valid, wrongly typed, byte-mutated), random opcodes and RSV bits,
//!   unmasked frames, fragments (interleaved pings, continuations without
//!   a start), truncated headers, invalid UTF-8, bad close frames, control
//!   frames over 125 bytes; a frame header declaring a huge length
//!   followed by a stream of bytes; floods of pings and of pongs;
//! * HTTP: `/api/v1/logs`, `/v1/logs` (protobuf, JSON, gzip),
//!   `/api/v1/alerts/alertmanager`, `/sse?…` with mutated heads and bodies,
//!   chunked bodies, bodies sent a byte at a time or never finished,
//!   pipelined requests, and plain GETs.
//!
//! Meanwhile a monitor thread polls `/healthz` every `--poll-ms` on a new
//! connection and samples the server's RSS and open file descriptors.
//!
//! Checks (exit 1 if any fails):
//! * the process is alive at the end;
//! * every `/healthz` answered 200 within `--healthz-ms` (100);
//! * after every fuzz connection closed, RSS returns (within
//!   `--settle-s`) to within `--rss-slack-pct` (20 %) of its start, where
//!   "start" is the RSS after the warm-up (a few normal WebSocket sessions,
//!   ingest requests and an SSE stream, then 1 s of quiet);
//! * the log holds no `panic`;
//!
//! and the hardening checks (off with `--no-hardening`):
//! * peak RSS during the run stays within `--peak-rss-mb` of the start;
//! * a frame declaring more than `limits.max_frame_bytes` is refused
//!   before `--frame-stream-mb` of it has been streamed;
//! * ping and pong floods get their connection closed within the cap;
//! * a request body that never finishes is cut off within `--hold-cap-ms`.
//!
//! Mutations are reproducible: `--seed` seeds every connection's
//! generator (interleavings between connections still vary run to run).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Debug, Clone)]
#[command(about = "Wire-level fuzzer for a running opswire")]
struct Args {
    /// The opswire binary to start [default: target/release/opswire, else target/debug/opswire].
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Fuzz a server already listening here instead of starting one.
    #[arg(long)]
    attach: Option<SocketAddr>,
    /// With --attach: the server's pid (RSS and liveness checks).
    #[arg(long)]
    pid: Option<u32>,
    /// With --attach: the server's log file (panic check).
    #[arg(long)]
    log: Option<PathBuf>,
    /// `dev` (no auth) or `auth` (an HS256 secret; tokens are minted with it).
    #[arg(long, default_value = "dev", value_parser = ["dev", "auth"])]
    mode: String,
    /// With --attach --mode auth: the server's HS256 secret.
    #[arg(long, env = "OPSWIRE_FUZZ_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// How long the fuzz connections run.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Concurrent fuzz connections.
    #[arg(long, default_value_t = 16)]
    conns: usize,
    /// Seed of the mutations [default: from the clock, printed].
    #[arg(long)]
    seed: Option<u64>,
    /// Longest life of one fuzz connection.
    #[arg(long, default_value_t = 3000)]
    conn_cap_ms: u64,
    /// Longest life of a slow or never-finishing body.
    #[arg(long, default_value_t = 8000)]
    hold_cap_ms: u64,
    /// Every /healthz must answer within this.
    #[arg(long, default_value_t = 100)]
    healthz_ms: u64,
    /// Interval of the /healthz poll and RSS samples.
    #[arg(long, default_value_t = 100)]
    poll_ms: u64,
    /// RSS after the run must be within this of its start.
    #[arg(long, default_value_t = 20.0)]
    rss_slack_pct: f64,
    /// How long to wait for RSS to settle after the connections close.
    #[arg(long, default_value_t = 20)]
    settle_s: u64,
    /// Hardening: peak RSS may exceed the start by at most this.
    #[arg(long, default_value_t = 128)]
    peak_rss_mb: u64,
    /// Hardening: bytes of an over-limit frame the server may take in.
    #[arg(long, default_value_t = 16)]
    frame_stream_mb: u64,
    /// Stop streaming one over-limit frame after this much.
    #[arg(long, default_value_t = 512)]
    frame_stream_cap_mb: u64,
    /// Only the four required checks.
    #[arg(long)]
    no_hardening: bool,
    /// Only these scenarios (comma-separated; see the summary for names).
    #[arg(long)]
    only: Option<String>,
    /// Keep the temporary directory (config and log) after the run.
    #[arg(long)]
    keep: bool,
}

// ---------------------------------------------------------------------------
// A small, seedable generator (splitmix64): the same seed, the same inputs
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo))
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Text from a small alphabet with some odd characters (never `panic`).
    fn text(&mut self, max: usize) -> String {
        const ODD: &[&str] = &[
            "é", "😀", "\u{0}", "\"", "\\", "\n", "\u{feff}", " ", "\u{7f}", "ÿ",
        ];
        let n = self.below(max as u64 + 1) as usize;
        (0..n)
            .map(|_| {
                if self.chance(0.05) {
                    self.pick(ODD).to_string()
                } else {
                    ((b'a' + self.below(26) as u8) as char).to_string()
                }
            })
            .collect::<String>()
            .replace("panic", "pnic")
    }
}

/// Byte-level edits: flips, sets, inserts of tokens, deletes, duplicates,
/// truncation.
fn mutate(rng: &mut Rng, mut b: Vec<u8>) -> Vec<u8> {
    const TOKENS: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b",",
        b":",
        b"\\u",
        b"\\ud800",
        b"null",
        b"-",
        b"1e999",
        b"18446744073709551616",
        b"\r\n",
        b"\n",
        b"\x00",
        b"\xff",
        b"\xc3",
        b" ",
    ];
    for _ in 0..rng.range(1, 5) {
        let len = b.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len as u64) as usize;
                b[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len as u64) as usize;
                b[i] = rng.next() as u8;
            }
            2 | 3 => {
                let i = rng.below(len as u64 + 1) as usize;
                let t = *rng.pick(TOKENS);
                b.splice(i..i, t.iter().copied());
            }
            4 if len > 0 => {
                let i = rng.below(len as u64) as usize;
                let n = rng.range(1, 16) as usize;
                b.drain(i..(i + n).min(len));
            }
            5 if len > 0 => {
                let i = rng.below(len as u64) as usize;
                let n = rng.range(1, 64) as usize;
                let part = b[i..(i + n).min(len)].to_vec();
                b.splice(i..i, part);
            }
            _ => b.truncate(rng.below(len as u64 + 1) as usize),
        }
    }
    b
}

fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            out.push(if i <= c.len() {
                A[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// What a run saw
// ---------------------------------------------------------------------------

#[derive(Default, Debug)]
struct Stats {
    scenarios: BTreeMap<&'static str, u64>,
    /// HTTP answers by status (0: none before the connection ended or the cap).
    http: BTreeMap<u16, u64>,
    ws_upgraded: u64,
    ws_refused: u64,
    ws_closed_by_server: u64,
    bytes_sent: u64,
    /// Over-limit frames: (bytes streamed, closed by the server, seconds).
    frame_streams: Vec<(u64, bool, f64)>,
    /// Floods: (kind, frames sent, closed by the server, seconds).
    floods: Vec<(&'static str, u64, bool, f64)>,
    /// Slow bodies: (kind, seconds held, closed or answered by the server).
    holds: Vec<(&'static str, f64, bool)>,
    /// 5xx answers other than 503, with what was sent.
    server_errors: Vec<String>,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        for (k, v) in o.scenarios {
            *self.scenarios.entry(k).or_default() += v;
        }
        for (k, v) in o.http {
            *self.http.entry(k).or_default() += v;
        }
        self.ws_upgraded += o.ws_upgraded;
        self.ws_refused += o.ws_refused;
        self.ws_closed_by_server += o.ws_closed_by_server;
        self.bytes_sent += o.bytes_sent;
        self.frame_streams.extend(o.frame_streams);
        self.floods.extend(o.floods);
        self.holds.extend(o.holds);
        self.server_errors
            .extend(o.server_errors.into_iter().take(5));
    }
}

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

struct Server {
    addr: SocketAddr,
    pid: Option<u32>,
    child: Option<Child>,
    log: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

const TEAMS: [&str; 3] = ["alpha", "beta", "gamma"];
const MAX_FRAME: u64 = 64 * 1024;

fn start(args: &Args, secret: Option<&str>) -> Server {
    if let Some(addr) = args.attach {
        return Server {
            addr,
            pid: args.pid,
            child: None,
            log: args.log.clone(),
            _dir: None,
        };
    }
    let binary = args.binary.clone().unwrap_or_else(|| {
        let rel = PathBuf::from("target/release/opswire");
        if rel.exists() {
            rel
        } else {
            PathBuf::from("target/debug/opswire")
        }
    });
    let dir = tempfile::Builder::new()
        .prefix("wire-fuzz-")
        .tempdir()
        .expect("temp dir");
    let mut config = String::from(
        "shutdown_timeout_s = 2\nworkers = 2\n\n[history]\nlogs = 64\nalerts = 32\n\n\
         [ingest]\nmax_body_bytes = 262144\nmax_line_bytes = 4096\nbody_timeout_s = 3\n\n\
         [websocket]\nheartbeat_s = 5\n\n",
    );
    config.push_str(&format!("[limits]\nmax_frame_bytes = {MAX_FRAME}\n\n"));
    if let Some(s) = secret {
        config.push_str(&format!("[auth]\njwt_secret = \"{s}\"\n\n"));
    }
    for t in TEAMS {
        config.push_str(&format!(
            "[[teams]]\nname = \"{t}\"\nhosts = [\"{t}-*\"]\n\n"
        ));
    }
    let config_path = dir.path().join("opswire.toml");
    std::fs::write(&config_path, config).expect("config written");
    let log_path = dir.path().join("opswire.log");
    let log = Arc::new(Mutex::new(
        std::fs::File::create(&log_path).expect("log file"),
    ));
    let mut cmd = Command::new(&binary);
    cmd.arg("serve")
        .arg("--config")
        .arg(&config_path)
        .args(["--bind", "127.0.0.1:0"]);
    for (k, _) in std::env::vars() {
        if k.starts_with("OPSWIRE_") || k.starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    let (tx, rx) = std::sync::mpsc::channel();
    let copy = |stream: Box<dyn Read + Send>,
                tx: Option<std::sync::mpsc::Sender<SocketAddr>>,
                log: Arc<Mutex<std::fs::File>>| {
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
            {
                if let (Some(tx), Some(a)) =
                    (&tx, line.strip_prefix("opswire listening on http://"))
                {
                    if let Ok(a) = a.trim().parse() {
                        let _ = tx.send(a);
                    }
                }
                let _ = writeln!(log.lock().unwrap(), "{line}");
            }
        });
    };
    copy(
        Box::new(child.stdout.take().unwrap()),
        Some(tx),
        log.clone(),
    );
    copy(Box::new(child.stderr.take().unwrap()), None, log);
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "{} did not print its listening line within 30 s (log: {})",
                binary.display(),
                log_path.display()
            )
        });
    println!(
        "started {} (pid {}) on {addr}; log {}",
        binary.display(),
        child.id(),
        log_path.display()
    );
    Server {
        addr,
        pid: Some(child.id()),
        child: Some(child),
        log: Some(log_path),
        _dir: Some(dir),
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// One blocking GET on a new connection: status, body and how long it took.
fn get(addr: SocketAddr, path: &str, timeout: Duration) -> (Option<u16>, String, Duration) {
    let t0 = Instant::now();
    let run = || -> std::io::Result<(u16, String)> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.set_nodelay(true)?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    };
    match run() {
        Ok((st, body)) => (Some(st), body, t0.elapsed()),
        Err(_) => (None, String::new(), t0.elapsed()),
    }
}

// ---------------------------------------------------------------------------
// The monitor
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Monitor {
    /// (seconds since start, latency ms, status) of every /healthz.
    polls: Vec<(f64, f64, Option<u16>)>,
    peak_rss: u64,
    peak_fds: usize,
}

fn monitor(
    addr: SocketAddr,
    pid: Option<u32>,
    every: Duration,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Monitor>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let t0 = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let tick = Instant::now();
            let (status, _, took) = get(addr, "/healthz", Duration::from_secs(2));
            let ok = status == Some(200);
            let mut m = out.lock().unwrap();
            m.polls.push((
                t0.elapsed().as_secs_f64(),
                took.as_secs_f64() * 1000.0,
                if ok { status } else { status.or(Some(0)) },
            ));
            if let Some(pid) = pid {
                m.peak_rss = m.peak_rss.max(rss_kib(pid).unwrap_or(0));
                m.peak_fds = m.peak_fds.max(open_fds(pid).unwrap_or(0));
            }
            drop(m);
            std::thread::sleep(every.saturating_sub(tick.elapsed()));
        }
    })
}

// ---------------------------------------------------------------------------
// Generators of traffic
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct Creds {
    /// Ingest token for every team, read token for `alpha`, expired token.
    ingest: Option<String>,
    read: Option<String>,
    expired: Option<String>,
}

impl Creds {
    fn new(secret: Option<&str>) -> Creds {
        let Some(secret) = secret else {
            return Creds {
                ingest: None,
                read: None,
                expired: None,
            };
        };
        let mint = |teams: &[&str], scope: &str, ttl: i64| {
            let claims = opswire::auth::Claims {
                sub: "wire-fuzz".into(),
                teams: teams.iter().map(|t| t.to_string()).collect(),
                exp: (opswire::auth::now_s() as i64 + ttl) as u64,
                iat: None,
                scope: Some(scope.into()),
            };
            opswire::auth::mint(&claims, Some(secret), None).expect("token")
        };
        Creds {
            ingest: Some(mint(&["*"], "ingest", 3600)),
            read: Some(mint(&["alpha"], "read", 3600)),
            expired: Some(mint(&["*"], "ingest", -3600)),
        }
    }

    /// An Authorization header line (with CRLF), or nothing.
    fn header(&self, rng: &mut Rng) -> String {
        let t = match rng.below(8) {
            0 => return String::new(),
            1 => self.read.clone(),
            2 => self.expired.clone(),
            3 => self
                .ingest
                .clone()
                .map(|t| String::from_utf8_lossy(&mutate(rng, t.into_bytes())).into_owned()),
            4 => Some(rng.text(40)),
            5 => return format!("Authorization: Basic {}\r\n", b64(b"a:b")),
            _ => self.ingest.clone(),
        };
        match t {
            Some(t) => format!("Authorization: Bearer {}\r\n", t.replace(['\r', '\n'], "")),
            None if rng.chance(0.5) => String::new(),
            None => "Authorization: Bearer anything\r\n".into(),
        }
    }
}

fn level(rng: &mut Rng) -> Value {
    json!(rng.pick(&[
        "trace", "debug", "info", "warn", "warning", "error", "err", "fatal", "critical", "loud",
        "INFO", ""
    ]))
}

fn log_record(rng: &mut Rng) -> Value {
    let long = if rng.chance(0.05) { 6000 } else { 80 };
    let mut r = json!({"level": level(rng), "message": rng.text(long)});
    if rng.chance(0.5) {
        r["source"] = json!(rng.text(10));
    }
    if rng.chance(0.3) {
        r["fields"] =
            json!({"k": rng.next() as i64, "s": rng.text(10), "n": {"a": [1, 2.5, null]}});
    }
    if rng.chance(0.3) {
        r["time"] = if rng.chance(0.5) {
            json!(rng.next() as i64)
        } else {
            json!("2026-11-23T10:00:00Z")
        };
    }
    if rng.chance(0.1) {
        r["bogus"] = json!(1);
    }
    r
}

/// A WebSocket op: valid, near-valid or odd.
fn op(rng: &mut Rng, creds: &Creds) -> Vec<u8> {
    let team = json!(rng.pick(&["alpha", "beta", "gamma", "nope", "", "ALPHA"]));
    let streams = json!(match rng.below(5) {
        0 => json!(["metrics", "logs", "alerts"]),
        1 => json!(["logs"]),
        2 => json!([]),
        3 => json!(["bogus", 1]),
        _ => json!(["alerts", "logs", "logs"]),
    });
    let mut v = match rng.below(9) {
        0 => json!({"op": "auth", "token": creds.ingest.clone().unwrap_or_else(|| rng.text(20))}),
        1 | 2 => {
            let mut o = json!({"op": "subscribe", "team": team, "streams": streams});
            if rng.chance(0.4) {
                o["resume"] = json!({"logs": {"epoch": rng.text(8), "seq": rng.next() >> rng.below(64)}, "alerts": {"epoch": "x", "seq": 0}});
            }
            if rng.chance(0.3) {
                o["filter"] = json!({"logs": {"min_level": level(rng), "source": rng.text(12)}});
            }
            o
        }
        3 => json!({"op": "unsubscribe", "team": team, "streams": streams}),
        4 => json!({"op": "ping"}),
        5 | 6 => {
            json!({"op": "publish", "team": team, "stream": rng.pick(&["logs", "metrics", "alerts"]), "data": if rng.chance(0.7) { log_record(rng) } else {
                json!({"host": rng.text(10), "sampled_at": rng.next() as i64, "cpu": {"usage_pct": 1.5, "cores_pct": [1.0, 2.0], "load": [0.1, 0.2, 0.3]},
                       "memory": {"used_bytes": 1, "total_bytes": 2, "usage_pct": 50.0}, "disks": [{"mount": "/", "used_bytes": 1, "total_bytes": 2, "usage_pct": 50.0}]})
            }})
        }
        7 => {
            json!({"op": "silence", "team": team, "fingerprint": format!("fp{}", rng.below(8)), "duration_s": rng.next() >> rng.below(64)})
        }
        _ => json!({"op": rng.text(8), "x": [[[[[[{}]]]]]]}),
    };
    if rng.chance(0.5) {
        v["id"] = if rng.chance(0.8) {
            json!(rng.next() as i64)
        } else {
            json!("7")
        };
    }
    if rng.chance(0.2) {
        v["traceparent"] = json!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    }
    if rng.chance(0.1) {
        v["team"] = json!(rng.next());
    }
    let b = v.to_string().into_bytes();
    if rng.chance(0.25) {
        mutate(rng, b)
    } else {
        b
    }
}

/// A WebSocket frame, masked (as a client must) unless `mask` is false.
fn frame(
    fin: bool,
    rsv: u8,
    opcode: u8,
    mask: bool,
    payload: &[u8],
    declared: Option<u64>,
    rng: &mut Rng,
) -> Vec<u8> {
    let len = declared.unwrap_or(payload.len() as u64);
    let mut f = vec![(fin as u8) << 7 | (rsv & 7) << 4 | (opcode & 15)];
    let m = (mask as u8) << 7;
    if len < 126 {
        f.push(m | len as u8);
    } else if len <= u16::MAX as u64 {
        f.push(m | 126);
        f.extend((len as u16).to_be_bytes());
    } else {
        f.push(m | 127);
        f.extend(len.to_be_bytes());
    }
    if mask {
        let key = rng.bytes(4);
        f.extend(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend(payload);
    }
    f
}

/// A burst of frames: mostly ops, plus every kind of malformed frame.
fn frames(rng: &mut Rng, creds: &Creds) -> Vec<u8> {
    let mut out = Vec::new();
    let n = rng.range(1, 6);
    for _ in 0..n {
        let f = match rng.below(20) {
            0..=7 => {
                let p = op(rng, creds);
                frame(true, 0, 1, true, &p, None, rng)
            }
            8 => {
                let n = rng.range(0, 300) as usize;
                frame(true, 0, 2, true, &rng.bytes(n), None, rng)
            }
            9 => frame(true, 0, 1, true, &[0xff, 0xfe, b'{', 0xc3], None, rng),
            10 => frame(
                true,
                0,
                *rng.pick(&[3u8, 4, 5, 6, 7, 11, 12, 13, 14, 15]),
                true,
                b"x",
                None,
                rng,
            ),
            11 => frame(
                true,
                rng.range(1, 8) as u8,
                1,
                true,
                b"{\"op\":\"ping\"}",
                None,
                rng,
            ),
            12 => frame(true, 0, 1, false, b"{\"op\":\"ping\"}", None, rng),
            13 => {
                // A fragmented message, with a ping in between, maybe broken.
                let p = op(rng, creds);
                let cut = rng.below(p.len() as u64 + 1) as usize;
                let mut v = frame(false, 0, 1, true, &p[..cut], None, rng);
                if rng.chance(0.5) {
                    v.extend(frame(true, 0, 9, true, b"mid", None, rng));
                }
                if rng.chance(0.2) {
                    v.extend(frame(false, 0, 1, true, b"again", None, rng));
                }
                v.extend(frame(true, 0, 0, true, &p[cut..], None, rng));
                v
            }
            14 => frame(rng.chance(0.5), 0, 0, true, b"orphan", None, rng),
            15 => {
                let mut p = (*rng
                    .pick(&[0u16, 999, 1000, 1004, 1005, 1006, 1015, 3000, 4999, 5000]))
                .to_be_bytes()
                .to_vec();
                p.extend(rng.pick(&[&b""[..], b"bye", b"\xff\xfe"]).iter());
                if rng.chance(0.2) {
                    p.truncate(1);
                }
                frame(true, 0, 8, true, &p, None, rng)
            }
            16 => {
                let (fin, opcode, n) = (
                    rng.chance(0.7),
                    *rng.pick(&[9u8, 10]),
                    rng.range(100, 200) as usize,
                );
                frame(fin, 0, opcode, true, &rng.bytes(n), None, rng)
            }
            17 => frame(
                true,
                0,
                1,
                true,
                &vec![b'x'; MAX_FRAME as usize + rng.range(1, 1000) as usize],
                None,
                rng,
            ),
            18 => {
                // A header that promises more than follows.
                let mut v = frame(true, 0, 1, true, b"short", Some(rng.range(10, 5000)), rng);
                v.truncate(v.len().min(8 + 5));
                v
            }
            _ => {
                let v = frame(true, 0, 1, true, &op(rng, creds), None, rng);
                v[..rng.below(v.len() as u64).max(1) as usize].to_vec()
            }
        };
        out.extend(f);
    }
    out
}

fn otlp_body(rng: &mut Rng, json_body: bool) -> Vec<u8> {
    let s = |v: String| {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        })
    };
    let records = (0..rng.range(0, 6))
        .map(|_| LogRecord {
            time_unix_nano: rng.next() >> rng.below(64),
            severity_number: rng.range(0, 30) as i32,
            severity_text: level(rng).as_str().unwrap().to_owned(),
            body: if rng.chance(0.8) {
                let long = if rng.chance(0.05) { 6000 } else { 60 };
                s(rng.text(long))
            } else {
                Some(AnyValue {
                    value: Some(any_value::Value::IntValue(rng.next() as i64)),
                })
            },
            attributes: vec![KeyValue {
                key: rng.text(5),
                value: s(rng.text(10)),
                ..Default::default()
            }],
            trace_id: {
                let n = *rng.pick(&[0usize, 16, 16, 7]);
                rng.bytes(n)
            },
            ..Default::default()
        })
        .collect();
    let team = rng.pick(&["alpha", "beta", "gamma", "nope"]).to_string();
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    KeyValue {
                        key: "opswire.team".into(),
                        value: s(team),
                        ..Default::default()
                    },
                    KeyValue {
                        key: "service.name".into(),
                        value: s(rng.text(8)),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    if json_body {
        serde_json::to_vec(&req).unwrap()
    } else {
        req.encode_to_vec()
    }
}

fn webhook_body(rng: &mut Rng) -> Vec<u8> {
    let alerts: Vec<Value> = (0..rng.range(0, 5))
        .map(|_| {
            json!({
                "status": rng.pick(&["firing", "resolved", "firing", "pending"]),
                "labels": {"alertname": rng.pick(&["HighCpu", "Down"]), "team": rng.pick(&["alpha", "beta", "gamma", "nope"]), "severity": "critical"},
                "annotations": {"summary": rng.text(30)},
                "startsAt": rng.pick(&["2026-11-23T10:00:00Z", "2026-11-23T10:00:00+02:00", "yesterday"]),
                "endsAt": rng.pick(&["0001-01-01T00:00:00Z", "", "2026-11-23T11:00:00Z"]),
                "fingerprint": format!("fp{}", rng.below(8)),
            })
        })
        .collect();
    json!({"version": rng.pick(&["4", "4", "4", "3"]), "groupKey": "{}", "status": "firing", "receiver": "opswire", "alerts": alerts}).to_string().into_bytes()
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

struct Ctx {
    addr: SocketAddr,
    creds: Creds,
    cap: Duration,
    hold_cap: Duration,
    frame_stream_cap: u64,
}

async fn send(s: &mut TcpStream, b: Vec<u8>) -> bool {
    s.write_all(&b).await.is_ok()
}

async fn connect(addr: SocketAddr) -> Option<TcpStream> {
    let s = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let _ = s.set_nodelay(true);
    Some(s)
}

/// Reads a response head; its status (0: malformed), or None if the
/// connection ended or `wait` passed first.
async fn read_status(s: &mut TcpStream, wait: Duration) -> Option<u16> {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() > 64 * 1024 {
            let text = String::from_utf8_lossy(&buf);
            return Some(text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0));
        }
    }
}

fn upgrade_request(rng: &mut Rng, ctx: &Ctx, mutate_head: bool) -> Vec<u8> {
    let key = b64(&rng.bytes(16));
    let mut head = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
        ctx.addr
    );
    head.push_str(&ctx.creds.header(rng));
    if rng.chance(0.3) {
        head.push_str("Sec-WebSocket-Protocol: opswire.v1, other\r\n");
    }
    if rng.chance(0.1) {
        head.push_str(&format!(
            "Origin: {}\r\n",
            rng.pick(&["http://evil.example", "http://127.0.0.1", "null"])
        ));
    }
    head.push_str("\r\n");
    let mut b = head.into_bytes();
    if mutate_head {
        b = mutate(rng, b);
    }
    b
}

/// Handshake; the stream if the server upgraded it.
async fn ws_open(rng: &mut Rng, ctx: &Ctx, stats: &mut Stats) -> Option<TcpStream> {
    let mut s = connect(ctx.addr).await?;
    let req = upgrade_request(rng, ctx, false);
    s.write_all(&req).await.ok()?;
    stats.bytes_sent += req.len() as u64;
    match read_status(&mut s, Duration::from_secs(2)).await {
        Some(101) => {
            stats.ws_upgraded += 1;
            Some(s)
        }
        st => {
            stats.ws_refused += 1;
            *stats.http.entry(st.unwrap_or(0)).or_default() += 1;
            None
        }
    }
}

/// Drains what the server sends; true once it closed.
fn drain(
    r: tokio::net::tcp::OwnedReadHalf,
    closed: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut r = r;
        let mut buf = vec![0u8; 16 * 1024];
        let mut total = 0;
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n as u64,
            }
        }
        closed.store(true, Ordering::Relaxed);
        total
    })
}

async fn ws_frames(rng: &mut Rng, ctx: &Ctx, stats: &mut Stats) {
    let Some(s) = ws_open(rng, ctx, stats).await else {
        return;
    };
    let (r, mut w) = s.into_split();
    let closed = Arc::new(AtomicBool::new(false));
    let reader = rng.chance(0.8).then(|| drain(r, closed.clone()));
    for _ in 0..rng.range(1, 40) {
        if closed.load(Ordering::Relaxed) {
            break;
        }
        let b = frames(rng, &ctx.creds);
        // Whole, or split at random points with pauses.
        let mut rest = &b[..];
        while !rest.is_empty() {
            let n = if rng.chance(0.7) {
                rest.len()
            } else {
                rng.range(1, rest.len() as u64 + 1) as usize
            };
            if w.write_all(&rest[..n]).await.is_err() {
                closed.store(true, Ordering::Relaxed);
                break;
            }
            stats.bytes_sent += n as u64;
            rest = &rest[n..];
            if rng.chance(0.2) {
                tokio::time::sleep(Duration::from_millis(rng.range(1, 50))).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.range(0, 30))).await;
    }
    if closed.load(Ordering::Relaxed) {
        stats.ws_closed_by_server += 1;
    }
    if let Some(h) = reader {
        h.abort();
    }
}

async fn ws_handshake_mutated(rng: &mut Rng, ctx: &Ctx, stats: &mut Stats) {
    let Some(mut s) = connect(ctx.addr).await else {
        return;
    };
    let req = upgrade_request(rng, ctx, true);
    if s.write_all(&req).await.is_err() {
        return;
    }
    stats.bytes_sent += req.len() as u64;
    let st = read_status(&mut s, Duration::from_secs(2)).await;
    *stats.http.entry(st.unwrap_or(0)).or_default() += 1;
    if st == Some(101) {
        stats.ws_upgraded += 1;
        let f = frames(rng, &ctx.creds);
        let _ = s.write_all(&f).await;
    }
}

/// A frame header declaring more than the limit, then a stream of bytes.
async fn ws_huge_length(rng: &mut Rng, ctx: &Ctx, stats: &mut Stats) {
    let Some(s) = ws_open(rng, ctx, stats).await else {
        return;
    };
    let (r, mut w) = s.into_split();
    let closed = Arc::new(AtomicBool::new(false));
    let reader = drain(r, closed.clone());
    let declared = *rng.pick(&[MAX_FRAME + 1, 1 << 20, 1 << 31, 1 << 40, (1 << 63) - 1]);
    let opcode = *rng.pick(&[1u8, 2, 0]);
    let header = frame(opcode == 0, 0, opcode, true, &[], Some(declared), rng);
    let t0 = Instant::now();
    let mut sent = 0u64;
    let chunk = rng.bytes(64 * 1024);
    let mut ok = w.write_all(&header).await.is_ok();
    while ok
        && t0.elapsed() < ctx.cap
        && sent < ctx.frame_stream_cap
        && !closed.load(Ordering::Relaxed)
    {
        match tokio::time::timeout(ctx.cap.saturating_sub(t0.elapsed()), w.write_all(&chunk)).await
        {
            Ok(Ok(())) => sent += chunk.len() as u64,
            Ok(Err(_)) => ok = false,
            Err(_) => break,
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let by_server = !ok || closed.load(Ordering::Relaxed);
    stats.bytes_sent += sent;
    stats
        .frame_streams
        .push((sent, by_server, t0.elapsed().as_secs_f64()));
    reader.abort();
}

/// Pings or pongs as fast as the socket takes them.
async fn ws_flood(rng: &mut Rng, ctx: &Ctx, stats: &mut Stats, opcode: u8) {
    let kind = if opcode == 9 { "ping" } else { "pong" };
    let Some(s) = ws_open(rng, ctx, stats).await else {
        return;
    };
    let (r, mut w) = s.into_split();
    let closed = Arc::new(AtomicBool::new(false));
    let reader = drain(r, closed.clone());
    let payload = rng.bytes(125);
    let one = frame(true, 0, opcode, true, &payload, None, rng);
    let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 64).collect();
    let t0 = Instant::now();
    let mut n = 0u64;
    let mut ok = true;
    while ok && t0.elapsed() < ctx.cap && !closed.load(Ordering::Relaxed) {
        match tokio::time::timeout(ctx.cap.saturating_sub(t0.elapsed()), w.write_all(&batch)).await
        {
            Ok(Ok(())) => n += 64,
            Ok(Err(_)) => ok = false,
            Err(_) => break,
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let by_server = !ok || closed.load(Ordering::Relaxed);
    stats.bytes_sent += n * one.len() as u64;
    stats
        .floods
        .push((kind, n, by_server, t0.elapsed().as_secs_f64()));
    reader.abort();
}

/// An HTTP request to an ingest endpoint or SSE, with a mutated head or
/// body, delivered whole, chunked, pipelined, slowly, or never finished.
async fn http_request(rng: &mut Rng, ctx: &Ctx, stats: &mut Stats) {
    let (path, ctype, mut body): (String, &str, Vec<u8>) = match rng.below(5) {
        0 | 1 => {
            let lines: Vec<String> = (0..rng.range(1, 20))
                .map(|_| log_record(rng).to_string())
                .collect();
            let q = if rng.chance(0.8) {
                format!("?team={}", rng.pick(&TEAMS))
            } else {
                String::new()
            };
            let body = if rng.chance(0.3) {
                format!("[{}]", lines.join(","))
            } else {
                lines.join("\n")
            };
            (
                format!("/api/v1/logs{q}"),
                "application/x-ndjson",
                body.into_bytes(),
            )
        }
        2 => {
            let json_body = rng.chance(0.4);
            (
                "/v1/logs".into(),
                if json_body {
                    "application/json"
                } else {
                    "application/x-protobuf"
                },
                otlp_body(rng, json_body),
            )
        }
        3 => (
            "/api/v1/alerts/alertmanager".into(),
            "application/json",
            webhook_body(rng),
        ),
        _ => (
            (*rng.pick(&[
                "/healthz",
                "/metrics",
                "/api/v1/teams",
                "/api/v1/info",
                "/",
                "/nope",
                "/ws",
            ]))
            .into(),
            "text/plain",
            Vec::new(),
        ),
    };
    if rng.chance(0.3) {
        body = mutate(rng, body);
    }
    let gzip = rng.chance(0.1);
    if gzip {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&body).unwrap();
        body = e.finish().unwrap();
        if rng.chance(0.3) {
            body = mutate(rng, body);
        }
    }
    let method = if body.is_empty() && rng.chance(0.7) {
        "GET"
    } else {
        *rng.pick(&["POST", "POST", "POST", "PUT", "GET", "DELETE"])
    };
    // Delivery: 0 whole, 1 chunked, 2 pipelined, 3 drip, 4 never finished.
    let mode = if body.is_empty() {
        0
    } else {
        *rng.pick(&[0u8, 0, 0, 1, 1, 2, 3, 4])
    };
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {ctype}\r\n",
        ctx.addr
    );
    head.push_str(&ctx.creds.header(rng));
    if gzip {
        head.push_str("Content-Encoding: gzip\r\n");
    }
    match mode {
        1 | 4 if rng.chance(0.6) => head.push_str("Transfer-Encoding: chunked\r\n"),
        4 => head.push_str(&format!("Content-Length: {}\r\n", body.len() * 2 + 10)),
        _ => head.push_str(&format!("Content-Length: {}\r\n", body.len())),
    }
    let chunked = head.contains("chunked");
    head.push_str("\r\n");
    let mut head = head.into_bytes();
    if rng.chance(0.15) {
        head = mutate(rng, head);
    }
    let Some(mut s) = connect(ctx.addr).await else {
        return;
    };
    let t0 = Instant::now();
    let mut ok = send(&mut s, head.clone()).await;
    stats.bytes_sent += head.len() as u64;
    let chunk_of = |b: &[u8]| {
        let mut c = format!("{:x}\r\n", b.len()).into_bytes();
        c.extend_from_slice(b);
        c.extend_from_slice(b"\r\n");
        c
    };
    match mode {
        0 | 2 => {
            ok = ok && send(&mut s, body.clone()).await;
            if mode == 2 && ok {
                // A second request right behind the first.
                let next =
                    format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", ctx.addr).into_bytes();
                ok = send(&mut s, next).await;
            }
        }
        1 => {
            for part in body.chunks(rng.range(1, 4096) as usize) {
                ok = ok && send(&mut s, chunk_of(part)).await;
            }
            let end: &[u8] = if rng.chance(0.1) {
                b"zz\r\n\r\n"
            } else {
                b"0\r\n\r\n"
            };
            ok = ok && send(&mut s, end.to_vec()).await;
        }
        _ => {
            // Slow: a piece every 200 ms; mode 4 never sends the end.
            let kind = if mode == 3 {
                "drip"
            } else if chunked {
                "chunked, never finished"
            } else {
                "short of its Content-Length"
            };
            let mut answered = false;
            let mut rest = &body[..];
            let mut buf = [0u8; 1024];
            while t0.elapsed() < ctx.hold_cap {
                if mode == 3 && rest.is_empty() {
                    break;
                }
                let piece = if rest.is_empty() {
                    b"x".as_slice()
                } else {
                    let n = rest.len().min(if mode == 3 { 1 } else { 16 });
                    let p = &rest[..n];
                    rest = &rest[n..];
                    p
                };
                let bytes = if chunked {
                    chunk_of(piece)
                } else {
                    piece.to_vec()
                };
                if !send(&mut s, bytes).await {
                    answered = true;
                    break;
                }
                // Did the server answer or close meanwhile?
                if let Ok(r) =
                    tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await
                {
                    match r {
                        Ok(0) | Err(_) => {
                            answered = true;
                            break;
                        }
                        Ok(_) => {
                            answered = true;
                            break;
                        }
                    }
                }
            }
            // A hold: the cap came and the server neither answered nor closed.
            let capped = t0.elapsed() >= ctx.hold_cap;
            if answered || capped {
                stats
                    .holds
                    .push((kind, t0.elapsed().as_secs_f64(), answered));
                return;
            }
            if mode == 4 {
                return;
            }
        }
    }
    let st = if ok {
        read_status(
            &mut s,
            ctx.cap
                .saturating_sub(t0.elapsed())
                .max(Duration::from_millis(100)),
        )
        .await
    } else {
        None
    };
    let st = st.unwrap_or(0);
    *stats.http.entry(st).or_default() += 1;
    if (500..600).contains(&st) && st != 503 {
        stats.server_errors.push(format!(
            "{st} for {method} {path} ({} body bytes, mode {mode})",
            body.len()
        ));
    }
}

async fn sse(rng: &mut Rng, ctx: &Ctx, stats: &mut Stats) {
    let mut q = vec![format!("team={}", rng.pick(&["alpha", "beta", "nope", ""]))];
    if rng.chance(0.5) {
        const STREAMS: [&str; 5] = ["logs,alerts", "metrics", " logs , alerts ", "bogus", ""];
        let streams = *rng.pick(&STREAMS);
        q.push(format!("streams={}", pct(streams)));
    }
    if rng.chance(0.3) {
        q.push(format!(
            "min_level={}",
            rng.pick(&["warn", "loud", "ERROR"])
        ));
    }
    if rng.chance(0.3) {
        q.push(format!(
            "last_event_id={}",
            pct(&format!(
                "logs:{}:{}",
                rng.text(8),
                rng.next() >> rng.below(64)
            ))
        ));
    }
    if let (true, Some(t)) = (rng.chance(0.3), &ctx.creds.ingest) {
        q.push(format!("access_token={}", pct(t)));
    }
    let mut head = format!(
        "GET /sse?{} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n",
        q.join("&"),
        ctx.addr
    );
    head.push_str(&ctx.creds.header(rng));
    if rng.chance(0.4) {
        let id =
            String::from_utf8_lossy(&mutate(rng, b"logs:abcdefgh:12,alerts:abcdefgh:3".to_vec()))
                .replace(['\r', '\n'], "");
        head.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    head.push_str("\r\n");
    let Some(mut s) = connect(ctx.addr).await else {
        return;
    };
    if s.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    stats.bytes_sent += head.len() as u64;
    if rng.chance(0.3) {
        // Never read: a stalled consumer until the cap.
        tokio::time::sleep(ctx.cap.min(Duration::from_millis(rng.range(100, 3000)))).await;
        return;
    }
    let st = read_status(&mut s, Duration::from_secs(2))
        .await
        .unwrap_or(0);
    *stats.http.entry(st).or_default() += 1;
    let until = Instant::now() + Duration::from_millis(rng.range(50, 2000)).min(ctx.cap);
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        match tokio::time::timeout(until - Instant::now(), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(_)) => {}
        }
    }
}

const SCENARIOS: &[(&str, u64)] = &[
    ("ws_frames", 30),
    ("ws_handshake", 8),
    ("ws_huge_length", 4),
    ("ws_ping_flood", 3),
    ("ws_pong_flood", 3),
    ("http", 40),
    ("sse", 12),
];

async fn worker(
    id: usize,
    seed: u64,
    ctx: Arc<Ctx>,
    until: Instant,
    only: Option<Vec<String>>,
) -> Stats {
    let mut rng = Rng::new(seed ^ (id as u64).wrapping_mul(0xA076_1D64_78BD_642F));
    let mut stats = Stats::default();
    let pool: Vec<(&str, u64)> = SCENARIOS
        .iter()
        .copied()
        .filter(|(n, _)| only.as_ref().is_none_or(|o| o.iter().any(|x| x == n)))
        .collect();
    let total: u64 = pool.iter().map(|(_, w)| w).sum();
    while Instant::now() < until && total > 0 {
        let mut x = rng.below(total);
        let name = pool
            .iter()
            .find(|(_, w)| {
                if x < *w {
                    true
                } else {
                    x -= w;
                    false
                }
            })
            .unwrap()
            .0;
        *stats.scenarios.entry(name).or_default() += 1;
        let hold = if name == "http" {
            ctx.hold_cap + ctx.cap
        } else {
            ctx.cap + Duration::from_secs(1)
        };
        let run = async {
            match name {
                "ws_frames" => ws_frames(&mut rng, &ctx, &mut stats).await,
                "ws_handshake" => ws_handshake_mutated(&mut rng, &ctx, &mut stats).await,
                "ws_huge_length" => ws_huge_length(&mut rng, &ctx, &mut stats).await,
                "ws_ping_flood" => ws_flood(&mut rng, &ctx, &mut stats, 9).await,
                "ws_pong_flood" => ws_flood(&mut rng, &ctx, &mut stats, 10).await,
                "http" => http_request(&mut rng, &ctx, &mut stats).await,
                _ => sse(&mut rng, &ctx, &mut stats).await,
            }
        };
        let _ = tokio::time::timeout(hold, run).await;
    }
    stats
}

// ---------------------------------------------------------------------------
// Warm-up: a few normal sessions and requests
// ---------------------------------------------------------------------------

async fn warm_up(ctx: &Ctx) {
    let mut rng = Rng::new(7);
    let auth = ctx
        .creds
        .ingest
        .as_ref()
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let mut sessions = Vec::new();
    for i in 0..4 {
        let key = b64(&rng.bytes(16));
        let Some(mut s) = connect(ctx.addr).await else {
            continue;
        };
        let req = format!("GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n", ctx.addr);
        let _ = s.write_all(req.as_bytes()).await;
        if read_status(&mut s, Duration::from_secs(2)).await != Some(101) {
            eprintln!("warm-up: a WebSocket upgrade failed");
            continue;
        }
        for p in [
            json!({"op": "subscribe", "id": 1, "team": TEAMS[i % 3]}),
            json!({"op": "ping", "id": 2}),
            json!({"op": "publish", "id": 3, "team": TEAMS[i % 3], "stream": "logs", "data": {"level": "info", "message": "warm-up"}}),
        ] {
            let _ = s
                .write_all(&frame(
                    true,
                    0,
                    1,
                    true,
                    p.to_string().as_bytes(),
                    None,
                    &mut rng,
                ))
                .await;
        }
        sessions.push(s);
    }
    let post = |path: &str, ctype: &str, body: Vec<u8>| {
        let mut r = format!("POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n{auth}\r\n", ctx.addr, body.len()).into_bytes();
        r.extend(body);
        r
    };
    let requests = vec![
        post(
            "/api/v1/logs?team=alpha",
            "application/x-ndjson",
            b"{\"level\":\"info\",\"message\":\"warm\"}\n".to_vec(),
        ),
        post(
            "/v1/logs",
            "application/x-protobuf",
            otlp_body(&mut rng, false),
        ),
        post(
            "/api/v1/alerts/alertmanager",
            "application/json",
            webhook_body(&mut rng),
        ),
        format!(
            "GET /sse?team=alpha HTTP/1.1\r\nHost: {}\r\n{auth}\r\n",
            ctx.addr
        )
        .into_bytes(),
        format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            ctx.addr
        )
        .into_bytes(),
    ];
    for r in requests {
        if let Some(mut s) = connect(ctx.addr).await {
            let _ = s.write_all(&r).await;
            let _ = read_status(&mut s, Duration::from_secs(2)).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for mut s in sessions {
        let _ = s
            .write_all(&frame(
                true,
                0,
                8,
                true,
                &1000u16.to_be_bytes(),
                None,
                &mut rng,
            ))
            .await;
    }
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let secret = match (args.mode.as_str(), &args.secret, args.attach) {
        ("auth", Some(s), _) => Some(s.clone()),
        ("auth", None, None) => Some(format!(
            "wire-fuzz-secret-{:016x}{:016x}",
            Rng::new(seed).next(),
            Rng::new(!seed).next()
        )),
        ("auth", None, Some(_)) => {
            eprintln!(
                "--attach --mode auth needs --secret (or OPSWIRE_FUZZ_SECRET) to mint tokens"
            );
            std::process::exit(2);
        }
        _ => None,
    };
    let mut server = start(&args, secret.as_deref());
    let addr = server.addr;
    println!(
        "wire fuzz: mode {}, {} connections for {} s, seed {seed}, caps {} ms / {} ms (slow bodies)",
        args.mode, args.conns, args.seconds, args.conn_cap_ms, args.hold_cap_ms
    );
    let ctx = Arc::new(Ctx {
        addr,
        creds: Creds::new(secret.as_deref()),
        cap: Duration::from_millis(args.conn_cap_ms),
        hold_cap: Duration::from_millis(args.hold_cap_ms),
        frame_stream_cap: args.frame_stream_cap_mb << 20,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    rt.block_on(warm_up(&ctx));
    std::thread::sleep(Duration::from_secs(1));
    let rss_start = server.pid.and_then(rss_kib);
    let fds_start = server.pid.and_then(open_fds);
    println!(
        "RSS after warm-up (start): {}",
        rss_start.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
    );

    let stop = Arc::new(AtomicBool::new(false));
    let mon = Arc::new(Mutex::new(Monitor::default()));
    let mon_thread = monitor(
        addr,
        server.pid,
        Duration::from_millis(args.poll_ms),
        stop.clone(),
        mon.clone(),
    );

    let until = Instant::now() + Duration::from_secs(args.seconds);
    let only: Option<Vec<String>> = args
        .only
        .as_ref()
        .map(|o| o.split(',').map(|s| s.trim().to_owned()).collect());
    let t_fuzz = Instant::now();
    let stats = rt.block_on(async {
        let tasks: Vec<_> = (0..args.conns)
            .map(|i| tokio::spawn(worker(i, seed, ctx.clone(), until, only.clone())))
            .collect();
        let mut all = Stats::default();
        for t in tasks {
            if let Ok(s) = t.await {
                all.merge(s);
            }
        }
        all
    });
    drop(rt);
    let fuzz_secs = t_fuzz.elapsed().as_secs_f64();
    let (rss_peak, fds_peak) = {
        let m = mon.lock().unwrap();
        (m.peak_rss, m.peak_fds)
    };

    // Every fuzz connection is closed: wait (bounded) for RSS to settle and
    // for the server to see every WebSocket and SSE connection gone.
    let target = rss_start.map(|s| (s as f64 * (1.0 + args.rss_slack_pct / 100.0)) as u64);
    let t_settle = Instant::now();
    let open_conns = || -> Option<u64> {
        let (_, metrics, _) = get(addr, "/metrics", Duration::from_secs(2));
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("opswire_open_connections "))?
            .trim()
            .parse()
            .ok()
    };
    let (mut rss_end, mut open_end);
    loop {
        rss_end = server.pid.and_then(rss_kib);
        open_end = open_conns();
        let rss_ok = matches!((target, rss_end), (Some(t), Some(e)) if e <= t) || target.is_none();
        if (rss_ok && open_end.unwrap_or(0) == 0)
            || t_settle.elapsed() >= Duration::from_secs(args.settle_s)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let settle_secs = t_settle.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let _ = mon_thread.join();
    let fds_end = server.pid.and_then(open_fds);
    let is_alive = server.pid.map(alive);

    // Stop the server we started (its shutdown is in the log too).
    if let Some(child) = server.child.as_mut() {
        // SAFETY: kill(2) on our own child with a valid signal.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(200));
    }
    let panics: Vec<String> = server
        .log
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|log| {
            log.lines()
                .filter(|l| l.to_ascii_lowercase().contains("panic"))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();

    // ---- summary
    let m = mon.lock().unwrap();
    let mut lat: Vec<f64> = m.polls.iter().map(|p| p.1).collect();
    let slow: Vec<_> = m
        .polls
        .iter()
        .filter(|p| p.2 != Some(200) || p.1 > args.healthz_ms as f64)
        .collect();
    let max_lat = lat.iter().cloned().fold(0.0, f64::max);
    let (p50, p99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "\n== traffic ({fuzz_secs:.1} s, {:.1} MiB sent)",
        stats.bytes_sent as f64 / 1048576.0
    );
    println!(
        "scenarios: {}",
        stats
            .scenarios
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "websocket: {} upgraded, {} refused, {} closed by the server mid-stream",
        stats.ws_upgraded, stats.ws_refused, stats.ws_closed_by_server
    );
    println!(
        "http answers: {}",
        stats
            .http
            .iter()
            .map(|(k, v)| format!(
                "{}: {v}",
                if *k == 0 {
                    "none".to_string()
                } else {
                    k.to_string()
                }
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for e in stats.server_errors.iter().take(5) {
        println!("  server error: {e}");
    }
    let max_stream = stats.frame_streams.iter().map(|f| f.0).max().unwrap_or(0);
    let streams_never_cut = stats.frame_streams.iter().filter(|f| !f.1).count();
    println!(
        "over-limit frames: {} streams, max {:.1} MiB taken in on one connection, {} not cut off by the server",
        stats.frame_streams.len(),
        max_stream as f64 / 1048576.0,
        streams_never_cut
    );
    for kind in ["ping", "pong"] {
        let f: Vec<_> = stats.floods.iter().filter(|f| f.0 == kind).collect();
        let open = f.iter().filter(|f| !f.2).count();
        let max = f.iter().map(|f| f.1).max().unwrap_or(0);
        let rate = f
            .iter()
            .map(|f| f.1 as f64 / f.3.max(1e-3))
            .fold(0.0, f64::max);
        println!("{kind} floods: {}, {open} left open to the cap, up to {max} frames on one connection ({rate:.0}/s)", f.len());
    }
    let held: Vec<_> = stats.holds.iter().filter(|h| !h.2).collect();
    println!(
        "slow bodies: {}, {} held by the server to the {} ms cap ({})",
        stats.holds.len(),
        held.len(),
        args.hold_cap_ms,
        held.iter()
            .map(|h| h.0)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("\n== server");
    println!(
        "/healthz: {} polls, p50 {p50:.1} ms, p99 {p99:.1} ms, max {max_lat:.1} ms, {} over {} ms or failed",
        m.polls.len(),
        slow.len(),
        args.healthz_ms
    );
    for s in slow.iter().take(5) {
        println!("  at {:.1} s: {:.1} ms, status {:?}", s.0, s.1, s.2);
    }
    if let (Some(a), Some(e)) = (rss_start, rss_end) {
        println!(
            "RSS: start {:.1} MiB, peak {:.1} MiB (+{:.1}), end {:.1} MiB ({:+.1} %) after {settle_secs:.1} s",
            mib(a),
            mib(rss_peak),
            mib(rss_peak.saturating_sub(a)),
            mib(e),
            (e as f64 / a as f64 - 1.0) * 100.0
        );
    }
    println!(
        "open fds: start {}, peak {fds_peak}, end {}; WebSocket+SSE connections the server still counts at the end: {}",
        fds_start.map_or("n/a".into(), |n| n.to_string()),
        fds_end.map_or("n/a".into(), |n| n.to_string()),
        open_end.map_or("n/a".into(), |n| n.to_string())
    );

    // ---- checks
    let mut failures = Vec::new();
    if is_alive == Some(false) {
        failures.push("the server process died".to_string());
    }
    if !slow.is_empty() {
        failures.push(format!(
            "{} /healthz polls over {} ms or failed (max {max_lat:.1} ms)",
            slow.len(),
            args.healthz_ms
        ));
    }
    if let (Some(t), Some(e)) = (target, rss_end) {
        if e > t {
            failures.push(format!(
                "RSS {:.1} MiB did not return within {} % of the start ({:.1} MiB) in {} s",
                mib(e),
                args.rss_slack_pct,
                mib(rss_start.unwrap()),
                args.settle_s
            ));
        }
    }
    if !panics.is_empty() {
        failures.push(format!(
            "{} log lines mention panic, first: {}",
            panics.len(),
            panics[0]
        ));
    }
    if !args.no_hardening {
        if let Some(a) = rss_start {
            if rss_peak > a + (args.peak_rss_mb << 10) {
                failures.push(format!(
                    "hardening: peak RSS grew by {:.1} MiB (limit {} MiB)",
                    mib(rss_peak - a),
                    args.peak_rss_mb
                ));
            }
        }
        if max_stream > args.frame_stream_mb << 20 {
            failures.push(format!(
                "hardening: the server took in {:.1} MiB of a frame declared over limits.max_frame_bytes (limit {} MiB)",
                max_stream as f64 / 1048576.0,
                args.frame_stream_mb
            ));
        }
        for kind in ["ping", "pong"] {
            let open: Vec<_> = stats
                .floods
                .iter()
                .filter(|f| f.0 == kind && !f.2)
                .collect();
            if let Some(worst) = open.iter().max_by_key(|f| f.1) {
                failures.push(format!(
                    "hardening: {} {kind} flood(s) never closed by the server within {} ms (up to {} frames, {:.0}/s)",
                    open.len(),
                    args.conn_cap_ms,
                    worst.1,
                    worst.1 as f64 / worst.3.max(1e-3)
                ));
            }
        }
        if server.child.is_some() && open_end.is_some_and(|n| n > 0) {
            failures.push(format!("hardening: the server still counts {} WebSocket/SSE connections {settle_secs:.0} s after every client closed", open_end.unwrap()));
        }
        if !held.is_empty() {
            failures.push(format!(
                "hardening: {} slow or unfinished request bodies held to the {} ms cap",
                held.len(),
                args.hold_cap_ms
            ));
        }
    }
    if args.keep || !failures.is_empty() {
        if let Some(d) = server._dir.take() {
            println!("kept {} (config and log)", d.keep().display());
        }
    }
    if failures.is_empty() {
        println!("\nPASS (seed {seed})");
    } else {
        println!("\nFAIL (seed {seed}):");
        for f in &failures {
            println!("  - {f}");
        }
        if let Some(l) = server.log.as_ref().filter(|l| Path::new(l).exists()) {
            println!("log: {}", l.display());
        }
        std::process::exit(1);
    }
}

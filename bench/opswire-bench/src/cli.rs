//! The command line, its limits, and the plan it validates into.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use clap::Parser;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::http::Uri;

/// Hard caps: the generator is a bounded tool.
pub const MAX_SUBSCRIBERS: u64 = 60_000;
pub const MAX_DURATION_S: u64 = 600;
pub const MAX_WORKERS: usize = 16;
pub const MAX_RUN_S: u64 = 1_800;
/// Subscribers one worker takes with `--workers auto` (one process may hold
/// at most 20,000 file descriptors here).
pub const PER_WORKER_AUTO: u64 = 18_000;

/// What the server speaks.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// opswire's protocol: `subscribe` op, `subscribed`, data frames.
    #[default]
    Opswire,
    /// Socket.IO v4 (Engine.IO v4 over WebSocket): the team goes in the
    /// connect packet's auth payload (`40{"team":…}`), frames arrive as
    /// `42["metrics-update",{frame}]`, server pings (`2`) get pongs (`3`).
    /// For the Socket.IO peer under `bench/peers/`.
    Socketio,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Opswire => "opswire",
            Protocol::Socketio => "socketio",
        }
    }
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "opswire-bench",
    version,
    about = "Load generator for opswire: N WebSocket subscribers over T teams, \
             delivery lag, loss, server CPU and memory",
    long_about = "Load generator for opswire. Opens N WebSocket subscribers to a running \
opswire on this machine (loopback only), ramped, with source addresses spread over \
127.0.0.2-127.0.0.254 and split over worker processes (it re-executes itself). Each \
subscribes to one team's metrics (and optionally logs / alerts). After the ramp, a \
window of --duration seconds is measured: frames whose `ts` falls in it are counted \
and their lag (arrival − ts, arrival = the kernel's receive timestamp on the \
subscriber's socket) goes into histograms. Reports connected/failed, frames received \
vs expected, loss (seq gaps on logs/alerts), lag p50/p90/p99/p99.9/max, metrics data \
age (arrival − sampled_at), and with --server-pid the server's CPU and RSS from /proc."
)]
pub struct Args {
    /// opswire's WebSocket URL (loopback only; `/ws` is added when no path
    /// is given, `/socket.io/?EIO=4&transport=websocket` with `--protocol socketio`).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,

    /// What the server speaks: opswire's protocol, or Socket.IO v4 (the
    /// Node peer of the side-by-side benchmark; metrics only, needs --teams
    /// or --team-prefix).
    #[arg(long, value_enum, default_value_t = Protocol::Opswire)]
    pub protocol: Protocol,

    /// Subscribers to open (at most 60,000).
    #[arg(short = 'n', long, default_value_t = 100)]
    pub subscribers: u64,

    /// Worker processes: `auto` = ceil(N / 18000), or a number (1-16).
    #[arg(long, default_value = "auto")]
    pub workers: String,

    /// Teams to spread subscribers over, round-robin [default: every team
    /// the server's welcome lists].
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["team_prefix", "team_count"])]
    pub teams: Vec<String>,

    /// Team names PREFIX0 .. PREFIX{count-1} (with --team-count).
    #[arg(long, requires = "team_count")]
    pub team_prefix: Option<String>,

    /// How many teams with --team-prefix.
    #[arg(long, requires = "team_prefix", value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub team_count: Option<u64>,

    /// A bearer token for every subscriber (prefer the environment variable).
    #[arg(long, env = "OPSWIRE_BENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Mint a token per team with this HS256 secret (opswire's auth.jwt_secret).
    #[arg(
        long,
        env = "OPSWIRE_JWT_SECRET",
        hide_env_values = true,
        conflicts_with = "token"
    )]
    pub jwt_secret: Option<String>,

    /// An ingest token for --log-rate when --token is used.
    #[arg(long, env = "OPSWIRE_BENCH_INGEST_TOKEN", hide_env_values = true)]
    pub ingest_token: Option<String>,

    /// Also subscribe to logs.
    #[arg(long)]
    pub logs: bool,

    /// Also subscribe to alerts.
    #[arg(long)]
    pub alerts: bool,

    /// Subscribe to nothing: connect, read `welcome`, hold (idle memory per
    /// connection).
    #[arg(long, conflicts_with_all = ["logs", "alerts", "log_rate", "stalled_share"])]
    pub idle: bool,

    /// Publish this many logs per second to every team during the window
    /// (implies --logs; 0-1000).
    #[arg(long, default_value_t = 0.0)]
    pub log_rate: f64,

    /// Publish the logs of --log-rate to this URL instead of --url (another
    /// node of a cluster; loopback only, as --url).
    #[arg(long, requires = "log_rate")]
    pub publish_url: Option<String>,

    /// Message length of the published logs, in bytes.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=16_384))]
    pub log_bytes: u64,

    /// What each subscriber asks for per team (opswire's `view`): `full`
    /// (every host's whole snapshot, the server's default), `summary` (one
    /// row per host), or `hosts:GLOB[,GLOB…]` (the whole snapshots of the
    /// hosts the globs match).
    #[arg(long, default_value = "full")]
    pub view: String,

    /// Offer permessage-deflate (RFC 7692) on every subscriber's handshake;
    /// compressed frames are inflated by the generator, and the report gives
    /// the bytes that crossed the wire.
    #[arg(long)]
    pub deflate: bool,

    /// Publish this many synthetic hosts to every team, each once a second,
    /// from before the ramp to the end of the window (0-1000; a fleet per
    /// team; names `TEAM-web-000` …). Needs an ingest token as --log-rate.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub fleet_hosts: u64,

    /// Seconds to hold and measure, after the ramp (1-600).
    #[arg(short = 'd', long, alias = "hold", default_value_t = 10)]
    pub duration: u64,

    /// Milliseconds to keep reading after the window for its late frames.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(0..=30_000))]
    pub grace_ms: u64,

    /// New connections per second, over all workers (1-20000).
    #[arg(long, default_value_t = 1000.0)]
    pub ramp_rate: f64,

    /// Seconds one subscriber may take from connect to `subscribed`.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=120))]
    pub connect_timeout_s: u64,

    /// Share of subscribers (per team) that stop reading after subscribing (0-0.9).
    #[arg(long, default_value_t = 0.0)]
    pub stalled_share: f64,

    /// SO_RCVBUF in bytes for stalled subscribers (0: the OS default), to make
    /// them push back sooner.
    #[arg(long, default_value_t = 0)]
    pub stalled_rcvbuf: u32,

    /// Spread source addresses over this many of 127.0.0.2-127.0.0.254.
    #[arg(long, default_value_t = 253, value_parser = clap::value_parser!(u32).range(1..=253))]
    pub source_ips: u32,

    /// Client read buffer per connection, in bytes.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(512..=1_048_576))]
    pub read_buffer: u64,

    /// opswire's process id: report its CPU % and RSS from /proc. A
    /// comma-separated list (several processes on one port): the report
    /// sums them and lists each.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,

    /// Also report the CPU % and RSS of another process over the window,
    /// as NAME=PID (e.g. `redis=1234`); repeatable.
    #[arg(long, value_name = "NAME=PID")]
    pub watch_pid: Vec<String>,

    /// The server's tick in ms, for the nominal frame count [default: from
    /// GET /api/v1/info, else 1000].
    #[arg(long)]
    pub tick_ms: Option<u64>,

    /// Stop everything after this many seconds [default: ramp + connect
    /// timeout + duration + grace + 30 s; at most 1800].
    #[arg(long)]
    pub deadline_s: Option<u64>,

    /// Print the report as JSON (on stdout; progress still goes to stderr).
    #[arg(long)]
    pub json: bool,

    /// No progress lines on stderr.
    #[arg(short, long)]
    pub quiet: bool,

    /// Internal: run as a worker process (spec on stdin).
    #[arg(long, hide = true)]
    pub worker: bool,
}

/// Where and what, validated.
#[derive(Debug, Clone)]
pub struct Plan {
    pub server: SocketAddr,
    /// ws://ip:port/path
    pub url: String,
    pub workers: usize,
    pub streams: [bool; 3],
    pub stalled_ppm: u64,
    pub deadline_s: u64,
    /// Where the log publishers connect (--publish-url, else `url`).
    pub publish_url: String,
    /// --watch-pid, parsed.
    pub watch: Vec<(String, u32)>,
    /// The subscribe op's `view` (none: the server's default, `full`).
    pub view: Option<serde_json::Value>,
}

/// `--view`, as the subscribe op's `view` value.
pub fn parse_view(v: &str) -> Result<Option<serde_json::Value>, String> {
    match v.trim() {
        "full" => Ok(None),
        "summary" => Ok(Some(serde_json::json!("summary"))),
        other => {
            let globs: Vec<&str> = other
                .strip_prefix("hosts:")
                .ok_or_else(|| {
                    format!("--view `{other}`: expected full, summary or hosts:GLOB[,GLOB…]")
                })?
                .split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .collect();
            if globs.is_empty() {
                return Err("--view hosts: name at least one host or glob".into());
            }
            Ok(Some(serde_json::json!({ "hosts": globs })))
        }
    }
}

/// The server's address from a loopback `ws://` URL, and the URL to use.
pub fn parse_url(url: &str) -> Result<(SocketAddr, String), String> {
    parse_url_for(url, Protocol::Opswire)
}

/// [`parse_url`], with the default path of `protocol`.
pub fn parse_url_for(url: &str, protocol: Protocol) -> Result<(SocketAddr, String), String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("--url `{url}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("ws") => {}
        Some(s) => return Err(format!("--url: scheme `{s}` not supported (use ws://)")),
        None => return Err(format!("--url `{url}` needs a ws:// scheme")),
    }
    let host = uri.host().unwrap_or("");
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("--url: host `{host}` must be a loopback IP address"))?
    };
    let IpAddr::V4(v4) = ip else {
        return Err(format!(
            "--url: {ip} refused: use an IPv4 loopback address (127.0.0.0/8); \
             source addresses are spread over 127.0.0.2-127.0.0.254"
        ));
    };
    if !v4.is_loopback() {
        return Err(format!(
            "--url: {v4} is not a loopback address; this generator only loads servers on this machine"
        ));
    }
    let port = uri.port_u16().unwrap_or(80);
    let path = match uri.path_and_query().map(|p| p.as_str()) {
        None | Some("") | Some("/") => match protocol {
            Protocol::Opswire => "/ws",
            Protocol::Socketio => "/socket.io/?EIO=4&transport=websocket",
        },
        Some(p) => p,
    };
    let server = SocketAddr::from((v4, port));
    Ok((server, format!("ws://{server}{path}")))
}

/// Checks the arguments against the caps; `nofile` is the open-files hard
/// limit of a worker process.
pub fn plan(a: &Args, nofile: u64) -> Result<Plan, String> {
    let (server, url) = parse_url_for(&a.url, a.protocol)?;
    if a.protocol == Protocol::Socketio {
        if a.idle || a.logs || a.alerts || a.log_rate > 0.0 {
            return Err(
                "--protocol socketio measures metrics only (no --idle, --logs, --alerts, --log-rate)"
                    .into(),
            );
        }
        if teams(a).is_empty() {
            return Err("--protocol socketio needs --teams or --team-prefix/--team-count".into());
        }
    }
    if a.subscribers == 0 || a.subscribers > MAX_SUBSCRIBERS {
        return Err(format!(
            "--subscribers must be 1-{MAX_SUBSCRIBERS} (got {})",
            a.subscribers
        ));
    }
    if a.duration == 0 || a.duration > MAX_DURATION_S {
        return Err(format!(
            "--duration must be 1-{MAX_DURATION_S} s (got {})",
            a.duration
        ));
    }
    if !(1.0..=20_000.0).contains(&a.ramp_rate) {
        return Err("--ramp-rate must be 1-20000 connections per second".into());
    }
    if !(0.0..=0.9).contains(&a.stalled_share) {
        return Err("--stalled-share must be 0-0.9".into());
    }
    if !(0.0..=1000.0).contains(&a.log_rate) {
        return Err("--log-rate must be 0-1000 logs per second per team".into());
    }
    if a.log_rate > 0.0 && a.token.is_some() && a.ingest_token.is_none() {
        return Err("--log-rate with --token needs an --ingest-token (scope ingest)".into());
    }
    if a.fleet_hosts > 0 && a.token.is_some() && a.ingest_token.is_none() {
        return Err("--fleet-hosts with --token needs an --ingest-token (scope ingest)".into());
    }
    let view = parse_view(&a.view)?;
    if a.protocol == Protocol::Socketio && (view.is_some() || a.deflate || a.fleet_hosts > 0) {
        return Err("--protocol socketio takes no --view, --deflate or --fleet-hosts".into());
    }
    let workers = if a.workers == "auto" {
        a.subscribers.div_ceil(PER_WORKER_AUTO) as usize
    } else {
        a.workers
            .parse::<usize>()
            .ok()
            .filter(|w| (1..=MAX_WORKERS).contains(w))
            .ok_or_else(|| format!("--workers must be `auto` or 1-{MAX_WORKERS}"))?
    };
    if workers as u64 > a.subscribers {
        return Err(format!(
            "--workers {workers} is more than --subscribers {}",
            a.subscribers
        ));
    }
    let per_worker = a.subscribers.div_ceil(workers as u64);
    if per_worker + 64 > nofile {
        return Err(format!(
            "{per_worker} subscribers per worker exceed what one process may open here \
             ({nofile} files): use more --workers"
        ));
    }
    let ramp_s = (a.subscribers as f64 / a.ramp_rate).ceil() as u64;
    let auto_deadline = ramp_s + a.connect_timeout_s + a.duration + a.grace_ms / 1000 + 30;
    let deadline_s = a.deadline_s.unwrap_or(auto_deadline).min(MAX_RUN_S);
    if deadline_s < a.duration + 5 {
        return Err(format!(
            "--deadline-s {deadline_s} leaves no time for a {} s window",
            a.duration
        ));
    }
    let publish_url = match &a.publish_url {
        Some(u) => {
            parse_url(u)
                .map_err(|e| e.replace("--url", "--publish-url"))?
                .1
        }
        None => url.clone(),
    };
    let watch = a
        .watch_pid
        .iter()
        .map(|w| {
            w.split_once('=')
                .and_then(|(name, pid)| Some((name.trim().to_owned(), pid.trim().parse().ok()?)))
                .filter(|(name, _)| !name.is_empty())
                .ok_or_else(|| format!("--watch-pid `{w}`: expected NAME=PID"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Plan {
        server,
        url,
        publish_url,
        watch,
        view,
        workers,
        streams: if a.idle {
            [false; 3]
        } else {
            [true, a.logs || a.log_rate > 0.0, a.alerts]
        },
        stalled_ppm: (a.stalled_share * 1_000_000.0).round() as u64,
        deadline_s,
    })
}

/// The team list from --teams or --team-prefix/--team-count (empty: discover).
pub fn teams(a: &Args) -> Vec<String> {
    match (&a.team_prefix, a.team_count) {
        (Some(p), Some(n)) => (0..n).map(|i| format!("{p}{i}")).collect(),
        _ => a
            .teams
            .iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["opswire-bench"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).unwrap()
    }

    #[test]
    fn loopback_only() {
        assert_eq!(
            parse_url("ws://127.0.0.1:8080").unwrap(),
            (
                "127.0.0.1:8080".parse().unwrap(),
                "ws://127.0.0.1:8080/ws".into()
            )
        );
        assert_eq!(
            parse_url("ws://localhost:9/x").unwrap().1,
            "ws://127.0.0.1:9/x"
        );
        assert!(parse_url("ws://10.0.0.1:8080/ws").is_err());
        assert!(parse_url("ws://example.com/ws").is_err());
        assert!(parse_url("wss://127.0.0.1/ws").is_err());
        assert!(parse_url("ws://[::1]:8080/ws").is_err());
    }

    #[test]
    fn socketio_mode_has_its_own_path_and_needs_teams() {
        let a = args(&[
            "--protocol",
            "socketio",
            "--url",
            "ws://127.0.0.1:9",
            "--teams",
            "t0",
        ]);
        assert_eq!(
            plan(&a, 20_000).unwrap().url,
            "ws://127.0.0.1:9/socket.io/?EIO=4&transport=websocket"
        );
        let no_teams = args(&["--protocol", "socketio"]);
        assert!(plan(&no_teams, 20_000).unwrap_err().contains("--teams"));
        let logs = args(&["--protocol", "socketio", "--teams", "t0", "--logs"]);
        assert!(plan(&logs, 20_000).is_err());
    }

    #[test]
    fn caps_and_workers() {
        let p = plan(&args(&["-n", "19000"]), 20_000).unwrap();
        assert_eq!(p.workers, 2);
        assert_eq!(plan(&args(&["-n", "1000"]), 20_000).unwrap().workers, 1);
        assert!(plan(&args(&["-n", "19990", "--workers", "1"]), 20_000).is_err());
        assert!(plan(&args(&["-n", "100000"]), 20_000).is_err());
        assert!(plan(&args(&["-d", "601"]), 20_000).is_err());
        assert!(plan(&args(&["--stalled-share", "0.95"]), 20_000).is_err());
        let p = plan(
            &args(&["--log-rate", "5", "--stalled-share", "0.1"]),
            20_000,
        )
        .unwrap();
        assert_eq!(p.streams, [true, true, false]);
        assert_eq!(p.stalled_ppm, 100_000);
        assert_eq!(
            plan(&args(&["--idle"]), 20_000).unwrap().streams,
            [false; 3]
        );
        assert!(Args::try_parse_from(["b", "--idle", "--logs"]).is_err());
        assert!(p.deadline_s <= MAX_RUN_S);
        assert_eq!(
            teams(&args(&["--team-prefix", "t", "--team-count", "3"])),
            vec!["t0", "t1", "t2"]
        );
        assert_eq!(teams(&args(&["--teams", "a,b"])), vec!["a", "b"]);
    }

    #[test]
    fn views_and_fleets() {
        assert_eq!(plan(&args(&[]), 20_000).unwrap().view, None);
        assert_eq!(
            plan(&args(&["--view", "summary"]), 20_000).unwrap().view,
            Some(serde_json::json!("summary"))
        );
        assert_eq!(
            plan(&args(&["--view", "hosts:t0-web-000, *-01?"]), 20_000)
                .unwrap()
                .view,
            Some(serde_json::json!({"hosts": ["t0-web-000", "*-01?"]}))
        );
        for bad in ["hosts:", "hosts: ,", "detail"] {
            assert!(plan(&args(&["--view", bad]), 20_000).is_err(), "{bad}");
        }
        assert!(
            plan(&args(&["--fleet-hosts", "50", "--token", "x"]), 20_000)
                .unwrap_err()
                .contains("--ingest-token")
        );
        assert!(Args::try_parse_from(["b", "--fleet-hosts", "1001"]).is_err());
        let sio = ["--protocol", "socketio", "--teams", "t0", "--deflate"];
        assert!(plan(&args(&sio), 20_000).is_err());
    }

    #[test]
    fn cluster_options() {
        // Several servers on one port, and another process to watch.
        let a = args(&["--server-pid", "10,11,12", "--watch-pid", "redis=13"]);
        assert_eq!(a.server_pid, vec![10, 11, 12]);
        let p = plan(&a, 20_000).unwrap();
        assert_eq!(p.watch, vec![("redis".to_owned(), 13)]);
        assert_eq!(p.publish_url, p.url);
        for bad in ["redis", "=13", "redis=x"] {
            assert!(plan(&args(&["--watch-pid", bad]), 20_000).is_err(), "{bad}");
        }
        // Logs published on one node, read on another.
        let p = plan(
            &args(&[
                "--url",
                "ws://127.0.0.1:9001",
                "--log-rate",
                "100",
                "--publish-url",
                "ws://127.0.0.2:9000",
            ]),
            20_000,
        )
        .unwrap();
        assert_eq!(p.url, "ws://127.0.0.1:9001/ws");
        assert_eq!(p.publish_url, "ws://127.0.0.2:9000/ws");
        let off = args(&["--log-rate", "1", "--publish-url", "ws://10.0.0.1:9000"]);
        assert!(plan(&off, 20_000).unwrap_err().contains("--publish-url"));
        assert!(Args::try_parse_from(["b", "--publish-url", "ws://127.0.0.1:1"]).is_err());
    }
}

//! A worker process: opens its share of the subscribers, reports `ready`,
//! waits for the coordinator's `go` (the measurement window), records
//! every data frame whose `ts` falls in the window, and prints its result.
//!
//! Protocol, one JSON object per line: the coordinator writes a
//! [`WorkerSpec`] then a [`Go`] to the worker's stdin; the worker writes
//! [`WorkerMsg::Ready`] then [`WorkerMsg::Result`] to its stdout. Anything
//! for a person goes to stderr.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use super::cli::Protocol;
use super::conn;
use super::frame::{self, Kind};
use super::hist::{Hist, HistData};
use super::procfs;
use super::wire::{WireShared, WireStream, DEFLATE_OFFER};

/// What one worker is to do.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub worker: usize,
    pub server: SocketAddr,
    /// The WebSocket URL (`ws://…/ws`).
    pub url: String,
    pub teams: Vec<String>,
    /// One bearer token per team, or none (dev mode).
    pub tokens: Vec<Option<String>>,
    /// Subscribe to metrics, logs, alerts.
    pub streams: [bool; 3],
    /// Global subscriber indices `first .. first + count`.
    pub first: u64,
    pub count: u64,
    /// Stalled subscribers per million (see [`is_stalled`]).
    pub stalled_ppm: u64,
    /// This worker's connections per second.
    pub ramp_rate: f64,
    pub connect_timeout_ms: u64,
    /// The worker exits at this unix time (ms) whatever happens.
    pub deadline_unix_ms: i64,
    pub source_ips: u32,
    pub read_buffer: usize,
    /// SO_RCVBUF of stalled subscribers (0: the OS default).
    pub stalled_rcvbuf: u32,
    pub protocol: Protocol,
    /// The subscribe op's `view` (none: the server's default).
    #[serde(default)]
    pub view: Option<serde_json::Value>,
    /// Offer permessage-deflate.
    #[serde(default)]
    pub deflate: bool,
}

/// The measurement window: frames whose `ts` is in `[start_us, end_us)`
/// count; the worker reads until `end_us + grace_ms`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Go {
    pub start_us: i64,
    pub end_us: i64,
    pub grace_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WorkerMsg {
    Ready { connected: u64, failed: u64 },
    Result(Box<WorkerResult>),
}

/// Frame counts of one (team, stream), over the window.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StreamAcc {
    pub received: u64,
    pub seq_min: Option<u64>,
    pub seq_max: Option<u64>,
    /// Frames missing between two received ones (logs and alerts).
    pub seq_gaps: u64,
    /// Frames whose seq was not above the previous one (logs and alerts).
    pub out_of_order: u64,
}

impl StreamAcc {
    pub fn merge(&mut self, o: &StreamAcc) {
        self.received += o.received;
        self.seq_min = opt(self.seq_min, o.seq_min, u64::min);
        self.seq_max = opt(self.seq_max, o.seq_max, u64::max);
        self.seq_gaps += o.seq_gaps;
        self.out_of_order += o.out_of_order;
    }

    fn saw(&mut self, seq: u64) {
        self.seq_min = Some(self.seq_min.map_or(seq, |m| m.min(seq)));
        self.seq_max = Some(self.seq_max.map_or(seq, |m| m.max(seq)));
    }
}

fn opt(a: Option<u64>, b: Option<u64>, f: fn(u64, u64) -> u64) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    }
}

/// A metrics frame of the window: its seq, its ts and a hash of its
/// text. Two processes' tickers may wake in the same microsecond (the
/// kernel's timer slack coalesces their wake-ups), so (seq, ts) alone can
/// be the same for two sources; their frames still differ (each counts
/// its own connections).
pub type FrameId = (u64, i64, u64);

fn text_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    // Fixed keys: every worker process hashes alike.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// Where a team's metrics frames came from. Each opswire process numbers
/// its own metrics frames (in cluster mode every node publishes every
/// team's, with seqs of its own), so a team's seq range is only a count
/// within one source. Frames one subscriber received one after the other
/// come from the same source; linking them splits a team's frames into
/// its sources (one per server process), and each subscriber's first
/// frame says which source it reads.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Sources {
    /// Pairs of frames one subscriber received one after the other.
    pub links: BTreeSet<(FrameId, FrameId)>,
    /// Each subscriber's first frame of the window, and how many
    /// subscribers had it first.
    pub firsts: Vec<(FrameId, u64)>,
}

impl Sources {
    /// A subscriber received `cur` after `prev` (None: its first).
    fn saw(&mut self, prev: Option<FrameId>, cur: FrameId) {
        match prev {
            Some(p) => {
                self.links.insert((p, cur));
            }
            None => match self.firsts.iter_mut().find(|(f, _)| *f == cur) {
                Some((_, n)) => *n += 1,
                None => self.firsts.push((cur, 1)),
            },
        }
    }

    pub fn merge(&mut self, o: &Sources) {
        self.links.extend(o.links.iter().copied());
        for &(f, n) in &o.firsts {
            match self.firsts.iter_mut().find(|(g, _)| *g == f) {
                Some((_, m)) => *m += n,
                None => self.firsts.push((f, n)),
            }
        }
    }

    /// Each source's (seq range length, subscribers whose first frame was
    /// of it), in no particular order.
    pub fn split(&self) -> Vec<(u64, u64)> {
        let mut ids: BTreeMap<FrameId, usize> = BTreeMap::new();
        let mut parent: Vec<usize> = Vec::new();
        let mut id = |f: FrameId, parent: &mut Vec<usize>| {
            *ids.entry(f).or_insert_with(|| {
                parent.push(parent.len());
                parent.len() - 1
            })
        };
        fn root(parent: &mut [usize], mut i: usize) -> usize {
            while parent[i] != i {
                parent[i] = parent[parent[i]];
                i = parent[i];
            }
            i
        }
        for &(a, b) in &self.links {
            let (a, b) = (id(a, &mut parent), id(b, &mut parent));
            let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
            parent[ra] = rb;
        }
        for &(f, _) in &self.firsts {
            id(f, &mut parent);
        }
        // Per root: min seq, max seq, subscribers.
        let mut per: BTreeMap<usize, (u64, u64, u64)> = BTreeMap::new();
        for (&(seq, _, _), &i) in &ids {
            let r = root(&mut parent, i);
            let e = per.entry(r).or_insert((seq, seq, 0));
            e.0 = e.0.min(seq);
            e.1 = e.1.max(seq);
        }
        for &(f, n) in &self.firsts {
            let r = root(&mut parent, ids[&f]);
            if let Some(e) = per.get_mut(&r) {
                e.2 += n;
            }
        }
        per.into_values().map(|(a, b, n)| (b - a + 1, n)).collect()
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TeamAcc {
    /// Subscribers of this team that read (connected).
    pub healthy: u64,
    /// Subscribers of this team that stopped reading (connected).
    pub stalled: u64,
    /// Healthy subscribers' frames: metrics, logs, alerts.
    pub streams: [StreamAcc; 3],
    /// Where the metrics frames came from (see [`Sources`]).
    #[serde(default)]
    pub metrics_sources: Sources,
}

/// What one subscriber remembers between frames.
#[derive(Default)]
struct SubSeq {
    /// The highest seq seen per stream (logs and alerts: gaps).
    last: [u64; 3],
    /// The last metrics frame of the window it received.
    metrics: Option<FrameId>,
}

/// A class of failure and one example message of it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ErrorCount {
    pub count: u64,
    pub example: String,
}

/// Everything a worker measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerResult {
    pub worker: usize,
    pub attempted: u64,
    pub connected: u64,
    pub failed: u64,
    pub errors: BTreeMap<String, ErrorCount>,
    pub ramp_s: f64,
    /// Time from connect to `subscribed`.
    pub setup: HistData,
    /// Healthy subscribers that ended before the run did, by reason.
    pub disconnects: BTreeMap<String, u64>,
    /// `lagged` notices received (slow-consumer closes announced).
    pub lagged_notices: u64,
    /// Error frames received after subscribing.
    pub error_frames: u64,
    pub teams: Vec<TeamAcc>,
    /// Lag to the kernel's receive time, per stream.
    pub lag: [HistData; 3],
    /// Lag to the moment the generator read the frame, per stream.
    pub lag_app: [HistData; 3],
    /// Metrics: receive time − each host's `sampled_at`.
    pub data_age: HistData,
    /// Data frames read whose kernel receive time was unknown.
    pub no_kernel_ts: u64,
    /// Data frames outside the window (before it, or replays).
    pub outside_window: u64,
    /// Frames the generator could not read.
    pub unparsed: u64,
    /// Stalled subscribers whose TCP connection is still established at the
    /// end, and those the server has closed.
    pub stalled_open: u64,
    pub stalled_closed: u64,
    /// Bytes waiting unread in stalled subscribers' receive buffers at the end.
    pub stalled_unread_bytes: u64,
    /// This worker's CPU ticks over the window, and the window's wall time.
    pub cpu_ticks: u64,
    pub window_s: f64,
    pub rss_kib: u64,
    /// Bytes read from the healthy subscribers' sockets inside the window
    /// (WebSocket headers and control frames included, compressed as sent).
    #[serde(default)]
    pub wire_bytes: u64,
    /// JSON text of the data frames counted in the window (inflated).
    #[serde(default)]
    pub text_bytes: u64,
    /// Connections whose handshake accepted permessage-deflate.
    #[serde(default)]
    pub deflate_negotiated: u64,
}

/// Whether subscriber `i` (global index) plays a stalled client: within
/// each team, every (1/share)-th subscriber, so each team gets its share.
pub fn is_stalled(i: u64, teams: u64, ppm: u64) -> bool {
    if ppm == 0 {
        return false;
    }
    let k = i / teams.max(1);
    (k + 1) * ppm / 1_000_000 > k * ppm / 1_000_000
}

/// The worker's measurements while it runs (one thread: no locks).
#[derive(Default)]
struct State {
    connected: u64,
    failed: u64,
    errors: BTreeMap<String, ErrorCount>,
    setup: Hist,
    disconnects: BTreeMap<String, u64>,
    lagged_notices: u64,
    error_frames: u64,
    teams: Vec<TeamAcc>,
    lag: [Hist; 3],
    lag_app: [Hist; 3],
    data_age: Hist,
    no_kernel_ts: u64,
    outside_window: u64,
    unparsed: u64,
    stalled_fds: Vec<RawFd>,
    text_bytes: u64,
}

struct Ctx {
    spec: WorkerSpec,
    ws_config: WebSocketConfig,
    /// The inflater and the wire-byte count, shared by every connection.
    wire: Rc<WireShared>,
    state: RefCell<State>,
    /// Set by `go`.
    window: Cell<Option<(i64, i64)>>,
    settled: Cell<u64>,
    settled_notify: Notify,
}

impl Ctx {
    fn settle(&self) {
        self.settled.set(self.settled.get() + 1);
        self.settled_notify.notify_one();
    }

    fn fail(&self, class: String, message: String) {
        let mut st = self.state.borrow_mut();
        st.failed += 1;
        let e = st.errors.entry(class).or_default();
        e.count += 1;
        if e.example.is_empty() {
            e.example = message;
        }
    }

    fn disconnect(&self, reason: String) {
        *self
            .state
            .borrow_mut()
            .disconnects
            .entry(reason)
            .or_default() += 1;
    }

    /// One text frame of a healthy subscriber of `team`.
    fn on_text(&self, team: usize, text: &str, rx_us: Option<i64>, sub: &mut SubSeq) {
        let now = opswire::time::now_micros();
        let mut st = self.state.borrow_mut();
        let Some(h) = frame::head(text) else {
            st.unparsed += 1;
            return;
        };
        match h.kind {
            Kind::Data(s) => {
                let (Some(ts), Some((start, end))) = (h.ts, self.window.get()) else {
                    st.outside_window += 1;
                    return;
                };
                if ts < start || ts >= end {
                    st.outside_window += 1;
                    return;
                }
                let arrival = match rx_us {
                    Some(t) => t,
                    None => {
                        st.no_kernel_ts += 1;
                        now
                    }
                };
                st.text_bytes += text.len() as u64;
                st.lag[s].record(arrival - ts);
                st.lag_app[s].record(now - ts);
                let t = &mut st.teams[team];
                let acc = &mut t.streams[s];
                acc.received += 1;
                if let Some(seq) = h.seq {
                    acc.saw(seq);
                    // Metrics are latest-value: skipped seqs are no loss.
                    if s != 0 {
                        let prev = sub.last[s];
                        if prev != 0 {
                            if seq > prev + 1 {
                                acc.seq_gaps += seq - prev - 1;
                            } else if seq <= prev {
                                acc.out_of_order += 1;
                            }
                        }
                        sub.last[s] = prev.max(seq);
                    } else {
                        let id = (seq, ts, text_hash(text));
                        t.metrics_sources.saw(sub.metrics, id);
                        sub.metrics = Some(id);
                    }
                }
                if s == 0 && h.data_at > 0 {
                    let age = &mut st.data_age;
                    frame::sampled_at(text, h.data_at, |at| age.record(arrival - at));
                }
            }
            Kind::Lagged => st.lagged_notices += 1,
            Kind::Error => st.error_frames += 1,
            _ => {}
        }
    }
}

/// Sorts a failure into a class for the report.
fn classify(e: &SetupError) -> (String, String) {
    match e {
        SetupError::Timeout => ("timeout".into(), "no `subscribed` in time".into()),
        SetupError::Connect(e) => (format!("connect: {:?}", e.kind()), e.to_string()),
        SetupError::Ws(tungstenite::Error::Http(r)) => {
            let body = r
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (format!("http {}", r.status().as_u16()), body)
        }
        SetupError::Ws(tungstenite::Error::Io(e)) => {
            (format!("handshake: {:?}", e.kind()), e.to_string())
        }
        SetupError::Ws(e) => ("handshake".into(), e.to_string()),
        SetupError::Refused(m) => ("refused by the server".into(), m.clone()),
        SetupError::Closed(m) => ("closed before subscribed".into(), m.clone()),
    }
}

enum SetupError {
    Timeout,
    Connect(std::io::Error),
    Ws(tungstenite::Error),
    Refused(String),
    Closed(String),
}

type Ws = WebSocketStream<WireStream>;

/// Connects subscriber `i` and subscribes it; returns once `subscribed` came.
async fn setup(ctx: &Ctx, i: u64, team: usize, stalled: bool) -> Result<Ws, SetupError> {
    let spec = &ctx.spec;
    let src = conn::source_ip(i, spec.source_ips);
    let rcvbuf = if stalled { spec.stalled_rcvbuf } else { 0 };
    let stream = conn::connect(spec.server, src, rcvbuf)
        .await
        .map_err(SetupError::Connect)?;
    let stream = WireStream::new(stream, ctx.wire.clone(), spec.read_buffer);
    let mut req = spec
        .url
        .as_str()
        .into_client_request()
        .map_err(SetupError::Ws)?;
    if let Some(t) = &spec.tokens[team] {
        let v = format!("Bearer {t}")
            .parse()
            .map_err(|_| SetupError::Refused("token is not a valid header value".into()))?;
        req.headers_mut().insert("authorization", v);
    }
    if spec.deflate {
        req.headers_mut().insert(
            "sec-websocket-extensions",
            tungstenite::http::HeaderValue::from_static(DEFLATE_OFFER),
        );
    }
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(ctx.ws_config))
        .await
        .map_err(SetupError::Ws)?;
    if spec.protocol == Protocol::Socketio {
        return socketio_connect(&mut ws, &spec.teams[team])
            .await
            .map(|()| ws);
    }
    if !spec.streams.contains(&true) {
        // Idle: authenticated (welcome) and nothing more.
        return wait_for(&mut ws, Kind::Welcome).await.map(|()| ws);
    }
    let streams: Vec<&str> = frame::STREAMS
        .iter()
        .zip(spec.streams)
        .filter_map(|(s, on)| on.then_some(*s))
        .collect();
    let mut op = serde_json::json!({"op": "subscribe", "id": 1, "team": spec.teams[team], "streams": streams});
    if let Some(view) = &spec.view {
        op["view"] = view.clone();
    }
    ws.send(Message::text(op.to_string()))
        .await
        .map_err(SetupError::Ws)?;
    wait_for(&mut ws, Kind::Subscribed).await.map(|()| ws)
}

/// Reads until a frame of `kind`; an error frame or a close fails.
async fn wait_for(ws: &mut Ws, kind: Kind) -> Result<(), SetupError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => match frame::head(&t).map(|h| h.kind) {
                Some(k) if k == kind => return Ok(()),
                Some(Kind::Error) => return Err(SetupError::Refused(frame::error_code(&t))),
                _ => {}
            },
            Some(Ok(Message::Close(c))) => {
                return Err(SetupError::Closed(match c {
                    Some(c) => format!("close {} {}", u16::from(c.code), c.reason),
                    None => "close".into(),
                }))
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(SetupError::Ws(e)),
            None => return Err(SetupError::Closed("eof".into())),
        }
    }
}

/// Socket.IO v4: after Engine.IO's open packet (`0{…}`), connect to the
/// main namespace with the team as auth payload and wait for the server's
/// connect packet (`40…`; `44…` is a refusal).
async fn socketio_connect(ws: &mut Ws, team: &str) -> Result<(), SetupError> {
    let mut opened = false;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                if !opened && t.starts_with('0') {
                    opened = true;
                    let auth = serde_json::json!({ "team": team });
                    ws.send(Message::text(format!("40{auth}")))
                        .await
                        .map_err(SetupError::Ws)?;
                } else if t.starts_with("40") {
                    return Ok(());
                } else if t.starts_with("44") {
                    return Err(SetupError::Refused(t.to_string()));
                } else if t.as_str() == "2" {
                    ws.send(Message::text("3")).await.map_err(SetupError::Ws)?;
                }
            }
            Some(Ok(Message::Close(c))) => {
                return Err(SetupError::Closed(match c {
                    Some(c) => format!("close {} {}", u16::from(c.code), c.reason),
                    None => "close".into(),
                }))
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(SetupError::Ws(e)),
            None => return Err(SetupError::Closed("eof".into())),
        }
    }
}

/// The frame inside a Socket.IO event packet `42["name",{frame}]`.
fn socketio_payload(packet: &str) -> Option<&str> {
    let rest = packet.strip_prefix("42[\"")?;
    let comma = rest.find("\",")?;
    rest[comma + 2..].strip_suffix(']')
}

async fn subscriber(ctx: Rc<Ctx>, i: u64) {
    let teams = ctx.spec.teams.len() as u64;
    let team = (i % teams) as usize;
    let stalled = is_stalled(i, teams, ctx.spec.stalled_ppm);
    let t0 = Instant::now();
    let timeout = Duration::from_millis(ctx.spec.connect_timeout_ms);
    let mut ws = match tokio::time::timeout(timeout, setup(&ctx, i, team, stalled)).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            let (class, message) = classify(&e);
            ctx.fail(class, message);
            ctx.settle();
            return;
        }
        Err(_) => {
            let (class, message) = classify(&SetupError::Timeout);
            ctx.fail(class, message);
            ctx.settle();
            return;
        }
    };
    {
        let mut st = ctx.state.borrow_mut();
        st.connected += 1;
        st.setup.record(t0.elapsed().as_micros() as i64);
        if stalled {
            st.teams[team].stalled += 1;
            st.stalled_fds.push(ws.get_ref().as_raw_fd());
        } else {
            st.teams[team].healthy += 1;
        }
    }
    ctx.settle();
    if stalled {
        // Never read again; keep the socket open until the worker exits.
        let _keep = ws;
        std::future::pending::<()>().await;
        return;
    }
    let mut last = SubSeq::default();
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let rx = ws.get_ref().last_rx_us();
                if ctx.spec.protocol == Protocol::Socketio {
                    if let Some(frame) = socketio_payload(&t) {
                        ctx.on_text(team, frame, rx, &mut last);
                    } else if t.as_str() == "2" && ws.send(Message::text("3")).await.is_err() {
                        ctx.disconnect("error: pong failed".into());
                        return;
                    }
                    continue;
                }
                ctx.on_text(team, &t, rx, &mut last);
            }
            Some(Ok(Message::Close(c))) => {
                ctx.disconnect(match c {
                    Some(c) => format!("close {}", u16::from(c.code)),
                    None => "close".into(),
                });
                return;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                ctx.disconnect(format!("error: {e}"));
                return;
            }
            None => {
                ctx.disconnect("eof".into());
                return;
            }
        }
    }
}

/// TCP state and unread bytes of a socket (stalled subscribers).
fn socket_state(fd: RawFd) -> Option<(bool, u64)> {
    // SAFETY: tcp_info is plain data; getsockopt/ioctl write at most the
    // sizes given into live locals of an fd this process holds open.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        if libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        ) != 0
        {
            return None;
        }
        let mut unread: libc::c_int = 0;
        libc::ioctl(fd, libc::FIONREAD, &mut unread);
        // 1 = TCP_ESTABLISHED.
        Some((info.tcpi_state == 1, unread.max(0) as u64))
    }
}

/// Raises the soft open-files limit to the hard one.
pub fn raise_nofile() -> u64 {
    // SAFETY: get/setrlimit on a local struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
        r.rlim_cur as u64
    }
}

fn emit(msg: &WorkerMsg) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, msg);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// The worker process's entry point: reads its spec from stdin.
pub fn main() -> ExitCode {
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        eprintln!("opswire-bench worker: no spec on stdin");
        return ExitCode::from(2);
    }
    let spec: WorkerSpec = match serde_json::from_str(&line) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("opswire-bench worker: bad spec: {e}");
            return ExitCode::from(2);
        }
    };
    let nofile = raise_nofile();
    if spec.count + 64 > nofile {
        eprintln!(
            "opswire-bench worker {}: {} subscribers need more than the {nofile} open files this process may hold",
            spec.worker, spec.count
        );
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("opswire-bench worker: runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run(spec))
}

/// An `Instant` for a unix time in µs.
fn instant_at(unix_us: i64) -> Instant {
    let now = opswire::time::now_micros();
    let now_i = Instant::now();
    if unix_us >= now {
        now_i + Duration::from_micros((unix_us - now) as u64)
    } else {
        now_i
            .checked_sub(Duration::from_micros((now - unix_us) as u64))
            .unwrap_or(now_i)
    }
}

async fn run(spec: WorkerSpec) -> ExitCode {
    let worker = spec.worker;
    // The hard stop, whatever else happens.
    let deadline = instant_at(spec.deadline_unix_ms.saturating_mul(1000));
    tokio::task::spawn_local(async move {
        tokio::time::sleep_until(deadline).await;
        eprintln!("opswire-bench worker {worker}: global deadline reached, exiting");
        std::process::exit(3);
    });
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(spec.read_buffer)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20)
        .max_message_size(Some(16 << 20));
    let state = State {
        teams: vec![TeamAcc::default(); spec.teams.len()],
        ..State::default()
    };
    let ctx = Rc::new(Ctx {
        spec,
        ws_config,
        wire: Rc::new(WireShared::default()),
        state: RefCell::new(state),
        window: Cell::new(None),
        settled: Cell::new(0),
        settled_notify: Notify::new(),
    });

    // Ramp: subscriber k starts at k / rate.
    let t0 = Instant::now();
    let ramp = {
        let ctx = ctx.clone();
        tokio::task::spawn_local(async move {
            let per = 1.0 / ctx.spec.ramp_rate.max(0.001);
            for k in 0..ctx.spec.count {
                tokio::time::sleep_until(t0 + Duration::from_secs_f64(k as f64 * per)).await;
                tokio::task::spawn_local(subscriber(ctx.clone(), ctx.spec.first + k));
            }
        })
    };
    while ctx.settled.get() < ctx.spec.count {
        ctx.settled_notify.notified().await;
    }
    let _ = ramp.await;
    let ramp_s = t0.elapsed().as_secs_f64();
    {
        let st = ctx.state.borrow();
        emit(&WorkerMsg::Ready {
            connected: st.connected,
            failed: st.failed,
        });
    }

    // Wait for `go` (EOF: the coordinator is gone).
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let go: Go = match lines.next_line().await {
        Ok(Some(l)) => match serde_json::from_str(&l) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("opswire-bench worker {worker}: bad go line: {e}");
                return ExitCode::from(2);
            }
        },
        _ => return ExitCode::from(1),
    };
    ctx.window.set(Some((go.start_us, go.end_us)));
    ctx.wire.set_window(go.start_us, go.end_us);
    tokio::time::sleep_until(instant_at(go.start_us)).await;
    let cpu0 = procfs::sample(None);
    tokio::time::sleep_until(instant_at(go.end_us)).await;
    let cpu1 = procfs::sample(None);
    tokio::time::sleep_until(instant_at(go.end_us) + Duration::from_millis(go.grace_ms)).await;

    let mut st = ctx.state.borrow_mut();
    let (mut open, mut closed, mut unread) = (0, 0, 0);
    for &fd in &st.stalled_fds {
        match socket_state(fd) {
            Some((true, n)) => {
                open += 1;
                unread += n;
            }
            Some((false, n)) => {
                closed += 1;
                unread += n;
            }
            None => closed += 1,
        }
    }
    let (cpu_ticks, window_s, rss_kib) = match (cpu0, cpu1) {
        (Some(a), Some(b)) => (
            b.cpu_ticks.saturating_sub(a.cpu_ticks),
            b.at.duration_since(a.at).as_secs_f64(),
            b.rss_kib,
        ),
        _ => (0, 0.0, 0),
    };
    let result = WorkerResult {
        worker,
        attempted: ctx.spec.count,
        connected: st.connected,
        failed: st.failed,
        errors: std::mem::take(&mut st.errors),
        ramp_s,
        setup: st.setup.data(),
        disconnects: std::mem::take(&mut st.disconnects),
        lagged_notices: st.lagged_notices,
        error_frames: st.error_frames,
        teams: std::mem::take(&mut st.teams),
        lag: [st.lag[0].data(), st.lag[1].data(), st.lag[2].data()],
        lag_app: [
            st.lag_app[0].data(),
            st.lag_app[1].data(),
            st.lag_app[2].data(),
        ],
        data_age: st.data_age.data(),
        no_kernel_ts: st.no_kernel_ts,
        outside_window: st.outside_window,
        unparsed: st.unparsed,
        stalled_open: open,
        stalled_closed: closed,
        stalled_unread_bytes: unread,
        cpu_ticks,
        window_s,
        rss_kib,
        wire_bytes: ctx.wire.window_bytes(),
        text_bytes: st.text_bytes,
        deflate_negotiated: ctx.wire.negotiated(),
    };
    emit(&WorkerMsg::Result(Box::new(result)));
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socketio_event_packets_give_their_frame() {
        let f = r#"{"type":"metrics","team":"t0","seq":1,"ts":5,"data":{"hosts":[]}}"#;
        assert_eq!(
            socketio_payload(&format!(r#"42["metrics-update",{f}]"#)),
            Some(f)
        );
        assert_eq!(socketio_payload("2"), None);
        assert_eq!(socketio_payload(r#"40{"sid":"x"}"#), None);
    }

    #[test]
    fn metrics_sources_split_by_what_subscribers_received() {
        let mut s = Sources::default();
        // Source A: seqs 10..=12 at ts 1xx; two subscribers, one missed 11.
        s.saw(None, (10, 100, 0));
        s.saw(Some((10, 100, 0)), (11, 110, 0));
        s.saw(Some((11, 110, 0)), (12, 120, 0));
        s.saw(None, (10, 100, 0));
        s.saw(Some((10, 100, 0)), (12, 120, 0));
        // Source B, another process: seqs 3..=5 at other times; its
        // only subscriber came in at 4.
        let mut w2 = Sources::default();
        w2.saw(None, (4, 205, 0));
        w2.saw(Some((4, 205, 0)), (5, 215, 0));
        w2.saw(None, (3, 195, 0));
        w2.saw(Some((3, 195, 0)), (4, 205, 0));
        s.merge(&w2);
        let mut split = s.split();
        split.sort();
        // A: 3 frames × 2 subscribers; B: 3 frames × 2 subscribers.
        assert_eq!(split, vec![(3, 2), (3, 2)]);
        // The same seq from two sources stays apart, and so does the
        // same (seq, ts) with other text.
        let mut t = Sources::default();
        t.saw(None, (7, 1, 0));
        t.saw(None, (7, 2, 0));
        t.saw(Some((7, 2, 0)), (8, 3, 0));
        t.saw(None, (7, 2, 9));
        t.saw(Some((7, 2, 9)), (8, 3, 9));
        let mut split = t.split();
        split.sort();
        assert_eq!(split, vec![(1, 1), (2, 1), (2, 1)]);
        assert_ne!(text_hash("a"), text_hash("b"));
    }

    #[test]
    fn stalled_share_is_per_team() {
        // 10 teams × 100 subscribers, 10 %: 10 stalled in every team.
        let mut per_team = [0u32; 10];
        for i in 0..1000u64 {
            if is_stalled(i, 10, 100_000) {
                per_team[(i % 10) as usize] += 1;
            }
        }
        assert_eq!(per_team, [10; 10]);
        assert!(!(0..1000).any(|i| is_stalled(i, 10, 0)));
        let n = (0..50).filter(|&i| is_stalled(i, 3, 200_000)).count();
        assert_eq!(n, 9);
    }
}

//! The floor of a fan-out: the least a server can do to put one
//! pre-built metrics frame on N WebSocket connections, for
//! `docs/benchmarks.md` ("one team of 10k within 1.2× of the minimal raw
//! writer").
//!
//! One thread (a current-thread tokio runtime), no framework: a
//! hand-written WebSocket handshake, then each tick every team's frame is
//! serialized once, framed once, and written with one non-blocking
//! `write(2)` per socket, one socket after another. No queues, no tasks per
//! frame, no metrics, no tracing. It speaks just enough of opswire's
//! protocol for `opswire-bench`: `welcome`, `subscribe` → `subscribed`,
//! `metrics` frames with the same shape and size (this host sampled with
//! opswire's own sampler, put in every team's frame), and
//! `GET /api/v1/info` for the tick.
//!
//! ```sh
//! cargo build --release --example raw_writer
//! taskset -c 0 target/release/examples/raw_writer 127.0.0.1:18092 --teams t0 [--tick-ms 1000] [--stagger]
//! ```
//! `--team-prefix t --team-count 10` names ten teams; `--stagger` spreads
//! the teams over the tick like opswire does (team k at k × tick / T).

use std::cell::RefCell;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use opswire::sampler::Sampler;
use opswire::time::now_micros;

struct Opts {
    addr: SocketAddr,
    teams: Vec<String>,
    tick: Duration,
    stagger: bool,
}

fn opts() -> Result<Opts, String> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .ok_or("usage: raw_writer ADDR [--teams a,b | --team-prefix P --team-count N] [--tick-ms MS] [--stagger]")?
        .parse()
        .map_err(|e| format!("ADDR: {e}"))?;
    let (mut teams, mut prefix, mut count) = (vec!["t0".to_owned()], None, None);
    let (mut tick_ms, mut stagger) = (1000u64, false);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--teams" => teams = val()?.split(',').map(str::to_owned).collect(),
            "--team-prefix" => prefix = Some(val()?),
            "--team-count" => count = Some(val()?.parse::<usize>().map_err(|e| e.to_string())?),
            "--tick-ms" => tick_ms = val()?.parse().map_err(|e| format!("--tick-ms: {e}"))?,
            "--stagger" => stagger = true,
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    if let (Some(p), Some(n)) = (prefix, count) {
        teams = (0..n).map(|i| format!("{p}{i}")).collect();
    }
    Ok(Opts {
        addr,
        teams,
        tick: Duration::from_millis(tick_ms.max(1)),
        stagger,
    })
}

/// Subscribers per team: the sockets a tick writes to.
type Rooms = Rc<RefCell<Vec<Vec<Rc<TcpStream>>>>>;

fn main() {
    let o = match opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("raw_writer: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run(o));
}

async fn run(o: Opts) {
    let listener = TcpListener::bind(o.addr).await.expect("bind");
    let rooms: Rooms = Rc::new(RefCell::new(vec![Vec::new(); o.teams.len()]));
    let teams = Rc::new(o.teams.clone());
    let tick_ms = o.tick.as_millis() as u64;
    println!("raw_writer listening on {}", listener.local_addr().unwrap());
    let host = Rc::new(RefCell::new(String::from("null")));
    let mut sampler = Some(Sampler::new("raw-writer".into(), None).expect("sampler"));
    for k in 0..o.teams.len() {
        let offset = if o.stagger {
            o.tick.mul_f64(k as f64 / o.teams.len() as f64)
        } else {
            Duration::ZERO
        };
        let (rooms, teams, host) = (rooms.clone(), teams.clone(), host.clone());
        let tick = o.tick;
        // Team 0 samples the host; every team's frame carries it.
        let mut sampler = (k == 0).then(|| sampler.take()).flatten();
        tokio::task::spawn_local(async move {
            let start = tokio::time::Instant::now() + Duration::from_millis(250) + offset;
            let mut interval = tokio::time::interval_at(start, tick);
            let mut seq = 0u64;
            loop {
                interval.tick().await;
                if let Some(s) = sampler.as_mut() {
                    *host.borrow_mut() = serde_json::to_string(&s.sample()).unwrap();
                }
                seq += 1;
                let ts = now_micros();
                let subs = rooms.borrow()[k].len();
                let text = format!(
                    r#"{{"type":"metrics","team":{},"epoch":"rawwrite","seq":{seq},"ts":{ts},"data":{{"hosts":[{}],"connections":{{"team":{subs},"total":{subs}}}}}}}"#,
                    serde_json::to_string(&teams[k]).unwrap(),
                    host.borrow()
                );
                let frame = ws_frame(text.as_bytes());
                let mut room = rooms.borrow_mut();
                room[k].retain(|s| write_frame(s, &frame));
            }
        });
    }
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (rooms, teams) = (rooms.clone(), teams.clone());
        tokio::task::spawn_local(async move {
            let _ = serve(stream, rooms, teams, tick_ms).await;
        });
    }
}

/// One non-blocking write of the whole frame; a partial write finishes on a
/// task of its own. False when the socket is gone.
fn write_frame(s: &Rc<TcpStream>, frame: &Rc<Vec<u8>>) -> bool {
    match s.try_write(frame) {
        Ok(n) if n == frame.len() => true,
        Ok(n) => {
            finish_later(s.clone(), frame.clone(), n);
            true
        }
        Err(e) if e.kind() == ErrorKind::WouldBlock => {
            finish_later(s.clone(), frame.clone(), 0);
            true
        }
        Err(_) => false,
    }
}

fn finish_later(s: Rc<TcpStream>, frame: Rc<Vec<u8>>, mut at: usize) {
    tokio::task::spawn_local(async move {
        while at < frame.len() {
            if s.writable().await.is_err() {
                return;
            }
            match s.try_write(&frame[at..]) {
                Ok(n) => at += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    });
}

/// An unmasked server text frame.
fn ws_frame(payload: &[u8]) -> Rc<Vec<u8>> {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x81);
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    Rc::new(f)
}

async fn serve(
    mut stream: TcpStream,
    rooms: Rooms,
    teams: Rc<Vec<String>>,
    tick_ms: u64,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() > 8192 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    if head.starts_with("GET /api/v1/info") {
        let body = format!(r#"{{"server":"raw_writer","tick_ms":{tick_ms}}}"#);
        let reply = format!(
            "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        return stream.write_all(reply.as_bytes()).await;
    }
    let key = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    let welcome = format!(
        r#"{{"type":"welcome","session":"raw","teams":{},"server":"raw_writer"}}"#,
        serde_json::to_string(&*teams).unwrap()
    );
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    )
    .into_bytes();
    out.extend_from_slice(&ws_frame(welcome.as_bytes()));
    stream.write_all(&out).await?;
    // The client's `subscribe` (one masked text frame).
    buf.drain(..head_end);
    let op = loop {
        if let Some((payload, used)) = client_frame(&buf) {
            buf.drain(..used);
            break payload;
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let v: serde_json::Value = serde_json::from_slice(&op).unwrap_or_default();
    let Some(k) = teams.iter().position(|t| v["team"] == t.as_str()) else {
        return Ok(());
    };
    let reply = format!(
        r#"{{"type":"subscribed","id":{},"team":{},"streams":["metrics"]}}"#,
        v["id"],
        serde_json::to_string(&teams[k]).unwrap()
    );
    stream.write_all(&ws_frame(reply.as_bytes())).await?;
    let stream = Rc::new(stream);
    rooms.borrow_mut()[k].push(stream.clone());
    // Read and drop whatever else comes, until the client goes.
    let mut sink = [0u8; 512];
    loop {
        stream.readable().await?;
        match stream.try_read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
    rooms.borrow_mut()[k].retain(|s| !Rc::ptr_eq(s, &stream));
    Ok(())
}

/// A complete masked client frame at the start of `buf`: its unmasked
/// payload and the bytes it took.
fn client_frame(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let b1 = *buf.get(1)?;
    let (len, mut at) = match b1 & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let mask: [u8; 4] = if b1 & 0x80 != 0 {
        let m = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        m
    } else {
        [0; 4]
    };
    let data = buf.get(at..at + len)?;
    let payload = data
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    Some((payload, at + len))
}

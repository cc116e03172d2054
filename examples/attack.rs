//! What an attacker's worst cases cost a running server: memory and CPU,
//! read from `/proc/<pid>` while N connections each try one of them.
//! The figures of docs/security.md come from here.
//!
//! ```text
//! cargo run --release --example attack -- ADDR PID CASE N SECONDS
//! ```
//!
//! CASE:
//! * `huge-frame`: upgrade, then a text frame header declaring 2^62
//!   bytes, then stream payload (at most 2 MiB per connection) as fast as
//!   the server takes it;
//! * `pong-flood`: unsolicited empty pongs, as fast as possible;
//! * `continuation-flood`: a text message begun and continued with
//!   endless empty fragments;
//! * `ping-op-flood`: `{"op":"ping"}` text frames.
//!
//! With `OPSWIRE_TOKEN` set, every connection sends it as a bearer header
//! (else none: dev mode, or the unauthenticated worst case). Prints, per
//! case: peak RSS over the start, server CPU (% of one core) while the
//! attack ran, and how the connections ended.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn proc_sample(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // utime and stime: fields 14 and 15, counted after the `)` of comm.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    // After `)`: state is field 3, so utime (14) and stime (15) are 11, 12.
    let ticks = field(11) + field(12);
    (rss_kib, ticks)
}

fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![b0];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
    out
}

/// How one connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum End {
    /// A close frame with this code.
    Closed(u16),
    /// Reset or EOF without a close frame.
    Dropped,
    /// Still open when the attack ended.
    Open,
    /// Refused at the handshake.
    Refused,
}

async fn attack(addr: String, case: String, token: Option<String>, until: Instant) -> End {
    let Ok(mut sock) = TcpStream::connect(&addr).await else {
        return End::Refused;
    };
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n"
    );
    if sock.write_all(req.as_bytes()).await.is_err() {
        return End::Refused;
    }
    // The response head, byte by byte: nothing after it may be taken.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if sock.read_exact(&mut byte).await.is_err() || head.len() > 4096 {
            return End::Refused;
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return End::Refused;
    }
    let (mut rd, mut wr) = sock.into_split();
    // The reader watches for the server's close frame.
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => return close_code(&mut buf).map_or(End::Dropped, End::Closed),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if let Some(code) = close_code(&mut buf) {
                return End::Closed(code);
            }
        }
    });
    let batch: Vec<u8> = match case.as_str() {
        "huge-frame" => {
            let mut h = vec![0x81, 0x80 | 127];
            h.extend_from_slice(&(1u64 << 62).to_be_bytes());
            h.extend_from_slice(&[0, 0, 0, 0]);
            let _ = wr.write_all(&h).await;
            vec![b'x'; 64 * 1024]
        }
        "pong-flood" => frame(0x8a, b"").repeat(4096),
        "continuation-flood" => {
            let _ = wr.write_all(&frame(0x01, b"{")).await;
            frame(0x00, b"").repeat(4096)
        }
        "ping-op-flood" => frame(0x81, br#"{"op":"ping"}"#).repeat(512),
        other => panic!("unknown case {other}"),
    };
    let cap = if case == "huge-frame" {
        2 << 20
    } else {
        usize::MAX
    };
    let mut sent = 0usize;
    let writer = async {
        while Instant::now() < until && sent < cap {
            match tokio::time::timeout_at(until.into(), wr.write_all(&batch)).await {
                Ok(Ok(())) => sent += batch.len(),
                Ok(Err(_)) => return,
                Err(_) => break,
            }
        }
        // Stay connected (silent) until the end.
        tokio::time::sleep_until(until.into()).await;
    };
    let mut reader = reader;
    tokio::select! {
        r = &mut reader => r.unwrap_or(End::Dropped),
        _ = writer => {
            match tokio::time::timeout(Duration::from_millis(100), &mut reader).await {
                Ok(r) => r.unwrap_or(End::Dropped),
                Err(_) => End::Open,
            }
        }
    }
}

/// The code of a close frame in what the server sent, if any; whole
/// frames before it are consumed.
fn close_code(buf: &mut Vec<u8>) -> Option<u16> {
    loop {
        let (b0, b1) = (*buf.first()?, *buf.get(1)?);
        let (len, hdr) = match b1 & 0x7f {
            126 => (
                u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
                4,
            ),
            127 => (
                u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        let payload = buf.get(hdr..hdr + len)?;
        if b0 & 0x0f == 0x8 {
            return Some(
                payload
                    .get(..2)
                    .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]])),
            );
        }
        buf.drain(..hdr + len);
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 5 {
        eprintln!("usage: attack ADDR PID CASE N SECONDS");
        std::process::exit(2);
    }
    let addr = args[0].clone();
    let pid: u32 = args[1].parse().expect("PID");
    let case = args[2].clone();
    let n: usize = args[3].parse().expect("N");
    let secs: u64 = args[4].parse().expect("SECONDS");
    let token = std::env::var("OPSWIRE_TOKEN").ok();
    let tck = 100.0; // USER_HZ on Linux
    let (rss0, cpu0) = proc_sample(pid);
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss0));
    let watch = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                let (rss, _) = proc_sample(pid);
                peak.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let tasks: Vec<_> = (0..n)
        .map(|_| tokio::spawn(attack(addr.clone(), case.clone(), token.clone(), until)))
        .collect();
    let mut ends = std::collections::BTreeMap::new();
    for t in tasks {
        *ends.entry(t.await.unwrap_or(End::Dropped)).or_insert(0) += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (_, cpu1) = proc_sample(pid);
    watch.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_after, _) = proc_sample(pid);
    let cpu_pct = (cpu1 - cpu0) as f64 / tck / elapsed * 100.0;
    println!(
        "case={case} connections={n} seconds={elapsed:.1} rss_start_kib={rss0} rss_peak_kib={peak} \
         rss_growth_kib={} rss_after_kib={rss_after} server_cpu_pct={cpu_pct:.1} ends={ends:?}",
        peak.saturating_sub(rss0)
    );
}

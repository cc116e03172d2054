//! What permessage-deflate costs and saves per frame: a team metrics frame
//! of N hosts (the shape the hub sends, figures that vary like real ones)
//! compressed at several DEFLATE levels, and small frames of growing size
//! (what `MIN_COMPRESSED_BYTES` is chosen from). The frame is compressed
//! once per tick whatever the number of subscribers, so the time per
//! compression is the whole CPU cost of deflate on the way out.
//!
//! `cargo run --release --example deflate_cost -- [hosts] [iterations]`

use std::io::Write;
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, FlushCompress};
use opswire::protocol::Frame;
use opswire::transport::ws::deflate;
use serde_json::json;

/// A team metrics frame of `n` hosts, as `docs/protocol.md` shows it.
fn team_frame(n: usize) -> String {
    let now = 1_765_000_000_000_000i64;
    let hosts: Vec<_> = (0..n)
        .map(|i| {
            let f = |k: usize| ((i * 7919 + k * 104_729) % 10_000) as f64 / 100.0;
            json!({
                "host": format!("web-{i:03}"), "source": "agent",
                "sampled_at": now - (i as i64 * 3_571) % 900_000,
                "cpu": {"usage_pct": f(1), "cores_pct": [f(2), f(3), f(4), f(5)],
                        "load": [f(6) / 10.0, f(7) / 10.0, f(8) / 10.0]},
                "memory": {"used_bytes": 8_000_000_000u64 + (i as u64 * 48_271_113) % 7_000_000_000,
                           "total_bytes": 16_777_216_000u64, "usage_pct": f(9),
                           "swap_used_bytes": 0, "swap_total_bytes": 2_147_483_648u64},
                "disks": [{"mount": "/", "fs_type": "ext4",
                           "used_bytes": 40_000_000_000u64 + (i as u64 * 91_138_233) % 60_000_000_000,
                           "total_bytes": 107_374_182_400u64, "usage_pct": f(10)}],
                "network": [{"iface": "eth0", "rx_bytes_per_s": f(11) * 1234.5,
                             "tx_bytes_per_s": f(12) * 987.6}],
                "processes": 150 + i * 13 % 200, "uptime_s": 86_400 + i * 3_607,
            })
        })
        .collect();
    json!({"type":"metrics","team":"payments","epoch":"s9afomc2","seq":1201,
           "ts":now,"data":{"hosts":hosts,"connections":{"team":5,"total":120}}})
    .to_string()
}

/// Raw deflate with a fresh compressor, sync-flushed (as a per-message
/// compressor without a thread-local one would).
fn fresh(text: &[u8], level: u32) -> usize {
    let mut c = Compress::new(Compression::new(level), false);
    let mut out = Vec::with_capacity(text.len() + 64);
    let _ = c.compress_vec(text, &mut out, FlushCompress::Sync);
    out.len() - 4
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(iterations: usize, mut f: impl FnMut()) -> Duration {
    median(
        (0..iterations)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let hosts: usize = args.first().map_or(50, |a| a.parse().expect("hosts"));
    let iterations: usize = args.get(1).map_or(200, |a| a.parse().expect("iterations"));
    let mut out = std::io::stdout().lock();

    let text = team_frame(hosts);
    writeln!(out, "team frame of {hosts} hosts: {} bytes", text.len()).unwrap();
    writeln!(out, "level  bytes  ratio  median µs (fresh compressor)").unwrap();
    for level in [1, 3, 6, 9] {
        let size = fresh(text.as_bytes(), level);
        let t = time(iterations, || {
            std::hint::black_box(fresh(text.as_bytes(), level));
        });
        writeln!(
            out,
            "{level:>5}  {size:>5}  {:>5.1}  {:>9.1}",
            text.len() as f64 / size as f64,
            t.as_secs_f64() * 1e6
        )
        .unwrap();
    }
    // What the server does: the thread's compressor, reset per message,
    // and the framed result cached on the frame.
    let t = time(iterations, || {
        let frame = Frame::from(text.clone());
        std::hint::black_box(deflate::deflated(&frame));
    });
    let frame = Frame::from(text.clone());
    let framed = deflate::deflated(&frame).map_or(0, |b| b.len());
    writeln!(
        out,
        "server path (level {}, thread's compressor): {framed} bytes framed, median {:.1} µs per frame",
        deflate::LEVEL,
        t.as_secs_f64() * 1e6
    )
    .unwrap();

    // Small frames: a log frame's shape, padded to each size.
    writeln!(out, "\nsmall frames at level {}:", deflate::LEVEL).unwrap();
    writeln!(out, "bytes  compressed  saved  median µs").unwrap();
    for size in [128usize, 256, 384, 512, 768, 1024, 2048] {
        let mut log = json!({"type":"log","team":"payments","epoch":"s9afomc2","seq":88123,
            "ts":1_765_000_000_123_456i64,"data":{"level":"warning","source":"checkout-api",
            "host":"pay-1","message":""}})
        .to_string();
        let pad = size.saturating_sub(log.len());
        // Words and ids that vary, like a real log line's (not one phrase
        // repeated, which would compress far better than real text).
        let words = [
            "upstream",
            "timeout",
            "POST",
            "/api/v2/charge",
            "retry",
            "user",
            "order",
        ];
        let mut message = String::new();
        for i in 0u64.. {
            if message.len() >= pad {
                break;
            }
            let id = i.wrapping_mul(2_654_435_761) % 1_000_003;
            message.push_str(&format!("{}={id:x} ", words[i as usize % words.len()]));
        }
        message.truncate(pad);
        log = log.replace("\"message\":\"\"", &format!("\"message\":\"{message}\""));
        let z = deflate::compress(log.as_bytes());
        let t = time(iterations, || {
            std::hint::black_box(deflate::compress(log.as_bytes()));
        });
        writeln!(
            out,
            "{:>5}  {:>10}  {:>5}  {:>9.1}",
            log.len(),
            z.len(),
            log.len() as i64 - z.len() as i64,
            t.as_secs_f64() * 1e6
        )
        .unwrap();
    }
}

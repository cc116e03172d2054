//! permessage-deflate (RFC 7692) on the real server: a raw client that
//! speaks the extension (tokio-tungstenite 0.30 has none), frames read
//! off the socket with their RSV1 bit, inflated here with flate2.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;
use crate::raw::frame;

pub(crate) const OFFER: &str =
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// One server frame as it came off the wire.
#[derive(Debug)]
pub(crate) struct Raw {
    pub rsv1: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Raw {
    /// A text frame's JSON text: inflated when RSV1 is set.
    pub fn text(&self) -> String {
        assert_eq!(self.opcode, 1, "not a text frame: {self:?}");
        if self.rsv1 {
            String::from_utf8(inflate(&self.payload)).unwrap()
        } else {
            String::from_utf8(self.payload.clone()).unwrap()
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text()).unwrap()
    }

    fn close(&self) -> (u16, String) {
        assert_eq!(self.opcode, 8, "not a close frame: {self:?}");
        let code = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        (
            code,
            String::from_utf8_lossy(&self.payload[2..]).into_owned(),
        )
    }
}

fn inflate(z: &[u8]) -> Vec<u8> {
    let mut full = z.to_vec();
    full.extend_from_slice(&TAIL);
    let mut out = Vec::new();
    // The sync-flushed stream has no final block: read until the data ends.
    let _ = flate2::read::DeflateDecoder::new(&full[..]).read_to_end(&mut out);
    out
}

/// Raw DEFLATE of `text` as a client sends it (no context, tail removed).
fn deflate(text: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(text).unwrap();
    e.flush().unwrap();
    let mut z = std::mem::take(e.get_mut());
    assert!(z.ends_with(&TAIL));
    z.truncate(z.len() - 4);
    z
}

pub(crate) struct Client {
    sock: TcpStream,
    buf: Vec<u8>,
    /// The `101`'s `Sec-WebSocket-Extensions`, if any.
    pub extensions: Option<String>,
}

impl Client {
    pub async fn connect(app: &TestApp, extra: &str) -> Client {
        let mut sock = TcpStream::connect(app.addr).await.unwrap();
        let addr = app.addr;
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Authorization: Bearer {}\r\n{extra}\r\n",
            token(&["alpha"])
        );
        sock.write_all(req.as_bytes()).await.unwrap();
        let mut c = Client {
            sock,
            buf: Vec::new(),
            extensions: None,
        };
        let end = loop {
            if let Some(i) = c.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(c.fill().await, "closed during the handshake");
        };
        let head = String::from_utf8_lossy(&c.buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        c.extensions = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| v.trim().to_owned())
        });
        c.buf.drain(..end);
        let welcome = c.next().await.expect("welcome");
        assert!(!welcome.rsv1, "a small frame goes plain");
        assert_eq!(welcome.json()["type"], "welcome");
        c
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        match tokio::time::timeout(WAIT, self.sock.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!("nothing from the server within {WAIT:?}"),
        }
    }

    /// The next frame (pings skipped); None once the connection ended.
    async fn next(&mut self) -> Option<Raw> {
        loop {
            if let Some((f, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                if f.opcode == 9 {
                    continue;
                }
                return Some(f);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).await.unwrap();
    }

    pub async fn subscribe(&mut self, team: &str) {
        let op = json!({"op":"subscribe","id":1,"team":team,"streams":["metrics"]});
        self.send(&frame(0x81, op.to_string().as_bytes())).await;
        self.until_type("subscribed").await;
    }

    /// Frames up to one of `kind`, that one returned.
    pub async fn until_type(&mut self, kind: &str) -> Raw {
        loop {
            let f = self.next().await.expect("connection open");
            if f.opcode == 1 && f.json()["type"] == kind {
                return f;
            }
        }
    }

    /// The close frame, past whatever text comes first.
    async fn until_close(&mut self) -> (u16, String) {
        loop {
            let f = self.next().await.expect("a close frame");
            if f.opcode == 8 {
                return f.close();
            }
        }
    }
}

fn parse(buf: &[u8]) -> Option<(Raw, usize)> {
    let [b0, b1, ..] = *buf else { return None };
    let (len, at) = match b1 & 0x7f {
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
    assert_eq!(b0 & 0x80, 0x80, "the server sends whole frames");
    assert_eq!(b0 & 0x30, 0, "RSV2 and RSV3 are never set");
    let payload = buf.get(at..at + len)?.to_vec();
    let f = Raw {
        rsv1: b0 & 0x40 != 0,
        opcode: b0 & 0x0f,
        payload,
    };
    Some((f, at + len))
}

/// Publishes `n` hosts to `alpha` through the hub, with figures that
/// vary like real ones (compression ratios depend on it).
pub(crate) fn publish_hosts(app: &TestApp, n: usize) {
    let team = app.state.hub.team_id("alpha").unwrap();
    let now = opswire::time::now_micros();
    for i in 0..n {
        let f = |k: usize| ((i * 7919 + k * 104_729) % 10_000) as f64 / 100.0;
        let snap = json!({
            "host": format!("alpha-web-{i:03}"), "source": "agent",
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
        });
        let snap = serde_json::from_value(snap).unwrap();
        app.state.hub.update_host(team, &snap).unwrap();
    }
}

/// Metrics frames by `seq`, until one with at least `hosts` hosts.
pub(crate) async fn metrics_with(c: &mut Client, hosts: usize) -> Raw {
    loop {
        let f = c.until_type("metrics").await;
        if f.json()["data"]["hosts"].as_array().unwrap().len() >= hosts {
            return f;
        }
    }
}

#[tokio::test]
async fn a_frame_is_compressed_once_and_the_same_bytes_go_to_every_deflate_subscriber() {
    // Published once: they must not go stale while the frames are read.
    let app = spawn_app_with(|c| c.sampler.stale_after_ticks = 500);
    let mut a = Client::connect(&app, OFFER).await;
    let mut b = Client::connect(
        &app,
        // A browser's offer, with a fallback: the first acceptable one wins.
        "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10, \
         permessage-deflate; client_max_window_bits=15\r\n",
    )
    .await;
    let mut plain = Client::connect(&app, "").await;
    assert_eq!(a.extensions.as_deref(), Some(ANSWER));
    assert_eq!(b.extensions.as_deref(), Some(ANSWER));
    assert_eq!(plain.extensions, None, "no offer, no extension");
    for c in [&mut a, &mut b, &mut plain] {
        c.subscribe("alpha").await;
    }
    publish_hosts(&app, 50);
    // Collect each subscriber's 50-host frames by seq until a seq that
    // all three have (metrics are latest-value: one may skip one).
    let mut got: [BTreeMap<u64, Raw>; 3] = Default::default();
    let seq = loop {
        for (i, c) in [&mut a, &mut b, &mut plain].into_iter().enumerate() {
            let f = metrics_with(c, 51).await;
            got[i].insert(f.json()["seq"].as_u64().unwrap(), f);
        }
        if let Some(s) = got[0]
            .keys()
            .find(|s| got[1].contains_key(s) && got[2].contains_key(s))
        {
            break *s;
        }
    };
    let (fa, fb, fp) = (&got[0][&seq], &got[1][&seq], &got[2][&seq]);
    assert!(fa.rsv1 && fb.rsv1, "compressed for clients that negotiated");
    assert!(!fp.rsv1, "plain for the client that did not offer");
    assert_eq!(fa.payload, fb.payload, "byte-identical compressed payloads");
    assert_eq!(fa.text(), fp.text(), "inflates to exactly the plain frame");
    assert!(fa.payload.len() * 4 < fp.payload.len());
    // A subscriber that comes later gets the latest frame from its own
    // writer (the subscribe's replay, not the fan-out): compressed too.
    let mut late = Client::connect(&app, OFFER).await;
    late.subscribe("alpha").await;
    let first = late.until_type("metrics").await;
    assert!(first.rsv1, "the writer's path compresses as well");
    assert!(first.json()["data"]["hosts"].as_array().unwrap().len() >= 51);
    println!(
        "51-host team frame: {} bytes plain, {} bytes compressed ({:.1}x); \
         at 1 frame/s that is the bytes per subscriber per second",
        fp.payload.len(),
        fa.payload.len(),
        fp.payload.len() as f64 / fa.payload.len() as f64
    );
    app.stop();
}

#[tokio::test]
async fn compressed_ops_from_the_client_work_whole_and_fragmented() {
    let app = spawn_app();
    let mut c = Client::connect(&app, OFFER).await;
    // A whole compressed op.
    let op = json!({"op":"subscribe","id":7,"team":"alpha","streams":["metrics"]}).to_string();
    c.send(&frame(0xc1, &deflate(op.as_bytes()))).await;
    let reply = c.until_type("subscribed").await.json();
    assert_eq!(reply["id"], 7, "{reply}");
    // A compressed op in three fragments: RSV1 on the first only.
    let op = json!({"op":"unsubscribe","id":8,"team":"alpha","streams":["metrics"]}).to_string();
    let z = deflate(op.as_bytes());
    let (p1, rest) = z.split_at(z.len() / 3);
    let (p2, p3) = rest.split_at(rest.len() / 2);
    let mut bytes = frame(0x41, p1);
    bytes.extend(frame(0x00, p2));
    bytes.extend(frame(0x80, p3));
    c.send(&bytes).await;
    let reply = c.until_type("unsubscribed").await.json();
    assert_eq!(reply["id"], 8, "{reply}");
    // A plain op still works on the same connection.
    c.send(&frame(0x81, br#"{"op":"ping","id":9}"#)).await;
    assert_eq!(c.until_type("pong").await.json()["id"], 9);
    app.stop();
}

#[tokio::test]
async fn a_compressed_bomb_is_refused_while_inflating_and_the_server_keeps_serving() {
    let app = spawn_app();
    let max = app.state.config.limits.max_frame_bytes;
    let mut other = Client::connect(&app, OFFER).await;
    other.subscribe("alpha").await;
    let mut c = Client::connect(&app, OFFER).await;
    // 32 MiB of spaces: some 32 KiB compressed, under the frame limit.
    let bomb = deflate(&vec![b' '; 32 << 20]);
    assert!(bomb.len() < max, "{} compressed bytes", bomb.len());
    c.send(&frame(0xc1, &bomb)).await;
    let (code, reason) = c.until_close().await;
    assert_eq!(code, 1009, "{reason}");
    assert!(
        reason.contains(&format!("inflates past {max} bytes")),
        "{reason}"
    );
    // The other connection is served as before.
    other.send(&frame(0x81, br#"{"op":"ping","id":3}"#)).await;
    assert_eq!(other.until_type("pong").await.json()["id"], 3);
    other.until_type("metrics").await;
    // Exactly at the limit is not a bomb (within the op's own rules: a
    // JSON object padded with spaces).
    let mut op = br#"{"op":"ping","id":4}"#.to_vec();
    op.resize(max, b' ');
    other.send(&frame(0xc1, &deflate(&op))).await;
    assert_eq!(other.until_type("pong").await.json()["id"], 4);
    app.stop();
}

#[tokio::test]
async fn rsv1_is_a_protocol_error_without_negotiation_and_on_control_frames() {
    let app = spawn_app_with(|c| c.websocket.permessage_deflate = false);
    // The setting off: the offer is declined, frames are plain.
    let mut c = Client::connect(&app, OFFER).await;
    assert_eq!(c.extensions, None);
    c.send(&frame(0xc1, &deflate(br#"{"op":"ping"}"#))).await;
    let (code, reason) = c.until_close().await;
    assert_eq!(code, 1002, "{reason}");
    assert!(reason.contains("reserved bits"), "{reason}");
    app.stop();

    let app = spawn_app();
    let mut c = Client::connect(&app, OFFER).await;
    c.send(&frame(0xc9, b"")).await; // a ping with RSV1
    let (code, reason) = c.until_close().await;
    assert_eq!(code, 1002, "{reason}");
    assert!(
        reason.contains("control frames are never compressed"),
        "{reason}"
    );
    let mut c = Client::connect(&app, OFFER).await;
    c.send(&frame(0xc1, b"\xff\xff\xff\xff")).await;
    let (code, reason) = c.until_close().await;
    assert_eq!(code, 1002, "{reason}");
    assert!(reason.contains("not valid DEFLATE"), "{reason}");
    app.stop();
}

/// The issue's figures: what a subscriber of a 200-host team receives per
/// frame (one frame per second at the default tick) in each view, plain
/// and with deflate. Prints them; holds the summary view to its targets
/// (≤ 25 KB per subscriber per second, ≤ 8 KB with deflate).
#[tokio::test]
async fn a_200_host_team_per_view_with_and_without_deflate() {
    let app = spawn_app_with(|c| c.sampler.stale_after_ticks = 500);
    let mut clients = Vec::new();
    for (view, offer) in [
        (json!("full"), ""),
        (json!("full"), OFFER),
        (json!("summary"), ""),
        (json!("summary"), OFFER),
    ] {
        let mut c = Client::connect(&app, offer).await;
        let op = json!({"op":"subscribe","id":1,"team":"alpha","streams":["metrics"],"view":view});
        c.send(&frame(0x81, op.to_string().as_bytes())).await;
        c.until_type("subscribed").await;
        clients.push((view, !offer.is_empty(), c));
    }
    publish_hosts(&app, 199);
    let mut sizes = BTreeMap::new();
    for (view, deflate, c) in &mut clients {
        let f = metrics_with(c, 200).await;
        assert_eq!(f.rsv1, *deflate);
        sizes.insert(
            (view.as_str().unwrap().to_owned(), *deflate),
            f.payload.len(),
        );
        println!(
            "200-host team, view {view}, deflate {deflate}: {} bytes per frame",
            f.payload.len()
        );
    }
    // The targets: a 200-host summary ≤ 25 KB, ≤ 8 KB with deflate (the
    // host names here are 13 characters long).
    assert!(sizes[&("summary".to_owned(), false)] <= 25_000, "{sizes:?}");
    assert!(sizes[&("summary".to_owned(), true)] <= 8_000, "{sizes:?}");
    assert!(sizes[&("full".to_owned(), true)] * 3 < sizes[&("full".to_owned(), false)]);
    app.stop();
}

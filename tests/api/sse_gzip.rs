//! `GET /sse` with `Content-Encoding: gzip` (docs/protocol.md, "SSE:
//! gzip"), read over real sockets by reqwest with no decompression of its
//! own (its `gzip` feature is off): the raw body is inflated here, chunk
//! by chunk as it arrives, by flate2's gzip decoder, and checked byte for
//! byte against what a plain stream carries and what a WebSocket with
//! permessage-deflate gets.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde_json::json;

use crate::deflate::{metrics_with, publish_hosts, Client, OFFER};
use crate::helpers::*;
use crate::sse::{bearer, parse_block, SseEvent};

const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// After a shared compressed frame: the sync flush's tail put back, then
/// the closing blank line as a stored block.
const AFTER_FRAME: [u8; 11] = [0, 0, 0xff, 0xff, 0, 2, 0, 0xfd, 0xff, b'\n', b'\n'];

/// `GET /sse?{query}` as alpha, with `Accept-Encoding` when given (reqwest
/// sends none of its own).
async fn request(app: &TestApp, query: &str, accept: Option<&str>) -> reqwest::Response {
    let (name, value) = bearer(&token(&["alpha"]));
    let mut req = reqwest::Client::new()
        .get(app.url(&format!("/sse?{query}")))
        .header(name, value);
    if let Some(a) = accept {
        req = req.header("Accept-Encoding", a);
    }
    let resp = tokio::time::timeout(WAIT, req.send())
        .await
        .expect("response head within the wait")
        .expect("SSE request");
    assert_eq!(resp.status(), 200, "GET /sse?{query}");
    resp
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// One event block as it was on the wire (decoded when gzip'ed), with
/// the event it parses to.
#[derive(Debug, Clone)]
struct Block {
    text: String,
    event: SseEvent,
}

/// An event stream, gzip'ed or plain. A gzip'ed body goes through a
/// streaming gzip decoder chunk by chunk: an event is seen only once the
/// bytes received so far inflate to it.
struct Stream {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    /// Every body byte received, as received.
    raw: Vec<u8>,
    gz: Option<flate2::write::GzDecoder<Vec<u8>>>,
    /// Everything the body decoded to so far.
    text: Vec<u8>,
    /// Where the next event block starts in `text`.
    at: usize,
    ended: bool,
}

impl Stream {
    fn new(resp: reqwest::Response, gzip: bool) -> Stream {
        Stream {
            body: resp.bytes_stream().boxed(),
            raw: Vec::new(),
            gz: gzip.then(|| flate2::write::GzDecoder::new(Vec::new())),
            text: Vec::new(),
            at: 0,
            ended: false,
        }
    }

    /// Opens a stream that must be gzip'ed (`gzip`) or plain, as alpha.
    async fn open(app: &TestApp, query: &str, accept: Option<&str>, gzip: bool) -> Stream {
        let resp = request(app, query, accept).await;
        let ctype = header(&resp, "content-type").unwrap();
        assert!(ctype.starts_with("text/event-stream"), "{ctype}");
        let coding = header(&resp, "content-encoding");
        assert_eq!(coding.as_deref(), gzip.then_some("gzip"), "{accept:?}");
        let vary = header(&resp, "vary").unwrap_or_default();
        assert!(vary.eq_ignore_ascii_case("accept-encoding"), "vary: {vary}");
        Stream::new(resp, gzip)
    }

    fn feed(&mut self, chunk: &[u8]) {
        self.raw.extend_from_slice(chunk);
        match &mut self.gz {
            Some(gz) => {
                gz.write_all(chunk).unwrap();
                // Whatever the bytes so far inflate to, now.
                gz.flush().unwrap();
                self.text.append(gz.get_mut());
            }
            None => self.text.extend_from_slice(chunk),
        }
    }

    /// The next block decoded so far, if a whole one is.
    fn decoded_block(&mut self) -> Option<Block> {
        loop {
            let rest = &self.text[self.at..];
            let end = rest.windows(2).position(|w| w == b"\n\n")?;
            let text = std::str::from_utf8(&rest[..end + 2])
                .expect("UTF-8 events")
                .to_owned();
            self.at += end + 2;
            if let Some(event) = parse_block(&text) {
                return Some(Block { text, event });
            }
        }
    }

    /// The next event block, or None if none comes within `wait` or the
    /// stream ends.
    async fn try_next(&mut self, wait: Duration) -> Option<Block> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(b) = self.decoded_block() {
                return Some(b);
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.feed(&chunk),
                Ok(Some(Err(e))) => panic!("event stream failed: {e}"),
                Ok(None) => self.ended = true,
                Err(_) => return None,
            }
        }
    }

    async fn next(&mut self) -> Block {
        self.try_next(WAIT).await.expect("an event within the wait")
    }

    async fn next_of(&mut self, kind: &str) -> Block {
        loop {
            let b = self.next().await;
            if b.event.kind() == kind {
                return b;
            }
        }
    }

    /// The preamble: `retry`, `welcome`, `subscribed`.
    async fn preamble(&mut self) -> [Block; 3] {
        let retry = self.next().await;
        assert_eq!(retry.text, "retry: 3000\n\n");
        let welcome = self.next_of("welcome").await;
        let subscribed = self.next().await;
        assert_eq!(subscribed.event.kind(), "subscribed", "{subscribed:?}");
        [retry, welcome, subscribed]
    }

    /// Metrics blocks by seq until one of `hosts` hosts or more.
    async fn metrics_with(&mut self, hosts: usize) -> (u64, Block) {
        loop {
            let b = self.next_of("metrics").await;
            let f = b.event.json();
            if f["data"]["hosts"].as_array().unwrap().len() >= hosts {
                return (f["seq"].as_u64().unwrap(), b);
            }
        }
    }

    /// Reads until the server ends the body (within the wait); the
    /// blocks seen on the way.
    async fn until_end(&mut self) -> Vec<Block> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut blocks = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_next(left).await {
                Some(b) => blocks.push(b),
                None if self.ended => return blocks,
                None => panic!("the stream did not end within the wait"),
            }
        }
    }
}

/// The body of a finished stream is one valid gzip member: flate2's
/// reader takes it whole (checking CRC-32 and ISIZE), it ends with an
/// empty final block and a trailer of the CRC and length of what the
/// stream decoded to as it went, and the streaming decoder agrees.
fn assert_one_valid_member(s: Stream) -> Vec<u8> {
    let raw = &s.raw;
    assert_eq!(&raw[..10], &GZIP_HEADER);
    let mut whole = Vec::new();
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_end(&mut whole)
        .expect("one valid gzip member, CRC and ISIZE checked");
    assert_eq!(whole, s.text, "the member is what was read event by event");
    let n = raw.len();
    assert_eq!(&raw[n - 10..n - 8], &[0x03, 0x00], "an empty final block");
    let crc = u32::from_le_bytes(raw[n - 8..n - 4].try_into().unwrap());
    let isize = u32::from_le_bytes(raw[n - 4..].try_into().unwrap());
    assert_eq!(crc, crc32fast::hash(&whole));
    assert_eq!(isize as usize, whole.len());
    s.gz.expect("a gzip'ed stream")
        .finish()
        .expect("the streaming decoder checks the trailer too");
    whole
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn a_gzip_stream_inflates_event_by_event_to_what_a_plain_stream_carries() {
    // Published once: the hosts must not go stale while frames are read.
    let app = spawn_app_with(|c| c.sampler.stale_after_ticks = 500);
    let query = "team=alpha&streams=metrics,logs";
    let mut gz = Stream::open(&app, query, Some("gzip"), true).await;
    let mut plain = Stream::open(&app, query, None, false).await;
    let [retry, welcome, subscribed] = gz.preamble().await;
    let [p_retry, p_welcome, p_subscribed] = plain.preamble().await;
    assert_eq!(&gz.raw[..10], &GZIP_HEADER, "the body starts as gzip");
    assert!(plain.raw.starts_with(b"retry: 3000\n\n"));
    assert_eq!(retry.text, p_retry.text);
    assert_eq!(subscribed.text, p_subscribed.text);
    // The same welcome but for the session's name.
    let (mut w, mut pw) = (welcome.event.json(), p_welcome.event.json());
    w["session"] = json!(null);
    pw["session"] = json!(null);
    assert_eq!(w, pw);

    // A metrics frame well past 512 bytes (compressed) and log frames
    // (stored): the same event text, `id:` lines included.
    publish_hosts(&app, 50);
    let mut gz_metrics = BTreeMap::new();
    let mut plain_metrics = BTreeMap::new();
    let seq = loop {
        let (s, b) = gz.metrics_with(51).await;
        gz_metrics.insert(s, b);
        let (s, b) = plain.metrics_with(51).await;
        plain_metrics.insert(s, b);
        if let Some(s) = gz_metrics.keys().find(|s| plain_metrics.contains_key(s)) {
            break *s;
        }
    };
    let (g, p) = (&gz_metrics[&seq], &plain_metrics[&seq]);
    assert!(g.text.len() > 20_000, "{} bytes", g.text.len());
    assert_eq!(g.text, p.text, "metrics seq {seq}");
    for i in 1..=3 {
        let seq = app.publish_log("alpha", &format!("gzip line {i}"));
        let g = gz.next_of("log").await;
        let p = plain.next_of("log").await;
        assert_eq!(g.event.json()["seq"], seq);
        assert_eq!(g.text, p.text, "log seq {seq}");
        assert!(g.event.id.is_some(), "{g:?}");
    }
    assert!(!gz.ended && !plain.ended, "read while the streams are open");
    app.stop();
}

/// Logs only (no metrics ticks in between): each published log is
/// decodable from the bytes received so far, before the next is
/// published, and nothing decoded waits past its end.
#[tokio::test]
async fn every_event_is_decodable_as_soon_as_it_arrives() {
    let app = spawn_app();
    let mut gz = Stream::open(&app, "team=alpha&streams=logs", Some("gzip"), true).await;
    gz.preamble().await;
    for i in 1..=5u64 {
        let seq = app.publish_log(
            "alpha",
            &format!("one at a time {i} {}", "x".repeat(i as usize * 200)),
        );
        let b = gz.next_of("log").await;
        assert_eq!(b.event.json()["seq"], seq, "{b:?}");
        assert_eq!(
            gz.at,
            gz.text.len(),
            "decoded up to the event's end, no further"
        );
        assert!(!gz.ended);
    }
    app.stop();
}

#[tokio::test]
async fn a_large_frame_goes_as_the_websockets_compressed_bytes() {
    let app = spawn_app_with(|c| c.sampler.stale_after_ticks = 500);
    let mut ws = Client::connect(&app, OFFER).await;
    ws.subscribe("alpha").await;
    let query = "team=alpha&streams=metrics";
    let mut gz = Stream::open(&app, query, Some("gzip, deflate, br"), true).await;
    let mut plain = Stream::open(&app, query, None, false).await;
    gz.preamble().await;
    plain.preamble().await;
    publish_hosts(&app, 50);
    let (mut gz_seqs, mut plain_seqs, mut ws_frames) =
        (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    let seq = loop {
        let (s, b) = gz.metrics_with(51).await;
        gz_seqs.insert(s, b);
        let (s, b) = plain.metrics_with(51).await;
        plain_seqs.insert(s, b);
        let f = metrics_with(&mut ws, 51).await;
        ws_frames.insert(f.json()["seq"].as_u64().unwrap(), f);
        if let Some(s) = gz_seqs
            .keys()
            .find(|s| plain_seqs.contains_key(s) && ws_frames.contains_key(s))
        {
            break *s;
        }
    };
    let z = &ws_frames[&seq];
    assert!(z.rsv1, "the WebSocket frame is compressed");
    let plain_event = &plain_seqs[&seq].text;
    assert_eq!(gz_seqs[&seq].text, *plain_event);
    // In the gzip body: the event's own lines as a stored block, then
    // the WebSocket's compressed payload, byte for byte, then the tail
    // and the closing blank line.
    let at = find(&gz.raw, &z.payload).expect("the WebSocket's compressed bytes in the gzip body");
    let prefix = "event: metrics\ndata: ";
    assert!(plain_event.starts_with(prefix), "{plain_event:.40}");
    let len = prefix.len() as u16;
    let mut stored = vec![0u8];
    stored.extend(len.to_le_bytes());
    stored.extend((!len).to_le_bytes());
    stored.extend(prefix.as_bytes());
    assert_eq!(&gz.raw[at - stored.len()..at], &stored[..]);
    let end = at + z.payload.len();
    assert_eq!(&gz.raw[end..end + AFTER_FRAME.len()], &AFTER_FRAME);
    let gz_event = stored.len() + z.payload.len() + AFTER_FRAME.len();
    println!(
        "51-host metrics event over SSE: {} bytes plain, {gz_event} bytes gzip'ed ({:.1}x); \
         WebSocket payload {} bytes compressed",
        plain_event.len(),
        plain_event.len() as f64 / gz_event as f64,
        z.payload.len(),
    );
    assert!(
        gz_event * 4 < plain_event.len(),
        "{gz_event} vs {}",
        plain_event.len()
    );
    // And over the whole streams so far (about the same events).
    println!(
        "whole streams so far: {} bytes plain, {} bytes gzip'ed",
        plain.raw.len(),
        gz.raw.len()
    );
    app.stop();
}

#[tokio::test]
async fn the_server_ending_a_stream_finishes_one_valid_gzip_member() {
    // Shutdown.
    let app = spawn_app();
    let mut gz = Stream::open(&app, "team=alpha&streams=metrics,logs", Some("gzip"), true).await;
    gz.preamble().await;
    gz.next_of("metrics").await;
    app.publish_log("alpha", "before the end");
    gz.next_of("log").await;
    app.shutdown_token().cancel();
    gz.until_end().await;
    let text = assert_one_valid_member(gz);
    assert!(text.starts_with(b"retry: 3000\n\n"));
    app.stop();

    // `lagged`: a replay that overflows the queue ends the stream.
    let app = spawn_app_with(|c| c.limits.queue_len = 4);
    let e = app.epoch();
    for i in 1..=10 {
        app.publish_log("alpha", &format!("m{i}"));
    }
    let query = format!("team=alpha&streams=logs&last_event_id=logs:{e}:0");
    let mut gz = Stream::open(&app, &query, Some("gzip"), true).await;
    gz.preamble().await;
    let blocks = gz.until_end().await;
    let last = blocks.last().expect("events before the end");
    assert_eq!(last.event.kind(), "lagged", "{last:?}");
    assert_one_valid_member(gz);

    // The token's expiry: an `error` event, then the end.
    let t = token_with(&["alpha"], "read", 1);
    let resp = {
        let req = reqwest::Client::new()
            .get(app.url(&format!("/sse?team=alpha&streams=logs&access_token={t}")))
            .header("Accept-Encoding", "gzip");
        req.send().await.unwrap()
    };
    assert_eq!(header(&resp, "content-encoding").as_deref(), Some("gzip"));
    let mut gz = Stream::new(resp, true);
    // Within the wait: the token lasts a second.
    let blocks = gz.until_end().await;
    let last = blocks.last().unwrap();
    assert_eq!(last.event.kind(), "error", "{last:?}");
    assert_eq!(last.event.json()["code"], "unauthenticated");
    assert_one_valid_member(gz);
    app.stop();
}

#[tokio::test]
async fn plain_unless_the_request_accepts_gzip_and_sse_gzip_is_on() {
    let app = spawn_app();
    let query = "team=alpha&streams=logs";
    let plain = [
        None,
        Some("gzip;q=0"),
        Some("identity"),
        Some("br"),
        Some("deflate, br;q=0.9"),
        Some("*;q=0"),
        Some("gzip;q=0.5, identity"),
    ];
    for accept in plain {
        let mut s = Stream::open(&app, query, accept, false).await;
        s.preamble().await;
        assert!(s.raw.starts_with(b"retry: 3000\n\n"), "{accept:?}");
    }
    let gzip = [
        "gzip",
        "gzip, deflate, br, zstd",
        "x-gzip",
        "*",
        "br, gzip;q=0.5",
        "identity;q=0.5, gzip",
    ];
    for accept in gzip {
        let mut s = Stream::open(&app, query, Some(accept), true).await;
        s.preamble().await;
        assert_eq!(&s.raw[..10], &GZIP_HEADER, "{accept}");
    }
    app.stop();

    // Off: plain whatever the request accepts, and no Vary.
    let app = spawn_app_with(|c| c.sse.gzip = false);
    let resp = request(&app, query, Some("gzip")).await;
    assert_eq!(header(&resp, "content-encoding"), None);
    assert_eq!(header(&resp, "vary"), None);
    let mut s = Stream::new(resp, false);
    s.preamble().await;
    assert!(s.raw.starts_with(b"retry: 3000\n\n"));
    app.stop();
}

/// `opswire_compressed_connections{transport}` from `/metrics`.
async fn compressed(app: &TestApp, transport: &str) -> Option<i64> {
    let series = format!("opswire_compressed_connections{{transport=\"{transport}\"}} ");
    app.metrics_text()
        .await
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str())?.parse().ok())
}

async fn wait_compressed(app: &TestApp, transport: &str, want: i64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = compressed(app, transport).await;
        if got == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{transport}: {got:?}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn compressed_connections_are_counted_per_transport() {
    let app = spawn_app();
    // Both series are there from the start.
    assert_eq!(compressed(&app, "sse").await, Some(0));
    assert_eq!(compressed(&app, "ws").await, Some(0));
    let query = "team=alpha&streams=metrics";
    let mut gz = Stream::open(&app, query, Some("gzip"), true).await;
    gz.preamble().await;
    let mut gz2 = Stream::open(&app, query, Some("gzip"), true).await;
    gz2.preamble().await;
    let mut plain = Stream::open(&app, query, None, false).await;
    plain.preamble().await;
    assert_eq!(compressed(&app, "sse").await, Some(2));
    let deflate_ws = Client::connect(&app, OFFER).await;
    assert!(deflate_ws.extensions.is_some());
    let plain_ws = Client::connect(&app, "").await;
    assert!(plain_ws.extensions.is_none());
    assert_eq!(compressed(&app, "ws").await, Some(1));
    assert_eq!(compressed(&app, "sse").await, Some(2));
    // Down when they go (the server sees it at its next write).
    drop(gz);
    wait_compressed(&app, "sse", 1).await;
    drop(deflate_ws);
    wait_compressed(&app, "ws", 0).await;
    drop(gz2);
    wait_compressed(&app, "sse", 0).await;
    // The plain ones are still open, and not counted.
    plain.next_of("metrics").await;
    assert_eq!(compressed(&app, "sse").await, Some(0));
    drop(plain_ws);
    app.stop();
}

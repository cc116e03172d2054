//! permessage-deflate (RFC 7692): the handshake's offer and answer, the
//! compressed form of a frame every deflate subscriber shares, and the
//! bounded inflation of what a client compressed.
//!
//! The server answers every accepted offer with
//! `server_no_context_takeover` and `client_no_context_takeover`: each
//! message is compressed on its own, both ways. So a frame is compressed
//! **once** and the same bytes go to every subscriber that negotiated the
//! extension (cached on the [`Frame`]), and neither side of a connection
//! keeps a compressor or an inflater between messages: an idle connection
//! holds no deflate state at all. Inflating a client's message makes an
//! inflater for that message and drops it after, stopping at the frame
//! limit while it inflates.

use std::cell::RefCell;

use actix_http::ws::{OpCode, Parser};
use bytes::{Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::protocol::Frame;

/// The extension's token in `Sec-WebSocket-Extensions`.
pub const EXTENSION: &str = "permessage-deflate";

/// The answer to an accepted offer (RFC 7692 §7.1): no context takeover
/// either way, so no per-connection state on either side.
pub const ANSWER: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// The answer to an offer that named `server_max_window_bits=15`: the
/// server accepts that parameter by repeating it (RFC 7692 §7.1.2.1).
pub const ANSWER_WINDOW_15: &str = "permessage-deflate; server_no_context_takeover; \
     client_no_context_takeover; server_max_window_bits=15";

/// Text messages from this size (bytes of JSON) up are compressed; smaller
/// ones go out plain (RSV1 clear, allowed per message by RFC 7692 §6).
/// Below it the few bytes saved cost a compression per frame and a
/// compressor's start-up (measured: `examples/deflate_cost.rs`,
/// `docs/protocol.md`).
pub const MIN_COMPRESSED_BYTES: usize = 512;

/// The DEFLATE level: 1, the fastest, for a frame compressed on a hub
/// thread in the middle of a fan-out (measured against 6 and 9 in
/// `examples/deflate_cost.rs`: a few per cent bigger, several times faster).
pub const LEVEL: u32 = 1;

/// The empty stored block a sync flush ends with, which RFC 7692 §7.2.1
/// takes off a compressed message (and §7.2.2 puts back to inflate it).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Why an offer was not taken (for tests; a declined offer means a plain
/// connection, never a refused handshake).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Decline {
    #[error("another extension")]
    OtherExtension,
    #[error("unknown parameter {0}")]
    UnknownParameter(String),
    #[error("parameter {0} given twice")]
    Duplicate(String),
    #[error("bad value for {0}")]
    BadValue(String),
    /// The shared compressed form uses a 32 KiB window: a client that
    /// needs a smaller one gets plain frames.
    #[error("server_max_window_bits below 15")]
    SmallWindow,
    #[error("malformed header")]
    Malformed,
}

/// The answer to the client's `Sec-WebSocket-Extensions` header lines:
/// the extension's response header value for the first acceptable
/// permessage-deflate offer, or None (no extension: plain frames).
pub fn negotiate<'a>(offers: impl IntoIterator<Item = &'a str>) -> Option<&'static str> {
    offers
        .into_iter()
        .flat_map(|line| split_outside_quotes(line, ','))
        .find_map(|offer| accept(offer).ok())
}

/// The answer to one offer (`permessage-deflate; param; param=value`), or
/// why the server cannot take it (RFC 7692 §5, §7.1).
pub fn accept(offer: &str) -> Result<&'static str, Decline> {
    let mut parts = split_outside_quotes(offer, ';').into_iter();
    let name = parts.next().map(str::trim).unwrap_or_default();
    if !name.eq_ignore_ascii_case(EXTENSION) {
        return Err(Decline::OtherExtension);
    }
    let mut seen: Vec<String> = Vec::new();
    let mut answer = ANSWER;
    for param in parts {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k.trim(), Some(unquote(v.trim())?)),
            None => (param.trim(), None),
        };
        if key.is_empty() || !is_token(key) {
            return Err(Decline::Malformed);
        }
        let key = key.to_ascii_lowercase();
        if seen.contains(&key) {
            return Err(Decline::Duplicate(key));
        }
        match (key.as_str(), value.as_deref()) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("client_max_window_bits", None) => {}
            // The client's window is its own business: the inflater takes
            // any size up to 15, so the answer does not limit it.
            ("client_max_window_bits", Some(v)) => {
                window_bits(v).ok_or_else(|| Decline::BadValue(key.clone()))?;
            }
            ("server_max_window_bits", Some(v)) => {
                match window_bits(v).ok_or_else(|| Decline::BadValue(key.clone()))? {
                    15 => answer = ANSWER_WINDOW_15,
                    _ => return Err(Decline::SmallWindow),
                }
            }
            (
                "server_no_context_takeover"
                | "client_no_context_takeover"
                | "server_max_window_bits",
                _,
            ) => return Err(Decline::BadValue(key)),
            _ => return Err(Decline::UnknownParameter(key)),
        }
        seen.push(key);
    }
    Ok(answer)
}

/// 8..=15, written as RFC 7692 §7.1.2 says: decimal, no leading zero.
fn window_bits(v: &str) -> Option<u8> {
    if v.starts_with('0') || v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

/// A token, or a quoted-string whose content is a token (RFC 7692 §7.1).
fn unquote(v: &str) -> Result<String, Decline> {
    let inner = match v.strip_prefix('"') {
        Some(rest) => {
            let rest = rest.strip_suffix('"').ok_or(Decline::Malformed)?;
            let mut out = String::new();
            let mut chars = rest.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.push(chars.next().ok_or(Decline::Malformed)?),
                    '"' => return Err(Decline::Malformed),
                    c => out.push(c),
                }
            }
            out
        }
        None => v.to_owned(),
    };
    if is_token(&inner) {
        Ok(inner)
    } else {
        Err(Decline::Malformed)
    }
}

/// An RFC 7230 token.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Splits on `sep` where it is not inside a quoted string.
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.retain(|p| !p.trim().is_empty());
    parts
}

thread_local! {
    /// One compressor per thread that compresses (hub fan-out threads,
    /// actix workers), reset for each message: its tables (some
    /// 300 KiB with miniz_oxide) are not made per frame nor kept per
    /// connection.
    static COMPRESSOR: RefCell<Option<Compress>> = const { RefCell::new(None) };
}

/// The raw DEFLATE of `text` as RFC 7692 §7.2.1 sends it: compressed with
/// no context, sync-flushed, the trailing `00 00 ff ff` removed.
pub fn compress(text: &[u8]) -> Vec<u8> {
    COMPRESSOR.with(|c| {
        let mut slot = c.borrow_mut();
        let c = slot.get_or_insert_with(|| Compress::new(Compression::new(LEVEL), false));
        c.reset();
        let mut out = Vec::with_capacity(text.len() / 4 + 64);
        loop {
            let read = c.total_in() as usize;
            // Cannot fail: raw deflate into a Vec with room.
            let _ = c.compress_vec(&text[read..], &mut out, FlushCompress::Sync);
            // A sync flush is complete once all input is in and it left
            // output room unused.
            if c.total_in() as usize == text.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(256));
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        out
    })
}

/// A whole unmasked final text frame with `payload` (RSV1 set when it is
/// compressed).
pub fn text_frame(payload: &[u8], compressed: bool) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    Parser::write_message(&mut out, payload, OpCode::Text, true, false);
    if compressed {
        out[0] |= 0x40;
    }
    out.freeze()
}

/// `frame` as a connection that negotiated permessage-deflate writes it:
/// compressed from [`MIN_COMPRESSED_BYTES`] up, once per frame whoever
/// asks first (cached on the frame); None for a frame that goes plain.
pub fn deflated(frame: &Frame) -> Option<&Bytes> {
    if frame.len() < MIN_COMPRESSED_BYTES {
        return None;
    }
    Some(frame.deflated(|text| {
        let z = compress(text.as_bytes());
        // Sent plain when deflate does not shrink it (RSV1 clear).
        if z.len() < text.len() {
            text_frame(&z, true)
        } else {
            text_frame(text.as_bytes(), false)
        }
    }))
}

/// The raw DEFLATE of `frame` (its trailing `00 00 ff ff` removed) as
/// [`deflated`] caches it: the payload of that WebSocket frame, sliced
/// out of the same allocation (no copy, no second compression). None for
/// a frame that goes plain (under [`MIN_COMPRESSED_BYTES`], or it did not
/// shrink). A gzip'ed SSE stream writes these bytes (`transport::sse::gzip`).
pub fn raw_deflate(frame: &Frame) -> Option<Bytes> {
    let ws = deflated(frame)?;
    if ws[0] & 0x40 == 0 {
        return None;
    }
    // The server's frames are unmasked: 2 bytes, then a 16- or 64-bit
    // length when the 7-bit one says so.
    let header = match ws[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    Some(ws.slice(header..))
}

/// Why a compressed message was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// It inflates past the limit: inflation stopped there.
    #[error("compressed message inflates past {max} bytes")]
    TooLarge { max: usize },
    /// Not valid DEFLATE data.
    #[error("compressed message is not valid DEFLATE data")]
    Corrupt,
}

/// Bytes the inflater's output grows by at a time.
const INFLATE_STEP: usize = 16 * 1024;

/// Inflates a client's compressed message (RFC 7692 §7.2.2: the tail put
/// back), refusing it as soon as the output passes `max` bytes: never
/// more than `max` + one step of output is held, whatever the ratio.
/// The inflater lives for this message only (`client_no_context_takeover`).
pub fn inflate(compressed: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    let mut d = Decompress::new(false);
    let mut out: Vec<u8> = Vec::new();
    let mut input: &[u8] = compressed;
    let mut tail_fed = false;
    loop {
        if input.is_empty() && !tail_fed {
            input = &TAIL;
            tail_fed = true;
        }
        if out.len() == out.capacity() {
            if out.len() > max {
                return Err(InflateError::TooLarge { max });
            }
            // Room up to one byte past the limit: enough to tell.
            let room = INFLATE_STEP.min(max + 1 - out.len());
            out.reserve_exact(room);
        }
        let before = d.total_in();
        let status = d
            .decompress_vec(input, &mut out, FlushDecompress::Sync)
            .map_err(|_| InflateError::Corrupt)?;
        input = &input[(d.total_in() - before) as usize..];
        if out.len() > max {
            return Err(InflateError::TooLarge { max });
        }
        let done = status == Status::StreamEnd
            || (tail_fed && input.is_empty() && out.len() < out.capacity());
        if done {
            return Ok(out);
        }
        if status == Status::BufError && out.len() < out.capacity() {
            // No progress with input and room left: truncated data.
            return Err(InflateError::Corrupt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_are_answered_per_rfc_7692() {
        let yes = [
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            // Chrome's and Firefox's offer.
            "permessage-deflate; client_max_window_bits=15",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; client_max_window_bits=\"10\"",
            "PerMessage-Deflate ; Server_No_Context_Takeover",
            // A smaller window first, a fallback after: the fallback.
            "permessage-deflate; server_max_window_bits=10, permessage-deflate",
            "x-webkit-deflate-frame, permessage-deflate",
        ];
        for offer in yes {
            assert_eq!(negotiate([offer]), Some(ANSWER), "{offer}");
        }
        // Accepted by repeating it.
        assert_eq!(
            negotiate(["permessage-deflate; server_max_window_bits=15"]),
            Some(ANSWER_WINDOW_15)
        );
        let no = [
            "",
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=015",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
            "permessage-deflate; client_max_window_bits=\"1 0\"",
            "permessage-deflate; client_max_window_bits=\"10",
        ];
        for offer in no {
            assert_eq!(negotiate([offer]), None, "{offer}");
        }
        // Offers across several header lines, in order.
        assert_eq!(
            negotiate([
                "foo",
                "permessage-deflate; server_max_window_bits=9",
                "permessage-deflate"
            ]),
            Some(ANSWER)
        );
        assert_eq!(
            accept("permessage-deflate; server_max_window_bits=12"),
            Err(Decline::SmallWindow)
        );
        assert_eq!(
            accept("permessage-deflate; a; a"),
            Err(Decline::UnknownParameter("a".into()))
        );
    }

    #[test]
    fn a_compressed_message_inflates_to_its_text() {
        let text = "{\"type\":\"metrics\",\"host\":\"web-01\"}".repeat(100);
        let z = compress(text.as_bytes());
        assert!(z.len() < text.len() / 10, "{} bytes", z.len());
        assert!(!z.ends_with(&TAIL));
        assert_eq!(inflate(&z, text.len()).unwrap(), text.as_bytes());
        // Compressing again on the same thread starts afresh.
        assert_eq!(compress(text.as_bytes()), z);
        // flate2's own decoder agrees (a sync flush, then the tail).
        let mut full = z.clone();
        full.extend_from_slice(&TAIL);
        let mut d = flate2::read::DeflateDecoder::new(&full[..]);
        let mut back = String::new();
        let _ = std::io::Read::read_to_string(&mut d, &mut back);
        assert_eq!(back, text);
    }

    #[test]
    fn inflation_stops_at_the_limit() {
        let bomb = compress(&vec![b'a'; 10 << 20]);
        assert!(bomb.len() < 65536, "{}", bomb.len());
        assert_eq!(
            inflate(&bomb, 65536),
            Err(InflateError::TooLarge { max: 65536 })
        );
        // Exactly the limit passes.
        let exact = compress(&vec![b'a'; 65536]);
        assert_eq!(inflate(&exact, 65536).unwrap().len(), 65536);
        assert_eq!(inflate(b"\xff\xff\xff", 1000), Err(InflateError::Corrupt));
    }

    #[test]
    fn small_frames_stay_plain_big_ones_are_compressed_once() {
        let small = Frame::from("x".repeat(MIN_COMPRESSED_BYTES - 1));
        assert!(deflated(&small).is_none());
        let big = Frame::from("{\"cpu\":12.5}".repeat(100));
        let first = deflated(&big).unwrap().clone();
        assert_eq!(first[0], 0xc1, "FIN, RSV1, text");
        // The same bytes (the same allocation) for the next writer.
        assert_eq!(deflated(&big).unwrap().as_ptr(), first.as_ptr());
        assert_eq!(deflated(&big.clone()).unwrap().as_ptr(), first.as_ptr());
    }

    #[test]
    fn raw_deflate_is_the_websocket_payload_sliced_from_the_same_bytes() {
        assert!(raw_deflate(&Frame::from("x".repeat(MIN_COMPRESSED_BYTES - 1))).is_none());
        // 2-byte, 4-byte (126) and 10-byte (127) WebSocket headers.
        for text in [
            "{\"cpu\":12.5}".repeat(50),
            "{\"cpu\":12.5}".repeat(5000),
            (0..400_000u32).map(|i| format!("{i},")).collect::<String>(),
        ] {
            let big = Frame::from(text.clone());
            let raw = raw_deflate(&big).unwrap();
            let ws = deflated(&big).unwrap();
            assert!(ws.ends_with(&raw));
            assert_eq!(raw.as_ptr(), ws[ws.len() - raw.len()..].as_ptr(), "no copy");
            assert_eq!(raw[..], compress(text.as_bytes())[..]);
            assert_eq!(inflate(&raw, text.len()).unwrap(), text.as_bytes());
        }
    }
}

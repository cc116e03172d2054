//! The WebSocket reader (`transport::ws::inbound::Inbound`), fed byte
//! streams split at arbitrary read boundaries, as the socket would.
//!
//! Invariants:
//! * it never panics, and after an error it yields nothing more;
//! * what it holds never exceeds one frame of at most the limit plus what
//!   was fed in one read: a frame (or fragmented message) declared over
//!   the limit is refused **at its header**, before its payload is taken;
//! * a well-formed stream of messages (text fragmented anywhere, with
//!   control frames between the parts) decodes to exactly those messages,
//!   however it is split;
//! * every refusal has the close code RFC 6455 gives it: 1009 for size,
//!   1002 for framing, 1007 for text that is not UTF-8.

use opswire::transport::ws::inbound::{Inbound, Message, ReadError};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::check;
use crate::support;

const LIMIT: usize = 1024;

/// A masked client frame (mask chosen by the case).
fn frame(b0: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![b0];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=65535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Feeds `bytes` in pieces of the given sizes (cycled), decoding after
/// each; returns what came out, checking the memory bound as it goes.
fn feed(
    bytes: &[u8],
    pieces: &[usize],
    limit: usize,
) -> Result<Vec<Result<Message, ReadError>>, TestCaseError> {
    let mut r = Inbound::new(&[], limit);
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    let mut failed = false;
    while at < bytes.len() {
        let n = pieces[i % pieces.len()].clamp(1, bytes.len() - at);
        i += 1;
        r.push_bytes(&bytes[at..at + n]);
        at += n;
        while let Some(item) = r.decode() {
            check!(!failed, "an item after an error: {item:?}");
            failed |= item.is_err();
            out.push(item);
        }
        // One frame of at most the limit (its header, and the parts of
        // its message so far), plus the last read, with the allocator's
        // rounding up.
        let bound = 2 * (limit + 14 + n) + 64;
        check!(
            r.held_bytes() <= bound,
            "holds {} bytes with limit {limit} after a read of {n}",
            r.held_bytes()
        );
    }
    Ok(out)
}

fn arb_pieces() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![3 => 1usize..16, 1 => 16usize..5000], 1..8)
}

/// Frames of every kind, mostly valid in shape, some not.
fn arb_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 0..300),
        any::<[u8; 4]>(),
        prop_oneof![6 => Just(None), 1 => (0u64..u64::MAX).prop_map(Some)],
    )
        .prop_map(|(b0, payload, mask, declared)| match declared {
            None => frame(b0, &payload, mask),
            // A header declaring a length, then some of the payload.
            Some(len) => {
                let mut out = vec![b0, 0x80 | 127];
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&mask);
                out.extend_from_slice(&payload);
                out
            }
        })
}

#[test]
fn ws_reader_arbitrary() {
    let strategy = (prop::collection::vec(arb_frame(), 0..12), arb_pieces());
    support::run("ws_reader_arbitrary", strategy, |(frames, pieces)| {
        let bytes: Vec<u8> = frames.concat();
        for item in feed(&bytes, &pieces, LIMIT)? {
            match item {
                Ok(Message::Text(t)) => check!(t.len() <= LIMIT, "text of {} bytes", t.len()),
                Ok(_) => {}
                Err(e) => check!(
                    e.close_code().is_some(),
                    "a refusal without a close code: {e}"
                ),
            }
        }
        Ok(())
    });
}

#[test]
fn ws_reader_declared_over_the_limit() {
    // A header declaring more than the limit (alone, or continuing a
    // message that already holds some), then as much payload as a client
    // likes: refused with 1009 before the payload is held.
    let strategy = (
        LIMIT as u64 + 1..u64::MAX >> 1,
        0usize..LIMIT,
        1usize..200_000,
        arb_pieces(),
    );
    support::run(
        "ws_reader_declared_over_the_limit",
        strategy,
        |(declared, held, streamed, pieces)| {
            let mask = [1, 2, 3, 4];
            let mut bytes = Vec::new();
            let (b0, declared) = if held > 0 {
                bytes.extend(frame(0x01, &vec![b' '; held], mask));
                (
                    0x00,
                    declared
                        .saturating_sub(held as u64)
                        .max((LIMIT - held + 1) as u64),
                )
            } else {
                (0x81, declared)
            };
            bytes.extend_from_slice(&[b0, 0x80 | 127]);
            bytes.extend_from_slice(&declared.to_be_bytes());
            bytes.extend_from_slice(&mask);
            bytes.resize(bytes.len() + streamed, b'x');
            let out = feed(&bytes, &pieces, LIMIT)?;
            let last = out
                .last()
                .map(|r| r.as_ref().err().and_then(ReadError::close_code));
            check!(last == Some(Some(1009)), "ended with {:?}", out.last());
            Ok(())
        },
    );
}

/// A message as a client may send it: text, cut into parts.
#[derive(Debug, Clone)]
struct Msg {
    text: String,
    /// Part lengths (in bytes, snapped to the text); one part: unfragmented.
    cuts: Vec<usize>,
    /// A ping sent between the parts, after this many parts.
    ping_after: Option<usize>,
}

fn arb_msg() -> impl Strategy<Value = Msg> {
    (
        "[a-z0-9 é\u{1F600}{}\":,]{0,200}",
        prop::collection::vec(0usize..120, 0..5),
        prop::option::of(0usize..5),
    )
        .prop_map(|(text, cuts, ping_after)| Msg {
            text,
            cuts,
            ping_after,
        })
}

fn encode(m: &Msg, mask: [u8; 4]) -> Vec<u8> {
    let bytes = m.text.as_bytes();
    let mut parts = Vec::new();
    let mut at = 0;
    for &c in &m.cuts {
        let end = (at + c).min(bytes.len());
        parts.push(&bytes[at..end]);
        at = end;
    }
    parts.push(&bytes[at..]);
    let mut out = Vec::new();
    let last = parts.len() - 1;
    for (i, p) in parts.iter().enumerate() {
        let opcode = if i == 0 { 0x01 } else { 0x00 };
        let fin = if i == last { 0x80 } else { 0x00 };
        out.extend(frame(fin | opcode, p, mask));
        if m.ping_after == Some(i) && i < last {
            out.extend(frame(0x89, b"hi", mask));
        }
    }
    out
}

#[test]
fn ws_reader_well_formed_round_trips() {
    let strategy = (
        prop::collection::vec(arb_msg(), 1..6),
        any::<[u8; 4]>(),
        arb_pieces(),
    );
    support::run(
        "ws_reader_well_formed_round_trips",
        strategy,
        |(msgs, mask, pieces)| {
            let bytes: Vec<u8> = msgs.iter().flat_map(|m| encode(m, mask)).collect();
            let mut texts = Vec::new();
            let mut pings = 0;
            for item in feed(&bytes, &pieces, LIMIT)? {
                match item {
                    Ok(Message::Text(t)) => texts.push(t.to_string()),
                    Ok(Message::Ping(p)) => {
                        check!(&p[..] == b"hi", "ping payload {p:?}");
                        pings += 1;
                    }
                    Ok(Message::Fragment) => {}
                    other => {
                        return Err(TestCaseError::fail(format!("unexpected {other:?}")));
                    }
                }
            }
            let want: Vec<String> = msgs.iter().map(|m| m.text.clone()).collect();
            check!(texts == want, "decoded {texts:?}, sent {want:?}");
            let want_pings = msgs
                .iter()
                .filter(|m| m.ping_after.is_some_and(|i| i < m.cuts.len()))
                .count();
            check!(pings == want_pings, "{pings} pings, sent {want_pings}");
            Ok(())
        },
    );
}

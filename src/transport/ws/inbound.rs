//! The reader half of a WebSocket: frames decoded from the socket,
//! continuations put together up to the frame limit.
//!
//! Every frame's header is checked **before its payload is read**: a
//! declared length above the limit (counting what a fragmented message
//! already holds), reserved bits, an unknown opcode, an unmasked or
//! fragmented control frame end the connection at the header. So the
//! buffer never holds more than one frame of at most the limit, whatever
//! a client declares or streams. actix-http's codec alone would wait for
//! a frame's whole declared length, buffering it, before checking it.
//!
//! With permessage-deflate negotiated, a message's first frame may carry
//! RSV1 (compressed): its compressed bytes count against the limit as they
//! arrive, like plain ones, and the whole message is then inflated by an
//! inflater made for it, which stops as soon as the output passes the
//! limit (close 1009): a small frame that would inflate to gigabytes
//! costs at most the limit. Nothing of the inflater outlives the message
//! (the server answered `client_no_context_takeover`).
//!
//! The state lives in [`Inbound`], not in the future of [`Inbound::recv`],
//! so `recv` can lose a `select!` race without losing bytes. Reads go
//! through a buffer on the stack; the connection keeps bytes only while a
//! frame is incomplete, so an idle connection holds no read buffer.

use std::io;

use actix_http::ws::{CloseReason, Codec, Frame, Item, ProtocolError};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

use super::deflate::{self, InflateError};
use crate::protocol::close;

/// One frame from the client, as the session accounts for it: a whole
/// message, a control frame, or one part of a fragmented message (every
/// frame costs the client budget, even the parts).
#[derive(Debug)]
pub enum Message {
    Text(ByteString),
    /// Binary messages are refused; their content is not kept.
    Binary,
    Ping(Bytes),
    Pong,
    Close(Option<CloseReason>),
    /// A part of a fragmented message that is not its last.
    Fragment,
}

/// Why the reader gave up on the client.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A frame (or the message it continues) over the limit.
    #[error("frame larger than {max} bytes")]
    TooLarge { max: usize },
    /// A compressed message that inflates past the limit (refused while
    /// inflating, at the limit).
    #[error("compressed message inflates past {max} bytes")]
    InflatesTooLarge { max: usize },
    /// Not RFC 6455: what was wrong, for the close reason.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A text message that is not UTF-8.
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    /// The socket failed (the peer is gone).
    #[error("connection lost: {0}")]
    Io(#[from] io::Error),
}

impl ReadError {
    /// The close code RFC 6455 gives for it (None: no close frame, the
    /// peer is gone).
    pub fn close_code(&self) -> Option<u16> {
        match self {
            ReadError::TooLarge { .. } | ReadError::InflatesTooLarge { .. } => {
                Some(close::TOO_LARGE)
            }
            ReadError::Protocol(_) => Some(close::PROTOCOL_ERROR),
            ReadError::InvalidUtf8 => Some(close::INVALID_DATA),
            ReadError::Io(_) => None,
        }
    }
}

/// Bytes read per `read(2)`: a client's ops are small.
const READ_CHUNK: usize = 4096;

pub struct Inbound {
    buf: BytesMut,
    codec: Codec,
    /// The largest message (and frame) taken now: smaller before auth.
    max: usize,
    /// A fragmented message being put together: text or binary, its parts.
    partial: Option<Partial>,
    /// The header at the front of `buf` was checked.
    checked: bool,
    /// The frame at the front of `buf` had RSV1 (compressed) set.
    compressed: bool,
    /// permessage-deflate was negotiated: RSV1 may be set.
    deflate: bool,
    /// The peer closed its side (or the socket failed): only what is
    /// buffered is left.
    done: bool,
}

impl Inbound {
    /// Reads from the socket, starting with `buffered` (what came with the
    /// handshake), refusing frames and messages over `max` bytes.
    pub fn new(buffered: &[u8], max: usize) -> Inbound {
        Inbound {
            buf: BytesMut::from(buffered),
            // The codec's own limit never bites: headers are checked
            // first, against `max`.
            codec: Codec::new().max_size(usize::MAX >> 1),
            max,
            partial: None,
            checked: false,
            compressed: false,
            deflate: false,
            done: false,
        }
    }

    /// Takes compressed messages (permessage-deflate was negotiated).
    pub fn with_deflate(mut self, deflate: bool) -> Inbound {
        self.deflate = deflate;
        self
    }

    /// Appends bytes as a read from the socket would (for tests and the
    /// fuzzer, which drive [`Inbound::decode`] without a socket).
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        if !self.done {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Bytes held for frames not yet whole (its allocation, which is what
    /// a client could make the server keep).
    pub fn held_bytes(&self) -> usize {
        self.buf.capacity() + self.partial.as_ref().map_or(0, |p| p.parts.capacity())
    }

    /// Changes the limit (it grows once the client has authenticated).
    pub fn set_limit(&mut self, max: usize) {
        self.max = max;
    }

    /// The next frame; None when the client is gone.
    pub async fn recv(&mut self, io: &TcpStream) -> Option<Result<Message, ReadError>> {
        loop {
            if let Some(item) = self.decode() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            // `poll_read_ready`, not `readable()`: it takes the socket's
            // one reader slot, which still holds the waker of the HTTP
            // dispatcher that read the handshake; left there, that waker
            // would keep the dispatcher's finished task (≈ 1.8 KiB)
            // allocated until the client next sends something.
            if let Err(e) = std::future::poll_fn(|cx| io.poll_read_ready(cx)).await {
                self.done = true;
                return Some(Err(ReadError::Io(e)));
            }
            match read_some(io, &mut self.buf) {
                Ok(0) => self.done = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(ReadError::Io(e)));
                }
            }
        }
    }

    /// The next frame out of what is buffered, if a whole one is there
    /// (or an error as soon as a header shows one).
    pub fn decode(&mut self) -> Option<Result<Message, ReadError>> {
        if !self.checked {
            let held = self.partial.as_ref().map_or(0, |p| p.parts.len());
            match check_header(&self.buf, held, self.max, self.deflate) {
                Ok(true) => {
                    self.checked = true;
                    // actix-http's codec refuses RSV1: it is taken here.
                    self.compressed = self.buf[0] & RSV1 != 0;
                    self.buf[0] &= !RSV1;
                }
                Ok(false) => {
                    self.shrink();
                    return None;
                }
                Err(e) => return Some(Err(self.fail(e))),
            }
        }
        match self.codec.decode(&mut self.buf) {
            Ok(Some(frame)) => {
                self.checked = false;
                let msg = self.assemble(frame).map_err(|e| self.fail(e));
                self.shrink();
                Some(msg)
            }
            Ok(None) => None,
            // Checked above; only what the codec sees otherwise (an
            // invalid close payload, say).
            Err(e) => Some(Err(self.fail(match e {
                ProtocolError::Overflow => ReadError::TooLarge { max: self.max },
                ProtocolError::Io(e) if e.kind() != io::ErrorKind::InvalidData => ReadError::Io(e),
                _ => ReadError::Protocol("malformed frame"),
            }))),
        }
    }

    /// Ends reading: nothing after an error is taken.
    fn fail(&mut self, e: ReadError) -> ReadError {
        self.buf = BytesMut::new();
        self.partial = None;
        self.done = true;
        e
    }

    /// Frees the buffer once everything in it is decoded.
    fn shrink(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

    /// A message from a frame, or a [`Message::Fragment`] while a
    /// fragmented one is still coming.
    fn assemble(&mut self, frame: Frame) -> Result<Message, ReadError> {
        match frame {
            Frame::Text(b) if self.compressed => text(self.inflate(&b)?),
            Frame::Text(b) => text(b),
            // Binary messages are refused unread: not worth inflating.
            Frame::Binary(_) => Ok(Message::Binary),
            Frame::Ping(b) => Ok(Message::Ping(b)),
            Frame::Pong(_) => Ok(Message::Pong),
            Frame::Close(r) => Ok(Message::Close(r)),
            Frame::Continuation(item) => {
                let (first, part, last) = match item {
                    Item::FirstText(b) => (Some(true), b, false),
                    Item::FirstBinary(b) => (Some(false), b, false),
                    Item::Continue(b) => (None, b, false),
                    Item::Last(b) => (None, b, true),
                };
                match (first, self.partial.as_mut()) {
                    (Some(is_text), None) => {
                        self.partial = Some(Partial {
                            is_text,
                            compressed: self.compressed,
                            parts: BytesMut::from(&part[..]),
                        })
                    }
                    (None, Some(p)) => p.parts.extend_from_slice(&part),
                    (Some(_), Some(_)) => {
                        return Err(ReadError::Protocol("a new message inside a fragmented one"))
                    }
                    (None, None) => {
                        return Err(ReadError::Protocol(
                            "a continuation frame with nothing to continue",
                        ))
                    }
                }
                if !last {
                    return Ok(Message::Fragment);
                }
                match self.partial.take() {
                    Some(p) if p.is_text && p.compressed => text(self.inflate(&p.parts)?),
                    Some(p) if p.is_text => text(p.parts.freeze()),
                    _ => Ok(Message::Binary),
                }
            }
        }
    }

    /// A compressed message's text, inflated up to the limit.
    fn inflate(&self, compressed: &[u8]) -> Result<Bytes, ReadError> {
        deflate::inflate(compressed, self.max)
            .map(Bytes::from)
            .map_err(|e| match e {
                InflateError::TooLarge { max } => ReadError::InflatesTooLarge { max },
                InflateError::Corrupt => {
                    ReadError::Protocol("compressed message is not valid DEFLATE data")
                }
            })
    }
}

/// A fragmented message being put together.
struct Partial {
    is_text: bool,
    /// Its first frame had RSV1: the parts are one compressed message.
    compressed: bool,
    parts: BytesMut,
}

/// RSV1: a compressed message (permessage-deflate, RFC 7692 §6).
const RSV1: u8 = 0x40;

/// Checks the header at the front of `buf`: Ok(true) when it is whole
/// and acceptable, Ok(false) when more bytes are needed to tell. `held`
/// is what the fragmented message in progress already holds.
fn check_header(buf: &[u8], held: usize, max: usize, deflate: bool) -> Result<bool, ReadError> {
    let [b0, b1, ..] = *buf else {
        return Ok(false);
    };
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0f;
    if b0 & 0x70 != 0 {
        let why = if b0 & 0x30 != 0 || !deflate {
            "reserved bits set (no extension was negotiated)"
        } else if opcode == 0 {
            "RSV1 set on a continuation frame (only a message's first frame carries it)"
        } else if opcode >= 8 {
            "RSV1 set on a control frame (control frames are never compressed)"
        } else {
            ""
        };
        if !why.is_empty() {
            return Err(ReadError::Protocol(why));
        }
    }
    let control = match opcode {
        0..=2 => false,
        8..=10 => true,
        _ => return Err(ReadError::Protocol("unknown opcode")),
    };
    if b1 & 0x80 == 0 {
        return Err(ReadError::Protocol("client frames must be masked"));
    }
    let len = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => u16::from_be_bytes([b[0], b[1]]) as u64,
            None => return Ok(false),
        },
        127 => match buf.get(2..10) {
            Some(b) => u64::from_be_bytes(b.try_into().unwrap_or_default()),
            None => return Ok(false),
        },
        n => n as u64,
    };
    if control {
        if !fin || len > 125 {
            return Err(ReadError::Protocol(
                "control frames must be whole and at most 125 bytes",
            ));
        }
        return Ok(true);
    }
    // A data frame counts together with the message it continues.
    let total = (held as u64).saturating_add(len);
    if total > max as u64 {
        return Err(ReadError::TooLarge { max });
    }
    Ok(true)
}

fn text(b: Bytes) -> Result<Message, ReadError> {
    ByteString::try_from(b)
        .map(Message::Text)
        .map_err(|_| ReadError::InvalidUtf8)
}

/// One non-blocking read appended to `buf`. A plain function, so the
/// stack buffer never becomes part of the connection's future.
fn read_some(io: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    let mut chunk = [0u8; READ_CHUNK];
    let n = io.try_read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame (mask 0: the payload goes as is).
    fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
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
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(payload);
        out
    }

    fn header_only(b0: u8, declared: u64) -> Vec<u8> {
        let mut out = vec![b0, 0x80 | 127];
        out.extend_from_slice(&declared.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out
    }

    #[test]
    fn a_huge_declared_length_is_refused_at_the_header() {
        let mut r = Inbound::new(&header_only(0x81, 1 << 62), 1024);
        assert!(matches!(
            r.decode(),
            Some(Err(ReadError::TooLarge { max: 1024 }))
        ));
        // Exactly the limit passes the header check and waits for bytes.
        let mut r = Inbound::new(&header_only(0x81, 1024), 1024);
        assert!(r.decode().is_none());
    }

    #[test]
    fn fragments_count_together_as_they_arrive() {
        let mut bytes = frame(0x01, &[b'a'; 600]); // first text fragment
        bytes.extend(header_only(0x00, 500)); // continuation: 1100 > 1024
        let mut r = Inbound::new(&bytes, 1024);
        assert!(matches!(r.decode(), Some(Ok(Message::Fragment))));
        assert!(matches!(r.decode(), Some(Err(ReadError::TooLarge { .. }))));
        // Under the limit, the parts make one message.
        let mut bytes = frame(0x01, b"{\"op\":");
        bytes.extend(frame(0x00, b""));
        bytes.extend(frame(0x80, b"\"ping\"}"));
        let mut r = Inbound::new(&bytes, 1024);
        assert!(matches!(r.decode(), Some(Ok(Message::Fragment))));
        assert!(matches!(r.decode(), Some(Ok(Message::Fragment))));
        match r.decode() {
            Some(Ok(Message::Text(t))) => assert_eq!(&*t, "{\"op\":\"ping\"}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rfc_violations_name_their_close_code() {
        let cases: [(Vec<u8>, u16); 6] = [
            (frame(0x81 | 0x40, b"x"), close::PROTOCOL_ERROR), // RSV1
            (frame(0x83, b"x"), close::PROTOCOL_ERROR),        // opcode 3
            (vec![0x81, 0x01, b'x'], close::PROTOCOL_ERROR),   // unmasked
            (frame(0x09, b"x"), close::PROTOCOL_ERROR),        // fragmented ping
            (frame(0x80, b"x"), close::PROTOCOL_ERROR),        // nothing to continue
            (frame(0x81, &[0xff, 0xfe]), close::INVALID_DATA), // bad UTF-8
        ];
        for (bytes, code) in cases {
            let mut r = Inbound::new(&bytes, 1024);
            let err = match r.decode() {
                Some(Err(e)) => e,
                other => panic!("{bytes:02x?}: {other:?}"),
            };
            assert_eq!(err.close_code(), Some(code), "{bytes:02x?}: {err}");
        }
    }

    #[test]
    fn a_compressed_message_leaves_nothing_behind() {
        let op = format!("{{\"op\":\"ping\",\"pad\":\"{}\"}}", " ".repeat(3000));
        let z = deflate::compress(op.as_bytes());
        // RSV1 is refused unless deflate was negotiated.
        let mut r = Inbound::new(&frame(0xc1, &z), 4096);
        assert!(matches!(r.decode(), Some(Err(ReadError::Protocol(_)))));
        let mut r = Inbound::new(&frame(0xc1, &z), 4096).with_deflate(true);
        match r.decode() {
            Some(Ok(Message::Text(t))) => assert_eq!(&*t, op),
            other => panic!("{other:?}"),
        }
        // No buffer, no inflater: an idle connection holds nothing more.
        assert_eq!(r.held_bytes(), 0);
        assert!(r.decode().is_none());
        // Past the limit once inflated: refused with its own error.
        let mut r = Inbound::new(&frame(0xc1, &z), 1024).with_deflate(true);
        assert!(matches!(
            r.decode(),
            Some(Err(ReadError::InflatesTooLarge { max: 1024 }))
        ));
    }

    #[test]
    fn the_limit_can_grow_after_auth() {
        let bytes = frame(0x81, &[b' '; 2000]);
        let mut r = Inbound::new(&bytes, 1024);
        assert!(matches!(r.decode(), Some(Err(ReadError::TooLarge { .. }))));
        let mut r = Inbound::new(&bytes, 1024);
        r.set_limit(4096);
        assert!(matches!(r.decode(), Some(Ok(Message::Text(_)))));
    }
}

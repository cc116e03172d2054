//! Between the socket and tungstenite: counts the bytes that cross the wire
//! and undoes permessage-deflate (RFC 7692), which tungstenite does not
//! speak (it refuses any frame with RSV1 set).
//!
//! [`WireStream`] reads the socket, passes the HTTP handshake response
//! through (noting whether the server accepted `permessage-deflate`), then
//! follows the server's WebSocket frames. A plain frame goes through
//! unchanged; a compressed one (RSV1) is collected, inflated and handed on
//! as the plain frame it stands for. Every subscriber of one worker shares
//! one inflater, reset per message: opswire answers
//! `server_no_context_takeover`, so no message depends on an earlier one
//! and the generator keeps no compression state per connection.
//!
//! The subscribe op the generator sends stays uncompressed (RFC 7692
//! §6: compressing is per message and optional).

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::conn::TsStream;

/// What the permessage-deflate offer asks for.
pub const DEFLATE_OFFER: &str = "permessage-deflate; client_no_context_takeover";

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The largest message the generator inflates (as tungstenite's own cap).
const MAX_MESSAGE: usize = 16 << 20;

/// Shared by a worker's connections: the inflater and the wire-byte count
/// of the measurement window.
pub struct WireShared {
    inflater: RefCell<Decompress>,
    /// `[start, end)` in unix µs: bytes read inside it are counted.
    window: Cell<Option<(i64, i64)>>,
    bytes: Cell<u64>,
    negotiated: Cell<u64>,
}

impl Default for WireShared {
    fn default() -> Self {
        Self {
            inflater: RefCell::new(Decompress::new(false)),
            window: Cell::new(None),
            bytes: Cell::new(0),
            negotiated: Cell::new(0),
        }
    }
}

impl WireShared {
    /// Counts from now on the bytes read inside `[start_us, end_us)`.
    pub fn set_window(&self, start_us: i64, end_us: i64) {
        self.window.set(Some((start_us, end_us)));
    }

    /// Bytes read from the sockets inside the window (headers included).
    pub fn window_bytes(&self) -> u64 {
        self.bytes.get()
    }

    /// Connections whose handshake answer accepted permessage-deflate.
    pub fn negotiated(&self) -> u64 {
        self.negotiated.get()
    }

    fn count(&self, n: usize) {
        if let Some((start, end)) = self.window.get() {
            let now = opswire::time::now_micros();
            if now >= start && now < end {
                self.bytes.set(self.bytes.get() + n as u64);
            }
        }
    }

    /// Inflates one message's payload (the sync marker put back).
    fn inflate(&self, mut z: Vec<u8>) -> io::Result<Vec<u8>> {
        z.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut d = self.inflater.borrow_mut();
        d.reset(false);
        let mut out = Vec::with_capacity(z.len() * 4);
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(4096));
            }
            let (in_before, out_before) = (d.total_in(), out.len());
            let status = d
                .decompress_vec(&z[in_before as usize..], &mut out, FlushDecompress::Sync)
                .map_err(|e| bad(format!("inflate: {e}")))?;
            if out.len() > MAX_MESSAGE {
                return Err(bad("an inflated message passes 16 MiB".into()));
            }
            let all_in = d.total_in() as usize == z.len();
            if status == Status::StreamEnd || (all_in && out.len() < out.capacity()) {
                return Ok(out);
            }
            if d.total_in() == in_before && out.len() == out_before && out.len() < out.capacity() {
                return Err(bad("inflate: stuck (truncated data?)".into()));
            }
        }
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

enum State {
    /// The handshake response, up to its blank line.
    Http,
    /// The handshake was refused (not `101`): the rest (the error body)
    /// goes to tungstenite as it is, which reports it (`http 503`, …).
    Refused,
    /// A frame header, `hdr_len` bytes of it so far.
    Header,
    /// `remaining` payload bytes of the current frame.
    Payload,
}

/// A socket whose server frames come out plain; see the module docs.
pub struct WireStream {
    inner: TsStream,
    shared: Rc<WireShared>,
    frames: Frames,
    /// A read of at most this many bytes at once.
    chunk: usize,
}

impl WireStream {
    pub fn new(inner: TsStream, shared: Rc<WireShared>, chunk: usize) -> Self {
        Self {
            inner,
            frames: Frames::new(shared.clone()),
            shared,
            chunk: chunk.clamp(512, 1 << 20),
        }
    }

    /// Kernel time (unix µs) at which the last data read arrived, if known.
    pub fn last_rx_us(&self) -> Option<i64> {
        self.inner.last_rx_us()
    }
}

/// The state machine over what the server sends: bytes in, plain frames out.
struct Frames {
    shared: Rc<WireShared>,
    state: State,
    /// The response head, kept (bounded) until its end to read its headers.
    http: Vec<u8>,
    hdr: [u8; 14],
    hdr_len: usize,
    remaining: u64,
    /// The current frame's payload, when it is compressed, and its opcode.
    compressed: Option<Vec<u8>>,
    opcode: u8,
    /// What tungstenite has yet to read, from `out_at`.
    out: Vec<u8>,
    out_at: usize,
    /// An error found in bytes after what `out` holds: reported once
    /// `out` is handed on.
    error: Option<io::Error>,
}

impl Frames {
    fn new(shared: Rc<WireShared>) -> Self {
        Self {
            shared,
            state: State::Http,
            http: Vec::new(),
            hdr: [0; 14],
            hdr_len: 0,
            remaining: 0,
            compressed: None,
            opcode: 0,
            out: Vec::new(),
            out_at: 0,
            error: None,
        }
    }

    /// Feeds bytes read from the socket through the state machine.
    fn take(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match self.state {
                State::Http => {
                    let end = head_end(&self.http, data);
                    let n = end.unwrap_or(data.len());
                    self.out.extend_from_slice(&data[..n]);
                    self.http.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if self.http.len() > 16 << 10 {
                        return Err(bad("a handshake response over 16 KiB".into()));
                    }
                    if end.is_some() {
                        self.state = if !switching(&self.http) {
                            State::Refused
                        } else {
                            if accepts_deflate(&self.http) {
                                let s = &self.shared.negotiated;
                                s.set(s.get() + 1);
                            }
                            State::Header
                        };
                        self.http = Vec::new();
                    }
                }
                State::Refused => {
                    self.out.extend_from_slice(data);
                    data = &[];
                }
                State::Header => {
                    let need = header_len(&self.hdr[..self.hdr_len]);
                    let n = (need - self.hdr_len).min(data.len());
                    self.hdr[self.hdr_len..self.hdr_len + n].copy_from_slice(&data[..n]);
                    self.hdr_len += n;
                    data = &data[n..];
                    if self.hdr_len == header_len(&self.hdr[..self.hdr_len]) {
                        self.start_frame()?;
                    }
                }
                State::Payload => {
                    let n = (self.remaining.min(data.len() as u64)) as usize;
                    match &mut self.compressed {
                        Some(z) => z.extend_from_slice(&data[..n]),
                        None => self.out.extend_from_slice(&data[..n]),
                    }
                    self.remaining -= n as u64;
                    data = &data[n..];
                    if self.remaining == 0 {
                        self.end_frame()?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A whole header is in `hdr`.
    fn start_frame(&mut self) -> io::Result<()> {
        let h = &self.hdr[..self.hdr_len];
        if h[1] & 0x80 != 0 {
            return Err(bad("a masked frame from the server".into()));
        }
        let len = payload_len(h);
        let (fin, rsv1, opcode) = (h[0] & 0x80 != 0, h[0] & 0x40 != 0, h[0] & 0x0f);
        if rsv1 {
            if opcode >= 8 || opcode == 0 || !fin {
                return Err(bad(format!(
                    "RSV1 on a {} frame (the server does not fragment compressed messages)",
                    match opcode {
                        0 => "continuation",
                        8.. => "control",
                        _ => "non-final",
                    }
                )));
            }
            self.opcode = opcode;
            if len as usize > MAX_MESSAGE {
                return Err(bad("a compressed frame over 16 MiB".into()));
            }
            self.compressed = Some(Vec::with_capacity(len as usize));
        } else {
            self.out.extend_from_slice(h);
        }
        self.remaining = len;
        self.hdr_len = 0;
        self.state = State::Payload;
        if len == 0 {
            self.end_frame()?;
        }
        Ok(())
    }

    /// The current frame's payload is complete.
    fn end_frame(&mut self) -> io::Result<()> {
        self.state = State::Header;
        let Some(z) = self.compressed.take() else {
            return Ok(());
        };
        let plain = self.shared.inflate(z)?;
        // FIN and the compressed frame's opcode, RSV1 cleared.
        let mut h = [0u8; 10];
        h[0] = 0x80 | self.opcode;
        let hl = match plain.len() {
            n if n < 126 => {
                h[1] = n as u8;
                2
            }
            n if n <= 0xffff => {
                h[1] = 126;
                h[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                4
            }
            n => {
                h[1] = 127;
                h[2..10].copy_from_slice(&(n as u64).to_be_bytes());
                10
            }
        };
        self.out.extend_from_slice(&h[..hl]);
        self.out.extend_from_slice(&plain);
        Ok(())
    }

    /// Hands on what is pending; false when nothing is.
    fn drain_into(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.out_at >= self.out.len() {
            return false;
        }
        let n = (self.out.len() - self.out_at).min(buf.remaining());
        buf.put_slice(&self.out[self.out_at..self.out_at + n]);
        self.out_at += n;
        if self.out_at == self.out.len() {
            // Keep no large buffer on an idle connection.
            if self.out.capacity() > 8 << 10 {
                self.out = Vec::new();
            } else {
                self.out.clear();
            }
            self.out_at = 0;
        }
        true
    }
}

/// Bytes a header takes, from what of it has arrived (2 until the second
/// byte says more).
fn header_len(h: &[u8]) -> usize {
    if h.len() < 2 {
        return 2;
    }
    let ext = match h[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if h[1] & 0x80 != 0 { 4 } else { 0 }
}

fn payload_len(h: &[u8]) -> u64 {
    match h[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
        127 => u64::from_be_bytes(h[2..10].try_into().unwrap_or_default()),
        n => u64::from(n),
    }
}

/// Where in `data` the response head ends (just past its blank line),
/// given what of it came before.
fn head_end(before: &[u8], data: &[u8]) -> Option<usize> {
    let tail = &before[before.len().saturating_sub(3)..];
    let mut joined = tail.to_vec();
    joined.extend_from_slice(data);
    joined
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4 - tail.len())
}

/// Whether the response head's status is `101 Switching Protocols`.
fn switching(head: &[u8]) -> bool {
    head.split(|b| *b == b' ').nth(1) == Some(b"101")
}

/// Whether the response head carries `Sec-WebSocket-Extensions:
/// permessage-deflate…`.
fn accepts_deflate(head: &[u8]) -> bool {
    String::from_utf8_lossy(head).lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim()
                .eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| v.trim().to_ascii_lowercase())
                .is_some_and(|v| v.starts_with("permessage-deflate"))
        })
    })
}

impl AsRawFd for WireStream {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

impl AsyncRead for WireStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.frames.drain_into(buf) {
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = this.frames.error.take() {
                return Poll::Ready(Err(e));
            }
            // One read buffer per worker thread (workers are single-threaded),
            // not one per connection.
            let got = SCRATCH.with_borrow_mut(|scratch| {
                scratch.resize(this.chunk, 0);
                let mut rb = ReadBuf::new(&mut scratch[..]);
                match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n > 0 {
                            this.shared.count(n);
                            if let Err(e) = this.frames.take(&scratch[..n]) {
                                // What came before the bad bytes goes first.
                                this.frames.error = Some(e);
                            }
                        }
                        Poll::Ready(Ok(n))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            });
            if ready!(got)? == 0 {
                // EOF.
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl AsyncWrite for WireStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![first];
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
        f
    }

    fn deflate(text: &[u8]) -> Vec<u8> {
        let mut c = flate2::Compress::new(flate2::Compression::fast(), false);
        let mut out = Vec::with_capacity(text.len() + 64);
        c.compress_vec(text, &mut out, flate2::FlushCompress::Sync)
            .unwrap();
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
        out
    }

    /// Runs `input` through in chunks of `step` bytes; what comes out.
    fn run(input: &[u8], step: usize) -> (Vec<u8>, u64) {
        let shared = Rc::new(WireShared::default());
        let mut f = Frames::new(shared.clone());
        for c in input.chunks(step) {
            f.take(c).unwrap();
        }
        let out = f.out[f.out_at..].to_vec();
        (out, shared.negotiated())
    }

    #[test]
    fn compressed_frames_come_out_plain_whatever_the_chunking() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n";
        let big = "{\"type\":\"metrics\",\"x\":\"".to_string() + &"abc".repeat(30_000) + "\"}";
        let mut input = head.to_vec();
        input.extend(frame(0xc1, &deflate(br#"{"type":"welcome"}"#)));
        input.extend(frame(0x81, br#"{"type":"subscribed"}"#));
        input.extend(frame(0x89, b"ping"));
        input.extend(frame(0xc1, &deflate(big.as_bytes())));
        input.extend(frame(0x81, b""));
        let mut want = head.to_vec();
        want.extend(frame(0x81, br#"{"type":"welcome"}"#));
        want.extend(frame(0x81, br#"{"type":"subscribed"}"#));
        want.extend(frame(0x89, b"ping"));
        want.extend(frame(0x81, big.as_bytes()));
        want.extend(frame(0x81, b""));
        for step in [1, 2, 3, 7, 100, 4096, input.len()] {
            let (out, negotiated) = run(&input, step);
            assert!(out == want, "chunks of {step}");
            assert_eq!(negotiated, 1);
        }
    }

    #[test]
    fn a_refused_handshake_and_its_body_go_through_unchanged() {
        // A 503 whose head and JSON body come in one read: the body's `{`
        // would read as a frame header with RSV1 and opcode 0xB.
        let input = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 42\r\n\r\n\
            {\"type\":\"error\",\"code\":\"unavailable\"}";
        for step in [1, 7, input.len()] {
            let (out, negotiated) = run(input, step);
            assert_eq!(out, input.to_vec(), "chunks of {step}");
            assert_eq!(negotiated, 0);
        }
    }

    #[test]
    fn a_plain_handshake_is_not_counted_as_deflate_and_bad_frames_fail() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        let mut input = head.to_vec();
        input.extend(frame(0x81, b"hi"));
        let (out, negotiated) = run(&input, 5);
        assert_eq!(out, input);
        assert_eq!(negotiated, 0);

        let mut f = Frames::new(Rc::new(WireShared::default()));
        f.take(head).unwrap();
        // RSV1 on a control frame, and on a non-final frame.
        assert!(f.take(&frame(0xc9, b"x")).is_err());
        let mut f = Frames::new(Rc::new(WireShared::default()));
        f.take(head).unwrap();
        assert!(f.take(&frame(0x41, b"x")).is_err());
        // RSV1 on a continuation frame.
        let mut f = Frames::new(Rc::new(WireShared::default()));
        f.take(head).unwrap();
        assert!(f.take(&frame(0xc0, b"x")).is_err());
        // Not DEFLATE.
        let mut f = Frames::new(Rc::new(WireShared::default()));
        f.take(head).unwrap();
        assert!(f.take(&frame(0xc1, &[0xff; 8])).is_err());
    }
}

//! The reader half of a WebSocket: frames decoded from the socket,
//! continuations put together up to the frame limit.
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

/// A whole message from the client.
#[derive(Debug)]
pub enum Message {
    Text(ByteString),
    /// Binary messages are refused; their content is not kept.
    Binary,
    Ping(Bytes),
    Pong,
    Close(Option<CloseReason>),
}

/// Bytes read per `read(2)`: a client's ops are small.
const READ_CHUNK: usize = 4096;

pub struct Inbound {
    buf: BytesMut,
    codec: Codec,
    max: usize,
    /// A fragmented message being put together: text or binary, its parts.
    partial: Option<(bool, BytesMut)>,
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
            codec: Codec::new().max_size(max),
            max,
            partial: None,
            done: false,
        }
    }

    /// The next message; None when the client is gone.
    pub async fn recv(&mut self, io: &TcpStream) -> Option<Result<Message, ProtocolError>> {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => {
                    if let Some(msg) = self.assemble(frame) {
                        self.shrink();
                        return Some(msg);
                    }
                    continue;
                }
                Ok(None) => self.shrink(),
                Err(e) => return Some(Err(e)),
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
                return Some(Err(ProtocolError::Io(e)));
            }
            match read_some(io, &mut self.buf) {
                Ok(0) => self.done = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(ProtocolError::Io(e)));
                }
            }
        }
    }

    /// Frees the buffer once everything in it is decoded.
    fn shrink(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

    /// A whole message from a frame, or None while a fragmented one is
    /// still coming.
    fn assemble(&mut self, frame: Frame) -> Option<Result<Message, ProtocolError>> {
        match frame {
            Frame::Text(b) => Some(text(b)),
            Frame::Binary(_) => Some(Ok(Message::Binary)),
            Frame::Ping(b) => Some(Ok(Message::Ping(b))),
            Frame::Pong(_) => Some(Ok(Message::Pong)),
            Frame::Close(r) => Some(Ok(Message::Close(r))),
            Frame::Continuation(item) => {
                let (first, part, last) = match item {
                    Item::FirstText(b) => (Some(true), b, false),
                    Item::FirstBinary(b) => (Some(false), b, false),
                    Item::Continue(b) => (None, b, false),
                    Item::Last(b) => (None, b, true),
                };
                match (first, self.partial.as_mut()) {
                    (Some(is_text), None) => {
                        self.partial = Some((is_text, BytesMut::from(&part[..])))
                    }
                    (None, Some((_, acc))) => acc.extend_from_slice(&part),
                    (Some(_), Some(_)) => {
                        self.partial = None;
                        return Some(Err(ProtocolError::ContinuationStarted));
                    }
                    (None, None) => return Some(Err(ProtocolError::ContinuationNotStarted)),
                }
                if self
                    .partial
                    .as_ref()
                    .is_some_and(|(_, acc)| acc.len() > self.max)
                {
                    self.partial = None;
                    return Some(Err(ProtocolError::Overflow));
                }
                if !last {
                    return None;
                }
                let (is_text, acc) = self.partial.take()?;
                Some(if is_text {
                    text(acc.freeze())
                } else {
                    Ok(Message::Binary)
                })
            }
        }
    }
}

fn text(b: Bytes) -> Result<Message, ProtocolError> {
    ByteString::try_from(b)
        .map(Message::Text)
        .map_err(|e| ProtocolError::Io(io::Error::new(io::ErrorKind::InvalidData, e)))
}

/// One non-blocking read appended to `buf`. A plain function, so the
/// stack buffer never becomes part of the connection's future.
fn read_some(io: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    let mut chunk = [0u8; READ_CHUNK];
    let n = io.try_read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

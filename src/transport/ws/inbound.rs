//! The reader half of a WebSocket: frames decoded from the request
//! payload, continuations put together up to the frame limit.
//!
//! The state lives in [`Inbound`], not in the future of [`Inbound::recv`],
//! so `recv` can lose a `select!` race without losing bytes.

use std::io;

use actix_http::ws::{Codec, Frame, Item, ProtocolError};
use actix_web::dev::Payload;
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::StreamExt;
use tokio_util::codec::Decoder;

pub use actix_ws::AggregatedMessage as Message;

pub struct Inbound {
    payload: Payload,
    buf: BytesMut,
    codec: Codec,
    max: usize,
    /// A fragmented message being put together: text or binary, its parts.
    partial: Option<(bool, BytesMut)>,
    /// The payload ended (or failed): only what is buffered is left.
    done: bool,
}

impl Inbound {
    /// Reads `payload`, refusing frames and messages over `max` bytes.
    pub fn new(payload: Payload, max: usize) -> Inbound {
        Inbound {
            payload,
            buf: BytesMut::new(),
            codec: Codec::new().max_size(max),
            max,
            partial: None,
            done: false,
        }
    }

    /// The next message; None when the client is gone.
    pub async fn recv(&mut self) -> Option<Result<Message, ProtocolError>> {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => {
                    if let Some(msg) = self.assemble(frame) {
                        return Some(msg);
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            if self.done {
                return None;
            }
            match self.payload.next().await {
                Some(Ok(bytes)) => self.buf.extend_from_slice(&bytes),
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(ProtocolError::Io(io::Error::other(e))));
                }
                None => self.done = true,
            }
        }
    }

    /// A whole message from a frame, or None while a fragmented one is
    /// still coming.
    fn assemble(&mut self, frame: Frame) -> Option<Result<Message, ProtocolError>> {
        match frame {
            Frame::Text(b) => Some(text(b)),
            Frame::Binary(b) => Some(Ok(Message::Binary(b))),
            Frame::Ping(b) => Some(Ok(Message::Ping(b))),
            Frame::Pong(b) => Some(Ok(Message::Pong(b))),
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
                    Ok(Message::Binary(acc.freeze()))
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

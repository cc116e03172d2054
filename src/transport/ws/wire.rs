//! The WebSocket's socket as the hub's [`Wire`]: a metrics frame written
//! by the fan-out in one `send` of bytes every subscriber shares. Server
//! frames are not masked, so a text frame's encoding depends only on its
//! payload: it is built once per fan-out, by whichever subscriber's
//! wire needs it first. A connection that negotiated permessage-deflate
//! writes the frame's compressed form instead, built once per frame and
//! cached on it (see [`super::deflate`]).

use std::io;
use std::sync::OnceLock;

use bytes::Bytes;
use tokio::net::TcpStream;

use super::deflate;
use crate::hub::{Sent, Wire};
use crate::protocol::Frame;

/// The connection's socket, shared by its own task and the hub's fan-out.
pub struct WsWire {
    io: TcpStream,
    /// The connection negotiated permessage-deflate.
    deflate: bool,
}

impl WsWire {
    pub fn new(io: TcpStream, deflate: bool) -> WsWire {
        WsWire { io, deflate }
    }

    pub fn io(&self) -> &TcpStream {
        &self.io
    }
}

impl Wire for WsWire {
    fn try_send(&self, frame: &Frame, encoded: &OnceLock<Bytes>) -> Sent {
        // Framed once per fan-out (compressed once per frame): every
        // subscriber's write is one `send` of the same bytes.
        let deflated = self.deflate.then(|| deflate::deflated(frame)).flatten();
        let bytes = match deflated {
            Some(bytes) => bytes,
            None => encoded.get_or_init(|| encode_text(frame.as_bytes())),
        };
        match self.io.try_write(bytes) {
            Ok(n) if n == bytes.len() => Sent::All,
            Ok(n) => Sent::Part(bytes.slice(n..)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Sent::Full,
            Err(_) => Sent::Failed,
        }
    }
}

/// A whole unmasked, final text frame: header and payload in one buffer.
fn encode_text(payload: &[u8]) -> Bytes {
    deflate::text_frame(payload, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_http::ws::{Codec, Message};
    use bytes::BytesMut;
    use tokio_util::codec::Encoder;

    #[test]
    fn a_whole_frame_is_what_the_codec_writes() {
        // Every header length: 7-bit, 16-bit and 64-bit payload sizes.
        for len in [0, 1, 125, 126, 700, 65535, 65536, 100_000] {
            let payload = "y".repeat(len);
            let mut buf = BytesMut::new();
            Codec::new()
                .encode(Message::Text(payload.clone().into()), &mut buf)
                .unwrap();
            assert_eq!(&encode_text(payload.as_bytes())[..], &buf[..], "len {len}");
        }
    }
}

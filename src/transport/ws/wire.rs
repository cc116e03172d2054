//! The WebSocket's socket as the hub's [`Wire`]: a metrics frame written
//! by the fan-out in one `send` of bytes every subscriber shares. Server
//! frames are not masked, so a text frame's encoding depends only on its
//! payload: it is built once per fan-out, by whichever subscriber's
//! wire needs it first.

use std::io;
use std::sync::OnceLock;

use actix_http::ws::{OpCode, Parser};
use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;

use crate::hub::{Sent, Wire};
use crate::protocol::Frame;

/// The connection's socket, shared by its own task and the hub's fan-out.
pub struct WsWire(pub TcpStream);

impl WsWire {
    pub fn io(&self) -> &TcpStream {
        &self.0
    }
}

impl Wire for WsWire {
    fn try_send(&self, frame: &Frame, encoded: &OnceLock<Bytes>) -> Sent {
        // Framed once per fan-out: every subscriber's write is one `send`
        // of the same bytes.
        let bytes = encoded.get_or_init(|| encode_text(frame.as_bytes()));
        match self.0.try_write(bytes) {
            Ok(n) if n == bytes.len() => Sent::All,
            Ok(n) => Sent::Part(bytes.slice(n..)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Sent::Full,
            Err(_) => Sent::Failed,
        }
    }
}

/// A whole unmasked, final text frame: header and payload in one buffer.
fn encode_text(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    Parser::write_message(&mut out, payload, OpCode::Text, true, false);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_http::ws::{Codec, Message};
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

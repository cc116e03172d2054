//! The WebSocket's socket as the hub's [`Wire`]: a metrics frame written
//! by the fan-out in one `send` of bytes every subscriber shares. Server
//! frames are not masked, so a text frame's encoding depends only on its
//! payload: it is built once per fan-out, by whichever subscriber's
//! wire needs it first.

use std::io;
use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::net::TcpStream;

use crate::hub::{Sent, Wire};
use crate::protocol::Frame;

/// The header of an unmasked, final text frame of `len` bytes, and its
/// length (RFC 6455 §5.2).
pub fn text_header(len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x81; // FIN + text
    if len < 126 {
        h[1] = len as u8;
        (h, 2)
    } else if len <= u16::MAX as usize {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

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

/// A whole unmasked text frame: header and payload in one buffer.
fn encode_text(payload: &[u8]) -> Bytes {
    let (header, hlen) = text_header(payload.len());
    let mut out = BytesMut::with_capacity(hlen + payload.len());
    out.put_slice(&header[..hlen]);
    out.put_slice(payload);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_http::ws::{Codec, Message};
    use tokio_util::codec::Encoder;

    #[test]
    fn headers_match_the_codec() {
        for len in [0, 1, 125, 126, 700, 65535, 65536, 100_000] {
            let payload = "x".repeat(len);
            let mut buf = BytesMut::new();
            Codec::new()
                .encode(Message::Text(payload.clone().into()), &mut buf)
                .unwrap();
            let (h, n) = text_header(len);
            assert_eq!(&buf[..n], &h[..n], "len {len}");
            assert_eq!(buf.len(), n + len);
        }
    }

    #[test]
    fn a_whole_frame_is_what_the_codec_writes() {
        let payload = "y".repeat(700);
        let mut buf = BytesMut::new();
        Codec::new()
            .encode(Message::Text(payload.clone().into()), &mut buf)
            .unwrap();
        assert_eq!(&encode_text(payload.as_bytes())[..], &buf[..]);
    }
}

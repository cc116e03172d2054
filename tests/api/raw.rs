//! A WebSocket client on a bare TCP socket, for what a well-behaved
//! library will not send: bad headers, huge declared lengths, reserved
//! bits, floods of control frames, fragments.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// A masked client frame with first byte `b0` (FIN, RSV, opcode).
pub fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
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
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Only the header of a masked frame declaring `len` bytes.
pub fn header(b0: u8, len: u64) -> Vec<u8> {
    let mut out = vec![b0, 0x80 | 127];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[1, 2, 3, 4]);
    out
}

/// What the server sent.
#[derive(Debug, PartialEq)]
pub enum ServerFrame {
    Text(serde_json::Value),
    Close(u16, String),
    Ping,
    Pong,
}

pub struct RawWs {
    pub sock: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    /// Upgrades with `extra` header lines (each ending in `\r\n`);
    /// panics unless the answer is `101`.
    pub async fn connect(app: &TestApp, extra: &str) -> RawWs {
        Self::connect_to(app.addr, extra).await
    }

    pub async fn connect_to(addr: std::net::SocketAddr, extra: &str) -> RawWs {
        let mut sock = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        );
        sock.write_all(req.as_bytes()).await.unwrap();
        let mut ws = RawWs {
            sock,
            buf: Vec::new(),
        };
        let head_end = loop {
            if let Some(i) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(ws.fill().await, "closed during the handshake");
        };
        let head = String::from_utf8_lossy(&ws.buf[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        ws.buf.drain(..head_end);
        ws
    }

    /// Connects with a header token.
    pub async fn authed(app: &TestApp, token: &str) -> RawWs {
        let mut ws = Self::connect(app, &format!("Authorization: Bearer {token}\r\n")).await;
        match ws.next().await {
            Some(ServerFrame::Text(w)) => assert_eq!(w["type"], "welcome", "{w}"),
            other => panic!("no welcome: {other:?}"),
        }
        ws
    }

    /// Writes bytes; false once the server has gone.
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        self.sock.write_all(bytes).await.is_ok()
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(WAIT, self.sock.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!("nothing from the server within {WAIT:?}"),
        }
    }

    /// The next frame from the server; None when the connection ended.
    pub async fn next(&mut self) -> Option<ServerFrame> {
        loop {
            if let Some((f, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return Some(f);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Reads until the server's close frame: its code, and the text frames
    /// before it. Panics if the connection ends without one.
    pub async fn expect_close(&mut self) -> (u16, Vec<serde_json::Value>) {
        let mut texts = Vec::new();
        loop {
            match self.next().await {
                Some(ServerFrame::Text(v)) => texts.push(v),
                Some(ServerFrame::Close(code, _)) => return (code, texts),
                Some(_) => {}
                None => panic!("ended without a close frame; got {texts:?}"),
            }
        }
    }
}

/// One unmasked server frame from the front of `buf`, and its length.
fn parse(buf: &[u8]) -> Option<(ServerFrame, usize)> {
    let [b0, b1, ..] = *buf else { return None };
    let (len, mut at) = match b1 & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?;
    at += len;
    let f = match b0 & 0x0f {
        0x1 => ServerFrame::Text(serde_json::from_slice(payload).expect("JSON text frame")),
        0x8 => {
            let code = payload
                .get(..2)
                .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
            ServerFrame::Close(
                code,
                String::from_utf8_lossy(payload.get(2..).unwrap_or_default()).into_owned(),
            )
        }
        0x9 => ServerFrame::Ping,
        0xa => ServerFrame::Pong,
        op => panic!("unexpected opcode {op}"),
    };
    Some((f, at))
}

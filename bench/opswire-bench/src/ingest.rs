//! What the generator's publishers share (the log publisher of
//! `--log-rate`, the synthetic fleet of `--fleet-hosts`): an ingest
//! connection, and reading the server's answers to `publish` ops.

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::frame::{self, Kind};

pub type Ingest = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket to `url` with `token` as bearer (none: dev mode).
pub async fn connect(url: &str, token: Option<&str>) -> Result<Ingest, String> {
    let mut req = url
        .into_client_request()
        .map_err(|e| format!("request: {e}"))?;
    if let Some(t) = token {
        let v = format!("Bearer {t}")
            .parse()
            .map_err(|_| "the token is not a valid header value".to_owned())?;
        req.headers_mut().insert("authorization", v);
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| format!("connect: {e}"))
}

/// A server frame as an answer to a `publish`: `Some(Ok)` for
/// `published`, `Some(Err(code))` for an error frame, `None` otherwise.
pub fn answer(text: &str) -> Option<Result<(), String>> {
    match frame::head(text).map(|h| h.kind) {
        Some(Kind::Error) => Some(Err(frame::error_code(text))),
        Some(Kind::Other) if text.contains("\"published\"") => Some(Ok(())),
        _ => None,
    }
}

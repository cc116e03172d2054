//! Sources that arrive over HTTP:
//!
//! * [`alertmanager`] — Alertmanager's webhook (v4) → alert frames, routed
//!   to teams by label; silences through Alertmanager's API v2.
//! * [`logs`] — `POST /api/v1/logs` (JSON lines or array) and OTLP/HTTP
//!   `POST /v1/logs` (protobuf or JSON) → log frames; opswire's own access log.
//!
//! Every endpoint authenticates with `Authorization: Bearer`, answers a bad
//! request with 400 and a message naming what is wrong, and counts what it
//! accepted and refused in `opswire_ingest_total` / `opswire_ingest_rejected_total`.

pub mod alertmanager;
pub mod logs;

use actix_web::HttpRequest;

use crate::app::AppState;
use crate::auth::{Principal, Scope};
use crate::hub::TeamId;
use crate::protocol::ErrorCode;

/// An ingest request refused: the HTTP answer and the metric reason.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: ErrorCode,
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            reason,
            message: message.into(),
        }
    }

    pub fn bad(message: impl Into<String>) -> Refusal {
        Refusal::new(ErrorCode::BadRequest, "invalid", message)
    }

    /// Nothing (more) could be published: 503 with `Retry-After`, so the
    /// sender retries (what was published before is de-duplicated for
    /// alerts, and sent again for logs: at least once).
    pub fn unavailable(e: crate::hub::HubError) -> Refusal {
        match e {
            // Retrying the same request cannot help: 413, not 503.
            crate::hub::HubError::TooLarge(m) => Refusal::new(ErrorCode::TooLarge, "too_large", m),
            other => Refusal::new(ErrorCode::Unavailable, "unavailable", other.to_string()),
        }
    }

    pub fn respond(&self, state: &AppState, source: &str) -> actix_web::HttpResponse {
        state
            .metrics
            .ingest_rejected
            .with_label_values(&[source, self.reason])
            .inc();
        crate::request::http_error(self.code, self.message.clone())
    }
}

/// Reads a request body of at most `ingest.max_body_bytes` (413
/// `too_large` beyond) within `ingest.body_timeout_s` (408 `timeout`: a
/// body that trickles in or never comes holds no connection for longer),
/// with the same JSON error body as every other refusal.
pub async fn read_body(
    state: &AppState,
    req: &HttpRequest,
    payload: actix_web::web::Payload,
) -> Result<bytes::Bytes, Refusal> {
    let cfg = &state.config.ingest;
    let timeout = std::time::Duration::from_secs(cfg.body_timeout_s);
    match tokio::time::timeout(timeout, read_limited(payload, cfg.max_body_bytes)).await {
        Ok(body) => decode_body(req, body?, cfg.max_body_bytes),
        Err(_) => Err(Refusal::new(
            ErrorCode::Timeout,
            "timeout",
            format!(
                "the body did not arrive within {} s (ingest.body_timeout_s)",
                cfg.body_timeout_s
            ),
        )),
    }
}

async fn read_limited(
    mut payload: actix_web::web::Payload,
    limit: usize,
) -> Result<bytes::BytesMut, Refusal> {
    use futures_util::StreamExt;
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| Refusal::bad(format!("reading the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                "too_large",
                format!("body larger than {limit} bytes (ingest.max_body_bytes)"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Undoes the body's `Content-Encoding` (identity or gzip), within `limit`.
fn decode_body(
    req: &HttpRequest,
    body: bytes::BytesMut,
    limit: usize,
) -> Result<bytes::Bytes, Refusal> {
    let encoding = req
        .headers()
        .get(actix_web::http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .to_ascii_lowercase();
    match encoding.as_str() {
        "identity" | "" => Ok(body.freeze()),
        // The Collector's otlp_http exporter compresses with gzip by default.
        "gzip" | "x-gzip" => {
            use std::io::Read;
            let mut out = Vec::new();
            let mut decoder = flate2::read::GzDecoder::new(&body[..]).take(limit as u64 + 1);
            decoder
                .read_to_end(&mut out)
                .map_err(|e| Refusal::bad(format!("gzip body: {e}")))?;
            if out.len() > limit {
                return Err(Refusal::new(
                    ErrorCode::TooLarge,
                    "too_large",
                    format!("decompressed body larger than {limit} bytes (ingest.max_body_bytes)"),
                ));
            }
            Ok(bytes::Bytes::from(out))
        }
        other => Err(Refusal::new(
            ErrorCode::BadRequest,
            "invalid",
            format!("unsupported Content-Encoding `{other}` (identity or gzip)"),
        )),
    }
}

/// The principal of an ingest request: a bearer token with scope `ingest`
/// (anonymous in dev mode).
pub fn ingest_principal(state: &AppState, req: &HttpRequest) -> Result<Principal, Refusal> {
    let p = match crate::request::principal_from_request(state, req, None) {
        Ok(Some(p)) => p,
        Ok(None) => {
            return Err(Refusal::new(
                ErrorCode::Unauthenticated,
                "unauthenticated",
                "missing token (Authorization: Bearer <ingest token>)",
            ))
        }
        Err(e) => {
            return Err(Refusal::new(
                ErrorCode::Unauthenticated,
                "unauthenticated",
                e.to_string(),
            ))
        }
    };
    if p.scope != Scope::Ingest {
        return Err(Refusal::new(
            ErrorCode::Forbidden,
            "forbidden",
            "this endpoint needs a token with scope `ingest`",
        ));
    }
    Ok(p)
}

/// The team a request writes to: `wanted` (a `?team=` or a record's
/// attribute) if given, else the token's only team.
pub fn target_team(
    state: &AppState,
    p: &Principal,
    wanted: Option<&str>,
) -> Result<TeamId, Refusal> {
    let name = match wanted {
        Some(t) => t.to_owned(),
        None => {
            let visible = p.visible_teams(state.hub.team_names());
            match visible.as_slice() {
                [one] => (*one).to_owned(),
                _ => {
                                        return Err(Refusal::bad(
                        "the token covers several teams: name one (?team= for /api/v1/logs, the team resource attribute for OTLP)",
                    ))
                }
            }
        }
    };
    if !p.may_access(&name) {
        return Err(Refusal::new(
            ErrorCode::Forbidden,
            "forbidden",
            format!("the token may not write to team `{name}`"),
        ));
    }
    state.hub.team_id(&name).ok_or_else(|| {
        Refusal::new(
            ErrorCode::NotFound,
            "unknown_team",
            format!("unknown team `{name}`"),
        )
    })
}

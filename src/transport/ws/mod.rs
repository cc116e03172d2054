//! The WebSocket transport: the handshake, and the connection on its
//! socket.
//!
//! The handshake is an ordinary actix-web request (`GET /ws`: routing,
//! middleware, the HTTP span, admission, the header token, origin). What
//! it answers with is handed to [`upgrade`], which runs outside
//! actix-http's HTTP/1 dispatcher: it writes the `101` and runs the
//! [`connection`] on the bare socket, so a connection holds no HTTP
//! buffers and no dispatcher, and the hub can write metrics frames to the
//! socket directly. What the client's frames mean is the session layer's
//! (`crate::session`).

pub mod connection;
pub mod deflate;
pub mod inbound;
mod outbound;
pub mod upgrade;
mod wire;

use actix_web::body::BoxBody;
use actix_web::http::header;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use bytes::BytesMut;
use tokio::net::TcpStream;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::app::AppState;
use crate::protocol::{ErrorCode, SUBPROTOCOL};
use crate::request::{http_error, origin_allowed};
use crate::session::{admission, session_name, Session};

use connection::Connection;

/// `GET /ws`: checks admission, the `Authorization` header and origin,
/// then answers `101` with the prepared connection attached, for
/// [`upgrade`] to run on the socket.
pub async fn handler(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let name = session_name();
    // Upgrade + header auth. Runs inside the HTTP request span (which
    // continues a client `traceparent`); every later span of this
    // connection is parented here, so one trace tells its whole story
    // without a span open for the connection's lifetime.
    let handshake = tracing::info_span!(
        "ws.handshake",
        otel.name = "ws handshake",
        "network.protocol.name" = "websocket",
        "opswire.session_id" = %name,
        "opswire.auth" = Empty,
        "opswire.sub" = Empty,
        "opswire.teams" = Empty,
        "opswire.result" = Empty,
    );
    let _entered = handshake.enter();
    let refuse = |r: admission::Refusal, result: &str| {
        handshake.record("opswire.result", r.result.unwrap_or(result));
        Ok(r.response())
    };
    if let Err(r) = admission::check_open(&state) {
        return refuse(r, "draining");
    }
    if req.version() != actix_web::http::Version::HTTP_11 {
        // RFC 6455 §4.1: the opening handshake is HTTP/1.1 (or later).
        handshake.record("opswire.result", "rejected_handshake");
        return Ok(http_error(
            ErrorCode::BadRequest,
            "a WebSocket upgrade needs HTTP/1.1",
        ));
    }
    let header_auth = req.headers().contains_key(header::AUTHORIZATION);
    let principal = match admission::principal(&state, &req, None, false) {
        Ok(p) => p,
        Err(r) => {
            handshake.record("opswire.auth", "header");
            return refuse(r, "rejected_auth");
        }
    };
    let guard = match admission::slot(&state, principal.is_some()) {
        Ok(g) => g,
        Err(r) => return refuse(r, "rejected_limit"),
    };
    record_principal(&handshake, &state, principal.as_ref(), header_auth);
    let origin_ok = origin_allowed(&req, &state.config.websocket.allowed_origins);
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let deflate_on = state.config.websocket.permessage_deflate;
    let (mut response, deflate) = match upgrade_response(&req, deflate_on) {
        Ok(r) => r,
        Err((result, message)) => {
            handshake.record("opswire.result", result);
            return Ok(http_error(ErrorCode::BadRequest, message));
        }
    };
    let outcome = if origin_ok {
        "accepted"
    } else {
        "rejected_origin"
    };
    admission::count(&state, outcome);
    handshake.record("opswire.result", outcome);
    let mut session = Session::new(state.into_inner(), name, principal, guard);
    session.parent = handshake.context();
    let conn = Connection::new(session);
    tracing::debug!(session = %conn.name(), user_agent, "websocket connected");
    let mut response = HttpResponse::from(response.message_body(BoxBody::new(()))?);
    response.extensions_mut().insert(Accepted {
        conn,
        origin_ok,
        deflate,
    });
    Ok(response)
}

/// A connection the `/ws` handler accepted, riding on its `101` response
/// to [`upgrade`], which runs it on the socket.
pub struct Accepted {
    conn: Connection,
    origin_ok: bool,
    /// permessage-deflate was negotiated.
    deflate: bool,
}

impl Accepted {
    /// Runs the connection on `io` until it ends; `buffered` is what the
    /// client sent after its handshake, already read.
    pub async fn run(self, io: TcpStream, buffered: BytesMut) {
        self.conn
            .run(io, buffered, self.origin_ok, self.deflate)
            .await
    }
}

/// The handshake span's record of who connects: how (header, anonymous,
/// or an `auth` op to come), as whom, with which teams.
fn record_principal(
    span: &tracing::Span,
    state: &AppState,
    principal: Option<&crate::auth::Principal>,
    header_auth: bool,
) {
    span.record(
        "opswire.auth",
        match (principal, header_auth) {
            (Some(_), true) => "header",
            (Some(_), false) => "anonymous",
            (None, _) => "first_frame",
        },
    );
    if let Some(p) = principal {
        span.record("opswire.sub", p.sub.as_str());
        span.record(
            "opswire.teams",
            p.visible_teams(state.hub.team_names()).join(","),
        );
    }
}

/// The `101` for a proper WebSocket upgrade (with opswire's subprotocol
/// when offered, and permessage-deflate when offered and `deflate_on`)
/// and whether deflate was negotiated, or what was wrong: the span's
/// result and the message.
fn upgrade_response(
    req: &HttpRequest,
    deflate_on: bool,
) -> Result<(actix_http::ResponseBuilder, bool), (&'static str, String)> {
    let mut response = actix_http::ws::handshake(req.head())
        .map_err(|e| ("rejected_handshake", format!("websocket handshake: {e}")))?;
    if req.extensions().get::<upgrade::UpgradePath>().is_none() {
        // Valid for `ws::handshake`, yet not an upgrade to HTTP/1's parser
        // (say `Upgrade: websocket, foo`): no socket to take over.
        return Err((
            "rejected_upgrade",
            "a WebSocket upgrade needs `Connection: Upgrade` and `Upgrade: websocket`".into(),
        ));
    }
    if offers_subprotocol(req) {
        response.insert_header((header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL));
    }
    let offers = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .filter_map(|v| v.to_str().ok());
    let answer = deflate_on.then(|| deflate::negotiate(offers)).flatten();
    if let Some(answer) = answer {
        response.insert_header((header::SEC_WEBSOCKET_EXTENSIONS, answer));
    }
    Ok((response, answer.is_some()))
}

/// Whether the client offered opswire's subprotocol (then it is echoed).
fn offers_subprotocol(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL)
}

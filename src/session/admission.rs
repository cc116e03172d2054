//! Who may open a connection (WebSocket or SSE): not while the server
//! drains, not without a valid token where one is needed, and only while
//! there are slots: `limits.max_connections` in all, of which at most
//! `limits.max_unauthenticated` for clients still to authenticate.
//! Refusals come as the HTTP answer to give, before any upgrade.

use actix_web::{HttpRequest, HttpResponse};

use crate::app::{AppState, ConnectionGuard};
use crate::auth::Principal;
use crate::protocol::ErrorCode;
use crate::request::{http_error, principal_from_request};

/// A refused connection: what to answer, and the `result` label of
/// `websocket_connections_total` (None: not counted).
#[derive(Debug)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    pub result: Option<&'static str>,
}

impl Refusal {
    /// The HTTP answer (the same JSON body as an `error` frame).
    pub fn response(&self) -> HttpResponse {
        http_error(self.code, self.message.clone())
    }
}

/// Refuses everything while the server drains.
pub fn check_open(state: &AppState) -> Result<(), Refusal> {
    if state.is_draining() {
        return Err(Refusal {
            code: ErrorCode::Unavailable,
            message: "server is shutting down".into(),
            result: None,
        });
    }
    Ok(())
}

/// The request's principal: `Authorization: Bearer`, `query_token`
/// (`?access_token=`), or anonymous in dev mode. A bad token is refused;
/// no token at all only when `required` (a WebSocket may still send an
/// `auth` op).
pub fn principal(
    state: &AppState,
    req: &HttpRequest,
    query_token: Option<&str>,
    required: bool,
) -> Result<Option<Principal>, Refusal> {
    let refused = |message: String| {
        state
            .metrics
            .connections_total
            .with_label_values(&["rejected_auth"])
            .inc();
        Refusal {
            code: ErrorCode::Unauthenticated,
            message,
            result: Some("rejected_auth"),
        }
    };
    match principal_from_request(state, req, query_token) {
        Ok(Some(p)) => Ok(Some(p)),
        Ok(None) if required => Err(refused(
            "missing token (Authorization: Bearer, or ?access_token=)".into(),
        )),
        Ok(None) => Ok(None),
        Err(e) => Err(refused(e.to_string())),
    }
}

/// A slot for a connection: one of those kept for clients still to
/// authenticate when it has no principal yet, so they can never crowd
/// out authenticated ones.
pub fn slot(state: &AppState, authenticated: bool) -> Result<ConnectionGuard, Refusal> {
    let admitted = if authenticated {
        state.connections.try_acquire()
    } else {
        state.connections.try_acquire_unauthenticated()
    };
    admitted.map_err(|refused| {
        state
            .metrics
            .connections_total
            .with_label_values(&["rejected_limit"])
            .inc();
        Refusal {
            code: ErrorCode::Unavailable,
            message: refused.message(),
            result: Some("rejected_limit"),
        }
    })
}

/// Counts a connection's outcome (`accepted`, `rejected_origin`).
pub fn count(state: &AppState, result: &str) {
    state
        .metrics
        .connections_total
        .with_label_values(&[result])
        .inc();
}

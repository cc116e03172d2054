//! What every HTTP handler needs from a request, whatever it serves
//! (transports, ingest, the API): the principal it authenticates as, the
//! origin check, the JSON error answer every refusal shares, and the
//! content coding a compressible response is sent in ([`encoding`]).

pub mod encoding;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

use crate::app::AppState;
use crate::auth::{bearer_token, AuthError, Principal};
use crate::protocol::{to_frame, ErrorCode, ErrorFrame};

/// An HTTP error answer with the same body shape as an `error` frame.
pub fn http_error(code: ErrorCode, message: impl Into<String>) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(code.http_status())
        .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    let mut resp = HttpResponse::build(status);
    if code == ErrorCode::Unauthenticated {
        resp.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
    }
    if code == ErrorCode::Unavailable {
        resp.insert_header((header::RETRY_AFTER, "5"));
    }
    resp.content_type("application/json")
        .body(to_frame(&ErrorFrame::new(None, code, message)).into_bytes())
}

/// Authenticates an HTTP request from `Authorization: Bearer`, or from
/// `query_token` (`?access_token=`, for EventSource), or anonymously in
/// dev mode. `Ok(None)` means no credentials at all outside dev mode.
pub fn principal_from_request(
    state: &AppState,
    req: &HttpRequest,
    query_token: Option<&str>,
) -> Result<Option<Principal>, AuthError> {
    if let Some(h) = req.headers().get(header::AUTHORIZATION) {
        let token = h.to_str().ok().and_then(bearer_token).ok_or_else(|| {
            AuthError::Invalid("Authorization header is not `Bearer <token>`".into())
        })?;
        return state.auth.verify(token).map(Some);
    }
    if let Some(t) = query_token {
        return state.auth.verify(t).map(Some);
    }
    Ok(state.auth.anonymous())
}

/// Whether the request's `Origin` may connect: no `Origin` (not a
/// browser), same origin as the `Host`, or listed in `allowed`.
pub fn origin_allowed(req: &HttpRequest, allowed: &[String]) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or_default();
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

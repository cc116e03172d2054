//! HTTP routes and the request metrics middleware.

use std::time::Instant;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use tracing::Instrument;

use crate::app::AppState;
use crate::protocol::{ErrorCode, Level, LogRecord};
use crate::request::{http_error, principal_from_request};
use crate::transport::{sse, ws};

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    // A query string that does not parse (say `team` twice) gets the
    // JSON error body every other refusal has.
    cfg.app_data(web::QueryConfig::default().error_handler(|e, _| {
        let res = http_error(ErrorCode::BadRequest, format!("query string: {e}"));
        actix_web::error::InternalError::from_response(e, res).into()
    }));
    crate::web::routes(cfg);
    cfg.route("/api/v1/info", web::get().to(info))
        .route("/ws", web::get().to(ws::handler))
        .route("/sse", web::get().to(sse::handler))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .route("/api/v1/teams", web::get().to(teams))
        .route(
            "/api/v1/alerts/alertmanager",
            web::post().to(crate::ingest::alertmanager::webhook),
        )
        .route("/api/v1/logs", web::post().to(crate::ingest::logs::json))
        .route("/v1/logs", web::post().to(crate::ingest::logs::otlp));
}

/// Counts requests and their durations by route pattern (never the raw
/// path, which would make label values unbounded).
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody, BoxBody>>, actix_web::Error> {
    let started = Instant::now();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    if let Some(s) = &state {
        if let Err(msg) = dev_mode_guard(s, &req).and_then(|()| origin_guard(s, &req)) {
            let res = crate::request::http_error(ErrorCode::Forbidden, msg);
            return Ok(req.into_response(res).map_into_right_body());
        }
    }
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let span = tracing::info_span!(
        "HTTP request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        "http.request.method" = %method,
        "http.route" = %route,
        "url.path" = req.path(),
        "url.scheme" = req.connection_info().scheme(),
        "client.address" = req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default(),
        "network.protocol.name" = "http",
        "network.protocol.version" = http_version(req.version()),
        "user_agent.original" = header("user-agent"),
        "http.response.status_code" = tracing::field::Empty,
    );
    let access_log = state.as_ref().and_then(|s| {
        let team = s.hub.team_id(s.config.ingest.access_log_team.as_deref()?)?;
        Some(AccessLine {
            team,
            path: req.path().to_owned(),
            user_agent: header("user-agent"),
        })
    });
    let traceparent = header("traceparent");
    if !traceparent.is_empty() {
        crate::telemetry::set_remote_parent(&span, &traceparent);
    }
    let res = next.call(req).instrument(span.clone()).await?;
    let code = res.status().as_u16();
    span.record("http.response.status_code", code);
    if code >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    if let (Some(state), Some(line)) = (&state, access_log) {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        span.in_scope(|| publish_access_log(state, line, &method, &route, code, ms));
    }
    if let Some(state) = state {
        let status = code.to_string();
        state
            .metrics
            .http_requests
            .with_label_values(&[&route, &status])
            .inc();
        state
            .metrics
            .http_duration
            .with_label_values(&[&route])
            .observe(started.elapsed().as_secs_f64());
    }
    Ok(res.map_into_left_body())
}

/// A request of the access log, as far as it is known before the answer.
struct AccessLine {
    team: crate::hub::TeamId,
    path: String,
    user_agent: String,
}

/// Streams one access log line as a log of `ingest.access_log_team`
/// (inside the request's span, so it carries its trace id).
fn publish_access_log(
    state: &AppState,
    line: AccessLine,
    method: &str,
    route: &str,
    code: u16,
    ms: f64,
) {
    let AccessLine {
        team,
        path,
        user_agent,
    } = line;
    let record = LogRecord {
        level: match code {
            500.. => Level::Error,
            400.. => Level::Warn,
            _ => Level::Info,
        },
        source: "opswire.access".into(),
        host: state.local_host.clone(),
        message: format!("{method} {path} {code} {ms:.1}ms"),
        fields: serde_json::json!({
            "method": method, "path": path, "route": route, "status": code,
            "duration_ms": ms, "user_agent": user_agent,
        })
        .as_object()
        .cloned()
        .unwrap_or_default(),
        trace_id: crate::telemetry::trace_id_of(&tracing::Span::current()),
        time: None,
    };
    // Not awaited: the request is answered already. In cluster mode a
    // refusal shows on opswire_broker_publishes_total.
    if let crate::hub::Pending::Done(Err(e)) =
        state
            .hub
            .submit_log(team, &record, crate::time::now_micros())
    {
        tracing::debug!(error = %e, "access log line not published");
    }
}

fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Dev mode hands every team to anonymous callers, so it answers only
/// requests that really come from this machine: a loopback `Host` (a DNS
/// rebinding page has its own host name) and, when a browser sends one, a
/// loopback `Origin` (a cross-site page cannot post logs or alerts).
fn dev_mode_guard(state: &AppState, req: &ServiceRequest) -> Result<(), String> {
    if !state.auth.dev_mode() || state.config.insecure {
        return Ok(());
    }
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let host = header(actix_web::http::header::HOST).unwrap_or_default();
    if !host.is_empty() && !is_loopback_host(host) {
        return Err(format!(
            "dev mode answers loopback hosts only, not `{host}`"
        ));
    }
    if let Some(origin) = header(actix_web::http::header::ORIGIN) {
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or(origin);
        if !is_loopback_host(origin_host) {
            return Err(format!(
                "dev mode answers loopback origins only, not `{origin}`"
            ));
        }
    }
    Ok(())
}

/// A browser page may change state (POST logs, alerts) only from an
/// origin the WebSocket would take too: its own, or one listed in
/// `websocket.allowed_origins`. Reads are left to the usual checks.
fn origin_guard(state: &AppState, req: &ServiceRequest) -> Result<(), String> {
    use actix_web::http::Method;
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    if crate::request::origin_allowed(req.request(), &state.config.websocket.allowed_origins) {
        return Ok(());
    }
    let origin = req
        .headers()
        .get(actix_web::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?");
    Err(format!(
        "origin `{origin}` may not {} here (same origin or websocket.allowed_origins)",
        req.method()
    ))
}

fn http_version(v: actix_web::http::Version) -> &'static str {
    use actix_web::http::Version;
    match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// `GET /api/v1/info`: what a client needs before it connects (no auth:
/// it reveals only whether a token is needed).
async fn info(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "server": crate::protocol::SERVER_NAME,
        "auth_required": !state.auth.dev_mode(),
        "jaeger_url": state.config.web.jaeger_url,
        "grafana_url": state.config.web.grafana_url,
        "grafana_loki_uid": state.config.web.grafana_loki_uid,
        "team_logs_service": state.config.telemetry.team_logs_service_name,
        "heartbeat_s": state.config.websocket.heartbeat_s,
        "tick_ms": state.config.sampler.tick_ms,
    }))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.not_ready_reason() {
        None => HttpResponse::Ok().json(serde_json::json!({"status": "ready"})),
        Some(reason) => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"status": "not_ready", "reason": reason})),
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

#[derive(Deserialize)]
struct TokenQuery {
    access_token: Option<String>,
}

/// `GET /api/v1/teams`: the caller's teams with live subscriber counts.
async fn teams(
    req: HttpRequest,
    q: web::Query<TokenQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let principal = match principal_from_request(&state, &req, q.access_token.as_deref()) {
        Ok(Some(p)) => p,
        Ok(None) => return http_error(ErrorCode::Unauthenticated, "missing token"),
        Err(e) => return http_error(ErrorCode::Unauthenticated, e.to_string()),
    };
    let hub = &state.hub;
    let teams: Vec<_> = principal
        .visible_teams(hub.team_names())
        .into_iter()
        .filter_map(|name| hub.team_id(name))
        .map(|id| hub.summary(id))
        .collect();
    HttpResponse::Ok().json(serde_json::json!({
        "teams": teams,
        "connections": state.connections.open(),
        "epoch": hub.epoch(),
    }))
}

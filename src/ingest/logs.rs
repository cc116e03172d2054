//! Log ingest over HTTP.
//!
//! * `POST /api/v1/logs[?team=T]`: JSON lines (one record per line) or one
//!   JSON array of records. All or nothing: every record is validated before
//!   any is published, and a 400 names the first bad line (1-based) and why.
//! * `POST /v1/logs`: OTLP/HTTP logs, protobuf or JSON, as a Collector's
//!   `otlphttp` exporter sends them. The team is the resource attribute
//!   `ingest.otlp_team_attribute` (else the token's only team). Records the
//!   token may not write are refused through OTLP's partial success.
//!
//! Both take an `ingest` bearer token; the team must be one of its teams.

use actix_web::{web, HttpRequest, HttpResponse};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use prost::Message;
use serde::Deserialize;

use crate::app::AppState;
use crate::ingest::{ingest_principal, read_body, target_team, Refusal};
use crate::protocol::{ErrorCode, Level, LogRecord};
use crate::time::now_micros;

#[derive(Deserialize)]
pub struct TeamQuery {
    team: Option<String>,
}

/// `POST /api/v1/logs`.
pub async fn json(
    req: HttpRequest,
    q: web::Query<TeamQuery>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    // Who and where first: an unauthenticated body is never read.
    let team = match ingest_principal(&state, &req)
        .and_then(|p| target_team(&state, &p, q.team.as_deref()))
    {
        Ok(t) => t,
        Err(r) => return r.respond(&state, "http"),
    };
    let body = match read_body(&state, &req, payload).await {
        Ok(b) => b,
        Err(r) => return r.respond(&state, "http"),
    };
    let result = Ok::<_, Refusal>(team).and_then(|team| {
        parse_records(&body, state.config.ingest.max_line_bytes).map(|r| (team, r))
    });
    let (team, records) = match result {
        Ok(ok) => ok,
        Err(r) => return r.respond(&state, "http"),
    };
    let ts = now_micros();
    // All submitted first, in order, then answered (in cluster mode they
    // reach the broker together).
    let items: Vec<_> = records.iter().map(|r| (team, r)).collect();
    let pending = state.hub.submit_logs(&items, ts);
    let mut seqs = Vec::with_capacity(pending.len());
    for p in pending {
        match p.wait().await {
            Ok(seq) => seqs.push(seq.unwrap_or_default()),
            Err(e) => return Refusal::unavailable(e).respond(&state, "http"),
        }
    }
    state
        .metrics
        .ingest_total
        .with_label_values(&["http", "logs"])
        .inc_by(seqs.len() as u64);
    HttpResponse::Ok().json(serde_json::json!({
        "accepted": seqs.len(),
        "first_seq": seqs.first(),
        "last_seq": seqs.last(),
    }))
}

/// Parses a JSON array or JSON lines of [`LogRecord`]s; the error names
/// the first bad record (1-based line, or array index for an array).
pub fn parse_records(body: &[u8], max_line: usize) -> Result<Vec<LogRecord>, Refusal> {
    let text =
        std::str::from_utf8(body).map_err(|e| Refusal::bad(format!("body is not UTF-8: {e}")))?;
    let check = |rec: LogRecord, what: &dyn Fn() -> String| -> Result<LogRecord, Refusal> {
        if rec.message.len() > max_line {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                "too_large",
                format!("{}: message longer than {max_line} bytes", what()),
            ));
        }
        Ok(rec)
    };
    if text.trim_start().starts_with('[') {
        let values: Vec<serde_json::Value> =
            serde_json::from_str(text).map_err(|e| Refusal::bad(format!("JSON array: {e}")))?;
        if values.is_empty() {
            return Err(Refusal::bad("no log records in the body"));
        }
        return values
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let what = || format!("record {}", i + 1);
                serde_json::from_value::<LogRecord>(v)
                    .map_err(|e| Refusal::bad(format!("{}: {e}", what())))
                    .and_then(|r| check(r, &what))
            })
            .collect();
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let what = || format!("line {}", i + 1);
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > max_line {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                "too_large",
                format!("{}: longer than {max_line} bytes", what()),
            ));
        }
        let rec = serde_json::from_str::<LogRecord>(line)
            .map_err(|e| Refusal::bad(format!("{}: {e}", what())))?;
        out.push(check(rec, &what)?);
    }
    if out.is_empty() {
        return Err(Refusal::bad("no log records in the body"));
    }
    Ok(out)
}

fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"))
}

/// `POST /v1/logs` (OTLP/HTTP).
pub async fn otlp(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let json = is_json(&req);
    let principal = match ingest_principal(&state, &req) {
        Ok(p) => p,
        Err(r) => return r.respond(&state, "otlp"),
    };
    let body = match read_body(&state, &req, payload).await {
        Ok(b) => b,
        Err(r) => return r.respond(&state, "otlp"),
    };
    let decoded = if json {
        serde_json::from_slice(&body).map_err(|e| format!("OTLP JSON: {e}"))
    } else {
        ExportLogsServiceRequest::decode(body.as_ref()).map_err(|e| format!("OTLP protobuf: {e}"))
    };
    let request: ExportLogsServiceRequest = match decoded {
        Ok(r) => r,
        Err(msg) => return Refusal::bad(msg).respond(&state, "otlp"),
    };
    let mut outcome = OtlpOutcome::default();
    let ts = now_micros();
    for rl in &request.resource_logs {
        publish_resource(&state, &principal, rl, &mut outcome);
    }
    // One batch: queued for the broker whole or not at all.
    let items: Vec<_> = outcome.records.iter().map(|(t, r)| (*t, r)).collect();
    let pending = state.hub.submit_logs(&items, ts);
    for p in pending {
        if let Err(e) = p.wait().await {
            return Refusal::unavailable(e).respond(&state, "otlp");
        }
    }
    let m = &state.metrics;
    m.ingest_total
        .with_label_values(&["otlp", "logs"])
        .inc_by(outcome.accepted);
    if outcome.rejected > 0 {
        m.ingest_rejected
            .with_label_values(&["otlp", "forbidden"])
            .inc_by(outcome.rejected as u64);
    }
    let response = ExportLogsServiceResponse {
        partial_success: (outcome.rejected > 0).then_some(ExportLogsPartialSuccess {
            rejected_log_records: outcome.rejected,
            error_message: outcome.first_error,
        }),
    };
    if json {
        HttpResponse::Ok().json(response)
    } else {
        HttpResponse::Ok()
            .content_type("application/x-protobuf")
            .body(response.encode_to_vec())
    }
}

/// What an OTLP request did: records published, records refused (their
/// team is not the token's), and the first refusal's reason.
#[derive(Default)]
struct OtlpOutcome {
    /// Records to publish, in order, with their teams.
    records: Vec<(crate::hub::TeamId, LogRecord)>,
    accepted: u64,
    rejected: i64,
    first_error: String,
}

/// Publishes the records of one resource to its team (the resource's
/// team attribute, else the token's only team); a team the token may not
/// write refuses them through OTLP's partial success. The records are
/// left in `out.records`, to be published together.
fn publish_resource(
    state: &AppState,
    principal: &crate::auth::Principal,
    rl: &opentelemetry_proto::tonic::logs::v1::ResourceLogs,
    out: &mut OtlpOutcome,
) {
    let resource = rl
        .resource
        .as_ref()
        .map(|r| r.attributes.as_slice())
        .unwrap_or_default();
    let attr = &state.config.ingest.otlp_team_attribute;
    let wanted = string_attr(resource, attr);
    let team = target_team(state, principal, wanted.as_deref());
    let service = string_attr(resource, "service.name").unwrap_or_default();
    let host = string_attr(resource, "host.name").unwrap_or_default();
    for sl in &rl.scope_logs {
        let scope = sl.scope.as_ref().map(|s| s.name.as_str()).unwrap_or("");
        let source = if service.is_empty() { scope } else { &service };
        for lr in &sl.log_records {
            let team = match &team {
                Ok(t) => *t,
                Err(r) => {
                    out.rejected += 1;
                    if out.first_error.is_empty() {
                        out.first_error = r.message.clone();
                    }
                    continue;
                }
            };
            let record = record_of(lr, source, &host, state.config.ingest.max_line_bytes);
            out.records.push((team, record));
            out.accepted += 1;
        }
    }
}

/// An OTLP log record as opswire's: the message cut at `max_line` bytes
/// (on a character boundary), attributes as fields, the trace id if any.
fn record_of(
    lr: &opentelemetry_proto::tonic::logs::v1::LogRecord,
    source: &str,
    host: &str,
    max_line: usize,
) -> LogRecord {
    let mut message = lr.body.as_ref().map(any_to_string).unwrap_or_default();
    if message.len() > max_line {
        let mut cut = max_line;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    let fields = lr
        .attributes
        .iter()
        .filter_map(|kv| Some((kv.key.clone(), any_to_json(kv.value.as_ref()?))))
        .collect();
    let time_ns = if lr.time_unix_nano > 0 {
        lr.time_unix_nano
    } else {
        lr.observed_time_unix_nano
    };
    LogRecord {
        level: level_of(lr.severity_number, &lr.severity_text),
        source: source.to_owned(),
        host: host.to_owned(),
        message,
        fields,
        trace_id: (lr.trace_id.len() == 16 && lr.trace_id.iter().any(|b| *b != 0))
            .then(|| hex(&lr.trace_id)),
        time: (time_ns > 0).then_some((time_ns / 1000) as i64),
    }
}

fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    })
}

/// OTLP severity number (1–24) or text → level.
fn level_of(number: i32, text: &str) -> Level {
    match number {
        1..=4 => Level::Trace,
        5..=8 => Level::Debug,
        9..=12 => Level::Info,
        13..=16 => Level::Warn,
        17..=20 => Level::Error,
        21..=24 => Level::Fatal,
        _ => Level::parse(text).unwrap_or(Level::Info),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn any_to_string(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        _ => any_to_json(v).to_string(),
    }
}

fn any_to_json(v: &AnyValue) -> serde_json::Value {
    use serde_json::Value as J;
    match &v.value {
        None => J::Null,
        Some(any_value::Value::StringValue(s)) => J::from(s.as_str()),
        Some(any_value::Value::BoolValue(b)) => J::from(*b),
        Some(any_value::Value::IntValue(i)) => J::from(*i),
        Some(any_value::Value::DoubleValue(d)) => J::from(*d),
        Some(any_value::Value::BytesValue(b)) => J::from(hex(b)),
        Some(any_value::Value::ArrayValue(a)) => {
            J::Array(a.values.iter().map(any_to_json).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => J::Object(
            kv.values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        kv.value.as_ref().map_or(J::Null, any_to_json),
                    )
                })
                .collect(),
        ),
        #[allow(unreachable_patterns)]
        Some(_) => J::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_and_arrays_parse_and_errors_name_the_line() {
        let lines = b"{\"level\":\"info\",\"message\":\"a\"}\n\n{\"level\":\"error\",\"message\":\"b\",\"ts\":\"2026-11-23T10:00:00Z\"}\n";
        let recs = parse_records(lines, 1024).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].time, Some(1_795_428_000_000_000));
        let arr = br#"[{"level":"warn","message":"x","source":"s"}]"#;
        assert_eq!(parse_records(arr, 1024).unwrap()[0].source, "s");
        let bad = b"{\"level\":\"info\",\"message\":\"a\"}\n{\"level\":\"info\"}\n";
        let e = parse_records(bad, 1024).unwrap_err();
        assert!(
            e.message.starts_with("line 2:") && e.message.contains("message"),
            "{}",
            e.message
        );
        let long = format!("{{\"level\":\"info\",\"message\":\"{}\"}}", "x".repeat(100));
        assert_eq!(
            parse_records(long.as_bytes(), 64).unwrap_err().code,
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn otlp_severity_maps_to_levels() {
        assert_eq!(level_of(17, ""), Level::Error);
        assert_eq!(level_of(0, "warning"), Level::Warn);
        assert_eq!(level_of(0, ""), Level::Info);
    }
}

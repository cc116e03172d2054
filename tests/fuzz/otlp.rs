//! OTLP/HTTP log ingest (`POST /v1/logs`, protobuf and JSON, plain or
//! gzip), driven through the real handler (`ingest::logs::otlp`, routed
//! by `http::routes` in an actix test service) on a dev-mode state.
//!
//! The body is decoded on the side with the same libraries; whatever it
//! holds decides the answer, so structured, mutated and arbitrary bodies
//! are all checked with one oracle:
//! * never a panic, never a 5xx;
//! * a body that does not decode gets 400 with opswire's JSON error naming
//!   the encoding (`OTLP protobuf: …`, `OTLP JSON: …`, `gzip body: …`);
//!   one over `ingest.max_body_bytes` gets 413 `too_large`;
//! * a body that decodes gets 200 with an `ExportLogsServiceResponse` in
//!   its encoding: the records of resources whose team does not resolve
//!   are counted in `partial_success` (with a message), and every other
//!   record is published to its team, in order, as the log frame
//!   docs/sources.md's field mapping says (level, message truncated at a
//!   character boundary, source, host, fields, trace_id, time).

use std::io::{Read, Write};

use actix_web::test as atest;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opswire::protocol::Level;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use prost::Message;
use serde_json::{json, Map, Value};

use crate::check;
use crate::support::{self, arb_mutations, arb_text, json_close, mutate, TEAMS};

const MAX_BODY: usize = 64 * 1024;
const MAX_LINE: usize = 256;
const TEAM_ATTR: &str = "opswire.team";

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

fn arb_any_value() -> impl Strategy<Value = AnyValue> {
    use any_value::Value as V;
    let leaf = prop_oneof![
        4 => arb_text().prop_map(V::StringValue),
        1 => any::<bool>().prop_map(V::BoolValue),
        2 => any::<i64>().prop_map(V::IntValue),
        1 => any::<f64>().prop_filter("finite (JSON cannot carry others)", |f| f.is_finite()).prop_map(V::DoubleValue),
        1 => prop::collection::vec(any::<u8>(), 0..12).prop_map(V::BytesValue),
        1 => (any::<char>(), MAX_LINE - 4..MAX_LINE + 8).prop_map(|(c, n)| V::StringValue(std::iter::repeat_n(c, n).collect())),
    ]
    .prop_map(|v| AnyValue { value: Some(v) });
    prop_oneof![
        12 => leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|values| AnyValue { value: Some(V::ArrayValue(ArrayValue { values })) }),
                prop::collection::vec((arb_text(), prop::option::of(inner)), 0..4).prop_map(|kvs| AnyValue {
                    value: Some(V::KvlistValue(KeyValueList {
                        values: kvs.into_iter().map(|(key, value)| KeyValue { key, value, ..Default::default() }).collect(),
                    })),
                }),
            ]
        }),
        1 => Just(AnyValue { value: None }),
    ]
}

fn arb_kv(keys: Vec<&'static str>) -> impl Strategy<Value = KeyValue> {
    (
        prop_oneof![3 => prop::sample::select(keys).prop_map(str::to_owned), 1 => arb_text()],
        prop::option::of(arb_any_value()),
    )
        .prop_map(|(key, value)| KeyValue {
            key,
            value,
            ..Default::default()
        })
}

fn arb_resource() -> impl Strategy<Value = Option<Resource>> {
    let team = prop_oneof![
        4 => prop::sample::select(TEAMS.to_vec()).prop_map(str::to_owned),
        1 => Just("nope".to_owned()),
        1 => arb_text(),
    ]
    .prop_map(|t| KeyValue {
        key: TEAM_ATTR.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(t)),
        }),
        ..Default::default()
    });
    let named = |k: &'static str| {
        arb_text().prop_map(move |s| KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(s)),
            }),
            ..Default::default()
        })
    };
    prop::option::of(
        (
            prop::option::weighted(0.85, team),
            prop::option::of(named("service.name")),
            prop::option::of(named("host.name")),
            prop::collection::vec(
                arb_kv(vec![TEAM_ATTR, "service.name", "host.name", "x"]),
                0..3,
            ),
            any::<u64>(),
        )
            .prop_map(|(team, service, host, extra, shuffle)| {
                let mut attributes: Vec<KeyValue> =
                    [team, service, host].into_iter().flatten().collect();
                attributes.extend(extra);
                let n = attributes.len().max(1);
                attributes.rotate_left(shuffle as usize % n);
                Resource {
                    attributes,
                    ..Default::default()
                }
            }),
    )
}

fn arb_record() -> impl Strategy<Value = LogRecord> {
    (
        prop_oneof![
            Just(0u64),
            any::<u64>(),
            1_700_000_000_000_000_000u64..1_900_000_000_000_000_000
        ],
        prop_oneof![Just(0u64), any::<u64>()],
        prop_oneof![4 => 0i32..26, 1 => any::<i32>()],
        prop_oneof![
            prop::sample::select(vec![
                "", "INFO", "Warning", "err", "FATAL", "crit", "loud", "debug"
            ])
            .prop_map(str::to_owned),
            arb_text()
        ],
        prop::option::of(arb_any_value()),
        prop::collection::vec(arb_kv(vec!["k", "order_id", "k"]), 0..4),
        prop_oneof![
            Just(Vec::new()),
            Just(vec![0u8; 16]),
            prop::collection::vec(any::<u8>(), 16..=16),
            prop::collection::vec(any::<u8>(), 0..20),
        ],
    )
        .prop_map(
            |(t, o, severity_number, severity_text, body, attributes, trace_id)| LogRecord {
                time_unix_nano: t,
                observed_time_unix_nano: o,
                severity_number,
                severity_text,
                body,
                attributes,
                trace_id,
                span_id: vec![1; 8],
                ..Default::default()
            },
        )
}

fn arb_request() -> impl Strategy<Value = ExportLogsServiceRequest> {
    let scope = (
        prop::option::of(arb_text()),
        prop::collection::vec(arb_record(), 0..4),
    )
        .prop_map(|(name, log_records)| ScopeLogs {
            scope: name.map(|name| InstrumentationScope {
                name,
                ..Default::default()
            }),
            log_records,
            ..Default::default()
        });
    prop::collection::vec(
        (arb_resource(), prop::collection::vec(scope, 0..3)).prop_map(|(resource, scope_logs)| {
            ResourceLogs {
                resource,
                scope_logs,
                ..Default::default()
            }
        }),
        0..4,
    )
    .prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
}

/// How a request is sent.
#[derive(Clone, Debug)]
pub struct Wire {
    json: bool,
    /// `Content-Encoding`: none, `gzip`, or something unsupported.
    encoding: Option<&'static str>,
}

fn arb_wire() -> impl Strategy<Value = Wire> {
    (any::<bool>(), prop_oneof![6 => Just(None), 2 => Just(Some("gzip")), 1 => Just(Some("GZIP")), 1 => Just(Some("br")), 1 => Just(Some("identity"))])
        .prop_map(|(json, encoding)| Wire { json, encoding })
}

fn encode(req: &ExportLogsServiceRequest, json: bool) -> Vec<u8> {
    if json {
        serde_json::to_vec(req).expect("OTLP JSON encodes")
    } else {
        req.encode_to_vec()
    }
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

// ---------------------------------------------------------------------------
// The oracle
// ---------------------------------------------------------------------------

/// docs/sources.md's mapping of an OTLP value to JSON.
fn to_json(v: &AnyValue) -> Value {
    use any_value::Value as V;
    match &v.value {
        None => Value::Null,
        Some(V::StringValue(s)) => s.as_str().into(),
        Some(V::BoolValue(b)) => (*b).into(),
        Some(V::IntValue(i)) => (*i).into(),
        Some(V::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number)
        }
        Some(V::BytesValue(b)) => b
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
            .into(),
        Some(V::ArrayValue(a)) => a.values.iter().map(to_json).collect(),
        Some(V::KvlistValue(kv)) => Value::Object(
            kv.values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        kv.value.as_ref().map_or(Value::Null, to_json),
                    )
                })
                .collect(),
        ),
        #[allow(unreachable_patterns)]
        Some(_) => Value::Null,
    }
}

fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attrs
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?
    {
        any_value::Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn level(number: i32, text: &str) -> &'static str {
    match number {
        1..=4 => "TRACE",
        5..=8 => "DEBUG",
        9..=12 => "INFO",
        13..=16 => "WARN",
        17..=20 => "ERROR",
        21..=24 => "FATAL",
        _ => Level::parse(text).unwrap_or(Level::Info).as_str(),
    }
}

/// The frame `data` each accepted record must become, per team, and the
/// number of records refused.
fn expected(req: &ExportLogsServiceRequest) -> (Vec<Vec<Value>>, usize) {
    let mut per_team = vec![Vec::new(); TEAMS.len()];
    let mut rejected = 0;
    for rl in &req.resource_logs {
        let attrs = rl
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        // Dev mode: every team, so the team must be named.
        let team = string_attr(attrs, TEAM_ATTR).and_then(|t| TEAMS.iter().position(|k| *k == t));
        let service = string_attr(attrs, "service.name").unwrap_or_default();
        let host = string_attr(attrs, "host.name").unwrap_or_default();
        for sl in &rl.scope_logs {
            for lr in &sl.log_records {
                let Some(team) = team else {
                    rejected += 1;
                    continue;
                };
                let mut message = match lr.body.as_ref().map(|b| (&b.value, b)) {
                    None => String::new(),
                    Some((Some(any_value::Value::StringValue(s)), _)) => s.clone(),
                    Some((_, b)) => to_json(b).to_string(),
                };
                if message.len() > MAX_LINE {
                    let mut cut = MAX_LINE;
                    while !message.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    message.truncate(cut);
                }
                let source = if service.is_empty() {
                    sl.scope
                        .as_ref()
                        .map(|s| s.name.clone())
                        .unwrap_or_default()
                } else {
                    service.clone()
                };
                let mut fields = Map::new();
                for kv in &lr.attributes {
                    if let Some(v) = &kv.value {
                        fields.insert(kv.key.clone(), to_json(v));
                    }
                }
                let mut data = json!({
                    "level": level(lr.severity_number, &lr.severity_text),
                    "source": source, "host": host, "message": message, "fields": fields,
                });
                if lr.trace_id.len() == 16 && lr.trace_id.iter().any(|b| *b != 0) {
                    data["trace_id"] = lr
                        .trace_id
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                        .into();
                }
                let ns = if lr.time_unix_nano > 0 {
                    lr.time_unix_nano
                } else {
                    lr.observed_time_unix_nano
                };
                if ns > 0 {
                    data["time"] = ((ns / 1000) as i64).into();
                }
                per_team[team].push(data);
            }
        }
    }
    (per_team, rejected)
}

/// What the handler must answer for this body, decided by decoding it on
/// the side.
enum Want {
    Ok(ExportLogsServiceRequest),
    Status(u16, &'static [&'static str]),
}

fn want(body: &[u8], wire: &Wire) -> Want {
    if body.len() > MAX_BODY {
        return Want::Status(413, &["body larger than"]);
    }
    let plain = match wire.encoding.map(str::to_ascii_lowercase).as_deref() {
        None | Some("identity") => body.to_vec(),
        Some("gzip") => {
            let mut out = Vec::new();
            let mut d = flate2::read::GzDecoder::new(body).take(MAX_BODY as u64 + 1);
            if d.read_to_end(&mut out).is_err() {
                return Want::Status(400, &["gzip body: "]);
            }
            if out.len() > MAX_BODY {
                return Want::Status(413, &["decompressed body larger than"]);
            }
            out
        }
        Some(_) => return Want::Status(400, &["unsupported Content-Encoding"]),
    };
    let decoded = if wire.json {
        serde_json::from_slice(&plain).map_err(|_| "OTLP JSON: ")
    } else {
        ExportLogsServiceRequest::decode(plain.as_slice()).map_err(|_| "OTLP protobuf: ")
    };
    match decoded {
        Ok(r) => Want::Ok(r),
        Err("OTLP JSON: ") => Want::Status(400, &["OTLP JSON: "]),
        Err(_) => Want::Status(400, &["OTLP protobuf: "]),
    }
}

fn server() -> support::Http<
    impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
> {
    support::http(|c| {
        c.ingest.max_body_bytes = MAX_BODY;
        c.ingest.max_line_bytes = MAX_LINE;
    })
}

fn post<S>(srv: &support::Http<S>, body: Vec<u8>, wire: &Wire) -> Result<(), TestCaseError>
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    let want = want(&body, wire);
    let teams: Vec<usize> = (0..TEAMS.len()).collect();
    let before: Vec<u64> = teams
        .iter()
        .map(|t| support::logs_seq(&srv.state, *t))
        .collect();
    let mut req = atest::TestRequest::post().uri("/v1/logs").insert_header((
        "content-type",
        if wire.json {
            "application/json"
        } else {
            "application/x-protobuf"
        },
    ));
    if let Some(e) = wire.encoding {
        req = req.insert_header(("content-encoding", e));
    }
    let (status, bytes) = srv.call(req.set_payload(body).to_request());
    match want {
        Want::Status(code, prefixes) => {
            check!(
                status == code,
                "status {status}, expected {code}: {}",
                String::from_utf8_lossy(&bytes)
            );
            support::check_error(status, &bytes, prefixes)?;
            for t in &teams {
                check!(
                    support::logs_seq(&srv.state, *t) == before[*t],
                    "a refused body published to {}",
                    TEAMS[*t]
                );
            }
        }
        Want::Ok(request) => {
            check!(
                status == 200,
                "status {status} for a body that decodes: {}",
                String::from_utf8_lossy(&bytes)
            );
            let resp: ExportLogsServiceResponse = if wire.json {
                serde_json::from_slice(&bytes)
                    .map_err(|e| TestCaseError::fail(format!("JSON answer: {e}")))?
            } else {
                ExportLogsServiceResponse::decode(bytes.as_ref())
                    .map_err(|e| TestCaseError::fail(format!("protobuf answer: {e}")))?
            };
            let (per_team, rejected) = expected(&request);
            match &resp.partial_success {
                Some(p) => check!(
                    p.rejected_log_records as usize == rejected
                        && rejected > 0
                        && !p.error_message.is_empty(),
                    "partial success {p:?}, expected {rejected} refused"
                ),
                None => check!(
                    rejected == 0,
                    "no partial success for {rejected} refused records"
                ),
            }
            for t in teams {
                let frames = support::logs_after(&srv.state, t, before[t]);
                check!(
                    frames.len() == per_team[t].len(),
                    "{}: {} frames published, {} expected",
                    TEAMS[t],
                    frames.len(),
                    per_team[t].len()
                );
                for (f, w) in frames.iter().zip(&per_team[t]) {
                    check!(
                        json_close(&f["data"], w),
                        "{}: frame data {}\n expected {w}",
                        TEAMS[t],
                        f["data"]
                    );
                }
            }
        }
    }
    Ok(())
}

#[test]
fn otlp_structured() {
    let srv = server();
    support::run(
        "otlp_structured",
        (arb_request(), arb_wire()),
        |(request, wire)| {
            let mut body = encode(&request, wire.json);
            if wire
                .encoding
                .is_some_and(|e| e.eq_ignore_ascii_case("gzip"))
            {
                body = gzip(&body);
            }
            post(&srv, body, &wire)
        },
    );
}

#[test]
fn otlp_mutated() {
    let srv = server();
    let strategy = (arb_request(), arb_wire(), arb_mutations(), any::<bool>());
    support::run(
        "otlp_mutated",
        strategy,
        |(request, wire, edits, before_gzip)| {
            let mut body = encode(&request, wire.json);
            let gz = wire
                .encoding
                .is_some_and(|e| e.eq_ignore_ascii_case("gzip"));
            if gz && before_gzip {
                body = gzip(&mutate(body, &edits));
            } else {
                if gz {
                    body = gzip(&body);
                }
                body = mutate(body, &edits);
            }
            post(&srv, body, &wire)
        },
    );
}

#[test]
fn otlp_arbitrary() {
    let srv = server();
    let body = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..600),
        1 => crate::support::arb_json(3).prop_map(|v| v.to_string().into_bytes()),
        1 => (0usize..4, 1usize..200_000).prop_map(|(kind, n)| match kind {
            // A huge declared length, a body over the limit, a gzip bomb.
            0 => { let mut b = vec![0x0a]; b.extend([0xff, 0xff, 0xff, 0xff, 0x0f]); b.extend(vec![0; n % 64]); b }
            1 => vec![b'x'; MAX_BODY + n % 1000],
            2 => gzip(&vec![0u8; MAX_BODY + n]),
            _ => vec![0x0a; n % 4096],
        }),
    ];
    support::run("otlp_arbitrary", (body, arb_wire()), |(body, wire)| {
        post(&srv, body, &wire)
    });
}

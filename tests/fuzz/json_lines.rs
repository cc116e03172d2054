//! JSON-lines (and JSON array) log ingest: `ingest::logs::parse_records`,
//! the parser behind `POST /api/v1/logs`.
//!
//! Invariants:
//! * never a panic, whatever the bytes and the line limit;
//! * valid records decode to exactly what was sent (canonical level,
//!   defaults, `time`/`ts` as integer µs or RFC 3339 with any offset);
//! * an accepted record round-trips: written back as a JSON line (and in an
//!   array) it parses to the same record, and published to the hub it is
//!   replayed as a log frame whose `data` is that record;
//! * no accepted record's `message` is over the line limit, and no
//!   accepted body is empty;
//! * one bad record makes the whole body fail, with an error naming its
//!   line (blank lines counted) or array index, and 413 `too_large` only
//!   for a line or message over the limit.

use opswire::ingest::logs::parse_records;
use opswire::ingest::Refusal;
use opswire::protocol::{ErrorCode, LogRecord};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Map, Value};

use crate::check;
use crate::support::{self, arb_json, arb_mutations, arb_text, json_close, mutate};

const LEVELS: [(&str, &str); 15] = [
    ("trace", "TRACE"),
    ("debug", "DEBUG"),
    ("info", "INFO"),
    ("information", "INFO"),
    ("notice", "INFO"),
    ("warn", "WARN"),
    ("warning", "WARN"),
    ("error", "ERROR"),
    ("err", "ERROR"),
    ("fatal", "FATAL"),
    ("critical", "FATAL"),
    ("crit", "FATAL"),
    ("panic", "FATAL"),
    ("emergency", "FATAL"),
    ("alert", "FATAL"),
];

/// Year 9999, in µs: the last instant RFC 3339 can write.
const MAX_MICROS: i64 = 253_402_300_799_999_999;

#[derive(Clone, Debug)]
enum Time {
    Micros(i64),
    /// RFC 3339 with a fraction of µs and an offset in minutes.
    Rfc3339 {
        micros: i64,
        offset_min: i32,
        frac: bool,
    },
    Null,
}

/// One valid record: its JSON and what it must decode to.
#[derive(Clone, Debug)]
pub struct Rec {
    pub json: Map<String, Value>,
    pub want: Value,
}

/// An RFC 3339 time of `micros`, written with an offset of `offset_min`
/// minutes (0: `Z`).
pub fn rfc3339(micros: i64, offset_min: i32, frac: bool) -> String {
    let local = micros + offset_min as i64 * 60_000_000;
    assert!(
        (0..=MAX_MICROS).contains(&local),
        "local time {local} µs out of RFC 3339's range"
    );
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(local as u64);
    let utc = if frac {
        humantime::format_rfc3339_micros(t).to_string()
    } else {
        humantime::format_rfc3339_seconds(t).to_string()
    };
    let base = utc.trim_end_matches('Z');
    match offset_min {
        0 => format!("{base}Z"),
        o => format!(
            "{base}{}{:02}:{:02}",
            if o < 0 { '-' } else { '+' },
            o.abs() / 60,
            o.abs() % 60
        ),
    }
}

fn arb_time() -> impl Strategy<Value = Time> {
    prop_oneof![
        any::<i64>().prop_map(Time::Micros),
        (
            0..MAX_MICROS - 86_400_000_000,
            -1439i32..1440,
            any::<bool>()
        )
            .prop_map(|(micros, offset_min, frac)| {
                let micros = micros + 86_400_000_000 / 2;
                Time::Rfc3339 {
                    micros: if frac {
                        micros
                    } else {
                        micros / 1_000_000 * 1_000_000
                    },
                    offset_min,
                    frac,
                }
            }),
        Just(Time::Null),
    ]
}

fn any_case(s: &str, flips: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if flips >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

pub fn arb_record() -> impl Strategy<Value = Rec> {
    (
        (prop::sample::select(LEVELS.to_vec()), any::<u64>()),
        arb_text(),
        prop::option::of(arb_text()),
        prop::option::of(arb_text()),
        prop::option::of(prop::collection::btree_map(arb_text(), arb_json(2), 0..4)),
        prop::option::of(prop::option::of(arb_text())),
        prop::option::of((arb_time(), any::<bool>())),
    )
        .prop_map(
            |((level, flips), message, source, host, fields, trace_id, time)| {
                let mut j = Map::new();
                j.insert("level".into(), any_case(level.0, flips).into());
                j.insert("message".into(), message.clone().into());
                let mut w = json!({
                    "level": level.1,
                    "message": message,
                    "source": source.clone().unwrap_or_default(),
                    "host": host.clone().unwrap_or_default(),
                    "fields": fields.clone().unwrap_or_default().into_iter().collect::<Map<_, _>>(),
                });
                if let Some(s) = source {
                    j.insert("source".into(), s.into());
                }
                if let Some(h) = host {
                    j.insert("host".into(), h.into());
                }
                if let Some(f) = fields {
                    j.insert("fields".into(), Value::Object(f.into_iter().collect()));
                }
                match trace_id {
                    Some(Some(t)) => {
                        j.insert("trace_id".into(), t.clone().into());
                        w["trace_id"] = t.into();
                    }
                    Some(None) => {
                        j.insert("trace_id".into(), Value::Null);
                    }
                    None => {}
                }
                if let Some((t, as_ts)) = time {
                    let key = if as_ts { "ts" } else { "time" };
                    let (v, want) = match t {
                        Time::Micros(m) => (json!(m), Some(m)),
                        Time::Rfc3339 {
                            micros,
                            offset_min,
                            frac,
                        } => (json!(rfc3339(micros, offset_min, frac)), Some(micros)),
                        Time::Null => (Value::Null, None),
                    };
                    j.insert(key.into(), v);
                    if let Some(m) = want {
                        w["time"] = m.into();
                    }
                }
                Rec { json: j, want: w }
            },
        )
}

/// How a body is laid out.
#[derive(Clone, Debug)]
pub struct Layout {
    array: bool,
    crlf: bool,
    /// Blank lines before each record (JSON lines).
    blanks: Vec<u8>,
    trailing_newline: bool,
}

fn arb_layout() -> impl Strategy<Value = Layout> {
    (
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(prop_oneof![4 => Just(0u8), 1 => 1u8..3], 16),
        any::<bool>(),
    )
        .prop_map(|(array, crlf, blanks, trailing_newline)| Layout {
            array,
            crlf,
            blanks,
            trailing_newline,
        })
}

/// Writes records as a body; returns it and the 1-based line (JSON lines)
/// or index (array) of each record.
fn render(recs: &[String], layout: &Layout) -> (String, Vec<usize>) {
    if layout.array {
        let body = format!(
            "{}[{}]",
            if layout.crlf { " \n" } else { "" },
            recs.join(",\n")
        );
        return (body, (1..=recs.len()).collect());
    }
    let nl = if layout.crlf { "\r\n" } else { "\n" };
    let mut body = String::new();
    let mut line = 0;
    let mut at = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        for _ in 0..layout.blanks[i % layout.blanks.len()] {
            body.push_str(if i % 2 == 0 { "" } else { "  \t" });
            body.push_str(nl);
            line += 1;
        }
        line += 1;
        at.push(line);
        body.push_str(r);
        if i + 1 < recs.len() || layout.trailing_newline {
            body.push_str(nl);
        }
    }
    (body, at)
}

/// What holds for the result of any body.
pub fn check_any(
    body: &[u8],
    max: usize,
    got: &Result<Vec<LogRecord>, Refusal>,
) -> Result<(), TestCaseError> {
    match got {
        Ok(recs) => {
            check!(
                !recs.is_empty(),
                "an empty body accepted: {:?}",
                String::from_utf8_lossy(body)
            );
            for r in recs {
                check!(
                    r.message.len() <= max,
                    "a message of {} bytes accepted with max {max}",
                    r.message.len()
                );
            }
            round_trip(recs)?;
        }
        Err(r) => {
            let m = &r.message;
            check!(
                [
                    "body is not UTF-8",
                    "JSON array: ",
                    "record ",
                    "line ",
                    "no log records in the body"
                ]
                .iter()
                .any(|p| m.starts_with(p)),
                "error message does not say where: {m:?}"
            );
            let too_large = m.contains(&format!("longer than {max} bytes"));
            check!(
                (r.code == ErrorCode::TooLarge) == too_large
                    && matches!(r.code, ErrorCode::TooLarge | ErrorCode::BadRequest),
                "code {:?} for {m:?}",
                r.code
            );
            if let Some(rest) = m.strip_prefix("line ") {
                let n: usize = rest
                    .split(':')
                    .next()
                    .unwrap()
                    .parse()
                    .map_err(|_| TestCaseError::fail(format!("no line number in {m:?}")))?;
                let lines = std::str::from_utf8(body)
                    .map(|t| t.lines().count())
                    .unwrap_or(0);
                check!(n >= 1 && n <= lines, "line {n} of a {lines}-line body");
            }
        }
    }
    Ok(())
}

/// Accepted records, written back as JSON lines and as an array, parse to
/// the same records.
fn round_trip(recs: &[LogRecord]) -> Result<(), TestCaseError> {
    if recs.is_empty() {
        return Ok(());
    }
    let values: Vec<Value> = recs
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect();
    let lines: Vec<String> = values.iter().map(Value::to_string).collect();
    for body in [lines.join("\n"), format!("[{}]", lines.join(","))] {
        let again = parse_records(body.as_bytes(), usize::MAX).map_err(|e| {
            TestCaseError::fail(format!(
                "accepted records do not parse again: {} in {body:?}",
                e.message
            ))
        })?;
        check!(
            again.len() == recs.len(),
            "{} records, then {}",
            recs.len(),
            again.len()
        );
        for (a, v) in again.iter().zip(&values) {
            let a = serde_json::to_value(a).unwrap();
            check!(json_close(&a, v), "record {v} came back as {a}");
        }
    }
    Ok(())
}

/// A fault put into one record.
#[derive(Clone, Debug)]
enum Fault {
    Missing(&'static str),
    Unknown(String),
    WrongType(&'static str, Value),
    BadLevel(String),
    BadTime(String),
    BothTimes,
    NotObject(Value),
    LongMessage,
    InvalidUtf8,
}

fn arb_fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        prop::sample::select(vec!["level", "message"]).prop_map(Fault::Missing),
        "[a-z]{1,8}".prop_map(|k| Fault::Unknown(format!("x_{k}"))),
        (
            prop::sample::select(vec![
                "level", "message", "source", "host", "fields", "trace_id", "time"
            ]),
            prop_oneof![
                Just(json!(7)),
                Just(json!(true)),
                Just(json!([])),
                Just(json!({"a": 1})),
                Just(json!(1.5)),
                Just(json!("s"))
            ]
        )
            .prop_map(|(k, v)| Fault::WrongType(k, v)),
        "[a-z]{1,8}".prop_map(|l| Fault::BadLevel(format!("no{l}"))),
        prop::sample::select(vec![
            "yesterday",
            "2026-13-01T00:00:00Z",
            "",
            "2026-11-23T10:00:00+25:00",
            "10:00"
        ])
        .prop_map(|s| Fault::BadTime(s.to_owned())),
        Just(Fault::BothTimes),
        prop_oneof![Just(json!(1)), Just(json!("x")), Just(Value::Null)].prop_map(Fault::NotObject),
        Just(Fault::LongMessage),
        Just(Fault::InvalidUtf8),
    ]
}

/// Applies a fault; returns the record's text, or None when the fault
/// does not make this record invalid (a wrong type that is right).
fn faulty(rec: &Rec, fault: &Fault, max: usize) -> Option<String> {
    let mut j = rec.json.clone();
    match fault {
        Fault::Missing(k) => {
            j.remove(*k);
        }
        Fault::Unknown(k) => {
            j.insert(k.clone(), json!(1));
        }
        Fault::WrongType(k, v) => {
            let fine = match *k {
                "source" | "host" | "message" | "level" => v.is_string() && *k != "level",
                "trace_id" => v.is_string(),
                "fields" => v.is_object(),
                _ => v.is_i64(),
            };
            if fine {
                return None;
            }
            j.remove("ts");
            j.insert(k.to_string(), v.clone());
        }
        Fault::BadLevel(l) => {
            j.insert("level".into(), l.clone().into());
        }
        Fault::BadTime(t) => {
            j.remove("ts");
            j.insert("time".into(), t.clone().into());
        }
        Fault::BothTimes => {
            j.insert("time".into(), json!(1));
            j.insert("ts".into(), json!(2));
        }
        Fault::NotObject(v) => return Some(v.to_string()),
        Fault::LongMessage => {
            j.insert("message".into(), "m".repeat(max + 1).into());
        }
        Fault::InvalidUtf8 => return Some("{\"level\":\"info\",\"message\":\"\u{fffd}\"}".into()),
    }
    Some(Value::Object(j).to_string())
}

#[test]
fn json_lines_valid() {
    let strategy = (prop::collection::vec(arb_record(), 1..8), arb_layout());
    let state = support::state_with(|_| {});
    let team = state.hub.team_id("alpha").unwrap();
    support::run("json_lines_valid", strategy, |(recs, layout)| {
        let texts: Vec<String> = recs
            .iter()
            .map(|r| Value::Object(r.json.clone()).to_string())
            .collect();
        let (body, _) = render(&texts, &layout);
        let got = parse_records(body.as_bytes(), usize::MAX);
        check_any(body.as_bytes(), usize::MAX, &got)?;
        let got = got.map_err(|e| {
            TestCaseError::fail(format!("valid body refused: {} ({body:?})", e.message))
        })?;
        check!(
            got.len() == recs.len(),
            "{} records read, {} sent",
            got.len(),
            recs.len()
        );
        for (g, r) in got.iter().zip(&recs) {
            let g = serde_json::to_value(g).unwrap();
            check!(json_close(&g, &r.want), "read {g}, expected {}", r.want);
        }
        // Published and replayed: the frame's data is the record.
        let before = support::logs_seq(&state, team);
        let ts = opswire::time::now_micros();
        for r in &got {
            state
                .hub
                .submit_log(team, r, ts)
                .now()
                .expect("in-memory publish");
        }
        let frames = support::logs_after(&state, team, before);
        check!(
            frames.len() == got.len(),
            "{} frames replayed for {} records",
            frames.len(),
            got.len()
        );
        for (i, (f, r)) in frames.iter().zip(&got).enumerate() {
            check!(
                f["type"] == "log"
                    && f["team"] == "alpha"
                    && f["seq"] == before + 1 + i as u64
                    && f["ts"] == ts,
                "frame {f}"
            );
            check!(
                json_close(&f["data"], &serde_json::to_value(r).unwrap()),
                "frame data {} for record {r:?}",
                f["data"]
            );
        }
        Ok(())
    });
}

#[test]
fn json_lines_one_bad_record() {
    let strategy = (
        prop::collection::vec(arb_record(), 1..6),
        arb_layout(),
        any::<Index>(),
        arb_fault(),
        64usize..2048,
    );
    support::run(
        "json_lines_one_bad_record",
        strategy,
        |(recs, layout, which, fault, max)| {
            let bad = which.index(recs.len());
            let mut texts: Vec<String> = recs
                .iter()
                .map(|r| Value::Object(r.json.clone()).to_string())
                .collect();
            let Some(f) = faulty(&recs[bad], &fault, max) else {
                return Ok(());
            };
            texts[bad] = f;
            let (body, at) = render(&texts, &layout);
            let mut bytes = body.clone().into_bytes();
            if matches!(fault, Fault::InvalidUtf8) {
                let i = bytes
                    .windows(3)
                    .position(|w| w == "\u{fffd}".as_bytes())
                    .unwrap();
                bytes.splice(i..i + 3, [0xff]);
            }
            let got = parse_records(&bytes, max);
            check_any(&bytes, max, &got)?;
            let Err(e) = got else {
                return Err(TestCaseError::fail(format!(
                    "a body with a bad record {bad} accepted: {body:?}"
                )));
            };
            // Records before the bad one may be refused first for their length.
            let earlier_too_long = texts[..bad].iter().any(|t| t.len() > max)
                || recs[..bad]
                    .iter()
                    .any(|r| r.json["message"].as_str().unwrap().len() > max);
            if matches!(fault, Fault::InvalidUtf8) {
                check!(e.message.starts_with("body is not UTF-8"), "{}", e.message);
            } else if !layout.array && texts[bad].len() > max && !earlier_too_long {
                // The line itself is over the limit: refused for that first.
                let name = format!("line {}: longer than {max} bytes", at[bad]);
                check!(
                    e.message.starts_with(&name) && e.code == ErrorCode::TooLarge,
                    "error {:?} should be {name:?}",
                    e.message
                );
            } else if !earlier_too_long {
                let name = if layout.array {
                    format!("record {}:", at[bad])
                } else {
                    format!("line {}:", at[bad])
                };
                check!(
                    e.message.starts_with(&name),
                    "error {:?} should name {name:?}",
                    e.message
                );
                if matches!(fault, Fault::LongMessage) {
                    check!(
                        e.code == ErrorCode::TooLarge,
                        "{:?} for a long message",
                        e.code
                    );
                }
                match &fault {
                    Fault::Unknown(k) => check!(
                        e.message.contains(&format!("unknown field `{k}`")),
                        "{}",
                        e.message
                    ),
                    Fault::Missing(k) => check!(
                        e.message.contains(&format!("missing field `{k}`")),
                        "{}",
                        e.message
                    ),
                    Fault::BadLevel(l) => check!(
                        e.message.contains(&format!("unknown level `{l}`")),
                        "{}",
                        e.message
                    ),
                    Fault::BothTimes => check!(
                        e.message.contains("duplicate field `time`"),
                        "{}",
                        e.message
                    ),
                    _ => {}
                }
            }
            Ok(())
        },
    );
}

#[test]
fn json_lines_arbitrary() {
    let valid =
        (prop::collection::vec(arb_record(), 1..4), arb_layout()).prop_map(|(recs, layout)| {
            let texts: Vec<String> = recs
                .iter()
                .map(|r| Value::Object(r.json.clone()).to_string())
                .collect();
            render(&texts, &layout).0.into_bytes()
        });
    let strategy = (
        prop_oneof![
            2 => prop::collection::vec(any::<u8>(), 0..512),
            2 => any::<String>().prop_map(String::into_bytes),
            4 => (valid, arb_mutations()).prop_map(|(b, m)| mutate(b, &m)),
            1 => arb_json(3).prop_map(|v| v.to_string().into_bytes()),
        ],
        prop_oneof![Just(usize::MAX), 0usize..4096],
    );
    support::run("json_lines_arbitrary", strategy, |(body, max)| {
        let got = parse_records(&body, max);
        check_any(&body, max, &got)
    });
}

/// docs/sources.md: "The body must be UTF-8 and hold at least one record":
/// `[]` too (it was once accepted as 0 records).
#[test]
fn an_empty_array_is_refused() {
    let e = parse_records(b"[]", 1024).expect_err("`[]` holds no record");
    assert!(e.message.contains("no log records"), "{}", e.message);
}

/// docs/sources.md: an RFC 3339 `time` needs its offset (`Z` or
/// `+02:00`); without one it is refused, naming the record.
#[test]
fn a_time_without_an_offset_is_refused() {
    let e = parse_records(
        br#"{"level":"info","message":"m","time":"2026-11-23T10:00:00"}"#,
        1024,
    )
    .expect_err("no offset");
    assert!(e.message.starts_with("line 1"), "{}", e.message);
}

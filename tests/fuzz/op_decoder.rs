//! The op decoder: `protocol::parse_inbound` on arbitrary text, on
//! byte-mutated ops, and on valid ops with one fault injected (a field of
//! the wrong type, an unknown or missing field, a bad stream or level, a
//! bad `id` or `op`), against what `docs/protocol.md` says must happen.
//!
//! Invariants:
//! * never a panic, whatever the text;
//! * a decoded op re-validates: encoding it back to JSON and decoding that
//!   gives the same op;
//! * a valid op decodes to exactly what was sent (defaults filled in);
//! * an error has a message that starts by saying where it is (`invalid
//!   JSON`, `` `id` ``, `` `op` ``, `<op>: …`) and names the unknown or
//!   missing field, the bad stream or level;
//! * `id` is echoed whenever the frame is an object with an integer `id`,
//!   even when the op is refused; a string `traceparent` is kept.

use opswire::protocol::{parse_inbound, Inbound, Op, OpError};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Map, Value};

use crate::check;
use crate::support::{self, arb_json, arb_mutations, arb_text, deep_json, json_close, mutate_str};

const STREAMS: [&str; 3] = ["metrics", "logs", "alerts"];
const LEVELS: [&str; 16] = [
    "trace",
    "debug",
    "info",
    "information",
    "notice",
    "warn",
    "warning",
    "error",
    "err",
    "fatal",
    "critical",
    "crit",
    "panic",
    "emergency",
    "alert",
    "INFO",
];

/// The canonical JSON of a decoded op: every default written out.
pub fn encode(op: &Op) -> Value {
    let streams =
        |v: &[opswire::protocol::Stream]| -> Vec<&str> { v.iter().map(|s| s.as_str()).collect() };
    match op {
        Op::Auth(a) => json!({"op": "auth", "token": a.token}),
        Op::Subscribe(s) => json!({
            "op": "subscribe",
            "team": s.team,
            "streams": streams(&s.streams),
            "resume": s.resume.iter()
                .map(|(k, p)| (k.as_str().to_owned(), json!({"epoch": p.epoch, "seq": p.seq})))
                .collect::<Map<_, _>>(),
            "filter": {"logs": s.filter.logs.as_ref().map(|f| json!({
                "min_level": f.min_level.map(|l| l.as_str()),
                "source": f.source,
            }))},
        }),
        Op::Unsubscribe(u) => {
            json!({"op": "unsubscribe", "team": u.team, "streams": streams(&u.streams)})
        }
        Op::Ping => json!({"op": "ping"}),
        Op::Publish(p) => json!({
            "op": "publish",
            "team": p.team,
            "stream": p.stream.as_str(),
            "data": serde_json::from_str::<Value>(p.data.get()).expect("publish data is JSON"),
        }),
        Op::Silence(s) => json!({
            "op": "silence",
            "team": s.team,
            "fingerprint": s.fingerprint,
            "duration_s": s.duration_s,
            "comment": s.comment,
        }),
    }
}

/// The prefixes an error message may start with; each says where the
/// problem is.
const ERROR_PREFIXES: &[&str] = &[
    "invalid JSON: ",
    "a frame must be a JSON object",
    "`id` must be an integer",
    "`op` must be a string",
    "missing field `op`",
    "auth: ",
    "subscribe: ",
    "unsubscribe: ",
    "publish: ",
    "silence: ",
];

/// What holds for the decoding of any text.
pub fn check_any(text: &str, got: &Inbound) -> Result<(), TestCaseError> {
    match &got.op {
        Ok(op) => {
            // Re-validates: its encoding decodes to the same op.
            let enc = encode(op);
            let again = parse_inbound(&enc.to_string());
            let Ok(op2) = &again.op else {
                return Err(TestCaseError::fail(format!(
                    "decoded op {op:?} does not re-validate: {:?} (from {text:?})",
                    again.op
                )));
            };
            check!(
                json_close(&enc, &encode(op2)),
                "re-decoded op differs: {enc} vs {}",
                encode(op2)
            );
            if let Op::Subscribe(s) = op {
                check!(!s.streams.is_empty(), "subscribe with no streams accepted");
            }
        }
        Err(OpError::BadRequest(m)) => {
            check!(
                ERROR_PREFIXES.iter().any(|p| m.starts_with(p)) && m.len() > 12,
                "error message does not say where the problem is: {m:?} (from {text:?})"
            );
        }
        Err(OpError::UnknownOp(name)) => {
            check!(
                name.chars().count() <= 64,
                "unknown op name not cut to 64 chars: {name:?}"
            );
            let msg = got.op.as_ref().unwrap_err().to_string();
            check!(msg.starts_with("unknown op `"), "{msg}");
        }
    }
    // `id` comes only from an integer `id` of an object.
    if let Some(id) = got.id {
        let v: Value = serde_json::from_str(text).map_err(|e| {
            TestCaseError::fail(format!("an id ({id}) from text that is not JSON: {e}"))
        })?;
        check!(
            v.get("id").and_then(Value::as_i64) == Some(id),
            "id {id} not the frame's"
        );
    }
    if let Some(tp) = &got.traceparent {
        let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        check!(
            v.get("traceparent").and_then(Value::as_str) == Some(tp.as_str()),
            "traceparent {tp:?} not the frame's"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Valid ops, and where a fault can go
// ---------------------------------------------------------------------------

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

fn arb_streams() -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(prop::sample::select(STREAMS.to_vec()), 1..5)
}

fn arb_resume() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        prop::sample::select(STREAMS.to_vec()),
        (arb_text(), any::<u64>()).prop_map(|(e, s)| json!({"epoch": e, "seq": s})),
        0..4,
    )
    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

fn arb_filter() -> impl Strategy<Value = Value> {
    let level = (prop::sample::select(LEVELS.to_vec()), any::<u64>())
        .prop_map(|(l, f)| Value::String(any_case(l, f)));
    let logs = (
        prop::option::of(prop_oneof![level, Just(Value::Null)]),
        prop::option::of(prop_oneof![
            arb_text().prop_map(Value::String),
            Just(Value::Null)
        ]),
    )
        .prop_map(|(l, s)| {
            let mut m = Map::new();
            if let Some(l) = l {
                m.insert("min_level".into(), l);
            }
            if let Some(s) = s {
                m.insert("source".into(), s);
            }
            Value::Object(m)
        });
    prop::option::of(prop_oneof![logs, Just(Value::Null)]).prop_map(|l| {
        let mut m = Map::new();
        if let Some(l) = l {
            m.insert("logs".into(), l);
        }
        Value::Object(m)
    })
}

/// A valid op body (without `op`, `id`, `traceparent`) and its name.
fn arb_valid_op() -> impl Strategy<Value = (&'static str, Map<String, Value>)> {
    let obj = |pairs: Vec<(&str, Option<Value>)>| -> Map<String, Value> {
        pairs
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_owned(), v?)))
            .collect()
    };
    prop_oneof![
        arb_text().prop_map(move |t| ("auth", obj(vec![("token", Some(t.into()))]))),
        (
            arb_text(),
            prop::option::of(arb_streams()),
            prop::option::of(arb_resume()),
            prop::option::of(arb_filter())
        )
            .prop_map(move |(team, streams, resume, filter)| (
                "subscribe",
                obj(vec![
                    ("team", Some(team.into())),
                    ("streams", streams.map(|s| json!(s))),
                    ("resume", resume),
                    ("filter", filter),
                ])
            )),
        (
            arb_text(),
            prop::option::of(prop::collection::vec(
                prop::sample::select(STREAMS.to_vec()),
                0..4
            ))
        )
            .prop_map(move |(team, streams)| (
                "unsubscribe",
                obj(vec![
                    ("team", Some(team.into())),
                    ("streams", streams.map(|s| json!(s)))
                ])
            )),
        Just(("ping", Map::new())),
        (
            arb_text(),
            prop::sample::select(STREAMS.to_vec()),
            arb_json(3)
        )
            .prop_map(move |(team, stream, data)| (
                "publish",
                obj(vec![
                    ("team", Some(team.into())),
                    ("stream", Some(stream.into())),
                    ("data", Some(data))
                ])
            )),
        (
            arb_text(),
            arb_text(),
            prop::option::of(any::<u64>()),
            prop::option::of(arb_text())
        )
            .prop_map(move |(team, fp, d, c)| (
                "silence",
                obj(vec![
                    ("team", Some(team.into())),
                    ("fingerprint", Some(fp.into())),
                    ("duration_s", d.map(Value::from)),
                    ("comment", c.map(Value::from)),
                ])
            )),
    ]
}

/// The op that a valid body must decode to, as [`encode`] writes it.
fn expected(op: &str, body: &Map<String, Value>) -> Value {
    let mut e = body.clone();
    e.insert("op".into(), op.into());
    let all = || json!(STREAMS);
    match op {
        "subscribe" => {
            e.entry("streams").or_insert_with(all);
            e.entry("resume").or_insert_with(|| json!({}));
            let logs = body
                .get("filter")
                .and_then(|f| f.get("logs"))
                .filter(|l| !l.is_null())
                .map(|l| {
                    json!({
                        "min_level": l.get("min_level").and_then(Value::as_str)
                            .map(|s| opswire::protocol::Level::parse(s).unwrap().as_str()),
                        "source": l.get("source").cloned().unwrap_or(Value::Null),
                    })
                });
            e.insert("filter".into(), json!({ "logs": logs }));
        }
        "unsubscribe" => {
            e.entry("streams").or_insert_with(all);
        }
        "silence" => {
            e.entry("duration_s").or_insert(json!(3600));
            e.entry("comment").or_insert(json!(""));
        }
        _ => {}
    }
    Value::Object(e)
}

/// The kind of value a place in an op holds.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Slot {
    /// A required string (or a string with a default: null is wrong too).
    Str,
    /// An optional string: null is fine.
    OptStr,
    U64,
    Streams,
    /// One stream name (an element of `streams`, or `publish.stream`).
    Stream,
    Level,
    /// An object that refuses unknown fields; the listed fields are required.
    Object(&'static [&'static str]),
    /// The `resume` map: its keys are streams.
    ResumeMap,
    /// `filter.logs`: an object, or null.
    OptObject,
}

/// Every place of `op`'s body (as JSON pointers) and its kind.
fn slots(op: &str, body: &Map<String, Value>) -> Vec<(String, Slot)> {
    let mut out = vec![(String::new(), Slot::Object(required(op)))];
    for (k, v) in body {
        let p = format!("/{}", esc(k));
        let kind = match (op, k.as_str()) {
            (_, "team" | "token" | "fingerprint" | "comment") => Slot::Str,
            (_, "duration_s") => Slot::U64,
            (_, "streams") => Slot::Streams,
            ("publish", "stream") => Slot::Stream,
            ("subscribe", "resume") => Slot::ResumeMap,
            ("subscribe", "filter") => Slot::Object(&[]),
            _ => continue,
        };
        out.push((p.clone(), kind));
        if let Value::Array(a) = v {
            for i in 0..a.len() {
                out.push((format!("{p}/{i}"), Slot::Stream));
            }
        }
        if kind == Slot::ResumeMap {
            for (s, entry) in v.as_object().unwrap() {
                let q = format!("{p}/{s}");
                out.push((q.clone(), Slot::Object(&["epoch", "seq"])));
                if entry.get("epoch").is_some() {
                    out.push((format!("{q}/epoch"), Slot::Str));
                    out.push((format!("{q}/seq"), Slot::U64));
                }
            }
        }
        if k == "filter" {
            if let Some(l) = v.get("logs") {
                out.push(("/filter/logs".into(), Slot::OptObject));
                if l.get("min_level").is_some() {
                    out.push(("/filter/logs/min_level".into(), Slot::Level));
                }
                if l.get("source").is_some() {
                    out.push(("/filter/logs/source".into(), Slot::OptStr));
                }
            }
        }
    }
    out
}

fn required(op: &str) -> &'static [&'static str] {
    match op {
        "auth" => &["token"],
        "subscribe" | "unsubscribe" => &["team"],
        "publish" => &["team", "stream", "data"],
        "silence" => &["team", "fingerprint"],
        _ => &[],
    }
}

fn esc(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

/// A fault, applied to one slot picked by an index.
#[derive(Clone, Debug)]
enum Fault {
    /// The op is valid as generated.
    None,
    /// A value of another JSON type at a slot.
    WrongType(Index, Value),
    /// An unknown field in an object slot.
    Unknown(Index, String),
    /// A required field of an object slot removed.
    Missing(Index, Index),
    /// An unknown name where a stream or a level goes.
    BadName(Index, String),
    /// `streams: []`.
    EmptyStreams,
    /// `id` that is not an integer.
    BadId(Value),
    /// `op` that is not a string, missing, or unknown.
    BadOp(Option<Value>),
    /// A `traceparent` that is not a string: ignored.
    OddTraceparent(Value),
}

fn arb_fault() -> impl Strategy<Value = Fault> {
    let wrong = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i.min(-1))),
        Just(json!(1.5)),
        arb_text().prop_map(Value::String),
        Just(json!([])),
        Just(json!({})),
        Just(json!(["logs"])),
    ];
    prop_oneof![
        3 => Just(Fault::None),
        4 => (any::<Index>(), wrong).prop_map(|(i, v)| Fault::WrongType(i, v)),
        2 => (any::<Index>(), "[a-z_]{1,10}").prop_map(|(i, k)| Fault::Unknown(i, format!("x_{k}"))),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(i, j)| Fault::Missing(i, j)),
        2 => (any::<Index>(), "[a-zA-Z ]{0,10}").prop_map(|(i, n)| Fault::BadName(i, format!("no{n}"))),
        1 => Just(Fault::EmptyStreams),
        1 => prop_oneof![
            Just(json!("7")), Just(json!(1.0)), Just(json!(true)), Just(json!([1])),
            Just(json!({})), Just(json!(u64::MAX)), Just(json!(9223372036854775808u64)),
        ].prop_map(Fault::BadId),
        1 => prop::option::of(prop_oneof![
            arb_json(1).prop_filter("not a string", |v| !v.is_string()),
            "[a-z]{1,80}".prop_filter("not an op", |s| !matches!(s.as_str(),
                "auth" | "subscribe" | "unsubscribe" | "ping" | "publish" | "silence")).prop_map(Value::String),
        ]).prop_map(Fault::BadOp),
        1 => arb_json(1).prop_filter("not a string", |v| !v.is_string()).prop_map(Fault::OddTraceparent),
    ]
}

/// What decoding the faulty op must give.
#[derive(Debug)]
enum Expect {
    /// The op, as [`encode`] writes it.
    Op(Value),
    /// A bad request whose message starts with the first string and
    /// contains the second.
    Bad(String, String),
    Unknown(String),
}

struct Built {
    text: String,
    id: Option<i64>,
    traceparent: Option<String>,
    expect: Expect,
}

fn wrong_for(slot: Slot, v: &Value) -> bool {
    match slot {
        Slot::Str => !v.is_string(),
        Slot::OptStr => !v.is_string() && !v.is_null(),
        Slot::U64 => !v.is_u64(),
        Slot::Streams => !v.is_array(),
        Slot::Stream => !v.is_string(),
        Slot::Level => !v.is_string() && !v.is_null(),
        // KNOWN: serde reads a struct from an array too, by position
        // (`"resume":{"logs":["e",5]}` is accepted; see
        // `known_nested_objects_refuse_arrays`): arrays are left out here.
        Slot::Object(_) => !v.is_object() && !v.is_array(),
        Slot::ResumeMap => !v.is_object(),
        Slot::OptObject => !v.is_object() && !v.is_null() && !v.is_array(),
    }
}

fn build(
    op: &str,
    mut body: Map<String, Value>,
    id: Option<i64>,
    tp: Option<String>,
    fault: &Fault,
) -> Built {
    let mut expect = Expect::Op(expected(op, &body));
    let prefix = format!("{op}: ");
    let places = slots(op, &body);
    let mut root = Value::Object(std::mem::take(&mut body));
    let mut frame_id = id.map(Value::from);
    let mut frame_tp = tp.clone().map(Value::String);
    let mut frame_op = Some(Value::from(op));
    let mut want_id = id;
    let mut want_tp = tp;
    match fault {
        Fault::None => {}
        Fault::WrongType(i, v) => {
            let (path, slot) = &places[i.index(places.len())];
            if wrong_for(*slot, v) && !path.is_empty() {
                *root.pointer_mut(path).unwrap() = v.clone();
                expect = Expect::Bad(prefix, String::new());
            }
        }
        Fault::Unknown(i, key) => {
            let objects: Vec<_> = places
                .iter()
                .filter(|(p, s)| {
                    matches!(s, Slot::Object(_))
                        || (*s == Slot::OptObject && root.pointer(p).is_some_and(Value::is_object))
                })
                .collect();
            let (path, _) = objects[i.index(objects.len())];
            root.pointer_mut(path)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .insert(key.clone(), json!(1));
            // `ping` ignores other fields (docs/protocol.md).
            expect = if op == "ping" {
                Expect::Op(json!({"op": "ping"}))
            } else {
                Expect::Bad(prefix, format!("unknown field `{key}`"))
            };
        }
        Fault::Missing(i, j) => {
            let objects: Vec<_> = places
                .iter()
                .filter_map(|(p, s)| match s {
                    Slot::Object(req) if !req.is_empty() => Some((p, *req)),
                    _ => None,
                })
                .collect();
            if !objects.is_empty() {
                let (path, req) = objects[i.index(objects.len())];
                let key = req[j.index(req.len())];
                root.pointer_mut(path)
                    .unwrap()
                    .as_object_mut()
                    .unwrap()
                    .remove(key);
                expect = Expect::Bad(prefix, format!("missing field `{key}`"));
            }
        }
        Fault::BadName(i, name) => {
            let named: Vec<_> = places
                .iter()
                .filter(|(_, s)| matches!(s, Slot::Stream | Slot::Level | Slot::ResumeMap))
                .collect();
            if !named.is_empty() {
                let (path, slot) = named[i.index(named.len())];
                if *slot == Slot::ResumeMap {
                    root.pointer_mut(path)
                        .unwrap()
                        .as_object_mut()
                        .unwrap()
                        .insert(name.clone(), json!({"epoch": "e", "seq": 1}));
                } else {
                    *root.pointer_mut(path).unwrap() = Value::String(name.clone());
                }
                let what = if *slot == Slot::Level {
                    format!("unknown level `{name}`")
                } else {
                    format!("unknown variant `{name}`")
                };
                expect = Expect::Bad(prefix, what);
            }
        }
        Fault::EmptyStreams => {
            if op == "subscribe" {
                root["streams"] = json!([]);
                expect = Expect::Bad("subscribe: `streams` is empty".into(), String::new());
            } else if op == "unsubscribe" {
                root["streams"] = json!([]);
                expect = Expect::Op(expected(op, root.as_object().unwrap()));
            }
        }
        Fault::BadId(v) => {
            frame_id = Some(v.clone());
            want_id = None;
            // A bad id ends decoding before `traceparent` is read.
            want_tp = None;
            expect = Expect::Bad("`id` must be an integer".into(), String::new());
        }
        Fault::BadOp(v) => {
            frame_op = v.clone();
            expect = match v {
                None => Expect::Bad("missing field `op`".into(), String::new()),
                Some(Value::String(s)) => Expect::Unknown(s.chars().take(64).collect()),
                Some(_) => Expect::Bad("`op` must be a string".into(), String::new()),
            };
        }
        Fault::OddTraceparent(v) => {
            frame_tp = Some(v.clone());
            want_tp = None;
        }
    }
    let obj = root.as_object_mut().unwrap();
    if let Some(v) = frame_op {
        obj.insert("op".into(), v);
    }
    if let Some(v) = frame_id {
        obj.insert("id".into(), v);
    }
    if let Some(v) = frame_tp {
        obj.insert("traceparent".into(), v);
    }
    Built {
        text: root.to_string(),
        id: want_id,
        traceparent: want_tp,
        expect,
    }
}

fn check_expect(b: &Built, got: &Inbound) -> Result<(), TestCaseError> {
    check!(got.id == b.id, "id {:?}, expected {:?}", got.id, b.id);
    check!(
        got.traceparent == b.traceparent,
        "traceparent {:?}, expected {:?}",
        got.traceparent,
        b.traceparent
    );
    match (&b.expect, &got.op) {
        (Expect::Op(want), Ok(op)) => {
            check!(
                json_close(want, &encode(op)),
                "decoded {} instead of {want}",
                encode(op)
            );
        }
        (Expect::Bad(start, has), Err(OpError::BadRequest(m))) => {
            check!(
                m.starts_with(start.as_str()) && m.contains(has.as_str()),
                "message {m:?} should start with {start:?} and name {has:?}"
            );
        }
        (Expect::Unknown(name), Err(OpError::UnknownOp(n))) => {
            check!(n == name, "unknown op {n:?}, expected {name:?}")
        }
        (want, got) => {
            return Err(TestCaseError::fail(format!(
                "expected {want:?}, got {got:?}"
            )))
        }
    }
    Ok(())
}

/// A valid op, its `id` and `traceparent`, and a fault to inject.
type CaseInput = (
    (&'static str, Map<String, Value>),
    Option<i64>,
    Option<String>,
    Fault,
);

fn arb_case() -> impl Strategy<Value = CaseInput> {
    (
        arb_valid_op(),
        prop::option::of(any::<i64>()),
        prop::option::of(arb_text()),
        arb_fault(),
    )
}

#[test]
fn op_decoder_structured() {
    support::run(
        "op_decoder_structured",
        arb_case(),
        |((op, body), id, tp, fault)| {
            let b = build(op, body, id, tp, &fault);
            let got = parse_inbound(&b.text);
            check_expect(&b, &got)?;
            check_any(&b.text, &got)
        },
    );
}

#[test]
fn op_decoder_mutated() {
    let strategy = (arb_case(), arb_mutations());
    support::run(
        "op_decoder_mutated",
        strategy,
        |(((op, body), id, tp, fault), edits)| {
            let b = build(op, body, id, tp, &fault);
            let text = mutate_str(&b.text, &edits);
            check_any(&text, &parse_inbound(&text))
        },
    );
}

#[test]
fn op_decoder_arbitrary() {
    let strategy = prop_oneof![
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..256)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        arb_json(4).prop_map(|v| v.to_string()),
        (
            prop::sample::select(vec![
                "auth",
                "subscribe",
                "unsubscribe",
                "ping",
                "publish",
                "silence"
            ]),
            arb_json(3)
        )
            .prop_map(|(op, v)| {
                let mut m = match v {
                    Value::Object(m) => m,
                    other => Map::from_iter([("team".to_owned(), other)]),
                };
                m.insert("op".into(), op.into());
                Value::Object(m).to_string()
            }),
    ];
    support::run("op_decoder_arbitrary", strategy, |text| {
        check_any(&text, &parse_inbound(&text))
    });
}

#[test]
fn op_decoder_deep_and_huge() {
    let strategy = (
        1usize..3000,
        any::<bool>(),
        prop::sample::select(vec![
            "1e400", "-1e400", "18446744073709551616", "-9223372036854775809", "1e-400",
            "123456789012345678901234567890", "0.0000000000000000000000000001", "-0",
        ]),
        0usize..4,
    )
        .prop_map(|(depth, object, num, shape)| match shape {
            0 => format!(r#"{{"op":"publish","team":"alpha","stream":"logs","data":{}}}"#, deep_json(depth, object)),
            1 => format!(r#"{{"op":"subscribe","id":{num},"team":"alpha"}}"#),
            2 => format!(r#"{{"op":"subscribe","team":"alpha","resume":{{"logs":{{"epoch":"e","seq":{num}}}}}}}"#),
            _ => format!(r#"{{"op":"silence","team":"a","fingerprint":"f","duration_s":{num},"comment":{}}}"#, deep_json(depth.min(200), object)),
        });
    support::run("op_decoder_deep_and_huge", strategy, |text| {
        check_any(&text, &parse_inbound(&text))
    });
}

/// docs/protocol.md: unknown fields are refused in every op but `ping`,
/// a liveness probe, which ignores them.
#[test]
fn ping_ignores_other_fields() {
    let got = parse_inbound(r#"{"op":"ping","id":3,"pad":"xxxx"}"#);
    assert!(matches!(got.op, Ok(Op::Ping)), "{:?}", got.op);
    assert_eq!(got.id, Some(3));
}

/// docs/protocol.md describes `resume` entries and `filter` as objects
/// that refuse unknown fields; serde also reads them from arrays, by
/// position.
#[test]
#[ignore = "KNOWN: resume points and filters are also accepted as arrays, by position"]
fn known_nested_objects_refuse_arrays() {
    let got = parse_inbound(
        r#"{"op":"subscribe","team":"a","resume":{"logs":["e",5]},"filter":{"logs":["warn","api"]}}"#,
    );
    assert!(
        matches!(got.op, Err(OpError::BadRequest(_))),
        "{:?}",
        got.op
    );
}

/// A field of the wrong type is refused with serde's "invalid type: …,
/// expected …", which names the value and the type but not the field: a
/// client cannot tell which of its fields is wrong (JSON-lines ingest
/// errors at least carry a column).
#[test]
fn type_errors_name_the_field() {
    for (text, field) in [
        (r#"{"op":"subscribe","team":5}"#, "team"),
        (
            r#"{"op":"subscribe","team":"a","resume":{"logs":{"epoch":"e","seq":-1}}}"#,
            "seq",
        ),
        (
            r#"{"op":"silence","team":"a","fingerprint":"f","duration_s":"1h"}"#,
            "duration_s",
        ),
    ] {
        let got = parse_inbound(text);
        let Err(OpError::BadRequest(m)) = &got.op else {
            panic!("{:?}", got.op)
        };
        assert!(m.contains(field), "{text}: {m:?} does not name `{field}`");
    }
}

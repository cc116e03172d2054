//! Resume points: `Last-Event-ID` (`transport::sse::parse_event_id`) and
//! the `resume` field of subscribe ops, and what the hub does with them.
//!
//! Invariants:
//! * `parse_event_id` never panics; it never yields a metrics point; a
//!   parsed id re-encodes (`logs:<epoch>:<seq>,alerts:<epoch>:<seq>`) to
//!   text that parses to the same points;
//! * a well-formed id parses to exactly its points, whatever malformed or
//!   metrics parts and whitespace surround them;
//! * a resume point, from either source, is honoured by the hub exactly as
//!   docs/protocol.md's resume rules say: `recovered:true` and every frame
//!   after `seq` in order (filtered as asked) when the epoch is current,
//!   `seq` is not from the future and the history still holds `seq + 1`;
//!   otherwise `recovered:false`, no log replay, and the firing alerts;
//!   `recovered` has an entry exactly for each resumed log or alert stream.

use std::collections::BTreeMap;

use opswire::protocol::{
    parse_inbound, AlertRecord, AlertStatus, Level, LogFilter, LogRecord, Op, ResumePoint, Stream,
};
use opswire::transport::sse::parse_event_id;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};

use crate::check;
use crate::support::{self, arb_mutations, arb_text, mutate_str};

/// The `id:` text of these points, as the server writes it.
pub fn encode_event_id(points: &BTreeMap<Stream, ResumePoint>) -> String {
    points
        .iter()
        .map(|(s, p)| format!("{s}:{}:{}", p.epoch, p.seq))
        .collect::<Vec<_>>()
        .join(",")
}

fn check_parsed(text: &str, got: &BTreeMap<Stream, ResumePoint>) -> Result<(), TestCaseError> {
    check!(
        !got.contains_key(&Stream::Metrics),
        "a metrics resume point from {text:?}"
    );
    let again = parse_event_id(&encode_event_id(got));
    check!(
        &again == got,
        "{got:?} re-encoded to {:?}, parsed to {again:?}",
        encode_event_id(got)
    );
    for p in got.values() {
        check!(
            !p.epoch.contains(',') && !p.epoch.contains(':'),
            "epoch {:?} holds a separator",
            p.epoch
        );
    }
    Ok(())
}

/// An epoch as an id can carry it: no `,` or `:`.
fn arb_epoch() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9]{8}",
        2 => arb_text().prop_map(|s| s.replace([',', ':'], "")),
        1 => Just(String::new()),
    ]
}

/// A well-formed id with junk parts: the text and the points it holds.
fn arb_event_id() -> impl Strategy<Value = (String, BTreeMap<Stream, ResumePoint>)> {
    let point = || (arb_epoch(), any::<u64>()).prop_map(|(epoch, seq)| ResumePoint { epoch, seq });
    let junk = prop_oneof![
        Just("metrics:abc:5".to_owned()),
        arb_text()
            .prop_map(|s| s.replace(',', ""))
            .prop_filter("not a point", |s| {
                let mut it = s.trim().splitn(3, ':');
                !matches!(it.next(), Some("logs" | "alerts"))
            }),
        Just("logs:e".to_owned()),
        Just("alerts:e:-1".to_owned()),
        Just("logs:e:18446744073709551616".to_owned()),
        Just("logs:e:1:2".to_owned()),
        Just(String::new()),
    ];
    (
        prop::option::of(point()),
        prop::option::of(point()),
        prop::collection::vec(junk, 0..4),
        any::<u64>(),
    )
        .prop_map(|(logs, alerts, junk, shuffle)| {
            let mut points = BTreeMap::new();
            let mut parts: Vec<String> = junk;
            for (s, p) in [(Stream::Logs, logs), (Stream::Alerts, alerts)] {
                if let Some(p) = p {
                    let pad = if shuffle & 1 == 1 { " " } else { "" };
                    parts.push(format!("{pad}{s}:{}:{}{pad}", p.epoch, p.seq));
                    points.insert(s, p);
                }
            }
            let n = parts.len().max(1);
            parts.rotate_left((shuffle as usize >> 1) % n);
            (parts.join(","), points)
        })
}

#[test]
fn resume_event_id_arbitrary() {
    let strategy = prop_oneof![
        any::<String>(),
        arb_text(),
        (arb_event_id(), arb_mutations()).prop_map(|((t, _), m)| mutate_str(&t, &m)),
        arb_event_id().prop_map(|(t, _)| t),
    ];
    support::run("resume_event_id_arbitrary", strategy, |text| {
        let got = parse_event_id(&text);
        check_parsed(&text, &got)
    });
}

#[test]
fn resume_event_id_well_formed() {
    support::run(
        "resume_event_id_well_formed",
        arb_event_id(),
        |(text, points)| {
            let got = parse_event_id(&text);
            check!(
                got == points,
                "{text:?} parsed to {got:?}, expected {points:?}"
            );
            check_parsed(&text, &got)
        },
    );
}

/// How a case delivers its resume points.
#[derive(Clone, Debug)]
enum Via {
    LastEventId,
    SubscribeOp,
}

/// A resume point relative to the hub's position.
#[derive(Clone, Debug)]
enum Where {
    /// `current - back` (saturating).
    Back(u64),
    /// `current + ahead`: from the future.
    Ahead(u64),
    Exactly(u64),
}

#[derive(Clone, Debug)]
struct Case {
    /// Logs and alerts published before resuming.
    logs: Vec<(Level, u8)>,
    alerts: Vec<(u8, bool)>,
    streams: Vec<Stream>,
    resume: Vec<(Stream, bool, Where)>,
    filter: Option<(Option<Level>, Option<u8>)>,
    via: Via,
}

const LEVELS: [Level; 6] = [
    Level::Trace,
    Level::Debug,
    Level::Info,
    Level::Warn,
    Level::Error,
    Level::Fatal,
];

fn arb_case() -> impl Strategy<Value = Case> {
    let level = prop::sample::select(LEVELS.to_vec());
    let place = prop_oneof![
        4 => (0u64..20).prop_map(Where::Back),
        1 => (1u64..5).prop_map(Where::Ahead),
        1 => prop::sample::select(vec![0, 1, u64::MAX, u64::MAX - 1]).prop_map(Where::Exactly),
    ];
    (
        prop::collection::vec((level.clone(), 0u8..3), 0..12),
        prop::collection::vec((0u8..6, any::<bool>()), 0..4),
        prop::collection::vec(prop::sample::select(Stream::ALL.to_vec()), 1..4),
        prop::collection::vec(
            (
                prop::sample::select(Stream::ALL.to_vec()),
                prop::bool::weighted(0.85),
                place,
            ),
            0..3,
        ),
        prop::option::of((prop::option::of(level), prop::option::of(0u8..3))),
        prop_oneof![Just(Via::LastEventId), Just(Via::SubscribeOp)],
    )
        .prop_map(|(logs, alerts, streams, resume, filter, via)| Case {
            logs,
            alerts,
            streams,
            resume,
            filter,
            via,
        })
}

#[test]
fn resume_through_the_hub() {
    // A small history, so resume points fall off its end.
    let state = support::state_with(|c| {
        c.history.logs = 16;
        c.history.alerts = 8;
    });
    let team = state.hub.team_id("beta").unwrap();
    let epoch = state.hub.epoch().to_string();
    // What was published to `beta`, by seq (index seq - 1).
    let published = std::sync::Mutex::new((Vec::<LogRecord>::new(), 0u64));
    support::run("resume_through_the_hub", arb_case(), |case| {
        let mut book = published.lock().unwrap();
        let ts = opswire::time::now_micros();
        for (level, src) in &case.logs {
            let rec = LogRecord {
                level: *level,
                source: format!("s{src}"),
                host: String::new(),
                message: "m".into(),
                fields: Default::default(),
                trace_id: None,
                time: None,
            };
            let seq = state
                .hub
                .submit_log(team, &rec, ts)
                .now()
                .expect("in-memory publish")
                .unwrap_or_default();
            book.0.push(rec);
            check!(
                seq == book.0.len() as u64,
                "log seq {seq} after {} logs",
                book.0.len()
            );
        }
        for (fp, firing) in &case.alerts {
            let rec = AlertRecord {
                status: if *firing {
                    AlertStatus::Firing
                } else {
                    AlertStatus::Resolved
                },
                fingerprint: format!("fp{fp}"),
                alertname: "A".into(),
                severity: String::new(),
                labels: Default::default(),
                annotations: Default::default(),
                starts_at: "2026-11-22T10:00:00Z".into(),
                ends_at: None,
                generator_url: String::new(),
            };
            if let Some(seq) = state
                .hub
                .submit_alert(team, &rec, ts)
                .now()
                .expect("in-memory publish")
            {
                book.1 += 1;
                check!(seq == book.1, "alert seq {seq}, expected {}", book.1);
            }
        }
        let current = |s: Stream| {
            if s == Stream::Logs {
                book.0.len() as u64
            } else {
                book.1
            }
        };
        let cap = |s: Stream| if s == Stream::Logs { 16 } else { 8 };
        // The points, relative to now.
        let mut points = BTreeMap::new();
        for (s, same_epoch, place) in &case.resume {
            let seq = match place {
                Where::Back(b) => current(*s).saturating_sub(*b),
                Where::Ahead(a) => current(*s) + a,
                Where::Exactly(n) => *n,
            };
            let other = if epoch.starts_with('x') { 'y' } else { 'x' };
            let e = if *same_epoch {
                epoch.clone()
            } else {
                format!("{other}{}", &epoch[1..])
            };
            points.insert(*s, ResumePoint { epoch: e, seq });
        }
        let filter = case.filter.map(|(min_level, src)| LogFilter {
            min_level,
            source: src.map(|s| format!("s{s}, s{}", (s + 1) % 3)),
        });
        // Delivered as a client would.
        let (streams, resume, filter) = match case.via {
            Via::LastEventId => {
                let parsed = parse_event_id(&encode_event_id(&points));
                points.remove(&Stream::Metrics);
                check!(
                    parsed == points,
                    "Last-Event-ID {:?} parsed to {parsed:?}",
                    encode_event_id(&points)
                );
                (case.streams.clone(), parsed, filter)
            }
            Via::SubscribeOp => {
                let op = json!({
                    "op": "subscribe", "id": 1, "team": "beta",
                    "streams": case.streams.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                    "resume": points.iter().map(|(s, p)| (s.as_str().to_owned(), json!({"epoch": p.epoch, "seq": p.seq}))).collect::<serde_json::Map<_, _>>(),
                    "filter": {"logs": filter.as_ref().map(|f| json!({"min_level": f.min_level.map(Level::as_str), "source": f.source}))},
                });
                let got = parse_inbound(&op.to_string());
                let Ok(Op::Subscribe(s)) = got.op else {
                    return Err(TestCaseError::fail(format!(
                        "subscribe {op} refused: {:?}",
                        got.op
                    )));
                };
                check!(
                    s.resume == points,
                    "resume {:?} decoded as {:?}",
                    points,
                    s.resume
                );
                (s.streams, s.resume, s.filter.logs)
            }
        };
        // Sorted and deduplicated, as both transports do before the hub.
        let mut streams = streams;
        streams.sort();
        streams.dedup();
        let mut session = state.hub.open_session();
        let sub = session
            .subscribe(team, &streams, &resume, filter.clone())
            .map_err(|e| TestCaseError::fail(format!("subscribe: {e}")))?;
        let firing = state.hub.firing_alerts(team);
        // The replay is queued in the session's mailbox.
        let mut queued = Vec::new();
        session.mailbox().drain(&mut queued);
        drop(session);

        check!(
            !sub.recovered.contains_key(&Stream::Metrics),
            "a metrics resume reported: {:?}",
            sub.recovered
        );
        for s in [Stream::Logs, Stream::Alerts] {
            let asked = streams.contains(&s);
            let point = resume.get(&s).filter(|_| asked);
            let recovered = point.map(|p| {
                let cur = current(s);
                let oldest = cur.saturating_sub(cap(s)) + 1;
                p.epoch == epoch && p.seq <= cur && p.seq + 1 >= oldest
            });
            check!(
                sub.recovered.get(&s).copied() == recovered,
                "{s}: recovered {:?}, expected {recovered:?} (point {point:?}, current {})",
                sub.recovered.get(&s),
                current(s)
            );
            if asked {
                check!(
                    sub.positions.get(&s) == Some(&current(s)),
                    "{s}: position {:?}, current {}",
                    sub.positions.get(&s),
                    current(s)
                );
            }
            let replay: Vec<Value> = queued
                .iter()
                .filter(|d| d.stream == s)
                .map(|d| serde_json::from_str(&d.frame).unwrap())
                .collect();
            let seqs: Vec<u64> = replay.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
            for f in &replay {
                check!(
                    f["epoch"] == epoch.as_str() && f["team"] == "beta",
                    "frame {f}"
                );
            }
            let want: Vec<u64> = match (s, recovered) {
                (_, Some(true)) => (point.unwrap().seq + 1..=current(s))
                    .filter(|q| {
                        s == Stream::Alerts
                            || filter.as_ref().is_none_or(|f| {
                                let r = &book.0[*q as usize - 1];
                                f.matches(r.level, &r.source)
                            })
                    })
                    .collect(),
                (Stream::Alerts, _) if asked => {
                    // The firing set, oldest first.
                    let mut by_fp: Vec<u64> =
                        replay.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
                    by_fp.sort_unstable();
                    check!(
                        replay.len() == firing.len(),
                        "{} alerts replayed, {} firing",
                        replay.len(),
                        firing.len()
                    );
                    for (f, a) in replay.iter().zip(&firing) {
                        check!(
                            f["data"]["fingerprint"] == a.fingerprint.as_str(),
                            "replayed {f}, firing {a:?}"
                        );
                    }
                    by_fp
                }
                _ => Vec::new(),
            };
            check!(seqs == want, "{s}: replayed seqs {seqs:?}, expected {want:?} (point {point:?}, current {}, filter {filter:?})", current(s));
        }
        Ok(())
    });
}

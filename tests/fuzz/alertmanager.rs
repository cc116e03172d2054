//! The Alertmanager webhook (`POST /api/v1/alerts/alertmanager`): the JSON
//! parsed into `ingest::alertmanager::Webhook`, the validation step and
//! the hub's dedup, driven through the real handler (its `validate` is
//! private; the handler is the smallest public door to it).
//!
//! Invariants (docs/sources.md, "Alertmanager"):
//! * never a panic, never a 5xx;
//! * a payload that is not a `Webhook` gets 400 `webhook payload: …`;
//!   version other than "4", a bad status, no `alertname`, or a bad
//!   `startsAt`/`endsAt` gets 400 naming the first bad alert
//!   (`alerts[i].status`, …), and nothing is published;
//! * a good payload gets 200 `{status, alerts, published, deduplicated}`,
//!   and exactly the transitions are published, in order, to the team of
//!   each alert's team label (unknown or missing: the default team): a
//!   firing alert identical to the current one, or a resolved one already
//!   resolved, publishes nothing; the hub's firing set matches a model of
//!   those rules; a payload without fingerprints gets stable ones;
//! * only `alertmanager.webhook_token` or an `ingest` token for every team
//!   is let in: 401 without a valid token, 403 for a valid but too narrow
//!   one, whatever the header looks like.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use actix_web::test::TestRequest;
use opswire::auth::{bearer_token, mint, now_s, Claims};
use opswire::ingest::alertmanager::Webhook;
use opswire::protocol::Stream;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};

use crate::check;
use crate::json_lines::rfc3339;
use crate::support::{self, arb_mutations, arb_text, json_close, mutate, SECRET, TEAMS};

const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
const RESOLVED_MEMORY: usize = 4096;

fn arb_time() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => (86_400_000_000i64..4_000_000_000_000_000, -720i32..720, any::<bool>())
            .prop_map(|(us, off, frac)| Value::from(rfc3339(us, off, frac))),
        1 => prop::sample::select(vec!["yesterday", "", "2026-11-23", "2026-02-30T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"])
            .prop_map(Value::from),
    ]
}

fn arb_labels(with_random: bool) -> impl Strategy<Value = BTreeMap<String, String>> {
    let pick =
        |v: Vec<&'static str>| prop::option::of(prop::sample::select(v).prop_map(str::to_owned));
    (
        prop::option::weighted(
            0.9,
            prop::sample::select(vec!["HighCpu", "DiskFull", "Down", ""]).prop_map(str::to_owned),
        ),
        pick(vec!["alpha", "beta", "gamma", "nope", ""]),
        pick(vec!["critical", "warning"]),
        pick(vec!["i1", "i2", "i3"]),
        if with_random {
            prop::collection::btree_map(arb_text(), arb_text(), 0..3).boxed()
        } else {
            Just(BTreeMap::new()).boxed()
        },
    )
        .prop_map(|(alertname, team, severity, instance, extra)| {
            let mut m = extra;
            for (k, v) in [
                ("alertname", alertname),
                ("team", team),
                ("severity", severity),
                ("instance", instance),
            ] {
                m.remove(k);
                if let Some(v) = v {
                    m.insert(k.to_owned(), v);
                }
            }
            m
        })
}

fn arb_alert() -> impl Strategy<Value = Value> {
    (
        prop_oneof![6 => Just("firing".to_owned()), 4 => Just("resolved".to_owned()), 1 => arb_text()],
        // An explicit fingerprint from a small pool, or none (then the
        // labels, from small pools too, decide it): the hub's firing set
        // stays bounded over millions of cases.
        prop_oneof![4 => (0u8..16).prop_map(|n| Some(format!("fp{n}"))), 1 => Just(None)],
        any::<bool>(),
        prop::collection::btree_map(prop::sample::select(vec!["summary", "runbook"]), arb_text(), 0..2),
        arb_time(),
        prop_oneof![2 => Just(None), 1 => Just(Some(Value::Null)), 1 => Just(Some(json!(""))), 1 => Just(Some(json!(ZERO_TIME))), 1 => arb_time().prop_map(Some)],
        prop::option::of(arb_text()),
    )
        .prop_flat_map(|(status, fp, random_labels, annotations, starts, ends, url)| {
            arb_labels(random_labels && fp.is_some()).prop_map(move |labels| {
                let mut a = json!({"status": status, "labels": labels, "annotations": annotations, "startsAt": starts});
                if let Some(e) = &ends {
                    a["endsAt"] = e.clone();
                }
                if let Some(u) = &url {
                    a["generatorURL"] = u.as_str().into();
                }
                if let Some(f) = &fp {
                    a["fingerprint"] = f.as_str().into();
                }
                a
            })
        })
}

fn arb_webhook() -> impl Strategy<Value = Value> {
    (
        prop_oneof![8 => Just(json!("4")), 1 => Just(json!("3")), 1 => Just(json!(4))],
        prop::collection::vec(arb_alert(), 0..5),
        any::<bool>(),
    )
        .prop_map(|(version, alerts, extras)| {
            let mut w = json!({"version": version, "status": "firing", "receiver": "opswire", "alerts": alerts});
            if extras {
                w["groupKey"] = json!("{}:{}");
                w["truncatedAlerts"] = json!(0);
                w["commonLabels"] = json!({"a": "b"});
                w["externalURL"] = json!("http://am");
                w["unknownField"] = json!([1, 2]);
            }
            w
        })
}

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------

/// A firing alert's identity: its fingerprint, or (without one) its
/// labels, from which the server derives one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Fp(String),
    Labels(String),
}

#[derive(Default)]
struct TeamModel {
    firing: HashMap<Key, Value>,
    /// Firing keys in the order of their frames (oldest first).
    order: Vec<Key>,
    resolved: VecDeque<Key>,
    resolved_set: HashSet<Key>,
}

/// One validated alert: its team, identity and the record it must be.
struct Routed {
    team: usize,
    key: Key,
    record: Value,
}

enum Want {
    Refused(&'static str, String),
    Ok(Vec<Routed>),
}

fn want(body: &[u8]) -> Want {
    let hook: Webhook = match serde_json::from_slice(body) {
        Ok(h) => h,
        Err(_) => return Want::Refused("webhook payload: ", String::new()),
    };
    if hook.version != "4" {
        return Want::Refused("unsupported webhook version", String::new());
    }
    let mut out = Vec::new();
    for (i, a) in hook.alerts.into_iter().enumerate() {
        if a.status != "firing" && a.status != "resolved" {
            return Want::Refused("alerts[", format!("alerts[{i}].status: "));
        }
        let Some(alertname) = a.labels.get("alertname").cloned() else {
            return Want::Refused("alerts[", format!("alerts[{i}].labels: no `alertname`"));
        };
        if opswire::time::parse_rfc3339_micros(&a.starts_at).is_none() {
            return Want::Refused("alerts[", format!("alerts[{i}].startsAt: "));
        }
        let ends = a.ends_at.filter(|e| e != ZERO_TIME && !e.is_empty());
        if ends
            .as_deref()
            .is_some_and(|e| opswire::time::parse_rfc3339_micros(e).is_none())
        {
            return Want::Refused("alerts[", format!("alerts[{i}].endsAt: "));
        }
        let team = a
            .labels
            .get("team")
            .and_then(|t| TEAMS.iter().position(|k| k == t))
            .unwrap_or(0);
        let key = if a.fingerprint.is_empty() {
            Key::Labels(serde_json::to_string(&a.labels).unwrap())
        } else {
            Key::Fp(a.fingerprint.clone())
        };
        let record = json!({
            "status": a.status, "fingerprint": a.fingerprint, "alertname": alertname,
            "severity": a.labels.get("severity").cloned().unwrap_or_default(),
            "labels": a.labels, "annotations": a.annotations, "starts_at": a.starts_at,
            "ends_at": ends, "generator_url": a.generator_url,
        });
        out.push(Routed { team, key, record });
    }
    Want::Ok(out)
}

/// Applies the dedup rules, and the expiry that follows every publish (a
/// firing alert whose `ends_at` has passed is resolved, oldest first);
/// the records that publish a frame, per team, and how many of the
/// routed records published one (expiries are not counted there).
fn apply(model: &mut [TeamModel], routed: &[Routed]) -> (Vec<Vec<(Key, Value)>>, usize) {
    let mut frames = vec![Vec::new(); TEAMS.len()];
    let mut published = 0;
    let now = opswire::time::now_micros();
    for r in routed {
        let m = &mut model[r.team];
        published += usize::from(transition(m, &r.key, &r.record, &mut frames[r.team]));
        let expired: Vec<Key> = m
            .order
            .iter()
            .filter(|k| {
                m.firing[*k]["ends_at"]
                    .as_str()
                    .and_then(opswire::time::parse_rfc3339_micros)
                    .is_some_and(|end| end <= now)
            })
            .cloned()
            .collect();
        for key in expired {
            let mut record = m.firing[&key].clone();
            record["status"] = "resolved".into();
            transition(m, &key, &record, &mut frames[r.team]);
        }
    }
    (frames, published)
}

/// One alert transition of a team's model: a frame unless it repeats the
/// alert's state (then false).
fn transition(
    m: &mut TeamModel,
    key: &Key,
    record: &Value,
    frames: &mut Vec<(Key, Value)>,
) -> bool {
    let r = Routed {
        team: 0,
        key: key.clone(),
        record: record.clone(),
    };
    {
        let firing = r.record["status"] == "firing";
        if firing
            && m.firing
                .get(&r.key)
                .is_some_and(|f| same_alert(f, &r.record))
        {
            return false;
        }
        if !firing && !m.firing.contains_key(&r.key) && m.resolved_set.contains(&r.key) {
            return false;
        }
        m.order.retain(|k| *k != r.key);
        if firing {
            if m.resolved_set.remove(&r.key) {
                m.resolved.retain(|k| *k != r.key);
            }
            m.firing.insert(r.key.clone(), r.record.clone());
            m.order.push(r.key.clone());
        } else {
            m.firing.remove(&r.key);
            if m.resolved_set.insert(r.key.clone()) {
                m.resolved.push_back(r.key.clone());
                if m.resolved.len() > RESOLVED_MEMORY {
                    let old = m.resolved.pop_front().unwrap();
                    m.resolved_set.remove(&old);
                }
            }
        }
        frames.push((r.key, r.record));
    }
    true
}

/// Records equal but for a derived fingerprint.
fn same_alert(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if v["fingerprint"] == "" {
            v["fingerprint"] = Value::Null;
        }
        v
    };
    let (mut a, b) = (strip(a), strip(b));
    if b["fingerprint"].is_null() {
        a["fingerprint"] = Value::Null;
    }
    json_close(&a, &b)
}

fn is_derived(fp: &str) -> bool {
    fp.len() == 16
        && fp
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn alerts_seq(state: &opswire::app::AppState, team: usize) -> u64 {
    let mut s = state.hub.open_session();
    s.subscribe(team, &[Stream::Alerts], &BTreeMap::new(), None)
        .unwrap()
        .positions[&Stream::Alerts]
}

fn alerts_after(state: &opswire::app::AppState, team: usize, after: u64) -> Vec<Value> {
    let mut s = state.hub.open_session();
    let resume = BTreeMap::from([(
        Stream::Alerts,
        opswire::protocol::ResumePoint {
            epoch: state.hub.epoch().to_string(),
            seq: after,
        },
    )]);
    let sub = s.subscribe(team, &[Stream::Alerts], &resume, None).unwrap();
    assert_eq!(sub.recovered.get(&Stream::Alerts), Some(&true));
    // The replay is queued in the session's mailbox.
    let mut replay = Vec::new();
    s.mailbox().drain(&mut replay);
    replay
        .iter()
        .map(|d| serde_json::from_str(&d.frame).unwrap())
        .collect()
}

fn check_post<S>(
    srv: &support::Http<S>,
    model: &std::sync::Mutex<Vec<TeamModel>>,
    body: Vec<u8>,
) -> Result<(), TestCaseError>
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    let want = want(&body);
    let before: Vec<u64> = (0..TEAMS.len())
        .map(|t| alerts_seq(&srv.state, t))
        .collect();
    let req = TestRequest::post()
        .uri("/api/v1/alerts/alertmanager")
        .insert_header(("content-type", "application/json"))
        .set_payload(body);
    let (status, bytes) = srv.call(req.to_request());
    match want {
        Want::Refused(prefix, names) => {
            check!(
                status == 400,
                "status {status} for a bad payload: {}",
                String::from_utf8_lossy(&bytes)
            );
            support::check_error(status, &bytes, &[prefix])?;
            let m: Value = serde_json::from_slice(&bytes).unwrap();
            check!(
                m["message"].as_str().unwrap().starts_with(&names),
                "{m} should name {names:?}"
            );
            for t in 0..TEAMS.len() {
                check!(
                    alerts_seq(&srv.state, t) == before[t],
                    "a refused payload published to {}",
                    TEAMS[t]
                );
            }
        }
        Want::Ok(routed) => {
            check!(
                status == 200,
                "status {status} for a good payload: {}",
                String::from_utf8_lossy(&bytes)
            );
            let mut model = model.lock().unwrap();
            let (frames, published) = apply(&mut model, &routed);
            let r: Value = serde_json::from_slice(&bytes)
                .map_err(|e| TestCaseError::fail(format!("answer: {e}")))?;
            check!(
                r == json!({"status": "ok", "alerts": routed.len(), "published": published, "deduplicated": routed.len() - published}),
                "answer {r}, expected {} alerts, {published} published",
                routed.len()
            );
            for (t, want) in frames.iter().enumerate() {
                let got = alerts_after(&srv.state, t, before[t]);
                check!(
                    got.len() == want.len(),
                    "{}: {} alert frames, expected {}",
                    TEAMS[t],
                    got.len(),
                    want.len()
                );
                for (f, (key, rec)) in got.iter().zip(want) {
                    let fp = f["data"]["fingerprint"].as_str().unwrap_or_default();
                    check!(
                        matches!(key, Key::Fp(k) if k == fp)
                            || (matches!(key, Key::Labels(_)) && is_derived(fp)),
                        "fingerprint {fp:?} for {key:?}"
                    );
                    check!(
                        same_alert(&f["data"], rec),
                        "{}: frame {}\n expected {rec}",
                        TEAMS[t],
                        f["data"]
                    );
                }
                // The firing set is the model's.
                let firing = srv.state.hub.firing_alerts(t);
                check!(
                    firing.len() == model[t].firing.len(),
                    "{}: {} firing, model has {}",
                    TEAMS[t],
                    firing.len(),
                    model[t].firing.len()
                );
                for a in &firing {
                    let v = serde_json::to_value(a).unwrap();
                    let key = if is_derived(&a.fingerprint) {
                        Key::Labels(serde_json::to_string(&a.labels).unwrap())
                    } else {
                        Key::Fp(a.fingerprint.clone())
                    };
                    check!(
                        model[t].firing.get(&key).is_some_and(|m| same_alert(&v, m)),
                        "{}: firing {v} not in the model",
                        TEAMS[t]
                    );
                }
            }
        }
    }
    Ok(())
}

fn model() -> std::sync::Mutex<Vec<TeamModel>> {
    std::sync::Mutex::new((0..TEAMS.len()).map(|_| TeamModel::default()).collect())
}

#[test]
fn alertmanager_structured() {
    let srv = support::http(|_| {});
    let model = model();
    support::run("alertmanager_structured", arb_webhook(), |w| {
        check_post(&srv, &model, w.to_string().into_bytes())
    });
}

#[test]
fn alertmanager_mutated() {
    let srv = support::http(|_| {});
    let model = model();
    let strategy = (arb_webhook(), arb_mutations());
    support::run("alertmanager_mutated", strategy, |(w, edits)| {
        check_post(&srv, &model, mutate(w.to_string().into_bytes(), &edits))
    });
}

#[test]
fn alertmanager_arbitrary() {
    let srv = support::http(|_| {});
    let model = model();
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        crate::support::arb_json(3).prop_map(|v| v.to_string().into_bytes()),
        crate::support::arb_json(3).prop_map(|v| {
            json!({"version": "4", "status": "firing", "alerts": [v]})
                .to_string()
                .into_bytes()
        }),
    ];
    support::run("alertmanager_arbitrary", strategy, |body| {
        check_post(&srv, &model, body)
    });
}

// ---------------------------------------------------------------------------
// Who may post
// ---------------------------------------------------------------------------

const WEBHOOK_TOKEN: &str = "webhook-token-0123456789";

#[derive(Clone, Debug)]
enum Cred {
    None,
    Webhook,
    WebhookMutated(Vec<crate::support::Mutation>),
    Jwt {
        teams: Vec<&'static str>,
        scope: &'static str,
        ttl: i64,
    },
    Raw(String),
}

fn arb_cred() -> impl Strategy<Value = Cred> {
    prop_oneof![
        1 => Just(Cred::None),
        2 => Just(Cred::Webhook),
        3 => arb_mutations().prop_map(Cred::WebhookMutated),
        3 => (
            prop::sample::select(vec![vec!["*"], vec!["alpha"], vec!["alpha", "beta", "gamma"], vec!["*", "alpha"]]),
            prop::sample::select(vec!["ingest", "read"]),
            prop::sample::select(vec![3600i64, -3600]),
        )
            .prop_map(|(teams, scope, ttl)| Cred::Jwt { teams, scope, ttl }),
        1 => arb_text().prop_map(Cred::Raw),
    ]
}

#[test]
fn alertmanager_auth() {
    let srv = support::http(|c| {
        c.auth.jwt_secret = Some(SECRET.into());
        c.alertmanager.webhook_token = Some(WEBHOOK_TOKEN.into());
    });
    let strategy = (
        arb_cred(),
        prop::sample::select(vec![
            "Bearer ", "bearer ", "Bearer  ", "Basic ", "", "Bearer\t",
        ]),
    );
    support::run("alertmanager_auth", strategy, |(cred, scheme)| {
        let body = json!({"version": "4", "status": "firing", "alerts": [{"status": "resolved",
            "labels": {"alertname": "A", "team": "alpha"}, "startsAt": "2026-11-22T10:00:00Z", "fingerprint": "auth-fp"}]});
        let token = match &cred {
            Cred::None => None,
            Cred::Webhook => Some(WEBHOOK_TOKEN.to_owned()),
            Cred::WebhookMutated(m) => Some(
                String::from_utf8_lossy(&mutate(WEBHOOK_TOKEN.as_bytes().to_vec(), m)).into_owned(),
            ),
            Cred::Jwt { teams, scope, ttl } => Some(
                mint(
                    &Claims {
                        sub: "am".into(),
                        teams: teams.iter().map(|t| t.to_string()).collect(),
                        exp: (now_s() as i64 + ttl) as u64,
                        iat: None,
                        scope: Some(scope.to_string()),
                    },
                    Some(SECRET),
                    None,
                )
                .unwrap(),
            ),
            Cred::Raw(s) => Some(s.clone()),
        };
        let header = token.as_ref().map(|t| format!("{scheme}{t}"));
        let mut req = TestRequest::post()
            .uri("/api/v1/alerts/alertmanager")
            .set_payload(body.to_string());
        if let Some(h) = &header {
            let Ok(v) = actix_web::http::header::HeaderValue::from_str(h) else {
                return Ok(()); // not sendable as a header
            };
            req = req.insert_header(("authorization", v));
        }
        let (status, bytes) = srv.call(req.to_request());
        // The header as the server reads it: only a visible-ASCII value is
        // text (`HeaderValue::to_str`); any other is no token at all.
        let presented = header
            .as_deref()
            .filter(|h| {
                actix_web::http::header::HeaderValue::from_str(h).is_ok_and(|v| v.to_str().is_ok())
            })
            .and_then(bearer_token);
        let want = match (&cred, presented) {
            (_, None) => 401,
            (_, Some(t)) if t == WEBHOOK_TOKEN => 200,
            (Cred::Jwt { teams, scope, ttl }, Some(_)) => {
                if *ttl < 0 {
                    401
                } else if *scope == "ingest" && teams.contains(&"*") {
                    200
                } else {
                    403
                }
            }
            (_, Some(_)) => 401,
        };
        check!(
            status == want,
            "{cred:?} as {header:?}: status {status}, expected {want}: {}",
            String::from_utf8_lossy(&bytes)
        );
        if status != 200 {
            support::check_error(status, &bytes, &[""])?;
        }
        Ok(())
    });
}

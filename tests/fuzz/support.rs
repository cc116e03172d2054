//! What every target shares: the case count and seed, the runner, byte
//! mutations, JSON generators, and a server state to drive handlers with.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use opswire::app::AppState;
use opswire::config::{Config, TeamConfig};
use opswire::hub::TeamId;
use opswire::protocol::{ResumePoint, Stream};
use opswire::startup::Application;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{
    Config as RunnerConfig, RngSeed, TestCaseError, TestError, TestRunner,
};
use serde_json::Value;

/// The base number of cases when `OPSWIRE_FUZZ_CASES` is unset (each
/// target runs this times its [`weight`]): small enough that the whole
/// binary runs in well under a minute in a debug build.
pub const DEFAULT_CASES: u32 = 256;

/// The HS256 secret of the states and tokens built here.
pub const SECRET: &str = "fuzz-secret-0123456789abcdef0123456789";

/// The configured teams, in config order (`alpha` is the default team).
pub const TEAMS: [&str; 3] = ["alpha", "beta", "gamma"];

/// The weight of each target: its cases are `OPSWIRE_FUZZ_CASES` × this.
/// Cheap targets (over ~10k cases/s in a release build) get 8, middling
/// ones (2k–10k/s) 2, and the costly ones (a config file written and
/// loaded, a handler and the hub's replay per case) 1, so a long run
/// spends its time evenly. A target missing here fails at once.
pub fn weight(target: &str) -> u32 {
    match target {
        "op_decoder_arbitrary"
        | "op_decoder_deep_and_huge"
        | "otlp_arbitrary"
        | "alertmanager_auth"
        | "alertmanager_arbitrary"
        | "resume_event_id_arbitrary"
        | "resume_event_id_well_formed"
        | "resume_through_the_hub"
        | "tokens_arbitrary"
        | "tokens_bearer_header"
        | "tokens_mutated_hs256"
        | "tokens_signed_claims"
        | "ws_reader_arbitrary"
        | "ws_reader_well_formed_round_trips" => 8,
        "op_decoder_mutated"
        | "op_decoder_structured"
        | "json_lines_arbitrary"
        | "json_lines_valid"
        | "otlp_mutated"
        | "alertmanager_mutated"
        | "tokens_mutated_rs256"
        | "tokens_mutated_es256"
        | "ws_reader_declared_over_the_limit" => 2,
        "json_lines_one_bad_record"
        | "otlp_structured"
        | "alertmanager_structured"
        | "config_generated"
        | "config_mutated"
        | "config_arbitrary" => 1,
        other => panic!("fuzz target `{other}` has no weight in support::weight"),
    }
}

/// Cases per test: `OPSWIRE_FUZZ_CASES`, else [`DEFAULT_CASES`].
pub fn cases() -> u32 {
    std::env::var("OPSWIRE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_CASES)
}

/// The run's seed: `OPSWIRE_FUZZ_SEED`, else one drawn from the clock
/// (printed on failure, so any failure can be replayed).
pub fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        std::env::var("OPSWIRE_FUZZ_SEED")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
    })
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Runs `test` on [`cases`] × [`weight`] inputs drawn from `strategy`. A failing case
/// (a returned error or a panic) is shrunk, and the test panics with the
/// smallest input found and the seed that replays it.
pub fn run<S>(
    target: &'static str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug,
{
    let cases = cases().saturating_mul(weight(target));
    let seed = seed();
    let config = RunnerConfig {
        cases,
        // The seed alone replays a run; no regression files in the tree.
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed ^ fnv(target)),
        max_shrink_iters: 4096,
        ..RunnerConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let started = Instant::now();
    let result = runner.run(&strategy, test);
    let took = started.elapsed();
    eprintln!(
        "fuzz {target}: {cases} cases in {:.2} s ({:.0}/s)",
        took.as_secs_f64(),
        cases as f64 / took.as_secs_f64().max(1e-9)
    );
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, input)) => panic!(
            "fuzz target `{target}` failed: {why}\nsmallest input: {input:#?}\n\
             replay: OPSWIRE_FUZZ_SEED={seed} OPSWIRE_FUZZ_CASES={cases} cargo test --test fuzz {target}"
        ),
        Err(TestError::Abort(why)) => panic!("fuzz target `{target}` aborted: {why} (seed {seed})"),
    }
}

/// `prop_assert!` for conditions whose message is built only on failure.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(proptest::test_runner::TestCaseError::fail(format!($($fmt)+)));
        }
    };
}

// ---------------------------------------------------------------------------
// Byte mutations
// ---------------------------------------------------------------------------

/// Tokens that tend to break parsers, spliced in by [`Mutation::Token`].
pub const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ",",
    ":",
    "\\",
    "\\u",
    "\\ud800",
    "\\udc00",
    "\\u0000",
    "null",
    "true",
    "-",
    "0",
    "-0",
    "1e999",
    "-1e999",
    "18446744073709551616",
    "-9223372036854775809",
    "9223372036854775807",
    "1.5",
    "NaN",
    "\n",
    "\r\n",
    "\t",
    " ",
    "\u{0}",
    "\u{feff}",
    "\u{2028}",
    "é",
    "😀",
    "\u{10ffff}",
    "=",
    "#",
    "'''",
    "\"\"\"",
    "[[",
    "]]",
    ".",
    "..",
    "%",
    "\u{7f}",
];

/// One edit of a byte string.
#[derive(Clone, Debug)]
pub enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Insert(Index, Vec<u8>),
    Token(Index, Index),
    Delete(Index, u8),
    Duplicate(Index, u8),
    Truncate(Index),
}

pub fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        4 => (any::<Index>(), any::<Index>()).prop_map(|(i, t)| Mutation::Token(i, t)),
        2 => (any::<Index>(), 1u8..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => (any::<Index>(), 1u8..32).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

/// One to four mutations.
pub fn arb_mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(arb_mutation(), 1..5)
}

/// Applies `edits` in order.
pub fn mutate(mut b: Vec<u8>, edits: &[Mutation]) -> Vec<u8> {
    for m in edits {
        let len = b.len();
        match m {
            Mutation::FlipBit(i, bit) if len > 0 => b[i.index(len)] ^= 1 << bit,
            Mutation::SetByte(i, v) if len > 0 => b[i.index(len)] = *v,
            Mutation::Insert(i, v) => {
                let at = i.index(len + 1);
                b.splice(at..at, v.iter().copied());
            }
            Mutation::Token(i, t) => {
                let at = i.index(len + 1);
                let tok = TOKENS[t.index(TOKENS.len())].as_bytes();
                b.splice(at..at, tok.iter().copied());
            }
            Mutation::Delete(i, n) if len > 0 => {
                let at = i.index(len);
                let end = (at + *n as usize).min(len);
                b.drain(at..end);
            }
            Mutation::Duplicate(i, n) if len > 0 => {
                let at = i.index(len);
                let end = (at + *n as usize).min(len);
                let part = b[at..end].to_vec();
                b.splice(end..end, part);
            }
            Mutation::Truncate(i) => b.truncate(i.index(len + 1)),
            _ => {}
        }
    }
    b
}

/// Mutated text, as a `&str` API sees it (invalid UTF-8 replaced).
pub fn mutate_str(s: &str, edits: &[Mutation]) -> String {
    String::from_utf8_lossy(&mutate(s.as_bytes().to_vec(), edits)).into_owned()
}

// ---------------------------------------------------------------------------
// Strings and JSON
// ---------------------------------------------------------------------------

/// Short strings of any Unicode, some of them odd on purpose.
pub fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::string::string_regex("[a-z0-9._-]{0,12}").unwrap(),
        4 => any::<String>(),
        2 => prop::sample::select(vec![
            "", " ", "\u{0}", "\u{feff}", "é", "😀", "null", "-0", "1e999", "\u{2028}", "\\",
            "\"", "\n", "ÿ\u{10ffff}", "alpha", "beta", "*", "logs", "metrics", "alerts",
        ])
        .prop_map(str::to_owned),
        1 => (any::<char>(), 0usize..5000).prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
    ]
}

/// Numbers JSON can carry, with the edges serde has to deal with.
pub fn arb_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => any::<i64>().prop_map(Value::from),
        2 => any::<u64>().prop_map(Value::from),
        1 => prop::sample::select(vec![0i64, -1, 1, i64::MAX, i64::MIN]).prop_map(Value::from),
        1 => prop::sample::select(vec![u64::MAX, 1 << 53, (1 << 53) + 1]).prop_map(Value::from),
        2 => any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        1 => prop::sample::select(vec![0.5, -0.0, 1e300, -1e-300, 2.5e-308])
            .prop_map(Value::from),
    ]
}

/// Any JSON value, nested up to `depth` levels.
pub fn arb_json(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        arb_number(),
        arb_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(arb_text(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON nested `n` levels deep: `[[[…]]]` or `{"a":{"a":…}}`.
pub fn deep_json(n: usize, object: bool) -> String {
    if object {
        format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n))
    } else {
        format!("{}1{}", "[".repeat(n), "]".repeat(n))
    }
}

/// How many representable doubles lie between `a` and `b` (0: equal).
fn ulps(a: f64, b: f64) -> u64 {
    if a == b {
        return 0;
    }
    if a.is_sign_negative() != b.is_sign_negative() {
        return u64::MAX;
    }
    a.to_bits().abs_diff(b.to_bits())
}

/// JSON equality, with floats equal when within a few ULPs: serde_json
/// (without `float_roundtrip`) may read back a printed float one ULP off.
pub fn json_close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y
                || match (x.as_f64(), y.as_f64()) {
                    (Some(p), Some(q)) if x.is_f64() || y.is_f64() => ulps(p, q) <= 4,
                    _ => false,
                }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_close(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_close(v, w)))
        }
        _ => a == b,
    }
}

// ---------------------------------------------------------------------------
// A server state, built the way the binary builds it
// ---------------------------------------------------------------------------

/// The teams `alpha`, `beta`, `gamma`, no sampler, one worker.
pub fn test_config() -> Config {
    let mut c = Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    c.teams = TEAMS
        .iter()
        .map(|t| TeamConfig {
            name: t.to_string(),
            hosts: vec![format!("{t}-*")],
        })
        .collect();
    c.sampler.enabled = false;
    c.sampler.host_name = Some("fuzz-host".into());
    c.workers = 1;
    c.history.logs = 4096;
    c
}

/// The state of a server built from `test_config()` changed by `tweak`,
/// by `Application::build` (the server itself is never started).
pub fn state_with(tweak: impl FnOnce(&mut Config)) -> Arc<AppState> {
    let mut config = test_config();
    tweak(&mut config);
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(config).expect("the fuzz server state builds");
        app.state().clone()
    })
}

/// The seq of `team`'s logs stream now.
pub fn logs_seq(state: &AppState, team: TeamId) -> u64 {
    let mut s = state.hub.open_session();
    let sub = s
        .subscribe(team, &[Stream::Logs], &BTreeMap::new(), None)
        .expect("subscribe");
    sub.positions[&Stream::Logs]
}

/// The log frames of `team` after `after`, replayed by a resume.
pub fn logs_after(state: &AppState, team: TeamId, after: u64) -> Vec<Value> {
    let mut s = state.hub.open_session();
    let resume = BTreeMap::from([(
        Stream::Logs,
        ResumePoint {
            epoch: state.hub.epoch().to_string(),
            seq: after,
        },
    )]);
    let sub = s
        .subscribe(team, &[Stream::Logs], &resume, None)
        .expect("subscribe");
    assert_eq!(
        sub.recovered.get(&Stream::Logs),
        Some(&true),
        "resume from {after}"
    );
    // The replay is queued in the session's mailbox.
    let mut replay = Vec::new();
    s.mailbox().drain(&mut replay);
    replay
        .iter()
        .map(|d| serde_json::from_str(&d.frame).expect("a log frame is JSON"))
        .collect()
}

// ---------------------------------------------------------------------------
// The real routes, in an actix test service
// ---------------------------------------------------------------------------

/// `http::routes` on a state built by [`state_with`], served by an actix
/// test service (no socket): requests go through the real handlers.
pub struct Http<S> {
    sys: actix_web::rt::SystemRunner,
    app: S,
    pub state: Arc<AppState>,
}

pub fn http(
    tweak: impl FnOnce(&mut Config),
) -> Http<
    impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
> {
    let state = state_with(tweak);
    let sys = actix_web::rt::System::new();
    let data = actix_web::web::Data::from(state.clone());
    let app = sys.block_on(actix_web::test::init_service(
        actix_web::App::new()
            .app_data(data)
            .configure(opswire::http::routes),
    ));
    Http { sys, app, state }
}

impl<S> Http<S>
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    /// Sends a request; its status and body.
    pub fn call(&self, req: actix_http::Request) -> (u16, bytes::Bytes) {
        self.sys.block_on(async {
            let resp = actix_web::test::call_service(&self.app, req).await;
            let status = resp.status().as_u16();
            (status, actix_web::test::read_body(resp).await)
        })
    }
}

/// An HTTP error answer: opswire's JSON error body with a message starting
/// with one of `prefixes` (and `code` matching the status).
pub fn check_error(status: u16, body: &[u8], prefixes: &[&str]) -> Result<(), TestCaseError> {
    let e: Value = serde_json::from_slice(body).map_err(|e| {
        TestCaseError::fail(format!(
            "status {status}: the error body is not JSON ({e}): {}",
            String::from_utf8_lossy(body)
        ))
    })?;
    let m = e["message"].as_str().unwrap_or_default();
    let code = match status {
        400 => "bad_request",
        401 => "unauthenticated",
        403 => "forbidden",
        404 => "not_found",
        413 => "too_large",
        _ => "?",
    };
    crate::check!(
        e["type"] == "error" && e["code"] == code && prefixes.iter().any(|p| m.starts_with(p)),
        "status {status}: error {e}, expected code {code} and a message starting with one of {prefixes:?}"
    );
    Ok(())
}

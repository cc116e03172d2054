//! The config loader: TOML written to a file, `Config::load(Some(path))`,
//! then `validate()`: arbitrary text, mutated configs, and generated
//! configs with at most one fault.
//!
//! Invariants:
//! * never a panic: the loader yields a Config or an error;
//! * a load error names the key (figment's `for key "…"`) for a value of
//!   the wrong type, and the field for an unknown one;
//! * a validation error is `field: reason`, with a field that is a setting
//!   (`sampler.tick_ms`, `teams[1].hosts[0]`, …), and for a generated
//!   fault exactly the field that was broken;
//! * a valid file loads to exactly the values written, and the Config
//!   passes `validate()`; validating again changes nothing, and the
//!   Config written back as TOML loads and validates to the same Config.

use std::path::{Path, PathBuf};

use opswire::config::{Config, ConfigError};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};

use crate::check;
use crate::support::{self, arb_mutations, arb_text, json_close, mutate};

// The top-level settings (a field's first segment is one of them).
use opswire::config::SETTINGS;

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

/// A file to write configs to, one per test.
struct Scratch {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn scratch() -> Scratch {
    if std::env::vars()
        .any(|(k, _)| k == "OPSWIRE_JWT_SECRET" || k == "OPSWIRE_BIND" || k.contains("__"))
    {
        eprintln!("config_loader: OPSWIRE_* settings in the environment change what loads");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opswire.toml");
    Scratch { _dir: dir, path }
}

/// What holds for the outcome of loading any file.
fn check_load(
    text: &str,
    got: Result<Config, ConfigError>,
) -> Result<Option<Config>, TestCaseError> {
    let mut config = match got {
        Err(e) => {
            check!(
                !e.to_string().trim().is_empty(),
                "a load error without a message for {text:?}"
            );
            return Ok(None);
        }
        Ok(c) => c,
    };
    match config.validate() {
        Err(ConfigError::Invalid { field, reason }) => {
            let top = field.split(['.', '[']).next().unwrap();
            check!(
                SETTINGS.contains(&top),
                "validation error on {field:?}, not a setting"
            );
            check!(
                !reason.is_empty(),
                "validation error on {field} without a reason"
            );
            Ok(None)
        }
        Err(e) => Err(TestCaseError::fail(format!(
            "validate() gave a non-validation error: {e}"
        ))),
        Ok(()) => {
            valid_invariants(&config)?;
            Ok(Some(config))
        }
    }
}

/// A validated Config: its settings are in range, validating again changes
/// nothing, and it round-trips through TOML.
fn valid_invariants(c: &Config) -> Result<(), TestCaseError> {
    check!(!c.teams.is_empty(), "no team after validate");
    check!(
        (50..=60_000).contains(&c.sampler.tick_ms),
        "tick_ms {}",
        c.sampler.tick_ms
    );
    check!(
        c.limits.max_connections.is_some_and(|n| n >= 1),
        "max_connections {:?}",
        c.limits.max_connections
    );
    check!(
        c.ingest.max_line_bytes <= c.ingest.max_body_bytes,
        "max_line_bytes over max_body_bytes"
    );
    check!(
        (1..=3600).contains(&c.websocket.heartbeat_s),
        "heartbeat_s {}",
        c.websocket.heartbeat_s
    );
    check!(
        !(c.dev_mode() && !c.bind.ip().is_loopback() && !c.insecure),
        "dev mode on {} without insecure",
        c.bind
    );
    let before = serde_json::to_value(c).unwrap();
    let mut again = c.clone();
    again
        .validate()
        .map_err(|e| TestCaseError::fail(format!("validated twice: {e}")))?;
    check!(
        serde_json::to_value(&again).unwrap() == before,
        "validate() is not idempotent"
    );
    // toml_write 0.1.2 (the TOML writer of this test, not of opswire)
    // counts a run of quotes in a u8 and overflows past 255.
    let json = serde_json::to_string(c).unwrap();
    if json.contains(&"\\\"".repeat(200)) || json.contains(&"'".repeat(200)) {
        return Ok(());
    }
    let text = toml::to_string(c).map_err(|e| {
        TestCaseError::fail(format!("a valid Config does not serialize as TOML: {e}"))
    })?;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("again.toml");
    std::fs::write(&path, &text).unwrap();
    let mut back = Config::load(Some(&path))
        .map_err(|e| TestCaseError::fail(format!("written back, it does not load: {e}\n{text}")))?;
    back.validate().map_err(|e| {
        TestCaseError::fail(format!("written back, it does not validate: {e}\n{text}"))
    })?;
    let back = serde_json::to_value(&back).unwrap();
    check!(
        json_close(&back, &before),
        "written back and loaded: {back}\n  was {before}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Generated configs
// ---------------------------------------------------------------------------

/// A TOML basic string. (Not `toml::Value::to_string`: its writer, toml_write
/// 0.1.2, overflows a u8 on a run of more than 255 quotes.)
fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A setting: its path, its TOML text, and its JSON value in the Config.
type Setting = (&'static str, String, Value);

fn s(path: &'static str, v: impl Into<Value>) -> Setting {
    let v: Value = v.into();
    let toml = match &v {
        Value::String(s) => toml_str(s),
        Value::Array(a) => format!(
            "[{}]",
            a.iter()
                .map(|x| toml_str(x.as_str().unwrap()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    };
    (path, toml, v)
}

fn arb_settings(teams: Vec<String>) -> impl Strategy<Value = Vec<Setting>> {
    let names = if teams.is_empty() {
        vec!["default".to_owned()]
    } else {
        teams
    };
    let team = prop::sample::select(names);
    let url = |p: &'static str| {
        prop::sample::select(vec!["http://", "https://"]).prop_map(move |s| format!("{s}{p}"))
    };
    let some = |st: BoxedStrategy<Setting>| prop::option::weighted(0.35, st).boxed();
    let settings: Vec<BoxedStrategy<Option<Setting>>> = vec![
        some(any::<bool>().prop_map(|b| s("sampler.enabled", b)).boxed()),
        some(
            (50u64..=60_000)
                .prop_map(|v| s("sampler.tick_ms", v))
                .boxed(),
        ),
        some(
            "[a-z0-9][a-z0-9.-]{0,40}"
                .prop_map(|v| s("sampler.host_name", v))
                .boxed(),
        ),
        some(team.clone().prop_map(|v| s("sampler.team", v)).boxed()),
        some(
            (1u32..1000)
                .prop_map(|v| s("sampler.stale_after_ticks", v))
                .boxed(),
        ),
        some(
            (0usize..=64)
                .prop_map(|v| s("sampler.fanout_threads", v))
                .boxed(),
        ),
        some((1usize..100_000).prop_map(|v| s("history.logs", v)).boxed()),
        some(
            (1usize..100_000)
                .prop_map(|v| s("history.alerts", v))
                .boxed(),
        ),
        some(
            (256usize..=16 * 1024 * 1024)
                .prop_map(|v| s("limits.max_frame_bytes", v))
                .boxed(),
        ),
        some(
            (1u32..100_000)
                .prop_map(|v| s("limits.inbound_rate", v))
                .boxed(),
        ),
        some(
            (1u32..100_000)
                .prop_map(|v| s("limits.ingest_burst", v))
                .boxed(),
        ),
        some(
            (1u32..100)
                .prop_map(|v| s("limits.max_violations", v))
                .boxed(),
        ),
        some(
            (1usize..100_000)
                .prop_map(|v| s("limits.queue_len", v))
                .boxed(),
        ),
        some(
            (1usize..1000)
                .prop_map(|v| s("limits.max_subscriptions", v))
                .boxed(),
        ),
        some(
            (1usize..=512)
                .prop_map(|v| s("limits.max_connections", v))
                .boxed(),
        ),
        some(
            (1u64..=3600)
                .prop_map(|v| s("websocket.heartbeat_s", v))
                .boxed(),
        ),
        some(
            (1u64..=3600)
                .prop_map(|v| s("websocket.auth_timeout_s", v))
                .boxed(),
        ),
        some(
            prop::collection::vec(
                prop_oneof![Just("*".to_owned()), url("dash.example.com")],
                0..3,
            )
            .prop_map(|v| s("websocket.allowed_origins", v))
            .boxed(),
        ),
        some(
            prop::sample::select(vec![
                "info",
                "debug",
                "warn,opswire=debug",
                "trace",
                "opswire::hub=trace",
            ])
            .prop_map(|v| s("log.level", v))
            .boxed(),
        ),
        some(
            prop::sample::select(vec!["text", "json"])
                .prop_map(|v| s("log.format", v))
                .boxed(),
        ),
        some(
            url("collector:4317")
                .prop_map(|v| s("telemetry.otlp_endpoint", v))
                .boxed(),
        ),
        some(
            prop::sample::select(vec!["grpc", "http/protobuf"])
                .prop_map(|v| s("telemetry.otlp_protocol", v))
                .boxed(),
        ),
        some(
            "[a-z][a-z-]{0,20}"
                .prop_map(|v| s("telemetry.service_name", v))
                .boxed(),
        ),
        some(
            (0u32..=100)
                .prop_map(|v| s("telemetry.sample_ratio", v as f64 / 100.0))
                .boxed(),
        ),
        some(
            (1usize..100_000)
                .prop_map(|v| s("telemetry.export_queue", v))
                .boxed(),
        ),
        some(
            url("alertmanager:9093")
                .prop_map(|v| s("alertmanager.url", v))
                .boxed(),
        ),
        some(
            "[a-zA-Z0-9]{16,40}"
                .prop_map(|v| s("alertmanager.webhook_token", v))
                .boxed(),
        ),
        some(
            "[a-z_]{1,12}"
                .prop_map(|v| s("alertmanager.team_label", v))
                .boxed(),
        ),
        some(
            team.clone()
                .prop_map(|v| s("alertmanager.default_team", v))
                .boxed(),
        ),
        some(
            (1u64..100_000)
                .prop_map(|v| s("alertmanager.timeout_ms", v))
                .boxed(),
        ),
        some(team.prop_map(|v| s("ingest.access_log_team", v)).boxed()),
        some(
            arb_text()
                .prop_map(|v| s("ingest.otlp_team_attribute", v))
                .boxed(),
        ),
        some(arb_text().prop_map(|v| s("web.jaeger_url", v)).boxed()),
        some(
            (1u64..1000)
                .prop_map(|v| s("shutdown_timeout_s", v))
                .boxed(),
        ),
        some((0usize..16).prop_map(|v| s("workers", v)).boxed()),
    ];
    settings.prop_map(|v| v.into_iter().flatten().collect())
}

/// Auth, bind and ingest sizes: settings that depend on each other.
fn arb_coupled() -> impl Strategy<Value = Vec<Setting>> {
    (
        prop_oneof![
            Just(vec![]),
            "[a-zA-Z0-9]{32,48}".prop_map(|k| vec![s("auth.jwt_secret", k)]),
            prop::sample::select(vec![
                ("rs256-public.pem", Some("RS256")),
                ("es256-public.pem", Some("ES256")),
                ("rs256-public.pem", None)
            ])
            .prop_map(|(f, alg)| {
                let mut v = vec![s("auth.public_key_file", fixture(f))];
                if let Some(a) = alg {
                    v.push(s("auth.algorithm", a));
                }
                v
            }),
        ],
        prop::option::of((0u64..=3600).prop_map(|v| s("auth.leeway_s", v))),
        prop::sample::select(vec![
            "127.0.0.1:8080",
            "[::1]:0",
            "127.1.2.3:9000",
            "0.0.0.0:8080",
        ]),
        any::<bool>(),
        prop::option::of((1024usize..4_000_000, 64usize..4096)),
    )
        .prop_map(|(auth, leeway, bind, insecure, ingest)| {
            let dev = auth.is_empty();
            let mut v = auth;
            v.extend(leeway);
            v.push(s("bind", bind));
            if bind.starts_with("0.0.0.0") && dev {
                v.push(s("insecure", true));
            } else if insecure {
                v.push(s("insecure", false));
            }
            if let Some((body, line)) = ingest {
                v.push(s("ingest.max_body_bytes", body));
                v.push(s("ingest.max_line_bytes", line.min(body)));
            }
            v
        })
}

fn arb_teams() -> impl Strategy<Value = Vec<(String, Vec<String>)>> {
    prop::collection::btree_map(
        "[a-z0-9][a-z0-9._-]{0,20}",
        prop::collection::vec(
            prop::sample::select(vec!["*", "pay-*", "h?", "[ab]*", "{x,y}-*", "web-[0-9]"])
                .prop_map(str::to_owned),
            0..3,
        ),
        0..4,
    )
    .prop_map(|m| m.into_iter().collect())
}

/// A fault: the settings it adds (last wins over a generated one) and
/// the error it must give.
#[derive(Clone, Debug)]
enum Fault {
    None,
    /// An out-of-range value: validate() must refuse exactly this field.
    Range(&'static str, &'static str),
    /// A value of the wrong type: the load error names the key.
    WrongType(&'static str, &'static str),
    /// An unknown key in a table (or at the top).
    Unknown(&'static str, String),
    /// A team named badly, twice, or with a bad glob.
    Team(&'static str),
}

fn arb_fault() -> impl Strategy<Value = Fault> {
    let range = prop::sample::select(vec![
        ("sampler.tick_ms", "10"),
        ("sampler.tick_ms", "60001"),
        ("sampler.stale_after_ticks", "0"),
        ("sampler.fanout_threads", "65"),
        ("history.logs", "0"),
        ("history.alerts", "0"),
        ("limits.max_frame_bytes", "255"),
        ("limits.max_frame_bytes", "16777217"),
        ("limits.inbound_rate", "0"),
        ("limits.inbound_burst", "0"),
        ("limits.ingest_rate", "0"),
        ("limits.ingest_burst", "0"),
        ("limits.max_violations", "0"),
        ("limits.queue_len", "0"),
        ("limits.max_subscriptions", "0"),
        ("limits.max_connections", "0"),
        ("limits.max_connections", "100000000"),
        ("websocket.heartbeat_s", "0"),
        ("websocket.heartbeat_s", "3601"),
        ("websocket.auth_timeout_s", "0"),
        ("auth.leeway_s", "3601"),
        ("websocket.allowed_origins", "[\"dash.example.com\"]"),
        ("shutdown_timeout_s", "0"),
        ("log.level", "\"[[\""),
        ("log.level", "\"a=b=c\""),
        ("alertmanager.url", "\"alertmanager:9093\""),
        ("alertmanager.webhook_token", "\"short\""),
        ("alertmanager.team_label", "\"\""),
        ("alertmanager.default_team", "\"nope\""),
        ("alertmanager.timeout_ms", "0"),
        ("ingest.max_body_bytes", "1023"),
        ("ingest.max_line_bytes", "63"),
        ("ingest.access_log_team", "\"nope\""),
        ("telemetry.otlp_protocol", "\"udp\""),
        ("telemetry.otlp_endpoint", "\"collector:4317\""),
        ("telemetry.sample_ratio", "1.5"),
        ("telemetry.sample_ratio", "-0.1"),
        ("telemetry.sample_ratio", "nan"),
        ("telemetry.export_queue", "0"),
        ("telemetry.service_name", "\"\""),
        ("sampler.team", "\"nope\""),
        ("sampler.host_name", "\"\""),
        ("auth.jwt_secret", "\"short-secret\""),
        ("auth.algorithm", "\"HS999\""),
        ("auth.public_key_file", "\"/nonexistent/key.pem\""),
        ("bind", "\"0.0.0.0:1\""),
    ]);
    let wrong = prop::sample::select(vec![
        ("sampler.tick_ms", "\"fast\""),
        ("sampler.tick_ms", "-5"),
        ("sampler.tick_ms", "1.5"),
        ("sampler.enabled", "\"yes\""),
        ("limits.queue_len", "[1]"),
        ("websocket.allowed_origins", "\"*\""),
        ("log.format", "\"xml\""),
        ("bind", "\"localhost\""),
        ("bind", "8080"),
        ("teams", "\"alpha\""),
        ("telemetry.export_logs", "1"),
        ("history.logs", "{ a = 1 }"),
        ("workers", "18446744073709551616"),
        ("auth.leeway_s", "true"),
        ("insecure", "\"true\""),
    ]);
    prop_oneof![
        6 => Just(Fault::None),
        6 => range.prop_map(|(k, v)| Fault::Range(k, v)),
        3 => wrong.prop_map(|(k, v)| Fault::WrongType(k, v)),
        2 => (prop::sample::select(vec!["", "sampler", "limits", "auth", "web"]), "[a-z]{1,8}").prop_map(|(t, k)| Fault::Unknown(t, format!("x_{k}"))),
        2 => prop::sample::select(vec!["name", "duplicate", "glob"]).prop_map(Fault::Team),
    ]
}

/// Renders settings (grouped by table) and teams as TOML.
fn render(
    settings: &[Setting],
    extra: &[(&str, String)],
    teams: &[(String, Vec<String>)],
) -> String {
    let mut tables: std::collections::BTreeMap<&str, Vec<(String, String)>> = Default::default();
    for (path, toml, _) in settings {
        let (t, k) = path.rsplit_once('.').unwrap_or(("", path));
        let entry = tables.entry(t).or_default();
        entry.retain(|(key, _)| key != k);
        entry.push((k.to_owned(), toml.clone()));
    }
    for (path, toml) in extra {
        let (t, k) = path.rsplit_once('.').unwrap_or(("", path));
        let entry = tables.entry(t).or_default();
        entry.retain(|(key, _)| key != k);
        entry.push((k.to_owned(), toml.clone()));
    }
    let mut out = String::new();
    if let Some(top) = tables.remove("") {
        for (k, v) in top {
            out.push_str(&format!("{k} = {v}\n"));
        }
    }
    for (t, kvs) in tables {
        out.push_str(&format!("\n[{t}]\n"));
        for (k, v) in kvs {
            out.push_str(&format!("{k} = {v}\n"));
        }
    }
    for (name, hosts) in teams {
        let hosts: Vec<String> = hosts.iter().map(|h| toml_str(h)).collect();
        out.push_str(&format!(
            "\n[[teams]]\nname = {}\nhosts = [{}]\n",
            toml_str(name),
            hosts.join(", ")
        ));
    }
    out
}

/// Teams: a name and its host globs.
type Teams = Vec<(String, Vec<String>)>;

fn arb_case() -> impl Strategy<Value = (Vec<Setting>, Teams, Fault)> {
    arb_teams().prop_flat_map(|teams| {
        let names: Vec<String> = teams.iter().map(|(n, _)| n.clone()).collect();
        (arb_settings(names), arb_coupled(), Just(teams), arb_fault()).prop_map(
            |(mut a, b, teams, fault)| {
                a.extend(b);
                (a, teams, fault)
            },
        )
    })
}

/// A generated config as text, and the error it must give (None: valid;
/// `(true, key)`: a load error naming `key`; `(false, field)`: a
/// validation error on `field`).
fn build(
    settings: &[Setting],
    teams: &[(String, Vec<String>)],
    fault: &Fault,
) -> (String, Option<(bool, String)>) {
    let mut extra: Vec<(&str, String)> = Vec::new();
    let mut teams = teams.to_vec();
    let want = match fault {
        Fault::None => None,
        Fault::Range(k, v) => {
            extra.push((k, v.to_string()));
            // A bad value may only be reachable in some auth setups.
            let mut field = k.to_string();
            match *k {
                "auth.jwt_secret"
                    if settings
                        .iter()
                        .any(|(p, _, _)| *p == "auth.public_key_file") =>
                {
                    field = "auth".into()
                }
                "auth.public_key_file"
                    if settings.iter().any(|(p, _, _)| *p == "auth.jwt_secret") =>
                {
                    field = "auth".into()
                }
                "bind"
                    if settings.iter().any(|(p, _, _)| {
                        *p == "auth.jwt_secret" || *p == "auth.public_key_file"
                    }) =>
                {
                    return (render(settings, &extra, &teams), None)
                }
                "websocket.allowed_origins" => field = "websocket.allowed_origins[0]".into(),
                "ingest.max_line_bytes" | "ingest.max_body_bytes" => field = "ingest.".into(),
                _ => {}
            }
            if *k == "bind" {
                extra.push(("insecure", "false".into()));
            }
            Some((false, field))
        }
        Fault::WrongType(k, v) => {
            extra.push((k, v.to_string()));
            if *k == "teams" {
                teams.clear();
            }
            Some((true, k.to_string()))
        }
        Fault::Unknown(t, k) => {
            let path: &'static str = Box::leak(
                if t.is_empty() {
                    k.clone()
                } else {
                    format!("{t}.{k}")
                }
                .into_boxed_str(),
            );
            extra.push((path, "1".into()));
            Some((true, k.clone()))
        }
        Fault::Team(kind) => {
            let i = teams.len();
            match *kind {
                "name" => teams.push(("Bad Name".into(), vec![])),
                "duplicate" if i > 0 => teams.push(teams[0].clone()),
                "duplicate" => return (render(settings, &extra, &teams), None),
                _ => teams.push(("globbed".into(), vec!["[unclosed".into()])),
            }
            let field = if *kind == "glob" {
                format!("teams[{i}].hosts[0]")
            } else {
                format!("teams[{i}].name")
            };
            Some((false, field))
        }
    };
    (render(settings, &extra, &teams), want)
}

#[test]
fn config_generated() {
    let file = scratch();
    support::run(
        "config_generated",
        arb_case(),
        |(settings, teams, fault)| {
            let (text, want) = build(&settings, &teams, &fault);
            std::fs::write(&file.path, &text).unwrap();
            let loaded = Config::load(Some(&file.path));
            // Only a file without a fault holds exactly the generated values.
            let exact = matches!(fault, Fault::None);
            match (&want, &loaded) {
                (Some((true, key)), Err(e)) => {
                    let m = e.to_string();
                    check!(
                        m.contains(key.rsplit('.').next().unwrap()),
                        "load error {m:?} does not name {key:?}\n{text}"
                    );
                }
                (Some((true, _)), Ok(_)) => {
                    return Err(TestCaseError::fail(format!(
                        "loaded despite {fault:?}:\n{text}"
                    )))
                }
                (_, Err(e)) => {
                    return Err(TestCaseError::fail(format!(
                        "load error {e} for a file with {fault:?}:\n{text}"
                    )))
                }
                (_, Ok(_)) => {}
            }
            let Ok(config) = loaded else { return Ok(()) };
            // What was written is what loaded.
            if exact {
                let v = serde_json::to_value(&config).unwrap();
                for (path, _, value) in &settings {
                    let pointer = format!("/{}", path.replace('.', "/"));
                    let got = v.pointer(&pointer).unwrap_or(&Value::Null);
                    let want = if *path == "auth.public_key_file" {
                        json!(value.as_str().unwrap())
                    } else {
                        value.clone()
                    };
                    check!(
                        json_close(got, &want),
                        "{path} = {want} loaded as {got}\n{text}"
                    );
                }
                let names: Vec<&str> = config.teams.iter().map(|t| t.name.as_str()).collect();
                let wrote: Vec<&str> = teams.iter().map(|(n, _)| n.as_str()).collect();
                check!(names == wrote, "teams {names:?}, wrote {wrote:?}");
            }
            let mut validated = config.clone();
            match (validated.validate(), &want) {
                (Ok(()), None) => valid_invariants(&validated),
                (Err(ConfigError::Invalid { field, .. }), Some((false, want))) => {
                    check!(
                        field.starts_with(want.as_str()),
                        "refused on {field:?}, expected {want:?}\n{text}"
                    );
                    check_load(&text, Ok(config)).map(|_| ())
                }
                (got, want) => Err(TestCaseError::fail(format!(
                    "validate(): {got:?}, expected {want:?} for {fault:?}\n{text}"
                ))),
            }
        },
    );
}

#[test]
fn config_mutated() {
    let file = scratch();
    let strategy = (arb_case(), arb_mutations());
    support::run(
        "config_mutated",
        strategy,
        |((settings, teams, fault), edits)| {
            let (text, _) = build(&settings, &teams, &fault);
            let text = String::from_utf8_lossy(&mutate(text.into_bytes(), &edits)).into_owned();
            std::fs::write(&file.path, &text).unwrap();
            check_load(&text, Config::load(Some(&file.path))).map(|_| ())
        },
    );
}

#[test]
fn config_arbitrary() {
    let file = scratch();
    let strategy = prop_oneof![
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..256)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        prop::collection::vec(
            (
                "[a-z_.]{1,12}",
                prop_oneof![
                    arb_text().prop_map(|t| toml_str(&t)),
                    any::<i64>().prop_map(|i| i.to_string()),
                    Just("[]".into()),
                    Just("{}".into())
                ]
            ),
            0..6
        )
        .prop_map(|kvs| kvs
            .into_iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect()),
    ];
    support::run("config_arbitrary", strategy, |text| {
        std::fs::write(&file.path, &text).unwrap();
        check_load(&text, Config::load(Some(&file.path))).map(|_| ())
    });
}

#[test]
fn config_missing_file() {
    let e = Config::load(Some(Path::new("/nonexistent/opswire.toml"))).unwrap_err();
    assert!(e.to_string().contains("not found"), "{e}");
}

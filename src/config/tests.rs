//! Unit tests of loading, validating and locating configuration errors.

use super::*;

#[test]
fn defaults_are_valid_and_dev_mode() {
    let mut c = Config::default();
    c.validate().unwrap();
    assert!(c.dev_mode());
    assert_eq!(c.teams[0].name, DEFAULT_TEAM);
    assert!(c.max_connections() > 0);
}

#[test]
fn public_bind_without_key_is_refused_unless_insecure() {
    let mut c = Config {
        bind: "0.0.0.0:8080".parse().unwrap(),
        ..Config::default()
    };
    let e = c.validate().unwrap_err().to_string();
    assert!(e.starts_with("bind:"), "{e}");
    c.insecure = true;
    c.validate().unwrap();
}

#[test]
fn bad_values_name_the_field() {
    let mut c = Config::default();
    c.limits.queue_len = 0;
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .starts_with("limits.queue_len"));
    let mut c = Config::default();
    c.auth.jwt_secret = Some("short".into());
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .starts_with("auth.jwt_secret"));
    let mut c = Config {
        teams: vec![TeamConfig {
            name: "Bad Name".into(),
            hosts: vec![],
        }],
        ..Config::default()
    };
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .starts_with("teams[0].name"));
    let mut c = Config::default();
    c.limits.max_connections = Some(10_000_000);
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .starts_with("limits.max_connections"));
}

#[test]
fn broker_settings_are_checked_without_echoing_a_url() {
    let check = |tweak: &dyn Fn(&mut Config)| {
        let mut c = Config::default();
        tweak(&mut c);
        c.validate().map_err(|e| e.to_string())
    };
    assert!(check(&|c| c.broker.url = Some("redis://:pw@h:6379".into())).is_ok());
    assert!(check(&|c| c.broker.cluster = vec!["rediss://h:7000".into()]).is_ok());
    let e = check(&|c| c.broker.url = Some("http://:secret-pw@h".into())).unwrap_err();
    assert!(
        e.starts_with("broker.url") && !e.contains("secret-pw"),
        "{e}"
    );
    let e = check(&|c| {
        c.broker.url = Some("redis://h".into());
        c.broker.cluster = vec!["redis://h2".into()];
    })
    .unwrap_err();
    assert!(e.starts_with("broker.cluster"), "{e}");
    let e = check(&|c| c.broker.cluster = vec!["redis://h/?protocol=resp3".into()]).unwrap_err();
    assert!(e.starts_with("broker.cluster"), "{e}");
    let e = check(&|c| c.broker.node = Some("two words".into())).unwrap_err();
    assert!(e.starts_with("broker.node"), "{e}");
    let e = check(&|c| c.broker.max_in_flight = 0).unwrap_err();
    assert!(e.starts_with("broker.max_in_flight"), "{e}");
}

/// Tests that set `OPSWIRE_*` variables hold this lock: `Config::load`
/// reads the whole process environment.
static ENV_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn load_toml(toml: &str) -> (tempfile::TempDir, PathBuf, Result<Config, ConfigError>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opswire.toml");
    std::fs::write(&path, toml).unwrap();
    let _env = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let r = Config::load(Some(&path));
    (dir, path, r)
}

fn load_env(name: &str, value: &str) -> Result<Config, ConfigError> {
    let _env = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var(name, value);
    let r = Config::load(None);
    std::env::remove_var(name);
    r
}

#[test]
fn a_typo_in_the_file_names_the_setting_and_its_line() {
    let (_dir, path, r) = load_toml("[sampler]\ntick_ms = 1000\nteem = \"x\"\n");
    let e = r.unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "{}:3:1: sampler.teem: unknown field `teem`",
            path.display()
        )),
        "{e}"
    );
    assert!(!e.contains("default."), "no figment profile: {e}");

    let (_dir, path, r) = load_toml("[[teams]]\nname = \"a\"\n\n[limits]\nqueue_len = \"ten\"\n");
    let e = r.unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "{}:5:13: limits.queue_len: invalid type",
            path.display()
        )),
        "{e}"
    );

    let (_dir, path, r) =
        load_toml("[[teams]]\nname = \"a\"\n[[teams]]\nname = \"b\"\nhostz = []\n");
    let e = r.unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "{}:5:1: teams[1].hostz: unknown field `hostz`",
            path.display()
        )),
        "{e}"
    );

    // A syntax error: the toml crate's lines, on one line, with the position.
    let (_dir, path, r) = load_toml("[limits\nqueue_len = 1\n");
    let e = r.unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}:1:8: ", path.display())), "{e}");
    assert!(!e.contains('\n'), "{e}");

    // A file that fits loads as before.
    let (_dir, _path, r) = load_toml("[limits]\nqueue_len = 7\n[log]\nformat = \"json\"\n");
    let c = r.unwrap();
    assert_eq!(c.limits.queue_len, 7);
    assert_eq!(c.log.format, LogFormat::Json);
}

#[test]
fn an_environment_error_names_the_variable() {
    let e = load_env("OPSWIRE_LIMITS__QUEUE_LEN", "ten")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("OPSWIRE_LIMITS__QUEUE_LEN: limits.queue_len: invalid type"),
        "{e}"
    );
    assert!(!e.contains("LIMITS.QUEUE_LEN"), "{e}");

    let c = load_env("OPSWIRE_LIMITS__QUEUE_LEN", "7").unwrap();
    assert_eq!(c.limits.queue_len, 7);

    // A value `validate` refuses: `locate` names the variable that set it.
    let _env = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var("OPSWIRE_LIMITS__QUEUE_LEN", "0");
    let mut c = Config::load(None).unwrap();
    let e = c.validate().unwrap_err().locate(None).to_string();
    std::env::remove_var("OPSWIRE_LIMITS__QUEUE_LEN");
    assert!(
        e.starts_with("OPSWIRE_LIMITS__QUEUE_LEN: limits.queue_len: must be at least 1"),
        "{e}"
    );
}

#[test]
fn expected_names_have_one_level_of_backticks() {
    for (name, value, want) in [
        (
            "OPSWIRE_LOG__FORMAT",
            "yaml",
            "OPSWIRE_LOG__FORMAT: log.format: unknown variant `yaml`, expected `text` or `json`",
        ),
        (
            "OPSWIRE_SAMPLER__TEEM",
            "x",
            "OPSWIRE_SAMPLER__TEEM: sampler.teem: unknown field `teem`, expected one of `enabled`, `tick_ms`, ",
        ),
    ] {
        let e = load_env(name, value).unwrap_err().to_string();
        assert!(e.starts_with(want), "{e}");
        assert!(!e.contains("``") && !e.contains("`one of"), "{e}");
    }
    let (_dir, _path, r) = load_toml("[log]\nformat = \"yaml\"\n");
    let e = r.unwrap_err().to_string();
    assert!(
        e.ends_with("log.format: unknown variant `yaml`, expected `text` or `json`"),
        "{e}"
    );
}

#[test]
fn a_refused_value_is_located_in_the_file() {
    let toml = "[[teams]]\nname = \"a\"\n[[teams]]\nname = \"Bad\"\nhosts = [\"x\", \"[\"]\n";
    let (_dir, path, r) = load_toml(toml);
    let mut c = r.unwrap();
    let e = c.validate().unwrap_err().locate(Some(&path)).to_string();
    assert!(
        e.starts_with(&format!(
            "{}:4:1: teams[1].name: `Bad` is not",
            path.display()
        )),
        "{e}"
    );
    // Fixed: the bad glob of `hosts[1]` is found at its key, `hosts`.
    let (_dir, path, r) = load_toml(&toml.replace("Bad", "b"));
    let mut c = r.unwrap();
    let e = c.validate().unwrap_err().locate(Some(&path)).to_string();
    assert!(
        e.starts_with(&format!("{}:5:1: teams[1].hosts[1]: ", path.display())),
        "{e}"
    );
    // Not set anywhere (a default): as it was.
    let e = invalid("history.logs", "must be at least 1").locate(Some(&path));
    assert_eq!(e.to_string(), "history.logs: must be at least 1");
}

#[test]
fn host_globs_pick_the_team() {
    let mut c = Config {
        teams: vec![
            TeamConfig {
                name: "payments".into(),
                hosts: vec!["pay-*".into()],
            },
            TeamConfig {
                name: "search".into(),
                hosts: vec!["search-?".into()],
            },
        ],
        ..Config::default()
    };
    c.validate().unwrap();
    assert_eq!(c.team_for_host("pay-1"), "payments");
    assert_eq!(c.team_for_host("search-2"), "search");
    assert_eq!(c.team_for_host("other"), "payments");
}

#[test]
fn a_host_root_without_the_hosts_mount_table_is_refused_at_startup() {
    let root = tempfile::tempdir().unwrap();
    let mut c = Config::default();
    c.sampler.host_root = Some(root.path().to_owned());
    let e = c.validate().unwrap_err().to_string();
    assert!(e.starts_with("sampler.host_root:"), "{e}");
    assert!(e.contains("proc/1/mountinfo"), "{e}");
    // With the table there, it is accepted; with the sampler off, not read.
    std::fs::create_dir_all(root.path().join("proc/1")).unwrap();
    std::fs::write(root.path().join("proc/1/mountinfo"), "").unwrap();
    c.validate().unwrap();
    let mut c = Config::default();
    c.sampler.host_root = Some("/nonexistent".into());
    c.sampler.enabled = false;
    c.validate().unwrap();
}

#[test]
fn web_grafana_settings_are_checked() {
    let check = |tweak: &dyn Fn(&mut Config)| {
        let mut c = Config::default();
        tweak(&mut c);
        c.validate().map(|()| c.web).map_err(|e| e.to_string())
    };
    let w = check(&|_| {}).unwrap();
    assert_eq!(w.grafana_url, None);
    assert_eq!(w.grafana_loki_uid, "loki");
    let w = check(&|c| c.web.grafana_url = Some("https://grafana.example.com/g/".into())).unwrap();
    assert_eq!(
        w.grafana_url.as_deref(),
        Some("https://grafana.example.com/g")
    );
    assert!(check(&|c| c.web.grafana_url = Some("http://localhost:3000".into())).is_ok());
    for bad in [
        "localhost:3000",
        "ftp://grafana",
        "http://",
        "http://grafana:3000/?orgId=1",
        "http://grafana:3000/#x",
        "http://grafana:3000 junk",
        "http://admin:pw@grafana:3000",
        "javascript:alert(1)",
    ] {
        let e = check(&|c| c.web.grafana_url = Some(bad.into())).unwrap_err();
        assert!(e.starts_with("web.grafana_url: "), "{bad}: {e}");
        assert!(!e.contains(":pw@"), "{e}");
    }
    for bad in ["", "has space", "a/b", &"x".repeat(41)] {
        let e = check(&|c| c.web.grafana_loki_uid = bad.into()).unwrap_err();
        assert!(e.starts_with("web.grafana_loki_uid: "), "{bad}: {e}");
    }
    let mut c = load_env("OPSWIRE_WEB__GRAFANA_URL", "http://127.0.0.1:3000/").unwrap();
    c.validate().unwrap();
    assert_eq!(c.web.grafana_url.as_deref(), Some("http://127.0.0.1:3000"));
}

#[test]
fn tls_needs_both_files_and_both_there() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, "x").unwrap();
    std::fs::write(&key, "x").unwrap();
    let with = |cert: Option<&Path>, key: Option<&Path>| {
        let mut c = Config::default();
        c.tls.cert_file = cert.map(Path::to_path_buf);
        c.tls.key_file = key.map(Path::to_path_buf);
        c.validate().map(|()| c)
    };
    let e = with(Some(&cert), None).unwrap_err().to_string();
    assert!(
        e.starts_with("tls.key_file: must be set with tls.cert_file"),
        "{e}"
    );
    let e = with(None, Some(&key)).unwrap_err().to_string();
    assert!(
        e.starts_with("tls.cert_file: must be set with tls.key_file"),
        "{e}"
    );
    let missing = dir.path().join("missing.pem");
    let e = with(Some(&missing), Some(&key)).unwrap_err().to_string();
    assert!(e.starts_with("tls.cert_file:"), "{e}");
    assert!(e.contains("missing.pem is not a readable file"), "{e}");
    let c = with(Some(&cert), Some(&key)).unwrap();
    assert_eq!(c.tls.files(), Some((cert.as_path(), key.as_path())));
    assert_eq!(with(None, None).unwrap().tls.files(), None);
}

#[test]
fn alertmanager_ca_file_needs_an_https_url_and_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "x").unwrap();
    let mut c = Config::default();
    c.alertmanager.url = Some("http://am:9093".into());
    c.alertmanager.ca_file = Some(ca.clone());
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.starts_with("alertmanager.ca_file: is only used with an https://"),
        "{e}"
    );
    c.alertmanager.url = Some("https://am:9093".into());
    c.validate().unwrap();
    c.alertmanager.ca_file = Some(dir.path().join("nope.pem"));
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("nope.pem is not a readable file"), "{e}");
}

#[test]
fn tls_is_set_from_the_file_or_the_environment() {
    let c = load_env("OPSWIRE_TLS__CERT_FILE", "/etc/opswire/cert.pem").unwrap();
    assert_eq!(
        c.tls.cert_file.as_deref(),
        Some(Path::new("/etc/opswire/cert.pem"))
    );
    let (_dir, _path, r) = load_toml(
        "[tls]\ncert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\n[alertmanager]\nca_file = \"/ca.pem\"\n",
    );
    let c = r.unwrap();
    assert_eq!(c.tls.key_file.as_deref(), Some(Path::new("/k.pem")));
    assert_eq!(
        c.alertmanager.ca_file.as_deref(),
        Some(Path::new("/ca.pem"))
    );
}

#[test]
fn tls_connections_count_three_descriptors_each() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, "x").unwrap();
    std::fs::write(&key, "x").unwrap();
    let mut plain = Config::default();
    plain.validate().unwrap();
    let mut tls = Config::default();
    tls.tls.cert_file = Some(cert);
    tls.tls.key_file = Some(key);
    tls.validate().unwrap();
    assert_eq!(tls.max_connections(), (plain.max_connections() / 3).max(1));
}

#[test]
fn sse_gzip_is_on_by_default_and_set_from_the_file_or_the_environment() {
    assert!(Config::default().sse.gzip);
    let (_dir, _path, r) = load_toml("[sse]\ngzip = false\n");
    assert!(!r.unwrap().sse.gzip);
    assert!(!load_env("OPSWIRE_SSE__GZIP", "false").unwrap().sse.gzip);
    let e = load_env("OPSWIRE_SSE__GZIPP", "false")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("OPSWIRE_SSE__GZIPP: sse.gzipp: unknown field"),
        "{e}"
    );
}

#[test]
fn the_mount_timeout_is_bounded() {
    let mut c = Config::default();
    assert_eq!(c.sampler.mount_timeout_ms, 1000);
    for bad in [0, 9, 60_001] {
        c.sampler.mount_timeout_ms = bad;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("sampler.mount_timeout_ms"), "{e}");
    }
    c.sampler.mount_timeout_ms = 250;
    c.validate().unwrap();
}

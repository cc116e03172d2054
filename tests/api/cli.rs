//! The `opswire` binary itself: help, `token`, configuration errors (file,
//! environment, flags) and a clean exit on SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use opswire::auth::{Authenticator, Scope};
use opswire::config::Config;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::*;

/// `opswire ARGS` (see [`opswire_command`]) with quiet logs, as a tokio
/// command: the child is killed if the test drops it.
fn opswire(args: &[&str]) -> Command {
    let mut cmd = Command::from(opswire_command());
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs to completion within `WAIT` (a server that unexpectedly starts is
/// killed when the timed-out future drops it).
async fn run(cmd: &mut Command) -> Output {
    tokio::time::timeout(WAIT, cmd.output())
        .await
        .expect("opswire exits within the wait")
        .expect("opswire runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a run failed and its stderr mentions every one of `needles`.
fn assert_fails_naming(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got {}\nstdout: {}\nstderr: {err}",
        o.status,
        stdout(o)
    );
    for n in needles {
        assert!(err.contains(n), "stderr does not mention `{n}`: {err}");
    }
}

fn write_config(dir: &Path, name: &str, toml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, toml).unwrap();
    path
}

fn authenticator() -> Authenticator {
    let mut c = Config::default();
    c.auth.jwt_secret = Some(SECRET.into());
    Authenticator::from_config(&c).unwrap()
}

/// A running server process; killed on drop so a failing test leaves none.
struct Running {
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test]
async fn help_describes_commands_and_flags() {
    let o = run(&mut opswire(&["--help"])).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for s in ["serve", "token", "--bind", "--config", "--insecure"] {
        assert!(out.contains(s), "`opswire --help` lacks {s}: {out}");
    }

    let o = run(&mut opswire(&["serve", "--help"])).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for s in ["--bind", "--config", "--insecure"] {
        assert!(out.contains(s), "`opswire serve --help` lacks {s}: {out}");
    }

    let o = run(&mut opswire(&["token", "--help"])).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for s in ["--team", "--ttl", "--scope", "--sub", "--private-key"] {
        assert!(out.contains(s), "`opswire token --help` lacks {s}: {out}");
    }

    let o = run(&mut opswire(&["--version"])).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(env!("CARGO_PKG_VERSION")),
        "{}",
        stdout(&o)
    );
}

#[tokio::test]
async fn token_mints_a_jwt_for_the_given_team() {
    let o =
        run(opswire(&["token", "--team", "payments", "--ttl", "1h"])
            .env("OPSWIRE_JWT_SECRET", SECRET))
        .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let jwt = out.trim();
    assert_eq!(jwt.split('.').count(), 3, "not a JWT: {out}");

    let p = authenticator()
        .verify(jwt)
        .expect("the server's authenticator accepts it");
    assert!(p.may_access("payments"));
    assert!(!p.may_access("search"));
    assert_eq!(p.scope, Scope::Read);
    let now = opswire::auth::now_s();
    let exp = p.exp.expect("an expiry");
    assert!(
        (now + 3590..=now + 3610).contains(&exp),
        "exp {exp} is not an hour from {now}"
    );
}

#[tokio::test]
async fn token_scope_ingest_and_secret_from_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "opswire.toml",
        &format!("[auth]\njwt_secret = \"{SECRET}\"\n"),
    );
    let o = run(&mut opswire(&[
        "token",
        "--config",
        cfg.to_str().unwrap(),
        "--team",
        "alpha",
        "--scope",
        "ingest",
        "--sub",
        "agent-7",
    ]))
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let jwt = stdout(&o).trim().to_owned();
    let p = authenticator().verify(&jwt).unwrap();
    assert_eq!(p.scope, Scope::Ingest);
    assert_eq!(p.sub, "agent-7");
    assert!(p.may_access("alpha") && !p.may_access("beta"));

    // A running server accepts it too.
    let app = spawn_app();
    let resp = reqwest::Client::new()
        .get(app.url("/api/v1/teams"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["teams"][0]["name"], "alpha", "{body}");
    assert_eq!(body["teams"].as_array().unwrap().len(), 1, "{body}");
}

#[tokio::test]
async fn token_without_a_key_fails() {
    let o = run(&mut opswire(&["token", "--team", "payments"])).await;
    assert_fails_naming(&o, &["OPSWIRE_JWT_SECRET"]);
    assert!(stdout(&o).trim().is_empty(), "{}", stdout(&o));

    let o =
        run(opswire(&["token", "--team", "x", "--scope", "admin"])
            .env("OPSWIRE_JWT_SECRET", SECRET))
        .await;
    assert_fails_naming(&o, &["admin"]);
}

#[tokio::test]
async fn bad_config_files_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("zero.toml", "[limits]\nqueue_len = 0\n", "limits.queue_len"),
        ("unknown.toml", "[limits]\nqueue_lenn = 5\n", "queue_lenn"),
        (
            "type.toml",
            "[limits]\nqueue_len = \"ten\"\n",
            "limits.queue_len",
        ),
        ("top.toml", "frobnicate = true\n", "frobnicate"),
    ];
    for (name, toml, field) in cases {
        let path = write_config(dir.path(), name, toml);
        let o = run(&mut opswire(&[
            "--config",
            path.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
        ]))
        .await;
        assert_fails_naming(&o, &[field]);
        assert!(
            !stdout(&o).contains("listening"),
            "{name}: started anyway: {}",
            stdout(&o)
        );
    }

    let missing = dir.path().join("missing.toml");
    let o = run(&mut opswire(&["--config", missing.to_str().unwrap()])).await;
    assert_fails_naming(&o, &["missing.toml"]);
}

/// A configuration error names the setting as the user wrote it, and where:
/// the file and line, the variable, or the flag.
#[tokio::test]
async fn config_errors_say_where_the_value_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "typo.toml",
        "[sampler]\ntick_ms = 1000\nteem = \"payments\"\n",
    );
    let o = run(&mut opswire(&["--config", path.to_str().unwrap()])).await;
    assert_fails_naming(
        &o,
        &[&format!(
            "{}:3:1: sampler.teem: unknown field `teem`, expected one of `enabled`,",
            path.display()
        )],
    );
    assert!(!stderr(&o).contains("``"), "{}", stderr(&o));

    let path = write_config(dir.path(), "zero.toml", "\n[limits]\nqueue_len = 0\n");
    let o = run(&mut opswire(&["--config", path.to_str().unwrap()])).await;
    assert_fails_naming(
        &o,
        &[&format!(
            "{}:3:1: limits.queue_len: must be at least 1",
            path.display()
        )],
    );

    let o = run(opswire(&[]).env("OPSWIRE_LIMITS__QUEUE_LEN", "ten")).await;
    assert_fails_naming(
        &o,
        &["OPSWIRE_LIMITS__QUEUE_LEN: limits.queue_len: invalid type"],
    );
    let o = run(opswire(&[]).env("OPSWIRE_LOG__FORMAT", "yaml")).await;
    assert_fails_naming(
        &o,
        &["OPSWIRE_LOG__FORMAT: log.format: unknown variant `yaml`, expected `text` or `json`"],
    );

    let o = run(&mut opswire(&["--bind", "0.0.0.0:0"])).await;
    assert_fails_naming(&o, &["--bind: bind: 0.0.0.0:0 is not a loopback address"]);
}

#[tokio::test]
async fn short_jwt_secret_is_refused() {
    let o = run(opswire(&["--bind", "127.0.0.1:0"]).env("OPSWIRE_JWT_SECRET", "short")).await;
    assert_fails_naming(&o, &["auth.jwt_secret"]);
}

#[tokio::test]
async fn environment_overrides_reach_nested_fields() {
    let o = run(opswire(&[])
        .env("OPSWIRE_BIND", "127.0.0.1:0")
        .env("OPSWIRE_LIMITS__QUEUE_LEN", "0"))
    .await;
    assert_fails_naming(&o, &["limits.queue_len"]);
    // An unrelated OPSWIRE_* variable is not a setting and is ignored.
    let o = run(opswire(&[])
        .env("OPSWIRE_BIND", "127.0.0.1:0")
        .env("OPSWIRE_TOKEN", "for-some-script")
        .env("OPSWIRE_LIMITS__QUEUE_LEN", "0"))
    .await;
    assert_fails_naming(&o, &["limits.queue_len"]);
    assert!(!stderr(&o).contains("token"), "{}", stderr(&o));
}

#[tokio::test]
async fn public_bind_without_a_key_needs_insecure() {
    let o = run(&mut opswire(&["--bind", "0.0.0.0:0"])).await;
    assert_fails_naming(&o, &["--insecure"]);
    let o = run(&mut opswire(&["serve", "--bind", "0.0.0.0:0"])).await;
    assert_fails_naming(&o, &["--insecure"]);
}

#[tokio::test]
async fn insecure_public_bind_serves_and_exits_cleanly_on_sigterm() {
    let child = opswire(&["serve", "--bind", "0.0.0.0:0", "--insecure"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("opswire starts");
    let mut server = Running { child };
    let out = server.child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let addr = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix("opswire listening on http://") {
                return addr.to_owned();
            }
        }
        panic!("stdout closed before the listening line");
    })
    .await
    .expect("the listening line within the wait");
    let port: u16 = addr
        .parse::<std::net::SocketAddr>()
        .unwrap_or_else(|e| panic!("`{addr}`: {e}"))
        .port();

    // It serves (anonymously, in dev mode) on loopback too.
    let resp = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let pid = server.child.id().expect("still running") as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(WAIT, server.child.wait())
        .await
        .expect("exits within the wait after SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

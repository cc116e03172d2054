//! TLS end to end: HTTPS and `wss://` on the server's one port, the agent
//! over `wss://` (and its refusals of a wrong name and an unknown CA), a
//! renewed certificate picked up without a restart (and a broken renewal
//! not), a start refused over unusable files, and the silences client
//! over `https://` to a real Alertmanager serving TLS. Every certificate
//! is made here, by a [`TestCa`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use opswire::alertmanager::{AlertmanagerClient, SilenceError};
use opswire::config::AlertmanagerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::Connector;

use crate::agent::{append, Agent};
use crate::helpers::*;

/// A CA, and a server certificate of it at `cert` / `key`.
struct Files {
    ca: TestCa,
    dir: tempfile::TempDir,
}

impl Files {
    fn new(names: &[&str]) -> Files {
        let f = Files {
            ca: TestCa::new("opswire test CA"),
            dir: tempfile::tempdir().unwrap(),
        };
        f.renew("first", names);
        f
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// A new certificate (common name `cn`) in place of the old one.
    fn renew(&self, cn: &str, names: &[&str]) {
        self.ca.issue(cn, names, &self.cert(), &self.key());
    }
}

const LOCAL: &[&str] = &["DNS:localhost", "IP:127.0.0.1"];

fn tls_app(files: &Files) -> TestApp {
    let (cert, key) = (files.cert(), files.key());
    spawn_app_with(move |c| {
        c.tls.cert_file = Some(cert);
        c.tls.key_file = Some(key);
    })
}

fn trusting(ca: &Path) -> Arc<rustls::ClientConfig> {
    Arc::new(opswire::tls::client_config(Some(ca)).unwrap())
}

fn der(pem: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(pem).unwrap().to_vec()
}

/// The certificate a new TLS connection to `addr` is shown, checked
/// against `ca` for `localhost`.
async fn served_cert(addr: SocketAddr, ca: &Path) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(trusting(ca))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let (_, conn) = tls.get_ref();
    conn.peer_certificates().unwrap()[0].to_vec()
}

/// A `wss://` connection with a header token, past its `welcome`.
async fn wss(app: &TestApp, ca: &Path, token: &str) -> WsClient {
    let mut req = format!("wss://localhost:{}/ws", app.addr.port())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    let (inner, _) = tokio_tungstenite::connect_async_tls_with_config(
        req,
        None,
        true,
        Some(Connector::Rustls(trusting(ca))),
    )
    .await
    .expect("wss:// connects");
    let mut c = WsClient { inner };
    assert_eq!(c.next_frame().await["type"], "welcome");
    c
}

fn https_client(ca: &Path) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls((*trusting(ca)).clone())
        .timeout(WAIT)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_share_the_tls_port() {
    let files = Files::new(LOCAL);
    let app = tls_app(&files);
    let https = https_client(&files.ca.pem());
    let base = format!("https://127.0.0.1:{}", app.addr.port());

    let r = https.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let info: Value = https
        .get(format!("{base}/api/v1/info"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["auth_required"], true, "{info}");
    let metrics = https
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("opswire_tls_certificate_reloads_total{outcome=\"failed\"} 0"),
        "{metrics}"
    );

    // A subscriber over wss:// gets what is published.
    let mut sub = wss(&app, &files.ca.pem(), &token(&["alpha"])).await;
    sub.subscribe("alpha", &["logs"]).await;
    app.publish_log("alpha", "over TLS");
    let log = sub.next_non_metrics().await;
    assert_eq!(log["type"], "log", "{log}");
    assert_eq!(log["data"]["message"], "over TLS");

    // Plain HTTP to the TLS port gets no answer, and is counted.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", app.addr))
        .timeout(WAIT)
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    let failures = &app.state.metrics.tls_handshake_failures;
    let deadline = Instant::now() + WAIT;
    while failures.get() == 0 {
        assert!(Instant::now() < deadline, "handshake failure not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A shutdown reaches a wss:// client through the front: close 1012,
    // and the server stops (its drain does not wait on the front).
    drop(https); // its idle keep-alive connections
    app.shutdown_token().cancel();
    let (closed, _) = sub.expect_close().await;
    assert_eq!(closed.code, 1012);
    let stopped = tokio::task::spawn_blocking(move || app.stop());
    tokio::time::timeout(WAIT, stopped)
        .await
        .expect("the server stops")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_publishes_over_wss() {
    let files = Files::new(LOCAL);
    let app = tls_app(&files);
    let mut sub = wss(&app, &files.ca.pem(), &token(&["alpha"])).await;
    sub.subscribe("alpha", &["logs"]).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "");
    let ca = files.ca.pem();
    let _agent = Agent::start_url(
        &format!("wss://localhost:{}", app.addr.port()),
        &token_with(&["alpha"], "ingest", 3600),
        &[
            "--ca-file",
            ca.to_str().unwrap(),
            "--host",
            "agent-tls",
            "--tail",
            log.to_str().unwrap(),
            "--tick-ms",
            "200",
        ],
    );
    // Lines are read from the end of the file as it was when the agent
    // started: write until one arrives (the agent may still be starting).
    let deadline = Instant::now() + 3 * WAIT;
    loop {
        append(&log, "a line over wss\n");
        if let Some(f) = sub.try_next_frame(Duration::from_millis(300)).await {
            if f["type"] == "log" {
                assert_eq!(f["data"]["message"], "a line over wss", "{f}");
                assert_eq!(f["data"]["host"], "agent-tls", "{f}");
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no line from the agent over wss://"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_refuses_a_wrong_host_name_and_an_unknown_ca() {
    // A certificate for hub.example only.
    let files = Files::new(&["DNS:hub.example"]);
    let app = tls_app(&files);
    let hub = format!("wss://127.0.0.1:{}", app.addr.port());
    let token = token_with(&["alpha"], "ingest", 3600);
    let ca = files.ca.pem();

    let mut wrong_name = Agent::start_url(&hub, &token, &["--ca-file", ca.to_str().unwrap()]);
    let status = wrong_name.wait_exit(2 * WAIT).await;
    assert_eq!(status.code(), Some(2), "{:?}", wrong_name.log());
    let log = wrong_name.log().join("\n");
    assert!(
        log.contains(
            "TLS: the hub's certificate is not valid for 127.0.0.1 (it names hub.example)"
        ),
        "{log}"
    );

    // No --ca-file: the system's roots, which do not know the test CA.
    let mut unknown_ca = Agent::start_url(&hub, &token, &[]);
    let status = unknown_ca.wait_exit(2 * WAIT).await;
    assert_eq!(status.code(), Some(2), "{:?}", unknown_ca.log());
    let log = unknown_ca.log().join("\n");
    assert!(
        log.contains("TLS: the hub's certificate is signed by an unknown CA; pass --ca-file"),
        "{log}"
    );
}

/// Connects until the served certificate is `want`, or fails after a
/// deadline (the files are looked at about once a second).
async fn await_served(addr: SocketAddr, ca: &Path, want: &[u8], what: &str) {
    let deadline = Instant::now() + 3 * WAIT;
    while served_cert(addr, ca).await != want {
        assert!(Instant::now() < deadline, "{what} never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Until `refused()` (the reload counted a failure), every connection
/// still gets `kept`; fails after a deadline.
async fn await_refused(
    addr: SocketAddr,
    ca: &Path,
    kept: &[u8],
    refused: impl Fn() -> bool,
    what: &str,
) {
    let deadline = Instant::now() + 3 * WAIT;
    while !refused() {
        assert_eq!(served_cert(addr, ca).await, kept);
        assert!(Instant::now() < deadline, "{what} was never looked at");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_and_a_broken_renewal_is_not() {
    let files = Files::new(LOCAL);
    let app = tls_app(&files);
    let ca = files.ca.pem();
    let first = der(&files.cert());
    assert_eq!(served_cert(app.addr, &ca).await, first);

    // Renewed in place: the next connections get the new certificate.
    files.renew("second", LOCAL);
    let second = der(&files.cert());
    assert_ne!(first, second);
    await_served(app.addr, &ca, &second, "the renewed certificate").await;
    let reloads = &app.state.metrics.tls_reloads;
    assert!(reloads.with_label_values(&["ok"]).get() >= 1);

    // A certificate file that is not one: refused (counted), the second
    // certificate still served.
    let failed = || reloads.with_label_values(&["failed"]).get();
    let before = failed();
    std::fs::write(files.cert(), "not a certificate\n").unwrap();
    await_refused(
        app.addr,
        &ca,
        &second,
        || failed() > before,
        "the broken file",
    )
    .await;
    assert_eq!(served_cert(app.addr, &ca).await, second);

    // A renewal that writes the certificate, then the key: between the
    // two, a key that does not match is refused; once both are there,
    // the third certificate is served.
    let staged = tempfile::tempdir().unwrap();
    let (cert3, key3) = (staged.path().join("c.pem"), staged.path().join("k.pem"));
    files.ca.issue("third", LOCAL, &cert3, &key3);
    let before = failed();
    std::fs::copy(&cert3, files.cert()).unwrap();
    await_refused(
        app.addr,
        &ca,
        &second,
        || failed() > before,
        "the mismatched pair",
    )
    .await;
    std::fs::copy(&key3, files.key()).unwrap();
    await_served(app.addr, &ca, &der(&cert3), "the third certificate").await;
}

/// Runs `opswire serve` until it exits (bounded); its exit code and stderr.
fn serve_exit(envs: &[(&str, &Path)]) -> (Option<i32>, String) {
    let mut cmd = opswire_command();
    cmd.args(["serve", "--bind", "127.0.0.1:0"])
        .env("OPSWIRE_JWT_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let (stderr, reader) = collect_stderr(&mut child);
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("opswire started with unusable TLS files");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    reader.join().unwrap();
    let text = stderr.lock().unwrap().join("\n");
    (status.code(), text)
}

#[test]
fn unusable_tls_files_stop_the_start_naming_the_file() {
    let files = Files::new(LOCAL);
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM\n").unwrap();

    let (code, err) = serve_exit(&[
        ("OPSWIRE_TLS__CERT_FILE", &garbage),
        ("OPSWIRE_TLS__KEY_FILE", &files.key()),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("{}: no certificate in it", garbage.display())),
        "{err}"
    );

    // The key of another certificate.
    let other = tempfile::tempdir().unwrap();
    let (c2, k2) = (other.path().join("c.pem"), other.path().join("k.pem"));
    files.ca.issue("other", LOCAL, &c2, &k2);
    let (code, err) = serve_exit(&[
        ("OPSWIRE_TLS__CERT_FILE", &files.cert()),
        ("OPSWIRE_TLS__KEY_FILE", &k2),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{}: the private key does not match the certificate in {}",
            k2.display(),
            files.cert().display()
        )),
        "{err}"
    );

    // One file without the other: a configuration error (exit 2).
    let (code, err) = serve_exit(&[("OPSWIRE_TLS__CERT_FILE", &files.cert())]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("tls.key_file: must be set with tls.cert_file"),
        "{err}"
    );
}

/// A real Alertmanager serving its API over TLS only
/// (`--web.config.file` with `tls_server_config`).
struct TlsAlertmanager {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl TlsAlertmanager {
    fn start(files: &Files) -> TlsAlertmanager {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: none\nreceivers:\n  - name: none\n",
        )
        .unwrap();
        let web = dir.path().join("web.yml");
        std::fs::write(
            &web,
            format!(
                "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
                files.cert().display(),
                files.key().display()
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = spawn_alertmanager(dir.path(), &config, Some(&web), port);
        TlsAlertmanager {
            child,
            url: format!("https://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    async fn wait_ready(&self, https: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(r) = https.get(format!("{}/-/ready", self.url)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "alertmanager never ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TlsAlertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_reach_an_alertmanager_over_https_with_its_ca() {
    let files = Files::new(LOCAL);
    let am = TlsAlertmanager::start(&files);
    let https = https_client(&files.ca.pem());
    am.wait_ready(&https).await;
    let alert = serde_json::from_value(json!({
        "status": "firing", "fingerprint": "fp-tls", "alertname": "HighCpu",
        "severity": "critical", "labels": {"alertname": "HighCpu", "team": "alpha"},
        "annotations": {}, "starts_at": "2026-11-22T10:00:00Z", "ends_at": null,
        "generator_url": ""
    }))
    .unwrap();
    let config = |ca_file: Option<PathBuf>| AlertmanagerConfig {
        url: Some(am.url.clone()),
        ca_file,
        ..AlertmanagerConfig::default()
    };

    let client = AlertmanagerClient::new(&config(Some(files.ca.pem())));
    let id = client
        .create_silence(&alert, Duration::from_secs(600), "tester", "over https")
        .await
        .expect("a silence over https");
    let silence: Value = https
        .get(format!("{}/api/v2/silence/{id}", am.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(silence["comment"], "over https", "{silence}");

    // Without the CA file: the system's roots, which do not know the CA.
    let client = AlertmanagerClient::new(&config(None));
    let e = client
        .create_silence(&alert, Duration::from_secs(600), "tester", "")
        .await
        .unwrap_err();
    assert!(matches!(e, SilenceError::Unreachable(_)), "{e}");
    assert!(
        e.to_string().contains(
            "TLS: Alertmanager's certificate is signed by an unknown CA; pass alertmanager.ca_file"
        ),
        "{e}"
    );
}

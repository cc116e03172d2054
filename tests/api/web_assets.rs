//! The dashboard's page and assets over real HTTP: each coding decodes to
//! the exact bytes, has its own `ETag` and answers `If-None-Match` with
//! `304`; `Accept-Encoding` (q-values, `identity`, `*`) picks the coding;
//! `Vary`, the cache policy and `HEAD`. Also the `[web]` settings the page
//! reads from `/api/v1/info`.

use std::io::Read;

use serde_json::Value;

use crate::helpers::*;

/// reqwest here has no decompression feature: bodies arrive as sent.
async fn get(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = reqwest::Client::new().request(method, app.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = tokio::time::timeout(WAIT, req.send())
        .await
        .expect("response within the wait")
        .expect("HTTP request");
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.bytes().await.unwrap().to_vec();
    (status, headers, body)
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap())
}

fn decode(coding: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        None => out = body.to_vec(),
        Some("gzip") => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some("br") => {
            brotli::Decompressor::new(body, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some(other) => panic!("unexpected Content-Encoding {other}"),
    }
    out
}

/// Waits until the server has compressed every body (a thread does it at
/// startup; until then bodies go out as they are). The last one it
/// compresses is the license, after the page and the other assets.
async fn compressed(app: &TestApp) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    for path in ["/", "/vendor/uPlot.LICENSE"] {
        loop {
            let (_, h, _) = get(
                app,
                reqwest::Method::GET,
                path,
                &[("accept-encoding", "br")],
            )
            .await;
            if header(&h, "content-encoding") == Some("br") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} still not compressed after 60 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// The page's asset URLs, as the page names them.
fn asset_urls(html: &str) -> Vec<String> {
    let mut urls = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for (i, _) in html.match_indices(attr) {
            let rest = &html[i + attr.len()..];
            let url = &rest[..rest.find('"').unwrap()];
            if url.starts_with('/') && !urls.iter().any(|u| u == url) {
                urls.push(url.to_owned());
            }
        }
    }
    urls
}

#[tokio::test]
async fn every_coding_decodes_to_the_exact_bytes_with_its_own_etag() {
    let app = spawn_app();
    compressed(&app).await;
    let (status, h, page) = get(&app, reqwest::Method::GET, "/", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&h, "content-encoding"),
        None,
        "no Accept-Encoding: identity"
    );
    let html = String::from_utf8(page).unwrap();
    let urls = asset_urls(&html);
    for want in [
        "/app.js?v=",
        "/app.css?v=",
        "/vendor/uPlot.iife.min.js?v=",
        "/vendor/uPlot.min.css?v=",
    ] {
        assert!(
            urls.iter().any(|u| u.starts_with(want)),
            "{want} in {urls:?}"
        );
    }
    let mut paths = vec!["/".to_owned()];
    paths.extend(urls);
    paths.push("/vendor/uPlot.LICENSE".into());
    for path in &paths {
        let (_, h, plain) = get(
            &app,
            reqwest::Method::GET,
            path,
            &[("accept-encoding", "identity")],
        )
        .await;
        assert_eq!(header(&h, "content-encoding"), None, "{path}");
        let plain_tag = header(&h, "etag").unwrap().to_owned();
        let mut tags = vec![plain_tag.clone()];
        for coding in ["br", "gzip"] {
            let (status, h, body) = get(
                &app,
                reqwest::Method::GET,
                path,
                &[("accept-encoding", coding)],
            )
            .await;
            assert_eq!(status, 200, "{path} {coding}");
            assert_eq!(
                header(&h, "vary"),
                Some("Accept-Encoding"),
                "{path} {coding}"
            );
            let tag = header(&h, "etag").unwrap().to_owned();
            assert!(
                tag.starts_with('"') && tag.ends_with('"'),
                "a strong ETag: {tag}"
            );
            assert_eq!(header(&h, "content-encoding"), Some(coding), "{path}");
            assert!(body.len() < plain.len(), "{path}: {coding} is smaller");
            assert_eq!(decode(Some(coding), &body), plain, "{path} in {coding}");
            assert_eq!(
                header(&h, "content-length").map(|l| l.parse::<usize>().unwrap()),
                Some(body.len())
            );
            // Revalidation: this coding's tag → 304 without a body.
            let (status, h304, body304) = get(
                &app,
                reqwest::Method::GET,
                path,
                &[("accept-encoding", coding), ("if-none-match", &tag)],
            )
            .await;
            assert_eq!(status, 304, "{path} {coding}");
            assert!(body304.is_empty());
            assert_eq!(header(&h304, "etag"), Some(tag.as_str()));
            assert_eq!(header(&h304, "vary"), Some("Accept-Encoding"));
            // A weakened copy of the tag (a proxy's W/) still matches.
            let weak = format!("W/{tag}");
            let (status, ..) = get(
                &app,
                reqwest::Method::GET,
                path,
                &[("accept-encoding", coding), ("if-none-match", &weak)],
            )
            .await;
            assert_eq!(status, 304, "{path} {coding} weak");
            tags.push(tag);
        }
        // Another coding's tag does not stand for these bytes.
        let (status, h, _) = get(
            &app,
            reqwest::Method::GET,
            path,
            &[("accept-encoding", "gzip"), ("if-none-match", &tags[1])],
        )
        .await;
        assert_eq!(
            status, 200,
            "{path}: the br tag must not validate the gzip body"
        );
        assert_eq!(header(&h, "content-encoding"), Some("gzip"));
        let (status, ..) = get(
            &app,
            reqwest::Method::GET,
            path,
            &[("if-none-match", &plain_tag)],
        )
        .await;
        assert_eq!(status, 304, "{path} identity");
        tags.sort();
        tags.dedup();
        assert_eq!(tags.len(), 3, "{path}: one ETag per coding: {tags:?}");
    }
    app.stop();
}

#[tokio::test]
async fn accept_encoding_picks_by_q_value_identity_and_star() {
    let app = spawn_app();
    compressed(&app).await;
    let (_, h, _) = get(&app, reqwest::Method::GET, "/", &[]).await;
    let app_js =
        asset_urls(&String::from_utf8(get(&app, reqwest::Method::GET, "/", &[]).await.2).unwrap())
            .into_iter()
            .find(|u| u.starts_with("/app.js"))
            .unwrap();
    assert_eq!(header(&h, "vary"), Some("Accept-Encoding"));
    for (accept, want) in [
        ("gzip, deflate, br, zstd", Some("br")),
        ("gzip, deflate", Some("gzip")),
        ("br;q=0.5, gzip;q=0.9", Some("gzip")),
        ("br;q=0, gzip;q=0", None),
        ("identity", None),
        ("identity;q=1, br;q=0.4", None),
        ("deflate, zstd", None),
        ("*", Some("br")),
        ("*;q=0.3, br;q=0", Some("gzip")),
        ("", None),
    ] {
        for path in ["/", app_js.as_str()] {
            let (status, h, body) = get(
                &app,
                reqwest::Method::GET,
                path,
                &[("accept-encoding", accept)],
            )
            .await;
            assert_eq!(status, 200);
            assert_eq!(
                header(&h, "content-encoding"),
                want,
                "{path} with Accept-Encoding: {accept}"
            );
            assert!(!decode(want, &body).is_empty());
        }
    }
    app.stop();
}

#[tokio::test]
async fn cache_policy_and_head() {
    let app = spawn_app();
    compressed(&app).await;
    let (_, h, page) = get(
        &app,
        reqwest::Method::GET,
        "/",
        &[("accept-encoding", "br")],
    )
    .await;
    assert_eq!(header(&h, "cache-control"), Some("no-cache"));
    assert!(header(&h, "content-security-policy")
        .unwrap()
        .contains("script-src 'self'"));
    assert_eq!(header(&h, "content-type"), Some("text/html; charset=utf-8"));
    let html = String::from_utf8(decode(Some("br"), &page)).unwrap();
    for url in asset_urls(&html) {
        let (_, h, _) = get(
            &app,
            reqwest::Method::GET,
            &url,
            &[("accept-encoding", "br")],
        )
        .await;
        assert_eq!(
            header(&h, "cache-control"),
            Some("public, max-age=31536000, immutable"),
            "{url}"
        );
        let bare = url.split('?').next().unwrap();
        let (_, h, _) = get(
            &app,
            reqwest::Method::GET,
            bare,
            &[("accept-encoding", "br")],
        )
        .await;
        assert_eq!(header(&h, "cache-control"), Some("no-cache"), "{bare}");
    }
    // HEAD: the GET's headers (coding, length, ETag), no body.
    for accept in ["br", "gzip", "identity"] {
        let (_, gh, gbody) = get(
            &app,
            reqwest::Method::GET,
            "/",
            &[("accept-encoding", accept)],
        )
        .await;
        let (status, hh, hbody) = get(
            &app,
            reqwest::Method::HEAD,
            "/",
            &[("accept-encoding", accept)],
        )
        .await;
        assert_eq!(status, 200);
        assert!(hbody.is_empty());
        for name in [
            "content-encoding",
            "etag",
            "vary",
            "content-type",
            "cache-control",
        ] {
            assert_eq!(
                header(&hh, name),
                header(&gh, name),
                "HEAD {accept}: {name}"
            );
        }
        assert_eq!(
            header(&hh, "content-length").map(|l| l.parse::<usize>().unwrap()),
            Some(gbody.len()),
            "HEAD {accept}: Content-Length of the GET's body"
        );
    }
    // POST is not served.
    let (status, ..) = get(&app, reqwest::Method::POST, "/app.js", &[]).await;
    assert!(status == 404 || status == 405, "{status}");
    app.stop();
}

#[tokio::test]
async fn the_vendored_uplot_is_served_as_committed() {
    let app = spawn_app();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/web/vendor");
    for (path, file) in [
        ("/vendor/uPlot.iife.min.js", "uPlot.iife.min.js"),
        ("/vendor/uPlot.min.css", "uPlot.min.css"),
        ("/vendor/uPlot.LICENSE", "uPlot.LICENSE"),
    ] {
        let (status, h, body) = get(
            &app,
            reqwest::Method::GET,
            path,
            &[("accept-encoding", "gzip")],
        )
        .await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(
            decode(header(&h, "content-encoding"), &body),
            std::fs::read(dir.join(file)).unwrap(),
            "{path}"
        );
    }
    app.stop();
}

#[tokio::test]
async fn info_carries_the_grafana_settings() {
    let app = spawn_app();
    let (_, _, body) = get(&app, reqwest::Method::GET, "/api/v1/info", &[]).await;
    let info: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(info["grafana_url"], Value::Null);
    assert_eq!(info["grafana_loki_uid"], "loki");
    assert_eq!(info["team_logs_service"], "opswire-teams");
    app.stop();

    let app = spawn_app_with(|c| {
        c.web.grafana_url = Some("http://127.0.0.1:3000".into());
        c.web.grafana_loki_uid = "team-loki".into();
    });
    let (_, _, body) = get(&app, reqwest::Method::GET, "/api/v1/info", &[]).await;
    let info: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(info["grafana_url"], "http://127.0.0.1:3000");
    assert_eq!(info["grafana_loki_uid"], "team-loki");
    app.stop();
}

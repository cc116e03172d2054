//! The bundled dashboard: static assets embedded in the binary.
//!
//! `index.html` references its assets as `/app.js?v=<version>`, where the
//! version is a hash of the assets computed at compile time. A request that
//! carries the current version is cached for a year (`immutable`); the page
//! itself and unversioned asset URLs are revalidated on every load through
//! their `ETag`. Every body is sent brotli- or gzip-compressed when the
//! client accepts it ([`assets`], with `request::encoding`). See `docs/dashboard.md`.

mod assets;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{guard, web, HttpRequest, HttpResponse};

use assets::{Encoded, ASSETS, ASSETS_HASH};

const INDEX_HTML: &str = include_str!("web/index.html");

/// Placeholder in `index.html` replaced by [`version`].
const VERSION_MARK: &str = "__V__";

/// `connect-src 'self'` covers the same-origin `ws:`/`wss:` URL (CSP 3).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'; object-src 'none'";

const INDEX_HASH: u64 = assets::fnv1a(INDEX_HTML.as_bytes(), ASSETS_HASH);

/// Cache policy of the page and of asset URLs without the current version.
const REVALIDATE: &str = "no-cache";
/// Cache policy of an asset URL with the current version.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The assets' version, as it appears in their URLs.
fn version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| format!("{ASSETS_HASH:016x}"))
}

fn index_html() -> &'static str {
    static HTML: OnceLock<String> = OnceLock::new();
    HTML.get_or_init(|| INDEX_HTML.replace(VERSION_MARK, version()))
}

static INDEX_ENCODED: OnceLock<Encoded> = OnceLock::new();

fn index_encode() -> &'static Encoded {
    INDEX_ENCODED
        .get_or_init(|| Encoded::new(Bytes::from_static(index_html().as_bytes()), INDEX_HASH))
}

/// Whether the compression thread runs: then a body not compressed yet is
/// sent as it is; without it, each is compressed at its first request.
static COMPRESSING: AtomicBool = AtomicBool::new(false);

fn index_encoded() -> &'static Encoded {
    if !COMPRESSING.load(Ordering::Acquire) {
        return index_encode();
    }
    static PLAIN: OnceLock<Encoded> = OnceLock::new();
    INDEX_ENCODED.get().unwrap_or_else(|| {
        PLAIN
            .get_or_init(|| Encoded::plain(Bytes::from_static(index_html().as_bytes()), INDEX_HASH))
    })
}

fn asset_encoded(i: usize) -> &'static Encoded {
    if COMPRESSING.load(Ordering::Acquire) {
        assets::encoded_or_plain(i)
    } else {
        assets::encode(i)
    }
}

/// GET, and HEAD (the same headers, no body: actix-web drops it).
fn get_or_head() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// Compresses every body on a thread of its own at the dashboard's first
/// request, so no visitor waits for brotli's densest setting (a request
/// that comes sooner gets the body as it is, with that coding's `ETag`),
/// and a server nobody opens the page of never spends the CPU.
fn compress_in_background() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("web-compress".into())
            .spawn(|| {
                index_encode();
                for i in 0..ASSETS.len() {
                    assets::encode(i);
                }
            });
        COMPRESSING.store(spawned.is_ok(), Ordering::Release);
        if let Err(e) = spawned {
            // Not fatal: each body is then compressed at its first request.
            tracing::warn!(error = %e, "could not start the asset compression thread");
        }
    });
}

/// Registers `/` and the dashboard's assets.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", get_or_head().to(index));
    for (i, a) in ASSETS.iter().enumerate() {
        cfg.route(
            a.path,
            get_or_head().to(move |req: HttpRequest| async move { asset(&req, i) }),
        );
    }
}

/// Whether the request names the current asset version (`?v=<version>`).
fn versioned(req: &HttpRequest) -> bool {
    req.query_string()
        .split('&')
        .any(|kv| kv.strip_prefix("v=") == Some(version()))
}

fn asset(req: &HttpRequest, i: usize) -> HttpResponse {
    compress_in_background();
    let cache = if versioned(req) {
        IMMUTABLE
    } else {
        REVALIDATE
    };
    assets::respond(req, asset_encoded(i), ASSETS[i].content_type, cache)
}

async fn index(req: HttpRequest) -> HttpResponse {
    compress_in_background();
    let mut res = assets::respond(
        &req,
        index_encoded(),
        "text/html; charset=utf-8",
        REVALIDATE,
    );
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_references_versioned_assets_only() {
        let html = index_html();
        assert!(!html.contains(VERSION_MARK));
        for asset in [
            "/app.js",
            "/app.css",
            "/favicon.svg",
            "/vendor/uPlot.iife.min.js",
            "/vendor/uPlot.min.css",
        ] {
            assert!(
                html.contains(&format!("{asset}?v={}", version())),
                "{asset} is not versioned in index.html"
            );
        }
    }

    #[test]
    fn version_changes_with_content() {
        assert_ne!(assets::fnv1a(b"a", 1), assets::fnv1a(b"b", 1));
        assert_eq!(version().len(), 16);
    }
}

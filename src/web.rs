//! The bundled dashboard: static assets embedded in the binary.
//!
//! `index.html` references its assets as `/app.js?v=<version>`, where the
//! version is a hash of the assets computed at compile time. A request that
//! carries the current version is cached for a year (`immutable`); the page
//! itself and unversioned asset URLs are revalidated on every load through
//! their `ETag`. See `docs/dashboard.md`.

use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

const INDEX_HTML: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const APP_CSS: &str = include_str!("web/app.css");
const FAVICON_SVG: &str = include_str!("web/favicon.svg");

/// Placeholder in `index.html` replaced by [`version`].
const VERSION_MARK: &str = "__V__";

/// `connect-src 'self'` covers the same-origin `ws:`/`wss:` URL (CSP 3).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'; object-src 'none'";

const fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const JS_HASH: u64 = fnv1a(APP_JS.as_bytes(), FNV_OFFSET);
const CSS_HASH: u64 = fnv1a(APP_CSS.as_bytes(), FNV_OFFSET);
const FAVICON_HASH: u64 = fnv1a(FAVICON_SVG.as_bytes(), FNV_OFFSET);
const ASSETS_HASH: u64 = fnv1a(FAVICON_SVG.as_bytes(), fnv1a(APP_CSS.as_bytes(), JS_HASH));
const INDEX_HASH: u64 = fnv1a(INDEX_HTML.as_bytes(), ASSETS_HASH);

/// The assets' version, as it appears in their URLs.
fn version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| format!("{ASSETS_HASH:016x}"))
}

fn index_html() -> &'static str {
    static HTML: OnceLock<String> = OnceLock::new();
    HTML.get_or_init(|| INDEX_HTML.replace(VERSION_MARK, version()))
}

/// Registers `/` and the dashboard's assets.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/app.js", web::get().to(app_js))
        .route("/app.css", web::get().to(app_css))
        .route("/favicon.svg", web::get().to(favicon));
}

/// A static body with its content type, `ETag`, cache policy and
/// `If-None-Match` handling.
fn serve(
    req: &HttpRequest,
    body: &'static str,
    content_type: &'static str,
    etag_hash: u64,
    immutable: bool,
) -> HttpResponse {
    let etag = format!("\"{etag_hash:016x}\"");
    let cache = if immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut res = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::ETAG, etag))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if fresh {
        return res.finish();
    }
    res.content_type(content_type).body(body)
}

/// Whether the request names the current asset version (`?v=<version>`).
fn versioned(req: &HttpRequest) -> bool {
    req.query_string()
        .split('&')
        .any(|kv| kv.strip_prefix("v=") == Some(version()))
}

async fn index(req: HttpRequest) -> HttpResponse {
    let mut res = serve(
        &req,
        index_html(),
        "text/html; charset=utf-8",
        INDEX_HASH,
        false,
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

async fn app_js(req: HttpRequest) -> HttpResponse {
    let v = versioned(&req);
    serve(&req, APP_JS, "text/javascript; charset=utf-8", JS_HASH, v)
}

async fn app_css(req: HttpRequest) -> HttpResponse {
    let v = versioned(&req);
    serve(&req, APP_CSS, "text/css; charset=utf-8", CSS_HASH, v)
}

async fn favicon(req: HttpRequest) -> HttpResponse {
    let v = versioned(&req);
    serve(&req, FAVICON_SVG, "image/svg+xml", FAVICON_HASH, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_references_versioned_assets_only() {
        let html = index_html();
        assert!(!html.contains(VERSION_MARK));
        for asset in ["/app.js", "/app.css", "/favicon.svg"] {
            assert!(
                html.contains(&format!("{asset}?v={}", version())),
                "{asset} is not versioned in index.html"
            );
        }
    }

    #[test]
    fn version_changes_with_content() {
        assert_ne!(fnv1a(b"a", 1), fnv1a(b"b", 1));
        assert_eq!(version().len(), 16);
    }
}

//! The dashboard's files, embedded in the binary, and their compressed
//! copies.
//!
//! Each body is compressed once per process, with gzip (level 9) and brotli
//! (quality 11): the files never change while the process runs, so the
//! slowest, densest settings cost one time only. [`super`] does it on a
//! thread of its own at startup; until a body is ready it is sent as it is,
//! so no request waits for brotli. A coding that would not save bytes is not
//! kept. Every coding has its own
//! strong `ETag` (`"<hash>"`, `"<hash>-gz"`, `"<hash>-br"`): the bytes
//! differ, so a cache must not take one for the other (RFC 9110 §8.8.3).

use std::io::Write;
use std::sync::OnceLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};

use crate::request::encoding::{negotiate, Coding};

/// One embedded file.
pub struct Asset {
    /// Its URL path.
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// Every file served under its own path (the page itself is [`super::index`]).
pub const ASSETS: [Asset; 6] = [
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("app.js"),
    },
    Asset {
        path: "/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("app.css"),
    },
    Asset {
        path: "/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("favicon.svg"),
    },
    // uPlot, vendored from npm (package-lock.json pins the version;
    // scripts/test-web.sh checks these are the locked package's bytes).
    Asset {
        path: "/vendor/uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("vendor/uPlot.iife.min.js"),
    },
    Asset {
        path: "/vendor/uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("vendor/uPlot.min.css"),
    },
    // Its MIT license travels with the binary that embeds it.
    Asset {
        path: "/vendor/uPlot.LICENSE",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("vendor/uPlot.LICENSE"),
    },
];

pub const fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The hash of every asset's path and body: the version in their URLs.
pub const ASSETS_HASH: u64 = {
    let mut h = FNV_OFFSET;
    let mut i = 0;
    while i < ASSETS.len() {
        h = fnv1a(ASSETS[i].path.as_bytes(), h);
        h = fnv1a(ASSETS[i].body, h);
        i += 1;
    }
    h
};

/// A body in every coding worth sending, with its `ETag`s.
pub struct Encoded {
    /// `(coding, body, ETag)`, identity always present.
    variants: Vec<(Coding, Bytes, HeaderValue)>,
}

impl Encoded {
    /// Compresses `body` (whose content hash is `hash`) in every coding.
    pub fn new(body: Bytes, hash: u64) -> Encoded {
        let mut variants = Vec::with_capacity(3);
        for coding in [Coding::Brotli, Coding::Gzip] {
            let packed = compress(coding, &body);
            if packed.len() < body.len() {
                let suffix = if coding == Coding::Gzip { "-gz" } else { "-br" };
                variants.push((coding, Bytes::from(packed), etag(hash, suffix)));
            }
        }
        variants.push((Coding::Identity, body, etag(hash, "")));
        Encoded { variants }
    }

    /// `body` as it is, not compressed (yet).
    pub fn plain(body: Bytes, hash: u64) -> Encoded {
        Encoded {
            variants: vec![(Coding::Identity, body, etag(hash, ""))],
        }
    }

    fn get(&self, coding: Coding) -> Option<&(Coding, Bytes, HeaderValue)> {
        self.variants.iter().find(|v| v.0 == coding)
    }
}

fn etag(hash: u64, suffix: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{hash:016x}{suffix}\"")).expect("hex is a valid header")
}

fn compress(coding: Coding, body: &[u8]) -> Vec<u8> {
    match coding {
        Coding::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 3),
                flate2::Compression::best(),
            );
            gz.write_all(body).expect("writing to a Vec cannot fail");
            gz.finish().expect("writing to a Vec cannot fail")
        }
        Coding::Brotli => {
            let mut out = Vec::with_capacity(body.len() / 3);
            // A window no larger than the body: the encoder's tables grow
            // with the window (at 2^22, some 15 MiB that the allocator then
            // keeps), and a window past the body's end buys nothing.
            let lgwin = (usize::BITS - body.len().max(1).leading_zeros()).clamp(10, 22) as i32;
            let params = brotli::enc::BrotliEncoderParams {
                quality: 11,
                lgwin,
                size_hint: body.len(),
                ..Default::default()
            };
            brotli::BrotliCompress(&mut &body[..], &mut out, &params)
                .expect("writing to a Vec cannot fail");
            out
        }
        Coding::Identity => body.to_vec(),
    }
}

static ENCODED: [OnceLock<Encoded>; ASSETS.len()] = [const { OnceLock::new() }; ASSETS.len()];

/// The compressed copies of `ASSETS[i]`, made now if not yet.
pub fn encode(i: usize) -> &'static Encoded {
    ENCODED[i].get_or_init(|| {
        let a = &ASSETS[i];
        Encoded::new(Bytes::from_static(a.body), fnv1a(a.body, FNV_OFFSET))
    })
}

/// The compressed copies of `ASSETS[i]` if they are made, else the body as
/// it is.
pub fn encoded_or_plain(i: usize) -> &'static Encoded {
    static PLAIN: [OnceLock<Encoded>; ASSETS.len()] = [const { OnceLock::new() }; ASSETS.len()];
    ENCODED[i].get().unwrap_or_else(|| {
        PLAIN[i].get_or_init(|| {
            let a = &ASSETS[i];
            Encoded::plain(Bytes::from_static(a.body), fnv1a(a.body, FNV_OFFSET))
        })
    })
}

/// A `200` (or `304` on a matching `If-None-Match`) in the coding the
/// request accepts best, with `Vary: Accept-Encoding`, that coding's `ETag`
/// and the cache policy `cache`.
pub fn respond(
    req: &HttpRequest,
    enc: &Encoded,
    content_type: &'static str,
    cache: &'static str,
) -> HttpResponse {
    let coding = negotiate(req, |c| enc.get(c).is_some());
    let (_, body, tag) = enc.get(coding).unwrap_or_else(|| {
        enc.get(Coding::Identity)
            .expect("identity is always present")
    });
    let fresh = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        // If-None-Match compares weakly (RFC 9110 §13.1.2): a `W/` that a
        // proxy added does not make a tag differ.
        .any(|t| t == "*" || t.trim_start_matches("W/").as_bytes() == tag.as_bytes());
    let mut res = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::ETAG, tag.clone()))
        .insert_header((header::VARY, "Accept-Encoding"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if fresh {
        return res.finish();
    }
    if let Some(token) = coding.token() {
        res.insert_header((header::CONTENT_ENCODING, token));
    }
    res.content_type(content_type).body(body.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn every_coding_decodes_to_the_body_and_has_its_own_etag() {
        for (i, a) in ASSETS.iter().enumerate() {
            let enc = encode(i);
            let mut tags = std::collections::HashSet::new();
            for (coding, body, tag) in &enc.variants {
                let mut plain = Vec::new();
                match coding {
                    Coding::Gzip => {
                        flate2::read::GzDecoder::new(&body[..])
                            .read_to_end(&mut plain)
                            .unwrap();
                    }
                    Coding::Brotli => {
                        brotli::Decompressor::new(&body[..], 4096)
                            .read_to_end(&mut plain)
                            .unwrap();
                    }
                    Coding::Identity => plain = body.to_vec(),
                }
                assert_eq!(plain, a.body, "{} in {coding:?}", a.path);
                tags.insert(tag.clone());
            }
            assert_eq!(tags.len(), enc.variants.len(), "{}: ETags differ", a.path);
        }
        // The big ones compress.
        assert!(encode(3).get(Coding::Brotli).is_some());
        assert!(encode(0).get(Coding::Gzip).is_some());
        assert_eq!(
            Encoded::plain(Bytes::from_static(b"x"), 1).variants.len(),
            1
        );
    }
}

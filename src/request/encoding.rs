//! Content-coding negotiation (`Accept-Encoding`, RFC 9110 §12.5.3), for
//! every response that may be compressed: the dashboard's assets (brotli,
//! gzip) and SSE streams (gzip).
//!
//! actix-web parses the header (q-values, `identity`, `*`); the choice among
//! the codings a response can have is made here, because actix's own
//! `AcceptEncoding::negotiate` never picks a coding for `*` and assumes nothing
//! about which of two equally weighted codings the server prefers.

use actix_web::http::header::{
    AcceptEncoding, ContentEncoding, Encoding, Header, Preference, Quality,
};
use actix_web::HttpRequest;

/// The codings a response may be sent in, in the server's order of
/// preference among codings the client weighs equally (brotli is the
/// smallest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    Brotli,
    Gzip,
    Identity,
}

impl Coding {
    /// Every coding, most preferred first.
    pub const ALL: [Coding; 3] = [Coding::Brotli, Coding::Gzip, Coding::Identity];

    /// The `Content-Encoding` token (`None` for identity: no header).
    pub fn token(self) -> Option<&'static str> {
        match self {
            Coding::Brotli => Some("br"),
            Coding::Gzip => Some("gzip"),
            Coding::Identity => None,
        }
    }

    fn matches(self, e: &Encoding) -> bool {
        let known = match self {
            Coding::Brotli => ContentEncoding::Brotli,
            Coding::Gzip => ContentEncoding::Gzip,
            Coding::Identity => ContentEncoding::Identity,
        };
        match e {
            Encoding::Known(k) => *k == known,
            // `x-gzip` is gzip (RFC 9110 §8.4.1.3).
            Encoding::Unknown(s) => self == Coding::Gzip && s.eq_ignore_ascii_case("x-gzip"),
        }
    }
}

/// The coding to send, among `available` (identity is always available):
/// the highest q-value wins, ties go to the earlier coding of
/// [`Coding::ALL`]. A coding not named gets the q-value of `*` if present;
/// identity not named (and no `*`) is acceptable. No header, an empty or an
/// unparsable one: identity, as plain HTTP clients (curl without
/// `--compressed`) expect. When nothing is acceptable (`identity;q=0` and
/// no coding offered) the answer is identity rather than `406`: a readable
/// body beats an error for a client that can always decode it.
pub fn negotiate(req: &HttpRequest, available: impl Fn(Coding) -> bool) -> Coding {
    if req
        .headers()
        .get(actix_web::http::header::ACCEPT_ENCODING)
        .is_none()
    {
        return Coding::Identity;
    }
    let Ok(AcceptEncoding(items)) = AcceptEncoding::parse(req) else {
        return Coding::Identity;
    };
    let star = items
        .iter()
        .find(|q| matches!(q.item, Preference::Any))
        .map(|q| q.quality);
    let weight = |c: Coding| -> Quality {
        let named = items.iter().find_map(|q| match &q.item {
            Preference::Specific(e) if c.matches(e) => Some(q.quality),
            _ => None,
        });
        match (named, star, c) {
            (Some(q), _, _) => q,
            (None, Some(q), _) => q,
            (None, None, Coding::Identity) => Quality::MIN,
            (None, None, _) => Quality::ZERO,
        }
    };
    let mut best = Coding::Identity;
    let mut best_q = Quality::ZERO;
    for c in Coding::ALL {
        if c != Coding::Identity && !available(c) {
            continue;
        }
        let q = weight(c);
        if q > best_q {
            best = c;
            best_q = q;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn pick_among(header: Option<&str>, available: impl Fn(Coding) -> bool) -> Coding {
        let mut req = TestRequest::default();
        if let Some(h) = header {
            req = req.insert_header(("accept-encoding", h));
        }
        negotiate(&req.to_http_request(), available)
    }

    fn pick(header: Option<&str>) -> Coding {
        pick_among(header, |_| true)
    }

    #[test]
    fn q_values_identity_and_star() {
        assert_eq!(pick(None), Coding::Identity);
        assert_eq!(pick(Some("")), Coding::Identity);
        assert_eq!(pick(Some("gzip, deflate, br, zstd")), Coding::Brotli);
        assert_eq!(pick(Some("gzip, deflate")), Coding::Gzip);
        assert_eq!(pick(Some("x-gzip")), Coding::Gzip);
        assert_eq!(pick(Some("br;q=0.5, gzip;q=0.8")), Coding::Gzip);
        assert_eq!(pick(Some("br;q=0, gzip;q=0")), Coding::Identity);
        assert_eq!(pick(Some("identity")), Coding::Identity);
        assert_eq!(pick(Some("identity;q=1, br;q=0.5")), Coding::Identity);
        assert_eq!(pick(Some("*")), Coding::Brotli);
        assert_eq!(pick(Some("*;q=0.2, br;q=0")), Coding::Gzip);
        assert_eq!(pick(Some("deflate")), Coding::Identity);
        assert_eq!(pick(Some("identity;q=0")), Coding::Identity);
        assert_eq!(pick(Some("gzip;q=nonsense")), Coding::Identity);
    }

    #[test]
    fn only_available_codings() {
        let req = TestRequest::default()
            .insert_header(("accept-encoding", "br, gzip"))
            .to_http_request();
        assert_eq!(negotiate(&req, |c| c == Coding::Gzip), Coding::Gzip);
        assert_eq!(negotiate(&req, |_| false), Coding::Identity);
    }

    #[test]
    fn gzip_only_as_an_sse_stream_asks() {
        let gzip = |h| pick_among(h, |c| c == Coding::Gzip);
        assert_eq!(gzip(Some("gzip, deflate, br, zstd")), Coding::Gzip);
        assert_eq!(gzip(Some("br")), Coding::Identity);
        assert_eq!(gzip(Some("br;q=1, gzip;q=0.1")), Coding::Gzip);
        assert_eq!(gzip(Some("gzip;q=0")), Coding::Identity);
        assert_eq!(gzip(Some("GZIP;Q=0.5")), Coding::Gzip);
        assert_eq!(gzip(Some("*;q=0")), Coding::Identity);
        assert_eq!(gzip(Some("*")), Coding::Gzip);
        assert_eq!(gzip(Some("gzip;q=0.5, identity;q=0.6")), Coding::Identity);
        assert_eq!(gzip(Some("gzip;q=0.5, identity;q=0.5")), Coding::Gzip);
        assert_eq!(gzip(None), Coding::Identity);
    }
}

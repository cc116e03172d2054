//! Token parsing: `auth::bearer_token` and `Authenticator::verify`, with
//! arbitrary text, correctly signed tokens of arbitrary claims, and valid
//! tokens mutated (header, payload or signature segment edited, swapped
//! with another token's, `alg` changed, `alg: none`, padding, the other
//! base64 alphabet, an ECDSA signature's twin).
//!
//! Invariants:
//! * never a panic, in dev mode, with an HS256 secret, or an RS256/ES256 key;
//! * a token whose text was changed in any way is never accepted;
//! * a correctly signed token is accepted exactly when its claims are
//!   valid (docs/protocol.md: `sub` and `exp` required and a string and a
//!   number, not expired, `teams` a non-empty list, `scope` absent, `read`
//!   or `ingest`), and the principal is what the claims say;
//! * every refusal has a message;
//! * `bearer_token` returns a trimmed part of the header after a
//!   case-insensitive `Bearer `, and nothing for any other scheme.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use opswire::auth::{bearer_token, now_s, AuthError, Authenticator, Scope};
use opswire::config::Config;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Map, Value};

use crate::check;
use crate::support::{self, arb_mutations, arb_text, mutate, SECRET};

const B64: base64_engine::Engine = base64_engine::Engine;

/// base64url without padding, as JWTs write it (no base64 dependency
/// here: a few lines suffice).
mod base64_engine {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    pub struct Engine;
    impl Engine {
        pub fn encode(&self, data: &[u8]) -> String {
            let mut out = String::new();
            for chunk in data.chunks(3) {
                let b = [
                    chunk[0],
                    *chunk.get(1).unwrap_or(&0),
                    *chunk.get(2).unwrap_or(&0),
                ];
                let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
                for i in 0..=chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                }
            }
            out
        }
        pub fn decode(&self, s: &str) -> Option<Vec<u8>> {
            let mut bits = 0u32;
            let mut n = 0;
            let mut out = Vec::new();
            for c in s.bytes() {
                let v = ALPHABET.iter().position(|a| *a == c)? as u32;
                bits = bits << 6 | v;
                n += 6;
                if n >= 8 {
                    n -= 8;
                    out.push((bits >> n) as u8);
                    bits &= (1 << n) - 1;
                }
            }
            Some(out)
        }
    }
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn authenticator(tweak: impl FnOnce(&mut Config)) -> Authenticator {
    let mut c = Config::default();
    tweak(&mut c);
    Authenticator::from_config(&c).expect("authenticator")
}

fn hs256() -> Authenticator {
    authenticator(|c| c.auth.jwt_secret = Some(SECRET.into()))
}

fn sign(header: &Header, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(header, claims, key).expect("token signs")
}

// ---------------------------------------------------------------------------
// bearer_token
// ---------------------------------------------------------------------------

#[test]
fn tokens_bearer_header() {
    let scheme = (
        prop::sample::select(vec![
            "Bearer", "bearer", "BEARER", "bEaReR", "Basic", "Bearer:", "Bearerx", "", "Token",
        ]),
        any::<bool>(),
    );
    let strategy = prop_oneof![
        any::<String>().prop_map(|s| (s, None)),
        (
            scheme,
            prop_oneof![arb_text(), "[A-Za-z0-9._-]{1,40}"],
            prop::sample::select(vec![" ", "  ", "\t", " \t "])
        )
            .prop_map(|((s, pad), tok, sep)| {
                let p = if pad { " " } else { "" };
                (format!("{p}{s}{sep}{tok}{p}"), Some((s, tok, sep)))
            }),
    ];
    support::run("tokens_bearer_header", strategy, |(header, built)| {
        let got = bearer_token(&header);
        if let Some(t) = got {
            check!(t == t.trim(), "token {t:?} not trimmed");
            check!(header.contains(t), "token {t:?} not from {header:?}");
            let (scheme, _) = header.trim().split_once(' ').unwrap();
            check!(
                scheme.eq_ignore_ascii_case("bearer"),
                "scheme {scheme:?} taken as Bearer"
            );
        }
        if let Some((scheme, tok, sep)) = built {
            if scheme.eq_ignore_ascii_case("bearer") && tok.trim().is_empty() {
                // `Bearer ` and nothing: the header trims to `Bearer`.
                check!(got.is_none_or(str::is_empty), "{header:?} gave {got:?}");
            } else if scheme.eq_ignore_ascii_case("bearer") && sep.starts_with(' ') {
                check!(got == Some(tok.trim()), "{header:?} gave {got:?}");
            } else if !scheme.eq_ignore_ascii_case("bearer") && !scheme.is_empty() {
                check!(
                    got.is_none(),
                    "scheme {scheme:?} in {header:?} gave {got:?}"
                );
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// Correctly signed tokens of arbitrary claims
// ---------------------------------------------------------------------------

/// A claim: absent, or a value (of the right type or not).
fn arb_claims() -> impl Strategy<Value = Map<String, Value>> {
    let now = now_s() as i64;
    let opt = |s: BoxedStrategy<Value>| prop::option::of(s);
    let odd = prop_oneof![
        Just(Value::Null),
        Just(json!(1.5)),
        Just(json!(true)),
        Just(json!([])),
        Just(json!({})),
        Just(json!("x")),
        Just(json!(-3))
    ];
    (
        opt(prop_oneof![4 => arb_text().prop_map(Value::from), 1 => odd.clone()].boxed()),
        opt(prop_oneof![
            4 => (now + 120..now + 1_000_000_000).prop_map(Value::from),
            2 => (0..now - 5).prop_map(Value::from),
            1 => Just(json!(u64::MAX)),
            1 => Just(json!(now as f64 + 1e6)),
            1 => Just(json!((now + 3600).to_string())),
            1 => odd.clone(),
        ].boxed()),
        opt(prop_oneof![
            4 => prop::collection::vec(prop_oneof![4 => prop::sample::select(vec!["alpha", "beta", "*"]).prop_map(str::to_owned), 1 => arb_text()], 0..4).prop_map(|v| json!(v)),
            1 => odd.clone(),
            1 => Just(json!(["alpha", 1])),
        ].boxed()),
        opt(prop_oneof![
            4 => prop::sample::select(vec!["read", "ingest"]).prop_map(Value::from),
            1 => arb_text().prop_map(Value::from),
            1 => odd.clone(),
        ].boxed()),
        opt(prop_oneof![any::<u32>().prop_map(Value::from), odd].boxed()),
        prop::collection::btree_map("[a-z]{1,6}", crate::support::arb_json(1), 0..3),
    )
        .prop_map(|(sub, exp, teams, scope, iat, extra)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            for (k, v) in [("sub", sub), ("exp", exp), ("teams", teams), ("scope", scope), ("iat", iat)] {
                m.remove(k);
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            m
        })
}

/// What verifying a correctly signed token with these claims must give:
/// Ok((sub, teams, scope)), or Err(the errors it may be refused with).
/// The token library checks `exp` and the claims' types in an order of
/// its own, so any of the faults present may be the one reported; the
/// server's own checks (scope, then teams) come after.
#[allow(clippy::type_complexity)]
fn expected(
    c: &Map<String, Value>,
) -> Result<(String, Vec<String>, Scope), Vec<fn(&AuthError) -> bool>> {
    let now = now_s();
    let invalid: fn(&AuthError) -> bool = |e| matches!(e, AuthError::Invalid(_));
    let expired: fn(&AuthError) -> bool = |e| *e == AuthError::Expired;
    let mut faults = Vec::new();
    let sub = c.get("sub").and_then(Value::as_str);
    if sub.is_none() {
        faults.push(invalid);
    }
    match c.get("exp") {
        Some(v) if v.is_u64() => {
            if v.as_u64().unwrap() < now {
                faults.push(expired);
            }
        }
        // Not a whole number of seconds: refused, as invalid or expired.
        _ => faults.extend([invalid, expired]),
    }
    if c.get("iat").is_some_and(|v| !v.is_u64() && !v.is_null()) {
        faults.push(invalid);
    }
    let teams: Vec<String> = match c.get("teams") {
        None => Vec::new(),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            a.iter().map(|t| t.as_str().unwrap().to_owned()).collect()
        }
        Some(_) => {
            faults.push(invalid);
            Vec::new()
        }
    };
    let scope = match c.get("scope") {
        None | Some(Value::Null) => Some(Scope::Read),
        Some(Value::String(s)) if s == "read" => Some(Scope::Read),
        Some(Value::String(s)) if s == "ingest" => Some(Scope::Ingest),
        Some(Value::String(_)) => None,
        Some(_) => {
            faults.push(invalid);
            None
        }
    };
    if !faults.is_empty() {
        return Err(faults);
    }
    let Some(scope) = scope else {
        return Err(vec![|e| matches!(e, AuthError::BadScope(_))]);
    };
    if teams.is_empty() {
        return Err(vec![|e| *e == AuthError::NoTeams]);
    }
    Ok((sub.unwrap().to_owned(), teams, scope))
}

#[test]
fn tokens_signed_claims() {
    let auth = hs256();
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    support::run("tokens_signed_claims", arb_claims(), |claims| {
        let token = sign(
            &Header::new(Algorithm::HS256),
            &Value::Object(claims.clone()),
            &key,
        );
        let got = auth.verify(&token);
        // KNOWN: jsonwebtoken 11 fails to parse a token whose `nbf` is an
        // array or object holding a null (`"nbf":[null]`, `{"":null}`: "JSON
        // error: expected `,` or `}`"), though opswire does not check `nbf`.
        let nbf_nested = claims
            .get("nbf")
            .is_some_and(|v| v.is_array() || v.is_object());
        if nbf_nested && matches!(got, Err(AuthError::Invalid(_))) {
            return Ok(());
        }
        match (expected(&claims), &got) {
            (Ok((sub, teams, scope)), Ok(p)) => {
                check!(
                    p.sub == sub && p.scope == scope && !p.anonymous,
                    "principal {p:?} for {claims:?}"
                );
                check!(
                    p.all_teams() == teams.iter().any(|t| t == "*"),
                    "all_teams of {p:?} for {teams:?}"
                );
                for t in &teams {
                    check!(p.may_access(t), "{p:?} may not access {t:?}");
                }
                check!(
                    p.all_teams() || !p.may_access("never-named-team"),
                    "{p:?} sees a team it was not given"
                );
            }
            (Err(may), Err(e)) => {
                check!(
                    may.iter().any(|ok| ok(e)),
                    "refused with {e:?} for {claims:?}"
                );
                check!(!e.to_string().is_empty(), "empty message");
            }
            (want, got) => {
                return Err(TestCaseError::fail(format!(
                    "claims {claims:?}: expected {}, got {got:?}",
                    if want.is_ok() {
                        "acceptance"
                    } else {
                        "a refusal"
                    }
                )))
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// Mutated tokens
// ---------------------------------------------------------------------------

/// One way to change a valid token.
#[derive(Clone, Debug)]
enum Change {
    /// Byte edits of one segment (0 header, 1 payload, 2 signature, 3 all).
    Edit(usize, Vec<crate::support::Mutation>),
    /// One segment replaced by the same segment of another token.
    Swap(usize),
    /// `alg` in the header replaced (signature kept).
    Alg(&'static str),
    /// Re-signed by the same secret with another HMAC algorithm.
    Resign(Algorithm),
    /// `alg: none` and an empty or kept signature.
    AlgNone(bool),
    /// A segment with `=` padding.
    Pad(usize, usize),
    /// `-`/`_` written as `+`/`/` (the other base64 alphabet).
    StdAlphabet(usize),
    /// The signature's last character changed but its bits kept where
    /// they count (a non-canonical encoding).
    TrailingBits(u8),
    /// Whitespace or a dot added at a place.
    Splice(Index, &'static str),
    /// A character's case flipped.
    Case(Index),
    /// An ECDSA signature (r, s) replaced by (r, n - s).
    EcdsaTwin,
}

fn arb_change() -> impl Strategy<Value = Change> {
    prop_oneof![
        6 => (0usize..4, arb_mutations()).prop_map(|(s, m)| Change::Edit(s, m)),
        2 => (0usize..3).prop_map(Change::Swap),
        1 => prop::sample::select(vec!["HS384", "HS512", "RS256", "ES256", "none", "None", "NONE", "hs256", "PS256", "EdDSA", ""]).prop_map(Change::Alg),
        1 => prop::sample::select(vec![Algorithm::HS384, Algorithm::HS512]).prop_map(Change::Resign),
        1 => any::<bool>().prop_map(Change::AlgNone),
        1 => (0usize..3, 1usize..3).prop_map(|(s, n)| Change::Pad(s, n)),
        1 => (0usize..3).prop_map(Change::StdAlphabet),
        1 => (1u8..4).prop_map(Change::TrailingBits),
        1 => (any::<Index>(), prop::sample::select(vec![" ", "\n", ".", "..", "\u{0}", "\t"])).prop_map(|(i, s)| Change::Splice(i, s)),
        1 => any::<Index>().prop_map(Change::Case),
        1 => Just(Change::EcdsaTwin),
    ]
}

/// P-256's group order, big-endian.
const P256_N: [u8; 32] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
];

fn n_minus(s: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = P256_N[i] as i16 - s[i] as i16 - borrow;
        borrow = (d < 0) as i16;
        if d < 0 {
            d += 256;
        }
        out[i] = d as u8;
    }
    out
}

fn apply(token: &str, other: &str, change: &Change) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut seg: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
    let header_with =
        |alg: &str| B64.encode(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes());
    match change {
        Change::Edit(3, m) => {
            return String::from_utf8_lossy(&mutate(token.as_bytes().to_vec(), m)).into_owned()
        }
        Change::Edit(i, m) => {
            seg[*i] = String::from_utf8_lossy(&mutate(seg[*i].as_bytes().to_vec(), m)).into_owned()
        }
        Change::Swap(i) => seg[*i] = other.split('.').nth(*i).unwrap().to_owned(),
        Change::Alg(a) => seg[0] = header_with(a),
        Change::Resign(alg) => {
            let payload: Value = serde_json::from_slice(&B64.decode(&seg[1]).unwrap()).unwrap();
            return sign(
                &Header::new(*alg),
                &payload,
                &EncodingKey::from_secret(SECRET.as_bytes()),
            );
        }
        Change::AlgNone(keep) => {
            seg[0] = header_with("none");
            if !keep {
                seg[2].clear();
            }
        }
        Change::Pad(i, n) => seg[*i].push_str(&"=".repeat(*n)),
        Change::StdAlphabet(i) => seg[*i] = seg[*i].replace('-', "+").replace('_', "/"),
        Change::TrailingBits(delta) => {
            // The signature's bit length decides how many low bits of its
            // last character are padding.
            let bytes = B64.decode(&seg[2]).unwrap();
            let spare = (seg[2].len() * 6 - bytes.len() * 8) as u8;
            if spare > 0 {
                let last = seg[2].pop().unwrap();
                let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                let v = alphabet.iter().position(|c| *c as char == last).unwrap() as u8;
                let w = (v & !((1 << spare) - 1)) | (delta & ((1 << spare) - 1));
                seg[2].push(alphabet[w as usize] as char);
            }
        }
        Change::Splice(i, s) => {
            let mut t = token.to_owned();
            let mut at = i.index(t.len() + 1);
            while !t.is_char_boundary(at) {
                at -= 1;
            }
            t.insert_str(at, s);
            return t;
        }
        Change::Case(i) => {
            let mut b = token.as_bytes().to_vec();
            let at = i.index(b.len());
            b[at] = if b[at].is_ascii_lowercase() {
                b[at].to_ascii_uppercase()
            } else {
                b[at].to_ascii_lowercase()
            };
            return String::from_utf8(b).unwrap();
        }
        Change::EcdsaTwin => {
            let sig = B64.decode(&seg[2]).unwrap();
            if sig.len() == 64 {
                let mut twin = sig[..32].to_vec();
                twin.extend(n_minus(&sig[32..]));
                seg[2] = B64.encode(&twin);
            }
        }
    }
    seg.join(".")
}

fn valid_claims(n: u64) -> Value {
    json!({"sub": format!("user-{n}"), "exp": now_s() + 3600 + n, "teams": ["alpha"], "scope": if n.is_multiple_of(2) { "read" } else { "ingest" }})
}

/// Mutates valid tokens of `alg` signed by `key`; `auth` must accept the
/// originals and refuse every changed one.
fn mutated(target: &'static str, auth: Authenticator, header: Header, key: EncodingKey) {
    // A few tokens, signed once (RSA signing is slow in a debug build).
    let tokens: Vec<String> = (0..4)
        .map(|n| sign(&header, &valid_claims(n), &key))
        .collect();
    for t in &tokens {
        auth.verify(t)
            .unwrap_or_else(|e| panic!("{target}: a valid token refused: {e}"));
    }
    let strategy = (0usize..4, 1usize..4, arb_change());
    support::run(target, strategy, |(i, j, change)| {
        let token = &tokens[i];
        let changed = apply(token, &tokens[(i + j) % 4], &change);
        let got = auth.verify(&changed);
        if changed == *token {
            check!(got.is_ok(), "the unchanged token refused: {got:?}");
            return Ok(());
        }
        match got {
            // KNOWN: ECDSA signatures are malleable, and the verifier does
            // not insist on the low-s form: (r, n - s) passes too (see
            // `known_es256_signature_twin_is_refused`).
            Ok(_) if matches!(change, Change::EcdsaTwin) => Ok(()),
            Ok(p) => Err(TestCaseError::fail(format!(
                "a changed token was accepted ({change:?}):\n  original {token}\n  changed  {changed}\n  principal {p:?}"
            ))),
            Err(e) => {
                check!(!e.to_string().is_empty(), "empty message");
                Ok(())
            }
        }
    });
}

#[test]
fn tokens_mutated_hs256() {
    mutated(
        "tokens_mutated_hs256",
        hs256(),
        Header::new(Algorithm::HS256),
        EncodingKey::from_secret(SECRET.as_bytes()),
    );
}

#[test]
fn tokens_mutated_rs256() {
    let auth = authenticator(|c| c.auth.public_key_file = Some(fixture("rs256-public.pem")));
    let key =
        EncodingKey::from_rsa_pem(&std::fs::read(fixture("rs256-private.pem")).unwrap()).unwrap();
    mutated(
        "tokens_mutated_rs256",
        auth,
        Header::new(Algorithm::RS256),
        key,
    );
}

#[test]
fn tokens_mutated_es256() {
    let auth = authenticator(|c| {
        c.auth.public_key_file = Some(fixture("es256-public.pem"));
        c.auth.algorithm = Some("ES256".into());
    });
    let key =
        EncodingKey::from_ec_pem(&std::fs::read(fixture("es256-private.pem")).unwrap()).unwrap();
    mutated(
        "tokens_mutated_es256",
        auth,
        Header::new(Algorithm::ES256),
        key,
    );
}

/// The key-confusion attack: an HS256 token whose "secret" is the
/// server's RSA or EC public key must not pass a public-key server.
#[test]
fn tokens_key_confusion() {
    for (file, alg) in [
        ("rs256-public.pem", None),
        ("es256-public.pem", Some("ES256")),
    ] {
        let auth = authenticator(|c| {
            c.auth.public_key_file = Some(fixture(file));
            c.auth.algorithm = alg.map(str::to_owned);
        });
        let pem = std::fs::read(fixture(file)).unwrap();
        for claims in [valid_claims(0), valid_claims(1)] {
            let forged = sign(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(&pem),
            );
            let got = auth.verify(&forged);
            assert!(
                got.is_err(),
                "{file}: an HS256 token keyed by the public key passed: {got:?}"
            );
        }
    }
}

#[test]
fn tokens_arbitrary() {
    let hs = hs256();
    let dev = authenticator(|_| {});
    let segment = prop_oneof![
        "[A-Za-z0-9_-]{0,60}",
        crate::support::arb_json(2).prop_map(|v| B64.encode(v.to_string().as_bytes())),
    ];
    let strategy = prop_oneof![
        any::<String>(),
        arb_text(),
        prop::collection::vec(segment, 0..5).prop_map(|s| s.join(".")),
    ];
    support::run("tokens_arbitrary", strategy, |text| {
        match hs.verify(&text) {
            Ok(p) => {
                return Err(TestCaseError::fail(format!(
                    "arbitrary text accepted: {text:?} as {p:?}"
                )))
            }
            Err(e) => check!(!e.to_string().is_empty(), "empty message"),
        }
        // Dev mode: anything is the anonymous principal.
        let p = dev
            .verify(&text)
            .map_err(|e| TestCaseError::fail(format!("dev mode refused {text:?}: {e}")))?;
        check!(
            p.anonymous && p.scope == Scope::Ingest && p.all_teams(),
            "dev mode principal {p:?}"
        );
        Ok(())
    });
}

/// An ES256 signature (r, s) and its twin (r, n - s) both verify: the same
/// claims pass under two token strings. Harmless for opswire today (no
/// token is looked up by its text), but "a changed signature is never
/// accepted" does not hold for ES256 until the verifier requires low s.
#[test]
#[ignore = "KNOWN: an ES256 token with its signature's twin (r, n - s) is accepted"]
fn known_es256_signature_twin_is_refused() {
    let auth = authenticator(|c| {
        c.auth.public_key_file = Some(fixture("es256-public.pem"));
        c.auth.algorithm = Some("ES256".into());
    });
    let key =
        EncodingKey::from_ec_pem(&std::fs::read(fixture("es256-private.pem")).unwrap()).unwrap();
    let token = sign(&Header::new(Algorithm::ES256), &valid_claims(0), &key);
    let twin = apply(&token, &token, &Change::EcdsaTwin);
    assert_ne!(twin, token);
    assert!(auth.verify(&token).is_ok());
    assert!(auth.verify(&twin).is_err(), "the twin signature passed");
}

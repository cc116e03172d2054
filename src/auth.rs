//! Who a client is and which teams it may see: JWT verification (HS256
//! secret, or an RS256/ES256 public key), scopes, and dev mode.
//!
//! Team checks live here and nowhere else: transports ask
//! [`Principal::may_access`] before they subscribe or publish.

use std::collections::BTreeSet;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// The claims opswire reads from (and `opswire token` writes into) a JWT.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub sub: String,
    /// Team names, or `["*"]` for every team.
    #[serde(default)]
    pub teams: Vec<String>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// What a token lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Subscribe to its teams (the default).
    Read,
    /// Also publish to its teams (agents, ingest).
    Ingest,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Ingest => "ingest",
        }
    }
}

/// An authenticated (or, in dev mode, anonymous) client.
#[derive(Clone, Debug, PartialEq)]
pub struct Principal {
    pub sub: String,
    all_teams: bool,
    teams: BTreeSet<String>,
    pub scope: Scope,
    pub anonymous: bool,
    /// Token expiry (unix seconds); None for anonymous.
    pub exp: Option<u64>,
}

impl Principal {
    /// The dev-mode principal: every team, ingest allowed.
    pub fn anonymous() -> Principal {
        Principal {
            sub: "anonymous".into(),
            all_teams: true,
            teams: BTreeSet::new(),
            scope: Scope::Ingest,
            anonymous: true,
            exp: None,
        }
    }

    /// Whether this principal may see `team` — the one place team
    /// isolation is decided.
    pub fn may_access(&self, team: &str) -> bool {
        self.all_teams || self.teams.contains(team)
    }

    /// Whether the token grants every team (`["*"]`, or dev mode).
    pub fn all_teams(&self) -> bool {
        self.all_teams
    }

    /// The configured teams this principal may see, in `known`'s order.
    pub fn visible_teams<'a>(&self, known: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        known.into_iter().filter(|t| self.may_access(t)).collect()
    }
}

/// Why a token was refused. The text goes to the client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    #[error("missing token")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("bad token signature")]
    BadSignature,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token names no team")]
    NoTeams,
    #[error("unknown scope `{0}` (expected read or ingest)")]
    BadScope(String),
}

/// Errors building keys from configuration or minting tokens.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("auth.public_key_file {path}: {reason}")]
    PublicKey { path: String, reason: String },
    #[error("no signing key: set auth.jwt_secret / OPSWIRE_JWT_SECRET, or pass --private-key")]
    NoSigningKey,
    #[error("private key: {0}")]
    PrivateKey(String),
    #[error("encoding token: {0}")]
    Encode(String),
}

enum Mode {
    Dev,
    Jwt {
        key: DecodingKey,
        validation: Box<Validation>,
    },
}

/// Verifies tokens according to the configuration.
pub struct Authenticator {
    mode: Mode,
}

impl Authenticator {
    pub fn from_config(config: &Config) -> Result<Authenticator, KeyError> {
        let auth = &config.auth;
        let (key, alg) = if let Some(secret) = &auth.jwt_secret {
            (
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            )
        } else if let Some(path) = &auth.public_key_file {
            let pem = std::fs::read(path).map_err(|e| KeyError::PublicKey {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            let want = auth.algorithm.as_deref();
            let key_err = |reason: String| KeyError::PublicKey {
                path: path.display().to_string(),
                reason,
            };
            match want {
                Some("ES256") => (
                    DecodingKey::from_ec_pem(&pem).map_err(|e| key_err(e.to_string()))?,
                    Algorithm::ES256,
                ),
                Some("RS256") => (
                    DecodingKey::from_rsa_pem(&pem).map_err(|e| key_err(e.to_string()))?,
                    Algorithm::RS256,
                ),
                _ => {
                    if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                        (k, Algorithm::RS256)
                    } else {
                        (
                            DecodingKey::from_ec_pem(&pem).map_err(|_| {
                                key_err("neither an RSA nor an EC (P-256) public key in PEM".into())
                            })?,
                            Algorithm::ES256,
                        )
                    }
                }
            }
        } else {
            return Ok(Authenticator { mode: Mode::Dev });
        };
        let mut validation = Validation::new(alg);
        validation.leeway = auth.leeway_s;
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_aud = false;
        Ok(Authenticator {
            mode: Mode::Jwt {
                key,
                validation: Box::new(validation),
            },
        })
    }

    /// True when no key is configured (anonymous clients accepted).
    pub fn dev_mode(&self) -> bool {
        matches!(self.mode, Mode::Dev)
    }

    /// The principal of a client that presented no token, if allowed.
    pub fn anonymous(&self) -> Option<Principal> {
        self.dev_mode().then(Principal::anonymous)
    }

    /// Verifies a token. In dev mode there is no key to check it against,
    /// so any token yields the anonymous principal.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let Mode::Jwt { key, validation } = &self.mode else {
            return Ok(Principal::anonymous());
        };
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        use jsonwebtoken::errors::ErrorKind;
        let data =
            jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm => AuthError::Invalid(
                    "signed with an algorithm this server does not accept".into(),
                ),
                ErrorKind::MissingRequiredClaim(c) => {
                    AuthError::Invalid(format!("missing claim `{c}`"))
                }
                _ => AuthError::Invalid(e.to_string()),
            })?;
        let claims = data.claims;
        let scope = match claims.scope.as_deref() {
            None | Some("read") => Scope::Read,
            Some("ingest") => Scope::Ingest,
            Some(other) => return Err(AuthError::BadScope(other.into())),
        };
        if claims.teams.is_empty() {
            return Err(AuthError::NoTeams);
        }
        let all_teams = claims.teams.iter().any(|t| t == "*");
        Ok(Principal {
            sub: claims.sub,
            all_teams,
            teams: claims.teams.into_iter().filter(|t| t != "*").collect(),
            scope,
            anonymous: false,
            exp: Some(claims.exp),
        })
    }
}

/// How long until a token expiring at `exp` (unix s) is refused, with
/// `leeway`; saturating, and capped at ten years so timer math cannot
/// overflow on an absurd `exp`.
pub fn time_left(exp: u64, leeway: u64) -> std::time::Duration {
    const CAP_S: u64 = 10 * 365 * 86400;
    std::time::Duration::from_secs(
        exp.saturating_add(leeway)
            .saturating_sub(now_s())
            .min(CAP_S),
    )
}

/// Extracts the token of an `Authorization: Bearer …` header value.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Mints a token: HS256 with the configured secret, or RS256/ES256 with a
/// PEM private key. Used by `opswire token` and by tests.
pub fn mint(
    claims: &Claims,
    secret: Option<&str>,
    private_key_pem: Option<&[u8]>,
) -> Result<String, KeyError> {
    let (header, key) = if let Some(pem) = private_key_pem {
        if let Ok(k) = EncodingKey::from_rsa_pem(pem) {
            (Header::new(Algorithm::RS256), k)
        } else {
            let k =
                EncodingKey::from_ec_pem(pem).map_err(|e| KeyError::PrivateKey(e.to_string()))?;
            (Header::new(Algorithm::ES256), k)
        }
    } else if let Some(s) = secret {
        (
            Header::new(Algorithm::HS256),
            EncodingKey::from_secret(s.as_bytes()),
        )
    } else {
        return Err(KeyError::NoSigningKey);
    };
    jsonwebtoken::encode(&header, claims, &key).map_err(|e| KeyError::Encode(e.to_string()))
}

/// Seconds since the unix epoch.
pub use crate::time::now_s;

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn auth() -> Authenticator {
        let mut c = Config::default();
        c.auth.jwt_secret = Some(SECRET.into());
        Authenticator::from_config(&c).unwrap()
    }

    fn claims(teams: &[&str], exp: u64) -> Claims {
        Claims {
            sub: "alice".into(),
            teams: teams.iter().map(|s| s.to_string()).collect(),
            exp,
            iat: None,
            scope: None,
        }
    }

    #[test]
    fn verifies_teams_and_scope() {
        let t = mint(&claims(&["payments"], now_s() + 60), Some(SECRET), None).unwrap();
        let p = auth().verify(&t).unwrap();
        assert!(p.may_access("payments"));
        assert!(!p.may_access("search"));
        assert_eq!(p.scope, Scope::Read);
        let t = mint(&claims(&["*"], now_s() + 60), Some(SECRET), None).unwrap();
        assert!(auth().verify(&t).unwrap().may_access("anything"));
    }

    #[test]
    fn refuses_expired_badly_signed_and_garbage() {
        let t = mint(&claims(&["a"], now_s() - 3600), Some(SECRET), None).unwrap();
        assert_eq!(auth().verify(&t), Err(AuthError::Expired));
        let t = mint(
            &claims(&["a"], now_s() + 60),
            Some("another-secret-another-secret-xx"),
            None,
        )
        .unwrap();
        assert_eq!(auth().verify(&t), Err(AuthError::BadSignature));
        assert!(matches!(
            auth().verify("not.a.jwt"),
            Err(AuthError::Invalid(_))
        ));
        let t = mint(&claims(&[], now_s() + 60), Some(SECRET), None).unwrap();
        assert_eq!(auth().verify(&t), Err(AuthError::NoTeams));
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
    }
}

//! Opening a connection to the hub: the URL and header from the flags,
//! the upgrade, the `welcome`, and whether it fits the agent's team.
//! Errors say what to fix, and whether retrying could help
//! ([`ConnectError::permanent`]).

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, Response, Uri};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const WELCOME_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot reach the hub: {0}")]
    Unreachable(String),
    /// The TLS handshake failed; `configuration`: the hub's certificate
    /// does not fit what the agent was told (its name, its CA), rather
    /// than a state the hub leaves on its own (an expired certificate).
    #[error("{message}")]
    Tls {
        message: String,
        configuration: bool,
    },
    #[error("the hub refused the connection (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the hub refused the session ({code}): {message}")]
    Rejected { code: String, message: String },
    #[error(transparent)]
    Team(#[from] TeamError),
}

impl ConnectError {
    /// Whether retrying cannot help (a bad token, a wrong team or URL).
    /// Such an error ends the agent when it has never connected: it is a
    /// configuration mistake to report, not an outage to wait out.
    pub fn permanent(&self) -> bool {
        match self {
            ConnectError::Unreachable(_) => false,
            ConnectError::Tls { configuration, .. } => *configuration,
            ConnectError::Refused { status, .. } => {
                (400..500).contains(status) && *status != 408 && *status != 429
            }
            ConnectError::Rejected { code, .. } => {
                matches!(code.as_str(), "unauthenticated" | "forbidden")
            }
            ConnectError::Team(_) => true,
        }
    }
}

/// The `welcome` does not fit the agent's team or needs.
#[derive(Debug, thiserror::Error)]
pub enum TeamError {
    #[error(
        "team `{team}` is not one of this token's teams on the hub (it grants: {}); \
         mint an ingest token for it (opswire token --team {team} --scope ingest) \
         or pass one of those with --team",
        list(.offered)
    )]
    NotInToken { team: String, offered: Vec<String> },
    #[error("the token grants several teams ({}); choose one with --team", list(.0))]
    Ambiguous(Vec<String>),
    #[error(
        "the token grants no team this hub serves; check the token's teams and the hub's [[teams]]"
    )]
    NoTeam,
    #[error(
        "the token has scope `{0}`, and publishing needs an ingest token \
         (opswire token --team T --scope ingest)"
    )]
    NotIngest(String),
}

fn list(teams: &[String]) -> String {
    if teams.is_empty() {
        "none".into()
    } else {
        teams.join(", ")
    }
}

/// Makes `ws://HOST:PORT/ws` or `wss://HOST:PORT/ws` of `--hub`: `http`
/// means `ws`, `https` means `wss`, no path means `/ws`, no scheme means
/// `ws://`.
pub fn hub_url(hub: &str) -> Result<String, String> {
    let bad = |why: &str| format!("--hub `{hub}`: {why}");
    let trimmed = hub.trim();
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("ws://{trimmed}")
    };
    let uri: Uri = with_scheme
        .parse()
        .map_err(|e| bad(&format!("not a URL like wss://hub.example:8443 ({e})")))?;
    let scheme = match uri.scheme_str() {
        Some("ws") | Some("http") => "ws",
        Some("wss") | Some("https") => "wss",
        other => {
            let other = other.unwrap_or_default();
            return Err(bad(&format!(
                "unknown scheme `{other}` (use wss:// or ws://)"
            )));
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| bad("no host (use wss://HOST:PORT)"))?;
    let path = match uri.path() {
        "" | "/" => "/ws",
        p => p,
    };
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    Ok(format!("{scheme}://{authority}{path}{query}"))
}

/// The TLS side of connecting to a `wss://` hub: the roots it trusts.
#[derive(Clone)]
pub struct Trust {
    config: std::sync::Arc<rustls::ClientConfig>,
    /// `--ca-file`, for messages.
    ca_file: Option<std::path::PathBuf>,
}

impl Trust {
    /// The system's roots, or only the CA(s) of `ca_file`; none at all
    /// for a `ws://` hub (`wss` false), which never uses them.
    pub fn new(ca_file: Option<&std::path::Path>, wss: bool) -> Result<Trust, String> {
        let config = if wss {
            crate::tls::client_config(ca_file).map_err(|e| format!("--ca-file {e}"))?
        } else {
            rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        };
        Ok(Trust {
            config: std::sync::Arc::new(config),
            ca_file: ca_file.map(std::path::Path::to_path_buf),
        })
    }

    /// What a refused handshake with `host` means.
    fn refusal(&self, e: &rustls::Error, host: &str) -> ConnectError {
        let hint = match &self.ca_file {
            Some(p) => format!("--ca-file (now {}, which did not sign it)", p.display()),
            None => "--ca-file".to_owned(),
        };
        let r = crate::tls::describe(e, "the hub", host, &hint);
        ConnectError::Tls {
            message: r.message,
            configuration: r.configuration,
        }
    }
}

/// The `Authorization` header of the upgrade.
pub fn bearer(token: &str) -> Result<HeaderValue, String> {
    let token = token.trim();
    if token.is_empty() {
        return Err("--token is empty".into());
    }
    let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| "--token: not a valid token (a JWT is printable ASCII)".to_string())?;
    v.set_sensitive(true);
    Ok(v)
}

/// Server frames the agent acts on.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ServerFrame {
    Welcome(Welcome),
    Published {
        #[serde(default)]
        id: Option<i64>,
    },
    Error {
        #[serde(default)]
        id: Option<i64>,
        code: String,
        #[serde(default)]
        message: String,
    },
    Lagged {
        #[serde(default)]
        stream: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
pub struct Welcome {
    #[serde(default)]
    pub session: String,
    #[serde(default)]
    pub teams: Vec<String>,
    #[serde(default)]
    pub heartbeat_s: Option<u64>,
    #[serde(default)]
    pub scope: Option<String>,
}

/// Picks the team to publish to: `wanted`, which the welcome must offer,
/// else the welcome's only team.
pub fn choose_team(wanted: Option<&str>, welcome: &Welcome) -> Result<String, TeamError> {
    if let Some(scope) = &welcome.scope {
        if scope != "ingest" {
            return Err(TeamError::NotIngest(scope.clone()));
        }
    }
    match (wanted, welcome.teams.as_slice()) {
        (Some(t), offered) if offered.iter().any(|o| o == t) => Ok(t.to_owned()),
        (Some(t), offered) => Err(TeamError::NotInToken {
            team: t.to_owned(),
            offered: offered.to_vec(),
        }),
        (None, [only]) => Ok(only.clone()),
        (None, []) => Err(TeamError::NoTeam),
        (None, several) => Err(TeamError::Ambiguous(several.to_vec())),
    }
}

/// Opens the WebSocket with the token in the upgrade's `Authorization`
/// header, and reads the `welcome`.
pub async fn connect(
    url: &str,
    auth: &HeaderValue,
    trust: &Trust,
) -> Result<(Ws, Welcome), ConnectError> {
    let mut req = url
        .into_client_request()
        .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
    let host = req.uri().host().unwrap_or_default().to_owned();
    req.headers_mut()
        .insert(header::AUTHORIZATION, auth.clone());
    req.headers_mut().insert(
        header::USER_AGENT,
        HeaderValue::from_static(concat!("opswire-agent/", env!("CARGO_PKG_VERSION"))),
    );
    // Used only for a wss:// URL.
    let connector = Connector::Rustls(trust.config.clone());
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(req, None, true, Some(connector));
    let mut ws = match timeout(CONNECT_TIMEOUT, connecting).await {
        Err(_) => {
            return Err(ConnectError::Unreachable(format!(
                "no answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            )))
        }
        Ok(Err(WsError::Http(resp))) => return Err(http_refusal(&resp)),
        Ok(Err(e)) => {
            return Err(match crate::tls::rustls_error(&e) {
                Some(tls) => trust.refusal(tls, &host),
                None => ConnectError::Unreachable(e.to_string()),
            })
        }
        Ok(Ok((ws, _))) => ws,
    };
    let deadline = Instant::now() + WELCOME_TIMEOUT;
    loop {
        let msg = timeout_at(deadline, ws.next()).await.map_err(|_| {
            ConnectError::Unreachable(format!("no welcome within {} s", WELCOME_TIMEOUT.as_secs()))
        })?;
        let text = match msg {
            None => {
                return Err(ConnectError::Unreachable(
                    "closed before its welcome".into(),
                ))
            }
            Some(Err(e)) => return Err(ConnectError::Unreachable(e.to_string())),
            Some(Ok(Message::Close(f))) => {
                let why = f.map_or_else(String::new, |f| {
                    format!(": {} {}", u16::from(f.code), f.reason)
                });
                return Err(ConnectError::Unreachable(format!(
                    "closed before its welcome{why}"
                )));
            }
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
        };
        match serde_json::from_str::<ServerFrame>(&text) {
            Ok(ServerFrame::Welcome(w)) => return Ok((ws, w)),
            Ok(ServerFrame::Error { code, message, .. }) => {
                return Err(ConnectError::Rejected { code, message })
            }
            _ => continue,
        }
    }
}

/// A handshake answered with an HTTP error: its status and the message
/// of its JSON error body.
fn http_refusal(resp: &Response<Option<Vec<u8>>>) -> ConnectError {
    let status = resp.status();
    let body = resp.body().as_deref().unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
        .or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = super::line::head(text.trim(), 200);
            (!text.is_empty()).then(|| text.to_owned())
        })
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_owned());
    ConnectError::Refused {
        status: status.as_u16(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_urls() {
        assert_eq!(
            hub_url("ws://127.0.0.1:8080").unwrap(),
            "ws://127.0.0.1:8080/ws"
        );
        assert_eq!(hub_url("ws://hub:8080/").unwrap(), "ws://hub:8080/ws");
        assert_eq!(hub_url("http://hub:8080").unwrap(), "ws://hub:8080/ws");
        assert_eq!(hub_url("hub:8080").unwrap(), "ws://hub:8080/ws");
        assert_eq!(hub_url(" hub:8080/x/ws ").unwrap(), "ws://hub:8080/x/ws");
        assert_eq!(
            hub_url("ws://hub/opswire/ws?x=1").unwrap(),
            "ws://hub/opswire/ws?x=1"
        );
        assert_eq!(hub_url("wss://hub").unwrap(), "wss://hub/ws");
        assert_eq!(hub_url("https://hub:8443/x").unwrap(), "wss://hub:8443/x");
        assert!(hub_url("ftp://hub").unwrap_err().contains("scheme"));
        assert!(hub_url("").is_err());
    }

    fn welcome(teams: &[&str], scope: &str) -> Welcome {
        Welcome {
            session: "s".into(),
            teams: teams.iter().map(|t| t.to_string()).collect(),
            heartbeat_s: Some(20),
            scope: Some(scope.into()),
        }
    }

    #[test]
    fn team_choice() {
        assert_eq!(choose_team(None, &welcome(&["a"], "ingest")).unwrap(), "a");
        assert_eq!(
            choose_team(Some("b"), &welcome(&["a", "b"], "ingest")).unwrap(),
            "b"
        );
        let e = choose_team(Some("other"), &welcome(&["default"], "ingest")).unwrap_err();
        assert!(matches!(e, TeamError::NotInToken { .. }));
        assert!(
            e.to_string()
                .contains("team `other` is not one of this token's teams"),
            "{e}"
        );
        assert!(e.to_string().contains("default"), "{e}");
        assert!(matches!(
            choose_team(None, &welcome(&["a", "b"], "ingest")),
            Err(TeamError::Ambiguous(_))
        ));
        assert!(matches!(
            choose_team(None, &welcome(&[], "ingest")),
            Err(TeamError::NoTeam)
        ));
        assert!(matches!(
            choose_team(Some("a"), &welcome(&["a"], "read")),
            Err(TeamError::NotIngest(_))
        ));
    }

    #[test]
    fn permanence() {
        let refused = |status| ConnectError::Refused {
            status,
            message: String::new(),
        };
        assert!(refused(401).permanent());
        assert!(refused(404).permanent());
        assert!(!refused(429).permanent());
        assert!(!refused(503).permanent());
        assert!(!ConnectError::Unreachable("x".into()).permanent());
        let tls = |configuration| ConnectError::Tls {
            message: String::new(),
            configuration,
        };
        assert!(tls(true).permanent());
        assert!(!tls(false).permanent());
        assert!(ConnectError::from(TeamError::NoTeam).permanent());
    }

    #[test]
    fn bearer_header() {
        assert!(bearer("").is_err());
        assert!(bearer("a\nb").is_err());
        assert_eq!(bearer(" abc ").unwrap(), "Bearer abc");
    }
}

//! Configuration: defaults, then a TOML file, then `OPSWIRE_*` environment
//! variables, then CLI flags — loaded once into typed structs and validated
//! before anything starts. Every setting and its default is listed in
//! `docs/configuration.md`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

/// Why the configuration was refused. The message names the setting as
/// the user wrote it, and where: `FILE:LINE:COLUMN` for the config file,
/// the variable's name for the environment.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0}: not found")]
    FileNotFound(PathBuf),
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A value that does not fit the settings, in the file or the environment.
    #[error("{at}: {message}")]
    Source { at: String, message: String },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// An [`ConfigError::Invalid`] value, with where it was set (see
    /// [`ConfigError::locate`]).
    #[error("{at}: {error}")]
    At { at: String, error: Box<ConfigError> },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The whole configuration of `opswire serve`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Allow serving without authentication on a non-loopback address.
    pub insecure: bool,
    /// Seconds to wait for connections to close on shutdown.
    pub shutdown_timeout_s: u64,
    /// HTTP worker threads; 0 = one per core.
    pub workers: usize,
    pub sampler: SamplerConfig,
    pub teams: Vec<TeamConfig>,
    pub auth: AuthConfig,
    pub history: HistoryConfig,
    pub limits: LimitsConfig,
    pub websocket: WebSocketConfig,
    pub log: LogConfig,
    pub telemetry: TelemetryConfig,
    pub alertmanager: AlertmanagerConfig,
    pub ingest: IngestConfig,
    pub web: WebConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            insecure: false,
            shutdown_timeout_s: 10,
            workers: 0,
            sampler: SamplerConfig::default(),
            teams: Vec::new(),
            auth: AuthConfig::default(),
            history: HistoryConfig::default(),
            limits: LimitsConfig::default(),
            websocket: WebSocketConfig::default(),
            log: LogConfig::default(),
            telemetry: TelemetryConfig::default(),
            alertmanager: AlertmanagerConfig::default(),
            ingest: IngestConfig::default(),
            web: WebConfig::default(),
        }
    }
}

/// The local sampler and the metrics tick.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplerConfig {
    /// Sample this host at all (off for a hub that only relays agents).
    pub enabled: bool,
    /// Milliseconds between metrics frames (and local samples).
    pub tick_ms: u64,
    /// Name this host reports; default: the OS host name.
    pub host_name: Option<String>,
    /// Team of this host; default: the first team whose `hosts` globs match
    /// the host name, else the first team.
    pub team: Option<String>,
    /// A host missing for this many ticks drops out of its team's frames.
    pub stale_after_ticks: u32,
    /// Spread the teams' metrics frames evenly over the tick (this host's
    /// team first) instead of publishing them all at once. One core then
    /// writes one team's burst at a time, so delivery lag grows with the
    /// largest team rather than with every subscriber of the server.
    pub stagger: bool,
    /// Threads one team's metrics burst is split over, when it has
    /// thousands of subscribers; 0: one per core this process may use.
    pub fanout_threads: usize,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            enabled: true,
            tick_ms: 1000,
            host_name: None,
            team: None,
            stale_after_ticks: 5,
            stagger: true,
            fanout_threads: 0,
        }
    }
}

/// A team: a name and the host-name globs whose hosts belong to it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TeamConfig {
    pub name: String,
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// Token verification. With neither key set, opswire runs in dev mode.
#[derive(Clone, Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HS256 shared secret (also `OPSWIRE_JWT_SECRET`), at least 32 bytes.
    pub jwt_secret: Option<String>,
    /// PEM public key for RS256 or ES256 tokens.
    pub public_key_file: Option<PathBuf>,
    /// `RS256` or `ES256` with `public_key_file`; default guessed from the key.
    pub algorithm: Option<String>,
    /// Clock skew tolerated on `exp`, in seconds.
    pub leeway_s: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Log frames kept per team for `resume`.
    pub logs: usize,
    /// Alert frames kept per team for `resume`.
    pub alerts: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            logs: 1000,
            alerts: 500,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest inbound WebSocket message, bytes; larger → close 1009.
    pub max_frame_bytes: usize,
    /// Largest inbound message before the connection has authenticated
    /// (what an `auth` op needs; `max_frame_bytes` if that is smaller);
    /// larger → close 1009.
    pub max_auth_frame_bytes: usize,
    /// Inbound frames per second per connection (token bucket refill).
    /// Every frame counts: ops, pings, pongs, parts of fragmented messages.
    pub inbound_rate: u32,
    /// Token bucket size for inbound frames.
    pub inbound_burst: u32,
    /// Rate for connections with an `ingest` token.
    pub ingest_rate: u32,
    /// Burst for connections with an `ingest` token.
    pub ingest_burst: u32,
    /// Ops per second of all connections of one token subject (`sub`)
    /// together, read scope.
    pub subject_inbound_rate: u32,
    /// Token bucket size of one subject, read scope.
    pub subject_inbound_burst: u32,
    /// Ops per second of all connections of one subject, ingest scope.
    pub subject_ingest_rate: u32,
    /// Token bucket size of one subject, ingest scope.
    pub subject_ingest_burst: u32,
    /// Frames refused for rate within one second before the connection is closed (1008).
    pub max_violations: u32,
    /// Log/alert frames queued per subscriber before it is `lagged` (4008).
    pub queue_len: usize,
    /// (team, stream) subscriptions per connection.
    pub max_subscriptions: usize,
    /// Concurrent WebSocket + SSE connections; default: the fd limit minus a reserve.
    pub max_connections: Option<usize>,
    /// Of those, connections that have not authenticated yet (a WebSocket
    /// waiting for its `auth` op); default: a quarter of `max_connections`.
    pub max_unauthenticated: Option<usize>,
    /// Firing alerts kept per team (the oldest is evicted beyond it).
    /// `queue_len` caps it too: a new subscriber gets them all.
    pub max_firing_alerts: usize,
    /// Hosts a team holds at once (each is in every metrics frame of the
    /// team and has its own `/metrics` series); a new one beyond it is
    /// refused until one goes stale.
    pub max_hosts_per_team: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_frame_bytes: 64 * 1024,
            max_auth_frame_bytes: 8 * 1024,
            inbound_rate: 20,
            inbound_burst: 50,
            ingest_rate: 2000,
            ingest_burst: 5000,
            subject_inbound_rate: 200,
            subject_inbound_burst: 2000,
            subject_ingest_rate: 20_000,
            subject_ingest_burst: 50_000,
            max_violations: 20,
            queue_len: 1024,
            max_subscriptions: 64,
            max_connections: None,
            max_unauthenticated: None,
            max_firing_alerts: 1000,
            max_hosts_per_team: 1000,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketConfig {
    /// Seconds between server pings; a client silent for two intervals is closed.
    pub heartbeat_s: u64,
    /// Seconds a client has to send `auth` when it gave no header.
    pub auth_timeout_s: u64,
    /// Milliseconds it has instead when three quarters of
    /// `limits.max_connections` are open (slots are scarce then).
    pub auth_timeout_busy_ms: u64,
    /// Origins allowed to connect (`*` for any). Empty: same-origin
    /// browsers and non-browser clients (no `Origin` header).
    pub allowed_origins: Vec<String>,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            heartbeat_s: 20,
            auth_timeout_s: 5,
            auth_timeout_busy_ms: 1000,
            allowed_origins: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter directive (`RUST_LOG` wins when set).
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Alertmanager: its webhook into opswire, and its API for silences.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertmanagerConfig {
    /// Alertmanager's base URL (e.g. `http://alertmanager:9093`), for the
    /// `silence` op. Unset: `silence` answers `unavailable`.
    pub url: Option<String>,
    /// Bearer token Alertmanager sends to `POST /api/v1/alerts/alertmanager`
    /// (`http_config.authorization.credentials`). An `ingest` JWT for every
    /// team (`teams: ["*"]`) is accepted too.
    pub webhook_token: Option<String>,
    /// Label naming an alert's team.
    pub team_label: String,
    /// Team of alerts whose team label is missing or unknown; default: the first team.
    pub default_team: Option<String>,
    /// Timeout of calls to Alertmanager's API, milliseconds.
    pub timeout_ms: u64,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        AlertmanagerConfig {
            url: None,
            webhook_token: None,
            team_label: "team".into(),
            default_team: None,
            timeout_ms: 5000,
        }
    }
}

/// Log ingest over HTTP (`/api/v1/logs`, OTLP `/v1/logs`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Largest request body, bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Longest JSON line / message, bytes.
    pub max_line_bytes: usize,
    /// Seconds a request body may take to arrive, from the first byte the
    /// handler reads (408 beyond).
    pub body_timeout_s: u64,
    /// Resource attribute naming the team of OTLP log records.
    pub otlp_team_attribute: String,
    /// Stream opswire's own access log as logs of this team.
    pub access_log_team: Option<String>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_body_bytes: 1024 * 1024,
            max_line_bytes: 16 * 1024,
            body_timeout_s: 10,
            otlp_team_attribute: "opswire.team".into(),
            access_log_team: None,
        }
    }
}

/// The bundled dashboard.
#[derive(Clone, Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Jaeger UI base URL for trace links (e.g. `http://localhost:16686`);
    /// unset: no trace links.
    pub jaeger_url: Option<String>,
}

/// OpenTelemetry export. The standard `OTEL_*` environment variables win
/// over these settings; with neither an endpoint here nor
/// `OTEL_EXPORTER_OTLP_ENDPOINT`, nothing is exported.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// OTLP endpoint, e.g. `http://otel-collector:4317` (gRPC) or
    /// `http://otel-collector:4318` (HTTP).
    pub otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf`.
    pub otlp_protocol: String,
    /// `service.name` of the exported resource.
    pub service_name: String,
    /// Share of new traces sampled (parent-based: a sampled client trace
    /// is always continued).
    pub sample_ratio: f64,
    /// Spans and log records buffered for export; beyond it they are dropped.
    pub export_queue: usize,
    /// Export log records (as well as spans).
    pub export_logs: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            otlp_protocol: "grpc".into(),
            service_name: "opswire".into(),
            sample_ratio: 1.0,
            export_queue: 2048,
            export_logs: true,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Top-level settings, for picking `OPSWIRE_*` variables that are settings.
const SETTINGS: &[&str] = &[
    "bind",
    "insecure",
    "shutdown_timeout_s",
    "workers",
    "sampler",
    "teams",
    "auth",
    "history",
    "limits",
    "websocket",
    "log",
    "telemetry",
    "alertmanager",
    "ingest",
    "web",
];

/// File descriptors kept back from `max_connections` for listeners, log
/// files, outbound HTTP and the sampler's /proc reads.
pub const FD_RESERVE: usize = 128;

/// The name of the team that holds the local host when no team is configured.
pub const DEFAULT_TEAM: &str = "default";

impl Config {
    /// Loads defaults ← `file` (when given) ← `OPSWIRE_*` environment.
    /// CLI flags are applied by the caller afterwards, then [`Config::validate`].
    ///
    /// A value that does not fit is reported where it was written: the
    /// file is checked on its own first (`FILE:LINE:COLUMN: sampler.teem:
    /// unknown field …`), then an error left by the environment names its
    /// variable (`OPSWIRE_LIMITS__QUEUE_LEN: limits.queue_len: …`).
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::FileNotFound(path.to_path_buf()));
            }
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            check_toml(path, &text)?;
            figment = figment.merge(Toml::string(&text));
        }
        // OPSWIRE_LIMITS__QUEUE_LEN=10 sets limits.queue_len; the variables
        // that are not settings (or need no parsing) are handled below.
        // Only variables that name a setting: an unrelated OPSWIRE_* in the
        // environment (a token for a script, say) must not stop the server.
        figment = figment.merge(
            Env::prefixed(ENV_PREFIX)
                .filter(|key| {
                    let key = key.as_str().to_ascii_lowercase();
                    let top = key.split(ENV_SEPARATOR).next().unwrap_or_default();
                    SETTINGS.contains(&top)
                })
                .split(ENV_SEPARATOR),
        );
        let mut config: Config = figment.extract().map_err(|e| figment_error(e, file))?;
        if let Ok(secret) = std::env::var("OPSWIRE_JWT_SECRET") {
            if !secret.is_empty() {
                config.auth.jwt_secret = Some(secret);
            }
        }
        Ok(config)
    }

    /// Checks every value and fills the defaults that depend on this
    /// machine (the connection limit from the fd limit).
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        if self.sampler.tick_ms < 50 || self.sampler.tick_ms > 60_000 {
            return Err(invalid(
                "sampler.tick_ms",
                format!("{} is out of range 50..=60000", self.sampler.tick_ms),
            ));
        }
        if self.sampler.stale_after_ticks == 0 {
            return Err(invalid("sampler.stale_after_ticks", "must be at least 1"));
        }
        if self.sampler.fanout_threads > 64 {
            return Err(invalid(
                "sampler.fanout_threads",
                format!("{} is out of range 0..=64", self.sampler.fanout_threads),
            ));
        }
        if self.teams.is_empty() {
            self.teams.push(TeamConfig {
                name: DEFAULT_TEAM.into(),
                hosts: vec!["*".into()],
            });
        }
        let mut seen = std::collections::HashSet::new();
        for (i, team) in self.teams.iter().enumerate() {
            let field = format!("teams[{i}].name");
            if !valid_team_name(&team.name) {
                return Err(invalid(
                    field,
                    format!(
                        "`{}` is not a valid team name (1-64 of a-z, 0-9, '-', '_', '.')",
                        team.name
                    ),
                ));
            }
            if !seen.insert(team.name.as_str()) {
                return Err(invalid(field, format!("duplicate team `{}`", team.name)));
            }
            for (j, g) in team.hosts.iter().enumerate() {
                Glob::new(g)
                    .map_err(|e| invalid(format!("teams[{i}].hosts[{j}]"), e.to_string()))?;
            }
        }
        if let Some(team) = &self.sampler.team {
            if !self.teams.iter().any(|t| &t.name == team) {
                return Err(invalid(
                    "sampler.team",
                    format!("`{team}` is not one of the configured teams"),
                ));
            }
        }
        if let Some(h) = &self.sampler.host_name {
            if h.is_empty() || h.len() > 253 {
                return Err(invalid("sampler.host_name", "must be 1-253 characters"));
            }
        }
        match (&self.auth.jwt_secret, &self.auth.public_key_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "auth",
                    "set either jwt_secret or public_key_file, not both",
                ))
            }
            (Some(s), None) if s.len() < 32 => {
                return Err(invalid(
                    "auth.jwt_secret",
                    format!("is {} bytes; an HS256 secret needs at least 32", s.len()),
                ))
            }
            (None, Some(p)) if !p.is_file() => {
                return Err(invalid(
                    "auth.public_key_file",
                    format!("{} is not a readable file", p.display()),
                ))
            }
            _ => {}
        }
        if let Some(alg) = &self.auth.algorithm {
            if !matches!(alg.as_str(), "RS256" | "ES256" | "HS256") {
                return Err(invalid(
                    "auth.algorithm",
                    format!("`{alg}` is not supported (RS256, ES256 or HS256)"),
                ));
            }
        }
        if self.dev_mode() && !self.bind.ip().is_loopback() && !self.insecure {
            return Err(invalid(
                "bind",
                format!(
                    "{} is not a loopback address and no auth key is configured; \
                     set auth.jwt_secret / OPSWIRE_JWT_SECRET or auth.public_key_file, \
                     or pass --insecure to serve anonymous clients on the network",
                    self.bind
                ),
            ));
        }
        if self.history.logs == 0 {
            return Err(invalid("history.logs", "must be at least 1"));
        }
        if self.history.alerts == 0 {
            return Err(invalid("history.alerts", "must be at least 1"));
        }
        let l = &mut self.limits;
        if l.max_frame_bytes < 256 || l.max_frame_bytes > 16 * 1024 * 1024 {
            return Err(invalid(
                "limits.max_frame_bytes",
                "must be between 256 and 16777216",
            ));
        }
        if l.max_auth_frame_bytes < 256 {
            return Err(invalid(
                "limits.max_auth_frame_bytes",
                "must be at least 256",
            ));
        }
        for (field, v) in [
            ("limits.inbound_rate", l.inbound_rate),
            ("limits.inbound_burst", l.inbound_burst),
            ("limits.ingest_rate", l.ingest_rate),
            ("limits.ingest_burst", l.ingest_burst),
            ("limits.subject_inbound_rate", l.subject_inbound_rate),
            ("limits.subject_inbound_burst", l.subject_inbound_burst),
            ("limits.subject_ingest_rate", l.subject_ingest_rate),
            ("limits.subject_ingest_burst", l.subject_ingest_burst),
            ("limits.max_violations", l.max_violations),
        ] {
            if v == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        if l.queue_len == 0 {
            return Err(invalid("limits.queue_len", "must be at least 1"));
        }
        if l.max_subscriptions == 0 {
            return Err(invalid("limits.max_subscriptions", "must be at least 1"));
        }
        if l.max_firing_alerts == 0 {
            return Err(invalid("limits.max_firing_alerts", "must be at least 1"));
        }
        if l.max_hosts_per_team == 0 {
            return Err(invalid("limits.max_hosts_per_team", "must be at least 1"));
        }
        let fd_limit = raise_fd_limit();
        let ceiling = fd_limit.saturating_sub(FD_RESERVE).max(1);
        match l.max_connections {
            None => l.max_connections = Some(ceiling),
            Some(0) => return Err(invalid("limits.max_connections", "must be at least 1")),
            Some(n) if n > ceiling => {
                return Err(invalid(
                    "limits.max_connections",
                    format!(
                        "{n} exceeds this process's file descriptor limit ({fd_limit}) minus a reserve of {FD_RESERVE}; at most {ceiling}"
                    ),
                ))
            }
            Some(_) => {}
        }
        let max = l.max_connections.unwrap_or(1);
        match l.max_unauthenticated {
            None => l.max_unauthenticated = Some((max / 4).max(1)),
            Some(0) => return Err(invalid("limits.max_unauthenticated", "must be at least 1")),
            Some(n) if n > max => {
                return Err(invalid(
                    "limits.max_unauthenticated",
                    format!("{n} exceeds limits.max_connections ({max})"),
                ))
            }
            Some(_) => {}
        }
        if self.websocket.auth_timeout_busy_ms == 0 {
            return Err(invalid(
                "websocket.auth_timeout_busy_ms",
                "must be at least 1",
            ));
        }
        if self.websocket.heartbeat_s == 0 || self.websocket.heartbeat_s > 3600 {
            return Err(invalid("websocket.heartbeat_s", "must be 1..=3600"));
        }
        if self.websocket.auth_timeout_s == 0 || self.websocket.auth_timeout_s > 3600 {
            return Err(invalid("websocket.auth_timeout_s", "must be 1..=3600"));
        }
        if self.auth.leeway_s > 3600 {
            return Err(invalid("auth.leeway_s", "must be at most 3600"));
        }
        for (i, o) in self.websocket.allowed_origins.iter().enumerate() {
            if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
                return Err(invalid(
                    format!("websocket.allowed_origins[{i}]"),
                    format!("`{o}` must be `*` or an origin like https://dash.example.com"),
                ));
            }
        }
        if self.shutdown_timeout_s == 0 {
            return Err(invalid("shutdown_timeout_s", "must be at least 1"));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                format!("`{}` is not a valid filter", self.log.level),
            ));
        }
        let am = &self.alertmanager;
        if let Some(u) = &am.url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(invalid(
                    "alertmanager.url",
                    format!("`{u}` must start with http:// or https://"),
                ));
            }
        }
        if let Some(t) = &am.webhook_token {
            if t.len() < 16 {
                return Err(invalid(
                    "alertmanager.webhook_token",
                    "must be at least 16 characters",
                ));
            }
        }
        if am.team_label.is_empty() {
            return Err(invalid("alertmanager.team_label", "must not be empty"));
        }
        for (field, team) in [
            ("alertmanager.default_team", &am.default_team),
            ("ingest.access_log_team", &self.ingest.access_log_team),
        ] {
            if let Some(team) = team {
                if !self.teams.iter().any(|t| &t.name == team) {
                    return Err(invalid(
                        field,
                        format!("`{team}` is not one of the configured teams"),
                    ));
                }
            }
        }
        if am.timeout_ms == 0 {
            return Err(invalid("alertmanager.timeout_ms", "must be at least 1"));
        }
        if self.ingest.body_timeout_s == 0 || self.ingest.body_timeout_s > 3600 {
            return Err(invalid("ingest.body_timeout_s", "must be 1..=3600"));
        }
        if self.ingest.max_body_bytes < 1024 {
            return Err(invalid("ingest.max_body_bytes", "must be at least 1024"));
        }
        if self.ingest.max_line_bytes < 64
            || self.ingest.max_line_bytes > self.ingest.max_body_bytes
        {
            return Err(invalid(
                "ingest.max_line_bytes",
                "must be at least 64 and at most ingest.max_body_bytes",
            ));
        }
        let t = &self.telemetry;
        if !matches!(t.otlp_protocol.as_str(), "grpc" | "http/protobuf") {
            return Err(invalid(
                "telemetry.otlp_protocol",
                format!(
                    "`{}` is not supported (grpc or http/protobuf)",
                    t.otlp_protocol
                ),
            ));
        }
        if let Some(e) = &t.otlp_endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(invalid(
                    "telemetry.otlp_endpoint",
                    format!("`{e}` must start with http:// or https://"),
                ));
            }
        }
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            return Err(invalid(
                "telemetry.sample_ratio",
                "must be between 0.0 and 1.0",
            ));
        }
        if t.export_queue == 0 {
            return Err(invalid("telemetry.export_queue", "must be at least 1"));
        }
        if t.service_name.is_empty() {
            return Err(invalid("telemetry.service_name", "must not be empty"));
        }
        Ok(())
    }

    /// No key configured: anonymous clients get every team (loopback only).
    pub fn dev_mode(&self) -> bool {
        self.auth.jwt_secret.is_none() && self.auth.public_key_file.is_none()
    }

    /// The connection limit after [`Config::validate`] resolved it.
    pub fn max_connections(&self) -> usize {
        self.limits.max_connections.unwrap_or(1024)
    }

    /// The share of it for connections not yet authenticated, after
    /// [`Config::validate`] resolved it.
    pub fn max_unauthenticated(&self) -> usize {
        self.limits
            .max_unauthenticated
            .unwrap_or_else(|| (self.max_connections() / 4).max(1))
    }

    /// Compiled host globs of each team, in config order.
    pub fn team_globs(&self) -> Vec<(String, GlobSet)> {
        self.teams
            .iter()
            .map(|t| {
                let mut b = GlobSetBuilder::new();
                for g in &t.hosts {
                    // Validated in `validate`.
                    if let Ok(glob) = Glob::new(g) {
                        b.add(glob);
                    }
                }
                (
                    t.name.clone(),
                    b.build().unwrap_or_else(|_| GlobSet::empty()),
                )
            })
            .collect()
    }

    /// The team that holds `host`: the explicit sampler team for the local
    /// host, else the first team whose globs match, else the first team.
    pub fn team_for_host(&self, host: &str) -> String {
        self.team_globs()
            .into_iter()
            .find(|(_, set)| set.is_match(host))
            .map(|(name, _)| name)
            .unwrap_or_else(|| self.teams[0].name.clone())
    }
}

fn valid_team_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (as most servers do)
/// and returns the resulting soft limit.
pub fn raise_fd_limit() -> usize {
    #[cfg(unix)]
    {
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(n) => n as usize,
            Err(_) => rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| soft as usize)
                .unwrap_or(1024),
        }
    }
    #[cfg(not(unix))]
    {
        8192
    }
}

// ------------------------------------------------ where a setting was written

/// Prefix of the environment variables that are settings.
const ENV_PREFIX: &str = "OPSWIRE_";
/// Separator of nested settings in a variable's name (`OPSWIRE_LIMITS__QUEUE_LEN`).
const ENV_SEPARATOR: &str = "__";

impl ConfigError {
    /// Adds where an [`ConfigError::Invalid`] setting was written: the
    /// `OPSWIRE_*` variable that set it (the environment wins over the
    /// file), else `FILE:LINE:COLUMN` of its key in `file`. Other errors,
    /// and settings left at their defaults, are returned as they are.
    pub fn locate(self, file: Option<&Path>) -> ConfigError {
        let ConfigError::Invalid { field, .. } = &self else {
            return self;
        };
        let at = env_var_of(field).or_else(|| {
            let path = file?;
            let text = std::fs::read_to_string(path).ok()?;
            let keys = toml_keys(&text)?;
            // `teams[0].hosts[1]` is found at its key, `teams[0].hosts`.
            let mut name = field.as_str();
            loop {
                if let Some(k) = keys.iter().find(|k| k.path == name) {
                    return Some(file_position(path, &text, k.span.start));
                }
                name = &name[..name.rfind(['.', '['])?];
            }
        });
        match at {
            Some(at) => ConfigError::At {
                at,
                error: Box::new(self),
            },
            None => self,
        }
    }
}

/// The `OPSWIRE_*` variable (as spelled in the environment) that sets
/// `field` (`limits.queue_len` → `OPSWIRE_LIMITS__QUEUE_LEN`), or a table
/// or array that holds it (`teams[0].name` → `OPSWIRE_TEAMS`), if one is set.
fn env_var_of(field: &str) -> Option<String> {
    if field == "auth.jwt_secret" && std::env::var_os("OPSWIRE_JWT_SECRET").is_some() {
        return Some("OPSWIRE_JWT_SECRET".into());
    }
    // `teams[0].hosts[1]` → teams, hosts
    let want: Vec<&str> = field
        .split('.')
        .map(|p| p.split('[').next().unwrap_or(p))
        .collect();
    std::env::vars_os()
        .filter_map(|(name, _)| {
            let name = name.into_string().ok()?;
            let rest = name
                .get(..ENV_PREFIX.len())
                .filter(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
                .map(|_| &name[ENV_PREFIX.len()..])?;
            let parts: Vec<&str> = rest.split(ENV_SEPARATOR).collect();
            let holds = parts.len() <= want.len()
                && parts
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.eq_ignore_ascii_case(b));
            holds.then_some((parts.len(), name))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, name)| name)
}

/// `FILE:LINE:COLUMN` of byte `offset` in `text` (both counted from 1).
fn file_position(path: &Path, text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("{}:{line}:{column}", path.display())
}

/// Checks the config file on its own, so that an error points at the line
/// the user wrote (figment keeps no positions).
fn check_toml(path: &Path, text: &str) -> Result<(), ConfigError> {
    let Err(e) = toml::from_str::<Config>(text) else {
        return Ok(());
    };
    // The toml crate's message is one or more lines; keep them on one.
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let Some(span) = e.span() else {
        return Err(ConfigError::Source {
            at: path.display().to_string(),
            message,
        });
    };
    // The setting: the last key that starts at or before the error (the
    // key itself for an unknown field, the key of the value otherwise).
    let setting = toml_keys(text)
        .and_then(|keys| {
            keys.into_iter()
                .filter(|k| k.span.start <= span.start)
                .max_by_key(|k| k.span.start)
                .map(|k| k.path)
        })
        .or_else(|| key_written_at(text, span.start));
    Err(ConfigError::Source {
        at: file_position(path, text, span.start),
        message: match setting {
            Some(setting) => format!("{setting}: {message}"),
            None => message,
        },
    })
}

/// The key written on the line of byte `offset`, for a document that does
/// not parse (a number too large, say): `key` of `key = value`, after the
/// `[table]` above it if any.
fn key_written_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let (key, _) = text[line_start..offset].split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() {
        return None;
    }
    let table = text[..line_start].lines().rev().find_map(|l| {
        let l = l.trim();
        let name = l.strip_prefix('[')?.strip_suffix(']')?;
        Some(
            name.trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned(),
        )
    });
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_owned(),
    })
}

/// A key of a TOML document: its dotted path as the settings name it
/// (`teams[1].name`) and the bytes of the key.
struct TomlKey {
    path: String,
    span: std::ops::Range<usize>,
}

/// Every key of a TOML document, or `None` if it does not parse.
fn toml_keys(text: &str) -> Option<Vec<TomlKey>> {
    let tree: TomlTree = toml::from_str(text).ok()?;
    let mut keys = Vec::new();
    tree.collect("", &mut keys);
    Some(keys)
}

/// A TOML document with the position of every key.
enum TomlTree {
    Table(Vec<(toml::Spanned<String>, TomlTree)>),
    Array(Vec<TomlTree>),
    Leaf,
}

impl TomlTree {
    fn collect(self, prefix: &str, out: &mut Vec<TomlKey>) {
        match self {
            TomlTree::Table(entries) => {
                for (key, value) in entries {
                    let span = key.span();
                    let key = key.into_inner();
                    if key.starts_with("$__") {
                        continue; // the toml crate's own (a datetime's value)
                    }
                    let path = if prefix.is_empty() {
                        key
                    } else {
                        format!("{prefix}.{key}")
                    };
                    value.collect(&path, out);
                    out.push(TomlKey { path, span });
                }
            }
            TomlTree::Array(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    item.collect(&format!("{prefix}[{i}]"), out);
                }
            }
            TomlTree::Leaf => {}
        }
    }
}

impl<'de> Deserialize<'de> for TomlTree {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TomlTree;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a TOML value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<TomlTree, E> {
                Ok(TomlTree::Leaf)
            }
            fn visit_i64<E>(self, _: i64) -> Result<TomlTree, E> {
                Ok(TomlTree::Leaf)
            }
            fn visit_u64<E>(self, _: u64) -> Result<TomlTree, E> {
                Ok(TomlTree::Leaf)
            }
            fn visit_f64<E>(self, _: f64) -> Result<TomlTree, E> {
                Ok(TomlTree::Leaf)
            }
            fn visit_str<E>(self, _: &str) -> Result<TomlTree, E> {
                Ok(TomlTree::Leaf)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<TomlTree, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(TomlTree::Array(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<TomlTree, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(TomlTree::Table(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// A figment error, reported where its value came from: the variable's
/// name for the environment (figment says `LIMITS.QUEUE_LEN`), without
/// figment's nested backticks.
fn figment_error(error: figment::Error, file: Option<&Path>) -> ConfigError {
    let mut errors = error.into_iter().map(|e| {
        let setting = e.path.join(".").to_ascii_lowercase();
        let from_env = e
            .metadata
            .as_ref()
            .is_some_and(|m| m.name.contains("environment"));
        let at = if from_env {
            env_var_of(&setting).unwrap_or_else(|| {
                format!(
                    "{ENV_PREFIX}{}",
                    e.path.join(ENV_SEPARATOR).to_ascii_uppercase()
                )
            })
        } else {
            file.map_or_else(|| "configuration".into(), |p| p.display().to_string())
        };
        let problem = match &e.kind {
            figment::error::Kind::UnknownField(name, expected) => {
                format!("unknown field `{name}`, expected {}", one_of(expected))
            }
            figment::error::Kind::UnknownVariant(name, expected) => {
                format!("unknown variant `{name}`, expected {}", one_of(expected))
            }
            kind => kind.to_string(),
        };
        let message = if setting.is_empty() {
            problem
        } else {
            format!("{setting}: {problem}")
        };
        (at, message)
    });
    let (at, mut message) = errors.next().unwrap_or_default();
    for (more_at, more) in errors {
        message.push_str(&format!("; {more_at}: {more}"));
    }
    ConfigError::Source { at, message }
}

/// `` `a` ``, `` `a` or `b` ``, `` one of `a`, `b`, `c` `` (as serde says it).
fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.as_slice() {
        [] => "none here".into(),
        [one] => one.clone(),
        [a, b] => format!("{a} or {b}"),
        all => format!("one of {}", all.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_dev_mode() {
        let mut c = Config::default();
        c.validate().unwrap();
        assert!(c.dev_mode());
        assert_eq!(c.teams[0].name, DEFAULT_TEAM);
        assert!(c.max_connections() > 0);
    }

    #[test]
    fn public_bind_without_key_is_refused_unless_insecure() {
        let mut c = Config {
            bind: "0.0.0.0:8080".parse().unwrap(),
            ..Config::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("bind:"), "{e}");
        c.insecure = true;
        c.validate().unwrap();
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut c = Config::default();
        c.limits.queue_len = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("limits.queue_len"));
        let mut c = Config::default();
        c.auth.jwt_secret = Some("short".into());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("auth.jwt_secret"));
        let mut c = Config {
            teams: vec![TeamConfig {
                name: "Bad Name".into(),
                hosts: vec![],
            }],
            ..Config::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("teams[0].name"));
        let mut c = Config::default();
        c.limits.max_connections = Some(10_000_000);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("limits.max_connections"));
    }

    /// Tests that set `OPSWIRE_*` variables hold this lock: `Config::load`
    /// reads the whole process environment.
    static ENV_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn load_toml(toml: &str) -> (tempfile::TempDir, PathBuf, Result<Config, ConfigError>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opswire.toml");
        std::fs::write(&path, toml).unwrap();
        let _env = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let r = Config::load(Some(&path));
        (dir, path, r)
    }

    fn load_env(name: &str, value: &str) -> Result<Config, ConfigError> {
        let _env = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        std::env::set_var(name, value);
        let r = Config::load(None);
        std::env::remove_var(name);
        r
    }

    #[test]
    fn a_typo_in_the_file_names_the_setting_and_its_line() {
        let (_dir, path, r) = load_toml("[sampler]\ntick_ms = 1000\nteem = \"x\"\n");
        let e = r.unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "{}:3:1: sampler.teem: unknown field `teem`",
                path.display()
            )),
            "{e}"
        );
        assert!(!e.contains("default."), "no figment profile: {e}");

        let (_dir, path, r) =
            load_toml("[[teams]]\nname = \"a\"\n\n[limits]\nqueue_len = \"ten\"\n");
        let e = r.unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "{}:5:13: limits.queue_len: invalid type",
                path.display()
            )),
            "{e}"
        );

        let (_dir, path, r) =
            load_toml("[[teams]]\nname = \"a\"\n[[teams]]\nname = \"b\"\nhostz = []\n");
        let e = r.unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "{}:5:1: teams[1].hostz: unknown field `hostz`",
                path.display()
            )),
            "{e}"
        );

        // A syntax error: the toml crate's lines, on one line, with the position.
        let (_dir, path, r) = load_toml("[limits\nqueue_len = 1\n");
        let e = r.unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:1:8: ", path.display())), "{e}");
        assert!(!e.contains('\n'), "{e}");

        // A file that fits loads as before.
        let (_dir, _path, r) = load_toml("[limits]\nqueue_len = 7\n[log]\nformat = \"json\"\n");
        let c = r.unwrap();
        assert_eq!(c.limits.queue_len, 7);
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn an_environment_error_names_the_variable() {
        let e = load_env("OPSWIRE_LIMITS__QUEUE_LEN", "ten")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("OPSWIRE_LIMITS__QUEUE_LEN: limits.queue_len: invalid type"),
            "{e}"
        );
        assert!(!e.contains("LIMITS.QUEUE_LEN"), "{e}");

        let c = load_env("OPSWIRE_LIMITS__QUEUE_LEN", "7").unwrap();
        assert_eq!(c.limits.queue_len, 7);

        // A value `validate` refuses: `locate` names the variable that set it.
        let _env = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        std::env::set_var("OPSWIRE_LIMITS__QUEUE_LEN", "0");
        let mut c = Config::load(None).unwrap();
        let e = c.validate().unwrap_err().locate(None).to_string();
        std::env::remove_var("OPSWIRE_LIMITS__QUEUE_LEN");
        assert!(
            e.starts_with("OPSWIRE_LIMITS__QUEUE_LEN: limits.queue_len: must be at least 1"),
            "{e}"
        );
    }

    #[test]
    fn expected_names_have_one_level_of_backticks() {
        for (name, value, want) in [
            (
                "OPSWIRE_LOG__FORMAT",
                "yaml",
                "OPSWIRE_LOG__FORMAT: log.format: unknown variant `yaml`, expected `text` or `json`",
            ),
            (
                "OPSWIRE_SAMPLER__TEEM",
                "x",
                "OPSWIRE_SAMPLER__TEEM: sampler.teem: unknown field `teem`, expected one of `enabled`, `tick_ms`, ",
            ),
        ] {
            let e = load_env(name, value).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e}");
            assert!(!e.contains("``") && !e.contains("`one of"), "{e}");
        }
        let (_dir, _path, r) = load_toml("[log]\nformat = \"yaml\"\n");
        let e = r.unwrap_err().to_string();
        assert!(
            e.ends_with("log.format: unknown variant `yaml`, expected `text` or `json`"),
            "{e}"
        );
    }

    #[test]
    fn a_refused_value_is_located_in_the_file() {
        let toml = "[[teams]]\nname = \"a\"\n[[teams]]\nname = \"Bad\"\nhosts = [\"x\", \"[\"]\n";
        let (_dir, path, r) = load_toml(toml);
        let mut c = r.unwrap();
        let e = c.validate().unwrap_err().locate(Some(&path)).to_string();
        assert!(
            e.starts_with(&format!(
                "{}:4:1: teams[1].name: `Bad` is not",
                path.display()
            )),
            "{e}"
        );
        // Fixed: the bad glob of `hosts[1]` is found at its key, `hosts`.
        let (_dir, path, r) = load_toml(&toml.replace("Bad", "b"));
        let mut c = r.unwrap();
        let e = c.validate().unwrap_err().locate(Some(&path)).to_string();
        assert!(
            e.starts_with(&format!("{}:5:1: teams[1].hosts[1]: ", path.display())),
            "{e}"
        );
        // Not set anywhere (a default): as it was.
        let e = invalid("history.logs", "must be at least 1").locate(Some(&path));
        assert_eq!(e.to_string(), "history.logs: must be at least 1");
    }

    #[test]
    fn host_globs_pick_the_team() {
        let mut c = Config {
            teams: vec![
                TeamConfig {
                    name: "payments".into(),
                    hosts: vec!["pay-*".into()],
                },
                TeamConfig {
                    name: "search".into(),
                    hosts: vec!["search-?".into()],
                },
            ],
            ..Config::default()
        };
        c.validate().unwrap();
        assert_eq!(c.team_for_host("pay-1"), "payments");
        assert_eq!(c.team_for_host("search-2"), "search");
        assert_eq!(c.team_for_host("other"), "payments");
    }
}

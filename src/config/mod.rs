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

mod locate;
mod validate;

use locate::{check_toml, figment_error, ENV_PREFIX, ENV_SEPARATOR};

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
    /// Listen with `SO_REUSEPORT`, so that several opswire processes on
    /// one machine share `bind` (the kernel spreads connections over them).
    pub reuse_port: bool,
    pub sampler: SamplerConfig,
    pub teams: Vec<TeamConfig>,
    pub auth: AuthConfig,
    pub history: HistoryConfig,
    pub limits: LimitsConfig,
    pub websocket: WebSocketConfig,
    pub sse: SseConfig,
    pub log: LogConfig,
    pub telemetry: TelemetryConfig,
    pub alertmanager: AlertmanagerConfig,
    pub ingest: IngestConfig,
    pub web: WebConfig,
    pub broker: BrokerConfig,
    pub tls: TlsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            insecure: false,
            shutdown_timeout_s: 10,
            workers: 0,
            reuse_port: false,
            sampler: SamplerConfig::default(),
            teams: Vec::new(),
            auth: AuthConfig::default(),
            history: HistoryConfig::default(),
            limits: LimitsConfig::default(),
            websocket: WebSocketConfig::default(),
            sse: SseConfig::default(),
            log: LogConfig::default(),
            telemetry: TelemetryConfig::default(),
            alertmanager: AlertmanagerConfig::default(),
            ingest: IngestConfig::default(),
            web: WebConfig::default(),
            broker: BrokerConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

/// TLS on the listening port: HTTPS and `wss://` (`docs/security.md`).
/// Both files or neither; without them opswire speaks plain HTTP.
#[derive(Clone, Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, the server's certificate first. Read again
    /// when it changes (a renewal needs no restart).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// The pair, when TLS is on.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        Some((self.cert_file.as_deref()?, self.key_file.as_deref()?))
    }
}

/// Cluster mode (`docs/cluster.md`): the Redis that every opswire process
/// of a deployment shares. Unset `url`: the embedded in-memory hub.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// `redis://[[user]:password@]host[:port][/db]`, `rediss://` for TLS.
    /// Holds a password: set it from the environment
    /// (`OPSWIRE_BROKER__URL`) rather than the file.
    pub url: Option<String>,
    /// A Redis Cluster instead: seed URLs of some of its primaries (the
    /// rest are discovered). Passwords as in `url`.
    pub cluster: Vec<String>,
    /// Keys start with `{prefix}:`: deployments sharing one Redis stay apart.
    pub prefix: String,
    /// This process's name in the cluster (default: host name and pid).
    pub node: Option<String>,
    /// Longest wait for one call to Redis; a publish not answered by then
    /// is refused (`unavailable`, HTTP 503).
    pub timeout_ms: u64,
    /// Publishes waiting for Redis at once, across the process; beyond,
    /// publishers are refused at once (back-pressure, never a queue).
    pub max_in_flight: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            url: None,
            cluster: Vec::new(),
            prefix: "opswire".into(),
            node: None,
            timeout_ms: 2000,
            max_in_flight: 10_000,
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
    /// Where the host's `/` is mounted when opswire runs in a container
    /// (e.g. `/host`): disks and processes are the host's, read under it.
    /// Unset: this process's own view.
    pub host_root: Option<std::path::PathBuf>,
    /// Milliseconds one disk's `statvfs` may take; past it the disk is
    /// left out of the snapshots until the call returns (a hard NFS mount
    /// whose server is gone blocks it for ever).
    pub mount_timeout_ms: u64,
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
            host_root: None,
            mount_timeout_ms: 1000,
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
    /// Frames refused for rate in a row, each within a second of the one
    /// before, before the connection is closed (1008).
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
    /// Host names or globs one named-hosts metrics view may list.
    pub max_view_patterns: usize,
    /// Characters one host pattern of a view may have.
    pub max_view_pattern_len: usize,
    /// Distinct named-hosts views (pattern sets) one team serves at once:
    /// each is serialized every tick, so they are bounded; a subscribe
    /// asking for one more is refused.
    pub max_host_views_per_team: usize,
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
            max_view_patterns: 32,
            max_view_pattern_len: 128,
            max_host_views_per_team: 64,
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
    /// Negotiate permessage-deflate (RFC 7692) with clients that offer
    /// it: frames from 512 bytes up go out compressed, each compressed
    /// once for every subscriber (`docs/protocol.md`).
    pub permessage_deflate: bool,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            heartbeat_s: 20,
            auth_timeout_s: 5,
            auth_timeout_busy_ms: 1000,
            allowed_origins: Vec::new(),
            permessage_deflate: true,
        }
    }
}

/// The SSE transport (`GET /sse`). Its keepalive interval is
/// `websocket.heartbeat_s`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SseConfig {
    /// Answer a stream with `Content-Encoding: gzip` when the request
    /// accepts it: frames from 512 bytes up go out as the same compressed
    /// bytes permessage-deflate sends, with no compressor per stream
    /// (`docs/protocol.md`, "SSE: gzip").
    pub gzip: bool,
}

impl Default for SseConfig {
    fn default() -> Self {
        SseConfig { gzip: true }
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
    /// PEM CA certificate(s) that sign Alertmanager's certificate, for an
    /// `https://` URL; unset: the system's trusted roots.
    pub ca_file: Option<PathBuf>,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        AlertmanagerConfig {
            url: None,
            webhook_token: None,
            team_label: "team".into(),
            default_team: None,
            timeout_ms: 5000,
            ca_file: None,
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
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Jaeger UI base URL for trace links (e.g. `http://localhost:16686`);
    /// unset: no trace links.
    pub jaeger_url: Option<String>,
    /// Grafana base URL (e.g. `http://localhost:3000`) for the log panel's
    /// "older lines in Grafana" link into Explore; unset: no link. The page
    /// keeps only recent lines, Loki keeps the rest.
    pub grafana_url: Option<String>,
    /// uid of Grafana's Loki data source that the link queries (the stack
    /// provisions it as `loki`).
    pub grafana_loki_uid: String,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            jaeger_url: None,
            grafana_url: None,
            grafana_loki_uid: "loki".into(),
        }
    }
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
    /// Export every log record and alert change accepted for a team as an
    /// OpenTelemetry log record (for Loki), when export is on.
    pub team_logs: bool,
    /// `service.name` of the team records' resource: apart from opswire's
    /// own logs, so neither drowns the other in Loki.
    pub team_logs_service_name: String,
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
            team_logs: true,
            team_logs_service_name: "opswire-teams".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Top-level settings, for picking `OPSWIRE_*` variables that are settings
/// (and for naming where a field lives).
pub const SETTINGS: &[&str] = &[
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
    "sse",
    "log",
    "telemetry",
    "alertmanager",
    "ingest",
    "web",
    "broker",
    "reuse_port",
    "tls",
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

#[cfg(test)]
mod tests;

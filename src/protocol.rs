//! Wire types of protocol v1 (`docs/protocol.md`): every frame the server
//! sends and every op a client may send.
//!
//! Data frames are serialized exactly once, by the hub, into a [`Frame`] that
//! every subscriber shares; the types here are only the shapes serde needs.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A serialized frame, shared by reference count across subscribers.
///
/// Besides its JSON text it caches the frame as a WebSocket connection
/// that negotiated permessage-deflate puts it on the wire (compressed
/// once, by the first such writer; see `transport::ws::deflate`), so
/// every such subscriber writes the same bytes and no connection keeps a
/// compressor; an SSE stream answered with gzip writes the same
/// compressed bytes, and folds the text's CRC-32 (also computed once,
/// cached here) into its running checksum (`transport::sse::gzip`). The
/// caches stay empty for frames nobody needed compressed.
#[derive(Clone, Default)]
pub struct Frame(Arc<FrameInner>);

#[derive(Default)]
struct FrameInner {
    text: ByteString,
    deflated: OnceLock<Bytes>,
    crc32: OnceLock<u32>,
}

impl Frame {
    /// The frame's JSON text.
    pub fn text(&self) -> &ByteString {
        &self.0.text
    }

    /// The JSON text's bytes (shared, not copied).
    pub fn into_bytes(self) -> Bytes {
        self.0.text.as_bytes().clone()
    }

    /// The frame as deflate-negotiated connections write it, built by
    /// `build` (from the text) for the first one that asks.
    pub fn deflated(&self, build: impl FnOnce(&str) -> Bytes) -> &Bytes {
        self.0.deflated.get_or_init(|| build(&self.0.text))
    }

    /// The CRC-32 (gzip's, ISO 3309) of the JSON text, computed once, by
    /// the first gzip'ed SSE stream that writes the frame.
    pub fn crc32(&self) -> u32 {
        *self
            .0
            .crc32
            .get_or_init(|| crc32fast::hash(self.0.text.as_bytes()))
    }
}

impl std::ops::Deref for Frame {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0.text
    }
}

impl From<ByteString> for Frame {
    fn from(text: ByteString) -> Frame {
        Frame(Arc::new(FrameInner {
            text,
            deflated: OnceLock::new(),
            crc32: OnceLock::new(),
        }))
    }
}

impl From<String> for Frame {
    fn from(text: String) -> Frame {
        Frame::from(ByteString::from(text))
    }
}

impl From<&str> for Frame {
    fn from(text: &str) -> Frame {
        Frame::from(ByteString::from(text))
    }
}

impl PartialEq for Frame {
    fn eq(&self, other: &Frame) -> bool {
        self.0.text == other.0.text
    }
}

impl Eq for Frame {}

impl PartialEq<str> for Frame {
    fn eq(&self, other: &str) -> bool {
        &*self.0.text == other
    }
}

impl PartialEq<&str> for Frame {
    fn eq(&self, other: &&str) -> bool {
        &*self.0.text == *other
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0.text, f)
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0.text, f)
    }
}

/// The server identification sent in `welcome`.
pub const SERVER_NAME: &str = concat!("opswire/", env!("CARGO_PKG_VERSION"));

/// The WebSocket subprotocol a client may offer.
pub const SUBPROTOCOL: &str = "opswire.v1";

/// Close codes of the protocol (RFC 6455 §7.4 and opswire's own).
pub mod close {
    pub const NORMAL: u16 = 1000;
    /// Not RFC 6455: reserved bits, an unknown opcode, an unmasked or
    /// fragmented control frame, a broken fragment sequence.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// Authentication failed or expired, origin not allowed, rate limit
    /// exceeded repeatedly.
    pub const POLICY: u16 = 1008;
    /// A frame or message over the limit.
    pub const TOO_LARGE: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    /// The server is shutting down: reconnect with backoff and resume.
    pub const RESTART: u16 = 1012;
    /// Slow consumer, after `lagged`: reconnect and resume.
    pub const SLOW_CONSUMER: u16 = 4008;
}

/// A stream of a team.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Metrics,
    Logs,
    Alerts,
}

impl Stream {
    pub const ALL: [Stream; 3] = [Stream::Metrics, Stream::Logs, Stream::Alerts];

    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Metrics => "metrics",
            Stream::Logs => "logs",
            Stream::Alerts => "alerts",
        }
    }

    /// The `type` of this stream's data frames.
    pub fn frame_type(self) -> &'static str {
        match self {
            Stream::Metrics => "metrics",
            Stream::Logs => "log",
            Stream::Alerts => "alert",
        }
    }

    pub fn parse(s: &str) -> Option<Stream> {
        match s {
            "metrics" => Some(Stream::Metrics),
            "logs" => Some(Stream::Logs),
            "alerts" => Some(Stream::Alerts),
            _ => None,
        }
    }

    pub(crate) fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------
// Host snapshots (metrics data)
// ---------------------------------------------------------------------------

/// Where a host snapshot came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HostSource {
    #[default]
    Local,
    Agent,
}

/// One sample of one host: an entry of a `metrics` frame's `data.hosts` (docs/protocol.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostSnapshot {
    pub host: String,
    #[serde(default)]
    pub source: HostSource,
    /// Unix epoch microseconds of the sample.
    pub sampled_at: i64,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    #[serde(default)]
    pub disks: Vec<DiskStats>,
    #[serde(default)]
    pub network: Vec<NetworkStats>,
    #[serde(default)]
    pub processes: u64,
    #[serde(default)]
    pub uptime_s: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct CpuStats {
    pub usage_pct: f32,
    #[serde(default)]
    pub cores_pct: Vec<f32>,
    /// 1, 5 and 15 minute load averages.
    #[serde(default)]
    pub load: [f64; 3],
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct MemoryStats {
    pub used_bytes: u64,
    pub total_bytes: u64,
    pub usage_pct: f32,
    #[serde(default)]
    pub swap_used_bytes: u64,
    #[serde(default)]
    pub swap_total_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiskStats {
    pub mount: String,
    /// The filesystem type (`ext4`, `xfs`, …; `overlay` for a container's
    /// own root). Empty from an agent older than this field.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fs_type: String,
    pub used_bytes: u64,
    pub total_bytes: u64,
    pub usage_pct: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkStats {
    pub iface: String,
    pub rx_bytes_per_s: f64,
    pub tx_bytes_per_s: f64,
}

/// `connections` of a metrics frame.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnectionCounts {
    pub team: usize,
    pub total: usize,
}

/// `data` of a metrics frame. Host snapshots are kept pre-serialized so a
/// team frame is assembled without serializing each host again.
#[derive(Serialize)]
pub struct MetricsData<'a> {
    /// Absent in the full view (today's frame, byte for byte); `"hosts"`
    /// in a named-hosts view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view: Option<&'static str>,
    pub hosts: &'a [&'a RawValue],
    pub connections: ConnectionCounts,
}

/// The names of a summary row's values, in order: `data.columns` of a
/// summary frame. New columns are only ever added at the end.
pub const SUMMARY_COLUMNS: [&str; 9] = [
    "host",
    "cpu",
    "mem",
    "disk",
    "rx",
    "tx",
    "load1",
    "sampled_at",
    "age_ms",
];

/// `data` of a summary view's metrics frame: one row per host (an array in
/// [`SUMMARY_COLUMNS`] order, the names said once per frame, as InfluxDB's
/// `columns`/`values`: objects would spend more bytes on their keys than on
/// their values). The hub serializes its rows (`hub::view::SummaryRow`).
#[derive(Serialize)]
pub struct SummaryData<'a, R: Serialize> {
    pub view: &'static str,
    /// Always [`SUMMARY_COLUMNS`].
    pub columns: &'static [&'static str],
    pub hosts: &'a [R],
    pub connections: ConnectionCounts,
}

// ---------------------------------------------------------------------------
// Logs and alerts
// ---------------------------------------------------------------------------

/// Log severities, ordered. Parsing accepts the usual spellings
/// (`warn`/`warning`, `fatal`/`critical`, any case).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_lowercase().as_str() {
            "trace" => Level::Trace,
            "debug" => Level::Debug,
            "info" | "information" | "notice" => Level::Info,
            "warn" | "warning" => Level::Warn,
            "error" | "err" => Level::Error,
            "fatal" | "critical" | "crit" | "panic" | "emergency" | "alert" => Level::Fatal,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
            Level::Fatal => "FATAL",
        }
    }
}

impl Serialize for Level {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Level::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown level `{s}` (expected trace, debug, info, warn, error or fatal)"
            ))
        })
    }
}

/// `data` of a log frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogRecord {
    pub level: Level,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub host: String,
    pub message: String,
    #[serde(default)]
    pub fields: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// When the source says the record was written (unix µs), if it did;
    /// the frame's `ts` is when opswire received it. Accepts an integer
    /// (µs) or an RFC 3339 string on input.
    #[serde(
        default,
        alias = "ts",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_time"
    )]
    pub time: Option<i64>,
}

fn de_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| {
            serde::de::Error::custom("`time` must be unix microseconds or RFC 3339")
        }),
        Some(serde_json::Value::String(s)) => crate::time::parse_rfc3339_micros(&s)
            .map(Some)
            .ok_or_else(|| {
                serde::de::Error::custom(format!("`time`: `{s}` is not an RFC 3339 time"))
            }),
        Some(_) => Err(serde::de::Error::custom(
            "`time` must be unix microseconds or RFC 3339",
        )),
    }
}

/// Alert status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// `data` of an alert frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub status: AlertStatus,
    pub fingerprint: String,
    pub alertname: String,
    #[serde(default)]
    pub severity: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    #[serde(default)]
    pub ends_at: Option<String>,
    #[serde(default)]
    pub generator_url: String,
}

/// A data frame of any stream: `{"type","team","epoch","seq","ts","data"}`.
#[derive(Serialize)]
pub struct DataFrame<'a, T: Serialize> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub team: &'a str,
    pub epoch: &'a str,
    pub seq: u64,
    pub ts: i64,
    /// The trace that produced the frame, when it was sampled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<&'a str>,
    pub data: &'a T,
}

// ---------------------------------------------------------------------------
// Control frames (server → client)
// ---------------------------------------------------------------------------

/// The codes of `error` frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthenticated,
    Forbidden,
    UnknownOp,
    RateLimited,
    TooLarge,
    NotFound,
    Unavailable,
    /// HTTP only: a request body that did not arrive in time (408).
    Timeout,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
        }
    }

    /// The HTTP status an HTTP endpoint answers with for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::UnknownOp => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Timeout => 408,
        }
    }
}

/// An error reply; `id` echoes the op's id when it had one.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ErrorFrame {
    #[serde(rename = "type")]
    pub kind: ErrorType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub code: ErrorCode,
    pub message: String,
}

/// Serde helper so `ErrorFrame` always serializes `"type":"error"`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ErrorType {
    #[default]
    Error,
}

impl ErrorFrame {
    pub fn new(id: Option<i64>, code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorFrame {
            kind: ErrorType::Error,
            id,
            code,
            message: message.into(),
        }
    }
}

/// Server → client control frames other than `error`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply<'a> {
    Welcome {
        /// Echoes the `auth` op's id (absent for header / anonymous auth).
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<i64>,
        session: &'a str,
        /// The hub's epoch, so a reconnecting client can tell a restart
        /// (and resume a new epoch from its start).
        epoch: &'a str,
        teams: Vec<&'a str>,
        streams: [Stream; 3],
        heartbeat_s: u64,
        server: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        sub: Option<&'a str>,
        scope: &'static str,
    },
    Subscribed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<i64>,
        team: &'a str,
        streams: Vec<Stream>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        recovered: BTreeMap<Stream, bool>,
        /// The team's metrics view now, normalized: only when the op
        /// named one.
        #[serde(skip_serializing_if = "Option::is_none")]
        view: Option<&'a ViewSpec>,
    },
    Unsubscribed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<i64>,
        team: &'a str,
        streams: Vec<Stream>,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<i64>,
        ts: i64,
    },
    Published {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    Silenced {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<i64>,
        silence_id: &'a str,
    },
    Lagged {
        team: &'a str,
        stream: Stream,
        last_seq: u64,
    },
}

/// Serializes a value that cannot fail to serialize (plain structs of
/// strings, numbers and maps with string keys).
pub fn to_frame<T: Serialize>(value: &T) -> Frame {
    // Cannot fail: every type passed here has string map keys and no
    // fallible Serialize impl.
    Frame::from(serde_json::to_string(value).expect("frame serializes"))
}

// ---------------------------------------------------------------------------
// Client → server ops
// ---------------------------------------------------------------------------

/// Per-stream resume point: replay every frame after `seq` of `epoch`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ResumePoint {
    pub epoch: String,
    pub seq: u64,
}

/// Server-side log filter of a subscription.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct LogFilter {
    #[serde(default)]
    pub min_level: Option<Level>,
    /// Exact source name, or several separated by commas.
    #[serde(default)]
    pub source: Option<String>,
}

impl LogFilter {
    pub fn matches(&self, level: Level, source: &str) -> bool {
        if let Some(min) = self.min_level {
            if level < min {
                return false;
            }
        }
        match &self.source {
            Some(want) if !want.is_empty() => want.split(',').any(|s| s.trim() == source),
            _ => true,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SubscribeFilter {
    #[serde(default)]
    pub logs: Option<LogFilter>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthOp {
    pub token: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeOp {
    pub team: String,
    #[serde(default = "all_streams")]
    pub streams: Vec<Stream>,
    #[serde(default)]
    pub resume: BTreeMap<Stream, ResumePoint>,
    #[serde(default)]
    pub filter: SubscribeFilter,
    /// The team's metrics view; absent: keep the current one (`full` for
    /// a new subscription).
    #[serde(default)]
    pub view: Option<ViewSpec>,
}

/// What a subscriber asks to see of a team's metrics, as it asked
/// (`"full"`, `"summary"`, `{"hosts":[...]}`). The hub checks the limits
/// and compiles the patterns (`hub::view`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ViewSpec {
    /// Every host's whole snapshot: the frame clients had before views.
    #[default]
    Full,
    /// A few numbers per host.
    Summary,
    /// The whole snapshot of the hosts whose names match (names or globs).
    Hosts(Vec<String>),
}

impl ViewSpec {
    /// Parses a view from its JSON: a string or `{"hosts":[...]}`; a
    /// refusal says what was expected.
    pub fn from_json(v: serde_json::Value) -> Result<ViewSpec, String> {
        const EXPECTED: &str = r#"expected "full", "summary" or {"hosts":["name or glob", ...]}"#;
        match v {
            serde_json::Value::String(s) => match s.as_str() {
                "full" => Ok(ViewSpec::Full),
                "summary" => Ok(ViewSpec::Summary),
                other => Err(format!(
                    "unknown view `{}` ({EXPECTED})",
                    other.chars().take(64).collect::<String>()
                )),
            },
            serde_json::Value::Object(mut m) => {
                let hosts = m
                    .remove("hosts")
                    .ok_or_else(|| format!("a view object needs `hosts` ({EXPECTED})"))?;
                if let Some(k) = m.keys().next() {
                    return Err(format!(
                        "unknown view field `{}` ({EXPECTED})",
                        k.chars().take(64).collect::<String>()
                    ));
                }
                let serde_json::Value::Array(items) = hosts else {
                    return Err("`hosts` must be an array of host names or globs".into());
                };
                items
                    .into_iter()
                    .map(|i| match i {
                        serde_json::Value::String(s) => Ok(s),
                        _ => Err("`hosts` must be an array of host names or globs".to_string()),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(ViewSpec::Hosts)
            }
            _ => Err(format!("a view must be a string or an object ({EXPECTED})")),
        }
    }
}

impl Serialize for ViewSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            ViewSpec::Full => s.serialize_str("full"),
            ViewSpec::Summary => s.serialize_str("summary"),
            ViewSpec::Hosts(patterns) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("hosts", patterns)?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for ViewSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        ViewSpec::from_json(v).map_err(serde::de::Error::custom)
    }
}

fn all_streams() -> Vec<Stream> {
    Stream::ALL.to_vec()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsubscribeOp {
    pub team: String,
    #[serde(default = "all_streams")]
    pub streams: Vec<Stream>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishOp {
    pub team: String,
    pub stream: Stream,
    pub data: Box<RawValue>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceOp {
    pub team: String,
    pub fingerprint: String,
    #[serde(default = "default_silence_s")]
    pub duration_s: u64,
    #[serde(default)]
    pub comment: String,
}

fn default_silence_s() -> u64 {
    3600
}

/// A parsed client op.
#[derive(Debug)]
pub enum Op {
    Auth(AuthOp),
    Subscribe(SubscribeOp),
    Unsubscribe(UnsubscribeOp),
    Ping,
    Publish(PublishOp),
    Silence(SilenceOp),
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Auth(_) => "auth",
            Op::Subscribe(_) => "subscribe",
            Op::Unsubscribe(_) => "unsubscribe",
            Op::Ping => "ping",
            Op::Publish(_) => "publish",
            Op::Silence(_) => "silence",
        }
    }

    /// The name of the op's span: static, so naming the span of every
    /// inbound frame allocates nothing. An unparsable frame's span is
    /// `ws invalid`.
    pub fn span_name(&self) -> &'static str {
        match self {
            Op::Auth(_) => "ws auth",
            Op::Subscribe(_) => "ws subscribe",
            Op::Unsubscribe(_) => "ws unsubscribe",
            Op::Ping => "ws ping",
            Op::Publish(_) => "ws publish",
            Op::Silence(_) => "ws silence",
        }
    }
}

/// Why an inbound frame could not be turned into an [`Op`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpError {
    #[error("{0}")]
    BadRequest(String),
    #[error("unknown op `{0}` (expected auth, subscribe, unsubscribe, ping, publish or silence)")]
    UnknownOp(String),
}

impl OpError {
    pub fn code(&self) -> ErrorCode {
        match self {
            OpError::BadRequest(_) => ErrorCode::BadRequest,
            OpError::UnknownOp(_) => ErrorCode::UnknownOp,
        }
    }
}

/// One inbound frame: its `id` and W3C `traceparent` (when valid), and
/// the op or why it was refused — so even a rejected op's error echoes
/// its id and is traced in the client's trace.
#[derive(Debug)]
pub struct Inbound {
    pub id: Option<i64>,
    pub traceparent: Option<String>,
    pub op: Result<Op, OpError>,
}

/// Parses one inbound text frame into an [`Inbound`].
pub fn parse_inbound(text: &str) -> Inbound {
    let mut traceparent = None;
    let (id, op) = parse_op_with(text, &mut traceparent);
    Inbound {
        id,
        traceparent,
        op,
    }
}

/// Parses one inbound text frame. Returns the op's `id` (when it has a valid
/// one) alongside the result, so even a rejected op's error echoes it.
pub fn parse_op(text: &str) -> (Option<i64>, Result<Op, OpError>) {
    parse_op_with(text, &mut None)
}

fn parse_op_with(
    text: &str,
    traceparent: &mut Option<String>,
) -> (Option<i64>, Result<Op, OpError>) {
    let mut value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return (None, Err(OpError::BadRequest(format!("invalid JSON: {e}")))),
    };
    let Some(obj) = value.as_object_mut() else {
        return (
            None,
            Err(OpError::BadRequest("a frame must be a JSON object".into())),
        );
    };
    let id = match obj.remove("id") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(i) => Some(i),
            None => {
                return (
                    None,
                    Err(OpError::BadRequest("`id` must be an integer".into())),
                )
            }
        },
    };
    if let Some(serde_json::Value::String(tp)) = obj.remove("traceparent") {
        *traceparent = Some(tp);
    }
    let op = match obj.remove("op") {
        Some(serde_json::Value::String(s)) => s,
        Some(_) => return (id, Err(OpError::BadRequest("`op` must be a string".into()))),
        None => return (id, Err(OpError::BadRequest("missing field `op`".into()))),
    };
    // Ops without a body ignore nothing: unknown fields are errors
    // everywhere. A bad field is named by its path (`resume.logs.seq`).
    fn body<T: serde::de::DeserializeOwned>(op: &str, v: serde_json::Value) -> Result<T, OpError> {
        serde_path_to_error::deserialize(v).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            OpError::BadRequest(if path == "." || inner.to_string().contains(&path) {
                format!("{op}: {inner}")
            } else {
                format!("{op}: `{path}`: {inner}")
            })
        })
    }
    let parsed = match op.as_str() {
        "auth" => body(&op, value).map(Op::Auth),
        "subscribe" => body::<SubscribeOp>(&op, value).and_then(|s| {
            if s.streams.is_empty() {
                Err(OpError::BadRequest("subscribe: `streams` is empty".into()))
            } else {
                Ok(Op::Subscribe(s))
            }
        }),
        "unsubscribe" => body(&op, value).map(Op::Unsubscribe),
        // A liveness probe: other fields (padding, say) are ignored.
        "ping" => Ok(Op::Ping),
        "publish" => body(&op, value).map(Op::Publish),
        "silence" => body(&op, value).map(Op::Silence),
        other => Err(OpError::UnknownOp(other.chars().take(64).collect())),
    };
    (id, parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_subscribe_with_resume_and_filter() {
        let (id, op) = parse_op(
            r#"{"op":"subscribe","id":1,"team":"payments","streams":["metrics","logs"],
                "resume":{"logs":{"epoch":"k3j9","seq":41}},
                "filter":{"logs":{"min_level":"warn","source":"checkout-api"}}}"#,
        );
        assert_eq!(id, Some(1));
        let Ok(Op::Subscribe(s)) = op else {
            panic!("{op:?}")
        };
        assert_eq!(s.team, "payments");
        assert_eq!(s.streams, vec![Stream::Metrics, Stream::Logs]);
        assert_eq!(s.resume[&Stream::Logs].seq, 41);
        assert_eq!(s.view, None);
        let f = s.filter.logs.unwrap();
        assert!(f.matches(Level::Error, "checkout-api"));
        assert!(!f.matches(Level::Info, "checkout-api"));
        assert!(!f.matches(Level::Error, "other"));
    }

    #[test]
    fn errors_name_what_is_wrong() {
        assert!(
            matches!(parse_op("{nope").1, Err(OpError::BadRequest(m)) if m.starts_with("invalid JSON"))
        );
        assert!(matches!(parse_op("[1]").1, Err(OpError::BadRequest(_))));
        let (id, e) = parse_op(r#"{"op":"dance","id":7}"#);
        assert_eq!(id, Some(7));
        assert_eq!(e.unwrap_err(), OpError::UnknownOp("dance".into()));
        let (_, e) = parse_op(r#"{"op":"subscribe","streams":["logs"]}"#);
        assert!(matches!(e, Err(OpError::BadRequest(m)) if m.contains("missing field `team`")));
        let (_, e) = parse_op(r#"{"op":"subscribe","team":"a","streams":["bogus"]}"#);
        assert!(matches!(e, Err(OpError::BadRequest(m)) if m.contains("bogus")));
    }

    #[test]
    fn parses_views_and_names_a_bad_one() {
        let view = |v: &str| {
            let (_, op) = parse_op(&format!(r#"{{"op":"subscribe","team":"a","view":{v}}}"#));
            op.map(|op| match op {
                Op::Subscribe(s) => s.view,
                other => panic!("{other:?}"),
            })
        };
        assert_eq!(view(r#""summary""#), Ok(Some(ViewSpec::Summary)));
        assert_eq!(view(r#""full""#), Ok(Some(ViewSpec::Full)));
        assert_eq!(
            view(r#"{"hosts":["pay-*","db-1"]}"#),
            Ok(Some(ViewSpec::Hosts(vec!["pay-*".into(), "db-1".into()])))
        );
        for (bad, says) in [
            (r#""tiny""#, "unknown view `tiny`"),
            (r#"{"hosts":"db-1"}"#, "array of host names"),
            (r#"{"hosts":[1]}"#, "array of host names"),
            (r#"{"host":["a"]}"#, "needs `hosts`"),
            (r#"{"hosts":["a"],"x":1}"#, "unknown view field `x`"),
            ("3", "a view must be a string or an object"),
        ] {
            let e = view(bad).unwrap_err();
            assert!(
                matches!(&e, OpError::BadRequest(m) if m.contains(says) && m.contains("view")),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn error_frame_shape() {
        let f = to_frame(&ErrorFrame::new(
            Some(3),
            ErrorCode::RateLimited,
            "slow down",
        ));
        assert_eq!(
            &*f,
            r#"{"type":"error","id":3,"code":"rate_limited","message":"slow down"}"#
        );
    }
}

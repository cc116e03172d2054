//! Team records: every log record and alert change opswire accepts for a
//! team, exported as an OpenTelemetry log record so that Loki keeps what
//! the hub's in-memory history (`history.logs`) forgets.
//!
//! They go out through the same OTLP endpoint as opswire's own telemetry,
//! but from a logger provider of their own: its resource's `service.name`
//! is `telemetry.team_logs_service_name` (`opswire-teams`) and its scope
//! `opswire.teams`, so a team's lines and opswire's own logs never share
//! a Loki stream. Each record carries:
//!
//! | OTLP field | value |
//! | --- | --- |
//! | `opswire.team` | the team (the Collector moves it to the resource, where Loki makes it the index label `opswire_team`) |
//! | `host.name` | the record's host, when it names one |
//! | `opswire.source`, `opswire.stream` | where it came from; `logs` or `alerts` |
//! | `opswire.seq`, `opswire.epoch` | the frame's position: the same line in the live stream and in Loki |
//! | severity | the level (alerts: from their `severity` label; resolved is INFO) |
//! | body | the message (alerts: `<alertname> <status>: <summary>`) |
//! | trace and span id | the `publish` span (the trace a frame's `trace_id` names) |
//! | `opswire.fields` | a log record's structured fields, as one map |
//!
//! Export must never slow a publish: a record is built and queued in a
//! couple of microseconds (a bounded queue, `telemetry.export_queue`),
//! drained by the SDK's own thread; when the queue is full the record is
//! dropped and counted (`opswire_team_log_records_total{result="dropped"}`).
//! In cluster mode the process that published a record exports it, once,
//! when the broker has given it its seq.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{SpanId, TraceContextExt, TraceFlags, TraceId};
use opentelemetry::{InstrumentationScope, Key, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{
    BatchLogProcessor, LogBatch, LogExporter, LogProcessor, SdkLogRecord, SdkLogger,
    SdkLoggerProvider,
};
use opentelemetry_sdk::Resource;

use crate::protocol::{AlertRecord, AlertStatus, Level, LogRecord};

/// The instrumentation scope of team records.
pub const SCOPE: &str = "opswire.teams";

static LOGGER: OnceLock<SdkLogger> = OnceLock::new();
/// Records handed to the export queue, and dropped because it was full.
static QUEUED: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Records queued and not yet handed to the exporter.
static IN_QUEUE: AtomicUsize = AtomicUsize::new(0);

/// Team records queued for export and dropped (queue full) so far.
pub fn counts() -> (u64, u64) {
    (
        QUEUED.load(Ordering::Relaxed),
        DROPPED.load(Ordering::Relaxed),
    )
}

/// Whether team records are exported (export on and `telemetry.team_logs`).
pub fn enabled() -> bool {
    LOGGER.get().is_some()
}

/// Builds the team records' provider around `exporter` and makes it the
/// one [`TeamRecord::emit`] uses. `resource` is opswire's, whose
/// `service.name` is replaced by `service_name`.
pub(super) fn install<E: LogExporter + 'static>(
    exporter: E,
    resource: Resource,
    service_name: &str,
    queue: usize,
) -> SdkLoggerProvider {
    let resource = Resource::builder_empty()
        .with_attributes(
            resource
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .with_service_name(service_name.to_owned())
        .build();
    let batch = opentelemetry_sdk::logs::BatchConfigBuilder::default()
        .with_max_queue_size(queue)
        .build();
    let provider = SdkLoggerProvider::builder()
        .with_resource(resource)
        .with_log_processor(Bounded {
            inner: BatchLogProcessor::builder(Dequeued(exporter))
                .with_batch_config(batch)
                .build(),
            cap: queue,
        })
        .build();
    let scope = InstrumentationScope::builder(SCOPE)
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let _ = LOGGER.set(provider.logger_with_scope(scope));
    provider
}

/// Drops (and counts) a record when `cap` records wait for export, before
/// the batch processor would drop it silently: its queue has room for
/// `cap`, so it never does.
#[derive(Debug)]
struct Bounded {
    inner: BatchLogProcessor,
    cap: usize,
}

impl LogProcessor for Bounded {
    fn emit(&self, data: &mut SdkLogRecord, scope: &InstrumentationScope) {
        if IN_QUEUE.fetch_add(1, Ordering::AcqRel) >= self.cap {
            IN_QUEUE.fetch_sub(1, Ordering::AcqRel);
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        QUEUED.fetch_add(1, Ordering::Relaxed);
        self.inner.emit(data, scope);
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource)
    }
}

/// Frees the queue's room as batches leave it for the exporter.
#[derive(Debug)]
struct Dequeued<E>(E);

impl<E: LogExporter> LogExporter for Dequeued<E> {
    fn export(
        &self,
        batch: LogBatch<'_>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        IN_QUEUE.fetch_sub(batch.iter().count(), Ordering::AcqRel);
        self.0.export(batch)
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource)
    }
}

/// What a stream's data exports as a team record.
pub trait ToTeamRecord {
    /// The record for `team`, received at `ts` (unix µs); `None` when team
    /// records are not exported (nothing is built then).
    fn team_record(&self, team: &str, ts: i64) -> Option<TeamRecord>;
}

/// A team record built at publish time, emitted once its seq is known.
pub struct TeamRecord {
    team: String,
    stream: &'static str,
    /// When opswire received it, and when the source says it was written.
    received: i64,
    written: Option<i64>,
    severity: Severity,
    severity_text: &'static str,
    body: String,
    attributes: Vec<(Key, AnyValue)>,
    trace: Option<(TraceId, SpanId)>,
}

impl fmt::Debug for TeamRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TeamRecord")
            .field("team", &self.team)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl TeamRecord {
    /// Carries the trace and span of `span` (the publish), when sampled.
    pub fn traced(mut self, span: &tracing::Span) -> Self {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        if !span.is_disabled() {
            let cx = span.context();
            let sc = cx.span().span_context().clone();
            if sc.is_valid() && sc.is_sampled() {
                self.trace = Some((sc.trace_id(), sc.span_id()));
            }
        }
        self
    }

    /// Queues the record for export as the frame `seq` of `epoch`.
    pub fn emit(self, seq: u64, epoch: &str) {
        let Some(logger) = LOGGER.get() else { return };
        let mut r = logger.create_log_record();
        r.set_timestamp(micros_to_time(self.written.unwrap_or(self.received)));
        r.set_observed_timestamp(micros_to_time(self.received));
        r.set_severity_number(self.severity);
        r.set_severity_text(self.severity_text);
        r.set_body(AnyValue::String(self.body.into()));
        r.add_attribute("opswire.team", self.team);
        r.add_attribute("opswire.stream", self.stream);
        r.add_attribute("opswire.seq", seq as i64);
        r.add_attribute("opswire.epoch", epoch.to_owned());
        r.add_attributes(self.attributes);
        if let Some((trace, span)) = self.trace {
            r.set_trace_context(trace, span, Some(TraceFlags::SAMPLED));
        }
        logger.emit(r);
    }
}

fn micros_to_time(us: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us.max(0) as u64)
}

fn severity(level: Level) -> (Severity, &'static str) {
    match level {
        Level::Trace => (Severity::Trace, "trace"),
        Level::Debug => (Severity::Debug, "debug"),
        Level::Info => (Severity::Info, "info"),
        Level::Warn => (Severity::Warn, "warn"),
        Level::Error => (Severity::Error, "error"),
        Level::Fatal => (Severity::Fatal, "fatal"),
    }
}

/// Turns a JSON value into an OTLP one (objects become maps, so Loki
/// keeps each field as structured metadata of its own).
fn any_value(v: &serde_json::Value) -> AnyValue {
    use serde_json::Value;
    match v {
        Value::Null => AnyValue::String("".into()),
        Value::Bool(b) => AnyValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AnyValue::Int(i),
            None => AnyValue::Double(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => AnyValue::String(s.clone().into()),
        Value::Array(a) => AnyValue::ListAny(Box::new(a.iter().map(any_value).collect())),
        Value::Object(o) => AnyValue::Map(Box::new(
            o.iter()
                .map(|(k, v)| (Key::new(k.clone()), any_value(v)))
                .collect(),
        )),
    }
}

fn text_attribute(attributes: &mut Vec<(Key, AnyValue)>, key: &'static str, value: &str) {
    if !value.is_empty() {
        attributes.push((
            Key::from_static_str(key),
            AnyValue::String(value.to_owned().into()),
        ));
    }
}

impl ToTeamRecord for LogRecord {
    fn team_record(&self, team: &str, ts: i64) -> Option<TeamRecord> {
        if !enabled() {
            return None;
        }
        let (severity, severity_text) = severity(self.level);
        let mut attributes = Vec::with_capacity(4);
        text_attribute(&mut attributes, "host.name", &self.host);
        text_attribute(&mut attributes, "opswire.source", &self.source);
        // The source's own trace, when it differs from the publish's.
        text_attribute(
            &mut attributes,
            "opswire.record_trace_id",
            self.trace_id.as_deref().unwrap_or_default(),
        );
        if !self.fields.is_empty() {
            // One map under a key of opswire's: a field can never pass for
            // `opswire.team` (the Collector groups by it).
            attributes.push((
                Key::from_static_str("opswire.fields"),
                any_value(&serde_json::Value::Object(self.fields.clone())),
            ));
        }
        Some(TeamRecord {
            team: team.to_owned(),
            stream: "logs",
            received: ts,
            written: self.time,
            severity,
            severity_text,
            body: self.message.clone(),
            attributes,
            trace: None,
        })
    }
}

impl ToTeamRecord for AlertRecord {
    fn team_record(&self, team: &str, ts: i64) -> Option<TeamRecord> {
        if !enabled() {
            return None;
        }
        let status = match self.status {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        };
        let (severity, severity_text) = match (self.status, self.severity.as_str()) {
            (AlertStatus::Resolved, _) => (Severity::Info, "info"),
            (_, "critical" | "page" | "error") => (Severity::Error, "error"),
            (_, "warning" | "warn") => (Severity::Warn, "warn"),
            _ => (Severity::Info, "info"),
        };
        let summary = self
            .annotations
            .get("summary")
            .or_else(|| self.annotations.get("description"));
        let body = match summary {
            Some(s) => format!("{} {status}: {s}", self.alertname),
            None => format!("{} {status}", self.alertname),
        };
        let mut attributes = Vec::with_capacity(6);
        text_attribute(&mut attributes, "opswire.source", "alertmanager");
        text_attribute(
            &mut attributes,
            "host.name",
            self.labels
                .get("host")
                .or_else(|| self.labels.get("instance"))
                .map(String::as_str)
                .unwrap_or_default(),
        );
        text_attribute(&mut attributes, "opswire.alert.name", &self.alertname);
        text_attribute(&mut attributes, "opswire.alert.status", status);
        text_attribute(&mut attributes, "opswire.alert.severity", &self.severity);
        text_attribute(
            &mut attributes,
            "opswire.alert.fingerprint",
            &self.fingerprint,
        );
        attributes.push((
            Key::from_static_str("opswire.alert.labels"),
            AnyValue::Map(Box::new(
                self.labels
                    .iter()
                    .map(|(k, v)| (Key::new(k.clone()), AnyValue::String(v.clone().into())))
                    .collect(),
            )),
        ));
        Some(TeamRecord {
            team: team.to_owned(),
            stream: "alerts",
            received: ts,
            written: None,
            severity,
            severity_text,
            body,
            attributes,
            trace: None,
        })
    }
}

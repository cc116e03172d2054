//! Process-wide telemetry: one `tracing` subscriber with
//!
//! * a console layer (text or JSON) whose lines carry `trace_id`/`span_id`
//!   when they are written inside a traced span;
//! * a `tracing-opentelemetry` layer exporting spans over OTLP;
//! * an `opentelemetry-appender-tracing` layer exporting log records over OTLP.
//!
//! Export is on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the per-signal
//! variable) is set or the config names an endpoint, and `OTEL_SDK_DISABLED`
//! is not `true`; otherwise the OpenTelemetry layers are not installed at all.
//! The standard variables win over the config: `OTEL_EXPORTER_OTLP_PROTOCOL`
//! (`grpc` or `http/protobuf`), `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`/`_ARG`, `OTEL_BSP_*`,
//! `OTEL_BLRP_*`.
//!
//! Export never touches the request path: spans and records go to bounded
//! queues drained by the SDK's own threads (dropped when full), and the gRPC
//! channel runs on a small runtime of its own, so a slow or dead collector
//! costs clients nothing. Failures are counted and logged at most once a
//! minute. [`Telemetry::shutdown`] flushes what is queued.
//!
//! With export on, [`team_logs`] also exports every log record and alert
//! change accepted for a team (for Loki), from a provider of its own.

pub mod team_logs;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{LogExporter, SpanExporter, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{BatchLogProcessor, LogBatch, SdkLoggerProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData};
use opentelemetry_sdk::Resource;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{filter_fn, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogConfig, LogFormat, TelemetryConfig};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP {signal} exporter: {reason}")]
    Exporter {
        signal: &'static str,
        reason: String,
    },
    #[error("telemetry runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Export failures per signal (`[spans, logs, team_logs]`), for `/metrics`.
static EXPORT_FAILURES: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
const SIGNALS: [&str; 3] = ["spans", "logs", "team_logs"];
static LAST_WARNING_S: AtomicU64 = AtomicU64::new(0);

/// OTLP export failures so far, by signal: `spans`, `logs` (opswire's
/// own) and `team_logs` (the teams' records).
pub fn export_failures() -> [(&'static str, u64); 3] {
    std::array::from_fn(|i| (SIGNALS[i], EXPORT_FAILURES[i].load(Ordering::Relaxed)))
}

fn report_failure(signal: usize, error: &dyn std::fmt::Display) {
    let failures = EXPORT_FAILURES[signal].fetch_add(1, Ordering::Relaxed) + 1;
    let now = crate::time::now_s();
    let last = LAST_WARNING_S.load(Ordering::Relaxed);
    if now >= last + 60
        && LAST_WARNING_S
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            target: "opswire::telemetry",
            signal = SIGNALS[signal],
            failures,
            error = %error,
            "OTLP export failing; telemetry is dropped, clients are unaffected (next warning in 60 s at the earliest)"
        );
    }
}

/// Wraps an exporter to count and report failures without flooding, as
/// the signal of that index in [`SIGNALS`].
#[derive(Debug)]
struct Reporting<E>(E, usize);

const SPANS: usize = 0;
const LOGS: usize = 1;
const TEAM_LOGS: usize = 2;

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for Reporting<E>
{
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let fut = self.0.export(batch);
        async move {
            let r = fut.await;
            if let Err(e) = &r {
                report_failure(SPANS, e);
            }
            r
        }
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource)
    }
}

impl<E: opentelemetry_sdk::logs::LogExporter> opentelemetry_sdk::logs::LogExporter
    for Reporting<E>
{
    fn export(
        &self,
        batch: LogBatch<'_>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let (fut, signal) = (self.0.export(batch), self.1);
        async move {
            let r = fut.await;
            if let Err(e) = &r {
                report_failure(signal, e);
            }
            r
        }
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource)
    }
}

/// The installed providers; call [`Telemetry::shutdown`] before exit.
#[derive(Default)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    logger: Option<SdkLoggerProvider>,
    team_logger: Option<SdkLoggerProvider>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Telemetry {
    pub fn exporting(&self) -> bool {
        self.tracer.is_some()
    }

    /// Flushes and stops the exporters (bounded by the SDK's timeouts).
    pub fn shutdown(mut self) {
        if let Some(t) = self.tracer.take() {
            let _ = t.shutdown();
        }
        for l in [self.logger.take(), self.team_logger.take()]
            .into_iter()
            .flatten()
        {
            let _ = l.shutdown();
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Where and how to export, after env and config are combined.
struct ExportPlan {
    grpc_traces: bool,
    grpc_logs: bool,
    /// Set in code only when it comes from the config (the exporters read
    /// the `OTEL_EXPORTER_OTLP_*ENDPOINT` variables themselves).
    config_endpoint: Option<String>,
}

fn export_plan(cfg: &TelemetryConfig) -> Option<ExportPlan> {
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    let env_endpoint = env("OTEL_EXPORTER_OTLP_ENDPOINT")
        .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        .is_some();
    if !env_endpoint && cfg.otlp_endpoint.is_none() {
        return None;
    }
    let grpc = |signal: &str| {
        let protocol = env(&format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"))
            .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or_else(|| cfg.otlp_protocol.clone());
        protocol != "http/protobuf" && protocol != "http/json"
    };
    Some(ExportPlan {
        grpc_traces: grpc("TRACES"),
        grpc_logs: grpc("LOGS"),
        config_endpoint: if env_endpoint {
            None
        } else {
            cfg.otlp_endpoint.clone()
        },
    })
}

/// Installs the global subscriber and, when configured, the OTLP exporters.
pub fn init(log: &LogConfig, cfg: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let console_filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::new(v),
        // The SDK's own diagnostics would repeat every failed export;
        // `Reporting` says it once instead.
        _ => EnvFilter::new(format!(
            "{},opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off",
            log.level
        )),
    };
    let console = tracing_subscriber::fmt::layer()
        .event_format(ConsoleFormat {
            json: log.format == LogFormat::Json,
        })
        .with_writer(std::io::stderr)
        .with_filter(console_filter)
        .with_filter(filter_fn(|m| !crate::faults::is_dispatcher_error(m)));
    // Counted and reported instead, rate-limited (see `faults`).
    let faults = crate::faults::Counter.with_filter(filter_fn(crate::faults::is_dispatcher_error));

    let Some(plan) = export_plan(cfg) else {
        let _ = tracing_subscriber::registry()
            .with(console)
            .with(faults)
            .try_init();
        return Ok(Telemetry::default());
    };

    // The gRPC channel needs a Tokio runtime to be built in and to run on;
    // a small one of our own keeps export off the server's runtimes and
    // lets shutdown flush from any thread.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("opswire-otlp")
        .enable_all()
        .build()?;
    let _guard = runtime.enter();

    let mut resource = Resource::builder();
    if env("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(cfg.service_name.clone());
    }
    let resource = resource
        .with_attributes([KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))])
        .build();

    let tracer_provider = build_tracer_provider(&plan, cfg, resource.clone())?;
    let tracer = tracer_provider.tracer("opswire");
    opentelemetry::global::set_tracer_provider(tracer_provider.clone());

    // Only opswire's own spans and events are exported: the internals of
    // hyper, h2, tonic and the SDK would otherwise feed back into export.
    let exported = Targets::new().with_target("opswire", Level::INFO);
    let trace_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(exported.clone());

    let team_logger = if cfg.team_logs {
        Some(team_logs::install(
            Reporting(build_log_exporter(&plan)?, TEAM_LOGS),
            resource.clone(),
            &cfg.team_logs_service_name,
            cfg.export_queue,
        ))
    } else {
        None
    };
    let logger_provider = if cfg.export_logs {
        Some(build_logger_provider(&plan, cfg, resource)?)
    } else {
        None
    };
    let log_layer = logger_provider.as_ref().map(|p| {
        opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(p)
            .with_filter(exported)
    });

    let _ = tracing_subscriber::registry()
        .with(console)
        .with(faults)
        .with(trace_layer)
        .with(log_layer)
        .try_init();
    drop(_guard);
    Ok(Telemetry {
        tracer: Some(tracer_provider),
        logger: logger_provider,
        team_logger,
        runtime: Some(runtime),
    })
}

/// Spans: batched, bounded (`export_queue`), sampled parent-based at
/// `sample_ratio` unless `OTEL_TRACES_SAMPLER` says otherwise.
fn build_tracer_provider(
    plan: &ExportPlan,
    cfg: &TelemetryConfig,
    resource: Resource,
) -> Result<SdkTracerProvider, TelemetryError> {
    let span_exporter = build_span_exporter(plan)?;
    let span_batch = opentelemetry_sdk::trace::BatchConfigBuilder::default()
        .with_max_queue_size(cfg.export_queue)
        .build();
    let mut tracer_builder = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_span_processor(
            BatchSpanProcessor::builder(Reporting(span_exporter, SPANS))
                .with_batch_config(span_batch)
                .build(),
        );
    if env("OTEL_TRACES_SAMPLER").is_none() {
        tracer_builder = tracer_builder.with_sampler(Sampler::ParentBased(Box::new(
            Sampler::TraceIdRatioBased(cfg.sample_ratio),
        )));
    }
    Ok(tracer_builder.build())
}

/// Log records: batched and bounded like spans.
fn build_logger_provider(
    plan: &ExportPlan,
    cfg: &TelemetryConfig,
    resource: Resource,
) -> Result<SdkLoggerProvider, TelemetryError> {
    let log_exporter = build_log_exporter(plan)?;
    let log_batch = opentelemetry_sdk::logs::BatchConfigBuilder::default()
        .with_max_queue_size(cfg.export_queue)
        .build();
    Ok(SdkLoggerProvider::builder()
        .with_resource(resource)
        .with_log_processor(
            BatchLogProcessor::builder(Reporting(log_exporter, LOGS))
                .with_batch_config(log_batch)
                .build(),
        )
        .build())
}

fn build_span_exporter(plan: &ExportPlan) -> Result<SpanExporter, TelemetryError> {
    let err = |e: opentelemetry_otlp::ExporterBuildError| TelemetryError::Exporter {
        signal: "span",
        reason: e.to_string(),
    };
    if plan.grpc_traces {
        let mut b = SpanExporter::builder().with_tonic();
        if let Some(e) = &plan.config_endpoint {
            b = b.with_endpoint(e.clone());
        }
        b.build().map_err(err)
    } else {
        let mut b = SpanExporter::builder().with_http();
        if let Some(e) = &plan.config_endpoint {
            b = b.with_endpoint(format!("{}/v1/traces", e.trim_end_matches('/')));
        }
        b.build().map_err(err)
    }
}

fn build_log_exporter(plan: &ExportPlan) -> Result<LogExporter, TelemetryError> {
    let err = |e: opentelemetry_otlp::ExporterBuildError| TelemetryError::Exporter {
        signal: "log",
        reason: e.to_string(),
    };
    if plan.grpc_logs {
        let mut b = LogExporter::builder().with_tonic();
        if let Some(e) = &plan.config_endpoint {
            b = b.with_endpoint(e.clone());
        }
        b.build().map_err(err)
    } else {
        let mut b = LogExporter::builder().with_http();
        if let Some(e) = &plan.config_endpoint {
            b = b.with_endpoint(format!("{}/v1/logs", e.trim_end_matches('/')));
        }
        b.build().map_err(err)
    }
}

/// The trace and span id (lowercase hex) of the current OpenTelemetry
/// context, when it holds a sampled span.
pub fn current_trace_ids() -> Option<(String, String)> {
    opentelemetry::Context::map_current(|cx| {
        let sc = cx.span().span_context().clone();
        (sc.is_valid() && sc.is_sampled())
            .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
    })
}

/// The trace id of `span` when it is exported (sampled), for a frame's
/// `trace_id`. Cheap when export is off: the span is then disabled.
pub fn trace_id_of(span: &tracing::Span) -> Option<String> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    (sc.is_valid() && sc.is_sampled()).then(|| sc.trace_id().to_string())
}

/// Continues a W3C `traceparent` (from a header or an op) under `span`.
/// Returns false (and leaves `span` alone) when the value is not valid.
pub fn set_remote_parent(span: &tracing::Span, traceparent: &str) -> bool {
    use opentelemetry::propagation::TextMapPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let carrier =
        std::collections::HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if !cx.span().span_context().is_valid() {
        return false;
    }
    let _ = span.set_parent(cx);
    true
}

/// Console lines: `TIME LEVEL target: message k=v… trace_id=… span_id=…`,
/// or one JSON object per line with the same fields.
struct ConsoleFormat {
    json: bool,
}

#[derive(Default)]
struct FieldCollector {
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl Visit for FieldCollector {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields.insert(field.name().into(), value.into());
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields
                .insert(field.name().into(), format!("{value:?}").into());
        }
    }
}

impl<S, N> FormatEvent<S, N> for ConsoleFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut c = FieldCollector::default();
        event.record(&mut c);
        let meta = event.metadata();
        let ts = humantime::format_rfc3339_micros(SystemTime::now());
        let ids = current_trace_ids();
        let span = ctx.lookup_current().map(|s| s.name());
        if self.json {
            let mut obj = serde_json::Map::new();
            obj.insert("timestamp".into(), ts.to_string().into());
            obj.insert("level".into(), meta.level().as_str().into());
            obj.insert("target".into(), meta.target().into());
            obj.insert("message".into(), c.message.into());
            if let Some(s) = span {
                obj.insert("span".into(), s.into());
            }
            if !c.fields.is_empty() {
                obj.insert("fields".into(), c.fields.into());
            }
            if let Some((t, s)) = ids {
                obj.insert("trace_id".into(), t.into());
                obj.insert("span_id".into(), s.into());
            }
            writeln!(writer, "{}", serde_json::Value::Object(obj))
        } else {
            let mut line = format!("{ts} {:>5} {}: {}", meta.level(), meta.target(), c.message);
            for (k, v) in &c.fields {
                match v {
                    serde_json::Value::String(s) => {
                        let _ = write!(line, " {k}={s}");
                    }
                    other => {
                        let _ = write!(line, " {k}={other}");
                    }
                }
            }
            if let Some((t, s)) = ids {
                let _ = write!(line, " trace_id={t} span_id={s}");
            }
            writeln!(writer, "{line}")
        }
    }
}

//! A real OTLP receiver for tests, built from the official protobuf
//! definitions (`opentelemetry-proto`).
//!
//! * [`Receiver::start_grpc`]: a tonic server implementing the collector's
//!   `TraceService`, `LogsService` and `MetricsService`.
//! * [`Receiver::start_http`]: OTLP/HTTP (`POST /v1/traces`, `/v1/logs`,
//!   `/v1/metrics`) in binary protobuf (`application/x-protobuf`) or JSON
//!   (`application/json`), served by actix-web.
//!
//! Both listen on `127.0.0.1:0`, on a thread and runtime of their own, so
//! they work from any test (async or not, any runtime flavour). What arrives
//! is flattened into [`RecvSpan`] / [`RecvLog`] / [`RecvMetric`], with the
//! resource attributes copied onto each item. Dropping the [`Receiver`]
//! stops it and frees the port.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::resource::v1::Resource;

/// How often `wait_for_*` looks at what has arrived.
const POLL: Duration = Duration::from_millis(50);

/// One received span, flattened for assertions.
#[derive(Debug, Clone, PartialEq)]
pub struct RecvSpan {
    pub name: String,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// `""` for a root span.
    pub parent_span_id: String,
    /// `opentelemetry_proto::tonic::trace::v1::span::SpanKind` as i32
    /// (1 internal, 2 server, 3 client, 4 producer, 5 consumer).
    pub kind: i32,
    /// Every attribute value stringified (see [`stringify`]).
    pub attrs: BTreeMap<String, String>,
    /// 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub status_message: String,
    /// Resource attributes of the `ResourceSpans` this span came in.
    pub resource: BTreeMap<String, String>,
    /// Instrumentation scope name.
    pub scope: String,
    /// `(trace_id, span_id)` of each link, in hex.
    pub links: Vec<(String, String)>,
    /// Names of the span's events, in order.
    pub events: Vec<String>,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
}

impl RecvSpan {
    pub fn attr(&self, k: &str) -> Option<&str> {
        self.attrs.get(k).map(String::as_str)
    }

    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_empty()
    }
}

/// One received log record, flattened for assertions.
#[derive(Debug, Clone, PartialEq)]
pub struct RecvLog {
    /// The body stringified (see [`stringify`]); `""` if none.
    pub body: String,
    pub severity_text: String,
    pub severity_number: i32,
    /// `""` if the record carries no trace context.
    pub trace_id: String,
    pub span_id: String,
    pub event_name: String,
    pub attrs: BTreeMap<String, String>,
    pub resource: BTreeMap<String, String>,
    /// Instrumentation scope name.
    pub scope: String,
    pub time_unix_nano: u64,
}

impl RecvLog {
    pub fn attr(&self, k: &str) -> Option<&str> {
        self.attrs.get(k).map(String::as_str)
    }
}

/// One received metric (one per `Metric` message, so a metric exported
/// twice shows up twice).
#[derive(Debug, Clone, PartialEq)]
pub struct RecvMetric {
    pub name: String,
    pub description: String,
    pub unit: String,
    /// "gauge", "sum", "histogram", "exponential_histogram", "summary" or "".
    pub kind: &'static str,
    pub data_points: usize,
    pub resource: BTreeMap<String, String>,
    pub scope: String,
}

#[derive(Default)]
struct Store {
    spans: Vec<RecvSpan>,
    logs: Vec<RecvLog>,
    metrics: Vec<RecvMetric>,
    requests: usize,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Store>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panicking test thread must not hide what arrived from the others.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add_traces(&self, req: ExportTraceServiceRequest) {
        let mut spans = Vec::new();
        for rs in req.resource_spans {
            let resource = resource_attrs(rs.resource.as_ref());
            for ss in rs.scope_spans {
                let scope = ss.scope.map(|s| s.name).unwrap_or_default();
                for s in ss.spans {
                    let status = s.status.unwrap_or_default();
                    spans.push(RecvSpan {
                        name: s.name,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        kind: s.kind,
                        attrs: attrs(&s.attributes),
                        status_code: status.code,
                        status_message: status.message,
                        resource: resource.clone(),
                        scope: scope.clone(),
                        links: s
                            .links
                            .iter()
                            .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                            .collect(),
                        events: s.events.into_iter().map(|e| e.name).collect(),
                        start_unix_nano: s.start_time_unix_nano,
                        end_unix_nano: s.end_time_unix_nano,
                    });
                }
            }
        }
        let mut store = self.lock();
        store.requests += 1;
        store.spans.extend(spans);
    }

    fn add_logs(&self, req: ExportLogsServiceRequest) {
        let mut logs = Vec::new();
        for rl in req.resource_logs {
            let resource = resource_attrs(rl.resource.as_ref());
            for sl in rl.scope_logs {
                let scope = sl.scope.map(|s| s.name).unwrap_or_default();
                for r in sl.log_records {
                    logs.push(RecvLog {
                        body: r.body.as_ref().map(stringify).unwrap_or_default(),
                        severity_text: r.severity_text,
                        severity_number: r.severity_number,
                        trace_id: hex(&r.trace_id),
                        span_id: hex(&r.span_id),
                        event_name: r.event_name,
                        attrs: attrs(&r.attributes),
                        resource: resource.clone(),
                        scope: scope.clone(),
                        time_unix_nano: r.time_unix_nano,
                    });
                }
            }
        }
        let mut store = self.lock();
        store.requests += 1;
        store.logs.extend(logs);
    }

    fn add_metrics(&self, req: ExportMetricsServiceRequest) {
        let mut metrics = Vec::new();
        for rm in req.resource_metrics {
            let resource = resource_attrs(rm.resource.as_ref());
            for sm in rm.scope_metrics {
                let scope = sm.scope.map(|s| s.name).unwrap_or_default();
                for m in sm.metrics {
                    let (kind, data_points) = match &m.data {
                        Some(Data::Gauge(g)) => ("gauge", g.data_points.len()),
                        Some(Data::Sum(s)) => ("sum", s.data_points.len()),
                        Some(Data::Histogram(h)) => ("histogram", h.data_points.len()),
                        Some(Data::ExponentialHistogram(h)) => {
                            ("exponential_histogram", h.data_points.len())
                        }
                        Some(Data::Summary(s)) => ("summary", s.data_points.len()),
                        None => ("", 0),
                    };
                    metrics.push(RecvMetric {
                        name: m.name,
                        description: m.description,
                        unit: m.unit,
                        kind,
                        data_points,
                        resource: resource.clone(),
                        scope: scope.clone(),
                    });
                }
            }
        }
        let mut store = self.lock();
        store.requests += 1;
        store.metrics.extend(metrics);
    }
}

/// Lowercase hex; `""` for no bytes (e.g. the parent of a root span).
fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Strings as they are; ints, doubles and bools via `to_string`; bytes as
/// lowercase hex; arrays as `[a, b]`; key-value lists as `{k: v, ...}`;
/// an empty value as `""`.
pub fn stringify(v: &AnyValue) -> String {
    match &v.value {
        None => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => hex(b),
        Some(Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(stringify).collect();
            format!("[{}]", items.join(", "))
        }
        Some(Value::KvlistValue(kv)) => {
            let items: Vec<String> = kv
                .values
                .iter()
                .map(|kv| {
                    let v = kv.value.as_ref().map(stringify).unwrap_or_default();
                    format!("{}: {v}", kv.key)
                })
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        // Profiles-only; other signals must treat it as absent.
        Some(Value::StringValueStrindex(_)) => String::new(),
    }
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let v = kv.value.as_ref().map(stringify).unwrap_or_default();
            (kv.key.clone(), v)
        })
        .collect()
}

fn resource_attrs(r: Option<&Resource>) -> BTreeMap<String, String> {
    r.map(|r| attrs(&r.attributes)).unwrap_or_default()
}

// ---------------------------------------------------------------- gRPC

#[derive(Clone)]
struct GrpcSink(Shared);

#[tonic::async_trait]
impl TraceService for GrpcSink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.add_traces(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for GrpcSink {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.0.add_logs(request.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for GrpcSink {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.add_metrics(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

// ---------------------------------------------------------------- HTTP

mod http {
    use actix_web::http::header::{HeaderValue, CONTENT_TYPE};
    use actix_web::{web, HttpRequest, HttpResponse};
    use prost::Message;
    use serde::de::DeserializeOwned;
    use serde::Serialize;

    use super::*;

    const PROTOBUF: &str = "application/x-protobuf";
    const JSON: &str = "application/json";

    fn is_json(req: &HttpRequest) -> bool {
        req.headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.trim_start().starts_with(JSON))
    }

    /// Decodes a request in the encoding its Content-Type names, and
    /// answers with an empty response in the same encoding.
    fn handle<Req, Resp>(req: &HttpRequest, body: &[u8], store: impl FnOnce(Req)) -> HttpResponse
    where
        Req: Message + Default + DeserializeOwned,
        Resp: Message + Default + Serialize,
    {
        if is_json(req) {
            match serde_json::from_slice::<Req>(body) {
                Ok(r) => {
                    store(r);
                    HttpResponse::Ok()
                        .insert_header((CONTENT_TYPE, HeaderValue::from_static(JSON)))
                        .body(serde_json::to_vec(&Resp::default()).unwrap())
                }
                Err(e) => HttpResponse::BadRequest().body(format!("bad OTLP/JSON: {e}")),
            }
        } else {
            match Req::decode(body) {
                Ok(r) => {
                    store(r);
                    HttpResponse::Ok()
                        .insert_header((CONTENT_TYPE, HeaderValue::from_static(PROTOBUF)))
                        .body(Resp::default().encode_to_vec())
                }
                Err(e) => HttpResponse::BadRequest().body(format!("bad OTLP/protobuf: {e}")),
            }
        }
    }

    pub(super) async fn traces(
        shared: web::Data<Shared>,
        req: HttpRequest,
        body: web::Bytes,
    ) -> HttpResponse {
        handle::<ExportTraceServiceRequest, ExportTraceServiceResponse>(&req, &body, |r| {
            shared.add_traces(r)
        })
    }

    pub(super) async fn logs(
        shared: web::Data<Shared>,
        req: HttpRequest,
        body: web::Bytes,
    ) -> HttpResponse {
        handle::<ExportLogsServiceRequest, ExportLogsServiceResponse>(&req, &body, |r| {
            shared.add_logs(r)
        })
    }

    pub(super) async fn metrics(
        shared: web::Data<Shared>,
        req: HttpRequest,
        body: web::Bytes,
    ) -> HttpResponse {
        handle::<ExportMetricsServiceRequest, ExportMetricsServiceResponse>(&req, &body, |r| {
            shared.add_metrics(r)
        })
    }
}

// ---------------------------------------------------------------- Receiver

enum Stopper {
    Grpc(Option<tokio::sync::oneshot::Sender<()>>),
    Http(actix_web::dev::ServerHandle),
}

/// A running OTLP receiver. Dropping it stops the server and joins its
/// thread.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Shared,
    stopper: Stopper,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// OTLP/gRPC on `127.0.0.1:0`; point a tonic exporter at
    /// [`Receiver::endpoint`].
    pub fn start_grpc() -> Receiver {
        let shared = Shared::default();
        let sink = GrpcSink(shared.clone());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("otlp-grpc-receiver".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("receiver runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind gRPC receiver");
                    addr_tx.send(listener.local_addr().unwrap()).unwrap();
                    let serve = tonic::transport::Server::builder()
                        .add_service(TraceServiceServer::new(sink.clone()))
                        .add_service(LogsServiceServer::new(sink.clone()))
                        .add_service(MetricsServiceServer::new(sink))
                        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
                    // Dropping `serve` on stop closes every connection at
                    // once; a graceful shutdown would wait for clients.
                    tokio::select! {
                        r = serve => r.expect("gRPC receiver"),
                        _ = stop_rx => {}
                    }
                });
            })
            .expect("spawn gRPC receiver thread");
        let addr = addr_rx.recv().expect("gRPC receiver started");
        Receiver {
            addr,
            shared,
            stopper: Stopper::Grpc(Some(stop_tx)),
            thread: Some(thread),
        }
    }

    /// OTLP/HTTP on `127.0.0.1:0`: `POST /v1/traces`, `/v1/logs`,
    /// `/v1/metrics`, protobuf or JSON. Point an HTTP exporter at
    /// `format!("{}/v1/traces", r.endpoint())`.
    pub fn start_http() -> Receiver {
        let shared = Shared::default();
        let data = actix_web::web::Data::new(shared.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind HTTP receiver");
        let addr = listener.local_addr().unwrap();
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("otlp-http-receiver".into())
            .spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    use actix_web::{web, App, HttpServer};
                    let server = HttpServer::new(move || {
                        App::new()
                            .app_data(data.clone())
                            .app_data(web::PayloadConfig::new(64 << 20))
                            .route("/v1/traces", web::post().to(http::traces))
                            .route("/v1/logs", web::post().to(http::logs))
                            .route("/v1/metrics", web::post().to(http::metrics))
                    })
                    .workers(1)
                    .disable_signals()
                    .shutdown_timeout(0)
                    .listen(listener)
                    .expect("listen HTTP receiver")
                    .run();
                    handle_tx.send(server.handle()).unwrap();
                    server.await.expect("HTTP receiver");
                });
            })
            .expect("spawn HTTP receiver thread");
        let handle = handle_rx.recv().expect("HTTP receiver started");
        Receiver {
            addr,
            shared,
            stopper: Stopper::Http(handle),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<RecvSpan> {
        self.shared.lock().spans.clone()
    }

    pub fn logs(&self) -> Vec<RecvLog> {
        self.shared.lock().logs.clone()
    }

    pub fn metrics(&self) -> Vec<RecvMetric> {
        self.shared.lock().metrics.clone()
    }

    /// Export requests received so far (all signals).
    pub fn requests(&self) -> usize {
        self.shared.lock().requests
    }

    /// Forgets everything received so far.
    pub fn clear(&self) {
        *self.shared.lock() = Store::default();
    }

    /// Polls every 50 ms until `pred` holds for the spans received so far,
    /// and returns them; panics with a dump of what arrived on timeout.
    pub async fn wait_for_spans(
        &self,
        pred: impl Fn(&[RecvSpan]) -> bool,
        timeout: Duration,
    ) -> Vec<RecvSpan> {
        self.wait_for("spans", Self::spans, pred, timeout).await
    }

    /// Like [`Receiver::wait_for_spans`], for log records.
    pub async fn wait_for_logs(
        &self,
        pred: impl Fn(&[RecvLog]) -> bool,
        timeout: Duration,
    ) -> Vec<RecvLog> {
        self.wait_for("logs", Self::logs, pred, timeout).await
    }

    /// Like [`Receiver::wait_for_spans`], for metrics.
    pub async fn wait_for_metrics(
        &self,
        pred: impl Fn(&[RecvMetric]) -> bool,
        timeout: Duration,
    ) -> Vec<RecvMetric> {
        self.wait_for("metrics", Self::metrics, pred, timeout).await
    }

    async fn wait_for<T: std::fmt::Debug>(
        &self,
        what: &str,
        get: fn(&Self) -> Vec<T>,
        pred: impl Fn(&[T]) -> bool,
        timeout: Duration,
    ) -> Vec<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let items = get(self);
            if pred(&items) {
                return items;
            }
            if Instant::now() >= deadline {
                panic!(
                    "OTLP receiver at {}: no matching {what} within {timeout:?}; \
                     {} export request(s), {} {what} arrived: {items:#?}",
                    self.addr,
                    self.requests(),
                    items.len(),
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        match &mut self.stopper {
            Stopper::Grpc(tx) => {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
            }
            // The stop command is sent when `stop` is called; the returned
            // future only waits for completion, which joining covers.
            Stopper::Http(handle) => drop(handle.stop(false)),
        }
        if let Some(thread) = self.thread.take() {
            // Don't turn a failing test's panic into an abort.
            if thread.join().is_err() && !std::thread::panicking() {
                panic!("OTLP receiver thread panicked");
            }
        }
    }
}

// ---------------------------------------------------------------- self-test

#[cfg(test)]
mod tests {
    use super::*;

    use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _, Severity};
    use opentelemetry::trace::{
        Span as _, SpanContext, SpanKind, Status, TraceContextExt as _, Tracer as _,
        TracerProvider as _,
    };
    use opentelemetry::KeyValue as OtelKv;
    use opentelemetry_otlp::{Protocol, WithExportConfig as _};
    use opentelemetry_sdk::logs::SdkLoggerProvider;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use opentelemetry_sdk::Resource;

    const WAIT: Duration = Duration::from_secs(10);

    fn resource() -> Resource {
        Resource::builder()
            .with_service_name("otlp-selftest")
            .with_attribute(OtelKv::new("deployment.environment.name", "test"))
            .build()
    }

    /// Emits a root span with a child (which links to the root), ends both
    /// and shuts the provider down; returns the root's trace id in hex.
    /// Runs on a blocking thread: the simple processor `block_on`s every
    /// export on the thread that ends the span.
    fn emit_spans(provider: SdkTracerProvider) -> String {
        let tracer = provider.tracer("selftest-scope");
        let root = tracer
            .span_builder("root-op")
            .with_kind(SpanKind::Server)
            .with_attributes([
                OtelKv::new("http.request.method", "GET"),
                OtelKv::new("http.response.status_code", 200_i64),
                OtelKv::new("ratio", 0.5),
                OtelKv::new("ok", true),
            ])
            .start(&tracer);
        let root_ctx: SpanContext = root.span_context().clone();
        let cx = opentelemetry::Context::current_with_span(root);
        let mut child = tracer
            .span_builder("child-op")
            .with_kind(SpanKind::Client)
            .with_links(vec![opentelemetry::trace::Link::with_context(
                root_ctx.clone(),
            )])
            .start_with_context(&tracer, &cx);
        child.add_event("something happened", vec![]);
        child.set_status(Status::error("boom"));
        child.end();
        cx.span().end();
        provider.shutdown().expect("tracer provider shutdown");
        root_ctx.trace_id().to_string()
    }

    fn check_spans(spans: &[RecvSpan], trace_id: &str) {
        let root = spans.iter().find(|s| s.name == "root-op").unwrap();
        let child = spans.iter().find(|s| s.name == "child-op").unwrap();
        assert_eq!(root.trace_id, trace_id);
        assert_eq!(root.trace_id.len(), 32);
        assert_eq!(root.span_id.len(), 16);
        assert!(root.is_root());
        assert_eq!(root.kind, 2, "server");
        assert_eq!(root.attr("http.request.method"), Some("GET"));
        assert_eq!(root.attr("http.response.status_code"), Some("200"));
        assert_eq!(root.attr("ratio"), Some("0.5"));
        assert_eq!(root.attr("ok"), Some("true"));
        assert_eq!(root.scope, "selftest-scope");
        assert_eq!(
            root.resource.get("service.name").map(String::as_str),
            Some("otlp-selftest")
        );
        assert_eq!(
            root.resource
                .get("deployment.environment.name")
                .map(String::as_str),
            Some("test")
        );
        assert!(root.start_unix_nano > 0 && root.end_unix_nano >= root.start_unix_nano);

        assert_eq!(child.trace_id, trace_id);
        assert_eq!(child.parent_span_id, root.span_id);
        assert_eq!(child.kind, 3, "client");
        assert_eq!(child.status_code, 2, "error");
        assert_eq!(child.status_message, "boom");
        assert_eq!(
            child.links,
            vec![(root.trace_id.clone(), root.span_id.clone())]
        );
        assert_eq!(child.events, vec!["something happened".to_string()]);
    }

    /// Emits one log record inside a made-up trace context.
    fn emit_log(provider: SdkLoggerProvider) {
        let logger = provider.logger("selftest-logs");
        let mut rec = logger.create_log_record();
        rec.set_body("hello receiver".into());
        rec.set_severity_text("WARN");
        rec.set_severity_number(Severity::Warn);
        rec.add_attribute("team", "alpha");
        rec.add_attribute("count", 3_i64);
        rec.set_trace_context(
            opentelemetry::trace::TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            opentelemetry::trace::SpanId::from_hex("b7ad6b7169203331").unwrap(),
            None,
        );
        logger.emit(rec);
        provider.shutdown().expect("logger provider shutdown");
    }

    fn check_logs(logs: &[RecvLog]) {
        let log = &logs[0];
        assert_eq!(log.body, "hello receiver");
        assert_eq!(log.severity_text, "WARN");
        assert_eq!(log.severity_number, Severity::Warn as i32);
        assert_eq!(log.trace_id, "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(log.span_id, "b7ad6b7169203331");
        assert_eq!(log.attr("team"), Some("alpha"));
        assert_eq!(log.attr("count"), Some("3"));
        assert_eq!(log.scope, "selftest-logs");
        assert_eq!(
            log.resource.get("service.name").map(String::as_str),
            Some("otlp-selftest")
        );
    }

    /// Runs `f` on a plain std thread (the reqwest-blocking client must not
    /// run on a runtime thread) and awaits it without blocking the runtime.
    async fn on_std_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.await.expect("std thread panicked")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grpc_receives_spans_from_tonic_exporter() {
        let receiver = Receiver::start_grpc();
        // The tonic exporter must be built inside a Tokio runtime.
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(receiver.endpoint())
            .with_timeout(Duration::from_secs(5))
            .build()
            .expect("tonic span exporter");
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .with_resource(resource())
            .build();
        let trace_id = tokio::task::spawn_blocking(move || emit_spans(provider))
            .await
            .unwrap();

        let spans = receiver.wait_for_spans(|s| s.len() >= 2, WAIT).await;
        assert_eq!(spans.len(), 2, "{spans:#?}");
        // Simple processor: one export request per span.
        assert_eq!(receiver.requests(), 2);
        check_spans(&spans, &trace_id);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn http_receives_spans_from_http_exporter() {
        let receiver = Receiver::start_http();
        let endpoint = format!("{}/v1/traces", receiver.endpoint());
        let trace_id = on_std_thread(move || {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(endpoint)
                .with_timeout(Duration::from_secs(5))
                .build()
                .expect("http span exporter");
            // Batch processor this time: both spans in one request.
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource())
                .build();
            emit_spans(provider)
        })
        .await;

        let spans = receiver.wait_for_spans(|s| s.len() >= 2, WAIT).await;
        assert_eq!(spans.len(), 2, "{spans:#?}");
        assert_eq!(receiver.requests(), 1);
        check_spans(&spans, &trace_id);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grpc_receives_logs_from_tonic_exporter() {
        let receiver = Receiver::start_grpc();
        let exporter = opentelemetry_otlp::LogExporter::builder()
            .with_tonic()
            .with_endpoint(receiver.endpoint())
            .with_timeout(Duration::from_secs(5))
            .build()
            .expect("tonic log exporter");
        let provider = SdkLoggerProvider::builder()
            .with_simple_exporter(exporter)
            .with_resource(resource())
            .build();
        tokio::task::spawn_blocking(move || emit_log(provider))
            .await
            .unwrap();

        let logs = receiver.wait_for_logs(|l| !l.is_empty(), WAIT).await;
        assert_eq!(logs.len(), 1, "{logs:#?}");
        check_logs(&logs);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn http_receives_logs_from_http_exporter() {
        let receiver = Receiver::start_http();
        let endpoint = format!("{}/v1/logs", receiver.endpoint());
        on_std_thread(move || {
            let exporter = opentelemetry_otlp::LogExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(endpoint)
                .with_timeout(Duration::from_secs(5))
                .build()
                .expect("http log exporter");
            let provider = SdkLoggerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource())
                .build();
            emit_log(provider)
        })
        .await;

        let logs = receiver.wait_for_logs(|l| !l.is_empty(), WAIT).await;
        assert_eq!(logs.len(), 1, "{logs:#?}");
        check_logs(&logs);
    }

    /// OTLP/JSON as the spec writes it (hex ids, 64-bit ints as strings),
    /// and the HTTP status / content type of both encodings.
    #[tokio::test]
    async fn http_accepts_json_and_rejects_garbage() {
        let receiver = Receiver::start_http();
        let client = reqwest::Client::new();
        let body = serde_json::json!({
            "resourceSpans": [{
                "resource": {"attributes": [
                    {"key": "service.name", "value": {"stringValue": "json-svc"}}
                ]},
                "scopeSpans": [{
                    "scope": {"name": "json-scope"},
                    "spans": [{
                        "traceId": "5b8efff798038103d269b633813fc60c",
                        "spanId": "eee19b7ec3c1b174",
                        "parentSpanId": "eee19b7ec3c1b173",
                        "name": "json-op",
                        "kind": 2,
                        "startTimeUnixNano": "1544712660000000000",
                        "endTimeUnixNano": "1544712661000000000",
                        "attributes": [
                            {"key": "n", "value": {"intValue": "42"}},
                            {"key": "s", "value": {"stringValue": "x"}}
                        ],
                        "status": {"code": 1}
                    }]
                }]
            }]
        });
        let resp = client
            .post(format!("{}/v1/traces", receiver.endpoint()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "application/json"
        );

        let spans = receiver.wait_for_spans(|s| !s.is_empty(), WAIT).await;
        let s = &spans[0];
        assert_eq!(s.name, "json-op");
        assert_eq!(s.trace_id, "5b8efff798038103d269b633813fc60c");
        assert_eq!(s.span_id, "eee19b7ec3c1b174");
        assert_eq!(s.parent_span_id, "eee19b7ec3c1b173");
        assert_eq!(s.attr("n"), Some("42"));
        assert_eq!(s.attr("s"), Some("x"));
        assert_eq!(s.status_code, 1);
        assert_eq!(s.start_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(s.scope, "json-scope");
        assert_eq!(
            s.resource.get("service.name").map(String::as_str),
            Some("json-svc")
        );

        let resp = client
            .post(format!("{}/v1/logs", receiver.endpoint()))
            .header("content-type", "application/x-protobuf")
            .body(vec![0xff_u8, 0xff, 0xff])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);

        let resp = client
            .post(format!("{}/v1/logs", receiver.endpoint()))
            .header("content-type", "application/x-protobuf")
            .body(Vec::new())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "application/x-protobuf"
        );
        assert_eq!(receiver.requests(), 2);
    }

    #[tokio::test]
    #[should_panic(expected = "no matching spans within 200ms; 0 export request(s), 0 spans")]
    async fn wait_for_panics_with_a_dump_on_timeout() {
        let receiver = Receiver::start_grpc();
        receiver
            .wait_for_spans(|s| !s.is_empty(), Duration::from_millis(200))
            .await;
    }

    #[test]
    fn stringify_renders_every_value_kind() {
        use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
        let v = |value| AnyValue { value: Some(value) };
        assert_eq!(stringify(&v(Value::StringValue("a".into()))), "a");
        assert_eq!(stringify(&v(Value::IntValue(-7))), "-7");
        assert_eq!(stringify(&v(Value::DoubleValue(1.25))), "1.25");
        assert_eq!(stringify(&v(Value::BoolValue(false))), "false");
        assert_eq!(stringify(&v(Value::BytesValue(vec![0, 171]))), "00ab");
        assert_eq!(stringify(&AnyValue { value: None }), "");
        let arr = v(Value::ArrayValue(ArrayValue {
            values: vec![v(Value::IntValue(1)), v(Value::StringValue("b".into()))],
        }));
        assert_eq!(stringify(&arr), "[1, b]");
        let kv = v(Value::KvlistValue(KeyValueList {
            values: vec![KeyValue {
                key: "k".into(),
                value: Some(v(Value::BoolValue(true))),
                ..Default::default()
            }],
        }));
        assert_eq!(stringify(&kv), "{k: true}");
    }
}

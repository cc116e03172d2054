//! Every Prometheus metric opswire exports, registered in one registry per
//! application (so tests running several servers in one process do not
//! share counters). Label values are bounded: teams come from the config,
//! codes and types from fixed sets; never a session id or a raw path.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets for per-message work and delivery (seconds).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Subscriber counts per publish.
const FANOUT_BUCKETS: &[f64] = &[0.0, 1.0, 10.0, 100.0, 1000.0, 5000.0, 10000.0, 20000.0];

pub struct Metrics {
    registry: Registry,
    pub connections_total: IntCounterVec,
    pub active_connections: IntGaugeVec,
    pub disconnections_total: IntCounterVec,
    pub messages_total: IntCounterVec,
    pub message_duration: Histogram,
    pub errors_total: IntCounterVec,
    pub frames_published: IntCounterVec,
    pub frames_dropped: IntCounterVec,
    pub slow_consumer_closes: IntCounter,
    pub fanout: HistogramVec,
    pub history_frames: IntGaugeVec,
    pub sampler_duration: Histogram,
    pub sse_active: IntGauge,
    pub open_connections: IntGauge,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
            // Names are unique constants of this module; registering twice
            // in a fresh registry cannot happen.
            r.register(Box::new(c.clone()))
                .expect("metric registers once");
            c
        }
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let m = Metrics {
            connections_total: counter_vec(
                "websocket_connections_total",
                "WebSocket and SSE connection attempts by outcome (accepted, rejected_limit, rejected_auth, rejected_origin).",
                &["status"],
            ),
            active_connections: gauge_vec(
                "websocket_active_connections",
                "Connections currently subscribed to each team.",
                &["team"],
            ),
            disconnections_total: counter_vec(
                "websocket_disconnections_total",
                "Closed WebSocket connections by close code.",
                &["code"],
            ),
            messages_total: counter_vec(
                "websocket_messages_total",
                "WebSocket messages by direction (in, out) and type (op or frame type).",
                &["direction", "type"],
            ),
            message_duration: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "websocket_message_duration_seconds",
                        "Time to handle one inbound WebSocket message.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                )
                .expect("valid metric"),
            ),
            errors_total: counter_vec(
                "websocket_errors_total",
                "Error frames sent, by error code.",
                &["code"],
            ),
            frames_published: counter_vec(
                "opswire_frames_published_total",
                "Frames published by the hub, by stream.",
                &["stream"],
            ),
            frames_dropped: counter_vec(
                "opswire_frames_dropped_total",
                "Frames a subscriber did not get, by stream and reason (conflated: replaced by a newer metrics frame; lagged: queue overflow).",
                &["stream", "reason"],
            ),
            slow_consumer_closes: reg(
                &registry,
                IntCounter::new(
                    "opswire_slow_consumer_closes_total",
                    "Subscribers closed with 4008 because their queue overflowed.",
                )
                .expect("valid metric"),
            ),
            fanout: reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "opswire_fanout_subscribers",
                        "Subscribers a published frame was queued for.",
                    )
                    .buckets(FANOUT_BUCKETS.to_vec()),
                    &["stream"],
                )
                .expect("valid metric"),
            ),
            history_frames: gauge_vec(
                "opswire_history_frames",
                "Frames held in the resume history, per team and stream.",
                &["team", "stream"],
            ),
            sampler_duration: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "opswire_sampler_duration_seconds",
                        "Time to take one sample of the local host.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                )
                .expect("valid metric"),
            ),
            sse_active: reg(
                &registry,
                IntGauge::new("opswire_sse_active_connections", "Open SSE streams.")
                    .expect("valid metric"),
            ),
            open_connections: reg(
                &registry,
                IntGauge::new(
                    "opswire_open_connections",
                    "Open WebSocket and SSE connections (counted against limits.max_connections).",
                )
                .expect("valid metric"),
            ),
            http_requests: counter_vec(
                "opswire_http_requests_total",
                "HTTP requests by route and status code.",
                &["route", "status"],
            ),
            http_duration: reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "opswire_http_request_duration_seconds",
                        "HTTP request durations by route (until the response head).",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["route"],
                )
                .expect("valid metric"),
            ),
            registry,
        };
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            let _ = m.registry.register(Box::new(pc));
        }
        m
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

//! Every Prometheus metric opswire exports, registered in one registry per
//! application (so tests running several servers in one process do not
//! share counters). Label values are bounded: teams come from the config,
//! codes and types from fixed sets; never a session id or a raw path.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::protocol::{HostSnapshot, Stream};

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
    /// Metrics frames the fan-out wrote straight to a WebSocket.
    pub frames_direct: IntCounter,
    pub fanout: HistogramVec,
    pub history_frames: IntGaugeVec,
    pub sampler_duration: Histogram,
    pub sse_active: IntGauge,
    /// `opswire_compressed_connections{transport="ws"}`: WebSocket
    /// connections that negotiated permessage-deflate.
    pub compressed_ws: IntGauge,
    /// `opswire_compressed_connections{transport="sse"}`: SSE streams
    /// answered with `Content-Encoding: gzip`.
    pub compressed_sse: IntGauge,
    pub open_connections: IntGauge,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    /// Frame `ts` → socket write, per stream (index = `Stream as usize`).
    pub delivery_lag: [Histogram; 3],
    /// `websocket_messages_total{direction="out",type="data"}`, resolved
    /// once: the fan-out path bumps it for every batch it writes.
    pub data_frames_out: IntCounter,
    pub ingest_total: IntCounterVec,
    pub ingest_rejected: IntCounterVec,
    pub alerts_unrouted: IntCounterVec,
    /// Firing alerts per team (capped by `limits.max_firing_alerts`).
    pub alerts_firing: IntGaugeVec,
    /// Firing alerts dropped from a full set, oldest first.
    pub alerts_evicted: IntCounterVec,
    /// Firing alerts resolved because their `endsAt` passed.
    pub alerts_expired: IntCounterVec,
    /// HTTP connections the dispatcher dropped for the client's fault
    /// (a malformed request head, a body cut short).
    pub http_client_errors: IntCounter,
    pub otlp_export_failures: IntCounterVec,
    /// Team records (logs and alert changes for Loki) queued for export,
    /// and dropped because the export queue was full.
    pub team_log_records: IntCounterVec,
    /// Reloads of the TLS certificate after its files changed, by
    /// `outcome` (`ok`, `failed`: the previous one is kept).
    pub tls_reloads: IntCounterVec,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: IntCounter,
    /// The cluster broker's health (`docs/cluster.md`).
    pub broker: BrokerMetrics,
    host_cpu: GaugeVec,
    host_load1: GaugeVec,
    host_memory_used: GaugeVec,
    host_memory_total: GaugeVec,
    host_swap_used: GaugeVec,
    host_processes: GaugeVec,
    host_uptime: GaugeVec,
    host_sampled_at: GaugeVec,
    host_disk_used: GaugeVec,
    host_disk_total: GaugeVec,
    host_net_rx: GaugeVec,
    host_net_tx: GaugeVec,
}

/// The cluster broker's health on this node.
pub struct BrokerMetrics {
    pub up: IntGauge,
    pub round_trip: HistogramVec,
    pub publishes: IntCounterVec,
    pub in_flight: IntGauge,
    pub gap_fills: IntCounter,
    pub gap_frames: IntCounter,
    pub frames_lost: IntCounter,
    pub notification_lag: Histogram,
    pub reconnects: IntCounter,
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
        let host_gauge = |name: &str, help: &str, extra: &[&str]| {
            let mut labels = vec!["team", "host"];
            labels.extend_from_slice(extra);
            reg(
                &registry,
                GaugeVec::new(Opts::new(name, help), &labels).expect("valid metric"),
            )
        };
        let delivery_lag_vec = reg(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "opswire_delivery_lag_seconds",
                    "End-to-end delivery lag: from a live frame's `ts` to its write to the subscriber's socket, by stream.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["stream"],
            )
            .expect("valid metric"),
        );
        let messages_total = counter_vec(
            "websocket_messages_total",
            "WebSocket messages by direction (in, out) and type (op or frame type).",
            &["direction", "type"],
        );
        let compressed = gauge_vec(
            "opswire_compressed_connections",
            "Open connections whose frames go compressed, by transport (ws: permessage-deflate negotiated; sse: answered with Content-Encoding: gzip).",
            &["transport"],
        );
        let m = Metrics {
            compressed_ws: compressed.with_label_values(&["ws"]),
            compressed_sse: compressed.with_label_values(&["sse"]),
            data_frames_out: messages_total.with_label_values(&["out", "data"]),
            messages_total,
            delivery_lag: Stream::ALL.map(|s| delivery_lag_vec.with_label_values(&[s.as_str()])),
            ingest_total: counter_vec(
                "opswire_ingest_total",
                "Records accepted from sources, by source (ws, …) and stream.",
                &["source", "stream"],
            ),
            ingest_rejected: counter_vec(
                "opswire_ingest_rejected_total",
                "Records refused from sources, by source and reason.",
                &["source", "reason"],
            ),
                        alerts_unrouted: counter_vec(
                "opswire_alerts_unrouted_total",
                "Alerts sent to the default team because their team label was missing or unknown.",
                &["reason"],
            ),
            alerts_firing: gauge_vec(
                "opswire_alerts_firing",
                "Alerts firing now, per team (new subscribers get them all).",
                &["team"],
            ),
            alerts_evicted: counter_vec(
                "opswire_alerts_evicted_total",
                "Firing alerts dropped because the team held limits.max_firing_alerts (oldest first).",
                &["team"],
            ),
            alerts_expired: counter_vec(
                "opswire_alerts_expired_total",
                "Firing alerts resolved by opswire because their endsAt passed.",
                &["team"],
            ),
            http_client_errors: reg(
                &registry,
                IntCounter::new(
                    "opswire_http_client_errors_total",
                    "HTTP connections dropped for the client's fault (malformed request head, body cut short).",
                )
                .expect("valid metric"),
            ),
            tls_reloads: counter_vec(
                "opswire_tls_certificate_reloads_total",
                "Reloads of the TLS certificate after its files changed, by outcome (ok; failed: the files could not be used and the previous certificate is still served).",
                &["outcome"],
            ),
            tls_handshake_failures: reg(
                &registry,
                IntCounter::new(
                    "opswire_tls_handshake_failures_total",
                    "TLS handshakes on the listening port that failed or timed out (an untrusting client, plain HTTP sent to the TLS port, a scanner).",
                )
                .expect("valid metric"),
            ),
            broker: BrokerMetrics {
                up: reg(
                    &registry,
                    IntGauge::new(
                        "opswire_broker_up",
                        "1 while the broker is reachable (always 1 with the embedded in-memory broker), 0 while it is not.",
                    )
                    .expect("valid metric"),
                ),
                round_trip: reg(
                    &registry,
                    HistogramVec::new(
                        HistogramOpts::new(
                            "opswire_broker_round_trip_seconds",
                            "Round trip of calls to the broker, by operation (publish, read, sync, ping).",
                        )
                        .buckets(LATENCY_BUCKETS.to_vec()),
                        &["op"],
                    )
                    .expect("valid metric"),
                ),
                publishes: counter_vec(
                    "opswire_broker_publishes_total",
                    "Log and alert publishes sent to the broker, by result (ok, repeat: a de-duplicated alert, unavailable, busy: too many in flight).",
                    &["result"],
                ),
                in_flight: reg(
                    &registry,
                    IntGauge::new(
                        "opswire_broker_publishes_in_flight",
                        "Publishes waiting for the broker's answer (bounded by broker.max_in_flight).",
                    )
                    .expect("valid metric"),
                ),
                gap_fills: reg(
                    &registry,
                    IntCounter::new(
                        "opswire_broker_gap_fills_total",
                        "Times this node read frames from a stream it had not received live (catching up after a lost connection to the broker).",
                    )
                    .expect("valid metric"),
                ),
                gap_frames: reg(
                    &registry,
                    IntCounter::new(
                        "opswire_broker_gap_fill_frames_total",
                        "Frames this node read by filling gaps.",
                    )
                    .expect("valid metric"),
                ),
                frames_lost: reg(
                    &registry,
                    IntCounter::new(
                        "opswire_broker_frames_lost_total",
                        "Frames trimmed from a stream's history (or lost with an epoch) before this node could read them; its subscribers were told they lagged.",
                    )
                    .expect("valid metric"),
                ),
                notification_lag: reg(
                    &registry,
                    Histogram::with_opts(
                        HistogramOpts::new(
                            "opswire_broker_notification_lag_seconds",
                            "From a frame's append in the broker (its ts) to this node reading it.",
                        )
                        .buckets(LATENCY_BUCKETS.to_vec()),
                    )
                    .expect("valid metric"),
                ),
                reconnects: reg(
                    &registry,
                    IntCounter::new(
                        "opswire_broker_reconnects_total",
                        "Connections to the broker (re)established after the first.",
                    )
                    .expect("valid metric"),
                ),
            },
            otlp_export_failures: counter_vec(
                "opswire_otlp_export_failures_total",
                "Failed OTLP export requests, by signal (spans, logs, team_logs).",
                &["signal"],
            ),
            team_log_records: counter_vec(
                "opswire_team_log_records_total",
                "Team log records and alert changes exported over OTLP (for Loki), by result: queued, or dropped because the export queue was full.",
                &["result"],
            ),
            host_cpu: host_gauge("opswire_host_cpu_usage_percent", "CPU usage of a host, percent of all cores.", &[]),
            host_load1: host_gauge("opswire_host_load1", "1-minute load average of a host.", &[]),
            host_memory_used: host_gauge("opswire_host_memory_used_bytes", "Memory in use on a host.", &[]),
            host_memory_total: host_gauge("opswire_host_memory_total_bytes", "Memory of a host.", &[]),
            host_swap_used: host_gauge("opswire_host_swap_used_bytes", "Swap in use on a host.", &[]),
            host_processes: host_gauge("opswire_host_processes", "Processes on a host.", &[]),
            host_uptime: host_gauge("opswire_host_uptime_seconds", "Uptime of a host.", &[]),
            host_sampled_at: host_gauge(
                "opswire_host_last_sample_timestamp_seconds",
                "Unix time of a host's latest sample.",
                &[],
            ),
            host_disk_used: host_gauge("opswire_host_disk_used_bytes", "Disk space in use, per mount.", &["mount"]),
            host_disk_total: host_gauge("opswire_host_disk_total_bytes", "Disk size, per mount.", &["mount"]),
            host_net_rx: host_gauge(
                "opswire_host_network_receive_bytes_per_second",
                "Network receive rate, per interface.",
                &["iface"],
            ),
            host_net_tx: host_gauge(
                "opswire_host_network_transmit_bytes_per_second",
                "Network transmit rate, per interface.",
                &["iface"],
            ),
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
            frames_direct: reg(
                &registry,
                IntCounter::new(
                    "opswire_frames_direct_total",
                    "Metrics frames the fan-out wrote straight to a WebSocket subscriber's socket (the rest of `websocket_messages_total{direction=\"out\",type=\"data\"}` went through the connection's own writer: logs, alerts, and frames that found the subscriber backed up).",
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
        // The embedded broker is always there; cluster mode sets it.
        m.broker.up.set(1);
        for op in ["publish", "read", "sync", "ping"] {
            m.broker.round_trip.with_label_values(&[op]);
        }
        for result in ["ok", "repeat", "unavailable", "busy"] {
            m.broker.publishes.with_label_values(&[result]);
        }
        m
    }

    /// Sets the host gauges from a snapshot of `host` in `team`.
    /// The delivery lag of a frame put on the wire at `now_us` (unix µs),
    /// made at `ts`.
    pub fn observe_delivery(&self, stream: Stream, ts: i64, now_us: i64) {
        self.delivery_lag[stream as usize].observe((now_us - ts).max(0) as f64 / 1e6);
    }

    pub fn observe_host(&self, team: &str, snap: &HostSnapshot) {
        let l = [team, snap.host.as_str()];
        self.host_cpu
            .with_label_values(&l)
            .set(snap.cpu.usage_pct as f64);
        self.host_load1.with_label_values(&l).set(snap.cpu.load[0]);
        self.host_memory_used
            .with_label_values(&l)
            .set(snap.memory.used_bytes as f64);
        self.host_memory_total
            .with_label_values(&l)
            .set(snap.memory.total_bytes as f64);
        self.host_swap_used
            .with_label_values(&l)
            .set(snap.memory.swap_used_bytes as f64);
        self.host_processes
            .with_label_values(&l)
            .set(snap.processes as f64);
        self.host_uptime
            .with_label_values(&l)
            .set(snap.uptime_s as f64);
        self.host_sampled_at
            .with_label_values(&l)
            .set(snap.sampled_at as f64 / 1e6);
        for d in &snap.disks {
            let l = [team, snap.host.as_str(), d.mount.as_str()];
            self.host_disk_used
                .with_label_values(&l)
                .set(d.used_bytes as f64);
            self.host_disk_total
                .with_label_values(&l)
                .set(d.total_bytes as f64);
        }
        for n in &snap.network {
            let l = [team, snap.host.as_str(), n.iface.as_str()];
            self.host_net_rx.with_label_values(&l).set(n.rx_bytes_per_s);
            self.host_net_tx.with_label_values(&l).set(n.tx_bytes_per_s);
        }
    }

    /// Removes the gauges of a host that went stale, so label sets stay
    /// bounded by the hosts actually reporting.
    pub fn forget_host(&self, team: &str, host: &str, mounts: &[String], ifaces: &[String]) {
        let l = [team, host];
        for g in [
            &self.host_cpu,
            &self.host_load1,
            &self.host_memory_used,
            &self.host_memory_total,
            &self.host_swap_used,
            &self.host_processes,
            &self.host_uptime,
            &self.host_sampled_at,
        ] {
            let _ = g.remove_label_values(&l);
        }
        self.forget_parts(team, host, mounts, ifaces);
    }

    /// Removes the per-mount and per-interface series of a host.
    pub fn forget_parts(&self, team: &str, host: &str, mounts: &[String], ifaces: &[String]) {
        for m in mounts {
            let _ = self.host_disk_used.remove_label_values(&[team, host, m]);
            let _ = self.host_disk_total.remove_label_values(&[team, host, m]);
        }
        for i in ifaces {
            let _ = self.host_net_rx.remove_label_values(&[team, host, i]);
            let _ = self.host_net_tx.remove_label_values(&[team, host, i]);
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        for (signal, total) in crate::telemetry::export_failures() {
            let c = self.otlp_export_failures.with_label_values(&[signal]);
            c.inc_by(total.saturating_sub(c.get()));
        }
        let (queued, dropped) = crate::telemetry::team_logs::counts();
        for (result, total) in [("queued", queued), ("dropped", dropped)] {
            let c = self.team_log_records.with_label_values(&[result]);
            c.inc_by(total.saturating_sub(c.get()));
        }
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// One up on a gauge for as long as it lives (a connection's share of
/// `opswire_sse_active_connections`, `opswire_compressed_connections`).
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    pub fn inc(gauge: &IntGauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

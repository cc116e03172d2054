//! State shared by every handler and session of one running server.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus::IntGauge;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::hub::{Hub, TeamId};
use crate::metrics::Metrics;
use crate::time::now_micros;

pub struct AppState {
    pub config: Arc<Config>,
    pub hub: Hub,
    pub auth: Authenticator,
    pub metrics: Arc<Metrics>,
    /// Cancelled once, on SIGINT/SIGTERM (or by a test): every session
    /// closes with 1012 and the server stops accepting.
    pub shutdown: CancellationToken,
    pub connections: ConnectionLimiter,
    /// Unix µs of the last local sample (0 = none yet).
    pub last_sample_us: AtomicI64,
    /// The team of the local host.
    pub local_team: TeamId,
    pub local_host: String,
    /// Outbound HTTP (Alertmanager's API), with the configured timeout.
    pub http: reqwest::Client,
    draining: AtomicBool,
}

impl AppState {
    pub fn new(
        config: Arc<Config>,
        hub: Hub,
        auth: Authenticator,
        metrics: Arc<Metrics>,
        local_team: TeamId,
        local_host: String,
    ) -> AppState {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_millis(
                config.alertmanager.timeout_ms,
            ))
            .build()
            .unwrap_or_default();
        let connections =
            ConnectionLimiter::new(config.max_connections(), metrics.open_connections.clone());
        AppState {
            config,
            hub,
            auth,
            metrics,
            shutdown: CancellationToken::new(),
            connections,
            last_sample_us: AtomicI64::new(0),
            local_team,
            local_host,
            http,
            draining: AtomicBool::new(false),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed) || self.shutdown.is_cancelled()
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Why the server is not ready, if it is not.
    pub fn not_ready_reason(&self) -> Option<String> {
        if self.is_draining() {
            return Some("shutting down".into());
        }
        if self.config.sampler.enabled {
            let last = self.last_sample_us.load(Ordering::Relaxed);
            if last == 0 {
                return Some("sampler has not produced a sample yet".into());
            }
            let max_age_us = 3 * self.config.sampler.tick_ms as i64 * 1000 + 1_000_000;
            let age = now_micros() - last;
            if age > max_age_us {
                return Some(format!(
                    "sampler stalled: last sample {} ms ago",
                    age / 1000
                ));
            }
        }
        None
    }
}

/// Counts open WebSocket and SSE connections against `max_connections`.
pub struct ConnectionLimiter {
    open: Arc<AtomicUsize>,
    max: usize,
    gauge: IntGauge,
    /// Notified when the last connection closes.
    idle: Arc<Notify>,
}

/// One admitted connection; dropping it frees the slot.
pub struct ConnectionGuard {
    open: Arc<AtomicUsize>,
    gauge: IntGauge,
    idle: Arc<Notify>,
}

impl ConnectionLimiter {
    pub fn new(max: usize, gauge: IntGauge) -> ConnectionLimiter {
        ConnectionLimiter {
            open: Arc::new(AtomicUsize::new(0)),
            max,
            gauge,
            idle: Arc::new(Notify::new()),
        }
    }

    /// A slot, or None when `max` connections are open.
    pub fn try_acquire(&self) -> Option<ConnectionGuard> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        self.gauge.inc();
        Some(ConnectionGuard {
            open: self.open.clone(),
            gauge: self.gauge.clone(),
            idle: self.idle.clone(),
        })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Resolves once no connection is open.
    pub async fn closed(&self) {
        loop {
            let notified = self.idle.notified();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
        self.gauge.dec();
    }
}

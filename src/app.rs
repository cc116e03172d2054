//! State shared by every handler and session of one running server.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus::IntGauge;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::alertmanager::AlertmanagerClient;
use crate::auth::Authenticator;
use crate::budget::SubjectBudgets;
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
    /// The op budgets of token subjects, shared by their connections.
    pub subjects: SubjectBudgets,
    /// Unix µs of the last local sample (0 = none yet).
    pub last_sample_us: Arc<AtomicI64>,
    /// The team of the local host.
    pub local_team: TeamId,
    pub local_host: String,
    /// Alertmanager's API (silences).
    pub alertmanager: AlertmanagerClient,
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
        let alertmanager = AlertmanagerClient::new(&config.alertmanager);
        let connections = ConnectionLimiter::new(
            config.max_connections(),
            config.max_unauthenticated(),
            metrics.open_connections.clone(),
        );
        AppState {
            subjects: SubjectBudgets::new(&config.limits),
            config,
            hub,
            auth,
            metrics,
            shutdown: CancellationToken::new(),
            connections,
            last_sample_us: Arc::new(AtomicI64::new(0)),
            local_team,
            local_host,
            alertmanager,
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
        if let Some(why) = self.hub.unavailable() {
            return Some(why);
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

/// Counts open WebSocket and SSE connections against `max_connections`,
/// and, among them, the ones that have not authenticated yet against a
/// smaller share: clients without credentials can never hold every slot.
pub struct ConnectionLimiter {
    counts: Arc<Counts>,
    max: usize,
    max_unauthenticated: usize,
    gauge: IntGauge,
}

struct Counts {
    open: AtomicUsize,
    unauthenticated: AtomicUsize,
    /// Notified when the last connection closes.
    idle: Notify,
}

/// One admitted connection; dropping it frees the slot.
pub struct ConnectionGuard {
    counts: Arc<Counts>,
    gauge: IntGauge,
    /// Still counted among the unauthenticated.
    unauthenticated: bool,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every slot is taken.
    Full(usize),
    /// Every slot for unauthenticated connections is taken.
    Unauthenticated(usize),
}

impl Refused {
    pub fn message(self) -> String {
        match self {
            Refused::Full(n) => format!("connection limit reached ({n} connections)"),
            Refused::Unauthenticated(n) => format!(
                "too many connections waiting to authenticate ({n}); send the token with the upgrade (Authorization: Bearer)"
            ),
        }
    }
}

impl ConnectionLimiter {
    pub fn new(max: usize, max_unauthenticated: usize, gauge: IntGauge) -> ConnectionLimiter {
        ConnectionLimiter {
            counts: Arc::new(Counts {
                open: AtomicUsize::new(0),
                unauthenticated: AtomicUsize::new(0),
                idle: Notify::new(),
            }),
            max,
            max_unauthenticated,
            gauge,
        }
    }

    /// A slot for an authenticated connection.
    pub fn try_acquire(&self) -> Result<ConnectionGuard, Refused> {
        self.acquire(false)
    }

    /// A slot for a connection that has yet to authenticate: it also
    /// takes one of the `max_unauthenticated` until
    /// [`ConnectionGuard::authenticated`].
    pub fn try_acquire_unauthenticated(&self) -> Result<ConnectionGuard, Refused> {
        self.acquire(true)
    }

    fn acquire(&self, unauthenticated: bool) -> Result<ConnectionGuard, Refused> {
        let c = &self.counts;
        if unauthenticated {
            c.unauthenticated
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < self.max_unauthenticated).then_some(n + 1)
                })
                .map_err(|_| Refused::Unauthenticated(self.max_unauthenticated))?;
        }
        let admitted = c
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            if unauthenticated {
                c.unauthenticated.fetch_sub(1, Ordering::AcqRel);
            }
            return Err(Refused::Full(self.max));
        }
        self.gauge.inc();
        Ok(ConnectionGuard {
            counts: c.clone(),
            gauge: self.gauge.clone(),
            unauthenticated,
        })
    }

    pub fn open(&self) -> usize {
        self.counts.open.load(Ordering::Relaxed)
    }

    /// Whether slots are scarce: three quarters or more are taken (a
    /// connection then gets less time to authenticate).
    pub fn busy(&self) -> bool {
        self.open() * 4 >= self.max * 3
    }

    /// Resolves once no connection is open.
    pub async fn closed(&self) {
        loop {
            let notified = self.counts.idle.notified();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl ConnectionGuard {
    /// The connection authenticated: it no longer takes an
    /// unauthenticated slot.
    pub fn authenticated(&mut self) {
        if std::mem::take(&mut self.unauthenticated) {
            self.counts.unauthenticated.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.authenticated();
        if self.counts.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.counts.idle.notify_waiters();
        }
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthenticated_connections_get_their_share_only() {
        let l = ConnectionLimiter::new(4, 1, IntGauge::new("g", "g").unwrap());
        let mut pending = l.try_acquire_unauthenticated().unwrap();
        assert_eq!(
            l.try_acquire_unauthenticated().err(),
            Some(Refused::Unauthenticated(1))
        );
        // Authenticated clients still get the rest.
        let a = l.try_acquire().unwrap();
        let b = l.try_acquire().unwrap();
        assert!(l.busy());
        // Once it authenticates, its unauthenticated slot is free.
        pending.authenticated();
        let c = l.try_acquire_unauthenticated().unwrap();
        assert_eq!(l.try_acquire().err(), Some(Refused::Full(4)));
        drop((a, b, c, pending));
        assert_eq!(l.open(), 0);
        assert!(l.try_acquire_unauthenticated().is_ok());
    }
}

//! The connection to Redis that publishes and syncs share, and whether
//! it is up. One multiplexed connection carries every call of this
//! process (commands are pipelined on it); the blocking reads of the
//! streams have a connection of their own (`tail`).
//!
//! When a call fails for the connection's sake, the link goes down at
//! once (publishers are refused from then on, `/readyz` says why) and the
//! supervisor in `mod.rs` reconnects with backoff.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError};
use tokio::sync::Notify;

/// Why the link is down (or never came up).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("broker.url: {0}")]
    Url(String),
}

pub struct Link {
    client: Client,
    timeout: Duration,
    conn: Mutex<Option<MultiplexedConnection>>,
    up: AtomicBool,
    reason: Mutex<String>,
    /// Woken when a call finds the connection broken.
    pub broke: Notify,
    /// Host and port, for spans (never the password).
    pub server: (String, u16),
}

impl Link {
    pub fn new(url: &str, timeout: Duration) -> Result<Link, LinkError> {
        // The error text of a bad URL can echo it: say only what kind.
        let client = Client::open(url).map_err(|e| LinkError::Url(format!("{:?}", e.kind())))?;
        let server = match &client.get_connection_info().addr() {
            redis::ConnectionAddr::Tcp(h, p) => (h.clone(), *p),
            redis::ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port),
            other => (other.to_string(), 0),
        };
        Ok(Link {
            client,
            timeout,
            conn: Mutex::new(None),
            up: AtomicBool::new(false),
            reason: Mutex::new("broker unavailable: not connected yet".into()),
            broke: Notify::new(),
            server,
        })
    }

    /// A new connection; `response` bounds every call on it.
    pub async fn open(&self, response: Duration) -> Result<MultiplexedConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(response));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// The shared connection, while the link is up.
    pub fn get(&self) -> Option<MultiplexedConnection> {
        if !self.is_up() {
            return None;
        }
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Why publishing is refused now, if it is.
    pub fn down_reason(&self) -> Option<String> {
        if self.is_up() {
            return None;
        }
        Some(
            self.reason
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }

    /// Up, over `conn`.
    pub fn set_up(&self, conn: MultiplexedConnection) {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn);
        self.up.store(true, Ordering::Release);
    }

    /// Down, for `why` (shown to publishers and on `/readyz`).
    pub fn set_down(&self, why: String) {
        let was_up = self.up.swap(false, Ordering::AcqRel);
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) =
            format!("broker unavailable: {why}");
        if was_up {
            tracing::warn!(reason = %why, "lost the broker");
        }
        self.broke.notify_one();
    }

    /// Takes the link down if `e` says the connection is unusable (not
    /// for an error of one command).
    pub fn check(&self, e: &RedisError) {
        if is_connection_error(e) {
            self.set_down(e.to_string());
        }
    }
}

/// Whether `e` means the connection (not one command) failed.
pub fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

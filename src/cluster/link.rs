//! The connection to Redis that publishes and syncs share, and whether
//! it is up. One multiplexed connection carries every call of this
//! process (commands are pipelined on it); the blocking reads of the
//! streams have connections of their own (`tail`). A Redis Cluster is
//! reached the same way through redis-rs's cluster connection, which
//! routes each call to the shard of its key (a team's hash tag).
//!
//! When a call fails for the connection's sake, the link goes down at
//! once (publishers are refused from then on, `/readyz` says why) and the
//! supervisor in `mod.rs` reconnects with backoff.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, Value};
use tokio::sync::Notify;

/// Why the link is down (or never came up).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("broker.url: {0}")]
    Url(String),
}

/// One Redis, or a Redis Cluster (its seeds).
enum Backend {
    Single(Box<Client>),
    Cluster(Vec<String>),
}

/// A connection to either.
#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

pub struct Link {
    backend: Backend,
    timeout: Duration,
    conn: Mutex<Option<Conn>>,
    up: AtomicBool,
    reason: Mutex<String>,
    /// Woken when a call finds the connection broken.
    pub broke: Notify,
    /// Host and port, for spans (never the password).
    pub server: (String, u16),
}

impl Link {
    /// A link to one Redis (`urls` of one) or to a Redis Cluster (its
    /// seeds, `cluster`).
    pub fn new(urls: &[String], cluster: bool, timeout: Duration) -> Result<Link, LinkError> {
        // The error text of a bad URL can echo it: say only what kind.
        let bad = |e: RedisError| LinkError::Url(format!("{:?}", e.kind()));
        let first = urls
            .first()
            .ok_or_else(|| LinkError::Url("no address".into()))?;
        let info = Client::open(first.as_str()).map_err(bad)?;
        let server = match info.get_connection_info().addr() {
            redis::ConnectionAddr::Tcp(h, p) => (h.clone(), *p),
            redis::ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port),
            other => (other.to_string(), 0),
        };
        let backend = if cluster {
            cluster_client(urls, timeout, timeout).map_err(bad)?;
            Backend::Cluster(urls.to_vec())
        } else {
            Backend::Single(Box::new(info))
        };
        Ok(Link {
            backend,
            timeout,
            conn: Mutex::new(None),
            up: AtomicBool::new(false),
            reason: Mutex::new("broker unavailable: not connected yet".into()),
            broke: Notify::new(),
            server,
        })
    }

    /// Whether this is a Redis Cluster (a multi-key command may name the
    /// keys of one team only).
    pub fn is_cluster(&self) -> bool {
        matches!(self.backend, Backend::Cluster(_))
    }

    /// A new connection; `response` bounds every call on it.
    pub async fn open(&self, response: Duration) -> Result<Conn, RedisError> {
        match &self.backend {
            Backend::Single(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(response));
                let c = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                Ok(Conn::Single(c))
            }
            Backend::Cluster(seeds) => {
                let client = cluster_client(seeds, self.timeout, response)?;
                let c = client.get_async_connection().await?;
                Ok(Conn::Cluster(c))
            }
        }
    }

    /// The shared connection, while the link is up.
    pub fn get(&self) -> Option<Conn> {
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
    pub fn set_up(&self, conn: Conn) {
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

fn cluster_client(
    seeds: &[String],
    connect: Duration,
    response: Duration,
) -> Result<ClusterClient, RedisError> {
    // No retries by the client: it would send a whole pipeline again on
    // a redirect or a dropped connection, and publishes that already ran
    // would be appended twice. A failed call is refused as "may have been
    // stored" instead, and the next one goes to the refreshed topology.
    ClusterClientBuilder::new(seeds.iter().map(String::as_str))
        .connection_timeout(connect)
        .response_timeout(response)
        .retries(0)
        .build()
}

//! Building and running the server: `Application::build` binds the port
//! (port 0 picks a free one, which the tests use), `run_until_stopped`
//! serves until the shutdown token is cancelled, then drains.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_http::HttpService;
use actix_service::{fn_service, map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::dev::{AppConfig, Server};
use actix_web::{middleware, web, App};
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::auth::{Authenticator, KeyError};
use crate::cluster::RedisBroker;
use crate::config::{Config, ConfigError};
use crate::hub::{Hub, HubSettings};
use crate::metrics::Metrics;
use crate::sampler::Sampler;
use crate::tls::front::{Front, Peers};
use crate::tls::reload::ReloadingCert;
use crate::tls::TlsError;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Broker(#[from] crate::cluster::LinkError),
    #[error("TLS (tls.cert_file, tls.key_file): {0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Alertmanager(String),
}

pub struct Application {
    addr: SocketAddr,
    server: Server,
    state: Arc<AppState>,
    /// Cluster mode's broker, started with the server.
    cluster: Option<Arc<RedisBroker>>,
    /// Whether the port speaks TLS (`[tls]`).
    tls: bool,
}

impl Application {
    /// Validates `config`, binds its address and builds the server (not
    /// yet running).
    pub fn build(mut config: Config) -> Result<Application, StartError> {
        config.validate()?;
        let auth = Authenticator::from_config(&config)?;
        crate::alertmanager::AlertmanagerClient::check(&config.alertmanager)
            .map_err(StartError::Alertmanager)?;
        let metrics = Arc::new(Metrics::new());
        // Loaded before binding: a certificate that cannot be used stops
        // the start, naming the file.
        let cert = match config.tls.files() {
            Some((cert, key)) => {
                let reloads = metrics.tls_reloads.clone();
                for outcome in ["ok", "failed"] {
                    reloads.with_label_values(&[outcome]);
                }
                Some(Arc::new(ReloadingCert::load(cert, key, reloads)?))
            }
            None => None,
        };
        let listener =
            listen(config.bind, config.reuse_port).map_err(|source| StartError::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener.local_addr()?;
        let hub = build_hub(&config, metrics.clone());
        let cluster = if config.broker.url.is_some() || !config.broker.cluster.is_empty() {
            let teams: Vec<String> = hub.team_names().map(str::to_owned).collect();
            let history = [config.history.logs, config.history.alerts];
            let broker = RedisBroker::new(&config.broker, &teams, history, metrics.clone())?;
            hub.set_sequencer(broker.clone(), broker.timeout(), broker.server());
            Some(broker)
        } else {
            None
        };
        let local_host = config
            .sampler
            .host_name
            .clone()
            .unwrap_or_else(Sampler::os_host_name);
        let local_team_name = config
            .sampler
            .team
            .clone()
            .unwrap_or_else(|| config.team_for_host(&local_host));
        // Validated: the team exists.
        let local_team = hub.team_id(&local_team_name).unwrap_or(0);
        let state = Arc::new(AppState::new(
            Arc::new(config),
            hub,
            auth,
            metrics,
            local_team,
            local_host,
        ));
        let tls = cert.is_some();
        let server = build_server(&state, listener, addr, cert)?;
        Ok(Application {
            addr,
            server,
            state,
            cluster,
            tls,
        })
    }

    /// `https` with `[tls]`, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Cancelling this token shuts the server down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then: `/readyz`
    /// fails, every session closes with 1012, the listener stops, and
    /// connections get `shutdown_timeout_s` to finish.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let state = self.state.clone();
        let ticker = crate::sampler::ticker::spawn(crate::sampler::ticker::Ticker {
            hub: state.hub.clone(),
            metrics: state.metrics.clone(),
            shutdown: state.shutdown.clone(),
            last_sample_us: state.last_sample_us.clone(),
            local_host: state.local_host.clone(),
            local_team: state.local_team,
            sample: state.config.sampler.enabled,
            tick: Duration::from_millis(state.config.sampler.tick_ms),
            stagger: state.config.sampler.stagger,
            host_root: state.config.sampler.host_root.clone(),
            mount_timeout: Duration::from_millis(state.config.sampler.mount_timeout_ms),
            phase: match self.cluster {
                Some(_) => {
                    Duration::from_millis(rand::random::<u64>() % state.config.sampler.tick_ms)
                }
                None => Duration::ZERO,
            },
        })?;
        if let Some(broker) = &self.cluster {
            broker.spawn(state.hub.clone(), state.shutdown.clone());
        }
        tokio::spawn(crate::faults::report(
            state.metrics.http_client_errors.clone(),
            state.shutdown.clone(),
        ));
        let handle = self.server.handle();
        let token = state.shutdown.clone();
        let grace = Duration::from_secs(self.state.config.shutdown_timeout_s);
        tokio::spawn(async move {
            token.cancelled().await;
            state.set_draining();
            tracing::info!("shutting down: closing sessions with 1012");
            // No new connections from here on. WebSocket sessions run as
            // tasks of their own, which actix-server does not wait for:
            // wait for them (and SSE streams) here, then stop it; forcibly
            // if they outlived the grace period.
            handle.pause().await;
            let drained = tokio::time::timeout(grace, state.connections.closed())
                .await
                .is_ok();
            handle.stop(drained).await;
        });
        tracing::info!(
            addr = %self.addr,
            scheme = self.scheme(),
            dev_mode = self.state.auth.dev_mode(),
            "opswire listening"
        );
        if !self.tls && !self.addr.ip().is_loopback() {
            tracing::warn!(
                "serving plain HTTP on a network address: tokens and data cross the network in \
                 clear text; set [tls] (docs/security.md) or put a TLS proxy in front"
            );
        }
        let result = self.server.await;
        self.state.shutdown.cancel();
        let _ = tokio::task::spawn_blocking(move || ticker.join()).await;
        result
    }
}

/// The listening socket; with `reuse_port`, several processes can listen
/// on the same address (Linux spreads new connections over them).
fn listen(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(all(unix, not(any(target_os = "solaris", target_os = "illumos")))))]
    if reuse_port {
        return Err(std::io::Error::other(
            "reuse_port needs SO_REUSEPORT (Linux, BSD)",
        ));
    }
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// The hub over the embedded broker, sized by the configuration.
fn build_hub(config: &Config, metrics: Arc<Metrics>) -> Hub {
    let teams: Vec<String> = config.teams.iter().map(|t| t.name.clone()).collect();
    let tick = Duration::from_millis(config.sampler.tick_ms);
    let l = &config.limits;
    let settings = HubSettings {
        history_logs: config.history.logs,
        history_alerts: config.history.alerts,
        queue_len: l.queue_len,
        max_subscriptions: l.max_subscriptions,
        host_stale_after: tick * config.sampler.stale_after_ticks,
        fanout_threads: match config.sampler.fanout_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        },
        // A new subscriber gets every firing alert: no more than its
        // queue holds.
        max_firing_alerts: l.max_firing_alerts.min(l.queue_len),
        max_hosts_per_team: l.max_hosts_per_team,
        views: crate::hub::view::ViewLimits {
            max_patterns: l.max_view_patterns,
            max_pattern_len: l.max_view_pattern_len,
            max_per_team: l.max_host_views_per_team,
        },
    };
    Hub::new(&teams, settings, metrics)
}

/// actix-web's `HttpServer`, spelled out, for the one thing it does not
/// offer: an upgrade service, which takes WebSocket connections out of the
/// HTTP/1 dispatcher (see `transport::ws::upgrade`).
///
/// With `[tls]`, `listener` (the public port) is served by the TLS front
/// (`tls::front`), which hands each connection's plain bytes to the HTTP
/// server on a private loopback listener: HTTPS and `wss://` on one port,
/// the WebSocket transport unchanged.
fn build_server(
    state: &Arc<AppState>,
    listener: TcpListener,
    addr: SocketAddr,
    cert: Option<Arc<ReloadingCert>>,
) -> std::io::Result<Server> {
    let config = &state.config;
    let data = web::Data::from(state.clone());
    let workers = if config.workers == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        config.workers
    };
    let make_app = move || {
        App::new()
            .app_data(data.clone())
            .wrap(middleware::from_fn(crate::http::track))
            .configure(crate::http::routes)
    };
    // A peer that stops taking data (no ACK, or a zero window) is cut off
    // by the kernel after two heartbeats: an SSE client that stops reading
    // holds no slot for longer than a silent WebSocket does.
    let stalled_after = Duration::from_secs(2 * config.websocket.heartbeat_s);
    let peers = Arc::new(Peers::default());
    let (http_listener, tls_listener, front) = match cert {
        Some(cert) => {
            // Loopback only, on a port of its own: what reaches it has
            // come through the front (or from this machine).
            let backend = listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), false)?;
            let mut tls = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()
                .map_err(std::io::Error::other)?
                .with_no_client_auth()
                .with_cert_resolver(cert);
            // The server behind the front speaks HTTP/1.1 only.
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            let front = Arc::new(Front {
                acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
                backend: backend.local_addr()?,
                peers: peers.clone(),
                handshake_failures: state.metrics.tls_handshake_failures.clone(),
            });
            (backend, Some(listener), Some(front))
        }
        None => (listener, None, None),
    };
    // Each TLS connection is two of actix-server's: the front's and the
    // loopback one.
    let per_worker = config.max_connections().max(1024) * if front.is_some() { 2 } else { 1 };
    let mut server = actix_server::Server::build()
        .workers(workers)
        .max_concurrent_connections(per_worker)
        .backlog(4096)
        .disable_signals()
        .shutdown_timeout(config.shutdown_timeout_s)
        .listen("opswire", http_listener, move || {
            let app = make_app.clone();
            let peers = peers.clone();
            // The client's address: the TLS front's client, for a
            // connection that came through it.
            fn_service(move |io: tokio::net::TcpStream| {
                let peer = peers.client_of(io.peer_addr().ok());
                std::future::ready(Ok::<_, actix_http::error::DispatchError>((io, peer)))
            })
            .and_then(
                HttpService::build()
                    .on_connect_ext(move |io: &tokio::net::TcpStream, _| {
                        user_timeout(io, stalled_after)
                    })
                    .client_request_timeout(Duration::from_secs(5))
                    .client_disconnect_timeout(Duration::from_secs(1))
                    .local_addr(addr)
                    .upgrade(crate::transport::ws::upgrade::service(make_app.clone()))
                    .h1(map_config(
                        app().into_factory().map_err(|e| e.error_response()),
                        |_| AppConfig::default(),
                    )),
            )
        })?;
    if let (Some(front), Some(listener)) = (front, tls_listener) {
        server = server.listen("opswire-tls", listener, move || {
            let front = front.clone();
            fn_service(move |io: tokio::net::TcpStream| {
                let front = front.clone();
                async move {
                    user_timeout(&io, stalled_after);
                    front.serve(io).await;
                    Ok::<_, ()>(())
                }
            })
        })?;
    }
    Ok(server.run())
}

/// A peer that stops taking data is cut off by the kernel after `after`
/// (`TCP_USER_TIMEOUT`; Linux only).
fn user_timeout(io: &tokio::net::TcpStream, after: Duration) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = socket2::SockRef::from(io).set_tcp_user_timeout(Some(after));
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (io, after);
}

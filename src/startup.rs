//! Building and running the server: `Application::build` binds the port
//! (port 0 picks a free one, which the tests use), `run_until_stopped`
//! serves until the shutdown token is cancelled, then drains.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_http::HttpService;
use actix_service::{map_config, IntoServiceFactory, ServiceFactoryExt};
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
}

pub struct Application {
    addr: SocketAddr,
    server: Server,
    state: Arc<AppState>,
    /// Cluster mode's broker, started with the server.
    cluster: Option<Arc<RedisBroker>>,
}

impl Application {
    /// Validates `config`, binds its address and builds the server (not
    /// yet running).
    pub fn build(mut config: Config) -> Result<Application, StartError> {
        config.validate()?;
        let auth = Authenticator::from_config(&config)?;
        let listener =
            listen(config.bind, config.reuse_port).map_err(|source| StartError::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener.local_addr()?;
        let metrics = Arc::new(Metrics::new());
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
        let server = build_server(&state, listener, addr)?;
        Ok(Application {
            addr,
            server,
            state,
            cluster,
        })
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
        tracing::info!(addr = %self.addr, dev_mode = self.state.auth.dev_mode(), "opswire listening");
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
    };
    Hub::new(&teams, settings, metrics)
}

/// actix-web's `HttpServer`, spelled out, for the one thing it does not
/// offer: an upgrade service, which takes WebSocket connections out of the
/// HTTP/1 dispatcher (see `transport::ws::upgrade`).
fn build_server(
    state: &Arc<AppState>,
    listener: TcpListener,
    addr: SocketAddr,
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
    Ok(actix_server::Server::build()
        .workers(workers)
        .max_concurrent_connections(config.max_connections().max(1024))
        .backlog(4096)
        .disable_signals()
        .shutdown_timeout(config.shutdown_timeout_s)
        .listen("opswire", listener, move || {
            let app = make_app.clone();
            HttpService::build()
                .on_connect_ext(move |io: &tokio::net::TcpStream, _| {
                    #[cfg(any(target_os = "linux", target_os = "android"))]
                    let _ = socket2::SockRef::from(io).set_tcp_user_timeout(Some(stalled_after));
                    #[cfg(not(any(target_os = "linux", target_os = "android")))]
                    let _ = (io, stalled_after);
                })
                .client_request_timeout(Duration::from_secs(5))
                .client_disconnect_timeout(Duration::from_secs(1))
                .local_addr(addr)
                .upgrade(crate::transport::ws::upgrade::service(make_app.clone()))
                .h1(map_config(
                    app().into_factory().map_err(|e| e.error_response()),
                    |_| AppConfig::default(),
                ))
                .tcp()
        })?
        .run())
}

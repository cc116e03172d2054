//! Building and running the server: `Application::build` binds the port
//! (port 0 picks a free one, which the tests use), `run_until_stopped`
//! serves until the shutdown token is cancelled, then drains.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_http::HttpService;
use actix_service::{map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::dev::{AppConfig, Server};
use actix_web::{middleware, web, App};
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::auth::{Authenticator, KeyError};
use crate::config::{Config, ConfigError};
use crate::hub::{Hub, HubSettings, TeamId};
use crate::metrics::Metrics;
use crate::sampler::Sampler;
use crate::time::now_micros;

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
}

pub struct Application {
    addr: SocketAddr,
    server: Server,
    state: Arc<AppState>,
}

impl Application {
    /// Validates `config`, binds its address and builds the server (not
    /// yet running).
    pub fn build(mut config: Config) -> Result<Application, StartError> {
        config.validate()?;
        let auth = Authenticator::from_config(&config)?;
        let listener = TcpListener::bind(config.bind).map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;
        let addr = listener.local_addr()?;

        let metrics = Arc::new(Metrics::new());
        let teams: Vec<String> = config.teams.iter().map(|t| t.name.clone()).collect();
        let tick = Duration::from_millis(config.sampler.tick_ms);
        let hub = Hub::new(
            &teams,
            HubSettings {
                history_logs: config.history.logs,
                history_alerts: config.history.alerts,
                queue_len: config.limits.queue_len,
                max_subscriptions: config.limits.max_subscriptions,
                host_stale_after: tick * config.sampler.stale_after_ticks,
                fanout_threads: match config.sampler.fanout_threads {
                    0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                    n => n,
                },
                // A new subscriber gets every firing alert: no more than
                // its queue holds.
                max_firing_alerts: config.limits.max_firing_alerts.min(config.limits.queue_len),
                max_hosts_per_team: config.limits.max_hosts_per_team,
            },
            metrics.clone(),
        );
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

        let config = Arc::new(config);
        let state = Arc::new(AppState::new(
            config.clone(),
            hub,
            auth,
            metrics,
            local_team,
            local_host,
        ));
        let data = web::Data::from(state.clone());
        let workers = if config.workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            config.workers
        };
        // actix-web's `HttpServer`, spelled out, for the one thing it does
        // not offer: an upgrade service, which takes WebSocket connections
        // out of the HTTP/1 dispatcher (see `transport::ws::upgrade`).
        let make_app = move || {
            App::new()
                .app_data(data.clone())
                .wrap(middleware::from_fn(crate::http::track))
                .configure(crate::http::routes)
        };
        // A peer that stops taking data (no ACK, or a zero window) is cut
        // off by the kernel after two heartbeats: an SSE client that stops
        // reading holds no slot for longer than a silent WebSocket does.
        let stalled_after = Duration::from_secs(2 * config.websocket.heartbeat_s);
        let server = actix_server::Server::build()
            .workers(workers)
            .max_concurrent_connections(config.max_connections().max(1024))
            .backlog(4096)
            .disable_signals()
            .shutdown_timeout(config.shutdown_timeout_s)
            .listen("opswire", listener, move || {
                let app = make_app.clone();
                HttpService::build()
                    .on_connect_ext(move |io: &tokio::net::TcpStream, _| {
                        let _ =
                            socket2::SockRef::from(io).set_tcp_user_timeout(Some(stalled_after));
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
            .run();

        Ok(Application {
            addr,
            server,
            state,
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
        let ticker = spawn_ticker(state.clone())?;
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

/// When each team's metrics frame goes out within a tick: `(offset,
/// team)` in publishing order, the local sampler's team first (its data is
/// sampled at the tick's start, so it is never held back). With `stagger`
/// the T teams sit `tick / T` apart; without, all at offset 0.
fn publish_schedule(
    teams: usize,
    local_team: TeamId,
    tick: Duration,
    stagger: bool,
) -> Vec<(Duration, TeamId)> {
    let order = std::iter::once(local_team).chain((0..teams).filter(|&t| t != local_team));
    order
        .enumerate()
        .map(|(i, team)| {
            let offset = if stagger {
                tick.mul_f64(i as f64 / teams as f64)
            } else {
                Duration::ZERO
            };
            (offset, team)
        })
        .collect()
}

/// The ticker thread: at each tick's start, sample this host (blocking
/// /proc reads, kept off the async runtime); then publish each team's
/// metrics frame at its offset (see [`publish_schedule`]).
fn spawn_ticker(state: Arc<AppState>) -> std::io::Result<std::thread::JoinHandle<()>> {
    let tick = Duration::from_millis(state.config.sampler.tick_ms);
    let mut sampler = if state.config.sampler.enabled {
        match Sampler::new(state.local_host.clone()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "sampler unavailable; serving without local metrics");
                None
            }
        }
    } else {
        None
    };
    let schedule = publish_schedule(
        state.hub.team_names().count(),
        state.local_team,
        tick,
        state.config.sampler.stagger,
    );
    std::thread::Builder::new()
        .name("opswire-ticker".into())
        .spawn(move || {
            // The first sample needs a CPU delta: take it shortly after the
            // sampler's baseline, then keep a fixed cadence.
            let mut tick_start = Instant::now() + tick.min(Duration::from_millis(250));
            let mut slot = 0;
            loop {
                let due = tick_start + schedule[slot].0;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep((due - now).min(Duration::from_millis(100)));
                    if state.shutdown.is_cancelled() {
                        return;
                    }
                    continue;
                }
                if state.shutdown.is_cancelled() {
                    return;
                }
                // One trace per publishing slot (the first with the
                // sample), so each metrics frame's `trace_id` leads to the
                // tick that made it.
                let tick_span = tracing::info_span!(
                    "metrics.tick",
                    otel.name = "metrics tick",
                    "opswire.teams" = tracing::field::Empty,
                );
                let _tick = tick_span.enter();
                if slot == 0 {
                    if let Some(s) = sampler.as_mut() {
                        sample_local(&state, s);
                    }
                }
                let ts = now_micros();
                let mut published = 0u64;
                while slot < schedule.len() && tick_start + schedule[slot].0 <= Instant::now() {
                    state.hub.expire_alerts(schedule[slot].1, ts);
                    state.hub.publish_metrics(schedule[slot].1, ts);
                    slot += 1;
                    published += 1;
                }
                tick_span.record("opswire.teams", published);
                drop(_tick);
                if slot == schedule.len() {
                    slot = 0;
                    tick_start += tick;
                    // After a stall (suspend, overload) skip missed ticks
                    // rather than bursting them.
                    let now = Instant::now();
                    if tick_start + tick < now {
                        tick_start = now + tick;
                    }
                }
            }
        })
}

/// Samples this host into its team (the next metrics frame carries it).
fn sample_local(state: &AppState, s: &mut Sampler) {
    let started = Instant::now();
    let sample_span = tracing::info_span!(
        "sampler.sample",
        otel.name = "sample host",
        "host.name" = s.host(),
    );
    let snap = sample_span.in_scope(|| s.sample());
    drop(sample_span);
    state
        .metrics
        .sampler_duration
        .observe(started.elapsed().as_secs_f64());
    if let Err(e) = state.hub.update_host(state.local_team, &snap) {
        tracing::warn!(error = %e, "local snapshot refused");
    }
    state
        .last_sample_us
        .store(snap.sampled_at, Ordering::Relaxed);
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C elsewhere): the one shutdown
/// signal of `serve` and `agent`.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staggered_teams_spread_over_the_tick_local_team_first() {
        let tick = Duration::from_millis(1000);
        let s = publish_schedule(4, 2, tick, true);
        let ms: Vec<(u128, TeamId)> = s.iter().map(|(d, t)| (d.as_millis(), *t)).collect();
        assert_eq!(ms, vec![(0, 2), (250, 0), (500, 1), (750, 3)]);
        let flat = publish_schedule(3, 0, tick, false);
        assert!(flat.iter().all(|(d, _)| d.is_zero()));
        assert_eq!(
            flat.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
    }
}

//! opswire: a realtime backend for live operations dashboards.
//!
//! Every tick it samples this host (and hosts that run `opswire agent`),
//! and streams metrics, logs and alerts to team-scoped subscribers over
//! WebSocket and SSE, following the wire protocol in `docs/protocol.md`.
//!
//! # Layout
//!
//! From the bottom up; no module imports one above it (the whole map, with
//! who owns which behaviour of the protocol, is `docs/architecture.md`).
//!
//! * Foundations: [`protocol`] (wire types, error and close codes),
//!   [`config`] (typed settings, validated once), [`auth`] (JWT, teams,
//!   scopes, dev mode), [`budget`] (rate budgets per connection and per
//!   token subject), [`metrics`] (the Prometheus registry), [`telemetry`]
//!   (tracing and OTLP export), [`faults`] (client faults, counted),
//!   [`tls`] (certificates, their reload, the TLS front, client roots),
//!   [`signal`], [`time`].
//! * [`hub`]: teams' streams over a broker seam ([`hub::broker`]: seq,
//!   history, hosts; [`hub::memory`] is the embedded one), alert state,
//!   subscribers and fan-out into bounded mailboxes.
//! * Shared state: [`app`] ([`app::AppState`], connection slots),
//!   [`request`] (principal, origin, error answers, `Accept-Encoding`),
//!   [`alertmanager`] (its API, for silences), [`sampler`] (this host, and
//!   the metrics ticker).
//! * [`cluster`]: cluster mode, the Redis side of the hub (the
//!   [`hub::Sequencer`], and the tasks that keep each process's replica of
//!   the shared streams in step); `docs/cluster.md`.
//! * [`session`]: a client connection, whatever carries it: admission,
//!   welcome, team checks, every op, budgets.
//! * [`transport`] (the WebSocket socket loop, SSE's events) and
//!   [`ingest`] (Alertmanager's webhook, JSON and OTLP log ingest).
//! * [`http`] (routes and middleware), [`web`] (the bundled dashboard).
//! * [`startup`] (wiring: [`startup::Application`]) and [`agent`]
//!   (`opswire agent`, on other hosts).
//!
//! The binary (`src/main.rs`) and the integration tests both go through
//! [`startup::Application`], so the tests run the real server. The load
//! generator is a crate of its own (`bench/opswire-bench`).

pub mod agent;
pub mod alertmanager;
pub mod app;
pub mod auth;
pub mod budget;
pub mod cluster;
pub mod config;
pub mod faults;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod metrics;
pub mod protocol;
pub mod request;
pub mod sampler;
pub mod session;
pub mod signal;
pub mod startup;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod transport;
pub mod web;

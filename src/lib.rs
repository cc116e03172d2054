//! opswire: a realtime backend for live operations dashboards.
//!
//! Every tick it samples this host (and hosts that run `opswire agent`),
//! and streams metrics, logs and alerts to team-scoped subscribers over
//! WebSocket and SSE, following the wire protocol in `docs/protocol.md`.
//!
//! # Layout
//!
//! * [`config`] — typed configuration: file, environment, flags; validated once.
//! * [`auth`] — JWT verification, teams and scopes, dev mode.
//! * [`budget`] — rate budgets of inbound frames, per connection and per token subject.
//! * [`sampler`] — `sysinfo` → [`protocol::HostSnapshot`], off the async runtime.
//! * [`hub`] — topics per team and stream: seq/epoch, history, fan-out.
//! * [`transport`] — WebSocket (`/ws`) and SSE (`/sse`) sessions over the hub.
//! * [`http`] — routes: health, readiness, metrics, team API.
//! * [`ingest`] — sources over HTTP: Alertmanager webhook, log ingest (JSON, OTLP).
//! * [`agent`] — `opswire agent`: samples and tails on another host, publishes to a hub.
//! * [`metrics`] — the Prometheus registry.
//! * [`faults`] — what the HTTP stack logs about clients: counted, one rate-limited WARN.
//! * [`startup`] — [`startup::Application`]: build, run, shut down.
//!
//! The binary (`src/main.rs`) and the integration tests both go through
//! [`startup::Application`], so the tests run the real server.

pub mod agent;
pub mod alertmanager;
pub mod app;
pub mod auth;
pub mod budget;
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
pub mod transport;
pub mod web;

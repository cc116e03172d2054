//! Integration tests: one binary, the real server on random ports, real
//! WebSocket / HTTP clients. See `helpers.rs`.

mod helpers;

mod agent;
mod auth;
mod cli;
mod cluster;
mod deflate;
mod errors;
mod fanout;
mod hardening;
mod http_api;
mod isolation;
mod lifecycle;
mod prom_metrics;
mod raw;
mod resume;
mod session;
mod slow_consumer;
mod sources;
mod sse;
mod sse_gzip;
mod streaming;
mod team_logs;
mod telemetry;
mod tls;
mod views;
mod web_assets;

pub mod otlp_receiver;

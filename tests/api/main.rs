//! Integration tests: one binary, the real server on random ports, real
//! WebSocket / HTTP clients. See `helpers.rs`.

mod helpers;

mod auth;
mod cli;
mod errors;
mod http_api;
mod isolation;
mod lifecycle;
mod resume;
mod slow_consumer;
mod sse;
mod streaming;

pub mod otlp_receiver;

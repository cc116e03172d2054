//! Transports: each carries a session (`crate::session`) on a socket.
//!
//! * [`ws`]: WebSocket `/ws` — ops in, frames out.
//! * [`sse`]: Server-Sent Events `/sse` — frames out, `Last-Event-ID` resume.

pub mod sse;
pub mod ws;

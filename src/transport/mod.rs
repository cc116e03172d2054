//! Transports: each turns a hub session into frames on a socket.
//!
//! * [`ws`]: WebSocket `/ws` — ops in, frames out.
//! * [`sse`]: Server-Sent Events `/sse` — frames out, `Last-Event-ID` resume.

pub mod sse;
pub mod ws;

/// A session name: `s-` and 10 random base-36 characters.
pub fn session_name() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut name = String::with_capacity(12);
    name.push_str("s-");
    for _ in 0..10 {
        name.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
    }
    name
}

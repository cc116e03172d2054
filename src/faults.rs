//! What actix-http logs about clients, told as what it is.
//!
//! Its HTTP/1 dispatcher logs a connection that ends in error (a
//! malformed request head, a body cut short, a peer gone mid-answer) at
//! ERROR: any client can write those lines, as fast as it can connect.
//! They are the client's fault, not the server's. So they are taken out
//! of the log ([`is_client_fault`] filters them off every layer), counted
//! ([`Counter`], a layer of their own), and reported as one WARN line at
//! most every [`REPORT_EVERY`] with how many there were and the last one
//! (`opswire_http_client_errors_total` counts them too).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// How often the faults are reported at most.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

static COUNT: AtomicU64 = AtomicU64::new(0);
static LAST: Mutex<String> = Mutex::new(String::new());

/// Whether an event is one of the dispatcher's client faults.
pub fn is_client_fault(meta: &Metadata<'_>) -> bool {
    *meta.level() == Level::ERROR && meta.target().starts_with("actix_http::h1")
}

/// The layer that counts client faults (and keeps the last message).
pub struct Counter;

impl<S: Subscriber> Layer<S> for Counter {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if !is_client_fault(event.metadata()) {
            return;
        }
        COUNT.fetch_add(1, Ordering::Relaxed);
        let mut message = Message(String::new());
        event.record(&mut message);
        if let Ok(mut last) = LAST.lock() {
            *last = message.0;
        }
    }
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

/// The faults counted since the last call, with the last one's message.
pub fn take() -> Option<(u64, String)> {
    let n = COUNT.swap(0, Ordering::Relaxed);
    if n == 0 {
        return None;
    }
    let last = LAST.lock().map(|l| l.clone()).unwrap_or_default();
    Some((n, last))
}

/// Reports the faults every [`REPORT_EVERY`] until `stop` is cancelled.
pub async fn report(counter: prometheus::IntCounter, stop: tokio_util::sync::CancellationToken) {
    let mut every = tokio::time::interval(REPORT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        if let Some((n, last)) = take() {
            counter.inc_by(n);
            tracing::warn!(
                count = n,
                last = %last,
                "HTTP connections ended by the client's fault (malformed request heads, bodies cut short)"
            );
        }
    }
}

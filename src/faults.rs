//! What actix-http's HTTP/1 dispatcher logs, told as what it is.
//!
//! The dispatcher logs a connection that ends in error (a malformed
//! request head, a body cut short, a peer gone mid-answer: `stream error:
//! …`) at ERROR: any client can write those lines, as fast as it can
//! connect. They are the client's fault, not the server's. So its ERROR
//! events are taken out of the log ([`is_dispatcher_error`] filters them
//! off every layer), counted ([`Counter`], a layer of its own), and
//! reported at most every [`REPORT_EVERY`]: the client's faults as one
//! WARN line with how many there were and the last one
//! (`opswire_http_client_errors_total` counts them too), anything else the
//! dispatcher says (a response body that failed, say) as one ERROR line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// How often the faults are reported at most.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Errors counted since the last report, and the last one's message.
struct Tally {
    count: AtomicU64,
    last: Mutex<String>,
}

impl Tally {
    const fn new() -> Tally {
        Tally {
            count: AtomicU64::new(0),
            last: Mutex::new(String::new()),
        }
    }

    fn add(&self, message: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last.lock() {
            *last = message;
        }
    }

    fn take(&self) -> Option<(u64, String)> {
        let n = self.count.swap(0, Ordering::Relaxed);
        (n > 0).then(|| (n, self.last.lock().map(|l| l.clone()).unwrap_or_default()))
    }
}

/// The client's faults (`stream error: …`), and anything else.
static CLIENT: Tally = Tally::new();
static SERVER: Tally = Tally::new();

/// Whether an event is an ERROR of actix-http's HTTP/1 dispatcher.
pub fn is_dispatcher_error(meta: &Metadata<'_>) -> bool {
    *meta.level() == Level::ERROR && meta.target() == "actix_http::h1::dispatcher"
}

/// The layer that counts the dispatcher's errors (and keeps the last).
pub struct Counter;

impl<S: Subscriber> Layer<S> for Counter {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if !is_dispatcher_error(event.metadata()) {
            return;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        if message.0.starts_with("stream error") {
            CLIENT.add(message.0);
        } else {
            SERVER.add(message.0);
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

/// Reports the faults every [`REPORT_EVERY`] until `stop` is cancelled.
pub async fn report(counter: prometheus::IntCounter, stop: tokio_util::sync::CancellationToken) {
    let mut every = tokio::time::interval(REPORT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        if let Some((n, last)) = CLIENT.take() {
            counter.inc_by(n);
            tracing::warn!(
                count = n,
                last = %last,
                "HTTP connections ended by the client's fault (malformed request heads, bodies cut short)"
            );
        }
        if let Some((n, last)) = SERVER.take() {
            tracing::error!(count = n, last = %last, "HTTP/1 dispatcher errors");
        }
    }
}

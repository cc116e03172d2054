//! Wall-clock helpers: protocol timestamps are unix epoch microseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix epoch microseconds now.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

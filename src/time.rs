//! Wall-clock helpers: protocol timestamps are unix epoch microseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix epoch microseconds now.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Parses an RFC 3339 timestamp (any offset, optional fraction) into unix
/// microseconds.
pub fn parse_rfc3339_micros(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1000).ok()
}

/// Unix seconds now (token times).
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_offsets_are_honoured() {
        let z = super::parse_rfc3339_micros("2026-11-23T10:00:00Z").unwrap();
        assert_eq!(
            super::parse_rfc3339_micros("2026-11-23T11:00:00+01:00"),
            Some(z)
        );
        assert_eq!(
            super::parse_rfc3339_micros("2026-11-23T11:00:00.5+01:00"),
            Some(z + 500_000)
        );
        assert_eq!(super::parse_rfc3339_micros("yesterday"), None);
    }
}

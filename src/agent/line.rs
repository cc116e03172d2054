//! A tailed line → the `data` of a log publish op.

use crate::protocol::{Level, LogRecord};

/// How far into a line a level word is looked for: levels sit near the
/// start (after a timestamp, a thread name…), and a word further in is
/// more likely part of the message than its severity.
const LEVEL_SCAN_BYTES: usize = 256;

/// Keys whose value names the level in structured lines
/// (`level=warn`, `"level":"error"`, `severity: info`).
const LEVEL_KEYS: &[&str] = &["level", "lvl", "severity", "loglevel"];

/// The level a line clearly states, if any.
///
/// "Clearly" means one of:
/// * a level key with a level value: `level=error`, `"lvl":"warn"`;
/// * a level word in brackets, in any case: `[error]`, `<warn>`;
/// * a level word in capitals: `ERROR`, `WARNING:root:…`.
///
/// A lower-case word in free text (`no error found`) is not a level.
pub fn detect_level(line: &str) -> Option<Level> {
    let head = head(line, LEVEL_SCAN_BYTES);
    keyed_level(head).or_else(|| word_level(head))
}

/// Largest serialized `data` of a log publish. A line is capped at 16 KiB
/// by the follower, but JSON escaping can multiply its size by six (a
/// control byte becomes `\u001b`); a frame over the hub's limit (64 KiB by
/// default) would make the hub close the connection, and the resent line
/// would close the next one too. So the message is cut further until the
/// data fits.
pub const MAX_DATA_BYTES: usize = 32 * 1024;

/// The serialized `data` of a log publish: `{level, source, host, message,
/// time}`. `time` is `read_at` (unix µs), when the agent read the line:
/// lines held through an outage keep the time they were written (to within
/// a poll), while the frame's `ts` is when the hub received them.
pub fn log_data(line: &str, source: &str, host: &str, read_at: i64) -> String {
    let mut record = LogRecord {
        level: detect_level(line).unwrap_or(Level::Info),
        source: source.to_owned(),
        host: host.to_owned(),
        message: line.to_owned(),
        fields: serde_json::Map::new(),
        trace_id: None,
        time: Some(read_at),
    };
    loop {
        // Cannot fail: a struct of strings, numbers and a string-keyed map.
        let json = serde_json::to_string(&record).expect("a log record serializes");
        if json.len() <= MAX_DATA_BYTES || record.message.is_empty() {
            return json;
        }
        let half = head(&record.message, record.message.len() / 2).len();
        record.message.truncate(half);
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char
/// boundary.
pub fn head(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn keyed_level(head: &str) -> Option<Level> {
    let lower = head.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    for key in LEVEL_KEYS {
        for (at, _) in lower.match_indices(key) {
            // Whole keys only: not `xlevel=` or `levels=`.
            if at > 0 && is_word(bytes[at - 1]) {
                continue;
            }
            let mut rest = lower[at + key.len()..].trim_start_matches('"');
            rest = rest.trim_start();
            let Some(r) = rest.strip_prefix('=').or_else(|| rest.strip_prefix(':')) else {
                continue;
            };
            let value = r.trim_start_matches([' ', '"', '\'']);
            let end = value
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(value.len());
            if let Some(level) = Level::parse(&value[..end]) {
                return Some(level);
            }
        }
    }
    None
}

fn word_level(head: &str) -> Option<Level> {
    let bytes = head.as_bytes();
    let mut start = None;
    for i in 0..=bytes.len() {
        let in_word = i < bytes.len() && is_word(bytes[i]);
        match (in_word, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                start = None;
                let word = &head[s..i];
                let bracketed = s > 0
                    && i < bytes.len()
                    && matches!((bytes[s - 1], bytes[i]), (b'[', b']') | (b'<', b'>'));
                let capitals = word.bytes().all(|b| b.is_ascii_uppercase());
                if bracketed || capitals {
                    if let Some(level) = Level::parse(word) {
                        return Some(level);
                    }
                }
            }
            _ => {}
        }
    }
    None
}

/// Word characters: `ERR_CONNECTION_REFUSED` is one word, not a level.
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_that_are_clearly_stated() {
        let cases = [
            (
                "2026-01-02T03:04:05Z ERROR payment failed",
                Some(Level::Error),
            ),
            (
                "2026-01-02 03:04:05,123 WARNING:root:disk 91%",
                Some(Level::Warn),
            ),
            ("[main] INFO  started in 3 ms", Some(Level::Info)),
            ("DEBUG cache miss key=42", Some(Level::Debug)),
            (
                "2026/01/02 03:04:05 [error] 12#0: upstream timed out",
                Some(Level::Error),
            ),
            ("<warn> low memory", Some(Level::Warn)),
            (
                "ts=2026-01-02 level=warn msg=\"slow query\"",
                Some(Level::Warn),
            ),
            (r#"{"ts":1,"level":"error","msg":"x"}"#, Some(Level::Error)),
            (
                r#"{"severity": "CRITICAL", "msg": "x"}"#,
                Some(Level::Fatal),
            ),
            ("FATAL out of memory", Some(Level::Fatal)),
            ("TRACE entering f", Some(Level::Trace)),
        ];
        for (line, want) in cases {
            assert_eq!(detect_level(line), want, "{line}");
        }
    }

    #[test]
    fn words_in_free_text_are_not_levels() {
        for line in [
            "no error found",
            "user clicked the warn button",
            "ERR_CONNECTION_REFUSED while fetching",
            "errorlevel=3",
            "plain line",
            "",
        ] {
            assert_eq!(detect_level(line), None, "{line}");
        }
    }

    #[test]
    fn the_first_stated_level_wins() {
        assert_eq!(detect_level("INFO retry after ERROR"), Some(Level::Info));
    }

    #[test]
    fn a_level_far_into_a_long_line_is_not_looked_for() {
        let line = format!("{} ERROR", "x".repeat(LEVEL_SCAN_BYTES));
        assert_eq!(detect_level(&line), None);
    }

    #[test]
    fn data_has_the_protocol_fields() {
        let v: serde_json::Value =
            serde_json::from_str(&log_data("WARN disk \"sda\" 91%", "app.log", "h1", 7)).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["source"], "app.log");
        assert_eq!(v["host"], "h1");
        assert_eq!(v["message"], "WARN disk \"sda\" 91%");
        assert_eq!(v["time"], 7);
        let plain: serde_json::Value =
            serde_json::from_str(&log_data("hello", "a", "h", 7)).unwrap();
        assert_eq!(plain["level"], "INFO");
    }

    #[test]
    fn heavily_escaped_lines_are_cut_to_fit_a_frame() {
        let line = "\u{1b}".repeat(16 * 1024);
        let data = log_data(&line, "app.log", "h1", 1);
        assert!(data.len() <= MAX_DATA_BYTES, "{}", data.len());
        let v: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert!(v["message"].as_str().unwrap().len() >= 2 * 1024);
    }

    #[test]
    fn head_cuts_on_a_char_boundary() {
        assert_eq!(head("héllo", 2), "h");
        assert_eq!(head("héllo", 3), "hé");
        assert_eq!(head("abc", 10), "abc");
    }
}

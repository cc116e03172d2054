//! Reading Redis replies: stream entries and the scripts' arrays.

use redis::Value;

use crate::protocol::Level;

/// One frame as a team's Redis Stream holds it.
#[derive(Debug)]
pub struct Entry {
    pub seq: u64,
    pub frame: String,
    pub level: Level,
    pub source: String,
    /// The frame's `ts` (unix µs).
    pub ts: i64,
    /// When Redis appended it (unix µs, Redis's clock).
    pub appended: i64,
    pub epoch: String,
}

pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

pub fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}

pub fn array(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        _ => &[],
    }
}

/// `[id, [field, value, …]]`, the id being `<seq>-0`.
pub fn entry(v: &Value) -> Option<Entry> {
    let [id, fields] = array(v) else {
        return None;
    };
    let seq = text(id)?.split('-').next()?.parse().ok()?;
    let mut e = Entry {
        seq,
        frame: String::new(),
        level: Level::Info,
        source: String::new(),
        ts: 0,
        appended: 0,
        epoch: String::new(),
    };
    for pair in array(fields).chunks(2) {
        let [k, v] = pair else { break };
        match text(k)?.as_str() {
            "f" => e.frame = text(v)?,
            "l" => e.level = Level::parse(&text(v)?).unwrap_or(Level::Info),
            "s" => e.source = text(v)?,
            "t" => e.ts = int(v)?,
            "a" => e.appended = int(v)?,
            "e" => e.epoch = text(v)?,
            _ => {}
        }
    }
    (!e.frame.is_empty()).then_some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_stream_entry_reads_back() {
        let v = Value::Array(vec![
            bulk("42-0"),
            Value::Array(
                [
                    "f", "{}", "l", "WARN", "s", "api", "t", "7", "a", "9", "e", "ep",
                ]
                .map(bulk)
                .to_vec(),
            ),
        ]);
        let e = entry(&v).unwrap();
        assert_eq!((e.seq, e.level, e.ts, e.appended), (42, Level::Warn, 7, 9));
        assert_eq!(
            (e.frame.as_str(), e.source.as_str(), e.epoch.as_str()),
            ("{}", "api", "ep")
        );
        assert!(entry(&bulk("x")).is_none());
    }
}

//! Reads the few fields the generator needs from a server frame without
//! parsing it whole: on a one-core generator, full JSON parsing of every
//! frame would be part of the lag it measures.
//!
//! opswire serializes `type`, `team`, `epoch`, `seq` and `ts` before `data`,
//! so a scan of the object's first keys finds them. Anything unusual falls
//! back to a real (but still shallow) JSON parse.

use serde::Deserialize;

/// The frame types the generator tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A data frame of stream 0 (metrics), 1 (logs) or 2 (alerts).
    Data(usize),
    Subscribed,
    Welcome,
    Lagged,
    Error,
    Other,
}

/// Stream index of the data frame types, in [`STREAMS`] order.
pub const STREAMS: [&str; 3] = ["metrics", "logs", "alerts"];

fn kind_of(ty: &str) -> Kind {
    match ty {
        "metrics" => Kind::Data(0),
        "log" => Kind::Data(1),
        "alert" => Kind::Data(2),
        "subscribed" => Kind::Subscribed,
        "welcome" => Kind::Welcome,
        "lagged" => Kind::Lagged,
        "error" => Kind::Error,
        _ => Kind::Other,
    }
}

/// What the generator reads from one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub kind: Kind,
    pub seq: Option<u64>,
    pub ts: Option<i64>,
    /// Byte offset where `data` starts (0 when unknown).
    pub data_at: usize,
}

/// Reads `type`, `seq` and `ts` of a frame.
pub fn head(frame: &str) -> Option<Head> {
    scan(frame).or_else(|| fallback(frame))
}

fn scan(s: &str) -> Option<Head> {
    let b = s.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let mut kind = None;
    let mut seq = None;
    let mut ts = None;
    loop {
        i = skip_ws(b, i);
        match b.get(i)? {
            b'}' => break,
            b',' => {
                i += 1;
                continue;
            }
            b'"' => {}
            _ => return None,
        }
        let (key, after) = string(b, i)?;
        i = skip_ws(b, after);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        if key == b"data" {
            let kind = kind?;
            return Some(Head {
                kind,
                seq,
                ts,
                data_at: i,
            });
        }
        match b.get(i)? {
            b'"' => {
                let (v, after) = string(b, i)?;
                if key == b"type" {
                    let k = kind_of(std::str::from_utf8(v).ok()?);
                    if !matches!(k, Kind::Data(_)) {
                        // Control frames: only the type matters.
                        return Some(Head {
                            kind: k,
                            seq: None,
                            ts: None,
                            data_at: 0,
                        });
                    }
                    kind = Some(k);
                }
                i = after;
            }
            b'-' | b'0'..=b'9' => {
                let (v, after) = integer(b, i)?;
                match key {
                    b"seq" => seq = u64::try_from(v).ok(),
                    b"ts" => ts = Some(v),
                    _ => {}
                }
                i = after;
            }
            // Nested values, literals or floats before `data`: not the shape
            // opswire writes; let the real parser decide.
            _ => return None,
        }
    }
    Some(Head {
        kind: kind?,
        seq,
        ts,
        data_at: 0,
    })
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
        i += 1;
    }
    i
}

/// A JSON string at `i` (the opening quote): its raw bytes and the index
/// after the closing quote. Escapes are skipped, not decoded.
fn string(b: &[u8], i: usize) -> Option<(&[u8], usize)> {
    let mut j = i + 1;
    loop {
        match b.get(j)? {
            b'"' => return Some((&b[i + 1..j], j + 1)),
            b'\\' => j += 2,
            _ => j += 1,
        }
    }
}

/// An integer at `i`; None for a float or an out-of-range number.
fn integer(b: &[u8], i: usize) -> Option<(i64, usize)> {
    let mut j = i;
    let neg = b[j] == b'-';
    if neg {
        j += 1;
    }
    let start = j;
    let mut v: i64 = 0;
    while let Some(c @ b'0'..=b'9') = b.get(j) {
        v = v.checked_mul(10)?.checked_add(i64::from(c - b'0'))?;
        j += 1;
    }
    if j == start || matches!(b.get(j), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    Some((if neg { -v } else { v }, j))
}

#[derive(Deserialize)]
struct Shallow<'a> {
    #[serde(rename = "type", borrow)]
    ty: std::borrow::Cow<'a, str>,
    seq: Option<u64>,
    ts: Option<i64>,
}

fn fallback(s: &str) -> Option<Head> {
    let f: Shallow = serde_json::from_str(s).ok()?;
    Some(Head {
        kind: kind_of(&f.ty),
        seq: f.seq,
        ts: f.ts,
        data_at: 0,
    })
}

/// The `sampled_at` of every host a server sampled itself
/// (`"source":"local"`, which opswire writes just before `sampled_at`) in a
/// metrics frame, from `from` on. Agents' hosts are left out: an agent
/// samples on its own clock, so their age says when the agent sampled, not
/// how long the server took.
pub fn sampled_at(frame: &str, from: usize, mut each: impl FnMut(i64)) {
    const KEY: &str = "\"source\":\"local\",\"sampled_at\":";
    let b = frame.as_bytes();
    let mut at = from.min(frame.len());
    while let Some(p) = frame[at..].find(KEY) {
        let i = skip_ws(b, at + p + KEY.len());
        match b.get(i) {
            Some(b'-' | b'0'..=b'9') => {
                if let Some((v, after)) = integer(b, i) {
                    each(v);
                    at = after;
                    continue;
                }
                at = i;
            }
            _ => at = i,
        }
    }
}

/// The `code` (and `message`) of an error frame, for failure reports.
pub fn error_code(frame: &str) -> String {
    #[derive(Deserialize)]
    struct E {
        code: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_str::<E>(frame) {
        Ok(E {
            code: Some(c),
            message,
        }) => match message {
            Some(m) => format!("{c}: {m}"),
            None => c,
        },
        _ => "error frame".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_metrics_frame_head_and_sample_times() {
        let f = r#"{"type":"metrics","team":"payments","epoch":"s9afomc2","seq":1201,"ts":1763812800123456,"data":{"hosts":[{"host":"a","source":"local","sampled_at":1763812800120000,"cpu":{"usage_pct":1.5}},{"host":"b","source":"agent","sampled_at":1763812800110000},{"host":"c","source":"local","sampled_at":1763812800100000}],"connections":{"team":5,"total":120}}}"#;
        let h = head(f).unwrap();
        assert_eq!(h.kind, Kind::Data(0));
        assert_eq!(h.seq, Some(1201));
        assert_eq!(h.ts, Some(1763812800123456));
        assert!(f[h.data_at..].starts_with("{\"hosts\""));
        let mut at = vec![];
        sampled_at(f, h.data_at, |v| at.push(v));
        assert_eq!(at, vec![1763812800120000, 1763812800100000]);
    }

    #[test]
    fn reads_log_frames_with_trace_ids_and_escapes() {
        let f = r#"{"type":"log","team":"a\"b","epoch":"x","seq":42,"ts":17,"trace_id":"0af7","data":{"message":"\"seq\":9"}}"#;
        let h = head(f).unwrap();
        assert_eq!((h.kind, h.seq, h.ts), (Kind::Data(1), Some(42), Some(17)));
    }

    #[test]
    fn control_frames_and_other_shapes() {
        let w = r#"{"type":"welcome","session":"s","teams":["a"],"heartbeat_s":20}"#;
        assert_eq!(head(w).unwrap().kind, Kind::Welcome);
        let s = r#"{"type":"subscribed","id":1,"team":"a","streams":["metrics"]}"#;
        assert_eq!(head(s).unwrap().kind, Kind::Subscribed);
        // Another key order, with a nested value first: the fallback parses it.
        let o = r#"{"extra":{"x":1},"ts":5,"seq":2,"type":"alert","data":{}}"#;
        let h = head(o).unwrap();
        assert_eq!((h.kind, h.seq, h.ts), (Kind::Data(2), Some(2), Some(5)));
        assert_eq!(head("not json"), None);
        assert_eq!(
            error_code(r#"{"type":"error","code":"forbidden","message":"no"}"#),
            "forbidden: no"
        );
    }
}

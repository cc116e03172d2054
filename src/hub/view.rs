//! Metrics views (docs/protocol.md, "Views"): what one subscriber sees of
//! its team's metrics. `full` is every host's whole snapshot (the frame
//! clients had before views), `summary` a few numbers per host, `hosts`
//! the whole snapshot of the hosts a set of names or globs matches.
//!
//! A view is a value every subscriber taking it shares: the hub groups a
//! team's subscribers by view and serializes each group's frame once per
//! tick (`Hub::publish_metrics`). Named-hosts views are normalized
//! (patterns sorted, duplicates dropped) so two subscribers naming the
//! same set in another order share one frame; a team holds at most
//! `limits.max_host_views_per_team` distinct sets at once.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::protocol::{HostSnapshot, ViewSpec, SUMMARY_COLUMNS};

/// The bounds of named-hosts views.
#[derive(Clone, Copy, Debug)]
pub struct ViewLimits {
    /// Patterns one view may name.
    pub max_patterns: usize,
    /// Characters one pattern may have.
    pub max_pattern_len: usize,
    /// Distinct pattern sets one team serves at once.
    pub max_per_team: usize,
}

impl Default for ViewLimits {
    fn default() -> Self {
        ViewLimits {
            max_patterns: 32,
            max_pattern_len: 128,
            max_per_team: 64,
        }
    }
}

/// Why a view was refused: the message says which limit or pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    #[error("view: `hosts` is empty (name at least one host or glob)")]
    Empty,
    #[error("view: {given} host patterns, at most {max} (limits.max_view_patterns)")]
    TooManyPatterns { given: usize, max: usize },
    #[error("view: host pattern `{pattern}…` is longer than {max} characters (limits.max_view_pattern_len)")]
    PatternTooLong { pattern: String, max: usize },
    #[error("view: host pattern `{pattern}` is not a valid glob: {reason}")]
    BadGlob { pattern: String, reason: String },
    #[error(
        "team `{team}` already serves {max} distinct host views (limits.max_host_views_per_team); \
         subscribe with one of them, `summary` or `full`"
    )]
    TooManyViews { team: String, max: usize },
}

/// A view, as the hub keeps it per subscriber. Cheap to clone and to
/// compare: a named-hosts view is shared behind an `Arc`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum View {
    #[default]
    Full,
    Summary,
    Hosts(Arc<HostSet>),
}

impl View {
    /// Checks `spec` against `limits` and compiles its patterns.
    pub fn new(spec: &ViewSpec, limits: &ViewLimits) -> Result<View, ViewError> {
        Ok(match spec {
            ViewSpec::Full => View::Full,
            ViewSpec::Summary => View::Summary,
            ViewSpec::Hosts(p) => View::Hosts(Arc::new(HostSet::new(p, limits)?)),
        })
    }

    /// The view as a client names it (normalized patterns).
    pub fn spec(&self) -> ViewSpec {
        match self {
            View::Full => ViewSpec::Full,
            View::Summary => ViewSpec::Summary,
            View::Hosts(h) => ViewSpec::Hosts(h.patterns.clone()),
        }
    }
}

/// A normalized set of host names and globs, compiled once.
#[derive(Debug)]
pub struct HostSet {
    /// Sorted, without duplicates: the set's identity.
    patterns: Vec<String>,
    matcher: GlobSet,
}

impl HostSet {
    fn new(patterns: &[String], limits: &ViewLimits) -> Result<HostSet, ViewError> {
        if patterns.is_empty() {
            return Err(ViewError::Empty);
        }
        if patterns.len() > limits.max_patterns {
            return Err(ViewError::TooManyPatterns {
                given: patterns.len(),
                max: limits.max_patterns,
            });
        }
        let mut sorted: Vec<String> = patterns.to_vec();
        sorted.sort();
        sorted.dedup();
        let mut builder = GlobSetBuilder::new();
        for p in &sorted {
            if p.chars().count() > limits.max_pattern_len {
                return Err(ViewError::PatternTooLong {
                    pattern: p.chars().take(32).collect(),
                    max: limits.max_pattern_len,
                });
            }
            // Host names have no path separators: `*` matches any run of
            // characters, `/` included.
            let glob = GlobBuilder::new(p)
                .literal_separator(false)
                .build()
                .map_err(|e| ViewError::BadGlob {
                    pattern: p.clone(),
                    reason: e.kind().to_string(),
                })?;
            builder.add(glob);
        }
        let matcher = builder.build().map_err(|e| ViewError::BadGlob {
            pattern: sorted.join(","),
            reason: e.to_string(),
        })?;
        Ok(HostSet {
            patterns: sorted,
            matcher,
        })
    }

    /// Whether `host` is one of the set's.
    pub fn matches(&self, host: &str) -> bool {
        self.matcher.is_match(host)
    }
}

impl PartialEq for HostSet {
    fn eq(&self, o: &HostSet) -> bool {
        self.patterns == o.patterns
    }
}

impl Eq for HostSet {}

impl Hash for HostSet {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.patterns.hash(h)
    }
}

/// The numbers of a host's summary, taken from its snapshot when it
/// arrives (so a tick only adds the staleness and serializes).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostStats {
    pub cpu: f32,
    pub mem: f32,
    pub disk: Option<f32>,
    pub rx: u64,
    pub tx: u64,
    pub load1: f64,
    pub sampled_at: i64,
}

impl HostStats {
    pub fn of(s: &HostSnapshot) -> HostStats {
        let fullest = s
            .disks
            .iter()
            .map(|d| d.usage_pct)
            .filter(|p| p.is_finite())
            .fold(None, |m: Option<f32>, p| Some(m.map_or(p, |m| m.max(p))));
        let (rx, tx) = s.network.iter().fold((0.0, 0.0), |(rx, tx), n| {
            (rx + n.rx_bytes_per_s, tx + n.tx_bytes_per_s)
        });
        HostStats {
            cpu: round1(s.cpu.usage_pct),
            mem: round1(s.memory.usage_pct),
            disk: fullest.map(round1),
            rx: whole(rx),
            tx: whole(tx),
            load1: (s.cpu.load[0] * 100.0).round() / 100.0,
            sampled_at: s.sampled_at,
        }
    }

    /// The summary row of this host in a frame stamped `ts` (unix µs).
    pub fn summary<'a>(&'a self, host: &'a str, ts: i64) -> SummaryRow<'a> {
        SummaryRow {
            host,
            stats: self,
            age_ms: (ts - self.sampled_at).div_euclid(1000),
        }
    }
}

/// One host of a summary frame's `data.hosts` (docs/protocol.md, "Views"):
/// on the wire an array in [`SUMMARY_COLUMNS`] order.
pub struct SummaryRow<'a> {
    pub host: &'a str,
    pub stats: &'a HostStats,
    /// The frame's `ts` minus `sampled_at`, ms: how old the sample is.
    pub age_ms: i64,
}

impl serde::Serialize for SummaryRow<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let st = self.stats;
        let mut t = s.serialize_tuple(SUMMARY_COLUMNS.len())?;
        t.serialize_element(self.host)?;
        t.serialize_element(&st.cpu)?;
        t.serialize_element(&st.mem)?;
        t.serialize_element(&st.disk)?;
        t.serialize_element(&st.rx)?;
        t.serialize_element(&st.tx)?;
        t.serialize_element(&st.load1)?;
        t.serialize_element(&st.sampled_at)?;
        t.serialize_element(&self.age_ms)?;
        t.end()
    }
}

/// One decimal: the summary carries no more precision than a tile shows,
/// and the shortest float text is then short.
fn round1(v: f32) -> f32 {
    if v.is_finite() {
        (v * 10.0).round() / 10.0
    } else {
        0.0
    }
}

fn whole(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v.round() as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{CpuStats, DiskStats, MemoryStats, NetworkStats};

    fn spec(p: &[&str]) -> ViewSpec {
        ViewSpec::Hosts(p.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn host_sets_normalize_and_match_globs() {
        let l = ViewLimits::default();
        let a = View::new(&spec(&["pay-*", "db-1", "db-1"]), &l).unwrap();
        let b = View::new(&spec(&["db-1", "pay-*"]), &l).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.spec(), spec(&["db-1", "pay-*"]));
        let View::Hosts(h) = a else { panic!() };
        assert!(h.matches("pay-7") && h.matches("db-1"));
        assert!(!h.matches("db-10") && !h.matches("web-pay-1"));
    }

    #[test]
    fn limits_and_bad_globs_are_named() {
        let l = ViewLimits {
            max_patterns: 2,
            max_pattern_len: 8,
            max_per_team: 1,
        };
        let e = View::new(&spec(&["a", "b", "c"]), &l).unwrap_err();
        assert!(e.to_string().contains("at most 2"), "{e}");
        let e = View::new(&spec(&["abcdefghi"]), &l).unwrap_err();
        assert!(e.to_string().contains("longer than 8"), "{e}");
        let e = View::new(&spec(&["[a-"]), &l).unwrap_err();
        assert!(e.to_string().contains("`[a-` is not a valid glob"), "{e}");
        assert_eq!(View::new(&spec(&[]), &l).unwrap_err(), ViewError::Empty);
    }

    #[test]
    fn stats_take_the_fullest_disk_and_sum_the_network() {
        let disk = |m: &str, p| DiskStats {
            mount: m.into(),
            fs_type: String::new(),
            used_bytes: 1,
            total_bytes: 2,
            usage_pct: p,
        };
        let net = |i: &str, rx, tx| NetworkStats {
            iface: i.into(),
            rx_bytes_per_s: rx,
            tx_bytes_per_s: tx,
        };
        let s = HostSnapshot {
            host: "h".into(),
            source: Default::default(),
            sampled_at: 10_000_000,
            cpu: CpuStats {
                usage_pct: 12.345,
                cores_pct: vec![],
                load: [0.456, 1.0, 2.0],
            },
            memory: MemoryStats {
                usage_pct: 50.06,
                ..Default::default()
            },
            disks: vec![disk("/", 40.0), disk("/data", 91.26)],
            network: vec![net("eth0", 100.4, 10.0), net("eth1", 50.2, 5.5)],
            processes: 0,
            uptime_s: 0,
        };
        let st = HostStats::of(&s);
        assert_eq!(st.disk, Some(91.3));
        assert_eq!((st.rx, st.tx), (151, 16));
        assert_eq!((st.cpu, st.mem, st.load1), (12.3, 50.1, 0.46));
        assert_eq!(st.summary("h", 10_412_999).age_ms, 412);
    }
}

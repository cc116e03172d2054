//! Latency histograms (HdrHistogram, microseconds, 3 significant digits):
//! constant memory however many frames are recorded, mergeable across
//! worker processes.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The largest value kept exactly: one hour, in µs. Larger values are
/// recorded as this.
const MAX_US: u64 = 3_600_000_000;

#[derive(Clone, Debug)]
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Hist(Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds"))
    }
}

/// A histogram as it crosses a process boundary: `(value, count)` for each
/// non-empty bucket (the bucket's highest equivalent value).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct HistData(pub Vec<(u64, u64)>);

/// What a report shows of a histogram, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
    pub mean: f64,
}

/// µs → ms, kept to the µs.
fn ms(us: f64) -> f64 {
    us.round() / 1000.0
}

impl Hist {
    /// Records a value in µs; negative values count as 0.
    pub fn record(&mut self, us: i64) {
        let v = u64::try_from(us).unwrap_or(0).min(MAX_US);
        self.0.saturating_record(v);
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn merge(&mut self, other: &Hist) {
        // Same bounds on both sides: cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn data(&self) -> HistData {
        HistData(
            self.0
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_since_last_iteration()))
                .collect(),
        )
    }

    pub fn from_data(d: &HistData) -> Hist {
        let mut h = Hist::default();
        for &(v, n) in &d.0 {
            let _ = h.0.record_n(v.min(MAX_US), n);
        }
        h
    }

    pub fn summary(&self) -> Summary {
        if self.0.is_empty() {
            return Summary::default();
        }
        let q = |p: f64| ms(self.0.value_at_quantile(p) as f64);
        Summary {
            count: self.0.len(),
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p99_9: q(0.999),
            max: ms(self.0.max() as f64),
            mean: ms(self.0.mean()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_the_trip_between_processes() {
        let mut h = Hist::default();
        for v in 1..=10_000i64 {
            h.record(v * 10);
        }
        h.record(-5);
        let json = serde_json::to_string(&h.data()).unwrap();
        let back = Hist::from_data(&serde_json::from_str(&json).unwrap());
        assert_eq!(back.summary(), h.summary());
        let s = back.summary();
        assert_eq!(s.count, 10_001);
        assert!((s.p50 - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.max - 100.0).abs() < 0.1, "{s:?}");
        let mut m = Hist::default();
        m.merge(&back);
        m.merge(&back);
        assert_eq!(m.len(), 20_002);
    }
}

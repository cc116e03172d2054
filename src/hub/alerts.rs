//! A team's alert state: which alerts fire now (what a new subscriber
//! gets), and what de-duplicates Alertmanager's repeats.
//!
//! Alertmanager re-sends every firing alert each `repeat_interval`, and an
//! HA pair sends everything twice: a transition is published once, a
//! repeat not at all. The set is bounded: at most `max` alerts fire per
//! team (the oldest is evicted beyond), and an alert whose `endsAt` has
//! passed is resolved, as Alertmanager itself counts it resolved.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use super::broker::Stored;
use crate::protocol::{AlertRecord, AlertStatus};

/// Resolved alerts remembered so a repeated `resolved` is not sent twice.
pub const RESOLVED_MEMORY: usize = 4096;

struct Firing {
    stored: Stored,
    record: AlertRecord,
    /// Its `ends_at` (unix µs): it stops firing then.
    ends_at: Option<i64>,
}

#[derive(Default)]
pub(super) struct AlertState {
    firing: HashMap<String, Firing>,
    /// Fingerprints by the seq of their frame: oldest first.
    order: BTreeMap<u64, String>,
    /// The earliest `ends_at` of the set, if any has one.
    next_expiry: Option<i64>,
    resolved: VecDeque<String>,
    resolved_set: HashSet<String>,
}

impl AlertState {
    /// Whether `record` repeats the fingerprint's current state (firing
    /// with the same content, or resolved again): no frame for it.
    pub fn is_repeat(&self, record: &AlertRecord) -> bool {
        let fp = &record.fingerprint;
        match record.status {
            AlertStatus::Firing => self.firing.get(fp).is_some_and(|f| &f.record == record),
            AlertStatus::Resolved => {
                !self.firing.contains_key(fp) && self.resolved_set.contains(fp)
            }
        }
    }

    /// Takes in a published transition; returns how many firing alerts it
    /// evicted to stay within `max`.
    pub fn record(&mut self, record: &AlertRecord, stored: Stored, max: usize) -> u64 {
        let fp = &record.fingerprint;
        match record.status {
            AlertStatus::Firing => {
                if self.resolved_set.remove(fp) {
                    self.resolved.retain(|f| f != fp);
                }
                let ends_at = record
                    .ends_at
                    .as_deref()
                    .and_then(crate::time::parse_rfc3339_micros);
                if let Some(end) = ends_at {
                    self.next_expiry = Some(self.next_expiry.map_or(end, |n| n.min(end)));
                }
                self.order.insert(stored.seq, fp.clone());
                let firing = Firing {
                    stored,
                    record: record.clone(),
                    ends_at,
                };
                if let Some(old) = self.firing.insert(fp.clone(), firing) {
                    self.order.remove(&old.stored.seq);
                }
                let mut evicted = 0;
                while self.firing.len() > max {
                    let Some((_, oldest)) = self.order.pop_first() else {
                        break;
                    };
                    self.firing.remove(&oldest);
                    evicted += 1;
                }
                evicted
            }
            AlertStatus::Resolved => {
                if let Some(old) = self.firing.remove(fp) {
                    self.order.remove(&old.stored.seq);
                }
                if self.resolved_set.insert(fp.clone()) {
                    self.resolved.push_back(fp.clone());
                    if self.resolved.len() > RESOLVED_MEMORY {
                        if let Some(old) = self.resolved.pop_front() {
                            self.resolved_set.remove(&old);
                        }
                    }
                }
                0
            }
        }
    }

    /// The firing alerts whose `ends_at` is at or before `now`, oldest
    /// first (still in the set: resolving them takes them out).
    pub fn expired(&mut self, now: i64) -> Vec<AlertRecord> {
        if self.next_expiry.is_none_or(|n| n > now) {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut next = None;
        for f in self.order.values().map(|fp| &self.firing[fp]) {
            match f.ends_at {
                Some(end) if end <= now => out.push(f.record.clone()),
                Some(end) => next = Some(next.map_or(end, |n: i64| n.min(end))),
                None => {}
            }
        }
        self.next_expiry = next;
        out
    }

    /// Looks for expired alerts again at `now` (one could not be resolved).
    pub fn check_again(&mut self, now: i64) {
        self.next_expiry = Some(self.next_expiry.map_or(now, |n| n.min(now)));
    }

    /// How many fire now.
    pub fn len(&self) -> usize {
        self.firing.len()
    }

    /// The frames of the firing alerts, oldest first (a subscribe's replay).
    pub fn frames(&self) -> Vec<Stored> {
        self.order
            .values()
            .map(|fp| self.firing[fp].stored.clone())
            .collect()
    }

    /// The firing alerts, oldest first.
    pub fn records(&self) -> Vec<AlertRecord> {
        self.order
            .values()
            .map(|fp| self.firing[fp].record.clone())
            .collect()
    }

    /// The firing alert with this fingerprint.
    pub fn get(&self, fingerprint: &str) -> Option<&AlertRecord> {
        self.firing.get(fingerprint).map(|f| &f.record)
    }
}

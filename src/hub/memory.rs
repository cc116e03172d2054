//! The embedded broker: each team's streams and hosts in this process's
//! memory. Its epoch is new at every start, so a restart tells clients
//! (`recovered:false`) that what they missed is gone. In cluster mode it
//! is the process's replica of the shared streams (`insert`, `reset`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::broker::{Broker, BrokerError, Draft, HostEntry, NamedHost, Reloaded, Stored};
use super::TeamId;
use crate::protocol::{Level, LogFilter, Stream};

/// One stored frame, with what a filtered replay looks at.
struct Entry {
    stored: Stored,
    level: Level,
    source: Box<str>,
}

/// A stream's seq and its last `cap` frames.
struct History {
    seq: u64,
    cap: usize,
    ring: VecDeque<Entry>,
}

impl History {
    fn new(cap: usize) -> History {
        History {
            seq: 0,
            cap,
            ring: VecDeque::with_capacity(cap.min(1024)),
        }
    }

    fn push(&mut self, entry: Entry) {
        if entry.stored.seq != self.seq + 1 {
            // The frames between are gone: what the ring holds must stay
            // contiguous for `since`.
            self.ring.clear();
        }
        if self.ring.len() == self.cap {
            self.ring.pop_front();
        }
        self.seq = entry.stored.seq;
        self.ring.push_back(entry);
    }

    /// Frames after `after`, or None when the ring no longer holds them.
    fn since(&self, after: u64, filter: Option<&LogFilter>) -> Option<Vec<Stored>> {
        if after > self.seq {
            return None;
        }
        let oldest = self.ring.front().map_or(self.seq + 1, |e| e.stored.seq);
        if after + 1 < oldest {
            return None;
        }
        Some(
            self.ring
                .iter()
                .filter(|e| e.stored.seq > after)
                .filter(|e| filter.is_none_or(|f| f.matches(e.level, &e.source)))
                .map(|e| e.stored.clone())
                .collect(),
        )
    }
}

struct Team {
    epoch: Arc<str>,
    logs: History,
    alerts: History,
    hosts: BTreeMap<String, HostEntry>,
}

impl Team {
    fn history(&mut self, stream: Stream) -> &mut History {
        match stream {
            Stream::Alerts => &mut self.alerts,
            _ => &mut self.logs,
        }
    }
}

pub struct MemoryBroker {
    /// Each behind a lock of its own; the hub calls in with the team's
    /// lock held, so these are never contended.
    teams: Vec<Mutex<Team>>,
}

impl MemoryBroker {
    /// `teams` teams, each keeping the last `logs` / `alerts` frames.
    pub fn new(teams: usize, logs: usize, alerts: usize) -> MemoryBroker {
        let epoch: Arc<str> = new_epoch().into();
        MemoryBroker {
            teams: (0..teams)
                .map(|_| {
                    Mutex::new(Team {
                        epoch: epoch.clone(),
                        logs: History::new(logs),
                        alerts: History::new(alerts),
                        hosts: BTreeMap::new(),
                    })
                })
                .collect(),
        }
    }

    fn team(&self, team: TeamId) -> MutexGuard<'_, Team> {
        // Plain data, consistent after any panic: keep serving.
        self.teams[team].lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Broker for MemoryBroker {
    fn epoch(&self, team: TeamId) -> Arc<str> {
        self.team(team).epoch.clone()
    }

    fn append(
        &self,
        team: TeamId,
        stream: Stream,
        draft: Draft<'_>,
    ) -> Result<Stored, BrokerError> {
        let mut t = self.team(team);
        let history = t.history(stream);
        let seq = history.seq + 1;
        let stored = Stored {
            seq,
            ts: draft.ts,
            frame: (draft.encode)(seq),
        };
        history.push(Entry {
            stored: stored.clone(),
            level: draft.level,
            source: draft.source.into(),
        });
        Ok(stored)
    }

    fn head(&self, team: TeamId, stream: Stream) -> u64 {
        self.team(team).history(stream).seq
    }

    fn held(&self, team: TeamId, stream: Stream) -> usize {
        self.team(team).history(stream).ring.len()
    }

    fn since(
        &self,
        team: TeamId,
        stream: Stream,
        after: u64,
        filter: Option<&LogFilter>,
    ) -> Option<Vec<Stored>> {
        self.team(team).history(stream).since(after, filter)
    }

    fn put_host(
        &self,
        team: TeamId,
        host: &str,
        entry: HostEntry,
        max: usize,
    ) -> Result<Option<HostEntry>, BrokerError> {
        let mut t = self.team(team);
        if t.hosts.len() >= max && !t.hosts.contains_key(host) {
            return Err(BrokerError::TooManyHosts { max });
        }
        Ok(t.hosts.insert(host.to_owned(), entry))
    }

    fn with_hosts(
        &self,
        team: TeamId,
        stale_after: Duration,
        f: &mut dyn FnMut(&[NamedHost<'_>]),
    ) -> Vec<(String, HostEntry)> {
        let mut t = self.team(team);
        let now = Instant::now();
        let stale: Vec<String> = t
            .hosts
            .iter()
            .filter(|(_, h)| now.duration_since(h.seen) > stale_after)
            .map(|(name, _)| name.clone())
            .collect();
        let gone = stale
            .into_iter()
            .filter_map(|name| t.hosts.remove(&name).map(|h| (name, h)))
            .collect();
        let hosts: Vec<NamedHost<'_>> = t.hosts.iter().map(|(n, h)| (n.as_str(), h)).collect();
        f(&hosts);
        gone
    }

    fn host_names(&self, team: TeamId) -> Vec<String> {
        self.team(team).hosts.keys().cloned().collect()
    }

    fn seen(&self, team: TeamId, host: &str) -> Option<Instant> {
        self.team(team).hosts.get(host).map(|h| h.seen)
    }

    fn insert(&self, team: TeamId, stream: Stream, stored: Stored, level: Level, source: &str) {
        self.team(team).history(stream).push(Entry {
            stored,
            level,
            source: source.into(),
        });
    }

    fn reset(&self, team: TeamId, epoch: &str, heads: [Option<u64>; 2], frames: Vec<Reloaded>) {
        let mut t = self.team(team);
        t.epoch = epoch.into();
        for (stream, head) in [(Stream::Logs, heads[0]), (Stream::Alerts, heads[1])] {
            let Some(head) = head else {
                continue;
            };
            let h = t.history(stream);
            h.ring.clear();
            h.seq = 0;
            let mut held: Vec<&Reloaded> = frames.iter().filter(|f| f.stream == stream).collect();
            // The newest `cap`, in order, ending at the head.
            held.retain(|f| f.stored.seq <= head);
            let skip = held.len().saturating_sub(h.cap);
            for f in held.into_iter().skip(skip) {
                h.push(Entry {
                    stored: f.stored.clone(),
                    level: f.level,
                    source: f.source.as_str().into(),
                });
            }
            if h.seq != head {
                // The newest frames were not handed over: what is held
                // does not reach the head, so none of it can be resumed.
                h.ring.clear();
                h.seq = head;
            }
        }
    }
}

/// A short random epoch: changes with every broker (every process start).
pub fn new_epoch() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..8)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Frame;

    fn append(b: &MemoryBroker, stream: Stream, level: Level) -> u64 {
        let mut encode = |seq: u64| Frame::from(format!("{seq}"));
        b.append(
            0,
            stream,
            Draft {
                ts: 1,
                level,
                source: "s",
                encode: &mut encode,
            },
        )
        .unwrap()
        .seq
    }

    #[test]
    fn seqs_count_per_stream_and_history_trims_oldest_first() {
        let b = MemoryBroker::new(1, 3, 2);
        let logs: Vec<u64> = (0..5)
            .map(|_| append(&b, Stream::Logs, Level::Info))
            .collect();
        assert_eq!(logs, [1, 2, 3, 4, 5]);
        assert_eq!(append(&b, Stream::Alerts, Level::Info), 1);
        assert_eq!((b.head(0, Stream::Logs), b.held(0, Stream::Logs)), (5, 3));
        let seqs = |v: Option<Vec<Stored>>| v.map(|v| v.iter().map(|s| s.seq).collect::<Vec<_>>());
        assert_eq!(seqs(b.since(0, Stream::Logs, 2, None)), Some(vec![3, 4, 5]));
        assert_eq!(seqs(b.since(0, Stream::Logs, 5, None)), Some(vec![]));
        // Trimmed, or from the future: not recoverable.
        assert_eq!(seqs(b.since(0, Stream::Logs, 1, None)), None);
        assert_eq!(seqs(b.since(0, Stream::Logs, 6, None)), None);
    }

    #[test]
    fn a_filtered_replay_skips_what_the_filter_does_not_match() {
        let b = MemoryBroker::new(1, 10, 10);
        append(&b, Stream::Logs, Level::Info);
        append(&b, Stream::Logs, Level::Error);
        let f = LogFilter {
            min_level: Some(Level::Warn),
            source: None,
        };
        let got = b.since(0, Stream::Logs, 0, Some(&f)).unwrap();
        assert_eq!(got.iter().map(|s| s.seq).collect::<Vec<_>>(), [2]);
    }
}

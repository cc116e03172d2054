//! What the hub keeps per team, behind the team's lock: its subscribers
//! (and the metrics fan-out's snapshot of them), its metrics stream, and
//! its alert state. The log and alert streams themselves are the
//! broker's.

use std::sync::Arc;

use super::alerts::AlertState;
use super::broker::Stored;
use super::mailbox::Mailbox;
use super::SessionId;
use crate::protocol::{LogFilter, Stream};

/// One session's membership in a team.
pub(super) struct Subscriber {
    pub session: SessionId,
    pub mailbox: Arc<Mailbox>,
    /// Subscribed streams (bit set of `Stream::bit`).
    pub streams: u8,
    pub log_filter: Option<LogFilter>,
    /// Last seq queued per stream (index = `Stream as usize`), for `lagged`.
    pub last_seq: [u64; 3],
}

impl Subscriber {
    pub fn has(&self, s: Stream) -> bool {
        self.streams & s.bit() != 0
    }
}

#[derive(Default)]
pub(super) struct TeamState {
    /// The metrics stream: per process (see `docs/protocol.md`).
    pub metrics_seq: u64,
    pub latest_metrics: Option<Stored>,
    pub alerts: AlertState,
    pub subscribers: Vec<Subscriber>,
    /// The mailboxes taking this team's metrics, as of the last publish:
    /// what the fan-out works from once the lock is released.
    metrics_targets: Arc<Vec<Arc<Mailbox>>>,
    /// `subscribers` changed since `metrics_targets` was taken.
    targets_stale: bool,
}

impl TeamState {
    /// The subscribers, to change: the metrics fan-out's snapshot is
    /// rebuilt at the next publish.
    pub fn subscribers_mut(&mut self) -> &mut Vec<Subscriber> {
        self.targets_stale = true;
        &mut self.subscribers
    }

    /// The metrics fan-out's snapshot, rebuilt if the membership changed.
    pub fn metrics_targets(&mut self) -> Arc<Vec<Arc<Mailbox>>> {
        if self.targets_stale {
            self.metrics_targets = Arc::new(
                self.subscribers
                    .iter()
                    .filter(|s| s.has(Stream::Metrics))
                    .map(|s| s.mailbox.clone())
                    .collect(),
            );
            self.targets_stale = false;
        }
        self.metrics_targets.clone()
    }
}

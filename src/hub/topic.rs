//! What the hub keeps per team, behind the team's lock: its subscribers
//! (and the metrics fan-out's snapshot of them), its metrics stream, and
//! its alert state. The log and alert streams themselves are the
//! broker's.

use std::sync::Arc;

use super::alerts::AlertState;
use super::broker::Stored;
use super::mailbox::Mailbox;
use super::view::View;
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
    /// What it sees of the team's metrics.
    pub view: View,
}

impl Subscriber {
    pub fn has(&self, s: Stream) -> bool {
        self.streams & s.bit() != 0
    }
}

/// The mailboxes of one view's subscribers: they share one frame a tick.
pub(super) struct Targets {
    pub view: View,
    pub mailboxes: Vec<Arc<Mailbox>>,
}

#[derive(Default)]
pub(super) struct TeamState {
    /// The metrics stream: per process (see `docs/protocol.md`).
    pub metrics_seq: u64,
    /// The full view's latest frame (kept whether anyone takes it or not).
    pub latest_metrics: Option<Stored>,
    /// The other views' frames of seq `metrics_seq` built so far: a
    /// subscriber joining a view gets its latest frame from here, and the
    /// first one of a view not served at that tick builds it.
    pub view_frames: Vec<(View, Stored)>,
    pub alerts: AlertState,
    pub subscribers: Vec<Subscriber>,
    /// The mailboxes taking this team's metrics, grouped by view, as of
    /// the last publish: what the fan-out works from once the lock is
    /// released.
    metrics_targets: Arc<Vec<Targets>>,
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

    /// The metrics fan-out's snapshot, rebuilt if the membership changed:
    /// one group per distinct view, in the order first seen (a team whose
    /// subscribers all take `full` has one group, as before views).
    pub fn metrics_targets(&mut self) -> Arc<Vec<Targets>> {
        if self.targets_stale {
            let mut groups: Vec<Targets> = Vec::new();
            for s in self.subscribers.iter().filter(|s| s.has(Stream::Metrics)) {
                // Few groups (bounded by the view limits): a scan beats a map.
                match groups.iter_mut().find(|g| g.view == s.view) {
                    Some(g) => g.mailboxes.push(s.mailbox.clone()),
                    None => groups.push(Targets {
                        view: s.view.clone(),
                        mailboxes: vec![s.mailbox.clone()],
                    }),
                }
            }
            self.metrics_targets = Arc::new(groups);
            self.targets_stale = false;
        }
        self.metrics_targets.clone()
    }

    /// Distinct named-hosts views among the metrics subscribers, leaving
    /// out `session`'s own.
    pub fn host_views(&self, session: SessionId) -> Vec<&View> {
        let mut seen: Vec<&View> = Vec::new();
        for s in &self.subscribers {
            if s.session != session
                && s.has(Stream::Metrics)
                && matches!(s.view, View::Hosts(_))
                && !seen.contains(&&s.view)
            {
                seen.push(&s.view);
            }
        }
        seen
    }
}

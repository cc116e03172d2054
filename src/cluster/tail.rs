//! The reader: one blocking `XREAD` over every team's streams, from the
//! seq this process holds of each, on a connection of its own. Each
//! frame goes to [`Hub::deliver`] in seq order; after a lost connection
//! the next read starts where the last one ended, so the frames appended
//! meanwhile are delivered before anything newer (a gap fill).

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Value;
use tokio_util::sync::CancellationToken;

use std::collections::HashMap;

use super::{reply, RedisBroker};
use crate::hub::{Delivered, Hub, Incoming};
use crate::protocol::Stream;
use crate::time::now_micros;

/// Frames one read returns at most (per stream).
const READ_COUNT: usize = 1000;

/// How long one read blocks when nothing is appended.
const BLOCK: Duration = Duration::from_secs(1);

/// Reads the streams of `teams` (every team on one Redis; one team per
/// reader on a Redis Cluster) until `shutdown`.
pub async fn run(b: Arc<RedisBroker>, hub: Hub, teams: Vec<usize>, shutdown: CancellationToken) {
    let streams = b.team_of_stream(&teams);
    let keys: Vec<String> = streams.keys().cloned().collect();
    loop {
        // Only once every team is loaded: reads start at what it holds.
        while !b.is_ready() {
            tokio::select! {
                () = b.ready.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
                () = shutdown.cancelled() => return,
            }
        }
        let conn = b.link.open(BLOCK + b.timeout).await;
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                b.link.check(&e);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    () = shutdown.cancelled() => return,
                }
                continue;
            }
        };
        let mut first = true;
        loop {
            if !b.is_ready() {
                break;
            }
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&keys);
            // Each team's epoch as the read goes out: a reply for a team
            // reloaded meanwhile is not this epoch's.
            let issued: HashMap<usize, Arc<str>> = teams.iter().map(|&t| (t, b.epoch(t))).collect();
            for k in &keys {
                let (team, stream) = streams[k];
                cmd.arg(format!("{}-0", hub.head(team, stream)));
            }
            let started = Instant::now();
            let read: redis::RedisResult<Value> = tokio::select! {
                r = cmd.query_async(&mut conn) => r,
                () = shutdown.cancelled() => return,
            };
            let v = match read {
                Ok(v) => v,
                Err(e) => {
                    b.link.check(&e);
                    tracing::debug!(error = %e, "reading the streams failed; reconnecting");
                    break;
                }
            };
            if matches!(v, Value::Nil) {
                first = false;
                continue;
            }
            let read_for = started.elapsed();
            let (n, stale) = deliver_all(&b, &hub, &streams, &issued, &v);
            if stale {
                // Until the sync reloads the team, the same read would
                // return the same entries: not in a tight loop.
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    () = shutdown.cancelled() => return,
                }
            }
            if first && n > 0 {
                // The first read of a connection returns what was
                // appended while this process was not reading.
                b.metrics.broker.gap_fills.inc();
                b.metrics.broker.gap_frames.inc_by(n);
            } else if read_for < BLOCK {
                b.round_trip("read", read_for);
            }
            first = false;
        }
    }
}

/// Hands every entry of an `XREAD` reply to the hub; returns how many it
/// delivered, and whether a team needs a reload first. A team whose epoch
/// changed since the read was issued (`issued`: a reload came in between)
/// is skipped: its ids were the old epoch's. Another epoch's entries, or
/// frames after a gap on an alerts stream, make the team reload (by the
/// sync).
fn deliver_all(
    b: &RedisBroker,
    hub: &Hub,
    streams: &HashMap<String, (usize, Stream)>,
    issued: &HashMap<usize, Arc<str>>,
    v: &Value,
) -> (u64, bool) {
    let mut delivered = 0;
    let mut stale = false;
    let now = now_micros();
    for per_key in reply::array(v) {
        let [key, entries] = reply::array(per_key) else {
            continue;
        };
        let Some(&(team, stream)) = reply::text(key).and_then(|k| streams.get(&k)) else {
            continue;
        };
        let epoch = b.epoch(team);
        if issued.get(&team) != Some(&epoch) {
            continue;
        }
        for e in reply::array(entries).iter().filter_map(reply::entry) {
            if *epoch != *e.epoch {
                b.needs_reload(team);
                stale = true;
                break;
            }
            let lag = (now - e.appended).max(0) as f64 / 1e6;
            let inc = Incoming {
                epoch: e.epoch,
                seq: e.seq,
                ts: e.ts,
                frame: e.frame,
                level: e.level,
                source: e.source,
            };
            match hub.deliver(team, stream, inc) {
                Delivered::Dropped => {}
                d => {
                    if d == Delivered::AfterGap && stream == Stream::Alerts {
                        // The firing set missed what happened meanwhile.
                        b.needs_reload(team);
                    }
                    b.metrics.broker.notification_lag.observe(lag);
                    delivered += 1;
                }
            }
        }
    }
    (delivered, stale)
}

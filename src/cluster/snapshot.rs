//! A team's reload: its streams' history, heads and firing set, read in
//! one script call (so they agree), handed to [`Hub::reload`]. At start
//! every team is loaded; after a lost connection only the teams whose
//! epoch changed (Redis lost their data) are, the rest catch up by
//! reading their streams from where they were.

use super::link::Conn;
use redis::{RedisResult, Value};
use serde::Deserialize;

use super::{reply, RedisBroker};
use crate::hub::{Hub, Reloaded, Stored, TeamId};
use crate::protocol::{AlertRecord, Stream};

/// Reloads the teams whose epoch in Redis is not the one this process
/// holds (all of them at start), or only `only`'s.
pub async fn resync(
    b: &RedisBroker,
    hub: &Hub,
    conn: &mut Conn,
    only: Option<&[TeamId]>,
) -> RedisResult<()> {
    // One GET per team, all at once: on a Redis Cluster the teams' keys
    // live in different slots (no MGET across them).
    let gets = b.keys.iter().map(|k| {
        let mut c = conn.clone();
        async move {
            redis::cmd("GET")
                .arg(k.epoch())
                .query_async::<Option<String>>(&mut c)
                .await
        }
    });
    let epochs: Vec<Option<String>> = futures_util::future::try_join_all(gets).await?;
    for (team, epoch) in epochs.into_iter().enumerate() {
        let wanted = only.is_none_or(|o| o.contains(&team));
        let loaded = b.epoch(team);
        if wanted && (epoch.as_deref() != Some(&*loaded) || loaded.is_empty()) {
            load(b, hub, conn, team).await?;
        }
    }
    Ok(())
}

/// Reads `team`'s snapshot and reloads the hub's replica of it.
pub async fn load(b: &RedisBroker, hub: &Hub, conn: &mut Conn, team: TeamId) -> RedisResult<()> {
    let keys = &b.keys[team];
    let started = std::time::Instant::now();
    let v: Value = redis::cmd("EVAL")
        .arg(super::scripts::SNAPSHOT)
        .arg(keys.script_keys().len())
        .arg(keys.script_keys())
        .arg(crate::hub::memory::new_epoch())
        .arg(b.history[0].max(1))
        .arg(b.history[1].max(1))
        .query_async(conn)
        .await?;
    b.metrics
        .broker
        .round_trip
        .with_label_values(&["read"])
        .observe(started.elapsed().as_secs_f64());
    let a = reply::array(&v);
    let epoch = a.first().and_then(reply::text).unwrap_or_default();
    let head = |i: usize| a.get(i).and_then(reply::int).unwrap_or(0) as u64;
    let heads = [head(1), head(2)];
    let mut frames = Vec::new();
    for (i, stream) in [(3, Stream::Logs), (4, Stream::Alerts)] {
        let entries = a.get(i).map(reply::array).unwrap_or_default();
        for e in entries.iter().rev().filter_map(reply::entry) {
            frames.push(Reloaded {
                stream,
                stored: Stored {
                    seq: e.seq,
                    ts: e.ts,
                    frame: e.frame.into(),
                },
                level: e.level,
                source: e.source,
            });
        }
    }
    let firing = a
        .get(5)
        .map(reply::array)
        .unwrap_or_default()
        .iter()
        .filter_map(reply::text)
        .filter_map(|f| firing_of(&f))
        .collect();
    hub.reload(team, &epoch, heads, frames, firing);
    b.set_epoch(team, &epoch);
    tracing::debug!(team = %hub.team_name(team), %epoch, logs = heads[0], alerts = heads[1], "team loaded from the broker");
    Ok(())
}

/// A firing alert's frame: its record, seq and ts.
fn firing_of(frame: &str) -> Option<(AlertRecord, Stored)> {
    #[derive(Deserialize)]
    struct Envelope {
        seq: u64,
        ts: i64,
        data: AlertRecord,
    }
    let e: Envelope = serde_json::from_str(frame).ok()?;
    Some((
        e.data,
        Stored {
            seq: e.seq,
            ts: e.ts,
            frame: frame.into(),
        },
    ))
}

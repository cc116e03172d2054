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

/// Reloads the teams that need it: those whose epoch in Redis is not the
/// one this process holds (all of them at start), those whose seq in Redis
/// is behind what this process has read (Redis went back in time: their
/// streams start over in a new epoch first), and `force`'s.
pub async fn resync(
    b: &RedisBroker,
    hub: &Hub,
    conn: &mut Conn,
    force: &[TeamId],
) -> RedisResult<()> {
    // What this process holds, taken BEFORE Redis is asked: Redis's seq
    // only grows, so one read after these can only be at or above them,
    // unless Redis really went back (the reads would otherwise race the
    // frames delivered meanwhile).
    // The epoch first: a reload between the two reads then shows as
    // another epoch (a harmless reload), never as heads Redis is behind.
    let held: Vec<(std::sync::Arc<str>, [u64; 2])> = (0..b.keys.len())
        .map(|t| {
            let epoch = b.epoch(t);
            (
                epoch,
                [hub.head(t, Stream::Logs), hub.head(t, Stream::Alerts)],
            )
        })
        .collect();
    // One pipeline per team (its keys share a slot), all at once.
    let checks = b.keys.iter().map(|k| {
        let mut c = conn.clone();
        async move {
            redis::pipe()
                .cmd("GET")
                .arg(k.epoch())
                .cmd("GET")
                .arg(k.seq(Stream::Logs))
                .cmd("GET")
                .arg(k.seq(Stream::Alerts))
                .query_async::<(Option<String>, Option<u64>, Option<u64>)>(&mut c)
                .await
        }
    });
    let states = futures_util::future::try_join_all(checks).await?;
    for (team, (epoch, logs, alerts)) in states.into_iter().enumerate() {
        let (loaded, heads) = &held[team];
        let same = !loaded.is_empty() && epoch.as_deref() == Some(&**loaded);
        let behind = same && (logs.unwrap_or(0) < heads[0] || alerts.unwrap_or(0) < heads[1]);
        if behind {
            tracing::warn!(
                team = %hub.team_name(team),
                epoch = %loaded,
                "the broker lost frames it had acknowledged (restored from an older state?): the team's streams start over in a new epoch"
            );
            rotate(b, conn, team, loaded).await?;
        }
        if !same || behind || force.contains(&team) {
            load(b, hub, conn, team).await?;
        }
    }
    Ok(())
}

/// Starts `team`'s streams over in a new epoch, unless another process
/// did already.
async fn rotate(b: &RedisBroker, conn: &mut Conn, team: TeamId, old: &str) -> RedisResult<()> {
    let keys = &b.keys[team];
    redis::cmd("EVAL")
        .arg(super::scripts::ROTATE)
        .arg(keys.script_keys().len())
        .arg(keys.script_keys())
        .arg(old)
        .arg(crate::hub::memory::new_epoch())
        .query_async::<Option<String>>(conn)
        .await
        .map(drop)
}

/// Reads `team`'s snapshot and reloads the hub's replica of it.
pub async fn load(b: &RedisBroker, hub: &Hub, conn: &mut Conn, team: TeamId) -> RedisResult<()> {
    // One at a time per team: a slower, older snapshot never lands last.
    let _one = b.loading[team].lock().await;
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
    b.round_trip("read", started.elapsed());
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
    let new_epoch = *b.epoch(team) != *epoch;
    hub.reload(team, &epoch, heads, frames, firing);
    b.set_epoch(team, &epoch);
    if new_epoch {
        // Answers of the old epoch say nothing of the new one. (In the
        // same epoch they stay: an answer still on its way may be older
        // than this snapshot, and is no sign of a rollback.)
        for answered in &b.answered[team] {
            answered.store(0, std::sync::atomic::Ordering::Release);
        }
    }
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

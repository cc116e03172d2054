//! Every half second: this process's host snapshots go to Redis and the
//! whole cluster's come back (each team's metrics frame shows them all);
//! every second: subscriber counts are exchanged (for `/api/v1/teams`)
//! and the teams' epochs are checked (a team whose data Redis lost is
//! reloaded).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::link::Conn;
use redis::{RedisResult, Value};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use super::{reply, snapshot, RedisBroker, SYNC_EVERY};
use crate::hub::Hub;
use crate::time::now_micros;

/// A process whose counts are older than this is gone.
const NODE_FRESH_MS: i64 = 5_000;

/// Hosts not updated for this long leave Redis (each process applies
/// its own, shorter, staleness rule to its frames).
const HOST_FORGET_MS: i64 = 60_000;

pub async fn run(b: Arc<RedisBroker>, hub: Hub, shutdown: CancellationToken) {
    let mut round: u64 = 0;
    loop {
        tokio::select! {
            () = tokio::time::sleep(SYNC_EVERY) => {}
            () = shutdown.cancelled() => return,
        }
        let Some(mut conn) = b.link.get() else {
            // Down: what waits to be written ages out with the hosts.
            let oldest = now_micros() / 1000 - HOST_FORGET_MS;
            b.hosts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|_, v| {
                    v.split(' ').next().and_then(|t| t.parse::<i64>().ok()) > Some(oldest)
                });
            continue;
        };
        if !b.loaded.load(Ordering::Acquire) {
            continue;
        }
        round += 1;
        let started = Instant::now();
        let mut result = hosts(&b, &hub, &mut conn).await;
        let stale = std::mem::take(&mut *b.stale_epochs.lock().unwrap_or_else(|e| e.into_inner()));
        if result.is_ok() && round.is_multiple_of(2) {
            // Every team's epoch, every second.
            result = nodes(&b, &hub, &mut conn).await;
            if result.is_ok() {
                result = snapshot::resync(&b, &hub, &mut conn, &stale).await;
            }
        } else if result.is_ok() && !stale.is_empty() {
            // A team a publish or a read found in another epoch: now.
            result = snapshot::resync(&b, &hub, &mut conn, &stale).await;
        }
        match result {
            Ok(()) => b.round_trip("sync", started.elapsed()),
            Err(e) => {
                b.link.check(&e);
                tracing::debug!(error = %e, "broker sync failed");
                // Still to reload, next time.
                for team in stale {
                    b.needs_reload(team);
                }
            }
        }
    }
}

/// Writes this process's new host snapshots, reads every team's: one
/// pipeline per team (a team's keys share a slot), all at once.
async fn hosts(b: &RedisBroker, hub: &Hub, conn: &mut Conn) -> RedisResult<()> {
    let pending = std::mem::take(&mut *b.hosts.lock().unwrap_or_else(|e| e.into_inner()));
    let now_ms = now_micros() / 1000;
    let calls = b.keys.iter().enumerate().map(|(team, k)| {
        let mut pipe = redis::pipe();
        for ((_, host), value) in pending.iter().filter(|((t, _), _)| *t == team) {
            pipe.cmd("HSET")
                .arg(k.hosts())
                .arg(host)
                .arg(value)
                .ignore();
        }
        pipe.cmd("EVAL")
            .arg(super::scripts::HOSTS)
            .arg(1)
            .arg(k.hosts())
            .arg(now_ms)
            .arg(HOST_FORGET_MS);
        let mut c = conn.clone();
        async move { pipe.query_async::<(Value,)>(&mut c).await.map(|(v,)| v) }
    });
    let teams: Vec<Value> = futures_util::future::try_join_all(calls).await?;
    // Both clocks now: a snapshot's age is judged against the same moment.
    let now = Instant::now();
    let now_ms = now_micros() / 1000;
    for (team, v) in teams.iter().enumerate() {
        for pair in reply::array(v).chunks(2) {
            let (Some(host), Some(value)) = (
                pair.first().and_then(reply::text),
                pair.get(1).and_then(reply::text),
            ) else {
                continue;
            };
            let mut parts = value.splitn(3, ' ');
            let (Some(seen_ms), Some(node), Some(json)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if node == b.node {
                // Our own, read back: this process holds it already.
                continue;
            }
            let Ok(seen_ms) = seen_ms.parse::<i64>() else {
                continue;
            };
            let Ok(raw) = RawValue::from_string(json.to_owned()) else {
                continue;
            };
            let age = Duration::from_millis((now_ms - seen_ms).max(0) as u64);
            let Some(seen) = now.checked_sub(age) else {
                continue;
            };
            hub.merge_remote_host(team, &host, raw, seen);
        }
    }
    Ok(())
}

/// Reports this process's subscribers per team; sums the others'.
async fn nodes(b: &RedisBroker, hub: &Hub, conn: &mut Conn) -> RedisResult<()> {
    let now_ms = now_micros() / 1000;
    let mine = serde_json::to_string(&hub.local_subscribers()).unwrap_or_default();
    let (all,): (std::collections::HashMap<String, String>,) = redis::pipe()
        .cmd("HSET")
        .arg(&b.nodes_key)
        .arg(&b.node)
        .arg(format!("{now_ms} {mine}"))
        .ignore()
        .cmd("HGETALL")
        .arg(&b.nodes_key)
        .query_async(conn)
        .await?;
    let mut sums = vec![0usize; b.remote.len()];
    let mut gone = Vec::new();
    for (node, value) in all {
        let Some((at, counts)) = value.split_once(' ') else {
            continue;
        };
        let age = now_ms - at.parse::<i64>().unwrap_or(0);
        if age > 12 * NODE_FRESH_MS {
            gone.push(node);
            continue;
        }
        if node == b.node || age > NODE_FRESH_MS {
            continue;
        }
        let counts: Vec<usize> = serde_json::from_str(counts).unwrap_or_default();
        for (sum, n) in sums.iter_mut().zip(counts) {
            *sum += n;
        }
    }
    for (slot, sum) in b.remote.iter().zip(sums) {
        slot.store(sum, Ordering::Relaxed);
    }
    if !gone.is_empty() {
        redis::cmd("HDEL")
            .arg(&b.nodes_key)
            .arg(gone)
            .query_async::<()>(conn)
            .await?;
    }
    Ok(())
}

//! The writers, one per team: a team's publishes go to Redis in
//! pipelined batches (one round trip for as many as are waiting, up to
//! `BATCH`), in the order they were submitted, and each publisher gets its
//! seq back.
//!
//! Bounded: at most `broker.max_in_flight` wait in the process (beyond,
//! `submit` refuses at once); one still unsent after `broker.timeout_ms`
//! is refused rather than sent late, and Redis's answer is awaited at most
//! `broker.timeout_ms` (the connection's response timeout).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use redis::{RedisResult, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::link::Conn;
use super::{reply, RedisBroker, BATCH};
use crate::hub::alerts::RESOLVED_MEMORY;
use crate::hub::{Appended, BrokerError, Submission};
use crate::protocol::Stream;

/// A submitted publish and where its answer goes.
pub struct Job {
    pub sub: Submission,
    pub answer: oneshot::Sender<Result<Appended, BrokerError>>,
    /// Refused if not sent by then.
    pub deadline: Instant,
}

/// One team's writer, until `shutdown`.
pub async fn run(
    b: Arc<RedisBroker>,
    mut rx: mpsc::UnboundedReceiver<Job>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            j = rx.recv() => j,
            () = shutdown.cancelled() => None,
        };
        let Some(first) = first else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        send(&b, batch).await;
    }
}

/// Sends one team's batch in one pipeline (on a Redis Cluster a pipeline
/// may name one slot's keys only).
async fn send(b: &RedisBroker, batch: Vec<Job>) {
    let now = Instant::now();
    let (late, batch): (Vec<Job>, Vec<Job>) = batch.into_iter().partition(|j| j.deadline <= now);
    for j in late {
        answer(
            b,
            j,
            Err(unavailable(
                "the publish waited longer than broker.timeout_ms for the broker",
            )),
        );
    }
    if batch.is_empty() {
        return;
    }
    let Some(conn) = b.link.get() else {
        let why = b.link.down_reason().unwrap_or_default();
        for j in batch {
            answer(b, j, Err(BrokerError::Unavailable(why.clone())));
        }
        return;
    };
    let started = Instant::now();
    send_team(b, conn, batch, true).await;
    b.round_trip("publish", started.elapsed());
}

/// One team's publishes in one pipeline; `by_hash`: `EVALSHA`, else the
/// script whole (`EVAL`, for the calls Redis had lost it for: a restart,
/// `SCRIPT FLUSH`, a new shard).
async fn send_team(b: &RedisBroker, mut conn: Conn, jobs: Vec<Job>, by_hash: bool) {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for j in &jobs {
        pipe.add_command(command(b, &j.sub, by_hash));
    }
    let results: RedisResult<Vec<RedisResult<Value>>> = pipe.query_async(&mut conn).await;
    let results = match results {
        Ok(r) if r.len() == jobs.len() => r,
        Ok(_) => {
            for j in jobs {
                answer(b, j, Err(unavailable("the broker's answer did not match the publishes; they may have been stored")));
            }
            return;
        }
        Err(e) => {
            b.link.check(&e);
            let why = format!("broker unavailable: {e} (the publish may have been stored)");
            for j in jobs {
                answer(b, j, Err(BrokerError::Unavailable(why.clone())));
            }
            return;
        }
    };
    let mut again = Vec::new();
    for (j, r) in jobs.into_iter().zip(results) {
        match r {
            Ok(v) => {
                let outcome = parse(b, &j.sub, &v);
                answer(b, j, outcome);
            }
            Err(e) if by_hash && e.code() == Some("NOSCRIPT") => again.push(j),
            Err(e) => answer(
                b,
                j,
                Err(BrokerError::Unavailable(format!("broker unavailable: {e}"))),
            ),
        }
    }
    if !again.is_empty() {
        // Not run (the script was unknown): safe to send again, whole.
        Box::pin(send_team(b, conn, again, false)).await;
    }
}

/// The publish script's call for `s`.
fn command(b: &RedisBroker, s: &Submission, by_hash: bool) -> redis::Cmd {
    let keys = &b.keys[s.team];
    let (history, alert) = match s.stream {
        Stream::Alerts => (b.history[1], s.alert.as_ref()),
        _ => (b.history[0], None),
    };
    let mut cmd = if by_hash {
        let mut c = redis::cmd("EVALSHA");
        c.arg(b.publish.get_hash());
        c
    } else {
        let mut c = redis::cmd("EVAL");
        c.arg(super::scripts::PUBLISH);
        c
    };
    cmd.arg(keys.script_keys().len())
        .arg(keys.script_keys())
        .arg(s.stream.as_str())
        .arg(crate::hub::memory::new_epoch())
        .arg(history.max(1))
        .arg(&s.head)
        .arg(&s.tail)
        .arg(s.ts)
        .arg(s.level.as_str())
        .arg(&s.source)
        .arg(alert.map_or("", |a| a.fingerprint.as_str()))
        .arg(alert.and_then(|a| a.firing.as_deref()).unwrap_or(""))
        .arg(alert.map_or(0, |a| a.max_firing))
        .arg(RESOLVED_MEMORY);
    cmd
}

/// `{seq, epoch}`; seq 0: a repeat.
fn parse(b: &RedisBroker, s: &Submission, v: &Value) -> Result<Appended, BrokerError> {
    let a = reply::array(v);
    let (Some(seq), Some(epoch)) = (
        a.first().and_then(reply::int),
        a.get(1).and_then(reply::text),
    ) else {
        return Err(unavailable(
            "the broker answered a publish with something unexpected",
        ));
    };
    let i = (s.stream == Stream::Alerts) as usize;
    if *b.epoch(s.team) != *epoch {
        // Appended in an epoch this process has not loaded: the sync
        // reloads the team; the frame is delivered from there.
        b.needs_reload(s.team);
    } else if seq > 0 {
        let before = b.answered[s.team][i].fetch_max(seq as u64, Ordering::AcqRel);
        if seq as u64 <= before {
            // A seq handed out before, in the same epoch: Redis lost what
            // it had acknowledged (a restore from an older state).
            b.needs_reload(s.team);
        }
    }
    Ok(match seq {
        0 => Appended::Repeat,
        n => Appended::Seq(n as u64),
    })
}

pub fn answer(b: &RedisBroker, j: Job, outcome: Result<Appended, BrokerError>) {
    if let (Ok(Appended::Seq(seq)), Some(record)) = (&outcome, j.sub.export) {
        // Exported by the process that published it, once.
        record.emit(*seq, &b.epoch(j.sub.team));
    }
    b.in_flight.fetch_sub(1, Ordering::AcqRel);
    b.metrics.broker.in_flight.dec();
    let result = match &outcome {
        Ok(Appended::Seq(_)) => "ok",
        Ok(Appended::Repeat) => "repeat",
        Err(_) => "unavailable",
    };
    b.metrics
        .broker
        .publishes
        .with_label_values(&[result])
        .inc();
    // The publisher may have gone (a closed connection): nothing to tell.
    let _ = j.answer.send(outcome);
}

fn unavailable(why: &str) -> BrokerError {
    BrokerError::Unavailable(format!("broker unavailable: {why}"))
}

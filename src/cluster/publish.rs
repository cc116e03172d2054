//! The writer: publishes go to Redis in pipelined batches (one round
//! trip for as many as are waiting, up to `BATCH`), in the order they
//! were submitted, and each publisher gets its seq back.
//!
//! Bounded: at most `broker.max_in_flight` wait (beyond, `submit`
//! refuses at once), and one that waited longer than `broker.timeout_ms`
//! is refused rather than sent late.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use redis::{RedisResult, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{reply, RedisBroker, BATCH};
use crate::hub::alerts::RESOLVED_MEMORY;
use crate::hub::{Appended, BrokerError, Submission};
use crate::protocol::Stream;

/// A submitted publish and where its answer goes.
pub struct Job {
    pub sub: Submission,
    pub answer: oneshot::Sender<Result<Appended, BrokerError>>,
    pub queued: Instant,
}

pub async fn run(b: Arc<RedisBroker>, mut rx: mpsc::Receiver<Job>, shutdown: CancellationToken) {
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
        send(&b, batch, true).await;
    }
}

/// Sends one batch; `retry`: once more after reloading the script, for
/// the calls Redis had lost it for (a restart or `SCRIPT FLUSH`).
async fn send(b: &RedisBroker, batch: Vec<Job>, retry: bool) {
    let (late, batch): (Vec<Job>, Vec<Job>) = batch
        .into_iter()
        .partition(|j| j.queued.elapsed() > b.timeout);
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
    let Some(mut conn) = b.link.get() else {
        let why = b.link.down_reason().unwrap_or_default();
        for j in batch {
            answer(b, j, Err(BrokerError::Unavailable(why.clone())));
        }
        return;
    };
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for j in &batch {
        pipe.add_command(command(b, &j.sub));
    }
    let started = Instant::now();
    let results: RedisResult<Vec<RedisResult<Value>>> = pipe.query_async(&mut conn).await;
    b.metrics
        .broker
        .round_trip
        .with_label_values(&["publish"])
        .observe(started.elapsed().as_secs_f64());
    let results = match results {
        Ok(r) if r.len() == batch.len() => r,
        Ok(_) => {
            for j in batch {
                answer(b, j, Err(unavailable("the broker's answer did not match the publishes; they may have been stored")));
            }
            return;
        }
        Err(e) => {
            b.link.check(&e);
            let why = format!("broker unavailable: {e} (the publish may have been stored)");
            for j in batch {
                answer(b, j, Err(BrokerError::Unavailable(why.clone())));
            }
            return;
        }
    };
    let mut again = Vec::new();
    for (j, r) in batch.into_iter().zip(results) {
        match r {
            Ok(v) => {
                let outcome = parse(b, &j.sub, &v);
                answer(b, j, outcome);
            }
            Err(e) if retry && e.code() == Some("NOSCRIPT") => again.push(j),
            Err(e) => answer(b, j, Err(BrokerError::Unavailable(format!("broker: {e}")))),
        }
    }
    if !again.is_empty() {
        let loaded = b
            .scripts
            .publish
            .prepare_invoke()
            .load_async(&mut conn)
            .await;
        if let Err(e) = loaded {
            b.link.check(&e);
        }
        Box::pin(send(b, again, false)).await;
    }
}

/// `EVALSHA` of the publish script for `s`.
fn command(b: &RedisBroker, s: &Submission) -> redis::Cmd {
    let keys = &b.keys[s.team];
    let (history, alert) = match s.stream {
        Stream::Alerts => (b.history[1], s.alert.as_ref()),
        _ => (b.history[0], None),
    };
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(b.scripts.publish.get_hash())
        .arg(keys.script_keys().len())
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
    if *b.epoch(s.team) != *epoch {
        // Appended in an epoch this process has not loaded: the sync
        // reloads the team; the frame is delivered from there.
        b.epoch_changed(s.team);
    }
    Ok(match seq {
        0 => Appended::Repeat,
        n => Appended::Seq(n as u64),
    })
}

fn answer(b: &RedisBroker, j: Job, outcome: Result<Appended, BrokerError>) {
    let n = b
        .in_flight
        .fetch_sub(1, Ordering::Relaxed)
        .saturating_sub(1);
    b.metrics.broker.in_flight.set(n as i64);
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

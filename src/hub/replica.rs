//! What cluster mode adds to the hub (`docs/cluster.md`): publishes go
//! to the [`Sequencer`](super::Sequencer), which assigns the seq; every
//! process, the publisher's included, reads the frame back from the
//! shared stream and [`Hub::deliver`]s it to its own subscribers, in seq
//! order; [`Hub::reload`] takes a team's streams and firing set as the
//! broker holds them (at start, and when the broker lost them).

use std::time::Duration;

use serde::Deserialize;

use super::alerts::AlertState;
use super::broker::{Answer, Appended, BrokerError, Reloaded, Stored, Submission};
use super::fanout::{fan_out_event, lag_stream, Published};
use super::{publish_span, AlertChange, Cluster, Hub, HubError, Record, TeamId};
use crate::protocol::{to_frame, AlertRecord, AlertStatus, DataFrame, Level, Stream};
use crate::telemetry::team_logs::ToTeamRecord;

/// A publish on its way: answered at once (the in-memory broker, or a
/// refusal), or when the broker answers.
pub enum Pending {
    Done(Result<Option<u64>, HubError>),
    Waiting(Box<Waiting>),
}

/// A publish the broker has not answered yet, with its spans.
pub struct Waiting {
    answer: Answer,
    timeout: Duration,
    /// The publish's producer span, and the broker call's client span.
    span: tracing::Span,
    call: tracing::Span,
}

impl Pending {
    /// Whether the outcome is known without waiting.
    pub fn is_done(&self) -> bool {
        matches!(self, Pending::Done(_))
    }

    /// The outcome of a publish known at once (the in-memory broker);
    /// for tools and tests that run without a runtime.
    ///
    /// # Panics
    /// When it is still waiting on the broker.
    pub fn now(self) -> Result<Option<u64>, HubError> {
        match self {
            Pending::Done(r) => r,
            Pending::Waiting(_) => panic!("a publish still waiting on the broker"),
        }
    }

    /// The seq of the frame (None: an alert that repeated its state).
    pub async fn wait(self) -> Result<Option<u64>, HubError> {
        let w = match self {
            Pending::Done(r) => return r,
            Pending::Waiting(w) => w,
        };
        // The broker's own timeout answers first; this one only guards
        // against an answer that never comes.
        let Waiting {
            answer,
            timeout,
            span,
            call,
        } = *w;
        let answered = tokio::time::timeout(timeout + Duration::from_secs(1), answer).await;
        let result = match answered {
            Ok(Ok(Ok(Appended::Seq(seq)))) => Ok(Some(seq)),
            Ok(Ok(Ok(Appended::Repeat))) => Ok(None),
            Ok(Ok(Err(e))) => Err(refused(e)),
            Ok(Err(_)) => Err(HubError::Unavailable(
                "broker unavailable: the connection to it was lost (the publish may have been stored)"
                    .into(),
            )),
            Err(_) => Err(HubError::Unavailable(format!(
                "broker unavailable: no answer within {} ms (the publish may have been stored)",
                (timeout * 2).as_millis()
            ))),
        };
        match &result {
            Ok(Some(seq)) => {
                span.record("opswire.seq", seq);
            }
            Ok(None) => {}
            Err(e) => {
                call.record("error.type", "unavailable");
                call.record("otel.status_code", "ERROR");
                tracing::debug!(parent: &span, error = %e, "publish refused");
            }
        }
        result
    }
}

/// A publish serialized for the sequencer, with its spans.
pub(super) struct Prepared {
    submission: Submission,
    span: tracing::Span,
    call: tracing::Span,
}

/// A log or alert frame read from a team's shared stream.
pub struct Incoming {
    /// The epoch it was appended in.
    pub epoch: String,
    pub seq: u64,
    pub ts: i64,
    pub frame: String,
    pub level: Level,
    pub source: String,
}

/// What [`Hub::deliver`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// The next one: delivered.
    InOrder,
    /// Delivered after frames this process never got (trimmed before it
    /// read them): the stream's subscribers were lagged; an alerts
    /// stream's firing set needs a reload.
    AfterGap,
    /// Already held, or of another epoch: not delivered.
    Dropped,
}

/// An alert frame's record, read back.
#[derive(Deserialize)]
struct AlertFrame {
    data: AlertRecord,
}

/// A firing alert's record from its frame, for a replica's alert state.
pub fn alert_of(frame: &str) -> Result<AlertRecord, serde_json::Error> {
    serde_json::from_str::<AlertFrame>(frame).map(|f| f.data)
}

impl Hub {
    /// Serializes `record` around its seq (with the publish span's trace
    /// id), ready for the sequencer.
    pub(super) fn prepare<T: serde::Serialize + ToTeamRecord>(
        &self,
        cluster: &Cluster,
        team: TeamId,
        record: Record<'_, T>,
        alert: Option<AlertChange>,
    ) -> Prepared {
        let name = &self.shared.topics[team].name;
        let span = publish_span(name, record.stream);
        let call = broker_span(&span, cluster, record.stream);
        let trace_id = crate::telemetry::trace_id_of(&span);
        let frame = to_frame(&DataFrame {
            kind: record.stream.frame_type(),
            team: name,
            epoch: "",
            seq: 0,
            ts: record.ts,
            trace_id: trace_id.as_deref(),
            data: record.data,
        });
        span.record("messaging.message.body.size", frame.len() as u64);
        let (head, tail) = split_at_seq(&frame);
        let (level, source) = record.log.unwrap_or((Level::Info, ""));
        Prepared {
            submission: Submission {
                team,
                stream: record.stream,
                ts: record.ts,
                level,
                source: source.to_owned(),
                head,
                tail,
                alert,
                export: record
                    .data
                    .team_record(name, record.ts)
                    .map(|r| r.traced(&span)),
            },
            span,
            call,
        }
    }

    /// Hands prepared publishes to the sequencer, all or none (a batch is
    /// never half queued: a retry of a refused one doubles nothing).
    pub(super) fn send(&self, cluster: &Cluster, prepared: Vec<Prepared>) -> Vec<Pending> {
        let (subs, spans): (Vec<Submission>, Vec<(tracing::Span, tracing::Span)>) = prepared
            .into_iter()
            .map(|p| (p.submission, (p.span, p.call)))
            .unzip();
        match cluster.sequencer.submit(subs) {
            Ok(answers) => answers
                .into_iter()
                .zip(spans)
                .map(|(answer, (span, call))| {
                    Pending::Waiting(Box::new(Waiting {
                        answer,
                        timeout: cluster.timeout,
                        span,
                        call,
                    }))
                })
                .collect(),
            Err(e) => spans
                .into_iter()
                .map(|(_, call)| {
                    call.record("error.type", "unavailable");
                    call.record("otel.status_code", "ERROR");
                    Pending::Done(Err(refused(e.clone())))
                })
                .collect(),
        }
    }

    /// Cluster mode, from the ticker: asks the broker to resolve the
    /// alerts of `team` whose `endsAt` passed. They stay in the set until
    /// their `resolved` frame comes back (so the next tick asks again if
    /// this one could not: the broker keeps one resolve).
    pub(super) fn expire_shared(&self, team: TeamId, now: i64) {
        let expired = {
            let mut st = self.lock(team);
            let expired = st.alerts.expired(now);
            if !expired.is_empty() {
                st.alerts.check_again(now);
            }
            expired
        };
        for mut record in expired {
            record.status = AlertStatus::Resolved;
            // The answer is not awaited: the frame comes back through
            // `deliver` like any other.
            drop(self.submit_alert(team, &record, now));
        }
    }

    /// Cluster mode: a frame read from `team`'s shared `stream`, which
    /// this process delivers to its subscribers. Frames come in seq
    /// order; one this process already has is dropped (returns false).
    /// One that skips seqs (they were trimmed before this process could
    /// read them) lags the stream's subscribers first: they resume, and
    /// learn they missed frames, rather than miss them silently.
    /// A frame of another epoch is dropped too: the caller reloads the
    /// team.
    pub fn deliver(&self, team: TeamId, stream: Stream, inc: Incoming) -> Delivered {
        let broker = &self.shared.broker;
        let m = &self.shared.metrics;
        let mut st = self.lock(team);
        let head = broker.head(team, stream);
        // Another epoch's frame is for a reload to sort out.
        if inc.seq <= head || *broker.epoch(team) != *inc.epoch {
            return Delivered::Dropped;
        }
        let mut delivered = Delivered::InOrder;
        if inc.seq > head + 1 {
            m.broker.frames_lost.inc_by(inc.seq - head - 1);
            lag_stream(&mut st, team, stream);
            delivered = Delivered::AfterGap;
        }
        let stored = Stored {
            seq: inc.seq,
            ts: inc.ts,
            frame: inc.frame.into(),
        };
        broker.insert(team, stream, stored.clone(), inc.level, &inc.source);
        if stream == Stream::Alerts {
            let name = &self.shared.topics[team].name;
            match alert_of(&stored.frame) {
                Ok(record) => {
                    let max = self.shared.settings.max_firing_alerts;
                    let evicted = st.alerts.record(&record, stored.clone(), max);
                    if evicted > 0 {
                        m.alerts_evicted.with_label_values(&[name]).inc_by(evicted);
                    }
                    m.alerts_firing
                        .with_label_values(&[name])
                        .set(st.alerts.len() as i64);
                }
                Err(e) => {
                    tracing::warn!(error = %e, team = %name, "an alert frame from the broker does not parse")
                }
            }
        }
        let published = Published {
            team,
            stream,
            stored: &stored,
            log: (stream == Stream::Logs).then_some((inc.level, inc.source.as_str())),
        };
        let fanout = fan_out_event(&mut st, &published, m);
        self.count_publish(
            team,
            stream,
            &fanout,
            stored.frame.len(),
            &tracing::Span::none(),
        );
        delivered
    }

    /// Cluster mode: `team`'s streams and firing set as the broker holds
    /// them, at `epoch` with these heads (logs, alerts). The firing set is
    /// always taken. A stream's history is taken, and its subscribers
    /// lagged (their resume tells them what is recoverable), when this
    /// process cannot hand its frames over in order: a new epoch, or a
    /// head beyond the broker's (the broker went back). In the same epoch,
    /// a stream held up to the broker's head or short of it stays as it
    /// is: the reader delivers the rest.
    pub fn reload(
        &self,
        team: TeamId,
        epoch: &str,
        heads: [u64; 2],
        frames: Vec<Reloaded>,
        firing: Vec<(AlertRecord, Stored)>,
    ) {
        let broker = &self.shared.broker;
        let mut st = self.lock(team);
        let same_epoch = *broker.epoch(team) == *epoch;
        let mut reset = [None; 2];
        for (i, stream) in [Stream::Logs, Stream::Alerts].into_iter().enumerate() {
            // In the same epoch, a stream this process holds up to a seq
            // the broker has (or passed) stays: the reader delivers the
            // rest, and nobody is lagged for a reload of the firing set.
            if !same_epoch || broker.head(team, stream) > heads[i] {
                lag_stream(&mut st, team, stream);
                reset[i] = Some(heads[i]);
            }
        }
        broker.reset(team, epoch, reset, frames);
        let max = self.shared.settings.max_firing_alerts;
        let mut alerts = AlertState::default();
        for (record, stored) in firing {
            alerts.record(&record, stored, max);
        }
        st.alerts = alerts;
        let name = &self.shared.topics[team].name;
        self.shared
            .metrics
            .alerts_firing
            .with_label_values(&[name])
            .set(st.alerts.len() as i64);
    }
}

/// A publish the broker refused, as the hub reports it (the broker's
/// message already says it is the broker's).
fn refused(e: BrokerError) -> HubError {
    match e {
        BrokerError::Unavailable(why) => HubError::Unavailable(why),
        e @ BrokerError::BatchTooLarge { .. } => HubError::TooLarge(e.to_string()),
        other => HubError::Unavailable(other.to_string()),
    }
}

/// The client span of one broker call (database semantic conventions),
/// a child of the publish span.
fn broker_span(parent: &tracing::Span, cluster: &Cluster, stream: Stream) -> tracing::Span {
    tracing::info_span!(
        parent: parent,
        "broker.publish",
        otel.name = "EVALSHA opswire.publish",
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        "db.system.name" = "redis",
        "db.operation.name" = "EVALSHA",
        "db.query.summary" = "EVALSHA opswire.publish",
        "db.collection.name" = stream.as_str(),
        "server.address" = %cluster.server.0,
        "server.port" = cluster.server.1,
        "error.type" = tracing::field::Empty,
    )
}

/// Splits a frame serialized with an empty epoch and seq 0 around them:
/// the frame is `head` + epoch + `","seq":` + seq + `tail`. The envelope
/// comes before `data`, so the first match is the envelope's.
fn split_at_seq(frame: &str) -> (String, String) {
    const MARK: &str = r#""epoch":"","seq":0"#;
    match frame.find(MARK) {
        Some(at) => (
            frame[..at + r#""epoch":""#.len()].to_owned(),
            frame[at + MARK.len()..].to_owned(),
        ),
        // Cannot happen: every data frame has the envelope.
        None => (String::new(), frame.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_splits_around_its_epoch_and_seq() {
        let f = r#"{"type":"log","team":"a","epoch":"","seq":0,"ts":5,"data":{"fields":{"epoch":"","seq":0}}}"#;
        let (head, tail) = split_at_seq(f);
        assert_eq!(head, r#"{"type":"log","team":"a","epoch":""#);
        let whole = format!(r#"{head}e1","seq":7{tail}"#);
        let v: serde_json::Value = serde_json::from_str(&whole).unwrap();
        assert_eq!(
            (v["epoch"].as_str(), v["seq"].as_u64()),
            (Some("e1"), Some(7))
        );
        assert_eq!(v["data"]["fields"]["seq"], 0);
    }
}

//! Unit tests of the hub: resume, isolation, lag, alerts, hosts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::fanout::{fan_out_metrics, FANOUT_CHUNK};
use super::*;
use crate::protocol::{Frame, LogFilter, ResumePoint};
use crate::time::now_micros;

fn hub(queue: usize) -> Hub {
    Hub::new(
        &["a".into(), "b".into()],
        HubSettings {
            history_logs: 5,
            history_alerts: 5,
            queue_len: queue,
            max_subscriptions: 8,
            host_stale_after: Duration::from_secs(5),
            fanout_threads: 1,
            max_firing_alerts: 3,
            max_hosts_per_team: 2,
            views: Default::default(),
        },
        Arc::new(Metrics::new()),
    )
}

fn log(msg: &str) -> LogRecord {
    LogRecord {
        level: Level::Info,
        source: "src".into(),
        host: "h".into(),
        message: msg.into(),
        fields: Default::default(),
        trace_id: None,
        time: None,
    }
}

fn seqs(out: &[Delivery]) -> Vec<u64> {
    out.iter().map(|d| d.seq).collect()
}

/// A resume of the logs stream from `seq` of `epoch`.
fn logs_from(epoch: &str, seq: u64) -> BTreeMap<Stream, ResumePoint> {
    BTreeMap::from([(
        Stream::Logs,
        ResumePoint {
            epoch: epoch.into(),
            seq,
        },
    )])
}

/// What the session's mailbox holds (its replay, then live frames).
fn queued(s: &SessionHandle) -> Vec<Delivery> {
    let mut out = Vec::new();
    s.mailbox().drain(&mut out);
    out
}

#[test]
fn resume_replays_exactly_the_missed_frames() {
    let h = hub(100);
    for i in 0..4 {
        h.log_now(0, &log(&i.to_string()), 1).unwrap();
    }
    let mut s = h.open_session();
    let resume = logs_from(&h.epoch(), 2);
    let r = s.subscribe(0, &[Stream::Logs], &resume, None).unwrap();
    assert!(r.recovered[&Stream::Logs]);
    assert_eq!(seqs(&queued(&s)), vec![3, 4]);
    // Beyond the history (5 kept): not recoverable.
    for i in 0..10 {
        h.log_now(0, &log(&i.to_string()), 1).unwrap();
    }
    let mut s2 = h.open_session();
    let r = s2.subscribe(0, &[Stream::Logs], &resume, None).unwrap();
    assert!(!r.recovered[&Stream::Logs]);
    assert!(queued(&s2).is_empty());
    // A stale epoch: not recoverable.
    let stale = logs_from("old", 13);
    let mut s3 = h.open_session();
    assert!(
        !s3.subscribe(0, &[Stream::Logs], &stale, None)
            .unwrap()
            .recovered[&Stream::Logs]
    );
}

#[test]
fn a_large_burst_splits_over_threads_and_reaches_everyone_once() {
    let boxes: Vec<Arc<Mailbox>> = (0..2 * FANOUT_CHUNK + 7)
        .map(|i| {
            let m = Arc::new(Mailbox::new(4));
            // Every third one has left the team: not offered.
            if i % 3 != 0 {
                m.accept_metrics(0, 1);
            }
            m
        })
        .collect();
    let d = Delivery {
        team: 0,
        stream: Stream::Metrics,
        seq: 1,
        ts: now_micros(),
        frame: Frame::from("m"),
        replay: false,
    };
    let lag = Metrics::new().delivery_lag[0].clone();
    let n = fan_out_metrics(&boxes, &d, &lag, 8);
    let taking = boxes.len() - boxes.len().div_ceil(3);
    assert_eq!(n.fanout as usize, taking);
    for (i, m) in boxes.iter().enumerate() {
        let mut out = Vec::new();
        m.drain(&mut out);
        assert_eq!(out.len(), usize::from(i % 3 != 0), "mailbox {i}");
    }
}

#[test]
fn teams_are_isolated_and_overflow_lags() {
    let h = hub(2);
    let mut a = h.open_session();
    let mut b = h.open_session();
    a.subscribe(0, &[Stream::Logs], &BTreeMap::new(), None)
        .unwrap();
    b.subscribe(1, &[Stream::Logs], &BTreeMap::new(), None)
        .unwrap();
    for i in 0..3 {
        h.log_now(0, &log(&i.to_string()), 1).unwrap();
    }
    let mut out = Vec::new();
    assert!(b.mailbox().drain(&mut out).is_none());
    assert!(out.is_empty());
    let lagged = a.mailbox().drain(&mut out).unwrap();
    assert_eq!(seqs(&out), vec![1, 2]);
    assert_eq!(
        lagged,
        Lagged {
            team: 0,
            stream: Stream::Logs,
            last_seq: 2
        }
    );
}

#[test]
fn alerts_dedupe_and_firing_set_is_replayed() {
    let h = hub(10);
    let mut rec = AlertRecord {
        status: AlertStatus::Firing,
        fingerprint: "f1".into(),
        alertname: "HighCpu".into(),
        severity: "critical".into(),
        labels: Default::default(),
        annotations: Default::default(),
        starts_at: "2026-11-22T10:00:00Z".into(),
        ends_at: None,
        generator_url: String::new(),
    };
    assert_eq!(h.alert_now(0, &rec, 1).unwrap(), Some(1));
    assert_eq!(h.alert_now(0, &rec, 2).unwrap(), None);
    let mut s = h.open_session();
    s.subscribe(0, &[Stream::Alerts], &BTreeMap::new(), None)
        .unwrap();
    assert_eq!(seqs(&queued(&s)), vec![1]);
    rec.status = AlertStatus::Resolved;
    assert_eq!(h.alert_now(0, &rec, 3).unwrap(), Some(2));
    assert_eq!(h.alert_now(0, &rec, 4).unwrap(), None);
    assert!(h.firing_alerts(0).is_empty());
}

#[test]
fn filtered_subscribers_skip_and_unsubscribe_purges() {
    let h = hub(10);
    let mut s = h.open_session();
    let f = LogFilter {
        min_level: Some(Level::Error),
        source: None,
    };
    s.subscribe(
        0,
        &[Stream::Logs, Stream::Metrics],
        &BTreeMap::new(),
        Some(f),
    )
    .unwrap();
    h.log_now(0, &log("info"), 1).unwrap();
    let mut err = log("boom");
    err.level = Level::Error;
    h.log_now(0, &err, 1).unwrap();
    h.publish_metrics(0, 1);
    let mut out = Vec::new();
    s.mailbox().drain(&mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].seq, 2);
    h.publish_metrics(0, 2);
    s.unsubscribe(0, &[Stream::Metrics]);
    out.clear();
    s.mailbox().drain(&mut out);
    assert!(out.is_empty());
    assert_eq!(s.streams_of(0), vec![Stream::Logs]);
}

fn alert(fp: &str, ends_at: Option<&str>) -> AlertRecord {
    AlertRecord {
        status: AlertStatus::Firing,
        fingerprint: fp.into(),
        alertname: "HighCpu".into(),
        severity: "critical".into(),
        labels: Default::default(),
        annotations: Default::default(),
        starts_at: "2026-11-22T10:00:00Z".into(),
        ends_at: ends_at.map(Into::into),
        generator_url: String::new(),
    }
}

#[test]
fn the_firing_set_is_capped_oldest_first_and_counted() {
    let h = hub(10);
    for i in 0..5 {
        h.alert_now(0, &alert(&format!("f{i}"), None), 1).unwrap();
    }
    // max_firing_alerts = 3: f0 and f1 were evicted.
    let fps: Vec<_> = h
        .firing_alerts(0)
        .into_iter()
        .map(|a| a.fingerprint)
        .collect();
    assert_eq!(fps, ["f2", "f3", "f4"]);
    let m = &h.shared.metrics;
    assert_eq!(m.alerts_evicted.with_label_values(&["a"]).get(), 2);
    assert_eq!(m.alerts_firing.with_label_values(&["a"]).get(), 3);
    // A new subscriber gets exactly the capped set.
    let mut s = h.open_session();
    s.subscribe(0, &[Stream::Alerts], &BTreeMap::new(), None)
        .unwrap();
    assert_eq!(seqs(&queued(&s)), vec![3, 4, 5]);
    // Re-firing with new content moves it to the newest end.
    let mut again = alert("f2", None);
    again.severity = "warning".into();
    h.alert_now(0, &again, 2).unwrap();
    h.alert_now(0, &alert("f5", None), 3).unwrap();
    let fps: Vec<_> = h
        .firing_alerts(0)
        .into_iter()
        .map(|a| a.fingerprint)
        .collect();
    assert_eq!(fps, ["f4", "f2", "f5"]);
}

#[test]
fn alerts_whose_end_passed_are_resolved_with_a_frame() {
    let h = hub(10);
    let mut s = h.open_session();
    s.subscribe(0, &[Stream::Alerts], &BTreeMap::new(), None)
        .unwrap();
    let soon = "2026-11-22T10:05:00Z";
    let end = crate::time::parse_rfc3339_micros(soon).unwrap();
    h.alert_now(0, &alert("f1", Some(soon)), end - 10).unwrap();
    h.alert_now(0, &alert("f2", None), end - 5).unwrap();
    h.expire_alerts(0, end - 1);
    assert_eq!(h.firing_alerts(0).len(), 2);
    h.expire_alerts(0, end);
    let left: Vec<_> = h
        .firing_alerts(0)
        .into_iter()
        .map(|a| a.fingerprint)
        .collect();
    assert_eq!(left, ["f2"]);
    let frames = queued(&s);
    assert_eq!(seqs(&frames), vec![1, 2, 3]);
    let last: serde_json::Value = serde_json::from_str(&frames[2].frame).unwrap();
    assert_eq!(
        (&last["data"]["status"], &last["data"]["fingerprint"]),
        (&serde_json::json!("resolved"), &serde_json::json!("f1"))
    );
    assert_eq!(
        h.shared
            .metrics
            .alerts_expired
            .with_label_values(&["a"])
            .get(),
        1
    );
}

#[test]
fn a_replay_takes_queue_slots_and_lags_where_it_stops() {
    // History of 5, a queue of 2: resuming from 0 queues 1 and 2,
    // then lags at 2 (the client resumes from there).
    let h = hub(2);
    for i in 0..5 {
        h.log_now(0, &log(&i.to_string()), 1).unwrap();
    }
    let mut s = h.open_session();
    let resume = logs_from(&h.epoch(), 0);
    let r = s.subscribe(0, &[Stream::Logs], &resume, None).unwrap();
    assert!(r.recovered[&Stream::Logs]);
    let mut out = Vec::new();
    let lagged = s.mailbox().drain(&mut out);
    assert_eq!(seqs(&out), vec![1, 2]);
    assert!(out.iter().all(|d| d.replay));
    assert_eq!(lagged.map(|l| l.last_seq), Some(2));
}

#[test]
fn a_team_holds_a_bounded_number_of_hosts() {
    let h = hub(10);
    let snap = |host: &str| HostSnapshot {
        host: host.into(),
        source: Default::default(),
        sampled_at: 1,
        cpu: Default::default(),
        memory: Default::default(),
        disks: vec![],
        network: vec![],
        processes: 0,
        uptime_s: 0,
    };
    h.update_host(0, &snap("h1")).unwrap();
    h.update_host(0, &snap("h2")).unwrap();
    let e = h.update_host(0, &snap("h3")).unwrap_err();
    assert!(e.to_string().contains("max_hosts_per_team"), "{e}");
    // Known hosts still update; other teams have their own room.
    h.update_host(0, &snap("h1")).unwrap();
    h.update_host(1, &snap("h3")).unwrap();
    assert_eq!(h.summary(0).hosts, ["h1", "h2"]);
}

#[test]
fn firing_sets_that_do_not_fit_lag_from_zero_never_silently() {
    // Queue of 2: a set of 3 firing alerts (the cap) fits (twice the
    // queue); a second team's set on top of it does not.
    let h = hub(2);
    for i in 0..3 {
        h.alert_now(0, &alert(&format!("a{i}"), None), 1).unwrap();
        h.alert_now(1, &alert(&format!("b{i}"), None), 1).unwrap();
    }
    let mut s = h.open_session();
    let a = s
        .subscribe(0, &[Stream::Alerts], &BTreeMap::new(), None)
        .unwrap();
    assert_eq!(a.positions[&Stream::Alerts], 3);
    let b = s
        .subscribe(1, &[Stream::Alerts], &BTreeMap::new(), None)
        .unwrap();
    assert_eq!(
        b.positions[&Stream::Alerts],
        0,
        "not all of the set went out"
    );
    let mut out = Vec::new();
    let lagged = s.mailbox().drain(&mut out).expect("lagged");
    assert_eq!((lagged.team, lagged.last_seq), (1, 0));
    assert!(out.iter().filter(|d| d.team == 1).count() < 3);
}

impl Hub {
    /// A log publish to the in-memory broker, answered at once.
    fn log_now(&self, team: TeamId, r: &LogRecord, ts: i64) -> Result<u64, HubError> {
        self.submit_log(team, r, ts)
            .now()
            .map(Option::unwrap_or_default)
    }

    /// An alert publish to the in-memory broker, answered at once.
    fn alert_now(&self, team: TeamId, r: &AlertRecord, ts: i64) -> Result<Option<u64>, HubError> {
        self.submit_alert(team, r, ts).now()
    }
}

/// A replica's frame of team 0's logs, as the broker's reader hands it.
fn incoming(epoch: &str, seq: u64) -> Incoming {
    Incoming {
        epoch: epoch.into(),
        seq,
        ts: 1,
        frame: format!(r#"{{"type":"log","seq":{seq}}}"#),
        level: Level::Info,
        source: "src".into(),
    }
}

#[test]
fn a_replica_delivers_in_seq_order_drops_doubles_and_lags_subscribers_over_a_gap() {
    let h = hub(100);
    h.reload(0, "e1", [0, 0], Vec::new(), Vec::new());
    let mut s = h.open_session();
    s.subscribe(0, &[Stream::Logs], &BTreeMap::new(), None)
        .unwrap();
    s.mailbox().release();
    let ok = Delivered::InOrder;
    assert_eq!(h.deliver(0, Stream::Logs, incoming("e1", 1)), ok);
    assert_eq!(h.deliver(0, Stream::Logs, incoming("e1", 2)), ok);
    // Read again (a reconnect's overlap): not delivered twice.
    assert_eq!(
        h.deliver(0, Stream::Logs, incoming("e1", 2)),
        Delivered::Dropped
    );
    // Another epoch's frame is left to a reload.
    assert_eq!(
        h.deliver(0, Stream::Logs, incoming("e0", 3)),
        Delivered::Dropped
    );
    assert_eq!(seqs(&queued(&s)), [1, 2]);
    // Seqs 3 and 4 were trimmed before they could be read: the
    // subscriber is told it lagged at 2, not handed 5 as if nothing
    // were missing; the history starts over at 5.
    assert_eq!(
        h.deliver(0, Stream::Logs, incoming("e1", 5)),
        Delivered::AfterGap
    );
    let mut out = Vec::new();
    let lagged = s.mailbox().drain(&mut out).expect("lagged");
    assert_eq!((lagged.stream, lagged.last_seq), (Stream::Logs, 2));
    assert!(out.is_empty());
    assert_eq!(h.head(0, Stream::Logs), 5);
    let mut again = h.open_session();
    let from_2 = logs_from("e1", 2);
    let r = again.subscribe(0, &[Stream::Logs], &from_2, None).unwrap();
    assert!(!r.recovered[&Stream::Logs]);
}

#[test]
fn a_reload_in_a_new_epoch_lags_the_old_subscribers_and_keeps_the_firing_set() {
    let h = hub(100);
    h.reload(0, "e1", [0, 0], Vec::new(), Vec::new());
    let mut s = h.open_session();
    s.subscribe(0, &[Stream::Logs, Stream::Alerts], &BTreeMap::new(), None)
        .unwrap();
    s.mailbox().release();
    assert_eq!(
        h.deliver(0, Stream::Logs, incoming("e1", 1)),
        Delivered::InOrder
    );
    let frames = vec![Reloaded {
        stream: Stream::Logs,
        stored: Stored {
            seq: 1,
            ts: 1,
            frame: Frame::from("{}"),
        },
        level: Level::Info,
        source: "src".into(),
    }];
    let alert: AlertRecord = serde_json::from_value(serde_json::json!({
        "status": "firing", "fingerprint": "fp", "alertname": "X", "severity": "warning",
        "labels": {}, "annotations": {}, "starts_at": "2026-11-22T10:00:00Z",
        "ends_at": null, "generator_url": ""
    }))
    .unwrap();
    let firing = vec![(
        alert,
        Stored {
            seq: 4,
            ts: 1,
            frame: Frame::from("{\"alert\":1}"),
        },
    )];
    h.reload(0, "e2", [1, 4], frames, firing);
    let mut out = Vec::new();
    assert!(
        s.mailbox().drain(&mut out).is_some(),
        "lagged: its epoch is gone"
    );
    assert_eq!(&*h.epoch_of(0), "e2");
    assert_eq!(h.firing_alerts(0).len(), 1);
    // A resume in the new epoch finds the reloaded history.
    let mut fresh = h.open_session();
    let resume = logs_from("e2", 0);
    let r = fresh
        .subscribe(0, &[Stream::Logs, Stream::Alerts], &resume, None)
        .unwrap();
    assert!(r.recovered[&Stream::Logs]);
    assert_eq!(
        seqs(&queued(&fresh)),
        [1, 4],
        "the log, then the firing alert"
    );
}

fn host(name: &str, cpu: f32) -> HostSnapshot {
    HostSnapshot {
        host: name.into(),
        source: Default::default(),
        sampled_at: now_micros(),
        cpu: crate::protocol::CpuStats {
            usage_pct: cpu,
            ..Default::default()
        },
        memory: Default::default(),
        disks: vec![],
        network: vec![],
        processes: 0,
        uptime_s: 0,
    }
}

/// The metrics frames a session holds, by pointer: equal pointers are one
/// serialization shared.
fn metrics_frames(s: &SessionHandle) -> Vec<(u64, *const u8, Frame)> {
    queued(s)
        .into_iter()
        .filter(|d| d.stream == Stream::Metrics)
        .map(|d| (d.seq, d.frame.as_ptr(), d.frame))
        .collect()
}

#[test]
fn a_view_frame_is_serialized_once_per_tick_for_all_its_subscribers() {
    use crate::protocol::ViewSpec;
    let h = hub(10);
    h.update_host(0, &host("db-1", 10.0)).unwrap();
    h.update_host(0, &host("pay-1", 20.0)).unwrap();
    let hosts = |p: &[&str]| ViewSpec::Hosts(p.iter().map(|s| s.to_string()).collect());
    let views = [
        None,
        Some(ViewSpec::Full),
        Some(ViewSpec::Summary),
        Some(ViewSpec::Summary),
        Some(ViewSpec::Summary),
        Some(hosts(&["pay-*", "db-9"])),
        Some(hosts(&["db-9", "pay-*", "pay-*"])),
    ];
    let sessions: Vec<SessionHandle> = views
        .iter()
        .map(|v| {
            let mut s = h.open_session();
            s.subscribe_view(0, &[Stream::Metrics], &BTreeMap::new(), None, v.as_ref())
                .unwrap();
            s
        })
        .collect();
    h.publish_metrics(0, now_micros());
    let got: Vec<_> = sessions.iter().map(metrics_frames).collect();
    for g in &got {
        assert_eq!(g.len(), 1, "one frame each");
        assert_eq!(g[0].0, 1);
    }
    let ptr = |i: usize| got[i][0].1;
    // One serialization per view, shared by its subscribers.
    assert_eq!(ptr(0), ptr(1), "full");
    assert_eq!(ptr(2), ptr(3), "summary");
    assert_eq!(ptr(3), ptr(4), "summary");
    assert_eq!(ptr(5), ptr(6), "the same host set, named in another order");
    assert_ne!(ptr(0), ptr(2));
    assert_ne!(ptr(2), ptr(5));
    let full: serde_json::Value = serde_json::from_str(&got[0][0].2).unwrap();
    assert!(full["data"].get("view").is_none());
    assert_eq!(full["data"]["hosts"].as_array().unwrap().len(), 2);
    let named: serde_json::Value = serde_json::from_str(&got[5][0].2).unwrap();
    assert_eq!(named["data"]["hosts"][0]["host"], "pay-1");
    assert_eq!(named["data"]["hosts"].as_array().unwrap().len(), 1);
    let summary: serde_json::Value = serde_json::from_str(&got[2][0].2).unwrap();
    assert_eq!(summary["data"]["view"], "summary");
    assert_eq!(summary["data"]["hosts"][1][1], 20.0, "the cpu column");

    // Late subscribers of a view nobody took at this tick: the first
    // builds its frame, the next replays the same bytes.
    let late: Vec<SessionHandle> = (0..2)
        .map(|_| {
            let mut s = h.open_session();
            let v = hosts(&["db-*"]);
            s.subscribe_view(0, &[Stream::Metrics], &BTreeMap::new(), None, Some(&v))
                .unwrap();
            s
        })
        .collect();
    let a = metrics_frames(&late[0]);
    let b = metrics_frames(&late[1]);
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_eq!(a[0].0, 1, "the tick's seq");
    assert_eq!(a[0].1, b[0].1, "built once");
    assert!(a[0].2.contains(r#""host":"db-1""#) && !a[0].2.contains("pay-1"));
}

/// Not a check: what a metrics tick costs with 200 hosts and 5,000
/// subscribers of one view (run with
/// `cargo test --lib tick_cost -- --ignored --nocapture`; a debug build's
/// numbers compare views with each other, not with production).
#[test]
#[ignore]
fn tick_cost_by_view() {
    use crate::protocol::ViewSpec;
    let h = Hub::new(
        &["a".into()],
        HubSettings {
            history_logs: 5,
            history_alerts: 5,
            queue_len: 10,
            max_subscriptions: 8,
            host_stale_after: Duration::from_secs(600),
            fanout_threads: 1,
            max_firing_alerts: 3,
            max_hosts_per_team: 1000,
            views: Default::default(),
        },
        Arc::new(Metrics::new()),
    );
    for i in 0..200 {
        h.update_host(0, &host(&format!("web-{i:03}"), i as f32))
            .unwrap();
    }
    for (label, view) in [
        ("full", None),
        ("summary", Some(ViewSpec::Summary)),
        ("hosts web-0*", Some(ViewSpec::Hosts(vec!["web-0*".into()]))),
    ] {
        let sessions: Vec<SessionHandle> = (0..5000)
            .map(|_| {
                let mut s = h.open_session();
                s.subscribe_view(0, &[Stream::Metrics], &BTreeMap::new(), None, view.as_ref())
                    .unwrap();
                s
            })
            .collect();
        let ticks = 20;
        let started = std::time::Instant::now();
        for _ in 0..ticks {
            h.publish_metrics(0, now_micros());
        }
        let per_tick = started.elapsed() / ticks;
        let bytes = metrics_frames(&sessions[0])[0].2.len();
        println!("{label}: {per_tick:?} per tick, {bytes} bytes per frame");
    }
}

//! The merged result of a run: what `--json` prints, and the human table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::frame::STREAMS;
use super::hist::{Hist, Summary};
use super::worker::{ErrorCount, Sources, StreamAcc, TeamAcc, WorkerResult};

/// The run as asked for (and as discovered: teams, tick).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunConfig {
    pub url: String,
    /// `opswire` or `socketio`.
    #[serde(default)]
    pub protocol: String,
    pub subscribers: u64,
    pub workers: usize,
    pub teams: Vec<String>,
    pub streams: Vec<String>,
    pub duration_s: u64,
    pub grace_ms: u64,
    pub ramp_rate: f64,
    pub stalled_share: f64,
    /// Logs published per second per team by the generator (0: none).
    pub log_rate: f64,
    pub tick_ms: u64,
    /// `server` (from `/api/v1/info`) or `flag` (`--tick-ms`).
    pub tick_from: String,
    pub source_ips: u32,
    /// Unix seconds at the start of the window.
    pub window_start_unix_s: f64,
    /// `--view`: `full`, `summary` or `hosts:…`.
    #[serde(default)]
    pub view: String,
    /// Whether the subscribers offered permessage-deflate.
    #[serde(default)]
    pub deflate: bool,
    /// Synthetic hosts published per team (`--fleet-hosts`).
    #[serde(default)]
    pub fleet_hosts: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConnectReport {
    pub attempted: u64,
    pub connected: u64,
    pub failed: u64,
    /// Failures by class, each with one example message.
    pub errors: BTreeMap<String, ErrorCount>,
    /// Wall time of the slowest worker's ramp (first connect to last settled).
    pub ramp_s: f64,
    /// Connect → `subscribed`, per subscriber.
    pub setup_ms: Summary,
}

/// Frames of one stream over the window, from the subscribers that read.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StreamReport {
    pub received: u64,
    /// Frames the team published in the window (its seq range) × its
    /// reading subscribers.
    pub expected: u64,
    /// expected − received: for metrics frames skipped by conflation (or
    /// late), for logs and alerts lost.
    pub missing: u64,
    /// Logs and alerts: frames missing between two received ones.
    pub seq_gaps: u64,
    pub out_of_order: u64,
    /// Metrics: duration × ticks per second × reading subscribers.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub nominal: Option<u64>,
    /// Metrics: the sources the frames came from (server processes
    /// that published the team; several in cluster mode), at most over
    /// the teams. Expected counts each source's seq range for its own
    /// subscribers.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sources: Option<u64>,
}

impl StreamReport {
    fn add(&mut self, o: &StreamReport) {
        self.received += o.received;
        self.expected += o.expected;
        self.missing += o.missing;
        self.seq_gaps += o.seq_gaps;
        self.out_of_order += o.out_of_order;
        if let Some(n) = o.nominal {
            self.nominal = Some(self.nominal.unwrap_or(0) + n);
        }
        if let Some(n) = o.sources {
            self.sources = Some(self.sources.unwrap_or(0).max(n));
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TeamReport {
    pub team: String,
    /// Connected subscribers that read.
    pub subscribers: u64,
    /// Connected subscribers that stopped reading.
    pub stalled: u64,
    pub metrics: StreamReport,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub logs: Option<StreamReport>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub alerts: Option<StreamReport>,
}

/// Lag from a frame's `ts` to its arrival, in ms.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LagReport {
    pub all: Summary,
    pub metrics: Summary,
    pub logs: Summary,
    pub alerts: Summary,
}

/// The subscribers that read: every one, unless `--stalled-share`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HealthyReport {
    pub subscribers: u64,
    /// Those that ended before the run did, by reason.
    pub disconnected: u64,
    pub disconnects: BTreeMap<String, u64>,
    pub lagged_notices: u64,
    pub error_frames: u64,
    pub metrics: StreamReport,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub logs: Option<StreamReport>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub alerts: Option<StreamReport>,
    /// Frames lost on logs and alerts (metrics may conflate).
    pub loss: u64,
    /// Lag to the kernel's receive time on the subscriber's socket.
    pub lag_ms: LagReport,
    /// Lag to the moment the generator read the frame (adds the
    /// generator's own delay: compare with `lag_ms` to see it).
    pub lag_app_ms: LagReport,
    /// Metrics: arrival − each host's `sampled_at`.
    pub data_age_ms: Summary,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StalledReport {
    pub subscribers: u64,
    /// Still established at the end of the run.
    pub open: u64,
    /// Closed by the server during the run.
    pub closed_by_server: u64,
    /// Mean bytes the kernel held unread per stalled subscriber at the end.
    pub unread_kib_mean: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerReport {
    /// The (first) server process.
    pub pid: u32,
    /// utime + stime over the window ÷ its wall time, in % of one core
    /// (several processes: their sum).
    pub cpu_pct: f64,
    /// Before the first connection, at the window's start, at its end
    /// (several processes: their sum).
    pub rss_kib_before: u64,
    pub rss_kib_start: u64,
    pub rss_kib_end: u64,
    /// (end − before) ÷ connected subscribers.
    pub rss_per_conn_kib: f64,
    /// Each process, when --server-pid listed several.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub processes: Vec<ProcessReport>,
}

/// One process over the window.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ProcessReport {
    pub pid: u32,
    /// In % of one core.
    pub cpu_pct: f64,
    pub rss_kib_end: u64,
}

/// The whole machine over the window (`/proc/stat`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MachineReport {
    pub cores: usize,
    /// Busy time of all cores, in % of one core (at most cores × 100).
    pub cpu_pct: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GeneratorReport {
    pub workers: usize,
    /// All workers together over the window, in % of one core.
    pub cpu_pct: f64,
    pub rss_kib: u64,
    /// Whether every frame's arrival came from the kernel's timestamp.
    pub kernel_timestamps: bool,
    pub frames_outside_window: u64,
    pub unparsed_frames: u64,
}

/// What the subscribers read, in bytes, over the window.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BytesReport {
    /// Read from the healthy subscribers' sockets while the window was open:
    /// WebSocket headers and control frames included, compressed as sent.
    pub wire: u64,
    /// `wire` per healthy subscriber per second.
    pub wire_per_sub_s: f64,
    /// The JSON text of the data frames counted (inflated), per healthy
    /// subscriber per second.
    pub text_per_sub_s: f64,
    /// Subscribers whose handshake accepted permessage-deflate.
    pub deflate_negotiated: u64,
}

/// The synthetic fleet (`--fleet-hosts`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FleetReport {
    pub hosts_per_team: u64,
    /// Rounds (one snapshot of every host of every team) sent.
    pub rounds: u64,
    pub sent: u64,
    pub acked: u64,
    pub errors: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PublisherReport {
    pub rate_per_team: f64,
    pub sent: u64,
    pub acked: u64,
    pub errors: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub config: RunConfig,
    pub connect: ConnectReport,
    pub healthy: HealthyReport,
    pub stalled: StalledReport,
    pub teams: Vec<TeamReport>,
    /// --watch-pid processes (e.g. Redis) over the window, by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub watched: BTreeMap<String, ProcessReport>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub machine: Option<MachineReport>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub server: Option<ServerReport>,
    pub generator: GeneratorReport,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub publisher: Option<PublisherReport>,
    #[serde(default)]
    pub bytes: BytesReport,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fleet: Option<FleetReport>,
}

/// What the coordinator measured itself.
#[derive(Default)]
pub struct Extra {
    pub server: Option<ServerReport>,
    pub publisher: Option<PublisherReport>,
    pub fleet: Option<FleetReport>,
    pub watched: BTreeMap<String, ProcessReport>,
    pub machine: Option<MachineReport>,
}

fn stream_report(acc: &StreamAcc, subscribers: u64) -> StreamReport {
    let per_sub = match (acc.seq_min, acc.seq_max) {
        (Some(a), Some(b)) if b >= a => b - a + 1,
        _ => 0,
    };
    let expected = per_sub * subscribers;
    StreamReport {
        received: acc.received,
        expected,
        missing: expected.saturating_sub(acc.received),
        seq_gaps: acc.seq_gaps,
        out_of_order: acc.out_of_order,
        nominal: None,
        sources: None,
    }
}

/// A team's metrics: each source's seq range × the subscribers reading
/// it (see [`Sources`]); a subscriber that got no frame of the window
/// expected the widest range.
fn metrics_report(acc: &StreamAcc, sources: &Sources, subscribers: u64) -> StreamReport {
    let mut r = stream_report(acc, subscribers);
    let split = sources.split();
    if split.is_empty() {
        return r;
    }
    let assigned: u64 = split.iter().map(|(_, n)| n).sum();
    let widest = split.iter().map(|(len, _)| *len).max().unwrap_or(0);
    r.expected = split.iter().map(|(len, n)| len * n).sum::<u64>()
        + subscribers.saturating_sub(assigned) * widest;
    r.missing = r.expected.saturating_sub(acc.received);
    r.sources = Some(split.len() as u64);
    r
}

fn lag_report(h: &[Hist; 3]) -> LagReport {
    let mut all = Hist::default();
    for x in h {
        all.merge(x);
    }
    LagReport {
        all: all.summary(),
        metrics: h[0].summary(),
        logs: h[1].summary(),
        alerts: h[2].summary(),
    }
}

/// Merges the workers' results.
pub fn build(config: RunConfig, workers: &[WorkerResult], extra: Extra) -> Report {
    let streams_on: Vec<bool> = STREAMS
        .iter()
        .map(|s| config.streams.iter().any(|c| c == s))
        .collect();
    let mut teams = vec![TeamAcc::default(); config.teams.len()];
    let mut errors: BTreeMap<String, ErrorCount> = BTreeMap::new();
    let mut disconnects: BTreeMap<String, u64> = BTreeMap::new();
    let (mut lag, mut lag_app) = (
        [Hist::default(), Hist::default(), Hist::default()],
        [Hist::default(), Hist::default(), Hist::default()],
    );
    let (mut age, mut setup) = (Hist::default(), Hist::default());
    let (mut attempted, mut connected, mut failed) = (0, 0, 0);
    let (mut lagged, mut error_frames, mut no_kts, mut outside, mut unparsed) = (0, 0, 0, 0, 0);
    let mut stalled = StalledReport::default();
    let mut unread = 0u64;
    let (mut cpu_s, mut window_s, mut rss, mut ramp_s) = (0.0, 0.0f64, 0, 0.0f64);
    let (mut wire, mut text, mut negotiated) = (0u64, 0u64, 0u64);
    let tck = super::procfs::clk_tck() as f64;
    for w in workers {
        attempted += w.attempted;
        connected += w.connected;
        failed += w.failed;
        for (k, e) in &w.errors {
            let x = errors.entry(k.clone()).or_default();
            x.count += e.count;
            if x.example.is_empty() {
                x.example = e.example.clone();
            }
        }
        for (k, n) in &w.disconnects {
            *disconnects.entry(k.clone()).or_default() += n;
        }
        for (t, a) in teams.iter_mut().zip(&w.teams) {
            t.healthy += a.healthy;
            t.stalled += a.stalled;
            for s in 0..3 {
                t.streams[s].merge(&a.streams[s]);
            }
            t.metrics_sources.merge(&a.metrics_sources);
        }
        for s in 0..3 {
            lag[s].merge(&Hist::from_data(&w.lag[s]));
            lag_app[s].merge(&Hist::from_data(&w.lag_app[s]));
        }
        age.merge(&Hist::from_data(&w.data_age));
        setup.merge(&Hist::from_data(&w.setup));
        lagged += w.lagged_notices;
        error_frames += w.error_frames;
        no_kts += w.no_kernel_ts;
        outside += w.outside_window;
        unparsed += w.unparsed;
        stalled.open += w.stalled_open;
        stalled.closed_by_server += w.stalled_closed;
        unread += w.stalled_unread_bytes;
        cpu_s += w.cpu_ticks as f64 / tck;
        window_s = window_s.max(w.window_s);
        rss += w.rss_kib;
        ramp_s = ramp_s.max(w.ramp_s);
        wire += w.wire_bytes;
        text += w.text_bytes;
        negotiated += w.deflate_negotiated;
    }
    let nominal_per_sub =
        (config.duration_s as f64 * 1000.0 / config.tick_ms.max(1) as f64).round() as u64;
    let mut team_reports = Vec::new();
    let mut totals: [StreamReport; 3] = Default::default();
    for (name, t) in config.teams.iter().zip(&teams) {
        let mut per = [0, 1, 2].map(|s| stream_report(&t.streams[s], t.healthy));
        per[0] = metrics_report(&t.streams[0], &t.metrics_sources, t.healthy);
        per[0].nominal = Some(nominal_per_sub * t.healthy);
        for s in 0..3 {
            totals[s].add(&per[s]);
        }
        let [m, l, a] = per;
        team_reports.push(TeamReport {
            team: name.clone(),
            subscribers: t.healthy,
            stalled: t.stalled,
            metrics: m,
            logs: streams_on[1].then_some(l),
            alerts: streams_on[2].then_some(a),
        });
        stalled.subscribers += t.stalled;
    }
    if stalled.subscribers > 0 {
        stalled.unread_kib_mean =
            (unread as f64 / 1024.0 / stalled.subscribers as f64 * 10.0).round() / 10.0;
    }
    let healthy_n: u64 = teams.iter().map(|t| t.healthy).sum();
    let [tm, tl, ta] = totals;
    let loss =
        if streams_on[1] { tl.missing } else { 0 } + if streams_on[2] { ta.missing } else { 0 };
    let cpu_pct = if window_s > 0.0 {
        (cpu_s / window_s * 1000.0).round() / 10.0
    } else {
        0.0
    };
    let workers_n = config.workers;
    Report {
        tool: format!("opswire-bench {}", env!("CARGO_PKG_VERSION")),
        connect: ConnectReport {
            attempted,
            connected,
            failed,
            errors,
            ramp_s: (ramp_s * 1000.0).round() / 1000.0,
            setup_ms: setup.summary(),
        },
        healthy: HealthyReport {
            subscribers: healthy_n,
            disconnected: disconnects.values().sum(),
            disconnects,
            lagged_notices: lagged,
            error_frames,
            metrics: tm,
            logs: streams_on[1].then_some(tl),
            alerts: streams_on[2].then_some(ta),
            loss,
            lag_ms: lag_report(&lag),
            lag_app_ms: lag_report(&lag_app),
            data_age_ms: age.summary(),
        },
        stalled,
        teams: team_reports,
        server: extra.server,
        watched: extra.watched,
        machine: extra.machine,
        generator: GeneratorReport {
            workers: workers_n,
            cpu_pct,
            rss_kib: rss,
            kernel_timestamps: no_kts == 0,
            frames_outside_window: outside,
            unparsed_frames: unparsed,
        },
        publisher: extra.publisher,
        bytes: {
            let per = |b: u64| {
                let d = (healthy_n * config.duration_s).max(1) as f64;
                (b as f64 / d).round()
            };
            BytesReport {
                wire,
                wire_per_sub_s: per(wire),
                text_per_sub_s: per(text),
                deflate_negotiated: negotiated,
            }
        },
        fleet: extra.fleet,
        config,
    }
}

fn row(out: &mut String, name: &str, s: &Summary) {
    if s.count == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "  {name:<10} {:>10} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
        s.count, s.p50, s.p90, s.p99, s.p99_9, s.max
    );
}

fn lag_table(out: &mut String, title: &str, l: &LagReport) {
    let _ = writeln!(
        out,
        "{title:<12} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "frames", "p50", "p90", "p99", "p99.9", "max"
    );
    row(out, "all", &l.all);
    if l.all.count != l.metrics.count {
        row(out, "metrics", &l.metrics);
        row(out, "logs", &l.logs);
        row(out, "alerts", &l.alerts);
    }
}

fn frames_line(out: &mut String, name: &str, s: &StreamReport, loss: bool) {
    let _ = write!(
        out,
        "  {name:<8} received {} of {} expected",
        s.received, s.expected
    );
    if let Some(n) = s.nominal {
        let _ = write!(out, " (nominal {n})");
    }
    if loss {
        let _ = writeln!(
            out,
            ", lost {} (seq gaps {}, out of order {})",
            s.missing, s.seq_gaps, s.out_of_order
        );
    } else {
        let _ = writeln!(out, ", skipped {} (metrics conflate)", s.missing);
    }
}

fn frames_and_lag(o: &mut String, r: &Report) {
    let h = &r.healthy;
    let _ = writeln!(
        o,
        "frames       {} reading subscribers, {} disconnected early, {} lagged notices",
        h.subscribers, h.disconnected, h.lagged_notices
    );
    for (reason, n) in &h.disconnects {
        let _ = writeln!(o, "  ended: {reason} ×{n}");
    }
    frames_line(o, "metrics", &h.metrics, false);
    if let Some(l) = &h.logs {
        frames_line(o, "logs", l, true);
    }
    if let Some(a) = &h.alerts {
        frames_line(o, "alerts", a, true);
    }
    let _ = writeln!(o, "loss         {}", h.loss);
    let who = if r.stalled.subscribers > 0 {
        " (healthy)"
    } else {
        ""
    };
    lag_table(o, &format!("lag ms{who}"), &h.lag_ms);
    lag_table(o, "app lag ms", &h.lag_app_ms);
    if h.data_age_ms.count > 0 {
        let a = &h.data_age_ms;
        let _ = writeln!(
            o,
            "data age ms  {:>10} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            a.count, a.p50, a.p90, a.p99, a.p99_9, a.max
        );
    }
}

/// The human table.
pub fn render(r: &Report) -> String {
    let c = &r.config;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{}: {} subscribers, {} teams, streams {}, {} worker(s), hold {} s, tick {} ms, {}",
        r.tool,
        c.subscribers,
        c.teams.len(),
        if c.streams.is_empty() {
            "none (idle)".to_string()
        } else {
            c.streams.join("+")
        },
        c.workers,
        c.duration_s,
        c.tick_ms,
        c.url
    );
    let k = &r.connect;
    let _ = writeln!(
        o,
        "connect      {} connected, {} failed of {}; ramp {:.2} s; setup p50 {:.2} ms, p99 {:.2} ms",
        k.connected, k.failed, k.attempted, k.ramp_s, k.setup_ms.p50, k.setup_ms.p99
    );
    for (class, e) in &k.errors {
        let _ = writeln!(o, "  failed: {class} ×{} (e.g. {})", e.count, e.example);
    }
    let h = &r.healthy;
    if c.streams.is_empty() {
        let _ = writeln!(
            o,
            "idle         {} connections held without subscriptions, {} ended early",
            h.subscribers, h.disconnected
        );
    } else {
        frames_and_lag(&mut o, r);
    }
    if r.stalled.subscribers > 0 {
        let s = &r.stalled;
        let _ = writeln!(
            o,
            "stalled      {} subscribers stopped reading: {} still open, {} closed by the server, {:.1} KiB unread each",
            s.subscribers, s.open, s.closed_by_server, s.unread_kib_mean
        );
    }
    if let Some(s) = &r.server {
        let pids = if s.processes.is_empty() {
            format!("pid {}", s.pid)
        } else {
            format!("{} processes", s.processes.len())
        };
        let _ = writeln!(
            o,
            "server       {pids}: cpu {:.1} %, rss {:.1} MiB before → {:.1} → {:.1} MiB ({:.1} KiB per connection)",
            s.cpu_pct,
            s.rss_kib_before as f64 / 1024.0,
            s.rss_kib_start as f64 / 1024.0,
            s.rss_kib_end as f64 / 1024.0,
            s.rss_per_conn_kib
        );
        for p in &s.processes {
            let _ = writeln!(
                o,
                "  pid {}: cpu {:.1} %, rss {:.1} MiB",
                p.pid,
                p.cpu_pct,
                p.rss_kib_end as f64 / 1024.0
            );
        }
    }
    for (name, p) in &r.watched {
        let _ = writeln!(
            o,
            "{name:<12} pid {}: cpu {:.1} %, rss {:.1} MiB",
            p.pid,
            p.cpu_pct,
            p.rss_kib_end as f64 / 1024.0
        );
    }
    if let Some(m) = &r.machine {
        let _ = writeln!(
            o,
            "machine      cpu {:.1} % of {} cores' {} %",
            m.cpu_pct,
            m.cores,
            m.cores * 100
        );
    }
    let g = &r.generator;
    let _ = writeln!(
        o,
        "generator    cpu {:.1} % over {} worker(s), rss {:.1} MiB, kernel timestamps {}",
        g.cpu_pct,
        g.workers,
        g.rss_kib as f64 / 1024.0,
        if g.kernel_timestamps { "yes" } else { "partly" }
    );
    if let Some(p) = &r.publisher {
        let _ = writeln!(
            o,
            "publisher    {} logs/s per team: {} sent, {} acked{}",
            p.rate_per_team,
            p.sent,
            p.acked,
            if p.errors.is_empty() {
                String::new()
            } else {
                format!(", errors {:?}", p.errors)
            }
        );
    }
    if let Some(f) = &r.fleet {
        let _ = writeln!(
            o,
            "fleet        {} hosts per team, once a second: {} rounds, {} sent, {} acked{}",
            f.hosts_per_team,
            f.rounds,
            f.sent,
            f.acked,
            if f.errors.is_empty() {
                String::new()
            } else {
                format!(", errors {:?}", f.errors)
            }
        );
    }
    if !c.streams.is_empty() {
        let b = &r.bytes;
        let _ = writeln!(
            o,
            "bytes        view {}{}: {:.0} B on the wire per subscriber per second ({:.0} B of JSON){}",
            if c.view.is_empty() { "full" } else { &c.view },
            if c.deflate { ", deflate offered" } else { "" },
            b.wire_per_sub_s,
            b.text_per_sub_s,
            if c.deflate {
                format!(", deflate accepted by {}", b.deflate_negotiated)
            } else {
                String::new()
            }
        );
    }
    if r.teams.len() > 1 && !c.streams.is_empty() {
        let logs_on = r.teams.iter().any(|t| t.logs.is_some());
        let _ = write!(
            o,
            "per team     {:<16} {:>6} {:>7} {:>16}",
            "team", "subs", "stalled", "metrics rx/exp"
        );
        let _ = writeln!(o, "{}", if logs_on { "      logs rx/exp" } else { "" });
        for t in &r.teams {
            let _ = write!(
                o,
                "             {:<16} {:>6} {:>7} {:>16}",
                t.team,
                t.subscribers,
                t.stalled,
                format!("{}/{}", t.metrics.received, t.metrics.expected),
            );
            let logs = t
                .logs
                .as_ref()
                .map(|l| format!(" {:>16}", format!("{}/{}", l.received, l.expected)))
                .unwrap_or_default();
            let _ = writeln!(o, "{logs}");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::WorkerResult;

    fn config() -> RunConfig {
        RunConfig {
            url: "ws://127.0.0.1:1/ws".into(),
            protocol: "opswire".into(),
            subscribers: 4,
            workers: 2,
            teams: vec!["a".into(), "b".into()],
            streams: vec!["metrics".into(), "logs".into()],
            duration_s: 2,
            grace_ms: 1000,
            ramp_rate: 100.0,
            stalled_share: 0.0,
            log_rate: 0.0,
            tick_ms: 1000,
            tick_from: "flag".into(),
            source_ips: 253,
            window_start_unix_s: 0.0,
            view: "full".into(),
            deflate: false,
            fleet_hosts: 0,
        }
    }

    #[test]
    fn merges_workers_and_counts_loss_from_seq_ranges() {
        let mut w1 = WorkerResult {
            attempted: 2,
            connected: 2,
            teams: vec![TeamAcc::default(); 2],
            ..Default::default()
        };
        let mut w2 = w1.clone();
        // Team a: one subscriber per worker; metrics seq 10..=11 seen by both.
        for (w, logs) in [(&mut w1, (5, 9, 5)), (&mut w2, (5, 9, 3))] {
            w.teams[0].healthy = 1;
            w.teams[0].streams[0] = StreamAcc {
                received: 2,
                seq_min: Some(10),
                seq_max: Some(11),
                ..Default::default()
            };
            w.teams[0].streams[1] = StreamAcc {
                received: logs.2,
                seq_min: Some(logs.0),
                seq_max: Some(logs.1),
                seq_gaps: 5 - logs.2,
                ..Default::default()
            };
            w.teams[1].healthy = 1;
        }
        let mut h = Hist::default();
        h.record(1500);
        w1.lag[0] = h.data();
        let r = build(config(), &[w1, w2], Extra::default());
        assert_eq!(r.connect.connected, 4);
        assert_eq!(r.teams[0].metrics.expected, 4);
        assert_eq!(r.teams[0].metrics.nominal, Some(4));
        let logs = r.teams[0].logs.as_ref().unwrap();
        assert_eq!((logs.expected, logs.received, logs.missing), (10, 8, 2));
        assert_eq!(r.healthy.loss, 2);
        assert_eq!(r.healthy.lag_ms.all.count, 1);
        assert!((r.healthy.lag_ms.all.p50 - 1.5).abs() < 0.01);
        assert!(r.teams[1].alerts.is_none());
        assert!(render(&r).contains("lost 2"));
    }

    #[test]
    fn metrics_expected_per_source() {
        // Team a read from two server processes whose seqs differ: one
        // subscriber on each, 3 frames each, one of them skipped.
        let mut w = WorkerResult {
            attempted: 3,
            connected: 3,
            teams: vec![TeamAcc::default(); 2],
            ..Default::default()
        };
        let t = &mut w.teams[0];
        t.healthy = 3;
        t.streams[0] = StreamAcc {
            received: 5,
            seq_min: Some(7),
            seq_max: Some(42),
            ..Default::default()
        };
        for (prev, cur) in [
            (None, (40, 1_100, 0)),
            (Some((40, 1_100, 0)), (41, 2_100, 0)),
        ] {
            t.metrics_sources.links.extend(prev.map(|p| (p, cur)));
            if prev.is_none() {
                t.metrics_sources.firsts.push((cur, 1));
            }
        }
        t.metrics_sources
            .links
            .insert(((41, 2_100, 0), (42, 3_100, 0)));
        t.metrics_sources.firsts.push(((7, 1_500, 0), 1));
        t.metrics_sources
            .links
            .insert(((7, 1_500, 0), (9, 3_500, 0)));
        // The third subscriber got nothing in the window: it expected
        // the widest range (3).
        let r = build(config(), &[w], Extra::default());
        let m = &r.teams[0].metrics;
        assert_eq!((m.expected, m.received, m.missing), (9, 5, 4));
        assert_eq!(m.sources, Some(2));
        assert_eq!(r.healthy.metrics.sources, Some(2));
        // Without sources (no frames): the team's seq range, as before.
        assert_eq!(r.teams[1].metrics.sources, None);
    }
}

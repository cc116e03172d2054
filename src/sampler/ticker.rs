//! The metrics tick: one thread that samples this host at the start of
//! each tick and publishes every team's metrics frame at its slot of the
//! tick (staggered across it by default, this host's team first).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Sampler;
use crate::hub::{Hub, TeamId};
use crate::metrics::Metrics;
use crate::time::now_micros;

/// When each team's metrics frame goes out within a tick: `(offset,
/// team)` in publishing order, the local sampler's team first (its data is
/// sampled at the tick's start, so it is never held back). With `stagger`
/// the T teams sit `tick / T` apart; without, all at offset 0.
fn publish_schedule(
    teams: usize,
    local_team: TeamId,
    tick: Duration,
    stagger: bool,
) -> Vec<(Duration, TeamId)> {
    let order = std::iter::once(local_team).chain((0..teams).filter(|&t| t != local_team));
    order
        .enumerate()
        .map(|(i, team)| {
            let offset = if stagger {
                tick.mul_f64(i as f64 / teams as f64)
            } else {
                Duration::ZERO
            };
            (offset, team)
        })
        .collect()
}

/// What the ticker works with.
pub struct Ticker {
    pub hub: Hub,
    pub metrics: Arc<Metrics>,
    /// Cancelled on shutdown: the thread ends at its next wake-up.
    pub shutdown: CancellationToken,
    /// Unix µs of the last local sample (0: none yet), for readiness.
    pub last_sample_us: Arc<AtomicI64>,
    /// This host: its name and team, and whether to sample it at all.
    pub local_host: String,
    pub local_team: TeamId,
    pub sample: bool,
    pub tick: Duration,
    pub stagger: bool,
    /// The host's `/` as seen from here, when the sampler runs in a
    /// container (`sampler.host_root`).
    pub host_root: Option<std::path::PathBuf>,
    /// `sampler.mount_timeout_ms`.
    pub mount_timeout: Duration,
    /// Where in the tick this process's cycle starts. Cluster mode picks
    /// one at random: processes started together (a deploy, several on
    /// one port) then do not send every team's frame in the same instant,
    /// which doubled the p99 lag of the 50k run (docs/benchmarks.md).
    pub phase: Duration,
}

/// The ticker thread: at each tick's start, sample this host (blocking
/// /proc reads, kept off the async runtime); then publish each team's
/// metrics frame at its offset (see `publish_schedule`), resolving
/// alerts whose end has passed on the way.
pub fn spawn(t: Ticker) -> std::io::Result<std::thread::JoinHandle<()>> {
    let tick = t.tick;
    let mut sampler = if t.sample {
        match Sampler::new(t.local_host.clone(), t.host_root.clone()) {
            Ok(s) => Some(s.with_mount_timeout(t.mount_timeout, tick)),
            Err(e) => {
                tracing::error!(error = %e, "sampler unavailable; serving without local metrics");
                None
            }
        }
    } else {
        None
    };
    let schedule = publish_schedule(t.hub.team_names().count(), t.local_team, tick, t.stagger);
    std::thread::Builder::new()
        .name("opswire-ticker".into())
        .spawn(move || {
            // The first sample needs a CPU delta: take it shortly after the
            // sampler's baseline, then keep a fixed cadence.
            let mut tick_start = Instant::now() + tick.min(Duration::from_millis(250)) + t.phase;
            let mut slot = 0;
            loop {
                let due = tick_start + schedule[slot].0;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep((due - now).min(Duration::from_millis(100)));
                    if t.shutdown.is_cancelled() {
                        return;
                    }
                    continue;
                }
                if t.shutdown.is_cancelled() {
                    return;
                }
                // One trace per publishing slot (the first with the
                // sample), so each metrics frame's `trace_id` leads to the
                // tick that made it.
                let tick_span = tracing::info_span!(
                    "metrics.tick",
                    otel.name = "metrics tick",
                    "opswire.teams" = tracing::field::Empty,
                );
                let _tick = tick_span.enter();
                if slot == 0 {
                    if let Some(s) = sampler.as_mut() {
                        sample_local(&t, s);
                    }
                }
                let ts = now_micros();
                let mut published = 0u64;
                while slot < schedule.len() && tick_start + schedule[slot].0 <= Instant::now() {
                    t.hub.expire_alerts(schedule[slot].1, ts);
                    t.hub.publish_metrics(schedule[slot].1, ts);
                    slot += 1;
                    published += 1;
                }
                tick_span.record("opswire.teams", published);
                drop(_tick);
                if slot == schedule.len() {
                    slot = 0;
                    tick_start += tick;
                    // After a stall (suspend, overload) skip missed ticks
                    // rather than bursting them.
                    let now = Instant::now();
                    if tick_start + tick < now {
                        tick_start = now + tick;
                    }
                }
            }
        })
}

/// Samples this host into its team (the next metrics frame carries it).
fn sample_local(t: &Ticker, s: &mut Sampler) {
    let started = Instant::now();
    let sample_span = tracing::info_span!(
        "sampler.sample",
        otel.name = "sample host",
        "host.name" = s.host(),
    );
    let snap = sample_span.in_scope(|| s.sample());
    drop(sample_span);
    t.metrics
        .sampler_duration
        .observe(started.elapsed().as_secs_f64());
    if let Err(e) = t.hub.update_host(t.local_team, &snap) {
        tracing::warn!(error = %e, "local snapshot refused");
    }
    t.last_sample_us.store(snap.sampled_at, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staggered_teams_spread_over_the_tick_local_team_first() {
        let tick = Duration::from_millis(1000);
        let s = publish_schedule(4, 2, tick, true);
        let ms: Vec<(u128, TeamId)> = s.iter().map(|(d, t)| (d.as_millis(), *t)).collect();
        assert_eq!(ms, vec![(0, 2), (250, 0), (500, 1), (750, 3)]);
        let flat = publish_schedule(3, 0, tick, false);
        assert!(flat.iter().all(|(d, _)| d.is_zero()));
        assert_eq!(
            flat.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
    }
}

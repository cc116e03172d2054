//! Pacing log lines under the hub's rate limit.
//!
//! The hub gives each ingest connection a token bucket, answers an op over
//! budget with `rate_limited`, and closes a connection that keeps going
//! over (1008). Retrying refused lines after a pause is not enough: a
//! producer faster than the bucket's refill would be refused again and
//! again until the hub hangs up. So the first refusal turns pacing on:
//! the send rate drops to half of what the hub was accepting, and is
//! halved again on each new refusal, then grows by a quarter every second
//! without one (AIMD, as TCP does), until it is fast enough to be switched
//! off. While paced, fewer ops are in flight, so a burst of refusals stays
//! short of the hub's closing threshold.

use std::time::Duration;

use tokio::time::Instant;

/// Slowest pace: even a hub with a tiny budget gets lines, and recovery
/// from a bad estimate does not take minutes.
const MIN_RATE: f64 = 10.0;
/// Past this the pacer switches off.
const MAX_RATE: f64 = 100_000.0;
/// Refusals closer together than this are one overload: the ops already
/// in flight when the bucket ran dry all come back refused.
const CUT_EVERY: Duration = Duration::from_millis(500);
/// Growth interval and factor while no refusal comes.
const RAISE_EVERY: Duration = Duration::from_secs(1);
const RAISE_FACTOR: f64 = 1.25;
/// Ops in flight at most while paced: under the hub's default
/// `limits.max_violations` (20), so the ops already on the wire when the
/// bucket runs dry cannot get the connection closed.
pub const PACED_IN_FLIGHT: usize = 16;

/// Counts events over the last second, in four slots of 250 ms.
struct RateMeter {
    slots: [u64; 4],
    current: usize,
    slot_start: Instant,
}

const SLOT: Duration = Duration::from_millis(250);

impl RateMeter {
    fn new(now: Instant) -> RateMeter {
        RateMeter {
            slots: [0; 4],
            current: 0,
            slot_start: now,
        }
    }

    fn advance(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.slot_start);
        if elapsed >= 4 * SLOT {
            self.slots = [0; 4];
            self.slot_start = now;
            return;
        }
        let mut left = elapsed;
        while left >= SLOT {
            self.current = (self.current + 1) % 4;
            self.slots[self.current] = 0;
            self.slot_start += SLOT;
            left -= SLOT;
        }
    }

    fn count(&mut self, now: Instant) {
        self.advance(now);
        self.slots[self.current] += 1;
    }

    /// Events in about the last second.
    fn per_sec(&mut self, now: Instant) -> f64 {
        self.advance(now);
        self.slots.iter().sum::<u64>() as f64
    }
}

pub struct Pacer {
    /// Lines per second; `None`: not paced.
    rate: Option<f64>,
    tokens: f64,
    refilled: Instant,
    last_cut: Option<Instant>,
    last_raise: Instant,
    acks: RateMeter,
}

impl Pacer {
    pub fn new(now: Instant) -> Pacer {
        Pacer {
            rate: None,
            tokens: 0.0,
            refilled: now,
            last_cut: None,
            last_raise: now,
            acks: RateMeter::new(now),
        }
    }

    /// The pace in lines per second, when paced.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    pub fn on_ack(&mut self, now: Instant) {
        self.acks.count(now);
    }

    /// A line came back `rate_limited`. Returns the new pace when this
    /// refusal cut it (the first of an overload).
    pub fn on_refusal(&mut self, now: Instant) -> Option<f64> {
        if self
            .last_cut
            .is_some_and(|at| now.saturating_duration_since(at) < CUT_EVERY)
        {
            return None;
        }
        let accepted = self.acks.per_sec(now);
        let base = self
            .rate
            .map_or(accepted, |r| r.min(accepted.max(MIN_RATE)));
        let rate = (base / 2.0).max(MIN_RATE);
        self.rate = Some(rate);
        self.tokens = 0.0;
        self.refilled = now;
        self.last_cut = Some(now);
        self.last_raise = now;
        Some(rate)
    }

    /// How many lines may go now (`usize::MAX` when not paced).
    pub fn allowance(&mut self, now: Instant) -> usize {
        let Some(mut rate) = self.rate else {
            return usize::MAX;
        };
        if now.saturating_duration_since(self.last_raise) >= RAISE_EVERY {
            rate *= RAISE_FACTOR;
            self.last_raise = now;
            if rate > MAX_RATE {
                self.rate = None;
                return usize::MAX;
            }
            self.rate = Some(rate);
        }
        let dt = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        // A tenth of a second's worth at most: smooth, not bursty.
        let cap = (rate / 10.0).max(1.0);
        self.tokens = (self.tokens + rate * dt).min(cap);
        self.tokens as usize
    }

    /// `n` lines went out.
    pub fn spend(&mut self, n: usize) {
        if self.rate.is_some() {
            self.tokens = (self.tokens - n as f64).max(0.0);
        }
    }

    /// When the next line may go, while paced and out of tokens.
    pub fn next_at(&self, now: Instant) -> Option<Instant> {
        let rate = self.rate?;
        let missing = (1.0 - self.tokens).max(0.0);
        Some(now + Duration::from_secs_f64(missing / rate))
    }

    /// Ops that may be in flight at once.
    pub fn window(&self, unpaced: usize) -> usize {
        if self.rate.is_some() {
            PACED_IN_FLIGHT.min(unpaced)
        } else {
            unpaced
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpaced_until_the_first_refusal() {
        let now = Instant::now();
        let mut p = Pacer::new(now);
        assert_eq!(p.allowance(now), usize::MAX);
        assert_eq!(p.window(256), 256);
        assert_eq!(p.next_at(now), None);
    }

    #[test]
    fn a_refusal_halves_what_the_hub_accepted_once_per_overload() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        for i in 0..400 {
            p.on_ack(t0 + Duration::from_millis(i));
        }
        let t = t0 + Duration::from_millis(400);
        assert_eq!(p.on_refusal(t), Some(200.0));
        assert_eq!(p.window(256), PACED_IN_FLIGHT);
        // The other ops of the same overload do not cut again.
        assert_eq!(p.on_refusal(t + Duration::from_millis(10)), None);
        assert_eq!(p.on_refusal(t + CUT_EVERY), Some(100.0));
    }

    #[test]
    fn tokens_refill_at_the_pace_and_are_capped() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        p.on_refusal(t0); // no acks seen: the minimum pace
        assert_eq!(p.rate(), Some(MIN_RATE));
        assert_eq!(p.allowance(t0), 0);
        let next = p.next_at(t0).unwrap();
        assert_eq!(next - t0, Duration::from_millis(100));
        assert_eq!(p.allowance(t0 + Duration::from_millis(100)), 1);
        p.spend(1);
        assert_eq!(p.allowance(t0 + Duration::from_millis(150)), 0);
        // Idle for a while: still at most a tenth of a second's worth.
        assert_eq!(p.allowance(t0 + Duration::from_millis(900)), 1);
    }

    #[test]
    fn the_pace_grows_without_refusals_and_switches_off() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        p.on_refusal(t0);
        p.allowance(t0 + RAISE_EVERY);
        assert_eq!(p.rate(), Some(MIN_RATE * RAISE_FACTOR));
        let mut t = t0 + RAISE_EVERY;
        for _ in 0..100 {
            t += RAISE_EVERY;
            if p.allowance(t) == usize::MAX {
                break;
            }
        }
        assert_eq!(p.rate(), None, "fast enough: pacing is off again");
    }

    #[test]
    fn the_meter_forgets_after_a_second() {
        let t0 = Instant::now();
        let mut m = RateMeter::new(t0);
        for _ in 0..10 {
            m.count(t0);
        }
        assert_eq!(m.per_sec(t0 + Duration::from_millis(500)), 10.0);
        assert_eq!(m.per_sec(t0 + Duration::from_millis(1100)), 0.0);
        m.count(t0 + Duration::from_millis(5000));
        assert_eq!(m.per_sec(t0 + Duration::from_millis(5000)), 1.0);
    }
}

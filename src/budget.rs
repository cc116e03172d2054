//! What a client may send, and how fast: token buckets for every inbound
//! WebSocket frame, per connection and per token subject.
//!
//! * **Per connection**, every frame costs a token: ops, pings, pongs and
//!   each part of a fragmented message. A frame that costs the server
//!   nothing to answer still costs a read and a wake-up; a flood of them
//!   must end. The bucket's size depends on the scope (`ingest`
//!   connections publish hundreds of lines a second); both buckets live as
//!   long as the connection, so switching scope with `auth` ops never
//!   refills one.
//! * **Per subject** (the token's `sub`), across every connection of this
//!   process, each op (a text or binary message) also costs a token: fifty
//!   connections of one subject share one budget, not fifty. Anonymous
//!   dev-mode clients have no subject and only the per-connection budget.
//!   A subject whose bucket is full again is forgotten, so memory follows
//!   the subjects active in the last few seconds.
//!
//! A frame over budget is refused; more than `limits.max_violations`
//! refusals in a row, each within a second of the one before, end the
//! connection (close 1008).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::auth::Scope;
use crate::config::LimitsConfig;

fn quota(rate: u32, burst: u32) -> Quota {
    // Validated non-zero in Config::validate.
    let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

/// Checks of subject buckets between two sweeps of idle subjects.
const SWEEP_EVERY: u64 = 1024;

/// The budgets of every token subject of this process.
pub struct SubjectBudgets {
    read: DefaultKeyedRateLimiter<Arc<str>>,
    ingest: DefaultKeyedRateLimiter<Arc<str>>,
    checks: AtomicU64,
}

impl SubjectBudgets {
    pub fn new(l: &LimitsConfig) -> SubjectBudgets {
        SubjectBudgets {
            read: RateLimiter::keyed(quota(l.subject_inbound_rate, l.subject_inbound_burst)),
            ingest: RateLimiter::keyed(quota(l.subject_ingest_rate, l.subject_ingest_burst)),
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one op from `subject`'s bucket of `scope`; false when empty.
    pub fn take(&self, scope: Scope, subject: &Arc<str>) -> bool {
        let limiter = match scope {
            Scope::Ingest => &self.ingest,
            Scope::Read => &self.read,
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            for l in [&self.read, &self.ingest] {
                l.retain_recent();
                l.shrink_to_fit();
            }
        }
        limiter.check_key(subject).is_ok()
    }

    /// Subjects with a bucket not yet full again (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.read.len() + self.ingest.len()
    }
}

/// What became of a frame charged to a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over budget: refuse this frame.
    Refused,
    /// Over budget too often: close the connection (1008).
    Exceeded,
}

/// One connection's budget: a bucket per scope, and the strikes.
pub struct ConnectionBudget {
    read: DefaultDirectRateLimiter,
    /// Made the first time the connection holds an ingest token (boxed:
    /// most connections never do, and an idle one should stay small).
    ingest: Option<Box<DefaultDirectRateLimiter>>,
    ingest_quota: Quota,
    max_violations: u32,
    strikes: u32,
    last_violation: Instant,
}

impl ConnectionBudget {
    pub fn new(l: &LimitsConfig) -> ConnectionBudget {
        ConnectionBudget {
            read: RateLimiter::direct(quota(l.inbound_rate, l.inbound_burst)),
            ingest: None,
            ingest_quota: quota(l.ingest_rate, l.ingest_burst),
            max_violations: l.max_violations,
            strikes: 0,
            last_violation: Instant::now(),
        }
    }

    /// Charges one frame to the bucket of `scope` (`Read` before auth)
    /// and, for an op with a subject, to that subject's bucket too.
    pub fn charge(
        &mut self,
        scope: Scope,
        subject: Option<(&SubjectBudgets, &Arc<str>)>,
    ) -> Verdict {
        let quota = self.ingest_quota;
        let bucket = match scope {
            Scope::Read => &self.read,
            Scope::Ingest => self
                .ingest
                .get_or_insert_with(|| Box::new(RateLimiter::direct(quota))),
        };
        let allowed =
            bucket.check().is_ok() && subject.is_none_or(|(budgets, sub)| budgets.take(scope, sub));
        if allowed {
            return Verdict::Allowed;
        }
        let now = Instant::now();
        if now.duration_since(self.last_violation) > Duration::from_secs(1) {
            self.strikes = 0;
        }
        self.last_violation = now;
        self.strikes += 1;
        if self.strikes > self.max_violations {
            Verdict::Exceeded
        } else {
            Verdict::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LimitsConfig {
        LimitsConfig {
            inbound_rate: 1,
            inbound_burst: 3,
            ingest_rate: 1,
            ingest_burst: 5,
            subject_inbound_rate: 1,
            subject_inbound_burst: 4,
            max_violations: 2,
            ..LimitsConfig::default()
        }
    }

    fn allowed(b: &mut ConnectionBudget, scope: Scope, n: usize) -> usize {
        (0..n)
            .filter(|_| b.charge(scope, None) == Verdict::Allowed)
            .count()
    }

    #[test]
    fn switching_scope_never_refills_a_bucket() {
        let mut b = ConnectionBudget::new(&limits());
        assert_eq!(allowed(&mut b, Scope::Read, 3), 3);
        assert_eq!(allowed(&mut b, Scope::Ingest, 5), 5);
        // Back and forth: both buckets stay as drained as they were.
        assert_eq!(b.charge(Scope::Read, None), Verdict::Refused);
        assert_eq!(b.charge(Scope::Ingest, None), Verdict::Refused);
        assert_eq!(b.charge(Scope::Read, None), Verdict::Exceeded);
    }

    #[test]
    fn connections_of_one_subject_share_its_budget() {
        let l = limits();
        let subjects = SubjectBudgets::new(&l);
        let alice: Arc<str> = Arc::from("alice");
        let bob: Arc<str> = Arc::from("bob");
        let mut conns: Vec<ConnectionBudget> = (0..3).map(|_| ConnectionBudget::new(&l)).collect();
        let mut ok = 0;
        for c in &mut conns {
            for _ in 0..3 {
                ok += usize::from(
                    c.charge(Scope::Read, Some((&subjects, &alice))) == Verdict::Allowed,
                );
            }
        }
        // Nine frames within each connection's budget; four in alice's.
        assert_eq!(ok, 4);
        // Another subject has its own.
        let mut other = ConnectionBudget::new(&l);
        assert_eq!(
            other.charge(Scope::Read, Some((&subjects, &bob))),
            Verdict::Allowed
        );
        assert_eq!(subjects.tracked(), 2);
    }
}

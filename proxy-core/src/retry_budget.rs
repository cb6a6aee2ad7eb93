//! A retry budget per upstream (Finagle's and Linkerd's design): over a sliding window,
//! retries may add at most a fixed share of the requests, plus a small floor so that a
//! quiet upstream can still retry. During an outage, retries then cannot multiply the load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How many retries an upstream allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudgetPolicy {
    /// Retries allowed as a percentage of requests in the window.
    pub percent: u32,
    /// Retries allowed per second whatever the traffic.
    pub min_per_second: u32,
}

impl Default for RetryBudgetPolicy {
    /// Linkerd's defaults: 20% of requests plus 10 retries a second.
    fn default() -> Self {
        RetryBudgetPolicy {
            percent: 20,
            min_per_second: 10,
        }
    }
}

/// Seconds in the sliding window.
const WINDOW_SECS: u64 = 10;

#[derive(Debug, Default)]
struct Bucket {
    /// The second (since the budget's epoch, plus one) this bucket counts; 0 when unused.
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

/// The live budget: requests and retries counted in one-second buckets over ten seconds.
#[derive(Debug)]
pub struct RetryBudget {
    policy: RetryBudgetPolicy,
    epoch: Instant,
    buckets: [Bucket; WINDOW_SECS as usize],
}

impl RetryBudget {
    /// An empty budget.
    pub fn new(policy: RetryBudgetPolicy) -> Self {
        RetryBudget {
            policy,
            epoch: Instant::now(),
            buckets: Default::default(),
        }
    }

    /// The policy.
    pub fn policy(&self) -> RetryBudgetPolicy {
        self.policy
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs() + 1
    }

    fn bucket(&self, now: Instant) -> &Bucket {
        let sec = self.second(now);
        let b = &self.buckets[(sec % WINDOW_SECS) as usize];
        let seen = b.second.load(Ordering::Acquire);
        // Buckets only move forward, so a late caller cannot reset a newer second.
        if seen < sec
            && b.second
                .compare_exchange(seen, sec, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.requests.store(0, Ordering::Release);
            b.retries.store(0, Ordering::Release);
        }
        b
    }

    fn totals(&self, now: Instant) -> (u64, u64) {
        let sec = self.second(now);
        let oldest = sec.saturating_sub(WINDOW_SECS - 1);
        self.buckets
            .iter()
            .filter(|b| {
                let s = b.second.load(Ordering::Acquire);
                s >= oldest && s <= sec
            })
            .fold((0, 0), |(req, ret), b| {
                (
                    req + b.requests.load(Ordering::Relaxed),
                    ret + b.retries.load(Ordering::Relaxed),
                )
            })
    }

    /// Counts one request (first attempts only).
    pub fn deposit(&self, now: Instant) {
        self.bucket(now).requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget; false when the budget is spent.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        if self.remaining(now) == 0 {
            return false;
        }
        self.bucket(now).retries.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Retries left in the window right now.
    pub fn remaining(&self, now: Instant) -> u64 {
        let (requests, retries) = self.totals(now);
        (requests * u64::from(self.policy.percent) / 100
            + u64::from(self.policy.min_per_second) * WINDOW_SECS)
            .saturating_sub(retries)
    }

    /// The window retries are counted over.
    pub fn window() -> Duration {
        Duration::from_secs(WINDOW_SECS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn floor_then_share_of_requests() {
        let b = RetryBudget::new(RetryBudgetPolicy {
            percent: 20,
            min_per_second: 1,
        });
        let now = Instant::now();
        // No traffic: the floor (1/s over 10 s) allows 10.
        assert_eq!((0..20).filter(|_| b.try_withdraw(now)).count(), 10);
        // 100 requests add 20 more.
        for _ in 0..100 {
            b.deposit(now);
        }
        assert_eq!((0..50).filter(|_| b.try_withdraw(now)).count(), 20);
        assert!(!b.try_withdraw(now));
    }

    #[tokio::test(start_paused = true)]
    async fn window_slides() {
        let b = RetryBudget::new(RetryBudgetPolicy {
            percent: 0,
            min_per_second: 1,
        });
        let t0 = Instant::now();
        assert_eq!((0..20).filter(|_| b.try_withdraw(t0)).count(), 10);
        // Nine seconds on the retries still count; after ten they have left the window.
        assert!(!b.try_withdraw(t0 + Duration::from_secs(9)));
        assert!(b.try_withdraw(t0 + Duration::from_secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn amplification_is_bounded_under_steady_failure() {
        let b = RetryBudget::new(RetryBudgetPolicy::default());
        let t0 = Instant::now();
        let mut attempts = 0u64;
        let requests = 60 * 100u64;
        // 100 requests a second for a minute, every one wanting two retries.
        for i in 0..requests {
            let now = t0 + Duration::from_millis(i * 10);
            b.deposit(now);
            attempts += 1;
            for _ in 0..2 {
                if b.try_withdraw(now) {
                    attempts += 1;
                }
            }
        }
        let amplification = attempts as f64 / requests as f64;
        // 20% plus 10/s on 100/s: at most 1.3 over a long run.
        assert!(amplification <= 1.31, "amplification {amplification}");
        assert!(amplification >= 1.2, "budget unused: {amplification}");
    }
}

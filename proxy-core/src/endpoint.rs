//! Upstream endpoints and the live state balancers and health decisions read.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Latency assumed for an endpoint that has not answered yet (peak-EWMA cold start).
const DEFAULT_RTT: Duration = Duration::from_millis(1);
/// How quickly old latency observations fade (peak-EWMA decay constant).
const EWMA_DECAY: Duration = Duration::from_secs(10);

/// One upstream server: an address, a weight and its live statistics.
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    authority: http::uri::Authority,
    weight: u32,
    epoch: Instant,
    outstanding: AtomicUsize,
    /// Peak-EWMA latency estimate in nanoseconds, as `f64` bits.
    ewma_bits: AtomicU64,
    /// When `ewma_bits` was last updated, in nanoseconds since `epoch`.
    ewma_stamp: AtomicU64,
    /// End of the current ejection, in nanoseconds since `epoch`; 0 when not ejected.
    ejected_until: AtomicU64,
    /// Set when the endpoint was ejected and has not succeeded since.
    tripped: AtomicBool,
    failures: Mutex<FailWindow>,
}

#[derive(Debug, Default)]
struct FailWindow {
    fails: u32,
    started: Option<Instant>,
}

/// Passive health settings, with nginx's `max_fails` / `fail_timeout` meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveHealth {
    /// Failures within `fail_timeout` that eject the endpoint; 0 disables ejection.
    pub max_fails: u32,
    /// The window failures are counted in, and how long an ejection lasts.
    pub fail_timeout: Duration,
}

impl Default for PassiveHealth {
    /// nginx's defaults: one failure within 10 s ejects for 10 s.
    fn default() -> Self {
        PassiveHealth {
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
        }
    }
}

/// What a failure did to the endpoint's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthChange {
    /// Still in rotation.
    Unchanged,
    /// Taken out of rotation until the given time.
    Ejected(Instant),
}

impl Endpoint {
    /// A new endpoint. `authority` is what `Host` becomes when a route asks for the endpoint's
    /// name; `weight` is clamped to at least 1.
    pub fn new(addr: SocketAddr, authority: http::uri::Authority, weight: u32) -> Self {
        Endpoint {
            addr,
            authority,
            weight: weight.max(1),
            epoch: Instant::now(),
            outstanding: AtomicUsize::new(0),
            ewma_bits: AtomicU64::new((DEFAULT_RTT.as_nanos() as f64).to_bits()),
            ewma_stamp: AtomicU64::new(0),
            ejected_until: AtomicU64::new(0),
            tripped: AtomicBool::new(false),
            failures: Mutex::new(FailWindow::default()),
        }
    }

    /// The socket address connections go to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The configured name (`host:port`) of the endpoint.
    pub fn authority(&self) -> &http::uri::Authority {
        &self.authority
    }

    /// The balancing weight (at least 1).
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Requests sent to this endpoint whose response has not finished.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    fn nanos_since_epoch(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// True unless the endpoint is ejected at `now`.
    pub fn is_available(&self, now: Instant) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until == 0 || self.nanos_since_epoch(now) >= until
    }

    /// Time until the endpoint's ejection ends (zero when available).
    pub fn ejected_for(&self, now: Instant) -> Duration {
        let until = self.ejected_until.load(Ordering::Relaxed);
        Duration::from_nanos(until.saturating_sub(self.nanos_since_epoch(now)))
    }

    /// Counts a request as started; the returned guard counts it finished when dropped.
    pub fn start(self: &std::sync::Arc<Self>) -> InFlight {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight {
            endpoint: self.clone(),
        }
    }

    /// The peak-EWMA latency estimate at `now`, in nanoseconds. Estimates fade towards zero
    /// while an endpoint is idle, so a once-slow endpoint is tried again eventually.
    pub fn latency_estimate(&self, now: Instant) -> f64 {
        let est = f64::from_bits(self.ewma_bits.load(Ordering::Relaxed));
        let stamp = self.ewma_stamp.load(Ordering::Relaxed);
        let elapsed = self.nanos_since_epoch(now).saturating_sub(stamp) as f64;
        est * (-elapsed / EWMA_DECAY.as_nanos() as f64).exp()
    }

    /// Feeds one observed latency (request sent to response head) into the estimate.
    pub fn observe_latency(&self, rtt: Duration, now: Instant) {
        let rtt = rtt.as_nanos() as f64;
        let est = f64::from_bits(self.ewma_bits.load(Ordering::Relaxed));
        let stamp = self.ewma_stamp.load(Ordering::Relaxed);
        let now_ns = self.nanos_since_epoch(now);
        let w = (-(now_ns.saturating_sub(stamp) as f64) / EWMA_DECAY.as_nanos() as f64).exp();
        let next = if rtt > est {
            rtt
        } else {
            est * w + rtt * (1.0 - w)
        };
        self.ewma_bits.store(next.to_bits(), Ordering::Relaxed);
        self.ewma_stamp.store(now_ns, Ordering::Relaxed);
    }

    /// Records a failed attempt (connect error, reset, timeout).
    ///
    /// nginx semantics: `max_fails` failures within `fail_timeout` eject the endpoint for
    /// `fail_timeout`; after it comes back, one more failure before a success ejects it again.
    pub fn record_failure(&self, policy: PassiveHealth, now: Instant) -> HealthChange {
        if policy.max_fails == 0 {
            return HealthChange::Unchanged;
        }
        let mut w = match self.failures.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        let tripped = self.tripped.load(Ordering::Relaxed);
        if !tripped && w.started.is_none_or(|s| now - s >= policy.fail_timeout) {
            w.started = Some(now);
            w.fails = 0;
        }
        w.fails += 1;
        if tripped || w.fails >= policy.max_fails {
            w.fails = 0;
            w.started = None;
            let until = now + policy.fail_timeout;
            self.ejected_until
                .store(self.nanos_since_epoch(until).max(1), Ordering::Relaxed);
            self.tripped.store(true, Ordering::Relaxed);
            return HealthChange::Ejected(until);
        }
        HealthChange::Unchanged
    }

    /// Records a successful exchange; returns true when this ends an ejection episode.
    pub fn record_success(&self) -> bool {
        if !self.tripped.load(Ordering::Relaxed) {
            return false;
        }
        self.tripped.store(false, Ordering::Relaxed);
        self.ejected_until.store(0, Ordering::Relaxed);
        true
    }
}

/// Guard for one request in flight to an endpoint; decrements the count on drop.
#[derive(Debug)]
pub struct InFlight {
    endpoint: std::sync::Arc<Endpoint>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ep() -> Arc<Endpoint> {
        Arc::new(Endpoint::new(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:1".parse().unwrap(),
            1,
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn ejects_after_max_fails_within_window_and_returns() {
        let e = ep();
        let policy = PassiveHealth {
            max_fails: 3,
            fail_timeout: Duration::from_secs(10),
        };
        let t0 = Instant::now();
        assert_eq!(e.record_failure(policy, t0), HealthChange::Unchanged);
        assert_eq!(
            e.record_failure(policy, t0 + Duration::from_secs(1)),
            HealthChange::Unchanged
        );
        // Window expired: counting restarts.
        let t1 = t0 + Duration::from_secs(11);
        assert_eq!(e.record_failure(policy, t1), HealthChange::Unchanged);
        assert_eq!(e.record_failure(policy, t1), HealthChange::Unchanged);
        assert!(matches!(
            e.record_failure(policy, t1),
            HealthChange::Ejected(_)
        ));
        assert!(!e.is_available(t1));
        assert!(!e.is_available(t1 + Duration::from_secs(9)));
        assert_eq!(
            e.ejected_for(t1 + Duration::from_secs(4)),
            Duration::from_secs(6)
        );
        let back = t1 + Duration::from_secs(10);
        assert!(e.is_available(back));
        // Back on probation: the next failure ejects at once.
        assert!(matches!(
            e.record_failure(policy, back),
            HealthChange::Ejected(_)
        ));
        let later = back + Duration::from_secs(10);
        assert!(e.is_available(later));
        assert!(e.record_success());
        assert!(!e.record_success());
        assert_eq!(e.record_failure(policy, later), HealthChange::Unchanged);
    }

    #[tokio::test(start_paused = true)]
    async fn max_fails_zero_never_ejects() {
        let e = ep();
        let policy = PassiveHealth {
            max_fails: 0,
            fail_timeout: Duration::from_secs(10),
        };
        for _ in 0..10 {
            assert_eq!(
                e.record_failure(policy, Instant::now()),
                HealthChange::Unchanged
            );
        }
        assert!(e.is_available(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn peak_ewma_jumps_up_and_decays() {
        let e = ep();
        let now = Instant::now();
        e.observe_latency(Duration::from_millis(100), now);
        let est = e.latency_estimate(now);
        assert!((est - 100e6).abs() < 1.0, "peak taken at once: {est}");
        let later = now + Duration::from_secs(10);
        assert!(e.latency_estimate(later) < 40e6);
    }

    #[test]
    fn in_flight_counts() {
        let e = ep();
        let a = e.start();
        let b = e.start();
        assert_eq!(e.outstanding(), 2);
        drop(a);
        assert_eq!(e.outstanding(), 1);
        drop(b);
        assert_eq!(e.outstanding(), 0);
    }
}

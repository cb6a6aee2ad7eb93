//! Upstream endpoints and the live state balancers and health decisions read.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::breaker::RequestPermit;
use crate::health::EndpointHealth;

/// Latency assumed for an endpoint that has not answered yet (peak-EWMA cold start).
const DEFAULT_RTT: Duration = Duration::from_millis(1);
/// How quickly old latency observations fade (peak-EWMA decay constant).
const EWMA_DECAY: Duration = Duration::from_secs(10);

/// One upstream server: an address, a weight, its live statistics and its health.
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    authority: http::uri::Authority,
    weight: u32,
    backup: bool,
    epoch: Instant,
    outstanding: AtomicUsize,
    /// Peak-EWMA latency estimate in nanoseconds, as `f64` bits.
    ewma_bits: AtomicU64,
    /// When `ewma_bits` was last updated, in nanoseconds since `epoch`.
    ewma_stamp: AtomicU64,
    health: EndpointHealth,
}

impl Endpoint {
    /// A new, healthy primary endpoint. `authority` is what `Host` becomes when a route asks
    /// for the endpoint's name; `weight` is clamped to at least 1.
    pub fn new(addr: SocketAddr, authority: http::uri::Authority, weight: u32) -> Self {
        Endpoint {
            addr,
            authority,
            weight: weight.max(1),
            backup: false,
            epoch: Instant::now(),
            outstanding: AtomicUsize::new(0),
            ewma_bits: AtomicU64::new((DEFAULT_RTT.as_nanos() as f64).to_bits()),
            ewma_stamp: AtomicU64::new(0),
            health: EndpointHealth::new(false),
        }
    }

    /// Marks the endpoint as a backup, used only when no primary is available.
    pub fn backup(mut self, backup: bool) -> Self {
        self.backup = backup;
        self
    }

    /// Sets whether the endpoint starts out failing its active checks (it must pass first).
    pub fn initially_failing(mut self, failing: bool) -> Self {
        self.health = EndpointHealth::new(failing);
        self
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

    /// True for a backup endpoint.
    pub fn is_backup(&self) -> bool {
        self.backup
    }

    /// The endpoint's health.
    pub fn health(&self) -> &EndpointHealth {
        &self.health
    }

    /// Requests sent to this endpoint whose response has not finished.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    fn nanos_since_epoch(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// True when balancers may pick the endpoint at `now` (checks pass, not ejected).
    pub fn is_available(&self, now: Instant) -> bool {
        self.health.is_available(now)
    }

    /// Time until the endpoint's ejection ends (zero when not ejected).
    pub fn ejected_for(&self, now: Instant) -> Duration {
        self.health.is_ejected_for(now)
    }

    /// Counts a request as started; the returned guard counts it finished when dropped.
    pub fn start(self: &std::sync::Arc<Self>) -> InFlight {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight {
            endpoint: self.clone(),
            permit: None,
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

    /// Takes over the health and latency estimate of the same server in an earlier
    /// configuration; `keep_checks` is false when the new one has no active checks.
    pub fn inherit(&self, old: &Endpoint, keep_checks: bool) {
        self.health.inherit(&old.health, keep_checks);
        let now = Instant::now();
        self.ewma_bits
            .store(old.latency_estimate(now).to_bits(), Ordering::Relaxed);
        self.ewma_stamp
            .store(self.nanos_since_epoch(now), Ordering::Relaxed);
    }
}

/// Guard for one request in flight to an endpoint; decrements the count on drop.
#[derive(Debug)]
pub struct InFlight {
    endpoint: std::sync::Arc<Endpoint>,
    permit: Option<RequestPermit>,
}

impl InFlight {
    /// Keeps the request's circuit-breaker slot until the response ends.
    pub fn hold(&mut self, permit: RequestPermit) {
        self.permit = Some(permit);
    }
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

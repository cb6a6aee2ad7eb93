//! Load balancers: pick an endpoint for a request, skipping ejected and already-tried ones.
//!
//! Every balancer is a pure decision over the endpoints' shared statistics (outstanding
//! requests, latency estimate, ejection) and an injected clock, so each is tested
//! deterministically.

use std::hash::{DefaultHasher, Hasher};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::time::Instant;

use crate::endpoint::Endpoint;
use crate::health::SlowStart;

#[cfg(test)]
mod tests;

/// Which endpoints of an upstream may take requests, decided from their health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Available primary endpoints (the normal case).
    Primary,
    /// Available backup endpoints: no primary is available.
    Backup,
    /// Every primary endpoint, healthy or not: too few are available to carry the load
    /// (panic mode), or none is and there is no backup.
    Panic,
}

/// What a balancer knows about the request being placed.
#[derive(Debug, Clone, Copy)]
pub struct PickContext<'a> {
    /// The current time (ejections and latency estimates depend on it).
    pub now: Instant,
    /// Endpoints (by index) this request already tried; a retry must go elsewhere.
    pub tried: &'a [usize],
    /// The request's hash key, for consistent hashing.
    pub hash: Option<u64>,
    /// Which endpoints health allows.
    pub select: Selection,
    /// The upstream's slow-start ramp, if any.
    pub slow_start: Option<&'a SlowStart>,
}

impl<'a> PickContext<'a> {
    /// A context for a first attempt over available primaries, without slow start.
    pub fn new(now: Instant) -> Self {
        PickContext {
            now,
            tried: &[],
            hash: None,
            select: Selection::Primary,
            slow_start: None,
        }
    }

    /// True when endpoint `i` may receive this request.
    pub fn eligible(&self, endpoints: &[Arc<Endpoint>], i: usize) -> bool {
        let ep = &endpoints[i];
        !self.tried.contains(&i)
            && match self.select {
                Selection::Primary => !ep.is_backup() && ep.is_available(self.now),
                Selection::Backup => ep.is_backup() && ep.is_available(self.now),
                Selection::Panic => !ep.is_backup(),
            }
    }

    /// The endpoint's weight scaled by 100 and by its slow-start ramp (at least 1).
    pub fn weight(&self, ep: &Endpoint) -> u64 {
        let w = u64::from(ep.weight()) * 100;
        match self.slow_start {
            None => w,
            Some(ss) => ((w as f64 * ep.health().weight_factor(self.now, Some(ss))) as u64).max(1),
        }
    }

    /// For balancers that ignore weights: true when a ramping endpoint takes this request
    /// (with probability equal to its slow-start factor).
    pub fn admits(&self, ep: &Endpoint) -> bool {
        match self.slow_start {
            None => true,
            Some(ss) => {
                let f = ep.health().weight_factor(self.now, Some(ss));
                f >= 1.0 || fastrand::f64() < f
            }
        }
    }
}

/// Picks an endpoint for each request.
pub trait Balancer: Send + Sync + std::fmt::Debug {
    /// Returns the index of the chosen endpoint, or `None` when no endpoint is eligible.
    fn pick(&self, endpoints: &[Arc<Endpoint>], ctx: &PickContext<'_>) -> Option<usize>;
}

/// Which balancing algorithm an upstream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalancerKind {
    /// Each endpoint in turn.
    RoundRobin,
    /// Smooth weighted round robin, as nginx does it.
    WeightedRoundRobin,
    /// The endpoint with the fewest outstanding requests relative to its weight.
    LeastRequest,
    /// Power of two random choices, comparing peak-EWMA latency times outstanding requests.
    PeakEwma,
    /// Consistent hashing on the request's hash key (a ring with virtual nodes).
    ConsistentHash,
    /// Weighted random.
    Random,
}

/// Builds the balancer of `kind` for these endpoints.
pub fn build(kind: BalancerKind, endpoints: &[Arc<Endpoint>]) -> Box<dyn Balancer> {
    match kind {
        BalancerKind::RoundRobin => Box::new(RoundRobin::default()),
        BalancerKind::WeightedRoundRobin => Box::new(WeightedRoundRobin::new(endpoints.len())),
        BalancerKind::LeastRequest => Box::new(LeastRequest::default()),
        BalancerKind::PeakEwma => Box::new(PeakEwma),
        BalancerKind::ConsistentHash => Box::new(RingHash::new(endpoints)),
        BalancerKind::Random => Box::new(Random),
    }
}

/// Plain round robin: strict rotation over eligible endpoints, weights ignored.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Balancer for RoundRobin {
    fn pick(&self, endpoints: &[Arc<Endpoint>], ctx: &PickContext<'_>) -> Option<usize> {
        let n = endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut first = None;
        for i in (0..n).map(|k| (start + k) % n) {
            if !ctx.eligible(endpoints, i) {
                continue;
            }
            if ctx.admits(&endpoints[i]) {
                return Some(i);
            }
            first.get_or_insert(i);
        }
        // Every eligible endpoint is ramping and declined: take the first anyway.
        first
    }
}

/// nginx's smooth weighted round robin: weights 5,1,1 give `a a b a c a a`.
#[derive(Debug)]
pub struct WeightedRoundRobin {
    current: Mutex<Vec<i64>>,
}

impl WeightedRoundRobin {
    /// A balancer for `n` endpoints.
    pub fn new(n: usize) -> Self {
        WeightedRoundRobin {
            current: Mutex::new(vec![0; n]),
        }
    }
}

impl Balancer for WeightedRoundRobin {
    fn pick(&self, endpoints: &[Arc<Endpoint>], ctx: &PickContext<'_>) -> Option<usize> {
        let mut current = match self.current.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if current.len() != endpoints.len() {
            current.resize(endpoints.len(), 0);
        }
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for i in 0..endpoints.len() {
            if !ctx.eligible(endpoints, i) {
                continue;
            }
            let w = ctx.weight(&endpoints[i]) as i64;
            current[i] += w;
            total += w;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        current[b] -= total;
        Some(b)
    }
}

/// Least outstanding requests, weighted: minimises `outstanding / weight`; ties rotate.
#[derive(Debug, Default)]
pub struct LeastRequest {
    rotation: AtomicUsize,
}

impl Balancer for LeastRequest {
    fn pick(&self, endpoints: &[Arc<Endpoint>], ctx: &PickContext<'_>) -> Option<usize> {
        let n = endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.rotation.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, u64, u64)> = None;
        for i in (0..n).map(|k| (start + k) % n) {
            if !ctx.eligible(endpoints, i) {
                continue;
            }
            let load = endpoints[i].outstanding() as u64;
            let w = ctx.weight(&endpoints[i]);
            // load_i / w_i < load_b / w_b, compared without division.
            if best.is_none_or(|(_, bl, bw)| load * bw < bl * w) {
                best = Some((i, load, w));
            }
        }
        best.map(|(i, _, _)| i)
    }
}

/// Power of two choices over peak-EWMA latency (the Finagle / Linkerd algorithm).
#[derive(Debug, Default)]
pub struct PeakEwma;

impl PeakEwma {
    fn cost(ep: &Endpoint, ctx: &PickContext<'_>) -> f64 {
        ep.latency_estimate(ctx.now) * (ep.outstanding() as f64 + 1.0) / ctx.weight(ep) as f64
    }
}

impl Balancer for PeakEwma {
    fn pick(&self, endpoints: &[Arc<Endpoint>], ctx: &PickContext<'_>) -> Option<usize> {
        let first = random_eligible(endpoints, ctx, None)?;
        let Some(second) = random_eligible(endpoints, ctx, Some(first)) else {
            return Some(first);
        };
        let (a, b) = (
            Self::cost(&endpoints[first], ctx),
            Self::cost(&endpoints[second], ctx),
        );
        Some(if b < a { second } else { first })
    }
}

/// A uniformly random eligible endpoint other than `except`, without allocating: a random
/// start, then the next eligible one.
fn random_eligible(
    endpoints: &[Arc<Endpoint>],
    ctx: &PickContext<'_>,
    except: Option<usize>,
) -> Option<usize> {
    let n = endpoints.len();
    if n == 0 {
        return None;
    }
    let start = fastrand::usize(..n);
    (0..n)
        .map(|k| (start + k) % n)
        .find(|&i| Some(i) != except && ctx.eligible(endpoints, i))
}

/// Weighted random choice among eligible endpoints.
#[derive(Debug, Default)]
pub struct Random;

impl Balancer for Random {
    fn pick(&self, endpoints: &[Arc<Endpoint>], ctx: &PickContext<'_>) -> Option<usize> {
        let total: u64 = (0..endpoints.len())
            .filter(|&i| ctx.eligible(endpoints, i))
            .map(|i| ctx.weight(&endpoints[i]))
            .sum();
        if total == 0 {
            return None;
        }
        let mut r = fastrand::u64(..total);
        for i in 0..endpoints.len() {
            if !ctx.eligible(endpoints, i) {
                continue;
            }
            let w = ctx.weight(&endpoints[i]);
            if r < w {
                return Some(i);
            }
            r -= w;
        }
        None
    }
}

/// Virtual nodes per unit of weight on the hash ring.
const RING_POINTS_PER_WEIGHT: u32 = 160;

/// Consistent hashing on a ring (ketama style): each endpoint owns `160 × weight` points; a key
/// goes to the first eligible endpoint clockwise from its hash. When an endpoint leaves, only
/// the keys it owned move. Requests without a hash key fall back to round robin.
#[derive(Debug)]
pub struct RingHash {
    ring: Vec<(u64, u32)>,
    fallback: RoundRobin,
}

impl RingHash {
    /// Builds the ring for these endpoints.
    pub fn new(endpoints: &[Arc<Endpoint>]) -> Self {
        let mut ring = Vec::new();
        for (i, ep) in endpoints.iter().enumerate() {
            let name = ep.authority().as_str();
            for point in 0..RING_POINTS_PER_WEIGHT * ep.weight() {
                let mut h = DefaultHasher::new();
                h.write(name.as_bytes());
                h.write_u32(point);
                ring.push((h.finish(), i as u32));
            }
        }
        ring.sort_unstable();
        RingHash {
            ring,
            fallback: RoundRobin::default(),
        }
    }
}

impl Balancer for RingHash {
    fn pick(&self, endpoints: &[Arc<Endpoint>], ctx: &PickContext<'_>) -> Option<usize> {
        let Some(hash) = ctx.hash else {
            return self.fallback.pick(endpoints, ctx);
        };
        if self.ring.is_empty() {
            return None;
        }
        let start = self.ring.partition_point(|(p, _)| *p < hash);
        let len = self.ring.len();
        (0..len)
            .map(|k| self.ring[(start + k) % len].1 as usize)
            .find(|&i| i < endpoints.len() && ctx.eligible(endpoints, i))
    }
}

/// Hashes a request key (client IP, header value, cookie value) for [`PickContext::hash`].
pub fn hash_key(key: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(key);
    h.finish()
}

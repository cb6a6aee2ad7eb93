//! An upstream: a named pool of endpoints with its balancer, timeouts, health policy,
//! circuit breaker and retry budget.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::balance::{self, Balancer, BalancerKind, PickContext, Selection};
use crate::breaker::{Breaker, BreakerLimits};
use crate::connector::{ConnectOptions, Connector};
use crate::endpoint::Endpoint;
use crate::health::{HealthPolicy, HealthView, Transition};
use crate::retry_budget::{RetryBudget, RetryBudgetPolicy};

/// Where a consistent-hash balancer takes its key from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address.
    ClientIp,
    /// The value of a request header.
    Header(http::HeaderName),
    /// The value of a cookie.
    Cookie(String),
}

/// Timeouts for each phase of an upstream exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing a connection.
    pub connect: Duration,
    /// From sending the request to the response head.
    pub response_header: Duration,
    /// Longest pause between two pieces of the response body.
    pub idle: Duration,
}

impl Default for Timeouts {
    /// nginx-like defaults: 5 s connect, 60 s for the response head and between body reads.
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            response_header: Duration::from_secs(60),
            idle: Duration::from_secs(60),
        }
    }
}

/// Settings of an upstream apart from its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamPolicy {
    /// The balancing algorithm.
    pub balancer: BalancerKind,
    /// Key source for consistent hashing.
    pub hash_key: Option<HashKey>,
    /// Active checks, outlier detection, slow start and panic threshold.
    pub health: HealthPolicy,
    /// Phase timeouts.
    pub timeouts: Timeouts,
    /// Circuit-breaker limits.
    pub breaker: BreakerLimits,
    /// How many retries the upstream takes on top of its requests.
    pub retry_budget: RetryBudgetPolicy,
}

impl Default for UpstreamPolicy {
    fn default() -> Self {
        UpstreamPolicy {
            balancer: BalancerKind::RoundRobin,
            hash_key: None,
            health: HealthPolicy {
                panic_threshold: 50,
                ..HealthPolicy::default()
            },
            timeouts: Timeouts::default(),
            breaker: BreakerLimits::default(),
            retry_budget: RetryBudgetPolicy::default(),
        }
    }
}

/// A named pool of endpoints and how to reach them.
pub struct Upstream {
    name: Arc<str>,
    endpoints: Vec<Arc<Endpoint>>,
    balancer: Box<dyn Balancer>,
    policy: UpstreamPolicy,
    connector: Arc<dyn Connector>,
    breaker: Breaker,
    budget: RetryBudget,
    panicking: AtomicBool,
    retired: AtomicBool,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("endpoints", &self.endpoints)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds an upstream; the balancer is created from `policy.balancer`.
    pub fn new(
        name: impl Into<Arc<str>>,
        endpoints: Vec<Arc<Endpoint>>,
        policy: UpstreamPolicy,
        connector: Arc<dyn Connector>,
    ) -> Self {
        let balancer = balance::build(policy.balancer, &endpoints);
        Upstream {
            name: name.into(),
            endpoints,
            balancer,
            breaker: Breaker::new(policy.breaker),
            budget: RetryBudget::new(policy.retry_budget),
            policy,
            connector,
            panicking: AtomicBool::new(false),
            retired: AtomicBool::new(false),
        }
    }

    /// The upstream's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The endpoints, in configuration order.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// The policy.
    pub fn policy(&self) -> &UpstreamPolicy {
        &self.policy
    }

    /// The connector requests to this upstream go through.
    pub fn connector(&self) -> &Arc<dyn Connector> {
        &self.connector
    }

    /// Options passed to the connector on each send.
    pub fn connect_options(&self) -> ConnectOptions {
        ConnectOptions {
            connect_timeout: self.policy.timeouts.connect,
        }
    }

    /// The circuit breaker.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// The retry budget.
    pub fn budget(&self) -> &RetryBudget {
        &self.budget
    }

    /// Which endpoints may take requests now: healthy primaries; healthy backups when no
    /// primary is available; every primary (panic) when too few are available. Logs when
    /// panic mode starts or ends.
    pub fn selection(&self, now: Instant) -> Option<Selection> {
        let (selection, primaries_up, primaries) = self.assess(now);
        let panic = selection == Some(Selection::Panic);
        // Read first: a swap on every pick would bounce the cache line between cores.
        if self.panicking.load(Ordering::Relaxed) != panic
            && self.panicking.swap(panic, Ordering::Relaxed) != panic
        {
            if panic {
                tracing::warn!(
                    upstream = %self.name,
                    available = primaries_up,
                    primaries,
                    panic_threshold = self.policy.health.panic_threshold,
                    "too few endpoints available: balancing over all of them (panic mode)"
                );
            } else {
                tracing::info!(upstream = %self.name, available = primaries_up, primaries, "panic mode over");
            }
        }
        selection
    }

    /// What [`Upstream::selection`] would answer, without logging (for reports).
    pub fn current_selection(&self, now: Instant) -> Option<Selection> {
        self.assess(now).0
    }

    fn assess(&self, now: Instant) -> (Option<Selection>, usize, usize) {
        let (mut primaries, mut primaries_up, mut backups_up) = (0usize, 0usize, 0usize);
        for e in &self.endpoints {
            let up = e.is_available(now);
            if e.is_backup() {
                backups_up += usize::from(up);
            } else {
                primaries += 1;
                primaries_up += usize::from(up);
            }
        }
        let threshold = usize::from(self.policy.health.panic_threshold.min(100));
        let selection = if primaries_up > 0 && primaries_up * 100 >= threshold * primaries {
            Some(Selection::Primary)
        } else if primaries_up == 0 && backups_up > 0 {
            Some(Selection::Backup)
        } else if threshold > 0 && primaries > 0 {
            Some(Selection::Panic)
        } else {
            None
        };
        (selection, primaries_up, primaries)
    }

    /// Picks an endpoint not in `tried` among those [`Upstream::selection`] allows; `None`
    /// when none is eligible.
    pub fn pick(&self, now: Instant, tried: &[usize], hash: Option<u64>) -> Option<usize> {
        let select = self.selection(now)?;
        let ctx = PickContext {
            now,
            tried,
            hash,
            select,
            slow_start: self.policy.health.slow_start.as_ref(),
        };
        self.balancer.pick(&self.endpoints, &ctx)
    }

    /// True when one more endpoint may be ejected: at most `max_ejection_percent` of them
    /// (but always one) are out at once.
    fn may_eject(&self, now: Instant) -> bool {
        let n = self.endpoints.len();
        let pct = usize::from(self.policy.health.outlier.max_ejection_percent.min(100));
        let cap = (n * pct / 100).max(1);
        let ejected = self
            .endpoints
            .iter()
            .filter(|e| e.health().is_ejected(now))
            .count();
        ejected < cap
    }

    /// Feeds the outcome of a request to endpoint `index` into outlier detection.
    pub(crate) fn record(&self, index: usize, outcome: crate::health::Outcome, now: Instant) {
        let Some(ep) = self.endpoints.get(index) else {
            return;
        };
        if let Some(t) = ep
            .health()
            .record(outcome, &self.policy.health.outlier, now, || {
                self.may_eject(now)
            })
        {
            self.log_transition(ep, &t, None);
        }
    }

    /// Feeds an active check result for endpoint `index`; `detail` says why it failed.
    pub fn record_check(&self, index: usize, passed: bool, detail: Option<&str>, now: Instant) {
        let (Some(ep), Some(check)) = (self.endpoints.get(index), &self.policy.health.active)
        else {
            return;
        };
        if let Some(t) = ep.health().record_check(passed, check, now) {
            self.log_transition(ep, &t, detail);
        }
    }

    /// Periodic health work for every endpoint: reports ended ejections and applies the
    /// failure-percentage rule.
    pub fn sweep(&self, now: Instant) {
        for ep in &self.endpoints {
            for t in ep
                .health()
                .sweep(&self.policy.health.outlier, now, || self.may_eject(now))
            {
                self.log_transition(ep, &t, None);
            }
        }
    }

    fn log_transition(&self, ep: &Endpoint, t: &Transition, detail: Option<&str>) {
        if t.available {
            tracing::info!(
                upstream = %self.name,
                endpoint = %ep.addr(),
                cause = t.cause.as_str(),
                ejections = t.ejections,
                "endpoint healthy"
            );
        } else {
            tracing::warn!(
                upstream = %self.name,
                endpoint = %ep.addr(),
                cause = t.cause.as_str(),
                ejected_for = ?t.ejected_for,
                ejections = t.ejections,
                detail = detail.unwrap_or(""),
                "endpoint unhealthy"
            );
        }
    }

    /// Each endpoint with its health, for the admin endpoint.
    pub fn health_view(&self, now: Instant) -> Vec<(Arc<Endpoint>, HealthView)> {
        let ss = self.policy.health.slow_start.as_ref();
        self.endpoints
            .iter()
            .map(|e| (e.clone(), e.health().view(now, ss)))
            .collect()
    }

    /// Takes over the health of the same servers (same address and role) in `old`.
    pub fn inherit_health(&self, old: &Upstream) {
        let keep_checks = self.policy.health.active.is_some();
        for ep in &self.endpoints {
            if let Some(prev) = old
                .endpoints
                .iter()
                .find(|o| o.addr() == ep.addr() && o.is_backup() == ep.is_backup())
            {
                ep.inherit(prev, keep_checks);
            }
        }
    }

    /// Marks the upstream as replaced by a reload: its health monitor stops.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    /// True once [`Upstream::retire`] was called.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// How long until the first ejected endpoint returns (for `Retry-After`).
    pub fn retry_after(&self, now: Instant) -> Duration {
        self.endpoints
            .iter()
            .map(|e| e.ejected_for(now))
            .filter(|d| !d.is_zero())
            .min()
            .unwrap_or(Duration::from_secs(1))
    }
}

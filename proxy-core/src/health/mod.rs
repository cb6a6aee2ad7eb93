//! Endpoint health: active checks, passive outlier detection and slow start, combined into
//! one view per endpoint that the balancers read.
//!
//! An endpoint is *available* when its active checks (if any) pass and outlier detection has
//! not ejected it. The two signals are kept apart so that each can end on its own: an
//! ejection ends when its time is up, failing checks end after `healthy_threshold` passes.
//! Every change of either is reported as a [`Transition`] for the caller to log.
//!
//! The state machines here do no IO and take the time as an argument; [`monitor`] is the
//! task that sends the checks and sweeps the timers.

mod monitor;
mod state;

use std::ops::RangeInclusive;
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderValue, Method};

pub use monitor::{ProbeOutcome, monitor, probe};
pub(crate) use state::Outcome;
pub use state::{Cause, EndpointHealth, HealthView, Transition};

/// Everything an upstream's endpoints are judged by.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthPolicy {
    /// Active checks, when configured.
    pub active: Option<ActiveCheck>,
    /// Passive outlier detection fed by real traffic.
    pub outlier: OutlierPolicy,
    /// Weight ramp for endpoints that become healthy.
    pub slow_start: Option<SlowStart>,
    /// Percentage of primary endpoints that must be available; below it the upstream
    /// balances over all its primaries, healthy or not, rather than overload the few left
    /// (0 disables panic mode: nothing available means 503).
    pub panic_threshold: u8,
}

/// How an active check probes an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// A request through the upstream's own connector (HTTP/1.1, HTTP/2, TLS as configured).
    Http(HttpCheck),
    /// A TCP connection that opens within the timeout.
    Tcp,
}

/// An HTTP health check request and what its answer must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    /// Request method (default `GET`).
    pub method: Method,
    /// Path and query (default `/`).
    pub path: PathAndQuery,
    /// `Host` to send; the endpoint's configured `host:port` when `None`.
    pub host: Option<HeaderValue>,
    /// Statuses that pass (default 200-399).
    pub expect: Vec<RangeInclusive<u16>>,
    /// Bytes the body must contain (read up to [`HttpCheck::MAX_BODY`]).
    pub body_contains: Option<Bytes>,
}

impl HttpCheck {
    /// The most body bytes a check reads when it looks for `body_contains`.
    pub const MAX_BODY: usize = 64 * 1024;

    /// True when `status` is one the check expects.
    pub fn status_passes(&self, status: u16) -> bool {
        self.expect.iter().any(|r| r.contains(&status))
    }
}

impl Default for HttpCheck {
    fn default() -> Self {
        HttpCheck {
            method: Method::GET,
            path: PathAndQuery::from_static("/"),
            host: None,
            expect: vec![200..=399],
            body_contains: None,
        }
    }
}

/// Active health checking of every endpoint of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveCheck {
    /// What a probe is.
    pub kind: CheckKind,
    /// Time between probes of one endpoint.
    pub interval: Duration,
    /// Up to this much is added at random to each interval, so probes spread out.
    pub jitter: Duration,
    /// Longest a probe may take.
    pub timeout: Duration,
    /// Consecutive passes that make a failing endpoint healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy endpoint unhealthy.
    pub unhealthy_threshold: u32,
    /// Whether an endpoint starts out healthy (before its first probe) or must pass first.
    pub initially_healthy: bool,
}

impl Default for ActiveCheck {
    /// Envoy/HAProxy-like: every 5 s with up to 1 s of jitter, 2 s timeout, 2 passes to
    /// recover, 3 failures to fail; new endpoints start healthy.
    fn default() -> Self {
        ActiveCheck {
            kind: CheckKind::Http(HttpCheck::default()),
            interval: Duration::from_secs(5),
            jitter: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            initially_healthy: true,
        }
    }
}

/// Passive outlier detection: which failures of real requests eject an endpoint, and for
/// how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierPolicy {
    /// Consecutive gateway failures (refused, reset, timed out) within `fail_window` that
    /// eject (nginx `max_fails`; 0 disables).
    pub max_fails: u32,
    /// The window those failures must fall in (nginx `fail_timeout`).
    pub fail_window: Duration,
    /// Consecutive 5xx responses that eject (0 disables).
    pub consecutive_5xx: u32,
    /// The failure-percentage rule, evaluated once per window.
    pub failure_percentage: Option<FailurePercentage>,
    /// Length of a first ejection; each ejection in a row lasts this much longer.
    pub base_ejection: Duration,
    /// The longest an ejection lasts.
    pub max_ejection: Duration,
    /// Most of an upstream's endpoints (percent) ejected at once; at least one may always be.
    pub max_ejection_percent: u8,
}

impl Default for OutlierPolicy {
    /// nginx's defaults for gateway failures (one within 10 s ejects for 10 s), no 5xx or
    /// percentage rule, ejections growing up to 5 minutes, at most half the endpoints out.
    fn default() -> Self {
        OutlierPolicy {
            max_fails: 1,
            fail_window: Duration::from_secs(10),
            consecutive_5xx: 0,
            failure_percentage: None,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

/// Eject an endpoint whose share of failed requests in a window reaches a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailurePercentage {
    /// Failed share (percent) that ejects.
    pub threshold: u8,
    /// Fewest requests in the window for the rule to apply.
    pub min_requests: u32,
    /// Window length.
    pub interval: Duration,
}

/// Ramp an endpoint's weight up after it becomes healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowStart {
    /// How long the ramp lasts.
    pub window: Duration,
    /// The weight share (percent) the ramp starts from.
    pub min_weight_percent: u8,
}

impl SlowStart {
    /// The weight multiplier `elapsed` after the endpoint became healthy: linear from
    /// `min_weight_percent` to 1 over the window.
    pub fn factor(&self, elapsed: Duration) -> f64 {
        if elapsed >= self.window || self.window.is_zero() {
            return 1.0;
        }
        let min = f64::from(self.min_weight_percent.min(100)) / 100.0;
        (elapsed.as_secs_f64() / self.window.as_secs_f64()).max(min)
    }
}

#[cfg(test)]
mod tests;

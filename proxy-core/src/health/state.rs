//! One endpoint's health: atomics the balancers read on every pick, and a small state
//! machine behind a mutex that only failures, checks and sweeps touch.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::{ActiveCheck, OutlierPolicy, SlowStart};

/// `t + d`, or a year after `t` when `d` is too long to represent (configured durations are
/// not bounded).
fn far_after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(t)
}

/// `ramp_from` when the endpoint never became available after being out.
const NO_RAMP: i64 = i64::MIN;

/// Why an endpoint's health changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Active checks passed `healthy_threshold` times in a row.
    ChecksPassed,
    /// Active checks failed `unhealthy_threshold` times in a row.
    ChecksFailed,
    /// `max_fails` gateway failures in a row within the window.
    GatewayFailures,
    /// `consecutive_5xx` 5xx responses in a row.
    Consecutive5xx,
    /// The failed share of a window's requests reached the threshold.
    FailurePercentage,
    /// An ejection's time ran out.
    EjectionEnded,
}

impl Cause {
    /// A stable name for logs and the admin endpoint.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::ChecksPassed => "checks_passed",
            Cause::ChecksFailed => "checks_failed",
            Cause::GatewayFailures => "gateway_failures",
            Cause::Consecutive5xx => "consecutive_5xx",
            Cause::FailurePercentage => "failure_percentage",
            Cause::EjectionEnded => "ejection_ended",
        }
    }
}

/// A change of an endpoint's health, for the caller to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// Whether the endpoint is available after the change.
    pub available: bool,
    /// What caused it.
    pub cause: Cause,
    /// For an ejection, how long it lasts.
    pub ejected_for: Option<Duration>,
    /// Ejections in a row so far (what the ejection time grows with).
    pub ejections: u32,
}

/// A snapshot of an endpoint's health, for the admin endpoint and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthView {
    /// Balancers may pick it.
    pub available: bool,
    /// Active checks currently fail it.
    pub checks_failing: bool,
    /// Time left of the current ejection, if ejected.
    pub ejected_for: Option<Duration>,
    /// Ejections in a row, as of the last ejection (the decay for good behaviour since is
    /// applied when the next ejection is decided).
    pub ejections: u32,
    /// Slow-start weight multiplier, 1.0 outside a ramp.
    pub weight_factor: f64,
    /// Health changes since the endpoint was created.
    pub transitions: u64,
    /// The last change's cause.
    pub last_cause: Option<Cause>,
}

/// The live health of one endpoint.
#[derive(Debug)]
pub struct EndpointHealth {
    epoch: Instant,
    /// End of the current ejection, in nanoseconds since `epoch`; 0 when none.
    ejected_until: AtomicU64,
    checks_failing: AtomicBool,
    /// When the endpoint last became available, in nanoseconds from `epoch`, negative when
    /// before it (a ramp inherited across a reload); [`NO_RAMP`] when it never changed.
    ramp_from: AtomicI64,
    consecutive_5xx: AtomicU32,
    /// Gateway failures in a row; mirrored here so that successes skip the lock when zero.
    gateway_streak: AtomicU32,
    window_requests: AtomicU32,
    window_failures: AtomicU32,
    state: Mutex<State>,
}

#[derive(Debug, Default, Clone)]
struct State {
    gateway_started: Option<Instant>,
    ejections: u32,
    last_ejection_end: Option<Instant>,
    /// An ejection whose end has not been reported yet.
    ejected: bool,
    /// Consecutive probe results that disagree with `checks_failing`.
    check_streak: u32,
    window_start: Option<Instant>,
    transitions: u64,
    last_cause: Option<Cause>,
}

/// How a finished request went, as passive health sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A response below 500.
    Success,
    /// A 5xx response.
    ServerError,
    /// Refused, reset or timed out.
    GatewayFailure,
}

impl EndpointHealth {
    /// A new endpoint's health; `checks_failing` is true when active checks must pass first.
    pub fn new(checks_failing: bool) -> Self {
        EndpointHealth {
            epoch: Instant::now(),
            ejected_until: AtomicU64::new(0),
            checks_failing: AtomicBool::new(checks_failing),
            ramp_from: AtomicI64::new(NO_RAMP),
            consecutive_5xx: AtomicU32::new(0),
            gateway_streak: AtomicU32::new(0),
            window_requests: AtomicU32::new(0),
            window_failures: AtomicU32::new(0),
            state: Mutex::new(State::default()),
        }
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn signed_nanos(&self, t: Instant) -> i64 {
        let (d, sign) = if t >= self.epoch {
            (t - self.epoch, 1)
        } else {
            (self.epoch - t, -1)
        };
        sign * i64::try_from(d.as_nanos()).unwrap_or(i64::MAX - 1)
    }

    fn ramp_start(&self) -> Option<Instant> {
        let n = self.ramp_from.load(Ordering::Relaxed);
        if n == NO_RAMP {
            return None;
        }
        let d = Duration::from_nanos(n.unsigned_abs());
        Some(if n >= 0 {
            self.epoch + d
        } else {
            self.epoch.checked_sub(d).unwrap_or(self.epoch)
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when balancers may pick the endpoint at `now`.
    pub fn is_available(&self, now: Instant) -> bool {
        !self.checks_failing.load(Ordering::Relaxed) && self.is_ejected_for(now).is_zero()
    }

    /// True while outlier detection keeps the endpoint out.
    pub fn is_ejected(&self, now: Instant) -> bool {
        !self.is_ejected_for(now).is_zero()
    }

    /// Time left of the current ejection (zero when not ejected).
    pub fn is_ejected_for(&self, now: Instant) -> Duration {
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(until.saturating_sub(self.nanos(now)))
    }

    /// The slow-start weight multiplier at `now` (1.0 without slow start or past the ramp).
    pub fn weight_factor(&self, now: Instant, slow_start: Option<&SlowStart>) -> f64 {
        let Some(ss) = slow_start else { return 1.0 };
        match self.ramp_start() {
            None => 1.0,
            Some(from) => ss.factor(now.saturating_duration_since(from)),
        }
    }

    /// Records the outcome of a request; returns the ejection it caused, if any. `may_eject`
    /// is asked before ejecting (the upstream's cap on ejected endpoints).
    pub(crate) fn record(
        &self,
        outcome: Outcome,
        policy: &OutlierPolicy,
        now: Instant,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<Transition> {
        if policy.failure_percentage.is_some() {
            self.window_requests.fetch_add(1, Ordering::Relaxed);
            if outcome != Outcome::Success {
                self.window_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        match outcome {
            Outcome::Success => {
                if self.consecutive_5xx.load(Ordering::Relaxed) != 0 {
                    self.consecutive_5xx.store(0, Ordering::Relaxed);
                }
                if self.gateway_streak.load(Ordering::Relaxed) != 0 {
                    self.gateway_streak.store(0, Ordering::Relaxed);
                }
                None
            }
            Outcome::ServerError => {
                if self.gateway_streak.load(Ordering::Relaxed) != 0 {
                    self.gateway_streak.store(0, Ordering::Relaxed);
                }
                let n = self.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
                if policy.consecutive_5xx == 0 || n < policy.consecutive_5xx {
                    return None;
                }
                self.consecutive_5xx.store(0, Ordering::Relaxed);
                self.eject(Cause::Consecutive5xx, policy, now, may_eject)
            }
            Outcome::GatewayFailure => {
                if self.consecutive_5xx.load(Ordering::Relaxed) != 0 {
                    self.consecutive_5xx.store(0, Ordering::Relaxed);
                }
                if policy.max_fails == 0 {
                    return None;
                }
                let fails = {
                    let mut s = self.lock();
                    let streak = self.gateway_streak.load(Ordering::Relaxed);
                    if streak == 0
                        || s.gateway_started
                            .is_none_or(|t| now.saturating_duration_since(t) >= policy.fail_window)
                    {
                        s.gateway_started = Some(now);
                        self.gateway_streak.store(1, Ordering::Relaxed);
                        1
                    } else {
                        self.gateway_streak.store(streak + 1, Ordering::Relaxed);
                        streak + 1
                    }
                };
                if fails < policy.max_fails {
                    return None;
                }
                self.gateway_streak.store(0, Ordering::Relaxed);
                self.eject(Cause::GatewayFailures, policy, now, may_eject)
            }
        }
    }

    /// Ejects the endpoint unless it already is or the cap forbids it. The ejection lasts
    /// `base × n` (capped), where `n` counts ejections in a row and decays by one for every
    /// `base` the endpoint stayed in since its last ejection ended.
    fn eject(
        &self,
        cause: Cause,
        policy: &OutlierPolicy,
        now: Instant,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<Transition> {
        if self.is_ejected(now) || !may_eject() {
            return None;
        }
        let mut s = self.lock();
        if self.is_ejected(now) {
            return None;
        }
        let base = policy.base_ejection.max(Duration::from_millis(1));
        if let Some(end) = s.last_ejection_end {
            let good = now.saturating_duration_since(end);
            let decay = u32::try_from(good.as_nanos() / base.as_nanos()).unwrap_or(u32::MAX);
            s.ejections = s.ejections.saturating_sub(decay);
        }
        s.ejections = s.ejections.saturating_add(1);
        let length = base
            .saturating_mul(s.ejections)
            .min(policy.max_ejection.max(base));
        let until = far_after(now, length);
        self.ejected_until
            .store(self.nanos(until), Ordering::Relaxed);
        // Slow start ramps from the end of the ejection.
        self.ramp_from
            .store(self.signed_nanos(until), Ordering::Relaxed);
        s.last_ejection_end = Some(until);
        s.ejected = true;
        s.transitions += 1;
        s.last_cause = Some(cause);
        Some(Transition {
            available: false,
            cause,
            ejected_for: Some(length),
            ejections: s.ejections,
        })
    }

    /// Feeds one active check result; returns the transition it caused, if any.
    pub fn record_check(
        &self,
        passed: bool,
        check: &ActiveCheck,
        now: Instant,
    ) -> Option<Transition> {
        let mut s = self.lock();
        let failing = self.checks_failing.load(Ordering::Relaxed);
        if passed != failing {
            // The result agrees with the current state.
            s.check_streak = 0;
            return None;
        }
        s.check_streak += 1;
        let threshold = if failing {
            check.healthy_threshold
        } else {
            check.unhealthy_threshold
        };
        if s.check_streak < threshold.max(1) {
            return None;
        }
        s.check_streak = 0;
        s.transitions += 1;
        if failing {
            // Recovered by active checks: a strong signal, so it also ends any ejection.
            self.checks_failing.store(false, Ordering::Relaxed);
            self.ejected_until.store(0, Ordering::Relaxed);
            self.ramp_from
                .store(self.signed_nanos(now), Ordering::Relaxed);
            s.ejected = false;
            s.last_cause = Some(Cause::ChecksPassed);
            Some(Transition {
                available: true,
                cause: Cause::ChecksPassed,
                ejected_for: None,
                ejections: s.ejections,
            })
        } else {
            self.checks_failing.store(true, Ordering::Relaxed);
            s.last_cause = Some(Cause::ChecksFailed);
            Some(Transition {
                available: false,
                cause: Cause::ChecksFailed,
                ejected_for: None,
                ejections: s.ejections,
            })
        }
    }

    /// Periodic work: reports ejections that ended and applies the failure-percentage rule
    /// when its window is over. Returns what changed.
    pub fn sweep(
        &self,
        policy: &OutlierPolicy,
        now: Instant,
        may_eject: impl FnOnce() -> bool,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        {
            let mut s = self.lock();
            if s.ejected && !self.is_ejected(now) {
                s.ejected = false;
                s.transitions += 1;
                s.last_cause = Some(Cause::EjectionEnded);
                out.push(Transition {
                    available: !self.checks_failing.load(Ordering::Relaxed),
                    cause: Cause::EjectionEnded,
                    ejected_for: None,
                    ejections: s.ejections,
                });
            }
        }
        if let Some(rule) = policy.failure_percentage {
            let ended = {
                let mut s = self.lock();
                match s.window_start {
                    None => {
                        s.window_start = Some(now);
                        false
                    }
                    Some(t) if now.saturating_duration_since(t) >= rule.interval => {
                        s.window_start = Some(now);
                        true
                    }
                    Some(_) => false,
                }
            };
            if ended {
                let requests = self.window_requests.swap(0, Ordering::Relaxed);
                let failures = self.window_failures.swap(0, Ordering::Relaxed);
                if requests >= rule.min_requests.max(1)
                    && u64::from(failures) * 100 >= u64::from(rule.threshold) * u64::from(requests)
                    && let Some(t) = self.eject(Cause::FailurePercentage, policy, now, may_eject)
                {
                    out.push(t);
                }
            }
        }
        out
    }

    /// A snapshot for reporting.
    pub fn view(&self, now: Instant, slow_start: Option<&SlowStart>) -> HealthView {
        let s = self.lock();
        let ejected = self.is_ejected_for(now);
        HealthView {
            available: self.is_available(now),
            checks_failing: self.checks_failing.load(Ordering::Relaxed),
            ejected_for: (!ejected.is_zero()).then_some(ejected),
            ejections: s.ejections,
            weight_factor: self.weight_factor(now, slow_start),
            transitions: s.transitions,
            last_cause: s.last_cause,
        }
    }

    /// Takes over another endpoint's health (the same server in a reloaded configuration),
    /// so that a reload neither forgets an outage nor re-probes healthy servers from scratch.
    /// `keep_checks` is false when the new configuration has no active checks: nothing
    /// could ever clear a failing-checks state then.
    pub fn inherit(&self, old: &EndpointHealth, keep_checks: bool) {
        let state = old.lock().clone();
        let now = Instant::now();
        let ejected = old.is_ejected_for(now);
        self.ejected_until.store(
            if ejected.is_zero() {
                0
            } else {
                self.nanos(far_after(now, ejected))
            },
            Ordering::Relaxed,
        );
        self.checks_failing.store(
            keep_checks && old.checks_failing.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        let ramp = old.ramp_start().map_or(NO_RAMP, |t| self.signed_nanos(t));
        self.ramp_from.store(ramp, Ordering::Relaxed);
        *self.lock() = State {
            gateway_started: None,
            check_streak: 0,
            window_start: None,
            ..state
        };
    }
}

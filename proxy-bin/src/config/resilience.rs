//! Validation of an upstream's health, outlier, circuit-breaker and retry-budget settings,
//! and of a route's `retry` and `timeout`.

use std::ops::RangeInclusive;
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, StatusCode};
use proxy_core::health::FailurePercentage;
use proxy_core::{
    ActiveCheck, BreakerLimits, CheckKind, HealthPolicy, HttpCheck, OutlierPolicy,
    RetryBudgetPolicy, RetryOn, RetryPolicy, SlowStart,
};
use toml::Spanned;

use super::Validator;
use super::raw::{
    RawCircuitBreaker, RawHealthCheck, RawOutlier, RawRetry, RawRetryBudget, RawSlowStart,
    RawStatusRange, RawUpstream,
};

impl Validator<'_> {
    /// The health policy of an upstream.
    pub(super) fn health_policy(&mut self, u: &RawUpstream) -> HealthPolicy {
        let defaults = OutlierPolicy::default();
        let fail_timeout = self.duration(&u.fail_timeout, defaults.fail_window);
        let mut outlier = OutlierPolicy {
            max_fails: u.max_fails.unwrap_or(defaults.max_fails),
            fail_window: fail_timeout,
            base_ejection: fail_timeout,
            ..defaults
        };
        if let Some(o) = &u.outlier {
            self.outlier(o, &mut outlier);
        }
        let panic_threshold = match &u.panic_threshold {
            None => 50,
            Some(p) if *p.get_ref() <= 100 => *p.get_ref(),
            Some(p) => {
                self.error(p.span(), "panic_threshold is a percentage: 0 to 100");
                50
            }
        };
        HealthPolicy {
            active: u.health_check.as_ref().and_then(|h| self.health_check(h)),
            outlier,
            slow_start: u.slow_start.as_ref().and_then(|s| self.slow_start(s)),
            panic_threshold,
        }
    }

    fn percent(&mut self, v: &Option<Spanned<u8>>, default: u8, what: &str) -> u8 {
        match v {
            None => default,
            Some(p) if *p.get_ref() <= 100 => *p.get_ref(),
            Some(p) => {
                self.error(p.span(), format!("{what} is a percentage: 0 to 100"));
                default
            }
        }
    }

    fn outlier(&mut self, raw: &Spanned<RawOutlier>, out: &mut OutlierPolicy) {
        let o = raw.get_ref();
        out.consecutive_5xx = o.consecutive_5xx.unwrap_or(0);
        out.base_ejection = self.duration(&o.base_ejection_time, out.base_ejection);
        out.max_ejection = self.duration(&o.max_ejection_time, out.max_ejection);
        out.max_ejection_percent = self.percent(
            &o.max_ejection_percent,
            out.max_ejection_percent,
            "max_ejection_percent",
        );
        if out.base_ejection.is_zero() {
            self.error(raw.span(), "base_ejection_time must be above zero");
        }
        let interval = self.duration(&o.interval, Duration::from_secs(10));
        if o.failure_percentage.is_some() {
            if interval.is_zero() {
                self.error(raw.span(), "outlier interval must be above zero");
            }
            out.failure_percentage = Some(FailurePercentage {
                threshold: self.percent(&o.failure_percentage, 50, "failure_percentage"),
                min_requests: o.failure_percentage_min_requests.unwrap_or(20),
                interval,
            });
        } else if o.failure_percentage_min_requests.is_some() {
            self.error(
                raw.span(),
                "failure_percentage_min_requests needs failure_percentage",
            );
        }
    }

    fn slow_start(&mut self, raw: &Spanned<RawSlowStart>) -> Option<SlowStart> {
        let (window, min) = match raw.get_ref() {
            RawSlowStart::Window(w) => (w, None),
            RawSlowStart::Table {
                window,
                min_weight_percent,
            } => (window, *min_weight_percent),
        };
        let window = match super::parse_duration(window) {
            Ok(w) if !w.is_zero() => w,
            Ok(_) => {
                self.error(raw.span(), "slow_start window must be above zero");
                return None;
            }
            Err(e) => {
                self.error(raw.span(), e);
                return None;
            }
        };
        let min_weight_percent = min.unwrap_or(10);
        if !(1..=100).contains(&min_weight_percent) {
            self.error(raw.span(), "min_weight_percent must be 1 to 100");
        }
        Some(SlowStart {
            window,
            min_weight_percent,
        })
    }

    fn health_check(&mut self, raw: &Spanned<RawHealthCheck>) -> Option<ActiveCheck> {
        let h = raw.get_ref();
        let d = ActiveCheck::default();
        let before = self.errors.len();
        let interval = self.duration(&h.interval, d.interval);
        let kind = match h.kind.as_ref().map(|k| (k, k.get_ref().as_str())) {
            None | Some((_, "http")) => CheckKind::Http(self.http_check(h, raw.span())),
            Some((k, "tcp")) => {
                if h.path.is_some() || h.method.is_some() || h.expect.is_some() || h.body.is_some()
                {
                    self.error(
                        k.span(),
                        "a tcp health check only connects: remove path, method, expect and body",
                    );
                }
                CheckKind::Tcp
            }
            Some((k, other)) => {
                self.error(
                    k.span(),
                    format!("unknown health check type `{other}`: use http or tcp"),
                );
                CheckKind::Tcp
            }
        };
        let check = ActiveCheck {
            kind,
            interval,
            jitter: self.duration(&h.jitter, interval / 5),
            timeout: self.duration(&h.timeout, d.timeout),
            healthy_threshold: h.healthy_threshold.unwrap_or(d.healthy_threshold),
            unhealthy_threshold: h.unhealthy_threshold.unwrap_or(d.unhealthy_threshold),
            initially_healthy: match h.initial.as_ref().map(|i| (i, i.get_ref().as_str())) {
                None | Some((_, "healthy")) => true,
                Some((_, "unhealthy")) => false,
                Some((i, other)) => {
                    self.error(
                        i.span(),
                        format!("unknown initial state `{other}`: use healthy or unhealthy"),
                    );
                    true
                }
            },
        };
        if check.interval.is_zero() || check.timeout.is_zero() {
            self.error(
                raw.span(),
                "health check interval and timeout must be above zero",
            );
        }
        if check.healthy_threshold == 0 || check.unhealthy_threshold == 0 {
            self.error(raw.span(), "health check thresholds must be at least 1");
        }
        (self.errors.len() == before).then_some(check)
    }

    fn http_check(&mut self, h: &RawHealthCheck, span: std::ops::Range<usize>) -> HttpCheck {
        let d = HttpCheck::default();
        let method = match &h.method {
            None => d.method,
            Some(m) => Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes())
                .unwrap_or_else(|_| {
                    self.error(m.span(), format!("invalid method `{}`", m.get_ref()));
                    Method::GET
                }),
        };
        let path = match &h.path {
            None => d.path,
            Some(p) => match PathAndQuery::try_from(p.get_ref().as_str()) {
                Ok(pq) if p.get_ref().starts_with('/') => pq,
                _ => {
                    self.error(
                        p.span(),
                        format!(
                            "health check path `{}` must be an absolute path",
                            p.get_ref()
                        ),
                    );
                    d.path
                }
            },
        };
        let host = h.host.as_ref().and_then(|v| {
            HeaderValue::from_str(v.get_ref())
                .map_err(|_| self.error(v.span(), "invalid Host value"))
                .ok()
        });
        let expect = match &h.expect {
            None => d.expect,
            Some(list) => {
                let mut out = Vec::new();
                for item in list {
                    if let Some(r) = self.status_range(item) {
                        out.push(r);
                    }
                }
                if list.is_empty() {
                    self.error(span, "health check `expect` must list at least one status");
                }
                out
            }
        };
        HttpCheck {
            method,
            path,
            host,
            expect,
            body_contains: h.body.as_ref().map(|b| Bytes::from(b.get_ref().clone())),
        }
    }

    fn status_range(&mut self, raw: &Spanned<RawStatusRange>) -> Option<RangeInclusive<u16>> {
        match parse_status_range(raw.get_ref()) {
            Some(r) => Some(r),
            None => {
                self.error(
                    raw.span(),
                    "expected a status (100-599) or a range like \"200-299\"",
                );
                None
            }
        }
    }

    /// Circuit-breaker limits of an upstream.
    pub(super) fn breaker(&mut self, raw: &Option<Spanned<RawCircuitBreaker>>) -> BreakerLimits {
        let Some(raw) = raw else {
            return BreakerLimits::default();
        };
        let b = raw.get_ref();
        for (name, v) in [
            ("max_connections", b.max_connections),
            ("max_requests", b.max_requests),
        ] {
            if v == Some(0) {
                self.error(raw.span(), format!("{name} must be at least 1"));
            }
        }
        if b.max_pending.is_some() && b.max_requests.is_none() {
            self.error(raw.span(), "max_pending needs max_requests");
        }
        BreakerLimits {
            max_requests: b.max_requests,
            max_pending: b.max_pending.unwrap_or(0),
            max_retries: b.max_retries,
            max_connections: b.max_connections,
        }
    }

    /// The retry budget of an upstream.
    pub(super) fn retry_budget(
        &mut self,
        raw: &Option<Spanned<RawRetryBudget>>,
    ) -> RetryBudgetPolicy {
        let d = RetryBudgetPolicy::default();
        let Some(raw) = raw else { return d };
        let b = raw.get_ref();
        RetryBudgetPolicy {
            percent: b.percent.unwrap_or(d.percent),
            min_per_second: b.min_per_second.unwrap_or(d.min_per_second),
        }
    }

    /// A route's retry policy; `attempts` defaults to the upstream's `max_attempts`.
    pub(super) fn retry(
        &mut self,
        raw: &Option<Spanned<RawRetry>>,
        timeout: &Option<Spanned<String>>,
        upstream_attempts: u32,
    ) -> RetryPolicy {
        let d = RetryPolicy::default();
        let timeout = timeout
            .as_ref()
            .and_then(|t| match super::parse_duration(t.get_ref()) {
                Ok(v) if !v.is_zero() => Some(v),
                Ok(_) => {
                    self.error(t.span(), "timeout must be above zero");
                    None
                }
                Err(e) => {
                    self.error(t.span(), e);
                    None
                }
            });
        let Some(raw) = raw else {
            return RetryPolicy {
                attempts: upstream_attempts,
                timeout,
                ..d
            };
        };
        let r = raw.get_ref();
        let on = match &r.on {
            None => d.on,
            Some(list) => {
                let mut on = RetryOn {
                    connect_failure: false,
                    reset: false,
                    timeout: false,
                    statuses: Vec::new(),
                };
                for item in list {
                    match item.get_ref() {
                        RawStatusRange::Text(t) if t == "connect-failure" => on.connect_failure = true,
                        RawStatusRange::Text(t) if t == "reset" => on.reset = true,
                        RawStatusRange::Text(t) if t == "timeout" => on.timeout = true,
                        RawStatusRange::Text(t) if t == "gateway-error" => {
                            on.statuses.extend([StatusCode::BAD_GATEWAY, StatusCode::SERVICE_UNAVAILABLE, StatusCode::GATEWAY_TIMEOUT]);
                        }
                        RawStatusRange::Text(t) if t == "5xx" => {
                            on.statuses.extend((500..=599).filter_map(|c| StatusCode::from_u16(c).ok()));
                        }
                        _ => match parse_status_range(item.get_ref()) {
                            Some(range) => on.statuses.extend(range.filter_map(|c| StatusCode::from_u16(c).ok())),
                            None => self.error(
                                item.span(),
                                "retry `on` takes connect-failure, reset, timeout, gateway-error, 5xx or statuses",
                            ),
                        },
                    }
                }
                on.statuses.sort_unstable_by_key(StatusCode::as_u16);
                on.statuses.dedup();
                on
            }
        };
        let buffer = match &r.buffer {
            None => d.buffer,
            Some(b) => self
                .size(b)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(d.buffer),
        };
        let attempts = r.attempts.unwrap_or(upstream_attempts);
        if attempts == 0 {
            self.error(
                raw.span(),
                "retry attempts must be at least 1 (1 disables retries)",
            );
        }
        let per_try_timeout = r
            .per_try_timeout
            .as_ref()
            .map(|_| self.duration(&r.per_try_timeout, Duration::ZERO));
        if per_try_timeout.is_some_and(|t| t.is_zero()) {
            self.error(raw.span(), "per_try_timeout must be above zero");
        }
        RetryPolicy {
            attempts: attempts.max(1),
            on,
            backoff: self.duration(&r.backoff, d.backoff),
            max_backoff: self.duration(&r.max_backoff, d.max_backoff),
            per_try_timeout,
            timeout,
            non_idempotent: r.non_idempotent.unwrap_or(false),
            buffer,
        }
    }
}

/// A status (`204`, `"204"`) or a range (`"200-299"`) within 100-599.
fn parse_status_range(raw: &RawStatusRange) -> Option<RangeInclusive<u16>> {
    let parsed = match raw {
        RawStatusRange::Code(c) => Some(*c..=*c),
        RawStatusRange::Text(t) => match t.split_once('-') {
            Some((a, b)) => match (a.trim().parse::<u16>(), b.trim().parse::<u16>()) {
                (Ok(a), Ok(b)) if a <= b => Some(a..=b),
                _ => None,
            },
            None => t.trim().parse::<u16>().ok().map(|c| c..=c),
        },
    };
    parsed.filter(|r| *r.start() >= 100 && *r.end() <= 599)
}

//! Freshness (RFC 9111 section 4.2): the age calculation, the freshness lifetime of a stored
//! response, heuristic freshness, and when a stale response may be served.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode, header};

use crate::directives::{MaxStale, RequestDirectives, ResponseDirectives};

/// The times a cache records around one exchange (RFC 9111 section 4.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    /// When the request that produced the response was sent (`request_time`).
    pub request_time: SystemTime,
    /// When the response was received (`response_time`).
    pub response_time: SystemTime,
    /// The response's `Date` (`date_value`); `response_time` when it had none.
    pub date: SystemTime,
    /// The response's `Age` in seconds (`age_value`), 0 when absent or invalid.
    pub age: u64,
}

impl Exchange {
    /// Reads `Date` and `Age` from a response received at `response_time` for a request sent
    /// at `request_time`.
    pub fn new(headers: &HeaderMap, request_time: SystemTime, response_time: SystemTime) -> Self {
        Exchange {
            request_time,
            response_time,
            date: http_date(headers, &header::DATE).unwrap_or(response_time),
            age: age_value(headers),
        }
    }

    /// The corrected initial age: what the response's age was when the cache received it.
    pub fn corrected_initial_age(&self) -> u64 {
        let apparent_age = secs_between(self.date, self.response_time);
        let response_delay = secs_between(self.request_time, self.response_time);
        let corrected_age_value = self.age.saturating_add(response_delay);
        apparent_age.max(corrected_age_value)
    }

    /// The response's current age at `now` (RFC 9111 section 4.2.3).
    pub fn current_age(&self, now: SystemTime) -> u64 {
        let resident_time = secs_between(self.response_time, now);
        self.corrected_initial_age().saturating_add(resident_time)
    }
}

/// Whole seconds from `earlier` to `later`, 0 when `later` is not after `earlier`.
fn secs_between(earlier: SystemTime, later: SystemTime) -> u64 {
    later.duration_since(earlier).map_or(0, |d| d.as_secs())
}

/// An HTTP-date field, `None` when absent or invalid.
pub fn http_date(headers: &HeaderMap, name: &header::HeaderName) -> Option<SystemTime> {
    let value = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(value.trim()).ok()
}

/// `Age` as delta-seconds (RFC 9111 section 5.1); 0 when absent or invalid, capped at 2^31.
/// Of a list (`Age: 7200, 0`) the first member counts, as section 5.1 asks.
fn age_value(headers: &HeaderMap) -> u64 {
    let Some(v) = headers.get(header::AGE).and_then(|v| v.to_str().ok()) else {
        return 0;
    };
    let v = v.split(',').next().unwrap_or("").trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    v.parse::<u64>()
        .unwrap_or(u64::MAX)
        .min(crate::directives::MAX_DELTA_SECONDS)
}

/// Status codes that are heuristically cacheable (RFC 9110 section 15.1).
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// The heuristic settings of a cache (RFC 9111 section 4.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heuristic {
    /// The fraction of the time since `Last-Modified`, in percent (10 is typical).
    pub percent: u32,
    /// The longest heuristic lifetime.
    pub max: Duration,
}

impl Default for Heuristic {
    /// 10% of the time since last modification, at most one day.
    fn default() -> Self {
        Heuristic {
            percent: 10,
            max: Duration::from_secs(24 * 3600),
        }
    }
}

/// Where a freshness lifetime came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// `s-maxage`, `max-age` or `Expires`: the origin said.
    Explicit(u64),
    /// Heuristic, from `Last-Modified`.
    Heuristic(u64),
    /// Neither: the response is stale at once (0 seconds).
    None,
}

impl Lifetime {
    /// The lifetime in seconds.
    pub fn secs(self) -> u64 {
        match self {
            Lifetime::Explicit(s) | Lifetime::Heuristic(s) => s,
            Lifetime::None => 0,
        }
    }

    /// True when the origin gave explicit freshness.
    pub fn is_explicit(self) -> bool {
        matches!(self, Lifetime::Explicit(_))
    }
}

/// The freshness lifetime of a response for a shared cache (RFC 9111 section 4.2.1):
/// `s-maxage`, else `max-age`, else `Expires` minus `Date` (an invalid `Expires` means
/// already expired), else a heuristic for heuristically cacheable statuses or `public`.
pub fn lifetime(
    status: StatusCode,
    headers: &HeaderMap,
    cc: &ResponseDirectives,
    date: SystemTime,
    heuristic: Heuristic,
) -> Lifetime {
    if let Some(s) = cc.s_maxage {
        return Lifetime::Explicit(s);
    }
    if let Some(s) = cc.max_age {
        return Lifetime::Explicit(s);
    }
    if headers.contains_key(header::EXPIRES) {
        // Section 5.3: several Expires lines, or an invalid one, mean already expired.
        if headers.get_all(header::EXPIRES).iter().count() > 1 {
            return Lifetime::Explicit(0);
        }
        return Lifetime::Explicit(match http_date(headers, &header::EXPIRES) {
            Some(expires) => secs_between(date, expires),
            None => 0,
        });
    }
    if !(heuristically_cacheable(status) || cc.public) {
        return Lifetime::None;
    }
    match http_date(headers, &header::LAST_MODIFIED) {
        Some(modified) => {
            let since = secs_between(modified, date);
            let secs = since.saturating_mul(u64::from(heuristic.percent)) / 100;
            Lifetime::Heuristic(secs.min(heuristic.max.as_secs()))
        }
        None => Lifetime::None,
    }
}

/// True when a stale response must not be served without validation (RFC 9111 section 4.2.4:
/// `must-revalidate`, `proxy-revalidate`, `s-maxage` in a shared cache, and `no-cache`).
pub fn stale_forbidden(cc: &ResponseDirectives) -> bool {
    cc.must_revalidate
        || cc.proxy_revalidate
        || cc.s_maxage.is_some()
        || cc.no_cache != crate::directives::FieldList::Absent
}

/// How a stored response relates to a request, before any network exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usability {
    /// Fresh enough for the request: serve it.
    Fresh,
    /// Stale, but the client accepts it (`max-stale`): serve it.
    StaleAllowed,
    /// Stale within `stale-while-revalidate`: serve it and revalidate in the background.
    StaleWhileRevalidate,
    /// Must be validated with the origin first.
    Validate,
}

/// Decides whether a stored response with `lifetime` and `age` (seconds) may satisfy a request
/// with directives `req` (RFC 9111 sections 4, 4.2.4 and 5.2.1; RFC 5861 section 3).
pub fn usability(
    cc: &ResponseDirectives,
    req: &RequestDirectives,
    lifetime: u64,
    age: u64,
) -> Usability {
    // Section 4, 5.2.1.4 and 5.2.2.4: no-cache on either side means validate on every use.
    if req.no_cache || cc.no_cache != crate::directives::FieldList::Absent {
        return Usability::Validate;
    }
    // Section 5.2.1.1: the client will not take a response older than max-age.
    if let Some(max_age) = req.max_age
        && age > max_age
    {
        return Usability::Validate;
    }
    let fresh = lifetime > age;
    if fresh {
        // Section 5.2.1.3: min-fresh asks for at least this much freshness left.
        match req.min_fresh {
            Some(min) if lifetime - age < min => return Usability::Validate,
            _ => return Usability::Fresh,
        }
    }
    let staleness = age - lifetime;
    if stale_forbidden(cc) {
        return Usability::Validate;
    }
    // Section 5.2.1.2: max-stale accepts a stale response.
    match req.max_stale {
        Some(MaxStale::Any) => return Usability::StaleAllowed,
        Some(MaxStale::Seconds(s)) if staleness <= s => return Usability::StaleAllowed,
        _ => {}
    }
    // RFC 5861 section 3; a client's max-age=0 (or min-fresh) asks for a validated answer.
    if let Some(window) = cc.stale_while_revalidate
        && staleness <= window
        && req.max_age.is_none()
        && req.min_fresh.is_none()
    {
        return Usability::StaleWhileRevalidate;
    }
    Usability::Validate
}

/// True when a stale response of `staleness` seconds may stand in for an error (RFC 5861
/// section 4): within the response's or the request's `stale-if-error`, and not forbidden.
pub fn stale_if_error(cc: &ResponseDirectives, req: &RequestDirectives, staleness: u64) -> bool {
    if stale_forbidden(cc) {
        return false;
    }
    let window = match (cc.stale_if_error, req.stale_if_error) {
        (Some(a), Some(b)) => a.max(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => return false,
    };
    staleness <= window
}

#[cfg(test)]
#[path = "freshness_tests.rs"]
mod tests;

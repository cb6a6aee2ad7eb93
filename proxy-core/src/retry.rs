//! Per-route retry policy: which failures are retried, how often, how far apart, and within
//! what time.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, StatusCode};

use crate::error::UpstreamError;

/// Failures a route retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOn {
    /// The connection could not be opened (refused, unreachable, connect timeout). Nothing
    /// was sent, so this is retried for every method.
    pub connect_failure: bool,
    /// The connection broke after the request may have been sent (reset, closed, invalid
    /// response).
    pub reset: bool,
    /// No response head within the per-try timeout.
    pub timeout: bool,
    /// Response statuses that are retried (the response is discarded).
    pub statuses: Vec<StatusCode>,
}

impl Default for RetryOn {
    /// Connection failures, resets and timeouts; no statuses.
    fn default() -> Self {
        RetryOn {
            connect_failure: true,
            reset: true,
            timeout: true,
            statuses: Vec::new(),
        }
    }
}

/// How a route retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most attempts for one request, the first included (1 disables retries).
    pub attempts: u32,
    /// What is retried.
    pub on: RetryOn,
    /// First backoff; each further retry doubles it, up to `max_backoff`. The wait is drawn
    /// at random below that bound (full jitter).
    pub backoff: Duration,
    /// Largest backoff bound.
    pub max_backoff: Duration,
    /// Longest one attempt may wait for its response head (the upstream's
    /// `response_header_timeout` still applies when shorter).
    pub per_try_timeout: Option<Duration>,
    /// Longest the whole request may take to get a response head, retries included.
    pub timeout: Option<Duration>,
    /// Retry non-idempotent methods too after they may have reached the upstream.
    pub non_idempotent: bool,
    /// Largest request body kept for replay; a longer body is not retried once sent.
    pub buffer: usize,
}

impl Default for RetryPolicy {
    /// Three attempts, 25 ms backoff doubling to 250 ms, 64 KiB replay buffer, idempotent
    /// methods only.
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            on: RetryOn::default(),
            backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(250),
            per_try_timeout: None,
            timeout: None,
            non_idempotent: false,
            buffer: 64 * 1024,
        }
    }
}

impl RetryPolicy {
    /// True when this failure is one the policy retries. `unsent` means the connector proved
    /// nothing was sent.
    pub fn retries_error(&self, error: &UpstreamError, unsent: bool) -> bool {
        match error {
            UpstreamError::Connect(_) | UpstreamError::ConnectTimeout => self.on.connect_failure,
            // The upstream-wide connection limit: another attempt would hit it too.
            UpstreamError::ConnectionLimit => false,
            // Refused streams (HTTP/2 REFUSED_STREAM, GOAWAY) were never processed.
            _ if unsent => true,
            UpstreamError::Io(_) | UpstreamError::BadResponse(_) => self.on.reset,
            UpstreamError::ResponseTimeout => self.on.timeout,
            _ => false,
        }
    }

    /// True when a response with `status` is retried.
    pub fn retries_status(&self, status: StatusCode) -> bool {
        self.on.statuses.contains(&status)
    }

    /// True when a request with `method` may be sent again after it may have reached the
    /// upstream.
    pub fn may_resend(&self, method: &Method) -> bool {
        self.non_idempotent || is_idempotent(method)
    }

    /// The wait before retry number `retry` (1 for the first retry): uniform in
    /// `[0, min(max_backoff, backoff × 2^(retry-1))]`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(20);
        let bound = self
            .backoff
            .saturating_mul(1 << exp)
            .min(self.max_backoff.max(self.backoff));
        let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(fastrand::u64(..=nanos))
    }
}

/// RFC 9110 section 9.2.2 idempotent methods.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The gRPC deadline header, which carries the time left to the upstream.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (`H M S m u n`).
pub fn parse_grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(GRPC_TIMEOUT)?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats `left` as a `grpc-timeout` value in milliseconds (at least 1).
pub fn grpc_timeout_value(left: Duration) -> HeaderValue {
    let ms = left.as_millis().clamp(1, 99_999_999);
    HeaderValue::from_str(&format!("{ms}m")).unwrap_or_else(|_| HeaderValue::from_static("1m"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_grows() {
        let p = RetryPolicy::default();
        for _ in 0..200 {
            assert!(p.backoff(1) <= Duration::from_millis(25));
            assert!(p.backoff(2) <= Duration::from_millis(50));
            assert!(p.backoff(10) <= Duration::from_millis(250));
        }
        let mean: Duration = (0..400).map(|_| p.backoff(10)).sum::<Duration>() / 400;
        assert!(mean > Duration::from_millis(80), "jitter spreads: {mean:?}");
    }

    #[test]
    fn what_is_retried() {
        let p = RetryPolicy::default();
        let refused =
            UpstreamError::Connect(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(p.retries_error(&refused, true));
        assert!(p.retries_error(&UpstreamError::ResponseTimeout, false));
        let none = RetryPolicy {
            on: RetryOn {
                connect_failure: false,
                reset: false,
                timeout: false,
                statuses: vec![],
            },
            ..RetryPolicy::default()
        };
        assert!(!none.retries_error(&refused, true));
        assert!(!none.retries_error(&UpstreamError::ResponseTimeout, false));
        assert!(p.may_resend(&Method::PUT));
        assert!(!p.may_resend(&Method::POST));
    }

    #[test]
    fn grpc_timeout_round_trip() {
        let mut h = HeaderMap::new();
        for (v, d) in [
            ("5S", Duration::from_secs(5)),
            ("250m", Duration::from_millis(250)),
            ("1H", Duration::from_secs(3600)),
            ("10u", Duration::from_micros(10)),
        ] {
            h.insert(GRPC_TIMEOUT, HeaderValue::from_static(v));
            assert_eq!(parse_grpc_timeout(&h), Some(d), "{v}");
        }
        for bad in ["", "S", "5", "5s", "123456789S", "-5S"] {
            h.insert(GRPC_TIMEOUT, HeaderValue::from_static(bad));
            assert_eq!(parse_grpc_timeout(&h), None, "{bad}");
        }
        assert_eq!(grpc_timeout_value(Duration::from_millis(1500)), "1500m");
        assert_eq!(grpc_timeout_value(Duration::ZERO), "1m");
    }
}

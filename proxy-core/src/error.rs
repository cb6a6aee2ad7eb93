//! Errors that answer the proxy's questions, and the one table that turns them into responses.

use std::io;
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, header};

use crate::body::{self, BodyError, ProxyBody};

/// Which side of the proxy a failure belongs to; drives logging and health accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client sent something we cannot serve.
    Downstream,
    /// The proxy's own configuration or state (no route, nothing healthy).
    Proxy,
    /// The upstream endpoint failed.
    Upstream,
}

/// A failure talking to one upstream endpoint, as reported by a [`crate::Connector`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// The TCP (or TLS) connection could not be established: refused, unreachable.
    #[error("connecting to the upstream failed")]
    Connect(#[source] io::Error),
    /// Connecting took longer than the connect timeout.
    #[error("connecting to the upstream timed out")]
    ConnectTimeout,
    /// The connection failed while the exchange was in progress (reset, closed early).
    #[error("the upstream connection failed")]
    Io(#[source] BodyError),
    /// The upstream answered with something that is not valid HTTP.
    #[error("the upstream sent an invalid response")]
    BadResponse(#[source] BodyError),
    /// No response head arrived within the response-header timeout.
    #[error("the upstream did not answer in time")]
    ResponseTimeout,
    /// The upstream's `max_connections` are open; no new one may be opened.
    #[error("the upstream's connection limit is reached")]
    ConnectionLimit,
    /// Reading the client's request body failed while forwarding it (client's fault).
    #[error("reading the request body from the client failed")]
    ClientBody(#[source] BodyError),
}

impl UpstreamError {
    /// True when the failure says nothing about the endpoint's health (the client broke it).
    pub fn is_endpoint_failure(&self) -> bool {
        !matches!(
            self,
            UpstreamError::ClientBody(_) | UpstreamError::ConnectionLimit
        )
    }

    /// True when the failure happened before any byte could have reached the upstream.
    pub fn before_send(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect(_) | UpstreamError::ConnectTimeout
        )
    }
}

/// The messages of `e`'s sources (and of `e` itself with `include_self`), joined by `: `,
/// for log fields.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static), include_self: bool) -> String {
    let mut out = if include_self {
        e.to_string()
    } else {
        String::new()
    };
    let mut source = e.source();
    while let Some(s) = source {
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// What a [`crate::Connector`] returns on failure.
#[derive(Debug)]
pub struct SendError {
    /// What went wrong.
    pub error: UpstreamError,
    /// The request, handed back when the connector can prove none of it was sent, so that the
    /// core may try another endpoint even for non-idempotent requests with a body.
    /// Boxed so that `Result<Response, SendError>` stays small on the success path.
    pub request: Option<Box<Request<ProxyBody>>>,
}

impl SendError {
    /// A failure after which the request is gone.
    pub fn lost(error: UpstreamError) -> Self {
        SendError {
            error,
            request: None,
        }
    }

    /// A failure before anything was sent; the request comes back for a retry.
    pub fn unsent(error: UpstreamError, request: Request<ProxyBody>) -> Self {
        SendError {
            error,
            request: Some(Box::new(request)),
        }
    }
}

/// Every reason the proxy answers a request itself instead of relaying an upstream response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// No route matched the request's host and path.
    #[error("no route matches the request")]
    NoRoute,
    /// The route's upstream has no endpoint left to try (all ejected or already tried).
    #[error("no healthy upstream endpoint")]
    NoHealthyEndpoint {
        /// How long until an ejected endpoint comes back, sent as `Retry-After`.
        retry_after: Duration,
    },
    /// A circuit-breaker limit of the upstream refused the request.
    #[error("upstream overloaded: {reason}")]
    CircuitOpen {
        /// Which limit (`max_requests`, `pending_timeout`, ...).
        reason: &'static str,
    },
    /// The request's deadline (route timeout or `grpc-timeout`) passed before a response.
    #[error("request deadline exceeded")]
    DeadlineExceeded,
    /// The last endpoint tried failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The request is malformed or ambiguous and must not be forwarded.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The request target is longer than the configured limit.
    #[error("request target too long")]
    UriTooLong,
    /// The request head is larger than the configured limit.
    #[error("request header fields too large")]
    HeadersTooLarge,
    /// The request body is larger than the configured limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// The client was too slow to send its request.
    #[error("request timed out")]
    ClientTimeout,
    /// The request names a host that the TLS connection it arrived on was not set up for
    /// (domain fronting, or a coalesced connection the client must not reuse).
    #[error("host does not match the TLS server name")]
    Misdirected,
    /// An unsafe request arrived as TLS early data (0-RTT), which an attacker can replay;
    /// the client retries it after the handshake (RFC 8470 section 5.2).
    #[error("unsafe request in early data")]
    TooEarly,
}

impl ProxyError {
    /// The status code the client receives. This match is the proxy's whole error table.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoHealthyEndpoint { .. } | ProxyError::CircuitOpen { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(e) => match e {
                UpstreamError::ConnectTimeout | UpstreamError::ResponseTimeout => {
                    StatusCode::GATEWAY_TIMEOUT
                }
                UpstreamError::ClientBody(_) => StatusCode::BAD_REQUEST,
                UpstreamError::ConnectionLimit => StatusCode::SERVICE_UNAVAILABLE,
                UpstreamError::Connect(_)
                | UpstreamError::Io(_)
                | UpstreamError::BadResponse(_) => StatusCode::BAD_GATEWAY,
            },
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::UriTooLong => StatusCode::URI_TOO_LONG,
            ProxyError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::TooEarly => StatusCode::TOO_EARLY,
            ProxyError::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// Which side failed.
    pub fn side(&self) -> Side {
        match self {
            ProxyError::NoRoute
            | ProxyError::NoHealthyEndpoint { .. }
            | ProxyError::CircuitOpen { .. }
            | ProxyError::Upstream(UpstreamError::ConnectionLimit) => Side::Proxy,
            ProxyError::DeadlineExceeded => Side::Upstream,
            ProxyError::Upstream(UpstreamError::ClientBody(_)) => Side::Downstream,
            ProxyError::Upstream(_) => Side::Upstream,
            ProxyError::BadRequest(_)
            | ProxyError::UriTooLong
            | ProxyError::HeadersTooLarge
            | ProxyError::PayloadTooLarge
            | ProxyError::ClientTimeout
            | ProxyError::Misdirected
            | ProxyError::TooEarly => Side::Downstream,
        }
    }

    /// A short stable code for logs and metrics (Display text is not an API).
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no_route",
            ProxyError::NoHealthyEndpoint { .. } => "no_healthy_endpoint",
            ProxyError::CircuitOpen { .. } => "circuit_open",
            ProxyError::DeadlineExceeded => "deadline_exceeded",
            ProxyError::Upstream(e) => match e {
                UpstreamError::Connect(_) => "upstream_connect",
                UpstreamError::ConnectTimeout => "upstream_connect_timeout",
                UpstreamError::Io(_) => "upstream_io",
                UpstreamError::BadResponse(_) => "upstream_bad_response",
                UpstreamError::ResponseTimeout => "upstream_timeout",
                UpstreamError::ClientBody(_) => "client_body",
                UpstreamError::ConnectionLimit => "upstream_max_connections",
            },
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::UriTooLong => "uri_too_long",
            ProxyError::HeadersTooLarge => "headers_too_large",
            ProxyError::PayloadTooLarge => "payload_too_large",
            ProxyError::ClientTimeout => "client_timeout",
            ProxyError::Misdirected => "misdirected",
            ProxyError::TooEarly => "too_early",
        }
    }

    /// Turns the error into the response the client sees.
    ///
    /// The body is a one-line reason; nothing from the upstream or the request is echoed.
    pub fn to_response(&self) -> Response<ProxyBody> {
        let status = self.status();
        let reason = status.canonical_reason().unwrap_or("Error");
        let text = format!("{} {}\n", status.as_u16(), reason);
        let mut resp = Response::new(body::full(text));
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let ProxyError::NoHealthyEndpoint { retry_after } = self {
            // Rounded up: a client that waits the advertised time finds the endpoint back.
            let secs = (retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)).max(1);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.side() == Side::Downstream {
            // After a framing error the rest of the connection cannot be trusted.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        let cases = [
            (ProxyError::NoRoute, 404),
            (
                ProxyError::NoHealthyEndpoint {
                    retry_after: Duration::from_secs(3),
                },
                503,
            ),
            (
                ProxyError::Upstream(UpstreamError::Connect(io::Error::from(
                    io::ErrorKind::ConnectionRefused,
                ))),
                502,
            ),
            (ProxyError::Upstream(UpstreamError::ConnectTimeout), 504),
            (ProxyError::Upstream(UpstreamError::ResponseTimeout), 504),
            (ProxyError::UriTooLong, 414),
            (ProxyError::HeadersTooLarge, 431),
            (ProxyError::PayloadTooLarge, 413),
            (ProxyError::ClientTimeout, 408),
            (
                ProxyError::CircuitOpen {
                    reason: "max_requests",
                },
                503,
            ),
            (ProxyError::DeadlineExceeded, 504),
            (ProxyError::Upstream(UpstreamError::ConnectionLimit), 503),
        ];
        for (err, status) in cases {
            assert_eq!(err.status().as_u16(), status, "{err:?}");
            assert_eq!(err.to_response().status().as_u16(), status);
        }
    }

    #[test]
    fn no_endpoint_has_retry_after() {
        let resp = ProxyError::NoHealthyEndpoint {
            retry_after: Duration::from_secs(7),
        }
        .to_response();
        assert_eq!(resp.headers()[header::RETRY_AFTER], "7");
    }
}

//! Message rules shared by the multiplexed frontends, HTTP/2 (RFC 9113 section 8) and HTTP/3
//! (RFC 9114 section 4): what their codecs leave to the application, in one place so both
//! frontends refuse the same requests.

use std::sync::atomic::{AtomicUsize, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, header};
use tokio::sync::Notify;

use crate::ProxyError;
use tokio::time::Instant;

/// Connection-specific fields, malformed in HTTP/2 and HTTP/3 requests (RFC 9113 section
/// 8.2.2, RFC 9114 section 4.2), and removed from responses before they are sent.
const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// Checks a decoded request against the rules the codecs do not enforce: one Host that agrees
/// with `:authority`, no connection-specific fields, `TE` only as `trailers`, field values
/// without surrounding whitespace, and a single numeric Content-Length.
pub fn validate_request(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(), &'static str> {
    // RFC 9113 section 8.3.1 and RFC 9114 section 4.3.1: a Host that names another entity
    // than :authority makes the request malformed.
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("more than one Host header");
    }
    match (uri.authority(), host) {
        (Some(authority), Some(host))
            if !host
                .as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes()) =>
        {
            return Err(":authority and Host differ");
        }
        (None, None) if method != Method::CONNECT => return Err("no :authority and no Host"),
        (None, Some(host))
            if host
                .to_str()
                .map_or(true, |h| h.parse::<http::uri::Authority>().is_err()) =>
        {
            return Err("invalid Host header");
        }
        _ => {}
    }
    if CONNECTION_SPECIFIC.iter().any(|n| headers.contains_key(*n)) {
        return Err("connection-specific header field");
    }
    if let Some(te) = headers.get(header::TE)
        && te != "trailers"
    {
        return Err("TE other than trailers");
    }
    if headers.values().any(|v| !trimmed(v)) {
        return Err("field value with leading or trailing whitespace");
    }
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next()
        && (lengths.any(|v| v != first)
            || !first.as_bytes().iter().all(u8::is_ascii_digit)
            || first.is_empty())
    {
        return Err("invalid Content-Length");
    }
    Ok(())
}

/// The declared Content-Length of a validated request, if any.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// RFC 9113 section 8.2.1 and RFC 9114 section 4.2: "A field value MUST NOT start or end with
/// an ASCII whitespace character"; the codecs and the `http` crate accept such values.
pub fn trimmed(value: &HeaderValue) -> bool {
    let ws = |b: &u8| *b == b' ' || *b == b'\t';
    !value.as_bytes().first().is_some_and(ws) && !value.as_bytes().last().is_some_and(ws)
}

/// Joins cookie crumbs with "; " (RFC 9113 section 8.2.3, RFC 9114 section 4.2.1), as they
/// must be before the request goes to an HTTP/1.1 upstream.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut crumbs = headers.get_all(header::COOKIE).iter();
    let Some(first) = crumbs.next() else { return };
    if crumbs.next().is_none() {
        return;
    }
    let mut joined = Vec::with_capacity(128);
    joined.extend_from_slice(first.as_bytes());
    for crumb in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(crumb.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// Removes what an HTTP/1.1 upstream may leave in a response but HTTP/2 and HTTP/3 forbid
/// (the codecs refuse to send, or send malformed, responses carrying them).
pub fn strip_connection_headers(headers: &mut HeaderMap) {
    for name in CONNECTION_SPECIFIC {
        headers.remove(name);
    }
    headers.remove(header::TE);
}

/// What a multiplexed frontend answers itself before the core sees a request: more header
/// fields than `max_headers` (431), a malformed message (400, see [`validate_request`]) or
/// CONNECT (405 with `Allow`: no tunnels, nor extended CONNECT).
pub fn screen(parts: &http::request::Parts, max_headers: usize) -> Result<(), Box<Rejection>> {
    let refuse = |error: ProxyError| {
        let response = error.to_response();
        Box::new(Rejection { error, response })
    };
    if parts.headers.len() > max_headers {
        return Err(refuse(ProxyError::HeadersTooLarge));
    }
    validate_request(&parts.method, &parts.uri, &parts.headers)
        .map_err(|why| refuse(ProxyError::BadRequest(why)))?;
    if parts.method == Method::CONNECT {
        let mut rejection = refuse(ProxyError::BadRequest("CONNECT"));
        *rejection.response.status_mut() = http::StatusCode::METHOD_NOT_ALLOWED;
        rejection.response.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"),
        );
        return Err(rejection);
    }
    Ok(())
}

/// A request [`screen`] refused: why, for the log line, and the answer.
#[derive(Debug)]
pub struct Rejection {
    /// The reason.
    pub error: ProxyError,
    /// The response to send.
    pub response: http::Response<crate::body::ProxyBody>,
}

/// The `Alt-Svc` value that advertises HTTP/3 on `port` for `max_age` seconds (RFC 7838).
pub fn alt_svc_h3(port: u16, max_age: u64) -> HeaderValue {
    let value = format!("h3=\":{port}\"; ma={max_age}");
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("clear"))
}

/// Name of the header that marks requests received as TLS early data (RFC 8470 section 5.1).
pub const EARLY_DATA: HeaderName = HeaderName::from_static("early-data");

/// Streams open on one connection, and when the last one closed: what the idle timeout and
/// the drain of a multiplexed connection are measured from.
#[derive(Debug)]
pub struct OpenStreams {
    count: AtomicUsize,
    idle_since: std::sync::Mutex<Option<Instant>>,
    changed: Notify,
}

impl Default for OpenStreams {
    fn default() -> Self {
        OpenStreams {
            count: AtomicUsize::new(0),
            idle_since: std::sync::Mutex::new(Some(Instant::now())),
            changed: Notify::new(),
        }
    }
}

impl OpenStreams {
    /// Counts a stream opened.
    pub fn opened(&self) {
        if self.count.fetch_add(1, Ordering::AcqRel) == 0
            && let Ok(mut idle) = self.idle_since.lock()
        {
            *idle = None;
        }
    }

    /// Counts a stream ended; wakes [`OpenStreams::changed`] when it was the last.
    pub fn closed(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Ok(mut idle) = self.idle_since.lock() {
                *idle = Some(Instant::now());
            }
            self.changed.notify_one();
        }
    }

    /// Streams open now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// When the last stream ended, or `None` while any is open.
    pub fn idle_since(&self) -> Option<Instant> {
        self.idle_since.lock().ok().and_then(|t| *t)
    }

    /// Resolves when the last open stream ends.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// Sleeps until `deadline`, or forever when there is none (for optional `select!` arms).
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_crumbs_are_joined() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        h.append(header::COOKIE, HeaderValue::from_static("c=3"));
        join_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2; c=3");
    }

    #[test]
    fn authority_and_host_rules() {
        let uri: Uri = "https://shop.example.com/x".parse().unwrap();
        let mut h = HeaderMap::new();
        assert!(validate_request(&Method::GET, &uri, &h).is_ok());
        h.insert(header::HOST, HeaderValue::from_static("SHOP.example.com"));
        assert!(validate_request(&Method::GET, &uri, &h).is_ok());
        h.insert(header::HOST, HeaderValue::from_static("evil.example.com"));
        assert!(validate_request(&Method::GET, &uri, &h).is_err());
        let origin: Uri = "/x".parse().unwrap();
        assert!(validate_request(&Method::GET, &origin, &HeaderMap::new()).is_err());
    }

    #[test]
    fn connection_specific_fields_and_te() {
        let uri: Uri = "https://a.example/".parse().unwrap();
        for name in CONNECTION_SPECIFIC {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static("x"));
            assert!(validate_request(&Method::GET, &uri, &h).is_err(), "{name}");
        }
        let mut te = HeaderMap::new();
        te.insert(header::TE, HeaderValue::from_static("gzip"));
        assert!(validate_request(&Method::GET, &uri, &te).is_err());
        te.insert(header::TE, HeaderValue::from_static("trailers"));
        assert!(validate_request(&Method::GET, &uri, &te).is_ok());
    }

    #[test]
    fn whitespace_and_content_length() {
        let uri: Uri = "https://a.example/".parse().unwrap();
        let mut ws = HeaderMap::new();
        ws.insert("x-a", HeaderValue::from_static(" a"));
        assert!(validate_request(&Method::GET, &uri, &ws).is_err());
        ws.insert("x-a", HeaderValue::from_static("a\t"));
        assert!(validate_request(&Method::GET, &uri, &ws).is_err());
        ws.insert("x-a", HeaderValue::from_static("a b"));
        assert!(validate_request(&Method::GET, &uri, &ws).is_ok());
        let mut cl = HeaderMap::new();
        cl.append(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(validate_request(&Method::POST, &uri, &cl).is_ok());
        assert_eq!(content_length(&cl), Some(5));
        cl.append(header::CONTENT_LENGTH, HeaderValue::from_static("6"));
        assert!(validate_request(&Method::POST, &uri, &cl).is_err());
        cl.insert(header::CONTENT_LENGTH, HeaderValue::from_static("-1"));
        assert!(validate_request(&Method::POST, &uri, &cl).is_err());
    }

    #[test]
    fn alt_svc_value() {
        assert_eq!(alt_svc_h3(8443, 86400), "h3=\":8443\"; ma=86400");
    }
}

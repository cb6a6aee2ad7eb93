//! The server half: serve one HTTP/1.1 connection into a core service.

use std::convert::Infallible;

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, StatusCode, Version, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use proxy_core::body::{self, ProxyBody};
use proxy_core::headers::upgrade_request;
use proxy_core::upgrade::{BoxedIo, PendingUpgrade};
use proxy_core::{ConnInfo, ProxyError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use crate::bodies::{Prepend, Tracked};
use crate::head_scan;
use crate::timed_io::{ConnState, TimedIo};

/// Limits and timeouts of the HTTP/1.1 server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerOptions {
    /// Longest time from the first byte of a request head (or from accept, for the first
    /// request) to its end; slower clients get 408. Default 10 s (against slowloris).
    pub header_read_timeout: Duration,
    /// How long an idle keep-alive connection waits for its next request. Default 75 s.
    pub keepalive_timeout: Duration,
    /// Largest request head hyper buffers, in bytes; larger heads get 431. Default 96 KiB.
    pub max_head_bytes: usize,
    /// Most header fields in one request; more get 431. Default 100.
    pub max_headers: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
            max_head_bytes: 96 * 1024,
            max_headers: 100,
        }
    }
}

/// How a connection ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The connection failed (client reset, protocol error, head timeout).
    #[error("HTTP/1.1 connection error")]
    Connection(#[source] hyper::Error),
}

/// Serves one accepted connection until it closes, or until `shutdown` is cancelled and the
/// requests in flight have finished (graceful shutdown: no new requests are read, and
/// responses in progress complete with `Connection: close`).
pub async fn serve_connection<I, S>(
    io: I,
    info: ConnInfo,
    service: S,
    options: ServerOptions,
    shutdown: CancellationToken,
) -> Result<(), ServeError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let state = Arc::new(ConnState::default());
    let peer = info.peer;
    let io = TimedIo::new(
        io,
        state.clone(),
        options.header_read_timeout,
        options.keepalive_timeout,
        peer,
    );
    let info = Arc::new(info);
    let adapter = hyper::service::service_fn(move |req: Request<Incoming>| {
        let number = state.dispatched.fetch_add(1, Ordering::AcqRel);
        let framing = state.head_flags_for(number);
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        let in_flight = state.in_flight.clone();
        let state = state.clone();
        let info = info.clone();
        let mut service = service.clone();
        async move {
            let resp = match prepare(req, &info, framing).await {
                Ok(req) => proxy_core::service::call(&mut service, req).await,
                Err(rejection) => rejection,
            };
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                state.upgraded.store(true, Ordering::Release);
            }
            Ok::<_, Infallible>(resp.map(|b| Tracked {
                inner: b,
                in_flight: Some(in_flight),
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .half_close(false)
        .max_buf_size(options.max_head_bytes.max(8192))
        .max_headers(options.max_headers);
    let conn = builder
        .serve_connection(TokioIo::new(io), adapter)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        res = conn.as_mut() => res,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    result.map_err(ServeError::Connection)
}

/// Validates the request head and converts it for the core; answers malformed requests here
/// so that they are never forwarded.
async fn prepare(
    mut req: Request<Incoming>,
    info: &Arc<ConnInfo>,
    framing: Option<u8>,
) -> Result<Request<ProxyBody>, Response<ProxyBody>> {
    // hyper removes Content-Length when Transfer-Encoding is present, so the raw-head scan
    // decides. A chunked request whose head the scanner could not follow is refused too:
    // failing closed costs a retry for a rare pipelining client, failing open a smuggling hole.
    let both = head_scan::CONTENT_LENGTH | head_scan::TRANSFER_ENCODING;
    let rejection = match framing {
        Some(flags) if flags & both == both => Some("both Content-Length and Transfer-Encoding"),
        None if req.headers().contains_key(header::TRANSFER_ENCODING) => {
            Some("chunked request whose framing could not be verified")
        }
        _ => None,
    };
    if let Some(why) = rejection {
        return Err(reject(&req, info, ProxyError::BadRequest(why)));
    }
    if let Err(why) = validate(req.version(), req.headers()) {
        return Err(reject(&req, info, ProxyError::BadRequest(why)));
    }
    if req.method() == Method::CONNECT {
        let mut resp = ProxyError::BadRequest("CONNECT").to_response();
        *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        // RFC 9110 section 15.5.6: "The origin server MUST generate an Allow header field in
        // a 405 response containing a list of the target resource's currently supported
        // methods."
        resp.headers_mut().insert(
            header::ALLOW,
            http::HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"),
        );
        tracing::info!(peer = %info.peer, method = "CONNECT", status = 405, "CONNECT refused");
        return Err(resp);
    }
    let upgrade = upgrade_request(req.headers()).is_some().then(|| {
        let on = hyper::upgrade::on(&mut req);
        PendingUpgrade::new(async move {
            let upgraded = on.await.map_err(io::Error::other)?;
            Ok(Box::new(TokioIo::new(upgraded)) as BoxedIo)
        })
    });
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    let (mut parts, mut incoming) = req.into_parts();
    let body = if chunked {
        // Read the first chunk before forwarding anything, so a broken chunked framing (the
        // classic smuggling vector) is answered with 400 and never reaches an upstream.
        match incoming.frame().await {
            None => body::empty(),
            Some(Ok(first)) => body::boxed(Prepend {
                first: Some(first),
                rest: incoming,
            }),
            Some(Err(e)) => {
                tracing::info!(peer = %info.peer, error = %e, status = 400, "invalid chunked request body");
                return Err(ProxyError::BadRequest("invalid chunked body").to_response());
            }
        }
    } else {
        body::boxed(incoming)
    };
    parts.extensions.insert(info.clone());
    if let Some(u) = upgrade {
        parts.extensions.insert(u);
    }
    Ok(Request::from_parts(parts, body))
}

fn reject(req: &Request<Incoming>, info: &ConnInfo, err: ProxyError) -> Response<ProxyBody> {
    tracing::info!(
        peer = %info.peer,
        method = %req.method(),
        uri = %req.uri(),
        reason = %err,
        status = err.status().as_u16(),
        "malformed request rejected"
    );
    err.to_response()
}

/// Framing and host rules hyper leaves to us (RFC 9112).
fn validate(version: Version, headers: &HeaderMap) -> Result<(), &'static str> {
    let hosts = headers.get_all(header::HOST).iter().count();
    // RFC 9112 section 3.2: "A server MUST respond with a 400 (Bad Request) status code to any
    // HTTP/1.1 request message that lacks a Host header field and to any request message that
    // contains more than one Host header field line or a Host header field with an invalid
    // field value."
    if hosts > 1 {
        return Err("more than one Host header");
    }
    if hosts == 0 && version == Version::HTTP_11 {
        return Err("missing Host header");
    }
    if let Some(host) = headers.get(header::HOST)
        && host.to_str().map_or(true, |h| {
            h.parse::<http::uri::Authority>().is_err() && !h.is_empty()
        })
    {
        return Err("invalid Host header");
    }
    // RFC 9112 section 6.1: a request with both is a smuggling attempt or a broken client;
    // "A server MAY reject a request that contains both Content-Length and Transfer-Encoding".
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if headers.contains_key(header::CONTENT_LENGTH) {
            return Err("both Content-Length and Transfer-Encoding");
        }
        if version == Version::HTTP_10 {
            return Err("Transfer-Encoding in an HTTP/1.0 request");
        }
        // "If a Transfer-Encoding header field is present in a request and the chunked
        // transfer coding is not the final encoding, the message body length cannot be
        // determined reliably; the server MUST respond with the 400 (Bad Request) status code".
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|t| !t.is_empty());
        if !last.is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
            return Err("chunked is not the final transfer coding");
        }
    }
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        if lengths.any(|v| v != first) {
            return Err("differing Content-Length headers");
        }
        let valid = first
            .to_str()
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .is_some_and(|s| s.parse::<u64>().is_ok());
        if !valid {
            return Err("invalid Content-Length");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn framing_rules() {
        let ok = |p: &[(&'static str, &'static str)]| validate(Version::HTTP_11, &headers(p));
        assert!(ok(&[("host", "a")]).is_ok());
        assert!(ok(&[("host", "a"), ("transfer-encoding", "gzip, chunked")]).is_ok());
        assert!(
            ok(&[
                ("host", "a"),
                ("content-length", "5"),
                ("content-length", "5")
            ])
            .is_ok()
        );
        assert!(ok(&[]).is_err());
        assert!(ok(&[("host", "a"), ("host", "b")]).is_err());
        assert!(ok(&[("host", "a b")]).is_err());
        assert!(
            ok(&[
                ("host", "a"),
                ("content-length", "5"),
                ("transfer-encoding", "chunked")
            ])
            .is_err()
        );
        assert!(ok(&[("host", "a"), ("transfer-encoding", "chunked, gzip")]).is_err());
        assert!(ok(&[("host", "a"), ("transfer-encoding", "identity")]).is_err());
        assert!(
            ok(&[
                ("host", "a"),
                ("content-length", "5"),
                ("content-length", "6")
            ])
            .is_err()
        );
        assert!(ok(&[("host", "a"), ("content-length", "-1")]).is_err());
        assert!(ok(&[("host", "a"), ("content-length", "+5")]).is_err());
        assert!(validate(Version::HTTP_10, &HeaderMap::new()).is_ok());
        assert!(
            validate(
                Version::HTTP_10,
                &headers(&[("transfer-encoding", "chunked")])
            )
            .is_err()
        );
    }
}

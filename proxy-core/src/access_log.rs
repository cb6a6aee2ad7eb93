//! The response body wrapper that closes every request: idle timeout, in-flight accounting and
//! the access-log line, emitted once when the response body is finished or abandoned.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::body::{BodyError, ProxyBody};
use crate::endpoint::InFlight;

/// The `tracing` target of access-log events; subscribers route it to the access log.
pub const ACCESS_TARGET: &str = "access";

/// What the access log records about one request.
#[derive(Debug)]
pub struct AccessEntry {
    /// When the request arrived.
    pub started: Instant,
    /// Client IP and port.
    pub remote: std::net::SocketAddr,
    /// Method.
    pub method: Method,
    /// Request target as received.
    pub uri: Uri,
    /// Protocol version.
    pub version: Version,
    /// `Host`, if any.
    pub host: Option<HeaderValue>,
    /// `Referer`, if any.
    pub referer: Option<HeaderValue>,
    /// `User-Agent`, if any.
    pub user_agent: Option<HeaderValue>,
    /// The request id.
    pub request_id: HeaderValue,
    /// Response status.
    pub status: StatusCode,
    /// The endpoint that served the response, if one did.
    pub upstream: Option<std::net::SocketAddr>,
    /// Time from arrival to the upstream's response head.
    pub upstream_header_time: Option<Duration>,
    /// Endpoints tried.
    pub attempts: u32,
    /// Why the proxy answered itself, if it did.
    pub error: Option<&'static str>,
    /// The cache's verdict, on cached routes.
    pub cache: Option<&'static str>,
}

impl AccessEntry {
    fn emit(&self, bytes: u64, complete: bool) {
        let ua = self.user_agent.as_ref().and_then(|v| v.to_str().ok());
        let referer = self.referer.as_ref().and_then(|v| v.to_str().ok());
        let host = self.host.as_ref().and_then(|v| v.to_str().ok());
        let duration_ms = self.started.elapsed().as_secs_f64() * 1e3;
        let upstream_ms = self.upstream_header_time.map(|d| d.as_secs_f64() * 1e3);
        // HTTP/2 and HTTP/3 requests always carry scheme and authority; log the target as an
        // HTTP/1.1 client would have sent it, like nginx's `$request`.
        let target: &dyn std::fmt::Display = match (self.version, self.uri.path_and_query()) {
            (http::Version::HTTP_2 | http::Version::HTTP_3, Some(pq)) => pq,
            _ => &self.uri,
        };
        let uri = tracing::field::display(target);
        tracing::info!(
            target: ACCESS_TARGET,
            remote_addr = %self.remote.ip(),
            method = %self.method,
            uri,
            version = ?self.version,
            host,
            status = self.status.as_u16(),
            bytes,
            referer,
            user_agent = ua,
            request_id = self.request_id.to_str().unwrap_or("-"),
            upstream = self.upstream.map(tracing::field::display),
            duration_ms,
            upstream_ms,
            attempts = self.attempts,
            error = self.error,
            cache = self.cache,
            complete,
        );
    }
}

/// Wraps a response body to time out idle upstreams, count bytes and log on completion.
pub(crate) struct ResponseBody {
    inner: ProxyBody,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    _in_flight: Option<InFlight>,
    entry: Option<Box<AccessEntry>>,
    bytes: u64,
    ended: bool,
}

/// The upstream stopped sending body data for longer than the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("upstream response body idle for longer than {0:?}")]
pub struct IdleTimeout(Duration);

impl ResponseBody {
    pub(crate) fn new(
        inner: ProxyBody,
        idle: Option<Duration>,
        in_flight: Option<InFlight>,
        entry: Option<Box<AccessEntry>>,
    ) -> Self {
        ResponseBody {
            inner,
            idle: idle.map(|d| (d, Box::pin(tokio::time::sleep(d)))),
            _in_flight: in_flight,
            entry,
            bytes: 0,
            ended: false,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                if let Some((d, sleep)) = &mut this.idle {
                    sleep.as_mut().reset(Instant::now() + *d);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Pending => {
                if let Some((d, sleep)) = &mut this.idle
                    && sleep.as_mut().poll(cx).is_ready()
                {
                    tracing::warn!(timeout = ?d, "upstream response body idle timeout");
                    return Poll::Ready(Some(Err(Box::new(IdleTimeout(*d)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            let complete = self.ended || self.inner.is_end_stream();
            entry.emit(self.bytes, complete);
        }
    }
}

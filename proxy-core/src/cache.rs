//! The hook a response cache implements (`proxy-cache` does), so the core never names a
//! cache's storage.
//!
//! A route with a cache hands each request to [`CacheHook::serve`] after routing and before any
//! upstream rewrite, together with the request's client-facing [`CacheTarget`] (the cache key's
//! base) and an [`Origin`]: the rest of the pipeline (endpoint selection, upstream request
//! filters, retries, upstream response filters) as a cloneable `'static` function, so a cache
//! can also revalidate in the background after the client has its answer.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};

use crate::body::ProxyBody;
use crate::conn::Scheme;
use crate::error::ProxyError;

/// A response on its way back from the upstream (or from a cache).
pub type OriginFuture =
    Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send + 'static>>;

type SendFn = dyn Fn(Request<ProxyBody>) -> OriginFuture + Send + Sync;

/// Sends a request on through the rest of the pipeline to the route's upstream.
///
/// The request is the client's, before upstream rewrites: the origin applies them. The
/// response has had hop-by-hop fields removed and `Via` added, but not the route's response
/// header rules, which the core applies after the cache.
#[derive(Clone)]
pub struct Origin {
    send: Arc<SendFn>,
}

impl Origin {
    /// An origin that sends requests with `send`.
    pub fn new(send: impl Fn(Request<ProxyBody>) -> OriginFuture + Send + Sync + 'static) -> Self {
        Origin {
            send: Arc::new(send),
        }
    }

    /// Sends `req` upstream.
    pub fn send(&self, req: Request<ProxyBody>) -> OriginFuture {
        (self.send)(req)
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Origin").finish_non_exhaustive()
    }
}

/// The client-facing identity of a request, taken before any URL rewrite: what a cache keys on,
/// so that two virtual hosts sharing one upstream never share entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheTarget {
    /// The scheme the client used.
    pub scheme: Scheme,
    /// The authority the client asked for, lowercased (`Host` or the absolute-form target),
    /// with its port when the client gave one.
    pub authority: String,
    /// The normalised path and query, as the client sent it.
    pub path_and_query: String,
}

/// A response cache in front of a route's upstream.
pub trait CacheHook: Send + Sync + fmt::Debug + 'static {
    /// Answers `req`, from storage or through `origin`, storing what may be stored.
    fn serve(&self, target: CacheTarget, req: Request<ProxyBody>, origin: Origin) -> OriginFuture;
}

/// What the upstream exchange behind a response did, carried in the response's extensions so
/// the access log can name the endpoint even when a cache stood in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamInfo {
    /// The endpoint that answered.
    pub addr: SocketAddr,
    /// Time from the request's arrival to the upstream's response head.
    pub header_time: Duration,
    /// Endpoints tried.
    pub attempts: u32,
}

/// The cache's verdict on a request (`hit`, `miss`, `stale`, ...), carried in the response's
/// extensions for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLog(pub &'static str);

//! The runtime configuration the proxy reads on every request, swapped atomically on reload.

use std::sync::Arc;

use crate::cache::CacheHook;
use crate::headers::{ForwardingHeaders, HeaderRules, ValueTemplate};
use crate::retry::RetryPolicy;
use crate::rewrite::{PathRewrite, Redirect};
use crate::route::RouteTable;
use crate::upstream::Upstream;

/// What `Host` the upstream receives.
#[derive(Debug, Clone, Default)]
pub enum HostRewrite {
    /// The client's `Host`, unchanged (nginx `proxy_set_header Host $host` style).
    #[default]
    Pass,
    /// The chosen endpoint's configured `host:port`.
    Endpoint,
    /// A fixed or templated value.
    Value(ValueTemplate),
}

/// A route that proxies to an upstream.
#[derive(Debug, Clone)]
pub struct ProxyRoute {
    /// Where requests go.
    pub upstream: Arc<Upstream>,
    /// Path rewrite before forwarding.
    pub rewrite: PathRewrite,
    /// `Host` policy.
    pub host: HostRewrite,
    /// Edits to the upstream request's headers.
    pub request_headers: HeaderRules,
    /// Edits to the response's headers.
    pub response_headers: HeaderRules,
    /// The response cache in front of the upstream, if the route has one.
    pub cache: Option<Arc<dyn CacheHook>>,
    /// How failed attempts are retried, and the request's overall deadline.
    pub retry: RetryPolicy,
}

/// What a matched route does.
#[derive(Debug, Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per route, built once per config"
)]
pub enum RouteAction {
    /// Forward to an upstream (shared, so a cache's background revalidation can hold it).
    Proxy(Arc<ProxyRoute>),
    /// Answer with a redirect.
    Redirect(Redirect),
}

/// Limits checked before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest request target, in bytes (414 above).
    pub max_uri_len: usize,
    /// Largest sum of header names and values, in bytes (431 above).
    pub max_header_bytes: usize,
    /// Largest request body in bytes (413 above); `None` for no limit.
    pub max_body_bytes: Option<u64>,
}

impl Default for Limits {
    /// 8 KiB targets (nginx's buffer), 64 KiB of headers, no body limit.
    fn default() -> Self {
        Limits {
            max_uri_len: 8 * 1024,
            max_header_bytes: 64 * 1024,
            max_body_bytes: None,
        }
    }
}

/// Proxy-wide settings.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Forwarding headers added to upstream requests.
    pub forwarding: ForwardingHeaders,
    /// Request limits.
    pub limits: Limits,
}

/// Everything one request needs, compiled from the configuration file.
#[derive(Debug)]
pub struct ProxyConfig {
    /// The route table.
    pub routes: RouteTable<RouteAction>,
    /// Proxy-wide settings.
    pub settings: Settings,
    /// Every upstream, for health monitoring and reporting.
    pub upstreams: Vec<Arc<Upstream>>,
}

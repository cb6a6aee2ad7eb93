//! The protocol-free reverse-proxy core.
//!
//! Frontends (`proxy-http1`, and later HTTP/2 and HTTP/3) turn connections into calls on the
//! [`Proxy`] service; upstream protocol crates implement [`Connector`]. Everything in between
//! (routing, balancing, health, retries, circuit breaking, timeouts, header policy, rewrites, the error
//! table and the access log) lives here and never sees a wire type: only the `http` crate's.
//!
//! # The request pipeline
//!
//! [`Proxy::handle`] runs these phases, in this order:
//!
//! ```text
//!  request ─▶ early ──────────▶ route ───────▶ redirect? ──yes──▶ 3xx
//!             request id         host, path,      │
//!             limits 414/431/413 method, headers  no
//!             dot-segment        404 if none      ▼
//!             normalisation                    upstream request
//!                                              hop-by-hop removal, X-Forwarded-*, Forwarded,
//!                                              Via, Host policy, path rewrite, header rules
//!                                                 │
//!                                                 ▼
//!                                          circuit breaker: 503 at once when full
//!                                                 │
//!                                                 ▼
//!                         ┌──────────────▶ select endpoint (balancer over the health view:
//!                         │                available primaries, else backups, else panic;
//!                         │                untried first; slow-start weights)
//!                         │                503 + Retry-After if none
//!                         │                       │
//!                         │                       ▼
//!                         │                connector send (per-try timeout, deadline)
//!                         │                       │ outcome feeds outlier detection
//!                  backoff, retry ◀───────────────┘ failure or retried status: policy,
//!                                                 │ replayable?, retry budget, breaker
//!                                                 │ 502/504 when no retry is allowed
//!                                                 ▼
//!                                          upstream response
//!                                          hop-by-hop removal, Via, header rules,
//!                                          101 upgrade join
//!                                                 │
//!                                                 ▼
//!                                          log (when the body ends or is dropped)
//! ```
//!
//! A request is retried when the route's [`RetryPolicy`] names the failure and the request can
//! be sent again: the connector proves it was not sent (connect failure), or it is idempotent
//! and its body fits the replay buffer. Active checks and outlier-detection timers run in
//! [`health::monitor`], one task set per upstream.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod balance;
pub mod body;
pub mod breaker;
pub mod cache;
pub mod config;
pub mod conn;
pub mod connector;
pub mod endpoint;
pub mod error;
pub mod headers;
pub mod health;
pub mod multiplexed;
mod proxy;
mod replay;
pub mod request_id;
pub mod retry;
pub mod retry_budget;
pub mod rewrite;
pub mod route;
pub mod service;
pub mod template;
pub mod upgrade;
mod upload;
pub mod upstream;

#[cfg(test)]
mod proxy_tests;
#[cfg(test)]
mod resilience_tests;

#[cfg(any(test, feature = "test-util"))]
pub mod test_util;

pub use body::ProxyBody;
pub use breaker::{BreakerLimits, LimitedDialer};
pub use cache::{CacheHook, CacheLog, CacheTarget, Origin, OriginFuture, UpstreamInfo};
pub use config::{HostRewrite, Limits, ProxyConfig, ProxyRoute, RouteAction, Settings};
pub use conn::{ConnInfo, EarlyData, ExactSite, ListenerPolicy, Scheme, SiteMatcher};
pub use connector::{ConnectOptions, Connector, DialFuture, Dialed, Dialer, SendFuture, TcpDialer};
pub use endpoint::Endpoint;
pub use error::{ProxyError, SendError, UpstreamError};
pub use health::{ActiveCheck, CheckKind, HealthPolicy, HttpCheck, OutlierPolicy, SlowStart};
pub use proxy::Proxy;
pub use retry::{RetryOn, RetryPolicy};
pub use retry_budget::RetryBudgetPolicy;
pub use upstream::{HashKey, Timeouts, Upstream, UpstreamPolicy};

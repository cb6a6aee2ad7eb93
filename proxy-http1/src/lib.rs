//! HTTP/1.1 for `proxy-core`, on hyper 1.x.
//!
//! - [`server::serve_connection`] serves one accepted connection (any byte stream: TCP now, TLS
//!   later) into any core service: keep-alive, pipelining, chunked bodies, `Expect:
//!   100-continue`, upgrades (WebSocket), head-size and head-time limits (414, 431, 408),
//!   rejection of ambiguous framing (400), and graceful shutdown.
//! - [`client::Http1Connector`] implements [`proxy_core::Connector`] with a keep-alive pool per
//!   endpoint: bounded idle connections, an idle timeout, and no reuse after an error.

#![forbid(unsafe_code)]

mod bodies;
pub mod client;
mod head_scan;
pub mod server;
mod timed_io;

pub use client::{ClientOptions, Http1Connector};
pub use server::{ServerOptions, serve_connection};

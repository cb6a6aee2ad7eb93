//! HTTP/2 for proxy-core, on the h2 crate.
//!
//! - [`serve_connection`]: the server half. Serves one accepted connection (TLS with ALPN `h2`,
//!   or cleartext h2c) into any core service, with every h2 limit set explicitly and a
//!   frame-level [`guard`] that closes flooding clients with GOAWAY `ENHANCE_YOUR_CALM`.
//! - [`Http2Connector`]: the client half. Multiplexes upstream requests over a bounded number
//!   of connections per endpoint, over h2c or any [`proxy_core::Dialer`] (TLS).
//!
//! Bodies stream both ways under HTTP/2 flow control, and trailers pass through, so gRPC works
//! end to end.

#![forbid(unsafe_code)]

mod body;
mod client;
pub mod guard;
mod server;

pub use body::{PumpError, RecvBody};
pub use client::{ClientOptions, Http2Connector};
pub use guard::{Flood, FloodLimits, PREFACE};
pub use server::{Http2Stats, ServeError, ServerOptions, serve_connection};

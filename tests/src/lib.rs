//! The end-to-end test harness: the proxy started in-process from a TOML string, scripted
//! backends that misbehave on demand, a hyper client, a raw-TCP client and a memory sampler.
//!
//! Everything binds `127.0.0.1:0` and reads the real port back; nothing leaves the loopback
//! interface. Every wait in here is bounded, so a broken proxy fails a test instead of hanging it.
//!
//! - [`proxy`]: [`TestProxy`] from TOML text, with `{NAME}` placeholders filled by [`fill`].
//! - [`backend`]: [`Backend`], an echo server scripted per request by headers, per backend by
//!   [`Mode`] (reset, close, garbage, raw bytes), delay and status; killable and restartable.
//! - [`client`]: [`Conn`], one keep-alive hyper connection; [`Resp`] and [`Echo`] to read answers.
//! - [`raw`]: [`RawConn`] for bytes no client library would send, with response framing.
//! - [`body`] and [`rss`]: allocation-free large bodies and peak-RSS sampling.
//!
//! ```text
//!   client (hyper / raw TCP / curl) ──▶ TestProxy (proxy_bin::server) ──▶ Backend (hyper, scripted)
//! ```

// Test support panics on purpose: a failed setup step is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![forbid(unsafe_code)]

use std::future::Future;
use std::time::Duration;

pub mod backend;
pub mod body;
pub mod client;
pub mod h2raw;
pub mod h3;
pub mod origin;
pub mod proxy;
pub mod raw;
pub mod rss;
pub mod tls;

pub use backend::{Backend, Mode, Recorded};
pub use body::StaticBody;
pub use client::{Conn, Echo, Resp};
pub use proxy::{TestProxy, fill, pool_config};
pub use raw::{RawConn, RawResponse};

/// Installs a `tracing` subscriber once per test binary, filtered by `RUST_LOG` (default
/// `warn`), writing through the test harness so output shows only for failing tests.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Runs `fut`, panicking with `what` if it takes longer than `secs` seconds. Every test body
/// goes through this, so a hung proxy fails the test instead of stalling the suite.
pub async fn within<F: Future>(secs: u64, what: &str, fut: F) -> F::Output {
    init_tracing();
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(out) => out,
        Err(_) => panic!("`{what}` did not finish within {secs} s"),
    }
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A loopback address on which nothing listens (bound, read back, then closed), for
/// "connection refused" endpoints.
pub async fn unused_addr() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

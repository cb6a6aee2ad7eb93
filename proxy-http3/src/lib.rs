//! HTTP/3 for proxy-core, on quinn and h3.
//!
//! - [`Http3Endpoint`]: a QUIC endpoint on a UDP port, serving HTTP/3 into any core service
//!   with the certificates, SNI selection and client verification of a rustls server config.
//!   Admission (a connection cap, Retry under load), handshake, per-connection GOAWAY on drain
//!   and idle, one task per request stream.
//! - [`ServerOptions`]: every QUIC and HTTP/3 limit, set explicitly.
//! - Early data (0-RTT) is off by default; when on, requests that arrive before the handshake
//!   completes carry [`proxy_core::EarlyData`], so the core refuses unsafe methods with 425.
//! - [`alt_svc`]: the `Alt-Svc` value the TCP frontends send to advertise HTTP/3.
//! - [`Http3Connector`]: the client half, HTTP/3 to upstreams over one multiplexed QUIC
//!   connection per endpoint, with an optional fallback connector when QUIC fails.
//!
//! Bodies stream both ways under QUIC flow control, and trailers pass through. QPACK runs
//! with the static table only (h3 0.0.8 has no dynamic table), so the dynamic table size
//! advertised to clients is 0.

#![forbid(unsafe_code)]

mod body;
mod client;
mod connection;
mod endpoint;
mod options;

pub use body::{RecvError, SendError};
pub use client::{ClientOptions, Http3Connector};
pub use endpoint::{ConnSetup, Http3Endpoint, Http3Stats, Identify};
pub use options::{ALPN_H3, AddressValidation, ServerOptions, quic_server_config};
pub use proxy_core::multiplexed::alt_svc_h3 as alt_svc;

/// Why an HTTP/3 endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Http3Error {
    /// The UDP socket could not be bound.
    #[error("cannot bind UDP {addr} for HTTP/3")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// QUIC needs TLS 1.3 with TLS_AES_128_GCM_SHA256, which the TLS config lacks.
    #[error("the TLS configuration does not offer TLS 1.3, which QUIC requires")]
    NoTls13,
    /// An option out of the range QUIC allows.
    #[error("invalid HTTP/3 option: {0}")]
    Option(&'static str),
}

//! Facts about the downstream connection a request arrived on.

use std::net::SocketAddr;
use std::sync::Arc;

/// Whether the client reached us over cleartext or TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Cleartext HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// The scheme's name as used in URLs and `X-Forwarded-Proto`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Connection metadata that a frontend attaches to every request it hands to the core.
///
/// Stored in request extensions as `Arc<ConnInfo>` so attaching it costs one reference count.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The local address the connection was accepted on.
    pub local: SocketAddr,
    /// Cleartext or TLS.
    pub scheme: Scheme,
    /// Server name the client asked for in TLS SNI, if any.
    pub sni: Option<Arc<str>>,
    /// Negotiated application protocol (ALPN), if any.
    pub alpn: Option<Arc<str>>,
    /// Process-unique connection number, for logs.
    pub id: u64,
}

impl ConnInfo {
    /// Metadata for a cleartext TCP connection.
    pub fn plain(peer: SocketAddr, local: SocketAddr, id: u64) -> Self {
        ConnInfo {
            peer,
            local,
            scheme: Scheme::Http,
            sni: None,
            alpn: None,
            id,
        }
    }
}

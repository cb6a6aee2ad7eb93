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
    /// Subject of the client certificate the listener verified (mTLS), RFC 4514 style
    /// (`CN=alice,O=Example`); `None` when the client presented none.
    pub client_subject: Option<Arc<str>>,
    /// Process-unique connection number, for logs.
    pub id: u64,
    /// Per-listener rules the core applies to every request of this connection.
    pub listener: Option<Arc<ListenerPolicy>>,
}

/// Decides whether a request for `host` may be served on a TLS connection set up for `sni`.
pub trait SiteMatcher: Send + Sync + 'static {
    /// True when `host` (lowercase, without port) belongs to the same site as `sni`.
    fn same_site(&self, sni: &str, host: &str) -> bool;
}

/// Rules a listener applies before routing and to every response.
#[derive(Clone, Default)]
pub struct ListenerPolicy {
    /// Answer every cleartext request with 308 to `https://` on this port.
    pub https_redirect_port: Option<u16>,
    /// `Strict-Transport-Security` value added to responses over TLS that lack one.
    pub hsts: Option<http::HeaderValue>,
    /// When set, a TLS request whose host the matcher rejects for the connection's SNI gets
    /// 421 Misdirected Request (domain-fronting guard). `None` lets any host through.
    pub sni_guard: Option<Arc<dyn SiteMatcher>>,
    /// `Alt-Svc` value set on every response to a request that did not come over HTTP/3, so
    /// clients learn where this site serves HTTP/3 (RFC 7838); replaces an upstream's own.
    pub alt_svc: Option<http::HeaderValue>,
}

/// Request extension set by a frontend on a request that arrived as TLS early data (0-RTT).
/// The core refuses unsafe methods in early data with 425 and marks the rest with
/// `Early-Data: 1` for the upstream (RFC 8470).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EarlyData;

impl std::fmt::Debug for ListenerPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerPolicy")
            .field("https_redirect_port", &self.https_redirect_port)
            .field("hsts", &self.hsts)
            .field("sni_guard", &self.sni_guard.is_some())
            .field("alt_svc", &self.alt_svc)
            .finish()
    }
}

/// The plain equality check: the host must be the SNI name itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExactSite;

impl SiteMatcher for ExactSite {
    fn same_site(&self, sni: &str, host: &str) -> bool {
        sni.eq_ignore_ascii_case(host)
    }
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
            client_subject: None,
            id,
            listener: None,
        }
    }
}

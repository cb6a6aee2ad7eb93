//! Limits and timeouts of the HTTP/3 server, and the quinn configuration built from them.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use quinn::{IdleTimeout, TransportConfig, VarInt};

use crate::Http3Error;

/// ALPN protocol id for HTTP/3 (RFC 9114 section 3.1).
pub const ALPN_H3: &[u8] = b"h3";

/// When a new connection must first prove it owns its address with a Retry round trip
/// (RFC 9000 section 8.1), which blunts spoofed-source floods at the cost of one RTT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressValidation {
    /// Never send Retry.
    Never,
    /// Send Retry while at least this many connections are mid-handshake (the default, 64).
    UnderLoad {
        /// Handshakes in progress at which Retry starts.
        pending_handshakes: usize,
    },
    /// Send Retry to every new client.
    Always,
}

/// Limits and timeouts of the HTTP/3 server. Every knob is set explicitly: quinn's and h3's
/// own defaults (unbounded header sections, 100 streams, windows sized for a fast WAN link)
/// are not what a public frontend wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerOptions {
    /// Most request streams a client may have open at once (QUIC bidirectional stream
    /// credit).
    pub max_concurrent_streams: u32,
    /// Most unidirectional streams a client may have open at once. HTTP/3 needs three
    /// (control, QPACK encoder, QPACK decoder); the rest is room for grease streams.
    pub max_concurrent_uni_streams: u32,
    /// Per-stream receive window: how much request body one stream may have in flight.
    pub stream_receive_window: u32,
    /// Connection-level receive window across all streams.
    pub connection_receive_window: u32,
    /// Most response bytes buffered per connection before senders wait for the client.
    pub send_window: u64,
    /// Largest request header section (SETTINGS_MAX_FIELD_SECTION_SIZE); larger ones get 431.
    pub max_field_section_size: u64,
    /// Most header fields in one request, each cookie crumb counted; more get 431.
    pub max_headers: usize,
    /// Most QUIC connections served at once; further clients are refused.
    pub max_connections: usize,
    /// When new connections are sent a Retry first.
    pub address_validation: AddressValidation,
    /// Accept TLS 1.3 early data (0-RTT). Off by default: early data can be replayed, so only
    /// safe methods are served from it (others get 425 Too Early).
    pub early_data: bool,
    /// Longest QUIC + TLS handshake, and longest wait for the h3 control streams.
    pub handshake_timeout: Duration,
    /// Longest wait for a request's header section once its stream is open.
    pub header_read_timeout: Duration,
    /// A connection with no request stream open for this long is sent GOAWAY; it is also the
    /// QUIC idle timeout (no packets at all).
    pub idle_timeout: Duration,
    /// Longest time a response may wait for the client to extend flow control.
    pub send_stall_timeout: Duration,
    /// After GOAWAY, how long the connection stays open once its last stream has ended, for
    /// the client to read everything and close.
    pub close_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_concurrent_streams: 128,
            max_concurrent_uni_streams: 8,
            stream_receive_window: 256 * 1024,
            connection_receive_window: 1024 * 1024,
            send_window: 4 * 1024 * 1024,
            max_field_section_size: 64 * 1024,
            max_headers: 100,
            max_connections: 16 * 1024,
            address_validation: AddressValidation::UnderLoad {
                pending_handshakes: 64,
            },
            early_data: false,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            send_stall_timeout: Duration::from_secs(60),
            close_timeout: Duration::from_secs(5),
        }
    }
}

/// Builds quinn's server configuration from a listener's rustls configuration (the same
/// certificate resolver, so SNI selection, reloads and client authentication hold on HTTP/3
/// exactly as on TCP), with ALPN `h3` and the limits in `options`.
pub fn quic_server_config(
    tls: &rustls::ServerConfig,
    options: &ServerOptions,
) -> Result<quinn::ServerConfig, Http3Error> {
    let mut tls = tls.clone();
    tls.alpn_protocols = vec![ALPN_H3.to_vec()];
    // QUIC allows only 0 or u32::MAX here (RFC 9001 section 4.6.1).
    tls.max_early_data_size = if options.early_data { u32::MAX } else { 0 };
    if options.early_data {
        // rustls accepts early data only on stateful resumption, and a stateful ticket is
        // taken out of the cache when used: each ticket opens 0-RTT once, which is the
        // anti-replay protection RFC 8446 section 8 asks for. Stateless tickets (the TCP
        // listeners' choice) could be replayed at will.
        tls.ticketer = Arc::new(NoTickets);
        tls.session_storage = rustls::server::ServerSessionMemoryCache::new(EARLY_DATA_SESSIONS);
    }
    if !tls
        .crypto_provider()
        .cipher_suites
        .iter()
        .any(|s| s.version() == &rustls::version::TLS13)
    {
        return Err(Http3Error::NoTls13);
    }
    let crypto = QuicServerConfig::try_from(Arc::new(tls)).map_err(|_| Http3Error::NoTls13)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config(options)?));
    // Connections not yet accepted by the loop; beyond this quinn refuses on its own.
    config.max_incoming(options.max_connections.clamp(1, 4096));
    Ok(config)
}

/// Resumable sessions kept for 0-RTT on one endpoint (each used once).
const EARLY_DATA_SESSIONS: usize = 16 * 1024;

/// Turns stateless session tickets off, so rustls issues single-use stateful ones.
#[derive(Debug)]
struct NoTickets;

impl rustls::server::ProducesTickets for NoTickets {
    fn enabled(&self) -> bool {
        false
    }

    fn lifetime(&self) -> u32 {
        0
    }

    fn encrypt(&self, _plain: &[u8]) -> Option<Vec<u8>> {
        None
    }

    fn decrypt(&self, _cipher: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

fn transport_config(options: &ServerOptions) -> Result<TransportConfig, Http3Error> {
    let idle = IdleTimeout::try_from(options.idle_timeout)
        .map_err(|_| Http3Error::Option("idle_timeout is too long for QUIC"))?;
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(options.max_concurrent_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(options.max_concurrent_uni_streams))
        .stream_receive_window(VarInt::from_u32(options.stream_receive_window))
        .receive_window(VarInt::from_u32(options.connection_receive_window))
        .send_window(options.send_window)
        .max_idle_timeout(Some(idle));
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_timeout_must_fit_quic() {
        let options = ServerOptions {
            idle_timeout: Duration::from_secs(u64::MAX / 2),
            ..ServerOptions::default()
        };
        assert!(transport_config(&options).is_err());
        assert!(transport_config(&ServerOptions::default()).is_ok());
    }
}

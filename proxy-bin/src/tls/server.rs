//! rustls server configurations for listeners.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};

use super::error::TlsError;
use super::load::load_ca_bundle;
use super::provider::crypto_provider;

/// ALPN protocol id for HTTP/2 (RFC 9113 section 3.2).
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol id for HTTP/1.1 (RFC 7301 section 6).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Whether and how clients authenticate with certificates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificates are requested (the default).
    #[default]
    None,
    /// Every client must present a certificate that chains to a CA in `ca_file`; handshakes
    /// without one fail.
    Required {
        /// PEM bundle of the CAs that issue client certificates.
        ca_file: PathBuf,
    },
    /// Clients may present a certificate; if they do, it must chain to a CA in `ca_file`.
    /// Clients without one are accepted as anonymous.
    Optional {
        /// PEM bundle of the CAs that issue client certificates.
        ca_file: PathBuf,
    },
}

/// Options for [`server_config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// ALPN protocols in server preference order. Default: `h2`, then `http/1.1`. When a client
    /// offers ALPN but none of these, the handshake fails (RFC 7301 section 3.2); a client that
    /// offers no ALPN is accepted and speaks HTTP/1.1.
    pub alpn: Vec<Vec<u8>>,
    /// Client-certificate authentication. Default: none.
    pub client_auth: ClientAuth,
    /// Issue stateless TLS session tickets (keys rotate every 6 hours, kept per config).
    /// Default: on. Stateful resumption from rustls' in-memory cache (256 sessions) is always
    /// on; 0-RTT early data is always off, because replayed requests are not safe to proxy.
    pub session_tickets: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            alpn: vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()],
            client_auth: ClientAuth::None,
            session_tickets: true,
        }
    }
}

impl ServerOptions {
    /// Defaults, but offering HTTP/1.1 only (for a listener without an HTTP/2 frontend).
    pub fn http1_only() -> Self {
        Self {
            alpn: vec![ALPN_HTTP1.to_vec()],
            ..Self::default()
        }
    }
}

/// Builds the rustls configuration for one listener.
///
/// Protocol versions are rustls' safe defaults (TLS 1.3 and 1.2) with the aws-lc-rs provider
/// passed explicitly, so this works whether or not a process-default provider is installed.
/// The certificate comes from `resolver` on every handshake (usually an
/// [`SniResolver`](super::SniResolver)); with client auth the CA bundle is read now, so
/// changing it needs a new config.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    options: &ServerOptions,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = crypto_provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            context: "choosing TLS protocol versions",
            source,
        })?;
    let builder = match &options.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Required { ca_file } | ClientAuth::Optional { ca_file } => {
            let roots = Arc::new(load_ca_bundle(ca_file)?);
            let mut verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            if matches!(options.client_auth, ClientAuth::Optional { .. }) {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|source| TlsError::ClientVerifier {
                    path: ca_file.clone(),
                    source,
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = options.alpn.clone();
    if options.session_tickets {
        config.ticketer =
            rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|source| TlsError::Rustls {
                context: "creating the session ticket key",
                source,
            })?;
    }
    tracing::debug!(
        alpn = ?options.alpn.iter().map(|p| String::from_utf8_lossy(p)).collect::<Vec<_>>(),
        client_auth = client_auth_kind(&options.client_auth),
        session_tickets = options.session_tickets,
        "built TLS server config"
    );
    Ok(Arc::new(config))
}

fn client_auth_kind(auth: &ClientAuth) -> &'static str {
    match auth {
        ClientAuth::None => "none",
        ClientAuth::Required { .. } => "required",
        ClientAuth::Optional { .. } => "optional",
    }
}

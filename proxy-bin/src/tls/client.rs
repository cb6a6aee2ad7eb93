//! rustls client configurations for connections to upstream servers.
//!
//! Upstream certificates are always verified; there is deliberately no switch to turn that off.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::sign::SingleCertAndKey;
use rustls::{ClientConfig, RootCertStore};

use super::error::TlsError;
use super::load::{load_ca_bundle, load_key_material};
use super::provider::crypto_provider;

/// Which CAs upstream server certificates must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamRoots {
    /// The operating system's trust store (via `rustls-native-certs`). Fails if it yields no
    /// usable certificate.
    System,
    /// Only the CAs in this PEM bundle (for private PKI).
    CaFile(PathBuf),
}

/// Builds the client configuration for TLS connections to upstreams.
///
/// `client_cert` is `(chain_pem, key_pem)` for upstreams that require client authentication.
/// `alpn` lists protocols to offer in preference order (empty: no ALPN extension). Protocol
/// versions are rustls' safe defaults (TLS 1.3 and 1.2), with the aws-lc-rs provider passed
/// explicitly.
pub fn client_config(
    roots: UpstreamRoots,
    client_cert: Option<(PathBuf, PathBuf)>,
    alpn: Vec<Vec<u8>>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let root_store = match &roots {
        UpstreamRoots::System => system_roots()?,
        UpstreamRoots::CaFile(path) => load_ca_bundle(path)?,
    };
    let builder = ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            context: "choosing TLS protocol versions",
            source,
        })?
        .with_root_certificates(root_store);
    let mut config = match &client_cert {
        None => builder.with_no_client_auth(),
        Some((cert_path, key_path)) => {
            let key = load_key_material(cert_path, key_path)?;
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(key)))
        }
    };
    config.alpn_protocols = alpn;
    tracing::debug!(
        roots = match &roots {
            UpstreamRoots::System => "system",
            UpstreamRoots::CaFile(_) => "ca_file",
        },
        client_cert = client_cert.is_some(),
        "built TLS client config"
    );
    Ok(Arc::new(config))
}

/// The system trust store. Certificates that fail to parse are skipped with a warning (system
/// stores routinely contain a few); an empty result is an error.
fn system_roots() -> Result<RootCertStore, TlsError> {
    let result = rustls_native_certs::load_native_certs();
    for error in &result.errors {
        tracing::warn!(error = %error, "problem reading the system trust store");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(result.certs);
    if ignored > 0 {
        tracing::warn!(
            ignored,
            "skipped unparsable certificates in the system trust store"
        );
    }
    if added == 0 {
        return Err(TlsError::NoSystemRoots {
            detail: result.errors.first().map(ToString::to_string),
        });
    }
    tracing::debug!(anchors = added, "loaded system trust store");
    Ok(roots)
}

//! Loading certificate chains, private keys and CA bundles from PEM files.
//!
//! PEM is parsed with `rustls_pki_types::pem::PemObject` (the maintained successor of the
//! archived `rustls-pemfile`). Files are read whole first, so a missing file, a permission
//! problem and a parse problem are reported as different [`TlsError`] variants.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::error::TlsError;
use super::provider::crypto_provider;

/// Loads a certificate chain and its private key and checks that they belong together.
///
/// `cert_path` holds the leaf certificate first, then any intermediates (a "full chain").
/// `key_path` holds one RSA, ECDSA (P-256, P-384, P-521), Ed25519 (or ML-DSA) key as PKCS#8
/// (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`); the first key in the
/// file is used. Both may be the same file.
///
/// Errors name the file at fault; a key that is not the leaf certificate's gives
/// [`TlsError::KeyMismatch`]. Key bytes never appear in errors or logs.
pub fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<CertifiedKey>, TlsError> {
    load_key_material(cert_path, key_path).map(Arc::new)
}

/// Loads every certificate of a PEM file, in file order.
///
/// Fails with [`TlsError::NoCertificate`] if there is none, and with
/// [`TlsError::InvalidCertificate`] if one is not well-formed X.509.
pub fn load_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path)?;
    parse_cert_chain(path, &pem)
}

/// Loads the first private key of a PEM file (PKCS#8, PKCS#1 or SEC1), without checking that
/// the crypto provider supports its type.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(path)?;
    parse_private_key(path, &pem)
}

/// Loads a CA bundle (one or more PEM certificates) as trust anchors, for verifying client
/// certificates or upstream servers.
///
/// Strict: a certificate that cannot serve as a trust anchor fails the whole bundle, because a
/// silently smaller trust store is harder to debug than an error at start-up.
pub fn load_ca_bundle(path: &Path) -> Result<RootCertStore, TlsError> {
    let certs = load_cert_chain(path)?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| TlsError::InvalidCertificate {
            path: path.to_path_buf(),
            index: i + 1,
            reason: e.to_string(),
        })?;
    }
    tracing::debug!(path = %path.display(), anchors = roots.len(), "loaded CA bundle");
    Ok(roots)
}

/// Loads and checks a chain and key; used by both the server and the upstream client side.
pub(crate) fn load_key_material(
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let chain = load_cert_chain(cert_path)?;
    let key_der = load_private_key(key_path)?;
    let signing_key = crypto_provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|_| TlsError::UnsupportedKey {
            path: key_path.to_path_buf(),
            reason: "not a key the crypto provider can sign with (RSA, ECDSA P-256/P-384/P-521, Ed25519, ML-DSA), or a damaged one",
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            tracing::debug!(
                cert = %cert_path.display(),
                key = %key_path.display(),
                "key type cannot report its public key; skipping the key/certificate match check"
            );
        }
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch {
                cert_path: cert_path.to_path_buf(),
                key_path: key_path.to_path_buf(),
            });
        }
        Err(other) => {
            return Err(TlsError::InvalidCertificate {
                path: cert_path.to_path_buf(),
                index: 1,
                reason: other.to_string(),
            });
        }
    }
    log_leaf(cert_path, &certified.cert);
    Ok(certified)
}

/// Reads a whole file, mapping I/O errors to the variants an operator can act on.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::from_io(path, e))
}

/// Parses every `CERTIFICATE` section; other sections (keys, CRLs) are skipped.
pub(crate) fn parse_cert_chain(
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| TlsError::from_pem(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    // rustls only parses the leaf when it first needs it; check the whole chain now so a
    // broken intermediate fails the load instead of a later handshake.
    for (i, cert) in certs.iter().enumerate() {
        X509Certificate::from_der(cert).map_err(|e| TlsError::InvalidCertificate {
            path: path.to_path_buf(),
            index: i + 1,
            reason: e.to_string(),
        })?;
    }
    Ok(certs)
}

/// Parses the first private key section.
pub(crate) fn parse_private_key(
    path: &Path,
    pem: &[u8],
) -> Result<PrivateKeyDer<'static>, TlsError> {
    if let Some(reason) = unsupported_key_format(pem) {
        return Err(TlsError::UnsupportedKey {
            path: path.to_path_buf(),
            reason,
        });
    }
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => Err(TlsError::NoPrivateKey {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(TlsError::from_pem(path, e)),
    }
}

/// Recognises key encodings that the PEM parser would skip or misread, so the error says
/// what to do instead of "no private key".
fn unsupported_key_format(pem: &[u8]) -> Option<&'static str> {
    const FORMATS: &[(&[u8], &str)] = &[
        (
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----",
            "encrypted PKCS#8 keys are not supported; store the key unencrypted with mode 0600",
        ),
        (
            b"Proc-Type: 4,ENCRYPTED",
            "password-protected PEM keys are not supported; store the key unencrypted with mode 0600",
        ),
        (
            b"-----BEGIN OPENSSH PRIVATE KEY-----",
            "OpenSSH key format is not supported; convert it to PKCS#8",
        ),
        (
            b"-----BEGIN DSA PRIVATE KEY-----",
            "DSA keys are not supported",
        ),
    ];
    FORMATS
        .iter()
        .find(|(marker, _)| contains(pem, marker))
        .map(|(_, reason)| *reason)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Logs the leaf's subject and expiry; warns when it is outside its validity period, which
/// clients will reject even though the proxy serves it.
fn log_leaf(cert_path: &Path, chain: &[CertificateDer<'_>]) {
    let Some(Ok((_, leaf))) = chain.first().map(|c| X509Certificate::from_der(c)) else {
        return;
    };
    let validity = leaf.validity();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let subject = super::identity::rfc4514(leaf.subject());
    if now > validity.not_after.timestamp() {
        tracing::warn!(
            cert = %cert_path.display(),
            subject = %subject,
            not_after = %validity.not_after,
            "certificate has expired; clients will reject it"
        );
    } else if now < validity.not_before.timestamp() {
        tracing::warn!(
            cert = %cert_path.display(),
            subject = %subject,
            not_before = %validity.not_before,
            "certificate is not valid yet; clients will reject it"
        );
    } else {
        tracing::debug!(
            cert = %cert_path.display(),
            subject = %subject,
            not_after = %validity.not_after,
            chain_len = chain.len(),
            "loaded certificate"
        );
    }
}

//! The one error type of the TLS module.
//!
//! Every variant that comes from a file names the file. No variant carries key material: PEM
//! problems are reduced to a fixed description and the parser's own message (which can quote
//! decoded bytes) is dropped.

use std::io;
use std::path::{Path, PathBuf};

/// What went wrong while loading certificates or building a TLS configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file does not exist.
    #[error("{}: file not found", path.display())]
    NotFound {
        /// The file, as given.
        path: PathBuf,
    },
    /// The file exists but this process may not read it.
    #[error(
        "{}: permission denied (the proxy's user cannot read this file; check its owner and mode)",
        path.display()
    )]
    PermissionDenied {
        /// The file, as given.
        path: PathBuf,
    },
    /// Any other I/O error while reading or writing the file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file, as given.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file holds no `CERTIFICATE` PEM section.
    #[error("{}: no certificate (-----BEGIN CERTIFICATE-----) found in file", path.display())]
    NoCertificate {
        /// The file, as given.
        path: PathBuf,
    },
    /// The file holds no `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` PEM section.
    #[error(
        "{}: no private key (PKCS#8 PRIVATE KEY, PKCS#1 RSA PRIVATE KEY or SEC1 EC PRIVATE KEY) found in file",
        path.display()
    )]
    NoPrivateKey {
        /// The file, as given.
        path: PathBuf,
    },
    /// The PEM text itself is broken (bad base64, a missing END line, ...).
    #[error("{}: unparsable PEM: {problem}", path.display())]
    InvalidPem {
        /// The file, as given.
        path: PathBuf,
        /// A fixed description of the problem; never contains file contents.
        problem: &'static str,
    },
    /// A PEM section decoded but the certificate inside is not valid DER X.509.
    #[error("{}: certificate #{index} is not a valid X.509 certificate: {reason}", path.display())]
    InvalidCertificate {
        /// The file, as given.
        path: PathBuf,
        /// 1-based position of the certificate in the file.
        index: usize,
        /// What the parser reported.
        reason: String,
    },
    /// The key decoded but is of a type (or in a form) the crypto provider cannot use.
    #[error("{}: private key unsupported: {reason}", path.display())]
    UnsupportedKey {
        /// The key file, as given.
        path: PathBuf,
        /// A fixed description; never contains key material.
        reason: &'static str,
    },
    /// The private key is not the one the leaf certificate was issued for.
    #[error(
        "{}: private key does not match the certificate in {}",
        key_path.display(),
        cert_path.display()
    )]
    KeyMismatch {
        /// The certificate chain file.
        cert_path: PathBuf,
        /// The key file.
        key_path: PathBuf,
    },
    /// A site name is not a host name or a `*.`-wildcard of one.
    #[error("invalid site name {name:?}: {reason}")]
    InvalidName {
        /// The name as configured.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Two sites claim the same name, or two sites share an id.
    #[error("{what} {name:?} is used by more than one site")]
    Duplicate {
        /// `"site name"` or `"site id"`.
        what: &'static str,
        /// The name or id.
        name: String,
    },
    /// The default site named for SNI fallback is not among the sites.
    #[error("default site {id:?} is not one of the configured sites")]
    UnknownDefault {
        /// The id that was named.
        id: String,
    },
    /// No trust anchor could be loaded from the operating system's store.
    #[error(
        "no usable CA certificate found in the system trust store{}",
        detail_suffix(detail)
    )]
    NoSystemRoots {
        /// The first problem the loader reported, if any.
        detail: Option<String>,
    },
    /// The client-certificate verifier could not be built from the CA bundle.
    #[error("{}: cannot verify client certificates with this CA bundle: {source}", path.display())]
    ClientVerifier {
        /// The CA bundle.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// rustls refused a configuration step.
    #[error("{context}: {source}")]
    Rustls {
        /// Which step failed.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: rustls::Error,
    },
    /// A peer certificate could not be parsed to extract an identity.
    #[error("peer certificate cannot be parsed: {reason}")]
    PeerCertificate {
        /// What the parser reported.
        reason: String,
    },
    /// Certificate generation failed.
    #[error("cannot generate a certificate: {source}")]
    Generate {
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
}

impl TlsError {
    /// The file this error is about, if it is about one file.
    ///
    /// For [`TlsError::KeyMismatch`] this is the key file.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::NotFound { path }
            | Self::PermissionDenied { path }
            | Self::Io { path, .. }
            | Self::NoCertificate { path }
            | Self::NoPrivateKey { path }
            | Self::InvalidPem { path, .. }
            | Self::InvalidCertificate { path, .. }
            | Self::UnsupportedKey { path, .. }
            | Self::ClientVerifier { path, .. } => Some(path),
            Self::KeyMismatch { key_path, .. } => Some(key_path),
            Self::InvalidName { .. }
            | Self::Duplicate { .. }
            | Self::UnknownDefault { .. }
            | Self::NoSystemRoots { .. }
            | Self::Rustls { .. }
            | Self::PeerCertificate { .. }
            | Self::Generate { .. } => None,
        }
    }

    /// Whether the problem is in a file's contents or presence (an operator can fix it on
    /// disk and reload), as opposed to the configuration or the environment.
    pub fn is_file_problem(&self) -> bool {
        self.path().is_some()
    }

    /// Maps an I/O error on `path` to the variant an operator can act on.
    pub(crate) fn from_io(path: &Path, source: io::Error) -> Self {
        let path = path.to_path_buf();
        match source.kind() {
            io::ErrorKind::NotFound => Self::NotFound { path },
            io::ErrorKind::PermissionDenied => Self::PermissionDenied { path },
            _ => Self::Io { path, source },
        }
    }

    /// Maps a PEM parse error to [`TlsError::InvalidPem`] (or an I/O variant), dropping the
    /// parser's message, which may quote decoded bytes.
    pub(crate) fn from_pem(path: &Path, err: rustls_pki_types::pem::Error) -> Self {
        use rustls_pki_types::pem::Error as PemError;
        let problem = match err {
            PemError::Io(source) => return Self::from_io(path, source),
            PemError::MissingSectionEnd { .. } => {
                "a section has no matching -----END ...----- line"
            }
            PemError::IllegalSectionStart { .. } => "malformed -----BEGIN ...----- line",
            PemError::Base64Decode(_) => "a section's body is not valid base64",
            PemError::SectionTooLarge => "a section is larger than 256 MiB",
            PemError::NoItemsFound => "no PEM section of the expected kind",
            _ => "PEM parse error",
        };
        Self::InvalidPem {
            path: path.to_path_buf(),
            problem,
        }
    }
}

fn detail_suffix(detail: &Option<String>) -> String {
    match detail {
        Some(d) => format!(" ({d})"),
        None => String::new(),
    }
}

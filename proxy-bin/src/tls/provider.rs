//! The workspace's one crypto provider: aws-lc-rs.
//!
//! Everything in this module passes [`crypto_provider`] to rustls explicitly, so no code path
//! depends on a process-wide default being installed. [`install_crypto_provider`] exists for
//! code outside this module (and third-party crates) that still calls `ServerConfig::builder()`
//! or `ClientConfig::builder()`.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// The aws-lc-rs provider every configuration built here uses.
///
/// Built once per process and shared; cloning the `Arc` is cheap.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())))
}

/// Installs aws-lc-rs as the process-wide default rustls provider.
///
/// Idempotent: when a default is already installed (by an earlier call or by anyone else),
/// the existing one is kept and nothing fails. Call it at start-up and in test harnesses.
pub fn install_crypto_provider() {
    match rustls::crypto::aws_lc_rs::default_provider().install_default() {
        Ok(()) => tracing::debug!(
            provider = "aws-lc-rs",
            "installed process-default crypto provider"
        ),
        Err(_already) => {
            tracing::trace!(
                provider = "aws-lc-rs",
                "process-default crypto provider already installed"
            )
        }
    }
}

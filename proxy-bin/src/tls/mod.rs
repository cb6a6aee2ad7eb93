//! TLS: certificates, SNI selection, rustls configs.
//!
//! The building blocks the listeners and upstream connectors use:
//!
//! - [`install_crypto_provider`] / [`crypto_provider`]: the workspace's one provider
//!   (aws-lc-rs). Every config built here passes it explicitly, so nothing depends on (or
//!   panics without) a process default.
//! - [`load_certified_key`], [`load_ca_bundle`]: PEM files to rustls types, with errors that
//!   name the file and never contain key bytes ([`TlsError`]).
//! - [`SniTable`] / [`SniResolver`]: pick a certificate by SNI (exact, then `*.` wildcard, then
//!   the default or refuse), swappable atomically at run time.
//! - [`CertStore`] + [`spawn_watcher`]: sites loaded from files; all-or-nothing reload when the
//!   files change.
//! - [`server_config`]: a listener's `rustls::ServerConfig` (ALPN, optional mTLS, tickets).
//! - [`ClientIdentity`]: the verified client certificate's subject and SANs.
//! - [`client_config`]: the upstream side's `rustls::ClientConfig` (always verifying).
//! - [`self_signed`]: a certificate for the demo.
//!
//! PEM is parsed with `rustls_pki_types::pem::PemObject`; `rustls-pemfile` is archived
//! (RUSTSEC-2025-0134) and was a thin wrapper over it.

mod client;
mod error;
mod identity;
mod load;
mod provider;
mod selfsigned;
mod server;
mod sni;
mod store;

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

pub use client::{UpstreamRoots, client_config};
pub use error::TlsError;
pub use identity::{ClientIdentity, MAX_SANS};
pub use load::{load_ca_bundle, load_cert_chain, load_certified_key, load_private_key};
pub use provider::{crypto_provider, install_crypto_provider};
pub use selfsigned::{SELF_SIGNED_VALIDITY_DAYS, self_signed};
pub use server::{ALPN_H2, ALPN_HTTP1, ClientAuth, ServerOptions, server_config};
pub use sni::{Fallback, Selection, Site, SiteName, SniResolver, SniTable};
pub use store::{CertStore, MIN_WATCH_INTERVAL, ReloadReport, SiteSource, spawn_watcher};

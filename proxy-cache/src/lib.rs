//! An RFC 9111 shared HTTP cache for `proxy-core`, stored in moka.
//!
//! [`HttpCache`] implements [`proxy_core::CacheHook`]: the core hands it each request of a
//! cached route, keyed on the client-facing URI before any rewrite, together with an
//! [`proxy_core::Origin`] to reach the upstream. The rules are pure functions, each named after
//! the section it implements:
//!
//! - [`directives`]: `Cache-Control` and `CDN-Cache-Control` parsing (RFC 9111 section 5.2,
//!   RFC 9213);
//! - [`storable`]: what a shared cache may store (section 3);
//! - [`freshness`]: the age calculation, freshness lifetimes, heuristics and when stale
//!   responses may be served (section 4.2, RFC 5861);
//! - [`key`]: primary and secondary (`Vary`) keys (sections 2 and 4.1);
//! - [`conditional`] and [`range`]: the client's preconditions and ranges answered from storage
//!   (RFC 9110 sections 13 and 14);
//! - [`status`]: `Cache-Status` (RFC 9211).
//!
//! The mechanics sit beside them: [`store`] (moka, byte-bounded, per-entry expiry), [`fill`]
//! (a miss streams to its client while it is stored), [`coalesce`] (concurrent misses make one
//! upstream request) and [`cache`] (the order in which all of it runs).

#![forbid(unsafe_code)]

pub mod cache;
pub mod coalesce;
pub mod conditional;
pub mod directives;
pub mod fill;
pub mod freshness;
pub mod key;
pub mod range;
pub mod status;
pub mod storable;
pub mod store;

pub use cache::{CacheConfig, CacheStore, HttpCache};

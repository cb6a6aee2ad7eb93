//! The reverse proxy's composition root: configuration, listeners, logging and the demo.
//!
//! `main.rs` is a thin CLI over this library, so end-to-end tests start the same code
//! in-process.

#![forbid(unsafe_code)]

pub mod admin;
pub mod caches;
pub mod config;
pub mod demo;
pub mod logging;
pub mod server;
pub mod tls;
pub mod upstream_connector;

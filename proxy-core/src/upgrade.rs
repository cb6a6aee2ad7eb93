//! Protocol upgrades (WebSocket and friends) without naming any wire type.
//!
//! A frontend that can hand over the raw connection after a `101 Switching Protocols` puts a
//! [`PendingUpgrade`] into the request extensions; a connector does the same on the upstream's 101
//! response. The core then joins the two byte streams.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream both ways: what an upgraded connection becomes.
pub trait UpgradedIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> UpgradedIo for T {}

/// The boxed upgraded stream.
pub type BoxedIo = Box<dyn UpgradedIo>;

type UpgradeFuture = Pin<Box<dyn Future<Output = io::Result<BoxedIo>> + Send>>;

/// A connection that will be handed over once the 101 response has been written (or read).
///
/// Cloneable because `http::Extensions` requires it; only the first [`PendingUpgrade::take`] gets
/// the future.
#[derive(Clone)]
pub struct PendingUpgrade(Arc<Mutex<Option<UpgradeFuture>>>);

impl PendingUpgrade {
    /// Wraps the future that resolves to the upgraded stream.
    pub fn new<F>(fut: F) -> Self
    where
        F: Future<Output = io::Result<BoxedIo>> + Send + 'static,
    {
        PendingUpgrade(Arc::new(Mutex::new(Some(Box::pin(fut)))))
    }

    /// Takes the future out; `None` if someone already took it.
    pub fn take(&self) -> Option<UpgradeFuture> {
        match self.0.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
    }
}

impl std::fmt::Debug for PendingUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingUpgrade")
    }
}

//! The upstream side as a trait: send this request to this endpoint.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};

use crate::body::ProxyBody;
use crate::endpoint::Endpoint;
use crate::error::SendError;

/// The future a connector returns.
pub type SendFuture = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, SendError>> + Send>>;

/// Per-request connection settings the core passes to a connector.
#[derive(Debug, Clone, Copy)]
pub struct ConnectOptions {
    /// Longest time to establish a new connection.
    pub connect_timeout: Duration,
}

/// Sends requests to upstream endpoints; one implementation per upstream protocol.
///
/// The request arrives with an origin-form URI (path and query) and its final `Host` header.
/// The future resolves when the response head has arrived; the body streams afterwards. On
/// failure the connector returns the request inside [`SendError`] when it can prove that none
/// of it was sent, so the core may retry it elsewhere.
pub trait Connector: Send + Sync + 'static {
    /// Sends `req` to `endpoint`.
    fn send(
        &self,
        endpoint: &Arc<Endpoint>,
        opts: ConnectOptions,
        req: Request<ProxyBody>,
    ) -> SendFuture;
}

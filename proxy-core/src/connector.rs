//! The upstream side as a trait: send this request to this endpoint.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};

use crate::body::ProxyBody;
use crate::endpoint::Endpoint;
use crate::error::{SendError, UpstreamError};
use crate::upgrade::BoxedIo;
use tokio::net::TcpStream;

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

/// The future a dialer returns.
pub type DialFuture = Pin<Box<dyn Future<Output = Result<Dialed, UpstreamError>> + Send>>;

/// A byte stream to an endpoint, ready for HTTP.
pub struct Dialed {
    /// The stream (TCP, or TLS over TCP).
    pub io: BoxedIo,
    /// The application protocol TLS negotiated by ALPN, if any (`h2`, `http/1.1`).
    pub alpn: Option<Vec<u8>>,
}

impl std::fmt::Debug for Dialed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialed")
            .field("alpn", &self.alpn.as_deref().map(String::from_utf8_lossy))
            .finish_non_exhaustive()
    }
}

/// Opens byte streams to endpoints. Protocol connectors take one so that the composition root
/// can put TLS (or anything else) under them without the core or a protocol crate naming it.
pub trait Dialer: Send + Sync + 'static {
    /// Connects to `endpoint`, giving up after `timeout`.
    fn dial(&self, endpoint: &Arc<Endpoint>, timeout: Duration) -> DialFuture;
}

/// Plain TCP with `TCP_NODELAY`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpDialer;

impl TcpDialer {
    /// Connects a TCP stream to `addr` within `timeout`.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, UpstreamError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(UpstreamError::Connect(e)),
            Err(_) => return Err(UpstreamError::ConnectTimeout),
        };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

impl Dialer for TcpDialer {
    fn dial(&self, endpoint: &Arc<Endpoint>, timeout: Duration) -> DialFuture {
        let addr = endpoint.addr();
        Box::pin(async move {
            let stream = TcpDialer::connect(addr, timeout).await?;
            Ok(Dialed {
                io: Box::new(stream),
                alpn: None,
            })
        })
    }
}

//! Test support: a scripted [`Connector`] and helpers to build configurations in tests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};

use crate::body::{self, ProxyBody};
use crate::connector::{ConnectOptions, Connector, SendFuture};
use crate::endpoint::Endpoint;
use crate::error::{SendError, UpstreamError};

/// What the mock does with one request.
pub enum MockReply {
    /// Answer with this response.
    Respond(Response<ProxyBody>),
    /// Fail as a refused connection (the request comes back unsent).
    Refuse,
    /// Fail as a connection reset after sending (the request is lost).
    Reset,
    /// Never answer.
    Hang,
}

impl MockReply {
    /// A response with this status and text body.
    pub fn text(status: u16, text: &str) -> Self {
        let mut r = Response::new(body::full(text.to_owned()));
        *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        MockReply::Respond(r)
    }
}

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The endpoint it was sent to.
    pub endpoint: SocketAddr,
    /// Method.
    pub method: Method,
    /// URI as sent upstream.
    pub uri: Uri,
    /// Headers as sent upstream.
    pub headers: HeaderMap,
}

type Handler = dyn Fn(SocketAddr, &Request<ProxyBody>) -> MockReply + Send + Sync;

/// A connector that answers from a closure and records what it saw.
pub struct MockConnector {
    handler: Box<Handler>,
    seen: Mutex<Vec<Seen>>,
}

impl MockConnector {
    /// A mock answering with `handler`.
    pub fn new(
        handler: impl Fn(SocketAddr, &Request<ProxyBody>) -> MockReply + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(MockConnector {
            handler: Box::new(handler),
            seen: Mutex::new(Vec::new()),
        })
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Connector for MockConnector {
    fn send(
        &self,
        endpoint: &Arc<Endpoint>,
        _opts: ConnectOptions,
        req: Request<ProxyBody>,
    ) -> SendFuture {
        let addr = endpoint.addr();
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(Seen {
                endpoint: addr,
                method: req.method().clone(),
                uri: req.uri().clone(),
                headers: req.headers().clone(),
            });
        }
        let reply = (self.handler)(addr, &req);
        Box::pin(async move {
            match reply {
                MockReply::Respond(r) => Ok(r),
                MockReply::Refuse => Err(SendError::unsent(
                    UpstreamError::Connect(std::io::ErrorKind::ConnectionRefused.into()),
                    req,
                )),
                MockReply::Reset => Err(SendError::lost(UpstreamError::Io(
                    "connection reset".into(),
                ))),
                MockReply::Hang => std::future::pending().await,
            }
        })
    }
}

/// Collects a body into bytes.
pub async fn collect_body(body: ProxyBody) -> Result<bytes::Bytes, crate::body::BodyError> {
    use http_body_util::BodyExt as _;
    Ok(body.collect().await?.to_bytes())
}

/// An endpoint at `addr` with weight 1.
pub fn endpoint(addr: &str) -> Arc<Endpoint> {
    let sock: SocketAddr = addr
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 1)));
    let authority = addr
        .parse()
        .unwrap_or_else(|_| http::uri::Authority::from_static("127.0.0.1:1"));
    Arc::new(Endpoint::new(sock, authority, 1))
}

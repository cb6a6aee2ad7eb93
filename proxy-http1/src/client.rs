//! The client half: a pooled HTTP/1.1 connector for upstream endpoints.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Version, header};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use proxy_core::body::{self, BodyError, ProxyBody};
use proxy_core::headers::connection_has;
use proxy_core::upgrade::{BoxedIo, PendingUpgrade};
use proxy_core::{
    ConnectOptions, Connector, Dialer, Endpoint, SendError, SendFuture, TcpDialer, UpstreamError,
};
use tokio::time::Instant;

/// Pool settings of the HTTP/1.1 connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// How long an idle pooled connection may be reused; older ones are closed. Default 60 s,
    /// below the 75 s keep-alive timeout common in upstream servers, so the upstream rarely
    /// closes a connection we are about to reuse.
    pub idle_timeout: Duration,
    /// Most idle connections kept per endpoint; extra ones are closed. Default 64.
    pub max_idle_per_endpoint: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            idle_timeout: Duration::from_secs(60),
            max_idle_per_endpoint: 64,
        }
    }
}

struct Idle {
    sender: SendRequest<ProxyBody>,
    since: Instant,
}

struct Pool {
    options: ClientOptions,
    dialer: Option<Arc<dyn Dialer>>,
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
}

impl Pool {
    fn checkout(&self, addr: SocketAddr) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(&addr)?;
        let now = Instant::now();
        while let Some(conn) = list.pop() {
            if !conn.sender.is_closed() && now - conn.since < self.options.idle_timeout {
                return Some(conn.sender);
            }
        }
        None
    }

    fn checkin(&self, addr: SocketAddr, sender: SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            let list = idle.entry(addr).or_default();
            let now = Instant::now();
            list.retain(|c| !c.sender.is_closed() && now - c.since < self.options.idle_timeout);
            if list.len() < self.options.max_idle_per_endpoint {
                list.push(Idle { sender, since: now });
            }
        }
    }
}

/// HTTP/1.1 to upstream endpoints with a keep-alive pool per endpoint.
///
/// A connection returns to the pool only after its response body was read to the end and the
/// upstream did not ask to close it; a connection that saw an error is never reused.
#[derive(Clone)]
pub struct Http1Connector {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Http1Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http1Connector")
            .field("options", &self.pool.options)
            .finish_non_exhaustive()
    }
}

impl Http1Connector {
    /// A connector over plain TCP with these pool settings.
    pub fn new(options: ClientOptions) -> Self {
        Http1Connector {
            pool: Arc::new(Pool {
                options,
                dialer: None,
                idle: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A connector over the streams `dialer` opens (e.g. TLS offering ALPN `http/1.1`).
    pub fn with_dialer(options: ClientOptions, dialer: Arc<dyn Dialer>) -> Self {
        Http1Connector {
            pool: Arc::new(Pool {
                options,
                dialer: Some(dialer),
                idle: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl Connector for Http1Connector {
    fn send(
        &self,
        endpoint: &Arc<Endpoint>,
        opts: ConnectOptions,
        req: Request<ProxyBody>,
    ) -> SendFuture {
        let pool = self.pool.clone();
        Box::pin(send(pool, endpoint.clone(), opts, req))
    }
}

async fn send(
    pool: Arc<Pool>,
    endpoint: Arc<Endpoint>,
    opts: ConnectOptions,
    mut req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, SendError> {
    let addr = endpoint.addr();
    *req.version_mut() = Version::HTTP_11;
    let upgrade = req.headers().contains_key(header::UPGRADE);
    loop {
        let (mut sender, reused) = match pool.checkout(addr) {
            Some(sender) => (sender, true),
            None => match connect(&pool, &endpoint, opts.connect_timeout).await {
                Ok(sender) => (sender, false),
                Err(e) => return Err(SendError::unsent(e, req)),
            },
        };
        if sender.ready().await.is_err() {
            if reused {
                continue;
            }
            return Err(SendError::unsent(
                UpstreamError::Connect(std::io::Error::other("connection closed before use")),
                req,
            ));
        }
        match sender.try_send_request(req).await {
            Ok(resp) => return finish(resp, sender, pool, addr, upgrade),
            Err(mut e) => match e.take_message() {
                // Not a byte was written: a stale pooled connection; try a fresh one.
                Some(r) if reused => {
                    req = r;
                }
                Some(r) => return Err(SendError::unsent(classify(e.into_error()), r)),
                None => return Err(SendError::lost(classify(e.into_error()))),
            },
        }
    }
}

async fn connect(
    pool: &Pool,
    endpoint: &Arc<Endpoint>,
    timeout: Duration,
) -> Result<SendRequest<ProxyBody>, UpstreamError> {
    let addr = endpoint.addr();
    // Plain TCP stays unboxed: it is the common case and the hot path.
    match &pool.dialer {
        None => handshake(addr, TcpDialer::connect(addr, timeout).await?).await,
        Some(dialer) => handshake(addr, dialer.dial(endpoint, timeout).await?.io).await,
    }
}

async fn handshake<I>(addr: SocketAddr, io: I) -> Result<SendRequest<ProxyBody>, UpstreamError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| UpstreamError::Connect(std::io::Error::other(e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(upstream = %addr, error = %e, "upstream connection closed with error");
        }
    });
    Ok(sender)
}

fn finish(
    mut resp: Response<Incoming>,
    sender: SendRequest<ProxyBody>,
    pool: Arc<Pool>,
    addr: SocketAddr,
    upgrade: bool,
) -> Result<Response<ProxyBody>, SendError> {
    let h = resp.headers();
    // RFC 9112 section 6.3: a response with both "ought to be handled as an error"; relaying
    // it would let the upstream and the client disagree about where the message ends.
    if h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH) {
        return Err(SendError::lost(UpstreamError::BadResponse(
            "response has both Content-Length and Transfer-Encoding".into(),
        )));
    }
    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        if !upgrade {
            return Err(SendError::lost(UpstreamError::BadResponse(
                "101 Switching Protocols to a request that did not ask for it".into(),
            )));
        }
        let on = hyper::upgrade::on(&mut resp);
        resp.extensions_mut()
            .insert(PendingUpgrade::new(async move {
                let upgraded = on.await.map_err(std::io::Error::other)?;
                Ok(Box::new(TokioIo::new(upgraded)) as BoxedIo)
            }));
        // The connection now belongs to the tunnel; it never returns to the pool.
        return Ok(resp.map(body::boxed));
    }
    let keep_alive = !connection_has(h, "close");
    let release = keep_alive.then_some(Release { pool, addr, sender });
    Ok(resp.map(|incoming| {
        let mut pooled = Pooled {
            inner: incoming,
            release,
        };
        if pooled.inner.is_end_stream() {
            pooled.release();
        }
        body::boxed(pooled)
    }))
}

fn classify(e: hyper::Error) -> UpstreamError {
    if e.is_user() {
        UpstreamError::ClientBody(Box::new(e))
    } else if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        UpstreamError::BadResponse(Box::new(e))
    } else {
        UpstreamError::Io(Box::new(e))
    }
}

struct Release {
    pool: Arc<Pool>,
    addr: SocketAddr,
    sender: SendRequest<ProxyBody>,
}

/// A response body that hands its connection back to the pool once read to the end.
struct Pooled {
    inner: Incoming,
    release: Option<Release>,
}

impl Pooled {
    fn release(&mut self) {
        if let Some(r) = self.release.take() {
            r.pool.checkin(r.addr, r.sender);
        }
    }
}

impl Body for Pooled {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if self.inner.is_end_stream() {
                    self.release();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                self.release();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                // Never reuse a connection that failed mid-body.
                self.release = None;
                Poll::Ready(Some(Err(Box::new(UpstreamError::Io(Box::new(e))))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

//! The client half: HTTP/2 to upstream endpoints, many requests multiplexed over a bounded
//! number of connections per endpoint.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use h2::Reason;
use h2::client::SendRequest;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version, header};
use http_body::Body as _;
use proxy_core::body::{self, ProxyBody};
use proxy_core::headers::TakesTrailers;
use proxy_core::{
    ConnectOptions, Connector, Dialer, Endpoint, SendError, SendFuture, TcpDialer, UpstreamError,
};

use crate::body::{RecvBody, pump};

/// Settings of the HTTP/2 connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// Most connections per endpoint. A new one opens only when every existing one is at the
    /// peer's concurrent-stream limit. Default 2.
    pub max_connections_per_endpoint: usize,
    /// Per-stream receive window for response bodies. Default 1 MiB.
    pub initial_stream_window: u32,
    /// Connection receive window. Default 4 MiB.
    pub initial_connection_window: u32,
    /// Largest response header list accepted. Default 64 KiB.
    pub max_header_list_size: u32,
    /// How long a request body may wait for the upstream's window before it is reset.
    pub send_stall_timeout: Duration,
    /// Whether the upstream is reached over TLS (sets the `:scheme` pseudo-header).
    pub tls: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            max_connections_per_endpoint: 2,
            initial_stream_window: 1024 * 1024,
            initial_connection_window: 4 * 1024 * 1024,
            max_header_list_size: 64 * 1024,
            send_stall_timeout: Duration::from_secs(60),
            tls: false,
        }
    }
}

/// One live connection and how loaded it is.
struct Conn {
    sender: SendRequest<Bytes>,
    streams: Arc<AtomicUsize>,
    closed: Arc<AtomicBool>,
}

impl Conn {
    fn usable(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }
}

/// The connections of one endpoint. Dialing happens under the async lock, so a burst of
/// requests to a new endpoint shares one connection instead of opening one each.
#[derive(Default)]
struct EndpointConns {
    conns: tokio::sync::Mutex<Vec<Conn>>,
}

struct Inner {
    options: ClientOptions,
    dialer: Arc<dyn Dialer>,
    endpoints: Mutex<HashMap<SocketAddr, Arc<EndpointConns>>>,
}

/// HTTP/2 to upstream endpoints (h2c over TCP by default, or over any [`Dialer`], e.g. TLS).
///
/// Requests multiplex over the endpoint's connections; a connection that fails or receives
/// GOAWAY is dropped and the next request dials a fresh one. Request and response bodies
/// stream under HTTP/2 flow control, trailers included (gRPC).
#[derive(Clone)]
pub struct Http2Connector {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Http2Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http2Connector")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl Http2Connector {
    /// Cleartext HTTP/2 with prior knowledge (h2c).
    pub fn new(options: ClientOptions) -> Self {
        Self::with_dialer(options, Arc::new(TcpDialer))
    }

    /// HTTP/2 over the streams `dialer` opens (for TLS, its ALPN should offer `h2`).
    pub fn with_dialer(options: ClientOptions, dialer: Arc<dyn Dialer>) -> Self {
        Http2Connector {
            inner: Arc::new(Inner {
                options,
                dialer,
                endpoints: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl Connector for Http2Connector {
    fn send(
        &self,
        endpoint: &Arc<Endpoint>,
        opts: ConnectOptions,
        req: Request<ProxyBody>,
    ) -> SendFuture {
        let inner = self.inner.clone();
        Box::pin(send(inner, endpoint.clone(), opts, req))
    }
}

async fn send(
    inner: Arc<Inner>,
    endpoint: Arc<Endpoint>,
    opts: ConnectOptions,
    req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, SendError> {
    let addr = endpoint.addr();
    let conns = {
        let Ok(mut map) = inner.endpoints.lock() else {
            return Err(SendError::unsent(
                UpstreamError::Connect(std::io::Error::other("connector state poisoned")),
                req,
            ));
        };
        map.entry(addr).or_default().clone()
    };
    // Two rounds at most: a pooled connection that turns out dead gets one fresh replacement.
    let mut last_error = None;
    for _ in 0..2 {
        let (sender, streams) = match checkout(&inner, &conns, &endpoint, opts).await {
            Ok(c) => c,
            Err(e) => return Err(SendError::unsent(e, req)),
        };
        let sender = match sender.ready().await {
            Ok(s) => s,
            Err(e) => {
                // GOAWAY or a dead connection: nothing was sent on it.
                last_error = Some(e);
                continue;
            }
        };
        return dispatch(&inner.options, sender, streams, endpoint.authority(), req).await;
    }
    let e = last_error.map_or_else(
        || std::io::Error::other("no usable HTTP/2 connection"),
        std::io::Error::other,
    );
    Err(SendError::unsent(UpstreamError::Connect(e), req))
}

/// A connection with room for one more stream, dialing a new one when all are full.
async fn checkout(
    inner: &Inner,
    conns: &EndpointConns,
    endpoint: &Arc<Endpoint>,
    opts: ConnectOptions,
) -> Result<(SendRequest<Bytes>, Arc<AtomicUsize>), UpstreamError> {
    let mut list = conns.conns.lock().await;
    list.retain(Conn::usable);
    let least = list
        .iter()
        .min_by_key(|c| c.streams.load(Ordering::Relaxed));
    if let Some(c) = least {
        let load = c.streams.load(Ordering::Relaxed);
        let full = load >= c.sender.current_max_send_streams();
        if !full || list.len() >= inner.options.max_connections_per_endpoint {
            return Ok((c.sender.clone(), c.streams.clone()));
        }
    }
    let conn = connect(inner, endpoint, opts.connect_timeout).await?;
    let out = (conn.sender.clone(), conn.streams.clone());
    list.push(conn);
    Ok(out)
}

async fn connect(
    inner: &Inner,
    endpoint: &Arc<Endpoint>,
    timeout: Duration,
) -> Result<Conn, UpstreamError> {
    let addr = endpoint.addr();
    let dialed = inner.dialer.dial(endpoint, timeout).await?;
    let o = &inner.options;
    let handshake = h2::client::Builder::new()
        .initial_window_size(o.initial_stream_window)
        .initial_connection_window_size(o.initial_connection_window)
        .max_header_list_size(o.max_header_list_size)
        .enable_push(false)
        .handshake::<_, Bytes>(dialed.io);
    let deadline = tokio::time::Instant::now() + timeout;
    let (sender, mut connection) = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(UpstreamError::Connect(std::io::Error::other(e))),
        Err(_) => return Err(UpstreamError::ConnectTimeout),
    };
    let pinger = connection.ping_pong();
    let closed = Arc::new(AtomicBool::new(false));
    let done = closed.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(upstream = %addr, error = %e, "upstream HTTP/2 connection closed with error");
        }
        done.store(true, Ordering::Release);
    });
    // The server's SETTINGS (its stream limit above all) arrive before the answer to a PING;
    // until then h2 assumes no limit, and a burst of requests would be refused.
    if let Some(mut pinger) = pinger {
        match tokio::time::timeout_at(deadline, pinger.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(UpstreamError::Connect(std::io::Error::other(e))),
            Err(_) => return Err(UpstreamError::ConnectTimeout),
        }
    }
    tracing::debug!(upstream = %addr, "upstream HTTP/2 connection established");
    Ok(Conn {
        sender,
        streams: Arc::new(AtomicUsize::new(0)),
        closed,
    })
}

/// Sends the request on a ready connection and waits for the response head.
async fn dispatch(
    options: &ClientOptions,
    mut sender: SendRequest<Bytes>,
    streams: Arc<AtomicUsize>,
    fallback_authority: &Authority,
    req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, SendError> {
    let (mut parts, body) = req.into_parts();
    // The Host header becomes :authority (RFC 9113 section 8.3.1).
    let authority = parts
        .headers
        .remove(header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .unwrap_or_else(|| fallback_authority.clone());
    let scheme = if options.tls {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    };
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(scheme);
    uri.authority = Some(authority);
    uri.path_and_query = parts.uri.path_and_query().cloned();
    parts.uri = match Uri::from_parts(uri) {
        Ok(u) => u,
        Err(e) => {
            return Err(SendError::lost(UpstreamError::BadResponse(Box::new(e))));
        }
    };
    parts.version = Version::HTTP_2;
    // The core removed hop-by-hop fields; `te: trailers` is the one value HTTP/2 allows, and
    // gRPC servers require it when the client asked for trailers.
    if parts
        .headers
        .get(header::TE)
        .is_some_and(|te| te != "trailers")
    {
        parts.headers.remove(header::TE);
    }
    if parts.extensions.get::<TakesTrailers>().is_some() {
        parts
            .headers
            .insert(header::TE, http::HeaderValue::from_static("trailers"));
    }
    let end = body.is_end_stream();
    let head = Request::from_parts(parts, ());
    let (response, mut tx) = match sender.send_request(head, end) {
        Ok(pair) => pair,
        Err(e) => return Err(SendError::lost(classify(e))),
    };
    let guard = StreamGuard::new(streams);
    if !end {
        let stall = options.send_stall_timeout;
        tokio::spawn(async move {
            if let Err(e) = pump(body, &mut tx, stall).await {
                tracing::debug!(error = %e, "request body to HTTP/2 upstream not finished");
            }
        });
    }
    let resp = response.await.map_err(|e| SendError::lost(classify(e)))?;
    let (parts, recv) = resp.into_parts();
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = if recv.is_end_stream() {
        drop(guard);
        body::empty()
    } else {
        body::boxed(Counted {
            inner: RecvBody::new(recv, length),
            _guard: guard,
        })
    };
    Ok(Response::from_parts(parts, body))
}

fn classify(e: h2::Error) -> UpstreamError {
    match e.reason() {
        Some(Reason::PROTOCOL_ERROR | Reason::COMPRESSION_ERROR | Reason::FRAME_SIZE_ERROR) => {
            UpstreamError::BadResponse(Box::new(e))
        }
        _ => UpstreamError::Io(Box::new(e)),
    }
}

/// Counts a stream against its connection until the response body is done.
struct StreamGuard(Arc<AtomicUsize>);

impl StreamGuard {
    fn new(streams: Arc<AtomicUsize>) -> Self {
        streams.fetch_add(1, Ordering::AcqRel);
        StreamGuard(streams)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that holds its stream's slot until dropped.
struct Counted {
    inner: RecvBody,
    _guard: StreamGuard,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, h2::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

//! The client half: HTTP/3 to upstream endpoints, one multiplexed QUIC connection per
//! endpoint, with an optional fallback connector (HTTP/2 over TLS) for endpoints whose QUIC
//! handshake fails.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version, header};
use http_body::Body as _;
use proxy_core::body::{self, ProxyBody};
use proxy_core::headers::TakesTrailers;
use proxy_core::{ConnectOptions, Connector, Endpoint, SendError, SendFuture, UpstreamError};
use quinn::crypto::rustls::QuicClientConfig;
use tokio::time::Instant;

use crate::Http3Error;
use crate::body::{RecvBody, send_body};
use crate::options::ALPN_H3;

/// Settings of the HTTP/3 connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// Per-stream receive window for response bodies. Default 1 MiB.
    pub stream_receive_window: u32,
    /// Connection receive window. Default 4 MiB.
    pub connection_receive_window: u32,
    /// Largest response header section accepted. Default 64 KiB.
    pub max_field_section_size: u64,
    /// QUIC idle timeout; idle connections are kept alive with PINGs at a third of it.
    /// Default 30 s.
    pub idle_timeout: Duration,
    /// How long a request body may wait for the upstream's flow control before it is reset.
    pub send_stall_timeout: Duration,
    /// After a failed QUIC handshake, how long the endpoint's requests go to the fallback
    /// connector before QUIC is tried again. Default 60 s.
    pub retry_quic_after: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            stream_receive_window: 1024 * 1024,
            connection_receive_window: 4 * 1024 * 1024,
            max_field_section_size: 64 * 1024,
            idle_timeout: Duration::from_secs(30),
            send_stall_timeout: Duration::from_secs(60),
            retry_quic_after: Duration::from_secs(60),
        }
    }
}

type Sender = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// One live connection.
struct Conn {
    sender: Sender,
    closed: Arc<AtomicBool>,
}

/// An endpoint's connection, dialed under the async lock so a burst shares one handshake.
#[derive(Default)]
struct EndpointConn {
    conn: tokio::sync::Mutex<Option<Conn>>,
    /// Set while QUIC to this endpoint is considered broken: requests use the fallback.
    broken_until: Mutex<Option<Instant>>,
}

struct Inner {
    options: ClientOptions,
    quic: quinn::ClientConfig,
    server_name: Option<String>,
    fallback: Option<Arc<dyn Connector>>,
    sockets: Mutex<Sockets>,
    endpoints: Mutex<HashMap<SocketAddr, Arc<EndpointConn>>>,
}

/// The UDP sockets (one per address family), opened on first use.
#[derive(Default)]
struct Sockets {
    v4: Option<quinn::Endpoint>,
    v6: Option<quinn::Endpoint>,
}

/// HTTP/3 to upstream endpoints, always over TLS 1.3 (QUIC), verifying the endpoint's
/// certificate with the given rustls configuration.
///
/// Requests multiplex over one connection per endpoint; a connection that closes is replaced
/// on the next request. With a fallback connector, an endpoint that cannot be
/// reached over QUIC (UDP blocked, no HTTP/3 there) is served by the fallback connector
/// instead, and QUIC is tried again after [`ClientOptions::retry_quic_after`].
#[derive(Clone)]
pub struct Http3Connector {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Http3Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http3Connector")
            .field("options", &self.inner.options)
            .field("server_name", &self.inner.server_name)
            .field("fallback", &self.inner.fallback.is_some())
            .finish_non_exhaustive()
    }
}

impl Http3Connector {
    /// A connector verifying upstream certificates with `tls` (its roots and client
    /// certificate; ALPN is set to `h3`). `server_name` is the name sent and verified; the
    /// endpoint's host when `None`. Requests for endpoints that QUIC cannot reach go to
    /// `fallback` when there is one (typically HTTP/2 over TLS to the same endpoints).
    pub fn new(
        tls: &rustls::ClientConfig,
        server_name: Option<String>,
        options: ClientOptions,
        fallback: Option<Arc<dyn Connector>>,
    ) -> Result<Self, Http3Error> {
        let mut tls = tls.clone();
        tls.alpn_protocols = vec![ALPN_H3.to_vec()];
        // Upstream requests may be unsafe: never send them as replayable early data.
        tls.enable_early_data = false;
        let crypto = QuicClientConfig::try_from(Arc::new(tls)).map_err(|_| Http3Error::NoTls13)?;
        let mut quic = quinn::ClientConfig::new(Arc::new(crypto));
        let idle = quinn::IdleTimeout::try_from(options.idle_timeout)
            .map_err(|_| Http3Error::Option("idle_timeout is too long for QUIC"))?;
        let mut transport = quinn::TransportConfig::default();
        transport
            .stream_receive_window(quinn::VarInt::from_u32(options.stream_receive_window))
            .receive_window(quinn::VarInt::from_u32(options.connection_receive_window))
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(options.idle_timeout / 3))
            // The server opens no request streams; three for its control and QPACK streams,
            // plus room for grease.
            .max_concurrent_bidi_streams(quinn::VarInt::from_u32(0))
            .max_concurrent_uni_streams(quinn::VarInt::from_u32(8));
        quic.transport_config(Arc::new(transport));
        Ok(Http3Connector {
            inner: Arc::new(Inner {
                options,
                quic,
                server_name,
                fallback,
                sockets: Mutex::new(Sockets::default()),
                endpoints: Mutex::new(HashMap::new()),
            }),
        })
    }
}

impl Connector for Http3Connector {
    fn send(
        &self,
        endpoint: &Arc<Endpoint>,
        opts: ConnectOptions,
        req: Request<ProxyBody>,
    ) -> SendFuture {
        Box::pin(send(self.inner.clone(), endpoint.clone(), opts, req))
    }
}

async fn send(
    inner: Arc<Inner>,
    endpoint: Arc<Endpoint>,
    opts: ConnectOptions,
    req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, SendError> {
    let addr = endpoint.addr();
    let slot = match inner.endpoints.lock() {
        Ok(mut map) => map.entry(addr).or_default().clone(),
        Err(_) => {
            let e = std::io::Error::other("connector state poisoned");
            return Err(SendError::unsent(UpstreamError::Connect(e), req));
        }
    };
    if let Some(fallback) = &inner.fallback
        && slot.is_broken()
    {
        return fallback.send(&endpoint, opts, req).await;
    }
    // Two rounds at most: a connection that closed under us gets one fresh replacement.
    let mut req = req;
    for _ in 0..2 {
        let sender = match checkout(&inner, &slot, &endpoint, opts).await {
            Ok(s) => s,
            Err(e) => {
                if let Some(fallback) = &inner.fallback {
                    slot.mark_broken(inner.options.retry_quic_after);
                    tracing::warn!(upstream = %addr, error = %e, retry_after = ?inner.options.retry_quic_after, "HTTP/3 to upstream failed; using the fallback connector");
                    return fallback.send(&endpoint, opts, req).await;
                }
                return Err(SendError::unsent(e, req));
            }
        };
        match dispatch(&inner.options, sender, endpoint.authority(), req).await {
            Dispatched::Done(result) => return result,
            Dispatched::NotSent(back) => {
                slot.forget().await;
                req = back;
            }
        }
    }
    let e = std::io::Error::other("no usable HTTP/3 connection");
    Err(SendError::unsent(UpstreamError::Connect(e), req))
}

impl EndpointConn {
    fn is_broken(&self) -> bool {
        let Ok(mut until) = self.broken_until.lock() else {
            return false;
        };
        match *until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }

    fn mark_broken(&self, retry_after: Duration) {
        if let Ok(mut until) = self.broken_until.lock() {
            *until = Some(Instant::now() + retry_after);
        }
    }

    async fn forget(&self) {
        *self.conn.lock().await = None;
    }
}

/// The endpoint's connection, dialing one when there is none or it closed.
async fn checkout(
    inner: &Inner,
    slot: &EndpointConn,
    endpoint: &Arc<Endpoint>,
    opts: ConnectOptions,
) -> Result<Sender, UpstreamError> {
    let mut conn = slot.conn.lock().await;
    if let Some(c) = conn.as_ref()
        && !c.closed.load(Ordering::Acquire)
    {
        return Ok(c.sender.clone());
    }
    let fresh = connect(inner, endpoint, opts.connect_timeout).await?;
    let sender = fresh.sender.clone();
    *conn = Some(fresh);
    Ok(sender)
}

fn socket(inner: &Inner, addr: SocketAddr) -> Result<quinn::Endpoint, UpstreamError> {
    let mut sockets = inner
        .sockets
        .lock()
        .map_err(|_| UpstreamError::Connect(std::io::Error::other("connector state poisoned")))?;
    let (slot, bind): (&mut Option<quinn::Endpoint>, SocketAddr) = if addr.is_ipv4() {
        (&mut sockets.v4, SocketAddr::from(([0, 0, 0, 0], 0)))
    } else {
        (&mut sockets.v6, SocketAddr::from(([0u16; 8], 0)))
    };
    if let Some(e) = slot {
        return Ok(e.clone());
    }
    let mut endpoint = quinn::Endpoint::client(bind).map_err(UpstreamError::Connect)?;
    endpoint.set_default_client_config(inner.quic.clone());
    *slot = Some(endpoint.clone());
    Ok(endpoint)
}

async fn connect(
    inner: &Inner,
    endpoint: &Arc<Endpoint>,
    timeout: Duration,
) -> Result<Conn, UpstreamError> {
    let addr = endpoint.addr();
    let socket = socket(inner, addr)?;
    let host = endpoint.authority().host();
    let name = inner.server_name.as_deref().unwrap_or(host);
    let connecting = socket
        .connect(addr, name)
        .map_err(|e| UpstreamError::Connect(std::io::Error::other(e)))?;
    let deadline = Instant::now() + timeout;
    let quic = match tokio::time::timeout_at(deadline, connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(UpstreamError::Connect(std::io::Error::other(e))),
        Err(_) => return Err(UpstreamError::ConnectTimeout),
    };
    let mut builder = h3::client::builder();
    builder.max_field_section_size(inner.options.max_field_section_size);
    let built = builder.build::<_, _, Bytes>(h3_quinn::Connection::new(quic));
    let (mut driver, sender) = match tokio::time::timeout_at(deadline, built).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(UpstreamError::Connect(std::io::Error::other(e))),
        Err(_) => return Err(UpstreamError::ConnectTimeout),
    };
    let closed = Arc::new(AtomicBool::new(false));
    let done = closed.clone();
    tokio::spawn(async move {
        let e = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        tracing::debug!(upstream = %addr, error = %e, "upstream HTTP/3 connection closed");
        done.store(true, Ordering::Release);
    });
    tracing::debug!(upstream = %addr, "upstream HTTP/3 connection established");
    Ok(Conn { sender, closed })
}

enum Dispatched {
    Done(Result<Response<ProxyBody>, SendError>),
    /// The connection refused the stream before any of the request went out.
    NotSent(Request<ProxyBody>),
}

/// Sends the request on `sender` and waits for the response head.
async fn dispatch(
    options: &ClientOptions,
    mut sender: Sender,
    fallback_authority: &Authority,
    req: Request<ProxyBody>,
) -> Dispatched {
    // The Host header becomes :authority (RFC 9114 section 4.3.1).
    let authority = req
        .headers()
        .get(header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .unwrap_or_else(|| fallback_authority.clone());
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTPS);
    uri.authority = Some(authority);
    uri.path_and_query = req.uri().path_and_query().cloned();
    let uri = match Uri::from_parts(uri) {
        Ok(u) => u,
        Err(e) => {
            return Dispatched::Done(Err(SendError::unsent(
                UpstreamError::BadResponse(Box::new(e)),
                req,
            )));
        }
    };
    let mut head = Request::new(());
    *head.method_mut() = req.method().clone();
    *head.uri_mut() = uri;
    *head.version_mut() = Version::HTTP_3;
    *head.headers_mut() = req.headers().clone();
    let headers = head.headers_mut();
    headers.remove(header::HOST);
    proxy_core::multiplexed::strip_connection_headers(headers);
    if req.extensions().get::<TakesTrailers>().is_some() {
        headers.insert(header::TE, http::HeaderValue::from_static("trailers"));
    }
    let stream = match sender.send_request(head).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "HTTP/3 request stream not opened");
            return Dispatched::NotSent(req);
        }
    };
    let (mut tx, mut rx) = stream.split();
    let request_body = req.into_body();
    let stall = options.send_stall_timeout;
    if request_body.is_end_stream() {
        if let Err(e) = tx.finish().await {
            return Dispatched::Done(Err(SendError::lost(UpstreamError::Io(Box::new(e)))));
        }
    } else {
        tokio::spawn(async move {
            if let Err(e) = send_body(request_body, &mut tx, stall).await {
                tracing::debug!(error = %e, "request body to HTTP/3 upstream not finished");
            }
        });
    }
    let resp = match rx.recv_response().await {
        Ok(r) => r,
        Err(e) => return Dispatched::Done(Err(SendError::lost(UpstreamError::Io(Box::new(e))))),
    };
    let (parts, ()) = resp.into_parts();
    let length = proxy_core::multiplexed::content_length(&parts.headers);
    let body = if length == Some(0) {
        body::empty()
    } else {
        body::boxed(RecvBody::new(rx, length))
    };
    Dispatched::Done(Ok(Response::from_parts(parts, body)))
}

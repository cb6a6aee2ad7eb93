//! The server half: serve one HTTP/2 connection into a core service.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use h2::Reason;
use h2::server::SendResponse;
use http::{Request, Response, Version};
use http_body::Body as _;
use proxy_core::ConnInfo;
use proxy_core::body::{self, ProxyBody};
use proxy_core::multiplexed::{self, OpenStreams, sleep_until};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use crate::body::{PumpError, RecvBody, pump};
use crate::guard::{FloodLimits, GuardedIo, Tripwire};

/// Limits and timeouts of the HTTP/2 server. Every h2 knob is set explicitly: the crate's own
/// defaults (unlimited streams, 16 MiB header lists) are unsafe for a public frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerOptions {
    /// Most streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// Per-stream receive window (SETTINGS_INITIAL_WINDOW_SIZE): how much request body one
    /// stream may have in flight.
    pub initial_stream_window: u32,
    /// Connection-level receive window.
    pub initial_connection_window: u32,
    /// Largest frame payload accepted (SETTINGS_MAX_FRAME_SIZE).
    pub max_frame_size: u32,
    /// Largest decoded header list (SETTINGS_MAX_HEADER_LIST_SIZE); larger ones get 431.
    pub max_header_list_size: u32,
    /// Most header fields in one request, each cookie crumb counted; more get 431.
    pub max_headers: usize,
    /// Most remotely-reset streams waiting to be accepted before GOAWAY ENHANCE_YOUR_CALM.
    pub max_pending_accept_reset_streams: usize,
    /// Most streams the server had to reset because of client errors before GOAWAY
    /// ENHANCE_YOUR_CALM (MadeYouReset, CVE-2025-8671).
    pub max_local_error_reset_streams: usize,
    /// Most locally reset streams whose state is kept to ignore late frames.
    pub max_concurrent_reset_streams: usize,
    /// Most response bytes buffered per stream before the body source is paused.
    pub max_send_buffer_size: usize,
    /// Frame floods counted under the codec.
    pub floods: FloodLimits,
    /// Longest wait for the client preface and SETTINGS exchange.
    pub handshake_timeout: Duration,
    /// How long a connection with no open stream stays open.
    pub idle_timeout: Duration,
    /// Longest time a response may wait for the client to open its flow-control window.
    pub send_stall_timeout: Duration,
    /// After a GOAWAY, how long the connection stays open for the client to read it and
    /// close: from the GOAWAY for abuse and protocol errors, from the end of the last stream
    /// for a drain (streams in flight are waited for; the caller bounds a shutdown).
    pub close_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_concurrent_streams: 128,
            initial_stream_window: 256 * 1024,
            initial_connection_window: 1024 * 1024,
            max_frame_size: 16 * 1024,
            max_header_list_size: 64 * 1024,
            max_headers: 100,
            max_pending_accept_reset_streams: 50,
            max_local_error_reset_streams: 200,
            max_concurrent_reset_streams: 100,
            max_send_buffer_size: 256 * 1024,
            floods: FloodLimits::default(),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            send_stall_timeout: Duration::from_secs(60),
            close_timeout: Duration::from_secs(5),
        }
    }
}

/// Counters shared by every connection of a listener, for logs and metrics.
#[derive(Debug, Default)]
pub struct Http2Stats {
    /// Connections closed with GOAWAY ENHANCE_YOUR_CALM (by the guard or by h2's own limits).
    pub abusive_connections: AtomicU64,
    /// Streams reset because the client kept its window shut past the stall timeout.
    pub stalled_streams: AtomicU64,
}

/// How a connection ended, when it did not end cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// No valid preface and SETTINGS within the handshake timeout.
    #[error("HTTP/2 handshake timed out")]
    HandshakeTimeout,
    /// A protocol or IO error on the connection.
    #[error("HTTP/2 connection error")]
    Connection(#[source] h2::Error),
    /// The client broke a flood limit and was sent GOAWAY ENHANCE_YOUR_CALM.
    #[error("abusive client: {0}")]
    Abuse(&'static str),
}

/// Serves one accepted connection (TLS with ALPN `h2`, or cleartext starting with the
/// preface) until it closes, or until `shutdown` is cancelled and the streams in flight have
/// finished (GOAWAY first, so the client opens no new ones).
pub async fn serve_connection<I, S>(
    io: I,
    info: ConnInfo,
    service: S,
    options: ServerOptions,
    stats: Arc<Http2Stats>,
    shutdown: CancellationToken,
) -> Result<(), ServeError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let started = Instant::now();
    let wire = Arc::new(Tripwire::default());
    let io = GuardedIo::new(io, options.floods, wire.clone());
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(options.max_concurrent_streams)
        .initial_window_size(options.initial_stream_window)
        .initial_connection_window_size(options.initial_connection_window)
        .max_frame_size(options.max_frame_size)
        .max_header_list_size(options.max_header_list_size)
        .max_pending_accept_reset_streams(options.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(Some(options.max_local_error_reset_streams))
        .max_concurrent_reset_streams(options.max_concurrent_reset_streams)
        .max_send_buffer_size(options.max_send_buffer_size);
    let handshake = builder.handshake::<_, Bytes>(io);
    let mut conn = match tokio::time::timeout(options.handshake_timeout, handshake).await {
        Err(_) => return Err(ServeError::HandshakeTimeout),
        Ok(Err(e)) => return Err(ServeError::Connection(e)),
        Ok(Ok(c)) => c,
    };

    let info = Arc::new(info);
    let open = Arc::new(OpenStreams::default());
    let mut draining: Option<Instant> = None;
    let mut calmed: Option<&'static str> = None;
    // h2's handshake ends with the preface; the client's SETTINGS must follow within the same
    // budget, or a client could hold the connection by sending the preface alone.
    let settings_deadline = started + options.handshake_timeout;
    loop {
        let idle_deadline = open.idle_since().map(|t| t + options.idle_timeout);
        let awaiting_settings = !wire.settings_seen() && calmed.is_none();
        // A drain waits for the streams in flight (the listener's shutdown deadline bounds
        // it); an abusive client, or one with no stream left that ignores GOAWAY, gets a short
        // grace to read it.
        let close_deadline = match (draining, calmed, open.idle_since()) {
            (Some(t), Some(_), _) => Some(t + options.close_timeout),
            // Counted from the later of the GOAWAY and the last stream's end, so the last
            // response has time to be flushed.
            (Some(t), None, Some(idle)) => Some(t.max(idle) + options.close_timeout),
            _ => None,
        };
        tokio::select! {
            next = conn.accept() => match next {
                Some(Ok((req, respond))) => {
                    open.opened();
                    let ctx = StreamCtx {
                        info: info.clone(),
                        open: open.clone(),
                        options,
                        stats: stats.clone(),
                    };
                    let service = service.clone();
                    tokio::spawn(serve_stream(req, respond, service, ctx));
                }
                Some(Err(e)) => {
                    if e.reason() == Some(Reason::ENHANCE_YOUR_CALM) && e.is_library() {
                        stats.abusive_connections.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(conn = info.id, peer = %info.peer, error = %e, "HTTP/2 client broke an h2 limit; GOAWAY ENHANCE_YOUR_CALM");
                        return Err(ServeError::Connection(e));
                    }
                    return match calmed {
                        Some(why) => Err(ServeError::Abuse(why)),
                        None if e.is_go_away() || e.is_io() => {
                            tracing::debug!(conn = info.id, error = %e, "HTTP/2 connection closed");
                            Ok(())
                        }
                        None => Err(ServeError::Connection(e)),
                    };
                }
                None => {
                    return match calmed {
                        Some(why) => Err(ServeError::Abuse(why)),
                        None => Ok(()),
                    };
                }
            },
            flood = wire.wait(), if calmed.is_none() => {
                if flood.is_abuse() {
                    stats.abusive_connections.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(conn = info.id, peer = %info.peer, flood = flood.as_str(), "HTTP/2 flood; GOAWAY ENHANCE_YOUR_CALM");
                } else {
                    tracing::info!(conn = info.id, peer = %info.peer, error = flood.as_str(), "HTTP/2 protocol error; GOAWAY");
                }
                conn.abrupt_shutdown(flood.reason());
                calmed = Some(flood.as_str());
                draining.get_or_insert_with(Instant::now);
            }
            () = shutdown.cancelled(), if draining.is_none() => {
                conn.graceful_shutdown();
                draining = Some(Instant::now());
            }
            () = tokio::time::sleep_until(settings_deadline), if awaiting_settings => {
                if !wire.settings_seen() {
                    tracing::debug!(conn = info.id, peer = %info.peer, "no SETTINGS after the HTTP/2 preface; closing");
                    return Err(ServeError::HandshakeTimeout);
                }
            }
            () = sleep_until(idle_deadline), if idle_deadline.is_some() && draining.is_none() => {
                tracing::debug!(conn = info.id, "HTTP/2 connection idle; GOAWAY");
                conn.graceful_shutdown();
                draining = Some(Instant::now());
            }
            () = open.changed() => {}
            () = sleep_until(close_deadline), if close_deadline.is_some() => {
                tracing::debug!(conn = info.id, streams = open.count(), "HTTP/2 close deadline reached");
                return match calmed {
                    Some(why) => Err(ServeError::Abuse(why)),
                    None => Ok(()),
                };
            }
        }
    }
}

/// What a stream task needs from its connection.
struct StreamCtx {
    info: Arc<ConnInfo>,
    open: Arc<OpenStreams>,
    options: ServerOptions,
    stats: Arc<Http2Stats>,
}

async fn serve_stream<S>(
    req: Request<h2::RecvStream>,
    mut respond: SendResponse<Bytes>,
    mut service: S,
    ctx: StreamCtx,
) where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = Infallible>,
    S::Future: Send + 'static,
{
    let response = match prepare(req, &ctx) {
        Ok(req) => proxy_core::service::call(&mut service, req).await,
        Err(rejection) => *rejection,
    };
    let (mut parts, body) = response.into_parts();
    multiplexed::strip_connection_headers(&mut parts.headers);
    parts.version = Version::HTTP_2;
    let end = body.is_end_stream();
    let head = Response::from_parts(parts, ());
    match respond.send_response(head, end) {
        Err(e) => {
            tracing::debug!(conn = ctx.info.id, error = %e, "HTTP/2 response head not sent");
        }
        Ok(mut tx) if !end => match pump(body, &mut tx, ctx.options.send_stall_timeout).await {
            Ok(()) => {}
            Err(PumpError::Stalled(after)) => {
                ctx.stats.stalled_streams.fetch_add(1, Ordering::Relaxed);
                tracing::info!(conn = ctx.info.id, peer = %ctx.info.peer, ?after, "HTTP/2 stream reset: client window stayed shut");
            }
            Err(e) => {
                tracing::debug!(conn = ctx.info.id, error = %e, "HTTP/2 response body not finished");
            }
        },
        Ok(_) => {}
    }
    ctx.open.closed();
}

/// Validates a request and converts it for the core; answers malformed ones here.
fn prepare(
    req: Request<h2::RecvStream>,
    ctx: &StreamCtx,
) -> Result<Request<ProxyBody>, Box<Response<ProxyBody>>> {
    let (mut parts, recv) = req.into_parts();
    if let Err(rejected) = multiplexed::screen(&parts, ctx.options.max_headers) {
        tracing::info!(
            conn = ctx.info.id,
            peer = %ctx.info.peer,
            method = %parts.method,
            uri = %parts.uri,
            reason = %rejected.error,
            status = rejected.response.status().as_u16(),
            "malformed HTTP/2 request rejected"
        );
        return Err(Box::new(rejected.response));
    }
    multiplexed::join_cookies(&mut parts.headers);
    let length = multiplexed::content_length(&parts.headers);
    let body = if recv.is_end_stream() {
        body::empty()
    } else {
        body::boxed(RecvBody::new(recv, length))
    };
    parts.extensions.insert(ctx.info.clone());
    Ok(Request::from_parts(parts, body))
}

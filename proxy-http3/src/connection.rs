//! One HTTP/3 connection: the h3 accept loop, GOAWAY on drain and idle, and one task per
//! request stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use h3::server::RequestResolver;
use http::{Method, Request, Response, Version};
use proxy_core::body::ProxyBody;
use proxy_core::multiplexed::{self, OpenStreams, sleep_until};
use proxy_core::{ConnInfo, EarlyData};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use crate::body::{SendError, request_body, send_body};
use crate::endpoint::{Http3Stats, code};
use crate::options::ServerOptions;

/// Where the TLS handshake stood when the connection was handed over.
pub(crate) enum Handshake {
    /// Complete: every request is 1-RTT.
    Done,
    /// Early data accepted; requests are early until `accepted` resolves, and the
    /// connection is closed if that has not happened by `deadline`.
    Completing {
        accepted: quinn::ZeroRttAccepted,
        deadline: Instant,
    },
}

type H3Conn = h3::server::Connection<h3_quinn::Connection, Bytes>;

/// Serves one established QUIC connection until it closes, or until `drain` is cancelled
/// and its streams have finished (GOAWAY first, so the client opens no new ones).
pub(crate) async fn serve_connection<S>(
    conn: quinn::Connection,
    handshake: Handshake,
    info: ConnInfo,
    service: S,
    options: ServerOptions,
    stats: Arc<Http3Stats>,
    drain: CancellationToken,
) where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let info = Arc::new(info);
    let mut builder = h3::server::builder();
    builder
        .max_field_section_size(options.max_field_section_size)
        .send_grease(true);
    let built = builder.build::<_, Bytes>(h3_quinn::Connection::new(conn.clone()));
    let mut h3: H3Conn = match tokio::time::timeout(options.handshake_timeout, built).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(conn = info.id, peer = %info.peer, error = %e, "HTTP/3 connection setup failed");
            return;
        }
        Err(_) => {
            tracing::debug!(conn = info.id, peer = %info.peer, "HTTP/3 connection setup timed out");
            return;
        }
    };
    // `true` once the handshake is complete, so later requests are not early data.
    let confirmed = Arc::new(AtomicBool::new(matches!(handshake, Handshake::Done)));
    let (mut accepted, confirm_deadline) = match handshake {
        Handshake::Done => (None, None),
        Handshake::Completing { accepted, deadline } => (Some(accepted), Some(deadline)),
    };
    let open = Arc::new(OpenStreams::default());
    let mut draining: Option<Instant> = None;
    loop {
        let idle_deadline = open.idle_since().map(|t| t + options.idle_timeout);
        let close_deadline = match (draining, open.idle_since()) {
            (Some(t), Some(idle)) => Some(t.max(idle) + options.close_timeout),
            _ => None,
        };
        tokio::select! {
            next = h3.accept() => match next {
                Ok(Some(resolver)) => {
                    open.opened();
                    let ctx = StreamCtx {
                        info: info.clone(),
                        open: open.clone(),
                        options,
                        stats: stats.clone(),
                        confirmed: confirmed.clone(),
                    };
                    tokio::spawn(serve_stream(resolver, service.clone(), ctx));
                }
                Ok(None) => {
                    tracing::debug!(conn = info.id, "HTTP/3 connection closed after client GOAWAY");
                    break;
                }
                Err(e) => {
                    // A client's close, an idle timeout and a protocol error all surface
                    // here; none is this server's failure, so debug level.
                    tracing::debug!(conn = info.id, peer = %info.peer, error = %e, clean = e.is_h3_no_error(), "HTTP/3 connection ended");
                    break;
                }
            },
            // Resolves when the handshake completes; its value means nothing on a server.
            _ = async {
                match accepted.as_mut() {
                    Some(a) => a.await,
                    None => std::future::pending().await,
                }
            }, if accepted.is_some() => {
                accepted = None;
                confirmed.store(true, Ordering::Release);
            }
            () = sleep_until(confirm_deadline), if accepted.is_some() => {
                tracing::debug!(conn = info.id, peer = %info.peer, "handshake after early data never completed; closing");
                break;
            }
            () = drain.cancelled(), if draining.is_none() => {
                goaway(&mut h3, &info).await;
                draining = Some(Instant::now());
            }
            () = sleep_until(idle_deadline), if idle_deadline.is_some() && draining.is_none() => {
                tracing::debug!(conn = info.id, "HTTP/3 connection idle; GOAWAY");
                goaway(&mut h3, &info).await;
                draining = Some(Instant::now());
            }
            () = open.changed() => {}
            () = sleep_until(close_deadline), if close_deadline.is_some() => {
                tracing::debug!(conn = info.id, streams = open.count(), "HTTP/3 close deadline reached");
                break;
            }
        }
    }
    // Dropping the h3 connection closes it with H3_NO_ERROR; streams still running see it.
    drop(h3);
    conn.close(code(h3::error::Code::H3_NO_ERROR), b"");
}

/// Sends GOAWAY so the client opens no new request streams; those already accepted finish.
async fn goaway(h3: &mut H3Conn, info: &ConnInfo) {
    let sent = tokio::time::timeout(std::time::Duration::from_secs(1), h3.shutdown(0)).await;
    if !matches!(sent, Ok(Ok(()))) {
        tracing::debug!(conn = info.id, "HTTP/3 GOAWAY not sent");
    }
}

/// What a stream task needs from its connection.
struct StreamCtx {
    info: Arc<ConnInfo>,
    open: Arc<OpenStreams>,
    options: ServerOptions,
    stats: Arc<Http3Stats>,
    confirmed: Arc<AtomicBool>,
}

impl Drop for StreamCtx {
    fn drop(&mut self) {
        self.open.closed();
    }
}

async fn serve_stream<S>(
    resolver: RequestResolver<h3_quinn::Connection, Bytes>,
    mut service: S,
    ctx: StreamCtx,
) where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = Infallible>,
    S::Future: Send + 'static,
{
    let resolved =
        tokio::time::timeout(ctx.options.header_read_timeout, resolver.resolve_request()).await;
    let (req, stream) = match resolved {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            // h3 has answered what it could (431 for an oversized section) or reset the
            // stream with H3_MESSAGE_ERROR / H3_REQUEST_INCOMPLETE.
            tracing::info!(conn = ctx.info.id, peer = %ctx.info.peer, error = %e, "HTTP/3 request rejected");
            return;
        }
        Err(_) => {
            tracing::info!(conn = ctx.info.id, peer = %ctx.info.peer, "HTTP/3 request headers timed out");
            return;
        }
    };
    // Early data is judged when the headers arrive: still early if the handshake has not
    // been confirmed by then (a request racing the confirmation counts as early, the safe
    // side: the client retries a 425).
    let early = !ctx.confirmed.load(Ordering::Acquire);
    let (mut tx, rx) = stream.split();
    let response = match prepare(req, rx, &ctx, early).await {
        Ok(req) => proxy_core::service::call(&mut service, req).await,
        Err(rejection) => *rejection,
    };
    let (mut parts, body) = response.into_parts();
    multiplexed::strip_connection_headers(&mut parts.headers);
    parts.version = Version::HTTP_3;
    if let Err(e) = tx.send_response(Response::from_parts(parts, ())).await {
        tracing::debug!(conn = ctx.info.id, error = %e, "HTTP/3 response head not sent");
        return;
    }
    match send_body(body, &mut tx, ctx.options.send_stall_timeout).await {
        Ok(()) => {}
        Err(SendError::Stalled(after)) => {
            ctx.stats.stalled_streams.fetch_add(1, Ordering::Relaxed);
            tracing::info!(conn = ctx.info.id, peer = %ctx.info.peer, ?after, "HTTP/3 stream reset: client flow control stayed shut");
        }
        Err(e) => {
            tracing::debug!(conn = ctx.info.id, error = %e, "HTTP/3 response body not finished");
        }
    }
}

/// Validates a request and converts it for the core; answers malformed ones here.
async fn prepare(
    req: Request<()>,
    mut rx: crate::body::RecvHalf,
    ctx: &StreamCtx,
    early: bool,
) -> Result<Request<ProxyBody>, Box<Response<ProxyBody>>> {
    let (mut parts, ()) = req.into_parts();
    parts.version = Version::HTTP_3;
    if let Err(rejected) = multiplexed::screen(&parts, ctx.options.max_headers) {
        // Answered without being read: tell the client to stop sending with H3_NO_ERROR
        // (RFC 9114 section 4.1) rather than the bare code 0 of a dropped QUIC stream.
        // Nothing has been read yet, so no read is in flight on `rx`.
        rx.stop_sending(h3::error::Code::H3_NO_ERROR);
        tracing::info!(
            conn = ctx.info.id,
            peer = %ctx.info.peer,
            method = %parts.method,
            uri = %parts.uri,
            reason = %rejected.error,
            status = rejected.response.status().as_u16(),
            "malformed HTTP/3 request rejected"
        );
        return Err(Box::new(rejected.response));
    }
    multiplexed::join_cookies(&mut parts.headers);
    let length = multiplexed::content_length(&parts.headers);
    let bodiless = matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE | Method::TRACE
    );
    let body = request_body(rx, length, bodiless, ctx.options.header_read_timeout).await;
    if early {
        ctx.stats
            .early_data_requests
            .fetch_add(1, Ordering::Relaxed);
        parts.extensions.insert(EarlyData);
    }
    parts.extensions.insert(ctx.info.clone());
    Ok(Request::from_parts(parts, body))
}

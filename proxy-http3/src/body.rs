//! Bodies across the h3 boundary: a request stream's receive half as an `http_body::Body`,
//! and a response body sent on the stream's send half.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf as _, Bytes};
use h3::error::{Code, StreamError};
use h3::server::RequestStream;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use proxy_core::body::ProxyBody;

/// Receive half of a request stream on the server.
pub(crate) type RecvHalf = RequestStream<h3_quinn::RecvStream, Bytes>;
/// Send half of a request stream on the server.
pub(crate) type SendHalf = RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;
/// Receive half of a request stream on the client (the response side).
pub(crate) type ClientRecvHalf = h3::client::RequestStream<h3_quinn::RecvStream, Bytes>;
/// Send half of a request stream on the client (the request side).
pub(crate) type ClientSendHalf = h3::client::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;

/// The receive half of a request stream, server or client side: DATA, then trailers.
pub(crate) trait RecvHalfOps: Send + 'static {
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, StreamError>>;
    fn poll_trailers(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<http::HeaderMap>, StreamError>>;
}

impl RecvHalfOps for RecvHalf {
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, StreamError>> {
        self.poll_recv_data(cx)
            .map(|r| r.map(|b| b.map(|mut b| b.copy_to_bytes(b.remaining()))))
    }

    fn poll_trailers(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<http::HeaderMap>, StreamError>> {
        self.poll_recv_trailers(cx)
    }
}

impl RecvHalfOps for ClientRecvHalf {
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, StreamError>> {
        self.poll_recv_data(cx)
            .map(|r| r.map(|b| b.map(|mut b| b.copy_to_bytes(b.remaining()))))
    }

    fn poll_trailers(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<http::HeaderMap>, StreamError>> {
        self.poll_recv_trailers(cx)
    }
}

/// The send half of a request stream, server or client side.
pub(crate) trait SendHalfOps: Send {
    async fn data(&mut self, data: Bytes) -> Result<(), StreamError>;
    async fn trailers(&mut self, trailers: http::HeaderMap) -> Result<(), StreamError>;
    async fn end(&mut self) -> Result<(), StreamError>;
    fn reset(&mut self, code: Code);
}

impl SendHalfOps for SendHalf {
    async fn data(&mut self, data: Bytes) -> Result<(), StreamError> {
        self.send_data(data).await
    }
    async fn trailers(&mut self, trailers: http::HeaderMap) -> Result<(), StreamError> {
        self.send_trailers(trailers).await
    }
    async fn end(&mut self) -> Result<(), StreamError> {
        self.finish().await
    }
    fn reset(&mut self, code: Code) {
        self.stop_stream(code);
    }
}

impl SendHalfOps for ClientSendHalf {
    async fn data(&mut self, data: Bytes) -> Result<(), StreamError> {
        self.send_data(data).await
    }
    async fn trailers(&mut self, trailers: http::HeaderMap) -> Result<(), StreamError> {
        self.send_trailers(trailers).await
    }
    async fn end(&mut self) -> Result<(), StreamError> {
        self.finish().await
    }
    fn reset(&mut self, code: Code) {
        self.stop_stream(code);
    }
}

/// Why a request body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    /// The client reset the stream, or the connection failed.
    #[error("HTTP/3 request stream failed")]
    Stream(#[source] StreamError),
    /// The DATA frames did not add up to the declared Content-Length (RFC 9114 section
    /// 4.1.2: the request is malformed).
    #[error("request body length differs from Content-Length")]
    LengthMismatch,
    /// A trailer value with surrounding whitespace (RFC 9114 section 4.2).
    #[error("malformed request trailers")]
    MalformedTrailers,
}

/// A stream's receive half as a body. QUIC flow control releases credit as data is read, so
/// the peer can send at most one stream window ahead of whoever reads this body.
///
/// Dropped unread, the stream is stopped by quinn (code 0), never with `stop_sending`: h3
/// may leave a read in flight even after returning data, and h3-quinn 0.0.10 panics when a
/// stream is stopped during a read.
pub(crate) struct RecvBody<R: RecvHalfOps> {
    stream: R,
    /// A chunk (or failure) read while finding out whether there is a body at all.
    first: Option<Result<Bytes, StreamError>>,
    data_done: bool,
    length: Option<u64>,
    received: u64,
}

impl<R: RecvHalfOps> std::fmt::Debug for RecvBody<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBody")
            .field("data_done", &self.data_done)
            .field("length", &self.length)
            .field("received", &self.received)
            .finish()
    }
}

impl<R: RecvHalfOps> RecvBody<R> {
    /// Wraps `stream`; `length` is the declared Content-Length, if any, which is enforced.
    pub(crate) fn new(stream: R, length: Option<u64>) -> Self {
        RecvBody {
            stream,
            first: None,
            data_done: false,
            length,
            received: 0,
        }
    }
}

/// The request body of a stream whose headers have been read. HTTP/3 does not say in the
/// headers whether a body follows, and an upstream must not be sent a chunked body for a
/// plain GET, so without a Content-Length the stream is looked at first: its end already
/// received means no body. For methods that normally carry none (`wait_for_end`), the end
/// or the first data is awaited for up to `wait`.
pub(crate) async fn request_body(
    mut stream: RecvHalf,
    length: Option<u64>,
    wait_for_end: bool,
    wait: Duration,
) -> ProxyBody {
    if length.is_some() {
        return proxy_core::body::boxed(RecvBody::new(stream, length));
    }
    // Usually the end arrived with the headers: look without a timer first.
    let mut first = stream.poll_data(&mut Context::from_waker(std::task::Waker::noop()));
    if first.is_pending() && wait_for_end {
        let waited = std::future::poll_fn(|cx| stream.poll_data(cx));
        if let Ok(r) = tokio::time::timeout(wait, waited).await {
            first = Poll::Ready(r);
        }
    }
    let mut body = RecvBody::new(stream, None);
    match first {
        Poll::Ready(Ok(None)) => {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            if let Poll::Ready(Ok(None)) = body.stream.poll_trailers(&mut cx) {
                return proxy_core::body::empty();
            }
            body.data_done = true;
        }
        Poll::Ready(Ok(Some(data))) => body.first = Some(Ok(data)),
        Poll::Ready(Err(e)) => body.first = Some(Err(e)),
        Poll::Pending => {}
    }
    proxy_core::body::boxed(body)
}

impl<R: RecvHalfOps + Unpin> Body for RecvBody<R> {
    type Data = Bytes;
    type Error = RecvError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RecvError>>> {
        let this = &mut *self;
        if let Some(first) = this.first.take() {
            return match first {
                Ok(data) => {
                    this.received += data.len() as u64;
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(e) => Poll::Ready(Some(Err(RecvError::Stream(e)))),
            };
        }
        if !this.data_done {
            match this.stream.poll_data(cx) {
                Poll::Ready(Ok(Some(data))) => {
                    this.received += data.len() as u64;
                    if this.length.is_some_and(|n| this.received > n) {
                        return Poll::Ready(Some(Err(RecvError::LengthMismatch)));
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Ok(None)) => {
                    this.data_done = true;
                    if this.length.is_some_and(|n| this.received != n) {
                        return Poll::Ready(Some(Err(RecvError::LengthMismatch)));
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(RecvError::Stream(e)))),
                Poll::Pending => return Poll::Pending,
            }
        }
        match this.stream.poll_trailers(cx) {
            Poll::Ready(Ok(Some(trailers))) => {
                if trailers.values().all(proxy_core::multiplexed::trimmed) {
                    Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                } else {
                    Poll::Ready(Some(Err(RecvError::MalformedTrailers)))
                }
            }
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(RecvError::Stream(e)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) if !self.data_done => SizeHint::with_exact(n.saturating_sub(self.received)),
            _ => SizeHint::default(),
        }
    }
}

/// Why a response body stopped before its end was sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The client stopped the stream or the connection went away.
    #[error("stream closed by peer")]
    Closed(#[source] StreamError),
    /// The client kept flow control shut longer than the stall timeout.
    #[error("client did not extend flow control within {0:?}")]
    Stalled(Duration),
    /// The body being sent failed (e.g. the upstream broke off).
    #[error("body source failed")]
    Source(#[source] proxy_core::body::BodyError),
}

/// Sends `body` on `tx` frame by frame, as QUIC flow control allows, then trailers if any,
/// then the end of the stream. Resets the stream when the body fails or the client's credit
/// stays shut for `stall`; stops pulling from `body` as soon as the client goes away.
pub(crate) async fn send_body<T: SendHalfOps>(
    mut body: ProxyBody,
    tx: &mut T,
    stall: Duration,
) -> Result<(), SendError> {
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                tx.reset(Code::H3_INTERNAL_ERROR);
                return Err(SendError::Source(e));
            }
        };
        match frame.into_data() {
            Ok(data) => {
                if data.is_empty() {
                    continue;
                }
                match tokio::time::timeout(stall, tx.data(data)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(SendError::Closed(e)),
                    Err(_) => {
                        tx.reset(Code::H3_REQUEST_CANCELLED);
                        return Err(SendError::Stalled(stall));
                    }
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let mut trailers = trailers;
                    proxy_core::multiplexed::strip_connection_headers(&mut trailers);
                    tx.trailers(trailers).await.map_err(SendError::Closed)?;
                }
                break;
            }
        }
    }
    tx.end().await.map_err(SendError::Closed)
}

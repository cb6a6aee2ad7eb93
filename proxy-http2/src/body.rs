//! Bodies across the h2 boundary: an h2 receive stream as an `http_body::Body`, and a body
//! pumped into an h2 send stream under flow control.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use proxy_core::body::ProxyBody;
use std::future::poll_fn;

/// An h2 receive stream as a body. Flow-control capacity is released as data is consumed, so
/// the peer can send at most one window ahead of whoever reads this body: that is the
/// back-pressure from the far side of the proxy.
#[derive(Debug)]
pub struct RecvBody {
    stream: RecvStream,
    data_done: bool,
    length: Option<u64>,
}

impl RecvBody {
    /// Wraps `stream`; `length` is the declared Content-Length, if any (h2 enforces it).
    pub fn new(stream: RecvStream, length: Option<u64>) -> Self {
        RecvBody {
            stream,
            data_done: false,
            length,
        }
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match self.stream.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let _ = self.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => self.data_done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        match self.stream.poll_trailers(cx) {
            Poll::Ready(Ok(Some(trailers))) => {
                if trailers.values().all(proxy_core::multiplexed::trimmed) {
                    Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                } else {
                    // Malformed (RFC 9113 section 8.2.1): the message is not forwarded whole.
                    Poll::Ready(Some(Err(h2::Error::from(Reason::PROTOCOL_ERROR))))
                }
            }
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) if !self.data_done => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

/// Why a body stopped before its end was sent.
#[derive(Debug, thiserror::Error)]
pub enum PumpError {
    /// The peer reset the stream or the connection went away.
    #[error("stream closed by peer")]
    Closed(#[source] Option<h2::Error>),
    /// The peer kept its window shut longer than the stall timeout.
    #[error("peer did not open its flow-control window within {0:?}")]
    Stalled(Duration),
    /// The body being sent failed (e.g. the far side broke off).
    #[error("body source failed")]
    Source(#[source] proxy_core::body::BodyError),
}

/// Sends `body` on `tx`, frame by frame as flow control allows, ending the stream with the
/// last data frame or with trailers. Stops pulling from `body` as soon as the peer resets the
/// stream, and resets the stream itself when the body fails or the peer's window stays shut
/// for `stall`.
pub(crate) async fn pump(
    mut body: ProxyBody,
    tx: &mut SendStream<Bytes>,
    stall: Duration,
) -> Result<(), PumpError> {
    loop {
        let next = tokio::select! {
            biased;
            reset = poll_fn(|cx| tx.poll_reset(cx)) => {
                return Err(PumpError::Closed(reset.err()));
            }
            f = body.frame() => f,
        };
        let frame = match next {
            None => {
                return tx
                    .send_data(Bytes::new(), true)
                    .map_err(|e| PumpError::Closed(Some(e)));
            }
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                tx.send_reset(Reason::INTERNAL_ERROR);
                return Err(PumpError::Source(e));
            }
        };
        match frame.into_data() {
            Ok(data) => {
                let last = body.is_end_stream();
                send_data(tx, data, last, stall).await?;
                if last {
                    return Ok(());
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    return send_trailers(tx, trailers);
                }
            }
        }
    }
}

fn send_trailers(tx: &mut SendStream<Bytes>, trailers: HeaderMap) -> Result<(), PumpError> {
    tx.send_trailers(trailers)
        .map_err(|e| PumpError::Closed(Some(e)))
}

/// Sends one chunk, splitting it as the peer's window opens.
async fn send_data(
    tx: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
    stall: Duration,
) -> Result<(), PumpError> {
    if data.is_empty() {
        if end {
            tx.send_data(data, true)
                .map_err(|e| PumpError::Closed(Some(e)))?;
        }
        return Ok(());
    }
    while !data.is_empty() {
        tx.reserve_capacity(data.len());
        let capacity = match tokio::time::timeout(stall, poll_fn(|cx| tx.poll_capacity(cx))).await {
            Err(_) => {
                tx.send_reset(Reason::CANCEL);
                return Err(PumpError::Stalled(stall));
            }
            Ok(None) => return Err(PumpError::Closed(None)),
            Ok(Some(Err(e))) => return Err(PumpError::Closed(Some(e))),
            Ok(Some(Ok(n))) => n,
        };
        if capacity == 0 {
            continue;
        }
        let chunk = data.split_to(capacity.min(data.len()));
        let last = end && data.is_empty();
        tx.send_data(chunk, last)
            .map_err(|e| PumpError::Closed(Some(e)))?;
    }
    Ok(())
}

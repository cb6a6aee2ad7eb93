//! Small body adapters used at the hyper boundary.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// A body whose first frame was already read (to validate chunked framing before forwarding).
pub(crate) struct Prepend<B> {
    pub(crate) first: Option<Frame<Bytes>>,
    pub(crate) rest: B,
}

impl<B> Body for Prepend<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if let Some(frame) = self.first.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.rest.size_hint();
        if let Some(len) = self
            .first
            .as_ref()
            .and_then(|f| f.data_ref())
            .map(|d| d.len() as u64)
        {
            hint.set_lower(hint.lower() + len);
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper + len);
            }
        }
        hint
    }
}

/// A response body that marks its request finished when it is done or dropped, so the
/// connection's head-read timer knows when the next request head is awaited.
pub(crate) struct Tracked<B> {
    pub(crate) inner: B,
    pub(crate) in_flight: Option<Arc<AtomicUsize>>,
}

impl<B> Tracked<B> {
    fn finish(&mut self) {
        if let Some(counter) = self.in_flight.take() {
            counter.fetch_sub(1, Ordering::Release);
        }
    }
}

impl<B> Body for Tracked<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        self.finish();
    }
}

//! Upload progress, so that timeouts measure the right thing while a request body streams.
//!
//! The connector's future resolves when the response head arrives, which for most origins is
//! after the whole request body was read. A single response-header deadline from the start
//! would fail every upload slower than it. Instead, like nginx's `client_body_timeout` and
//! `proxy_read_timeout`: while the body is still being sent, the limit is the idle time
//! between body chunks; once it has been sent, the response-header timeout starts.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::body::{BodyError, ProxyBody};
use crate::connector::SendFuture;
use crate::error::{SendError, UpstreamError};

/// Shared between the request body on its way upstream and the code awaiting the response.
#[derive(Debug)]
pub(crate) struct UploadProgress {
    start: Instant,
    ended: AtomicBool,
    /// Nanoseconds after `start` of the last body activity (or the end of the body).
    last: AtomicU64,
    /// The body was asked for data and the client had none yet.
    waiting_on_client: AtomicBool,
    /// Fired once when the body ends: the deadline then changes from the body-idle limit to
    /// the response-header limit, which may be sooner.
    body_ended: Notify,
}

impl UploadProgress {
    pub(crate) fn new(ended: bool) -> Arc<Self> {
        Arc::new(UploadProgress {
            start: Instant::now(),
            ended: AtomicBool::new(ended),
            last: AtomicU64::new(0),
            waiting_on_client: AtomicBool::new(false),
            body_ended: Notify::new(),
        })
    }

    fn touch(&self) {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(nanos, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }

    /// When the exchange times out if nothing changes.
    fn deadline(&self, response_header: Duration, body_idle: Duration) -> Instant {
        if self.ended.load(Ordering::Relaxed) {
            self.last() + response_header
        } else {
            self.last() + body_idle
        }
    }
}

/// A request body that reports its progress.
pub(crate) struct TrackedUpload {
    inner: ProxyBody,
    progress: Arc<UploadProgress>,
}

impl TrackedUpload {
    pub(crate) fn new(inner: ProxyBody, progress: Arc<UploadProgress>) -> Self {
        TrackedUpload { inner, progress }
    }
}

impl Body for TrackedUpload {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let p = &self.progress;
        match &polled {
            Poll::Pending => p.waiting_on_client.store(true, Ordering::Relaxed),
            Poll::Ready(frame) => {
                p.waiting_on_client.store(false, Ordering::Relaxed);
                p.touch();
                if (frame.is_none() || self.inner.is_end_stream())
                    && !p.ended.swap(true, Ordering::Relaxed)
                {
                    p.body_ended.notify_one();
                }
            }
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

/// Why an exchange ran out of time.
pub(crate) enum Expired {
    /// The upstream did not answer, or stopped taking the body.
    Upstream(SendError),
    /// The client stopped sending its body.
    Client,
}

/// Awaits the response, re-arming the deadline as the upload progresses. While the body
/// streams, the timer is reset only when it fires (progress only pushes the deadline later),
/// so a streaming body costs no timer operation per chunk; the end of the body wakes the
/// wait once, because the response-header deadline may come sooner.
pub(crate) async fn await_response(
    mut send: SendFuture,
    progress: &UploadProgress,
    response_header: Duration,
    body_idle: Duration,
) -> Result<Result<Response<ProxyBody>, SendError>, Expired> {
    progress.touch();
    let mut ended = progress.ended.load(Ordering::Relaxed);
    loop {
        let deadline = progress.deadline(response_header, body_idle);
        tokio::select! {
            biased;
            result = &mut send => return Ok(result),
            () = progress.body_ended.notified(), if !ended => {
                ended = true;
                continue;
            }
            () = tokio::time::sleep_until(deadline) => {}
        }
        if progress.deadline(response_header, body_idle) > Instant::now() {
            continue;
        }
        let client_stalled = !progress.ended.load(Ordering::Relaxed)
            && progress.waiting_on_client.load(Ordering::Relaxed);
        return Err(if client_stalled {
            Expired::Client
        } else {
            Expired::Upstream(SendError::lost(UpstreamError::ResponseTimeout))
        });
    }
}

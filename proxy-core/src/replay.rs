//! A request body that can be sent again: what passes through is kept (up to a bound) so
//! that a retry replays it, then continues with whatever the client has not sent yet.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::body::{BodyError, ProxyBody};

/// The client's body and what has been read of it, shared by every attempt.
pub(crate) struct Replay {
    shared: Arc<Mutex<Shared>>,
    hint: SizeHint,
}

struct Shared {
    inner: ProxyBody,
    chunks: Vec<Bytes>,
    stored: usize,
    cap: usize,
    /// More was read than `cap`: the stored chunks are no longer the whole body.
    overflowed: bool,
    /// Reading the client's body failed.
    failed: bool,
    ended: bool,
    trailers: Option<HeaderMap>,
    /// Only the newest attempt may read on from the client.
    newest: u64,
}

/// Replays only ever hand out the latest attempt's body as readable past the buffer.
#[derive(Debug, thiserror::Error)]
#[error("request body superseded by a retry")]
struct Superseded;

impl Replay {
    /// Wraps `inner`, keeping up to `cap` bytes.
    pub(crate) fn new(inner: ProxyBody, cap: usize) -> Self {
        let hint = inner.size_hint();
        Replay {
            shared: Arc::new(Mutex::new(Shared {
                inner,
                chunks: Vec::new(),
                stored: 0,
                cap,
                overflowed: false,
                failed: false,
                ended: false,
                trailers: None,
                newest: 0,
            })),
            hint,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True while everything read so far is kept, so another attempt can start over.
    pub(crate) fn can_replay(&self) -> bool {
        let s = self.lock();
        !s.overflowed && !s.failed
    }

    /// The body for the first attempt.
    pub(crate) fn attempt(&self) -> ReplayBody {
        let mut s = self.lock();
        self.next_attempt(&mut s)
    }

    /// The body for another attempt, when everything read so far is still kept (checked
    /// under the same lock, so a concurrent read cannot overflow in between). Earlier
    /// attempts' bodies stop at what is buffered.
    pub(crate) fn try_attempt(&self) -> Option<ReplayBody> {
        let mut s = self.lock();
        (!s.overflowed && !s.failed).then(|| self.next_attempt(&mut s))
    }

    fn next_attempt(&self, s: &mut Shared) -> ReplayBody {
        s.newest += 1;
        ReplayBody {
            shared: self.shared.clone(),
            id: s.newest,
            pos: 0,
            trailers_sent: false,
            done: false,
            hint: self.hint,
        }
    }
}

/// One attempt's view of the request body.
pub(crate) struct ReplayBody {
    shared: Arc<Mutex<Shared>>,
    id: u64,
    pos: usize,
    trailers_sent: bool,
    done: bool,
    hint: SizeHint,
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let mut s = this.shared.lock().unwrap_or_else(|e| e.into_inner());
        if this.pos < s.chunks.len() {
            if s.overflowed {
                // What this attempt still needs is no longer all kept: fail it rather than
                // end a truncated body as if it were complete.
                this.done = true;
                return Poll::Ready(Some(Err(Box::new(Superseded))));
            }
            let chunk = s.chunks[this.pos].clone();
            this.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if s.ended {
            if !this.trailers_sent
                && let Some(t) = s.trailers.clone()
            {
                this.trailers_sent = true;
                this.done = true;
                return Poll::Ready(Some(Ok(Frame::trailers(t))));
            }
            this.done = true;
            return Poll::Ready(None);
        }
        if this.id != s.newest {
            this.done = true;
            return Poll::Ready(Some(Err(Box::new(Superseded))));
        }
        match Pin::new(&mut s.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                s.ended = true;
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                s.failed = true;
                this.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_data() {
                    Ok(data) => {
                        if !s.overflowed && s.stored + data.len() <= s.cap {
                            s.stored += data.len();
                            s.chunks.push(data.clone());
                            this.pos = s.chunks.len();
                        } else if !s.overflowed {
                            // No replay is possible any more: let the kept chunks go.
                            s.overflowed = true;
                            s.chunks = Vec::new();
                            this.pos = 0;
                        }
                        Frame::data(data)
                    }
                    Err(frame) => {
                        if let Some(t) = frame.trailers_ref() {
                            s.trailers = Some(t.clone());
                            s.ended = true;
                            this.trailers_sent = true;
                            this.done = true;
                        }
                        frame
                    }
                };
                if s.inner.is_end_stream() {
                    s.ended = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.done {
            return true;
        }
        let s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        s.ended && self.pos >= s.chunks.len() && (self.trailers_sent || s.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body;
    use http_body_util::BodyExt;

    fn streaming(chunks: &[&'static str]) -> ProxyBody {
        let frames: Vec<Result<Frame<Bytes>, BodyError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        body::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )))
    }

    async fn text(b: ReplayBody) -> Result<String, BodyError> {
        let bytes = b.collect().await?.to_bytes();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn a_retry_replays_what_was_read_then_reads_on() {
        let r = Replay::new(streaming(&["ab", "cd", "ef"]), 1024);
        let mut first = r.attempt();
        // The first attempt reads one chunk, then fails.
        let f = first.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), "ab");
        assert!(r.can_replay());
        let second = r.try_attempt().unwrap();
        // The superseded attempt cannot read past what is kept.
        assert!(first.frame().await.unwrap().is_err());
        assert_eq!(text(second).await.unwrap(), "abcdef");
        assert_eq!(text(r.try_attempt().unwrap()).await.unwrap(), "abcdef");
    }

    #[tokio::test]
    async fn bodies_over_the_cap_are_not_replayable() {
        let r = Replay::new(streaming(&["abcd", "efgh"]), 6);
        assert_eq!(text(r.attempt()).await.unwrap(), "abcdefgh");
        assert!(!r.can_replay());
        assert!(r.try_attempt().is_none());
    }

    #[tokio::test]
    async fn full_bodies_keep_their_length() {
        let r = Replay::new(body::full("hello"), 64);
        let a = r.attempt();
        assert_eq!(a.size_hint().exact(), Some(5));
        assert_eq!(text(a).await.unwrap(), "hello");
        let b = r.try_attempt().unwrap();
        assert_eq!(b.size_hint().exact(), Some(5));
        assert_eq!(text(b).await.unwrap(), "hello");
    }
}

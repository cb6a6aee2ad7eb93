//! A cache fill: one upstream response body, read once by a spawned task and shared with every
//! client that reads it, so a miss streams to its client while it is being stored and coalesced
//! requests read the same bytes.
//!
//! While the body is still a candidate for storage every chunk is kept (the store needs them
//! all, and late joiners start at the beginning). Once it grows past the object size limit it
//! is abandoned for storage: chunks every reader has passed are dropped, no new reader may join,
//! and the task reads ahead of the slowest reader by at most [`READ_AHEAD`] bytes.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use proxy_core::ProxyBody;
use proxy_core::body::BodyError;
use tokio::sync::Notify;

/// How far the fill reads ahead of its slowest reader once it no longer stores.
pub const READ_AHEAD: u64 = 1 << 20;

/// The upstream body failed or was abandoned before its end.
#[derive(Debug, thiserror::Error)]
#[error("upstream response body failed: {0}")]
pub struct FillError(String);

#[derive(Default)]
struct Reader {
    /// Index of the next chunk this reader gets; `None` once the reader is gone.
    cursor: Option<usize>,
    waker: Option<Waker>,
    trailers_sent: bool,
}

#[derive(Default)]
struct State {
    /// Retained chunks; `chunks[0]` has index `base`.
    chunks: VecDeque<Bytes>,
    base: usize,
    bytes: u64,
    /// True while the body may still be stored: every chunk is retained.
    storing: bool,
    trailers: Option<HeaderMap>,
    /// `Some(Ok)` at the end of the body; `Some(Err)` when it failed.
    end: Option<Result<(), String>>,
    readers: Vec<Reader>,
}

impl State {
    fn pushed(&self) -> usize {
        self.base + self.chunks.len()
    }

    fn live_readers(&self) -> impl Iterator<Item = usize> + '_ {
        self.readers.iter().filter_map(|r| r.cursor)
    }

    /// Bytes pushed that the slowest reader has not read yet.
    fn unread(&self) -> u64 {
        let Some(min) = self.live_readers().min() else {
            return 0;
        };
        self.chunks
            .iter()
            .skip(min.saturating_sub(self.base))
            .map(|c| c.len() as u64)
            .sum()
    }

    fn wake_readers(&mut self) {
        for r in &mut self.readers {
            if let Some(w) = r.waker.take() {
                w.wake();
            }
        }
    }

    /// Drops chunks every reader has read, once the body is no longer stored.
    fn trim(&mut self) {
        if self.storing {
            return;
        }
        let min = self.live_readers().min().unwrap_or(self.pushed());
        while self.base < min && self.chunks.pop_front().is_some() {
            self.base += 1;
        }
    }
}

/// The shared state of one fill.
pub struct Fill {
    state: Mutex<State>,
    progress: Notify,
    max_bytes: u64,
}

impl std::fmt::Debug for Fill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fill").finish_non_exhaustive()
    }
}

/// What the fill task leaves for the store: the whole body and trailers, when it is complete
/// and small enough.
#[derive(Debug)]
pub struct Filled {
    /// The body in one piece.
    pub body: Bytes,
    /// Trailers, if any.
    pub trailers: Option<HeaderMap>,
}

impl Fill {
    /// A fill that stores bodies of at most `max_bytes` (`storing` false: stream only).
    pub fn new(max_bytes: u64, storing: bool) -> Arc<Self> {
        Arc::new(Fill {
            state: Mutex::new(State {
                storing,
                ..State::default()
            }),
            progress: Notify::new(),
            max_bytes,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a reader panicked mid-update; the counters are still
        // consistent enough to finish streaming.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new reader from the first byte; `None` once the start of the body has been dropped.
    pub fn reader(self: &Arc<Self>) -> Option<FillReader> {
        let mut st = self.lock();
        if st.base > 0 || matches!(st.end, Some(Err(_))) {
            return None;
        }
        let id = st.readers.len();
        st.readers.push(Reader {
            cursor: Some(0),
            ..Reader::default()
        });
        drop(st);
        Some(FillReader {
            fill: self.clone(),
            id,
            done: false,
        })
    }

    /// Reads `body` to its end, sharing every frame with the readers. Returns the complete
    /// body when it may be stored.
    pub async fn run(self: Arc<Self>, mut body: ProxyBody) -> Option<Filled> {
        loop {
            // Backpressure once nothing is stored: stay within READ_AHEAD of the slowest reader,
            // and stop altogether when no reader is left.
            loop {
                let notified = self.progress.notified();
                {
                    let st = self.lock();
                    if st.storing || st.unread() < READ_AHEAD {
                        if !st.storing && st.live_readers().next().is_none() {
                            drop(st);
                            self.finish(Err("abandoned: no reader left".into()));
                            return None;
                        }
                        break;
                    }
                }
                notified.await;
            }
            match body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let mut st = self.lock();
                        st.bytes += data.len() as u64;
                        if st.storing && st.bytes > self.max_bytes {
                            st.storing = false;
                            tracing::debug!(
                                bytes = st.bytes,
                                max = self.max_bytes,
                                "response grew past the object size limit; not stored"
                            );
                        }
                        if !data.is_empty() {
                            st.chunks.push_back(data);
                        }
                        st.trim();
                        st.wake_readers();
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            let mut st = self.lock();
                            match &mut st.trailers {
                                Some(t) => t.extend(trailers),
                                None => st.trailers = Some(trailers),
                            }
                        }
                    }
                },
                Some(Err(e)) => {
                    self.finish(Err(e.to_string()));
                    return None;
                }
                None => break,
            }
        }
        let mut st = self.lock();
        st.end = Some(Ok(()));
        st.wake_readers();
        if !st.storing {
            return None;
        }
        let mut whole = BytesMut::with_capacity(usize::try_from(st.bytes).unwrap_or(0));
        for chunk in &st.chunks {
            whole.extend_from_slice(chunk);
        }
        let trailers = st.trailers.clone();
        Some(Filled {
            body: whole.freeze(),
            trailers,
        })
    }

    fn finish(&self, end: Result<(), String>) {
        let mut st = self.lock();
        st.storing = false;
        st.end = Some(end);
        st.wake_readers();
    }
}

/// One client's view of a fill, as a response body.
pub struct FillReader {
    fill: Arc<Fill>,
    id: usize,
    done: bool,
}

impl Body for FillReader {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let id = self.id;
        let this = self.get_mut();
        let mut st = this.fill.lock();
        let base = st.base;
        let pushed = st.pushed();
        let Some(cursor) = st.readers.get(id).and_then(|r| r.cursor) else {
            return Poll::Ready(None);
        };
        if cursor < pushed {
            let Some(chunk) = st.chunks.get(cursor - base).cloned() else {
                drop(st);
                this.done = true;
                return Poll::Ready(Some(Err(Box::new(FillError("chunk dropped".into())))));
            };
            st.readers[id].cursor = Some(cursor + 1);
            if !st.storing {
                st.trim();
                drop(st);
                this.fill.progress.notify_waiters();
            }
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        match st.end.clone() {
            Some(Ok(())) => {
                let trailers = if st.readers[id].trailers_sent {
                    None
                } else {
                    st.readers[id].trailers_sent = true;
                    st.trailers.clone()
                };
                drop(st);
                match trailers {
                    Some(t) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
                    None => {
                        this.done = true;
                        Poll::Ready(None)
                    }
                }
            }
            Some(Err(e)) => {
                drop(st);
                this.done = true;
                Poll::Ready(Some(Err(Box::new(FillError(e)))))
            }
            None => {
                st.readers[id].waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for FillReader {
    fn drop(&mut self) {
        let mut st = self.fill.lock();
        if let Some(r) = st.readers.get_mut(self.id) {
            r.cursor = None;
            r.waker = None;
        }
        st.trim();
        drop(st);
        self.fill.progress.notify_waiters();
    }
}

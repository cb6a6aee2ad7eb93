//! Bodies for large transfers that cost no memory per chunk.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// Size of one frame of a [`StaticBody`].
pub const CHUNK_SIZE: usize = 64 * 1024;

/// The bytes every [`StaticBody`] frame points into; frames are `Bytes::from_static` views of
/// this buffer, so producing a gigabyte allocates nothing.
static CHUNK: [u8; CHUNK_SIZE] = [b'x'; CHUNK_SIZE];

/// A body of `len` bytes of `x`, produced from one static buffer, with an exact size hint
/// (so hyper sends `Content-Length`).
#[derive(Debug, Clone, Copy)]
pub struct StaticBody {
    remaining: u64,
}

impl StaticBody {
    /// A body of `len` bytes.
    pub fn new(len: u64) -> Self {
        StaticBody { remaining: len }
    }
}

impl Body for StaticBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = usize::try_from(self.remaining).map_or(CHUNK_SIZE, |r| r.min(CHUNK_SIZE));
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

//! A byte-stream wrapper that enforces the request-head timeout with a real 408 answer.
//!
//! hyper's own `header_read_timeout` closes the connection without a response. nginx answers
//! a slow head with 408 and closes; so do we. The wrapper sees every read hyper makes and,
//! through [`ConnState`], whether a request is being served. Between requests it runs one
//! timer: the keep-alive timeout while no byte of a new head has arrived (then it closes
//! quietly), the head timeout once one has (then it writes 408 and closes).

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::head_scan::HeadScan;

const RESPONSE_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// Shared between the byte stream and the service adapter of one connection.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    /// Requests handed to the service whose response body has not finished.
    pub(crate) in_flight: Arc<AtomicUsize>,
    /// Requests handed to the service so far.
    pub(crate) dispatched: AtomicU64,
    /// Set once a 101 response hands the connection to a tunnel: no HTTP timers apply after.
    pub(crate) upgraded: AtomicBool,
    /// What [`HeadScan`] found in the last head scanned: `(dispatch number << 8) | flags`,
    /// where the dispatch number is the value of `dispatched` before that request.
    pub(crate) head_flags: AtomicU64,
}

impl ConnState {
    /// The scanner's flags for the request about to be dispatched as number `n`, if its head
    /// was scanned (a head pipelined behind another in the same read is not).
    pub(crate) fn head_flags_for(&self, n: u64) -> Option<u8> {
        let v = self.head_flags.load(Ordering::Acquire);
        (v >> 8 == n).then_some((v & 0xff) as u8)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first byte of a request head.
    Idle,
    /// Part of a request head has arrived.
    Head,
    /// A request is being served; no timer runs.
    Busy,
}

pub(crate) struct TimedIo<I> {
    inner: I,
    state: Arc<ConnState>,
    head_timeout: Duration,
    keepalive_timeout: Duration,
    timer: Pin<Box<Sleep>>,
    phase: Phase,
    seen_dispatched: u64,
    scan: Option<HeadScan>,
    unflushed: bool,
    peer: std::net::SocketAddr,
}

impl<I> TimedIo<I> {
    pub(crate) fn new(
        inner: I,
        state: Arc<ConnState>,
        head_timeout: Duration,
        keepalive_timeout: Duration,
        peer: std::net::SocketAddr,
    ) -> Self {
        TimedIo {
            inner,
            state,
            head_timeout,
            keepalive_timeout,
            // A new connection must start its first request within the head timeout.
            timer: Box::pin(tokio::time::sleep(head_timeout)),
            phase: Phase::Idle,
            seen_dispatched: 0,
            scan: None,
            unflushed: false,
            peer,
        }
    }
    /// Tracks whether response bytes may still be on their way, in which case a 408 written
    /// now could land in the middle of a response.
    /// Starts the keep-alive timer once the last response is fully handed to the socket.
    ///
    /// hyper's last read of a request usually returned `Pending` on the socket while the
    /// response was being produced, so it will not read again until the client sends bytes.
    /// The timer is therefore armed here, in the flush that ends every response, and polled
    /// once so that its expiry wakes the connection (and hyper's next read sees it).
    fn arm_keepalive(&mut self, cx: &mut Context<'_>) {
        let dispatched = self.state.dispatched.load(Ordering::Acquire);
        let served_one = self.phase == Phase::Busy || dispatched != self.seen_dispatched;
        if !served_one
            || self.state.in_flight.load(Ordering::Acquire) > 0
            || self.state.upgraded.load(Ordering::Acquire)
        {
            return;
        }
        self.phase = Phase::Idle;
        self.seen_dispatched = dispatched;
        self.timer
            .as_mut()
            .reset(Instant::now() + self.keepalive_timeout);
        let _ = self.timer.as_mut().poll(cx);
    }

    fn note_write(&mut self, polled: &Poll<io::Result<usize>>) {
        match polled {
            Poll::Ready(Ok(n)) if *n > 0 => self.unflushed = true,
            Poll::Pending => self.unflushed = true,
            _ => {}
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for TimedIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.state.in_flight.load(Ordering::Acquire) > 0
            || this.state.upgraded.load(Ordering::Acquire)
        {
            this.phase = Phase::Busy;
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let dispatched = this.state.dispatched.load(Ordering::Acquire);
        if this.phase == Phase::Busy || dispatched != this.seen_dispatched {
            this.seen_dispatched = dispatched;
            this.phase = Phase::Idle;
            this.timer
                .as_mut()
                .reset(Instant::now() + this.keepalive_timeout);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() && this.phase == Phase::Idle {
                    this.phase = Phase::Head;
                    this.timer
                        .as_mut()
                        .reset(Instant::now() + this.head_timeout);
                    this.scan = Some(HeadScan::default());
                }
                if let Some(scan) = &mut this.scan
                    && let Some(flags) = scan.feed(read)
                {
                    this.scan = None;
                    this.state
                        .head_flags
                        .store((dispatched << 8) | u64::from(flags), Ordering::Release);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                match this.phase {
                    Phase::Idle => {
                        tracing::debug!(peer = %this.peer, "idle connection timed out");
                        // End of stream: hyper closes the connection quietly.
                        Poll::Ready(Ok(()))
                    }
                    _ => {
                        tracing::info!(peer = %this.peer, timeout = ?this.head_timeout, status = 408, "request head not received in time");
                        if !this.unflushed {
                            // Best effort: the socket buffer is empty, so this normally fits.
                            let _ = Pin::new(&mut this.inner).poll_write(cx, RESPONSE_408);
                            let _ = Pin::new(&mut this.inner).poll_flush(cx);
                        }
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "request head timeout",
                        )))
                    }
                }
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for TimedIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(polled, Poll::Ready(Ok(()))) {
            self.unflushed = false;
            self.arm_keepalive(cx);
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

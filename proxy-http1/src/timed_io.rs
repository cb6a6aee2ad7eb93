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
    /// What [`HeadScan`] found per request, by request number modulo the ring size.
    heads: [AtomicU64; HEAD_RING],
}

/// Heads remembered between being read and being dispatched; a deeper pipeline in one read
/// leaves the oldest unrecorded, and those requests count as unscanned.
const HEAD_RING: usize = 16;
/// Marks a ring slot as written.
const SCANNED: u64 = 0x80;

impl ConnState {
    fn record_head(&self, number: u64, flags: u8) {
        let slot = &self.heads[(number % HEAD_RING as u64) as usize];
        slot.store(
            (number << 8) | SCANNED | u64::from(flags),
            Ordering::Release,
        );
    }

    /// The scanner's flags for request number `n` (0-based, in arrival order), or `None`
    /// when its head was not scanned.
    pub(crate) fn head_flags_for(&self, n: u64) -> Option<u8> {
        let v = self.heads[(n % HEAD_RING as u64) as usize].load(Ordering::Acquire);
        (v & SCANNED != 0 && v >> 8 == n).then_some((v & 0x7f) as u8)
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
    scan: HeadScan,
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
            scan: HeadScan::new(),
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
        self.enter_idle(dispatched);
        let _ = self.timer.as_mut().poll(cx);
    }

    /// Every request so far has been answered: wait for the next head, under the keep-alive
    /// timeout, with the scanner at a head boundary.
    fn enter_idle(&mut self, dispatched: u64) {
        self.phase = Phase::Idle;
        self.seen_dispatched = dispatched;
        self.scan.resync(dispatched);
        self.timer
            .as_mut()
            .reset(Instant::now() + self.keepalive_timeout);
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
        let upgraded = this.state.upgraded.load(Ordering::Acquire);
        let busy = upgraded || this.state.in_flight.load(Ordering::Acquire) > 0;
        if busy {
            this.phase = Phase::Busy;
        } else {
            let dispatched = this.state.dispatched.load(Ordering::Acquire);
            if this.phase == Phase::Busy || dispatched != this.seen_dispatched {
                this.enter_idle(dispatched);
            }
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        match polled {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !upgraded {
                    let state = &this.state;
                    this.scan.feed(read, |n, flags| state.record_head(n, flags));
                }
                if !read.is_empty() && this.phase == Phase::Idle {
                    this.phase = Phase::Head;
                    this.timer
                        .as_mut()
                        .reset(Instant::now() + this.head_timeout);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if busy => Poll::Pending,
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

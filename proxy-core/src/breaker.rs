//! Circuit breaking per upstream: bounds on concurrent requests, requests waiting for a slot,
//! concurrent retries and open connections. What exceeds them is refused at once with 503,
//! so an overloaded upstream is not made worse and clients learn quickly.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::connector::{DialFuture, Dialed, Dialer};
use crate::endpoint::Endpoint;
use crate::error::UpstreamError;

/// Circuit-breaker limits of one upstream; `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BreakerLimits {
    /// Requests in flight at once (until their response body ends).
    pub max_requests: Option<u32>,
    /// Requests that may wait for a slot when `max_requests` are in flight (default 0:
    /// refuse at once).
    pub max_pending: u32,
    /// Retries in flight at once.
    pub max_retries: Option<u32>,
    /// Open connections to all endpoints together.
    pub max_connections: Option<u32>,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// `max_requests` in flight and no waiting room.
    MaxRequests,
    /// A request waited for a slot longer than it may.
    PendingTimeout,
    /// `max_connections` open.
    MaxConnections,
}

impl Overflow {
    /// A stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Overflow::MaxRequests => "max_requests",
            Overflow::PendingTimeout => "pending_timeout",
            Overflow::MaxConnections => "max_connections",
        }
    }
}

/// The live counters behind an upstream's limits.
#[derive(Debug)]
pub struct Breaker {
    limits: BreakerLimits,
    slots: Option<Arc<Semaphore>>,
    pending: AtomicU32,
    retries: Arc<AtomicU32>,
    /// Requests refused, by any limit.
    refused: AtomicU64,
}

/// A request's slot; released when dropped (when the response body ends).
#[derive(Debug)]
pub struct RequestPermit(
    #[allow(dead_code, reason = "held for its Drop")] Option<OwnedSemaphorePermit>,
);

/// A retry's slot; released when dropped.
#[derive(Debug)]
pub struct RetryPermit(Option<Arc<AtomicU32>>);

impl Drop for RetryPermit {
    fn drop(&mut self) {
        if let Some(n) = self.0.take() {
            n.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Breaker {
    /// Counters for these limits.
    pub fn new(limits: BreakerLimits) -> Self {
        Breaker {
            limits,
            slots: limits
                .max_requests
                .map(|n| Arc::new(Semaphore::new(n as usize))),
            pending: AtomicU32::new(0),
            retries: Arc::new(AtomicU32::new(0)),
            refused: AtomicU64::new(0),
        }
    }

    /// The limits.
    pub fn limits(&self) -> BreakerLimits {
        self.limits
    }

    /// Requests refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Admits a request, waiting up to `wait` for a slot when `max_pending` allows waiting.
    pub async fn admit(&self, wait: Duration) -> Result<RequestPermit, Overflow> {
        let Some(slots) = &self.slots else {
            return Ok(RequestPermit(None));
        };
        if let Ok(p) = slots.clone().try_acquire_owned() {
            return Ok(RequestPermit(Some(p)));
        }
        let queued = self.pending.fetch_add(1, Ordering::AcqRel);
        // Counted out on drop, also when the waiting request is cancelled.
        let _waiting = Waiting(&self.pending);
        if queued >= self.limits.max_pending {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Overflow::MaxRequests);
        }
        let got = tokio::time::timeout(wait, slots.clone().acquire_owned()).await;
        match got {
            Ok(Ok(p)) => Ok(RequestPermit(Some(p))),
            _ => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(Overflow::PendingTimeout)
            }
        }
    }

    /// Takes a retry slot; `None` when `max_retries` are already in flight.
    pub fn retry(&self) -> Option<RetryPermit> {
        let Some(max) = self.limits.max_retries else {
            return Some(RetryPermit(None));
        };
        let prev = self.retries.fetch_add(1, Ordering::AcqRel);
        if prev >= max {
            self.retries.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(RetryPermit(Some(self.retries.clone())))
    }
}

/// One request in the waiting room.
struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A [`Dialer`] that keeps at most `max` connections open through it; a dial beyond that
/// fails at once with [`UpstreamError::ConnectionLimit`].
pub struct LimitedDialer {
    inner: Arc<dyn Dialer>,
    open: Arc<AtomicU32>,
    max: u32,
}

impl LimitedDialer {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Dialer>, max: u32) -> Self {
        LimitedDialer {
            inner,
            open: Arc::new(AtomicU32::new(0)),
            max,
        }
    }
}

impl Dialer for LimitedDialer {
    fn dial(&self, endpoint: &Arc<Endpoint>, timeout: Duration) -> DialFuture {
        let prev = self.open.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Box::pin(async { Err(UpstreamError::ConnectionLimit) });
        }
        let slot = ConnSlot(self.open.clone());
        let dial = self.inner.dial(endpoint, timeout);
        Box::pin(async move {
            let dialed = dial.await?;
            Ok(Dialed {
                io: Box::new(CountedIo {
                    io: dialed.io,
                    _slot: slot,
                }),
                alpn: dialed.alpn,
            })
        })
    }
}

/// One open connection's place in a [`LimitedDialer`]'s count.
struct ConnSlot(Arc<AtomicU32>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct CountedIo {
    io: crate::upgrade::BoxedIo,
    _slot: ConnSlot,
}

impl AsyncRead for CountedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn max_requests_refuses_at_once_without_pending_room() {
        let b = Breaker::new(BreakerLimits {
            max_requests: Some(2),
            ..BreakerLimits::default()
        });
        let a = b.admit(Duration::from_secs(1)).await.unwrap();
        let _c = b.admit(Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            b.admit(Duration::from_secs(1)).await.unwrap_err(),
            Overflow::MaxRequests
        );
        drop(a);
        assert!(b.admit(Duration::from_secs(1)).await.is_ok());
        assert_eq!(b.refused(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn pending_requests_wait_then_time_out() {
        let b = Arc::new(Breaker::new(BreakerLimits {
            max_requests: Some(1),
            max_pending: 1,
            ..BreakerLimits::default()
        }));
        let held = b.admit(Duration::from_secs(1)).await.unwrap();
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.admit(Duration::from_secs(5)).await.is_ok() })
        };
        tokio::task::yield_now().await;
        // The waiting room holds one: a third request is refused.
        assert_eq!(
            b.admit(Duration::from_secs(1)).await.unwrap_err(),
            Overflow::MaxRequests
        );
        drop(held);
        assert!(waiter.await.unwrap(), "the waiter got the freed slot");
        let _held = b.admit(Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            b.admit(Duration::from_millis(100)).await.unwrap_err(),
            Overflow::PendingTimeout
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_leaves_the_waiting_room() {
        let b = Arc::new(Breaker::new(BreakerLimits {
            max_requests: Some(1),
            max_pending: 1,
            ..BreakerLimits::default()
        }));
        let _held = b.admit(Duration::from_secs(1)).await.unwrap();
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.admit(Duration::from_secs(60)).await.is_ok() })
        };
        tokio::task::yield_now().await;
        waiter.abort();
        let _ = waiter.await;
        // The room is free again: this one may wait (and times out) instead of being refused.
        assert_eq!(
            b.admit(Duration::from_millis(10)).await.unwrap_err(),
            Overflow::PendingTimeout
        );
    }

    #[test]
    fn retries_are_bounded() {
        let b = Breaker::new(BreakerLimits {
            max_retries: Some(1),
            ..BreakerLimits::default()
        });
        let r = b.retry().unwrap();
        assert!(b.retry().is_none());
        drop(r);
        assert!(b.retry().is_some());
    }
}

//! Request coalescing: concurrent misses for one URI make one upstream request.
//!
//! The first miss leads: it registers the URI and goes upstream. Later misses wait for the
//! leader's response head. A response that may be shared (storable and fresh) is handed to them
//! as a fill they read from the first byte. A response that may not be shared (private,
//! uncacheable) sends each waiter upstream itself; a leader that fails, or that freshened the
//! stored response with a 304, sends them back to look again (and maybe lead).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use tokio::sync::watch;

use crate::fill::Fill;
use crate::store::SecondaryKey;

/// A leader's response, shared with its waiters.
#[derive(Debug)]
pub struct Shared {
    /// The status.
    pub status: StatusCode,
    /// The response fields as the leader's client got them (before `Age` and `Cache-Status`).
    pub headers: HeaderMap,
    /// The body.
    pub fill: Arc<Fill>,
    /// The request fields the response was selected by; a waiter must match them.
    pub secondary: SecondaryKey,
    /// Freshness left when it arrived, in seconds.
    pub ttl: i64,
    /// When it arrived; a waiter that joins after it went stale goes upstream instead.
    pub arrived: std::time::SystemTime,
}

impl Shared {
    /// Freshness left at `now`, in seconds (negative when stale).
    pub fn ttl_at(&self, now: std::time::SystemTime) -> i64 {
        let elapsed = now.duration_since(self.arrived).map_or(0, |d| d.as_secs());
        self.ttl - i64::try_from(elapsed).unwrap_or(i64::MAX)
    }
}

/// Where a leader's request stands.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// No response head yet.
    Waiting,
    /// A response the waiters may use.
    Shared(Arc<Shared>),
    /// Look in storage again: the leader updated it, or failed.
    Retry,
    /// The response may not be shared: go upstream alone.
    Alone,
}

type Slot = Arc<watch::Sender<Outcome>>;

/// The URIs with a miss in flight.
#[derive(Debug, Default)]
pub struct Coalescer {
    inflight: Mutex<HashMap<Arc<str>, Slot>>,
}

/// What a miss does: lead the upstream request, or wait for the one in flight.
pub enum Join {
    /// Go upstream and publish the result.
    Lead(Lead),
    /// Wait for the leader.
    Wait(watch::Receiver<Outcome>),
}

impl Coalescer {
    /// Joins the miss in flight for `key`, or starts one.
    pub fn join(self: &Arc<Self>, key: &str) -> Join {
        let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = map.get(key) {
            return Join::Wait(slot.subscribe());
        }
        let key: Arc<str> = Arc::from(key);
        let slot: Slot = Arc::new(watch::channel(Outcome::Waiting).0);
        map.insert(key.clone(), slot.clone());
        Join::Lead(Lead {
            coalescer: self.clone(),
            key,
            slot,
        })
    }
}

/// The leader's side of a coalesced miss; dropping it releases the waiters.
pub struct Lead {
    coalescer: Arc<Coalescer>,
    key: Arc<str>,
    slot: Slot,
}

impl Lead {
    /// Hands the response to the waiters (and to later misses, until the lead is dropped).
    pub fn share(&self, shared: Arc<Shared>) {
        self.slot.send_replace(Outcome::Shared(shared));
    }

    /// Tells the waiters the response may not be shared, so each goes upstream itself.
    pub fn alone(self) {
        self.slot.send_replace(Outcome::Alone);
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        {
            let mut map = self
                .coalescer
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if map
                .get(&self.key)
                .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
            {
                map.remove(&self.key);
            }
        }
        if matches!(*self.slot.borrow(), Outcome::Waiting) {
            self.slot.send_replace(Outcome::Retry);
        }
    }
}

/// Waits up to `timeout` for the leader's outcome; `Alone` when it takes longer.
pub async fn wait(mut rx: watch::Receiver<Outcome>, timeout: Duration) -> Outcome {
    let waited =
        tokio::time::timeout(timeout, rx.wait_for(|o| !matches!(o, Outcome::Waiting))).await;
    match waited {
        Ok(Ok(outcome)) => outcome.clone(),
        _ => Outcome::Alone,
    }
}

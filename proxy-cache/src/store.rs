//! Storage: stored responses and their variants in a byte-bounded moka cache.
//!
//! The moka key is the primary cache key (the client-facing absolute URI, RFC 9111 section 2);
//! its value holds every stored variant of that URI (section 4.1), each with the request field
//! values it was selected by. Keying on the URI alone is what lets an unsafe request or a purge
//! remove every variant at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::StatusCode;
use http::header::{HeaderMap, HeaderName};
use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::ops::compute::Op;

use crate::directives::ResponseDirectives;
use crate::freshness::{Exchange, Lifetime};

/// The most variants kept for one URI; the oldest goes first.
pub const MAX_VARIANTS: usize = 32;

/// The request field values a stored response was selected by: the fields its `Vary` names
/// plus the cache's configured key fields (lowercased names, normalised values).
pub type SecondaryKey = Vec<(HeaderName, Option<String>)>;

/// One stored response.
#[derive(Debug)]
pub struct Entry {
    /// The stored status code.
    pub status: StatusCode,
    /// The stored fields, without the ones a cache never stores.
    pub headers: HeaderMap,
    /// The complete body.
    pub body: Bytes,
    /// Trailers, if the response had any.
    pub trailers: Option<HeaderMap>,
    /// The exchange's times, for the age calculation.
    pub exchange: Exchange,
    /// The directives in force (the targeted field's, or `Cache-Control`'s).
    pub cc: ResponseDirectives,
    /// The freshness lifetime.
    pub lifetime: Lifetime,
    /// The secondary key.
    pub secondary: SecondaryKey,
    /// The route that stored it, among the routes sharing the store (see
    /// [`crate::CacheConfig::partition`]).
    pub partition: Arc<str>,
    /// How long moka keeps the entry after it is stored: the freshness left plus the windows
    /// in which a stale copy is still of use.
    pub keep: Duration,
}

impl Entry {
    /// The bytes the entry holds, as moka weighs it.
    pub fn weight(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        let secondary: usize = self
            .secondary
            .iter()
            .map(|(n, v)| n.as_str().len() + v.as_ref().map_or(0, String::len) + 32)
            .sum();
        (self.body.len() + headers + secondary + 256) as u64
    }

    /// The current age in seconds at `now`.
    pub fn age(&self, now: SystemTime) -> u64 {
        self.exchange.current_age(now)
    }
}

/// Every stored variant of one URI.
#[derive(Debug, Clone, Default)]
pub struct Variants {
    /// The variants, oldest first.
    pub entries: Vec<Arc<Entry>>,
}

impl Variants {
    fn weight(&self) -> u32 {
        let total: u64 = self.entries.iter().map(|e| e.weight()).sum();
        u32::try_from(total).unwrap_or(u32::MAX)
    }

    fn keep(&self) -> Duration {
        self.entries
            .iter()
            .map(|e| e.keep)
            .max()
            .unwrap_or(Duration::ZERO)
    }
}

/// Counters of what the cache did, for metrics and tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests answered from storage without contacting the origin.
    pub hits: AtomicU64,
    /// Requests that found nothing usable.
    pub misses: AtomicU64,
    /// Revalidations sent to the origin.
    pub revalidations: AtomicU64,
    /// Responses stored.
    pub stores: AtomicU64,
    /// Entries evicted to stay within the size bound.
    pub evictions: AtomicU64,
    /// Requests that waited for another request's fill instead of going upstream.
    pub coalesced: AtomicU64,
    /// Stale responses served in place of an error.
    pub stale_on_error: AtomicU64,
    /// URIs invalidated by unsafe requests or purges.
    pub invalidations: AtomicU64,
}

impl Stats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

struct KeepFor;

impl moka::Expiry<Arc<str>, Arc<Variants>> for KeepFor {
    fn expire_after_create(
        &self,
        _key: &Arc<str>,
        value: &Arc<Variants>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.keep())
    }

    fn expire_after_update(
        &self,
        _key: &Arc<str>,
        value: &Arc<Variants>,
        _now: std::time::Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.keep())
    }
}

/// Invalidations recent enough to matter to fills still in flight.
#[derive(Debug, Default)]
struct Invalidations {
    /// Bumped by every invalidation; a fill takes a ticket (the current value) when it starts.
    seq: AtomicU64,
    /// Invalidations up to this number were forgotten: a fill with an older ticket is not
    /// stored, since one of them may have been for its URI.
    forgotten: AtomicU64,
    exact: Mutex<HashMap<Arc<str>, u64>>,
    prefixes: Mutex<Vec<(Arc<str>, u64)>>,
}

/// How many recent invalidations are remembered for fills in flight.
const REMEMBERED_INVALIDATIONS: usize = 4096;

impl Invalidations {
    fn record_exact(&self, key: &str) {
        let n = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        let mut exact = self.exact.lock().unwrap_or_else(|e| e.into_inner());
        if exact.len() >= REMEMBERED_INVALIDATIONS {
            let horizon = n.saturating_sub(REMEMBERED_INVALIDATIONS as u64 / 2);
            exact.retain(|_, seq| *seq > horizon);
            self.forgotten.fetch_max(horizon, Ordering::AcqRel);
        }
        exact.insert(Arc::from(key), n);
    }

    fn record_prefix(&self, prefix: &str) {
        let n = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        let mut prefixes = self.prefixes.lock().unwrap_or_else(|e| e.into_inner());
        if prefixes.len() >= 64 {
            let (_, seq) = prefixes.remove(0);
            self.forgotten.fetch_max(seq, Ordering::AcqRel);
        }
        prefixes.push((Arc::from(prefix), n));
    }

    /// True when `key` was invalidated after `ticket` was taken.
    fn since(&self, key: &str, ticket: u64) -> bool {
        if self.seq.load(Ordering::Acquire) == ticket {
            return false;
        }
        if ticket < self.forgotten.load(Ordering::Acquire) {
            return true;
        }
        let exact = self.exact.lock().unwrap_or_else(|e| e.into_inner());
        if exact.get(key).is_some_and(|seq| *seq > ticket) {
            return true;
        }
        drop(exact);
        let prefixes = self.prefixes.lock().unwrap_or_else(|e| e.into_inner());
        prefixes
            .iter()
            .any(|(p, seq)| *seq > ticket && key.starts_with(&**p))
    }
}

/// The byte-bounded store.
#[derive(Clone)]
pub struct Store {
    cache: Cache<Arc<str>, Arc<Variants>>,
    stats: Arc<Stats>,
    invalidations: Arc<Invalidations>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("entries", &self.cache.entry_count())
            .field("bytes", &self.cache.weighted_size())
            .finish()
    }
}

impl Store {
    /// A store holding at most `max_bytes` (headers, bodies and keys together).
    pub fn new(max_bytes: u64) -> Self {
        let stats = Arc::new(Stats::default());
        let evictions = stats.clone();
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &Arc<str>, value: &Arc<Variants>| {
                value
                    .weight()
                    .saturating_add(u32::try_from(key.len()).unwrap_or(u32::MAX))
            })
            .expire_after(KeepFor)
            .support_invalidation_closures()
            .eviction_listener(move |_key, _value, cause| {
                if cause == RemovalCause::Size {
                    Stats::bump(&evictions.evictions);
                }
            })
            .build();
        Store {
            cache,
            stats,
            invalidations: Arc::default(),
        }
    }

    /// A ticket for a fill that starts now: [`Store::insert`] drops the fill's response if
    /// its URI is invalidated after the ticket was taken, so an unsafe request or a purge that
    /// lands while a response is on its way is not undone by it.
    pub fn ticket(&self) -> u64 {
        self.invalidations.seq.load(Ordering::Acquire)
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The variants stored for `key`.
    pub async fn get(&self, key: &str) -> Option<Arc<Variants>> {
        self.cache.get(key).await
    }

    /// Stores `entry` under `key`, replacing the variant with the same secondary key, unless
    /// `key` was invalidated after `ticket` was taken.
    pub async fn insert(&self, key: &str, entry: Arc<Entry>, ticket: u64) {
        if self.invalidations.since(key, ticket) {
            tracing::debug!(
                key,
                "response not stored: its URI was invalidated while it arrived"
            );
            return;
        }
        let key: Arc<str> = Arc::from(key);
        self.cache
            .entry(key.clone())
            .and_compute_with(|existing| {
                let mut variants = existing
                    .map(|e| e.into_value().as_ref().clone())
                    .unwrap_or_default();
                variants
                    .entries
                    .retain(|e| e.secondary != entry.secondary || e.partition != entry.partition);
                if variants.entries.len() >= MAX_VARIANTS {
                    variants.entries.remove(0);
                }
                variants.entries.push(entry);
                std::future::ready(Op::Put(Arc::new(variants)))
            })
            .await;
        // An invalidation that ran between the check above and the put must still win.
        if self.invalidations.since(&key, ticket) {
            self.cache.remove(&*key).await;
            return;
        }
        Stats::bump(&self.stats.stores);
    }

    /// Replaces the stored `old` entry under `key` with `new`, if `old` is still stored.
    pub async fn replace(&self, key: &str, old: &Arc<Entry>, new: Arc<Entry>) {
        let key: Arc<str> = Arc::from(key);
        self.cache
            .entry(key)
            .and_compute_with(|existing| {
                let op = match existing {
                    Some(e) => {
                        let mut variants = e.into_value().as_ref().clone();
                        match variants.entries.iter().position(|e| Arc::ptr_eq(e, old)) {
                            Some(i) => {
                                variants.entries[i] = new;
                                Op::Put(Arc::new(variants))
                            }
                            None => Op::Nop,
                        }
                    }
                    None => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
    }

    /// Removes every variant of `key`; true when there was one.
    pub async fn remove(&self, key: &str) -> bool {
        self.invalidations.record_exact(key);
        let removed = self.cache.remove(key).await.is_some();
        if removed {
            Stats::bump(&self.stats.invalidations);
        }
        removed
    }

    /// Removes every URI that starts with `prefix`; returns how many were stored when the
    /// purge was scheduled (moka applies it in the background, and lookups already miss).
    pub fn remove_prefix(&self, prefix: &str) -> u64 {
        self.invalidations.record_prefix(prefix);
        let prefix: Arc<str> = Arc::from(prefix);
        let count = self
            .cache
            .iter()
            .filter(|(k, _)| k.starts_with(&*prefix))
            .count() as u64;
        let matcher = prefix.clone();
        if self
            .cache
            .invalidate_entries_if(move |k, _| k.starts_with(&*matcher))
            .is_err()
        {
            tracing::warn!(prefix = %prefix, "cache purge by prefix not supported by the store");
            return 0;
        }
        self.stats.invalidations.fetch_add(count, Ordering::Relaxed);
        count
    }

    /// Entries (URIs) and bytes held, after moka's pending bookkeeping.
    pub async fn usage(&self) -> (u64, u64) {
        self.cache.run_pending_tasks().await;
        (self.cache.entry_count(), self.cache.weighted_size())
    }

    /// Runs moka's pending maintenance (size accounting, expiry, eviction).
    pub async fn maintain(&self) {
        self.cache.run_pending_tasks().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::freshness::Exchange;

    fn entry() -> Arc<Entry> {
        let now = SystemTime::now();
        Arc::new(Entry {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"x"),
            trailers: None,
            exchange: Exchange::new(&HeaderMap::new(), now, now),
            cc: ResponseDirectives::default(),
            lifetime: Lifetime::Explicit(60),
            secondary: Vec::new(),
            partition: Arc::from(""),
            keep: Duration::from_secs(60),
        })
    }

    /// RFC 9111 section 4.4: an invalidation that lands while a response is on its way must
    /// not be undone when that response is stored.
    #[tokio::test]
    async fn invalidation_during_a_fill_wins() {
        let store = Store::new(1 << 20);
        let ticket = store.ticket();
        store.remove("http://a/x").await;
        store.insert("http://a/x", entry(), ticket).await;
        assert!(store.get("http://a/x").await.is_none());
        // Other URIs and later fills are unaffected.
        store.insert("http://a/y", entry(), ticket).await;
        assert!(store.get("http://a/y").await.is_some());
        store.insert("http://a/x", entry(), store.ticket()).await;
        assert!(store.get("http://a/x").await.is_some());
        // Prefix purges count too.
        let ticket = store.ticket();
        store.remove_prefix("http://a/");
        store.insert("http://a/z", entry(), ticket).await;
        assert!(store.get("http://a/z").await.is_none());
    }
}

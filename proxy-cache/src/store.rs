//! Storage: stored responses and their variants in a byte-bounded moka cache.
//!
//! The moka key is the primary cache key (the client-facing absolute URI, RFC 9111 section 2);
//! its value holds every stored variant of that URI (section 4.1), each with the request field
//! values it was selected by. Keying on the URI alone is what lets an unsafe request or a purge
//! remove every variant at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName};
use http::{StatusCode, header};
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

    /// True when the entry has `ETag` or `Last-Modified`.
    pub fn has_validator(&self) -> bool {
        self.headers.contains_key(header::ETAG) || self.headers.contains_key(header::LAST_MODIFIED)
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

/// The byte-bounded store.
#[derive(Clone)]
pub struct Store {
    cache: Cache<Arc<str>, Arc<Variants>>,
    stats: Arc<Stats>,
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
        Store { cache, stats }
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The variants stored for `key`.
    pub async fn get(&self, key: &str) -> Option<Arc<Variants>> {
        self.cache.get(key).await
    }

    /// Stores `entry` under `key`, replacing the variant with the same secondary key.
    pub async fn insert(&self, key: &str, entry: Arc<Entry>) {
        let key: Arc<str> = Arc::from(key);
        self.cache
            .entry(key)
            .and_compute_with(|existing| {
                let mut variants = existing
                    .map(|e| e.into_value().as_ref().clone())
                    .unwrap_or_default();
                variants.entries.retain(|e| e.secondary != entry.secondary);
                if variants.entries.len() >= MAX_VARIANTS {
                    variants.entries.remove(0);
                }
                variants.entries.push(entry);
                std::future::ready(Op::Put(Arc::new(variants)))
            })
            .await;
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
        let removed = self.cache.remove(key).await.is_some();
        if removed {
            Stats::bump(&self.stats.invalidations);
        }
        removed
    }

    /// Removes every URI that starts with `prefix`; returns how many were stored when the
    /// purge was scheduled (moka applies it in the background, and lookups already miss).
    pub fn remove_prefix(&self, prefix: &str) -> u64 {
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

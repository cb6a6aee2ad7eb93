//! The cache in front of one route: [`HttpCache`] implements `proxy_core::CacheHook` and runs
//! lookup, validation, serve-stale, coalescing, storing and invalidation.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use proxy_core::body::{self, ProxyBody};
use proxy_core::{
    CacheHook, CacheLog, CacheTarget, Origin, OriginFuture, ProxyError, UpstreamError,
};

use crate::coalesce::{self, Coalescer, Join, Lead, Outcome, Shared};
use crate::conditional::{self, Precondition};
use crate::directives::{self, RequestDirectives, ResponseDirectives};
use crate::fill::Fill;
use crate::freshness::{self, Exchange, Heuristic, Lifetime, Usability};
use crate::key;
use crate::range;
use crate::status::{CacheStatus, Forward};
use crate::storable::{self, NotStored, RequestFacts};
use crate::store::{Entry, Stats, Store};

/// The targeted cache-control field this cache obeys (RFC 9213).
pub const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// The `Cache-Status` field (RFC 9211).
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// A route's cache policy.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// The cache's name in `Cache-Status`.
    pub name: String,
    /// The largest body stored; larger responses stream to the client unstored.
    pub max_object_size: u64,
    /// Non-standard: a freshness lifetime for storable responses that carry no explicit or
    /// heuristic freshness. Off by default.
    pub default_ttl: Option<Duration>,
    /// Request fields that join the cache key (like a `Vary` every response has).
    pub key_headers: Vec<HeaderName>,
    /// Heuristic freshness (RFC 9111 section 4.2.2).
    pub heuristic: Heuristic,
    /// How long a coalesced miss waits for the leader's response head before going upstream.
    pub coalesce_timeout: Duration,
    /// How long a stale response with a validator is kept for conditional requests.
    pub stale_retention: Duration,
    /// Tells apart the routes that share a store: a route uses only what it stored itself and
    /// coalesces only with its own requests, so two routes for one URL that differ by method
    /// or header conditions (a canary) never serve each other's responses. Invalidation and
    /// purge still remove a URL for every route.
    pub partition: Arc<str>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            name: "proxy-bin".into(),
            max_object_size: 8 << 20,
            default_ttl: None,
            key_headers: Vec::new(),
            heuristic: Heuristic::default(),
            coalesce_timeout: Duration::from_secs(5),
            stale_retention: Duration::from_secs(600),
            partition: Arc::from(""),
        }
    }
}

/// A clock for the age calculation; tests substitute their own.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Storage shared by every route that uses it: the store, the misses in flight and the
/// background revalidations. Cloning shares it.
#[derive(Clone)]
pub struct CacheStore {
    store: Store,
    coalescer: Arc<Coalescer>,
    revalidating: Arc<Mutex<HashSet<String>>>,
}

impl std::fmt::Debug for CacheStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheStore")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl CacheStore {
    /// A store of at most `max_bytes`.
    pub fn new(max_bytes: u64) -> Self {
        CacheStore {
            store: Store::new(max_bytes),
            coalescer: Arc::new(Coalescer::default()),
            revalidating: Arc::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        self.store.stats()
    }

    /// Entries and bytes held.
    pub async fn usage(&self) -> (u64, u64) {
        self.store.usage().await
    }

    /// Removes every variant stored for the absolute URI `uri`; true when one was stored.
    pub async fn purge(&self, uri: &str) -> bool {
        self.store.remove(uri).await
    }

    /// Removes every URI that starts with `prefix`; returns how many.
    pub fn purge_prefix(&self, prefix: &str) -> u64 {
        self.store.remove_prefix(prefix)
    }

    /// Runs the store's pending maintenance; a server calls this periodically so that size
    /// accounting and expiry keep up when traffic is light.
    pub async fn maintain(&self) {
        self.store.maintain().await;
    }
}

/// A route's cache: policy plus shared storage.
#[derive(Clone)]
pub struct HttpCache {
    inner: Arc<Inner>,
}

struct Inner {
    config: CacheConfig,
    store: CacheStore,
    clock: Clock,
}

impl std::fmt::Debug for HttpCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCache")
            .field("config", &self.inner.config)
            .field("store", &self.inner.store)
            .finish()
    }
}

impl HttpCache {
    /// A cache with `config` storing into `store`.
    pub fn new(config: CacheConfig, store: CacheStore) -> Self {
        Self::with_clock(config, store, Arc::new(SystemTime::now))
    }

    /// As [`HttpCache::new`], with a clock of the caller's choosing.
    pub fn with_clock(config: CacheConfig, store: CacheStore, clock: Clock) -> Self {
        HttpCache {
            inner: Arc::new(Inner {
                config,
                store,
                clock,
            }),
        }
    }

    /// The shared storage.
    pub fn store(&self) -> &CacheStore {
        &self.inner.store
    }
}

impl CacheHook for HttpCache {
    fn serve(&self, target: CacheTarget, req: Request<ProxyBody>, origin: Origin) -> OriginFuture {
        let inner = self.inner.clone();
        Box::pin(async move { inner.serve(target, req, origin).await })
    }
}

/// Request fields the cache replaces with its own validators when it goes forward to fill or
/// revalidate (it answers the client's own preconditions and ranges itself).
const CLIENT_CONDITIONALS: [HeaderName; 5] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

/// What the cache keeps of the client's request while the body goes forward.
struct Asked {
    method: Method,
    uri: http::Uri,
    version: http::Version,
    headers: HeaderMap,
    directives: RequestDirectives,
    /// A POST whose response names the request's own URI in `Content-Location`.
    content_location_is_target: bool,
    /// The store's invalidation ticket when the request went forward.
    ticket: u64,
}

impl Asked {
    fn new(parts: &Parts, directives: RequestDirectives, ticket: u64) -> Self {
        Asked {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            directives,
            content_location_is_target: false,
            ticket,
        }
    }
}

impl Inner {
    async fn serve(
        self: Arc<Self>,
        target: CacheTarget,
        req: Request<ProxyBody>,
        origin: Origin,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let key = key::primary(&target);
        if req.headers().contains_key(header::UPGRADE) {
            return origin.send(req).await;
        }
        match *req.method() {
            Method::GET | Method::HEAD => self.lookup(key, req, origin, 0).await,
            ref m if m.is_safe() => {
                let resp = origin.send(req).await?;
                Ok(self.forwarded(resp, Forward::Method, None, "bypass"))
            }
            _ => self.unsafe_method(key, target, req, origin).await,
        }
    }

    fn now(&self) -> SystemTime {
        (self.clock)()
    }

    /// GET and HEAD: from storage when possible, else forward. `rejoins` counts how often
    /// this request already waited for another one's upstream exchange that did not help.
    async fn lookup(
        self: Arc<Self>,
        key: String,
        req: Request<ProxyBody>,
        origin: Origin,
        rejoins: u8,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let directives = directives::parse_request(req.headers());
        // RFC 9111 section 4.3.2: If-Match and If-Unmodified-Since "are not applicable to a
        // cache"; they are for the origin, so the request goes there as it is.
        if has_origin_preconditions(req.headers()) {
            Stats::bump(&self.store.stats().misses);
            return self
                .exchange(key, req, origin, directives, Forward::Request, None, None)
                .await;
        }
        let variants = self.store.store.get(&key).await;
        let selected = variants.as_ref().and_then(|v| {
            v.entries
                .iter()
                .filter(|e| {
                    e.partition == self.config.partition
                        && key::matches(req.headers(), &e.secondary)
                })
                .max_by_key(|e| e.exchange.date)
                .cloned()
        });
        let Some(entry) = selected else {
            if directives.only_if_cached {
                return Ok(self.gateway_timeout());
            }
            if rejoins == 0 {
                Stats::bump(&self.store.stats().misses);
            }
            let why = if variants.is_some() {
                Forward::VaryMiss
            } else {
                Forward::UriMiss
            };
            return self
                .forward(key, req, origin, directives, why, None, rejoins)
                .await;
        };
        let now = self.now();
        let age = entry.age(now);
        let lifetime = entry.lifetime.secs();
        let ttl = lifetime as i64 - age as i64;
        match freshness::usability(&entry.cc, &directives, lifetime, age) {
            Usability::Fresh | Usability::StaleAllowed => {
                Stats::bump(&self.store.stats().hits);
                let status = CacheStatus {
                    hit: true,
                    ttl: Some(ttl),
                    ..CacheStatus::default()
                };
                let log = if ttl > 0 { "hit" } else { "stale" };
                Ok(self.stored(&entry, &req, age, status, log))
            }
            Usability::StaleWhileRevalidate => {
                Stats::bump(&self.store.stats().hits);
                self.clone()
                    .revalidate_in_background(key, &entry, &req, origin);
                let status = CacheStatus {
                    hit: true,
                    ttl: Some(ttl),
                    detail: Some("stale-while-revalidate"),
                    ..CacheStatus::default()
                };
                Ok(self.stored(&entry, &req, age, status, "stale"))
            }
            Usability::Validate => {
                if directives.only_if_cached {
                    return Ok(self.gateway_timeout());
                }
                let fwd = if directives.no_cache || directives.max_age.is_some() {
                    Forward::Request
                } else {
                    Forward::Stale
                };
                self.forward(key, req, origin, directives, fwd, Some(entry), rejoins)
                    .await
            }
        }
    }

    /// Sends a conditional request for a stored response and answers from its outcome.
    #[allow(clippy::too_many_arguments)]
    async fn revalidate(
        self: Arc<Self>,
        key: String,
        entry: Arc<Entry>,
        req: Request<ProxyBody>,
        origin: Origin,
        directives: RequestDirectives,
        fwd: Forward,
        lead: Option<Lead>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        Stats::bump(&self.store.stats().revalidations);
        let (parts, body) = req.into_parts();
        let asked = Asked::new(&parts, directives, self.store.store.ticket());
        let cond = conditional_request(parts, body, &entry);
        let request_time = self.now();
        match origin.send(cond).await {
            Ok(resp) if resp.status() == StatusCode::NOT_MODIFIED => {
                let response_time = self.now();
                let Some(fresh) = self.freshen(&entry, resp.headers(), request_time, response_time)
                else {
                    // The 304 is for a different representation: drop ours and go again.
                    self.store.store.remove(&key).await;
                    return self
                        .fetch(key, rebuild(&asked), origin, asked.directives, fwd, lead)
                        .await;
                };
                let fresh = Arc::new(fresh);
                self.store.store.replace(&key, &entry, fresh.clone()).await;
                // Waiters look again and find the freshened entry.
                drop(lead);
                let age = fresh.age(response_time);
                let status = CacheStatus {
                    fwd: Some(fwd),
                    fwd_status: Some(304),
                    ttl: Some(fresh.lifetime.secs() as i64 - age as i64),
                    ..CacheStatus::default()
                };
                let mut out = self.stored_for(&fresh, &asked, age, status, "revalidated");
                keep_upstream_info(&resp, &mut out);
                Ok(out)
            }
            Ok(resp) if resp.status().is_server_error() => {
                let now = self.now();
                let staleness = entry.age(now).saturating_sub(entry.lifetime.secs());
                if freshness::stale_if_error(&entry.cc, &asked.directives, staleness) {
                    Stats::bump(&self.store.stats().stale_on_error);
                    let status = CacheStatus {
                        fwd: Some(Forward::Stale),
                        fwd_status: Some(resp.status().as_u16()),
                        ttl: Some(-(staleness as i64)),
                        detail: Some("stale-if-error"),
                        ..CacheStatus::default()
                    };
                    let mut out =
                        self.stored_for(&entry, &asked, entry.age(now), status, "stale-error");
                    keep_upstream_info(&resp, &mut out);
                    return Ok(out);
                }
                self.store_response(key, &asked, resp, request_time, lead, fwd)
                    .await
            }
            Ok(resp) => {
                self.store_response(key, &asked, resp, request_time, lead, fwd)
                    .await
            }
            Err(e) => {
                let now = self.now();
                let staleness = entry.age(now).saturating_sub(entry.lifetime.secs());
                if is_origin_failure(&e)
                    && freshness::stale_if_error(&entry.cc, &asked.directives, staleness)
                {
                    Stats::bump(&self.store.stats().stale_on_error);
                    tracing::info!(key, error = %e, "serving stale response on origin failure");
                    let status = CacheStatus {
                        fwd: Some(Forward::Stale),
                        ttl: Some(-(staleness as i64)),
                        detail: Some("stale-if-error"),
                        ..CacheStatus::default()
                    };
                    return Ok(self.stored_for(
                        &entry,
                        &asked,
                        entry.age(now),
                        status,
                        "stale-error",
                    ));
                }
                Err(e)
            }
        }
    }

    /// RFC 5861 section 3: one background revalidation per URI at a time.
    fn revalidate_in_background(
        self: Arc<Self>,
        key: String,
        entry: &Arc<Entry>,
        req: &Request<ProxyBody>,
        origin: Origin,
    ) {
        {
            let mut set = self
                .store
                .revalidating
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !set.insert(key.clone()) {
                return;
            }
        }
        let guard = RevalidatingGuard {
            set: self.store.revalidating.clone(),
            key: key.clone(),
        };
        let mut head = Request::new(());
        *head.method_mut() = Method::GET;
        *head.uri_mut() = req.uri().clone();
        *head.version_mut() = req.version();
        *head.headers_mut() = req.headers().clone();
        let (parts, ()) = head.into_parts();
        let mut plain_headers = parts.headers.clone();
        for name in &CLIENT_CONDITIONALS {
            plain_headers.remove(name);
        }
        let cond = conditional_request(parts, body::empty(), entry);
        let entry = entry.clone();
        tokio::spawn(async move {
            Stats::bump(&self.store.stats().revalidations);
            let request_time = self.now();
            let asked = Asked {
                method: Method::GET,
                uri: cond.uri().clone(),
                version: cond.version(),
                headers: plain_headers,
                directives: RequestDirectives::default(),
                content_location_is_target: false,
                ticket: self.store.store.ticket(),
            };
            match origin.send(cond).await {
                Ok(resp) if resp.status() == StatusCode::NOT_MODIFIED => {
                    let response_time = self.now();
                    if let Some(fresh) =
                        self.freshen(&entry, resp.headers(), request_time, response_time)
                    {
                        self.store
                            .store
                            .replace(&key, &entry, Arc::new(fresh))
                            .await;
                    }
                }
                Ok(resp) if !resp.status().is_server_error() => {
                    // Nobody reads this response: its fill runs to the end for the store
                    // alone (and gives up if it outgrows the object size limit).
                    let stored = self
                        .clone()
                        .store_response(
                            key.clone(),
                            &asked,
                            resp,
                            request_time,
                            None,
                            Forward::Stale,
                        )
                        .await;
                    drop(stored);
                }
                Ok(resp) => {
                    tracing::debug!(
                        key,
                        status = resp.status().as_u16(),
                        "background revalidation failed"
                    );
                }
                Err(e) => {
                    tracing::debug!(key, error = %e, "background revalidation failed");
                }
            }
            drop(guard);
        });
    }

    /// Goes upstream for a request storage cannot answer (`entry` is the stale response to
    /// validate, if any): waits for the exchange in flight for the same URI, or leads one.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        self: Arc<Self>,
        key: String,
        req: Request<ProxyBody>,
        origin: Origin,
        directives: RequestDirectives,
        why: Forward,
        entry: Option<Arc<Entry>>,
        rejoins: u8,
    ) -> OriginFuture {
        // Boxed: a waiter whose leader failed looks again, so lookup and forward recurse.
        Box::pin(async move {
            if !shareable(&req, &directives) {
                return self
                    .exchange(key, req, origin, directives, why, entry, None)
                    .await;
            }
            let flight = if self.config.partition.is_empty() {
                key.clone()
            } else {
                format!("{key}#{}", self.config.partition)
            };
            let rx = match self.store.coalescer.join(&flight) {
                Join::Lead(lead) => {
                    return self
                        .exchange(key, req, origin, directives, why, entry, Some(lead))
                        .await;
                }
                Join::Wait(rx) => rx,
            };
            match coalesce::wait(rx, self.config.coalesce_timeout).await {
                // RFC 9111 section 4: a shared response is reused only while still fresh.
                Outcome::Shared(shared)
                    if key::matches(req.headers(), &shared.secondary)
                        && shared.ttl_at(self.now()) > 0 =>
                {
                    if let Some(resp) = self.shared_response(&shared, &req) {
                        Stats::bump(&self.store.stats().coalesced);
                        return Ok(resp);
                    }
                }
                // The leader freshened the entry, or failed: look again (and maybe lead).
                Outcome::Retry if rejoins < MAX_REJOINS => {
                    return self.lookup(key, req, origin, rejoins + 1).await;
                }
                _ => {}
            }
            self.exchange(key, req, origin, directives, why, entry, None)
                .await
        })
    }

    /// One upstream exchange: the validation of `entry`, or a plain fetch. A shared exchange
    /// runs in a task of its own, so it completes for its waiters (and the store) even when
    /// the client that started it goes away.
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        self: Arc<Self>,
        key: String,
        req: Request<ProxyBody>,
        origin: Origin,
        directives: RequestDirectives,
        why: Forward,
        entry: Option<Arc<Entry>>,
        lead: Option<Lead>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let shared = lead.is_some();
        let work = async move {
            match entry {
                Some(entry) => {
                    self.revalidate(key, entry, req, origin, directives, why, lead)
                        .await
                }
                None => self.fetch(key, req, origin, directives, why, lead).await,
            }
        };
        if !shared {
            return work.await;
        }
        match tokio::spawn(work).await {
            Ok(result) => result,
            Err(e) => Err(ProxyError::Upstream(UpstreamError::Io(Box::new(e)))),
        }
    }

    /// A plain upstream request, and whatever of its response may be stored.
    async fn fetch(
        self: Arc<Self>,
        key: String,
        req: Request<ProxyBody>,
        origin: Origin,
        directives: RequestDirectives,
        why: Forward,
        lead: Option<Lead>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let strip_preconditions = shareable(&req, &directives);
        let (mut parts, body) = req.into_parts();
        let asked = Asked::new(&parts, directives, self.store.store.ticket());
        if strip_preconditions {
            // The cache answers the client's preconditions itself from the full response.
            for name in &CLIENT_CONDITIONALS {
                parts.headers.remove(name);
            }
        }
        let request_time = self.now();
        let resp = origin.send(Request::from_parts(parts, body)).await?;
        self.store_response(key, &asked, resp, request_time, lead, why)
            .await
    }

    /// Decides whether `resp` is stored, starts the fill if it is, shares it with coalesced
    /// waiters, and answers the client.
    async fn store_response(
        self: Arc<Self>,
        key: String,
        asked: &Asked,
        resp: Response<ProxyBody>,
        request_time: SystemTime,
        lead: Option<Lead>,
        why: Forward,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let response_time = self.now();
        let (mut parts, body) = resp.into_parts();
        // RFC 9110 section 6.6.1: a recipient with a clock adds Date when there is none.
        if !parts.headers.contains_key(header::DATE) {
            parts.headers.insert(
                header::DATE,
                HeaderValue::from_str(&httpdate::fmt_http_date(response_time))
                    .unwrap_or(HeaderValue::from_static("")),
            );
        }
        let cc = effective_directives(&parts.headers);
        let exchange = Exchange::new(&parts.headers, request_time, response_time);
        let mut lifetime = freshness::lifetime(
            parts.status,
            &parts.headers,
            &cc,
            exchange.date,
            self.config.heuristic,
        );
        if lifetime == Lifetime::None
            && let Some(ttl) = self.config.default_ttl
        {
            lifetime = Lifetime::Explicit(ttl.as_secs());
        }
        let facts = RequestFacts {
            method: &asked.method,
            authorization: asked.headers.contains_key(header::AUTHORIZATION),
            no_store: asked.directives.no_store,
            content_location_is_target: asked.content_location_is_target,
        };
        let mut verdict = storable::check(facts, parts.status, &parts.headers, &cc, lifetime)
            .map_err(NotStored::as_str);
        if asked.method == Method::HEAD {
            verdict = Err("head");
        } else if has_origin_preconditions(&asked.headers) {
            // The origin answered the client's If-Match/If-Unmodified-Since (a 412, or a 200
            // chosen by them): not an answer for requests without them.
            verdict = Err("preconditions");
        }
        if verdict.is_ok()
            && proxy_core::multiplexed::content_length(&parts.headers)
                .is_some_and(|len| len > self.config.max_object_size)
        {
            verdict = Err("too-big");
        }
        let fwd_status = parts.status.as_u16();
        if let Err(reason) = verdict {
            if let Some(lead) = lead {
                lead.alone();
            }
            tracing::debug!(key, reason, status = fwd_status, "response not stored");
            let resp = Response::from_parts(parts, body);
            return Ok(self.forwarded(resp, why, Some(reason), "miss"));
        }

        let age = exchange.current_age(response_time);
        let ttl = lifetime.secs() as i64 - age as i64;
        let mut stored_headers = parts.headers.clone();
        storable::strip_unstored(&mut stored_headers, &cc);
        let secondary = key::secondary(&asked.headers, &parts.headers, &self.config.key_headers);
        let fill = Fill::new(self.config.max_object_size, true);
        let reader = fill.reader();
        let fresh_on_arrival = ttl > 0 && cc.no_cache == crate::directives::FieldList::Absent;
        if let Some(lead) = &lead
            && fresh_on_arrival
        {
            // The stored fields: what `private="field"` withholds is withheld from waiters too.
            lead.share(Arc::new(Shared {
                status: parts.status,
                headers: stored_headers.clone(),
                fill: fill.clone(),
                secondary: secondary.clone(),
                ttl,
                arrived: response_time,
            }));
        }
        let lead = match lead {
            Some(lead) if !fresh_on_arrival => {
                lead.alone();
                None
            }
            other => other,
        };
        let keep = self.keep(&cc, lifetime, age, &stored_headers);
        let ticket = asked.ticket;
        let entry_head = (
            parts.status,
            stored_headers,
            exchange,
            cc,
            lifetime,
            secondary,
        );
        let store = self.store.store.clone();
        let partition = self.config.partition.clone();
        tokio::spawn(async move {
            if let Some(filled) = fill.run(body).await {
                let (status, headers, exchange, cc, lifetime, secondary) = entry_head;
                let entry = Entry {
                    status,
                    headers,
                    body: filled.body,
                    trailers: filled.trailers,
                    partition,
                    exchange,
                    cc,
                    lifetime,
                    secondary,
                    keep,
                };
                store.insert(&key, Arc::new(entry), ticket).await;
            }
            // Waiters that arrive from now on find the stored entry (or lead their own miss).
            drop(lead);
        });
        let body = match reader {
            Some(r) => body::boxed(r),
            None => body::empty(),
        };
        let status = CacheStatus {
            fwd: Some(why),
            fwd_status: Some(fwd_status),
            ttl: Some(ttl),
            stored: true,
            ..CacheStatus::default()
        };
        let mut resp = Response::from_parts(parts, body);
        self.answer_preconditions(&mut resp, &asked.method, &asked.headers);
        self.finish(&mut resp, &status, "miss");
        Ok(resp)
    }

    /// How long moka keeps an entry: the freshness left, plus the windows in which a stale
    /// copy still serves (stale-while-revalidate, stale-if-error, conditional requests).
    fn keep(
        &self,
        cc: &ResponseDirectives,
        lifetime: Lifetime,
        age: u64,
        headers: &HeaderMap,
    ) -> Duration {
        let fresh = lifetime.secs().saturating_sub(age);
        let window = cc
            .stale_while_revalidate
            .unwrap_or(0)
            .max(cc.stale_if_error.unwrap_or(0));
        let validator = if storable::has_validator(headers) {
            self.config.stale_retention.as_secs()
        } else {
            0
        };
        Duration::from_secs(
            fresh
                .saturating_add(window)
                .saturating_add(validator)
                .max(1),
        )
    }

    /// RFC 9111 section 4.3.4: a stored response freshened by a 304. `None` when the 304's
    /// validator names a different representation.
    fn freshen(
        &self,
        entry: &Entry,
        not_modified: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Option<Entry> {
        if let (Some(new), Some(old)) = (
            not_modified.get(header::ETAG),
            entry.headers.get(header::ETAG),
        ) && new.as_bytes().strip_prefix(b"W/").unwrap_or(new.as_bytes())
            != old.as_bytes().strip_prefix(b"W/").unwrap_or(old.as_bytes())
        {
            return None;
        }
        let mut update = not_modified.clone();
        let cc_304 = effective_directives(&update);
        storable::strip_unstored(&mut update, &cc_304);
        update.remove(header::CONTENT_LENGTH);
        let mut headers = entry.headers.clone();
        // The stored Age described the first response; the 304 brings its own (or none).
        headers.remove(header::AGE);
        // Section 3.2: every field in the 304 replaces the stored field of the same name.
        let mut last: Option<HeaderName> = None;
        for (name, value) in update {
            match name {
                Some(n) => {
                    headers.insert(n.clone(), value);
                    last = Some(n);
                }
                None => {
                    if let Some(n) = &last {
                        headers.append(n.clone(), value);
                    }
                }
            }
        }
        if !not_modified.contains_key(header::DATE) {
            headers.insert(
                header::DATE,
                HeaderValue::from_str(&httpdate::fmt_http_date(response_time))
                    .unwrap_or(HeaderValue::from_static("")),
            );
        }
        let cc = effective_directives(&headers);
        let exchange = Exchange::new(&headers, request_time, response_time);
        let mut lifetime = freshness::lifetime(
            entry.status,
            &headers,
            &cc,
            exchange.date,
            self.config.heuristic,
        );
        if lifetime == Lifetime::None
            && let Some(ttl) = self.config.default_ttl
        {
            lifetime = Lifetime::Explicit(ttl.as_secs());
        }
        let age = exchange.current_age(response_time);
        let keep = self.keep(&cc, lifetime, age, &headers);
        Some(Entry {
            status: entry.status,
            headers,
            body: entry.body.clone(),
            trailers: entry.trailers.clone(),
            exchange,
            cc,
            lifetime,
            secondary: entry.secondary.clone(),
            partition: entry.partition.clone(),
            keep,
        })
    }

    /// An unsafe request goes upstream; a non-error answer invalidates the target URI and the
    /// same-origin URIs in `Location` and `Content-Location` (RFC 9111 section 4.4).
    async fn unsafe_method(
        self: Arc<Self>,
        key: String,
        target: CacheTarget,
        req: Request<ProxyBody>,
        origin: Origin,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (parts, body) = req.into_parts();
        let directives = directives::parse_request(&parts.headers);
        let asked = Asked::new(&parts, directives, self.store.store.ticket());
        let req = Request::from_parts(parts, body);
        let request_time = self.now();
        let resp = origin.send(req).await?;
        let status = resp.status();
        let mut stores_post = false;
        if status.is_success() || status.is_redirection() {
            let mut uris = vec![key];
            let mut content_location = None;
            for name in [header::LOCATION, header::CONTENT_LOCATION] {
                if let Some(uri) = resp
                    .headers()
                    .get(&name)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| same_origin(&target, v))
                {
                    if name == header::CONTENT_LOCATION {
                        content_location = Some(uri.clone());
                    }
                    uris.push(uri);
                }
            }
            // RFC 9110 section 9.3.3: a POST response whose Content-Location (not Location) is
            // the target is a representation of it, reusable for later GETs.
            stores_post =
                asked.method == Method::POST && content_location.as_ref() == Some(&uris[0]);
            for uri in &uris {
                self.store.store.remove(uri).await;
            }
            tracing::debug!(uris = ?uris, status = status.as_u16(), "invalidated by unsafe method");
        }
        if stores_post {
            let key = key::primary(&target);
            // The ticket is taken after this request's own invalidation.
            let asked = Asked {
                content_location_is_target: true,
                ticket: self.store.store.ticket(),
                ..asked
            };
            return self
                .store_response(key, &asked, resp, request_time, None, Forward::Method)
                .await;
        }
        Ok(self.forwarded(resp, Forward::Method, None, "bypass"))
    }

    /// A waiter's response from the leader's fill.
    fn shared_response(
        &self,
        shared: &Shared,
        req: &Request<ProxyBody>,
    ) -> Option<Response<ProxyBody>> {
        let reader = shared.fill.reader()?;
        let mut resp = Response::new(body::boxed(reader));
        *resp.status_mut() = shared.status;
        *resp.headers_mut() = shared.headers.clone();
        self.answer_preconditions(&mut resp, req.method(), req.headers());
        let status = CacheStatus {
            fwd: Some(Forward::UriMiss),
            fwd_status: Some(shared.status.as_u16()),
            ttl: Some(shared.ttl_at(self.now())),
            collapsed: true,
            ..CacheStatus::default()
        };
        self.finish(&mut resp, &status, "collapsed");
        Some(resp)
    }

    /// A response from storage for the client's request.
    fn stored(
        &self,
        entry: &Entry,
        req: &Request<ProxyBody>,
        age: u64,
        status: CacheStatus,
        log: &'static str,
    ) -> Response<ProxyBody> {
        self.respond_stored(entry, req.method(), req.headers(), age, status, log)
    }

    fn stored_for(
        &self,
        entry: &Entry,
        asked: &Asked,
        age: u64,
        status: CacheStatus,
        log: &'static str,
    ) -> Response<ProxyBody> {
        self.respond_stored(entry, &asked.method, &asked.headers, age, status, log)
    }

    fn respond_stored(
        &self,
        entry: &Entry,
        method: &Method,
        request: &HeaderMap,
        age: u64,
        status: CacheStatus,
        log: &'static str,
    ) -> Response<ProxyBody> {
        let mut headers = entry.headers.clone();
        headers.insert(header::AGE, HeaderValue::from(age));
        // RFC 9110 section 13.2.1: preconditions apply to a selected representation, which a
        // stored error response is not.
        let precondition = if entry.status.is_success() {
            conditional::evaluate(
                method,
                request,
                &entry.headers,
                entry.exchange.response_time,
            )
        } else {
            Precondition::Proceed
        };
        let mut resp = match precondition {
            Precondition::NotModified => not_modified(&headers),
            Precondition::Failed => precondition_failed(),
            Precondition::Proceed => {
                let answer = if entry.status == StatusCode::OK {
                    range::select(method, request, &entry.headers, entry.body.len() as u64)
                } else {
                    range::RangeAnswer::Full
                };
                match range::partial(&answer, &entry.headers, &entry.body) {
                    Some(partial) => {
                        let mut resp = Response::new(if *method == Method::HEAD {
                            body::empty()
                        } else {
                            body::full(partial.body)
                        });
                        *resp.status_mut() = partial.status;
                        for (name, value) in &partial.headers {
                            headers.insert(name.clone(), value.clone());
                        }
                        *resp.headers_mut() = headers;
                        resp
                    }
                    None => {
                        let body = if *method == Method::HEAD {
                            body::empty()
                        } else {
                            stored_body(entry.body.clone(), entry.trailers.clone())
                        };
                        if entry.status == StatusCode::NO_CONTENT {
                            headers.remove(header::CONTENT_LENGTH);
                        } else {
                            headers.insert(
                                header::CONTENT_LENGTH,
                                HeaderValue::from(entry.body.len()),
                            );
                        }
                        let mut resp = Response::new(body);
                        *resp.status_mut() = entry.status;
                        *resp.headers_mut() = headers;
                        resp
                    }
                }
            }
        };
        self.finish(&mut resp, &status, log);
        resp
    }

    /// Answers the client's own preconditions (stripped from the request that went forward)
    /// against a fresh 200 response.
    fn answer_preconditions(
        &self,
        resp: &mut Response<ProxyBody>,
        method: &Method,
        request: &HeaderMap,
    ) {
        // Requests with If-Match or If-Unmodified-Since went forward with all their
        // preconditions, and the origin has answered them (RFC 9111 section 4.3.2).
        if resp.status() != StatusCode::OK
            || !conditional::is_conditional(request)
            || has_origin_preconditions(request)
        {
            return;
        }
        match conditional::evaluate(method, request, resp.headers(), self.now()) {
            Precondition::NotModified => {
                let extensions = std::mem::take(resp.extensions_mut());
                let headers = resp.headers().clone();
                *resp = not_modified(&headers);
                *resp.extensions_mut() = extensions;
            }
            Precondition::Failed => {
                let extensions = std::mem::take(resp.extensions_mut());
                *resp = precondition_failed();
                *resp.extensions_mut() = extensions;
            }
            Precondition::Proceed => {}
        }
    }

    /// A forwarded response the cache did not store.
    fn forwarded(
        &self,
        mut resp: Response<ProxyBody>,
        why: Forward,
        detail: Option<&'static str>,
        log: &'static str,
    ) -> Response<ProxyBody> {
        let status = CacheStatus {
            fwd: Some(why),
            fwd_status: Some(resp.status().as_u16()),
            detail,
            ..CacheStatus::default()
        };
        self.finish(&mut resp, &status, log);
        resp
    }

    /// RFC 9111 section 5.2.1.7: `only-if-cached` with nothing usable stored.
    fn gateway_timeout(&self) -> Response<ProxyBody> {
        let mut resp = Response::new(body::empty());
        *resp.status_mut() = StatusCode::GATEWAY_TIMEOUT;
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let status = CacheStatus {
            detail: Some("only-if-cached"),
            ..CacheStatus::default()
        };
        self.finish(&mut resp, &status, "miss");
        resp
    }

    fn finish(&self, resp: &mut Response<ProxyBody>, status: &CacheStatus, log: &'static str) {
        if let Some(v) = status.value(&self.config.name) {
            // RFC 9211 section 2: each cache appends its member to the list.
            resp.headers_mut().append(CACHE_STATUS, v);
        }
        resp.extensions_mut().insert(CacheLog(log));
    }
}

/// The directives in force: the targeted `CDN-Cache-Control` when present and valid
/// (RFC 9213 section 2.1), otherwise `Cache-Control`.
fn effective_directives(headers: &HeaderMap) -> ResponseDirectives {
    directives::parse_targeted(headers, &CDN_CACHE_CONTROL)
        .unwrap_or_else(|| directives::parse_response(headers))
}

/// The request that validates `entry`: the client's, less its own preconditions and range,
/// plus the stored validators (RFC 9111 section 4.3.1).
fn conditional_request(mut parts: Parts, body: ProxyBody, entry: &Entry) -> Request<ProxyBody> {
    for name in &CLIENT_CONDITIONALS {
        parts.headers.remove(name);
    }
    parts.headers.remove(header::RANGE);
    if let Some(etag) = entry.headers.get(header::ETAG) {
        parts.headers.insert(header::IF_NONE_MATCH, etag.clone());
    }
    if let Some(modified) = entry.headers.get(header::LAST_MODIFIED) {
        parts
            .headers
            .insert(header::IF_MODIFIED_SINCE, modified.clone());
    }
    Request::from_parts(parts, body)
}

/// A bodiless request again from what was kept of it.
fn rebuild(asked: &Asked) -> Request<ProxyBody> {
    let mut req = Request::new(body::empty());
    *req.method_mut() = asked.method.clone();
    *req.uri_mut() = asked.uri.clone();
    *req.version_mut() = asked.version;
    *req.headers_mut() = asked.headers.clone();
    req
}

/// Carries the access log's upstream details from the response that went forward to the one
/// the cache answers with.
fn keep_upstream_info(from: &Response<ProxyBody>, to: &mut Response<ProxyBody>) {
    if let Some(info) = from.extensions().get::<proxy_core::UpstreamInfo>() {
        to.extensions_mut().insert(*info);
    }
}

/// Marks a URI as being revalidated in the background until dropped (even by a panic).
struct RevalidatingGuard {
    set: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl Drop for RevalidatingGuard {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

/// How often a request waits for another one's exchange before it goes upstream alone.
const MAX_REJOINS: u8 = 2;

/// True when a request may share the upstream exchange of another one for the same URI: a GET
/// without directives that ask for its own answer, ranges, origin preconditions or credentials.
fn shareable(req: &Request<ProxyBody>, directives: &RequestDirectives) -> bool {
    *req.method() == Method::GET
        && !directives.no_cache
        && !directives.no_store
        && directives.max_age.is_none()
        && directives.min_fresh.is_none()
        && !req.headers().contains_key(header::RANGE)
        && !has_origin_preconditions(req.headers())
        && !req.headers().contains_key(header::AUTHORIZATION)
}

fn has_origin_preconditions(headers: &HeaderMap) -> bool {
    headers.contains_key(header::IF_MATCH) || headers.contains_key(header::IF_UNMODIFIED_SINCE)
}

fn is_origin_failure(e: &ProxyError) -> bool {
    matches!(
        e,
        ProxyError::Upstream(_) | ProxyError::NoHealthyEndpoint { .. }
    )
}

/// RFC 9110 section 15.4.5: a 304 carries the fields a 200 would have, less its content.
fn not_modified(headers: &HeaderMap) -> Response<ProxyBody> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::NOT_MODIFIED;
    let mut h = headers.clone();
    for name in [
        header::CONTENT_LENGTH,
        header::CONTENT_TYPE,
        header::CONTENT_RANGE,
        header::TRANSFER_ENCODING,
    ] {
        h.remove(name);
    }
    *resp.headers_mut() = h;
    resp
}

fn precondition_failed() -> Response<ProxyBody> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::PRECONDITION_FAILED;
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp
}

/// A stored body, with its trailers when it had some.
fn stored_body(data: Bytes, trailers: Option<HeaderMap>) -> ProxyBody {
    match trailers {
        None => body::full(data),
        Some(t) => {
            let frames = [
                Ok::<_, std::convert::Infallible>(http_body::Frame::data(data)),
                Ok(http_body::Frame::trailers(t)),
            ];
            body::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
                frames,
            )))
        }
    }
}

/// The absolute URI of `reference` when it has the same origin as `target` (RFC 9111
/// section 4.4 invalidates only same-origin `Location` and `Content-Location`).
fn same_origin(target: &CacheTarget, reference: &str) -> Option<String> {
    let reference = reference.trim();
    if reference.starts_with('/') && !reference.starts_with("//") {
        let same = CacheTarget {
            path_and_query: reference.to_owned(),
            ..target.clone()
        };
        return Some(key::primary(&same));
    }
    let uri: http::Uri = reference.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?.as_str().to_ascii_lowercase();
    let other = CacheTarget {
        scheme: target.scheme,
        authority,
        path_and_query: uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned(),
    };
    let mine = key::primary(target);
    let theirs = key::primary(&other);
    let origin_of = |k: &str| -> Option<String> {
        let rest = k.split_once("://")?.1;
        let end = rest.find('/').unwrap_or(rest.len());
        Some(rest[..end].to_owned())
    };
    (scheme.eq_ignore_ascii_case(target.scheme.as_str()) && origin_of(&mine) == origin_of(&theirs))
        .then_some(theirs)
}

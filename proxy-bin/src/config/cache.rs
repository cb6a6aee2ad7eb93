//! Validation of `[caches.NAME]`, `[admin]` and a route's `cache`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use proxy_cache::freshness::Heuristic;
use proxy_cache::{CacheConfig, CacheStore, HttpCache};
use proxy_core::CacheHook;
use toml::Spanned;

use super::raw::{RawAdmin, RawCache, RawRouteCache, RawSize};
use super::{Validator, parse_duration};
use crate::caches::Caches;

/// The admin listener.
#[derive(Debug, Clone)]
pub struct AdminSpec {
    /// Where it listens.
    pub address: SocketAddr,
    /// The bearer token requests must carry, if any.
    pub secret: Option<String>,
}

/// A validated `[caches.NAME]`: its store and the defaults routes inherit.
#[derive(Debug, Clone)]
pub(super) struct StoreSpec {
    store: CacheStore,
    config: CacheConfig,
}

const DEFAULT_SIZE: u64 = 256 << 20;

/// Parses `64KiB`, `8MiB`, `1GiB`, `10MB`, `512KB` or a bare number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size `{s}`: expected e.g. `64KiB`, `8MiB`, `1GiB`"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => {
            return Err(format!(
                "invalid size unit in `{s}`: use KiB, MiB, GiB, KB, MB or GB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size `{s}` is too large"))
}

impl Validator<'_> {
    pub(super) fn size(&mut self, raw: &Spanned<RawSize>) -> Option<u64> {
        match raw.get_ref() {
            RawSize::Bytes(n) => Some(*n),
            RawSize::Text(t) => match parse_size(t) {
                Ok(n) => Some(n),
                Err(e) => {
                    self.error(raw.span(), e);
                    None
                }
            },
        }
    }

    /// Every `[caches.NAME]`, plus an implicit `default` store when none is declared.
    pub(super) fn caches(
        &mut self,
        raw: &BTreeMap<String, Spanned<RawCache>>,
        registry: &Caches,
    ) -> BTreeMap<String, StoreSpec> {
        let mut out = BTreeMap::new();
        for (name, spec) in raw {
            let c = spec.get_ref();
            let size = c
                .size
                .as_ref()
                .and_then(|s| self.size(s))
                .unwrap_or(DEFAULT_SIZE);
            if size < 1 << 20 {
                self.error(
                    spec.span(),
                    "a cache `size` below 1MiB cannot hold anything useful",
                );
            }
            let defaults = CacheConfig::default();
            let max_object_size = c
                .max_object_size
                .as_ref()
                .and_then(|s| self.size(s))
                .unwrap_or(defaults.max_object_size.min(size / 8));
            if max_object_size > size
                && let Some(m) = &c.max_object_size
            {
                self.error(
                    m.span(),
                    "`max_object_size` is larger than the cache `size`",
                );
            }
            let name_value = match &c.name {
                Some(n) if n.get_ref().is_empty() || !n.get_ref().is_ascii() => {
                    self.error(n.span(), "the cache `name` must be non-empty ASCII");
                    defaults.name.clone()
                }
                Some(n) => n.get_ref().clone(),
                None => defaults.name.clone(),
            };
            let heuristic = Heuristic {
                max: self.duration(&c.heuristic_max, defaults.heuristic.max),
                ..defaults.heuristic
            };
            let config = CacheConfig {
                name: name_value,
                max_object_size,
                coalesce_timeout: self.duration(&c.coalesce_timeout, defaults.coalesce_timeout),
                stale_retention: self.duration(&c.stale_retention, defaults.stale_retention),
                heuristic,
                ..defaults
            };
            let store = self.store(registry, name, size);
            out.insert(name.clone(), StoreSpec { store, config });
        }
        out
    }

    /// The registry's store, or a new one remembered for [`Caches::commit`].
    fn store(&mut self, registry: &Caches, name: &str, size: u64) -> CacheStore {
        let (store, created) = registry.store(name, size);
        if created {
            self.created_stores
                .push((name.to_owned(), size, store.clone()));
        }
        store
    }

    /// A route's `cache`, or `None` when the route has none. `partition` tells this route's
    /// entries apart from other routes' in a shared store.
    pub(super) fn route_cache(
        &mut self,
        raw: &Option<Spanned<RawRouteCache>>,
        stores: &mut BTreeMap<String, StoreSpec>,
        registry: &Caches,
        partition: &str,
    ) -> Option<Arc<dyn CacheHook>> {
        let raw = raw.as_ref()?;
        let span = raw.span();
        let (store_name, table) = match raw.get_ref() {
            RawRouteCache::Enabled(false) => return None,
            RawRouteCache::Enabled(true) => ("default".to_owned(), None),
            RawRouteCache::Store(name) => (name.clone(), None),
            RawRouteCache::Table(t) => {
                if t.enabled == Some(false) {
                    return None;
                }
                (
                    t.store.clone().unwrap_or_else(|| "default".to_owned()),
                    Some(t),
                )
            }
        };
        if store_name == "default" && !stores.contains_key("default") {
            let store = self.store(registry, "default", DEFAULT_SIZE);
            stores.insert(
                "default".into(),
                StoreSpec {
                    store,
                    config: CacheConfig::default(),
                },
            );
        }
        let Some(spec) = stores.get(&store_name) else {
            self.error(
                span,
                format!(
                    "unknown cache store `{store_name}`: declare it as `[caches.{store_name}]`"
                ),
            );
            return None;
        };
        let spec = spec.clone();
        let mut config = spec.config.clone();
        config.partition = Arc::from(partition);
        if let Some(t) = table {
            if let Some(size) = &t.max_object_size {
                let size = match size {
                    RawSize::Bytes(n) => Ok(*n),
                    RawSize::Text(s) => parse_size(s),
                };
                match size {
                    Ok(n) => config.max_object_size = n,
                    Err(e) => self.error(span.clone(), e),
                }
            }
            if let Some(ttl) = &t.default_ttl {
                match parse_duration(ttl) {
                    Ok(d) if d > Duration::ZERO => config.default_ttl = Some(d),
                    Ok(_) => self.error(span.clone(), "`default_ttl` must be positive"),
                    Err(e) => self.error(span.clone(), e),
                }
            }
            for name in t.key_headers.iter().flatten() {
                match HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
                    Ok(n) => config.key_headers.push(n),
                    Err(_) => self.error(
                        span.clone(),
                        format!("invalid header name `{name}` in `key_headers`"),
                    ),
                }
            }
        }
        Some(Arc::new(HttpCache::new(config, spec.store)))
    }

    /// `[admin]`.
    pub(super) fn admin(&mut self, raw: &Option<Spanned<RawAdmin>>) -> Option<AdminSpec> {
        let raw = raw.as_ref()?.get_ref();
        let address = match raw.address.get_ref().parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                self.error(
                    raw.address.span(),
                    format!(
                        "invalid admin address `{}`: expected ip:port",
                        raw.address.get_ref()
                    ),
                );
                return None;
            }
        };
        let secret = raw.secret.as_ref().and_then(|s| {
            let ok = s.get_ref().len() >= 16 && s.get_ref().bytes().all(|b| b.is_ascii_graphic());
            if !ok {
                self.error(s.span(), "the admin `secret` must be at least 16 printable ASCII characters without spaces");
            }
            ok.then(|| s.get_ref().clone())
        });
        if secret.is_none() && !address.ip().is_loopback() {
            self.error(
                raw.address.span(),
                "an admin listener off loopback needs a `secret`",
            );
        }
        Some(AdminSpec { address, secret })
    }
}

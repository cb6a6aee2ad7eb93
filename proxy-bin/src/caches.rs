//! The cache stores of a running proxy, by name. They outlive configuration reloads: a reload
//! that keeps a store's name and size keeps its contents.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxy_cache::CacheStore;

/// Named cache stores, shared by every configuration the process loads.
#[derive(Debug, Clone, Default)]
pub struct Caches {
    stores: Arc<Mutex<BTreeMap<String, (u64, CacheStore)>>>,
}

impl Caches {
    /// The store called `name` with `size` bytes: the existing one when the size is unchanged,
    /// otherwise a new, empty one, which joins the registry only when [`Caches::commit`] is
    /// called (so a configuration that fails validation leaves the serving stores alone).
    pub fn store(&self, name: &str, size: u64) -> (CacheStore, bool) {
        let stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        match stores.get(name) {
            Some((s, store)) if *s == size => (store.clone(), false),
            _ => (CacheStore::new(size), true),
        }
    }

    /// Registers stores created for a configuration that is now in use.
    pub fn commit(&self, created: Vec<(String, u64, CacheStore)>) {
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        for (name, size, store) in created {
            stores.insert(name, (size, store));
        }
    }

    /// Every store, by name.
    pub fn all(&self) -> Vec<(String, CacheStore)> {
        let stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        stores
            .iter()
            .map(|(name, (_, store))| (name.clone(), store.clone()))
            .collect()
    }

    /// Removes `uri` from every store; returns how many stores held it.
    pub async fn purge(&self, uri: &str) -> u64 {
        let mut n = 0;
        for (_, store) in self.all() {
            n += u64::from(store.purge(uri).await);
        }
        n
    }

    /// Removes every URI starting with `prefix` from every store; returns how many.
    pub fn purge_prefix(&self, prefix: &str) -> u64 {
        self.all()
            .iter()
            .map(|(_, store)| store.purge_prefix(prefix))
            .sum()
    }

    /// Keeps moka's size accounting and expiry current while traffic is light.
    pub fn spawn_maintenance(&self, stop: tokio_util::sync::CancellationToken) {
        let caches = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                for (_, store) in caches.all() {
                    store.maintain().await;
                }
            }
        });
    }
}

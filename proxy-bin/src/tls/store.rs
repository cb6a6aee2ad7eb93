//! Certificates loaded from files, with all-or-nothing reload and a polling watcher.
//!
//! Reload contract: every file is re-read; if any one fails, nothing changes (every site keeps
//! serving its old certificate) and the error names the file. Only when every site loads is the
//! new [`SniTable`] swapped in, atomically, for new handshakes; open connections are untouched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::error::TlsError;
use super::load::load_certified_key;
use super::sni::{Fallback, Site, SiteName, SniResolver, SniTable};

/// Shortest polling interval [`spawn_watcher`] accepts; shorter ones are raised to it.
pub const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(10);

/// Where one site's certificate comes from, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteSource {
    /// Identifier for logs and for [`Fallback::Site`].
    pub id: String,
    /// Names as configured (`shop.example.com`, `*.example.com`); parsed by [`SiteName::parse`].
    pub names: Vec<String>,
    /// PEM file with the leaf certificate first, then intermediates.
    pub cert_path: PathBuf,
    /// PEM file with the private key (may be the same file as `cert_path`).
    pub key_path: PathBuf,
}

/// What a successful [`CertStore::reload`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Ids of the sites whose certificate chain differs from the one served before.
    pub changed: Vec<String>,
}

/// Sites loaded from files, served through an [`SniResolver`], reloadable at run time.
#[derive(Debug)]
pub struct CertStore {
    sources: Vec<SiteSource>,
    names: Vec<Vec<SiteName>>,
    fallback: Fallback,
    resolver: Arc<SniResolver>,
    /// What the files looked like when last read. The lock also serialises reloads (a signal
    /// handler and the watcher may both ask for one).
    stamps: Mutex<Stamps>,
}

/// Identity of a file's contents as far as `stat` can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    /// Inode and device: catch an atomic rename (or Kubernetes' symlink swap) that keeps the
    /// size and the modification time.
    #[cfg(unix)]
    inode: (u64, u64),
}

/// Per file; `None` when the file could not be stat'ed.
type Stamps = HashMap<PathBuf, Option<FileStamp>>;

impl CertStore {
    /// Parses the names, loads every site and builds the resolver. Fails on the first site
    /// that does not load, naming its file.
    pub fn load(sources: Vec<SiteSource>, fallback: Fallback) -> Result<Self, TlsError> {
        let names = sources
            .iter()
            .map(|s| s.names.iter().map(|n| SiteName::parse(n)).collect())
            .collect::<Result<Vec<Vec<_>>, _>>()?;
        let stamps = stamp_all(&sources);
        let table = build_table(&sources, &names, &fallback)?;
        for site in table.sites() {
            tracing::info!(
                site = %site.id,
                names = ?site.names.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "certificate loaded"
            );
        }
        Ok(Self {
            sources,
            names,
            fallback,
            resolver: Arc::new(SniResolver::new(table)),
            stamps: Mutex::new(stamps),
        })
    }

    /// The resolver to pass to [`server_config`](super::server_config). It always serves the
    /// latest successfully loaded certificates.
    pub fn resolver(&self) -> Arc<SniResolver> {
        Arc::clone(&self.resolver)
    }

    /// The configured sources.
    pub fn sources(&self) -> &[SiteSource] {
        &self.sources
    }

    /// Whether any file's size, modification time or inode differs from when it was last read
    /// (by [`CertStore::load`] or [`CertStore::reload`], successful or not). Cheap: one `stat`
    /// per distinct file.
    pub fn changed_on_disk(&self) -> bool {
        let stamps = self.stamps.lock().unwrap_or_else(PoisonError::into_inner);
        stamp_all(&self.sources) != *stamps
    }

    /// Re-reads every file. If all load, swaps the new set in atomically and reports which
    /// sites changed; if any fails, keeps every old certificate serving and returns the error.
    ///
    /// A failed attempt still records what the files looked like, so [`changed_on_disk`]
    /// stays false (and a watcher stays quiet) until the files change again.
    ///
    /// [`changed_on_disk`]: CertStore::changed_on_disk
    pub fn reload(&self) -> Result<ReloadReport, TlsError> {
        let mut stamps = self.stamps.lock().unwrap_or_else(PoisonError::into_inner);
        // Stat before reading: a write that lands after the stat shows up at the next poll.
        *stamps = stamp_all(&self.sources);
        let table = match build_table(&self.sources, &self.names, &self.fallback) {
            Ok(table) => table,
            Err(error) => {
                tracing::warn!(
                    file = error.path().map(|p| tracing::field::display(p.display())),
                    error = %error,
                    "certificate reload failed; every site keeps its current certificate"
                );
                return Err(error);
            }
        };
        let old = self.resolver.table();
        let changed: Vec<String> = table
            .sites()
            .iter()
            .filter(|site| {
                old.site(&site.id)
                    .is_none_or(|o| o.key.cert != site.key.cert)
            })
            .map(|site| site.id.clone())
            .collect();
        self.resolver.replace(table);
        if changed.is_empty() {
            tracing::info!("certificates reloaded; none changed");
        } else {
            tracing::info!(changed = ?changed, "certificates reloaded");
        }
        Ok(ReloadReport { changed })
    }
}

/// Polls `store` every `interval` and reloads when [`CertStore::changed_on_disk`] says so,
/// until `shutdown` is cancelled. File access runs on tokio's blocking pool.
///
/// Failures are logged by [`CertStore::reload`] and retried only after the files change again.
/// `interval` below [`MIN_WATCH_INTERVAL`] is raised to it. Must be called inside a tokio
/// runtime.
pub fn spawn_watcher(
    store: Arc<CertStore>,
    interval: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let interval = interval.max(MIN_WATCH_INTERVAL);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first tick completes at once; the files were just loaded.
        ticker.tick().await;
        tracing::debug!(
            interval_ms = interval.as_millis(),
            "certificate watcher started"
        );
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let store = Arc::clone(&store);
            let poll = tokio::task::spawn_blocking(move || {
                if store.changed_on_disk() {
                    // The outcome is logged inside reload().
                    let _ = store.reload();
                }
            });
            if let Err(error) = poll.await {
                tracing::warn!(error = %error, "certificate watcher poll failed");
            }
        }
        tracing::debug!("certificate watcher stopped");
    })
}

fn build_table(
    sources: &[SiteSource],
    names: &[Vec<SiteName>],
    fallback: &Fallback,
) -> Result<SniTable, TlsError> {
    let sites = sources
        .iter()
        .zip(names)
        .map(|(source, names)| {
            Ok(Site {
                id: source.id.clone(),
                names: names.clone(),
                key: load_certified_key(&source.cert_path, &source.key_path)?,
            })
        })
        .collect::<Result<Vec<_>, TlsError>>()?;
    SniTable::new(sites, fallback.clone())
}

fn stamp_all(sources: &[SiteSource]) -> Stamps {
    let mut stamps = Stamps::new();
    for source in sources {
        for path in [&source.cert_path, &source.key_path] {
            if !stamps.contains_key(path) {
                stamps.insert(path.clone(), stamp(path));
            }
        }
    }
    stamps
}

fn stamp(path: &Path) -> Option<FileStamp> {
    // `metadata` follows symlinks: a swapped link target counts as a change.
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        #[cfg(unix)]
        inode: inode(&meta),
    })
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

//! Choosing a certificate by the server name the client sends (SNI).
//!
//! [`SniTable`] is an immutable set of sites with a pure [`SniTable::select`]; [`SniResolver`]
//! holds the current table behind an `ArcSwap` and plugs it into rustls. Replacing the table
//! changes what new handshakes get; connections already established keep the certificate they
//! negotiated.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::error::TlsError;

/// A name a site answers to: exact (`shop.example.com`) or a wildcard (`*.example.com`).
///
/// Names are stored lower-case without a trailing dot. A wildcard matches exactly one extra
/// label, as browsers match certificates: `*.example.com` matches `a.example.com`, but neither
/// `example.com` nor `a.b.example.com`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SiteName {
    /// Matches this host name only.
    Exact(String),
    /// Matches any single label followed by this suffix (stored without the `*.`).
    Wildcard(String),
}

impl SiteName {
    /// Parses and normalises a configured name.
    ///
    /// Accepts host names made of letters, digits, `-` and `_`, optionally starting with the
    /// label `*`. Rejects IP addresses: clients never send them as SNI (RFC 6066 section 3), so
    /// such a site could only ever be reached as the default.
    pub fn parse(name: &str) -> Result<Self, TlsError> {
        let invalid = |reason| TlsError::InvalidName {
            name: name.to_owned(),
            reason,
        };
        let lower = name.to_ascii_lowercase();
        let trimmed = lower.strip_suffix('.').unwrap_or(&lower);
        if trimmed.parse::<IpAddr>().is_ok() {
            return Err(invalid(
                "IP addresses are never sent as SNI; serve IP clients from the default site",
            ));
        }
        let (wildcard, host) = match trimmed.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        if host.len() > 253 {
            return Err(invalid("longer than 253 characters"));
        }
        for label in host.split('.') {
            if label.is_empty() {
                return Err(invalid("empty label"));
            }
            if label.contains('*') {
                return Err(invalid(
                    "a wildcard must be the whole leftmost label, as in *.example.com",
                ));
            }
            if label.len() > 63 {
                return Err(invalid("a label is longer than 63 characters"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(
                    "only letters, digits, '-' and '_' are allowed (use the punycode form of IDNs)",
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(invalid("a label starts or ends with '-'"));
            }
        }
        let host = host.to_owned();
        Ok(if wildcard {
            Self::Wildcard(host)
        } else {
            Self::Exact(host)
        })
    }

    /// Whether `host` (any case, optional trailing dot) is covered by this name.
    pub fn matches(&self, host: &str) -> bool {
        let host = normalize_host(host);
        match self {
            Self::Exact(name) => *name == *host,
            Self::Wildcard(suffix) => {
                wildcard_suffix(&host).is_some_and(|candidate| candidate == suffix)
            }
        }
    }
}

impl fmt::Display for SiteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Wildcard(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

impl FromStr for SiteName {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// One certificate and the names it is served for.
#[derive(Clone)]
pub struct Site {
    /// A stable identifier for logs and for naming the default site (e.g. the config key).
    pub id: String,
    /// The names that select this site. May be empty for a site used only as the default.
    pub names: Vec<SiteName>,
    /// The chain and key served for these names.
    pub key: Arc<CertifiedKey>,
}

impl fmt::Debug for Site {
    // Written by hand so no signing-key internals ever reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Site")
            .field("id", &self.id)
            .field("names", &self.names)
            .field("chain_len", &self.key.cert.len())
            .finish_non_exhaustive()
    }
}

/// What to do when the client sends no SNI, or a name no site has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    /// Serve the site with this id.
    Site(String),
    /// Fail the handshake.
    Refuse,
}

/// The outcome of [`SniTable::select`].
#[derive(Debug, Clone, Copy)]
pub enum Selection<'a> {
    /// An exact name matched.
    Exact(&'a Site),
    /// A wildcard name matched (no exact name did).
    Wildcard(&'a Site),
    /// Nothing matched, or no SNI was sent; this is the default site.
    Default(&'a Site),
    /// Nothing matched and the fallback is [`Fallback::Refuse`].
    Refused,
}

impl<'a> Selection<'a> {
    /// The chosen site, unless refused.
    pub fn site(&self) -> Option<&'a Site> {
        match *self {
            Self::Exact(s) | Self::Wildcard(s) | Self::Default(s) => Some(s),
            Self::Refused => None,
        }
    }

    /// `"exact"`, `"wildcard"`, `"default"` or `"refused"`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Exact(_) => "exact",
            Self::Wildcard(_) => "wildcard",
            Self::Default(_) => "default",
            Self::Refused => "refused",
        }
    }
}

/// An immutable, validated set of sites with O(1) lookup by server name.
#[derive(Debug)]
pub struct SniTable {
    sites: Vec<Site>,
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
    fallback: Option<usize>,
}

impl SniTable {
    /// Builds a table. Fails if a site id or a name appears twice, or if the fallback names a
    /// site that is not in `sites`.
    pub fn new(sites: Vec<Site>, fallback: Fallback) -> Result<Self, TlsError> {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut ids = HashMap::new();
        for (i, site) in sites.iter().enumerate() {
            if ids.insert(site.id.as_str(), i).is_some() {
                return Err(TlsError::Duplicate {
                    what: "site id",
                    name: site.id.clone(),
                });
            }
            for name in &site.names {
                let previous = match name {
                    SiteName::Exact(host) => exact.insert(host.clone(), i),
                    SiteName::Wildcard(suffix) => wildcard.insert(suffix.clone(), i),
                };
                if previous.is_some() {
                    return Err(TlsError::Duplicate {
                        what: "site name",
                        name: name.to_string(),
                    });
                }
            }
        }
        let fallback = match fallback {
            Fallback::Refuse => None,
            Fallback::Site(id) => match ids.get(id.as_str()) {
                Some(&i) => Some(i),
                None => return Err(TlsError::UnknownDefault { id }),
            },
        };
        Ok(Self {
            sites,
            exact,
            wildcard,
            fallback,
        })
    }

    /// Chooses the site for a server name: an exact name first, then a wildcard, then the
    /// default. Case-insensitive; a trailing dot is ignored. Pure: no I/O, no logging.
    pub fn select(&self, server_name: Option<&str>) -> Selection<'_> {
        if let Some(name) = server_name {
            let host = normalize_host(name);
            if let Some(&i) = self.exact.get(host.as_ref()) {
                return Selection::Exact(&self.sites[i]);
            }
            if let Some(&i) = wildcard_suffix(&host).and_then(|suffix| self.wildcard.get(suffix)) {
                return Selection::Wildcard(&self.sites[i]);
            }
        }
        match self.fallback {
            Some(i) => Selection::Default(&self.sites[i]),
            None => Selection::Refused,
        }
    }

    /// The sites, in the order given.
    pub fn sites(&self) -> &[Site] {
        &self.sites
    }

    /// The site with this id.
    pub fn site(&self, id: &str) -> Option<&Site> {
        self.sites.iter().find(|s| s.id == id)
    }

    /// The default site, or `None` when unmatched names are refused.
    pub fn default_site(&self) -> Option<&Site> {
        self.fallback.map(|i| &self.sites[i])
    }
}

/// rustls certificate resolver over an atomically replaceable [`SniTable`].
pub struct SniResolver {
    table: ArcSwap<SniTable>,
}

impl SniResolver {
    /// A resolver serving `table`.
    pub fn new(table: SniTable) -> Self {
        Self {
            table: ArcSwap::from_pointee(table),
        }
    }

    /// The table new handshakes currently use.
    pub fn table(&self) -> Arc<SniTable> {
        self.table.load_full()
    }

    /// Atomically replaces the table for all later handshakes and returns the previous one.
    /// Handshakes in progress and established connections are not affected.
    pub fn replace(&self, table: SniTable) -> Arc<SniTable> {
        self.table.swap(Arc::new(table))
    }
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = self.table.load();
        f.debug_struct("SniResolver")
            .field("sites", &table.sites.len())
            .field(
                "default",
                &table.default_site().map(|site| site.id.as_str()),
            )
            .finish()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self.table.load();
        let sni = client_hello.server_name();
        let selection = table.select(sni);
        match selection.site() {
            Some(site) => {
                tracing::trace!(
                    sni = sni.unwrap_or(""),
                    site = %site.id,
                    matched = selection.kind(),
                    "selected certificate"
                );
                Some(Arc::clone(&site.key))
            }
            None => {
                tracing::debug!(
                    sni = sni.unwrap_or(""),
                    "no certificate for this server name and no default; refusing handshake"
                );
                None
            }
        }
    }
}

/// Lower-cases and strips one trailing dot, borrowing when nothing changes (the common case:
/// rustls already lower-cases SNI).
fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// The part a wildcard would have to equal: everything after a non-empty first label.
fn wildcard_suffix(host: &str) -> Option<&str> {
    match host.split_once('.') {
        Some((first, rest)) if !first.is_empty() && !rest.is_empty() => Some(rest),
        _ => None,
    }
}

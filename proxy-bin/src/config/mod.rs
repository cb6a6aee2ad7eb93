//! Configuration in three stages: the raw TOML schema ([`raw`]), validation into typed values
//! with `FILE:LINE:COL` errors (this module), and the immutable runtime [`ProxyConfig`] that
//! the core swaps atomically on reload.

mod cache;
pub mod raw;
mod resilience;

pub use cache::{AdminSpec, parse_size};

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use proxy_core::balance::BalancerKind;
use proxy_core::headers::{ForwardingHeaders, HeaderRules, ValueTemplate};
use proxy_core::rewrite::{PathRewrite, REDIRECT_STATUSES, Redirect};
use proxy_core::route::{PathMatch, Route, RouteTable, VirtualHost};
use proxy_core::template::Template;
use proxy_core::{
    Endpoint, HashKey, HostRewrite, Limits, ProxyConfig, ProxyRoute, RouteAction, Settings,
    Timeouts, Upstream, UpstreamPolicy,
};
use proxy_http1::{ClientOptions, ServerOptions};
use regex::Regex;
use toml::Spanned;

use crate::caches::Caches;
use crate::tls;
use crate::upstream_connector::{self, UpstreamProtocol, UpstreamTls};
use raw::{RawConfig, RawHeaderRules, RawRoute, RawUpstream};

/// One problem in a configuration file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

/// Every problem found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file, as given.
    pub file: PathBuf,
    /// The problems, in file order.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                e.line,
                e.col,
                e.message
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Which access-log format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// nginx's combined format plus request id, upstream and timings.
    Combined,
    /// One JSON object per line.
    Json,
    /// No access log.
    Off,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Application log filter (`RUST_LOG` overrides it).
    pub level: String,
    /// Access-log format.
    pub access_log: AccessLogFormat,
}

/// One listener as configured. Comparable, so a reload can tell whether listeners changed
/// (which needs a restart) or only the files behind them (which a reload re-reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// Address to bind.
    pub address: SocketAddr,
    /// Cleartext: accept HTTP/2 with prior knowledge next to HTTP/1.1.
    pub h2c: bool,
    /// Cleartext: redirect every request to `https://` on this port.
    pub https_redirect_port: Option<u16>,
    /// `Strict-Transport-Security` added to TLS responses.
    pub hsts: Option<HeaderValue>,
    /// TLS termination, if any.
    pub tls: Option<TlsSpec>,
    /// HTTP/3 on the same address over UDP, if enabled (TLS listeners only).
    pub http3: Option<Http3Spec>,
}

/// HTTP/3 settings of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http3Spec {
    /// `ma` of the `Alt-Svc` header on TCP responses; `None` when not advertised.
    pub alt_svc_max_age: Option<Duration>,
    /// Accept 0-RTT early data.
    pub early_data: bool,
}

/// TLS settings of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSpec {
    /// Certificates by SNI; the first is the default.
    pub sites: Vec<tls::SiteSource>,
    /// What clients without a known SNI get.
    pub fallback: tls::Fallback,
    /// ALPN protocols, ALPN client authentication.
    pub server: tls::ServerOptions,
    /// Serve hosts of other certificates than the SNI's (no 421).
    pub allow_domain_fronting: bool,
    /// Certificate file polling interval; `None` disables polling (SIGHUP still reloads).
    pub watch_interval: Option<Duration>,
}

/// A validated configuration: what the process needs apart from the runtime config.
#[derive(Debug)]
pub struct Config {
    /// Sockets to listen on.
    pub listeners: Vec<ListenerSpec>,
    /// HTTP/1.1 server limits and timeouts.
    pub http1: ServerOptions,
    /// HTTP/2 server limits and timeouts.
    pub http2: proxy_http2::ServerOptions,
    /// HTTP/3 server limits and timeouts (early data is set per listener).
    pub http3: proxy_http3::ServerOptions,
    /// Longest graceful drain.
    pub shutdown_timeout: Duration,
    /// Logging.
    pub log: LogConfig,
    /// The runtime configuration for the core.
    pub proxy: ProxyConfig,
    /// The admin listener, if configured.
    pub admin: Option<AdminSpec>,
    /// The cache stores the routes use (kept across reloads through the same registry).
    pub caches: Caches,
}

/// Reads, parses and validates a configuration file. Relative file names inside it (TLS
/// certificates and keys) are relative to the file's directory.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with(path, &Caches::default())
}

/// As [`load`], taking cache stores from `caches` so that a reload keeps their contents.
pub fn load_with(path: &Path, caches: &Caches) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        file: path.to_owned(),
        errors: vec![ConfigError {
            line: 1,
            col: 1,
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse_with(&text, base, caches).map_err(|errors| ConfigErrors {
        file: path.to_owned(),
        errors,
    })
}

/// Parses and validates configuration text; relative file names are taken from the current
/// directory.
pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    parse_in(text, Path::new("."))
}

/// Parses and validates configuration text, resolving relative file names against `base`.
pub fn parse_in(text: &str, base: &Path) -> Result<Config, Vec<ConfigError>> {
    parse_with(text, base, &Caches::default())
}

/// Parses and validates configuration text with cache stores from `caches`.
pub fn parse_with(text: &str, base: &Path, caches: &Caches) -> Result<Config, Vec<ConfigError>> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let (line, col) = e.span().map_or((1, 1), |s| line_col(text, s.start));
        vec![ConfigError {
            line,
            col,
            message: e.message().trim().to_owned(),
        }]
    })?;
    let mut v = Validator {
        text,
        base,
        caches,
        created_stores: Vec::new(),
        errors: Vec::new(),
    };
    let config = v.config(raw);
    let mut errors = v.errors;
    match config {
        Some(c) if errors.is_empty() => {
            caches.commit(v.created_stores);
            Ok(c)
        }
        _ => {
            errors.sort_by_key(|e| (e.line, e.col));
            Err(errors)
        }
    }
}

/// A stable name for a route among those that may share a cache store: its path condition,
/// methods, header conditions and upstream, hashed.
fn route_partition(r: &RawRoute) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let text = |v: &Option<Spanned<String>>| v.as_ref().map(|s| s.get_ref().clone());
    (
        text(&r.prefix),
        text(&r.exact),
        text(&r.regex),
        text(&r.upstream),
    )
        .hash(&mut h);
    if let Some(methods) = &r.methods {
        for m in methods {
            m.get_ref().to_ascii_uppercase().hash(&mut h);
        }
    }
    if let Some(headers) = &r.headers {
        for (k, v) in headers.get_ref() {
            (k.to_ascii_lowercase(), v).hash(&mut h);
        }
    }
    format!("{:016x}", h.finish())
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Parses `250ms`, `10s`, `5m`, `1h`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration `{s}`: expected e.g. `500ms`, `10s`, `5m`"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("invalid duration unit in `{s}`: use ms, s, m or h")),
    })
}

struct Validator<'a> {
    text: &'a str,
    base: &'a Path,
    caches: &'a Caches,
    /// Cache stores created for this configuration, registered only if it is valid.
    created_stores: Vec<(String, u64, proxy_cache::CacheStore)>,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, col) = line_col(self.text, span.start);
        self.errors.push(ConfigError {
            line,
            col,
            message: message.into(),
        });
    }

    fn duration(&mut self, value: &Option<Spanned<String>>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(v) => match parse_duration(v.get_ref()) {
                Ok(d) => d,
                Err(e) => {
                    self.error(v.span(), e);
                    default
                }
            },
        }
    }

    fn config(&mut self, raw: RawConfig) -> Option<Config> {
        let log = self.log(&raw.log);
        let p = &raw.proxy;
        let http1_defaults = ServerOptions::default();
        let limits_default = Limits::default();
        let limits = Limits {
            max_uri_len: p.max_uri_bytes.unwrap_or(limits_default.max_uri_len),
            max_header_bytes: p
                .max_header_bytes
                .unwrap_or(limits_default.max_header_bytes),
            max_body_bytes: p.max_body_bytes,
        };
        let http1 = ServerOptions {
            header_read_timeout: self
                .duration(&p.header_read_timeout, http1_defaults.header_read_timeout),
            keepalive_timeout: self
                .duration(&p.keepalive_timeout, http1_defaults.keepalive_timeout),
            // Room for the largest allowed target and header section, so the core's precise
            // 414 and 431 checks see them before hyper's buffer limit does.
            max_head_bytes: limits.max_uri_len + limits.max_header_bytes + 4096,
            max_headers: p.max_headers.unwrap_or(http1_defaults.max_headers),
        };
        let shutdown_timeout = self.duration(&p.shutdown_timeout, Duration::from_secs(30));
        let via = p.via.as_ref().and_then(|v| {
            let ok = !v.get_ref().is_empty()
                && v.get_ref()
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b',');
            if !ok {
                self.error(v.span(), "`via` must be one token without spaces or commas");
            }
            ok.then(|| v.get_ref().clone())
        });
        let forwarding = ForwardingHeaders {
            x_forwarded: p.x_forwarded.unwrap_or(true),
            x_real_ip: p.x_real_ip.unwrap_or(true),
            forwarded: p.forwarded.unwrap_or(false),
            via,
        };

        let mut listeners = Vec::new();
        for l in &raw.listeners {
            if let Some(spec) = self.listener(l) {
                listeners.push(spec);
            }
        }
        if raw.listeners.is_empty() {
            self.error(
                0..0,
                "no `[[listeners]]`: add one with `address = \"127.0.0.1:8080\"`",
            );
        }

        let mut upstreams = BTreeMap::new();
        for (name, up) in &raw.upstreams {
            if let Some(u) = self.upstream(name, up) {
                upstreams.insert(name.clone(), Arc::new(u));
            }
        }

        let registry = self.caches;
        let mut stores = self.caches(&raw.caches, registry);
        let admin = self.admin(&raw.admin);
        let mut vhosts = Vec::new();
        for server in &raw.servers {
            let s = server.get_ref();
            let server_req = self.header_rules(&s.request_headers);
            let server_resp = self.header_rules(&s.response_headers);
            let mut routes = Vec::new();
            for route in &s.routes {
                if let Some(r) = self.route(
                    route,
                    &upstreams,
                    &raw.upstreams,
                    &server_req,
                    &server_resp,
                    &mut stores,
                ) {
                    routes.push(r);
                }
            }
            vhosts.push((
                server.span(),
                VirtualHost {
                    names: s.names.clone(),
                    default: s.default,
                    routes,
                },
            ));
        }
        let last_span = vhosts.last().map(|(s, _)| s.clone()).unwrap_or(0..0);
        let routes = match RouteTable::new(vhosts.into_iter().map(|(_, v)| v).collect()) {
            Ok(t) => t,
            Err(e) => {
                self.error(last_span, e.to_string());
                return None;
            }
        };
        let http2 = self.http2(&raw.http2, &http1);
        let http3 = self.http3(&raw.http3, &http1);
        Some(Config {
            listeners,
            http1,
            http2,
            http3,
            shutdown_timeout,
            log,
            proxy: ProxyConfig {
                routes,
                settings: Settings { forwarding, limits },
                upstreams: upstreams.into_values().collect(),
            },
            admin,
            caches: registry.clone(),
        })
    }

    fn file(&self, p: &Spanned<String>) -> PathBuf {
        self.base.join(p.get_ref())
    }

    fn listener(&mut self, l: &raw::RawListener) -> Option<ListenerSpec> {
        let address = match l.address.get_ref().parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                self.error(
                    l.address.span(),
                    format!(
                        "invalid listen address `{}`: expected ip:port",
                        l.address.get_ref()
                    ),
                );
                return None;
            }
        };
        let hsts = l.hsts.as_ref().and_then(|h| {
            let v = HeaderValue::from_str(h.get_ref()).ok();
            if v.is_none() || l.tls.is_none() {
                self.error(
                    h.span(),
                    "`hsts` needs a TLS listener and a valid header value, e.g. \"max-age=31536000\"",
                );
            }
            v
        });
        if let (Some(r), Some(_)) = (&l.redirect_https, &l.tls) {
            self.error(r.span(), "`redirect_https` is for cleartext listeners");
        }
        let tls = l.tls.as_ref().and_then(|t| self.tls(t));
        let http3 = l.http3.as_ref().and_then(|h| self.listener_http3(h, l));
        Some(ListenerSpec {
            address,
            h2c: l.h2c.unwrap_or(false),
            https_redirect_port: l.redirect_https.as_ref().map(|p| *p.get_ref()),
            hsts,
            tls,
            http3,
        })
    }

    fn listener_http3(
        &mut self,
        raw: &Spanned<raw::RawListenerHttp3>,
        l: &raw::RawListener,
    ) -> Option<Http3Spec> {
        let day = Duration::from_secs(24 * 3600);
        let spec = match raw.get_ref() {
            raw::RawListenerHttp3::Enabled(false) => return None,
            raw::RawListenerHttp3::Enabled(true) => Http3Spec {
                alt_svc_max_age: Some(day),
                early_data: false,
            },
            raw::RawListenerHttp3::Table(t) => {
                let max_age = match t.alt_svc_max_age.as_deref().map(parse_duration) {
                    None => day,
                    Some(Ok(d)) => d,
                    Some(Err(e)) => {
                        self.error(raw.span(), format!("alt_svc_max_age: {e}"));
                        day
                    }
                };
                Http3Spec {
                    alt_svc_max_age: t.alt_svc.unwrap_or(true).then_some(max_age),
                    early_data: t.early_data.unwrap_or(false),
                }
            }
        };
        match &l.tls {
            None => self.error(
                raw.span(),
                "`http3` needs a TLS listener: QUIC is always encrypted",
            ),
            Some(t) if spec.early_data && t.get_ref().client_ca.is_some() => self.error(
                raw.span(),
                "`early_data` cannot be combined with `client_ca`: early requests arrive before the client certificate is verified",
            ),
            Some(_) => {}
        }
        Some(spec)
    }

    fn tls(&mut self, raw: &Spanned<raw::RawTls>) -> Option<TlsSpec> {
        let t = raw.get_ref();
        let before = self.errors.len();
        if t.certificates.is_empty() {
            self.error(
                raw.span(),
                "a TLS listener needs at least one `[[listeners.tls.certificates]]`",
            );
        }
        let mut sites = Vec::new();
        for (i, c) in t.certificates.iter().enumerate() {
            let cert = c.get_ref();
            for n in &cert.names {
                if let Err(e) = tls::SiteName::parse(n.get_ref()) {
                    self.error(n.span(), e.to_string());
                }
            }
            if cert.names.is_empty() {
                self.error(c.span(), "a certificate needs at least one name in `names`");
            }
            let (cert_path, key_path) = (self.file(&cert.cert), self.file(&cert.key));
            // Loaded now to report problems against the config line; the listener loads again
            // when it starts (and on every reload).
            if let Err(e) = tls::load_certified_key(&cert_path, &key_path) {
                self.error(c.span(), e.to_string());
            }
            sites.push(tls::SiteSource {
                id: format!(
                    "{}#{}",
                    cert.names.first().map_or("", |n| n.get_ref().as_str()),
                    i
                ),
                names: cert.names.iter().map(|n| n.get_ref().clone()).collect(),
                cert_path,
                key_path,
            });
        }
        let fallback = match t.unknown_sni.as_ref().map(|u| (u, u.get_ref().as_str())) {
            None | Some((_, "default")) => match sites.first() {
                Some(s) => tls::Fallback::Site(s.id.clone()),
                None => tls::Fallback::Refuse,
            },
            Some((_, "refuse")) => tls::Fallback::Refuse,
            Some((u, other)) => {
                self.error(
                    u.span(),
                    format!("unknown unknown_sni `{other}`: use default or refuse"),
                );
                tls::Fallback::Refuse
            }
        };
        let mut server = tls::ServerOptions::default();
        if let Some(alpn) = &t.alpn {
            server.alpn.clear();
            for a in alpn {
                match a.get_ref().as_str() {
                    "h2" => server.alpn.push(tls::ALPN_H2.to_vec()),
                    "http/1.1" => server.alpn.push(tls::ALPN_HTTP1.to_vec()),
                    other => self.error(
                        a.span(),
                        format!("unknown ALPN protocol `{other}`: use h2 or http/1.1"),
                    ),
                }
            }
            if server.alpn.is_empty() {
                self.error(raw.span(), "`alpn` must list h2, http/1.1 or both");
            }
        }
        server.client_auth = match (&t.client_ca, &t.client_auth) {
            (None, None) => tls::ClientAuth::None,
            (None, Some(a)) => {
                self.error(a.span(), "`client_auth` needs `client_ca`");
                tls::ClientAuth::None
            }
            (Some(ca), mode) => {
                let ca_file = self.file(ca);
                if let Err(e) = tls::load_ca_bundle(&ca_file) {
                    self.error(ca.span(), e.to_string());
                }
                match mode.as_ref().map(|m| (m, m.get_ref().as_str())) {
                    None | Some((_, "required")) => tls::ClientAuth::Required { ca_file },
                    Some((_, "optional")) => tls::ClientAuth::Optional { ca_file },
                    Some((m, other)) => {
                        self.error(
                            m.span(),
                            format!("unknown client_auth `{other}`: use required or optional"),
                        );
                        tls::ClientAuth::None
                    }
                }
            }
        };
        let watch = self.duration(&t.watch_interval, Duration::from_secs(5));
        (self.errors.len() == before).then(|| TlsSpec {
            sites,
            fallback,
            server,
            allow_domain_fronting: t.allow_domain_fronting.unwrap_or(false),
            watch_interval: (!watch.is_zero()).then_some(watch),
        })
    }

    /// `[http2]`; the proxy-wide header count and timeouts come from `http1`, which holds the
    /// `[proxy]` values.
    fn http2(&mut self, raw: &raw::RawHttp2, http1: &ServerOptions) -> proxy_http2::ServerOptions {
        let d = proxy_http2::ServerOptions::default();
        let fd = d.floods;
        let max_frame_size = match &raw.max_frame_size {
            None => d.max_frame_size,
            Some(v) if (16_384..=16_777_215).contains(v.get_ref()) => *v.get_ref(),
            Some(v) => {
                self.error(
                    v.span(),
                    "max_frame_size must be between 16384 and 16777215 (RFC 9113)",
                );
                d.max_frame_size
            }
        };
        proxy_http2::ServerOptions {
            max_concurrent_streams: raw
                .max_concurrent_streams
                .unwrap_or(d.max_concurrent_streams),
            initial_stream_window: raw.initial_stream_window.unwrap_or(d.initial_stream_window),
            initial_connection_window: raw
                .initial_connection_window
                .unwrap_or(d.initial_connection_window),
            max_frame_size,
            max_header_list_size: raw.max_header_list_size.unwrap_or(d.max_header_list_size),
            max_headers: http1.max_headers,
            max_pending_accept_reset_streams: raw
                .max_pending_accept_reset_streams
                .unwrap_or(d.max_pending_accept_reset_streams),
            max_local_error_reset_streams: raw
                .max_local_error_reset_streams
                .unwrap_or(d.max_local_error_reset_streams),
            floods: proxy_http2::FloodLimits {
                window: self.duration(&raw.flood_window, fd.window),
                max_settings: raw.max_settings.unwrap_or(fd.max_settings),
                max_pings: raw.max_pings.unwrap_or(fd.max_pings),
                max_resets: raw.max_resets.unwrap_or(fd.max_resets),
                max_empty_frames: raw.max_empty_frames.unwrap_or(fd.max_empty_frames),
                max_continuations: raw.max_continuations.unwrap_or(fd.max_continuations),
                max_priority: raw.max_priority.unwrap_or(fd.max_priority),
            },
            send_stall_timeout: self.duration(&raw.send_stall_timeout, d.send_stall_timeout),
            idle_timeout: http1.keepalive_timeout,
            handshake_timeout: http1.header_read_timeout,
            ..d
        }
    }

    /// `[http3]`; the header count and header timeout come from `[proxy]` through `http1`.
    fn http3(&mut self, raw: &raw::RawHttp3, http1: &ServerOptions) -> proxy_http3::ServerOptions {
        let d = proxy_http3::ServerOptions::default();
        let uni = match &raw.max_concurrent_uni_streams {
            None => d.max_concurrent_uni_streams,
            Some(v) if *v.get_ref() >= 3 => *v.get_ref(),
            Some(v) => {
                self.error(
                    v.span(),
                    "max_concurrent_uni_streams must be at least 3: HTTP/3 clients open a control and two QPACK streams",
                );
                d.max_concurrent_uni_streams
            }
        };
        let pending = raw.retry_pending_handshakes.unwrap_or(64);
        let address_validation = match raw
            .address_validation
            .as_ref()
            .map(|v| (v, v.get_ref().as_str()))
        {
            None | Some((_, "under-load")) => proxy_http3::AddressValidation::UnderLoad {
                pending_handshakes: pending,
            },
            Some((_, "always")) => proxy_http3::AddressValidation::Always,
            Some((_, "never")) => proxy_http3::AddressValidation::Never,
            Some((v, other)) => {
                self.error(
                    v.span(),
                    format!(
                        "unknown address_validation `{other}`: use under-load, always or never"
                    ),
                );
                d.address_validation
            }
        };
        let idle_timeout = self.duration(&raw.idle_timeout, d.idle_timeout);
        if let Some(v) = &raw.idle_timeout
            && idle_timeout.is_zero()
        {
            self.error(v.span(), "idle_timeout must be above zero");
        }
        proxy_http3::ServerOptions {
            max_concurrent_streams: raw
                .max_concurrent_streams
                .unwrap_or(d.max_concurrent_streams),
            max_concurrent_uni_streams: uni,
            stream_receive_window: raw.stream_receive_window.unwrap_or(d.stream_receive_window),
            connection_receive_window: raw
                .connection_receive_window
                .unwrap_or(d.connection_receive_window),
            send_window: raw.send_window.unwrap_or(d.send_window),
            max_field_section_size: raw
                .max_field_section_size
                .unwrap_or(d.max_field_section_size),
            max_headers: http1.max_headers,
            max_connections: raw.max_connections.unwrap_or(d.max_connections),
            address_validation,
            early_data: false,
            handshake_timeout: self.duration(&raw.handshake_timeout, d.handshake_timeout),
            header_read_timeout: http1.header_read_timeout,
            idle_timeout,
            send_stall_timeout: self.duration(&raw.send_stall_timeout, d.send_stall_timeout),
            close_timeout: d.close_timeout,
        }
    }

    fn log(&mut self, raw: &raw::RawLog) -> LogConfig {
        let access_log = match &raw.access_log {
            None => AccessLogFormat::Combined,
            Some(v) => match v.get_ref().as_str() {
                "combined" => AccessLogFormat::Combined,
                "json" => AccessLogFormat::Json,
                "off" => AccessLogFormat::Off,
                other => {
                    self.error(
                        v.span(),
                        format!("unknown access_log `{other}`: use combined, json or off"),
                    );
                    AccessLogFormat::Combined
                }
            },
        };
        LogConfig {
            level: raw
                .level
                .as_ref()
                .map_or_else(|| "info".to_owned(), |l| l.get_ref().clone()),
            access_log,
        }
    }

    fn upstream(&mut self, name: &str, up: &Spanned<RawUpstream>) -> Option<Upstream> {
        let u = up.get_ref();
        let span = up.span();
        let mut endpoints = Vec::new();
        for ep in &u.endpoints {
            let (address, weight, backup) = match ep.get_ref() {
                raw::RawEndpoint::Address(a) => (a.as_str(), 1, false),
                raw::RawEndpoint::Detailed {
                    address,
                    weight,
                    backup,
                } => (
                    address.as_str(),
                    weight.unwrap_or(1),
                    backup.unwrap_or(false),
                ),
            };
            if weight == 0 {
                self.error(ep.span(), "endpoint weight must be at least 1");
            }
            let authority = address.parse::<http::uri::Authority>().ok();
            let resolved = address.to_socket_addrs().ok().and_then(|mut it| it.next());
            match (authority, resolved) {
                (Some(a), Some(addr)) if a.port_u16().is_some() => {
                    endpoints.push(Endpoint::new(addr, a, weight).backup(backup));
                }
                _ => self.error(
                    ep.span(),
                    format!(
                        "invalid endpoint address `{address}`: expected host:port that resolves"
                    ),
                ),
            }
        }
        if u.endpoints.is_empty() {
            self.error(span.clone(), format!("upstream `{name}` has no endpoints"));
        } else if !endpoints.is_empty() && endpoints.iter().all(Endpoint::is_backup) {
            self.error(
                span.clone(),
                format!("upstream `{name}` has only backup endpoints: mark one as primary"),
            );
        }
        let balancer = match &u.balancer {
            None => BalancerKind::RoundRobin,
            Some(b) => match b.get_ref().as_str() {
                "round_robin" => BalancerKind::RoundRobin,
                "weighted_round_robin" => BalancerKind::WeightedRoundRobin,
                "least_request" => BalancerKind::LeastRequest,
                "peak_ewma" => BalancerKind::PeakEwma,
                "consistent_hash" => BalancerKind::ConsistentHash,
                "random" => BalancerKind::Random,
                other => {
                    self.error(b.span(), format!("unknown balancer `{other}`: use round_robin, weighted_round_robin, least_request, peak_ewma, consistent_hash or random"));
                    BalancerKind::RoundRobin
                }
            },
        };
        let hash_key = u.hash_key.as_ref().and_then(|k| {
            let parsed = match k.get_ref().split_once(':') {
                None if k.get_ref() == "client_ip" => Some(HashKey::ClientIp),
                Some(("header", h)) => HeaderName::from_bytes(h.trim().as_bytes())
                    .ok()
                    .map(HashKey::Header),
                Some(("cookie", c)) if !c.trim().is_empty() => {
                    Some(HashKey::Cookie(c.trim().to_owned()))
                }
                _ => None,
            };
            if parsed.is_none() {
                self.error(
                    k.span(),
                    format!(
                        "invalid hash_key `{}`: use client_ip, header:NAME or cookie:NAME",
                        k.get_ref()
                    ),
                );
            }
            parsed
        });
        if balancer == BalancerKind::ConsistentHash && u.hash_key.is_none() {
            self.error(
                span.clone(),
                format!("upstream `{name}` uses consistent_hash but sets no hash_key"),
            );
        }
        let defaults = UpstreamPolicy::default();
        let policy = UpstreamPolicy {
            balancer,
            hash_key,
            health: self.health_policy(u),
            timeouts: Timeouts {
                connect: self.duration(&u.connect_timeout, defaults.timeouts.connect),
                response_header: self.duration(
                    &u.response_header_timeout,
                    defaults.timeouts.response_header,
                ),
                idle: self.duration(&u.idle_timeout, defaults.timeouts.idle),
            },
            breaker: self.breaker(&u.circuit_breaker),
            retry_budget: self.retry_budget(&u.retry_budget),
        };
        let initially_failing = policy
            .health
            .active
            .as_ref()
            .is_some_and(|c| !c.initially_healthy);
        let endpoints: Vec<Arc<Endpoint>> = endpoints
            .into_iter()
            .map(|e| Arc::new(e.initially_failing(initially_failing)))
            .collect();
        let pool_defaults = ClientOptions::default();
        let h1 = ClientOptions {
            idle_timeout: self.duration(&u.keepalive_timeout, pool_defaults.idle_timeout),
            max_idle_per_endpoint: u.keepalive.unwrap_or(pool_defaults.max_idle_per_endpoint),
        };
        let protocol = match u.protocol.as_ref().map(|p| (p, p.get_ref().as_str())) {
            None | Some((_, "http1")) => UpstreamProtocol::Http1,
            Some((_, "http2")) => UpstreamProtocol::Http2,
            Some((p, "auto")) => {
                if u.tls.is_none() {
                    self.error(
                        p.span(),
                        "`protocol = \"auto\"` negotiates by ALPN and needs `tls`",
                    );
                }
                UpstreamProtocol::Auto
            }
            Some((p, "http3")) => {
                if u.tls.is_none() {
                    self.error(
                        p.span(),
                        "`protocol = \"http3\"` runs over QUIC, which is always encrypted: add `tls`",
                    );
                }
                UpstreamProtocol::Http3
            }
            Some((p, other)) => {
                self.error(
                    p.span(),
                    format!("unknown protocol `{other}`: use http1, http2, auto or http3"),
                );
                UpstreamProtocol::Http1
            }
        };
        let tls = match &u.tls {
            None => None,
            Some(t) => Some(self.upstream_tls(t)?),
        };
        let max_connections = policy.breaker.max_connections;
        if max_connections.is_some()
            && matches!(protocol, UpstreamProtocol::Auto | UpstreamProtocol::Http3)
        {
            self.error(
                span.clone(),
                "circuit_breaker.max_connections is supported with protocol http1 or http2 only",
            );
        }
        let connector = match upstream_connector::build(protocol, h1, tls, max_connections) {
            Ok(c) => c,
            Err(e) => {
                self.error(up.span(), e.to_string());
                return None;
            }
        };
        Some(Upstream::new(name, endpoints, policy, connector))
    }

    fn upstream_tls(&mut self, raw: &Spanned<raw::RawUpstreamTls>) -> Option<UpstreamTls> {
        let t = raw.get_ref();
        let roots = match &t.ca {
            None => tls::UpstreamRoots::System,
            Some(ca) => tls::UpstreamRoots::CaFile(self.file(ca)),
        };
        let client_cert = match (&t.cert, &t.key) {
            (None, None) => None,
            (Some(c), Some(k)) => Some((self.file(c), self.file(k))),
            _ => {
                self.error(
                    raw.span(),
                    "a client certificate needs both `cert` and `key`",
                );
                return None;
            }
        };
        let server_name = match &t.server_name {
            None => None,
            Some(n) => match rustls_pki_types::ServerName::try_from(n.get_ref().clone()) {
                Ok(name) => Some(name),
                Err(_) => {
                    self.error(n.span(), format!("invalid server_name `{}`", n.get_ref()));
                    return None;
                }
            },
        };
        match tls::client_config(roots, client_cert, Vec::new()) {
            Ok(config) => Some(UpstreamTls {
                config,
                server_name,
            }),
            Err(e) => {
                let span = t.ca.as_ref().map_or_else(|| raw.span(), Spanned::span);
                self.error(span, e.to_string());
                None
            }
        }
    }

    fn header_rules(&mut self, raw: &Option<Spanned<RawHeaderRules>>) -> HeaderRules {
        let Some(r) = raw else {
            return HeaderRules::default();
        };
        let rules = r.get_ref();
        match HeaderRules::parse(
            rules.remove.iter().map(String::as_str),
            rules.set.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            rules.add.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ) {
            Ok(h) => h,
            Err(e) => {
                self.error(r.span(), e.to_string());
                HeaderRules::default()
            }
        }
    }

    fn route(
        &mut self,
        route: &Spanned<RawRoute>,
        upstreams: &BTreeMap<String, Arc<Upstream>>,
        declared: &BTreeMap<String, Spanned<RawUpstream>>,
        server_req: &HeaderRules,
        server_resp: &HeaderRules,
        stores: &mut BTreeMap<String, cache::StoreSpec>,
    ) -> Option<Route<RouteAction>> {
        let r = route.get_ref();
        let span = route.span();
        let matchers = [&r.prefix, &r.exact, &r.regex];
        if matchers.iter().filter(|m| m.is_some()).count() != 1 {
            self.error(
                span,
                "a route needs exactly one of `prefix`, `exact` or `regex`",
            );
            return None;
        }
        let path = if let Some(p) = &r.prefix {
            PathMatch::Prefix(self.path(p)?)
        } else if let Some(p) = &r.exact {
            PathMatch::Exact(self.path(p)?)
        } else {
            let re = r.regex.as_ref()?;
            match Regex::new(re.get_ref()) {
                Ok(re) => PathMatch::Regex(re),
                Err(e) => {
                    self.error(
                        re.span(),
                        format!("invalid regex: {}", one_line(&e.to_string())),
                    );
                    return None;
                }
            }
        };
        let mut methods = Vec::new();
        for m in r.methods.iter().flatten() {
            match Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()) {
                Ok(method) => methods.push(method),
                Err(_) => self.error(m.span(), format!("invalid method `{}`", m.get_ref())),
            }
        }
        let mut headers = Vec::new();
        if let Some(h) = &r.headers {
            for (name, value) in h.get_ref() {
                match (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) {
                    (Ok(n), Ok(v)) => headers.push((n, v)),
                    _ => self.error(h.span(), format!("invalid header condition `{name}`")),
                }
            }
        }
        let action = match (&r.upstream, &r.redirect) {
            (Some(_), Some(_)) | (None, None) => {
                self.error(
                    span,
                    "a route needs exactly one of `upstream` or `redirect`",
                );
                return None;
            }
            (None, Some(redirect)) => {
                let rd = redirect.get_ref();
                let status = rd.status.unwrap_or(302);
                if !REDIRECT_STATUSES.contains(&status) {
                    self.error(
                        redirect.span(),
                        format!("redirect status {status} is not one of 301, 302, 303, 307, 308"),
                    );
                }
                let location = match Template::parse(&rd.location) {
                    Ok(t) => t,
                    Err(e) => {
                        self.error(redirect.span(), format!("in `location`: {e}"));
                        return None;
                    }
                };
                RouteAction::Redirect(Redirect {
                    status: StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND),
                    location,
                })
            }
            (Some(name), None) => {
                let Some(upstream) = upstreams.get(name.get_ref()) else {
                    if !declared.contains_key(name.get_ref()) {
                        self.error(
                            name.span(),
                            format!("unknown upstream `{}`", name.get_ref()),
                        );
                    }
                    return None;
                };
                let upstream_attempts = declared
                    .get(name.get_ref())
                    .and_then(|u| u.get_ref().max_attempts)
                    .unwrap_or(3)
                    .max(1);
                let rewrite = self.rewrite(r, &path)?;
                let host = match &r.host {
                    None => HostRewrite::Pass,
                    Some(h) => match h.get_ref().as_str() {
                        "pass" => HostRewrite::Pass,
                        "endpoint" => HostRewrite::Endpoint,
                        other => match ValueTemplate::parse("host", other) {
                            Ok(t) => HostRewrite::Value(t),
                            Err(e) => {
                                self.error(h.span(), e.to_string());
                                return None;
                            }
                        },
                    },
                };
                let request_headers = merge(server_req, self.header_rules(&r.request_headers));
                let response_headers = merge(server_resp, self.header_rules(&r.response_headers));
                RouteAction::Proxy(Arc::new(ProxyRoute {
                    upstream: upstream.clone(),
                    rewrite,
                    host,
                    request_headers,
                    response_headers,
                    cache: self.route_cache(&r.cache, stores, self.caches, &route_partition(r)),
                    retry: self.retry(&r.retry, &r.timeout, upstream_attempts),
                }))
            }
        };
        Some(Route {
            path,
            methods,
            headers,
            action,
        })
    }

    fn path(&mut self, p: &Spanned<String>) -> Option<String> {
        if p.get_ref().starts_with('/') {
            Some(p.get_ref().clone())
        } else {
            self.error(
                p.span(),
                format!("path `{}` must start with `/`", p.get_ref()),
            );
            None
        }
    }

    fn rewrite(&mut self, r: &RawRoute, path: &PathMatch) -> Option<PathRewrite> {
        let given = [
            r.strip_prefix.is_some(),
            r.replace_prefix.is_some(),
            r.regex_rewrite.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            let span = r
                .strip_prefix
                .as_ref()
                .or(r.replace_prefix.as_ref())
                .map_or(0..0, Spanned::span);
            self.error(
                span,
                "use at most one of `strip_prefix`, `replace_prefix`, `regex_rewrite`",
            );
            return None;
        }
        if let Some(p) = &r.strip_prefix {
            return Some(PathRewrite::StripPrefix(self.path(p)?));
        }
        if let Some(to) = &r.replace_prefix {
            let PathMatch::Prefix(from) = path else {
                self.error(to.span(), "`replace_prefix` needs a `prefix` route");
                return None;
            };
            return Some(PathRewrite::ReplacePrefix {
                from: from.clone(),
                to: self.path(to)?,
            });
        }
        if let Some(rr) = &r.regex_rewrite {
            return match Regex::new(&rr.get_ref().pattern) {
                Ok(pattern) => Some(PathRewrite::Regex {
                    pattern,
                    replacement: rr.get_ref().replacement.clone(),
                }),
                Err(e) => {
                    self.error(
                        rr.span(),
                        format!("invalid regex: {}", one_line(&e.to_string())),
                    );
                    None
                }
            };
        }
        Some(PathRewrite::Keep)
    }
}

fn merge(server: &HeaderRules, route: HeaderRules) -> HeaderRules {
    let mut out = server.clone();
    out.remove.extend(route.remove);
    out.set.extend(route.set);
    out.add.extend(route.add);
    out
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;

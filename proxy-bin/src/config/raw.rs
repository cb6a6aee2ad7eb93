//! Stage one: the TOML schema exactly as written, rejecting unknown keys.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Logging.
    #[serde(default)]
    pub log: RawLog,
    /// Proxy-wide settings.
    #[serde(default)]
    pub proxy: RawProxy,
    /// Sockets to accept on.
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    /// HTTP/2 server limits, for every listener.
    #[serde(default)]
    pub http2: RawHttp2,
    /// HTTP/3 server limits, for every listener that serves HTTP/3.
    #[serde(default)]
    pub http3: RawHttp3,
    /// Named upstreams.
    #[serde(default)]
    pub upstreams: BTreeMap<String, Spanned<RawUpstream>>,
    /// Virtual hosts.
    #[serde(default)]
    pub servers: Vec<Spanned<RawServer>>,
    /// Named cache stores; `default` is the one `cache = true` uses.
    #[serde(default)]
    pub caches: BTreeMap<String, Spanned<RawCache>>,
    /// The admin listener (cache purge, stats).
    pub admin: Option<Spanned<RawAdmin>>,
}

/// `[caches.NAME]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// Bytes the store may hold: `256MiB`, `1GiB`, or a number of bytes (default 256 MiB).
    pub size: Option<Spanned<RawSize>>,
    /// Largest body stored (default 8 MiB).
    pub max_object_size: Option<Spanned<RawSize>>,
    /// The cache's name in `Cache-Status` (default `proxy-bin`).
    pub name: Option<Spanned<String>>,
    /// How long coalesced misses wait for the first one's response head (default 5s).
    pub coalesce_timeout: Option<Spanned<String>>,
    /// How long stale responses with validators are kept for revalidation (default 10m).
    pub stale_retention: Option<Spanned<String>>,
    /// Longest heuristic freshness (default 24h).
    pub heuristic_max: Option<Spanned<String>>,
}

/// A size: a number of bytes or a string with a unit.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    /// Bytes.
    Bytes(u64),
    /// `64KiB`, `8MiB`, `1GiB`, `512KB`, `10MB`.
    Text(String),
}

/// `[admin]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `ip:port` to bind (keep it on loopback or a private network).
    pub address: Spanned<String>,
    /// When set, requests must carry `Authorization: Bearer <secret>`.
    pub secret: Option<Spanned<String>>,
}

/// `cache = true | false | "store" | { ... }` on a route.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawRouteCache {
    /// `true`: the `default` store and standard rules; `false`: no cache.
    Enabled(bool),
    /// The name of a `[caches.NAME]` store.
    Store(String),
    /// The table form.
    Table(RawRouteCacheTable),
}

/// The table form of a route's `cache`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteCacheTable {
    /// Off with `false` (default true).
    pub enabled: Option<bool>,
    /// The store (default `default`).
    pub store: Option<String>,
    /// Largest body stored for this route (default: the store's).
    pub max_object_size: Option<RawSize>,
    /// Non-standard: freshness for storable responses that carry none.
    pub default_ttl: Option<String>,
    /// Request header fields that join the cache key.
    pub key_headers: Option<Vec<String>>,
}

/// `[log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `RUST_LOG`-style filter for the application log (the environment variable wins).
    pub level: Option<Spanned<String>>,
    /// `combined` (default), `json` or `off`.
    pub access_log: Option<Spanned<String>>,
}

/// `[proxy]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    /// Add `X-Forwarded-For/Proto/Host` (default true).
    pub x_forwarded: Option<bool>,
    /// Add `X-Real-IP` (default true).
    pub x_real_ip: Option<bool>,
    /// Add RFC 7239 `Forwarded` (default false).
    pub forwarded: Option<bool>,
    /// `Via` pseudonym; no `Via` when absent.
    pub via: Option<Spanned<String>>,
    /// Longest request target (414 above).
    pub max_uri_bytes: Option<usize>,
    /// Largest header section (431 above).
    pub max_header_bytes: Option<usize>,
    /// Most header fields (431 above).
    pub max_headers: Option<usize>,
    /// Largest request body (413 above).
    pub max_body_bytes: Option<u64>,
    /// Time allowed for a request head (408 after).
    pub header_read_timeout: Option<Spanned<String>>,
    /// Idle keep-alive connection lifetime.
    pub keepalive_timeout: Option<Spanned<String>>,
    /// Longest graceful drain on shutdown.
    pub shutdown_timeout: Option<Spanned<String>>,
}

/// `[[listeners]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// `ip:port` to bind.
    pub address: Spanned<String>,
    /// Cleartext listeners: also accept HTTP/2 with prior knowledge (default false).
    pub h2c: Option<bool>,
    /// Cleartext listeners: answer everything with 308 to `https://` on this port.
    pub redirect_https: Option<Spanned<u16>>,
    /// TLS listeners: `Strict-Transport-Security` value added to responses.
    pub hsts: Option<Spanned<String>>,
    /// Terminate TLS on this listener.
    pub tls: Option<Spanned<RawTls>>,
    /// TLS listeners: also serve HTTP/3 on the same port over UDP.
    pub http3: Option<Spanned<RawListenerHttp3>>,
}

/// `http3 = true` or `http3 = { ... }` on a listener.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawListenerHttp3 {
    /// `http3 = true`: on, with the defaults.
    Enabled(bool),
    /// `http3 = { alt_svc = true, alt_svc_max_age = "24h", early_data = false }`.
    Table(RawListenerHttp3Table),
}

/// The table form of a listener's `http3`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerHttp3Table {
    /// Advertise HTTP/3 with `Alt-Svc` on this listener's TCP responses (default true).
    pub alt_svc: Option<bool>,
    /// `ma` of the `Alt-Svc` advertisement (default 24h).
    pub alt_svc_max_age: Option<String>,
    /// Accept 0-RTT early data (default false); unsafe methods in it get 425.
    pub early_data: Option<bool>,
}

/// `[listeners.tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// Certificates, selected by SNI; the first is the default.
    pub certificates: Vec<Spanned<RawCertificate>>,
    /// `default` (serve the first certificate) or `refuse` (fail the handshake) for clients
    /// that send no SNI or an unknown name.
    pub unknown_sni: Option<Spanned<String>>,
    /// Protocols offered by ALPN, in preference order: `h2`, `http/1.1`.
    pub alpn: Option<Vec<Spanned<String>>>,
    /// CA bundle that client certificates must chain to (enables mTLS).
    pub client_ca: Option<Spanned<String>>,
    /// `required` (default when `client_ca` is set) or `optional`.
    pub client_auth: Option<Spanned<String>>,
    /// Serve requests whose Host belongs to another certificate than the SNI (default false:
    /// 421 Misdirected Request).
    pub allow_domain_fronting: Option<bool>,
    /// How often certificate files are checked for changes (default 5s; `0s` disables).
    pub watch_interval: Option<Spanned<String>>,
}

/// One `[[listeners.tls.certificates]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    /// Host names served with this certificate (`*.example.com` wildcards allowed).
    pub names: Vec<Spanned<String>>,
    /// PEM certificate chain, leaf first.
    pub cert: Spanned<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Spanned<String>,
}

/// `[http2]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp2 {
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_concurrent_streams: Option<u32>,
    /// Per-stream receive window.
    pub initial_stream_window: Option<u32>,
    /// Connection receive window.
    pub initial_connection_window: Option<u32>,
    /// SETTINGS_MAX_FRAME_SIZE.
    pub max_frame_size: Option<Spanned<u32>>,
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    pub max_header_list_size: Option<u32>,
    /// Remotely reset streams waiting for accept before GOAWAY.
    pub max_pending_accept_reset_streams: Option<usize>,
    /// Streams reset for client errors before GOAWAY (MadeYouReset).
    pub max_local_error_reset_streams: Option<usize>,
    /// Window over which flood counters run.
    pub flood_window: Option<Spanned<String>>,
    /// SETTINGS frames per flood window.
    pub max_settings: Option<u32>,
    /// PING frames per flood window.
    pub max_pings: Option<u32>,
    /// RST_STREAM frames per flood window (Rapid Reset).
    pub max_resets: Option<u32>,
    /// Empty frames per flood window.
    pub max_empty_frames: Option<u32>,
    /// CONTINUATION frames per header block.
    pub max_continuations: Option<u32>,
    /// PRIORITY frames per flood window.
    pub max_priority: Option<u32>,
    /// Longest wait for a client to open its window for a response.
    pub send_stall_timeout: Option<Spanned<String>>,
}

/// `[http3]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp3 {
    /// Request streams a client may have open at once.
    pub max_concurrent_streams: Option<u32>,
    /// Unidirectional streams a client may have open at once (at least 3).
    pub max_concurrent_uni_streams: Option<Spanned<u32>>,
    /// Per-stream receive window.
    pub stream_receive_window: Option<u32>,
    /// Connection receive window.
    pub connection_receive_window: Option<u32>,
    /// Response bytes buffered per connection.
    pub send_window: Option<u64>,
    /// SETTINGS_MAX_FIELD_SECTION_SIZE.
    pub max_field_section_size: Option<u64>,
    /// QUIC connections served at once.
    pub max_connections: Option<usize>,
    /// `under-load` (default), `always` or `never`: when clients are sent a Retry.
    pub address_validation: Option<Spanned<String>>,
    /// Handshakes in progress at which `under-load` starts sending Retry.
    pub retry_pending_handshakes: Option<usize>,
    /// Longest handshake.
    pub handshake_timeout: Option<Spanned<String>>,
    /// Connection idle time before GOAWAY; also the QUIC idle timeout.
    pub idle_timeout: Option<Spanned<String>>,
    /// Longest wait for a client to extend flow control for a response.
    pub send_stall_timeout: Option<Spanned<String>>,
}

/// `[upstreams.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Endpoints: `"host:port"` or `{ address = "host:port", weight = N }`.
    pub endpoints: Vec<Spanned<RawEndpoint>>,
    /// Balancing algorithm.
    pub balancer: Option<Spanned<String>>,
    /// Consistent-hash key: `client_ip`, `header:NAME` or `cookie:NAME`.
    pub hash_key: Option<Spanned<String>>,
    /// Failures within `fail_timeout` that eject an endpoint (0 disables).
    pub max_fails: Option<u32>,
    /// Failure window and ejection time.
    pub fail_timeout: Option<Spanned<String>>,
    /// Attempts one request may make (routes' default `retry.attempts`).
    pub max_attempts: Option<u32>,
    /// Share (percent) of primary endpoints that must be available; below it requests are
    /// balanced over all of them (panic mode; 0 disables).
    pub panic_threshold: Option<Spanned<u8>>,
    /// Ramp a recovered endpoint's weight up over this time: `"30s"` or a table.
    pub slow_start: Option<Spanned<RawSlowStart>>,
    /// Active health checks.
    pub health_check: Option<Spanned<RawHealthCheck>>,
    /// Passive outlier detection beyond `max_fails`.
    pub outlier: Option<Spanned<RawOutlier>>,
    /// Circuit-breaker limits.
    pub circuit_breaker: Option<Spanned<RawCircuitBreaker>>,
    /// Retry budget.
    pub retry_budget: Option<Spanned<RawRetryBudget>>,
    /// Connect timeout.
    pub connect_timeout: Option<Spanned<String>>,
    /// Time to the response head.
    pub response_header_timeout: Option<Spanned<String>>,
    /// Longest pause inside a response body.
    pub idle_timeout: Option<Spanned<String>>,
    /// Idle pooled connections kept per endpoint.
    pub keepalive: Option<usize>,
    /// Lifetime of an idle pooled connection.
    pub keepalive_timeout: Option<Spanned<String>>,
    /// `http1` (default), `http2`, or `auto` (ALPN; needs `tls`).
    pub protocol: Option<Spanned<String>>,
    /// Reach the endpoints over TLS.
    pub tls: Option<Spanned<RawUpstreamTls>>,
}

/// `[upstreams.NAME.tls]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// CA bundle to verify endpoints against (default: the system roots).
    pub ca: Option<Spanned<String>>,
    /// Name sent in SNI and verified in the certificate (default: the endpoint's host).
    pub server_name: Option<Spanned<String>>,
    /// Client certificate chain to present.
    pub cert: Option<Spanned<String>>,
    /// Its private key.
    pub key: Option<Spanned<String>>,
}

/// One endpoint entry.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawEndpoint {
    /// `"host:port"`
    Address(String),
    /// `{ address = "host:port", weight = 2 }`
    Detailed {
        /// `host:port`
        address: String,
        /// Balancing weight (default 1).
        weight: Option<u32>,
        /// Used only when no primary endpoint is available (default false).
        backup: Option<bool>,
    },
}

/// `set`/`add`/`remove` header edits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderRules {
    /// Replace or create.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Append.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Delete.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `[[servers]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Host names (`*.suffix` wildcards allowed).
    #[serde(default)]
    pub names: Vec<String>,
    /// Serve hosts that match no server.
    #[serde(default)]
    pub default: bool,
    /// Request header edits for every route.
    pub request_headers: Option<Spanned<RawHeaderRules>>,
    /// Response header edits for every route.
    pub response_headers: Option<Spanned<RawHeaderRules>>,
    /// Routes.
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
}

/// `[[servers.routes]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Prefix match.
    pub prefix: Option<Spanned<String>>,
    /// Exact match.
    pub exact: Option<Spanned<String>>,
    /// Regex match.
    pub regex: Option<Spanned<String>>,
    /// Allowed methods.
    pub methods: Option<Vec<Spanned<String>>>,
    /// Required header values.
    pub headers: Option<Spanned<BTreeMap<String, String>>>,
    /// Upstream to proxy to.
    pub upstream: Option<Spanned<String>>,
    /// Redirect instead of proxying.
    pub redirect: Option<Spanned<RawRedirect>>,
    /// Remove this path prefix before forwarding.
    pub strip_prefix: Option<Spanned<String>>,
    /// Replace the matched `prefix` with this.
    pub replace_prefix: Option<Spanned<String>>,
    /// Regex path rewrite.
    pub regex_rewrite: Option<Spanned<RawRegexRewrite>>,
    /// `pass`, `endpoint`, or a value template for the upstream `Host`.
    pub host: Option<Spanned<String>>,
    /// Request header edits (after the server's).
    pub request_headers: Option<Spanned<RawHeaderRules>>,
    /// Response header edits (after the server's).
    pub response_headers: Option<Spanned<RawHeaderRules>>,
    /// Response caching for this route.
    pub cache: Option<Spanned<RawRouteCache>>,
    /// Retry policy (defaults from the upstream's `max_attempts`).
    pub retry: Option<Spanned<RawRetry>>,
    /// Longest time to the response head, retries included; the deadline upstream
    /// requests inherit.
    pub timeout: Option<Spanned<String>>,
}

/// `slow_start = "30s"` or `{ window = "30s", min_weight_percent = 10 }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSlowStart {
    /// The window.
    Window(String),
    /// The table form.
    Table {
        /// The window.
        window: String,
        /// Weight share the ramp starts from (default 10).
        min_weight_percent: Option<u8>,
    },
}

/// `[upstreams.NAME.health_check]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// `http` (default) or `tcp`.
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    /// HTTP method (default GET).
    pub method: Option<Spanned<String>>,
    /// Path and query (default `/`).
    pub path: Option<Spanned<String>>,
    /// `Host` sent (default: the endpoint's `host:port`).
    pub host: Option<Spanned<String>>,
    /// Passing statuses: numbers or `"200-299"` ranges (default 200-399).
    pub expect: Option<Vec<Spanned<RawStatusRange>>>,
    /// Text the body must contain.
    pub body: Option<Spanned<String>>,
    /// Time between probes (default 5s).
    pub interval: Option<Spanned<String>>,
    /// Random extra delay, at most this (default a fifth of the interval).
    pub jitter: Option<Spanned<String>>,
    /// Probe timeout (default 2s).
    pub timeout: Option<Spanned<String>>,
    /// Passes in a row to recover (default 2).
    pub healthy_threshold: Option<u32>,
    /// Failures in a row to fail (default 3).
    pub unhealthy_threshold: Option<u32>,
    /// `healthy` (default) or `unhealthy`: the state before the first probe.
    pub initial: Option<Spanned<String>>,
}

/// A status or a status range.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawStatusRange {
    /// `204`
    Code(u16),
    /// `"200-299"` or `"204"`
    Text(String),
}

/// `[upstreams.NAME.outlier]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    /// 5xx responses in a row that eject (default 0: off).
    pub consecutive_5xx: Option<u32>,
    /// Failed share (percent) of a window's requests that ejects.
    pub failure_percentage: Option<Spanned<u8>>,
    /// Fewest requests in a window for the percentage rule (default 20).
    pub failure_percentage_min_requests: Option<u32>,
    /// The percentage rule's window (default 10s).
    pub interval: Option<Spanned<String>>,
    /// First ejection's length (default: `fail_timeout`).
    pub base_ejection_time: Option<Spanned<String>>,
    /// Longest ejection (default 300s).
    pub max_ejection_time: Option<Spanned<String>>,
    /// Most endpoints ejected at once, in percent (default 50; one may always be).
    pub max_ejection_percent: Option<Spanned<u8>>,
}

/// `[upstreams.NAME.circuit_breaker]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCircuitBreaker {
    /// Open connections to all endpoints together.
    pub max_connections: Option<u32>,
    /// Requests in flight.
    pub max_requests: Option<u32>,
    /// Requests waiting for a slot when `max_requests` are in flight (default 0).
    pub max_pending: Option<u32>,
    /// Retries in flight.
    pub max_retries: Option<u32>,
}

/// `[upstreams.NAME.retry_budget]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetryBudget {
    /// Retries as a share (percent) of requests over 10 s (default 20).
    pub percent: Option<u32>,
    /// Retries allowed per second whatever the traffic (default 10).
    pub min_per_second: Option<u32>,
}

/// A route's `retry = { ... }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Attempts, the first included (1 disables retries).
    pub attempts: Option<u32>,
    /// Conditions: `connect-failure`, `reset`, `timeout`, `5xx`, `gateway-error`, or status codes.
    pub on: Option<Vec<Spanned<RawStatusRange>>>,
    /// First backoff bound (default 25ms).
    pub backoff: Option<Spanned<String>>,
    /// Largest backoff bound (default 250ms).
    pub max_backoff: Option<Spanned<String>>,
    /// Longest wait for one attempt's response head.
    pub per_try_timeout: Option<Spanned<String>>,
    /// Retry non-idempotent methods after they may have reached the upstream (default false).
    pub non_idempotent: Option<bool>,
    /// Largest request body kept for replay (default 64KiB).
    pub buffer: Option<Spanned<RawSize>>,
}

/// `redirect = { status = 301, location = "..." }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    /// 301, 302, 303, 307 or 308 (default 302).
    pub status: Option<u16>,
    /// `Location` template.
    pub location: String,
}

/// `regex_rewrite = { pattern = "...", replacement = "..." }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegexRewrite {
    /// The regex.
    pub pattern: String,
    /// Replacement with `$1` / `${name}`.
    pub replacement: String,
}

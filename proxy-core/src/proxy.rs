//! The `Proxy` service: runs the request pipeline in the documented order.
//!
//! ```text
//! early (request id, limits, normalisation)
//!   -> route (404 when nothing matches)
//!   -> redirect routes answer here
//!   -> upstream request (hop-by-hop removal, X-Forwarded-*, Via, Host, rewrite, header rules)
//!   -> select endpoint -> connector send
//!        on failure: passive health, retry decision, back to select
//!   -> upstream response (hop-by-hop removal, Via, header rules, upgrade join)
//!   -> log (always, when the response body ends or is dropped)
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use tokio::time::Instant;

use crate::access_log::{AccessEntry, ResponseBody};
use crate::balance::hash_key;
use crate::body::{self, ProxyBody};
use crate::breaker::{Overflow, RetryPermit};
use crate::cache::{CacheLog, CacheTarget, Origin, UpstreamInfo};
use crate::config::{HostRewrite, ProxyConfig, ProxyRoute, RouteAction};
use crate::conn::{ConnInfo, EarlyData, ListenerPolicy, Scheme};
use crate::connector::ConnectOptions;
use crate::error::{ProxyError, SendError, UpstreamError};
use crate::headers::{TakesTrailers, X_REQUEST_ID, remove_hop_by_hop, upgrade_request};
use crate::health::Outcome;
use crate::replay::Replay;
use crate::request_id;
use crate::retry::{GRPC_TIMEOUT, RetryPolicy, grpc_timeout_value, parse_grpc_timeout};
use crate::rewrite::normalize_path;
use crate::route::{PathMatch, RouteMatch};
use crate::template::Vars;
use crate::upgrade::PendingUpgrade;
use crate::upload::{Expired, TrackedUpload, UploadProgress, await_response};
use crate::upstream::{HashKey, Upstream};
use std::time::Duration;

/// The protocol-free reverse proxy, as a service from request to response.
///
/// Cheap to clone; never fails (errors become responses); reads its configuration from an
/// [`ArcSwap`], so [`Proxy::reload`] is one atomic pointer swap and requests in flight keep the
/// configuration they started with.
#[derive(Clone)]
pub struct Proxy {
    config: Arc<ArcSwap<ProxyConfig>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").finish_non_exhaustive()
    }
}

/// The request head as it will be sent upstream, kept to replay a request on another endpoint.
#[derive(Clone)]
struct UpstreamHead {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    takes_trailers: bool,
}

impl UpstreamHead {
    fn into_request(self, body: ProxyBody) -> Request<ProxyBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers;
        if self.takes_trailers {
            req.extensions_mut().insert(TakesTrailers);
        }
        req
    }
}

/// A client upgrade request waiting for the upstream's answer.
struct ClientUpgrade {
    pending: PendingUpgrade,
    protocol: HeaderValue,
}

impl Proxy {
    /// A proxy serving `config`.
    pub fn new(config: ProxyConfig) -> Self {
        Proxy {
            config: Arc::new(ArcSwap::from_pointee(config)),
        }
    }

    /// Replaces the configuration; requests already running finish on the old one.
    pub fn reload(&self, config: ProxyConfig) {
        self.config.store(Arc::new(config));
    }

    /// The configuration currently served.
    pub fn config(&self) -> Arc<ProxyConfig> {
        self.config.load_full()
    }

    /// Handles one request from start to finish.
    pub async fn handle(&self, mut req: Request<ProxyBody>) -> Response<ProxyBody> {
        let started = Instant::now();
        let config = self.config.load_full();
        let conn = req
            .extensions()
            .get::<Arc<ConnInfo>>()
            .cloned()
            .unwrap_or_else(unknown_conn);
        let request_id = match req.headers().get(X_REQUEST_ID) {
            Some(v) if request_id::is_valid(v) => v.clone(),
            _ => {
                let id = request_id::generate();
                req.headers_mut().insert(X_REQUEST_ID, id.clone());
                id
            }
        };
        let mut entry = Box::new(AccessEntry {
            started,
            remote: conn.peer,
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            host: req.headers().get(header::HOST).cloned(),
            referer: req.headers().get(header::REFERER).cloned(),
            user_agent: req.headers().get(header::USER_AGENT).cloned(),
            request_id: request_id.clone(),
            status: StatusCode::OK,
            upstream: None,
            upstream_header_time: None,
            attempts: 0,
            error: None,
            cache: None,
        });
        let outcome = pipeline(&config, &conn, req, &mut entry).await;
        let (mut resp, in_flight, idle) = match outcome {
            Ok(done) => (done.response, done.in_flight, done.idle),
            Err(err) => {
                entry.error = Some(err.code());
                tracing::debug!(
                    request_id = request_id.to_str().unwrap_or("-"),
                    error = %err,
                    code = err.code(),
                    status = err.status().as_u16(),
                    "request answered by the proxy"
                );
                (err.to_response(), None, None)
            }
        };
        resp.headers_mut().insert(X_REQUEST_ID, request_id);
        if entry.version != Version::HTTP_3
            && let Some(alt_svc) = conn.listener.as_ref().and_then(|l| l.alt_svc.as_ref())
        {
            resp.headers_mut().insert(header::ALT_SVC, alt_svc.clone());
        }
        if conn.scheme == Scheme::Https
            && let Some(hsts) = conn.listener.as_ref().and_then(|l| l.hsts.as_ref())
            && !resp
                .headers()
                .contains_key(header::STRICT_TRANSPORT_SECURITY)
        {
            resp.headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
        entry.status = resp.status();
        resp.map(|b| body::boxed(ResponseBody::new(b, idle, in_flight, Some(entry))))
    }
}

impl tower_service::Service<Request<ProxyBody>> for Proxy {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ProxyBody>) -> Self::Future {
        let proxy = self.clone();
        Box::pin(async move { Ok(proxy.handle(req).await) })
    }
}

fn unknown_conn() -> Arc<ConnInfo> {
    let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    Arc::new(ConnInfo::plain(any, any, 0))
}

/// A finished upstream exchange: the response plus what its body wrapper must keep alive.
struct Relayed {
    response: Response<ProxyBody>,
    in_flight: Option<crate::endpoint::InFlight>,
    idle: Option<std::time::Duration>,
}

impl From<Response<ProxyBody>> for Relayed {
    fn from(response: Response<ProxyBody>) -> Self {
        Relayed {
            response,
            in_flight: None,
            idle: None,
        }
    }
}

async fn pipeline(
    config: &Arc<ProxyConfig>,
    conn: &Arc<ConnInfo>,
    mut req: Request<ProxyBody>,
    entry: &mut AccessEntry,
) -> Result<Relayed, ProxyError> {
    // Early phase: limits and normalisation.
    let limits = &config.settings.limits;
    if req.uri().path_and_query().map_or(0, |pq| pq.as_str().len()) > limits.max_uri_len {
        return Err(ProxyError::UriTooLong);
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > limits.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge);
    }
    if let Some(max) = limits.max_body_bytes
        && content_length(req.headers()).is_some_and(|len| len > max)
    {
        return Err(ProxyError::PayloadTooLarge);
    }
    // RFC 8470: early data can be replayed, so only safe methods may act on it, and the
    // upstream is told so it can answer 425 itself.
    if req.extensions().get::<EarlyData>().is_some() {
        if !req.method().is_safe() {
            return Err(ProxyError::TooEarly);
        }
        req.headers_mut().insert(
            crate::multiplexed::EARLY_DATA,
            HeaderValue::from_static("1"),
        );
    }
    if let Some(path) = normalize_path(req.uri().path()) {
        let pq = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let pq = PathAndQuery::try_from(pq).map_err(|_| ProxyError::BadRequest("invalid path"))?;
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = Some(pq);
        *req.uri_mut() =
            Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("invalid path"))?;
    }

    // Route. RFC 9112 section 3.2.2: an absolute-form target's authority overrides Host.
    let host = match req.uri().authority() {
        Some(a) => a.as_str().to_owned(),
        None => req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_owned(),
    };
    if let Some(policy) = &conn.listener
        && let Some(resp) = listener_policy(policy, conn, &host, &req)?
    {
        return Ok(resp.into());
    }
    let routed = config
        .routes
        .find(&host, req.method(), req.uri().path(), req.headers())
        .ok_or(ProxyError::NoRoute)?;
    let route_host = lowercase(crate::route::host_without_port(&host));
    // Regex captures cost an allocation each; compute them only for templates that use them.
    let captures = if action_uses_captures(&routed.route.action) {
        captures_for(&routed, req.uri().path())
    } else {
        Vec::new()
    };
    let capture_refs: Vec<Option<&str>> = captures.iter().map(|c| c.as_deref()).collect();

    if let Some(resp) = max_forwards(&mut req) {
        return Ok(resp.into());
    }

    match &routed.route.action {
        RouteAction::Redirect(redirect) => {
            let vars = Vars {
                method: req.method(),
                uri: req.uri(),
                headers: req.headers(),
                host: &route_host,
                conn,
                request_id: entry.request_id.to_str().unwrap_or(""),
                captures: &capture_refs,
            };
            let location = redirect.location.render(&vars);
            let location = HeaderValue::from_str(&location)
                .map_err(|_| ProxyError::BadRequest("redirect location is not a valid header"))?;
            let mut resp = Response::new(body::empty());
            *resp.status_mut() = redirect.status;
            resp.headers_mut().insert(header::LOCATION, location);
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            Ok(resp.into())
        }
        RouteAction::Proxy(route) => match &route.cache {
            Some(cache) => {
                let target = CacheTarget {
                    scheme: conn.scheme,
                    authority: lowercase(&host).into_owned(),
                    path_and_query: req
                        .uri()
                        .path_and_query()
                        .map_or("/", |pq| pq.as_str())
                        .to_owned(),
                };
                let origin = OriginContext {
                    config: config.clone(),
                    conn: conn.clone(),
                    route: route.clone(),
                    route_host: route_host.clone().into_owned(),
                    captures: captures.clone(),
                    request_id: entry.request_id.clone(),
                    started: entry.started,
                }
                .into_origin();
                let resp = cache.serve(target, req, origin).await?;
                let (mut parts, body) = resp.into_parts();
                if let Some(info) = parts.extensions.get::<UpstreamInfo>() {
                    entry.upstream = Some(info.addr);
                    entry.upstream_header_time = Some(info.header_time);
                    entry.attempts = info.attempts;
                }
                entry.cache = parts.extensions.get::<CacheLog>().map(|c| c.0);
                response_rules(
                    &mut parts.headers,
                    route,
                    conn,
                    &route_host,
                    &capture_refs,
                    entry,
                );
                Ok(Response::from_parts(parts, body).into())
            }
            None => {
                proxy_to_upstream(
                    config,
                    conn,
                    req,
                    route,
                    &route_host,
                    &capture_refs,
                    entry,
                    true,
                )
                .await
            }
        },
    }
}

/// What the origin function of a cached route needs, owned so that a cache can revalidate in
/// the background after the client's request has finished.
#[derive(Clone)]
struct OriginContext {
    config: Arc<ProxyConfig>,
    conn: Arc<ConnInfo>,
    route: Arc<ProxyRoute>,
    route_host: String,
    captures: Vec<Option<String>>,
    request_id: HeaderValue,
    started: Instant,
}

impl OriginContext {
    fn into_origin(self) -> Origin {
        Origin::new(move |req| {
            let ctx = self.clone();
            Box::pin(async move { ctx.fetch(req).await })
        })
    }

    /// The upstream half of the pipeline, as [`proxy_to_upstream`] runs it for uncached routes,
    /// minus the route's response rules (the core applies those after the cache).
    async fn fetch(self, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ProxyError> {
        let mut entry = AccessEntry {
            started: self.started,
            remote: self.conn.peer,
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            host: None,
            referer: None,
            user_agent: None,
            request_id: self.request_id.clone(),
            status: StatusCode::OK,
            upstream: None,
            upstream_header_time: None,
            attempts: 0,
            error: None,
            cache: None,
        };
        let captures: Vec<Option<&str>> = self.captures.iter().map(|c| c.as_deref()).collect();
        let relayed = proxy_to_upstream(
            &self.config,
            &self.conn,
            req,
            &self.route,
            &self.route_host,
            &captures,
            &mut entry,
            false,
        )
        .await?;
        let (mut parts, body) = relayed.response.into_parts();
        if let (Some(addr), Some(header_time)) = (entry.upstream, entry.upstream_header_time) {
            parts.extensions.insert(UpstreamInfo {
                addr,
                header_time,
                attempts: entry.attempts,
            });
        }
        let body = body::boxed(ResponseBody::new(
            body,
            relayed.idle,
            relayed.in_flight,
            None,
        ));
        Ok(Response::from_parts(parts, body))
    }
}

/// The listener's own rules, before routing: the HTTPS redirect and the SNI guard.
fn listener_policy(
    policy: &ListenerPolicy,
    conn: &ConnInfo,
    host: &str,
    req: &Request<ProxyBody>,
) -> Result<Option<Response<ProxyBody>>, ProxyError> {
    let name = crate::route::host_without_port(host);
    match conn.scheme {
        Scheme::Http => {
            let Some(port) = policy.https_redirect_port else {
                return Ok(None);
            };
            if name.is_empty() {
                return Err(ProxyError::BadRequest("no host to redirect to"));
            }
            let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
            let location = if port == 443 {
                format!("https://{name}{pq}")
            } else {
                format!("https://{name}:{port}{pq}")
            };
            let location = HeaderValue::from_str(&location)
                .map_err(|_| ProxyError::BadRequest("invalid host for redirect"))?;
            let mut resp = Response::new(body::empty());
            *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
            resp.headers_mut().insert(header::LOCATION, location);
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            Ok(Some(resp))
        }
        Scheme::Https => {
            if let (Some(guard), Some(sni)) = (&policy.sni_guard, &conn.sni)
                && !guard.same_site(sni, &lowercase(name))
            {
                return Err(ProxyError::Misdirected);
            }
            Ok(None)
        }
    }
}

/// The methods the proxy answers for itself as a final recipient (`Allow`).
const ALLOW: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH";

/// RFC 9110 section 7.6.2: "Each intermediary that receives a TRACE or OPTIONS request
/// containing a Max-Forwards header field MUST check and update its value prior to forwarding
/// the request. If the received value is zero (0), the intermediary MUST NOT forward the
/// request; instead, the intermediary MUST respond as the final recipient."
///
/// As the final recipient, OPTIONS gets 200 with `Allow`; TRACE gets 405, because echoing
/// requests back (cross-site tracing) is not something a public proxy should do.
fn max_forwards(req: &mut Request<ProxyBody>) -> Option<Response<ProxyBody>> {
    if *req.method() != Method::OPTIONS && *req.method() != Method::TRACE {
        return None;
    }
    let value = req.headers().get(header::MAX_FORWARDS)?;
    let Some(n) = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    else {
        // An invalid value is ignored, as if absent.
        return None;
    };
    if n > 0 {
        req.headers_mut()
            .insert(header::MAX_FORWARDS, HeaderValue::from(n - 1));
        return None;
    }
    let mut resp = Response::new(body::empty());
    if *req.method() == Method::TRACE {
        *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    }
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(ALLOW));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    Some(resp)
}

/// The host as routed on, lowercased without allocating when it already is.
fn lowercase(host: &str) -> std::borrow::Cow<'_, str> {
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

/// True when any template of the route refers to `$1`..`$9`.
fn action_uses_captures(action: &RouteAction) -> bool {
    match action {
        RouteAction::Redirect(r) => r.location.uses_captures(),
        RouteAction::Proxy(p) => {
            p.request_headers.uses_captures()
                || p.response_headers.uses_captures()
                || matches!(&p.host, HostRewrite::Value(v) if v.uses_captures())
        }
    }
}

/// Regex captures of the matched route, computed only when a regex route matched.
fn captures_for<T>(routed: &RouteMatch<'_, T>, path: &str) -> Vec<Option<String>> {
    match &routed.route.path {
        PathMatch::Regex(re) => re
            .captures(path)
            .map(|c| c.iter().map(|m| m.map(|m| m.as_str().to_owned())).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[allow(clippy::too_many_arguments)]
async fn proxy_to_upstream(
    config: &ProxyConfig,
    conn: &Arc<ConnInfo>,
    req: Request<ProxyBody>,
    route: &ProxyRoute,
    route_host: &str,
    captures: &[Option<&str>],
    entry: &mut AccessEntry,
    apply_rules: bool,
) -> Result<Relayed, ProxyError> {
    let upstream = &route.upstream;
    let forwarding = &config.settings.forwarding;
    let (mut parts, body) = req.into_parts();

    let client_upgrade = match (
        upgrade_request(&parts.headers).cloned(),
        parts.extensions.remove::<PendingUpgrade>(),
    ) {
        (Some(protocol), Some(pending)) if parts.version == Version::HTTP_11 => {
            Some(ClientUpgrade { pending, protocol })
        }
        _ => None,
    };

    // Render everything that reads the client's request before the headers change.
    let hash = request_hash(upstream, &parts.headers, conn);
    // RFC 9112 section 3.2.2: "When a proxy receives a request with an absolute-form of
    // request-target, the proxy MUST ignore the received Host header field (if any) and instead
    // replace it with the host information of the request-target."
    let original_host = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    };
    let request_id = entry.request_id.clone();
    let (rendered, host_value, new_path) = {
        let vars = Vars {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
            host: route_host,
            conn,
            request_id: request_id.to_str().unwrap_or(""),
            captures,
        };
        let host_value = match &route.host {
            HostRewrite::Pass => original_host.clone(),
            HostRewrite::Endpoint => None,
            HostRewrite::Value(t) => t.value(&vars),
        };
        (
            route.request_headers.render(&vars),
            host_value,
            route.rewrite.apply(parts.uri.path()),
        )
    };

    // Origin form for the upstream; without a rewrite the client's path and query are reused
    // as they are (a reference-counted clone, no formatting).
    let uri = match (new_path, parts.uri.path_and_query()) {
        (None, Some(pq)) => Uri::from(pq.clone()),
        (new_path, _) => {
            let path = new_path.as_deref().unwrap_or_else(|| parts.uri.path());
            let target = match parts.uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path.to_owned(),
            };
            Uri::try_from(target).map_err(|_| ProxyError::BadRequest("invalid rewritten path"))?
        }
    };

    let mut headers = std::mem::take(&mut parts.headers);
    // TE is hop-by-hop, but `trailers` in it says the client takes trailers; connectors whose
    // protocol needs to know (gRPC servers over HTTP/2 require `te: trailers`) see the marker.
    let takes_trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    remove_hop_by_hop(&mut headers);
    forwarding.apply(&mut headers, conn, original_host.as_ref());
    forwarding.apply_via(&mut headers, parts.version);
    if let Some(h) = host_value {
        headers.insert(header::HOST, h);
    }
    rendered.apply(&mut headers);
    if let Some(up) = &client_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, up.protocol.clone());
    }

    let body = match config.settings.limits.max_body_bytes {
        Some(max) => body::boxed(http_body_util::Limited::new(body, max as usize)),
        None => body,
    };
    let head = UpstreamHead {
        method: parts.method,
        uri,
        version: parts.version,
        headers,
        takes_trailers,
    };
    let policy = upstream.policy();
    let retry = &route.retry;
    let started = Instant::now();
    // The request's deadline: the route's overall timeout, and the client's own gRPC
    // deadline when it sent one; what is left of it is what each attempt gets.
    let grpc_deadline = parse_grpc_timeout(&head.headers).and_then(|t| started.checked_add(t));
    let route_deadline = retry.timeout.and_then(|t| entry.started.checked_add(t));
    let deadline = match (route_deadline, grpc_deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let admission_wait = deadline.map_or(policy.timeouts.connect, |d| {
        d.saturating_duration_since(started)
            .min(policy.timeouts.connect)
    });
    let mut permit = match upstream.breaker().admit(admission_wait).await {
        Ok(p) => Some(p),
        Err(overflow) => {
            tracing::warn!(
                upstream = upstream.name(),
                reason = overflow.as_str(),
                request_id = entry.request_id.to_str().unwrap_or("-"),
                "circuit breaker refused the request"
            );
            return Err(ProxyError::CircuitOpen {
                reason: overflow.as_str(),
            });
        }
    };
    upstream.budget().deposit(Instant::now());

    let body_empty = body::is_empty(&body);
    let progress = UploadProgress::new(body_empty);
    let body = body::boxed(TrackedUpload::new(body, progress.clone()));
    let resendable = retry.attempts > 1 && retry.may_resend(&head.method);
    // Only a body that may be sent again is kept for replay.
    let (first_body, replay) = if body_empty || !resendable {
        (body, None)
    } else {
        let r = Replay::new(body, retry.buffer);
        (body::boxed(r.attempt()), Some(r))
    };
    let retry_head = resendable.then(|| head.clone());
    let mut next: Option<Request<ProxyBody>> = Some(head.into_request(first_body));
    let mut tried: Vec<usize> = Vec::with_capacity(2);
    let mut last_error: Option<UpstreamError> = None;
    let mut retry_permit: Option<RetryPermit> = None;
    let mut slow_endpoint = false;

    while let Some(mut req) = next.take() {
        let now = Instant::now();
        let left = deadline.map(|d| d.saturating_duration_since(now));
        if left.is_some_and(|l| l.is_zero()) {
            return Err(ProxyError::DeadlineExceeded);
        }
        // Untried endpoints first; a tried one again only when every one was, and not right
        // after it timed out on the upstream's own timeouts, which would likely make the
        // client wait that long again (a route's shorter per-try timeout is meant to be
        // retried).
        let picked = upstream.pick(now, &tried, hash).or_else(|| {
            (!tried.is_empty() && !slow_endpoint)
                .then(|| upstream.pick(now, &[], hash))
                .flatten()
        });
        let Some(index) = picked else {
            break;
        };
        tried.push(index);
        entry.attempts += 1;
        let endpoint = &upstream.endpoints()[index];
        // The endpoint's name when the route asks for it, and whenever the client sent no
        // Host (HTTP/1.0): upstream requests are HTTP/1.1 or later, where Host is required.
        let needs_host = matches!(route.host, HostRewrite::Endpoint)
            || !req.headers().contains_key(header::HOST);
        if needs_host && let Ok(h) = HeaderValue::from_str(endpoint.authority().as_str()) {
            req.headers_mut().insert(header::HOST, h);
        }
        if let (Some(_), Some(left)) = (grpc_deadline, left) {
            req.headers_mut()
                .insert(GRPC_TIMEOUT, grpc_timeout_value(left));
        }
        let mut in_flight = endpoint.start();
        let timeouts = policy.timeouts;
        let cap = |d: Duration| left.map_or(d, |l| d.min(l));
        let opts = ConnectOptions {
            connect_timeout: cap(timeouts.connect),
        };
        let try_timeout = retry.per_try_timeout.map_or(timeouts.response_header, |t| {
            t.min(timeouts.response_header)
        });
        let header_timeout = cap(try_timeout);
        // Whether a timeout of this attempt would be the request's deadline rather than the
        // endpoint's slowness (which must not count against the endpoint's health).
        let connect_capped = opts.connect_timeout < timeouts.connect;
        let header_capped = header_timeout < try_timeout;
        let mut deadline_hit = false;
        let sent_at = Instant::now();
        let send = upstream.connector().send(endpoint, opts, req);
        let waited = await_response(send, &progress, header_timeout, timeouts.idle);
        let waited = match deadline {
            Some(d) => match tokio::time::timeout_at(d, waited).await {
                Ok(w) => w,
                Err(_) => {
                    deadline_hit = true;
                    Err(Expired::Upstream(SendError::lost(
                        UpstreamError::ResponseTimeout,
                    )))
                }
            },
            None => waited.await,
        };
        let result = match waited {
            Ok(r) => r,
            Err(Expired::Upstream(e)) => Err(e),
            Err(Expired::Client) => {
                tracing::info!(
                    request_id = entry.request_id.to_str().unwrap_or("-"),
                    timeout = ?timeouts.idle,
                    "client stopped sending its request body"
                );
                return Err(ProxyError::ClientTimeout);
            }
        };
        let more = tried.len() < retry.attempts as usize;
        match result {
            Ok(resp) => {
                let now = Instant::now();
                endpoint.observe_latency(now - sent_at, now);
                let status = resp.status();
                let outcome = if status.is_server_error() {
                    Outcome::ServerError
                } else {
                    Outcome::Success
                };
                upstream.record(index, outcome, now);
                if more
                    && retry.retries_status(status)
                    && can_resend(&retry_head, &replay)
                    && let Some(p) = retry_gate(upstream, now, entry, &mut retry_permit)
                    && let Some(again) = resend(&retry_head, &replay)
                {
                    tracing::info!(
                        upstream = upstream.name(),
                        endpoint = %endpoint.addr(),
                        status = status.as_u16(),
                        request_id = entry.request_id.to_str().unwrap_or("-"),
                        "retrying on the upstream's status"
                    );
                    drop(resp);
                    drop(in_flight);
                    retry_permit = Some(p);
                    backoff(retry, tried.len(), deadline).await;
                    next = Some(again);
                    continue;
                }
                drop(retry_permit.take());
                if let Some(p) = permit.take() {
                    in_flight.hold(p);
                }
                entry.upstream = Some(endpoint.addr());
                entry.upstream_header_time = Some(now - entry.started);
                return relay_response(
                    resp,
                    route,
                    config,
                    conn,
                    route_host,
                    captures,
                    entry,
                    client_upgrade,
                    in_flight,
                    apply_rules,
                );
            }
            Err(SendError { error, request }) => {
                drop(in_flight);
                let now = Instant::now();
                if matches!(error, UpstreamError::ConnectionLimit) {
                    let reason = Overflow::MaxConnections.as_str();
                    tracing::warn!(
                        upstream = upstream.name(),
                        reason,
                        request_id = entry.request_id.to_str().unwrap_or("-"),
                        "circuit breaker refused the request"
                    );
                    return Err(ProxyError::CircuitOpen { reason });
                }
                let by_deadline = deadline_hit
                    || (connect_capped && matches!(error, UpstreamError::ConnectTimeout))
                    || (header_capped && matches!(error, UpstreamError::ResponseTimeout));
                if by_deadline {
                    tracing::info!(
                        upstream = upstream.name(),
                        endpoint = %endpoint.addr(),
                        request_id = entry.request_id.to_str().unwrap_or("-"),
                        "request deadline exceeded"
                    );
                    return Err(ProxyError::DeadlineExceeded);
                }
                if error.is_endpoint_failure() {
                    upstream.record(index, Outcome::GatewayFailure, now);
                }
                let per_try_bound = retry
                    .per_try_timeout
                    .is_some_and(|t| t < timeouts.response_header);
                slow_endpoint = matches!(error, UpstreamError::ConnectTimeout)
                    || (matches!(error, UpstreamError::ResponseTimeout) && !per_try_bound);
                tracing::warn!(
                    upstream = upstream.name(),
                    endpoint = %endpoint.addr(),
                    error = %error,
                    cause = crate::error::chain(&error, false),
                    request_id = entry.request_id.to_str().unwrap_or("-"),
                    "upstream attempt failed"
                );
                let unsent = request.is_some();
                let wanted = more
                    && retry.retries_error(&error, unsent)
                    && (unsent || can_resend(&retry_head, &replay));
                if wanted && let Some(p) = retry_gate(upstream, now, entry, &mut retry_permit) {
                    let again = match request {
                        Some(r) => Some(*r),
                        None => resend(&retry_head, &replay),
                    };
                    if again.is_some() {
                        retry_permit = Some(p);
                        backoff(retry, tried.len(), deadline).await;
                        next = again;
                    }
                }
                last_error = Some(error);
            }
        }
    }
    match last_error {
        Some(UpstreamError::ClientBody(e)) if is_length_limit(&*e) => {
            Err(ProxyError::PayloadTooLarge)
        }
        Some(e) => Err(ProxyError::Upstream(e)),
        None => Err(ProxyError::NoHealthyEndpoint {
            retry_after: upstream.retry_after(Instant::now()),
        }),
    }
}

/// True when the request could be sent again after it may have reached the upstream.
fn can_resend(head: &Option<UpstreamHead>, replay: &Option<Replay>) -> bool {
    head.is_some() && replay.as_ref().is_none_or(Replay::can_replay)
}

/// The request for another attempt after the previous one may have reached the upstream:
/// the kept head with an empty body, or with the replayed body while it was all kept. This
/// supersedes the previous attempt's body, so it is called only once the retry is decided.
fn resend(head: &Option<UpstreamHead>, replay: &Option<Replay>) -> Option<Request<ProxyBody>> {
    let head = head.clone()?;
    match replay {
        None => Some(head.into_request(body::empty())),
        Some(r) => r.try_attempt().map(|b| head.into_request(body::boxed(b))),
    }
}

/// Asks the upstream's retry budget and circuit breaker for one retry. The request's previous
/// retry slot is given back first, so that a request never holds two.
fn retry_gate(
    upstream: &Upstream,
    now: Instant,
    entry: &AccessEntry,
    held: &mut Option<RetryPermit>,
) -> Option<RetryPermit> {
    drop(held.take());
    let Some(permit) = upstream.breaker().retry() else {
        tracing::info!(
            upstream = upstream.name(),
            reason = "max_retries",
            request_id = entry.request_id.to_str().unwrap_or("-"),
            "retry refused by the circuit breaker"
        );
        return None;
    };
    if !upstream.budget().try_withdraw(now) {
        tracing::info!(
            upstream = upstream.name(),
            reason = "retry_budget",
            request_id = entry.request_id.to_str().unwrap_or("-"),
            "retry refused: the upstream's retry budget is spent"
        );
        return None;
    }
    Some(permit)
}

/// Waits before the retry that follows `attempts` attempts (retry number `attempts`), never
/// past the deadline.
async fn backoff(retry: &RetryPolicy, attempts: usize, deadline: Option<Instant>) {
    let retry_no = u32::try_from(attempts.max(1)).unwrap_or(u32::MAX);
    let wait = retry.backoff(retry_no);
    if wait.is_zero() {
        return;
    }
    let until = Instant::now() + wait;
    tokio::time::sleep_until(deadline.map_or(until, |d| d.min(until))).await;
}

fn is_length_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

fn request_hash(upstream: &Upstream, headers: &HeaderMap, conn: &ConnInfo) -> Option<u64> {
    match upstream.policy().hash_key.as_ref()? {
        HashKey::ClientIp => Some(match conn.peer.ip() {
            std::net::IpAddr::V4(v4) => hash_key(&v4.octets()),
            std::net::IpAddr::V6(v6) => hash_key(&v6.octets()),
        }),
        HashKey::Header(name) => headers.get(name).map(|v| hash_key(v.as_bytes())),
        HashKey::Cookie(name) => cookie_value(headers, name).map(hash_key),
    }
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v.as_bytes())
        })
}

#[allow(clippy::too_many_arguments)]
fn relay_response(
    resp: Response<ProxyBody>,
    route: &ProxyRoute,
    config: &ProxyConfig,
    conn: &Arc<ConnInfo>,
    route_host: &str,
    captures: &[Option<&str>],
    entry: &AccessEntry,
    client_upgrade: Option<ClientUpgrade>,
    in_flight: crate::endpoint::InFlight,
    apply_rules: bool,
) -> Result<Relayed, ProxyError> {
    let (mut parts, body) = resp.into_parts();
    let upgrade_protocol = if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_io = parts.extensions.remove::<PendingUpgrade>();
        match (client_upgrade, upstream_io) {
            (Some(client), Some(upstream_io)) => {
                let protocol = parts
                    .headers
                    .get(header::UPGRADE)
                    .cloned()
                    .unwrap_or(client.protocol);
                join_upgrade(client.pending, upstream_io, entry.request_id.clone());
                Some(protocol)
            }
            _ => {
                return Err(ProxyError::Upstream(UpstreamError::BadResponse(
                    "101 Switching Protocols without an upgrade request".into(),
                )));
            }
        }
    } else {
        None
    };
    remove_hop_by_hop(&mut parts.headers);
    config
        .settings
        .forwarding
        .apply_via(&mut parts.headers, parts.version);
    if apply_rules {
        response_rules(&mut parts.headers, route, conn, route_host, captures, entry);
    }
    if let Some(protocol) = upgrade_protocol {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol);
    }
    // The frontend writes the response in its own protocol version.
    parts.version = Version::HTTP_11;
    Ok(Relayed {
        response: Response::from_parts(parts, body),
        in_flight: Some(in_flight),
        idle: Some(route.upstream.policy().timeouts.idle),
    })
}

/// Applies the route's response header rules.
fn response_rules(
    headers: &mut HeaderMap,
    route: &ProxyRoute,
    conn: &Arc<ConnInfo>,
    route_host: &str,
    captures: &[Option<&str>],
    entry: &AccessEntry,
) {
    if route.response_headers.is_empty() {
        return;
    }
    let empty = HeaderMap::new();
    let vars = Vars {
        method: &entry.method,
        uri: &entry.uri,
        headers: &empty,
        host: route_host,
        conn,
        request_id: entry.request_id.to_str().unwrap_or(""),
        captures,
    };
    route.response_headers.apply(headers, &vars);
}

/// Copies bytes both ways between the client's and the upstream's upgraded connections.
fn join_upgrade(client: PendingUpgrade, upstream: PendingUpgrade, request_id: HeaderValue) {
    let (Some(client), Some(upstream)) = (client.take(), upstream.take()) else {
        return;
    };
    tokio::spawn(async move {
        let rid = request_id.to_str().unwrap_or("-").to_owned();
        let (mut down, mut up) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(request_id = rid, error = %e, "upgrade handover failed");
                return;
            }
        };
        match tokio::io::copy_bidirectional(&mut down, &mut up).await {
            Ok((from_client, from_upstream)) => {
                tracing::debug!(
                    request_id = rid,
                    from_client,
                    from_upstream,
                    "upgraded connection closed"
                )
            }
            Err(e) => tracing::debug!(request_id = rid, error = %e, "upgraded connection failed"),
        }
    });
}

//! The admin listener: cache statistics and purge, on its own (loopback by default) socket.
//!
//! - `GET /cache`: every store's counters as JSON.
//! - `DELETE /cache?url=URL`: removes every variant stored for the absolute `URL`.
//! - `DELETE /cache?prefix=URL`: removes every stored URL that starts with `URL`.
//! - `GET /health`: every upstream's endpoints with their health, circuit-breaker and
//!   retry-budget state, as JSON.
//!
//! With a `secret` configured, every request needs `Authorization: Bearer SECRET`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use proxy_core::balance::Selection;
use proxy_core::conn::Scheme;
use proxy_core::{CacheTarget, Proxy};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::caches::Caches;
use crate::config::AdminSpec;

/// Binds the admin listener and serves it until `stop`.
pub async fn start(
    spec: &AdminSpec,
    caches: Caches,
    proxy: Proxy,
    stop: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(spec.address).await?;
    let local = listener.local_addr()?;
    tracing::info!(address = %local, "admin listener");
    let secret = spec.secret.clone();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let caches = caches.clone();
            let secret = secret.clone();
            let proxy = proxy.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let caches = caches.clone();
                    let secret = secret.clone();
                    let proxy = proxy.clone();
                    async move {
                        Ok::<_, Infallible>(
                            handle(req, &caches, &proxy, secret.as_deref(), peer).await,
                        )
                    }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(error = %e, "admin connection ended");
                }
            });
        }
    });
    Ok(local)
}

async fn handle(
    req: Request<Incoming>,
    caches: &Caches,
    proxy: &Proxy,
    secret: Option<&str>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    if let Some(secret) = secret {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or(b"");
        if !constant_time_eq(given, secret.as_bytes()) {
            tracing::warn!(peer = %peer, "admin request without the right secret");
            return json(
                StatusCode::UNAUTHORIZED,
                r#"{"error":"unauthorized"}"#.into(),
            );
        }
    }
    if req.uri().path() == "/health" {
        return match *req.method() {
            Method::GET => json(StatusCode::OK, health(proxy)),
            _ => json(
                StatusCode::METHOD_NOT_ALLOWED,
                r#"{"error":"use GET"}"#.into(),
            ),
        };
    }
    if req.uri().path() != "/cache" {
        return json(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#.into());
    }
    match *req.method() {
        Method::GET => json(StatusCode::OK, stats(caches).await),
        Method::DELETE | Method::POST => {
            let query = req.uri().query().unwrap_or("");
            let (kind, value) = match query_param(query) {
                Some(p) => p,
                None => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        r#"{"error":"expected ?url=URL or ?prefix=URL"}"#.into(),
                    );
                }
            };
            let Some(key) = normalise(&value) else {
                return json(
                    StatusCode::BAD_REQUEST,
                    r#"{"error":"the URL must be absolute: http(s)://host/path"}"#.into(),
                );
            };
            let purged = match kind {
                Param::Url => caches.purge(&key).await,
                Param::Prefix => caches.purge_prefix(&key),
            };
            tracing::info!(peer = %peer, key, purged, prefix = matches!(kind, Param::Prefix), "cache purge");
            json(StatusCode::OK, format!(r#"{{"purged":{purged}}}"#))
        }
        _ => json(
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"error":"use GET or DELETE"}"#.into(),
        ),
    }
}

enum Param {
    Url,
    Prefix,
}

fn query_param(query: &str) -> Option<(Param, String)> {
    for pair in query.split('&') {
        let Some((k, v)) = pair.split_once('=') else {
            continue;
        };
        let kind = match k {
            "url" => Param::Url,
            "prefix" => Param::Prefix,
            _ => continue,
        };
        return Some((kind, percent_decode(v)?));
    }
    None
}

/// The cache key form of an absolute URL (lowercase authority, no default port).
fn normalise(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let scheme = match uri.scheme_str()? {
        s if s.eq_ignore_ascii_case("http") => Scheme::Http,
        s if s.eq_ignore_ascii_case("https") => Scheme::Https,
        _ => return None,
    };
    let target = CacheTarget {
        scheme,
        authority: uri.authority()?.as_str().to_ascii_lowercase(),
        path_and_query: uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned(),
    };
    // `http://host` becomes `http://host/`, so as a prefix it never matches `http://host.other`.
    Some(proxy_cache::key::primary(&target))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn stats(caches: &Caches) -> String {
    let mut stores = serde_json::Map::new();
    for (name, store) in caches.all() {
        let (entries, bytes) = store.usage().await;
        let s = store.stats();
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        stores.insert(
            name,
            serde_json::json!({
                "entries": entries,
                "bytes": bytes,
                "hits": get(&s.hits),
                "misses": get(&s.misses),
                "revalidations": get(&s.revalidations),
                "stores": get(&s.stores),
                "evictions": get(&s.evictions),
                "coalesced": get(&s.coalesced),
                "stale_on_error": get(&s.stale_on_error),
                "invalidations": get(&s.invalidations),
            }),
        );
    }
    serde_json::json!({ "stores": stores }).to_string()
}

/// Every upstream of the configuration being served, with each endpoint's health.
fn health(proxy: &Proxy) -> String {
    let config = proxy.config();
    let now = tokio::time::Instant::now();
    let mut upstreams = serde_json::Map::new();
    for up in &config.upstreams {
        let endpoints: Vec<serde_json::Value> = up
            .health_view(now)
            .into_iter()
            .map(|(ep, view)| {
                serde_json::json!({
                    "address": ep.addr().to_string(),
                    "name": ep.authority().as_str(),
                    "backup": ep.is_backup(),
                    "weight": ep.weight(),
                    "available": view.available,
                    "checks_failing": view.checks_failing,
                    "ejected_for_ms": view.ejected_for.map(|d| d.as_millis() as u64),
                    "ejections": view.ejections,
                    "weight_factor": view.weight_factor,
                    "transitions": view.transitions,
                    "last_cause": view.last_cause.map(|c| c.as_str()),
                    "outstanding": ep.outstanding(),
                })
            })
            .collect();
        upstreams.insert(
            up.name().to_owned(),
            serde_json::json!({
                "selection": match up.current_selection(now) {
                    Some(Selection::Primary) => "primary",
                    Some(Selection::Backup) => "backup",
                    Some(Selection::Panic) => "panic",
                    None => "none",
                },
                "endpoints": endpoints,
                "breaker_refused": up.breaker().refused(),
                "retry_budget_left": up.budget().remaining(now),
            }),
        );
    }
    serde_json::json!({ "upstreams": upstreams }).to_string()
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_urls_normalise_like_cache_keys() {
        assert_eq!(
            normalise("http://Example.COM:80/a?b=1").as_deref(),
            Some("http://example.com/a?b=1")
        );
        assert_eq!(
            normalise("https://x.test").as_deref(),
            Some("https://x.test/")
        );
        assert_eq!(normalise("/relative"), None);
        assert_eq!(normalise("ftp://x/"), None);
    }

    #[test]
    fn query_values_are_percent_decoded() {
        let (_, v) = query_param("url=http%3A%2F%2Fa%2Fb%3Fc%3D1").unwrap();
        assert_eq!(v, "http://a/b?c=1");
        assert!(query_param("nothing=1").is_none());
    }
}

//! Criterion benches for the cache's per-request work: a hit served from storage (lookup,
//! variant selection, age, response assembly), the key, and Cache-Control parsing.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // bench code panics on purpose

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use proxy_cache::{CacheConfig, CacheStore, HttpCache, directives, key};
use proxy_core::conn::Scheme;
use proxy_core::{CacheHook, CacheTarget, Origin, body};

fn target(path: &str) -> CacheTarget {
    CacheTarget {
        scheme: Scheme::Http,
        authority: "shop.example.com".into(),
        path_and_query: path.into(),
    }
}

fn origin() -> Origin {
    Origin::new(|_req| {
        Box::pin(async {
            let mut resp = Response::new(body::full(vec![b'x'; 1024]));
            let h = resp.headers_mut();
            h.insert(
                "cache-control",
                HeaderValue::from_static("public, max-age=3600"),
            );
            h.insert("etag", HeaderValue::from_static("\"v1\""));
            h.insert("content-type", HeaderValue::from_static("text/plain"));
            h.insert("vary", HeaderValue::from_static("Accept-Encoding"));
            Ok(resp)
        })
    })
}

fn request(path: &str) -> Request<proxy_core::ProxyBody> {
    let mut req = Request::new(body::empty());
    *req.uri_mut() = path.parse().unwrap();
    req.headers_mut()
        .insert("accept-encoding", HeaderValue::from_static("gzip, br"));
    req.headers_mut()
        .insert("host", HeaderValue::from_static("shop.example.com"));
    req
}

fn hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = HttpCache::new(CacheConfig::default(), CacheStore::new(64 << 20));
    rt.block_on(async {
        // Fill 1,000 URIs; the fills run in spawned tasks, so give them a moment.
        for i in 0..1000 {
            let path = format!("/products/{i}");
            let resp = cache
                .serve(target(&path), request(&path), origin())
                .await
                .unwrap();
            resp.into_body().collect().await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let resp = cache
            .serve(target("/products/7"), request("/products/7"), origin())
            .await
            .unwrap();
        let status = resp
            .headers()
            .get("cache-status")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(status.contains("hit"), "warm-up did not store: {status}");
    });
    c.bench_function("cache_hit_1k_body", |b| {
        b.iter(|| {
            rt.block_on(async {
                let resp = cache
                    .serve(target("/products/7"), request("/products/7"), origin())
                    .await
                    .unwrap();
                black_box(resp.into_body().collect().await.unwrap());
            })
        })
    });
}

fn parse(c: &mut Criterion) {
    let mut h = HeaderMap::new();
    h.insert(
        "cache-control",
        HeaderValue::from_static("public, max-age=3600, s-maxage=600, stale-while-revalidate=30"),
    );
    c.bench_function("cache_control_parse", |b| {
        b.iter(|| black_box(directives::parse_response(black_box(&h))))
    });
    let t = target("/products/42?color=red");
    c.bench_function("cache_primary_key", |b| {
        b.iter(|| black_box(key::primary(black_box(&t))))
    });
}

criterion_group!(benches, hit, parse);
criterion_main!(benches);

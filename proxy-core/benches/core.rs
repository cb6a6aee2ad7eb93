//! Criterion benches for the per-request decisions of the core: route matching, balancer
//! selection and header rewriting.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // bench code panics on purpose

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, Uri};
use proxy_core::Endpoint;
use proxy_core::balance::{self, BalancerKind, PickContext};
use proxy_core::conn::ConnInfo;
use proxy_core::headers::{ForwardingHeaders, HeaderRules, remove_hop_by_hop};
use proxy_core::route::{PathMatch, Route, RouteTable, VirtualHost};
use proxy_core::template::Vars;
use regex::Regex;
use tokio::time::Instant;

fn route_table() -> RouteTable<u32> {
    let route = |path: PathMatch, action: u32| Route {
        path,
        methods: vec![],
        headers: vec![],
        action,
    };
    let assets = Regex::new(r"\.(png|jpg|css|js)$").unwrap();
    let mut vhosts = Vec::new();
    for site in 0..50u32 {
        let mut routes = vec![
            route(PathMatch::Exact("/".into()), 0),
            route(PathMatch::Regex(assets.clone()), 1),
        ];
        for p in 0..20u32 {
            routes.push(route(PathMatch::Prefix(format!("/section{p}/")), p + 2));
            routes.push(route(
                PathMatch::Prefix(format!("/section{p}/sub/")),
                p + 100,
            ));
        }
        vhosts.push(VirtualHost {
            names: vec![format!("site{site}.example.com")],
            default: site == 0,
            routes,
        });
    }
    vhosts.push(VirtualHost {
        names: vec!["*.wild.example.com".into()],
        default: false,
        routes: vec![route(PathMatch::Prefix("/".into()), 999)],
    });
    RouteTable::new(vhosts).unwrap()
}

fn bench_routes(c: &mut Criterion) {
    let table = route_table();
    let headers = HeaderMap::new();
    let mut g = c.benchmark_group("route");
    g.bench_function("exact_host_prefix", |b| {
        b.iter(|| {
            table.find(
                black_box("site42.example.com"),
                &Method::GET,
                black_box("/section17/sub/item/123"),
                &headers,
            )
        })
    });
    g.bench_function("wildcard_host", |b| {
        b.iter(|| {
            table.find(
                black_box("a.wild.example.com:8080"),
                &Method::GET,
                black_box("/x"),
                &headers,
            )
        })
    });
    g.bench_function("regex_hit", |b| {
        b.iter(|| {
            table.find(
                black_box("site3.example.com"),
                &Method::GET,
                black_box("/static/app.js"),
                &headers,
            )
        })
    });
    g.finish();
}

fn endpoints(n: usize) -> Vec<Arc<Endpoint>> {
    (0..n)
        .map(|i| {
            let a = format!("127.0.0.1:{}", 9000 + i);
            Arc::new(Endpoint::new(
                a.parse().unwrap(),
                a.parse().unwrap(),
                1 + (i % 3) as u32,
            ))
        })
        .collect()
}

fn bench_balancers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut g = c.benchmark_group("balancer");
    for n in [3usize, 32] {
        let eps = endpoints(n);
        for kind in [
            BalancerKind::RoundRobin,
            BalancerKind::WeightedRoundRobin,
            BalancerKind::LeastRequest,
            BalancerKind::PeakEwma,
            BalancerKind::ConsistentHash,
            BalancerKind::Random,
        ] {
            let b = balance::build(kind, &eps);
            let now = Instant::now();
            let mut key = 0u64;
            g.bench_function(format!("{kind:?}/{n}"), |bench| {
                bench.iter(|| {
                    key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    let ctx = PickContext {
                        hash: Some(key),
                        ..PickContext::new(now)
                    };
                    b.pick(black_box(&eps), &ctx)
                })
            });
        }
    }
    g.finish();
}

fn bench_headers(c: &mut Criterion) {
    let mut base = HeaderMap::new();
    for (n, v) in [
        ("host", "shop.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0",
        ),
        ("accept", "text/html,application/xhtml+xml"),
        ("accept-encoding", "gzip, deflate, br"),
        ("cookie", "session=abc123; theme=dark"),
        ("connection", "keep-alive"),
        ("x-forwarded-for", "203.0.113.9"),
    ] {
        base.insert(n, HeaderValue::from_static(v));
    }
    let conn = ConnInfo::plain(
        "192.0.2.1:5555".parse().unwrap(),
        "127.0.0.1:8080".parse().unwrap(),
        1,
    );
    let forwarding = ForwardingHeaders::default();
    let rules = HeaderRules::parse(
        ["x-internal"],
        [("x-real-ip", "$remote_addr"), ("x-env", "prod")],
        [("x-trace", "$request_id")],
    )
    .unwrap();
    let uri = Uri::from_static("/products/42?ref=home");
    let mut g = c.benchmark_group("headers");
    g.bench_function("hop_by_hop_forwarding_rules", |b| {
        b.iter(|| {
            let mut h = base.clone();
            let host = h.get("host").cloned();
            let rendered = {
                let vars = Vars {
                    method: &Method::GET,
                    uri: &uri,
                    headers: &base,
                    host: "shop.example.com",
                    conn: &conn,
                    request_id: "0123456789abcdef0123456789abcdef",
                    captures: &[],
                };
                rules.render(&vars)
            };
            remove_hop_by_hop(&mut h);
            forwarding.apply(&mut h, &conn, host.as_ref());
            rendered.apply(&mut h);
            black_box(h)
        })
    });
    g.bench_function("clone_only_baseline", |b| {
        b.iter(|| black_box(base.clone()))
    });
    g.finish();
}

criterion_group!(benches, bench_routes, bench_balancers, bench_headers);
criterion_main!(benches);

//! The HTTP cache end to end (RFC 9111, RFC 5861, RFC 9211): a scripted [`Origin`] behind the
//! proxy with `cache = true`, and assertions on what reached the origin, what the client got,
//! and what `Cache-Status` said.
//!
//! Covered: miss then hit with `Age`; revalidation freshened by a 304, and a 304 naming another
//! representation; client preconditions and HEAD answered from storage; `Vary` and `Vary: *`;
//! invalidation by unsafe methods (target, `Location`, `Content-Location`, not on errors);
//! stale-while-revalidate with one background fetch; stale-if-error for a 5xx and a dead
//! origin; coalescing of 1000 concurrent misses, of concurrent revalidations, and of waiters
//! whose leader hung up; `private` never shared; virtual hosts on one upstream keyed apart;
//! route `key_headers` and `default_ttl`; the byte bound under churn; bodies over
//! `max_object_size` streamed unstored and misses streamed as they arrive; admin purge by URL
//! and prefix, behind a secret; `only-if-cached`, `no-store`, request `no-cache`; ranges from a
//! stored response; `Authorization` and `public`.
//!
//! Timing: freshness has one-second resolution, so staleness tests sleep a little over two
//! seconds; everything else polls with deadlines.

// Tests panic on purpose: a failed assertion or setup step is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tests::client::{self, Conn, Resp, empty, full, req};
use tests::origin::{Content, Origin, Script, pattern};
use tests::tls::{H2Client, get as h2_get, send_on};
use tests::{TestProxy, fill, within};
use tokio::time::{Instant, sleep};

/// The `Host` every request sends unless a test says otherwise; the cache key is
/// `http://cache.test/PATH`.
const HOST: &str = "cache.test";

/// One origin `{O}` behind a default server with `cache = true`, a 64 MiB `default` store and
/// an admin listener. `{EXTRA}` is replaced by extra store settings.
const CACHED: &str = r#"
[caches.default]
size = "64MiB"
max_object_size = "{MAX}"

[admin]
address = "127.0.0.1:0"

[upstreams.origin]
endpoints = ["{O}"]

[[servers]]
default = true

[[servers.routes]]
prefix = "/"
upstream = "origin"
cache = true
"#;

/// Longer than a `max-age=1` response needs to be stale by at least one whole second, given
/// one-second `Date` resolution.
const STALE_AFTER: Duration = Duration::from_millis(2200);

fn cached_config(origin: &Origin, max_object_size: &str) -> String {
    fill(CACHED, &[("O", origin.addr())]).replace("{MAX}", max_object_size)
}

async fn cached_proxy(origin: &Origin) -> TestProxy {
    TestProxy::start(&cached_config(origin, "1MiB")).await
}

/// The `Cache-Status` value, or `""`.
fn cs(r: &Resp) -> String {
    r.header("cache-status").unwrap_or("").to_owned()
}

/// True when `Cache-Status` says the response came from storage.
fn is_hit(r: &Resp) -> bool {
    cs(r).contains("; hit")
}

async fn get(c: &mut Conn, path: &str) -> Resp {
    c.get_host(HOST, path).await
}

async fn get_with(c: &mut Conn, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut b = req("GET", HOST, path);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    c.send(b.body(empty()).unwrap()).await
}

async fn send_method(c: &mut Conn, method: &str, path: &str) -> Resp {
    c.send(req(method, HOST, path).body(full("payload")).unwrap())
        .await
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One request to the admin listener, with `Authorization: Bearer token` when given.
async fn admin(proxy: &TestProxy, method: &str, target: &str, token: Option<&str>) -> Resp {
    let addr = proxy.running().admin_addr().expect("an admin listener");
    let mut b = req(method, &addr.to_string(), target);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    client::send(addr, b.body(empty()).unwrap()).await
}

/// The admin statistics of store `store`.
async fn stats(proxy: &TestProxy, store: &str) -> serde_json::Value {
    let r = admin(proxy, "GET", "/cache", None).await;
    assert_eq!(r.status, 200, "GET /cache: {}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("admin JSON");
    v["stores"][store].clone()
}

fn counter(stats: &serde_json::Value, name: &str) -> u64 {
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter `{name}` in {stats}"))
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
async fn eventually<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the store has recorded at least `n` stores (fills finish after the response
/// head is sent, so a hit right after a miss can race the insert).
async fn wait_stores(proxy: &TestProxy, n: u64) {
    let ok = eventually(Duration::from_secs(10), || async {
        counter(&stats(proxy, "default").await, "stores") >= n
    })
    .await;
    assert!(
        ok,
        "the store did not reach {n} stores: {}",
        stats(proxy, "default").await
    );
}

// ---------------------------------------------------------------------------------------------
// 1. Miss, then hit

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miss_is_stored_then_served_as_a_hit_with_age() {
    within(30, "miss then hit", async {
        let origin = Origin::start().await;
        origin.set("/page", Script::ok("hello, cache").cc("max-age=60"));
        let proxy = cached_proxy(&origin).await;
        let mut c = Conn::connect(proxy.addr()).await;

        let first = get(&mut c, "/page").await;
        assert_eq!(first.status, 200);
        let status = cs(&first);
        assert!(
            status.starts_with("proxy-bin;")
                && status.contains("fwd=uri-miss")
                && status.contains("fwd-status=200")
                && status.contains("stored"),
            "first Cache-Status: {status}"
        );
        assert!(!is_hit(&first));
        wait_stores(&proxy, 1).await;

        let second = get(&mut c, "/page").await;
        assert_eq!(second.status, 200);
        assert!(is_hit(&second), "second Cache-Status: {}", cs(&second));
        assert!(!cs(&second).contains("fwd="), "{}", cs(&second));
        let age: u64 = second
            .header("age")
            .expect("a response from storage carries Age")
            .parse()
            .expect("Age is delta-seconds");
        assert!(age <= 5, "Age {age} for a response stored a moment ago");
        let ttl: i64 = cs(&second)
            .split("ttl=")
            .nth(1)
            .and_then(|t| t.split(';').next())
            .and_then(|t| t.trim().parse().ok())
            .expect("hit has a ttl");
        assert!((55..=60).contains(&ttl), "ttl {ttl}");
        assert_eq!(second.body, first.body);
        assert_eq!(second.text(), "hello, cache");
        assert_eq!(origin.count("/page"), 1);

        let s = stats(&proxy, "default").await;
        assert!(
            counter(&s, "hits") >= 1 && counter(&s, "misses") >= 1,
            "{s}"
        );
        assert_eq!(counter(&s, "entries"), 1, "{s}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 2. Revalidation freshened by 304

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_entry_is_revalidated_and_freshened_by_a_304() {
    within(30, "revalidation", async {
        let origin = Origin::start().await;
        origin.set(
            "/doc",
            Script::ok("stored body")
                .cc("max-age=1")
                .header("etag", "\"v1\"")
                .header("x-version", "1")
                .not_modified(&[("x-version", "2"), ("cache-control", "max-age=60")]),
        );
        let proxy = cached_proxy(&origin).await;
        let mut c = Conn::connect(proxy.addr()).await;

        let first = get(&mut c, "/doc").await;
        assert_eq!(first.status, 200);
        assert!(cs(&first).contains("stored"), "{}", cs(&first));
        assert!(
            origin.requests("/doc")[0].header("if-none-match").is_none(),
            "the first request carried a validator it could not have"
        );
        wait_stores(&proxy, 1).await;
        sleep(STALE_AFTER).await;

        let revalidated = get(&mut c, "/doc").await;
        assert_eq!(
            origin.count("/doc"),
            2,
            "a stale entry must go to the origin"
        );
        let cond = origin.requests("/doc")[1].clone();
        assert_eq!(
            cond.header("if-none-match"),
            Some("\"v1\""),
            "revalidation without the stored ETag: {:?}",
            cond.headers
        );
        assert_eq!(revalidated.status, 200, "{}", revalidated.text());
        assert_eq!(revalidated.text(), "stored body");
        assert_eq!(
            revalidated.header_all("x-version"),
            vec!["2"],
            "the 304's fields replace the stored ones"
        );
        let status = cs(&revalidated);
        assert!(
            status.contains("fwd=stale") && status.contains("fwd-status=304"),
            "Cache-Status after revalidation: {status}"
        );

        let after = get(&mut c, "/doc").await;
        assert!(is_hit(&after), "freshened entry not a hit: {}", cs(&after));
        assert_eq!(after.text(), "stored body");
        assert_eq!(after.header_all("x-version"), vec!["2"]);
        assert_eq!(
            origin.count("/doc"),
            2,
            "the freshened entry went to the origin again"
        );
    })
    .await;
}

/// RFC 9111 section 4.3.4: a 304 whose strong validator matches no stored response must not
/// update it. The cache then drops its copy and fetches the same URL again, unconditionally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_for_another_representation_refetches_the_same_url() {
    within(30, "mismatched 304", async {
        let origin = Origin::start().await;
        origin.set(
            "/rep",
            Script::ok("v1").cc("max-age=1").header("etag", "\"a\""),
        );
        let proxy = cached_proxy(&origin).await;
        let mut c = Conn::connect(proxy.addr()).await;
        assert_eq!(get(&mut c, "/rep").await.text(), "v1");
        wait_stores(&proxy, 1).await;
        sleep(STALE_AFTER).await;
        // A storable page at `/`, to show where a refetch that lost its target would land.
        origin.set("/", Script::ok("home page").cc("max-age=60"));
        // The conditional request (If-None-Match: "a") now gets a 304 naming "b".
        origin.set(
            "/rep",
            Script::ok("v2")
                .cc("max-age=60")
                .header("etag", "\"a\"")
                .not_modified(&[("etag", "\"b\""), ("cache-control", "max-age=60")]),
        );
        let r = get(&mut c, "/rep").await;
        assert_eq!(
            origin.count("/"),
            0,
            "the refetch after a mismatched 304 went to `/` instead of `/rep`: the client got \
             {} {:?} for /rep, and the next GET /rep got {:?} ({})",
            r.status,
            r.text(),
            get(&mut c, "/rep").await.text(),
            cs(&get(&mut c, "/rep").await)
        );
        let reqs = origin.requests("/rep");
        assert_eq!(reqs.len(), 3, "initial, conditional, unconditional refetch");
        assert_eq!(reqs[1].header("if-none-match"), Some("\"a\""));
        assert_eq!(
            reqs[2].header("if-none-match"),
            None,
            "the refetch must be unconditional"
        );
        assert_eq!(r.status, 200, "{}", cs(&r));
        assert_eq!(r.text(), "v2");
        assert_eq!(r.header("etag"), Some("\"a\""));
        wait_stores(&proxy, 2).await;
        let again = get(&mut c, "/rep").await;
        assert!(is_hit(&again), "{}", cs(&again));
        assert_eq!(again.text(), "v2");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 3. Client preconditions and HEAD from storage

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_conditionals_and_head_are_answered_from_storage() {
    within(30, "client conditionals", async {
        let origin = Origin::start().await;
        origin.set(
            "/cond",
            Script::ok("conditional body")
                .cc("max-age=60")
                .header("etag", "\"c1\"")
                .header("content-type", "text/plain"),
        );
        origin.set(
            "/cond-first",
            Script::ok("first body")
                .cc("max-age=60")
                .header("etag", "\"f1\""),
        );
        let proxy = cached_proxy(&origin).await;
        let mut c = Conn::connect(proxy.addr()).await;

        assert_eq!(get(&mut c, "/cond").await.status, 200);
        wait_stores(&proxy, 1).await;

        let nm = get_with(&mut c, "/cond", &[("if-none-match", "\"c1\"")]).await;
        assert_eq!(nm.status, 304, "matching If-None-Match: {}", cs(&nm));
        assert!(nm.body.is_empty());
        assert_eq!(nm.header("etag"), Some("\"c1\""));
        assert!(is_hit(&nm), "{}", cs(&nm));

        let weak = get_with(&mut c, "/cond", &[("if-none-match", "W/\"c1\", \"zz\"")]).await;
        assert_eq!(weak.status, 304, "weak comparison for If-None-Match");

        let other = get_with(&mut c, "/cond", &[("if-none-match", "\"other\"")]).await;
        assert_eq!(other.status, 200);
        assert_eq!(other.text(), "conditional body");

        let head = c
            .send(req("HEAD", HOST, "/cond").body(empty()).unwrap())
            .await;
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty(), "HEAD got a body");
        assert_eq!(head.header("etag"), Some("\"c1\""));
        assert_eq!(head.header("content-type"), Some("text/plain"));
        assert_eq!(
            head.header("content-length"),
            Some("16"),
            "HEAD reports the stored GET's length"
        );
        assert!(is_hit(&head), "{}", cs(&head));
        assert_eq!(
            origin.count("/cond"),
            1,
            "conditionals or HEAD reached the origin"
        );

        // A conditional request that misses: the cache sends an unconditional request (so it
        // can store the full response) and answers the precondition itself.
        let first = get_with(&mut c, "/cond-first", &[("if-none-match", "\"f1\"")]).await;
        assert_eq!(first.status, 304, "{}", cs(&first));
        assert_eq!(
            origin.requests("/cond-first")[0].header("if-none-match"),
            None,
            "the client's precondition went upstream on a storable miss"
        );
        wait_stores(&proxy, 2).await;
        let full_body = get(&mut c, "/cond-first").await;
        assert_eq!(full_body.status, 200);
        assert_eq!(full_body.text(), "first body");
        assert!(is_hit(&full_body), "{}", cs(&full_body));
        assert_eq!(origin.count("/cond-first"), 1);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 4. Vary

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_selects_variants_and_vary_star_is_never_served() {
    within(30, "vary", async {
        let origin = Origin::start().await;
        origin.set(
            "/lang",
            Script::content(Content::EchoHeader("accept-language".into()))
                .cc("max-age=60")
                .header("vary", "Accept-Language"),
        );
        origin.set(
            "/star",
            Script::ok("star").cc("max-age=60").header("vary", "*"),
        );
        let proxy = cached_proxy(&origin).await;
        let mut c = Conn::connect(proxy.addr()).await;

        let en = get_with(&mut c, "/lang", &[("accept-language", "en")]).await;
        assert_eq!(en.text(), "accept-language=en");
        wait_stores(&proxy, 1).await;
        let fr = get_with(&mut c, "/lang", &[("accept-language", "fr")]).await;
        assert_eq!(fr.text(), "accept-language=fr");
        assert!(!is_hit(&fr), "fr was served the en variant: {}", cs(&fr));
        assert!(cs(&fr).contains("fwd=vary-miss"), "{}", cs(&fr));
        wait_stores(&proxy, 2).await;
        let en2 = get_with(&mut c, "/lang", &[("accept-language", "en")]).await;
        assert!(is_hit(&en2), "{}", cs(&en2));
        assert_eq!(en2.text(), "accept-language=en");
        let fr2 = get_with(&mut c, "/lang", &[("accept-language", "fr")]).await;
        assert!(is_hit(&fr2), "{}", cs(&fr2));
        assert_eq!(fr2.text(), "accept-language=fr");
        let none = get(&mut c, "/lang").await;
        assert_eq!(
            none.text(),
            "accept-language=-",
            "no Accept-Language matched a variant"
        );
        assert_eq!(origin.count("/lang"), 3);

        for i in 0..3 {
            let r = get(&mut c, "/star").await;
            assert_eq!(r.status, 200);
            assert!(
                !is_hit(&r),
                "Vary: * served from storage (#{i}): {}",
                cs(&r)
            );
        }
        assert_eq!(origin.count("/star"), 3, "Vary: * must never be reused");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 5. Invalidation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_invalidate_target_and_location_but_not_on_error() {
    within(30, "invalidation", async {
        let origin = Origin::start().await;
        origin.set("/inv", Script::ok("stored").cc("max-age=60"));
        origin.set_for("POST", "/inv", Script::ok("posted"));
        origin.set_for(
            "POST",
            "/create",
            Script::ok("created").status(201).header("location", "/inv"),
        );
        origin.set_for(
            "PUT",
            "/abs",
            Script::ok("put").header("content-location", "http://cache.test/inv"),
        );
        origin.set_for(
            "POST",
            "/elsewhere",
            Script::ok("other origin").header("location", "http://other.test/inv"),
        );
        let proxy = cached_proxy(&origin).await;
        let mut c = Conn::connect(proxy.addr()).await;
        let gets = |o: &Origin| o.count_method("GET", "/inv");

        // Stored, then a successful POST to the same URL invalidates it.
        get(&mut c, "/inv").await;
        wait_stores(&proxy, 1).await;
        assert!(is_hit(&get(&mut c, "/inv").await));
        assert_eq!(gets(&origin), 1);
        let post = send_method(&mut c, "POST", "/inv").await;
        assert_eq!(post.status, 200);
        assert_eq!(
            origin.count_method("POST", "/inv"),
            1,
            "POST must reach the origin"
        );
        let after = get(&mut c, "/inv").await;
        assert!(!is_hit(&after), "POST did not invalidate: {}", cs(&after));
        assert_eq!(gets(&origin), 2);
        wait_stores(&proxy, 2).await;

        // A POST elsewhere whose response has `Location: /inv` invalidates /inv.
        let created = send_method(&mut c, "POST", "/create").await;
        assert_eq!(created.status, 201);
        let after = get(&mut c, "/inv").await;
        assert!(
            !is_hit(&after),
            "Location did not invalidate: {}",
            cs(&after)
        );
        assert_eq!(gets(&origin), 3);
        wait_stores(&proxy, 3).await;

        // An absolute same-origin Content-Location invalidates too.
        assert_eq!(send_method(&mut c, "PUT", "/abs").await.status, 200);
        let after = get(&mut c, "/inv").await;
        assert!(
            !is_hit(&after),
            "Content-Location did not invalidate: {}",
            cs(&after)
        );
        assert_eq!(gets(&origin), 4);
        wait_stores(&proxy, 4).await;

        // A Location on another origin does not.
        assert_eq!(send_method(&mut c, "POST", "/elsewhere").await.status, 200);
        let after = get(&mut c, "/inv").await;
        assert!(
            is_hit(&after),
            "another origin's URL was invalidated: {}",
            cs(&after)
        );
        assert_eq!(gets(&origin), 4);

        // A POST answered with 500 does not invalidate.
        origin.set_for("POST", "/inv", Script::ok("broken").status(500));
        assert_eq!(send_method(&mut c, "POST", "/inv").await.status, 500);
        let after = get(&mut c, "/inv").await;
        assert!(is_hit(&after), "a failed POST invalidated: {}", cs(&after));
        assert_eq!(after.text(), "stored");
        assert_eq!(gets(&origin), 4);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 6. stale-while-revalidate

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_serves_stale_and_refreshes_once() {
    within(40, "stale-while-revalidate", async {
        let origin = Origin::start().await;
        origin.set(
            "/swr",
            Script::ok("old").cc("max-age=1, stale-while-revalidate=30"),
        );
        let proxy = cached_proxy(&origin).await;
        let mut conns = Vec::new();
        for _ in 0..5 {
            conns.push(Conn::connect(proxy.addr()).await);
        }
        let first = get(&mut conns[0], "/swr").await;
        assert_eq!(first.text(), "old");
        wait_stores(&proxy, 1).await;
        // The refresh is slow, so every stale answer below is served while it is in flight.
        const REFRESH: Duration = Duration::from_millis(3000);
        origin.set(
            "/swr",
            Script::ok("new")
                .cc("max-age=60, stale-while-revalidate=30")
                .delay(REFRESH),
        );
        sleep(STALE_AFTER).await;

        let mut tasks = tokio::task::JoinSet::new();
        for mut c in conns {
            tasks.spawn(async move {
                let started = Instant::now();
                let r = get(&mut c, "/swr").await;
                (r, started.elapsed())
            });
        }
        let mut answers = Vec::new();
        while let Some(r) = tasks.join_next().await {
            answers.push(r.unwrap());
        }
        for (r, took) in &answers {
            assert_eq!(r.status, 200);
            assert_eq!(r.text(), "old", "{}", cs(r));
            assert!(
                cs(r).contains("stale-while-revalidate"),
                "Cache-Status: {}",
                cs(r)
            );
            assert!(
                *took < Duration::from_millis(2500),
                "a stale answer waited for the refresh ({took:?})"
            );
        }

        let refreshed = eventually(Duration::from_secs(3), || async {
            origin.count("/swr") >= 2
        })
        .await;
        assert!(refreshed, "no background revalidation reached the origin");
        wait_stores(&proxy, 2).await;
        sleep(Duration::from_millis(200)).await;
        assert_eq!(
            origin.count("/swr"),
            2,
            "five stale hits must cause exactly one background request"
        );

        let mut c = Conn::connect(proxy.addr()).await;
        let next = get(&mut c, "/swr").await;
        assert_eq!(next.text(), "new", "{}", cs(&next));
        assert!(is_hit(&next), "{}", cs(&next));
        assert!(!cs(&next).contains("stale"), "{}", cs(&next));
        assert_eq!(origin.count("/swr"), 2);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 7. stale-if-error

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_covers_5xx_and_dead_origin_only_when_allowed() {
    within(40, "stale-if-error", async {
        let origin = Origin::start().await;
        origin.set(
            "/sie",
            Script::ok("good").cc("max-age=1, stale-if-error=60"),
        );
        origin.set("/plain", Script::ok("plain").cc("max-age=1"));
        let proxy = cached_proxy(&origin).await;
        let mut c = Conn::connect(proxy.addr()).await;
        assert_eq!(get(&mut c, "/sie").await.text(), "good");
        assert_eq!(get(&mut c, "/plain").await.text(), "plain");
        wait_stores(&proxy, 2).await;
        sleep(STALE_AFTER).await;

        // The origin answers 503.
        origin.set("/sie", Script::ok("down").status(503));
        origin.set("/plain", Script::ok("down").status(503));
        let r = get(&mut c, "/sie").await;
        assert_eq!(
            r.status,
            200,
            "stale-if-error not used for a 503: {}",
            cs(&r)
        );
        assert_eq!(r.text(), "good");
        assert!(
            cs(&r).contains("stale-if-error") && cs(&r).contains("fwd-status=503"),
            "{}",
            cs(&r)
        );
        assert_eq!(
            origin.count("/sie"),
            2,
            "the stale entry was not tried upstream first"
        );
        let r = get(&mut c, "/plain").await;
        assert_eq!(
            r.status, 503,
            "without stale-if-error the error goes through"
        );
        assert_eq!(r.text(), "down");

        // The origin is gone.
        origin.kill().await;
        let mut c = Conn::connect(proxy.addr()).await;
        let r = get(&mut c, "/sie").await;
        assert_eq!(
            r.status,
            200,
            "stale-if-error not used for a dead origin: {}",
            cs(&r)
        );
        assert_eq!(r.text(), "good");
        assert!(cs(&r).contains("stale-if-error"), "{}", cs(&r));
        let r = get(&mut c, "/plain").await;
        assert!(
            r.status.is_server_error(),
            "a dead origin without stale-if-error: {} {}",
            r.status,
            r.text()
        );
        let s = stats(&proxy, "default").await;
        assert!(counter(&s, "stale_on_error") >= 2, "{s}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 8. Coalescing

/// An h2c listener (for 1000 concurrent requests on a few connections) and the cache.
const CACHED_H2C: &str = r#"
[[listeners]]
address = "127.0.0.1:0"
h2c = true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_misses_make_one_origin_request() {
    within(60, "coalescing", async {
        const BODY: usize = 16 * 1024;
        const CONNS: usize = 8;
        const PER_CONN: usize = 125;
        let origin = Origin::start().await;
        origin.set(
            "/hot",
            Script::content(Content::Pattern {
                len: BODY,
                chunk: 4096,
                length: true,
            })
            .cc("max-age=60")
            .delay(Duration::from_millis(300)),
        );
        let text = format!("{CACHED_H2C}\n{}", cached_config(&origin, "1MiB"));
        let proxy = TestProxy::start(&text).await;
        let mut clients = Vec::new();
        for _ in 0..CONNS {
            clients.push(
                H2Client::connect_h2c(proxy.addr())
                    .await
                    .expect("h2c connection"),
            );
        }
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for client in &clients {
            for _ in 0..PER_CONN {
                let sender = client.sender();
                tasks.spawn(async move {
                    send_on(sender, h2_get("http://cache.test/hot"), Vec::new(), None).await
                });
            }
        }
        let expected = pattern(BODY);
        let (mut ok, mut collapsed, mut hits) = (0, 0, 0);
        let mut failures = Vec::new();
        while let Some(r) = tasks.join_next().await {
            match r.unwrap() {
                Ok(r) if r.status == 200 && r.body[..] == expected[..] => {
                    ok += 1;
                    let s = r
                        .headers
                        .get("cache-status")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    collapsed += usize::from(s.contains("collapsed"));
                    hits += usize::from(s.contains("; hit"));
                }
                Ok(r) => failures.push(format!("{} with {} body bytes", r.status, r.body.len())),
                Err(e) => failures.push(format!("h2 error {e:?}")),
            }
        }
        let took = started.elapsed();
        assert!(
            failures.is_empty(),
            "{} failed: {:?}",
            failures.len(),
            &failures[..failures.len().min(10)]
        );
        assert_eq!(ok, CONNS * PER_CONN);
        assert_eq!(
            origin.count("/hot"),
            1,
            "{ok} requests ({collapsed} collapsed, {hits} hits) made {} origin requests",
            origin.count("/hot")
        );
        assert_eq!(
            collapsed + hits,
            ok - 1,
            "every request but the leader shared or hit"
        );
        assert!(
            took < Duration::from_secs(20),
            "1000 requests took {took:?}"
        );
        let s = stats(&proxy, "default").await;
        assert_eq!(counter(&s, "coalesced") as usize, collapsed, "{s}");
    })
    .await;
}

/// Concurrent requests for one stale entry that must be validated make one conditional request,
/// as concurrent misses make one request: a popular page expiring must not send every client
/// to the origin at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_a_stale_entry_make_one_revalidation() {
    within(30, "revalidation coalescing", async {
        const CLIENTS: usize = 20;
        let origin = Origin::start().await;
        let script = Script::ok("popular")
            .cc("max-age=1")
            .header("etag", "\"p\"")
            .not_modified(&[("cache-control", "max-age=60")]);
        origin.set("/popular", script.clone());
        let proxy = cached_proxy(&origin).await;
        let mut conns = Vec::new();
        for _ in 0..CLIENTS {
            conns.push(Conn::connect(proxy.addr()).await);
        }
        assert_eq!(get(&mut conns[0], "/popular").await.text(), "popular");
        wait_stores(&proxy, 1).await;
        origin.set("/popular", script.delay(Duration::from_millis(500)));
        sleep(STALE_AFTER).await;

        let mut tasks = tokio::task::JoinSet::new();
        for mut c in conns {
            tasks.spawn(async move { get(&mut c, "/popular").await });
        }
        while let Some(r) = tasks.join_next().await {
            let r = r.unwrap();
            assert_eq!(r.status, 200, "{}", cs(&r));
            assert_eq!(r.text(), "popular");
        }
        assert_eq!(
            origin.count("/popular") - 1,
            1,
            "{CLIENTS} concurrent requests for one stale entry sent {} revalidations",
            origin.count("/popular") - 1
        );
    })
    .await;
}

/// The first miss leads the upstream request; when its client hangs up, the requests waiting on
/// it must still be answered by one upstream request, not each go upstream on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_stay_coalesced_when_the_leading_client_disconnects() {
    within(40, "leader disconnect", async {
        const WAITERS: usize = 20;
        const ORIGIN_DELAY: Duration = Duration::from_secs(5);
        let origin = Origin::start().await;
        origin.set(
            "/herd",
            Script::ok("herd").cc("max-age=60").delay(ORIGIN_DELAY),
        );
        let proxy = cached_proxy(&origin).await;

        // The leader, on a raw socket so that it can hang up for certain.
        let mut leader = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(
            &mut leader,
            b"GET /herd HTTP/1.1\r\nHost: cache.test\r\n\r\n",
        )
        .await
        .unwrap();
        let arrived = eventually(Duration::from_secs(5), || async {
            origin.count("/herd") == 1
        })
        .await;
        assert!(arrived, "the leader's request did not reach the origin");
        let leader_arrived = Instant::now();

        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..WAITERS {
            let mut c = Conn::connect(proxy.addr()).await;
            tasks.spawn(async move { get(&mut c, "/herd").await });
        }
        let joined = eventually(Duration::from_secs(4), || async {
            counter(&stats(&proxy, "default").await, "misses") as usize > WAITERS
        })
        .await;
        assert!(
            joined,
            "the waiters did not all arrive while the leader waited"
        );
        assert_eq!(
            origin.count("/herd"),
            1,
            "a waiter went upstream while the leader waited"
        );
        assert!(
            leader_arrived.elapsed() < ORIGIN_DELAY - Duration::from_millis(500),
            "too slow to hang up before the origin answers; the test proves nothing"
        );
        let _ = leader.set_zero_linger();
        drop(leader);

        while let Some(r) = tasks.join_next().await {
            let r = r.unwrap();
            assert_eq!(r.status, 200, "{}", cs(&r));
            assert_eq!(r.text(), "herd");
        }
        assert!(
            origin.count("/herd") <= 2,
            "the leader's client hung up and {WAITERS} waiters made {} more origin requests",
            origin.count("/herd") - 1
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_responses_are_not_shared_between_concurrent_clients() {
    within(30, "private", async {
        let origin = Origin::start().await;
        origin.set(
            "/mine",
            Script::content(Content::EchoHeader("x-user".into()))
                .cc("private, max-age=60")
                .delay(Duration::from_millis(300)),
        );
        let proxy = cached_proxy(&origin).await;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..5 {
            let mut c = Conn::connect(proxy.addr()).await;
            tasks.spawn(async move {
                let user = format!("user{i}");
                let r = get_with(&mut c, "/mine", &[("x-user", &user)]).await;
                (user, r)
            });
        }
        while let Some(r) = tasks.join_next().await {
            let (user, r) = r.unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(
                r.text(),
                format!("x-user={user}"),
                "{user} got someone else's private response: {}",
                cs(&r)
            );
            assert!(!is_hit(&r) && !cs(&r).contains("collapsed"), "{}", cs(&r));
        }
        assert_eq!(
            origin.count("/mine"),
            5,
            "private responses must not be shared"
        );
        let mut c = Conn::connect(proxy.addr()).await;
        assert!(!is_hit(&get(&mut c, "/mine").await));
        assert_eq!(origin.count("/mine"), 6, "a private response was stored");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 9. Virtual hosts

const TWO_HOSTS: &str = r#"
[admin]
address = "127.0.0.1:0"

[upstreams.origin]
endpoints = ["{O}"]

[[servers]]
names = ["a.test"]

[[servers.routes]]
prefix = "/"
upstream = "origin"
cache = true

[[servers]]
names = ["b.test"]

[[servers.routes]]
prefix = "/"
upstream = "origin"
cache = true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_hosts_on_one_upstream_never_share_entries() {
    within(30, "virtual hosts", async {
        let origin = Origin::start().await;
        origin.set(
            "/x",
            Script::content(Content::EchoHeader("host".into())).cc("max-age=60"),
        );
        let proxy = TestProxy::start(&fill(TWO_HOSTS, &[("O", origin.addr())])).await;
        let mut c = Conn::connect(proxy.addr()).await;

        let a = c.get_host("a.test", "/x").await;
        assert_eq!(a.text(), "host=a.test");
        wait_stores(&proxy, 1).await;
        let b = c.get_host("b.test", "/x").await;
        assert_eq!(
            b.text(),
            "host=b.test",
            "b.test got a.test's entry: {}",
            cs(&b)
        );
        assert!(!is_hit(&b), "{}", cs(&b));
        assert_eq!(origin.count("/x"), 2);
        wait_stores(&proxy, 2).await;

        for _ in 0..2 {
            let a = c.get_host("a.test", "/x").await;
            assert!(is_hit(&a), "{}", cs(&a));
            assert_eq!(a.text(), "host=a.test");
            let b = c.get_host("b.test", "/x").await;
            assert!(is_hit(&b), "{}", cs(&b));
            assert_eq!(b.text(), "host=b.test");
        }
        // Host is case-insensitive: the same key.
        let upper = c.get_host("A.TEST", "/x").await;
        assert!(is_hit(&upper), "{}", cs(&upper));
        assert_eq!(upper.text(), "host=a.test");
        assert_eq!(origin.count("/x"), 2);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Route options: key_headers and default_ttl

const ROUTE_OPTIONS: &str = r#"
[admin]
address = "127.0.0.1:0"

[upstreams.origin]
endpoints = ["{O}"]

[[servers]]
default = true

[[servers.routes]]
prefix = "/t/"
upstream = "origin"
cache = { key_headers = ["X-Tenant"], default_ttl = "60s" }

[[servers.routes]]
prefix = "/"
upstream = "origin"
cache = true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_key_headers_split_entries_and_default_ttl_stores_bare_responses() {
    within(30, "route options", async {
        let origin = Origin::start().await;
        // No Cache-Control, Expires or Last-Modified: storable only with default_ttl.
        for path in ["/t/tenant", "/bare"] {
            origin.set(
                path,
                Script::content(Content::EchoHeader("x-tenant".into())),
            );
        }
        let proxy = TestProxy::start(&fill(ROUTE_OPTIONS, &[("O", origin.addr())])).await;
        let mut c = Conn::connect(proxy.addr()).await;

        let a = get_with(&mut c, "/t/tenant", &[("x-tenant", "a")]).await;
        assert_eq!(a.text(), "x-tenant=a");
        assert!(
            cs(&a).contains("stored") && cs(&a).contains("ttl=60"),
            "{}",
            cs(&a)
        );
        wait_stores(&proxy, 1).await;
        let b = get_with(&mut c, "/t/tenant", &[("x-tenant", "b")]).await;
        assert_eq!(
            b.text(),
            "x-tenant=b",
            "tenant b got tenant a's entry: {}",
            cs(&b)
        );
        wait_stores(&proxy, 2).await;
        for tenant in ["a", "b", "a"] {
            let r = get_with(&mut c, "/t/tenant", &[("x-tenant", tenant)]).await;
            assert!(is_hit(&r), "{}", cs(&r));
            assert_eq!(r.text(), format!("x-tenant={tenant}"));
        }
        let none = get(&mut c, "/t/tenant").await;
        assert_eq!(none.text(), "x-tenant=-");
        assert_eq!(origin.count("/t/tenant"), 3);

        // The plain route has no default_ttl: a response without freshness is not stored.
        for i in 1..=2 {
            let r = get(&mut c, "/bare").await;
            assert!(!is_hit(&r) && !cs(&r).contains("stored"), "{}", cs(&r));
            assert_eq!(origin.count("/bare"), i);
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 10. Byte bound

const SMALL_STORE: &str = r#"
[caches.small]
size = "2MiB"

[admin]
address = "127.0.0.1:0"

[upstreams.origin]
endpoints = ["{O}"]

[[servers]]
default = true

[[servers.routes]]
prefix = "/"
upstream = "origin"
cache = "small"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_stays_within_its_byte_bound_under_churn() {
    within(60, "byte bound", async {
        const OBJECT: usize = 100 * 1024;
        const URLS: usize = 200;
        const BOUND: u64 = 2 << 20;
        let origin = Origin::start().await;
        let body = Bytes::from(pattern(OBJECT));
        for i in 0..=URLS {
            origin.set(
                &format!("/churn/{i}"),
                Script::ok(body.clone()).cc("max-age=300"),
            );
        }
        let proxy = TestProxy::start(&fill(SMALL_STORE, &[("O", origin.addr())])).await;
        let mut c = Conn::connect(proxy.addr()).await;
        for i in 0..URLS {
            let r = get(&mut c, &format!("/churn/{i}")).await;
            assert_eq!(r.status, 200, "#{i}");
            assert_eq!(r.body, body, "#{i}: wrong body");
        }

        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut last, mut settled) = (serde_json::Value::Null, false);
        while !settled && Instant::now() < deadline {
            last = stats(&proxy, "small").await;
            settled = counter(&last, "bytes") <= BOUND && counter(&last, "evictions") > 0;
            if !settled {
                sleep(Duration::from_millis(100)).await;
            }
        }
        assert!(settled, "over the bound or no evictions: {last}");
        assert!(counter(&last, "stores") > 0, "{last}");
        assert!(
            counter(&last, "entries") * OBJECT as u64 <= BOUND,
            "more entries than fit: {last}"
        );

        // Still serving correctly, old and new.
        let r = get(&mut c, "/churn/0").await;
        assert_eq!((r.status.as_u16(), r.body.len()), (200, OBJECT));
        assert_eq!(r.body, body);
        let r = get(&mut c, &format!("/churn/{URLS}")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, body);
        let s = stats(&proxy, "small").await;
        assert!(counter(&s, "bytes") <= BOUND, "{s}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 11. Streaming and max_object_size

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_max_object_size_stream_whole_and_are_not_stored() {
    within(60, "max object size", async {
        const BIG: usize = 3 << 20;
        let origin = Origin::start().await;
        for (path, length) in [("/big-chunked", false), ("/big-length", true)] {
            origin.set(
                path,
                Script::content(Content::Pattern {
                    len: BIG,
                    chunk: 64 * 1024,
                    length,
                })
                .cc("max-age=60"),
            );
        }
        let proxy = cached_proxy(&origin).await;
        let expected = pattern(BIG);
        let mut c = Conn::connect(proxy.addr()).await;
        for path in ["/big-chunked", "/big-length"] {
            for round in 1..=2 {
                let r = get(&mut c, path).await;
                assert_eq!(r.status, 200, "{path} #{round}");
                assert_eq!(r.body.len(), BIG, "{path} #{round}: truncated");
                assert!(r.body[..] == expected[..], "{path} #{round}: body differs");
                assert!(!is_hit(&r), "{path} #{round} was stored: {}", cs(&r));
                assert_eq!(
                    origin.count(path),
                    round,
                    "{path}: not stored, so each GET goes upstream"
                );
            }
        }
        let r = get(&mut c, "/big-length").await;
        assert!(
            cs(&r).contains("too-big") && !cs(&r).contains("stored"),
            "a Content-Length over the limit is known up front: {}",
            cs(&r)
        );
        let s = stats(&proxy, "default").await;
        assert_eq!(counter(&s, "entries"), 0, "{s}");
        assert_eq!(counter(&s, "stores"), 0, "{s}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_streams_to_the_client_before_the_body_ends() {
    within(30, "streaming miss", async {
        const PAUSE: Duration = Duration::from_millis(1500);
        let origin = Origin::start().await;
        origin.set(
            "/slow",
            Script::content(Content::Paused {
                first: Bytes::from_static(b"first-chunk;"),
                pause: PAUSE,
                rest: Bytes::from_static(b"rest"),
            })
            .cc("max-age=60"),
        );
        let proxy = cached_proxy(&origin).await;
        let mut c = Conn::connect(proxy.addr()).await;

        let started = Instant::now();
        let resp = c
            .send_streaming(req("GET", HOST, "/slow").body(empty()).unwrap())
            .await
            .expect("response head");
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut got = Vec::new();
        let mut first_at = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("body frame");
            if let Some(d) = frame.data_ref()
                && !d.is_empty()
            {
                got.extend_from_slice(d);
                first_at.get_or_insert_with(|| started.elapsed());
            }
        }
        let done_at = started.elapsed();
        let first_at = first_at.expect("some body");
        assert_eq!(got, b"first-chunk;rest");
        assert!(
            done_at.saturating_sub(first_at) >= Duration::from_millis(600),
            "the first chunk arrived at {first_at:?}, the end at {done_at:?}: the miss was buffered"
        );

        wait_stores(&proxy, 1).await;
        let hit = get(&mut c, "/slow").await;
        assert!(is_hit(&hit), "{}", cs(&hit));
        assert_eq!(hit.text(), "first-chunk;rest");
        assert_eq!(origin.count("/slow"), 1);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 12. Purge

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_purges_by_url_and_by_prefix() {
    within(30, "purge", async {
        let origin = Origin::start().await;
        let paths = ["/p1", "/dir/a", "/dir/b", "/other"];
        for p in paths {
            origin.set(p, Script::ok(p).cc("max-age=60"));
        }
        let proxy = cached_proxy(&origin).await;
        let mut c = Conn::connect(proxy.addr()).await;
        for p in paths {
            get(&mut c, p).await;
        }
        wait_stores(&proxy, 4).await;
        for p in paths {
            assert!(is_hit(&get(&mut c, p).await), "{p} not stored");
        }

        let url = percent_encode("http://cache.test/p1");
        let r = admin(&proxy, "DELETE", &format!("/cache?url={url}"), None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), r#"{"purged":1}"#);
        let after = get(&mut c, "/p1").await;
        assert!(!is_hit(&after), "purged URL still served: {}", cs(&after));
        assert_eq!(origin.count("/p1"), 2);

        let missing = percent_encode("http://cache.test/never-stored");
        let r = admin(&proxy, "DELETE", &format!("/cache?url={missing}"), None).await;
        assert_eq!(r.text(), r#"{"purged":0}"#);

        let prefix = percent_encode("http://cache.test/dir/");
        let r = admin(&proxy, "DELETE", &format!("/cache?prefix={prefix}"), None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), r#"{"purged":2}"#);
        for p in ["/dir/a", "/dir/b"] {
            let r = get(&mut c, p).await;
            assert!(!is_hit(&r), "{p} survived the prefix purge: {}", cs(&r));
            assert_eq!(r.text(), p);
            assert_eq!(origin.count(p), 2);
        }
        let other = get(&mut c, "/other").await;
        assert!(is_hit(&other), "/other was purged: {}", cs(&other));
        assert_eq!(origin.count("/other"), 1);

        let r = admin(&proxy, "DELETE", "/cache?url=%2Frelative", None).await;
        assert_eq!(r.status, 400, "a relative URL: {}", r.text());
        let s = stats(&proxy, "default").await;
        assert!(counter(&s, "invalidations") >= 3, "{s}");
    })
    .await;
}

/// `?url=http://host` names the same resource as `http://host/` (RFC 9110 section 4.2.3), so it
/// purges the stored root page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purging_a_url_without_a_path_removes_the_root_page() {
    within(30, "purge root", async {
        let origin = Origin::start().await;
        origin.set("/", Script::ok("root").cc("max-age=60"));
        let proxy = cached_proxy(&origin).await;
        let mut c = Conn::connect(proxy.addr()).await;
        get(&mut c, "/").await;
        wait_stores(&proxy, 1).await;
        assert!(is_hit(&get(&mut c, "/").await));

        let url = percent_encode("http://cache.test");
        let r = admin(&proxy, "DELETE", &format!("/cache?url={url}"), None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.text(),
            r#"{"purged":1}"#,
            "`http://cache.test` is the URL of the stored `http://cache.test/`"
        );
        assert!(!is_hit(&get(&mut c, "/").await));
        assert_eq!(origin.count("/"), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_with_a_secret_requires_the_bearer_token() {
    within(30, "admin secret", async {
        const SECRET: &str = "s3cret-token-0123456789";
        let origin = Origin::start().await;
        origin.set("/kept", Script::ok("kept").cc("max-age=60"));
        let text = cached_config(&origin, "1MiB").replace(
            "address = \"127.0.0.1:0\"\n\n[upstreams",
            &format!("address = \"127.0.0.1:0\"\nsecret = \"{SECRET}\"\n\n[upstreams"),
        );
        assert!(text.contains(SECRET), "the secret was not spliced in");
        let proxy = TestProxy::start(&text).await;
        let mut c = Conn::connect(proxy.addr()).await;
        get(&mut c, "/kept").await;

        assert_eq!(admin(&proxy, "GET", "/cache", None).await.status, 401);
        assert_eq!(admin(&proxy, "GET", "/cache", Some("wrong-token-0123456789")).await.status, 401);
        let url = percent_encode("http://cache.test/kept");
        let target = format!("/cache?url={url}");
        let denied = admin(&proxy, "DELETE", &target, None).await;
        assert_eq!(denied.status, 401);
        assert!(!denied.text().contains("purged"));

        let ok = eventually(Duration::from_secs(5), || async {
            let r = admin(&proxy, "GET", "/cache", Some(SECRET)).await;
            r.status == 200
                && serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["stores"]["default"]
                    ["stores"]
                    .as_u64()
                    == Some(1)
        })
        .await;
        assert!(ok, "GET /cache with the token");
        let hit = get(&mut c, "/kept").await;
        assert!(is_hit(&hit), "an unauthorised purge took effect: {}", cs(&hit));

        let r = admin(&proxy, "DELETE", &target, Some(SECRET)).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), r#"{"purged":1}"#);
        assert!(!is_hit(&get(&mut c, "/kept").await));
        assert_eq!(origin.count("/kept"), 2);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 13. only-if-cached, no-store, request no-cache

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_if_cached_is_a_504_unless_stored() {
    within(30, "only-if-cached", async {
        let origin = Origin::start().await;
        origin.set("/oic", Script::ok("oic").cc("max-age=60"));
        let proxy = cached_proxy(&origin).await;
        let mut c = Conn::connect(proxy.addr()).await;
        let only = [("cache-control", "only-if-cached")];

        let r = get_with(&mut c, "/oic", &only).await;
        assert_eq!(r.status, 504, "{}", cs(&r));
        assert_eq!(origin.total(), 0, "only-if-cached reached the origin");
        get(&mut c, "/oic").await;
        wait_stores(&proxy, 1).await;
        let r = get_with(&mut c, "/oic", &only).await;
        assert_eq!(r.status, 200);
        assert!(is_hit(&r), "{}", cs(&r));
        assert_eq!(r.text(), "oic");
        assert_eq!(origin.count("/oic"), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_responses_are_never_stored() {
    within(30, "no-store", async {
        let origin = Origin::start().await;
        origin.set("/ns", Script::ok("secret").cc("no-store, max-age=60"));
        origin.set("/req-ns", Script::ok("fine").cc("max-age=60"));
        let proxy = cached_proxy(&origin).await;
        let mut c = Conn::connect(proxy.addr()).await;
        for i in 1..=3 {
            let r = get(&mut c, "/ns").await;
            assert_eq!(r.text(), "secret");
            assert!(!cs(&r).contains("stored") && !is_hit(&r), "{}", cs(&r));
            assert!(cs(&r).contains("no-store"), "{}", cs(&r));
            assert_eq!(origin.count("/ns"), i);
        }
        // A request's no-store keeps its response out of the store too.
        let r = get_with(&mut c, "/req-ns", &[("cache-control", "no-store")]).await;
        assert!(!cs(&r).contains("stored"), "{}", cs(&r));
        let r = get(&mut c, "/req-ns").await;
        assert!(!is_hit(&r), "{}", cs(&r));
        assert_eq!(origin.count("/req-ns"), 2);
        let s = stats(&proxy, "default").await;
        assert_eq!(counter(&s, "entries"), 1, "{s}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_no_cache_revalidates_with_the_stored_validator() {
    within(30, "request no-cache", async {
        let origin = Origin::start().await;
        origin.set(
            "/nc",
            Script::ok("nc body")
                .cc("max-age=60")
                .header("etag", "\"n1\"")
                .not_modified(&[("cache-control", "max-age=60")]),
        );
        let proxy = cached_proxy(&origin).await;
        let mut c = Conn::connect(proxy.addr()).await;
        get(&mut c, "/nc").await;
        wait_stores(&proxy, 1).await;
        assert!(is_hit(&get(&mut c, "/nc").await));

        let r = get_with(&mut c, "/nc", &[("cache-control", "no-cache")]).await;
        assert_eq!(
            origin.count("/nc"),
            2,
            "request no-cache was answered from storage"
        );
        let sent = origin.requests("/nc")[1].clone();
        assert_eq!(
            sent.header("if-none-match"),
            Some("\"n1\""),
            "no stored validator on the revalidation: {:?}",
            sent.headers
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "nc body");
        assert!(
            cs(&r).contains("fwd=request") && cs(&r).contains("fwd-status=304"),
            "{}",
            cs(&r)
        );
        let again = get(&mut c, "/nc").await;
        assert!(is_hit(&again), "{}", cs(&again));
        assert_eq!(origin.count("/nc"), 2);

        // Pragma: no-cache without Cache-Control means the same (RFC 9111 section 5.4).
        let r = get_with(&mut c, "/nc", &[("pragma", "no-cache")]).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            origin.count("/nc"),
            3,
            "Pragma: no-cache was ignored: {}",
            cs(&r)
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 14. Ranges

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_are_served_from_a_stored_full_response() {
    within(30, "ranges", async {
        let origin = Origin::start().await;
        let body = pattern(1000);
        origin.set(
            "/r",
            Script::ok(body.clone())
                .cc("max-age=60")
                .header("etag", "\"r1\""),
        );
        let proxy = cached_proxy(&origin).await;
        let mut c = Conn::connect(proxy.addr()).await;
        assert_eq!(get(&mut c, "/r").await.body.len(), 1000);
        wait_stores(&proxy, 1).await;

        let r = get_with(&mut c, "/r", &[("range", "bytes=10-19")]).await;
        assert_eq!(r.status, 206, "{}", cs(&r));
        assert_eq!(r.header("content-range"), Some("bytes 10-19/1000"));
        assert_eq!(r.header("content-length"), Some("10"));
        assert_eq!(&r.body[..], &body[10..20]);
        assert!(is_hit(&r), "{}", cs(&r));

        let r = get_with(&mut c, "/r", &[("range", "bytes=-5")]).await;
        assert_eq!(r.status, 206);
        assert_eq!(r.header("content-range"), Some("bytes 995-999/1000"));
        assert_eq!(&r.body[..], &body[995..]);

        let r = get_with(&mut c, "/r", &[("range", "bytes=5000-")]).await;
        assert_eq!(r.status, 416);
        assert_eq!(r.header("content-range"), Some("bytes */1000"));

        let r = get_with(
            &mut c,
            "/r",
            &[("range", "bytes=0-3"), ("if-range", "\"stale\"")],
        )
        .await;
        assert_eq!(
            r.status, 200,
            "If-Range that does not match gets the whole body"
        );
        assert_eq!(r.body.len(), 1000);
        let r = get_with(
            &mut c,
            "/r",
            &[("range", "bytes=0-3"), ("if-range", "\"r1\"")],
        )
        .await;
        assert_eq!(r.status, 206, "If-Range that matches gets the range");
        assert_eq!(&r.body[..], &body[..4]);

        assert_eq!(origin.count("/r"), 1, "a range request reached the origin");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 15. Authorization

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_requests_are_stored_only_when_public() {
    within(30, "authorization", async {
        let origin = Origin::start().await;
        origin.set("/acct", Script::ok("account").cc("max-age=60"));
        origin.set("/pub", Script::ok("public").cc("public, max-age=60"));
        let proxy = cached_proxy(&origin).await;
        let mut c = Conn::connect(proxy.addr()).await;
        let auth = [("authorization", "Bearer alice")];

        let r = get_with(&mut c, "/acct", &auth).await;
        assert_eq!(r.text(), "account");
        assert!(!cs(&r).contains("stored"), "{}", cs(&r));
        assert!(cs(&r).contains("authorization"), "{}", cs(&r));
        let r = get_with(&mut c, "/acct", &auth).await;
        assert!(!is_hit(&r), "{}", cs(&r));
        let r = get(&mut c, "/acct").await;
        assert!(
            !is_hit(&r),
            "an authorised response was served to anyone: {}",
            cs(&r)
        );
        assert_eq!(origin.count("/acct"), 3);

        let r = get_with(&mut c, "/pub", &auth).await;
        assert!(cs(&r).contains("stored"), "{}", cs(&r));
        wait_stores(&proxy, 2).await;
        let r = get_with(&mut c, "/pub", &auth).await;
        assert!(is_hit(&r), "{}", cs(&r));
        let r = get(&mut c, "/pub").await;
        assert!(is_hit(&r), "{}", cs(&r));
        assert_eq!(r.text(), "public");
        assert_eq!(origin.count("/pub"), 1);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Two routes for one URL that share a store

const CANARY: &str = r#"
[upstreams.stable]
endpoints = ["{S}"]

[upstreams.canary]
endpoints = ["{C}"]

[[servers]]
default = true

[[servers.routes]]
prefix = "/"
headers = { "x-canary" = "1" }
upstream = "canary"
cache = true

[[servers.routes]]
prefix = "/"
upstream = "stable"
cache = true
"#;

/// Routes that differ only by a header condition share the `default` store, but each uses
/// only what it stored itself: the canary's response never reaches stable clients.
#[tokio::test]
async fn routes_sharing_a_store_never_serve_each_others_responses() {
    within(30, "canary routes", async {
        let stable = Origin::start().await;
        let canary = Origin::start().await;
        stable.set(
            "/page",
            Script::content(Content::Bytes(Bytes::from_static(b"stable"))).cc("max-age=60"),
        );
        canary.set(
            "/page",
            Script::content(Content::Bytes(Bytes::from_static(b"canary"))).cc("max-age=60"),
        );
        let proxy =
            TestProxy::start(&fill(CANARY, &[("S", stable.addr()), ("C", canary.addr())])).await;
        let mut c = Conn::connect(proxy.addr()).await;

        let first = get_with(&mut c, "/page", &[("x-canary", "1")]).await;
        assert_eq!(first.text(), "canary");
        sleep(Duration::from_millis(200)).await;
        let plain = get(&mut c, "/page").await;
        assert_eq!(plain.text(), "stable", "stable client got: {}", cs(&plain));
        sleep(Duration::from_millis(200)).await;
        for _ in 0..2 {
            let again = get_with(&mut c, "/page", &[("x-canary", "1")]).await;
            assert_eq!(again.text(), "canary");
            assert!(is_hit(&again), "{}", cs(&again));
            let plain = get(&mut c, "/page").await;
            assert_eq!(plain.text(), "stable");
            assert!(is_hit(&plain), "{}", cs(&plain));
        }
        assert_eq!(canary.count("/page"), 1);
        assert_eq!(stable.count("/page"), 1);
    })
    .await;
}

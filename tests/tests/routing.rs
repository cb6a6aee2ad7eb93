//! Routing through real sockets: host selection (exact, `*.suffix`, default), path precedence
//! (exact > regex in declaration order > longest prefix, as nginx `location`), method and header
//! conditions, 404 when nothing matches, and hot reload changing the routes of new requests.
//!
//! Each route tags its responses with `x-route`, so one backend serves them all.

// Tests panic on purpose: a failed assertion or setup step is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tests::client::{self, Conn, empty, req};
use tests::{Backend, TestProxy, fill, within};

const ROUTES: &str = r#"
[upstreams.app]
endpoints = ["{A}"]

[[servers]]
names = ["shop.test"]

[[servers.routes]]
prefix = "/"
upstream = "app"
response_headers.set = { "x-route" = "shop-root" }

[[servers.routes]]
prefix = "/static/"
upstream = "app"
response_headers.set = { "x-route" = "static-prefix" }

[[servers.routes]]
prefix = "/static/img/"
upstream = "app"
response_headers.set = { "x-route" = "longest-prefix" }

[[servers.routes]]
regex = "\\.png$"
upstream = "app"
response_headers.set = { "x-route" = "regex-png" }

[[servers.routes]]
regex = "^/static/img/.*\\.png$"
upstream = "app"
response_headers.set = { "x-route" = "regex-second" }

[[servers.routes]]
exact = "/static/img/logo.png"
upstream = "app"
response_headers.set = { "x-route" = "exact" }

[[servers.routes]]
prefix = "/api/"
methods = ["POST", "PUT"]
upstream = "app"
response_headers.set = { "x-route" = "api-write" }

[[servers.routes]]
prefix = "/api/"
headers = { "x-canary" = "1" }
upstream = "app"
response_headers.set = { "x-route" = "api-canary" }

[[servers.routes]]
prefix = "/api/"
upstream = "app"
response_headers.set = { "x-route" = "api-any" }

[[servers]]
names = ["*.wild.test", "Other.Test"]

[[servers.routes]]
prefix = "/"
upstream = "app"
response_headers.set = { "x-route" = "wildcard" }

[[servers]]
names = ["*.deep.wild.test"]

[[servers.routes]]
prefix = "/"
upstream = "app"
response_headers.set = { "x-route" = "deeper-wildcard" }

[[servers]]
names = ["fallback.test"]
default = true

[[servers.routes]]
prefix = "/"
upstream = "app"
response_headers.set = { "x-route" = "default" }
"#;

async fn route_of(c: &mut Conn, method: &str, host: &str, path: &str, canary: bool) -> String {
    let mut b = req(method, host, path);
    if canary {
        b = b.header("x-canary", "1");
    }
    let r = c.send(b.body(empty()).unwrap()).await;
    assert_eq!(r.status, 200, "{method} {host}{path}: {}", r.text());
    r.header("x-route").unwrap_or("<none>").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_exact_wildcard_and_default() {
    within(30, "hosts", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::start(&fill(ROUTES, &[("A", a.addr())])).await;
        let mut c = Conn::connect(proxy.addr()).await;
        let cases = [
            ("shop.test", "shop-root"),
            ("SHOP.test:8080", "shop-root"),
            ("shop.test.", "shop-root"),
            ("a.wild.test", "wildcard"),
            ("x.y.wild.test", "wildcard"),
            ("other.test", "wildcard"),
            ("a.deep.wild.test", "deeper-wildcard"),
            ("wild.test", "default"),
            ("unknown.example", "default"),
            ("127.0.0.1", "default"),
        ];
        for (host, want) in cases {
            assert_eq!(
                route_of(&mut c, "GET", host, "/x", false).await,
                want,
                "Host: {host}"
            );
        }
        // The absolute-form target's authority wins over Host (RFC 9112 section 3.2.2).
        let r = c
            .send(
                req("GET", "fallback.test", "http://shop.test/x")
                    .body(empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.header("x-route"), Some("shop-root"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_precedence_follows_nginx() {
    within(30, "paths", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::start(&fill(ROUTES, &[("A", a.addr())])).await;
        let mut c = Conn::connect(proxy.addr()).await;
        let cases = [
            ("/", "shop-root"),
            ("/elsewhere", "shop-root"),
            ("/static", "shop-root"),
            ("/static/css/site.css", "static-prefix"),
            ("/static/img/a.gif", "longest-prefix"),
            // Regexes beat prefixes; the first declared regex wins.
            ("/static/img/a.png", "regex-png"),
            ("/other/b.png", "regex-png"),
            // Exact beats everything.
            ("/static/img/logo.png", "exact"),
            // Query strings do not take part in path matching.
            ("/static/img/logo.png?v=2", "exact"),
        ];
        for (path, want) in cases {
            assert_eq!(
                route_of(&mut c, "GET", "shop.test", path, false).await,
                want,
                "path {path}"
            );
        }
        assert_eq!(a.hits(), cases.len());
        // Dot segments are resolved before routing: `/static/../api/x` is `/api/x`.
        let r = c.get_host("shop.test", "/static/../api/x").await;
        assert_eq!(r.header("x-route"), Some("api-any"));
        assert_eq!(r.echo().uri, "/api/x", "the normalised path is forwarded");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_and_header_conditions() {
    within(30, "conditions", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::start(&fill(ROUTES, &[("A", a.addr())])).await;
        let mut c = Conn::connect(proxy.addr()).await;
        let h = "shop.test";
        assert_eq!(route_of(&mut c, "GET", h, "/api/x", false).await, "api-any");
        assert_eq!(
            route_of(&mut c, "POST", h, "/api/x", false).await,
            "api-write"
        );
        assert_eq!(
            route_of(&mut c, "PUT", h, "/api/x", false).await,
            "api-write"
        );
        assert_eq!(
            route_of(&mut c, "DELETE", h, "/api/x", false).await,
            "api-any"
        );
        assert_eq!(
            route_of(&mut c, "GET", h, "/api/x", true).await,
            "api-canary"
        );
        // Declaration order decides between equally long prefixes whose conditions all hold.
        assert_eq!(
            route_of(&mut c, "POST", h, "/api/x", true).await,
            "api-write"
        );
        // A header with another value does not satisfy the condition.
        let r = c
            .send(
                req("GET", h, "/api/x")
                    .header("x-canary", "2")
                    .body(empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.header("x-route"), Some("api-any"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_match_and_no_default_is_404() {
    within(30, "404", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::start(&fill(
            r#"
[upstreams.app]
endpoints = ["{A}"]

[[servers]]
names = ["only.test"]

[[servers.routes]]
prefix = "/only/"
upstream = "app"

[[servers.routes]]
exact = "/exactly"
methods = ["GET"]
upstream = "app"
"#,
            &[("A", a.addr())],
        ))
        .await;
        let addr = proxy.addr();
        let unknown_host = client::get_host(addr, "other.test", "/only/x").await;
        assert_eq!(unknown_host.status, 404);
        assert!(unknown_host.header("x-request-id").is_some());
        let unmatched_path = client::get_host(addr, "only.test", "/elsewhere").await;
        assert_eq!(unmatched_path.status, 404);
        let prefix_is_not_exact = client::get_host(addr, "only.test", "/only").await;
        assert_eq!(prefix_is_not_exact.status, 404);
        let exact_is_exact = client::get_host(addr, "only.test", "/exactly/").await;
        assert_eq!(exact_is_exact.status, 404);
        let wrong_method = client::send(
            addr,
            req("POST", "only.test", "/exactly")
                .body(client::full("x"))
                .unwrap(),
        )
        .await;
        assert_eq!(wrong_method.status, 404);
        assert_eq!(a.hits(), 0, "nothing unmatched reaches the upstream");
        let ok = client::get_host(addr, "only.test", "/exactly").await;
        assert_eq!(ok.status, 200);
        assert_eq!(a.hits(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_routing_for_new_requests() {
    within(30, "reload", async {
        let a = Backend::start("a").await;
        let b = Backend::start("b").await;
        let addrs = [("A", a.addr()), ("B", b.addr())];
        let before = r#"
[upstreams.one]
endpoints = ["{A}"]
[upstreams.two]
endpoints = ["{B}"]

[[servers]]
default = true

[[servers.routes]]
prefix = "/"
upstream = "one"
"#;
        let after = r#"
[upstreams.one]
endpoints = ["{A}"]
[upstreams.two]
endpoints = ["{B}"]

[[servers]]
default = true

[[servers.routes]]
prefix = "/"
upstream = "two"

[[servers.routes]]
prefix = "/new/"
redirect = { status = 308, location = "/moved$uri" }
"#;
        let proxy = TestProxy::start(&fill(before, &addrs)).await;
        let mut kept = Conn::connect(proxy.addr()).await;
        assert_eq!(kept.get("/x").await.backend(), "a");
        assert_eq!(client::get(proxy.addr(), "/new/x").await.backend(), "a");

        proxy.reload(&fill(after, &addrs));

        // New connections and already open keep-alive connections both see the new table.
        assert_eq!(client::get(proxy.addr(), "/x").await.backend(), "b");
        assert_eq!(kept.get("/x").await.backend(), "b");
        let moved = client::get(proxy.addr(), "/new/x").await;
        assert_eq!(moved.status, 308);
        assert_eq!(moved.header("location"), Some("/moved/new/x"));
        assert_eq!(a.hits(), 2);
        assert_eq!(b.hits(), 2);
    })
    .await;
}

//! Path rewrites (`strip_prefix`, `replace_prefix`, `regex_rewrite`; the query string is
//! kept), redirects (301/302/303/307/308 with templated `Location` and regex captures, never
//! reaching an upstream) and the upstream `Host` policy (`pass`, `endpoint`, template).

// Tests panic on purpose: a failed assertion or setup step is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tests::client::{self, Conn, empty, full, req};
use tests::{Backend, TestProxy, fill, within};

const CONFIG: &str = r#"
[upstreams.app]
endpoints = ["{A}"]

[[servers]]
names = ["shop.test"]
default = true

[[servers.routes]]
prefix = "/api/"
strip_prefix = "/api"
upstream = "app"

[[servers.routes]]
prefix = "/old/"
replace_prefix = "/new/v2/"
upstream = "app"

[[servers.routes]]
prefix = "/u/"
regex_rewrite = { pattern = "^/u/(\\d+)/(?P<rest>.*)$", replacement = "/users/$1/${rest}" }
upstream = "app"

[[servers.routes]]
exact = "/old-shop"
redirect = { status = 301, location = "$scheme://$host/products/" }

[[servers.routes]]
exact = "/found"
redirect = { location = "/elsewhere$request_uri" }

[[servers.routes]]
exact = "/see-other"
redirect = { status = 303, location = "/done?id=$request_id" }

[[servers.routes]]
regex = "^/item/(\\d+)/(\\w+)$"
redirect = { status = 308, location = "https://$host/products/$2/$1?$args" }

[[servers.routes]]
prefix = "/temp/"
redirect = { status = 307, location = "http://$http_x_target$uri" }

[[servers.routes]]
prefix = "/h/pass/"
host = "pass"
upstream = "app"

[[servers.routes]]
prefix = "/h/endpoint/"
host = "endpoint"
upstream = "app"

[[servers.routes]]
prefix = "/h/fixed/"
host = "internal.backend"
upstream = "app"

[[servers.routes]]
prefix = "/h/template/"
host = "$host.upstream.internal"
upstream = "app"

[[servers.routes]]
prefix = "/"
upstream = "app"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_rewrites_keep_the_query() {
    within(30, "rewrites", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::start(&fill(CONFIG, &[("A", a.addr())])).await;
        let mut c = Conn::connect(proxy.addr()).await;
        let cases = [
            ("/api/users?page=2", "/users?page=2"),
            ("/api/", "/"),
            ("/old/catalog/1", "/new/v2/catalog/1"),
            ("/old/x?q=a%20b", "/new/v2/x?q=a%20b"),
            ("/u/42/orders/7?full=1", "/users/42/orders/7?full=1"),
            // The regex does not match: the path is forwarded unchanged.
            ("/u/abc", "/u/abc"),
            ("/untouched/path?x", "/untouched/path?x"),
        ];
        for (sent, want) in cases {
            let r = c.get_host("shop.test", sent).await;
            assert_eq!(r.status, 200, "{sent}: {}", r.text());
            assert_eq!(
                r.echo().uri,
                want,
                "{sent} was forwarded as {}",
                r.echo().uri
            );
        }
        // A rewrite applies to any method and keeps the body.
        let r = c
            .send(
                req("POST", "shop.test", "/api/orders")
                    .body(full("{\"qty\":1}"))
                    .unwrap(),
            )
            .await;
        let e = r.echo();
        assert_eq!((e.method.as_str(), e.uri.as_str()), ("POST", "/orders"));
        assert_eq!(e.body, "{\"qty\":1}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_render_location_and_skip_the_upstream() {
    within(30, "redirects", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::start(&fill(CONFIG, &[("A", a.addr())])).await;
        let mut c = Conn::connect(proxy.addr()).await;
        let get = |path: &str, extra: Option<(&str, &str)>| {
            let mut b = req("GET", "Shop.Test:8080", path);
            if let Some((n, v)) = extra {
                b = b.header(n, v);
            }
            b.body(empty()).unwrap()
        };

        let r = c.send(get("/old-shop", None)).await;
        assert_eq!(r.status, 301);
        assert_eq!(r.header("location"), Some("http://shop.test/products/"));
        assert_eq!(r.header("content-length"), Some("0"));
        assert!(r.body.is_empty());

        let r = c.send(get("/found?a=1&b=2", None)).await;
        assert_eq!(r.status, 302, "302 is the default status");
        assert_eq!(r.header("location"), Some("/elsewhere/found?a=1&b=2"));

        let r = c.send(get("/see-other", None)).await;
        assert_eq!(r.status, 303);
        let rid = r.header("x-request-id").unwrap();
        assert_eq!(
            r.header("location"),
            Some(format!("/done?id={rid}").as_str())
        );

        let r = c.send(get("/item/42/blue?ref=mail", None)).await;
        assert_eq!(r.status, 308);
        assert_eq!(
            r.header("location"),
            Some("https://shop.test/products/blue/42?ref=mail"),
            "regex captures $1 and $2"
        );

        let r = c
            .send(get("/temp/a/b", Some(("x-target", "mirror.test:81"))))
            .await;
        assert_eq!(r.status, 307);
        assert_eq!(r.header("location"), Some("http://mirror.test:81/temp/a/b"));

        // A redirect answers a POST too, without reading it upstream.
        let r = c
            .send(
                req("POST", "shop.test", "/temp/x")
                    .body(full("payload"))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, 307);
        assert_eq!(a.hits(), 0, "a redirect route contacted the upstream");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_host_policy() {
    within(30, "host policy", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::start(&fill(CONFIG, &[("A", a.addr())])).await;
        let addr = proxy.addr();
        let host_seen = |r: &client::Resp| r.echo().header("host").map(str::to_owned);

        let r = client::get_host(addr, "Shop.Test:8080", "/h/pass/x").await;
        assert_eq!(host_seen(&r).as_deref(), Some("Shop.Test:8080"));
        let r = client::get_host(addr, "shop.test", "/h/default/x").await;
        assert_eq!(
            host_seen(&r).as_deref(),
            Some("shop.test"),
            "pass is the default"
        );

        let r = client::get_host(addr, "shop.test", "/h/endpoint/x").await;
        assert_eq!(host_seen(&r), Some(a.addr().to_string()));
        // The client's Host still travels as X-Forwarded-Host.
        assert_eq!(r.echo().header("x-forwarded-host"), Some("shop.test"));

        let r = client::get_host(addr, "shop.test", "/h/fixed/x").await;
        assert_eq!(host_seen(&r).as_deref(), Some("internal.backend"));

        let r = client::get_host(addr, "Shop.Test:8080", "/h/template/x").await;
        assert_eq!(
            host_seen(&r).as_deref(),
            Some("shop.test.upstream.internal")
        );
        assert_eq!(
            r.echo().header_all("host").len(),
            1,
            "exactly one Host upstream"
        );
    })
    .await;
}

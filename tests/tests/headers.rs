//! Header policy end to end: hop-by-hop fields removed in both directions, `X-Forwarded-*`,
//! `X-Real-IP`, `Via`, RFC 7239 `Forwarded`, per-server and per-route `set`/`add`/`remove`
//! with variables, and the request id (generated, kept, or replaced, and echoed).

// Tests panic on purpose: a failed assertion or setup step is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tests::client::{self, Conn, empty, req};
use tests::{Backend, TestProxy, fill, within};

const FORWARDING: &str = r#"
[proxy]
via = "edge-1"
forwarded = true

[upstreams.app]
endpoints = ["{A}"]

[[servers]]
default = true

[[servers.routes]]
prefix = "/"
upstream = "app"
"#;

fn is_hex32(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_removed_both_ways() {
    within(30, "hop-by-hop", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::start(&fill(FORWARDING, &[("A", a.addr())])).await;
        let mut c = Conn::connect(proxy.addr()).await;
        let r = c
            .send(
                req("GET", "shop.test", "/hop")
                    .header("connection", "keep-alive, x-secret")
                    .header("x-secret", "client-to-proxy only")
                    .header("keep-alive", "timeout=5")
                    .header("te", "trailers")
                    .header("trailer", "x-checksum")
                    .header("proxy-authorization", "Basic Zm9vOmJhcg==")
                    .header("proxy-connection", "keep-alive")
                    .header("x-end-to-end", "kept")
                    // Asks the backend to send hop-by-hop fields back.
                    .header("x-response-header", "Connection: x-internal")
                    .header("x-response-header", "X-Internal: upstream-to-proxy only")
                    .header("x-response-header", "Keep-Alive: timeout=9")
                    .header("x-response-header", "Proxy-Authenticate: Basic realm=up")
                    .header("x-response-header", "X-Kept: yes")
                    .header("x-response-header", "Via: 1.1 origin-cache")
                    .body(empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, 200);
        let echo = r.echo();
        for name in [
            "x-secret",
            "keep-alive",
            "te",
            "proxy-authorization",
            "proxy-connection",
        ] {
            assert!(
                !echo.has(name),
                "`{name}` reached the upstream: {:?}",
                echo.headers
            );
        }
        assert!(
            echo.header_all("connection")
                .iter()
                .all(|v| !v.contains("x-secret")),
            "{:?}",
            echo.headers
        );
        assert_eq!(echo.header("x-end-to-end"), Some("kept"));
        // RFC 9110 section 6.6.2: Trailer describes the message, so it is end-to-end.
        assert_eq!(echo.header("trailer"), Some("x-checksum"));

        for name in ["x-internal", "keep-alive", "proxy-authenticate"] {
            assert!(
                r.header(name).is_none(),
                "`{name}` reached the client: {:?}",
                r.headers
            );
        }
        assert!(
            r.header_all("connection")
                .iter()
                .all(|v| !v.contains("x-internal")),
            "{:?}",
            r.headers
        );
        assert_eq!(r.header("x-kept"), Some("yes"));
        assert_eq!(
            r.header_all("via"),
            ["1.1 origin-cache, 1.1 edge-1"],
            "Via is appended to"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers() {
    within(30, "forwarding", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::start(&fill(FORWARDING, &[("A", a.addr())])).await;
        let mut c = Conn::connect(proxy.addr()).await;
        let r = c
            .send(
                req("GET", "Shop.Test:8443", "/fwd")
                    .header("x-forwarded-for", "203.0.113.7, 198.51.100.2")
                    .header("x-forwarded-proto", "https")
                    .header("x-real-ip", "10.9.9.9")
                    .header("forwarded", "for=203.0.113.7")
                    .header("via", "1.0 client-proxy")
                    .body(empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, 200);
        let e = r.echo();
        assert_eq!(
            e.header_all("x-forwarded-for"),
            ["203.0.113.7, 198.51.100.2, 127.0.0.1"],
            "XFF is appended to, in one field line"
        );
        assert_eq!(
            e.header("x-forwarded-proto"),
            Some("http"),
            "XFP is overwritten"
        );
        assert_eq!(e.header("x-forwarded-host"), Some("Shop.Test:8443"));
        assert_eq!(
            e.header("x-real-ip"),
            Some("127.0.0.1"),
            "X-Real-IP is overwritten"
        );
        assert_eq!(
            e.header_all("forwarded"),
            ["for=203.0.113.7, for=127.0.0.1;host=\"Shop.Test:8443\";proto=http"]
        );
        assert_eq!(e.header_all("via"), ["1.0 client-proxy, 1.1 edge-1"]);
        assert_eq!(
            e.header("host"),
            Some("Shop.Test:8443"),
            "Host passes by default"
        );
        // Via on the response too (RFC 9110 section 7.6.3).
        assert_eq!(r.header_all("via"), ["1.1 edge-1"]);

        // Without a previous XFF the field is just the client.
        let e = c.get("/plain").await.echo();
        assert_eq!(e.header_all("x-forwarded-for"), ["127.0.0.1"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_can_be_turned_off() {
    within(30, "forwarding off", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::start(&fill(
            r#"
[proxy]
x_forwarded = false
x_real_ip = false

[upstreams.app]
endpoints = ["{A}"]

[[servers]]
default = true

[[servers.routes]]
prefix = "/"
upstream = "app"
"#,
            &[("A", a.addr())],
        ))
        .await;
        let r = client::get(proxy.addr(), "/").await;
        let e = r.echo();
        for name in [
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-real-ip",
            "via",
            "forwarded",
        ] {
            assert!(!e.has(name), "`{name}` was added: {:?}", e.headers);
        }
        assert!(r.header("via").is_none());
    })
    .await;
}

const RULES: &str = r#"
[upstreams.app]
endpoints = ["{A}"]

[[servers]]
default = true
request_headers.set = { "x-client" = "$remote_addr", "x-host" = "$host", "x-scheme" = "$scheme", "x-rid" = "$request_id", "x-request-uri" = "$request_uri", "x-uri" = "$uri", "x-args" = "$args", "x-agent" = "$http_user_agent", "x-replaced" = "by-server", "x-price" = "$$5" }
request_headers.add = { "x-multi" = "added" }
request_headers.remove = ["x-remove-me", "cookie"]
response_headers.set = { "x-resp-rid" = "$request_id" }
response_headers.add = { "x-resp-added" = "yes" }
response_headers.remove = ["x-backend-secret"]

[[servers.routes]]
regex = "^/items/(\\d+)/(\\w+)$"
upstream = "app"
request_headers.set = { "x-captures" = "$1-$2", "x-replaced" = "by-route" }
response_headers.set = { "x-item" = "$1" }

[[servers.routes]]
prefix = "/"
upstream = "app"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_add_remove_with_variables() {
    within(30, "header rules", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::start(&fill(RULES, &[("A", a.addr())])).await;
        let mut c = Conn::connect(proxy.addr()).await;
        let r = c
            .send(
                req("GET", "Shop.Test:9999", "/items/42/blue?size=m&x=1")
                    .header("user-agent", "e2e-agent/1.0")
                    .header("x-remove-me", "1")
                    .header("cookie", "session=secret")
                    .header("x-multi", "from-client")
                    .header("x-replaced", "by-client")
                    .header("x-response-header", "X-Backend-Secret: hunter2")
                    .header("x-response-header", "X-Resp-Added: from-backend")
                    .body(empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let e = r.echo();
        let rid = r
            .header("x-request-id")
            .expect("x-request-id on the response");
        assert!(is_hex32(rid), "generated id {rid:?}");
        assert_eq!(
            e.header("x-request-id"),
            Some(rid),
            "upstream sees the same id"
        );
        assert_eq!(e.header("x-client"), Some("127.0.0.1"));
        assert_eq!(
            e.header("x-host"),
            Some("shop.test"),
            "$host: lower case, no port"
        );
        assert_eq!(e.header("x-scheme"), Some("http"));
        assert_eq!(e.header("x-rid"), Some(rid));
        assert_eq!(e.header("x-request-uri"), Some("/items/42/blue?size=m&x=1"));
        assert_eq!(e.header("x-uri"), Some("/items/42/blue"));
        assert_eq!(e.header("x-args"), Some("size=m&x=1"));
        assert_eq!(e.header("x-agent"), Some("e2e-agent/1.0"));
        assert_eq!(e.header("x-price"), Some("$5"));
        assert_eq!(e.header("x-captures"), Some("42-blue"));
        assert_eq!(
            e.header_all("x-replaced"),
            ["by-route"],
            "route rules run after server rules"
        );
        assert_eq!(e.header_all("x-multi"), ["from-client", "added"]);
        assert!(!e.has("x-remove-me"));
        assert!(!e.has("cookie"));

        assert_eq!(r.header("x-resp-rid"), Some(rid));
        assert_eq!(r.header("x-item"), Some("42"));
        assert_eq!(r.header_all("x-resp-added"), ["from-backend", "yes"]);
        assert!(r.header("x-backend-secret").is_none());

        // The non-regex route has no captures and no route rules.
        let e = c.get_host("shop.test", "/plain").await.echo();
        assert_eq!(e.header_all("x-replaced"), ["by-server"]);
        assert!(!e.has("x-captures"));
        assert_eq!(e.header("x-args"), Some(""));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_generated_kept_or_replaced() {
    within(30, "request id", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::start(&fill(FORWARDING, &[("A", a.addr())])).await;
        let mut c = Conn::connect(proxy.addr()).await;

        let r1 = c.get("/").await;
        let r2 = c.get("/").await;
        let (id1, id2) = (r1.header("x-request-id").unwrap(), r2.header("x-request-id").unwrap());
        assert!(is_hex32(id1) && is_hex32(id2), "{id1:?} {id2:?}");
        assert_ne!(id1, id2);
        assert_eq!(r1.echo().header("x-request-id"), Some(id1));

        let kept = c
            .send(
                req("GET", "h.test", "/")
                    .header("x-request-id", "trace-abc_123.4:5")
                    .body(empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(kept.header("x-request-id"), Some("trace-abc_123.4:5"));
        assert_eq!(kept.echo().header_all("x-request-id"), ["trace-abc_123.4:5"]);

        for bad in ["has space", "semi;colon", &"a".repeat(129)] {
            let replaced = c
                .send(
                    req("GET", "h.test", "/")
                        .header("x-request-id", bad)
                        .body(empty())
                        .unwrap(),
                )
                .await;
            let id = replaced.header("x-request-id").unwrap();
            assert!(is_hex32(id), "invalid id {bad:?} was kept as {id:?}");
            assert_eq!(replaced.echo().header_all("x-request-id"), [id]);
        }

        // Answers the proxy makes itself carry the id too.
        let not_found = TestProxy::start(&fill(
            "[upstreams.app]\nendpoints = [\"{A}\"]\n[[servers]]\nnames = [\"x.test\"]\n[[servers.routes]]\nprefix = \"/\"\nupstream = \"app\"\n",
            &[("A", a.addr())],
        ))
        .await;
        let r = client::get_host(not_found.addr(), "nope.test", "/").await;
        assert_eq!(r.status, 404);
        assert!(is_hex32(r.header("x-request-id").unwrap_or("")));
    })
    .await;
}

//! HTTP/1.1 connection behaviour through the proxy: pipelining (responses in request order),
//! `Expect: 100-continue`, keep-alive reuse on both sides, `Connection: close`, HTTP/1.0, HEAD.

// Tests panic on purpose: a failed assertion or setup step is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tests::client::{Conn, Echo};
use tests::raw::RawConn;
use tests::{Backend, TestProxy, fill, within};

const CONFIG: &str = r#"
[upstreams.app]
endpoints = ["{A}"]

[[servers]]
names = ["c.test"]

[[servers.routes]]
prefix = "/"
upstream = "app"
"#;

fn crlf(s: &str) -> Vec<u8> {
    s.replace('\n', "\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    within(30, "pipelining", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::start(&fill(CONFIG, &[("A", a.addr())])).await;
        let mut conn = RawConn::connect(proxy.addr()).await;
        // The first is the slowest: its answer must still come first.
        conn.send(&crlf(
            "GET /first HTTP/1.1\nHost: c.test\nX-Delay-Ms: 200\n\n\
             GET /second HTTP/1.1\nHost: c.test\n\n\
             POST /third HTTP/1.1\nHost: c.test\nContent-Length: 5\n\nhello",
        ))
        .await
        .unwrap();
        let mut uris = Vec::new();
        for _ in 0..3 {
            let r = conn.read_response().await.unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            let e = Echo::parse(&r.body).expect("an echo");
            uris.push((e.uri, e.body));
        }
        assert_eq!(
            uris,
            [
                ("/first".to_owned(), String::new()),
                ("/second".to_owned(), String::new()),
                ("/third".to_owned(), "hello".to_owned())
            ]
        );
        // The connection is still usable afterwards.
        conn.send(&crlf("GET /fourth HTTP/1.1\nHost: c.test\n\n"))
            .await
            .unwrap();
        let r = conn.read_response().await.unwrap();
        assert_eq!(Echo::parse(&r.body).unwrap().uri, "/fourth");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue() {
    within(30, "100-continue", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::start(&fill(CONFIG, &[("A", a.addr())])).await;
        let mut conn = RawConn::connect(proxy.addr()).await;
        conn.send(&crlf(
            "PUT /upload HTTP/1.1\nHost: c.test\nContent-Length: 11\nExpect: 100-continue\n\n",
        ))
        .await
        .unwrap();
        let interim = conn.read_response().await.unwrap();
        assert_eq!(interim.status, 100, "expected 100 Continue before the body");
        conn.send(b"hello world").await.unwrap();
        let r = conn.read_response().await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let e = Echo::parse(&r.body).unwrap();
        assert_eq!((e.body_len, e.body.as_str()), (11, "hello world"));

        // When the proxy answers by itself (no route), no 100 is sent and the body is not
        // awaited.
        let mut conn = RawConn::connect(proxy.addr()).await;
        conn.send(&crlf(
            "POST /x HTTP/1.1\nHost: unknown.test\nContent-Length: 1000\nExpect: 100-continue\n\n",
        ))
        .await
        .unwrap();
        let r = conn.read_response().await.unwrap();
        assert_eq!(r.status, 404, "a final status instead of 100 Continue");
        assert_eq!(a.hits(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_is_reused_on_both_sides() {
    within(30, "keep-alive", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::start(&fill(CONFIG, &[("A", a.addr())])).await;
        let mut c = Conn::connect(proxy.addr()).await;
        for i in 0..10 {
            let r = c.get_host("c.test", &format!("/k/{i}")).await;
            assert_eq!(r.status, 200);
            assert!(r.header("connection").is_none_or(|v| !v.contains("close")));
            assert!(!c.is_closed(), "the proxy closed a keep-alive connection");
        }
        assert_eq!(a.hits(), 10);
        assert_eq!(a.accepts(), 1, "the upstream connection was not pooled");

        // A second client connection reuses the same pooled upstream connection.
        let mut c2 = Conn::connect(proxy.addr()).await;
        c2.get_host("c.test", "/k/again").await;
        assert_eq!(a.accepts(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_http10_and_head() {
    within(30, "close and HEAD", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::start(&fill(CONFIG, &[("A", a.addr())])).await;

        let mut conn = RawConn::connect(proxy.addr()).await;
        conn.send(&crlf(
            "GET /bye HTTP/1.1\nHost: c.test\nConnection: close\n\n",
        ))
        .await
        .unwrap();
        let r = conn.read_response().await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), Some("close"));
        assert!(conn.closed_within(Duration::from_secs(3)).await);

        let mut conn = RawConn::connect(proxy.addr()).await;
        conn.send(&crlf("GET /old HTTP/1.0\nHost: c.test\n\n"))
            .await
            .unwrap();
        let r = conn.read_response().await.unwrap();
        assert_eq!(r.status, 200);
        let e = Echo::parse(&r.body).unwrap();
        assert_eq!(e.uri, "/old");
        assert!(
            conn.closed_within(Duration::from_secs(3)).await,
            "HTTP/1.0 without keep-alive"
        );

        // HTTP/1.0 needs no Host; the default server takes it and the upstream gets one.
        let with_default = TestProxy::start(&fill(
            &CONFIG.replace(
                "names = [\"c.test\"]",
                "names = [\"c.test\"]\ndefault = true",
            ),
            &[("A", a.addr())],
        ))
        .await;
        let mut conn = RawConn::connect(with_default.addr()).await;
        conn.send(&crlf("GET /no-host HTTP/1.0\n\n")).await.unwrap();
        let r = conn.read_response().await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let e = Echo::parse(&r.body).unwrap();
        assert_eq!(e.header("host"), Some(a.addr().to_string().as_str()));

        // HEAD: headers, no body; the next response on the connection is intact.
        let mut conn = RawConn::connect(proxy.addr()).await;
        conn.send(&crlf(
            "HEAD /h HTTP/1.1\nHost: c.test\n\nGET /after-head HTTP/1.1\nHost: c.test\n\n",
        ))
        .await
        .unwrap();
        let head = conn.read_response_for(true).await.unwrap();
        assert_eq!(head.status, 200);
        let next = conn.read_response().await.unwrap();
        assert_eq!(
            Echo::parse(&next.body).expect("an echo after HEAD").uri,
            "/after-head"
        );
    })
    .await;
}

//! Answers the proxy makes itself when the upstream fails: 502 for a refused connection, a
//! reset, a close without answer or a non-HTTP answer; 503 with `Retry-After` when every
//! endpoint is ejected (without panic mode); 504 when the response head does not arrive within
//! `response_header_timeout`. Upstream statuses (even 5xx) are relayed untouched.

// Tests panic on purpose: a failed assertion or setup step is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tests::client::{self, Conn, empty, req};
use tests::{Backend, Mode, TestProxy, fill, unused_addr, within};
use tokio::time::Instant;

fn single(extra: &str) -> String {
    format!(
        r#"
[upstreams.app]
endpoints = ["{{A}}"]
{extra}

[[servers]]
default = true

[[servers.routes]]
prefix = "/"
upstream = "app"
"#
    )
}

fn assert_proxy_answer(r: &client::Resp, status: u16, why: &str) {
    assert_eq!(r.status, status, "{why}: body {:?}", r.text());
    assert!(
        r.header("x-backend").is_none(),
        "{why}: relayed a backend answer"
    );
    assert!(
        r.text().starts_with(&status.to_string()),
        "{why}: body {:?}",
        r.text()
    );
    assert!(r.header("x-request-id").is_some(), "{why}: no request id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_gateway_for_each_upstream_failure() {
    within(30, "502", async {
        let refused = unused_addr().await;
        let proxy = TestProxy::start(&fill(&single("max_fails = 0"), &[("A", refused)])).await;
        let r = client::get(proxy.addr(), "/").await;
        assert_proxy_answer(&r, 502, "connection refused");

        for mode in [Mode::Reset, Mode::Close, Mode::Garbage] {
            let b = Backend::start_mode("broken", mode).await;
            // One attempt per request, so that each request is one connection.
            let proxy = TestProxy::start(&fill(
                &single("max_fails = 0\nmax_attempts = 1"),
                &[("A", b.addr())],
            ))
            .await;
            let mut c = Conn::connect(proxy.addr()).await;
            for i in 0..2 {
                let r = c.get(&format!("/try/{i}")).await;
                assert_proxy_answer(&r, 502, &format!("{mode:?} #{i}"));
            }
            assert_eq!(b.accepts(), 2, "{mode:?}: one connection per attempt");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_unavailable_with_retry_after_when_all_are_ejected() {
    within(30, "503", async {
        let dead1 = unused_addr().await;
        let dead2 = unused_addr().await;
        let proxy = TestProxy::start(&fill(
            r#"
[upstreams.app]
endpoints = ["{A}", "{B}"]
max_fails = 1
fail_timeout = "20s"
# Without panic mode, and with every endpoint allowed out, nothing is left to try.
panic_threshold = 0
outlier = { max_ejection_percent = 100 }

[[servers]]
default = true

[[servers.routes]]
prefix = "/"
upstream = "app"
"#,
            &[("A", dead1), ("B", dead2)],
        ))
        .await;
        let mut c = Conn::connect(proxy.addr()).await;
        let first = c.get("/").await;
        assert_proxy_answer(&first, 502, "both endpoints refuse");
        assert!(first.header("retry-after").is_none());
        let second = c.get("/").await;
        assert_proxy_answer(&second, 503, "both endpoints ejected");
        let retry: u64 = second
            .header("retry-after")
            .expect("Retry-After on 503")
            .parse()
            .expect("Retry-After in seconds");
        assert!((1..=20).contains(&retry), "Retry-After {retry}");
        // Still the same while ejected; a new connection gets the same answer.
        let third = client::get(proxy.addr(), "/").await;
        assert_proxy_answer(&third, 503, "still ejected");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_timeout_when_the_head_is_late() {
    within(30, "504", async {
        let slow = Backend::start("slow").await;
        let proxy = TestProxy::start(&fill(
            &single("response_header_timeout = \"300ms\"\nmax_fails = 0"),
            &[("A", slow.addr())],
        ))
        .await;
        let mut c = Conn::connect(proxy.addr()).await;
        let started = Instant::now();
        let r = c
            .send(
                req("GET", "t.test", "/slow")
                    .header("x-delay-ms", "3000")
                    .body(empty())
                    .unwrap(),
            )
            .await;
        let took = started.elapsed();
        assert_proxy_answer(&r, 504, "3 s backend, 300 ms timeout");
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_millis(2500),
            "504 after {took:?}"
        );
        // A prompt answer on the same route is fine.
        let ok = client::get(proxy.addr(), "/fast").await;
        assert_eq!(ok.status, 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_error_statuses_are_relayed_not_replaced() {
    within(30, "relay 5xx", async {
        let b = Backend::start("b").await;
        let proxy = TestProxy::start(&fill(&single(""), &[("A", b.addr())])).await;
        let mut c = Conn::connect(proxy.addr()).await;
        for status in [500u16, 502, 503, 404, 418] {
            let r = c
                .send(
                    req("GET", "t.test", "/")
                        .header("x-status", status.to_string())
                        .body(empty())
                        .unwrap(),
                )
                .await;
            assert_eq!(r.status, status);
            assert_eq!(
                r.backend(),
                "b",
                "status {status} must come from the backend"
            );
        }
        // Upstream 5xx answers are not failures for passive health.
        let r = c.get("/").await;
        assert_eq!(r.status, 200);
    })
    .await;
}

/// Responses that cannot be relayed safely are 502: both `Content-Length` and
/// `Transfer-Encoding` (RFC 9112 section 6.3), or a 101 to a request that asked for no upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_gateway_for_invalid_upstream_responses() {
    within(30, "invalid responses", async {
        let cases: [(&str, &'static [u8]); 4] = [
            (
                "both Content-Length and Transfer-Encoding",
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            ),
            (
                "101 without an upgrade request",
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: evil\r\n\r\nraw bytes",
            ),
            ("invalid status line", b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n"),
            (
                "truncated body",
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a few bytes",
            ),
        ];
        let mut failures = Vec::new();
        for (name, bytes) in cases {
            let b = Backend::start_mode("raw", Mode::Raw(bytes)).await;
            let proxy =
                TestProxy::start(&fill(&single("max_fails = 0"), &[("A", b.addr())])).await;
            let mut c = Conn::connect(proxy.addr()).await;
            match c.try_send(req("GET", "t.test", "/").body(empty()).unwrap()).await {
                Ok(r) if r.status == 502 => {}
                // A truncated body can only be noticed after the head was relayed: the client
                // must then see the body fail, not a short body passed off as complete.
                Ok(r) if name == "truncated body" => {
                    failures.push(format!("{name}: relayed as complete: {} {:?}", r.status, r.text()))
                }
                Err(_) if name == "truncated body" => {}
                Ok(r) => failures.push(format!("{name}: {} {:?} {:?}", r.status, r.headers, r.text())),
                Err(e) => failures.push(format!("{name}: transport error {e:?}")),
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    })
    .await;
}

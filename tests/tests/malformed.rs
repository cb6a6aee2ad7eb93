//! Malformed and over-limit requests over a raw socket: each gets its status (400, or
//! 405/408/413/414/431) and the backend records no request. Framing errors also close the
//! connection, so nothing after them can be smuggled in as a second request.
//!
//! Each table-driven test runs every case and reports all mismatches at once.

// Tests panic on purpose: a failed assertion or setup step is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tests::raw::RawConn;
use tests::{Backend, TestProxy, within};
use tokio::time::Instant;

/// Proxy settings for these tests; the upstream and routes are `TestProxy::single`'s.
const SETTINGS: &str = r#"
[proxy]
max_uri_bytes = 1024
max_header_bytes = 4096
max_body_bytes = 1000
header_read_timeout = "1s"
"#;

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    status: u16,
    /// The connection must be closed after the answer.
    closes: bool,
}

fn case(name: &'static str, bytes: impl Into<Vec<u8>>, status: u16) -> Case {
    Case {
        name,
        bytes: bytes.into(),
        status,
        closes: true,
    }
}

/// Runs every case on its own connection; returns one line per mismatch.
async fn run_cases(proxy: &TestProxy, backend: &Backend, cases: &[Case]) -> Vec<String> {
    let mut failures = Vec::new();
    for c in cases {
        let before = backend.hits();
        let mut conn = RawConn::connect(proxy.addr()).await;
        conn.timeout = Duration::from_secs(5);
        if let Err(e) = conn.send(&c.bytes).await {
            failures.push(format!("{}: write failed: {e}", c.name));
            continue;
        }
        match conn.read_response().await {
            Ok(r) if r.status == c.status => {
                if c.closes && !conn.closed_within(Duration::from_secs(3)).await {
                    failures.push(format!(
                        "{}: {} but the connection stayed open",
                        c.name, r.status
                    ));
                }
            }
            Ok(r) => failures.push(format!(
                "{}: expected {}, got {} {:?} body {:?}",
                c.name,
                c.status,
                r.status,
                r.headers,
                r.text()
            )),
            Err(e) => failures.push(format!(
                "{}: expected {}, got no response: {e}",
                c.name, c.status
            )),
        }
        // Give a wrongly forwarded request the time to arrive.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let after = backend.hits();
        if after != before {
            failures.push(format!(
                "{}: forwarded to the backend as {:?}",
                c.name,
                backend.last_request()
            ));
        }
    }
    failures
}

fn req(head: &str) -> Vec<u8> {
    head.replace('\n', "\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_errors_are_rejected() {
    within(60, "framing", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::single(a.addr(), SETTINGS).await;
        let cases = [
            case(
                "Content-Length and Transfer-Encoding",
                req("POST / HTTP/1.1\nHost: m.test\nContent-Length: 5\nTransfer-Encoding: chunked\n\n0\n\n"),
                400,
            ),
            case(
                "Transfer-Encoding before Content-Length",
                req("POST / HTTP/1.1\nHost: m.test\nTransfer-Encoding: chunked\nContent-Length: 5\n\n0\n\n"),
                400,
            ),
            case(
                "differing Content-Length lines",
                req("POST / HTTP/1.1\nHost: m.test\nContent-Length: 5\nContent-Length: 6\n\nhello!"),
                400,
            ),
            case(
                "differing Content-Length list",
                req("POST / HTTP/1.1\nHost: m.test\nContent-Length: 5, 6\n\nhello!"),
                400,
            ),
            case(
                "non-numeric Content-Length",
                req("POST / HTTP/1.1\nHost: m.test\nContent-Length: abc\n\nhello"),
                400,
            ),
            case(
                "negative Content-Length",
                req("POST / HTTP/1.1\nHost: m.test\nContent-Length: -1\n\nhello"),
                400,
            ),
            case(
                "signed Content-Length",
                req("POST / HTTP/1.1\nHost: m.test\nContent-Length: +5\n\nhello"),
                400,
            ),
            case(
                "overflowing Content-Length",
                req("POST / HTTP/1.1\nHost: m.test\nContent-Length: 99999999999999999999999\n\nhello"),
                400,
            ),
            case(
                "invalid chunk size",
                req("POST / HTTP/1.1\nHost: m.test\nTransfer-Encoding: chunked\n\nzz\nhello\n0\n\n"),
                400,
            ),
            case(
                "overflowing chunk size",
                req("POST / HTTP/1.1\nHost: m.test\nTransfer-Encoding: chunked\n\nfffffffffffffffffffff\nhello\n0\n\n"),
                400,
            ),
            case(
                "Transfer-Encoding gzip only",
                req("POST / HTTP/1.1\nHost: m.test\nTransfer-Encoding: gzip\n\nhello"),
                400,
            ),
            case(
                "chunked not the final coding",
                req("POST / HTTP/1.1\nHost: m.test\nTransfer-Encoding: chunked, gzip\n\n5\nhello\n0\n\n"),
                400,
            ),
            case(
                "two Transfer-Encoding lines, chunked first",
                req("POST / HTTP/1.1\nHost: m.test\nTransfer-Encoding: chunked\nTransfer-Encoding: identity\n\n5\nhello\n0\n\n"),
                400,
            ),
            case(
                "Transfer-Encoding identity",
                req("POST / HTTP/1.1\nHost: m.test\nTransfer-Encoding: identity\n\nhello"),
                400,
            ),
            case(
                "Transfer-Encoding in HTTP/1.0",
                req("POST / HTTP/1.0\nHost: m.test\nTransfer-Encoding: chunked\n\n5\nhello\n0\n\n"),
                400,
            ),
        ];
        let failures = run_cases(&proxy, &a, &cases).await;
        assert!(failures.is_empty(), "{failures:#?}");
        assert_eq!(a.hits(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_heads_are_rejected() {
    within(60, "heads", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::single(a.addr(), SETTINGS).await;
        let cases = [
            case(
                "obs-fold",
                req("GET / HTTP/1.1\nHost: m.test\nX-Folded: first\n  second\n\n"),
                400,
            ),
            case(
                "missing Host",
                req("GET / HTTP/1.1\nUser-Agent: t\n\n"),
                400,
            ),
            case(
                "two Host lines",
                req("GET / HTTP/1.1\nHost: m.test\nHost: other.test\n\n"),
                400,
            ),
            case(
                "the same Host twice",
                req("GET / HTTP/1.1\nHost: m.test\nHost: m.test\n\n"),
                400,
            ),
            case(
                "Host with a space",
                req("GET / HTTP/1.1\nHost: m test\n\n"),
                400,
            ),
            case(
                "Host with a path",
                req("GET / HTTP/1.1\nHost: m.test/evil\n\n"),
                400,
            ),
            case(
                "space before the colon",
                req("GET / HTTP/1.1\nHost : m.test\n\n"),
                400,
            ),
            case(
                "invalid header name",
                req("GET / HTTP/1.1\nHost: m.test\nBad(Name): x\n\n"),
                400,
            ),
            case(
                "header name with a space",
                req("GET / HTTP/1.1\nHost: m.test\nX Y: z\n\n"),
                400,
            ),
            case(
                "control character in a value",
                req("GET / HTTP/1.1\nHost: m.test\nX-Bad: a\u{1}b\n\n"),
                400,
            ),
            case(
                "NUL in a value",
                req("GET / HTTP/1.1\nHost: m.test\nX-Bad: a\u{0}b\n\n"),
                400,
            ),
            case(
                "bare CR in a value",
                b"GET / HTTP/1.1\r\nHost: m.test\r\nX-Bad: a\rb\r\n\r\n".to_vec(),
                400,
            ),
            case("not a request line", req("HELLO\n\n"), 400),
            case(
                "space in the target",
                req("GET /a b HTTP/1.1\nHost: m.test\n\n"),
                400,
            ),
            case(
                "unknown version",
                req("GET / HTTP/1.7\nHost: m.test\n\n"),
                400,
            ),
        ];
        let failures = run_cases(&proxy, &a, &cases).await;
        assert!(failures.is_empty(), "{failures:#?}");
        assert_eq!(a.hits(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_connect() {
    within(60, "limits", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::single(a.addr(), SETTINGS).await;
        let long_target = format!("GET /{} HTTP/1.1\nHost: m.test\n\n", "a".repeat(1100));
        let big_header = format!(
            "GET / HTTP/1.1\nHost: m.test\nX-Big: {}\n\n",
            "b".repeat(5000)
        );
        let many_headers = format!(
            "GET / HTTP/1.1\nHost: m.test\n{}\n",
            (0..150).map(|i| format!("X-H{i}: v\n")).collect::<String>()
        );
        let big_body = format!(
            "POST / HTTP/1.1\nHost: m.test\nContent-Length: 5000\n\n{}",
            "c".repeat(5000)
        );
        let cases = [
            case("target over max_uri_bytes", req(&long_target), 414),
            case("headers over max_header_bytes", req(&big_header), 431),
            case("more fields than max_headers", req(&many_headers), 431),
            case("Content-Length over max_body_bytes", req(&big_body), 413),
            // Answered at once: no 100 Continue, and the body is never awaited.
            case(
                "over max_body_bytes with Expect: 100-continue",
                req(
                    "POST / HTTP/1.1\nHost: m.test\nContent-Length: 5000\nExpect: 100-continue\n\n",
                ),
                413,
            ),
            Case {
                closes: false,
                ..case(
                    "CONNECT",
                    req("CONNECT example.com:443 HTTP/1.1\nHost: example.com:443\n\n"),
                    405,
                )
            },
        ];
        let failures = run_cases(&proxy, &a, &cases).await;
        assert!(failures.is_empty(), "{failures:#?}");
        assert_eq!(a.hits(), 0);

        // Right at the limits, requests pass.
        let at_limit = format!(
            "GET /{} HTTP/1.1\nHost: m.test\nConnection: close\n\n",
            "a".repeat(900)
        );
        let r = tests::raw::exchange(proxy.addr(), &req(&at_limit))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        let body_at_limit = format!(
            "POST / HTTP/1.1\nHost: m.test\nContent-Length: 1000\nConnection: close\n\n{}",
            "c".repeat(1000)
        );
        let r = tests::raw::exchange(proxy.addr(), &req(&body_at_limit))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(a.hits(), 2);
    })
    .await;
}

/// A chunked body larger than `max_body_bytes` has no Content-Length to check up front; it is
/// cut off at the limit and answered 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_the_limit_is_413() {
    within(30, "chunked limit", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::single(a.addr(), SETTINGS).await;
        let mut body = String::new();
        for _ in 0..6 {
            body.push_str(&format!("12c\r\n{}\r\n", "d".repeat(300)));
        }
        body.push_str("0\r\n\r\n");
        let mut bytes = req("POST / HTTP/1.1\nHost: m.test\nTransfer-Encoding: chunked\n\n");
        bytes.extend_from_slice(body.as_bytes());
        let mut conn = RawConn::connect(proxy.addr()).await;
        conn.send(&bytes).await.unwrap();
        let r = conn.read_response().await.unwrap();
        assert_eq!(r.status, 413, "{:?} {}", r.headers, r.text());
        assert!(
            r.header("x-backend").is_none(),
            "the backend's answer was relayed"
        );
    })
    .await;
}

/// A request head that does not finish within `header_read_timeout` gets 408 and a close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_head_gets_408_and_close() {
    within(30, "408", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::single(a.addr(), SETTINGS).await;
        let mut conn = RawConn::connect(proxy.addr()).await;
        let started = Instant::now();
        conn.send(b"GET /slow HTTP/1.1\r\nHost: m.test\r\nX-Part: ")
            .await
            .unwrap();
        let r = conn.read_response().await.expect("a 408 answer");
        let took = started.elapsed();
        assert_eq!(r.status, 408);
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "408 after {took:?} with a 1 s timeout"
        );
        assert!(
            conn.closed_within(Duration::from_secs(2)).await,
            "not closed after 408"
        );
        assert_eq!(a.hits(), 0);

        // Trickling bytes does not extend the deadline (slowloris).
        let mut conn = RawConn::connect(proxy.addr()).await;
        let started = Instant::now();
        let mut answered = None;
        for piece in [
            &b"GET / HT"[..],
            b"TP/1.1\r\n",
            b"Host: m",
            b".test\r\n",
            b"X-A: 1\r\n",
            b"X-B: 2\r\n",
        ] {
            if conn.send(piece).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            if conn.closed_within(Duration::from_millis(1)).await {
                break;
            }
        }
        if let Ok(r) = conn.read_response().await {
            answered = Some(r.status);
        }
        assert_eq!(
            answered,
            Some(408),
            "trickled head after {:?}",
            started.elapsed()
        );
        assert!(started.elapsed() < Duration::from_secs(4));
        assert_eq!(a.hits(), 0);
    })
    .await;
}

/// The classic CL.TE smuggling payload: one 400, then the connection is closed, and the
/// request hidden in the body never reaches the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggled_request_never_reaches_the_backend() {
    within(30, "smuggling", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::single(a.addr(), SETTINGS).await;
        let payloads = [
            req("POST / HTTP/1.1\nHost: m.test\nContent-Length: 4\nTransfer-Encoding: chunked\n\n0\n\nGET /smuggled HTTP/1.1\nHost: m.test\n\n"),
            req("POST / HTTP/1.1\nHost: m.test\nTransfer-Encoding: xchunked\n\n0\n\nGET /smuggled HTTP/1.1\nHost: m.test\n\n"),
            req("POST / HTTP/1.1\nHost: m.test\nContent-Length: 0\nContent-Length: 44\n\nGET /smuggled HTTP/1.1\nHost: m.test\n\n"),
        ];
        let mut failures = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            let mut conn = RawConn::connect(proxy.addr()).await;
            conn.send(p).await.unwrap();
            match conn.read_response().await {
                Ok(r) if r.status == 400 => {}
                Ok(r) => failures.push(format!("payload {i}: status {} {:?}", r.status, r.headers)),
                Err(e) => failures.push(format!("payload {i}: no response: {e}")),
            }
            if !conn.closed_within(Duration::from_secs(3)).await {
                failures.push(format!("payload {i}: connection still open"));
            }
            if !conn.buffered().is_empty() {
                failures.push(format!(
                    "payload {i}: a second response followed: {:?}",
                    String::from_utf8_lossy(conn.buffered())
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let seen = a.requests();
        if seen.iter().any(|r| r.uri == "/smuggled") {
            failures.push(format!("the smuggled request reached the backend: {seen:?}"));
        }
        if !seen.is_empty() {
            failures.push(format!("{} request(s) forwarded: {seen:?}", seen.len()));
        }
        assert!(failures.is_empty(), "{failures:#?}");
    })
    .await;
}

/// A chunked body whose first chunk is valid and a later chunk size is not: the proxy streams
/// bodies, so the head may already be on its way upstream, but the upstream must never receive
/// a complete request, and the client gets 400 and a close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_invalid_chunk_never_completes_upstream() {
    within(30, "late chunk", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::single(a.addr(), SETTINGS).await;
        let mut conn = RawConn::connect(proxy.addr()).await;
        conn.send(&req(
            "POST / HTTP/1.1\nHost: m.test\nTransfer-Encoding: chunked\n\n5\nhello\nzz\nworld\n0\n\n",
        ))
        .await
        .unwrap();
        let r = conn.read_response().await;
        let status = r.as_ref().map(|r| r.status).map_err(Clone::clone);
        assert!(conn.closed_within(Duration::from_secs(3)).await, "still open; got {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(a.completed(), 0, "the upstream received a complete request: {:?}", a.requests());
        assert_eq!(status, Ok(400), "answer to a broken chunked body");
    })
    .await;
}

/// The same framing rule holds for a request that arrives pipelined behind another one in the
/// same write: the first is answered, the second (both `Content-Length` and
/// `Transfer-Encoding`) gets 400, and only the first reaches the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_request_with_both_lengths_is_rejected() {
    within(30, "pipelined CL+TE", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::single(a.addr(), SETTINGS).await;
        let mut conn = RawConn::connect(proxy.addr()).await;
        conn.send(&req(
            "GET /first HTTP/1.1\nHost: m.test\n\n\
             POST /second HTTP/1.1\nHost: m.test\nContent-Length: 4\nTransfer-Encoding: chunked\n\n0\n\n\
             GET /smuggled HTTP/1.1\nHost: m.test\n\n",
        ))
        .await
        .unwrap();
        let first = conn.read_response().await.unwrap();
        assert_eq!(first.status, 200);
        let second = conn.read_response().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let uris: Vec<String> = a.requests().into_iter().map(|r| r.uri).collect();
        let second = second.map(|r| (r.status, r.text()));
        assert_eq!(
            second.as_ref().map(|r| r.0),
            Ok(400),
            "second response {second:?}; the backend received {uris:?}"
        );
        assert_eq!(uris, ["/first"]);
    })
    .await;
}

/// A keep-alive connection's second request, sent after the first answer, with both
/// `Content-Length` and `Transfer-Encoding`: 400, not forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_request_with_both_lengths_is_rejected() {
    within(30, "keep-alive CL+TE", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::single(a.addr(), SETTINGS).await;
        let mut conn = RawConn::connect(proxy.addr()).await;
        conn.send(&req("GET /first HTTP/1.1\nHost: m.test\n\n")).await.unwrap();
        assert_eq!(conn.read_response().await.unwrap().status, 200);
        conn.send(&req(
            "POST /second HTTP/1.1\nHost: m.test\nContent-Length: 4\nTransfer-Encoding: chunked\n\n0\n\n",
        ))
        .await
        .unwrap();
        let second = conn.read_response().await.map(|r| (r.status, r.text()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let uris: Vec<String> = a.requests().into_iter().map(|r| r.uri).collect();
        assert_eq!(second.as_ref().map(|r| r.0), Ok(400), "{second:?}; backend got {uris:?}");
        assert_eq!(uris, ["/first"]);
    })
    .await;
}

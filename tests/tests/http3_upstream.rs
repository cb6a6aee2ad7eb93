//! HTTP/3 towards upstreams (`protocol = "http3"`): requests travel over QUIC to an HTTP/3
//! upstream (here a second proxy-bin with `http3 = true`), multiplexed on one connection, with
//! bodies and trailers-free round trips; when the upstream does not answer QUIC, the same
//! requests fall back to HTTP/2 or HTTP/1.1 over TLS by ALPN.

// Tests panic on purpose: a failed assertion or setup step is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use tests::client::{Conn, Echo, full, req};
use tests::tls::{TestCa, TestDir, toml_path};
use tests::{Backend, TestProxy, within};

/// The upstream side: a TLS listener for `edge.test` (HTTP/3 on when `http3`), `Via: b`,
/// in front of `backend`.
async fn edge(dir: &TestDir, ca: &TestCa, backend: SocketAddr, http3: bool) -> TestProxy {
    let cert = ca.server_cert(&["edge.test"]);
    let (cert_path, key_path) = cert.write(dir, "edge");
    let text = format!(
        r#"
[proxy]
via = "b"

[[listeners]]
address = "127.0.0.1:0"
http3 = {http3}
[listeners.tls]
certificates = [{{ names = ["edge.test"], cert = {c}, key = {k} }}]

[upstreams.app]
endpoints = ["{backend}"]

[[servers]]
default = true

[[servers.routes]]
prefix = "/"
upstream = "app"
"#,
        c = toml_path(&cert_path),
        k = toml_path(&key_path),
    );
    TestProxy::start(&text).await
}

/// The client side: a cleartext proxy whose upstream speaks HTTP/3 to `edge`.
async fn front(ca_path: &std::path::Path, edge: SocketAddr) -> TestProxy {
    let text = format!(
        r#"
[upstreams.app]
protocol = "http3"
endpoints = ["{edge}"]
tls = {{ ca = {ca}, server_name = "edge.test" }}

[[servers]]
default = true

[[servers.routes]]
prefix = "/"
upstream = "app"
"#,
        ca = toml_path(ca_path),
    );
    TestProxy::start(&text).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reach_an_http3_upstream_over_one_quic_connection() {
    within(30, "HTTP/3 upstream", async {
        let dir = TestDir::new("h3-upstream");
        let ca = TestCa::new("h3 upstream CA");
        let ca_path = ca.write(&dir, "ca.pem");
        let backend = Backend::start("origin").await;
        let edge = edge(&dir, &ca, backend.addr(), true).await;
        let front = front(&ca_path, edge.addr()).await;
        let mut c = Conn::connect(front.addr()).await;
        for i in 0..5 {
            let r = c.get_host("edge.test", &format!("/item/{i}")).await;
            assert_eq!(r.status, 200, "request {i}");
            let echo = Echo::parse(&r.body).expect("echo body");
            assert_eq!(echo.uri, format!("/item/{i}"));
            // The edge received it over HTTP/3 and says so in Via.
            assert_eq!(echo.header("via"), Some("3 b"), "request {i}");
            assert_eq!(echo.header("host"), Some("edge.test"));
        }
        let body = vec![b'x'; 300_000];
        let r = c
            .send(
                req("POST", "edge.test", "/upload")
                    .header("content-length", body.len())
                    .body(full(body))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, 200);
        let echo = Echo::parse(&r.body).expect("echo body");
        assert_eq!(echo.method, "POST");
        assert_eq!(echo.body_len, 300_000);
        let stats = edge.running().http3_stats();
        assert_eq!(
            stats.connections.load(Ordering::Relaxed),
            1,
            "every request shares one QUIC connection"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_without_http3_is_reached_over_tcp_instead() {
    within(30, "HTTP/3 fallback", async {
        let dir = TestDir::new("h3-fallback");
        let ca = TestCa::new("h3 fallback CA");
        let ca_path = ca.write(&dir, "ca.pem");
        let backend = Backend::start("origin").await;
        // TLS over TCP only: nothing answers QUIC on that port, so the handshake fails.
        let edge = edge(&dir, &ca, backend.addr(), false).await;
        let front = front(&ca_path, edge.addr()).await;
        let mut c = Conn::connect(front.addr()).await;
        for i in 0..3 {
            let r = c.get_host("edge.test", &format!("/f/{i}")).await;
            assert_eq!(r.status, 200, "request {i}");
            let echo = Echo::parse(&r.body).expect("echo body");
            // ALPN picked HTTP/2 for the fallback.
            assert_eq!(echo.header("via"), Some("2 b"), "request {i}");
        }
    })
    .await;
}

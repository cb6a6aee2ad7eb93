//! Protocol upgrades (WebSocket style): `Connection: upgrade` + `Upgrade` is forwarded, the
//! backend's 101 is relayed, then bytes flow both ways through the tunnel until either side
//! closes. `Upgrade` without `Connection: upgrade` is an ordinary request.

// Tests panic on purpose: a failed assertion or setup step is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tests::client::Echo;
use tests::raw::RawConn;
use tests::{Backend, TestProxy, within};

/// Proxy settings for these tests; the upstream and routes are `TestProxy::single`'s.
const SETTINGS: &str = r#"
[proxy]
via = "edge"
"#;

const UPGRADE: &str = "GET /chat HTTP/1.1\r\nHost: ws.test\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_tunnelled() {
    within(30, "upgrade", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::single(a.addr(), SETTINGS).await;
        let mut conn = RawConn::connect(proxy.addr()).await;
        conn.send(UPGRADE.as_bytes()).await.unwrap();
        let r = conn.read_response().await.unwrap();
        assert_eq!(r.status, 101, "{:?}", r.headers);
        assert_eq!(r.header("upgrade"), Some("websocket"));
        assert!(
            r.header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("upgrade")),
            "{:?}",
            r.headers
        );
        assert_eq!(r.header("x-backend"), Some("a"));

        // The backend saw an upgrade request with its end-to-end fields intact.
        let seen = a.last_request().unwrap();
        assert_eq!(seen.header("upgrade"), Some("websocket"));
        assert!(
            seen.header("connection")
                .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"))
        );
        assert_eq!(
            seen.header("sec-websocket-key"),
            Some("dGhlIHNhbXBsZSBub25jZQ==")
        );

        // Bytes both ways, small and large, several round trips.
        for msg in [
            &b"hello through the tunnel"[..],
            b"\x81\x05hello",
            &[0u8; 1],
        ] {
            conn.send(msg).await.unwrap();
            assert_eq!(conn.read_exact(msg.len()).await.unwrap(), msg);
        }
        let big: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
        conn.send(&big).await.unwrap();
        assert_eq!(
            conn.read_exact(big.len()).await.unwrap(),
            big,
            "256 KiB echoed intact"
        );

        // The tunnel outlives the request: no HTTP parsing of what follows.
        conn.send(b"GET /not-http HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(
            conn.read_exact(26).await.unwrap(),
            b"GET /not-http HTTP/1.1\r\n\r\n"
        );
        assert_eq!(a.hits(), 1, "tunnel bytes were parsed as a request");

        // Killing the backend closes the client's side of the tunnel.
        a.kill().await;
        assert!(
            conn.closed_within(Duration::from_secs(5)).await,
            "tunnel not closed"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_header_without_connection_upgrade_is_a_plain_request() {
    within(30, "no upgrade", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::single(a.addr(), SETTINGS).await;
        let mut conn = RawConn::connect(proxy.addr()).await;
        conn.send(b"GET /plain HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\n\r\n")
            .await
            .unwrap();
        let r = conn.read_response().await.unwrap();
        assert_eq!(r.status, 200);
        let e = Echo::parse(&r.body).unwrap();
        assert!(
            !e.has("upgrade"),
            "a hop-by-hop Upgrade was forwarded: {:?}",
            e.headers
        );
        // And the connection stays HTTP.
        conn.send(b"GET /next HTTP/1.1\r\nHost: ws.test\r\n\r\n")
            .await
            .unwrap();
        let r = conn.read_response().await.unwrap();
        assert_eq!(Echo::parse(&r.body).unwrap().uri, "/next");
    })
    .await;
}

/// A backend that declines the upgrade (answers 200) is relayed as is, and the client
/// connection goes on as HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_upgrade_stays_http() {
    within(30, "declined upgrade", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::single(a.addr(), SETTINGS).await;
        let mut conn = RawConn::connect(proxy.addr()).await;
        let declined = UPGRADE.replace("\r\n\r\n", "\r\nX-Refuse-Upgrade: 1\r\n\r\n");
        conn.send(declined.as_bytes()).await.unwrap();
        let r = conn.read_response().await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(Echo::parse(&r.body).unwrap().uri, "/chat");
        conn.send(b"GET /next HTTP/1.1\r\nHost: ws.test\r\n\r\n")
            .await
            .unwrap();
        let r = conn.read_response().await.unwrap();
        assert_eq!(Echo::parse(&r.body).unwrap().uri, "/next");
    })
    .await;
}

//! Graceful shutdown: a request in flight when shutdown starts completes normally, idle
//! keep-alive connections are closed, new connections are refused, and `shutdown()` returns once
//! the in-flight work is done (well before the drain deadline).

// Tests panic on purpose: a failed assertion or setup step is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tests::client::{Conn, empty, req};
use tests::raw::RawConn;
use tests::{Backend, TestProxy, wait_until, within};
use tokio::time::Instant;

/// Proxy settings for these tests; the upstream and routes are `TestProxy::single`'s.
const SETTINGS: &str = r#"
[proxy]
shutdown_timeout = "20s"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_request_completes_and_new_connections_are_refused() {
    within(40, "graceful shutdown", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::single(a.addr(), SETTINGS).await;
        let addr = proxy.addr();

        // An idle keep-alive connection that has served one request.
        let mut idle = RawConn::connect(addr).await;
        idle.send(b"GET /idle HTTP/1.1\r\nHost: s.test\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(idle.read_response().await.unwrap().status, 200);

        // A slow request in flight.
        let slow = tokio::spawn(async move {
            let mut c = Conn::connect(addr).await;
            let r = c
                .try_send(
                    req("GET", "s.test", "/slow")
                        .header("x-delay-ms", "1500")
                        .body(empty())
                        .unwrap(),
                )
                .await;
            (r, Instant::now())
        });
        assert!(
            wait_until(Duration::from_secs(5), || a.hits() == 2).await,
            "the slow request never reached the backend"
        );

        let started = Instant::now();
        let shutdown = tokio::spawn(async move {
            proxy.shutdown().await;
            Instant::now()
        });

        // New connections are refused once the listener is closed.
        let mut refused = false;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            refused,
            "still accepting connections after shutdown started"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "refusing took {:?}",
            started.elapsed()
        );

        // The idle connection is closed without waiting for the slow request.
        assert!(
            idle.closed_within(Duration::from_secs(1)).await,
            "idle keep-alive kept open"
        );

        let (slow, slow_done) = slow.await.unwrap();
        let slow = slow.expect("the in-flight request was cut off");
        assert_eq!(slow.status, 200);
        assert_eq!(slow.echo().uri, "/slow");
        let shutdown_done = shutdown.await.unwrap();
        assert!(
            shutdown_done >= slow_done - Duration::from_millis(50),
            "shutdown returned before the in-flight request finished"
        );
        assert!(
            shutdown_done - started < Duration::from_secs(5),
            "shutdown waited {:?}: it should end with the last request",
            shutdown_done - started
        );
    })
    .await;
}

/// The drain deadline bounds shutdown even when a request never finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_bounds_shutdown() {
    within(30, "drain deadline", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::single(a.addr(), "[proxy]\nshutdown_timeout = \"500ms\"").await;
        let addr = proxy.addr();
        let stuck = tokio::spawn(async move {
            let mut c = Conn::connect(addr).await;
            c.try_send(
                req("GET", "s.test", "/stuck")
                    .header("x-delay-ms", "20000")
                    .body(empty())
                    .unwrap(),
            )
            .await
        });
        assert!(wait_until(Duration::from_secs(5), || a.hits() == 1).await);
        let started = Instant::now();
        proxy.shutdown().await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(3),
            "shutdown took {took:?} with a 500 ms drain deadline"
        );
        stuck.abort();
    })
    .await;
}

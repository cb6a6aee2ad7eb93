//! Timeouts while a request body streams: a slow but steady upload outlives the
//! response-header timeout (which starts once the body is sent), and an upload that stalls is
//! answered 408 after the idle timeout instead of holding the upstream connection.

// Tests panic on purpose: a failed assertion or setup step is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tests::raw::RawConn;
use tests::{Backend, TestProxy, within};
use tokio::time::Instant;

async fn proxy(backend: &Backend) -> TestProxy {
    // One-second limits, so the tests stay short: the upload below takes three.
    let text = format!(
        "[upstreams.app]\nendpoints = [\"{}\"]\nresponse_header_timeout = \"1s\"\n\
         idle_timeout = \"1s\"\nmax_fails = 0\n\n[[servers]]\ndefault = true\n\n\
         [[servers.routes]]\nprefix = \"/\"\nupstream = \"app\"\n",
        backend.addr()
    );
    TestProxy::start(&text).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_steady_upload_outlives_the_response_header_timeout() {
    within(30, "slow upload", async {
        let a = Backend::start("a").await;
        let proxy = proxy(&a).await;
        let mut conn = RawConn::connect(proxy.addr()).await;
        conn.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        for i in 0..10u8 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            conn.send(&[b'0' + i]).await.unwrap();
        }
        let resp = conn.read_response().await.unwrap();
        assert!(
            started.elapsed() > Duration::from_secs(2),
            "the upload took its time"
        );
        assert_eq!(resp.status, 200, "{}", resp.text());
        let echo: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(echo["body_len"], 10, "the whole body reached the backend");
        assert_eq!(a.completed(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_upload_gets_408() {
    within(30, "stalled upload", async {
        let a = Backend::start("a").await;
        let proxy = proxy(&a).await;
        let mut conn = RawConn::connect(proxy.addr()).await;
        conn.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab")
            .await
            .unwrap();
        let started = Instant::now();
        let resp = conn.read_response().await.unwrap();
        assert_eq!(resp.status, 408, "{}", resp.text());
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
            "answered after the 1 s idle timeout, not {waited:?}"
        );
        assert_eq!(a.completed(), 0, "the backend never saw a complete request");
    })
    .await;
}

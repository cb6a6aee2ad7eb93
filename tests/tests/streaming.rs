//! Large bodies stream through the proxy with bounded memory, in both directions.
//!
//! The backend produces the download from one static buffer (no allocation per chunk) and the
//! upload is counted and discarded on both ends, so the process's resident memory (sampled from
//! `/proc/self/status` every 5 ms; proxy, backend and client all live in this process) grows
//! only by what the proxy buffers. A proxy that collected a body would grow by its size.
//!
//! Size: 1 GiB each way (a debug build moves it in a few seconds, since frames are 64 KiB
//! views of a static buffer); memory may grow by less than 100 MiB. `E2E_STREAM_MIB` overrides
//! the size (the bound becomes a quarter of it, at least 64 MiB, at most 100 MiB).
//!
//! Each transfer also stalls its receiver for a second (the client stops reading the download,
//! the backend delays reading the upload): with working backpressure the proxy stops pulling
//! from the sender, so memory stays flat during the stall instead of absorbing the sender's
//! full speed.
//!
//! The two tests run one after the other (a shared lock) so that one's buffers do not count
//! against the other.

// Tests panic on purpose: a failed assertion or setup step is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http_body_util::BodyExt;
use tests::client::{Conn, empty, req, streaming};
use tests::rss::{self, PeakRss};
use tests::{Backend, TestProxy, within};
use tokio::time::Instant;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MIB: u64 = 1024 * 1024;

fn size() -> u64 {
    std::env::var("E2E_STREAM_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1024)
        * MIB
}

/// Most RSS growth accepted for a transfer of `size` bytes.
fn allowed_growth(size: u64) -> u64 {
    (size / 4).clamp(64 * MIB, 100 * MIB)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_download_streams_with_bounded_memory() {
    let _serial = SERIAL.lock().await;
    within(120, "download", async {
        let Some(_) = rss::current() else {
            eprintln!("no /proc/self/status: memory is not measured on this platform");
            return;
        };
        let size = size();
        let a = Backend::start("a").await;
        let proxy = TestProxy::single(a.addr(), "").await;
        let mut c = Conn::connect(proxy.addr()).await;
        // Warm up allocators and pools with a small transfer first.
        let warm = c
            .send(
                req("GET", "s.test", "/warm")
                    .header("x-download", "1048576")
                    .body(empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(warm.body.len(), 1024 * 1024);

        let baseline = rss::current().unwrap();
        let sampler = PeakRss::start();
        let started = Instant::now();
        let resp = c
            .send_streaming(
                req("GET", "s.test", "/big")
                    .header("x-download", size.to_string())
                    .body(empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok()),
            Some(size.to_string().as_str())
        );
        let mut body = resp.into_body();
        let mut received: u64 = 0;
        let mut bad_bytes = false;
        let mut stalled = false;
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("the download was cut off");
            if let Some(d) = frame.data_ref() {
                received += d.len() as u64;
                if !stalled && received >= 16 * MIB {
                    stalled = true;
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                bad_bytes |= d.iter().any(|&b| b != b'x');
            }
        }
        let took = started.elapsed();
        let peak = sampler.finish();
        let growth = peak.saturating_sub(baseline);
        eprintln!(
            "download: {} MiB in {took:?}, RSS {} MiB -> peak {} MiB (+{} MiB)",
            size / MIB,
            baseline / MIB,
            peak / MIB,
            growth / MIB
        );
        assert_eq!(received, size);
        assert!(!bad_bytes, "the body was altered");
        assert!(
            growth < allowed_growth(size),
            "RSS grew by {} MiB while streaming {} MiB",
            growth / MIB,
            size / MIB
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_upload_streams_with_bounded_memory() {
    let _serial = SERIAL.lock().await;
    within(120, "upload", async {
        let Some(_) = rss::current() else {
            eprintln!("no /proc/self/status: memory is not measured on this platform");
            return;
        };
        let size = size();
        let a = Backend::start("a").await;
        let proxy = TestProxy::single(a.addr(), "").await;
        let mut c = Conn::connect(proxy.addr()).await;
        let warm = c
            .send(
                req("POST", "s.test", "/warm")
                    .body(streaming(1024 * 1024))
                    .unwrap(),
            )
            .await;
        assert_eq!(warm.echo().body_len, 1024 * 1024);

        let baseline = rss::current().unwrap();
        let sampler = PeakRss::start();
        let started = Instant::now();
        let r = c
            .send(
                req("POST", "s.test", "/big")
                    .header("x-body-delay-ms", "1000")
                    .body(streaming(size))
                    .unwrap(),
            )
            .await;
        let took = started.elapsed();
        let peak = sampler.finish();
        let growth = peak.saturating_sub(baseline);
        eprintln!(
            "upload: {} MiB in {took:?}, RSS {} MiB -> peak {} MiB (+{} MiB)",
            size / MIB,
            baseline / MIB,
            peak / MIB,
            growth / MIB
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let e = r.echo();
        assert_eq!(e.body_len, size, "the backend received a different length");
        assert_eq!(e.header("content-length"), Some(size.to_string().as_str()));
        assert!(
            growth < allowed_growth(size),
            "RSS grew by {} MiB while streaming {} MiB",
            growth / MIB,
            size / MIB
        );
    })
    .await;
}

//! HTTP/2 attacks against the h2c frontend, each from a raw-frame client ([`tests::h2raw`]):
//! the abusive connection is stopped (GOAWAY `ENHANCE_YOUR_CALM` and closed, or the stream
//! reset) within a bounded number of frames, a well-behaved h2 client on another connection
//! is served meanwhile and afterwards, memory stays bounded where the attack aims at it, and
//! the proxy counts the abusive connection.
//!
//! Floods are paced (a small batch per write, a millisecond between writes) so that how far
//! the attacker gets measures the server, not the socket buffers; each test asserts that the
//! server closed before the attacker got to ten times the configured limit, and prints what
//! it measured (`--nocapture`). The one unpaced flood bounds the server's side instead: the
//! last stream id in its GOAWAY.
//!
//! Tests that sample the process's resident memory hold [`SERIAL`] exclusively; the others
//! share it, so no other test's allocations land in a measurement.

// Tests panic on purpose: a failed assertion or setup step is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use tests::h2raw::{self, FloodEnd, FloodReport, H2Conn, Pace, code, flag, kind, setting};
use tests::raw::RawConn;
use tests::rss::{self, PeakRss};
use tests::{Backend, Echo, TestProxy, wait_until, within};
use tokio::net::TcpStream;
use tokio::sync::RwLock;
use tokio::time::Instant;

/// Held exclusively by tests that measure memory, shared by the others.
static SERIAL: RwLock<()> = RwLock::const_new(());

const MIB: u64 = 1024 * 1024;

/// Most resident-memory growth accepted during an attack.
const RSS_BOUND: u64 = 64 * MIB;

/// How far past a limit an attacker may get before the server must have closed.
const SLACK: usize = 10;

/// The usual pace: a few rounds per write, a millisecond between writes, GOAWAY noticed.
const PACE: Pace = Pace {
    batch: 5,
    pause: Duration::from_millis(1),
    read: true,
};

/// A proxy with an h2c listener, `[proxy]` and `[http2]` settings, in front of one echo
/// backend.
struct Fixture {
    backend: Backend,
    proxy: TestProxy,
}

impl Fixture {
    async fn start(http2: &str, proxy: &str) -> Fixture {
        let backend = Backend::start("app").await;
        let settings = format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\nh2c = true\n\n[proxy]\n{proxy}\n\n\
             [http2]\n{http2}\n"
        );
        let proxy = TestProxy::single(backend.addr(), &settings).await;
        Fixture { backend, proxy }
    }

    fn addr(&self) -> SocketAddr {
        self.proxy.addr()
    }

    fn authority(&self) -> String {
        self.addr().to_string()
    }

    fn abusive(&self) -> u64 {
        self.proxy
            .running()
            .http2_stats()
            .abusive_connections
            .load(Ordering::Relaxed)
    }

    fn stalled(&self) -> u64 {
        self.proxy
            .running()
            .http2_stats()
            .stalled_streams
            .load(Ordering::Relaxed)
    }

    /// Asserts that the abusive-connection counter passes `before` within 2 s.
    async fn assert_abuse_counted(&self, before: u64, what: &str) {
        let counted = wait_until(Duration::from_secs(2), || self.abusive() > before).await;
        assert!(
            counted,
            "{what}: abusive_connections stayed at {}",
            self.abusive()
        );
    }

    /// Requests the backend received whose path starts with `prefix`.
    fn forwarded(&self, prefix: &str) -> usize {
        self.backend
            .requests()
            .iter()
            .filter(|r| r.uri.starts_with(prefix))
            .count()
    }
}

/// A well-behaved client: the h2 crate over its own connection.
struct GoodClient {
    send: h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
}

impl GoodClient {
    async fn connect(addr: SocketAddr) -> GoodClient {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let _ = tcp.set_nodelay(true);
        let (send, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        GoodClient { send, addr }
    }

    /// `GET path` with `extra` headers; the status and the whole body.
    async fn get(&mut self, path: &str, extra: &[(&str, &str)]) -> (StatusCode, Bytes) {
        let mut req = http::Request::get(format!("http://{}{path}", self.addr));
        for (n, v) in extra {
            req = req.header(*n, *v);
        }
        let mut send = self.send.clone().ready().await.unwrap();
        let (resp, _) = send.send_request(req.body(()).unwrap(), true).unwrap();
        let resp = resp.await.unwrap();
        let status = resp.status();
        let mut body = resp.into_body();
        let mut out = Vec::new();
        // Bounded by the response's length and the test's `within`.
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            out.extend_from_slice(&chunk);
        }
        (status, Bytes::from(out))
    }

    /// `GET path`, asserting a 200 with the backend's echo of that path.
    async fn assert_ok(&mut self, path: &str) {
        let (status, body) = self.get(path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body:?}");
        let echo = Echo::parse(&body).expect("an echo body");
        assert_eq!(echo.uri, path);
    }
}

/// A 200 for `path` on a fresh well-behaved connection.
async fn assert_fresh_client_ok(addr: SocketAddr, path: &str) {
    GoodClient::connect(addr).await.assert_ok(path).await;
}

/// Runs `f` and returns its output with the peak resident-memory growth meanwhile (0 where
/// `/proc` is unavailable).
async fn rss_growth<F: Future>(f: F) -> (F::Output, u64) {
    let Some(baseline) = rss::current() else {
        eprintln!("no /proc/self/status: memory is not measured on this platform");
        return (f.await, 0);
    };
    let sampler = PeakRss::start();
    let out = f.await;
    let peak = sampler.finish();
    (out, peak.saturating_sub(baseline))
}

/// The end of an attack connection: the GOAWAY it got and whether it was closed.
#[derive(Debug)]
struct Ending {
    goaway: Option<(u32, u32)>,
    closed: bool,
}

/// Reads to the GOAWAY and the close, 5 s at most each.
async fn ending(conn: &mut H2Conn) -> Ending {
    let goaway = conn
        .read_until_goaway(Instant::now() + Duration::from_secs(5))
        .await;
    let closed = conn.is_closed() || conn.closed_within(Duration::from_secs(5)).await;
    Ending { goaway, closed }
}

/// Asserts the flood was cut short by the server before `max_rounds` rounds, and the
/// connection ended with a GOAWAY whose code is one of `expected`, and a close.
fn assert_stopped(
    what: &str,
    report: &FloodReport,
    end: &Ending,
    max_rounds: usize,
    expected: &[u32],
) {
    eprintln!(
        "{what}: {} rounds ({} frames) written in {:?}, ended {:?}; GOAWAY {:?}; closed {}",
        report.rounds,
        report.frames,
        report.took,
        report.end,
        end.goaway
            .map(|(last, code)| format!("last_stream {last} {}", h2raw::code_name(code))),
        end.closed
    );
    assert!(
        matches!(report.end, FloodEnd::GoAway | FloodEnd::Closed),
        "{what}: the server did not stop the flood: {report:?}"
    );
    assert!(
        report.rounds < max_rounds,
        "{what}: {} rounds written before the server closed, bound {max_rounds}",
        report.rounds
    );
    let (_, code) = end
        .goaway
        .unwrap_or_else(|| panic!("{what}: no GOAWAY: {end:?}"));
    assert!(
        expected.contains(&code),
        "{what}: GOAWAY {} instead of {:?}",
        h2raw::code_name(code),
        expected
            .iter()
            .map(|c| h2raw::code_name(*c))
            .collect::<Vec<_>>()
    );
    assert!(
        end.closed,
        "{what}: the connection stayed open after GOAWAY"
    );
}

/// One request per round: HEADERS (END_STREAM) on stream `2i+1`.
fn get_round(out: &mut Vec<u8>, i: usize, authority: &str, path: &str) -> u32 {
    let id = 2 * i as u32 + 1;
    h2raw::request(out, id, true, "GET", authority, path, &[]);
    id
}

// ===== 1. Rapid Reset (CVE-2023-44487) =====

/// HEADERS then RST_STREAM(CANCEL), 20,000 times in a tight loop: h2's accept-queue limit
/// (`max_pending_accept_reset_streams`, 50) or the guard's `max_resets` (100) closes the
/// connection long before, memory stays flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_stopped() {
    let _serial = SERIAL.write().await;
    within(30, "rapid reset", async {
        let f = Fixture::start("max_resets = 100", "").await;
        let mut good = GoodClient::connect(f.addr()).await;
        good.assert_ok("/before").await;
        let before = f.abusive();
        let authority = f.authority();

        let mut attacker = H2Conn::handshake(f.addr(), &[]).await;
        let pace = Pace { batch: 10, ..PACE };
        let ((report, end), growth) = rss_growth(async {
            let report = attacker
                .flood(20_000, pace, |i, out| {
                    let id = get_round(out, i, &authority, "/rr");
                    h2raw::rst_stream(out, id, code::CANCEL);
                    2
                })
                .await;
            (report, ending(&mut attacker).await)
        })
        .await;
        assert_stopped(
            "rapid reset",
            &report,
            &end,
            SLACK * 100,
            &[code::ENHANCE_YOUR_CALM],
        );
        let (last, _) = end.goaway.unwrap();
        eprintln!("rapid reset: RSS growth {} KiB", growth / 1024);
        assert!(
            (last as usize) < 2 * SLACK * 100,
            "h2 processed streams up to {last}"
        );
        assert!(growth < RSS_BOUND, "RSS grew by {} MiB", growth / MIB);
        f.assert_abuse_counted(before, "rapid reset").await;

        good.assert_ok("/after").await;
        assert_fresh_client_ok(f.addr(), "/fresh").await;
    })
    .await;
}

/// The same 20,000 streams in 1,000-stream writes without a pause: the requests and resets
/// reach h2 faster than the proxy accepts streams, so h2's own accept-queue limit
/// (`max_pending_accept_reset_streams`, 50) answers, and the proxy counts that too. How far
/// the attacker gets here measures the socket buffers, so the bound is the server's: the
/// GOAWAY's last stream id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_unpaced_is_stopped_by_the_accept_queue_limit() {
    let _serial = SERIAL.write().await;
    within(30, "unpaced rapid reset", async {
        let f = Fixture::start("", "").await;
        let mut good = GoodClient::connect(f.addr()).await;
        good.assert_ok("/before").await;
        let before = f.abusive();
        let authority = f.authority();

        let mut attacker = H2Conn::handshake(f.addr(), &[]).await;
        let pace = Pace {
            batch: 1_000,
            pause: Duration::ZERO,
            read: true,
        };
        let ((report, end), growth) = rss_growth(async {
            let report = attacker
                .flood(20_000, pace, |i, out| {
                    let id = get_round(out, i, &authority, "/urr");
                    h2raw::rst_stream(out, id, code::CANCEL);
                    2
                })
                .await;
            (report, ending(&mut attacker).await)
        })
        .await;
        eprintln!(
            "unpaced rapid reset: {} streams written in {:?}, ended {:?}; GOAWAY {:?}; \
             RSS growth {} KiB",
            report.rounds,
            report.took,
            report.end,
            end.goaway,
            growth / 1024
        );
        let (last, code) = end.goaway.expect("a GOAWAY");
        assert_eq!(code, code::ENHANCE_YOUR_CALM, "{}", h2raw::code_name(code));
        assert!(end.closed, "the connection stayed open after GOAWAY");
        assert!(
            (last as usize) < 2 * SLACK * 50,
            "h2 processed streams up to {last}"
        );
        assert!(growth < RSS_BOUND, "RSS grew by {} MiB", growth / MIB);
        f.assert_abuse_counted(before, "unpaced rapid reset").await;
        good.assert_ok("/after").await;
        assert_fresh_client_ok(f.addr(), "/fresh").await;
    })
    .await;
}

/// The same attack paced so that every stream is accepted before its reset arrives, with
/// h2's accept-queue limit out of reach: only the guard's `max_resets` can stop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_past_the_accept_queue_is_stopped_by_the_guard() {
    let _serial = SERIAL.read().await;
    within(30, "paced rapid reset", async {
        let f = Fixture::start(
            "max_resets = 100\nmax_pending_accept_reset_streams = 100000",
            "",
        )
        .await;
        let mut good = GoodClient::connect(f.addr()).await;
        good.assert_ok("/before").await;
        let before = f.abusive();
        let authority = f.authority();

        let mut attacker = H2Conn::handshake(f.addr(), &[]).await;
        let pace = Pace {
            batch: 1,
            pause: Duration::from_millis(2),
            read: true,
        };
        // Each round: the request first, its reset a round later.
        let report = attacker
            .flood(5_000, pace, |i, out| {
                let id = get_round(out, i, &authority, "/prr");
                if id > 1 {
                    h2raw::rst_stream(out, id - 2, code::CANCEL);
                    2
                } else {
                    1
                }
            })
            .await;
        let end = ending(&mut attacker).await;
        assert_stopped(
            "paced rapid reset",
            &report,
            &end,
            SLACK * 100,
            &[code::ENHANCE_YOUR_CALM],
        );
        f.assert_abuse_counted(before, "paced rapid reset").await;
        good.assert_ok("/after").await;
        assert_fresh_client_ok(f.addr(), "/fresh").await;
    })
    .await;
}

// ===== 2. MadeYouReset (CVE-2025-8671) =====

/// A request, then a WINDOW_UPDATE that overflows its send window (65,535 + 2^31-1): the
/// server must reset the stream itself (FLOW_CONTROL_ERROR), over and over. Past
/// `max_local_error_reset_streams` (20) the connection gets GOAWAY ENHANCE_YOUR_CALM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_you_reset_by_window_overflow_is_stopped() {
    let _serial = SERIAL.write().await;
    within(30, "MadeYouReset", async {
        let f = Fixture::start("max_local_error_reset_streams = 20", "").await;
        let mut good = GoodClient::connect(f.addr()).await;
        good.assert_ok("/before").await;
        let before = f.abusive();
        let authority = f.authority();

        let mut attacker = H2Conn::handshake(f.addr(), &[]).await;
        let ((report, frames), growth) = rss_growth(async {
            let report = attacker
                .flood(10_000, PACE, |i, out| {
                    let id = get_round(out, i, &authority, "/myr");
                    h2raw::window_update(out, id, 0x7fff_ffff);
                    2
                })
                .await;
            let frames = attacker
                .read_all(Instant::now() + Duration::from_secs(5), 100_000)
                .await;
            (report, frames)
        })
        .await;
        let resets = frames
            .iter()
            .filter(|fr| fr.rst_code() == Some(code::FLOW_CONTROL_ERROR))
            .count();
        let end = Ending {
            goaway: attacker.goaway_seen(),
            closed: attacker.is_closed(),
        };
        eprintln!(
            "MadeYouReset: {resets} streams reset FLOW_CONTROL_ERROR by the server; \
             RSS growth {} KiB",
            growth / 1024
        );
        assert_stopped(
            "MadeYouReset",
            &report,
            &end,
            SLACK * 20,
            &[code::ENHANCE_YOUR_CALM],
        );
        assert!(
            (1..=20).contains(&resets),
            "{resets} server-side resets; the limit is 20"
        );
        assert!(growth < RSS_BOUND, "RSS grew by {} MiB", growth / MIB);
        f.assert_abuse_counted(before, "MadeYouReset").await;
        good.assert_ok("/after").await;
        assert_fresh_client_ok(f.addr(), "/fresh").await;
    })
    .await;
}

/// MadeYouReset through malformed requests (a `connection` header, forbidden in HTTP/2): each
/// is a stream error the server answers with RST_STREAM PROTOCOL_ERROR; none is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_you_reset_by_malformed_requests_is_stopped() {
    let _serial = SERIAL.read().await;
    within(30, "MadeYouReset (malformed)", async {
        let f = Fixture::start("max_local_error_reset_streams = 20", "").await;
        let before = f.abusive();
        let authority = f.authority();
        let mut attacker = H2Conn::handshake(f.addr(), &[]).await;
        let report = attacker
            .flood(10_000, PACE, |i, out| {
                let id = 2 * i as u32 + 1;
                let extra = [("connection", "keep-alive")];
                h2raw::request(out, id, true, "GET", &authority, "/malformed", &extra);
                1
            })
            .await;
        let frames = attacker
            .read_all(Instant::now() + Duration::from_secs(5), 100_000)
            .await;
        let resets = frames
            .iter()
            .filter(|fr| fr.rst_code() == Some(code::PROTOCOL_ERROR))
            .count();
        eprintln!("MadeYouReset (malformed): {resets} streams reset PROTOCOL_ERROR");
        let end = Ending {
            goaway: attacker.goaway_seen(),
            closed: attacker.is_closed(),
        };
        assert_stopped(
            "MadeYouReset (malformed)",
            &report,
            &end,
            SLACK * 20,
            &[code::ENHANCE_YOUR_CALM],
        );
        assert!((1..=20).contains(&resets), "{resets} server-side resets");
        assert_eq!(
            f.forwarded("/malformed"),
            0,
            "a malformed request was forwarded"
        );
        f.assert_abuse_counted(before, "MadeYouReset (malformed)")
            .await;
        assert_fresh_client_ok(f.addr(), "/fresh").await;
    })
    .await;
}

/// Two MadeYouReset vectors that h2 answers with a connection error at the first offence,
/// so they cannot be repeated: DATA on a half-closed (remote) stream, and a WINDOW_UPDATE of
/// 0 on an open stream. Either PROTOCOL_ERROR at once, or (when the stream was already gone
/// and the frame became a stream error) ENHANCE_YOUR_CALM past the reset limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_you_reset_vectors_that_are_connection_errors() {
    let _serial = SERIAL.read().await;
    within(30, "MadeYouReset (connection errors)", async {
        let f = Fixture::start("max_local_error_reset_streams = 20", "").await;
        let authority = f.authority();
        for what in ["DATA after END_STREAM", "WINDOW_UPDATE 0"] {
            let mut attacker = H2Conn::handshake(f.addr(), &[]).await;
            let report = attacker
                .flood(10_000, PACE, |i, out| {
                    let id = get_round(out, i, &authority, "/myr-conn");
                    if what == "WINDOW_UPDATE 0" {
                        h2raw::window_update(out, id, 0);
                    } else {
                        h2raw::data(out, id, false, b"late");
                    }
                    2
                })
                .await;
            let end = ending(&mut attacker).await;
            assert_stopped(
                what,
                &report,
                &end,
                SLACK * 20,
                &[code::PROTOCOL_ERROR, code::ENHANCE_YOUR_CALM],
            );
        }
        assert_fresh_client_ok(f.addr(), "/fresh").await;
    })
    .await;
}

// ===== 3. CONTINUATION flood =====

/// HEADERS without END_HEADERS, then CONTINUATION frames that never end the block. With a
/// large header-list limit (so h2's own continuation cap, derived from it, is far away) the
/// guard's `max_continuations` (16) closes the connection. A second connection does the
/// same with 16 KiB fragments of one endless header value, against memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_is_stopped() {
    let _serial = SERIAL.write().await;
    within(30, "CONTINUATION flood", async {
        let f = Fixture::start("max_continuations = 16\nmax_header_list_size = 1048576", "").await;
        let mut good = GoodClient::connect(f.addr()).await;
        good.assert_ok("/before").await;
        let before = f.abusive();
        let authority = f.authority();

        // Small fragments: one complete header field each.
        let mut attacker = H2Conn::handshake(f.addr(), &[]).await;
        let report = attacker
            .flood(10_000, PACE, |i, out| {
                if i == 0 {
                    let block = h2raw::hpack::request("GET", &authority, "/cont", &[]);
                    h2raw::headers(out, 1, flag::END_STREAM, &block);
                } else {
                    let mut field = Vec::new();
                    h2raw::hpack::literal(&mut field, format!("x-c{i}").as_bytes(), b"v");
                    h2raw::continuation(out, 1, false, &field);
                }
                1
            })
            .await;
        let end = ending(&mut attacker).await;
        assert_stopped(
            "CONTINUATION flood",
            &report,
            &end,
            SLACK * 16,
            &[code::ENHANCE_YOUR_CALM],
        );
        f.assert_abuse_counted(before, "CONTINUATION flood").await;

        // 16 KiB fragments of one header value declared 256 MiB long.
        let before = f.abusive();
        let mut attacker = H2Conn::handshake(f.addr(), &[]).await;
        let fragment = vec![b'a'; 16 * 1024];
        let (report, growth) = rss_growth(attacker.flood(16_384, PACE, |i, out| {
            if i == 0 {
                let mut block = h2raw::hpack::request("GET", &authority, "/cont-big", &[]);
                block.push(0x00);
                h2raw::hpack::string(&mut block, b"x-big");
                h2raw::hpack::integer(&mut block, 7, 0x00, 256 << 20);
                h2raw::headers(out, 1, flag::END_STREAM, &block);
            } else {
                h2raw::continuation(out, 1, false, &fragment);
            }
            1
        }))
        .await;
        let end = ending(&mut attacker).await;
        eprintln!(
            "CONTINUATION flood (16 KiB fragments): RSS growth {} KiB",
            growth / 1024
        );
        assert_stopped(
            "CONTINUATION flood (16 KiB fragments)",
            &report,
            &end,
            SLACK * 16,
            &[code::ENHANCE_YOUR_CALM],
        );
        assert!(growth < RSS_BOUND, "RSS grew by {} MiB", growth / MIB);
        f.assert_abuse_counted(before, "CONTINUATION flood (16 KiB fragments)")
            .await;
        assert_eq!(f.forwarded("/cont"), 0);

        good.assert_ok("/after").await;
        assert_fresh_client_ok(f.addr(), "/fresh").await;
    })
    .await;
}

// ===== 4, 5. SETTINGS and PING floods =====

/// Floods `make` frames without ever reading the acknowledgements (the flood ends only when
/// a write fails), then asserts the server stopped it within `SLACK * limit` frames, had
/// acknowledged fewer than that before its GOAWAY, and counted the connection as abusive.
async fn unread_flood(
    f: &Fixture,
    what: &str,
    limit: usize,
    make: impl FnMut(usize, &mut Vec<u8>) -> usize,
) {
    let before = f.abusive();
    let mut attacker = H2Conn::handshake(f.addr(), &[]).await;
    let pace = Pace {
        batch: 5,
        pause: Duration::from_millis(1),
        read: false,
    };
    let report = attacker.flood(100_000, pace, make).await;
    let frames = attacker
        .read_all(Instant::now() + Duration::from_secs(5), 1_000_000)
        .await;
    let acks = frames
        .iter()
        .take_while(|fr| fr.kind != kind::GOAWAY)
        .filter(|fr| fr.is_ack())
        .count();
    let end = Ending {
        goaway: attacker.goaway_seen(),
        closed: attacker.is_closed(),
    };
    eprintln!("{what}: {acks} acknowledgements sent before GOAWAY");
    assert_stopped(
        what,
        &report,
        &end,
        SLACK * limit,
        &[code::ENHANCE_YOUR_CALM],
    );
    assert!(
        acks < SLACK * limit,
        "{what}: the server acknowledged {acks} frames before GOAWAY"
    );
    f.assert_abuse_counted(before, what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_flood_is_stopped() {
    let _serial = SERIAL.read().await;
    within(30, "SETTINGS flood", async {
        let f = Fixture::start("max_settings = 50", "").await;
        let mut good = GoodClient::connect(f.addr()).await;
        good.assert_ok("/before").await;
        unread_flood(&f, "SETTINGS flood", 50, |_, out| {
            h2raw::settings(out, &[]);
            1
        })
        .await;
        good.assert_ok("/after").await;
        assert_fresh_client_ok(f.addr(), "/fresh").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_is_stopped() {
    let _serial = SERIAL.read().await;
    within(30, "PING flood", async {
        let f = Fixture::start("max_pings = 50", "").await;
        let mut good = GoodClient::connect(f.addr()).await;
        good.assert_ok("/before").await;
        unread_flood(&f, "PING flood", 50, |i, out| {
            h2raw::ping(out, false, (i as u64).to_be_bytes());
            1
        })
        .await;
        good.assert_ok("/after").await;
        assert_fresh_client_ok(f.addr(), "/fresh").await;
    })
    .await;
}

/// PRIORITY frames cost the server a parse each and h2 discards them; a flood is closed after
/// `max_priority` (50) per window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_flood_is_stopped() {
    let _serial = SERIAL.read().await;
    within(30, "PRIORITY flood", async {
        let f = Fixture::start("max_priority = 50", "").await;
        let mut good = GoodClient::connect(f.addr()).await;
        good.assert_ok("/before").await;
        unread_flood(&f, "PRIORITY flood", 50, |i, out| {
            let stream = 2 * (i as u32 % 1000) + 1;
            h2raw::priority(out, stream, 0, false, 16);
            1
        })
        .await;
        good.assert_ok("/after").await;
        assert_fresh_client_ok(f.addr(), "/fresh").await;
    })
    .await;
}

// ===== 6. Empty-frame flood =====

/// A POST whose body never comes: empty DATA frames without END_STREAM, endlessly. Closed
/// after `max_empty_frames` (50).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_data_flood_is_stopped() {
    let _serial = SERIAL.read().await;
    within(30, "empty DATA flood", async {
        let f = Fixture::start("max_empty_frames = 50", "").await;
        let mut good = GoodClient::connect(f.addr()).await;
        good.assert_ok("/before").await;
        let before = f.abusive();
        let authority = f.authority();
        let mut attacker = H2Conn::handshake(f.addr(), &[]).await;
        let report = attacker
            .flood(100_000, PACE, |i, out| {
                if i == 0 {
                    h2raw::request(out, 1, false, "POST", &authority, "/upload", &[]);
                } else {
                    h2raw::data(out, 1, false, &[]);
                }
                1
            })
            .await;
        let end = ending(&mut attacker).await;
        assert_stopped(
            "empty DATA flood",
            &report,
            &end,
            SLACK * 50,
            &[code::ENHANCE_YOUR_CALM],
        );
        f.assert_abuse_counted(before, "empty DATA flood").await;
        good.assert_ok("/after").await;
        assert_fresh_client_ok(f.addr(), "/fresh").await;
    })
    .await;
}

// ===== 7. Stream limit =====

/// Eight slow requests at once against `max_concurrent_streams = 4`: four are answered, the
/// other four are refused (RST_STREAM REFUSED_STREAM) and never forwarded, and the connection
/// goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_limit_are_refused() {
    let _serial = SERIAL.read().await;
    within(30, "stream limit", async {
        let f = Fixture::start("max_concurrent_streams = 4", "").await;
        let mut good = GoodClient::connect(f.addr()).await;
        let authority = f.authority();
        let mut c = H2Conn::handshake(f.addr(), &[]).await;
        let mut out = Vec::new();
        let ids: Vec<u32> = (0..8).map(|_| c.next_stream_id()).collect();
        for id in &ids {
            let path = format!("/limit/{id}");
            let extra = [("x-delay-ms", "500")];
            h2raw::request(&mut out, *id, true, "GET", &authority, &path, &extra);
        }
        assert!(c.write(&out, ids.len()).await);

        // Meanwhile, another connection is served.
        good.assert_ok("/meanwhile").await;

        // stream -> (status, RST_STREAM code); done when every stream ended.
        let mut outcome: BTreeMap<u32, (Option<u16>, Option<u32>)> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let ended = |o: &BTreeMap<u32, (Option<u16>, Option<u32>)>, ends: &[u32]| {
            ids.iter()
                .all(|id| o.get(id).is_some_and(|(_, r)| r.is_some()) || ends.contains(id))
        };
        let mut ends = Vec::new();
        while !ended(&outcome, &ends) {
            let fr = c
                .read_frame(deadline)
                .await
                .unwrap_or_else(|e| panic!("{e:?}; so far {outcome:?}"));
            assert_ne!(fr.kind, kind::GOAWAY, "the connection was closed: {fr}");
            let entry = outcome.entry(fr.stream).or_default();
            if let Some(s) = fr.status() {
                entry.0 = Some(s);
            }
            if let Some(r) = fr.rst_code() {
                entry.1 = Some(r);
            }
            if fr.is_end_stream() {
                ends.push(fr.stream);
            }
        }
        eprintln!("stream limit: {outcome:?}, ended {ends:?}");
        let answered: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|id| outcome.get(id).is_some_and(|(s, _)| *s == Some(200)))
            .collect();
        let refused: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|id| {
                outcome.get(id).is_some_and(|(_, r)| {
                    *r == Some(code::REFUSED_STREAM) || *r == Some(code::PROTOCOL_ERROR)
                })
            })
            .collect();
        assert_eq!(answered, [1, 3, 5, 7], "{outcome:?}");
        assert_eq!(refused, [9, 11, 13, 15], "{outcome:?}");
        for id in &refused {
            assert_eq!(f.forwarded(&format!("/limit/{id}")), 0);
        }

        // The connection still serves.
        let mut out = Vec::new();
        let id = c.next_stream_id();
        h2raw::request(&mut out, id, true, "GET", &authority, "/limit/again", &[]);
        assert!(c.write(&out, 1).await);
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            let fr = c.read_frame(deadline).await.unwrap();
            if fr.stream == id && fr.kind == kind::HEADERS {
                break fr.status();
            }
        };
        assert_eq!(status, Some(200));
        assert_eq!(f.abusive(), 0, "a refused stream is not abuse");
    })
    .await;
}

// ===== 8. Oversized header lists =====

/// Writes one request whose header block is `block`, cut into 16 KiB frames (HEADERS, then
/// CONTINUATIONs), and returns what came back on its stream: a status, a reset, or a
/// connection error.
async fn send_big_block(addr: SocketAddr, block: &[u8]) -> (Option<u16>, Option<u32>, Ending) {
    let mut c = H2Conn::handshake(addr, &[]).await;
    let mut out = Vec::new();
    let mut chunks = block.chunks(16 * 1024).peekable();
    let first = chunks.next().unwrap();
    let single = chunks.peek().is_none();
    let flags = flag::END_STREAM | if single { flag::END_HEADERS } else { 0 };
    h2raw::headers(&mut out, 1, flags, first);
    let mut frames = 1;
    while let Some(chunk) = chunks.next() {
        h2raw::continuation(&mut out, 1, chunks.peek().is_none(), chunk);
        frames += 1;
    }
    // The server may close before reading it all.
    let _ = c.write(&out, frames).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut status, mut reset) = (None, None);
    while status.is_none() && reset.is_none() && c.goaway_seen().is_none() {
        match c.read_frame(deadline).await {
            Ok(fr) if fr.stream == 1 => {
                status = status.or(fr.status());
                reset = reset.or(fr.rst_code());
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let end = Ending {
        goaway: c.goaway_seen(),
        closed: c.is_closed(),
    };
    (status, reset, end)
}

/// A header list past `max_header_list_size` (64 KiB): many fields (70 KiB) get 431; one
/// 100 KiB field, in seven frames, gets a 431, a reset or a connection error. Neither
/// reaches the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_lists_are_refused() {
    let _serial = SERIAL.write().await;
    within(30, "oversized headers", async {
        let f = Fixture::start("", "").await;
        let mut good = GoodClient::connect(f.addr()).await;
        let authority = f.authority();
        let value = "v".repeat(2000);

        let ((many, one), growth) = rss_growth(async {
            let fields: Vec<(String, &str)> = (0..35)
                .map(|i| (format!("x-many-{i}"), value.as_str()))
                .collect();
            let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (n.as_str(), *v)).collect();
            let block = h2raw::hpack::request("GET", &authority, "/oversized/many", &fields);
            let many = send_big_block(f.addr(), &block).await;

            let big = "b".repeat(100 * 1024);
            let extra = [("x-big", big.as_str())];
            let block = h2raw::hpack::request("GET", &authority, "/oversized/one", &extra);
            let one = send_big_block(f.addr(), &block).await;
            (many, one)
        })
        .await;
        eprintln!(
            "oversized: 35 x 2000-byte fields -> {many:?}; one 100 KiB field -> {one:?}; \
             RSS growth {} KiB",
            growth / 1024
        );
        assert_eq!(many.0, Some(431), "many fields: {many:?}");
        let one_refused = one.0 == Some(431)
            || one.1.is_some()
            || one.2.goaway.is_some_and(|(_, c)| c != code::NO_ERROR);
        assert!(one_refused, "one 100 KiB field: {one:?}");
        assert_ne!(one.0, Some(200));
        assert!(growth < RSS_BOUND, "RSS grew by {} MiB", growth / MIB);
        assert_eq!(
            f.forwarded("/oversized"),
            0,
            "an oversized request was forwarded"
        );
        good.assert_ok("/after").await;
    })
    .await;
}

// ===== 9. Slow read =====

/// A client whose window stays shut (SETTINGS_INITIAL_WINDOW_SIZE = 0 on one connection; the
/// default 65,535 and never a WINDOW_UPDATE on another) asks for 1 GiB: with
/// `send_stall_timeout = "1s"` each stream is reset (CANCEL) after about a second, nothing
/// piles up in memory, and the connection itself stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_window_is_reset() {
    let _serial = SERIAL.write().await;
    within(30, "slow read", async {
        let f = Fixture::start("send_stall_timeout = \"1s\"", "").await;
        let mut good = GoodClient::connect(f.addr()).await;
        let authority = f.authority();

        /// Requests 1 GiB and reads until the stream is reset: (status, DATA bytes, reset
        /// code, time to the reset).
        async fn stalled(
            addr: SocketAddr,
            authority: &str,
            window: Option<u32>,
        ) -> (Option<u16>, usize, Option<u32>, Duration, H2Conn) {
            let values: Vec<(u16, u32)> = window
                .map(|w| (setting::INITIAL_WINDOW_SIZE, w))
                .into_iter()
                .collect();
            let mut c = H2Conn::handshake(addr, &values).await;
            let mut out = Vec::new();
            let extra = [("x-download", "1073741824")];
            h2raw::request(&mut out, 1, true, "GET", authority, "/stall", &extra);
            let started = Instant::now();
            assert!(c.write(&out, 1).await);
            let deadline = started + Duration::from_secs(8);
            let (mut status, mut bytes) = (None, 0);
            let reset = loop {
                let fr = c.read_frame(deadline).await.unwrap_or_else(|e| {
                    panic!("window {window:?}: {e:?} after {bytes} bytes, status {status:?}")
                });
                if fr.stream != 1 {
                    continue;
                }
                status = status.or(fr.status());
                if fr.kind == kind::DATA {
                    bytes += fr.payload.len();
                }
                if let Some(code) = fr.rst_code() {
                    break Some(code);
                }
                if fr.is_end_stream() {
                    break None;
                }
            };
            (status, bytes, reset, started.elapsed(), c)
        }

        let stalled_before = f.stalled();
        let ((zero, default, meanwhile), growth) = rss_growth(async {
            tokio::join!(
                stalled(f.addr(), &authority, Some(0)),
                stalled(f.addr(), &authority, None),
                good.get("/meanwhile", &[("x-download", "1048576")]),
            )
        })
        .await;
        eprintln!(
            "slow read: window 0 -> status {:?}, {} bytes, reset {:?} after {:?}; \
             window 65535 -> status {:?}, {} bytes, reset {:?} after {:?}; RSS growth {} KiB",
            zero.0,
            zero.1,
            zero.2,
            zero.3,
            default.0,
            default.1,
            default.2,
            default.3,
            growth / 1024
        );
        for (what, (status, bytes, reset, took, _), max_bytes) in
            [("window 0", &zero, 0), ("window 65535", &default, 65_535)]
        {
            assert_eq!(*status, Some(200), "{what}");
            assert!(*bytes <= max_bytes, "{what}: {bytes} bytes past the window");
            assert_eq!(*reset, Some(code::CANCEL), "{what}: not reset");
            assert!(
                *took >= Duration::from_millis(900) && *took < Duration::from_secs(5),
                "{what}: reset after {took:?}"
            );
        }
        assert!(growth < RSS_BOUND, "RSS grew by {} MiB", growth / MIB);
        assert_eq!(meanwhile.0, StatusCode::OK);
        assert_eq!(meanwhile.1.len(), 1024 * 1024);
        assert!(
            wait_until(Duration::from_secs(2), || f.stalled() >= stalled_before + 2).await,
            "stalled_streams is {}",
            f.stalled()
        );

        // The connection with the shut window is still alive: a PING is answered.
        let mut c = zero.4;
        let mut out = Vec::new();
        h2raw::ping(&mut out, false, *b"stillup?");
        assert!(c.write(&out, 1).await);
        let deadline = Instant::now() + Duration::from_secs(3);
        let pong = loop {
            let fr = c.read_frame(deadline).await.unwrap();
            if fr.kind == kind::PING && fr.is_ack() {
                break fr;
            }
        };
        assert_eq!(pong.payload, b"stillup?");
        good.assert_ok("/after").await;
    })
    .await;
}

// ===== 10. Slowloris on the handshake =====

/// Half the preface, then nothing: closed once `header_read_timeout` (1 s) has run out (the
/// bytes then go to the HTTP/1.1 side, whose own header timeout answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_preface_is_closed_after_the_header_timeout() {
    let _serial = SERIAL.read().await;
    within(30, "half preface", async {
        let f = Fixture::start("", "header_read_timeout = \"1s\"").await;
        let mut good = GoodClient::connect(f.addr()).await;
        let mut c = RawConn::connect(f.addr()).await;
        c.send(&h2raw::PREFACE[..12]).await.unwrap();
        let started = Instant::now();
        good.assert_ok("/meanwhile").await;
        let closed = c.closed_within(Duration::from_secs(6)).await;
        let took = started.elapsed();
        eprintln!(
            "half preface: closed {closed} after {took:?}, answer {:?}",
            String::from_utf8_lossy(c.buffered())
        );
        assert!(closed, "still open after {took:?}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "closed after {took:?}"
        );
        assert_fresh_client_ok(f.addr(), "/after").await;
    })
    .await;
}

/// The whole preface, then no SETTINGS: `handshake_timeout` is documented as "the longest
/// wait for the client preface and SETTINGS exchange", so the connection must be closed soon
/// after `header_read_timeout` (1 s), not after `keepalive_timeout` (30 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preface_without_settings_is_closed_after_the_header_timeout() {
    let _serial = SERIAL.read().await;
    within(30, "preface without SETTINGS", async {
        let f = Fixture::start(
            "",
            "header_read_timeout = \"1s\"\nkeepalive_timeout = \"30s\"",
        )
        .await;
        let mut c = H2Conn::connect(f.addr()).await;
        assert!(c.write(h2raw::PREFACE, 0).await);
        let started = Instant::now();
        let closed = c.closed_within(Duration::from_secs(4)).await;
        let took = started.elapsed();
        eprintln!(
            "preface without SETTINGS: closed {closed} after {took:?}, GOAWAY {:?}",
            c.goaway_seen()
        );
        assert!(closed, "still open after {took:?}");
        assert_fresh_client_ok(f.addr(), "/after").await;
    })
    .await;
}

/// A client that completes the handshake, opens no stream and ignores everything after:
/// `keepalive_timeout` (1 s) sends GOAWAY, and the connection must be gone a bounded time
/// later even though the client never answers the GOAWAY's PING (h2 waits for that PING's
/// acknowledgement before it closes a gracefully drained connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_client_that_ignores_goaway_is_closed() {
    let _serial = SERIAL.read().await;
    within(30, "idle client ignoring GOAWAY", async {
        let f = Fixture::start("", "keepalive_timeout = \"1s\"").await;
        let mut c = H2Conn::handshake(f.addr(), &[]).await;
        let started = Instant::now();
        let closed = c.closed_within(Duration::from_secs(10)).await;
        let took = started.elapsed();
        eprintln!(
            "idle client ignoring GOAWAY: closed {closed} after {took:?}, GOAWAY {:?}",
            c.goaway_seen()
        );
        assert_eq!(c.goaway_seen().map(|(_, code)| code), Some(code::NO_ERROR));
        assert!(closed, "still open {took:?} after the handshake");
        assert_fresh_client_ok(f.addr(), "/after").await;
    })
    .await;
}

// ===== 11. Preface followed by something other than SETTINGS =====

/// RFC 9113 section 3.4: the preface "MUST be followed by a SETTINGS frame". A PING, or a
/// SETTINGS acknowledgement, instead: GOAWAY PROTOCOL_ERROR and close; a protocol error, not
/// counted as abuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preface_must_be_followed_by_settings() {
    let _serial = SERIAL.read().await;
    within(30, "preface then PING", async {
        let f = Fixture::start("", "").await;
        for (what, first) in [
            ("PING", {
                let mut out = Vec::new();
                h2raw::ping(&mut out, false, [0; 8]);
                out
            }),
            ("SETTINGS ACK", {
                let mut out = Vec::new();
                h2raw::settings_ack(&mut out);
                out
            }),
        ] {
            let mut c = H2Conn::connect(f.addr()).await;
            let mut out = h2raw::PREFACE.to_vec();
            out.extend_from_slice(&first);
            assert!(c.write(&out, 1).await);
            let end = ending(&mut c).await;
            eprintln!("preface then {what}: {end:?}");
            assert_eq!(
                end.goaway.map(|(_, code)| code),
                Some(code::PROTOCOL_ERROR),
                "preface then {what}: {end:?}"
            );
            assert!(end.closed, "preface then {what}: still open");
        }
        assert_eq!(f.abusive(), 0, "a protocol error is not counted as abuse");
        assert_fresh_client_ok(f.addr(), "/after").await;
    })
    .await;
}

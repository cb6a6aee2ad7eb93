//! Failover and passive health: a backend killed in the middle of a load causes no failed
//! request; an ejected endpoint is left alone for `fail_timeout` and gets traffic again once it
//! is back; retries follow the safety rules (connect failures for any method, resets only for
//! idempotent requests without a body, at most `max_attempts` endpoints).

// Tests panic on purpose: a failed assertion or setup step is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tests::client::{self, Conn, empty, full, req};
use tests::{Backend, Mode, TestProxy, fill, pool_config, unused_addr, within};
use tokio::time::Instant;

/// 200 GETs from 8 keep-alive clients against 3 endpoints that take 5 ms each; the third
/// endpoint is killed (listener and open connections) when request 100 starts. Every request
/// must still succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_backend_mid_run_fails_no_request() {
    within(60, "failover under load", async {
        let bs = Arc::new(Backend::start_many("f", 3).await);
        for b in bs.iter() {
            b.set_delay(Duration::from_millis(5));
        }
        let proxy = TestProxy::start(&fill(
            &pool_config(
                "max_fails = 1\nfail_timeout = \"30s\"",
                r#""{A}", "{B}", "{C}""#,
            ),
            &[
                ("A", bs[0].addr()),
                ("B", bs[1].addr()),
                ("C", bs[2].addr()),
            ],
        ))
        .await;
        const TOTAL: usize = 200;
        let next = Arc::new(AtomicUsize::new(0));
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (next, bs, addr) = (next.clone(), bs.clone(), proxy.addr());
            workers.spawn(async move {
                let mut failures = Vec::new();
                let mut c = Conn::connect(addr).await;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= TOTAL {
                        return failures;
                    }
                    if i == TOTAL / 2 {
                        bs[2].kill().await;
                    }
                    if c.is_closed() {
                        c = Conn::connect(addr).await;
                    }
                    let request = req("GET", "f.test", &format!("/item/{i}"))
                        .body(empty())
                        .unwrap();
                    match c.try_send(request).await {
                        Ok(r) if r.status == 200 => {}
                        Ok(r) => failures.push(format!("#{i}: {} {}", r.status, r.text())),
                        Err(e) => {
                            failures.push(format!("#{i}: transport error {e:?}"));
                            c = Conn::connect(addr).await;
                        }
                    }
                }
            });
        }
        let mut failures = Vec::new();
        while let Some(r) = workers.join_next().await {
            failures.extend(r.unwrap());
        }
        assert!(failures.is_empty(), "failed requests: {failures:#?}");
        let served: usize = bs.iter().map(Backend::hits).sum();
        assert!(served >= TOTAL, "only {served} requests reached a backend");
        assert!(
            bs[2].hits() > 0,
            "the killed backend served nothing before it died"
        );
        assert!(bs[0].hits() > TOTAL / 3 && bs[1].hits() > TOTAL / 3);
    })
    .await;
}

/// With `max_fails = 1, fail_timeout = 1s`: one reset ejects the endpoint, it is not contacted
/// again inside the window, and once restarted (same port) and past the window it serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejected_endpoint_is_skipped_then_returns() {
    within(30, "ejection", async {
        let bad = Backend::start_mode("bad", Mode::Reset).await;
        let good = Backend::start("good").await;
        let proxy = TestProxy::start(&fill(
            &pool_config(
                "balancer = \"round_robin\"\nmax_fails = 1\nfail_timeout = \"1s\"",
                r#""{A}", "{B}""#,
            ),
            &[("A", bad.addr()), ("B", good.addr())],
        ))
        .await;
        let mut c = Conn::connect(proxy.addr()).await;
        // Round robin starts with the first endpoint: reset, then retried on the good one.
        let first = c.get("/1").await;
        let failed_at = Instant::now();
        assert_eq!(first.status, 200, "{}", first.text());
        assert_eq!(first.backend(), "good");
        assert_eq!(bad.accepts(), 1, "the bad endpoint was tried once");

        for i in 0..10 {
            let r = c.get(&format!("/in-window/{i}")).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.backend(), "good");
        }
        assert!(
            failed_at.elapsed() < Duration::from_millis(900),
            "the window check took too long to mean anything"
        );
        assert_eq!(
            bad.accepts(),
            1,
            "an ejected endpoint was contacted inside its window"
        );

        // The endpoint comes back on the same port, healthy.
        bad.kill().await;
        bad.set_mode(Mode::Echo);
        bad.restart().await;
        tokio::time::sleep_until(failed_at + Duration::from_millis(1200)).await;
        let seq: Vec<String> = {
            let mut v = Vec::new();
            for i in 0..6 {
                v.push(c.get(&format!("/after/{i}")).await.backend().to_owned());
            }
            v
        };
        assert!(
            seq.iter().filter(|b| *b == "bad").count() >= 2,
            "the recovered endpoint gets no traffic: {seq:?}"
        );
        assert!(bad.hits() >= 2);
    })
    .await;
}

/// A refused connection is retried on another endpoint even for a POST with a body: nothing
/// was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_are_retried_for_any_method() {
    within(30, "connect retry", async {
        let dead = unused_addr().await;
        let good = Backend::start("good").await;
        let proxy = TestProxy::start(&fill(
            &pool_config("max_fails = 0", r#""{DEAD}", "{B}""#),
            &[("DEAD", dead), ("B", good.addr())],
        ))
        .await;
        let mut c = Conn::connect(proxy.addr()).await;
        for i in 0..6 {
            let r = c
                .send(
                    req("POST", "r.test", &format!("/orders/{i}"))
                        .header("content-type", "text/plain")
                        .body(full(format!("order {i}")))
                        .unwrap(),
                )
                .await;
            assert_eq!(r.status, 200, "POST {i}: {}", r.text());
            let echo = r.echo();
            assert_eq!(echo.backend, "good");
            assert_eq!(echo.body, format!("order {i}"), "the body arrives whole");
        }
        assert_eq!(good.hits(), 6);
    })
    .await;
}

/// After a reset the request may have been processed: a POST with a body is not replayed
/// (502), an idempotent GET without a body is (200).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_are_retried_only_when_safe() {
    within(30, "reset retry", async {
        let bad = Backend::start_mode("bad", Mode::Reset).await;
        let good = Backend::start("good").await;
        let proxy = TestProxy::start(&fill(
            &pool_config(
                "balancer = \"round_robin\"\nmax_fails = 0",
                r#""{A}", "{B}""#,
            ),
            &[("A", bad.addr()), ("B", good.addr())],
        ))
        .await;
        let addr = proxy.addr();
        let mut post_statuses = Vec::new();
        for i in 0..4 {
            let r = client::send(
                addr,
                req("POST", "r.test", &format!("/pay/{i}"))
                    .body(full("charge me once"))
                    .unwrap(),
            )
            .await;
            post_statuses.push((r.status.as_u16(), r.backend().to_owned()));
        }
        // Round robin alternates: the POSTs that went to the resetting endpoint fail.
        let failed = post_statuses.iter().filter(|(s, _)| *s == 502).count();
        let ok = post_statuses
            .iter()
            .filter(|(s, b)| *s == 200 && b == "good")
            .count();
        assert_eq!((failed, ok), (2, 2), "{post_statuses:?}");
        let posts_seen = good.hits();
        assert_eq!(
            posts_seen, 2,
            "a reset POST was replayed on the good endpoint"
        );

        for i in 0..4 {
            let r = client::get(addr, &format!("/read/{i}")).await;
            assert_eq!(r.status, 200, "GET {i}: {}", r.text());
            assert_eq!(r.backend(), "good");
        }
    })
    .await;
}

/// `max_attempts = 1` disables retries; `max_attempts = 2` stops after two endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_attempts_bounds_the_endpoints_tried() {
    within(30, "max attempts", async {
        let bad1 = Backend::start_mode("bad1", Mode::Reset).await;
        let bad2 = Backend::start_mode("bad2", Mode::Reset).await;
        let good = Backend::start("good").await;
        let addrs = [("A", bad1.addr()), ("B", bad2.addr()), ("C", good.addr())];
        let once = TestProxy::start(&fill(
            &pool_config(
                "balancer = \"round_robin\"\nmax_fails = 0\nmax_attempts = 1",
                r#""{A}", "{C}""#,
            ),
            &addrs,
        ))
        .await;
        let r = client::get(once.addr(), "/x").await;
        assert_eq!(
            r.status, 502,
            "first endpoint resets and no retry is allowed"
        );
        assert_eq!(bad1.accepts(), 1);

        let twice = TestProxy::start(&fill(
            &pool_config(
                "balancer = \"round_robin\"\nmax_fails = 0\nmax_attempts = 2",
                r#""{A}", "{B}", "{C}""#,
            ),
            &addrs,
        ))
        .await;
        let r = client::get(twice.addr(), "/x").await;
        assert_eq!(
            r.status, 502,
            "two resetting endpoints exhaust two attempts"
        );
        assert_eq!(bad1.accepts(), 2);
        assert_eq!(bad2.accepts(), 1);
        assert_eq!(good.hits(), 0, "a third attempt was made");
    })
    .await;
}

/// A response-header timeout on an idempotent request without a body is retried on another
/// endpoint; the same timeout on a POST with a body is not (504).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_retried_only_when_safe() {
    within(30, "timeout retry", async {
        let slow = Backend::start("slow").await;
        slow.set_delay(Duration::from_millis(2000));
        let fast = Backend::start("fast").await;
        let proxy = TestProxy::start(&fill(
            &pool_config(
                "balancer = \"round_robin\"\nmax_fails = 0\nresponse_header_timeout = \"300ms\"",
                r#""{A}", "{B}""#,
            ),
            &[("A", slow.addr()), ("B", fast.addr())],
        ))
        .await;
        let addr = proxy.addr();
        // Round robin starts on the slow endpoint.
        let started = Instant::now();
        let r = client::get(addr, "/read").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.backend(), "fast");
        assert_eq!(
            slow.hits(),
            1,
            "the first attempt went to the slow endpoint"
        );
        assert!(started.elapsed() < Duration::from_millis(1500));

        let mut statuses = Vec::new();
        for i in 0..2 {
            let r = client::send(
                addr,
                req("POST", "t.test", &format!("/write/{i}"))
                    .body(full("x"))
                    .unwrap(),
            )
            .await;
            statuses.push((r.status.as_u16(), r.backend().to_owned()));
        }
        statuses.sort();
        assert_eq!(
            statuses,
            [(200, "fast".to_owned()), (504, String::new())],
            "one POST times out on the slow endpoint and is not replayed"
        );
        assert_eq!(fast.hits(), 2);
    })
    .await;
}

/// nginx semantics: `max_fails = 3` failures within `fail_timeout` eject, fewer do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_fails_counts_failures_before_ejecting() {
    within(30, "max_fails", async {
        let bad = Backend::start_mode("bad", Mode::Reset).await;
        let good = Backend::start("good").await;
        let proxy = TestProxy::start(&fill(
            &pool_config(
                "balancer = \"round_robin\"\nmax_fails = 3\nfail_timeout = \"20s\"",
                r#""{A}", "{B}""#,
            ),
            &[("A", bad.addr()), ("B", good.addr())],
        ))
        .await;
        let mut c = Conn::connect(proxy.addr()).await;
        for i in 0..20 {
            let r = c.get(&format!("/{i}")).await;
            assert_eq!(r.status, 200, "request {i}: {}", r.text());
            assert_eq!(r.backend(), "good");
        }
        assert_eq!(
            bad.accepts(),
            3,
            "the third failure must eject, and only the third"
        );
    })
    .await;
}

/// A pooled upstream connection that the upstream closed while idle is not a failure: the
/// request goes out on a fresh connection to the same (only) endpoint, even a POST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_pooled_connections_are_replaced_transparently() {
    within(30, "stale pool", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::start(&fill(
            &pool_config("max_fails = 1", r#""{A}""#),
            &[("A", a.addr())],
        ))
        .await;
        let mut c = Conn::connect(proxy.addr()).await;
        for round in 0..3 {
            assert_eq!(c.get("/warm").await.status, 200, "round {round}");
            // The upstream restarts: every pooled connection to it is now closed.
            a.restart().await;
            let r = c
                .send(
                    req("POST", "t.test", "/after-restart")
                        .body(full("body"))
                        .unwrap(),
                )
                .await;
            assert_eq!(r.status, 200, "round {round}: {}", r.text());
            assert_eq!(r.echo().body, "body");
        }
    })
    .await;
}

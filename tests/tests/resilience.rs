//! Backend health and resilience end to end: what clients see when a backend goes down, slows
//! down, flaps or comes back, with the proxy's admin `/health` view as the witness of what the
//! proxy believes. Active checks, slow start, peak-EWMA avoidance, growing outlier ejections,
//! retry budgets, circuit breaking, replay rules, backup endpoints and per-try timeouts, each
//! over real loopback sockets and bounded in time.

// Tests panic on purpose: a failed assertion or setup step is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use tests::client::{self, Conn, empty, full, req};
use tests::{Backend, Mode, TestProxy, fill, pool_config, wait_until, within};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The admin listener every proxy here runs, for `GET /health`.
const ADMIN: &str = "[admin]\naddress = \"127.0.0.1:0\"\n";

/// One upstream `app` (`upstream` lines, `endpoints`), a default route to it with `route`
/// lines appended, and the admin listener; `{NAME}` placeholders filled from `addrs`.
fn config(upstream: &str, endpoints: &str, route: &str, addrs: &[(&str, SocketAddr)]) -> String {
    fill(
        &format!("{ADMIN}{}{route}\n", pool_config(upstream, endpoints)),
        addrs,
    )
}

/// The admin `/health` document.
async fn health(proxy: &TestProxy) -> Value {
    let admin = proxy.running().admin_addr().expect("an admin listener");
    let r = client::get(admin, "/health").await;
    assert_eq!(r.status, 200, "admin /health: {}", r.text());
    serde_json::from_slice(&r.body).expect("admin /health is JSON")
}

/// Upstream `app` in a `/health` document.
fn app(h: &Value) -> &Value {
    &h["upstreams"]["app"]
}

/// The entry of endpoint `addr` in a `/health` document.
fn endpoint(h: &Value, addr: SocketAddr) -> &Value {
    let want = addr.to_string();
    app(h)["endpoints"]
        .as_array()
        .expect("endpoints listed")
        .iter()
        .find(|e| e["address"].as_str() == Some(want.as_str()))
        .unwrap_or_else(|| panic!("{want} not in {h}"))
}

fn available(h: &Value, addr: SocketAddr) -> bool {
    endpoint(h, addr)["available"]
        .as_bool()
        .expect("`available` is a bool")
}

fn weight_factor(h: &Value, addr: SocketAddr) -> f64 {
    endpoint(h, addr)["weight_factor"]
        .as_f64()
        .expect("`weight_factor` is a number")
}

/// Polls `/health` every 10 ms until `cond` holds; the document it held on, or `None` after
/// `timeout`.
async fn wait_health(
    proxy: &TestProxy,
    timeout: Duration,
    mut cond: impl FnMut(&Value) -> bool,
) -> Option<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let h = health(proxy).await;
        if cond(&h) {
            return Some(h);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Requests a backend received apart from health checks (every client request here goes
/// to a path under `/r/`).
fn traffic(b: &Backend) -> usize {
    b.requests()
        .iter()
        .filter(|r| r.uri.starts_with("/r/"))
        .count()
}

/// One finished client request of a [`Load`].
#[derive(Debug, Clone)]
struct Sample {
    /// When the response (or the error) arrived.
    at: Instant,
    /// The status, 0 for a transport error.
    status: u16,
    /// `x-backend` of the answer.
    backend: String,
}

/// Keep-alive clients sending GETs in a loop until stopped, each recording every answer.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: JoinSet<Vec<Sample>>,
}

impl Load {
    /// Most requests one client sends, whatever happens.
    const MAX_PER_CLIENT: usize = 20_000;

    /// Starts `clients` clients that pause `pause` between requests.
    fn start(addr: SocketAddr, clients: usize, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        for n in 0..clients {
            let stop = stop.clone();
            tasks.spawn(async move {
                let mut out = Vec::new();
                let mut c = Conn::connect(addr).await;
                for i in 0..Load::MAX_PER_CLIENT {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if c.is_closed() {
                        c = Conn::connect(addr).await;
                    }
                    let request = req("GET", "res.test", &format!("/r/{n}/{i}"))
                        .body(empty())
                        .unwrap();
                    match c.try_send(request).await {
                        Ok(r) => out.push(Sample {
                            at: Instant::now(),
                            status: r.status.as_u16(),
                            backend: r.backend().to_owned(),
                        }),
                        Err(_) => {
                            out.push(Sample {
                                at: Instant::now(),
                                status: 0,
                                backend: String::new(),
                            });
                            c = Conn::connect(addr).await;
                        }
                    }
                    tokio::time::sleep(pause).await;
                }
                out
            });
        }
        Load { stop, tasks }
    }

    /// Stops the clients and returns every sample, in time order.
    async fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        while let Some(r) = self.tasks.join_next().await {
            all.extend(r.unwrap());
        }
        all.sort_by_key(|s| s.at);
        all
    }
}

/// Of the samples that finished in `[from, to)`: how many, and how many `name` answered.
fn share(samples: &[Sample], from: Instant, to: Instant, name: &str) -> (usize, usize) {
    let window: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= from && s.at < to)
        .collect();
    let by = window.iter().filter(|s| s.backend == name).count();
    (window.len(), by)
}

/// Two backends under steady load from four keep-alive clients, with HTTP checks every
/// 200 ms. Killing one fails no client request (refused and reset attempts are retried); the
/// checks mark it unavailable within a bound that follows from the interval; once restarted
/// on its port it is available again and its weight ramps: in the first 700 ms of the 2 s
/// slow-start window it gets clearly less than half the traffic (but some), after the ramp its
/// fair half.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_under_load_fails_no_request_and_restart_ramps_up() {
    within(30, "kill and restart under load", async {
        let a = Backend::start("a").await;
        let b = Backend::start("b").await;
        // Passive ejection off: the detection time measured is the active checks'.
        let upstream = r#"balancer = "round_robin"
max_fails = 0
slow_start = "2s"
health_check = { type = "http", path = "/healthz", interval = "200ms", timeout = "500ms", unhealthy_threshold = 1, healthy_threshold = 2 }"#;
        let proxy = TestProxy::start(&config(
            upstream,
            r#""{A}", "{B}""#,
            "",
            &[("A", a.addr()), ("B", b.addr())],
        ))
        .await;
        let load = Load::start(proxy.addr(), 4, Duration::from_millis(2));

        tokio::time::sleep(Duration::from_millis(600)).await;
        let served_before_kill = traffic(&b);
        b.kill().await;
        let killed_at = Instant::now();
        let down = wait_health(&proxy, Duration::from_secs(5), |h| !available(h, b.addr()))
            .await
            .expect("the killed backend is never marked unavailable");
        let detection = killed_at.elapsed();
        assert_eq!(endpoint(&down, b.addr())["checks_failing"], true, "{down}");
        assert_eq!(endpoint(&down, b.addr())["last_cause"], "checks_failed");
        // The rest of the 1.5 s under load without it.
        tokio::time::sleep_until(killed_at + Duration::from_millis(900)).await;

        b.restart().await;
        let restarted_at = Instant::now();
        let up = wait_health(&proxy, Duration::from_secs(5), |h| available(h, b.addr()))
            .await
            .expect("the restarted backend never became available");
        let up_at = Instant::now();
        let recovery = restarted_at.elapsed();
        let first_factor = weight_factor(&up, b.addr());
        assert!(
            first_factor < 0.5,
            "a recovered endpoint starts its ramp low, weight_factor {first_factor}"
        );
        let ramp_early_end = up_at + Duration::from_millis(700);
        let full = wait_health(&proxy, Duration::from_secs(6), |h| {
            weight_factor(h, b.addr()) >= 1.0
        })
        .await;
        let full_at = Instant::now();
        assert!(full.is_some(), "the slow start never ended");
        let ramp = full_at - up_at;
        tokio::time::sleep(Duration::from_millis(600)).await;
        let samples = load.finish().await;

        let failed: Vec<&Sample> = samples.iter().filter(|s| s.status != 200).collect();
        eprintln!(
            "kill test: {} requests, {} failed, detection {} ms, recovery {} ms, ramp {} ms",
            samples.len(),
            failed.len(),
            detection.as_millis(),
            recovery.as_millis(),
            ramp.as_millis(),
        );
        assert!(served_before_kill > 0, "b served nothing before the kill");
        assert!(
            failed.is_empty(),
            "{} of {} requests failed, first ones: {:?}",
            failed.len(),
            samples.len(),
            &failed[..failed.len().min(5)]
        );
        // interval 200 ms + jitter 40 ms + a refused probe is immediate; generous for a busy
        // two-core machine.
        assert!(
            detection < Duration::from_secs(2),
            "detection took {detection:?}"
        );
        assert!(
            ramp >= Duration::from_millis(1500),
            "a 2 s slow start ended after {ramp:?}"
        );

        let (early_total, early_b) = share(&samples, up_at, ramp_early_end, "b");
        let (late_total, late_b) = share(&samples, full_at, Instant::now(), "b");
        eprintln!(
            "kill test: b's share early in the ramp {early_b}/{early_total}, after it {late_b}/{late_total}"
        );
        assert!(early_total >= 50, "too little load to judge: {early_total}");
        assert!(
            early_b > 0,
            "the ramp starts from a minimum weight, not from zero"
        );
        assert!(
            (early_b as f64) < 0.3 * early_total as f64,
            "early in the slow start b got {early_b} of {early_total}"
        );
        assert!(late_total >= 50, "too little load to judge: {late_total}");
        let late = late_b as f64 / late_total as f64;
        assert!(
            (0.35..=0.65).contains(&late),
            "after the ramp b got {late_b} of {late_total}"
        );
    })
    .await;
}

/// Peak EWMA under concurrent load: the endpoint the balancer favours is made slower step by
/// step (10, 40, 100 ms); by the last step it gets under a quarter of the traffic, and no
/// request fails on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowly_degrading_backend_is_avoided_by_peak_ewma() {
    within(30, "gradual degradation", async {
        // (added delay in ms, how long it lasts in ms)
        const STEPS: [(u64, u64); 3] = [(10, 400), (40, 400), (100, 600)];
        let bs = Backend::start_many("e", 2).await;
        let proxy = TestProxy::start(&config(
            r#"balancer = "peak_ewma""#,
            r#""{A}", "{B}""#,
            "",
            &[("A", bs[0].addr()), ("B", bs[1].addr())],
        ))
        .await;
        let load = Load::start(proxy.addr(), 4, Duration::from_millis(1));
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Degrade whichever endpoint got more traffic so far: what follows is the reaction to
        // the slowdown, not an earlier preference.
        let degrading = if traffic(&bs[0]) >= traffic(&bs[1]) {
            &bs[0]
        } else {
            &bs[1]
        };
        let mut bounds = vec![t0, Instant::now()];
        for (ms, lasting) in STEPS {
            degrading.set_delay(Duration::from_millis(ms));
            tokio::time::sleep(Duration::from_millis(lasting)).await;
            bounds.push(Instant::now());
        }
        let samples = load.finish().await;

        let failed = samples.iter().filter(|s| s.status != 200).count();
        assert_eq!(failed, 0, "requests failed while a backend slowed down");
        let mut shares = Vec::new();
        for (k, w) in bounds.windows(2).enumerate() {
            let (total, slow) = share(&samples, w[0], w[1], degrading.name());
            let delay = if k == 0 { 0 } else { STEPS[k - 1].0 };
            shares.push(format!("{delay} ms: {slow}/{total}"));
        }
        eprintln!(
            "peak ewma: share of the degrading backend per step: {}",
            shares.join(", ")
        );
        let (first_total, first_slow) = share(&samples, bounds[0], bounds[1], degrading.name());
        assert!(
            first_slow as f64 >= 0.45 * first_total as f64,
            "it was the favourite: {first_slow}/{first_total}"
        );
        let (total, slow) = share(&samples, bounds[3], bounds[4], degrading.name());
        assert!(total >= 20, "too little load to judge: {total}");
        assert!(
            (slow as f64) < 0.25 * total as f64,
            "at 100 ms the degrading backend still got {slow} of {total}"
        );
    })
    .await;
}

/// A backend that resets every request, with `max_fails = 1` and `fail_timeout = 300ms`: each
/// time its ejection ends it fails the next request and is ejected again, for longer each
/// time (300, 600, 900 ms, the admin view showing `ejections` 1, 2, 3), and it is not
/// contacted while ejected. Clients see no failure; once it heals it serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_backend_is_ejected_for_growing_periods() {
    within(30, "growing ejections", async {
        let bad = Backend::start_mode("bad", Mode::Reset).await;
        let good = Backend::start("good").await;
        let proxy = TestProxy::start(&config(
            "balancer = \"round_robin\"\nmax_fails = 1\nfail_timeout = \"300ms\"",
            r#""{A}", "{B}""#,
            "",
            &[("A", bad.addr()), ("B", good.addr())],
        ))
        .await;
        // The first admin request opens a connection; make it before the load starts, so
        // that polling keeps up with the 300 ms ejections.
        let _ = health(&proxy).await;
        let load = Load::start(proxy.addr(), 1, Duration::from_millis(5));

        // (ejections, ejected_for_ms at first sight, when seen, accepts then)
        let mut seen: Vec<(u64, u64, Instant, usize)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while seen.len() < 3 && Instant::now() < deadline {
            let h = health(&proxy).await;
            let e = endpoint(&h, bad.addr());
            let n = e["ejections"].as_u64().unwrap();
            // The count decays by one per 300 ms the endpoint stays in; on a loaded machine
            // the load loop can stall that long, and the series starts over from 1.
            if n == 1 && seen.last().is_some_and(|s| s.0 > 1 || s.3 != bad.accepts()) {
                seen.clear();
            }
            if n > seen.last().map_or(0, |s| s.0)
                && let Some(ms) = e["ejected_for_ms"].as_u64()
            {
                assert_eq!(e["available"], false, "{e}");
                assert_eq!(e["last_cause"], "gateway_failures", "{e}");
                seen.push((n, ms, Instant::now(), bad.accepts()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        eprintln!(
            "flapping: (ejections, ejected_for_ms) seen {:?}",
            seen.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>()
        );
        let counts: Vec<u64> = seen.iter().map(|s| s.0).collect();
        assert!(
            counts.len() == 3 && counts[1] == counts[0] + 1 && counts[2] == counts[1] + 1,
            "ejections must count up one at a time: {:?}",
            seen.iter().map(|s| (s.0, s.1, s.3)).collect::<Vec<_>>()
        );
        let first_accepts = seen[0].3;
        for (k, &(n, ms, _, accepts)) in seen.iter().enumerate() {
            let length = 300 * n;
            assert!(
                ms <= length && ms + 250 >= length,
                "ejection {n} has {ms} ms left when first seen, expected just under {length}"
            );
            assert_eq!(
                accepts - first_accepts,
                k,
                "one failed attempt per ejection: nothing reaches an ejected endpoint"
            );
        }
        for w in seen.windows(2) {
            let gap = w[1].2 - w[0].2;
            let length = Duration::from_millis(300 * w[0].0);
            assert!(
                gap + Duration::from_millis(50) >= length,
                "ejection {} lasted {gap:?}, less than {length:?}",
                w[0].0
            );
        }

        // It heals: once the third ejection is over it serves again.
        bad.set_mode(Mode::Echo);
        assert!(
            wait_until(Duration::from_secs(3), || traffic(&bad) > 0).await,
            "the healed backend never served again"
        );
        let samples = load.finish().await;
        let failed = samples.iter().filter(|s| s.status != 200).count();
        assert_eq!(failed, 0, "of {} requests", samples.len());
        assert!(samples.iter().any(|s| s.backend == "bad"));
    })
    .await;
}

/// Both endpoints answer 503 and the route retries gateway errors (three attempts): the retry
/// budget (20 % of requests plus 1/s over 10 s) bounds the upstream attempts to about 1.2
/// per request instead of 3. When the endpoints heal, requests succeed again at once, with
/// one attempt each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_outage_retry_budget_bounds_amplification_and_recovers() {
    within(30, "retry budget", async {
        let bs = Arc::new(Backend::start_many("o", 2).await);
        for b in bs.iter() {
            b.set_status(503);
        }
        let upstream = r#"balancer = "round_robin"
retry_budget = { percent = 20, min_per_second = 1 }"#;
        let route = r#"retry = { on = ["gateway-error"], backoff = "1ms", max_backoff = "5ms" }"#;
        let proxy = TestProxy::start(&config(
            upstream,
            r#""{A}", "{B}""#,
            route,
            &[("A", bs[0].addr()), ("B", bs[1].addr())],
        ))
        .await;
        const CLIENTS: usize = 6;
        const PER_CLIENT: usize = 50;
        const N: usize = CLIENTS * PER_CLIENT;
        let mut tasks = JoinSet::new();
        for n in 0..CLIENTS {
            let addr = proxy.addr();
            tasks.spawn(async move {
                let mut c = Conn::connect(addr).await;
                let mut statuses = Vec::new();
                for i in 0..PER_CLIENT {
                    let r = c.get(&format!("/r/{n}/{i}")).await;
                    statuses.push(r.status.as_u16());
                }
                statuses
            });
        }
        let mut statuses = Vec::new();
        while let Some(r) = tasks.join_next().await {
            statuses.extend(r.unwrap());
        }
        assert_eq!(statuses.len(), N);
        assert!(
            statuses.iter().all(|s| *s == 503),
            "every request fails during the outage"
        );
        let attempts: usize = bs.iter().map(|b| b.hits()).sum();
        let amplification = attempts as f64 / N as f64;
        let h = health(&proxy).await;
        eprintln!(
            "outage: {N} requests, {attempts} upstream attempts, amplification {amplification:.3}, retry_budget_left {}",
            app(&h)["retry_budget_left"]
        );
        // 20 % of the requests plus the floor of 1/s over the 10 s window, and a little for
        // two workers racing on the last retry.
        let bound = 1.0 + 0.2 + 10.0 / N as f64 + 0.02;
        assert!(
            amplification <= bound,
            "amplification {amplification:.3} above {bound:.3}"
        );
        assert!(
            amplification >= 1.1,
            "the budget was not used: amplification {amplification:.3}"
        );
        assert!(
            app(&h)["retry_budget_left"].as_u64().unwrap() <= 2,
            "the budget is spent: {h}"
        );

        for b in bs.iter() {
            b.set_status(200);
        }
        let mut c = Conn::connect(proxy.addr()).await;
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let r = c.get("/r/probe").await;
            if r.status == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "still {} after the outage",
                r.status
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let before: usize = bs.iter().map(|b| b.hits()).sum();
        for i in 0..20 {
            let r = c.get(&format!("/r/after/{i}")).await;
            assert_eq!(r.status, 200, "request {i} after the outage: {}", r.text());
        }
        let after: usize = bs.iter().map(|b| b.hits()).sum();
        assert_eq!(after - before, 20, "one attempt per request once healthy");
    })
    .await;
}

/// `max_requests = 2`: with two slow requests in flight a third is answered 503 by the proxy
/// itself at once (no backend reached), the refusal counted in the admin view; once the slow
/// ones have finished, requests pass again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_answers_fast_when_full() {
    within(30, "circuit breaker", async {
        let b = Backend::start("cb").await;
        let proxy = TestProxy::start(&config(
            "circuit_breaker = { max_requests = 2 }",
            r#""{A}""#,
            "",
            &[("A", b.addr())],
        ))
        .await;
        let addr = proxy.addr();
        let mut slow = JoinSet::new();
        for i in 0..2 {
            slow.spawn(async move {
                let mut c = Conn::connect(addr).await;
                c.send(
                    req("GET", "cb.test", &format!("/r/slow/{i}"))
                        .header("x-delay-ms", "1000")
                        .body(empty())
                        .unwrap(),
                )
                .await
            });
        }
        assert!(
            wait_until(Duration::from_secs(3), || b.hits() == 2).await,
            "the slow requests never arrived"
        );
        let started = Instant::now();
        let r = client::get(addr, "/r/third").await;
        let took = started.elapsed();
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.backend(), "", "the proxy answered, not the backend");
        assert!(took < Duration::from_millis(200), "refusal took {took:?}");
        assert_eq!(b.hits(), 2, "the refused request reached the backend");

        while let Some(r) = slow.join_next().await {
            let r = r.unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
        }
        assert!(
            wait_health(&proxy, Duration::from_secs(2), |h| {
                endpoint(h, b.addr())["outstanding"] == 0
            })
            .await
            .is_some(),
            "the slow requests still count as outstanding"
        );
        let r = client::get(addr, "/r/after").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let h = health(&proxy).await;
        assert!(
            app(&h)["breaker_refused"].as_u64().unwrap() >= 1,
            "refusals counted: {h}"
        );
    })
    .await;
}

/// Round robin over an endpoint that reads the request head and resets, then an echo
/// endpoint. A POST that reached the resetting endpoint is not replayed (502, the echo
/// endpoint sees no POST) unless the route says `non_idempotent = true`; an idempotent PUT
/// and a GET with bodies are replayed, the echo endpoint receiving every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_idempotent_request_is_not_retried_after_it_reached_the_backend() {
    within(30, "replay rules", async {
        let bad = Backend::start_mode("bad", Mode::Reset).await;
        let good = Backend::start("good").await;
        let addrs = [("A", bad.addr()), ("B", good.addr())];
        let upstream = "balancer = \"round_robin\"\nmax_fails = 0";
        let post = || {
            req("POST", "p.test", "/r/pay")
                .header("content-type", "text/plain")
                .body(full("charge me once"))
                .unwrap()
        };

        // Default policy: the first pick is the resetting endpoint.
        let strict = TestProxy::start(&config(upstream, r#""{A}", "{B}""#, "", &addrs)).await;
        let r = client::send(strict.addr(), post()).await;
        assert_eq!(r.status, 502, "{}", r.text());
        assert_eq!(bad.accepts(), 1, "the POST went to the resetting endpoint");
        assert!(
            good.requests().iter().all(|r| r.method != "POST"),
            "a POST that may have been processed was replayed"
        );

        let lenient = TestProxy::start(&config(
            upstream,
            r#""{A}", "{B}""#,
            "retry = { non_idempotent = true }",
            &addrs,
        ))
        .await;
        let r = client::send(lenient.addr(), post()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let echo = r.echo();
        assert_eq!(echo.backend, "good");
        assert_eq!(echo.method, "POST");
        assert_eq!(echo.body, "charge me once");
        assert_eq!(
            bad.accepts(),
            2,
            "the POST was tried on the resetting endpoint first"
        );

        // Idempotent methods with bodies are replayed from the buffer. Each request takes
        // two picks, so every one starts on the resetting endpoint.
        let replaying = TestProxy::start(&config(upstream, r#""{A}", "{B}""#, "", &addrs)).await;
        let mut c = Conn::connect(replaying.addr()).await;
        let payload: String = (0..10 * 1024)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let r = c
            .send(
                req("PUT", "p.test", "/r/doc")
                    .body(full(payload.clone()))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let echo = r.echo();
        assert_eq!(
            (echo.backend.as_str(), echo.method.as_str()),
            ("good", "PUT")
        );
        assert_eq!(echo.body_len, payload.len() as u64);
        assert_eq!(echo.body, payload, "the replayed body differs");
        assert_eq!(
            bad.accepts(),
            3,
            "the PUT was tried on the resetting endpoint first"
        );

        let r = c
            .send(
                req("GET", "p.test", "/r/search")
                    .header("content-type", "application/json")
                    .body(full(r#"{"q":"resilience"}"#))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let echo = r.echo();
        assert_eq!(
            (echo.backend.as_str(), echo.method.as_str()),
            ("good", "GET")
        );
        assert_eq!(echo.body, r#"{"q":"resilience"}"#);
        assert_eq!(
            bad.accepts(),
            4,
            "the GET was tried on the resetting endpoint first"
        );
    })
    .await;
}

/// Primaries A and B with backup C, HTTP checks every 100 ms: while a primary is up C gets
/// nothing; with both primaries killed the upstream switches to the backup and C serves
/// every request; when A comes back, traffic moves back to A alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_endpoint_serves_only_when_primaries_are_down() {
    within(30, "backup", async {
        let a = Backend::start("a").await;
        let b = Backend::start("b").await;
        let c = Backend::start("c").await;
        let upstream = r#"balancer = "round_robin"
max_fails = 0
health_check = { path = "/healthz", interval = "100ms", unhealthy_threshold = 1, healthy_threshold = 1 }"#;
        let proxy = TestProxy::start(&config(
            upstream,
            r#""{A}", "{B}", { address = "{C}", backup = true }"#,
            "",
            &[("A", a.addr()), ("B", b.addr()), ("C", c.addr())],
        ))
        .await;
        let h = health(&proxy).await;
        assert_eq!(app(&h)["selection"], "primary", "{h}");
        assert_eq!(endpoint(&h, c.addr())["backup"], true, "{h}");

        let mut conn = Conn::connect(proxy.addr()).await;
        let mut names = Vec::new();
        for i in 0..20 {
            let r = conn.get(&format!("/r/up/{i}")).await;
            assert_eq!(r.status, 200, "{}", r.text());
            names.push(r.backend().to_owned());
        }
        assert!(names.iter().all(|n| n == "a" || n == "b"), "{names:?}");
        assert_eq!(traffic(&c), 0, "the backup served while primaries were up");

        a.kill().await;
        b.kill().await;
        let h = wait_health(&proxy, Duration::from_secs(5), |h| {
            app(h)["selection"] == "backup"
        })
        .await
        .expect("the upstream never switched to its backup");
        assert!(!available(&h, a.addr()) && !available(&h, b.addr()), "{h}");
        let mut conn = Conn::connect(proxy.addr()).await;
        for i in 0..10 {
            let r = conn.get(&format!("/r/down/{i}")).await;
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.backend(), "c", "request {i} with every primary down");
        }

        a.restart().await;
        wait_health(&proxy, Duration::from_secs(5), |h| {
            app(h)["selection"] == "primary" && available(h, a.addr())
        })
        .await
        .expect("the upstream never went back to its primaries");
        let to_c = traffic(&c);
        let mut conn = Conn::connect(proxy.addr()).await;
        for i in 0..10 {
            let r = conn.get(&format!("/r/back/{i}")).await;
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.backend(), "a", "request {i} after a came back");
        }
        assert_eq!(traffic(&c), to_c, "the backup still got traffic");
    })
    .await;
}

/// `per_try_timeout = 200ms` with a route `timeout = 2s`: a GET whose first attempt hangs is
/// answered by the other endpoint shortly after 200 ms; when every endpoint hangs, attempts
/// continue until the route's deadline and the client gets 504 at about 2 s, not later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_timeout_retries_a_hanging_backend_within_the_deadline() {
    within(30, "per-try timeout", async {
        let hang = Backend::start("hang").await;
        hang.set_delay(Duration::from_secs(5));
        let fine = Backend::start("fine").await;
        let upstream = "balancer = \"round_robin\"";
        let route = "retry = { attempts = 20, per_try_timeout = \"200ms\" }\ntimeout = \"2s\"";
        let proxy = TestProxy::start(&config(
            upstream,
            r#""{A}", "{B}""#,
            route,
            &[("A", hang.addr()), ("B", fine.addr())],
        ))
        .await;
        let started = Instant::now();
        let r = client::get(proxy.addr(), "/r/one").await;
        let took = started.elapsed();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.backend(), "fine");
        assert_eq!(
            hang.hits(),
            1,
            "the first attempt went to the hanging endpoint"
        );
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_millis(1000),
            "answered after {took:?}"
        );

        let hang2 = Backend::start("hang2").await;
        hang2.set_delay(Duration::from_secs(5));
        let both = TestProxy::start(&config(
            upstream,
            r#""{A}", "{B}""#,
            route,
            &[("A", hang.addr()), ("B", hang2.addr())],
        ))
        .await;
        let before = hang.hits() + hang2.hits();
        let started = Instant::now();
        let r = client::get(both.addr(), "/r/two").await;
        let took = started.elapsed();
        let attempts = hang.hits() + hang2.hits() - before;
        eprintln!("per-try timeout: both hanging, 504 after {took:?}, {attempts} attempts");
        assert_eq!(r.status, 504, "{}", r.text());
        assert!(
            took >= Duration::from_millis(1950) && took <= Duration::from_secs(3),
            "504 after {took:?}, the route timeout is 2 s"
        );
        assert!(
            (3..=10).contains(&attempts),
            "{attempts} attempts of 200 ms fit in 2 s"
        );
    })
    .await;
}

//! Balancer distributions measured through real sockets: which backend answered each request
//! (`x-backend`), for round robin, smooth weighted round robin, weighted random, consistent
//! hashing (header, cookie, client IP; minimal disruption when an endpoint dies), least
//! request and peak EWMA.

// Tests panic on purpose: a failed assertion or setup step is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use tests::client::{Conn, empty, req};
use tests::{Backend, TestProxy, fill, pool_config, wait_until, within};

fn counts<'a>(names: impl IntoIterator<Item = &'a str>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for n in names {
        *m.entry(n.to_owned()).or_insert(0) += 1;
    }
    m
}

async fn sequence(c: &mut Conn, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let r = c.get(&format!("/r/{i}")).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        out.push(r.backend().to_owned());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_rotates_exactly() {
    within(30, "round robin", async {
        let bs = Backend::start_many("b", 3).await;
        let text = pool_config(
            r#"balancer = "round_robin""#,
            r#""{A}", "{B}", { address = "{C}", weight = 5 }"#,
        );
        let proxy = TestProxy::start(&fill(
            &text,
            &[
                ("A", bs[0].addr()),
                ("B", bs[1].addr()),
                ("C", bs[2].addr()),
            ],
        ))
        .await;
        let mut c = Conn::connect(proxy.addr()).await;
        let seq = sequence(&mut c, 30).await;
        // Strict rotation: the first three are distinct and the pattern repeats (weights are
        // ignored by plain round robin).
        let first: Vec<&str> = seq[..3].iter().map(String::as_str).collect();
        let mut distinct = first.clone();
        distinct.sort_unstable();
        assert_eq!(distinct, ["b0", "b1", "b2"], "sequence {seq:?}");
        for (i, name) in seq.iter().enumerate() {
            assert_eq!(name, first[i % 3], "position {i} of {seq:?}");
        }
        for b in &bs {
            assert_eq!(b.hits(), 10, "{}", b.name());
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_is_smooth_and_exact_per_cycle() {
    within(30, "wrr", async {
        let bs = Backend::start_many("w", 3).await;
        let text = pool_config(
            r#"balancer = "weighted_round_robin""#,
            r#"{ address = "{A}", weight = 5 }, "{B}", { address = "{C}", weight = 1 }"#,
        );
        let proxy = TestProxy::start(&fill(
            &text,
            &[
                ("A", bs[0].addr()),
                ("B", bs[1].addr()),
                ("C", bs[2].addr()),
            ],
        ))
        .await;
        let mut c = Conn::connect(proxy.addr()).await;
        let seq = sequence(&mut c, 28).await;
        for (k, cycle) in seq.chunks(7).enumerate() {
            let n = counts(cycle.iter().map(String::as_str));
            assert_eq!(n.get("w0"), Some(&5), "cycle {k}: {cycle:?}");
            assert_eq!(n.get("w1"), Some(&1), "cycle {k}: {cycle:?}");
            assert_eq!(n.get("w2"), Some(&1), "cycle {k}: {cycle:?}");
            // nginx's smooth order for 5,1,1: a a b a c a a (no burst of five).
            assert_eq!(
                cycle,
                ["w0", "w0", "w1", "w0", "w2", "w0", "w0"],
                "cycle {k}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_follows_weights() {
    within(60, "random", async {
        let bs = Backend::start_many("r", 2).await;
        let text = pool_config(
            r#"balancer = "random""#,
            r#"{ address = "{A}", weight = 3 }, { address = "{B}", weight = 1 }"#,
        );
        let proxy =
            TestProxy::start(&fill(&text, &[("A", bs[0].addr()), ("B", bs[1].addr())])).await;
        const TOTAL: usize = 2000;
        const WORKERS: usize = 4;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..WORKERS {
            let addr = proxy.addr();
            tasks.spawn(async move {
                let mut c = Conn::connect(addr).await;
                sequence(&mut c, TOTAL / WORKERS).await
            });
        }
        let mut all = Vec::new();
        while let Some(r) = tasks.join_next().await {
            all.extend(r.unwrap());
        }
        let n = counts(all.iter().map(String::as_str));
        let heavy = n.get("r0").copied().unwrap_or(0);
        let light = n.get("r1").copied().unwrap_or(0);
        assert_eq!(heavy + light, TOTAL);
        // Expect 75 % ± 5 % of all requests (1500 ± 100; the standard deviation is ~19).
        assert!(
            (1400..=1600).contains(&heavy),
            "weight 3 got {heavy}, weight 1 got {light}"
        );
    })
    .await;
}

async fn by_key(c: &mut Conn, keys: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let r = c
            .send(
                req("GET", "h.test", "/k")
                    .header("x-user", k.as_str())
                    .body(empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, 200, "key {k}: {}", r.text());
        out.push(r.backend().to_owned());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_sticks_and_moves_only_the_dead_endpoints_keys() {
    within(60, "consistent hash", async {
        let bs = Backend::start_many("h", 3).await;
        let text = pool_config(
            r#"balancer = "consistent_hash"
hash_key = "header:x-user"
max_fails = 1
fail_timeout = "30s""#,
            r#""{A}", "{B}", "{C}""#,
        );
        let proxy = TestProxy::start(&fill(
            &text,
            &[
                ("A", bs[0].addr()),
                ("B", bs[1].addr()),
                ("C", bs[2].addr()),
            ],
        ))
        .await;
        let mut c = Conn::connect(proxy.addr()).await;
        let keys: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
        let first = by_key(&mut c, &keys).await;
        let again = by_key(&mut c, &keys).await;
        assert_eq!(first, again, "the same key must reach the same endpoint");
        let spread = counts(first.iter().map(String::as_str));
        for b in &bs {
            let n = spread.get(b.name()).copied().unwrap_or(0);
            assert!(
                n >= 20,
                "{} owns only {n} of 200 keys: {spread:?}",
                b.name()
            );
        }

        bs[2].kill().await;
        let after = by_key(&mut c, &keys).await;
        let mut moved = 0;
        for (i, key) in keys.iter().enumerate() {
            if first[i] == "h2" {
                assert_ne!(after[i], "h2", "key {key} still on the dead endpoint");
                moved += 1;
            } else {
                assert_eq!(
                    after[i], first[i],
                    "key {key} moved although its endpoint lives"
                );
            }
        }
        assert_eq!(moved, spread["h2"]);
        // Keys without a value fall back to round robin over the live endpoints.
        let mut fallback = Vec::new();
        for _ in 0..4 {
            fallback.push(c.get_host("h.test", "/nokey").await.backend().to_owned());
        }
        assert!(
            fallback.iter().all(|b| b == "h0" || b == "h1"),
            "{fallback:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_on_cookie_and_client_ip() {
    within(30, "hash keys", async {
        let bs = Backend::start_many("k", 3).await;
        let addrs = [
            ("A", bs[0].addr()),
            ("B", bs[1].addr()),
            ("C", bs[2].addr()),
        ];
        let cookie = TestProxy::start(&fill(
            &pool_config(
                "balancer = \"consistent_hash\"\nhash_key = \"cookie:session\"",
                r#""{A}", "{B}", "{C}""#,
            ),
            &addrs,
        ))
        .await;
        let mut c = Conn::connect(cookie.addr()).await;
        let mut owners = HashMap::new();
        for round in 0..2 {
            for i in 0..30 {
                let r = c
                    .send(
                        req("GET", "h.test", "/")
                            .header("cookie", format!("theme=dark; session=s{i}; lang=en"))
                            .body(empty())
                            .unwrap(),
                    )
                    .await;
                let owner = owners.entry(i).or_insert_with(|| r.backend().to_owned());
                assert_eq!(*owner, r.backend(), "session s{i}, round {round}");
            }
        }
        let used = counts(owners.values().map(String::as_str));
        assert!(used.len() >= 2, "30 sessions all on one endpoint: {used:?}");

        let ip = TestProxy::start(&fill(
            &pool_config(
                "balancer = \"consistent_hash\"\nhash_key = \"client_ip\"",
                r#""{A}", "{B}", "{C}""#,
            ),
            &addrs,
        ))
        .await;
        let mut seen = Vec::new();
        for _ in 0..12 {
            // New connections from new ports: only the IP counts.
            seen.push(
                tests::client::get(ip.addr(), "/")
                    .await
                    .backend()
                    .to_owned(),
            );
        }
        assert!(seen.iter().all(|b| *b == seen[0]), "{seen:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_avoids_the_busy_endpoint() {
    within(30, "least request", async {
        let bs = Backend::start_many("l", 2).await;
        let text = pool_config(r#"balancer = "least_request""#, r#""{A}", "{B}""#);
        let proxy =
            TestProxy::start(&fill(&text, &[("A", bs[0].addr()), ("B", bs[1].addr())])).await;
        let addr = proxy.addr();
        let slow = tokio::spawn(async move {
            let mut c = Conn::connect(addr).await;
            c.send(
                req("GET", "h.test", "/slow")
                    .header("x-delay-ms", "1500")
                    .body(empty())
                    .unwrap(),
            )
            .await
        });
        assert!(
            wait_until(Duration::from_secs(5), || bs[0].hits() + bs[1].hits() == 1).await,
            "the slow request never arrived"
        );
        let busy = if bs[0].hits() == 1 { "l0" } else { "l1" };
        let mut c = Conn::connect(addr).await;
        let seq = sequence(&mut c, 10).await;
        assert!(
            seq.iter().all(|b| b != busy),
            "requests went to {busy}, which has one in flight: {seq:?}"
        );
        let slow = slow.await.unwrap();
        assert_eq!(slow.status, 200);
        assert_eq!(slow.backend(), busy);
        // With nothing in flight, both get traffic again.
        let seq = sequence(&mut c, 10).await;
        assert!(seq.iter().any(|b| b == busy), "{seq:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_avoids_the_slow_endpoint() {
    within(30, "peak ewma", async {
        let fast = Backend::start("fast").await;
        let slow = Backend::start("slow").await;
        slow.set_delay(Duration::from_millis(200));
        let text = pool_config(r#"balancer = "peak_ewma""#, r#""{A}", "{B}""#);
        let proxy = TestProxy::start(&fill(&text, &[("A", fast.addr()), ("B", slow.addr())])).await;
        let mut c = Conn::connect(proxy.addr()).await;
        let seq = sequence(&mut c, 40).await;
        let n = counts(seq.iter().map(String::as_str));
        let to_slow = n.get("slow").copied().unwrap_or(0);
        assert!(
            to_slow <= 3,
            "the 200 ms endpoint got {to_slow} of 40 requests: {seq:?}"
        );
        assert_eq!(n.get("fast").copied().unwrap_or(0) + to_slow, 40);
    })
    .await;
}

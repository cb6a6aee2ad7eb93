use super::*;

fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => vec![],
        Err(e) => e
            .into_iter()
            .map(|e| format!("{}:{}: {}", e.line, e.col, e.message))
            .collect(),
    }
}

const BASE: &str = r#"
[[listeners]]
address = "127.0.0.1:0"

[upstreams.app]
endpoints = ["127.0.0.1:9001", { address = "127.0.0.1:9002", weight = 3 }]
"#;

#[test]
fn shop_example_is_valid() {
    let text = include_str!("../../../examples/shop.toml");
    let config = parse(text).expect("examples/shop.toml must be valid");
    let addrs: Vec<_> = config.listeners.iter().map(|l| l.address).collect();
    assert_eq!(addrs, ["127.0.0.1:8080".parse().unwrap()]);
    let m = config
        .proxy
        .routes
        .find(
            "shop.example.com",
            &Method::GET,
            "/checkout/cart",
            &http::HeaderMap::new(),
        )
        .unwrap();
    let RouteAction::Proxy(p) = &m.route.action else {
        panic!("expected a proxy route");
    };
    assert_eq!(p.upstream.name(), "orders");
    assert_eq!(p.request_headers.set.len(), 1);
}

#[test]
fn reports_every_error_with_line_and_column() {
    let text = format!(
        "{BASE}
[upstreams.bad]
endpoints = [\"nowhere\"]
balancer = \"fastest\"
fail_timeout = \"10 parsecs\"

[[servers]]
default = true

[[servers.routes]]
prefix = \"/a/\"
upstream = \"missing\"

[[servers.routes]]
regex = \"(unclosed\"
upstream = \"app\"
"
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 5, "{errs:#?}");
    assert!(
        errs[0].starts_with("9:14: invalid endpoint address `nowhere`"),
        "{errs:#?}"
    );
    assert!(
        errs[1].starts_with("10:12: unknown balancer `fastest`"),
        "{errs:#?}"
    );
    assert!(errs[2].starts_with("11:16: invalid duration"), "{errs:#?}");
    assert!(
        errs[3].starts_with("18:12: unknown upstream `missing`"),
        "{errs:#?}"
    );
    assert!(errs[4].starts_with("21:9: invalid regex"), "{errs:#?}");
}

#[test]
fn unknown_keys_and_bad_listeners_are_errors() {
    let errs = errors("[[listeners]]\naddress = \"127.0.0.1:0\"\nport = 3\n");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("3:1: unknown field `port`"), "{errs:?}");
    let errs = errors("[[listeners]]\naddress = \"localhost\"\n");
    assert!(
        errs[0].starts_with("2:11: invalid listen address"),
        "{errs:?}"
    );
    let errs = errors("");
    assert!(errs[0].contains("no `[[listeners]]`"), "{errs:?}");
}

#[test]
fn route_shape_errors() {
    let text = format!(
        "{BASE}
[[servers]]
default = true

[[servers.routes]]
prefix = \"/a/\"
exact = \"/a\"
upstream = \"app\"

[[servers.routes]]
prefix = \"/b/\"
redirect = {{ status = 200, location = \"/x\" }}

[[servers.routes]]
exact = \"/c\"
upstream = \"app\"
replace_prefix = \"/d/\"
"
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(errs[0].contains("exactly one of `prefix`"));
    assert!(errs[1].contains("redirect status 200"));
    assert!(errs[2].contains("`replace_prefix` needs a `prefix` route"));
}

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert!(parse_duration("1d").is_err());
    assert!(parse_duration("s").is_err());
}

#[test]
fn http3_settings_and_their_errors() {
    let text = format!(
        "{BASE}
[http3]
max_concurrent_streams = 32
max_field_section_size = 8192
address_validation = \"always\"
idle_timeout = \"20s\"
"
    );
    let config = parse(&text).expect("valid [http3]");
    assert_eq!(config.http3.max_concurrent_streams, 32);
    assert_eq!(config.http3.max_field_section_size, 8192);
    assert_eq!(
        config.http3.address_validation,
        proxy_http3::AddressValidation::Always
    );
    assert_eq!(config.http3.idle_timeout, Duration::from_secs(20));
    assert!(!config.http3.early_data);
    assert_eq!(config.listeners[0].http3, None);

    let bad = "[[listeners]]\naddress = \"127.0.0.1:0\"\nhttp3 = true\n\n\
               [http3]\nmax_concurrent_uni_streams = 2\naddress_validation = \"sometimes\"\n";
    let errs = errors(bad);
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(
        errs[0].starts_with("3:9: `http3` needs a TLS listener"),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("6:30: max_concurrent_uni_streams must be at least 3")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("unknown address_validation `sometimes`")),
        "{errs:?}"
    );
}

const RESILIENT: &str = r#"
[[listeners]]
address = "127.0.0.1:0"

[upstreams.app]
endpoints = [
  "127.0.0.1:9001",
  { address = "127.0.0.1:9002", weight = 3 },
  { address = "127.0.0.1:9003", backup = true },
]
max_fails = 2
fail_timeout = "5s"
max_attempts = 4
panic_threshold = 30
slow_start = { window = "20s", min_weight_percent = 25 }

[upstreams.app.health_check]
type = "http"
method = "head"
path = "/healthz?full=1"
host = "health.internal"
expect = [200, "204-299"]
body = "ok"
interval = "2s"
jitter = "100ms"
timeout = "1s"
healthy_threshold = 1
unhealthy_threshold = 4
initial = "unhealthy"

[upstreams.app.outlier]
consecutive_5xx = 5
failure_percentage = 40
failure_percentage_min_requests = 10
interval = "30s"
base_ejection_time = "15s"
max_ejection_time = "2m"
max_ejection_percent = 34

[upstreams.app.circuit_breaker]
max_connections = 100
max_requests = 50
max_pending = 10
max_retries = 3

[upstreams.app.retry_budget]
percent = 10
min_per_second = 2

[upstreams.db]
endpoints = ["127.0.0.1:9100"]
slow_start = "30s"
health_check = { type = "tcp", interval = "10s" }

[[servers]]
default = true

[[servers.routes]]
prefix = "/api/"
upstream = "app"
timeout = "10s"
retry = { attempts = 2, on = ["connect-failure", "gateway-error", 429, "500-501"], backoff = "10ms", max_backoff = "1s", per_try_timeout = "2s", non_idempotent = true, buffer = "1KiB" }

[[servers.routes]]
prefix = "/db/"
upstream = "db"

[[servers.routes]]
prefix = "/"
upstream = "app"
retry = { on = ["reset", "timeout", "5xx"] }
"#;

fn route_at(config: &Config, path: &str) -> Arc<ProxyRoute> {
    let m = config
        .proxy
        .routes
        .find("any.test", &Method::GET, path, &http::HeaderMap::new())
        .expect("a route");
    match &m.route.action {
        RouteAction::Proxy(p) => p.clone(),
        RouteAction::Redirect(_) => panic!("expected a proxy route"),
    }
}

#[test]
fn resilience_settings_become_upstream_policies() {
    use proxy_core::health::FailurePercentage;
    use proxy_core::{ActiveCheck, BreakerLimits, CheckKind, HealthPolicy, HttpCheck};
    use proxy_core::{OutlierPolicy, RetryBudgetPolicy, SlowStart};

    let config = parse(RESILIENT).expect("valid resilience settings");
    let names: Vec<_> = config.proxy.upstreams.iter().map(|u| u.name()).collect();
    assert_eq!(names, ["app", "db"]);
    let app = &config.proxy.upstreams[0];
    let policy = app.policy();
    assert_eq!(
        policy.health,
        HealthPolicy {
            active: Some(ActiveCheck {
                kind: CheckKind::Http(HttpCheck {
                    method: Method::HEAD,
                    path: http::uri::PathAndQuery::from_static("/healthz?full=1"),
                    host: Some(HeaderValue::from_static("health.internal")),
                    expect: vec![200..=200, 204..=299],
                    body_contains: Some(bytes::Bytes::from_static(b"ok")),
                }),
                interval: Duration::from_secs(2),
                jitter: Duration::from_millis(100),
                timeout: Duration::from_secs(1),
                healthy_threshold: 1,
                unhealthy_threshold: 4,
                initially_healthy: false,
            }),
            outlier: OutlierPolicy {
                max_fails: 2,
                fail_window: Duration::from_secs(5),
                consecutive_5xx: 5,
                failure_percentage: Some(FailurePercentage {
                    threshold: 40,
                    min_requests: 10,
                    interval: Duration::from_secs(30),
                }),
                base_ejection: Duration::from_secs(15),
                max_ejection: Duration::from_secs(120),
                max_ejection_percent: 34,
            },
            slow_start: Some(SlowStart {
                window: Duration::from_secs(20),
                min_weight_percent: 25,
            }),
            panic_threshold: 30,
        }
    );
    assert_eq!(
        policy.breaker,
        BreakerLimits {
            max_requests: Some(50),
            max_pending: 10,
            max_retries: Some(3),
            max_connections: Some(100),
        }
    );
    assert_eq!(
        policy.retry_budget,
        RetryBudgetPolicy {
            percent: 10,
            min_per_second: 2,
        }
    );
    let backups: Vec<bool> = app.endpoints().iter().map(|e| e.is_backup()).collect();
    assert_eq!(backups, [false, false, true]);
    assert_eq!(app.endpoints()[1].weight(), 3);
    // `initial = "unhealthy"`: nothing is available before checks pass.
    let now = tokio::time::Instant::now();
    assert!(app.endpoints().iter().all(|e| !e.is_available(now)));

    // The defaults, with a TCP check and the short slow-start form.
    let db = &config.proxy.upstreams[1];
    let health = &db.policy().health;
    assert_eq!(
        health.active,
        Some(ActiveCheck {
            kind: CheckKind::Tcp,
            interval: Duration::from_secs(10),
            jitter: Duration::from_secs(2),
            ..ActiveCheck::default()
        })
    );
    assert_eq!(health.outlier, OutlierPolicy::default());
    assert_eq!(
        health.slow_start,
        Some(SlowStart {
            window: Duration::from_secs(30),
            min_weight_percent: 10,
        })
    );
    assert_eq!(health.panic_threshold, 50);
    assert_eq!(db.policy().breaker, BreakerLimits::default());
    assert_eq!(db.policy().retry_budget, RetryBudgetPolicy::default());
    assert!(db.endpoints()[0].is_available(now), "initially healthy");
}

#[test]
fn route_retry_and_timeout_settings() {
    use proxy_core::{RetryOn, RetryPolicy};

    let config = parse(RESILIENT).expect("valid resilience settings");
    let api = route_at(&config, "/api/x");
    assert_eq!(
        api.retry,
        RetryPolicy {
            attempts: 2,
            on: RetryOn {
                connect_failure: true,
                reset: false,
                timeout: false,
                statuses: [429, 500, 501, 502, 503, 504]
                    .into_iter()
                    .map(|c| StatusCode::from_u16(c).unwrap())
                    .collect(),
            },
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
            per_try_timeout: Some(Duration::from_secs(2)),
            timeout: Some(Duration::from_secs(10)),
            non_idempotent: true,
            buffer: 1024,
        }
    );
    // Without `retry`, attempts come from the upstream's max_attempts.
    let db = route_at(&config, "/db/x");
    assert_eq!(
        db.retry,
        RetryPolicy {
            attempts: 3,
            ..RetryPolicy::default()
        }
    );
    let root = route_at(&config, "/other");
    assert_eq!(root.retry.attempts, 4, "app's max_attempts");
    assert_eq!(root.retry.timeout, None);
    let on = &root.retry.on;
    assert!(!on.connect_failure && on.reset && on.timeout);
    assert_eq!(on.statuses.len(), 100);
    assert_eq!(on.statuses[0], StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(on.statuses[99].as_u16(), 599);
}

/// Errors of a configuration made of `BASE`, an upstream section and a route's settings.
fn resilience_errors(upstream: &str, route: &str) -> Vec<String> {
    errors(&format!(
        "{BASE}
[upstreams.x]
{upstream}

[[servers]]
default = true

[[servers.routes]]
prefix = \"/\"
upstream = \"app\"
{route}
"
    ))
}

#[test]
fn resilience_errors_name_the_line() {
    // BASE takes lines 1-7 and `[upstreams.x]` is line 8: the upstream's endpoints are on
    // line 9 and its second setting on line 10; with one upstream line, the route's
    // settings are on line 17.
    let ep = "endpoints = [\"127.0.0.1:9001\"]";
    let cases: &[(String, &str, &str)] = &[
        (
            format!("{ep}\nhealth_check = {{ type = \"grpc\" }}"),
            "",
            "10:25: unknown health check type `grpc`: use http or tcp",
        ),
        (
            format!("{ep}\nhealth_check = {{ expect = [200, 700] }}"),
            "",
            "10:33: expected a status (100-599) or a range like \"200-299\"",
        ),
        (
            format!("{ep}\nhealth_check = {{ expect = [\"299-200\"] }}"),
            "",
            "10:28: expected a status (100-599) or a range like \"200-299\"",
        ),
        (
            format!("{ep}\npanic_threshold = 150"),
            "",
            "10:19: panic_threshold is a percentage: 0 to 100",
        ),
        (
            format!("{ep}\ncircuit_breaker = {{ max_pending = 5 }}"),
            "",
            "10:19: max_pending needs max_requests",
        ),
        (
            "endpoints = [{ address = \"127.0.0.1:9001\", backup = true }]".to_owned(),
            "",
            "upstream `x` has only backup endpoints: mark one as primary",
        ),
        (
            ep.to_owned(),
            "retry = { attempts = 0 }",
            "17:9: retry attempts must be at least 1 (1 disables retries)",
        ),
        (
            ep.to_owned(),
            "timeout = \"0s\"",
            "17:11: timeout must be above zero",
        ),
    ];
    for (upstream, route, expected) in cases {
        let errs = resilience_errors(upstream, route);
        assert_eq!(errs.len(), 1, "{upstream} / {route}: {errs:#?}");
        assert!(
            errs[0].starts_with(expected) || errs[0].ends_with(expected),
            "{upstream} / {route}: expected `{expected}`, got {errs:#?}"
        );
    }
    // A table written as its own section is pointed at too.
    let errs = resilience_errors(
        "endpoints = [\"127.0.0.1:9001\"]\n[upstreams.x.circuit_breaker]\nmax_pending = 5",
        "",
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].ends_with("max_pending needs max_requests"),
        "{errs:?}"
    );
    let line: usize = errs[0].split(':').next().unwrap().parse().unwrap();
    assert!((10..=11).contains(&line), "{errs:?}");
    // The only-backup error points at the upstream.
    let errs = resilience_errors(
        "endpoints = [{ address = \"127.0.0.1:9001\", backup = true }]",
        "",
    );
    let line: usize = errs[0].split(':').next().unwrap().parse().unwrap();
    assert!((8..=9).contains(&line), "{errs:?}");
}

#[test]
fn an_unknown_retry_condition_is_one_error() {
    let errs = resilience_errors(
        "endpoints = [\"127.0.0.1:9001\"]",
        "retry = { on = [\"reset\", \"bogus\"] }",
    );
    assert_eq!(
        errs,
        ["17:26: retry `on` takes connect-failure, reset, timeout, gateway-error, 5xx or statuses"],
        "one error for the one bad item"
    );
}

#[test]
fn an_empty_expect_list_is_reported_where_it_is() {
    let errs = resilience_errors(
        "endpoints = [\"127.0.0.1:9001\"]\nhealth_check = { expect = [] }",
        "",
    );
    // Line 10 holds the health check (the list itself or its table, whichever is pointed at).
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("10:")
            && errs[0].ends_with(": health check `expect` must list at least one status"),
        "{errs:?}"
    );
}

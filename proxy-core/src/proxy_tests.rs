//! Pipeline tests with the mock connector and paused time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use regex::Regex;

use crate::Proxy;
use crate::body;
use crate::config::{HostRewrite, ProxyConfig, ProxyRoute, RouteAction, Settings};
use crate::conn::ConnInfo;
use crate::headers::{ForwardingHeaders, HeaderRules};
use crate::health::{HealthPolicy, OutlierPolicy};
use crate::rewrite::{PathRewrite, Redirect};
use crate::route::{PathMatch, Route, RouteTable, VirtualHost};
use crate::template::Template;
use crate::test_util::{MockConnector, MockReply, collect_body, endpoint};
use crate::upstream::{Upstream, UpstreamPolicy};

fn upstream(mock: &Arc<MockConnector>, addrs: &[&str], policy: UpstreamPolicy) -> Arc<Upstream> {
    Arc::new(Upstream::new(
        "pool",
        addrs.iter().map(|a| endpoint(a)).collect(),
        policy,
        mock.clone(),
    ))
}

fn proxy_route(up: &Arc<Upstream>) -> ProxyRoute {
    ProxyRoute {
        upstream: up.clone(),
        rewrite: PathRewrite::Keep,
        host: HostRewrite::Pass,
        request_headers: HeaderRules::default(),
        response_headers: HeaderRules::default(),
        cache: None,
        retry: crate::retry::RetryPolicy {
            backoff: Duration::ZERO,
            ..crate::retry::RetryPolicy::default()
        },
    }
}

fn route(path: PathMatch, action: RouteAction) -> Route<RouteAction> {
    Route {
        path,
        methods: vec![],
        headers: vec![],
        action,
    }
}

fn proxy(routes: Vec<Route<RouteAction>>, settings: Settings) -> Proxy {
    Proxy::new(ProxyConfig {
        routes: RouteTable::new(vec![VirtualHost {
            names: vec!["shop.test".into()],
            default: true,
            routes,
        }])
        .unwrap(),
        settings,
        upstreams: Vec::new(),
    })
}

fn request(method: Method, uri: &str) -> Request<crate::ProxyBody> {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "shop.test")
        .body(body::empty())
        .unwrap();
    req.extensions_mut().insert(Arc::new(ConnInfo::plain(
        "192.0.2.7:5000".parse().unwrap(),
        "127.0.0.1:8080".parse().unwrap(),
        1,
    )));
    req
}

async fn text(resp: Response<crate::ProxyBody>) -> String {
    String::from_utf8(collect_body(resp.into_body()).await.unwrap().to_vec()).unwrap()
}

fn echo_endpoint() -> Arc<MockConnector> {
    MockConnector::new(|addr, _| MockReply::text(200, &addr.to_string()))
}

#[tokio::test(start_paused = true)]
async fn forwards_with_header_policy_and_rewrite() {
    let mock = echo_endpoint();
    let up = upstream(&mock, &["127.0.0.1:9001"], UpstreamPolicy::default());
    let mut r = proxy_route(&up);
    r.rewrite = PathRewrite::StripPrefix("/api".into());
    r.request_headers = HeaderRules::parse(
        ["x-internal"],
        [("x-client", "$remote_addr"), ("x-rid", "$request_id")],
        [],
    )
    .unwrap();
    r.response_headers = HeaderRules::parse([], [("x-served-by", "proxy")], []).unwrap();
    let settings = Settings {
        forwarding: ForwardingHeaders {
            via: Some("edge".into()),
            ..ForwardingHeaders::default()
        },
        ..Settings::default()
    };
    let p = proxy(
        vec![route(
            PathMatch::Prefix("/api/".into()),
            RouteAction::Proxy(Arc::new(r)),
        )],
        settings,
    );
    let mut req = request(Method::GET, "/api/users?id=3");
    let h = req.headers_mut();
    h.insert("connection", HeaderValue::from_static("x-hop"));
    h.insert("x-hop", HeaderValue::from_static("1"));
    h.insert("x-internal", HeaderValue::from_static("1"));
    h.insert("x-request-id", HeaderValue::from_static("client-id-1"));
    let resp = p.handle(req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-request-id"], "client-id-1");
    assert_eq!(resp.headers()["x-served-by"], "proxy");
    assert_eq!(resp.headers()["via"], "1.1 edge");
    let seen = mock.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.uri, "/users?id=3");
    assert_eq!(s.headers["host"], "shop.test");
    assert_eq!(s.headers["x-forwarded-for"], "192.0.2.7");
    assert_eq!(s.headers["x-real-ip"], "192.0.2.7");
    assert_eq!(s.headers["x-forwarded-proto"], "http");
    assert_eq!(s.headers["x-forwarded-host"], "shop.test");
    assert_eq!(s.headers["x-client"], "192.0.2.7");
    assert_eq!(s.headers["x-rid"], "client-id-1");
    assert_eq!(s.headers["via"], "1.1 edge");
    assert!(!s.headers.contains_key("x-hop"));
    assert!(!s.headers.contains_key("connection"));
    assert!(!s.headers.contains_key("x-internal"));
}

#[tokio::test(start_paused = true)]
async fn generates_request_id_and_normalizes_path() {
    let mock = echo_endpoint();
    let up = upstream(&mock, &["127.0.0.1:9001"], UpstreamPolicy::default());
    let admin = route(
        PathMatch::Prefix("/admin/".into()),
        RouteAction::Redirect(Redirect {
            status: StatusCode::FORBIDDEN,
            location: Template::parse("/").unwrap(),
        }),
    );
    let p = proxy(
        vec![
            admin,
            route(
                PathMatch::Prefix("/".into()),
                RouteAction::Proxy(Arc::new(proxy_route(&up))),
            ),
        ],
        Settings::default(),
    );
    let resp = p.handle(request(Method::GET, "/public/../admin/x")).await;
    assert_eq!(
        resp.status(),
        StatusCode::FORBIDDEN,
        "dot segments resolved before routing"
    );
    let resp = p.handle(request(Method::GET, "/a/./b")).await;
    assert_eq!(resp.headers()["x-request-id"].len(), 32);
    assert_eq!(mock.seen()[0].uri, "/a/b");
}

#[tokio::test(start_paused = true)]
async fn redirect_with_template_and_captures() {
    let redirect = Redirect {
        status: StatusCode::PERMANENT_REDIRECT,
        location: Template::parse("https://$host/items/$1?from=$remote_addr").unwrap(),
    };
    let p = proxy(
        vec![route(
            PathMatch::Regex(Regex::new(r"^/old/(\d+)$").unwrap()),
            RouteAction::Redirect(redirect),
        )],
        Settings::default(),
    );
    let resp = p.handle(request(Method::GET, "/old/42")).await;
    assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        resp.headers()["location"],
        "https://shop.test/items/42?from=192.0.2.7"
    );
    let resp = p.handle(request(Method::GET, "/nope")).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(start_paused = true)]
async fn refused_endpoint_fails_over_and_is_ejected() {
    let mock = MockConnector::new(|addr, _| {
        if addr.port() == 9001 {
            MockReply::Refuse
        } else {
            MockReply::text(200, &addr.to_string())
        }
    });
    let up = upstream(
        &mock,
        &["127.0.0.1:9001", "127.0.0.1:9002"],
        UpstreamPolicy::default(),
    );
    let p = proxy(
        vec![route(
            PathMatch::Prefix("/".into()),
            RouteAction::Proxy(Arc::new(proxy_route(&up))),
        )],
        Settings::default(),
    );
    // A POST with a body is retried too, because the refused connect sent nothing.
    for _ in 0..4 {
        let mut req = request(Method::POST, "/x");
        *req.body_mut() = body::full("payload");
        let resp = p.handle(req).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(text(resp).await, "127.0.0.1:9002");
    }
    let to_9001 = mock
        .seen()
        .iter()
        .filter(|s| s.endpoint.port() == 9001)
        .count();
    assert_eq!(to_9001, 1, "ejected after max_fails=1 and not tried again");
    // After fail_timeout it comes back (and fails again at once).
    tokio::time::advance(Duration::from_secs(11)).await;
    for _ in 0..2 {
        assert_eq!(
            p.handle(request(Method::GET, "/")).await.status(),
            StatusCode::OK
        );
    }
    let to_9001 = mock
        .seen()
        .iter()
        .filter(|s| s.endpoint.port() == 9001)
        .count();
    assert_eq!(to_9001, 2);
}

#[tokio::test(start_paused = true)]
async fn reset_retries_idempotent_but_not_post() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let mock = MockConnector::new(move |addr, _| {
        c.fetch_add(1, Ordering::SeqCst);
        if addr.port() == 9001 {
            MockReply::Reset
        } else {
            MockReply::text(200, "ok")
        }
    });
    let policy = UpstreamPolicy {
        health: HealthPolicy {
            outlier: OutlierPolicy {
                max_fails: 0,
                ..OutlierPolicy::default()
            },
            ..HealthPolicy::default()
        },
        ..UpstreamPolicy::default()
    };
    let up = upstream(&mock, &["127.0.0.1:9001", "127.0.0.1:9002"], policy);
    let p = proxy(
        vec![route(
            PathMatch::Prefix("/".into()),
            RouteAction::Proxy(Arc::new(proxy_route(&up))),
        )],
        Settings::default(),
    );
    // Round robin starts at 9001: the POST is lost there and must not be replayed.
    let resp = p.handle(request(Method::POST, "/")).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Next pick is 9002 (ok); then 9001 again, where the GET is replayed on 9002.
    assert_eq!(
        p.handle(request(Method::GET, "/")).await.status(),
        StatusCode::OK
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        p.handle(request(Method::GET, "/")).await.status(),
        StatusCode::OK
    );
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn all_down_gives_503_with_retry_after_then_timeouts_give_504() {
    let mock = MockConnector::new(|_, _| MockReply::Refuse);
    // Without panic mode and with every endpoint allowed out, nothing is left to try.
    let policy = UpstreamPolicy {
        health: HealthPolicy {
            panic_threshold: 0,
            outlier: OutlierPolicy {
                max_ejection_percent: 100,
                ..OutlierPolicy::default()
            },
            ..HealthPolicy::default()
        },
        ..UpstreamPolicy::default()
    };
    let up = upstream(&mock, &["127.0.0.1:9001", "127.0.0.1:9002"], policy);
    let p = proxy(
        vec![route(
            PathMatch::Prefix("/".into()),
            RouteAction::Proxy(Arc::new(proxy_route(&up))),
        )],
        Settings::default(),
    );
    let resp = p.handle(request(Method::GET, "/")).await;
    assert_eq!(
        resp.status(),
        StatusCode::BAD_GATEWAY,
        "both tried, both refused"
    );
    let resp = p.handle(request(Method::GET, "/")).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "10");

    let hang = MockConnector::new(|_, _| MockReply::Hang);
    let up = upstream(&hang, &["127.0.0.1:9003"], UpstreamPolicy::default());
    let p = proxy(
        vec![route(
            PathMatch::Prefix("/".into()),
            RouteAction::Proxy(Arc::new(proxy_route(&up))),
        )],
        Settings::default(),
    );
    let resp = p.handle(request(Method::GET, "/")).await;
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn limits_answer_before_routing() {
    let mock = echo_endpoint();
    let up = upstream(&mock, &["127.0.0.1:9001"], UpstreamPolicy::default());
    let mut settings = Settings::default();
    settings.limits.max_uri_len = 16;
    settings.limits.max_header_bytes = 200;
    settings.limits.max_body_bytes = Some(4);
    let p = proxy(
        vec![route(
            PathMatch::Prefix("/".into()),
            RouteAction::Proxy(Arc::new(proxy_route(&up))),
        )],
        settings,
    );
    let resp = p.handle(request(Method::GET, "/0123456789abcdefgh")).await;
    assert_eq!(resp.status(), StatusCode::URI_TOO_LONG);
    let mut req = request(Method::GET, "/");
    req.headers_mut()
        .insert("x-big", HeaderValue::from_str(&"a".repeat(300)).unwrap());
    assert_eq!(
        p.handle(req).await.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    let mut req = request(Method::POST, "/");
    req.headers_mut()
        .insert("content-length", HeaderValue::from_static("5"));
    assert_eq!(p.handle(req).await.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(mock.seen().is_empty());
}

#[tokio::test(start_paused = true)]
async fn host_rewrite_to_endpoint_and_consistent_hash_on_header() {
    let mock = echo_endpoint();
    let policy = UpstreamPolicy {
        balancer: crate::balance::BalancerKind::ConsistentHash,
        hash_key: Some(crate::upstream::HashKey::Header(
            http::HeaderName::from_static("x-user"),
        )),
        ..UpstreamPolicy::default()
    };
    let up = upstream(
        &mock,
        &["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"],
        policy,
    );
    let mut r = proxy_route(&up);
    r.host = HostRewrite::Endpoint;
    let p = proxy(
        vec![route(
            PathMatch::Prefix("/".into()),
            RouteAction::Proxy(Arc::new(r)),
        )],
        Settings::default(),
    );
    let mut first = None;
    for _ in 0..5 {
        let mut req = request(Method::GET, "/");
        req.headers_mut()
            .insert("x-user", HeaderValue::from_static("alice"));
        let body = text(p.handle(req).await).await;
        assert_eq!(*first.get_or_insert(body.clone()), body, "sticky");
    }
    for s in mock.seen() {
        assert_eq!(s.headers["host"], s.endpoint.to_string());
    }
}

#[tokio::test(start_paused = true)]
async fn http10_request_without_host_gets_the_endpoint_name() {
    let mock = echo_endpoint();
    let up = upstream(&mock, &["127.0.0.1:9001"], UpstreamPolicy::default());
    let p = proxy(
        vec![route(
            PathMatch::Prefix("/".into()),
            RouteAction::Proxy(Arc::new(proxy_route(&up))),
        )],
        Settings::default(),
    );
    let mut req = request(Method::GET, "/");
    req.headers_mut().remove("host");
    *req.version_mut() = http::Version::HTTP_10;
    assert_eq!(p.handle(req).await.status(), StatusCode::OK);
    assert_eq!(mock.seen()[0].headers["host"], "127.0.0.1:9001");
}

#[tokio::test(start_paused = true)]
async fn max_forwards_is_honoured_for_options_and_trace() {
    let mock = echo_endpoint();
    let up = upstream(&mock, &["127.0.0.1:9001"], UpstreamPolicy::default());
    let p = proxy(
        vec![route(
            PathMatch::Prefix("/".into()),
            RouteAction::Proxy(Arc::new(proxy_route(&up))),
        )],
        Settings::default(),
    );
    let with = |method: Method, mf: &'static str| {
        let mut req = request(method, "/x");
        req.headers_mut()
            .insert("max-forwards", HeaderValue::from_static(mf));
        req
    };
    let resp = p.handle(with(Method::OPTIONS, "0")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().contains_key("allow"));
    let resp = p.handle(with(Method::TRACE, "0")).await;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(mock.seen().is_empty(), "Max-Forwards: 0 is never forwarded");
    assert_eq!(
        p.handle(with(Method::OPTIONS, "5")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        p.handle(with(Method::GET, "0")).await.status(),
        StatusCode::OK
    );
    let seen = mock.seen();
    assert_eq!(seen[0].headers["max-forwards"], "4");
    assert_eq!(
        seen[1].headers["max-forwards"], "0",
        "only OPTIONS and TRACE are counted"
    );
}

/// A request as an HTTP/3 frontend hands it over: HTTP/3, on a TLS connection whose listener
/// advertises HTTP/3, optionally marked as early data.
fn h3_request(method: Method, early: bool, version: http::Version) -> Request<crate::ProxyBody> {
    let mut req = request(method, "/x");
    *req.version_mut() = version;
    let mut conn = ConnInfo::plain(
        "192.0.2.7:5000".parse().unwrap(),
        "127.0.0.1:8443".parse().unwrap(),
        2,
    );
    conn.scheme = crate::Scheme::Https;
    conn.listener = Some(Arc::new(crate::ListenerPolicy {
        alt_svc: Some(crate::multiplexed::alt_svc_h3(8443, 3600)),
        ..crate::ListenerPolicy::default()
    }));
    req.extensions_mut().insert(Arc::new(conn));
    if early {
        req.extensions_mut().insert(crate::EarlyData);
    }
    req
}

#[tokio::test(start_paused = true)]
async fn early_data_allows_only_safe_methods_and_marks_them() {
    let mock = echo_endpoint();
    let up = upstream(&mock, &["127.0.0.1:9001"], UpstreamPolicy::default());
    let p = proxy(
        vec![route(
            PathMatch::Prefix("/".into()),
            RouteAction::Proxy(Arc::new(proxy_route(&up))),
        )],
        Settings::default(),
    );
    // RFC 8470 section 5.2: an unsafe method in early data gets 425 and never reaches the
    // upstream.
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        let resp = p
            .handle(h3_request(method.clone(), true, http::Version::HTTP_3))
            .await;
        assert_eq!(resp.status(), StatusCode::TOO_EARLY, "{method}");
    }
    assert!(mock.seen().is_empty());
    // Safe methods are served and marked for the upstream (section 5.1).
    let resp = p
        .handle(h3_request(Method::GET, true, http::Version::HTTP_3))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(mock.seen()[0].headers["early-data"], "1");
    // The same POST after the handshake goes through unmarked.
    let resp = p
        .handle(h3_request(Method::POST, false, http::Version::HTTP_3))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(!mock.seen()[1].headers.contains_key("early-data"));
}

#[tokio::test(start_paused = true)]
async fn alt_svc_is_advertised_on_tcp_responses_only() {
    let mock = MockConnector::new(|_, _| {
        let mut r = Response::new(body::empty());
        // An upstream's own Alt-Svc names the upstream, not this proxy: it is replaced.
        r.headers_mut()
            .insert("alt-svc", HeaderValue::from_static("h3=\":9999\""));
        MockReply::Respond(r)
    });
    let up = upstream(&mock, &["127.0.0.1:9001"], UpstreamPolicy::default());
    let p = proxy(
        vec![route(
            PathMatch::Prefix("/".into()),
            RouteAction::Proxy(Arc::new(proxy_route(&up))),
        )],
        Settings::default(),
    );
    for version in [http::Version::HTTP_11, http::Version::HTTP_2] {
        let resp = p.handle(h3_request(Method::GET, false, version)).await;
        assert_eq!(
            resp.headers()["alt-svc"],
            "h3=\":8443\"; ma=3600",
            "{version:?}"
        );
    }
    let resp = p
        .handle(h3_request(Method::GET, false, http::Version::HTTP_3))
        .await;
    assert_eq!(resp.headers()["alt-svc"], "h3=\":9999\"");
}

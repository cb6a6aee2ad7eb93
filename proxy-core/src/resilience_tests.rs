//! Retry, budget, breaker, deadline and selection tests through the Proxy with a mock connector (paused time).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Frame;
use tokio::time::Instant;

use crate::Proxy;
use crate::access_log::ACCESS_TARGET;
use crate::body::{self, BodyError, ProxyBody};
use crate::breaker::BreakerLimits;
use crate::config::{HostRewrite, ProxyConfig, ProxyRoute, RouteAction, Settings};
use crate::conn::ConnInfo;
use crate::connector::{ConnectOptions, Connector, SendFuture};
use crate::endpoint::Endpoint;
use crate::error::{SendError, UpstreamError};
use crate::headers::HeaderRules;
use crate::health::{HealthPolicy, Outcome, OutlierPolicy};
use crate::retry::{RetryOn, RetryPolicy};
use crate::retry_budget::RetryBudgetPolicy;
use crate::rewrite::PathRewrite;
use crate::route::{PathMatch, Route, RouteTable, VirtualHost};
use crate::test_util::{MockConnector, MockReply, collect_body};
use crate::upstream::{Upstream, UpstreamPolicy};

// ---------------------------------------------------------------------------------------
// Helpers (the same shapes as in proxy_tests).

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn endpoint(port: u16, backup: bool) -> Arc<Endpoint> {
    let a = addr(port);
    Arc::new(Endpoint::new(a, a.to_string().parse().unwrap(), 1).backup(backup))
}

fn upstream(connector: Arc<dyn Connector>, ports: &[u16], policy: UpstreamPolicy) -> Arc<Upstream> {
    Arc::new(Upstream::new(
        "pool",
        ports.iter().map(|&p| endpoint(p, false)).collect(),
        policy,
        connector,
    ))
}

/// Upstream policy without passive ejection, so that tests of retries see every attempt.
fn no_ejection() -> UpstreamPolicy {
    UpstreamPolicy {
        health: HealthPolicy {
            outlier: OutlierPolicy {
                max_fails: 0,
                ..OutlierPolicy::default()
            },
            panic_threshold: 50,
            ..HealthPolicy::default()
        },
        ..UpstreamPolicy::default()
    }
}

/// Default retries without backoff, so that timings are exact.
fn retry() -> RetryPolicy {
    RetryPolicy {
        backoff: Duration::ZERO,
        ..RetryPolicy::default()
    }
}

fn proxy_with(up: &Arc<Upstream>, retry: RetryPolicy) -> Proxy {
    let route = ProxyRoute {
        upstream: up.clone(),
        rewrite: PathRewrite::Keep,
        host: HostRewrite::Pass,
        request_headers: HeaderRules::default(),
        response_headers: HeaderRules::default(),
        cache: None,
        retry,
    };
    Proxy::new(ProxyConfig {
        routes: RouteTable::new(vec![VirtualHost {
            names: vec!["shop.test".into()],
            default: true,
            routes: vec![Route {
                path: PathMatch::Prefix("/".into()),
                methods: vec![],
                headers: vec![],
                action: RouteAction::Proxy(Arc::new(route)),
            }],
        }])
        .unwrap(),
        settings: Settings::default(),
        upstreams: vec![up.clone()],
    })
}

fn request(method: Method, body: ProxyBody) -> Request<ProxyBody> {
    let mut req = Request::builder()
        .method(method)
        .uri("/x")
        .header("host", "shop.test")
        .body(body)
        .unwrap();
    req.extensions_mut().insert(Arc::new(ConnInfo::plain(
        "192.0.2.7:5000".parse().unwrap(),
        "127.0.0.1:8080".parse().unwrap(),
        1,
    )));
    req
}

fn get() -> Request<ProxyBody> {
    request(Method::GET, body::empty())
}

async fn text(resp: Response<ProxyBody>) -> String {
    String::from_utf8(collect_body(resp.into_body()).await.unwrap().to_vec()).unwrap()
}

fn ports(mock: &MockConnector) -> Vec<u16> {
    mock.seen().iter().map(|s| s.endpoint.port()).collect()
}

/// A body that arrives in several chunks, of unknown length.
fn chunked(chunks: &[&'static str]) -> ProxyBody {
    let frames: Vec<Result<Frame<Bytes>, BodyError>> = chunks
        .iter()
        .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
        .collect();
    body::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
        frames,
    )))
}

#[track_caller]
fn assert_about(elapsed: Duration, expected: Duration) {
    // Paused time jumps straight to timers, rounded up to the millisecond.
    assert!(
        elapsed >= expected && elapsed <= expected + Duration::from_millis(5),
        "expected about {expected:?}, took {elapsed:?}"
    );
}

/// What one endpoint does in a [`BodyMock`].
#[derive(Debug, Clone, Copy)]
enum Act {
    /// Refuse the connection before reading anything (the request comes back unsent).
    Refuse,
    /// Read the whole body, then fail as a reset connection.
    ResetAfterBody,
    /// Read the whole body and answer 200 with it.
    Echo,
}

/// 9001 resets after reading the body; the others echo it.
fn reset_first(a: SocketAddr) -> Act {
    if a.port() == 9001 {
        Act::ResetAfterBody
    } else {
        Act::Echo
    }
}

/// A connector that reads request bodies, unlike [`MockConnector`].
struct BodyMock {
    act: fn(SocketAddr) -> Act,
    got: Arc<Mutex<Vec<(u16, Method, Bytes)>>>,
    calls: Arc<AtomicUsize>,
}

impl BodyMock {
    fn new(act: fn(SocketAddr) -> Act) -> Arc<Self> {
        Arc::new(BodyMock {
            act,
            got: Arc::default(),
            calls: Arc::default(),
        })
    }

    /// Bodies read, with the port and method, in order.
    fn got(&self) -> Vec<(u16, Method, Bytes)> {
        self.got.lock().unwrap().clone()
    }
}

impl Connector for BodyMock {
    fn send(
        &self,
        endpoint: &Arc<Endpoint>,
        _opts: ConnectOptions,
        req: Request<ProxyBody>,
    ) -> SendFuture {
        let addr = endpoint.addr();
        let act = (self.act)(addr);
        let got = self.got.clone();
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if let Act::Refuse = act {
                return Err(SendError::unsent(
                    UpstreamError::Connect(std::io::ErrorKind::ConnectionRefused.into()),
                    req,
                ));
            }
            let method = req.method().clone();
            let bytes = match collect_body(req.into_body()).await {
                Ok(b) => b,
                Err(e) => return Err(SendError::lost(UpstreamError::Io(e))),
            };
            got.lock()
                .unwrap()
                .push((addr.port(), method, bytes.clone()));
            match act {
                Act::ResetAfterBody => Err(SendError::lost(UpstreamError::Io(
                    "connection reset".into(),
                ))),
                _ => Ok(Response::new(body::full(bytes))),
            }
        })
    }
}

/// Captures access-log events (fields as text) on the current thread.
#[derive(Clone, Default)]
struct AccessLog(Arc<Mutex<Vec<HashMap<&'static str, String>>>>);

impl AccessLog {
    /// Makes this the current thread's subscriber until the guard drops.
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        // tracing caches which callsites are enabled, and while a single dispatcher is
        // registered it recomputes that cache from whichever thread registers a new callsite
        // (another test's thread, without this subscriber), which turns events off here.
        // A second dispatcher that lives forever keeps the computation over all of them.
        static KEEP: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
        KEEP.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
        tracing::subscriber::set_default(self.clone())
    }

    fn field(&self, name: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.get(name).cloned().unwrap_or_default())
            .collect()
    }
}

struct Fields(HashMap<&'static str, String>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }
}

impl tracing::Subscriber for AccessLog {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }

    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target() == ACCESS_TARGET
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(HashMap::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

// ---------------------------------------------------------------------------------------
// Retries on statuses.

#[tokio::test(start_paused = true)]
async fn a_listed_status_is_retried_on_another_endpoint() {
    let mock = MockConnector::new(|addr, _| {
        if addr.port() == 9001 {
            MockReply::text(503, "busy")
        } else {
            MockReply::text(200, "ok")
        }
    });
    let up = upstream(mock.clone(), &[9001, 9002], no_ejection());
    let p = proxy_with(
        &up,
        RetryPolicy {
            on: RetryOn {
                statuses: vec![StatusCode::SERVICE_UNAVAILABLE],
                ..RetryOn::default()
            },
            ..retry()
        },
    );
    let resp = p.handle(get()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(text(resp).await, "ok");
    assert_eq!(ports(&mock), [9001, 9002]);
}

#[tokio::test(start_paused = true)]
async fn an_unlisted_status_is_relayed_without_a_retry() {
    let mock = MockConnector::new(|addr, _| {
        if addr.port() == 9001 {
            MockReply::text(503, "busy")
        } else {
            MockReply::text(200, "ok")
        }
    });
    let up = upstream(mock.clone(), &[9001, 9002], no_ejection());
    let p = proxy_with(
        &up,
        RetryPolicy {
            on: RetryOn {
                statuses: vec![StatusCode::BAD_GATEWAY],
                ..RetryOn::default()
            },
            ..retry()
        },
    );
    let resp = p.handle(get()).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(text(resp).await, "busy", "the upstream's own response");
    assert_eq!(ports(&mock), [9001]);
}

#[tokio::test(start_paused = true)]
async fn the_last_attempts_status_is_relayed_when_attempts_run_out() {
    let mock = MockConnector::new(|addr, _| MockReply::text(503, &format!("busy {}", addr.port())));
    let up = upstream(mock.clone(), &[9001, 9002], no_ejection());
    let log = AccessLog::default();
    let _guard = log.install();
    let p = proxy_with(
        &up,
        RetryPolicy {
            attempts: 3,
            on: RetryOn {
                statuses: vec![StatusCode::SERVICE_UNAVAILABLE],
                ..RetryOn::default()
            },
            ..retry()
        },
    );
    let resp = p.handle(get()).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Both endpoints tried, then one of them again; its answer is the client's.
    let seen = ports(&mock);
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[..2], [9001, 9002]);
    assert_eq!(text(resp).await, format!("busy {}", seen[2]));
    assert_eq!(log.field("attempts"), ["3"]);
    assert_eq!(
        log.field("error"),
        [""],
        "relayed, not answered by the proxy"
    );
}

// ---------------------------------------------------------------------------------------
// Which requests may be sent again.

#[tokio::test(start_paused = true)]
async fn post_after_a_reset_is_retried_only_when_non_idempotent_is_allowed() {
    let mock = MockConnector::new(|addr, _| {
        if addr.port() == 9001 {
            MockReply::Reset
        } else {
            MockReply::text(200, "ok")
        }
    });
    let up = upstream(mock.clone(), &[9001, 9002], no_ejection());
    let p = proxy_with(&up, retry());
    let resp = p.handle(request(Method::POST, body::empty())).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(ports(&mock), [9001]);

    let mock = MockConnector::new(|addr, _| {
        if addr.port() == 9001 {
            MockReply::Reset
        } else {
            MockReply::text(200, "ok")
        }
    });
    let up = upstream(mock.clone(), &[9001, 9002], no_ejection());
    let p = proxy_with(
        &up,
        RetryPolicy {
            non_idempotent: true,
            ..retry()
        },
    );
    let resp = p.handle(request(Method::POST, body::empty())).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(ports(&mock), [9001, 9002]);
    assert_eq!(mock.seen()[1].method, Method::POST);
}

#[tokio::test(start_paused = true)]
async fn a_refused_post_with_a_body_reaches_the_next_endpoint_whole() {
    let mock = BodyMock::new(|a| {
        if a.port() == 9001 {
            Act::Refuse
        } else {
            Act::Echo
        }
    });
    let up = upstream(mock.clone(), &[9001, 9002], no_ejection());
    let p = proxy_with(&up, retry());
    let resp = p
        .handle(request(Method::POST, chunked(&["order=", "42&", "qty=3"])))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(text(resp).await, "order=42&qty=3");
    assert_eq!(mock.calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        mock.got(),
        [(9002, Method::POST, Bytes::from_static(b"order=42&qty=3"))]
    );
}

#[tokio::test(start_paused = true)]
async fn an_idempotent_put_is_replayed_whole_after_a_reset() {
    let mock = BodyMock::new(reset_first);
    let up = upstream(mock.clone(), &[9001, 9002], no_ejection());
    let p = proxy_with(&up, retry());
    let resp = p
        .handle(request(
            Method::PUT,
            chunked(&["part1-", "part2-", "part3"]),
        ))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(text(resp).await, "part1-part2-part3");
    let whole = Bytes::from_static(b"part1-part2-part3");
    assert_eq!(
        mock.got(),
        [
            (9001, Method::PUT, whole.clone()),
            (9002, Method::PUT, whole.clone()),
        ]
    );

    // A POST with a body is lost with the connection unless the route allows resending it.
    let mock = BodyMock::new(reset_first);
    let up = upstream(mock.clone(), &[9001, 9002], no_ejection());
    let p = proxy_with(&up, retry());
    let resp = p
        .handle(request(
            Method::POST,
            chunked(&["part1-", "part2-", "part3"]),
        ))
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(mock.calls.load(Ordering::SeqCst), 1);

    let mock = BodyMock::new(reset_first);
    let up = upstream(mock.clone(), &[9001, 9002], no_ejection());
    let p = proxy_with(
        &up,
        RetryPolicy {
            non_idempotent: true,
            ..retry()
        },
    );
    let resp = p
        .handle(request(
            Method::POST,
            chunked(&["part1-", "part2-", "part3"]),
        ))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(text(resp).await, "part1-part2-part3");
    assert_eq!(
        mock.got(),
        [
            (9001, Method::POST, whole.clone()),
            (9002, Method::POST, whole),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_larger_than_the_replay_buffer_is_not_retried_once_sent() {
    let mock = BodyMock::new(reset_first);
    let up = upstream(mock.clone(), &[9001, 9002], no_ejection());
    let p = proxy_with(
        &up,
        RetryPolicy {
            buffer: 8,
            ..retry()
        },
    );
    let resp = p
        .handle(request(
            Method::PUT,
            chunked(&["part1-", "part2-", "part3"]),
        ))
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(mock.calls.load(Ordering::SeqCst), 1);

    // Within the buffer it is.
    let mock = BodyMock::new(reset_first);
    let up = upstream(mock.clone(), &[9001, 9002], no_ejection());
    let p = proxy_with(
        &up,
        RetryPolicy {
            buffer: 8,
            ..retry()
        },
    );
    let resp = p.handle(request(Method::PUT, chunked(&["ab", "cd"]))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(mock.calls.load(Ordering::SeqCst), 2);
    assert_eq!(text(resp).await, "abcd");
}

// ---------------------------------------------------------------------------------------
// Timeouts and deadlines.

#[tokio::test(start_paused = true)]
async fn per_try_timeout_moves_on_to_the_next_endpoint() {
    let mock = MockConnector::new(|addr, _| {
        if addr.port() == 9001 {
            MockReply::Hang
        } else {
            MockReply::text(200, "ok")
        }
    });
    let up = upstream(mock.clone(), &[9001, 9002], no_ejection());
    let p = proxy_with(
        &up,
        RetryPolicy {
            per_try_timeout: Some(Duration::from_secs(1)),
            ..retry()
        },
    );
    let started = Instant::now();
    let resp = p.handle(get()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_about(started.elapsed(), Duration::from_secs(1));
    assert_eq!(ports(&mock), [9001, 9002]);

    // With backoff, the wait before the retry comes on top (at most the first bound).
    let mock = MockConnector::new(|addr, _| {
        if addr.port() == 9001 {
            MockReply::Hang
        } else {
            MockReply::text(200, "ok")
        }
    });
    let up = upstream(mock.clone(), &[9001, 9002], no_ejection());
    let p = proxy_with(
        &up,
        RetryPolicy {
            per_try_timeout: Some(Duration::from_secs(1)),
            backoff: Duration::from_millis(100),
            ..RetryPolicy::default()
        },
    );
    let started = Instant::now();
    let resp = p.handle(get()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took <= Duration::from_millis(1105),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_route_timeout_bounds_the_whole_request() {
    let mock = MockConnector::new(|_, _| MockReply::Hang);
    let up = upstream(mock.clone(), &[9001, 9002], no_ejection());
    let log = AccessLog::default();
    let _guard = log.install();
    let p = proxy_with(
        &up,
        RetryPolicy {
            timeout: Some(Duration::from_secs(3)),
            ..retry()
        },
    );
    let started = Instant::now();
    let resp = p.handle(get()).await;
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_about(started.elapsed(), Duration::from_secs(3));
    assert_eq!(ports(&mock), [9001], "no attempt after the deadline");
    drop(resp);
    assert_eq!(log.field("error"), ["deadline_exceeded"]);
}

#[tokio::test(start_paused = true)]
async fn per_try_timeouts_within_the_route_timeout() {
    let mock = MockConnector::new(|_, _| MockReply::Hang);
    let up = upstream(mock.clone(), &[9001, 9002, 9003], no_ejection());
    let p = proxy_with(
        &up,
        RetryPolicy {
            attempts: 5,
            per_try_timeout: Some(Duration::from_secs(1)),
            timeout: Some(Duration::from_millis(2500)),
            ..retry()
        },
    );
    let started = Instant::now();
    let resp = p.handle(get()).await;
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_about(started.elapsed(), Duration::from_millis(2500));
    // 1 s, 1 s, and the half second left.
    assert_eq!(ports(&mock), [9001, 9002, 9003]);
}

#[tokio::test(start_paused = true)]
async fn grpc_timeout_is_rewritten_with_the_time_left() {
    let mock = MockConnector::new(|addr, _| {
        if addr.port() == 9001 {
            MockReply::Hang
        } else {
            MockReply::text(200, "ok")
        }
    });
    let up = upstream(mock.clone(), &[9001, 9002], no_ejection());
    let p = proxy_with(
        &up,
        RetryPolicy {
            per_try_timeout: Some(Duration::from_millis(500)),
            ..retry()
        },
    );
    let mut req = get();
    req.headers_mut()
        .insert("grpc-timeout", HeaderValue::from_static("2S"));
    let resp = p.handle(req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = mock.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].headers["grpc-timeout"], "2000m");
    let ms = |v: &HeaderValue| -> u64 {
        v.to_str()
            .unwrap()
            .strip_suffix('m')
            .unwrap()
            .parse()
            .unwrap()
    };
    let second = ms(&seen[1].headers["grpc-timeout"]);
    assert!((1495..=1500).contains(&second), "{second}");

    // The route's timeout wins when it is sooner; without a grpc-timeout none is added.
    let mock = MockConnector::new(|_, _| MockReply::text(200, "ok"));
    let up = upstream(mock.clone(), &[9001], no_ejection());
    let p = proxy_with(
        &up,
        RetryPolicy {
            timeout: Some(Duration::from_secs(1)),
            ..retry()
        },
    );
    let mut req = get();
    req.headers_mut()
        .insert("grpc-timeout", HeaderValue::from_static("1M"));
    assert_eq!(p.handle(req).await.status(), StatusCode::OK);
    assert_eq!(p.handle(get()).await.status(), StatusCode::OK);
    let seen = mock.seen();
    assert_eq!(seen[0].headers["grpc-timeout"], "1000m");
    assert!(!seen[1].headers.contains_key("grpc-timeout"));
}

#[tokio::test(start_paused = true)]
async fn an_expired_grpc_deadline_gives_504() {
    let mock = MockConnector::new(|_, _| MockReply::Hang);
    let up = upstream(mock.clone(), &[9001, 9002], no_ejection());
    let p = proxy_with(&up, retry());
    let mut req = get();
    req.headers_mut()
        .insert("grpc-timeout", HeaderValue::from_static("300m"));
    let started = Instant::now();
    let resp = p.handle(req).await;
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_about(started.elapsed(), Duration::from_millis(300));
    assert_eq!(ports(&mock), [9001]);
}

// ---------------------------------------------------------------------------------------
// Retry budget and circuit breaker.

#[tokio::test(start_paused = true)]
async fn an_empty_retry_budget_allows_no_retry() {
    let refuse_first = |addr: SocketAddr, _: &Request<ProxyBody>| {
        if addr.port() == 9001 {
            MockReply::Refuse
        } else {
            MockReply::text(200, "ok")
        }
    };
    let mock = MockConnector::new(refuse_first);
    let policy = UpstreamPolicy {
        retry_budget: RetryBudgetPolicy {
            percent: 0,
            min_per_second: 0,
        },
        ..no_ejection()
    };
    let up = upstream(mock.clone(), &[9001, 9002], policy);
    let p = proxy_with(&up, retry());
    let resp = p.handle(get()).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(ports(&mock), [9001], "one call, no retry");

    // The default budget has room.
    let mock = MockConnector::new(refuse_first);
    let up = upstream(mock.clone(), &[9001, 9002], no_ejection());
    let p = proxy_with(&up, retry());
    let resp = p.handle(get()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(ports(&mock), [9001, 9002]);
    assert!(up.budget().remaining(Instant::now()) < 100);
}

#[tokio::test(start_paused = true)]
async fn the_breakers_max_retries_bounds_retries() {
    let mock = MockConnector::new(|addr, _| {
        if addr.port() == 9001 {
            MockReply::Refuse
        } else {
            MockReply::text(200, "ok")
        }
    });
    let policy = UpstreamPolicy {
        breaker: BreakerLimits {
            max_retries: Some(0),
            ..BreakerLimits::default()
        },
        ..no_ejection()
    };
    let up = upstream(mock.clone(), &[9001, 9002], policy);
    let p = proxy_with(&up, retry());
    assert_eq!(p.handle(get()).await.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(ports(&mock), [9001]);
}

#[tokio::test(start_paused = true)]
async fn the_breaker_refuses_while_max_requests_are_in_flight() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    // The first request hangs; later ones are answered.
    let mock = MockConnector::new(move |_, _| {
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            MockReply::Hang
        } else {
            MockReply::text(200, "ok")
        }
    });
    let policy = UpstreamPolicy {
        breaker: BreakerLimits {
            max_requests: Some(1),
            ..BreakerLimits::default()
        },
        ..no_ejection()
    };
    let up = upstream(mock.clone(), &[9001], policy);
    let p = proxy_with(&up, retry());
    let log = AccessLog::default();
    let _guard = log.install();
    let hanging = tokio::spawn({
        let p = p.clone();
        async move { p.handle(get()).await.status() }
    });
    // Let the first request take the slot and reach the upstream.
    while mock.seen().is_empty() {
        tokio::task::yield_now().await;
    }
    let resp = p.handle(get()).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        !resp.headers().contains_key("retry-after"),
        "not the no-healthy-endpoint answer"
    );
    drop(resp);
    assert_eq!(log.field("error"), ["circuit_open"]);
    assert_eq!(up.breaker().refused(), 1);
    assert_eq!(mock.seen().len(), 1, "the refused request never left");
    assert!(!hanging.is_finished());
    // Once the first request is gone, its slot is free.
    hanging.abort();
    assert!(hanging.await.is_err());
    let resp = p.handle(get()).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn the_breaker_slot_is_held_until_the_response_body_ends() {
    let mock = MockConnector::new(|_, _| MockReply::text(200, "ok"));
    let policy = UpstreamPolicy {
        breaker: BreakerLimits {
            max_requests: Some(1),
            ..BreakerLimits::default()
        },
        ..no_ejection()
    };
    let up = upstream(mock.clone(), &[9001], policy);
    let p = proxy_with(&up, retry());
    let first = p.handle(get()).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(
        p.handle(get()).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(text(first).await, "ok");
    assert_eq!(p.handle(get()).await.status(), StatusCode::OK);
    assert_eq!(mock.seen().len(), 2);
}

// ---------------------------------------------------------------------------------------
// Backups and panic mode.

#[tokio::test(start_paused = true)]
async fn backups_take_over_when_every_primary_is_ejected() {
    let primaries_down = Arc::new(AtomicBool::new(false));
    let down = primaries_down.clone();
    let mock = MockConnector::new(move |addr, _| {
        if addr.port() != 9003 && down.load(Ordering::SeqCst) {
            MockReply::Refuse
        } else {
            MockReply::text(200, &addr.port().to_string())
        }
    });
    let policy = UpstreamPolicy {
        health: HealthPolicy {
            outlier: OutlierPolicy {
                max_ejection_percent: 100,
                ..OutlierPolicy::default()
            },
            ..HealthPolicy::default()
        },
        ..UpstreamPolicy::default()
    };
    let up = Arc::new(Upstream::new(
        "pool",
        vec![
            endpoint(9001, false),
            endpoint(9002, false),
            endpoint(9003, true),
        ],
        policy,
        mock.clone(),
    ));
    let p = proxy_with(&up, retry());
    // Healthy primaries: the backup gets nothing.
    for _ in 0..4 {
        assert_eq!(p.handle(get()).await.status(), StatusCode::OK);
    }
    assert!(!ports(&mock).contains(&9003));
    // Both primaries fail and are ejected; the same request ends on the backup.
    primaries_down.store(true, Ordering::SeqCst);
    let before = mock.seen().len();
    let resp = p.handle(get()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(text(resp).await, "9003");
    let tried: BTreeSet<u16> = ports(&mock)[before..].iter().copied().collect();
    assert_eq!(tried, BTreeSet::from([9001, 9002, 9003]));
    // Later requests go straight to it.
    let before = mock.seen().len();
    for _ in 0..3 {
        assert_eq!(text(p.handle(get()).await).await, "9003");
    }
    assert_eq!(ports(&mock)[before..], [9003, 9003, 9003]);
    // When the primaries are back, the backup is left alone again.
    primaries_down.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(11)).await;
    let before = mock.seen().len();
    for _ in 0..4 {
        assert_eq!(p.handle(get()).await.status(), StatusCode::OK);
    }
    assert!(!ports(&mock)[before..].contains(&9003));
}

fn four_with_three_ejected(panic_threshold: u8) -> (Arc<MockConnector>, Arc<Upstream>) {
    let mock = MockConnector::new(|addr, _| MockReply::text(200, &addr.port().to_string()));
    let policy = UpstreamPolicy {
        health: HealthPolicy {
            outlier: OutlierPolicy {
                max_ejection_percent: 100,
                ..OutlierPolicy::default()
            },
            panic_threshold,
            ..HealthPolicy::default()
        },
        ..UpstreamPolicy::default()
    };
    let up = upstream(mock.clone(), &[9001, 9002, 9003, 9004], policy);
    let now = Instant::now();
    for i in 0..3 {
        up.record(i, Outcome::GatewayFailure, now);
    }
    (mock, up)
}

#[tokio::test(start_paused = true)]
async fn panic_mode_spreads_requests_over_every_primary() {
    let (mock, up) = four_with_three_ejected(50);
    assert_eq!(
        up.selection(Instant::now()),
        Some(crate::balance::Selection::Panic)
    );
    let p = proxy_with(&up, retry());
    for _ in 0..8 {
        assert_eq!(p.handle(get()).await.status(), StatusCode::OK);
    }
    let seen = ports(&mock);
    for port in [9001, 9002, 9003, 9004] {
        assert_eq!(
            seen.iter().filter(|&&p| p == port).count(),
            2,
            "{port}: {seen:?}"
        );
    }

    // Below the threshold only the available one is used.
    let (mock, up) = four_with_three_ejected(25);
    let p = proxy_with(&up, retry());
    for _ in 0..4 {
        assert_eq!(p.handle(get()).await.status(), StatusCode::OK);
    }
    assert_eq!(ports(&mock), [9004, 9004, 9004, 9004]);
}

#[tokio::test(start_paused = true)]
async fn without_panic_mode_nothing_available_is_503() {
    let (mock, up) = four_with_three_ejected(0);
    up.record(3, Outcome::GatewayFailure, Instant::now());
    assert_eq!(up.selection(Instant::now()), None);
    let p = proxy_with(&up, retry());
    let resp = p.handle(get()).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "10");
    assert!(mock.seen().is_empty());
}

/// A request's own deadline running out is not the endpoint's fault: a client sending a
/// tiny `grpc-timeout` must not get a healthy endpoint ejected.
#[tokio::test(start_paused = true)]
async fn a_timeout_from_the_requests_deadline_does_not_eject() {
    let mock = MockConnector::new(|_, _| MockReply::Hang);
    // Default outlier detection: one gateway failure ejects.
    let up = upstream(mock.clone(), &[9001, 9002], UpstreamPolicy::default());
    let p = proxy_with(&up, retry());
    let mut req = get();
    req.headers_mut()
        .insert("grpc-timeout", HeaderValue::from_static("5m"));
    assert_eq!(p.handle(req).await.status(), StatusCode::GATEWAY_TIMEOUT);
    let now = Instant::now();
    assert!(
        up.endpoints().iter().all(|e| e.is_available(now)),
        "an endpoint was ejected for the client's deadline"
    );
}

/// `max_retries` counts retries in flight across requests: one request retrying twice holds
/// one slot at a time, so `max_retries = 1` lets it make both retries.
#[tokio::test(start_paused = true)]
async fn one_request_holds_one_retry_slot_at_a_time() {
    let mock = MockConnector::new(|addr, _| {
        if addr.port() == 9003 {
            MockReply::text(200, "ok")
        } else {
            MockReply::Refuse
        }
    });
    let policy = UpstreamPolicy {
        breaker: BreakerLimits {
            max_retries: Some(1),
            ..BreakerLimits::default()
        },
        ..no_ejection()
    };
    let up = upstream(mock.clone(), &[9001, 9002, 9003], policy);
    let p = proxy_with(&up, retry());
    assert_eq!(p.handle(get()).await.status(), StatusCode::OK);
    assert_eq!(ports(&mock).len(), 3);
}

/// After the upstream's own response-header timeout the same endpoint is not tried again:
/// the client would wait that long once more.
#[tokio::test(start_paused = true)]
async fn an_endpoint_that_timed_out_is_not_tried_again() {
    let mock = MockConnector::new(|_, _| MockReply::Hang);
    let up = upstream(mock.clone(), &[9001], no_ejection());
    let p = proxy_with(&up, retry());
    assert_eq!(p.handle(get()).await.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(ports(&mock), [9001]);
}

//! The two halves against each other over loopback TCP: the connector sends, the server
//! serves an echo service. Bodies, trailers, concurrency, small windows and GOAWAY.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use proxy_core::body::{self, BodyError, ProxyBody};
use proxy_core::test_util::endpoint;
use proxy_core::{ConnInfo, ConnectOptions, Connector};
use proxy_http2::{ClientOptions, Http2Connector, Http2Stats, ServerOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Answers with the request body streamed back, the request trailers as response trailers,
/// and the request's method, path and authority in headers.
#[derive(Clone)]
struct Echo;

impl tower_service::Service<Request<ProxyBody>> for Echo {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ProxyBody>) -> Self::Future {
        Box::pin(async move {
            let mut resp = Response::new(body::empty());
            let h = resp.headers_mut();
            h.insert(
                "x-method",
                HeaderValue::from_str(req.method().as_str()).unwrap(),
            );
            h.insert("x-path", HeaderValue::from_str(req.uri().path()).unwrap());
            if let Some(a) = req.uri().authority() {
                h.insert("x-authority", HeaderValue::from_str(a.as_str()).unwrap());
            }
            if let Some(te) = req.headers().get("te") {
                h.insert("x-te", te.clone());
            }
            if req.uri().path() == "/big" {
                let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                let frames = (0..64).map(move |_| Ok::<_, BodyError>(Frame::data(chunk.clone())));
                *resp.body_mut() = body::boxed(StreamBody::new(futures_util::stream::iter(frames)));
                return Ok(resp);
            }
            *resp.body_mut() = req.into_body();
            Ok(resp)
        })
    }
}

/// The token that drains the connections accepted so far; swapping it leaves later
/// connections running.
type Drain = Arc<std::sync::Mutex<CancellationToken>>;

struct Server {
    addr: SocketAddr,
    drain: Drain,
    accepted: Arc<AtomicUsize>,
}

async fn server(options: ServerOptions) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown: Drain = Arc::default();
    let drain = shutdown.clone();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let stats = Arc::new(Http2Stats::default());
        let mut id = 0;
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            id += 1;
            counter.fetch_add(1, Ordering::Relaxed);
            let info = ConnInfo::plain(peer, addr, id);
            let stop = drain.lock().unwrap().clone();
            let stats = stats.clone();
            tokio::spawn(async move {
                let _ =
                    proxy_http2::serve_connection(stream, info, Echo, options, stats, stop).await;
            });
        }
    });
    Server {
        addr,
        drain: shutdown,
        accepted,
    }
}

fn opts() -> ConnectOptions {
    ConnectOptions {
        connect_timeout: Duration::from_secs(2),
    }
}

fn request(path: &str, body: ProxyBody) -> Request<ProxyBody> {
    let mut req = Request::builder()
        .method("POST")
        .uri(path)
        .body(body)
        .unwrap();
    req.headers_mut()
        .insert("host", HeaderValue::from_static("echo.test"));
    req
}

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("test took too long")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_and_trailers_both_ways() {
    within(async {
        let Server { addr, .. } = server(ServerOptions::default()).await;
        let connector = Http2Connector::new(ClientOptions::default());
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("grpc-message", HeaderValue::from_static("ok"));
        let frames = vec![
            Ok::<_, BodyError>(Frame::data(Bytes::from_static(b"hello "))),
            Ok(Frame::data(Bytes::from_static(b"world"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = body::boxed(StreamBody::new(futures_util::stream::iter(frames)));
        let mut req = request("/echo", body);
        req.extensions_mut()
            .insert(proxy_core::headers::TakesTrailers);
        let resp = connector
            .send(&endpoint(&addr.to_string()), opts(), req)
            .await
            .map_err(|e| e.error)
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.headers()["x-method"], "POST");
        assert_eq!(resp.headers()["x-authority"], "echo.test");
        assert_eq!(resp.headers()["x-te"], "trailers");
        let collected = resp.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().expect("trailers arrive");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers["grpc-message"], "ok");
        assert_eq!(collected.to_bytes(), "hello world");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_through_small_windows() {
    within(async {
        let server_opts = ServerOptions {
            initial_stream_window: 65_535,
            initial_connection_window: 65_535,
            ..ServerOptions::default()
        };
        let Server { addr, .. } = server(server_opts).await;
        let connector = Http2Connector::new(ClientOptions {
            initial_stream_window: 16 * 1024,
            initial_connection_window: 32 * 1024,
            ..ClientOptions::default()
        });
        let ep = endpoint(&addr.to_string());
        // 4 MiB up, echoed back down.
        let chunk = Bytes::from(vec![7u8; 256 * 1024]);
        let frames = (0..16).map(move |_| Ok::<_, BodyError>(Frame::data(chunk.clone())));
        let body = body::boxed(StreamBody::new(futures_util::stream::iter(frames)));
        let resp = connector
            .send(&ep, opts(), request("/echo", body))
            .await
            .map_err(|e| e.error)
            .unwrap();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), 4 * 1024 * 1024);
        assert!(bytes.iter().all(|b| *b == 7));
        // 4 MiB generated by the server.
        let resp = connector
            .send(&ep, opts(), request("/big", body::empty()))
            .await
            .map_err(|e| e.error)
            .unwrap();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), 4 * 1024 * 1024);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_streams_share_few_connections() {
    within(async {
        let server_opts = ServerOptions {
            max_concurrent_streams: 16,
            ..ServerOptions::default()
        };
        let Server { addr, accepted, .. } = server(server_opts).await;
        let connector = Http2Connector::new(ClientOptions {
            max_connections_per_endpoint: 2,
            ..ClientOptions::default()
        });
        let ep = endpoint(&addr.to_string());
        let mut tasks = Vec::new();
        for i in 0..100 {
            let connector = connector.clone();
            let ep = ep.clone();
            tasks.push(tokio::spawn(async move {
                let text = format!("request {i}");
                let resp = connector
                    .send(&ep, opts(), request("/echo", body::full(text.clone())))
                    .await
                    .map_err(|e| e.error)
                    .unwrap();
                let got = resp.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(got, text);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let conns = accepted.load(Ordering::Relaxed);
        assert!(
            (1..=2).contains(&conns),
            "{conns} connections for 100 requests"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_server_goaway() {
    within(async {
        let Server {
            addr, drain: stop, ..
        } = server(ServerOptions::default()).await;
        let connector = Http2Connector::new(ClientOptions::default());
        let ep = endpoint(&addr.to_string());
        let resp = connector
            .send(&ep, opts(), request("/echo", body::full("one")))
            .await
            .map_err(|e| e.error)
            .unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "one");
        // Graceful shutdown of the open connection (GOAWAY, then close); new connections
        // are served normally.
        let old = std::mem::take(&mut *stop.lock().unwrap());
        old.cancel();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let resp = connector
            .send(&ep, opts(), request("/echo", body::full("two")))
            .await
            .map_err(|e| e.error)
            .expect("a fresh connection replaces the one that went away");
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "two");
    })
    .await;
}

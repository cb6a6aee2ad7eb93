//! The head timer against real sockets: a slow request head gets 408, an idle keep-alive
//! connection closes quietly, and an upgraded connection is left alone.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers panic on purpose"
)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use proxy_core::ConnInfo;
use proxy_core::body::{self, ProxyBody};
use proxy_core::upgrade::PendingUpgrade;
use proxy_http1::{ServerOptions, serve_connection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Answers upgrade requests with 101 and echoes the tunnel; everything else with 200.
#[derive(Clone)]
struct EchoUpgrade;

impl tower_service::Service<Request<ProxyBody>> for EchoUpgrade {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ProxyBody>) -> Self::Future {
        Box::pin(async move {
            let Some(pending) = req
                .extensions()
                .get::<PendingUpgrade>()
                .and_then(|p| p.take())
            else {
                return Ok(Response::new(body::full("ok")));
            };
            tokio::spawn(async move {
                if let Ok(mut io) = pending.await {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let mut resp = Response::new(body::empty());
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            resp.headers_mut()
                .insert("connection", "upgrade".parse().unwrap());
            resp.headers_mut()
                .insert("upgrade", "echo".parse().unwrap());
            Ok(resp)
        })
    }
}

async fn server(options: ServerOptions) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let info = ConnInfo::plain(peer, addr, 1);
            tokio::spawn(serve_connection(
                stream,
                info,
                EchoUpgrade,
                options,
                CancellationToken::new(),
            ));
        }
    });
    addr
}

fn options() -> ServerOptions {
    ServerOptions {
        header_read_timeout: Duration::from_millis(300),
        keepalive_timeout: Duration::from_millis(300),
        ..ServerOptions::default()
    }
}

async fn read_to_end(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn slow_head_gets_408_and_close() {
    let addr = server(options()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await.unwrap();
    let text = read_to_end(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 408 "), "got {text:?}");
}

#[tokio::test]
async fn idle_keepalive_closes_quietly() {
    let addr = server(options()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let text = read_to_end(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 200 "), "got {text:?}");
    assert!(
        !text.contains("408"),
        "no 408 for an idle connection: {text:?}"
    );
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(2),
        "idle connection must close after the 300 ms keep-alive timeout, not {waited:?}"
    );
}

#[tokio::test]
async fn upgraded_tunnel_outlives_the_head_timer() {
    let addr = server(options()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 1024];
    let n = s.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 101 "), "got {head:?}");
    // Several pauses longer than both timers, with traffic in between.
    for i in 0..4u8 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        s.write_all(&[b'a' + i; 3]).await.unwrap();
        let mut echo = [0u8; 3];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut echo))
            .await
            .expect("echo in time")
            .expect("tunnel still open");
        assert_eq!(echo, [b'a' + i; 3]);
    }
}

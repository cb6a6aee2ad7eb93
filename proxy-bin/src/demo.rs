//! `proxy-bin demo`: three small in-process origin services and the proxy in front of them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::config::{self, Config};
use crate::tls;

/// Longest outage `/demo/outage` may ask for.
const MAX_OUTAGE: Duration = Duration::from_secs(120);

/// Starts an origin that answers every request with a line naming itself and what it served.
///
/// `GET /healthz` answers `ok` (the proxy's health checks). `POST /demo/outage?seconds=N`
/// (at most 120) makes the origin answer, then stop like a crashed process: its listener and
/// every connection close, and it comes back on the same port N seconds later. The proxy's
/// log shows the health transitions.
pub async fn spawn_origin(name: &'static str) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let mut listener = Some(listener);
        loop {
            let Some(l) = listener.take() else {
                return;
            };
            let (outage_tx, mut outage_rx) = tokio::sync::mpsc::channel::<Duration>(1);
            let mut connections = JoinSet::new();
            let outage = loop {
                tokio::select! {
                    Some(d) = outage_rx.recv() => break d,
                    accepted = l.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let outage_tx = outage_tx.clone();
                        connections.spawn(serve_origin(name, addr, stream, outage_tx));
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            };
            // Give the outage request's answer a moment to leave, then go down hard.
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(l);
            connections.abort_all();
            tracing::info!(origin = name, address = %addr, seconds = outage.as_secs(), "demo origin stopped");
            tokio::time::sleep(outage).await;
            listener = loop {
                match TcpListener::bind(addr).await {
                    Ok(l) => break Some(l),
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            };
            tracing::info!(origin = name, address = %addr, "demo origin started again");
        }
    });
    Ok(addr)
}

async fn serve_origin(
    name: &'static str,
    addr: SocketAddr,
    stream: tokio::net::TcpStream,
    outage: tokio::sync::mpsc::Sender<Duration>,
) {
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let outage = outage.clone();
        async move { Ok::<_, Infallible>(origin_answer(name, addr, &req, &outage)) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

fn origin_answer(
    name: &'static str,
    addr: SocketAddr,
    req: &Request<Incoming>,
    outage: &tokio::sync::mpsc::Sender<Duration>,
) -> Response<Full<Bytes>> {
    let text = |status: u16, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", "text/plain; charset=utf-8")
            .header("cache-control", "no-store")
            .header("x-served-by", format!("{name}@{addr}"))
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| Response::new(Full::default()))
    };
    match req.uri().path() {
        "/healthz" => return text(200, "ok\n".to_owned()),
        "/demo/outage" if req.method() == http::Method::POST => {
            let seconds = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("seconds=")))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(15);
            let d = Duration::from_secs(seconds).min(MAX_OUTAGE);
            let _ = outage.try_send(d);
            return text(
                200,
                format!(
                    "{name} endpoint {addr} stops now and starts again in {} s\n",
                    d.as_secs()
                ),
            );
        }
        _ => {}
    }
    let client = req
        .headers()
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    // The catalog is the same for everyone, so it says so: the proxy caches it for 30 s
    // (and revalidates with the ETag after that).
    let cacheable = name == "catalog";
    let body = if cacheable {
        format!(
            "{name} endpoint {addr} served {} {}\n",
            req.method(),
            req.uri()
        )
    } else {
        format!(
            "{name} endpoint {addr} served {} {} (client {client})\n",
            req.method(),
            req.uri()
        )
    };
    let mut resp = Response::builder()
        .header("content-type", "text/plain; charset=utf-8")
        .header("x-served-by", format!("{name}@{addr}"));
    if cacheable {
        resp = resp
            .header("cache-control", "public, max-age=30")
            .header("etag", format!("\"{:x}\"", body.len()));
    }
    resp.body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::default()))
}

/// The demo's listeners: cleartext (HTTP/1.1 and h2c) and, optionally, TLS (HTTP/2 and
/// HTTP/1.1 by ALPN, HTTP/3 on the same UDP port) with a self-signed certificate written to
/// `cert_dir`.
#[derive(Debug, Clone)]
pub struct DemoListeners {
    /// Cleartext address.
    pub plain: SocketAddr,
    /// TLS address and the directory for the generated certificate.
    pub tls: Option<(SocketAddr, PathBuf)>,
}

/// Names the demo certificate is valid for.
pub const DEMO_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "shop.example.com"];

/// Starts the demo origins and returns the proxy configuration in front of them, with the
/// path of the generated certificate when a TLS listener is asked for.
pub async fn config(listeners: &DemoListeners) -> anyhow::Result<(Config, Option<PathBuf>)> {
    let listen = listeners.plain;
    let mut tls_listener = String::new();
    let mut cert_path = None;
    if let Some((addr, dir)) = &listeners.tls {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let (cert, key) = tls::self_signed(&DEMO_NAMES, dir)?;
        tls_listener = format!(
            r#"
[[listeners]]
address = "{addr}"
http3 = true
[listeners.tls]
certificates = [{{ names = ["localhost", "shop.example.com"], cert = "{}", key = "{}" }}]
"#,
            toml_escape(&cert),
            toml_escape(&key)
        );
        cert_path = Some(cert);
    }
    let catalog1 = spawn_origin("catalog").await?;
    let catalog2 = spawn_origin("catalog").await?;
    let orders = spawn_origin("orders").await?;
    let accounts = spawn_origin("accounts").await?;
    let text = format!(
        r#"
[[listeners]]
address = "{listen}"
h2c = true
{tls_listener}
[upstreams.catalog]
balancer = "round_robin"
endpoints = ["{catalog1}", "{catalog2}"]
slow_start = "10s"
health_check = {{ path = "/healthz", expect = ["200-299"], interval = "2s", unhealthy_threshold = 2, healthy_threshold = 2 }}

[upstreams.orders]
endpoints = ["{orders}"]
health_check = {{ path = "/healthz", expect = ["200-299"], interval = "2s" }}

[upstreams.accounts]
endpoints = ["{accounts}"]
health_check = {{ path = "/healthz", expect = ["200-299"], interval = "2s" }}

[[servers]]
names = ["shop.example.com", "localhost", "127.0.0.1"]
default = true
request_headers.set = {{ "X-Real-IP" = "$remote_addr" }}

[[servers.routes]]
prefix = "/products/"
upstream = "catalog"
cache = true

[[servers.routes]]
prefix = "/checkout/"
upstream = "orders"

[[servers.routes]]
prefix = "/account/"
upstream = "accounts"

[[servers.routes]]
exact = "/old-shop"
redirect = {{ status = 301, location = "$scheme://$http_host/products/" }}

[[servers.routes]]
prefix = "/"
upstream = "catalog"
"#
    );
    let config = config::parse(&text).map_err(|errs| {
        let msgs: Vec<String> = errs.iter().map(|e| e.message.clone()).collect();
        anyhow::anyhow!(
            "built-in demo configuration is invalid: {}",
            msgs.join("; ")
        )
    })?;
    Ok((config, cert_path))
}

fn toml_escape(p: &Path) -> String {
    p.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

/// The text printed once the demo is listening.
pub fn banner(addr: SocketAddr, tls: Option<(SocketAddr, &Path)>) -> String {
    let tls = tls.map_or_else(String::new, |(a, cert)| {
        format!(
            "TLS (HTTP/2 and HTTP/1.1 by ALPN) on https://{a}, and HTTP/3 on UDP port {port}\n\
             (advertised by Alt-Svc); self-signed certificate for localhost, 127.0.0.1 and\n\
             shop.example.com: {cert}\n  \
             curl --cacert {cert} https://localhost:{port}/products/42\n  \
             curl --http3-only --cacert {cert} https://localhost:{port}/products/42   # curl built with HTTP/3\n  \
             curl --http2-prior-knowledge http://{addr}/products/42   # h2c on the plain port\n",
            cert = cert.display(),
            port = a.port()
        )
    });
    let plain = format!(
        "\nDemo reverse proxy listening on http://{addr}\n\
         Routes: /products/ -> catalog (2 endpoints, round robin), /checkout/ -> orders,\n\
         /account/ -> accounts, / -> catalog, /old-shop -> 301 redirect.\n\n\
         Try:\n  \
         curl -i http://{addr}/products/42\n  \
         curl http://{addr}/products/42      # again: the other catalog endpoint answers\n  \
         curl -i http://{addr}/checkout/cart\n  \
         curl -i http://{addr}/account/me\n  \
         curl -i http://{addr}/old-shop\n  \
         curl -X POST 'http://{addr}/demo/outage?seconds=15'  # a catalog origin stops: see the log\n\n\
         Press Ctrl-C to stop.\n"
    );
    match plain.rsplit_once("Press Ctrl-C") {
        Some((head, _)) if !tls.is_empty() => format!("{head}{tls}\nPress Ctrl-C to stop.\n"),
        _ => plain,
    }
}

/// Parses a `--listen` value.
pub fn listen_addr(s: &str) -> anyhow::Result<SocketAddr> {
    s.parse()
        .with_context(|| format!("invalid --listen address `{s}`: expected ip:port"))
}

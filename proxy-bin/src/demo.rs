//! `proxy-bin demo`: three small in-process origin services and the proxy in front of them.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::config::{self, Config};

/// Starts an origin that answers every request with a line naming itself and what it served.
pub async fn spawn_origin(name: &'static str) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    let client = req
                        .headers()
                        .get("x-real-ip")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_owned();
                    let body = format!(
                        "{name} endpoint {addr} served {} {} (client {client})\n",
                        req.method(),
                        req.uri()
                    );
                    let resp = Response::builder()
                        .header("content-type", "text/plain; charset=utf-8")
                        .header("x-served-by", format!("{name}@{addr}"))
                        .body(Full::new(Bytes::from(body)));
                    Ok::<_, Infallible>(resp.unwrap_or_else(|_| Response::new(Full::default())))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Starts the demo origins and returns the proxy configuration in front of them.
pub async fn config(listen: SocketAddr) -> anyhow::Result<Config> {
    let catalog1 = spawn_origin("catalog").await?;
    let catalog2 = spawn_origin("catalog").await?;
    let orders = spawn_origin("orders").await?;
    let accounts = spawn_origin("accounts").await?;
    let text = format!(
        r#"
[[listeners]]
address = "{listen}"

[upstreams.catalog]
balancer = "round_robin"
endpoints = ["{catalog1}", "{catalog2}"]

[upstreams.orders]
endpoints = ["{orders}"]

[upstreams.accounts]
endpoints = ["{accounts}"]

[[servers]]
names = ["shop.example.com", "localhost", "127.0.0.1"]
default = true
request_headers.set = {{ "X-Real-IP" = "$remote_addr" }}

[[servers.routes]]
prefix = "/products/"
upstream = "catalog"

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
    config::parse(&text).map_err(|errs| {
        let msgs: Vec<String> = errs.iter().map(|e| e.message.clone()).collect();
        anyhow::anyhow!(
            "built-in demo configuration is invalid: {}",
            msgs.join("; ")
        )
    })
}

/// The text printed once the demo is listening.
pub fn banner(addr: SocketAddr) -> String {
    format!(
        "\nDemo reverse proxy listening on http://{addr}\n\
         Routes: /products/ -> catalog (2 endpoints, round robin), /checkout/ -> orders,\n\
         /account/ -> accounts, / -> catalog, /old-shop -> 301 redirect.\n\n\
         Try:\n  \
         curl -i http://{addr}/products/42\n  \
         curl http://{addr}/products/42      # again: the other catalog endpoint answers\n  \
         curl -i http://{addr}/checkout/cart\n  \
         curl -i http://{addr}/account/me\n  \
         curl -i http://{addr}/old-shop\n\n\
         Press Ctrl-C to stop.\n"
    )
}

/// Parses a `--listen` value.
pub fn listen_addr(s: &str) -> anyhow::Result<SocketAddr> {
    s.parse()
        .with_context(|| format!("invalid --listen address `{s}`: expected ip:port"))
}

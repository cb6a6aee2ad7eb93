//! A small HTTP/1.1 client on `hyper::client::conn`, and the echo backend's answer parsed.
//!
//! `hyper::client::conn` sends exactly the headers given: no `Host` is added, so every helper
//! here sets one.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::StaticBody;

/// Any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body type of [`Conn`].
pub type ClientBody = BoxBody<Bytes, BoxError>;

/// An empty request body.
pub fn empty() -> ClientBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A request body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> ClientBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A request body of `len` bytes produced without allocating (see [`StaticBody`]).
pub fn streaming(len: u64) -> ClientBody {
    StaticBody::new(len).map_err(|never| match never {}).boxed()
}

/// A request builder for `method path` with `Host: host`.
pub fn req(method: &str, host: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, host)
}

/// A response read to the end.
#[derive(Debug, Clone)]
pub struct Resp {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Resp {
    /// The first value of header `name`, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of header `name`.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The `x-backend` header (which backend answered), or `""`.
    pub fn backend(&self) -> &str {
        self.header("x-backend").unwrap_or("")
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The echo backend's description of the request it received; panics if the body is not
    /// one (for example when the proxy answered itself).
    pub fn echo(&self) -> Echo {
        Echo::parse(&self.body).unwrap_or_else(|| {
            panic!(
                "expected an echo body, got status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }
}

/// What an echo backend received, as it reported it.
#[derive(Debug, Clone)]
pub struct Echo {
    /// The backend's name.
    pub backend: String,
    /// The method.
    pub method: String,
    /// The request target.
    pub uri: String,
    /// `HTTP/1.1` etc.
    pub version: String,
    /// Header fields in order, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Request body length.
    pub body_len: u64,
    /// The start of the request body (lossy text).
    pub body: String,
}

impl Echo {
    /// Parses the JSON an echo backend answers with.
    pub fn parse(body: &[u8]) -> Option<Echo> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        let headers = v
            .get("headers")?
            .as_array()?
            .iter()
            .filter_map(|pair| {
                let pair = pair.as_array()?;
                Some((
                    pair.first()?.as_str()?.to_owned(),
                    pair.get(1)?.as_str()?.to_owned(),
                ))
            })
            .collect();
        Some(Echo {
            backend: s("backend")?,
            method: s("method")?,
            uri: s("uri")?,
            version: s("version")?,
            headers,
            body_len: v.get("body_len")?.as_u64()?,
            body: s("body")?,
        })
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// True when header `name` was received.
    pub fn has(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
}

/// One keep-alive HTTP/1.1 connection.
#[derive(Debug)]
pub struct Conn {
    sender: SendRequest<ClientBody>,
    addr: SocketAddr,
}

impl Conn {
    /// Connects to `addr`; panics if the connection fails.
    pub async fn connect(addr: SocketAddr) -> Conn {
        Conn::try_connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"))
    }

    /// Connects to `addr`.
    pub async fn try_connect(addr: SocketAddr) -> Result<Conn, BoxError> {
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { sender, addr })
    }

    /// The `Host` value the shortcuts send: the proxy's `ip:port`, as curl would.
    pub fn default_host(&self) -> String {
        self.addr.to_string()
    }

    /// True once the server closed the connection.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends a request and returns the response head; the body is left to the caller.
    pub async fn send_streaming(
        &mut self,
        req: Request<ClientBody>,
    ) -> Result<http::Response<Incoming>, BoxError> {
        self.sender.ready().await?;
        Ok(self.sender.send_request(req).await?)
    }

    /// Sends a request and reads the whole response.
    pub async fn try_send(&mut self, req: Request<ClientBody>) -> Result<Resp, BoxError> {
        let resp = self.send_streaming(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Sends a request and reads the whole response; panics on a transport error.
    pub async fn send(&mut self, req: Request<ClientBody>) -> Resp {
        let what = format!("{} {}", req.method(), req.uri());
        self.try_send(req)
            .await
            .unwrap_or_else(|e| panic!("{what} via {}: {e:?}", self.addr))
    }

    /// `GET path` with `Host` set to `host`.
    pub async fn get_host(&mut self, host: &str, path: &str) -> Resp {
        self.send(req("GET", host, path).body(empty()).unwrap())
            .await
    }

    /// `GET path` with the default `Host`.
    pub async fn get(&mut self, path: &str) -> Resp {
        let host = self.default_host();
        self.get_host(&host, path).await
    }
}

/// Sends one request on a new connection.
pub async fn send(addr: SocketAddr, req: Request<ClientBody>) -> Resp {
    Conn::connect(addr).await.send(req).await
}

/// `GET path` with `Host: host` on a new connection.
pub async fn get_host(addr: SocketAddr, host: &str, path: &str) -> Resp {
    Conn::connect(addr).await.get_host(host, path).await
}

/// `GET path` on a new connection, `Host` being `addr`.
pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    Conn::connect(addr).await.get(path).await
}

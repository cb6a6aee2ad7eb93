//! The client side of the caching suite: one request per fresh HTTP/1.1 connection (hyper),
//! bounded by a deadline, and the response read in full.

use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::origin::SEQ;

/// A request to send through the proxy.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    method: Method,
    target: String,
    host: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Req {
    /// `GET target` for the suite's host.
    pub(crate) fn get(target: &str) -> Self {
        Self::new("GET", target)
    }

    /// `METHOD target` for the suite's host; any token is a method.
    pub(crate) fn new(method: &str, target: &str) -> Self {
        Req {
            method: Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET),
            target: target.to_owned(),
            host: super::HOST.to_owned(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Adds a field line.
    pub(crate) fn h(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Another `Host` (and so another origin, for the cache key).
    pub(crate) fn host(mut self, host: &str) -> Self {
        host.clone_into(&mut self.host);
        self
    }

    /// A request body.
    pub(crate) fn body(mut self, body: &str) -> Self {
        self.body = Bytes::copy_from_slice(body.as_bytes());
        self
    }
}

/// A response, read in full.
#[derive(Debug, Clone)]
pub(crate) struct Resp {
    /// The status code.
    pub(crate) status: u16,
    /// The header section.
    pub(crate) headers: HeaderMap,
    /// The content.
    pub(crate) body: Bytes,
}

impl Resp {
    /// The first value of `name`, when present and visible ASCII.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Which origin response this is ([`SEQ`]): `1` for the first the origin sent for the
    /// path.
    pub(crate) fn seq(&self) -> Option<usize> {
        self.header(SEQ).and_then(|v| v.trim().parse().ok())
    }

    /// The content as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `Age` field as delta-seconds.
    pub(crate) fn age(&self) -> Option<u64> {
        self.header("age").and_then(|v| v.trim().parse().ok())
    }

    /// This cache's member of `Cache-Status` (RFC 9211), when there is one.
    pub(crate) fn cache_status(&self) -> Option<CacheStatus> {
        self.headers
            .get_all("cache-status")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(CacheStatus::parse)
            .find(|m| m.name == super::CACHE_NAME)
    }

    /// `STATUS seq=N age=A "body" [Cache-Status: ...]`, for failure messages.
    pub(crate) fn summary(&self) -> String {
        let mut line = format!("{}", self.status);
        if let Some(seq) = self.seq() {
            line.push_str(&format!(" seq={seq}"));
        }
        if let Some(age) = self.header("age") {
            line.push_str(&format!(" age={age}"));
        }
        let text = self.text();
        let shown: String = text.chars().take(40).collect();
        line.push_str(&format!(" {shown:?}"));
        if let Some(status) = self.header("cache-status") {
            line.push_str(&format!(" [Cache-Status: {status}]"));
        }
        line
    }
}

/// One member of `Cache-Status` (RFC 9211 section 2).
#[derive(Debug, Clone, Default)]
pub(crate) struct CacheStatus {
    /// The cache's name.
    pub(crate) name: String,
    /// `hit`.
    pub(crate) hit: bool,
    /// `fwd=REASON`.
    pub(crate) fwd: Option<String>,
    /// `fwd-status=N`.
    pub(crate) fwd_status: Option<u16>,
    /// `stored`.
    pub(crate) stored: bool,
    /// `ttl=N`.
    pub(crate) ttl: Option<i64>,
}

impl CacheStatus {
    fn parse(member: &str) -> Option<Self> {
        let mut parts = member.split(';').map(str::trim);
        let name = parts.next()?.trim_matches('"').to_owned();
        let mut status = CacheStatus {
            name,
            ..CacheStatus::default()
        };
        for param in parts {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let value = value.trim_matches('"');
            match key {
                "hit" => status.hit = value != "?0",
                "stored" => status.stored = value != "?0",
                "fwd" => status.fwd = Some(value.to_owned()),
                "fwd-status" => status.fwd_status = value.parse().ok(),
                "ttl" => status.ttl = value.parse().ok(),
                _ => {}
            }
        }
        Some(status)
    }
}

/// Sends `req` to 127.0.0.1:`port` on a new connection and reads the whole response within
/// `budget`.
pub(crate) async fn send(port: u16, req: &Req, budget: Duration) -> Result<Resp> {
    tokio::time::timeout(budget, exchange(port, req))
        .await
        .with_context(|| format!("no complete response within {}s", budget.as_secs()))?
}

async fn exchange(port: u16, req: &Req) -> Result<Resp> {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .context("connecting to the proxy")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP/1.1 handshake")?;
    let driver = tokio::spawn(conn);
    let mut request = Request::new(Full::new(req.body.clone()));
    *request.method_mut() = req.method.clone();
    *request.uri_mut() = req.target.parse().context("request target")?;
    let headers = request.headers_mut();
    headers.insert(http::header::HOST, HeaderValue::from_str(&req.host)?);
    for (name, value) in &req.headers {
        headers.append(
            HeaderName::from_bytes(name.as_bytes())?,
            HeaderValue::from_str(value)?,
        );
    }
    let resp = sender
        .send_request(request)
        .await
        .context("sending the request")?;
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .context("reading the response body")?
        .to_bytes();
    driver.abort();
    Ok(Resp {
        status,
        headers: parts.headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_status_members() {
        let m = CacheStatus::parse("proxy-bin; fwd=uri-miss; fwd-status=200; ttl=60; stored")
            .unwrap_or_default();
        assert_eq!(m.name, "proxy-bin");
        assert!(!m.hit && m.stored);
        assert_eq!(m.fwd.as_deref(), Some("uri-miss"));
        assert_eq!((m.fwd_status, m.ttl), (Some(200), Some(60)));
        let m = CacheStatus::parse("proxy-bin; hit; ttl=-3").unwrap_or_default();
        assert!(m.hit && m.ttl == Some(-3));
    }
}

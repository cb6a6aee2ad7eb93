//! The scripted origin of the caching suite: a hyper HTTP/1.1 server on 127.0.0.1:0. Each
//! case registers the replies for its own paths ([`Origin::script`]); every request that
//! reaches the origin is recorded with its header section ([`Origin::seen`]), so a case can
//! tell a response served from the cache from one that went forward.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The field every origin response carries: how many requests for its path the origin had
/// answered, this one included (`1` for the first). A client reads it to tell which origin
/// response it was given.
pub(crate) const SEQ: &str = "x-origin-seq";

/// One scripted response. The origin adds `Date` (now) unless the reply sets one or asked for
/// none, `Content-Length` from the body unless the reply sets one, and [`SEQ`].
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
    date: bool,
    validate: bool,
    not_modified: Vec<(String, String)>,
    ranges: bool,
}

impl Reply {
    /// A response with `status` and `body`, no other field yet.
    pub(crate) fn new(status: u16, body: &str) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: Bytes::copy_from_slice(body.as_bytes()),
            date: true,
            validate: false,
            not_modified: Vec::new(),
            ranges: false,
        }
    }

    /// `200` with `body`.
    pub(crate) fn ok(body: &str) -> Self {
        Self::new(200, body)
    }

    /// Adds a field line (repeat the name for several lines).
    pub(crate) fn h(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `Cache-Control: value`.
    pub(crate) fn cc(self, value: &str) -> Self {
        self.h("cache-control", value)
    }

    /// No `Date` field at all.
    pub(crate) fn without_date(mut self) -> Self {
        self.date = false;
        self
    }

    /// Answers a matching `If-None-Match` (weak comparison with the reply's `ETag`) or, when
    /// there is none, an `If-Modified-Since` not earlier than the reply's `Last-Modified`, with
    /// `304`: the reply's fields less its content fields, plus [`Reply::on_304`].
    pub(crate) fn validated(mut self) -> Self {
        self.validate = true;
        self
    }

    /// A field line added to the `304` of a [`Reply::validated`] reply; a field of the same
    /// name from the reply itself is left out of the `304`.
    pub(crate) fn on_304(mut self, name: &str, value: &str) -> Self {
        self.validate = true;
        self.not_modified.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Serves one `Range: bytes=A-B` of a `200` reply as `206` (RFC 9110 section 14).
    pub(crate) fn ranged(mut self) -> Self {
        self.ranges = true;
        self
    }

    fn field(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the origin received.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    /// The method.
    pub(crate) method: Method,
    /// The path and query.
    pub(crate) target: String,
    /// The header section.
    pub(crate) headers: HeaderMap,
}

impl Seen {
    /// A field's value, when present and visible ASCII.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `METHOD target [If-None-Match: ..] [If-Modified-Since: ..]`, for failure messages.
    pub(crate) fn summary(&self) -> String {
        let mut line = format!("{} {}", self.method, self.target);
        for name in ["if-none-match", "if-modified-since", "range"] {
            if let Some(value) = self.header(name) {
                line.push_str(&format!(" [{name}: {value}]"));
            }
        }
        line
    }
}

#[derive(Default)]
struct State {
    scripts: HashMap<String, Script>,
    seen: Vec<Seen>,
}

struct Script {
    replies: Vec<Reply>,
    served: usize,
}

/// The running origin; the accept loop ends when it is dropped.
pub(crate) struct Origin {
    address: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: JoinHandle<()>,
}

impl Origin {
    /// Binds 127.0.0.1:0 and serves until dropped.
    pub(crate) async fn start() -> Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("binding the origin")?;
        let address = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, req)) }
                    });
                    // The cases set `Date` themselves (or leave it out on purpose).
                    let _ = hyper::server::conn::http1::Builder::new()
                        .auto_date_header(false)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Origin {
            address,
            state,
            accept,
        })
    }

    /// The port it listens on.
    pub(crate) fn port(&self) -> u16 {
        self.address.port()
    }

    /// Serves `replies` for `target` (path and query) in order; the last one repeats.
    pub(crate) fn script(&self, target: &str, replies: Vec<Reply>) {
        lock(&self.state)
            .scripts
            .insert(target.to_owned(), Script { replies, served: 0 });
    }

    /// Every request for `target` so far, oldest first.
    pub(crate) fn seen(&self, target: &str) -> Vec<Seen> {
        lock(&self.state)
            .seen
            .iter()
            .filter(|s| s.target == target)
            .cloned()
            .collect()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The scripted response to `req`, recorded first.
fn answer(state: &Mutex<State>, req: Request<Incoming>) -> Response<OriginBody> {
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let mut state = lock(state);
    state.seen.push(Seen {
        method: req.method().clone(),
        target: target.clone(),
        headers: req.headers().clone(),
    });
    let Some(script) = state.scripts.get_mut(&target) else {
        let mut resp = Response::new(OriginBody::full(Bytes::from_static(b"no script\n")));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return resp;
    };
    script.served += 1;
    let seq = script.served;
    let Some(reply) = script
        .replies
        .get(seq - 1)
        .or(script.replies.last())
        .cloned()
    else {
        return Response::new(OriginBody::full(Bytes::new()));
    };
    drop(state);
    build(&reply, req.headers(), seq)
}

fn build(reply: &Reply, request: &HeaderMap, seq: usize) -> Response<OriginBody> {
    if reply.validate && not_modified(reply, request) {
        return build_304(reply, seq);
    }
    let mut headers = fields(&reply.headers);
    let mut status = reply.status;
    let mut body = reply.body.clone();
    if reply.ranges
        && status == 200
        && let Some((first, last)) = request
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| byte_range(v, body.len()))
    {
        headers.insert(
            header::CONTENT_RANGE,
            value(&format!("bytes {first}-{last}/{}", body.len())),
        );
        body = body.slice(first..=last);
        status = 206;
    }
    finish(&mut headers, reply.date, seq);
    let explicit_length = headers.contains_key(header::CONTENT_LENGTH);
    let mut resp = Response::new(if explicit_length {
        OriginBody::length_as_written(body)
    } else {
        OriginBody::full(body)
    });
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    *resp.headers_mut() = headers;
    resp
}

/// RFC 9110 section 15.4.5: the `304` carries the fields the `200` would have, less content.
fn build_304(reply: &Reply, seq: usize) -> Response<OriginBody> {
    let replaced = |name: &str| {
        reply
            .not_modified
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    };
    let kept: Vec<(String, String)> = reply
        .headers
        .iter()
        .filter(|(n, _)| {
            !replaced(n)
                && !["content-length", "content-type", "content-range"]
                    .iter()
                    .any(|c| n.eq_ignore_ascii_case(c))
        })
        .chain(reply.not_modified.iter())
        .cloned()
        .collect();
    let mut headers = fields(&kept);
    finish(&mut headers, reply.date, seq);
    // An explicit Content-Length on a 304 (a case asks for one) goes out as written.
    let mut resp = Response::new(OriginBody::length_as_written(Bytes::new()));
    *resp.status_mut() = StatusCode::NOT_MODIFIED;
    *resp.headers_mut() = headers;
    resp
}

fn finish(headers: &mut HeaderMap, date: bool, seq: usize) {
    if date && !headers.contains_key(header::DATE) {
        headers.insert(header::DATE, value(&http_date(SystemTime::now())));
    }
    headers.insert(HeaderName::from_static(SEQ), HeaderValue::from(seq));
}

fn not_modified(reply: &Reply, request: &HeaderMap) -> bool {
    let text = |name: HeaderName| request.get(name).and_then(|v| v.to_str().ok());
    if let Some(tags) = text(header::IF_NONE_MATCH) {
        let Some(etag) = reply.field("etag") else {
            return false;
        };
        let weak = |t: &str| t.trim().trim_start_matches("W/").to_owned();
        return tags
            .split(',')
            .any(|t| t.trim() == "*" || weak(t) == weak(etag));
    }
    match (
        text(header::IF_MODIFIED_SINCE).and_then(|v| httpdate::parse_http_date(v).ok()),
        reply
            .field("last-modified")
            .and_then(|v| httpdate::parse_http_date(v).ok()),
    ) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

/// `bytes=A-B`, `bytes=A-` or `bytes=-N` within `len`, as inclusive offsets.
fn byte_range(value: &str, len: usize) -> Option<(usize, usize)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    let (first, last) = spec.split_once('-')?;
    let (first, last): (usize, usize) = match (first.trim(), last.trim()) {
        ("", n) => {
            let n: usize = n.parse().ok()?;
            (len.checked_sub(n.min(len))?, len.checked_sub(1)?)
        }
        (a, "") => (a.parse().ok()?, len.checked_sub(1)?),
        (a, b) => (
            a.parse().ok()?,
            b.parse::<usize>().ok()?.min(len.checked_sub(1)?),
        ),
    };
    (first <= last && last < len).then_some((first, last))
}

fn fields(lines: &[(String, String)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, v) in lines {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            headers.append(name, value(v));
        }
    }
    headers
}

fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("invalid"))
}

/// An IMF-fixdate.
pub(crate) fn http_date(time: SystemTime) -> String {
    httpdate::fmt_http_date(time)
}

/// A body that is either sized (hyper writes `Content-Length` from it) or deliberately
/// unsized, so that hyper sends the `Content-Length` the reply wrote, even on a `304`.
pub(crate) struct OriginBody {
    data: Option<Bytes>,
    sized: bool,
}

impl OriginBody {
    fn full(data: Bytes) -> Self {
        OriginBody {
            data: Some(data),
            sized: true,
        }
    }

    fn length_as_written(data: Bytes) -> Self {
        OriginBody {
            data: Some(data),
            sized: false,
        }
    }
}

impl Body for OriginBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(
            self.data
                .take()
                .filter(|d| !d.is_empty())
                .map(|d| Ok(Frame::data(d))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.sized && self.data.as_ref().is_none_or(Bytes::is_empty)
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.data, self.sized) {
            (Some(d), true) => SizeHint::with_exact(d.len() as u64),
            (None, true) => SizeHint::with_exact(0),
            (_, false) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_within_the_body() {
        assert_eq!(byte_range("bytes=2-5", 10), Some((2, 5)));
        assert_eq!(byte_range("bytes=-3", 10), Some((7, 9)));
        assert_eq!(byte_range("bytes=8-", 10), Some((8, 9)));
        assert_eq!(byte_range("bytes=8-100", 10), Some((8, 9)));
        assert_eq!(byte_range("bytes=20-30", 10), None);
    }

    /// One request on its own connection, read to the end: the exact octets the origin sends.
    async fn raw(port: u16, head: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .expect("connect");
        let request = format!("{head}Host: origin.test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
            .await
            .expect("in time")
            .expect("read");
        String::from_utf8_lossy(&out).to_ascii_lowercase()
    }

    /// The harness itself, without a proxy: the origin sends what the cases script, octet for
    /// octet where it matters (no Date when asked, hop-by-hop fields, a 304's Content-Length).
    #[tokio::test]
    async fn origin_answers_as_scripted() {
        let origin = Origin::start().await.expect("origin");
        let reply = Reply::ok("0123456789")
            .h("etag", "\"a\"")
            .h("connection", "x-foo")
            .h("x-foo", "1")
            .without_date()
            .ranged()
            .on_304("content-length", "999");
        origin.script("/v", vec![reply]);

        let full = raw(origin.port(), "GET /v HTTP/1.1\r\n").await;
        assert!(full.starts_with("http/1.1 200 ok\r\n"), "{full}");
        for line in [
            // `close` is hyper's own, for this test's `Connection: close`.
            "connection: x-foo",
            "x-foo: 1\r\n",
            "x-origin-seq: 1\r\n",
        ] {
            assert!(full.contains(line), "{line:?} missing in {full}");
        }
        assert!(!full.contains("date:"), "{full}");
        assert!(full.ends_with("\r\n\r\n0123456789"), "{full}");

        let not_modified = raw(
            origin.port(),
            "GET /v HTTP/1.1\r\nIf-None-Match: W/\"a\"\r\n",
        )
        .await;
        assert!(not_modified.starts_with("http/1.1 304 "), "{not_modified}");
        assert!(
            not_modified.contains("content-length: 999\r\n"),
            "{not_modified}"
        );
        assert!(
            not_modified.contains("x-origin-seq: 2\r\n"),
            "{not_modified}"
        );
        assert!(not_modified.ends_with("\r\n\r\n"), "{not_modified}");

        let part = raw(origin.port(), "GET /v HTTP/1.1\r\nRange: bytes=2-5\r\n").await;
        assert!(part.starts_with("http/1.1 206 "), "{part}");
        assert!(part.contains("content-range: bytes 2-5/10\r\n"), "{part}");
        assert!(part.ends_with("\r\n\r\n2345"), "{part}");

        let seen = origin.seen("/v");
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[1].header("if-none-match"), Some("W/\"a\""));
        assert!(origin.seen("/other").is_empty());
    }
}

//! A scripted origin for cache tests: each path answers from a [`Script`] (status, headers,
//! body shape, delay, and an optional `304 Not Modified` when `If-None-Match` matches), and every
//! request is recorded per path, so a test can assert exactly how many requests got past the
//! cache and which validators they carried.
//!
//! Scripts are looked up by method and path first, then by path alone; a path without a script
//! answers `404` with `no script`. Scripts can change while the origin runs (the next request
//! reads the new one), and [`Origin::kill`] stops it like a crashed process.
//!
//! | [`Content`] | body |
//! |---|---|
//! | `Bytes` | fixed bytes, with `Content-Length` |
//! | `EchoHeader(name)` | `name=value` of that request header (`-` when absent) |
//! | `Pattern { len, chunk, length }` | [`pattern`] bytes streamed in `chunk`-byte frames |
//! | `Paused { first, pause, rest }` | `first`, then a pause, then `rest` (no `Content-Length`) |

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::backend::Recorded;

/// What a scripted path answers with.
#[derive(Debug, Clone)]
pub struct Script {
    /// The status (default 200).
    pub status: u16,
    /// Response header fields, in order (repeatable names allowed).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub content: Content,
    /// Wait before the response head.
    pub delay: Duration,
    /// When set and the request's `If-None-Match` lists this script's `ETag` (or `*`): answer
    /// `304` with the `ETag` and these fields instead (a field named here replaces the `ETag`).
    pub not_modified: Option<Vec<(String, String)>>,
}

/// The shape of a scripted body.
#[derive(Debug, Clone)]
pub enum Content {
    /// Fixed bytes.
    Bytes(Bytes),
    /// `name=value` of the named request header, `name=-` when absent.
    EchoHeader(String),
    /// `len` bytes of [`pattern`], in frames of `chunk` bytes, with `Content-Length` when
    /// `length` is true (chunked otherwise).
    Pattern {
        /// Total bytes.
        len: usize,
        /// Bytes per frame.
        chunk: usize,
        /// Send `Content-Length`.
        length: bool,
    },
    /// `first`, then `pause`, then `rest`; chunked.
    Paused {
        /// The first frame.
        first: Bytes,
        /// The pause after it.
        pause: Duration,
        /// The remaining bytes, in one frame.
        rest: Bytes,
    },
}

impl Script {
    /// `200` with `body`.
    pub fn ok(body: impl Into<Bytes>) -> Script {
        Script {
            status: 200,
            headers: Vec::new(),
            content: Content::Bytes(body.into()),
            delay: Duration::ZERO,
            not_modified: None,
        }
    }

    /// `200` with a body of the given shape.
    pub fn content(content: Content) -> Script {
        Script {
            content,
            ..Script::ok("")
        }
    }

    /// Adds a response header field.
    pub fn header(mut self, name: &str, value: &str) -> Script {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets `Cache-Control`.
    pub fn cc(self, value: &str) -> Script {
        self.header("cache-control", value)
    }

    /// Sets the status.
    pub fn status(mut self, status: u16) -> Script {
        self.status = status;
        self
    }

    /// Waits `delay` before the response head.
    pub fn delay(mut self, delay: Duration) -> Script {
        self.delay = delay;
        self
    }

    /// Answers `304` with the `ETag` and `fields` when `If-None-Match` matches the `ETag`.
    pub fn not_modified(mut self, fields: &[(&str, &str)]) -> Script {
        self.not_modified = Some(
            fields
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        );
        self
    }

    fn etag(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("etag"))
            .map(|(_, v)| v.as_str())
    }
}

/// Deterministic, non-periodic-looking bytes for large bodies: byte `i` of every
/// [`Content::Pattern`] body.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(pattern_byte).collect()
}

fn pattern_byte(i: usize) -> u8 {
    ((i.wrapping_mul(31) ^ (i >> 12)) % 251) as u8
}

#[derive(Debug, Default)]
struct Shared {
    scripts: Mutex<HashMap<(Option<String>, String), Script>>,
    log: Mutex<Vec<Recorded>>,
}

#[derive(Debug)]
struct Life {
    accept: JoinHandle<()>,
    conns: Arc<Mutex<JoinSet<()>>>,
}

/// A scripted HTTP/1.1 origin on a loopback port.
#[derive(Debug)]
pub struct Origin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    life: Mutex<Option<Life>>,
}

impl Origin {
    /// Starts an origin with no scripts on a fresh loopback port.
    pub async fn start() -> Origin {
        let listener = bind("127.0.0.1:0".parse().unwrap()).expect("bind an origin");
        let origin = Origin {
            addr: listener.local_addr().unwrap(),
            shared: Arc::default(),
            life: Mutex::new(None),
        };
        origin.run(listener);
        origin
    }

    fn run(&self, listener: TcpListener) {
        let conns = Arc::new(Mutex::new(JoinSet::new()));
        let accept = tokio::spawn(accept_loop(listener, self.shared.clone(), conns.clone()));
        *self.life.lock().unwrap() = Some(Life { accept, conns });
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Scripts `path` (any method without a script of its own).
    pub fn set(&self, path: &str, script: Script) {
        self.shared
            .scripts
            .lock()
            .unwrap()
            .insert((None, path.to_owned()), script);
    }

    /// Scripts `method path`, ahead of the script for `path`.
    pub fn set_for(&self, method: &str, path: &str, script: Script) {
        self.shared
            .scripts
            .lock()
            .unwrap()
            .insert((Some(method.to_owned()), path.to_owned()), script);
    }

    /// Every request for `path` (any query), in arrival order.
    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        self.shared
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| path_of(&r.uri) == path)
            .cloned()
            .collect()
    }

    /// Requests for `path`, any method.
    pub fn count(&self, path: &str) -> usize {
        self.requests(path).len()
    }

    /// Requests for `path` with `method`.
    pub fn count_method(&self, method: &str, path: &str) -> usize {
        self.requests(path)
            .iter()
            .filter(|r| r.method == method)
            .count()
    }

    /// Every request received.
    pub fn total(&self) -> usize {
        self.shared.log.lock().unwrap().len()
    }

    /// Stops like a crashed process: the listener closes and every open connection is dropped.
    pub async fn kill(&self) {
        let life = self.life.lock().unwrap().take();
        let Some(life) = life else { return };
        life.accept.abort();
        let _ = life.accept.await;
        let mut conns = std::mem::take(&mut *life.conns.lock().unwrap());
        conns.shutdown().await;
    }
}

fn path_of(uri: &str) -> &str {
    uri.split_once('?').map_or(uri, |(p, _)| p)
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, conns: Arc<Mutex<JoinSet<()>>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let task = async move {
            let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        };
        let mut set = conns.lock().unwrap();
        while set.try_join_next().is_some() {}
        set.spawn(task);
    }
}

/// A response body fed by a task through a channel.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
    remaining: Option<u64>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(data)) => {
                if let Some(r) = &mut self.remaining {
                    *r = r.saturating_sub(data.len() as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

type RespBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let recorded = Recorded {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        version: format!("{:?}", req.version()),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    shared.log.lock().unwrap().push(recorded.clone());
    let path = req.uri().path().to_owned();
    let script = {
        let scripts = shared.scripts.lock().unwrap();
        scripts
            .get(&(Some(req.method().to_string()), path.clone()))
            .or_else(|| scripts.get(&(None, path)))
            .cloned()
    };
    // Read the request body to its end, as a real server would before answering.
    let _ = req.into_body().collect().await;
    let Some(script) = script else {
        let mut resp = Response::new(full(Bytes::from_static(b"no script")));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return Ok(resp);
    };
    if !script.delay.is_zero() {
        tokio::time::sleep(script.delay).await;
    }

    if let (Some(fields), Some(etag)) = (&script.not_modified, script.etag())
        && recorded
            .header("if-none-match")
            .is_some_and(|inm| inm.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        let mut resp = Response::new(full(Bytes::new()));
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        let h = resp.headers_mut();
        h.insert(header::ETAG, HeaderValue::from_str(etag).unwrap());
        // The first field of a name replaces (so a different `ETag` can be scripted), later
        // ones of the same name append.
        let mut seen: Vec<HeaderName> = Vec::new();
        for (n, v) in fields {
            let name = HeaderName::from_bytes(n.as_bytes()).unwrap();
            let value = HeaderValue::from_str(v).unwrap();
            if seen.contains(&name) {
                h.append(name, value);
            } else {
                h.insert(name.clone(), value);
                seen.push(name);
            }
        }
        return Ok(resp);
    }

    let body = match &script.content {
        Content::Bytes(b) => full(b.clone()),
        Content::EchoHeader(name) => {
            let value = recorded.header(name).unwrap_or("-");
            full(Bytes::from(format!("{name}={value}")))
        }
        Content::Pattern { len, chunk, length } => {
            let (tx, rx) = mpsc::channel(4);
            let (len, chunk) = (*len, (*chunk).max(1));
            tokio::spawn(async move {
                let all = Bytes::from(pattern(len));
                let mut at = 0;
                while at < len {
                    let end = (at + chunk).min(len);
                    if tx.send(all.slice(at..end)).await.is_err() {
                        return;
                    }
                    at = end;
                }
            });
            ChannelBody {
                rx,
                remaining: length.then_some(len as u64),
            }
            .boxed()
        }
        Content::Paused { first, pause, rest } => {
            let (tx, rx) = mpsc::channel(2);
            let (first, pause, rest) = (first.clone(), *pause, rest.clone());
            tokio::spawn(async move {
                if tx.send(first).await.is_err() {
                    return;
                }
                tokio::time::sleep(pause).await;
                let _ = tx.send(rest).await;
            });
            ChannelBody {
                rx,
                remaining: None,
            }
            .boxed()
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(script.status).unwrap();
    let h = resp.headers_mut();
    for (n, v) in &script.headers {
        h.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    Ok(resp)
}

fn full(bytes: Bytes) -> RespBody {
    http_body_util::Full::new(bytes).boxed()
}

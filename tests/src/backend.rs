//! Scripted upstream servers on `127.0.0.1:0`.
//!
//! In [`Mode::Echo`] a backend is a hyper HTTP/1.1 server that answers every request with a JSON
//! description of the request head it received (see [`crate::Echo`]) and an `x-backend: NAME`
//! header. Per request, these request headers change the answer:
//!
//! | header | effect |
//! |---|---|
//! | `x-delay-ms: N` | wait N ms (after reading the body) before answering |
//! | `x-body-delay-ms: N` | wait N ms before starting to read the body (upload backpressure) |
//! | `x-status: N` | answer with status N |
//! | `x-download: N` | answer with an N-byte body streamed from a static buffer |
//! | `x-response-header: Name: Value` | add this header to the response (repeatable) |
//! | `Connection: upgrade` + `Upgrade: P` | answer 101 and echo every byte afterwards |
//! | `x-refuse-upgrade: 1` | answer an upgrade request like any other |
//!
//! The request body is always read to the end and counted, never kept beyond 64 KiB. The other
//! modes misbehave at the connection level, and [`Backend::kill`] stops the accept loop *and*
//! every open connection, like a crashed process.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::body::StaticBody;

/// Most request-body bytes an echo keeps (and returns in `body`).
const KEEP_BODY: usize = 64 * 1024;

/// What a backend does with each connection it accepts (read when the connection is accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Serve HTTP/1.1 and echo each request.
    Echo,
    /// Read the request head, then reset the connection (RST) without answering.
    Reset,
    /// Read the request head, then close the connection (FIN) without answering.
    Close,
    /// Read the request head, answer with bytes that are not HTTP, and close.
    Garbage,
    /// Read the request head, write exactly these bytes, and close.
    Raw(&'static [u8]),
}

/// One request head as a backend received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The method.
    pub method: String,
    /// The request target (origin form: path and query).
    pub uri: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// Header fields in the order received, names lower-case.
    pub headers: Vec<(String, String)>,
}

impl Recorded {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
struct Shared {
    name: String,
    mode: Mutex<Mode>,
    delay: Mutex<Duration>,
    status: AtomicU16,
    accepts: AtomicUsize,
    completed: AtomicUsize,
    log: Mutex<Vec<Recorded>>,
}

/// One life of a backend between start (or restart) and kill.
#[derive(Debug)]
struct Life {
    accept: JoinHandle<()>,
    conns: Arc<Mutex<JoinSet<()>>>,
}

/// A scripted upstream server.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    life: Mutex<Option<Life>>,
}

type RespBody = BoxBody<Bytes, Infallible>;

impl Backend {
    /// Starts an echo backend called `name` on a fresh loopback port.
    pub async fn start(name: &str) -> Backend {
        Backend::start_mode(name, Mode::Echo).await
    }

    /// Starts a backend in `mode`.
    pub async fn start_mode(name: &str, mode: Mode) -> Backend {
        let listener = bind("127.0.0.1:0".parse().unwrap()).expect("bind a backend");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            mode: Mutex::new(mode),
            delay: Mutex::new(Duration::ZERO),
            status: AtomicU16::new(200),
            accepts: AtomicUsize::new(0),
            completed: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
        });
        let backend = Backend {
            addr,
            shared,
            life: Mutex::new(None),
        };
        backend.run(listener);
        backend
    }

    /// Starts `n` echo backends named `prefix0`, `prefix1`, ...
    pub async fn start_many(prefix: &str, n: usize) -> Vec<Backend> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            out.push(Backend::start(&format!("{prefix}{i}")).await);
        }
        out
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

    /// The name sent in `x-backend`.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Changes what new connections get.
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// Delays every answer by `delay` (on top of any `x-delay-ms`).
    pub fn set_delay(&self, delay: Duration) {
        *self.shared.delay.lock().unwrap() = delay;
    }

    /// Answers every request with `status` unless `x-status` says otherwise.
    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::Relaxed);
    }

    /// TCP connections accepted so far, in every mode.
    pub fn accepts(&self) -> usize {
        self.shared.accepts.load(Ordering::Relaxed)
    }

    /// HTTP requests received so far (counted when the head arrives).
    pub fn hits(&self) -> usize {
        self.shared.log.lock().unwrap().len()
    }

    /// Requests whose body was received to its end without error (upgrades excluded).
    pub fn completed(&self) -> usize {
        self.shared.completed.load(Ordering::Relaxed)
    }

    /// Every request head received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.log.lock().unwrap().clone()
    }

    /// The most recent request head.
    pub fn last_request(&self) -> Option<Recorded> {
        self.shared.log.lock().unwrap().last().cloned()
    }

    /// Stops like a crashed process: the listener closes (new connections are refused) and
    /// every open connection, idle or busy, is dropped. Returns once all of it is gone.
    pub async fn kill(&self) {
        let life = self.life.lock().unwrap().take();
        let Some(life) = life else { return };
        life.accept.abort();
        let _ = life.accept.await;
        let mut conns = std::mem::take(&mut *life.conns.lock().unwrap());
        conns.shutdown().await;
    }

    /// Starts again on the same port after [`Backend::kill`]; the request log is kept.
    pub async fn restart(&self) {
        self.kill().await;
        let mut last = None;
        for _ in 0..100 {
            match bind(self.addr) {
                Ok(l) => {
                    self.run(l);
                    return;
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cannot rebind {}: {last:?}", self.addr);
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, conns: Arc<Mutex<JoinSet<()>>>) {
    // Runs until the backend is killed or the test's runtime ends.
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.accepts.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let mode = *shared.mode.lock().unwrap();
        let task = serve(stream, mode, shared.clone(), conns.clone());
        let mut set = conns.lock().unwrap();
        while set.try_join_next().is_some() {}
        set.spawn(task);
    }
}

async fn serve(
    mut stream: TcpStream,
    mode: Mode,
    shared: Arc<Shared>,
    conns: Arc<Mutex<JoinSet<()>>>,
) {
    match mode {
        Mode::Echo => {
            let svc =
                hyper::service::service_fn(move |req| handle(shared.clone(), conns.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        }
        Mode::Reset => {
            read_head(&mut stream).await;
            let _ = stream.set_zero_linger();
            drop(stream);
        }
        Mode::Close => {
            read_head(&mut stream).await;
            let _ = stream.shutdown().await;
        }
        Mode::Garbage => {
            read_head(&mut stream).await;
            let _ = stream
                .write_all(b"SSH-2.0-OpenSSH_9.6\r\nthis is not HTTP at all\r\n\r\n")
                .await;
            let _ = stream.shutdown().await;
        }
        Mode::Raw(bytes) => {
            read_head(&mut stream).await;
            let _ = stream.write_all(bytes).await;
            let _ = stream.shutdown().await;
        }
    }
}

/// Reads until the end of a request head, EOF, 64 KiB or 5 s, whichever comes first.
async fn read_head(stream: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while buf.len() < 64 * 1024 && !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
}

fn header_str<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn handle(
    shared: Arc<Shared>,
    conns: Arc<Mutex<JoinSet<()>>>,
    mut req: Request<Incoming>,
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

    let delay = *shared.delay.lock().unwrap()
        + Duration::from_millis(
            header_str(&req, "x-delay-ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        );
    let status = header_str(&req, "x-status")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| shared.status.load(Ordering::Relaxed));
    let download: Option<u64> = header_str(&req, "x-download").and_then(|v| v.parse().ok());
    let extra: Vec<(HeaderName, HeaderValue)> = req
        .headers()
        .get_all("x-response-header")
        .iter()
        .filter_map(|v| {
            let (n, v) = v.to_str().ok()?.split_once(':')?;
            Some((
                HeaderName::from_bytes(n.trim().as_bytes()).ok()?,
                HeaderValue::from_str(v.trim()).ok()?,
            ))
        })
        .collect();
    let name = HeaderValue::from_str(&shared.name).unwrap();

    let upgrade = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let refuse = req.headers().contains_key("x-refuse-upgrade");
    let protocol = req.headers().get(header::UPGRADE).cloned();
    if let (true, false, Some(protocol)) = (upgrade, refuse, protocol) {
        let on = hyper::upgrade::on(&mut req);
        conns.lock().unwrap().spawn(async move {
            let Ok(upgraded) = on.await else { return };
            let mut io = TokioIo::new(upgraded);
            let mut buf = vec![0u8; 16 * 1024];
            // Echo until the peer closes (or the backend is killed).
            loop {
                match io.read(&mut buf).await {
                    Ok(n) if n > 0 => {
                        if io.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                    _ => return,
                }
            }
        });
        let mut resp = Response::new(Full::new(Bytes::new()).boxed());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        resp.headers_mut().insert(header::UPGRADE, protocol);
        resp.headers_mut().insert("x-backend", name);
        return Ok(resp);
    }

    let body_delay = header_str(&req, "x-body-delay-ms")
        .and_then(|v| v.parse().ok())
        .map_or(Duration::ZERO, Duration::from_millis);
    if !body_delay.is_zero() {
        tokio::time::sleep(body_delay).await;
    }
    // Count the body to the end, keeping only its start.
    let mut body = req.into_body();
    let mut body_len: u64 = 0;
    let mut kept = Vec::new();
    let mut complete = true;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            complete = false;
            break;
        };
        if let Some(data) = frame.data_ref() {
            body_len += data.len() as u64;
            let room = KEEP_BODY.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    if complete {
        shared.completed.fetch_add(1, Ordering::Relaxed);
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let body: RespBody = match download {
        Some(n) => StaticBody::new(n).boxed(),
        None => {
            let echo = serde_json::json!({
                "backend": shared.name,
                "method": recorded.method,
                "uri": recorded.uri,
                "version": recorded.version,
                "headers": recorded.headers,
                "body_len": body_len,
                "body": String::from_utf8_lossy(&kept),
            });
            Full::new(Bytes::from(echo.to_string())).boxed()
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let h = resp.headers_mut();
    h.insert("x-backend", name);
    if download.is_none() {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    for (n, v) in extra {
        h.append(n, v);
    }
    Ok(resp)
}

//! HTTP/3 test support: an h3 client over quinn trusting a [`TestCa`], with streamed bodies,
//! trailers and large-body checks that hold nothing but a checksum, plus [`RawH3`], a hand-made
//! HTTP/3 request path for what the h3 client refuses to send (header sections above the
//! server's limit, CONNECT without `:scheme`/`:path`).
//!
//! ```text
//!   H3Client ──QUIC (h3)──▶ TestProxy's HTTP/3 endpoint ──▶ Backend / H2Backend
//!   RawH3    ──QUIC, frames and QPACK written by hand──▶ the same endpoint
//! ```
//!
//! Every client binds `127.0.0.1:0`; every wait is bounded. The rustls configuration is built
//! with the aws-lc-rs provider explicitly (the workspace compiles no other). By default
//! sessions are not resumed, so the certificate a test sees is the one the proxy chose for that
//! handshake; [`H3Client::resuming`] keeps session tickets and offers 0-RTT.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use h3::client::{RequestStream, SendRequest};
use h3::error::ConnectionError;
use http::{HeaderMap, Request, StatusCode};
use quinn::crypto::rustls::QuicClientConfig;
use rustls_pki_types::CertificateDer;
use tokio::task::JoinHandle;

use crate::client::{BoxError, Echo};
use crate::tls::{Fnv, HANDSHAKE_TIMEOUT, TestCa};

/// How long one request/response exchange of the helpers here may take.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The h3 request sender of an [`H3Conn`]; clone it to send from other tasks.
pub type H3Sender = SendRequest<h3_quinn::OpenStreams, Bytes>;

/// One HTTP/3 request stream, both halves.
pub type H3Stream = RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

// ---------------------------------------------------------------------------------------------
// Client

/// A QUIC client endpoint on `127.0.0.1:0` offering ALPN `h3` and trusting one test CA.
#[derive(Clone)]
pub struct H3Client {
    endpoint: quinn::Endpoint,
}

impl std::fmt::Debug for H3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H3Client")
            .field("local", &self.endpoint.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl H3Client {
    /// A client trusting `ca`, doing a full handshake on every connection.
    pub fn trusting(ca: &TestCa) -> H3Client {
        H3Client::build(ca, false)
    }

    /// A client trusting `ca` that keeps the session tickets it is given and offers early
    /// data (0-RTT) when it reconnects with [`H3Client::connect_0rtt`].
    pub fn resuming(ca: &TestCa) -> H3Client {
        H3Client::build(ca, true)
    }

    /// A client trusting `ca` that presents `identity` as its client certificate (mTLS).
    pub fn with_identity(ca: &TestCa, identity: &crate::tls::Issued) -> H3Client {
        H3Client::build_with(ca, false, Some(identity))
    }

    fn build(ca: &TestCa, resume: bool) -> H3Client {
        H3Client::build_with(ca, resume, None)
    }

    fn build_with(ca: &TestCa, resume: bool, identity: Option<&crate::tls::Issued>) -> H3Client {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("aws-lc-rs supports TLS 1.3")
            .with_root_certificates(ca.roots());
        let mut tls = match identity {
            None => builder.with_no_client_auth(),
            Some(id) => builder
                .with_client_auth_cert(id.chain(), id.key())
                .expect("a usable client certificate"),
        };
        tls.alpn_protocols = vec![b"h3".to_vec()];
        if resume {
            tls.enable_early_data = true;
        } else {
            tls.resumption = rustls::client::Resumption::disabled();
        }
        let quic = QuicClientConfig::try_from(Arc::new(tls)).expect("a QUIC-capable TLS config");
        let mut endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("bind a QUIC client");
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
        H3Client { endpoint }
    }

    /// A QUIC connection to `addr` for `server_name` (SNI, and the name the certificate is
    /// verified for), without HTTP/3 on it. Bounded by [`HANDSHAKE_TIMEOUT`].
    pub async fn connect_quic(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<quinn::Connection, BoxError> {
        let connecting = self.endpoint.connect(addr, server_name)?;
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
            Ok(conn) => Ok(conn?),
            Err(_) => Err(format!("QUIC handshake with {addr} for {server_name} timed out").into()),
        }
    }

    /// An HTTP/3 connection to `addr` for `server_name`.
    pub async fn connect(&self, addr: SocketAddr, server_name: &str) -> Result<H3Conn, BoxError> {
        let quic = self.connect_quic(addr, server_name).await?;
        H3Conn::start(quic).await
    }

    /// A QUIC connection that can send early data (0-RTT) at once when the client holds a
    /// session ticket for `server_name` that allows it ([`H3Client::resuming`] only). The
    /// second value resolves, once the handshake completes, to whether the server accepted the
    /// early data; it is `None` when 0-RTT was not possible, and the connection then did a
    /// full handshake.
    pub async fn connect_quic_0rtt(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<(quinn::Connection, Option<quinn::ZeroRttAccepted>), BoxError> {
        let connecting = self.endpoint.connect(addr, server_name)?;
        match connecting.into_0rtt() {
            Ok((quic, accepted)) => Ok((quic, Some(accepted))),
            Err(connecting) => {
                let quic = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting)
                    .await
                    .map_err(|_| "QUIC handshake timed out")??;
                Ok((quic, None))
            }
        }
    }

    /// [`H3Client::connect_quic_0rtt`] with HTTP/3 started on the connection: requests sent
    /// before the handshake completes go out as early data.
    pub async fn connect_0rtt(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<(H3Conn, Option<quinn::ZeroRttAccepted>), BoxError> {
        let (quic, accepted) = self.connect_quic_0rtt(addr, server_name).await?;
        Ok((H3Conn::start(quic).await?, accepted))
    }

    /// Waits (up to 5 s) until every connection of this client is closed and acknowledged.
    pub async fn wait_idle(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.endpoint.wait_idle()).await;
    }
}

/// One HTTP/3 client connection; its h3 driver runs in a background task.
///
/// h3 closes a connection when the last [`H3Sender`] is dropped, so this keeps one for as
/// long as it lives.
pub struct H3Conn {
    quic: quinn::Connection,
    sender: H3Sender,
    driver: JoinHandle<ConnectionError>,
}

impl std::fmt::Debug for H3Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H3Conn")
            .field("remote", &self.quic.remote_address())
            .field("closed", &self.driver.is_finished())
            .finish_non_exhaustive()
    }
}

impl Drop for H3Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl H3Conn {
    /// Starts HTTP/3 (control and QPACK streams, SETTINGS) on an established connection.
    pub async fn start(quic: quinn::Connection) -> Result<H3Conn, BoxError> {
        let setup = h3::client::new(h3_quinn::Connection::new(quic.clone()));
        let (mut driver, sender) = tokio::time::timeout(HANDSHAKE_TIMEOUT, setup)
            .await
            .map_err(|_| "HTTP/3 connection setup timed out")??;
        let driver = tokio::spawn(async move { poll_fn(|cx| driver.poll_close(cx)).await });
        Ok(H3Conn {
            quic,
            sender,
            driver,
        })
    }

    /// The QUIC connection underneath.
    pub fn quic(&self) -> &quinn::Connection {
        &self.quic
    }

    /// A sender for requests on this connection, for use from other tasks.
    pub fn sender(&self) -> H3Sender {
        self.sender.clone()
    }

    /// The certificate chain the server presented, leaf first.
    pub fn peer_certificates(&self) -> Vec<CertificateDer<'static>> {
        self.quic
            .peer_identity()
            .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
            .map(|chain| *chain)
            .unwrap_or_default()
    }

    /// The leaf certificate the server presented.
    pub fn peer_leaf(&self) -> CertificateDer<'static> {
        self.peer_certificates()
            .into_iter()
            .next()
            .expect("the server presented a certificate")
    }

    /// True once the h3 driver has stopped: the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.driver.is_finished()
    }

    /// Waits up to `timeout` for the connection to close; returns whether it did.
    pub async fn closed_within(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.quic.closed())
            .await
            .is_ok()
    }

    /// Opens a request stream and sends `req`'s header section; the body, trailers and the
    /// end of the request are up to the caller.
    pub async fn open(&self, req: Request<()>) -> Result<H3Stream, BoxError> {
        Ok(self.sender().send_request(req).await?)
    }

    /// Sends `req` with `body` (one DATA frame per chunk) and `trailers`, and reads the whole
    /// response (see [`send_on`]).
    pub async fn send(
        &self,
        req: Request<()>,
        body: Vec<Bytes>,
        trailers: Option<HeaderMap>,
    ) -> Result<H3Response, BoxError> {
        send_on(self.sender(), req, body, trailers).await
    }

    /// `GET uri` without a body (`uri` absolute: it gives `:scheme` and `:authority`).
    pub async fn get(&self, uri: &str) -> Result<H3Response, BoxError> {
        self.send(get(uri), Vec::new(), None).await
    }

    /// Closes the connection at once with H3_NO_ERROR (0x100).
    pub fn close(&self) {
        self.quic.close(quinn::VarInt::from_u32(0x100), b"done");
    }
}

/// A `GET uri` request head.
pub fn get(uri: &str) -> Request<()> {
    Request::builder().uri(uri).body(()).unwrap()
}

/// A request head: `method uri` with `headers`.
pub fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::builder().method(method).uri(uri);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Exchanges

/// A response read to its end over HTTP/3.
#[derive(Debug, Clone)]
pub struct H3Response {
    /// The status.
    pub status: StatusCode,
    /// The header fields.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// The trailer fields, if the response ended with them.
    pub trailers: Option<HeaderMap>,
}

impl H3Response {
    /// The first value of header `name`, if text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The value of trailer `name`, if text.
    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .as_ref()
            .and_then(|t| t.get(name))
            .and_then(|v| v.to_str().ok())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The echo backend's description of the request; panics if the body is not one.
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

/// Sends `req` on a new stream of `sender`: `body` as one DATA frame per chunk, then
/// `trailers` if any, then the end of the stream; reads the whole response. Bounded by
/// [`EXCHANGE_TIMEOUT`].
///
/// A server may answer before it has read the whole request and stop the request stream
/// (RFC 9114 section 4.1); the response is then still read, and a failure to send the rest of
/// the request is reported only when no response arrives.
pub async fn send_on(
    mut sender: H3Sender,
    req: Request<()>,
    body: Vec<Bytes>,
    trailers: Option<HeaderMap>,
) -> Result<H3Response, BoxError> {
    let exchange = async {
        let mut stream = sender.send_request(req).await?;
        let sent = async {
            for chunk in body {
                stream.send_data(chunk).await?;
            }
            if let Some(t) = trailers {
                stream.send_trailers(t).await?;
            }
            stream.finish().await
        }
        .await;
        match (read_response(&mut stream).await, sent) {
            (Ok(resp), _) => Ok(resp),
            (Err(read), Ok(())) => Err(read),
            (Err(read), Err(send)) => {
                Err(format!("sending the request failed ({send}); then reading: {read}").into())
            }
        }
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .map_err(|_| BoxError::from("HTTP/3 exchange timed out"))?
}

/// Reads a response head, its whole body and its trailers from `stream`.
pub async fn read_response(stream: &mut H3Stream) -> Result<H3Response, BoxError> {
    let head = stream.recv_response().await?;
    let mut body = BytesMut::new();
    while let Some(mut chunk) = stream.recv_data().await? {
        let n = chunk.remaining();
        body.put(chunk.copy_to_bytes(n));
    }
    let trailers = stream.recv_trailers().await?;
    let (parts, ()) = head.into_parts();
    Ok(H3Response {
        status: parts.status,
        headers: parts.headers,
        body: body.freeze(),
        trailers,
    })
}

/// Reads the rest of a body from `stream`, handing each chunk with its offset to `each`
/// and keeping nothing; returns the length.
pub async fn read_body_with(
    stream: &mut H3Stream,
    mut each: impl FnMut(u64, &[u8]),
) -> Result<u64, BoxError> {
    let mut len = 0u64;
    while let Some(mut chunk) = stream.recv_data().await? {
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            each(len, part);
            len += n as u64;
            chunk.advance(n);
        }
    }
    Ok(len)
}

/// What a body streamed through [`read_body_summary`] turned out to be.
#[derive(Debug, Clone, Copy)]
pub struct BodySummary {
    /// Its length.
    pub len: u64,
    /// The offset of the first byte that differs from [`crate::tls::pattern`], if any.
    pub pattern_mismatch: Option<u64>,
    /// The offset of the first byte that is not `x` (the [`crate::StaticBody`] byte), if any.
    pub static_mismatch: Option<u64>,
    /// When the first non-empty chunk arrived.
    pub first_data_at: Option<tokio::time::Instant>,
}

/// Bytes compared in one slice comparison by the body checks.
const CHECK_RUN: usize = 64 * 1024;

/// The pattern from offset 0, one period longer than a run, so every run of the pattern is
/// a slice of it.
fn pattern_reference() -> &'static [u8] {
    static REFERENCE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    REFERENCE.get_or_init(|| crate::tls::pattern(0, CHECK_RUN + 251).to_vec())
}

/// Where `data`, found at `offset` of a body, first departs from the pattern. Compares whole
/// runs as slices (a `memcmp`, fast even in debug builds) and looks byte by byte only at a
/// run that differs.
fn first_pattern_mismatch(offset: u64, data: &[u8]) -> Option<u64> {
    let reference = pattern_reference();
    let mut at = offset;
    for run in data.chunks(CHECK_RUN) {
        let start = usize::try_from(at % 251).unwrap();
        if run != &reference[start..start + run.len()] {
            return crate::tls::pattern_mismatch(at, run);
        }
        at += run.len() as u64;
    }
    None
}

/// Where `data`, found at `offset` of a body, first holds a byte other than `x`.
fn first_static_mismatch(offset: u64, data: &[u8]) -> Option<u64> {
    static XS: [u8; CHECK_RUN] = [b'x'; CHECK_RUN];
    let mut at = offset;
    for run in data.chunks(CHECK_RUN) {
        if run != &XS[..run.len()] {
            return run.iter().position(|b| *b != b'x').map(|i| at + i as u64);
        }
        at += run.len() as u64;
    }
    None
}

/// Reads the rest of a body, keeping only its length and where it first departs from each
/// of the two test bodies (so 100 MiB cost no memory and little time).
pub async fn read_body_summary(stream: &mut H3Stream) -> Result<BodySummary, BoxError> {
    let (mut pattern_mismatch, mut static_mismatch) = (None, None);
    let mut first_data_at = None;
    let len = read_body_with(stream, |offset, data| {
        if first_data_at.is_none() && !data.is_empty() {
            first_data_at = Some(tokio::time::Instant::now());
        }
        if pattern_mismatch.is_none() {
            pattern_mismatch = first_pattern_mismatch(offset, data);
        }
        if static_mismatch.is_none() {
            static_mismatch = first_static_mismatch(offset, data);
        }
    })
    .await?;
    Ok(BodySummary {
        len,
        pattern_mismatch,
        static_mismatch,
        first_data_at,
    })
}

/// Sends `len` bytes of [`crate::tls::pattern`] on `stream` in `chunk`-byte DATA frames (at
/// the pace QUIC flow control allows); returns their [`Fnv`] checksum. Does not end the stream.
pub async fn send_pattern(stream: &mut H3Stream, len: u64, chunk: usize) -> Result<u64, BoxError> {
    let mut fnv = Fnv::default();
    let mut sent = 0u64;
    while sent < len {
        let n = usize::try_from((len - sent).min(chunk as u64)).unwrap();
        let data = crate::tls::pattern(sent, n);
        fnv.update(&data);
        stream.send_data(data).await?;
        sent += n as u64;
    }
    Ok(fnv.value())
}

// ---------------------------------------------------------------------------------------------
// HTTP/3 by hand

/// HTTP/3 frame types (RFC 9114 section 7.2).
const FRAME_DATA: u64 = 0x00;
const FRAME_HEADERS: u64 = 0x01;
const FRAME_SETTINGS: u64 = 0x04;

/// An HTTP/3 session written by hand on a QUIC connection: a client control stream with an
/// empty SETTINGS frame, and requests whose header sections are QPACK literals without
/// Huffman coding or table references, so a test can send what the h3 client would refuse
/// to (a section above the server's `SETTINGS_MAX_FIELD_SECTION_SIZE`, an authority-form
/// CONNECT, names in upper case).
///
/// The server's own control and QPACK streams are left unread: nothing on them is needed.
#[derive(Debug)]
pub struct RawH3 {
    conn: quinn::Connection,
    /// Kept open: closing the control stream is a connection error (RFC 9114 section 6.2.1).
    _control: quinn::SendStream,
}

/// A response as [`RawH3`] read it.
#[derive(Debug, Clone)]
pub struct RawH3Response {
    /// The `:status` of the first HEADERS frame, if one arrived.
    pub status: Option<u16>,
    /// The concatenated DATA frame payloads.
    pub body: Vec<u8>,
    /// The application error code of a stream reset (RESET_STREAM) that ended the response.
    pub reset: Option<u64>,
}

impl RawH3 {
    /// Opens the client control stream (type 0x00) with an empty SETTINGS frame.
    pub async fn start(conn: quinn::Connection) -> Result<RawH3, BoxError> {
        let mut control = conn.open_uni().await?;
        let mut out = BytesMut::new();
        put_varint(&mut out, 0x00);
        put_frame(&mut out, FRAME_SETTINGS, &[]);
        control.write_all(&out).await?;
        Ok(RawH3 {
            conn,
            _control: control,
        })
    }

    /// The QUIC connection underneath.
    pub fn quic(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Sends one request: a HEADERS frame with `fields` in order (pseudo-header fields
    /// included, names as given), `body` as one DATA frame if not empty, then the end of the
    /// stream; reads the response until the stream ends or is reset. Bounded by
    /// [`EXCHANGE_TIMEOUT`].
    pub async fn request(
        &self,
        fields: &[(&str, &str)],
        body: &[u8],
    ) -> Result<RawH3Response, BoxError> {
        let exchange = async {
            let (mut tx, mut rx) = self.conn.open_bi().await?;
            let mut out = BytesMut::new();
            put_frame(&mut out, FRAME_HEADERS, &encode_field_section(fields));
            if !body.is_empty() {
                put_frame(&mut out, FRAME_DATA, body);
            }
            // The server may answer (431) and stop reading before all of it is sent.
            let _ = tx.write_all(&out).await;
            let _ = tx.finish();
            read_raw_response(&mut rx).await
        };
        tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
            .await
            .map_err(|_| BoxError::from("raw HTTP/3 exchange timed out"))?
    }
}

/// Reads a request stream's response bytes to their end (or reset) and parses the frames.
async fn read_raw_response(rx: &mut quinn::RecvStream) -> Result<RawH3Response, BoxError> {
    let mut bytes = Vec::new();
    let mut reset = None;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match rx.read(&mut buf).await {
            Ok(Some(n)) => bytes.extend_from_slice(&buf[..n]),
            Ok(None) => break,
            Err(quinn::ReadError::Reset(code)) => {
                reset = Some(code.into_inner());
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut rest = Bytes::from(bytes);
    let (mut status, mut body) = (None, Vec::new());
    while rest.has_remaining() {
        let (Some(kind), Some(len)) = (get_varint(&mut rest), get_varint(&mut rest)) else {
            return Err("truncated frame header".into());
        };
        let len = usize::try_from(len)?;
        if rest.remaining() < len {
            // A reset can cut a frame short.
            break;
        }
        let payload = rest.split_to(len);
        match kind {
            FRAME_HEADERS if status.is_none() => status = Some(decode_status(payload)?),
            FRAME_DATA => body.extend_from_slice(&payload),
            // Trailers, and reserved (grease) frame types that must be ignored.
            _ => {}
        }
    }
    Ok(RawH3Response {
        status,
        body,
        reset,
    })
}

/// A QUIC variable-length integer (RFC 9000 section 16).
fn put_varint(out: &mut BytesMut, v: u64) {
    if v < 1 << 6 {
        out.put_u8(v as u8);
    } else if v < 1 << 14 {
        out.put_u16(0x4000 | v as u16);
    } else if v < 1 << 30 {
        out.put_u32(0x8000_0000 | v as u32);
    } else {
        out.put_u64(0xc000_0000_0000_0000 | v);
    }
}

fn get_varint(buf: &mut Bytes) -> Option<u64> {
    if !buf.has_remaining() {
        return None;
    }
    let len = 1usize << (buf.chunk()[0] >> 6);
    if buf.remaining() < len {
        return None;
    }
    let mut v = u64::from(buf.get_u8() & 0x3f);
    for _ in 1..len {
        v = (v << 8) | u64::from(buf.get_u8());
    }
    Some(v)
}

fn put_frame(out: &mut BytesMut, kind: u64, payload: &[u8]) {
    put_varint(out, kind);
    put_varint(out, payload.len() as u64);
    out.put_slice(payload);
}

/// An HPACK/QPACK prefixed integer (RFC 7541 section 5.1) in the low `bits` of a first byte
/// whose high bits are `flags`.
fn put_prefix_int(out: &mut BytesMut, bits: u8, flags: u8, v: u64) {
    let max = (1u64 << bits) - 1;
    if v < max {
        out.put_u8(flags | v as u8);
        return;
    }
    out.put_u8(flags | max as u8);
    let mut rest = v - max;
    while rest >= 128 {
        out.put_u8((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.put_u8(rest as u8);
}

fn get_prefix_int(buf: &mut Bytes, bits: u8) -> Option<(u8, u64)> {
    if !buf.has_remaining() {
        return None;
    }
    let first = buf.get_u8();
    let max = (1u64 << bits) - 1;
    let flags = first.checked_shr(u32::from(bits)).unwrap_or(0);
    let mut v = u64::from(first) & max;
    if v < max {
        return Some((flags, v));
    }
    let mut shift = 0;
    loop {
        if !buf.has_remaining() || shift > 56 {
            return None;
        }
        let b = buf.get_u8();
        v += u64::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Some((flags, v));
        }
    }
}

/// A QPACK field section (RFC 9204 section 4.5) of literal field lines with literal names,
/// no Huffman coding, no table references (Required Insert Count 0, Base 0).
fn encode_field_section(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u8(0);
    out.put_u8(0);
    for (name, value) in fields {
        // 001N H + 3-bit name length; then H + 7-bit value length.
        put_prefix_int(&mut out, 3, 0b0010_0000, name.len() as u64);
        out.put_slice(name.as_bytes());
        put_prefix_int(&mut out, 7, 0, value.len() as u64);
        out.put_slice(value.as_bytes());
    }
    out.to_vec()
}

/// `:status` values of the QPACK static table (RFC 9204 appendix A), by index.
const STATIC_STATUS: &[(u64, u16)] = &[
    (24, 103),
    (25, 200),
    (26, 304),
    (27, 404),
    (28, 503),
    (63, 100),
    (64, 204),
    (65, 206),
    (66, 302),
    (67, 400),
    (68, 403),
    (69, 421),
    (70, 425),
    (71, 500),
];

/// The `:status` of a response header section: its first field line, which h3 writes as a
/// static-table reference or a literal with a static name reference to a `:status` entry.
fn decode_status(mut section: Bytes) -> Result<u16, BoxError> {
    let (Some(_), Some(_)) = (
        get_prefix_int(&mut section, 8),
        get_prefix_int(&mut section, 7),
    ) else {
        return Err("truncated field section prefix".into());
    };
    let Some(&first) = section.chunk().first() else {
        return Err("empty field section".into());
    };
    if first & 0b1100_0000 == 0b1100_0000 {
        // Indexed field line, static table.
        let (_, index) = get_prefix_int(&mut section, 6).ok_or("truncated index")?;
        return STATIC_STATUS
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, s)| *s)
            .ok_or_else(|| format!("static entry {index} is not a :status").into());
    }
    if first & 0b1101_0000 == 0b0101_0000 {
        // Literal field line with a static name reference.
        let (_, index) = get_prefix_int(&mut section, 4).ok_or("truncated index")?;
        if !STATIC_STATUS.iter().any(|(i, _)| *i == index) {
            return Err(format!("first field is static entry {index}, not :status").into());
        }
        let (huffman, len) = get_prefix_int(&mut section, 7).ok_or("truncated value")?;
        let len = usize::try_from(len)?;
        if section.remaining() < len {
            return Err("truncated status value".into());
        }
        let value = section.split_to(len);
        let text = if huffman & 1 == 1 {
            huffman_digits(&value).ok_or("status value is not Huffman-coded digits")?
        } else {
            String::from_utf8(value.to_vec())?
        };
        return Ok(text.parse()?);
    }
    Err(format!("first field line {first:#04x} is not a :status").into())
}

/// Decodes a Huffman-coded string (RFC 7541 appendix B) made of ASCII digits only: `0`-`2`
/// have 5-bit codes `00000`-`00010`, `3`-`9` 6-bit codes `011001`-`011111`; the padding is
/// all ones. Enough for a `:status`.
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let mut out = String::new();
    let mut at = 0;
    let take = |at: usize, n: usize| -> Option<u8> {
        (at + n <= bits.len()).then(|| bits[at..at + n].iter().fold(0u8, |acc, b| acc << 1 | b))
    };
    while at < bits.len() {
        if bits[at..].iter().all(|b| *b == 1) && bits.len() - at < 8 {
            break;
        }
        let five = take(at, 5)?;
        if five <= 2 {
            out.push(char::from(b'0' + five));
            at += 5;
            continue;
        }
        let six = take(at, 6)?;
        if (25..=31).contains(&six) {
            out.push(char::from(b'0' + six - 22));
            at += 6;
            continue;
        }
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huffman_status_digits() {
        // "431": 011010 011001 00001, padded with ones.
        let bits = "011010011001000011111111";
        let bytes: Vec<u8> = bits
            .as_bytes()
            .chunks(8)
            .map(|c| c.iter().fold(0u8, |acc, b| acc << 1 | (b - b'0')))
            .collect();
        assert_eq!(huffman_digits(&bytes).as_deref(), Some("431"));
    }

    #[test]
    fn body_checks_find_the_first_wrong_byte() {
        let mut body = crate::tls::pattern(1000, 200_000).to_vec();
        assert_eq!(first_pattern_mismatch(1000, &body), None);
        assert_eq!(first_pattern_mismatch(1001, &body), Some(1001));
        body[150_000] ^= 1;
        assert_eq!(first_pattern_mismatch(1000, &body), Some(151_000));
        let mut xs = vec![b'x'; 100_000];
        assert_eq!(first_static_mismatch(7, &xs), None);
        xs[70_000] = b'y';
        assert_eq!(first_static_mismatch(7, &xs), Some(70_007));
    }

    #[test]
    fn prefix_ints_round_trip() {
        for v in [0u64, 6, 7, 8, 126, 127, 128, 300, 70_000] {
            for bits in [3u8, 4, 6, 7, 8] {
                let mut out = BytesMut::new();
                put_prefix_int(&mut out, bits, 0, v);
                let mut b = out.freeze();
                assert_eq!(get_prefix_int(&mut b, bits), Some((0, v)), "{v} in {bits}");
            }
        }
        for v in [0u64, 63, 64, 16_383, 16_384, 1 << 30] {
            let mut out = BytesMut::new();
            put_varint(&mut out, v);
            assert_eq!(get_varint(&mut out.freeze()), Some(v));
        }
    }
}

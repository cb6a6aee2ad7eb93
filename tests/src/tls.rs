//! TLS and HTTP/2 test support: a throw-away CA that issues server and client certificates as
//! PEM files, TLS client connections with chosen SNI, ALPN and client certificate, an HTTP/2
//! client and an HTTP/1.1 client over any stream, and [`H2Backend`], an HTTP/2 echo server
//! (cleartext or TLS, optionally requiring a client certificate, HTTP/1.1 by ALPN too).
//!
//! Everything binds `127.0.0.1:0`; every wait is bounded; files go to a [`TestDir`] that is
//! removed when dropped.
//!
//! ```text
//!   TlsClient + H2Client/H1Client ──TLS/h2──▶ TestProxy ──h2c / TLS+h2 / TLS+http1.1──▶ H2Backend
//! ```
//!
//! Client handshakes never resume sessions: each connection is a full handshake, so the
//! certificate a test sees is the one the proxy chose for that handshake (a resumed TLS 1.3
//! session carries the certificate of the session it resumes).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::client::{ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use proxy_bin::tls::{ClientIdentity, crypto_provider};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::client::{BoxError, ClientBody, Resp, empty, req};

/// How long a TCP connect plus TLS handshake may take before it counts as failed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Files

/// A fresh directory under the system temp dir, removed (with its contents) on drop.
#[derive(Debug)]
pub struct TestDir(PathBuf);

impl TestDir {
    /// Creates `proxy-tests-PID-N-TAG` under `std::env::temp_dir()`.
    pub fn new(tag: &str) -> TestDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("proxy-tests-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TestDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `contents` to a temporary file next to `path`, then renames it over `path`, as
/// deployment tools do: a reader sees the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, contents: impl AsRef<[u8]>) {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `path` as a TOML basic string, quotes included.
pub fn toml_path(path: &Path) -> String {
    let s = path.display().to_string();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

// ---------------------------------------------------------------------------------------------
// Certificates

/// A certificate issued by a [`TestCa`] and its private key.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key (PKCS#8), PEM.
    pub key_pem: String,
    /// The certificate, DER.
    pub der: CertificateDer<'static>,
    /// The private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
    /// The serial number (unique within this process).
    pub serial: u64,
}

impl Issued {
    /// Writes `STEM.crt` and `STEM.key` into `dir` (atomically), returning their paths.
    pub fn write(&self, dir: &TestDir, stem: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(&format!("{stem}.crt"));
        let key = dir.join(&format!("{stem}.key"));
        self.write_to(&cert, &key);
        (cert, key)
    }

    /// Replaces `cert` and `key` with this certificate and key (each atomically; the key
    /// first, so a reader that sees the new certificate also sees its key).
    pub fn write_to(&self, cert: &Path, key: &Path) {
        write_atomic(key, &self.key_pem);
        write_atomic(cert, &self.cert_pem);
    }

    /// The chain to present (the leaf alone: the CA is the trust anchor).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.der.clone()]
    }

    /// The private key.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_der.clone().into())
    }
}

/// A certificate authority made up for one test: ECDSA P-256, valid from now for a while.
pub struct TestCa {
    cert_pem: String,
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// A process-unique serial number, small enough to read back as a `u64`.
fn next_serial() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0x1000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl TestCa {
    /// A new CA whose subject is `CN=cn`.
    pub fn new(cn: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(SerialNumber::from(next_serial()));
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            cert_pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// Writes the CA certificate to `dir/FILE`, returning the path.
    pub fn write(&self, dir: &TestDir, file: &str) -> PathBuf {
        let path = dir.join(file);
        write_atomic(&path, &self.cert_pem);
        path
    }

    /// A trust store holding only this CA.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        roots
    }

    /// A server certificate for `names` (DNS names, `*.` wildcards, or IP addresses); the
    /// subject is `CN=<first name>`.
    pub fn server_cert(&self, names: &[&str]) -> Issued {
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("server"),
        );
        self.issue(names, dn, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate whose subject is `O=org, CN=cn` (RFC 4514: `CN=cn,O=org`).
    pub fn client_cert(&self, cn: &str, org: &str) -> Issued {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, org);
        dn.push(DnType::CommonName, cn);
        self.issue(&[], dn, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        names: &[&str],
        dn: DistinguishedName,
        usage: ExtendedKeyUsagePurpose,
    ) -> Issued {
        let key = KeyPair::generate().unwrap();
        let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name = dn;
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let serial = next_serial();
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
            serial,
        }
    }
}

/// One DER element: (tag, content, rest). Test data only; panics on malformed input.
fn read_tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = input[0];
    let first = input[1];
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        let len = input[2..2 + n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    (tag, &input[header..header + len], &input[header + len..])
}

/// The serial number of a DER certificate (up to 8 significant bytes).
pub fn serial_of(der: &[u8]) -> u64 {
    let (tag, cert, _) = read_tlv(der);
    assert_eq!(tag, 0x30, "Certificate is a SEQUENCE");
    let (tag, tbs, _) = read_tlv(cert);
    assert_eq!(tag, 0x30, "TBSCertificate is a SEQUENCE");
    let (mut tag, mut serial, rest) = read_tlv(tbs);
    if tag == 0xa0 {
        // [0] EXPLICIT version, then the serial.
        (tag, serial, _) = read_tlv(rest);
    }
    assert_eq!(tag, 0x02, "serialNumber is an INTEGER");
    let significant: Vec<u8> = serial.iter().copied().skip_while(|b| *b == 0).collect();
    assert!(significant.len() <= 8, "serial longer than 8 bytes");
    significant
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

/// The subject (RFC 4514) and subject alternative names (`DNS:..`, `IP:..`) of a DER
/// certificate, read by the proxy's own parser.
pub fn names_of(der: &CertificateDer<'_>) -> ClientIdentity {
    ClientIdentity::from_peer_certificates(std::slice::from_ref(der))
        .unwrap()
        .expect("one certificate")
}

// ---------------------------------------------------------------------------------------------
// TLS client

/// A client TLS stream over TCP.
pub type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

/// Client-side TLS settings: whom to trust, which ALPN protocols to offer, whether to send
/// SNI, and an optional client certificate. Built once into a [`ClientConfig`].
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("alpn", &self.config.alpn_protocols)
            .field("sni", &self.config.enable_sni)
            .finish_non_exhaustive()
    }
}

/// Options for [`TlsClient::new`].
#[derive(Debug, Clone, Default)]
pub struct ClientOptions<'a> {
    /// Trust only this CA; `None` accepts any certificate (to look at what a server sends
    /// for a name its certificate does not cover).
    pub trust: Option<&'a TestCa>,
    /// ALPN protocols offered, in preference order (empty: no ALPN extension).
    pub alpn: &'a [&'a str],
    /// Present this client certificate.
    pub identity: Option<&'a Issued>,
    /// Leave the SNI extension out (the name is still used to verify the certificate).
    pub no_sni: bool,
}

impl TlsClient {
    /// A client trusting `ca`, offering `alpn`.
    pub fn trusting(ca: &TestCa, alpn: &[&str]) -> TlsClient {
        TlsClient::new(ClientOptions {
            trust: Some(ca),
            alpn,
            ..ClientOptions::default()
        })
    }

    /// A client built from `options`.
    pub fn new(options: ClientOptions<'_>) -> TlsClient {
        let provider = crypto_provider();
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match options.trust {
            Some(ca) => builder.with_root_certificates(ca.roots()),
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert)),
        };
        let mut config = match options.identity {
            Some(id) => builder.with_client_auth_cert(id.chain(), id.key()).unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = options.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        config.enable_sni = !options.no_sni;
        config.resumption = rustls::client::Resumption::disabled();
        TlsClient {
            config: Arc::new(config),
        }
    }

    /// The rustls configuration.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// Connects to `addr` and handshakes for `name` (a DNS name or an IP address; SNI is sent
    /// for DNS names unless disabled). Bounded by [`HANDSHAKE_TIMEOUT`].
    pub async fn connect(&self, addr: SocketAddr, name: &str) -> io::Result<ClientTls> {
        let server_name = ServerName::try_from(name.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let connector = TlsConnector::from(self.config.clone());
        let attempt = async {
            let tcp = TcpStream::connect(addr).await?;
            let _ = tcp.set_nodelay(true);
            connector.connect(server_name, tcp).await
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("TLS handshake with {addr} for {name} timed out"),
            )),
        }
    }

    /// Connects and returns the leaf certificate the server presented.
    pub async fn leaf(&self, addr: SocketAddr, name: &str) -> io::Result<CertificateDer<'static>> {
        let tls = self.connect(addr, name).await?;
        Ok(peer_leaf(&tls))
    }
}

/// The leaf certificate the server presented on `tls`.
pub fn peer_leaf(tls: &ClientTls) -> CertificateDer<'static> {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("the server sent a certificate")
        .clone()
}

/// The ALPN protocol negotiated on `tls`, as text.
pub fn negotiated_alpn(tls: &ClientTls) -> Option<String> {
    tls.get_ref()
        .1
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned())
}

/// Accepts every server certificate (signatures are still checked), so a test can see which
/// certificate a server chose for a name it does not cover.
#[derive(Debug)]
struct AcceptAnyCert;

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &crypto_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &crypto_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        crypto_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 over any stream

/// One HTTP/1.1 connection over any stream (typically [`ClientTls`]).
#[derive(Debug)]
pub struct H1Client {
    sender: hyper::client::conn::http1::SendRequest<ClientBody>,
}

impl H1Client {
    /// Starts HTTP/1.1 on `io`.
    pub async fn handshake<I>(io: I) -> Result<H1Client, BoxError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(H1Client { sender })
    }

    /// Sends a request and reads the whole response (10 s at most).
    pub async fn send(&mut self, req: Request<ClientBody>) -> Result<Resp, BoxError> {
        let exchange = async {
            self.sender.ready().await?;
            let resp = self.sender.send_request(req).await?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, BoxError>(Resp {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| BoxError::from("HTTP/1.1 exchange timed out"))?
    }

    /// `GET path` with `Host: host`.
    pub async fn get(&mut self, host: &str, path: &str) -> Result<Resp, BoxError> {
        self.send(req("GET", host, path).body(empty()).unwrap())
            .await
    }

    /// True once the server closed the connection.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 client

/// A response read to its end over HTTP/2.
#[derive(Debug, Clone)]
pub struct H2Response {
    /// The status.
    pub status: StatusCode,
    /// The header fields.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// The trailer fields, if the response ended with them.
    pub trailers: Option<HeaderMap>,
    /// How many non-empty DATA chunks the body arrived in.
    pub data_chunks: usize,
}

impl H2Response {
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
}

/// One HTTP/2 client connection (h2 crate), its connection task running in the background.
#[derive(Debug)]
pub struct H2Client {
    sender: SendRequest<Bytes>,
    conn: JoinHandle<Result<(), h2::Error>>,
}

impl H2Client {
    /// Sends the preface and SETTINGS on `io` (h2 defaults: 64 KiB windows).
    pub async fn handshake<I>(io: I) -> Result<H2Client, h2::Error>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        H2Client::handshake_with(io, &h2::client::Builder::new()).await
    }

    /// Like [`H2Client::handshake`] with the client's own settings.
    pub async fn handshake_with<I>(
        io: I,
        builder: &h2::client::Builder,
    ) -> Result<H2Client, h2::Error>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = builder.handshake::<_, Bytes>(io).await?;
        let conn = tokio::spawn(conn);
        Ok(H2Client { sender, conn })
    }

    /// h2c with prior knowledge to `addr`.
    pub async fn connect_h2c(addr: SocketAddr) -> Result<H2Client, BoxError> {
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        Ok(H2Client::handshake(tcp).await?)
    }

    /// A handle for opening streams from other tasks.
    pub fn sender(&self) -> SendRequest<Bytes> {
        self.sender.clone()
    }

    /// True once the connection task ended (the server closed the connection, or GOAWAY
    /// and every stream finished).
    pub fn is_closed(&self) -> bool {
        self.conn.is_finished()
    }

    /// Opens a stream: sends the head, leaving the body to the caller when `end` is false.
    pub async fn open(
        &self,
        req: Request<()>,
        end: bool,
    ) -> Result<(ResponseFuture, SendStream<Bytes>), h2::Error> {
        open(self.sender.clone(), req, end).await
    }

    /// Sends `req` with `body` as one DATA chunk each, then `trailers` if any, and reads the
    /// whole response (30 s at most).
    pub async fn send(
        &self,
        req: Request<()>,
        body: Vec<Bytes>,
        trailers: Option<HeaderMap>,
    ) -> Result<H2Response, h2::Error> {
        send_on(self.sender.clone(), req, body, trailers).await
    }

    /// `GET uri` without a body.
    pub async fn get(&self, uri: &str) -> Result<H2Response, h2::Error> {
        self.send(get(uri), Vec::new(), None).await
    }
}

/// A `GET uri` request head (`uri` absolute: it gives `:scheme` and `:authority`).
pub fn get(uri: &str) -> Request<()> {
    Request::builder().uri(uri).body(()).unwrap()
}

/// Waits until `sender` may open a stream, then opens one.
pub async fn open(
    sender: SendRequest<Bytes>,
    req: Request<()>,
    end: bool,
) -> Result<(ResponseFuture, SendStream<Bytes>), h2::Error> {
    let mut sender = sender.ready().await?;
    sender.send_request(req, end)
}

/// Sends one request on `sender` (see [`H2Client::send`]).
pub async fn send_on(
    sender: SendRequest<Bytes>,
    req: Request<()>,
    body: Vec<Bytes>,
    trailers: Option<HeaderMap>,
) -> Result<H2Response, h2::Error> {
    let exchange = async {
        let end = body.is_empty() && trailers.is_none();
        let (response, mut stream) = open(sender, req, end).await?;
        if !end {
            let n = body.len();
            for (i, chunk) in body.into_iter().enumerate() {
                send_data(&mut stream, chunk, i + 1 == n && trailers.is_none()).await?;
            }
            if let Some(t) = trailers {
                stream.send_trailers(t)?;
            }
        }
        read_response(response.await?).await
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| h2::Error::from(h2::Reason::CANCEL))?
}

/// Sends `data` under flow control: waits for window capacity instead of buffering it all.
pub async fn send_data(
    stream: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
) -> Result<(), h2::Error> {
    if data.is_empty() {
        return stream.send_data(data, end);
    }
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let granted = match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(r) => r?,
            None => return Err(h2::Error::from(h2::Reason::STREAM_CLOSED)),
        };
        if granted == 0 {
            continue;
        }
        let chunk = data.split_to(granted.min(data.len()));
        stream.send_data(chunk, end && data.is_empty())?;
    }
    Ok(())
}

/// The next DATA chunk of `body` (its window released), `None` at the end.
pub async fn next_chunk(body: &mut RecvStream) -> Option<Result<Bytes, h2::Error>> {
    let chunk = body.data().await?;
    Some(chunk.and_then(|c| {
        body.flow_control().release_capacity(c.len())?;
        Ok(c)
    }))
}

/// Reads a response's body to the end and its trailers.
pub async fn read_response(resp: Response<RecvStream>) -> Result<H2Response, h2::Error> {
    let (parts, mut body) = resp.into_parts();
    let mut data = BytesMut::new();
    let mut data_chunks = 0;
    while let Some(chunk) = next_chunk(&mut body).await {
        let chunk = chunk?;
        if !chunk.is_empty() {
            data_chunks += 1;
        }
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await?;
    Ok(H2Response {
        status: parts.status,
        headers: parts.headers,
        body: data.freeze(),
        trailers,
        data_chunks,
    })
}

// ---------------------------------------------------------------------------------------------
// Test data

/// `len` bytes of the test pattern starting at `offset`: byte `i` is `i % 251`, so a shifted,
/// dropped or repeated chunk shows.
pub fn pattern(offset: u64, len: usize) -> Bytes {
    (0..len as u64)
        .map(|i| ((offset + i) % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// The offset of the first byte of `data` that is not the pattern from `offset` on.
pub fn pattern_mismatch(offset: u64, data: &[u8]) -> Option<u64> {
    data.iter()
        .enumerate()
        .find(|(i, b)| **b != ((offset + *i as u64) % 251) as u8)
        .map(|(i, _)| offset + i as u64)
}

/// FNV-1a 64, a checksum for bodies too large to compare in a message.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// The checksum so far.
    pub fn value(&self) -> u64 {
        self.0
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 backend

/// One request as an [`H2Backend`] received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `HTTP/2.0` or `HTTP/1.1`.
    pub version: String,
    /// The method.
    pub method: String,
    /// `:scheme` (HTTP/2 only).
    pub scheme: Option<String>,
    /// `:authority` (HTTP/2), or `Host` (HTTP/1.1).
    pub authority: Option<String>,
    /// Path and query.
    pub path: String,
    /// Regular header fields in order, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The subject of the client certificate of the connection, if one was presented.
    pub peer_subject: Option<String>,
}

impl Seen {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// True when header `name` was received.
    pub fn has(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
}

#[derive(Debug)]
struct BackendShared {
    name: String,
    seen: Mutex<Vec<Seen>>,
    accepts: AtomicUsize,
    failed_handshakes: AtomicUsize,
}

/// Per-connection facts a stream handler reports.
#[derive(Debug, Clone, Default)]
struct ConnMeta {
    peer_subject: Option<String>,
    alpn: Option<String>,
}

/// An HTTP/2 echo server on `127.0.0.1:0`, cleartext (h2c with prior knowledge) or TLS (ALPN
/// `h2`, else HTTP/1.1 on hyper). Every response carries:
///
/// | header | value |
/// |---|---|
/// | `x-backend` | the backend's name |
/// | `x-version` | `HTTP/2` or `HTTP/1.1` |
/// | `x-method`, `x-path` | the method, the path and query |
/// | `x-authority` | `:authority` (HTTP/2) or `Host` (HTTP/1.1) |
/// | `x-te` | the request's `te`, when present |
/// | `x-client-dn` | the request's `x-client-dn`, when present |
/// | `x-peer-subject` | the subject of the TLS client certificate, when one was presented |
/// | `content-type` | the request's content type, when present |
///
/// The body depends on the request:
///
/// | request header | response |
/// |---|---|
/// | none | **echo**: the head at once, then each request DATA chunk echoed as it arrives, then trailers `grpc-status` (from `x-grpc-status`, default `0`), `grpc-message` (from `x-grpc-message`, default `OK`), `x-echoed-bytes`, and each request trailer `NAME` as `x-echo-NAME` (HTTP/1.1: the body echoed, no trailers) |
/// | `x-mode: sink` | reads the whole body, then answers with `x-received-bytes` and `x-received-fnv` ([`Fnv`], hex) and no body |
/// | `x-download: N` | reads the whole body, then sends N bytes of [`pattern`] |
/// | `x-delay-ms: N` | waits N ms before the response head |
pub struct H2Backend {
    addr: SocketAddr,
    shared: Arc<BackendShared>,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for H2Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Backend")
            .field("addr", &self.addr)
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl Drop for H2Backend {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl H2Backend {
    /// A cleartext backend speaking HTTP/2 with prior knowledge.
    pub async fn h2c(name: &str) -> H2Backend {
        H2Backend::start(name, None).await
    }

    /// A TLS backend presenting `cert`, offering `alpn` (e.g. `["h2", "http/1.1"]`), and, with
    /// `client_ca`, requiring a client certificate issued by it.
    pub async fn tls(
        name: &str,
        cert: &Issued,
        alpn: &[&str],
        client_ca: Option<&TestCa>,
    ) -> H2Backend {
        let provider = crypto_provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(ca.roots()), provider)
                    .build()
                    .unwrap(),
            ),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(cert.chain(), cert.key()).unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        H2Backend::start(name, Some(TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start(name: &str, tls: Option<TlsAcceptor>) -> H2Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(BackendShared {
            name: name.to_owned(),
            seen: Mutex::new(Vec::new()),
            accepts: AtomicUsize::new(0),
            failed_handshakes: AtomicUsize::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, tls, shared.clone()));
        H2Backend {
            addr,
            shared,
            accept,
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.shared.accepts.load(Ordering::Relaxed)
    }

    /// TLS handshakes that failed (or timed out) so far.
    pub fn failed_handshakes(&self) -> usize {
        self.shared.failed_handshakes.load(Ordering::Relaxed)
    }

    /// Requests received so far (counted when the head arrives).
    pub fn hits(&self) -> usize {
        self.shared.seen.lock().unwrap().len()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The most recent request.
    pub fn last_request(&self) -> Option<Seen> {
        self.shared.seen.lock().unwrap().last().cloned()
    }
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Arc<BackendShared>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.accepts.fetch_add(1, Ordering::Relaxed);
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let Some(acceptor) = tls else {
                serve_h2(tcp, ConnMeta::default(), shared).await;
                return;
            };
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                _ => {
                    shared.failed_handshakes.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            let session = stream.get_ref().1;
            let meta = ConnMeta {
                peer_subject: ClientIdentity::from_connection(session)
                    .ok()
                    .flatten()
                    .map(|id| id.subject),
                alpn: session
                    .alpn_protocol()
                    .map(|p| String::from_utf8_lossy(p).into_owned()),
            };
            if meta.alpn.as_deref() == Some("h2") {
                serve_h2(stream, meta, shared).await;
            } else {
                serve_h1(stream, meta, shared).await;
            }
        });
    }
}

/// What a request asks the backend to do with its body.
#[derive(Debug, Clone, Copy)]
enum Plan {
    Echo,
    Sink,
    Download(u64),
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Records the request and works out the response head and the plan.
fn describe(
    parts: &http::request::Parts,
    meta: &ConnMeta,
    shared: &BackendShared,
) -> (Plan, Duration, Response<()>) {
    let h2 = parts.version == http::Version::HTTP_2;
    let authority = parts
        .uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| header_text(&parts.headers, "host").map(str::to_owned));
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |pq| pq.to_string());
    let seen = Seen {
        version: format!("{:?}", parts.version),
        method: parts.method.to_string(),
        scheme: parts.uri.scheme_str().map(str::to_owned),
        authority: authority.clone(),
        path: path.clone(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        peer_subject: meta.peer_subject.clone(),
    };
    shared.seen.lock().unwrap().push(seen);

    let mut resp = Response::builder()
        .status(StatusCode::OK)
        .header("x-backend", shared.name.as_str())
        .header("x-version", if h2 { "HTTP/2" } else { "HTTP/1.1" })
        .header("x-method", parts.method.as_str())
        .header("x-path", path.as_str());
    if let Some(a) = authority
        .as_deref()
        .and_then(|a| HeaderValue::from_str(a).ok())
    {
        resp = resp.header("x-authority", a);
    }
    for (from, to) in [
        ("te", "x-te"),
        ("x-client-dn", "x-client-dn"),
        ("content-type", "content-type"),
    ] {
        if let Some(v) = parts.headers.get(from) {
            resp = resp.header(to, v.clone());
        }
    }
    if let Some(s) = meta
        .peer_subject
        .as_deref()
        .and_then(|s| HeaderValue::from_str(s).ok())
    {
        resp = resp.header("x-peer-subject", s);
    }
    if let Some(a) = meta.alpn.as_deref() {
        resp = resp.header("x-alpn", a);
    }
    let plan =
        if let Some(n) = header_text(&parts.headers, "x-download").and_then(|v| v.parse().ok()) {
            Plan::Download(n)
        } else if header_text(&parts.headers, "x-mode") == Some("sink") {
            Plan::Sink
        } else {
            Plan::Echo
        };
    let delay = header_text(&parts.headers, "x-delay-ms")
        .and_then(|v| v.parse().ok())
        .map_or(Duration::ZERO, Duration::from_millis);
    (plan, delay, resp.body(()).unwrap())
}

fn grpc_trailers(headers: &HeaderMap, echoed: u64) -> HeaderMap {
    let mut t = HeaderMap::new();
    let status = headers
        .get("x-grpc-status")
        .cloned()
        .unwrap_or(HeaderValue::from_static("0"));
    let message = headers
        .get("x-grpc-message")
        .cloned()
        .unwrap_or(HeaderValue::from_static("OK"));
    t.insert("grpc-status", status);
    t.insert("grpc-message", message);
    t.insert("x-echoed-bytes", HeaderValue::from(echoed));
    t
}

async fn serve_h2<I>(io: I, meta: ConnMeta, shared: Arc<BackendShared>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(mut conn) = h2::server::handshake(io).await else {
        return;
    };
    while let Some(Ok((req, respond))) = conn.accept().await {
        let meta = meta.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = h2_stream(req, respond, &meta, &shared).await;
        });
    }
}

async fn h2_stream(
    req: Request<RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    meta: &ConnMeta,
    shared: &BackendShared,
) -> Result<(), h2::Error> {
    let (parts, mut body) = req.into_parts();
    let (plan, delay, mut head) = describe(&parts, meta, shared);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match plan {
        Plan::Echo => {
            let mut tx = respond.send_response(head, false)?;
            let mut echoed = 0u64;
            while let Some(chunk) = next_chunk(&mut body).await {
                let chunk = chunk?;
                echoed += chunk.len() as u64;
                send_data(&mut tx, chunk, false).await?;
            }
            let mut trailers = grpc_trailers(&parts.headers, echoed);
            if let Some(received) = body.trailers().await? {
                for (name, value) in &received {
                    let echoed_name = format!("x-echo-{name}");
                    trailers.insert(
                        http::HeaderName::from_bytes(echoed_name.as_bytes()).unwrap(),
                        value.clone(),
                    );
                }
            }
            tx.send_trailers(trailers)?;
        }
        Plan::Sink => {
            let (n, sum) = drain(&mut body).await?;
            let h = head.headers_mut();
            h.insert("x-received-bytes", HeaderValue::from(n));
            h.insert(
                "x-received-fnv",
                HeaderValue::from_str(&format!("{sum:016x}")).unwrap(),
            );
            respond.send_response(head, true)?;
        }
        Plan::Download(n) => {
            drain(&mut body).await?;
            head.headers_mut()
                .insert("content-length", HeaderValue::from(n));
            let mut tx = respond.send_response(head, n == 0)?;
            let mut sent = 0u64;
            while sent < n {
                let len = (n - sent).min(64 * 1024);
                send_data(&mut tx, pattern(sent, len as usize), sent + len == n).await?;
                sent += len;
            }
        }
    }
    Ok(())
}

/// Reads a request body to the end: (length, checksum).
async fn drain(body: &mut RecvStream) -> Result<(u64, u64), h2::Error> {
    let mut n = 0u64;
    let mut sum = Fnv::default();
    while let Some(chunk) = next_chunk(body).await {
        let chunk = chunk?;
        n += chunk.len() as u64;
        sum.update(&chunk);
    }
    Ok((n, sum.value()))
}

type H1Body = BoxBody<Bytes, Infallible>;

async fn serve_h1<I>(io: I, meta: ConnMeta, shared: Arc<BackendShared>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let meta = meta.clone();
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(h1_request(req, &meta, &shared).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

async fn h1_request(
    req: Request<Incoming>,
    meta: &ConnMeta,
    shared: &BackendShared,
) -> Response<H1Body> {
    let (parts, body) = req.into_parts();
    let (plan, delay, head) = describe(&parts, meta, shared);
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (mut head, ()) = head.into_parts();
    let out = match plan {
        Plan::Echo => {
            head.headers
                .insert("x-echoed-bytes", HeaderValue::from(body.len()));
            body
        }
        Plan::Sink => {
            let mut sum = Fnv::default();
            sum.update(&body);
            head.headers
                .insert("x-received-bytes", HeaderValue::from(body.len()));
            head.headers.insert(
                "x-received-fnv",
                HeaderValue::from_str(&format!("{:016x}", sum.value())).unwrap(),
            );
            Bytes::new()
        }
        Plan::Download(n) => pattern(0, usize::try_from(n).unwrap()),
    };
    Response::from_parts(head, Full::new(out).boxed())
}

// ---------------------------------------------------------------------------------------------
// Configuration text

/// One `certificates` entry as a TOML inline table: `{ names = [..], cert = "..", key = ".." }`.
pub fn cert_entry(names: &[&str], cert: &Path, key: &Path) -> String {
    let names: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    format!(
        "{{ names = [{}], cert = {}, key = {} }}",
        names.join(", "),
        toml_path(cert),
        toml_path(key)
    )
}

/// A site: a server certificate for `names` issued by `ca`, written as `STEM.crt`/`STEM.key`
/// into `dir`, and its `certificates` entry.
#[derive(Debug, Clone)]
pub struct Site {
    /// The certificate and key.
    pub issued: Issued,
    /// The certificate file.
    pub cert: PathBuf,
    /// The key file.
    pub key: PathBuf,
    /// The TOML inline table for `certificates = [..]`.
    pub entry: String,
}

impl Site {
    /// Issues and writes the site's certificate.
    pub fn new(ca: &TestCa, dir: &TestDir, stem: &str, names: &[&str]) -> Site {
        let issued = ca.server_cert(names);
        let (cert, key) = issued.write(dir, stem);
        let entry = cert_entry(names, &cert, &key);
        Site {
            issued,
            cert,
            key,
            entry,
        }
    }
}

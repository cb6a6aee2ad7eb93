//! HTTP/2 end to end: h2c with prior knowledge next to HTTP/1.1, translation in both
//! directions (HTTP/2 client to HTTP/1.1 upstream and back), gRPC-style streaming with
//! trailers over h2c and TLS upstreams, ALPN-negotiated upstreams, upstream certificate
//! verification, flow control with small windows, many streams on one connection, graceful
//! shutdown with streams in flight, and oversized header lists.

// Tests panic on purpose: a failed assertion or setup step is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request};
use tests::client::{Conn, Echo};
use tests::raw::RawConn;
use tests::tls::{
    Fnv, H2Backend, H2Client, Site, TestCa, TestDir, TlsClient, get, next_chunk, open, pattern,
    pattern_mismatch, send_data, send_on, toml_path,
};
use tests::{Backend, TestProxy, fill, wait_until, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A plain listener with h2c next to HTTP/1.1, and one upstream `app` at `{A}` speaking
/// `{PROTOCOL}`, behind a default server.
const H2C_PROXY: &str = r#"
[[listeners]]
address = "127.0.0.1:0"
h2c = true

[upstreams.app]
protocol = "{PROTOCOL}"
endpoints = ["{A}"]

[[servers]]
default = true

[[servers.routes]]
prefix = "/"
upstream = "app"
"#;

fn h2c_proxy(protocol: &str, upstream: SocketAddr, extra: &str) -> String {
    format!(
        "{extra}\n{}",
        fill(H2C_PROXY, &[("A", upstream)]).replace("{PROTOCOL}", protocol)
    )
}

/// A POST request head for `uri` with `headers`.
fn post(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::builder().method("POST").uri(uri);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_next_to_http1_and_not_without_h2c() {
    within(30, "h2c", async {
        let backend = Backend::start("app").await;
        let text = format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n{}",
            h2c_proxy("http1", backend.addr(), "")
        );
        let proxy = TestProxy::start(&text).await;
        let (plain_only, h2c) = (proxy.running().addrs()[0], proxy.running().addrs()[1]);

        let h2 = H2Client::connect_h2c(h2c).await.unwrap();
        let r = h2.get("http://app.test/over-h2c?x=1").await.unwrap();
        assert_eq!(r.status, 200);
        let e = Echo::parse(&r.body).expect("echo");
        assert_eq!(
            (e.uri.as_str(), e.version.as_str()),
            ("/over-h2c?x=1", "HTTP/1.1")
        );
        assert_eq!(e.header("host"), Some("app.test"));
        assert_eq!(e.header("x-forwarded-proto"), Some("http"));

        let mut h1 = Conn::connect(h2c).await;
        let r = h1.get_host("app.test", "/over-h1").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.echo().uri, "/over-h1");

        // Without `h2c`, the preface is an HTTP/1.1 request line that gets an HTTP/1.1 error
        // or a close, never a SETTINGS frame.
        let mut raw = RawConn::connect(plain_only).await;
        raw.send(proxy_http2::PREFACE).await.unwrap();
        let closed = raw.closed_within(Duration::from_secs(5)).await;
        let got = raw.buffered().to_vec();
        assert!(
            got.is_empty() || got.starts_with(b"HTTP/1."),
            "the preface was answered with {:?}",
            String::from_utf8_lossy(&got[..got.len().min(64)])
        );
        if !got.is_empty() {
            let status: u16 = String::from_utf8_lossy(&got[9..12]).parse().unwrap();
            assert!(status >= 400, "the preface got status {status}");
        }
        assert!(closed || !got.is_empty(), "the preface got no answer");
        let h2 = H2Client::connect_h2c(plain_only).await.unwrap();
        let r = h2.get("http://app.test/refused").await;
        assert!(
            r.is_err(),
            "HTTP/2 was served without h2c: {:?}",
            r.map(|r| r.status)
        );
        assert_eq!(backend.hits(), 2);
    })
    .await;
}

/// An HTTP/1.1 origin that answers every request with a chunked body and a trailer.
async fn chunked_trailer_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
                        Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\
                          Connection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\
                          x-checksum: abc123\r\n\r\n",
                    )
                    .await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_client_to_http1_upstream_translates_body_query_cookies_and_host() {
    within(30, "HTTP/2 to HTTP/1.1", async {
        let backend = Backend::start("app").await;
        let proxy = TestProxy::start(&h2c_proxy("http1", backend.addr(), "")).await;
        let h2 = H2Client::connect_h2c(proxy.addr()).await.unwrap();

        let mut head = post(
            "http://shop.test:8080/cart/items?sku=42&qty=2",
            &[("content-type", "text/plain"), ("x-custom", "yes")],
        );
        for crumb in ["session=abc", "theme=dark", "lang=en"] {
            head.headers_mut()
                .append("cookie", HeaderValue::from_static(crumb));
        }
        let body = vec![
            Bytes::from_static(b"hello, "),
            Bytes::from_static(b"upstream"),
        ];
        let r = h2.send(head, body, None).await.unwrap();
        assert_eq!(r.status, 200);
        let e = Echo::parse(&r.body).expect("echo");
        assert_eq!(e.method, "POST");
        assert_eq!(e.uri, "/cart/items?sku=42&qty=2");
        assert_eq!(e.version, "HTTP/1.1");
        assert_eq!(e.header("host"), Some("shop.test:8080"));
        assert_eq!(e.header_all("cookie"), ["session=abc; theme=dark; lang=en"]);
        assert_eq!(e.header("x-custom"), Some("yes"));
        assert_eq!(e.header("content-type"), Some("text/plain"));
        assert_eq!((e.body_len, e.body.as_str()), (15, "hello, upstream"));
        assert_eq!(r.header("x-backend"), Some("app"));

        // A known length is kept as a Content-Length upstream.
        let head = post("http://shop.test/sized", &[("content-length", "4")]);
        let r = h2
            .send(head, vec![Bytes::from_static(b"abcd")], None)
            .await
            .unwrap();
        let e = Echo::parse(&r.body).expect("echo");
        assert_eq!(e.header("content-length"), Some("4"));
        assert_eq!(e.body, "abcd");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_client_gets_trailers_from_a_chunked_http1_upstream() {
    within(30, "HTTP/1.1 trailers to HTTP/2", async {
        let origin = chunked_trailer_backend().await;
        let proxy = TestProxy::start(&h2c_proxy("http1", origin, "")).await;
        let h2 = H2Client::connect_h2c(proxy.addr()).await.unwrap();
        let mut head = get("http://trailers.test/t");
        head.headers_mut()
            .insert("te", HeaderValue::from_static("trailers"));
        let r = h2.send(head, Vec::new(), None).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "hello world");
        assert_eq!(
            r.trailer("x-checksum"),
            Some("abc123"),
            "trailers: {:?}",
            r.trailers
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_client_asking_for_trailers_gets_them_from_a_chunked_upstream() {
    within(30, "HTTP/1.1 trailers to HTTP/1.1", async {
        let origin = chunked_trailer_backend().await;
        let proxy = TestProxy::start(&h2c_proxy("http1", origin, "")).await;
        let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(b"GET /t HTTP/1.1\r\nHost: trailers.test\r\nTE: trailers\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        // The response ends with the last chunk, the trailer section and an empty line.
        while !buf.ends_with(b"\r\n0\r\nx-checksum: abc123\r\n\r\n") {
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => panic!(
                    "response without the trailer: {:?}",
                    String::from_utf8_lossy(&buf)
                ),
            }
        }
        let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 200"), "{text}");
        assert!(text.contains("trailer: x-checksum\r\n"), "{text}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_client_to_h2c_upstream_drops_connection_specific_headers() {
    within(30, "HTTP/1.1 to HTTP/2", async {
        let backend = H2Backend::h2c("h2").await;
        let proxy = TestProxy::start(&h2c_proxy("http2", backend.addr(), "")).await;
        let mut raw = RawConn::connect(proxy.addr()).await;
        raw.send(
            b"POST /up/path?x=1 HTTP/1.1\r\nHost: app.test\r\n\
              Connection: keep-alive, x-hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n\
              Proxy-Connection: keep-alive\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n\
              X-Custom: kept\r\n\r\n5\r\nhello\r\n6\r\n there\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
        let r = raw.read_response().await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "hello there");
        assert_eq!(r.header("x-version"), Some("HTTP/2"));
        let seen = backend.last_request().unwrap();
        assert_eq!(seen.version, "HTTP/2.0");
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.authority.as_deref(), Some("app.test"));
        assert_eq!(seen.scheme.as_deref(), Some("http"));
        assert_eq!(seen.path, "/up/path?x=1");
        assert_eq!(seen.header("x-custom"), Some("kept"));
        // RFC 9113 section 8.2.2: no connection-specific fields; TE only as "trailers".
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
            "x-hop",
            "host",
        ] {
            assert!(
                !seen.has(name),
                "{name} was sent upstream: {:?}",
                seen.headers
            );
        }
        assert!(
            seen.header("te").is_none_or(|te| te == "trailers"),
            "te: {:?}",
            seen.header("te")
        );

        // The connection is reusable, and a bodiless GET arrives as such.
        raw.send(b"GET /second HTTP/1.1\r\nHost: app.test:81\r\n\r\n")
            .await
            .unwrap();
        let r = raw.read_response().await.unwrap();
        assert_eq!(r.status, 200);
        let seen = backend.last_request().unwrap();
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            ("GET", "/second")
        );
        assert_eq!(seen.authority.as_deref(), Some("app.test:81"));
        assert_eq!(
            backend.accepts(),
            1,
            "both requests share one upstream connection"
        );
    })
    .await;
}

/// gRPC over the proxy: a TLS listener with HTTP/2, routing `/plain/` to an h2c backend and
/// `/secure/` to a TLS backend.
struct GrpcSetup {
    _dir: TestDir,
    ca: TestCa,
    proxy: TestProxy,
    plain: H2Backend,
    secure: H2Backend,
}

async fn grpc_setup() -> GrpcSetup {
    let dir = TestDir::new("grpc");
    let ca = TestCa::new("gRPC test CA");
    let site = Site::new(&ca, &dir, "front", &["grpc.example.test"]);
    let ca_path = ca.write(&dir, "ca.pem");
    let plain = H2Backend::h2c("plain").await;
    let secure = H2Backend::tls("secure", &ca.server_cert(&["backend.test"]), &["h2"], None).await;
    let text = format!(
        r#"
[[listeners]]
address = "127.0.0.1:0"

[listeners.tls]
certificates = [{entry}]

[upstreams.plain]
protocol = "http2"
endpoints = ["{plain}"]

[upstreams.secure]
protocol = "http2"
endpoints = ["{secure}"]
tls = {{ ca = {ca}, server_name = "backend.test" }}

[[servers]]
default = true

[[servers.routes]]
prefix = "/plain/"
upstream = "plain"

[[servers.routes]]
prefix = "/secure/"
upstream = "secure"
"#,
        entry = site.entry,
        plain = plain.addr(),
        secure = secure.addr(),
        ca = toml_path(&ca_path),
    );
    let proxy = TestProxy::start(&text).await;
    GrpcSetup {
        _dir: dir,
        ca,
        proxy,
        plain,
        secure,
    }
}

/// A gRPC message: uncompressed flag, 4-byte length, payload.
fn grpc_message(payload: &[u8]) -> Bytes {
    let mut m = vec![0u8];
    m.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    m.extend_from_slice(payload);
    m.into()
}

const GRPC_HEADERS: &[(&str, &str)] = &[
    ("te", "trailers"),
    ("content-type", "application/grpc"),
    ("grpc-timeout", "10S"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_streams_both_ways_with_trailers_over_h2c_and_tls_upstreams() {
    within(30, "gRPC", async {
        let s = grpc_setup().await;
        let tls = TlsClient::trusting(&s.ca, &["h2"])
            .connect(s.proxy.addr(), "grpc.example.test")
            .await
            .unwrap();
        let h2 = H2Client::handshake(tls).await.unwrap();

        for (prefix, backend) in [("plain", &s.plain), ("secure", &s.secure)] {
            // Client streaming: three DATA frames, then trailers back.
            let messages: Vec<Bytes> = (0..3)
                .map(|i| grpc_message(format!("request {i} via {prefix}").as_bytes()))
                .collect();
            let mut headers = GRPC_HEADERS.to_vec();
            headers.push(("x-grpc-status", "7"));
            headers.push(("x-grpc-message", "permission%20denied"));
            let uri = format!("https://grpc.example.test/{prefix}/echo.Echo/Collect");
            let mut request_trailers = HeaderMap::new();
            request_trailers.insert("x-client-checksum", HeaderValue::from_static("c0ffee"));
            let r = h2
                .send(
                    post(&uri, &headers),
                    messages.clone(),
                    Some(request_trailers),
                )
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{prefix}");
            assert_eq!(r.header("content-type"), Some("application/grpc"));
            assert_eq!(r.body, messages.concat(), "{prefix}: echoed body");
            assert_eq!(
                r.trailer("grpc-status"),
                Some("7"),
                "{prefix}: {:?}",
                r.trailers
            );
            assert_eq!(r.trailer("grpc-message"), Some("permission%20denied"));
            let total: usize = messages.iter().map(Bytes::len).sum();
            assert_eq!(
                r.trailer("x-echoed-bytes"),
                Some(total.to_string().as_str())
            );
            assert_eq!(
                r.trailer("x-echo-x-client-checksum"),
                Some("c0ffee"),
                "{prefix}: request trailers did not reach the backend"
            );
            let seen = backend.last_request().unwrap();
            assert_eq!(seen.version, "HTTP/2.0", "{prefix}");
            assert_eq!(
                seen.header("te"),
                Some("trailers"),
                "{prefix}: {:?}",
                seen.headers
            );
            assert_eq!(seen.header("content-type"), Some("application/grpc"));
            // The deadline propagates: the upstream gets what is left of the client's 10 s.
            let left = seen.header("grpc-timeout").unwrap_or_default();
            let ms: u64 = left
                .strip_suffix('m')
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{prefix}: grpc-timeout {left:?}"));
            assert!(
                (5_000..=10_000).contains(&ms),
                "{prefix}: grpc-timeout {left}"
            );
            assert_eq!(seen.path, format!("/{prefix}/echo.Echo/Collect"));
            assert_eq!(seen.authority.as_deref(), Some("grpc.example.test"));
            let scheme = if prefix == "secure" { "https" } else { "http" };
            assert_eq!(seen.scheme.as_deref(), Some(scheme));

            // Bidirectional: each message is echoed before the next one is sent, so neither
            // body can be buffered whole anywhere on the way.
            let uri = format!("https://grpc.example.test/{prefix}/echo.Echo/Chat");
            let (response, mut tx) = open(h2.sender(), post(&uri, GRPC_HEADERS), false)
                .await
                .unwrap();
            let response = tokio::time::timeout(Duration::from_secs(5), async {
                send_data(&mut tx, grpc_message(b"hello 0"), false).await?;
                response.await
            })
            .await
            .unwrap_or_else(|_| panic!("{prefix}: no response head while the request streams"))
            .unwrap();
            assert_eq!(response.status(), 200);
            let mut rx = response.into_body();
            for i in 0..5 {
                if i > 0 {
                    let m = grpc_message(format!("hello {i}").as_bytes());
                    send_data(&mut tx, m, false).await.unwrap();
                }
                let expected = grpc_message(format!("hello {i}").as_bytes());
                let mut got = Vec::new();
                while got.len() < expected.len() {
                    let chunk = tokio::time::timeout(Duration::from_secs(5), next_chunk(&mut rx))
                        .await
                        .unwrap_or_else(|_| {
                            panic!("{prefix}: the echo of message {i} never arrived")
                        })
                        .expect("the response ended early")
                        .unwrap();
                    got.extend_from_slice(&chunk);
                }
                assert_eq!(got, expected, "{prefix}: echo of message {i}");
            }
            send_data(&mut tx, Bytes::new(), true).await.unwrap();
            assert!(
                next_chunk(&mut rx).await.is_none(),
                "{prefix}: data after the last echo"
            );
            let trailers = rx.trailers().await.unwrap().expect("trailers");
            assert_eq!(trailers["grpc-status"], "0");
            assert_eq!(trailers["grpc-message"], "OK");
        }
        assert_eq!(s.secure.failed_handshakes(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_auto_follows_the_backends_alpn() {
    within(30, "protocol = auto", async {
        let dir = TestDir::new("auto");
        let ca = TestCa::new("auto test CA");
        let ca_path = ca.write(&dir, "ca.pem");
        let cert = ca.server_cert(&["backend.test"]);
        let modern = H2Backend::tls("modern", &cert, &["h2", "http/1.1"], None).await;
        let legacy = H2Backend::tls("legacy", &cert, &["http/1.1"], None).await;
        let tls = format!(
            "tls = {{ ca = {}, server_name = \"backend.test\" }}",
            toml_path(&ca_path)
        );
        let text = format!(
            r#"
[upstreams.modern]
protocol = "auto"
endpoints = ["{m}"]
{tls}

[upstreams.legacy]
protocol = "auto"
endpoints = ["{l}"]
{tls}

[[servers]]
default = true

[[servers.routes]]
prefix = "/modern/"
upstream = "modern"

[[servers.routes]]
prefix = "/legacy/"
upstream = "legacy"
"#,
            m = modern.addr(),
            l = legacy.addr(),
        );
        let proxy = TestProxy::start(&text).await;
        let mut c = Conn::connect(proxy.addr()).await;
        for round in 0..3 {
            let r = c.get_host("auto.test", &format!("/modern/{round}")).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.header("x-version"), Some("HTTP/2"), "round {round}");
            assert_eq!(r.header("x-alpn"), Some("h2"));
            let r = c.get_host("auto.test", &format!("/legacy/{round}")).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.header("x-version"), Some("HTTP/1.1"), "round {round}");
            assert_eq!(r.header("x-alpn"), Some("http/1.1"));
        }
        assert_eq!(modern.hits(), 3);
        assert_eq!(legacy.hits(), 3);
        assert_eq!(
            modern.accepts(),
            1,
            "HTTP/2 requests share the probed connection"
        );
        assert_eq!(
            legacy.accepts(),
            1,
            "the probed HTTP/1.1 connection is reused"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_verifies_the_certificate_and_presents_a_client_certificate() {
    within(30, "upstream TLS", async {
        let dir = TestDir::new("upstream-tls");
        let ca = TestCa::new("upstream test CA");
        let rogue_ca = TestCa::new("rogue CA");
        let client_ca = TestCa::new("proxy client CA");
        let ca_path = ca.write(&dir, "ca.pem");
        let (client_cert, client_key) = client_ca.client_cert("edge-proxy", "Edge").write(&dir, "client");
        let names = ["backend.test", "127.0.0.1"];
        let good = H2Backend::tls("good", &ca.server_cert(&names), &["h2"], None).await;
        let rogue = H2Backend::tls("rogue", &rogue_ca.server_cert(&names), &["h2"], None).await;
        let mtls = H2Backend::tls("mtls", &ca.server_cert(&names), &["h2"], Some(&client_ca)).await;
        let ca = toml_path(&ca_path);
        let upstreams = [
            ("by_ip", good.addr(), format!("{{ ca = {ca} }}")),
            ("named", good.addr(), format!("{{ ca = {ca}, server_name = \"backend.test\" }}")),
            ("wrong_name", good.addr(), format!("{{ ca = {ca}, server_name = \"other.test\" }}")),
            ("rogue", rogue.addr(), format!("{{ ca = {ca}, server_name = \"backend.test\" }}")),
            ("no_cert", mtls.addr(), format!("{{ ca = {ca}, server_name = \"backend.test\" }}")),
            (
                "with_cert",
                mtls.addr(),
                format!(
                    "{{ ca = {ca}, server_name = \"backend.test\", cert = {}, key = {} }}",
                    toml_path(&client_cert),
                    toml_path(&client_key)
                ),
            ),
        ];
        let mut text = String::new();
        let mut routes = String::from("[[servers]]\ndefault = true\n");
        for (name, addr, tls) in &upstreams {
            text.push_str(&format!(
                "[upstreams.{name}]\nprotocol = \"http2\"\nmax_fails = 0\nendpoints = [\"{addr}\"]\ntls = {tls}\n\n"
            ));
            routes.push_str(&format!(
                "\n[[servers.routes]]\nprefix = \"/{name}/\"\nupstream = \"{name}\"\n"
            ));
        }
        let proxy = TestProxy::start(&format!("{text}{routes}")).await;
        let mut c = Conn::connect(proxy.addr()).await;
        for (name, status) in [
            ("by_ip", 200),
            ("named", 200),
            ("wrong_name", 502),
            ("rogue", 502),
            ("no_cert", 502),
            ("with_cert", 200),
        ] {
            let r = c.get_host("up.test", &format!("/{name}/x")).await;
            assert_eq!(r.status, status, "upstream {name}: {}", r.text());
        }
        assert_eq!(good.hits(), 2);
        assert_eq!(rogue.hits(), 0);
        assert_eq!(mtls.hits(), 1);
        assert_eq!(
            mtls.last_request().unwrap().peer_subject.as_deref(),
            Some("CN=edge-proxy,O=Edge")
        );
        assert!(rogue.failed_handshakes() >= 1);
        assert!(mtls.failed_handshakes() >= 1);
    })
    .await;
}

/// A plain listener with h2c and `settings`, routing `/h1/` to an HTTP/1.1 upstream at `{H1}`
/// and `/h2/` to an h2c upstream at `{H2}`.
fn two_upstreams(h1: SocketAddr, h2: SocketAddr, settings: &str) -> String {
    let text = r#"
[[listeners]]
address = "127.0.0.1:0"
h2c = true

[upstreams.h1]
endpoints = ["{H1}"]

[upstreams.h2]
protocol = "http2"
endpoints = ["{H2}"]

[[servers]]
default = true

[[servers.routes]]
prefix = "/h1/"
upstream = "h1"

[[servers.routes]]
prefix = "/h2/"
upstream = "h2"
"#;
    format!("{settings}\n{}", fill(text, &[("H1", h1), ("H2", h2)]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_mib_each_way_through_small_windows() {
    within(60, "large bodies", async {
        const SIZE: u64 = 8 * 1024 * 1024;
        let h1_backend = Backend::start("h1").await;
        let h2_backend = H2Backend::h2c("h2").await;
        let settings =
            "[http2]\ninitial_stream_window = 65535\ninitial_connection_window = 65535\n";
        let proxy = TestProxy::start(&two_upstreams(
            h1_backend.addr(),
            h2_backend.addr(),
            settings,
        ))
        .await;
        let h2 = H2Client::connect_h2c(proxy.addr()).await.unwrap();
        let chunks: Vec<Bytes> = (0..SIZE / 65536)
            .map(|i| pattern(i * 65536, 65536))
            .collect();
        let mut sum = Fnv::default();
        for c in &chunks {
            sum.update(c);
        }

        // HTTP/2 upstream. Upload: 128 chunks of 64 KiB of the pattern; the backend counts
        // and checksums.
        let r = h2
            .send(
                post("http://big.test/h2/upload", &[("x-mode", "sink")]),
                chunks.clone(),
                None,
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("x-received-bytes"),
            Some(SIZE.to_string().as_str())
        );
        let expected = format!("{:016x}", sum.value());
        assert_eq!(r.header("x-received-fnv"), Some(expected.as_str()));
        // Download.
        let mut head = get("http://big.test/h2/download");
        head.headers_mut()
            .insert("x-download", HeaderValue::from(SIZE));
        let r = h2.send(head, Vec::new(), None).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len() as u64, SIZE);
        assert_eq!(
            pattern_mismatch(0, &r.body),
            None,
            "downloaded bytes differ"
        );

        // HTTP/1.1 upstream: the echo backend counts the upload and streams `x` bytes down.
        let r = h2
            .send(post("http://big.test/h1/upload", &[]), chunks, None)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        let e = Echo::parse(&r.body).expect("echo");
        assert_eq!(e.body_len, SIZE);
        // The echo keeps the body's start as lossy text; the pattern's first 128 bytes are ASCII.
        assert_eq!(e.body.as_bytes()[..128], pattern(0, 128)[..]);
        let mut head = get("http://big.test/h1/download");
        head.headers_mut()
            .insert("x-download", HeaderValue::from(SIZE));
        let r = h2.send(head, Vec::new(), None).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len() as u64, SIZE);
        assert!(r.body.iter().all(|b| *b == b'x'), "downloaded bytes differ");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_streams_on_one_connection() {
    within(30, "many streams", async {
        let h1_backend = Backend::start("h1").await;
        let h2_backend = H2Backend::h2c("h2").await;
        let settings = "[http2]\nmax_concurrent_streams = 50\n";
        let proxy = TestProxy::start(&two_upstreams(
            h1_backend.addr(),
            h2_backend.addr(),
            settings,
        ))
        .await;
        let h2 = H2Client::connect_h2c(proxy.addr()).await.unwrap();
        assert_eq!(
            h2.get("http://many.test/h1/first").await.unwrap().status,
            200
        );
        assert_eq!(h2.sender().current_max_send_streams(), 50);

        for upstream in ["h1", "h2"] {
            let tasks: Vec<_> = (0..200)
                .map(|i| {
                    let sender = h2.sender();
                    tokio::spawn(async move {
                        let mut head = get(&format!("http://many.test/{upstream}/s/{i}"));
                        head.headers_mut()
                            .insert("x-delay-ms", HeaderValue::from_static("20"));
                        send_on(sender, head, Vec::new(), None).await
                    })
                })
                .collect();
            for (i, t) in tasks.into_iter().enumerate() {
                let r = t
                    .await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("{upstream} stream {i}: {e}"));
                assert_eq!(r.status, 200, "{upstream} stream {i}");
                let path = format!("/{upstream}/s/{i}");
                if upstream == "h1" {
                    assert_eq!(Echo::parse(&r.body).expect("echo").uri, path);
                } else {
                    assert_eq!(r.header("x-path"), Some(path.as_str()));
                }
            }
        }
        assert_eq!(h1_backend.hits(), 201);
        assert_eq!(h2_backend.hits(), 200);
        assert!(
            h2_backend.accepts() <= 2,
            "200 streams to an HTTP/2 upstream opened {} connections",
            h2_backend.accepts()
        );
        assert!(!h2.is_closed());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_streams_in_flight_and_sends_goaway() {
    within(30, "HTTP/2 graceful shutdown", async {
        let backend = Backend::start("app").await;
        let settings = "[proxy]\nshutdown_timeout = \"10s\"\n";
        let proxy = TestProxy::start(&h2c_proxy("http1", backend.addr(), settings)).await;
        let addr = proxy.addr();
        let h2 = H2Client::connect_h2c(addr).await.unwrap();
        let mut head = get("http://drain.test/slow");
        head.headers_mut()
            .insert("x-delay-ms", HeaderValue::from_static("1000"));
        let slow = tokio::spawn(send_on(h2.sender(), head, Vec::new(), None));
        assert!(
            wait_until(Duration::from_secs(5), || backend.hits() == 1).await,
            "the slow request never reached the backend"
        );

        let shutdown = tokio::spawn(proxy.shutdown());
        // New streams are refused once the GOAWAY arrives.
        let mut refused = None;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            match send_on(h2.sender(), get("http://drain.test/late"), Vec::new(), None).await {
                Err(e) => {
                    refused = Some(e);
                    break;
                }
                Ok(r) => assert!(
                    !slow.is_finished(),
                    "a new stream was served after shutdown started: {}",
                    r.status
                ),
            }
        }
        let refused = refused.expect("new streams were still accepted a second after shutdown");
        assert!(
            refused.is_go_away() || refused.reason() == Some(h2::Reason::REFUSED_STREAM),
            "new stream failed with {refused:?}, not GOAWAY"
        );

        let r = slow
            .await
            .unwrap()
            .expect("the stream in flight was cut off");
        assert_eq!(r.status, 200);
        assert_eq!(Echo::parse(&r.body).expect("echo").uri, "/slow");
        tokio::time::timeout(Duration::from_secs(5), shutdown)
            .await
            .expect("shutdown did not finish after the last stream")
            .unwrap();
        assert!(
            wait_until(Duration::from_secs(5), || h2.is_closed()).await,
            "the connection stayed open after shutdown"
        );
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_list_is_refused_and_the_connection_survives() {
    within(30, "oversized header list", async {
        let backend = Backend::start("app").await;
        let settings = "[http2]\nmax_header_list_size = 8192\n";
        let proxy = TestProxy::start(&h2c_proxy("http1", backend.addr(), settings)).await;
        let h2 = H2Client::connect_h2c(proxy.addr()).await.unwrap();
        assert_eq!(h2.get("http://big.test/before").await.unwrap().status, 200);

        let mut head = get("http://big.test/huge");
        let big = "a".repeat(12_000);
        head.headers_mut()
            .insert("x-big", HeaderValue::from_str(&big).unwrap());
        match h2.send(head, Vec::new(), None).await {
            Ok(r) => assert_eq!(r.status, 431, "an oversized header list got {}", r.status),
            Err(e) => assert!(e.reason().is_some(), "not a stream reset: {e:?}"),
        }
        // More fields than the default limit of 100 (each small).
        let mut head = get("http://big.test/many");
        for i in 0..101 {
            head.headers_mut().insert(
                http::HeaderName::from_bytes(format!("x-f{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("1"),
            );
        }
        let r = h2.send(head, Vec::new(), None).await.unwrap();
        assert_eq!(r.status, 431, "101 header fields");
        let r = h2.get("http://big.test/after").await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(Echo::parse(&r.body).expect("echo").uri, "/after");
        assert_eq!(
            backend.hits(),
            2,
            "the oversized request reached the backend"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_wide_size_limits_apply_to_http2() {
    within(30, "[proxy] limits over HTTP/2", async {
        let backend = Backend::start("app").await;
        let settings =
            "[proxy]\nmax_uri_bytes = 200\nmax_header_bytes = 2048\nmax_body_bytes = 1000\n";
        let proxy = TestProxy::start(&h2c_proxy("http1", backend.addr(), settings)).await;
        let h2 = H2Client::connect_h2c(proxy.addr()).await.unwrap();

        let long_path = format!("http://limits.test/{}", "p".repeat(300));
        let r = h2.get(&long_path).await.unwrap();
        assert_eq!(r.status, 414, "a 300-byte path with max_uri_bytes = 200");

        let mut head = get("http://limits.test/big-header");
        head.headers_mut()
            .insert("x-big", HeaderValue::from_str(&"h".repeat(3000)).unwrap());
        let r = h2.send(head, Vec::new(), None).await.unwrap();
        assert_eq!(
            r.status, 431,
            "3000 header bytes with max_header_bytes = 2048"
        );

        let body = vec![Bytes::from(vec![b'b'; 2000])];
        let r = h2
            .send(post("http://limits.test/upload", &[]), body, None)
            .await
            .unwrap();
        assert_eq!(r.status, 413, "2000 body bytes with max_body_bytes = 1000");

        let body = vec![Bytes::from(vec![b'b'; 900])];
        let r = h2
            .send(post("http://limits.test/small", &[]), body, None)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(Echo::parse(&r.body).expect("echo").body_len, 900);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_wide_header_count_limit_applies_to_http2() {
    within(30, "max_headers over HTTP/2", async {
        let backend = Backend::start("app").await;
        let settings = "[proxy]\nmax_headers = 20\n";
        let proxy = TestProxy::start(&h2c_proxy("http1", backend.addr(), settings)).await;
        let names: Vec<String> = (0..30).map(|i| format!("x-field-{i}")).collect();

        // The control: HTTP/1.1 on the same listener.
        let mut text = String::from("GET /many HTTP/1.1\r\nHost: limits.test\r\n");
        for n in &names {
            text.push_str(&format!("{n}: v\r\n"));
        }
        text.push_str("\r\n");
        let r = tests::raw::exchange(proxy.addr(), text.as_bytes())
            .await
            .unwrap();
        assert_eq!(r.status, 431, "HTTP/1.1 with 31 header fields");

        let h2 = H2Client::connect_h2c(proxy.addr()).await.unwrap();
        let mut head = get("http://limits.test/many");
        for n in &names {
            head.headers_mut().insert(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        let r = h2.send(head, Vec::new(), None).await.unwrap();
        assert_eq!(
            r.status, 431,
            "HTTP/2 with 30 header fields and max_headers = 20"
        );
        assert_eq!(backend.hits(), 0);
    })
    .await;
}

//! The proxy's HTTP/2 driven by clients we did not write: `curl --http2` over TLS and
//! `curl --http2-prior-knowledge` over h2c, `nghttp` over both, and `h2load` for many streams
//! over a few connections.
//!
//! Each test is skipped, with a notice on stderr, when its tool is not on `PATH` (CI installs
//! curl and nghttp2-client).

// Tests panic on purpose: a failed assertion or setup step is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tests::client::Echo;
use tests::tls::{TestCa, TestDir, cert_entry};
use tests::{Backend, TestProxy, fill, within};
use tokio::time::Instant;

/// A TLS listener (HTTP/2 and HTTP/1.1 by ALPN) first, an h2c listener second, both routing to
/// the upstream at `{A}`.
const CONFIG: &str = r#"
[[listeners]]
address = "127.0.0.1:0"

[listeners.tls]
certificates = [{ENTRY}]

[[listeners]]
address = "127.0.0.1:0"
h2c = true

[upstreams.app]
endpoints = ["{A}"]

[[servers]]
default = true

[[servers.routes]]
prefix = "/"
upstream = "app"
"#;

const NAME: &str = "tools.example.test";

/// The fixture: a backend, a CA file, and the proxy with its TLS and h2c addresses.
struct Setup {
    dir: TestDir,
    backend: Backend,
    proxy: TestProxy,
}

impl Setup {
    async fn start() -> Setup {
        let dir = TestDir::new("h2-tools");
        let ca = TestCa::new("tools test CA");
        ca.write(&dir, "ca.pem");
        // The IP address is in the certificate (for clients connecting by address) but not in
        // `names`: IP clients send no SNI and get the default certificate.
        let (cert, key) = ca.server_cert(&[NAME, "127.0.0.1"]).write(&dir, "site");
        let backend = Backend::start("app").await;
        let text = fill(CONFIG, &[("A", backend.addr())])
            .replace("{ENTRY}", &cert_entry(&[NAME], &cert, &key));
        let proxy = TestProxy::start(&text).await;
        Setup {
            dir,
            backend,
            proxy,
        }
    }

    fn tls(&self) -> std::net::SocketAddr {
        self.proxy.running().addrs()[0]
    }

    fn h2c(&self) -> std::net::SocketAddr {
        self.proxy.running().addrs()[1]
    }
}

fn available(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("NOTICE: `{tool}` not found on PATH; skipping its HTTP/2 test");
    }
    ok
}

/// Runs `tool args`, killing it after 20 s.
async fn run(tool: &str, args: &[String]) -> Output {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {tool}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{tool} {args:?} ran past 20 s; stdout: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `curl -D - ... -w '\n%{http_version}'`: (status line, body, HTTP version).
fn split_curl(out: &Output) -> (String, String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, rest) = stdout.split_once("\r\n\r\n").expect("a header section");
    let (body, version) = rest.rsplit_once('\n').expect("the write-out line");
    (
        head.lines().next().unwrap().to_owned(),
        body.to_owned(),
        version.to_owned(),
    )
}

fn curl_args(extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--silent",
        "--show-error",
        "--max-time",
        "10",
        "--noproxy",
        "*",
        "-D",
        "-",
        "-w",
        "\n%{http_version}",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend_from_slice(extra);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http2_over_tls_and_prior_knowledge() {
    if !available("curl") {
        return;
    }
    within(40, "curl HTTP/2", async {
        let s = Setup::start().await;
        let port = s.tls().port();
        let out = run(
            "curl",
            &curl_args(&[
                "--http2".into(),
                "--cacert".into(),
                s.dir.join("ca.pem").display().to_string(),
                "--resolve".into(),
                format!("{NAME}:{port}:127.0.0.1"),
                format!("https://{NAME}:{port}/over/tls?x=1"),
            ]),
        )
        .await;
        assert!(out.status.success(), "curl failed: {}", text(&out));
        let (status, body, version) = split_curl(&out);
        assert_eq!(status.trim(), "HTTP/2 200", "{}", text(&out));
        assert_eq!(version, "2");
        let e = Echo::parse(body.as_bytes()).expect("echo body");
        assert_eq!(e.uri, "/over/tls?x=1");
        assert_eq!(e.header("host"), Some(format!("{NAME}:{port}").as_str()));
        assert_eq!(e.header("x-forwarded-proto"), Some("https"));

        let out = run(
            "curl",
            &curl_args(&[
                "--http2-prior-knowledge".into(),
                "--data-binary".into(),
                "posted over h2c".into(),
                format!("http://{}/over/h2c", s.h2c()),
            ]),
        )
        .await;
        assert!(out.status.success(), "curl failed: {}", text(&out));
        let (status, body, version) = split_curl(&out);
        assert_eq!(status.trim(), "HTTP/2 200", "{}", text(&out));
        assert_eq!(version, "2");
        let e = Echo::parse(body.as_bytes()).expect("echo body");
        assert_eq!((e.method.as_str(), e.uri.as_str()), ("POST", "/over/h2c"));
        assert_eq!(e.body, "posted over h2c");
        assert_eq!(s.backend.hits(), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nghttp_over_h2c_and_tls() {
    if !available("nghttp") {
        return;
    }
    within(40, "nghttp", async {
        let s = Setup::start().await;
        // -y: nghttp has no CA option; the certificate is checked by the other tests.
        for (url, tls) in [
            (format!("http://{}/nghttp/h2c", s.h2c()), false),
            (format!("https://{}/nghttp/tls", s.tls()), true),
        ] {
            let out = run(
                "nghttp",
                &["-nvy".into(), "-t".into(), "10".into(), url.clone()],
            )
            .await;
            let log = text(&out);
            assert!(out.status.success(), "nghttp {url} failed: {log}");
            assert!(
                log.lines()
                    .any(|l| l.contains("recv (stream_id=") && l.ends_with(") :status: 200")),
                "nghttp {url}: no 200 received: {log}"
            );
            if tls {
                assert!(
                    log.contains("The negotiated protocol: h2"),
                    "nghttp {url} did not negotiate h2: {log}"
                );
            } else {
                assert!(
                    !log.contains("HTTP Upgrade") && log.contains("recv SETTINGS frame"),
                    "nghttp {url} did not speak h2c with prior knowledge: {log}"
                );
            }
        }
        let uris: Vec<String> = s.backend.requests().into_iter().map(|r| r.uri).collect();
        assert_eq!(uris, ["/nghttp/h2c", "/nghttp/tls"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_many_streams_over_few_connections() {
    if !available("h2load") {
        return;
    }
    within(40, "h2load", async {
        let s = Setup::start().await;
        for url in [
            format!("http://{}/load", s.h2c()),
            format!("https://{}/load", s.tls()),
        ] {
            let before = s.backend.hits();
            let out = run(
                "h2load",
                &[
                    "-n", "200", "-c", "4", "-m", "10", "-T", "10", "-N", "10",
                ]
                .iter()
                .map(|a| (*a).to_owned())
                .chain([url.clone()])
                .collect::<Vec<_>>(),
            )
            .await;
            let log = text(&out);
            assert!(out.status.success(), "h2load {url} failed: {log}");
            assert!(
                log.contains("requests: 200 total, 200 started, 200 done, 200 succeeded, 0 failed, 0 errored, 0 timeout"),
                "h2load {url}: {log}"
            );
            assert!(log.contains("status codes: 200 2xx"), "h2load {url}: {log}");
            if url.starts_with("https") {
                assert!(log.contains("Application protocol: h2"), "h2load {url}: {log}");
            }
            assert_eq!(s.backend.hits() - before, 200, "{url}");
        }
    })
    .await;
}

//! The proxy driven by `curl`, a client we did not write: status, headers and body of a
//! proxied GET, a POST body, a redirect, and keep-alive reuse across URLs in one invocation.
//!
//! Skipped, with a notice on stderr, when `curl` is not on `PATH` (CI installs it).

// Tests panic on purpose: a failed assertion or setup step is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use tests::client::Echo;
use tests::{Backend, TestProxy, fill, within};

const CONFIG: &str = r#"
[proxy]
via = "e2e"

[upstreams.app]
endpoints = ["{A}"]

[[servers]]
names = ["curl.test"]
default = true
response_headers.set = { "x-served-through" = "proxy" }

[[servers.routes]]
exact = "/moved"
redirect = { status = 301, location = "http://$http_host/new-home" }

[[servers.routes]]
prefix = "/"
upstream = "app"
"#;

fn curl_available() -> bool {
    let ok = Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("NOTICE: `curl` not found on PATH; skipping the curl tests");
    }
    ok
}

async fn curl(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args([
                "--silent",
                "--show-error",
                "--max-time",
                "10",
                "--noproxy",
                "*",
            ])
            .args(&args)
            .output()
            .expect("run curl")
    })
    .await
    .unwrap()
}

/// Splits `curl -D -` output into (status, headers, body) for one response.
fn split_response(out: &str) -> (u16, Vec<(String, String)>, String) {
    let (head, body) = out.split_once("\r\n\r\n").expect("a header section");
    let mut lines = head.lines();
    let status_line = lines.next().unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_get_post_and_redirect() {
    if !curl_available() {
        return;
    }
    within(60, "curl", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::start(&fill(CONFIG, &[("A", a.addr())])).await;

        let out = curl(vec![
            "-D".into(),
            "-".into(),
            "-H".into(),
            "X-Forwarded-For: 192.0.2.1".into(),
            proxy.url("/catalog/items?page=3"),
        ])
        .await;
        assert!(
            out.status.success(),
            "curl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let (status, headers, body) = split_response(&text);
        assert_eq!(status, 200, "{text}");
        assert_eq!(header(&headers, "x-backend"), Some("a"));
        assert_eq!(header(&headers, "x-served-through"), Some("proxy"));
        assert_eq!(header(&headers, "via"), Some("1.1 e2e"));
        assert_eq!(header(&headers, "x-request-id").map(str::len), Some(32));
        let e = Echo::parse(body.as_bytes()).expect("echo body");
        assert_eq!(e.uri, "/catalog/items?page=3");
        assert_eq!(e.header("host"), Some(proxy.addr().to_string().as_str()));
        assert!(
            e.header("user-agent")
                .is_some_and(|ua| ua.starts_with("curl/"))
        );
        assert_eq!(e.header("x-forwarded-for"), Some("192.0.2.1, 127.0.0.1"));
        assert_eq!(e.header("x-request-id"), header(&headers, "x-request-id"));

        let out = curl(vec![
            "--data-binary".into(),
            "name=widget&qty=2".into(),
            "-H".into(),
            "Content-Type: application/x-www-form-urlencoded".into(),
            proxy.url("/orders"),
        ])
        .await;
        assert!(out.status.success());
        let e = Echo::parse(&out.stdout).expect("echo body");
        assert_eq!(
            (e.method.as_str(), e.body.as_str()),
            ("POST", "name=widget&qty=2")
        );

        let out = curl(vec![
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code} %{redirect_url}".into(),
            "-H".into(),
            "Host: curl.test".into(),
            proxy.url("/moved"),
        ])
        .await;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "301 http://curl.test/new-home"
        );

        // Following the redirect ends at the backend (same proxy, new path).
        let out = curl(vec![
            "-L".into(),
            "-w".into(),
            "\n%{num_redirects}".into(),
            proxy.url("/moved"),
        ])
        .await;
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, redirects) = text.rsplit_once('\n').unwrap();
        assert_eq!(redirects, "1");
        assert_eq!(Echo::parse(body.as_bytes()).expect("echo").uri, "/new-home");
        assert_eq!(a.hits(), 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reuses_one_connection_for_several_urls() {
    if !curl_available() {
        return;
    }
    within(60, "curl keep-alive", async {
        let a = Backend::start("a").await;
        let proxy = TestProxy::start(&fill(CONFIG, &[("A", a.addr())])).await;
        let out = curl(vec![
            "-w".into(),
            "\n%{http_code} %{num_connects}\n".into(),
            proxy.url("/one"),
            proxy.url("/two"),
            proxy.url("/three"),
        ])
        .await;
        let text = String::from_utf8(out.stdout).unwrap();
        let summaries: Vec<&str> = text.lines().filter(|l| l.starts_with("200 ")).collect();
        // curl reports one new connection for the first URL and none for the others.
        assert_eq!(summaries, ["200 1", "200 0", "200 0"], "{text}");
        assert_eq!(a.hits(), 3);
    })
    .await;
}

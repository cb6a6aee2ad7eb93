//! What the CLI runs, called as a library: `proxy-bin check` is `config::load` plus the
//! `FILE:LINE:COL: message` rendering of `ConfigErrors`; `proxy-bin demo` is `demo::config`
//! served by `server::start`; and `examples/shop.toml` must stay valid.

// Tests panic on purpose: a failed assertion or setup step is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use http::{HeaderMap, Method};
use proxy_bin::config;
use proxy_core::RouteAction;
use tests::client;
use tests::within;

/// A file in the temp directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("proxy-e2e-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn load_errors(path: &Path) -> (config::ConfigErrors, String) {
    let errors = config::load(path).expect_err("the configuration must be rejected");
    let text = errors.to_string();
    (errors, text)
}

#[test]
fn check_reports_every_error_as_file_line_col() {
    let file = TempFile::new(
        "errors",
        r#"[[listeners]]
address = "127.0.0.1:0"

[upstreams.app]
endpoints = ["127.0.0.1:9"]
balancer = "fastest"
fail_timeout = "10 parsecs"

[[servers]]
default = true

[[servers.routes]]
prefix = "no-slash"
upstream = "app"

[[servers.routes]]
prefix = "/x/"
upstream = "missing"
"#,
    );
    let (errors, text) = load_errors(&file.0);
    let p = file.0.display().to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        errors.errors.len(),
        "one line per error:\n{text}"
    );
    assert_eq!(lines.len(), 4, "{text}");
    let expect = [
        (6, 12, "unknown balancer `fastest`"),
        (7, 16, "invalid duration"),
        (13, 10, "path `no-slash` must start with `/`"),
        (18, 12, "unknown upstream `missing`"),
    ];
    for (line, (l, c, msg)) in lines.iter().zip(expect) {
        let prefix = format!("{p}:{l}:{c}: ");
        assert!(
            line.starts_with(&prefix) && line[prefix.len()..].starts_with(msg),
            "expected `{prefix}{msg}...`, got `{line}`\nall:\n{text}"
        );
    }
    assert_eq!(errors.file, file.0);
}

#[test]
fn check_reports_toml_and_schema_errors_with_position() {
    let file = TempFile::new(
        "syntax",
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[upstreams.app]\nendpoints = [\"127.0.0.1:9\"]\nbalancr = \"random\"\n",
    );
    let (_, text) = load_errors(&file.0);
    let p = file.0.display();
    assert!(
        text.starts_with(&format!("{p}:6:1: ")) && text.contains("unknown field `balancr`"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1);

    let file = TempFile::new("broken", "[[listeners]\naddress = \n");
    let (errors, text) = load_errors(&file.0);
    assert_eq!(errors.errors.len(), 1, "{text}");
    assert!(
        text.starts_with(&format!("{}:1:", file.0.display())),
        "{text}"
    );

    let file = TempFile::new("nolisteners", "[log]\nlevel = \"info\"\n");
    let (_, text) = load_errors(&file.0);
    assert!(text.contains("no `[[listeners]]`"), "{text}");
}

#[test]
fn check_reports_a_missing_file() {
    let path = std::env::temp_dir().join(format!("proxy-e2e-{}-absent.toml", std::process::id()));
    let (errors, text) = load_errors(&path);
    assert_eq!(errors.errors.len(), 1);
    assert!(
        text.starts_with(&format!("{}:1:1: cannot read the file", path.display())),
        "{text}"
    );
}

#[test]
fn shop_example_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop.toml");
    let config = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let addrs: Vec<_> = config.listeners.iter().map(|l| l.address).collect();
    assert_eq!(addrs, ["127.0.0.1:8080".parse().unwrap()]);
    let upstream_of = |host: &str, path: &str| {
        let m = config
            .proxy
            .routes
            .find(host, &Method::GET, path, &HeaderMap::new())
            .unwrap_or_else(|| panic!("no route for {host}{path}"));
        match &m.route.action {
            RouteAction::Proxy(p) => p.upstream.name().to_owned(),
            RouteAction::Redirect(_) => "redirect".to_owned(),
        }
    };
    assert_eq!(upstream_of("shop.example.com", "/products/1"), "catalog");
    assert_eq!(upstream_of("shop.example.com", "/checkout/cart"), "orders");
    assert_eq!(upstream_of("shop.example.com", "/account/me"), "accounts");
    assert_eq!(upstream_of("shop.example.com", "/"), "catalog");
    assert_eq!(
        upstream_of("anything.else", "/checkout/x"),
        "orders",
        "default server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_its_routes() {
    within(30, "demo", async {
        let dir = std::env::temp_dir().join(format!("demo-test-{}", std::process::id()));
        let listeners = proxy_bin::demo::DemoListeners {
            plain: "127.0.0.1:0".parse().unwrap(),
            tls: Some(("127.0.0.1:0".parse().unwrap(), dir.clone())),
        };
        let (config, cert) = proxy_bin::demo::config(&listeners)
            .await
            .expect("the demo configuration is valid");
        let cert = cert.expect("a TLS listener was asked for");
        let running = proxy_bin::server::start(config).await.unwrap();
        let addr = running.addrs()[0];
        let tls_addr = running.addrs()[1];
        let banner = proxy_bin::demo::banner(addr, Some((tls_addr, &cert)));
        assert!(banner.contains(&addr.to_string()));
        assert!(banner.contains(&cert.display().to_string()));

        // The catalog is cached: two products are two misses, balanced round robin; the
        // same product again is a hit from the cache.
        let mut served_by = Vec::new();
        for product in ["/products/1", "/products/2"] {
            let r = client::get(addr, product).await;
            assert_eq!(r.status, 200);
            assert!(r.text().starts_with("catalog endpoint"), "{}", r.text());
            assert!(
                r.text().contains(&format!("served GET {product}")),
                "{}",
                r.text()
            );
            served_by.push(r.header("x-served-by").unwrap().to_owned());
        }
        assert_ne!(
            served_by[0], served_by[1],
            "round robin over two catalog endpoints"
        );
        let mut hit = None;
        for _ in 0..20 {
            let r = client::get(addr, "/products/1").await;
            let status = r.header("cache-status").unwrap_or_default().to_owned();
            if status.contains("hit") {
                hit = Some((r.text(), r.header("x-served-by").unwrap().to_owned()));
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let (text, by) = hit.expect("a second GET of a product is a cache hit");
        assert!(text.contains("served GET /products/1"), "{text}");
        assert_eq!(by, served_by[0]);
        let r = client::get(addr, "/checkout/cart").await;
        assert!(r.text().starts_with("orders endpoint"), "{}", r.text());
        let r = client::get(addr, "/old-shop").await;
        assert_eq!(r.status, 301);
        assert_eq!(
            r.header("location"),
            Some(format!("http://{addr}/products/").as_str())
        );
        running.shutdown().await;
    })
    .await;
}

/// The demo's outage switch: `POST /demo/outage?seconds=N` stops one catalog origin like a
/// crash; the proxy takes it out (the health view says so), every request is still answered
/// by the other one, and once the origin is back its health checks bring it back in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_origin_outage_shows_in_the_health_view_and_recovers() {
    within(40, "demo outage", async {
        let listeners = proxy_bin::demo::DemoListeners {
            plain: "127.0.0.1:0".parse().unwrap(),
            tls: None,
        };
        let (config, _) = proxy_bin::demo::config(&listeners).await.unwrap();
        let running = proxy_bin::server::start(config).await.unwrap();
        let addr = running.addrs()[0];
        let catalog = || {
            running
                .proxy()
                .config()
                .upstreams
                .iter()
                .find(|u| u.name() == "catalog")
                .cloned()
                .unwrap()
        };
        let mut c = client::Conn::connect(addr).await;
        let r = c
            .send(
                client::req("POST", "localhost", "/demo/outage?seconds=2")
                    .body(client::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let stopped = r.header("x-served-by").unwrap().to_owned();
        let stopped_addr = stopped.rsplit('@').next().unwrap().to_owned();
        let available = |up: &proxy_core::Upstream| {
            up.health_view(tokio::time::Instant::now())
                .iter()
                .find(|(ep, _)| ep.addr().to_string() == stopped_addr)
                .map(|(_, v)| v.available)
                .unwrap()
        };
        // Requests during the outage all succeed, from the other origin once it is out.
        let mut went_out = false;
        for i in 0..60 {
            let r = client::get(addr, &format!("/during/{i}")).await;
            assert_eq!(r.status, 200, "request {i} failed during the outage");
            if !available(&catalog()) {
                went_out = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(went_out, "the stopped origin never left the health view");
        let mut back = false;
        for _ in 0..150 {
            if available(&catalog()) {
                back = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(
            back,
            "the restarted origin was not brought back by its checks"
        );
        running.shutdown().await;
    })
    .await;
}

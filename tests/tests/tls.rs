//! TLS termination end to end: SNI certificate selection, ALPN, client certificates (mTLS)
//! and `$ssl_client_s_dn`, the 421 domain-fronting guard, HSTS and the HTTPS redirect,
//! certificate reload (watched files and the SIGHUP path) under load, and configuration errors
//! that name the file and the line.

// Tests panic on purpose: a failed assertion or setup step is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tests::client::{BoxError, Echo, Resp, empty, req};
use tests::raw::exchange;
use tests::tls::{
    ClientOptions, H1Client, H2Client, Site, TestCa, TestDir, TlsClient, cert_entry, names_of,
    negotiated_alpn, serial_of, toml_path, write_atomic,
};
use tests::{Backend, TestProxy, fill, wait_until, within};

/// One upstream `app` at `{A}` behind a default server routing everything to it, with the
/// client-certificate variables copied into request headers.
const ROUTES: &str = r#"
[upstreams.app]
endpoints = ["{A}"]

[[servers]]
default = true
request_headers.set = { "x-client-dn" = "$ssl_client_s_dn", "x-client-verify" = "$ssl_client_verify", "x-sni" = "$ssl_server_name", "x-alpn" = "$ssl_alpn_protocol" }

[[servers.routes]]
exact = "/moved"
redirect = { status = 301, location = "https://$host/new" }

[[servers.routes]]
prefix = "/"
upstream = "app"
"#;

/// `[[listeners]]` on `127.0.0.1:0` with a TLS table made of `tls_lines` and `certificates`.
fn tls_listener(tls_lines: &str, sites: &[&Site]) -> String {
    let entries: Vec<&str> = sites.iter().map(|s| s.entry.as_str()).collect();
    format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[listeners.tls]\n{tls_lines}\ncertificates = [{}]\n\n",
        entries.join(", ")
    )
}

/// `GET path` over HTTP/1.1 on a new TLS connection to `addr` for `sni`, with `Host: host`.
async fn h1_get(
    client: &TlsClient,
    addr: std::net::SocketAddr,
    sni: &str,
    host: &str,
    path: &str,
) -> Result<Resp, BoxError> {
    let tls = client.connect(addr, sni).await?;
    let mut h1 = H1Client::handshake(tls).await?;
    h1.get(host, path).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_selects_the_certificate_and_refuse_fails_unknown_names() {
    within(30, "SNI selection", async {
        let dir = TestDir::new("sni");
        let ca = TestCa::new("SNI test CA");
        let a = Site::new(&ca, &dir, "a", &["a.example.test"]);
        let b = Site::new(&ca, &dir, "b", &["b.example.test"]);
        let w = Site::new(&ca, &dir, "w", &["*.example.test"]);
        let backend = Backend::start("app").await;
        let text = format!(
            "{}{}{}",
            tls_listener("", &[&a, &b, &w]),
            tls_listener("unknown_sni = \"refuse\"", &[&a, &b, &w]),
            fill(ROUTES, &[("A", backend.addr())])
        );
        let proxy = TestProxy::start(&text).await;
        let (default_port, refusing) = (proxy.running().addrs()[0], proxy.running().addrs()[1]);
        let verifying = TlsClient::trusting(&ca, &["http/1.1"]);
        let anything = TlsClient::new(ClientOptions {
            alpn: &["http/1.1"],
            ..ClientOptions::default()
        });

        for (sni, site, san) in [
            ("a.example.test", &a, "DNS:a.example.test"),
            ("b.example.test", &b, "DNS:b.example.test"),
            ("c.example.test", &w, "DNS:*.example.test"),
            ("B.Example.TEST", &b, "DNS:b.example.test"),
        ] {
            let leaf = verifying
                .leaf(default_port, sni)
                .await
                .unwrap_or_else(|e| panic!("handshake for {sni}: {e}"));
            assert_eq!(
                serial_of(&leaf),
                site.issued.serial,
                "certificate for {sni}"
            );
            let names = names_of(&leaf);
            assert_eq!(names.sans, [san], "SANs served for {sni}");
            assert_eq!(
                names.subject,
                format!("CN={}", &san[4..]),
                "subject served for {sni}"
            );
        }

        // The wildcard covers one label only; unknown names and no SNI get the default (first).
        for sni in ["x.y.example.test", "unknown.other.test"] {
            let leaf = anything.leaf(default_port, sni).await.unwrap();
            assert_eq!(serial_of(&leaf), a.issued.serial, "default for {sni}");
        }
        let no_sni = TlsClient::new(ClientOptions {
            trust: Some(&ca),
            alpn: &["http/1.1"],
            no_sni: true,
            ..ClientOptions::default()
        });
        let leaf = no_sni.leaf(default_port, "a.example.test").await.unwrap();
        assert_eq!(serial_of(&leaf), a.issued.serial, "default without SNI");

        // The connection the wildcard certificate opened serves requests, and the SNI is
        // visible to header templates.
        let r = h1_get(
            &verifying,
            default_port,
            "c.example.test",
            "c.example.test",
            "/hello",
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200);
        let e = r.echo();
        assert_eq!(e.uri, "/hello");
        assert_eq!(e.header("x-sni"), Some("c.example.test"));
        assert_eq!(e.header("x-forwarded-proto"), Some("https"));

        // `unknown_sni = "refuse"`: known names still work, unknown ones and no SNI fail.
        let leaf = verifying.leaf(refusing, "b.example.test").await.unwrap();
        assert_eq!(serial_of(&leaf), b.issued.serial);
        let leaf = verifying.leaf(refusing, "z.example.test").await.unwrap();
        assert_eq!(serial_of(&leaf), w.issued.serial);
        let refused = anything.connect(refusing, "unknown.other.test").await;
        assert!(
            refused.is_err(),
            "unknown SNI was served on a refusing listener"
        );
        let no_sni_anything = TlsClient::new(ClientOptions {
            alpn: &["http/1.1"],
            no_sni: true,
            ..ClientOptions::default()
        });
        let refused = no_sni_anything.connect(refusing, "a.example.test").await;
        assert!(
            refused.is_err(),
            "a client without SNI was served on a refusing listener"
        );
        assert_eq!(backend.hits(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_picks_h2_or_http1_on_one_port_and_http1_only_never_offers_h2() {
    within(30, "ALPN", async {
        let dir = TestDir::new("alpn");
        let ca = TestCa::new("ALPN test CA");
        let site = Site::new(&ca, &dir, "site", &["alpn.example.test"]);
        let backend = Backend::start("app").await;
        let text = format!(
            "{}{}{}",
            tls_listener("", &[&site]),
            tls_listener("alpn = [\"http/1.1\"]", &[&site]),
            fill(ROUTES, &[("A", backend.addr())])
        );
        let proxy = TestProxy::start(&text).await;
        let (both, http1_only) = (proxy.running().addrs()[0], proxy.running().addrs()[1]);
        let name = "alpn.example.test";

        // Offering h2 first gets HTTP/2.
        let tls = TlsClient::trusting(&ca, &["h2", "http/1.1"])
            .connect(both, name)
            .await
            .unwrap();
        assert_eq!(negotiated_alpn(&tls).as_deref(), Some("h2"));
        let h2 = H2Client::handshake(tls).await.unwrap();
        let r = h2.get("https://alpn.example.test/over-h2").await.unwrap();
        assert_eq!(r.status, 200);
        let e = Echo::parse(&r.body).expect("echo");
        assert_eq!(e.uri, "/over-h2");
        assert_eq!(e.header("host"), Some(name));
        assert_eq!(e.header("x-alpn"), Some("h2"));

        // Offering only http/1.1, or no ALPN at all, gets HTTP/1.1 on the same port.
        for offer in [&["http/1.1"][..], &[][..]] {
            let tls = TlsClient::trusting(&ca, offer)
                .connect(both, name)
                .await
                .unwrap();
            let expected = if offer.is_empty() {
                None
            } else {
                Some("http/1.1")
            };
            assert_eq!(
                negotiated_alpn(&tls).as_deref(),
                expected,
                "offer {offer:?}"
            );
            let mut h1 = H1Client::handshake(tls).await.unwrap();
            let r = h1.get(name, "/over-h1").await.unwrap();
            assert_eq!(r.status, 200, "offer {offer:?}");
            let e = r.echo();
            assert_eq!(e.uri, "/over-h1");
            assert_eq!(
                e.header("x-alpn").filter(|a| !a.is_empty()),
                expected,
                "$ssl_alpn_protocol for offer {offer:?}"
            );
        }

        // `alpn = ["http/1.1"]`: a client preferring h2 gets HTTP/1.1, one offering only h2
        // fails the handshake (RFC 7301 section 3.2).
        let tls = TlsClient::trusting(&ca, &["h2", "http/1.1"])
            .connect(http1_only, name)
            .await
            .unwrap();
        assert_eq!(negotiated_alpn(&tls).as_deref(), Some("http/1.1"));
        let mut h1 = H1Client::handshake(tls).await.unwrap();
        assert_eq!(h1.get(name, "/still-h1").await.unwrap().status, 200);
        let only_h2 = TlsClient::trusting(&ca, &["h2"])
            .connect(http1_only, name)
            .await;
        match only_h2 {
            Err(_) => {}
            Ok(tls) => panic!(
                "an h2-only client was accepted on an http/1.1-only listener with ALPN {:?}",
                negotiated_alpn(&tls)
            ),
        }
        assert_eq!(backend.hits(), 4);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_required_and_optional() {
    within(30, "mTLS", async {
        let dir = TestDir::new("mtls");
        let ca = TestCa::new("mTLS test CA");
        let client_ca = TestCa::new("client CA");
        let rogue_ca = TestCa::new("rogue CA");
        let site = Site::new(&ca, &dir, "site", &["mtls.example.test"]);
        let client_ca_path = client_ca.write(&dir, "client-ca.pem");
        let alice = client_ca.client_cert("alice", "Example Org");
        let mallory = rogue_ca.client_cert("mallory", "Example Org");
        let backend = Backend::start("app").await;
        let ca_line = format!("client_ca = {}", toml_path(&client_ca_path));
        let text = format!(
            "{}{}{}",
            tls_listener(&ca_line, &[&site]),
            tls_listener(&format!("{ca_line}\nclient_auth = \"optional\""), &[&site]),
            fill(ROUTES, &[("A", backend.addr())])
        );
        let proxy = TestProxy::start(&text).await;
        let (required, optional) = (proxy.running().addrs()[0], proxy.running().addrs()[1]);
        let name = "mtls.example.test";
        let client = |identity, alpn| {
            TlsClient::new(ClientOptions {
                trust: Some(&ca),
                alpn,
                identity,
                ..ClientOptions::default()
            })
        };
        let anonymous = client(None, &["http/1.1"][..]);
        let as_alice = client(Some(&alice), &["http/1.1"][..]);
        let as_mallory = client(Some(&mallory), &["http/1.1"][..]);

        // Required: no certificate, or one from another CA, gets no response (with TLS 1.3
        // the server's alert arrives after the client's side of the handshake).
        for (who, c) in [("anonymous", &anonymous), ("rogue", &as_mallory)] {
            let r = h1_get(c, required, name, name, "/secret").await;
            assert!(
                r.is_err(),
                "{who} client got a response: {:?}",
                r.map(|r| r.status)
            );
        }
        assert_eq!(backend.hits(), 0);

        let r = h1_get(&as_alice, required, name, name, "/secret")
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        let e = r.echo();
        assert_eq!(e.header("x-client-dn"), Some("CN=alice,O=Example Org"));
        assert_eq!(e.header("x-client-verify"), Some("SUCCESS"));
        // RFC 4514 escaping of special characters survives into the header.
        let odd = client_ca.client_cert("Doe, John+Jr", "A;B");
        let r = h1_get(
            &client(Some(&odd), &["http/1.1"][..]),
            required,
            name,
            name,
            "/odd",
        )
        .await
        .unwrap();
        assert_eq!(
            r.echo().header("x-client-dn"),
            Some(r"CN=Doe\, John\+Jr,O=A\;B")
        );

        // The same identity over HTTP/2.
        let tls = client(Some(&alice), &["h2"][..])
            .connect(required, name)
            .await
            .unwrap();
        let h2 = H2Client::handshake(tls).await.unwrap();
        let r = h2.get("https://mtls.example.test/h2").await.unwrap();
        assert_eq!(r.status, 200);
        let e = Echo::parse(&r.body).expect("echo");
        assert_eq!(e.header("x-client-dn"), Some("CN=alice,O=Example Org"));

        // Optional: anonymous clients are served with no subject, and cannot forge one.
        let tls = anonymous.connect(optional, name).await.unwrap();
        let mut h1 = H1Client::handshake(tls).await.unwrap();
        let r = h1
            .send(
                req("GET", name, "/anon")
                    .header("x-client-dn", "CN=admin")
                    .body(empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        let e = r.echo();
        assert!(
            e.header("x-client-dn").is_none_or(str::is_empty),
            "anonymous client's subject: {:?}",
            e.header_all("x-client-dn")
        );
        assert_eq!(e.header("x-client-verify"), Some("NONE"));
        let r = h1_get(&as_alice, optional, name, name, "/known")
            .await
            .unwrap();
        assert_eq!(
            r.echo().header("x-client-dn"),
            Some("CN=alice,O=Example Org")
        );
        let r = h1_get(&as_mallory, optional, name, name, "/rogue").await;
        assert!(r.is_err(), "a certificate from an unknown CA was accepted");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_fronting_gets_421_over_h2_and_http1() {
    within(30, "421 guard", async {
        let dir = TestDir::new("fronting");
        let ca = TestCa::new("fronting test CA");
        let a = Site::new(&ca, &dir, "a", &["a.example.test", "alias.example.test"]);
        let b = Site::new(&ca, &dir, "b", &["b.example.test"]);
        let w = Site::new(&ca, &dir, "w", &["*.example.test"]);
        let backend = Backend::start("app").await;
        let text = format!(
            "{}{}{}",
            tls_listener("", &[&a, &b, &w]),
            tls_listener("allow_domain_fronting = true", &[&a, &b, &w]),
            fill(ROUTES, &[("A", backend.addr())])
        );
        let proxy = TestProxy::start(&text).await;
        let (guarded, open) = (proxy.running().addrs()[0], proxy.running().addrs()[1]);
        let h2_client = TlsClient::trusting(&ca, &["h2"]);
        let h1_client = TlsClient::trusting(&ca, &["http/1.1"]);

        // (SNI, Host, status on the guarded listener)
        let port = guarded.port();
        let cases = [
            ("a.example.test", "b.example.test".to_owned(), 421),
            ("a.example.test", "alias.example.test".to_owned(), 200),
            ("a.example.test", format!("a.example.test:{port}"), 200),
            ("a.example.test", "elsewhere.test".to_owned(), 421),
            ("c.example.test", "d.example.test".to_owned(), 200),
            ("c.example.test", "a.example.test".to_owned(), 421),
            ("b.example.test", format!("B.EXAMPLE.TEST:{port}"), 200),
        ];
        for (sni, host, status) in &cases {
            // HTTP/2: :authority; one connection per SNI carries every host.
            let tls = h2_client.connect(guarded, sni).await.unwrap();
            let h2 = H2Client::handshake(tls).await.unwrap();
            let r = h2.get(&format!("https://{host}/fronting")).await.unwrap();
            assert_eq!(r.status, *status, "HTTP/2 SNI {sni} :authority {host}");
            // The connection stays usable after a 421.
            let r = h2.get(&format!("https://{sni}/again")).await.unwrap();
            assert_eq!(r.status, 200, "HTTP/2 SNI {sni} after {host}");

            // HTTP/1.1: Host.
            let r = h1_get(&h1_client, guarded, sni, host, "/fronting")
                .await
                .unwrap();
            assert_eq!(r.status, *status, "HTTP/1.1 SNI {sni} Host {host}");

            // `allow_domain_fronting = true` serves every host.
            let tls = h2_client.connect(open, sni).await.unwrap();
            let h2 = H2Client::handshake(tls).await.unwrap();
            let r = h2.get(&format!("https://{host}/open")).await.unwrap();
            assert_eq!(r.status, 200, "open HTTP/2 SNI {sni} :authority {host}");
            let r = h1_get(&h1_client, open, sni, host, "/open").await.unwrap();
            assert_eq!(r.status, 200, "open HTTP/1.1 SNI {sni} Host {host}");
        }
        let misdirected = cases.iter().filter(|c| c.2 == 421).count();
        // Per case: guarded h2 (+1 follow-up), guarded h1, open h2, open h1.
        assert_eq!(backend.hits(), cases.len() * 5 - misdirected * 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_on_tls_responses_and_redirect_https_on_plain_listeners() {
    within(30, "HSTS and redirect", async {
        let dir = TestDir::new("hsts");
        let ca = TestCa::new("HSTS test CA");
        let site = Site::new(&ca, &dir, "site", &["shop.example.test"]);
        let backend = Backend::start("app").await;
        let hsts = "max-age=31536000; includeSubDomains";
        let text = format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\nhsts = \"{hsts}\"\n\n[listeners.tls]\n\
             certificates = [{}]\n\n\
             [[listeners]]\naddress = \"127.0.0.1:0\"\nh2c = true\nredirect_https = 8443\n\n\
             [[listeners]]\naddress = \"127.0.0.1:0\"\nredirect_https = 443\n\n\
             [[listeners]]\naddress = \"127.0.0.1:0\"\n\n{}",
            site.entry,
            fill(ROUTES, &[("A", backend.addr())])
        );
        let proxy = TestProxy::start(&text).await;
        let addrs = proxy.running().addrs().to_vec();
        let (tls_addr, redirect_8443, redirect_443, plain) =
            (addrs[0], addrs[1], addrs[2], addrs[3]);
        let name = "shop.example.test";

        // HTTP/1.1 over TLS: proxied and proxy-generated responses both carry HSTS; an
        // upstream's own header is kept.
        let h1_client = TlsClient::trusting(&ca, &["http/1.1"]);
        let tls = h1_client.connect(tls_addr, name).await.unwrap();
        let mut h1 = H1Client::handshake(tls).await.unwrap();
        let r = h1.get(name, "/page").await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header_all("strict-transport-security"), [hsts]);
        let r = h1.get(name, "/moved").await.unwrap();
        assert_eq!(r.status, 301);
        assert_eq!(r.header_all("strict-transport-security"), [hsts]);
        let r = h1
            .send(
                req("GET", name, "/own")
                    .header("x-response-header", "Strict-Transport-Security: max-age=60")
                    .body(empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.header_all("strict-transport-security"), ["max-age=60"]);

        // HTTP/2 over TLS.
        let tls = TlsClient::trusting(&ca, &["h2"])
            .connect(tls_addr, name)
            .await
            .unwrap();
        let h2 = H2Client::handshake(tls).await.unwrap();
        let r = h2.get("https://shop.example.test/page").await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("strict-transport-security"), Some(hsts));

        // Cleartext responses never carry it.
        let r = tests::client::get_host(plain, name, "/page").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("strict-transport-security"), None);

        // `redirect_https`: 308 to the same path and query on the HTTPS port, for any method,
        // without reaching the upstream.
        let hits = backend.hits();
        let r = exchange(
            redirect_8443,
            b"GET /some/path?x=1&y=two HTTP/1.1\r\nHost: shop.example.test:8080\r\n\r\n",
        )
        .await
        .unwrap();
        assert_eq!(r.status, 308);
        assert_eq!(
            r.header("location"),
            Some("https://shop.example.test:8443/some/path?x=1&y=two")
        );
        assert_eq!(r.header("strict-transport-security"), None);
        let r = exchange(
            redirect_8443,
            b"POST /form HTTP/1.1\r\nHost: shop.example.test\r\nContent-Length: 3\r\n\r\na=1",
        )
        .await
        .unwrap();
        assert_eq!(r.status, 308);
        assert_eq!(
            r.header("location"),
            Some("https://shop.example.test:8443/form")
        );
        let h2c = H2Client::connect_h2c(redirect_8443).await.unwrap();
        let r = h2c
            .get("http://shop.example.test/over/h2c?z=9")
            .await
            .unwrap();
        assert_eq!(r.status, 308);
        assert_eq!(
            r.header("location"),
            Some("https://shop.example.test:8443/over/h2c?z=9")
        );
        let r = exchange(
            redirect_443,
            b"GET /p?q HTTP/1.1\r\nHost: shop.example.test:8080\r\n\r\n",
        )
        .await
        .unwrap();
        assert_eq!(r.status, 308);
        assert_eq!(r.header("location"), Some("https://shop.example.test/p?q"));
        assert_eq!(backend.hits(), hits);
    })
    .await;
}

/// Results of a client loop: one entry per request, `Ok(serial)` or `Err(what failed)`.
type Outcomes = Arc<Mutex<Vec<Result<u64, String>>>>;

/// Requests `GET /load` on a new TLS connection (full handshake) each, until `stop`.
fn client_loop(
    client: TlsClient,
    addr: std::net::SocketAddr,
    name: &'static str,
    stop: Arc<AtomicBool>,
    outcomes: Outcomes,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // Bounded even if `stop` is never set.
        for _ in 0..20_000 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let outcome = async {
                let tls = client
                    .connect(addr, name)
                    .await
                    .map_err(|e| e.to_string())?;
                let serial = serial_of(&tests::tls::peer_leaf(&tls));
                let mut h1 = H1Client::handshake(tls).await.map_err(|e| e.to_string())?;
                let r = h1.get(name, "/load").await.map_err(|e| e.to_string())?;
                if r.status != 200 {
                    return Err(format!("status {}", r.status));
                }
                Ok(serial)
            }
            .await;
            outcomes.lock().unwrap().push(outcome);
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_certificate_files_reload_under_load_and_bad_files_keep_the_old_one() {
    within(40, "certificate reload under load", async {
        let dir = TestDir::new("reload");
        let ca = TestCa::new("reload test CA");
        let name = "reload.example.test";
        let site = Site::new(&ca, &dir, "site", &[name]);
        let backend = Backend::start("app").await;
        let text = format!(
            "{}{}",
            tls_listener("watch_interval = \"100ms\"", &[&site]),
            fill(ROUTES, &[("A", backend.addr())])
        );
        let proxy = TestProxy::start(&text).await;
        let addr = proxy.addr();
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes: Outcomes = Arc::default();
        let client = client_loop(
            TlsClient::trusting(&ca, &["http/1.1"]),
            addr,
            name,
            stop.clone(),
            outcomes.clone(),
        );
        let count = || outcomes.lock().unwrap().len();
        let last = || outcomes.lock().unwrap().last().cloned();
        assert!(
            wait_until(Duration::from_secs(10), || count() >= 20).await,
            "the client loop made {} requests in 10 s",
            count()
        );
        assert_eq!(last(), Some(Ok(site.issued.serial)));
        // A connection opened before the reload keeps working after it.
        let tls = TlsClient::trusting(&ca, &["h2"])
            .connect(addr, name)
            .await
            .unwrap();
        let h2 = H2Client::handshake(tls).await.unwrap();
        assert_eq!(
            h2.get("https://reload.example.test/early")
                .await
                .unwrap()
                .status,
            200
        );

        // Replace the certificate with a new one for the same name.
        let renewed = ca.server_cert(&[name]);
        renewed.write_to(&site.cert, &site.key);
        let switched = wait_until(Duration::from_secs(10), || {
            last() == Some(Ok(renewed.serial))
        })
        .await;
        assert!(
            switched,
            "new handshakes never saw the renewed certificate; last: {:?}",
            last()
        );
        let switched_at = count();

        // A broken key file: the renewed certificate keeps serving.
        write_atomic(
            &site.key,
            "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
        );
        let broken_at = count();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            wait_until(Duration::from_secs(10), || count() >= broken_at + 20).await,
            "the client loop stalled after the key broke"
        );
        stop.store(true, Ordering::Relaxed);
        client.await.unwrap();
        let r = h2.get("https://reload.example.test/late").await.unwrap();
        assert_eq!(r.status, 200, "the connection from before the reload");

        let outcomes = outcomes.lock().unwrap().clone();
        let failed: Vec<_> = outcomes.iter().filter(|o| o.is_err()).collect();
        assert!(
            failed.is_empty(),
            "{} of {} requests failed: {:?}",
            failed.len(),
            outcomes.len(),
            &failed[..failed.len().min(5)]
        );
        // Once the renewed certificate was seen, no handshake went back to the old one, and
        // the broken key changed nothing.
        let after: Vec<u64> = outcomes[switched_at..]
            .iter()
            .map(|o| *o.as_ref().unwrap())
            .collect();
        assert!(
            after.iter().all(|s| *s == renewed.serial),
            "serials after the switch: {after:?}"
        );
        let before: Vec<u64> = outcomes[..switched_at]
            .iter()
            .map(|o| *o.as_ref().unwrap())
            .collect();
        assert!(
            before
                .iter()
                .all(|s| *s == site.issued.serial || *s == renewed.serial),
            "unexpected serials: {before:?}"
        );
        assert_eq!(backend.hits(), outcomes.len() + 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_certificates_picks_up_changes_without_watching() {
    within(30, "SIGHUP certificate reload", async {
        let dir = TestDir::new("sighup");
        let ca = TestCa::new("SIGHUP test CA");
        let name = "hup.example.test";
        let site = Site::new(&ca, &dir, "site", &[name]);
        let backend = Backend::start("app").await;
        let text = format!(
            "{}{}",
            tls_listener("watch_interval = \"0s\"", &[&site]),
            fill(ROUTES, &[("A", backend.addr())])
        );
        let proxy = TestProxy::start(&text).await;
        let client = TlsClient::trusting(&ca, &["http/1.1"]);
        let served = || async { serial_of(&client.leaf(proxy.addr(), name).await.unwrap()) };
        assert_eq!(served().await, site.issued.serial);

        let renewed = ca.server_cert(&[name]);
        renewed.write_to(&site.cert, &site.key);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            served().await,
            site.issued.serial,
            "files were picked up with watching disabled"
        );
        proxy.running().reload_certificates().unwrap();
        assert_eq!(served().await, renewed.serial);

        // A reload that fails names the file and keeps the certificate serving.
        write_atomic(&site.key, "garbage\n");
        let err = proxy
            .running()
            .reload_certificates()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&site.key.display().to_string()),
            "the error does not name the key file: {err}"
        );
        assert_eq!(served().await, renewed.serial);
        let r = h1_get(&client, proxy.addr(), name, name, "/after")
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    })
    .await;
}

#[test]
fn config_errors_name_the_certificate_file_and_line() {
    let dir = TestDir::new("config-errors");
    let ca = TestCa::new("config test CA");
    let one = ca.server_cert(&["one.example.test"]);
    let other = ca.server_cert(&["other.example.test"]);
    let (cert, _) = one.write(&dir, "one");
    let (_, other_key) = other.write(&dir, "other");
    let missing = dir.join("missing.crt");
    let good = Site::new(&ca, &dir, "good", &["good.example.test"]);
    let entry_line = 6;

    let parse = |entry: &str| {
        let text = format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[listeners.tls]\ncertificates = [\n  \
             {entry},\n]\n\n[[servers]]\ndefault = true\n"
        );
        assert_eq!(
            text.lines().nth(entry_line - 1).map(str::trim_start),
            Some(format!("{entry},").as_str()),
            "the entry's line"
        );
        proxy_bin::config::parse(&text)
    };

    // A key that does not belong to the certificate.
    let errors = parse(&cert_entry(&["one.example.test"], &cert, &other_key)).unwrap_err();
    let e = errors
        .iter()
        .find(|e| {
            e.message.contains(&other_key.display().to_string())
                || e.message.contains(&cert.display().to_string())
        })
        .unwrap_or_else(|| panic!("no error names the files: {errors:?}"));
    assert_eq!(e.line, entry_line, "{errors:?}");

    // A certificate file that does not exist.
    let errors = parse(&cert_entry(&["one.example.test"], &missing, &good.key)).unwrap_err();
    let e = errors
        .iter()
        .find(|e| e.message.contains(&missing.display().to_string()))
        .unwrap_or_else(|| panic!("no error names the missing file: {errors:?}"));
    assert_eq!(e.line, entry_line, "{errors:?}");

    // The control: the matching pair parses.
    assert!(parse(&good.entry).is_ok());

    // From a file: relative names resolve against its directory, and the error reads
    // FILE:LINE:COL.
    let config_path = dir.join("proxy.toml");
    std::fs::write(
        &config_path,
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[listeners.tls]\n\
         certificates = [{ names = [\"x.test\"], cert = \"nope.crt\", key = \"good.key\" }]\n",
    )
    .unwrap();
    let err = proxy_bin::config::load(&config_path)
        .unwrap_err()
        .to_string();
    let nope = dir.join("nope.crt").display().to_string();
    assert!(
        err.starts_with(&format!("{}:5:", config_path.display())) && err.contains(&nope),
        "{err}"
    );
    std::fs::write(
        &config_path,
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[listeners.tls]\n\
         certificates = [{ names = [\"good.example.test\"], cert = \"good.crt\", key = \"good.key\" }]\n",
    )
    .unwrap();
    assert!(proxy_bin::config::load(&config_path).is_ok());
}

//! Tests for the TLS module. Certificates are generated at test time with rcgen; handshakes run
//! over `tokio::io::duplex` with tokio-rustls on both ends.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, DnType, SanType};
use rustls_pki_types::PrivateKeyDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::test_support::{
    Ca, TempDir, client_accepting_anything, client_trusting, client_with_cert, handshake,
    have_openssl, pkcs8_to_pkcs1, pkcs8_to_sec1, to_pem, write_file,
};
use super::*;

fn site(id: &str, names: &[&str], key: Arc<rustls::sign::CertifiedKey>) -> Site {
    Site {
        id: id.to_owned(),
        names: names.iter().map(|n| SiteName::parse(n).unwrap()).collect(),
        key,
    }
}

fn certified(
    ca: &Ca,
    names: &[&str],
    dir: &TempDir,
    file: &str,
) -> Arc<rustls::sign::CertifiedKey> {
    let (cert, key) = ca.leaf(names).write(dir, file);
    load_certified_key(&cert, &key).unwrap()
}

fn resolver(sites: Vec<Site>, fallback: Fallback) -> Arc<SniResolver> {
    Arc::new(SniResolver::new(SniTable::new(sites, fallback).unwrap()))
}

fn server(resolver: Arc<SniResolver>) -> Arc<rustls::ServerConfig> {
    server_config(resolver, &ServerOptions::default()).unwrap()
}

fn dummy_key() -> Arc<rustls::sign::CertifiedKey> {
    let ca = Ca::new("dummy");
    let dir = TempDir::new();
    certified(&ca, &["dummy.test"], &dir, "dummy")
}

/// The PEM body lines of a key, to check they never leak into messages.
fn key_body_lines(pem: &str) -> Vec<&str> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Crypto provider

#[test]
fn install_crypto_provider_is_idempotent() {
    install_crypto_provider();
    install_crypto_provider();
    assert!(rustls::crypto::CryptoProvider::get_default().is_some());
}

// ---------------------------------------------------------------------------------------------
// Names and pure selection

#[test]
fn site_names_normalise_and_reject_bad_input() {
    assert_eq!(
        SiteName::parse("Shop.Example.COM.").unwrap(),
        SiteName::Exact("shop.example.com".into())
    );
    assert_eq!(
        SiteName::parse("*.Example.com").unwrap(),
        SiteName::Wildcard("example.com".into())
    );
    assert_eq!(
        SiteName::parse("*.example.com").unwrap().to_string(),
        "*.example.com"
    );
    for bad in [
        "",
        "*",
        "*.",
        "*.*.example.com",
        "a*.example.com",
        "shop.*.com",
        "shop..example.com",
        "shop example.com",
        "-shop.example.com",
        "127.0.0.1",
        "::1",
    ] {
        let err = SiteName::parse(bad).unwrap_err();
        assert!(
            matches!(err, TlsError::InvalidName { .. }),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn select_prefers_exact_then_wildcard_then_default() {
    let key = dummy_key();
    let table = SniTable::new(
        vec![
            site("shop", &["shop.example.com"], Arc::clone(&key)),
            site("wild", &["*.example.com"], Arc::clone(&key)),
            site("fallback", &[], Arc::clone(&key)),
        ],
        Fallback::Site("fallback".into()),
    )
    .unwrap();
    let pick = |name: Option<&str>| {
        let sel = table.select(name);
        (sel.kind(), sel.site().map(|s| s.id.clone()))
    };
    assert_eq!(
        pick(Some("shop.example.com")),
        ("exact", Some("shop".into()))
    );
    assert_eq!(
        pick(Some("SHOP.Example.Com")),
        ("exact", Some("shop".into()))
    );
    assert_eq!(
        pick(Some("shop.example.com.")),
        ("exact", Some("shop".into()))
    );
    assert_eq!(
        pick(Some("api.example.com")),
        ("wildcard", Some("wild".into()))
    );
    assert_eq!(
        pick(Some("API.EXAMPLE.COM")),
        ("wildcard", Some("wild".into()))
    );
    assert_eq!(pick(None), ("default", Some("fallback".into())));
    assert_eq!(
        pick(Some("other.test")),
        ("default", Some("fallback".into()))
    );
}

#[test]
fn wildcard_matches_exactly_one_label() {
    let wild = SiteName::parse("*.example.com").unwrap();
    assert!(wild.matches("a.example.com"));
    assert!(wild.matches("A.Example.com."));
    assert!(!wild.matches("example.com"));
    assert!(!wild.matches("a.b.example.com"));
    assert!(!wild.matches(".example.com"));
    assert!(!wild.matches("aexample.com"));

    let table = SniTable::new(
        vec![site("wild", &["*.example.com"], dummy_key())],
        Fallback::Refuse,
    )
    .unwrap();
    assert_eq!(table.select(Some("a.example.com")).kind(), "wildcard");
    assert_eq!(table.select(Some("a.b.example.com")).kind(), "refused");
    assert_eq!(table.select(Some("example.com")).kind(), "refused");
}

#[test]
fn refuse_mode_selects_nothing_for_unknown_or_missing_sni() {
    let table = SniTable::new(
        vec![site("shop", &["shop.example.com"], dummy_key())],
        Fallback::Refuse,
    )
    .unwrap();
    assert!(table.default_site().is_none());
    assert!(matches!(table.select(None), Selection::Refused));
    assert!(matches!(
        table.select(Some("other.test")),
        Selection::Refused
    ));
    assert!(matches!(
        table.select(Some("shop.example.com")),
        Selection::Exact(_)
    ));
}

#[test]
fn table_rejects_duplicates_and_unknown_default() {
    let key = dummy_key();
    let dup_name = SniTable::new(
        vec![
            site("a", &["shop.example.com"], Arc::clone(&key)),
            site("b", &["SHOP.example.com"], Arc::clone(&key)),
        ],
        Fallback::Refuse,
    );
    assert!(matches!(
        dup_name,
        Err(TlsError::Duplicate {
            what: "site name",
            ..
        })
    ));

    let dup_id = SniTable::new(
        vec![
            site("a", &["a.test"], Arc::clone(&key)),
            site("a", &["b.test"], Arc::clone(&key)),
        ],
        Fallback::Refuse,
    );
    assert!(matches!(
        dup_id,
        Err(TlsError::Duplicate {
            what: "site id",
            ..
        })
    ));

    let unknown = SniTable::new(
        vec![site("a", &["a.test"], key)],
        Fallback::Site("nope".into()),
    );
    assert!(matches!(unknown, Err(TlsError::UnknownDefault { id }) if id == "nope"));
}

// ---------------------------------------------------------------------------------------------
// SNI over real handshakes

#[tokio::test]
async fn sni_picks_the_right_certificate_among_three_sites() {
    let ca = Ca::new("Test CA");
    let dir = TempDir::new();
    let shop = ca.leaf(&["shop.example.com"]);
    let api = ca.leaf(&["api.example.org"]);
    let blog = ca.leaf(&["blog.example.net", "www.blog.example.net"]);
    let mut sites = Vec::new();
    for (id, leaf, names) in [
        ("shop", &shop, &["shop.example.com"][..]),
        ("api", &api, &["api.example.org"][..]),
        (
            "blog",
            &blog,
            &["blog.example.net", "www.blog.example.net"][..],
        ),
    ] {
        let (cert, key) = leaf.write(&dir, id);
        sites.push(site(id, names, load_certified_key(&cert, &key).unwrap()));
    }
    let server = server(resolver(sites, Fallback::Site("shop".into())));
    let client = Arc::new(client_trusting(&ca, &[]));

    for (name, expected) in [
        ("shop.example.com", &shop),
        ("api.example.org", &api),
        ("blog.example.net", &blog),
        ("www.blog.example.net", &blog),
    ] {
        let hs = handshake(Arc::clone(&server), Arc::clone(&client), name).await;
        assert!(hs.server.is_ok(), "{name}: {:?}", hs.server.err());
        assert_eq!(hs.served_leaf(), expected.der, "{name}");
        let server_stream = hs.server.as_ref().unwrap();
        assert_eq!(server_stream.get_ref().1.server_name(), Some(name));
    }
}

#[tokio::test]
async fn wildcard_certificate_is_served_for_one_label_only() {
    let ca = Ca::new("Test CA");
    let dir = TempDir::new();
    let wild = ca.leaf(&["*.example.com"]);
    let fallback = ca.leaf(&["fallback.test"]);
    let (wc, wk) = wild.write(&dir, "wild");
    let (fc, fk) = fallback.write(&dir, "fallback");
    let server = server(resolver(
        vec![
            site(
                "wild",
                &["*.example.com"],
                load_certified_key(&wc, &wk).unwrap(),
            ),
            site(
                "fallback",
                &["fallback.test"],
                load_certified_key(&fc, &fk).unwrap(),
            ),
        ],
        Fallback::Site("fallback".into()),
    ));

    // One label: the wildcard site, and a verifying client accepts it.
    let hs = handshake(
        Arc::clone(&server),
        Arc::new(client_trusting(&ca, &[])),
        "a.example.com",
    )
    .await;
    assert_eq!(hs.served_leaf(), wild.der);

    // Two labels: not the wildcard; the default is served instead.
    let hs = handshake(
        Arc::clone(&server),
        Arc::new(client_accepting_anything()),
        "a.b.example.com",
    )
    .await;
    assert_eq!(hs.served_leaf(), fallback.der);
}

#[tokio::test]
async fn no_sni_gets_the_default_certificate() {
    let ca = Ca::new("Test CA");
    let dir = TempDir::new();
    let shop = ca.leaf(&["shop.example.com"]);
    let fallback = ca.leaf(&["fallback.test"]);
    let (sc, sk) = shop.write(&dir, "shop");
    let (fc, fk) = fallback.write(&dir, "fallback");
    let server = server(resolver(
        vec![
            site(
                "shop",
                &["shop.example.com"],
                load_certified_key(&sc, &sk).unwrap(),
            ),
            site("fallback", &[], load_certified_key(&fc, &fk).unwrap()),
        ],
        Fallback::Site("fallback".into()),
    ));
    let mut client = client_trusting(&ca, &[]);
    client.enable_sni = false;
    let hs = handshake(server, Arc::new(client), "fallback.test").await;
    let server_stream = hs.server.as_ref().unwrap();
    assert_eq!(server_stream.get_ref().1.server_name(), None);
    assert_eq!(hs.served_leaf(), fallback.der);
}

#[tokio::test]
async fn refuse_mode_fails_the_handshake_for_unknown_names() {
    let ca = Ca::new("Test CA");
    let dir = TempDir::new();
    let key = certified(&ca, &["shop.example.com"], &dir, "shop");
    let server = server(resolver(
        vec![site("shop", &["shop.example.com"], key)],
        Fallback::Refuse,
    ));

    let hs = handshake(
        Arc::clone(&server),
        Arc::new(client_accepting_anything()),
        "unknown.example.com",
    )
    .await;
    assert!(hs.server.is_err());
    assert!(hs.client.is_err());

    let mut no_sni = client_accepting_anything();
    no_sni.enable_sni = false;
    let hs = handshake(Arc::clone(&server), Arc::new(no_sni), "shop.example.com").await;
    assert!(hs.server.is_err());
    assert!(hs.client.is_err());

    // The known name still works.
    let hs = handshake(
        server,
        Arc::new(client_trusting(&ca, &[])),
        "shop.example.com",
    )
    .await;
    assert!(hs.server.is_ok() && hs.client.is_ok());
}

// ---------------------------------------------------------------------------------------------
// ALPN

#[tokio::test]
async fn alpn_negotiates_h2_or_http1() {
    let ca = Ca::new("Test CA");
    let dir = TempDir::new();
    let key = certified(&ca, &["shop.example.com"], &dir, "shop");
    let sites = || vec![site("shop", &["shop.example.com"], Arc::clone(&key))];
    let both = server(resolver(sites(), Fallback::Refuse));
    let h1_only = server_config(
        resolver(sites(), Fallback::Refuse),
        &ServerOptions::http1_only(),
    )
    .unwrap();
    let name = "shop.example.com";

    let browser = Arc::new(client_trusting(&ca, &[ALPN_H2, ALPN_HTTP1]));
    let hs = handshake(Arc::clone(&both), Arc::clone(&browser), name).await;
    assert_eq!(hs.alpn().as_deref(), Some(ALPN_H2));

    let h1_client = Arc::new(client_trusting(&ca, &[ALPN_HTTP1]));
    let hs = handshake(Arc::clone(&both), h1_client, name).await;
    assert_eq!(hs.alpn().as_deref(), Some(ALPN_HTTP1));

    let hs = handshake(Arc::clone(&h1_only), Arc::clone(&browser), name).await;
    assert_eq!(hs.alpn().as_deref(), Some(ALPN_HTTP1));

    let no_alpn = Arc::new(client_trusting(&ca, &[]));
    let hs = handshake(Arc::clone(&both), no_alpn, name).await;
    assert_eq!(hs.alpn(), None);

    // Offering only protocols the listener does not speak fails (RFC 7301 section 3.2).
    let h2_only_client = Arc::new(client_trusting(&ca, &[ALPN_H2]));
    let hs = handshake(h1_only, h2_only_client, name).await;
    assert!(hs.server.is_err());
}

// ---------------------------------------------------------------------------------------------
// Client certificates

struct MtlsFixture {
    server_ca: Ca,
    client_ca: Ca,
    client_ca_path: std::path::PathBuf,
    resolver: Arc<SniResolver>,
    dir: TempDir,
}

fn mtls_fixture() -> MtlsFixture {
    let server_ca = Ca::new("Server CA");
    let client_ca = Ca::new("Client CA");
    let dir = TempDir::new();
    let key = certified(&server_ca, &["shop.example.com"], &dir, "shop");
    let client_ca_path = client_ca.write(&dir, "client-ca");
    MtlsFixture {
        resolver: resolver(
            vec![site("shop", &["shop.example.com"], key)],
            Fallback::Refuse,
        ),
        server_ca,
        client_ca,
        client_ca_path,
        dir,
    }
}

fn mtls_server(fx: &MtlsFixture, client_auth: ClientAuth) -> Arc<rustls::ServerConfig> {
    let options = ServerOptions {
        client_auth,
        ..ServerOptions::default()
    };
    server_config(fx.resolver.clone(), &options).unwrap()
}

fn alice(client_ca: &Ca) -> super::test_support::Leaf {
    client_ca.leaf_with(
        &["alice.example.com"],
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &[
            (DnType::OrganizationName, "Example"),
            (DnType::CommonName, "alice"),
        ],
    )
}

/// Whether the client side learns that the server rejected it: either its handshake fails or
/// (TLS 1.3, where the client finishes first) its first read does.
async fn client_sees_rejection(hs: super::test_support::Handshake) -> bool {
    match hs.client {
        Err(_) => true,
        Ok(mut client) => {
            let mut buf = Vec::new();
            client.read_to_end(&mut buf).await.is_err()
        }
    }
}

#[tokio::test]
async fn mtls_required_rejects_anonymous_and_accepts_ca_signed_clients() {
    let fx = mtls_fixture();
    let server = mtls_server(
        &fx,
        ClientAuth::Required {
            ca_file: fx.client_ca_path.clone(),
        },
    );
    let name = "shop.example.com";

    // Without a certificate: the server fails the handshake.
    let anonymous = Arc::new(client_trusting(&fx.server_ca, &[]));
    let hs = handshake(Arc::clone(&server), anonymous, name).await;
    assert!(hs.server.is_err());
    assert!(client_sees_rejection(hs).await);

    // With a certificate signed by the client CA: accepted, and its subject is exposed.
    let client = Arc::new(client_with_cert(&fx.server_ca, &alice(&fx.client_ca)));
    let hs = handshake(Arc::clone(&server), client, name).await;
    let server_stream = hs.server.expect("server accepts a CA-signed client");
    let identity = ClientIdentity::from_connection(server_stream.get_ref().1)
        .unwrap()
        .expect("client presented a certificate");
    assert_eq!(identity.subject, "CN=alice,O=Example");
    assert_eq!(identity.sans, vec!["DNS:alice.example.com".to_owned()]);

    // With a certificate from a CA the listener does not trust: rejected.
    let stranger = Ca::new("Other CA").leaf(&["mallory.example.com"]);
    let client = Arc::new(client_with_cert(&fx.server_ca, &stranger));
    let hs = handshake(server, client, name).await;
    assert!(hs.server.is_err());
    assert!(client_sees_rejection(hs).await);
}

#[tokio::test]
async fn mtls_optional_accepts_clients_with_and_without_certificates() {
    let fx = mtls_fixture();
    let server = mtls_server(
        &fx,
        ClientAuth::Optional {
            ca_file: fx.client_ca_path.clone(),
        },
    );
    let name = "shop.example.com";

    let anonymous = Arc::new(client_trusting(&fx.server_ca, &[]));
    let hs = handshake(Arc::clone(&server), anonymous, name).await;
    let server_stream = hs.server.expect("anonymous client accepted");
    assert_eq!(
        ClientIdentity::from_connection(server_stream.get_ref().1).unwrap(),
        None
    );

    let client = Arc::new(client_with_cert(&fx.server_ca, &alice(&fx.client_ca)));
    let hs = handshake(Arc::clone(&server), client, name).await;
    let server_stream = hs.server.expect("CA-signed client accepted");
    let identity = ClientIdentity::from_connection(server_stream.get_ref().1).unwrap();
    assert_eq!(
        identity.map(|i| i.subject).as_deref(),
        Some("CN=alice,O=Example")
    );

    // Optional still verifies a certificate that is presented.
    let stranger = Ca::new("Other CA").leaf(&["mallory.example.com"]);
    let client = Arc::new(client_with_cert(&fx.server_ca, &stranger));
    let hs = handshake(server, client, name).await;
    assert!(hs.server.is_err());
}

#[test]
fn client_auth_with_a_missing_ca_bundle_names_the_file() {
    let fx = mtls_fixture();
    let missing = fx.dir.join("no-such-ca.pem");
    let options = ServerOptions {
        client_auth: ClientAuth::Required {
            ca_file: missing.clone(),
        },
        ..ServerOptions::default()
    };
    let err = server_config(fx.resolver.clone(), &options).unwrap_err();
    assert!(
        matches!(&err, TlsError::NotFound { path } if *path == missing),
        "{err}"
    );
}

#[test]
fn client_identity_is_rfc4514_with_escaping_and_prefixed_sans() {
    let ca = Ca::new("Test CA");
    let mut params = CertificateParams::new(vec!["bob.example.com".to_owned()]).unwrap();
    params.subject_alt_names.extend([
        SanType::URI("spiffe://example.com/bob".try_into().unwrap()),
        SanType::Rfc822Name("bob@example.com".try_into().unwrap()),
        SanType::IpAddress("192.0.2.7".parse().unwrap()),
    ]);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CountryName, "DE");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Example, Inc.");
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, "#ops");
    params
        .distinguished_name
        .push(DnType::CommonName, "Bob \"B\" <Builder>+1 ");
    let leaf = ca.leaf_from_params(&params);

    let identity = ClientIdentity::from_peer_certificates(&[leaf.der.clone(), ca.der.clone()])
        .unwrap()
        .unwrap();
    assert_eq!(
        identity.subject,
        r#"CN=Bob \"B\" \<Builder\>\+1\ ,OU=\#ops,O=Example\, Inc.,C=DE"#
    );
    assert_eq!(
        identity.sans,
        vec![
            "DNS:bob.example.com".to_owned(),
            "URI:spiffe://example.com/bob".to_owned(),
            "email:bob@example.com".to_owned(),
            "IP:192.0.2.7".to_owned(),
        ]
    );

    assert_eq!(ClientIdentity::from_peer_certificates(&[]).unwrap(), None);
    let garbage = rustls_pki_types::CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
    assert!(matches!(
        ClientIdentity::from_peer_certificates(&[garbage]),
        Err(TlsError::PeerCertificate { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Loading

/// Loads the pair and proves the key signs by completing a verified handshake with it.
async fn assert_serves(ca: &Ca, cert: &Path, key: &Path, what: &str) {
    let certified = load_certified_key(cert, key).unwrap_or_else(|e| panic!("{what}: {e}"));
    let expected_leaf = certified.cert[0].clone();
    let server = server(resolver(
        vec![site("s", &["keys.example.com"], certified)],
        Fallback::Refuse,
    ));
    let hs = handshake(
        server,
        Arc::new(client_trusting(ca, &[])),
        "keys.example.com",
    )
    .await;
    assert!(hs.server.is_ok(), "{what}: {:?}", hs.server.err());
    assert_eq!(hs.served_leaf(), expected_leaf, "{what}");
}

#[tokio::test]
async fn rsa_ecdsa_and_ed25519_keys_load_in_pkcs1_pkcs8_and_sec1() {
    let ca = Ca::new("Test CA");
    let dir = TempDir::new();
    let names = ["keys.example.com"];
    /// PEM label and converter from PKCS#8 to the algorithm's legacy encoding.
    type Legacy = Option<(&'static str, fn(&[u8]) -> Vec<u8>)>;
    let cases: [(&str, &'static rcgen::SignatureAlgorithm, Legacy); 4] = [
        (
            "rsa",
            &rcgen::PKCS_RSA_SHA256,
            Some(("RSA PRIVATE KEY", pkcs8_to_pkcs1)),
        ),
        (
            "p256",
            &rcgen::PKCS_ECDSA_P256_SHA256,
            Some(("EC PRIVATE KEY", pkcs8_to_sec1)),
        ),
        (
            "p384",
            &rcgen::PKCS_ECDSA_P384_SHA384,
            Some(("EC PRIVATE KEY", pkcs8_to_sec1)),
        ),
        ("ed25519", &rcgen::PKCS_ED25519, None),
    ];
    for (label, alg, legacy) in cases {
        let leaf = ca.leaf_with(&names, alg, &[]);
        let (cert, pkcs8_key) = leaf.write(&dir, label);
        assert!(
            std::fs::read_to_string(&pkcs8_key)
                .unwrap()
                .contains("BEGIN PRIVATE KEY")
        );
        assert_serves(&ca, &cert, &pkcs8_key, &format!("{label} PKCS#8")).await;

        if let Some((pem_label, convert)) = legacy {
            let legacy_key = dir.join(&format!("{label}-legacy.key"));
            write_file(&legacy_key, to_pem(pem_label, &convert(&leaf.key_der)));
            let loaded = load_private_key(&legacy_key).unwrap();
            match pem_label {
                "RSA PRIVATE KEY" => assert!(matches!(loaded, PrivateKeyDer::Pkcs1(_))),
                _ => assert!(matches!(loaded, PrivateKeyDer::Sec1(_))),
            }
            assert_serves(&ca, &cert, &legacy_key, &format!("{label} {pem_label}")).await;
        }
    }
}

#[tokio::test]
async fn keys_written_by_openssl_load() {
    if !have_openssl() {
        eprintln!("skipping: no openssl binary");
        return;
    }
    let ca = Ca::new("Test CA");
    let dir = TempDir::new();
    let ca_cert = ca.write(&dir, "ca");
    let ca_key = dir.join("ca.key");
    write_file(&ca_key, &ca.key_pem);
    let ext = dir.join("ext.cnf");
    write_file(&ext, "subjectAltName=DNS:keys.example.com\n");
    let openssl = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap()
            .status
            .success()
    };
    let rsa = dir.join("rsa-openssl.key");
    let ec = dir.join("ec-openssl.key");
    let rsa_s = rsa.to_str().unwrap();
    // OpenSSL 3 needs `-traditional` for PKCS#1; 1.1 writes PKCS#1 by default.
    assert!(
        openssl(&["genrsa", "-traditional", "-out", rsa_s, "2048"])
            || openssl(&["genrsa", "-out", rsa_s, "2048"])
    );
    // `ecparam -genkey` writes SEC1 with the curve parameters.
    assert!(openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        ec.to_str().unwrap()
    ]));
    for (key, marker) in [
        (&rsa, "BEGIN RSA PRIVATE KEY"),
        (&ec, "BEGIN EC PRIVATE KEY"),
    ] {
        assert!(std::fs::read_to_string(key).unwrap().contains(marker));
        let csr = dir.join("req.csr");
        let cert = dir.join("openssl.crt");
        assert!(openssl(&[
            "req",
            "-new",
            "-key",
            key.to_str().unwrap(),
            "-subj",
            "/CN=keys.example.com",
            "-out",
            csr.to_str().unwrap(),
        ]));
        assert!(openssl(&[
            "x509",
            "-req",
            "-in",
            csr.to_str().unwrap(),
            "-CA",
            ca_cert.to_str().unwrap(),
            "-CAkey",
            ca_key.to_str().unwrap(),
            "-set_serial",
            "7",
            "-days",
            "2",
            "-extfile",
            ext.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ]));
        assert_serves(&ca, &cert, key, marker).await;
    }
}

#[test]
fn mismatched_key_and_certificate_names_both_files() {
    let ca = Ca::new("Test CA");
    let dir = TempDir::new();
    let (cert_a, _) = ca.leaf(&["a.example.com"]).write(&dir, "a");
    let b = ca.leaf(&["b.example.com"]);
    let (_, key_b) = b.write(&dir, "b");
    let err = load_certified_key(&cert_a, &key_b).unwrap_err();
    assert!(
        matches!(&err, TlsError::KeyMismatch { cert_path, key_path } if *cert_path == cert_a && *key_path == key_b),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(&*key_b.to_string_lossy()), "{message}");
    assert!(message.contains(&*cert_a.to_string_lossy()), "{message}");
    assert!(message.contains("does not match"), "{message}");
    assert_eq!(err.path(), Some(key_b.as_path()));
    for line in key_body_lines(&b.key_pem) {
        assert!(!message.contains(line));
    }
}

#[test]
fn missing_and_unreadable_files_are_told_apart() {
    let ca = Ca::new("Test CA");
    let dir = TempDir::new();
    let (cert, key) = ca.leaf(&["a.example.com"]).write(&dir, "a");
    let missing = dir.join("missing.key");
    let err = load_certified_key(&cert, &missing).unwrap_err();
    assert!(
        matches!(&err, TlsError::NotFound { path } if *path == missing),
        "{err:?}"
    );
    assert!(err.to_string().contains("file not found"));

    // The mapping itself, independent of who runs the tests.
    let denied = TlsError::from_io(
        &key,
        std::io::Error::from(std::io::ErrorKind::PermissionDenied),
    );
    assert!(matches!(&denied, TlsError::PermissionDenied { path } if *path == key));
    assert!(denied.to_string().contains("permission denied"));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o000)).unwrap();
        if std::fs::File::open(&key).is_ok() {
            // Running as root (or with CAP_DAC_OVERRIDE): permissions are not enforced.
            eprintln!(
                "skipping the permission-denied assertion: file still readable after chmod 000"
            );
        } else {
            let err = load_certified_key(&cert, &key).unwrap_err();
            assert!(
                matches!(&err, TlsError::PermissionDenied { path } if *path == key),
                "{err:?}"
            );
            assert!(err.to_string().contains("permission denied"));
        }
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

#[test]
fn content_problems_get_their_own_errors() {
    let ca = Ca::new("Test CA");
    let dir = TempDir::new();
    let leaf = ca.leaf(&["a.example.com"]);
    let (cert, key) = leaf.write(&dir, "a");

    // A key file given as the certificate: no certificate.
    let err = load_certified_key(&key, &key).unwrap_err();
    assert!(
        matches!(&err, TlsError::NoCertificate { path } if *path == key),
        "{err:?}"
    );

    // A certificate given as the key: no private key.
    let err = load_certified_key(&cert, &cert).unwrap_err();
    assert!(
        matches!(&err, TlsError::NoPrivateKey { path } if *path == cert),
        "{err:?}"
    );

    // Corrupt base64 in the key: unparsable PEM, and no key text in the message.
    let corrupt = dir.join("corrupt.key");
    let mut lines: Vec<String> = leaf.key_pem.lines().map(str::to_owned).collect();
    lines[1].replace_range(0..4, "!!!!");
    write_file(&corrupt, lines.join("\n"));
    let err = load_certified_key(&cert, &corrupt).unwrap_err();
    assert!(
        matches!(&err, TlsError::InvalidPem { path, .. } if *path == corrupt),
        "{err:?}"
    );
    let message = format!("{err} {err:?}");
    for line in key_body_lines(&leaf.key_pem) {
        assert!(!message.contains(&line[4..]), "key text leaked: {message}");
    }

    // A missing END line.
    let truncated = dir.join("truncated.crt");
    write_file(
        &truncated,
        leaf.cert_pem.lines().take(3).collect::<Vec<_>>().join("\n"),
    );
    let err = load_cert_chain(&truncated).unwrap_err();
    assert!(
        matches!(&err, TlsError::InvalidPem { path, .. } if *path == truncated),
        "{err:?}"
    );

    // Valid PEM around bytes that are not a certificate.
    let not_x509 = dir.join("not-x509.crt");
    write_file(&not_x509, to_pem("CERTIFICATE", b"definitely not DER"));
    let err = load_cert_chain(&not_x509).unwrap_err();
    assert!(
        matches!(&err, TlsError::InvalidCertificate { index: 1, .. }),
        "{err:?}"
    );

    // An Ed448 key (PKCS#8 with the Ed448 OID): a key type the provider cannot use.
    let ed = ca.leaf_with(&["a.example.com"], &rcgen::PKCS_ED25519, &[]);
    let mut der = ed.key_der.clone();
    let oid = [0x06, 0x03, 0x2b, 0x65, 0x70];
    let at = der.windows(oid.len()).position(|w| w == oid).unwrap();
    der[at + 4] = 0x71;
    let ed448 = dir.join("ed448.key");
    write_file(&ed448, to_pem("PRIVATE KEY", &der));
    let (ed_cert, _) = ed.write(&dir, "ed");
    let err = load_certified_key(&ed_cert, &ed448).unwrap_err();
    assert!(
        matches!(&err, TlsError::UnsupportedKey { path, .. } if *path == ed448),
        "{err:?}"
    );

    // Encrypted keys: a pointed message instead of "no private key".
    let encrypted = dir.join("encrypted.key");
    write_file(&encrypted, to_pem("ENCRYPTED PRIVATE KEY", &[0x30, 0x00]));
    let err = load_certified_key(&cert, &encrypted).unwrap_err();
    assert!(matches!(&err, TlsError::UnsupportedKey { .. }), "{err:?}");
    assert!(err.to_string().contains("encrypted"));
}

#[tokio::test]
async fn full_chains_load_and_are_served() {
    let root = Ca::new("Root CA");
    let intermediate = root.intermediate("Intermediate CA");
    let dir = TempDir::new();
    let leaf = intermediate.leaf(&["chain.example.com"]);
    let cert = dir.join("fullchain.pem");
    let key = dir.join("chain.key");
    write_file(&cert, format!("{}{}", leaf.cert_pem, intermediate.cert_pem));
    write_file(&key, &leaf.key_pem);

    let certified = load_certified_key(&cert, &key).unwrap();
    assert_eq!(certified.cert.len(), 2);
    let server = server(resolver(
        vec![site("chain", &["chain.example.com"], certified)],
        Fallback::Refuse,
    ));
    // The client trusts only the root: the intermediate must come from the server.
    let hs = handshake(
        server,
        Arc::new(client_trusting(&root, &[])),
        "chain.example.com",
    )
    .await;
    let client = hs.client.expect("chain verifies");
    let presented = client.get_ref().1.peer_certificates().unwrap();
    assert_eq!(presented.len(), 2);
    assert_eq!(presented[1], intermediate.der);
}

#[test]
fn ca_bundles_load_every_certificate() {
    let dir = TempDir::new();
    let one = Ca::new("CA one");
    let two = Ca::new("CA two");
    let bundle = dir.join("bundle.pem");
    write_file(&bundle, format!("{}\n{}", one.cert_pem, two.cert_pem));
    assert_eq!(load_ca_bundle(&bundle).unwrap().len(), 2);

    let empty = dir.join("empty.pem");
    write_file(&empty, "");
    assert!(matches!(
        load_ca_bundle(&empty),
        Err(TlsError::NoCertificate { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Reload

struct ReloadFixture {
    ca: Ca,
    dir: TempDir,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    store: Arc<CertStore>,
    server: Arc<rustls::ServerConfig>,
    first: super::test_support::Leaf,
}

fn reload_fixture() -> ReloadFixture {
    let ca = Ca::new("Test CA");
    let dir = TempDir::new();
    let first = ca.leaf(&["shop.example.com"]);
    let (cert, key) = first.write(&dir, "shop");
    let (other_cert, other_key) = ca.leaf(&["api.example.com"]).write(&dir, "api");
    let store = Arc::new(
        CertStore::load(
            vec![
                SiteSource {
                    id: "shop".into(),
                    names: vec!["shop.example.com".into()],
                    cert_path: cert.clone(),
                    key_path: key.clone(),
                },
                SiteSource {
                    id: "api".into(),
                    names: vec!["api.example.com".into()],
                    cert_path: other_cert,
                    key_path: other_key,
                },
            ],
            Fallback::Refuse,
        )
        .unwrap(),
    );
    let server = server_config(store.resolver(), &ServerOptions::default()).unwrap();
    ReloadFixture {
        ca,
        dir,
        cert,
        key,
        store,
        server,
        first,
    }
}

async fn served(fx: &ReloadFixture) -> rustls_pki_types::CertificateDer<'static> {
    let client = Arc::new(client_trusting(&fx.ca, &[]));
    handshake(Arc::clone(&fx.server), client, "shop.example.com")
        .await
        .served_leaf()
}

#[tokio::test]
async fn reload_swaps_certificates_for_new_handshakes_only() {
    let fx = reload_fixture();
    assert!(!fx.store.changed_on_disk());
    assert_eq!(served(&fx).await, fx.first.der);

    // A connection opened before the reload.
    let client = Arc::new(client_trusting(&fx.ca, &[]));
    let hs = handshake(Arc::clone(&fx.server), client, "shop.example.com").await;
    let (mut old_client, mut old_server) = (hs.client.unwrap(), hs.server.unwrap());

    let second = fx.ca.leaf(&["shop.example.com"]);
    second.write(&fx.dir, "shop");
    assert!(fx.store.changed_on_disk());
    let report = fx.store.reload().unwrap();
    assert_eq!(report.changed, vec!["shop".to_owned()]);
    assert!(!fx.store.changed_on_disk());
    assert_eq!(served(&fx).await, second.der);

    // The old connection still works and still has the old certificate.
    old_server.write_all(b"still here").await.unwrap();
    old_server.flush().await.unwrap();
    let mut buf = [0u8; 10];
    old_client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here");
    assert_eq!(
        old_client.get_ref().1.peer_certificates().unwrap()[0],
        fx.first.der
    );

    // Reloading unchanged files changes nothing.
    assert_eq!(fx.store.reload().unwrap(), ReloadReport::default());
}

#[tokio::test]
async fn reload_with_a_bad_file_keeps_every_old_certificate() {
    let fx = reload_fixture();
    let api_before = fx
        .store
        .resolver()
        .table()
        .site("api")
        .unwrap()
        .key
        .cert
        .clone();

    // New certificate, but a key that does not match it: the whole reload fails.
    let replacement = fx.ca.leaf(&["shop.example.com"]);
    write_file(&fx.cert, &replacement.cert_pem);
    let err = fx.store.reload().unwrap_err();
    assert!(
        matches!(&err, TlsError::KeyMismatch { key_path, .. } if *key_path == fx.key),
        "{err}"
    );
    assert_eq!(served(&fx).await, fx.first.der);
    assert_eq!(
        fx.store.resolver().table().site("api").unwrap().key.cert,
        api_before
    );
    // The failed attempt is remembered: no retry loop until the files change again.
    assert!(!fx.store.changed_on_disk());

    // Garbage key: still the old certificate.
    write_file(
        &fx.key,
        "-----BEGIN PRIVATE KEY-----\n%%%%\n-----END PRIVATE KEY-----\n",
    );
    assert!(fx.store.changed_on_disk());
    let err = fx.store.reload().unwrap_err();
    assert_eq!(err.path(), Some(fx.key.as_path()));
    assert_eq!(served(&fx).await, fx.first.der);

    // Missing file: still the old certificate.
    std::fs::remove_file(&fx.key).unwrap();
    assert!(fx.store.changed_on_disk());
    assert!(matches!(fx.store.reload(), Err(TlsError::NotFound { .. })));
    assert_eq!(served(&fx).await, fx.first.der);

    // Fixed: the replacement goes live.
    write_file(&fx.key, &replacement.key_pem);
    assert!(fx.store.changed_on_disk());
    assert_eq!(fx.store.reload().unwrap().changed, vec!["shop".to_owned()]);
    assert_eq!(served(&fx).await, replacement.der);
}

#[test]
fn cert_store_load_fails_on_bad_names_and_files() {
    let ca = Ca::new("Test CA");
    let dir = TempDir::new();
    let (cert, key) = ca.leaf(&["a.example.com"]).write(&dir, "a");
    let source = |names: Vec<String>, key_path: std::path::PathBuf| SiteSource {
        id: "a".into(),
        names,
        cert_path: cert.clone(),
        key_path,
    };
    let err = CertStore::load(
        vec![source(vec!["*.*.x".into()], key.clone())],
        Fallback::Refuse,
    )
    .unwrap_err();
    assert!(matches!(err, TlsError::InvalidName { .. }));
    let err = CertStore::load(
        vec![source(vec!["a.example.com".into()], dir.join("nope.key"))],
        Fallback::Refuse,
    )
    .unwrap_err();
    assert!(matches!(err, TlsError::NotFound { .. }));
}

#[tokio::test]
async fn watcher_reloads_when_files_change_and_stops_on_cancel() {
    let fx = reload_fixture();
    let shutdown = CancellationToken::new();
    let watcher = spawn_watcher(
        Arc::clone(&fx.store),
        Duration::from_millis(20),
        shutdown.clone(),
    );

    let second = fx.ca.leaf(&["shop.example.com"]);
    second.write(&fx.dir, "shop");
    let resolver = fx.store.resolver();
    let swapped = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if resolver.table().site("shop").unwrap().key.cert[0] == second.der {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        swapped.is_ok(),
        "watcher did not pick up the new certificate"
    );
    assert_eq!(served(&fx).await, second.der);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("watcher stops on cancel")
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Upstream client side and self-signed certificates

#[tokio::test]
async fn client_config_verifies_with_a_ca_file_and_presents_a_client_certificate() {
    let fx = mtls_fixture();
    let server = mtls_server(
        &fx,
        ClientAuth::Required {
            ca_file: fx.client_ca_path.clone(),
        },
    );
    let server_ca_path = fx.server_ca.write(&fx.dir, "server-ca");
    let (client_cert, client_key) = alice(&fx.client_ca).write(&fx.dir, "alice");

    let config = client_config(
        UpstreamRoots::CaFile(server_ca_path.clone()),
        Some((client_cert, client_key)),
        vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()],
    )
    .unwrap();
    let hs = handshake(Arc::clone(&server), config, "shop.example.com").await;
    assert_eq!(hs.alpn().as_deref(), Some(ALPN_H2));
    let server_stream = hs.server.expect("upstream accepts the client certificate");
    let identity = ClientIdentity::from_connection(server_stream.get_ref().1)
        .unwrap()
        .unwrap();
    assert_eq!(identity.subject, "CN=alice,O=Example");

    // A server certificate for another name is refused by the client.
    let config = client_config(UpstreamRoots::CaFile(server_ca_path), None, vec![]).unwrap();
    let hs = handshake(server, config, "other.example.com").await;
    assert!(hs.client.is_err());

    let missing = fx.dir.join("missing-ca.pem");
    let err = client_config(UpstreamRoots::CaFile(missing.clone()), None, vec![]).unwrap_err();
    assert!(matches!(&err, TlsError::NotFound { path } if *path == missing));
}

#[test]
fn system_roots_load_or_say_why_not() {
    match client_config(UpstreamRoots::System, None, vec![]) {
        Ok(config) => assert!(config.alpn_protocols.is_empty()),
        Err(err) => assert!(matches!(err, TlsError::NoSystemRoots { .. }), "{err}"),
    }
}

#[tokio::test]
async fn self_signed_certificates_are_trusted_by_name_and_ip() {
    let dir = TempDir::new();
    let out = dir.join("demo-tls");
    let (cert, key) = self_signed(&["localhost", "127.0.0.1", "shop.example.com"], &out).unwrap();
    assert_eq!(cert, out.join("cert.pem"));
    assert_eq!(key, out.join("key.pem"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    let store = CertStore::load(
        vec![SiteSource {
            id: "demo".into(),
            names: vec!["localhost".into(), "shop.example.com".into()],
            cert_path: cert.clone(),
            key_path: key.clone(),
        }],
        Fallback::Site("demo".into()),
    )
    .unwrap();
    let server = server_config(store.resolver(), &ServerOptions::default()).unwrap();
    let client = client_config(UpstreamRoots::CaFile(cert.clone()), None, vec![]).unwrap();
    for name in ["localhost", "127.0.0.1", "shop.example.com"] {
        let hs = handshake(Arc::clone(&server), Arc::clone(&client), name).await;
        assert!(hs.client.is_ok(), "{name}: {:?}", hs.client.err());
    }

    // Regenerating replaces both files (and a watcher would notice).
    self_signed(&["localhost"], &out).unwrap();
    assert!(store.changed_on_disk());
    assert!(matches!(
        self_signed(&[], &out),
        Err(TlsError::InvalidName { .. })
    ));
}

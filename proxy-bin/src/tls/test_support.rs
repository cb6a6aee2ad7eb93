//! Test fixtures: a throw-away PKI generated with rcgen, temporary directories, DER/PEM
//! conversions, and in-memory TLS handshakes over `tokio::io::duplex`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SignatureAlgorithm,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::DuplexStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

use super::provider::crypto_provider;

/// A directory under the system temp dir, removed on drop.
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub(super) fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "proxy-bin-tls-{}-{n}-{}",
            std::process::id(),
            fastrand_suffix()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub(super) fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fastrand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Writes `contents` to `path` atomically (temp file + rename), as deploy tools do; the new
/// inode makes the change visible to `CertStore::changed_on_disk` even within one mtime tick.
pub(super) fn write_file(path: &Path, contents: impl AsRef<[u8]>) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A certificate and its key, as PEM.
pub(super) struct Leaf {
    pub(super) cert_pem: String,
    pub(super) key_pem: String,
    pub(super) der: CertificateDer<'static>,
    pub(super) key_der: Vec<u8>,
}

impl Leaf {
    /// Writes `NAME.crt` and `NAME.key` into `dir`.
    pub(super) fn write(&self, dir: &TempDir, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(&format!("{name}.crt"));
        let key = dir.join(&format!("{name}.key"));
        write_file(&cert, &self.cert_pem);
        write_file(&key, &self.key_pem);
        (cert, key)
    }
}

/// A CA that issues leaf (and intermediate) certificates.
pub(super) struct Ca {
    pub(super) cert_pem: String,
    pub(super) key_pem: String,
    pub(super) der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub(super) fn new(cn: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let params = ca_params(cn);
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An intermediate CA signed by this one.
    pub(super) fn intermediate(&self, cn: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let params = ca_params(cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server/client leaf for `names` with an ECDSA P-256 key.
    pub(super) fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_with(names, &rcgen::PKCS_ECDSA_P256_SHA256, &[])
    }

    /// A leaf with a chosen key algorithm and extra subject attributes (pushed in order after
    /// none; the CN is the first name unless `dn` sets one).
    pub(super) fn leaf_with(
        &self,
        names: &[&str],
        alg: &'static SignatureAlgorithm,
        dn: &[(DnType, &str)],
    ) -> Leaf {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        let mut name = DistinguishedName::new();
        if dn.is_empty() {
            name.push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        }
        for (ty, value) in dn {
            name.push(ty.clone(), *value);
        }
        params.distinguished_name = name;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// A leaf whose params are built by the caller (for SAN kinds `CertificateParams::new`
    /// cannot express).
    pub(super) fn leaf_from_params(&self, params: &CertificateParams) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    pub(super) fn write(&self, dir: &TempDir, name: &str) -> PathBuf {
        let path = dir.join(&format!("{name}.pem"));
        write_file(&path, &self.cert_pem);
        path
    }

    pub(super) fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        roots
    }
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// A client config that verifies servers against `ca`, offering `alpn`.
pub(super) fn client_trusting(ca: &Ca, alpn: &[&[u8]]) -> ClientConfig {
    let mut config = ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// Like [`client_trusting`] but presenting `leaf` as a client certificate.
pub(super) fn client_with_cert(ca: &Ca, leaf: &Leaf) -> ClientConfig {
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(leaf.key_der.clone().into());
    ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_client_auth_cert(vec![leaf.der.clone()], key)
        .unwrap()
}

/// A client that accepts any server certificate, so a test can see which one the server
/// chose even when it does not cover the name asked for. Tests only.
pub(super) fn client_accepting_anything() -> ClientConfig {
    ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert))
        .with_no_client_auth()
}

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

/// The two ends of one handshake.
pub(super) struct Handshake {
    pub(super) client: io::Result<client::TlsStream<DuplexStream>>,
    pub(super) server: io::Result<server::TlsStream<DuplexStream>>,
}

impl Handshake {
    /// The leaf certificate the client received.
    pub(super) fn served_leaf(&self) -> CertificateDer<'static> {
        let client = self.client.as_ref().expect("client handshake failed");
        client.get_ref().1.peer_certificates().unwrap()[0].clone()
    }

    pub(super) fn alpn(&self) -> Option<Vec<u8>> {
        let client = self.client.as_ref().expect("client handshake failed");
        client.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
    }
}

/// Runs one handshake between `server` and `client` over an in-memory pipe.
pub(super) async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    server_name: &str,
) -> Handshake {
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(server);
    let connector = TlsConnector::from(client);
    let (client, server) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(
            connector.connect(name, client_io),
            acceptor.accept(server_io)
        )
    })
    .await
    .expect("handshake timed out");
    Handshake { client, server }
}

/// Minimal DER reader: (tag, content, rest). Test data only; panics on malformed input.
fn read_tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = input[0];
    let (len, header) = match input[1] {
        n if n < 0x80 => (usize::from(n), 2),
        0x81 => (usize::from(input[2]), 3),
        0x82 => (usize::from(input[2]) << 8 | usize::from(input[3]), 4),
        other => panic!("unsupported DER length form {other:#x}"),
    };
    (tag, &input[header..header + len], &input[header + len..])
}

fn write_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match content.len() {
        n if n < 0x80 => out.push(u8::try_from(n).unwrap()),
        n if n <= 0xff => out.extend([0x81, u8::try_from(n).unwrap()]),
        n => out.extend([
            0x82,
            u8::try_from(n >> 8).unwrap(),
            u8::try_from(n & 0xff).unwrap(),
        ]),
    }
    out.extend_from_slice(content);
    out
}

/// PrivateKeyInfo (PKCS#8) -> (algorithm identifier content, inner private key octets).
fn split_pkcs8(pkcs8: &[u8]) -> (&[u8], &[u8]) {
    let (tag, body, _) = read_tlv(pkcs8);
    assert_eq!(tag, 0x30);
    let (tag, _version, rest) = read_tlv(body);
    assert_eq!(tag, 0x02);
    let (tag, alg_id, rest) = read_tlv(rest);
    assert_eq!(tag, 0x30);
    let (tag, inner, _) = read_tlv(rest);
    assert_eq!(tag, 0x04);
    (alg_id, inner)
}

/// An RSA PKCS#8 key as PKCS#1 `RSAPrivateKey` (the octets PKCS#8 wraps).
pub(super) fn pkcs8_to_pkcs1(pkcs8: &[u8]) -> Vec<u8> {
    split_pkcs8(pkcs8).1.to_vec()
}

/// An EC PKCS#8 key as SEC1 `ECPrivateKey`, with the curve in `[0] parameters` as OpenSSL
/// writes it (PKCS#8 carries the curve in the algorithm identifier instead).
pub(super) fn pkcs8_to_sec1(pkcs8: &[u8]) -> Vec<u8> {
    let (alg_id, inner) = split_pkcs8(pkcs8);
    let (_, _ec_public_key_oid, rest) = read_tlv(alg_id);
    let (tag, curve, _) = read_tlv(rest);
    assert_eq!(tag, 0x06);
    let curve_oid = write_tlv(0x06, curve);

    let (tag, mut body, _) = read_tlv(inner);
    assert_eq!(tag, 0x30);
    let mut elements = Vec::new();
    while !body.is_empty() {
        let (tag, content, rest) = read_tlv(body);
        elements.push((tag, content));
        body = rest;
    }
    let mut out = Vec::new();
    for (i, (tag, content)) in elements.iter().enumerate() {
        out.extend(write_tlv(*tag, content));
        // After version and privateKey: insert parameters unless present.
        if i == 1 && !elements.iter().any(|(t, _)| *t == 0xa0) {
            out.extend(write_tlv(0xa0, &curve_oid));
        }
    }
    write_tlv(0x30, &out)
}

/// PEM-encodes `der` under `label`.
pub(super) fn to_pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Whether an `openssl` binary can be run.
pub(super) fn have_openssl() -> bool {
    std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

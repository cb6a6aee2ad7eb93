//! The identity of a client that authenticated with a certificate (mTLS).
//!
//! rustls has already verified the chain when these functions run; they only read names out of
//! the leaf certificate so routing and header rules can use them.

use std::fmt::Write as _;
use std::net::IpAddr;

use rustls_pki_types::CertificateDer;
use x509_parser::asn1_rs::{Any, Tag, ToDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

use super::error::TlsError;

/// At most this many subject alternative names are kept in a [`ClientIdentity`], so a
/// certificate with thousands of names cannot inflate every request that copies them.
pub const MAX_SANS: usize = 16;

/// Who the client is, according to its verified leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The subject as an RFC 4514 string, most specific part first: `CN=alice,O=Example`.
    ///
    /// Special characters are escaped per RFC 4514 section 2.4 and control characters as
    /// `\XX`, so the string is safe to put in a header value.
    pub subject: String,
    /// The first [`MAX_SANS`] DNS, URI, e-mail and IP subject alternative names, in
    /// certificate order, each prefixed with its kind: `DNS:alice.example.com`,
    /// `URI:spiffe://example/alice`, `email:alice@example.com`, `IP:192.0.2.1`. Entries with
    /// non-printable characters are skipped.
    pub sans: Vec<String>,
}

impl ClientIdentity {
    /// Reads the identity from the peer certificates of an established connection (leaf first,
    /// as `rustls::CommonState::peer_certificates` returns them).
    ///
    /// `Ok(None)` when the client sent no certificate (possible with optional client auth).
    pub fn from_peer_certificates(certs: &[CertificateDer<'_>]) -> Result<Option<Self>, TlsError> {
        let Some(leaf) = certs.first() else {
            return Ok(None);
        };
        let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| TlsError::PeerCertificate {
            reason: e.to_string(),
        })?;
        let subject = rfc4514(cert.subject());
        let sans = subject_alt_names(&cert)?;
        Ok(Some(Self { subject, sans }))
    }

    /// Reads the identity from a server-side connection after its handshake.
    ///
    /// With tokio-rustls: `ClientIdentity::from_connection(tls_stream.get_ref().1)`.
    pub fn from_connection(conn: &rustls::ServerConnection) -> Result<Option<Self>, TlsError> {
        conn.peer_certificates()
            .map_or(Ok(None), Self::from_peer_certificates)
    }
}

fn subject_alt_names(cert: &X509Certificate<'_>) -> Result<Vec<String>, TlsError> {
    let Some(ext) = cert
        .subject_alternative_name()
        .map_err(|e| TlsError::PeerCertificate {
            reason: e.to_string(),
        })?
    else {
        return Ok(Vec::new());
    };
    let names = ext
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(s) => printable(s).map(|s| format!("DNS:{s}")),
            GeneralName::URI(s) => printable(s).map(|s| format!("URI:{s}")),
            GeneralName::RFC822Name(s) => printable(s).map(|s| format!("email:{s}")),
            GeneralName::IPAddress(bytes) => ip_from_bytes(bytes).map(|ip| format!("IP:{ip}")),
            _ => None,
        })
        .take(MAX_SANS)
        .collect();
    Ok(names)
}

fn printable(s: &str) -> Option<&str> {
    s.bytes().all(|b| b.is_ascii_graphic()).then_some(s)
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// Formats a distinguished name per RFC 4514: RDNs from last to first, joined by `,`;
/// multi-valued RDNs joined by `+`; the section 3 short names (`CN`, `L`, `ST`, `O`, `OU`, `C`,
/// `STREET`, `DC`, `UID`), other attribute types as dotted OIDs with a `#`-hex BER value.
pub(crate) fn rfc4514(name: &X509Name<'_>) -> String {
    let rdns: Vec<_> = name.iter_rdn().collect();
    let mut out = String::new();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = attr.attr_type().to_id_string();
            match short_name(&oid) {
                Some(short) => {
                    out.push_str(short);
                    out.push('=');
                    match decode_string(attr.attr_value()) {
                        Some(value) => escape_value(&value, &mut out),
                        None => push_hex_ber(attr.attr_value(), &mut out),
                    }
                }
                None => {
                    out.push_str(&oid);
                    out.push('=');
                    push_hex_ber(attr.attr_value(), &mut out);
                }
            }
        }
    }
    out
}

/// RFC 4514 section 3: the attribute type names every implementation recognises.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// Decodes the directory string types; `None` for anything else (written as hex instead).
fn decode_string(value: &Any<'_>) -> Option<String> {
    let data = value.data;
    match value.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => std::str::from_utf8(data).ok().map(str::to_owned),
        // T.61 in theory; Latin-1 in every certificate seen in practice.
        Tag::TeletexString => Some(data.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString => {
            if !data.len().is_multiple_of(2) {
                return None;
            }
            let units = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        Tag::UniversalString => {
            if !data.len().is_multiple_of(4) {
                return None;
            }
            data.chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => None,
    }
}

/// RFC 4514 section 2.4, plus hex-escaping every control character.
fn escape_value(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' ' | '#' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{b:02X}");
                }
            }
            c => out.push(c),
        }
    }
}

fn push_hex_ber(value: &Any<'_>, out: &mut String) {
    out.push('#');
    let der = value.to_der_vec().unwrap_or_default();
    for b in der {
        let _ = write!(out, "{b:02x}");
    }
}

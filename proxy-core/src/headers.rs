//! Header policy: hop-by-hop removal, forwarding headers, and per-route set/add/remove rules.

use std::fmt::Write as _;
use std::net::IpAddr;

use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::conn::ConnInfo;
use crate::template::{Template, Vars};

/// Headers that describe one connection and never cross the proxy (RFC 9110 section 7.6.1),
/// plus the legacy ones proxies traditionally drop. `Trailer` is not among them: it describes
/// the message (RFC 9110 section 6.6.2), and hyper writes trailers to an HTTP/1.1 client only
/// for fields the response names in it.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`, `X-Real-IP`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The client's original scheme.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// The client's original `Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// The client's address.
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// The request id header.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// RFC 7239 `Forwarded`.
pub const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Request extension set on upstream requests whose client sent `TE: trailers`. `TE` itself is
/// hop-by-hop and removed; a connector whose protocol wants it (HTTP/2, for gRPC) puts
/// `te: trailers` back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakesTrailers;

/// Removes hop-by-hop headers: the fixed list and every header named in `Connection`.
///
/// RFC 9110 section 7.6.1: "a proxy or gateway MUST parse a received Connection header field
/// before a message is forwarded and, for each connection-option in this field, remove any
/// header or trailer field(s) from the message with the same name as the connection-option,
/// and then remove the Connection header field itself".
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// True when the `Connection` header lists `token` (case-insensitive), e.g. `close` or
/// `upgrade`.
pub fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The `Upgrade` value of a request that asks for a protocol upgrade (`Connection: upgrade`
/// plus `Upgrade`), if it does.
pub fn upgrade_request(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers
        .get(header::UPGRADE)
        .filter(|_| connection_has(headers, "upgrade"))
}

/// Which forwarding headers the proxy adds to upstream requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardingHeaders {
    /// Append `X-Forwarded-For`; set `X-Forwarded-Proto` and `X-Forwarded-Host`.
    pub x_forwarded: bool,
    /// Set `X-Real-IP` to the client address.
    pub x_real_ip: bool,
    /// Append an RFC 7239 `Forwarded` element.
    pub forwarded: bool,
    /// Append `Via` with this pseudonym (RFC 9110 section 7.6.3), to requests and responses.
    pub via: Option<String>,
}

impl Default for ForwardingHeaders {
    /// The de-facto standard set on, `Forwarded` and `Via` off (as nginx, Envoy and HAProxy).
    fn default() -> Self {
        ForwardingHeaders {
            x_forwarded: true,
            x_real_ip: true,
            forwarded: false,
            via: None,
        }
    }
}

impl ForwardingHeaders {
    /// Adds the forwarding headers for a request from `conn` with original `Host` `host`.
    pub fn apply(&self, headers: &mut HeaderMap, conn: &ConnInfo, host: Option<&HeaderValue>) {
        let ip = conn.peer.ip();
        let ip_text = ip.to_string();
        if self.x_forwarded {
            append_list(headers, X_FORWARDED_FOR, &ip_text);
            headers.insert(
                X_FORWARDED_PROTO,
                HeaderValue::from_static(conn.scheme.as_str()),
            );
            match host {
                Some(h) => {
                    headers.insert(X_FORWARDED_HOST, h.clone());
                }
                None => {
                    headers.remove(X_FORWARDED_HOST);
                }
            }
        }
        if self.x_real_ip
            && let Ok(v) = HeaderValue::from_str(&ip_text)
        {
            headers.insert(X_REAL_IP, v);
        }
        if self.forwarded {
            let mut element = String::with_capacity(48);
            element.push_str("for=");
            push_node(&mut element, ip);
            if let Some(h) = host.and_then(|h| h.to_str().ok()) {
                element.push_str(";host=");
                push_token_or_quoted(&mut element, h);
            }
            element.push_str(";proto=");
            element.push_str(conn.scheme.as_str());
            append_list(headers, FORWARDED, &element);
        }
    }

    /// Appends this proxy to `Via` for a message received with `version`.
    pub fn apply_via(&self, headers: &mut HeaderMap, version: Version) {
        if let Some(name) = &self.via {
            let proto = match version {
                Version::HTTP_09 => "0.9",
                Version::HTTP_10 => "1.0",
                Version::HTTP_2 => "2",
                Version::HTTP_3 => "3",
                _ => "1.1",
            };
            append_list(headers, header::VIA, &format!("{proto} {name}"));
        }
    }
}

/// Appends `value` to a comma-separated list header, merging existing lines into one.
fn append_list(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    let mut merged = String::new();
    for v in headers.get_all(&name) {
        if let Ok(s) = v.to_str() {
            merged.push_str(s);
            merged.push_str(", ");
        }
    }
    merged.push_str(value);
    if let Ok(v) = HeaderValue::from_str(&merged) {
        headers.insert(name, v);
    }
}

fn push_node(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let _ = write!(out, "{v4}");
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "\"[{v6}]\"");
        }
    }
}

fn push_token_or_quoted(out: &mut String, s: &str) {
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !s.is_empty() && s.chars().all(is_tchar) {
        out.push_str(s);
    } else {
        out.push('"');
        for c in s.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
}

/// A header value that is either fixed or rendered from a template per request.
#[derive(Debug, Clone)]
pub enum ValueTemplate {
    /// A fixed value, validated at config time.
    Literal(HeaderValue),
    /// A value with variables.
    Dynamic(Template),
}

/// Why a header rule could not be compiled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderRuleError {
    /// The header name is not a valid field name.
    #[error("invalid header name `{0}`")]
    InvalidName(String),
    /// The value is not a valid field value.
    #[error("invalid header value for `{0}`")]
    InvalidValue(String),
    /// The value template does not compile.
    #[error("in the value of `{0}`: {1}")]
    Template(String, crate::template::TemplateError),
}

impl ValueTemplate {
    /// Compiles a value; literals are validated now so they never fail later.
    pub fn parse(name: &str, value: &str) -> Result<Self, HeaderRuleError> {
        let t =
            Template::parse(value).map_err(|e| HeaderRuleError::Template(name.to_owned(), e))?;
        if t.is_literal() {
            let v = HeaderValue::from_str(value.replace("$$", "$").as_str())
                .map_err(|_| HeaderRuleError::InvalidValue(name.to_owned()))?;
            Ok(ValueTemplate::Literal(v))
        } else {
            Ok(ValueTemplate::Dynamic(t))
        }
    }

    /// The value for this request; `None` when the rendered text is not a valid field value.
    pub fn value(&self, vars: &Vars<'_>) -> Option<HeaderValue> {
        match self {
            ValueTemplate::Literal(v) => Some(v.clone()),
            ValueTemplate::Dynamic(t) => HeaderValue::from_str(&t.render(vars)).ok(),
        }
    }

    /// True when rendering needs regex captures.
    pub fn uses_captures(&self) -> bool {
        matches!(self, ValueTemplate::Dynamic(t) if t.uses_captures())
    }
}

/// Per-route header edits, applied in the order remove, set, add.
#[derive(Debug, Clone, Default)]
pub struct HeaderRules {
    /// Headers to delete.
    pub remove: Vec<HeaderName>,
    /// Headers to replace (or create).
    pub set: Vec<(HeaderName, ValueTemplate)>,
    /// Headers to append as extra field lines.
    pub add: Vec<(HeaderName, ValueTemplate)>,
}

impl HeaderRules {
    /// Compiles rules from name/value strings.
    pub fn parse<'a>(
        remove: impl IntoIterator<Item = &'a str>,
        set: impl IntoIterator<Item = (&'a str, &'a str)>,
        add: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, HeaderRuleError> {
        let name = |n: &str| {
            HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| HeaderRuleError::InvalidName(n.to_owned()))
        };
        let pair = |(n, v): (&str, &str)| Ok((name(n)?, ValueTemplate::parse(n, v)?));
        Ok(HeaderRules {
            remove: remove.into_iter().map(name).collect::<Result<_, _>>()?,
            set: set.into_iter().map(pair).collect::<Result<_, _>>()?,
            add: add.into_iter().map(pair).collect::<Result<_, _>>()?,
        })
    }

    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// True when any value needs regex captures.
    pub fn uses_captures(&self) -> bool {
        self.set
            .iter()
            .chain(&self.add)
            .any(|(_, v)| v.uses_captures())
    }

    /// Applies the rules to `headers`, rendering values against `vars`.
    pub fn apply(&self, headers: &mut HeaderMap, vars: &Vars<'_>) {
        self.render(vars).apply(headers);
    }

    /// Renders the values now, to apply later to a header map that `vars` may borrow from.
    pub fn render(&self, vars: &Vars<'_>) -> RenderedRules<'_> {
        let values = self
            .set
            .iter()
            .chain(&self.add)
            .map(|(name, value)| {
                let v = value.value(vars);
                if v.is_none() {
                    tracing::debug!(header = %name, "rendered header value is invalid; skipped");
                }
                v
            })
            .collect();
        RenderedRules {
            rules: self,
            values,
        }
    }
}

/// Header rules with their values rendered for one request.
#[derive(Debug)]
pub struct RenderedRules<'a> {
    rules: &'a HeaderRules,
    values: Vec<Option<HeaderValue>>,
}

impl RenderedRules<'_> {
    /// Applies the edits: remove, then set, then add.
    pub fn apply(self, headers: &mut HeaderMap) {
        for name in &self.rules.remove {
            headers.remove(name);
        }
        let names = self.rules.set.iter().map(|(n, _)| (n, true));
        let names = names.chain(self.rules.add.iter().map(|(n, _)| (n, false)));
        for ((name, replace), value) in names.zip(self.values) {
            let Some(value) = value else { continue };
            if replace {
                headers.insert(name.clone(), value);
            } else {
                headers.append(name.clone(), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, Uri};

    fn conn(peer: &str) -> ConnInfo {
        ConnInfo::plain(peer.parse().unwrap(), "127.0.0.1:80".parse().unwrap(), 1)
    }

    #[test]
    fn removes_hop_by_hop_and_connection_named() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("connection", "close, X-Secret , keep-alive"),
            ("connection", "x-other"),
            ("x-secret", "1"),
            ("x-other", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic x"),
            ("proxy-authenticate", "Basic"),
            ("x-kept", "yes"),
        ] {
            h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        remove_hop_by_hop(&mut h);
        // Trailer describes the message, not the connection (RFC 9110 section 6.6.2).
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
        assert_eq!(h["trailer"], "x");
    }

    #[test]
    fn forwarding_headers() {
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("2.2.2.2"));
        let f = ForwardingHeaders {
            forwarded: true,
            via: Some("edge".into()),
            ..ForwardingHeaders::default()
        };
        let host = HeaderValue::from_static("shop.example.com:8080");
        f.apply(&mut h, &conn("[2001:db8::1]:4000"), Some(&host));
        f.apply_via(&mut h, Version::HTTP_11);
        assert_eq!(h[&X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 2001:db8::1");
        assert_eq!(h.get_all(&X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "shop.example.com:8080");
        assert_eq!(h[&X_REAL_IP], "2001:db8::1");
        assert_eq!(
            h[&FORWARDED],
            "for=\"[2001:db8::1]\";host=\"shop.example.com:8080\";proto=http"
        );
        assert_eq!(h[header::VIA], "1.1 edge");
    }

    #[test]
    fn rules_apply_in_order_with_variables() {
        let rules = HeaderRules::parse(
            ["x-drop", "x-replace"],
            [
                ("x-replace", "new"),
                ("x-client", "$remote_addr:$remote_port"),
            ],
            [("x-multi", "b"), ("x-price", "$$5")],
        )
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-drop", HeaderValue::from_static("1"));
        h.insert("x-replace", HeaderValue::from_static("old"));
        h.insert("x-multi", HeaderValue::from_static("a"));
        let c = conn("10.0.0.9:1234");
        let uri = Uri::from_static("/");
        let empty = HeaderMap::new();
        let vars = Vars {
            method: &Method::GET,
            uri: &uri,
            headers: &empty,
            host: "h",
            conn: &c,
            request_id: "r",
            captures: &[],
        };
        rules.apply(&mut h, &vars);
        assert!(!h.contains_key("x-drop"));
        assert_eq!(h["x-replace"], "new");
        assert_eq!(h["x-client"], "10.0.0.9:1234");
        let multi: Vec<_> = h.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["a", "b"]);
        assert_eq!(h["x-price"], "$5");
    }

    #[test]
    fn bad_rules_are_rejected() {
        assert!(matches!(
            HeaderRules::parse(["bad name"], [], []),
            Err(HeaderRuleError::InvalidName(_))
        ));
        assert!(matches!(
            HeaderRules::parse([], [("x", "$nope")], []),
            Err(HeaderRuleError::Template(..))
        ));
        assert!(matches!(
            HeaderRules::parse([], [("x", "a\nb")], []),
            Err(HeaderRuleError::InvalidValue(_))
        ));
    }
}

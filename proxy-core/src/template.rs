//! Strings with `$variables`, compiled once per config and rendered per request.
//!
//! Variables follow nginx names: `$remote_addr`, `$remote_port`, `$host`, `$scheme`,
//! `$request_id`, `$request_uri`, `$uri`, `$args`, `$request_method`, `$server_port`,
//! `$ssl_server_name` (SNI), `$ssl_alpn_protocol`, `$ssl_client_s_dn` (the verified client
//! certificate's subject), `$ssl_client_verify` (`SUCCESS` or `NONE`),
//! `$http_<name>` (a request header, `-` written as `_`), and `$1`..`$9` for the captures of a
//! regex route. `${name}` delimits a name; `$$` is a literal dollar sign.

use std::fmt::Write as _;

use http::{HeaderMap, Method, Uri};

use crate::conn::ConnInfo;

/// A template that failed to compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// `$name` is not a known variable.
    #[error("unknown variable `${0}`")]
    UnknownVariable(String),
    /// `${` without a closing `}`, or a `$` with no name after it.
    #[error("malformed variable at byte {0}")]
    Malformed(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    RemoteAddr,
    RemotePort,
    Host,
    Scheme,
    RequestId,
    RequestUri,
    Uri,
    Args,
    Method,
    ServerPort,
    SslServerName,
    SslAlpn,
    SslClientSubject,
    SslClientVerify,
    Header(http::HeaderName),
    Capture(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Var(Var),
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

/// What a template is rendered against: the request as the client sent it.
#[derive(Debug)]
pub struct Vars<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request target as received (before rewrites).
    pub uri: &'a Uri,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The request's host, without port, as used for routing.
    pub host: &'a str,
    /// The downstream connection.
    pub conn: &'a ConnInfo,
    /// The request id.
    pub request_id: &'a str,
    /// Regex captures of the matched route (index 0 is the whole match), if any.
    pub captures: &'a [Option<&'a str>],
}

impl Template {
    /// Compiles `src`, rejecting unknown variables.
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let bytes = src.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'$' {
                let next = src[i..].find('$').map_or(src.len(), |n| i + n);
                literal.push_str(&src[i..next]);
                i = next;
                continue;
            }
            let start = i;
            i += 1;
            if bytes.get(i) == Some(&b'$') {
                literal.push('$');
                i += 1;
                continue;
            }
            let name = if bytes.get(i) == Some(&b'{') {
                let close = src[i..].find('}').ok_or(TemplateError::Malformed(start))?;
                let name = &src[i + 1..i + close];
                i += close + 1;
                name
            } else if bytes.get(i).is_some_and(u8::is_ascii_digit) {
                // `$1` is one digit, so `$10` reads as capture 1 followed by "0", as in nginx.
                i += 1;
                &src[i - 1..i]
            } else {
                let len = src[i..]
                    .bytes()
                    .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                    .count();
                i += len;
                &src[i - len..i]
            };
            if name.is_empty() {
                return Err(TemplateError::Malformed(start));
            }
            if !literal.is_empty() {
                segments.push(Segment::Literal(std::mem::take(&mut literal)));
            }
            segments.push(Segment::Var(parse_var(name)?));
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Template { segments })
    }

    /// True when the template has no variables.
    pub fn is_literal(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Literal(_)))
    }

    /// True when the template refers to regex captures (`$1`..`$9`).
    pub fn uses_captures(&self) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Var(Var::Capture(_))))
    }

    /// Renders the template into `out`.
    pub fn render_into(&self, vars: &Vars<'_>, out: &mut String) {
        for seg in &self.segments {
            match seg {
                Segment::Literal(s) => out.push_str(s),
                Segment::Var(v) => render_var(v, vars, out),
            }
        }
    }

    /// Renders the template into a new string.
    pub fn render(&self, vars: &Vars<'_>) -> String {
        let mut out = String::new();
        self.render_into(vars, &mut out);
        out
    }
}

fn parse_var(name: &str) -> Result<Var, TemplateError> {
    Ok(match name {
        "remote_addr" => Var::RemoteAddr,
        "remote_port" => Var::RemotePort,
        "host" => Var::Host,
        "scheme" => Var::Scheme,
        "request_id" => Var::RequestId,
        "request_uri" => Var::RequestUri,
        "uri" => Var::Uri,
        "args" | "query_string" => Var::Args,
        "request_method" => Var::Method,
        "server_port" => Var::ServerPort,
        "ssl_server_name" => Var::SslServerName,
        "ssl_alpn_protocol" => Var::SslAlpn,
        "ssl_client_s_dn" => Var::SslClientSubject,
        "ssl_client_verify" => Var::SslClientVerify,
        n if n.len() == 1 && n.as_bytes()[0].is_ascii_digit() => {
            Var::Capture(usize::from(n.as_bytes()[0] - b'0'))
        }
        n => match n.strip_prefix("http_") {
            Some(h) if !h.is_empty() => {
                let header = http::HeaderName::from_bytes(h.replace('_', "-").as_bytes())
                    .map_err(|_| TemplateError::UnknownVariable(n.to_owned()))?;
                Var::Header(header)
            }
            _ => return Err(TemplateError::UnknownVariable(n.to_owned())),
        },
    })
}

fn render_var(var: &Var, vars: &Vars<'_>, out: &mut String) {
    match var {
        Var::RemoteAddr => {
            let _ = write!(out, "{}", vars.conn.peer.ip());
        }
        Var::RemotePort => {
            let _ = write!(out, "{}", vars.conn.peer.port());
        }
        Var::Host => out.push_str(vars.host),
        Var::Scheme => out.push_str(vars.conn.scheme.as_str()),
        Var::RequestId => out.push_str(vars.request_id),
        Var::RequestUri => out.push_str(
            vars.uri
                .path_and_query()
                .map_or_else(|| vars.uri.path(), |pq| pq.as_str()),
        ),
        Var::Uri => out.push_str(vars.uri.path()),
        Var::Args => out.push_str(vars.uri.query().unwrap_or("")),
        Var::Method => out.push_str(vars.method.as_str()),
        Var::ServerPort => {
            let _ = write!(out, "{}", vars.conn.local.port());
        }
        Var::SslServerName => out.push_str(vars.conn.sni.as_deref().unwrap_or("")),
        Var::SslAlpn => out.push_str(vars.conn.alpn.as_deref().unwrap_or("")),
        Var::SslClientSubject => out.push_str(vars.conn.client_subject.as_deref().unwrap_or("")),
        Var::SslClientVerify => out.push_str(if vars.conn.client_subject.is_some() {
            "SUCCESS"
        } else {
            "NONE"
        }),
        Var::Header(name) => {
            if let Some(v) = vars.headers.get(name).and_then(|v| v.to_str().ok()) {
                out.push_str(v);
            }
        }
        Var::Capture(n) => {
            if let Some(Some(c)) = vars.captures.get(*n) {
                out.push_str(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> ConnInfo {
        ConnInfo::plain(
            "10.1.2.3:5555".parse().unwrap(),
            "127.0.0.1:8080".parse().unwrap(),
            1,
        )
    }

    #[test]
    fn renders_variables() {
        let t = Template::parse("https://$host$request_uri?x=${remote_addr}$$ $http_x_user $1")
            .unwrap();
        let uri: Uri = "/a/b?q=1".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-user", "bob".parse().unwrap());
        let c = conn();
        let vars = Vars {
            method: &Method::GET,
            uri: &uri,
            headers: &headers,
            host: "shop.example.com",
            conn: &c,
            request_id: "rid",
            captures: &[Some("/a/b"), Some("a")],
        };
        assert_eq!(
            t.render(&vars),
            "https://shop.example.com/a/b?q=1?x=10.1.2.3$ bob a"
        );
        assert!(t.uses_captures());
        assert!(!t.is_literal());
    }

    #[test]
    fn rejects_unknown_and_malformed() {
        assert_eq!(
            Template::parse("$nope"),
            Err(TemplateError::UnknownVariable("nope".into()))
        );
        assert_eq!(Template::parse("a${host"), Err(TemplateError::Malformed(1)));
        assert_eq!(Template::parse("a$"), Err(TemplateError::Malformed(1)));
        assert!(Template::parse("plain").unwrap().is_literal());
    }
}

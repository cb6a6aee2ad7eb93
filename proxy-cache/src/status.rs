//! The `Cache-Status` response field (RFC 9211).

use std::fmt::Write as _;

use http::HeaderValue;

/// Why the cache forwarded a request (RFC 9211 section 2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// The cache was configured not to handle the request (upgrades, uncacheable methods).
    Bypass,
    /// The request method is not one the cache serves from storage.
    Method,
    /// Nothing was stored for the URI.
    UriMiss,
    /// Something was stored for the URI, but no variant matched.
    VaryMiss,
    /// The request's directives asked for a fresh answer.
    Request,
    /// The stored response was stale and had to be validated.
    Stale,
}

impl Forward {
    fn as_str(self) -> &'static str {
        match self {
            Forward::Bypass => "bypass",
            Forward::Method => "method",
            Forward::UriMiss => "uri-miss",
            Forward::VaryMiss => "vary-miss",
            Forward::Request => "request",
            Forward::Stale => "stale",
        }
    }
}

/// One cache's entry in `Cache-Status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStatus {
    /// Served from storage without going forward.
    pub hit: bool,
    /// Why the request went forward, if it did.
    pub fwd: Option<Forward>,
    /// The status the next hop answered with.
    pub fwd_status: Option<u16>,
    /// Freshness left, in seconds (negative when stale).
    pub ttl: Option<i64>,
    /// The response was stored.
    pub stored: bool,
    /// The request waited for another request's response.
    pub collapsed: bool,
    /// More detail, as a token (`stale-while-revalidate`, `no-store`, ...).
    pub detail: Option<&'static str>,
}

impl CacheStatus {
    /// The field value for a cache called `name` (an sf-token or string).
    pub fn value(&self, name: &str) -> Option<HeaderValue> {
        let mut out = String::with_capacity(64);
        if is_token(name) {
            out.push_str(name);
        } else {
            out.push('"');
            for c in name
                .chars()
                .filter(|c| c.is_ascii() && !c.is_ascii_control())
            {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        if self.hit {
            out.push_str("; hit");
        }
        if let Some(fwd) = self.fwd {
            out.push_str("; fwd=");
            out.push_str(fwd.as_str());
        }
        // Formatted in place: this runs on every cached response.
        if let Some(s) = self.fwd_status {
            let _ = write!(out, "; fwd-status={s}");
        }
        if let Some(ttl) = self.ttl {
            let _ = write!(out, "; ttl={ttl}");
        }
        if self.stored {
            out.push_str("; stored");
        }
        if self.collapsed {
            out.push_str("; collapsed");
        }
        if let Some(d) = self.detail {
            out.push_str("; detail=");
            out.push_str(d);
        }
        HeaderValue::from_str(&out).ok()
    }
}

/// An RFC 8941 token: starts with a letter or `*`, then tchar, `:` or `/`.
fn is_token(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '*')
        && chars.all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~:/".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9211_2_hit_with_ttl() {
        let s = CacheStatus {
            hit: true,
            ttl: Some(376),
            ..CacheStatus::default()
        };
        assert_eq!(s.value("proxy-bin").unwrap(), "proxy-bin; hit; ttl=376");
    }

    #[test]
    fn rfc9211_2_forward_with_status_and_stored() {
        let s = CacheStatus {
            fwd: Some(Forward::UriMiss),
            fwd_status: Some(200),
            stored: true,
            ..CacheStatus::default()
        };
        assert_eq!(
            s.value("proxy-bin").unwrap(),
            "proxy-bin; fwd=uri-miss; fwd-status=200; stored"
        );
    }

    #[test]
    fn rfc9211_2_names_that_are_not_tokens_are_quoted() {
        let s = CacheStatus {
            hit: true,
            ..CacheStatus::default()
        };
        assert_eq!(s.value("my cache").unwrap(), "\"my cache\"; hit");
    }
}

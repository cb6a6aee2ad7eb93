//! Whether a shared cache may store a response (RFC 9111 section 3), and which of its fields.

use http::header::{self, HeaderMap};
use http::{Method, StatusCode};

use crate::directives::{FieldList, ResponseDirectives};
use crate::freshness::{self, Lifetime};

/// Why a response is not stored; each names the rule it follows, for logs and `Cache-Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// The request method is not one the cache stores (section 3, first bullet).
    Method,
    /// Not a final status code, or a partial or 304 response (sections 3 and 3.3).
    Status,
    /// `no-store` (section 5.2.2.5), or the request's `no-store` (section 5.2.1.5).
    NoStore,
    /// Unqualified `private` (section 5.2.2.7).
    Private,
    /// A request with `Authorization` and no `public`, `s-maxage` or `must-revalidate`
    /// (section 3.5).
    Authorization,
    /// `must-understand` with a status code this cache does not implement (section 5.2.2.3).
    MustUnderstand,
    /// `Vary: *` can never match a later request (section 4.1).
    VaryStar,
    /// No explicit freshness, no heuristic freshness and no validator: it could never be
    /// reused, so storing it would only evict something useful.
    Unusable,
}

impl NotStored {
    /// A short token for logs and `Cache-Status` details.
    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::Method => "method",
            NotStored::Status => "status",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::Authorization => "authorization",
            NotStored::MustUnderstand => "must-understand",
            NotStored::VaryStar => "vary-star",
            NotStored::Unusable => "no-freshness",
        }
    }
}

/// Status codes whose caching rules this cache implements (the final codes of RFC 9110
/// section 15, less 206 and 304 which are never stored as responses in their own right).
pub fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203
            | 204
            | 300
            | 301
            | 302
            | 303
            | 307
            | 308
            | 400
            | 403
            | 404
            | 405
            | 410
            | 414
            | 500
            | 501
            | 502
            | 503
            | 504
    )
}

/// What the storability check reads about the request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The request method.
    pub method: &'a Method,
    /// True when the request carried `Authorization`.
    pub authorization: bool,
    /// True when the request carried `Cache-Control: no-store`.
    pub no_store: bool,
    /// The request's `Content-Location`-matching rule for POST (section 4.4 of RFC 9110 9.3.3):
    /// true when the response's `Content-Location` names the request target.
    pub content_location_is_target: bool,
}

/// Decides whether a shared cache may store `status` + `headers` for this request
/// (RFC 9111 section 3). `lifetime` is the response's freshness lifetime.
pub fn check(
    req: RequestFacts<'_>,
    status: StatusCode,
    headers: &HeaderMap,
    cc: &ResponseDirectives,
    lifetime: Lifetime,
) -> Result<(), NotStored> {
    // RFC 9110 section 9.3.3: a POST response is reusable only with explicit freshness and a
    // Content-Location equal to the target; GET and HEAD responses are reusable in general.
    match *req.method {
        Method::GET | Method::HEAD => {}
        Method::POST if lifetime.is_explicit() && req.content_location_is_target => {}
        _ => return Err(NotStored::Method),
    }
    if status.is_informational()
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Err(NotStored::Status);
    }
    if req.no_store {
        return Err(NotStored::NoStore);
    }
    // Section 5.2.2.3: must-understand overrides no-store for understood status codes.
    if cc.must_understand {
        if !understood(status) {
            return Err(NotStored::MustUnderstand);
        }
    } else if cc.no_store {
        return Err(NotStored::NoStore);
    }
    if cc.private == FieldList::All {
        return Err(NotStored::Private);
    }
    if req.authorization && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate) {
        return Err(NotStored::Authorization);
    }
    if vary_star(headers) {
        return Err(NotStored::VaryStar);
    }
    // Section 3: one of public, Expires, max-age, s-maxage, or a heuristically cacheable
    // status; and, beyond the RFC's minimum, something that makes the entry reusable.
    let validator = has_validator(headers);
    let explicit = lifetime.is_explicit() || cc.public;
    if !(explicit || freshness::heuristically_cacheable(status)) {
        return Err(NotStored::Unusable);
    }
    if lifetime.secs() == 0 && !validator && cc.stale_if_error.is_none() {
        return Err(NotStored::Unusable);
    }
    Ok(())
}

/// True when the response has a validator (`ETag` or `Last-Modified`) to revalidate with.
pub fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED)
}

/// True when `Vary` lists `*`.
pub fn vary_star(headers: &HeaderMap) -> bool {
    vary_names(headers).any(|n| n == "*")
}

/// The field names a response varies on, trimmed, as written.
pub fn vary_names(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
}

/// The fields a cache never stores (RFC 9111 section 3.1): hop-by-hop fields, the fields
/// `Connection` nominates, `Proxy-Authentication-Info` and friends, and the fields listed by a
/// qualified `private` (section 5.2.2.7). A qualified `no-cache` keeps its fields: the cache
/// revalidates every use of such a response instead (section 5.2.2.4 allows that reading).
pub fn strip_unstored(headers: &mut HeaderMap, cc: &ResponseDirectives) {
    proxy_core::headers::remove_hop_by_hop(headers);
    headers.remove(header::TRAILER);
    headers.remove("proxy-authentication-info");
    if let FieldList::Fields(names) = &cc.private {
        for name in names {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
#[path = "storable_tests.rs"]
mod tests;

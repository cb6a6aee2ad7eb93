//! Cache keys: the primary key from the client-facing URI (RFC 9111 section 2) and the
//! secondary key from the request fields a response varies on (section 4.1).

use http::header::{HeaderMap, HeaderName};
use proxy_core::{CacheTarget, conn::Scheme};

use crate::storable::vary_names;
use crate::store::SecondaryKey;

/// The primary key: the absolute URI the client asked for, with the scheme's default port
/// left out (RFC 9110 section 4.2.3), taken before any rewrite. Method-independent: GET and
/// HEAD share it, and unsafe methods invalidate it.
pub fn primary(target: &CacheTarget) -> String {
    let scheme = target.scheme.as_str();
    let default_port = match target.scheme {
        Scheme::Http => ":80",
        Scheme::Https => ":443",
    };
    let authority = target
        .authority
        .strip_suffix(default_port)
        .unwrap_or(&target.authority);
    let pq = if target.path_and_query.is_empty() {
        "/"
    } else {
        &target.path_and_query
    };
    format!("{scheme}://{authority}{pq}")
}

/// A request field's value for comparison (section 4.1 allows normalising): every field line
/// combined, list elements trimmed of whitespace and joined by a single comma. `None` when the
/// request lacks the field.
pub fn normalised(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let mut out = String::new();
    for v in values {
        let text = String::from_utf8_lossy(v.as_bytes());
        for element in text.split(',') {
            let element = element.trim();
            if element.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(element);
        }
    }
    Some(out)
}

/// The secondary key of a response with `response` fields for a request with `request` fields:
/// each field the response varies on and each configured key field, with the request's value.
pub fn secondary(
    request: &HeaderMap,
    response: &HeaderMap,
    key_fields: &[HeaderName],
) -> SecondaryKey {
    let mut names: Vec<HeaderName> = key_fields.to_vec();
    for name in vary_names(response) {
        if let Ok(name) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let value = normalised(request, &name);
            (name, value)
        })
        .collect()
}

/// True when a request with `request` fields matches a stored secondary key (section 4.1).
pub fn matches(request: &HeaderMap, stored: &SecondaryKey) -> bool {
    stored
        .iter()
        .all(|(name, value)| normalised(request, name) == *value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn target(scheme: Scheme, authority: &str, pq: &str) -> CacheTarget {
        CacheTarget {
            scheme,
            authority: authority.into(),
            path_and_query: pq.into(),
        }
    }

    #[test]
    fn rfc9111_2_primary_key_is_the_absolute_uri_without_default_port() {
        assert_eq!(
            primary(&target(Scheme::Http, "a.example:80", "/x?y=1")),
            "http://a.example/x?y=1"
        );
        assert_eq!(
            primary(&target(Scheme::Https, "a.example:443", "/")),
            "https://a.example/"
        );
        assert_eq!(
            primary(&target(Scheme::Http, "a.example:8080", "/")),
            "http://a.example:8080/"
        );
        assert_ne!(
            primary(&target(Scheme::Http, "a.example", "/")),
            primary(&target(Scheme::Http, "b.example", "/"))
        );
    }

    #[test]
    fn rfc9111_4_1_values_are_normalised_across_lines_and_whitespace() {
        let mut a = HeaderMap::new();
        a.append("accept-language", HeaderValue::from_static("en,  fr"));
        let mut b = HeaderMap::new();
        b.append("accept-language", HeaderValue::from_static("en"));
        b.append("accept-language", HeaderValue::from_static("fr"));
        let name = HeaderName::from_static("accept-language");
        assert_eq!(normalised(&a, &name), normalised(&b, &name));
        assert_eq!(normalised(&HeaderMap::new(), &name), None);
    }

    #[test]
    fn rfc9111_4_1_absent_and_present_fields_do_not_match() {
        let mut response = HeaderMap::new();
        response.insert("vary", HeaderValue::from_static("Accept-Encoding"));
        let mut gzip = HeaderMap::new();
        gzip.insert("accept-encoding", HeaderValue::from_static("gzip"));
        let key = secondary(&gzip, &response, &[]);
        assert!(matches(&gzip, &key));
        assert!(!matches(&HeaderMap::new(), &key));
        let none = secondary(&HeaderMap::new(), &response, &[]);
        assert!(matches(&HeaderMap::new(), &none));
        assert!(!matches(&gzip, &none));
    }

    #[test]
    fn configured_key_fields_act_like_vary() {
        let name = HeaderName::from_static("x-tenant");
        let mut a = HeaderMap::new();
        a.insert("x-tenant", HeaderValue::from_static("a"));
        let key = secondary(&a, &HeaderMap::new(), std::slice::from_ref(&name));
        assert!(matches(&a, &key));
        let mut b = HeaderMap::new();
        b.insert("x-tenant", HeaderValue::from_static("b"));
        assert!(!matches(&b, &key));
    }
}

//! The route table: host and path matching compiled once per configuration.
//!
//! Host: exact names first, then `*.suffix` wildcards (longest suffix wins), then the default
//! virtual host. Path, within a virtual host, in nginx `location` order: an exact match (`=`)
//! wins; otherwise regexes (`~`) are tried in declaration order and the first match wins;
//! otherwise the longest matching prefix wins. A route may also require methods and header
//! values; a route whose path matches but whose conditions fail is skipped, and matching goes on.
//! Matching never allocates.

use std::collections::HashMap;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use regex::Regex;

/// How a route matches the request path.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// The path equals this string (nginx `location =`).
    Exact(String),
    /// The path starts with this string; the longest such prefix wins.
    Prefix(String),
    /// The regex matches the path (nginx `location ~`); declaration order decides.
    Regex(Regex),
}

/// One route as configured: where it matches and what it carries.
#[derive(Debug, Clone)]
pub struct Route<T> {
    /// The path condition.
    pub path: PathMatch,
    /// Allowed methods; empty means any method.
    pub methods: Vec<Method>,
    /// Headers that must be present with exactly these values.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// What the route does, opaque to the table.
    pub action: T,
}

/// A virtual host: a set of names and its routes.
#[derive(Debug, Clone)]
pub struct VirtualHost<T> {
    /// Exact names (`shop.example.com`) and wildcards (`*.example.com`).
    pub names: Vec<String>,
    /// Whether this host serves requests whose host matches no name.
    pub default: bool,
    /// Routes, in declaration order.
    pub routes: Vec<Route<T>>,
}

/// Why a route table could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The same host name appears in two virtual hosts.
    #[error("host name `{0}` is used by more than one server")]
    DuplicateHost(String),
    /// More than one virtual host claims to be the default.
    #[error("more than one server is marked as the default")]
    DuplicateDefault,
    /// A host name is empty or has a wildcard anywhere but a leading `*.`.
    #[error("invalid host name `{0}`: use `name.tld` or `*.name.tld`")]
    InvalidHost(String),
}

#[derive(Debug)]
struct CompiledHost<T> {
    routes: Vec<Route<T>>,
    exact: HashMap<Box<str>, Vec<usize>>,
    regexes: Vec<usize>,
    /// Prefix routes, longest first; equal lengths keep declaration order.
    prefixes: Vec<usize>,
}

/// A successful match.
#[derive(Debug)]
pub struct RouteMatch<'a, T> {
    /// The matched route.
    pub route: &'a Route<T>,
    /// Index of the virtual host, in configuration order.
    pub host_index: usize,
    /// Index of the route inside its virtual host.
    pub route_index: usize,
}

/// The compiled route table.
#[derive(Debug)]
pub struct RouteTable<T> {
    hosts: Vec<CompiledHost<T>>,
    exact_hosts: HashMap<Box<str>, usize>,
    /// `(".example.com", host)` pairs, longest suffix first.
    wildcard_hosts: Vec<(Box<str>, usize)>,
    default_host: Option<usize>,
}

/// The longest host name we look up; DNS names are at most 253 bytes.
const MAX_HOST: usize = 256;

impl<T> RouteTable<T> {
    /// Compiles virtual hosts into a table.
    pub fn new(vhosts: Vec<VirtualHost<T>>) -> Result<Self, RouteError> {
        let mut exact_hosts = HashMap::new();
        let mut wildcard_hosts: Vec<(Box<str>, usize)> = Vec::new();
        let mut default_host = None;
        let mut hosts = Vec::with_capacity(vhosts.len());
        for (index, vh) in vhosts.into_iter().enumerate() {
            if vh.default {
                if default_host.is_some() {
                    return Err(RouteError::DuplicateDefault);
                }
                default_host = Some(index);
            }
            for name in &vh.names {
                let lower = name.trim_end_matches('.').to_ascii_lowercase();
                let valid = !lower.is_empty()
                    && lower.len() < MAX_HOST
                    && !lower.trim_start_matches("*.").contains('*')
                    && lower != "*.";
                if !valid {
                    return Err(RouteError::InvalidHost(name.clone()));
                }
                if let Some(suffix) = lower.strip_prefix('*') {
                    if wildcard_hosts.iter().any(|(s, _)| **s == *suffix) {
                        return Err(RouteError::DuplicateHost(name.clone()));
                    }
                    wildcard_hosts.push((Box::from(suffix), index));
                } else if exact_hosts.insert(lower.into_boxed_str(), index).is_some() {
                    return Err(RouteError::DuplicateHost(name.clone()));
                }
            }
            hosts.push(CompiledHost::new(vh.routes));
        }
        wildcard_hosts.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        Ok(RouteTable {
            hosts,
            exact_hosts,
            wildcard_hosts,
            default_host,
        })
    }

    /// Finds the virtual host for a `Host` value (port and trailing dot ignored, any case).
    pub fn find_host(&self, host: &str) -> Option<usize> {
        let host = host_without_port(host).trim_end_matches('.');
        let mut buf = [0u8; MAX_HOST];
        if host.len() <= MAX_HOST {
            let lower = &mut buf[..host.len()];
            lower.copy_from_slice(host.as_bytes());
            lower.make_ascii_lowercase();
            // Lowercasing ASCII keeps valid UTF-8 valid.
            if let Ok(lower) = std::str::from_utf8(lower) {
                if let Some(&i) = self.exact_hosts.get(lower) {
                    return Some(i);
                }
                for (suffix, i) in &self.wildcard_hosts {
                    if lower.len() > suffix.len() && lower.ends_with(&**suffix) {
                        return Some(*i);
                    }
                }
            }
        }
        self.default_host
    }

    /// Finds the route for a request.
    pub fn find(
        &self,
        host: &str,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<RouteMatch<'_, T>> {
        let host_index = self.find_host(host)?;
        let vh = &self.hosts[host_index];
        let route_index = vh.find(method, path, headers)?;
        Some(RouteMatch {
            route: &vh.routes[route_index],
            host_index,
            route_index,
        })
    }
}

impl<T> CompiledHost<T> {
    fn new(routes: Vec<Route<T>>) -> Self {
        let mut exact: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        let mut regexes = Vec::new();
        let mut prefixes = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            match &r.path {
                PathMatch::Exact(p) => exact.entry(p.as_str().into()).or_default().push(i),
                PathMatch::Regex(_) => regexes.push(i),
                PathMatch::Prefix(_) => prefixes.push(i),
            }
        }
        prefixes.sort_by_key(|&i| match &routes[i].path {
            PathMatch::Prefix(p) => std::cmp::Reverse(p.len()),
            _ => std::cmp::Reverse(0),
        });
        CompiledHost {
            routes,
            exact,
            regexes,
            prefixes,
        }
    }

    fn find(&self, method: &Method, path: &str, headers: &HeaderMap) -> Option<usize> {
        let accepts = |i: &usize| self.routes[*i].accepts(method, headers);
        if let Some(candidates) = self.exact.get(path)
            && let Some(&i) = candidates.iter().find(|i| accepts(i))
        {
            return Some(i);
        }
        let regex_hit = self.regexes.iter().copied().find(|i| {
            matches!(&self.routes[*i].path, PathMatch::Regex(re) if re.is_match(path)) && accepts(i)
        });
        if regex_hit.is_some() {
            return regex_hit;
        }
        self.prefixes.iter().copied().find(|i| {
            matches!(&self.routes[*i].path, PathMatch::Prefix(p) if path.starts_with(p.as_str()))
                && accepts(i)
        })
    }
}

impl<T> Route<T> {
    fn accepts(&self, method: &Method, headers: &HeaderMap) -> bool {
        (self.methods.is_empty() || self.methods.contains(method))
            && self
                .headers
                .iter()
                .all(|(name, value)| headers.get_all(name).iter().any(|v| v == value))
    }
}

/// Strips the port from a `Host` value, keeping IPv6 brackets.
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: PathMatch, action: &'static str) -> Route<&'static str> {
        Route {
            path,
            methods: vec![],
            headers: vec![],
            action,
        }
    }

    fn prefix(p: &str) -> PathMatch {
        PathMatch::Prefix(p.into())
    }

    fn table() -> RouteTable<&'static str> {
        let mut post_only = route(prefix("/api/"), "api-post");
        post_only.methods = vec![Method::POST];
        let mut canary = route(prefix("/api/"), "api-canary");
        canary.headers = vec![(HeaderName::from_static("x-canary"), "1".parse().unwrap())];
        RouteTable::new(vec![
            VirtualHost {
                names: vec!["shop.example.com".into()],
                default: true,
                routes: vec![
                    route(prefix("/"), "root"),
                    route(prefix("/products/"), "products"),
                    route(prefix("/products/special/"), "special"),
                    route(PathMatch::Exact("/products/".into()), "exact"),
                    route(
                        PathMatch::Regex(Regex::new(r"\.(png|jpg)$").unwrap()),
                        "img",
                    ),
                    route(
                        PathMatch::Regex(Regex::new(r"^/products/.*\.jpg$").unwrap()),
                        "second",
                    ),
                    post_only,
                    canary,
                    route(prefix("/api/"), "api"),
                ],
            },
            VirtualHost {
                names: vec!["*.example.com".into(), "Other.Test".into()],
                default: false,
                routes: vec![route(prefix("/"), "wild")],
            },
            VirtualHost {
                names: vec!["*.deep.example.com".into()],
                default: false,
                routes: vec![route(prefix("/"), "deep")],
            },
        ])
        .unwrap()
    }

    fn find<'a>(t: &'a RouteTable<&'static str>, host: &str, path: &str) -> Option<&'a str> {
        t.find(host, &Method::GET, path, &HeaderMap::new())
            .map(|m| m.route.action)
    }

    #[test]
    fn path_order_follows_nginx() {
        let t = table();
        let h = "shop.example.com";
        assert_eq!(find(&t, h, "/products/"), Some("exact"));
        assert_eq!(find(&t, h, "/products/x"), Some("products"));
        assert_eq!(find(&t, h, "/products/special/x"), Some("special"));
        assert_eq!(
            find(&t, h, "/products/a.jpg"),
            Some("img"),
            "first regex wins"
        );
        assert_eq!(find(&t, h, "/elsewhere"), Some("root"));
    }

    #[test]
    fn hosts_exact_wildcard_default() {
        let t = table();
        assert_eq!(find(&t, "SHOP.example.com:8080", "/x"), Some("root"));
        assert_eq!(find(&t, "a.example.com", "/x"), Some("wild"));
        assert_eq!(find(&t, "a.deep.example.com", "/x"), Some("deep"));
        assert_eq!(find(&t, "other.test.", "/x"), Some("wild"));
        assert_eq!(find(&t, "example.com", "/x"), Some("root"), "default");
        assert_eq!(find(&t, "[::1]:80", "/x"), Some("root"));
    }

    #[test]
    fn conditions_skip_to_next_candidate() {
        let t = table();
        let h = "shop.example.com";
        let mut headers = HeaderMap::new();
        let m = |method: Method, headers: &HeaderMap| {
            t.find(h, &method, "/api/x", headers)
                .map(|m| m.route.action)
        };
        assert_eq!(m(Method::POST, &headers), Some("api-post"));
        assert_eq!(m(Method::GET, &headers), Some("api"));
        headers.insert("x-canary", "1".parse().unwrap());
        assert_eq!(m(Method::GET, &headers), Some("api-canary"));
    }

    #[test]
    fn no_default_means_no_match() {
        let t = RouteTable::new(vec![VirtualHost {
            names: vec!["a.test".into()],
            default: false,
            routes: vec![route(prefix("/only/"), "x")],
        }])
        .unwrap();
        assert_eq!(find(&t, "b.test", "/only/"), None);
        assert_eq!(find(&t, "a.test", "/other"), None);
    }

    #[test]
    fn rejects_bad_tables() {
        let vh = |names: Vec<&str>, default| VirtualHost::<()> {
            names: names.into_iter().map(String::from).collect(),
            default,
            routes: vec![],
        };
        assert_eq!(
            RouteTable::new(vec![vh(vec!["a.test"], false), vh(vec!["A.test"], false)]).err(),
            Some(RouteError::DuplicateHost("A.test".into()))
        );
        assert_eq!(
            RouteTable::new(vec![vh(vec![], true), vh(vec![], true)]).err(),
            Some(RouteError::DuplicateDefault)
        );
        assert!(matches!(
            RouteTable::new(vec![vh(vec!["a.*.test"], false)]),
            Err(RouteError::InvalidHost(_))
        ));
    }

    #[test]
    fn strips_ports() {
        assert_eq!(host_without_port("a.test:80"), "a.test");
        assert_eq!(host_without_port("a.test"), "a.test");
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
    }
}

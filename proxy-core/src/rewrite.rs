//! URL rewriting and redirects, and path normalisation before routing.

use std::borrow::Cow;

use http::StatusCode;
use regex::Regex;

use crate::template::Template;

/// How a route rewrites the path before forwarding; the query string is always kept.
#[derive(Debug, Clone, Default)]
pub enum PathRewrite {
    /// Forward the path unchanged.
    #[default]
    Keep,
    /// Remove this prefix (`/api/users` with `/api` becomes `/users`).
    StripPrefix(String),
    /// Replace the leading `from` with `to` (`/old/x` becomes `/new/x`).
    ReplacePrefix {
        /// The prefix to replace.
        from: String,
        /// What replaces it.
        to: String,
    },
    /// Replace the first match of `pattern` with `replacement` (`$1`, `${name}` expand).
    Regex {
        /// The pattern.
        pattern: Regex,
        /// The replacement, in `regex` crate syntax.
        replacement: String,
    },
}

impl PathRewrite {
    /// The rewritten path, or `None` when the path is unchanged.
    pub fn apply(&self, path: &str) -> Option<String> {
        let out = match self {
            PathRewrite::Keep => return None,
            PathRewrite::StripPrefix(prefix) => path.strip_prefix(prefix.as_str())?.to_owned(),
            PathRewrite::ReplacePrefix { from, to } => {
                let rest = path.strip_prefix(from.as_str())?;
                let mut s = String::with_capacity(to.len() + rest.len());
                s.push_str(to);
                s.push_str(rest);
                s
            }
            PathRewrite::Regex {
                pattern,
                replacement,
            } => match pattern.replace(path, replacement.as_str()) {
                Cow::Borrowed(_) => return None,
                Cow::Owned(s) => s,
            },
        };
        Some(if out.starts_with('/') {
            out
        } else {
            format!("/{out}")
        })
    }
}

/// A route that answers with a redirect instead of proxying.
#[derive(Debug, Clone)]
pub struct Redirect {
    /// 301, 302, 303, 307 or 308.
    pub status: StatusCode,
    /// The `Location`, with variables such as `https://$host$request_uri`.
    pub location: Template,
}

/// Statuses a redirect may use.
pub const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

/// Resolves `.` and `..` segments (RFC 3986 section 5.2.4) so that `/public/../admin` is routed,
/// and forwarded, as `/admin`. Returns `None` when the path needs no change.
pub fn normalize_path(path: &str) -> Option<String> {
    if !path.starts_with('/') || !has_dot_segment(path) {
        return None;
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() {
        s.push('/');
    }
    Some(s)
}

fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|s| s == "." || s == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites() {
        let strip = PathRewrite::StripPrefix("/api".into());
        assert_eq!(strip.apply("/api/users").as_deref(), Some("/users"));
        assert_eq!(strip.apply("/api").as_deref(), Some("/"));
        assert_eq!(strip.apply("/other"), None);
        let replace = PathRewrite::ReplacePrefix {
            from: "/old/".into(),
            to: "/new/v2/".into(),
        };
        assert_eq!(replace.apply("/old/x").as_deref(), Some("/new/v2/x"));
        let re = PathRewrite::Regex {
            pattern: Regex::new(r"^/u/(\d+)/(?P<rest>.*)$").unwrap(),
            replacement: "/users/$1/${rest}".into(),
        };
        assert_eq!(
            re.apply("/u/42/orders").as_deref(),
            Some("/users/42/orders")
        );
        assert_eq!(re.apply("/x"), None);
        assert_eq!(PathRewrite::Keep.apply("/x"), None);
    }

    #[test]
    fn normalizes_dot_segments() {
        assert_eq!(normalize_path("/a/b"), None);
        assert_eq!(
            normalize_path("/public/../admin").as_deref(),
            Some("/admin")
        );
        assert_eq!(normalize_path("/a/./b/.").as_deref(), Some("/a/b/"));
        assert_eq!(normalize_path("/../../x").as_deref(), Some("/x"));
        assert_eq!(normalize_path("/a/..").as_deref(), Some("/"));
        assert_eq!(normalize_path("/..").as_deref(), Some("/"));
        assert_eq!(normalize_path("/a..b/.c"), None);
    }
}

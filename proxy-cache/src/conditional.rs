//! The client's own preconditions (RFC 9110 section 13), evaluated by the cache against a stored
//! response (RFC 9111 section 4.3.2).
//!
//! Everything here is pure: the stored response's fields and the time it was received come in as
//! arguments. Field values from the client are untrusted; nothing here panics on any of them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method};

/// What the preconditions say about serving a stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// No precondition stops the request: serve the stored response (or a range of it).
    Proceed,
    /// `If-None-Match` or `If-Modified-Since` matched on GET or HEAD: answer 304.
    NotModified,
    /// `If-Match` or `If-Unmodified-Since` failed: answer 412.
    Failed,
}

/// An entity-tag (RFC 9110 section 8.8.3) borrowed from a field value: `opaque` is the text
/// between the double quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntityTag<'a> {
    /// Marked with the `W/` prefix.
    pub(crate) weak: bool,
    /// The opaque-tag without its quotes.
    pub(crate) opaque: &'a [u8],
}

impl EntityTag<'_> {
    /// Section 8.8.3.2: "Strong comparison: two entity tags are equivalent if both are not weak
    /// and their opaque-tags match character-by-character."
    pub(crate) fn strong_eq(&self, other: &EntityTag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    /// Section 8.8.3.2: "Weak comparison: two entity tags are equivalent if their opaque-tags
    /// match character-by-character, regardless of either or both being tagged as weak."
    pub(crate) fn weak_eq(&self, other: &EntityTag<'_>) -> bool {
        self.opaque == other.opaque
    }
}

/// An `If-Match` or `If-None-Match` field value: `"*" / #entity-tag`.
#[derive(Debug, PartialEq, Eq)]
enum TagList<'a> {
    /// `*`.
    Any,
    /// The listed entity-tags (possibly none: `#` allows an empty list).
    Tags(Vec<EntityTag<'a>>),
}

/// Evaluates `If-Match`, `If-Unmodified-Since`, `If-None-Match` and `If-Modified-Since` in the
/// order of RFC 9110 section 13.2.2 against the stored response's `ETag`, `Last-Modified` and
/// `Date`. `received` is the time the stored response was received, used as its last-modified
/// time when it has neither `Last-Modified` nor `Date` (RFC 9111 section 4.3.2).
///
/// Choices where the RFCs leave room: a malformed entity-tag list matches nothing (so a malformed
/// `If-Match` fails and a malformed `If-None-Match` lets the request proceed); an empty list is
/// valid and matches nothing; `If-Unmodified-Since` is ignored when the stored response has no
/// `Last-Modified` (section 13.1.4: "MUST ignore ... if the resource does not have a
/// modification date available"); a date field given on more than one line is ignored as a list.
///
/// Note for callers: RFC 9111 section 4.3.2 says "the If-Match and If-Unmodified-Since
/// conditional header fields are not applicable to a cache" (step 1 of section 13.2.2 is for
/// the origin server). A caller that wants that strict reading forwards a request carrying
/// either field instead of answering [`Precondition::Failed`] from the cache.
pub fn evaluate(
    method: &Method,
    request: &HeaderMap,
    stored: &HeaderMap,
    received: SystemTime,
) -> Precondition {
    let stored_etag = stored.get(header::ETAG).and_then(parse_entity_tag_value);
    let last_modified = single_date(stored, &header::LAST_MODIFIED);
    let get_or_head = method == Method::GET || method == Method::HEAD;

    // Section 13.2.2 step 1: "When recipient is the origin server and If-Match is present,
    // evaluate the If-Match precondition: if true, continue to step 3; if false, respond 412".
    if request.contains_key(header::IF_MATCH) {
        let matched = match parse_tag_list(request, &header::IF_MATCH) {
            // Section 13.1.1: "If the field value is "*", the condition is true if the origin
            // server has a current representation for the target resource." The stored one is.
            Some(TagList::Any) => true,
            // "If the field value is a list of entity tags, the condition is true if any of the
            // listed tags match the entity tag of the selected representation" (strong).
            Some(TagList::Tags(tags)) => {
                stored_etag.is_some_and(|current| tags.iter().any(|tag| tag.strong_eq(&current)))
            }
            None => false,
        };
        if !matched {
            return Precondition::Failed;
        }
    } else if let Some(date) = single_date(request, &header::IF_UNMODIFIED_SINCE) {
        // Step 2: "When ... If-Match is not present, and If-Unmodified-Since is present". Section
        // 13.1.4: "If the selected representation's last modification date is earlier than or
        // equal to the date provided in the field value, the condition is true."
        if last_modified.is_some_and(|modified| modified > date) {
            return Precondition::Failed;
        }
    }

    // Step 3: "When If-None-Match is present, evaluate the If-None-Match precondition: if true,
    // continue to step 5; if false for GET/HEAD, respond 304 (Not Modified); if false for other
    // methods, respond 412 (Precondition Failed)".
    if request.contains_key(header::IF_NONE_MATCH) {
        let matched = match parse_tag_list(request, &header::IF_NONE_MATCH) {
            // Section 13.1.2: "If the field value is "*", the condition is false if the origin
            // server has a current representation for the target resource."
            Some(TagList::Any) => true,
            // "If the field value is a list of entity tags, the condition is false if one of the
            // listed tags matches the entity tag of the selected representation. A recipient MUST
            // use the weak comparison function".
            Some(TagList::Tags(tags)) => {
                stored_etag.is_some_and(|current| tags.iter().any(|tag| tag.weak_eq(&current)))
            }
            None => false,
        };
        if matched {
            return if get_or_head {
                Precondition::NotModified
            } else {
                Precondition::Failed
            };
        }
    } else if get_or_head {
        // Step 4: "When the method is GET or HEAD, If-None-Match is not present, and
        // If-Modified-Since is present". Section 13.1.3: "A recipient MUST ignore the
        // If-Modified-Since header field if the received field value is not a valid HTTP-date".
        if let Some(date) = single_date(request, &header::IF_MODIFIED_SINCE) {
            // RFC 9111 section 4.3.2: "the last modified time of the stored response, as given
            // by Last-Modified, if present; otherwise the Date header field value, if present;
            // otherwise the time at which the stored response was received."
            let modified = last_modified
                .or_else(|| single_date(stored, &header::DATE))
                .unwrap_or_else(|| whole_seconds(received));
            // Section 13.1.3: "If the selected representation's last modification date is
            // earlier or equal to the date provided in the field value, the condition is false."
            if modified <= date {
                return Precondition::NotModified;
            }
        }
    }

    Precondition::Proceed
}

/// True when the request carries any precondition the cache evaluates.
pub fn is_conditional(request: &HeaderMap) -> bool {
    [
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
    ]
    .iter()
    .any(|name| request.contains_key(name))
}

/// The HTTP-date of a field given on exactly one line (RFC 9110 section 5.6.7: all three formats
/// are accepted). `None` when absent, repeated (a list of dates is invalid) or not a valid date.
pub(crate) fn single_date(map: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    let mut values = map.get_all(name).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let text = value.to_str().ok()?.trim_matches([' ', '\t']);
    httpdate::parse_http_date(text).ok()
}

/// A field value holding exactly one entity-tag (`ETag`, or an `If-Range` that is not a date);
/// `None` when it is malformed.
pub(crate) fn parse_entity_tag_value(value: &HeaderValue) -> Option<EntityTag<'_>> {
    let (tag, rest) = parse_entity_tag(skip_ows(value.as_bytes()))?;
    skip_ows(rest).is_empty().then_some(tag)
}

/// Truncates to the whole second below, the resolution of an HTTP-date, so that a client that
/// echoes a formatted time back compares equal to it.
fn whole_seconds(time: SystemTime) -> SystemTime {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => UNIX_EPOCH + Duration::from_secs(since.as_secs()),
        Err(_) => time,
    }
}

/// Parses `"*" / #entity-tag` over every field line of `name` (section 5.3: lines combine into
/// one comma-separated list). `None` when malformed.
fn parse_tag_list<'a>(map: &'a HeaderMap, name: &HeaderName) -> Option<TagList<'a>> {
    let mut tags = Vec::new();
    let mut stars = 0usize;
    for value in map.get_all(name) {
        let mut rest = value.as_bytes();
        loop {
            rest = skip_ows(rest);
            // Section 5.6.1.2: "a recipient MUST accept empty list elements".
            match rest.split_first() {
                None => break,
                Some((b',', after)) => {
                    rest = after;
                    continue;
                }
                Some((b'*', after)) => {
                    stars += 1;
                    rest = after;
                }
                Some(_) => {
                    let (tag, after) = parse_entity_tag(rest)?;
                    tags.push(tag);
                    rest = after;
                }
            }
            rest = skip_ows(rest);
            match rest.split_first() {
                None => break,
                Some((b',', after)) => rest = after,
                Some(_) => return None,
            }
        }
    }
    match (stars, tags.is_empty()) {
        (0, _) => Some(TagList::Tags(tags)),
        (1, true) => Some(TagList::Any),
        // `*` is the whole field value or nothing.
        _ => None,
    }
}

/// Parses one `entity-tag = [ weak ] opaque-tag` at the start of `input`, returning it and the
/// rest. Section 8.8.3: `weak = %s"W/"` (case-sensitive), `opaque-tag = DQUOTE *etagc DQUOTE`,
/// `etagc = %x21 / %x23-7E / obs-text`.
fn parse_entity_tag(input: &[u8]) -> Option<(EntityTag<'_>, &[u8])> {
    let (weak, quoted) = match input.strip_prefix(b"W/") {
        Some(rest) => (true, rest),
        None => (false, input),
    };
    let inner = quoted.strip_prefix(b"\"")?;
    let end = inner.iter().position(|&b| b == b'"')?;
    let (opaque, closing) = inner.split_at(end);
    if !opaque
        .iter()
        .all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
    {
        return None;
    }
    let rest = closing.get(1..)?;
    Some((EntityTag { weak, opaque }, rest))
}

/// Skips optional whitespace (section 5.6.3: `OWS = *( SP / HTAB )`).
fn skip_ows(input: &[u8]) -> &[u8] {
    let start = input
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(input.len());
    input.get(start..).unwrap_or_default()
}

#[cfg(test)]
#[path = "conditional_tests.rs"]
mod tests;

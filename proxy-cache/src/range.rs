//! Range requests (RFC 9110 section 14) answered from a complete stored response.
//!
//! Everything here is pure. The `Range` and `If-Range` values are untrusted; nothing here panics
//! on any of them, nor on an answer that does not fit the body it is applied to.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, StatusCode};

use crate::conditional::{parse_entity_tag_value, single_date};

/// The most ranges one request may ask for before the cache answers with the whole
/// representation instead (a defence against range amplification).
pub const MAX_RANGES: usize = 16;

/// Which part of a stored representation of `len` bytes the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No usable `Range` (absent, not `bytes`, malformed, too many ranges, or `If-Range` failed):
    /// the full 200 response.
    Full,
    /// One satisfiable range: 206 with `Content-Range`.
    Single(Range<u64>),
    /// Several satisfiable ranges, ordered and with overlaps merged: 206 multipart/byteranges.
    Multiple(Vec<Range<u64>>),
    /// Syntactically valid but no range is satisfiable: 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// A 206 or 416 answer built from a stored response.
#[derive(Debug, Clone)]
pub struct Partial {
    /// 206 or 416.
    pub status: StatusCode,
    /// Fields to set on the stored response's headers, replacing any of the same name
    /// (`Content-Range`, `Content-Type` for multipart, `Content-Length`).
    pub headers: HeaderMap,
    /// The body to send.
    pub body: Bytes,
}

/// One parsed `range-spec` of the `bytes` unit (RFC 9110 section 14.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `int-range = first-pos "-" [ last-pos ]`.
    Int { first: u64, last: Option<u64> },
    /// `suffix-range = "-" suffix-length`.
    Suffix(u64),
}

/// The part of a multipart boundary that does not change between attempts.
const BOUNDARY_PREFIX: &str = "proxy-cache-byteranges-";

/// Picks the answer for a request against a stored 200 response of `len` bytes. Only GET has
/// ranges (RFC 9110 section 14.2); `If-Range` uses the strong comparison against the stored
/// `ETag`, or an exact match against a strong `Last-Modified` (section 13.1.5).
///
/// Choices where the RFC leaves room: a `Range` that is malformed, given on more than one line,
/// has an invalid range (`last-pos < first-pos`) or more than [`MAX_RANGES`] ranges is ignored
/// ([`RangeAnswer::Full`]); overlapping and adjacent ranges are coalesced; a `Last-Modified` in
/// `If-Range` counts as strong only when the stored `Date` is at least one second later (section
/// 8.8.2.2), otherwise the range condition is false. A zero-length representation with a
/// non-zero suffix-range gets [`RangeAnswer::Full`]: section 14.1.1 calls that range
/// satisfiable, but no `Content-Range` can describe zero bytes, so the empty 200 is the answer.
pub fn select(method: &Method, request: &HeaderMap, stored: &HeaderMap, len: u64) -> RangeAnswer {
    // Section 14.2: "A server MUST ignore a Range header field received with a request method
    // that is unrecognized or for which range handling is not defined. For this specification,
    // GET is the only method for which range handling is defined."
    if method != Method::GET {
        return RangeAnswer::Full;
    }
    // `Range` is not a list-based field: a second line makes the value invalid.
    let mut values = request.get_all(header::RANGE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return RangeAnswer::Full;
    };
    // Section 14.2: "A server MAY ignore or reject a Range header field that contains an invalid
    // ranges-specifier (Section 14.1.1), a ranges-specifier with more than two overlapping
    // ranges, or a set of many small ranges that are not listed in ascending order".
    let Some(specs) = parse_range(value) else {
        return RangeAnswer::Full;
    };
    // Section 13.1.5: "If the validator does not match, the server MUST ignore the Range header
    // field."
    if request.contains_key(header::IF_RANGE) && !if_range_matches(request, stored) {
        return RangeAnswer::Full;
    }
    resolve(&specs, len)
}

/// Builds the 206 or 416 answer; `None` for [`RangeAnswer::Full`]. `stored` is the stored
/// response's headers (its `Content-Type` goes into each multipart part).
///
/// The length is `body.len()`. A [`RangeAnswer::Single`] or [`RangeAnswer::Multiple`] with a
/// range that is empty or outside the body also gives `None` (serve the full response, which
/// section 14.2 always allows) rather than a wrong 206; a `Multiple` of one range is answered as
/// a single range (section 14.6: a multipart answer is for "two or more parts").
pub fn partial(answer: &RangeAnswer, stored: &HeaderMap, body: &Bytes) -> Option<Partial> {
    let len = u64::try_from(body.len()).ok()?;
    match answer {
        RangeAnswer::Full => None,
        RangeAnswer::Unsatisfiable => unsatisfiable(len),
        RangeAnswer::Single(range) => single(range, len, body),
        RangeAnswer::Multiple(ranges) => match ranges.as_slice() {
            [] => None,
            [range] => single(range, len, body),
            _ => multipart(ranges, len, stored, body),
        },
    }
}

/// Parses `ranges-specifier = range-unit "=" range-set` for the `bytes` unit. `None` when the
/// header is to be ignored: another unit, a syntax error, an invalid range, no range, or more
/// than [`MAX_RANGES`] ranges.
fn parse_range(value: &HeaderValue) -> Option<Vec<Spec>> {
    let text = value.to_str().ok()?.trim_matches([' ', '\t']);
    let (unit, set) = text.split_once('=')?;
    // Section 14.1: "Range units are compared in a case-insensitive manner".
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    // `range-set = 1#range-spec`; section 5.6.1.2: "a recipient MUST accept empty list
    // elements".
    for element in set.split(',') {
        let element = element.trim_matches([' ', '\t']);
        if element.is_empty() {
            continue;
        }
        if specs.len() == MAX_RANGES {
            return None;
        }
        specs.push(parse_spec(element)?);
    }
    (!specs.is_empty()).then_some(specs)
}

/// Parses one `int-range` or `suffix-range`.
fn parse_spec(element: &str) -> Option<Spec> {
    if let Some(suffix) = element.strip_prefix('-') {
        return Some(Spec::Suffix(digits(suffix)?));
    }
    let (first, last) = element.split_once('-')?;
    let first = digits(first)?;
    let last = match last {
        "" => None,
        last => Some(digits(last)?),
    };
    // Section 14.1.1: "A byte-range-spec is invalid if the last-pos value is present and less
    // than the first-pos."
    if last.is_some_and(|last| last < first) {
        return None;
    }
    Some(Spec::Int { first, last })
}

/// `1*DIGIT`, saturating at `u64::MAX`: a position past any representation stays past it, a
/// last-pos or suffix-length past it still means "to the end".
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// Section 13.1.5, the range condition of a request that has exactly one `If-Range` line.
fn if_range_matches(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let mut values = request.get_all(header::IF_RANGE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let text = value.as_bytes().trim_ascii_start();
    if text.starts_with(b"\"") || text.starts_with(b"W/") {
        // "1. If the validator given in the If-Range header field is an entity tag, the range
        // condition is true if the strong comparison matches" (a weak tag never does).
        let (Some(tag), Some(current)) = (
            parse_entity_tag_value(value),
            stored.get(header::ETAG).and_then(parse_entity_tag_value),
        ) else {
            return false;
        };
        return tag.strong_eq(&current);
    }
    // "2. If the validator given in the If-Range header field is an HTTP-date, the range
    // condition is true if the date is a valid, strong validator for the representation and
    // exactly matches the Last-Modified field value."
    let (Some(date), Some(modified)) = (
        single_date(request, &header::IF_RANGE),
        single_date(stored, &header::LAST_MODIFIED),
    ) else {
        return false;
    };
    // Section 8.8.2.2: strong when "the validator is being compared by an intermediate cache to
    // the validator stored in its cache entry for the representation, and that cache entry
    // includes a Date value that is at least one second after the Last-Modified value".
    let strong = single_date(stored, &header::DATE)
        .zip(modified.checked_add(Duration::from_secs(1)))
        .is_some_and(|(sent, later)| sent >= later);
    // "3. Otherwise, the range condition is false."
    strong && date == modified
}

/// Turns valid specs into the answer for a representation of `len` bytes.
fn resolve(specs: &[Spec], len: u64) -> RangeAnswer {
    let mut ranges: Vec<Range<u64>> = specs
        .iter()
        .filter_map(|spec| satisfiable(*spec, len))
        .collect();
    if ranges.is_empty() {
        // Section 14.1.1: "When a selected representation has zero length, the only satisfiable
        // form of range-spec is a suffix-range with a non-zero suffix-length." It selects no
        // bytes, which a 206 cannot say: ignore the Range and send the (empty) 200.
        let empty_but_satisfiable = len == 0
            && specs
                .iter()
                .any(|spec| matches!(spec, Spec::Suffix(n) if *n > 0));
        return if empty_but_satisfiable {
            RangeAnswer::Full
        } else {
            RangeAnswer::Unsatisfiable
        };
    }
    // Section 14.2: "a server MAY coalesce any of the ranges that overlap, or that are separated
    // by a gap that is smaller than the overhead of sending multiple parts". Overlapping and
    // adjacent ranges are merged, which also orders them.
    ranges.sort_unstable_by_key(|range| (range.start, range.end));
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    match <[Range<u64>; 1]>::try_from(merged) {
        Ok([range]) => RangeAnswer::Single(range),
        Err(merged) => RangeAnswer::Multiple(merged),
    }
}

/// Section 14.1.1: "an int-range with a first-pos that is less than the current length of the
/// selected representation or a suffix-range with a non-zero suffix-length" (and some bytes to
/// select). Returns the half-open byte range, clamped to the representation.
fn satisfiable(spec: Spec, len: u64) -> Option<Range<u64>> {
    match spec {
        Spec::Int { first, last } => {
            if first >= len {
                return None;
            }
            // "If the last-pos value is absent, or if the value is greater than or equal to the
            // current length of the representation data, the byte range is interpreted as the
            // remainder of the representation". `first < len` keeps `len - 1` and `+ 1` in range.
            let end = last.map_or(len, |last| last.min(len - 1) + 1);
            Some(first..end)
        }
        Spec::Suffix(0) => None,
        Spec::Suffix(_) if len == 0 => None,
        // "If the selected representation is shorter than the specified suffix-length, the
        // entire representation is used."
        Spec::Suffix(suffix) => Some(len - suffix.min(len)..len),
    }
}

/// The 416 answer. Section 15.5.17: "a server generating a 416 (Range Not Satisfiable) response
/// to a byte-range request SHOULD send a Content-Range header field with an unsatisfied-range
/// value".
fn unsatisfiable(len: u64) -> Option<Partial> {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_RANGE, text_value(format!("bytes */{len}"))?);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
    Some(Partial {
        status: StatusCode::RANGE_NOT_SATISFIABLE,
        headers,
        body: Bytes::new(),
    })
}

/// The 206 answer for one range (section 15.3.7.1: `Content-Range` and the part as content).
fn single(range: &Range<u64>, len: u64, body: &Bytes) -> Option<Partial> {
    let (start, end) = bounds(range, len)?;
    let part = body.slice(start..end);
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_RANGE, content_range(range, len)?);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(part.len()));
    Some(Partial {
        status: StatusCode::PARTIAL_CONTENT,
        headers,
        body: part,
    })
}

/// The 206 multipart/byteranges answer (section 14.6, RFC 2046 section 5.1.1).
fn multipart(ranges: &[Range<u64>], len: u64, stored: &HeaderMap, body: &Bytes) -> Option<Partial> {
    let mut parts = Vec::with_capacity(ranges.len());
    for range in ranges {
        let (start, end) = bounds(range, len)?;
        parts.push((content_range(range, len)?, body.get(start..end)?));
    }
    let content_type = stored.get(header::CONTENT_TYPE);
    let boundary = boundary(parts.iter().map(|(_, data)| *data));

    // RFC 2046: `multipart-body := [preamble CRLF] dash-boundary transport-padding CRLF
    // body-part *encapsulation close-delimiter transport-padding [CRLF epilogue]`, with
    // `encapsulation := delimiter transport-padding CRLF body-part` and `delimiter := CRLF
    // dash-boundary`: the CRLF before each boundary belongs to the delimiter, not the part.
    let payload: usize = parts.iter().map(|(_, data)| data.len()).sum();
    let mut out = Vec::with_capacity(payload + parts.len() * (boundary.len() + 128));
    for (index, (range_value, data)) in parts.iter().enumerate() {
        if index > 0 {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--");
        out.extend_from_slice(boundary.as_bytes());
        out.extend_from_slice(b"\r\n");
        // Section 14.6: "Within the header area of each body part in the multipart payload,
        // the server MUST generate a Content-Range header field corresponding to the range
        // being enclosed in that body part. If the selected representation would have had a
        // Content-Type header field in a 200 (OK) response, the server SHOULD generate that same
        // Content-Type header field in the header area of each body part."
        if let Some(content_type) = content_type {
            out.extend_from_slice(b"Content-Type: ");
            out.extend_from_slice(content_type.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"Content-Range: ");
        out.extend_from_slice(range_value.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(data);
    }
    out.extend_from_slice(b"\r\n--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"--\r\n");

    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        text_value(format!("multipart/byteranges; boundary={boundary}"))?,
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    Some(Partial {
        status: StatusCode::PARTIAL_CONTENT,
        headers,
        body: Bytes::from(out),
    })
}

/// A boundary that occurs in none of the parts (RFC 2046 section 5.1.1: "the boundary delimiter
/// MUST NOT appear inside any of the encapsulated parts"). The suffix is keyed by a per-call
/// random hasher so an origin cannot plant the boundary in advance; the loop ends because the
/// parts hold finitely many substrings.
fn boundary<'a>(parts: impl Iterator<Item = &'a [u8]> + Clone) -> String {
    let keys = RandomState::new();
    let mut attempt = 0u64;
    loop {
        let candidate = format!("{BOUNDARY_PREFIX}{:016x}", keys.hash_one(attempt));
        if !parts
            .clone()
            .any(|part| contains(part, candidate.as_bytes()))
        {
            return candidate;
        }
        attempt = attempt.wrapping_add(1);
    }
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// The `usize` bounds of a non-empty range inside a representation of `len` bytes.
fn bounds(range: &Range<u64>, len: u64) -> Option<(usize, usize)> {
    if range.start >= range.end || range.end > len {
        return None;
    }
    Some((
        usize::try_from(range.start).ok()?,
        usize::try_from(range.end).ok()?,
    ))
}

/// `Content-Range: bytes first-last/complete-length` with the inclusive last position (section
/// 14.4). Only called for non-empty ranges.
fn content_range(range: &Range<u64>, len: u64) -> Option<HeaderValue> {
    let last = range.end.checked_sub(1)?;
    text_value(format!("bytes {}-{last}/{len}", range.start))
}

/// A header value from text this module formatted (always visible ASCII).
fn text_value(text: String) -> Option<HeaderValue> {
    HeaderValue::try_from(text).ok()
}

#[cfg(test)]
#[path = "range_tests.rs"]
mod tests;

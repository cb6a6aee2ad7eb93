//! Cache-Control directives (RFC 9111 section 5.2) for requests and responses, and the targeted
//! `CDN-Cache-Control` field (RFC 9213).

use std::borrow::Cow;

use http::HeaderMap;
use http::header::{CACHE_CONTROL, HeaderName, PRAGMA};

/// The largest delta-seconds a cache has to represent (RFC 9111 section 1.2.2: 2^31).
pub const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// A directive that may carry a list of field names (`no-cache="Set-Cookie"`, `private="X"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FieldList {
    /// The directive is absent.
    #[default]
    Absent,
    /// The directive is present without an argument: it applies to the whole response.
    All,
    /// The directive names these fields (lowercased); it applies to them alone.
    Fields(Vec<HeaderName>),
}

/// Response directives of one Cache-Control (or targeted) field, all field lines together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseDirectives {
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache`, qualified or not.
    pub no_cache: FieldList,
    /// `private`, qualified or not.
    pub private: FieldList,
    /// `public`.
    pub public: bool,
    /// `max-age`; `Some(0)` when invalid or given twice with different values (section 4.2.1:
    /// invalid freshness information is treated as stale).
    pub max_age: Option<u64>,
    /// `s-maxage`, with the same rules as `max_age`.
    pub s_maxage: Option<u64>,
    /// `must-revalidate`.
    pub must_revalidate: bool,
    /// `proxy-revalidate`.
    pub proxy_revalidate: bool,
    /// `must-understand`.
    pub must_understand: bool,
    /// `no-transform`.
    pub no_transform: bool,
    /// `immutable` (RFC 8246).
    pub immutable: bool,
    /// `stale-while-revalidate=N` (RFC 5861); invalid values are ignored.
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error=N` (RFC 5861); invalid values are ignored.
    pub stale_if_error: Option<u64>,
}

/// `max-stale` in a request: any staleness, or at most this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxStale {
    /// `max-stale` without a value.
    Any,
    /// `max-stale=N`.
    Seconds(u64),
}

/// Request directives (RFC 9111 section 5.2.1), all Cache-Control lines together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestDirectives {
    /// `no-cache`; also set by `Pragma: no-cache` when no Cache-Control is present (section 5.4).
    pub no_cache: bool,
    /// `no-store`.
    pub no_store: bool,
    /// `max-age=N`; an invalid value is treated as 0 (the most restrictive reading).
    pub max_age: Option<u64>,
    /// `max-stale[=N]`; an invalid value is ignored.
    pub max_stale: Option<MaxStale>,
    /// `min-fresh=N`; an invalid value is ignored.
    pub min_fresh: Option<u64>,
    /// `only-if-cached`.
    pub only_if_cached: bool,
    /// `stale-if-error=N` (RFC 5861 section 4).
    pub stale_if_error: Option<u64>,
}

/// Parses the response's `Cache-Control` field lines.
pub fn parse_response(headers: &HeaderMap) -> ResponseDirectives {
    parse_response_field(headers, &http::header::CACHE_CONTROL)
}

/// Parses every line of one response field (`Cache-Control` or a targeted field such as
/// `CDN-Cache-Control`).
pub fn parse_response_field(headers: &HeaderMap, name: &HeaderName) -> ResponseDirectives {
    let mut out = ResponseDirectives::default();
    // Section 5.2: "Cache-Control = #cache-directive"; a list may be split over several field
    // lines (RFC 9110 section 5.3), so every line contributes.
    for line in headers.get_all(name) {
        for_each_directive(line.as_bytes(), |name, arg| {
            apply_response(&mut out, name, &arg);
        });
    }
    normalize(&mut out);
    out
}

/// Parses the request's `Cache-Control` (and, without one, `Pragma`).
pub fn parse_request(headers: &HeaderMap) -> RequestDirectives {
    let mut out = RequestDirectives::default();
    let mut has_cache_control = false;
    for line in headers.get_all(CACHE_CONTROL) {
        has_cache_control = true;
        for_each_directive(line.as_bytes(), |name, arg| {
            apply_request(&mut out, name, arg);
        });
    }
    // RFC 9111 section 5.4 deprecates Pragma ("support for Cache-Control is now widespread") and
    // no longer states how a cache reads it; for HTTP/1.0 clients we keep the rule of RFC 7234
    // section 5.4: "When the Cache-Control header field is not present in a request, caches MUST
    // consider the no-cache request pragma-directive as having the same effect as if
    // "Cache-Control: no-cache" were present", and "When the Cache-Control header field is also
    // present and understood in a request, Pragma is ignored." A Cache-Control field that is
    // present at all, even empty, switches Pragma off.
    if !has_cache_control {
        for line in headers.get_all(PRAGMA) {
            for_each_directive(line.as_bytes(), |name, _| {
                if name == b"no-cache" {
                    out.no_cache = true;
                }
            });
        }
    }
    out
}

/// Parses a targeted field such as `CDN-Cache-Control` (RFC 9213), which uses Structured Field
/// dictionary syntax (RFC 8941). `None` when the field is absent or not a valid dictionary, in
/// which case the cache falls back to `Cache-Control` (RFC 9213 section 2.1).
pub fn parse_targeted(headers: &HeaderMap, name: &HeaderName) -> Option<ResponseDirectives> {
    // RFC 8941 section 4.2: field lines with the same name are combined into one comma-separated
    // value before parsing (RFC 9110 section 5.3). Lines that are empty after trimming add no members and are left out, so that an empty line
    // next to a valid one does not produce an empty list member.
    let mut combined = Vec::new();
    for line in headers.get_all(name) {
        let line = trim_ows(line.as_bytes());
        if line.is_empty() {
            continue;
        }
        if !combined.is_empty() {
            combined.extend_from_slice(b", ");
        }
        combined.extend_from_slice(line);
    }
    // RFC 9213 section 2.1: "If a targeted field in a given response is empty, or a parsing error
    // is encountered, that field MUST be ignored by the cache (i.e., it behaves as if the field
    // were not present, likely falling back to other cache-control mechanisms present)."
    if combined.is_empty() {
        return None;
    }
    let mut out = ResponseDirectives::default();
    SfParser::new(&combined).dictionary(|key, member| apply_targeted(&mut out, key, &member))?;
    normalize(&mut out);
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// RFC 9111 section 5.2 list syntax.
// ---------------------------------------------------------------------------------------------

/// The longest directive name acted on here (`stale-while-revalidate`). Longer names are unknown
/// extensions (section 5.2.3) and are parsed over but not reported.
const LONGEST_NAME: usize = 22;

/// What followed a directive's name in a Cache-Control (or Pragma) list element.
#[derive(Debug)]
enum Arg<'a> {
    /// No `=`: `no-store`.
    Absent,
    /// The token, or the quoted-string with its quotes and backslashes removed.
    Value(Cow<'a, [u8]>),
    /// `=` followed by nothing, an unterminated quoted-string, or anything but OWS between the
    /// element and the next comma (`max-age=5 6`, `max-age=5;x`, `no-store junk`).
    Malformed,
}

/// Calls `visit` with the ASCII-lowercased name and the argument of every directive in one field
/// line.
///
/// Section 5.2: "Cache directives are identified by a token, to be compared case-insensitively,
/// and have an optional argument that can use both token and quoted-string syntax."
/// `cache-directive = token [ "=" ( token / quoted-string ) ]`, in a list where, per RFC 9110
/// section 5.6.1.2, "a recipient MUST parse and ignore a reasonable number of empty list elements".
/// OWS around `=` is tolerated although the grammar has none. An element that does not start with
/// a token is skipped up to the next comma outside a quoted-string; bytes are never assumed to be
/// UTF-8.
fn for_each_directive(line: &[u8], mut visit: impl FnMut(&[u8], Arg<'_>)) {
    let mut i = 0;
    while i < line.len() {
        if line[i] == b',' || is_ows(line[i]) {
            i += 1;
            continue;
        }
        let start = i;
        i = token_end(line, i);
        if i == start {
            i = skip_element(line, i);
            continue;
        }
        let name = &line[start..i];
        i = skip_ows(line, i);
        let mut arg = Arg::Absent;
        if line.get(i) == Some(&b'=') {
            let (value, end) = parse_argument(line, skip_ows(line, i + 1));
            arg = value;
            i = skip_ows(line, end);
        }
        if i < line.len() && line[i] != b',' {
            arg = Arg::Malformed;
            i = skip_element(line, i);
        }
        if name.len() <= LONGEST_NAME {
            let mut lower = [0u8; LONGEST_NAME];
            let lower = &mut lower[..name.len()];
            lower.copy_from_slice(name);
            lower.make_ascii_lowercase();
            visit(lower, arg);
        }
    }
}

/// Reads a directive argument starting at `i` (after `=` and OWS): a quoted-string or a token.
/// Returns the argument and the index just past it.
fn parse_argument(line: &[u8], i: usize) -> (Arg<'_>, usize) {
    if line.get(i) == Some(&b'"') {
        return match unquote(line, i + 1) {
            Some((value, end)) => (Arg::Value(value), end),
            None => (Arg::Malformed, line.len()),
        };
    }
    let end = token_end(line, i);
    if end == i {
        (Arg::Malformed, i)
    } else {
        (Arg::Value(Cow::Borrowed(&line[i..end])), end)
    }
}

/// The content of a quoted-string whose opening quote is just before `start`, and the index past
/// its closing quote; `None` when it is unterminated.
///
/// RFC 9110 section 5.6.4: "Recipients that process the value of a quoted-string MUST handle a
/// quoted-pair as if it were replaced by the octet following the backslash."
fn unquote(line: &[u8], start: usize) -> Option<(Cow<'_, [u8]>, usize)> {
    let mut owned: Option<Vec<u8>> = None;
    let mut i = start;
    while let Some(&c) = line.get(i) {
        match c {
            b'"' => {
                let value = match owned {
                    Some(v) => Cow::Owned(v),
                    None => Cow::Borrowed(&line[start..i]),
                };
                return Some((value, i + 1));
            }
            b'\\' => {
                let escaped = *line.get(i + 1)?;
                owned
                    .get_or_insert_with(|| line[start..i].to_vec())
                    .push(escaped);
                i += 2;
            }
            _ => {
                if let Some(v) = owned.as_mut() {
                    v.push(c);
                }
                i += 1;
            }
        }
    }
    None
}

/// The index of the next comma at or after `i` that is not inside a quoted-string, or the end.
fn skip_element(line: &[u8], mut i: usize) -> usize {
    let mut quoted = false;
    while i < line.len() {
        match line[i] {
            b',' if !quoted => return i,
            b'"' => quoted = !quoted,
            b'\\' if quoted => i += 1,
            _ => {}
        }
        i += 1;
    }
    line.len()
}

/// The index past the run of tchar starting at `i` (RFC 9110 section 5.6.2).
fn token_end(line: &[u8], mut i: usize) -> usize {
    while i < line.len() && is_tchar(line[i]) {
        i += 1;
    }
    i
}

/// The index past the run of OWS starting at `i`.
fn skip_ows(line: &[u8], mut i: usize) -> usize {
    while i < line.len() && is_ows(line[i]) {
        i += 1;
    }
    i
}

/// `line` without leading and trailing OWS.
fn trim_ows(line: &[u8]) -> &[u8] {
    let start = skip_ows(line, 0);
    let end = line
        .iter()
        .rposition(|&c| !is_ows(c))
        .map_or(start, |p| p + 1);
    line.get(start..end).unwrap_or_default()
}

/// RFC 9110 section 5.6.3: `OWS = *( SP / HTAB )`.
fn is_ows(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// RFC 9110 section 5.6.2: a tchar is a DIGIT, an ALPHA, or one of ``!#$%&'*+-.^_`|~``.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// Section 1.2.2: "delta-seconds = 1*DIGIT". "If a cache receives a delta-seconds value greater
/// than the greatest integer it can represent, or if any of its subsequent calculations
/// overflows, the cache MUST consider the value to be 2147483648 (2^31) or the greatest positive
/// integer it can conveniently represent." Values beyond 2^31 (and beyond `u64`) become 2^31.
fn delta_seconds(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut value: u64 = 0;
    for &d in digits {
        value = value * 10 + u64::from(d - b'0');
        if value > MAX_DELTA_SECONDS {
            return Some(MAX_DELTA_SECONDS);
        }
    }
    Some(value)
}

/// The delta-seconds in `arg`, in either argument form; `None` when absent or invalid.
fn arg_delta(arg: &Arg<'_>) -> Option<u64> {
    match arg {
        Arg::Value(v) => delta_seconds(v),
        Arg::Absent | Arg::Malformed => None,
    }
}

/// Section 4.2.1 for `max-age` and `s-maxage`: "When there is more than one value present for a
/// given directive (e.g., two Expires header field lines or multiple Cache-Control: max-age
/// directives), either the first occurrence should be used or the response should be considered
/// stale. If directives conflict (e.g., both max-age and no-cache are present), the most
/// restrictive directive should be honored. Caches are encouraged to consider responses that
/// have invalid freshness information (e.g., a max-age directive with non-integer content) to be
/// stale." We choose stale: an invalid value is 0, and differing values become 0. Identical
/// duplicates keep their value. The merge is order-independent.
fn merge_freshness(slot: &mut Option<u64>, arg: &Arg<'_>) {
    let value = arg_delta(arg).unwrap_or(0);
    *slot = Some(match *slot {
        Some(old) if old != value => 0,
        _ => value,
    });
}

/// Keeps the smaller of two values (the stricter reading of a repeated allowance).
fn merge_min(slot: &mut Option<u64>, value: u64) {
    *slot = Some(slot.map_or(value, |old| old.min(value)));
}

/// The field list named by a `no-cache` or `private` argument.
///
/// Section 5.2.2.4: "If the no-cache response directive specifies one or more field names, then a
/// cache MAY use the response to satisfy a subsequent request, subject to any other restrictions
/// on caching. However, any header fields in the response that have the field name(s) listed MUST
/// NOT be sent in the response to a subsequent request without successful revalidation with the
/// origin server." (section 5.2.2.7 qualifies `private` the same way). The quoted-string form is
/// the one to generate, the token form is accepted too (section 5.2). Without an argument, or
/// with one that cannot be read or names no valid field, the directive covers the whole response:
/// the restrictive reading, and how the section's own note says caches often treat even a
/// well-formed qualified `no-cache`.
fn arg_field_list(arg: &Arg<'_>) -> FieldList {
    match arg {
        Arg::Value(v) => field_names(v),
        Arg::Absent | Arg::Malformed => FieldList::All,
    }
}

/// `FieldList::Fields` of the valid field names in a comma-separated list (in list order, not yet
/// deduplicated: see [`normalize`]), or `FieldList::All` when none is valid.
fn field_names(list: &[u8]) -> FieldList {
    let names: Vec<HeaderName> = list
        .split(|&c| c == b',')
        .map(trim_ows)
        .filter(|name| !name.is_empty())
        // HeaderName::from_bytes lowercases; names it rejects are skipped.
        .filter_map(|name| HeaderName::from_bytes(name).ok())
        .collect();
    if names.is_empty() {
        FieldList::All
    } else {
        FieldList::Fields(names)
    }
}

/// Sorts and deduplicates the field names of `no-cache` and `private`, so that the result does not
/// depend on the order of lines or list elements. Done once per field rather than per occurrence,
/// so that a field repeating a qualified directive many times costs one sort.
fn normalize(out: &mut ResponseDirectives) {
    for list in [&mut out.no_cache, &mut out.private] {
        if let FieldList::Fields(names) = list {
            names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
            names.dedup();
        }
    }
}

/// Combines two occurrences of `no-cache` or `private`: unqualified anywhere wins (it covers
/// everything); qualified ones are united.
fn merge_field_list(slot: &mut FieldList, new: FieldList) {
    *slot = match (std::mem::take(slot), new) {
        (FieldList::All, _) | (_, FieldList::All) => FieldList::All,
        (FieldList::Absent, other) | (other, FieldList::Absent) => other,
        (FieldList::Fields(mut old), FieldList::Fields(new)) => {
            old.extend(new);
            FieldList::Fields(old)
        }
    };
}

/// Applies one response directive (section 5.2.2, RFC 5861, RFC 8246).
fn apply_response(out: &mut ResponseDirectives, name: &[u8], arg: &Arg<'_>) {
    // Boolean directives take no argument; one that carries one anyway (`no-store=1`) is still
    // honoured, since its name is all that defines it.
    match name {
        b"max-age" => merge_freshness(&mut out.max_age, arg),
        b"s-maxage" => merge_freshness(&mut out.s_maxage, arg),
        b"no-cache" => merge_field_list(&mut out.no_cache, arg_field_list(arg)),
        b"private" => merge_field_list(&mut out.private, arg_field_list(arg)),
        b"no-store" => out.no_store = true,
        b"public" => out.public = true,
        b"must-revalidate" => out.must_revalidate = true,
        b"proxy-revalidate" => out.proxy_revalidate = true,
        b"must-understand" => out.must_understand = true,
        b"no-transform" => out.no_transform = true,
        b"immutable" => out.immutable = true,
        // RFC 5861 sections 3 and 4: `stale-while-revalidate=<delta-seconds>`,
        // `stale-if-error=<delta-seconds>`. An invalid value grants nothing; repeated values
        // grant the smaller allowance.
        b"stale-while-revalidate" => {
            if let Some(n) = arg_delta(arg) {
                merge_min(&mut out.stale_while_revalidate, n);
            }
        }
        b"stale-if-error" => {
            if let Some(n) = arg_delta(arg) {
                merge_min(&mut out.stale_if_error, n);
            }
        }
        // Section 5.2.3: "A cache MUST ignore unrecognized cache directives."
        _ => {}
    }
}

/// Applies one request directive (section 5.2.1). Repeated directives keep the most restrictive
/// value: the smallest `max-age`, `max-stale` and `stale-if-error`, the largest `min-fresh`.
fn apply_request(out: &mut RequestDirectives, name: &[u8], arg: Arg<'_>) {
    match name {
        // Section 5.2.1.1: `max-age=delta-seconds`; an invalid value is read as 0, which asks
        // for a response that is not stale at all (the most restrictive reading).
        b"max-age" => merge_min(&mut out.max_age, arg_delta(&arg).unwrap_or(0)),
        // Section 5.2.1.2: "If no value is assigned to max-stale, then the client will accept a
        // stale response of any age." An invalid value is ignored.
        b"max-stale" => {
            let new = match arg {
                Arg::Absent => MaxStale::Any,
                Arg::Value(v) => match delta_seconds(&v) {
                    Some(n) => MaxStale::Seconds(n),
                    None => return,
                },
                Arg::Malformed => return,
            };
            out.max_stale = Some(match (out.max_stale, new) {
                (Some(MaxStale::Seconds(a)), MaxStale::Seconds(b)) => MaxStale::Seconds(a.min(b)),
                (Some(MaxStale::Seconds(a)), MaxStale::Any)
                | (None | Some(MaxStale::Any), MaxStale::Seconds(a)) => MaxStale::Seconds(a),
                (None | Some(MaxStale::Any), MaxStale::Any) => MaxStale::Any,
            });
        }
        // Section 5.2.1.3: `min-fresh=delta-seconds`; an invalid value is ignored.
        b"min-fresh" => {
            if let Some(n) = arg_delta(&arg) {
                out.min_fresh = Some(out.min_fresh.map_or(n, |old| old.max(n)));
            }
        }
        // Sections 5.2.1.4, 5.2.1.5, 5.2.1.7: no arguments defined; one given anyway is ignored.
        b"no-cache" => out.no_cache = true,
        b"no-store" => out.no_store = true,
        b"only-if-cached" => out.only_if_cached = true,
        // RFC 5861 section 4: "When used as a request Cache-Control extension, its scope of
        // application is the request it appears in."
        b"stale-if-error" => {
            if let Some(n) = arg_delta(&arg) {
                merge_min(&mut out.stale_if_error, n);
            }
        }
        // Section 5.2.3: "A cache MUST ignore unrecognized cache directives."
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 8941 Structured Field dictionaries, for targeted fields (RFC 9213).
// ---------------------------------------------------------------------------------------------

/// A bare item (RFC 8941 section 3.3). Only what the targeted directives use keeps its value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SfItem {
    /// Section 3.3.1: at most 15 digits, so it always fits.
    Integer(i64),
    /// Section 3.3.2.
    Decimal,
    /// Section 3.3.3, unescaped (printable ASCII only).
    String(Vec<u8>),
    /// Section 3.3.4.
    Token,
    /// Section 3.3.5: validated, not decoded.
    ByteSequence,
    /// Section 3.3.6.
    Boolean(bool),
}

/// A dictionary member value (RFC 8941 section 3.2). Parameters are parsed and dropped: RFC 9213
/// section 2.1, "Parameters received on cache directives are to be ignored, unless other handling
/// is explicitly specified."
#[derive(Debug, Clone, PartialEq, Eq)]
enum SfMember {
    /// An item.
    Item(SfItem),
    /// An inner list (section 3.1.1). It is parsed so that its syntax is checked, but no cache
    /// directive takes a list, so its contents are not kept and the member is ignored.
    InnerList,
}

/// A parser over one combined field value, following the algorithms of RFC 8941 section 4.2.
/// Each method returns `None` on a parse error ("fail parsing"). Nothing recurses beyond one
/// inner-list level, so hostile input cannot exhaust the stack.
struct SfParser<'a> {
    /// The whole field value.
    input: &'a [u8],
    /// The next unread byte.
    pos: usize,
}

impl<'a> SfParser<'a> {
    /// A parser at the start of `input`.
    fn new(input: &'a [u8]) -> Self {
        Self { input, pos: 0 }
    }

    /// The next byte, unread.
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    /// Consumes `c` if it is next.
    fn eat(&mut self, c: u8) -> bool {
        let next = self.peek() == Some(c);
        if next {
            self.pos += 1;
        }
        next
    }

    /// Whether the whole input has been consumed.
    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    /// Discards leading SP characters.
    fn skip_sp(&mut self) {
        while self.eat(b' ') {}
    }

    /// Discards leading OWS (SP / HTAB).
    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// Section 4.2, with section 4.2.2 "Parsing a Dictionary": the whole input must be one
    /// dictionary. `visit` sees every member in order; a later member with the same key replaces
    /// an earlier one ("overwrite its value"), so visitors must set rather than accumulate.
    fn dictionary(mut self, mut visit: impl FnMut(&'a [u8], SfMember)) -> Option<()> {
        self.skip_sp();
        while !self.at_end() {
            let key = self.key()?;
            let member = if self.eat(b'=') {
                self.item_or_inner_list()?
            } else {
                self.parameters()?;
                SfMember::Item(SfItem::Boolean(true))
            };
            visit(key, member);
            self.skip_ows();
            if self.at_end() {
                return Some(());
            }
            if !self.eat(b',') {
                return None;
            }
            self.skip_ows();
            if self.at_end() {
                // "If input_string is empty, there is a trailing comma; fail parsing."
                return None;
            }
        }
        Some(())
    }

    /// Section 4.2.1.1: an item, or an inner list when it starts with `(`.
    fn item_or_inner_list(&mut self) -> Option<SfMember> {
        if self.peek() == Some(b'(') {
            self.inner_list()?;
            Some(SfMember::InnerList)
        } else {
            let item = self.bare_item()?;
            self.parameters()?;
            Some(SfMember::Item(item))
        }
    }

    /// Section 4.2.1.2 "Parsing an Inner List".
    fn inner_list(&mut self) -> Option<()> {
        self.pos += 1; // "("
        loop {
            self.skip_sp();
            if self.eat(b')') {
                return self.parameters();
            }
            self.bare_item()?;
            self.parameters()?;
            // "If input_string does not start with SP or ")", fail parsing." An unterminated
            // list runs out of input here.
            if !matches!(self.peek()?, b' ' | b')') {
                return None;
            }
        }
    }

    /// Section 4.2.3.2 "Parsing Parameters", values dropped.
    fn parameters(&mut self) -> Option<()> {
        while self.eat(b';') {
            self.skip_sp();
            self.key()?;
            if self.eat(b'=') {
                self.bare_item()?;
            }
        }
        Some(())
    }

    /// Section 4.2.3.3 "Parsing a Key": `key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-"
    /// / "." / "*" )`. Uppercase is not allowed anywhere in a key.
    fn key(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        if !matches!(self.peek()?, b'a'..=b'z' | b'*') {
            return None;
        }
        self.pos += 1;
        while matches!(
            self.peek(),
            Some(b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*')
        ) {
            self.pos += 1;
        }
        self.input.get(start..self.pos)
    }

    /// Section 4.2.3.1 "Parsing a Bare Item". RFC 9651's Date and Display String types are not
    /// recognized: a field using them fails to parse and the cache falls back to Cache-Control.
    fn bare_item(&mut self) -> Option<SfItem> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => self.string(),
            b'*' | b'A'..=b'Z' | b'a'..=b'z' => Some(self.token()),
            b':' => self.byte_sequence(),
            b'?' => self.boolean(),
            _ => None,
        }
    }

    /// Section 4.2.4 "Parsing an Integer or Decimal".
    fn number(&mut self) -> Option<SfItem> {
        let negative = self.eat(b'-');
        if !self.peek()?.is_ascii_digit() {
            return None;
        }
        let start = self.pos;
        let mut dot: Option<usize> = None;
        while let Some(c) = self.peek() {
            if c.is_ascii_digit() {
                self.pos += 1;
            } else if dot.is_none() && c == b'.' {
                // "If the number of characters in input_number is greater than 12, fail parsing."
                if self.pos - start > 12 {
                    return None;
                }
                dot = Some(self.pos);
                self.pos += 1;
            } else {
                break;
            }
            let len = self.pos - start;
            if (dot.is_none() && len > 15) || (dot.is_some() && len > 16) {
                return None;
            }
        }
        match dot {
            None => {
                let magnitude = self.input[start..self.pos]
                    .iter()
                    .fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'));
                Some(SfItem::Integer(if negative {
                    -magnitude
                } else {
                    magnitude
                }))
            }
            // A trailing "." fails, and so do more than three digits after it.
            Some(dot) => (1..=3)
                .contains(&(self.pos - dot - 1))
                .then_some(SfItem::Decimal),
        }
    }

    /// Section 4.2.5 "Parsing a String": printable ASCII, with `\"` and `\\` as the only escapes.
    fn string(&mut self) -> Option<SfItem> {
        self.pos += 1; // DQUOTE
        let mut out = Vec::new();
        loop {
            let c = self.peek()?;
            self.pos += 1;
            match c {
                b'\\' => {
                    let escaped = self.peek()?;
                    if escaped != b'"' && escaped != b'\\' {
                        return None;
                    }
                    self.pos += 1;
                    out.push(escaped);
                }
                b'"' => return Some(SfItem::String(out)),
                0x20..=0x7e => out.push(c),
                _ => return None,
            }
        }
    }

    /// Section 4.2.6 "Parsing a Token": the first byte was checked by the caller.
    fn token(&mut self) -> SfItem {
        self.pos += 1;
        while matches!(self.peek(), Some(c) if is_tchar(c) || c == b':' || c == b'/') {
            self.pos += 1;
        }
        SfItem::Token
    }

    /// Section 4.2.7 "Parsing a Byte Sequence": checks the base64 alphabet and the closing colon;
    /// the bytes are not needed.
    fn byte_sequence(&mut self) -> Option<SfItem> {
        self.pos += 1; // ":"
        loop {
            let c = self.peek()?;
            self.pos += 1;
            match c {
                b':' => return Some(SfItem::ByteSequence),
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' | b'=' => {}
                _ => return None,
            }
        }
    }

    /// Section 4.2.8 "Parsing a Boolean": `?0` or `?1`.
    fn boolean(&mut self) -> Option<SfItem> {
        self.pos += 1; // "?"
        let value = match self.peek()? {
            b'1' => true,
            b'0' => false,
            _ => return None,
        };
        self.pos += 1;
        Some(SfItem::Boolean(value))
    }
}

/// RFC 9213 section 2.1: a non-negative Integer is a delta-seconds (capped at 2^31 like section
/// 1.2.2 of RFC 9111). Anything else violates the inferred constraints and "SHOULD NOT" be
/// consumed, so it reads as absent.
fn sf_delta(member: &SfMember) -> Option<u64> {
    match member {
        SfMember::Item(SfItem::Integer(n)) => {
            u64::try_from(*n).ok().map(|n| n.min(MAX_DELTA_SECONDS))
        }
        _ => None,
    }
}

/// RFC 9213 section 2.1: "no-store ... always has a Boolean true value". `?0`, and any other type,
/// reads as absent.
fn sf_flag(member: &SfMember) -> bool {
    *member == SfMember::Item(SfItem::Boolean(true))
}

/// RFC 9213 section 2.1: "no-cache ... has a value that can be either Boolean true or a string
/// containing a comma-delimited list of field names." Anything else (`?0`, a token, a number)
/// reads as absent.
fn sf_field_list(member: &SfMember) -> FieldList {
    match member {
        SfMember::Item(SfItem::Boolean(true)) => FieldList::All,
        SfMember::Item(SfItem::String(list)) => field_names(list),
        _ => FieldList::Absent,
    }
}

/// Applies one targeted-field dictionary member. Every arm sets its field outright, which gives
/// the dictionary's last-member-wins semantics (RFC 8941 section 4.2.2), including a last member
/// whose value is invalid and so unsets the directive.
fn apply_targeted(out: &mut ResponseDirectives, key: &[u8], member: &SfMember) {
    match key {
        b"max-age" => out.max_age = sf_delta(member),
        b"s-maxage" => out.s_maxage = sf_delta(member),
        b"stale-while-revalidate" => out.stale_while_revalidate = sf_delta(member),
        b"stale-if-error" => out.stale_if_error = sf_delta(member),
        b"no-cache" => out.no_cache = sf_field_list(member),
        b"private" => out.private = sf_field_list(member),
        b"no-store" => out.no_store = sf_flag(member),
        b"public" => out.public = sf_flag(member),
        b"must-revalidate" => out.must_revalidate = sf_flag(member),
        b"proxy-revalidate" => out.proxy_revalidate = sf_flag(member),
        b"must-understand" => out.must_understand = sf_flag(member),
        b"no-transform" => out.no_transform = sf_flag(member),
        b"immutable" => out.immutable = sf_flag(member),
        // RFC 9213 section 2.2: "unrecognized extension directives are ignored."
        _ => {}
    }
}

#[cfg(test)]
#[path = "directives_tests.rs"]
mod tests;

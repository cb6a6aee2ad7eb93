use std::ops::Range;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use proptest::prelude::*;

use super::{MAX_RANGES, RangeAnswer, partial, select};

/// 2023-11-14T22:13:20Z.
const T0: u64 = 1_700_000_000;

fn date(secs: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
}

fn headers(fields: &[(HeaderName, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in fields {
        map.append(name.clone(), HeaderValue::from_str(value).unwrap());
    }
    map
}

/// A stored response with a strong ETag, and a Last-Modified one hour before its Date.
fn stored() -> HeaderMap {
    headers(&[
        (header::ETAG, "\"v1\""),
        (header::LAST_MODIFIED, &date(T0)),
        (header::DATE, &date(T0 + 3600)),
        (header::CONTENT_TYPE, "text/plain"),
    ])
}

fn range(value: &str) -> HeaderMap {
    headers(&[(header::RANGE, value)])
}

fn get(value: &str, len: u64) -> RangeAnswer {
    select(&Method::GET, &range(value), &stored(), len)
}

fn body(len: usize) -> Bytes {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Splits a multipart/byteranges body into (part headers, part data), checking the framing of
/// RFC 2046 section 5.1.1 as written by `partial`: the CRLF before each boundary belongs to the
/// delimiter, and the body ends with the close delimiter.
fn parse_multipart(boundary: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let open = format!("--{boundary}\r\n");
    let delimiter = format!("\r\n--{boundary}\r\n");
    let close = format!("\r\n--{boundary}--\r\n");
    let mut rest = body
        .strip_prefix(open.as_bytes())
        .expect("starts with a dash-boundary")
        .strip_suffix(close.as_bytes())
        .expect("ends with the close delimiter");
    let mut parts = Vec::new();
    loop {
        let head_end = find(rest, b"\r\n\r\n").expect("part headers end");
        let head = String::from_utf8(rest[..head_end].to_vec()).unwrap();
        let data = &rest[head_end + 4..];
        match find(data, delimiter.as_bytes()) {
            Some(at) => {
                parts.push((head, data[..at].to_vec()));
                rest = &data[at + delimiter.len()..];
            }
            None => {
                parts.push((head, data.to_vec()));
                return parts;
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn boundary_of(headers: &HeaderMap) -> String {
    let content_type = headers[header::CONTENT_TYPE].to_str().unwrap();
    content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .expect("multipart content type")
        .to_owned()
}

#[test]
fn rfc9110_14_2_no_range_is_full() {
    assert_eq!(
        select(&Method::GET, &HeaderMap::new(), &stored(), 100),
        RangeAnswer::Full
    );
}

#[test]
fn rfc9110_14_2_only_get_has_ranges() {
    for method in [Method::HEAD, Method::POST, Method::PUT] {
        assert_eq!(
            select(&method, &range("bytes=0-9"), &stored(), 100),
            RangeAnswer::Full
        );
    }
}

#[test]
fn rfc9110_14_1_1_int_range() {
    assert_eq!(get("bytes=0-9", 100), RangeAnswer::Single(0..10));
    assert_eq!(get("bytes=10-10", 100), RangeAnswer::Single(10..11));
    assert_eq!(get("bytes=99-99", 100), RangeAnswer::Single(99..100));
}

#[test]
fn rfc9110_14_1_1_open_ended_range() {
    assert_eq!(get("bytes=90-", 100), RangeAnswer::Single(90..100));
    assert_eq!(get("bytes=0-", 100), RangeAnswer::Single(0..100));
}

#[test]
fn rfc9110_14_1_1_last_pos_clamped() {
    assert_eq!(get("bytes=90-1000", 100), RangeAnswer::Single(90..100));
    assert_eq!(
        get("bytes=5-99999999999999999999999999", 100),
        RangeAnswer::Single(5..100)
    );
}

#[test]
fn rfc9110_14_1_2_suffix_range() {
    assert_eq!(get("bytes=-10", 100), RangeAnswer::Single(90..100));
    assert_eq!(get("bytes=-100", 100), RangeAnswer::Single(0..100));
}

#[test]
fn rfc9110_14_1_2_suffix_longer_than_representation_is_whole() {
    assert_eq!(get("bytes=-500", 100), RangeAnswer::Single(0..100));
    assert_eq!(
        get("bytes=-99999999999999999999999999", 100),
        RangeAnswer::Single(0..100)
    );
}

#[test]
fn rfc9110_14_1_1_suffix_zero_unsatisfiable() {
    assert_eq!(get("bytes=-0", 100), RangeAnswer::Unsatisfiable);
}

#[test]
fn rfc9110_14_1_1_first_pos_past_end_unsatisfiable() {
    assert_eq!(get("bytes=100-", 100), RangeAnswer::Unsatisfiable);
    assert_eq!(get("bytes=100-200, 300-", 100), RangeAnswer::Unsatisfiable);
    assert_eq!(
        get("bytes=99999999999999999999999999-", 100),
        RangeAnswer::Unsatisfiable
    );
}

#[test]
fn rfc9110_14_1_1_unsatisfiable_ranges_dropped() {
    assert_eq!(
        get("bytes=200-300, 0-4, -0", 100),
        RangeAnswer::Single(0..5)
    );
}

#[test]
fn rfc9110_14_1_1_zero_length_representation() {
    assert_eq!(get("bytes=0-", 0), RangeAnswer::Unsatisfiable);
    assert_eq!(get("bytes=0-0", 0), RangeAnswer::Unsatisfiable);
    assert_eq!(get("bytes=-0", 0), RangeAnswer::Unsatisfiable);
    // "the only satisfiable form of range-spec is a suffix-range with a non-zero suffix-length",
    // which selects nothing: the empty 200.
    assert_eq!(get("bytes=-5", 0), RangeAnswer::Full);
}

#[test]
fn rfc9110_14_1_1_last_before_first_invalidates_header() {
    assert_eq!(get("bytes=5-4", 100), RangeAnswer::Full);
    assert_eq!(get("bytes=0-1, 5-4", 100), RangeAnswer::Full);
}

#[test]
fn rfc9110_14_1_range_unit_case_insensitive() {
    assert_eq!(get("BYTES=0-0", 100), RangeAnswer::Single(0..1));
    assert_eq!(get("Bytes=0-0", 100), RangeAnswer::Single(0..1));
}

#[test]
fn rfc9110_14_1_other_units_ignored() {
    assert_eq!(get("items=0-5", 100), RangeAnswer::Full);
    assert_eq!(get("bytes", 100), RangeAnswer::Full);
    assert_eq!(get("bytesx=0-5", 100), RangeAnswer::Full);
}

#[test]
fn rfc9110_14_1_1_malformed_ignored() {
    for value in [
        "bytes=",
        "bytes=,",
        "bytes=-",
        "bytes=a-b",
        "bytes=0-1-2",
        "bytes=+1-2",
        "bytes=1 - 2",
        "bytes=0x1-2",
        "bytes=--1",
        "bytes=1",
    ] {
        assert_eq!(get(value, 100), RangeAnswer::Full, "{value}");
    }
}

#[test]
fn rfc9110_5_6_1_2_empty_list_elements_and_whitespace() {
    assert_eq!(
        get("bytes= 0-1 ,, \t5-6,", 100),
        RangeAnswer::Multiple(vec![0..2, 5..7])
    );
}

#[test]
fn rfc9110_14_2_range_on_two_lines_ignored() {
    let request = headers(&[(header::RANGE, "bytes=0-1"), (header::RANGE, "bytes=5-6")]);
    assert_eq!(
        select(&Method::GET, &request, &stored(), 100),
        RangeAnswer::Full
    );
}

#[test]
fn rfc9110_14_2_too_many_ranges_full() {
    let at_limit: Vec<String> = (0..MAX_RANGES)
        .map(|i| format!("{}-{}", i * 3, i * 3))
        .collect();
    let answer = get(&format!("bytes={}", at_limit.join(",")), 1000);
    assert!(matches!(answer, RangeAnswer::Multiple(ref r) if r.len() == MAX_RANGES));
    let over: Vec<String> = (0..=MAX_RANGES)
        .map(|i| format!("{}-{}", i * 3, i * 3))
        .collect();
    assert_eq!(
        get(&format!("bytes={}", over.join(",")), 1000),
        RangeAnswer::Full
    );
}

#[test]
fn rfc9110_14_2_overlapping_ranges_merged_and_sorted() {
    assert_eq!(
        get("bytes=50-59, 0-9, 5-14, 55-", 100),
        RangeAnswer::Multiple(vec![0..15, 50..100])
    );
}

#[test]
fn rfc9110_14_2_adjacent_ranges_merged() {
    assert_eq!(get("bytes=0-9, 10-19", 100), RangeAnswer::Single(0..20));
    assert_eq!(get("bytes=-10, 80-89", 100), RangeAnswer::Single(80..100));
    assert_eq!(
        get("bytes=0-9, 11-19", 100),
        RangeAnswer::Multiple(vec![0..10, 11..20])
    );
}

fn with_if_range(value: &str, if_range: &str) -> HeaderMap {
    headers(&[(header::RANGE, value), (header::IF_RANGE, if_range)])
}

#[test]
fn rfc9110_13_1_5_if_range_strong_etag_matches() {
    let request = with_if_range("bytes=0-9", "\"v1\"");
    assert_eq!(
        select(&Method::GET, &request, &stored(), 100),
        RangeAnswer::Single(0..10)
    );
}

#[test]
fn rfc9110_13_1_5_if_range_etag_mismatch_full() {
    for if_range in ["\"v2\"", "W/\"v1\"", "\"v1\", \"v2\"", "\"v1"] {
        let request = with_if_range("bytes=0-9", if_range);
        assert_eq!(
            select(&Method::GET, &request, &stored(), 100),
            RangeAnswer::Full,
            "{if_range}"
        );
    }
}

#[test]
fn rfc9110_13_1_5_if_range_weak_stored_etag_never_matches() {
    let mut weak = stored();
    weak.insert(header::ETAG, HeaderValue::from_static("W/\"v1\""));
    for if_range in ["\"v1\"", "W/\"v1\""] {
        let request = with_if_range("bytes=0-9", if_range);
        assert_eq!(
            select(&Method::GET, &request, &weak, 100),
            RangeAnswer::Full
        );
    }
}

#[test]
fn rfc9110_13_1_5_if_range_date_exact_match() {
    let request = with_if_range("bytes=0-9", &date(T0));
    assert_eq!(
        select(&Method::GET, &request, &stored(), 100),
        RangeAnswer::Single(0..10)
    );
    for other in [T0 - 1, T0 + 1] {
        let request = with_if_range("bytes=0-9", &date(other));
        assert_eq!(
            select(&Method::GET, &request, &stored(), 100),
            RangeAnswer::Full
        );
    }
}

#[test]
fn rfc9110_8_8_2_2_if_range_date_needs_strong_last_modified() {
    let request = with_if_range("bytes=0-9", &date(T0));
    // Date less than one second after Last-Modified: the validator is weak.
    let mut same_second = stored();
    same_second.insert(header::DATE, HeaderValue::from_str(&date(T0)).unwrap());
    assert_eq!(
        select(&Method::GET, &request, &same_second, 100),
        RangeAnswer::Full
    );
    // No Date at all: weak too.
    let mut no_date = stored();
    no_date.remove(header::DATE);
    assert_eq!(
        select(&Method::GET, &request, &no_date, 100),
        RangeAnswer::Full
    );
    // Exactly one second later: strong.
    let mut one_second = stored();
    one_second.insert(header::DATE, HeaderValue::from_str(&date(T0 + 1)).unwrap());
    assert_eq!(
        select(&Method::GET, &request, &one_second, 100),
        RangeAnswer::Single(0..10)
    );
}

#[test]
fn rfc9110_13_1_5_if_range_invalid_full() {
    for if_range in ["garbage", "", "0"] {
        let request = with_if_range("bytes=0-9", if_range);
        assert_eq!(
            select(&Method::GET, &request, &stored(), 100),
            RangeAnswer::Full,
            "{if_range}"
        );
    }
    let mut no_lm = stored();
    no_lm.remove(header::LAST_MODIFIED);
    let request = with_if_range("bytes=0-9", &date(T0));
    assert_eq!(
        select(&Method::GET, &request, &no_lm, 100),
        RangeAnswer::Full
    );
}

#[test]
fn rfc9110_15_3_7_1_single_part() {
    let body = body(100);
    let answer = partial(&RangeAnswer::Single(10..20), &stored(), &body).unwrap();
    assert_eq!(answer.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(answer.headers[header::CONTENT_RANGE], "bytes 10-19/100");
    assert_eq!(answer.headers[header::CONTENT_LENGTH], "10");
    assert!(!answer.headers.contains_key(header::CONTENT_TYPE));
    assert_eq!(answer.body, body.slice(10..20));
}

#[test]
fn rfc9110_15_5_17_unsatisfiable() {
    let answer = partial(&RangeAnswer::Unsatisfiable, &stored(), &body(100)).unwrap();
    assert_eq!(answer.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(answer.headers[header::CONTENT_RANGE], "bytes */100");
    assert_eq!(answer.headers[header::CONTENT_LENGTH], "0");
    assert!(answer.body.is_empty());
}

#[test]
fn rfc9110_14_2_full_has_no_partial() {
    assert!(partial(&RangeAnswer::Full, &stored(), &body(10)).is_none());
}

#[test]
fn rfc9110_14_2_inconsistent_answers_give_none() {
    let body = body(10);
    for answer in [
        RangeAnswer::Single(5..11),
        RangeAnswer::Single(5..5),
        #[allow(
            clippy::reversed_empty_ranges,
            reason = "an inconsistent answer on purpose"
        )]
        RangeAnswer::Single(6..5),
        RangeAnswer::Single(u64::MAX - 1..u64::MAX),
        RangeAnswer::Multiple(vec![]),
        RangeAnswer::Multiple(vec![0..2, 8..12]),
    ] {
        assert!(partial(&answer, &stored(), &body).is_none(), "{answer:?}");
    }
}

#[test]
#[allow(
    clippy::single_range_in_vec_init,
    reason = "a Multiple answer of one range, on purpose"
)]
fn rfc9110_14_6_multipart_of_one_range_is_single() {
    let answer = partial(&RangeAnswer::Multiple(vec![2..4]), &stored(), &body(10)).unwrap();
    assert_eq!(answer.headers[header::CONTENT_RANGE], "bytes 2-3/10");
    assert_eq!(answer.body, body(10).slice(2..4));
}

#[test]
fn rfc9110_14_6_multipart_byteranges() {
    let body = Bytes::from_static(b"0123456789abcdefghij");
    let answer = partial(&RangeAnswer::Multiple(vec![0..3, 10..12]), &stored(), &body).unwrap();
    assert_eq!(answer.status, StatusCode::PARTIAL_CONTENT);
    assert!(!answer.headers.contains_key(header::CONTENT_RANGE));
    assert_eq!(
        answer.headers[header::CONTENT_LENGTH],
        answer.body.len().to_string().as_str()
    );
    let boundary = boundary_of(&answer.headers);
    let expected = format!(
        "--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-2/20\r\n\r\n012\
         \r\n--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 10-11/20\r\n\r\nab\
         \r\n--{boundary}--\r\n"
    );
    assert_eq!(answer.body, expected.as_bytes());
}

#[test]
fn rfc9110_14_6_multipart_without_content_type() {
    let body = Bytes::from_static(b"0123456789");
    let answer = partial(
        &RangeAnswer::Multiple(vec![0..1, 5..6]),
        &HeaderMap::new(),
        &body,
    )
    .unwrap();
    let boundary = boundary_of(&answer.headers);
    let parts = parse_multipart(&boundary, &answer.body);
    assert_eq!(
        parts,
        vec![
            ("Content-Range: bytes 0-0/10".to_owned(), b"0".to_vec()),
            ("Content-Range: bytes 5-5/10".to_owned(), b"5".to_vec()),
        ]
    );
}

#[test]
fn rfc2046_5_1_1_boundary_not_in_body() {
    // A body that contains the boundary prefix and many hex tails still gets a fresh boundary.
    let mut content = Vec::new();
    for i in 0..64u64 {
        content.extend_from_slice(format!("--{}{i:016x}\r\n", super::BOUNDARY_PREFIX).as_bytes());
    }
    let body = Bytes::from(content);
    let len = body.len() as u64;
    let answer = partial(
        &RangeAnswer::Multiple(vec![0..10, 20..len]),
        &stored(),
        &body,
    )
    .unwrap();
    let boundary = boundary_of(&answer.headers);
    assert!(
        !body
            .windows(boundary.len())
            .any(|w| w == boundary.as_bytes())
    );
    let parts = parse_multipart(&boundary, &answer.body);
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[1].1, body[20..].to_vec());
}

#[test]
fn rfc2046_5_1_1_boundary_syntax() {
    let answer = partial(
        &RangeAnswer::Multiple(vec![0..1, 2..3]),
        &stored(),
        &body(4),
    )
    .unwrap();
    let boundary = boundary_of(&answer.headers);
    // `bchars` without the space, at most 70 characters: no quoting needed.
    assert!(boundary.len() <= 70);
    assert!(
        boundary
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"'()+_,-./:=?".contains(&b))
    );
}

fn arbitrary_field() -> impl Strategy<Value = Option<HeaderValue>> {
    prop_oneof![
        Just(None),
        proptest::collection::vec(any::<u8>(), 0..48)
            .prop_map(|bytes| HeaderValue::from_bytes(&bytes).ok()),
        "(?i:bytes)=[0-9 ,-]{0,30}".prop_map(|s| HeaderValue::from_str(&s).ok()),
        "(W/)?\"v[0-9]\"".prop_map(|s| HeaderValue::from_str(&s).ok()),
        (0u64..4_000_000_000).prop_map(|secs| HeaderValue::from_str(&date(secs)).ok()),
    ]
}

proptest! {
    #[test]
    fn select_never_panics(
        range in arbitrary_field(),
        if_range in arbitrary_field(),
        etag in arbitrary_field(),
        last_modified in arbitrary_field(),
        sent in arbitrary_field(),
        len in prop_oneof![Just(0u64), 0u64..1000, Just(u64::MAX), any::<u64>()],
    ) {
        let fill = |fields: [(HeaderName, Option<HeaderValue>); 3]| {
            let mut map = HeaderMap::new();
            for (name, value) in fields {
                if let Some(value) = value {
                    map.insert(name, value);
                }
            }
            map
        };
        let request = fill([(header::RANGE, range), (header::IF_RANGE, if_range), (header::ACCEPT, None)]);
        let stored = fill([
            (header::ETAG, etag),
            (header::LAST_MODIFIED, last_modified),
            (header::DATE, sent),
        ]);
        let answer = select(&Method::GET, &request, &stored, len);
        match &answer {
            RangeAnswer::Single(r) => prop_assert!(r.start < r.end && r.end <= len),
            RangeAnswer::Multiple(rs) => {
                prop_assert!(rs.len() >= 2 && rs.len() <= MAX_RANGES);
                prop_assert!(rs.iter().all(|r| r.start < r.end && r.end <= len));
            }
            RangeAnswer::Full | RangeAnswer::Unsatisfiable => {}
        }
        // Never panics either, whatever the body.
        let _ = partial(&answer, &stored, &body((len % 64) as usize));
    }

    #[test]
    fn single_range_slice_and_content_range_agree(
        len in 1usize..2000,
        a in any::<prop::sample::Index>(),
        b in any::<prop::sample::Index>(),
        open in any::<bool>(),
    ) {
        let body = body(len);
        let (first, last) = {
            let (x, y) = (a.index(len), b.index(len));
            (x.min(y), x.max(y))
        };
        let value = if open { format!("bytes={first}-") } else { format!("bytes={first}-{last}") };
        let last = if open { len - 1 } else { last };
        let answer = select(&Method::GET, &range(&value), &stored(), len as u64);
        prop_assert_eq!(&answer, &RangeAnswer::Single(first as u64..last as u64 + 1));
        let built = partial(&answer, &stored(), &body).unwrap();
        prop_assert_eq!(built.status, StatusCode::PARTIAL_CONTENT);
        prop_assert_eq!(&built.body[..], &body[first..=last]);
        let expected_range = format!("bytes {first}-{last}/{len}");
        prop_assert_eq!(built.headers[header::CONTENT_RANGE].to_str().unwrap(), expected_range);
        let expected_length = (last - first + 1).to_string();
        prop_assert_eq!(built.headers[header::CONTENT_LENGTH].to_str().unwrap(), expected_length);
    }

    #[test]
    fn suffix_range_is_the_tail(len in 1usize..2000, suffix in 1u64..3000) {
        let answer = select(&Method::GET, &range(&format!("bytes=-{suffix}")), &stored(), len as u64);
        let start = (len as u64).saturating_sub(suffix);
        prop_assert_eq!(answer, RangeAnswer::Single(start..len as u64));
    }

    #[test]
    fn merged_ranges_sorted_disjoint_within_len(
        len in 1u64..500,
        specs in proptest::collection::vec((0u64..600, 0u64..600, 0u8..3), 1..=MAX_RANGES),
    ) {
        let text: Vec<String> = specs
            .iter()
            .map(|&(x, y, kind)| match kind {
                0 => format!("{}-{}", x.min(y), x.max(y)),
                1 => format!("{x}-"),
                _ => format!("-{y}"),
            })
            .collect();
        let answer = get(&format!("bytes={}", text.join(", ")), len);
        // Every byte asked for and satisfiable, and no other, is covered.
        let mut wanted = vec![false; len as usize];
        for &(x, y, kind) in &specs {
            let covered: Range<u64> = match kind {
                0 => x.min(y)..(x.max(y) + 1).min(len),
                1 => x..len,
                _ => len - y.min(len)..len,
            };
            for i in covered {
                wanted[i as usize] = true;
            }
        }
        let ranges = match answer {
            RangeAnswer::Single(r) => vec![r],
            RangeAnswer::Multiple(rs) => {
                prop_assert!(rs.len() >= 2);
                rs
            }
            RangeAnswer::Unsatisfiable => Vec::new(),
            RangeAnswer::Full => return Err(TestCaseError::fail("valid ranges answered Full")),
        };
        for pair in ranges.windows(2) {
            // Sorted, and neither overlapping nor adjacent.
            prop_assert!(pair[0].end < pair[1].start, "{:?}", ranges);
        }
        let mut got = vec![false; len as usize];
        for r in &ranges {
            prop_assert!(r.start < r.end && r.end <= len, "{:?}", r);
            for i in r.clone() {
                got[i as usize] = true;
            }
        }
        prop_assert_eq!(got, wanted);
    }

    #[test]
    fn multipart_parses_back_to_slices(
        content in proptest::collection::vec(any::<u8>(), 2..1500),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 4..12),
        content_type in prop_oneof![Just(None), Just(Some("application/pdf"))],
    ) {
        let len = content.len();
        let body = Bytes::from(content);
        // Distinct sorted cut points, paired into disjoint non-adjacent ranges.
        let mut points: Vec<u64> = cuts.iter().map(|i| i.index(len + 1) as u64).collect();
        points.sort_unstable();
        points.dedup();
        let ranges: Vec<Range<u64>> = points
            .chunks_exact(2)
            .map(|pair| pair[0]..pair[1])
            .filter(|r| !r.is_empty())
            .collect();
        prop_assume!(ranges.len() >= 2);
        let mut stored = HeaderMap::new();
        if let Some(content_type) = content_type {
            stored.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        let built = partial(&RangeAnswer::Multiple(ranges.clone()), &stored, &body).unwrap();
        prop_assert_eq!(built.status, StatusCode::PARTIAL_CONTENT);
        prop_assert_eq!(
            built.headers[header::CONTENT_LENGTH].to_str().unwrap(),
            built.body.len().to_string()
        );
        let boundary = boundary_of(&built.headers);
        let parts = parse_multipart(&boundary, &built.body);
        prop_assert_eq!(parts.len(), ranges.len());
        for ((head, data), r) in parts.iter().zip(&ranges) {
            let content_range = format!("Content-Range: bytes {}-{}/{len}", r.start, r.end - 1);
            let expected_head = match content_type {
                Some(content_type) => format!("Content-Type: {content_type}\r\n{content_range}"),
                None => content_range,
            };
            prop_assert_eq!(head, &expected_head);
            prop_assert_eq!(&data[..], &body[r.start as usize..r.end as usize]);
        }
    }
}

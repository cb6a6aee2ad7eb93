use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method};
use proptest::prelude::*;

use super::{EntityTag, Precondition, TagList, evaluate, is_conditional, parse_tag_list};

/// 2023-11-14T22:13:20Z.
const T0: u64 = 1_700_000_000;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn date(secs: u64) -> String {
    httpdate::fmt_http_date(at(secs))
}

fn headers(fields: &[(HeaderName, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in fields {
        map.append(name.clone(), HeaderValue::from_str(value).unwrap());
    }
    map
}

/// A stored response with a strong ETag and Last-Modified one hour before its Date.
fn stored() -> HeaderMap {
    headers(&[
        (header::ETAG, "\"v1\""),
        (header::LAST_MODIFIED, &date(T0)),
        (header::DATE, &date(T0 + 3600)),
    ])
}

fn get(request: &HeaderMap, stored: &HeaderMap) -> Precondition {
    evaluate(&Method::GET, request, stored, at(T0 + 7200))
}

fn tag(weak: bool, opaque: &str) -> EntityTag<'_> {
    EntityTag {
        weak,
        opaque: opaque.as_bytes(),
    }
}

#[test]
fn rfc9110_13_2_2_no_preconditions_proceed() {
    assert_eq!(get(&HeaderMap::new(), &stored()), Precondition::Proceed);
}

#[test]
fn rfc9110_13_1_1_if_match_star_passes() {
    let request = headers(&[(header::IF_MATCH, "*")]);
    assert_eq!(get(&request, &stored()), Precondition::Proceed);
    assert_eq!(get(&request, &HeaderMap::new()), Precondition::Proceed);
}

#[test]
fn rfc9110_13_1_1_if_match_strong_match_passes() {
    let request = headers(&[(header::IF_MATCH, "\"v0\", \"v1\"")]);
    assert_eq!(get(&request, &stored()), Precondition::Proceed);
}

#[test]
fn rfc9110_13_1_1_if_match_mismatch_fails() {
    let request = headers(&[(header::IF_MATCH, "\"v2\"")]);
    assert_eq!(get(&request, &stored()), Precondition::Failed);
}

#[test]
fn rfc9110_13_1_1_if_match_uses_strong_comparison() {
    let weak_request = headers(&[(header::IF_MATCH, "W/\"v1\"")]);
    assert_eq!(get(&weak_request, &stored()), Precondition::Failed);
    let mut weak_stored = stored();
    weak_stored.insert(header::ETAG, HeaderValue::from_static("W/\"v1\""));
    let request = headers(&[(header::IF_MATCH, "\"v1\"")]);
    assert_eq!(get(&request, &weak_stored), Precondition::Failed);
}

#[test]
fn rfc9110_13_1_1_if_match_without_stored_etag_fails() {
    let request = headers(&[(header::IF_MATCH, "\"v1\"")]);
    let mut no_etag = stored();
    no_etag.remove(header::ETAG);
    assert_eq!(get(&request, &no_etag), Precondition::Failed);
}

#[test]
fn rfc9110_13_1_1_if_match_malformed_fails() {
    for value in [
        "v1",
        "\"v1",
        "\"v1\" \"v2\"",
        "*, \"v1\"",
        "w/\"v1\"",
        "\"v1\"x",
    ] {
        let request = headers(&[(header::IF_MATCH, value)]);
        assert_eq!(get(&request, &stored()), Precondition::Failed, "{value}");
    }
}

#[test]
fn rfc9110_5_3_if_match_field_lines_combine() {
    let request = headers(&[(header::IF_MATCH, "\"a\""), (header::IF_MATCH, "\"v1\"")]);
    assert_eq!(get(&request, &stored()), Precondition::Proceed);
}

#[test]
fn rfc9110_13_2_2_if_match_failure_wins_over_if_none_match() {
    let request = headers(&[
        (header::IF_MATCH, "\"x\""),
        (header::IF_NONE_MATCH, "\"v1\""),
    ]);
    assert_eq!(get(&request, &stored()), Precondition::Failed);
}

#[test]
fn rfc9110_13_1_4_if_unmodified_since_not_modified_passes() {
    for secs in [T0, T0 + 1] {
        let request = headers(&[(header::IF_UNMODIFIED_SINCE, &date(secs))]);
        assert_eq!(get(&request, &stored()), Precondition::Proceed);
    }
}

#[test]
fn rfc9110_13_1_4_if_unmodified_since_modified_later_fails() {
    let request = headers(&[(header::IF_UNMODIFIED_SINCE, &date(T0 - 1))]);
    assert_eq!(get(&request, &stored()), Precondition::Failed);
    let put = evaluate(&Method::PUT, &request, &stored(), at(T0));
    assert_eq!(put, Precondition::Failed);
}

#[test]
fn rfc9110_13_1_4_if_unmodified_since_ignored_with_if_match() {
    let request = headers(&[
        (header::IF_MATCH, "\"v1\""),
        (header::IF_UNMODIFIED_SINCE, &date(T0 - 1)),
    ]);
    assert_eq!(get(&request, &stored()), Precondition::Proceed);
}

#[test]
fn rfc9110_13_1_4_if_unmodified_since_invalid_date_ignored() {
    let list = format!("{}, {}", date(T0 - 10), date(T0 - 5));
    for value in ["yesterday", "", list.as_str()] {
        let request = headers(&[(header::IF_UNMODIFIED_SINCE, value)]);
        assert_eq!(get(&request, &stored()), Precondition::Proceed, "{value}");
    }
    let two_lines = headers(&[
        (header::IF_UNMODIFIED_SINCE, &date(T0 - 10)),
        (header::IF_UNMODIFIED_SINCE, &date(T0 - 5)),
    ]);
    assert_eq!(get(&two_lines, &stored()), Precondition::Proceed);
}

#[test]
fn rfc9110_13_1_4_if_unmodified_since_ignored_without_last_modified() {
    let request = headers(&[(header::IF_UNMODIFIED_SINCE, &date(T0 - 100))]);
    let mut no_lm = stored();
    no_lm.remove(header::LAST_MODIFIED);
    assert_eq!(get(&request, &no_lm), Precondition::Proceed);
}

#[test]
fn rfc9110_13_1_2_if_none_match_weak_match_not_modified() {
    for value in ["\"v1\"", "W/\"v1\"", "\"a\", W/\"v1\"", "*"] {
        let request = headers(&[(header::IF_NONE_MATCH, value)]);
        assert_eq!(
            get(&request, &stored()),
            Precondition::NotModified,
            "{value}"
        );
        let head = evaluate(&Method::HEAD, &request, &stored(), at(T0));
        assert_eq!(head, Precondition::NotModified, "{value}");
    }
    let mut weak_stored = stored();
    weak_stored.insert(header::ETAG, HeaderValue::from_static("W/\"v1\""));
    let request = headers(&[(header::IF_NONE_MATCH, "\"v1\"")]);
    assert_eq!(get(&request, &weak_stored), Precondition::NotModified);
}

#[test]
fn rfc9110_13_1_2_if_none_match_other_methods_fail() {
    let request = headers(&[(header::IF_NONE_MATCH, "*")]);
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        assert_eq!(
            evaluate(&method, &request, &stored(), at(T0)),
            Precondition::Failed
        );
    }
}

#[test]
fn rfc9110_13_1_2_if_none_match_mismatch_proceeds() {
    let request = headers(&[(header::IF_NONE_MATCH, "\"v2\", W/\"v3\"")]);
    assert_eq!(get(&request, &stored()), Precondition::Proceed);
    let mut no_etag = stored();
    no_etag.remove(header::ETAG);
    let request = headers(&[(header::IF_NONE_MATCH, "\"v1\"")]);
    assert_eq!(get(&request, &no_etag), Precondition::Proceed);
}

#[test]
fn rfc9110_13_1_2_if_none_match_malformed_proceeds() {
    for value in ["v1", "\"v1", "\"v1\";", "*, *"] {
        let request = headers(&[(header::IF_NONE_MATCH, value)]);
        assert_eq!(get(&request, &stored()), Precondition::Proceed, "{value}");
    }
}

#[test]
fn rfc9110_13_1_3_if_modified_since_ignored_with_if_none_match() {
    let request = headers(&[
        (header::IF_NONE_MATCH, "\"other\""),
        (header::IF_MODIFIED_SINCE, &date(T0 + 10)),
    ]);
    assert_eq!(get(&request, &stored()), Precondition::Proceed);
}

#[test]
fn rfc9110_13_1_3_if_modified_since_not_modified() {
    for secs in [T0, T0 + 10] {
        let request = headers(&[(header::IF_MODIFIED_SINCE, &date(secs))]);
        assert_eq!(get(&request, &stored()), Precondition::NotModified);
    }
}

#[test]
fn rfc9110_13_1_3_if_modified_since_modified_proceeds() {
    let request = headers(&[(header::IF_MODIFIED_SINCE, &date(T0 - 1))]);
    assert_eq!(get(&request, &stored()), Precondition::Proceed);
}

#[test]
fn rfc9110_13_1_3_if_modified_since_only_get_and_head() {
    let request = headers(&[(header::IF_MODIFIED_SINCE, &date(T0 + 10))]);
    let head = evaluate(&Method::HEAD, &request, &stored(), at(T0));
    assert_eq!(head, Precondition::NotModified);
    let post = evaluate(&Method::POST, &request, &stored(), at(T0));
    assert_eq!(post, Precondition::Proceed);
}

#[test]
fn rfc9110_13_1_3_if_modified_since_invalid_date_ignored() {
    for value in ["not a date", "1700000000"] {
        let request = headers(&[(header::IF_MODIFIED_SINCE, value)]);
        assert_eq!(get(&request, &stored()), Precondition::Proceed, "{value}");
    }
}

#[test]
fn rfc9110_5_6_7_obsolete_date_formats_accepted() {
    // The stored Last-Modified is Tue, 14 Nov 2023 22:13:20 GMT.
    for value in [
        "Tuesday, 14-Nov-23 22:13:20 GMT",
        "Tue Nov 14 22:13:20 2023",
        "Tue, 14 Nov 2023 22:13:20 GMT",
    ] {
        let request = headers(&[(header::IF_MODIFIED_SINCE, value)]);
        assert_eq!(
            get(&request, &stored()),
            Precondition::NotModified,
            "{value}"
        );
    }
}

#[test]
fn rfc9111_4_3_2_if_modified_since_falls_back_to_date() {
    let mut no_lm = stored();
    no_lm.remove(header::LAST_MODIFIED);
    // Date is T0 + 3600.
    let before = headers(&[(header::IF_MODIFIED_SINCE, &date(T0 + 3599))]);
    assert_eq!(get(&before, &no_lm), Precondition::Proceed);
    let same = headers(&[(header::IF_MODIFIED_SINCE, &date(T0 + 3600))]);
    assert_eq!(get(&same, &no_lm), Precondition::NotModified);
}

#[test]
fn rfc9111_4_3_2_if_modified_since_falls_back_to_received() {
    let bare = headers(&[(header::ETAG, "\"v1\"")]);
    let received = at(T0) + Duration::from_millis(900);
    let same = headers(&[(header::IF_MODIFIED_SINCE, &date(T0))]);
    assert_eq!(
        evaluate(&Method::GET, &same, &bare, received),
        Precondition::NotModified
    );
    let before = headers(&[(header::IF_MODIFIED_SINCE, &date(T0 - 1))]);
    assert_eq!(
        evaluate(&Method::GET, &before, &bare, received),
        Precondition::Proceed
    );
}

#[test]
fn rfc9110_13_2_2_if_none_match_evaluated_after_if_unmodified_since() {
    let request = headers(&[
        (header::IF_UNMODIFIED_SINCE, &date(T0)),
        (header::IF_NONE_MATCH, "\"v1\""),
    ]);
    assert_eq!(get(&request, &stored()), Precondition::NotModified);
}

#[test]
fn rfc9110_13_is_conditional() {
    assert!(!is_conditional(&HeaderMap::new()));
    assert!(!is_conditional(&headers(&[(header::RANGE, "bytes=0-1")])));
    for name in [
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
    ] {
        assert!(is_conditional(&headers(&[(name.clone(), "x")])), "{name}");
    }
}

#[test]
fn rfc9110_8_8_3_entity_tag_lists() {
    let request = headers(&[(header::IF_NONE_MATCH, " \"a\" ,, W/\"b\",\t\"\" ,")]);
    assert_eq!(
        parse_tag_list(&request, &header::IF_NONE_MATCH),
        Some(TagList::Tags(vec![
            tag(false, "a"),
            tag(true, "b"),
            tag(false, "")
        ]))
    );
    let empty = headers(&[(header::IF_NONE_MATCH, "")]);
    assert_eq!(
        parse_tag_list(&empty, &header::IF_NONE_MATCH),
        Some(TagList::Tags(Vec::new()))
    );
    let star = headers(&[(header::IF_NONE_MATCH, " * ")]);
    assert_eq!(
        parse_tag_list(&star, &header::IF_NONE_MATCH),
        Some(TagList::Any)
    );
    let spaced = headers(&[(header::IF_NONE_MATCH, "\"a b\"")]);
    assert_eq!(parse_tag_list(&spaced, &header::IF_NONE_MATCH), None);
}

#[test]
fn rfc9110_8_8_3_2_comparison_table() {
    // The table of section 8.8.3.2.
    let cases = [
        (tag(true, "1"), tag(true, "1"), false, true),
        (tag(true, "1"), tag(true, "2"), false, false),
        (tag(true, "1"), tag(false, "1"), false, true),
        (tag(false, "1"), tag(false, "1"), true, true),
    ];
    for (a, b, strong, weak) in cases {
        assert_eq!(a.strong_eq(&b), strong, "{a:?} {b:?}");
        assert_eq!(a.weak_eq(&b), weak, "{a:?} {b:?}");
    }
}

fn any_value() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40).prop_filter_map("field value", |bytes| {
            HeaderValue::from_bytes(&bytes).ok()
        }),
        "(W/)?\"[a-z0-9]{0,3}\"(, ?(W/)?\"[a-z0-9]{0,3}\"){0,3}"
            .prop_filter_map("field value", |s| HeaderValue::from_str(&s).ok()),
        (0u64..4_000_000_000).prop_map(|secs| {
            HeaderValue::from_str(&date(secs)).unwrap_or(HeaderValue::from_static(""))
        }),
    ]
}

proptest! {
    #[test]
    fn evaluate_never_panics(
        fields in proptest::collection::vec((0usize..7, any_value()), 0..8),
        method in prop_oneof![Just(Method::GET), Just(Method::HEAD), Just(Method::PUT)],
        received in 0u64..4_000_000_000,
    ) {
        let names = [
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_UNMODIFIED_SINCE,
            header::ETAG,
            header::LAST_MODIFIED,
            header::DATE,
        ];
        let mut request = HeaderMap::new();
        let mut stored = HeaderMap::new();
        for (index, value) in fields {
            let name = names[index].clone();
            if index < 4 {
                request.append(name, value);
            } else {
                stored.append(name, value);
            }
        }
        let _ = evaluate(&method, &request, &stored, at(received));
        prop_assert_eq!(is_conditional(&request), !request.is_empty());
    }
}

//! Tests for the Cache-Control and targeted-field parsers, named after the section they check.

use http::header::{CACHE_CONTROL, PRAGMA};
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

use super::*;

/// A targeted field name (RFC 9213 section 3).
static CDN: HeaderName = HeaderName::from_static("cdn-cache-control");

fn map(name: &HeaderName, lines: &[&[u8]]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in lines {
        headers.append(name.clone(), HeaderValue::from_bytes(line).unwrap());
    }
    headers
}

fn resp(lines: &[&str]) -> ResponseDirectives {
    let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
    parse_response(&map(&CACHE_CONTROL, &lines))
}

fn req(lines: &[&str]) -> RequestDirectives {
    let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
    parse_request(&map(&CACHE_CONTROL, &lines))
}

fn cdn(lines: &[&str]) -> Option<ResponseDirectives> {
    let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
    parse_targeted(&map(&CDN, &lines), &CDN)
}

fn fields(names: &[&'static str]) -> FieldList {
    FieldList::Fields(names.iter().map(|n| HeaderName::from_static(n)).collect())
}

fn max_age(n: u64) -> ResponseDirectives {
    ResponseDirectives {
        max_age: Some(n),
        ..Default::default()
    }
}

// ---- RFC 9111 section 5.2: list syntax ----------------------------------------------------------

#[test]
fn rfc9111_5_2_no_field_is_all_defaults() {
    assert_eq!(
        parse_response(&HeaderMap::new()),
        ResponseDirectives::default()
    );
    assert_eq!(
        parse_request(&HeaderMap::new()),
        RequestDirectives::default()
    );
    assert_eq!(resp(&[""]), ResponseDirectives::default());
}

#[test]
fn rfc9111_5_2_directive_names_are_case_insensitive() {
    let parsed = resp(&["Max-Age=60, NO-STORE, Private=\"Set-Cookie\", s-MaxAge=5, PUBLIC"]);
    assert_eq!(
        parsed,
        ResponseDirectives {
            max_age: Some(60),
            s_maxage: Some(5),
            no_store: true,
            public: true,
            private: fields(&["set-cookie"]),
            ..Default::default()
        }
    );
    let parsed = req(&["MAX-STALE, No-Cache, Only-If-Cached, MIN-FRESH=3"]);
    assert_eq!(parsed.max_stale, Some(MaxStale::Any));
    assert!(parsed.no_cache && parsed.only_if_cached);
    assert_eq!(parsed.min_fresh, Some(3));
}

#[test]
fn rfc9111_5_2_directives_combine_across_field_lines() {
    let parsed = resp(&[
        "max-age=60",
        "no-cache=\"a\"",
        "must-revalidate",
        "no-cache=\"b\"",
    ]);
    assert_eq!(
        parsed,
        ResponseDirectives {
            max_age: Some(60),
            no_cache: fields(&["a", "b"]),
            must_revalidate: true,
            ..Default::default()
        }
    );
}

#[test]
fn rfc9111_5_2_ows_around_commas_and_equals_tolerated() {
    assert_eq!(
        resp(&["  max-age = 60 ,\tno-store\t,public  "]),
        ResponseDirectives {
            max_age: Some(60),
            no_store: true,
            public: true,
            ..Default::default()
        }
    );
    assert_eq!(resp(&["max-age=\t\"60\"\t"]), max_age(60));
}

#[test]
fn rfc9110_5_6_1_2_empty_list_elements_ignored() {
    assert_eq!(resp(&[",, ,max-age=60,,, ,"]), max_age(60));
    assert_eq!(resp(&[",", " ", "max-age=60"]), max_age(60));
}

#[test]
fn rfc9111_5_2_both_argument_forms_accepted() {
    // "recipients ought to accept both forms, even if a specific form is required for generation"
    assert_eq!(resp(&["max-age=\"60\""]), max_age(60));
    assert_eq!(resp(&["s-maxage=\"7\""]).s_maxage, Some(7));
    assert_eq!(resp(&["stale-if-error=\"9\""]).stale_if_error, Some(9));
    assert_eq!(
        resp(&["no-cache=set-cookie"]).no_cache,
        fields(&["set-cookie"])
    );
    assert_eq!(
        req(&["max-stale=\"10\""]).max_stale,
        Some(MaxStale::Seconds(10))
    );
}

#[test]
fn rfc9110_5_6_4_quoted_pairs_are_unescaped() {
    assert_eq!(
        resp(&[r#"no-cache="set\-cookie, x\\y""#]).no_cache,
        fields(&["set-cookie"])
    );
    assert_eq!(resp(&[r#"max-age="\6\0""#]), max_age(60));
}

#[test]
fn rfc9111_5_2_commas_inside_quoted_strings_do_not_split() {
    assert_eq!(
        resp(&["x-ext=\"a, max-age=5, no-store\", max-age=10"]),
        max_age(10)
    );
    assert_eq!(resp(&[r#"x-ext="a\", no-store", max-age=10"#]), max_age(10));
}

#[test]
fn rfc9111_5_2_3_unknown_directives_ignored() {
    assert_eq!(
        resp(&["foo, bar=baz, community=\"UCI\", max-age=60, x-y-z=1"]),
        max_age(60)
    );
    let long = format!("{}=1, max-age=60", "a".repeat(200));
    assert_eq!(resp(&[long.as_str()]), max_age(60));
}

#[test]
fn rfc9111_5_2_elements_not_starting_with_a_token_are_skipped() {
    assert_eq!(resp(&["\"junk, no-store\", max-age=60"]), max_age(60));
    assert_eq!(resp(&["=5, (x), max-age=60, ;"]), max_age(60));
}

#[test]
fn rfc9111_5_2_unterminated_quoted_string_stays_in_its_line() {
    let parsed = resp(&["no-cache=\"set-cookie, max-age=5", "max-age=60"]);
    assert_eq!(parsed.no_cache, FieldList::All);
    assert_eq!(parsed.max_age, Some(60));
}

#[test]
fn rfc9111_5_2_non_utf8_never_panics() {
    let headers = map(
        &CACHE_CONTROL,
        &[b"max-age=\xff60, no-store, \xc3\x28=\"\xfe\"", b"\x80"],
    );
    let parsed = parse_response(&headers);
    assert_eq!(parsed.max_age, Some(0));
    assert!(parsed.no_store);
    let _ = parse_request(&headers);
    let _ = parse_targeted(&headers, &CACHE_CONTROL);
}

// ---- RFC 9111 section 1.2.2 and 4.2.1: delta-seconds and freshness ------------------------------

#[test]
fn rfc9111_1_2_2_delta_seconds_saturates_at_2_pow_31() {
    assert_eq!(resp(&["max-age=2147483647"]), max_age(2_147_483_647));
    assert_eq!(resp(&["max-age=2147483648"]), max_age(MAX_DELTA_SECONDS));
    assert_eq!(resp(&["max-age=2147483649"]), max_age(MAX_DELTA_SECONDS));
    assert_eq!(
        resp(&["max-age=18446744073709551616"]),
        max_age(MAX_DELTA_SECONDS)
    );
    let huge = format!("max-age={}", "9".repeat(500));
    assert_eq!(resp(&[huge.as_str()]), max_age(MAX_DELTA_SECONDS));
    assert_eq!(
        req(&["min-fresh=99999999999999999999"]).min_fresh,
        Some(MAX_DELTA_SECONDS)
    );
}

#[test]
fn rfc9111_1_2_2_delta_seconds_allows_leading_zeros() {
    assert_eq!(resp(&["max-age=0060"]), max_age(60));
    assert_eq!(resp(&["max-age=0"]), max_age(0));
    let zeros = format!("max-age={}1", "0".repeat(100));
    assert_eq!(resp(&[zeros.as_str()]), max_age(1));
}

#[test]
fn rfc9111_4_2_1_invalid_max_age_is_stale() {
    for value in [
        "max-age",
        "max-age=",
        "max-age=\"\"",
        "max-age=-1",
        "max-age=+5",
        "max-age=3600a",
        "max-age=1.5",
        "max-age=0x10",
        "max-age=5 6",
        "max-age=5;x",
        "max-age=\"5",
        "max-age=\"5 \"",
        "max-age=٣",
    ] {
        assert_eq!(resp(&[value]).max_age, Some(0), "{value}");
        let s = value.replacen("max-age", "s-maxage", 1);
        assert_eq!(resp(&[s.as_str()]).s_maxage, Some(0), "{s}");
    }
}

#[test]
fn rfc9111_4_2_1_conflicting_duplicate_max_age_is_stale() {
    assert_eq!(resp(&["max-age=60, max-age=120"]), max_age(0));
    assert_eq!(resp(&["max-age=60", "max-age=120"]), max_age(0));
    assert_eq!(resp(&["max-age=60, max-age=x"]), max_age(0));
    assert_eq!(resp(&["s-maxage=1, s-maxage=2"]).s_maxage, Some(0));
}

#[test]
fn rfc9111_4_2_1_identical_duplicate_max_age_is_kept() {
    assert_eq!(
        resp(&["max-age=60, max-age=\"60\"", "MAX-AGE=060"]),
        max_age(60)
    );
    assert_eq!(
        resp(&["max-age=99999999999", "max-age=2147483648"]),
        max_age(MAX_DELTA_SECONDS)
    );
    assert_eq!(resp(&["s-maxage=5", "s-maxage=5"]).s_maxage, Some(5));
}

// ---- RFC 9111 section 5.2.2: response directives -------------------------------------------------

#[test]
fn rfc9111_5_2_2_boolean_directives() {
    let parsed = resp(&[
        "no-store, public, must-revalidate, proxy-revalidate, must-understand, no-transform, immutable",
    ]);
    assert_eq!(
        parsed,
        ResponseDirectives {
            no_store: true,
            public: true,
            must_revalidate: true,
            proxy_revalidate: true,
            must_understand: true,
            no_transform: true,
            immutable: true,
            ..Default::default()
        }
    );
}

#[test]
fn rfc9111_5_2_2_boolean_directive_with_argument_still_counts() {
    assert!(resp(&["no-store=1"]).no_store);
    assert!(resp(&["no-store=\"a, b\""]).no_store);
    assert!(resp(&["must-revalidate="]).must_revalidate);
    assert!(resp(&["immutable junk"]).immutable);
    assert!(req(&["no-cache=\"x\""]).no_cache);
    assert!(req(&["only-if-cached=1"]).only_if_cached);
}

#[test]
fn rfc9111_5_2_2_4_unqualified_no_cache_is_all() {
    assert_eq!(resp(&["no-cache"]).no_cache, FieldList::All);
    assert_eq!(resp(&["no-cache="]).no_cache, FieldList::All);
    assert_eq!(resp(&["no-cache=\"unterminated"]).no_cache, FieldList::All);
    assert_eq!(resp(&["max-age=1"]).no_cache, FieldList::Absent);
}

#[test]
fn rfc9111_5_2_2_4_qualified_no_cache_lists_lowercased_fields() {
    assert_eq!(
        resp(&["no-cache=\" Set-Cookie ,X-Foo,,set-cookie \""]).no_cache,
        fields(&["set-cookie", "x-foo"])
    );
}

#[test]
fn rfc9111_5_2_2_4_invalid_field_names_skipped_and_empty_list_is_all() {
    assert_eq!(
        resp(&["no-cache=\"bad name, x-ok, b@d\""]).no_cache,
        fields(&["x-ok"])
    );
    assert_eq!(resp(&["no-cache=\"\""]).no_cache, FieldList::All);
    assert_eq!(resp(&["no-cache=\" , ,\""]).no_cache, FieldList::All);
    assert_eq!(resp(&["private=\"b@d\""]).private, FieldList::All);
}

#[test]
fn rfc9111_5_2_2_4_qualified_and_unqualified_is_all() {
    assert_eq!(resp(&["no-cache=\"a\", no-cache"]).no_cache, FieldList::All);
    assert_eq!(
        resp(&["no-cache", "no-cache=\"a\""]).no_cache,
        FieldList::All
    );
    assert_eq!(resp(&["private=\"a\"", "private"]).private, FieldList::All);
}

#[test]
fn rfc9111_5_2_2_7_multiple_qualified_private_are_united() {
    assert_eq!(
        resp(&["private=\"b, a\"", "private=\"c, a\""]).private,
        fields(&["a", "b", "c"])
    );
    // Order of the lines does not change the result.
    assert_eq!(
        resp(&["private=\"c, a\"", "private=\"b, a\""]).private,
        fields(&["a", "b", "c"])
    );
}

#[test]
fn rfc5861_stale_extensions_parse_delta_seconds() {
    let parsed = resp(&["stale-while-revalidate=30, stale-if-error=\"600\""]);
    assert_eq!(parsed.stale_while_revalidate, Some(30));
    assert_eq!(parsed.stale_if_error, Some(600));
    assert_eq!(
        resp(&["stale-if-error=4294967296"]).stale_if_error,
        Some(MAX_DELTA_SECONDS)
    );
}

#[test]
fn rfc5861_invalid_values_are_ignored() {
    for value in ["", "=", "=-1", "=1.5", "=abc", "=\"\"", "=5 5"] {
        let line = format!("stale-while-revalidate{value}, stale-if-error{value}");
        let parsed = resp(&[line.as_str()]);
        assert_eq!(parsed.stale_while_revalidate, None, "{line}");
        assert_eq!(parsed.stale_if_error, None, "{line}");
        let req_line = format!("stale-if-error{value}");
        assert_eq!(req(&[req_line.as_str()]).stale_if_error, None, "{req_line}");
    }
    // An invalid occurrence does not cancel a valid one.
    assert_eq!(
        resp(&["stale-if-error=x, stale-if-error=5"]).stale_if_error,
        Some(5)
    );
}

#[test]
fn rfc5861_repeated_values_keep_the_smaller() {
    let parsed = resp(&["stale-while-revalidate=30", "stale-while-revalidate=10"]);
    assert_eq!(parsed.stale_while_revalidate, Some(10));
    assert_eq!(
        resp(&["stale-if-error=5, stale-if-error=50"]).stale_if_error,
        Some(5)
    );
}

// ---- RFC 9111 section 5.2.1: request directives --------------------------------------------------

#[test]
fn rfc9111_5_2_1_request_directives() {
    let parsed = req(&[
        "no-cache, no-store",
        "max-age=10, max-stale=20, min-fresh=30, only-if-cached, stale-if-error=40",
    ]);
    assert_eq!(
        parsed,
        RequestDirectives {
            no_cache: true,
            no_store: true,
            max_age: Some(10),
            max_stale: Some(MaxStale::Seconds(20)),
            min_fresh: Some(30),
            only_if_cached: true,
            stale_if_error: Some(40),
        }
    );
}

#[test]
fn rfc9111_5_2_1_response_only_directives_are_ignored_in_requests() {
    assert_eq!(
        req(&["public, private, s-maxage=5, must-revalidate, immutable"]),
        RequestDirectives::default()
    );
}

#[test]
fn rfc9111_5_2_1_1_invalid_request_max_age_is_zero() {
    for value in [
        "max-age",
        "max-age=",
        "max-age=-1",
        "max-age=1.5",
        "max-age=10s",
    ] {
        assert_eq!(req(&[value]).max_age, Some(0), "{value}");
    }
    assert_eq!(
        req(&["max-age=4294967296"]).max_age,
        Some(MAX_DELTA_SECONDS)
    );
}

#[test]
fn rfc9111_5_2_1_2_max_stale_forms() {
    assert_eq!(req(&["max-stale"]).max_stale, Some(MaxStale::Any));
    assert_eq!(req(&["max-stale=0"]).max_stale, Some(MaxStale::Seconds(0)));
    assert_eq!(
        req(&["max-stale=99999999999"]).max_stale,
        Some(MaxStale::Seconds(MAX_DELTA_SECONDS))
    );
    for invalid in [
        "max-stale=",
        "max-stale=-1",
        "max-stale=1.5",
        "max-stale=\"x\"",
        "max-stale=1 2",
    ] {
        assert_eq!(req(&[invalid]).max_stale, None, "{invalid}");
    }
}

#[test]
fn rfc9111_5_2_1_3_invalid_min_fresh_is_ignored() {
    for invalid in ["min-fresh", "min-fresh=", "min-fresh=-1", "min-fresh=2.0"] {
        assert_eq!(req(&[invalid]).min_fresh, None, "{invalid}");
    }
}

#[test]
fn rfc9111_5_2_1_repeated_request_directives_keep_the_strictest() {
    let parsed = req(&[
        "max-age=60, max-stale, min-fresh=5, stale-if-error=9",
        "max-age=30, max-stale=100, min-fresh=50, stale-if-error=90",
    ]);
    assert_eq!(parsed.max_age, Some(30));
    assert_eq!(parsed.max_stale, Some(MaxStale::Seconds(100)));
    assert_eq!(parsed.min_fresh, Some(50));
    assert_eq!(parsed.stale_if_error, Some(9));
    assert_eq!(
        req(&["max-stale=100, max-stale"]).max_stale,
        Some(MaxStale::Seconds(100))
    );
    assert_eq!(
        req(&["max-stale=100, max-stale=7"]).max_stale,
        Some(MaxStale::Seconds(7))
    );
    assert_eq!(
        req(&["max-stale=100, max-stale=bad"]).max_stale,
        Some(MaxStale::Seconds(100))
    );
    assert_eq!(req(&["max-age=60, max-age=junk"]).max_age, Some(0));
}

// ---- RFC 9111 section 5.4 (RFC 7234 section 5.4): Pragma -----------------------------------------

fn with_pragma(cache_control: Option<&str>, pragma: &[&str]) -> RequestDirectives {
    let mut headers = HeaderMap::new();
    if let Some(cc) = cache_control {
        headers.append(CACHE_CONTROL, HeaderValue::from_str(cc).unwrap());
    }
    for line in pragma {
        headers.append(PRAGMA, HeaderValue::from_str(line).unwrap());
    }
    parse_request(&headers)
}

#[test]
fn rfc9111_5_4_pragma_no_cache_without_cache_control() {
    assert!(with_pragma(None, &["no-cache"]).no_cache);
    assert!(with_pragma(None, &["NO-CACHE"]).no_cache);
    assert!(with_pragma(None, &["x-foo=\"no-cache\", No-Cache"]).no_cache);
    assert!(with_pragma(None, &["foo", " no-cache "]).no_cache);
    assert_eq!(
        with_pragma(None, &["no-cache"]),
        RequestDirectives {
            no_cache: true,
            ..Default::default()
        }
    );
}

#[test]
fn rfc9111_5_4_pragma_without_no_cache_does_nothing() {
    assert!(!with_pragma(None, &["x-no-cache, no-cache-x, foo=\"no-cache\""]).no_cache);
    assert!(!with_pragma(None, &[]).no_cache);
}

#[test]
fn rfc9111_5_4_pragma_ignored_when_cache_control_present() {
    assert!(!with_pragma(Some("max-age=5"), &["no-cache"]).no_cache);
    assert!(!with_pragma(Some(""), &["no-cache"]).no_cache);
    assert!(with_pragma(Some("no-cache"), &["no-cache"]).no_cache);
}

#[test]
fn rfc9111_5_4_pragma_does_not_affect_responses() {
    let mut headers = map(&PRAGMA, &[b"no-cache"]);
    headers.append(CACHE_CONTROL, HeaderValue::from_static("max-age=5"));
    assert_eq!(parse_response(&headers), max_age(5));
}

// ---- RFC 9213 and RFC 8941: targeted fields -------------------------------------------------------

#[test]
fn rfc9213_2_1_absent_or_empty_field_is_none() {
    assert_eq!(parse_targeted(&HeaderMap::new(), &CDN), None);
    assert_eq!(cdn(&[""]), None);
    assert_eq!(cdn(&["  ", ""]), None);
    // Another field does not count.
    assert_eq!(
        parse_targeted(&map(&CACHE_CONTROL, &[b"max-age=5"]), &CDN),
        None
    );
}

#[test]
fn rfc9213_2_1_parse_error_is_none() {
    for invalid in [
        "Max-Age=60", // keys are lowercase
        "max-Age=60",
        "max-age=60,", // trailing comma
        ",max-age=60",
        "max-age=60,,no-store",
        "max-age = 60", // no whitespace around "="
        "max-age=60 no-store",
        "1max=2", // key must start with lcalpha or "*"
        "a=\"unterminated",
        "a=\"bad\\escape\"",
        "a=\"caf\u{e9}\"",
        "a=?2",
        "a=?",
        "a=:not base64!:",
        "a=:abc",
        "a=1234567890123456", // 16 digits
        "a=1.2345",           // more than 3 fractional digits
        "a=1.",
        "a=1234567890123.1", // more than 12 integer digits
        "a=-",
        "a=(1 2",
        "a=(1,2)",
        "a=((1))",
        "a=@1659578233", // RFC 9651 dates are not in RFC 8941
        "a=%\"x\"",
        "a;B=1",
        "a=1;",
    ] {
        assert_eq!(cdn(&[invalid]), None, "{invalid}");
    }
    let headers = map(&CDN, &[b"max-age=60, a=\"\xff\""]);
    assert_eq!(parse_targeted(&headers, &CDN), None);
}

#[test]
fn rfc9213_2_1_an_invalid_line_spoils_the_combined_field() {
    assert_eq!(cdn(&["max-age=60", "Bad"]), None);
}

#[test]
fn rfc9213_2_1_directives_map_to_response_directives() {
    let parsed = cdn(&[
        "max-age=600, s-maxage=60, stale-while-revalidate=5, stale-if-error=7, must-revalidate, proxy-revalidate, no-transform, immutable, public, must-understand, no-store",
    ]);
    assert_eq!(
        parsed,
        Some(ResponseDirectives {
            max_age: Some(600),
            s_maxage: Some(60),
            stale_while_revalidate: Some(5),
            stale_if_error: Some(7),
            must_revalidate: true,
            proxy_revalidate: true,
            no_transform: true,
            immutable: true,
            public: true,
            must_understand: true,
            no_store: true,
            ..Default::default()
        })
    );
}

#[test]
fn rfc9213_2_1_unknown_members_leave_a_valid_field() {
    // The RFC's own example: "'none' is not a registered cache directive".
    assert_eq!(cdn(&["none"]), Some(ResponseDirectives::default()));
    assert_eq!(
        cdn(&["*x=1, foo=bar, b=:aGVsbG8=:, d=1.5, t=tok/en:x, l=(1 \"a\" b);p=1"]),
        Some(ResponseDirectives::default())
    );
}

#[test]
fn rfc9213_2_1_delta_directives_must_be_non_negative_integers() {
    for value in ["-1", "1.5", "\"60\"", "sixty", "?1", ":AAAA:", "(60)"] {
        let line = format!(
            "max-age={value}, s-maxage={value}, stale-if-error={value}, stale-while-revalidate={value}"
        );
        assert_eq!(
            cdn(&[line.as_str()]),
            Some(ResponseDirectives::default()),
            "{line}"
        );
    }
    assert_eq!(cdn(&["max-age=0"]), Some(max_age(0)));
    assert_eq!(cdn(&["max-age=-0"]), Some(max_age(0)));
    assert_eq!(
        cdn(&["max-age=999999999999999"]),
        Some(max_age(MAX_DELTA_SECONDS))
    );
}

#[test]
fn rfc9213_2_1_field_list_directives() {
    assert_eq!(cdn(&["private"]).unwrap().private, FieldList::All);
    assert_eq!(cdn(&["no-cache=?1"]).unwrap().no_cache, FieldList::All);
    assert_eq!(cdn(&["no-cache=?0"]).unwrap().no_cache, FieldList::Absent);
    assert_eq!(
        cdn(&["private=\"Set-Cookie, x-a\""]).unwrap().private,
        fields(&["set-cookie", "x-a"])
    );
    assert_eq!(cdn(&["no-cache=\"\""]).unwrap().no_cache, FieldList::All);
    assert_eq!(cdn(&["no-cache=\"b@d\""]).unwrap().no_cache, FieldList::All);
    // A token is not the String the directive calls for, so it is not consumed.
    assert_eq!(
        cdn(&["no-cache=set-cookie"]).unwrap().no_cache,
        FieldList::Absent
    );
    assert_eq!(cdn(&["private=1"]).unwrap().private, FieldList::Absent);
}

#[test]
fn rfc9213_2_1_boolean_directives_need_boolean_true() {
    assert!(cdn(&["no-store"]).unwrap().no_store);
    assert!(cdn(&["no-store=?1"]).unwrap().no_store);
    assert!(!cdn(&["no-store=?0"]).unwrap().no_store);
    assert!(!cdn(&["no-store=1"]).unwrap().no_store);
    assert!(!cdn(&["must-revalidate=\"yes\""]).unwrap().must_revalidate);
}

#[test]
fn rfc9213_2_1_parameters_are_ignored() {
    assert_eq!(
        cdn(&["max-age=60;a=1;b;c=\"x\", no-store;x=?0"]),
        Some(ResponseDirectives {
            max_age: Some(60),
            no_store: true,
            ..Default::default()
        })
    );
}

#[test]
fn rfc8941_3_2_duplicate_keys_last_wins() {
    assert_eq!(cdn(&["max-age=60, max-age=120"]), Some(max_age(120)));
    assert_eq!(cdn(&["max-age=60", "max-age=120"]), Some(max_age(120)));
    // The last member is invalid, so nothing is left of max-age.
    assert_eq!(
        cdn(&["max-age=60, max-age=1.5"]),
        Some(ResponseDirectives::default())
    );
    assert_eq!(
        cdn(&["no-store, no-store=?0"]),
        Some(ResponseDirectives::default())
    );
    assert_eq!(
        cdn(&["private=\"a\", private"]).unwrap().private,
        FieldList::All
    );
    assert_eq!(
        cdn(&["private, private=\"a\""]).unwrap().private,
        fields(&["a"])
    );
}

#[test]
fn rfc8941_4_2_whitespace() {
    assert_eq!(
        cdn(&["   max-age=60 ,\tno-store   "]),
        Some(ResponseDirectives {
            max_age: Some(60),
            no_store: true,
            ..Default::default()
        })
    );
    assert_eq!(
        cdn(&["max-age=60", "", "no-store"]).map(|d| d.no_store),
        Some(true)
    );
    // HTTP field values do not include leading or trailing OWS (RFC 9110 section 5.5).
    assert_eq!(cdn(&["\tmax-age=60\t"]), Some(max_age(60)));
}

#[test]
fn rfc8941_3_1_1_inner_lists_are_parsed_and_ignored() {
    assert_eq!(
        cdn(&["a=( 1 :YQ== );q, max-age=5"]),
        None,
        "unterminated byte sequence"
    );
    assert_eq!(
        cdn(&["a=( 1  \"x\";p=1 ?0 :YQ==: );q, max-age=5"]),
        Some(max_age(5))
    );
    assert_eq!(cdn(&["a=(), max-age=5"]), Some(max_age(5)));
}

// ---- Properties ------------------------------------------------------------------------------------

/// Valid directives with distinct names and their parsed meaning checked elsewhere.
const RESPONSE_DIRECTIVES: &[&str] = &[
    "max-age=60",
    "s-maxage=\"120\"",
    "no-cache=\"Set-Cookie, X-Foo\"",
    "private",
    "no-store",
    "public",
    "must-revalidate",
    "proxy-revalidate",
    "must-understand",
    "no-transform",
    "immutable",
    "stale-while-revalidate=30",
    "stale-if-error=600",
    "x-ext=\"Quoted, Value\"",
    "community=UCI",
];

const REQUEST_DIRECTIVES: &[&str] = &[
    "max-age=60",
    "max-stale",
    "min-fresh=\"5\"",
    "no-cache",
    "no-store",
    "only-if-cached",
    "stale-if-error=600",
    "x-ext=\"Quoted, Value\"",
];

fn response_of(lines: &[String]) -> ResponseDirectives {
    let lines: Vec<&[u8]> = lines.iter().map(String::as_bytes).collect();
    parse_response(&map(&CACHE_CONTROL, &lines))
}

fn request_of(lines: &[String]) -> RequestDirectives {
    let lines: Vec<&[u8]> = lines.iter().map(String::as_bytes).collect();
    parse_request(&map(&CACHE_CONTROL, &lines))
}

/// Flips the ASCII case of the bytes whose bit in `flips` is set.
fn recase(s: &str, flips: &[bool]) -> String {
    s.chars()
        .zip(flips.iter().chain(std::iter::repeat(&false)))
        .map(|(c, &flip)| match (flip, c.is_ascii_lowercase()) {
            (false, _) => c,
            (true, true) => c.to_ascii_uppercase(),
            (true, false) => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Splits `items` into field lines, starting a new line after item `i` when `breaks[i]`.
fn into_lines(items: &[&str], breaks: &[bool]) -> Vec<String> {
    let mut lines = vec![String::new()];
    for (i, item) in items.iter().enumerate() {
        let line = lines.last_mut().unwrap();
        if !line.is_empty() {
            line.push_str(", ");
        }
        line.push_str(item);
        if breaks.get(i).copied().unwrap_or(false) {
            lines.push(String::new());
        }
    }
    lines
}

fn arrangements(
    all: &'static [&'static str],
) -> impl Strategy<Value = (Vec<&'static str>, Vec<&'static str>, Vec<bool>)> {
    proptest::sample::subsequence(all.to_vec(), 0..=all.len()).prop_flat_map(|subset| {
        let n = subset.len();
        (
            Just(subset.clone()),
            Just(subset).prop_shuffle(),
            proptest::collection::vec(any::<bool>(), n),
        )
    })
}

proptest! {
    /// RFC 9111 section 5.2 and RFC 8941: no input panics any parser.
    #[test]
    fn prop_arbitrary_bytes_never_panic(lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..4)) {
        let mut headers = HeaderMap::new();
        for line in &lines {
            if let Ok(value) = HeaderValue::from_bytes(line) {
                headers.append(CACHE_CONTROL, value.clone());
                headers.append(PRAGMA, value.clone());
                headers.append(CDN.clone(), value);
            }
        }
        let _ = parse_response(&headers);
        let _ = parse_request(&headers);
        let _ = parse_targeted(&headers, &CDN);
        let _ = parse_targeted(&headers, &CACHE_CONTROL);
    }

    /// Structured-looking input exercises the deeper branches of the targeted-field parser.
    #[test]
    fn prop_structured_text_never_panics(text in "[a-z*0-9=;,:?\"\\\\() .@%\t-]{0,48}") {
        let headers = map(&CDN, &[text.as_bytes()]);
        let _ = parse_targeted(&headers, &CDN);
        let headers = map(&CACHE_CONTROL, &[text.as_bytes()]);
        let _ = parse_response(&headers);
        let _ = parse_request(&headers);
    }

    /// RFC 9111 section 1.2.2: any delta-seconds reads as itself, capped at 2^31.
    #[test]
    fn prop_rfc9111_1_2_2_delta_seconds_round_trip(n in any::<u64>(), quoted in any::<bool>()) {
        let expected = n.min(MAX_DELTA_SECONDS);
        let line = if quoted { format!("max-age=\"{n}\"") } else { format!("max-age={n}") };
        prop_assert_eq!(resp(&[line.as_str()]).max_age, Some(expected));
        prop_assert_eq!(req(&[line.as_str()]).max_age, Some(expected));
        let line = format!("s-maxage={n}, stale-if-error={n}");
        let parsed = resp(&[line.as_str()]);
        prop_assert_eq!(parsed.s_maxage, Some(expected));
        prop_assert_eq!(parsed.stale_if_error, Some(expected));
    }

    /// RFC 8941 integers: up to 15 digits, then capped like delta-seconds.
    #[test]
    fn prop_rfc9213_max_age_integer_round_trip(n in 0u64..1_000_000_000_000_000) {
        let line = format!("max-age={n}");
        prop_assert_eq!(cdn(&[line.as_str()]), Some(max_age(n.min(MAX_DELTA_SECONDS))));
    }

    /// RFC 9111 section 5.2: names (and field names in arguments) compare case-insensitively.
    #[test]
    fn prop_rfc9111_5_2_case_does_not_matter(
        (items, _, _) in arrangements(RESPONSE_DIRECTIVES),
        flips in proptest::collection::vec(any::<bool>(), 0..400),
    ) {
        let line = items.join(", ");
        prop_assert_eq!(resp(&[recase(&line, &flips).as_str()]), resp(&[line.as_str()]));
    }

    /// The same for request directives.
    #[test]
    fn prop_rfc9111_5_2_1_case_does_not_matter(
        (items, _, _) in arrangements(REQUEST_DIRECTIVES),
        flips in proptest::collection::vec(any::<bool>(), 0..200),
    ) {
        let line = items.join(", ");
        prop_assert_eq!(req(&[recase(&line, &flips).as_str()]), req(&[line.as_str()]));
    }

    /// RFC 9111 section 5.2: distinct directives mean the same in any order over any field lines.
    #[test]
    fn prop_rfc9111_5_2_order_and_lines_do_not_matter((items, shuffled, breaks) in arrangements(RESPONSE_DIRECTIVES)) {
        let reference = response_of(&[items.join(",")]);
        prop_assert_eq!(response_of(&into_lines(&shuffled, &breaks)), reference);
    }

    /// The same for request directives.
    #[test]
    fn prop_rfc9111_5_2_1_order_and_lines_do_not_matter((items, shuffled, breaks) in arrangements(REQUEST_DIRECTIVES)) {
        let reference = request_of(&[items.join(",")]);
        prop_assert_eq!(request_of(&into_lines(&shuffled, &breaks)), reference);
    }
}

#[test]
fn many_qualified_occurrences_are_merged_once() {
    // Thousands of qualified directives: the union is sorted and deduplicated once per field.
    let line: Vec<String> = (0..5000)
        .map(|i| format!("no-cache=\"x-{}, x-0\"", i % 2500))
        .collect();
    let parsed = resp(&[line.join(", ").as_str()]);
    let FieldList::Fields(names) = parsed.no_cache else {
        panic!("expected field names, got {:?}", parsed.no_cache);
    };
    assert_eq!(names.len(), 2500);
    assert!(names.windows(2).all(|w| w[0].as_str() < w[1].as_str()));
}

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, StatusCode};
use proptest::prelude::*;

use super::*;
use crate::directives::{FieldList, MaxStale, RequestDirectives, ResponseDirectives};

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn headers(pairs: &[(&str, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(
            http::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

#[test]
fn rfc9111_4_2_3_age_of_a_fresh_exchange_is_the_resident_time() {
    let h = headers(&[("date", date(at(0)))]);
    let ex = Exchange::new(&h, at(0), at(0));
    assert_eq!(ex.current_age(at(0)), 0);
    assert_eq!(ex.current_age(at(42)), 42);
}

#[test]
fn rfc9111_4_2_3_age_header_and_response_delay_add_up() {
    // Age 10 from upstream, 2 s between request and response: corrected age 12.
    let h = headers(&[("date", date(at(2))), ("age", "10".into())]);
    let ex = Exchange::new(&h, at(0), at(2));
    assert_eq!(ex.corrected_initial_age(), 12);
    assert_eq!(ex.current_age(at(5)), 15);
}

#[test]
fn rfc9111_4_2_3_apparent_age_from_an_old_date_wins_when_larger() {
    let h = headers(&[("date", date(at(0))), ("age", "5".into())]);
    let ex = Exchange::new(&h, at(100), at(100));
    assert_eq!(ex.corrected_initial_age(), 100);
}

#[test]
fn rfc9111_4_2_3_a_date_in_the_future_does_not_make_age_negative() {
    let h = headers(&[("date", date(at(1000)))]);
    let ex = Exchange::new(&h, at(0), at(0));
    assert_eq!(ex.current_age(at(0)), 0);
}

#[test]
fn rfc9111_5_1_invalid_age_is_ignored() {
    for bad in ["-5", "abc", "1.5", ""] {
        let h = headers(&[("date", date(at(0))), ("age", bad.into())]);
        assert_eq!(Exchange::new(&h, at(0), at(0)).age, 0, "{bad}");
    }
}

#[test]
fn rfc9111_5_1_first_member_of_an_age_list_counts() {
    let h = headers(&[("age", "7200, 0".into())]);
    assert_eq!(Exchange::new(&h, at(0), at(0)).age, 7200);
}

#[test]
fn rfc9111_1_2_2_huge_age_is_capped() {
    let h = headers(&[("age", "99999999999999999999999".into())]);
    assert_eq!(Exchange::new(&h, at(0), at(0)).age, 1 << 31);
}

fn cc() -> ResponseDirectives {
    ResponseDirectives::default()
}

#[test]
fn rfc9111_4_2_1_s_maxage_wins_over_max_age_and_expires() {
    let h = headers(&[("expires", date(at(10)))]);
    let d = ResponseDirectives {
        s_maxage: Some(300),
        max_age: Some(100),
        ..cc()
    };
    let l = lifetime(StatusCode::OK, &h, &d, at(0), Heuristic::default());
    assert_eq!(l, Lifetime::Explicit(300));
}

#[test]
fn rfc9111_4_2_1_max_age_wins_over_expires() {
    let h = headers(&[("expires", date(at(10)))]);
    let d = ResponseDirectives {
        max_age: Some(100),
        ..cc()
    };
    assert_eq!(
        lifetime(StatusCode::OK, &h, &d, at(0), Heuristic::default()),
        Lifetime::Explicit(100)
    );
}

#[test]
fn rfc9111_4_2_1_expires_minus_date() {
    let h = headers(&[("expires", date(at(60)))]);
    assert_eq!(
        lifetime(StatusCode::OK, &h, &cc(), at(0), Heuristic::default()),
        Lifetime::Explicit(60)
    );
}

#[test]
fn rfc9111_5_3_invalid_expires_means_already_expired() {
    for bad in ["0", "-1", "yesterday"] {
        let h = headers(&[("expires", bad.into()), ("last-modified", date(at(0)))]);
        assert_eq!(
            lifetime(StatusCode::OK, &h, &cc(), at(1000), Heuristic::default()),
            Lifetime::Explicit(0),
            "{bad}"
        );
    }
}

#[test]
fn rfc9111_4_2_2_heuristic_is_a_fraction_of_the_time_since_modification() {
    let h = headers(&[("last-modified", date(at(0)))]);
    assert_eq!(
        lifetime(StatusCode::OK, &h, &cc(), at(1000), Heuristic::default()),
        Lifetime::Heuristic(100)
    );
    // Capped.
    let cap = Heuristic {
        percent: 10,
        max: Duration::from_secs(50),
    };
    assert_eq!(
        lifetime(StatusCode::OK, &h, &cc(), at(1000), cap),
        Lifetime::Heuristic(50)
    );
}

#[test]
fn rfc9111_4_2_2_no_heuristic_for_statuses_not_heuristically_cacheable() {
    let h = headers(&[("last-modified", date(at(0)))]);
    for status in [302, 307, 500, 503] {
        let s = StatusCode::from_u16(status).unwrap();
        assert_eq!(
            lifetime(s, &h, &cc(), at(1000), Heuristic::default()),
            Lifetime::None,
            "{status}"
        );
    }
    // `public` makes it explicitly cacheable, so a heuristic applies.
    let public = ResponseDirectives {
        public: true,
        ..cc()
    };
    assert_eq!(
        lifetime(
            StatusCode::FOUND,
            &h,
            &public,
            at(1000),
            Heuristic::default()
        ),
        Lifetime::Heuristic(100)
    );
}

#[test]
fn rfc9110_15_1_heuristically_cacheable_statuses() {
    for s in [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501] {
        assert!(
            heuristically_cacheable(StatusCode::from_u16(s).unwrap()),
            "{s}"
        );
    }
    for s in [201, 302, 303, 307, 400, 403, 500, 502, 503, 504] {
        assert!(
            !heuristically_cacheable(StatusCode::from_u16(s).unwrap()),
            "{s}"
        );
    }
}

fn req() -> RequestDirectives {
    RequestDirectives::default()
}

#[test]
fn rfc9111_4_2_fresh_while_lifetime_exceeds_age() {
    assert_eq!(usability(&cc(), &req(), 60, 59), Usability::Fresh);
    assert_eq!(usability(&cc(), &req(), 60, 60), Usability::Validate);
}

#[test]
fn rfc9111_5_2_2_4_no_cache_response_always_validates() {
    let d = ResponseDirectives {
        no_cache: FieldList::All,
        max_age: Some(60),
        ..cc()
    };
    assert_eq!(usability(&d, &req(), 60, 0), Usability::Validate);
}

#[test]
fn rfc9111_5_2_1_4_no_cache_request_validates() {
    let r = RequestDirectives {
        no_cache: true,
        ..req()
    };
    assert_eq!(usability(&cc(), &r, 60, 0), Usability::Validate);
}

#[test]
fn rfc9111_5_2_1_1_request_max_age_limits_the_age() {
    let r = RequestDirectives {
        max_age: Some(10),
        ..req()
    };
    assert_eq!(usability(&cc(), &r, 60, 10), Usability::Fresh);
    assert_eq!(usability(&cc(), &r, 60, 11), Usability::Validate);
}

#[test]
fn rfc9111_5_2_1_3_min_fresh_needs_that_much_freshness_left() {
    let r = RequestDirectives {
        min_fresh: Some(30),
        ..req()
    };
    assert_eq!(usability(&cc(), &r, 60, 30), Usability::Fresh);
    assert_eq!(usability(&cc(), &r, 60, 31), Usability::Validate);
}

#[test]
fn rfc9111_5_2_1_2_max_stale_accepts_stale_responses() {
    let any = RequestDirectives {
        max_stale: Some(MaxStale::Any),
        ..req()
    };
    assert_eq!(usability(&cc(), &any, 60, 1000), Usability::StaleAllowed);
    let some = RequestDirectives {
        max_stale: Some(MaxStale::Seconds(10)),
        ..req()
    };
    assert_eq!(usability(&cc(), &some, 60, 70), Usability::StaleAllowed);
    assert_eq!(usability(&cc(), &some, 60, 71), Usability::Validate);
}

#[test]
fn rfc9111_4_2_4_must_revalidate_and_s_maxage_forbid_stale() {
    let any = RequestDirectives {
        max_stale: Some(MaxStale::Any),
        ..req()
    };
    for d in [
        ResponseDirectives {
            must_revalidate: true,
            ..cc()
        },
        ResponseDirectives {
            proxy_revalidate: true,
            ..cc()
        },
        ResponseDirectives {
            s_maxage: Some(60),
            ..cc()
        },
    ] {
        assert_eq!(usability(&d, &any, 60, 100), Usability::Validate);
        assert!(!stale_if_error(
            &ResponseDirectives {
                stale_if_error: Some(1000),
                ..d.clone()
            },
            &req(),
            10
        ));
    }
}

#[test]
fn rfc5861_3_stale_while_revalidate_window() {
    let d = ResponseDirectives {
        max_age: Some(60),
        stale_while_revalidate: Some(30),
        ..cc()
    };
    assert_eq!(
        usability(&d, &req(), 60, 90),
        Usability::StaleWhileRevalidate
    );
    assert_eq!(usability(&d, &req(), 60, 91), Usability::Validate);
}

#[test]
fn rfc5861_4_stale_if_error_window_from_response_or_request() {
    let d = ResponseDirectives {
        stale_if_error: Some(30),
        ..cc()
    };
    assert!(stale_if_error(&d, &req(), 30));
    assert!(!stale_if_error(&d, &req(), 31));
    let r = RequestDirectives {
        stale_if_error: Some(100),
        ..req()
    };
    assert!(stale_if_error(&cc(), &r, 100));
    assert!(!stale_if_error(&cc(), &req(), 0));
}

proptest! {
    /// RFC 9111 section 4.2.3: the current age never decreases with time and never falls
    /// below the Age the response arrived with.
    #[test]
    fn age_is_monotonic_and_at_least_the_age_header(
        date_off in 0u64..100_000,
        req_off in 0u64..100_000,
        delay in 0u64..1000,
        age in 0u64..1_000_000,
        later in 0u64..1_000_000,
    ) {
        let request_time = at(req_off);
        let response_time = at(req_off + delay);
        let h = headers(&[("date", date(at(date_off))), ("age", age.to_string())]);
        let ex = Exchange::new(&h, request_time, response_time);
        let now = ex.current_age(response_time);
        prop_assert!(now >= age);
        prop_assert!(ex.current_age(at(req_off + delay + later)) >= now);
        prop_assert_eq!(ex.current_age(at(req_off + delay + later)), now + later);
    }

    /// A response is fresh exactly while its lifetime exceeds its age, absent directives.
    #[test]
    fn fresh_iff_lifetime_exceeds_age(lifetime in 0u64..10_000, age in 0u64..10_000) {
        let fresh = usability(&cc(), &req(), lifetime, age) == Usability::Fresh;
        prop_assert_eq!(fresh, lifetime > age);
    }
}

use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::*;
use crate::directives::{FieldList, ResponseDirectives};
use crate::freshness::Lifetime;

fn get() -> RequestFacts<'static> {
    static GET: Method = Method::GET;
    RequestFacts {
        method: &GET,
        authorization: false,
        no_store: false,
        content_location_is_target: false,
    }
}

fn max_age(n: u64) -> ResponseDirectives {
    ResponseDirectives {
        max_age: Some(n),
        ..ResponseDirectives::default()
    }
}

fn ok(cc: &ResponseDirectives) -> Result<(), NotStored> {
    let lifetime = cc.max_age.map_or(Lifetime::None, Lifetime::Explicit);
    check(get(), StatusCode::OK, &HeaderMap::new(), cc, lifetime)
}

#[test]
fn rfc9111_3_fresh_get_is_stored() {
    assert_eq!(ok(&max_age(60)), Ok(()));
}

#[test]
fn rfc9111_3_other_methods_are_not_stored() {
    static PUT: Method = Method::PUT;
    let facts = RequestFacts {
        method: &PUT,
        ..get()
    };
    let cc = max_age(60);
    assert_eq!(
        check(
            facts,
            StatusCode::OK,
            &HeaderMap::new(),
            &cc,
            Lifetime::Explicit(60)
        ),
        Err(NotStored::Method)
    );
}

#[test]
fn rfc9110_9_3_3_post_needs_explicit_freshness_and_content_location() {
    static POST: Method = Method::POST;
    let cc = max_age(60);
    let without = RequestFacts {
        method: &POST,
        ..get()
    };
    assert_eq!(
        check(
            without,
            StatusCode::OK,
            &HeaderMap::new(),
            &cc,
            Lifetime::Explicit(60)
        ),
        Err(NotStored::Method)
    );
    let with = RequestFacts {
        method: &POST,
        content_location_is_target: true,
        ..get()
    };
    assert_eq!(
        check(
            with,
            StatusCode::OK,
            &HeaderMap::new(),
            &cc,
            Lifetime::Explicit(60)
        ),
        Ok(())
    );
}

#[test]
fn rfc9111_3_partial_and_not_modified_are_not_stored() {
    let cc = max_age(60);
    for s in [StatusCode::PARTIAL_CONTENT, StatusCode::NOT_MODIFIED] {
        assert_eq!(
            check(get(), s, &HeaderMap::new(), &cc, Lifetime::Explicit(60)),
            Err(NotStored::Status)
        );
    }
}

#[test]
fn rfc9111_5_2_2_5_no_store() {
    let cc = ResponseDirectives {
        no_store: true,
        ..max_age(60)
    };
    assert_eq!(ok(&cc), Err(NotStored::NoStore));
}

#[test]
fn rfc9111_5_2_1_5_request_no_store() {
    let facts = RequestFacts {
        no_store: true,
        ..get()
    };
    let cc = max_age(60);
    assert_eq!(
        check(
            facts,
            StatusCode::OK,
            &HeaderMap::new(),
            &cc,
            Lifetime::Explicit(60)
        ),
        Err(NotStored::NoStore)
    );
}

#[test]
fn rfc9111_5_2_2_3_must_understand_overrides_no_store_for_known_statuses() {
    let cc = ResponseDirectives {
        no_store: true,
        must_understand: true,
        ..max_age(60)
    };
    assert_eq!(ok(&cc), Ok(()));
    let odd = StatusCode::from_u16(299).unwrap();
    assert_eq!(
        check(get(), odd, &HeaderMap::new(), &cc, Lifetime::Explicit(60)),
        Err(NotStored::MustUnderstand)
    );
}

#[test]
fn rfc9111_5_2_2_7_private_is_not_stored_but_qualified_private_is() {
    let all = ResponseDirectives {
        private: FieldList::All,
        ..max_age(60)
    };
    assert_eq!(ok(&all), Err(NotStored::Private));
    let field = ResponseDirectives {
        private: FieldList::Fields(vec![http::header::SET_COOKIE]),
        ..max_age(60)
    };
    assert_eq!(ok(&field), Ok(()));
    let mut h = HeaderMap::new();
    h.insert("set-cookie", HeaderValue::from_static("a=1"));
    h.insert("x-other", HeaderValue::from_static("kept"));
    strip_unstored(&mut h, &field);
    assert!(!h.contains_key("set-cookie"));
    assert!(h.contains_key("x-other"));
}

#[test]
fn rfc9111_3_5_authorization_needs_public_s_maxage_or_must_revalidate() {
    let facts = RequestFacts {
        authorization: true,
        ..get()
    };
    let plain = max_age(60);
    assert_eq!(
        check(
            facts,
            StatusCode::OK,
            &HeaderMap::new(),
            &plain,
            Lifetime::Explicit(60)
        ),
        Err(NotStored::Authorization)
    );
    for cc in [
        ResponseDirectives {
            public: true,
            ..max_age(60)
        },
        ResponseDirectives {
            must_revalidate: true,
            ..max_age(60)
        },
        ResponseDirectives {
            s_maxage: Some(60),
            ..ResponseDirectives::default()
        },
    ] {
        assert_eq!(
            check(
                facts,
                StatusCode::OK,
                &HeaderMap::new(),
                &cc,
                Lifetime::Explicit(60)
            ),
            Ok(())
        );
    }
}

#[test]
fn rfc9111_4_1_vary_star_is_not_stored() {
    let mut h = HeaderMap::new();
    h.insert("vary", HeaderValue::from_static("Accept, *"));
    let cc = max_age(60);
    assert_eq!(
        check(get(), StatusCode::OK, &h, &cc, Lifetime::Explicit(60)),
        Err(NotStored::VaryStar)
    );
}

#[test]
fn rfc9111_3_non_heuristic_status_needs_explicit_freshness() {
    let none = ResponseDirectives::default();
    assert_eq!(
        check(
            get(),
            StatusCode::FOUND,
            &HeaderMap::new(),
            &none,
            Lifetime::None
        ),
        Err(NotStored::Unusable)
    );
    let cc = max_age(60);
    assert_eq!(
        check(
            get(),
            StatusCode::INTERNAL_SERVER_ERROR,
            &HeaderMap::new(),
            &cc,
            Lifetime::Explicit(60)
        ),
        Ok(())
    );
}

#[test]
fn responses_without_freshness_or_validator_are_not_stored() {
    let none = ResponseDirectives::default();
    assert_eq!(
        check(
            get(),
            StatusCode::OK,
            &HeaderMap::new(),
            &none,
            Lifetime::None
        ),
        Err(NotStored::Unusable)
    );
    let mut h = HeaderMap::new();
    h.insert("etag", HeaderValue::from_static("\"v1\""));
    assert_eq!(
        check(get(), StatusCode::OK, &h, &none, Lifetime::None),
        Ok(())
    );
}

#[test]
fn rfc9111_3_1_hop_by_hop_and_nominated_fields_are_not_stored() {
    let mut h = HeaderMap::new();
    h.insert("connection", HeaderValue::from_static("x-foo"));
    h.insert("x-foo", HeaderValue::from_static("1"));
    h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    h.insert("proxy-authenticate", HeaderValue::from_static("Basic"));
    h.insert("x-kept", HeaderValue::from_static("1"));
    strip_unstored(&mut h, &ResponseDirectives::default());
    assert_eq!(h.len(), 1);
    assert!(h.contains_key("x-kept"));
}

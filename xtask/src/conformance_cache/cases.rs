//! The caching cases. Each scripts the origin for its own paths ([`Tc::path`]), sends requests
//! through the proxy and judges the responses and the requests that reached the origin.
//!
//! Staleness is made without waiting wherever the RFC allows it: an `Age` field or an old
//! `Date` from the origin makes a response stale on arrival (RFC 9111 section 4.2.3). Only the
//! cases about the passage of time sleep.
//!
//! The table is here; the checks are in one module per area: [`store`] (section 3, with
//! Authorization), [`freshness`] (section 4.2, Vary and the key), [`validation`] (section 4.3
//! and the request's directives), [`stale`] (section 4.2.4, RFC 5861), [`invalidation`]
//! (section 4.4, the admin purge) and [`fields`] (stored fields, ranges, RFC 9213, RFC 9211).

mod fields;
mod freshness;
mod invalidation;
mod stale;
mod store;
mod validation;

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

use super::client::{Req, Resp};
use super::origin::{Reply, Seen, http_date};
use super::{Case, Tc};

/// A table row: `case!(name, reference, async fn)`.
macro_rules! case {
    ($name:expr, $reference:expr, $check:expr) => {
        Case {
            name: $name,
            reference: $reference,
            check: |t| Box::pin($check(t)),
        }
    };
}

/// Every case, in the order they are printed.
pub(crate) fn all() -> Vec<Case> {
    vec![
        // RFC 9111 section 3: what a shared cache may store.
        case!(
            "store: fresh 200 is reused",
            "RFC 9111 §4",
            store::fresh_reused
        ),
        case!(
            "store: no-store is not stored",
            "RFC 9111 §5.2.2.5",
            store::no_store
        ),
        case!(
            "store: private is not stored by a shared cache",
            "RFC 9111 §5.2.2.7",
            store::private
        ),
        case!(
            "store: qualified private stores the rest without the listed field",
            "RFC 9111 §5.2.2.7",
            store::private_qualified
        ),
        case!(
            "store: s-maxage alone makes a response reusable",
            "RFC 9111 §5.2.2.10",
            store::s_maxage_alone
        ),
        case!(
            "store: no-cache response is not reused without validation",
            "RFC 9111 §5.2.2.4",
            store::no_cache_response
        ),
        case!(
            "store: must-understand with an understood status overrides no-store",
            "RFC 9111 §5.2.2.3",
            store::must_understand_known
        ),
        case!(
            "store: must-understand with an unknown status is not stored",
            "RFC 9111 §3, §5.2.2.3",
            store::must_understand_unknown
        ),
        case!(
            "store: 206 from the origin is not served as a full response",
            "RFC 9111 §3.3",
            store::partial_not_full
        ),
        case!(
            "store: Vary: * is never reused",
            "RFC 9111 §4.1",
            store::vary_star
        ),
        case!(
            "store: unknown directives are ignored",
            "RFC 9111 §5.2.3",
            store::unknown_directives
        ),
        case!(
            "store: directive names are case-insensitive",
            "RFC 9111 §5.2",
            store::directive_case
        ),
        case!(
            "store: quoted max-age is accepted",
            "RFC 9111 §5.2",
            store::quoted_max_age
        ),
        case!(
            "store: max-age beyond 2^31 is capped, still fresh",
            "RFC 9111 §1.2.2",
            store::huge_max_age
        ),
        case!(
            "store: heuristic 200 with Last-Modified",
            "RFC 9111 §4.2.2, RFC 9110 §15.1",
            store::heuristic::<200>
        ),
        case!(
            "store: heuristic 203 with Last-Modified",
            "RFC 9111 §4.2.2, RFC 9110 §15.1",
            store::heuristic::<203>
        ),
        case!(
            "store: heuristic 204 with Last-Modified",
            "RFC 9111 §4.2.2, RFC 9110 §15.1",
            store::heuristic::<204>
        ),
        case!(
            "store: heuristic 300 with Last-Modified",
            "RFC 9111 §4.2.2, RFC 9110 §15.1",
            store::heuristic::<300>
        ),
        case!(
            "store: heuristic 301 with Last-Modified",
            "RFC 9111 §4.2.2, RFC 9110 §15.1",
            store::heuristic::<301>
        ),
        case!(
            "store: heuristic 308 with Last-Modified",
            "RFC 9111 §4.2.2, RFC 9110 §15.1",
            store::heuristic::<308>
        ),
        case!(
            "store: heuristic 404 with Last-Modified",
            "RFC 9111 §4.2.2, RFC 9110 §15.1",
            store::heuristic::<404>
        ),
        case!(
            "store: heuristic 405 with Last-Modified",
            "RFC 9111 §4.2.2, RFC 9110 §15.1",
            store::heuristic::<405>
        ),
        case!(
            "store: heuristic 410 with Last-Modified",
            "RFC 9111 §4.2.2, RFC 9110 §15.1",
            store::heuristic::<410>
        ),
        case!(
            "store: heuristic 414 with Last-Modified",
            "RFC 9111 §4.2.2, RFC 9110 §15.1",
            store::heuristic::<414>
        ),
        case!(
            "store: heuristic 501 with Last-Modified",
            "RFC 9111 §4.2.2, RFC 9110 §15.1",
            store::heuristic::<501>
        ),
        case!(
            "store: 302 only with explicit freshness",
            "RFC 9111 §3, §4.2.2",
            store::explicit_only::<302>
        ),
        case!(
            "store: 307 only with explicit freshness",
            "RFC 9111 §3, §4.2.2",
            store::explicit_only::<307>
        ),
        case!(
            "store: 500 only with explicit freshness",
            "RFC 9111 §3, §4.2.2",
            store::explicit_only::<500>
        ),
        case!(
            "store: 503 only with explicit freshness",
            "RFC 9111 §3, §4.2.2",
            store::explicit_only::<503>
        ),
        // RFC 9111 section 3.5.
        case!(
            "auth: Authorization with max-age only is not reused",
            "RFC 9111 §3.5",
            store::auth_plain
        ),
        case!(
            "auth: Authorization with public is reused",
            "RFC 9111 §3.5",
            store::auth_public
        ),
        case!(
            "auth: Authorization with s-maxage is reused",
            "RFC 9111 §3.5",
            store::auth_s_maxage
        ),
        case!(
            "auth: Authorization with must-revalidate is reused",
            "RFC 9111 §3.5",
            store::auth_must_revalidate
        ),
        // RFC 9111 section 4.2: freshness.
        case!(
            "fresh: s-maxage takes precedence over max-age",
            "RFC 9111 §4.2.1, §5.2.2.10",
            freshness::s_maxage_over_max_age
        ),
        case!(
            "fresh: max-age takes precedence over Expires",
            "RFC 9111 §4.2.1, §5.3",
            freshness::max_age_over_expires
        ),
        case!(
            "fresh: Expires in the future is fresh, in the past stale",
            "RFC 9111 §5.3",
            freshness::expires
        ),
        case!(
            "fresh: invalid Expires (0) is stale",
            "RFC 9111 §5.3",
            freshness::expires_invalid
        ),
        case!(
            "fresh: Age counts toward the current age",
            "RFC 9111 §4.2.3",
            freshness::age_counts
        ),
        case!(
            "fresh: an old Date makes the response stale",
            "RFC 9111 §4.2.3",
            freshness::old_date
        ),
        case!(
            "fresh: no heuristics when Expires is present",
            "RFC 9111 §4.2.2",
            freshness::no_heuristic_with_expires
        ),
        case!(
            "fresh: invalid Age is ignored",
            "RFC 9111 §5.1",
            freshness::age_invalid
        ),
        case!(
            "fresh: Age list uses its first member",
            "RFC 9111 §5.1",
            freshness::age_list
        ),
        case!(
            "fresh: duplicate max-age is stale or the first wins",
            "RFC 9111 §4.2.1",
            freshness::duplicate_max_age
        ),
        case!(
            "fresh: max-age=0 is revalidated",
            "RFC 9111 §4.2.1, §4.3.1",
            freshness::max_age_zero
        ),
        case!(
            "fresh: max-age=2 expires after 2 seconds",
            "RFC 9111 §4.2",
            freshness::expires_in_time
        ),
        case!(
            "fresh: Age on a hit, at least the origin's Age",
            "RFC 9111 §4, §5.1",
            freshness::age_on_hit
        ),
        case!(
            "fresh: Age grows while the response is stored",
            "RFC 9111 §4.2.3",
            freshness::age_grows
        ),
        // RFC 9111 section 4.1: Vary.
        case!(
            "vary: same field value is reused",
            "RFC 9111 §4.1",
            freshness::vary_match
        ),
        case!(
            "vary: different field value goes forward",
            "RFC 9111 §4.1",
            freshness::vary_mismatch
        ),
        case!(
            "vary: two fields, both matching, is reused",
            "RFC 9111 §4.1",
            freshness::vary_two_match
        ),
        case!(
            "vary: field values differing in case do not match",
            "RFC 9111 §4.1",
            freshness::vary_value_case
        ),
        case!(
            "vary: two fields, one differing, goes forward",
            "RFC 9111 §4.1",
            freshness::vary_two_differ
        ),
        case!(
            "vary: an absent field matches only its absence",
            "RFC 9111 §4.1",
            freshness::vary_absent
        ),
        case!(
            "vary: field names are case-insensitive",
            "RFC 9111 §4.1",
            freshness::vary_name_case
        ),
        case!(
            "vary: whitespace after commas is normalised",
            "RFC 9111 §4.1",
            freshness::vary_whitespace
        ),
        // RFC 9111 section 4.3: validation.
        case!(
            "validate: stale with ETag sends If-None-Match",
            "RFC 9111 §4.3.1",
            validation::validate_etag
        ),
        case!(
            "validate: stale with Last-Modified sends If-Modified-Since",
            "RFC 9111 §4.3.1",
            validation::validate_last_modified
        ),
        case!(
            "validate: 304 freshens the stored response",
            "RFC 9111 §4.3.4",
            validation::freshen
        ),
        case!(
            "validate: 304 updates the stored fields",
            "RFC 9111 §3.2, §4.3.4",
            validation::freshen_updates
        ),
        case!(
            "validate: Content-Length of a 304 is not stored",
            "RFC 9111 §3.2",
            validation::freshen_content_length
        ),
        case!(
            "validate: 200 on revalidation replaces the stored response",
            "RFC 9111 §4.3.3",
            validation::revalidated_200
        ),
        case!(
            "validate: client If-None-Match answered from the cache",
            "RFC 9111 §4.3.2",
            validation::client_inm
        ),
        case!(
            "validate: client If-Modified-Since answered from the cache",
            "RFC 9111 §4.3.2",
            validation::client_ims
        ),
        case!(
            "validate: HEAD answered from a stored GET",
            "RFC 9111 §4, RFC 9110 §9.3.2",
            validation::head_from_get
        ),
        // RFC 9111 section 5.2.1: request directives.
        case!(
            "request: no-cache goes forward",
            "RFC 9111 §4, §5.2.1.4",
            validation::req_no_cache
        ),
        case!(
            "request: max-age=0 goes forward",
            "RFC 9111 §5.2.1.1",
            validation::req_max_age_zero
        ),
        case!(
            "request: max-age serves within it, forwards beyond",
            "RFC 9111 §5.2.1.1",
            validation::req_max_age
        ),
        case!(
            "request: max-stale serves a stale response",
            "RFC 9111 §5.2.1.2, §4.2.4",
            validation::req_max_stale
        ),
        case!(
            "request: max-stale smaller than the staleness goes forward",
            "RFC 9111 §5.2.1.2",
            validation::req_max_stale_short
        ),
        case!(
            "request: min-fresh forwards when too little freshness is left",
            "RFC 9111 §5.2.1.3",
            validation::req_min_fresh
        ),
        case!(
            "request: only-if-cached answers 504 when nothing is stored",
            "RFC 9111 §5.2.1.7",
            validation::req_only_if_cached
        ),
        case!(
            "request: no-store response is not stored",
            "RFC 9111 §5.2.1.5",
            validation::req_no_store
        ),
        case!(
            "request: Pragma: no-cache without Cache-Control goes forward",
            "RFC 9111 §5.4",
            validation::req_pragma
        ),
        // RFC 9111 section 4.2.4 and RFC 5861: serving stale.
        case!(
            "stale: must-revalidate is not served stale",
            "RFC 9111 §5.2.2.2",
            stale::must_revalidate
        ),
        case!(
            "stale: proxy-revalidate is not served stale",
            "RFC 9111 §5.2.2.8",
            stale::proxy_revalidate
        ),
        case!(
            "stale: stale s-maxage is not served stale",
            "RFC 9111 §5.2.2.10",
            stale::s_maxage_stale
        ),
        case!(
            "stale: stale-while-revalidate serves stale, one background request",
            "RFC 5861 §3",
            stale::stale_while_revalidate
        ),
        case!(
            "stale: stale-while-revalidate window over goes forward",
            "RFC 5861 §3, RFC 9111 §4.2.4",
            stale::swr_expired
        ),
        case!(
            "stale: stale-if-error on 500 and 503",
            "RFC 5861 §4",
            stale::stale_if_error
        ),
        case!(
            "stale: a 500 without stale-if-error is passed on",
            "RFC 9111 §4.2.4",
            stale::error_passed_on
        ),
        case!(
            "stale: must-revalidate overrides stale-if-error",
            "RFC 9111 §4.2.4, §5.2.2.2",
            stale::must_revalidate_beats_stale_if_error
        ),
        case!(
            "stale: must-revalidate overrides stale-while-revalidate",
            "RFC 9111 §4.2.4, §5.2.2.2",
            stale::must_revalidate_beats_swr
        ),
        case!(
            "stale: stale-if-error as a request directive",
            "RFC 5861 §4",
            stale::stale_if_error_request
        ),
        // RFC 9111 section 4.4: invalidation.
        case!(
            "invalidate: POST 2xx invalidates the target URI",
            "RFC 9111 §4.4",
            invalidation::invalidate_post
        ),
        case!(
            "invalidate: PUT 2xx invalidates the target URI",
            "RFC 9111 §4.4",
            invalidation::invalidate_put
        ),
        case!(
            "invalidate: DELETE 2xx invalidates the target URI",
            "RFC 9111 §4.4",
            invalidation::invalidate_delete
        ),
        case!(
            "invalidate: PATCH 2xx invalidates the target URI",
            "RFC 9111 §4.4",
            invalidation::invalidate_patch
        ),
        case!(
            "invalidate: unknown method 2xx invalidates the target URI",
            "RFC 9111 §4.4",
            invalidation::invalidate_unknown
        ),
        case!(
            "invalidate: POST 303 invalidates the target URI",
            "RFC 9111 §4.4",
            invalidation::invalidate_redirect
        ),
        case!(
            "invalidate: same-origin Location",
            "RFC 9111 §4.4",
            invalidation::invalidate_location
        ),
        case!(
            "invalidate: same-origin absolute Content-Location",
            "RFC 9111 §4.4",
            invalidation::invalidate_content_location
        ),
        case!(
            "invalidate: Location of another origin is left alone",
            "RFC 9111 §4.4",
            invalidation::invalidate_cross_origin
        ),
        case!(
            "invalidate: error response does not invalidate",
            "RFC 9111 §4.4",
            invalidation::invalidate_error
        ),
        case!(
            "invalidate: every Vary variant of the URI",
            "RFC 9111 §4.4",
            invalidation::invalidate_variants
        ),
        case!(
            "invalidate: GET does not invalidate Content-Location",
            "RFC 9111 §4.4",
            invalidation::invalidate_not_by_get
        ),
        // RFC 9111 section 3.1 and RFC 9110 sections 6.6.1 and 7.6.1: what is stored.
        case!(
            "fields: Connection-nominated fields are not stored",
            "RFC 9111 §3.1, RFC 9110 §7.6.1",
            fields::connection_nominated
        ),
        case!(
            "fields: Keep-Alive is not served from the cache",
            "RFC 9111 §3.1, RFC 9110 §7.6.1",
            fields::keep_alive_field
        ),
        case!(
            "fields: the origin's Date is kept on hits",
            "RFC 9111 §4.2.3, RFC 9110 §6.6.1",
            fields::date_kept
        ),
        case!(
            "fields: Date is added when the origin sent none",
            "RFC 9110 §6.6.1",
            fields::date_added
        ),
        // RFC 9110 section 14: ranges from a stored response.
        case!(
            "range: byte ranges from a stored response",
            "RFC 9110 §14.2, §15.3.7",
            fields::range_from_store
        ),
        case!(
            "range: unsatisfiable range gets 416",
            "RFC 9110 §14.2, §15.5.17",
            fields::range_unsatisfiable
        ),
        case!(
            "range: If-Range with another validator gets the full response",
            "RFC 9110 §13.1.5",
            fields::if_range_mismatch
        ),
        // RFC 9213.
        case!(
            "cdn: CDN-Cache-Control max-age overrides Cache-Control no-store",
            "RFC 9213 §2.1",
            fields::cdn_max_age
        ),
        case!(
            "cdn: CDN-Cache-Control no-store overrides Cache-Control max-age",
            "RFC 9213 §2.1",
            fields::cdn_no_store
        ),
        case!(
            "cdn: CDN-Cache-Control max-age overrides a longer max-age",
            "RFC 9213 §2.1",
            fields::cdn_shorter
        ),
        case!(
            "cdn: invalid CDN-Cache-Control falls back to Cache-Control",
            "RFC 9213 §2.1",
            fields::cdn_invalid
        ),
        // RFC 9211.
        case!(
            "status: miss stored, then hit with ttl",
            "RFC 9211 §2",
            fields::status_miss_hit
        ),
        case!(
            "status: a response not stored has no `stored`",
            "RFC 9211 §2.4, §2.5",
            fields::status_not_stored
        ),
        case!(
            "status: Vary mismatch is fwd=vary-miss",
            "RFC 9211 §2.2",
            fields::status_vary_miss
        ),
        case!(
            "status: revalidation is fwd=stale with fwd-status=304",
            "RFC 9211 §2.2, §2.3",
            fields::status_revalidated
        ),
        // RFC 9111 section 4: the cache key.
        case!(
            "key: the query is part of the key",
            "RFC 9111 §2, §4",
            freshness::key_query
        ),
        case!(
            "key: the host is part of the key",
            "RFC 9111 §2, §4",
            freshness::key_host
        ),
        case!(
            "admin: DELETE /cache?url= purges the stored response",
            "proxy-bin [admin]",
            invalidation::admin_purge
        ),
    ]
}

// --- helpers ---------------------------------------------------------------------------------

/// An IMF-fixdate `secs` seconds ago.
fn ago(secs: u64) -> String {
    http_date(
        SystemTime::now()
            .checked_sub(Duration::from_secs(secs))
            .unwrap_or(SystemTime::UNIX_EPOCH),
    )
}

/// An IMF-fixdate `secs` seconds from now.
fn ahead(secs: u64) -> String {
    http_date(SystemTime::now() + Duration::from_secs(secs))
}

/// Ten days ago: a `Last-Modified` that gives a heuristic lifetime of a day (10%, capped).
fn long_ago() -> String {
    ago(10 * 24 * 3600)
}

/// `200` with `body`, fresh for an hour.
fn fresh(body: &str) -> Reply {
    Reply::ok(body).cc("max-age=3600")
}

/// `200` with `body`, `max-age=1` and `Age: 5`: stale on arrival by four seconds.
fn stale(body: &str, extra: &str) -> Reply {
    let cc = if extra.is_empty() {
        "max-age=1".to_owned()
    } else {
        format!("max-age=1, {extra}")
    };
    Reply::ok(body).cc(&cc).h("age", "5")
}

/// GETs `path` (answered by `reply`) twice; the second must come from the cache.
async fn expect_reused(t: &Tc, path: &str, reply: Reply) -> Result<Resp> {
    expect_reused_with(t, path, reply, Req::get(path)).await
}

/// Sends `req` twice (answered by `reply`); the second must come from the cache.
async fn expect_reused_with(t: &Tc, path: &str, reply: Reply, req: Req) -> Result<Resp> {
    t.script(path, vec![reply]);
    t.send(req.clone()).await?;
    let second = t.send(req).await?;
    t.reused(path, &second)?;
    Ok(second)
}

/// GETs `path` (answered by `reply`) twice; both must reach the origin.
async fn expect_forwarded(t: &Tc, path: &str, reply: Reply) -> Result<Resp> {
    expect_forwarded_with(t, path, reply, Req::get(path)).await
}

/// Sends `req` twice (answered by `reply`); both must reach the origin.
async fn expect_forwarded_with(t: &Tc, path: &str, reply: Reply, req: Req) -> Result<Resp> {
    t.script(path, vec![reply]);
    t.send(req.clone()).await?;
    let second = t.send(req).await?;
    t.origin_saw(path, 2, &second)
        .context("reused where the request had to go to the origin")?;
    Ok(second)
}

/// The requests the origin saw, one summary each, for failure messages.
fn summaries(seen: &[Seen]) -> String {
    seen.iter()
        .map(Seen::summary)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use anyhow::bail;

    use super::*;

    #[test]
    fn case_names_are_unique() {
        let cases = all();
        let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), cases.len());
    }

    #[test]
    fn dates_round_trip() -> Result<()> {
        let date = ago(30);
        let parsed = httpdate::parse_http_date(&date)?;
        let elapsed = SystemTime::now().duration_since(parsed)?;
        if !(29..=31).contains(&elapsed.as_secs()) {
            bail!("{date} is {elapsed:?} ago");
        }
        Ok(())
    }
}

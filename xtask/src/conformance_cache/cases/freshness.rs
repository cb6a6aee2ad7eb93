//! Freshness (RFC 9111 section 4.2), Vary (section 4.1) and the cache key (sections 2, 4).

use std::time::Duration;

use anyhow::{Context, ensure};

use super::{
    ago, ahead, expect_forwarded, expect_reused, expect_reused_with, fresh, long_ago, stale,
    summaries,
};
use crate::conformance_cache::client::Req;
use crate::conformance_cache::origin::Reply;
use crate::conformance_cache::{Outcome, Tc};

// --- freshness (RFC 9111 section 4.2) -------------------------------------------------------

/// Section 4.2.1: "If the cache is shared and the s-maxage response directive is present, use
/// its value".
pub(super) async fn s_maxage_over_max_age(t: Tc) -> Outcome {
    let a = t.path("fresh");
    let reply = Reply::ok("x").cc("max-age=1, s-maxage=3600").h("age", "5");
    expect_reused(&t, &a, reply)
        .await
        .context("max-age=1, s-maxage=3600, Age: 5")?;
    let b = t.path("stale");
    let reply = Reply::ok("x").cc("max-age=3600, s-maxage=1").h("age", "5");
    expect_forwarded(&t, &b, reply)
        .await
        .context("max-age=3600, s-maxage=1, Age: 5")?;
    Ok(None)
}

/// Section 5.3: "If a response includes a Cache-Control header field with the max-age
/// directive, a recipient MUST ignore the Expires header field".
pub(super) async fn max_age_over_expires(t: Tc) -> Outcome {
    let a = t.path("fresh");
    let reply = fresh("x").h("expires", &ago(3600));
    expect_reused(&t, &a, reply)
        .await
        .context("max-age=3600 with Expires in the past")?;
    let b = t.path("stale");
    let reply = stale("x", "").h("expires", &ahead(3600));
    expect_forwarded(&t, &b, reply)
        .await
        .context("max-age=1, Age: 5 with Expires in the future")?;
    Ok(None)
}

/// Section 4.2.1: the lifetime is `Expires` minus `Date`.
pub(super) async fn expires(t: Tc) -> Outcome {
    let a = t.path("future");
    expect_reused(&t, &a, Reply::ok("x").h("expires", &ahead(3600)))
        .await
        .context("Expires an hour ahead")?;
    let b = t.path("past");
    expect_forwarded(&t, &b, Reply::ok("x").h("expires", &ago(3600)))
        .await
        .context("Expires an hour ago")?;
    Ok(None)
}

/// Section 5.3: "A cache recipient MUST interpret invalid date formats, especially the value
/// "0", as representing a time in the past (i.e., "already expired")".
pub(super) async fn expires_invalid(t: Tc) -> Outcome {
    let p = t.path("doc");
    expect_forwarded(&t, &p, Reply::ok("x").h("expires", "0")).await?;
    Ok(None)
}

/// Section 4.2.3: `corrected_age_value = age_value + response_delay`.
pub(super) async fn age_counts(t: Tc) -> Outcome {
    let a = t.path("fresh");
    let reply = Reply::ok("x").cc("max-age=7200").h("age", "3600");
    expect_reused(&t, &a, reply)
        .await
        .context("max-age=7200, Age: 3600")?;
    let b = t.path("stale");
    let reply = Reply::ok("x").cc("max-age=3600").h("age", "7200");
    expect_forwarded(&t, &b, reply)
        .await
        .context("max-age=3600, Age: 7200")?;
    Ok(None)
}

/// Section 4.2.2: "A cache MUST NOT use heuristics to determine freshness when an explicit
/// expiration time is present in the stored response."
pub(super) async fn no_heuristic_with_expires(t: Tc) -> Outcome {
    let p = t.path("doc");
    let reply = Reply::ok("x")
        .h("expires", &ago(60))
        .h("last-modified", &long_ago());
    expect_forwarded(&t, &p, reply).await?;
    Ok(None)
}

/// Section 5.1: "If the field value ... is invalid (e.g., it contains something other than a
/// non-negative integer), a cache SHOULD ignore the field."
pub(super) async fn age_invalid(t: Tc) -> Outcome {
    let p = t.path("doc");
    expect_reused(&t, &p, fresh("x").h("age", "abc")).await?;
    Ok(None)
}

/// Section 5.1: "a cache encountering a message with a list-based Age field value SHOULD use
/// the first member of the field value, discarding subsequent ones". `Age: 7200, 0` with
/// `max-age=3600` is stale.
pub(super) async fn age_list(t: Tc) -> Outcome {
    let p = t.path("doc");
    expect_forwarded(&t, &p, fresh("x").h("age", "7200, 0")).await?;
    Ok(None)
}

/// Section 4.2.3: `apparent_age = max(0, response_time - date_value)`.
pub(super) async fn old_date(t: Tc) -> Outcome {
    let p = t.path("doc");
    expect_forwarded(&t, &p, fresh("x").h("date", &ago(7200))).await?;
    Ok(None)
}

/// Section 4.2.1: with more than one value for a directive, "either the first occurrence
/// should be used or the response should be considered stale". Either way, `max-age=1`
/// first with `Age: 5` is stale.
pub(super) async fn duplicate_max_age(t: Tc) -> Outcome {
    let a = t.path("one-line");
    let reply = Reply::ok("x").cc("max-age=1, max-age=3600").h("age", "5");
    expect_forwarded(&t, &a, reply)
        .await
        .context("Cache-Control: max-age=1, max-age=3600")?;
    let b = t.path("two-lines");
    let reply = Reply::ok("x")
        .cc("max-age=1")
        .cc("max-age=3600")
        .h("age", "5");
    expect_forwarded(&t, &b, reply)
        .await
        .context("two Cache-Control lines: max-age=1 / max-age=3600")?;
    Ok(None)
}

/// Sections 4.2.1 and 4.3.1: a response with `max-age=0` is stale at once; with a validator
/// the cache sends a conditional request and answers the `304` with the stored response.
pub(super) async fn max_age_zero(t: Tc) -> Outcome {
    let p = t.path("doc");
    let reply = Reply::ok("v1")
        .cc("max-age=0")
        .h("etag", "\"z\"")
        .validated();
    t.script(&p, vec![reply]);
    t.get(&p).await?;
    let second = t.get(&p).await?;
    let seen = t.seen(&p);
    ensure!(
        seen.len() == 2,
        "max-age=0 was not revalidated: the origin saw {} [{}]",
        seen.len(),
        summaries(&seen)
    );
    ensure!(
        seen[1].header("if-none-match") == Some("\"z\""),
        "the second request was not conditional: {}",
        seen[1].summary()
    );
    ensure!(
        second.status == 200 && second.text() == "v1",
        "the client got {}",
        second.summary()
    );
    Ok(None)
}

/// Section 4.2: `response_is_fresh = (freshness_lifetime > current_age)`, as time passes.
pub(super) async fn expires_in_time(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![Reply::ok("x").cc("max-age=2")]);
    t.get(&p).await?;
    let hit = t.get(&p).await?;
    t.reused(&p, &hit).context("while fresh")?;
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let after = t.get(&p).await?;
    t.origin_saw(&p, 2, &after)
        .context("3.2 s later, max-age=2 was still reused")?;
    Ok(None)
}

/// Section 4: "When a stored response is used to satisfy a request without validation, a
/// cache MUST generate an Age header field, replacing any present in the response with a
/// value equal to the stored response's current_age".
pub(super) async fn age_on_hit(t: Tc) -> Outcome {
    let p = t.path("doc");
    let hit = expect_reused(&t, &p, fresh("x").h("age", "100")).await?;
    let age = hit.age().context("the hit has no valid Age field")?;
    ensure!(
        age >= 100,
        "Age {age} on the hit is less than the origin's 100"
    );
    Ok(None)
}

/// Section 4.2.3: `resident_time = now - response_time` joins the current age.
pub(super) async fn age_grows(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![fresh("x")]);
    t.get(&p).await?;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let hit = t.get(&p).await?;
    t.reused(&p, &hit)?;
    let age = hit.age().context("the hit has no valid Age field")?;
    ensure!(age >= 2, "Age {age} after 2.1 s in the cache");
    Ok(None)
}

// --- Vary (RFC 9111 section 4.1) ------------------------------------------------------------

/// Section 4.1: the stored response is reused when the selecting fields match.
pub(super) async fn vary_match(t: Tc) -> Outcome {
    let p = t.path("doc");
    let req = Req::get(&p).h("x-lang", "en");
    expect_reused_with(&t, &p, fresh("en").h("vary", "x-lang"), req).await?;
    Ok(None)
}

/// Section 4.1: and not when they differ.
pub(super) async fn vary_mismatch(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![fresh("one").h("vary", "x-lang")]);
    t.send(Req::get(&p).h("x-lang", "en")).await?;
    let fr = t.send(Req::get(&p).h("x-lang", "fr")).await?;
    t.origin_saw(&p, 2, &fr)
        .context("the `en` variant answered an `fr` request")?;
    Ok(None)
}

/// Section 4.1: every listed field must match.
pub(super) async fn vary_two_match(t: Tc) -> Outcome {
    let p = t.path("doc");
    let req = Req::get(&p).h("x-a", "1").h("x-b", "2");
    expect_reused_with(&t, &p, fresh("x").h("vary", "x-a, x-b"), req).await?;
    Ok(None)
}

/// Section 4.1: the stored response is used only if "the selecting header fields nominated by
/// the stored response ... match"; values of an unknown field that differ in case are not
/// known to mean the same.
pub(super) async fn vary_value_case(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![fresh("x").h("vary", "x-token")]);
    t.send(Req::get(&p).h("x-token", "abc")).await?;
    let other = t.send(Req::get(&p).h("x-token", "ABC")).await?;
    t.origin_saw(&p, 2, &other)
        .context("x-token: abc stored, x-token: ABC answered from it")?;
    Ok(None)
}

/// Section 4.1: one differing field is enough to miss.
pub(super) async fn vary_two_differ(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![fresh("x").h("vary", "x-a, x-b")]);
    t.send(Req::get(&p).h("x-a", "1").h("x-b", "2")).await?;
    let other = t.send(Req::get(&p).h("x-a", "1").h("x-b", "3")).await?;
    t.origin_saw(&p, 2, &other)
        .context("a response varying on x-b answered another x-b")?;
    Ok(None)
}

/// Section 4.1: "If (after any normalization that might take place) a header field is absent
/// from a request, it can only match another request if it is also absent there."
pub(super) async fn vary_absent(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![fresh("x").h("vary", "x-lang")]);
    t.get(&p).await?;
    let again = t.get(&p).await?;
    t.reused(&p, &again).context("absent in both requests")?;
    let present = t.send(Req::get(&p).h("x-lang", "en")).await?;
    t.origin_saw(&p, 2, &present)
        .context("stored without x-lang, asked with x-lang: en")?;
    Ok(None)
}

/// Section 4.1 with RFC 9110 section 5.1: field names are case-insensitive.
pub(super) async fn vary_name_case(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![fresh("x").h("vary", "X-LANG")]);
    t.send(Req::get(&p).h("x-lang", "en")).await?;
    let same = t.send(Req::get(&p).h("X-Lang", "en")).await?;
    t.reused(&p, &same).context("Vary: X-LANG, same x-lang")?;
    let other = t.send(Req::get(&p).h("x-lang", "fr")).await?;
    t.origin_saw(&p, 2, &other)
        .context("Vary: X-LANG, another x-lang")?;
    Ok(None)
}

/// Section 4.1: the fields "can be normalized ... (e.g., removing whitespace where allowed in
/// the header field's syntax)" before they are compared.
pub(super) async fn vary_whitespace(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![fresh("x").h("vary", "x-list")]);
    t.send(Req::get(&p).h("x-list", "a, b")).await?;
    let same = t.send(Req::get(&p).h("x-list", "a,b")).await?;
    t.reused(&p, &same)
        .context("x-list: `a, b` stored, `a,b` asked")?;
    Ok(None)
}

// --- the cache key (RFC 9111 sections 2 and 4) ----------------------------------------------

/// Section 4: a stored response is reused only when "the presented target URI and that of the
/// stored response match"; the query is part of the URI.
pub(super) async fn key_query(t: Tc) -> Outcome {
    let one = t.path("doc?v=1");
    let two = t.path("doc?v=2");
    t.script(&one, vec![fresh("one")]);
    t.script(&two, vec![fresh("two")]);
    t.get(&one).await?;
    let other = t.get(&two).await?;
    ensure!(
        other.text() == "two" && t.seen(&two).len() == 1,
        "?v=2 got {} after ?v=1 was stored",
        other.summary()
    );
    Ok(None)
}

/// Section 4: the authority is part of the target URI.
pub(super) async fn key_host(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![fresh("v1"), fresh("v2")]);
    t.get(&p).await?;
    let other = t.send(Req::get(&p).host("other.test")).await?;
    t.origin_saw(&p, 2, &other)
        .context("the response for cache.test answered other.test")?;
    Ok(None)
}

//! What is stored and served besides freshness: hop-by-hop fields and Date (RFC 9111
//! section 3.1, RFC 9110), ranges (RFC 9110 section 14), CDN-Cache-Control (RFC 9213) and
//! Cache-Status (RFC 9211).

use anyhow::{Context, ensure};

use super::{ago, expect_forwarded, expect_reused, fresh, stale, summaries};
use crate::conformance_cache::client::Req;
use crate::conformance_cache::origin::Reply;
use crate::conformance_cache::{Outcome, Tc};

// --- stored fields (RFC 9111 section 3.1, RFC 9110) -----------------------------------------

/// RFC 9110 section 7.6.1: "a proxy or gateway MUST ... for each connection-option in this
/// field, remove any header or trailer field(s) from the message with the same name"; RFC
/// 9111 section 3.1 lets a cache do so before storage.
pub(super) async fn connection_nominated(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(
        &p,
        vec![fresh("x").h("connection", "x-foo").h("x-foo", "1")],
    );
    let miss = t.get(&p).await?;
    let hit = t.get(&p).await?;
    t.reused(&p, &hit)?;
    for (label, resp) in [("the miss", &miss), ("the hit", &hit)] {
        ensure!(
            resp.header("x-foo").is_none(),
            "{label} carries X-Foo, nominated by the origin's Connection: x-foo"
        );
        ensure!(
            !resp
                .header("connection")
                .is_some_and(|c| c.to_ascii_lowercase().contains("x-foo")),
            "{label} carries the origin's Connection: x-foo"
        );
    }
    Ok(None)
}

/// RFC 9110 section 7.6.1: "intermediaries SHOULD remove or replace fields that are known to
/// require removal before forwarding, whether or not they appear as a connection-option ...
/// Proxy-Connection, Keep-Alive, TE, Transfer-Encoding, Upgrade".
pub(super) async fn keep_alive_field(t: Tc) -> Outcome {
    let p = t.path("doc");
    let hit = expect_reused(&t, &p, fresh("x").h("keep-alive", "timeout=99")).await?;
    ensure!(
        hit.header("keep-alive").is_none(),
        "the hit carries the origin's Keep-Alive: {:?}",
        hit.header("keep-alive")
    );
    Ok(None)
}

/// RFC 9111 section 4.2.3 computes the age from the origin's `Date` (`date_value`) plus `Age`;
/// replacing `Date` on a hit would make downstream caches count the age twice.
pub(super) async fn date_kept(t: Tc) -> Outcome {
    let p = t.path("doc");
    let date = ago(30);
    let hit = expect_reused(&t, &p, fresh("x").h("date", &date)).await?;
    ensure!(
        hit.header("date") == Some(date.as_str()),
        "the hit's Date {:?} is not the origin's {date:?}",
        hit.header("date")
    );
    let age = hit.age().context("the hit has no valid Age")?;
    ensure!(age >= 30, "Age {age} on a response dated 30 s ago");
    Ok(None)
}

/// RFC 9110 section 6.6.1: "A recipient with a clock that receives a response message without
/// a Date header field MUST record the time it was received and append a corresponding Date
/// header field to the message's header section if it is cached or forwarded downstream."
pub(super) async fn date_added(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![fresh("x").without_date()]);
    let miss = t.get(&p).await?;
    let hit = t.get(&p).await?;
    t.reused(&p, &hit)?;
    for (label, resp) in [("the miss", &miss), ("the hit", &hit)] {
        let date = resp
            .header("date")
            .with_context(|| format!("{label} has no Date"))?;
        ensure!(
            httpdate::parse_http_date(date).is_ok(),
            "{label} has an invalid Date {date:?}"
        );
    }
    Ok(None)
}

// --- ranges (RFC 9110 section 14) -----------------------------------------------------------

/// RFC 9110 sections 14.2 and 15.3.7: a range of a stored full response is a 206 with
/// Content-Range; a suffix range counts from the end.
pub(super) async fn range_from_store(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![fresh("0123456789")]);
    t.get(&p).await?;
    for (range, body, content_range) in [
        ("bytes=2-5", "2345", "bytes 2-5/10"),
        ("bytes=-3", "789", "bytes 7-9/10"),
    ] {
        let part = t.send(Req::get(&p).h("range", range)).await?;
        ensure!(
            part.status == 206
                && part.text() == body
                && part.header("content-range") == Some(content_range),
            "Range: {range} got {} with Content-Range {:?}, expected 206 {body:?} with {content_range}",
            part.summary(),
            part.header("content-range")
        );
    }
    let seen = t.seen(&p);
    ensure!(
        seen.len() == 1,
        "the range requests reached the origin: [{}]",
        summaries(&seen)
    );
    Ok(None)
}

/// RFC 9110 section 15.5.17: 416 when no range is satisfiable; the server "SHOULD generate a
/// Content-Range header field specifying the current length of the selected representation".
pub(super) async fn range_unsatisfiable(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![fresh("0123456789")]);
    t.get(&p).await?;
    let resp = t.send(Req::get(&p).h("range", "bytes=20-30")).await?;
    ensure!(
        resp.status == 416 && resp.header("content-range") == Some("bytes */10"),
        "Range: bytes=20-30 of 10 bytes got {} with Content-Range {:?}",
        resp.summary(),
        resp.header("content-range")
    );
    Ok(None)
}

/// RFC 9110 section 13.1.5: when the If-Range validator does not match, the recipient "MUST
/// ignore the Range header field" and send the whole representation.
pub(super) async fn if_range_mismatch(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![fresh("0123456789").h("etag", "\"v1\"").ranged()]);
    t.get(&p).await?;
    let resp = t
        .send(Req::get(&p).h("range", "bytes=0-1").h("if-range", "\"v2\""))
        .await?;
    ensure!(
        resp.status == 200 && resp.text() == "0123456789",
        "If-Range: \"v2\" against \"v1\" got {}",
        resp.summary()
    );
    Ok(None)
}

// --- CDN-Cache-Control (RFC 9213) -----------------------------------------------------------

/// RFC 9213 section 2.1: the cache "MUST select the first (in target list order) field with a
/// valid, non-empty value and use its value to determine the caching policy for the response,
/// and it MUST ignore the Cache-Control and Expires header fields in that response".
pub(super) async fn cdn_max_age(t: Tc) -> Outcome {
    let p = t.path("doc");
    let reply = Reply::ok("x")
        .cc("no-store")
        .h("cdn-cache-control", "max-age=3600");
    expect_reused(&t, &p, reply).await?;
    Ok(None)
}

pub(super) async fn cdn_no_store(t: Tc) -> Outcome {
    let p = t.path("doc");
    let reply = fresh("x").h("cdn-cache-control", "no-store");
    expect_forwarded(&t, &p, reply).await?;
    Ok(None)
}

pub(super) async fn cdn_shorter(t: Tc) -> Outcome {
    let p = t.path("doc");
    let reply = fresh("x").h("cdn-cache-control", "max-age=1").h("age", "5");
    expect_forwarded(&t, &p, reply).await?;
    Ok(None)
}

/// RFC 9213 section 2.1: the Cache-Control field is used "unless no valid, non-empty value is
/// available from the listed header fields"; a trailing comma is invalid in a Structured
/// Field Dictionary (RFC 8941 section 4.2.2).
pub(super) async fn cdn_invalid(t: Tc) -> Outcome {
    let p = t.path("doc");
    let reply = Reply::ok("x")
        .cc("no-store")
        .h("cdn-cache-control", "max-age=3600,");
    expect_forwarded(&t, &p, reply).await?;
    Ok(None)
}

// --- Cache-Status (RFC 9211) ----------------------------------------------------------------

/// RFC 9211 section 2: `fwd`, `fwd-status` and `stored` on the miss, `hit` and `ttl` on the hit.
pub(super) async fn status_miss_hit(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![fresh("x")]);
    let miss = t.get(&p).await?;
    let hit = t.get(&p).await?;
    let m = miss
        .cache_status()
        .with_context(|| format!("the miss has no Cache-Status member: {}", miss.summary()))?;
    ensure!(
        !m.hit && m.fwd.as_deref() == Some("uri-miss") && m.fwd_status == Some(200) && m.stored,
        "the miss's Cache-Status is {:?}, expected fwd=uri-miss; fwd-status=200; stored",
        miss.header("cache-status")
    );
    let h = hit
        .cache_status()
        .with_context(|| format!("the hit has no Cache-Status member: {}", hit.summary()))?;
    ensure!(
        h.hit && h.fwd.is_none() && h.ttl.is_some_and(|ttl| (3500..=3600).contains(&ttl)),
        "the hit's Cache-Status is {:?}, expected hit; ttl=N with N close to 3600",
        hit.header("cache-status")
    );
    Ok(None)
}

/// RFC 9211 section 2.5: `stored` only when the forwarded response was stored.
pub(super) async fn status_not_stored(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![Reply::ok("x").cc("no-store")]);
    let resp = t.get(&p).await?;
    let s = resp
        .cache_status()
        .with_context(|| format!("no Cache-Status member: {}", resp.summary()))?;
    ensure!(
        !s.hit && s.fwd.is_some() && !s.stored,
        "a no-store response has Cache-Status {:?}",
        resp.header("cache-status")
    );
    Ok(None)
}

/// RFC 9211 section 2.2: "vary-miss: The cache had a stored response for the URI, but the
/// variant headers didn't match".
pub(super) async fn status_vary_miss(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![fresh("x").h("vary", "x-lang")]);
    t.send(Req::get(&p).h("x-lang", "en")).await?;
    let fr = t.send(Req::get(&p).h("x-lang", "fr")).await?;
    let s = fr
        .cache_status()
        .with_context(|| format!("no Cache-Status member: {}", fr.summary()))?;
    ensure!(
        s.fwd.as_deref() == Some("vary-miss"),
        "Cache-Status {:?}, expected fwd=vary-miss",
        fr.header("cache-status")
    );
    Ok(None)
}

/// RFC 9211 section 2.2: "stale: The cache was able to select a response for the request, but
/// it was stale"; section 2.3: fwd-status is the status of the forwarded response (304).
pub(super) async fn status_revalidated(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![stale("v1", "").h("etag", "\"v1\"").validated()]);
    t.get(&p).await?;
    let resp = t.get(&p).await?;
    let s = resp
        .cache_status()
        .with_context(|| format!("no Cache-Status member: {}", resp.summary()))?;
    ensure!(
        s.fwd.as_deref() == Some("stale") && s.fwd_status == Some(304),
        "Cache-Status {:?}, expected fwd=stale; fwd-status=304",
        resp.header("cache-status")
    );
    Ok(None)
}

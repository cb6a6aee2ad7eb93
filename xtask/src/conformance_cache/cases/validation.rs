//! Validation (RFC 9111 section 4.3) and the request's directives (section 5.2.1).

use anyhow::{Context, ensure};

use super::{ago, expect_reused_with, fresh, long_ago, stale, summaries};
use crate::conformance_cache::client::Req;
use crate::conformance_cache::origin::Reply;
use crate::conformance_cache::{Outcome, Tc};

// --- validation (RFC 9111 section 4.3) ------------------------------------------------------

/// Section 4.3.1: "When generating a conditional request for validation, a cache ... MUST send
/// the relevant entity tags (using If-Match, If-None-Match, or If-Range) if the entity tags
/// were provided in the stored response(s) being validated."
pub(super) async fn validate_etag(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![stale("v1", "").h("etag", "\"v1\"").validated()]);
    t.get(&p).await?;
    let second = t.get(&p).await?;
    let seen = t.seen(&p);
    ensure!(
        seen.len() == 2 && seen[1].header("if-none-match") == Some("\"v1\""),
        "expected a revalidation with If-None-Match: \"v1\"; the origin saw [{}]",
        summaries(&seen)
    );
    ensure!(
        second.status == 200 && second.text() == "v1",
        "the 304 was answered with {}",
        second.summary()
    );
    Ok(None)
}

/// Section 4.3.1: a cache "SHOULD send the Last-Modified value in If-Modified-Since if only a
/// Last-Modified value has been provided".
pub(super) async fn validate_last_modified(t: Tc) -> Outcome {
    let p = t.path("doc");
    let modified = long_ago();
    t.script(
        &p,
        vec![stale("v1", "").h("last-modified", &modified).validated()],
    );
    t.get(&p).await?;
    let second = t.get(&p).await?;
    let seen = t.seen(&p);
    ensure!(
        seen.len() == 2 && seen[1].header("if-modified-since") == Some(modified.as_str()),
        "expected a revalidation with If-Modified-Since: {modified}; the origin saw [{}]",
        summaries(&seen)
    );
    ensure!(
        second.status == 200 && second.text() == "v1",
        "the 304 was answered with {}",
        second.summary()
    );
    Ok(None)
}

/// A response stale on arrival (an old `Date`) whose `304` carries a current `Date`, so that
/// the freshened response is fresh.
fn stale_by_date(body: &str) -> Reply {
    fresh(body)
        .h("date", &ago(7200))
        .h("etag", "\"v1\"")
        .on_304("date", &ago(0))
}

/// Section 4.3.4: the stored response is updated with the `304` and becomes fresh again.
pub(super) async fn freshen(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![stale_by_date("v1")]);
    t.get(&p).await?;
    let revalidated = t.get(&p).await?;
    ensure!(
        t.seen(&p).len() == 2 && revalidated.text() == "v1",
        "expected a revalidation answered with v1; the origin saw [{}], the client got {}",
        summaries(&t.seen(&p)),
        revalidated.summary()
    );
    let third = t.get(&p).await?;
    ensure!(
        t.seen(&p).len() == 2 && third.text() == "v1",
        "the freshened response was not reused: the origin saw [{}], the client got {}",
        summaries(&t.seen(&p)),
        third.summary()
    );
    Ok(None)
}

/// Section 3.2: "the cache MUST add each header field in the provided response to the stored
/// response, replacing field values that are already present".
pub(super) async fn freshen_updates(t: Tc) -> Outcome {
    let p = t.path("doc");
    let reply = stale_by_date("v1")
        .h("x-version", "1")
        .on_304("x-version", "2")
        .on_304("x-new", "yes");
    t.script(&p, vec![reply]);
    t.get(&p).await?;
    let revalidated = t.get(&p).await?;
    let hit = t.get(&p).await?;
    for (label, resp) in [
        ("the revalidated response", &revalidated),
        ("the next hit", &hit),
    ] {
        ensure!(
            resp.header("x-new") == Some("yes") && resp.header("x-version") == Some("2"),
            "{label} has x-new {:?} and x-version {:?}, expected `yes` and `2` from the 304",
            resp.header("x-new"),
            resp.header("x-version")
        );
    }
    ensure!(
        t.seen(&p).len() == 2,
        "the origin saw [{}]",
        summaries(&t.seen(&p))
    );
    Ok(None)
}

/// Section 3.2: the exceptions to the update include "The Content-Length header field".
pub(super) async fn freshen_content_length(t: Tc) -> Outcome {
    let p = t.path("doc");
    let reply = stale_by_date("0123456789").on_304("content-length", "999");
    t.script(&p, vec![reply]);
    t.get(&p).await?;
    let revalidated = t.get(&p).await?;
    let hit = t.get(&p).await?;
    let seen = t.seen(&p);
    ensure!(
        seen.len() == 2 && seen[1].header("if-none-match") == Some("\"v1\""),
        "expected one revalidation answered 304; the origin saw [{}]",
        summaries(&seen)
    );
    for (label, resp) in [
        ("the revalidated response", &revalidated),
        ("the next hit", &hit),
    ] {
        ensure!(
            resp.header("content-length") == Some("10") && resp.text() == "0123456789",
            "{label} has Content-Length {:?} and {} bytes",
            resp.header("content-length"),
            resp.body.len()
        );
    }
    Ok(None)
}

/// Section 4.3.3: a full response to the conditional request "is used to satisfy the request
/// and replace the stored response".
pub(super) async fn revalidated_200(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(
        &p,
        vec![
            stale("v1", "").h("etag", "\"v1\""),
            fresh("v2").h("etag", "\"v2\""),
        ],
    );
    t.get(&p).await?;
    let second = t.get(&p).await?;
    ensure!(
        second.text() == "v2",
        "the revalidation's 200 was answered with {}",
        second.summary()
    );
    let third = t.get(&p).await?;
    t.origin_saw(&p, 2, &third)
        .context("the new response did not replace the stored one")?;
    Ok(None)
}

/// Section 4.3.2: a cache that receives a conditional request for a stored response "SHOULD
/// evaluate the conditions"; If-None-Match matching the stored ETag is a 304.
pub(super) async fn client_inm(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![fresh("x").h("etag", "\"v1\"")]);
    t.get(&p).await?;
    let matched = t.send(Req::get(&p).h("if-none-match", "\"v1\"")).await?;
    ensure!(
        matched.status == 304 && matched.body.is_empty(),
        "If-None-Match: \"v1\" got {}",
        matched.summary()
    );
    ensure!(
        matched.header("etag") == Some("\"v1\""),
        "the 304 has no ETag"
    );
    let other = t.send(Req::get(&p).h("if-none-match", "\"v0\"")).await?;
    ensure!(
        other.status == 200 && other.text() == "x",
        "If-None-Match: \"v0\" got {}",
        other.summary()
    );
    let seen = t.seen(&p);
    ensure!(
        seen.len() == 1,
        "the conditional requests reached the origin: [{}]",
        summaries(&seen)
    );
    Ok(None)
}

/// Section 4.3.2: If-Modified-Since is evaluated against the stored Last-Modified.
pub(super) async fn client_ims(t: Tc) -> Outcome {
    let p = t.path("doc");
    let modified = long_ago();
    t.script(&p, vec![fresh("x").h("last-modified", &modified)]);
    t.get(&p).await?;
    let resp = t
        .send(Req::get(&p).h("if-modified-since", &modified))
        .await?;
    ensure!(
        resp.status == 304,
        "If-Modified-Since equal to Last-Modified got {}",
        resp.summary()
    );
    let seen = t.seen(&p);
    ensure!(
        seen.len() == 1,
        "the conditional request reached the origin: [{}]",
        summaries(&seen)
    );
    Ok(None)
}

/// RFC 9110 section 9.3.2: HEAD is GET without content; a cache may answer it from a stored
/// GET response.
pub(super) async fn head_from_get(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![fresh("hello")]);
    t.get(&p).await?;
    let head = t.send(Req::new("HEAD", &p)).await?;
    ensure!(
        head.status == 200 && head.body.is_empty(),
        "HEAD got {}",
        head.summary()
    );
    t.reused(&p, &head)?;
    Ok(None)
}

// --- request directives (RFC 9111 section 5.2.1) --------------------------------------------

/// Section 4: a cache must not reuse a stored response when "the presented request ...
/// contain[s] the no-cache directive, unless the stored response is successfully validated".
pub(super) async fn req_no_cache(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![fresh("v1"), fresh("v2")]);
    t.get(&p).await?;
    let resp = t.send(Req::get(&p).h("cache-control", "no-cache")).await?;
    t.origin_saw(&p, 2, &resp)
        .context("Cache-Control: no-cache was answered from the cache")?;
    Ok(None)
}

/// Section 5.2.1.1: "the client is unwilling to accept a response whose age is greater than
/// the specified number of seconds" (the stored response is ten seconds old).
pub(super) async fn req_max_age_zero(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![fresh("v1").h("age", "10"), fresh("v2")]);
    t.get(&p).await?;
    let resp = t.send(Req::get(&p).h("cache-control", "max-age=0")).await?;
    t.origin_saw(&p, 2, &resp)
        .context("Cache-Control: max-age=0 was answered from the cache")?;
    Ok(None)
}

/// Section 5.2.1.1: served when the age is within the request's max-age, forwarded when not.
pub(super) async fn req_max_age(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![fresh("v1").h("age", "100"), fresh("v2")]);
    t.get(&p).await?;
    let within = t
        .send(Req::get(&p).h("cache-control", "max-age=500"))
        .await?;
    t.reused(&p, &within)
        .context("age 100 with request max-age=500")?;
    let beyond = t
        .send(Req::get(&p).h("cache-control", "max-age=50"))
        .await?;
    t.origin_saw(&p, 2, &beyond)
        .context("age 100 with request max-age=50")?;
    Ok(None)
}

/// Section 5.2.1.2: "the client will accept a response that has exceeded its freshness
/// lifetime by no more than the specified number of seconds"; section 4.2.4 lets the cache
/// serve it.
pub(super) async fn req_max_stale(t: Tc) -> Outcome {
    let p = t.path("doc");
    let req = Req::get(&p).h("cache-control", "max-stale=3600");
    let hit = expect_reused_with(&t, &p, stale("x", ""), req).await?;
    ensure!(
        hit.status == 200 && hit.text() == "x",
        "got {}",
        hit.summary()
    );
    Ok(None)
}

/// Section 5.2.1.2: beyond max-stale the stale response is not acceptable.
pub(super) async fn req_max_stale_short(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![Reply::ok("x").cc("max-age=1").h("age", "100")]);
    t.get(&p).await?;
    let resp = t
        .send(Req::get(&p).h("cache-control", "max-stale=10"))
        .await?;
    t.origin_saw(&p, 2, &resp)
        .context("stale by about 99 s, served for max-stale=10")?;
    Ok(None)
}

/// Section 5.2.1.3: "the client wants a response that will still be fresh for at least the
/// specified number of seconds" (100 seconds are left here).
pub(super) async fn req_min_fresh(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![fresh("v1").h("age", "3500"), fresh("v2")]);
    t.get(&p).await?;
    let enough = t
        .send(Req::get(&p).h("cache-control", "min-fresh=10"))
        .await?;
    t.reused(&p, &enough)
        .context("100 s of freshness left, min-fresh=10")?;
    let short = t
        .send(Req::get(&p).h("cache-control", "min-fresh=600"))
        .await?;
    t.origin_saw(&p, 2, &short)
        .context("100 s of freshness left, min-fresh=600")?;
    Ok(None)
}

/// Section 5.2.1.7: the cache "SHOULD either respond using a stored response consistent with
/// the other constraints of the request or respond with a 504 (Gateway Timeout) status code".
pub(super) async fn req_only_if_cached(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![fresh("x")]);
    let only = Req::get(&p).h("cache-control", "only-if-cached");
    let empty = t.send(only.clone()).await?;
    ensure!(
        empty.status == 504 && t.seen(&p).is_empty(),
        "nothing stored: got {}, the origin saw {} request(s)",
        empty.summary(),
        t.seen(&p).len()
    );
    t.get(&p).await?;
    let stored = t.send(only).await?;
    t.reused(&p, &stored)
        .context("only-if-cached with a fresh stored response")?;
    Ok(None)
}

/// Section 5.2.1.5: "a cache MUST NOT store any part of either this request or any response
/// to it".
pub(super) async fn req_no_store(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![fresh("v1"), fresh("v2")]);
    t.send(Req::get(&p).h("cache-control", "no-store")).await?;
    let plain = t.get(&p).await?;
    t.origin_saw(&p, 2, &plain)
        .context("the response to a no-store request was stored")?;
    Ok(None)
}

/// Section 5.4: Pragma is deprecated; `Pragma: no-cache` is the HTTP/1.0 form of the
/// request's `no-cache`, which caches have long honoured when there is no Cache-Control.
pub(super) async fn req_pragma(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![fresh("v1"), fresh("v2")]);
    t.get(&p).await?;
    let resp = t.send(Req::get(&p).h("pragma", "no-cache")).await?;
    t.origin_saw(&p, 2, &resp)
        .context("Pragma: no-cache was answered from the cache")?;
    Ok(None)
}

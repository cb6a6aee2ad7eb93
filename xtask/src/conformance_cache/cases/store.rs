//! What a shared cache may store: RFC 9111 section 3, with Authorization (section 3.5).

use anyhow::{Context, ensure};

use super::{
    expect_forwarded, expect_forwarded_with, expect_reused, expect_reused_with, fresh, long_ago,
    summaries,
};
use crate::conformance_cache::client::Req;
use crate::conformance_cache::origin::Reply;
use crate::conformance_cache::{Outcome, Tc};

// --- storability (RFC 9111 section 3) -------------------------------------------------------

/// Section 4: a fresh stored response is reused without contacting the origin.
pub(super) async fn fresh_reused(t: Tc) -> Outcome {
    let p = t.path("doc");
    let hit = expect_reused(&t, &p, fresh("hello")).await?;
    ensure!(
        hit.status == 200 && hit.text() == "hello",
        "the hit is {}",
        hit.summary()
    );
    Ok(None)
}

/// Section 5.2.2.5: "a cache MUST NOT store any part of either the immediate request or any
/// response to it".
pub(super) async fn no_store(t: Tc) -> Outcome {
    let p = t.path("doc");
    expect_forwarded(&t, &p, Reply::ok("x").cc("no-store, max-age=3600")).await?;
    Ok(None)
}

/// Section 5.2.2.7: "a shared cache MUST NOT store the response" (unqualified `private`).
pub(super) async fn private(t: Tc) -> Outcome {
    let p = t.path("doc");
    expect_forwarded(&t, &p, Reply::ok("x").cc("private, max-age=3600")).await?;
    Ok(None)
}

/// Section 5.2.2.7: with field names, "a shared cache MUST NOT store the specified field
/// name(s), whereas it MAY store the remainder of the response message".
pub(super) async fn private_qualified(t: Tc) -> Outcome {
    let p = t.path("doc");
    let reply = Reply::ok("x")
        .cc("private=\"x-secret\", max-age=3600")
        .h("x-secret", "s3cr3t")
        .h("x-other", "kept");
    t.script(&p, vec![reply]);
    t.get(&p).await?;
    let second = t.get(&p).await?;
    if second.seq() == Some(1) {
        ensure!(
            second.header("x-secret").is_none(),
            "the field named in private=\"x-secret\" was served from the cache: {:?}",
            second.header("x-secret")
        );
        ensure!(
            second.header("x-other") == Some("kept"),
            "the other fields were not kept"
        );
        return Ok(None);
    }
    t.reused(&p, &second)?;
    Ok(None)
}

/// Section 5.2.2.10 and section 3: `s-maxage` is an explicit lifetime for a shared cache.
pub(super) async fn s_maxage_alone(t: Tc) -> Outcome {
    let p = t.path("doc");
    expect_reused(&t, &p, Reply::ok("x").cc("s-maxage=3600")).await?;
    Ok(None)
}

/// Section 5.2.2.4: "the response MUST NOT be used to satisfy any other request without
/// forwarding it for validation and receiving a successful response".
pub(super) async fn no_cache_response(t: Tc) -> Outcome {
    let p = t.path("doc");
    let reply = Reply::ok("x")
        .cc("no-cache, max-age=3600")
        .h("etag", "\"nc\"");
    t.script(&p, vec![reply]);
    t.get(&p).await?;
    let second = t.get(&p).await?;
    let seen = t.seen(&p);
    ensure!(
        seen.len() == 2,
        "no-cache was reused without going to the origin: it saw {} [{}]; the client got {}",
        seen.len(),
        summaries(&seen),
        second.summary()
    );
    ensure!(
        second.status == 200 && second.text() == "x",
        "got {}",
        second.summary()
    );
    Ok(None)
}

/// Section 5.2.2.3: "the cache SHOULD ignore the no-store directive if it understands and
/// implements the status code's caching requirements".
pub(super) async fn must_understand_known(t: Tc) -> Outcome {
    let p = t.path("doc");
    expect_reused(
        &t,
        &p,
        Reply::ok("x").cc("must-understand, no-store, max-age=3600"),
    )
    .await?;
    Ok(None)
}

/// Section 3: a cache stores a response only "if the response status code is 206 or 304, or
/// the must-understand cache directive is present: the cache understands the response status
/// code". 299 is understood by no one.
pub(super) async fn must_understand_unknown(t: Tc) -> Outcome {
    let p = t.path("doc");
    let second = expect_forwarded(
        &t,
        &p,
        Reply::new(299, "x").cc("must-understand, max-age=3600"),
    )
    .await?;
    ensure!(second.status == 299, "got {}", second.summary());
    Ok(None)
}

/// Section 3.3: a cache "MUST NOT use an incomplete response to answer requests unless the
/// response has been made complete or the request is partial".
pub(super) async fn partial_not_full(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![fresh("0123456789").ranged()]);
    let part = t.send(Req::get(&p).h("range", "bytes=0-3")).await?;
    ensure!(
        part.status == 206 && part.text() == "0123",
        "the range request got {}",
        part.summary()
    );
    let full = t.get(&p).await?;
    ensure!(
        full.status == 200 && full.text() == "0123456789",
        "a full request after a 206 got {}",
        full.summary()
    );
    Ok(None)
}

/// Section 4.1: "A stored response with a Vary header field value containing a member "*"
/// always fails to match".
pub(super) async fn vary_star(t: Tc) -> Outcome {
    let p = t.path("doc");
    expect_forwarded(&t, &p, fresh("x").h("vary", "*")).await?;
    Ok(None)
}

/// Section 5.2.3: "A cache MUST ignore unrecognized cache directives".
pub(super) async fn unknown_directives(t: Tc) -> Outcome {
    let p = t.path("doc");
    let reply = Reply::ok("x").cc("x-unknown, max-age=3600, x-other=\"a, b\", x-token=7");
    expect_reused(&t, &p, reply).await?;
    Ok(None)
}

/// Section 5.2: "Cache directives are identified by a token, to be compared
/// case-insensitively".
pub(super) async fn directive_case(t: Tc) -> Outcome {
    let upper = t.path("upper");
    expect_reused(&t, &upper, Reply::ok("x").cc("MAX-AGE=3600"))
        .await
        .context("MAX-AGE=3600")?;
    let mixed = t.path("mixed");
    expect_forwarded(&t, &mixed, Reply::ok("x").cc("No-Store, max-age=3600"))
        .await
        .context("No-Store")?;
    Ok(None)
}

/// Section 5.2: arguments may use token or quoted-string syntax; "recipients ought to accept
/// both forms, even if a specific form is required for generation".
pub(super) async fn quoted_max_age(t: Tc) -> Outcome {
    let p = t.path("doc");
    expect_reused(&t, &p, Reply::ok("x").cc("max-age=\"3600\"")).await?;
    Ok(None)
}

/// Section 1.2.2: "If a cache receives a delta-seconds value greater than the greatest integer
/// it can represent, or if any of its subsequent calculations overflows, the cache MUST
/// consider the value to be 2147483648".
pub(super) async fn huge_max_age(t: Tc) -> Outcome {
    let p = t.path("doc");
    expect_reused(&t, &p, Reply::ok("x").cc("max-age=99999999999999999999")).await?;
    Ok(None)
}

/// Section 4.2.2: a cache MAY assign a heuristic lifetime to a response with a heuristically
/// cacheable status (RFC 9110 section 15.1) and no explicit one, e.g. from `Last-Modified`.
pub(super) async fn heuristic<const S: u16>(t: Tc) -> Outcome {
    let p = t.path("doc");
    let body = if S == 204 { "" } else { "content" };
    let mut reply = Reply::new(S, body).h("last-modified", &long_ago());
    if matches!(S, 301 | 308) {
        reply = reply.h("location", &t.path("elsewhere"));
    }
    if S == 405 {
        reply = reply.h("allow", "POST");
    }
    let hit = expect_reused(&t, &p, reply).await?;
    ensure!(hit.status == S, "the hit has status {}", hit.status);
    Ok(None)
}

/// Section 3: without explicit freshness, only heuristically cacheable statuses may be stored;
/// with it, any final status may be.
pub(super) async fn explicit_only<const S: u16>(t: Tc) -> Outcome {
    let location = t.path("elsewhere");
    let with_location = |reply: Reply| {
        if matches!(S, 302 | 307) {
            reply.h("location", &location)
        } else {
            reply
        }
    };
    let heuristic = t.path("heuristic");
    let reply = with_location(Reply::new(S, "x").h("last-modified", &long_ago()));
    expect_forwarded(&t, &heuristic, reply)
        .await
        .with_context(|| format!("{S} with Last-Modified only"))?;
    let explicit = t.path("explicit");
    let hit = expect_reused(
        &t,
        &explicit,
        with_location(Reply::new(S, "x").cc("max-age=3600")),
    )
    .await
    .with_context(|| format!("{S} with max-age=3600"))?;
    ensure!(hit.status == S, "the hit has status {}", hit.status);
    Ok(None)
}

// --- Authorization (RFC 9111 section 3.5) ---------------------------------------------------

fn authorized(path: &str) -> Req {
    Req::get(path).h("authorization", "Basic dXNlcjpwYXNz")
}

/// Section 3.5: "A shared cache MUST NOT use a cached response to a request with an
/// Authorization header field to satisfy any subsequent request unless the response contains
/// a Cache-Control field with a response directive that allows it to be stored by a shared
/// cache".
pub(super) async fn auth_plain(t: Tc) -> Outcome {
    let p = t.path("doc");
    expect_forwarded_with(&t, &p, fresh("x"), authorized(&p)).await?;
    let anonymous = t.get(&p).await?;
    t.origin_saw(&p, 3, &anonymous)
        .context("a response to an authorized request answered an anonymous one")?;
    Ok(None)
}

/// Section 3.5: `public` allows a response to an authenticated request to be stored.
pub(super) async fn auth_public(t: Tc) -> Outcome {
    let p = t.path("doc");
    let reply = Reply::ok("x").cc("public, max-age=3600");
    expect_reused_with(&t, &p, reply, authorized(&p)).await?;
    Ok(None)
}

/// Section 3.5: so does `s-maxage`.
pub(super) async fn auth_s_maxage(t: Tc) -> Outcome {
    let p = t.path("doc");
    let reply = Reply::ok("x").cc("s-maxage=3600");
    expect_reused_with(&t, &p, reply, authorized(&p)).await?;
    Ok(None)
}

/// Section 3.5: so does `must-revalidate`.
pub(super) async fn auth_must_revalidate(t: Tc) -> Outcome {
    let p = t.path("doc");
    let reply = Reply::ok("x").cc("must-revalidate, max-age=3600");
    expect_reused_with(&t, &p, reply, authorized(&p)).await?;
    Ok(None)
}

//! Serving stale responses: RFC 9111 section 4.2.4 and RFC 5861.

use std::time::Duration;

use anyhow::{Context, Result, ensure};

use super::{fresh, stale, summaries};
use crate::conformance_cache::client::Req;
use crate::conformance_cache::origin::Reply;
use crate::conformance_cache::{Outcome, Tc};

// --- serving stale (RFC 9111 section 4.2.4, RFC 5861) ---------------------------------------

/// Sends a `max-stale=3600` request for a stale response carrying `directive`; the cache must
/// go to the origin.
async fn stale_not_served(t: &Tc, directive: &str) -> Result<()> {
    let p = t.path("doc");
    t.script(&p, vec![Reply::ok("x").cc(directive).h("age", "5")]);
    t.get(&p).await?;
    let resp = t
        .send(Req::get(&p).h("cache-control", "max-stale=3600"))
        .await?;
    t.origin_saw(&p, 2, &resp)
        .with_context(|| format!("`{directive}` stale by 4 s was served for max-stale=3600"))
}

/// Section 5.2.2.2: "the cache MUST NOT use the response to satisfy any other request without
/// forwarding it for validation and receiving a successful response" once stale.
pub(super) async fn must_revalidate(t: Tc) -> Outcome {
    stale_not_served(&t, "max-age=1, must-revalidate").await?;
    Ok(None)
}

/// Section 5.2.2.8: proxy-revalidate is must-revalidate for shared caches.
pub(super) async fn proxy_revalidate(t: Tc) -> Outcome {
    stale_not_served(&t, "max-age=1, proxy-revalidate").await?;
    Ok(None)
}

/// Section 5.2.2.10: s-maxage "incorporates the semantics of the proxy-revalidate response
/// directive".
pub(super) async fn s_maxage_stale(t: Tc) -> Outcome {
    stale_not_served(&t, "s-maxage=1").await?;
    Ok(None)
}

/// RFC 5861 section 3: within the window "caches MAY serve the response in which it appears
/// after it becomes stale ... the cache SHOULD attempt to revalidate it while still serving
/// stale responses"; one background request, after which the new response is served.
pub(super) async fn stale_while_revalidate(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(
        &p,
        vec![stale("v1", "stale-while-revalidate=60"), fresh("v2")],
    );
    t.get(&p).await?;
    let served = t.get(&p).await?;
    ensure!(
        served.status == 200 && served.text() == "v1" && served.seq() == Some(1),
        "the stale response was not served at once: got {}",
        served.summary()
    );
    t.get(&p).await?;
    t.wait_for_origin(&p, 2, Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let seen = t.seen(&p);
    ensure!(
        seen.len() == 2,
        "expected exactly one background request; the origin saw [{}]",
        summaries(&seen)
    );
    let after = t.get(&p).await?;
    t.origin_saw(&p, 2, &after)
        .context("the background revalidation did not update the stored response")?;
    Ok(None)
}

/// RFC 9111 section 4.2.4: "A cache MUST NOT generate a stale response unless it is
/// disconnected or doing so is explicitly permitted"; past the stale-while-revalidate window
/// it is not.
pub(super) async fn swr_expired(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(
        &p,
        vec![
            Reply::ok("v1")
                .cc("max-age=1, stale-while-revalidate=5")
                .h("age", "100"),
            fresh("v2"),
        ],
    );
    t.get(&p).await?;
    let resp = t.get(&p).await?;
    t.origin_saw(&p, 2, &resp)
        .context("stale by 99 s with stale-while-revalidate=5 was served")?;
    Ok(None)
}

/// RFC 5861 section 4: "when an error is encountered, a cached stale response MAY be used to
/// satisfy the request"; an error is a 500, 502, 503 or 504.
pub(super) async fn stale_if_error(t: Tc) -> Outcome {
    for status in [500, 503] {
        let p = t.path(&format!("s{status}"));
        t.script(
            &p,
            vec![
                stale("v1", "stale-if-error=60"),
                Reply::new(status, "error").cc("no-store"),
            ],
        );
        t.get(&p).await?;
        let resp = t.get(&p).await?;
        ensure!(
            resp.status == 200 && resp.text() == "v1",
            "origin {status} with stale-if-error=60: got {}",
            resp.summary()
        );
        ensure!(
            t.seen(&p).len() == 2,
            "the origin saw [{}]",
            summaries(&t.seen(&p))
        );
    }
    Ok(None)
}

/// RFC 9111 section 4.2.4: "A cache MUST NOT generate a stale response if it is prohibited by
/// an explicit in-protocol directive (e.g., by a no-cache response directive, a
/// must-revalidate response directive ...)", stale-if-error or not.
pub(super) async fn must_revalidate_beats_stale_if_error(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(
        &p,
        vec![
            stale("v1", "must-revalidate, stale-if-error=60"),
            Reply::new(500, "error").cc("no-store"),
        ],
    );
    t.get(&p).await?;
    let resp = t.get(&p).await?;
    ensure!(
        resp.status == 500 && t.seen(&p).len() == 2,
        "must-revalidate with stale-if-error=60 and an origin 500: got {}",
        resp.summary()
    );
    Ok(None)
}

/// RFC 9111 section 5.2.2.2: once stale, "a cache MUST NOT reuse that response to satisfy
/// another request until it has been successfully validated by the origin", whatever
/// stale-while-revalidate allows.
pub(super) async fn must_revalidate_beats_swr(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(
        &p,
        vec![
            stale("v1", "must-revalidate, stale-while-revalidate=60"),
            fresh("v2"),
        ],
    );
    t.get(&p).await?;
    let resp = t.get(&p).await?;
    t.origin_saw(&p, 2, &resp)
        .context("must-revalidate with stale-while-revalidate=60 was served stale")?;
    Ok(None)
}

/// RFC 9111 section 4.2.4: a 500 is an answer, not a disconnection; without permission the
/// cache passes it on.
pub(super) async fn error_passed_on(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(
        &p,
        vec![stale("v1", ""), Reply::new(500, "error").cc("no-store")],
    );
    t.get(&p).await?;
    let resp = t.get(&p).await?;
    ensure!(
        resp.status == 500,
        "a stale response was served for an origin 500 without stale-if-error: {}",
        resp.summary()
    );
    Ok(None)
}

/// RFC 5861 section 4: "When used as a request Cache-Control extension, its scope of
/// application is the request it appears in."
pub(super) async fn stale_if_error_request(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(
        &p,
        vec![stale("v1", ""), Reply::new(500, "error").cc("no-store")],
    );
    t.get(&p).await?;
    let resp = t
        .send(Req::get(&p).h("cache-control", "stale-if-error=60"))
        .await?;
    ensure!(
        resp.status == 200 && resp.text() == "v1",
        "request stale-if-error=60 with an origin 500 got {}",
        resp.summary()
    );
    Ok(None)
}

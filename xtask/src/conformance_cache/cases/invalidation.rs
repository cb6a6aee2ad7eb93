//! Invalidation by unsafe methods (RFC 9111 section 4.4), and proxy-bin's purge.

use anyhow::{Context, Result, ensure};

use super::{fresh, summaries};
use crate::conformance_cache::client::{Req, Resp};
use crate::conformance_cache::origin::Reply;
use crate::conformance_cache::{HOST, Outcome, Tc};

// --- invalidation (RFC 9111 section 4.4) ----------------------------------------------------

/// Section 4.4: "A cache MUST invalidate the target URI when it receives a non-error status
/// code in response to an unsafe request method (including methods whose safety is unknown)."
async fn invalidates(t: &Tc, method: &str, status: u16) -> Result<()> {
    let p = t.path("doc");
    let answer = Reply::new(status, "done").h("location", &t.path("next"));
    t.script(&p, vec![fresh("v1"), answer, fresh("v3")]);
    t.get(&p).await?;
    let hit = t.get(&p).await?;
    t.reused(&p, &hit).context("before the unsafe request")?;
    let mut req = Req::new(method, &p);
    if matches!(method, "POST" | "PUT" | "PATCH") {
        req = req.body("change");
    }
    let resp = t.send(req).await?;
    let seen = t.seen(&p);
    ensure!(
        resp.status == status && seen.len() == 2 && seen[1].method.as_str() == method,
        "{method} was not forwarded as such: got {}, the origin saw [{}]",
        resp.summary(),
        summaries(&seen)
    );
    let after = t.get(&p).await?;
    t.origin_saw(&p, 3, &after)
        .with_context(|| format!("{method} answered {status} did not invalidate the URI"))
}

pub(super) async fn invalidate_post(t: Tc) -> Outcome {
    invalidates(&t, "POST", 200).await?;
    Ok(None)
}

pub(super) async fn invalidate_put(t: Tc) -> Outcome {
    invalidates(&t, "PUT", 204).await?;
    Ok(None)
}

pub(super) async fn invalidate_delete(t: Tc) -> Outcome {
    invalidates(&t, "DELETE", 200).await?;
    Ok(None)
}

pub(super) async fn invalidate_patch(t: Tc) -> Outcome {
    invalidates(&t, "PATCH", 200).await?;
    Ok(None)
}

pub(super) async fn invalidate_unknown(t: Tc) -> Outcome {
    invalidates(&t, "FROBNICATE", 200).await?;
    Ok(None)
}

/// 3xx is a non-error status.
pub(super) async fn invalidate_redirect(t: Tc) -> Outcome {
    invalidates(&t, "POST", 303).await?;
    Ok(None)
}

/// Stores `b` (checking that it is reused), sends `POST a` whose answer names `b` in `field`,
/// and returns the next response for `b` with how many requests for `b` reached the origin.
async fn after_reference(
    t: &Tc,
    field: &str,
    value: &str,
    b: &str,
    host: &str,
) -> Result<(Resp, usize)> {
    let a = t.path("a");
    t.script(b, vec![fresh("b1"), fresh("b2")]);
    t.script(&a, vec![Reply::new(201, "created").h(field, value)]);
    let get_b = Req::get(b).host(host);
    t.send(get_b.clone()).await?;
    let hit = t.send(get_b.clone()).await?;
    t.reused(b, &hit).context("before the POST")?;
    let post = t.send(Req::new("POST", &a).body("new")).await?;
    ensure!(post.status == 201, "POST got {}", post.summary());
    let after = t.send(get_b).await?;
    Ok((after, t.seen(b).len()))
}

/// Section 4.4: "the URI(s) in the Location and Content-Location response header fields (if
/// present) are candidates for invalidation" (a cache MAY invalidate them).
pub(super) async fn invalidate_location(t: Tc) -> Outcome {
    let b = t.path("b");
    let (after, _) = after_reference(&t, "location", &b, &b, HOST).await?;
    t.origin_saw(&b, 2, &after)
        .context("Location: B in the 201 to POST A did not invalidate B")?;
    Ok(None)
}

pub(super) async fn invalidate_content_location(t: Tc) -> Outcome {
    let b = t.path("b");
    let absolute = format!("http://{HOST}{b}");
    let (after, _) = after_reference(&t, "content-location", &absolute, &b, HOST).await?;
    t.origin_saw(&b, 2, &after)
        .with_context(|| format!("Content-Location: {absolute} did not invalidate it"))?;
    Ok(None)
}

/// Section 4.4: "a cache MUST NOT trigger an invalidation under these conditions if the origin
/// of the URI to be invalidated differs from that of the target URI".
pub(super) async fn invalidate_cross_origin(t: Tc) -> Outcome {
    let b = t.path("b");
    let other = "other.test";
    let foreign = format!("http://{other}{b}");
    let (after, seen) = after_reference(&t, "location", &foreign, &b, other).await?;
    ensure!(
        seen == 1 && after.seq() == Some(1),
        "Location: {foreign} in an answer for {HOST} invalidated {other}'s response: got {}",
        after.summary()
    );
    Ok(None)
}

/// Section 4.4 invalidates the target URI, so every response stored for it: each `Vary`
/// variant.
pub(super) async fn invalidate_variants(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(
        &p,
        vec![
            fresh("en").h("vary", "x-lang"),
            fresh("fr").h("vary", "x-lang"),
            Reply::ok("done"),
            fresh("en2").h("vary", "x-lang"),
            fresh("fr2").h("vary", "x-lang"),
        ],
    );
    let en = Req::get(&p).h("x-lang", "en");
    let fr = Req::get(&p).h("x-lang", "fr");
    t.send(en.clone()).await?;
    t.send(fr.clone()).await?;
    let hit = t.send(fr.clone()).await?;
    t.origin_saw(&p, 2, &hit)
        .context("both variants stored before the POST")?;
    let post = t.send(Req::new("POST", &p).body("x")).await?;
    ensure!(post.status == 200, "POST got {}", post.summary());
    let en_after = t.send(en).await?;
    t.origin_saw(&p, 4, &en_after)
        .context("the `en` variant survived the POST")?;
    let fr_after = t.send(fr).await?;
    t.origin_saw(&p, 5, &fr_after)
        .context("the `fr` variant survived the POST")?;
    Ok(None)
}

/// Section 4.4 invalidates on a non-error status only; an error leaves the stored response.
pub(super) async fn invalidate_error(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(
        &p,
        vec![fresh("v1"), Reply::new(500, "failed"), fresh("v3")],
    );
    t.get(&p).await?;
    let post = t.send(Req::new("POST", &p).body("x")).await?;
    ensure!(post.status == 500, "POST got {}", post.summary());
    let after = t.get(&p).await?;
    ensure!(
        after.seq() == Some(1) && t.seen(&p).len() == 2,
        "a POST answered 500 invalidated the stored response: got {}, the origin saw [{}]",
        after.summary(),
        summaries(&t.seen(&p))
    );
    Ok(None)
}

/// Section 4.4 is about unsafe methods; a GET whose answer names another URI changes nothing.
pub(super) async fn invalidate_not_by_get(t: Tc) -> Outcome {
    let a = t.path("a");
    let b = t.path("b");
    t.script(&b, vec![fresh("b1"), fresh("b2")]);
    t.script(&a, vec![fresh("a").h("content-location", &b)]);
    t.get(&b).await?;
    t.get(&a).await?;
    let after = t.get(&b).await?;
    t.reused(&b, &after)
        .context("a GET with Content-Location: B invalidated B")?;
    Ok(None)
}

// --- proxy-bin's admin listener -------------------------------------------------------------

/// `DELETE /cache?url=URL` on the admin listener removes what is stored for URL.
pub(super) async fn admin_purge(t: Tc) -> Outcome {
    let p = t.path("doc");
    t.script(&p, vec![fresh("v1"), fresh("v2")]);
    t.get(&p).await?;
    let hit = t.get(&p).await?;
    t.reused(&p, &hit).context("before the purge")?;
    let url = format!("http://{HOST}{p}");
    let encoded: String = url
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let purge = t
        .admin(Req::new("DELETE", &format!("/cache?url={encoded}")))
        .await?;
    // `{"purged":N}`: how many stores held the URL.
    let purged = purge
        .text()
        .split_once("\"purged\":")
        .and_then(|(_, n)| n.trim_end_matches(['}', ' ', '\n']).parse::<u64>().ok());
    ensure!(
        purge.status == 200 && purged.is_some_and(|n| n >= 1),
        "DELETE /cache?url={encoded} got {}",
        purge.summary()
    );
    let after = t.get(&p).await?;
    t.origin_saw(&p, 2, &after)
        .context("the purged response was still served")?;
    Ok(None)
}

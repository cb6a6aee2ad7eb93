//! The table of conformance cases. Each case names the RFC section it checks; rejection cases
//! also assert that the backend received nothing at all.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::Ctx;
use super::backend::{CHUNKED_BODY, close_body};
use super::client::Response;
use super::wire::{Head, preview};

/// Time a rejected request gets to (wrongly) reach the backend before the case looks.
const SETTLE: Duration = Duration::from_millis(150);

/// Latest acceptable 408 for an incomplete head (`header_read_timeout` is 2 s).
const HEAD_TIMEOUT_LIMIT: Duration = Duration::from_secs(4);

/// One conformance case.
pub(crate) struct Case {
    /// Short description, printed on the PASS/FAIL line.
    pub(crate) name: &'static str,
    /// The RFC section that requires the behaviour.
    pub(crate) reference: &'static str,
    check: Check,
}

enum Check {
    /// Send `request`; the response status must be one of `statuses`, the backend must not
    /// see any request, and with `close` the proxy must close the connection afterwards.
    Reject {
        request: Vec<u8>,
        statuses: &'static [u16],
        close: bool,
    },
    Custom(fn(&Ctx) -> Result<()>),
}

impl Case {
    /// Runs the case; `Err` says why it failed.
    pub(crate) fn run(&self, ctx: &Ctx) -> Result<()> {
        match &self.check {
            Check::Reject {
                request,
                statuses,
                close,
            } => rejected(ctx, request, statuses, *close),
            Check::Custom(check) => check(ctx),
        }
    }
}

fn reject(
    name: &'static str,
    reference: &'static str,
    request: impl Into<Vec<u8>>,
    statuses: &'static [u16],
    close: bool,
) -> Case {
    Case {
        name,
        reference,
        check: Check::Reject {
            request: request.into(),
            statuses,
            close,
        },
    }
}

fn custom(name: &'static str, reference: &'static str, check: fn(&Ctx) -> Result<()>) -> Case {
    Case {
        name,
        reference,
        check: Check::Custom(check),
    }
}

/// Every case, in the order they run. The well-formedness summary must stay last.
pub(crate) fn all() -> Vec<Case> {
    const BAD: &[u16] = &[400];
    let post = |fields: &str, body: &str| {
        format!("POST /smuggle HTTP/1.1\r\nHost: conformance.test\r\n{fields}\r\n{body}")
    };
    let get = |fields: &str| format!("GET /x HTTP/1.1\r\nHost: conformance.test\r\n{fields}\r\n");
    vec![
        // --- Request framing and smuggling: 400, nothing forwarded, connection closed.
        reject(
            "request with both Content-Length and Transfer-Encoding",
            "RFC 9112 §6.1, §11.2",
            post(
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            BAD,
            true,
        ),
        reject(
            "two different Content-Length values",
            "RFC 9112 §6.3",
            post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
            BAD,
            true,
        ),
        reject(
            "non-numeric Content-Length",
            "RFC 9112 §6.3",
            post("Content-Length: abc\r\n", "hello"),
            BAD,
            true,
        ),
        reject(
            "negative Content-Length",
            "RFC 9110 §8.6, RFC 9112 §6.3",
            post("Content-Length: -5\r\n", "hello"),
            BAD,
            true,
        ),
        reject(
            "Content-Length with a plus sign",
            "RFC 9110 §8.6, RFC 9112 §6.3",
            post("Content-Length: +5\r\n", "hello"),
            BAD,
            true,
        ),
        reject(
            "invalid chunk size",
            "RFC 9112 §7.1",
            post("Transfer-Encoding: chunked\r\n", "zz\r\nhello\r\n0\r\n\r\n"),
            BAD,
            true,
        ),
        reject(
            "chunk size overflowing 64 bits",
            "RFC 9112 §7.1",
            post(
                "Transfer-Encoding: chunked\r\n",
                "10000000000000005\r\nhello\r\n0\r\n\r\n",
            ),
            BAD,
            true,
        ),
        reject(
            "chunked is not the final transfer coding",
            "RFC 9112 §6.3",
            post("Transfer-Encoding: chunked, gzip\r\n", "0\r\n\r\n"),
            BAD,
            true,
        ),
        reject(
            "unknown transfer coding (identity)",
            "RFC 9112 §6.1, §6.3",
            post("Transfer-Encoding: identity\r\n", "hello"),
            BAD,
            true,
        ),
        reject(
            "Transfer-Encoding in an HTTP/1.0 request",
            "RFC 9112 §6.1",
            "POST /smuggle HTTP/1.0\r\nHost: conformance.test\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\n0\r\n\r\n",
            BAD,
            true,
        ),
        // --- Field syntax.
        reject(
            "obs-fold in a request field",
            "RFC 9112 §5.2",
            get("X-Folded: a\r\n b\r\n"),
            BAD,
            false,
        ),
        reject(
            "missing Host in HTTP/1.1",
            "RFC 9112 §3.2",
            "GET /x HTTP/1.1\r\nX-Test: 1\r\n\r\n",
            BAD,
            false,
        ),
        reject(
            "two Host fields",
            "RFC 9112 §3.2",
            get("Host: other.test\r\n"),
            BAD,
            false,
        ),
        reject(
            "invalid Host value",
            "RFC 9112 §3.2, RFC 9110 §7.2",
            "GET /x HTTP/1.1\r\nHost: a b\r\n\r\n",
            BAD,
            false,
        ),
        reject(
            "whitespace before colon (Host : x)",
            "RFC 9112 §5.1",
            "GET /x HTTP/1.1\r\nHost : conformance.test\r\n\r\n",
            BAD,
            false,
        ),
        reject(
            "whitespace before colon (Transfer-Encoding : chunked)",
            "RFC 9112 §5.1",
            post(
                "Transfer-Encoding : chunked\r\nContent-Length: 5\r\n",
                "0\r\n\r\n",
            ),
            BAD,
            false,
        ),
        reject(
            "NUL in a field value",
            "RFC 9110 §5.5",
            get("X-Test: a\0b\r\n"),
            BAD,
            false,
        ),
        reject(
            "bare CR in a field value",
            "RFC 9110 §5.5",
            get("X-Test: a\rb\r\n"),
            BAD,
            false,
        ),
        reject(
            "invalid character in a field name",
            "RFC 9110 §5.1",
            get("X-Bad@Name: 1\r\n"),
            BAD,
            false,
        ),
        reject(
            "invalid request line (extra token)",
            "RFC 9112 §3",
            "GET /x HTTP/1.1 extra\r\nHost: conformance.test\r\n\r\n",
            BAD,
            false,
        ),
        reject(
            "malformed HTTP version",
            "RFC 9112 §2.3",
            "GET /x HTTP/1.x\r\nHost: conformance.test\r\n\r\n",
            BAD,
            false,
        ),
        reject(
            "unsupported major version HTTP/3.0",
            "RFC 9110 §15.6.6, RFC 9112 §2.3",
            "GET /x HTTP/3.0\r\nHost: conformance.test\r\n\r\n",
            &[400, 505],
            false,
        ),
        // --- Limits.
        reject(
            "request-target longer than max_uri_bytes",
            "RFC 9112 §3, RFC 9110 §15.5.15",
            format!(
                "GET /{} HTTP/1.1\r\nHost: conformance.test\r\n\r\n",
                "a".repeat(9000)
            ),
            &[414],
            false,
        ),
        reject(
            "header section larger than max_header_bytes",
            "RFC 6585 §5, RFC 9110 §5.4",
            get(&format!("X-Big: {}\r\n", "b".repeat(20_000))),
            &[431],
            false,
        ),
        custom(
            "incomplete request head times out with 408",
            "RFC 9110 §15.5.9",
            incomplete_head,
        ),
        // --- Intermediary duties.
        custom(
            "hop-by-hop request fields are not forwarded",
            "RFC 9110 §7.6.1",
            hop_by_hop_request,
        ),
        custom(
            "hop-by-hop response fields are not relayed",
            "RFC 9110 §7.6.1, §11.7.1",
            hop_by_hop_response,
        ),
        custom(
            "Via added to the forwarded request",
            "RFC 9110 §7.6.3",
            via_request,
        ),
        custom(
            "Via appended to an existing Via",
            "RFC 9110 §7.6.3",
            via_appended,
        ),
        custom("Via added to the response", "RFC 9110 §7.6.3", via_response),
        custom(
            "Max-Forwards: 0 on OPTIONS is answered, not forwarded",
            "RFC 9110 §7.6.2",
            max_forwards_zero,
        ),
        custom(
            "Max-Forwards decremented on OPTIONS",
            "RFC 9110 §7.6.2",
            max_forwards_decrement,
        ),
        custom(
            "X-Forwarded-For appended to the existing value",
            "de facto, cf. RFC 7239 §5.2",
            forwarded_for,
        ),
        custom(
            "X-Forwarded-Proto is http",
            "de facto, cf. RFC 7239 §5.4",
            forwarded_proto,
        ),
        custom(
            "X-Forwarded-Host is the original Host",
            "de facto, cf. RFC 7239 §5.3",
            forwarded_host,
        ),
        custom(
            "absolute-form target: Host taken from the target",
            "RFC 9112 §3.2.2",
            absolute_form_host,
        ),
        custom(
            "absolute-form target forwarded in origin-form",
            "RFC 9112 §3.2.1",
            absolute_form_target,
        ),
        // --- Request bodies.
        custom(
            "Content-Length request body forwarded intact",
            "RFC 9112 §6.2",
            content_length_body,
        ),
        custom(
            "chunked request body decoded and forwarded",
            "RFC 9112 §7.1, §6.2",
            chunked_body,
        ),
        custom(
            "request body is not parsed as a second request",
            "RFC 9112 §6.3, §11.2",
            body_not_a_request,
        ),
        // --- Response framing.
        custom(
            "response with both Content-Length and Transfer-Encoding -> 502",
            "RFC 9112 §6.3, §11.2",
            |ctx| status_of(ctx, "/frame/cl-te", 502),
        ),
        custom(
            "response with invalid Content-Length -> 502",
            "RFC 9112 §6.3",
            |ctx| status_of(ctx, "/frame/bad-cl", 502),
        ),
        custom(
            "response with two different Content-Length -> 502",
            "RFC 9112 §6.3",
            |ctx| status_of(ctx, "/frame/two-cl", 502),
        ),
        custom(
            "chunked response (with extension) relayed intact",
            "RFC 9112 §7.1",
            chunked_response,
        ),
        custom(
            "close-delimited response relayed intact",
            "RFC 9112 §6.3",
            close_delimited_response,
        ),
        custom(
            "HEAD response carries no body",
            "RFC 9110 §9.3.2, RFC 9112 §6.3",
            head_no_body,
        ),
        custom(
            "no Transfer-Encoding in a response to HTTP/1.0",
            "RFC 9112 §6.1",
            no_chunked_for_http10,
        ),
        // --- Connection management.
        custom(
            "pipelined requests answered in order",
            "RFC 9112 §9.3.2",
            pipelining,
        ),
        custom(
            "HTTP/1.1 connection persists by default",
            "RFC 9112 §9.3",
            persistent_by_default,
        ),
        custom(
            "HTTP/1.0 request without keep-alive: connection closed",
            "RFC 9112 §9.3",
            http10_closes,
        ),
        custom(
            "Connection: close is honoured",
            "RFC 9112 §9.6",
            connection_close,
        ),
        custom("Expect: 100-continue", "RFC 9110 §10.1.1", expect_continue),
        // --- Errors and methods.
        custom("unreachable upstream -> 502", "RFC 9110 §15.6.3", |ctx| {
            status_of(ctx, "/dead/x", 502)
        }),
        custom(
            "upstream response timeout -> 504",
            "RFC 9110 §15.6.5",
            |ctx| status_of(ctx, "/frame/slow", 504),
        ),
        custom(
            "unknown method (PURGE) is forwarded",
            "RFC 9110 §9.1, §16.1",
            unknown_method,
        ),
        custom(
            "CONNECT is refused (405 with Allow, or 400)",
            "RFC 9110 §9.3.6, §15.5.6",
            connect_refused,
        ),
        // --- Must stay last: looks at every response read above.
        custom(
            "every response is well-formed HTTP/1.1",
            "RFC 9112 §4, §5, §6.2",
            well_formed,
        ),
    ]
}

// ----- helpers ---------------------------------------------------------------------------

fn finish(problems: Vec<String>) -> Result<()> {
    if problems.is_empty() {
        Ok(())
    } else {
        bail!(problems.join("; "))
    }
}

fn describe(response: &Response) -> String {
    format!(
        "{:?} (body {:?})",
        response.head.start_line,
        preview(&response.body, 120)
    )
}

fn expect_status(response: &Response, status: u16) -> Result<()> {
    ensure!(
        response.status == status,
        "expected {status}, got {}",
        describe(response)
    );
    Ok(())
}

fn nothing_forwarded(ctx: &Ctx, problems: &mut Vec<String>) {
    thread::sleep(SETTLE);
    let records = ctx.records();
    if let Some(first) = records.first() {
        problems.push(format!(
            "backend received {} request(s), first: {:?}",
            records.len(),
            first.request_line()
        ));
    }
}

fn rejected(ctx: &Ctx, request: &[u8], statuses: &[u16], close: bool) -> Result<()> {
    let mut problems = Vec::new();
    let mut conn = ctx.conn()?;
    conn.send(request);
    match conn.response(false) {
        Ok(response) if !statuses.contains(&response.status) => {
            problems.push(format!(
                "expected {statuses:?}, got {}",
                describe(&response)
            ));
        }
        Ok(_) => {
            if close && !conn.closed_within(Duration::from_secs(2))? {
                problems.push("connection left open after invalid framing (must close)".into());
            }
        }
        Err(error) => problems.push(format!("expected {statuses:?}: {error:#}")),
    }
    nothing_forwarded(ctx, &mut problems);
    finish(problems)
}

/// `GET path` on a fresh connection; the status must be `status`.
fn status_of(ctx: &Ctx, path: &str, status: u16) -> Result<()> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: conformance.test\r\n\r\n");
    expect_status(&ctx.exchange(request.as_bytes())?, status)
}

/// Sends `request`, expects a 200 and returns the response and what the backend received.
fn forwarded(ctx: &Ctx, request: &str) -> Result<(Response, Head)> {
    let response = ctx.exchange(request.as_bytes())?;
    expect_status(&response, 200)?;
    let (head, _) = ctx.one_record()?;
    Ok((response, head))
}

fn simple_get(path: &str, fields: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: conformance.test\r\n{fields}\r\n")
}

// ----- custom cases ----------------------------------------------------------------------

fn incomplete_head(ctx: &Ctx) -> Result<()> {
    let mut problems = Vec::new();
    let mut conn = ctx.conn()?;
    let sent = Instant::now();
    conn.send(b"GET / HTTP/1.1\r\nHost: conformance.test\r\n");
    match conn.response(false) {
        Ok(response) => {
            let elapsed = sent.elapsed();
            if response.status != 408 {
                problems.push(format!("expected 408, got {}", describe(&response)));
            } else if elapsed > HEAD_TIMEOUT_LIMIT {
                problems.push(format!("408 came after {elapsed:?}"));
            } else if !conn.closed_within(Duration::from_secs(1))? {
                problems.push("connection left open after 408".into());
            }
        }
        Err(error) => problems.push(format!("expected 408: {error:#}")),
    }
    nothing_forwarded(ctx, &mut problems);
    finish(problems)
}

fn hop_by_hop_request(ctx: &Ctx) -> Result<()> {
    let (_, head) = forwarded(
        ctx,
        &simple_get(
            "/hop",
            "Connection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n\
             Proxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: foo\r\n\
             Proxy-Authorization: Basic Zm9vOmJhcg==\r\nX-Normal: yes\r\n",
        ),
    )?;
    let mut problems = Vec::new();
    let leaked: Vec<&str> = [
        "X-Secret",
        "Keep-Alive",
        "Proxy-Connection",
        "TE",
        "Upgrade",
        "Proxy-Authorization",
    ]
    .into_iter()
    .filter(|name| head.has(name))
    .collect();
    if !leaked.is_empty() {
        problems.push(format!("backend received {leaked:?}"));
    }
    if head.has_token("connection", "x-secret") {
        problems.push("backend received `Connection: ... X-Secret`".into());
    }
    if head.get("x-normal") != Some("yes") {
        problems.push("end-to-end field X-Normal was not forwarded".into());
    }
    finish(problems)
}

fn hop_by_hop_response(ctx: &Ctx) -> Result<()> {
    let response = ctx.exchange(simple_get("/frame/hop", "").as_bytes())?;
    expect_status(&response, 200)?;
    let mut problems = Vec::new();
    let leaked: Vec<&str> = ["X-Secret", "Keep-Alive", "Proxy-Authenticate"]
        .into_iter()
        .filter(|name| response.head.has(name))
        .collect();
    if !leaked.is_empty() {
        problems.push(format!("client received {leaked:?}"));
    }
    if response.head.has_token("connection", "x-secret") {
        problems.push("client received `Connection: X-Secret`".into());
    }
    if response.head.get("x-visible") != Some("yes") {
        problems.push("end-to-end field X-Visible was not relayed".into());
    }
    if response.body != b"hop" {
        problems.push(format!("body {:?}, expected \"hop\"", response.text()));
    }
    finish(problems)
}

/// Whether a Via element is `1.1 conformance`, optionally followed by a comment.
fn is_our_via(element: &str) -> bool {
    element == "1.1 conformance" || element.starts_with("1.1 conformance ")
}

fn via_request(ctx: &Ctx) -> Result<()> {
    let (_, head) = forwarded(ctx, &simple_get("/via", ""))?;
    let via = head.list("via");
    ensure!(
        via.iter().any(|e| is_our_via(e)),
        "backend received Via {via:?}, expected `1.1 conformance`"
    );
    Ok(())
}

fn via_appended(ctx: &Ctx) -> Result<()> {
    let (_, head) = forwarded(ctx, &simple_get("/via", "Via: 1.0 client-proxy\r\n"))?;
    let via = head.list("via");
    ensure!(
        via.len() == 2 && via[0] == "1.0 client-proxy" && is_our_via(&via[1]),
        "backend received Via {via:?}, expected [\"1.0 client-proxy\", \"1.1 conformance\"]"
    );
    Ok(())
}

fn via_response(ctx: &Ctx) -> Result<()> {
    let response = ctx.exchange(simple_get("/via", "").as_bytes())?;
    expect_status(&response, 200)?;
    let via = response.head.list("via");
    ensure!(
        via.iter().any(|e| is_our_via(e)),
        "client received Via {via:?}, expected `1.1 conformance`"
    );
    Ok(())
}

fn max_forwards_zero(ctx: &Ctx) -> Result<()> {
    let mut problems = Vec::new();
    let request = "OPTIONS /mf HTTP/1.1\r\nHost: conformance.test\r\nMax-Forwards: 0\r\n\r\n";
    if let Err(error) = ctx.exchange(request.as_bytes()) {
        problems.push(format!("no response: {error:#}"));
    }
    nothing_forwarded(ctx, &mut problems);
    finish(problems)
}

fn max_forwards_decrement(ctx: &Ctx) -> Result<()> {
    let request = "OPTIONS /mf HTTP/1.1\r\nHost: conformance.test\r\nMax-Forwards: 5\r\n\r\n";
    let (_, head) = forwarded(ctx, request)?;
    let value = head.get("max-forwards");
    ensure!(
        value == Some("4"),
        "backend received Max-Forwards {value:?}, expected \"4\""
    );
    Ok(())
}

fn forwarded_for(ctx: &Ctx) -> Result<()> {
    let (_, head) = forwarded(ctx, &simple_get("/xff", "X-Forwarded-For: 203.0.113.7\r\n"))?;
    let list = head.list("x-forwarded-for");
    ensure!(
        list == ["203.0.113.7", "127.0.0.1"],
        "backend received X-Forwarded-For {list:?}, expected [\"203.0.113.7\", \"127.0.0.1\"]"
    );
    Ok(())
}

fn forwarded_proto(ctx: &Ctx) -> Result<()> {
    let (_, head) = forwarded(ctx, &simple_get("/xfp", ""))?;
    let values = head.get_all("x-forwarded-proto");
    ensure!(
        values == ["http"],
        "backend received X-Forwarded-Proto {values:?}, expected [\"http\"]"
    );
    Ok(())
}

fn forwarded_host(ctx: &Ctx) -> Result<()> {
    let (_, head) = forwarded(ctx, &simple_get("/xfh", ""))?;
    let values = head.get_all("x-forwarded-host");
    ensure!(
        values == ["conformance.test"],
        "backend received X-Forwarded-Host {values:?}, expected [\"conformance.test\"]"
    );
    Ok(())
}

const ABSOLUTE: &str = "GET http://conformance.test/abs HTTP/1.1\r\nHost: other\r\n\r\n";

fn absolute_form_host(ctx: &Ctx) -> Result<()> {
    let (_, head) = forwarded(ctx, ABSOLUTE)?;
    let hosts = head.get_all("host");
    ensure!(
        hosts == ["conformance.test"],
        "backend received Host {hosts:?}, expected [\"conformance.test\"]"
    );
    Ok(())
}

fn absolute_form_target(ctx: &Ctx) -> Result<()> {
    let (_, head) = forwarded(ctx, ABSOLUTE)?;
    let target = head.start_line.split(' ').nth(1).unwrap_or_default();
    ensure!(
        target == "/abs",
        "backend received request line {:?}, expected target \"/abs\"",
        head.start_line
    );
    Ok(())
}

fn content_length_body(ctx: &Ctx) -> Result<()> {
    let request =
        "POST /body HTTP/1.1\r\nHost: conformance.test\r\nContent-Length: 11\r\n\r\nhello world";
    forwarded(ctx, request)?;
    let (_, record) = ctx.one_record()?;
    ensure!(
        record.body == b"hello world",
        "backend received body {:?}",
        preview(&record.body, 100)
    );
    Ok(())
}

fn chunked_body(ctx: &Ctx) -> Result<()> {
    let request = "POST /chunked HTTP/1.1\r\nHost: conformance.test\r\nTransfer-Encoding: chunked\r\n\r\n\
                   5;ext=x\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
    let (_, head) = forwarded(ctx, request)?;
    let (_, record) = ctx.one_record()?;
    let mut problems = Vec::new();
    if record.body != b"hello world" {
        problems.push(format!(
            "backend received body {:?}, expected \"hello world\"",
            preview(&record.body, 100)
        ));
    }
    if head.has("content-length") && head.has("transfer-encoding") {
        problems.push("backend received both Content-Length and Transfer-Encoding".into());
    }
    finish(problems)
}

fn body_not_a_request(ctx: &Ctx) -> Result<()> {
    let inner = "GET /smuggled HTTP/1.1\r\nHost: conformance.test\r\n\r\n";
    let request = format!(
        "POST /outer HTTP/1.1\r\nHost: conformance.test\r\nContent-Length: {}\r\n\r\n{inner}",
        inner.len()
    );
    let response = ctx.exchange(request.as_bytes())?;
    expect_status(&response, 200)?;
    thread::sleep(SETTLE);
    let (head, record) = ctx.one_record()?;
    ensure!(
        head.start_line.starts_with("POST /outer ") && record.body == inner.as_bytes(),
        "backend received {:?} with body {:?}",
        head.start_line,
        preview(&record.body, 100)
    );
    Ok(())
}

fn chunked_response(ctx: &Ctx) -> Result<()> {
    let response = ctx.exchange(simple_get("/frame/chunked", "").as_bytes())?;
    expect_status(&response, 200)?;
    ensure!(
        response.body == CHUNKED_BODY,
        "body {:?}, expected {:?}",
        response.text(),
        String::from_utf8_lossy(CHUNKED_BODY)
    );
    Ok(())
}

fn close_delimited_response(ctx: &Ctx) -> Result<()> {
    let response = ctx.exchange(simple_get("/frame/close", "").as_bytes())?;
    expect_status(&response, 200)?;
    let expected = close_body();
    ensure!(
        response.body == expected,
        "body of {} bytes differs from the {} bytes sent (starts {:?})",
        response.body.len(),
        expected.len(),
        preview(&response.body, 40)
    );
    Ok(())
}

fn head_no_body(ctx: &Ctx) -> Result<()> {
    let mut conn = ctx.conn()?;
    conn.send(b"HEAD /head HTTP/1.1\r\nHost: conformance.test\r\n\r\n");
    let response = conn.response(true)?;
    expect_status(&response, 200)?;
    conn.closed_within(Duration::from_millis(500))?;
    let extra = conn.leftover();
    ensure!(
        extra.is_empty(),
        "{} bytes followed the HEAD response head: {:?}",
        extra.len(),
        preview(extra, 80)
    );
    Ok(())
}

fn no_chunked_for_http10(ctx: &Ctx) -> Result<()> {
    let request = "GET /frame/chunked HTTP/1.0\r\nHost: conformance.test\r\n\r\n";
    let response = ctx.exchange(request.as_bytes())?;
    expect_status(&response, 200)?;
    let mut problems = Vec::new();
    if response.head.has("transfer-encoding") {
        problems.push(format!(
            "response to HTTP/1.0 has Transfer-Encoding {:?}",
            response.head.get_all("transfer-encoding")
        ));
    }
    if response.body != CHUNKED_BODY {
        problems.push(format!("body {:?}", response.text()));
    }
    finish(problems)
}

fn echoed_request_line(response: &Response, expected_prefix: &str) -> Result<()> {
    expect_status(response, 200)?;
    ensure!(
        response.text().starts_with(expected_prefix),
        "expected the response to `{expected_prefix}...`, got body {:?}",
        preview(&response.body, 60)
    );
    Ok(())
}

fn pipelining(ctx: &Ctx) -> Result<()> {
    let mut conn = ctx.conn()?;
    conn.send(format!("{}{}", simple_get("/pipe/1", ""), simple_get("/pipe/2", "")).as_bytes());
    let first = conn.response(false)?;
    let second = conn.response(false)?;
    echoed_request_line(&first, "GET /pipe/1 ")?;
    echoed_request_line(&second, "GET /pipe/2 ")
}

fn persistent_by_default(ctx: &Ctx) -> Result<()> {
    let mut conn = ctx.conn()?;
    conn.send(simple_get("/keep/1", "").as_bytes());
    echoed_request_line(&conn.response(false)?, "GET /keep/1 ")?;
    conn.send(simple_get("/keep/2", "").as_bytes());
    let second = conn
        .response(false)
        .map_err(|e| e.context("second request on the same connection"))?;
    echoed_request_line(&second, "GET /keep/2 ")
}

fn http10_closes(ctx: &Ctx) -> Result<()> {
    let mut conn = ctx.conn()?;
    conn.send(b"GET /old HTTP/1.0\r\nHost: conformance.test\r\n\r\n");
    expect_status(&conn.response(false)?, 200)?;
    ensure!(
        conn.closed_within(Duration::from_secs(2))?,
        "connection still open 2 s after the response"
    );
    Ok(())
}

fn connection_close(ctx: &Ctx) -> Result<()> {
    let mut conn = ctx.conn()?;
    conn.send(simple_get("/bye", "Connection: close\r\n").as_bytes());
    expect_status(&conn.response(false)?, 200)?;
    ensure!(
        conn.closed_within(Duration::from_secs(2))?,
        "connection still open 2 s after the response"
    );
    Ok(())
}

fn expect_continue(ctx: &Ctx) -> Result<()> {
    let mut conn = ctx.conn()?;
    conn.send(
        b"POST /expect HTTP/1.1\r\nHost: conformance.test\r\nContent-Length: 5\r\n\
          Expect: 100-continue\r\n\r\n",
    );
    let interim = conn
        .response(false)
        .context("waiting for `100 Continue` (the body is not sent yet)")?;
    ensure!(
        interim.status == 100,
        "expected `HTTP/1.1 100 Continue` before the body was sent, got {}",
        describe(&interim)
    );
    conn.send(b"hello");
    let mut last = conn.response(false)?;
    while last.status == 100 {
        last = conn.response(false)?;
    }
    expect_status(&last, 200)?;
    let (_, record) = ctx.one_record()?;
    ensure!(
        record.body == b"hello",
        "backend received body {:?}",
        preview(&record.body, 40)
    );
    Ok(())
}

fn unknown_method(ctx: &Ctx) -> Result<()> {
    let (_, head) = forwarded(ctx, "PURGE /x HTTP/1.1\r\nHost: conformance.test\r\n\r\n")?;
    ensure!(
        head.start_line.starts_with("PURGE /x "),
        "backend received {:?}",
        head.start_line
    );
    Ok(())
}

fn connect_refused(ctx: &Ctx) -> Result<()> {
    let mut problems = Vec::new();
    match ctx.exchange(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n") {
        Ok(response) if response.status == 405 => {
            if !response.head.has("allow") {
                problems.push("405 without an Allow field".into());
            }
        }
        Ok(response) if response.status == 400 => {}
        Ok(response) => problems.push(format!("expected 405 or 400, got {}", describe(&response))),
        Err(error) => problems.push(format!("expected 405 or 400: {error:#}")),
    }
    nothing_forwarded(ctx, &mut problems);
    finish(problems)
}

fn well_formed(ctx: &Ctx) -> Result<()> {
    let malformed = ctx.tally.malformed();
    let seen = ctx.tally.responses();
    ensure!(
        malformed.is_empty(),
        "{} problem(s) after {seen} readable responses: {}",
        malformed.len(),
        malformed.join("; ")
    );
    ensure!(seen > 0, "no response was read at all");
    Ok(())
}

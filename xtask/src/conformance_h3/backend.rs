//! The origin server behind the proxy for the HTTP/3 suite: std threads, HTTP/1.1 written by
//! hand with the HTTP/1.1 suite's wire syntax, every request recorded.
//!
//! The response is chosen by the last one or two path segments, so that any prefix (a route
//! of the proxy, a case marker) can precede them:
//!
//! | path ends in      | response                                                          |
//! |-------------------|-------------------------------------------------------------------|
//! | `/echo`           | `200`, the request body                                           |
//! | `/bytes/N`        | `200`, `N` bytes of [`pattern`]                                   |
//! | `/status/NNN`     | status `NNN`, a short text body                                   |
//! | `/hop`            | `200`, chunked, with connection-specific fields that must go      |
//! | `/slow/MS`        | waits `MS` milliseconds, then as the default                      |
//! | anything else     | `200`, the raw request head it received                           |
//!
//! A `HEAD` request gets the same head as the `GET` would, without the body.

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use anyhow::Result;

use crate::recorder::{self, Recorder, fill, lock};

use super::wire::{self, Framing, Head};

/// Connection-specific fields `/hop` sends; none may reach an HTTP/3 client (RFC 9114 §4.2).
pub(crate) const HOP_FIELDS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "x-secret",
];

/// The body `/hop` sends, in two chunks.
pub(crate) const HOP_BODY: &[u8] = b"hop-by-hop";

/// One request as the backend read it.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    /// The parsed head.
    pub(crate) head: Head,
    /// The decoded body.
    pub(crate) body: Vec<u8>,
}

impl Recorded {
    /// The request line.
    pub(crate) fn request_line(&self) -> &str {
        &self.head.start_line
    }
}

type Records = recorder::Records<Recorded>;

/// The recording backend of the HTTP/3 suite.
pub(crate) type Backend = Recorder<Recorded>;

impl Recorder<Recorded> {
    /// Binds 127.0.0.1:0 and serves each connection on its own thread.
    pub(crate) fn start() -> Result<Self> {
        Recorder::bind("h3-backend", serve)
    }
}

/// `len` bytes that no short repetition or off-by-one slice reproduces: a 64-bit
/// xorshift stream, so that a truncated, reordered or duplicated range shows up.
pub(crate) fn pattern(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn serve(mut stream: TcpStream, records: &Records) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    loop {
        let Some((head, raw_head, body)) = read_request(&mut stream, &mut buf) else {
            return;
        };
        let close = head.has_token("connection", "close");
        // Recorded before answering, so that a case can see a slow request arrive.
        lock(records).push(Recorded {
            head: head.clone(),
            body: body.clone(),
        });
        let keep_open = respond(&mut stream, &head, &raw_head, &body).unwrap_or(false);
        if close || !keep_open {
            return;
        }
    }
}

/// One complete request (head, raw head, body), or `None` when the connection ended or sent
/// something this backend does not understand (the proxy's requests are always valid; a
/// case sees the gap in the records).
fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(Head, Vec<u8>, Vec<u8>)> {
    let end = loop {
        if let Some(end) = wire::head_end(buf) {
            break end;
        }
        if buf.len() > wire::MAX_HEAD || !fill(stream, buf) {
            return None;
        }
    };
    let raw_head = buf[..end].to_vec();
    let head = Head::parse(&raw_head).ok()?;
    let framing = wire::framing(&head, true).ok()?;
    let (body, used) = loop {
        let available = &buf[end..];
        let done = match framing {
            Framing::Empty | Framing::UntilClose => Some((Vec::new(), 0)),
            Framing::Length(n) => (available.len() >= n).then(|| (available[..n].to_vec(), n)),
            Framing::Chunked => wire::decode_chunked(available).ok()?,
        };
        if let Some(done) = done {
            break done;
        }
        if !fill(stream, buf) {
            return None;
        }
    };
    buf.drain(..end + used);
    Some((head, raw_head, body))
}

/// Writes the response; `Ok(true)` when the connection may be reused.
fn respond(
    stream: &mut TcpStream,
    head: &Head,
    raw_head: &[u8],
    body: &[u8],
) -> std::io::Result<bool> {
    let mut parts = head.start_line.split(' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default();
    let mut segments = path.rsplit('/');
    let last = segments.next().unwrap_or_default();
    let before = segments.next().unwrap_or_default();
    let with_body = method != "HEAD";

    if last == "hop" {
        let mut bytes = b"HTTP/1.1 200 OK\r\nConnection: X-Secret, keep-alive\r\n\
            Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\n\
            X-Secret: 1\r\nX-Visible: yes\r\nContent-Type: text/plain\r\n\
            Transfer-Encoding: chunked\r\n\r\n"
            .to_vec();
        if with_body {
            let (a, b) = HOP_BODY.split_at(3);
            bytes.extend_from_slice(format!("{:x}\r\n", a.len()).as_bytes());
            bytes.extend_from_slice(a);
            bytes.extend_from_slice(format!("\r\n{:x}\r\n", b.len()).as_bytes());
            bytes.extend_from_slice(b);
            bytes.extend_from_slice(b"\r\n0\r\n\r\n");
        }
        stream.write_all(&bytes)?;
        return Ok(true);
    }
    let (status, content): (u16, Vec<u8>) = match (before, last) {
        (_, "echo") => (200, body.to_vec()),
        ("bytes", n) => (200, pattern(n.parse().unwrap_or(0))),
        ("status", code) => {
            let code = code.parse().unwrap_or(500);
            (code, format!("status {code}\n").into_bytes())
        }
        ("slow", ms) => {
            thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
            (200, raw_head.to_vec())
        }
        _ => (200, raw_head.to_vec()),
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/octet-stream\r\n\
         X-Received-Length: {}\r\nContent-Length: {}\r\n\r\n",
        body.len(),
        content.len()
    );
    stream.write_all(head.as_bytes())?;
    if with_body {
        stream.write_all(&content)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::Ipv4Addr;

    use super::*;

    /// Sends `request` on a fresh connection and reads until the backend closes it.
    fn exchange(backend: &Backend, request: &[u8]) -> Result<Vec<u8>> {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, backend.port()))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(request)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        Ok(response)
    }

    #[test]
    fn routes_answer_as_documented() -> Result<()> {
        let backend = Backend::start()?;
        let get =
            |path: &str| format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");

        let bytes = exchange(&backend, get("/c1/bytes/1000").as_bytes())?;
        assert!(bytes.starts_with(b"HTTP/1.1 200 X\r\n"));
        assert!(bytes.ends_with(&pattern(1000)));

        let echo = exchange(
            &backend,
            b"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n\
              3\r\nabc\r\n0\r\n\r\n",
        )?;
        assert!(echo.ends_with(b"X-Received-Length: 3\r\nContent-Length: 3\r\n\r\nabc"));

        let head = exchange(
            &backend,
            b"HEAD /bytes/7 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )?;
        assert!(head.ends_with(b"Content-Length: 7\r\n\r\n"));

        let hop = exchange(&backend, get("/x/hop").as_bytes())?;
        assert!(hop.ends_with(b"3\r\nhop\r\n7\r\n-by-hop\r\n0\r\n\r\n"));

        let status = exchange(&backend, get("/status/404").as_bytes())?;
        assert!(status.starts_with(b"HTTP/1.1 404 X\r\n"));

        let records = backend.records();
        assert_eq!(records.len(), 5);
        assert_eq!(records[1].body, b"abc");
        assert_eq!(records[2].request_line(), "HEAD /bytes/7 HTTP/1.1");
        Ok(())
    }

    #[test]
    fn pattern_has_no_short_period() {
        let bytes = pattern(4096);
        assert_eq!(bytes.len(), 4096);
        assert_ne!(bytes[..256], bytes[256..512]);
        assert_eq!(pattern(100), bytes[..100]);
    }
}

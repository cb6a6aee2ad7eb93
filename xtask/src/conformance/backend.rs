//! The recording origin server behind the proxy: std threads, hand-written HTTP/1.1.
//!
//! Every request it receives is recorded (raw head and decoded body), including incomplete or
//! unparsable ones, so that a case can assert that the proxy forwarded nothing. A normal
//! request gets `200` whose body is the raw request head it received; paths under `/frame/`
//! produce crafted responses for the response-framing cases.

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use anyhow::Result;

use crate::recorder::{self, Recorder, fill, lock};

use super::wire::{self, Framing, Head};

/// Body of `/frame/chunked`, as sent in two chunks.
pub(crate) const CHUNKED_BODY: &[u8] = b"hello, world";

/// How long `/frame/slow` waits before answering.
const SLOW: Duration = Duration::from_secs(3);

/// One request as the backend received it.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    /// The raw head bytes (lossy UTF-8), or whatever arrived of it.
    pub(crate) raw_head: String,
    /// The parsed head; `None` when it was incomplete or invalid (see `problem`).
    pub(crate) head: Option<Head>,
    /// The decoded body (as far as it arrived).
    pub(crate) body: Vec<u8>,
    /// Why the request could not be read completely, if it could not.
    pub(crate) problem: Option<String>,
}

impl Recorded {
    /// The request line (first line of the raw head).
    pub(crate) fn request_line(&self) -> &str {
        self.raw_head.lines().next().unwrap_or_default()
    }
}

type Records = recorder::Records<Recorded>;

/// The recording backend of the HTTP/1.1 and HTTP/2 suites.
pub(crate) type Backend = Recorder<Recorded>;

impl Recorder<Recorded> {
    /// Binds 127.0.0.1:0 and serves each connection on its own thread.
    pub(crate) fn start() -> Result<Self> {
        Recorder::bind("backend", serve)
    }
}

/// A request read completely.
struct Incoming {
    head: Head,
    raw_head: Vec<u8>,
    close: bool,
}

enum Outcome {
    Request(Incoming, Vec<u8>),
    Eof,
    Broken(Recorded),
}

fn serve(mut stream: TcpStream, records: &Records) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    loop {
        match read_request(&mut stream, &mut buf) {
            Outcome::Request(request, body) => {
                lock(records).push(Recorded {
                    raw_head: String::from_utf8_lossy(&request.raw_head).into_owned(),
                    head: Some(request.head.clone()),
                    body,
                    problem: None,
                });
                let keep_open = respond(&mut stream, &request).unwrap_or(false);
                if !keep_open || request.close {
                    return;
                }
            }
            Outcome::Eof => return,
            Outcome::Broken(recorded) => {
                lock(records).push(recorded);
                let _ = stream.write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                return;
            }
        }
    }
}

fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Outcome {
    let broken = |raw: &[u8], body: Vec<u8>, problem: String| {
        Outcome::Broken(Recorded {
            raw_head: String::from_utf8_lossy(raw).into_owned(),
            head: None,
            body,
            problem: Some(problem),
        })
    };
    let end = loop {
        if let Some(end) = wire::head_end(buf) {
            break end;
        }
        if buf.len() > wire::MAX_HEAD {
            return broken(buf, Vec::new(), "head too large".into());
        }
        if !fill(stream, buf) {
            if buf.iter().all(|b| *b == b'\r' || *b == b'\n') {
                return Outcome::Eof;
            }
            return broken(buf, Vec::new(), "connection closed inside the head".into());
        }
    };
    let raw_head = buf[..end].to_vec();
    let head = match Head::parse(&raw_head) {
        Ok(head) => head,
        Err(problem) => return broken(&raw_head, Vec::new(), problem),
    };
    if head.start_line.split(' ').count() != 3 {
        return broken(&raw_head, Vec::new(), "malformed request line".into());
    }
    let framing = match wire::framing(&head, true) {
        Ok(framing) => framing,
        Err(problem) => return broken(&raw_head, Vec::new(), problem),
    };
    if framing != Framing::Empty
        && head.has_token("expect", "100-continue")
        && stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err()
    {
        return broken(&raw_head, Vec::new(), "cannot write 100 Continue".into());
    }
    let (body, used) = loop {
        let available = &buf[end..];
        let done = match framing {
            Framing::Empty | Framing::UntilClose => Some((Vec::new(), 0)),
            Framing::Length(n) => (available.len() >= n).then(|| (available[..n].to_vec(), n)),
            Framing::Chunked => match wire::decode_chunked(available) {
                Ok(done) => done,
                Err(problem) => return broken(&raw_head, available.to_vec(), problem),
            },
        };
        if let Some(done) = done {
            break done;
        }
        if !fill(stream, buf) {
            let partial = buf[end..].to_vec();
            return broken(
                &raw_head,
                partial,
                "connection closed inside the body".into(),
            );
        }
    };
    buf.drain(..end + used);
    let http10 = head.start_line.ends_with("HTTP/1.0");
    let close = head.has_token("connection", "close")
        || (http10 && !head.has_token("connection", "keep-alive"));
    Outcome::Request(
        Incoming {
            head,
            raw_head,
            close,
        },
        body,
    )
}

/// Writes the response for `request`; `Ok(true)` when the connection may be reused.
fn respond(stream: &mut TcpStream, request: &Incoming) -> std::io::Result<bool> {
    let mut parts = request.head.start_line.split(' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default();
    let path = path
        .strip_prefix("http://")
        .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or(path);
    let crafted: Option<&[u8]> = match path {
        "/frame/cl-te" => Some(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n",
        ),
        "/frame/bad-cl" => Some(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello"),
        "/frame/two-cl" => {
            Some(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!")
        }
        "/frame/hop" => Some(
            b"HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n\
              Proxy-Authenticate: x\r\nX-Visible: yes\r\nContent-Length: 3\r\n\r\nhop",
        ),
        _ => None,
    };
    if let Some(bytes) = crafted {
        stream.write_all(bytes)?;
        // The framing tests leave the connection in an unknown state: never reuse it.
        return Ok(path == "/frame/hop");
    }
    match path {
        "/frame/chunked" => {
            stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n",
            )?;
            Ok(true)
        }
        "/frame/close" => {
            stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n",
            )?;
            stream.write_all(&close_body())?;
            let _ = stream.shutdown(std::net::Shutdown::Write);
            Ok(false)
        }
        _ => {
            if path == "/frame/slow" {
                thread::sleep(SLOW);
            }
            let body = &request.raw_head;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes())?;
            if method != "HEAD" {
                stream.write_all(body)?;
            }
            Ok(true)
        }
    }
}

/// Body of `/frame/close`: 10 000 bytes of `a..z`, delimited by the connection close.
pub(crate) fn close_body() -> Vec<u8> {
    (b'a'..=b'z').cycle().take(10_000).collect()
}

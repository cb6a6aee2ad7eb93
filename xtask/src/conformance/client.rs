//! The client side: a raw TCP connection to the proxy with a deadline, and a strict response
//! reader that also notes every response that is not well-formed HTTP/1.1 (RFC 9112 §4, §5,
//! §6.2) in a [`Tally`].

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::wire::{self, Framing, Head, preview};

/// Counts responses read and collects the ones that were not well-formed.
#[derive(Default)]
pub(crate) struct Tally {
    responses: AtomicUsize,
    malformed: Mutex<Vec<String>>,
    case: Mutex<&'static str>,
}

impl Tally {
    /// Number of responses read so far.
    pub(crate) fn responses(&self) -> usize {
        self.responses.load(Ordering::SeqCst)
    }

    /// Everything noted as malformed so far.
    pub(crate) fn malformed(&self) -> Vec<String> {
        self.malformed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Names the case that the following notes belong to.
    pub(crate) fn set_case(&self, name: &'static str) {
        *self.case.lock().unwrap_or_else(PoisonError::into_inner) = name;
    }

    fn note(&self, problem: String) {
        let case = *self.case.lock().unwrap_or_else(PoisonError::into_inner);
        self.malformed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(format!("[{case}] {problem}"));
    }
}

/// A response read from the proxy.
#[derive(Debug)]
pub(crate) struct Response {
    /// The status code.
    pub(crate) status: u16,
    /// Status line and fields.
    pub(crate) head: Head,
    /// The body with the message framing removed.
    pub(crate) body: Vec<u8>,
}

impl Response {
    /// The body as (lossy) text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One client connection to the proxy, with a deadline for everything done on it.
pub(crate) struct Conn<'a> {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
    deadline: Instant,
    tally: &'a Tally,
    /// An HTTP/1.0 request was sent: an `HTTP/1.0` status line is acceptable.
    http10_request: bool,
}

impl<'a> Conn<'a> {
    /// Connects to 127.0.0.1:`port`; everything on this connection must finish within `budget`.
    pub(crate) fn open(port: u16, budget: Duration, tally: &'a Tally) -> Result<Self> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))
            .with_context(|| format!("connecting to the proxy at {address}"))?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(budget))?;
        Ok(Self {
            stream,
            buf: Vec::new(),
            eof: false,
            deadline: Instant::now() + budget,
            tally,
            http10_request: false,
        })
    }

    /// Writes `bytes`. A failed write is not fatal by itself: the proxy may legitimately answer
    /// and close before reading everything (e.g. 414), so the response is still read.
    pub(crate) fn send(&mut self, bytes: &[u8]) {
        let request_line = bytes.split(|&b| b == b'\r').next().unwrap_or_default();
        if request_line.ends_with(b" HTTP/1.0") {
            self.http10_request = true;
        }
        let _ = self.stream.write_all(bytes);
    }

    /// Reads the next complete response; `head_request` when it answers a HEAD request.
    pub(crate) fn response(&mut self, head_request: bool) -> Result<Response> {
        loop {
            if let Some(response) = self.try_parse(head_request)? {
                self.tally.responses.fetch_add(1, Ordering::SeqCst);
                return Ok(response);
            }
            if self.eof {
                if self.buf.is_empty() {
                    bail!("connection closed without a response");
                }
                bail!(
                    "connection closed inside a response (received {:?})",
                    preview(&self.buf, 200)
                );
            }
            if !self.fill(self.deadline)? {
                bail!(
                    "no complete response in time (received {:?})",
                    preview(&self.buf, 200)
                );
            }
        }
    }

    /// Waits until the proxy closes the connection, at most `within`; returns whether it did.
    /// Bytes that arrive meanwhile stay available through [`Conn::leftover`].
    pub(crate) fn closed_within(&mut self, within: Duration) -> Result<bool> {
        let until = (Instant::now() + within).min(self.deadline);
        while !self.eof {
            if !self.fill(until)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Bytes received but not consumed by a response.
    pub(crate) fn leftover(&self) -> &[u8] {
        &self.buf
    }

    /// Reads once, until `until` at the latest; `Ok(false)` on timeout. Sets `eof` on close or
    /// reset (a reset after the response is how some servers close).
    fn fill(&mut self, until: Instant) -> Result<bool> {
        let now = Instant::now();
        if now >= until {
            return Ok(false);
        }
        self.stream.set_read_timeout(Some(until - now))?;
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => self.eof = true,
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(false);
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => self.eof = true,
            Err(e) => return Err(e).context("reading from the proxy"),
        }
        Ok(true)
    }

    fn try_parse(&mut self, head_request: bool) -> Result<Option<Response>> {
        let Some(end) = wire::head_end(&self.buf) else {
            if self.buf.len() > wire::MAX_HEAD {
                bail!("response head larger than {} bytes", wire::MAX_HEAD);
            }
            return Ok(None);
        };
        let head = match Head::parse(&self.buf[..end]) {
            Ok(head) => head,
            Err(problem) => self.malformed(format!("malformed response head: {problem}"))?,
        };
        let status = match parse_status_line(&head.start_line) {
            Ok(status) => status,
            Err(problem) => self.malformed(format!(
                "malformed status line {:?}: {problem}",
                head.start_line
            ))?,
        };
        // Problems that still leave the response readable; noted once it is complete.
        let mut notes = Vec::new();
        let version_ok = head.start_line.starts_with("HTTP/1.1 ")
            || (self.http10_request && head.start_line.starts_with("HTTP/1.0 "));
        if !version_ok {
            // RFC 9110 §6.2: an intermediary sends its own HTTP-version (1.1 here); answering
            // an HTTP/1.0 client with HTTP/1.0 is tolerated.
            notes.push(format!("status line {:?} is not HTTP/1.1", head.start_line));
        }
        let framing = if head_request || status < 200 || status == 204 || status == 304 {
            Framing::Empty
        } else {
            let mut only_te = head.clone();
            if head.has("transfer-encoding") {
                if head.has("content-length") {
                    // RFC 9112 §6.2: a sender MUST NOT send both. Read it as the TE says.
                    notes.push(format!(
                        "{}: both Transfer-Encoding and Content-Length",
                        head.start_line
                    ));
                }
                only_te
                    .fields
                    .retain(|(n, _)| !n.eq_ignore_ascii_case("content-length"));
            }
            match wire::framing(&only_te, false) {
                Ok(framing) => framing,
                Err(problem) => self.malformed(format!(
                    "{}: unreadable framing: {problem}",
                    head.start_line
                ))?,
            }
        };
        let rest = &self.buf[end..];
        let (body, used) = match framing {
            Framing::Empty => (Vec::new(), 0),
            Framing::Length(n) if rest.len() >= n => (rest[..n].to_vec(), n),
            Framing::Length(_) => return Ok(None),
            Framing::Chunked => match wire::decode_chunked(rest) {
                Ok(Some(done)) => done,
                Ok(None) => return Ok(None),
                Err(problem) => {
                    self.malformed(format!("{}: bad chunked body: {problem}", head.start_line))?
                }
            },
            Framing::UntilClose if self.eof => (rest.to_vec(), rest.len()),
            Framing::UntilClose => return Ok(None),
        };
        self.buf.drain(..end + used);
        for note in notes {
            self.tally.note(note);
        }
        Ok(Some(Response { status, head, body }))
    }

    /// Notes an unreadable response in the tally and fails with the same message.
    fn malformed<T>(&self, message: String) -> Result<T> {
        self.tally.note(message.clone());
        bail!(message)
    }
}

/// `HTTP-version SP 3DIGIT SP [reason-phrase]` (RFC 9112 §4).
fn parse_status_line(line: &str) -> Result<u16, String> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    let reason = parts.next().ok_or("missing SP after the status code")?;
    let digits = version.strip_prefix("HTTP/").map(str::as_bytes);
    if !matches!(digits, Some([major, b'.', minor]) if major.is_ascii_digit() && minor.is_ascii_digit())
    {
        return Err(format!("{version:?} is not an HTTP-version"));
    }
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("status code {code:?} is not three digits"));
    }
    if reason.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err("control character in reason phrase".to_owned());
    }
    code.parse().map_err(|e| format!("status code: {e}"))
}

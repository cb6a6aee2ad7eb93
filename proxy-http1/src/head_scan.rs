//! A tiny scanner over the raw request bytes, for what hyper hides from us.
//!
//! hyper drops `Content-Length` from the parsed headers when `Transfer-Encoding` is present
//! (RFC 9112 section 6.1 allows a server to do so and go by the transfer coding). A proxy
//! should refuse such a request outright: it is the classic request-smuggling vector, and the
//! RFC allows that too ("A server MAY reject a request that contains both Content-Length and
//! Transfer-Encoding"). The scanner sees every byte hyper reads, follows the framing far
//! enough to find each request head (skipping `Content-Length` bodies), and reports, for each
//! head in order, which of the two framing fields it contained. After a chunked body it stops
//! (following chunks would mean parsing them twice) until the connection is idle again; a
//! request hyper parses while the scanner is lost is reported as unscanned, and the frontend
//! refuses unscanned requests that use `Transfer-Encoding`. It keeps only the first bytes of
//! each line and never allocates.

/// Set when the head had a `Content-Length` field.
pub(crate) const CONTENT_LENGTH: u8 = 1;
/// Set when the head had a `Transfer-Encoding` field.
pub(crate) const TRANSFER_ENCODING: u8 = 2;

/// Enough of a line for `transfer-encoding:` or `content-length: ` plus 20 digits.
const KEEP: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a head's lines.
    Head,
    /// Skipping this many body bytes.
    Body(u64),
    /// Framing unknown (after a chunked body) until [`HeadScan::resync`].
    Lost,
}

#[derive(Debug)]
pub(crate) struct HeadScan {
    state: State,
    line: [u8; KEEP],
    len: usize,
    /// Bytes in the current line, counting those past `KEEP`.
    total: usize,
    /// The request line has been seen (so the next empty line ends the head).
    past_request_line: bool,
    flags: u8,
    content_length: Option<u64>,
    /// The number of the head being scanned (0 for a connection's first request).
    number: u64,
}

impl HeadScan {
    /// A scanner at the start of a connection.
    pub(crate) fn new() -> Self {
        HeadScan {
            state: State::Head,
            line: [0; KEEP],
            len: 0,
            total: 0,
            past_request_line: false,
            flags: 0,
            content_length: None,
            number: 0,
        }
    }

    /// Starts over at a head boundary known from outside: the connection is idle and the
    /// next head will be request number `next`. Only used when lost.
    pub(crate) fn resync(&mut self, next: u64) {
        if self.state == State::Lost {
            *self = HeadScan {
                number: next,
                ..HeadScan::new()
            };
        }
    }

    /// Feeds the bytes of one read; calls `on_head(number, flags)` for each head completed.
    pub(crate) fn feed(&mut self, mut bytes: &[u8], mut on_head: impl FnMut(u64, u8)) {
        while !bytes.is_empty() {
            match self.state {
                State::Lost => return,
                State::Body(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                    bytes = &bytes[n..];
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Body(left)
                    };
                }
                State::Head => {
                    let mut consumed = bytes.len();
                    for (i, &b) in bytes.iter().enumerate() {
                        match b {
                            b'\r' => {}
                            b'\n' => {
                                if let Some(flags) = self.end_line() {
                                    on_head(self.number, flags);
                                    self.next_head(flags);
                                    consumed = i + 1;
                                    break;
                                }
                            }
                            _ => {
                                if self.len < KEEP {
                                    self.line[self.len] = b.to_ascii_lowercase();
                                    self.len += 1;
                                }
                                self.total += 1;
                            }
                        }
                    }
                    bytes = &bytes[consumed..];
                }
            }
        }
    }

    fn next_head(&mut self, flags: u8) {
        let state = if flags & TRANSFER_ENCODING != 0 {
            State::Lost
        } else {
            match self.content_length {
                Some(n) if n > 0 => State::Body(n),
                _ => State::Head,
            }
        };
        *self = HeadScan {
            state,
            number: self.number + 1,
            ..HeadScan::new()
        };
    }

    fn end_line(&mut self) -> Option<u8> {
        let empty = self.total == 0;
        let len = self.len;
        self.len = 0;
        self.total = 0;
        if empty {
            // An empty line before the request line is tolerated (RFC 9112 section 2.2);
            // after it, it ends the head.
            return self.past_request_line.then_some(self.flags);
        }
        if !self.past_request_line {
            self.past_request_line = true;
            return None;
        }
        let line = &self.line[..len];
        if let Some(value) = field_value(line, b"content-length") {
            self.flags |= CONTENT_LENGTH;
            if self.content_length.is_none() {
                self.content_length = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok());
            }
        } else if field_value(line, b"transfer-encoding").is_some() {
            self.flags |= TRANSFER_ENCODING;
        }
        None
    }
}

fn field_value<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let rest = line.strip_prefix(name)?;
    let colon = rest.iter().position(|&b| b == b':')?;
    rest[..colon]
        .iter()
        .all(|&b| b == b' ' || b == b'\t')
        .then(|| &rest[colon + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> Vec<(u64, u8)> {
        let mut s = HeadScan::new();
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, |n, f| out.push((n, f)));
        }
        out
    }

    #[test]
    fn finds_both_fields_across_reads() {
        let head: &[u8] = b"\r\nPOST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nCONTENT-LENGTH: 4\r\n\r\nbody";
        let chunks: Vec<&[u8]> = head.chunks(3).collect();
        assert_eq!(scan(&chunks), [(0, CONTENT_LENGTH | TRANSFER_ENCODING)]);
    }

    #[test]
    fn follows_pipelined_heads_and_skips_bodies() {
        let stream: &[u8] = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n\
            POST /b HTTP/1.1\r\nContent-Length: 30\r\n\r\n\
            transfer-encoding: x\r\n\r\n\r\n\r\n\
            POST /c HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
            GET /lost HTTP/1.1\r\n\r\n";
        assert_eq!(
            scan(&[stream]),
            [
                (0, 0),
                (1, CONTENT_LENGTH),
                (2, CONTENT_LENGTH | TRANSFER_ENCODING)
            ],
            "the body of /b is skipped; after the chunked /c the scanner is lost"
        );
        let chunks: Vec<&[u8]> = stream.chunks(7).collect();
        assert_eq!(
            scan(&chunks).len(),
            3,
            "same result however the bytes are split"
        );
    }

    #[test]
    fn resync_after_chunked() {
        let mut s = HeadScan::new();
        let mut out = Vec::new();
        s.feed(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            |n, f| out.push((n, f)),
        );
        s.feed(b"GET / HTTP/1.1\r\n\r\n", |n, f| out.push((n, f)));
        assert_eq!(out, [(0, TRANSFER_ENCODING)]);
        s.resync(1);
        s.feed(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", |n, f| {
            out.push((n, f))
        });
        assert_eq!(out, [(0, TRANSFER_ENCODING), (1, CONTENT_LENGTH)]);
    }

    #[test]
    fn field_names_are_exact() {
        let out = scan(&[
            b"GET /content-length: HTTP/1.1\r\nX-Content-Length: 1\r\nContent-Lengthy: 2\r\n\r\n",
        ]);
        assert_eq!(out, [(0, 0)]);
    }

    #[test]
    fn long_lines_do_not_overflow() {
        let long = vec![b'a'; 10_000];
        let out = scan(&[
            b"GET / HTTP/1.1\r\nx-long: ",
            &long,
            b"\r\ntransfer-encoding:chunked\r\n\r\n",
        ]);
        assert_eq!(out, [(0, TRANSFER_ENCODING)]);
    }
}

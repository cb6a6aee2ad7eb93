//! A tiny scanner over the raw bytes of a request head, for what hyper hides from us.
//!
//! hyper drops `Content-Length` from the parsed headers when `Transfer-Encoding` is present
//! (RFC 9112 section 6.1 allows a server to do so and go by the transfer coding). A proxy,
//! though, should refuse such a request outright: it is the classic request-smuggling vector,
//! and the RFC allows that too ("A server MAY reject a request that contains both
//! Content-Length and Transfer-Encoding"). The scanner sees each head's bytes as they are read
//! and records which of the two framing fields it contained. It keeps only the first 18 bytes
//! of each line, never allocates, and stops at the end of the head.

/// Set when the head had a `Content-Length` field.
pub(crate) const CONTENT_LENGTH: u8 = 1;
/// Set when the head had a `Transfer-Encoding` field.
pub(crate) const TRANSFER_ENCODING: u8 = 2;

const KEEP: usize = 18;

#[derive(Debug, Default)]
pub(crate) struct HeadScan {
    line: [u8; KEEP],
    len: usize,
    /// Bytes in the current line, counting those past `KEEP`.
    total: usize,
    /// The request line has been seen (so the next empty line ends the head).
    past_request_line: bool,
    flags: u8,
}

impl HeadScan {
    /// Feeds bytes; returns the flags once the blank line that ends the head is seen, after
    /// which the scanner is reset for the next head.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Option<u8> {
        for &b in bytes {
            match b {
                b'\r' => {}
                b'\n' => {
                    if let Some(flags) = self.end_line() {
                        *self = HeadScan::default();
                        return Some(flags);
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
        None
    }

    fn end_line(&mut self) -> Option<u8> {
        let line = &self.line[..self.len];
        let empty = self.total == 0;
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
        if is_field(line, b"content-length") {
            self.flags |= CONTENT_LENGTH;
        } else if is_field(line, b"transfer-encoding") {
            self.flags |= TRANSFER_ENCODING;
        }
        None
    }
}

fn is_field(line: &[u8], name: &[u8]) -> bool {
    line.starts_with(name) && matches!(line.get(name.len()), Some(b':' | b' ' | b'\t'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_both_fields_across_reads() {
        let mut s = HeadScan::default();
        let head = b"\r\nPOST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nCONTENT-LENGTH: 4\r\n\r\nbody";
        let mut result = None;
        for chunk in head.chunks(3) {
            if let Some(f) = s.feed(chunk) {
                result = Some(f);
                break;
            }
        }
        assert_eq!(result, Some(CONTENT_LENGTH | TRANSFER_ENCODING));
    }

    #[test]
    fn ordinary_heads() {
        let mut s = HeadScan::default();
        assert_eq!(
            s.feed(b"GET / HTTP/1.1\nHost: a\nX-Content-Length: 1\n\n"),
            Some(0)
        );
        assert_eq!(
            s.feed(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n"),
            Some(CONTENT_LENGTH)
        );
        assert_eq!(s.feed(b"GET /content-length: HTTP/1.1\r\n"), None);
        assert_eq!(s.feed(b"\r\n"), Some(0), "the request line is not a field");
    }

    #[test]
    fn long_lines_do_not_overflow() {
        let mut s = HeadScan::default();
        let long = vec![b'a'; 10_000];
        assert_eq!(s.feed(b"GET / HTTP/1.1\r\nx-long: "), None);
        assert_eq!(s.feed(&long), None);
        assert_eq!(
            s.feed(b"\r\ntransfer-encoding:chunked\r\n\r\n"),
            Some(TRANSFER_ENCODING)
        );
    }
}

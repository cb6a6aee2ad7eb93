//! Minimal, strict HTTP/1.1 message syntax (RFC 9112) shared by the recording backend and the
//! client side of the suite. Written by hand so that the suite sees exactly the bytes on the
//! wire and judges them itself.

/// Largest head either side accepts before giving up.
pub(crate) const MAX_HEAD: usize = 1 << 20;

/// Index just after the `CRLF CRLF` that ends a head, if the buffer holds one.
pub(crate) fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// A parsed head: start line and field lines in received order.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    /// Request line or status line.
    pub(crate) start_line: String,
    /// `(name, value)` pairs, value without surrounding whitespace.
    pub(crate) fields: Vec<(String, String)>,
}

impl Head {
    /// Parses a complete head (including its final empty line), enforcing the field syntax of
    /// RFC 9112 §5 / RFC 9110 §5: token names, no whitespace before the colon, no obs-fold, no
    /// CR, LF or NUL (nor other CTLs besides HTAB) in values.
    pub(crate) fn parse(raw: &[u8]) -> Result<Self, String> {
        let raw = raw
            .strip_suffix(b"\r\n\r\n")
            .ok_or("head does not end with CRLF CRLF")?;
        // Every line but the last one ends in CR once split at LF: anything else is a bare LF.
        let count = raw.split(|&b| b == b'\n').count();
        let mut lines = raw.split(|&b| b == b'\n').enumerate().map(|(i, line)| {
            if i + 1 == count {
                Ok(line)
            } else {
                line.strip_suffix(b"\r")
                    .ok_or_else(|| format!("bare LF after {:?}", preview(line, 40)))
            }
        });
        let start = lines.next().ok_or("empty head")??;
        if start.iter().any(|&b| b.is_ascii_control()) {
            return Err(format!(
                "control character in start line {:?}",
                preview(start, 80)
            ));
        }
        let mut fields = Vec::new();
        for line in lines {
            let line = line?;
            if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
                return Err(format!(
                    "obs-fold (line starts with whitespace): {:?}",
                    preview(line, 80)
                ));
            }
            let colon = line
                .iter()
                .position(|&b| b == b':')
                .ok_or_else(|| format!("field line without colon: {:?}", preview(line, 80)))?;
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
                return Err(format!("invalid field name {:?}", preview(name, 80)));
            }
            let value = trim_ows(value);
            if let Some(bad) = value
                .iter()
                .find(|&&b| (b < 0x20 && b != b'\t') || b == 0x7f)
            {
                return Err(format!(
                    "control character 0x{bad:02x} in value of {}",
                    String::from_utf8_lossy(name)
                ));
            }
            fields.push((
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            ));
        }
        Ok(Self {
            start_line: String::from_utf8_lossy(start).into_owned(),
            fields,
        })
    }

    /// The first value of field `name` (case-insensitive).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).into_iter().next()
    }

    /// Every value of field `name` (case-insensitive), in order.
    pub(crate) fn get_all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether field `name` is present at all.
    pub(crate) fn has(&self, name: &str) -> bool {
        !self.get_all(name).is_empty()
    }

    /// The elements of list field `name` across all its lines (RFC 9110 §5.6.1), trimmed.
    pub(crate) fn list(&self, name: &str) -> Vec<String> {
        self.get_all(name)
            .into_iter()
            .flat_map(|v| v.split(','))
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect()
    }

    /// Whether list field `name` contains `token` (case-insensitive).
    pub(crate) fn has_token(&self, name: &str, token: &str) -> bool {
        self.list(name)
            .iter()
            .any(|e| e.eq_ignore_ascii_case(token))
    }
}

/// How the body of a message is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(usize),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// The framing RFC 9112 §6.3 prescribes for `head`, or why the framing is invalid. A
/// `Content-Length` is valid when every list element is the same run of digits.
pub(crate) fn framing(head: &Head, is_request: bool) -> Result<Framing, String> {
    let codings = head.list("transfer-encoding");
    let lengths = head.list("content-length");
    if head.has("transfer-encoding") {
        if !lengths.is_empty() {
            return Err("both Transfer-Encoding and Content-Length".to_owned());
        }
        return match codings.last() {
            Some(last) if last.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked),
            _ if is_request => Err(format!("chunked is not the final coding in {codings:?}")),
            _ => Ok(Framing::UntilClose),
        };
    }
    if head.has("content-length") {
        let first = lengths.first().cloned().unwrap_or_default();
        if first.is_empty()
            || !first.bytes().all(|b| b.is_ascii_digit())
            || lengths.iter().any(|l| *l != first)
        {
            return Err(format!("invalid Content-Length {lengths:?}"));
        }
        return first
            .parse()
            .map(Framing::Length)
            .map_err(|e| format!("Content-Length {first}: {e}"));
    }
    Ok(if is_request {
        Framing::Empty
    } else {
        Framing::UntilClose
    })
}

/// Decodes a chunked body at the start of `buf` (RFC 9112 §7.1), skipping chunk extensions
/// and trailer fields. `Ok(None)` while incomplete; otherwise the data and the bytes used.
pub(crate) fn decode_chunked(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let Some(line_len) = find_crlf(&buf[pos..]) else {
            return Ok(None);
        };
        let line = &buf[pos..pos + line_len];
        let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
        let size_text = trim_ows(size_text);
        if size_text.is_empty()
            || size_text.len() > 15
            || !size_text.iter().all(u8::is_ascii_hexdigit)
        {
            return Err(format!("invalid chunk size line {:?}", preview(line, 40)));
        }
        let size = usize::from_str_radix(&String::from_utf8_lossy(size_text), 16)
            .map_err(|e| format!("chunk size: {e}"))?;
        pos += line_len + 2;
        if size == 0 {
            loop {
                let Some(trailer_len) = find_crlf(&buf[pos..]) else {
                    return Ok(None);
                };
                pos += trailer_len + 2;
                if trailer_len == 0 {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".to_owned());
        }
        pos += size + 2;
    }
}

/// A printable, shortened rendering of raw bytes for messages.
pub(crate) fn preview(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned();
    if bytes.len() > max {
        format!("{text}...")
    } else {
        text
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// `tchar` of RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_head_and_rejects_bad_syntax() -> Result<(), String> {
        let head = Head::parse(b"HTTP/1.1 200 OK\r\nA: 1\r\nVia: x, y\r\nvia: z\r\n\r\n")?;
        assert_eq!(head.start_line, "HTTP/1.1 200 OK");
        assert_eq!(head.get("a"), Some("1"));
        assert_eq!(head.list("VIA"), ["x", "y", "z"]);
        for bad in [
            &b"GET / HTTP/1.1\r\nA : 1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nA: 1\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: \0\r\n\r\n",
            b"GET / HTTP/1.1\nA: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nA@: 1\r\n\r\n",
        ] {
            assert!(Head::parse(bad).is_err(), "{:?}", preview(bad, 60));
        }
        Ok(())
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() -> Result<(), String> {
        let head = |fields: &str| Head::parse(format!("X\r\n{fields}\r\n").as_bytes());
        assert_eq!(framing(&head("")?, true)?, Framing::Empty);
        assert_eq!(framing(&head("")?, false)?, Framing::UntilClose);
        assert_eq!(
            framing(&head("Content-Length: 5, 5\r\n")?, true)?,
            Framing::Length(5)
        );
        assert_eq!(
            framing(&head("Transfer-Encoding: gzip, chunked\r\n")?, true)?,
            Framing::Chunked
        );
        assert!(framing(&head("Transfer-Encoding: chunked, gzip\r\n")?, true).is_err());
        assert!(framing(&head("Content-Length: 5\r\nContent-Length: 6\r\n")?, true).is_err());
        assert!(framing(&head("Content-Length: -5\r\n")?, true).is_err());
        assert!(
            framing(
                &head("Content-Length: 1\r\nTransfer-Encoding: chunked\r\n")?,
                true
            )
            .is_err()
        );
        Ok(())
    }

    #[test]
    fn decodes_chunked_bodies() -> Result<(), String> {
        let full = b"5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        assert_eq!(
            decode_chunked(full)?,
            Some((b"hello!".to_vec(), full.len() - 4))
        );
        assert_eq!(decode_chunked(&full[..10])?, None);
        assert!(decode_chunked(b"zz\r\nhello\r\n").is_err());
        assert!(decode_chunked(b"10000000000000005\r\n").is_err());
        Ok(())
    }
}

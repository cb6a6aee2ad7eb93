//! The HTTP/2 frame layer (RFC 9113 §4.1, §6): the 9-octet frame header, constructors for
//! every frame type, and readable descriptions for transcripts. Malformed frames are built
//! on purpose, so nothing here validates what it encodes.

use std::fmt::Write as _;

/// The client connection preface (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Size of the frame header.
pub(crate) const HEADER_LEN: usize = 9;

/// Frame types (RFC 9113 §6).
pub(crate) mod kind {
    pub(crate) const DATA: u8 = 0x0;
    pub(crate) const HEADERS: u8 = 0x1;
    pub(crate) const PRIORITY: u8 = 0x2;
    pub(crate) const RST_STREAM: u8 = 0x3;
    pub(crate) const SETTINGS: u8 = 0x4;
    pub(crate) const PUSH_PROMISE: u8 = 0x5;
    pub(crate) const PING: u8 = 0x6;
    pub(crate) const GOAWAY: u8 = 0x7;
    pub(crate) const WINDOW_UPDATE: u8 = 0x8;
    pub(crate) const CONTINUATION: u8 = 0x9;
    /// Not defined by any specification: an "extension" frame that must be ignored (§5.5).
    pub(crate) const UNKNOWN: u8 = 0xee;
}

/// Frame flags (RFC 9113 §6).
pub(crate) mod flag {
    pub(crate) const END_STREAM: u8 = 0x1;
    pub(crate) const ACK: u8 = 0x1;
    pub(crate) const END_HEADERS: u8 = 0x4;
    pub(crate) const PADDED: u8 = 0x8;
    pub(crate) const PRIORITY: u8 = 0x20;
}

/// Error codes (RFC 9113 §7).
pub(crate) mod code {
    pub(crate) const NO_ERROR: u32 = 0x0;
    pub(crate) const PROTOCOL_ERROR: u32 = 0x1;
    pub(crate) const INTERNAL_ERROR: u32 = 0x2;
    pub(crate) const FLOW_CONTROL_ERROR: u32 = 0x3;
    pub(crate) const STREAM_CLOSED: u32 = 0x5;
    pub(crate) const FRAME_SIZE_ERROR: u32 = 0x6;
    pub(crate) const REFUSED_STREAM: u32 = 0x7;
    pub(crate) const CANCEL: u32 = 0x8;
    pub(crate) const COMPRESSION_ERROR: u32 = 0x9;
}

/// Setting identifiers (RFC 9113 §6.5.2).
pub(crate) mod setting {
    pub(crate) const HEADER_TABLE_SIZE: u16 = 0x1;
    pub(crate) const ENABLE_PUSH: u16 = 0x2;
    pub(crate) const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub(crate) const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub(crate) const MAX_FRAME_SIZE: u16 = 0x5;
    pub(crate) const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// One frame, as sent or received. `stream` keeps the reserved bit, so that a frame with
/// that bit set can be sent; [`Frame::stream_id`] masks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) kind: u8,
    pub(crate) flags: u8,
    pub(crate) stream: u32,
    pub(crate) payload: Vec<u8>,
}

impl Frame {
    /// Any frame; the length field is taken from `payload`.
    pub(crate) fn new(kind: u8, flags: u8, stream: u32, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            kind,
            flags,
            stream,
            payload: payload.into(),
        }
    }

    pub(crate) fn data(stream: u32, flags: u8, payload: impl Into<Vec<u8>>) -> Self {
        Self::new(kind::DATA, flags, stream, payload)
    }

    pub(crate) fn headers(stream: u32, flags: u8, block: impl Into<Vec<u8>>) -> Self {
        Self::new(kind::HEADERS, flags, stream, block)
    }

    pub(crate) fn continuation(stream: u32, flags: u8, block: impl Into<Vec<u8>>) -> Self {
        Self::new(kind::CONTINUATION, flags, stream, block)
    }

    /// PRIORITY with the 5-octet payload (exclusive bit, dependency, weight).
    pub(crate) fn priority(stream: u32, dependency: u32, exclusive: bool, weight: u8) -> Self {
        Self::new(
            kind::PRIORITY,
            0,
            stream,
            priority_fields(dependency, exclusive, weight),
        )
    }

    pub(crate) fn rst_stream(stream: u32, error: u32) -> Self {
        Self::new(kind::RST_STREAM, 0, stream, error.to_be_bytes())
    }

    pub(crate) fn settings(values: &[(u16, u32)]) -> Self {
        let mut payload = Vec::with_capacity(values.len() * 6);
        for (id, value) in values {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        Self::new(kind::SETTINGS, 0, 0, payload)
    }

    pub(crate) fn settings_ack() -> Self {
        Self::new(kind::SETTINGS, flag::ACK, 0, Vec::new())
    }

    pub(crate) fn ping(flags: u8, opaque: [u8; 8]) -> Self {
        Self::new(kind::PING, flags, 0, opaque)
    }

    pub(crate) fn goaway(stream: u32, last_stream: u32, error: u32) -> Self {
        let mut payload = last_stream.to_be_bytes().to_vec();
        payload.extend_from_slice(&error.to_be_bytes());
        Self::new(kind::GOAWAY, 0, stream, payload)
    }

    pub(crate) fn window_update(stream: u32, increment: u32) -> Self {
        Self::new(kind::WINDOW_UPDATE, 0, stream, increment.to_be_bytes())
    }

    /// The wire form: 24-bit length, type, flags, stream identifier (reserved bit as given),
    /// payload.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let len = u32::try_from(self.payload.len()).unwrap_or(u32::MAX);
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(self.kind);
        out.push(self.flags);
        out.extend_from_slice(&self.stream.to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Parses one frame from the start of `buf`: `None` while it is incomplete, otherwise
    /// the frame and the number of octets it used.
    pub(crate) fn decode(buf: &[u8]) -> Option<(Self, usize)> {
        let header = buf.get(..HEADER_LEN)?;
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let payload = buf.get(HEADER_LEN..HEADER_LEN + len)?;
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]);
        Some((
            Self::new(header[3], header[4], stream, payload),
            HEADER_LEN + len,
        ))
    }

    /// The stream identifier without the reserved bit.
    pub(crate) fn stream_id(&self) -> u32 {
        self.stream & 0x7fff_ffff
    }

    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags & flag == flag
    }

    /// Error code of a RST_STREAM or GOAWAY frame with a well-formed payload.
    pub(crate) fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            kind::RST_STREAM if self.payload.len() == 4 => 0,
            kind::GOAWAY if self.payload.len() >= 8 => 4,
            _ => return None,
        };
        Some(be32(&self.payload[at..at + 4]))
    }

    /// The settings of a SETTINGS frame (a trailing partial entry is ignored).
    pub(crate) fn settings_values(&self) -> Vec<(u16, u32)> {
        self.payload
            .chunks_exact(6)
            .map(|c| (u16::from_be_bytes([c[0], c[1]]), be32(&c[2..6])))
            .collect()
    }

    /// The field block fragment of a HEADERS, PUSH_PROMISE or CONTINUATION frame, with
    /// padding and priority fields removed; `Err` when the padding does not fit.
    pub(crate) fn fragment(&self) -> Result<&[u8], String> {
        let mut body = self.payload.as_slice();
        let mut pad = 0;
        if matches!(self.kind, kind::HEADERS | kind::PUSH_PROMISE) && self.has(flag::PADDED) {
            let (&len, rest) = body
                .split_first()
                .ok_or("PADDED frame without Pad Length")?;
            pad = usize::from(len);
            body = rest;
        }
        if self.kind == kind::HEADERS && self.has(flag::PRIORITY) {
            body = body
                .get(5..)
                .ok_or("PRIORITY flag without priority fields")?;
        }
        if self.kind == kind::PUSH_PROMISE {
            body = body
                .get(4..)
                .ok_or("PUSH_PROMISE without promised stream")?;
        }
        body.get(
            ..body
                .len()
                .checked_sub(pad)
                .ok_or("padding longer than the payload")?,
        )
        .ok_or_else(|| "padding longer than the payload".to_owned())
    }

    /// The data of a DATA frame with padding removed; `Err` when the padding does not fit.
    pub(crate) fn data_payload(&self) -> Result<&[u8], String> {
        if !self.has(flag::PADDED) {
            return Ok(&self.payload);
        }
        let (&len, rest) = self
            .payload
            .split_first()
            .ok_or("PADDED DATA without Pad Length")?;
        let keep = rest
            .len()
            .checked_sub(usize::from(len))
            .ok_or("DATA padding longer than the payload")?;
        Ok(&rest[..keep])
    }

    /// A one-line description for transcripts, e.g. `RST_STREAM s=1 PROTOCOL_ERROR`.
    pub(crate) fn describe(&self) -> String {
        let mut out = format!("{} s={}", kind_name(self.kind), self.stream_id());
        if self.stream & 0x8000_0000 != 0 {
            out.push_str("+R");
        }
        let flags = flag_names(self.kind, self.flags);
        if !flags.is_empty() {
            let _ = write!(out, " [{flags}]");
        }
        match self.kind {
            kind::RST_STREAM | kind::GOAWAY if self.error_code().is_some() => {
                let code = self.error_code().unwrap_or_default();
                if self.kind == kind::GOAWAY {
                    let last = be32(&self.payload[..4]) & 0x7fff_ffff;
                    let _ = write!(out, " last={last}");
                }
                let _ = write!(out, " {}", code_name(code));
                if self.kind == kind::GOAWAY && self.payload.len() > 8 {
                    let debug = String::from_utf8_lossy(&self.payload[8..]);
                    let _ = write!(out, " {:?}", truncate(&debug, 80));
                }
            }
            kind::SETTINGS if !self.payload.is_empty() && self.payload.len().is_multiple_of(6) => {
                let values: Vec<String> = self
                    .settings_values()
                    .iter()
                    .map(|(id, v)| format!("{}={v}", setting_name(*id)))
                    .collect();
                let _ = write!(out, " {{{}}}", values.join(", "));
            }
            kind::WINDOW_UPDATE if self.payload.len() == 4 => {
                let _ = write!(out, " +{}", be32(&self.payload) & 0x7fff_ffff);
            }
            kind::PING if self.payload.len() == 8 => {
                let _ = write!(out, " {:02x?}", self.payload);
            }
            _ => {
                let _ = write!(out, " len={}", self.payload.len());
            }
        }
        out
    }
}

/// The 5-octet priority fields of PRIORITY and of HEADERS with the PRIORITY flag.
pub(crate) fn priority_fields(dependency: u32, exclusive: bool, weight: u8) -> Vec<u8> {
    let dep = if exclusive {
        dependency | 0x8000_0000
    } else {
        dependency
    };
    let mut out = dep.to_be_bytes().to_vec();
    out.push(weight);
    out
}

/// `content` framed with a Pad Length octet declaring `declared` octets of padding, followed
/// by `actual` zero octets. `declared != actual` builds invalid padding.
pub(crate) fn padded(content: &[u8], declared: u8, actual: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + content.len() + actual);
    out.push(declared);
    out.extend_from_slice(content);
    out.resize(out.len() + actual, 0);
    out
}

fn be32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[..4]);
    u32::from_be_bytes(word)
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

/// Name of a frame type.
pub(crate) fn kind_name(kind: u8) -> String {
    let name = match kind {
        kind::DATA => "DATA",
        kind::HEADERS => "HEADERS",
        kind::PRIORITY => "PRIORITY",
        kind::RST_STREAM => "RST_STREAM",
        kind::SETTINGS => "SETTINGS",
        kind::PUSH_PROMISE => "PUSH_PROMISE",
        kind::PING => "PING",
        kind::GOAWAY => "GOAWAY",
        kind::WINDOW_UPDATE => "WINDOW_UPDATE",
        kind::CONTINUATION => "CONTINUATION",
        other => return format!("UNKNOWN(0x{other:02x})"),
    };
    name.to_owned()
}

/// Name of an error code.
pub(crate) fn code_name(code: u32) -> String {
    let name = match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        other => return format!("0x{other:x}"),
    };
    name.to_owned()
}

fn setting_name(id: u16) -> String {
    let name = match id {
        setting::HEADER_TABLE_SIZE => "HEADER_TABLE_SIZE",
        setting::ENABLE_PUSH => "ENABLE_PUSH",
        setting::MAX_CONCURRENT_STREAMS => "MAX_CONCURRENT_STREAMS",
        setting::INITIAL_WINDOW_SIZE => "INITIAL_WINDOW_SIZE",
        setting::MAX_FRAME_SIZE => "MAX_FRAME_SIZE",
        setting::MAX_HEADER_LIST_SIZE => "MAX_HEADER_LIST_SIZE",
        other => return format!("0x{other:x}"),
    };
    name.to_owned()
}

fn flag_names(kind: u8, flags: u8) -> String {
    let known: &[(u8, &str)] = match kind {
        kind::DATA => &[(flag::END_STREAM, "END_STREAM"), (flag::PADDED, "PADDED")],
        kind::HEADERS => &[
            (flag::END_STREAM, "END_STREAM"),
            (flag::END_HEADERS, "END_HEADERS"),
            (flag::PADDED, "PADDED"),
            (flag::PRIORITY, "PRIORITY"),
        ],
        kind::PUSH_PROMISE => &[(flag::END_HEADERS, "END_HEADERS"), (flag::PADDED, "PADDED")],
        kind::CONTINUATION => &[(flag::END_HEADERS, "END_HEADERS")],
        kind::SETTINGS | kind::PING => &[(flag::ACK, "ACK")],
        _ => &[],
    };
    let mut names: Vec<String> = Vec::new();
    let mut rest = flags;
    for (bit, name) in known {
        if flags & bit != 0 {
            names.push((*name).to_owned());
            rest &= !bit;
        }
    }
    if rest != 0 {
        names.push(format!("0x{rest:02x}"));
    }
    names.join("|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frame = Frame::new(
            kind::HEADERS,
            flag::END_HEADERS,
            0x8000_0003,
            b"abc".to_vec(),
        );
        let wire = frame.encode();
        assert_eq!(&wire[..9], &[0, 0, 3, 1, 4, 0x80, 0, 0, 3]);
        let (back, used) = Frame::decode(&wire).unwrap();
        assert_eq!((back.clone(), used), (frame, 12));
        assert_eq!(back.stream_id(), 3);
        assert!(Frame::decode(&wire[..11]).is_none());
    }

    #[test]
    fn payload_accessors() {
        let goaway = Frame::goaway(0, 5, code::PROTOCOL_ERROR);
        assert_eq!(goaway.error_code(), Some(code::PROTOCOL_ERROR));
        assert!(goaway.describe().contains("last=5 PROTOCOL_ERROR"));
        let settings = Frame::settings(&[(setting::MAX_FRAME_SIZE, 16384)]);
        assert_eq!(settings.settings_values(), vec![(5, 16384)]);
        let data = Frame::data(1, flag::PADDED, padded(b"hi", 3, 3));
        assert_eq!(data.data_payload().unwrap(), b"hi");
        let bad = Frame::data(1, flag::PADDED, padded(b"hi", 9, 3));
        assert!(bad.data_payload().is_err());
        let mut block = padded(b"xyz", 2, 2);
        block.splice(1..1, priority_fields(0, false, 16));
        let headers = Frame::headers(1, flag::PADDED | flag::PRIORITY, block);
        assert_eq!(headers.fragment().unwrap(), b"xyz");
    }
}

//! A raw HTTP/2 client for attack tests: exact frames over cleartext TCP (h2c with prior
//! knowledge), for the floods and protocol violations no client library will send.
//!
//! - Frame builders ([`frame`], [`headers`], [`rst_stream`], ...) are pure functions that append
//!   to a `Vec<u8>`, so a test can assemble a whole batch and write it at once.
//! - [`hpack`] is a minimal HPACK encoder (literal fields without indexing, no Huffman) and a
//!   decoder for the one field tests look at, `:status`.
//! - [`H2Conn`] writes bytes, reads [`Frame`]s with a deadline, notices GOAWAY and closes, and
//!   runs paced floods ([`H2Conn::flood`]) that count the frames written before the server
//!   closed.
//!
//! A server that stops an abusive client usually sends GOAWAY, then closes with unread bytes in
//! its receive buffer, which makes the kernel answer further writes with RST: a write failing
//! with `EPIPE` or `ECONNRESET` therefore means "closed", and the GOAWAY that came before it is
//! still readable.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The client connection preface (RFC 9113 section 3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types (RFC 9113 section 6).
pub mod kind {
    /// DATA.
    pub const DATA: u8 = 0x0;
    /// HEADERS.
    pub const HEADERS: u8 = 0x1;
    /// PRIORITY.
    pub const PRIORITY: u8 = 0x2;
    /// RST_STREAM.
    pub const RST_STREAM: u8 = 0x3;
    /// SETTINGS.
    pub const SETTINGS: u8 = 0x4;
    /// PUSH_PROMISE.
    pub const PUSH_PROMISE: u8 = 0x5;
    /// PING.
    pub const PING: u8 = 0x6;
    /// GOAWAY.
    pub const GOAWAY: u8 = 0x7;
    /// WINDOW_UPDATE.
    pub const WINDOW_UPDATE: u8 = 0x8;
    /// CONTINUATION.
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flag {
    /// END_STREAM (DATA, HEADERS).
    pub const END_STREAM: u8 = 0x1;
    /// ACK (SETTINGS, PING).
    pub const ACK: u8 = 0x1;
    /// END_HEADERS (HEADERS, CONTINUATION).
    pub const END_HEADERS: u8 = 0x4;
    /// PADDED (DATA, HEADERS).
    pub const PADDED: u8 = 0x8;
    /// PRIORITY (HEADERS).
    pub const PRIORITY: u8 = 0x20;
}

/// Error codes (RFC 9113 section 7).
pub mod code {
    /// NO_ERROR.
    pub const NO_ERROR: u32 = 0x0;
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: u32 = 0x1;
    /// INTERNAL_ERROR.
    pub const INTERNAL_ERROR: u32 = 0x2;
    /// FLOW_CONTROL_ERROR.
    pub const FLOW_CONTROL_ERROR: u32 = 0x3;
    /// STREAM_CLOSED.
    pub const STREAM_CLOSED: u32 = 0x5;
    /// FRAME_SIZE_ERROR.
    pub const FRAME_SIZE_ERROR: u32 = 0x6;
    /// REFUSED_STREAM.
    pub const REFUSED_STREAM: u32 = 0x7;
    /// CANCEL.
    pub const CANCEL: u32 = 0x8;
    /// COMPRESSION_ERROR.
    pub const COMPRESSION_ERROR: u32 = 0x9;
    /// ENHANCE_YOUR_CALM.
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
}

/// SETTINGS identifiers (RFC 9113 section 6.5.2).
pub mod setting {
    /// SETTINGS_HEADER_TABLE_SIZE.
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    /// SETTINGS_ENABLE_PUSH.
    pub const ENABLE_PUSH: u16 = 0x2;
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    /// SETTINGS_INITIAL_WINDOW_SIZE.
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    /// SETTINGS_MAX_FRAME_SIZE.
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// The name of an error code, for messages.
pub fn code_name(code: u32) -> &'static str {
    match code {
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
        _ => "unknown",
    }
}

// ===== frame builders =====

/// Appends one frame: the 9-byte header (length, type, flags, stream id with the reserved bit
/// clear) and `payload`. Panics if the payload exceeds the 24-bit length field.
pub fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len();
    assert!(len < 1 << 24, "frame payload of {len} bytes");
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Appends a DATA frame.
pub fn data(out: &mut Vec<u8>, stream: u32, end_stream: bool, payload: &[u8]) {
    let flags = if end_stream { flag::END_STREAM } else { 0 };
    frame(out, kind::DATA, flags, stream, payload);
}

/// Appends a HEADERS frame carrying `block` (an HPACK fragment); `flags` from [`flag`]
/// (`END_STREAM`, `END_HEADERS`).
pub fn headers(out: &mut Vec<u8>, stream: u32, flags: u8, block: &[u8]) {
    frame(out, kind::HEADERS, flags, stream, block);
}

/// Appends a CONTINUATION frame; `end_headers` ends the header block.
pub fn continuation(out: &mut Vec<u8>, stream: u32, end_headers: bool, fragment: &[u8]) {
    let flags = if end_headers { flag::END_HEADERS } else { 0 };
    frame(out, kind::CONTINUATION, flags, stream, fragment);
}

/// Appends a RST_STREAM frame with error `code`.
pub fn rst_stream(out: &mut Vec<u8>, stream: u32, code: u32) {
    frame(out, kind::RST_STREAM, 0, stream, &code.to_be_bytes());
}

/// Appends a SETTINGS frame with `(identifier, value)` pairs (none: an empty SETTINGS).
pub fn settings(out: &mut Vec<u8>, values: &[(u16, u32)]) {
    let mut payload = Vec::with_capacity(values.len() * 6);
    for (id, value) in values {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    frame(out, kind::SETTINGS, 0, 0, &payload);
}

/// Appends a SETTINGS acknowledgement.
pub fn settings_ack(out: &mut Vec<u8>) {
    frame(out, kind::SETTINGS, flag::ACK, 0, &[]);
}

/// Appends a PING (or its ACK) with 8 opaque bytes.
pub fn ping(out: &mut Vec<u8>, ack: bool, opaque: [u8; 8]) {
    let flags = if ack { flag::ACK } else { 0 };
    frame(out, kind::PING, flags, 0, &opaque);
}

/// Appends a WINDOW_UPDATE for `stream` (0: the connection). The increment is sent as given,
/// 0 and values over 2^31-1 included.
pub fn window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    frame(
        out,
        kind::WINDOW_UPDATE,
        0,
        stream,
        &increment.to_be_bytes(),
    );
}

/// Appends a PRIORITY frame: `stream` depends on `depends_on` with `weight` (the wire value,
/// weight minus one), exclusive when `exclusive`.
pub fn priority(out: &mut Vec<u8>, stream: u32, depends_on: u32, exclusive: bool, weight: u8) {
    let dep = (depends_on & 0x7fff_ffff) | if exclusive { 0x8000_0000 } else { 0 };
    let mut payload = dep.to_be_bytes().to_vec();
    payload.push(weight);
    frame(out, kind::PRIORITY, 0, stream, &payload);
}

/// Appends a GOAWAY frame.
pub fn goaway(out: &mut Vec<u8>, last_stream: u32, code: u32) {
    let mut payload = (last_stream & 0x7fff_ffff).to_be_bytes().to_vec();
    payload.extend_from_slice(&code.to_be_bytes());
    frame(out, kind::GOAWAY, 0, 0, &payload);
}

/// Appends a complete request head in one HEADERS frame (END_HEADERS, plus END_STREAM when
/// `end_stream`): `:method`, `:scheme http`, `:authority`, `:path`, then `extra`.
pub fn request(
    out: &mut Vec<u8>,
    stream: u32,
    end_stream: bool,
    method: &str,
    authority: &str,
    path: &str,
    extra: &[(&str, &str)],
) {
    let block = hpack::request(method, authority, path, extra);
    let flags = flag::END_HEADERS | if end_stream { flag::END_STREAM } else { 0 };
    headers(out, stream, flags, &block);
}

/// Minimal HPACK (RFC 7541): enough to send requests and read a response's status.
pub mod hpack {
    /// Appends an integer with an `prefix_bits`-bit prefix; `first` holds the pattern bits
    /// above the prefix (RFC 7541 section 5.1).
    pub fn integer(out: &mut Vec<u8>, prefix_bits: u8, first: u8, mut value: usize) {
        let max = (1usize << prefix_bits) - 1;
        if value < max {
            out.push(first | value as u8);
            return;
        }
        out.push(first | max as u8);
        value -= max;
        while value >= 128 {
            out.push((value % 128) as u8 | 0x80);
            value /= 128;
        }
        out.push(value as u8);
    }

    /// Appends a string literal, not Huffman-encoded (section 5.2).
    pub fn string(out: &mut Vec<u8>, s: &[u8]) {
        integer(out, 7, 0x00, s.len());
        out.extend_from_slice(s);
    }

    /// Appends a "literal header field without indexing — new name" (section 6.2.2). The
    /// name is sent as given: HTTP/2 requires lower case, and tests may break that on purpose.
    pub fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
        out.push(0x00);
        string(out, name);
        string(out, value);
    }

    /// A request header block: the four pseudo-fields, then `extra`, all literal.
    pub fn request(method: &str, authority: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        literal(&mut out, b":method", method.as_bytes());
        literal(&mut out, b":scheme", b"http");
        literal(&mut out, b":authority", authority.as_bytes());
        literal(&mut out, b":path", path.as_bytes());
        for (n, v) in extra {
            literal(&mut out, n.as_bytes(), v.as_bytes());
        }
        out
    }

    /// Decodes an integer with a `prefix_bits`-bit prefix at the start of `buf`; returns the
    /// value and the bytes used.
    pub fn decode_integer(buf: &[u8], prefix_bits: u8) -> Option<(usize, usize)> {
        let max = (1usize << prefix_bits) - 1;
        let first = usize::from(*buf.first()?) & max;
        if first < max {
            return Some((first, 1));
        }
        let mut value = max;
        for (i, b) in buf.iter().enumerate().skip(1).take(4) {
            value += usize::from(b & 0x7f) << (7 * (i - 1));
            if b & 0x80 == 0 {
                return Some((value, i + 1));
            }
        }
        None
    }

    /// The `:status` of a response header block, if its first field is one: indexed from the
    /// static table (200, 204, 206, 304, 400, 404, 500) or a literal with the static `:status`
    /// name, raw or Huffman-coded digits. Dynamic-table references give `None`.
    pub fn status(block: &[u8]) -> Option<u16> {
        let mut block = block;
        // Skip dynamic table size updates (001xxxxx).
        while block.first().is_some_and(|b| b & 0xe0 == 0x20) {
            let (_, used) = decode_integer(block, 5)?;
            block = &block[used..];
        }
        let first = *block.first()?;
        if first & 0x80 != 0 {
            let (index, _) = decode_integer(block, 7)?;
            return match index {
                8 => Some(200),
                9 => Some(204),
                10 => Some(206),
                11 => Some(304),
                12 => Some(400),
                13 => Some(404),
                14 => Some(500),
                _ => None,
            };
        }
        // Literal with incremental indexing (01), without indexing (0000), never indexed (0001).
        let (index, used) = if first & 0xc0 == 0x40 {
            decode_integer(block, 6)?
        } else if first & 0xf0 == 0x00 || first & 0xf0 == 0x10 {
            decode_integer(block, 4)?
        } else {
            return None;
        };
        if index != 8 {
            return None;
        }
        let rest = &block[used..];
        let huffman = rest.first()? & 0x80 != 0;
        let (len, used) = decode_integer(rest, 7)?;
        let value = rest.get(used..used + len)?;
        let digits = if huffman {
            huffman_digits(value)?
        } else {
            value.to_vec()
        };
        std::str::from_utf8(&digits).ok()?.parse().ok()
    }

    /// Decodes a Huffman string made only of digits (RFC 7541 appendix B: '0'-'2' are the
    /// 5-bit codes 0-2, '3'-'9' the 6-bit codes 0x19-0x1f); padding is all ones.
    fn huffman_digits(bytes: &[u8]) -> Option<Vec<u8>> {
        let bits: Vec<u8> = bytes
            .iter()
            .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
            .collect();
        let take = |at: usize, n: usize| -> Option<u8> {
            let slice = bits.get(at..at + n)?;
            Some(slice.iter().fold(0, |acc, b| acc << 1 | b))
        };
        let mut out = Vec::new();
        let mut at = 0;
        while at < bits.len() {
            if bits[at..].iter().all(|b| *b == 1) && bits.len() - at < 8 {
                break;
            }
            match take(at, 5)? {
                c @ 0..=2 => {
                    out.push(b'0' + c);
                    at += 5;
                }
                _ => match take(at, 6)? {
                    c @ 0x19..=0x1f => {
                        out.push(b'3' + (c - 0x19));
                        at += 6;
                    }
                    _ => return None,
                },
            }
        }
        Some(out)
    }
}

// ===== frames read =====

/// One frame as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The type ([`kind`]).
    pub kind: u8,
    /// The flags ([`flag`]).
    pub flags: u8,
    /// The stream id (reserved bit cleared).
    pub stream: u32,
    /// The payload, padding and priority fields included.
    pub payload: Vec<u8>,
}

impl Frame {
    /// `(last_stream_id, error_code)` of a GOAWAY frame.
    pub fn goaway(&self) -> Option<(u32, u32)> {
        if self.kind != kind::GOAWAY || self.payload.len() < 8 {
            return None;
        }
        let last = u32::from_be_bytes(self.payload[0..4].try_into().ok()?) & 0x7fff_ffff;
        let code = u32::from_be_bytes(self.payload[4..8].try_into().ok()?);
        Some((last, code))
    }

    /// The error code of a RST_STREAM frame.
    pub fn rst_code(&self) -> Option<u32> {
        if self.kind != kind::RST_STREAM || self.payload.len() != 4 {
            return None;
        }
        Some(u32::from_be_bytes(self.payload[..].try_into().ok()?))
    }

    /// True when END_STREAM is set on a DATA or HEADERS frame.
    pub fn is_end_stream(&self) -> bool {
        (self.kind == kind::DATA || self.kind == kind::HEADERS)
            && self.flags & flag::END_STREAM != 0
    }

    /// True for a SETTINGS or PING acknowledgement.
    pub fn is_ack(&self) -> bool {
        (self.kind == kind::SETTINGS || self.kind == kind::PING) && self.flags & flag::ACK != 0
    }

    /// The header block fragment of a HEADERS frame, without padding and priority fields.
    pub fn header_block(&self) -> Option<&[u8]> {
        if self.kind != kind::HEADERS && self.kind != kind::CONTINUATION {
            return None;
        }
        let mut p = &self.payload[..];
        let mut pad = 0;
        if self.kind == kind::HEADERS && self.flags & flag::PADDED != 0 {
            pad = usize::from(*p.first()?);
            p = &p[1..];
        }
        if self.kind == kind::HEADERS && self.flags & flag::PRIORITY != 0 {
            p = p.get(5..)?;
        }
        p.get(..p.len().checked_sub(pad)?)
    }

    /// The `:status` of a response HEADERS frame, where [`hpack::status`] can decode it.
    pub fn status(&self) -> Option<u16> {
        if self.kind != kind::HEADERS {
            return None;
        }
        hpack::status(self.header_block()?)
    }
}

impl std::fmt::Display for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.kind {
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
            _ => "UNKNOWN",
        };
        write!(
            f,
            "{name}(stream {}, flags {:#x}, {} bytes)",
            self.stream,
            self.flags,
            self.payload.len()
        )?;
        if let Some((last, code)) = self.goaway() {
            write!(f, " last {last} {}", code_name(code))?;
        }
        if let Some(code) = self.rst_code() {
            write!(f, " {}", code_name(code))?;
        }
        Ok(())
    }
}

/// Why [`H2Conn::read_frame`] returned no frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEnd {
    /// End of stream or connection reset.
    Closed,
    /// The deadline passed.
    TimedOut,
}

/// Pacing of [`H2Conn::flood`].
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Rounds assembled into one write.
    pub batch: usize,
    /// Pause after each write, so the server's progress (not the socket buffers) decides how
    /// far the attacker gets.
    pub pause: Duration,
    /// Drain (without consuming) what the server sent after each write, to stop as soon as a
    /// GOAWAY arrives. `false` never reads while flooding: only a failed write ends the flood.
    pub read: bool,
}

/// How a flood went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloodReport {
    /// Rounds written completely before the flood stopped.
    pub rounds: usize,
    /// Frames written completely before the flood stopped.
    pub frames: usize,
    /// Why it stopped.
    pub end: FloodEnd,
    /// How long it ran.
    pub took: Duration,
}

/// Why a flood stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodEnd {
    /// A GOAWAY arrived (only seen with [`Pace::read`]).
    GoAway,
    /// A write failed or the read side ended: the server closed the connection.
    Closed,
    /// A write made no progress for [`WRITE_STALL`]: the server stopped reading but kept the
    /// connection open.
    Stalled,
    /// Every round was written and the connection is still open.
    Finished,
}

/// How long a write may make no progress before a flood calls the connection stalled.
pub const WRITE_STALL: Duration = Duration::from_secs(3);

/// A raw HTTP/2 client connection.
#[derive(Debug)]
pub struct H2Conn {
    stream: TcpStream,
    /// Bytes received and not yet returned as frames.
    buf: Vec<u8>,
    /// Frames parsed ahead (while looking for GOAWAY during a flood), in order.
    ahead: VecDeque<Frame>,
    next_stream: u32,
    frames_written: usize,
    closed: bool,
    goaway: Option<(u32, u32)>,
}

impl H2Conn {
    /// Opens a TCP connection and sends nothing; panics if connecting fails.
    pub async fn connect(addr: SocketAddr) -> H2Conn {
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        let _ = stream.set_nodelay(true);
        H2Conn {
            stream,
            buf: Vec::new(),
            ahead: VecDeque::new(),
            next_stream: 1,
            frames_written: 0,
            closed: false,
            goaway: None,
        }
    }

    /// Connects and completes the HTTP/2 handshake: preface and SETTINGS with `values`, the
    /// server's SETTINGS acknowledged, and the server's acknowledgement of ours received (so
    /// its limits and our settings are both in force). Panics if that takes over 5 s.
    pub async fn handshake(addr: SocketAddr, values: &[(u16, u32)]) -> H2Conn {
        let mut c = H2Conn::connect(addr).await;
        let mut out = PREFACE.to_vec();
        settings(&mut out, values);
        assert!(c.write(&out, 1).await, "writing the preface");
        let deadline = Instant::now() + Duration::from_secs(5);
        let (mut theirs, mut acked) = (false, false);
        while !(theirs && acked) {
            let f = c
                .read_frame(deadline)
                .await
                .unwrap_or_else(|e| panic!("HTTP/2 handshake with {addr}: {e:?}"));
            if f.kind == kind::SETTINGS && f.is_ack() {
                acked = true;
            } else if f.kind == kind::SETTINGS {
                theirs = true;
                let mut ack = Vec::new();
                settings_ack(&mut ack);
                assert!(c.write(&ack, 1).await, "acknowledging SETTINGS");
            } else if f.kind == kind::GOAWAY {
                panic!("GOAWAY during the handshake: {f}");
            }
        }
        c
    }

    /// The next client stream id (1, 3, 5, ...).
    pub fn next_stream_id(&mut self) -> u32 {
        let id = self.next_stream;
        self.next_stream += 2;
        id
    }

    /// Writes `bytes`, which hold `frames` frames, counting them once written. Returns false,
    /// and marks the connection closed, when the write fails (`EPIPE`, `ECONNRESET`: the
    /// server closed) or makes no progress for [`WRITE_STALL`].
    pub async fn write(&mut self, bytes: &[u8], frames: usize) -> bool {
        matches!(self.write_outcome(bytes, frames).await, Ok(()))
    }

    /// Like [`H2Conn::write`], telling a stalled write (`Err(false)`) from a failed one
    /// (`Err(true)`).
    async fn write_outcome(&mut self, bytes: &[u8], frames: usize) -> Result<(), bool> {
        if self.closed {
            return Err(true);
        }
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(WRITE_STALL, write).await {
            Ok(Ok(())) => {
                self.frames_written += frames;
                Ok(())
            }
            Ok(Err(_)) => {
                self.closed = true;
                Err(true)
            }
            Err(_) => Err(false),
        }
    }

    /// Frames written completely so far, preface not counted.
    pub fn frames_written(&self) -> usize {
        self.frames_written
    }

    /// True once a write failed or the read side ended (end of stream or reset).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The first GOAWAY received so far, as `(last_stream_id, error_code)`.
    pub fn goaway_seen(&self) -> Option<(u32, u32)> {
        self.goaway
    }

    /// Takes one complete frame off the front of `buf`.
    fn parse_one(buf: &mut Vec<u8>) -> Option<Frame> {
        if buf.len() < 9 {
            return None;
        }
        let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
        if buf.len() < 9 + len {
            return None;
        }
        let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
        let f = Frame {
            kind: buf[3],
            flags: buf[4],
            stream,
            payload: buf[9..9 + len].to_vec(),
        };
        buf.drain(..9 + len);
        Some(f)
    }

    fn observe(&mut self, f: &Frame) {
        if self.goaway.is_none() {
            self.goaway = f.goaway();
        }
    }

    /// Reads what is available without waiting; parses complete frames into the look-ahead
    /// queue. Notes a close.
    fn drain_available(&mut self) {
        let mut chunk = [0u8; 16 * 1024];
        // Bounded: at most 64 reads (1 MiB) per call.
        for _ in 0..64 {
            match self.stream.try_read(&mut chunk) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.closed = true;
                    break;
                }
            }
        }
        while let Some(f) = H2Conn::parse_one(&mut self.buf) {
            self.observe(&f);
            self.ahead.push_back(f);
        }
    }

    /// Reads the next frame, waiting until `deadline`. Frames after a close that were already
    /// received are still returned; then [`ReadEnd::Closed`].
    pub async fn read_frame(&mut self, deadline: Instant) -> Result<Frame, ReadEnd> {
        if let Some(f) = self.ahead.pop_front() {
            return Ok(f);
        }
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(f) = H2Conn::parse_one(&mut self.buf) {
                self.observe(&f);
                return Ok(f);
            }
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    self.closed = true;
                    return Err(ReadEnd::Closed);
                }
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return Err(ReadEnd::TimedOut),
            }
        }
    }

    /// Reads (and drops) frames until a GOAWAY, the end of the connection or `deadline`;
    /// returns the GOAWAY's `(last_stream_id, error_code)`, also when it was seen earlier.
    pub async fn read_until_goaway(&mut self, deadline: Instant) -> Option<(u32, u32)> {
        // Bounded by the deadline; also by a frame count, against a server that floods us.
        for _ in 0..1_000_000 {
            if let Some(g) = self.goaway {
                return Some(g);
            }
            match self.read_frame(deadline).await {
                Ok(f) => {
                    if let Some(g) = f.goaway() {
                        return Some(g);
                    }
                }
                Err(_) => return self.goaway,
            }
        }
        self.goaway
    }

    /// Reads (and drops) frames until the connection ends; true if it did before `wait`
    /// passed.
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        for _ in 0..1_000_000 {
            match self.read_frame(deadline).await {
                Ok(_) => {}
                Err(ReadEnd::Closed) => return true,
                Err(ReadEnd::TimedOut) => return false,
            }
        }
        false
    }

    /// Reads frames until `deadline` or the end of the connection, and returns them.
    pub async fn read_all(&mut self, deadline: Instant, max: usize) -> Vec<Frame> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.read_frame(deadline).await {
                Ok(f) => out.push(f),
                Err(_) => break,
            }
        }
        out
    }

    /// Writes up to `rounds` rounds of attack frames: `round(i, out)` appends round `i`'s
    /// frames to `out` and returns how many it appended. Rounds go out `pace.batch` at a time
    /// with `pace.pause` after each write; the flood stops at the first failed write (the
    /// server closed), at a GOAWAY when `pace.read`, or when every round is written.
    pub async fn flood(
        &mut self,
        rounds: usize,
        pace: Pace,
        mut round: impl FnMut(usize, &mut Vec<u8>) -> usize,
    ) -> FloodReport {
        let started = Instant::now();
        let batch = pace.batch.max(1);
        let (mut done_rounds, mut done_frames) = (0, 0);
        let mut out = Vec::new();
        let mut end = FloodEnd::Finished;
        while done_rounds < rounds {
            out.clear();
            let n = batch.min(rounds - done_rounds);
            let mut frames = 0;
            for i in done_rounds..done_rounds + n {
                frames += round(i, &mut out);
            }
            match self.write_outcome(&out, frames).await {
                Ok(()) => {
                    done_rounds += n;
                    done_frames += frames;
                }
                Err(true) => {
                    end = FloodEnd::Closed;
                    break;
                }
                Err(false) => {
                    end = FloodEnd::Stalled;
                    break;
                }
            }
            if pace.read {
                self.drain_available();
                if self.goaway.is_some() {
                    end = FloodEnd::GoAway;
                    break;
                }
                if self.closed {
                    end = FloodEnd::Closed;
                    break;
                }
            }
            if !pace.pause.is_zero() {
                tokio::time::sleep(pace.pause).await;
            }
        }
        FloodReport {
            rounds: done_rounds,
            frames: done_frames,
            end,
            took: started.elapsed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpack_integers_round_trip() {
        for (prefix, value) in [
            (5, 10),
            (5, 31),
            (5, 1337),
            (7, 126),
            (7, 127),
            (7, 100_000),
        ] {
            let mut out = Vec::new();
            hpack::integer(&mut out, prefix, 0, value);
            assert_eq!(
                hpack::decode_integer(&out, prefix),
                Some((value, out.len()))
            );
        }
        // RFC 7541 C.1.2: 1337 with a 5-bit prefix.
        let mut out = Vec::new();
        hpack::integer(&mut out, 5, 0, 1337);
        assert_eq!(out, [31, 154, 10]);
    }

    #[test]
    fn status_is_decoded() {
        assert_eq!(hpack::status(&[0x88]), Some(200));
        assert_eq!(hpack::status(&[0x8d]), Some(404));
        // Literal with indexing, name :status, raw "431".
        assert_eq!(hpack::status(&[0x48, 0x03, b'4', b'3', b'1']), Some(431));
        // Huffman "431": 011010 011001 00001 + 7 bits of padding = 0x69 0x90 0xff.
        assert_eq!(hpack::status(&[0x48, 0x83, 0x69, 0x90, 0xff]), Some(431));
        // Huffman "503": 011011 00000 011001 + 7 bits of padding = 0x6c 0x0c 0xff.
        assert_eq!(hpack::status(&[0x48, 0x83, 0x6c, 0x0c, 0xff]), Some(503));
        assert_eq!(hpack::status(&[0xbe]), None);
    }

    #[test]
    fn frames_parse_back() {
        let mut out = Vec::new();
        goaway(&mut out, 7, code::ENHANCE_YOUR_CALM);
        rst_stream(&mut out, 3, code::CANCEL);
        let mut buf = out.clone();
        let g = H2Conn::parse_one(&mut buf).unwrap();
        assert_eq!(g.goaway(), Some((7, code::ENHANCE_YOUR_CALM)));
        let r = H2Conn::parse_one(&mut buf).unwrap();
        assert_eq!((r.stream, r.rst_code()), (3, Some(code::CANCEL)));
        assert!(buf.is_empty());
    }
}

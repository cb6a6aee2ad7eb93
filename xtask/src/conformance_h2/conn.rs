//! The client side: one raw HTTP/2 connection to the proxy with a deadline, frame-level
//! sending, and readers that keep the HPACK decoder in step, record a transcript and judge
//! what the server answers.
//!
//! Everything waits until the connection's deadline at the latest, so a server that ignores
//! a frame costs one case budget, never a hang.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use super::frame::{self, Frame, code, flag, kind, setting};
use super::hpack::{Decoder, Field};

/// Largest frame payload this client accepts (it never announces a larger one).
const CLIENT_MAX_FRAME: usize = 16_384;

/// How long a connection error may trail an unexpected stream error before the case fails.
const ERROR_GRACE: Duration = Duration::from_millis(500);

/// What the server sent, in order.
#[derive(Debug)]
pub(crate) enum Event {
    /// Any frame, including those that carry field block fragments.
    Frame(Frame),
    /// A field block completed by the preceding frame (HEADERS or CONTINUATION), decoded.
    Fields {
        stream: u32,
        fields: Vec<Field>,
        end_stream: bool,
    },
    /// The server closed (or reset) the TCP connection.
    Closed,
}

/// A field block being assembled from HEADERS (or PUSH_PROMISE) and CONTINUATION frames.
struct Partial {
    stream: u32,
    end_stream: bool,
    block: Vec<u8>,
}

/// Which answers count as the error a case expects.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expect {
    /// Acceptable error codes.
    pub(crate) codes: &'static [u32],
    /// `Some(id)`: a stream error (RST_STREAM) on this stream is acceptable; a connection
    /// error always is (RFC 9113 §5.4.1: "an endpoint MAY choose to treat a stream error as
    /// a connection error").
    pub(crate) stream: Option<u32>,
    /// A `400` response on `stream` is acceptable (RFC 9113 §8.1.1: "a server MAY send an
    /// HTTP response prior to closing or resetting the stream").
    pub(crate) status_400: bool,
}

impl Expect {
    /// A connection error with one of `codes`.
    pub(crate) fn connection(codes: &'static [u32]) -> Self {
        Self {
            codes,
            stream: None,
            status_400: false,
        }
    }

    /// A stream error on `stream` (or a connection error) with one of `codes`.
    pub(crate) fn stream(stream: u32, codes: &'static [u32]) -> Self {
        Self {
            codes,
            stream: Some(stream),
            status_400: false,
        }
    }

    /// A malformed request on `stream` (RFC 9113 §8.1.1): stream error PROTOCOL_ERROR, a
    /// connection error PROTOCOL_ERROR, or a 400 response.
    pub(crate) fn malformed(stream: u32) -> Self {
        Self {
            codes: &[code::PROTOCOL_ERROR],
            stream: Some(stream),
            status_400: true,
        }
    }
}

/// How the server answered an expected error.
#[derive(Debug)]
pub(crate) struct Answer {
    /// It was a connection error (GOAWAY or close), not a stream error or a 400.
    pub(crate) connection: bool,
    /// Set when the answer was an accepted substitute.
    pub(crate) note: Option<String>,
}

/// A complete response read from one stream.
#[derive(Debug, Default)]
pub(crate) struct Response {
    /// Final status code.
    pub(crate) status: u16,
    /// The final header section, pseudo-header fields included.
    pub(crate) fields: Vec<Field>,
    /// Content with padding removed.
    pub(crate) body: Vec<u8>,
    /// Trailer section, if any.
    pub(crate) trailers: Vec<Field>,
    /// END_STREAM came on the HEADERS frame itself.
    pub(crate) ended_on_headers: bool,
    /// Number of DATA frames.
    pub(crate) data_frames: usize,
}

impl Response {
    /// The first value of `name` in the header section.
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.fields
            .iter()
            .find(|(n, _)| n == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// The body as (lossy) text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One client connection to the proxy.
pub(crate) struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    closed: bool,
    deadline: Instant,
    decoder: Decoder,
    /// Mirror of the server's decoder, to show the client's field blocks in transcripts.
    sent_decoder: Decoder,
    sent_block: Vec<u8>,
    partial: Option<Partial>,
    events: VecDeque<Event>,
    transcript: Vec<String>,
    /// Transcript entries of the handshake, left out of failure messages.
    handshake_len: usize,
    /// Every setting the server announced, in order.
    server_settings: Vec<(u16, u32)>,
    server_settings_seen: bool,
    /// SETTINGS_HEADER_TABLE_SIZE carried by each SETTINGS frame not yet acknowledged.
    unacked: VecDeque<Option<usize>>,
    next_stream: u32,
    pings: u64,
    resets: Vec<(u32, u32)>,
    /// Answer received DATA with WINDOW_UPDATE frames (off for flow-control cases).
    pub(crate) auto_window: bool,
}

impl Conn {
    /// Connects to 127.0.0.1:`port`; everything on this connection must finish within
    /// `budget`. Sends nothing.
    pub(crate) fn connect(port: u16, budget: Duration) -> Result<Self> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))
            .with_context(|| format!("connecting to the proxy at {address}"))?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(budget))?;
        Ok(Self {
            stream,
            buf: Vec::new(),
            closed: false,
            deadline: Instant::now() + budget,
            decoder: Decoder::default(),
            sent_decoder: Decoder::default(),
            sent_block: Vec::new(),
            partial: None,
            events: VecDeque::new(),
            transcript: Vec::new(),
            handshake_len: 0,
            server_settings: Vec::new(),
            server_settings_seen: false,
            unacked: VecDeque::new(),
            next_stream: 1,
            pings: 0,
            resets: Vec::new(),
            auto_window: true,
        })
    }

    /// Sends the preface and a SETTINGS frame with `settings`, then waits for the server's
    /// SETTINGS (which must come first, RFC 9113 §3.4) and for the ACK of ours.
    pub(crate) fn handshake(&mut self, settings: &[(u16, u32)]) -> Result<()> {
        self.send_raw(frame::PREFACE, "connection preface");
        self.send(&[Frame::settings(settings)]);
        let mut first = true;
        while !(self.server_settings_seen && self.unacked.is_empty()) {
            match self.next(self.deadline)? {
                None => return Err(self.fail("handshake did not complete in time")),
                Some(Event::Closed) => {
                    return Err(self.fail("connection closed during the handshake"));
                }
                Some(Event::Frame(f)) => {
                    let is_settings = f.kind == kind::SETTINGS && !f.has(flag::ACK);
                    if first && !is_settings {
                        return Err(self.fail(&format!(
                            "first frame from the server is {}, not SETTINGS (RFC 9113 §3.4)",
                            f.describe()
                        )));
                    }
                    first = false;
                }
                Some(Event::Fields { .. }) => {}
            }
        }
        self.handshake_len = self.transcript.len();
        Ok(())
    }

    /// A setting the server announced (the last value wins), if it announced it.
    pub(crate) fn server_setting(&self, id: u16) -> Option<u32> {
        self.server_settings
            .iter()
            .rev()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| *v)
    }

    /// The server's SETTINGS_MAX_FRAME_SIZE (default 16 384).
    pub(crate) fn server_max_frame(&self) -> usize {
        self.server_setting(setting::MAX_FRAME_SIZE)
            .map_or(16_384, |v| v as usize)
    }

    /// A new client stream identifier (1, 3, 5, ...).
    pub(crate) fn open_stream(&mut self) -> u32 {
        let id = self.next_stream;
        self.next_stream += 2;
        id
    }

    /// Writes `frames` in one write. A failed write is noted in the transcript but is not
    /// fatal: the server may legitimately close before reading everything.
    pub(crate) fn send(&mut self, frames: &[Frame]) {
        let mut wire = Vec::new();
        for f in frames {
            if f.kind == kind::SETTINGS && !f.has(flag::ACK) {
                let table = f
                    .settings_values()
                    .iter()
                    .rev()
                    .find(|(id, _)| *id == setting::HEADER_TABLE_SIZE)
                    .map(|(_, v)| *v as usize);
                self.unacked.push_back(table);
            }
            let mut line = format!("-> {}", f.describe());
            if let Some(fields) = self.sent_fields(f) {
                line.push(' ');
                line.push_str(&fields);
            }
            self.transcript.push(line);
            wire.extend_from_slice(&f.encode());
        }
        self.write(&wire);
    }

    /// The fields of the client's field block that `f` completes, decoded as the server
    /// should see them, for the transcript.
    fn sent_fields(&mut self, f: &Frame) -> Option<String> {
        let fragment = match f.kind {
            kind::HEADERS | kind::PUSH_PROMISE => {
                self.sent_block.clear();
                f.fragment().ok()?
            }
            kind::CONTINUATION => &f.payload,
            _ => return None,
        };
        self.sent_block.extend_from_slice(fragment);
        if !f.has(flag::END_HEADERS) {
            return None;
        }
        let block = std::mem::take(&mut self.sent_block);
        Some(match self.sent_decoder.decode(&block) {
            Ok(fields) => describe_fields(&fields),
            Err(why) => format!("(not valid HPACK: {why})"),
        })
    }

    /// Writes arbitrary octets, described as `label` in the transcript.
    pub(crate) fn send_raw(&mut self, bytes: &[u8], label: &str) {
        self.transcript.push(format!("-> {label}"));
        self.write(bytes);
    }

    fn write(&mut self, bytes: &[u8]) {
        if let Err(error) = self.stream.write_all(bytes) {
            self.transcript.push(format!("(write failed: {error})"));
        }
    }

    /// The next event, waiting until `until` at the latest (`None` then).
    pub(crate) fn next(&mut self, until: Instant) -> Result<Option<Event>> {
        let until = until.min(self.deadline);
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(Some(event));
            }
            if let Some((f, used)) = Frame::decode(&self.buf) {
                self.buf.drain(..used);
                self.receive(f)?;
                continue;
            }
            if self.closed {
                return Ok(Some(Event::Closed));
            }
            if !self.fill(until)? {
                return Ok(None);
            }
        }
    }

    /// Reads once; `Ok(false)` on timeout. Sets `closed` on EOF or reset.
    fn fill(&mut self, until: Instant) -> Result<bool> {
        let now = Instant::now();
        if now >= until {
            return Ok(false);
        }
        self.stream.set_read_timeout(Some(until - now))?;
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => self.close_noted("closed by the server"),
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(false);
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                self.close_noted("reset by the server");
            }
            Err(e) => return Err(e).context("reading from the proxy"),
        }
        Ok(true)
    }

    fn close_noted(&mut self, how: &str) {
        self.closed = true;
        if self.buf.is_empty() {
            self.transcript.push(format!("<- ({how})"));
        } else {
            self.transcript.push(format!(
                "<- ({how}, {} octets that are not a frame: {:?})",
                self.buf.len(),
                String::from_utf8_lossy(&self.buf[..self.buf.len().min(80)])
            ));
        }
    }

    /// Puts `event` back: the next call to [`Conn::next`] returns it.
    pub(crate) fn unread(&mut self, event: Event) {
        self.events.push_front(event);
    }

    /// Bytes received that did not form a complete frame (e.g. an HTTP/1.1 response).
    pub(crate) fn leftover(&self) -> &[u8] {
        &self.buf
    }

    /// Books one received frame: transcript, field block assembly and decoding, automatic
    /// ACKs (SETTINGS, PING) and window updates. `Err` when the server broke the protocol.
    fn receive(&mut self, f: Frame) -> Result<()> {
        let mut line = format!("<- {}", f.describe());
        if f.payload.len() > CLIENT_MAX_FRAME {
            self.transcript.push(line);
            return Err(self.fail(&format!(
                "server sent a {}-octet frame above the client's SETTINGS_MAX_FRAME_SIZE \
                 {CLIENT_MAX_FRAME} (RFC 9113 §4.2)",
                f.payload.len()
            )));
        }
        if let Some(partial) = &self.partial
            && (f.kind != kind::CONTINUATION || f.stream_id() != partial.stream)
        {
            let stream = partial.stream;
            self.transcript.push(line);
            return Err(self.fail(&format!(
                "server sent {} inside the field block of stream {stream} (RFC 9113 §4.3)",
                frame::kind_name(f.kind)
            )));
        }
        if let Err(why) = sender_rules(&f) {
            self.transcript.push(line);
            return Err(self.fail(&why));
        }
        if f.kind == kind::RST_STREAM {
            self.resets
                .push((f.stream_id(), f.error_code().unwrap_or(u32::MAX)));
        }
        let mut completed = None;
        match f.kind {
            kind::HEADERS | kind::PUSH_PROMISE => {
                let fragment = match f.fragment() {
                    Ok(fragment) => fragment.to_vec(),
                    Err(why) => {
                        self.transcript.push(line);
                        return Err(self.fail(&format!("server frame unreadable: {why}")));
                    }
                };
                let partial = Partial {
                    stream: f.stream_id(),
                    end_stream: f.kind == kind::HEADERS && f.has(flag::END_STREAM),
                    block: fragment,
                };
                if f.has(flag::END_HEADERS) {
                    completed = Some(partial);
                } else {
                    self.partial = Some(partial);
                }
            }
            kind::CONTINUATION => {
                let Some(mut partial) = self.partial.take() else {
                    self.transcript.push(line);
                    return Err(self.fail("server sent CONTINUATION outside a field block"));
                };
                partial.block.extend_from_slice(&f.payload);
                if f.has(flag::END_HEADERS) {
                    completed = Some(partial);
                } else {
                    self.partial = Some(partial);
                }
            }
            kind::SETTINGS if f.has(flag::ACK) => {
                if let Some(Some(size)) = self.unacked.pop_front() {
                    self.decoder.set_limit(size);
                }
            }
            kind::SETTINGS => {
                self.server_settings.extend(f.settings_values());
                self.server_settings_seen = true;
            }
            _ => {}
        }
        if let Some(partial) = completed {
            match self.decoder.decode(&partial.block) {
                Ok(fields) => {
                    line.push_str(&format!(" {}", describe_fields(&fields)));
                    self.transcript.push(line);
                    self.events.push_back(Event::Frame(f.clone()));
                    self.events.push_back(Event::Fields {
                        stream: partial.stream,
                        fields,
                        end_stream: partial.end_stream,
                    });
                }
                Err(why) => {
                    self.transcript.push(line);
                    return Err(self.fail(&format!(
                        "server field block on stream {} is not valid HPACK: {why}",
                        partial.stream
                    )));
                }
            }
        } else {
            self.transcript.push(line);
            self.events.push_back(Event::Frame(f.clone()));
        }
        // Obligations of the client, met at once so that the server never waits on them.
        if f.kind == kind::SETTINGS && !f.has(flag::ACK) {
            self.send(&[Frame::settings_ack()]);
        }
        if f.kind == kind::PING && !f.has(flag::ACK) && f.payload.len() == 8 {
            let mut opaque = [0u8; 8];
            opaque.copy_from_slice(&f.payload);
            self.send(&[Frame::ping(flag::ACK, opaque)]);
        }
        if f.kind == kind::DATA && self.auto_window && !f.payload.is_empty() {
            let n = f.payload.len() as u32;
            let mut updates = vec![Frame::window_update(0, n)];
            if !f.has(flag::END_STREAM) {
                updates.push(Frame::window_update(f.stream_id(), n));
            }
            self.send(&updates);
        }
        Ok(())
    }

    /// An error that carries the frames exchanged after the handshake.
    pub(crate) fn fail(&self, message: &str) -> anyhow::Error {
        let after = &self.transcript[self.handshake_len.min(self.transcript.len())..];
        let skipped = after.len().saturating_sub(24);
        let shown = after[skipped..].join(" ");
        if skipped > 0 {
            anyhow!("{message}; frames: ... {shown}")
        } else {
            anyhow!("{message}; frames: {shown}")
        }
    }

    /// Waits for the error `expect` describes. `Ok(note)`: accepted, with a note when the
    /// answer was an acceptable substitute (a generic error code, RFC 9113 §5.4, or a
    /// close without GOAWAY, §5.4.1).
    pub(crate) fn expect_error(&mut self, expect: Expect) -> Result<Option<String>> {
        self.expect_answer(expect).map(|answer| answer.note)
    }

    /// Like [`Conn::expect_error`], and also tells whether the connection ended.
    pub(crate) fn expect_answer(&mut self, expect: Expect) -> Result<Answer> {
        let wanted = expect
            .codes
            .iter()
            .map(|c| frame::code_name(*c))
            .collect::<Vec<_>>()
            .join(" or ");
        let mut until = self.deadline;
        let mut wrong_stream_error: Option<String> = None;
        loop {
            let Some(event) = self.next(until)? else {
                let why = match &wrong_stream_error {
                    Some(rst) => format!(
                        "expected a connection error {wanted}, got only the stream error {rst}"
                    ),
                    None => format!("no {wanted} error within the case budget"),
                };
                return Err(self.fail(&why));
            };
            match event {
                Event::Closed => {
                    return Ok(Answer {
                        connection: true,
                        note: Some(format!(
                            "connection closed without GOAWAY (accepted for {wanted})"
                        )),
                    });
                }
                Event::Frame(f) if f.kind == kind::GOAWAY => {
                    let code = f.error_code().unwrap_or(u32::MAX);
                    let note = self.judge_code(code, expect.codes, &wanted, &f.describe())?;
                    return Ok(Answer {
                        connection: true,
                        note,
                    });
                }
                Event::Frame(f) if f.kind == kind::RST_STREAM => {
                    let code = f.error_code().unwrap_or(u32::MAX);
                    if expect.stream == Some(f.stream_id()) {
                        let note = self.judge_code(code, expect.codes, &wanted, &f.describe())?;
                        return Ok(Answer {
                            connection: false,
                            note,
                        });
                    }
                    if wrong_stream_error.is_none() {
                        wrong_stream_error = Some(f.describe());
                        until = Instant::now() + ERROR_GRACE;
                    }
                }
                Event::Fields { stream, fields, .. } if expect.stream == Some(stream) => {
                    let status = status_of(&fields);
                    if status.is_some_and(|s| (100..200).contains(&s)) {
                        continue;
                    }
                    if expect.status_400 && status == Some(400) {
                        return Ok(Answer {
                            connection: false,
                            note: None,
                        });
                    }
                    return Err(self.fail(&format!(
                        "response {} on stream {stream} where {wanted} was expected",
                        status.map_or_else(|| "without :status".to_owned(), |s| s.to_string())
                    )));
                }
                _ => {}
            }
        }
    }

    fn judge_code(
        &self,
        code: u32,
        codes: &[u32],
        wanted: &str,
        seen: &str,
    ) -> Result<Option<String>> {
        if codes.contains(&code) {
            return Ok(None);
        }
        if matches!(code, code::PROTOCOL_ERROR | code::INTERNAL_ERROR) {
            // RFC 9113 §5.4: "a generic error code (such as PROTOCOL_ERROR or
            // INTERNAL_ERROR) can always be used in place of more specific error codes."
            return Ok(Some(format!(
                "{seen}: generic code instead of {wanted} (allowed by RFC 9113 §5.4)"
            )));
        }
        Err(self.fail(&format!("{seen}, expected {wanted}")))
    }

    /// Reads the complete response on `stream`, validating it (RFC 9113 §8.1, §8.2, §8.3).
    /// `head_request`: it answers HEAD, so content-length need not match.
    pub(crate) fn response(&mut self, stream: u32, head_request: bool) -> Result<Response> {
        self.responses(&[stream], head_request)?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("no response"))
    }

    /// Reads the complete responses on `streams`, in any interleaving, and validates them.
    pub(crate) fn responses(
        &mut self,
        streams: &[u32],
        head_request: bool,
    ) -> Result<Vec<Response>> {
        let mut state: Vec<(Option<Response>, bool)> =
            streams.iter().map(|_| (None, false)).collect();
        while !state.iter().all(|(_, done)| *done) {
            let pending: Vec<u32> = streams
                .iter()
                .zip(&state)
                .filter(|(_, (_, done))| !done)
                .map(|(s, _)| *s)
                .collect();
            let Some(event) = self.next(self.deadline)? else {
                return Err(self.fail(&format!(
                    "no complete response on stream(s) {pending:?} in time"
                )));
            };
            let slot = |id: u32| streams.iter().position(|s| *s == id);
            match event {
                Event::Closed => {
                    return Err(self.fail(&format!(
                        "connection closed before the response on stream(s) {pending:?} completed"
                    )));
                }
                Event::Frame(f)
                    if f.kind == kind::GOAWAY && f.error_code() != Some(code::NO_ERROR) =>
                {
                    return Err(self.fail("connection error before the response completed"));
                }
                Event::Frame(f)
                    if f.kind == kind::RST_STREAM && pending.contains(&f.stream_id()) =>
                {
                    return Err(self.fail(&format!(
                        "stream {} reset before its response completed",
                        f.stream_id()
                    )));
                }
                Event::Frame(f) if f.kind == kind::DATA => {
                    let Some(i) = slot(f.stream_id()) else {
                        continue;
                    };
                    let data = f.data_payload().map_err(|why| self.fail(&why))?.to_vec();
                    let (response, done) = &mut state[i];
                    if *done {
                        return Err(self.fail("DATA after END_STREAM (RFC 9113 §5.1)"));
                    }
                    let Some(r) = response.as_mut() else {
                        return Err(self.fail("DATA before the response HEADERS (RFC 9113 §8.1)"));
                    };
                    r.body.extend_from_slice(&data);
                    r.data_frames += 1;
                    *done = f.has(flag::END_STREAM);
                }
                Event::Fields {
                    stream,
                    fields,
                    end_stream,
                } => {
                    let Some(i) = slot(stream) else { continue };
                    let (response, done) = &mut state[i];
                    if *done {
                        return Err(self.fail("HEADERS after END_STREAM (RFC 9113 §5.1)"));
                    }
                    if let Some(r) = response.as_mut() {
                        if !end_stream {
                            return Err(
                                self.fail("second field block without END_STREAM (RFC 9113 §8.1)")
                            );
                        }
                        r.trailers = fields;
                        *done = true;
                        continue;
                    }
                    let status = status_of(&fields).unwrap_or(0);
                    if (100..200).contains(&status) {
                        if end_stream {
                            return Err(
                                self.fail("interim response with END_STREAM (RFC 9113 §8.1)")
                            );
                        }
                        continue;
                    }
                    *response = Some(Response {
                        status,
                        fields,
                        ended_on_headers: end_stream,
                        ..Response::default()
                    });
                    *done = end_stream;
                }
                _ => {}
            }
        }
        let mut out = Vec::with_capacity(streams.len());
        for (stream, (response, _)) in streams.iter().zip(state) {
            let response = response.unwrap_or_default();
            if let Err(why) = check_response(&response, head_request) {
                return Err(self.fail(&format!("malformed response on stream {stream}: {why}")));
            }
            out.push(response);
        }
        Ok(out)
    }

    /// Waits until every SETTINGS frame sent so far is acknowledged (RFC 9113 §6.5.3).
    pub(crate) fn settled(&mut self) -> Result<()> {
        while !self.unacked.is_empty() {
            match self.next(self.deadline)? {
                None => return Err(self.fail("SETTINGS not acknowledged in time")),
                Some(Event::Closed) => {
                    return Err(self.fail("connection closed instead of a SETTINGS ACK"));
                }
                Some(Event::Frame(f)) if f.kind == kind::GOAWAY => {
                    return Err(self.fail("GOAWAY instead of a SETTINGS ACK"));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Every RST_STREAM received so far: `(stream, error code)`.
    pub(crate) fn resets(&self) -> &[(u32, u32)] {
        &self.resets
    }

    /// Sends a PING and waits for its ACK: the server is still processing this connection.
    /// Fails on GOAWAY, close, or a PING ACK with another payload.
    pub(crate) fn ping_alive(&mut self) -> Result<()> {
        self.pings += 1;
        let opaque = (0x7068_696e_6700_0000 + self.pings).to_be_bytes();
        self.send(&[Frame::ping(0, opaque)]);
        loop {
            match self.next(self.deadline)? {
                None => return Err(self.fail("no PING ACK in time")),
                Some(Event::Closed) => {
                    return Err(self.fail("connection closed instead of a PING ACK"));
                }
                Some(Event::Frame(f)) if f.kind == kind::GOAWAY => {
                    return Err(self.fail("GOAWAY instead of a PING ACK"));
                }
                Some(Event::Frame(f)) if f.kind == kind::PING && f.has(flag::ACK) => {
                    if f.payload == opaque {
                        return Ok(());
                    }
                    return Err(self.fail("PING ACK with an unexpected payload"));
                }
                Some(_) => {}
            }
        }
    }

    /// Waits until the server closes the connection; `Ok(true)` when it did in time.
    pub(crate) fn closed_in_time(&mut self) -> Result<bool> {
        loop {
            match self.next(self.deadline)? {
                None => return Ok(false),
                Some(Event::Closed) => return Ok(true),
                Some(_) => {}
            }
        }
    }
}

/// What every frame from the server must respect whatever the case: unused flags and the
/// reserved bit unset (RFC 9113 §4.1), fixed lengths (§6.4, §6.5, §6.7, §6.9), and stream
/// identifiers where the frame type needs one (§6).
fn sender_rules(f: &Frame) -> Result<(), String> {
    let defined = match f.kind {
        kind::DATA => flag::END_STREAM | flag::PADDED,
        kind::HEADERS => flag::END_STREAM | flag::END_HEADERS | flag::PADDED | flag::PRIORITY,
        kind::PUSH_PROMISE => flag::END_HEADERS | flag::PADDED,
        kind::CONTINUATION => flag::END_HEADERS,
        kind::SETTINGS | kind::PING => flag::ACK,
        _ => 0,
    };
    let what = f.describe();
    if f.flags & !defined != 0 && f.kind <= kind::CONTINUATION {
        return Err(format!(
            "server set undefined flags: {what} (RFC 9113 §4.1)"
        ));
    }
    if f.stream & 0x8000_0000 != 0 {
        return Err(format!(
            "server set the reserved bit: {what} (RFC 9113 §4.1)"
        ));
    }
    let connection_level = matches!(f.kind, kind::SETTINGS | kind::PING | kind::GOAWAY);
    let stream_level = matches!(
        f.kind,
        kind::DATA
            | kind::HEADERS
            | kind::PRIORITY
            | kind::RST_STREAM
            | kind::PUSH_PROMISE
            | kind::CONTINUATION
    );
    if (connection_level && f.stream_id() != 0) || (stream_level && f.stream_id() == 0) {
        return Err(format!(
            "server frame on the wrong stream: {what} (RFC 9113 §6)"
        ));
    }
    let length_ok = match f.kind {
        kind::PRIORITY => f.payload.len() == 5,
        kind::RST_STREAM | kind::WINDOW_UPDATE => f.payload.len() == 4,
        kind::PING => f.payload.len() == 8,
        kind::SETTINGS if f.has(flag::ACK) => f.payload.is_empty(),
        kind::SETTINGS => f.payload.len().is_multiple_of(6),
        kind::GOAWAY => f.payload.len() >= 8,
        _ => true,
    };
    if !length_ok {
        return Err(format!(
            "server frame with an invalid length: {what} (RFC 9113 §6)"
        ));
    }
    Ok(())
}

/// The `:status` of a response header section.
pub(crate) fn status_of(fields: &[Field]) -> Option<u16> {
    fields
        .iter()
        .find(|(n, _)| n == b":status")
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
}

/// Fields for the transcript, e.g. `{:status: 200, content-length: 12}`.
fn describe_fields(fields: &[Field]) -> String {
    let shown: Vec<String> = fields
        .iter()
        .take(8)
        .map(|(n, v)| {
            let v = String::from_utf8_lossy(v);
            let v = if v.chars().any(|c| c.is_control()) || v.starts_with(' ') || v.ends_with(' ') {
                format!("{v:?}").into()
            } else {
                v
            };
            let v: String = if v.chars().count() > 40 {
                v.chars().take(40).chain("...".chars()).collect()
            } else {
                v.into_owned()
            };
            format!("{}: {v}", String::from_utf8_lossy(n))
        })
        .collect();
    let more = fields.len().saturating_sub(8);
    if more > 0 {
        format!("{{{}, +{more}}}", shown.join(", "))
    } else {
        format!("{{{}}}", shown.join(", "))
    }
}

/// Connection-specific fields an HTTP/2 message must not carry (RFC 9113 §8.2.2).
pub(crate) const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// RFC 9113 §8.2.1, §8.2.2, §8.3 and §8.3.2 for a response, plus the content-length rule of
/// §8.1.1.
fn check_response(r: &Response, head_request: bool) -> Result<(), String> {
    let mut regular_seen = false;
    let mut statuses = 0;
    for (name, value) in &r.fields {
        let shown = String::from_utf8_lossy(name);
        if name.first() == Some(&b':') {
            if regular_seen {
                return Err(format!(
                    "pseudo-header {shown} after a regular field (§8.3)"
                ));
            }
            if name != b":status" {
                return Err(format!("pseudo-header {shown} in a response (§8.3)"));
            }
            statuses += 1;
            if value.len() != 3 || !value.iter().all(u8::is_ascii_digit) {
                return Err(format!(
                    ":status {:?} is not three digits (§8.3.2)",
                    String::from_utf8_lossy(value)
                ));
            }
        } else {
            regular_seen = true;
            check_field(name, value)?;
            if CONNECTION_SPECIFIC
                .iter()
                .any(|c| c.as_bytes() == name.as_slice())
            {
                return Err(format!("connection-specific field {shown} (§8.2.2)"));
            }
            if name == b"te" {
                return Err("TE in a response (§8.2.2)".into());
            }
        }
    }
    if statuses != 1 {
        return Err(format!("{statuses} :status fields (§8.3.2: exactly one)"));
    }
    for (name, value) in &r.trailers {
        if name.first() == Some(&b':') {
            return Err(format!(
                "pseudo-header {} in trailers (§8.1)",
                String::from_utf8_lossy(name)
            ));
        }
        check_field(name, value)?;
    }
    let no_content = head_request || r.status == 204 || r.status == 304;
    if let Some(length) = r.header("content-length")
        && !no_content
        && length.parse::<usize>().ok() != Some(r.body.len())
    {
        return Err(format!(
            "content-length {length} but {} octets of DATA (§8.1.1)",
            r.body.len()
        ));
    }
    if no_content && !r.body.is_empty() {
        return Err(format!(
            "{} octets of content where none is allowed",
            r.body.len()
        ));
    }
    Ok(())
}

/// The minimal field validation every HTTP/2 implementation must perform (RFC 9113 §8.2.1).
fn check_field(name: &[u8], value: &[u8]) -> Result<(), String> {
    let shown = String::from_utf8_lossy(name);
    if name.is_empty() {
        return Err("empty field name".into());
    }
    if let Some(bad) = name
        .iter()
        .find(|&&b| b <= 0x20 || b.is_ascii_uppercase() || b >= 0x7f || b == b':')
    {
        return Err(format!(
            "field name {shown:?} contains 0x{bad:02x} (§8.2.1)"
        ));
    }
    if let Some(bad) = value.iter().find(|&&b| matches!(b, 0 | b'\r' | b'\n')) {
        return Err(format!("value of {shown} contains 0x{bad:02x} (§8.2.1)"));
    }
    if value.first().is_some_and(|b| matches!(b, b' ' | b'\t'))
        || value.last().is_some_and(|b| matches!(b, b' ' | b'\t'))
    {
        return Err(format!(
            "value of {shown} starts or ends with whitespace (§8.2.1)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: &str, v: &str) -> Field {
        (n.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[test]
    fn response_rules() {
        let mut ok = Response {
            status: 200,
            fields: vec![field(":status", "200"), field("content-length", "2")],
            body: b"hi".to_vec(),
            ..Response::default()
        };
        assert!(check_response(&ok, false).is_ok());
        ok.fields.push(field("connection", "close"));
        assert!(check_response(&ok, false).is_err());
        let late_pseudo = Response {
            status: 200,
            fields: vec![field("a", "b"), field(":status", "200")],
            ..Response::default()
        };
        assert!(check_response(&late_pseudo, false).is_err());
        let head = Response {
            status: 200,
            fields: vec![field(":status", "200"), field("content-length", "9")],
            ..Response::default()
        };
        assert!(check_response(&head, true).is_ok());
        assert!(check_response(&head, false).is_err());
        assert!(check_field(b"X-Up", b"1").is_err());
        assert!(check_field(b"x", b" 1").is_err());
        assert!(check_field(b"x", b"a\0").is_err());
    }
}

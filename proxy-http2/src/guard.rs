//! A frame-level watchdog under the h2 codec: it reads the client's frame headers as the bytes
//! go past and trips on the floods that h2 absorbs without closing the connection.
//!
//! h2 bounds the memory of SETTINGS and PING floods (one pending ACK each) and ignores empty
//! DATA frames, but it keeps spending CPU on them for as long as the client sends; it also has
//! no rate limit on client resets that do not sit in the accept queue. The guard counts those
//! frames per window and, once a limit is passed, stops feeding bytes to h2 and wakes the
//! connection task, which answers GOAWAY `ENHANCE_YOUR_CALM`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The client connection preface (RFC 9113 section 3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// Flood limits the guard enforces. Every counted frame type has its own budget per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloodLimits {
    /// Length of the counting window.
    pub window: Duration,
    /// Most SETTINGS frames (not ACKs) per window.
    pub max_settings: u32,
    /// Most PING frames (not ACKs) per window.
    pub max_pings: u32,
    /// Most RST_STREAM frames from the client per window (Rapid Reset, CVE-2023-44487).
    pub max_resets: u32,
    /// Most frames without payload that carry no end-of-stream or end-of-headers signal, per
    /// window (empty DATA, HEADERS and CONTINUATION frames: pure CPU cost for the server).
    pub max_empty_frames: u32,
    /// Most CONTINUATION frames in one header block (CONTINUATION flood).
    pub max_continuations: u32,
    /// Most PRIORITY frames per window: h2 discards them, but each still costs a parse.
    pub max_priority: u32,
}

impl Default for FloodLimits {
    fn default() -> Self {
        FloodLimits {
            window: Duration::from_secs(10),
            max_settings: 100,
            max_pings: 100,
            max_resets: 1000,
            max_empty_frames: 100,
            max_continuations: 32,
            max_priority: 1000,
        }
    }
}

/// Which limit or framing rule a connection broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Flood {
    /// The preface was not followed by a SETTINGS frame (RFC 9113 section 3.4): a protocol
    /// error, not a flood, but caught at the same place.
    NoInitialSettings = 6,
    /// Too many SETTINGS frames.
    Settings = 1,
    /// Too many PING frames.
    Ping = 2,
    /// Too many RST_STREAM frames.
    Reset = 3,
    /// Too many empty frames.
    EmptyFrames = 4,
    /// Too many CONTINUATION frames in one header block.
    Continuation = 5,
    /// Too many PRIORITY frames.
    Priority = 7,
}

impl Flood {
    /// A short name for logs and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            Flood::Settings => "settings_flood",
            Flood::Ping => "ping_flood",
            Flood::Reset => "rapid_reset",
            Flood::EmptyFrames => "empty_frame_flood",
            Flood::Continuation => "continuation_flood",
            Flood::NoInitialSettings => "no_initial_settings",
            Flood::Priority => "priority_flood",
        }
    }

    /// The GOAWAY error code the connection is closed with.
    pub fn reason(self) -> h2::Reason {
        match self {
            Flood::NoInitialSettings => h2::Reason::PROTOCOL_ERROR,
            _ => h2::Reason::ENHANCE_YOUR_CALM,
        }
    }

    /// True for abuse (counted and logged as a warning), false for a plain protocol error.
    pub fn is_abuse(self) -> bool {
        self != Flood::NoInitialSettings
    }

    fn from_u8(v: u8) -> Option<Flood> {
        Some(match v {
            1 => Flood::Settings,
            2 => Flood::Ping,
            3 => Flood::Reset,
            4 => Flood::EmptyFrames,
            5 => Flood::Continuation,
            6 => Flood::NoInitialSettings,
            7 => Flood::Priority,
            _ => return None,
        })
    }
}

/// Shared between the guarded IO and the connection task: which flood tripped, and a wake-up.
#[derive(Debug, Default)]
pub struct Tripwire {
    tripped: AtomicU8,
    settings_seen: std::sync::atomic::AtomicBool,
    notify: Notify,
}

impl Tripwire {
    /// The flood that tripped the guard, if any.
    pub fn tripped(&self) -> Option<Flood> {
        Flood::from_u8(self.tripped.load(Ordering::Acquire))
    }

    /// True once the client's first SETTINGS frame has arrived: the handshake is complete.
    pub fn settings_seen(&self) -> bool {
        self.settings_seen.load(Ordering::Acquire)
    }

    /// Resolves once the guard trips.
    pub async fn wait(&self) -> Flood {
        loop {
            let notified = self.notify.notified();
            if let Some(f) = self.tripped() {
                return f;
            }
            notified.await;
        }
    }

    fn trip(&self, flood: Flood) {
        if self
            .tripped
            .compare_exchange(0, flood as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.notify.notify_waiters();
        }
    }
}

/// Per-window counters.
#[derive(Debug)]
struct Counters {
    since: Instant,
    settings: u32,
    pings: u32,
    resets: u32,
    empty: u32,
    priority: u32,
}

impl Counters {
    /// All zero, for a window starting at `since`.
    fn starting(since: Instant) -> Self {
        Counters {
            since,
            settings: 0,
            pings: 0,
            resets: 0,
            empty: 0,
            priority: 0,
        }
    }
}

/// Where the parser is in the byte stream.
#[derive(Debug)]
enum Position {
    /// Inside the 24-byte preface, this many bytes in.
    Preface(usize),
    /// Collecting a 9-byte frame header.
    Header { buf: [u8; 9], filled: usize },
    /// Skipping this many payload bytes.
    Payload(usize),
}

/// An IO wrapper that watches the frames the client sends. Writes pass through untouched.
#[derive(Debug)]
pub struct GuardedIo<I> {
    inner: I,
    limits: FloodLimits,
    wire: Arc<Tripwire>,
    position: Position,
    counters: Counters,
    continuations: u32,
    first_frame: bool,
}

impl<I> GuardedIo<I> {
    /// Wraps a server-side connection whose first bytes are the client preface.
    pub fn new(inner: I, limits: FloodLimits, wire: Arc<Tripwire>) -> Self {
        GuardedIo {
            inner,
            limits,
            wire,
            position: Position::Preface(0),
            counters: Counters::starting(Instant::now()),
            continuations: 0,
            first_frame: true,
        }
    }

    /// Feeds bytes the client sent through the frame parser.
    fn scan(&mut self, mut bytes: &[u8]) -> Result<(), Flood> {
        while !bytes.is_empty() {
            match &mut self.position {
                Position::Preface(seen) => {
                    let n = (PREFACE.len() - *seen).min(bytes.len());
                    *seen += n;
                    bytes = &bytes[n..];
                    if *seen == PREFACE.len() {
                        self.position = Position::Header {
                            buf: [0; 9],
                            filled: 0,
                        };
                    }
                }
                Position::Header { buf, filled } => {
                    let n = (9 - *filled).min(bytes.len());
                    buf[*filled..*filled + n].copy_from_slice(&bytes[..n]);
                    *filled += n;
                    bytes = &bytes[n..];
                    if *filled == 9 {
                        let head = *buf;
                        let len = usize::from(head[0]) << 16
                            | usize::from(head[1]) << 8
                            | usize::from(head[2]);
                        self.on_frame(head[3], head[4], len)?;
                        self.position = if len == 0 {
                            Position::Header {
                                buf: [0; 9],
                                filled: 0,
                            }
                        } else {
                            Position::Payload(len)
                        };
                    }
                }
                Position::Payload(left) => {
                    let n = (*left).min(bytes.len());
                    *left -= n;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        self.position = Position::Header {
                            buf: [0; 9],
                            filled: 0,
                        };
                    }
                }
            }
        }
        Ok(())
    }

    fn on_frame(&mut self, kind: u8, flags: u8, len: usize) -> Result<(), Flood> {
        if std::mem::take(&mut self.first_frame) {
            if kind != SETTINGS || flags & ACK != 0 {
                return Err(Flood::NoInitialSettings);
            }
            self.wire.settings_seen.store(true, Ordering::Release);
        }
        let now = Instant::now();
        let c = &mut self.counters;
        if now.duration_since(c.since) >= self.limits.window {
            *c = Counters::starting(now);
        }
        let l = &self.limits;
        let over = |count: &mut u32, max: u32, flood: Flood| {
            *count += 1;
            if *count > max { Err(flood) } else { Ok(()) }
        };
        match kind {
            SETTINGS if flags & ACK == 0 => over(&mut c.settings, l.max_settings, Flood::Settings)?,
            PING if flags & ACK == 0 => over(&mut c.pings, l.max_pings, Flood::Ping)?,
            RST_STREAM => over(&mut c.resets, l.max_resets, Flood::Reset)?,
            PRIORITY => over(&mut c.priority, l.max_priority, Flood::Priority)?,
            DATA if len == 0 && flags & END_STREAM == 0 => {
                over(&mut c.empty, l.max_empty_frames, Flood::EmptyFrames)?
            }
            HEADERS | CONTINUATION => {
                if len == 0 && flags & (END_HEADERS | END_STREAM) == 0 {
                    over(&mut c.empty, l.max_empty_frames, Flood::EmptyFrames)?;
                }
                if kind == HEADERS {
                    self.continuations = 0;
                } else {
                    self.continuations += 1;
                    if self.continuations > l.max_continuations {
                        return Err(Flood::Continuation);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for GuardedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.wire.tripped().is_some() {
            // h2 gets nothing more from an abusive client; the connection task is closing it.
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            let fresh = buf.filled().get(before..).unwrap_or_default();
            if let Err(flood) = this.scan(fresh) {
                this.wire.trip(flood);
            }
        }
        res
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for GuardedIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&1u32.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn guard(limits: FloodLimits) -> GuardedIo<()> {
        GuardedIo::new((), limits, Arc::default())
    }

    /// The preface and the mandatory first SETTINGS.
    fn start(g: &mut GuardedIo<()>) {
        g.scan(PREFACE).unwrap();
        g.scan(&frame(SETTINGS, 0, &[])).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn preface_must_be_followed_by_settings() {
        let mut g = guard(FloodLimits::default());
        g.scan(PREFACE).unwrap();
        assert_eq!(
            g.scan(&frame(PING, 0, &[0; 8])),
            Err(Flood::NoInitialSettings)
        );
        let mut g = guard(FloodLimits::default());
        g.scan(PREFACE).unwrap();
        assert_eq!(
            g.scan(&frame(SETTINGS, ACK, &[])),
            Err(Flood::NoInitialSettings)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn counts_across_split_reads() {
        let mut g = guard(FloodLimits {
            max_pings: 3,
            ..FloodLimits::default()
        });
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, &[]));
        for _ in 0..3 {
            bytes.extend(frame(PING, 0, &[0; 8]));
            bytes.extend(frame(PING, ACK, &[0; 8]));
        }
        // One byte at a time: frame boundaries never line up with reads.
        for b in &bytes {
            assert_eq!(g.scan(std::slice::from_ref(b)), Ok(()));
        }
        assert_eq!(g.scan(&frame(PING, 0, &[0; 8])), Err(Flood::Ping));
    }

    #[tokio::test(start_paused = true)]
    async fn window_resets_counts() {
        let mut g = guard(FloodLimits {
            max_settings: 2,
            ..FloodLimits::default()
        });
        g.scan(PREFACE).unwrap();
        for _ in 0..2 {
            g.scan(&frame(SETTINGS, 0, &[])).unwrap();
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        for _ in 0..2 {
            g.scan(&frame(SETTINGS, 0, &[])).unwrap();
        }
        assert_eq!(g.scan(&frame(SETTINGS, 0, &[])), Err(Flood::Settings));
    }

    #[tokio::test(start_paused = true)]
    async fn empty_data_and_continuations() {
        let mut g = guard(FloodLimits {
            max_empty_frames: 2,
            max_continuations: 2,
            ..FloodLimits::default()
        });
        start(&mut g);
        // Empty DATA with END_STREAM is a legitimate way to end a request.
        for _ in 0..10 {
            g.scan(&frame(DATA, END_STREAM, &[])).unwrap();
        }
        g.scan(&frame(DATA, 0, &[])).unwrap();
        g.scan(&frame(DATA, 0, &[])).unwrap();
        assert_eq!(g.scan(&frame(DATA, 0, &[])), Err(Flood::EmptyFrames));

        let mut g = guard(FloodLimits {
            max_continuations: 2,
            ..FloodLimits::default()
        });
        start(&mut g);
        g.scan(&frame(HEADERS, 0, b"x")).unwrap();
        g.scan(&frame(CONTINUATION, 0, b"x")).unwrap();
        g.scan(&frame(CONTINUATION, 0, b"x")).unwrap();
        assert_eq!(
            g.scan(&frame(CONTINUATION, 0, b"x")),
            Err(Flood::Continuation)
        );
        // A new header block starts a new count.
        let mut g = guard(FloodLimits {
            max_continuations: 1,
            ..FloodLimits::default()
        });
        start(&mut g);
        for _ in 0..5 {
            g.scan(&frame(HEADERS, 0, b"x")).unwrap();
            g.scan(&frame(CONTINUATION, END_HEADERS, b"x")).unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn payload_bytes_are_not_mistaken_for_headers() {
        let mut g = guard(FloodLimits {
            max_pings: 0,
            ..FloodLimits::default()
        });
        start(&mut g);
        // A DATA payload that looks like a PING frame header.
        let fake = frame(PING, 0, &[0; 8]);
        g.scan(&frame(DATA, 0, &fake)).unwrap();
        assert_eq!(g.scan(&frame(PING, 0, &[0; 8])), Err(Flood::Ping));
    }

    #[tokio::test]
    async fn tripwire_wakes_waiter() {
        let wire = Arc::new(Tripwire::default());
        let w = wire.clone();
        let waiter = tokio::spawn(async move { w.wait().await });
        tokio::task::yield_now().await;
        wire.trip(Flood::Reset);
        wire.trip(Flood::Ping);
        assert_eq!(waiter.await.unwrap(), Flood::Reset);
    }
}

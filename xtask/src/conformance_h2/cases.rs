//! The table of HTTP/2 cases. Each names the RFC section whose requirement it checks; where
//! the RFC allows a stream error or a connection error, both are accepted, and cases whose
//! requests must not be processed also check the recording backend.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail, ensure};

use super::conn::{Conn, Event, Expect, Response, status_of};
use super::frame::{self, Frame, code, flag, kind, setting};
use super::hpack::Block;
use super::{AUTHORITY, Case, Ctx};

/// Time a rejected request gets to (wrongly) reach the backend before the case looks.
const SETTLE: Duration = Duration::from_millis(200);

/// How long a case watches for frames that must not come.
const QUIET: Duration = Duration::from_millis(300);

const ES: u8 = flag::END_STREAM;
const EH: u8 = flag::END_HEADERS;

const PROTOCOL: &[u32] = &[code::PROTOCOL_ERROR];
const FRAME_SIZE: &[u32] = &[code::FRAME_SIZE_ERROR];
const FLOW_CONTROL: &[u32] = &[code::FLOW_CONTROL_ERROR];
const STREAM_CLOSED: &[u32] = &[code::STREAM_CLOSED];
const COMPRESSION: &[u32] = &[code::COMPRESSION_ERROR];

/// What the backend may have seen of a request the server must reject.
#[derive(Clone, Copy)]
enum Forward {
    /// Nothing at all: the request was complete and invalid before anything was forwarded.
    Nothing,
    /// At most the head of a streamed request, never a complete request: the error came
    /// after the head was legitimately forwarded (RFC 9113 §8.1.1: "intermediaries might
    /// forward incomplete messages before detecting errors").
    Incomplete,
    /// Not checked.
    Any,
}

fn case(
    name: &'static str,
    reference: &'static str,
    check: fn(&Ctx) -> Result<Option<String>>,
) -> Case {
    Case {
        name,
        reference,
        check,
    }
}

/// Every case, in the order they run.
pub(crate) fn all() -> Vec<Case> {
    vec![
        // --- 3.4 Connection preface.
        case(
            "preface: server SETTINGS first, then ACK of the client's SETTINGS",
            "RFC 9113 §3.4, §6.5.3",
            preface_exchange,
        ),
        case(
            "preface: invalid preface closes the connection",
            "RFC 9113 §3.4",
            invalid_preface,
        ),
        case(
            "preface: not followed by SETTINGS -> PROTOCOL_ERROR",
            "RFC 9113 §3.4",
            preface_without_settings,
        ),
        // --- 4.1 / 4.2 Frame format and size.
        case(
            "frame of unknown type is ignored",
            "RFC 9113 §4.1, §5.5",
            unknown_frame_type,
        ),
        case(
            "undefined flags are ignored",
            "RFC 9113 §4.1",
            unknown_flags,
        ),
        case(
            "reserved bit of the stream identifier is ignored",
            "RFC 9113 §4.1",
            reserved_bit,
        ),
        case(
            "DATA of SETTINGS_MAX_FRAME_SIZE octets is accepted",
            "RFC 9113 §4.2",
            max_size_data,
        ),
        case(
            "DATA larger than SETTINGS_MAX_FRAME_SIZE -> FRAME_SIZE_ERROR",
            "RFC 9113 §4.2",
            oversized_data,
        ),
        case(
            "HEADERS larger than SETTINGS_MAX_FRAME_SIZE -> FRAME_SIZE_ERROR connection error",
            "RFC 9113 §4.2",
            oversized_headers,
        ),
        case(
            "HEADERS too short for its priority fields -> FRAME_SIZE_ERROR connection error",
            "RFC 9113 §4.2",
            short_headers,
        ),
        // --- 5.1 Stream states.
        case(
            "DATA on an idle stream -> PROTOCOL_ERROR connection error",
            "RFC 9113 §5.1",
            data_idle,
        ),
        case(
            "WINDOW_UPDATE on an idle stream -> PROTOCOL_ERROR connection error",
            "RFC 9113 §5.1",
            window_update_idle,
        ),
        case(
            "CONTINUATION on an idle stream -> PROTOCOL_ERROR connection error",
            "RFC 9113 §5.1, §6.10",
            continuation_idle,
        ),
        case(
            "HEADERS on a half-closed (remote) stream -> STREAM_CLOSED",
            "RFC 9113 §5.1",
            headers_half_closed,
        ),
        case(
            "DATA on a half-closed (remote) stream -> STREAM_CLOSED",
            "RFC 9113 §5.1, §6.1",
            data_half_closed,
        ),
        case(
            "DATA on a closed stream -> STREAM_CLOSED",
            "RFC 9113 §5.1, §6.1",
            data_closed,
        ),
        case(
            "HEADERS on a closed stream -> STREAM_CLOSED or PROTOCOL_ERROR",
            "RFC 9113 §5.1, §5.1.1",
            headers_closed,
        ),
        case(
            "DATA after the client reset the stream -> STREAM_CLOSED",
            "RFC 9113 §5.1, §6.1",
            data_after_reset,
        ),
        case(
            "WINDOW_UPDATE and PRIORITY on a closed stream are not errors",
            "RFC 9113 §6.9, §6.3",
            closed_stream_tolerated,
        ),
        case(
            "even stream identifier from the client -> PROTOCOL_ERROR",
            "RFC 9113 §5.1.1",
            even_stream,
        ),
        case(
            "stream identifier lower than a previous one -> PROTOCOL_ERROR",
            "RFC 9113 §5.1.1",
            decreasing_stream,
        ),
        case(
            "streams beyond SETTINGS_MAX_CONCURRENT_STREAMS -> PROTOCOL_ERROR or REFUSED_STREAM",
            "RFC 9113 §5.1.2",
            concurrency_limit,
        ),
        // --- 5.3 / 5.4 Priority and error handling.
        case(
            "PRIORITY on idle streams is accepted",
            "RFC 9113 §5.1, §6.3",
            priority_idle,
        ),
        case(
            "PRIORITY on an open stream is accepted",
            "RFC 9113 §6.3",
            priority_open,
        ),
        case(
            "PRIORITY making a stream depend on itself -> PROTOCOL_ERROR",
            "RFC 7540 §5.3.1 (priority signals deprecated by RFC 9113 §5.3.2)",
            priority_self,
        ),
        case(
            "HEADERS making the stream depend on itself -> PROTOCOL_ERROR",
            "RFC 7540 §5.3.1 (priority signals deprecated by RFC 9113 §5.3.2)",
            headers_self,
        ),
        case(
            "a stream error leaves the other streams usable",
            "RFC 9113 §5.4.2",
            stream_error_isolated,
        ),
        // --- 5.5 Extensions.
        case(
            "unknown frame in the middle of a stream is ignored",
            "RFC 9113 §5.5",
            unknown_frame_mid_stream,
        ),
        case(
            "unknown frame inside a field block -> PROTOCOL_ERROR",
            "RFC 9113 §5.5",
            unknown_frame_field_block,
        ),
        // --- 6.1 DATA.
        case(
            "DATA on stream 0 -> PROTOCOL_ERROR",
            "RFC 9113 §6.1",
            data_stream_zero,
        ),
        case(
            "DATA padding as long as the payload -> PROTOCOL_ERROR",
            "RFC 9113 §6.1",
            data_bad_padding,
        ),
        case(
            "padded DATA is accepted and the padding removed",
            "RFC 9113 §6.1",
            data_padded,
        ),
        // --- 6.2 HEADERS.
        case(
            "HEADERS on stream 0 -> PROTOCOL_ERROR",
            "RFC 9113 §6.2",
            headers_stream_zero,
        ),
        case(
            "HEADERS padding as long as the payload -> PROTOCOL_ERROR",
            "RFC 9113 §6.2",
            headers_bad_padding,
        ),
        case(
            "HEADERS with padding and priority fields is accepted",
            "RFC 9113 §6.2",
            headers_padded_priority,
        ),
        case(
            "DATA between HEADERS and CONTINUATION -> PROTOCOL_ERROR",
            "RFC 9113 §6.2, §4.3",
            headers_then_data,
        ),
        case(
            "PRIORITY between HEADERS and CONTINUATION -> PROTOCOL_ERROR",
            "RFC 9113 §6.3, §4.3",
            headers_then_priority,
        ),
        case(
            "HEADERS of another stream inside a field block -> PROTOCOL_ERROR",
            "RFC 9113 §6.2, §4.3",
            headers_then_other_headers,
        ),
        case(
            "CONTINUATION on a different stream -> PROTOCOL_ERROR",
            "RFC 9113 §6.2, §6.10",
            continuation_other_stream,
        ),
        case(
            "request in HEADERS + 2 CONTINUATION frames is served",
            "RFC 9113 §4.3, §6.2, §6.10",
            continuation_sequence,
        ),
        case(
            "second HEADERS without END_STREAM -> malformed",
            "RFC 9113 §8.1",
            second_headers_without_end_stream,
        ),
        // --- 6.3 PRIORITY.
        case(
            "PRIORITY with a length other than 5 -> FRAME_SIZE_ERROR",
            "RFC 9113 §6.3",
            priority_length,
        ),
        case(
            "PRIORITY on stream 0 -> PROTOCOL_ERROR",
            "RFC 9113 §6.3",
            priority_stream_zero,
        ),
        // --- 6.4 RST_STREAM.
        case(
            "RST_STREAM on stream 0 -> PROTOCOL_ERROR",
            "RFC 9113 §6.4",
            rst_stream_zero,
        ),
        case(
            "RST_STREAM on an idle stream -> PROTOCOL_ERROR",
            "RFC 9113 §6.4",
            rst_idle,
        ),
        case(
            "RST_STREAM with a length other than 4 -> FRAME_SIZE_ERROR",
            "RFC 9113 §6.4",
            rst_length,
        ),
        case(
            "RST_STREAM cancels a stream; no RST_STREAM back; connection usable",
            "RFC 9113 §6.4, §5.4.2",
            rst_cancel,
        ),
        // --- 6.5 SETTINGS.
        case(
            "SETTINGS ACK with a payload -> FRAME_SIZE_ERROR",
            "RFC 9113 §6.5",
            settings_ack_payload,
        ),
        case(
            "SETTINGS on a non-zero stream -> PROTOCOL_ERROR",
            "RFC 9113 §6.5",
            settings_stream,
        ),
        case(
            "SETTINGS length not a multiple of 6 -> FRAME_SIZE_ERROR",
            "RFC 9113 §6.5",
            settings_length,
        ),
        case(
            "SETTINGS_ENABLE_PUSH other than 0 or 1 -> PROTOCOL_ERROR",
            "RFC 9113 §6.5.2",
            settings_enable_push,
        ),
        case(
            "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1 -> FLOW_CONTROL_ERROR",
            "RFC 9113 §6.5.2",
            settings_window_too_large,
        ),
        case(
            "SETTINGS_MAX_FRAME_SIZE below 2^14 -> PROTOCOL_ERROR",
            "RFC 9113 §6.5.2",
            settings_frame_size_small,
        ),
        case(
            "SETTINGS_MAX_FRAME_SIZE above 2^24-1 -> PROTOCOL_ERROR",
            "RFC 9113 §6.5.2",
            settings_frame_size_large,
        ),
        case(
            "unknown setting is ignored",
            "RFC 9113 §6.5.2",
            settings_unknown,
        ),
        case(
            "every SETTINGS frame is acknowledged",
            "RFC 9113 §6.5.3",
            settings_all_acked,
        ),
        // --- 6.6 / 8.4 PUSH_PROMISE.
        case(
            "PUSH_PROMISE from the client -> PROTOCOL_ERROR",
            "RFC 9113 §8.4",
            push_promise_from_client,
        ),
        // --- 6.7 PING.
        case(
            "PING is answered with ACK and the same payload",
            "RFC 9113 §6.7",
            ping_answered,
        ),
        case(
            "PING ACK from the client is not answered",
            "RFC 9113 §6.7",
            ping_ack_ignored,
        ),
        case(
            "PING on a non-zero stream -> PROTOCOL_ERROR",
            "RFC 9113 §6.7",
            ping_stream,
        ),
        case(
            "PING with a length other than 8 -> FRAME_SIZE_ERROR",
            "RFC 9113 §6.7",
            ping_length,
        ),
        // --- 6.8 GOAWAY.
        case(
            "GOAWAY on a non-zero stream -> PROTOCOL_ERROR",
            "RFC 9113 §6.8",
            goaway_stream,
        ),
        // --- 6.9 WINDOW_UPDATE and flow control.
        case(
            "WINDOW_UPDATE of 0 on the connection -> PROTOCOL_ERROR connection error",
            "RFC 9113 §6.9",
            window_update_zero_connection,
        ),
        case(
            "WINDOW_UPDATE of 0 on a stream -> PROTOCOL_ERROR",
            "RFC 9113 §6.9",
            window_update_zero_stream,
        ),
        case(
            "WINDOW_UPDATE with a length other than 4 -> FRAME_SIZE_ERROR",
            "RFC 9113 §6.9",
            window_update_length,
        ),
        case(
            "connection window above 2^31-1 -> FLOW_CONTROL_ERROR",
            "RFC 9113 §6.9.1",
            window_overflow_connection,
        ),
        case(
            "stream window above 2^31-1 -> FLOW_CONTROL_ERROR",
            "RFC 9113 §6.9.1",
            window_overflow_stream,
        ),
        case(
            "SETTINGS_INITIAL_WINDOW_SIZE change overflowing a stream window -> FLOW_CONTROL_ERROR",
            "RFC 9113 §6.9.2",
            initial_window_overflow,
        ),
        case(
            "DATA beyond the advertised window -> FLOW_CONTROL_ERROR",
            "RFC 9113 §6.9.1, §6.9",
            data_beyond_window,
        ),
        case(
            "SETTINGS_INITIAL_WINDOW_SIZE 1: one octet of DATA until WINDOW_UPDATE",
            "RFC 9113 §6.9.1, §6.9.2",
            initial_window_one,
        ),
        case(
            "SETTINGS_INITIAL_WINDOW_SIZE change applies to open streams",
            "RFC 9113 §6.9.2",
            initial_window_change,
        ),
        // --- 6.10 CONTINUATION.
        case(
            "CONTINUATION on stream 0 -> PROTOCOL_ERROR",
            "RFC 9113 §6.10",
            continuation_stream_zero,
        ),
        case(
            "CONTINUATION after END_HEADERS -> PROTOCOL_ERROR",
            "RFC 9113 §6.10",
            continuation_after_end_headers,
        ),
        // --- 8.1 HTTP message framing.
        case(
            "request content in DATA frames reaches the backend",
            "RFC 9113 §8.1",
            request_body,
        ),
        case(
            "request content without content-length reaches the backend",
            "RFC 9113 §8.1",
            request_body_no_length,
        ),
        case(
            "request trailers (HEADERS after DATA, END_STREAM) are accepted",
            "RFC 9113 §8.1",
            request_trailers,
        ),
        case(
            "content-length larger than the DATA -> malformed",
            "RFC 9113 §8.1.1",
            content_length_larger,
        ),
        case(
            "content-length smaller than the DATA -> malformed",
            "RFC 9113 §8.1.1",
            content_length_smaller,
        ),
        case(
            "content-length with no DATA at all -> malformed",
            "RFC 9113 §8.1.1",
            content_length_no_data,
        ),
        // --- 8.2 Fields.
        case(
            "uppercase field name -> malformed",
            "RFC 9113 §8.2, §8.2.1",
            |ctx| malformed_field(ctx, "X-Upper", "1"),
        ),
        case("connection field -> malformed", "RFC 9113 §8.2.2", |ctx| {
            malformed_field(ctx, "connection", "keep-alive")
        }),
        case("keep-alive field -> malformed", "RFC 9113 §8.2.2", |ctx| {
            malformed_field(ctx, "keep-alive", "timeout=5")
        }),
        case(
            "proxy-connection field -> malformed",
            "RFC 9113 §8.2.2",
            |ctx| malformed_field(ctx, "proxy-connection", "keep-alive"),
        ),
        case(
            "transfer-encoding field -> malformed",
            "RFC 9113 §8.2.2",
            |ctx| malformed_field(ctx, "transfer-encoding", "chunked"),
        ),
        case("upgrade field -> malformed", "RFC 9113 §8.2.2", |ctx| {
            malformed_field(ctx, "upgrade", "h2c")
        }),
        case(
            "TE other than trailers -> malformed",
            "RFC 9113 §8.2.2",
            |ctx| malformed_field(ctx, "te", "gzip"),
        ),
        case("TE: trailers is accepted", "RFC 9113 §8.2.2", te_trailers),
        case(
            "field value with NUL -> malformed",
            "RFC 9113 §8.2.1",
            |ctx| malformed_field(ctx, "x-bad", "a\0b"),
        ),
        case(
            "field value with CR -> malformed",
            "RFC 9113 §8.2.1",
            |ctx| malformed_field(ctx, "x-bad", "a\rb"),
        ),
        case(
            "field value with LF -> malformed",
            "RFC 9113 §8.2.1",
            |ctx| malformed_field(ctx, "x-bad", "a\nx-injected: 1"),
        ),
        case(
            "field value with leading whitespace -> malformed",
            "RFC 9113 §8.2.1",
            |ctx| malformed_field(ctx, "x-bad", " a"),
        ),
        case(
            "field value with trailing whitespace -> malformed",
            "RFC 9113 §8.2.1",
            |ctx| malformed_field(ctx, "x-bad", "a\t"),
        ),
        case(
            "field name with a space -> malformed",
            "RFC 9113 §8.2.1",
            |ctx| malformed_field(ctx, "x bad", "1"),
        ),
        case(
            "field name with a colon -> malformed",
            "RFC 9113 §8.2.1",
            |ctx| malformed_field(ctx, "x:bad", "1"),
        ),
        case(
            "cookie crumbs are joined with \"; \" for HTTP/1.1",
            "RFC 9113 §8.2.3",
            cookie_crumbs,
        ),
        // --- 8.3 Pseudo-header fields.
        case("missing :method -> malformed", "RFC 9113 §8.3.1", |ctx| {
            malformed_pseudo(ctx, Pseudo::Drop(":method"))
        }),
        case("missing :scheme -> malformed", "RFC 9113 §8.3.1", |ctx| {
            malformed_pseudo(ctx, Pseudo::Drop(":scheme"))
        }),
        case("missing :path -> malformed", "RFC 9113 §8.3.1", |ctx| {
            malformed_pseudo(ctx, Pseudo::Drop(":path"))
        }),
        case("empty :path -> malformed", "RFC 9113 §8.3.1", |ctx| {
            malformed_pseudo(ctx, Pseudo::EmptyPath)
        }),
        case(
            "unknown pseudo-header -> malformed",
            "RFC 9113 §8.3",
            |ctx| malformed_pseudo(ctx, Pseudo::Append(":foo", "bar")),
        ),
        case(
            "response pseudo-header :status in a request -> malformed",
            "RFC 9113 §8.3",
            |ctx| malformed_pseudo(ctx, Pseudo::Append(":status", "200")),
        ),
        case(
            "duplicated pseudo-header -> malformed",
            "RFC 9113 §8.3",
            |ctx| malformed_pseudo(ctx, Pseudo::Append(":path", "/again")),
        ),
        case(
            "pseudo-header after a regular field -> malformed",
            "RFC 9113 §8.3",
            |ctx| malformed_pseudo(ctx, Pseudo::AfterRegular),
        ),
        case(
            "pseudo-header in trailers -> malformed",
            "RFC 9113 §8.1, §8.3",
            pseudo_in_trailers,
        ),
        case(
            ":authority and Host differ -> 400 (a SHOULD)",
            "RFC 9113 §8.3.1",
            authority_host_mismatch,
        ),
        case(
            "Host for HTTP/1.1 comes from :authority",
            "RFC 9113 §8.3.1",
            host_from_authority,
        ),
        // --- RFC 7541 HPACK.
        case(
            "HPACK: index 0 -> COMPRESSION_ERROR",
            "RFC 7541 §6.1, RFC 9113 §4.3",
            |ctx| compression_error(ctx, Block::new().indexed(0)),
        ),
        case(
            "HPACK: index beyond the tables -> COMPRESSION_ERROR",
            "RFC 7541 §2.3.3, RFC 9113 §4.3",
            |ctx| compression_error(ctx, Block::new().indexed(70)),
        ),
        case(
            "HPACK: Huffman string containing EOS -> COMPRESSION_ERROR",
            "RFC 7541 §5.2, RFC 9113 §4.3",
            |ctx| {
                compression_error(
                    ctx,
                    Block::new().raw(&[0x00, 0x84, 0xff, 0xff, 0xff, 0xff, 0x01, b'x']),
                )
            },
        ),
        case(
            "HPACK: Huffman padding that is not EOS -> COMPRESSION_ERROR",
            "RFC 7541 §5.2, RFC 9113 §4.3",
            // '0' is the 5-bit code 00000; the 3 padding bits are zeros instead of ones.
            |ctx| compression_error(ctx, Block::new().raw(&[0x00, 0x81, 0x00, 0x01, b'x'])),
        ),
        case(
            "HPACK: table size update above SETTINGS_HEADER_TABLE_SIZE -> COMPRESSION_ERROR",
            "RFC 7541 §4.2, §6.3, RFC 9113 §4.3",
            hpack_size_update_too_large,
        ),
        case(
            "HPACK: table size update after a field line -> COMPRESSION_ERROR",
            "RFC 7541 §4.2, RFC 9113 §4.3",
            hpack_size_update_late,
        ),
        case(
            "HPACK: string longer than the field block -> COMPRESSION_ERROR",
            "RFC 7541 §5.2, RFC 9113 §4.3",
            |ctx| compression_error(ctx, Block::new().raw(&[0x00, 0x01, b'x', 0x0a, b'a', b'b'])),
        ),
        case(
            "HPACK: integer overflow -> COMPRESSION_ERROR",
            "RFC 7541 §5.1, RFC 9113 §4.3",
            |ctx| {
                compression_error(
                    ctx,
                    Block::new().raw(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
                )
            },
        ),
        case(
            "HPACK: dynamic table entries are usable by later requests",
            "RFC 7541 §2.3.2, §6.2.1",
            hpack_dynamic_table,
        ),
        case(
            "HPACK: Huffman-coded request fields are decoded",
            "RFC 7541 §5.2",
            hpack_huffman_request,
        ),
        case(
            "HPACK: never-indexed literal is accepted and forwarded",
            "RFC 7541 §6.2.3",
            hpack_never_indexed,
        ),
        case(
            "HPACK: after SETTINGS_HEADER_TABLE_SIZE 0, responses start with a size update",
            "RFC 9113 §4.3.1, RFC 7541 §4.2",
            hpack_table_size_zero,
        ),
        // --- Responses.
        case(
            "GET is answered 200 with the backend's body",
            "RFC 9113 §8.1, §8.3.2",
            get_ok,
        ),
        case(
            "HEAD response carries no content",
            "RFC 9113 §8.1, RFC 9110 §9.3.2",
            head_no_content,
        ),
        case(
            "response carries no connection-specific fields",
            "RFC 9113 §8.2.2, RFC 9110 §7.6.1",
            response_no_connection_fields,
        ),
        case(
            "chunked backend response arrives as DATA without transfer-encoding",
            "RFC 9113 §8.1, §8.2.2",
            chunked_backend_response,
        ),
        case(
            "concurrent streams are answered independently",
            "RFC 9113 §5, §5.1.2",
            concurrent_streams,
        ),
    ]
}

// ----- helpers ---------------------------------------------------------------------------

/// `:method`, `:scheme`, `:authority`, `:path`, in that order.
fn request<'a>(method: &'a str, path: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        (":method", method),
        (":scheme", "http"),
        (":authority", AUTHORITY),
        (":path", path),
    ]
}

fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    Block::new().fields(fields).bytes()
}

/// The field block of `GET path`.
fn get_block(path: &str) -> Vec<u8> {
    block(&request("GET", path))
}

/// The field block of `POST path` with `extra` fields.
fn post_block(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut fields = request("POST", path);
    fields.extend_from_slice(extra);
    block(&fields)
}

/// Opens a POST stream whose content is still to come (HEADERS with END_HEADERS only).
fn open_post(ctx: &Ctx, conn: &mut Conn) -> u32 {
    let s = conn.open_stream();
    conn.send(&[Frame::headers(s, EH, post_block(&ctx.path("open"), &[]))]);
    s
}

/// Checks what reached the backend after a rejection.
fn check_forwarded(ctx: &Ctx, forward: Forward) -> Result<()> {
    if matches!(forward, Forward::Any) {
        return Ok(());
    }
    thread::sleep(SETTLE);
    let records = ctx.forwarded();
    let seen: Vec<_> = records
        .iter()
        .filter(|r| matches!(forward, Forward::Nothing) || r.problem.is_none())
        .collect();
    if let Some(first) = seen.first() {
        let what = if matches!(forward, Forward::Nothing) {
            "any part of it"
        } else {
            "a complete request"
        };
        bail!(
            "the backend must not receive {what}, but received {} request(s), first {:?} \
             (body {:?})",
            seen.len(),
            first.request_line(),
            String::from_utf8_lossy(&first.body)
        );
    }
    Ok(())
}

/// Sends `frames` after the handshake and expects `expect`; then checks the backend.
fn rejected(
    ctx: &Ctx,
    frames: impl FnOnce(&Ctx, &mut Conn) -> Vec<Frame>,
    expect: Expect,
    forward: Forward,
) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    let frames = frames(ctx, &mut conn);
    conn.send(&frames);
    match conn.expect_error(expect) {
        Ok(note) => {
            check_forwarded(ctx, forward)?;
            Ok(note)
        }
        Err(error) => match check_forwarded(ctx, forward) {
            Ok(()) => Err(error),
            Err(forwarded) => Err(anyhow!("{error:#}; and {forwarded:#}")),
        },
    }
}

/// A connection error with one of `codes` after `frames` (sent after the handshake).
fn connection_error(
    ctx: &Ctx,
    frames: impl FnOnce(&Ctx, &mut Conn) -> Vec<Frame>,
    codes: &'static [u32],
    forward: Forward,
) -> Result<Option<String>> {
    rejected(ctx, frames, Expect::connection(codes), forward)
}

fn ensure_status(conn: &Conn, response: &Response, status: u16) -> Result<()> {
    if response.status != status {
        return Err(conn.fail(&format!(
            "expected {status}, got {} (body {:?})",
            response.status,
            preview(&response.body)
        )));
    }
    Ok(())
}

fn preview(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut shown: String = text.chars().take(160).collect();
    if text.chars().count() > 160 {
        shown.push_str("...");
    }
    shown
}

/// GET `ctx.path(rest)` on a new stream of `conn`; the response must be 200 and the
/// backend's echo must show the path.
fn get_200(ctx: &Ctx, conn: &mut Conn, rest: &str) -> Result<Response> {
    let path = ctx.path(rest);
    let s = conn.open_stream();
    conn.send(&[Frame::headers(s, ES | EH, get_block(&path))]);
    let response = conn.response(s, false)?;
    ensure_status(conn, &response, 200)?;
    ensure!(
        response
            .text()
            .starts_with(&format!("GET {path} HTTP/1.1\r\n")),
        "the backend's echo does not show the request: {:?}",
        preview(&response.body)
    );
    Ok(response)
}

/// The single complete request of this case at the backend: `(head text, body)`.
fn backend_request(ctx: &Ctx) -> Result<(String, Vec<u8>)> {
    let records = ctx.forwarded();
    match records.as_slice() {
        [one] if one.problem.is_none() => Ok((one.raw_head.clone(), one.body.clone())),
        [one] => bail!(
            "the backend received an incomplete request ({}): {:?}",
            one.problem.as_deref().unwrap_or("?"),
            one.request_line()
        ),
        other => bail!("the backend received {} requests, expected 1", other.len()),
    }
}

/// Values of field `name` in an HTTP/1.1 head (case-insensitive name).
fn head_values(head: &str, name: &str) -> Vec<String> {
    head.lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

// ----- 3.4 -------------------------------------------------------------------------------

fn preface_exchange(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.connect()?;
    conn.send_raw(frame::PREFACE, "connection preface");
    conn.send(&[Frame::settings(&[])]);
    let mut server_settings = false;
    loop {
        match conn.next(Instant::now() + Duration::from_secs(5))? {
            None => return Err(conn.fail("no SETTINGS ACK in time")),
            Some(Event::Closed) => return Err(conn.fail("connection closed")),
            Some(Event::Frame(f)) if !server_settings => {
                if f.kind != kind::SETTINGS || f.has(flag::ACK) {
                    return Err(conn.fail(&format!(
                        "the server's first frame is {}, not SETTINGS",
                        f.describe()
                    )));
                }
                server_settings = true;
            }
            Some(Event::Frame(f)) if f.kind == kind::SETTINGS && f.has(flag::ACK) => {
                return Ok(None);
            }
            Some(_) => {}
        }
    }
}

fn invalid_preface(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.connect()?;
    conn.send_raw(
        b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
        "invalid preface (XX for SM)",
    );
    conn.send(&[Frame::settings(&[])]);
    if !conn.closed_in_time()? {
        return Err(conn.fail("the connection stayed open"));
    }
    let leftover = conn.leftover();
    if leftover.starts_with(b"HTTP/1.1 ") {
        let line = leftover.split(|&b| b == b'\r').next().unwrap_or_default();
        return Ok(Some(format!(
            "answered {:?} before closing: the listener also serves HTTP/1.1 and read the \
             invalid preface as an HTTP/1.1 request",
            String::from_utf8_lossy(line)
        )));
    }
    Ok(None)
}

fn preface_without_settings(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.connect()?;
    conn.send_raw(frame::PREFACE, "connection preface");
    conn.send(&[Frame::ping(0, *b"nosettng")]);
    conn.expect_error(Expect::connection(PROTOCOL))
}

// ----- 4.1 / 4.2 -------------------------------------------------------------------------

fn unknown_frame_type(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    conn.send(&[
        Frame::new(kind::UNKNOWN, 0, 0, b"extension".to_vec()),
        Frame::new(kind::UNKNOWN, 0xff, 5, b"on an idle stream".to_vec()),
    ]);
    conn.ping_alive()?;
    get_200(ctx, &mut conn, "after-unknown")?;
    Ok(None)
}

fn unknown_flags(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    // Every flag but ACK: still a PING that must be answered.
    conn.send(&[Frame::ping(0xfe, *b"flagsset")]);
    let mut answered = false;
    while !answered {
        match conn.next(Instant::now() + Duration::from_secs(5))? {
            None | Some(Event::Closed) => return Err(conn.fail("no PING ACK")),
            Some(Event::Frame(f)) if f.kind == kind::PING && f.has(flag::ACK) => {
                ensure!(f.payload == b"flagsset", "PING ACK with another payload");
                answered = true;
            }
            Some(_) => {}
        }
    }
    let s = conn.open_stream();
    let undefined = 0x02 | 0x10 | 0x40 | 0x80;
    conn.send(&[Frame::headers(
        s,
        ES | EH | undefined,
        get_block(&ctx.path("flags")),
    )]);
    let response = conn.response(s, false)?;
    ensure_status(&conn, &response, 200)?;
    Ok(None)
}

fn reserved_bit(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    let s = conn.open_stream();
    conn.send(&[Frame::headers(
        s | 0x8000_0000,
        ES | EH,
        get_block(&ctx.path("reserved")),
    )]);
    let response = conn.response(s, false)?;
    ensure_status(&conn, &response, 200)?;
    Ok(None)
}

fn max_size_data(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    let size = conn.server_max_frame();
    let s = conn.open_stream();
    let length = size.to_string();
    conn.send(&[
        Frame::headers(
            s,
            EH,
            post_block(&ctx.path("max"), &[("content-length", &length)]),
        ),
        Frame::data(s, ES, vec![b'm'; size]),
    ]);
    let response = conn.response(s, false)?;
    ensure_status(&conn, &response, 200)?;
    let (_, body) = backend_request(ctx)?;
    ensure!(
        body.len() == size,
        "the backend received {} octets, expected {size}",
        body.len()
    );
    Ok(None)
}

fn oversized_data(ctx: &Ctx) -> Result<Option<String>> {
    rejected(
        ctx,
        |ctx, conn| {
            let s = open_post(ctx, conn);
            vec![Frame::data(s, ES, vec![b'x'; conn.server_max_frame() + 1])]
        },
        Expect::stream(1, FRAME_SIZE),
        Forward::Incomplete,
    )
}

fn oversized_headers(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |ctx, conn| {
            let s = conn.open_stream();
            let filler = "f".repeat(conn.server_max_frame() + 16);
            let path = ctx.path("big");
            let mut fields = request("GET", &path);
            fields.push(("x-filler", &filler));
            vec![Frame::headers(s, ES | EH, block(&fields))]
        },
        FRAME_SIZE,
        Forward::Nothing,
    )
}

fn short_headers(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |_, conn| {
            let s = conn.open_stream();
            vec![Frame::headers(s, ES | EH | flag::PRIORITY, vec![0, 0, 0])]
        },
        FRAME_SIZE,
        Forward::Nothing,
    )
}

// ----- 5.1 -------------------------------------------------------------------------------

fn data_idle(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |_, _| vec![Frame::data(1, ES, b"idle".to_vec())],
        PROTOCOL,
        Forward::Nothing,
    )
}

fn window_update_idle(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |_, _| vec![Frame::window_update(1, 100)],
        PROTOCOL,
        Forward::Nothing,
    )
}

fn continuation_idle(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |ctx, _| vec![Frame::continuation(1, EH, get_block(&ctx.path("idle")))],
        PROTOCOL,
        Forward::Nothing,
    )
}

fn headers_half_closed(ctx: &Ctx) -> Result<Option<String>> {
    rejected(
        ctx,
        |ctx, conn| {
            let s = conn.open_stream();
            let first = get_block(&ctx.path("half-closed"));
            vec![
                Frame::headers(s, ES | EH, first),
                Frame::headers(s, ES | EH, block(&[("x-again", "1")])),
            ]
        },
        Expect::stream(1, STREAM_CLOSED),
        Forward::Any,
    )
}

fn data_half_closed(ctx: &Ctx) -> Result<Option<String>> {
    rejected(
        ctx,
        |ctx, conn| {
            let s = conn.open_stream();
            vec![
                Frame::headers(s, ES | EH, get_block(&ctx.path("half-closed"))),
                Frame::data(s, ES, b"late".to_vec()),
            ]
        },
        Expect::stream(1, STREAM_CLOSED),
        Forward::Any,
    )
}

fn data_closed(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    get_200(ctx, &mut conn, "closed")?;
    conn.send(&[Frame::data(1, ES, b"late".to_vec())]);
    conn.expect_error(Expect::stream(1, STREAM_CLOSED))
}

fn headers_closed(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    get_200(ctx, &mut conn, "closed")?;
    conn.send(&[Frame::headers(1, ES | EH, get_block(&ctx.path("closed")))]);
    let note = conn.expect_error(Expect::stream(
        1,
        &[code::STREAM_CLOSED, code::PROTOCOL_ERROR],
    ))?;
    thread::sleep(SETTLE);
    let count = ctx.forwarded().len();
    ensure!(
        count == 1,
        "the backend received {count} requests: the second HEADERS on stream 1 was processed"
    );
    Ok(note)
}

fn data_after_reset(ctx: &Ctx) -> Result<Option<String>> {
    rejected(
        ctx,
        |ctx, conn| {
            let s = open_post(ctx, conn);
            vec![
                Frame::rst_stream(s, code::CANCEL),
                Frame::data(s, ES, b"after reset".to_vec()),
            ]
        },
        Expect::stream(1, STREAM_CLOSED),
        Forward::Incomplete,
    )
}

fn closed_stream_tolerated(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    get_200(ctx, &mut conn, "closed")?;
    conn.send(&[
        Frame::window_update(1, 1000),
        Frame::priority(1, 0, false, 16),
    ]);
    conn.ping_alive()?;
    if let Some((s, c)) = conn.resets().iter().find(|(s, _)| *s == 1) {
        return Err(conn.fail(&format!(
            "stream {s} reset with {}: WINDOW_UPDATE on a closed stream MUST NOT be treated as \
             an error",
            frame::code_name(*c)
        )));
    }
    get_200(ctx, &mut conn, "after")?;
    Ok(None)
}

fn even_stream(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |ctx, _| vec![Frame::headers(2, ES | EH, get_block(&ctx.path("even")))],
        PROTOCOL,
        Forward::Nothing,
    )
}

fn decreasing_stream(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    let path = ctx.path("five");
    conn.send(&[Frame::headers(5, ES | EH, get_block(&path))]);
    let response = conn.response(5, false)?;
    ensure_status(&conn, &response, 200)?;
    conn.send(&[Frame::headers(3, ES | EH, get_block(&ctx.path("three")))]);
    let note = conn.expect_error(Expect::connection(PROTOCOL))?;
    thread::sleep(SETTLE);
    let three = ctx
        .forwarded()
        .iter()
        .filter(|r| r.raw_head.contains("/three"))
        .count();
    ensure!(three == 0, "the request on stream 3 reached the backend");
    Ok(note)
}

fn concurrency_limit(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    let Some(limit) = conn.server_setting(setting::MAX_CONCURRENT_STREAMS) else {
        bail!("the server announces no SETTINGS_MAX_CONCURRENT_STREAMS: nothing to exceed");
    };
    ensure!(
        limit <= 1000,
        "SETTINGS_MAX_CONCURRENT_STREAMS {limit} is too large to exceed in a case"
    );
    let mut frames = Vec::new();
    for _ in 0..limit {
        let s = conn.open_stream();
        frames.push(Frame::headers(s, EH, post_block(&ctx.path("open"), &[])));
    }
    let extra = conn.open_stream();
    frames.push(Frame::headers(
        extra,
        EH,
        post_block(&ctx.path("extra"), &[]),
    ));
    conn.send(&frames);
    let note = conn.expect_error(Expect::stream(
        extra,
        &[code::REFUSED_STREAM, code::PROTOCOL_ERROR],
    ))?;
    if let Some((s, c)) = conn.resets().iter().find(|(s, _)| *s != extra) {
        return Err(conn.fail(&format!(
            "stream {s} within the limit was reset ({})",
            frame::code_name(*c)
        )));
    }
    Ok(note)
}

// ----- 5.3 / 5.4 / 5.5 -------------------------------------------------------------------

fn priority_idle(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    conn.send(&[
        Frame::priority(1, 0, false, 200),
        Frame::priority(11, 1, true, 16),
    ]);
    conn.ping_alive()?;
    // Stream 1 is still idle (PRIORITY does not change stream state): it may be opened.
    get_200(ctx, &mut conn, "after-priority")?;
    Ok(None)
}

fn priority_open(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    let s = open_post(ctx, &mut conn);
    conn.send(&[
        Frame::priority(s, 0, true, 255),
        Frame::data(s, ES, b"abc".to_vec()),
    ]);
    let response = conn.response(s, false)?;
    ensure_status(&conn, &response, 200)?;
    let (_, body) = backend_request(ctx)?;
    ensure!(body == b"abc", "backend body {:?}", preview(&body));
    Ok(None)
}

fn priority_self(ctx: &Ctx) -> Result<Option<String>> {
    rejected(
        ctx,
        |ctx, conn| {
            let s = open_post(ctx, conn);
            vec![Frame::priority(s, s, false, 16)]
        },
        Expect::stream(1, PROTOCOL),
        Forward::Incomplete,
    )
}

fn headers_self(ctx: &Ctx) -> Result<Option<String>> {
    rejected(
        ctx,
        |ctx, conn| {
            let s = conn.open_stream();
            let mut payload = frame::priority_fields(s, false, 16);
            payload.extend_from_slice(&get_block(&ctx.path("self")));
            vec![Frame::headers(s, ES | EH | flag::PRIORITY, payload)]
        },
        Expect::stream(1, PROTOCOL),
        Forward::Nothing,
    )
}

fn stream_error_isolated(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    let s = conn.open_stream();
    let path = ctx.path("bad");
    let mut fields = request("GET", &path);
    fields.push(("connection", "keep-alive"));
    conn.send(&[Frame::headers(s, ES | EH, block(&fields))]);
    let answer = conn.expect_answer(Expect::malformed(s))?;
    if answer.connection {
        // Allowed (§5.4.1: a stream error MAY be treated as a connection error), and then
        // there is nothing left to check.
        return Ok(Some("the server answered with a connection error".into()));
    }
    get_200(ctx, &mut conn, "good")?;
    Ok(answer.note)
}

fn unknown_frame_mid_stream(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    let s = open_post(ctx, &mut conn);
    conn.send(&[
        Frame::new(kind::UNKNOWN, 0x3, s, b"extension".to_vec()),
        Frame::data(s, ES, b"abc".to_vec()),
    ]);
    let response = conn.response(s, false)?;
    ensure_status(&conn, &response, 200)?;
    let (_, body) = backend_request(ctx)?;
    ensure!(body == b"abc", "backend body {:?}", preview(&body));
    Ok(None)
}

fn unknown_frame_field_block(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |ctx, conn| {
            let s = conn.open_stream();
            let full = get_block(&ctx.path("split"));
            let (head, tail) = full.split_at(full.len() / 2);
            vec![
                Frame::headers(s, ES, head.to_vec()),
                Frame::new(kind::UNKNOWN, 0, s, b"extension".to_vec()),
                Frame::continuation(s, EH, tail.to_vec()),
            ]
        },
        PROTOCOL,
        Forward::Nothing,
    )
}

// ----- 6.1 / 6.2 -------------------------------------------------------------------------

fn data_stream_zero(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |ctx, conn| {
            open_post(ctx, conn);
            vec![Frame::data(0, ES, b"zero".to_vec())]
        },
        PROTOCOL,
        Forward::Incomplete,
    )
}

fn data_bad_padding(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |ctx, conn| {
            let s = open_post(ctx, conn);
            // Pad Length 6 in a 6-octet payload: padding as long as the payload.
            vec![Frame::data(
                s,
                ES | flag::PADDED,
                frame::padded(b"hello", 6, 0),
            )]
        },
        PROTOCOL,
        Forward::Incomplete,
    )
}

fn data_padded(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    let s = conn.open_stream();
    conn.send(&[
        Frame::headers(
            s,
            EH,
            post_block(&ctx.path("padded"), &[("content-length", "5")]),
        ),
        Frame::data(s, ES | flag::PADDED, frame::padded(b"hello", 6, 6)),
    ]);
    let response = conn.response(s, false)?;
    ensure_status(&conn, &response, 200)?;
    let (_, body) = backend_request(ctx)?;
    ensure!(body == b"hello", "backend body {:?}", preview(&body));
    Ok(None)
}

fn headers_stream_zero(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |ctx, _| vec![Frame::headers(0, ES | EH, get_block(&ctx.path("zero")))],
        PROTOCOL,
        Forward::Nothing,
    )
}

fn headers_bad_padding(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |ctx, conn| {
            let s = conn.open_stream();
            let fields = get_block(&ctx.path("padding"));
            let declared = u8::try_from(fields.len() + 1).unwrap_or(u8::MAX);
            vec![Frame::headers(
                s,
                ES | EH | flag::PADDED,
                frame::padded(&fields, declared, 0),
            )]
        },
        PROTOCOL,
        Forward::Nothing,
    )
}

fn headers_padded_priority(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    let s = conn.open_stream();
    let mut fragment = frame::priority_fields(0, false, 32);
    fragment.extend_from_slice(&get_block(&ctx.path("padded")));
    conn.send(&[Frame::headers(
        s,
        ES | EH | flag::PADDED | flag::PRIORITY,
        frame::padded(&fragment, 8, 8),
    )]);
    let response = conn.response(s, false)?;
    ensure_status(&conn, &response, 200)?;
    Ok(None)
}

/// HEADERS without END_HEADERS carrying the first half of a GET, then `interloper`.
fn interrupted_block(ctx: &Ctx, interloper: Frame) -> Result<Option<String>> {
    connection_error(
        ctx,
        |ctx, conn| {
            let s = conn.open_stream();
            let full = get_block(&ctx.path("split"));
            let (head, tail) = full.split_at(full.len() / 2);
            vec![
                Frame::headers(s, ES, head.to_vec()),
                interloper,
                Frame::continuation(s, EH, tail.to_vec()),
            ]
        },
        PROTOCOL,
        Forward::Nothing,
    )
}

fn headers_then_data(ctx: &Ctx) -> Result<Option<String>> {
    interrupted_block(ctx, Frame::data(1, 0, b"data".to_vec()))
}

fn headers_then_priority(ctx: &Ctx) -> Result<Option<String>> {
    interrupted_block(ctx, Frame::priority(1, 0, false, 16))
}

fn headers_then_other_headers(ctx: &Ctx) -> Result<Option<String>> {
    interrupted_block(
        ctx,
        Frame::headers(3, ES | EH, get_block(&ctx.path("other"))),
    )
}

fn continuation_other_stream(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |ctx, conn| {
            let s = conn.open_stream();
            let full = get_block(&ctx.path("split"));
            let (head, tail) = full.split_at(full.len() / 2);
            vec![
                Frame::headers(s, ES, head.to_vec()),
                Frame::continuation(s + 2, EH, tail.to_vec()),
            ]
        },
        PROTOCOL,
        Forward::Nothing,
    )
}

fn continuation_sequence(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    let s = conn.open_stream();
    let path = ctx.path("continued");
    let mut fields = request("GET", &path);
    fields.push(("x-part", "three pieces"));
    let full = block(&fields);
    let third = full.len() / 3;
    // END_STREAM on HEADERS: CONTINUATION frames still belong to it (§6.2).
    conn.send(&[
        Frame::headers(s, ES, full[..third].to_vec()),
        Frame::continuation(s, 0, full[third..2 * third].to_vec()),
        Frame::continuation(s, EH, full[2 * third..].to_vec()),
    ]);
    let response = conn.response(s, false)?;
    ensure_status(&conn, &response, 200)?;
    let (head, _) = backend_request(ctx)?;
    ensure!(
        head_values(&head, "x-part") == ["three pieces"],
        "the backend did not receive the field from the last CONTINUATION"
    );
    Ok(None)
}

fn second_headers_without_end_stream(ctx: &Ctx) -> Result<Option<String>> {
    rejected(
        ctx,
        |ctx, conn| {
            let s = open_post(ctx, conn);
            vec![Frame::headers(s, EH, block(&[("x-not-trailers", "1")]))]
        },
        Expect::malformed(1),
        Forward::Incomplete,
    )
}

// ----- 6.3 / 6.4 -------------------------------------------------------------------------

fn priority_length(ctx: &Ctx) -> Result<Option<String>> {
    rejected(
        ctx,
        |ctx, conn| {
            let s = open_post(ctx, conn);
            vec![Frame::new(kind::PRIORITY, 0, s, vec![0, 0, 0, 0])]
        },
        Expect::stream(1, FRAME_SIZE),
        Forward::Incomplete,
    )
}

fn priority_stream_zero(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |_, _| vec![Frame::priority(0, 1, false, 16)],
        PROTOCOL,
        Forward::Nothing,
    )
}

fn rst_stream_zero(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |_, _| vec![Frame::rst_stream(0, code::CANCEL)],
        PROTOCOL,
        Forward::Nothing,
    )
}

fn rst_idle(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |_, _| vec![Frame::rst_stream(1, code::CANCEL)],
        PROTOCOL,
        Forward::Nothing,
    )
}

fn rst_length(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |ctx, conn| {
            let s = open_post(ctx, conn);
            vec![Frame::new(kind::RST_STREAM, 0, s, vec![0, 0, 8])]
        },
        FRAME_SIZE,
        Forward::Incomplete,
    )
}

fn rst_cancel(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    let s = open_post(ctx, &mut conn);
    conn.send(&[Frame::rst_stream(s, code::CANCEL)]);
    conn.ping_alive()?;
    get_200(ctx, &mut conn, "after-reset")?;
    if let Some((_, c)) = conn.resets().iter().find(|(id, _)| *id == s) {
        return Err(conn.fail(&format!(
            "the server answered RST_STREAM with RST_STREAM ({}) (§5.4.2: MUST NOT)",
            frame::code_name(*c)
        )));
    }
    Ok(None)
}

// ----- 6.5 / 6.6 / 6.7 / 6.8 -------------------------------------------------------------

fn settings_ack_payload(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |_, _| {
            vec![Frame::new(
                kind::SETTINGS,
                flag::ACK,
                0,
                vec![0, 3, 0, 0, 0, 100],
            )]
        },
        FRAME_SIZE,
        Forward::Nothing,
    )
}

fn settings_stream(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |_, _| vec![Frame::new(kind::SETTINGS, 0, 1, vec![0, 3, 0, 0, 0, 100])],
        PROTOCOL,
        Forward::Nothing,
    )
}

fn settings_length(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |_, _| vec![Frame::new(kind::SETTINGS, 0, 0, vec![0, 3, 0])],
        FRAME_SIZE,
        Forward::Nothing,
    )
}

fn settings_enable_push(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |_, _| vec![Frame::settings(&[(setting::ENABLE_PUSH, 2)])],
        PROTOCOL,
        Forward::Nothing,
    )
}

fn settings_window_too_large(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |_, _| vec![Frame::settings(&[(setting::INITIAL_WINDOW_SIZE, 1 << 31)])],
        FLOW_CONTROL,
        Forward::Nothing,
    )
}

fn settings_frame_size_small(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |_, _| vec![Frame::settings(&[(setting::MAX_FRAME_SIZE, (1 << 14) - 1)])],
        PROTOCOL,
        Forward::Nothing,
    )
}

fn settings_frame_size_large(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |_, _| vec![Frame::settings(&[(setting::MAX_FRAME_SIZE, 1 << 24)])],
        PROTOCOL,
        Forward::Nothing,
    )
}

fn settings_unknown(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    conn.send(&[Frame::settings(&[(0xff, 1), (0x4242, 0xffff_ffff)])]);
    conn.settled()?;
    get_200(ctx, &mut conn, "after-unknown-setting")?;
    Ok(None)
}

fn settings_all_acked(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    conn.send(&[
        Frame::settings(&[(setting::INITIAL_WINDOW_SIZE, 70_000)]),
        Frame::settings(&[(setting::MAX_HEADER_LIST_SIZE, 1 << 20)]),
        Frame::settings(&[
            (setting::ENABLE_PUSH, 0),
            (setting::MAX_CONCURRENT_STREAMS, 10),
        ]),
    ]);
    conn.settled()?;
    get_200(ctx, &mut conn, "after-settings")?;
    Ok(None)
}

fn push_promise_from_client(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |ctx, conn| {
            let s = open_post(ctx, conn);
            let mut payload = 2u32.to_be_bytes().to_vec();
            payload.extend_from_slice(&get_block(&ctx.path("pushed")));
            vec![Frame::new(kind::PUSH_PROMISE, EH, s, payload)]
        },
        PROTOCOL,
        Forward::Incomplete,
    )
}

fn ping_answered(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    conn.ping_alive()?;
    Ok(None)
}

fn ping_ack_ignored(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    conn.send(&[Frame::ping(flag::ACK, *b"unasked!")]);
    // Any PING (or ACK) carrying "unasked!" before the answer to this one fails the case.
    conn.ping_alive()?;
    Ok(None)
}

fn ping_stream(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |_, _| vec![Frame::new(kind::PING, 0, 1, b"onstream".to_vec())],
        PROTOCOL,
        Forward::Nothing,
    )
}

fn ping_length(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |_, _| vec![Frame::new(kind::PING, 0, 0, b"short".to_vec())],
        FRAME_SIZE,
        Forward::Nothing,
    )
}

fn goaway_stream(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |_, _| vec![Frame::goaway(1, 0, code::NO_ERROR)],
        PROTOCOL,
        Forward::Nothing,
    )
}

// ----- 6.9 -------------------------------------------------------------------------------

fn window_update_zero_connection(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |_, _| vec![Frame::window_update(0, 0)],
        PROTOCOL,
        Forward::Nothing,
    )
}

fn window_update_zero_stream(ctx: &Ctx) -> Result<Option<String>> {
    rejected(
        ctx,
        |ctx, conn| {
            let s = open_post(ctx, conn);
            vec![Frame::window_update(s, 0)]
        },
        Expect::stream(1, PROTOCOL),
        Forward::Incomplete,
    )
}

fn window_update_length(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |_, _| vec![Frame::new(kind::WINDOW_UPDATE, 0, 0, vec![0, 0, 1])],
        FRAME_SIZE,
        Forward::Nothing,
    )
}

fn window_overflow_connection(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |_, _| {
            vec![
                Frame::window_update(0, 0x7fff_ffff),
                Frame::window_update(0, 0x7fff_ffff),
            ]
        },
        FLOW_CONTROL,
        Forward::Nothing,
    )
}

fn window_overflow_stream(ctx: &Ctx) -> Result<Option<String>> {
    rejected(
        ctx,
        |ctx, conn| {
            let s = open_post(ctx, conn);
            vec![
                Frame::window_update(s, 0x7fff_ffff),
                Frame::window_update(s, 0x7fff_ffff),
            ]
        },
        Expect::stream(1, FLOW_CONTROL),
        Forward::Incomplete,
    )
}

fn initial_window_overflow(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |ctx, conn| {
            let s = open_post(ctx, conn);
            // The stream's send window becomes exactly 2^31-1; one more octet of initial
            // window pushes it over.
            vec![
                Frame::window_update(s, 0x7fff_ffff - 65_535),
                Frame::settings(&[(setting::INITIAL_WINDOW_SIZE, 65_536)]),
            ]
        },
        FLOW_CONTROL,
        Forward::Incomplete,
    )
}

fn data_beyond_window(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    conn.auto_window = false;
    let s = conn.open_stream();
    // The stalling upstream never reads, so the proxy stops consuming the body and stops
    // opening the window once its buffers are full; the client keeps sending regardless.
    let path = format!("/stall{}", ctx.path("flow"));
    conn.send(&[Frame::headers(s, EH, post_block(&path, &[]))]);
    let chunk = Frame::data(s, 0, vec![b'w'; 16_384]).encode();
    let batch: Vec<u8> = chunk.repeat(16);
    let mut sent = 0usize;
    for _ in 0..64 {
        conn.send_raw(&batch, "16 x DATA (16384 octets, no END_STREAM)");
        sent += batch.len();
        match conn.next(Instant::now() + Duration::from_millis(1))? {
            Some(Event::Frame(f)) if matches!(f.kind, kind::RST_STREAM | kind::GOAWAY) => {
                // Judge it below, with the same rules as every other case.
                conn.unread(Event::Frame(f));
                break;
            }
            Some(Event::Closed) => {
                conn.unread(Event::Closed);
                break;
            }
            _ => {}
        }
    }
    let answer = conn.expect_answer(Expect::stream(s, FLOW_CONTROL))?;
    let what = if answer.connection {
        "connection error"
    } else {
        "stream error"
    };
    let sent_note = format!(
        "{what} after {} KiB of DATA sent without waiting for WINDOW_UPDATE",
        sent / 1024
    );
    Ok(Some(match answer.note {
        Some(note) => format!("{note}; {sent_note}"),
        None => sent_note,
    }))
}

/// Reads DATA on `stream` until `octets` more octets arrived, then watches for [`QUIET`]:
/// more than `octets` fails the case (the client sends no WINDOW_UPDATE, `auto_window` is
/// off). Returns whether the stream ended.
fn exactly_data(conn: &mut Conn, stream: u32, octets: usize, got: &mut Vec<u8>) -> Result<bool> {
    let target = got.len() + octets;
    let mut ended = false;
    let mut quiet_until = (octets == 0).then(|| Instant::now() + QUIET);
    loop {
        let until = quiet_until.unwrap_or_else(|| Instant::now() + Duration::from_secs(5));
        match conn.next(until)? {
            None if quiet_until.is_some() => return Ok(ended),
            None => {
                return Err(conn.fail(&format!(
                    "{} of {target} expected octets of DATA arrived",
                    got.len()
                )));
            }
            Some(Event::Closed) => return Err(conn.fail("connection closed")),
            Some(Event::Frame(f)) if f.kind == kind::GOAWAY => {
                return Err(conn.fail("unexpected GOAWAY"));
            }
            Some(Event::Frame(f)) if f.kind == kind::RST_STREAM && f.stream_id() == stream => {
                return Err(conn.fail("stream reset"));
            }
            Some(Event::Frame(f)) if f.kind == kind::DATA && f.stream_id() == stream => {
                got.extend_from_slice(&f.payload);
                ended = f.has(ES);
                if got.len() > target {
                    return Err(conn.fail(&format!(
                        "{} octets of DATA where the window allowed {target} (RFC 9113 §6.9.1: \
                         MUST NOT exceed the space available)",
                        got.len()
                    )));
                }
                if got.len() == target && quiet_until.is_none() {
                    quiet_until = Some(Instant::now() + QUIET);
                }
                if ended {
                    return Ok(true);
                }
            }
            Some(_) => {}
        }
    }
}

/// Waits for the response HEADERS on `stream`; returns whether END_STREAM came with them.
fn response_head(conn: &mut Conn, stream: u32) -> Result<bool> {
    loop {
        match conn.next(Instant::now() + Duration::from_secs(5))? {
            None | Some(Event::Closed) => return Err(conn.fail("no response HEADERS")),
            Some(Event::Fields {
                stream: s,
                fields,
                end_stream,
            }) if s == stream => {
                let status = status_of(&fields);
                if status != Some(200) {
                    return Err(conn.fail(&format!("status {status:?} instead of 200")));
                }
                return Ok(end_stream);
            }
            Some(Event::Frame(f)) if f.kind == kind::DATA && f.stream_id() == stream => {
                return Err(conn.fail(&format!(
                    "{} before HEADERS, or beyond a window of 0",
                    f.describe()
                )));
            }
            Some(_) => {}
        }
    }
}

fn initial_window_one(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2_with(&[(setting::INITIAL_WINDOW_SIZE, 1)])?;
    conn.auto_window = false;
    let path = ctx.path("window-one");
    let s = conn.open_stream();
    conn.send(&[Frame::headers(s, ES | EH, get_block(&path))]);
    ensure!(
        !response_head(&mut conn, s)?,
        "the response has no content to test with"
    );
    let mut body = Vec::new();
    if exactly_data(&mut conn, s, 1, &mut body)? {
        return Err(conn.fail("the whole response fit in one octet: nothing left to test"));
    }
    conn.send(&[Frame::window_update(s, 1 << 20)]);
    ensure!(
        exactly_data(&mut conn, s, 1 << 20, &mut body)?,
        "the response did not end"
    );
    ensure!(
        body.starts_with(format!("GET {path} HTTP/1.1\r\n").as_bytes()),
        "body {:?}",
        preview(&body)
    );
    Ok(None)
}

fn initial_window_change(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2_with(&[(setting::INITIAL_WINDOW_SIZE, 0)])?;
    conn.auto_window = false;
    let path = ctx.path("window-change");
    let s = conn.open_stream();
    conn.send(&[Frame::headers(s, ES | EH, get_block(&path))]);
    ensure!(
        !response_head(&mut conn, s)?,
        "the response has no content to test with"
    );
    let mut body = Vec::new();
    // Window 0: nothing may come.
    exactly_data(&mut conn, s, 0, &mut body)?;
    conn.send(&[Frame::settings(&[(setting::INITIAL_WINDOW_SIZE, 1)])]);
    if exactly_data(&mut conn, s, 1, &mut body)? {
        return Err(conn.fail("the whole response fit in one octet: nothing left to test"));
    }
    conn.send(&[Frame::settings(&[(setting::INITIAL_WINDOW_SIZE, 1 << 20)])]);
    ensure!(
        exactly_data(&mut conn, s, 1 << 20, &mut body)?,
        "the response did not end"
    );
    ensure!(
        body.starts_with(format!("GET {path} HTTP/1.1\r\n").as_bytes()),
        "body {:?}",
        preview(&body)
    );
    Ok(None)
}

// ----- 6.10 ------------------------------------------------------------------------------

fn continuation_stream_zero(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |ctx, conn| {
            let s = conn.open_stream();
            let full = get_block(&ctx.path("split"));
            let (head, tail) = full.split_at(full.len() / 2);
            vec![
                Frame::headers(s, ES, head.to_vec()),
                Frame::continuation(0, EH, tail.to_vec()),
            ]
        },
        PROTOCOL,
        Forward::Nothing,
    )
}

fn continuation_after_end_headers(ctx: &Ctx) -> Result<Option<String>> {
    connection_error(
        ctx,
        |ctx, conn| {
            let s = conn.open_stream();
            vec![
                Frame::headers(s, ES | EH, get_block(&ctx.path("complete"))),
                Frame::continuation(s, EH, block(&[("x-late", "1")])),
            ]
        },
        PROTOCOL,
        Forward::Any,
    )
}

// ----- 8.1 -------------------------------------------------------------------------------

fn request_body(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    let s = conn.open_stream();
    conn.send(&[
        Frame::headers(
            s,
            EH,
            post_block(&ctx.path("body"), &[("content-length", "11")]),
        ),
        Frame::data(s, 0, b"hello ".to_vec()),
        Frame::data(s, ES, b"world".to_vec()),
    ]);
    let response = conn.response(s, false)?;
    ensure_status(&conn, &response, 200)?;
    let (head, body) = backend_request(ctx)?;
    ensure!(body == b"hello world", "backend body {:?}", preview(&body));
    ensure!(
        head_values(&head, "content-length") == ["11"],
        "backend Content-Length {:?}",
        head_values(&head, "content-length")
    );
    Ok(None)
}

fn request_body_no_length(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    let s = open_post(ctx, &mut conn);
    conn.send(&[
        Frame::data(s, 0, b"abc".to_vec()),
        Frame::data(s, 0, b"def".to_vec()),
        Frame::data(s, ES, Vec::new()),
    ]);
    let response = conn.response(s, false)?;
    ensure_status(&conn, &response, 200)?;
    let (_, body) = backend_request(ctx)?;
    ensure!(body == b"abcdef", "backend body {:?}", preview(&body));
    Ok(None)
}

fn request_trailers(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    let s = conn.open_stream();
    conn.send(&[
        Frame::headers(
            s,
            EH,
            post_block(&ctx.path("trailers"), &[("te", "trailers")]),
        ),
        Frame::data(s, 0, b"abc".to_vec()),
        Frame::headers(s, ES | EH, block(&[("x-checksum", "900150983cd24fb0")])),
    ]);
    let response = conn.response(s, false)?;
    ensure_status(&conn, &response, 200)?;
    let (_, body) = backend_request(ctx)?;
    ensure!(body == b"abc", "backend body {:?}", preview(&body));
    Ok(None)
}

fn content_length_larger(ctx: &Ctx) -> Result<Option<String>> {
    rejected(
        ctx,
        |ctx, conn| {
            let s = conn.open_stream();
            vec![
                Frame::headers(
                    s,
                    EH,
                    post_block(&ctx.path("cl"), &[("content-length", "10")]),
                ),
                Frame::data(s, ES, b"hello".to_vec()),
            ]
        },
        Expect::malformed(1),
        Forward::Incomplete,
    )
}

fn content_length_smaller(ctx: &Ctx) -> Result<Option<String>> {
    rejected(
        ctx,
        |ctx, conn| {
            let s = conn.open_stream();
            vec![
                Frame::headers(
                    s,
                    EH,
                    post_block(&ctx.path("cl"), &[("content-length", "3")]),
                ),
                Frame::data(s, ES, b"hello".to_vec()),
            ]
        },
        Expect::malformed(1),
        Forward::Incomplete,
    )
}

fn content_length_no_data(ctx: &Ctx) -> Result<Option<String>> {
    rejected(
        ctx,
        |ctx, conn| {
            let s = conn.open_stream();
            vec![Frame::headers(
                s,
                ES | EH,
                post_block(&ctx.path("cl"), &[("content-length", "5")]),
            )]
        },
        Expect::malformed(1),
        Forward::Nothing,
    )
}

// ----- 8.2 / 8.3 -------------------------------------------------------------------------

/// A GET with one extra field `name: value` must be treated as malformed and not forwarded.
fn malformed_field(ctx: &Ctx, name: &str, value: &str) -> Result<Option<String>> {
    let path = ctx.path("field");
    let mut fields = request("GET", &path);
    fields.push((name, value));
    let block = Block::new().fields(&fields).bytes();
    rejected(
        ctx,
        move |_, conn| {
            let s = conn.open_stream();
            vec![Frame::headers(s, ES | EH, block)]
        },
        Expect::malformed(1),
        Forward::Nothing,
    )
}

fn te_trailers(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    let s = conn.open_stream();
    let path = ctx.path("te");
    let mut fields = request("GET", &path);
    fields.push(("te", "trailers"));
    conn.send(&[Frame::headers(s, ES | EH, block(&fields))]);
    let response = conn.response(s, false)?;
    ensure_status(&conn, &response, 200)?;
    Ok(None)
}

fn cookie_crumbs(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    let s = conn.open_stream();
    let path = ctx.path("cookie");
    let mut fields = request("GET", &path);
    fields.push(("cookie", "a=1"));
    fields.push(("cookie", "b=2"));
    conn.send(&[Frame::headers(s, ES | EH, block(&fields))]);
    let response = conn.response(s, false)?;
    ensure_status(&conn, &response, 200)?;
    let (head, _) = backend_request(ctx)?;
    let cookies = head_values(&head, "cookie");
    ensure!(
        cookies == ["a=1; b=2"],
        "the backend received Cookie fields {cookies:?}, expected one \"a=1; b=2\""
    );
    Ok(None)
}

/// How a request's pseudo-header fields are broken.
enum Pseudo {
    Drop(&'static str),
    Append(&'static str, &'static str),
    EmptyPath,
    AfterRegular,
}

fn malformed_pseudo(ctx: &Ctx, how: Pseudo) -> Result<Option<String>> {
    let path = ctx.path("pseudo");
    let mut fields = request("GET", &path);
    match how {
        Pseudo::Drop(name) => fields.retain(|(n, _)| *n != name),
        Pseudo::Append(name, value) => fields.push((name, value)),
        Pseudo::EmptyPath => {
            fields.retain(|(n, _)| *n != ":path");
            fields.push((":path", ""));
        }
        Pseudo::AfterRegular => {
            fields.retain(|(n, _)| *n != ":path");
            fields.push(("x-regular", "1"));
            fields.push((":path", &path));
        }
    }
    let block = Block::new().fields(&fields).bytes();
    rejected(
        ctx,
        move |_, conn| {
            let s = conn.open_stream();
            vec![Frame::headers(s, ES | EH, block)]
        },
        Expect::malformed(1),
        Forward::Nothing,
    )
}

fn pseudo_in_trailers(ctx: &Ctx) -> Result<Option<String>> {
    rejected(
        ctx,
        |ctx, conn| {
            let s = open_post(ctx, conn);
            vec![
                Frame::data(s, 0, b"abc".to_vec()),
                Frame::headers(s, ES | EH, block(&[(":path", "/trailer")])),
            ]
        },
        Expect::malformed(1),
        Forward::Incomplete,
    )
}

fn authority_host_mismatch(ctx: &Ctx) -> Result<Option<String>> {
    let path = ctx.path("host");
    let mut fields = request("GET", &path);
    fields.push(("host", "other.test"));
    let block = Block::new().fields(&fields).bytes();
    rejected(
        ctx,
        move |_, conn| {
            let s = conn.open_stream();
            vec![Frame::headers(s, ES | EH, block)]
        },
        Expect::malformed(1),
        Forward::Nothing,
    )
}

fn host_from_authority(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    get_200(ctx, &mut conn, "host")?;
    let (head, _) = backend_request(ctx)?;
    let hosts = head_values(&head, "host");
    ensure!(
        hosts == [AUTHORITY],
        "the backend received Host {hosts:?}, expected [{AUTHORITY:?}]"
    );
    Ok(None)
}

// ----- RFC 7541 --------------------------------------------------------------------------

/// A request whose field block is a valid GET followed by `broken`: the server must fail
/// the connection with COMPRESSION_ERROR and forward nothing.
fn compression_error(ctx: &Ctx, broken: Block) -> Result<Option<String>> {
    let mut bytes = get_block(&ctx.path("hpack"));
    bytes.extend_from_slice(&broken.bytes());
    connection_error(
        ctx,
        move |_, conn| {
            let s = conn.open_stream();
            vec![Frame::headers(s, ES | EH, bytes)]
        },
        COMPRESSION,
        Forward::Nothing,
    )
}

fn hpack_size_update_too_large(ctx: &Ctx) -> Result<Option<String>> {
    let path = ctx.path("hpack");
    connection_error(
        ctx,
        move |_, conn| {
            let limit = conn
                .server_setting(setting::HEADER_TABLE_SIZE)
                .unwrap_or(4096);
            let s = conn.open_stream();
            let bytes = Block::new()
                .size_update(limit as usize + 1)
                .fields(&request("GET", &path))
                .bytes();
            vec![Frame::headers(s, ES | EH, bytes)]
        },
        COMPRESSION,
        Forward::Nothing,
    )
}

fn hpack_size_update_late(ctx: &Ctx) -> Result<Option<String>> {
    compression_error(ctx, Block::new().size_update(0))
}

fn hpack_dynamic_table(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    let first = ctx.path("first");
    let second = ctx.path("second");
    let s1 = conn.open_stream();
    let s3 = conn.open_stream();
    let block1 = Block::new()
        .fields(&request("GET", &first))
        .incremental(b"x-dynamic", b"from the table")
        .bytes();
    // Index 62: the first dynamic entry, added by the previous block.
    let block3 = Block::new()
        .fields(&request("GET", &second))
        .indexed(62)
        .bytes();
    conn.send(&[Frame::headers(s1, ES | EH, block1)]);
    let r1 = conn.response(s1, false)?;
    ensure_status(&conn, &r1, 200)?;
    conn.send(&[Frame::headers(s3, ES | EH, block3)]);
    let r3 = conn.response(s3, false)?;
    ensure_status(&conn, &r3, 200)?;
    for (response, path) in [(&r1, &first), (&r3, &second)] {
        let head = response.text();
        ensure!(
            head.starts_with(&format!("GET {path} ")),
            "echo {:?}",
            preview(&response.body)
        );
        ensure!(
            head_values(&head, "x-dynamic") == ["from the table"],
            "the backend did not receive x-dynamic for {path}"
        );
    }
    Ok(None)
}

fn hpack_huffman_request(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    let path = ctx.path("huffman");
    let s = conn.open_stream();
    let bytes = Block::new()
        .indexed(2)
        .indexed(6)
        .huffman(b":authority", AUTHORITY.as_bytes())
        .huffman(b":path", path.as_bytes())
        .huffman(b"x-huffman", b"Hello, Huffman! 0123456789")
        .bytes();
    conn.send(&[Frame::headers(s, ES | EH, bytes)]);
    let response = conn.response(s, false)?;
    ensure_status(&conn, &response, 200)?;
    let (head, _) = backend_request(ctx)?;
    ensure!(
        head.starts_with(&format!("GET {path} ")),
        "backend request line {:?}",
        head.lines().next()
    );
    ensure!(
        head_values(&head, "x-huffman") == ["Hello, Huffman! 0123456789"],
        "the backend received x-huffman {:?}",
        head_values(&head, "x-huffman")
    );
    Ok(None)
}

fn hpack_never_indexed(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    let path = ctx.path("never");
    let s = conn.open_stream();
    let bytes = Block::new()
        .fields(&request("GET", &path))
        .never_indexed(b"x-secret-token", b"s3cr3t")
        .bytes();
    conn.send(&[Frame::headers(s, ES | EH, bytes)]);
    let response = conn.response(s, false)?;
    ensure_status(&conn, &response, 200)?;
    let (head, _) = backend_request(ctx)?;
    ensure!(
        head_values(&head, "x-secret-token") == ["s3cr3t"],
        "the backend did not receive the never-indexed field"
    );
    Ok(None)
}

fn hpack_table_size_zero(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    get_200(ctx, &mut conn, "before")?;
    conn.send(&[Frame::settings(&[(setting::HEADER_TABLE_SIZE, 0)])]);
    conn.settled()?;
    // The decoder now requires a size update to at most 0 at the start of the next block.
    get_200(ctx, &mut conn, "after")?;
    get_200(ctx, &mut conn, "again")?;
    Ok(None)
}

// ----- Responses -------------------------------------------------------------------------

fn get_ok(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    get_200(ctx, &mut conn, "get")?;
    Ok(None)
}

fn head_no_content(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    let s = conn.open_stream();
    conn.send(&[Frame::headers(
        s,
        ES | EH,
        block(&request("HEAD", &ctx.path("head"))),
    )]);
    let response = conn.response(s, true)?;
    ensure_status(&conn, &response, 200)?;
    if !response.ended_on_headers {
        return Ok(Some(format!(
            "END_STREAM came on an empty DATA frame ({} DATA frame(s)), not on HEADERS",
            response.data_frames
        )));
    }
    Ok(None)
}

fn response_no_connection_fields(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    let s = conn.open_stream();
    // The backend answers /frame/hop with Connection: X-Secret, X-Secret, Keep-Alive and
    // Proxy-Authenticate; the query only marks the request as this case's.
    let path = format!("/frame/hop?{}", ctx.path(""));
    conn.send(&[Frame::headers(s, ES | EH, get_block(&path))]);
    // The response check rejects connection-specific fields itself.
    let response = conn.response(s, false)?;
    ensure_status(&conn, &response, 200)?;
    ensure!(
        response.header("x-secret").is_none(),
        "x-secret (named by the backend's Connection field) was forwarded"
    );
    ensure!(
        response.header("x-visible").as_deref() == Some("yes"),
        "x-visible is missing"
    );
    ensure!(
        response.body == b"hop",
        "body {:?}",
        preview(&response.body)
    );
    Ok(None)
}

fn chunked_backend_response(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    let s = conn.open_stream();
    let path = format!("/frame/chunked?{}", ctx.path(""));
    conn.send(&[Frame::headers(s, ES | EH, get_block(&path))]);
    let response = conn.response(s, false)?;
    ensure_status(&conn, &response, 200)?;
    ensure!(
        response.body == b"hello, world",
        "body {:?}",
        preview(&response.body)
    );
    Ok(None)
}

fn concurrent_streams(ctx: &Ctx) -> Result<Option<String>> {
    let mut conn = ctx.h2()?;
    let mut frames = Vec::new();
    let mut expected = Vec::new();
    let mut streams = Vec::new();
    for i in 0..5 {
        let s = conn.open_stream();
        let path = ctx.path(&format!("concurrent-{i}"));
        frames.push(Frame::headers(s, ES | EH, get_block(&path)));
        expected.push(path);
        streams.push(s);
    }
    conn.send(&frames);
    let responses = conn.responses(&streams, false)?;
    for (response, path) in responses.iter().zip(&expected) {
        ensure_status(&conn, response, 200)?;
        ensure!(
            response.text().starts_with(&format!("GET {path} ")),
            "stream answered with another request's echo: {:?}",
            preview(&response.body)
        );
    }
    Ok(None)
}

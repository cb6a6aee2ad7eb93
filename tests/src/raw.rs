//! A raw TCP client: write exact bytes, read responses with their framing, notice closes.
//!
//! For what a well-behaved client library refuses to send: malformed requests, pipelined
//! requests in one write, `Expect: 100-continue`, protocol upgrades.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long one read operation waits by default.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A response as read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The decoded body (de-chunked).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One TCP connection with a read buffer.
#[derive(Debug)]
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Deadline for each read operation.
    pub timeout: Duration,
}

impl RawConn {
    /// Connects to `addr`; panics if that fails.
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        let _ = stream.set_nodelay(true);
        RawConn {
            stream,
            buf: Vec::new(),
            timeout: READ_TIMEOUT,
        }
    }

    /// Writes all of `bytes`.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Reads more into the buffer; `Ok(0)` on end of stream, `Err` on error or timeout.
    async fn fill(&mut self, deadline: Instant) -> Result<usize, String> {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Ok(Err(e)) => Err(format!("read error: {e}")),
            Err(_) => Err(format!(
                "timed out; {} bytes buffered: {:?}",
                self.buf.len(),
                String::from_utf8_lossy(&self.buf)
            )),
        }
    }

    /// Makes sure at least `n` bytes are buffered.
    async fn need(&mut self, n: usize, deadline: Instant) -> Result<(), String> {
        while self.buf.len() < n {
            if self.fill(deadline).await? == 0 {
                return Err(format!(
                    "connection closed with {} of {n} bytes",
                    self.buf.len()
                ));
            }
        }
        Ok(())
    }

    /// Takes one CRLF-terminated line (without the CRLF) off the buffer.
    async fn line(&mut self, deadline: Instant) -> Result<Vec<u8>, String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.buf.len() > 1 << 20 {
                return Err("line longer than 1 MiB".into());
            }
            if self.fill(deadline).await? == 0 {
                return Err("connection closed inside a line".into());
            }
        }
    }

    /// Reads one response (an interim 1xx counts as one). `head_request` says the request was
    /// HEAD, whose response has no body.
    pub async fn read_response_for(&mut self, head_request: bool) -> Result<RawResponse, String> {
        let deadline = Instant::now() + self.timeout;
        let (status, headers, head_len) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 128];
            let mut parsed = httparse::Response::new(&mut slots);
            match parsed.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let headers: Vec<(String, String)> = parsed
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_owned(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    break (parsed.code.unwrap_or(0), headers, n);
                }
                Ok(httparse::Status::Partial) => {
                    if self.fill(deadline).await? == 0 {
                        return Err(if self.buf.is_empty() {
                            "connection closed before a response".into()
                        } else {
                            format!(
                                "connection closed inside a response head: {:?}",
                                String::from_utf8_lossy(&self.buf)
                            )
                        });
                    }
                }
                Err(e) => {
                    return Err(format!(
                        "unparsable response ({e}): {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ));
                }
            }
        };
        self.buf.drain(..head_len);
        let mut resp = RawResponse {
            status,
            headers,
            body: Vec::new(),
        };
        if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(resp);
        }
        let chunked = resp
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        if chunked {
            loop {
                let line = self.line(deadline).await?;
                let text = String::from_utf8_lossy(&line);
                let size = text.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size, 16)
                    .map_err(|_| format!("bad chunk size line {text:?}"))?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    while !self.line(deadline).await?.is_empty() {}
                    break;
                }
                self.need(size + 2, deadline).await?;
                resp.body.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
            }
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len
                .trim()
                .parse()
                .map_err(|_| format!("bad content-length {len:?}"))?;
            self.need(len, deadline).await?;
            resp.body = self.buf.drain(..len).collect();
        } else {
            // Close-delimited.
            while self.fill(deadline).await? > 0 {}
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }

    /// Reads one response to a non-HEAD request.
    pub async fn read_response(&mut self) -> Result<RawResponse, String> {
        self.read_response_for(false).await
    }

    /// Reads exactly `n` bytes (for upgraded connections).
    pub async fn read_exact(&mut self, n: usize) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + self.timeout;
        self.need(n, deadline).await?;
        Ok(self.buf.drain(..n).collect())
    }

    /// Waits up to `wait` for the peer to close; true on end of stream or reset. Bytes that
    /// arrive meanwhile are kept in the buffer.
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            match self.fill(deadline).await {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => return e.starts_with("read error"),
            }
        }
    }

    /// Bytes received but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }
}

/// Sends `bytes` on a new connection and reads one response (after any 1xx interim ones).
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Result<RawResponse, String> {
    let mut c = RawConn::connect(addr).await;
    c.send(bytes).await.map_err(|e| format!("write: {e}"))?;
    for _ in 0..4 {
        let r = c.read_response().await?;
        if !(100..200).contains(&r.status) {
            return Ok(r);
        }
    }
    Err("more than four interim responses".into())
}

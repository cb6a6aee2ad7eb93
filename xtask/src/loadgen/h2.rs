//! HTTP/2 over TLS: h2 over tokio-rustls with ALPN `h2`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use http::Request;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{Client, Response, Target};

/// Per-stream receive window: large, like h2load's default, so that flow control is not what
/// is measured.
const STREAM_WINDOW: u32 = 1 << 24;
/// Connection receive window.
const CONNECTION_WINDOW: u32 = 1 << 30;

/// Connects with ALPN `h2`, TLS 1.2 or 1.3 on aws-lc-rs, any server certificate.
pub(super) struct H2Client {
    tls: TlsConnector,
}

impl H2Client {
    pub(super) fn new() -> Result<Self> {
        let config = super::tls::client_config(b"h2", false)?;
        Ok(Self {
            tls: TlsConnector::from(Arc::new(config)),
        })
    }
}

/// An HTTP/2 connection: the request sender, and the h2 connection driver in its own task.
pub(super) struct H2Conn {
    sender: h2::client::SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
    driver: tokio::task::JoinHandle<()>,
}

/// A stream slot's sender, with the flag the driver sets when the connection ends.
pub(super) struct H2Sender {
    send: h2::client::SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

impl Client for H2Client {
    type Conn = H2Conn;
    type Sender = H2Sender;

    async fn connect(&self, target: &Target) -> Result<H2Conn> {
        let tcp = TcpStream::connect(target.addr)
            .await
            .with_context(|| format!("TCP connect to {}", target.addr))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(target.server_name.clone())
            .with_context(|| format!("TLS server name {}", target.server_name))?;
        let tls = self.tls.connect(name, tcp).await.context("TLS handshake")?;
        ensure!(
            tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice()),
            "the server did not select ALPN h2"
        );
        let (sender, connection) = h2::client::Builder::new()
            .enable_push(false)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Bytes>(tls)
            .await
            .context("HTTP/2 handshake")?;
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        let driver = tokio::spawn(async move {
            let _ = connection.await;
            flag.store(true, Ordering::Release);
        });
        Ok(H2Conn {
            sender,
            closed,
            driver,
        })
    }

    fn sender(conn: &H2Conn) -> H2Sender {
        H2Sender {
            send: conn.sender.clone(),
            closed: conn.closed.clone(),
        }
    }

    fn is_closed(sender: &H2Sender) -> bool {
        sender.closed.load(Ordering::Acquire)
    }

    async fn request(sender: &mut H2Sender, request: &Request<()>) -> Result<Response> {
        // Waits for a free stream under the server's SETTINGS_MAX_CONCURRENT_STREAMS.
        std::future::poll_fn(|cx| sender.send.poll_ready(cx))
            .await
            .context("waiting for a stream")?;
        let (response, _) = sender
            .send
            .send_request(request.clone(), true)
            .context("sending the request")?;
        let response = response.await.context("receiving the response head")?;
        let status = response.status();
        let mut body = response.into_body();
        let mut body_bytes = 0;
        while let Some(chunk) = body.data().await {
            let chunk = chunk.context("receiving the response body")?;
            body_bytes += chunk.len() as u64;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        Ok(Response { status, body_bytes })
    }

    async fn close(conn: H2Conn) {
        let H2Conn { sender, driver, .. } = conn;
        // The last sender gone, h2 sends GOAWAY and the driver finishes.
        drop(sender);
        let _ = driver.await;
    }
}

//! HTTP/3 over QUIC: quinn + h3 + h3-quinn. One quinn endpoint (one UDP socket, one
//! endpoint driver) per connection, so that connections spread over the runtime's threads
//! like separate clients would.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use bytes::{Buf, Bytes};
use http::Request;
use quinn::crypto::rustls::QuicClientConfig;

use super::{Client, Response, Target};

/// The h3 request sender over quinn.
type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// `H3_NO_ERROR` (RFC 9114 §8.1), the code of an orderly close.
const H3_NO_ERROR: u32 = 0x100;

/// Connects with ALPN `h3`, TLS 1.3 on aws-lc-rs, any server certificate.
pub(super) struct H3Client {
    config: quinn::ClientConfig,
}

impl H3Client {
    pub(super) fn new() -> Result<Self> {
        let tls = super::tls::client_config(b"h3", true)?;
        let quic = QuicClientConfig::try_from(tls).context("QUIC TLS configuration")?;
        Ok(Self {
            config: quinn::ClientConfig::new(Arc::new(quic)),
        })
    }
}

/// An HTTP/3 connection: the quinn endpoint and connection, and the h3 request sender. The h3
/// connection driver runs in its own task until the connection closes.
pub(super) struct H3Conn {
    endpoint: quinn::Endpoint,
    quic: quinn::Connection,
    sender: SendRequest,
    driver: tokio::task::JoinHandle<()>,
}

/// A stream slot's sender, with the QUIC connection to see whether it is closed.
pub(super) struct H3Sender {
    send: SendRequest,
    quic: quinn::Connection,
}

impl Client for H3Client {
    type Conn = H3Conn;
    type Sender = H3Sender;

    async fn connect(&self, target: &Target) -> Result<H3Conn> {
        let local: SocketAddr = if target.addr.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let endpoint = quinn::Endpoint::client(local).context("binding a UDP socket")?;
        let quic = endpoint
            .connect_with(self.config.clone(), target.addr, &target.server_name)
            .context("starting the QUIC handshake")?
            .await
            .context("QUIC handshake")?;
        let alpn = quic
            .handshake_data()
            .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|data| data.protocol);
        ensure!(
            alpn.as_deref() == Some(b"h3".as_slice()),
            "the server did not select ALPN h3"
        );
        let (mut driver, sender) = h3::client::new(h3_quinn::Connection::new(quic.clone()))
            .await
            .context("HTTP/3 connection setup")?;
        let driver = tokio::spawn(async move {
            // Ends when the connection does, with the reason (an orderly close included).
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Ok(H3Conn {
            endpoint,
            quic,
            sender,
            driver,
        })
    }

    fn sender(conn: &H3Conn) -> H3Sender {
        H3Sender {
            send: conn.sender.clone(),
            quic: conn.quic.clone(),
        }
    }

    fn is_closed(sender: &H3Sender) -> bool {
        sender.quic.close_reason().is_some()
    }

    async fn request(sender: &mut H3Sender, request: &Request<()>) -> Result<Response> {
        let mut stream = sender
            .send
            .send_request(request.clone())
            .await
            .context("sending the request")?;
        stream.finish().await.context("finishing the request")?;
        let response = stream
            .recv_response()
            .await
            .context("receiving the response head")?;
        // Read to the end: the stream must not be dropped with a read in progress.
        let mut body_bytes = 0;
        while let Some(chunk) = stream
            .recv_data()
            .await
            .context("receiving the response body")?
        {
            body_bytes += chunk.remaining() as u64;
        }
        Ok(Response {
            status: response.status(),
            body_bytes,
        })
    }

    async fn close(conn: H3Conn) {
        let H3Conn {
            endpoint,
            quic,
            sender,
            driver,
        } = conn;
        drop(sender);
        quic.close(H3_NO_ERROR.into(), b"done");
        let _ = driver.await;
        // Sends the CONNECTION_CLOSE before the socket goes away.
        endpoint.wait_idle().await;
    }
}

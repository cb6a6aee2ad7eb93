//! The QUIC endpoint: binds the UDP socket, admits connections (Retry under load, a cap on
//! live connections), runs the TLS handshake and hands each connection to the h3 server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use h3::error::Code;
use http::{Request, Response};
use proxy_core::body::ProxyBody;
use proxy_core::{ConnInfo, ListenerPolicy, Scheme};
use quinn::crypto::rustls::HandshakeData;
use rustls::pki_types::CertificateDer;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::Http3Error;
use crate::connection::{Handshake, serve_connection};
use crate::options::{AddressValidation, ServerOptions, quic_server_config};

/// Counters shared by every connection of an endpoint, for logs and metrics.
#[derive(Debug, Default)]
pub struct Http3Stats {
    /// Connections whose handshake completed (or that started on early data).
    pub connections: AtomicU64,
    /// Handshakes that failed or timed out.
    pub handshake_failures: AtomicU64,
    /// Retry packets sent to validate a client's address.
    pub retries: AtomicU64,
    /// Connection attempts refused because `max_connections` were open.
    pub refused: AtomicU64,
    /// Requests received as early data (0-RTT), served or refused with 425.
    pub early_data_requests: AtomicU64,
    /// Streams reset because the client kept flow control shut past the stall timeout.
    pub stalled_streams: AtomicU64,
    /// Connections open now.
    pub open_connections: AtomicUsize,
}

/// Turns a verified client certificate chain (end entity first) into the subject recorded in
/// [`ConnInfo::client_subject`]; an `Err` closes the connection.
pub type Identify =
    Arc<dyn Fn(&[CertificateDer<'static>]) -> Result<Option<Arc<str>>, String> + Send + Sync>;

/// What every connection of an endpoint shares besides the service.
#[derive(Clone)]
pub struct ConnSetup {
    /// Listener rules applied by the core (HSTS, the 421 SNI guard).
    pub policy: Option<Arc<ListenerPolicy>>,
    /// Source of process-unique connection ids, shared with the TCP listeners.
    pub ids: Arc<AtomicU64>,
    /// Reads the client certificate's subject when the TLS config verifies clients.
    pub identify: Option<Identify>,
    /// Counters.
    pub stats: Arc<Http3Stats>,
}

impl std::fmt::Debug for ConnSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnSetup")
            .field("policy", &self.policy)
            .field("identify", &self.identify.is_some())
            .finish_non_exhaustive()
    }
}

/// A bound QUIC endpoint serving HTTP/3. Cheap to clone: clones share the endpoint.
#[derive(Debug, Clone)]
pub struct Http3Endpoint {
    endpoint: quinn::Endpoint,
    options: ServerOptions,
}

impl Http3Endpoint {
    /// Binds a UDP socket on `addr` and prepares HTTP/3 with `tls` (its certificate
    /// resolver and client verification; ALPN and early data are set from `options`).
    pub fn bind(
        addr: SocketAddr,
        tls: &rustls::ServerConfig,
        options: ServerOptions,
    ) -> Result<Self, Http3Error> {
        let config = quic_server_config(tls, &options)?;
        let endpoint = quinn::Endpoint::server(config, addr)
            .map_err(|source| Http3Error::Bind { addr, source })?;
        Ok(Http3Endpoint { endpoint, options })
    }

    /// The bound UDP address (port 0 becomes the real port).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Closes every connection still open with `H3_NO_ERROR` and waits (up to `wait`) for
    /// the close to go out. For the end of a drain.
    pub async fn close(&self, wait: std::time::Duration) {
        self.endpoint
            .close(code(Code::H3_NO_ERROR), b"shutting down");
        let _ = tokio::time::timeout(wait, self.endpoint.wait_idle()).await;
    }

    /// Accepts connections until `stop` is cancelled, spawning each on `connections`.
    /// Connections send GOAWAY when `drain` is cancelled and end once their streams finish.
    pub async fn serve<S>(
        &self,
        service: S,
        setup: ConnSetup,
        stop: CancellationToken,
        drain: CancellationToken,
        connections: TaskTracker,
    ) where
        S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let local = self.endpoint.local_addr().ok();
        let handshaking = Arc::new(AtomicUsize::new(0));
        let stats = setup.stats.clone();
        loop {
            let incoming = tokio::select! {
                () = stop.cancelled() => break,
                i = self.endpoint.accept() => match i {
                    Some(i) => i,
                    None => break,
                },
            };
            let peer = incoming.remote_address();
            if stats.open_connections.load(Ordering::Relaxed) >= self.options.max_connections {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::info!(peer = %peer, max = self.options.max_connections, "HTTP/3 connection refused: at max_connections");
                incoming.refuse();
                continue;
            }
            let validate = match self.options.address_validation {
                AddressValidation::Never => false,
                AddressValidation::Always => true,
                AddressValidation::UnderLoad { pending_handshakes } => {
                    handshaking.load(Ordering::Relaxed) >= pending_handshakes
                }
            };
            if validate && !incoming.remote_address_validated() && incoming.may_retry() {
                match incoming.retry() {
                    Ok(()) => {
                        stats.retries.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(peer = %peer, "QUIC Retry sent");
                    }
                    Err(e) => e.into_incoming().refuse(),
                }
                continue;
            }
            let connecting = match incoming.accept() {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(peer = %peer, error = %e, "QUIC connection not accepted");
                    continue;
                }
            };
            let id = setup.ids.fetch_add(1, Ordering::Relaxed);
            let mut info = ConnInfo::plain(peer, local.unwrap_or(peer), id);
            info.scheme = Scheme::Https;
            info.listener = setup.policy.clone();
            let pending = Pending::new(handshaking.clone());
            let (service, setup, options, drain) =
                (service.clone(), setup.clone(), self.options, drain.clone());
            connections.spawn(async move {
                let Some((conn, handshake)) =
                    handshake(connecting, &options, &mut info, &setup).await
                else {
                    setup
                        .stats
                        .handshake_failures
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                };
                drop(pending);
                let stats = setup.stats.clone();
                stats.connections.fetch_add(1, Ordering::Relaxed);
                stats.open_connections.fetch_add(1, Ordering::Relaxed);
                serve_connection(
                    conn,
                    handshake,
                    info,
                    service,
                    options,
                    stats.clone(),
                    drain,
                )
                .await;
                stats.open_connections.fetch_sub(1, Ordering::Relaxed);
            });
        }
        // New connection attempts are refused from here on (at once, so clients fall back to
        // TCP instead of waiting out a handshake timeout) until the endpoint closes; open
        // connections drain.
        let endpoint = self.endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                incoming.refuse();
            }
        });
    }
}

/// An HTTP/3 error code as a QUIC application close code.
pub(crate) fn code(code: Code) -> quinn::VarInt {
    quinn::VarInt::from_u64(code.value()).unwrap_or(quinn::VarInt::MAX)
}

/// Counts a connection as mid-handshake until dropped.
struct Pending(Arc<AtomicUsize>);

impl Pending {
    fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Pending(count)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs the handshake (or, with early data on, only until the ClientHello is read) and fills
/// in what TLS told about the connection.
async fn handshake(
    mut connecting: quinn::Connecting,
    options: &ServerOptions,
    info: &mut ConnInfo,
    setup: &ConnSetup,
) -> Option<(quinn::Connection, Handshake)> {
    let deadline = tokio::time::Instant::now() + options.handshake_timeout;
    let (conn, handshake) = if options.early_data {
        // SNI and ALPN are known once the ClientHello is read; the rest of the handshake
        // completes while early requests are already being served.
        handshake_step(deadline, connecting.handshake_data(), info).await?;
        match connecting.into_0rtt() {
            Ok((conn, accepted)) => (conn, Handshake::Completing { accepted, deadline }),
            Err(connecting) => (
                handshake_step(deadline, connecting, info).await?,
                Handshake::Done,
            ),
        }
    } else {
        (
            handshake_step(deadline, connecting, info).await?,
            Handshake::Done,
        )
    };
    if let Some(data) = conn
        .handshake_data()
        .and_then(|d| d.downcast::<HandshakeData>().ok())
    {
        info.sni = data
            .server_name
            .as_deref()
            .map(|s| Arc::from(s.to_ascii_lowercase()));
        info.alpn = data
            .protocol
            .as_deref()
            .map(|p| Arc::from(String::from_utf8_lossy(p).as_ref()));
    }
    if let (Some(identify), Handshake::Done) = (&setup.identify, &handshake)
        && let Some(chain) = conn
            .peer_identity()
            .and_then(|p| p.downcast::<Vec<CertificateDer<'static>>>().ok())
    {
        match identify(&chain) {
            Ok(subject) => info.client_subject = subject,
            Err(e) => {
                tracing::info!(conn = info.id, peer = %info.peer, error = %e, "unreadable client certificate");
                conn.close(
                    code(Code::H3_GENERAL_PROTOCOL_ERROR),
                    b"bad client certificate",
                );
                return None;
            }
        }
    }
    Some((conn, handshake))
}

/// One step of the handshake, bounded by `deadline`; failures are logged (at debug: a
/// client's broken handshake is not this server's error) and end the connection.
async fn handshake_step<T, E: std::fmt::Display>(
    deadline: tokio::time::Instant,
    step: impl Future<Output = Result<T, E>>,
    info: &ConnInfo,
) -> Option<T> {
    match tokio::time::timeout_at(deadline, step).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(e)) => {
            tracing::debug!(conn = info.id, peer = %info.peer, error = %e, "QUIC handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(conn = info.id, peer = %info.peer, "QUIC handshake timed out");
            None
        }
    }
}

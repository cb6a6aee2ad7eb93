//! Upstream connectors as configured: HTTP/1.1 or HTTP/2, over TCP or TLS, chosen per
//! endpoint by ALPN, or HTTP/3 over QUIC with a fallback to the ALPN choice over TCP.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;
use proxy_core::body::ProxyBody;
use proxy_core::{
    ConnectOptions, Connector, DialFuture, Dialed, Dialer, Endpoint, LimitedDialer, SendError,
    SendFuture, TcpDialer, UpstreamError,
};
use proxy_http1::{ClientOptions, Http1Connector};
use proxy_http2::Http2Connector;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::tls::{ALPN_H2, ALPN_HTTP1};

/// Which HTTP version an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (the default).
    Http1,
    /// HTTP/2: prior knowledge over TCP (h2c), or ALPN `h2` over TLS.
    Http2,
    /// Whatever the endpoint picks by ALPN, `h2` preferred (TLS only).
    Auto,
    /// HTTP/3 over QUIC (TLS only); endpoints QUIC cannot reach are served as `Auto`.
    Http3,
}

/// TLS towards an upstream.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// Roots, client certificate; ALPN is set per protocol.
    pub config: Arc<ClientConfig>,
    /// SNI and verified name; the endpoint's host when `None`.
    pub server_name: Option<ServerName<'static>>,
}

/// Builds the connector for an upstream. With `max_connections`, HTTP/1.1 and HTTP/2
/// connectors dial through a [`LimitedDialer`] (validation refuses the limit for `auto` and
/// `http3`, whose dialers are internal).
pub fn build(
    protocol: UpstreamProtocol,
    h1: ClientOptions,
    tls: Option<UpstreamTls>,
    max_connections: Option<u32>,
) -> Result<Arc<dyn Connector>, proxy_http3::Http3Error> {
    let h2 = proxy_http2::ClientOptions {
        tls: tls.is_some(),
        ..proxy_http2::ClientOptions::default()
    };
    let limit = |d: Arc<dyn Dialer>| -> Arc<dyn Dialer> {
        match max_connections {
            Some(max) => Arc::new(LimitedDialer::new(d, max)),
            None => d,
        }
    };
    Ok(match (protocol, tls) {
        // Without a limit the connectors use their own (unboxed) TCP path.
        (UpstreamProtocol::Http1, None) if max_connections.is_none() => {
            Arc::new(Http1Connector::new(h1))
        }
        (UpstreamProtocol::Http2, None) if max_connections.is_none() => {
            Arc::new(Http2Connector::new(h2))
        }
        (UpstreamProtocol::Http1, None) => {
            Arc::new(Http1Connector::with_dialer(h1, limit(Arc::new(TcpDialer))))
        }
        (UpstreamProtocol::Http2, None) => {
            Arc::new(Http2Connector::with_dialer(h2, limit(Arc::new(TcpDialer))))
        }
        (UpstreamProtocol::Http1, Some(t)) => Arc::new(Http1Connector::with_dialer(
            h1,
            limit(Arc::new(TlsDialer::new(&t, &[ALPN_HTTP1]))),
        )),
        (UpstreamProtocol::Http2, Some(t)) => Arc::new(Http2Connector::with_dialer(
            h2,
            limit(Arc::new(TlsDialer::new(&t, &[ALPN_H2]))),
        )),
        // Validation refuses `auto` and `http3` without TLS; HTTP/1.1 is the safe reading.
        (UpstreamProtocol::Auto | UpstreamProtocol::Http3, None) => {
            Arc::new(Http1Connector::new(h1))
        }
        (UpstreamProtocol::Auto, Some(t)) => Arc::new(AutoConnector::new(&t, h1, h2)),
        (UpstreamProtocol::Http3, Some(t)) => {
            let fallback: Arc<dyn Connector> = Arc::new(AutoConnector::new(&t, h1, h2));
            let name = t.server_name.as_ref().map(|n| n.to_str().into_owned());
            Arc::new(proxy_http3::Http3Connector::new(
                &t.config,
                name,
                proxy_http3::ClientOptions::default(),
                Some(fallback),
            )?)
        }
    })
}

/// TLS over TCP, verifying the endpoint's certificate, offering a fixed ALPN list.
pub struct TlsDialer {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl TlsDialer {
    /// A dialer offering `alpn` (in preference order).
    pub fn new(tls: &UpstreamTls, alpn: &[&[u8]]) -> Self {
        let mut config = ClientConfig::clone(&tls.config);
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsDialer {
            connector: TlsConnector::from(Arc::new(config)),
            server_name: tls.server_name.clone(),
        }
    }
}

impl Dialer for TlsDialer {
    fn dial(&self, endpoint: &Arc<Endpoint>, timeout: Duration) -> DialFuture {
        let connector = self.connector.clone();
        let addr = endpoint.addr();
        let name = self.server_name.clone().map_or_else(
            || {
                let host = endpoint.authority().host();
                let host = host.trim_start_matches('[').trim_end_matches(']');
                ServerName::try_from(host.to_owned())
            },
            Ok,
        );
        Box::pin(async move {
            let name = name.map_err(|e| UpstreamError::Connect(std::io::Error::other(e)))?;
            let deadline = tokio::time::Instant::now() + timeout;
            let tcp = TcpDialer::connect(addr, timeout).await?;
            let tls = match tokio::time::timeout_at(deadline, connector.connect(name, tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::warn!(upstream = %addr, error = %e, "upstream TLS handshake failed");
                    return Err(UpstreamError::Connect(e));
                }
                Err(_) => return Err(UpstreamError::ConnectTimeout),
            };
            let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            Ok(Dialed {
                io: Box::new(tls),
                alpn,
            })
        })
    }
}

/// Connections dialed with ALPN `h2, http/1.1` before the endpoint's choice was known, kept for
/// the protocol connector that the choice selects.
#[derive(Default)]
struct Stash {
    dialed: Mutex<HashMap<SocketAddr, Vec<Dialed>>>,
}

/// A dialer that hands out a stashed connection first, then dials fresh ones.
struct StashedDialer {
    stash: Arc<Stash>,
    fresh: TlsDialer,
}

impl Dialer for StashedDialer {
    fn dial(&self, endpoint: &Arc<Endpoint>, timeout: Duration) -> DialFuture {
        let stashed = self
            .stash
            .dialed
            .lock()
            .ok()
            .and_then(|mut m| m.get_mut(&endpoint.addr()).and_then(Vec::pop));
        match stashed {
            Some(d) => Box::pin(async move { Ok(d) }),
            None => self.fresh.dial(endpoint, timeout),
        }
    }
}

/// ALPN negotiation per endpoint: the first connection offers `h2` and `http/1.1`; the
/// endpoint's choice is remembered and its connection handed to the matching connector, so
/// no handshake is wasted.
pub struct AutoConnector {
    probe: TlsDialer,
    stash: Arc<Stash>,
    learned: Arc<Mutex<HashMap<SocketAddr, UpstreamProtocol>>>,
    h1: Http1Connector,
    h2: Http2Connector,
}

impl AutoConnector {
    fn new(tls: &UpstreamTls, h1: ClientOptions, h2: proxy_http2::ClientOptions) -> Self {
        let stash = Arc::new(Stash::default());
        AutoConnector {
            probe: TlsDialer::new(tls, &[ALPN_H2, ALPN_HTTP1]),
            h1: Http1Connector::with_dialer(
                h1,
                Arc::new(StashedDialer {
                    stash: stash.clone(),
                    fresh: TlsDialer::new(tls, &[ALPN_HTTP1]),
                }),
            ),
            h2: Http2Connector::with_dialer(
                h2,
                Arc::new(StashedDialer {
                    stash: stash.clone(),
                    fresh: TlsDialer::new(tls, &[ALPN_H2]),
                }),
            ),
            stash,
            learned: Arc::default(),
        }
    }

    fn known(&self, addr: SocketAddr) -> Option<UpstreamProtocol> {
        self.learned.lock().ok()?.get(&addr).copied()
    }
}

impl Connector for AutoConnector {
    fn send(
        &self,
        endpoint: &Arc<Endpoint>,
        opts: ConnectOptions,
        req: Request<ProxyBody>,
    ) -> SendFuture {
        match self.known(endpoint.addr()) {
            Some(UpstreamProtocol::Http2) => return self.h2.send(endpoint, opts, req),
            Some(_) => return self.h1.send(endpoint, opts, req),
            None => {}
        }
        let probe = self.probe.dial(endpoint, opts.connect_timeout);
        let endpoint = endpoint.clone();
        let stash = self.stash.clone();
        let h1 = self.h1.clone();
        let h2 = self.h2.clone();
        let learned = self.learned.clone();
        Box::pin(async move {
            let dialed = match probe.await {
                Ok(d) => d,
                Err(e) => return Err(SendError::unsent(e, req)),
            };
            let protocol = if dialed.alpn.as_deref() == Some(ALPN_H2) {
                UpstreamProtocol::Http2
            } else {
                UpstreamProtocol::Http1
            };
            tracing::info!(upstream = %endpoint.addr(), ?protocol, "upstream protocol negotiated by ALPN");
            if let Ok(mut m) = stash.dialed.lock() {
                m.entry(endpoint.addr()).or_default().push(dialed);
            }
            if let Ok(mut m) = learned.lock() {
                m.insert(endpoint.addr(), protocol);
            }
            match protocol {
                UpstreamProtocol::Http2 => h2.send(&endpoint, opts, req).await,
                _ => h1.send(&endpoint, opts, req).await,
            }
        })
    }
}

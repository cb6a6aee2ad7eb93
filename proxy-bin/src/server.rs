//! Listeners and the accept loop: TCP in, TLS terminated, each connection handed to the
//! HTTP/1.1 or HTTP/2 frontend by ALPN or, on cleartext, by the HTTP/2 connection preface;
//! on TLS listeners with `http3`, a QUIC endpoint on the same port number serves HTTP/3.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use proxy_core::{ConnInfo, ListenerPolicy, Proxy, ProxyConfig, Scheme, SiteMatcher};
use proxy_http2::Http2Stats;
use proxy_http3::{ConnSetup, Http3Endpoint, Http3Stats, Identify};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::caches::Caches;
use crate::config::{Config, ListenerSpec};
use crate::tls::{self, CertStore, ClientIdentity, Selection, SniResolver};

/// A running proxy: its bound addresses and the handles to reload or stop it.
#[derive(Debug)]
pub struct Running {
    addrs: Vec<SocketAddr>,
    proxy: Proxy,
    cert_stores: Vec<Arc<CertStore>>,
    http2_stats: Arc<Http2Stats>,
    http3_stats: Arc<Http3Stats>,
    quic: Vec<Http3Endpoint>,
    stop_accepting: CancellationToken,
    drain: CancellationToken,
    connections: TaskTracker,
    accept_loops: TaskTracker,
    shutdown_timeout: Duration,
    caches: Caches,
    admin: Option<SocketAddr>,
}

impl Running {
    /// The addresses actually bound (port 0 in the config becomes a real port), in
    /// configuration order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The core service, e.g. to inspect the configuration served.
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// HTTP/2 counters across all listeners (abusive connections closed, stalled streams).
    pub fn http2_stats(&self) -> &Http2Stats {
        &self.http2_stats
    }

    /// HTTP/3 counters across all QUIC endpoints (connections, Retry, early data, refusals).
    pub fn http3_stats(&self) -> &Http3Stats {
        &self.http3_stats
    }

    /// The UDP addresses serving HTTP/3, in configuration order of their listeners.
    pub fn quic_addrs(&self) -> Vec<SocketAddr> {
        self.quic
            .iter()
            .filter_map(|e| e.local_addr().ok())
            .collect()
    }

    /// The cache stores, to load a new configuration that keeps their contents.
    pub fn caches(&self) -> &Caches {
        &self.caches
    }

    /// The admin listener's address, when one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Swaps in a new runtime configuration; requests in flight finish on the old one.
    /// Listener and server settings need a restart. Endpoints that stay (same upstream
    /// name, address and role) keep their health; the old upstreams' health checks stop and
    /// the new ones' start.
    pub fn reload(&self, config: ProxyConfig) {
        let old = self.proxy.config();
        for up in &config.upstreams {
            if let Some(prev) = old.upstreams.iter().find(|o| o.name() == up.name()) {
                up.inherit_health(prev);
            }
        }
        let upstreams = config.upstreams.clone();
        self.proxy.reload(config);
        for up in &old.upstreams {
            up.retire();
        }
        for up in &upstreams {
            proxy_core::health::monitor(up);
        }
        tracing::info!("configuration reloaded");
    }

    /// Re-reads every TLS listener's certificate files. A file that fails keeps the old
    /// certificates serving; the first error is returned.
    pub fn reload_certificates(&self) -> Result<(), tls::TlsError> {
        let mut first = None;
        for store in &self.cert_stores {
            if let Err(e) = store.reload() {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Stops accepting, lets requests in flight finish (closing keep-alive connections as
    /// they go idle, HTTP/2 ones with GOAWAY), and returns once all connections are closed or
    /// the drain deadline hits.
    pub async fn shutdown(self) {
        self.stop_accepting.cancel();
        self.accept_loops.close();
        self.accept_loops.wait().await;
        self.drain.cancel();
        self.connections.close();
        let open = self.connections.len();
        tracing::info!(open_connections = open, deadline = ?self.shutdown_timeout, "draining");
        if tokio::time::timeout(self.shutdown_timeout, self.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open_connections = self.connections.len(),
                "drain deadline reached; closing remaining connections"
            );
        }
        for endpoint in &self.quic {
            endpoint.close(Duration::from_millis(200)).await;
        }
    }
}

/// Everything a connection task needs from its listener.
struct Listener {
    proxy: Proxy,
    http1: proxy_http1::ServerOptions,
    http2: proxy_http2::ServerOptions,
    http2_stats: Arc<Http2Stats>,
    h2c: bool,
    tls: Option<TlsAcceptor>,
    policy: Option<Arc<ListenerPolicy>>,
    local: SocketAddr,
    drain: CancellationToken,
}

/// Binds every listener and starts serving `config`.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    tls::install_crypto_provider();
    for up in &config.proxy.upstreams {
        proxy_core::health::monitor(up);
    }
    let proxy = Proxy::new(config.proxy);
    let stop_accepting = CancellationToken::new();
    config.caches.spawn_maintenance(stop_accepting.clone());
    let admin = match &config.admin {
        Some(spec) => Some(
            crate::admin::start(
                spec,
                config.caches.clone(),
                proxy.clone(),
                stop_accepting.clone(),
            )
            .await
            .with_context(|| format!("admin listener {}", spec.address))?,
        ),
        None => None,
    };
    let drain = CancellationToken::new();
    let connections = TaskTracker::new();
    let accept_loops = TaskTracker::new();
    let conn_ids = Arc::new(AtomicU64::new(1));
    let http2_stats = Arc::new(Http2Stats::default());
    let http3_stats = Arc::new(Http3Stats::default());
    let mut addrs = Vec::new();
    let mut cert_stores = Vec::new();
    let mut quic = Vec::new();
    for spec in &config.listeners {
        let (tls, store, rustls_config) = match &spec.tls {
            None => (None, None, None),
            Some(t) => {
                let store = Arc::new(
                    CertStore::load(t.sites.clone(), t.fallback.clone())
                        .with_context(|| format!("TLS listener {}", spec.address))?,
                );
                let server = tls::server_config(store.resolver(), &t.server)
                    .with_context(|| format!("TLS listener {}", spec.address))?;
                if let Some(every) = t.watch_interval {
                    tls::spawn_watcher(store.clone(), every, stop_accepting.clone());
                }
                (
                    Some(TlsAcceptor::from(server.clone())),
                    Some(store),
                    Some(server),
                )
            }
        };
        let listener = TcpListener::bind(spec.address)
            .await
            .with_context(|| format!("cannot listen on {}", spec.address))?;
        let local = listener.local_addr()?;
        tracing::info!(
            address = %local,
            tls = tls.is_some(),
            h2c = spec.h2c,
            "listening"
        );
        addrs.push(local);
        let policy = listener_policy(spec, local.port(), store.as_ref().map(|s| s.resolver()));
        if let (Some(h3), Some(server)) = (&spec.http3, &rustls_config) {
            // The same port number over UDP, so `Alt-Svc: h3=":PORT"` names it.
            let options = proxy_http3::ServerOptions {
                early_data: h3.early_data,
                ..config.http3
            };
            let endpoint = Http3Endpoint::bind(local, server, options)
                .with_context(|| format!("HTTP/3 listener {local}"))?;
            tracing::info!(address = %local, early_data = h3.early_data, "listening for HTTP/3 (QUIC)");
            let setup = ConnSetup {
                policy: policy.clone(),
                ids: conn_ids.clone(),
                identify: identify_hook(&spec.tls),
                stats: http3_stats.clone(),
            };
            let (service, stop, drain, tracker) = (
                proxy.clone(),
                stop_accepting.clone(),
                drain.clone(),
                connections.clone(),
            );
            let serving = endpoint.clone();
            accept_loops.spawn(async move {
                serving.serve(service, setup, stop, drain, tracker).await;
            });
            quic.push(endpoint);
        }
        if let Some(s) = store {
            cert_stores.push(s);
        }
        let ctx = Arc::new(Listener {
            proxy: proxy.clone(),
            http1: config.http1,
            http2: config.http2,
            http2_stats: http2_stats.clone(),
            h2c: spec.h2c,
            tls,
            policy,
            local,
            drain: drain.clone(),
        });
        accept_loops.spawn(accept_loop(
            listener,
            ctx,
            stop_accepting.clone(),
            connections.clone(),
            conn_ids.clone(),
        ));
    }
    Ok(Running {
        addrs,
        proxy,
        cert_stores,
        http2_stats,
        http3_stats,
        quic,
        stop_accepting,
        drain,
        connections,
        accept_loops,
        shutdown_timeout: config.shutdown_timeout,
        caches: config.caches,
        admin,
    })
}

fn listener_policy(
    spec: &ListenerSpec,
    port: u16,
    resolver: Option<Arc<SniResolver>>,
) -> Option<Arc<ListenerPolicy>> {
    let sni_guard = match (&spec.tls, resolver) {
        (Some(t), Some(r)) if !t.allow_domain_fronting => {
            Some(Arc::new(SameCertificate(r)) as Arc<dyn SiteMatcher>)
        }
        _ => None,
    };
    let policy = ListenerPolicy {
        https_redirect_port: spec.https_redirect_port,
        hsts: spec.hsts.clone(),
        sni_guard,
        // HTTP/3 answers on the same port number over UDP.
        alt_svc: spec
            .http3
            .as_ref()
            .and_then(|h| h.alt_svc_max_age)
            .map(|age| proxy_http3::alt_svc(port, age.as_secs())),
    };
    let empty = policy.https_redirect_port.is_none()
        && policy.hsts.is_none()
        && policy.sni_guard.is_none()
        && policy.alt_svc.is_none();
    (!empty).then(|| Arc::new(policy))
}

/// Reads the verified client certificate's subject on QUIC connections, as the TCP path
/// does after its handshake.
fn identify_hook(tls: &Option<crate::config::TlsSpec>) -> Option<Identify> {
    let verifies = tls
        .as_ref()
        .is_some_and(|t| t.server.client_auth != tls::ClientAuth::None);
    verifies.then(|| {
        Arc::new(|chain: &[rustls::pki_types::CertificateDer<'static>]| {
            ClientIdentity::from_peer_certificates(chain)
                .map(|id| id.map(|id| Arc::from(id.subject)))
                .map_err(|e| e.to_string())
        }) as Identify
    })
}

/// Hosts served on a TLS connection: those that select the same certificate as its SNI did,
/// so browsers may coalesce connections across names of one certificate, and a request for
/// another site's name (domain fronting) gets 421.
struct SameCertificate(Arc<SniResolver>);

impl SiteMatcher for SameCertificate {
    fn same_site(&self, sni: &str, host: &str) -> bool {
        if sni.eq_ignore_ascii_case(host) {
            return true;
        }
        // Only a name the certificate was configured for counts: an unknown host falls back
        // to the default certificate, which says nothing about where it belongs.
        let table = self.0.table();
        let configured = |name: &str| match table.select(Some(name)) {
            Selection::Exact(s) | Selection::Wildcard(s) => Some(s.id.as_str()),
            _ => None,
        };
        matches!((configured(sni), configured(host)), (Some(a), Some(b)) if a == b)
    }
}

async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<Listener>,
    stop: CancellationToken,
    connections: TaskTracker,
    ids: Arc<AtomicU64>,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let ctx = ctx.clone();
        connections.spawn(async move {
            let mut info = ConnInfo::plain(peer, ctx.local, id);
            info.listener = ctx.policy.clone();
            match &ctx.tls {
                None => serve_plain(stream, info, &ctx).await,
                Some(acceptor) => serve_tls(stream, info, acceptor, &ctx).await,
            }
        });
    }
}

async fn serve_plain(stream: TcpStream, info: ConnInfo, ctx: &Listener) {
    let deadline = Instant::now() + ctx.http1.header_read_timeout;
    if ctx.h2c && starts_with_preface(&stream, deadline).await {
        serve_h2(stream, info, ctx).await;
    } else {
        serve_h1(stream, info, ctx).await;
    }
}

async fn serve_tls(stream: TcpStream, mut info: ConnInfo, acceptor: &TlsAcceptor, ctx: &Listener) {
    let handshake = acceptor.accept(stream);
    let tls = match tokio::time::timeout(ctx.http1.header_read_timeout, handshake).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(conn = info.id, peer = %info.peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(conn = info.id, peer = %info.peer, "TLS handshake timed out");
            return;
        }
    };
    let session = tls.get_ref().1;
    info.scheme = Scheme::Https;
    info.sni = session
        .server_name()
        .map(|s| Arc::from(s.to_ascii_lowercase()));
    info.alpn = session
        .alpn_protocol()
        .map(|p| Arc::from(String::from_utf8_lossy(p).as_ref()));
    match ClientIdentity::from_connection(session) {
        Ok(Some(id)) => info.client_subject = Some(Arc::from(id.subject)),
        Ok(None) => {}
        Err(e) => {
            tracing::info!(conn = info.id, peer = %info.peer, error = %e, "unreadable client certificate");
            return;
        }
    }
    if session.alpn_protocol() == Some(tls::ALPN_H2) {
        serve_h2(tls, info, ctx).await;
    } else {
        serve_h1(tls, info, ctx).await;
    }
}

async fn serve_h1<I>(io: I, info: ConnInfo, ctx: &Listener)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (id, peer) = (info.id, info.peer);
    let served =
        proxy_http1::serve_connection(io, info, ctx.proxy.clone(), ctx.http1, ctx.drain.clone());
    if let Err(e) = served.await {
        tracing::debug!(conn = id, peer = %peer, error = %e, cause = ?std::error::Error::source(&e), "connection ended with error");
    }
}

async fn serve_h2<I>(io: I, info: ConnInfo, ctx: &Listener)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (id, peer) = (info.id, info.peer);
    let served = proxy_http2::serve_connection(
        io,
        info,
        ctx.proxy.clone(),
        ctx.http2,
        ctx.http2_stats.clone(),
        ctx.drain.clone(),
    );
    if let Err(e) = served.await {
        tracing::debug!(conn = id, peer = %peer, error = %e, cause = ?std::error::Error::source(&e), "HTTP/2 connection ended with error");
    }
}

/// True when the client's first bytes are the HTTP/2 connection preface (h2c with prior
/// knowledge). Peeks without consuming, so HTTP/1.1 sees the bytes untouched otherwise.
async fn starts_with_preface(stream: &TcpStream, deadline: Instant) -> bool {
    let preface = proxy_http2::PREFACE;
    let mut buf = [0u8; 24];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return false,
        };
        if n == 0 || buf[..n] != preface[..n] {
            return false;
        }
        if n == preface.len() {
            return true;
        }
        // A partial preface: peek returns at once while those bytes sit unread, so wait a
        // little for the rest instead of spinning.
        if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(2)))
            .await
            .is_err()
        {
            return false;
        }
    }
}

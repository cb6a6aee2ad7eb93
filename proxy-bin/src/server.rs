//! Listeners and the accept loop: TCP in, HTTP/1.1 connections served into the core.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use proxy_core::{ConnInfo, Proxy, ProxyConfig};
use proxy_http1::ServerOptions;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;

/// A running proxy: its bound addresses and the handles to reload or stop it.
#[derive(Debug)]
pub struct Running {
    addrs: Vec<SocketAddr>,
    proxy: Proxy,
    stop_accepting: CancellationToken,
    drain: CancellationToken,
    connections: TaskTracker,
    accept_loops: TaskTracker,
    shutdown_timeout: Duration,
}

impl Running {
    /// The addresses actually bound (port 0 in the config becomes a real port).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The core service, e.g. to inspect the configuration served.
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// Swaps in a new runtime configuration; requests in flight finish on the old one.
    /// Listener and HTTP/1.1 server settings need a restart.
    pub fn reload(&self, config: ProxyConfig) {
        self.proxy.reload(config);
        tracing::info!("configuration reloaded");
    }

    /// Stops accepting, lets requests in flight finish (closing keep-alive connections as
    /// they go idle), and returns once all connections are closed or the drain deadline hits.
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
    }
}

/// Binds every listener and starts serving `config`.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let proxy = Proxy::new(config.proxy);
    let stop_accepting = CancellationToken::new();
    let drain = CancellationToken::new();
    let connections = TaskTracker::new();
    let accept_loops = TaskTracker::new();
    let conn_ids = Arc::new(AtomicU64::new(1));
    let mut addrs = Vec::new();
    for addr in &config.listeners {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        tracing::info!(address = %local, "listening");
        addrs.push(local);
        accept_loops.spawn(accept_loop(
            listener,
            proxy.clone(),
            config.http1,
            stop_accepting.clone(),
            drain.clone(),
            connections.clone(),
            conn_ids.clone(),
        ));
    }
    Ok(Running {
        addrs,
        proxy,
        stop_accepting,
        drain,
        connections,
        accept_loops,
        shutdown_timeout: config.shutdown_timeout,
    })
}

async fn accept_loop(
    listener: TcpListener,
    proxy: Proxy,
    options: ServerOptions,
    stop: CancellationToken,
    drain: CancellationToken,
    connections: TaskTracker,
    ids: Arc<AtomicU64>,
) {
    let local = listener.local_addr().ok();
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
        let local = local.unwrap_or(peer);
        let info = ConnInfo::plain(peer, local, id);
        let proxy = proxy.clone();
        let drain = drain.clone();
        connections.spawn(async move {
            if let Err(e) = proxy_http1::serve_connection(stream, info, proxy, options, drain).await
            {
                tracing::debug!(conn = id, peer = %peer, error = %e, cause = ?std::error::Error::source(&e), "connection ended with error");
            }
        });
    }
}

//! `proxy-bin`: run, check, or demo the reverse proxy.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use proxy_bin::config::{self, AccessLogFormat, LogConfig};
use proxy_bin::{demo, logging, server};

#[derive(Parser)]
#[command(
    version,
    about = "A reverse proxy for HTTP/1.1 (HTTP/2 and HTTP/3 to come)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a configuration file. SIGHUP reloads it; SIGINT/SIGTERM drain and stop.
    Run {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file; prints `FILE:LINE:COL: problem` for every error.
    Check {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Start three demo origin services and the proxy in front of them.
    Demo {
        /// Address the proxy listens on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Address of the TLS listener (HTTP/2 and HTTP/1.1), with a self-signed certificate;
        /// `off` disables it.
        #[arg(long, default_value = "127.0.0.1:8443")]
        tls_listen: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => run_async(run(config)),
        Command::Demo { listen, tls_listen } => run_async(run_demo(listen, tls_listen)),
    }
}

fn run_async(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(path: PathBuf) -> anyhow::Result<()> {
    let config = config::load(&path)?;
    logging::init(&config.log)?;
    let listeners = config.listeners.clone();
    let running = server::start(config).await?;
    loop {
        match signal().await? {
            Signal::Stop => break,
            Signal::Reload => reload(&path, &listeners, &running),
        }
    }
    running.shutdown().await;
    Ok(())
}

/// Re-reads the file; a bad file is reported and the running configuration keeps serving.
/// Certificate files are re-read too, whatever the file says about them.
fn reload(path: &Path, listeners: &[config::ListenerSpec], running: &server::Running) {
    if let Err(e) = running.reload_certificates() {
        tracing::error!(error = %e, "certificates not reloaded; the previous ones keep serving");
    }
    match config::load_with(path, running.caches()) {
        Ok(new) => {
            if new.listeners != listeners {
                tracing::warn!("listener changes need a restart; keeping the current listeners");
            }
            running.reload(new.proxy);
        }
        Err(e) => {
            for err in &e.errors {
                tracing::error!(file = %e.file.display(), line = err.line, col = err.col, problem = %err.message, "configuration not reloaded");
            }
        }
    }
}

async fn run_demo(listen: String, tls_listen: String) -> anyhow::Result<()> {
    let listen = demo::listen_addr(&listen)?;
    let tls = match tls_listen.as_str() {
        "off" => None,
        other => Some((
            demo::listen_addr(other)?,
            std::env::temp_dir().join(format!("proxy-bin-demo-{}", std::process::id())),
        )),
    };
    logging::init(&LogConfig {
        level: "info".into(),
        access_log: AccessLogFormat::Combined,
    })?;
    let listeners = demo::DemoListeners { plain: listen, tls };
    let (config, cert) = demo::config(&listeners).await?;
    let running = server::start(config).await?;
    if let Some(addr) = running.addrs().first() {
        let tls = running.addrs().get(1).copied().zip(cert.as_deref());
        println!("{}", demo::banner(*addr, tls));
    }
    while signal().await? != Signal::Stop {}
    running.shutdown().await;
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum Signal {
    Stop,
    Reload,
}

async fn signal() -> anyhow::Result<Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => { r?; Ok(Signal::Stop) }
        _ = term.recv() => Ok(Signal::Stop),
        _ = hup.recv() => Ok(Signal::Reload),
    }
}

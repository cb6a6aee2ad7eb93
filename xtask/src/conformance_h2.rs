//! `cargo xtask conformance-h2`: HTTP/2 conformance (RFC 9113, RFC 7541) of the real
//! `proxy-bin` binary over h2c with prior knowledge, frame by frame, in front of the
//! recording backend of the HTTP/1.1 suite. `cargo xtask conformance` runs it with the others.
//!
//! Order: build `proxy-bin` → start the backend and a stalling upstream → write a config
//! with `h2c = true` for free ports → start `proxy-bin run --config FILE` and wait for its
//! port → run every case of [`cases::all`] on fresh connections, each bounded by
//! [`CASE_BUDGET`] → print the tally. The client side (frame codec, HPACK, connection) is
//! written here from the RFCs, std only, so that the suite judges exactly the octets sent.

mod cases;
mod conn;
mod frame;
mod hpack;
mod huffman;

// The recording backend and its HTTP/1.1 syntax, from the HTTP/1.1 suite. That suite keeps
// them private, so they are compiled here a second time rather than made public there.
#[path = "conformance/backend.rs"]
#[allow(
    dead_code,
    clippy::duplicate_mod,
    reason = "the HTTP/1.1 suite's private backend, reused as is; it uses the parts this \
              suite does not"
)]
mod backend;
#[path = "conformance/wire.rs"]
#[allow(
    dead_code,
    clippy::duplicate_mod,
    reason = "the HTTP/1.1 suite's private wire syntax, needed by the backend; it uses the \
              parts this suite does not"
)]
mod wire;

use std::cell::Cell;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::process::{self, ChildGuard, TempDir};
use backend::{Backend, Recorded};
use conn::Conn;

/// Time budget of one connection (and so, roughly, of one case).
const CASE_BUDGET: Duration = Duration::from_secs(5);

/// How long `proxy-bin` may take to accept connections after it was spawned.
const STARTUP: Duration = Duration::from_secs(30);

/// Authority of every request: the default server of the configuration.
pub(crate) const AUTHORITY: &str = "conformance.test";

/// Everything a case may need: the proxy's port, the backend, the stalling upstream and the
/// number of the running case (it marks the request paths of the case).
pub(crate) struct Ctx {
    port: u16,
    backend: Backend,
    stall: Stall,
    case: Cell<usize>,
}

impl Ctx {
    /// A TCP connection to the proxy with the per-case budget; nothing sent yet.
    pub(crate) fn connect(&self) -> Result<Conn> {
        Conn::connect(self.port, CASE_BUDGET)
    }

    /// A connection after the preface and SETTINGS exchange, with empty client SETTINGS.
    pub(crate) fn h2(&self) -> Result<Conn> {
        self.h2_with(&[])
    }

    /// A connection after the preface and SETTINGS exchange with `settings`.
    pub(crate) fn h2_with(&self, settings: &[(u16, u32)]) -> Result<Conn> {
        let mut conn = self.connect()?;
        conn.handshake(settings)?;
        Ok(conn)
    }

    /// A request path unique to the running case: `/h2c-N/rest`.
    pub(crate) fn path(&self, rest: &str) -> String {
        format!("{}{rest}", self.marker())
    }

    fn marker(&self) -> String {
        format!("/h2c-{}/", self.case.get())
    }

    /// Every request of the running case the backend received, complete or not.
    pub(crate) fn forwarded(&self) -> Vec<Recorded> {
        let marker = self.marker();
        self.backend
            .records()
            .into_iter()
            .filter(|r| r.raw_head.contains(&marker))
            .collect()
    }
}

/// One case: a name, the RFC text it checks, and the check. `Ok(Some(note))` passes with a
/// remark (an accepted alternative behaviour).
pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) reference: &'static str,
    pub(crate) check: fn(&Ctx) -> Result<Option<String>>,
}

/// Cases that fail for a reason outside this repository, with the reason. They are printed as
/// `KNOWN` and counted neither as passed nor as failed, so CI stays meaningful while the gap
/// stays visible; a known case that starts passing is reported as a plain PASS.
fn known_limitation(name: &str) -> Option<&'static str> {
    match name {
        "pseudo-header in trailers -> malformed" => Some(
            "h2 0.4.20 drops pseudo-header fields from trailers (Recv::recv_trailers uses \
             HeaderBlock::into_fields) before the application sees them, so the proxy forwards \
             the trailers without them instead of resetting the stream",
        ),
        _ => None,
    }
}

/// `cargo xtask conformance`: the HTTP/1.1 suite (in a child process, so that its tally can
/// be read), then this one, the HTTP/3 suite and the caching suite; the last line is the
/// tally of all of them.
pub(crate) fn run_both(args: &[String]) -> Result<bool> {
    let (h1_passed, h1_failed) = run_http1_child(args)?;
    println!();
    let (h2_passed, h2_failed) = run(args)?;
    println!();
    let (h3_passed, h3_failed) = crate::conformance_h3::run(args)?;
    println!();
    let (cache_passed, cache_failed) = crate::conformance_cache::run(args)?;
    println!(
        "HTTP/1.1: {h1_passed} passed, {h1_failed} failed; HTTP/2: {h2_passed} passed, {h2_failed} failed; HTTP/3: {h3_passed} passed, {h3_failed} failed"
    );
    println!("caching: {cache_passed} passed, {cache_failed} failed");
    let passed = h1_passed + h2_passed + h3_passed + cache_passed;
    let failed = h1_failed + h2_failed + h3_failed + cache_failed;
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

/// `cargo xtask conformance-h2`: this suite alone.
pub(crate) fn run_alone(args: &[String]) -> Result<bool> {
    let (passed, failed) = run(args)?;
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

/// Runs `xtask conformance-h1 ARGS`, passing its output through except for its final tally,
/// which is returned.
fn run_http1_child(args: &[String]) -> Result<(usize, usize)> {
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let mut child = Command::new(&exe)
        .arg("conformance-h1")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {} conformance-h1", exe.display()))?;
    let mut tally = None;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading the HTTP/1.1 suite's output")?;
            match parse_tally(&line) {
                Some(counts) => tally = Some(counts),
                None => println!("{line}"),
            }
        }
    }
    let status = child.wait().context("waiting for the HTTP/1.1 suite")?;
    match tally {
        Some(counts) => Ok(counts),
        None => {
            println!("FAIL HTTP/1.1 suite: no tally line ({status})");
            Ok((0, 1))
        }
    }
}

/// `N passed, M failed`.
fn parse_tally(line: &str) -> Option<(usize, usize)> {
    let (passed, failed) = line.strip_suffix(" failed")?.split_once(" passed, ")?;
    Some((passed.parse().ok()?, failed.parse().ok()?))
}

/// Runs this suite and prints one line per case; returns `(passed, failed)`.
fn run(args: &[String]) -> Result<(usize, usize)> {
    let mut release = false;
    let mut filter: Option<String> = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--release" => release = true,
            "--filter" => filter = Some(args.next().context("--filter needs a value")?.clone()),
            other => {
                bail!("unknown conformance argument `{other}` (expected --release, --filter TEXT)")
            }
        }
    }
    let cases: Vec<Case> = cases::all()
        .into_iter()
        .filter(|case| {
            filter
                .as_ref()
                .is_none_or(|f| case.name.contains(f.as_str()))
        })
        .collect();

    let mut temp = TempDir::new("conformance-h2")?;
    let log = temp.path().join("proxy-bin.log");
    let backend = Backend::start()?;
    let stall = Stall::start()?;

    let (passed, failed) = match start_proxy(release, backend.port(), stall.port, temp.path(), &log)
    {
        Err(error) => {
            println!("conformance-h2: proxy did not start: {error:#}");
            if log.is_file() {
                println!(
                    "--- last lines of {} ---\n{}\n---",
                    log.display(),
                    process::tail(&log, 30)
                );
            }
            for case in &cases {
                println!(
                    "FAIL {} ({}): proxy did not start",
                    case.name, case.reference
                );
            }
            (0, cases.len())
        }
        Ok((mut proxy, port)) => {
            let ctx = Ctx {
                port,
                backend,
                stall,
                case: Cell::new(0),
            };
            let (mut passed, mut failed, mut known) = (0, 0, 0);
            for (index, case) in cases.iter().enumerate() {
                ctx.case.set(index + 1);
                ctx.backend.clear();
                let outcome = (case.check)(&ctx);
                ctx.stall.release();
                match outcome {
                    Ok(note) => {
                        passed += 1;
                        println!("PASS {} ({})", case.name, case.reference);
                        if let Some(note) = note {
                            println!("     note: {note}");
                        }
                    }
                    Err(why) => {
                        let why = format!("{why:#}").replace('\n', " | ");
                        match known_limitation(case.name) {
                            Some(limit) => {
                                known += 1;
                                println!("KNOWN {} ({}): {why}", case.name, case.reference);
                                println!("     limitation: {limit}");
                            }
                            None => {
                                failed += 1;
                                println!("FAIL {} ({}): {why}", case.name, case.reference);
                            }
                        }
                    }
                }
            }
            if let Some(status) = proxy.exited() {
                println!("conformance-h2: proxy-bin exited during the suite ({status})");
            }
            if known > 0 {
                println!(
                    "conformance-h2: {known} known limitation(s) above (KNOWN): failing, not counted as passed"
                );
            }
            (passed, failed)
        }
    };
    if failed > 0 {
        temp.keep();
        println!("proxy log: {}", log.display());
    }
    Ok((passed, failed))
}

/// Builds and starts `proxy-bin`; returns its guard and its listener port.
fn start_proxy(
    release: bool,
    backend_port: u16,
    stall_port: u16,
    dir: &Path,
    log: &Path,
) -> Result<(ChildGuard, u16)> {
    let binary = process::build_proxy_bin(release)?;
    let [port] = process::free_ports()?;
    let config_path = dir.join("conformance-h2.toml");
    fs::write(&config_path, config(port, backend_port, stall_port))
        .with_context(|| format!("writing {}", config_path.display()))?;
    let mut command = Command::new(&binary);
    command.arg("run").arg("--config").arg(&config_path);
    let mut proxy = ChildGuard::spawn_logged(&mut command, "proxy-bin", false, log)?;
    proxy.wait_for_port(port, STARTUP)?;
    Ok((proxy, port))
}

/// The proxy configuration the cases are written against: the HTTP/1.1 suite's, with h2c
/// on the listener and a stalling upstream for the flow-control case. The `[http2]` limits
/// are the defaults.
fn config(port: u16, backend_port: u16, stall_port: u16) -> String {
    format!(
        r#"# Written by `cargo xtask conformance-h2`.
[proxy]
via = "conformance"
max_uri_bytes = 8192
max_header_bytes = 16384
header_read_timeout = "2s"

[[listeners]]
address = "127.0.0.1:{port}"
h2c = true

[upstreams.backend]
endpoints = ["127.0.0.1:{backend_port}"]
response_header_timeout = "1s"
max_fails = 0

# Accepts connections and never reads from them: request bodies sent there back up.
[upstreams.stall]
endpoints = ["127.0.0.1:{stall_port}"]
response_header_timeout = "30s"
max_fails = 0

[[servers]]
names = ["{AUTHORITY}"]
default = true

[[servers.routes]]
prefix = "/stall/"
upstream = "stall"

[[servers.routes]]
prefix = "/"
upstream = "backend"
"#
    )
}

/// An upstream that accepts connections and never reads or answers, so that the proxy
/// stops consuming a request body once the socket buffers are full.
struct Stall {
    port: u16,
    held: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Stall {
    fn start() -> Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding stall")?;
        let port = listener.local_addr()?.port();
        let held = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (accept_held, accept_stop) = (held.clone(), stop.clone());
        thread::Builder::new()
            .name("stall-accept".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if accept_stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(stream) = stream {
                        accept_held
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(stream);
                    }
                }
            })
            .context("spawning the stall thread")?;
        Ok(Self { port, held, stop })
    }

    /// Closes every connection held so far.
    fn release(&self) {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl Drop for Stall {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_lines() {
        assert_eq!(parse_tally("12 passed, 3 failed"), Some((12, 3)));
        assert_eq!(parse_tally("PASS x (y)"), None);
    }
}

//! `cargo xtask conformance-h3`: HTTP/3 conformance (RFC 9114, RFC 9000/9001, RFC 8470) of
//! the real `proxy-bin` binary, driven by third-party QUIC clients, in front of a recording
//! HTTP/1.1 backend. `cargo xtask conformance` runs it after the HTTP/1.1 and HTTP/2 suites.
//!
//! Order: find `gtlsclient` (ngtcp2's client; `ngtcp2-client` is installed under CI or as
//! root; without it every case that needs it fails with the reason) → build `proxy-bin` →
//! start the backend → write self-signed certificates and a config with two HTTP/3
//! listeners on free ports → start `proxy-bin run --config FILE` and wait for both listeners
//! → run every case of [`cases::all`], each client run bounded → last, the graceful-shutdown
//! case stops the proxy with SIGTERM → print the tally.
//!
//! The clients are not ours, so the suite judges what independent HTTP/3 stacks see:
//! `gtlsclient` (ngtcp2 + nghttp3 + GnuTLS) for ordinary traffic, flow control, resumption
//! and 0-RTT; a small script on aioquic ([`aioquic`], installed from PyPI into `target/` on
//! first use) for requests with fields of our choosing; `curl` for the listener's TCP side
//! (Alt-Svc).

mod aioquic;
mod backend;
mod cases;
mod gtls;

// The HTTP/1.1 suite's wire syntax, for the backend. That suite keeps it private, so it is
// compiled here a second time rather than made public there.
#[path = "conformance/wire.rs"]
#[allow(
    dead_code,
    clippy::duplicate_mod,
    reason = "the HTTP/1.1 suite's private wire syntax, reused as is; the backend needs only \
              part of it"
)]
mod wire;

use std::cell::{Cell, OnceCell};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::process::{self, ChildGuard, TempDir};
use backend::{Backend, Recorded};
use gtls::Invocation;

/// How long `proxy-bin` may take to accept connections after it was spawned.
const STARTUP: Duration = Duration::from_secs(30);

/// `[http3] idle_timeout` of the configuration.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// `[http3] max_concurrent_streams` of the configuration.
pub(crate) const MAX_STREAMS: usize = 8;

/// `[http3] max_field_section_size` of the configuration.
pub(crate) const MAX_FIELD_SECTION: usize = 16 * 1024;

/// `[proxy] max_uri_bytes` of the configuration.
pub(crate) const MAX_URI: usize = 4096;

/// Everything a case may need.
pub(crate) struct Ctx {
    /// Port of the listener with `http3 = true` (TCP and UDP).
    pub(crate) port: u16,
    /// Port of the listener with `http3 = { early_data = true, alt_svc_max_age = "1h" }`.
    pub(crate) early_port: u16,
    backend: Backend,
    gtls: Result<PathBuf, String>,
    /// The aioquic interpreter, found (or installed) when a case first needs it.
    aioquic: OnceCell<Result<PathBuf, String>>,
    dir: PathBuf,
    /// Size of the DER certificate served for `localhost`.
    pub(crate) cert_der_len: usize,
    case: Cell<usize>,
    runs: Cell<usize>,
}

impl Ctx {
    /// A `gtlsclient` run against `port` requesting each of `paths`; `Err` when the client
    /// could not be had.
    pub(crate) fn gtls(&self, port: u16, paths: &[&str]) -> Result<Invocation> {
        self.gtls_uris(port, paths.iter().map(|p| uri(port, p)).collect())
    }

    /// A `gtlsclient` run against `port` requesting each of `uris` as written.
    pub(crate) fn gtls_uris(&self, port: u16, uris: Vec<String>) -> Result<Invocation> {
        match &self.gtls {
            Ok(program) => Ok(Invocation::new(program, port, uris)),
            Err(why) => bail!("{why}"),
        }
    }

    /// Sends `requests` on one connection with the aioquic client, SNI `server_name`.
    pub(crate) fn aioquic(
        &self,
        port: u16,
        server_name: &str,
        requests: &[aioquic::Request],
    ) -> Result<aioquic::Output> {
        match self.aioquic.get_or_init(aioquic::locate) {
            Ok(python) => {
                let dir = self.scratch(&format!("aioquic-{}", self.runs.get()))?;
                self.runs.set(self.runs.get() + 1);
                aioquic::run(python, &dir, port, server_name, requests)
            }
            Err(why) => bail!("{why}"),
        }
    }

    /// A request path unique to the running case: `/cN/rest`.
    pub(crate) fn path(&self, rest: &str) -> String {
        format!("/c{}/{rest}", self.case.get())
    }

    /// The directory `case-N/name` for the running case's files, created if needed.
    pub(crate) fn scratch(&self, name: &str) -> Result<PathBuf> {
        let dir = self
            .dir
            .join(format!("case-{}", self.case.get()))
            .join(name);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// Every request the backend received during the running case.
    pub(crate) fn records(&self) -> Vec<Recorded> {
        self.backend.records()
    }

    /// Forgets what the backend recorded so far.
    pub(crate) fn clear_records(&self) {
        self.backend.clear();
    }
}

/// `https://localhost:PORT/path`.
pub(crate) fn uri(port: u16, path: &str) -> String {
    format!("https://localhost:{port}{path}")
}

/// How a case ended when it did not fail.
pub(crate) enum Verdict {
    /// Passed.
    Pass,
    /// Passed, with a remark.
    Note(String),
    /// Could not be judged because of a limitation written down in `limitation`; printed
    /// as `KNOWN` and counted neither as passed nor as failed.
    Known {
        observed: String,
        limitation: &'static str,
    },
}

/// `cargo xtask conformance-h3`: this suite alone.
pub(crate) fn run_alone(args: &[String]) -> Result<bool> {
    let (passed, failed) = run(args)?;
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

/// Runs the suite and prints one line per case; returns `(passed, failed)`.
pub(crate) fn run(args: &[String]) -> Result<(usize, usize)> {
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
    let selected = |name: &str| filter.as_ref().is_none_or(|f| name.contains(f.as_str()));
    let cases: Vec<cases::Case> = cases::all()
        .into_iter()
        .filter(|case| selected(case.name))
        .collect();
    let shutdown = selected(cases::SHUTDOWN.0);
    let total = cases.len() + usize::from(shutdown);
    if total == 0 {
        println!("conformance-h3: no case matches the filter");
        return Ok((0, 0));
    }

    let clock = Instant::now();
    let gtls = gtls::locate();
    if let Err(why) = &gtls {
        println!("conformance-h3: {why}");
    }
    let mut temp = TempDir::new("conformance-h3")?;
    let log = temp.path().join("proxy-bin.log");
    let backend = Backend::start()?;

    let (passed, failed) = match start_proxy(release, backend.port(), temp.path(), &log) {
        Err(error) => {
            println!("conformance-h3: proxy did not start: {error:#}");
            if log.is_file() {
                println!(
                    "--- last lines of {} ---\n{}\n---",
                    log.display(),
                    process::tail(&log, 30)
                );
            }
            let names = cases.iter().map(|c| (c.name, c.reference));
            for (name, reference) in names.chain(shutdown.then_some(cases::SHUTDOWN)) {
                println!("FAIL {name} ({reference}): proxy did not start");
            }
            (0, total)
        }
        Ok(started) => {
            let ctx = Ctx {
                port: started.port,
                early_port: started.early_port,
                backend,
                gtls,
                aioquic: OnceCell::new(),
                dir: temp.path().to_path_buf(),
                cert_der_len: started.cert_der_len,
                case: Cell::new(0),
                runs: Cell::new(0),
            };
            let mut proxy = started.proxy;
            let mut tally = Tally::default();
            for (index, case) in cases.iter().enumerate() {
                ctx.case.set(index + 1);
                ctx.clear_records();
                tally.record(case.name, case.reference, (case.check)(&ctx));
            }
            if let Some(status) = proxy.exited() {
                println!("conformance-h3: proxy-bin exited during the suite ({status})");
            }
            if shutdown {
                ctx.case.set(cases.len() + 1);
                ctx.clear_records();
                let (name, reference) = cases::SHUTDOWN;
                tally.record(name, reference, cases::shutdown(&ctx, &mut proxy));
            }
            if tally.known > 0 {
                println!(
                    "conformance-h3: {} known limitation(s) above (KNOWN): not counted as passed",
                    tally.known
                );
            }
            (tally.passed, tally.failed)
        }
    };
    println!(
        "conformance-h3: {total} case(s) in {:.1}s",
        clock.elapsed().as_secs_f64()
    );
    if failed > 0 {
        temp.keep();
        println!("proxy log and client files: {}", temp.path().display());
    }
    Ok((passed, failed))
}

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    known: usize,
}

impl Tally {
    fn record(&mut self, name: &str, reference: &str, outcome: Result<Verdict>) {
        match outcome {
            Ok(Verdict::Pass) => {
                self.passed += 1;
                println!("PASS {name} ({reference})");
            }
            Ok(Verdict::Note(note)) => {
                self.passed += 1;
                println!("PASS {name} ({reference})");
                println!("     note: {note}");
            }
            Ok(Verdict::Known {
                observed,
                limitation,
            }) => {
                self.known += 1;
                println!("KNOWN {name} ({reference}): {observed}");
                println!("     limitation: {limitation}");
            }
            Err(why) => {
                self.failed += 1;
                let why = format!("{why:#}").replace('\n', " | ");
                println!("FAIL {name} ({reference}): {why}");
            }
        }
    }
}

/// A running proxy and what the cases need to know about it.
struct Started {
    proxy: ChildGuard,
    port: u16,
    early_port: u16,
    cert_der_len: usize,
}

/// Writes the certificates and the config, builds and starts `proxy-bin`, and waits until
/// both listeners serve TCP and have announced HTTP/3.
fn start_proxy(release: bool, backend_port: u16, dir: &Path, log: &Path) -> Result<Started> {
    let localhost = write_certificate(dir, "localhost", &["localhost", "127.0.0.1"])?;
    write_certificate(dir, "other", &["other.test"])?;
    let binary = process::build_proxy_bin(release)?;
    let [port, early_port, dead_port] = process::free_ports()?;
    let config_path = dir.join("conformance-h3.toml");
    fs::write(
        &config_path,
        config(dir, port, early_port, backend_port, dead_port),
    )
    .with_context(|| format!("writing {}", config_path.display()))?;
    let mut command = Command::new(&binary);
    command.arg("run").arg("--config").arg(&config_path);
    let mut proxy = ChildGuard::spawn_logged(&mut command, "proxy-bin", true, log)?;
    proxy.wait_for_port(port, STARTUP)?;
    proxy.wait_for_port(early_port, STARTUP)?;
    // The QUIC endpoints are bound next to the TCP listeners; their log lines say when.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::read_to_string(log).map_or(0, |text| text.matches("listening for HTTP/3").count()) < 2
    {
        if Instant::now() >= deadline {
            println!("conformance-h3: proxy log does not show two HTTP/3 listeners; going on");
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(Started {
        proxy,
        port,
        early_port,
        cert_der_len: localhost,
    })
}

/// Writes `NAME.pem` and `NAME.key` (self-signed for `names`) into `dir`; returns the size
/// of the DER certificate.
fn write_certificate(dir: &Path, name: &str, names: &[&str]) -> Result<usize> {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let certified = rcgen::generate_simple_self_signed(names)
        .with_context(|| format!("generating the {name} certificate"))?;
    fs::write(dir.join(format!("{name}.pem")), certified.cert.pem())?;
    fs::write(
        dir.join(format!("{name}.key")),
        certified.signing_key.serialize_pem(),
    )?;
    Ok(certified.cert.der().len())
}

/// The proxy configuration the cases are written against.
fn config(dir: &Path, port: u16, early_port: u16, backend_port: u16, dead_port: u16) -> String {
    let file = |name: &str| format!("{:?}", dir.join(name).display().to_string());
    let (cert, key) = (file("localhost.pem"), file("localhost.key"));
    let (other_cert, other_key) = (file("other.pem"), file("other.key"));
    let idle = IDLE_TIMEOUT.as_secs();
    format!(
        r#"# Written by `cargo xtask conformance-h3`.
[proxy]
via = "conformance"
max_uri_bytes = {MAX_URI}
max_headers = 30
max_header_bytes = 8192
shutdown_timeout = "10s"

[http3]
max_concurrent_streams = {MAX_STREAMS}
max_field_section_size = {MAX_FIELD_SECTION}
idle_timeout = "{idle}s"

# HTTP/3 with the defaults: Alt-Svc for a day, no early data.
[[listeners]]
address = "127.0.0.1:{port}"
http3 = true
[listeners.tls]
certificates = [
    {{ names = ["localhost"], cert = {cert}, key = {key} }},
    {{ names = ["other.test"], cert = {other_cert}, key = {other_key} }},
]

[[listeners]]
address = "127.0.0.1:{early_port}"
http3 = {{ early_data = true, alt_svc_max_age = "1h" }}
[listeners.tls]
certificates = [{{ names = ["localhost"], cert = {cert}, key = {key} }}]

[upstreams.backend]
endpoints = ["127.0.0.1:{backend_port}"]
response_header_timeout = "1s"
max_fails = 0

# The same backend, for the case that needs a response slower than a second.
[upstreams.patient]
endpoints = ["127.0.0.1:{backend_port}"]
response_header_timeout = "20s"
max_fails = 0

# Nothing listens there.
[upstreams.dead]
endpoints = ["127.0.0.1:{dead_port}"]
max_fails = 0

[[servers]]
names = ["localhost", "other.test"]
default = true

[[servers.routes]]
prefix = "/dead/"
upstream = "dead"

[[servers.routes]]
prefix = "/patient/"
upstream = "patient"

[[servers.routes]]
prefix = "/"
upstream = "backend"
"#
    )
}

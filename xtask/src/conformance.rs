//! `cargo xtask conformance`: HTTP/1.1 conformance (RFC 9110 / RFC 9112) of the real
//! `proxy-bin` binary, in front of a recording backend.
//!
//! Order: build `proxy-bin` → start the [`backend::Backend`] → write a config for free ports →
//! start `proxy-bin run --config FILE` and wait for its port → run every case of
//! [`cases::all`] on fresh connections → print `N passed, M failed` as the last line. The
//! proxy is killed on every path out (its [`ChildGuard`]); its log is kept when a case fails.

mod backend;
mod cases;
mod client;
mod wire;

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::process::{self, ChildGuard, TempDir};
use backend::{Backend, Recorded};
use client::{Conn, Response, Tally};
use wire::Head;

/// Everything a case may need: the proxy's port, the backend and the response tally.
pub(crate) struct Ctx {
    port: u16,
    backend: Backend,
    tally: Tally,
}

/// Time budget of one connection (and so, roughly, of one case).
const CASE_BUDGET: Duration = Duration::from_secs(5);

/// How long `proxy-bin` may take to accept connections after it was spawned.
const STARTUP: Duration = Duration::from_secs(30);

impl Ctx {
    /// A fresh connection to the proxy with the per-case budget.
    pub(crate) fn conn(&self) -> Result<Conn<'_>> {
        Conn::open(self.port, CASE_BUDGET, &self.tally)
    }

    /// Sends `request` on a fresh connection and reads one response.
    pub(crate) fn exchange(&self, request: &[u8]) -> Result<Response> {
        let mut conn = self.conn()?;
        conn.send(request);
        conn.response(false)
    }

    /// What the backend received during this case.
    pub(crate) fn records(&self) -> Vec<Recorded> {
        self.backend.records()
    }

    /// The single, well-formed request the backend received during this case.
    pub(crate) fn one_record(&self) -> Result<(Head, Recorded)> {
        let records = self.records();
        match records.as_slice() {
            [] => bail!("backend received no request"),
            [one] => match &one.head {
                Some(head) => Ok((head.clone(), one.clone())),
                None => bail!(
                    "backend could not read the forwarded request ({}): {:?}",
                    one.problem.as_deref().unwrap_or("unknown problem"),
                    wire::preview(one.raw_head.as_bytes(), 300)
                ),
            },
            many => bail!(
                "backend received {} requests: {:?}",
                many.len(),
                many.iter().map(Recorded::request_line).collect::<Vec<_>>()
            ),
        }
    }
}

/// Runs the suite; `Ok(false)` when a case failed (or the proxy could not be started).
pub(crate) fn run(args: &[String]) -> Result<bool> {
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
    let cases: Vec<cases::Case> = cases::all()
        .into_iter()
        .filter(|case| {
            filter
                .as_ref()
                .is_none_or(|f| case.name.contains(f.as_str()))
        })
        .collect();

    let mut temp = TempDir::new("conformance")?;
    let log = temp.path().join("proxy-bin.log");
    let backend = Backend::start()?;
    let backend_port = backend.port();

    let (passed, failed) = match start_proxy(release, backend_port, temp.path(), &log) {
        Err(error) => {
            println!("conformance: proxy did not start: {error:#}");
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
                tally: Tally::default(),
            };
            let (mut passed, mut failed) = (0, 0);
            for case in &cases {
                ctx.backend.clear();
                ctx.tally.set_case(case.name);
                match case.run(&ctx) {
                    Ok(()) => {
                        passed += 1;
                        println!("PASS {} ({})", case.name, case.reference);
                    }
                    Err(why) => {
                        failed += 1;
                        let why = format!("{why:#}").replace('\n', " | ");
                        println!("FAIL {} ({}): {why}", case.name, case.reference);
                    }
                }
            }
            if let Some(status) = proxy.exited() {
                println!("conformance: proxy-bin exited during the suite ({status})");
            }
            (passed, failed)
        }
    };
    if failed > 0 {
        temp.keep();
        println!("proxy log: {}", log.display());
    }
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

/// Builds and starts `proxy-bin`; returns its guard and its listener port.
fn start_proxy(
    release: bool,
    backend_port: u16,
    dir: &Path,
    log: &Path,
) -> Result<(ChildGuard, u16)> {
    let binary = process::build_proxy_bin(release)?;
    let [port, dead_port] = process::free_ports()?;
    let config_path = dir.join("conformance.toml");
    fs::write(&config_path, config(port, backend_port, dead_port))
        .with_context(|| format!("writing {}", config_path.display()))?;
    let mut command = std::process::Command::new(&binary);
    command.arg("run").arg("--config").arg(&config_path);
    let mut proxy = ChildGuard::spawn_logged(&mut command, "proxy-bin", false, log)?;
    proxy.wait_for_port(port, STARTUP)?;
    Ok((proxy, port))
}

/// The proxy configuration the cases are written against.
fn config(port: u16, backend_port: u16, dead_port: u16) -> String {
    format!(
        r#"# Written by `cargo xtask conformance`.
[proxy]
via = "conformance"
max_uri_bytes = 8192
max_header_bytes = 16384
header_read_timeout = "2s"

[[listeners]]
address = "127.0.0.1:{port}"

[upstreams.backend]
endpoints = ["127.0.0.1:{backend_port}"]
response_header_timeout = "1s"
# Cases must not influence each other: the crafted 502/504 cases would otherwise eject the
# only endpoint (passive health) and turn the following cases into 503s.
max_fails = 0

[upstreams.dead]
endpoints = ["127.0.0.1:{dead_port}"]
max_fails = 0

[[servers]]
names = ["conformance.test"]
default = true

[[servers.routes]]
prefix = "/dead/"
upstream = "dead"

[[servers.routes]]
prefix = "/"
upstream = "backend"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness itself, without a proxy: the client talks to the backend directly.
    #[test]
    fn client_reads_every_backend_response() -> Result<()> {
        let backend = Backend::start()?;
        let tally = Tally::default();
        let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");

        let mut conn = Conn::open(backend.port(), CASE_BUDGET, &tally)?;
        conn.send(format!("{}{}", get("/a"), get("/frame/chunked")).as_bytes());
        let echo = conn.response(false)?;
        assert_eq!(echo.status, 200);
        assert!(echo.text().starts_with("GET /a HTTP/1.1\r\n"));
        assert_eq!(conn.response(false)?.body, backend::CHUNKED_BODY);

        let mut conn = Conn::open(backend.port(), CASE_BUDGET, &tally)?;
        conn.send(get("/frame/close").as_bytes());
        assert_eq!(conn.response(false)?.body, backend::close_body());

        let mut conn = Conn::open(backend.port(), CASE_BUDGET, &tally)?;
        conn.send(b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
        assert_eq!(conn.response(false)?.status, 200);
        let records = backend.records();
        assert_eq!(records.len(), 4);
        assert_eq!(records[3].body, b"abc");

        let mut conn = Conn::open(backend.port(), CASE_BUDGET, &tally)?;
        conn.send(get("/frame/cl-te").as_bytes());
        assert_eq!(conn.response(false)?.body, b"hello");
        assert_eq!(
            tally.malformed().len(),
            1,
            "CL+TE must be noted as malformed"
        );
        Ok(())
    }
}

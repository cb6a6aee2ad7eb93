//! `cargo xtask conformance-cache`: HTTP caching conformance (RFC 9111, RFC 5861, RFC 9110
//! section 14, RFC 9211, RFC 9213) of the real `proxy-bin` binary with `cache = true` on its
//! route, in front of a scripted origin. `cargo xtask conformance` runs it after the HTTP/1.1,
//! HTTP/2 and HTTP/3 suites.
//!
//! Order: start the [`origin::Origin`] (hyper, in process) → build `proxy-bin` → write a config
//! for free ports (one route, `cache = true`, a `[caches.default]` store and the `[admin]`
//! listener) → start `proxy-bin run --config FILE` and wait for its port → run the cases of
//! [`cases::all`] concurrently, at most [`CONCURRENCY`] at a time, each on its own request
//! paths and bounded by [`CASE_BUDGET`] → print one line per case in table order, then the
//! tally.
//!
//! The cases are written from the RFCs in the manner of the independent cache-tests suite
//! (cache-tests.fyi): each scripts what the origin answers for its paths, sends requests
//! through the proxy, and judges what the client got and how many requests reached the
//! origin. Where the RFC leaves a behaviour optional (MAY, SHOULD, "ought to"), a case that
//! fails is listed in [`known_limitation`] with the text that allows it.

mod cases;
mod client;
mod origin;

use std::fs;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::process::{self, ChildGuard, TempDir};
use client::{Req, Resp};
use origin::{Origin, Reply, Seen};

/// The `Host` of every request unless a case picks another: the default server.
pub(crate) const HOST: &str = "cache.test";

/// The cache's name in `Cache-Status` (the default of `[caches.NAME] name`).
pub(crate) const CACHE_NAME: &str = "proxy-bin";

/// Time budget of one request, connection included.
const REQUEST_BUDGET: Duration = Duration::from_secs(5);

/// Time budget of one case, sleeps included.
const CASE_BUDGET: Duration = Duration::from_secs(30);

/// Cases in flight at once: most of a case's time is spent waiting, not working.
const CONCURRENCY: usize = 24;

/// How long `proxy-bin` may take to accept connections after it was spawned.
const STARTUP: Duration = Duration::from_secs(30);

/// What a case returns: `Ok(Some(note))` passes with a remark.
pub(crate) type Outcome = Result<Option<String>>;

/// A case's check, as a plain function so that the table in [`cases::all`] stays a table.
pub(crate) type Check = fn(Tc) -> Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// One case: a name, the RFC text it checks, and the check.
pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) reference: &'static str,
    pub(crate) check: Check,
}

/// What every case shares: the proxy's ports and the origin.
struct Shared {
    port: u16,
    admin_port: u16,
    origin: Origin,
}

/// A case's view of the suite: its number (which marks its request paths) and the shared
/// proxy and origin.
#[derive(Clone)]
pub(crate) struct Tc {
    shared: Arc<Shared>,
    case: usize,
}

impl Tc {
    /// A request path unique to this case: `/cache-N/rest`.
    pub(crate) fn path(&self, rest: &str) -> String {
        format!("/cache-{}/{rest}", self.case)
    }

    /// The origin answers `target` with `replies` in order; the last one repeats.
    pub(crate) fn script(&self, target: &str, replies: Vec<Reply>) {
        self.shared.origin.script(target, replies);
    }

    /// Every request for `target` that reached the origin.
    pub(crate) fn seen(&self, target: &str) -> Vec<Seen> {
        self.shared.origin.seen(target)
    }

    /// Sends `req` through the proxy on a new connection.
    pub(crate) async fn send(&self, req: Req) -> Result<Resp> {
        client::send(self.shared.port, &req, REQUEST_BUDGET).await
    }

    /// `GET target` through the proxy.
    pub(crate) async fn get(&self, target: &str) -> Result<Resp> {
        self.send(Req::get(target)).await
    }

    /// Sends `req` to the admin listener.
    pub(crate) async fn admin(&self, req: Req) -> Result<Resp> {
        client::send(self.shared.admin_port, &req, REQUEST_BUDGET).await
    }

    /// Fails unless exactly `count` requests for `target` reached the origin and `resp` is
    /// the last of them (its [`origin::SEQ`] is `count`).
    pub(crate) fn origin_saw(&self, target: &str, count: usize, resp: &Resp) -> Result<()> {
        let seen = self.seen(target);
        if seen.len() != count || resp.seq() != Some(count) {
            bail!(
                "expected the origin to see {count} request(s) and the client to get the \
                 last one; the origin saw {} [{}], the client got {}",
                seen.len(),
                seen.iter()
                    .map(Seen::summary)
                    .collect::<Vec<_>>()
                    .join("; "),
                resp.summary()
            );
        }
        Ok(())
    }

    /// Fails unless `resp` was served from the one response the origin sent for `target`.
    pub(crate) fn reused(&self, target: &str, resp: &Resp) -> Result<()> {
        self.origin_saw(target, 1, resp)
            .context("the stored response was not reused")
    }

    /// Waits up to `within` until `count` requests for `target` reached the origin.
    pub(crate) async fn wait_for_origin(&self, target: &str, count: usize, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.seen(target).len() < count && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Cases that fail where the RFC leaves the behaviour optional, by name, with the text that
/// allows it. They print as `KNOWN` and count neither as passed nor as failed; a known case
/// that starts passing prints as a plain PASS. Only optional behaviour belongs here: a failed
/// MUST stays a FAIL.
const KNOWN: &[(&str, &str)] = &[];

fn known_limitation(name: &str) -> Option<&'static str> {
    KNOWN
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, why)| *why)
}

/// `cargo xtask conformance-cache`: this suite alone.
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
    let cases: Vec<Case> = cases::all()
        .into_iter()
        .filter(|case| {
            filter
                .as_ref()
                .is_none_or(|f| case.name.contains(f.as_str()))
        })
        .collect();
    if cases.is_empty() {
        println!("conformance-cache: no case matches the filter");
        return Ok((0, 0));
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let mut temp = TempDir::new("conformance-cache")?;
    let log = temp.path().join("proxy-bin.log");
    let origin = runtime.block_on(Origin::start())?;

    let (passed, failed) = match start_proxy(release, origin.port(), temp.path(), &log) {
        Err(error) => {
            println!("conformance-cache: proxy did not start: {error:#}");
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
        Ok((mut proxy, port, admin_port)) => {
            let clock = Instant::now();
            let shared = Arc::new(Shared {
                port,
                admin_port,
                origin,
            });
            let outcomes = runtime.block_on(run_cases(&cases, &shared));
            let mut tally = Tally::default();
            for (case, outcome) in cases.iter().zip(outcomes) {
                tally.record(case, outcome);
            }
            if let Some(status) = proxy.exited() {
                println!("conformance-cache: proxy-bin exited during the suite ({status})");
            }
            if tally.known > 0 {
                println!(
                    "conformance-cache: {} known limitation(s) above (KNOWN): optional in the \
                     RFC, not counted as passed",
                    tally.known
                );
            }
            println!(
                "conformance-cache: {} case(s) in {:.1}s",
                cases.len(),
                clock.elapsed().as_secs_f64()
            );
            (tally.passed, tally.failed)
        }
    };
    runtime.shutdown_timeout(Duration::from_secs(1));
    if failed > 0 {
        temp.keep();
        println!("proxy log: {}", log.display());
    }
    Ok((passed, failed))
}

/// Runs every case, at most [`CONCURRENCY`] at once; the outcomes in table order.
async fn run_cases(cases: &[Case], shared: &Arc<Shared>) -> Vec<Outcome> {
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut set = JoinSet::new();
    for (index, case) in cases.iter().enumerate() {
        let tc = Tc {
            shared: shared.clone(),
            case: index + 1,
        };
        let check = case.check;
        let permits = permits.clone();
        set.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let outcome = match tokio::time::timeout(CASE_BUDGET, check(tc)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(anyhow::anyhow!(
                    "the case did not finish within {}s",
                    CASE_BUDGET.as_secs()
                )),
            };
            (index, outcome)
        });
    }
    let mut outcomes: Vec<Outcome> = (0..cases.len())
        .map(|_| Err(anyhow::anyhow!("the case did not run")))
        .collect();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((index, outcome)) => outcomes[index] = outcome,
            Err(error) => eprintln!("conformance-cache: a case task failed: {error}"),
        }
    }
    outcomes
}

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    known: usize,
}

impl Tally {
    fn record(&mut self, case: &Case, outcome: Outcome) {
        let (name, reference) = (case.name, case.reference);
        match outcome {
            Ok(note) => {
                self.passed += 1;
                println!("PASS {name} ({reference})");
                if let Some(note) = note {
                    println!("     note: {note}");
                }
            }
            Err(why) => {
                let why = format!("{why:#}").replace('\n', " | ");
                match known_limitation(name) {
                    Some(limit) => {
                        self.known += 1;
                        println!("KNOWN {name} ({reference}): {why}");
                        println!("     limitation: {limit}");
                    }
                    None => {
                        self.failed += 1;
                        println!("FAIL {name} ({reference}): {why}");
                    }
                }
            }
        }
    }
}

/// Builds and starts `proxy-bin`; returns its guard, its listener port and its admin port.
fn start_proxy(
    release: bool,
    origin_port: u16,
    dir: &Path,
    log: &Path,
) -> Result<(ChildGuard, u16, u16)> {
    let binary = process::build_proxy_bin(release)?;
    let [port, admin_port] = process::free_ports()?;
    let config_path = dir.join("conformance-cache.toml");
    fs::write(&config_path, config(port, admin_port, origin_port))
        .with_context(|| format!("writing {}", config_path.display()))?;
    let mut command = Command::new(&binary);
    command.arg("run").arg("--config").arg(&config_path);
    let mut proxy = ChildGuard::spawn_logged(&mut command, "proxy-bin", false, log)?;
    proxy.wait_for_port(port, STARTUP)?;
    proxy.wait_for_port(admin_port, STARTUP)?;
    Ok((proxy, port, admin_port))
}

/// The proxy configuration the cases are written against.
fn config(port: u16, admin_port: u16, origin_port: u16) -> String {
    format!(
        r#"# Written by `cargo xtask conformance-cache`.
[[listeners]]
address = "127.0.0.1:{port}"

[upstreams.origin]
endpoints = ["127.0.0.1:{origin_port}"]
response_header_timeout = "5s"
# The scripted 5xx answers must not eject the only endpoint (passive health).
max_fails = 0

[caches.default]
size = "64MiB"

[admin]
address = "127.0.0.1:{admin_port}"

[[servers]]
names = ["{HOST}"]
default = true

[[servers.routes]]
prefix = "/"
upstream = "origin"
cache = true
"#
    )
}

//! `cargo xtask loadgen`: a bounded HTTP/3 (quinn + h3) and HTTP/2 (h2 over TLS) load
//! generator, the client side of `cargo xtask bench --compare`'s HTTP/3 cases.
//!
//! Run order: parse options → resolve the URL → open every connection (bounded) → start the
//! clock → on each connection, `--streams` workers that each send `GET`, drain the response
//! body to its end and send the next, until the end of warm-up plus `--duration` → wait for
//! requests in flight (each bounded by `--timeout`) → close the connections → print one
//! `loadgen: key=value ...` line (see [`Summary`]) and a line for people.
//!
//! Only responses that complete after the warm-up and before the end count. A `200` is a
//! success; any other status, a stream or connection error and a timeout are errors. A
//! connection that dies before the end is opened again (`reconnects`). Latency is from
//! sending the request to the end of the response body.
//!
//! Numbers from a debug build measure the client: for benchmarks use the release binary
//! (`cargo run --release -p xtask -- loadgen ...`, what `bench --compare` runs).

mod h2;
mod h3;
mod histogram;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use http::{Request, StatusCode, Uri};
use tokio::task::JoinSet;
use tokio::time::Instant;

use self::histogram::Histogram;

/// Longest wait for one connection to be established.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for a connection's orderly close at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Consecutive failures on a stream slot after which it pauses before the next request, so a
/// broken server is not hammered in a tight loop.
const FAILURE_BACKOFF_AFTER: u32 = 3;
const FAILURE_BACKOFF: Duration = Duration::from_millis(10);

/// `cargo xtask loadgen ARGS`: runs the load and prints the summary. `Ok(false)` when no
/// request succeeded.
pub(crate) fn run(args: &[String]) -> Result<bool> {
    let options = Options::parse(args)?;
    if cfg!(debug_assertions) {
        eprintln!(
            "loadgen: warning: this is a debug build, so the client is the bottleneck; \
             measure with `cargo run --release -p xtask -- loadgen ...`"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let cpu_before = crate::bench::process_cpu_secs(std::process::id());
    let started = std::time::Instant::now();
    let mut stats = runtime.block_on(generate(&options))?;
    runtime.shutdown_timeout(CLOSE_TIMEOUT);
    let wall = started.elapsed().as_secs_f64();
    if let (Some(before), Some(after)) = (
        cpu_before,
        crate::bench::process_cpu_secs(std::process::id()),
    ) {
        stats.client_cpu_percent = Some((after - before) * 100.0 / wall);
    }
    let summary = Summary::from_stats(&options, &stats);
    println!("{}", summary.line());
    println!("{}", summary.human(&options));
    if let Some(error) = &stats.first_error {
        println!("loadgen: first error: {error}");
    }
    Ok(summary.requests > 0)
}

/// The wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// HTTP/3 over QUIC (quinn + h3), ALPN `h3`.
    H3,
    /// HTTP/2 over TLS (h2 + tokio-rustls), ALPN `h2`.
    H2,
}

impl Protocol {
    /// The name on the command line and in the summary.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Protocol::H3 => "h3",
            Protocol::H2 => "h2",
        }
    }
}

/// Command-line options.
#[derive(Debug, Clone)]
struct Options {
    url: Uri,
    protocol: Protocol,
    /// `:authority` and TLS server name; the URL's when `None`.
    host: Option<String>,
    connections: usize,
    streams: usize,
    duration: Duration,
    warmup: Duration,
    timeout: Duration,
    threads: usize,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        const USAGE: &str = "loadgen --url https://HOST:PORT/PATH --protocol h3|h2 \
             [--host NAME] [--connections N (4)] [--streams N (16)] [--duration SECS (10, <= 120)] \
             [--warmup SECS (0)] [--timeout SECS (10)] [--threads N (1)]";
        let mut url = None;
        let mut protocol = None;
        let mut options = Options {
            url: Uri::from_static("https://127.0.0.1/"),
            protocol: Protocol::H3,
            host: None,
            connections: 4,
            streams: 16,
            duration: Duration::from_secs(10),
            warmup: Duration::ZERO,
            timeout: Duration::from_secs(10),
            threads: 1,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || {
                args.next()
                    .map(String::as_str)
                    .with_context(|| format!("{arg} needs a value\nusage: {USAGE}"))
            };
            match arg.as_str() {
                "--url" => {
                    let text = value()?;
                    url = Some(
                        text.parse::<Uri>()
                            .with_context(|| format!("--url {text}"))?,
                    );
                }
                "--protocol" => {
                    protocol = Some(match value()? {
                        "h3" => Protocol::H3,
                        "h2" => Protocol::H2,
                        other => bail!("--protocol {other}: expected h3 or h2"),
                    });
                }
                "--host" => options.host = Some(value()?.to_owned()),
                "--connections" => options.connections = number(arg, value()?, 1..=1000)?,
                "--streams" => options.streams = number(arg, value()?, 1..=1000)?,
                "--duration" => options.duration = seconds(arg, value()?, 1..=120)?,
                "--warmup" => options.warmup = seconds(arg, value()?, 0..=60)?,
                "--timeout" => options.timeout = seconds(arg, value()?, 1..=60)?,
                "--threads" => options.threads = number(arg, value()?, 1..=64)?,
                other => bail!("unknown argument `{other}`\nusage: {USAGE}"),
            }
        }
        options.url = url.with_context(|| format!("--url is required\nusage: {USAGE}"))?;
        options.protocol =
            protocol.with_context(|| format!("--protocol is required\nusage: {USAGE}"))?;
        Ok(options)
    }
}

fn number(arg: &str, text: &str, range: std::ops::RangeInclusive<usize>) -> Result<usize> {
    let n: usize = text
        .parse()
        .with_context(|| format!("{arg} {text}: expected a number"))?;
    ensure!(
        range.contains(&n),
        "{arg} must be {}..={}",
        range.start(),
        range.end()
    );
    Ok(n)
}

fn seconds(arg: &str, text: &str, range: std::ops::RangeInclusive<u64>) -> Result<Duration> {
    let n: u64 = text
        .trim_end_matches('s')
        .parse()
        .with_context(|| format!("{arg} {text}: expected seconds"))?;
    ensure!(
        range.contains(&n),
        "{arg} must be {}..={} s",
        range.start(),
        range.end()
    );
    Ok(Duration::from_secs(n))
}

/// Where to connect and what to ask for.
struct Target {
    addr: SocketAddr,
    /// TLS server name (SNI unless it is an IP address).
    server_name: String,
    /// `GET https://AUTHORITY/PATH`, cloned for each request.
    request: Request<()>,
}

impl Target {
    async fn resolve(options: &Options) -> Result<Self> {
        let url = &options.url;
        ensure!(
            url.scheme_str() == Some("https"),
            "--url {url}: only https:// URLs (both protocols run over TLS)"
        );
        let authority = url
            .authority()
            .with_context(|| format!("--url {url}: no host"))?;
        let port = authority.port_u16().unwrap_or(443);
        let host = authority.host();
        let addr = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?;
        let request_authority = options
            .host
            .clone()
            .unwrap_or_else(|| authority.as_str().to_owned());
        let server_name = options
            .host
            .as_deref()
            .unwrap_or(host)
            .trim_matches(['[', ']'])
            .to_owned();
        let path = url.path_and_query().map_or("/", |p| p.as_str());
        let uri = format!("https://{request_authority}{path}");
        let request = Request::get(uri.as_str())
            .header("user-agent", "xtask-loadgen")
            .body(())
            .with_context(|| format!("request for {uri}"))?;
        Ok(Self {
            addr,
            server_name,
            request,
        })
    }
}

/// When to count and when to stop; the same for every task.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// End of warm-up: responses completed from here on count.
    measure_from: Instant,
    /// No request is started at or after this; responses completed after it do not count.
    end: Instant,
    timeout: Duration,
    streams: usize,
}

/// What one response looked like.
struct Response {
    status: StatusCode,
    body_bytes: u64,
}

/// One wire protocol's client: how to connect and how to make one request. The load loop
/// ([`connection_loop`], [`worker`]) is shared.
trait Client: Send + Sync + 'static {
    /// An established connection, owned by its connection loop.
    type Conn: Send + 'static;
    /// A handle that sends requests on `Conn`; one clone per stream slot.
    type Sender: Send + 'static;

    /// Opens a connection (TLS handshake and HTTP settings included).
    fn connect(&self, target: &Target) -> impl Future<Output = Result<Self::Conn>> + Send;

    /// A new handle for a stream slot.
    fn sender(conn: &Self::Conn) -> Self::Sender;

    /// Whether the connection under `sender` is gone (no point in sending more on it).
    fn is_closed(sender: &Self::Sender) -> bool;

    /// Sends `request` without a body and reads the whole response body.
    fn request(
        sender: &mut Self::Sender,
        request: &Request<()>,
    ) -> impl Future<Output = Result<Response>> + Send;

    /// Closes the connection in order (bounded by the caller).
    fn close(conn: Self::Conn) -> impl Future<Output = ()> + Send;
}

/// Counters of one task, merged at the end.
#[derive(Default)]
struct Stats {
    ok: u64,
    non_ok: u64,
    failed: u64,
    timeouts: u64,
    bytes: u64,
    reconnects: u64,
    connect_failures: u64,
    latency: Histogram,
    first_error: Option<String>,
    /// This process's CPU time over the run's wall time (whole run, set at the end).
    client_cpu_percent: Option<f64>,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.ok += other.ok;
        self.non_ok += other.non_ok;
        self.failed += other.failed;
        self.timeouts += other.timeouts;
        self.bytes += other.bytes;
        self.reconnects += other.reconnects;
        self.connect_failures += other.connect_failures;
        self.latency.merge(&other.latency);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn note(&mut self, error: impl FnOnce() -> String) {
        if self.first_error.is_none() {
            self.first_error = Some(error());
        }
    }
}

async fn generate(options: &Options) -> Result<Stats> {
    let target = Arc::new(Target::resolve(options).await?);
    match options.protocol {
        Protocol::H3 => load(Arc::new(h3::H3Client::new()?), target, options).await,
        Protocol::H2 => load(Arc::new(h2::H2Client::new()?), target, options).await,
    }
}

/// Opens every connection, runs the plan on each and merges the counts.
async fn load<C: Client>(client: Arc<C>, target: Arc<Target>, options: &Options) -> Result<Stats> {
    let mut opening = JoinSet::new();
    for _ in 0..options.connections {
        let (client, target) = (client.clone(), target.clone());
        opening.spawn(async move {
            tokio::time::timeout(CONNECT_TIMEOUT, client.connect(&target))
                .await
                .unwrap_or_else(|_| bail!("no connection within {CONNECT_TIMEOUT:?}"))
        });
    }
    let mut conns = Vec::with_capacity(options.connections);
    while let Some(joined) = opening.join_next().await {
        let conn = joined
            .context("connect task")?
            .with_context(|| format!("connecting to {}", target.addr))?;
        conns.push(conn);
    }

    let start = Instant::now();
    let plan = Plan {
        measure_from: start + options.warmup,
        end: start + options.warmup + options.duration,
        timeout: options.timeout,
        streams: options.streams,
    };
    let mut running = JoinSet::new();
    for conn in conns {
        running.spawn(connection_loop(client.clone(), target.clone(), conn, plan));
    }
    // Every worker stops starting requests at `end` and each request is bounded by `timeout`;
    // reconnects are bounded by CONNECT_TIMEOUT, closes by CLOSE_TIMEOUT.
    let bound = options.warmup + options.duration + options.timeout + CONNECT_TIMEOUT * 2;
    let mut stats = Stats::default();
    let deadline = start + bound;
    loop {
        match tokio::time::timeout_at(deadline, running.join_next()).await {
            Ok(Some(joined)) => stats.merge(joined.context("connection task")?),
            Ok(None) => break,
            Err(_) => bail!("the load did not finish within {bound:?}"),
        }
    }
    Ok(stats)
}

/// Runs the stream workers on `conn`, and on fresh connections while the old one dies before
/// the end.
async fn connection_loop<C: Client>(
    client: Arc<C>,
    target: Arc<Target>,
    first: C::Conn,
    plan: Plan,
) -> Stats {
    let mut stats = Stats::default();
    let mut next = Some(first);
    loop {
        let conn = match next.take() {
            Some(conn) => conn,
            None => {
                if Instant::now() >= plan.end {
                    break;
                }
                match tokio::time::timeout(CONNECT_TIMEOUT, client.connect(&target)).await {
                    Ok(Ok(conn)) => {
                        stats.reconnects += 1;
                        conn
                    }
                    Ok(Err(error)) => {
                        stats.connect_failures += 1;
                        stats.note(|| format!("reconnecting: {error:#}"));
                        tokio::time::sleep(FAILURE_BACKOFF * 10).await;
                        continue;
                    }
                    Err(_) => {
                        stats.connect_failures += 1;
                        stats.note(|| "reconnecting: timed out".to_owned());
                        continue;
                    }
                }
            }
        };
        let mut workers = JoinSet::new();
        for _ in 0..plan.streams {
            workers.spawn(worker::<C>(C::sender(&conn), target.clone(), plan));
        }
        while let Some(joined) = workers.join_next().await {
            match joined {
                Ok(worker_stats) => stats.merge(worker_stats),
                Err(error) => {
                    stats.failed += 1;
                    stats.note(|| format!("worker task: {error}"));
                }
            }
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, C::close(conn)).await;
        if Instant::now() >= plan.end {
            break;
        }
    }
    stats
}

/// One stream slot: request after request until the end, or until the connection is gone.
async fn worker<C: Client>(mut sender: C::Sender, target: Arc<Target>, plan: Plan) -> Stats {
    let mut stats = Stats::default();
    let mut failures_in_a_row = 0;
    loop {
        let sent = Instant::now();
        if sent >= plan.end {
            break;
        }
        let outcome =
            tokio::time::timeout(plan.timeout, C::request(&mut sender, &target.request)).await;
        let done = Instant::now();
        let counts = done >= plan.measure_from && done <= plan.end;
        match outcome {
            Ok(Ok(response)) => {
                failures_in_a_row = 0;
                if !counts {
                    continue;
                }
                stats.bytes += response.body_bytes;
                if response.status == StatusCode::OK {
                    stats.ok += 1;
                    stats.latency.record(done - sent);
                } else {
                    stats.non_ok += 1;
                    stats.note(|| format!("status {}", response.status));
                }
            }
            Ok(Err(error)) => {
                failures_in_a_row += 1;
                if counts {
                    stats.failed += 1;
                }
                stats.note(|| format!("{error:#}"));
            }
            Err(_) => {
                failures_in_a_row += 1;
                if counts {
                    stats.timeouts += 1;
                }
                stats.note(|| format!("no complete response within {:?}", plan.timeout));
            }
        }
        if failures_in_a_row > 0 && C::is_closed(&sender) {
            break;
        }
        if failures_in_a_row >= FAILURE_BACKOFF_AFTER {
            tokio::time::sleep(FAILURE_BACKOFF).await;
        }
    }
    stats
}

/// The machine-readable result, printed as one line:
/// `loadgen: protocol=h3 connections=C streams=S requests=N errors=E non200=.. failed=..
/// timeouts=.. reconnects=.. duration_s=D rps=R bytes=B p50_ms=.. p90_ms=.. p99_ms=..
/// max_ms=.. mean_ms=.. client_cpu_pct=..` (latency fields are `nan` when nothing succeeded;
/// `client_cpu_pct` is the load generator's own CPU time over its wall time: near 100 × threads
/// means the client, not the server, set the rate).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Summary {
    /// `h3` or `h2`.
    pub(crate) protocol: String,
    /// `200` responses counted.
    pub(crate) requests: u64,
    /// Everything else counted: other statuses, failures, timeouts.
    pub(crate) errors: u64,
    /// Requests per second over the measured window.
    pub(crate) rps: f64,
    /// Median latency in milliseconds.
    pub(crate) p50_ms: f64,
    /// 99th percentile latency in milliseconds.
    pub(crate) p99_ms: f64,
    /// All fields, as printed.
    pub(crate) fields: Vec<(String, String)>,
}

impl Summary {
    fn from_stats(options: &Options, stats: &Stats) -> Self {
        let secs = options.duration.as_secs_f64();
        let ms = |us: Option<f64>| us.map_or(f64::NAN, |us| us / 1000.0);
        let errors = stats.non_ok + stats.failed + stats.timeouts;
        let p50 = ms(stats.latency.quantile_us(0.50));
        let p99 = ms(stats.latency.quantile_us(0.99));
        let rps = stats.ok as f64 / secs;
        let fields = vec![
            ("protocol", options.protocol.name().to_owned()),
            ("connections", options.connections.to_string()),
            ("streams", options.streams.to_string()),
            ("requests", stats.ok.to_string()),
            ("errors", errors.to_string()),
            ("non200", stats.non_ok.to_string()),
            ("failed", stats.failed.to_string()),
            ("timeouts", stats.timeouts.to_string()),
            ("reconnects", stats.reconnects.to_string()),
            ("connect_failures", stats.connect_failures.to_string()),
            ("duration_s", format!("{secs:.3}")),
            ("rps", format!("{rps:.1}")),
            ("bytes", stats.bytes.to_string()),
            ("p50_ms", format!("{p50:.3}")),
            (
                "p90_ms",
                format!("{:.3}", ms(stats.latency.quantile_us(0.90))),
            ),
            ("p99_ms", format!("{p99:.3}")),
            (
                "max_ms",
                format!("{:.3}", stats.latency.max_us() as f64 / 1000.0),
            ),
            ("mean_ms", format!("{:.3}", ms(stats.latency.mean_us()))),
            (
                "client_cpu_pct",
                format!("{:.0}", stats.client_cpu_percent.unwrap_or(f64::NAN)),
            ),
        ];
        Self {
            protocol: options.protocol.name().to_owned(),
            requests: stats.ok,
            errors,
            rps,
            p50_ms: p50,
            p99_ms: p99,
            fields: fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }
    }

    /// The `loadgen: k=v ...` line.
    pub(crate) fn line(&self) -> String {
        let mut line = String::from("loadgen:");
        for (key, value) in &self.fields {
            line.push(' ');
            line.push_str(key);
            line.push('=');
            line.push_str(value);
        }
        line
    }

    fn human(&self, options: &Options) -> String {
        let get = |key: &str| self.field(key).unwrap_or("?");
        format!(
            "loadgen: {} {} with {}x{} streams for {:?}: {} responses 200 ({:.0}/s), {} errors \
             ({} other status, {} failed, {} timed out), {} reconnects; latency p50 {} ms, \
             p90 {} ms, p99 {} ms, max {} ms; {:.1} MiB of body; client CPU {} %",
            self.protocol,
            options.url,
            options.connections,
            options.streams,
            options.duration,
            self.requests,
            self.rps,
            self.errors,
            get("non200"),
            get("failed"),
            get("timeouts"),
            get("reconnects"),
            get("p50_ms"),
            get("p90_ms"),
            get("p99_ms"),
            get("max_ms"),
            get("bytes").parse::<f64>().unwrap_or(f64::NAN) / 1_048_576.0,
            get("client_cpu_pct"),
        )
    }

    /// A field's text.
    pub(crate) fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Reads the summary line out of loadgen's stdout.
    pub(crate) fn parse(output: &str) -> Result<Self> {
        let line = output
            .lines()
            .find(|line| line.starts_with("loadgen: protocol="))
            .with_context(|| format!("no `loadgen: protocol=...` line in:\n{output}"))?;
        let fields: Vec<(String, String)> = line["loadgen:".len()..]
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let get = |key: &str| {
            fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .with_context(|| format!("no {key}= in `{line}`"))
        };
        let float = |key: &str| -> Result<f64> {
            get(key)?
                .parse()
                .with_context(|| format!("{key}= in `{line}`"))
        };
        let int = |key: &str| -> Result<u64> {
            get(key)?
                .parse()
                .with_context(|| format!("{key}= in `{line}`"))
        };
        Ok(Self {
            protocol: get("protocol")?.to_owned(),
            requests: int("requests")?,
            errors: int("errors")?,
            rps: float("rps")?,
            p50_ms: float("p50_ms")?,
            p99_ms: float("p99_ms")?,
            fields,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_options() -> Result<()> {
        let options = Options::parse(&args(
            "--url https://127.0.0.1:8443/x --protocol h2 --connections 2 --streams 3 \
             --duration 5s --warmup 1 --threads 2 --host bench.test",
        ))?;
        assert_eq!(options.protocol, Protocol::H2);
        assert_eq!((options.connections, options.streams), (2, 3));
        assert_eq!(options.duration, Duration::from_secs(5));
        assert_eq!(options.warmup, Duration::from_secs(1));
        assert_eq!(options.host.as_deref(), Some("bench.test"));
        assert!(Options::parse(&args("--url https://127.0.0.1/ --protocol h3")).is_ok());
        assert!(Options::parse(&args("--url https://127.0.0.1/")).is_err());
        assert!(Options::parse(&args("--url https://a/ --protocol h3 --duration 600")).is_err());
        assert!(Options::parse(&args("--url https://a/ --protocol h1")).is_err());
        Ok(())
    }

    #[test]
    fn summary_round_trips() -> Result<()> {
        let options = Options::parse(&args("--url https://127.0.0.1/ --protocol h3"))?;
        let mut stats = Stats {
            ok: 1000,
            non_ok: 2,
            failed: 1,
            bytes: 1_024_000,
            ..Stats::default()
        };
        for us in 1..=1000 {
            stats.latency.record(Duration::from_micros(us));
        }
        let summary = Summary::from_stats(&options, &stats);
        let output = format!("noise\n{}\n{}\n", summary.line(), summary.human(&options));
        let parsed = Summary::parse(&output)?;
        assert_eq!(parsed.requests, 1000);
        assert_eq!(parsed.errors, 3);
        assert!((parsed.rps - 100.0).abs() < 1e-9);
        assert!((parsed.p50_ms - 0.5).abs() < 0.02, "{}", parsed.p50_ms);
        assert_eq!(parsed.field("non200"), Some("2"));

        let empty = Summary::from_stats(&options, &Stats::default());
        let parsed = Summary::parse(&empty.line())?;
        assert_eq!(parsed.requests, 0);
        assert!(parsed.p50_ms.is_nan());
        Ok(())
    }
}

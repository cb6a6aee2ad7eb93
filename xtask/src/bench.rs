//! `cargo xtask bench`: the criterion benchmarks of `proxy-core`, or with `--compare` a
//! side-by-side load test of `proxy-bin` and established proxies in front of the same nginx
//! origin:
//!
//! | case     | protocol            | client                    | compared with |
//! |----------|---------------------|---------------------------|---------------|
//! | `h1`     | HTTP/1.1 keep-alive | wrk `-t1 -c64`            | nginx         |
//! | `h1-100k`| HTTP/1.1, 100 KiB   | wrk `-t1 -c64`            | nginx         |
//! | `h2-tls` | HTTP/2 over TLS     | h2load `-t1 -c16 -m10`    | nginx         |
//! | `h3`     | HTTP/3 over QUIC    | loadgen, 16 conns × 10    | Caddy         |
//! | `h2-lg`  | HTTP/2 over TLS     | loadgen, 16 conns × 10    | Caddy         |
//!
//! `h2-lg` is the HTTP/2 figure from the same client as `h3` (`cargo xtask loadgen`, built
//! in release), so that proxy-bin's HTTP/3 rate can be read against its own HTTP/2 rate.
//!
//! Compare order: check tools → build `proxy-bin` (and, for the loadgen cases, `xtask`) in
//! release → self-signed certificate (openssl) → start the origin, nginx, Caddy and
//! proxy-bin (pinned with `taskset` when possible: proxies on CPU 0, origin and load
//! generator on CPU 1) → warm each target up for 2 s per case, checking that loadgen gets
//! full `200` responses (which proves HTTP/3 really is served over UDP) → `rounds` rounds,
//! each running every case against its targets in turn → per-run table, then medians and
//! the median of the per-round ratios to the comparison server. CPU per request is the
//! proxy's utime+stime delta (from `/proc/PID/stat`, nginx: master plus workers) over the
//! requests; CPU % is that delta over the run's wall time (near 100 % means the proxy was the
//! bottleneck). Caddy is optional: without it the `h3`/`h2-lg` cases measure proxy-bin alone.
//! `--cases h1,h3` runs a subset; `--quick` is one 3 s round of `h1`, `h1-100k` and
//! `h2-tls`, for smoke checks.
//!
//! The report ends with one line to track over time,
//! `bench ratios vs nginx: h1-1k=R h1-100k=R h2-1k=R idle-mem=R` (proxy-bin / nginx in
//! requests/s; `-` for a case not run or not measured yet), and the whole run is written as
//! JSON to `target/bench/compare-UNIXTIME.json`.

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::loadgen;
use crate::process::{self, ChildGuard, TempDir};

/// wrk connections, as in nginx's upstream `keepalive 64`.
const CONNECTIONS: u32 = 64;

/// h2load and loadgen: connections, and concurrent streams on each.
const MUX_CONNECTIONS: u32 = 16;
const MUX_STREAMS: u32 = 10;

/// Warm-up per target.
const WARMUP_SECS: u64 = 2;

/// Size of the origin's response body.
const BODY_BYTES: usize = 1024;

/// Size of the origin's large response body, and its path.
const LARGE_BODY_BYTES: usize = 100 * 1024;
const LARGE_PATH: &str = "/100k";

/// The name every target serves (certificate, SNI, `:authority`).
const HOST: &str = "bench.test";

/// Runs the command; `Ok(false)` when the benchmark command failed.
pub(crate) fn run(args: &[String]) -> Result<bool> {
    if !args.iter().any(|a| a == "--compare") {
        let status = process::cargo()?
            .args(["bench", "-p", "proxy-core", "-p", "proxy-cache"])
            .args(args)
            .status()
            .context("running cargo bench")?;
        return Ok(status.success());
    }
    let mut options = Options {
        duration_secs: 10,
        rounds: 3,
        cases: Scenario::ALL.to_vec(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--compare" => {}
            "--quick" => {
                options.duration_secs = 3;
                options.rounds = 1;
                options.cases = vec![Scenario::Http1, Scenario::Http1Large, Scenario::Http2Tls];
            }
            "--duration" => {
                let value = args.next().context("--duration needs a value (seconds)")?;
                options.duration_secs = value
                    .trim_end_matches('s')
                    .parse()
                    .with_context(|| format!("--duration {value}: expected seconds"))?;
                ensure!(
                    (1..=600).contains(&options.duration_secs),
                    "--duration must be 1..=600 s"
                );
            }
            "--rounds" => {
                let value = args.next().context("--rounds needs a value")?;
                options.rounds = value.parse().with_context(|| format!("--rounds {value}"))?;
                ensure!(
                    (1..=20).contains(&options.rounds),
                    "--rounds must be 1..=20"
                );
            }
            "--cases" => {
                let value = args
                    .next()
                    .context("--cases needs a value (h1,h1-100k,h2-tls,h3,h2-lg,cache)")?;
                options.cases = value
                    .split(',')
                    .map(|name| {
                        Scenario::ALL
                            .into_iter()
                            .find(|s| s.name() == name.trim())
                            .with_context(|| {
                                format!(
                                    "--cases: unknown case `{name}` (h1, h1-100k, h2-tls, h3, h2-lg, cache)"
                                )
                            })
                    })
                    .collect::<Result<_>>()?;
            }
            other => bail!(
                "unknown argument `{other}` with --compare \
                 (expected --quick, --duration SECS, --rounds N, --cases h1,h1-100k,h2-tls,h3,h2-lg,cache)"
            ),
        }
    }
    compare(&options)
}

struct Options {
    duration_secs: u64,
    rounds: usize,
    /// The cases to run, in this order.
    cases: Vec<Scenario>,
}

impl Options {
    fn runs(&self, scenario: Scenario) -> bool {
        self.cases.contains(&scenario)
    }

    fn uses_loadgen(&self) -> bool {
        self.cases.iter().any(|s| s.client() == "loadgen")
    }
}

/// A proxy under test.
struct Target<'a> {
    name: &'static str,
    /// The cleartext HTTP/1.1 port, where it has one.
    port: Option<u16>,
    /// The TLS (HTTP/2) port; HTTP/3 on the same UDP port where it serves that.
    tls_port: u16,
    guard: &'a ChildGuard,
    /// nginx: count the master's children (the workers) too.
    with_children: bool,
    /// The cases it takes part in.
    cases: &'static [Scenario],
}

/// One load run against one target.
struct Sample {
    round: usize,
    scenario: Scenario,
    target: &'static str,
    requests_per_sec: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    cpu_us_per_request: f64,
    /// Proxy CPU time over wall time, in percent.
    cpu_percent: f64,
    notes: String,
}

/// What is measured: the protocol and the load generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// HTTP/1.1 keep-alive, cleartext, wrk.
    Http1,
    /// The same with a 100 KiB body.
    Http1Large,
    /// HTTP/2 over TLS, h2load.
    Http2Tls,
    /// HTTP/3 over QUIC, loadgen.
    Http3,
    /// HTTP/2 over TLS, loadgen.
    Http2Loadgen,
    /// HTTP/1.1 keep-alive, wrk, on a path both proxies serve from their caches.
    CacheHit,
}

impl Scenario {
    const ALL: [Scenario; 6] = [
        Scenario::Http1,
        Scenario::Http1Large,
        Scenario::Http2Tls,
        Scenario::Http3,
        Scenario::Http2Loadgen,
        Scenario::CacheHit,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Http1 => "h1",
            Scenario::Http1Large => "h1-100k",
            Scenario::Http2Tls => "h2-tls",
            Scenario::Http3 => "h3",
            Scenario::Http2Loadgen => "h2-lg",
            Scenario::CacheHit => "cache",
        }
    }

    /// The server proxy-bin is compared with.
    fn baseline(self) -> &'static str {
        match self {
            Scenario::Http1 | Scenario::Http1Large | Scenario::Http2Tls | Scenario::CacheHit => {
                "nginx"
            }
            Scenario::Http3 | Scenario::Http2Loadgen => "caddy",
        }
    }

    fn client(self) -> &'static str {
        match self {
            Scenario::Http1 | Scenario::Http1Large | Scenario::CacheHit => "wrk",
            Scenario::Http2Tls => "h2load",
            Scenario::Http3 | Scenario::Http2Loadgen => "loadgen",
        }
    }
}

fn compare(options: &Options) -> Result<bool> {
    let mut needed = vec!["nginx", "openssl"];
    if options.runs(Scenario::Http1)
        || options.runs(Scenario::Http1Large)
        || options.runs(Scenario::CacheHit)
    {
        needed.push("wrk");
    }
    if options.runs(Scenario::Http2Tls) {
        needed.push("h2load");
    }
    let missing: Vec<&str> = needed
        .into_iter()
        .filter(|tool| !process::on_path(tool))
        .collect();
    if !missing.is_empty() {
        bail!(
            "bench --compare needs {} on PATH; install with \
             `apt-get install nginx wrk nghttp2-client openssl` (xtask does not install anything)",
            missing.join(" and ")
        );
    }
    let caddy = options.uses_loadgen() && process::on_path("caddy");
    if options.uses_loadgen() && !caddy {
        println!(
            "bench: caddy is not on PATH, so the h3 and h2-lg cases measure proxy-bin alone \
             (install with `apt-get install caddy`; xtask does not install anything)"
        );
    }
    let pin = std::thread::available_parallelism().map_or(1, usize::from) >= 2
        && process::on_path("taskset");
    if pin {
        println!("bench: pinning proxies to CPU 0, origin and load generators to CPU 1 (taskset)");
    } else {
        println!("bench: not pinning (needs taskset and at least 2 CPUs)");
    }

    let binary = process::build_proxy_bin(true)?;
    let loadgen = if options.uses_loadgen() {
        Some(build_release_xtask()?)
    } else {
        None
    };
    let mut temp = TempDir::new("bench")?;
    let tools = Tools {
        proxy_bin: &binary,
        loadgen: loadgen.as_deref(),
        caddy,
    };
    let outcome = measure(options, &tools, temp.path(), pin);
    if outcome.is_err() {
        temp.keep();
        eprintln!("bench: configs and logs kept in {}", temp.path().display());
    }
    outcome
}

/// What `measure` runs.
struct Tools<'a> {
    proxy_bin: &'a Path,
    /// The release `xtask` binary, for `xtask loadgen`.
    loadgen: Option<&'a Path>,
    /// Whether to start Caddy.
    caddy: bool,
}

/// `cargo build --release -p xtask`: a debug load generator would measure itself.
fn build_release_xtask() -> Result<PathBuf> {
    let status = process::cargo()?
        .args(["build", "--release", "-p", "xtask"])
        .status()
        .context("running cargo build --release -p xtask")?;
    ensure!(
        status.success(),
        "cargo build --release -p xtask failed ({status})"
    );
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => process::workspace_root()?.join("target"),
    };
    let binary = target
        .join("release")
        .join(format!("xtask{}", std::env::consts::EXE_SUFFIX));
    ensure!(binary.is_file(), "{} does not exist", binary.display());
    Ok(binary)
}

/// Starts the servers in `dir`, loads them and prints the report.
fn measure(options: &Options, tools: &Tools<'_>, dir: &Path, pin: bool) -> Result<bool> {
    let proxy_core = pin.then_some(0);
    let load_core = pin.then_some(1);
    let [
        origin_port,
        nginx_port,
        proxy_port,
        nginx_tls_port,
        proxy_tls_port,
        caddy_tls_port,
    ] = process::free_ports()?;
    let (cert, key) = self_signed(dir)?;

    let mut origin = start_nginx(dir, "origin", &origin_conf(dir, origin_port)?, load_core)?;
    origin.wait_for_port(origin_port, Duration::from_secs(10))?;
    let mut nginx = start_nginx(
        dir,
        "nginx-proxy",
        &nginx_proxy_conf(
            dir,
            [nginx_port, nginx_tls_port],
            origin_port,
            (&cert, &key),
        ),
        proxy_core,
    )?;
    nginx.wait_for_port(nginx_port, Duration::from_secs(10))?;
    let caddy = if tools.caddy {
        let mut caddy = start_caddy(
            dir,
            &caddy_conf(caddy_tls_port, origin_port, (&cert, &key)),
            proxy_core,
        )?;
        caddy
            .wait_for_port(caddy_tls_port, Duration::from_secs(30))
            .with_context(|| format!("see {}", dir.join("caddy.log").display()))?;
        Some(caddy)
    } else {
        None
    };
    let config = dir.join("proxy-bin.toml");
    fs::write(
        &config,
        proxy_bin_conf([proxy_port, proxy_tls_port], origin_port, (&cert, &key)),
    )?;
    let mut command = pinned(proxy_core, &tools.proxy_bin.to_string_lossy());
    command.arg("run").arg("--config").arg(&config);
    let mut proxy =
        ChildGuard::spawn_logged(&mut command, "proxy-bin", true, &dir.join("proxy-bin.log"))?;
    proxy
        .wait_for_port(proxy_port, Duration::from_secs(30))
        .with_context(|| format!("see {}", dir.join("proxy-bin.log").display()))?;

    let mut targets = vec![Target {
        name: "nginx",
        port: Some(nginx_port),
        tls_port: nginx_tls_port,
        guard: &nginx,
        with_children: true,
        cases: &[
            Scenario::Http1,
            Scenario::Http1Large,
            Scenario::Http2Tls,
            Scenario::CacheHit,
        ],
    }];
    if let Some(caddy) = &caddy {
        targets.push(Target {
            name: "caddy",
            port: None,
            tls_port: caddy_tls_port,
            guard: caddy,
            with_children: false,
            cases: &[Scenario::Http3, Scenario::Http2Loadgen],
        });
    }
    targets.push(Target {
        name: "proxy-bin",
        port: Some(proxy_port),
        tls_port: proxy_tls_port,
        guard: &proxy,
        with_children: false,
        cases: &Scenario::ALL,
    });
    let runs = |scenario: Scenario| {
        targets
            .iter()
            .filter(move |t| t.cases.contains(&scenario))
            .collect::<Vec<_>>()
    };
    for target in &targets {
        if let Some(port) = target.port {
            sanity_check(port).with_context(|| format!("{} is not serving", target.name))?;
        }
    }
    if options.runs(Scenario::CacheHit) {
        // Both proxies must answer the cached path from storage, or the case measures misses.
        for (target, needle) in [
            (&nginx_port, "X-Cache: HIT"),
            (&proxy_port, "proxy-bin; hit"),
        ] {
            cache_check(*target, needle)?;
        }
    }
    for &scenario in &options.cases {
        for target in runs(scenario) {
            let warm = load(scenario, target, WARMUP_SECS, load_core, tools.loadgen)
                .with_context(|| format!("{} warm-up, {}", target.name, scenario.name()))?;
            ensure!(
                warm.requests > 0 && warm.complete,
                "{} warm-up, {}: {} full 200 responses ({})",
                target.name,
                scenario.name(),
                warm.requests,
                warm.notes
            );
        }
    }
    let ticks = clock_ticks();
    let mut samples = Vec::new();
    for round in 1..=options.rounds {
        for &scenario in &options.cases {
            for target in runs(scenario) {
                let before = cpu_ticks(target)?;
                let started = Instant::now();
                let result = load(
                    scenario,
                    target,
                    options.duration_secs,
                    load_core,
                    tools.loadgen,
                )?;
                let wall = started.elapsed().as_secs_f64();
                let after = cpu_ticks(target)?;
                let cpu_secs = after.saturating_sub(before) as f64 / ticks;
                let sample = Sample {
                    round,
                    scenario,
                    target: target.name,
                    requests_per_sec: result.requests_per_sec,
                    p50_ms: result.p50_ms,
                    p99_ms: result.p99_ms,
                    cpu_us_per_request: if result.requests > 0 {
                        cpu_secs * 1e6 / result.requests as f64
                    } else {
                        f64::NAN
                    },
                    cpu_percent: cpu_secs * 100.0 / wall,
                    notes: result.notes,
                };
                println!(
                    "bench: round {round} {:<7} {:<9} {:>10.0} req/s {:>8.1} µs CPU/req \
                     {:>4.0}% CPU {}",
                    scenario.name(),
                    sample.target,
                    sample.requests_per_sec,
                    sample.cpu_us_per_request,
                    sample.cpu_percent,
                    sample.notes
                );
                samples.push(sample);
            }
        }
    }
    let rss: Vec<(&str, Option<u64>)> = targets.iter().map(|t| (t.name, peak_rss_kib(t))).collect();
    drop(proxy);
    drop(caddy);
    drop(nginx);
    drop(origin);
    print!("{}", report(&samples, &options.cases, &rss));
    match write_json(&samples, &rss) {
        Ok(path) => println!("bench: results written to {}", path.display()),
        Err(e) => println!("bench: results not written: {e:#}"),
    }
    // Last, so that it can be tracked.
    println!("{}", summary_line(&samples));
    Ok(true)
}

/// The per-run table; per case and target the medians over the rounds, with the median of
/// the per-round ratios to the case's comparison server; proxy-bin's HTTP/3 against its
/// HTTP/2 from the same client; peak RSS.
fn report(samples: &[Sample], cases: &[Scenario], rss: &[(&str, Option<u64>)]) -> String {
    let mut out = String::new();
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    let _ = writeln!(
        out,
        "\n{:<6} {:<7} {:<10} {:>10} {:>8} {:>8} {:>11} {:>6}  notes",
        "round", "case", "target", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "CPU %"
    );
    for s in samples {
        let _ = writeln!(
            out,
            "{:<6} {:<7} {:<10} {:>10.0} {:>8} {:>8} {:>11.2} {:>6.0}  {}",
            s.round,
            s.scenario.name(),
            s.target,
            s.requests_per_sec,
            ms(s.p50_ms),
            ms(s.p99_ms),
            s.cpu_us_per_request,
            s.cpu_percent,
            s.notes
        );
    }
    let rounds = samples.iter().map(|s| s.round).max().unwrap_or(0);
    let find = |round: usize, scenario: Scenario, target: &str| {
        samples
            .iter()
            .find(|s| s.round == round && s.scenario == scenario && s.target == target)
    };
    // Median over the rounds of metric(a) / metric(b).
    let ratio = |a: (Scenario, &str), b: (Scenario, &str), metric: fn(&Sample) -> f64| {
        median(
            (1..=rounds)
                .filter_map(|round| {
                    Some(metric(find(round, a.0, a.1)?) / metric(find(round, b.0, b.1)?))
                })
                .collect(),
        )
    };
    let times = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"));
    let _ = writeln!(
        out,
        "\nmedians over {rounds} round(s); ratios are medians of per-round ratios to the \
         case's comparison server\n{:<7} {:<8} {:<10} {:>10} {:>8} {:>8} {:>11} {:>6} {:>11} {:>11}",
        "case",
        "client",
        "target",
        "req/s",
        "p50 ms",
        "p99 ms",
        "CPU µs/req",
        "CPU %",
        "req/s ratio",
        "CPU ratio"
    );
    for &scenario in cases {
        let mut targets: Vec<&str> = Vec::new();
        for s in samples.iter().filter(|s| s.scenario == scenario) {
            if !targets.contains(&s.target) {
                targets.push(s.target);
            }
        }
        for target in targets {
            let of = |metric: fn(&Sample) -> Option<f64>| {
                median(
                    samples
                        .iter()
                        .filter(|s| s.scenario == scenario && s.target == target)
                        .filter_map(metric)
                        .collect(),
                )
            };
            let baseline = (scenario, scenario.baseline());
            let (rps_ratio, cpu_ratio) = if target == scenario.baseline() {
                (Some(1.0), Some(1.0))
            } else {
                (
                    ratio((scenario, target), baseline, |s| s.requests_per_sec),
                    ratio((scenario, target), baseline, |s| s.cpu_us_per_request),
                )
            };
            let _ = writeln!(
                out,
                "{:<7} {:<8} {:<10} {:>10.0} {:>8} {:>8} {:>11.2} {:>6.0} {:>11} {:>11}",
                scenario.name(),
                scenario.client(),
                target,
                of(|s| Some(s.requests_per_sec)).unwrap_or(f64::NAN),
                ms(of(|s| s.p50_ms)),
                ms(of(|s| s.p99_ms)),
                of(|s| Some(s.cpu_us_per_request)).unwrap_or(f64::NAN),
                of(|s| Some(s.cpu_percent)).unwrap_or(f64::NAN),
                times(rps_ratio),
                times(cpu_ratio),
            );
        }
    }
    for target in ["proxy-bin", "caddy"] {
        let h3 = (Scenario::Http3, target);
        let h2 = (Scenario::Http2Loadgen, target);
        if let Some(rps) = ratio(h3, h2, |s| s.requests_per_sec) {
            let _ = writeln!(
                out,
                "{target}: HTTP/3 / HTTP/2 (same client, loadgen): req/s {}, CPU µs/req {}",
                times(Some(rps)),
                times(ratio(h3, h2, |s| s.cpu_us_per_request)),
            );
        }
    }
    for (name, kib) in rss {
        if let Some(kib) = kib {
            let _ = writeln!(out, "{name}: peak RSS {:.1} MiB", *kib as f64 / 1024.0);
        }
    }
    out
}

/// The median over the rounds of proxy-bin's requests/s over nginx's for `scenario`.
fn rps_ratio_to_nginx(samples: &[Sample], scenario: Scenario) -> Option<f64> {
    let rounds = samples.iter().map(|s| s.round).max().unwrap_or(0);
    let rps = |round: usize, target: &str| {
        samples
            .iter()
            .find(|s| s.round == round && s.scenario == scenario && s.target == target)
            .map(|s| s.requests_per_sec)
    };
    median(
        (1..=rounds)
            .filter_map(|round| Some(rps(round, "proxy-bin")? / rps(round, "nginx")?))
            .collect(),
    )
}

/// `bench ratios vs nginx: h1-1k=R h1-100k=R h2-1k=R idle-mem=R`; idle connection memory is
/// not measured by this harness yet, so it is always `-`.
fn summary_line(samples: &[Sample]) -> String {
    let r = |scenario| {
        rps_ratio_to_nginx(samples, scenario).map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"))
    };
    format!(
        "bench ratios vs nginx: h1-1k={} h1-100k={} h2-1k={} idle-mem=-",
        r(Scenario::Http1),
        r(Scenario::Http1Large),
        r(Scenario::Http2Tls)
    )
}

/// Writes every sample, the peak RSS and the summary ratios as JSON under `target/bench/`.
fn write_json(samples: &[Sample], rss: &[(&str, Option<u64>)]) -> Result<PathBuf> {
    let num = |v: Option<f64>| match v {
        Some(v) if v.is_finite() => format!("{v:.3}"),
        _ => "null".to_owned(),
    };
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = String::from("{\n  \"samples\": [\n");
    for (i, s) in samples.iter().enumerate() {
        let _ = writeln!(
            out,
            "    {{\"round\": {}, \"case\": \"{}\", \"target\": \"{}\", \"requests_per_sec\": {}, \
             \"p50_ms\": {}, \"p99_ms\": {}, \"cpu_us_per_request\": {}, \"cpu_percent\": {}, \
             \"notes\": \"{}\"}}{}",
            s.round,
            s.scenario.name(),
            s.target,
            num(Some(s.requests_per_sec)),
            num(s.p50_ms),
            num(s.p99_ms),
            num(Some(s.cpu_us_per_request)),
            num(Some(s.cpu_percent)),
            esc(&s.notes),
            if i + 1 < samples.len() { "," } else { "" }
        );
    }
    out.push_str("  ],\n  \"peak_rss_kib\": {");
    let rss: Vec<String> = rss
        .iter()
        .map(|(name, kib)| {
            format!(
                "\"{name}\": {}",
                kib.map_or("null".to_owned(), |k| k.to_string())
            )
        })
        .collect();
    out.push_str(&rss.join(", "));
    let _ = write!(
        out,
        "}},\n  \"ratios_vs_nginx\": {{\"h1-1k\": {}, \"h1-100k\": {}, \"h2-1k\": {}, \"idle-mem\": null}}\n}}\n",
        num(rps_ratio_to_nginx(samples, Scenario::Http1)),
        num(rps_ratio_to_nginx(samples, Scenario::Http1Large)),
        num(rps_ratio_to_nginx(samples, Scenario::Http2Tls)),
    );
    let dir = process::workspace_root()?.join("target").join("bench");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let path = dir.join(format!("compare-{secs}.json"));
    fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The median of the finite values (the upper one of an even count), `None` when none.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// `taskset -c CORE program` when pinning, else `program`.
fn pinned(core: Option<usize>, program: &str) -> Command {
    match core {
        Some(core) => {
            let mut command = Command::new("taskset");
            command.args(["-c", &core.to_string(), program]);
            command
        }
        None => Command::new(program),
    }
}

fn start_nginx(dir: &Path, name: &str, conf: &str, core: Option<usize>) -> Result<ChildGuard> {
    let conf_path = dir.join(format!("{name}.conf"));
    fs::write(&conf_path, conf).with_context(|| format!("writing {}", conf_path.display()))?;
    let mut command = pinned(core, "nginx");
    command
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(dir.join(format!("{name}-error.log")))
        .args(["-g", "daemon off;"]);
    ChildGuard::spawn_logged(&mut command, name, true, &dir.join(format!("{name}.out")))
}

/// Caddy with one Go scheduler thread (`GOMAXPROCS=1`, like nginx's one worker), its
/// state under `dir` and its output in `dir/caddy.log`.
fn start_caddy(dir: &Path, conf: &str, core: Option<usize>) -> Result<ChildGuard> {
    let conf_path = dir.join("Caddyfile");
    fs::write(&conf_path, conf).with_context(|| format!("writing {}", conf_path.display()))?;
    let mut command = pinned(core, "caddy");
    command
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&conf_path)
        .env("GOMAXPROCS", "1")
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("caddy-data"))
        .env("XDG_CONFIG_HOME", dir.join("caddy-config"));
    ChildGuard::spawn_logged(&mut command, "caddy", true, &dir.join("caddy.log"))
}

/// Caddy (2.6 Caddyfile) as a reverse proxy on `tls_port`: HTTP/1.1 and HTTP/2 over TLS on
/// TCP, HTTP/3 on UDP; the same certificate as the others; no admin endpoint, no automatic
/// HTTPS, errors-only logging (no access log); upstream keep-alive like nginx's 64.
fn caddy_conf(tls_port: u16, origin_port: u16, (cert, key): (&Path, &Path)) -> String {
    format!(
        "# Written by `cargo xtask bench --compare`.\n\
         {{\n\tadmin off\n\tauto_https off\n\tlog {{\n\t\tlevel ERROR\n\t}}\n\t\
         servers {{\n\t\tprotocols h1 h2 h3\n\t}}\n}}\n\n\
         https://{HOST}:{tls_port} {{\n\tbind 127.0.0.1\n\ttls {} {}\n\t\
         reverse_proxy 127.0.0.1:{origin_port} {{\n\t\ttransport http {{\n\t\t\t\
         keepalive 60s\n\t\t\tkeepalive_idle_conns 64\n\t\t\t\
         keepalive_idle_conns_per_host 64\n\t\t}}\n\t}}\n}}\n",
        cert.display(),
        key.display(),
    )
}

/// Directives every generated nginx.conf shares: one worker, files in `dir`.
fn nginx_common(dir: &Path, name: &str) -> String {
    let d = dir.display();
    format!(
        "worker_processes 1;\n\
         pid {d}/{name}.pid;\n\
         error_log {d}/{name}-error.log warn;\n\
         events {{ worker_connections 4096; }}\n"
    )
}

fn nginx_http_common(dir: &Path, name: &str) -> String {
    let d = dir.display();
    format!(
        "    access_log off;\n\
         \x20   keepalive_requests 1000000;\n\
         \x20   client_body_temp_path {d}/{name}-body;\n\
         \x20   proxy_temp_path {d}/{name}-proxy;\n\
         \x20   fastcgi_temp_path {d}/{name}-fastcgi;\n\
         \x20   uwsgi_temp_path {d}/{name}-uwsgi;\n\
         \x20   scgi_temp_path {d}/{name}-scgi;\n"
    )
}

fn origin_conf(dir: &Path, port: u16) -> Result<String> {
    let body: String = (b'a'..=b'z')
        .cycle()
        .take(BODY_BYTES)
        .map(char::from)
        .collect();
    let large: String = (b'a'..=b'z')
        .cycle()
        .take(LARGE_BODY_BYTES)
        .map(char::from)
        .collect();
    let large_file = dir.join("100k.txt");
    fs::write(&large_file, large).context("writing the origin's 100 KiB body")?;
    Ok(format!(
        "{}http {{\n{}    server {{\n        listen 127.0.0.1:{port};\n        \
         default_type text/plain;\n        location / {{ return 200 \"{body}\"; }}\n        \
         location = {LARGE_PATH} {{ alias {}; }}\n        \
         location /cached/ {{ add_header Cache-Control \"public, max-age=3600\"; \
         return 200 \"{body}\"; }}\n    }}\n}}\n",
        nginx_common(dir, "origin"),
        nginx_http_common(dir, "origin"),
        large_file.display(),
    ))
}

fn nginx_proxy_conf(
    dir: &Path,
    [port, tls_port]: [u16; 2],
    origin_port: u16,
    (cert, key): (&Path, &Path),
) -> String {
    format!(
        "{}http {{\n{}    proxy_cache_path {}/nginx-cache keys_zone=hits:16m max_size=256m;\n    \
         upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 64; }}\n    \
         server {{\n        listen 127.0.0.1:{port};\n        \
         listen 127.0.0.1:{tls_port} ssl http2;\n        \
         ssl_certificate {};\n        ssl_certificate_key {};\n        \
         http2_max_concurrent_streams 128;\n        location / {{\n            \
         proxy_pass http://origin;\n            proxy_http_version 1.1;\n            \
         proxy_set_header Connection \"\";\n        }}\n        \
         location /cached/ {{\n            proxy_pass http://origin;\n            \
         proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n            \
         proxy_cache hits;\n            add_header X-Cache $upstream_cache_status;\n        \
         }}\n    }}\n}}\n",
        nginx_common(dir, "nginx-proxy"),
        nginx_http_common(dir, "nginx-proxy"),
        dir.display(),
        cert.display(),
        key.display(),
    )
}

fn proxy_bin_conf(
    [port, tls_port]: [u16; 2],
    origin_port: u16,
    (cert, key): (&Path, &Path),
) -> String {
    format!(
        "# Written by `cargo xtask bench --compare`. No access log, as for nginx.\n\
         [log]\naccess_log = \"off\"\n\n\
         [[listeners]]\naddress = \"127.0.0.1:{port}\"\n\n\
         [[listeners]]\naddress = \"127.0.0.1:{tls_port}\"\nhttp3 = true\n\
         [listeners.tls]\nallow_domain_fronting = true\n\
         certificates = [{{ names = [\"bench.test\"], cert = \"{}\", key = \"{}\" }}]\n\n\
         [upstreams.origin]\nendpoints = [\"127.0.0.1:{origin_port}\"]\n\n\
         [[servers]]\nnames = [\"bench.test\"]\ndefault = true\n\n\
         [[servers.routes]]\nprefix = \"/cached/\"\nupstream = \"origin\"\ncache = true\n\n\
         [[servers.routes]]\nprefix = \"/\"\nupstream = \"origin\"\n",
        cert.display(),
        key.display(),
    )
}

/// An ECDSA P-256 certificate for [`HOST`] (what every proxy serves over TLS).
fn self_signed(dir: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let (cert, key) = (dir.join("bench-cert.pem"), dir.join("bench-key.pem"));
    let mut command = Command::new("openssl");
    command
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=bench.test"])
        .args(["-addext", "subjectAltName=DNS:bench.test"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert);
    let finished = process::run_bounded(&mut command, Duration::from_secs(30))?;
    ensure!(
        finished.status.success(),
        "openssl req failed: {}",
        finished.stderr
    );
    Ok((cert, key))
}

/// The path both proxies cache in the `cache` case (the origin marks it `max-age=3600`).
const CACHED_PATH: &str = "/cached/1k";

/// Two GETs of [`CACHED_PATH`]: the second must come from the proxy's cache, which it shows
/// with `needle` in its response head.
fn cache_check(port: u16, needle: &str) -> Result<()> {
    let mut last = String::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(
            format!("GET {CACHED_PATH} HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        last = String::from_utf8_lossy(&response).into_owned();
        std::thread::sleep(Duration::from_millis(100));
    }
    let head = last.split("\r\n\r\n").next().unwrap_or_default();
    ensure!(
        head.to_ascii_lowercase()
            .contains(&needle.to_ascii_lowercase()),
        "port {port}: the second GET {CACHED_PATH} was not a cache hit:\n{head}"
    );
    Ok(())
}

/// One `GET /` must come back `200` with the origin's body size, or the numbers mean nothing.
fn sanity_check(port: u16) -> Result<()> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    ensure!(
        text.starts_with("HTTP/1.1 200") && response.len() > BODY_BYTES,
        "GET / answered {:?}",
        text.lines().next().unwrap_or_default()
    );
    Ok(())
}

/// What one load run measured.
struct LoadResult {
    requests: u64,
    requests_per_sec: f64,
    /// Latency percentiles, where the client reports them.
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// loadgen: no errors and every body at least the origin's size. (Checked after warm-up:
    /// Caddy, for one, answers an unknown host with an empty `200`.)
    complete: bool,
    notes: String,
}

/// One load run of `scenario` against `target`.
fn load(
    scenario: Scenario,
    target: &Target<'_>,
    secs: u64,
    core: Option<usize>,
    loadgen: Option<&Path>,
) -> Result<LoadResult> {
    let loadgen = || loadgen.context("the release xtask binary was not built");
    match scenario {
        Scenario::Http1 => wrk(
            target.port.context("no cleartext HTTP/1.1 port")?,
            "/",
            secs,
            core,
        ),
        Scenario::Http1Large => wrk(
            target.port.context("no cleartext HTTP/1.1 port")?,
            LARGE_PATH,
            secs,
            core,
        ),
        Scenario::CacheHit => wrk(
            target.port.context("no cleartext HTTP/1.1 port")?,
            CACHED_PATH,
            secs,
            core,
        ),
        Scenario::Http2Tls => h2load(target.tls_port, secs, core),
        Scenario::Http3 => run_loadgen(
            loadgen()?,
            loadgen::Protocol::H3,
            target.tls_port,
            secs,
            core,
        ),
        Scenario::Http2Loadgen => run_loadgen(
            loadgen()?,
            loadgen::Protocol::H2,
            target.tls_port,
            secs,
            core,
        ),
    }
}

/// `xtask loadgen` (release build) against `https://127.0.0.1:PORT/` as [`HOST`]: one
/// thread, 16 connections, 10 streams each, like h2load.
fn run_loadgen(
    binary: &Path,
    protocol: loadgen::Protocol,
    port: u16,
    secs: u64,
    core: Option<usize>,
) -> Result<LoadResult> {
    let mut command = pinned(core, &binary.to_string_lossy());
    command.args([
        "loadgen".to_owned(),
        "--protocol".to_owned(),
        protocol.name().to_owned(),
        "--url".to_owned(),
        format!("https://127.0.0.1:{port}/"),
        "--host".to_owned(),
        HOST.to_owned(),
        "--connections".to_owned(),
        MUX_CONNECTIONS.to_string(),
        "--streams".to_owned(),
        MUX_STREAMS.to_string(),
        "--threads".to_owned(),
        "1".to_owned(),
        "--duration".to_owned(),
        secs.to_string(),
    ]);
    let finished = process::run_bounded(&mut command, Duration::from_secs(secs + 60))?;
    let summary = loadgen::Summary::parse(&finished.stdout).with_context(|| {
        format!(
            "loadgen {} ({}): {}",
            protocol.name(),
            finished.status,
            finished.stderr.trim()
        )
    })?;
    let bytes: u64 = summary
        .field("bytes")
        .and_then(|b| b.parse().ok())
        .unwrap_or(0);
    let mut notes = Vec::new();
    if summary.errors > 0 {
        notes.push(format!(
            "{} errors (non200 {}, failed {}, timeouts {})",
            summary.errors,
            summary.field("non200").unwrap_or("?"),
            summary.field("failed").unwrap_or("?"),
            summary.field("timeouts").unwrap_or("?"),
        ));
        if let Some(first) = finished
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("loadgen: first error: "))
        {
            notes.push(format!("first: {first}"));
        }
    }
    if let Some(pct) = summary.field("client_cpu_pct") {
        notes.push(format!("client {pct}% CPU"));
    }
    if let Some(n) = summary.field("reconnects").filter(|n| *n != "0") {
        notes.push(format!("{n} reconnects"));
    }
    let full_bodies = bytes >= summary.requests * BODY_BYTES as u64;
    if !full_bodies {
        notes.push(format!(
            "short bodies: {bytes} bytes for {} responses",
            summary.requests
        ));
    }
    let finite = |v: f64| v.is_finite().then_some(v);
    Ok(LoadResult {
        requests: summary.requests,
        requests_per_sec: summary.rps,
        p50_ms: finite(summary.p50_ms),
        p99_ms: finite(summary.p99_ms),
        complete: summary.errors == 0 && full_bodies,
        notes: notes.join("; "),
    })
}

/// h2load over TLS (ALPN h2): one thread, 16 connections, 10 streams each.
fn h2load(port: u16, secs: u64, core: Option<usize>) -> Result<LoadResult> {
    let mut command = pinned(core, "h2load");
    command.args([
        "-t1".to_owned(),
        format!("-c{MUX_CONNECTIONS}"),
        format!("-m{MUX_STREAMS}"),
        format!("-D{secs}"),
        "-H".to_owned(),
        format!(":authority: {HOST}"),
        format!("https://127.0.0.1:{port}/"),
    ]);
    let finished = process::run_bounded(&mut command, Duration::from_secs(secs + 30))?;
    ensure!(
        finished.status.success(),
        "h2load failed ({}): {}",
        finished.status,
        finished.stderr
    );
    parse_h2load(&finished.stdout)
}

/// Reads `finished in Xs, R req/s` and `requests: N total, .. S succeeded, F failed` from
/// h2load's report (which has no latency percentiles).
fn parse_h2load(output: &str) -> Result<LoadResult> {
    let mut requests = None;
    let mut requests_per_sec = None;
    let mut notes = Vec::new();
    for line in output.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            requests_per_sec = rest
                .split(", ")
                .find_map(|part| part.strip_suffix(" req/s"))
                .and_then(|r| r.trim().parse().ok());
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            for part in rest.split(", ") {
                if let Some(n) = part.strip_suffix(" succeeded") {
                    requests = n.trim().parse().ok();
                } else if let Some(n) = part.strip_suffix(" failed")
                    && n.trim() != "0"
                {
                    notes.push(format!("{} failed", n.trim()));
                }
            }
        } else if let Some(rest) = line.strip_prefix("status codes: ")
            && !rest.contains(" 0 3xx, 0 4xx, 0 5xx")
        {
            notes.push(format!("status codes: {rest}"));
        }
    }
    match (requests, requests_per_sec) {
        (Some(requests), Some(requests_per_sec)) => Ok(LoadResult {
            requests,
            requests_per_sec,
            p50_ms: None,
            p99_ms: None,
            complete: true,
            notes: notes.join("; "),
        }),
        _ => bail!("cannot read h2load's report:\n{output}"),
    }
}

fn wrk(port: u16, path: &str, secs: u64, core: Option<usize>) -> Result<LoadResult> {
    let mut command = pinned(core, "wrk");
    command.args([
        "-t1".to_owned(),
        format!("-c{CONNECTIONS}"),
        format!("-d{secs}s"),
        "--latency".to_owned(),
        format!("http://127.0.0.1:{port}{path}"),
    ]);
    let finished = process::run_bounded(&mut command, Duration::from_secs(secs + 30))?;
    ensure!(
        finished.status.success(),
        "wrk failed ({}): {}",
        finished.status,
        finished.stderr
    );
    parse_wrk(&finished.stdout)
}

/// Reads `N requests in ...`, `Requests/sec: X`, the `50%` and `99%` lines of the latency
/// distribution (`--latency`) and error lines from wrk's report.
fn parse_wrk(output: &str) -> Result<LoadResult> {
    let mut requests = None;
    let mut requests_per_sec = None;
    let (mut p50_ms, mut p99_ms) = (None, None);
    let mut notes = Vec::new();
    for line in output.lines().map(str::trim) {
        if let Some(rate) = line.strip_prefix("Requests/sec:") {
            requests_per_sec = rate.trim().parse().ok();
        } else if line.contains(" requests in ") {
            requests = line.split_whitespace().next().and_then(|n| n.parse().ok());
        } else if line.starts_with("Non-2xx") || line.starts_with("Socket errors") {
            notes.push(line.to_owned());
        } else if let Some(value) = line.strip_prefix("50%") {
            p50_ms = wrk_duration_ms(value.trim());
        } else if let Some(value) = line.strip_prefix("99%") {
            p99_ms = wrk_duration_ms(value.trim());
        }
    }
    match (requests, requests_per_sec) {
        (Some(requests), Some(requests_per_sec)) => Ok(LoadResult {
            requests,
            requests_per_sec,
            p50_ms,
            p99_ms,
            complete: true,
            notes: notes.join("; "),
        }),
        _ => bail!("cannot read wrk's report:\n{output}"),
    }
}

/// wrk's `635.00us`, `1.20ms`, `2.00s` in milliseconds.
fn wrk_duration_ms(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60e3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    number.trim().parse::<f64>().ok().map(|n| n * scale)
}

/// Peak resident set (`VmHWM`) in KiB of the target's process, plus its children's for nginx.
fn peak_rss_kib(target: &Target<'_>) -> Option<u64> {
    let hwm = |pid: u32| -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    let pid = target.guard.id();
    let mut total = hwm(pid)?;
    if target.with_children {
        for child in children(pid) {
            total += hwm(child).unwrap_or(0);
        }
    }
    Some(total)
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().and_then(|s| s.parse().ok()))
        .filter(|&child| stat_fields(child).is_ok_and(|stat| stat.ppid == pid))
        .collect()
}

/// Clock ticks per second for `/proc/PID/stat` times (`getconf CLK_TCK`, else 100).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds (utime+stime, all threads) that process `pid` has used so far.
pub(crate) fn process_cpu_secs(pid: u32) -> Option<f64> {
    let stat = stat_fields(pid).ok()?;
    Some(stat.times as f64 / clock_ticks())
}

/// utime+stime of the target process (all threads), plus its children for nginx.
fn cpu_ticks(target: &Target<'_>) -> Result<u64> {
    let pid = target.guard.id();
    let mut total = stat_fields(pid)?.times;
    if target.with_children {
        for child in children(pid) {
            if let Ok(stat) = stat_fields(child) {
                total += stat.times;
            }
        }
    }
    Ok(total)
}

struct Stat {
    ppid: u32,
    times: u64,
}

/// Parses `ppid` (field 4) and `utime + stime` (fields 14, 15) of `/proc/PID/stat`.
fn stat_fields(pid: u32) -> Result<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; fields after it start at field 3.
    let after = text
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("/proc/{pid}/stat field {n}"))
    };
    Ok(Stat {
        ppid: u32::try_from(field(4)?)?,
        times: field(14)? + field(15)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_report() -> Result<()> {
        let report = "Running 10s test @ http://127.0.0.1:1/\n  1 threads and 64 connections\n\
                      \x20 Latency Distribution\n     50%  635.00us\n     75%    1.20ms\n\
                      \x20    99%    2.50s\n\
                      \x20 123456 requests in 10.00s, 150.00MB read\n\
                      \x20 Non-2xx or 3xx responses: 3\n\
                      Requests/sec:  12345.60\nTransfer/sec:     15.00MB\n";
        let result = parse_wrk(report)?;
        assert_eq!(result.requests, 123_456);
        assert!((result.requests_per_sec - 12_345.6).abs() < 1e-6);
        assert_eq!(result.notes, "Non-2xx or 3xx responses: 3");
        assert!((result.p50_ms.unwrap() - 0.635).abs() < 1e-9);
        assert!((result.p99_ms.unwrap() - 2500.0).abs() < 1e-9);
        Ok(())
    }

    #[test]
    fn parses_h2load_report() -> Result<()> {
        let report = "finished in 10.00s, 45678.90 req/s, 50.00MB/s\n\
                      requests: 456789 total, 456789 started, 456789 done, 456780 succeeded, 9 failed, 0 errored, 0 timeout\n\
                      status codes: 456780 2xx, 0 3xx, 0 4xx, 0 5xx\n";
        let result = parse_h2load(report)?;
        assert_eq!(result.requests, 456_780);
        assert!((result.requests_per_sec - 45_678.9).abs() < 1e-6);
        assert_eq!(result.notes, "9 failed");
        assert_eq!(result.p50_ms, None);
        Ok(())
    }

    #[test]
    fn median_skips_nan() {
        assert_eq!(median(vec![3.0, f64::NAN, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![f64::NAN]), None);
    }

    #[test]
    fn caddyfile_has_h3_and_tls() {
        let conf = caddy_conf(8443, 8080, (Path::new("/c.pem"), Path::new("/k.pem")));
        assert!(conf.contains("protocols h1 h2 h3"));
        assert!(conf.contains("https://bench.test:8443 {"));
        assert!(conf.contains("\ttls /c.pem /k.pem\n"));
        assert!(conf.contains("reverse_proxy 127.0.0.1:8080 {"));
    }

    #[test]
    fn reads_own_stat() -> Result<()> {
        let stat = stat_fields(std::process::id())?;
        assert!(stat.ppid > 0);
        Ok(())
    }
}

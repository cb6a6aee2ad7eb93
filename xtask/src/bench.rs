//! `cargo xtask bench`: the criterion benchmarks of `proxy-core`, or with `--compare` a
//! side-by-side load test of nginx (as reverse proxy) and `proxy-bin` in front of the same
//! nginx origin: HTTP/1.1 keep-alive with wrk, and HTTP/2 over TLS with h2load.
//!
//! Compare order: check tools → build `proxy-bin --release` → self-signed certificate
//! (openssl) → start origin, nginx proxy and proxy-bin, each with a cleartext HTTP/1.1 port and
//! a TLS port with ALPN h2 (pinned with `taskset` when possible: proxies on CPU 0, origin and
//! load generator on CPU 1) → warm each for 2 s → `rounds` rounds alternating nginx, proxy-bin
//! per scenario (`wrk -t1 -c64`, `h2load -t1 -c16 -m10`) → table and median ratios. CPU per
//! request is the proxy's utime+stime delta (from `/proc/PID/stat`, nginx: master plus
//! workers) over the requests.

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::process::{self, ChildGuard, TempDir};

/// wrk connections, as in nginx's upstream `keepalive 64`.
const CONNECTIONS: u32 = 64;

/// Warm-up per target.
const WARMUP_SECS: u64 = 2;

/// Size of the origin's response body.
const BODY_BYTES: usize = 1024;

/// Runs the command; `Ok(false)` when the benchmark command failed.
pub(crate) fn run(args: &[String]) -> Result<bool> {
    if !args.iter().any(|a| a == "--compare") {
        let status = process::cargo()?
            .args(["bench", "-p", "proxy-core", "--bench", "core"])
            .args(args)
            .status()
            .context("running cargo bench")?;
        return Ok(status.success());
    }
    let mut options = Options {
        duration_secs: 10,
        rounds: 3,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--compare" => {}
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
            other => bail!(
                "unknown argument `{other}` with --compare (expected --duration SECS, --rounds N)"
            ),
        }
    }
    compare(&options)
}

struct Options {
    duration_secs: u64,
    rounds: usize,
}

/// A proxy under test.
struct Target<'a> {
    name: &'static str,
    port: u16,
    /// The TLS (HTTP/2) port.
    tls_port: u16,
    guard: &'a ChildGuard,
    /// nginx: count the master's children (the workers) too.
    with_children: bool,
}

/// One wrk run against one target.
struct Sample {
    round: usize,
    scenario: Scenario,
    target: &'static str,
    requests_per_sec: f64,
    cpu_us_per_request: f64,
    notes: String,
}

/// What is measured: the protocol and the load generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// HTTP/1.1 keep-alive, cleartext, wrk.
    Http1,
    /// HTTP/2 over TLS, h2load.
    Http2Tls,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Http1 => "h1",
            Scenario::Http2Tls => "h2-tls",
        }
    }
}

fn compare(options: &Options) -> Result<bool> {
    let missing: Vec<&str> = ["nginx", "wrk", "h2load", "openssl"]
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
    let pin = std::thread::available_parallelism().map_or(1, usize::from) >= 2
        && process::on_path("taskset");
    if pin {
        println!("bench: pinning proxies to CPU 0, origin and wrk to CPU 1 (taskset)");
    } else {
        println!("bench: not pinning (needs taskset and at least 2 CPUs)");
    }

    let binary = process::build_proxy_bin(true)?;
    let mut temp = TempDir::new("bench")?;
    let outcome = measure(options, &binary, temp.path(), pin);
    if outcome.is_err() {
        temp.keep();
        eprintln!("bench: configs and logs kept in {}", temp.path().display());
    }
    outcome
}

/// Starts the three servers in `dir`, loads them and prints the report.
fn measure(options: &Options, binary: &Path, dir: &Path, pin: bool) -> Result<bool> {
    let proxy_core = pin.then_some(0);
    let load_core = pin.then_some(1);
    let [
        origin_port,
        nginx_port,
        proxy_port,
        nginx_tls_port,
        proxy_tls_port,
    ] = process::free_ports()?;
    let (cert, key) = self_signed(dir)?;

    let mut origin = start_nginx(dir, "origin", &origin_conf(dir, origin_port), load_core)?;
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
    let config = dir.join("proxy-bin.toml");
    fs::write(
        &config,
        proxy_bin_conf([proxy_port, proxy_tls_port], origin_port, (&cert, &key)),
    )?;
    let mut command = pinned(proxy_core, &binary.to_string_lossy());
    command.arg("run").arg("--config").arg(&config);
    let mut proxy =
        ChildGuard::spawn_logged(&mut command, "proxy-bin", true, &dir.join("proxy-bin.log"))?;
    proxy
        .wait_for_port(proxy_port, Duration::from_secs(30))
        .with_context(|| format!("see {}", dir.join("proxy-bin.log").display()))?;

    let targets = [
        Target {
            name: "nginx",
            port: nginx_port,
            tls_port: nginx_tls_port,
            guard: &nginx,
            with_children: true,
        },
        Target {
            name: "proxy-bin",
            port: proxy_port,
            tls_port: proxy_tls_port,
            guard: &proxy,
            with_children: false,
        },
    ];
    let scenarios = [Scenario::Http1, Scenario::Http2Tls];
    for target in &targets {
        sanity_check(target.port).with_context(|| format!("{} is not serving", target.name))?;
        for scenario in scenarios {
            load(scenario, target, WARMUP_SECS, load_core)
                .with_context(|| format!("{} warm-up, {}", target.name, scenario.name()))?;
        }
    }
    let ticks = clock_ticks();
    let mut samples = Vec::new();
    for round in 1..=options.rounds {
        for scenario in scenarios {
            for target in &targets {
                let before = cpu_ticks(target)?;
                let result = load(scenario, target, options.duration_secs, load_core)?;
                let after = cpu_ticks(target)?;
                let cpu_secs = after.saturating_sub(before) as f64 / ticks;
                let sample = Sample {
                    round,
                    scenario,
                    target: target.name,
                    requests_per_sec: result.requests_per_sec,
                    cpu_us_per_request: if result.requests > 0 {
                        cpu_secs * 1e6 / result.requests as f64
                    } else {
                        f64::NAN
                    },
                    notes: result.notes,
                };
                println!(
                    "bench: round {round} {:<7} {:<9} {:>10.0} req/s {:>8.1} µs CPU/req {}",
                    scenario.name(),
                    sample.target,
                    sample.requests_per_sec,
                    sample.cpu_us_per_request,
                    sample.notes
                );
                samples.push(sample);
            }
        }
    }
    drop(proxy);
    drop(nginx);
    drop(origin);
    print!("{}", report(&samples));
    Ok(true)
}

/// The table and, per scenario, the median ratios proxy-bin/nginx over the rounds.
fn report(samples: &[Sample]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<6} {:<8} {:<10} {:>12} {:>14}  notes",
        "round", "proto", "target", "req/s", "CPU µs/req"
    );
    for s in samples {
        let _ = writeln!(
            out,
            "{:<6} {:<8} {:<10} {:>12.0} {:>14.2}  {}",
            s.round,
            s.scenario.name(),
            s.target,
            s.requests_per_sec,
            s.cpu_us_per_request,
            s.notes
        );
    }
    let rounds = samples.iter().map(|s| s.round).max().unwrap_or(0);
    let ratio = |scenario: Scenario, metric: fn(&Sample) -> f64| {
        let mut ratios: Vec<f64> = (1..=rounds)
            .filter_map(|round| {
                let find = |name| {
                    samples
                        .iter()
                        .find(|s| s.round == round && s.scenario == scenario && s.target == name)
                };
                Some(metric(find("proxy-bin")?) / metric(find("nginx")?))
            })
            .filter(|r| r.is_finite())
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios.get(ratios.len() / 2).copied()
    };
    let show = |r: Option<f64>| r.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}x"));
    for scenario in [Scenario::Http1, Scenario::Http2Tls] {
        let _ = writeln!(
            out,
            "median ratio proxy-bin/nginx, {}: req/s {}, CPU µs/req {}",
            scenario.name(),
            show(ratio(scenario, |s| s.requests_per_sec)),
            show(ratio(scenario, |s| s.cpu_us_per_request))
        );
    }
    out
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

fn origin_conf(dir: &Path, port: u16) -> String {
    let body: String = (b'a'..=b'z')
        .cycle()
        .take(BODY_BYTES)
        .map(char::from)
        .collect();
    format!(
        "{}http {{\n{}    server {{\n        listen 127.0.0.1:{port};\n        \
         default_type text/plain;\n        location / {{ return 200 \"{body}\"; }}\n    }}\n}}\n",
        nginx_common(dir, "origin"),
        nginx_http_common(dir, "origin"),
    )
}

fn nginx_proxy_conf(
    dir: &Path,
    [port, tls_port]: [u16; 2],
    origin_port: u16,
    (cert, key): (&Path, &Path),
) -> String {
    format!(
        "{}http {{\n{}    upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 64; }}\n    \
         server {{\n        listen 127.0.0.1:{port};\n        \
         listen 127.0.0.1:{tls_port} ssl http2;\n        \
         ssl_certificate {};\n        ssl_certificate_key {};\n        \
         http2_max_concurrent_streams 128;\n        location / {{\n            \
         proxy_pass http://origin;\n            proxy_http_version 1.1;\n            \
         proxy_set_header Connection \"\";\n        }}\n    }}\n}}\n",
        nginx_common(dir, "nginx-proxy"),
        nginx_http_common(dir, "nginx-proxy"),
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
         [[listeners]]\naddress = \"127.0.0.1:{tls_port}\"\n\
         [listeners.tls]\nallow_domain_fronting = true\n\
         certificates = [{{ names = [\"bench.test\"], cert = \"{}\", key = \"{}\" }}]\n\n\
         [upstreams.origin]\nendpoints = [\"127.0.0.1:{origin_port}\"]\n\n\
         [[servers]]\nnames = [\"bench.test\"]\ndefault = true\n\n\
         [[servers.routes]]\nprefix = \"/\"\nupstream = \"origin\"\n",
        cert.display(),
        key.display(),
    )
}

/// An ECDSA P-256 certificate for `bench.test` (what both proxies serve over TLS).
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

struct WrkResult {
    requests: u64,
    requests_per_sec: f64,
    notes: String,
}

/// One load run of `scenario` against `target`.
fn load(
    scenario: Scenario,
    target: &Target<'_>,
    secs: u64,
    core: Option<usize>,
) -> Result<WrkResult> {
    match scenario {
        Scenario::Http1 => wrk(target.port, secs, core),
        Scenario::Http2Tls => h2load(target.tls_port, secs, core),
    }
}

/// h2load over TLS (ALPN h2): one thread, 16 connections, 10 streams each.
fn h2load(port: u16, secs: u64, core: Option<usize>) -> Result<WrkResult> {
    let mut command = pinned(core, "h2load");
    command.args([
        "-t1".to_owned(),
        "-c16".to_owned(),
        "-m10".to_owned(),
        format!("-D{secs}"),
        "-H".to_owned(),
        ":authority: bench.test".to_owned(),
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
/// h2load's report.
fn parse_h2load(output: &str) -> Result<WrkResult> {
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
        (Some(requests), Some(requests_per_sec)) => Ok(WrkResult {
            requests,
            requests_per_sec,
            notes: notes.join("; "),
        }),
        _ => bail!("cannot read h2load's report:\n{output}"),
    }
}

fn wrk(port: u16, secs: u64, core: Option<usize>) -> Result<WrkResult> {
    let mut command = pinned(core, "wrk");
    command.args([
        "-t1".to_owned(),
        format!("-c{CONNECTIONS}"),
        format!("-d{secs}s"),
        format!("http://127.0.0.1:{port}/"),
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

/// Reads `N requests in ...`, `Requests/sec: X` and error lines from wrk's report.
fn parse_wrk(output: &str) -> Result<WrkResult> {
    let mut requests = None;
    let mut requests_per_sec = None;
    let mut notes = Vec::new();
    for line in output.lines().map(str::trim) {
        if let Some(rate) = line.strip_prefix("Requests/sec:") {
            requests_per_sec = rate.trim().parse().ok();
        } else if line.contains(" requests in ") {
            requests = line.split_whitespace().next().and_then(|n| n.parse().ok());
        } else if line.starts_with("Non-2xx") || line.starts_with("Socket errors") {
            notes.push(line.to_owned());
        }
    }
    match (requests, requests_per_sec) {
        (Some(requests), Some(requests_per_sec)) => Ok(WrkResult {
            requests,
            requests_per_sec,
            notes: notes.join("; "),
        }),
        _ => bail!("cannot read wrk's report:\n{output}"),
    }
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

/// utime+stime of the target process (all threads), plus its children for nginx.
fn cpu_ticks(target: &Target<'_>) -> Result<u64> {
    let pid = target.guard.id();
    let mut total = stat_fields(pid)?.times;
    if target.with_children {
        for entry in fs::read_dir("/proc")?.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Ok(stat) = stat_fields(child)
                && stat.ppid == pid
            {
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
                      \x20 123456 requests in 10.00s, 150.00MB read\n\
                      \x20 Non-2xx or 3xx responses: 3\n\
                      Requests/sec:  12345.60\nTransfer/sec:     15.00MB\n";
        let result = parse_wrk(report)?;
        assert_eq!(result.requests, 123_456);
        assert!((result.requests_per_sec - 12_345.6).abs() < 1e-6);
        assert_eq!(result.notes, "Non-2xx or 3xx responses: 3");
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
        Ok(())
    }

    #[test]
    fn reads_own_stat() -> Result<()> {
        let stat = stat_fields(std::process::id())?;
        assert!(stat.ppid > 0);
        Ok(())
    }
}

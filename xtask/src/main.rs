//! Project automation, run as `cargo xtask COMMAND`.
//!
//! - `lint-deps`: enforces the crate dependency policy with `cargo tree`.
//! - `conformance [--release]`: runs the HTTP/1.1 conformance suite (RFC 9110 / RFC 9112)
//!   and the HTTP/2 suite (RFC 9113 / RFC 7541, over h2c) against the real `proxy-bin`
//!   binary, then the HTTP/3 suite (third-party QUIC clients), then the HTTP caching suite
//!   (RFC 9111 and friends, with `cache = true`); `conformance-h1`, `conformance-h2`,
//!   `conformance-h3` and `conformance-cache` run one of them.
//! - `loadgen`: a bounded HTTP/3 / HTTP/2 load generator on quinn + h3 and h2.
//! - `bench [--compare [--duration SECS]] [ARGS...]`: runs the criterion benchmarks of
//!   `proxy-core` and `proxy-cache`, or with `--compare` side-by-side runs: HTTP/1.1 (wrk),
//!   cached hits (wrk, against nginx `proxy_cache`) and HTTP/2 over TLS (h2load) against
//!   nginx, HTTP/3 and HTTP/2 (loadgen) against Caddy.

#![allow(
    clippy::disallowed_methods,
    reason = "xtask is synchronous std code without a tokio runtime: its deadlines bound real \
              processes and sockets, so std::time::Instant::now is the right clock"
)]

use std::process::ExitCode;

mod bench;
mod conformance;
mod conformance_cache;
mod conformance_h2;
mod conformance_h3;
mod lint_deps;
mod loadgen;
mod process;
mod recorder;

const USAGE: &str = "\
usage: cargo xtask COMMAND [ARGS]

commands:
  lint-deps                  check the dependency policy (proxy-core stays protocol-free,
                             frontends do not depend on each other)
  conformance [--release] [--filter TEXT]
                             build proxy-bin and run the HTTP/1.1, HTTP/2 (h2c),
                             HTTP/3 and HTTP caching conformance suites
  conformance-h1 [--release] [--filter TEXT]
                             the HTTP/1.1 suite alone
  conformance-h2 [--release] [--filter TEXT]
                             the HTTP/2 suite alone
  conformance-h3 [--release] [--filter TEXT]
                             the HTTP/3 suite alone (third-party clients over QUIC)
  conformance-cache [--release] [--filter TEXT]
                             the HTTP caching suite alone (RFC 9111, RFC 5861, RFC 9211,
                             RFC 9213; proxy-bin with `cache = true` before a scripted origin)
  loadgen --url URL --protocol h3|h2 [--connections N] [--streams N] [--duration SECS]
                             bounded HTTP/3 or HTTP/2 load from Rust (quinn + h3, h2)
  bench [ARGS...]            cargo bench -p proxy-core -p proxy-cache [ARGS...]
  bench --compare [--duration SECS] [--rounds N] [--cases h1,h2-tls,h3,h2-lg,cache]
                             side-by-side runs in front of one nginx origin: proxy-bin vs
                             nginx for HTTP/1.1 (wrk) and HTTP/2 over TLS (h2load), proxy-bin
                             vs Caddy for HTTP/3 and HTTP/2 (loadgen); needs nginx, wrk,
                             nghttp2-client, openssl and caddy
";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(command) = args.next() else {
        eprint!("{USAGE}");
        return ExitCode::FAILURE;
    };
    let rest: Vec<String> = args.collect();
    let outcome = match command.as_str() {
        "lint-deps" => lint_deps::run(&rest),
        "conformance" => conformance_h2::run_both(&rest),
        "conformance-h1" => conformance::run(&rest),
        "conformance-h2" => conformance_h2::run_alone(&rest),
        "conformance-h3" => conformance_h3::run_alone(&rest),
        "conformance-cache" => conformance_cache::run_alone(&rest),
        "loadgen" => loadgen::run(&rest),
        "bench" => bench::run(&rest),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(true)
        }
        other => {
            eprintln!("unknown command `{other}`\n\n{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("xtask {command}: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

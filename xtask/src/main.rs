//! Project automation, run as `cargo xtask COMMAND`.
//!
//! - `lint-deps`: enforces the crate dependency policy with `cargo tree`.
//! - `conformance [--release]`: runs the HTTP/1.1 conformance suite (RFC 9110 / RFC 9112)
//!   and the HTTP/2 suite (RFC 9113 / RFC 7541, over h2c) against the real `proxy-bin`
//!   binary; `conformance-h1` and `conformance-h2` run one of them.
//! - `bench [--compare [--duration SECS]] [ARGS...]`: runs the criterion benchmarks of
//!   `proxy-core`, or with `--compare` a side-by-side run against nginx with wrk.

#![allow(
    clippy::disallowed_methods,
    reason = "xtask is synchronous std code without a tokio runtime: its deadlines bound real \
              processes and sockets, so std::time::Instant::now is the right clock"
)]

use std::process::ExitCode;

mod bench;
mod conformance;
mod conformance_h2;
mod lint_deps;
mod process;

const USAGE: &str = "\
usage: cargo xtask COMMAND [ARGS]

commands:
  lint-deps                  check the dependency policy (proxy-core stays protocol-free,
                             frontends do not depend on each other)
  conformance [--release] [--filter TEXT]
                             build proxy-bin and run the HTTP/1.1 and HTTP/2 (h2c)
                             conformance suites
  conformance-h1 [--release] [--filter TEXT]
                             the HTTP/1.1 suite alone
  conformance-h2 [--release] [--filter TEXT]
                             the HTTP/2 suite alone
  bench [ARGS...]            cargo bench -p proxy-core --bench core [ARGS...]
  bench --compare [--duration SECS] [--rounds N]
                             side-by-side HTTP/1.1 run of nginx (reverse proxy) and proxy-bin
                             in front of an nginx origin, load from wrk (needs nginx and wrk)
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

//! `gtlsclient`, ngtcp2's example HTTP/3 client on GnuTLS (Debian/Ubuntu package
//! `ngtcp2-client`): finding or installing it, running it bounded, and reading what it
//! printed.
//!
//! Without `-q` it logs to stderr: QUIC packets and frames (`frm rx 0 Handshake CRYPTO(0x06)
//! offset=0 len=697`), TLS events (`Early data was rejected by server`) and HTTP events
//! (`http: stream 0x0 [:status: 200]`). `--no-quic-dump` and `--no-http-dump` drop only the
//! hex dumps of STREAM/CRYPTO data and of response bodies; bodies are read from the files
//! `--download=DIR` writes, named after the last path segment of each URI.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::process;

/// The program name.
const PROGRAM: &str = "gtlsclient";

/// The Debian/Ubuntu package that ships it.
const PACKAGE: &str = "ngtcp2-client";

/// Longest `apt-get` step.
const APT_BUDGET: Duration = Duration::from_secs(300);

/// Finds `gtlsclient` on `PATH`. When it is missing and this is CI (`CI=true`) or root, it
/// is installed with `apt-get install -y ngtcp2-client` (after `apt-get update` when the
/// first attempt fails). `Err` says why there is none, for every case's FAIL line.
pub(crate) fn locate() -> Result<PathBuf, String> {
    if process::on_path(PROGRAM) {
        return Ok(PathBuf::from(PROGRAM));
    }
    let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    let root = is_root();
    if !ci && !root {
        return Err(format!(
            "{PROGRAM} is not on PATH; install the `{PACKAGE}` package (the suite installs it \
             itself when CI=true or when run as root)"
        ));
    }
    println!("conformance-h3: {PROGRAM} is not on PATH; installing {PACKAGE} with apt-get");
    let mut why = match apt(root, &["install", "-y", "-qq", PACKAGE]) {
        Ok(()) => String::new(),
        Err(first) => {
            println!("conformance-h3: {first}; running apt-get update and trying again");
            match apt(root, &["update", "-qq"])
                .and_then(|()| apt(root, &["install", "-y", "-qq", PACKAGE]))
            {
                Ok(()) => String::new(),
                Err(second) => second,
            }
        }
    };
    if process::on_path(PROGRAM) {
        return Ok(PathBuf::from(PROGRAM));
    }
    if why.is_empty() {
        why = format!("the package installed but {PROGRAM} is still not on PATH");
    }
    Err(format!("{PROGRAM} is not available: {why}"))
}

fn is_root() -> bool {
    let mut command = Command::new("id");
    command.arg("-u");
    process::run_bounded(&mut command, Duration::from_secs(5))
        .is_ok_and(|out| out.stdout.trim() == "0")
}

/// One `apt-get` step, directly as root, else through `sudo -n`.
fn apt(root: bool, args: &[&str]) -> Result<(), String> {
    let mut command = if root {
        Command::new("apt-get")
    } else if process::on_path("sudo") {
        let mut sudo = Command::new("sudo");
        sudo.args(["-n", "apt-get"]);
        sudo
    } else {
        return Err("not root and no sudo to run apt-get with".to_owned());
    };
    command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    match process::run_bounded(&mut command, APT_BUDGET) {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "apt-get {} failed ({}): {}",
            args.join(" "),
            out.status,
            last_lines(&out.stderr, 3)
        )),
        Err(error) => Err(format!("apt-get {}: {error:#}", args.join(" "))),
    }
}

/// One run of `gtlsclient` being put together: `HOST PORT URI...` plus options.
pub(crate) struct Invocation {
    program: PathBuf,
    host: String,
    port: u16,
    options: Vec<OsString>,
    uris: Vec<String>,
    exit_on_close: bool,
    budget: Duration,
}

impl Invocation {
    /// A request for each of `uris` to `127.0.0.1:port`, sent as `localhost` (SNI).
    pub(crate) fn new(program: &Path, port: u16, uris: Vec<String>) -> Self {
        Self {
            program: program.to_path_buf(),
            host: "localhost".to_owned(),
            port,
            options: Vec::new(),
            uris,
            exit_on_close: true,
            budget: Duration::from_secs(20),
        }
    }

    /// Adds `--NAME` or `--NAME=VALUE` options.
    pub(crate) fn opt(mut self, option: impl Into<OsString>) -> Self {
        self.options.push(option.into());
        self
    }

    /// `-m METHOD`.
    pub(crate) fn method(self, method: &str) -> Self {
        self.opt(format!("--http-method={method}"))
    }

    /// `-d FILE`: the request body.
    pub(crate) fn data(self, file: &Path) -> Self {
        let mut option = OsString::from("--data=");
        option.push(file);
        self.opt(option)
    }

    /// `--download=DIR`: response bodies are saved there.
    pub(crate) fn download(self, dir: &Path) -> Self {
        let mut option = OsString::from("--download=");
        option.push(dir);
        self.opt(option)
    }

    /// `--session-file` and `--tp-file` in `dir`: the first run stores a TLS session ticket
    /// and the server's transport parameters, a later run resumes and sends 0-RTT.
    pub(crate) fn resume_from(self, dir: &Path) -> Self {
        let mut session = OsString::from("--session-file=");
        session.push(dir.join("session.pem"));
        let mut tp = OsString::from("--tp-file=");
        tp.push(dir.join("transport-params.pem"));
        self.opt(session).opt(tp)
    }

    /// Stays connected after the last stream closes (until the connection ends).
    pub(crate) fn stay_connected(mut self) -> Self {
        self.exit_on_close = false;
        self
    }

    /// Longest run before the client is killed (default 20 s).
    pub(crate) fn budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// The command line, for a background run.
    pub(crate) fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(["--no-quic-dump", "--no-http-dump"]);
        if self.exit_on_close {
            command.arg("--exit-on-all-streams-close");
        }
        command
            .args(&self.options)
            .arg(&self.host)
            .arg(self.port.to_string())
            .args(&self.uris);
        command
    }

    /// Runs the client to its end (killed after the budget) and reads its log.
    pub(crate) fn run(&self) -> Result<Output> {
        let finished = process::run_bounded(&mut self.command(), self.budget)
            .with_context(|| format!("{PROGRAM} {}", self.uris.join(" ")))?;
        let mut log = finished.stderr;
        log.push_str(&finished.stdout);
        Ok(Output::parse(Some(finished.status), log))
    }
}

/// What one run printed, read back.
#[derive(Debug)]
pub(crate) struct Output {
    /// The exit status (`None` when read from a background run's log).
    pub(crate) status: Option<ExitStatus>,
    /// Everything it printed.
    pub(crate) log: String,
    /// Request streams by id, in id order (the order the requests were made).
    pub(crate) streams: BTreeMap<u64, Exchange>,
}

/// The response side of one request stream.
#[derive(Debug, Default)]
pub(crate) struct Exchange {
    /// Statuses of interim (1xx) responses.
    pub(crate) interim: Vec<u16>,
    /// Fields of the final response head, pseudo-fields included, in received order.
    pub(crate) fields: Vec<(String, String)>,
    /// Trailer fields.
    pub(crate) trailers: Vec<(String, String)>,
    in_trailers: bool,
}

impl Exchange {
    /// `:status`, when a response head arrived.
    pub(crate) fn status(&self) -> Option<u16> {
        self.header(":status").and_then(|s| s.parse().ok())
    }

    /// The first value of `name` in the response head.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Output {
    /// Reads a log.
    pub(crate) fn parse(status: Option<ExitStatus>, log: String) -> Self {
        let mut streams: BTreeMap<u64, Exchange> = BTreeMap::new();
        for line in log.lines() {
            let Some(rest) = line.strip_prefix("http: stream 0x") else {
                continue;
            };
            let Some((id, event)) = rest.split_once(' ') else {
                continue;
            };
            let Ok(id) = u64::from_str_radix(id, 16) else {
                continue;
            };
            // Client-initiated bidirectional streams are the request streams.
            if id % 4 != 0 {
                continue;
            }
            let exchange = streams.entry(id).or_default();
            if event == "response headers started" {
                if let Some(status) = exchange.status().filter(|s| (100..200).contains(s)) {
                    exchange.interim.push(status);
                    exchange.fields.clear();
                }
            } else if event == "trailers started" {
                exchange.in_trailers = true;
            } else if let Some(field) = event.strip_prefix('[').and_then(|f| f.strip_suffix(']')) {
                // `:status: 200` or `name: value`; a pseudo-field's name starts with ':'.
                let split = field.get(1..).and_then(|f| f.find(": ")).map(|i| i + 1);
                if let Some(i) = split {
                    let pair = (field[..i].to_owned(), field[i + 2..].to_owned());
                    if exchange.in_trailers {
                        exchange.trailers.push(pair);
                    } else {
                        exchange.fields.push(pair);
                    }
                }
            }
        }
        // Streams the client opened but got no response head on still count.
        for line in log.lines() {
            if let Some(id) = line
                .strip_prefix("http: stream 0x")
                .and_then(|r| r.strip_suffix(" submit request headers"))
                .and_then(|id| u64::from_str_radix(id, 16).ok())
            {
                streams.entry(id).or_default();
            }
        }
        Self {
            status,
            log,
            streams,
        }
    }

    /// The exchange of the only request stream; `Err` when there was not exactly one
    /// request or it got no response head.
    pub(crate) fn only(&self) -> Result<&Exchange> {
        let mut streams = self.streams.values();
        match (streams.next(), streams.next()) {
            (Some(one), None) if one.status().is_some() => Ok(one),
            (Some(_), None) => bail!("no response head: {}", self.summary()),
            (None, _) => bail!("no request was sent: {}", self.summary()),
            (Some(_), Some(_)) => bail!("{} request streams, expected one", self.streams.len()),
        }
    }

    /// Whether the client sent 0-RTT packets (it does whenever it has a session to resume).
    pub(crate) fn sent_early_data(&self) -> bool {
        self.log
            .lines()
            .any(|l| l.contains(" pkt tx ") && l.contains("type=0RTT"))
    }

    /// Whether the server declined the 0-RTT data (the client then resends it in 1-RTT).
    pub(crate) fn early_data_rejected(&self) -> bool {
        self.log.contains("Early data was rejected by server")
    }

    /// Bytes of TLS handshake messages the server sent in Handshake packets: its
    /// Certificate message is among them in a full handshake and absent from a resumed one.
    pub(crate) fn handshake_bytes_received(&self) -> usize {
        self.log
            .lines()
            .filter(|l| l.contains(" frm rx ") && l.contains(" Handshake CRYPTO("))
            .filter_map(|l| {
                l.rsplit_once(" len=")
                    .and_then(|(_, n)| n.trim().parse::<usize>().ok())
            })
            .sum()
    }

    /// `CONNECTION_CLOSE` frames the server sent, as logged.
    pub(crate) fn closes_received(&self) -> Vec<&str> {
        self.log
            .lines()
            .filter(|l| l.contains(" frm rx ") && l.contains("CONNECTION_CLOSE"))
            .collect()
    }

    /// A short account of the run for failure messages: the exit status and the last HTTP,
    /// TLS and error lines.
    pub(crate) fn summary(&self) -> String {
        let interesting: Vec<&str> = self
            .log
            .lines()
            .filter(|l| {
                l.starts_with("http: ")
                    || l.contains("rror")
                    || l.contains("arly data")
                    || l.contains("RESET_STREAM")
                    || l.contains("STOP_SENDING")
                    || l.contains("CONNECTION_CLOSE")
                    || l.contains("imeout")
            })
            .collect();
        let tail = &interesting[interesting.len().saturating_sub(8)..];
        let status = self
            .status
            .map_or_else(|| "running".to_owned(), |s| s.to_string());
        format!("{PROGRAM} {status}; {}", tail.join(" / "))
    }
}

fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_responses_trailers_and_handshake_sizes() {
        let log = "\
I00000004 0x0d frm rx 0 Handshake CRYPTO(0x06) offset=0 len=697
http: stream 0x0 submit request headers
[:method: GET]
http: stream 0x4 submit request headers
http: stream 0x0 response headers started
http: stream 0x0 [:status: 103]
http: stream 0x0 [link: </a>; rel=preload]
http: stream 0x0 headers ended
http: stream 0x0 response headers started
http: stream 0x0 [:status: 200]
http: stream 0x0 [x-odd: a: [b]]
http: stream 0x0 headers ended
http: stream 0x0 trailers started
http: stream 0x0 [grpc-status: 0]
http: stream 0x0 trailers ended
http: stream 0x2 [ignored: control]
I00000005 0x0d frm rx 1 1RTT CONNECTION_CLOSE(0x1d) error_code=(unknown)(0x100)
";
        let out = Output::parse(None, log.to_owned());
        assert_eq!(out.streams.len(), 2);
        let first = &out.streams[&0];
        assert_eq!(first.interim, [103]);
        assert_eq!(first.status(), Some(200));
        assert_eq!(first.header("x-odd"), Some("a: [b]"));
        assert_eq!(first.trailers, [("grpc-status".to_owned(), "0".to_owned())]);
        assert_eq!(out.streams[&4].status(), None);
        assert!(out.only().is_err());
        assert_eq!(out.handshake_bytes_received(), 697);
        assert_eq!(out.closes_received().len(), 1);
    }
}

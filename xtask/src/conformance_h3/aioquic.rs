//! The second client: a small script ([`SCRIPT`]) on aioquic, for requests `gtlsclient`
//! cannot make (fields of our choosing, malformed ones included, and an explicit SNI).
//!
//! aioquic comes from the system Python when it has it, else from a virtual environment
//! under `target/conformance-h3/` that is created and filled from PyPI on first use, else
//! (under CI or as root) from the `python3-aioquic` package. Without it, the cases that need
//! it fail with the reason.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::process;

/// The client script, written next to the proxy's log for each run of the suite.
pub(crate) const SCRIPT: &str = include_str!("h3client.py");

/// Longest `python3 -m venv` or `pip install` step.
const INSTALL_BUDGET: Duration = Duration::from_secs(300);

/// A Python interpreter that can import aioquic, installing aioquic when needed (see the
/// module documentation); `Err` says why there is none.
pub(crate) fn locate() -> Result<PathBuf, String> {
    if !process::on_path("python3") {
        return Err("python3 is not on PATH (needed for the aioquic client)".to_owned());
    }
    let system = PathBuf::from("python3");
    if has_aioquic(&system) {
        return Ok(system);
    }
    let mut why = Vec::new();
    match venv_python() {
        Ok(python) => return Ok(python),
        Err(reason) => why.push(reason),
    }
    let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    if ci || is_root() {
        println!("conformance-h3: installing python3-aioquic with apt-get");
        let mut command = if is_root() {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.args(["-n", "apt-get"]);
            sudo
        };
        command
            .args(["install", "-y", "-qq", "python3-aioquic"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        match process::run_bounded(&mut command, INSTALL_BUDGET) {
            Ok(out) if out.status.success() && has_aioquic(&system) => return Ok(system),
            Ok(out) => why.push(format!(
                "apt-get install python3-aioquic: {} {}",
                out.status,
                out.stderr.lines().last().unwrap_or_default()
            )),
            Err(error) => why.push(format!("apt-get install python3-aioquic: {error:#}")),
        }
    }
    Err(format!("aioquic is not available: {}", why.join("; ")))
}

/// The virtual environment's interpreter, with aioquic installed from PyPI if missing.
fn venv_python() -> Result<PathBuf, String> {
    let venv = target_dir()
        .map_err(|e| format!("{e:#}"))?
        .join("conformance-h3")
        .join("aioquic-venv");
    let python = venv.join("bin").join("python3");
    if has_aioquic(&python) {
        return Ok(python);
    }
    println!(
        "conformance-h3: installing aioquic from PyPI into {}",
        venv.display()
    );
    if !python.is_file() {
        let mut command = Command::new("python3");
        command.args(["-m", "venv"]).arg(&venv);
        check(&mut command, "python3 -m venv")?;
    }
    let mut command = Command::new(&python);
    command.args([
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        "aioquic",
    ]);
    check(&mut command, "pip install aioquic")?;
    if has_aioquic(&python) {
        Ok(python)
    } else {
        Err("aioquic installed but cannot be imported".to_owned())
    }
}

fn check(command: &mut Command, what: &str) -> Result<(), String> {
    match process::run_bounded(command, INSTALL_BUDGET) {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{what} failed ({}): {}",
            out.status,
            out.stderr.lines().last().unwrap_or_default()
        )),
        Err(error) => Err(format!("{what}: {error:#}")),
    }
}

fn has_aioquic(python: &Path) -> bool {
    let mut command = Command::new(python);
    command.args(["-c", "import aioquic.asyncio, aioquic.h3.connection"]);
    process::run_bounded(&mut command, Duration::from_secs(30)).is_ok_and(|o| o.status.success())
}

fn is_root() -> bool {
    let mut command = Command::new("id");
    command.arg("-u");
    process::run_bounded(&mut command, Duration::from_secs(5))
        .is_ok_and(|out| out.stdout.trim() == "0")
}

/// `CARGO_TARGET_DIR`, else the workspace's `target`.
fn target_dir() -> Result<PathBuf> {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => Ok(process::workspace_root()?.join("target")),
    }
}

/// One request as sent: fields in order (pseudo-fields included), an optional body.
#[derive(Debug, Clone, Default)]
pub(crate) struct Request {
    pub(crate) fields: Vec<(String, String)>,
    pub(crate) body: Option<Vec<u8>>,
}

impl Request {
    /// `GET path` with the usual pseudo-fields for `authority`, then `extra` fields.
    pub(crate) fn get(authority: &str, path: &str, extra: &[(&str, &str)]) -> Self {
        Self::new("GET", authority, path, extra)
    }

    /// `METHOD path` with the usual pseudo-fields for `authority`, then `extra` fields.
    pub(crate) fn new(method: &str, authority: &str, path: &str, extra: &[(&str, &str)]) -> Self {
        let mut fields = vec![
            (":method".to_owned(), method.to_owned()),
            (":scheme".to_owned(), "https".to_owned()),
            (":authority".to_owned(), authority.to_owned()),
            (":path".to_owned(), path.to_owned()),
        ];
        fields.extend(
            extra
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
        );
        Self { fields, body: None }
    }

    /// With `body` as DATA.
    pub(crate) fn with_body(mut self, body: Vec<u8>) -> Self {
        self.body = Some(body);
        self
    }
}

/// What the client saw for one request.
#[derive(Debug, Default)]
pub(crate) struct Response {
    /// Field sections in received order: interim heads, the head, trailers.
    pub(crate) sections: Vec<Vec<(String, String)>>,
    /// The response body.
    pub(crate) body: Vec<u8>,
    /// The server's RESET_STREAM error code.
    pub(crate) reset: Option<u64>,
    /// Whether the stream ended with FIN.
    pub(crate) ended: bool,
}

impl Response {
    /// The final (non-1xx) status.
    pub(crate) fn status(&self) -> Option<u16> {
        self.head()
            .and_then(|h| field(h, ":status"))
            .and_then(|s| s.parse().ok())
    }

    /// The final response head.
    fn head(&self) -> Option<&Vec<(String, String)>> {
        self.sections.iter().find(|s| {
            field(s, ":status")
                .and_then(|v| v.parse::<u16>().ok())
                .is_some_and(|v| v >= 200)
        })
    }
}

fn field<'a>(section: &'a [(String, String)], name: &str) -> Option<&'a str> {
    section
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A whole run: one response per request, and the connection's end.
#[derive(Debug, Default)]
pub(crate) struct Output {
    pub(crate) responses: Vec<Response>,
    /// `(error code, reason)` of a CONNECTION_CLOSE.
    pub(crate) closed: Option<(u64, String)>,
    /// The client's own failure.
    pub(crate) error: Option<String>,
}

impl Output {
    /// The response to request `i`.
    pub(crate) fn response(&self, i: usize) -> Result<&Response> {
        match self.responses.get(i) {
            Some(response) => Ok(response),
            None => bail!("no response to request {i}: {}", self.summary()),
        }
    }

    /// The connection's end and the client's failure, for messages.
    pub(crate) fn summary(&self) -> String {
        let mut text = String::new();
        if let Some((code, reason)) = &self.closed {
            let _ = write!(text, "connection closed with 0x{code:x} {reason:?}; ");
        }
        if let Some(error) = &self.error {
            let _ = write!(text, "client error: {error}");
        }
        if text.is_empty() {
            text.push_str("no connection error");
        }
        text
    }
}

/// Runs the script: `requests` on one connection to `127.0.0.1:port` with SNI `server_name`,
/// files in `dir`.
pub(crate) fn run(
    python: &Path,
    dir: &Path,
    port: u16,
    server_name: &str,
    requests: &[Request],
) -> Result<Output> {
    let script = dir.join("h3client.py");
    fs::write(&script, SCRIPT).with_context(|| format!("writing {}", script.display()))?;
    let mut spec = format!(
        "{{\"host\": \"127.0.0.1\", \"port\": {port}, \"server_name\": {}, \"timeout\": 15, \
         \"out\": {}, \"requests\": [",
        json(server_name),
        json(&dir.display().to_string())
    );
    for (i, request) in requests.iter().enumerate() {
        let fields: Vec<String> = request
            .fields
            .iter()
            .map(|(n, v)| format!("[{}, {}]", json(n), json(v)))
            .collect();
        let body = match &request.body {
            Some(body) => {
                let file = dir.join(format!("request-{i}.bin"));
                fs::write(&file, body)?;
                json(&file.display().to_string())
            }
            None => "null".to_owned(),
        };
        let comma = if i == 0 { "" } else { ", " };
        let _ = write!(
            spec,
            "{comma}{{\"headers\": [{}], \"body_file\": {body}}}",
            fields.join(", ")
        );
    }
    spec.push_str("]}");
    let spec_file = dir.join("spec.json");
    fs::write(&spec_file, spec)?;
    let mut command = Command::new(python);
    command.arg(&script).arg(&spec_file);
    let out = process::run_bounded(&mut command, Duration::from_secs(25))?;
    let mut parsed = parse(&out.stdout, requests.len());
    for (i, response) in parsed.responses.iter_mut().enumerate() {
        response.body = fs::read(dir.join(format!("body-{i}.bin"))).unwrap_or_default();
    }
    if !out.status.success() && parsed.error.is_none() {
        parsed.error = Some(format!(
            "exited {}: {}",
            out.status,
            out.stderr.lines().last().unwrap_or_default()
        ));
    }
    Ok(parsed)
}

/// Reads the script's output (see its documentation).
fn parse(stdout: &str, count: usize) -> Output {
    let mut out = Output {
        responses: (0..count).map(|_| Response::default()).collect(),
        ..Output::default()
    };
    for line in stdout.lines() {
        let parts: Vec<&str> = line.split('\t').collect();
        let index = |at: usize| parts.get(at).and_then(|i| i.parse::<usize>().ok());
        let response = index(1).and_then(|i| out.responses.get_mut(i));
        match (parts.as_slice(), response) {
            (["H", _], Some(response)) => response.sections.push(Vec::new()),
            (["F", _, name, value], Some(response)) => {
                if let Some(section) = response.sections.last_mut() {
                    section.push(((*name).to_owned(), unescape(value)));
                }
            }
            (["E", _], Some(response)) => response.ended = true,
            (["R", _, code], Some(response)) => response.reset = code.parse().ok(),
            (["C", code, reason], _) => {
                out.closed = Some((code.parse().unwrap_or(u64::MAX), unescape(reason)));
            }
            (["X", message], _) => out.error = Some(unescape(message)),
            _ => {}
        }
    }
    out
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// A JSON string literal.
fn json(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_script_output() {
        let stdout = "H\t0\nF\t0\t:status\t103\nH\t0\nF\t0\t:status\t200\nF\t0\tx-a\tb\\tc\n\
                      E\t0\nB\t0\t5\nR\t1\t270\nC\t256\t\nX\tTimeoutError: \n";
        let out = parse(stdout, 2);
        assert_eq!(out.responses[0].status(), Some(200));
        assert_eq!(out.responses[0].sections[1][1].1, "b\tc");
        assert!(out.responses[0].ended);
        assert_eq!(out.responses[1].reset, Some(0x10e));
        assert_eq!(out.closed, Some((256, String::new())));
        assert_eq!(out.error.as_deref(), Some("TimeoutError: "));
        assert_eq!(json("a\"b\\\n"), "\"a\\\"b\\\\\\u000a\"");
    }
}

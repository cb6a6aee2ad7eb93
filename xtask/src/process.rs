//! Child processes, ports, temporary directories and the workspace layout, shared by the
//! commands. Everything that waits is bounded; every child is owned by a guard that kills it.

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

/// The workspace root: the parent of this crate's manifest directory.
pub(crate) fn workspace_root() -> Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .with_context(|| format!("{} has no parent directory", manifest.display()))
}

/// A `cargo` command (the one running us, when run through cargo) in the workspace root.
pub(crate) fn cargo() -> Result<Command> {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(program);
    command.current_dir(workspace_root()?);
    Ok(command)
}

/// Builds `proxy-bin` (debug, or release) and returns the path of the binary.
pub(crate) fn build_proxy_bin(release: bool) -> Result<PathBuf> {
    let mut command = cargo()?;
    command.args(["build", "-p", "proxy-bin"]);
    if release {
        command.arg("--release");
    }
    let status = command
        .status()
        .context("running cargo build -p proxy-bin")?;
    if !status.success() {
        bail!("cargo build -p proxy-bin failed ({status})");
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root()?.join("target"),
    };
    let binary = target
        .join(if release { "release" } else { "debug" })
        .join(format!("proxy-bin{}", std::env::consts::EXE_SUFFIX));
    if !binary.is_file() {
        bail!(
            "cargo build succeeded but {} does not exist",
            binary.display()
        );
    }
    Ok(binary)
}

/// Whether `program` is an executable file in one of the `PATH` directories.
pub(crate) fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// `N` distinct loopback ports that were free a moment ago (bound to port 0 together, read
/// back, released).
pub(crate) fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0; N];
    for port in &mut ports {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
        *port = listener.local_addr()?.port();
        listeners.push(listener);
    }
    Ok(ports)
}

/// A fresh directory under [`std::env::temp_dir`], removed on drop unless [`TempDir::keep`]
/// was called (so that logs of a failed run stay readable).
pub(crate) struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    /// Creates `$TMP/xtask-LABEL-PID-NANOS`.
    pub(crate) fn new(label: &str) -> Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let path =
            std::env::temp_dir().join(format!("xtask-{label}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, keep: false })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Leaves the directory in place when dropped.
    pub(crate) fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Owns a child process and ends it on drop: `SIGTERM` first when `graceful` (so that nginx's
/// master stops its workers), `SIGKILL` after a bounded wait, then reaps it.
pub(crate) struct ChildGuard {
    child: Child,
    name: String,
    graceful: bool,
}

impl ChildGuard {
    /// Spawns `command` as `name`.
    pub(crate) fn spawn(command: &mut Command, name: &str, graceful: bool) -> Result<Self> {
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} ({command:?})"))?;
        Ok(Self {
            child,
            name: name.to_owned(),
            graceful,
        })
    }

    /// Spawns `command` with stdin closed and stdout/stderr appended to `log`.
    pub(crate) fn spawn_logged(
        command: &mut Command,
        name: &str,
        graceful: bool,
        log: &Path,
    ) -> Result<Self> {
        let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        Self::spawn(command, name, graceful)
    }

    /// The process id.
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the child has already exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits until `port` on 127.0.0.1 accepts connections, at most `timeout`; fails early
    /// when the child exits.
    pub(crate) fn wait_for_port(&mut self, port: u16, timeout: Duration) -> Result<()> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                bail!(
                    "{} exited ({status}) before listening on {address}",
                    self.name
                );
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not accept connections on {address} within {}s",
                    self.name,
                    timeout.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if self.graceful {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if self.exited().is_some() {
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
            eprintln!("{} did not stop after SIGTERM; killing it", self.name);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Output of [`run_bounded`].
pub(crate) struct Finished {
    /// Exit status.
    pub(crate) status: ExitStatus,
    /// Everything the command wrote to stdout.
    pub(crate) stdout: String,
    /// Everything the command wrote to stderr.
    pub(crate) stderr: String,
}

/// Runs `command` to completion with captured output; kills it after `timeout`.
pub(crate) fn run_bounded(command: &mut Command, timeout: Duration) -> Result<Finished> {
    let name = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let stdout = child.stdout.take().map(drain_in_thread);
    let stderr = child.stderr.take().map(drain_in_thread);
    let mut guard = ChildGuard {
        child,
        name: name.clone(),
        graceful: false,
    };
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = guard.exited() {
            break status;
        }
        if Instant::now() >= deadline {
            bail!("{name} did not finish within {}s", timeout.as_secs());
        }
        thread::sleep(Duration::from_millis(50));
    };
    let collect = |handle: Option<thread::JoinHandle<String>>| {
        handle.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    Ok(Finished {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

fn drain_in_thread<R: Read + Send + 'static>(mut reader: R) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = reader.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The last `lines` lines of a text file, for error messages.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(error) => format!("(cannot read {}: {error})", path.display()),
    }
}

//! A recording origin server for the conformance suites: std threads on 127.0.0.1, one per
//! connection, each request pushed to a shared list by the suite's own `serve` function.

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;

use anyhow::{Context, Result};

/// What a backend recorded, shared with its connection threads.
pub(crate) type Records<R> = Arc<Mutex<Vec<R>>>;

/// A running backend; stops accepting when dropped.
pub(crate) struct Recorder<R> {
    port: u16,
    records: Records<R>,
    stop: Arc<AtomicBool>,
}

impl<R: Clone + Send + 'static> Recorder<R> {
    /// Binds 127.0.0.1:0 and runs `serve` for each connection on its own thread named
    /// `name`.
    pub(crate) fn bind(name: &'static str, serve: fn(TcpStream, &Records<R>)) -> Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding backend")?;
        let port = listener.local_addr()?.port();
        let records = Records::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (accept_records, accept_stop) = (records.clone(), stop.clone());
        thread::Builder::new()
            .name(format!("{name}-accept"))
            .spawn(move || accept(&listener, name, serve, &accept_records, &accept_stop))
            .context("spawning backend thread")?;
        Ok(Self {
            port,
            records,
            stop,
        })
    }

    /// The port it listens on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Forgets everything recorded so far.
    pub(crate) fn clear(&self) {
        lock(&self.records).clear();
    }

    /// A copy of what was recorded since the last [`Recorder::clear`].
    pub(crate) fn records(&self) -> Vec<R> {
        lock(&self.records).clone()
    }
}

impl<R> Drop for Recorder<R> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so that the thread sees the flag.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

/// The records, even if a connection thread panicked while holding them.
pub(crate) fn lock<R>(records: &Records<R>) -> MutexGuard<'_, Vec<R>> {
    records.lock().unwrap_or_else(PoisonError::into_inner)
}

fn accept<R: Send + 'static>(
    listener: &TcpListener,
    name: &'static str,
    serve: fn(TcpStream, &Records<R>),
    records: &Records<R>,
    stop: &AtomicBool,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let records = records.clone();
        if let Err(error) = thread::Builder::new()
            .name(format!("{name}-conn"))
            .spawn(move || serve(stream, &records))
        {
            eprintln!("{name}: cannot spawn a connection thread: {error}");
        }
    }
}

/// Reads more bytes into `buf`; `false` on EOF or error.
pub(crate) fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 64 * 1024];
    match stream.read(&mut chunk) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

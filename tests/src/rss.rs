//! Resident memory of this process, read from `/proc/self/status` (Linux).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Time between two samples.
const PERIOD: Duration = Duration::from_millis(5);
/// Most samples one sampler takes (10 minutes' worth), even if never stopped.
const MAX_SAMPLES: u32 = 120_000;

/// The current `VmRSS` in bytes, or `None` where `/proc` is unavailable.
pub fn current() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Samples `VmRSS` every 5 ms on a thread and keeps the peak.
#[derive(Debug)]
pub struct PeakRss {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl PeakRss {
    /// Starts sampling.
    pub fn start() -> PeakRss {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(current().unwrap_or(0)));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                for _ in 0..MAX_SAMPLES {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Some(rss) = current() {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    std::thread::sleep(PERIOD);
                }
            })
        };
        PeakRss {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// Stops sampling and returns the peak seen, in bytes.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(rss) = current() {
            self.peak.fetch_max(rss, Ordering::Relaxed);
        }
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

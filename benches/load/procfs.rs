//! What a process costs, read from `/proc`: resident memory and CPU time.
//!
//! uacregd is one process, so its own `VmRSS` and `VmHWM` (peak) are exact. Kamailio is a
//! tree of forked processes sharing one big memory segment; summing their RSS would count the
//! shared pages once per process, so for a set of processes the proportional share (`Pss`) is
//! summed instead, and the peak is what a sampler saw.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// `field` of `/proc/<pid>/<file>` in KiB (`VmRSS:`, `VmHWM:`, `Pss:`).
fn kib(pid: u32, file: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    kib(pid, "status", "VmRSS:")
}

pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    kib(pid, "status", "VmHWM:")
}

/// Memory of a set of processes: one process's RSS, or the sum of several processes'
/// proportional set sizes.
pub fn memory_kib(pids: &[u32]) -> u64 {
    match pids {
        [pid] => rss_kib(*pid).unwrap_or(0),
        _ => pids
            .iter()
            .filter_map(|pid| kib(*pid, "smaps_rollup", "Pss:"))
            .sum(),
    }
}

/// User + system CPU seconds used so far by the processes (threads included).
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    pids.iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after "(comm)": state is the 1st, utime the 12th, stime the 13th.
            let (_, rest) = stat.rsplit_once(')')?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) as f64 / ticks)
        })
        .sum()
}

/// The command name of a process (`/proc/<pid>/comm`).
pub fn command_name(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Samples the memory of a changing set of processes at a fixed interval and keeps the highest
/// sum: 100 ms over a whole run, 20 ms during a `reg_dump` (whose buffers live for a fraction of
/// a second at 100,000 rows).
pub struct PeakSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl PeakSampler {
    pub fn start(every: Duration, pids: impl Fn() -> Vec<u32> + Send + 'static) -> PeakSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                // Bounded like every loop here: at most 10 hours, or 2,000,000 samples.
                let rounds = (36_000_000 / every.as_millis().max(1)).min(2_000_000);
                for _ in 0..rounds {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    peak.fetch_max(memory_kib(&pids()), Ordering::Relaxed);
                    std::thread::sleep(every);
                }
            })
        };
        PeakSampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// The highest sum seen so far.
    pub fn peak_kib(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for PeakSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

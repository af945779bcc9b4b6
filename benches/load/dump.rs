//! One `uac.reg_dump` measured the way an operator feels it: how long the answer took, how
//! much the gateway's memory grew while it answered, and how late its due timers ran
//! meanwhile.
//!
//! A dump of the whole table is the largest answer the gateway builds. If it built the answer
//! in memory before sending it, the gateway's RSS would grow by the size of the answer (about
//! 700 MB at 1,000,000 rows) at every dump, and a monitoring system polling it would be the
//! thing that pushes a carrier's box into swap; and a driver busy building it would send
//! refreshes late. So RSS is sampled every [`SAMPLE_EVERY`] on a thread of its own from just
//! before the request until the last byte is read, and the growth is the highest sample minus
//! the RSS before.

use std::io;
use std::time::Duration;

use crate::gateway::Gateway;
use crate::procfs::{self, PeakSampler};
use crate::report;

/// How often RSS is sampled during a dump.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// Timers later than this are late for a carrier: a refresh one second late is noticed.
pub const LATE_MS: u64 = 1000;

#[derive(Clone, Copy, Debug)]
pub struct DumpMeasure {
    pub took: Duration,
    pub records: usize,
    /// Highest memory during the dump minus the memory just before, in KiB (0 if it shrank).
    pub rss_growth_kib: u64,
    /// The timer lateness bound and rounds during the dump (see [`report::lateness_during`]),
    /// where the gateway reports it.
    pub lateness: Option<(Option<u64>, u64)>,
    /// Timer rounds more than [`LATE_MS`] late during the dump.
    pub late_rounds: Option<u64>,
}

/// Runs one dump and measures it.
pub fn measure(gateway: &Gateway) -> io::Result<DumpMeasure> {
    let pids = gateway.pids();
    let before_kib = procfs::memory_kib(&pids);
    let lateness_before = gateway.counters()?.lateness;
    let sampler = {
        let pids = pids.clone();
        PeakSampler::start(SAMPLE_EVERY, move || pids.clone())
    };
    let outcome = gateway.dump();
    let peak_kib = sampler.peak_kib();
    drop(sampler);
    let (took, records) = outcome?;
    let lateness_after = gateway.counters()?.lateness;
    let (lateness, late_rounds) = match (lateness_before, lateness_after) {
        (Some(before), Some(after)) => (
            Some(report::lateness_during(&before, &after)),
            Some(report::later_than(&before, &after, LATE_MS)),
        ),
        _ => (None, None),
    };
    Ok(DumpMeasure {
        took,
        records,
        rss_growth_kib: peak_kib.saturating_sub(before_kib),
        lateness,
        late_rounds,
    })
}

//! What the engine counts: the protocol half of the driver's statistics (the I/O shell adds
//! sockets, connections and the relay's counts to make [`crate::driver::DriverStats`]).

use std::collections::BTreeMap;
use std::time::Duration;

use super::transaction::TransactionStats;
use crate::registration::CoreCounters;

/// Upper bounds (ms) of the latency histograms' buckets; the last bucket is +Inf.
pub const LATENCY_BOUNDS_MS: [u64; 11] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// A distribution of durations (transaction latency, timer lateness), cumulative like
/// Prometheus wants.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct LatencyHistogram {
    /// `counts[i]`: responses within `LATENCY_BOUNDS_MS[i]`; one more slot for +Inf.
    pub counts: [u64; 12],
    pub sum_seconds: f64,
    pub count: u64,
}

impl LatencyHistogram {
    pub(crate) fn observe(&mut self, latency: Duration) {
        let ms = latency.as_millis() as u64;
        for (i, bound) in LATENCY_BOUNDS_MS.iter().enumerate() {
            if ms <= *bound {
                self.counts[i] += 1;
            }
        }
        self.counts[LATENCY_BOUNDS_MS.len()] += 1;
        self.sum_seconds += latency.as_secs_f64();
        self.count += 1;
    }
}

/// Counters the engine keeps, and the gauges it reads when asked.
#[derive(Clone, Debug, Default)]
pub struct EngineStats {
    /// Responses that could not be parsed, or carry no Via branch.
    pub malformed_dropped: u64,
    /// Responses that answer none of our requests: the sum of the three below.
    pub unmatched_responses: u64,
    pub responses_unknown_branch: u64,
    pub responses_wrong_ids: u64,
    pub responses_wrong_source: u64,
    pub registers_sent: u64,
    pub resolve_failures: u64,
    /// Requests moved to the next RFC 3263 target after a timeout, 503 or broken connection.
    pub failovers: u64,
    /// Connections opened for our requests (the shell reports each new one).
    pub connections_opened: u64,
    /// Connections that ended, ours and peers'.
    pub connections_closed: u64,
    /// Registrations re-registered because their connection or keep-alive failed.
    pub rebinds: u64,
    pub keepalives_sent: u64,
    pub keepalive_failures: u64,
    pub queued: usize,
    pub in_flight: usize,
    pub pacing_window: usize,
    pub pacing_backoffs: u64,
    pub leaving: usize,
    pub transactions: TransactionStats,
    /// Final responses by status code.
    pub responses: BTreeMap<u16, u64>,
    pub latency: LatencyHistogram,
    /// How late the registrations' timers ran (deadline to the moment the engine got to it).
    pub timer_lateness: LatencyHistogram,
    pub core: CoreCounters,
    /// Clustered: rows taken over with the previous owner's dialog.
    pub rows_continued: u64,
    /// Clustered: rows let go of for another node (released or lost shards).
    pub rows_handed_over: u64,
    /// Clustered: rows dropped because their shard's deadline passed unrenewed.
    pub rows_fenced: u64,
    /// Clustered: shards whose deadline passed unrenewed.
    pub shards_lapsed: u64,
}

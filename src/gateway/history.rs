//! The web console's last hour: every [`SAMPLE_EVERY`], how many rows are registered and how
//! many are failing, and the running totals of REGISTERs sent and final responses received (the
//! page turns those into rates). A fixed ring of [`SAMPLES_KEPT`] samples (about 30 KiB), not a
//! time-series database: anything longer belongs in Prometheus, which `/metrics` feeds.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::Serialize;

/// How often a sample is taken.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// One hour of samples.
pub const SAMPLES_KEPT: usize = 720;

/// States the console counts as failing: a row in one of them is not registered and uacreg has
/// a reason it is not (as opposed to on its way, or switched off).
pub const FAILING: [&str; 4] = ["failed", "auth_failed", "realm_mismatch", "retry_wait"];

/// One moment of the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// Unix seconds.
    pub at: i64,
    pub registered: usize,
    pub failing: usize,
    /// Running totals since start.
    pub registers_sent: u64,
    pub responses: u64,
}

impl Sample {
    /// A sample from the state counts and the driver's counters.
    pub fn new(
        at: i64,
        counts: &BTreeMap<&'static str, usize>,
        registers_sent: u64,
        responses: &BTreeMap<u16, u64>,
    ) -> Sample {
        Sample {
            at,
            registered: counts.get("registered").copied().unwrap_or(0),
            failing: FAILING
                .iter()
                .map(|state| counts.get(state).copied().unwrap_or(0))
                .sum(),
            registers_sent,
            responses: responses.values().sum(),
        }
    }
}

/// The last [`SAMPLES_KEPT`] samples, oldest first.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

impl History {
    pub fn push(&mut self, sample: Sample) {
        if self.samples.len() == SAMPLES_KEPT {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_is_kept_and_failing_rows_are_summed() {
        let counts: BTreeMap<&'static str, usize> = [
            ("registered", 7),
            ("auth_failed", 2),
            ("realm_mismatch", 3),
            ("retry_wait", 1),
            ("disabled", 4),
        ]
        .into_iter()
        .collect();
        let responses: BTreeMap<u16, u64> = [(200, 10), (401, 9)].into_iter().collect();
        let sample = Sample::new(100, &counts, 19, &responses);
        assert_eq!(
            (sample.registered, sample.failing, sample.responses),
            (7, 6, 19)
        );
        let mut history = History::default();
        for i in 0..(SAMPLES_KEPT as i64 + 10) {
            history.push(Sample { at: i, ..sample });
        }
        let kept = history.samples();
        assert_eq!(kept.len(), SAMPLES_KEPT);
        assert_eq!(kept[0].at, 10, "the oldest went first");
    }
}

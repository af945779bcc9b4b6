//! Metric values fixed when the snapshot was taken, in the shapes prometheus-client's own
//! `ConstCounter`/`ConstGauge` do not cover: a family whose members are all known at once
//! (one label, one value each), and a histogram whose buckets were counted by the driver.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::driver::{LATENCY_BOUNDS_MS, LatencyHistogram};

/// Counters or gauges that differ by one label, in the order given (the exposition lists
/// them that way, so a page reads the same from one scrape to the next).
#[derive(Debug)]
pub struct LabelledValues {
    kind: MetricType,
    label: &'static str,
    members: Vec<(String, u64)>,
}

impl LabelledValues {
    pub fn counters(
        label: &'static str,
        members: impl IntoIterator<Item = (impl ToString, u64)>,
    ) -> LabelledValues {
        LabelledValues::new(MetricType::Counter, label, members)
    }

    pub fn gauges(
        label: &'static str,
        members: impl IntoIterator<Item = (impl ToString, u64)>,
    ) -> LabelledValues {
        LabelledValues::new(MetricType::Gauge, label, members)
    }

    fn new(
        kind: MetricType,
        label: &'static str,
        members: impl IntoIterator<Item = (impl ToString, u64)>,
    ) -> LabelledValues {
        LabelledValues {
            kind,
            label,
            members: members
                .into_iter()
                .map(|(value, n)| (value.to_string(), n))
                .collect(),
        }
    }
}

impl EncodeMetric for LabelledValues {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (value, n) in &self.members {
            let labels = [(self.label, value.as_str())];
            let mut member = encoder.encode_family(&labels)?;
            if self.kind == MetricType::Counter {
                member.encode_counter::<NoLabelSet, _, u64>(n, None)?;
            } else {
                member.encode_gauge(n)?;
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        self.kind
    }
}

/// A [`LatencyHistogram`] as the encoder wants it: upper bounds in seconds with the count of
/// each bucket alone (the encoder adds them up again), the last bound +Inf.
#[derive(Debug)]
pub struct CountedHistogram {
    buckets: Vec<(f64, u64)>,
    sum_seconds: f64,
    count: u64,
}

impl From<&LatencyHistogram> for CountedHistogram {
    fn from(histogram: &LatencyHistogram) -> CountedHistogram {
        let bounds = LATENCY_BOUNDS_MS
            .iter()
            .map(|ms| *ms as f64 / 1000.0)
            .chain([f64::INFINITY]);
        // The driver's counts are cumulative, as the exposition shows them.
        let mut below = 0;
        let buckets = bounds
            .zip(histogram.counts)
            .map(|(bound, cumulative)| {
                let own = cumulative.saturating_sub(below);
                below = cumulative;
                (bound, own)
            })
            .collect();
        CountedHistogram {
            buckets,
            sum_seconds: histogram.sum_seconds,
            count: histogram.count,
        }
    }
}

impl EncodeMetric for CountedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum_seconds, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

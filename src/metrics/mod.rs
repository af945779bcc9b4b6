//! Prometheus metrics on `GET /metrics`, on a port of their own (loopback by default).
//!
//! Every scrape takes a [`Snapshot`] — the driver's counters, the registrations by state and
//! the database's health, asked for at that moment — and builds a fresh prometheus-client
//! `Registry` of constant metrics from it; nothing is cached between scrapes. A registry per
//! scrape, rather than long-lived counters or a `Collector`, because the values live in the
//! driver task and can only be asked for asynchronously, while encoding is synchronous: taking
//! the snapshot first and then listing the metrics keeps the whole page in one plain function
//! ([`exposition`]), read top to bottom. prometheus-client does the format (Prometheus text
//! 0.0.4), escaping and naming rules; hyper does HTTP.

mod constant;
pub mod exposition;
mod http;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use crate::driver::DriverStats;
use crate::gateway::{DatabaseHealth, Gateway};

pub use http::serve;

/// Everything one scrape shows, read at the moment of the scrape.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Rows by registration state (`registered`, `retry_wait`, …).
    pub registrations: BTreeMap<&'static str, usize>,
    /// Rows refused by validation (never registered).
    pub invalid_rows: usize,
    pub driver: DriverStats,
    pub database: DatabaseHealth,
    /// This node's part in a cluster (None: not clustered).
    pub cluster: Option<crate::cluster_node::ClusterStatus>,
}

/// Where a scrape gets its [`Snapshot`]: the running gateway, or a fixed one in tests.
pub trait SnapshotSource: Send + Sync + 'static {
    /// `None` when the values cannot be had (the driver has stopped).
    fn snapshot(&self) -> impl Future<Output = Option<Snapshot>> + Send;
}

impl SnapshotSource for Gateway {
    async fn snapshot(&self) -> Option<Snapshot> {
        let registrations = self.driver.status_counts().await.ok()?;
        let driver = self.driver.stats().await.ok()?;
        Some(Snapshot {
            registrations,
            invalid_rows: self.invalid_count(),
            driver,
            database: self.database_health(),
            cluster: self.cluster_status(),
        })
    }
}

//! The running gateway as the RPC server and the daemon see it: the driver, the row loader, the
//! database's health record and the shutdown request, each owned by a type of its own.
//!
//! * [`loader`] — [`RowLoader`]: the table read, validated and applied (start-up, reloads,
//!   `uac.reg_refresh`), the max_removed_share guard, the rows that failed validation.
//! * [`health`] — [`HealthRecord`]: the database as `uacreg.status` and the metrics show it.
//! * [`shutdown`] — [`ShutdownSignal`]: `uacreg.shutdown`'s request to the daemon.
//! * [`history`] — [`History`]: the web console's last hour, sampled every few seconds.
//!
//! [`Gateway`] is the context every RPC method, the table watchers, the status writer and the
//! metrics scrape receive: it holds the three beside the driver handle and answers for them, so
//! none of its users needs to know which part owns what.

pub mod health;
pub mod history;
pub mod loader;
pub mod shutdown;

use std::sync::Arc;

use crate::driver::DriverHandle;
use crate::store::{InvalidRow, RowDefaults, Store};
pub use health::{DatabaseHealth, HealthRecord};
pub use history::{History, Sample};
pub use loader::{RefreshError, ReloadCause, ReloadError, ReloadReport, RowLoader};
pub use shutdown::ShutdownSignal;

pub struct Gateway {
    pub driver: DriverHandle,
    pub show_secrets: bool,
    loader: RowLoader,
    health: Arc<HealthRecord>,
    shutdown: ShutdownSignal,
    /// The cluster task's status, when clustered.
    cluster: Option<Arc<std::sync::Mutex<crate::cluster_node::ClusterStatus>>>,
    /// The console's last hour (see [`Gateway::sample_forever`]).
    history: std::sync::Mutex<History>,
}

impl Gateway {
    pub fn new(
        driver: DriverHandle,
        store: Store,
        defaults: RowDefaults,
        show_secrets: bool,
    ) -> Gateway {
        let health = Arc::new(HealthRecord::new(&store));
        Gateway {
            loader: RowLoader::new(driver.clone(), store, defaults, health.clone()),
            driver,
            show_secrets,
            health,
            shutdown: ShutdownSignal::default(),
            cluster: None,
            history: std::sync::Mutex::new(History::default()),
        }
    }

    /// Clustered: where `uacreg.cluster` reads the cluster task's status.
    pub fn with_cluster(
        mut self,
        status: Arc<std::sync::Mutex<crate::cluster_node::ClusterStatus>>,
    ) -> Gateway {
        self.cluster = Some(status);
        self
    }

    /// The cluster as this node last saw it (None: not clustered).
    pub fn cluster_status(&self) -> Option<crate::cluster_node::ClusterStatus> {
        let board = self.cluster.as_ref()?;
        let status = board.lock().ok().map(|status| status.clone())?;
        Some(status.held_at(std::time::Instant::now()))
    }

    /// This node's id in the cluster (None: not clustered).
    pub fn node_id(&self) -> Option<String> {
        let board = self.cluster.as_ref()?;
        board.lock().ok().map(|status| status.node_id.clone())
    }

    /// Sets the share of running rows a reload may remove without being forced (default 0.5;
    /// 1.0 lets every reload through).
    pub fn with_max_removed_share(mut self, share: f64) -> Gateway {
        self.loader.set_max_removed_share(share);
        self
    }

    /// The row loader.
    pub fn loader(&self) -> &RowLoader {
        &self.loader
    }

    /// The database's health record.
    pub fn health(&self) -> &HealthRecord {
        &self.health
    }

    /// The shutdown request.
    pub fn shutdown(&self) -> &ShutdownSignal {
        &self.shutdown
    }

    /// Reads the whole table, validates it and applies the difference (an operator's reload).
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        self.loader.reload().await
    }

    /// An operator's reload that applies whatever the table says, however many rows it removes
    /// (`uac.reg_reload force`).
    pub async fn reload_forced(&self) -> Result<ReloadReport, ReloadError> {
        self.loader.reload_forced().await
    }

    /// A reload for `cause`, refused when it would remove too many rows; see [`RowLoader`].
    pub async fn reload_because(&self, cause: ReloadCause) -> Result<ReloadReport, ReloadError> {
        self.loader.reload_because(cause).await
    }

    /// `uac.reg_refresh`: re-reads one row and applies it; see [`RowLoader::refresh_one`].
    pub async fn refresh_one(&self, l_uuid: &str) -> Result<bool, RefreshError> {
        self.loader.refresh_one(l_uuid).await
    }

    /// The values used for rows that leave columns empty (`uac.reg_add` validates with them).
    pub fn defaults(&self) -> &RowDefaults {
        self.loader.defaults()
    }

    /// Rows the last successful load rejected.
    pub fn invalid_rows(&self) -> Vec<InvalidRow> {
        self.loader.invalid_rows()
    }

    /// How many rows the last successful load rejected.
    pub fn invalid_count(&self) -> usize {
        self.loader.invalid_count()
    }

    /// Runs `f` with the store (blocking, off the async threads); see [`RowLoader::with_store`].
    pub async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> T + Send + 'static,
    ) -> Result<T, ReloadError> {
        self.loader.with_store(f).await
    }

    /// The console's samples of the last hour, oldest first.
    pub fn history(&self) -> Vec<Sample> {
        self.history
            .lock()
            .map(|history| history.samples())
            .unwrap_or_default()
    }

    /// Takes a sample for the console every [`history::SAMPLE_EVERY`] until the driver is gone.
    pub async fn sample_forever(&self) {
        let mut every = tokio::time::interval(history::SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let (Ok(counts), Ok(stats)) =
                (self.driver.status_counts().await, self.driver.stats().await)
            else {
                return;
            };
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let sample = Sample::new(at, &counts, stats.registers_sent, &stats.responses);
            if let Ok(mut history) = self.history.lock() {
                history.push(sample);
            }
        }
    }

    /// The database's state for `uacreg.status`.
    pub fn database_health(&self) -> DatabaseHealth {
        self.health.snapshot()
    }

    /// Updates the health record (the LISTEN task and the status writer report here).
    pub fn update_health(&self, f: impl FnOnce(&mut DatabaseHealth)) {
        self.health.update(f);
    }

    /// Asks the daemon to shut down gracefully (as SIGTERM does).
    pub fn request_shutdown(&self) {
        self.shutdown.request();
    }

    /// Completes once a shutdown was requested.
    pub async fn shutdown_requested(&self) {
        self.shutdown.requested().await;
    }
}

//! The running gateway as the RPC server and the daemon see it: the driver, the store it loads
//! rows from, and what the last load found wrong.
//!
//! Loading is the one operation that spans layers — a blocking database read, validation, then a
//! diff applied by the driver — so it lives here, once, for start-up and `uac.reg_reload` alike.
//! A failed read changes nothing: the driver only ever sees a complete, validated row set.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use thiserror::Error;
use tracing::{error, info, warn};

use crate::driver::{DriverGone, DriverHandle};
use crate::registration::ReloadSummary;
use crate::store::{InvalidRow, RowDefaults, Store, StoreError};

#[derive(Debug, Error)]
pub enum ReloadError {
    #[error("database read failed, registrations left unchanged: {0}")]
    Store(#[from] StoreError),
    #[error("database task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Driver(#[from] DriverGone),
}

#[derive(Debug, Error)]
pub enum RefreshError {
    #[error("database read failed: {0}")]
    Store(String),
    #[error("the row is not usable: {0}")]
    Invalid(String),
    #[error(transparent)]
    Driver(#[from] DriverGone),
}

/// A row that could not be used, as reported to the operator.
#[derive(Clone, Debug, Serialize)]
pub struct InvalidRowReport {
    pub id: i64,
    pub l_uuid: String,
    pub error: String,
}

/// What a load did.
#[derive(Clone, Debug, Serialize)]
pub struct ReloadReport {
    #[serde(flatten)]
    pub summary: ReloadSummary,
    pub loaded: usize,
    pub invalid: Vec<InvalidRowReport>,
}

pub struct Gateway {
    pub driver: DriverHandle,
    store: Arc<tokio::sync::Mutex<Store>>,
    defaults: RowDefaults,
    invalid: Mutex<Vec<InvalidRow>>,
    pub show_secrets: bool,
    /// Set by `uacreg.shutdown`; the daemon's run loop waits on it beside the signals.
    shutdown: tokio::sync::Notify,
}

impl Gateway {
    pub fn new(
        driver: DriverHandle,
        store: Store,
        defaults: RowDefaults,
        show_secrets: bool,
    ) -> Gateway {
        Gateway {
            driver,
            store: Arc::new(tokio::sync::Mutex::new(store)),
            defaults,
            invalid: Mutex::new(Vec::new()),
            show_secrets,
            shutdown: tokio::sync::Notify::new(),
        }
    }

    /// Reads the whole table, validates it and applies the difference. Reloads are serialised.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let store = self.store.clone();
        let defaults = self.defaults.clone();
        let mut guard = store.lock_owned().await;
        let loaded = tokio::task::spawn_blocking(move || guard.load(&defaults))
            .await
            .map_err(|err| ReloadError::Task(err.to_string()))?;
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(err) => {
                error!("reload failed, keeping the current registrations: {err}");
                return Err(err.into());
            }
        };
        let count = loaded.records.len();
        for bad in &loaded.invalid {
            warn!(
                id = bad.row.id,
                l_uuid = %bad.row.l_uuid,
                "row not loaded: {}",
                bad.error
            );
        }
        let invalid: Vec<InvalidRowReport> = loaded
            .invalid
            .iter()
            .map(|bad| InvalidRowReport {
                id: bad.row.id,
                l_uuid: bad.row.l_uuid.clone(),
                error: bad.error.to_string(),
            })
            .collect();
        let summary = self.driver.reload(loaded.records).await?;
        if let Ok(mut slot) = self.invalid.lock() {
            *slot = loaded.invalid;
        }
        info!(
            loaded = count,
            invalid = invalid.len(),
            added = summary.added,
            changed = summary.changed,
            removed = summary.removed,
            unchanged = summary.unchanged,
            "rows loaded"
        );
        Ok(ReloadReport {
            summary,
            loaded: count,
            invalid,
        })
    }

    /// `uac.reg_refresh`: re-reads one row and applies it. `Ok(false)`: neither the database nor
    /// the table knows the l_uuid. An invalid row leaves the running registration as it is.
    pub async fn refresh_one(&self, l_uuid: &str) -> Result<bool, RefreshError> {
        let defaults = self.defaults.clone();
        let wanted = l_uuid.to_string();
        let loaded = self
            .with_store(move |store| store.load_one(&wanted, &defaults))
            .await
            .map_err(|err| RefreshError::Store(err.to_string()))?
            .map_err(|err| RefreshError::Store(err.to_string()))?;
        let record = match loaded {
            Some(Ok(record)) => Some(record),
            Some(Err(bad)) => {
                warn!(l_uuid = %l_uuid, "refresh: row not usable: {}", bad.error);
                return Err(RefreshError::Invalid(bad.error.to_string()));
            }
            None => None,
        };
        let wanted = l_uuid.to_string();
        let applied = self
            .driver
            .apply(move |table, now| table.apply_one(now, &wanted, record))
            .await?;
        Ok(applied)
    }

    /// The values used for rows that leave columns empty (`uac.reg_add` validates with them).
    pub fn defaults(&self) -> &RowDefaults {
        &self.defaults
    }

    /// Asks the daemon to shut down gracefully (as SIGTERM does).
    pub fn request_shutdown(&self) {
        self.shutdown.notify_one();
    }

    /// Completes once a shutdown was requested.
    pub async fn shutdown_requested(&self) {
        self.shutdown.notified().await;
    }

    /// Rows the last successful load rejected.
    pub fn invalid_rows(&self) -> Vec<InvalidRow> {
        self.invalid
            .lock()
            .map(|rows| rows.clone())
            .unwrap_or_default()
    }

    /// Runs `f` with the store (blocking, off the async threads); for tools and tests that edit
    /// the table through the daemon's own connection.
    pub async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> T + Send + 'static,
    ) -> Result<T, ReloadError> {
        let guard = self.store.clone().lock_owned().await;
        tokio::task::spawn_blocking(move || {
            let mut guard = guard;
            f(&mut guard)
        })
        .await
        .map_err(|err| ReloadError::Task(err.to_string()))
    }
}

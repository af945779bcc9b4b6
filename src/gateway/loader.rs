//! The row loader: reads the whole `uacreg` table (start-up, `uac.reg_reload`, SIGHUP, the
//! periodic reload, PostgreSQL NOTIFY) or one row (`uac.reg_refresh`), validates it, and hands
//! the driver a complete row set to diff against the running registrations.
//!
//! Loading is the one operation that spans layers — a blocking database read, validation, then a
//! diff applied by the driver — so it lives here, once. A failed read changes nothing, and a read
//! that would remove more than `[database] max_removed_share` of the running rows is refused
//! unless forced. Outcomes are reported to the [`HealthRecord`]; the rows that failed validation
//! are kept for `uac.reg_dump` and `uac.reg_info`.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use thiserror::Error;
use tracing::{debug, error, info, warn};

use super::health::HealthRecord;
use crate::driver::{DriverGone, DriverHandle};
use crate::engine::{Removal, RemovalGuard};
use crate::registration::ReloadSummary;
use crate::store::{InvalidRow, RowDefaults, RowError, Store, StoreError};

/// Invalid rows logged one by one per load; the rest are counted in one line. A table whose
/// every row is broken (a wrong default, a bad migration) would otherwise write a line per row
/// at every reload: a million lines that bury the one that says why.
const INVALID_ROWS_LOGGED: usize = 100;

#[derive(Debug, Error)]
pub enum ReloadError {
    #[error("database read failed, registrations left unchanged: {0}")]
    Store(#[from] StoreError),
    #[error(
        "reload refused, registrations left unchanged: the table read would remove {removed} of \
         the {running} running rows ({loaded} rows read), more than max_removed_share {share}; \
         check the table (a truncated table, a wrong schema or database user), then apply it \
         with `uac.reg_reload force` (uacregctl reg_reload --force)"
    )]
    Refused {
        removed: usize,
        running: usize,
        loaded: usize,
        share: f64,
    },
    #[error("database task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Driver(#[from] DriverGone),
}

#[derive(Debug, Error)]
pub enum RefreshError {
    #[error("database read failed: {0}")]
    Store(#[from] StoreError),
    /// The blocking task that reads the row failed (its reason, as [`ReloadError::Task`] says it).
    #[error("database read failed: {0}")]
    Task(String),
    #[error("the row is not usable: {0}")]
    Invalid(RowError),
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

/// Why a reload runs: decides how loudly its outcome is logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadCause {
    /// Start-up, `uac.reg_reload`, SIGHUP: every outcome is logged.
    Operator,
    /// The periodic reload or a PostgreSQL NOTIFY: only changes and the start and end of a
    /// failure streak are logged, so a database outage does not flood the log.
    Automatic,
}

/// Loads rows from the store into the driver.
pub struct RowLoader {
    driver: DriverHandle,
    store: Arc<tokio::sync::Mutex<Store>>,
    defaults: RowDefaults,
    /// Rows the last successful load rejected.
    invalid: Mutex<Vec<InvalidRow>>,
    /// `[database] max_removed_share`: larger removals need `force`.
    max_removed_share: f64,
    health: Arc<HealthRecord>,
}

impl RowLoader {
    /// A loader applying rows of `store` to `driver`, reporting to `health`; removals are limited
    /// to half the running rows until [`RowLoader::set_max_removed_share`] says otherwise.
    pub fn new(
        driver: DriverHandle,
        store: Store,
        defaults: RowDefaults,
        health: Arc<HealthRecord>,
    ) -> RowLoader {
        RowLoader {
            driver,
            store: Arc::new(tokio::sync::Mutex::new(store)),
            defaults,
            invalid: Mutex::new(Vec::new()),
            max_removed_share: 0.5,
            health,
        }
    }

    /// Sets the share of running rows a reload may remove without being forced (default 0.5;
    /// 1.0 lets every reload through).
    pub fn set_max_removed_share(&mut self, share: f64) {
        self.max_removed_share = share;
    }

    /// Reads the whole table, validates it and applies the difference (an operator's reload).
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        self.reload_because(ReloadCause::Operator).await
    }

    /// An operator's reload that applies whatever the table says, however many rows it removes
    /// (`uac.reg_reload force`).
    pub async fn reload_forced(&self) -> Result<ReloadReport, ReloadError> {
        self.load_and_apply(ReloadCause::Operator, true).await
    }

    /// Reads the whole table, validates it and applies the difference, unless it would remove
    /// more than `max_removed_share` of the running rows. Reloads are serialised; a failed or
    /// refused read leaves every registration as it is.
    pub async fn reload_because(&self, cause: ReloadCause) -> Result<ReloadReport, ReloadError> {
        self.load_and_apply(cause, false).await
    }

    async fn load_and_apply(
        &self,
        cause: ReloadCause,
        force: bool,
    ) -> Result<ReloadReport, ReloadError> {
        let store = self.store.clone();
        let defaults = self.defaults.clone();
        let mut guard = store.lock_owned().await;
        let (loaded, layout) = tokio::task::spawn_blocking(move || {
            let mut loaded = guard.load(&defaults);
            if let Ok(loaded) = &mut loaded {
                // Here, not on the driver task: the diff walks sorted records (see
                // RegistrationTable::reload).
                crate::registration::sort_by_l_uuid(&mut loaded.records);
            }
            (loaded, guard.layout())
        })
        .await
        .map_err(|err| ReloadError::Task(err.to_string()))?;
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(err) => {
                let first_failure = self.health.note_reload(Some(&err), layout, self.now_unix());
                if cause == ReloadCause::Operator || first_failure {
                    error!("reload failed, keeping the current registrations: {err}");
                } else {
                    debug!("reload failed again: {err}");
                }
                return Err(err.into());
            }
        };
        let count = loaded.records.len();
        for bad in loaded.invalid.iter().take(INVALID_ROWS_LOGGED) {
            warn!(
                id = bad.row.id,
                l_uuid = %bad.row.l_uuid,
                "row not loaded: {}",
                bad.error
            );
        }
        if let Some(more) = loaded.invalid.len().checked_sub(INVALID_ROWS_LOGGED)
            && more > 0
        {
            warn!(
                "{more} more rows not loaded ({} in all); uac.reg_dump lists every one with its \
                 error",
                loaded.invalid.len()
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
        let share = self.max_removed_share;
        let records = loaded.records;
        // Counted and applied in one step on the driver task: nothing can change the table
        // between the check and the diff.
        let applied = if force {
            Ok(self.driver.reload(records).await?)
        } else {
            let guard = RemovalGuard {
                loaded: count,
                max_share: share,
            };
            self.driver.reload_guarded(records, guard).await?.map_err(
                |Removal { removed, running }| ReloadError::Refused {
                    removed,
                    running,
                    loaded: count,
                    share,
                },
            )
        };
        let summary = match applied {
            Ok(summary) => summary,
            Err(refused) => {
                let first = self.health.note_refusal(&refused);
                if cause == ReloadCause::Operator || first {
                    error!("{refused}");
                } else {
                    debug!("reload refused again: {refused}");
                }
                return Err(refused);
            }
        };
        let recovered = self.health.note_reload(None, layout, self.now_unix());
        if let Ok(mut slot) = self.invalid.lock() {
            *slot = loaded.invalid;
        }
        let changed = summary.added + summary.changed + summary.removed > 0;
        if cause == ReloadCause::Operator || changed || recovered {
            info!(
                loaded = count,
                invalid = invalid.len(),
                added = summary.added,
                changed = summary.changed,
                removed = summary.removed,
                unchanged = summary.unchanged,
                "rows loaded"
            );
        }
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
            .map_err(|err| RefreshError::Task(err.to_string()))??;
        let record = match loaded {
            Some(Ok(record)) => Some(record),
            Some(Err(bad)) => {
                warn!(l_uuid = %l_uuid, "refresh: row not usable: {}", bad.error);
                return Err(RefreshError::Invalid(bad.error));
            }
            None => None,
        };
        let wanted = l_uuid.to_string();
        let applied = self.driver.apply_one(&wanted, record).await?;
        Ok(applied)
    }

    /// The values used for rows that leave columns empty (`uac.reg_add` validates with them).
    pub fn defaults(&self) -> &RowDefaults {
        &self.defaults
    }

    /// Rows the last successful load rejected.
    pub fn invalid_rows(&self) -> Vec<InvalidRow> {
        self.invalid
            .lock()
            .map(|rows| rows.clone())
            .unwrap_or_default()
    }

    /// How many rows the last successful load rejected, without copying them (every metrics
    /// scrape and status call asks; a broken table may hold a million).
    pub fn invalid_count(&self) -> usize {
        self.invalid.lock().map(|rows| rows.len()).unwrap_or(0)
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

    fn now_unix(&self) -> i64 {
        self.driver.clock().unix(std::time::Instant::now())
    }
}

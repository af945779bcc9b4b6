//! The database's health record: what the last reloads, the LISTEN task and the status writer
//! found, as `uacreg.status` and the metrics show it.
//!
//! One record, written by three tasks and read by RPC and scrapes, so it sits behind a mutex of
//! its own; the loader only reports outcomes to it and never reads it to decide anything.

use std::borrow::Cow;
use std::fmt::Display;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError, TableLayout};

/// The database as `uacreg.status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DatabaseHealth {
    /// The engine's name (SQLite, PostgreSQL, MySQL/MariaDB).
    pub engine: Cow<'static, str>,
    /// The URL with its password hidden.
    pub url: String,
    /// Whether the last statement found the database reachable.
    pub reachable: bool,
    /// Kamailio's `version` row for uacreg, when there is one.
    pub kamailio_table_version: Option<i32>,
    pub contact_user_column: bool,
    pub reloads: u64,
    pub reload_failures: u64,
    /// Reloads refused because they would have removed too many rows (see
    /// `[database] max_removed_share`).
    pub reloads_refused: u64,
    /// Unix time of the last successful reload.
    pub last_reload: Option<i64>,
    /// Why the last reload failed (cleared by the next success).
    pub last_error: Option<String>,
    /// PostgreSQL LISTEN uacreg_changed is active.
    pub listening: bool,
    /// Whether the trigger that sends NOTIFY exists (None: not checked, not PostgreSQL).
    pub notify_trigger: Option<bool>,
    pub notifications: u64,
    pub status_rows_written: u64,
    pub status_write_failures: u64,
}

/// The shared, updatable [`DatabaseHealth`].
#[derive(Debug, Default)]
pub struct HealthRecord {
    health: Mutex<DatabaseHealth>,
}

impl HealthRecord {
    /// The record for `store` as it is now (engine, URL, and the layout if connected).
    pub fn new(store: &Store) -> HealthRecord {
        let mut health = DatabaseHealth {
            engine: Cow::Borrowed(store.url().engine.name()),
            url: store.url().to_string(),
            reachable: store.is_connected(),
            ..DatabaseHealth::default()
        };
        if let Some(layout) = store.layout() {
            health.kamailio_table_version = layout.kamailio_version;
            health.contact_user_column = layout.has_contact_user;
        }
        HealthRecord {
            health: Mutex::new(health),
        }
    }

    /// A copy of the record.
    pub fn snapshot(&self) -> DatabaseHealth {
        self.health.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// Changes the record (the LISTEN task and the status writer report here).
    pub fn update(&self, f: impl FnOnce(&mut DatabaseHealth)) {
        if let Ok(mut health) = self.health.lock() {
            f(&mut health);
        }
    }

    /// Records a reload's outcome (`error` None: it succeeded at `now_unix`). Returns true when
    /// it changes the picture: the first failure after a success, or the first success after a
    /// failure.
    pub fn note_reload(
        &self,
        error: Option<&StoreError>,
        layout: Option<TableLayout>,
        now_unix: i64,
    ) -> bool {
        let Ok(mut health) = self.health.lock() else {
            return false;
        };
        let was_failing = health.last_error.is_some();
        if let Some(layout) = layout {
            health.kamailio_table_version = layout.kamailio_version;
            health.contact_user_column = layout.has_contact_user;
        }
        match error {
            Some(err) => {
                health.reload_failures += 1;
                health.reachable = false;
                health.last_error = Some(err.to_string());
                !was_failing
            }
            None => {
                health.reloads += 1;
                health.reachable = true;
                health.last_error = None;
                health.last_reload = Some(now_unix);
                was_failing
            }
        }
    }

    /// Records a refused reload; true when it is the first of a streak (worth a loud log line).
    pub fn note_refusal(&self, refused: &impl Display) -> bool {
        let Ok(mut health) = self.health.lock() else {
            return false;
        };
        let first = !health
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("reload refused"));
        health.reloads_refused += 1;
        health.last_error = Some(refused.to_string());
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_of_the_picture_are_reported() {
        let record = HealthRecord::default();
        let down = StoreError::Open("connection refused".into());
        assert!(record.note_reload(Some(&down), None, 0), "first failure");
        assert!(!record.note_reload(Some(&down), None, 0), "second failure");
        assert!(!record.snapshot().reachable);
        assert!(record.note_reload(None, None, 1_700_000_000), "recovery");
        assert!(!record.note_reload(None, None, 1_700_000_060));
        let health = record.snapshot();
        assert_eq!(health.reloads, 2);
        assert_eq!(health.reload_failures, 2);
        assert_eq!(health.last_reload, Some(1_700_000_060));
        assert_eq!(health.last_error, None);

        assert!(record.note_refusal(&"reload refused: too many removed"));
        assert!(!record.note_refusal(&"reload refused: too many removed"));
        assert_eq!(record.snapshot().reloads_refused, 2);
        record.update(|h| h.notifications += 3);
        assert_eq!(record.snapshot().notifications, 3);
    }
}

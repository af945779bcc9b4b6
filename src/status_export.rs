//! Writing each registration's state to the `uacreg_status` table (`[database] status_table`).
//!
//! Why batched, and why a diff: with 100,000 registrations a write per state change would be
//! hundreds of statements a second at start-up and a steady trickle afterwards. Instead, every
//! `status_interval` the writer takes one pass over the registration table (inside the driver,
//! without copying records), compares each row with what it last wrote, and writes only the
//! differences — new or changed rows and rows of registrations that are gone — in one
//! transaction. A quiet system writes nothing at all. When the database is away the differences
//! simply stay pending and go out in the first round after it is back; registrations never wait
//! for this.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::driver::WallClock;
use crate::gateway::Gateway;
use crate::registration::RegistrationTable;
use crate::store::status::{REASON_COLUMN, column_text};
use crate::store::{StatusRow, StatusScope};

/// What was last written, by l_uuid.
#[derive(Default)]
pub struct StatusExport {
    written: HashMap<String, StatusRow>,
    /// The table still holds rows of an earlier run; the first round empties it.
    cleared: bool,
    /// A cluster node's id: its rows say who wrote them, and it deletes only those (the other
    /// nodes' rows, and rows that moved away from it and were rewritten, are theirs).
    node_id: Option<String>,
}

/// One round's work: rows to (re)write and l_uuids to delete.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StatusChanges {
    pub upserts: Vec<StatusRow>,
    pub removed: Vec<String>,
}

impl StatusChanges {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removed.is_empty()
    }
}

/// The status row of every registration in `table`, as of `now`.
pub fn current_rows(table: &RegistrationTable, clock: &WallClock, now: Instant) -> Vec<StatusRow> {
    let unix = |at: Option<Instant>| at.map_or(0, |at| clock.unix(at));
    let written_at = clock.unix(now);
    table
        .iter()
        .map(|r| {
            let (code, reason) = r.last_response();
            StatusRow {
                l_uuid: r.record().l_uuid().to_owned(),
                state: r.status().name().to_string(),
                last_code: code.map_or(0, i32::from),
                last_reason: column_text(reason, REASON_COLUMN),
                last_success: unix(r.last_registered()),
                next_refresh: unix(r.timer()),
                binding_expires: unix(r.binding_expires()),
                failures: i32::try_from(r.failures()).unwrap_or(i32::MAX),
                updated_at: written_at,
                node_id: String::new(),
            }
        })
        .collect()
}

impl StatusExport {
    /// The writer of a single node (`None`) or of the cluster node `node_id`.
    pub fn new(node_id: Option<String>) -> StatusExport {
        StatusExport {
            node_id,
            ..StatusExport::default()
        }
    }

    /// What differs between `current` and what was last written.
    pub fn changes(&self, current: Vec<StatusRow>) -> StatusChanges {
        let seen: HashSet<&str> = current.iter().map(|row| row.l_uuid.as_str()).collect();
        let removed = self
            .written
            .keys()
            .filter(|k| !seen.contains(k.as_str()))
            .cloned()
            .collect();
        drop(seen);
        let upserts = current
            .into_iter()
            .filter(|row| {
                self.written
                    .get(&row.l_uuid)
                    .is_none_or(|old| !old.same_as(row))
            })
            .collect();
        StatusChanges { upserts, removed }
    }

    /// Marks `changes` as written.
    pub fn committed(&mut self, changes: StatusChanges) {
        for key in changes.removed {
            self.written.remove(&key);
        }
        for row in changes.upserts {
            self.written.insert(row.l_uuid.clone(), row);
        }
    }

    /// One round: compute the differences and write them. Returns the number of rows written
    /// or deleted.
    pub async fn round(&mut self, gateway: &Gateway) -> Result<usize, String> {
        if !self.cleared {
            let node_id = self.node_id.clone();
            gateway
                .with_store(move |store| store.clear_status(scope_of(node_id.as_deref())))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            self.cleared = true;
        }
        let mut current = gateway
            .driver
            .status_rows()
            .await
            .map_err(|e| e.to_string())?;
        if let Some(node_id) = &self.node_id {
            for row in &mut current {
                row.node_id.clone_from(node_id);
            }
        }
        let changes = self.changes(current);
        if changes.is_empty() {
            return Ok(0);
        }
        let count = changes.upserts.len() + changes.removed.len();
        let node_id = self.node_id.clone();
        let result = gateway
            .with_store(move |store| {
                store
                    .write_status(
                        &changes.upserts,
                        &changes.removed,
                        scope_of(node_id.as_deref()),
                    )
                    .map(|()| changes)
            })
            .await
            .map_err(|e| e.to_string())?;
        let changes = result.map_err(|e| e.to_string())?;
        self.committed(changes);
        Ok(count)
    }
}

/// The rows a writer may delete: a cluster node's own, or all of them.
pub fn scope_of(node_id: Option<&str>) -> StatusScope<'_> {
    node_id.map_or(StatusScope::Everything, StatusScope::WrittenBy)
}

/// Runs the writer until the task is aborted.
pub async fn run(gateway: Arc<Gateway>, interval: Duration) {
    let mut export = StatusExport::new(gateway.cluster_status().map(|status| status.node_id));
    let mut failing = false;
    loop {
        tokio::time::sleep(interval).await;
        match export.round(&gateway).await {
            Ok(count) => {
                if failing {
                    info!("uacreg_status is written again");
                    failing = false;
                }
                gateway.update_health(|h| h.status_rows_written += count as u64);
            }
            Err(err) => {
                if !failing {
                    warn!("cannot write uacreg_status (will retry every round): {err}");
                    failing = true;
                }
                gateway.update_health(|h| h.status_write_failures += 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, state: &str, at: i64) -> StatusRow {
        StatusRow {
            l_uuid: id.into(),
            state: state.into(),
            last_code: 200,
            last_reason: "OK".into(),
            last_success: 0,
            next_refresh: 0,
            binding_expires: 0,
            failures: 0,
            updated_at: at,
            node_id: String::new(),
        }
    }

    #[test]
    fn only_differences_are_written() {
        let mut export = StatusExport::default();
        let first = export.changes(vec![row("a", "registering", 1), row("b", "registering", 1)]);
        assert_eq!(first.upserts.len(), 2);
        export.committed(first);
        // Same content, later time: nothing to write.
        assert!(
            export
                .changes(vec![row("a", "registering", 2), row("b", "registering", 2)])
                .is_empty()
        );
        // One changes state, the other is gone.
        let next = export.changes(vec![row("a", "registered", 3)]);
        assert_eq!(next.upserts, vec![row("a", "registered", 3)]);
        assert_eq!(next.removed, vec!["b".to_string()]);
        export.committed(next);
        assert!(export.changes(vec![row("a", "registered", 4)]).is_empty());
    }
}

//! The `uacreg_status` table: what uacregd writes back about each registration, for operators
//! whose dashboards read SQL rather than JSON-RPC — its row, and the store's writes to it.
//!
//! It is a table of its own, keyed by l_uuid, so the operator's `uacreg` rows are never written
//! by the daemon. Writes come in batches (see `crate::status_export`), each batch one transaction
//! of "delete these keys, insert these rows", which every engine understands the same way.

use diesel::Connection as _;
use diesel::prelude::*;

use super::connection::{Connection, with_connection};
use super::schema::uacreg_status;
use super::{Store, StoreError};

/// One registration's status as stored. Times are Unix seconds; 0 means never / none.
#[derive(Clone, Debug, PartialEq, Eq, Insertable, Queryable, Selectable)]
#[diesel(table_name = uacreg_status)]
pub struct StatusRow {
    pub l_uuid: String,
    /// `Status::name()`: registered, retry_wait, auth_failed, …
    pub state: String,
    /// Last final response code (0: none yet).
    pub last_code: i32,
    pub last_reason: String,
    /// When the registrar last accepted the binding.
    pub last_success: i64,
    /// When uacreg will next act on the row (refresh, retry or first REGISTER).
    pub next_refresh: i64,
    /// When the binding the registrar granted runs out.
    pub binding_expires: i64,
    /// Failures in a row.
    pub failures: i32,
    /// When this row was written.
    pub updated_at: i64,
    /// The cluster node that wrote it (empty for a single node).
    pub node_id: String,
}

/// Which `uacreg_status` rows a writer may delete, clear or mark stopped: all of them (a single
/// node owns the table), or only the ones it wrote (a cluster node: a row another node wrote
/// since is that node's, even if this one ran the registration a moment ago).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusScope<'a> {
    Everything,
    WrittenBy(&'a str),
}

/// Width of `uacreg_status.last_reason` (`VARCHAR(255)` in every engine's migration).
pub const REASON_COLUMN: usize = 255;

/// `text` as every engine stores it in a `VARCHAR(max)` column whatever its character set and
/// SQL mode: printable ASCII (anything else — control characters, which PostgreSQL refuses as
/// NUL and a terminal reads as ESC sequences, and non-ASCII, which a latin1 or utf8mb3 MySQL
/// column refuses in strict mode — becomes `?`), at most `max` characters. One over-long or odd
/// reason phrase must not fail every later status batch.
pub fn column_text(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

impl StatusRow {
    /// Whether `self` and `other` say the same thing (ignoring when each was written).
    pub fn same_as(&self, other: &StatusRow) -> bool {
        StatusRow {
            updated_at: other.updated_at,
            ..self.clone()
        } == *other
    }
}

impl Store {
    /// Writes status rows and removes those of registrations that are gone (within `scope`),
    /// in one transaction.
    pub fn write_status(
        &mut self,
        upserts: &[StatusRow],
        removed: &[String],
        scope: StatusScope<'_>,
    ) -> Result<(), StoreError> {
        self.run(|connection, _| {
            // PostgreSQL: INSERT … ON CONFLICT DO UPDATE (a delete-then-insert made it scan the
            // table for every `= ANY(…)` batch: 64 s for 100,000 rows). MySQL/MariaDB: INSERT …
            // ON DUPLICATE KEY UPDATE with rows in key order (delete-then-insert took gap locks
            // that deadlocked cluster nodes writing neighbouring keys). SQLite (no batch upsert
            // in diesel, one writer at a time) deletes by key then inserts.
            macro_rules! delete_removed {
                ($conn:expr, $removed:expr) => {{
                    for chunk in $removed.chunks(500) {
                        let keys = uacreg_status::table.filter(uacreg_status::l_uuid.eq_any(chunk));
                        match scope {
                            StatusScope::Everything => diesel::delete(keys).execute($conn)?,
                            StatusScope::WrittenBy(node) => {
                                diesel::delete(keys.filter(uacreg_status::node_id.eq(node)))
                                    .execute($conn)?
                            }
                        };
                    }
                    Ok::<_, diesel::result::Error>(())
                }};
            }
            macro_rules! upsert {
                ($conn:expr) => {{
                    use diesel::upsert::excluded;
                    use uacreg_status::*;
                    $conn.transaction(|conn| {
                        for chunk in upserts.chunks(500) {
                            diesel::insert_into(table)
                                .values(chunk)
                                .on_conflict(l_uuid)
                                .do_update()
                                .set((
                                    state.eq(excluded(state)),
                                    last_code.eq(excluded(last_code)),
                                    last_reason.eq(excluded(last_reason)),
                                    last_success.eq(excluded(last_success)),
                                    next_refresh.eq(excluded(next_refresh)),
                                    binding_expires.eq(excluded(binding_expires)),
                                    failures.eq(excluded(failures)),
                                    updated_at.eq(excluded(updated_at)),
                                    node_id.eq(excluded(node_id)),
                                ))
                                .execute(conn)?;
                        }
                        delete_removed!(conn, removed)
                    })
                }};
            }
            macro_rules! delete_then_insert {
                ($conn:expr) => {
                    $conn.transaction(|conn| {
                        for chunk in upserts.chunks(500) {
                            let keys: Vec<&str> = chunk.iter().map(|r| r.l_uuid.as_str()).collect();
                            diesel::delete(
                                uacreg_status::table.filter(uacreg_status::l_uuid.eq_any(&keys)),
                            )
                            .execute(conn)?;
                            diesel::insert_into(uacreg_status::table)
                                .values(chunk)
                                .execute(conn)?;
                        }
                        delete_removed!(conn, removed)
                    })
                };
            }
            macro_rules! upsert_mysql {
                ($conn:expr) => {{
                    use super::mysql::new_value as new;
                    use diesel::sql_types::{BigInt, Integer, Text};
                    use uacreg_status::*;
                    let mut sorted = upserts.to_vec();
                    sorted.sort_unstable_by(|a, b| a.l_uuid.cmp(&b.l_uuid));
                    let mut removed = removed.to_vec();
                    removed.sort_unstable();
                    $conn.transaction(|conn| {
                        for chunk in sorted.chunks(500) {
                            diesel::insert_into(table)
                                .values(chunk)
                                .on_conflict(diesel::dsl::DuplicatedKeys)
                                .do_update()
                                .set((
                                    state.eq(new::<Text>("state")),
                                    last_code.eq(new::<Integer>("last_code")),
                                    last_reason.eq(new::<Text>("last_reason")),
                                    last_success.eq(new::<BigInt>("last_success")),
                                    next_refresh.eq(new::<BigInt>("next_refresh")),
                                    binding_expires.eq(new::<BigInt>("binding_expires")),
                                    failures.eq(new::<Integer>("failures")),
                                    updated_at.eq(new::<BigInt>("updated_at")),
                                    node_id.eq(new::<Text>("node_id")),
                                ))
                                .execute(conn)?;
                        }
                        delete_removed!(conn, &removed)
                    })
                }};
            }
            match connection {
                Connection::Postgres(conn) => upsert!(&mut **conn)?,
                Connection::Sqlite(conn) => delete_then_insert!(conn)?,
                Connection::Mysql(conn) => upsert_mysql!(&mut **conn)?,
            }
            Ok(())
        })
    }

    /// Shutdown: every status row in `scope` says `stopped`, so a dashboard does not show
    /// bindings that the daemon no longer refreshes as registered.
    pub fn mark_status_stopped(
        &mut self,
        now_unix: i64,
        scope: StatusScope<'_>,
    ) -> Result<(), StoreError> {
        let changes = (
            uacreg_status::state.eq("stopped"),
            uacreg_status::next_refresh.eq(0i64),
            uacreg_status::updated_at.eq(now_unix),
        );
        self.run(|connection, _| {
            match scope {
                StatusScope::Everything => {
                    with_connection!(connection, conn => diesel::update(uacreg_status::table)
                        .set(changes)
                        .execute(conn)?)
                }
                StatusScope::WrittenBy(node) => {
                    with_connection!(connection, conn => diesel::update(
                        uacreg_status::table.filter(uacreg_status::node_id.eq(node)),
                    )
                    .set(changes)
                    .execute(conn)?)
                }
            };
            Ok(())
        })
    }

    /// Every row of `uacreg_status`, ordered by l_uuid (tests and tools).
    pub fn read_status(&mut self) -> Result<Vec<StatusRow>, StoreError> {
        self.run(|connection, _| {
            let rows = with_connection!(connection, conn => uacreg_status::table
                .select(StatusRow::as_select())
                .order(uacreg_status::l_uuid)
                .load(conn)?);
            Ok(rows)
        })
    }

    /// Empties `uacreg_status` within `scope` (start-up: rows of a previous run may name
    /// registrations that no longer exist).
    pub fn clear_status(&mut self, scope: StatusScope<'_>) -> Result<(), StoreError> {
        self.run(|connection, _| {
            match scope {
                StatusScope::Everything => {
                    with_connection!(connection, conn => diesel::delete(uacreg_status::table)
                        .execute(conn)?)
                }
                StatusScope::WrittenBy(node) => {
                    with_connection!(connection, conn => diesel::delete(
                        uacreg_status::table.filter(uacreg_status::node_id.eq(node)),
                    )
                    .execute(conn)?)
                }
            };
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_text_fits_any_engine() {
        assert_eq!(column_text("OK", REASON_COLUMN), "OK");
        let long = "x".repeat(300);
        assert_eq!(column_text(&long, REASON_COLUMN).len(), REASON_COLUMN);
        assert_eq!(
            column_text("Fehler \u{e4}\u{1f600}\0\r\x1b[0m", 64),
            "Fehler ?????[0m"
        );
    }
}

#[cfg(test)]
mod store_tests {
    use super::*;
    use crate::store::Store;
    use crate::store::fixtures::temp_url;

    #[test]
    fn status_rows_replace_and_remove() {
        let (dir, url) = temp_url("status");
        let mut store = Store::open(&url).unwrap();
        let row = |id: &str, state: &str| StatusRow {
            l_uuid: id.into(),
            state: state.into(),
            last_code: 200,
            last_reason: "OK".into(),
            last_success: 1,
            next_refresh: 2,
            binding_expires: 3,
            failures: 0,
            updated_at: 4,
            node_id: String::new(),
        };
        store
            .write_status(
                &[row("a", "registering"), row("b", "registered")],
                &[],
                StatusScope::Everything,
            )
            .unwrap();
        store
            .write_status(
                &[row("a", "registered")],
                &["b".to_string()],
                StatusScope::Everything,
            )
            .unwrap();
        assert_eq!(store.read_status().unwrap(), vec![row("a", "registered")]);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Cluster nodes: each deletes, clears and marks only the rows it wrote last, so a node
    /// that lost a row (or starts, or stops) never erases what the row's new owner wrote.
    #[test]
    fn a_cluster_node_touches_only_the_rows_it_wrote() {
        let (dir, url) = temp_url("status-scope");
        let mut store = Store::open(&url).unwrap();
        let row = |id: &str, node: &str| StatusRow {
            l_uuid: id.into(),
            state: "registered".into(),
            last_code: 200,
            last_reason: "OK".into(),
            last_success: 1,
            next_refresh: 2,
            binding_expires: 3,
            failures: 0,
            updated_at: 4,
            node_id: node.into(),
        };
        let one = StatusScope::WrittenBy("one");
        let two = StatusScope::WrittenBy("two");
        store
            .write_status(
                &[row("a", "one"), row("b", "one"), row("c", "two")],
                &[],
                one,
            )
            .unwrap();
        // "b" moved to node two, which wrote it; node one then forgets it: two's row stays.
        store.write_status(&[row("b", "two")], &[], two).unwrap();
        store.write_status(&[], &["b".to_string()], one).unwrap();
        let ids = |store: &mut Store| -> Vec<(String, String, String)> {
            store
                .read_status()
                .unwrap()
                .into_iter()
                .map(|r| (r.l_uuid, r.node_id, r.state))
                .collect()
        };
        let reg = |id: &str, node: &str| (id.to_string(), node.to_string(), "registered".into());
        assert_eq!(
            ids(&mut store),
            vec![reg("a", "one"), reg("b", "two"), reg("c", "two")]
        );
        store.mark_status_stopped(9, two).unwrap();
        let stopped = |id: &str| (id.to_string(), "two".to_string(), "stopped".to_string());
        assert_eq!(
            ids(&mut store),
            vec![reg("a", "one"), stopped("b"), stopped("c")]
        );
        store.clear_status(one).unwrap();
        assert_eq!(ids(&mut store), vec![stopped("b"), stopped("c")]);
        store.clear_status(StatusScope::Everything).unwrap();
        assert!(ids(&mut store).is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}

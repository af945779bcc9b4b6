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
    /// Writes status rows and removes those of registrations that are gone, in one transaction.
    pub fn write_status(
        &mut self,
        upserts: &[StatusRow],
        removed: &[String],
    ) -> Result<(), StoreError> {
        self.run(|connection, _| {
            // PostgreSQL: INSERT … ON CONFLICT DO UPDATE (a delete-then-insert made it scan the
            // table for every `= ANY(…)` batch: 64 s for 100,000 rows). SQLite (no batch upsert
            // in diesel) and MySQL (no `excluded`) delete by key then insert: 0.5 s and 1.4 s.
            macro_rules! delete_removed {
                ($conn:expr) => {{
                    for chunk in removed.chunks(500) {
                        diesel::delete(
                            uacreg_status::table.filter(uacreg_status::l_uuid.eq_any(chunk)),
                        )
                        .execute($conn)?;
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
                                ))
                                .execute(conn)?;
                        }
                        delete_removed!(conn)
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
                        delete_removed!(conn)
                    })
                };
            }
            match connection {
                Connection::Postgres(conn) => upsert!(&mut **conn)?,
                Connection::Sqlite(conn) => delete_then_insert!(conn)?,
                Connection::Mysql(conn) => delete_then_insert!(&mut **conn)?,
            }
            Ok(())
        })
    }

    /// Shutdown: every status row says `stopped`, so a dashboard does not show bindings that
    /// the daemon no longer refreshes as registered.
    pub fn mark_status_stopped(&mut self, now_unix: i64) -> Result<(), StoreError> {
        self.run(|connection, _| {
            with_connection!(connection, conn => diesel::update(uacreg_status::table)
                .set((
                    uacreg_status::state.eq("stopped"),
                    uacreg_status::next_refresh.eq(0i64),
                    uacreg_status::updated_at.eq(now_unix),
                ))
                .execute(conn)?);
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

    /// Empties `uacreg_status` (start-up: rows of a previous run may name registrations that no
    /// longer exist).
    pub fn clear_status(&mut self) -> Result<(), StoreError> {
        self.run(|connection, _| {
            with_connection!(connection, conn => diesel::delete(uacreg_status::table).execute(conn)?);
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
        };
        store
            .write_status(&[row("a", "registering"), row("b", "registered")], &[])
            .unwrap();
        store
            .write_status(&[row("a", "registered")], &["b".to_string()])
            .unwrap();
        assert_eq!(store.read_status().unwrap(), vec![row("a", "registered")]);
        let _ = std::fs::remove_dir_all(dir);
    }
}

//! The embedded default: a SQLite file, created and migrated on first open.

use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::StoreError;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// The file path inside `sqlite://path`, `sqlite:path`, `file:path` or a bare path.
pub(super) fn path_of(url: &str) -> &str {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .or_else(|| url.strip_prefix("file:"))
        .unwrap_or(url)
}

#[derive(QueryableByName)]
struct ColumnName {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

/// Opens (creating file and parent directory if needed), tunes and migrates the database.
pub(super) fn open(url: &str) -> Result<SqliteConnection, StoreError> {
    let path = path_of(url);
    if path.is_empty() {
        return Err(StoreError::Url(format!("{url:?} names no file")));
    }
    if path != ":memory:" {
        if let Some(parent) = std::path::Path::new(path).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StoreError::Open(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
        }
    }
    let mut conn =
        SqliteConnection::establish(path).map_err(|e| StoreError::Open(e.to_string()))?;
    // WAL lets an operator's sqlite3 session write while we read; the busy timeout makes a
    // concurrent writer a short wait instead of an error.
    diesel::connection::SimpleConnection::batch_execute(
        &mut conn,
        "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;",
    )
    .map_err(|e| StoreError::Open(e.to_string()))?;
    conn.run_pending_migrations(MIGRATIONS)
        .map_err(|e| StoreError::Migrate(e.to_string()))?;
    add_contact_user_if_missing(&mut conn)?;
    Ok(conn)
}

/// A table created by Kamailio (version 5) lacks `contact_user`; SQLite has no
/// `ADD COLUMN IF NOT EXISTS`, so look first. The column is harmless to Kamailio, whose
/// version 6 has it too.
fn add_contact_user_if_missing(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    let columns: Vec<ColumnName> =
        diesel::sql_query("SELECT name FROM pragma_table_info('uacreg')")
            .load(conn)
            .map_err(|e| StoreError::Migrate(e.to_string()))?;
    if !columns.iter().any(|c| c.name == "contact_user") {
        diesel::sql_query(
            "ALTER TABLE uacreg ADD COLUMN contact_user VARCHAR(64) DEFAULT '' NOT NULL",
        )
        .execute(conn)
        .map_err(|e| StoreError::Migrate(e.to_string()))?;
    }
    Ok(())
}

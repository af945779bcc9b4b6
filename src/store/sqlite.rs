//! The embedded default: a SQLite file, created (with its directory) on first open and tuned so
//! that an operator's `sqlite3` session can write while the daemon reads.

use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;

use super::StoreError;

/// The file path inside `sqlite://path`, `sqlite:path`, `file:path` or a bare path.
pub(super) fn path_of(url: &str) -> &str {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .or_else(|| url.strip_prefix("file:"))
        .unwrap_or(url)
}

/// Opens (creating file and parent directory if needed) and tunes the database at `path`.
pub(super) fn open(path: &str) -> Result<SqliteConnection, StoreError> {
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
    Ok(conn)
}

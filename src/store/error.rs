//! Why a store operation failed. The variants separate what retrying cures (the server is down,
//! a statement failed) from what it does not (a malformed URL, a table without a column), so the
//! session knows when to back off and callers know what to report.

use std::time::Duration;

use thiserror::Error;

/// Messages quoted from client libraries have passed through
/// [`clean_error`](super::connection::clean_error): they never carry a password.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The URL names no engine, no file or no server.
    #[error("invalid database URL: {0}")]
    Url(String),
    /// The server (or file) could not be reached or opened: the start of an outage.
    #[error("cannot connect to the database: {0}")]
    Open(String),
    /// Connected, but the migrations or reading the table's columns failed.
    #[error("cannot migrate the database: {0}")]
    Migrate(String),
    /// Connected, but there is no `uacreg` table (and migrations are off).
    #[error("cannot migrate the database: the uacreg table is missing")]
    TableMissing,
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// The thread that validates rows while they are read could not be started (the process
    /// is out of threads or memory); nothing was loaded.
    #[error("cannot start the row validation thread: {0}")]
    Thread(String),
    #[error(
        "the database is unreachable ({last_error}); next connection attempt in {}s",
        retry_in.as_secs().max(1)
    )]
    Unavailable {
        last_error: String,
        retry_in: Duration,
    },
    /// A row with a `contact_user` for a Kamailio version-5 table, which has no such column.
    #[error(
        "l_uuid {l_uuid:?}: this uacreg table (Kamailio table version {}) has no contact_user column",
        kamailio_version.unwrap_or(5)
    )]
    NoContactUserColumn {
        l_uuid: String,
        kamailio_version: Option<i32>,
    },
    /// Cluster mode: the shard table describes a different number of shards than this node is
    /// configured with. Nodes must agree, or two of them would map one row to different shards.
    #[error(
        "the cluster's shard table holds {in_database} shards but this node is configured with \
         {configured} ([cluster] shards must be the same on every node)"
    )]
    ShardCountMismatch { in_database: i64, configured: u32 },
    /// Cluster mode: a cluster table holds a value no node writes (a negative shard number), or
    /// a value too wide for its column was to be written.
    #[error("cluster table {table}: {detail}")]
    ClusterRow { table: &'static str, detail: String },
    /// Cluster mode: another running process renews this node_id (its row changed within the
    /// last lease under another instance number). Two processes under one name would both
    /// believe they hold its shards, so this one holds nothing until the other is gone.
    #[error(
        "node_id {node_id} is in use by another running uacregd (its last round was \
         {seen_ms_ago} ms ago): give every node its own [cluster] node_id"
    )]
    NodeIdInUse { node_id: String, seen_ms_ago: i64 },
    /// Cluster mode: a lease update changed another number of rows than the rows it had locked
    /// promised; the transaction was rolled back.
    #[error("lease update changed {updated} shard rows, expected {expected}; rolled back")]
    LeaseRace { expected: usize, updated: usize },
}

impl StoreError {
    /// Errors that retrying later may cure (as opposed to a malformed URL).
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            StoreError::Url(_)
                | StoreError::NoContactUserColumn { .. }
                | StoreError::ShardCountMismatch { .. }
                | StoreError::ClusterRow { .. }
        )
    }

    /// The server chose this transaction as the victim of a deadlock (or, on PostgreSQL, of a
    /// serialization conflict) and rolled it back: running it again at once on the same
    /// connection is the cure the servers document, not a reconnect. The drivers do not pass
    /// the error codes through diesel, so the servers' fixed messages are recognised instead
    /// (MySQL/MariaDB 1213 "Deadlock found when trying to get lock; try restarting transaction",
    /// PostgreSQL 40P01 "deadlock detected"). A lock *wait timeout* is not one of these: it
    /// means another session holds the rows for long, and waiting again would only double it.
    pub fn is_deadlock(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error};
        match self {
            StoreError::Query(Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _)) => {
                true
            }
            StoreError::Query(Error::DatabaseError(_, info)) => {
                let message = info.message();
                message.starts_with("Deadlock found when trying to get lock")
                    || message.starts_with("deadlock detected")
            }
            _ => false,
        }
    }

    /// Errors about what the database holds or was asked to hold, not about the connection:
    /// the session keeps its connection and does not retry (the same statement would fail the
    /// same way). A thread that could not be started is not the connection's fault either.
    pub fn is_about_the_data(&self) -> bool {
        matches!(
            self,
            StoreError::Thread(_)
                | StoreError::NoContactUserColumn { .. }
                | StoreError::ShardCountMismatch { .. }
                | StoreError::ClusterRow { .. }
                | StoreError::NodeIdInUse { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::result::{DatabaseErrorKind, Error};

    fn server_says(kind: DatabaseErrorKind, message: &str) -> StoreError {
        StoreError::Query(Error::DatabaseError(kind, Box::new(message.to_string())))
    }

    #[test]
    fn deadlock_victims_are_told_from_other_failures() {
        let mysql = "Deadlock found when trying to get lock; try restarting transaction";
        assert!(server_says(DatabaseErrorKind::Unknown, mysql).is_deadlock());
        assert!(server_says(DatabaseErrorKind::Unknown, "deadlock detected").is_deadlock());
        assert!(
            server_says(
                DatabaseErrorKind::SerializationFailure,
                "could not serialize"
            )
            .is_deadlock()
        );
        let waited = "Lock wait timeout exceeded; try restarting transaction";
        assert!(!server_says(DatabaseErrorKind::Unknown, waited).is_deadlock());
        assert!(!server_says(DatabaseErrorKind::UniqueViolation, "Duplicate entry").is_deadlock());
        assert!(!StoreError::Open("refused".into()).is_deadlock());
    }
}

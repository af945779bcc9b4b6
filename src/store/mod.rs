//! The `uacreg` table: opening the database named by a URL, migrating it, loading and validating
//! rows, writing the optional status table, and (for tests, the demo and tools) writing rows.
//!
//! The backend is chosen by the URL's scheme, never by trying one after another: `sqlite://path`
//! (or a bare path) is the embedded default, `postgres://` and `mysql://` (or `mariadb://`) name a
//! server. Diesel is synchronous, so the daemon calls the store from `spawn_blocking`.
//!
//! **Outages.** A failed statement drops the connection and one fresh connection is tried at
//! once (a restarted server is back in one step). When that fails too the store is *unavailable*:
//! calls fail fast with [`StoreError::Unavailable`], saying when the next attempt is due, and
//! attempts are spaced 1, 2, 4 … 60 s apart so a dead server is not hammered (each delay drawn
//! from its upper half, so daemons sharing the server do not reconnect in step). Nothing here
//! touches the registrations: callers keep the running ones when a read fails.
//!
//! * [`session`] — [`Store`]: the connection, reconnecting, the outage and its back-off.
//! * [`uacreg`] — reading, validating and writing `uacreg` rows.
//! * [`status`] — [`StatusRow`] and the writes to `uacreg_status`.
//! * [`cluster`] — cluster mode's tables: node rows, shard leases (compare-and-set on the
//!   database's clock) and the fenced dialog rows; `cluster_sql`, their statements per engine.
//! * [`error`] — [`StoreError`].
//! * [`connection`] — the URL, the engine, one connection of any engine, migrations.
//! * [`postgres`], [`mysql`] — connecting to a server: timeouts, TLS.
//! * [`layout`] — Kamailio table version 5 or 6: which columns to read.
//! * [`schema`] — diesel's table definitions.
//! * [`row`] — [`RawRow`], a row as stored.
//! * [`validate`](mod@validate) — [`RawRow`] → [`crate::registration::Record`] or a [`RowError`].
//! * [`sqlite`] — the SQLite file and its settings.

pub mod cluster;
mod cluster_sql;
pub mod connection;
pub mod error;
pub mod layout;
pub mod mysql;
pub mod postgres;
pub mod row;
pub mod schema;
pub mod session;
pub mod sqlite;
pub mod status;
pub mod uacreg;
pub mod validate;

#[cfg(test)]
mod fixtures;

pub use cluster::{ClusterView, DialogRow, NodeInfo, NodeRow, ShardLease};
pub use connection::{DbUrl, Engine, ServerTimeouts, redact};
pub use error::StoreError;
pub use layout::TableLayout;
pub use row::RawRow;
pub use session::Store;
pub use status::{StatusRow, StatusScope};
pub use uacreg::{InvalidRow, LoadedRows};
pub use validate::{RowDefaults, RowError, validate};

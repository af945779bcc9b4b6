//! The `uacreg` table uacregd reads in a load run: an SQLite file, or a PostgreSQL server
//! started for the run by the tests' own harness (`tests/support/dbserver.rs`: a fresh data
//! dir on a spare loopback port, `fsync` off).
//!
//! A carrier runs the gateway on a database server, not on a file; the difference shows in the
//! start-up (reading and validating every row) and in reloads. Rows are written through
//! uacreg's own [`Store`] — it creates and migrates the table as the daemon would — in batches
//! of [`BATCH`] rows, one transaction each, made from the [`RowSet`] as they are written, so
//! the tool never holds all rows at once.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use uacreg::registration::Secret;
use uacreg::store::{RawRow, Store};

use crate::rows::{LoadRow, RowSet};
use crate::support::dbserver::{DbServer, Engine, require_engine};

/// Rows per transaction when filling the table. `Store::insert` sends 1,000 rows a statement;
/// 50 statements a transaction keep a failed batch small and the rows in memory few.
pub const BATCH: usize = 50_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

pub enum Table {
    Sqlite { path: PathBuf },
    Postgres { server: Box<DbServer> },
}

impl Table {
    /// An empty table: a file name in `dir`, or a running PostgreSQL server.
    pub fn create(kind: StoreKind, dir: &Path) -> io::Result<Table> {
        match kind {
            StoreKind::Sqlite => Ok(Table::Sqlite {
                path: dir.join("uacreg.db"),
            }),
            StoreKind::Postgres => {
                if !require_engine(Engine::Postgres) {
                    return Err(io::Error::other(
                        "--store postgres needs PostgreSQL (scripts/install-test-deps)",
                    ));
                }
                let server = Box::new(DbServer::start(Engine::Postgres)?);
                eprintln!("   PostgreSQL on {}", server.addr());
                Ok(Table::Postgres { server })
            }
        }
    }

    pub fn kind(&self) -> StoreKind {
        match self {
            Table::Sqlite { .. } => StoreKind::Sqlite,
            Table::Postgres { .. } => StoreKind::Postgres,
        }
    }

    /// The `db_url` uacregd is given.
    pub fn url(&self) -> String {
        match self {
            Table::Sqlite { path } => format!("sqlite://{}", path.display()),
            Table::Postgres { server } => server.url(),
        }
    }

    /// Replaces every row with `rows` (none: an empty table); the time the writing took.
    pub fn replace(&self, rows: Option<&RowSet>) -> io::Result<Duration> {
        let started = Instant::now();
        if let Table::Sqlite { path } = self {
            // A fresh file: no free pages or WAL from an earlier content.
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
        let mut store = self.open()?;
        store.clear().map_err(io::Error::other)?;
        let count = rows.map_or(0, RowSet::len);
        for start in (0..count).step_by(BATCH) {
            let Some(rows) = rows else { break };
            let batch: Vec<RawRow> = rows
                .rows(start..(start + BATCH).min(count))
                .iter()
                .map(raw_row)
                .collect();
            store.insert(&batch).map_err(io::Error::other)?;
        }
        Ok(started.elapsed())
    }

    /// Rewrites `rows` (matched by l_uuid) in one transaction per statement, as an operator's
    /// tool would.
    pub fn update(&self, rows: &[LoadRow]) -> io::Result<()> {
        let mut store = self.open()?;
        for row in rows {
            if !store.update(&raw_row(row)).map_err(io::Error::other)? {
                return Err(io::Error::other(format!("row {} not found", row.l_uuid)));
            }
        }
        Ok(())
    }

    /// A session of uacreg's store (which creates and migrates the table).
    fn open(&self) -> io::Result<Store> {
        Store::open(&self.url()).map_err(io::Error::other)
    }
}

pub fn raw_row(row: &LoadRow) -> RawRow {
    let mut raw = RawRow::new(&row.l_uuid, &row.r_username, &row.r_domain);
    raw.l_username = row.l_username.clone();
    raw.l_domain = row.l_domain.clone();
    raw.realm = row.realm.clone();
    raw.auth_username = row.auth_username.clone();
    raw.auth_password = Secret::new(row.auth_password.clone());
    raw.auth_proxy = row.auth_proxy.clone();
    raw.expires = i64::from(row.expires);
    raw
}

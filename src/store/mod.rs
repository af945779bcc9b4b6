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
//! * [`connection`] — the URL, the engine, one connection of any engine, migrations.
//! * [`postgres`], [`mysql`] — connecting to a server: timeouts, TLS.
//! * [`layout`] — Kamailio table version 5 or 6: which columns to read.
//! * [`schema`] — diesel's table definitions.
//! * [`row`] — [`RawRow`], a row as stored.
//! * [`status`] — [`StatusRow`], a row of `uacreg_status`.
//! * [`validate`] — [`RawRow`] → [`crate::registration::Record`] or a [`RowError`].
//! * [`sqlite`] — the SQLite file and its settings.

pub mod connection;
pub mod layout;
pub mod mysql;
pub mod postgres;
pub mod row;
pub mod schema;
pub mod sqlite;
pub mod status;
pub mod validate;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use diesel::Connection as _;
use diesel::prelude::*;
use thiserror::Error;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::registration::Record;
use connection::{Connection, with_connection};
pub use connection::{DbUrl, Engine, ServerTimeouts, redact};
pub use layout::TableLayout;
pub use row::RawRow;
use row::{DbRow, NewDbRow};
use schema::{uacreg, uacreg_status};
pub use status::StatusRow;
pub use validate::{RowDefaults, RowError, validate};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("invalid database URL: {0}")]
    Url(String),
    #[error("cannot connect to the database: {0}")]
    Open(String),
    #[error("cannot migrate the database: {0}")]
    Migrate(String),
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    #[error(
        "the database is unreachable ({last_error}); next connection attempt in {}s",
        retry_in.as_secs().max(1)
    )]
    Unavailable {
        last_error: String,
        retry_in: Duration,
    },
    #[error("{0}")]
    Layout(String),
}

impl StoreError {
    /// Errors that retrying later may cure (as opposed to a malformed URL).
    pub fn is_transient(&self) -> bool {
        !matches!(self, StoreError::Url(_) | StoreError::Layout(_))
    }
}

/// A row that failed validation, with the reason.
#[derive(Clone, Debug)]
pub struct InvalidRow {
    pub row: RawRow,
    pub error: RowError,
}

/// The result of reading the whole table.
#[derive(Debug, Default)]
pub struct LoadedRows {
    pub records: Vec<Record>,
    pub invalid: Vec<InvalidRow>,
}

/// Spacing of connection attempts while the database is unreachable (jittered by [`Backoff`]).
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);

/// A connection and what was learnt when it opened. Field order matters: the connection is
/// dropped before the runtime it may need.
struct Session {
    connection: Connection,
    layout: TableLayout,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Session {
    fn drop(&mut self) {
        // A runtime may not be dropped (blocking) inside another runtime's context.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Why the store has no connection, and when it tries again.
struct Outage {
    last_error: String,
    attempts: u32,
    next_attempt: Instant,
}

/// Reads all rows (or those with `l_uuid`) ordered by id, with the columns the layout has. A
/// macro rather than a function: the body is compiled once per engine inside `with_connection!`.
macro_rules! read_rows {
    ($conn:expr, $layout:expr, $l_uuid:expr) => {{
        let l_uuid: Option<&str> = $l_uuid;
        let rows: Vec<RawRow> = if $layout.has_contact_user {
            let mut query = uacreg::table
                .select((DbRow::as_select(), uacreg::contact_user))
                .order(uacreg::id)
                .into_boxed();
            if let Some(wanted) = l_uuid {
                query = query.filter(uacreg::l_uuid.eq(wanted));
            }
            query
                .load::<(DbRow, Option<String>)>($conn)?
                .into_iter()
                .map(RawRow::from)
                .collect()
        } else {
            let mut query = uacreg::table
                .select(DbRow::as_select())
                .order(uacreg::id)
                .into_boxed();
            if let Some(wanted) = l_uuid {
                query = query.filter(uacreg::l_uuid.eq(wanted));
            }
            query
                .load::<DbRow>($conn)?
                .into_iter()
                .map(|row| RawRow::from((row, None)))
                .collect()
        };
        Ok::<_, StoreError>(rows)
    }};
}

/// The database holding the `uacreg` table.
pub struct Store {
    url: DbUrl,
    /// Run the migrations on connecting (off: the tables must exist, nothing is created).
    migrate: bool,
    /// Statement and lock bounds for server sessions.
    timeouts: ServerTimeouts,
    session: Option<Session>,
    outage: Option<Outage>,
    /// When the next connection attempt of an outage may be made.
    reconnect: Backoff,
}

impl Store {
    /// Opens the database at `url`, creating and migrating it as needed.
    pub fn open(url: &str) -> Result<Store, StoreError> {
        let mut store = Store::unconnected(url)?;
        store.connect()?;
        Ok(store)
    }

    /// A store for `url` that connects on first use (or on [`Store::connect`]). Only the URL is
    /// checked here.
    pub fn unconnected(url: &str) -> Result<Store, StoreError> {
        Ok(Store {
            url: DbUrl::parse(url)?,
            migrate: true,
            timeouts: ServerTimeouts::default(),
            session: None,
            outage: None,
            reconnect: Backoff::new(FIRST_RETRY, MAX_RETRY),
        })
    }

    /// Statement and lock timeouts for the next server connection (default: 60 s and 10 s).
    pub fn set_timeouts(&mut self, timeouts: ServerTimeouts) {
        self.timeouts = timeouts;
    }

    /// Whether connecting runs the migrations (default on). Off suits a database user that may
    /// only read `uacreg`: nothing is created, and features whose objects are missing
    /// (`uacreg_status`, the NOTIFY trigger) report that they are missing.
    pub fn set_migrate(&mut self, migrate: bool) {
        self.migrate = migrate;
    }

    /// Connects now, whatever the retry schedule says. A failure starts (or extends) the outage.
    pub fn connect(&mut self) -> Result<(), StoreError> {
        self.session = None;
        match Self::start_session(&self.url, self.migrate, self.timeouts) {
            Ok(session) => {
                self.end_outage();
                self.session = Some(session);
                Ok(())
            }
            // Reached the server, but migrating or reading the layout failed (a table renamed
            // away, missing privileges): not an outage, so no back-off; the next call tries again.
            Err(err) if !matches!(err, StoreError::Open(_)) => {
                self.end_outage();
                Err(err)
            }
            Err(err) => {
                self.note_failure(&err);
                Err(err)
            }
        }
    }

    fn end_outage(&mut self) {
        self.reconnect.reset();
        if let Some(outage) = self.outage.take() {
            info!(
                db = %self.url,
                failed_attempts = outage.attempts,
                "database reachable again"
            );
        }
    }

    fn start_session(
        url: &DbUrl,
        migrate: bool,
        timeouts: ServerTimeouts,
    ) -> Result<Session, StoreError> {
        let opened = connection::open(url, migrate, timeouts)?;
        let mut session = Session {
            connection: opened.connection,
            layout: TableLayout {
                kamailio_version: None,
                has_contact_user: true,
            },
            runtime: opened.runtime,
        };
        let _entered = session.runtime.as_ref().map(|rt| rt.enter());
        session.layout = layout::detect(&mut session.connection)?;
        Ok(session)
    }

    fn note_failure(&mut self, err: &StoreError) {
        let now = Instant::now();
        let attempts = self.outage.as_ref().map_or(0, |o| o.attempts) + 1;
        let delay = self.reconnect.next_delay();
        if attempts == 1 {
            warn!(db = %self.url, "database unreachable: {err}; running registrations are kept, reconnecting with back-off");
        }
        self.outage = Some(Outage {
            last_error: err.to_string(),
            attempts,
            next_attempt: now + delay,
        });
    }

    /// The engine and URL (password hidden when displayed).
    pub fn url(&self) -> &DbUrl {
        &self.url
    }

    /// The table layout seen at the last connection (None: not connected yet).
    pub fn layout(&self) -> Option<TableLayout> {
        self.session.as_ref().map(|s| s.layout)
    }

    /// Whether a connection is open (it may still have died since its last use).
    pub fn is_connected(&self) -> bool {
        self.session.is_some()
    }

    /// Runs `op` on the connection, connecting first if needed. A failure drops the connection
    /// and `op` runs once more on a fresh one; if that cannot be had, the outage begins.
    fn run<T>(
        &mut self,
        op: impl Fn(&mut Connection, TableLayout) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let fresh = if self.session.is_none() {
            if let Some(outage) = &self.outage {
                let now = Instant::now();
                if now < outage.next_attempt {
                    return Err(StoreError::Unavailable {
                        last_error: outage.last_error.clone(),
                        retry_in: outage.next_attempt - now,
                    });
                }
            }
            self.connect()?;
            true
        } else {
            false
        };
        let first = self.run_on_session(&op);
        match first {
            Err(err) if !fresh && !matches!(err, StoreError::Layout(_)) => {
                warn!(db = %self.url, "database statement failed: {err}; reconnecting");
                self.connect()?;
                self.run_on_session(&op)
            }
            other => other,
        }
    }

    fn run_on_session<T>(
        &mut self,
        op: &impl Fn(&mut Connection, TableLayout) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let Some(session) = self.session.as_mut() else {
            return Err(StoreError::Open("not connected".into()));
        };
        let _entered = session.runtime.as_ref().map(|rt| rt.enter());
        let result = op(&mut session.connection, session.layout);
        drop(_entered);
        if let Err(err) = &result {
            if !matches!(err, StoreError::Layout(_)) {
                self.session = None;
            }
        }
        result
    }

    /// Reads every row (ordered by id) and validates each on its own.
    pub fn load(&mut self, defaults: &RowDefaults) -> Result<LoadedRows, StoreError> {
        let rows = self.run(|connection, layout| {
            with_connection!(connection, conn => read_rows!(conn, layout, None))
        })?;
        Ok(validate_rows(rows, defaults))
    }

    /// Reads and validates the row with `l_uuid` (`uac.reg_refresh`). `Ok(None)`: no such row.
    pub fn load_one(
        &mut self,
        l_uuid: &str,
        defaults: &RowDefaults,
    ) -> Result<Option<Result<Record, Box<InvalidRow>>>, StoreError> {
        let rows = self.run(|connection, layout| {
            with_connection!(connection, conn => read_rows!(conn, layout, Some(l_uuid)))
        })?;
        Ok(rows.into_iter().next().map(|row| {
            validate(row.clone(), defaults).map_err(|error| Box::new(InvalidRow { row, error }))
        }))
    }

    /// Inserts rows in one transaction (ids are assigned by the database).
    pub fn insert(&mut self, rows: &[RawRow]) -> Result<(), StoreError> {
        self.run(|connection, layout| {
            check_contact_user(rows, layout)?;
            with_connection!(connection, conn => {
                conn.transaction(|conn| {
                    // 17 columns × 1000 rows stays under every engine's limit on bound values.
                    for chunk in rows.chunks(1000) {
                        if layout.has_contact_user {
                            let values: Vec<_> = chunk
                                .iter()
                                .map(|r| (NewDbRow::from(r), uacreg::contact_user.eq(Some(r.contact_user.as_str()))))
                                .collect();
                            diesel::insert_into(uacreg::table).values(values).execute(conn)?;
                        } else {
                            let values: Vec<NewDbRow<'_>> = chunk.iter().map(NewDbRow::from).collect();
                            diesel::insert_into(uacreg::table).values(values).execute(conn)?;
                        }
                    }
                    Ok::<_, diesel::result::Error>(())
                })?;
                Ok(())
            })
        })
    }

    /// Replaces the columns of the row with `row.l_uuid`. Returns whether a row matched.
    pub fn update(&mut self, row: &RawRow) -> Result<bool, StoreError> {
        self.run(|connection, layout| {
            check_contact_user(std::slice::from_ref(row), layout)?;
            let target = uacreg::table.filter(uacreg::l_uuid.eq(&row.l_uuid));
            let n = with_connection!(connection, conn => {
                if layout.has_contact_user {
                    diesel::update(target)
                        .set((NewDbRow::from(row), uacreg::contact_user.eq(Some(row.contact_user.as_str()))))
                        .execute(conn)?
                } else {
                    diesel::update(target).set(NewDbRow::from(row)).execute(conn)?
                }
            });
            Ok(n > 0)
        })
    }

    /// Deletes the row with `l_uuid`. Returns whether a row matched.
    pub fn delete(&mut self, l_uuid: &str) -> Result<bool, StoreError> {
        self.run(|connection, _| {
            let target = uacreg::table.filter(uacreg::l_uuid.eq(l_uuid));
            let n = with_connection!(connection, conn => diesel::delete(target).execute(conn)?);
            Ok(n > 0)
        })
    }

    /// Deletes every row.
    pub fn clear(&mut self) -> Result<(), StoreError> {
        self.run(|connection, _| {
            with_connection!(connection, conn => diesel::delete(uacreg::table).execute(conn)?);
            Ok(())
        })
    }

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

/// A version-5 table cannot hold `contact_user`; say so rather than drop the value.
fn check_contact_user(rows: &[RawRow], layout: TableLayout) -> Result<(), StoreError> {
    if layout.has_contact_user {
        return Ok(());
    }
    match rows.iter().find(|r| !r.contact_user.is_empty()) {
        Some(row) => Err(StoreError::Layout(format!(
            "l_uuid {:?}: this uacreg table (Kamailio table version {}) has no contact_user column",
            row.l_uuid,
            layout
                .kamailio_version
                .map_or("5".to_string(), |v| v.to_string())
        ))),
        None => Ok(()),
    }
}

/// Validates each row on its own; the second row with an l_uuid already seen is reported.
fn validate_rows(rows: Vec<RawRow>, defaults: &RowDefaults) -> LoadedRows {
    let mut loaded = LoadedRows::default();
    let mut first_id: HashMap<String, i64> = HashMap::with_capacity(rows.len());
    for row in rows {
        if !row.l_uuid.is_empty() {
            if let Some(&first) = first_id.get(&row.l_uuid) {
                let error = RowError::Duplicate {
                    l_uuid: row.l_uuid.clone(),
                    first_id: first,
                };
                loaded.invalid.push(InvalidRow { row, error });
                continue;
            }
            first_id.insert(row.l_uuid.clone(), row.id);
        }
        match validate(row.clone(), defaults) {
            Ok(record) => loaded.records.push(record),
            Err(error) => loaded.invalid.push(InvalidRow { row, error }),
        }
    }
    loaded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registration::Secret;

    fn temp_url(name: &str) -> (std::path::PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("uacreg-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let url = format!("sqlite://{}", dir.join("sub/uacreg.db").display());
        (dir, url)
    }

    fn defaults() -> RowDefaults {
        RowDefaults {
            contact_addr: "127.0.0.1:5062".into(),
            sockets: Vec::new(),
        }
    }

    #[test]
    fn creates_file_and_table_and_round_trips_rows() {
        let (dir, url) = temp_url("roundtrip");
        let mut store = Store::open(&url).unwrap();
        let mut row = RawRow::new("u1", "alice", "example.com");
        row.auth_username = "alice".into();
        row.auth_password = Secret::new("pw");
        store
            .insert(&[row.clone(), RawRow::new("u2", "bob", "example.com")])
            .unwrap();
        let loaded = store.load(&defaults()).unwrap();
        assert_eq!(loaded.records.len(), 2);
        assert_eq!(loaded.records[0].auth_password().expose(), "pw");
        row.expires = 60;
        assert!(store.update(&row).unwrap());
        assert!(store.delete("u2").unwrap());
        assert!(!store.delete("u2").unwrap());
        let loaded = Store::open(&url).unwrap().load(&defaults()).unwrap();
        assert_eq!(loaded.records.len(), 1);
        assert_eq!(loaded.records[0].expires, 60);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn bad_rows_are_reported_and_the_rest_load() {
        let (dir, url) = temp_url("bad");
        let mut store = Store::open(&url).unwrap();
        let mut bad = RawRow::new("u2", "bob", "bad domain");
        bad.auth_password = Secret::new("topsecret");
        store
            .insert(&[
                RawRow::new("u1", "a", "example.com"),
                bad,
                RawRow::new("u3", "c", "example.com"),
            ])
            .unwrap();
        let loaded = store.load(&defaults()).unwrap();
        assert_eq!(loaded.records.len(), 2);
        assert_eq!(loaded.invalid.len(), 1);
        assert_eq!(loaded.invalid[0].row.l_uuid, "u2");
        assert!(!format!("{:?}", loaded.invalid).contains("topsecret"));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Kamailio's own DDL (db_sqlite/uac-create.sql, table version 5) and its version row.
    const KAMAILIO_V5_SQLITE: &str = "CREATE TABLE version (table_name VARCHAR(32) NOT NULL, table_version INTEGER DEFAULT 0 NOT NULL);
        CREATE TABLE uacreg (id INTEGER PRIMARY KEY NOT NULL, l_uuid VARCHAR(64) DEFAULT '' NOT NULL,
          l_username VARCHAR(64) DEFAULT '' NOT NULL, l_domain VARCHAR(64) DEFAULT '' NOT NULL,
          r_username VARCHAR(64) DEFAULT '' NOT NULL, r_domain VARCHAR(64) DEFAULT '' NOT NULL,
          realm VARCHAR(64) DEFAULT '' NOT NULL, auth_username VARCHAR(64) DEFAULT '' NOT NULL,
          auth_password VARCHAR(64) DEFAULT '' NOT NULL, auth_ha1 VARCHAR(128) DEFAULT '' NOT NULL,
          auth_proxy VARCHAR(255) DEFAULT '' NOT NULL, expires INTEGER DEFAULT 0 NOT NULL,
          flags INTEGER DEFAULT 0 NOT NULL, reg_delay INTEGER DEFAULT 0 NOT NULL,
          contact_addr VARCHAR(255) DEFAULT '' NOT NULL, socket VARCHAR(128) DEFAULT '' NOT NULL,
          CONSTRAINT uacreg_l_uuid_idx UNIQUE (l_uuid));
        INSERT INTO version (table_name, table_version) values ('uacreg','5');
        INSERT INTO uacreg (l_uuid, l_username, l_domain, r_username, r_domain, expires)
          VALUES ('k1', 'k1', 'd', 'k1', 'example.com', 3600);";

    fn uacreg_columns(path: &str) -> Vec<String> {
        #[derive(QueryableByName)]
        struct Col {
            #[diesel(sql_type = diesel::sql_types::Text)]
            name: String,
        }
        let mut conn = diesel::sqlite::SqliteConnection::establish(path).unwrap();
        diesel::sql_query("SELECT name FROM pragma_table_info('uacreg')")
            .load::<Col>(&mut conn)
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn kamailio_version_5_table_is_used_as_is() {
        let (dir, url) = temp_url("kamailio");
        let path = sqlite::path_of(&url).to_string();
        std::fs::create_dir_all(std::path::Path::new(&path).parent().unwrap()).unwrap();
        let mut conn = diesel::sqlite::SqliteConnection::establish(&path).unwrap();
        diesel::connection::SimpleConnection::batch_execute(&mut conn, KAMAILIO_V5_SQLITE).unwrap();
        drop(conn);
        let before = uacreg_columns(&path);
        let mut store = Store::open(&url).unwrap();
        assert_eq!(
            store.layout(),
            Some(TableLayout {
                kamailio_version: Some(5),
                has_contact_user: false
            })
        );
        let loaded = store.load(&defaults()).unwrap();
        assert_eq!(loaded.records.len(), 1);
        assert_eq!(loaded.records[0].contact_user(), "");
        // Rows can still be written, but a contact_user has nowhere to go: a clear error.
        store
            .insert(&[RawRow::new("k2", "k2", "example.com")])
            .unwrap();
        let mut with_user = RawRow::new("k3", "k3", "example.com");
        with_user.contact_user = "line7".into();
        let err = store.insert(&[with_user]).unwrap_err();
        assert!(err.to_string().contains("no contact_user column"), "{err}");
        assert_eq!(store.load(&defaults()).unwrap().records.len(), 2);
        drop(store);
        assert_eq!(uacreg_columns(&path), before, "the table was altered");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn without_migrations_nothing_is_created() {
        let (dir, url) = temp_url("nomigrate");
        let path = sqlite::path_of(&url).to_string();
        std::fs::create_dir_all(std::path::Path::new(&path).parent().unwrap()).unwrap();
        let mut conn = diesel::sqlite::SqliteConnection::establish(&path).unwrap();
        diesel::connection::SimpleConnection::batch_execute(&mut conn, KAMAILIO_V5_SQLITE).unwrap();
        let tables = |conn: &mut diesel::sqlite::SqliteConnection| {
            #[derive(QueryableByName)]
            struct Name {
                #[diesel(sql_type = diesel::sql_types::Text)]
                name: String,
            }
            diesel::sql_query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")
                .load::<Name>(conn)
                .unwrap()
                .into_iter()
                .map(|n| n.name)
                .collect::<Vec<_>>()
        };
        let before = tables(&mut conn);
        let mut store = Store::unconnected(&url).unwrap();
        store.set_migrate(false);
        assert_eq!(store.load(&defaults()).unwrap().records.len(), 1);
        assert_eq!(tables(&mut conn), before);
        // The optional table is missing: a clear error, the rest works.
        let err = store.read_status().unwrap_err();
        assert!(err.to_string().contains("uacreg_status"), "{err}");
        assert_eq!(store.load(&defaults()).unwrap().records.len(), 1);
        // A database without the uacreg table at all says so.
        let (dir2, url2) = temp_url("nomigrate-empty");
        let mut empty = Store::unconnected(&url2).unwrap();
        empty.set_migrate(false);
        let err = empty.load(&defaults()).unwrap_err();
        assert!(err.to_string().contains("uacreg table is missing"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(dir2);
    }

    #[test]
    fn url_scheme_picks_the_backend_and_shows_the_real_error() {
        // Nothing listens on port 1: the engine's own error comes back, never a SQLite file.
        let err = Store::open("postgres://u:hunter2@127.0.0.1:1/db")
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::Open(_)), "{err}");
        assert!(!err.to_string().contains("hunter2"));
        let err = Store::open("mysql://u:hunter2@127.0.0.1:1/db")
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::Open(_)), "{err}");
        assert!(!err.to_string().contains("hunter2"));
        assert!(!std::path::Path::new("postgres:").exists());
        assert!(matches!(Store::open("redis://x"), Err(StoreError::Url(_))));
    }

    #[test]
    fn an_unreachable_database_is_retried_with_back_off() {
        let mut store = Store::unconnected("postgres://u:p@127.0.0.1:1/db").unwrap();
        assert!(matches!(store.load(&defaults()), Err(StoreError::Open(_))));
        // The next call within the back-off fails at once, saying when the next attempt is.
        let err = store.load(&defaults()).unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
        assert!(
            err.to_string().contains("next connection attempt in"),
            "{err}"
        );
        // The first delay of an outage is FIRST_RETRY at most (jitter only shortens it).
        let StoreError::Unavailable { retry_in, .. } = err else {
            unreachable!()
        };
        assert!(retry_in <= FIRST_RETRY, "{retry_in:?}");
    }

    /// schema/<engine>.sql must say exactly what the migrations do, statement by statement.
    #[test]
    fn schema_files_match_the_migrations() {
        fn normalise(sql: &str) -> String {
            sql.lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join(" ")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for engine in ["sqlite", "postgres", "mysql"] {
            let mut dirs: Vec<_> = std::fs::read_dir(root.join("migrations").join(engine))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            dirs.sort();
            let migrations: String = dirs
                .iter()
                .map(|d| std::fs::read_to_string(d.join("up.sql")).unwrap())
                .collect::<Vec<_>>()
                .join("\n");
            let schema =
                std::fs::read_to_string(root.join("schema").join(format!("{engine}.sql"))).unwrap();
            assert_eq!(
                normalise(&schema),
                normalise(&migrations),
                "schema/{engine}.sql differs from migrations/{engine}"
            );
        }
    }

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

    #[test]
    fn hundred_thousand_rows_load() {
        let (dir, url) = temp_url("big");
        let mut store = Store::open(&url).unwrap();
        let rows: Vec<RawRow> = (0..100_000)
            .map(|i| RawRow::new(&format!("uuid{i}"), &format!("user{i}"), "example.com"))
            .collect();
        store.insert(&rows).unwrap();
        let loaded = store.load(&defaults()).unwrap();
        assert_eq!(loaded.records.len(), 100_000);
        let _ = std::fs::remove_dir_all(dir);
    }
}

//! The `uacreg` table: opening the database named by a URL, migrating it, loading and validating
//! rows, and (for tests, the demo and tools) writing them.
//!
//! The backend is chosen by the URL's scheme, never by trying one after another: `sqlite://path`
//! (or a bare path) is the embedded default; `postgres://` and `mysql://` name backends that a
//! later build adds, and are refused with a clear error until then. Diesel is synchronous, so the
//! daemon calls the store from `spawn_blocking`.
//!
//! * [`schema`] — diesel's table definition.
//! * [`row`] — [`RawRow`], a row as stored.
//! * [`validate`] — [`RawRow`] → [`crate::registration::Record`] or a [`RowError`].
//! * [`sqlite`] — opening and migrating SQLite.

pub mod row;
pub mod schema;
pub mod sqlite;
pub mod validate;

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use thiserror::Error;

use crate::registration::Record;
pub use row::RawRow;
use row::{DbRow, NewDbRow};
use schema::uacreg;
pub use validate::{RowDefaults, RowError, validate};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("invalid database URL: {0}")]
    Url(String),
    #[error("the {0} backend is not built into this uacregd (only sqlite is)")]
    BackendNotBuilt(&'static str),
    #[error("cannot open the database: {0}")]
    Open(String),
    #[error("cannot migrate the database: {0}")]
    Migrate(String),
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
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

/// An open database holding the `uacreg` table.
pub struct Store {
    conn: SqliteConnection,
}

impl Store {
    /// Opens the database at `url`, creating and migrating it as needed.
    pub fn open(url: &str) -> Result<Store, StoreError> {
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("postgres") | Some("postgresql") => Err(StoreError::BackendNotBuilt("PostgreSQL")),
            Some("mysql") | Some("mariadb") => Err(StoreError::BackendNotBuilt("MySQL/MariaDB")),
            Some("sqlite") | Some("file") | None => Ok(Store {
                conn: sqlite::open(url)?,
            }),
            Some(other) => Err(StoreError::Url(format!(
                "unknown scheme {other:?} (use sqlite://, postgres:// or mysql://)"
            ))),
        }
    }

    /// Reads every row (ordered by id) and validates each on its own.
    pub fn load(&mut self, defaults: &RowDefaults) -> Result<LoadedRows, StoreError> {
        let rows: Vec<DbRow> = uacreg::table
            .select(DbRow::as_select())
            .order(uacreg::id)
            .load(&mut self.conn)?;
        let mut loaded = LoadedRows::default();
        let mut first_id: HashMap<String, i64> = HashMap::with_capacity(rows.len());
        for row in rows {
            let row = RawRow::from(row);
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
        Ok(loaded)
    }

    /// Reads and validates the row with `l_uuid` (`uac.reg_refresh`). `Ok(None)`: no such row.
    pub fn load_one(
        &mut self,
        l_uuid: &str,
        defaults: &RowDefaults,
    ) -> Result<Option<Result<Record, Box<InvalidRow>>>, StoreError> {
        let row: Option<DbRow> = uacreg::table
            .select(DbRow::as_select())
            .filter(uacreg::l_uuid.eq(l_uuid))
            .order(uacreg::id)
            .first(&mut self.conn)
            .optional()?;
        Ok(row.map(|row| {
            let row = RawRow::from(row);
            validate(row.clone(), defaults).map_err(|error| Box::new(InvalidRow { row, error }))
        }))
    }

    /// Inserts rows in one transaction (ids are assigned by the database).
    pub fn insert(&mut self, rows: &[RawRow]) -> Result<(), StoreError> {
        self.conn.transaction(|conn| {
            // SQLite allows 32766 bound variables per statement; 17 columns × 1000 stays under.
            for chunk in rows.chunks(1000) {
                let values: Vec<NewDbRow<'_>> = chunk.iter().map(NewDbRow::from).collect();
                diesel::insert_into(uacreg::table)
                    .values(&values)
                    .execute(conn)?;
            }
            Ok::<_, diesel::result::Error>(())
        })?;
        Ok(())
    }

    /// Replaces the columns of the row with `row.l_uuid`. Returns whether a row matched.
    pub fn update(&mut self, row: &RawRow) -> Result<bool, StoreError> {
        let n = diesel::update(uacreg::table.filter(uacreg::l_uuid.eq(&row.l_uuid)))
            .set(NewDbRow::from(row))
            .execute(&mut self.conn)?;
        Ok(n > 0)
    }

    /// Deletes the row with `l_uuid`. Returns whether a row matched.
    pub fn delete(&mut self, l_uuid: &str) -> Result<bool, StoreError> {
        let n = diesel::delete(uacreg::table.filter(uacreg::l_uuid.eq(l_uuid)))
            .execute(&mut self.conn)?;
        Ok(n > 0)
    }

    /// Deletes every row.
    pub fn clear(&mut self) -> Result<(), StoreError> {
        diesel::delete(uacreg::table).execute(&mut self.conn)?;
        Ok(())
    }
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
        assert_eq!(loaded.records[0].auth_password.expose(), "pw");
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

    #[test]
    fn kamailio_created_table_gets_contact_user() {
        let (dir, url) = temp_url("kamailio");
        let path = sqlite::path_of(&url).to_string();
        std::fs::create_dir_all(std::path::Path::new(&path).parent().unwrap()).unwrap();
        let mut conn = SqliteConnection::establish(&path).unwrap();
        diesel::connection::SimpleConnection::batch_execute(
            &mut conn,
            "CREATE TABLE version (table_name VARCHAR(32) NOT NULL, table_version INTEGER DEFAULT 0 NOT NULL);
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
               VALUES ('k1', 'k1', 'd', 'k1', 'example.com', 3600);",
        )
        .unwrap();
        drop(conn);
        let loaded = Store::open(&url).unwrap().load(&defaults()).unwrap();
        assert_eq!(loaded.records.len(), 1);
        assert_eq!(loaded.records[0].contact_user, "");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn url_scheme_picks_the_backend() {
        assert!(matches!(
            Store::open("postgres://x/y"),
            Err(StoreError::BackendNotBuilt(_))
        ));
        assert!(matches!(
            Store::open("mysql://x/y"),
            Err(StoreError::BackendNotBuilt(_))
        ));
        assert!(matches!(Store::open("redis://x"), Err(StoreError::Url(_))));
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

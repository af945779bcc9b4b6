//! The `uacreg` rows: reading and validating them (start-up, `uac.reg_reload`,
//! `uac.reg_refresh`), and writing them (`uac.reg_add`, tests, the demo and tools).
//!
//! A bad row never fails a read: each row is validated on its own, and the ones that fail are
//! returned beside the good ones so the operator sees them in `uac.reg_dump`.

use std::collections::HashMap;

use diesel::Connection as _;
use diesel::prelude::*;

use super::connection::with_connection;
use super::layout::TableLayout;
use super::row::{DbRow, NewDbRow, RawRow};
use super::schema::uacreg;
use super::validate::{RowDefaults, RowError, validate};
use super::{Store, StoreError};
use crate::registration::Record;

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

/// Rows the reader hands to the validating thread at a time.
const BATCH_ROWS: usize = 4096;

/// Batches read ahead of validation: bounds what a slow validator leaves in memory.
const BATCHES_AHEAD: usize = 8;

/// Reads all rows (or those with `l_uuid`) ordered by id, with the columns the layout has, and
/// hands each to `$each` as it arrives. A macro rather than a function: the body is compiled
/// once per engine inside `with_connection!`.
macro_rules! read_rows {
    ($conn:expr, $layout:expr, $l_uuid:expr, $each:expr) => {{
        use diesel::connection::DefaultLoadingMode;
        let l_uuid: Option<&str> = $l_uuid;
        let mut each = $each;
        if $layout.has_contact_user {
            let mut query = uacreg::table
                .select((DbRow::as_select(), uacreg::contact_user))
                .order(uacreg::id)
                .into_boxed();
            if let Some(wanted) = l_uuid {
                query = query.filter(uacreg::l_uuid.eq(wanted));
            }
            for row in query.load_iter::<(DbRow, Option<String>), DefaultLoadingMode>($conn)? {
                each(RawRow::from(row?));
            }
        } else {
            let mut query = uacreg::table
                .select(DbRow::as_select())
                .order(uacreg::id)
                .into_boxed();
            if let Some(wanted) = l_uuid {
                query = query.filter(uacreg::l_uuid.eq(wanted));
            }
            for row in query.load_iter::<DbRow, DefaultLoadingMode>($conn)? {
                each(RawRow::from((row?, None)));
            }
        }
        Ok::<_, StoreError>(())
    }};
}

impl Store {
    /// Reads every row (ordered by id) and validates each on its own. Validation runs on a
    /// thread of its own while the next rows are read: at a million rows the two take about as
    /// long as each other, and a reload answers in the time of the longer one.
    pub fn load(&mut self, defaults: &RowDefaults) -> Result<LoadedRows, StoreError> {
        self.run(|connection, layout| {
            std::thread::scope(|scope| {
                let (batches, received) = std::sync::mpsc::sync_channel(BATCHES_AHEAD);
                let validating = std::thread::Builder::new()
                    .name("uacreg-validate".into())
                    .spawn_scoped(scope, move || {
                        let mut validation = Validation::new(defaults);
                        for batch in received {
                            validation.add(batch);
                        }
                        validation.loaded
                    })
                    .map_err(|err| StoreError::Thread(err.to_string()))?;
                let mut batch = Vec::with_capacity(BATCH_ROWS);
                let read = with_connection!(connection, conn => read_rows!(conn, layout, None, |row| {
                    batch.push(row);
                    if batch.len() == BATCH_ROWS {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ROWS));
                        // Only fails if the validating thread panicked; join reports that.
                        let _ = batches.send(full);
                    }
                }));
                if !batch.is_empty() {
                    let _ = batches.send(batch);
                }
                drop(batches);
                let loaded = validating
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                read.map(|()| loaded)
            })
        })
    }

    /// Reads and validates the row with `l_uuid` (`uac.reg_refresh`). `Ok(None)`: no such row.
    pub fn load_one(
        &mut self,
        l_uuid: &str,
        defaults: &RowDefaults,
    ) -> Result<Option<Result<Record, Box<InvalidRow>>>, StoreError> {
        let row = self.run(|connection, layout| {
            let mut first = None;
            with_connection!(connection, conn => read_rows!(conn, layout, Some(l_uuid), |row| {
                first.get_or_insert(row);
            }))?;
            Ok(first)
        })?;
        Ok(row.map(|row| {
            validate(&row, defaults).map_err(|error| Box::new(InvalidRow { row, error }))
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
}

/// A version-5 table cannot hold `contact_user`; say so rather than drop the value.
fn check_contact_user(rows: &[RawRow], layout: TableLayout) -> Result<(), StoreError> {
    if layout.has_contact_user {
        return Ok(());
    }
    match rows.iter().find(|r| !r.contact_user.is_empty()) {
        Some(row) => Err(StoreError::NoContactUserColumn {
            l_uuid: row.l_uuid.clone(),
            kamailio_version: layout.kamailio_version,
        }),
        None => Ok(()),
    }
}

/// Rows validated one by one, in the order read: the first row of an `l_uuid` wins, later ones
/// are reported as duplicates of it.
struct Validation<'a> {
    defaults: &'a RowDefaults,
    first_id: HashMap<String, i64>,
    loaded: LoadedRows,
}

impl<'a> Validation<'a> {
    fn new(defaults: &'a RowDefaults) -> Validation<'a> {
        Validation {
            defaults,
            first_id: HashMap::new(),
            loaded: LoadedRows::default(),
        }
    }

    fn add(&mut self, rows: Vec<RawRow>) {
        for row in rows {
            if !row.l_uuid.is_empty() {
                if let Some(&first) = self.first_id.get(&row.l_uuid) {
                    let error = RowError::Duplicate {
                        l_uuid: row.l_uuid.clone(),
                        first_id: first,
                    };
                    self.loaded.invalid.push(InvalidRow { row, error });
                    continue;
                }
                self.first_id.insert(row.l_uuid.clone(), row.id);
            }
            match validate(&row, self.defaults) {
                Ok(record) => self.loaded.records.push(record),
                Err(error) => self.loaded.invalid.push(InvalidRow { row, error }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registration::Secret;
    use crate::store::fixtures::{defaults, temp_url};
    use crate::store::sqlite;

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

    #[test]
    fn rows_validated_beside_the_read_keep_their_order_and_their_errors() {
        // More rows than several batches, with broken rows in the first, a middle and the
        // last (partial) batch: every row comes back once, good ones in id order.
        let (dir, url) = temp_url("batches");
        let mut store = Store::open(&url).unwrap();
        let total = 3 * BATCH_ROWS + 17;
        let broken = [0, BATCH_ROWS + 5, total - 1];
        let rows: Vec<RawRow> = (0..total)
            .map(|i| {
                let domain = if broken.contains(&i) {
                    "bad domain"
                } else {
                    "example.com"
                };
                RawRow::new(&format!("u{i:06}"), &format!("user{i}"), domain)
            })
            .collect();
        store.insert(&rows).unwrap();
        let loaded = store.load(&defaults()).unwrap();
        assert_eq!(loaded.records.len(), total - broken.len());
        let invalid: Vec<&str> = loaded
            .invalid
            .iter()
            .map(|bad| bad.row.l_uuid.as_str())
            .collect();
        let expected: Vec<String> = broken.iter().map(|i| format!("u{i:06}")).collect();
        assert_eq!(invalid, expected);
        assert!(
            loaded
                .records
                .windows(2)
                .all(|pair| pair[0].id < pair[1].id)
        );
        assert!(
            loaded
                .records
                .iter()
                .all(|record| record.r_domain() == "example.com")
        );
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
        assert!(
            matches!(&err, StoreError::NoContactUserColumn { l_uuid, .. } if l_uuid == "k3"),
            "{err:?}"
        );
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
        assert!(matches!(err, StoreError::TableMissing), "{err:?}");
        assert!(err.to_string().contains("uacreg table is missing"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(dir2);
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

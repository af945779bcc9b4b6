//! Which `uacreg` table we were given: Kamailio's version 5 (no `contact_user`), version 6, or one
//! uacreg created.
//!
//! Operators point uacreg at the database Kamailio already uses, and Kamailio refuses to start
//! when its `version` row does not match the columns it expects. So a table that is there is used
//! exactly as it is: no column is added, no version row written. The layout is read from the
//! table's columns (the truth) and the `version` row (reported, for the operator).

use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};

use super::StoreError;
use super::connection::{Connection, with_connection};

/// What the open database's `uacreg` table looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableLayout {
    /// `table_version` of Kamailio's `version` row for uacreg (None: no such table or row).
    pub kamailio_version: Option<i32>,
    /// Version 6 and uacreg's own table have `contact_user`; version 5 does not.
    pub has_contact_user: bool,
}

#[derive(QueryableByName)]
struct ColumnName {
    #[diesel(sql_type = Text)]
    name: String,
}

#[derive(QueryableByName)]
struct TableVersion {
    #[diesel(sql_type = Integer)]
    table_version: i32,
}

/// Reads the layout of the `uacreg` table on `connection`.
pub fn detect(connection: &mut Connection) -> Result<TableLayout, StoreError> {
    let columns_sql = match connection {
        Connection::Sqlite(_) => "SELECT name FROM pragma_table_info('uacreg')",
        Connection::Postgres(_) => {
            "SELECT column_name::text AS name FROM information_schema.columns \
             WHERE table_name = 'uacreg' AND table_schema = current_schema()"
        }
        Connection::Mysql(_) => {
            "SELECT CAST(column_name AS CHAR) AS name FROM information_schema.columns \
             WHERE table_name = 'uacreg' AND table_schema = DATABASE()"
        }
    };
    let version_sql = "SELECT table_version FROM version WHERE table_name = 'uacreg'";
    with_connection!(connection, conn => {
        let columns: Vec<ColumnName> = diesel::sql_query(columns_sql)
            .load(conn)
            .map_err(|e| StoreError::Migrate(format!("cannot read the uacreg columns: {e}")))?;
        if columns.is_empty() {
            return Err(StoreError::TableMissing);
        }
        // No `version` table is normal for a database only uacreg uses.
        let version: Option<TableVersion> = diesel::sql_query(version_sql)
            .load::<TableVersion>(conn)
            .ok()
            .and_then(|rows| rows.into_iter().next());
        Ok(TableLayout {
            kamailio_version: version.map(|v| v.table_version),
            has_contact_user: columns.iter().any(|c| c.name.eq_ignore_ascii_case("contact_user")),
        })
    })
}

//! Rows of the `uacreg_status` table: what uacregd writes back about each registration, for
//! operators whose dashboards read SQL rather than JSON-RPC.
//!
//! It is a table of its own, keyed by l_uuid, so the operator's `uacreg` rows are never written
//! by the daemon. Writes come in batches (see `crate::status_export`), each batch one transaction
//! of "delete these keys, insert these rows", which every engine understands the same way.

use diesel::prelude::*;

use super::schema::uacreg_status;

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

impl StatusRow {
    /// Whether `self` and `other` say the same thing (ignoring when each was written).
    pub fn same_as(&self, other: &StatusRow) -> bool {
        StatusRow {
            updated_at: other.updated_at,
            ..self.clone()
        } == *other
    }
}

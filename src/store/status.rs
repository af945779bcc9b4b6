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

/// Width of `uacreg_status.last_reason` (`VARCHAR(255)` in every engine's migration).
pub const REASON_COLUMN: usize = 255;

/// `text` as every engine stores it in a `VARCHAR(max)` column whatever its character set and
/// SQL mode: printable ASCII (anything else — control characters, which PostgreSQL refuses as
/// NUL and a terminal reads as ESC sequences, and non-ASCII, which a latin1 or utf8mb3 MySQL
/// column refuses in strict mode — becomes `?`), at most `max` characters. One over-long or odd
/// reason phrase must not fail every later status batch.
pub fn column_text(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_text_fits_any_engine() {
        assert_eq!(column_text("OK", REASON_COLUMN), "OK");
        let long = "x".repeat(300);
        assert_eq!(column_text(&long, REASON_COLUMN).len(), REASON_COLUMN);
        assert_eq!(
            column_text("Fehler \u{e4}\u{1f600}\0\r\x1b[0m", 64),
            "Fehler ?????[0m"
        );
    }
}

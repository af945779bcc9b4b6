//! Connecting to MySQL/MariaDB, with TLS when the URL asks for it.
//!
//! mysql_async reads `require_ssl=true` (with `verify_ca`, `verify_identity`, `built_in_roots`)
//! from the URL and verifies the server against the built-in web roots. A private CA — the usual
//! case for a database — is given with uacreg's own `ssl_ca=/path/ca.pem`, which is taken out of
//! the URL and handed to the client as a root certificate.

use diesel_async::{AsyncConnection, AsyncMysqlConnection, SimpleAsyncConnection};
use mysql_async::{Opts, OptsBuilder};

use super::StoreError;
use super::connection::{DbUrl, ServerTimeouts, clean_error};

/// `VALUES(column)` in an `INSERT … ON DUPLICATE KEY UPDATE`: the value the row would have
/// been inserted with (diesel's `excluded` is PostgreSQL's and SQLite's only). MariaDB knows
/// no other spelling; MySQL 8 still accepts it. `column` is always one of our own names.
pub(super) fn new_value<T: diesel::sql_types::SingleValue>(
    column: &'static str,
) -> diesel::expression::SqlLiteral<T> {
    diesel::dsl::sql::<T>(&format!("VALUES({column})"))
}

/// The URL without `ssl_ca`, and the CA file if one was named.
pub fn split_ca(url: &str) -> (String, Option<std::path::PathBuf>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut ca = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("ssl_ca=") {
            Some(path) => {
                ca = Some(std::path::PathBuf::from(path));
                false
            }
            None => !pair.is_empty(),
        })
        .collect();
    if kept.is_empty() {
        (base.to_string(), ca)
    } else {
        (format!("{base}?{}", kept.join("&")), ca)
    }
}

/// Opens a connection with `timeouts` set for the session: MariaDB's `max_statement_time`
/// (seconds) or, where that is unknown, MySQL's `max_execution_time` (milliseconds, SELECTs
/// only), `innodb_lock_wait_timeout` / `lock_wait_timeout` for row and metadata locks, and
/// MariaDB's `idle_transaction_timeout`.
pub async fn connect(
    url: &DbUrl,
    timeouts: ServerTimeouts,
) -> Result<AsyncMysqlConnection, StoreError> {
    let mut conn = establish(url).await?;
    let statement = timeouts.statement.as_secs().max(1);
    let lock = timeouts.lock.as_secs().max(1);
    let mariadb = format!("SET SESSION max_statement_time = {statement}");
    if conn.batch_execute(&mariadb).await.is_err() {
        conn.batch_execute(&format!(
            "SET SESSION max_execution_time = {}",
            statement * 1000
        ))
        .await
        .map_err(|e| StoreError::Open(format!("cannot set statement timeouts: {e}")))?;
    }
    conn.batch_execute(&format!(
        "SET SESSION innodb_lock_wait_timeout = {lock}; SET SESSION lock_wait_timeout = {lock}"
    ))
    .await
    .map_err(|e| StoreError::Open(format!("cannot set lock timeouts: {e}")))?;
    // MariaDB ends a session whose transaction sits idle this long (a client paused or cut off
    // while holding row locks); MySQL has no such setting and keeps the locks until its
    // wait_timeout.
    // READ COMMITTED: no gap locks. Under InnoDB's default REPEATABLE READ every DELETE or
    // upsert also locks the gaps next to its keys, and cluster nodes writing interleaved
    // l_uuids (their shards' rows) deadlocked on each other's gaps every few rounds. Nothing
    // here relies on repeatable reads: leases are judged on rows locked FOR UPDATE.
    conn.batch_execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await
        .map_err(|e| StoreError::Open(format!("cannot set the isolation level: {e}")))?;
    let idle = timeouts.idle_in_transaction().as_secs().max(1);
    let _ = conn
        .batch_execute(&format!("SET SESSION idle_transaction_timeout = {idle}"))
        .await;
    Ok(conn)
}

async fn establish(url: &DbUrl) -> Result<AsyncMysqlConnection, StoreError> {
    let failed = |e: &dyn std::fmt::Display| StoreError::Open(clean_error(&e.to_string(), url));
    let (plain_url, ca) = split_ca(url.target());
    let Some(ca) = ca else {
        return AsyncMysqlConnection::establish(&plain_url)
            .await
            .map_err(|e| failed(&e));
    };
    let opts = Opts::from_url(&plain_url)
        .map_err(|e| StoreError::Url(clean_error(&e.to_string(), url)))?;
    let ssl = opts
        .ssl_opts()
        .cloned()
        .unwrap_or_default()
        .with_root_certs(vec![ca.into()]);
    // The same settings diesel-async's own establish uses.
    let builder = OptsBuilder::from_opts(opts)
        .stmt_cache_size(0)
        .client_found_rows(true)
        .ssl_opts(Some(ssl));
    let conn = mysql_async::Conn::new(builder)
        .await
        .map_err(|e| failed(&e))?;
    AsyncMysqlConnection::try_from(conn)
        .await
        .map_err(|e| failed(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_ca_is_taken_out() {
        assert_eq!(
            split_ca("mysql://u:p@h/d"),
            ("mysql://u:p@h/d".into(), None)
        );
        assert_eq!(
            split_ca("mysql://u:p@h/d?require_ssl=true&ssl_ca=/etc/ca.pem"),
            (
                "mysql://u:p@h/d?require_ssl=true".into(),
                Some("/etc/ca.pem".into())
            )
        );
        assert_eq!(
            split_ca("mysql://u:p@h/d?ssl_ca=/ca.pem"),
            ("mysql://u:p@h/d".into(), Some("/ca.pem".into()))
        );
    }
}

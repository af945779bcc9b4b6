//! Connecting to PostgreSQL: timeouts, and TLS when the URL asks for it.
//!
//! The URL is libpq's. `sslmode=require`, `verify-ca` or `verify-full` make the connection TLS
//! (rustls, the stack SIP/TLS uses) with the server's certificate always verified — against
//! `sslrootcert=/path/ca.pem` when given, else the system's roots. That is stricter than libpq's
//! `require`, on purpose: a gateway holding SIP credentials should not talk to an unverified
//! database. Other modes (`disable`, `prefer`, none) connect in plain text, as the client
//! library did before; `prefer` does not try TLS.

use diesel::ConnectionError;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

use super::StoreError;
use super::connection::{DbUrl, ServerTimeouts, clean_error};

/// What to hand tokio-postgres, and whether (and against which CA) to use TLS.
#[derive(Debug, PartialEq, Eq)]
pub struct PgTarget {
    /// The URL with uacreg's default timeouts, `sslmode` as tokio-postgres knows it and our own
    /// parameters (`sslrootcert`) taken out.
    pub conninfo: String,
    /// `Some(ca)`: TLS, verified against `ca` (None: system roots).
    pub tls: Option<Option<std::path::PathBuf>>,
}

/// Splits the URL: the parameters uacreg handles itself out, its timeouts in (unless given).
pub fn target(url: &DbUrl) -> Result<PgTarget, StoreError> {
    let full = url.target();
    let (base, query) = full.split_once('?').unwrap_or((full, ""));
    let mut params: Vec<(String, String)> = Vec::new();
    let mut tls = false;
    let mut ca = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => match value {
                "disable" | "allow" | "prefer" => {
                    params.push((key.into(), "disable".into()));
                }
                "require" | "verify-ca" | "verify-full" => {
                    tls = true;
                    params.push((key.into(), "require".into()));
                }
                other => {
                    return Err(StoreError::Url(format!(
                        "sslmode={other:?} (use disable, require, verify-ca or verify-full)"
                    )));
                }
            },
            "sslrootcert" => ca = Some(std::path::PathBuf::from(value)),
            _ => params.push((key.into(), value.into())),
        }
    }
    if ca.is_some() && !tls {
        return Err(StoreError::Url(
            "sslrootcert is given but sslmode does not ask for TLS (use sslmode=verify-full)"
                .into(),
        ));
    }
    for (key, value) in [
        // An unreachable server must turn into an error, not a start-up or reload that hangs:
        // connect_timeout for the connect, tcp_user_timeout for a statement sent to a server
        // that vanished, keepalives_idle for an idle connection (the LISTEN one).
        ("connect_timeout", "10"),
        ("tcp_user_timeout", "30"),
        ("keepalives_idle", "30"),
    ] {
        if !params.iter().any(|(k, _)| k == key) {
            params.push((key.into(), value.into()));
        }
    }
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Ok(PgTarget {
        conninfo: format!("{base}?{}", query.join("&")),
        tls: tls.then_some(ca),
    })
}

/// The session settings that bound statements (`statement_timeout`, `lock_timeout`) and
/// transactions left open (`idle_in_transaction_session_timeout`), in milliseconds.
pub fn session_settings(timeouts: ServerTimeouts) -> String {
    format!(
        "SET statement_timeout = {}; SET lock_timeout = {}; \
         SET idle_in_transaction_session_timeout = {}",
        timeouts.statement.as_millis(),
        timeouts.lock.as_millis(),
        timeouts.idle_in_transaction().as_millis(),
    )
}

/// Opens a connection (async: the daemon's LISTEN task uses it directly, the store through
/// the synchronous wrapper) with `timeouts` set for the session.
pub async fn connect(
    url: &DbUrl,
    timeouts: ServerTimeouts,
) -> Result<AsyncPgConnection, StoreError> {
    let mut conn = establish(url).await?;
    conn.batch_execute(&session_settings(timeouts))
        .await
        .map_err(|e| StoreError::Open(format!("cannot set statement timeouts: {e}")))?;
    Ok(conn)
}

async fn establish(url: &DbUrl) -> Result<AsyncPgConnection, StoreError> {
    let target = target(url)?;
    let failed = |e: &dyn std::fmt::Display| StoreError::Open(clean_error(&e.to_string(), url));
    match target.tls {
        None => AsyncPgConnection::establish(&target.conninfo)
            .await
            .map_err(|e| failed(&e)),
        Some(ca) => {
            let config: tokio_postgres::Config = target
                .conninfo
                .parse()
                .map_err(|e| StoreError::Url(clean_error(&format!("{e}"), url)))?;
            let client_config = crate::transport::tls::client_config(ca.as_deref())
                .map_err(|e| StoreError::Open(format!("database TLS: {e}")))?;
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*client_config).clone());
            let (client, connection) = config.connect(tls).await.map_err(|e| {
                // tokio-postgres keeps the cause (a TLS or socket error) apart from the summary.
                match std::error::Error::source(&e) {
                    Some(cause) => failed(&format!("{e}: {cause}")),
                    None => failed(&e),
                }
            })?;
            AsyncPgConnection::try_from_client_and_connection(client, connection)
                .await
                .map_err(|e: ConnectionError| failed(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<PgTarget, StoreError> {
        target(&DbUrl::parse(url).unwrap())
    }

    #[test]
    fn timeouts_are_added_unless_given() {
        assert_eq!(
            parse("postgres://u:p@h/d").unwrap(),
            PgTarget {
                conninfo:
                    "postgres://u:p@h/d?connect_timeout=10&tcp_user_timeout=30&keepalives_idle=30"
                        .into(),
                tls: None
            }
        );
        assert_eq!(
            parse("postgres://u:p@h/d?connect_timeout=3")
                .unwrap()
                .conninfo,
            "postgres://u:p@h/d?connect_timeout=3&tcp_user_timeout=30&keepalives_idle=30"
        );
    }

    #[test]
    fn sslmode_picks_plain_or_verified_tls() {
        let plain = parse("postgres://u:p@h/d?sslmode=prefer").unwrap();
        assert_eq!(plain.tls, None);
        assert!(plain.conninfo.contains("sslmode=disable"));
        let tls = parse("postgres://u:p@h/d?sslmode=verify-full&sslrootcert=/etc/ca.pem").unwrap();
        assert_eq!(tls.tls, Some(Some("/etc/ca.pem".into())));
        assert!(tls.conninfo.contains("sslmode=require"));
        assert!(!tls.conninfo.contains("sslrootcert"));
        assert_eq!(
            parse("postgres://u:p@h/d?sslmode=require").unwrap().tls,
            Some(None)
        );
        assert!(parse("postgres://u:p@h/d?sslmode=sometimes").is_err());
        assert!(parse("postgres://u:p@h/d?sslrootcert=/ca.pem").is_err());
    }
}

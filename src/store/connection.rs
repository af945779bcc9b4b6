//! One connection to one of the three engines, chosen by the URL's scheme.
//!
//! SQLite is diesel's own synchronous connection over the bundled library. PostgreSQL and
//! MySQL/MariaDB go through diesel-async's pure-Rust clients (tokio-postgres, mysql_async) behind
//! its `AsyncConnectionWrapper`, which gives them diesel's synchronous `Connection` API: the
//! store's queries are written once, for all three, and no C client library has to be installed
//! or built. The wrapper blocks on the daemon's tokio runtime, so the store is only ever used from
//! `spawn_blocking` threads (or from plain threads, where [`Connection`] brings a small runtime
//! of its own).

use std::fmt;

use diesel::mysql::Mysql;
use diesel::pg::Pg;
use diesel::sqlite::{Sqlite, SqliteConnection};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncMysqlConnection, AsyncPgConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::StoreError;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const MYSQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/mysql");

/// The database engine a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
    Mysql,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "SQLite",
            Engine::Postgres => "PostgreSQL",
            Engine::Mysql => "MySQL/MariaDB",
        }
    }
}

/// A database URL with its engine; Display hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DbUrl {
    pub engine: Engine,
    /// What the driver is given (for SQLite: the file path).
    target: String,
}

impl DbUrl {
    /// Picks the engine from the scheme alone (a bare path is SQLite); never guesses further.
    pub fn parse(url: &str) -> Result<DbUrl, StoreError> {
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        let (engine, target) = match scheme.as_deref() {
            Some("postgres") | Some("postgresql") => (Engine::Postgres, url.to_string()),
            // mysql_async only knows the mysql:// scheme; MariaDB speaks the same protocol.
            Some("mysql") | Some("mariadb") => (
                Engine::Mysql,
                format!("mysql://{}", url.split_once("://").map_or("", |(_, r)| r)),
            ),
            Some("sqlite") | Some("file") | None => {
                (Engine::Sqlite, super::sqlite::path_of(url).to_string())
            }
            Some(other) => {
                return Err(StoreError::Url(format!(
                    "unknown scheme {other:?} (use sqlite://, postgres:// or mysql://)"
                )));
            }
        };
        if target.is_empty() {
            return Err(StoreError::Url(format!("{:?} names no file", redact(url))));
        }
        if engine != Engine::Sqlite {
            let rest = target.split_once("://").map_or("", |(_, r)| r);
            let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            if host.is_empty() || host.starts_with('/') {
                return Err(StoreError::Url(format!(
                    "{} names no server (expected {}://user:password@host:port/database)",
                    redact(url),
                    scheme.as_deref().unwrap_or("")
                )));
            }
        }
        Ok(DbUrl { engine, target })
    }
}

impl DbUrl {
    /// What the driver is given: the file path for SQLite, the URL for a server.
    pub fn target(&self) -> &str {
        &self.target
    }
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.engine {
            Engine::Sqlite => write!(f, "sqlite://{}", self.target),
            _ => f.write_str(&redact(&self.target)),
        }
    }
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Every password in a URL replaced by `***`: the userinfo's (`scheme://user:secret@host/db`)
/// and the value of any query parameter that carries one (`?password=…`, libpq's
/// `sslpassword=…`, `pass`, `pwd`). Used wherever a URL may reach a log line, an RPC answer or
/// an error.
pub fn redact(url: &str) -> String {
    let mut out = url.to_string();
    // Right to left, so earlier spans keep their offsets.
    for (start, end) in secret_spans(url).into_iter().rev() {
        out.replace_range(start..end, "***");
    }
    out
}

/// Byte ranges of every secret in `url`, in order.
fn secret_spans(url: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    if let Some(span) = password_span(url) {
        spans.push(span);
    }
    if let Some(question) = url.find('?') {
        let mut offset = question + 1;
        for pair in url[question + 1..].split('&') {
            if let Some((key, value)) = pair.split_once('=')
                && is_secret_parameter(key)
                && !value.is_empty()
            {
                let start = offset + key.len() + 1;
                spans.push((start, start + value.len()));
            }
            offset += pair.len() + 1;
        }
    }
    spans
}

/// Query parameters whose value is a secret, in the URL forms of libpq and mysql_async.
fn is_secret_parameter(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("pass") || key == "pwd"
}

/// Byte range of the password in `scheme://user:password@host/…`: the userinfo ends at the last
/// '@' before the path (or the query), the password starts after its first ':'.
fn password_span(url: &str) -> Option<(usize, usize)> {
    let rest_start = url.find("://")? + 3;
    let rest = &url[rest_start..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    let colon = rest[..at].find(':')?;
    Some((rest_start + colon + 1, rest_start + at))
}

/// Server-side bounds on every statement of a session (PostgreSQL, MySQL/MariaDB; SQLite has
/// its own busy timeout). A statement stuck behind a lock, or one that runs away, fails with an
/// error the store reports instead of holding the store — and every later reload — forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerTimeouts {
    /// Longest a statement may run.
    pub statement: std::time::Duration,
    /// Longest a statement may wait for a lock.
    pub lock: std::time::Duration,
}

impl ServerTimeouts {
    /// A cluster node's own connection, bounded by its lease: a lock wait gives up within a
    /// quarter lease and a statement within half of one, so one round never outlives the lease
    /// it renews; and the server ends a transaction left idle for a lease (a node paused or cut
    /// off in the middle of one), so the shard rows it had locked come free for the others.
    pub fn for_cluster(lease: std::time::Duration) -> ServerTimeouts {
        let at_least_a_second = |d: std::time::Duration| d.max(std::time::Duration::from_secs(1));
        ServerTimeouts {
            statement: at_least_a_second(lease / 2),
            lock: (lease / 4).max(std::time::Duration::from_millis(250)),
        }
    }

    /// How long the server lets a transaction sit idle before it ends the session.
    pub fn idle_in_transaction(&self) -> std::time::Duration {
        self.statement.saturating_mul(2)
    }
}

impl Default for ServerTimeouts {
    fn default() -> Self {
        ServerTimeouts {
            statement: std::time::Duration::from_secs(60),
            lock: std::time::Duration::from_secs(10),
        }
    }
}

/// An open connection of one engine.
pub enum Connection {
    Sqlite(SqliteConnection),
    Postgres(Box<AsyncConnectionWrapper<AsyncPgConnection>>),
    Mysql(Box<AsyncConnectionWrapper<AsyncMysqlConnection>>),
}

/// Runs the same diesel code on whichever connection is open: `$conn` is bound to the concrete
/// connection type in each arm, so queries are checked against all three backends at compile
/// time.
macro_rules! with_connection {
    ($connection:expr, $conn:ident => $body:expr) => {
        match $connection {
            $crate::store::connection::Connection::Sqlite($conn) => $body,
            $crate::store::connection::Connection::Postgres($conn) => {
                let $conn = &mut **$conn;
                $body
            }
            $crate::store::connection::Connection::Mysql($conn) => {
                let $conn = &mut **$conn;
                $body
            }
        }
    };
}
pub(crate) use with_connection;

/// A tokio runtime for the client libraries when the caller has none (tests and tools that use
/// the store from a plain thread). Inside the daemon the current runtime's handle is used.
fn ensure_runtime() -> Result<Option<tokio::runtime::Runtime>, StoreError> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Ok(None);
    }
    // Multi-threaded (one worker) because the wrapper blocks through a `Handle`, and only a
    // worker thread keeps the I/O driver turning while it does.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map(Some)
        .map_err(|e| StoreError::Open(format!("cannot start a runtime for the client: {e}")))
}

/// An open, migrated connection (and the runtime it needs when the caller has none).
pub struct Opened {
    pub connection: Connection,
    pub runtime: Option<tokio::runtime::Runtime>,
}

/// Connects and, when `migrate` is set, brings the schema up to date.
pub fn open(url: &DbUrl, migrate: bool, timeouts: ServerTimeouts) -> Result<Opened, StoreError> {
    match url.engine {
        Engine::Sqlite => {
            let mut conn = super::sqlite::open(&url.target)?;
            if migrate {
                run_migrations::<Sqlite, _>(&mut conn, SQLITE_MIGRATIONS)?;
            }
            Ok(Opened {
                connection: Connection::Sqlite(conn),
                runtime: None,
            })
        }
        Engine::Postgres => open_server::<_, Pg>(
            super::postgres::connect(url, timeouts),
            migrate.then_some(POSTGRES_MIGRATIONS),
            Connection::Postgres,
        ),
        Engine::Mysql => open_server::<_, Mysql>(
            super::mysql::connect(url, timeouts),
            migrate.then_some(MYSQL_MIGRATIONS),
            Connection::Mysql,
        ),
    }
}

/// A server connection: made on the caller's runtime (or a small one of its own), given
/// diesel's synchronous API by the wrapper, and migrated when `migrations` are given.
fn open_server<C, DB>(
    connect: impl std::future::Future<Output = Result<C, StoreError>>,
    migrations: Option<EmbeddedMigrations>,
    wrap: impl FnOnce(Box<AsyncConnectionWrapper<C>>) -> Connection,
) -> Result<Opened, StoreError>
where
    C: diesel_async::AsyncConnection,
    DB: diesel::backend::Backend,
    AsyncConnectionWrapper<C>: MigrationHarness<DB>,
{
    let runtime = ensure_runtime()?;
    let _entered = runtime.as_ref().map(|rt| rt.enter());
    let connected = tokio::runtime::Handle::current().block_on(connect)?;
    let mut conn = AsyncConnectionWrapper::<C>::from(connected);
    if let Some(migrations) = migrations {
        run_migrations::<DB, _>(&mut conn, migrations)?;
    }
    Ok(Opened {
        connection: wrap(Box::new(conn)),
        runtime,
    })
}

fn run_migrations<DB, C>(conn: &mut C, migrations: EmbeddedMigrations) -> Result<(), StoreError>
where
    DB: diesel::backend::Backend,
    C: MigrationHarness<DB>,
{
    conn.run_pending_migrations(migrations)
        .map(|_| ())
        .map_err(|e| StoreError::Migrate(e.to_string()))
}

/// Client errors sometimes quote the connection string or one of its parameters; never let a
/// password through.
pub fn clean_error(message: &str, url: &DbUrl) -> String {
    let mut out = message.to_string();
    for (start, end) in secret_spans(&url.target) {
        let secret = &url.target[start..end];
        if !secret.is_empty() {
            out = out.replace(secret, "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_picks_the_engine() {
        assert_eq!(DbUrl::parse("x.db").unwrap().engine, Engine::Sqlite);
        assert_eq!(
            DbUrl::parse("sqlite:///tmp/x.db").unwrap().engine,
            Engine::Sqlite
        );
        assert_eq!(
            DbUrl::parse("postgres://u:p@h/d").unwrap().engine,
            Engine::Postgres
        );
        assert_eq!(
            DbUrl::parse("postgresql://u:p@h/d").unwrap().engine,
            Engine::Postgres
        );
        let maria = DbUrl::parse("mariadb://u:p@h:3306/d").unwrap();
        assert_eq!(maria.engine, Engine::Mysql);
        assert_eq!(maria.target, "mysql://u:p@h:3306/d");
        assert!(matches!(DbUrl::parse("redis://x"), Err(StoreError::Url(_))));
        assert!(matches!(DbUrl::parse("sqlite://"), Err(StoreError::Url(_))));
        assert!(matches!(
            DbUrl::parse("postgres://u:pw@/db"),
            Err(StoreError::Url(e)) if !e.contains("pw")
        ));
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("postgres://kamailio:s3cr@t@db:5432/kam"),
            "postgres://kamailio:***@db:5432/kam"
        );
        assert_eq!(redact("mysql://root@db/kam"), "mysql://root@db/kam");
        assert_eq!(redact("sqlite:///a/b@c:d"), "sqlite:///a/b@c:d");
        let url = DbUrl::parse("mysql://u:hunter2@h/d").unwrap();
        assert_eq!(url.to_string(), "mysql://u:***@h/d");
        assert_eq!(format!("{url:?}"), "mysql://u:***@h/d");
        assert_eq!(
            clean_error("auth failed for mysql://u:hunter2@h/d", &url),
            "auth failed for mysql://u:***@h/d"
        );
    }

    #[test]
    fn passwords_in_query_parameters_are_hidden() {
        assert_eq!(
            redact("postgres://kam@db/kam?password=s3cret&sslmode=require"),
            "postgres://kam@db/kam?password=***&sslmode=require"
        );
        assert_eq!(
            redact("postgres://u:a@db/d?sslmode=verify-full&sslpassword=k3y&PWD=x&pass=y"),
            "postgres://u:***@db/d?sslmode=verify-full&sslpassword=***&PWD=***&pass=***"
        );
        // A query right after the host: the '@' of the userinfo is still found.
        assert_eq!(
            redact("mysql://root:pw@db?password=other"),
            "mysql://root:***@db?password=***"
        );
        assert_eq!(
            redact("postgres://db/d?password="),
            "postgres://db/d?password="
        );
        let url = DbUrl::parse("postgres://kam@db/kam?password=s3cret").unwrap();
        assert_eq!(url.to_string(), "postgres://kam@db/kam?password=***");
        assert_eq!(
            clean_error("password authentication failed (password=s3cret)", &url),
            "password authentication failed (password=***)"
        );
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
}

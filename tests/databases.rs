//! The same integration suite on SQLite, PostgreSQL and MariaDB: the real daemon, a real
//! database server started for the test (tests/support/dbserver.rs), the in-repo registrar on
//! loopback.
//!
//! Every scenario is one async function taking the backend; `on_every_backend!` makes a test of
//! it per engine (`sqlite::…`, `postgres::…`, `mariadb::…`). Server-only scenarios (stopping the
//! database, NOTIFY) are listed per engine. A missing server binary skips locally and fails in CI.

mod common;
mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::{TempDir, metric, registrar, rpc, scrape, test_config, test_pki, users, wait_until};
use serde_json::Value;
use support::dbserver::{DbServer, Engine, require_engine};
use support::kamailio::run_sqlite;
use uacreg::Config;
use uacreg::Daemon;
use uacreg::demo::demo_rows;
use uacreg::store::{RawRow, StatusRow, Store};
use uacreg::testing::registrar::{RegistrarConfig, TestRegistrar};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
    MariaDb,
}

/// A database for one test: a SQLite file, or a server of its own.
struct Db {
    backend: Backend,
    url: String,
    server: Option<DbServer>,
    _dir: TempDir,
}

impl Db {
    /// None: the engine is not installed and this is not CI (the test is skipped).
    async fn start(backend: Backend) -> Option<Db> {
        let dir = TempDir::new("databases");
        let engine = match backend {
            Backend::Sqlite => {
                let url = dir.db_url();
                return Some(Db {
                    backend,
                    url,
                    server: None,
                    _dir: dir,
                });
            }
            Backend::Postgres => Engine::Postgres,
            Backend::MariaDb => Engine::MariaDb,
        };
        if !require_engine(engine) {
            return None;
        }
        let server = tokio::task::spawn_blocking(move || DbServer::start(engine))
            .await
            .unwrap()
            .expect("database server starts");
        Some(Db {
            backend,
            url: server.url(),
            server: Some(server),
            _dir: dir,
        })
    }

    /// Runs SQL statements on the database (outside uacreg), returns what they print.
    async fn sql(&self, statements: &str) -> String {
        let statements = statements.to_string();
        match &self.server {
            Some(server) => {
                let result = tokio::task::block_in_place(|| server.sql(&statements));
                result.unwrap_or_else(|e| panic!("SQL failed: {e}\n{statements}"))
            }
            None => {
                let path = self.url.trim_start_matches("sqlite://").to_string();
                tokio::task::spawn_blocking(move || {
                    // On stdin: SQL that starts with a comment would look like an option.
                    run_sqlite(Path::new("sqlite3"), Path::new(&path), &[], &statements)
                        .unwrap_or_else(|e| panic!("{e}"))
                })
                .await
                .unwrap()
            }
        }
    }

    /// Runs `f` on a store of this database on a blocking thread (the PostgreSQL and MySQL
    /// clients block on the runtime, which async code may not do).
    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> T + Send + 'static,
    ) -> T {
        let url = self.url.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = Store::open(&url).expect("store opens");
            f(&mut store)
        })
        .await
        .unwrap()
    }

    /// Stops the server (keeping its data and port).
    fn stop_server(&mut self) {
        let server = self.server.as_mut().expect("a server backend");
        tokio::task::block_in_place(|| server.stop());
    }

    /// Starts the stopped server again, on the same port with the same data.
    fn restart_server(&mut self) {
        let server = self.server.as_mut().expect("a server backend");
        tokio::task::block_in_place(|| server.restart()).expect("server restarts");
    }

    /// Like `with_store`, without running the migrations.
    async fn with_store_unmigrated<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> T + Send + 'static,
    ) -> T {
        let url = self.url.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = Store::unconnected(&url).expect("url");
            store.set_migrate(false);
            f(&mut store)
        })
        .await
        .unwrap()
    }

    /// Opens a store on `url` on a blocking thread; the error as text.
    async fn try_open(url: String) -> Result<(), String> {
        tokio::task::spawn_blocking(move || {
            Store::open(&url)
                .and_then(|mut s| s.read_status().map(|_| ()))
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap()
    }

    async fn insert(&self, rows: Vec<RawRow>) {
        self.with_store(move |s| s.insert(&rows).expect("insert"))
            .await;
    }

    /// The engine's own DDL from Kamailio's packages, with the `version` table.
    fn kamailio_ddl(&self) -> String {
        let dir = match self.backend {
            Backend::Sqlite => "/usr/share/kamailio/db_sqlite",
            Backend::Postgres => "/usr/share/kamailio/postgres",
            Backend::MariaDb => "/usr/share/kamailio/mysql",
        };
        let read = |name: &str| {
            std::fs::read_to_string(format!("{dir}/{name}")).unwrap_or_else(|e| {
                panic!("{dir}/{name}: {e} (scripts/install-test-deps installs it)")
            })
        };
        format!(
            "{}\n{}",
            read("standard-create.sql"),
            read("uac-create.sql")
        )
    }
}

fn config(db: &Db) -> Config {
    let mut config = test_config(&db.url);
    config.database.notify = false;
    config
}

async fn state_counts(daemon: &Daemon) -> std::collections::BTreeMap<&'static str, usize> {
    daemon.gateway().driver.status_counts().await.unwrap()
}

async fn registered(daemon: &Daemon) -> usize {
    state_counts(daemon)
        .await
        .get("registered")
        .copied()
        .unwrap_or(0)
}

async fn wait_registered(daemon: &Daemon, n: usize, limit: Duration) {
    let ok = wait_until(limit, || async { registered(daemon).await == n }).await;
    assert!(
        ok,
        "{} of {n} registered: {:?}",
        registered(daemon).await,
        state_counts(daemon).await
    );
}

/// Loads rows, registers them, then a diff reload acts on exactly the changed rows.
async fn registers_rows_and_reloads_the_difference(backend: Backend) {
    let Some(db) = Db::start(backend).await else {
        return;
    };
    let registrar = registrar(30).await;
    let mut rows = demo_rows(20, registrar.local_addr());
    rows[3].r_domain = "bad domain".into(); // one malformed row: reported, the rest load
    db.insert(rows).await;
    let daemon = Daemon::start(config(&db)).await.expect("daemon starts");
    wait_registered(&daemon, 19, Duration::from_secs(20)).await;
    let status: Value = rpc(&daemon).call("uacreg.status", &[]).await.unwrap();
    assert_eq!(status["invalid_rows"], 1, "{status}");
    assert_eq!(status["database"]["reachable"], true, "{status}");
    let before: HashMap<String, usize> = (0..25)
        .map(|i| format!("user{i:06}"))
        .map(|u| (u.clone(), registrar.requests_for(&u).len()))
        .collect();

    // One changed, one removed, one added, the bad one fixed.
    let extra = demo_rows(21, registrar.local_addr()).pop().unwrap();
    let mut changed = demo_rows(1, registrar.local_addr()).pop().unwrap();
    changed.expires = 1800;
    let fixed = demo_rows(4, registrar.local_addr()).pop().unwrap();
    db.with_store(move |s| {
        assert!(s.update(&changed).unwrap());
        assert!(s.update(&fixed).unwrap());
        assert!(s.delete("uuid000007").unwrap());
        s.insert(&[extra]).unwrap();
    })
    .await;
    let report: Value = rpc(&daemon).call("uac.reg_reload", &[]).await.unwrap();
    assert_eq!(report["added"], 2, "{report}"); // uuid000020 and the fixed uuid000003
    assert_eq!(report["changed"], 1, "{report}");
    assert_eq!(report["removed"], 1, "{report}");
    wait_registered(&daemon, 20, Duration::from_secs(20)).await;
    wait_until(Duration::from_secs(10), || async {
        registrar.bindings("user000007").is_empty()
    })
    .await;
    assert!(
        registrar.bindings("user000007").is_empty(),
        "removed row still bound"
    );
    for (user, count) in before {
        let now = registrar.requests_for(&user).len();
        let acted = matches!(
            user.as_str(),
            "user000000" | "user000003" | "user000007" | "user000020"
        );
        assert_eq!(now > count, acted, "{user}: {count} → {now} REGISTERs");
    }
    daemon.stop().await;
}

/// A table made by Kamailio's own SQL (table version 5, `version` row) works and stays as it was.
async fn kamailio_table_is_used_as_is(backend: Backend) {
    let Some(db) = Db::start(backend).await else {
        return;
    };
    let registrar = registrar(5).await;
    db.sql(&db.kamailio_ddl()).await;
    let columns_sql = match backend {
        Backend::Sqlite => "SELECT name FROM pragma_table_info('uacreg');".to_string(),
        _ => "SELECT column_name FROM information_schema.columns WHERE table_name = 'uacreg' \
              ORDER BY column_name;"
            .to_string(),
    };
    let columns_before = db.sql(&columns_sql).await;
    let addr = registrar.local_addr();
    let mut inserts = String::new();
    for i in 0..5 {
        inserts.push_str(&format!(
            "INSERT INTO uacreg (l_uuid, l_username, l_domain, r_username, r_domain, realm, \
             auth_username, auth_password, auth_proxy, expires) VALUES ('uuid{i:06}', \
             'local{i:06}', 'gw.test', 'user{i:06}', 'registrar.test', 'registrar.test', \
             'user{i:06}', 'pw-user{i:06}', 'sip:{addr}', 3600);\n"
        ));
    }
    db.sql(&inserts).await;
    let daemon = Daemon::start(config(&db)).await.expect("daemon starts");
    wait_registered(&daemon, 5, Duration::from_secs(20)).await;
    let status: Value = rpc(&daemon).call("uacreg.status", &[]).await.unwrap();
    assert_eq!(status["database"]["kamailio_table_version"], 5, "{status}");
    assert_eq!(status["database"]["contact_user_column"], false, "{status}");
    daemon.stop().await;
    assert_eq!(
        db.sql(&columns_sql).await,
        columns_before,
        "uacreg columns changed"
    );
    let version = db
        .sql("SELECT table_version FROM version WHERE table_name = 'uacreg';")
        .await;
    assert_eq!(version.trim(), "5");
}

/// `migrate = false` (a user that may only read): a Kamailio table is used and nothing is created.
async fn without_migrations_nothing_is_created(backend: Backend) {
    let Some(db) = Db::start(backend).await else {
        return;
    };
    db.sql(&db.kamailio_ddl()).await;
    let tables_sql = match backend {
        Backend::Sqlite => "SELECT name FROM sqlite_master ORDER BY 1;",
        _ => {
            "SELECT table_name FROM information_schema.tables \
              WHERE table_schema NOT IN ('pg_catalog', 'information_schema', 'mysql', \
              'performance_schema', 'sys') ORDER BY 1;"
        }
    };
    let before = db.sql(tables_sql).await;
    let mut config = config(&db);
    config.database.migrate = false;
    config.database.notify = true;
    let daemon = Daemon::start(config).await.expect("daemon starts");
    if backend == Backend::Postgres {
        // LISTEN works, but the trigger was not installed: said so, not silently waited on.
        let checked = wait_until(Duration::from_secs(10), || async {
            daemon.gateway().database_health().notify_trigger.is_some()
        })
        .await;
        assert!(checked);
        assert_eq!(
            daemon.gateway().database_health().notify_trigger,
            Some(false)
        );
    }
    db.with_store_unmigrated(|s| {
        let mut rows = demo_rows(2, "127.0.0.1:9".parse().unwrap());
        rows.iter_mut().for_each(|r| r.contact_user.clear());
        s.insert(&rows)
    })
    .await
    .expect("insert");
    let report: Value = rpc(&daemon).call("uac.reg_reload", &[]).await.unwrap();
    assert_eq!(report["added"], 2, "{report}");
    daemon.stop().await;
    assert_eq!(db.sql(tables_sql).await, before, "tables were created");
}

/// Kamailio's version 6 (with `contact_user`) is read with its contact_user.
async fn kamailio_version_6_table_reads_contact_user(backend: Backend) {
    let Some(db) = Db::start(backend).await else {
        return;
    };
    let registrar = registrar(1).await;
    let ddl = db
        .kamailio_ddl()
        .replace("values ('uacreg','5')", "values ('uacreg','6')");
    db.sql(&ddl).await;
    db.sql("ALTER TABLE uacreg ADD COLUMN contact_user VARCHAR(64) DEFAULT '' NOT NULL;")
        .await;
    let mut row = demo_rows(1, registrar.local_addr()).pop().unwrap();
    row.contact_user = "line1".into();
    db.insert(vec![row]).await;
    let daemon = Daemon::start(config(&db)).await.expect("daemon starts");
    wait_registered(&daemon, 1, Duration::from_secs(20)).await;
    let bindings = registrar.bindings("user000000");
    assert!(
        bindings.iter().any(|b| b.contact.contains("sip:line1@")),
        "contact_user not used: {bindings:?}"
    );
    let status: Value = rpc(&daemon).call("uacreg.status", &[]).await.unwrap();
    assert_eq!(status["database"]["kamailio_table_version"], 6, "{status}");
    daemon.stop().await;
}

/// With a reload interval, rows written behind the daemon's back are picked up.
async fn periodic_reload_picks_up_changes(backend: Backend) {
    let Some(db) = Db::start(backend).await else {
        return;
    };
    let registrar = registrar(3).await;
    db.insert(demo_rows(1, registrar.local_addr())).await;
    let mut config = config(&db);
    config.database.reload_interval = Some(Duration::from_secs(1));
    let daemon = Daemon::start(config).await.expect("daemon starts");
    wait_registered(&daemon, 1, Duration::from_secs(10)).await;
    let rows = demo_rows(3, registrar.local_addr());
    db.insert(rows[1..].to_vec()).await;
    wait_registered(&daemon, 3, Duration::from_secs(10)).await;
    db.with_store(|s| assert!(s.delete("uuid000000").unwrap()))
        .await;
    let gone = wait_until(Duration::from_secs(10), || async {
        registrar.bindings("user000000").is_empty()
    })
    .await;
    assert!(gone, "deleted row still bound");
    // A quiet table costs nothing on the wire.
    let seen = registrar.stats().requests;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(registrar.stats().requests, seen);
    daemon.stop().await;
}

/// uacreg_status follows the registrations, in batches.
async fn status_table_follows_the_registrations(backend: Backend) {
    let Some(db) = Db::start(backend).await else {
        return;
    };
    let registrar = registrar(10).await;
    let mut rows = demo_rows(10, registrar.local_addr());
    rows[9].auth_password = uacreg::registration::Secret::new("wrong");
    db.insert(rows).await;
    let mut config = config(&db);
    config.database.status_table = true;
    config.database.status_interval = Duration::from_secs(1);
    config.retry.auth_failure_retry = None;
    let daemon = Daemon::start(config).await.expect("daemon starts");
    wait_registered(&daemon, 9, Duration::from_secs(20)).await;
    let read = || db.with_store(|s| s.read_status().unwrap());
    let settled = |rows: &Vec<StatusRow>| {
        rows.len() == 10 && rows.iter().filter(|r| r.state == "registered").count() == 9
    };
    let mut status = read().await;
    for _ in 0..50 {
        if settled(&status) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        status = read().await;
    }
    assert!(settled(&status), "{status:?}");
    let ok = &status[0];
    assert_eq!((ok.last_code, ok.last_reason.as_str()), (200, "OK"));
    assert!(
        ok.last_success > 0 && ok.binding_expires > ok.last_success,
        "{ok:?}"
    );
    assert!(
        ok.next_refresh > ok.last_success && ok.next_refresh < ok.binding_expires,
        "{ok:?}"
    );
    let bad = status.iter().find(|r| r.l_uuid == "uuid000009").unwrap();
    assert_eq!(bad.state, "auth_failed", "{bad:?}");
    assert_eq!(bad.last_code, 401);
    // A removed row's status goes too; the operator's rows are never written.
    db.with_store(|s| assert!(s.delete("uuid000000").unwrap()))
        .await;
    let _: Value = rpc(&daemon).call("uac.reg_reload", &[]).await.unwrap();
    let gone = wait_until(Duration::from_secs(10), || async {
        read().await.iter().all(|r| r.l_uuid != "uuid000000")
    })
    .await;
    assert!(gone);
    let written: Value = rpc(&daemon).call("uacreg.status", &[]).await.unwrap();
    assert!(
        written["database"]["status_rows_written"].as_u64().unwrap() >= 10,
        "{written}"
    );
    daemon.stop().await;
    // Stopped: no row claims a binding that nobody refreshes any more.
    let after = read().await;
    assert_eq!(after.len(), 9);
    assert!(
        after
            .iter()
            .all(|r| r.state == "stopped" && r.next_refresh == 0),
        "{after:?}"
    );
}

/// The database stops mid-run: every registration keeps running and refreshing, a reload says
/// clearly why it failed, and once the server is back reloads work again.
async fn database_outage_loses_nothing(backend: Backend) {
    let Some(mut db) = Db::start(backend).await else {
        return;
    };
    let registrar = TestRegistrar::start(RegistrarConfig {
        users: users(20),
        max_expires: Some(4),
        ..RegistrarConfig::default()
    })
    .await
    .unwrap();
    db.insert(demo_rows(20, registrar.local_addr())).await;
    let mut config = config(&db);
    config.database.reload_interval = Some(Duration::from_secs(1));
    let daemon = Daemon::start(config).await.expect("daemon starts");
    wait_registered(&daemon, 20, Duration::from_secs(20)).await;

    db.stop_server();
    let before = registrar.stats().ok;
    // Bindings last 4 s: over 6 s every row refreshes at least once without the database.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        registered(&daemon).await,
        20,
        "{:?}",
        state_counts(&daemon).await
    );
    assert!(
        registrar.stats().ok >= before + 20,
        "refreshes stopped: {} → {}",
        before,
        registrar.stats().ok
    );
    let err = rpc(&daemon)
        .call("uac.reg_reload", &[])
        .await
        .unwrap_err()
        .to_string();
    eprintln!("reload during the outage: {err}");
    assert!(
        err.contains("registrations left unchanged") && err.contains("database"),
        "unclear reload error: {err}"
    );
    let status: Value = rpc(&daemon).call("uacreg.status", &[]).await.unwrap();
    assert_eq!(status["database"]["reachable"], false, "{status}");
    let metrics = scrape(&daemon).await;
    assert_eq!(metric(&metrics, "uacreg_database_reachable"), 0.0);
    assert!(metric(&metrics, "uacreg_reload_failures_total") >= 1.0);
    assert!(
        !status.to_string().contains("uacreg-secret"),
        "password in status: {status}"
    );
    assert_eq!(registered(&daemon).await, 20);

    db.restart_server();
    // The back-off is at most a few seconds at this point.
    let back = wait_until(Duration::from_secs(40), || async {
        rpc(&daemon).call("uac.reg_reload", &[]).await.is_ok()
    })
    .await;
    assert!(back, "reload never worked again");
    // A change made after the outage is picked up by the periodic reload.
    let registrar_addr = registrar.local_addr();
    db.with_store(move |s| {
        let mut row = demo_rows(1, registrar_addr).pop().unwrap();
        row.flags = 1;
        assert!(s.update(&row).unwrap());
    })
    .await;
    wait_registered(&daemon, 19, Duration::from_secs(10)).await;
    let status: Value = rpc(&daemon).call("uacreg.status", &[]).await.unwrap();
    assert_eq!(status["database"]["reachable"], true, "{status}");
    daemon.stop().await;
}

/// Started while the database is down, the daemon waits, then starts and registers.
async fn start_up_waits_for_the_database(backend: Backend) {
    let Some(mut db) = Db::start(backend).await else {
        return;
    };
    let registrar = registrar(5).await;
    db.insert(demo_rows(5, registrar.local_addr())).await;
    db.stop_server();
    let starting = tokio::spawn(Daemon::start(config(&db)));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !starting.is_finished(),
        "the daemon did not wait for the database"
    );
    db.restart_server();
    let daemon = tokio::time::timeout(Duration::from_secs(40), starting)
        .await
        .expect("the daemon starts once the database answers")
        .unwrap()
        .expect("daemon starts");
    wait_registered(&daemon, 5, Duration::from_secs(20)).await;
    daemon.stop().await;
}

/// PostgreSQL: the trigger's NOTIFY makes the daemon reload within moments, no interval set.
async fn postgres_notify_reloads_at_once(backend: Backend) {
    let Some(mut db) = Db::start(backend).await else {
        return;
    };
    let registrar = registrar(3).await;
    db.insert(demo_rows(1, registrar.local_addr())).await;
    let mut config = config(&db);
    config.database.notify = true;
    let daemon = Daemon::start(config).await.expect("daemon starts");
    wait_registered(&daemon, 1, Duration::from_secs(10)).await;
    let listening = wait_until(Duration::from_secs(10), || async {
        daemon.gateway().database_health().listening
    })
    .await;
    assert!(listening, "not listening");
    assert_eq!(
        daemon.gateway().database_health().notify_trigger,
        Some(true)
    );
    let row = demo_rows(2, registrar.local_addr()).pop().unwrap();
    db.insert(vec![row]).await;
    wait_registered(&daemon, 2, Duration::from_secs(5)).await;
    assert!(daemon.gateway().database_health().notifications >= 1);

    // The listener survives a server restart and listens again.
    db.stop_server();
    let lost = wait_until(Duration::from_secs(20), || async {
        !daemon.gateway().database_health().listening
    })
    .await;
    assert!(lost, "the lost LISTEN connection went unnoticed");
    db.restart_server();
    let again = wait_until(Duration::from_secs(40), || async {
        daemon.gateway().database_health().listening
    })
    .await;
    assert!(again, "not listening after the restart");
    let row = demo_rows(3, registrar.local_addr()).pop().unwrap();
    db.insert(vec![row]).await;
    wait_registered(&daemon, 3, Duration::from_secs(5)).await;
    daemon.stop().await;
}

/// schema/<engine>.sql run by hand creates exactly what the migrations create: same tables,
/// columns, types, defaults, keys, indexes (and on PostgreSQL the trigger).
async fn schema_file_matches_the_migrations(backend: Backend) {
    let Some(migrated) = Db::start(backend).await else {
        return;
    };
    let Some(by_hand) = Db::start(backend).await else {
        return;
    };
    migrated.with_store(|_| ()).await;
    let (file, describe) = match backend {
        Backend::Sqlite => (
            "sqlite",
            "SELECT m.name, p.name, p.type, p.\"notnull\", p.dflt_value, p.pk \
             FROM sqlite_master m, pragma_table_info(m.name) p \
             WHERE m.name IN ('uacreg', 'uacreg_status') ORDER BY 1, 2; \
             SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' \
             AND tbl_name IN ('uacreg', 'uacreg_status') ORDER BY 1;",
        ),
        Backend::Postgres => (
            "postgres",
            "SELECT table_name, column_name, data_type, character_maximum_length, is_nullable, \
             column_default FROM information_schema.columns \
             WHERE table_name IN ('uacreg', 'uacreg_status') ORDER BY 1, 2; \
             SELECT indexname, indexdef FROM pg_indexes \
             WHERE tablename IN ('uacreg', 'uacreg_status') ORDER BY 1; \
             SELECT trigger_name, event_manipulation, action_statement \
             FROM information_schema.triggers ORDER BY 1, 2;",
        ),
        Backend::MariaDb => (
            "mysql",
            "SELECT table_name, column_name, column_type, is_nullable, column_default, column_key \
             FROM information_schema.columns WHERE table_schema = DATABASE() \
             AND table_name IN ('uacreg', 'uacreg_status') ORDER BY 1, 2; \
             SELECT table_name, index_name, column_name, non_unique FROM information_schema.statistics \
             WHERE table_schema = DATABASE() AND table_name IN ('uacreg', 'uacreg_status') \
             ORDER BY 1, 2, 3;",
        ),
    };
    let path = format!("{}/schema/{file}.sql", env!("CARGO_MANIFEST_DIR"));
    by_hand.sql(&std::fs::read_to_string(&path).unwrap()).await;
    let expected = migrated.sql(describe).await;
    assert!(
        expected.contains("contact_user") && expected.contains("next_refresh"),
        "{expected}"
    );
    assert_eq!(
        by_hand.sql(describe).await,
        expected,
        "{path} differs from the migrations"
    );
}

/// TLS to the database: with the CA named in the URL the daemon connects and registers; a
/// certificate from another CA is refused with the reason; PostgreSQL (`hostssl` only) refuses
/// a plain-text login, so the working connection was TLS.
async fn tls_to_the_database_is_verified(backend: Backend) {
    let Some(mut db) = Db::start(backend).await else {
        return;
    };
    let pki = TempDir::new("dbtls");
    let (ca_file, cert, key) = test_pki(&pki);
    let other = TempDir::new("dbtls-other");
    let (other_ca, _, _) = test_pki(&other);
    tokio::task::block_in_place(|| db.server.as_mut().unwrap().enable_tls(&cert, &key))
        .expect("server restarts with TLS");
    let with_ca = |ca: &std::path::Path| match backend {
        Backend::Postgres => format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            db.url,
            ca.display()
        ),
        _ => format!("{}?require_ssl=true&ssl_ca={}", db.url, ca.display()),
    };
    Db::try_open(with_ca(&ca_file))
        .await
        .expect("TLS with the right CA");
    let err = Db::try_open(with_ca(&other_ca)).await.unwrap_err();
    eprintln!("{backend:?} with another CA: {err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(!err.contains("uacreg-secret"), "{err}");
    if backend == Backend::Postgres {
        let err = Db::try_open(db.url.clone()).await.unwrap_err();
        assert!(
            err.contains("no encryption") || err.contains("pg_hba"),
            "{err}"
        );
    }

    let registrar = registrar(3).await;
    db.url = with_ca(&ca_file);
    db.insert(demo_rows(3, registrar.local_addr())).await;
    let mut config = config(&db);
    config.database.notify = true; // PostgreSQL: the LISTEN connection is TLS too
    config.database.status_table = true;
    config.database.status_interval = Duration::from_secs(1);
    let daemon = Daemon::start(config).await.expect("daemon starts");
    wait_registered(&daemon, 3, Duration::from_secs(20)).await;
    if backend == Backend::Postgres {
        let listening = wait_until(Duration::from_secs(10), || async {
            daemon.gateway().database_health().listening
        })
        .await;
        assert!(listening, "LISTEN over TLS failed");
    }
    daemon.stop().await;
}

macro_rules! tests_on {
    ($module:ident, $backend:expr, [$($scenario:ident),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($backend).await
                }
            )*
        }
    };
}

tests_on!(
    sqlite,
    super::Backend::Sqlite,
    [
        registers_rows_and_reloads_the_difference,
        kamailio_table_is_used_as_is,
        without_migrations_nothing_is_created,
        kamailio_version_6_table_reads_contact_user,
        periodic_reload_picks_up_changes,
        status_table_follows_the_registrations,
        schema_file_matches_the_migrations,
    ]
);
tests_on!(
    postgres,
    super::Backend::Postgres,
    [
        registers_rows_and_reloads_the_difference,
        kamailio_table_is_used_as_is,
        without_migrations_nothing_is_created,
        kamailio_version_6_table_reads_contact_user,
        periodic_reload_picks_up_changes,
        status_table_follows_the_registrations,
        schema_file_matches_the_migrations,
        database_outage_loses_nothing,
        start_up_waits_for_the_database,
        tls_to_the_database_is_verified,
        postgres_notify_reloads_at_once,
    ]
);
tests_on!(
    mariadb,
    super::Backend::MariaDb,
    [
        registers_rows_and_reloads_the_difference,
        kamailio_table_is_used_as_is,
        without_migrations_nothing_is_created,
        kamailio_version_6_table_reads_contact_user,
        periodic_reload_picks_up_changes,
        status_table_follows_the_registrations,
        schema_file_matches_the_migrations,
        database_outage_loses_nothing,
        start_up_waits_for_the_database,
        tls_to_the_database_is_verified,
    ]
);

//! Proves the database server harness (`tests/support/dbserver.rs`) for each engine: a server
//! starts with the `uacreg` database and user, keeps its data across stop/restart on the same
//! port, refuses connections while stopped, leaves no process or file behind when dropped, and
//! several run side by side.
//!
//! Needs PostgreSQL and MariaDB (scripts/install-test-deps); skipped locally without them,
//! failed in CI. Everything listens on 127.0.0.1 only.

mod support;

use std::io;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use support::dbserver::{DbServer, Engine, require_engine};
use support::process::proc_stat;

fn start(engine: Engine) -> DbServer {
    DbServer::start(engine).unwrap_or_else(|e| panic!("starting {engine}: {e}"))
}

fn sql(server: &DbServer, statements: &str) -> String {
    server
        .sql(statements)
        .unwrap_or_else(|e| panic!("{statements}: {e}\n--- log ---\n{}", server.log()))
}

/// The name of the user the server sees us as, in the engine's own words.
fn current_user(server: &DbServer) -> String {
    let query = match server.engine() {
        Engine::Postgres => "SELECT current_user;",
        Engine::MariaDb => "SELECT current_user();",
    };
    sql(server, query).trim().to_owned()
}

/// Processes named by (pid, start time), so a pid reused after the server is gone does not
/// count as the server.
fn identities(pids: &[u32]) -> Vec<(u32, u64)> {
    pids.iter()
        .filter_map(|&pid| Some((pid, proc_stat(pid)?.start_time)))
        .collect()
}

fn still_alive(identities: &[(u32, u64)]) -> Vec<u32> {
    identities
        .iter()
        .filter(|&&(pid, start)| {
            proc_stat(pid).is_some_and(|s| s.start_time == start && s.state != 'Z')
        })
        .map(|&(pid, _)| pid)
        .collect()
}

/// Pids of live processes whose command line mentions `dir` (the data dir is on the server's
/// command line).
fn processes_mentioning(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .filter(|&pid| proc_stat(pid).is_some_and(|s| s.state != 'Z'))
        .collect()
}

fn assert_refused(port: u16) {
    match TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        other => panic!("connecting to stopped server on port {port}: {other:?}"),
    }
}

fn lifecycle(engine: Engine) {
    let mut server = start(engine);
    eprintln!(
        "{engine}: started in {:?} (data dir {:?} of it) at {}",
        server.startup_time(),
        server.init_time(),
        server.url()
    );
    assert!(server.is_running());
    assert_eq!(
        server.url(),
        format!(
            "{}://uacreg:uacreg-secret@127.0.0.1:{}/uacreg",
            engine.scheme(),
            server.port()
        )
    );
    assert_eq!(
        current_user(&server),
        match engine {
            Engine::Postgres => "uacreg",
            Engine::MariaDb => "uacreg@%",
        }
    );

    let out = sql(
        &server,
        "CREATE TABLE greeting (id INT PRIMARY KEY, word VARCHAR(32) NOT NULL);\n\
         INSERT INTO greeting (id, word) VALUES (1, 'alpha'), (2, 'beta');\n\
         SELECT id, word FROM greeting ORDER BY id;",
    );
    let separator = match engine {
        Engine::Postgres => "|",
        Engine::MariaDb => "\t",
    };
    assert_eq!(out, format!("1{separator}alpha\n2{separator}beta\n"));

    let err = server
        .sql("SELECT * FROM no_such_table;")
        .expect_err("a query on a missing table must fail");
    assert!(err.to_string().contains("no_such_table"), "{err}");

    let port = server.port();
    let dir = server.dir().to_path_buf();
    let began = Instant::now();
    server.stop();
    eprintln!("{engine}: stopped in {:?}", began.elapsed());
    assert!(!server.is_running());
    assert!(server.processes().is_empty());
    assert_refused(port);
    assert!(dir.join("data").is_dir(), "stop removed the data dir");
    assert!(
        server.sql("SELECT 1;").is_err(),
        "a stopped server answered"
    );

    server
        .restart()
        .unwrap_or_else(|e| panic!("restarting {engine}: {e}"));
    eprintln!("{engine}: restarted in {:?}", server.startup_time());
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    assert_eq!(
        sql(&server, "SELECT word FROM greeting ORDER BY id;"),
        "alpha\nbeta\n"
    );

    let processes = identities(&server.processes());
    // The watchdog and the server at least.
    assert!(processes.len() >= 2, "{processes:?}");
    assert!(!processes_mentioning(&dir).is_empty());
    let began = Instant::now();
    drop(server);
    eprintln!("{engine}: dropped in {:?}", began.elapsed());
    if std::env::var_os("UACREG_KEEP_TEST_DIRS").is_none() {
        assert!(!dir.exists(), "{} was left behind", dir.display());
    }
    let left = still_alive(&processes);
    assert!(left.is_empty(), "still running after drop: {left:?}");
    let left = processes_mentioning(&dir);
    assert!(left.is_empty(), "still running after drop: {left:?}");
    assert_refused(port);
}

fn side_by_side(engine: Engine) {
    let servers: Vec<DbServer> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2).map(|_| s.spawn(|| start(engine))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("start thread"))
            .collect()
    });
    let (a, b) = (&servers[0], &servers[1]);
    assert_ne!(a.port(), b.port());
    assert_ne!(a.dir(), b.dir());
    sql(
        a,
        "CREATE TABLE mine (v INT);\nINSERT INTO mine VALUES (1);",
    );
    sql(
        b,
        "CREATE TABLE mine (v INT);\nINSERT INTO mine VALUES (2);",
    );
    assert_eq!(sql(a, "SELECT v FROM mine;"), "1\n");
    assert_eq!(sql(b, "SELECT v FROM mine;"), "2\n");
    for server in &servers {
        eprintln!(
            "{engine}: started in {:?} beside another",
            server.startup_time()
        );
    }
}

#[test]
fn postgres_starts_stops_restarts_and_cleans_up() {
    if !require_engine(Engine::Postgres) {
        return;
    }
    lifecycle(Engine::Postgres);
}

#[test]
fn mariadb_starts_stops_restarts_and_cleans_up() {
    if !require_engine(Engine::MariaDb) {
        return;
    }
    lifecycle(Engine::MariaDb);
}

#[test]
fn two_postgres_servers_run_side_by_side() {
    if !require_engine(Engine::Postgres) {
        return;
    }
    side_by_side(Engine::Postgres);
}

#[test]
fn two_mariadb_servers_run_side_by_side() {
    if !require_engine(Engine::MariaDb) {
        return;
    }
    side_by_side(Engine::MariaDb);
}

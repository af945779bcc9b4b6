//! Throwaway PostgreSQL and MariaDB servers for one test, on a spare loopback TCP port.
//!
//! [`DbServer::start`] makes a fresh data dir in a temp dir of its own, starts the server on
//! `127.0.0.1:<spare port>` and waits until a real query over TCP succeeds as the user the
//! tests use: database `uacreg`, user `uacreg`, password `uacreg-secret` ([`DbServer::url`]).
//! [`DbServer::sql`] runs statements as that user through the engine's own CLI.
//!
//! **PostgreSQL.** `initdb --auth-local=trust --auth-host=scram-sha-256`: the superuser
//! `postgres` (no password) is reachable only on the Unix socket, which lives in the temp dir
//! (`-k`); over TCP every user needs a SCRAM-SHA-256 password. The role and database are created
//! through that socket once the server is up. `postgres` runs in the foreground with
//! `listen_addresses=127.0.0.1`, small `shared_buffers` and `fsync=off`. PostgreSQL refuses to
//! run as root: as root, `initdb` and `postgres` run as the `postgres` system user (made by the
//! Debian package) via `setpriv`, and the data and socket dirs are chowned to it.
//!
//! **MariaDB.** `mariadb-install-db` bootstraps the data dir and runs an extra SQL file that
//! creates the database and `'uacreg'@'%'`/`'uacreg'@'localhost'` (password auth,
//! `mysql_native_password`). The superusers are those of Debian's packaged server: `root` (and
//! the `--user` account) only on the Unix socket in the temp dir, by `unix_socket` auth
//! (`--auth-root-authentication-method=socket`; `normal` would add passwordless `root@127.0.0.1`
//! and `root@::1`, open to any TCP client). `mariadbd`
//! runs with `--no-defaults`, so no `/etc/mysql` or `~/.my.cnf` setting applies, on
//! `--bind-address=127.0.0.1`, without binary log, native AIO or name resolution. As root it is
//! told `--user=mysql` (it switches to that user itself); without a `mysql` user, `--user=root`.
//!
//! **Lifetime.** The server runs under an `sh` watchdog holding a pipe from the test process
//! ([`Watched`]): [`DbServer::stop`], drop, or the death of the test process closes the pipe
//! and the watchdog sends the server its fast-shutdown signal (SIGINT for PostgreSQL, SIGTERM
//! for MariaDB). Stop waits a bounded time, then kills the server's whole process tree —
//! PostgreSQL's children `setsid()` out of the group, so the group alone would miss them.
//! `stop` keeps the data dir and the port reservation for [`DbServer::restart`]; drop removes
//! both.
//!
//! **Parallel tests.** Each server has its own temp dir (data, sockets, pid file, log) and a
//! reserved port ([`spare_tcp_port`]). Neither engine binds with SO_REUSEPORT, so a port taken
//! by something outside the reservation scheme makes the start fail loudly; the first start
//! then tries another port.

use std::fmt::{self, Write as _};
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::process::{
    PortReservation, TempDir, Watched, find_program, read_lossy, require, run_with_input,
    spare_tcp_port, tail,
};

/// Database, user and password every server is made with.
pub const DATABASE: &str = "uacreg";
pub const USER: &str = "uacreg";
pub const PASSWORD: &str = "uacreg-secret";

/// From spawning the server to the first successful query. Both engines usually need well
/// under a second; a loaded 2-core CI machine running several at once gets much more.
const STARTUP_LIMIT: Duration = Duration::from_secs(60);
/// `initdb` / `mariadb-install-db`.
const INIT_LIMIT: Duration = Duration::from_secs(120);
/// How long a stop waits for the server's own shutdown before killing it.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);
/// Any one client run (`psql`, `mariadb`).
const CLIENT_LIMIT: Duration = Duration::from_secs(60);
/// Port collisions at the first start are retried this many times.
const START_ATTEMPTS: usize = 5;
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(25);

const SETPRIV_CANDIDATES: &[&str] = &["/usr/bin/setpriv", "/bin/setpriv"];
const MARIADBD_CANDIDATES: &[&str] = &["/usr/sbin/mariadbd", "/usr/local/sbin/mariadbd"];
const MARIADB_INSTALL_DB_CANDIDATES: &[&str] = &[
    "/usr/bin/mariadb-install-db",
    "/usr/local/bin/mariadb-install-db",
];
const MARIADB_CANDIDATES: &[&str] = &["/usr/bin/mariadb", "/usr/local/bin/mariadb"];

/// Server settings shared by `mariadb-install-db` (which hands options it does not know to the
/// bootstrap server) and `mariadbd`, so both see the same InnoDB layout.
const MARIADB_TUNING: &[&str] = &[
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=8M",
    "--innodb-use-native-aio=0",
    "--innodb-doublewrite=0",
    "--innodb-flush-log-at-trx-commit=2",
    "--innodb-buffer-pool-dump-at-shutdown=0",
    "--innodb-buffer-pool-load-at-startup=0",
    "--character-set-server=utf8mb4",
    "--skip-name-resolve",
];

/// A database engine the store supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Engine {
    Postgres,
    MariaDb,
}

impl Engine {
    /// The product name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Postgres => "PostgreSQL",
            Engine::MariaDb => "MariaDB",
        }
    }

    /// The URL scheme diesel (and uacreg's `db_url`) uses for it.
    pub fn scheme(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::MariaDb => "mysql",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// True when the engine's server, init tool and client are installed (and, as root, the means
/// to run PostgreSQL as another user).
pub fn engine_available(engine: Engine) -> bool {
    Installation::find(engine).is_ok()
}

/// Call first in every test that needs a database server: `if !require_engine(e) { return; }`.
/// In CI (`CI=true`) a missing engine is a hard failure; locally it returns false after printing
/// why the test is skipped.
pub fn require_engine(engine: Engine) -> bool {
    let found = Installation::find(engine);
    let available = found.is_ok();
    require(engine.name(), available, || found.err().unwrap_or_default())
}

/// A system account the server runs as (when the test runs as root).
#[derive(Clone, Debug)]
struct Account {
    name: String,
    uid: u32,
    gid: u32,
}

impl Account {
    /// Looks `name` up in `/etc/passwd` (std has no getpwnam).
    fn find(name: &str) -> Option<Account> {
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        passwd.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.first() == Some(&name)).then_some(())?;
            Some(Account {
                name: name.to_owned(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
    }
}

/// The effective uid of this process, from `/proc/self/status` ("Uid: real effective ...").
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn running_as_root() -> bool {
    effective_uid() == Some(0)
}

/// Where an engine's programs are, or why it is not usable.
#[derive(Clone, Debug)]
enum Installation {
    Postgres {
        initdb: PathBuf,
        postgres: PathBuf,
        psql: PathBuf,
        /// As root: `setpriv` and the `postgres` account to run the server as.
        run_as: Option<(PathBuf, Account)>,
    },
    MariaDb {
        install_db: PathBuf,
        mariadbd: PathBuf,
        client: PathBuf,
        /// As root: the account for `--user` (`mysql`, else `root`); `None` when not root.
        run_as: Option<Account>,
    },
}

impl Installation {
    fn find(engine: Engine) -> Result<Installation, String> {
        match engine {
            Engine::Postgres => Self::find_postgres(),
            Engine::MariaDb => Self::find_mariadb(),
        }
    }

    fn find_postgres() -> Result<Installation, String> {
        // Debian: /usr/lib/postgresql/<major>/bin, possibly several majors; the newest wins.
        let bin = newest_postgres_bin_dir();
        let tool = |name: &str| -> Result<PathBuf, String> {
            if let Some(bin) = &bin {
                if bin.join(name).is_file() {
                    return Ok(bin.join(name));
                }
            }
            find_program(name, &[])
                .ok_or_else(|| format!("no PostgreSQL {name} (Debian package postgresql)"))
        };
        let initdb = tool("initdb")?;
        let postgres = tool("postgres")?;
        let psql = tool("psql")?;
        let run_as = if running_as_root() {
            let setpriv = find_program("setpriv", SETPRIV_CANDIDATES)
                .ok_or("running as root and no setpriv (util-linux) to drop to user postgres")?;
            let account = Account::find("postgres").ok_or(
                "running as root and no `postgres` system user (made by Debian package postgresql)",
            )?;
            Some((setpriv, account))
        } else {
            None
        };
        Ok(Installation::Postgres {
            initdb,
            postgres,
            psql,
            run_as,
        })
    }

    fn find_mariadb() -> Result<Installation, String> {
        let mariadbd = find_program("mariadbd", MARIADBD_CANDIDATES)
            .ok_or("no mariadbd (Debian package mariadb-server)")?;
        let install_db = find_program("mariadb-install-db", MARIADB_INSTALL_DB_CANDIDATES)
            .ok_or("no mariadb-install-db (Debian package mariadb-server)")?;
        let client = find_program("mariadb", MARIADB_CANDIDATES)
            .ok_or("no mariadb client (Debian package mariadb-client)")?;
        let run_as = if running_as_root() {
            Some(Account::find("mysql").unwrap_or(Account {
                name: "root".to_owned(),
                uid: 0,
                gid: 0,
            }))
        } else {
            None
        };
        Ok(Installation::MariaDb {
            install_db,
            mariadbd,
            client,
            run_as,
        })
    }

    fn engine(&self) -> Engine {
        match self {
            Installation::Postgres { .. } => Engine::Postgres,
            Installation::MariaDb { .. } => Engine::MariaDb,
        }
    }

    /// The account that owns the data dir and runs the server, when it is not this process's.
    fn server_account(&self) -> Option<&Account> {
        match self {
            Installation::Postgres { run_as, .. } => run_as.as_ref().map(|(_, a)| a),
            Installation::MariaDb { run_as, .. } => run_as.as_ref().filter(|a| a.uid != 0),
        }
    }
}

fn newest_postgres_bin_dir() -> Option<PathBuf> {
    let entries = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major)
        .map(|(_, bin)| bin)
}

/// A running (or stopped) database server. Dropping it stops the server and removes its temp
/// dir.
pub struct DbServer {
    install: Installation,
    /// `None` while stopped.
    process: Option<Watched>,
    port: PortReservation,
    log: std::fs::File,
    log_path: PathBuf,
    init: Duration,
    startup: Duration,
    /// Server options added by [`enable_tls`](Self::enable_tls).
    extra_args: Vec<String>,
    // Declared last: removed after the process is gone.
    dir: TempDir,
}

impl DbServer {
    /// Makes a fresh data dir, starts the server on a spare loopback port and waits until the
    /// `uacreg` user can run a query over TCP at [`url`](Self::url).
    pub fn start(engine: Engine) -> io::Result<DbServer> {
        let began = Instant::now();
        let install =
            Installation::find(engine).map_err(|e| io::Error::new(io::ErrorKind::NotFound, e))?;
        let dir = TempDir::new(match engine {
            Engine::Postgres => "uacreg-postgres",
            Engine::MariaDb => "uacreg-mariadb",
        })?;
        prepare_dirs(&install, dir.path())?;
        initialise(&install, dir.path())?;
        let init = began.elapsed();
        let log_path = dir.path().join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;

        let mut server = DbServer {
            install,
            process: None,
            port: spare_tcp_port()?,
            log,
            log_path,
            init,
            startup: Duration::ZERO,
            extra_args: Vec::new(),
            dir,
        };
        let mut failures = String::new();
        for attempt in 1..=START_ATTEMPTS {
            if attempt > 1 {
                server.port = spare_tcp_port()?;
            }
            match server.launch(true) {
                Ok(()) => {
                    server.startup = began.elapsed();
                    return Ok(server);
                }
                Err(Launch::PortTaken(why)) => {
                    server.stop();
                    let _ = writeln!(failures, "attempt {attempt} on {}: {why}", server.addr());
                }
                Err(Launch::Failed(e)) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{engine} could not get a port of its own:\n{failures}"),
        ))
    }

    /// `postgres://uacreg:uacreg-secret@127.0.0.1:PORT/uacreg` or
    /// `mysql://uacreg:uacreg-secret@127.0.0.1:PORT/uacreg`.
    pub fn url(&self) -> String {
        format!(
            "{}://{USER}:{PASSWORD}@127.0.0.1:{}/{DATABASE}",
            self.engine().scheme(),
            self.port()
        )
    }

    /// The TCP port on 127.0.0.1; the same for the server's whole life, across restarts.
    pub fn port(&self) -> u16 {
        self.port.port()
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port()))
    }

    pub fn engine(&self) -> Engine {
        self.install.engine()
    }

    /// Shuts the server down (PostgreSQL "fast", MariaDB's SIGTERM shutdown: open connections
    /// are closed, nothing waits for clients), killing it if that takes over 10 s. The data dir
    /// and the port reservation stay, for [`restart`](Self::restart). Does nothing when stopped.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop(SHUTDOWN_LIMIT);
        }
    }

    /// Stops the server if it runs, starts it again on the same port with the same data, and
    /// waits until it answers queries. On failure the server is left stopped.
    pub fn restart(&mut self) -> io::Result<()> {
        let began = Instant::now();
        self.stop();
        match self.launch(false) {
            Ok(()) => {
                self.startup = began.elapsed();
                Ok(())
            }
            Err(Launch::PortTaken(why)) => {
                self.stop();
                Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} cannot restart on {}: {why}", self.engine(), self.addr()),
                ))
            }
            Err(Launch::Failed(e)) => {
                self.stop();
                Err(e)
            }
        }
    }

    /// Restarts the server serving TLS with `cert_pem`/`key_pem` (PEM). PostgreSQL then also
    /// refuses plain-text logins over TCP (`hostssl` in pg_hba.conf), so a client that gets in
    /// spoke TLS; MariaDB offers TLS and leaves the choice to the client.
    pub fn enable_tls(&mut self, cert_pem: &str, key_pem: &str) -> io::Result<()> {
        let tls = self.dir.path().join("tls");
        std::fs::create_dir_all(&tls)?;
        let cert = tls.join("server.crt");
        let key = tls.join("server.key");
        std::fs::write(&cert, cert_pem)?;
        std::fs::write(&key, key_pem)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        if let Some(account) = self.install.server_account() {
            for path in [&tls, &cert, &key] {
                std::os::unix::fs::chown(path, Some(account.uid), Some(account.gid))?;
            }
        }
        self.extra_args = match self.engine() {
            Engine::Postgres => {
                let hba = self.dir.path().join("data").join("pg_hba.conf");
                let text = std::fs::read_to_string(&hba)?;
                let ssl_only: String = text
                    .lines()
                    .map(|line| match line.strip_prefix("host ") {
                        Some(rest) => format!("hostssl {rest}\n"),
                        None => format!("{line}\n"),
                    })
                    .collect();
                std::fs::write(&hba, ssl_only)?;
                vec![
                    "-c".into(),
                    "ssl=on".into(),
                    "-c".into(),
                    format!("ssl_cert_file={}", cert.display()),
                    "-c".into(),
                    format!("ssl_key_file={}", key.display()),
                ]
            }
            Engine::MariaDb => vec![
                format!("--ssl-cert={}", cert.display()),
                format!("--ssl-key={}", key.display()),
            ],
        };
        self.restart()
    }

    /// Whether the server process is alive (started and neither stopped nor exited).
    pub fn is_running(&self) -> bool {
        self.process.as_ref().is_some_and(|p| !p.has_exited())
    }

    /// Runs `statements` (one or more, `;`-separated) as the `uacreg` user over TCP with the
    /// engine's CLI — `psql -At` (fields separated by `|`) or `mariadb --batch
    /// --skip-column-names` (fields separated by tabs) — stopping at the first error. Returns
    /// stdout: one line per result row. On failure the error carries the CLI's stderr.
    pub fn sql(&self, statements: &str) -> io::Result<String> {
        run_client(&self.install, self.port(), statements)
    }

    /// How long the last [`start`](Self::start) (including creating the data dir) or
    /// [`restart`](Self::restart) took until the first query succeeded.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// How long [`start`](Self::start) spent creating the data dir (`initdb`,
    /// `mariadb-install-db`), part of its [`startup_time`](Self::startup_time).
    pub fn init_time(&self) -> Duration {
        self.init
    }

    /// The temp dir: `data/` (the data dir), `run/` (sockets, pid file), `init.log`,
    /// `server.log`. Kept after drop only with `UACREG_KEEP_TEST_DIRS` set.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Pids of the watchdog, the server and the server's children (PostgreSQL's backends and
    /// auxiliary processes); empty while stopped.
    pub fn processes(&self) -> Vec<u32> {
        self.process
            .as_ref()
            .map(Watched::processes)
            .unwrap_or_default()
    }

    /// The server's log (stderr) so far, all starts included.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// Spawns the server on the reserved port and waits until it is ready; on the first start
    /// (`first`), also creates the PostgreSQL role and database.
    fn launch(&mut self, first: bool) -> Result<(), Launch> {
        let _ = writeln!(
            self.log,
            "=== uacreg test harness: starting {} on {} ===",
            self.engine(),
            self.addr()
        );
        let mut command = server_command(&self.install, self.dir.path(), self.port());
        command.args(&self.extra_args);
        let stop_signal = match self.engine() {
            // SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for clients to leave.
            Engine::Postgres => "INT",
            Engine::MariaDb => "TERM",
        };
        let process = Watched::spawn(&command, stop_signal, &self.log).map_err(Launch::Failed)?;
        self.process = Some(process);
        let deadline = Instant::now() + STARTUP_LIMIT;
        if first && self.engine() == Engine::Postgres {
            // Retried only until the server takes connections: the setup itself runs once.
            self.wait_until(deadline, "a superuser query on the Unix socket", |s| {
                run_postgres_superuser(&s.install, s.dir.path(), s.port(), "SELECT 1;")
            })?;
            let setup = format!(
                "CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}';\n\
                 CREATE DATABASE {DATABASE} OWNER {USER};\n"
            );
            run_postgres_superuser(&self.install, self.dir.path(), self.port(), &setup).map_err(
                |e| Launch::Failed(self.startup_error(&format!("creating role and database: {e}"))),
            )?;
        }
        self.wait_until(deadline, "a query over TCP", |s| {
            let out = s.sql("SELECT 1;")?;
            if out.trim() == "1" {
                Ok(())
            } else {
                Err(io::Error::other(format!("SELECT 1 returned {out:?}")))
            }
        })
    }

    /// Retries `probe` every [`PROBE_INTERVAL`] until it succeeds, the server exits, or
    /// `deadline` passes.
    fn wait_until(
        &self,
        deadline: Instant,
        what: &str,
        probe: impl Fn(&DbServer) -> io::Result<()>,
    ) -> Result<(), Launch> {
        loop {
            let last = match probe(self) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if !self.is_running() {
                let log = self.log();
                let why = format!("{} exited during startup", self.engine());
                if port_taken(&log) {
                    return Err(Launch::PortTaken(why));
                }
                return Err(Launch::Failed(self.startup_error(&why)));
            }
            if Instant::now() >= deadline {
                return Err(Launch::Failed(self.startup_error(&format!(
                    "{what} did not succeed within {STARTUP_LIMIT:?}; last error: {last}"
                ))));
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
    }

    fn startup_error(&self, why: &str) -> io::Error {
        io::Error::other(format!(
            "{} did not start on {}: {why}\n--- log {} (tail) ---\n{}",
            self.engine(),
            self.addr(),
            self.log_path.display(),
            tail(&self.log(), 40)
        ))
    }
}

impl Drop for DbServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl fmt::Debug for DbServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbServer")
            .field("engine", &self.engine())
            .field("addr", &self.addr())
            .field("running", &self.is_running())
            .field("dir", &self.dir.path())
            .finish()
    }
}

enum Launch {
    /// The port was taken by someone else; another port may work.
    PortTaken(String),
    Failed(io::Error),
}

/// Whether the server's log says it could not bind its TCP port.
fn port_taken(log: &str) -> bool {
    // The log covers earlier attempts too; only the last start counts.
    let last = log
        .rsplit("=== uacreg test harness: starting")
        .next()
        .unwrap_or(log);
    last.contains("Address already in use")
        || last.contains("could not bind")
        || last.contains("Bind on TCP/IP port")
}

/// Creates `data/` and `run/` (and `tmp/` for MariaDB) and, when the server runs as another
/// account, hands them to it and checks that the account can reach them at all.
fn prepare_dirs(install: &Installation, dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;

    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let mut subdirs = vec!["run"];
    match install.engine() {
        // initdb wants to create or own the data dir itself; mariadb-install-db creates it.
        Engine::Postgres => subdirs.push("data"),
        Engine::MariaDb => subdirs.push("tmp"),
    }
    for sub in subdirs {
        let path = dir.join(sub);
        std::fs::create_dir(&path)?;
        let mode = if sub == "data" { 0o700 } else { 0o755 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        if let Some(account) = install.server_account() {
            std::os::unix::fs::chown(&path, Some(account.uid), Some(account.gid))?;
        }
    }
    if let Some(account) = install.server_account() {
        check_reachable(dir, account)?;
    }
    Ok(())
}

/// The server account needs search permission on every directory above its dirs.
fn check_reachable(dir: &Path, account: &Account) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    for ancestor in dir.ancestors() {
        let meta = std::fs::metadata(ancestor)?;
        let mode = meta.permissions().mode();
        let searchable = mode & 0o001 != 0
            || (meta.uid() == account.uid && mode & 0o100 != 0)
            || (meta.gid() == account.gid && mode & 0o010 != 0);
        if !searchable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "the database server runs as user {} (this test runs as root), which cannot \
                     enter {} (mode {:o}); point TMPDIR at a directory others may enter, e.g. /tmp",
                    account.name,
                    ancestor.display(),
                    mode & 0o7777
                ),
            ));
        }
    }
    Ok(())
}

/// Environment for every program started here: English messages, and nothing from the
/// caller's PG*/MYSQL* variables (a `PGHOST` or `PGOPTIONS` would redirect or change us).
fn clean_env(command: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        let key_str = key.to_string_lossy();
        if key_str.starts_with("PG")
            || key_str.starts_with("MYSQL")
            || key_str.starts_with("MARIADB")
        {
            command.env_remove(&key);
        }
    }
    command.env("LC_ALL", "C").env_remove("LANG")
}

/// `command` for `program`, run as `run_as` through `setpriv` when given.
fn command_as(program: &Path, run_as: Option<&(PathBuf, Account)>) -> Command {
    let mut command = match run_as {
        Some((setpriv, account)) => {
            let mut c = Command::new(setpriv);
            c.arg(format!("--reuid={}", account.uid))
                .arg(format!("--regid={}", account.gid))
                .arg("--init-groups")
                .arg("--")
                .arg(program);
            c
        }
        None => Command::new(program),
    };
    clean_env(&mut command);
    command
}

/// Makes the data dir: `initdb` or `mariadb-install-db` (with the MariaDB user and database).
fn initialise(install: &Installation, dir: &Path) -> io::Result<()> {
    let data = dir.join("data");
    let mut command = match install {
        Installation::Postgres { initdb, run_as, .. } => {
            let mut c = command_as(initdb, run_as.as_ref());
            c.arg("-D")
                .arg(&data)
                .args(["--username=postgres", "--encoding=UTF8", "--locale=C"])
                .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
                .arg("--no-sync");
            c
        }
        Installation::MariaDb {
            install_db, run_as, ..
        } => {
            let extra = dir.join("create-uacreg.sql");
            std::fs::write(&extra, mariadb_setup_sql())?;
            let mut c = Command::new(install_db);
            clean_env(&mut c);
            c.arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg("--auth-root-authentication-method=socket")
                .arg("--skip-test-db")
                .arg(format!("--extra-file={}", extra.display()))
                // Passed on to the bootstrap server. Each mariadbd deletes every `#sql*` file in
                // its tmpdir when it starts, so a shared /tmp lets one bootstrap delete another's
                // temporary tables ("Unknown table 'mysql.tmp_user_sys'").
                .arg(format!("--tmpdir={}", dir.join("tmp").display()));
            if let Some(account) = run_as {
                c.arg(format!("--user={}", account.name));
            }
            c.args(MARIADB_TUNING);
            c
        }
    };
    command.current_dir(dir);
    let program = command.get_program().to_string_lossy().into_owned();
    let output = run_with_input(&mut command, "", INIT_LIMIT)?;
    let mut log = output.stdout;
    log.extend_from_slice(&output.stderr);
    let _ = std::fs::write(dir.join("init.log"), &log);
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "creating the {} data dir in {} failed ({program}: {}):\n{}",
            install.engine(),
            data.display(),
            output.status,
            tail(&String::from_utf8_lossy(&log), 40)
        )));
    }
    Ok(())
}

/// Run inside `mariadb-install-db`'s bootstrap server, which starts with grant tables off;
/// `FLUSH PRIVILEGES` loads them so that users can be created.
fn mariadb_setup_sql() -> String {
    let mut sql = format!("FLUSH PRIVILEGES;\nCREATE DATABASE {DATABASE};\n");
    // '%' is what TCP clients match (names are not resolved); 'localhost' covers the socket.
    for host in ["%", "localhost"] {
        let _ = writeln!(
            sql,
            "CREATE USER '{USER}'@'{host}' IDENTIFIED BY '{PASSWORD}';\n\
             GRANT ALL PRIVILEGES ON {DATABASE}.* TO '{USER}'@'{host}';"
        );
    }
    sql
}

/// The server in the foreground, listening on 127.0.0.1:`port` and a socket in `run/`.
fn server_command(install: &Installation, dir: &Path, port: u16) -> Command {
    let data = dir.join("data");
    let run = dir.join("run");
    let mut command = match install {
        Installation::Postgres {
            postgres, run_as, ..
        } => {
            let mut c = command_as(postgres, run_as.as_ref());
            c.arg("-D").arg(&data).arg("-p").arg(port.to_string());
            c.arg("-k").arg(&run);
            for setting in [
                "listen_addresses=127.0.0.1",
                "shared_buffers=8MB",
                "fsync=off",
                "synchronous_commit=off",
                "full_page_writes=off",
                "huge_pages=off",
                "max_connections=100",
                "lc_messages=C",
            ] {
                c.arg("-c").arg(setting);
            }
            c
        }
        Installation::MariaDb {
            mariadbd, run_as, ..
        } => {
            let mut c = Command::new(mariadbd);
            clean_env(&mut c);
            // --no-defaults must come first.
            c.arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--port={port}"))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--socket={}", run.join("mysqld.sock").display()))
                .arg(format!("--pid-file={}", run.join("mariadbd.pid").display()))
                // Its own: see initialise().
                .arg(format!("--tmpdir={}", dir.join("tmp").display()))
                .arg("--skip-log-bin")
                .arg("--max-connect-errors=1000000");
            if let Some(account) = run_as {
                c.arg(format!("--user={}", account.name));
            }
            c.args(MARIADB_TUNING);
            c
        }
    };
    command.current_dir(dir);
    command
}

/// Runs `statements` as the superuser `postgres` over the Unix socket (trust auth), one at a
/// time (psql reading a script: CREATE DATABASE cannot run in the implicit transaction of a
/// multi-statement `-c`).
fn run_postgres_superuser(
    install: &Installation,
    dir: &Path,
    port: u16,
    statements: &str,
) -> io::Result<()> {
    let Installation::Postgres { psql, .. } = install else {
        return Ok(());
    };
    let mut command = Command::new(psql);
    clean_env(&mut command)
        .args(["-X", "-q", "-w", "-v", "ON_ERROR_STOP=1"])
        .arg("-h")
        .arg(dir.join("run"))
        .arg("-p")
        .arg(port.to_string())
        .args(["-U", "postgres", "-d", "postgres", "-f", "-"]);
    checked_output(&mut command, statements)
}

/// Runs the engine's CLI as `uacreg` over TCP with `statements` on stdin.
fn run_client(install: &Installation, port: u16, statements: &str) -> io::Result<String> {
    let mut command = match install {
        Installation::Postgres { psql, .. } => {
            let mut c = Command::new(psql);
            clean_env(&mut c)
                .env("PGPASSWORD", PASSWORD)
                .env("PGCONNECT_TIMEOUT", "5")
                .args(["-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1"])
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(["-U", USER, "-d", DATABASE, "-f", "-"]);
            c
        }
        Installation::MariaDb { client, .. } => {
            let mut c = Command::new(client);
            clean_env(&mut c)
                .args(["--no-defaults", "--batch", "--skip-column-names"])
                .args(["--protocol=TCP", "--host=127.0.0.1"])
                .arg(format!("--port={port}"))
                .arg(format!("--user={USER}"))
                .arg(format!("--password={PASSWORD}"))
                .args(["--connect-timeout=5", DATABASE]);
            c
        }
    };
    let program = command.get_program().to_string_lossy().into_owned();
    let output = run_with_input(&mut command, statements, CLIENT_LIMIT)?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "{program} on 127.0.0.1:{port} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn checked_output(command: &mut Command, input: &str) -> io::Result<()> {
    let program = command.get_program().to_string_lossy().into_owned();
    let output = run_with_input(command, input, CLIENT_LIMIT)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{program} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

//! A real Kamailio registrar for one test, on a spare loopback UDP port.
//!
//! [`KamailioRegistrar::start`] writes, into a temp dir of its own:
//! * `registrar.db` — a SQLite database made from Kamailio's own DDL
//!   (`/usr/share/kamailio/db_sqlite/{standard,auth_db,usrloc}-create.sql`), in WAL mode, with one
//!   `subscriber` row per user (plaintext password; Kamailio computes HA1, `calculate_ha1`).
//! * `kamailio.cfg` — REGISTER is challenged with `auth_challenge("$fd", "1")` (realm = From domain,
//!   `qop="auth"`), checked with `auth_check("$fd", "subscriber", "1")` and saved with
//!   `save("location")`. A wrong password or unknown user is challenged again (401); an
//!   authentication user other than the To user gets 403 (flag 1 of `auth_check`). OPTIONS to
//!   the server itself gets 200 (the readiness probe); anything else gets 405. Only UDP.
//!
//! **How bindings are read.** usrloc runs with `db_mode=1` (write-through) on the same SQLite
//! file: Kamailio writes every binding change to the `location` table *before* it sends the 200,
//! so once a client has its 200, [`KamailioRegistrar::bindings`] (the `sqlite3` CLI, a read-only
//! query) sees the binding. Rows whose `expires` has passed are not counted, even if Kamailio's
//! timer has not deleted them yet. An un-REGISTER (`Expires: 0`) deletes the row at once.
//!
//! **One SIP worker.** `children=1`: Kamailio's db_sqlite sets no busy timeout, so two worker
//! processes writing the file at the same moment would make one `save()` fail with a 500. One
//! worker serialises all writes (the usrloc timer only deletes expired rows, every
//! `timer_interval`). The query side never blocks Kamailio: WAL readers do not lock writers out.
//!
//! **Lifetime.** Kamailio runs in the foreground (`-DD -E`) under a small `sh` watchdog in its own
//! process group. The watchdog holds a pipe from the test process; when the registrar is dropped
//! — or the test process dies in any way — the pipe closes and the watchdog sends SIGTERM to
//! Kamailio. Drop waits (bounded) and falls back to SIGKILL on the group, then removes the dir.
//!
//! **Parallel tests.** Each instance has its own dir, pid file, runtime dir (`-Y`), database and
//! port. Kamailio binds with SO_REUSEADDR, so a port collision would not fail; instead every
//! instance puts a unique token in its `Server` header and the readiness probe (an OPTIONS) must
//! see that token, otherwise the instance is restarted on another port.

use std::fmt::Write as _;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::process::{
    PortReservation, TempDir, Watched, find_program, read_lossy, require, run_with_input,
    spare_udp_port, tail,
};

/// How long Kamailio may take to answer its first OPTIONS. It usually takes well under a second.
const STARTUP_LIMIT: Duration = Duration::from_secs(15);
/// How long Drop waits for a clean SIGTERM shutdown before SIGKILL.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);
/// Port collisions (see the module doc) are retried this many times.
const START_ATTEMPTS: usize = 5;
/// Any `sqlite3` run is given this long.
const SQLITE_LIMIT: Duration = Duration::from_secs(20);

const KAMAILIO_CANDIDATES: &[&str] = &["/usr/sbin/kamailio", "/usr/local/sbin/kamailio"];
const SQLITE3_CANDIDATES: &[&str] = &["/usr/bin/sqlite3"];
const MODULE_DIR_CANDIDATES: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/kamailio/modules",
    "/usr/lib/aarch64-linux-gnu/kamailio/modules",
    "/usr/lib64/kamailio/modules",
    "/usr/lib/kamailio/modules",
    "/usr/local/lib64/kamailio/modules",
    "/usr/local/lib/kamailio/modules",
];
const DDL_DIR_CANDIDATES: &[&str] = &[
    "/usr/share/kamailio/db_sqlite",
    "/usr/local/share/kamailio/db_sqlite",
];
/// Modules the generated config loads; all must be present in the module dir.
const MODULES: &[&str] = &[
    "tm",
    "sl",
    "pv",
    "maxfwd",
    "textops",
    "siputils",
    "xlog",
    "sanity",
    "db_sqlite",
    "auth",
    "auth_db",
    "usrloc",
    "registrar",
];

/// Where the pieces of an installed Kamailio are, or why it is not usable.
pub struct Installation {
    pub kamailio: PathBuf,
    pub sqlite3: PathBuf,
    pub module_dir: PathBuf,
    pub ddl_dir: PathBuf,
}

impl Installation {
    /// Finds Kamailio, the `sqlite3` CLI, the module dir (with every module of [`MODULES`]) and
    /// the SQLite DDL; the error says what is missing.
    pub fn find() -> Result<Installation, String> {
        let kamailio = find_program("kamailio", KAMAILIO_CANDIDATES)
            .ok_or("no kamailio binary (Debian package kamailio)")?;
        let sqlite3 = find_program("sqlite3", SQLITE3_CANDIDATES)
            .ok_or("no sqlite3 CLI (Debian package sqlite3)")?;
        let module_dir = MODULE_DIR_CANDIDATES
            .iter()
            .map(PathBuf::from)
            .find(|d| d.join("registrar.so").is_file())
            .ok_or("no Kamailio module dir with registrar.so")?;
        for m in MODULES {
            if !module_dir.join(format!("{m}.so")).is_file() {
                return Err(format!(
                    "Kamailio module {m}.so missing from {} (db_sqlite is in kamailio-sqlite-modules)",
                    module_dir.display()
                ));
            }
        }
        let ddl_dir = DDL_DIR_CANDIDATES
            .iter()
            .map(PathBuf::from)
            .find(|d| d.join("usrloc-create.sql").is_file())
            .ok_or("no Kamailio SQLite DDL (usrloc-create.sql; package kamailio-sqlite-modules)")?;
        Ok(Installation {
            kamailio,
            sqlite3,
            module_dir,
            ddl_dir,
        })
    }
}

impl Installation {
    /// Kamailio's SQLite DDL `files` (e.g. `standard-create.sql`), concatenated for one
    /// `sqlite3` script.
    pub fn ddl(&self, files: &[&str]) -> io::Result<String> {
        let mut sql = String::new();
        for file in files {
            let path = self.ddl_dir.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                io::Error::new(e.kind(), format!("reading {}: {e}", path.display()))
            })?;
            sql.push_str(&text);
            sql.push('\n');
        }
        Ok(sql)
    }
}

/// True when Kamailio, its SQLite modules and the `sqlite3` CLI are all installed.
pub fn kamailio_available() -> bool {
    Installation::find().is_ok()
}

/// Call first in every test that needs Kamailio: `if !require_kamailio() { return; }`.
/// In CI (`CI=true`) a missing Kamailio is a hard failure; locally it returns false after
/// printing why the test is skipped.
pub fn require_kamailio() -> bool {
    let found = Installation::find();
    let available = found.is_ok();
    require("Kamailio", available, || found.err().unwrap_or_default())
}

/// Registrar settings beyond the defaults of [`KamailioRegistrar::start`].
#[derive(Clone, Debug)]
pub struct RegistrarOptions {
    /// registrar `min_expires`. 0 (the default here) accepts any Expires, so tests can use short
    /// registrations; Kamailio's own default is 60, which silently raises shorter ones.
    pub min_expires: u32,
    /// registrar `max_expires`; 0 (the default) means no upper limit.
    pub max_expires: u32,
    /// registrar `default_expires`, used when the REGISTER carries no expiry (default 3600).
    pub default_expires: u32,
    /// Also listen on TCP at the same address (Kamailio's TCP stack, one worker).
    pub tcp: bool,
}

impl Default for RegistrarOptions {
    fn default() -> RegistrarOptions {
        RegistrarOptions {
            min_expires: 0,
            max_expires: 0,
            default_expires: 3600,
            tcp: false,
        }
    }
}

/// One row of usrloc's `location` table that has not expired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub username: String,
    pub domain: String,
    /// The Contact URI as registered, e.g. `sip:uuid1@127.0.0.1:5080`.
    pub contact: String,
    /// Seconds until the binding expires, as Kamailio granted it.
    pub expires_in: i64,
    pub call_id: String,
    pub cseq: i64,
    pub user_agent: String,
}

/// A running Kamailio registrar. Dropping it stops the process and removes its temp dir.
pub struct KamailioRegistrar {
    /// Kamailio under its watchdog (process group = the watchdog's pid).
    process: Watched,
    _port: PortReservation,
    addr: SocketAddr,
    domain: String,
    sqlite3: PathBuf,
    db: PathBuf,
    log_path: PathBuf,
    startup: Duration,
    // Declared last: removed after the process is gone.
    dir: TempDir,
}

impl KamailioRegistrar {
    /// Starts a registrar for the AOR domain and realm `domain` (e.g. `"registrar.test"`) with
    /// the given `(username, password)` subscribers, and waits until it answers on
    /// [`addr`](Self::addr).
    pub fn start(domain: &str, users: &[(String, String)]) -> io::Result<KamailioRegistrar> {
        Self::start_with(domain, users, &RegistrarOptions::default())
    }

    /// [`start`](Self::start) with registrar settings.
    pub fn start_with(
        domain: &str,
        users: &[(String, String)],
        options: &RegistrarOptions,
    ) -> io::Result<KamailioRegistrar> {
        let install =
            Installation::find().map_err(|e| io::Error::new(io::ErrorKind::NotFound, e))?;
        check_domain(domain)?;
        let dir = TempDir::new("uacreg-kamailio")?;
        let db = dir.path().join("registrar.db");
        create_database(&install, &db, domain, users)?;

        let launched = launch(&install, dir.path(), Memory::TEST, |listen, token| {
            config(&install, listen, domain, &db, token, options)
        })?;
        Ok(KamailioRegistrar {
            process: launched.process,
            addr: launched.port.addr(),
            _port: launched.port,
            domain: domain.to_owned(),
            sqlite3: install.sqlite3,
            db,
            log_path: launched.log_path,
            startup: launched.startup,
            dir,
        })
    }

    /// Where the registrar listens: `127.0.0.1:<port>`, UDP only.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The AOR domain and realm given to [`start`](Self::start).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// How long Kamailio took from spawn to answering its first OPTIONS.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The instance's temp dir (config, database, log), kept after drop only with
    /// `UACREG_KEEP_TEST_DIRS` set.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Process group of Kamailio and its watchdog (the watchdog's pid).
    pub fn process_group(&self) -> u32 {
        self.process.process_group()
    }

    /// Pids of every process in [`process_group`](Self::process_group): the watchdog, Kamailio's
    /// main process and its children.
    pub fn processes(&self) -> Vec<u32> {
        processes_in_group(self.process_group())
    }

    /// Number of bindings (contacts, over all users) that have not expired.
    pub fn binding_count(&self) -> usize {
        self.bindings().len()
    }

    /// Contact URIs currently bound to `sip:username@domain`, sorted.
    pub fn bindings_for(&self, username: &str) -> Vec<String> {
        let mut contacts: Vec<String> = self
            .bindings()
            .into_iter()
            .filter(|b| b.username == username && b.domain == self.domain)
            .map(|b| b.contact)
            .collect();
        contacts.sort();
        contacts
    }

    /// Every binding that has not expired, ordered by username and contact.
    /// Panics (with Kamailio's log) if the database cannot be read.
    pub fn bindings(&self) -> Vec<Binding> {
        const SEP: char = '\u{1f}';
        let out = self
            .sql(
                "SELECT username, IFNULL(domain, ''), contact, \
                 CAST(round((expires - julianday('now')) * 86400) AS INTEGER), \
                 callid, cseq, user_agent \
                 FROM location WHERE expires > julianday('now') \
                 ORDER BY username, contact;",
                SEP,
            )
            .unwrap_or_else(|e| panic!("reading usrloc bindings: {e}\n{}", self.log_tail()));
        out.lines()
            .filter(|l| !l.is_empty())
            .map(|line| {
                let f: Vec<&str> = line.split(SEP).collect();
                let field = |i: usize| f.get(i).copied().unwrap_or("").to_owned();
                Binding {
                    username: field(0),
                    domain: field(1),
                    contact: field(2),
                    expires_in: field(3).parse().unwrap_or(0),
                    call_id: field(4),
                    cseq: field(5).parse().unwrap_or(0),
                    user_agent: field(6),
                }
            })
            .collect()
    }

    /// Polls (every 50 ms, at most `limit`) until [`binding_count`](Self::binding_count) equals
    /// `expected`; returns the last count seen.
    pub fn wait_for_binding_count(&self, expected: usize, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let n = self.binding_count();
            if n == expected || Instant::now() >= deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Adds a subscriber or changes its password. Kamailio reads `subscriber` on every
    /// authentication, so this takes effect at once. Call it while no REGISTER is in flight:
    /// this write takes the database lock, and a `save()` that meets it fails with a 500
    /// (Kamailio's db_sqlite does not wait on locks).
    pub fn set_user(&self, username: &str, password: &str) -> io::Result<()> {
        self.sql(
            &format!(
                "INSERT INTO subscriber (username, domain, password) VALUES ({}, {}, {}) \
                 ON CONFLICT (username, domain) DO UPDATE SET password = excluded.password;",
                sql_quote(username),
                sql_quote(&self.domain),
                sql_quote(password)
            ),
            '|',
        )
        .map(drop)
    }

    /// Kamailio's stderr so far, for failure messages.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    fn log_tail(&self) -> String {
        format!(
            "--- Kamailio log {} (tail) ---\n{}",
            self.log_path.display(),
            tail(&self.log(), 60)
        )
    }

    fn sql(&self, query: &str, separator: char) -> io::Result<String> {
        run_sqlite(
            &self.sqlite3,
            &self.db,
            &["-separator", &separator.to_string()],
            query,
        )
    }
}

impl Drop for KamailioRegistrar {
    /// SIGTERM through the watchdog, up to [`SHUTDOWN_LIMIT`]; then everything left is killed.
    fn drop(&mut self) {
        self.process.stop(SHUTDOWN_LIMIT);
    }
}

impl std::fmt::Debug for KamailioRegistrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KamailioRegistrar")
            .field("addr", &self.addr)
            .field("domain", &self.domain)
            .field("dir", &self.dir.path())
            .finish()
    }
}

/// Why [`wait_ready`] gave up.
enum Start {
    /// Not ours on this port (collision); try another.
    Retry(String),
    Fail(String),
}

/// The domain goes into the config and SQL; keep it to hostname characters.
fn check_domain(domain: &str) -> io::Result<()> {
    let ok = !domain.is_empty()
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("registrar domain {domain:?} must be a plain host name"),
        ))
    }
}

/// `s` as an SQL string literal.
pub fn sql_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Runs one `sqlite3` command line on `db` with `sql` on stdin; stdout on success.
pub fn run_sqlite(sqlite3: &Path, db: &Path, extra_args: &[&str], sql: &str) -> io::Result<String> {
    let mut command = Command::new(sqlite3);
    command
        .args(["-batch", "-noheader", "-list", "-bail"])
        // Waits on a lock instead of failing (e.g. during a WAL checkpoint).
        .args(["-cmd", ".timeout 10000"])
        .args(extra_args)
        .arg(db);
    let out = run_with_input(&mut command, sql, SQLITE_LIMIT)?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "sqlite3 on {} failed ({}): {}",
            db.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn create_database(
    install: &Installation,
    db: &Path,
    domain: &str,
    users: &[(String, String)],
) -> io::Result<()> {
    let mut sql = String::from("PRAGMA journal_mode=WAL;\nBEGIN;\n");
    sql.push_str(&install.ddl(&[
        "standard-create.sql",
        "auth_db-create.sql",
        "usrloc-create.sql",
    ])?);
    for (username, password) in users {
        let _ = writeln!(
            sql,
            "INSERT INTO subscriber (username, domain, password) VALUES ({}, {}, {});",
            sql_quote(username),
            sql_quote(domain),
            sql_quote(password)
        );
    }
    sql.push_str("COMMIT;\n");
    // `PRAGMA journal_mode` prints the new mode; nothing else should print.
    let out = run_sqlite(&install.sqlite3, db, &[], &sql)?;
    if out.trim() != "wal" {
        return Err(io::Error::other(format!(
            "sqlite3 did not switch {} to WAL: {out:?}",
            db.display()
        )));
    }
    Ok(())
}

/// The generated kamailio.cfg. Placeholders are replaced rather than `format!`ed so the routing
/// block's braces stay readable.
fn config(
    install: &Installation,
    listen: SocketAddr,
    domain: &str,
    db: &Path,
    token: &str,
    options: &RegistrarOptions,
) -> String {
    const TEMPLATE: &str = r#"#!KAMAILIO
# Generated by tests/support/kamailio.rs for one test; see that file.
debug=2
log_stderror=yes
fork=yes
children=1
disable_tcp=@DISABLE_TCP@
tcp_children=1
auto_aliases=no
dns=no
rev_dns=no
listen=udp:@LISTEN@
@TCP_LISTEN@
alias="@DOMAIN@"
server_header="Server: uacreg-test-registrar @TOKEN@"

mpath="@MPATH@/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "db_sqlite.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"

modparam("auth_db", "db_url", "sqlite://@DB@")
modparam("auth_db", "calculate_ha1", yes)
modparam("auth_db", "password_column", "password")
modparam("auth_db", "use_domain", 1)

modparam("usrloc", "db_url", "sqlite://@DB@")
modparam("usrloc", "db_mode", 1)
modparam("usrloc", "use_domain", 1)
modparam("usrloc", "timer_interval", 10)

modparam("registrar", "min_expires", @MIN_EXPIRES@)
modparam("registrar", "max_expires", @MAX_EXPIRES@)
modparam("registrar", "default_expires", @DEFAULT_EXPIRES@)

request_route {
	if (!mf_process_maxfwd_header("10")) {
		sl_send_reply("483", "Too Many Hops");
		exit;
	}
	if (!sanity_check("17895", "7")) {
		xlog("L_WARN", "registrar: malformed $rm from $si:$sp dropped\n");
		exit;
	}
	if (is_method("REGISTER")) {
		if (!auth_check("$fd", "subscriber", "1")) {
			$var(rc) = $rc;
			xlog("L_INFO", "registrar: REGISTER $tu call-id $ci cseq $cs from $si:$sp: auth_check $var(rc)\n");
			if ($var(rc) == -8) {
				sl_send_reply("403", "Forbidden auth ID");
				exit;
			}
			auth_challenge("$fd", "1");
			exit;
		}
		consume_credentials();
		if (!save("location")) {
			xlog("L_ERR", "registrar: save() failed for $tu\n");
			sl_reply_error();
			exit;
		}
		xlog("L_INFO", "registrar: REGISTER $tu call-id $ci cseq $cs from $si:$sp saved\n");
		exit;
	}
	if (is_method("OPTIONS") && $rU == $null) {
		sl_send_reply("200", "OK");
		exit;
	}
	if (is_method("ACK")) {
		exit;
	}
	sl_send_reply("405", "Method Not Allowed");
	exit;
}
"#;
    TEMPLATE
        .replace("@DISABLE_TCP@", if options.tcp { "no" } else { "yes" })
        .replace(
            "@TCP_LISTEN@",
            &if options.tcp {
                format!("listen=tcp:{listen}")
            } else {
                String::new()
            },
        )
        .replace("@LISTEN@", &listen.to_string())
        .replace("@DOMAIN@", domain)
        .replace("@TOKEN@", token)
        .replace("@MPATH@", &install.module_dir.display().to_string())
        .replace("@DB@", &db.display().to_string())
        .replace("@MIN_EXPIRES@", &options.min_expires.to_string())
        .replace("@MAX_EXPIRES@", &options.max_expires.to_string())
        .replace("@DEFAULT_EXPIRES@", &options.default_expires.to_string())
}

/// `-m` (shared) and `-M` (private, per process) memory of one instance, in MB.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    pub shm_mb: u32,
    pub pkg_mb: u32,
}

impl Memory {
    /// What a test registrar with a handful of users needs.
    pub const TEST: Memory = Memory {
        shm_mb: 32,
        pkg_mb: 4,
    };
}

/// A Kamailio that answered its readiness probe on a port of its own.
pub struct Launched {
    pub process: Watched,
    pub port: PortReservation,
    pub log_path: PathBuf,
    /// From starting the process that came up to its first answer.
    pub startup: Duration,
}

/// Writes `config(listen address, token)` as `dir/kamailio.cfg` and starts Kamailio on it until
/// one instance answers its probe carrying `token` (the dir's name, which `config` must put in
/// the `Server` header); another server's answer means a shared port and another try (up to
/// [`START_ATTEMPTS`]).
pub fn launch(
    install: &Installation,
    dir: &Path,
    memory: Memory,
    config: impl Fn(SocketAddr, &str) -> String,
) -> io::Result<Launched> {
    let token = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cfg = dir.join("kamailio.cfg");
    let mut failures = String::new();
    for attempt in 1..=START_ATTEMPTS {
        let port = spare_udp_port()?;
        let log_path = dir.join(format!("kamailio.{attempt}.log"));
        std::fs::write(&cfg, config(port.addr(), &token))?;
        let began = Instant::now();
        let mut process = spawn(install, &cfg, dir, &log_path, memory)?;
        match wait_ready(&process, port.addr(), &token, &log_path) {
            Ok(()) => {
                return Ok(Launched {
                    process,
                    port,
                    log_path,
                    startup: began.elapsed(),
                });
            }
            Err(Start::Retry(why)) => {
                process.stop(SHUTDOWN_LIMIT);
                let _ = writeln!(failures, "attempt {attempt} on {}: {why}", port.addr());
            }
            Err(Start::Fail(why)) => {
                process.stop(SHUTDOWN_LIMIT);
                return Err(io::Error::other(format!(
                    "Kamailio did not start on {}: {why}\n--- log {} ---\n{}",
                    port.addr(),
                    log_path.display(),
                    tail(&read_lossy(&log_path), 60)
                )));
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("Kamailio could not get a port of its own:\n{failures}"),
    ))
}

/// Starts Kamailio in the foreground under a watchdog ([`Watched`]) in a new process group,
/// with SIGTERM as its stop signal and its output in `log_path`.
fn spawn(
    install: &Installation,
    cfg: &Path,
    dir: &Path,
    log_path: &Path,
    memory: Memory,
) -> io::Result<Watched> {
    let log = std::fs::File::create(log_path)?;
    let mut kamailio = Command::new(&install.kamailio);
    kamailio
        .arg("-f")
        .arg(cfg)
        .args(["-DD", "-E"])
        .arg("-m")
        .arg(memory.shm_mb.to_string())
        .arg("-M")
        .arg(memory.pkg_mb.to_string())
        .arg("-Y")
        .arg(dir)
        .arg("-P")
        .arg(dir.join("kamailio.pid"))
        .current_dir(dir);
    Watched::spawn(&kamailio, "TERM", &log)
}

/// Sends OPTIONS to `addr` until a reply carrying `token` arrives, Kamailio exits, or
/// [`STARTUP_LIMIT`] passes.
fn wait_ready(
    process: &Watched,
    addr: SocketAddr,
    token: &str,
    log_path: &Path,
) -> Result<(), Start> {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| Start::Fail(e.to_string()))?;
    let local = sock.local_addr().map_err(|e| Start::Fail(e.to_string()))?;
    sock.set_read_timeout(Some(Duration::from_millis(25)))
        .map_err(|e| Start::Fail(e.to_string()))?;
    let deadline = Instant::now() + STARTUP_LIMIT;
    let mut buf = [0u8; 4096];
    let mut probe = 0u32;
    while Instant::now() < deadline {
        if process.has_exited() {
            let log = read_lossy(log_path);
            let why = "kamailio exited before answering".to_owned();
            return Err(if log.contains("Address already in use") {
                Start::Retry(why)
            } else {
                Start::Fail(why)
            });
        }
        probe += 1;
        let request = format!(
            "OPTIONS sip:{addr} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-ready-{token}-{probe};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:probe@{local}>;tag=ready{probe}\r\n\
             To: <sip:{addr}>\r\n\
             Call-ID: ready-{token}-{probe}@127.0.0.1\r\n\
             CSeq: {probe} OPTIONS\r\n\
             Content-Length: 0\r\n\r\n"
        );
        // Before Kamailio binds, the send may bounce (ICMP) and recv report it; both just retry.
        let _ = sock.send_to(request.as_bytes(), addr);
        let round_end = Instant::now() + Duration::from_millis(200);
        while Instant::now() < round_end {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) if from == addr => {
                    let reply = String::from_utf8_lossy(&buf[..n]);
                    if reply.contains(token) {
                        return Ok(());
                    }
                    return Err(Start::Retry(format!(
                        "another SIP server answered on {addr}: {}",
                        reply.lines().next().unwrap_or("")
                    )));
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    Err(Start::Fail(format!(
        "no answer to OPTIONS within {STARTUP_LIMIT:?}"
    )))
}

/// Pids of the live (not zombie) processes whose process group is `pgid`, from `/proc`.
pub fn processes_in_group(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After "pid (comm)": state, ppid, pgrp, ...
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.first().is_some_and(|s| *s != "Z" && *s != "X")
                && fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid)
        })
        .collect();
    pids.sort();
    pids
}

//! Kamailio 5.6 running its own `uac` module as a registration gateway, reachable the two ways
//! operators' tools reach it: the `ctl` module's BINRPC socket (`kamcmd -s unix:…`) and
//! `jsonrpcs` over a FIFO (`kamctl rpc`, with `RPCFIFOPATH`). The tools test runs the same
//! commands against it and against uacregd and compares what the tools print.
//!
//! Configured the way an operator runs it: Kamailio's own DDL for the `uacreg` table (SQLite),
//! `reg_contact_addr` = its listen address, uac's defaults otherwise, jsonrpcs with its default
//! reply directory (`/tmp/`, where kamctl makes its reply FIFO) and its default pretty printing.
//! The FIFO and the ctl socket live in the instance's own temp dir.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::kamailio::{Installation, Launched, Memory, launch, run_sqlite, sql_quote};
use super::process::{TempDir, read_lossy, tail};

/// How long the jsonrpcs process may take to create its FIFO after SIP answers.
const FIFO_LIMIT: Duration = Duration::from_secs(15);
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);
/// Modules this instance loads beyond what `Installation::find` checks.
const MODULES: &[&str] = &["uac", "ctl", "kex", "jsonrpcs"];

/// One `uacreg` row as Kamailio's table holds it (the other columns keep the DDL's defaults).
/// The load tool's rows are these too, written for uacregd and for Kamailio alike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UacRow {
    pub l_uuid: String,
    pub l_username: String,
    pub l_domain: String,
    pub r_username: String,
    pub r_domain: String,
    pub realm: String,
    pub auth_username: String,
    pub auth_password: String,
    pub auth_proxy: String,
    pub expires: u32,
}

/// A running Kamailio uac gateway. Dropping it stops Kamailio and removes its dir.
pub struct KamailioUac {
    launched: Launched,
    ctl: PathBuf,
    fifo: PathBuf,
    // Last: removed after the process is gone.
    dir: TempDir,
}

impl KamailioUac {
    /// Starts Kamailio over a `uacreg` table holding `rows` and waits until it answers SIP and
    /// its FIFO exists. Its uac timer sends the first REGISTER of every row right after start.
    pub fn start(rows: &[UacRow]) -> io::Result<KamailioUac> {
        let install = Installation::find().map_err(io::Error::other)?;
        for module in MODULES {
            if !install.module_dir.join(format!("{module}.so")).is_file() {
                return Err(io::Error::other(format!(
                    "Kamailio module {module}.so missing from {}",
                    install.module_dir.display()
                )));
            }
        }
        let dir = TempDir::new("uacreg-kamuac")?;
        let db = dir.path().join("uacreg.db");
        create_uacreg(&install, &db, rows)?;
        let ctl = dir.path().join("kamailio_ctl");
        let fifo = dir.path().join("kamailio_rpc.fifo");
        let launched = launch(&install, dir.path(), Memory::TEST, |listen, token| {
            config(&install, listen, token, &db, &ctl, &fifo)
        })?;
        let gateway = KamailioUac {
            launched,
            ctl,
            fifo,
            dir,
        };
        let deadline = Instant::now() + FIFO_LIMIT;
        while !gateway.fifo.exists() {
            if gateway.launched.process.has_exited() || Instant::now() >= deadline {
                return Err(io::Error::other(format!(
                    "Kamailio made no FIFO at {}\n{}",
                    gateway.fifo.display(),
                    tail(&gateway.log(), 40)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(gateway)
    }

    /// Its SIP address; REGISTERs leave from it and name it in their Contact.
    pub fn addr(&self) -> SocketAddr {
        self.launched.port.addr()
    }

    /// The `ctl` module's Unix socket, for `kamcmd -s unix:<this>`.
    pub fn ctl_socket(&self) -> &Path {
        &self.ctl
    }

    /// jsonrpcs' FIFO, for `RPCFIFOPATH=<this> kamctl rpc …`.
    pub fn fifo(&self) -> &Path {
        &self.fifo
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        read_lossy(&self.launched.log_path)
    }
}

impl Drop for KamailioUac {
    fn drop(&mut self) {
        self.launched.process.stop(SHUTDOWN_LIMIT);
    }
}

/// Kamailio's `version` and `uacreg` tables (its own DDL) holding `rows`, in one transaction.
/// Columns the rows do not set keep the DDL's defaults: `flags` 0, `reg_delay` 0, empty
/// `auth_ha1`, `contact_addr` (so `reg_contact_addr` is used) and `socket`.
pub fn create_uacreg(install: &Installation, db: &Path, rows: &[UacRow]) -> io::Result<()> {
    let mut sql = String::from("BEGIN;\n");
    sql.push_str(&install.ddl(&["standard-create.sql", "uac-create.sql"])?);
    for row in rows {
        let _ = writeln!(
            sql,
            "INSERT INTO uacreg (l_uuid, l_username, l_domain, r_username, r_domain, realm, \
             auth_username, auth_password, auth_proxy, expires) \
             VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {});",
            sql_quote(&row.l_uuid),
            sql_quote(&row.l_username),
            sql_quote(&row.l_domain),
            sql_quote(&row.r_username),
            sql_quote(&row.r_domain),
            sql_quote(&row.realm),
            sql_quote(&row.auth_username),
            sql_quote(&row.auth_password),
            sql_quote(&row.auth_proxy),
            row.expires
        );
    }
    sql.push_str("COMMIT;\n");
    run_sqlite(&install.sqlite3, db, &[], &sql).map(drop)
}

/// kamailio.cfg of the gateway. `reg_retry_interval` 10: a failed row is retried, as an
/// operator who wants failures retried sets it (uac's default 0 disables the row for good).
fn config(
    install: &Installation,
    listen: SocketAddr,
    token: &str,
    db: &Path,
    ctl: &Path,
    fifo: &Path,
) -> String {
    r#"#!KAMAILIO
debug=2
log_stderror=yes
children=2
auto_aliases=no
listen=udp:@LISTEN@
server_header="Server: uacreg-kamuac @TOKEN@"

mpath="@MPATH@/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "db_sqlite.so"
loadmodule "uac.so"
loadmodule "ctl.so"
loadmodule "kex.so"
loadmodule "jsonrpcs.so"

modparam("ctl", "binrpc", "unix:@CTL@")
modparam("jsonrpcs", "transport", 2)
modparam("jsonrpcs", "fifo_name", "@FIFO@")
modparam("uac", "restore_mode", "none")
modparam("uac", "reg_db_url", "sqlite://@DB@")
modparam("uac", "reg_contact_addr", "@LISTEN@")
modparam("uac", "reg_retry_interval", 10)

request_route {
	if (method == "OPTIONS") {
		sl_send_reply("200", "OK");
		exit;
	}
	sl_send_reply("404", "Not here");
}
"#
    .replace("@LISTEN@", &listen.to_string())
    .replace("@TOKEN@", token)
    .replace("@MPATH@", &install.module_dir.display().to_string())
    .replace("@CTL@", &ctl.display().to_string())
    .replace("@FIFO@", &fifo.display().to_string())
    .replace("@DB@", &db.display().to_string())
}

//! Kamailio on both sides of a load run: a registrar tuned to take load
//! ([`KamailioLoadRegistrar`]) and Kamailio 5.6's own `uac` module as the registration gateway
//! that uacregd is measured against ([`KamailioUacGateway`]).
//!
//! Each instance runs from a temp dir of its own (config, SQLite database, log, control
//! sockets) on a spare 127.0.0.1 UDP port, in the foreground under the test harness's watchdog
//! ([`Watched`]): dropping it, or the load tool dying in any way, stops it. The plumbing is the
//! integration tests' (`tests/support/kamailio.rs`): finding the installation, the `sqlite3`
//! CLI, and the readiness probe that also notices a port shared with another server (Kamailio
//! binds with SO_REUSEADDR, so a collision would not fail on its own).
//!
//! **How counters are read.** Statistics come over Kamailio's `ctl` module:
//! `kamcmd -s unix:<dir>/kamailio_ctl stats.get_statistics <group>:` (a single counter asked
//! for as `group:name` answers nothing in 5.6, so whole groups are read and picked from).
//! `uac.reg_dump` cannot take that road: kamcmd refuses any reply over 128 KB ("ERROR: reply
//! too big"), which is about 300 uac records. The gateway therefore also loads `jsonrpcs` with
//! its FIFO transport (what `kamctl rpc` uses) and sends `uac.reg_dump` and `uac.reg_reload`
//! through it; the answer is one JSON document written into a reply FIFO.
//!
//! **Kernel drops.** A Kamailio that cannot keep up does not answer 5xx: its UDP receive buffer
//! fills and the kernel drops datagrams, which no Kamailio counter sees. Both instances report
//! those drops for their socket from `/proc/net/udp` ([`KamailioLoadRegistrar::receive_drops`],
//! [`KamailioUacGateway::receive_drops`]); each one costs a retransmission.
//!
//! **Memory.** Kamailio's shared memory (`-m`) is one mapping shared by all its processes, so
//! summing RSS over [`pids`](KamailioUacGateway::pids) counts it once per process that touched
//! it; sum PSS (`/proc/<pid>/smaps_rollup`) instead. Private memory (`-M`) is per process.
// The load tool uses part of this API in any one run (e.g. the options, the directories).
#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::rows::{DOMAIN, LoadRow};
use crate::support::kamailio::{
    Installation, Launched, Memory, launch, processes_in_group, run_sqlite, sql_quote,
};
use crate::support::kamailio_uac::create_uacreg;
use crate::support::process::{
    PortReservation, TempDir, Watched, find_program, read_lossy, run_with_input, tail,
};

/// SIP worker processes on the UDP socket, in both instances (Kamailio's default is 8): the
/// machine the load tool runs on has 2 cores, and workers beyond a couple per core only add
/// contention.
const UDP_CHILDREN: u32 = 4;
/// How long Drop waits for a clean SIGTERM shutdown before SIGKILL.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);
/// Any kamcmd run is given this long.
const KAMCMD_LIMIT: Duration = Duration::from_secs(20);
/// A JSON-RPC call over the FIFO is given this long: a dump's cost grows with the square of the
/// rows (see [`KamailioUacGateway::reg_dump`]), 50,000 took about 50 s.
const RPC_LIMIT: Duration = Duration::from_secs(600);
/// How long the gateway's jsonrpcs process may take to create its FIFO after SIP answers.
const FIFO_LIMIT: Duration = Duration::from_secs(15);
/// What [`KamailioUacGateway::change_rows`] adds to a row's `expires` (the step uacregd's rows
/// change by too).
use crate::rows::EXPIRES_STEP;

const KAMCMD_CANDIDATES: &[&str] = &["/usr/sbin/kamcmd", "/usr/local/sbin/kamcmd"];
/// Modules loaded here beyond those the test registrar needs (checked by `Installation::find`).
const EXTRA_MODULES: &[&str] = &["ctl", "kex", "statistics", "uac", "jsonrpcs"];

/// The first line of `kamailio -v`, e.g. `version: kamailio 5.6.3 (x86_64/linux)`; `None` if
/// Kamailio is not installed or does not answer.
pub fn version() -> Option<String> {
    let install = Installation::find().ok()?;
    let mut command = Command::new(&install.kamailio);
    command.arg("-v");
    let out = run_with_input(&mut command, "", Duration::from_secs(10)).ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .next()
        .map(|line| line.trim().to_owned())
        .filter(|line| !line.is_empty())
}

/// A Kamailio registrar that can take the whole load: digest authentication against a SQLite
/// `subscriber` table, bindings in memory. Dropping it stops Kamailio and removes its temp dir.
///
/// Configuration, and why:
/// * `auth_db` with `calculate_ha1` (plaintext passwords, as [`users`](crate::rows::users)
///   gives them), `use_domain`, realm [`DOMAIN`]. REGISTER is challenged with
///   `auth_challenge(DOMAIN, "1")` (`qop="auth"`) and checked with `auth_check(DOMAIN,
///   "subscriber", "1")`: a bad or unknown user is challenged again, an authentication user
///   other than the To user gets 403, a database error (auth_check -1) gets 500.
/// * usrloc `db_mode=0`: bindings live only in shared memory, so nothing writes the database
///   and the `UDP_CHILDREN` workers never wait on a SQLite lock (the subscriber reads share
///   it). `hash_size=14` (16,384 slots instead of 1,024) keeps 100,000 AORs at a handful per
///   slot.
/// * registrar `min_expires=0` and `max_expires=0`: any Expires is granted as asked, including
///   the longer ones [`KamailioUacGateway::change_rows`] writes.
/// * `maxbuffer` 4 MB: Kamailio raises the socket's receive buffer up to this (bounded by
///   `net.core.rmem_max` for an unprivileged user), so a burst from a gateway waits in the
///   buffer instead of being dropped.
/// * Stateless (`sl`), and usrloc `cseq_delay=40`: a REGISTER repeating the Call-ID and CSeq
///   of a saved binding is taken as a retransmission (answered 200 with the bindings) for 40 s
///   instead of Kamailio's 20 s, after which it gets "400 Invalid CSeq". A client retransmits
///   a REGISTER for up to 32 s (RFC 3261 Timer F; Kamailio's `tm` gives up after 30 s), and a
///   gateway that lost the first 200 would take the 400 for a failed registration. (A
///   stateful registrar would absorb retransmissions in `tm` instead, but Kamailio keeps a
///   transaction only 5 s and needs about 5 KB of shared memory for each.)
/// * Shared memory 128 MB + 4 KB per user (a binding takes about 1.2 KB; about 50 MB were used
///   at 50,000), private memory 16 MB per process.
pub struct KamailioLoadRegistrar {
    instance: Instance,
}

impl KamailioLoadRegistrar {
    /// Starts a registrar for realm and domain [`DOMAIN`] with the given `(username, password)`
    /// subscribers, written in one SQLite transaction, and waits until it answers SIP on
    /// [`addr`](Self::addr).
    pub fn start(users: &[(String, String)]) -> io::Result<KamailioLoadRegistrar> {
        let install = find_installation()?;
        let kamcmd = find_kamcmd()?;
        let dir = TempDir::new("uacreg-kamload-registrar")?;
        let db = dir.path().join("subscriber.db");
        create_subscribers(&install, &db, users)?;
        let control = Control::new(kamcmd, dir.path().join("kamailio_ctl"))?;

        let memory = Memory {
            shm_mb: 128 + mb_for(users.len(), 4 * 1024),
            pkg_mb: 16,
        };
        let running = launch(&install, dir.path(), memory, |listen, token| {
            registrar_config(&install, listen, token, &db, &control.socket)
        })?;
        Ok(KamailioLoadRegistrar {
            instance: Instance::new(running, control, dir),
        })
    }

    /// Where the registrar listens: `127.0.0.1:<port>`, UDP only.
    pub fn addr(&self) -> SocketAddr {
        self.instance.addr
    }

    /// REGISTER requests Kamailio has received (`core:rcv_requests_register`): every REGISTER
    /// datagram it read and parsed, so first attempts, the authenticated repeat after each
    /// 401 and retransmissions alike. Datagrams the kernel dropped on a full receive buffer
    /// never reach Kamailio and are not in it: see [`receive_drops`](Instance::receive_drops).
    pub fn registers_received(&self) -> io::Result<u64> {
        self.instance
            .control
            .counter("core", "rcv_requests_register")
            .map(non_negative)
    }

    /// Contacts registered right now, over all users (`usrloc:location_contacts`). Expired
    /// bindings count until usrloc's timer removes them (every 60 s).
    pub fn bindings(&self) -> io::Result<u64> {
        self.instance
            .control
            .counter("usrloc", "location_contacts")
            .map(non_negative)
    }

    /// Final replies ≥ 400 sent, other than the 401 challenges (this registrar sends no 407):
    /// a script statistic (`script:error_replies`) that the config adds one to wherever a
    /// request ends in such a reply — 500 when `auth_check` fails on a database error, 403 for
    /// an authentication user other than the To user, the error reply of a failed `save()`
    /// (e.g. 400 for an out-of-order CSeq, 500 when shared memory runs out), 405 for other
    /// methods. (The `sl` module's per-code statistics would give the same sum; this one
    /// names exactly the replies meant.) Overload mostly shows as
    /// [`receive_drops`](Instance::receive_drops) instead: Kamailio does not shed load with 503.
    pub fn error_replies(&self) -> io::Result<u64> {
        self.instance
            .control
            .counter("script", "error_replies")
            .map(non_negative)
    }

    /// Kamailio's processes (main, UDP workers, timers, ctl), without the watchdog shell.
    pub fn pids(&self) -> Vec<u32> {
        self.instance.pids()
    }

    /// Kamailio's log so far.
    pub fn log(&self) -> String {
        self.instance.log()
    }

    /// The Kamailio underneath: receive drops (REGISTERs the kernel dropped before Kamailio
    /// read them), shared memory, `ctl` address, dir.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }
}

impl std::fmt::Debug for KamailioLoadRegistrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KamailioLoadRegistrar")
            .field("addr", &self.instance.addr)
            .field("dir", &self.instance.dir.path())
            .finish()
    }
}

/// What both Kamailio instances have: the process, its port, its `ctl` socket, log and dir.
pub struct Instance {
    process: Watched,
    _port: PortReservation,
    addr: SocketAddr,
    control: Control,
    log_path: PathBuf,
    // Declared last: removed after the process is gone.
    dir: TempDir,
}

impl Instance {
    fn new(launched: Launched, control: Control, dir: TempDir) -> Instance {
        Instance {
            process: launched.process,
            addr: launched.port.addr(),
            _port: launched.port,
            control,
            log_path: launched.log_path,
            dir,
        }
    }

    /// Kamailio's processes, without the watchdog shell. For memory, sum PSS, not RSS: see the
    /// module doc.
    pub fn pids(&self) -> Vec<u32> {
        kamailio_pids(&self.process)
    }

    /// UDP datagrams for the instance's address that the kernel dropped because Kamailio's
    /// receive buffer was full (the `drops` column of `/proc/net/udp`). Each one is a message
    /// its sender will retransmit.
    pub fn receive_drops(&self) -> io::Result<u64> {
        udp_receive_drops(self.addr)
    }

    /// Peak use of Kamailio's shared memory (`shmem:max_used_size`), in bytes.
    pub fn shm_max_used(&self) -> io::Result<u64> {
        self.control
            .counter("shmem", "max_used_size")
            .map(non_negative)
    }

    /// `kamcmd -s <this> …` reaches the instance's `ctl` socket.
    pub fn ctl_address(&self) -> String {
        self.control.address()
    }

    /// The instance's temp dir (config, database, log), kept after drop only with
    /// `UACREG_KEEP_TEST_DIRS` set.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kamailio's log so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }
}

impl Drop for Instance {
    /// SIGTERM through the watchdog, up to [`SHUTDOWN_LIMIT`]; then everything left is killed.
    fn drop(&mut self) {
        self.process.stop(SHUTDOWN_LIMIT);
    }
}

/// Settings of [`KamailioUacGateway::start_with`]. `None` keeps Kamailio's default, and
/// [`Default`] keeps them all: the comparison is with the uac module as it ships.
#[derive(Clone, Debug, Default)]
pub struct UacGatewayOptions {
    /// uac `reg_timer_interval` (default 90 s): how often the single uac timer process walks
    /// the whole table, sending every REGISTER that is due. A row is due once it expires within
    /// this interval + 3 s, so a refresh goes out 3–93 s before expiry.
    pub reg_timer_interval: Option<u32>,
    /// uac `reg_retry_interval` (default 0): with 0 a row whose registration failed once
    /// (timeout, 4xx/5xx/6xx, a second 401) is disabled for good (flag 1) and never retried;
    /// otherwise it is retried that many seconds later, on a timer tick.
    pub reg_retry_interval: Option<u32>,
    /// uac `reg_hash_size` (default 4, so 2^4 = 16 slots, at most 14): the table's hash size.
    /// Each response looks its row up by walking one slot, and the timer holds a slot's lock
    /// while it sends that slot's REGISTERs.
    pub reg_hash_size: Option<u32>,
    /// uac `reg_gc_interval` (default 150 s): the old table of a reload is freed this long
    /// after it, and `uac.reg_reload` fails if run again sooner.
    pub reg_gc_interval: Option<u32>,
    /// Core `maxbuffer` (default 256 KB, which Linux doubles to 512 KB): Kamailio raises its
    /// UDP receive buffer up to this. The registrar's responses to a burst wait there while
    /// the workers are busy; what does not fit is dropped
    /// ([`receive_drops`](KamailioUacGateway::receive_drops)) and costs a retransmission.
    pub maxbuffer: Option<u32>,
}

/// How many uac records are in each state, from one `uac.reg_dump`. The flags are the uac
/// module's bitmask: 1 disabled, 2 REGISTER in progress, 4 registered, 8 authenticated REGISTER
/// in progress, 16 initialised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UacStates {
    /// Records in the dump.
    pub total: usize,
    /// Records with flag 4: the last REGISTER got a 200 listing this contact. Kamailio clears
    /// it while a refresh is in progress.
    pub registered: usize,
    /// Records with flag 1: failed with `reg_retry_interval` 0, or disabled over RPC.
    pub disabled: usize,
    /// Records with flag 2: a REGISTER transaction is in progress.
    pub in_progress: usize,
}

/// Kamailio 5.6 running the `uac` module as a registration gateway over a SQLite `uacreg`
/// table, the way an operator would run it. Dropping it stops Kamailio and removes its temp
/// dir.
///
/// Configuration, and why:
/// * The table is made with Kamailio's own DDL (`standard-create.sql` for the `version` table,
///   `uac-create.sql` for `uacreg` version 5), the rows written in one transaction.
/// * uac: `reg_db_url` (required to enable registrations), `reg_contact_addr` = the gateway's
///   own listen address (required; rows leave `contact_addr` empty so this is used, giving
///   `Contact: <sip:l_uuid@127.0.0.1:port>`). `restore_mode "none"`: the From/To restoring of
///   uac's other half needs the `rr` module and has nothing to do with registrations. The
///   registration parameters keep their defaults unless [`UacGatewayOptions`] sets them —
///   notably `reg_timer_interval` 90 s and `reg_retry_interval` 0. `auth_*_avp` are not set:
///   they serve `uac_auth()` on proxied requests, not registrations, which take credentials
///   from the table.
/// * `tm` and `sl` (uac sends through `tm`), `UDP_CHILDREN` SIP workers that take the
///   registrar's responses and run uac's callbacks, default `tm` timers (T1 500 ms, non-INVITE
///   final response timeout 30 s).
/// * `ctl` for `kamcmd`, `kex` for statistics, `jsonrpcs` over a FIFO (compact JSON,
///   `pretty_format 0`) for the dump and reload, see the module doc.
/// * Shared memory 128 MB + 24 KB per row: the uac timer sends every due row at once, so at the
///   first burst (and after a reload) each row has its `tm` transactions alive together (peaks
///   measured: 186 MB at 10,000 rows, 545–663 MB at 50,000). Private memory 64 MB + 4 KB per
///   row per process: the jsonrpcs process builds a whole `reg_dump` answer (a JSON tree, then
///   its text) in it.
pub struct KamailioUacGateway {
    // First: the process is stopped and its dir removed before anything else goes.
    instance: Instance,
    rpc: RpcFifo,
    sqlite3: PathBuf,
    db: PathBuf,
    l_uuids: Vec<String>,
}

impl KamailioUacGateway {
    /// Starts the gateway with Kamailio's defaults (see [`UacGatewayOptions`]) over a `uacreg`
    /// table holding `rows`, and waits until it answers SIP and its JSON-RPC FIFO exists.
    /// Kamailio's uac timer process loads the table and sends the first REGISTER of every due
    /// row at once, right after start.
    pub fn start(rows: &[LoadRow]) -> io::Result<KamailioUacGateway> {
        Self::start_with(rows, &UacGatewayOptions::default())
    }

    /// [`start`](Self::start) with uac registration settings.
    pub fn start_with(
        rows: &[LoadRow],
        options: &UacGatewayOptions,
    ) -> io::Result<KamailioUacGateway> {
        let install = find_installation()?;
        let kamcmd = find_kamcmd()?;
        let dir = TempDir::new("uacreg-kamload-gateway")?;
        let db = dir.path().join("uacreg.db");
        create_uacreg(&install, &db, rows)?;
        let control = Control::new(kamcmd, dir.path().join("kamailio_ctl"))?;
        let rpc = RpcFifo::new(dir.path())?;

        let memory = Memory {
            shm_mb: 128 + mb_for(rows.len(), 24 * 1024),
            pkg_mb: 64 + mb_for(rows.len(), 4 * 1024),
        };
        let running = launch(&install, dir.path(), memory, |listen, token| {
            gateway_config(&install, listen, token, &db, &control.socket, &rpc, options)
        })?;
        let gateway = KamailioUacGateway {
            instance: Instance::new(running, control, dir),
            rpc,
            sqlite3: install.sqlite3,
            db,
            l_uuids: rows.iter().map(|r| r.l_uuid.clone()).collect(),
        };
        gateway.wait_for_fifo()?;
        Ok(gateway)
    }

    /// The gateway's own SIP address (`127.0.0.1:<port>`, UDP): REGISTERs leave from it and
    /// name it in their Contact.
    pub fn addr(&self) -> SocketAddr {
        self.instance.addr
    }

    /// Kamailio's processes (main, UDP workers, timers including the uac timer, ctl, the
    /// jsonrpcs FIFO process), without the watchdog shell. For memory, sum PSS, not RSS: see
    /// the module doc.
    pub fn pids(&self) -> Vec<u32> {
        self.instance.pids()
    }

    /// One `uac.reg_dump` over the JSON-RPC FIFO: the time from writing the request to reading
    /// the last byte of the answer (Kamailio builds the whole JSON document in its jsonrpcs
    /// process, then writes it; parsing it here is not included), and how many records came
    /// back. A fault answer is an error.
    ///
    /// Kamailio's cost grows with the square of the rows: jsonrpcs appends each record to the
    /// answer by walking the records added so far (measured: 1,000 rows ~10 ms, 10,000 ~0.6 s,
    /// 50,000 ~50 s). And uac holds each of its 2^`reg_hash_size` table slots locked while that
    /// slot's records are added, so responses and refreshes for those rows wait meanwhile: a
    /// dump of a large table disturbs registrations.
    pub fn reg_dump(&self) -> io::Result<(Duration, usize)> {
        let (took, records) = self.dump()?;
        Ok((took, records.len()))
    }

    /// Rows registered right now (flag 4). The uac module has no cheaper way to tell: its
    /// `uac:regactive` counter does not count registrations (it goes down when a REGISTER is
    /// sent and up when any transaction ends, so it stays near 0 with every row registered),
    /// and `uac.reg_info` answers for one row. So this is a full `uac.reg_dump`, with its cost
    /// to Kamailio; while waiting for a load run to settle, poll the registrar's
    /// [`bindings`](KamailioLoadRegistrar::bindings) instead.
    pub fn registered(&self) -> io::Result<usize> {
        Ok(self.states()?.registered)
    }

    /// The records of one `uac.reg_dump`, counted by state.
    pub fn states(&self) -> io::Result<UacStates> {
        let (_, records) = self.dump()?;
        let mut states = UacStates {
            total: records.len(),
            ..UacStates::default()
        };
        for record in &records {
            if record.flags & 4 != 0 {
                states.registered += 1;
            }
            if record.flags & 1 != 0 {
                states.disabled += 1;
            }
            if record.flags & 2 != 0 {
                states.in_progress += 1;
            }
        }
        Ok(states)
    }

    /// Records the uac module has loaded (`uac:regtotal`; exact, unlike `uac:regactive`).
    pub fn records_loaded(&self) -> io::Result<u64> {
        self.instance
            .control
            .counter("uac", "regtotal")
            .map(non_negative)
    }

    /// Changes the rows at `indices` (positions in the slice given to [`start`](Self::start))
    /// in the table, in one SQLite transaction, so that a gateway must re-register them: each
    /// one's `expires` grows by [`EXPIRES_STEP`] seconds, which changes the REGISTER it sends
    /// (`Expires`) while the registrar keeps accepting it (it grants any Expires). Kamailio
    /// itself only sees the change on [`reload`](Self::reload).
    pub fn change_rows(&self, indices: &[usize]) -> io::Result<()> {
        let mut sql = String::from("BEGIN;\n");
        for &i in indices {
            let l_uuid = self.l_uuids.get(i).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "row index {i} out of range: the gateway has {} rows",
                        self.l_uuids.len()
                    ),
                )
            })?;
            let _ = writeln!(
                sql,
                "UPDATE uacreg SET expires = expires + {EXPIRES_STEP} WHERE l_uuid = {};",
                sql_quote(l_uuid)
            );
        }
        sql.push_str("COMMIT;\n");
        run_sqlite(&self.sqlite3, &self.db, &[], &sql).map(drop)
    }

    /// One `uac.reg_reload` over the JSON-RPC FIFO and the time until its answer: the uac
    /// module moves its whole table aside and loads the table again from the database, in the
    /// jsonrpcs process.
    ///
    /// Kamailio does not diff: every record is new after a reload, changed or not — not
    /// registered (flags 0), and sent again, with a new Call-ID, at the next uac timer tick
    /// (up to `reg_timer_interval`, 90 s, later). And a second reload within `reg_gc_interval`
    /// (150 s) of the first fails ("Failed to shift records"), which is an error here.
    pub fn reload(&self) -> io::Result<Duration> {
        let (took, body) = self.rpc.call("uac.reg_reload", RPC_LIMIT)?;
        let reply: RpcReply<serde_json::Value> = parse_reply(&body)?;
        reply.into_result("uac.reg_reload", &self.instance.log_path)?;
        Ok(took)
    }

    /// Kamailio's log so far.
    pub fn log(&self) -> String {
        self.instance.log()
    }

    /// The Kamailio underneath: receive drops (registrar responses the kernel dropped, each
    /// making a `tm` retransmission of the REGISTER it answered), shared memory, `ctl` address,
    /// dir.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    fn dump(&self) -> io::Result<(Duration, Vec<DumpedRecord>)> {
        let (took, body) = self.rpc.call("uac.reg_dump", RPC_LIMIT)?;
        let reply: RpcReply<Option<Vec<DumpedRecord>>> = parse_reply(&body)?;
        let records = reply
            .into_result("uac.reg_dump", &self.instance.log_path)?
            .unwrap_or_default();
        Ok((took, records))
    }

    /// The jsonrpcs process creates its FIFO when it starts, which may be a moment after the
    /// SIP workers answer.
    fn wait_for_fifo(&self) -> io::Result<()> {
        let deadline = Instant::now() + FIFO_LIMIT;
        while !self.rpc.fifo.exists() {
            if self.instance.process.has_exited() || Instant::now() >= deadline {
                return Err(io::Error::other(format!(
                    "Kamailio made no JSON-RPC FIFO at {} within {FIFO_LIMIT:?}\n{}",
                    self.rpc.fifo.display(),
                    log_tail(&self.instance.log_path)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl std::fmt::Debug for KamailioUacGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KamailioUacGateway")
            .field("addr", &self.instance.addr)
            .field("rows", &self.l_uuids.len())
            .field("dir", &self.instance.dir.path())
            .finish()
    }
}

/// The one field of a dumped uac record this file reads; serde skips the others.
#[derive(Deserialize)]
struct DumpedRecord {
    flags: u64,
}

/// A JSON-RPC 2.0 answer from jsonrpcs.
#[derive(Deserialize)]
struct RpcReply<T> {
    result: Option<T>,
    error: Option<RpcFault>,
}

#[derive(Deserialize)]
struct RpcFault {
    code: i64,
    message: String,
}

impl<T> RpcReply<T> {
    fn into_result(self, method: &str, log_path: &Path) -> io::Result<T> {
        match (self.result, self.error) {
            (_, Some(fault)) => Err(io::Error::other(format!(
                "{method} failed: {} {}\n{}",
                fault.code,
                fault.message,
                log_tail(log_path)
            ))),
            (Some(result), None) => Ok(result),
            (None, None) => Err(io::Error::other(format!(
                "{method}: answer with neither result nor error"
            ))),
        }
    }
}

fn parse_reply<T: for<'de> Deserialize<'de>>(body: &[u8]) -> io::Result<RpcReply<T>> {
    serde_json::from_slice(body).map_err(|e| {
        let start = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "bad JSON-RPC answer ({} bytes): {e}; it starts {start:?}",
                body.len()
            ),
        )
    })
}

/// jsonrpcs' FIFO transport: a request is a JSON document written into Kamailio's FIFO, naming
/// a reply FIFO (`reply_name`, a bare file name in `fifo_reply_dir`) that the client has made;
/// Kamailio opens that, writes the answer and closes it. One request at a time is served.
struct RpcFifo {
    /// Kamailio's FIFO (`fifo_name`).
    fifo: PathBuf,
    /// `fifo_reply_dir`, where reply FIFOs are made.
    reply_dir: PathBuf,
}

impl RpcFifo {
    fn new(dir: &Path) -> io::Result<RpcFifo> {
        // Kamailio joins fifo_reply_dir and reply_name in a 128-byte buffer.
        let longest_reply = dir.as_os_str().len() + 1 + reply_name(u64::MAX).len();
        if longest_reply >= 128 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "temp dir {} is too long for Kamailio's reply FIFO paths (127 bytes)",
                    dir.display()
                ),
            ));
        }
        Ok(RpcFifo {
            fifo: dir.join("kamailio_rpc.fifo"),
            reply_dir: dir.to_path_buf(),
        })
    }

    /// Sends `method` (no parameters) and reads the whole answer, for at most `limit`. Returns
    /// the time from writing the request to the end of the answer, and the answer.
    fn call(&self, method: &str, limit: Duration) -> io::Result<(Duration, Vec<u8>)> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = reply_name(id);
        let reply_path = self.reply_dir.join(&name);
        make_fifo(&reply_path)?;
        let result = self.exchange(method, id, &name, &reply_path, limit);
        let _ = std::fs::remove_file(&reply_path);
        result
    }

    fn exchange(
        &self,
        method: &str,
        id: u64,
        name: &str,
        reply_path: &Path,
        limit: Duration,
    ) -> io::Result<(Duration, Vec<u8>)> {
        // Opened before the request goes out: Kamailio opens its end without blocking and gives
        // up after a few tries if no reader is there. Poll does not report a hang-up on a FIFO
        // reader before a writer has come, so waiting starts cleanly.
        let reply = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(reply_path)?;
        let request = serde_json::json!({
            "jsonrpc": "2.0",
            "method": method,
            "id": id,
            "reply_name": name,
        })
        .to_string();

        let began = Instant::now();
        {
            // Non-blocking: fails at once (ENXIO) if Kamailio is not reading its FIFO. The
            // request is far below PIPE_BUF, so it is written whole.
            let mut fifo = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&self.fifo)
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("opening Kamailio's FIFO {}: {e}", self.fifo.display()),
                    )
                })?;
            fifo.write_all(request.as_bytes())?;
        }
        let deadline = began + limit;
        let mut body = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{method}: no complete answer within {limit:?} ({} bytes so far)",
                        body.len()
                    ),
                ));
            }
            let mut poll_fd = libc::pollfd {
                fd: reply.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let timeout_ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
            // SAFETY: one valid pollfd, owned by this frame, for the duration of the call.
            let ready = unsafe { libc::poll(&mut poll_fd, 1, timeout_ms) };
            if ready < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if ready == 0 {
                continue;
            }
            match (&reply).read(&mut buf) {
                // Readable with nothing to read: Kamailio has closed its end.
                Ok(0) => break,
                Ok(n) => body.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        let took = began.elapsed();
        if body.is_empty() {
            return Err(io::Error::other(format!("{method}: empty answer")));
        }
        Ok((took, body))
    }
}

/// A reply FIFO name: jsonrpcs refuses names with `.`, `/` or `\`.
fn reply_name(id: u64) -> String {
    format!("reply-{}-{id}", std::process::id())
}

fn make_fifo(path: &Path) -> io::Result<()> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a NUL-terminated path that outlives the call.
    if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("mkfifo {}: {e}", path.display()),
        ));
    }
    Ok(())
}

/// `kamcmd` on one instance's `ctl` socket.
struct Control {
    kamcmd: PathBuf,
    socket: PathBuf,
}

impl Control {
    fn new(kamcmd: PathBuf, socket: PathBuf) -> io::Result<Control> {
        // kamcmd's limit for a Unix socket path.
        if socket.as_os_str().len() > 100 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "ctl socket path {} is too long for kamcmd",
                    socket.display()
                ),
            ));
        }
        Ok(Control { kamcmd, socket })
    }

    fn address(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    fn call(&self, args: &[&str]) -> io::Result<String> {
        let mut command = Command::new(&self.kamcmd);
        command.arg("-s").arg(self.address()).args(args);
        let out = run_with_input(&mut command, "", KAMCMD_LIMIT)?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "kamcmd {} on {} failed ({}): {}{}",
                args.join(" "),
                self.address(),
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Every statistic of `group`, keyed `group:name`. kamcmd prints them as
    /// `group:name = value` lines.
    fn statistics(&self, group: &str) -> io::Result<HashMap<String, i64>> {
        let text = self.call(&["stats.get_statistics", &format!("{group}:")])?;
        Ok(text
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(" = ")?;
                Some((name.trim().to_owned(), value.trim().parse().ok()?))
            })
            .collect())
    }

    fn counter(&self, group: &str, name: &str) -> io::Result<i64> {
        pick(&self.statistics(group)?, group, name)
    }
}

fn pick(statistics: &HashMap<String, i64>, group: &str, name: &str) -> io::Result<i64> {
    statistics
        .get(&format!("{group}:{name}"))
        .copied()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("Kamailio has no statistic {group}:{name}"),
            )
        })
}

/// Kamailio counters are signed; those read here only go up.
fn non_negative(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The `drops` column of `/proc/net/udp` for the IPv4 socket bound to `addr`: datagrams the
/// kernel discarded because the socket's receive buffer was full.
fn udp_receive_drops(addr: SocketAddr) -> io::Result<u64> {
    let IpAddr::V4(ip) = addr.ip() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{addr} is not IPv4"),
        ));
    };
    // The kernel prints the address as the in-memory (network order) u32 in hex, the port as
    // a number in hex.
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(ip.octets()),
        addr.port()
    );
    let table = std::fs::read_to_string("/proc/net/udp")?;
    let mut found = false;
    let mut drops = 0;
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) == Some(&local.as_str()) {
            found = true;
            drops += fields
                .last()
                .and_then(|d| d.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    if found {
        Ok(drops)
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no UDP socket bound to {addr} in /proc/net/udp"),
        ))
    }
}

/// Pids of the live processes in `process`'s group that are Kamailio itself.
fn kamailio_pids(process: &Watched) -> Vec<u32> {
    processes_in_group(process.process_group())
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "kamailio")
        })
        .collect()
}

fn find_installation() -> io::Result<Installation> {
    let install = Installation::find().map_err(|e| io::Error::new(io::ErrorKind::NotFound, e))?;
    for module in EXTRA_MODULES {
        if !install.module_dir.join(format!("{module}.so")).is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "Kamailio module {module}.so missing from {}",
                    install.module_dir.display()
                ),
            ));
        }
    }
    Ok(install)
}

fn find_kamcmd() -> io::Result<PathBuf> {
    find_program("kamcmd", KAMCMD_CANDIDATES).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "no kamcmd (Debian package kamailio)",
        )
    })
}

/// Whole MB for `count` items of `bytes_each`, rounded up.
fn mb_for(count: usize, bytes_each: usize) -> u32 {
    let bytes = count.saturating_mul(bytes_each);
    u32::try_from(bytes.div_ceil(1024 * 1024)).unwrap_or(u32::MAX)
}

fn log_tail(log_path: &Path) -> String {
    format!(
        "--- Kamailio log {} (tail) ---\n{}",
        log_path.display(),
        tail(&read_lossy(log_path), 40)
    )
}

/// The registrar's database: Kamailio's `version` and `subscriber` tables, one row per user in
/// realm [`DOMAIN`], plaintext password, in one transaction.
fn create_subscribers(
    install: &Installation,
    db: &Path,
    users: &[(String, String)],
) -> io::Result<()> {
    let mut sql = String::from("BEGIN;\n");
    sql.push_str(&install.ddl(&["standard-create.sql", "auth_db-create.sql"])?);
    let domain = sql_quote(DOMAIN);
    for (username, password) in users {
        let _ = writeln!(
            sql,
            "INSERT INTO subscriber (username, domain, password) VALUES ({}, {domain}, {});",
            sql_quote(username),
            sql_quote(password)
        );
    }
    sql.push_str("COMMIT;\n");
    run_sqlite(&install.sqlite3, db, &[], &sql).map(drop)
}

/// The registrar's kamailio.cfg (see [`KamailioLoadRegistrar`]). Placeholders are replaced
/// rather than `format!`ed so the routing block's braces stay readable.
fn registrar_config(
    install: &Installation,
    listen: SocketAddr,
    token: &str,
    db: &Path,
    ctl: &Path,
) -> String {
    const TEMPLATE: &str = r#"#!KAMAILIO
# Generated by benches/load/kamailio.rs: the registrar of a load run. See that file.
debug=2
log_stderror=yes
fork=yes
children=@CHILDREN@
disable_tcp=yes
auto_aliases=no
dns=no
rev_dns=no
maxbuffer=4194304
listen=udp:@LISTEN@
server_header="Server: uacreg-load-registrar @TOKEN@"

mpath="@MPATH@/"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "statistics.so"
loadmodule "db_sqlite.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "xlog.so"
loadmodule "ctl.so"
loadmodule "kex.so"

modparam("ctl", "binrpc", "unix:@CTL@")
modparam("statistics", "variable", "error_replies")

modparam("auth_db", "db_url", "sqlite://@DB@")
modparam("auth_db", "calculate_ha1", yes)
modparam("auth_db", "password_column", "password")
modparam("auth_db", "use_domain", 1)

modparam("usrloc", "db_mode", 0)
modparam("usrloc", "use_domain", 1)
modparam("usrloc", "hash_size", 14)
modparam("usrloc", "cseq_delay", 40)

modparam("registrar", "min_expires", 0)
modparam("registrar", "max_expires", 0)

# Every final reply >= 400 other than a challenge adds one to error_replies.
request_route {
	if ($rm == "REGISTER") {
		if (!auth_check("@DOMAIN@", "subscriber", "1")) {
			$var(rc) = $rc;
			if ($var(rc) == -1) {
				update_stat("error_replies", "+1");
				sl_send_reply("500", "Server Internal Error");
				exit;
			}
			if ($var(rc) == -8) {
				update_stat("error_replies", "+1");
				sl_send_reply("403", "Forbidden auth ID");
				exit;
			}
			auth_challenge("@DOMAIN@", "1");
			exit;
		}
		consume_credentials();
		# save() replies itself, an error too. A repeat of the saved Call-ID and CSeq
		# within cseq_delay is a retransmission: 200 with the bindings as they are.
		if (!save("location")) {
			update_stat("error_replies", "+1");
			xlog("L_ERR", "registrar: save() failed for $tu\n");
		}
		exit;
	}
	if ($rm == "OPTIONS" && $rU == $null) {
		sl_send_reply("200", "OK");
		exit;
	}
	if ($rm == "ACK") {
		exit;
	}
	update_stat("error_replies", "+1");
	sl_send_reply("405", "Method Not Allowed");
	exit;
}
"#;
    TEMPLATE
        .replace("@CHILDREN@", &UDP_CHILDREN.to_string())
        .replace("@LISTEN@", &listen.to_string())
        .replace("@TOKEN@", token)
        .replace("@MPATH@", &install.module_dir.display().to_string())
        .replace("@CTL@", &ctl.display().to_string())
        .replace("@DB@", &db.display().to_string())
        .replace("@DOMAIN@", DOMAIN)
}

/// The gateway's kamailio.cfg (see [`KamailioUacGateway`]).
fn gateway_config(
    install: &Installation,
    listen: SocketAddr,
    token: &str,
    db: &Path,
    ctl: &Path,
    rpc: &RpcFifo,
    options: &UacGatewayOptions,
) -> String {
    const TEMPLATE: &str = r#"#!KAMAILIO
# Generated by benches/load/kamailio.rs: Kamailio's uac module as the registration gateway
# of a load run. See that file.
debug=2
log_stderror=yes
fork=yes
children=@CHILDREN@
disable_tcp=yes
auto_aliases=no
dns=no
rev_dns=no
@CORE_OPTIONS@listen=udp:@LISTEN@
server_header="Server: uacreg-load-uac-gateway @TOKEN@"

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
modparam("jsonrpcs", "fifo_reply_dir", "@REPLY_DIR@/")
modparam("jsonrpcs", "pretty_format", 0)

modparam("uac", "restore_mode", "none")
modparam("uac", "reg_db_url", "sqlite://@DB@")
modparam("uac", "reg_contact_addr", "@LISTEN@")
@UAC_OPTIONS@
request_route {
	if ($rm == "OPTIONS" && $rU == $null) {
		sl_send_reply("200", "OK");
		exit;
	}
	if ($rm == "ACK") {
		exit;
	}
	sl_send_reply("405", "Method Not Allowed");
	exit;
}
"#;
    let core_options = match options.maxbuffer {
        Some(bytes) => format!("maxbuffer={bytes}\n"),
        None => String::new(),
    };
    let mut uac_options = String::new();
    for (name, value) in [
        ("reg_timer_interval", options.reg_timer_interval),
        ("reg_retry_interval", options.reg_retry_interval),
        ("reg_hash_size", options.reg_hash_size),
        ("reg_gc_interval", options.reg_gc_interval),
    ] {
        if let Some(value) = value {
            let _ = writeln!(uac_options, "modparam(\"uac\", \"{name}\", {value})");
        }
    }
    TEMPLATE
        .replace("@CHILDREN@", &UDP_CHILDREN.to_string())
        .replace("@LISTEN@", &listen.to_string())
        .replace("@TOKEN@", token)
        .replace("@MPATH@", &install.module_dir.display().to_string())
        .replace("@CTL@", &ctl.display().to_string())
        .replace("@FIFO@", &rpc.fifo.display().to_string())
        .replace("@REPLY_DIR@", &rpc.reply_dir.display().to_string())
        .replace("@DB@", &db.display().to_string())
        .replace("@CORE_OPTIONS@", &core_options)
        .replace("@UAC_OPTIONS@", &uac_options)
}

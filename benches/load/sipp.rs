//! sipp (Debian `sip-tester`) as a digest-authenticating registrar for the load tool.
//!
//! [`SippRegistrar::start`] runs the UAS scenario `benches/load/sipp_registrar.xml` on a spare
//! loopback UDP port. Row `i` of [`crate::rows`] authenticates as `user{i:07}` with password
//! `pw{i:07}` in realm [`DOMAIN`]: the users are written to an injection file that sipp indexes
//! by user name, and the scenario's `<verifyauth>` checks each Authorization against the
//! password of the line its `username` names. What the scenario answers is described in its
//! header comment; in short, REGISTER without Authorization → 401 (`qop="auth"`, MD5),
//! REGISTER with good credentials → 200 echoing the Contact with the requested expiry, anything
//! else → 403.
//!
//! **Call-IDs.** sipp ties messages to a scenario instance ("call") by Call-ID. The gateway's
//! challenged REGISTER and its authorized one share a Call-ID (CSeq + 1), so the scenario takes
//! both in one call. Refreshes and re-registrations reuse the Call-ID after that call has ended:
//! sipp runs with `-deadcall_wait 0`, which keeps no record of ended calls (with the default it
//! would discard, as "dead call" messages, everything arriving for a Call-ID for a while after
//! its call ended), so such a REGISTER starts a new call. A REGISTER that already carries
//! Authorization is checked at once; one without is challenged again.
//!
//! **Counters** are read from the files sipp rewrites every 200 ms while it runs (`-fd 200ms`),
//! so they lag by up to that much:
//! * the statistics file (`-trace_stat -stf`), whose cumulative columns include the scenario's
//!   own counters (`counter="…"` on its messages) and sipp's call counters;
//! * the per-message counts file (`-trace_counts`, `sipp_registrar_<pid>_counts.csv`), which
//!   has, for each message of the scenario, how many were received, received again as
//!   retransmissions, and received out of order ("unexpected").
//!
//! **Memory.** sipp holds a call, about 3.5 KiB, from a REGISTER's challenge until its answer.
//! uacregd sends the first REGISTER of every row before it answers the challenges (measured:
//! 100,000 rows → 100,000 calls open at once), so sipp peaks near 400 MB for 100,000 rows
//! (20 MB idle with the 100,000 users indexed).
//!
//! sipp listens only on 127.0.0.1 (`-i` with `-bind_local`), and so do its control socket
//! (`-ci`) and the RTP sockets it opens regardless of the scenario. It runs in the foreground
//! under the harness's watchdog ([`Watched`]): it stops when this value is dropped, or when the
//! load tool dies in any way.

#![allow(dead_code)] // each load-tool mode uses part of this API

use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::rows::{DOMAIN, users};
use crate::support::process::{
    PortReservation, TempDir, Watched, read_lossy, spare_udp_port, tail,
};
use crate::support::sipp::sipp_path;

/// The scenario, in the source tree.
const SCENARIO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/benches/load/sipp_registrar.xml"
);
/// The injection file's name: the scenario refers to it by this name (`file="users.csv"`), and
/// `-infindex` takes the name, not the path.
const USERS_FILE: &str = "users.csv";
const STATS_FILE: &str = "stats.csv";
/// `-trace_counts` has no option for its name: sipp writes `<scenario>_<pid>_counts.csv` into
/// its working directory.
const COUNTS_PREFIX: &str = "sipp_registrar_";
const COUNTS_SUFFIX: &str = "_counts.csv";
/// How often sipp rewrites both files.
const DUMP_PERIOD: &str = "200ms";
/// How long sipp may take to write its first statistics row (it does so once its sockets are
/// bound). It takes well under a second, plus about a second per 100,000 users to index them.
const STARTUP_LIMIT: Duration = Duration::from_secs(20);
/// How long Drop waits for sipp to exit on SIGTERM before it is killed.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);
/// How much of the end of a counter file is read to find its last row (rows are under 1 KiB).
const TAIL_BYTES: u64 = 16 * 1024;

/// A snapshot of everything sipp counts for this scenario, cumulative since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SippCounters {
    /// REGISTERs taken into a call: the first of each call and the answer to a challenge.
    /// A retransmission that sipp recognises (the same bytes as the last REGISTER of a call
    /// that is still running) is not counted here but in `retransmissions_received`; it is
    /// answered again with the response already sent. A retransmission that arrives after its
    /// call ended (the 200 or 403 was lost) starts a new call and is counted here, and is
    /// answered afresh.
    pub registers: u64,
    /// 401 challenges sent (not counting their retransmissions).
    pub challenged: u64,
    /// 200 OKs sent: successful registrations, refreshes and un-REGISTERs alike.
    pub registered: u64,
    /// 403s sent: unknown user, wrong password, realm other than `load.test`, or an answer to a
    /// challenge without Authorization.
    pub forbidden: u64,
    /// REGISTERs received again as retransmissions within a running call.
    pub retransmissions_received: u64,
    /// Responses sipp sent again (retransmissions it answered, see above).
    pub responses_resent: u64,
    /// Messages that arrived in a call where the scenario expected something else (e.g. an
    /// OPTIONS): ignored (sipp runs with `-nd`) and counted here.
    pub unexpected: u64,
    /// Calls that failed: above all a challenge not answered within 5 minutes.
    pub failed_calls: u64,
    /// Messages sipp could not tie to a call (e.g. responses to nothing).
    pub out_of_call: u64,
    /// Messages for a recently ended call; always 0 with `-deadcall_wait 0`, kept as a check.
    pub dead_call_msgs: u64,
    /// Calls running now: REGISTERs challenged and not yet answered (and calls stuck on an
    /// unexpected first message).
    pub current_calls: u64,
}

impl SippCounters {
    /// Everything that is not a clean challenge or registration.
    pub fn errors(&self) -> u64 {
        self.forbidden
            + self.unexpected
            + self.failed_calls
            + self.out_of_call
            + self.dead_call_msgs
    }
}

/// sipp running `sipp_registrar.xml` on a loopback UDP port; stopped on drop.
pub struct SippRegistrar {
    // Fields drop in order: sipp stops before its port is released and its dir removed.
    process: Watched,
    addr: SocketAddr,
    command_line: String,
    dir: TempDir,
    _port: PortReservation,
}

impl SippRegistrar {
    /// Starts sipp accepting the users of `rows` load rows (`user{i:07}` / `pw{i:07}`), and
    /// returns once it is answering. Fails if sipp is not installed or does not come up.
    pub fn start(rows: usize) -> io::Result<SippRegistrar> {
        let sipp = sipp_path().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "sipp is not installed (Debian package sip-tester)",
            )
        })?;
        // The realm is written into the scenario; make sure it is the rows' domain.
        let scenario = std::fs::read_to_string(SCENARIO)?;
        if !scenario.contains(&format!("realm=\"{DOMAIN}\"")) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{SCENARIO} does not challenge with realm {DOMAIN}"),
            ));
        }
        let dir = TempDir::new("uacreg-sipp-registrar")?;
        let users_path = dir.path().join(USERS_FILE);
        write_users(&users_path, rows)?;
        let port = spare_udp_port()?;
        let addr = port.addr();

        let mut cmd = Command::new(&sipp);
        cmd.arg("-sf")
            .arg(SCENARIO)
            // Loopback only, including the control and RTP sockets.
            .args(["-i", "127.0.0.1", "-bind_local", "-ci", "127.0.0.1"])
            .args(["-p", &addr.port().to_string(), "-t", "u1"])
            // No automatic BYE/CANCEL/answers: a message the scenario does not expect is only
            // counted. No keyboard (stdin is not a terminal).
            .args(["-nd", "-nostdin"])
            // Keep no record of ended calls, so a later REGISTER of the same Call-ID (refresh,
            // re-registration) starts a new call instead of being discarded.
            .args(["-deadcall_wait", "0"])
            .arg("-inf")
            .arg(&users_path)
            .args(["-infindex", USERS_FILE, "0"])
            .args(["-trace_stat", "-stf", STATS_FILE, "-fd", DUMP_PERIOD])
            .arg("-trace_counts")
            // No -trace_err: <verifyauth> logs a warning for every REGISTER it sees without
            // Authorization (each one challenged), ~100 bytes each, which would fill that log.
            // Bursts of REGISTERs: larger socket buffers (the kernel caps them at
            // net.core.rmem_max / wmem_max) and more messages read per event loop.
            .args(["-buff_size", "4194304", "-max_recv_loops", "10000"])
            // sipp ends the whole run after 10 late ("major", 3 s) or 120 slow (0.5 s) event
            // loops; on two cores shared with the gateway and the build that is not an error.
            .args(["-watchdog_major_maxtriggers", "1000000"])
            .args(["-watchdog_minor_maxtriggers", "1000000"])
            .current_dir(dir.path());
        let command_line = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");

        let log = File::create(dir.path().join("sipp.out"))?;
        let process = Watched::spawn(&cmd, "TERM", &log)?;
        let registrar = SippRegistrar {
            process,
            addr,
            command_line,
            dir,
            _port: port,
        };
        registrar.wait_ready()?;
        Ok(registrar)
    }

    /// Where sipp listens (UDP, 127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The sipp command line, for the report.
    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// sipp's working directory: the users file, the counter files and `sipp.out` (its final
    /// screens).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// REGISTERs received, not counting retransmissions within a call (see
    /// [`SippCounters::registers`]).
    pub fn registers_received(&self) -> io::Result<u64> {
        Ok(self.counters()?.registers)
    }

    /// 200 OKs sent (see [`SippCounters::registered`]).
    pub fn registered(&self) -> io::Result<u64> {
        Ok(self.counters()?.registered)
    }

    /// 403s, unexpected messages, failed calls, out-of-call and dead-call messages
    /// ([`SippCounters::errors`]).
    pub fn errors(&self) -> io::Result<u64> {
        Ok(self.counters()?.errors())
    }

    /// All counters, as of sipp's last dump (at most 200 ms ago).
    pub fn counters(&self) -> io::Result<SippCounters> {
        if self.process.has_exited() {
            return Err(self.exited_error());
        }
        let stats = last_row(&self.dir.path().join(STATS_FILE))?;
        let counts = last_row(&self.counts_path()?)?;
        let stat = |name: &str| stats.get(name);
        Ok(SippCounters {
            registers: stat("registers(C)")?,
            challenged: stat("challenged(C)")?,
            registered: stat("registered(C)")?,
            forbidden: stat("forbidden(C)")?,
            retransmissions_received: counts
                .sum(|c| c.ends_with("_REGISTER_Retrans"))
                .unwrap_or(0),
            responses_resent: stat("Retransmissions(C)")?,
            unexpected: counts.sum(|c| c.ends_with("_Unexp")).unwrap_or(0),
            failed_calls: stat("FailedCall(C)")?,
            out_of_call: stat("OutOfCallMsgs(C)")?,
            dead_call_msgs: stat("DeadCallMsgs(C)")?,
            current_calls: stat("CurrentCall")?,
        })
    }

    /// Pids of the sipp process (not of the watchdog shell around it), e.g. for RSS and CPU.
    pub fn pids(&self) -> Vec<u32> {
        self.process
            .processes()
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim() == "sipp")
            })
            .collect()
    }

    /// Waits until sipp has written its first statistics row, i.e. has bound its sockets and
    /// entered its event loop.
    fn wait_ready(&self) -> io::Result<()> {
        let deadline = Instant::now() + STARTUP_LIMIT;
        loop {
            if self.process.has_exited() {
                return Err(self.exited_error());
            }
            if self
                .counts_path()
                .is_ok_and(|counts| last_row(&counts).is_ok())
                && last_row(&self.dir.path().join(STATS_FILE)).is_ok()
                && !self.pids().is_empty()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "sipp wrote no statistics within {STARTUP_LIMIT:?}:\n{}",
                        self.output_tail()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn counts_path(&self) -> io::Result<PathBuf> {
        for entry in std::fs::read_dir(self.dir.path())? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(COUNTS_PREFIX) && name.ends_with(COUNTS_SUFFIX) {
                return Ok(self.dir.path().join(&*name));
            }
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            "sipp has not written its counts file yet",
        ))
    }

    fn exited_error(&self) -> io::Error {
        io::Error::other(format!(
            "sipp registrar on {} has exited:\n{}",
            self.addr,
            self.output_tail()
        ))
    }

    /// The end of sipp's output, for error messages.
    fn output_tail(&self) -> String {
        tail(&read_lossy(&self.dir.path().join("sipp.out")), 30)
    }
}

impl Drop for SippRegistrar {
    fn drop(&mut self) {
        self.process.stop(SHUTDOWN_LIMIT);
    }
}

/// The injection file: `SEQUENTIAL`, then one `user;password` line per row. sipp needs at least
/// one line; with no rows it gets one that no Authorization names.
fn write_users(path: &Path, rows: usize) -> io::Result<()> {
    let mut text = String::with_capacity(24 * rows + 32);
    text.push_str("SEQUENTIAL\n");
    for (user, password) in users(rows, 0, 1) {
        text.push_str(&user);
        text.push(';');
        text.push_str(&password);
        text.push('\n');
    }
    if rows == 0 {
        text.push_str("(no user);(no password)\n");
    }
    std::fs::write(path, text)
}

/// The header and the last complete row of one of sipp's `;`-separated counter files.
struct Row {
    header: Vec<String>,
    values: Vec<String>,
}

impl Row {
    fn get(&self, column: &str) -> io::Result<u64> {
        let i = self
            .header
            .iter()
            .position(|h| h == column)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("sipp statistics have no column {column}"),
                )
            })?;
        parse_count(&self.values[i], column)
    }

    /// Sum of the columns whose name satisfies `wanted`; `None` if there are none.
    fn sum(&self, wanted: impl Fn(&str) -> bool) -> Option<u64> {
        let mut total = None;
        for (name, value) in self.header.iter().zip(&self.values) {
            if wanted(name) {
                *total.get_or_insert(0) += value.trim().parse::<u64>().unwrap_or(0);
            }
        }
        total
    }
}

fn parse_count(value: &str, column: &str) -> io::Result<u64> {
    value.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("sipp statistics: {column} is {value:?}, not a count"),
        )
    })
}

/// Reads the header (first line) and the last complete row of `path`: sipp may be writing the
/// next row while we read, so a row counts only with its newline and all its fields.
fn last_row(path: &Path) -> io::Result<Row> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut head = vec![0; len.min(TAIL_BYTES) as usize];
    file.read_exact(&mut head)?;
    let head = String::from_utf8_lossy(&head);
    let header_line = head.split_once('\n').map(|(h, _)| h).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{} has no header line yet", path.display()),
        )
    })?;
    let header: Vec<String> = fields(header_line);

    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut rest = Vec::new();
    file.read_to_end(&mut rest)?;
    let rest = String::from_utf8_lossy(&rest);
    let complete = match rest.rfind('\n') {
        Some(end) => &rest[..end],
        None => "",
    };
    complete
        .lines()
        .rev()
        .map(fields)
        .find(|values| values.len() == header.len() && values != &header)
        .map(|values| Row { header, values })
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} has no complete row yet", path.display()),
            )
        })
}

/// The fields of one line. Every line ends with a `;`, which is not an empty last field.
fn fields(line: &str) -> Vec<String> {
    let line = line.trim_end_matches(['\r', '\n']);
    let line = line.strip_suffix(';').unwrap_or(line);
    line.split(';').map(str::to_owned).collect()
}

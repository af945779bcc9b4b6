//! uacregd under test: the real daemon binary in a process of its own, so its memory and CPU
//! are its own and not the load tool's or the registrar's.
//!
//! It is watched through the same endpoints an operator uses: the Prometheus text for
//! counters (cheap to poll) and JSON-RPC for `uac.reg_dump` and `uac.reg_reload`, spoken as
//! plain HTTP so that the time measured is the server's answer, not a JSON parser's.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use crate::procfs;
use crate::support::process::{self, Watched};
use crate::{dump_records, http};

/// The log filter: warnings, and the loader's `rows loaded` line, whose time tells how long the
/// first load took (see [`Uacregd::seconds_to_loaded`]).
const LOG_FILTER: &str = "warn,uacreg::gateway::loader=info";

pub struct Uacregd {
    watched: Watched,
    pid: u32,
    rpc: SocketAddr,
    metrics: SocketAddr,
    log: PathBuf,
    /// Wall-clock time of the spawn, to compare with the log's timestamps.
    spawned: SystemTime,
}

impl Uacregd {
    /// Starts the daemon on `db_url` with `extra_config` appended to its TOML file, and waits
    /// until its metrics endpoint answers (it is served once the first load is done).
    ///
    /// The ports are found free and let go just before the daemon binds them, so another
    /// socket can take one in between (it happened once in a few dozen runs): a start that
    /// failed on a port in use is tried again, on new ports, up to three times.
    pub fn start(dir: &Path, db_url: &str, extra_config: &str) -> io::Result<Uacregd> {
        let mut tries = 0;
        loop {
            tries += 1;
            match Uacregd::start_once(dir, db_url, extra_config) {
                Err(err) if tries < 3 && err.to_string().contains("Address already in use") => {
                    eprintln!("   uacregd lost a port to another socket; starting it again");
                }
                outcome => return outcome,
            }
        }
    }

    fn start_once(dir: &Path, db_url: &str, extra_config: &str) -> io::Result<Uacregd> {
        let sip = process::spare_udp_port()?;
        let rpc = process::spare_tcp_port()?;
        let metrics = process::spare_tcp_port()?;
        let config = dir.join("uacregd.toml");
        std::fs::write(
            &config,
            format!(
                "db_url = \"{db_url}\"\nsip_listen = \"{}\"\nrpc_listen = \"{}\"\n\
                 metrics_listen = \"{}\"\nunregister_on_shutdown = false\n{}\n",
                sip.addr(),
                rpc.addr(),
                metrics.addr(),
                without_notify(db_url, extra_config)
            ),
        )?;
        let log = dir.join("uacregd.log");
        let log_file = std::fs::File::create(&log)?;
        // UACREG_LOAD_WRAPPER="heaptrack -o /tmp/ht" runs the daemon under a profiler.
        let wrapper = std::env::var("UACREG_LOAD_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut command = Command::new(program);
                command.args(words).arg(env!("CARGO_BIN_EXE_uacregd"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_uacregd")),
        };
        command
            .arg("--config")
            .arg(&config)
            .arg("--log")
            .arg(LOG_FILTER);
        let (rpc, metrics) = (rpc.addr(), metrics.addr());
        drop(sip);
        let spawned = SystemTime::now();
        let watched = Watched::spawn(&command, "TERM", &log_file)?;
        let pid = find_pid(&watched)?;
        let mut daemon = Uacregd {
            watched,
            pid,
            rpc,
            metrics,
            log,
            spawned,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if daemon.metrics().is_ok() {
                return Ok(daemon);
            }
            if daemon.watched.has_exited() || Instant::now() > deadline {
                let log = process::tail(&process::read_lossy(&daemon.log), 20);
                daemon.watched.stop(Duration::from_secs(5));
                return Err(io::Error::other(format!("uacregd did not come up:\n{log}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Every sample of the Prometheus endpoint, keyed by name with labels
    /// (`uacreg_registrations{state="registered"}`).
    pub fn metrics(&self) -> io::Result<HashMap<String, f64>> {
        let body = http::request(self.metrics, "GET", "/metrics", "")?.into_bytes()?;
        Ok(String::from_utf8_lossy(&body)
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect())
    }

    /// One JSON-RPC call; the time until the whole answer was read, and the answer.
    pub fn rpc(&self, method: &str) -> io::Result<(Duration, Vec<u8>)> {
        let started = Instant::now();
        let body = http::request(self.rpc, "POST", "/", &rpc_request(method))?.into_bytes()?;
        Ok((started.elapsed(), body))
    }

    /// One `uac.reg_dump`: the time until the last byte of the answer was read, and how many
    /// records it held, counted as the answer streams in (see `dump_records`).
    pub fn dump(&self) -> io::Result<(Duration, usize)> {
        let started = Instant::now();
        let body = http::request(self.rpc, "POST", "/", &rpc_request("uac.reg_dump"))?;
        let records = dump_records::count(body)?;
        Ok((started.elapsed(), records))
    }

    /// Seconds from spawning the process to its first `rows loaded` line: the first load (open
    /// and migrate the store, read and validate every row, hand them to the driver), process
    /// start included. `None` when the line is not (yet) in the log.
    pub fn seconds_to_loaded(&self) -> Option<f64> {
        let log = process::read_lossy(&self.log);
        let line = log.lines().find(|line| line.contains("rows loaded"))?;
        let at = log_line_time(line)?;
        let since = at.duration_since(self.spawned).ok()?;
        Some(since.as_secs_f64())
    }

    pub fn log_tail(&self) -> String {
        process::tail(&process::read_lossy(&self.log), 20)
    }

    pub fn stop(mut self) {
        self.watched.stop(Duration::from_secs(10));
    }
}

/// The process measured: the one named `uacregd` among those spawned, or the one named by
/// `UACREG_LOAD_PROCESS_NAME` when a wrapper runs the daemon under another name (valgrind's
/// tools run it as `callgrind-amd64`, the kernel's 15-character cut of the tool's name).
fn find_pid(watched: &Watched) -> io::Result<u32> {
    let name = std::env::var("UACREG_LOAD_PROCESS_NAME").unwrap_or_else(|_| "uacregd".into());
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(pid) = watched
            .processes()
            .into_iter()
            .find(|pid| procfs::command_name(*pid).as_deref() == Some(name.as_str()))
        {
            return Ok(pid);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(io::Error::other(format!("no process named {name:?} found")))
}

fn rpc_request(method: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":[]}}"#)
}

/// `extra` with `[database] notify = false` added for PostgreSQL (unless it sets `notify`
/// itself): the migrations' trigger would otherwise make the daemon reload on its own as soon
/// as the tool changes rows, and the reload the tool measures would find nothing to do.
fn without_notify(db_url: &str, extra: &str) -> String {
    if !db_url.starts_with("postgres") || extra.contains("notify") {
        return extra.to_string();
    }
    match extra.find("[database]") {
        Some(at) => {
            let (before, after) = extra.split_at(at + "[database]".len());
            format!("{before}\nnotify = false{after}")
        }
        None => format!("{extra}\n[database]\nnotify = false\n"),
    }
}

/// The time at the start of a text log line (`2026-12-04T10:22:21.123456Z  INFO …`).
fn log_line_time(line: &str) -> Option<SystemTime> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut ymd = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut hms = hms.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    let nanos: u32 = format!("{fraction:0<9}").get(..9)?.parse().ok()?;
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    let secs = days * 86_400 + h * 3600 + m * 60 + sec;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

//! The real `uacregd` binary in a process of its own, for tests that need what only a process
//! has: its exit status, its memory and CPU time apart from the test's, its own open-files limit.
//! The one way tests run the daemon as a process (`tests/lifecycle.rs`, `tests/hostile.rs`).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use super::process::{self, Watched};

/// A running `uacregd` under a watchdog (stopped with SIGTERM when dropped).
pub struct Uacregd {
    watched: Watched,
    /// The uacregd process itself (not its watchdog shell).
    pid: u32,
    /// SIP (UDP and TCP) and JSON-RPC, on loopback.
    pub sip: SocketAddr,
    pub rpc: SocketAddr,
    log: PathBuf,
    /// Sent SIGSTOP and not SIGCONT since.
    paused: bool,
}

impl Uacregd {
    /// Starts `binary` (`env!("CARGO_BIN_EXE_uacregd")`) on `db_url` with loopback ports, no
    /// metrics endpoint, no un-REGISTER on stop, logging at `info` without colours,
    /// `extra_config` appended to its TOML file (sections such as `[limits]`), and waits until
    /// its JSON-RPC answers. An `extra_config` that starts with its own
    /// `unregister_on_shutdown = …` line sets that key instead of the default `false`.
    pub fn start(binary: &str, dir: &Path, db_url: &str, extra_config: &str) -> io::Result<Self> {
        // A port free when probed can be taken before uacregd binds it by any socket that asks
        // the kernel for an ephemeral port (a database client, another daemon's resolver):
        // then it is started again on new ports.
        let mut attempt = 1;
        loop {
            match Self::start_once(binary, dir, db_url, extra_config) {
                Err(e) if attempt < 3 && e.to_string().contains("Address already in use") => {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn start_once(binary: &str, dir: &Path, db_url: &str, extra_config: &str) -> io::Result<Self> {
        let sip = process::spare_udp_port()?;
        let rpc = process::spare_tcp_port()?;
        let config = dir.join("uacregd.toml");
        let unregister = if extra_config.starts_with("unregister_on_shutdown") {
            ""
        } else {
            "unregister_on_shutdown = false\n"
        };
        std::fs::write(
            &config,
            format!(
                "db_url = \"{db_url}\"\nsip_listen = \"{}\"\nrpc_listen = \"{}\"\n\
                 metrics_listen = \"\"\n{unregister}{extra_config}\n",
                sip.addr(),
                rpc.addr()
            ),
        )?;
        let log = dir.join("uacregd.log");
        let log_file = std::fs::File::create(&log)?;
        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(&config)
            .args(["--log", "info"])
            .env("NO_COLOR", "1");
        let (sip, rpc) = (sip.addr(), rpc.addr());
        let watched = Watched::spawn(&command, "TERM", &log_file)?;
        let mut daemon = Uacregd {
            watched,
            pid: 0,
            sip,
            rpc,
            log,
            paused: false,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while daemon.call("uacreg.status", "").is_err() {
            if Instant::now() >= deadline || daemon.watched.has_exited() {
                return Err(io::Error::other(format!(
                    "uacregd did not come up:\n{}",
                    daemon.log_tail(30)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon.pid = daemon
            .watched
            .processes()
            .into_iter()
            .find(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim() == "uacregd")
            })
            .ok_or_else(|| io::Error::other("uacregd answers but its process is not found"))?;
        Ok(daemon)
    }

    /// Its whole log (stdout and stderr).
    pub fn log(&self) -> String {
        process::read_lossy(&self.log)
    }

    /// The last `lines` lines of its log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        process::tail(&self.log(), lines)
    }

    /// Pid of the uacregd process itself (not its watchdog).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The URL JSON-RPC clients (`RpcClient`, `uacregctl --rpc`) are given.
    pub fn rpc_url(&self) -> String {
        format!("http://{}/RPC", self.rpc)
    }

    pub fn has_exited(&self) -> bool {
        self.watched.has_exited()
    }

    /// Waits up to `limit` for the process to exit on its own; how long that took.
    pub fn exits_within(&self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.watched.has_exited() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// SIGTERM (after a SIGCONT if it was paused, so it can act on it), then waits up to
    /// `limit`; the exit status (None if it had to be killed).
    pub fn stop(&mut self, limit: Duration) -> Option<ExitStatus> {
        if self.paused {
            let _ = self.sigcont();
        }
        self.watched.stop(limit)
    }

    /// SIGKILL: the process ends at once, without a word to the registrar or the database
    /// (a crash, an OOM kill, a power cut of its host).
    pub fn kill9(&mut self) -> io::Result<()> {
        self.signal(libc::SIGKILL)?;
        self.paused = false;
        Ok(())
    }

    /// SIGSTOP: the process stays alive and keeps its sockets and connections open but does
    /// nothing (a hung node, a long GC-like pause, a VM frozen by its host).
    pub fn sigstop(&mut self) -> io::Result<()> {
        self.signal(libc::SIGSTOP)?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONT: a process paused by [`sigstop`](Self::sigstop) carries on.
    pub fn sigcont(&mut self) -> io::Result<()> {
        self.signal(libc::SIGCONT)?;
        self.paused = false;
        Ok(())
    }

    /// Sends `signal` to the uacregd process itself (not its watchdog), if it is still the
    /// process this started: its pid is checked to name a live `uacregd`, so a pid reused
    /// after it exited is never signalled.
    fn signal(&self, signal: libc::c_int) -> io::Result<()> {
        let alive = !self.watched.has_exited()
            && process::proc_stat(self.pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
            && std::fs::read_to_string(format!("/proc/{}/comm", self.pid))
                .is_ok_and(|comm| comm.trim() == "uacregd");
        if !alive {
            return Err(io::Error::other(format!(
                "uacregd (pid {}) is not running",
                self.pid
            )));
        }
        let pid = libc::pid_t::try_from(self.pid).map_err(io::Error::other)?;
        // SAFETY: kill(2) only sends a signal; the pid was just checked to be our uacregd.
        if unsafe { libc::kill(pid, signal) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// One JSON-RPC call over plain HTTP (`params` is the JSON array's inside); the whole
    /// HTTP answer.
    pub fn call(&self, method: &str, params: &str) -> io::Result<String> {
        let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":[{params}]}}"#);
        let mut stream = TcpStream::connect_timeout(&self.rpc, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.rpc,
            body.len()
        )?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        Ok(dechunk(&answer))
    }
}

/// An HTTP answer with a chunked body (a lone `uac.reg_dump` streams) turned into the same head
/// with the body's chunks joined, so callers split head and body as they would for any other.
/// Chunks are cut by bytes, maybe inside a character: they are joined before decoding.
fn dechunk(answer: &[u8]) -> String {
    let Some(split) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return String::from_utf8_lossy(answer).into_owned();
    };
    let (head, mut rest) = (&answer[..split], &answer[split + 4..]);
    let head = String::from_utf8_lossy(head);
    let chunked = head.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    if !chunked {
        return String::from_utf8_lossy(answer).into_owned();
    }
    let mut body = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&rest[..eol]);
        let size = size.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size, 16) else {
            break;
        };
        let after = &rest[eol + 2..];
        if size == 0 || after.len() < size {
            break;
        }
        body.extend_from_slice(&after[..size]);
        rest = after[size..]
            .strip_prefix(b"\r\n")
            .unwrap_or(&after[size..]);
    }
    format!("{head}\r\n\r\n{}", String::from_utf8_lossy(&body))
}

/// Resident memory of `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// CPU time `pid` used so far (user + system), in clock ticks (100 per second on Linux).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // utime and stime are fields 14 and 15, the 12th and 13th after the ")" closing comm.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

/// Datagrams the kernel dropped because the receive buffer of the UDP socket bound at `local`
/// (IPv4) was full: the `drops` column of `/proc/net/udp`. They never reached the program, so
/// its own counters cannot show them.
pub fn udp_drops(local: SocketAddr) -> Option<u64> {
    let SocketAddr::V4(v4) = local else {
        return None;
    };
    // The address as the kernel prints it: the 32-bit value in host order (little-endian), hex.
    let wanted = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(v4.ip().octets()),
        v4.port()
    );
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&wanted.as_str()))
            .then(|| fields.last()?.parse().ok())
            .flatten()
    })
}
